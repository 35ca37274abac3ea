//! Encrypting request payloads and decrypting response payloads in place in a message's bytes,
//! where the [`schema`](crate::schema) of Temporal's protos says they are. Search attributes
//! stay plaintext: the server indexes them. A failure's message and stack trace are folded into
//! its encoded attributes on the way in, so they are sealed too, and restored on the way out.

use std::collections::{BTreeSet, HashMap};

use plinth_codec::{Codec, Payload, SealedParts};
use plinth_identity::Identity;
use prost::Message;

use crate::schema::{Carrier, RewriteError, SCHEMA, Scope, Visitor};
use crate::wire;

/// The message SDKs put in place of a failure's text when they move it into its encoded
/// attributes, as `temporal.api.failure.v1.Failure` documents.
const ENCODED_FAILURE: &[u8] = b"Encoded failure";
/// The encoding of the encoded attributes' JSON object.
const JSON_PLAIN: &[u8] = b"json/plain";
/// Failure fields: message, stack trace, encoded attributes.
const FAILURE_MESSAGE: u32 = 1;
const FAILURE_STACK_TRACE: u32 = 3;
const FAILURE_ENCODED_ATTRIBUTES: u32 = 20;

/// What sealing or opening did to a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Transformed {
    /// The rewritten message; `None` when no payload changed, so the original bytes go on.
    pub message: Option<Vec<u8>>,
    /// Plaintext bytes (payload data) encrypted or decrypted.
    pub payload_bytes: u64,
    /// Payloads that could not be decrypted and went on as they were.
    pub undecryptable: u64,
    /// Namespaces other than the call's that payloads left sealed were sealed for: the caller
    /// may be allowed to read them.
    pub foreign: BTreeSet<String>,
    /// Message types that had fields Plinth's protos lack, once per occurrence.
    pub unknown_fields: Vec<String>,
    /// `Any` values of types Plinth's protos lack, whose contents went on unseen.
    pub unknown_anys: u64,
}

/// Why one payload could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    /// A field that holds a payload is not a protobuf message.
    #[error("malformed payload: {0}")]
    Malformed(#[from] wire::MalformedField),
    /// A payload could not be encrypted.
    #[error("cannot encrypt a payload: {0}")]
    Seal(plinth_codec::CodecError),
    /// A failure whose text cannot be sealed.
    #[error("failure: {0}")]
    Failure(&'static str),
    /// The key provider could not be used, or the namespace has no key of its own yet:
    /// nothing was sealed or opened, and a later try may succeed.
    #[error("{0}")]
    Provider(plinth_codec::CodecError),
}

impl PayloadError {
    /// The error of sealing a payload: a provider outage is one of its own.
    fn sealing(error: plinth_codec::CodecError) -> Self {
        match error {
            plinth_codec::CodecError::Provider { .. }
            | plinth_codec::CodecError::NoNamespaceKey(_) => Self::Provider(error),
            error => Self::Seal(error),
        }
    }
}

/// Whether a message's payloads failed for a key provider outage, which the caller may retry.
pub(crate) fn provider_down(error: &TransformError) -> bool {
    matches!(error, RewriteError::Payload(PayloadError::Provider(_)))
}

/// Why a message's payloads could not be sealed or opened.
pub(crate) type TransformError = RewriteError<PayloadError>;

/// Encrypts every payload of `message` (a `carrier`) for the namespace that will store it: the
/// call's `namespace`, or the one a command names (`targets` gives each Nexus endpoint's).
/// Payloads a client encrypted itself are sealed again, and come back to it as it sent them.
pub(crate) fn seal(
    message: &[u8],
    carrier: Carrier,
    codec: &Codec,
    namespace: &str,
    targets: &HashMap<String, String>,
    caller: Option<&Identity>,
) -> Result<Transformed, TransformError> {
    let mut sealer = Sealer {
        codec,
        namespace,
        targets,
        caller,
        done: Transformed::default(),
    };
    let message = SCHEMA.rewrite(message, carrier, &mut sealer)?;
    Ok(Transformed {
        message,
        ..sealer.done
    })
}

struct Sealer<'a> {
    codec: &'a Codec,
    namespace: &'a str,
    targets: &'a HashMap<String, String>,
    /// Stamped on every identity inside the request.
    caller: Option<&'a Identity>,
    done: Transformed,
}

