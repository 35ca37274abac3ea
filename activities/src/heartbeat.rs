//! An activity's heartbeat as the [`Progress`] backends report long operations to: what
//! they record is the heartbeat's detail, and a retry resumes from the last one.

use std::future::Future;
use std::sync::Arc;

use plinth_control::progress::{self, Progress};
use temporalio_sdk::activities::ActivityContext;

struct Heartbeat {
    ctx: ActivityContext,
    resumed: Option<String>,
}

#[async_trait::async_trait]
impl Progress for Heartbeat {
    fn resumed(&self) -> Option<String> {
        self.resumed.clone()
    }

    async fn record(&self, operation: &str) {
        if let Err(error) = self.ctx.record_heartbeat(operation.to_owned()).await {
            tracing::warn!(%error, "heartbeat not recorded");
        }
    }
}

/// Runs `call` with backend progress going to `ctx`'s heartbeat.
pub(crate) async fn with_heartbeat<F: Future>(ctx: ActivityContext, call: F) -> F::Output {
    let resumed = ctx
        .heartbeat_details()
        .deserialize::<String>()
        .ok()
        .flatten();
    progress::scope(Arc::new(Heartbeat { ctx, resumed }), call).await
}
