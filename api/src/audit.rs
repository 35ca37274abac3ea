//! `QueryAudit`: the audit trail as shipped to one destination, filtered, and cut to what the
//! caller may read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use plinth_archive::Archive;
use plinth_archive::audit::Trail;
use plinth_control::{AccessCheck, Admins, Need};
use plinth_identity::Identity;
use plinth_proto::audit::AuditRecord;
use plinth_proto::v1::{QueryAuditRequest, QueryAuditResponse};
use tonic::Status;

/// Records one query answers unless it asks for another number.
const DEFAULT_LIMIT: u32 = 100;
/// Records one query answers at most.
const MAX_LIMIT: u32 = 10_000;
/// The longest range one query reads: a year, and a leap day's slack.
pub(crate) const MAX_RANGE: Duration = Duration::from_secs(400 * 86_400);
/// The range of a query that names no start.
const DEFAULT_RANGE: Duration = Duration::from_secs(86_400);
/// Records one query reads at most, matching or not, and the bytes it answers at most: a
/// query for what its caller may not read cannot make the proxy read a year of the trail.
const MAX_SCANNED: usize = 200_000;
/// Within a client's 4 MiB message limit, with room for the framing of each record.
const MAX_ANSWER_BYTES: usize = 3 << 20;
/// Bytes of the trail one query reads at most.
const MAX_READ_BYTES: u64 = 64 << 20;
/// Queries answered at once by one proxy; more are refused until one ends.
const QUERIES_AT_ONCE: usize = 4;

/// Where the API reads the trail, and who may read which records.
#[derive(Clone, Debug)]
pub struct AuditReader {
    archive: Archive,
    access: Arc<dyn AccessCheck>,
    running: Arc<tokio::sync::Semaphore>,
}

impl AuditReader {
    /// Reads `archive`; a record of a namespace is shown to who `access` lets read it.
    pub fn new(archive: Archive, access: Arc<dyn AccessCheck>) -> Self {
        Self {
            archive,
            access,
            running: Arc::new(tokio::sync::Semaphore::new(QUERIES_AT_ONCE)),
        }
    }

    /// Answers `request` for `identity`: admins see every record, others those of the
    /// namespaces they may read.
    pub(crate) async fn query(
        &self,
        admins: &Admins,
        identity: &Identity,
        request: QueryAuditRequest,
    ) -> Result<QueryAuditResponse, Status> {
        let (from, to) = range(&request.from, "from", &request.to, "to")?;
        let limit = limit(request.limit)?;
        let admin = admins.include(identity);
        let mut readable: HashMap<String, bool> = HashMap::new();
        let mut records = Vec::new();
        let mut truncated = false;
        // The store's own words stay in the proxy's log: they may name credentials' ids.
        let unavailable = |e: plinth_archive::ArchiveError| {
            tracing::warn!(error = %e, "audit trail not read");
            Status::unavailable("the audit trail cannot be read now; the proxy's log says why")
        };
        let Ok(_running) = self.running.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "{QUERIES_AT_ONCE} audit queries are running; try again shortly"
            )));
        };
        let mut trail = Trail::open(&self.archive, from, to, MAX_READ_BYTES)
            .await
            .map_err(unavailable)?;
        let (mut scanned, mut bytes) = (0, 0);
        'hours: while let Some(hour) = trail.next_hour().await.map_err(unavailable)? {
            for record in hour {
                scanned += 1;
                if scanned > MAX_SCANNED {
                    truncated = true;
                    break 'hours;
                }
                if !matches(&request, &record)
                    || !self
                        .may_read(admin, identity, &record, &mut readable)
                        .await?
                {
                    continue;
                }
                let line =
                    serde_json::to_string(&record).map_err(|e| Status::internal(e.to_string()))?;
                if records.len() == limit || bytes + line.len() > MAX_ANSWER_BYTES {
                    truncated = true;
                    break 'hours;
                }
                bytes += line.len();
                records.push(line);
            }
        }
        Ok(QueryAuditResponse {
            records,
            truncated: truncated || trail.exhausted(),
            destination: self.archive.url().to_owned(),
        })
    }

    /// Whether the caller may read `record`: admins all, others a namespace's records where
    /// they may read the namespace. Each namespace is checked once per query.
    async fn may_read(
        &self,
        admin: bool,
        identity: &Identity,
        record: &AuditRecord,
        readable: &mut HashMap<String, bool>,
    ) -> Result<bool, Status> {
        if admin {
            return Ok(true);
        }
        if record.namespace.is_empty() {
            return Ok(false);
        }
        if let Some(known) = readable.get(&record.namespace) {
            return Ok(*known);
        }
        let allowed = self
            .access
            .allows(&record.namespace, identity, Need::Read)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "cannot read the access list of {:?}: {e}",
                    record.namespace
                ))
            })?;
        readable.insert(record.namespace.clone(), allowed);
        Ok(allowed)
    }
}

