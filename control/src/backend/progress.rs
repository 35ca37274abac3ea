//! How a backend call that waits on a long operation tells its caller what it waits on, so
//! that a caller that dies mid-wait resumes the operation instead of starting it again.
//! An activity installs a [`Progress`] for the calls it makes ([`scope`]); the backend
//! [`record`]s each operation it starts and [`resumed`] tells it what the previous attempt
//! recorded. Outside a scope both do nothing, and a backend still finishes its work.

use std::future::Future;
use std::sync::Arc;

/// Where operation ids go; in an activity, its heartbeat.
#[async_trait::async_trait]
pub trait Progress: Send + Sync {
    /// The operation the previous attempt recorded last, if any.
    fn resumed(&self) -> Option<String>;
    /// Records that `operation` is under way (and that the caller is alive).
    async fn record(&self, operation: &str);
}

tokio::task_local! {
    static PROGRESS: Arc<dyn Progress>;
}

/// Runs `call` with `progress` receiving what backends record.
pub async fn scope<F: Future>(progress: Arc<dyn Progress>, call: F) -> F::Output {
    PROGRESS.scope(progress, call).await
}

/// Records `operation` with the caller's progress, if it installed one.
pub async fn record(operation: &str) {
    if let Ok(progress) = PROGRESS.try_with(Arc::clone) {
        progress.record(operation).await;
    }
}

/// The operation a previous attempt recorded, if the caller knows one.
pub fn resumed() -> Option<String> {
    PROGRESS.try_with(|p| p.resumed()).ok().flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Progress for Recorded {
        fn resumed(&self) -> Option<String> {
            Some("op-1".into())
        }
        async fn record(&self, operation: &str) {
            self.0.lock().unwrap().push(operation.to_owned());
        }
    }

    #[tokio::test]
    async fn a_scope_receives_what_is_recorded_inside_it_only() {
        let progress = Arc::new(Recorded::default());
        record("before").await;
        let resumed = scope(progress.clone(), async {
            record("op-2").await;
            resumed()
        })
        .await;
        record("after").await;
        assert_eq!(resumed.as_deref(), Some("op-1"));
        assert_eq!(*progress.0.lock().unwrap(), ["op-2"]);
        assert_eq!(super::resumed(), None);
    }
}
