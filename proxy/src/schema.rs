//! Where payloads sit in Temporal's messages, read from the descriptor set of the protos Plinth
//! was built with (the source the SDK's payload visitors are generated from), and the walk that
//! rewrites them in a message's wire bytes. Everything else in a message, fields of a newer API
//! than Plinth's included, goes on byte for byte. Search attributes are left out: the server
//! indexes them. The walk also enters `google.protobuf.Any` values of Temporal's own types
//! (update requests and responses reach workers that way), folds and restores the text of
//! failures, and knows which fields name a namespace that a command acts on.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

use crate::wire::{self, MalformedField};

pub(crate) const PAYLOAD: &str = "temporal.api.common.v1.Payload";
/// Indexed by the server, so never encrypted.
const SEARCH_ATTRIBUTES: &str = "temporal.api.common.v1.SearchAttributes";
/// A message of any type, named by its type URL.
pub(crate) const ANY: &str = "google.protobuf.Any";
/// Its text is folded into its encoded attributes on the way in.
pub(crate) const FAILURE: &str = "temporal.api.failure.v1.Failure";
/// A Nexus handler's failure in the older form: free text and JSON details (which SDKs fill
/// with a serialized Temporal failure, payloads and all) that cannot be sealed in place.
pub(crate) const NEXUS_FAILURE: &str = "temporal.api.nexus.v1.Failure";
/// gRPC's error status, whose details name Temporal's failure types.
pub(crate) const STATUS: &str = "google.rpc.Status";
/// Packages whose messages' `namespace` field names the namespace a command or a nested
/// request acts on. Elsewhere (links, history, failures) a namespace field only describes.
const ACTING_PACKAGES: [&str; 2] = ["temporal.api.command.v1", "temporal.api.workflowservice.v1"];
/// Fields that name a Nexus endpoint, whose target namespace an operation acts on.
const NEXUS_ENDPOINT_FIELDS: [(&str, &str); 2] = [
    (
        "temporal.api.command.v1.ScheduleNexusOperationCommandAttributes",
        "endpoint",
    ),
    (
        "temporal.api.workflowservice.v1.StartNexusOperationExecutionRequest",
        "endpoint",
    ),
];
/// Packages whose messages' `identity` field is recorded by Temporal as who made a call: the
/// proxy stamps the certified caller on it wherever it is in a request.
const IDENTITY_PACKAGES: [&str; 3] = [
    "temporal.api.workflowservice.v1",
    "temporal.api.update.v1",
    "temporal.api.batch.v1",
];
/// Deeper than any real message, as prost's own decoding limit; a deeper one is refused.
const MAX_DEPTH: usize = 100;

/// A message type through which payloads or acting namespaces can be reached, by its place in
/// [`Schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Carrier(usize);

/// What a field of a [`Carrier`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    Payload,
    Carrier(Carrier),
    Any,
    /// A string naming the namespace the enclosing message acts on.
    Namespace,
    /// A string naming a Nexus endpoint whose target the enclosing message acts on.
    NexusEndpoint,
    /// A string Temporal records as who made the call.
    Identity,
    /// Known to the protos, and nothing the walk looks into.
    Nothing,
}

