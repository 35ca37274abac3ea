//! The audit trail's record: one change to the platform, or one refusal or decode on the data
//! path. Records are shipped as newline-delimited JSON, one [`AuditRecord`] per line, in the
//! shape documented in the README ("Audit trail"); [`SCHEMA`] names the version a line follows.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `schema` of every record this version writes. A reader refuses lines of another major
/// version rather than misreading them.
pub const SCHEMA: &str = "plinth.audit/v1";

/// Longest text field a data-path record keeps whole: see [`AuditRecord::bounded`].
pub const MAX_FIELD_BYTES: usize = 1_024;

/// Longest record id accepted: ids are derived from workflow ids and run ids, which Temporal
/// bounds to 1,000 bytes each.
pub const MAX_ID_BYTES: usize = 2_100;

/// One audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditRecord {
    /// [`SCHEMA`].
    pub schema: String,
    /// Stable: the same change always has the same id, so a record delivered twice is kept
    /// once.
    pub id: String,
    /// When it happened, RFC 3339 in UTC.
    pub time: String,
    /// Who did it: the certified caller (`user:alice@example.com`, `app:billing`), or the
    /// workflow that did it on its own (`workflow:users/payments`).
    pub actor: String,
    /// What was done, e.g. `namespace.applied`; the README lists them.
    pub action: String,
    /// What it was done to, e.g. `namespace/payments`, `policy/TEMPORAL-ns-payments`.
    pub resource: String,
    /// The Temporal namespace it concerns, if any: who may read the record follows from it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// How it ended, e.g. `created`, `configured`, `granted`, `denied`.
    pub outcome: String,
    /// The state before a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The state after a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Each field that differs between `before` and `after`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Anything else worth reading, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One field that changed: its path (`spec.retentionDays`, `spec.regions[1]`) and values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// Why a record is not one this version can take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// A required field is empty.
    #[error("{0}: missing")]
    Missing(&'static str),
    /// `schema` names a version this one does not read.
    #[error("schema: {0:?} is not {SCHEMA}")]
    Schema(String),
    /// `time` is not RFC 3339.
    #[error("time: {0:?} is not an RFC 3339 time")]
    Time(String),
    /// `id` is longer than [`MAX_ID_BYTES`].
    #[error("id: longer than {MAX_ID_BYTES} bytes")]
    IdTooLong,
}

impl AuditRecord {
    /// A record of `action` on `resource` by `actor` at `time` (RFC 3339).
    pub fn new(
        id: impl Into<String>,
        time: impl Into<String>,
        actor: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            schema: SCHEMA.into(),
            id: id.into(),
            time: time.into(),
            actor: actor.into(),
            action: action.into(),
            resource: resource.into(),
            namespace: String::new(),
            outcome: outcome.into(),
            before: None,
            after: None,
            changes: Vec::new(),
            detail: String::new(),
        }
    }

    /// A record of something happening now, with a random id: for processes outside
    /// workflows, whose records take ids and times that replay alike instead.
    pub fn now(
        actor: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        use ring::rand::SecureRandom as _;
        let mut id = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut id)
            .expect("the system's randomness");
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        Self::new(hex(&id), time.to_string(), actor, action, resource, outcome)
    }

    /// The record with every text field of over [`MAX_FIELD_BYTES`] (a name a caller made up,
    /// say) cut to its start and a digest of the whole, so one record stays small whatever
    /// a caller sent.
    pub fn bounded(mut self) -> Self {
        for field in [
            &mut self.actor,
            &mut self.action,
            &mut self.resource,
            &mut self.namespace,
            &mut self.outcome,
            &mut self.detail,
        ] {
            if field.len() > MAX_FIELD_BYTES {
                let mut cut = 64;
                while !field.is_char_boundary(cut) {
                    cut -= 1;
                }
                *field = format!(
                    "{}…({} bytes, {})",
                    &field[..cut],
                    field.len(),
                    digest(field)
                );
            }
        }
        self
    }

    /// Concerning Temporal namespace `namespace`.
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// With `before` and `after` states and the fields that differ between them.
    pub fn change(mut self, before: Option<Value>, after: Option<Value>) -> Self {
        self.changes = differences(before.as_ref(), after.as_ref());
        self.before = before;
        self.after = after;
        self
    }

    /// With `detail`.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Whether the record is one this version writes and reads.
    pub fn check(&self) -> Result<(), RecordError> {
        if self.schema != SCHEMA {
            return Err(RecordError::Schema(self.schema.clone()));
        }
        for (field, value) in [
            ("id", &self.id),
            ("time", &self.time),
            ("actor", &self.actor),
            ("action", &self.action),
            ("resource", &self.resource),
            ("outcome", &self.outcome),
        ] {
            if value.is_empty() {
                return Err(RecordError::Missing(field));
            }
        }
        if self.id.len() > MAX_ID_BYTES {
            return Err(RecordError::IdTooLong);
        }
        if humantime::parse_rfc3339(&self.time).is_err() {
            return Err(RecordError::Time(self.time.clone()));
        }
        Ok(())
    }

    /// When it happened.
    pub fn when(&self) -> Option<std::time::SystemTime> {
        humantime::parse_rfc3339(&self.time).ok()
    }
}

