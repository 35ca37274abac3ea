//! proto3 JSON of `temporal.api.common.v1.Payloads`, as the codec HTTP contract carries it:
//! `{"payloads":[{"metadata":{"k":"<base64>"},"data":"<base64>"}]}`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::{Deserialize, Serialize};

use crate::Payload;

#[derive(Serialize, Deserialize)]
struct JsonPayloads {
    #[serde(default)]
    payloads: Vec<JsonPayload>,
}

#[derive(Serialize, Deserialize)]
struct JsonPayload {
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    data: String,
}

const ANY_PADDING: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY_PADDING: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, ANY_PADDING);
const URL_SAFE_ANY_PADDING: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, ANY_PADDING);

/// proto3 JSON readers accept standard and URL-safe base64, padded or not.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD_ANY_PADDING
        .decode(text)
        .or_else(|_| URL_SAFE_ANY_PADDING.decode(text))
}

/// Parses a `Payloads` body; the error names the payload and field.
pub fn payloads_from_json(body: &[u8]) -> Result<Vec<Payload>, String> {
    let parsed: JsonPayloads = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    parsed
        .payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut metadata = std::collections::HashMap::new();
            for (key, value) in p.metadata {
                let bytes = decode_base64(&value)
                    .map_err(|_| format!("payloads[{i}].metadata.{key}: not base64"))?;
                metadata.insert(key, bytes);
            }
            let data =
                decode_base64(&p.data).map_err(|_| format!("payloads[{i}].data: not base64"))?;
            Ok(Payload {
                metadata,
                data,
                ..Default::default()
            })
        })
        .collect()
}

/// Writes a `Payloads` body.
pub fn payloads_to_json(payloads: &[Payload]) -> Vec<u8> {
    let json = JsonPayloads {
        payloads: payloads
            .iter()
            .map(|p| JsonPayload {
                metadata: p
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), STANDARD.encode(v)))
                    .collect(),
                data: STANDARD.encode(&p.data),
            })
            .collect(),
    };
    serde_json::to_vec(&json).expect("payloads serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_name_the_field() {
        let body = br#"{"payloads":[{"metadata":{"encoding":"anNvbi9wbGFpbg=="},"data":"IjEi"}]}"#;
        let payloads = payloads_from_json(body).unwrap();
        assert_eq!(payloads[0].data, b"\"1\"");
        assert_eq!(
            payloads_from_json(&payloads_to_json(&payloads)).unwrap(),
            payloads
        );
        let err = payloads_from_json(br#"{"payloads":[{"data":"%%%"}]}"#).unwrap_err();
        assert_eq!(err, "payloads[0].data: not base64");
        assert!(payloads_from_json(b"not json").is_err());
        assert!(
            payloads_from_json(br#"{"payloads":[]}"#)
                .unwrap()
                .is_empty()
        );
    }
}
