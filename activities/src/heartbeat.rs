//! An activity's heartbeat as the [`Progress`] backends report long operations to: what
//! they record is the heartbeat's detail, and a retry resumes from the last one. The
//! heartbeat also beats on its own while the backend waits on anything else (rate limits,
//! another run's write), so a live attempt is never taken for a dead one.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plinth_control::progress::{self, Progress};
use temporalio_sdk::activities::ActivityContext;

/// Well inside the backend activities' 30 s heartbeat timeout.
const BEAT: Duration = Duration::from_secs(5);

struct Heartbeat {
    ctx: ActivityContext,
    resumed: Option<String>,
    /// The last operation recorded, which each beat repeats.
    last: Mutex<Option<String>>,
}

impl Heartbeat {
    async fn beat(&self, detail: Option<String>) {
        let detail = detail.unwrap_or_default();
        if let Err(error) = self.ctx.record_heartbeat(detail).await {
            tracing::warn!(%error, "heartbeat not recorded");
        }
    }
}

#[async_trait::async_trait]
impl Progress for Heartbeat {
    fn resumed(&self) -> Option<String> {
        self.resumed.clone()
    }

    async fn record(&self, operation: &str) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(operation.to_owned());
        self.beat(Some(operation.to_owned())).await;
    }
}

/// Runs `call` with backend progress going to `ctx`'s heartbeat, beating every [`BEAT`].
pub(crate) async fn with_heartbeat<F: Future>(ctx: ActivityContext, call: F) -> F::Output {
    let resumed = ctx
        .heartbeat_details()
        .deserialize::<String>()
        .ok()
        .flatten()
        .filter(|operation| !operation.is_empty());
    let heartbeat = Arc::new(Heartbeat {
        ctx,
        last: Mutex::new(resumed.clone()),
        resumed,
    });
    let beating = heartbeat.clone();
    let beats = async move {
        // The first beat after one interval: an activity that ends sooner costs Temporal no
        // heartbeat (a write of the activity's state).
        let start = tokio::time::Instant::now() + BEAT;
        let mut ticks = tokio::time::interval_at(start, BEAT);
        loop {
            ticks.tick().await;
            let last = beating
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            beating.beat(last).await;
        }
    };
    let call = progress::scope(heartbeat, call);
    tokio::select! {
        output = call => output,
        never = beats => never,
    }
}
