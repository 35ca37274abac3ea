//! The Python SDK programs of `tests/interop/proxy_client.py`, configured by a `plinth
//! profile` only, as a team would run them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A script of `tests/interop`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../interop")
        .join(name)
}

/// The Python SDK worker of `proxy_client.py` on `task_queue`, polling until dropped.
pub struct PythonWorker(Child);

impl PythonWorker {
    /// Starts it with `profile` and waits until it polls.
    pub fn start(profile: &Path, task_queue: &str) -> PythonWorker {
        let mut child = Command::new("python3")
            .arg(script("proxy_client.py"))
            .arg("worker")
            .arg(profile)
            .args(["team", task_queue])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python worker");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "polling", "the Python worker started");
        PythonWorker(child)
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// `proxy_client.py drive`: Checkout and Order workflows, `lanes` at a time, and list calls
/// without retries, through `profile` until [`Driver::finish`].
pub struct Driver(Child);

/// What a [`Driver`] counted.
#[derive(Debug)]
pub struct Driven {
    /// Workflows completed with the right result.
    pub completed: u32,
    /// Workflows that failed, each described in `report`.
    pub failed: u32,
    /// List calls without retries that succeeded.
    pub listed: u32,
    /// List calls the client sent as their connection's GOAWAY arrived (never sent).
    pub raced: u32,
    /// Other list calls that failed, each described in `report`.
    pub unlisted: u32,
    /// Workflow calls repeated because their connection was lost under them.
    pub retried: u32,
    /// Everything it printed.
    pub report: String,
}

impl Driver {
    /// Starts driving with `profile` on `task_queue`, workflow ids starting with `prefix`.
    pub fn start(profile: &Path, task_queue: &str, prefix: &str, lanes: usize) -> Driver {
        Driver(
            Command::new("python3")
                .arg(script("proxy_client.py"))
                .arg("drive")
                .arg(profile)
                .args(["team", task_queue, prefix, &lanes.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the Python client"),
        )
    }

    /// Stops starting workflows, waits for those under way, and reads the counts.
    pub fn finish(mut self) -> Driven {
        drop(self.0.stdin.take());
        let out = self
            .0
            .wait_with_output()
            .expect("the Python client's report");
        let report = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The SDK's own log lines may come first.
        let counts: Vec<u32> = report
            .lines()
            .find(|line| line.starts_with("completed "))
            .map(|line| {
                line.split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [completed, failed, listed, raced, unlisted, retried] = counts[..] else {
            panic!("no report: {report}");
        };
        Driven {
            completed,
            failed,
            listed,
            raced,
            unlisted,
            retried,
            report,
        }
    }
}
