//! The top-level fields of an encoded protobuf message, read without knowing its type.

use prost::encoding::decode_varint;

/// One top-level field as it was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub number: u32,
    /// 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit.
    pub wire_type: u8,
    /// What a length-delimited field holds, inside its length; for other wire types, the value.
    pub value: &'a [u8],
    /// The whole field, key included.
    pub encoded: &'a [u8],
}

/// Why an encoded message cannot be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct MalformedField(pub &'static str);

/// The top-level fields of `bytes`, in order. Groups (wire types 3 and 4), which no Temporal
/// message has, are an error.
pub(crate) fn fields(bytes: &[u8]) -> impl Iterator<Item = Result<Field<'_>, MalformedField>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let field = next_field(rest);
        rest = match field {
            Ok(field) => &rest[field.encoded.len()..],
            Err(_) => &[],
        };
        Some(field)
    })
}

fn next_field(bytes: &[u8]) -> Result<Field<'_>, MalformedField> {
    let truncated = MalformedField("truncated field");
    let mut rest = bytes;
    let key = decode_varint(&mut rest).map_err(|_| MalformedField("bad field key"))?;
    let number = u32::try_from(key >> 3).map_err(|_| MalformedField("bad field number"))?;
    let wire_type = (key & 7) as u8;
    // Every arm leaves `rest` at the value's first byte.
    let value = match wire_type {
        0 => {
            let mut after = rest;
            decode_varint(&mut after).map_err(|_| MalformedField("bad varint"))?;
            &rest[..rest.len() - after.len()]
        }
        1 => rest.get(..8).ok_or(truncated)?,
        5 => rest.get(..4).ok_or(truncated)?,
        2 => {
            let len = decode_varint(&mut rest).map_err(|_| MalformedField("bad length"))?;
            let len = usize::try_from(len).map_err(|_| MalformedField("bad length"))?;
            rest.get(..len).ok_or(truncated)?
        }
        _ => return Err(MalformedField("unsupported wire type")),
    };
    let end = bytes.len() - rest.len() + value.len();
    Ok(Field {
        number,
        wire_type,
        value,
        encoded: &bytes[..end],
    })
}

/// `message` with its top-level field `number` replaced by one length-delimited field holding
/// what `value` makes of the last value it held (empty when it had none).
pub(crate) fn replace_field(
    message: &[u8],
    number: u32,
    value: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<Vec<u8>, MalformedField> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut held: &[u8] = &[];
    for field in fields(message) {
        let field = field?;
        if field.number == number {
            if field.wire_type == 2 {
                held = field.value;
            }
        } else {
            out.extend_from_slice(field.encoded);
        }
    }
    let value = value(held);
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(&value);
    Ok(out)
}

/// A length-delimited field `number` holding `value`, encoded.
#[cfg(test)]
pub(crate) fn length_delimited(number: u32, value: &[u8]) -> Vec<u8> {
    let mut field = Vec::new();
    prost::encoding::encode_key(
        number,
        prost::encoding::WireType::LengthDelimited,
        &mut field,
    );
    prost::encoding::encode_varint(value.len() as u64, &mut field);
    field.extend_from_slice(value);
    field
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_whole_and_in_order() {
        // 1: "ns" (length-delimited), 2: 150 (varint), 3: fixed32, 4: fixed64.
        let bytes = [
            0x0a, 2, b'n', b's', 0x10, 0x96, 0x01, 0x1d, 1, 2, 3, 4, 0x21, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let fields: Vec<Field<'_>> = fields(&bytes).collect::<Result<_, _>>().unwrap();
        let summary: Vec<(u32, u8, &[u8], usize)> = fields
            .iter()
            .map(|f| (f.number, f.wire_type, f.value, f.encoded.len()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, 2, &b"ns"[..], 4),
                (2, 0, &[0x96, 0x01][..], 3),
                (3, 5, &[1, 2, 3, 4][..], 5),
                (4, 1, &[1, 2, 3, 4, 5, 6, 7, 8][..], 9),
            ]
        );
        let rejoined: Vec<u8> = fields.iter().flat_map(|f| f.encoded.to_vec()).collect();
        assert_eq!(rejoined, bytes);
    }

    #[test]
    fn a_replaced_field_comes_last_once_made_from_its_last_value() {
        let message = [
            length_delimited(2, b"first"),
            length_delimited(1, b"ns"),
            length_delimited(2, b"second"),
        ]
        .concat();
        let replaced = replace_field(&message, 2, |held| [b"user:a ", held].concat()).unwrap();
        assert_eq!(
            replaced,
            [
                length_delimited(1, b"ns"),
                length_delimited(2, b"user:a second")
            ]
            .concat()
        );
        let added = replace_field(&length_delimited(1, b"ns"), 2, |held| held.to_vec()).unwrap();
        assert_eq!(
            added,
            [length_delimited(1, b"ns"), length_delimited(2, b"")].concat()
        );
    }

    #[test]
    fn a_cut_off_field_is_an_error_and_ends_the_walk() {
        let walked: Vec<_> = fields(&[0x0a, 5, b'n']).collect();
        assert_eq!(walked, vec![Err(MalformedField("truncated field"))]);
        let group = fields(&[0x0b]).next().unwrap();
        assert_eq!(group, Err(MalformedField("unsupported wire type")));
    }
}
