//! The running Namespace resources, listed from visibility once for every caller that arrives
//! while a listing runs. A burst of applies (each checks that no other resource holds its
//! Temporal name) would otherwise list every resource once per apply, and time out.

use std::sync::{Arc, Mutex, PoisonError};

use plinth_control::ControlPlane;
use plinth_proto::v1::Namespace;
use tokio::sync::Notify;
use tonic::Status;

/// Workflow ids and the resources their workflows published.
pub(crate) type Running = Arc<Vec<(String, Option<Namespace>)>>;

/// Shares listings between concurrent callers. Each caller gets a listing that started after
/// it arrived, so it sees every resource whose workflow started before its call.
#[derive(Debug, Default)]
pub(crate) struct SharedListing {
    state: Mutex<State>,
    finished: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The number the next listing to start gets.
    next: u64,
    /// Whether a listing is running.
    running: bool,
    /// The latest finished listing and its number.
    last: Option<(u64, Result<Running, Status>)>,
}

impl SharedListing {
    /// Running Namespace resources, as of some moment after this call began.
    pub(crate) async fn running(&self, control: &ControlPlane) -> Result<Running, Status> {
        self.shared(|| async {
            control
                .running_resources::<Namespace>(plinth_proto::KIND_NAMESPACE)
                .await
                .map(Arc::new)
                .map_err(crate::backend_status)
        })
        .await
    }

    /// What `list` answers, from a run of it that started after this call began: the run under
    /// way when another caller arrives, or the next.
    async fn shared<F, Fut>(&self, list: F) -> Result<Running, Status>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Running, Status>>,
    {
        let mut list = Some(list);
        let arrived = self.lock().next;
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let started = {
                let mut state = self.lock();
                if let Some((number, listed)) = &state.last
                    && *number >= arrived
                {
                    return listed.clone();
                }
                if state.running {
                    None
                } else {
                    state.running = true;
                    state.next += 1;
                    Some(state.next - 1)
                }
            };
            let Some(number) = started else {
                notified.await;
                continue;
            };
            // Whoever lists for the others may be cancelled: the guard hands the turn on.
            let turn = Turn(self);
            let list = list.take().expect("a caller lists at most once");
            let listed = list().await;
            self.lock().last = Some((number, listed.clone()));
            drop(turn);
            return listed;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running listing's turn: ends it (finished or cancelled) and wakes the waiters.
struct Turn<'a>(&'a SharedListing);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.lock().running = false;
        self.0.finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn callers_arriving_during_a_listing_share_the_next_one() {
        let shared = Arc::new(SharedListing::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let list = |runs: Arc<AtomicUsize>, mut released: tokio::sync::watch::Receiver<bool>| {
            move || async move {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|go| *go).await;
                Ok(Arc::new(vec![(format!("run-{run}"), None)]))
            }
        };
        let first = tokio::spawn({
            let (shared, list) = (shared.clone(), list(runs.clone(), released.clone()));
            async move { shared.shared(list).await }
        });
        tokio::task::yield_now().await;
        let later: Vec<_> = (0..50)
            .map(|_| {
                let (shared, list) = (shared.clone(), list(runs.clone(), released.clone()));
                tokio::spawn(async move { shared.shared(list).await })
            })
            .collect();
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap()[0].0, "run-0");
        for caller in later {
            // Arrived while run 0 was under way, so run 0 may miss what they expect.
            assert_eq!(caller.await.unwrap().unwrap()[0].0, "run-1");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_cancelled_listing_hands_the_turn_on() {
        let shared = SharedListing::default();
        let stuck = shared.shared(std::future::pending);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), stuck)
                .await
                .is_err()
        );
        let listed = shared
            .shared(|| async { Ok(Arc::new(Vec::new())) })
            .await
            .unwrap();
        assert!(listed.is_empty());
    }
}
