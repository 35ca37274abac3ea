//! Encrypting request payloads and decrypting response payloads through the generated payload
//! visitors of `temporalio-common`. Search attributes stay plaintext: the server indexes them.

use std::marker::PhantomData;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use plinth_codec::{Codec, Payload, is_encrypted};
use prost::Message;
use temporalio_common::data_converters::PayloadConversionError;
use temporalio_common::payload_visitor::{
    AsyncPayloadVisitor, PayloadField, PayloadFieldData, PayloadVisitable,
};

/// What a transform did to a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Transformed {
    /// The re-encoded message; `None` when no payload changed, so the original bytes go on.
    pub message: Option<Vec<u8>>,
    /// Plaintext bytes encrypted or decrypted.
    pub payload_bytes: u64,
    /// Payloads that could not be decrypted and went on as they were.
    pub undecryptable: u64,
    /// About how many bytes of fields this proxy's protos do not know the re-encoded message
    /// lost. Unknown fields at the top level are carried over; nested ones cannot be.
    pub dropped_bytes: u64,
}

/// Why a message could not be transformed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransformError {
    /// The bytes are not a message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A payload could not be encrypted.
    #[error("cannot encrypt a payload: {0}")]
    Seal(plinth_codec::CodecError),
}

/// Encrypts (request) or decrypts (response) the payloads of one encoded message.
pub(crate) type Transform = fn(&[u8], &Codec, &str) -> Result<Transformed, TransformError>;

/// Stands for a message type while the table asks whether it carries payloads.
pub(crate) struct Probe<T>(PhantomData<T>);

/// A probe of `T`.
pub(crate) fn probe<T>() -> &'static Probe<T> {
    &Probe(PhantomData)
}

/// Chosen for messages the generated visitors cover.
pub(crate) trait VisitsPayloads {
    fn seal(&self) -> Option<Transform>;
    fn open(&self) -> Option<Transform>;
}

impl<T: PayloadVisitable + Message + Default> VisitsPayloads for Probe<T> {
    fn seal(&self) -> Option<Transform> {
        Some(transform::<T, true>)
    }
    fn open(&self) -> Option<Transform> {
        Some(transform::<T, false>)
    }
}

/// Chosen (by auto-ref) for every other message: nothing to visit, bytes pass untouched.
pub(crate) trait VisitsNoPayloads {
    fn seal(&self) -> Option<Transform> {
        None
    }
    fn open(&self) -> Option<Transform> {
        None
    }
}

impl<T> VisitsNoPayloads for &Probe<T> {}

fn transform<T: PayloadVisitable + Message + Default, const SEAL: bool>(
    bytes: &[u8],
    codec: &Codec,
    namespace: &str,
) -> Result<Transformed, TransformError> {
    // An encrypted payload carries this encoding verbatim in its metadata: a response without
    // it has nothing to open and goes on undecoded.
    if !SEAL && memchr::memmem::find(bytes, plinth_codec::metadata::ENCRYPTED).is_none() {
        return Ok(Transformed::default());
    }
    let mut message = T::decode(bytes)?;
    // prost keeps no field it does not know: a shorter re-encoding means some were there.
    let known_len = message.encoded_len();
    let mut visitor = CodecVisitor {
        codec,
        namespace,
        seal: SEAL,
        changed: false,
        done: Transformed::default(),
        error: None,
    };
    // The visitor never waits, so the traversal finishes on its first poll.
    let traversal = message.visit_payloads_mut(&mut visitor).now_or_never();
    debug_assert!(traversal.is_some(), "payload traversal completes at once");
    if let Some(error) = visitor.error {
        return Err(TransformError::Seal(error));
    }
    let mut done = visitor.done;
    if visitor.changed {
        let mut encoded = message.encode_to_vec();
        if known_len < bytes.len() {
            let unknown = unknown_fields::<T>(bytes);
            encoded.extend_from_slice(&unknown);
            done.dropped_bytes = (bytes.len() - known_len).saturating_sub(unknown.len()) as u64;
        }
        done.message = Some(encoded);
    }
    Ok(done)
}

