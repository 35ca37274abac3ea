//! Encrypting request payloads and decrypting response payloads in place in a message's bytes,
//! where the [`schema`](crate::schema) of Temporal's protos says they are. Search attributes
//! stay plaintext: the server indexes them.

use plinth_codec::{Codec, Payload};
use prost::Message;

use crate::schema::{Carrier, RewriteError, SCHEMA};

/// What sealing or opening did to a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Transformed {
    /// The rewritten message; `None` when no payload changed, so the original bytes go on.
    pub message: Option<Vec<u8>>,
    /// Plaintext bytes (payload data) encrypted or decrypted.
    pub payload_bytes: u64,
    /// Payloads that could not be decrypted and went on as they were.
    pub undecryptable: u64,
}

/// Why one payload could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    /// A field that holds a payload is not a protobuf message.
    #[error("malformed payload: {0}")]
    Malformed(#[from] crate::wire::MalformedField),
    /// An encrypted payload does not decode.
    #[error("malformed payload: {0}")]
    Undecodable(#[from] prost::DecodeError),
    /// A payload could not be encrypted.
    #[error("cannot encrypt a payload: {0}")]
    Seal(plinth_codec::CodecError),
}

/// Why a message's payloads could not be sealed or opened.
pub(crate) type TransformError = RewriteError<PayloadError>;

/// Encrypts every payload of `message` (a `carrier`) for `namespace`; encrypted ones stay as
/// they are.
pub(crate) fn seal(
    message: &[u8],
    carrier: Carrier,
    codec: &Codec,
    namespace: &str,
) -> Result<Transformed, TransformError> {
    let mut payload_bytes = 0;
    let message = SCHEMA.rewrite(message, carrier, &mut |encoded: &[u8]| {
        let payload = PayloadView::of(encoded)?;
        if payload.is_encrypted() {
            return Ok(None);
        }
        payload_bytes += payload.data_len;
        codec
            .seal_encoded(namespace, encoded)
            .map(Some)
            .map_err(PayloadError::Seal)
    })?;
    Ok(Transformed {
        message,
        payload_bytes,
        undecryptable: 0,
    })
}

/// Decrypts every payload of `message` (a `carrier`) sealed for `namespace`. One that does not
/// open goes on sealed and is counted, so the rest of the answer stays readable.
pub(crate) fn open(
    message: &[u8],
    carrier: Carrier,
    codec: &Codec,
    namespace: &str,
) -> Result<Transformed, TransformError> {
    // An encrypted payload carries this encoding verbatim in its metadata: an answer without
    // it has nothing to open.
    if memchr::memmem::find(message, plinth_codec::metadata::ENCRYPTED).is_none() {
        return Ok(Transformed::default());
    }
    let (mut payload_bytes, mut undecryptable) = (0, 0);
    let message = SCHEMA.rewrite(message, carrier, &mut |encoded: &[u8]| {
        if !PayloadView::of(encoded)?.is_encrypted() {
            return Ok(None);
        }
        match codec.open_encoded(namespace, &Payload::decode(encoded)?) {
            Ok(plain) => {
                payload_bytes += PayloadView::of(&plain)?.data_len;
                Ok(Some(plain))
            }
            // History may hold payloads sealed under a key this proxy no longer has.
            Err(error) => {
                tracing::warn!(namespace, %error, "payload left encrypted");
                undecryptable += 1;
                Ok(None)
            }
        }
    })?;
    Ok(Transformed {
        message,
        payload_bytes,
        undecryptable,
    })
}

/// What sealing and opening need to know of a serialized payload, read without decoding it. As
/// in every decoder, a field or map key given twice counts as its last occurrence.
struct PayloadView<'a> {
    /// The `encoding` metadata value.
    encoding: Option<&'a [u8]>,
    data_len: u64,
}

impl<'a> PayloadView<'a> {
    fn of(encoded: &'a [u8]) -> Result<Self, PayloadError> {
        let mut view = PayloadView {
            encoding: None,
            data_len: 0,
        };
        for field in crate::wire::fields(encoded) {
            let field = field?;
            match (field.number, field.wire_type) {
                // A metadata entry: 1 key, 2 value.
                (1, 2) => {
                    let (mut key, mut value) = (&[][..], &[][..]);
                    for part in crate::wire::fields(field.value) {
                        let part = part?;
                        match (part.number, part.wire_type) {
                            (1, 2) => key = part.value,
                            (2, 2) => value = part.value,
                            _ => {}
                        }
                    }
                    if key == plinth_codec::metadata::ENCODING.as_bytes() {
                        view.encoding = Some(value);
                    }
                }
                (2, 2) => view.data_len = field.value.len() as u64,
                _ => {}
            }
        }
        Ok(view)
    }

