//! A workflow and an activity round trip through the Plinth worker against a real Temporal.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plinth_control::ControlSettings;
use plinth_test_harness::{DevServer, WorkerThread, temporal_bin};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

#[tokio::test(flavor = "multi_thread")]
async fn canary_runs_through_the_in_process_worker() {
    let server = DevServer::shared();
    let settings = ControlSettings {
        namespace: server.create_namespace("canary").await,
        task_queue: "plinth".into(),
    };
    let worker = WorkerThread::start(server, settings.clone());

    let report = tokio::time::timeout(
        Duration::from_secs(60),
        plinth_worker::run_canary(server.connect().await, &settings, "canary-1", "token-123"),
    )
    .await
    .expect("canary finished in time")
    .expect("canary succeeded");

    assert_eq!(report.token, "token-123");
    assert_eq!(report.worker.namespace, settings.namespace);
    assert_eq!(report.worker.task_queue, "plinth");
    assert!(report.worker.identity.contains('@'), "{:?}", report.worker);
    worker.stop().expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_creates_its_namespace_when_missing() {
    let server = DevServer::shared();
    let settings = ControlSettings {
        namespace: format!("fresh-{}", std::process::id()),
        task_queue: "plinth".into(),
    };
    let worker = WorkerThread::start(server, settings.clone());
    let report = tokio::time::timeout(Duration::from_secs(90), async {
        // The namespace appears once the worker has registered it.
        loop {
            match plinth_worker::run_canary(server.connect().await, &settings, "c", "t").await {
                Ok(report) => return report,
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    })
    .await
    .expect("worker registered the namespace and answered");
    assert_eq!(report.worker.namespace, settings.namespace);
    worker.stop().expect("worker stops cleanly");
}

/// The `plinth worker` binary, configured by a standard temporal.toml profile, answers a
/// workflow started by the real `temporal` CLI, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn worker_binary_reads_a_temporal_toml_profile() {
    let server = DevServer::shared();
    let namespace = server.create_namespace("profile").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("temporal.toml");
    std::fs::write(
        &config,
        format!(
            "[profile.control]\naddress = \"{}\"\nnamespace = \"{namespace}\"\n",
            server.address()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("directory.yaml"), "users: []\ngroups: []\n").unwrap();

    let mut worker = Command::new(PLINTH)
        .args(["--home", dir.path().to_str().unwrap(), "worker"])
        .arg("--config-file")
        .arg(&config)
        .args(["--profile", "control", "--task-queue", "from-profile"])
        .env_remove("TEMPORAL_ADDRESS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let output = Command::new(temporal_bin())
        .args([
            "workflow",
            "execute",
            "--type",
            "Canary",
            "--workflow-id",
            "cli-canary",
        ])
        .args(["--task-queue", "from-profile", "--input", "\"from-cli\""])
        .args(["--address", &server.address(), "--namespace", &namespace])
        .args(["--output", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "temporal CLI failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(&stdout).expect("CLI prints JSON");
    assert_eq!(result["result"]["token"], "from-cli", "{result}");
    assert_eq!(result["result"]["worker"]["namespace"], namespace.as_str());
    assert_eq!(result["result"]["worker"]["task_queue"], "from-profile");

    kill(Pid::from_raw(worker.id() as i32), Signal::SIGTERM).unwrap();
    let status = worker.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "worker exit {status}: {stderr}");
    assert!(stderr.contains("worker stopped"), "{stderr}");
}

#[test]
fn worker_with_unknown_profile_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("temporal.toml");
    std::fs::write(&config, "[profile.a]\naddress = \"127.0.0.1:1\"\n").unwrap();
    let output = Command::new(PLINTH)
        .args(["--home", dir.path().to_str().unwrap(), "worker"])
        .arg("--config-file")
        .arg(&config)
        .args(["--profile", "missing"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing"), "{stderr}");
}
