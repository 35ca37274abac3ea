//! Which `plinth directory reload` a worker still owes a read of. Until it has read one, its
//! access runs go by the version before, putting back what the other workers' runs revoke:
//! a read that fails is tried again until it succeeds.

use std::time::{Duration, SystemTime};

use plinth_control::contract::ReloadRequest;
use plinth_control::directory::{Directory, Size};

/// The longest wait before a reload this worker failed to read is read again.
const RELOAD_RETRY_MAX: Duration = Duration::from_secs(60);

/// How far Temporal's clock, which stamps a reload, may be behind this host's: a reload it
/// stamps before this worker's first read of the directory may have come after it.
const CLOCK_MARGIN: Duration = Duration::from_secs(5);

/// The reloads a worker has read, and the newest it has not.
#[derive(Debug)]
pub(crate) struct Reloads {
    /// When the latest reload read was asked for.
    read: Option<SystemTime>,
    pending: Option<Pending>,
    /// The most checks a failed read waits before it is tried again.
    most_checks: u32,
}

/// A reload not read yet.
#[derive(Debug)]
struct Pending {
    asked: SystemTime,
    request: ReloadRequest,
    /// Checks left to pass before the next read.
    skip: u32,
    /// Checks the next read waits if it fails too.
    wait: u32,
}

impl Reloads {
    /// Reloads checked for every `every`, by a worker that first read its directory at
    /// `read_at`; `latest` is the newest reload asked for then (`None` if Temporal did not
    /// say). A reload asked for before that read is in it; one asked for around or after
    /// it is owed.
    pub(crate) fn new(
        every: Duration,
        read_at: SystemTime,
        latest: Option<(SystemTime, ReloadRequest)>,
    ) -> Self {
        let most_checks = (RELOAD_RETRY_MAX.as_secs_f64() / every.as_secs_f64()).floor();
        let mut reloads = Self {
            read: None,
            pending: None,
            most_checks: (most_checks as u32).max(1),
        };
        match latest {
            Some((asked, _)) if asked + CLOCK_MARGIN < read_at => reloads.read = Some(asked),
            latest => reloads.asked(latest),
        }
        reloads
    }

    /// Takes note of the newest reload asked for, as Temporal answered at this check.
    pub(crate) fn asked(&mut self, latest: Option<(SystemTime, ReloadRequest)>) {
        let Some((asked, mut request)) = latest else {
            return;
        };
        let known = self.pending.as_ref().map(|pending| pending.asked);
        if Some(asked) <= self.read || Some(asked) <= known {
            return;
        }
        // A forced reload not read yet keeps its floor: a plain one after it must not undo
        // the force.
        if let Some(older) = self.pending.take() {
            request.floor = lowest(older.request.floor, request.floor);
        }
        tracing::info!(by = %request.by, floor = ?request.floor, "directory reload asked for");
        self.pending = Some(Pending {
            asked,
            request,
            skip: 0,
            wait: 1,
        });
    }

    /// Reads the reload owed if its try is due at this check: true when it was read now. A
    /// failed read is tried at the next check, then after twice as many each time, up to
    /// [`RELOAD_RETRY_MAX`].
    pub(crate) async fn read_if_due(&mut self, directory: &dyn Directory) -> bool {
        let Some(pending) = &mut self.pending else {
            return false;
        };
        if pending.skip > 0 {
            pending.skip -= 1;
            return false;
        }
        match directory.reload(pending.request.floor).await {
            Ok(_) => {
                self.read = Some(pending.asked);
                self.pending = None;
                true
            }
            Err(e) => {
                pending.skip = pending.wait - 1;
                pending.wait = (pending.wait * 2).min(self.most_checks);
                tracing::error!(error = %e, checks_skipped = pending.skip, "directory reload asked for failed; the previous directory stays in force until it is read");
                false
            }
        }
    }
}