    /// As [`plinth_codec::is_encrypted`] tells of the decoded payload.
    fn is_encrypted(&self) -> bool {
        self.encoding == Some(plinth_codec::metadata::ENCRYPTED)
    }
}

/// The SDK's generated payload visitors, which the schema must agree with.
#[cfg(test)]
pub(crate) mod oracle {
    use std::marker::PhantomData;

    use futures::FutureExt as _;
    use futures::future::BoxFuture;
    use prost::Message;
    use temporalio_common::data_converters::PayloadConversionError;
    use temporalio_common::payload_visitor::{
        AsyncPayloadVisitor, PayloadField, PayloadFieldData, PayloadVisitable,
    };

    /// How many payloads the SDK would encode in an encoded message of one type.
    pub(crate) type Visit = fn(&[u8]) -> Result<usize, prost::DecodeError>;

    /// Stands for a message type while the RPC table asks whether the SDK visits it.
    pub(crate) struct Probe<T>(PhantomData<T>);

    /// A probe of `T`.
    pub(crate) fn probe<T>() -> &'static Probe<T> {
        &Probe(PhantomData)
    }

    /// Chosen for messages the generated visitors cover.
    pub(crate) trait VisitsPayloads {
        fn visit(&self) -> Option<Visit>;
    }

    impl<T: PayloadVisitable + Message + Default> VisitsPayloads for Probe<T> {
        fn visit(&self) -> Option<Visit> {
            Some(count_encoded::<T>)
        }
    }

    /// Chosen (by auto-ref) for every other message.
    pub(crate) trait VisitsNoPayloads {
        fn visit(&self) -> Option<Visit> {
            None
        }
    }

    impl<T> VisitsNoPayloads for &Probe<T> {}

    fn count_encoded<T: PayloadVisitable + Message + Default>(
        bytes: &[u8],
    ) -> Result<usize, prost::DecodeError> {
        let mut message = T::decode(bytes)?;
        let mut counter = Encoded(0);
        message
            .visit_payloads_mut(&mut counter)
            .now_or_never()
            .expect("the traversal completes at once")
            .expect("counting fails nothing");
        Ok(counter.0)
    }

    /// Counts the payloads the SDK's encoding visitor would encode: all but search attributes,
    /// by the SDK's own test of the field's path.
    struct Encoded(usize);

    impl AsyncPayloadVisitor for Encoded {
        fn visit<'a>(
            &'a mut self,
            field: PayloadField<'a>,
        ) -> BoxFuture<'a, Result<(), PayloadConversionError>> {
            if !field.path.contains("SearchAttributes.indexed_fields") {
                self.0 += match field.data {
                    PayloadFieldData::Single(_) => 1,
                    PayloadFieldData::Repeated(payloads) => payloads.len(),
                    PayloadFieldData::Payloads(payloads) => payloads.payloads.len(),
                };
            }
            Box::pin(std::future::ready(Ok(())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::length_delimited;
    use plinth_codec::is_encrypted;
    use std::sync::Arc;
    use temporalio_common::protos::temporal::api::common::v1::{
        Payloads, SearchAttributes, WorkflowType,
    };
    use temporalio_common::protos::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest;

    const START: &str = "temporal.api.workflowservice.v1.StartWorkflowExecutionRequest";

    fn codec() -> Codec {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = plinth_codec::KeyRing::init(&dir.path().join("ring.json")).unwrap();
        Codec::new(Arc::new(ring), Default::default())
    }

    fn start() -> Carrier {
        SCHEMA.carrier(START).unwrap()
    }

    fn plain(data: &str) -> Payload {
        Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
            data: data.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn start_request() -> StartWorkflowExecutionRequest {
        StartWorkflowExecutionRequest {
            namespace: "orders".into(),
            workflow_type: Some(WorkflowType {
                name: "Ship".into(),
            }),
            input: Some(Payloads {
                payloads: vec![plain("\"card 4111\"")],
            }),
            search_attributes: Some(SearchAttributes {
                indexed_fields: [("CustomerId".to_owned(), plain("\"c-42\""))].into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_sealed_but_search_attributes_stay_plain_and_open_to_the_same_bytes() {
        let codec = codec();
        let bytes = start_request().encode_to_vec();
        let sealed = seal(&bytes, start(), &codec, "orders").unwrap();
        assert_eq!(sealed.payload_bytes, 11);
        let sealed_bytes = sealed.message.unwrap();
        let message = StartWorkflowExecutionRequest::decode(&sealed_bytes[..]).unwrap();
        let input = &message.input.as_ref().unwrap().payloads[0];
        assert!(is_encrypted(input));
        assert!(
            !sealed_bytes.windows(4).any(|w| w == b"4111"),
            "no plaintext left"
        );
        let attribute = &message.search_attributes.as_ref().unwrap().indexed_fields["CustomerId"];
        assert_eq!(attribute.data, b"\"c-42\"");

        let opened = open(&sealed_bytes, start(), &codec, "orders").unwrap();
        assert_eq!(opened.payload_bytes, 11);
        assert_eq!(
            opened.message.unwrap(),
            bytes,
            "byte for byte what was sealed"
        );
    }

    #[test]
    fn payloads_already_encrypted_are_not_sealed_again() {
        let codec = codec();
        let sealed = seal(&start_request().encode_to_vec(), start(), &codec, "orders").unwrap();
        let again = seal(&sealed.message.unwrap(), start(), &codec, "orders").unwrap();
        assert_eq!(again, Transformed::default());
    }

    #[test]
    fn messages_without_payloads_to_change_keep_their_bytes() {
        let codec = codec();
        let mut request = start_request();
        request.input = None;
        let unchanged = seal(&request.encode_to_vec(), start(), &codec, "orders").unwrap();
        assert_eq!(
            unchanged.message, None,
            "only a search attribute: forwarded as is"
        );
        assert!(
            SCHEMA
                .carrier("temporal.api.workflowservice.v1.DescribeNamespaceRequest")
                .is_none()
        );

        let plain = open(&start_request().encode_to_vec(), start(), &codec, "orders").unwrap();
        assert_eq!(
            plain,
            Transformed::default(),
            "nothing sealed: nothing to open"
        );
    }

    #[test]
    fn a_field_that_holds_no_payload_is_refused() {
        let codec = codec();
        // Field 5, input: Payloads whose field 1, a payload, holds a cut-off data field.
        let bytes = [0x2a, 5, 0x0a, 3, 0x12, 5, b'x'];
        let error = seal(&bytes, start(), &codec, "orders").unwrap_err();
        assert!(
            error.to_string().starts_with("malformed payload"),
            "{error}"
        );
    }

    /// A field no Temporal message has: field 9999, length-delimited.
    fn future_field() -> Vec<u8> {
        length_delimited(9999, b"future")
    }

    #[test]
    fn fields_from_a_newer_api_survive_sealing_at_any_depth() {
        let codec = codec();
        let mut request = start_request();
        let mut workflow_type = request.workflow_type.take().unwrap().encode_to_vec();
        workflow_type.extend_from_slice(&future_field());
        let mut payload = request.input.take().unwrap().payloads[0].encode_to_vec();
        payload.extend_from_slice(&future_field());
        // Field 3, workflow_type, and field 5, input, each with the unknown field inside.
        let bytes = [
            request.encode_to_vec(),
            length_delimited(3, &workflow_type),
            length_delimited(5, &length_delimited(1, &payload)),
            future_field(),
        ]
        .concat();

        let sealed = seal(&bytes, start(), &codec, "orders")
            .unwrap()
            .message
            .unwrap();
        assert!(sealed.ends_with(&future_field()), "top level: carried over");
        assert!(
            memchr::memmem::find(&sealed, &workflow_type).is_some(),
            "nested: carried over"
        );
        let message = StartWorkflowExecutionRequest::decode(&sealed[..]).unwrap();
        assert!(is_encrypted(&message.input.unwrap().payloads[0]));
        let opened = open(&sealed, start(), &codec, "orders").unwrap();
        assert_eq!(opened.message.unwrap(), bytes, "inside the payload too");
    }

    #[test]
    fn a_payload_sealed_for_another_namespace_goes_back_sealed() {
        let codec = codec();
        let sealed = seal(&start_request().encode_to_vec(), start(), &codec, "orders").unwrap();
        let opened = open(&sealed.message.unwrap(), start(), &codec, "billing").unwrap();
        assert_eq!(opened.undecryptable, 1);
        assert_eq!(opened.message, None);
    }
}
