//! Test helpers that need no Temporal: free ports, an HTTP stub, a real Prometheus, a TLS
//! relay, a load balancer, a SoftHSM token, an AWS KMS stand-in, an S3 server, and processes and directories cleaned up when the test process ends. Crates whose tests need only these depend on this crate, not on the harness that
//! starts Temporal and links the SDK.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod balancer;
mod guarded;
mod http_stub;
mod kms_stand_in;
mod prometheus;
mod s3_server;
mod slapd;
mod softhsm;
mod tls_relay;

pub use balancer::{Backend, Balancer};
pub use guarded::{Guarded, Janitor};
pub use http_stub::{StubAnswer, StubRequest, serve_http};
pub use kms_stand_in::{KmsStandIn, boto3_at};
pub use prometheus::Prometheus;
pub use s3_server::S3Server;
pub use slapd::{LDAP_SERVICE_DN, LDAP_SERVICE_PASSWORD, LDAP_SUFFIX, Slapd};
pub use softhsm::SoftHsm;
pub use tls_relay::TlsRelay;

/// Ports [`free_port`] hands out lie below the kernel's ephemeral range (32768 and up on
/// Linux), so an outgoing connection can never take one between being handed out and bound.
const HANDED_OUT_PORTS: std::ops::Range<u32> = 10_000..32_000;

/// A port nothing listens on right now, from [`HANDED_OUT_PORTS`]. Each process walks the
/// range from its own starting point, so concurrent test processes rarely meet.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = HANDED_OUT_PORTS.end - HANDED_OUT_PORTS.start;
    let next = NEXT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        AtomicU32::new(std::process::id().wrapping_mul(7919) ^ nanos)
    });
    for _ in 0..span {
        let port = HANDED_OUT_PORTS.start + next.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("the range is below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {HANDED_OUT_PORTS:?}");
}

/// Now, in seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Polls `check` until it holds; fails the test after 90 s, naming `what`.
#[track_caller]
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Runs test `path` (as the test binary names it) again in a child process of this test
/// binary with `env`, and fails unless it passes there: for tests whose subject reads its
/// environment once (a PKCS#11 module, the AWS credential chain), which a test may not set
/// in its own process.
#[track_caller]
pub fn rerun_with_env<K, V>(path: &str, env: impl IntoIterator<Item = (K, V)>)
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([path, "--exact", "--nocapture"])
        .envs(env)
        .output()
        .expect("run the test binary again");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && out.contains("1 passed"),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `script` after `client`, a line making a boto3 client, with base64, json and sys
/// imported; returns what it printed.
fn run_boto3(client: &str, script: &str) -> anyhow::Result<String> {
    let script = format!("import base64, json, sys\nimport boto3\n{client}\n{script}");
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()?;
    if !output.status.success() {
        anyhow::bail!(
            "boto3 script failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}
