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
/// Namespaces whose access one query of a non-admin looks up at most: records of more are
/// left out (and the answer marked truncated), so a trail filled with made-up namespace
/// names cannot make one query call the backend without end.
const NAMESPACES_CHECKED: usize = 100;

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
            truncated: truncated || trail.exhausted() || readable.len() > NAMESPACES_CHECKED,
            // Where the trail lives is the operators' business.
            destination: if admin {
                self.archive.url().to_owned()
            } else {
                String::new()
            },
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
        if readable.len() >= NAMESPACES_CHECKED {
            // Counted once, so the answer says records were left out.
            readable.insert(record.namespace.clone(), false);
            return Ok(false);
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use plinth_control::BackendError;
    use plinth_control::directory::Snapshot;

    use super::*;

    /// Lets everyone read every namespace, counting the lookups.
    #[derive(Debug, Default)]
    struct Counted(AtomicUsize);

    #[async_trait::async_trait]
    impl AccessCheck for Counted {
        async fn allows(&self, _: &str, _: &Identity, _: Need) -> Result<bool, BackendError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(true)
        }
    }

    #[tokio::test]
    async fn a_trail_of_many_namespaces_costs_a_reader_bounded_lookups_and_hides_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(&format!("file://{}", dir.path().display())).unwrap();
        let now = SystemTime::now();
        let time = humantime::format_rfc3339_millis(now - Duration::from_secs(60)).to_string();
        // As a flood of refusals naming made-up namespaces would leave it.
        let records: Vec<AuditRecord> = (0..NAMESPACES_CHECKED + 50)
            .map(|i| {
                AuditRecord::new(
                    i.to_string(),
                    &time,
                    "user:m@example.com",
                    "codec.refused",
                    "r",
                    "denied",
                )
                .in_namespace(format!("made-up-{i}"))
            })
            .collect();
        plinth_archive::audit::write_batch(&archive, "data", 0, &records)
            .await
            .unwrap();
        let access = Arc::new(Counted::default());
        let reader = AuditReader::new(archive, access.clone());
        let directory = Snapshot::from_yaml(
            "users:\n  - email: a@example.com\n  - email: m@example.com\ngroups:\n  - name: admins\n    members: [a@example.com]\n",
        )
        .unwrap();
        let admins = Admins::new(Arc::new(directory), "admins".into());
        let request = QueryAuditRequest {
            limit: MAX_LIMIT,
            ..Default::default()
        };
        let reader_answer = reader
            .query(
                &admins,
                &Identity::user("m@example.com").unwrap(),
                request.clone(),
            )
            .await
            .unwrap();
        assert_eq!(access.0.load(Ordering::Relaxed), NAMESPACES_CHECKED);
        assert_eq!(reader_answer.records.len(), NAMESPACES_CHECKED);
        assert!(reader_answer.truncated);
        assert!(reader_answer.destination.is_empty());
        let admin_answer = reader
            .query(&admins, &Identity::user("a@example.com").unwrap(), request)
            .await
            .unwrap();
        assert_eq!(admin_answer.records.len(), NAMESPACES_CHECKED + 50);
        assert!(admin_answer.destination.starts_with("file://"));
    }

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
