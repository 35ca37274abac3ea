//! The audit trail in the archive: batches of records as newline-delimited JSON under
//! `audit/v1/<YYYY>/<MM>/<DD>/<HH>/<batch>.ndjson`, partitioned by the hour each record happened
//! in (a batch spanning hours is one object per hour, under the same batch number), so a
//! query reads only the hours it covers and a record shipped late still lands in its hour.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::SystemTime;

use bytes::Bytes;
use plinth_proto::audit::AuditRecord;

use crate::{Archive, ArchiveError, hours};

/// Where the trail starts in a destination.
pub const PREFIX: &str = "audit/v1";

/// The largest object the trail reads: Plinth's batches stay far below it (an exporter holds
/// 512 KiB at most), so a larger one was not written by Plinth and is refused unread.
const MAX_OBJECT_BYTES: u64 = 16 << 20;

/// Writes `records` as batch number `batch` of `stream` (empty for changes): one object per
/// hour they happened in, named `<batch>.ndjson` or `<stream>-<batch>.ndjson`. The same batch
/// written again writes the same objects. Returns their keys.
pub async fn write_batch(
    archive: &Archive,
    stream: &str,
    batch: u64,
    records: &[AuditRecord],
) -> Result<Vec<String>, ArchiveError> {
    let name = if stream.is_empty() {
        format!("{batch:012}.ndjson")
    } else {
        format!("{stream}-{batch:012}.ndjson")
    };
    let mut by_hour: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for record in records {
        let when = record.when().unwrap_or(SystemTime::UNIX_EPOCH);
        let key = format!("{}/{name}", hours::path(PREFIX, when));
        record
            .check()
            .map_err(|e| archive.malformed(&key, format!("record {:?}: {e}", record.id)))?;
        let lines = by_hour.entry(key).or_default();
        serde_json::to_writer(&mut *lines, record).expect("a record serializes");
        lines.push(b'\n');
    }
    for (key, lines) in &by_hour {
        archive.put(key, Bytes::from(lines.clone())).await?;
    }
    Ok(by_hour.into_keys().collect())
}

/// The records of one batch object, in the order written.
pub fn decode(
    archive: &Archive,
    key: &str,
    bytes: &[u8],
) -> Result<Vec<AuditRecord>, ArchiveError> {
    let mut records = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: AuditRecord = serde_json::from_slice(line)
            .map_err(|e| archive.malformed(key, format!("line {}: {e}", i + 1)))?;
        record
            .check()
            .map_err(|e| archive.malformed(key, format!("line {}: {e}", i + 1)))?;
        records.push(record);
    }
    Ok(records)
}

/// The trail between two times, read an hour at a time, oldest first: each record once, however
/// often it was delivered.
#[derive(Debug)]
pub struct Trail<'a> {
    archive: &'a Archive,
    from: SystemTime,
    to: SystemTime,
    /// Each hour still to read, oldest first, with its objects.
    hours: VecDeque<Vec<String>>,
    seen: HashSet<String>,
    /// Bytes it may still read.
    budget: u64,
    /// An hour was left part read when the budget ran out.
    cut: bool,
    /// Every object in the range was listed (none left out past `hours::MAX_KEYS`).
    listed_whole: bool,
}

impl<'a> Trail<'a> {
    /// The records of `archive` that happened in `[from, to)`, reading at most `budget` bytes
    /// of objects: lists the months the range touches, reads nothing yet.
    pub async fn open(
        archive: &'a Archive,
        from: SystemTime,
        to: SystemTime,
        budget: u64,
    ) -> Result<Self, ArchiveError> {
        // More objects than Plinth writes are not all read: the answer says so.
        let (hours, more) = hours::keys_by_hour(archive, PREFIX, from, to).await?;
        Ok(Self {
            archive,
            from,
            to,
            hours: hours.into_values().collect(),
            seen: HashSet::new(),
            budget,
            cut: false,
            listed_whole: !more,
        })
    }

    /// Whether records were left unread: reading stopped at its budget, or the range holds
    /// more objects than are listed.
    pub fn exhausted(&self) -> bool {
        !self.listed_whole || self.budget == 0 && (self.cut || !self.hours.is_empty())
    }