/// Where a payload is headed: the namespace that will store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope<'a> {
    /// The call's own namespace.
    Call,
    /// A namespace a command or nested request names.
    Namespace(&'a str),
    /// The target of a Nexus endpoint a command names.
    NexusEndpoint(&'a str),
}

/// What a walk does at the places the schema knows. Only `payload` is required.
pub(crate) trait Visitor {
    /// What a change can fail with.
    type Error;
    /// A serialized payload bound for `scope`; `Some` replaces it.
    fn payload(&mut self, encoded: &[u8], scope: Scope<'_>)
    -> Result<Option<Vec<u8>>, Self::Error>;
    /// A failure, before its fields are walked; `Some` replaces it and is walked instead.
    fn failure_before(&mut self, _failure: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(None)
    }
    /// A failure, after its fields were walked; `Some` replaces it.
    fn failure_after(&mut self, _failure: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(None)
    }
    /// A Nexus failure in its older form (message, stack trace, JSON details); an error
    /// refuses the message.
    fn nexus_failure(&mut self, _failure: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    /// An `identity` field below the top level, as the client sent it; `Some` replaces it.
    fn identity(&mut self, _claimed: &[u8]) -> Option<Vec<u8>> {
        None
    }
    /// A namespace or Nexus endpoint that a message below the top level acts on.
    fn scope(&mut self, _scope: Scope<'_>) {}
    /// An `Any` whose type is not one of Plinth's protos: its contents go on unseen.
    fn unknown_any(&mut self, _type_url: &str) {}
    /// A field Plinth's protos do not have, in a message of type `type_name`.
    fn unknown_field(&mut self, _type_name: &str, _number: u32) {}
}

/// Every carrier's fields.
#[derive(Debug)]
pub(crate) struct Schema {
    /// By carrier: (field number, what it holds), ascending by number, every known field.
    fields: Vec<Vec<(u32, Holds)>>,
    /// By carrier: its fully qualified name.
    names: Vec<String>,
    by_name: HashMap<String, Carrier>,
    /// Every message type of the protos, carriers or not: an `Any` of one of these is known.
    known: HashSet<String>,
    /// By carrier: whether a call whose top-level message is of its type has payloads in it.
    root: Vec<bool>,
    /// By carrier: whether a message of its type acts on namespaces below its top level.
    nested_scopes: Vec<bool>,
    /// By carrier: whether it has a field naming a namespace or endpoint it acts on.
    scoping: Vec<bool>,
    failure: Option<Carrier>,
    nexus_failure: Option<Carrier>,
    /// Every message type with a top-level string field `identity`: the field's number.
    identity_fields: HashMap<String, u32>,
}

/// The descriptor set of the protos this proxy was built with.
pub(crate) const DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/temporal-descriptors.bin"));

/// The schema of the protos this proxy was built with.
pub(crate) static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::from_descriptors(DESCRIPTORS).expect("the descriptor set built into the proxy decodes")
});

/// Why a message's payloads could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError<E> {
    /// The bytes are not a protobuf message.
    #[error("malformed message: {0}")]
    Malformed(#[from] MalformedField),
    /// Messages nested deeper than [`MAX_DEPTH`].
    #[error("malformed message: nested more than {MAX_DEPTH} deep")]
    TooDeep,
    /// What the visitor's change failed with.
    #[error(transparent)]
    Payload(E),
}

/// One field of a message type, as the descriptors give it.
#[derive(Debug, Clone)]
pub(crate) struct FieldInfo {
    pub number: u32,
    pub name: String,
    /// The fully qualified type of a message field.
    pub message: Option<String>,
    pub string: bool,
}

/// Every message type of `set`, nested ones and map entries included, with its fields.
pub(crate) fn message_fields(set: &FileDescriptorSet) -> HashMap<String, Vec<FieldInfo>> {
    fn collect(scope: &str, message: &DescriptorProto, into: &mut HashMap<String, Vec<FieldInfo>>) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            collect(&name, nested, into);
        }
        let fields = message
            .field
            .iter()
            .map(|field| FieldInfo {
                number: u32::try_from(field.number()).unwrap_or_default(),
                name: field.name().to_owned(),
                message: (field.r#type() == Type::Message)
                    .then(|| field.type_name().trim_start_matches('.').to_owned()),
                string: field.r#type() == Type::String,
            })
            .collect();
        into.insert(name, fields);
    }
    let mut messages = HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            collect(file.package(), message, &mut messages);
        }
    }
    messages
}