/// The lower of two floors, each person and membership count on its own: a floor lowers the
/// guard against a shrunk read, and no floor is the guard in full.
fn lowest(a: Option<Size>, b: Option<Size>) -> Option<Size> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Size {
            people: a.people.min(b.people),
            memberships: a.memberships.min(b.memberships),
        }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use plinth_control::directory::DirectoryError;
    use plinth_identity::Identity;

    use super::*;

    const EVERY: Duration = Duration::from_secs(2);

    /// A directory whose reads fail while `failing` is set, keeping the floors asked for.
    #[derive(Debug, Default)]
    struct Scripted {
        failing: AtomicBool,
        floors: Mutex<Vec<Option<Size>>>,
    }

    impl Scripted {
        fn failing() -> Self {
            let directory = Self::default();
            directory.failing.store(true, Ordering::Relaxed);
            directory
        }

        fn reads(&self) -> usize {
            self.floors.lock().unwrap().len()
        }
    }

    #[async_trait::async_trait]
    impl Directory for Scripted {
        fn group_exists(&self, _: &str) -> bool {
            false
        }
        fn is_member(&self, _: &Identity, _: &str) -> bool {
            false
        }
        fn active_members(&self, _: &str) -> BTreeSet<String> {
            BTreeSet::new()
        }
        fn is_active(&self, _: &str) -> bool {
            false
        }
        async fn reload(&self, floor: Option<Size>) -> Result<Size, DirectoryError> {
            self.floors.lock().unwrap().push(floor);
            if self.failing.load(Ordering::Relaxed) {
                return Err(DirectoryError::Scim {
                    message: "scripted failure".to_owned(),
                });
            }
            Ok(Size::default())
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + seconds)
    }

    fn mark(seconds: u64, floor: Option<Size>) -> Option<(SystemTime, ReloadRequest)> {
        let request = ReloadRequest {
            by: "user:admin@example.com".to_owned(),
            floor,
        };
        Some((at(seconds), request))
    }

    /// Which of `checks` checks read the directory, Temporal showing `latest` at each as the
    /// worker's loop sees it.
    async fn checks_that_read(
        reloads: &mut Reloads,
        directory: &Scripted,
        latest: Option<(SystemTime, ReloadRequest)>,
        checks: usize,
    ) -> Vec<usize> {
        let mut read = Vec::new();
        for check in 0..checks {
            let before = directory.reads();
            reloads.asked(latest.clone());
            reloads.read_if_due(directory).await;
            if directory.reads() > before {
                read.push(check);
            }
        }
        read
    }

    #[tokio::test]
    async fn a_failed_read_is_tried_again_ever_later_up_to_a_minute() {
        let directory = Scripted::failing();
        let mut reloads = Reloads::new(EVERY, at(0), None);
        let read = checks_that_read(&mut reloads, &directory, mark(10, None), 200).await;
        // Waits of 1, 2, 4, 8 and 16 checks, then 30: a minute of 2-second checks.
        assert_eq!(read, [0, 1, 3, 7, 15, 31, 61, 91, 121, 151, 181]);
    }

    #[tokio::test]
    async fn a_reload_read_is_not_read_again() {
        let directory = Scripted::default();
        let mut reloads = Reloads::new(EVERY, at(0), None);
        let read = checks_that_read(&mut reloads, &directory, mark(10, None), 50).await;
        assert_eq!(read, [0]);
    }

    #[tokio::test]
    async fn a_reload_after_a_failed_one_is_read_at_once_with_the_lower_floors() {
        let directory = Scripted::failing();
        let mut reloads = Reloads::new(EVERY, at(0), None);
        let forced = Size {
            people: 3,
            memberships: 40,
        };
        checks_that_read(&mut reloads, &directory, mark(10, Some(forced)), 2).await;
        let newer = Size {
            people: 5,
            memberships: 30,
        };
        checks_that_read(&mut reloads, &directory, mark(20, Some(newer)), 1).await;
        let lower = Size {
            people: 3,
            memberships: 30,
        };
        assert_eq!(
            *directory.floors.lock().unwrap(),
            [Some(forced), Some(forced), Some(lower)]
        );
    }

    #[tokio::test]
    async fn a_reload_asked_for_about_when_the_worker_first_read_is_read_again() {
        let directory = Scripted::default();
        let mut reloads = Reloads::new(EVERY, at(100), mark(98, None));
        assert!(reloads.read_if_due(&directory).await);
    }

    #[tokio::test]
    async fn a_reload_asked_for_well_before_the_worker_first_read_is_in_that_read() {
        let directory = Scripted::default();
        let mut reloads = Reloads::new(EVERY, at(100), mark(90, None));
        let read = checks_that_read(&mut reloads, &directory, mark(90, None), 5).await;
        assert!(read.is_empty(), "{read:?}");
    }
}
