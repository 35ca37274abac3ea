//! Where payloads sit in Temporal's messages, read from the descriptor set of the protos Plinth
//! was built with (the source the SDK's payload visitors are generated from), and the rewriting
//! of those payloads in a message's wire bytes. Everything else in a message, fields of a newer
//! API than Plinth's included, goes on byte for byte. Search attributes are left out: the
//! server indexes them.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

use crate::wire::{self, MalformedField};

const PAYLOAD: &str = "temporal.api.common.v1.Payload";
/// Indexed by the server, so never encrypted.
const SEARCH_ATTRIBUTES: &str = "temporal.api.common.v1.SearchAttributes";
/// Deeper than any real message, as prost's own decoding limit; a deeper one is refused.
const MAX_DEPTH: usize = 100;

/// A message type through which payloads can be reached, by its place in [`Schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Carrier(usize);

/// What a field of a [`Carrier`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    Payload,
    Carrier(Carrier),
}

/// Every carrier's fields that hold payloads or carriers.
#[derive(Debug)]
pub(crate) struct Schema {
    /// By carrier: (field number, what it holds), ascending by number.
    fields: Vec<Vec<(u32, Holds)>>,
    by_name: HashMap<String, Carrier>,
}

/// The schema of the protos this proxy was built with.
pub(crate) static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::from_descriptors(include_bytes!(concat!(
        env!("OUT_DIR"),
        "/temporal-descriptors.bin"
    )))
    .expect("the descriptor set built into the proxy decodes")
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
    /// What the caller's change of one payload failed with.
    #[error(transparent)]
    Payload(E),
}

/// Every message type of `set`, nested ones and map entries included, with its message fields:
/// (number, fully qualified type).
pub(crate) fn message_fields(set: &FileDescriptorSet) -> HashMap<String, Vec<(u32, String)>> {
    fn collect(
        scope: &str,
        message: &DescriptorProto,
        into: &mut HashMap<String, Vec<(u32, String)>>,
    ) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            collect(&name, nested, into);
        }
        let fields = message
            .field
            .iter()
            .filter(|field| field.r#type() == Type::Message)
            .map(|field| {
                let number = u32::try_from(field.number()).unwrap_or_default();
                (number, field.type_name().trim_start_matches('.').to_owned())
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

impl Schema {
    /// The schema of a serialized `FileDescriptorSet`.
    pub(crate) fn from_descriptors(bytes: &[u8]) -> Result<Schema, prost::DecodeError> {
        let messages = message_fields(&FileDescriptorSet::decode(bytes)?);
        // The least fixed point: a type carries payloads when a field of it holds a payload or
        // a type that does. Cycles (a failure's cause is a failure) settle on the way.
        let mut carriers: HashSet<&str> = HashSet::new();
        loop {
            let before = carriers.len();
            for (name, fields) in &messages {
                if name != SEARCH_ATTRIBUTES
                    && !carriers.contains(name.as_str())
                    && fields
                        .iter()
                        .any(|(_, held)| held == PAYLOAD || carriers.contains(held.as_str()))
                {
                    carriers.insert(name);
                }
            }
            if carriers.len() == before {
                break;
            }
        }
        let mut names: Vec<&str> = carriers.into_iter().collect();
        names.sort_unstable();
        let by_name: HashMap<String, Carrier> = names
            .iter()
            .enumerate()
            .map(|(i, name)| ((*name).to_owned(), Carrier(i)))
            .collect();
        let fields = names
            .iter()
            .map(|name| {
                let mut held: Vec<(u32, Holds)> = messages[*name]
                    .iter()
                    .filter_map(|(number, held)| match held.as_str() {
                        PAYLOAD => Some((*number, Holds::Payload)),
                        other => by_name.get(other).map(|c| (*number, Holds::Carrier(*c))),
                    })
                    .collect();
                held.sort_unstable_by_key(|(number, _)| *number);
                held
            })
            .collect();
        Ok(Schema { fields, by_name })
    }

    /// The carrier named `type_name` (fully qualified); `None` when no payload can be in it.
    pub(crate) fn carrier(&self, type_name: &str) -> Option<Carrier> {
        self.by_name.get(type_name).copied()
    }

    fn holds(&self, carrier: Carrier, number: u32) -> Option<Holds> {
        let fields = &self.fields[carrier.0];
        fields
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| fields[i].1)
    }

    /// `message`, of type `carrier`, with each serialized payload in it replaced by what
    /// `change` returns for it (`None`: left as it is). `None` when nothing changed.
    pub(crate) fn rewrite<E>(
        &self,
        message: &[u8],
        carrier: Carrier,
        change: &mut impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Option<Vec<u8>>, RewriteError<E>> {
        self.rewrite_at(message, carrier, change, 0)
    }

    fn rewrite_at<E>(
        &self,
        message: &[u8],
        carrier: Carrier,
        change: &mut impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, E>,
        depth: usize,
    ) -> Result<Option<Vec<u8>>, RewriteError<E>> {
        if depth > MAX_DEPTH {
            return Err(RewriteError::TooDeep);
        }
        // Filled from the first changed field on: until then the input stands for itself.
        let mut rewritten: Option<Vec<u8>> = None;
        let mut offset = 0;
        for field in wire::fields(message) {
            let field = field?;
            let start = offset;
            offset += field.encoded.len();
            // A field of the wrong wire type holds no message: it goes on, for the server to
            // refuse.
            let changed = match self.holds(carrier, field.number) {
                Some(_) if field.wire_type != 2 => None,
                Some(Holds::Payload) => change(field.value).map_err(RewriteError::Payload)?,
                Some(Holds::Carrier(inner)) => {
                    self.rewrite_at(field.value, inner, change, depth + 1)?
                }
                None => None,
            };
            match (changed, &mut rewritten) {
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