/// The range `[from, to)` two fields give: `to` now when empty, `from` a day before `to`;
/// at most [`MAX_RANGE`] long, after 1970 (the key layouts name no hour before).
pub(crate) fn range(
    from: &str,
    from_field: &str,
    to: &str,
    to_field: &str,
) -> Result<(SystemTime, SystemTime), Status> {
    let to = time(to, to_field)?.unwrap_or_else(SystemTime::now);
    let from = time(from, from_field)?.unwrap_or_else(|| {
        to.checked_sub(DEFAULT_RANGE)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    if from < SystemTime::UNIX_EPOCH + Duration::from_secs(86_400) {
        return Err(Status::invalid_argument(format!(
            "{from_field}: Plinth's archive starts in 1970; give a later time"
        )));
    }
    if from >= to {
        return Err(Status::invalid_argument(format!(
            "{from_field}: must be before {to_field}"
        )));
    }
    if to.duration_since(from).unwrap_or_default() > MAX_RANGE {
        return Err(Status::invalid_argument(format!(
            "{from_field}: reads at most {} days at once; narrow the range",
            MAX_RANGE.as_secs() / 86_400
        )));
    }
    Ok((from, to))
}

/// The `limit` field: [`DEFAULT_LIMIT`] when 0, at most [`MAX_LIMIT`].
pub(crate) fn limit(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(DEFAULT_LIMIT as usize),
        n if n > MAX_LIMIT => Err(Status::invalid_argument(format!(
            "limit: at most {MAX_LIMIT}"
        ))),
        n => Ok(n as usize),
    }
}

/// `text` as a time, or `None` when empty; else an error naming `field`.
fn time(text: &str, field: &str) -> Result<Option<SystemTime>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    humantime::parse_rfc3339_weak(text).map(Some).map_err(|e| {
        Status::invalid_argument(format!("{field}: {text:?} is not an RFC 3339 time: {e}"))
    })
}

/// Whether `record` passes every filter `request` sets.
fn matches(request: &QueryAuditRequest, record: &AuditRecord) -> bool {
    [
        (&request.actor, &record.actor),
        (&request.namespace, &record.namespace),
        (&request.resource, &record.resource),
        (&request.action, &record.action),
    ]
    .into_iter()
    .all(|(filter, value)| match filter.strip_suffix('*') {
        _ if filter.is_empty() => true,
        Some(prefix) => value.starts_with(prefix),
        None => value == filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_matches_its_field_exactly_or_by_prefix_with_a_star() {
        let record = AuditRecord::new(
            "1",
            "2026-12-04T10:00:00Z",
            "user:alice@example.com",
            "policy.rule_added",
            "policy/TEMPORAL-ns-payments",
            "added",
        )
        .in_namespace("payments");
        let query = |f: fn(&mut QueryAuditRequest)| {
            let mut request = QueryAuditRequest::default();
            f(&mut request);
            matches(&request, &record)
        };
        assert!(query(|_| {}));
        assert!(query(|r| r.action = "policy.*".into()));
        assert!(query(|r| r.actor = "user:alice@example.com".into()));
        assert!(!query(|r| r.actor = "user:alice".into()));
        assert!(!query(|r| r.namespace = "pay".into()));
        assert!(query(|r| {
            r.namespace = "payments".into();
            r.resource = "policy/*".into();
        }));
        assert!(!query(|r| r.action = "namespace.*".into()));
    }
}