    /// The next hour's records in the range, oldest first; `None` once all are read.
    /// Reading stops once the budget is spent, within an hour too.
    pub async fn next_hour(&mut self) -> Result<Option<Vec<AuditRecord>>, ArchiveError> {
        if self.budget == 0 {
            return Ok(None);
        }
        let Some(keys) = self.hours.pop_front() else {
            return Ok(None);
        };
        let mut records = Vec::new();
        for key in &keys {
            if self.budget == 0 {
                self.cut = true;
                break;
            }
            let Some(bytes) = self.archive.get_at_most(key, MAX_OBJECT_BYTES).await? else {
                continue;
            };
            self.budget = self.budget.saturating_sub(bytes.len() as u64);
            records.extend(decode(self.archive, key, &bytes)?);
        }
        records.sort_by_key(AuditRecord::when);
        records.retain(|record| {
            let when = record.when().unwrap_or(SystemTime::UNIX_EPOCH);
            when >= self.from && when < self.to && self.seen.insert(record.id.clone())
        });
        Ok(Some(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: &str) -> SystemTime {
        humantime::parse_rfc3339(time).unwrap()
    }

    fn record(id: &str, time: &str, namespace: &str) -> AuditRecord {
        AuditRecord::new(
            id,
            time,
            "user:a@example.com",
            "namespace.applied",
            "namespace/x",
            "created",
        )
        .in_namespace(namespace)
    }

    fn archive() -> (tempfile::TempDir, Archive) {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(&format!("file://{}", dir.path().display())).unwrap();
        (dir, archive)
    }

    #[tokio::test]
    async fn a_batch_spanning_hours_is_one_object_per_hour_and_rewrites_the_same() {
        let (_dir, archive) = archive();
        let records = [
            record("1", "2026-12-04T10:59:59Z", "a"),
            record("2", "2026-12-04T11:00:01Z", "a"),
        ];
        let keys = write_batch(&archive, "", 7, &records).await.unwrap();
        assert_eq!(
            keys,
            [
                "audit/v1/2026/12/04/10/000000000007.ndjson",
                "audit/v1/2026/12/04/11/000000000007.ndjson"
            ]
        );
        assert_eq!(write_batch(&archive, "", 7, &records).await.unwrap(), keys);
        assert_eq!(archive.list(PREFIX).await.unwrap(), keys);
        let data = write_batch(&archive, "data", 7, &records[..1])
            .await
            .unwrap();
        assert_eq!(data, ["audit/v1/2026/12/04/10/data-000000000007.ndjson"]);
    }

    #[tokio::test]
    async fn reading_a_range_finds_its_records_once_each_in_time_order() {
        let (_dir, archive) = archive();
        write_batch(
            &archive,
            "",
            1,
            &[
                record("late", "2026-11-30T23:30:00Z", "a"),
                record("b", "2026-12-01T00:10:00Z", "b"),
            ],
        )
        .await
        .unwrap();
        // Batch 2, of the data stream, repeats record "b": delivered twice, kept once.
        write_batch(
            &archive,
            "data",
            2,
            &[
                record("b", "2026-12-01T00:10:00Z", "b"),
                record("a", "2026-12-01T00:05:00Z", "a"),
                record("out", "2026-12-02T00:00:00Z", "a"),
            ],
        )
        .await
        .unwrap();
        let mut trail = Trail::open(
            &archive,
            at("2026-11-30T23:00:00Z"),
            at("2026-12-02T00:00:00Z"),
            u64::MAX,
        )
        .await
        .unwrap();
        let mut hours = Vec::new();
        while let Some(records) = trail.next_hour().await.unwrap() {
            hours.push(records.into_iter().map(|r| r.id).collect::<Vec<_>>());
        }
        assert_eq!(hours, [vec!["late"], vec!["a", "b"]]);
    }

    #[tokio::test]
    async fn a_line_plinth_did_not_write_is_refused_naming_the_object_and_line() {
        let (_dir, archive) = archive();
        let good = serde_json::to_string(&record("1", "2026-12-04T10:00:00Z", "a")).unwrap();
        archive
            .put(
                "audit/v1/2026/12/04/10/000000000001.ndjson",
                Bytes::from(format!("{good}\n{{\"schema\":\"x\"}}\n")),
            )
            .await
            .unwrap();
        let mut trail = Trail::open(
            &archive,
            at("2026-12-04T00:00:00Z"),
            at("2026-12-05T00:00:00Z"),
            u64::MAX,
        )
        .await
        .unwrap();
        let e = trail.next_hour().await.unwrap_err().to_string();
        assert!(
            e.contains("000000000001.ndjson: not written by Plinth: line 2"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn reading_stops_once_its_budget_of_bytes_is_spent() {
        let (_dir, archive) = archive();
        for batch in 0..3 {
            let id = batch.to_string();
            write_batch(
                &archive,
                "",
                batch,
                &[record(&id, "2026-12-04T10:00:00Z", "a")],
            )
            .await
            .unwrap();
        }
        let from = at("2026-12-04T00:00:00Z");
        let to = at("2026-12-05T00:00:00Z");
        let mut trail = Trail::open(&archive, from, to, 1).await.unwrap();
        let read = trail.next_hour().await.unwrap().unwrap();
        assert_eq!(read.len(), 1, "one object, then the budget is spent");
        assert!(trail.exhausted());
        assert!(trail.next_hour().await.unwrap().is_none());
        let mut whole = Trail::open(&archive, from, to, u64::MAX).await.unwrap();
        assert_eq!(whole.next_hour().await.unwrap().unwrap().len(), 3);
        assert!(!whole.exhausted());
    }

    #[test]
    fn every_month_of_a_range_is_listed_once() {
        assert_eq!(
            hours::months(
                PREFIX,
                at("2026-11-30T23:00:00Z"),
                at("2027-01-01T00:00:01Z")
            ),
            ["audit/v1/2026/11", "audit/v1/2026/12", "audit/v1/2027/01"]
        );
        assert_eq!(
            hours::months(
                PREFIX,
                at("2026-12-04T10:00:00Z"),
                at("2026-12-04T11:00:00Z")
            ),
            ["audit/v1/2026/12"]
        );
        assert!(
            hours::months(
                PREFIX,
                at("2026-12-04T10:00:00Z"),
                at("2026-12-04T10:00:00Z")
            )
            .is_empty()
        );
    }
}