impl Visitor for Sealer<'_> {
    type Error = PayloadError;

    fn payload(
        &mut self,
        encoded: &[u8],
        scope: Scope<'_>,
    ) -> Result<Option<Vec<u8>>, PayloadError> {
        self.done.payload_bytes += PayloadView::of(encoded)?.parts.data.len() as u64;
        let namespace = match scope {
            Scope::Call => self.namespace,
            Scope::Namespace(namespace) => namespace,
            // Resolved before sealing; an endpoint with no namespace target (an external URL)
            // hands the payload to no other namespace.
            Scope::NexusEndpoint(endpoint) => self
                .targets
                .get(endpoint)
                .map_or(self.namespace, String::as_str),
        };
        self.codec
            .seal_encoded(namespace, encoded)
            .map(Some)
            .map_err(PayloadError::sealing)
    }

    fn failure_before(&mut self, failure: &[u8]) -> Result<Option<Vec<u8>>, PayloadError> {
        fold_failure(failure)
    }

    fn nexus_failure(&mut self, failure: &[u8]) -> Result<(), PayloadError> {
        // 1 message, 2 metadata, 3 details, 4 stack trace: what they hold would be stored in
        // plaintext.
        for field in wire::fields(failure) {
            let field = field?;
            if matches!(field.number, 1..=4) && !field.value.is_empty() {
                return Err(PayloadError::Failure(
                    "a Nexus failure in the older form (temporal.api.nexus.v1.Failure) carries \
                     text or details the proxy cannot encrypt; send a \
                     temporal.api.failure.v1.Failure instead (the failure field)",
                ));
            }
        }
        Ok(())
    }

    fn identity(&mut self, claimed: &[u8]) -> Option<Vec<u8>> {
        self.caller
            .map(|caller| crate::forward::recorded_identity(caller, claimed))
    }

    fn unknown_field(&mut self, type_name: &str, _number: u32) {
        self.done.unknown_fields.push(type_name.to_owned());
    }

    fn unknown_any(&mut self, _type_url: &str) {
        self.done.unknown_anys += 1;
    }
}

/// What a request names, besides its own namespace, that it acts on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Named {
    /// A namespace, as a child workflow's or an external signal's.
    Namespace(String),
    /// A Nexus endpoint, whose target namespace an operation acts on.
    NexusEndpoint(String),
}

/// Every namespace and Nexus endpoint that `message` (a `carrier`) acts on besides its own.
pub(crate) fn named(message: &[u8], carrier: Carrier) -> Result<BTreeSet<Named>, TransformError> {
    struct Collect(BTreeSet<Named>);
    impl Visitor for Collect {
        type Error = PayloadError;
        fn payload(&mut self, _: &[u8], _: Scope<'_>) -> Result<Option<Vec<u8>>, PayloadError> {
            Ok(None)
        }
        fn scope(&mut self, scope: Scope<'_>) {
            match scope {
                Scope::Call => false,
                Scope::Namespace(name) => self.0.insert(Named::Namespace(name.to_owned())),
                Scope::NexusEndpoint(name) => self.0.insert(Named::NexusEndpoint(name.to_owned())),
            };
        }
    }
    let mut collect = Collect(BTreeSet::new());
    SCHEMA.rewrite(message, carrier, &mut collect)?;
    Ok(collect.0)
}

/// Decrypts every payload of `message` (a `carrier`) sealed for `namespace` or for one of
/// `readable`. One that does not open goes on sealed and is counted, so the rest of the answer
/// stays readable; the namespaces of those sealed for others are listed.
pub(crate) fn open(
    message: &[u8],
    carrier: Carrier,
    codec: &Codec,
    namespace: &str,
    readable: &BTreeSet<String>,
) -> Result<Transformed, TransformError> {
    // An encrypted payload carries this encoding verbatim in its metadata: an answer without
    // it has nothing to open.
    if memchr::memmem::find(message, plinth_codec::metadata::ENCRYPTED).is_none() {
        return Ok(Transformed::default());
    }
    let mut opener = Opener {
        codec,
        namespace,
        readable,
        done: Transformed::default(),
    };
    let message = SCHEMA.rewrite(message, carrier, &mut opener)?;
    Ok(Transformed {
        message,
        ..opener.done
    })
}

struct Opener<'a> {
    codec: &'a Codec,
    namespace: &'a str,
    readable: &'a BTreeSet<String>,
    done: Transformed,
}

