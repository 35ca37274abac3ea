//! What every end-to-end test uses: a real Temporal dev server on free ports with a temporary
//! SQLite database, and the Plinth worker running in-process against it.
//!
//! One server serves a whole test binary ([`DevServer::shared`]); tests keep apart by using
//! their own namespaces ([`DevServer::create_namespace`]). A watchdog shell stops the server and
//! deletes its files when the test process ends, however it ends.

use std::io::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub mod cli;
pub mod interop;
pub mod sealed;
mod stack;

pub use plinth_test_support::{
    Backend, Balancer, KmsStandIn, LDAP_SERVICE_DN, LDAP_SUFFIX, Prometheus, S3Server, Slapd,
    SoftHsm, StubAnswer, StubRequest, TlsRelay, free_port, serve_http, unix_now,
};
pub use stack::{
    ADMIN, CODEC_MAX_BODY, DIRECTORY, OUTSIDER, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack,
    ProxyAddresses, SEARCH_TEAM, TOKEN_AUDIENCE, UI_ORIGIN,
};

use anyhow::{Context, bail};
use plinth_control::ControlSettings;
use plinth_control::PlatformSettings;
use plinth_control::SelfHosted;
use plinth_control::directory::Snapshot;
use plinth_proto::ValidationRules;
use plinth_worker::PlinthWorker;
use temporalio_client::{Connection, ConnectionOptions};

