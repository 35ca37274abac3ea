//! A directory read over the network on a timer. Checks read the snapshot in force and never
//! wait on the source; a read that fails or shrinks the directory implausibly is reported
//! and leaves the snapshot in force.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use plinth_identity::Identity;

use crate::{Directory, DirectoryError, Size, Snapshot};

/// Where a [`PolledDirectory`] reads whole versions from.
#[async_trait::async_trait]
pub trait Source: Send + Sync + std::fmt::Debug + 'static {
    /// Names the source in messages, such as `LDAP ldaps://ldap.example.com`.
    fn name(&self) -> String;
    /// Reads the whole directory.
    async fn fetch(&self) -> Result<Snapshot, DirectoryError>;
}

/// A [`Snapshot`] of a [`Source`], read again by [`PolledDirectory::follow`] and
/// [`Directory::reload`].
#[derive(Debug)]
pub struct PolledDirectory {
    source: Box<dyn Source>,
    /// The smallest share of the people in force a new version may list.
    min_share: f64,
    current: RwLock<Arc<Snapshot>>,
    /// Versions taken up so far, and how many of them `refresh` has reported.
    taken: AtomicU64,
    reported: AtomicU64,
    /// One read of the source at a time.
    reading: tokio::sync::Mutex<()>,
}

impl PolledDirectory {
    /// Reads `source` once: it must answer at start, since an empty directory would revoke
    /// everyone. `min_share` (0 to 1) is the smallest share of the people in force that a
    /// later read may list and still be taken up.
    pub async fn start(source: impl Source, min_share: f64) -> Result<Arc<Self>, DirectoryError> {
        let first = source.fetch().await?;
        tracing::info!(
            source = source.name(),
            people = first.people(),
            groups = first.groups(),
            "directory read"
        );
        Ok(Arc::new(Self {
            source: Box::new(source),
            min_share: min_share.clamp(0.0, 1.0),
            current: RwLock::new(Arc::new(first)),
            taken: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            reading: tokio::sync::Mutex::new(()),
        }))
    }

    /// Reads the source every `every` until the directory is dropped; a failed read is
    /// logged and the snapshot in force kept.
    pub fn follow(self: &Arc<Self>, every: Duration) -> impl Future<Output = ()> + Send + use<> {
        let directory: Weak<Self> = Arc::downgrade(self);
        async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(directory) = directory.upgrade() else {
                    return;
                };
                if let Err(e) = directory.read(None).await {
                    tracing::error!(error = %e, "directory not refreshed; the previous one stays in force");
                }
            }
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().expect("directory lock").clone()
    }

    /// Reads the source and takes the result up unless it lists implausibly few people or
    /// group memberships: fewer than `min_share` of the snapshot in force and, with a
    /// `floor`, of that too (a floor only ever lowers the guard, so a departure after a
    /// forced read does not turn the next read down). True when it differs from the snapshot
    /// in force.
    async fn read(&self, floor: Option<Size>) -> Result<bool, DirectoryError> {
        let _one_at_a_time = self.reading.lock().await;
        let next = self.source.fetch().await?;
        let in_force = self.snapshot();
        if next == *in_force {
            return Ok(false);
        }
        let (now, before) = (next.size(), in_force.size());
        let least = |count: usize| (count as f64 * self.min_share).ceil() as usize;
        let counts = [
            ("people", now.people, before.people, floor.map(|f| f.people)),
            (
                "group memberships",
                now.memberships,
                before.memberships,
                floor.map(|f| f.memberships),
            ),
        ];
        for (what, count, before, floor) in counts {
            if count < floor.map_or(least(before), |floor| least(floor).min(least(before))) {
                return Err(DirectoryError::Shrunk {
                    source_name: self.source.name(),
                    what,
                    count,
                    in_force: before,
                    share: (self.min_share * 100.0).round() as u32,
                });
            }
        }
        tracing::info!(
            source = self.source.name(),
            people = now.people,
            groups = next.groups(),
            "directory changed"
        );
        *self.current.write().expect("directory lock") = Arc::new(next);
        self.taken.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }
}

#[async_trait::async_trait]
impl Directory for PolledDirectory {
    fn group_exists(&self, group: &str) -> bool {
        self.snapshot().group_exists(group)
    }

    fn is_member(&self, identity: &Identity, group: &str) -> bool {
        self.snapshot().is_member(identity, group)
    }