/// A short, stable stand-in for `text` (128 bits of its SHA-256, in hex): record ids of up to
/// [`MAX_ID_BYTES`] remembered, or named, in little space.
pub fn digest(text: &str) -> String {
    hex(&ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fields that differ between two JSON values, by path; objects are compared key by key
/// and arrays element by element, anything else as a whole. A creation or a deletion (one
/// side missing) has none: the other side is the whole of it.
pub fn differences(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    if let (Some(before), Some(after)) = (before, after) {
        diff("", Some(before), Some(after), &mut changes);
    }
    changes
}

fn diff(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff(&inner, b.get(key), a.get(key), out);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) => {
            for i in 0..b.len().max(a.len()) {
                diff(&format!("{path}[{i}]"), b.get(i), a.get(i), out);
            }
        }
        (b, a) if b != a => out.push(FieldChange {
            path: if path.is_empty() {
                ".".into()
            } else {
                path.into()
            },
            before: b.cloned(),
            after: a.cloned(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_each_changed_field_by_path() {
        let before = json!({"spec": {"retentionDays": 3, "regions": ["a"], "owner": "o"}});
        let after = json!({"spec": {"retentionDays": 7, "regions": ["a", "b"], "owner": "o"}});
        let changes = differences(Some(&before), Some(&after));
        let paths: Vec<(&str, Option<&Value>, Option<&Value>)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.before.as_ref(), c.after.as_ref()))
            .collect();
        assert_eq!(
            paths,
            [
                ("spec.regions[1]", None, Some(&json!("b"))),
                ("spec.retentionDays", Some(&json!(3)), Some(&json!(7))),
            ]
        );
    }

    #[test]
    fn a_creation_or_deletion_names_no_field() {
        let whole = json!({"spec": {"owner": "o"}});
        assert!(differences(None, Some(&whole)).is_empty());
        assert!(differences(Some(&whole), None).is_empty());
    }

    #[test]
    fn a_record_round_trips_as_one_json_line_and_checks() {
        let record = AuditRecord::new(
            "namespace/payments/run/1",
            "2026-12-04T10:00:00Z",
            "user:alice@example.com",
            "namespace.applied",
            "namespace/payments",
            "configured",
        )
        .in_namespace("payments")
        .change(Some(json!({"a": 1})), Some(json!({"a": 2})));
        let line = serde_json::to_string(&record).unwrap();
        assert!(!line.contains('\n'));
        let read: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(read, record);
        assert_eq!(read.check(), Ok(()));
    }

    #[test]
    fn a_made_up_name_of_any_size_leaves_a_small_record_that_still_tells_names_apart() {
        let huge = |c: &str| {
            AuditRecord::now("user:m", "codec.refused", "codec/decode", "denied")
                .in_namespace(c.repeat(300_000))
                .bounded()
        };
        let (a, b) = (huge("a"), huge("b"));
        assert!(serde_json::to_vec(&a).unwrap().len() < 2 * MAX_FIELD_BYTES);
        assert!(a.namespace.contains("300000 bytes"), "{}", a.namespace);
        assert_ne!(a.namespace, b.namespace);
        assert_eq!(a.check(), Ok(()));
        let small = AuditRecord::now("user:m", "x.y", "r", "o").in_namespace("payments");
        assert_eq!(small.clone().bounded(), small);
    }

    #[test]
    fn records_made_now_check_and_differ_in_id() {
        let a = AuditRecord::now("user:a", "proxy.refused", "rpc/X", "denied");
        let b = AuditRecord::now("user:a", "proxy.refused", "rpc/X", "denied");
        assert_eq!(a.check(), Ok(()));
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn a_record_missing_a_field_or_of_another_schema_is_refused_by_name() {
        let good = AuditRecord::new("i", "2026-12-04T10:00:00Z", "a", "x.y", "r", "o");
        let mut bad = good.clone();
        bad.actor.clear();
        assert_eq!(bad.check(), Err(RecordError::Missing("actor")));
        let mut bad = good.clone();
        bad.schema = "plinth.audit/v2".into();
        assert!(bad.check().unwrap_err().to_string().starts_with("schema:"));
        let mut bad = good;
        bad.time = "yesterday".into();
        assert!(bad.check().unwrap_err().to_string().starts_with("time:"));
    }
}
