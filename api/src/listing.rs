//! The running Namespace resources, listed from visibility once for every caller that arrives
//! while a listing runs: many `plinth get namespaces` at once would otherwise list every
//! resource once each, and time out.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

/// A listing that takes longer than this answers `UNAVAILABLE` to everyone waiting on it.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

impl SharedListing {
    /// Running Namespace resources, as of some moment after this call began.
    pub(crate) async fn running(
        self: &Arc<Self>,
        control: &ControlPlane,
    ) -> Result<Running, Status> {
        let control = control.clone();
        self.shared(move || async move {
            control
                .running_resources::<Namespace>(plinth_proto::KIND_NAMESPACE)
                .await
                .map(Arc::new)
                .map_err(crate::backend_status)
        })
        .await
    }

    /// What `list` answers, from a run of it that started after this call began: the run under
    /// way when another caller arrives, or the next. A run is a task of its own, so a caller
    /// that goes away cancels nobody's listing, and it is bounded by [`LIST_TIMEOUT`].
    async fn shared<F, Fut>(self: &Arc<Self>, list: F) -> Result<Running, Status>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Running, Status>> + Send + 'static,
    {
        let mut list = Some(list);
        let arrived = self.lock().next;
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some((number, listed)) = &state.last
                    && *number >= arrived
                {
                    return listed.clone();
                }
                if !state.running
                    && let Some(list) = list.take()
                {
                    state.running = true;
                    state.next += 1;
                    let number = state.next - 1;
                    let turn = Turn(self.clone());
                    tokio::spawn(async move {
                        let listed = tokio::time::timeout(LIST_TIMEOUT, list())
                            .await
                            .unwrap_or_else(|_| {
                                Err(Status::unavailable(format!(
                                    "visibility did not list the namespaces within {LIST_TIMEOUT:?}"
                                )))
                            });
                        turn.0.lock().last = Some((number, listed));
                        drop(turn);
                    });
                }
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A listing's turn: ends it (finished, or its task panicked) and wakes the waiters.
struct Turn(Arc<SharedListing>);

impl Drop for Turn {
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
    async fn a_caller_that_goes_away_cancels_no_one_elses_listing() {
        let shared = Arc::new(SharedListing::default());
        let gated = |name: &'static str, gate: tokio::sync::watch::Receiver<bool>| {
            move || async move {
                let mut gate = gate;
                let _ = gate.wait_for(|open| *open).await;
                Ok(Arc::new(vec![(name.to_owned(), None)]))
            }
        };
        let call = |list| {
            let shared = shared.clone();
            tokio::spawn(async move { shared.shared(list).await })
        };
        let (open_first, first_gate) = tokio::sync::watch::channel(false);
        let (open_second, second_gate) = tokio::sync::watch::channel(false);
        let (_, open) = tokio::sync::watch::channel(true);
        let first = call(gated("first", first_gate));
        tokio::task::yield_now().await;
        // Both arrive during the first run: the one woken first lists for both.
        let leaving = call(gated("leaving", second_gate));
        tokio::task::yield_now().await;
        let staying = call(gated("staying", open));
        tokio::task::yield_now().await;
        open_first.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap()[0].0, "first");
        tokio::task::yield_now().await;
        leaving.abort();
        open_second.send(true).unwrap();
        assert_eq!(staying.await.unwrap().unwrap()[0].0, "leaving");
    }
}