impl Visitor for Opener<'_> {
    type Error = PayloadError;

    fn payload(&mut self, encoded: &[u8], _: Scope<'_>) -> Result<Option<Vec<u8>>, PayloadError> {
        let view = PayloadView::of(encoded)?;
        if !view.is_encrypted() {
            return Ok(None);
        }
        // The samples' format names no namespace: it opens for the call's.
        let sealed_for = match view.parts.namespace.map(std::str::from_utf8) {
            Some(Ok(other)) if other != self.namespace => {
                if !self.readable.contains(other) {
                    self.done.foreign.insert(other.to_owned());
                    self.done.undecryptable += 1;
                    return Ok(None);
                }
                other
            }
            _ => self.namespace,
        };
        match self.codec.open_parts(sealed_for, view.parts) {
            Ok(plain) => {
                self.done.payload_bytes += PayloadView::of(&plain)?.parts.data.len() as u64;
                Ok(Some(plain))
            }
            // Left encrypted, a payload would reach a worker that cannot read it.
            Err(error @ plinth_codec::CodecError::Provider { .. }) => {
                Err(PayloadError::Provider(error))
            }
            // History may hold payloads sealed under a key this proxy no longer has.
            Err(error) => {
                tracing::warn!(namespace = sealed_for, %error, "payload left encrypted");
                self.done.undecryptable += 1;
                Ok(None)
            }
        }
    }

    fn failure_after(&mut self, failure: &[u8]) -> Result<Option<Vec<u8>>, PayloadError> {
        restore_failure(failure)
    }

    fn unknown_field(&mut self, type_name: &str, _number: u32) {
        self.done.unknown_fields.push(type_name.to_owned());
    }

    fn unknown_any(&mut self, _type_url: &str) {
        self.done.unknown_anys += 1;
    }
}

/// The text fields of a failure, and whether it has encoded attributes.
struct FailureText<'a> {
    message: &'a [u8],
    stack_trace: &'a [u8],
    encoded_attributes: Option<&'a [u8]>,
}

impl<'a> FailureText<'a> {
    fn of(failure: &'a [u8]) -> Result<Self, PayloadError> {
        let mut text = FailureText {
            message: b"",
            stack_trace: b"",
            encoded_attributes: None,
        };
        for field in wire::fields(failure) {
            let field = field?;
            match (field.number, field.wire_type) {
                (FAILURE_MESSAGE, 2) => text.message = field.value,
                (FAILURE_STACK_TRACE, 2) => text.stack_trace = field.value,
                (FAILURE_ENCODED_ATTRIBUTES, 2) => text.encoded_attributes = Some(field.value),
                _ => {}
            }
        }
        Ok(text)
    }

    /// `failure` without its text fields, then `message`, `stack_trace` and `attributes`
    /// where they are not empty.
    fn replaced(
        failure: &[u8],
        message: &[u8],
        stack_trace: &[u8],
        attributes: Option<&[u8]>,
    ) -> Result<Vec<u8>, PayloadError> {
        let mut out = Vec::with_capacity(failure.len() + 64);
        for field in wire::fields(failure) {
            let field = field?;
            if !matches!(
                field.number,
                FAILURE_MESSAGE | FAILURE_STACK_TRACE | FAILURE_ENCODED_ATTRIBUTES
            ) {
                out.extend_from_slice(field.encoded);
            }
        }
        for (number, value) in [
            (FAILURE_MESSAGE, Some(message)),
            (FAILURE_STACK_TRACE, Some(stack_trace)),
            (FAILURE_ENCODED_ATTRIBUTES, attributes),
        ] {
            if let Some(value) = value.filter(|value| !value.is_empty()) {
                prost::encoding::bytes::encode(number, &value.to_vec(), &mut out);
            }
        }
        Ok(out)
    }
}