fn in_packages(type_name: &str, packages: &[&str]) -> bool {
    packages.iter().any(|package| {
        type_name
            .strip_prefix(package)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Whether `field` of `type_name` is an identity Temporal records.
fn is_identity(type_name: &str, field: &FieldInfo) -> bool {
    field.string && field.name == "identity" && in_packages(type_name, &IDENTITY_PACKAGES)
}

/// What a field names that a message acts on, if anything.
fn scope_of(type_name: &str, field: &FieldInfo) -> Option<Holds> {
    if NEXUS_ENDPOINT_FIELDS.contains(&(type_name, field.name.as_str())) {
        return Some(Holds::NexusEndpoint);
    }
    (in_packages(type_name, &ACTING_PACKAGES) && field.string && field.name == "namespace")
        .then_some(Holds::Namespace)
}

/// The least fixed point of types that have a field `direct` says yes to, or a field of a type
/// in the set. Cycles (a failure's cause is a failure) settle on the way.
fn closure(
    messages: &HashMap<String, Vec<FieldInfo>>,
    direct: impl Fn(&str, &FieldInfo) -> bool,
) -> HashSet<&str> {
    let mut set: HashSet<&str> = HashSet::new();
    loop {
        let before = set.len();
        for (name, fields) in messages {
            if name != SEARCH_ATTRIBUTES
                && !set.contains(name.as_str())
                && fields.iter().any(|field| {
                    direct(name, field)
                        || field
                            .message
                            .as_deref()
                            .is_some_and(|held| set.contains(held))
                })
            {
                set.insert(name);
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

impl Schema {
    /// The schema of a serialized `FileDescriptorSet`.
    pub(crate) fn from_descriptors(bytes: &[u8]) -> Result<Schema, prost::DecodeError> {
        let messages = message_fields(&FileDescriptorSet::decode(bytes)?);
        let holds_data =
            |field: &FieldInfo| matches!(field.message.as_deref(), Some(PAYLOAD | ANY));
        let carriers = closure(&messages, |name, field| {
            holds_data(field)
                || scope_of(name, field).is_some()
                || is_identity(name, field)
                || field.message.as_deref() == Some(NEXUS_FAILURE)
        });
        let data = closure(&messages, |_, field| holds_data(field));
        let scoped = closure(&messages, |name, field| scope_of(name, field).is_some());
        let mut names: Vec<&str> = carriers.iter().copied().collect();
        names.sort_unstable();
        let by_name: HashMap<String, Carrier> = names
            .iter()
            .enumerate()
            .map(|(i, name)| ((*name).to_owned(), Carrier(i)))
            .collect();
        let holds = |name: &str, field: &FieldInfo| match field.message.as_deref() {
            Some(PAYLOAD) => Holds::Payload,
            Some(ANY) => Holds::Any,
            Some(other) => by_name
                .get(other)
                .map_or(Holds::Nothing, |c| Holds::Carrier(*c)),
            None if is_identity(name, field) => Holds::Identity,
            None => scope_of(name, field).unwrap_or(Holds::Nothing),
        };
        let fields = names
            .iter()
            .map(|name| {
                let mut held: Vec<(u32, Holds)> = messages[*name]
                    .iter()
                    .map(|field| (field.number, holds(name, field)))
                    .collect();
                held.sort_unstable_by_key(|(number, _)| *number);
                held
            })
            .collect();
        // The top level's own namespace is the call's: what lies below it, or a Nexus
        // endpoint anywhere, acts elsewhere.
        let nested_scopes = names
            .iter()
            .map(|name| {
                messages[*name].iter().any(|field| {
                    field
                        .message
                        .as_deref()
                        .is_some_and(|held| scoped.contains(held))
                        || scope_of(name, field) == Some(Holds::NexusEndpoint)
                })
            })
            .collect();
        let scoping = names
            .iter()
            .map(|name| {
                messages[*name]
                    .iter()
                    .any(|field| scope_of(name, field).is_some())
            })
            .collect();
        let identity_fields = messages
            .iter()
            .filter_map(|(name, fields)| {
                let field = fields
                    .iter()
                    .find(|field| field.string && field.name == "identity")?;
                Some((name.clone(), field.number))
            })
            .collect();
        Ok(Schema {
            identity_fields,
            scoping,
            fields,
            root: names.iter().map(|name| data.contains(name)).collect(),
            nested_scopes,
            names: names.iter().map(|name| (*name).to_owned()).collect(),
            failure: by_name.get(FAILURE).copied(),
            nexus_failure: by_name.get(NEXUS_FAILURE).copied(),
            by_name,
            known: messages.into_keys().collect(),
        })
    }

    /// The carrier named `type_name` (fully qualified); `None` when a message of that type,
    /// taken as a call's whole request or response, has no payload to change.
    pub(crate) fn carrier(&self, type_name: &str) -> Option<Carrier> {
        self.by_name
            .get(type_name)
            .copied()
            .filter(|carrier| self.root[carrier.0])
    }

    /// The carrier named `type_name`, as it is reached inside another message.
    #[cfg(test)]
    pub(crate) fn reached(&self, type_name: &str) -> Option<Carrier> {
        self.by_name.get(type_name).copied()
    }

    /// The number of `type_name`'s `identity` field, which Temporal records as who made a call.
    pub(crate) fn identity_field(&self, type_name: &str) -> Option<u32> {
        self.identity_fields.get(type_name).copied()
    }

    /// Whether a message of type `carrier` can name, below its top level, a namespace or Nexus
    /// endpoint that it acts on (a child workflow's, an external signal's).
    pub(crate) fn acts_elsewhere(&self, carrier: Carrier) -> bool {
        self.nested_scopes[carrier.0]
    }

    fn holds(&self, carrier: Carrier, number: u32) -> Option<Holds> {
        let fields = &self.fields[carrier.0];
        fields
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| fields[i].1)
    }

    /// Walks `message`, of type `carrier`, with `visitor`; returns the message with the
    /// visitor's changes, `None` when nothing changed.
    pub(crate) fn rewrite<V: Visitor>(
        &self,
        message: &[u8],
        carrier: Carrier,
        visitor: &mut V,
    ) -> Result<Option<Vec<u8>>, RewriteError<V::Error>> {
        self.rewrite_at(message, carrier, visitor, Scope::Call, 0)
    }

    fn rewrite_at<V: Visitor>(
        &self,
        message: &[u8],
        carrier: Carrier,
        visitor: &mut V,
        scope: Scope<'_>,
        depth: usize,
    ) -> Result<Option<Vec<u8>>, RewriteError<V::Error>> {
        if depth > MAX_DEPTH {
            return Err(RewriteError::TooDeep);
        }
        if Some(carrier) == self.nexus_failure {
            visitor
                .nexus_failure(message)
                .map_err(RewriteError::Payload)?;
        }
        if Some(carrier) != self.failure {
            return self.walk(message, carrier, visitor, scope, depth);
        }
        let folded = visitor
            .failure_before(message)
            .map_err(RewriteError::Payload)?;
        let input = folded.as_deref().unwrap_or(message);
        let walked = self.walk(input, carrier, visitor, scope, depth)?;
        let restored = visitor
            .failure_after(walked.as_deref().unwrap_or(input))
            .map_err(RewriteError::Payload)?;
        Ok(restored.or(walked).or(folded))
    }

    fn walk<V: Visitor>(
        &self,
        message: &[u8],
        carrier: Carrier,
        visitor: &mut V,
        scope: Scope<'_>,
        depth: usize,
    ) -> Result<Option<Vec<u8>>, RewriteError<V::Error>> {
        // The top level's own namespace is the call's.
        let scope = match self.own_scope(message, carrier, depth > 0)? {
            Some(own) => {
                visitor.scope(own);
                own
            }
            None => scope,
        };
        rebuild(message, |field| {
            let Some(holds) = self.holds(carrier, field.number) else {
                visitor.unknown_field(&self.names[carrier.0], field.number);
                return Ok(None);
            };
            // A field of the wrong wire type holds no message: it goes on, for the server to
            // refuse.
            if field.wire_type != 2 {
                return Ok(None);
            }
            match holds {
                Holds::Payload => visitor
                    .payload(field.value, scope)
                    .map_err(RewriteError::Payload),
                Holds::Carrier(inner) => {
                    self.rewrite_at(field.value, inner, visitor, scope, depth + 1)
                }
                Holds::Any => self.rewrite_any(field.value, visitor, scope, depth + 1),
                // The top level's is stamped with the call's whole message.
                Holds::Identity if depth > 0 => Ok(visitor.identity(field.value)),
                Holds::Identity | Holds::Namespace | Holds::NexusEndpoint | Holds::Nothing => {
                    Ok(None)
                }
            }
        })
    }

    /// The namespace (when `namespace` is asked for) or Nexus endpoint `message` names for
    /// itself, if any. As in every decoder, a field given twice counts as its last occurrence;
    /// a message naming both is refused, whatever their order.
    fn own_scope<'m, E>(
        &self,
        message: &'m [u8],
        carrier: Carrier,
        namespace: bool,
    ) -> Result<Option<Scope<'m>>, RewriteError<E>> {
        if !self.scoping[carrier.0] {
            return Ok(None);
        }
        let (mut named, mut endpoint) = (None, None);
        for field in wire::fields(message) {
            let field = field?;
            let slot = match self.holds(carrier, field.number) {
                Some(Holds::Namespace) if namespace && field.wire_type == 2 => &mut named,
                Some(Holds::NexusEndpoint) if field.wire_type == 2 => &mut endpoint,
                _ => continue,
            };
            let name = std::str::from_utf8(field.value)
                .map_err(|_| MalformedField("a namespace or endpoint is not UTF-8"))?;
            *slot = Some(name).filter(|name| !name.is_empty());
        }
        match (named, endpoint) {
            (Some(_), Some(_)) => {
                Err(MalformedField("names both a namespace and a Nexus endpoint").into())
            }
            (Some(name), None) => Ok(Some(Scope::Namespace(name))),
            (None, Some(name)) => Ok(Some(Scope::NexusEndpoint(name))),
            (None, None) => Ok(None),
        }
    }

    /// An `Any`: its value is walked when its type URL names one of Temporal's carriers.
    fn rewrite_any<V: Visitor>(
        &self,
        any: &[u8],
        visitor: &mut V,
        scope: Scope<'_>,
        depth: usize,
    ) -> Result<Option<Vec<u8>>, RewriteError<V::Error>> {
        // 1 type_url, 2 value; the last type URL counts.
        let mut type_url = "";
        for field in wire::fields(any) {
            let field = field?;
            if field.number == 1 && field.wire_type == 2 {
                type_url = std::str::from_utf8(field.value)
                    .map_err(|_| MalformedField("an Any's type URL is not UTF-8"))?;
            }
        }
        let type_name = type_url.rsplit('/').next().unwrap_or_default();
        let Some(inner) = self.by_name.get(type_name).copied() else {
            if !self.known.contains(type_name) {
                visitor.unknown_any(type_url);
            }
            return Ok(None);
        };
        rebuild(any, |field| match (field.number, field.wire_type) {
            (2, 2) => self.rewrite_at(field.value, inner, visitor, scope, depth),
            _ => Ok(None),
        })
    }
}

/// `message` with each field replaced by what `change` returns for it (`None`: as it is);
/// `None` when nothing changed, so the input stands for itself.
fn rebuild<E>(
    message: &[u8],
    mut change: impl FnMut(wire::Field<'_>) -> Result<Option<Vec<u8>>, RewriteError<E>>,
) -> Result<Option<Vec<u8>>, RewriteError<E>> {
    let mut rewritten: Option<Vec<u8>> = None;
    let mut offset = 0;
    for field in wire::fields(message) {
        let field = field?;
        let start = offset;
        offset += field.encoded.len();
        match (change(field)?, &mut rewritten) {
            (Some(value), out) => {
                let out = out.get_or_insert_with(|| {
                    let mut out = Vec::with_capacity(message.len() + value.len());
                    out.extend_from_slice(&message[..start]);
                    out
                });
                prost::encoding::encode_key(
                    field.number,
                    prost::encoding::WireType::LengthDelimited,
                    out,
                );
                prost::encoding::encode_varint(value.len() as u64, out);
                out.extend_from_slice(&value);
            }
            (None, Some(out)) => out.extend_from_slice(field.encoded),
            (None, None) => {}
        }
    }
    Ok(rewritten)
}

/// A closure is a visitor that changes payloads and nothing else.
#[cfg(test)]
impl<E, F: FnMut(&[u8]) -> Result<Option<Vec<u8>>, E>> Visitor for F {
    type Error = E;
    fn payload(&mut self, encoded: &[u8], _: Scope<'_>) -> Result<Option<Vec<u8>>, E> {
        self(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::length_delimited;

    /// A tiny schema: `t.Outer { 1: Inner inner; 2: string name; 3: Payload direct;
    /// 4: SearchAttributes attributes }`, `t.Inner { 1: Payload payload; 2: Inner next }`.
    fn schema() -> Schema {
        use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
        let field = |name: &str, number: i32, type_name: Option<&str>| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(if type_name.is_some() {
                Type::Message
            } else {
                Type::String
            } as i32),
            type_name: type_name.map(str::to_owned),
            ..Default::default()
        };
        let message = |name: &str, field: Vec<FieldDescriptorProto>| DescriptorProto {
            name: Some(name.into()),
            field,
            ..Default::default()
        };
        let common = FileDescriptorProto {
            package: Some("temporal.api.common.v1".into()),
            message_type: vec![
                message("Payload", vec![field("data", 2, None)]),
                message(
                    "SearchAttributes",
                    vec![field("indexed", 1, Some(".temporal.api.common.v1.Payload"))],
                ),
            ],
            ..Default::default()
        };
        let ours = FileDescriptorProto {
            package: Some("t".into()),
            message_type: vec![
                message(
                    "Outer",
                    vec![
                        field("inner", 1, Some(".t.Inner")),
                        field("name", 2, None),
                        field("direct", 3, Some(".temporal.api.common.v1.Payload")),
                        field(
                            "attributes",
                            4,
                            Some(".temporal.api.common.v1.SearchAttributes"),
                        ),
                    ],
                ),
                message(
                    "Inner",
                    vec![
                        field("next", 2, Some(".t.Inner")),
                        field("payload", 1, Some(".temporal.api.common.v1.Payload")),
                    ],
                ),
                message("Plain", vec![field("name", 1, None)]),
            ],
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![common, ours],
        };
        Schema::from_descriptors(&set.encode_to_vec()).unwrap()
    }

    /// Replaces each payload with its bytes upper-cased.
    fn shout(message: &[u8], schema: &Schema, carrier: Carrier) -> Option<Vec<u8>> {
        schema
            .rewrite(message, carrier, &mut |payload: &[u8]| {
                Ok::<_, &str>(Some(payload.to_ascii_uppercase()))
            })
            .unwrap()
    }

    #[test]
    fn carriers_are_the_types_that_reach_a_payload_but_not_through_search_attributes() {
        let schema = schema();
        assert!(schema.carrier("t.Outer").is_some());
        assert!(schema.carrier("t.Inner").is_some(), "a cycle settles");
        assert!(schema.carrier("t.Plain").is_none());
        assert!(schema.carrier(SEARCH_ATTRIBUTES).is_none());
        assert!(schema.carrier(PAYLOAD).is_none(), "the payload is the leaf");
    }

    #[test]
    fn payloads_are_replaced_in_place_and_every_other_byte_goes_on() {
        let schema = schema();
        let outer = schema.carrier("t.Outer").unwrap();
        // Payloads at three depths among fields that are not payloads.
        let message_with = |payload: &[u8], deep: &[u8], direct: &[u8]| {
            let inner = [
                length_delimited(1, payload),
                length_delimited(2, &length_delimited(1, deep)),
            ]
            .concat();
            [
                length_delimited(2, b"name"),
                length_delimited(1, &inner),
                length_delimited(9999, b"from a newer api"),
                length_delimited(4, &length_delimited(1, b"indexed")),
                length_delimited(3, direct),
            ]
            .concat()
        };
        let message = message_with(b"payload", b"deep", b"direct");
        let expected = message_with(b"PAYLOAD", b"DEEP", b"DIRECT");
        assert_eq!(shout(&message, &schema, outer), Some(expected));
    }

    #[test]
    fn a_message_without_payloads_to_change_is_not_copied() {
        let schema = schema();
        let outer = schema.carrier("t.Outer").unwrap();
        let message = [
            length_delimited(2, b"name"),
            length_delimited(4, &length_delimited(1, b"indexed")),
        ]
        .concat();
        assert_eq!(shout(&message, &schema, outer), None);
        let unchanged = schema
            .rewrite(&length_delimited(3, b"x"), outer, &mut |_: &[u8]| {
                Ok::<_, &str>(None)
            })
            .unwrap();
        assert_eq!(unchanged, None, "the change declined");
    }

    #[test]
    fn malformed_and_too_deep_messages_are_errors() {
        let schema = schema();
        let outer = schema.carrier("t.Outer").unwrap();
        let cut = &length_delimited(3, b"direct")[..4];
        let error = schema
            .rewrite(cut, outer, &mut |_: &[u8]| Ok::<_, &str>(None))
            .unwrap_err();
        assert_eq!(error.to_string(), "malformed message: truncated field");

        let inner = schema.carrier("t.Inner").unwrap();
        let mut nested = length_delimited(1, b"p");
        for _ in 0..=MAX_DEPTH {
            nested = length_delimited(2, &nested);
        }
        let error = schema
            .rewrite(&nested, inner, &mut |_: &[u8]| Ok::<_, &str>(None))
            .unwrap_err();
        assert!(matches!(error, RewriteError::TooDeep), "{error}");
    }

    #[test]
    fn the_change_of_a_payload_can_fail_the_rewrite() {
        let schema = schema();
        let outer = schema.carrier("t.Outer").unwrap();
        let error = schema
            .rewrite(&length_delimited(3, b"x"), outer, &mut |_: &[u8]| {
                Err("no key")
            })
            .unwrap_err();
        assert!(matches!(error, RewriteError::Payload("no key")));
    }
}
