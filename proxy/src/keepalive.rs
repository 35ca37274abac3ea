//! HTTP/2 keep-alive pings, for both ends of the proxy: a peer that stops answering is
//! noticed within `interval + timeout`, even while calls wait on it.

use std::time::Duration;

/// Pings every `interval` for as long as the connection lives; returns why it should be
/// dropped once a ping goes unanswered for `timeout` or fails.
pub(crate) async fn keep_alive(
    pings: Option<h2::PingPong>,
    interval: Duration,
    timeout: Duration,
) -> String {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
            Err(_) => return format!("no answer to a keep-alive ping within {timeout:?}"),
        }
    }
}