const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The `temporal` CLI: `$PLINTH_TEMPORAL_BIN`, else `temporal` from `PATH`.
pub fn temporal_bin() -> PathBuf {
    std::env::var_os("PLINTH_TEMPORAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("temporal"))
}

/// A running `temporal server start-dev`.
#[derive(Debug)]
pub struct DevServer {
    grpc: SocketAddr,
    metrics: SocketAddr,
    dir: PathBuf,
    watchdog: Mutex<Option<Watchdog>>,
    namespaces: AtomicU32,
}

/// The shell that runs the server: it takes `stop` and `start` on stdin, answers on stdout,
/// and stops the server and removes its files at end of input.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl DevServer {
    /// The server this test binary shares, started on first use.
    pub fn shared() -> &'static DevServer {
        static SHARED: OnceLock<DevServer> = OnceLock::new();
        SHARED.get_or_init(|| DevServer::start().expect("start the shared Temporal dev server"))
    }

    /// Starts a server of its own, stopped when dropped.
    pub fn start() -> anyhow::Result<DevServer> {
        Self::start_with(&[])
    }

    /// [`Self::start`], with `dynamic_config` (`key=value`) set on the server too.
    pub fn start_with(dynamic_config: &[&str]) -> anyhow::Result<DevServer> {
        let dir = tempfile::Builder::new()
            .prefix("plinth-test-temporal-")
            .tempdir()?
            .keep();
        let (grpc_port, ui_port, http_port, metrics_port) =
            (free_port(), free_port(), free_port(), free_port());
        // The shell starts the server, then follows commands until its stdin closes: that
        // happens when this process drops the pipe or exits for any reason, panics and kills
        // included.
        let script = r#"
            run() { "$TEMPORAL" "$@" >>"$DIR/server.log" 2>&1 </dev/null & server=$!; }
            run "$@"
            echo started
            while read -r command; do
                case "$command" in
                    stop) kill -TERM "$server" 2>/dev/null; wait "$server"; echo stopped ;;
                    start) run "$@"; echo started ;;
                esac
            done
            kill -TERM "$server" 2>/dev/null
            wait "$server"
            rm -rf "$DIR"
        "#;
        let mut child = Command::new("sh")
            .args(["-c", script, "temporal-watchdog"])
            .args(["server", "start-dev", "--headless", "--log-level", "warn"])
            // Refused by default since server 1.30.1; allowed here, the proxy's check is what
            // keeps a worker of one namespace from acting on another.
            .args([
                "--dynamic-config-value",
                "system.enableCrossNamespaceCommands=true",
            ])
            .args(
                dynamic_config
                    .iter()
                    .flat_map(|value| ["--dynamic-config-value", value]),
            )
            .arg("--db-filename")
            .arg(dir.join("temporal.db"))
            // As `plinth dev` runs it: a write-ahead log, not a disk flush per write.
            .args(["--sqlite-pragma", "journal_mode=wal"])
            .args(["--sqlite-pragma", "synchronous=normal"])
            .args(["--ip", "127.0.0.1"])
            .args(["--port", &grpc_port.to_string()])
            .args(["--ui-port", &ui_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .env("TEMPORAL", temporal_bin())
            .env("DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The shell outlives a test process that shares it; test output must not wait for it.
            .stderr(Stdio::null())
            .spawn()
            .context("start the watchdog shell")?;
        let commands = child.stdin.take().context("watchdog stdin")?;
        let mut answers = BufReader::new(child.stdout.take().context("watchdog stdout")?);
        let mut line = String::new();
        answers.read_line(&mut line)?;
        let server = DevServer {
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
            dir,
            watchdog: Mutex::new(Some(Watchdog {
                child,
                commands,
                answers,
            })),
            namespaces: AtomicU32::new(0),
        };
        server.wait_until_serving()?;
        Ok(server)
    }

    /// Stops the server process (SIGTERM, then waits); its database stays.
    pub fn stop_serving(&self) -> anyhow::Result<()> {
        self.command("stop")
    }

    /// Starts the server again on the same ports and database, and waits until it answers.
    pub fn resume_serving(&self) -> anyhow::Result<()> {
        self.command("start")?;
        self.wait_until_serving()
    }

    fn command(&self, command: &str) -> anyhow::Result<()> {
        let mut guard = self.watchdog.lock().unwrap();
        let watchdog = guard.as_mut().context("the server was dropped")?;
        writeln!(watchdog.commands, "{command}")?;
        let mut answer = String::new();
        watchdog.answers.read_line(&mut answer)?;
        anyhow::ensure!(!answer.is_empty(), "the watchdog shell is gone");
        Ok(())
    }

    /// The SQLite files of the server's database: its write-ahead log, then the main file.
    pub fn database_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("temporal.db"))
            })
            .collect();
        // A checkpoint moves pages from the write-ahead log into the main file, never back:
        // read the log first, and nothing written is missed between the reads.
        files.sort_by_key(|path| path.file_name() == Some("temporal.db".as_ref()));
        files
    }

    fn wait_until_serving(&self) -> anyhow::Result<()> {
        // A thread of its own: callers may already be inside a Tokio runtime.
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.poll_until_serving(&self.dir))
                .join()
                .map_err(|_| anyhow::anyhow!("readiness check panicked"))?
        })
    }

    fn poll_until_serving(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        loop {
            if runtime
                .block_on(plinth_control::connect(self.connection_options()))
                .is_ok()
            {
                return Ok(());
            }
            if let Some(watchdog) = self.watchdog.lock().unwrap().as_mut()
                && watchdog.child.try_wait()?.is_some()
            {
                bail!(
                    "Temporal dev server exited during start-up; see {}",
                    dir.display()
                );
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                bail!("Temporal dev server did not answer within {READY_TIMEOUT:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `http://host:port/metrics`: the server's Prometheus metrics.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics)
    }

    /// `host:port` of the frontend.
    pub fn address(&self) -> String {
        self.grpc.to_string()
    }

    /// Plaintext connection options for this server.
    pub fn connection_options(&self) -> ConnectionOptions {
        let url: temporalio_client::Url =
            format!("http://{}", self.grpc).parse().expect("valid URL");
        ConnectionOptions::new(url).build()
    }

    /// A new connection, for the calling test's runtime.
    pub async fn connect(&self) -> Connection {
        plinth_control::connect(self.connection_options())
            .await
            .expect("connect to the Temporal dev server")
    }

    /// Registers a namespace no other test uses, named after `purpose`.
    pub async fn create_namespace(&self, purpose: &str) -> String {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let name = format!("{purpose}-{}-{n}", std::process::id());
        let connection = self.connect().await;
        plinth_control::ensure_namespace(&connection, &name)
            .await
            .expect("register a test namespace");
        name
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.lock().unwrap().take() {
            drop(watchdog.commands);
            let _ = watchdog.child.wait();
        }
    }
}

/// The Plinth worker running on a thread of its own (its run loop is not `Send`); shut down
/// and joined when dropped.
#[derive(Debug)]
pub struct WorkerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl WorkerThread {
    /// Starts a worker polling `settings` on `server`, with an empty directory and default
    /// validation rules.
    pub fn start(server: &DevServer, settings: ControlSettings) -> WorkerThread {
        let options = server.connection_options();
        let endpoint = server.address();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let connection = plinth_control::connect(options).await?;
                let platform = PlatformSettings {
                    directory: Arc::new(Snapshot::default()),
                    rules: ValidationRules::default(),
                    resync_interval: Duration::from_secs(600),
                    backend: Arc::new(SelfHosted::new(connection.clone(), endpoint)),
                    admin_group: "temporal-dev".into(),
                    access_interval: Duration::from_secs(300),
                };
                // Nothing here enables a namespace's export: its destination stays empty.
                let archive = tempfile::tempdir()?;
                let export = plinth_worker::HistoryExportSettings {
                    destination: plinth_archive::Archive::open(&format!(
                        "file://{}",
                        archive.path().display()
                    ))?,
                    interval: Duration::from_secs(3600),
                    visibility_lag: Duration::from_secs(60),
                };
                let mut worker = PlinthWorker::start(
                    connection,
                    &settings,
                    platform,
                    Default::default(),
                    None,
                    Default::default(),
                    export,
                )
                .await?;
                let shutdown = worker.shutdown_handle();
                tokio::spawn(async move {
                    let _ = stopped.await;
                    shutdown();
                });
                worker.run().await?;
                Ok(())
            })
        });
        WorkerThread {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Shuts the worker down and returns how its run ended.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("worker thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
