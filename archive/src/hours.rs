//! Keys partitioned by the UTC hour: `<prefix>/YYYY/MM/DD/HH`.

use std::time::{Duration, SystemTime};

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