/// Moves a failure's message and stack trace into its encoded attributes, as an SDK that
/// encodes common attributes does, so that sealing reaches them. A failure that already has
/// encoded attributes keeps them, and may then carry no other text.
fn fold_failure(failure: &[u8]) -> Result<Option<Vec<u8>>, PayloadError> {
    let text = FailureText::of(failure)?;
    if text.message.is_empty() && text.stack_trace.is_empty() {
        return Ok(None);
    }
    if text.encoded_attributes.is_some() {
        return if text.message == ENCODED_FAILURE && text.stack_trace.is_empty() {
            Ok(None)
        } else {
            Err(PayloadError::Failure(
                "a failure with encoded attributes carries a message other than \
                 \"Encoded failure\" or a stack trace, which would be stored in plaintext",
            ))
        };
    }
    let utf8 = |bytes| {
        std::str::from_utf8(bytes)
            .map_err(|_| PayloadError::Failure("message or stack trace is not UTF-8"))
    };
    let data = serde_json::to_vec(&serde_json::json!({
        "message": utf8(text.message)?,
        "stack_trace": utf8(text.stack_trace)?,
    }))
    .expect("a JSON object of strings serializes");
    let attributes = Payload {
        metadata: [(
            plinth_codec::metadata::ENCODING.to_owned(),
            JSON_PLAIN.to_vec(),
        )]
        .into(),
        data,
        ..Default::default()
    }
    .encode_to_vec();
    FailureText::replaced(failure, ENCODED_FAILURE, b"", Some(&attributes)).map(Some)
}

/// The reverse of [`fold_failure`], for a failure whose encoded attributes are (now) the
/// plaintext JSON object of its message and stack trace and nothing else.
fn restore_failure(failure: &[u8]) -> Result<Option<Vec<u8>>, PayloadError> {
    let text = FailureText::of(failure)?;
    let Some(attributes) = text.encoded_attributes else {
        return Ok(None);
    };
    let view = PayloadView::of(attributes)?;
    if text.message != ENCODED_FAILURE || view.encoding != Some(JSON_PLAIN) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Attributes {
        message: String,
        #[serde(default)]
        stack_trace: String,
    }
    let Ok(restored) = serde_json::from_slice::<Attributes>(view.parts.data) else {
        return Ok(None);
    };
    FailureText::replaced(
        failure,
        restored.message.as_bytes(),
        restored.stack_trace.as_bytes(),
        None,
    )
    .map(Some)
}

/// What sealing and opening need to know of a serialized payload, read without decoding it. As
/// in every decoder, a field or map key given twice counts as its last occurrence.
struct PayloadView<'a> {
    /// The `encoding` metadata value.
    encoding: Option<&'a [u8]>,
    /// Its data, and the metadata opening it needs when it is sealed.
    parts: SealedParts<'a>,
}

