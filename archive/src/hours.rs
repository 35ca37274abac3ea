//! Keys partitioned by the UTC hour: `<prefix>/YYYY/MM/DD/HH`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::{Archive, ArchiveError};

/// Keys one listing holds at most: a store filled beyond what Plinth writes in the range
/// cannot make a reader hold every key.
pub(crate) const MAX_KEYS: usize = 200_000;

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// `<prefix>/YYYY/MM/DD/HH` of `time`.
pub(crate) fn path(prefix: &str, time: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(time).to_string();
    // 2026-12-04T10:11:12Z
    format!(
        "{prefix}/{}/{}/{}/{}",
        &stamp[0..4],
        &stamp[5..7],
        &stamp[8..10],
        &stamp[11..13]
    )
}

/// The start of the hour `<prefix>/YYYY/MM/DD/HH` names.
pub(crate) fn start(prefix: &str, path: &str) -> Option<SystemTime> {
    let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [year, month, day, hour] = parts.as_slice() else {
        return None;
    };
    humantime::parse_rfc3339(&format!("{year}-{month}-{day}T{hour}:00:00Z")).ok()
}

/// `<prefix>/YYYY/MM` of every month `[from, to)` touches.
pub(crate) fn months(prefix: &str, from: SystemTime, to: SystemTime) -> Vec<String> {
    let mut months = Vec::new();
    if from >= to {
        return months;
    }
    let last = to - Duration::from_nanos(1);
    let mut at = from;
    loop {
        let month = path(prefix, at)[..prefix.len() + 8].to_owned();
        if months.last() != Some(&month) {
            months.push(month);
        }
        if at >= last {
            return months;
        }
        // A day at a time never steps over a month.
        at = (at + Duration::from_secs(86_400)).min(last);
    }
}

/// The keys under `prefix` by the hour (`<prefix>/YYYY/MM/DD/HH`) they are filed under, for
/// the hours `[since, until)` touches; true when there were more than [`MAX_KEYS`] (the rest
/// are left out).
pub(crate) async fn keys_by_hour(
    archive: &Archive,
    prefix: &str,
    since: SystemTime,
    until: SystemTime,
) -> Result<(BTreeMap<String, Vec<String>>, bool), ArchiveError> {
    let mut by_hour: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut room = MAX_KEYS;
    for month in months(prefix, since, until) {
        let (keys, more) = archive.list_at_most(&month, room).await?;
        room -= keys.len();
        for key in keys {
            let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            let parts: Vec<&str> = rest.splitn(5, '/').collect();
            if parts.len() < 5 {
                continue;
            }
            let hour = format!("{prefix}/{}", parts[..4].join("/"));
            let Some(start) = self::start(prefix, &hour) else {
                continue;
            };
            if start + HOUR > since && start < until {
                by_hour.entry(hour).or_default().push(key);
            }
        }
        if more {
            return Ok((by_hour, true));
        }
    }
    Ok((by_hour, false))
}