/// The top-level fields of `bytes` that `T` does not know, as they were encoded (a field may
/// come after the known ones: protobuf decoders accept fields in any order).
fn unknown_fields<T: Message + Default>(bytes: &[u8]) -> Vec<u8> {
    let mut unknown = Vec::new();
    for field in crate::wire::fields(bytes) {
        // `T::decode` accepted these bytes, so the walk does not fail.
        let Ok(field) = field else { break };
        if !knows::<T>(field.number, field.wire_type) {
            unknown.extend_from_slice(field.encoded);
        }
    }
    unknown
}

/// Whether `T` has field `number`. A field `T` lacks is skipped when decoding, leaving the
/// message empty; one it has takes the probe's value, which is never the default, or fails on
/// the probe's wire type.
fn knows<T: Message + Default>(number: u32, wire_type: u8) -> bool {
    let value: &[u8] = match wire_type {
        0 => &[1],
        1 => &[1, 0, 0, 0, 0, 0, 0, 0],
        5 => &[1, 0, 0, 0],
        // One byte of content: text, bytes, or a message cut off after a field key.
        2 => &[1, 0x08],
        _ => return true,
    };
    let mut probe = Vec::with_capacity(6 + value.len());
    prost::encoding::encode_varint(u64::from(number) << 3 | u64::from(wire_type), &mut probe);
    probe.extend_from_slice(value);
    T::decode(probe.as_slice()).map_or(true, |message| message.encoded_len() > 0)
}

struct CodecVisitor<'c> {
    codec: &'c Codec,
    namespace: &'c str,
    seal: bool,
    changed: bool,
    done: Transformed,
    error: Option<plinth_codec::CodecError>,
}

impl CodecVisitor<'_> {
    fn apply(&mut self, payload: &mut Payload) -> Result<(), plinth_codec::CodecError> {
        if self.seal {
            if is_encrypted(payload) {
                return Ok(());
            }
            self.done.payload_bytes += payload.data.len() as u64;
            *payload = self
                .codec
                .encode_payload(self.namespace, std::mem::take(payload))?;
        } else {
            if !is_encrypted(payload) {
                return Ok(());
            }
            match self.codec.open_payload(self.namespace, payload) {
                Ok(plain) => {
                    self.done.payload_bytes += plain.data.len() as u64;
                    *payload = plain;
                }
                // History may hold payloads sealed under a key this proxy no longer has: the
                // caller gets them sealed, the rest of the answer stays readable.
                Err(error) => {
                    tracing::warn!(namespace = self.namespace, %error, "payload left encrypted");
                    self.done.undecryptable += 1;
                    return Ok(());
                }
            }
        }
        self.changed = true;
        Ok(())
    }

    fn visit_field(&mut self, field: PayloadField<'_>) -> Result<(), plinth_codec::CodecError> {
        if field.path.contains("SearchAttributes.indexed_fields") {
            return Ok(());
        }
        match field.data {
            PayloadFieldData::Single(payload) => self.apply(payload),
            PayloadFieldData::Repeated(payloads) => {
                payloads.iter_mut().try_for_each(|p| self.apply(p))
            }
            PayloadFieldData::Payloads(payloads) => {
                payloads.payloads.iter_mut().try_for_each(|p| self.apply(p))
            }
        }
    }
}

