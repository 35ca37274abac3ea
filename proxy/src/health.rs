//! Whether the platform's Temporal answers, probed every second: readiness fails while it
//! does not, and platform API calls and calls forwarded to it are refused at once instead of
//! each waiting out its deadline on a Temporal that is gone.

use std::sync::RwLock;
use std::time::Duration;

use plinth_control::ControlPlane;

/// How often Temporal is asked.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// An answer slower than this counts as none.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Probes failing in a row that make Temporal unreachable: one slow answer on a busy machine
/// must not turn every platform API call away.
const FAILURES_TO_DOWN: u32 = 2;

/// The platform's Temporal as the last probe found it.
#[derive(Debug)]
pub struct TemporalHealth {
    control: ControlPlane,
    address: String,
    /// Whether namespaces are served from it, so that the proxy is of no use without it.
    serves_namespaces: bool,
    /// Why the last probe failed; `None` while Temporal answers.
    down: RwLock<Option<String>>,
}

impl TemporalHealth {
    /// Probes Temporal at `address` through `control`; reachable until a probe says otherwise.
    /// `serves_namespaces`: namespaces live there too (self-hosted), not only the control plane.
    pub fn new(control: ControlPlane, address: String, serves_namespaces: bool) -> Self {
        Self {
            control,
            address,
            serves_namespaces,
            down: RwLock::new(None),
        }
    }

    /// Why the last probe failed.
    fn why(&self) -> Option<String> {
        self.down
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// What callers needing Temporal are told now: its address, not the transport's detail,
    /// which is for operators (the log and readiness).
    pub fn unreachable(&self) -> Option<String> {
        self.why()
            .map(|_| format!("Temporal at {} is unreachable", self.address))
    }

    /// Why the proxy is not ready on Temporal's account: only where namespaces are served from
    /// it, so that an outage of the control plane alone leaves Cloud namespaces served.
    pub fn not_ready(&self) -> Option<String> {
        if !self.serves_namespaces {
            return None;
        }
        self.why()
            .map(|why| format!("Temporal at {} is unreachable ({why})", self.address))
    }

    /// [`Self::unreachable`], when `endpoint` is where the probe asks.
    pub fn unreachable_at(&self, endpoint: &str) -> Option<String> {
        self.unreachable().filter(|_| endpoint == self.address)
    }

    /// Probes until dropped.
    pub(crate) async fn watch(&self) {
        let mut ticks = tokio::time::interval(PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0;
        loop {
            ticks.tick().await;
            let result = match tokio::time::timeout(PROBE_TIMEOUT, self.control.answers()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            failures = if result.is_some() { failures + 1 } else { 0 };
            if result.is_none() || failures >= FAILURES_TO_DOWN {
                self.record(result);
            }
        }
    }

    fn record(&self, now: Option<String>) {
        let mut down = self
            .down
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&*down, &now) {
            (None, Some(why)) => {
                tracing::error!(address = %self.address, reason = %why, "Temporal is unreachable; not ready");
            }
            (Some(_), None) => {
                tracing::info!(address = %self.address, "Temporal answers again; ready")
            }
            _ => {}
        }
        *down = now;
    }
}