    fn active_members(&self, group: &str) -> std::collections::BTreeSet<String> {
        self.snapshot().active_members(group)
    }

    fn is_active(&self, email: &str) -> bool {
        self.snapshot().is_active(email)
    }

    /// True once for each version [`PolledDirectory::follow`] or a reload took up.
    fn refresh(&self) -> Result<bool, DirectoryError> {
        let taken = self.taken.load(Ordering::SeqCst);
        Ok(self.reported.swap(taken, Ordering::SeqCst) != taken)
    }

    async fn reload(&self, floor: Option<Size>) -> Result<Size, DirectoryError> {
        self.read(floor).await?;
        Ok(self.snapshot().size())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Hands out the versions it is given, last one repeated; `None` fails.
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<Option<Snapshot>>>);

    #[async_trait::async_trait]
    impl Source for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }

        async fn fetch(&self) -> Result<Snapshot, DirectoryError> {
            let mut versions = self.0.lock().unwrap();
            let next = if versions.len() > 1 {
                versions.remove(0)
            } else {
                versions[0].clone()
            };
            next.ok_or_else(|| DirectoryError::Ldap {
                url: "ldaps://down".into(),
                message: "connection refused".into(),
            })
        }
    }

    fn people(count: usize) -> Snapshot {
        let users: String = (0..count)
            .map(|i| format!("  - email: p{i}@example.com\n"))
            .collect();
        Snapshot::from_yaml(&format!(
            "users:\n{users}groups:\n  - name: all\n    members: [p0@example.com]\n"
        ))
        .unwrap()
    }

    async fn directory(versions: Vec<Option<Snapshot>>) -> Arc<PolledDirectory> {
        PolledDirectory::start(Scripted(Mutex::new(versions)), 0.5)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_failed_read_keeps_the_snapshot_in_force() {
        let dir = directory(vec![Some(people(10)), None]).await;
        let error = dir.reload(None).await.unwrap_err().to_string();
        assert!(error.contains("connection refused"), "{error}");
        assert!(dir.is_active("p9@example.com"));
        assert!(!dir.refresh().unwrap());
    }

    #[tokio::test]
    async fn an_implausibly_small_read_keeps_the_snapshot_in_force() {
        let dir = directory(vec![Some(people(10)), Some(people(4)), Some(people(5))]).await;
        let error = dir.reload(None).await.unwrap_err().to_string();
        assert!(
            error.contains("lists 4 people, under 50% of the 10"),
            "{error}"
        );
        assert!(dir.is_active("p9@example.com"), "{error}");
        dir.reload(None).await.unwrap();
        assert!(!dir.is_active("p9@example.com"), "half is plausible");
    }

    #[tokio::test]
    async fn a_forced_reload_takes_a_shrunken_read() {
        let dir = directory(vec![Some(people(10)), Some(people(2))]).await;
        dir.reload(Some(Size::default())).await.unwrap();
        assert!(!dir.is_active("p2@example.com"));
    }

    #[tokio::test]
    async fn a_floor_takes_a_read_within_the_share_of_it_not_only_one_as_large() {
        let dir = directory(vec![Some(people(10)), Some(people(3)), Some(people(1))]).await;
        let floor = Size {
            people: 4,
            memberships: 1,
        };
        dir.reload(Some(floor)).await.unwrap();
        assert!(!dir.is_active("p3@example.com"), "3 is at least half of 4");
        let error = dir.reload(Some(floor)).await.unwrap_err().to_string();
        assert!(error.contains("lists 1 people"), "{error}");
    }

    #[tokio::test]
    async fn refresh_reports_each_new_version_once() {
        let dir = directory(vec![Some(people(3)), Some(people(3)), Some(people(4))]).await;
        dir.reload(None).await.unwrap();
        assert!(
            !dir.refresh().unwrap(),
            "an unchanged read is no new version"
        );
        dir.reload(None).await.unwrap();
        assert!(dir.refresh().unwrap());
        assert!(!dir.refresh().unwrap());
        assert!(dir.is_active("p3@example.com"));
    }

    #[tokio::test]
    async fn a_source_down_at_start_is_an_error() {
        let started = PolledDirectory::start(Scripted(Mutex::new(vec![None])), 0.5).await;
        assert!(started.is_err());
    }
}