impl AsyncPayloadVisitor for CodecVisitor<'_> {
    fn visit<'a>(
        &'a mut self,
        field: PayloadField<'a>,
    ) -> BoxFuture<'a, Result<(), PayloadConversionError>> {
        let result = match self.visit_field(field) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.error = Some(error);
                Err(PayloadConversionError::WrongEncoding)
            }
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use temporalio_common::protos::temporal::api::common::v1::{
        Payloads, SearchAttributes, WorkflowType,
    };
    use temporalio_common::protos::temporal::api::workflowservice::v1::{
        DescribeNamespaceRequest, StartWorkflowExecutionRequest,
    };

    fn codec() -> Codec {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = plinth_codec::KeyRing::init(&dir.path().join("ring.json")).unwrap();
        Codec::new(Arc::new(ring), Default::default())
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
    fn requests_are_sealed_but_search_attributes_stay_plain_and_responses_open_again() {
        let codec = codec();
        let bytes = start_request().encode_to_vec();
        let seal = probe::<StartWorkflowExecutionRequest>().seal().unwrap();
        let sealed = seal(&bytes, &codec, "orders").unwrap();
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

        let open = probe::<StartWorkflowExecutionRequest>().open().unwrap();
        let opened = open(&sealed_bytes, &codec, "orders").unwrap();
        let message = StartWorkflowExecutionRequest::decode(&opened.message.unwrap()[..]).unwrap();
        assert_eq!(message.input.unwrap().payloads[0], plain("\"card 4111\""));
    }

    #[test]
    fn messages_without_payloads_to_change_keep_their_bytes() {
        let codec = codec();
        let mut request = start_request();
        request.input = None;
        let unchanged = probe::<StartWorkflowExecutionRequest>().seal().unwrap()(
            &request.encode_to_vec(),
            &codec,
            "orders",
        )
        .unwrap();
        assert_eq!(
            unchanged.message, None,
            "only a search attribute: forwarded as is"
        );
        assert!(probe::<DescribeNamespaceRequest>().seal().is_none());

        let open = probe::<StartWorkflowExecutionRequest>().open().unwrap();
        let plain = open(&start_request().encode_to_vec(), &codec, "orders").unwrap();
        assert_eq!(
            plain,
            Transformed::default(),
            "nothing sealed: nothing to open"
        );
    }

    /// A field no Temporal message has: field 9999, length-delimited.
    fn future_field() -> Vec<u8> {
        let mut field = Vec::new();
        prost::encoding::encode_varint(9999 << 3 | 2, &mut field);
        field.extend_from_slice(&[6]);
        field.extend_from_slice(b"future");
        field
    }

    #[test]
    fn fields_from_a_newer_api_at_the_top_level_survive_sealing() {
        let codec = codec();
        let mut bytes = start_request().encode_to_vec();
        bytes.extend_from_slice(&future_field());
        let seal = probe::<StartWorkflowExecutionRequest>().seal().unwrap();
        let sealed = seal(&bytes, &codec, "orders").unwrap();
        assert_eq!(sealed.dropped_bytes, 0);
        let sealed_bytes = sealed.message.unwrap();
        assert!(
            sealed_bytes.ends_with(&future_field()),
            "carried over as it was"
        );
        let message = StartWorkflowExecutionRequest::decode(&sealed_bytes[..]).unwrap();
        assert!(is_encrypted(&message.input.unwrap().payloads[0]));
    }

    #[test]
    fn nested_fields_from_a_newer_api_are_reported_dropped() {
        let codec = codec();
        let mut request = start_request();
        let mut workflow_type = request.workflow_type.take().unwrap().encode_to_vec();
        workflow_type.extend_from_slice(&future_field());
        let mut bytes = request.encode_to_vec();
        // Field 3, workflow_type, with the unknown field inside it.
        bytes.push(3 << 3 | 2);
        prost::encoding::encode_varint(workflow_type.len() as u64, &mut bytes);
        bytes.extend_from_slice(&workflow_type);
        let seal = probe::<StartWorkflowExecutionRequest>().seal().unwrap();
        let sealed = seal(&bytes, &codec, "orders").unwrap();
        assert_eq!(sealed.dropped_bytes, future_field().len() as u64);
        let message = StartWorkflowExecutionRequest::decode(&sealed.message.unwrap()[..]).unwrap();
        assert_eq!(
            message.workflow_type.unwrap().name,
            "Ship",
            "the known part goes on"
        );
    }

    #[test]
    fn knows_tells_fields_of_the_type_from_others_for_each_wire_type() {
        type Start = StartWorkflowExecutionRequest;
        assert!(knows::<Start>(1, 2), "namespace, text");
        assert!(knows::<Start>(3, 2), "workflow_type, a message");
        assert!(knows::<Start>(17, 0), "request_eager_execution, a bool");
        assert!(
            knows::<Start>(1, 0),
            "namespace, read as a varint: a mismatch, so known"
        );
        for wire_type in [0, 1, 2, 5] {
            assert!(!knows::<Start>(9999, wire_type), "wire type {wire_type}");
        }
    }

    #[test]
    fn a_payload_sealed_for_another_namespace_goes_back_sealed() {
        let codec = codec();
        let seal = probe::<StartWorkflowExecutionRequest>().seal().unwrap();
        let sealed = seal(&start_request().encode_to_vec(), &codec, "orders").unwrap();
        let open = probe::<StartWorkflowExecutionRequest>().open().unwrap();
        let opened = open(&sealed.message.unwrap(), &codec, "billing").unwrap();
        assert_eq!(opened.undecryptable, 1);
        assert_eq!(opened.message, None);
    }
}