impl<'a> PayloadView<'a> {
    fn of(encoded: &'a [u8]) -> Result<Self, PayloadError> {
        use plinth_codec::metadata;
        let mut view = PayloadView {
            encoding: None,
            parts: SealedParts::default(),
        };
        for field in wire::fields(encoded) {
            let field = field?;
            match (field.number, field.wire_type) {
                // A metadata entry: 1 key, 2 value.
                (1, 2) => {
                    let (mut key, mut value) = (&[][..], &[][..]);
                    for part in wire::fields(field.value) {
                        let part = part?;
                        match (part.number, part.wire_type) {
                            (1, 2) => key = part.value,
                            (2, 2) => value = part.value,
                            _ => {}
                        }
                    }
                    // As in a decoded map, the last entry of a key counts.
                    let slot = match std::str::from_utf8(key) {
                        Ok(metadata::ENCODING) => &mut view.encoding,
                        Ok(metadata::NAMESPACE) => &mut view.parts.namespace,
                        Ok(metadata::KEY_ID) => &mut view.parts.key_id,
                        Ok(metadata::DATA_KEY) => &mut view.parts.data_key,
                        Ok(metadata::COMPRESSION) => &mut view.parts.compression,
                        _ => continue,
                    };
                    *slot = Some(value);
                }
                (2, 2) => view.parts.data = field.value,
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

    /// `message`, a `carrier`, sealed for namespace `orders`.
    fn seal_for_orders(
        codec: &Codec,
        message: &[u8],
        carrier: Carrier,
    ) -> Result<Transformed, TransformError> {
        seal(message, carrier, codec, "orders", &HashMap::new(), None)
    }

    /// The carrier of workflowservice message `name`.
    fn request_carrier(name: &str) -> Carrier {
        SCHEMA
            .carrier(&format!("temporal.api.workflowservice.v1.{name}"))
            .unwrap()
    }

    fn codec() -> Codec {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = plinth_codec::KeyRing::init(&dir.path().join("ring.json")).unwrap();
        Codec::new(Arc::new(ring), Default::default())
    }

    fn start() -> Carrier {
        SCHEMA.carrier(START).unwrap()
    }

    /// A key provider that cannot be reached.
    #[derive(Debug)]
    struct Down;

    impl Down {
        fn error() -> plinth_codec::CodecError {
            plinth_codec::CodecError::Provider {
                provider: "test",
                key: "kek-test".into(),
                reason: "unreachable".into(),
            }
        }
    }

    impl plinth_codec::KekProvider for Down {
        fn active_kek(&self) -> Result<String, plinth_codec::CodecError> {
            Ok("kek-test".into())
        }
        fn wrap(&self, _: &str, _: &[u8], _: &[u8]) -> Result<Vec<u8>, plinth_codec::CodecError> {
            Err(Self::error())
        }
        fn unwrap(&self, _: &str, _: &[u8], _: &[u8]) -> Result<Vec<u8>, plinth_codec::CodecError> {
            Err(Self::error())
        }
    }

    #[test]
    fn a_provider_outage_fails_sealing_and_opening_as_an_outage() {
        let down = Codec::new(Arc::new(Down), Default::default());
        let bytes = start_request().encode_to_vec();
        let sealing = seal_for_orders(&down, &bytes, start()).unwrap_err();
        assert!(provider_down(&sealing), "{sealing}");
        let sealed = seal_for_orders(&codec(), &bytes, start())
            .unwrap()
            .message
            .unwrap();
        let opening = open(&sealed, start(), &down, "orders", &BTreeSet::new()).unwrap_err();
        assert!(provider_down(&opening), "{opening}");
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
    fn a_payload_read_in_place_gives_what_decoding_it_gives() {
        use plinth_codec::metadata;
        let codec = codec();
        let sealed = codec.encode_payload("orders", plain("\"x\"")).unwrap();
        let mut bytes = sealed.encode_to_vec();
        let view = PayloadView::of(&bytes).unwrap();
        assert!(view.is_encrypted());
        assert_eq!(view.parts, SealedParts::of(&sealed));
        // A key given twice counts by its last entry, as in a decoded map.
        let again = Payload {
            metadata: [(metadata::NAMESPACE.to_owned(), b"payments".to_vec())].into(),
            ..Default::default()
        };
        bytes.extend(again.encode_to_vec());
        let decoded = Payload::decode(&bytes[..]).unwrap();
        let view = PayloadView::of(&bytes).unwrap();
        assert_eq!(view.parts, SealedParts::of(&decoded));
        assert_eq!(view.parts.namespace, Some(&b"payments"[..]));
        assert!(codec.open_parts("payments", view.parts).is_err());
    }

    #[test]
    fn requests_are_sealed_but_search_attributes_stay_plain_and_open_to_the_same_bytes() {
        let codec = codec();
        let bytes = start_request().encode_to_vec();
        let sealed = seal_for_orders(&codec, &bytes, start()).unwrap();
        assert_eq!(sealed.payload_bytes, 11);
        let sealed_bytes = sealed.message.unwrap();
        let message = StartWorkflowExecutionRequest::decode(&sealed_bytes[..]).unwrap();
        let input = &message.input.as_ref().unwrap().payloads[0];
        assert!(is_encrypted(input));
        assert!(
            // The whole text: the key id in the metadata carries a timestamp's digits.
            !sealed_bytes.windows(9).any(|w| w == b"card 4111"),
            "no plaintext left"
        );
        assert!(
            !input.data.windows(4).any(|w| w == b"4111"),
            "not even the digits in what the payload carries"
        );
        let attribute = &message.search_attributes.as_ref().unwrap().indexed_fields["CustomerId"];
        assert_eq!(attribute.data, b"\"c-42\"");

        let opened = open(&sealed_bytes, start(), &codec, "orders", &BTreeSet::new()).unwrap();
        assert_eq!(opened.payload_bytes, 11);
        assert_eq!(
            opened.message.unwrap(),
            bytes,
            "byte for byte what was sealed"
        );
    }

    #[test]
    fn payloads_a_client_encrypted_are_sealed_again_and_come_back_as_sent() {
        let codec = codec();
        let once = seal_for_orders(&codec, &start_request().encode_to_vec(), start())
            .unwrap()
            .message
            .unwrap();
        let twice = seal_for_orders(&codec, &once, start()).unwrap();
        let twice = twice.message.expect("sealed again");
        assert_ne!(twice, once);
        let opened = open(&twice, start(), &codec, "orders", &BTreeSet::new()).unwrap();
        assert_eq!(
            opened.message.unwrap(),
            once,
            "opened once: as the client sent it"
        );
    }

    #[test]
    fn messages_without_payloads_to_change_keep_their_bytes() {
        let codec = codec();
        let mut request = start_request();
        request.input = None;
        let unchanged = seal_for_orders(&codec, &request.encode_to_vec(), start()).unwrap();
        assert_eq!(
            unchanged.message, None,
            "only a search attribute: forwarded as is"
        );
        assert!(
            SCHEMA
                .carrier("temporal.api.workflowservice.v1.DescribeNamespaceRequest")
                .is_none()
        );

        let plain = open(
            &start_request().encode_to_vec(),
            start(),
            &codec,
            "orders",
            &BTreeSet::new(),
        )
        .unwrap();
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
        let error = seal_for_orders(&codec, &bytes, start()).unwrap_err();
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

        let sealed = seal_for_orders(&codec, &bytes, start())
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
        let opened = open(&sealed, start(), &codec, "orders", &BTreeSet::new()).unwrap();
        assert_eq!(opened.message.unwrap(), bytes, "inside the payload too");
    }

    #[test]
    fn a_payload_sealed_for_another_namespace_opens_only_when_that_namespace_is_readable() {
        let codec = codec();
        let sealed = seal_for_orders(&codec, &start_request().encode_to_vec(), start())
            .unwrap()
            .message
            .unwrap();
        let closed = open(&sealed, start(), &codec, "billing", &BTreeSet::new()).unwrap();
        assert_eq!(closed.undecryptable, 1);
        assert_eq!(closed.message, None);
        assert_eq!(closed.foreign, BTreeSet::from(["orders".to_owned()]));
        let readable = BTreeSet::from(["orders".to_owned()]);
        let opened = open(&sealed, start(), &codec, "billing", &readable).unwrap();
        assert_eq!(opened.undecryptable, 0);
        assert_eq!(opened.message.unwrap(), start_request().encode_to_vec());
    }

    /// A protocol message whose body is a `type_name` encoded as `value`.
    fn protocol(
        type_name: &str,
        value: Vec<u8>,
    ) -> temporalio_common::protos::temporal::api::protocol::v1::Message {
        let mut message = temporalio_common::protos::temporal::api::protocol::v1::Message {
            body: Some(Default::default()),
            ..Default::default()
        };
        let body = message.body.as_mut().unwrap();
        body.type_url = format!("type.googleapis.com/{type_name}");
        body.value = value;
        message
    }

    #[test]
    fn update_requests_and_responses_inside_protocol_messages_are_sealed_and_opened() {
        use temporalio_common::protos::temporal::api::update::v1::{
            Input, Outcome, Request, Response, outcome,
        };
        use temporalio_common::protos::temporal::api::workflowservice::v1::{
            PollWorkflowTaskQueueResponse, RespondWorkflowTaskCompletedRequest,
        };
        let codec = codec();
        let answer = Response {
            outcome: Some(Outcome {
                value: Some(outcome::Value::Success(Payloads {
                    payloads: vec![plain("\"secret answer\"")],
                })),
            }),
            ..Default::default()
        };
        let completed = RespondWorkflowTaskCompletedRequest {
            namespace: "orders".into(),
            messages: vec![protocol(
                "temporal.api.update.v1.Response",
                answer.encode_to_vec(),
            )],
            ..Default::default()
        };
        let carrier = request_carrier("RespondWorkflowTaskCompletedRequest");
        let sealed = seal_for_orders(&codec, &completed.encode_to_vec(), carrier)
            .unwrap()
            .message
            .expect("the update's result is sealed");
        assert!(memchr::memmem::find(&sealed, b"secret answer").is_none());

        let request = Request {
            input: Some(Input {
                name: "rename".into(),
                args: Some(Payloads {
                    payloads: vec![plain("\"secret argument\"")],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sealed_request = seal(
            &request.encode_to_vec(),
            SCHEMA.reached("temporal.api.update.v1.Request").unwrap(),
            &codec,
            "orders",
            &HashMap::new(),
            None,
        )
        .unwrap()
        .message
        .unwrap();
        let poll = PollWorkflowTaskQueueResponse {
            messages: vec![protocol("temporal.api.update.v1.Request", sealed_request)],
            ..Default::default()
        };
        let carrier = request_carrier("PollWorkflowTaskQueueResponse");
        let opened = open(
            &poll.encode_to_vec(),
            carrier,
            &codec,
            "orders",
            &BTreeSet::new(),
        )
        .unwrap();
        let opened = PollWorkflowTaskQueueResponse::decode(&opened.message.unwrap()[..]).unwrap();
        let body = opened.messages[0].body.as_ref().unwrap();
        assert_eq!(Request::decode(&body.value[..]).unwrap(), request);
    }

    #[test]
    fn an_any_of_a_type_plinth_does_not_know_is_counted() {
        use temporalio_common::protos::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest;
        let codec = codec();
        let completed = RespondWorkflowTaskCompletedRequest {
            namespace: "orders".into(),
            messages: vec![protocol("temporal.api.future.v9.Thing", b"opaque".to_vec())],
            ..Default::default()
        };
        let carrier = request_carrier("RespondWorkflowTaskCompletedRequest");
        let sealed = seal_for_orders(&codec, &completed.encode_to_vec(), carrier).unwrap();
        assert_eq!(sealed.unknown_anys, 1);
        assert_eq!(sealed.message, None);
    }

    #[test]
    fn failure_text_is_sealed_in_encoded_attributes_and_restored_on_the_way_out() {
        use temporalio_common::protos::temporal::api::failure::v1::Failure;
        use temporalio_common::protos::temporal::api::workflowservice::v1::RespondActivityTaskFailedRequest;
        let codec = codec();
        let failure = Failure {
            message: "card 4111 declined".into(),
            stack_trace: "at charge (secret.py:12)".into(),
            source: "PythonSDK".into(),
            cause: Some(Box::new(Failure {
                message: "inner 4111".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let request = RespondActivityTaskFailedRequest {
            namespace: "orders".into(),
            failure: Some(failure.clone()),
            ..Default::default()
        };
        let carrier = request_carrier("RespondActivityTaskFailedRequest");
        let sealed = seal_for_orders(&codec, &request.encode_to_vec(), carrier)
            .unwrap()
            .message
            .unwrap();
        assert!(
            [&b"card 4111"[..], b"inner 4111", b"secret.py"]
                .iter()
                .all(|text| memchr::memmem::find(&sealed, text).is_none()),
            "no text left in plaintext"
        );
        let stored = RespondActivityTaskFailedRequest::decode(&sealed[..])
            .unwrap()
            .failure
            .unwrap();
        assert_eq!(stored.message, "Encoded failure");
        assert_eq!(stored.stack_trace, "");
        assert_eq!(stored.source, "PythonSDK");
        let attributes = stored.encoded_attributes.as_ref().unwrap();
        assert!(is_encrypted(attributes));
        assert!(memchr::memmem::find(&attributes.data, b"4111").is_none());

        let opened = open(&sealed, carrier, &codec, "orders", &BTreeSet::new()).unwrap();
        let opened =
            RespondActivityTaskFailedRequest::decode(&opened.message.unwrap()[..]).unwrap();
        assert_eq!(opened.failure.unwrap(), failure);
    }

    #[test]
    fn a_failure_with_encoded_attributes_and_plaintext_text_is_refused() {
        use temporalio_common::protos::temporal::api::failure::v1::Failure;
        use temporalio_common::protos::temporal::api::workflowservice::v1::RespondActivityTaskFailedRequest;
        let codec = codec();
        let carrier = request_carrier("RespondActivityTaskFailedRequest");
        let request = |message: &str| RespondActivityTaskFailedRequest {
            namespace: "orders".into(),
            failure: Some(Failure {
                message: message.into(),
                encoded_attributes: Some(plain("{}")),
                ..Default::default()
            }),
            ..Default::default()
        };
        let error =
            seal_for_orders(&codec, &request("secret").encode_to_vec(), carrier).unwrap_err();
        assert!(error.to_string().starts_with("failure: "), "{error}");
        // As an SDK that encodes common attributes sends it: the attributes are sealed.
        let sealed =
            seal_for_orders(&codec, &request("Encoded failure").encode_to_vec(), carrier).unwrap();
        assert!(sealed.message.is_some());
    }

    /// A standalone Nexus operation's endpoint acts elsewhere wherever it stands in the request,
    /// before or after the request's own namespace.
    #[test]
    fn a_top_level_nexus_endpoint_is_named_in_any_field_order() {
        let carrier = request_carrier("StartNexusOperationExecutionRequest");
        assert!(SCHEMA.acts_elsewhere(carrier));
        // 5 endpoint, 1 namespace: out of order, and the namespace given twice.
        let request = [
            length_delimited(1, b"orders"),
            length_delimited(5, b"to-billing"),
            length_delimited(1, b"orders"),
        ]
        .concat();
        assert_eq!(
            named(&request, carrier).unwrap(),
            BTreeSet::from([Named::NexusEndpoint("to-billing".into())])
        );
    }

    #[test]
    fn identities_inside_a_request_carry_the_certified_caller_first() {
        use temporalio_common::protos::temporal::api::update::v1::{Input, Meta, Request};
        use temporalio_common::protos::temporal::api::workflowservice::v1::UpdateWorkflowExecutionRequest;
        let codec = codec();
        let request = UpdateWorkflowExecutionRequest {
            namespace: "orders".into(),
            request: Some(Request {
                meta: Some(Meta {
                    update_id: "u1".into(),
                    identity: "user:admin@example.com".into(),
                }),
                input: Some(Input {
                    name: "rename".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let carrier = request_carrier("UpdateWorkflowExecutionRequest");
        let alice = Identity::User {
            email: "alice@example.com".into(),
        };
        let sealed = seal(
            &request.encode_to_vec(),
            carrier,
            &codec,
            "orders",
            &HashMap::new(),
            Some(&alice),
        )
        .unwrap()
        .message
        .unwrap();
        let meta = UpdateWorkflowExecutionRequest::decode(&sealed[..])
            .unwrap()
            .request
            .unwrap()
            .meta
            .unwrap();
        assert_eq!(
            meta.identity,
            "user:alice@example.com user:admin@example.com"
        );
        assert_eq!(meta.update_id, "u1");
    }

    #[test]
    fn a_nexus_failure_in_the_older_form_with_text_is_refused() {
        use temporalio_common::protos::temporal::api::nexus::v1::{Failure, HandlerError};
        use temporalio_common::protos::temporal::api::workflowservice::v1::RespondNexusTaskFailedRequest;
        let codec = codec();
        let carrier = request_carrier("RespondNexusTaskFailedRequest");
        #[allow(deprecated)]
        let request = |message: &str| RespondNexusTaskFailedRequest {
            namespace: "orders".into(),
            error: Some(HandlerError {
                error_type: "INTERNAL".into(),
                failure: Some(Failure {
                    message: message.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let error =
            seal_for_orders(&codec, &request("card 4111").encode_to_vec(), carrier).unwrap_err();
        assert!(
            error.to_string().contains("temporal.api.nexus.v1.Failure"),
            "{error}"
        );
        seal_for_orders(&codec, &request("").encode_to_vec(), carrier)
            .expect("no text: nothing to store in plaintext");
    }

    #[test]
    fn a_command_for_another_namespace_is_sealed_for_that_namespace() {
        use temporalio_common::protos::temporal::api::command::v1::{
            Command, SignalExternalWorkflowExecutionCommandAttributes, command,
        };
        use temporalio_common::protos::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest;
        let codec = codec();
        #[allow(deprecated)]
        let signal = SignalExternalWorkflowExecutionCommandAttributes {
            namespace: "billing".into(),
            input: Some(Payloads {
                payloads: vec![plain("\"for billing\"")],
            }),
            ..Default::default()
        };
        let request = RespondWorkflowTaskCompletedRequest {
            namespace: "orders".into(),
            commands: vec![Command {
                attributes: Some(
                    command::Attributes::SignalExternalWorkflowExecutionCommandAttributes(signal),
                ),
                ..Default::default()
            }],
            ..Default::default()
        };
        let carrier = request_carrier("RespondWorkflowTaskCompletedRequest");
        assert!(SCHEMA.acts_elsewhere(carrier));
        let sealed = seal_for_orders(&codec, &request.encode_to_vec(), carrier)
            .unwrap()
            .message
            .unwrap();
        let as_orders = open(&sealed, carrier, &codec, "orders", &BTreeSet::new()).unwrap();
        assert_eq!(as_orders.foreign, BTreeSet::from(["billing".to_owned()]));
        let as_billing = open(&sealed, carrier, &codec, "billing", &BTreeSet::new()).unwrap();
        assert_eq!(as_billing.message.unwrap(), request.encode_to_vec());
    }
}
