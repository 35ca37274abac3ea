//! The Plinth control plane as users run it: `plinth worker` and `plinth proxy` processes
//! against a [`DevServer`], with a home of its own (CA, certificates, directory, config).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use plinth_test_support::{Backend, Balancer, Guarded, Janitor};

use crate::{DevServer, free_port};

/// Members of the sample directory every stack writes.
pub const ADMIN: &str = "dev@example.com";
/// In `payments-team@example.com`, not an admin.
pub const PAYMENTS_MEMBER: &str = "alice@example.com";
/// In no group.
pub const OUTSIDER: &str = "mallory@example.com";
/// The owner group of the sample resources.
pub const PAYMENTS_TEAM: &str = "payments-team@example.com";
/// Another team, owning nothing of the payments team's.
pub const SEARCH_TEAM: &str = "search-team@example.com";

/// The directory every stack starts with: carol has left; bob is in the payments team
/// through the nested on-call group.
pub const DIRECTORY: &str = "\
users:
  - email: dev@example.com
  - email: alice@example.com
  - email: bob@example.com
  - email: frank@example.com
  - email: erin@example.com
  - email: mallory@example.com
  - email: carol@example.com
    status: departed
groups:
  - name: temporal-dev
    members: [dev@example.com]
  - name: payments-team@example.com
    members: [alice@example.com, carol@example.com, frank@example.com]
    groups: [payments-oncall]
  - name: payments-oncall
    members: [bob@example.com]
  - name: search-team@example.com
    members: [erin@example.com]
";

/// Issuer and audience of the stack's bearer tokens.
pub const TOKEN_ISSUER: &str = "https://idp.plinth.test";
/// See [`TOKEN_ISSUER`].
pub const TOKEN_AUDIENCE: &str = "temporal-ui";
/// The one browser origin the stack's codec server allows.
pub const UI_ORIGIN: &str = "http://ui.plinth.test";
/// The codec server's body limit in a stack.
pub const CODEC_MAX_BODY: usize = 65_536;
const TOKEN_KEY_ID: &str = "plinth-test";

/// Where one more proxy of a stack listens.
#[derive(Debug, Clone)]
pub struct ProxyAddresses {
    /// `host:port` of its mTLS listener.
    pub address: String,
    /// `host:port` of its /metrics and health checks.
    pub metrics_address: String,
}

#[derive(Debug)]
struct AnotherProxy {
    process: Option<Guarded>,
    addresses: ProxyAddresses,
}

/// A running worker and proxy (and codec server, once started); all are stopped when dropped.
#[derive(Debug)]
pub struct PlinthStack {
    plinth: PathBuf,
    home: tempfile::TempDir,
    worker: Option<Guarded>,
    /// Workers beside the first, with their /metrics addresses.
    more_workers: Vec<(Option<Guarded>, String)>,
    proxy: Option<Guarded>,
    codec: Option<Guarded>,
    /// More proxies of the same platform, started by [`PlinthStack::start_another_proxy`].
    more_proxies: Vec<AnotherProxy>,
    /// Removes the home of a stack shared through a static when the test process ends.
    janitor: Option<Janitor>,
    /// PKCS#8 of the key that signs the stack's bearer tokens (its JWKS is in the home).
    token_key: Vec<u8>,
    /// `host:port` of the codec server.
    pub codec_address: String,
    /// Control-plane namespace of this stack.
    pub control_namespace: String,
    /// `host:port` of the platform API and Temporal's services (mTLS).
    pub proxy_address: String,
    /// `host:port` of the proxy's /metrics and health checks.
    pub proxy_metrics_address: String,
    /// `host:port` of the worker's /metrics.
    pub worker_metrics_address: String,
    /// `host:port` of Temporal.
    pub temporal_address: String,
    /// Environment every `plinth` process of the stack gets.
    env: Vec<(String, String)>,
}

impl PlinthStack {
    /// Starts a stack whose namespaces are re-checked for drift every `resync`.
    pub fn start(server: &DevServer, plinth: &Path, resync: &str) -> anyhow::Result<PlinthStack> {
        Self::start_with(server, plinth, resync, "5m")
    }

    /// Starts a stack with drift checks every `resync` and access runs every `access`.
    pub fn start_with(
        server: &DevServer,
        plinth: &Path,
        resync: &str,
        access: &str,
    ) -> anyhow::Result<PlinthStack> {
        Self::start_configured(server, plinth, resync, access, "", "")
    }

    /// [`Self::start_with`], with `proxy_settings` (TOML lines) added to `[proxy]` and
    /// `sections` (whole TOML tables) to the end of the configuration.
    pub fn start_configured(
        server: &DevServer,
        plinth: &Path,
        resync: &str,
        access: &str,
        proxy_settings: &str,
        sections: &str,
    ) -> anyhow::Result<PlinthStack> {
        Self::start_in(
            server,
            plinth,
            resync,
            access,
            proxy_settings,
            sections,
            &[],
        )
    }

    /// [`Self::start_configured`], every `plinth` process with `env` added.
    pub fn start_in(
        server: &DevServer,
        plinth: &Path,
        resync: &str,
        access: &str,
        proxy_settings: &str,
        sections: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<PlinthStack> {
        static STACKS: AtomicU32 = AtomicU32::new(0);
        let n = STACKS.fetch_add(1, Ordering::Relaxed);
        let control_namespace = format!("plinth-system-{}-{n}", std::process::id());
        let home = tempfile::Builder::new().prefix("plinth-stack-").tempdir()?;
        let proxy_address = format!("127.0.0.1:{}", free_port());
        let codec_address = format!("127.0.0.1:{}", free_port());
        let proxy_metrics_address = format!("127.0.0.1:{}", free_port());
        let worker_metrics_address = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "[temporal]\naddress = \"{}\"\nnamespace = \"{control_namespace}\"\n\n\
             [platform]\nresync_interval = \"{resync}\"\naccess_interval = \"{access}\"\n\n\
             [proxy]\nlisten = \"{proxy_address}\"\nmetrics_listen = \"{proxy_metrics_address}\"\n\
             refresh_interval = \"2s\"\n{proxy_settings}\n\n\
             [worker]\nmetrics_listen = \"{worker_metrics_address}\"\n\n\
             [client]\naddress = \"{proxy_address}\"\nserver_name = \"localhost\"\n\
             codec = \"https://{codec_address}\"\n\n\
             [codec]\nlisten = \"{codec_address}\"\nmax_body_bytes = {CODEC_MAX_BODY}\n\
             jwks = \"{jwks}\"\njwt_issuer = \"{TOKEN_ISSUER}\"\njwt_audience = \"{TOKEN_AUDIENCE}\"\n\
             allowed_origins = [\"{UI_ORIGIN}\"]\n\n{sections}\n",
            server.address(),
            jwks = home.path().join("jwks.json").display(),
        );
        let token_key = write_jwks(&home.path().join("jwks.json"))?;
        std::fs::write(home.path().join("plinth.toml"), config)?;
        std::fs::write(home.path().join("directory.yaml"), DIRECTORY)?;
        let mut stack = PlinthStack {
            plinth: plinth.to_owned(),
            worker: None,
            more_workers: Vec::new(),
            proxy: None,
            codec: None,
            more_proxies: Vec::new(),
            janitor: None,
            token_key,
            codec_address,
            control_namespace,
            proxy_address,
            proxy_metrics_address,
            worker_metrics_address,
            temporal_address: server.address(),
            home,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        stack.run_ok(&["pki", "init"])?;
        stack.run_ok(&["keys", "init"])?;
        for user in [ADMIN, PAYMENTS_MEMBER, OUTSIDER] {
            let out = stack.user_dir(user);
            stack.run_ok(&[
                "pki",
                "issue",
                "--user",
                user,
                "--out",
                out.to_str().unwrap(),
            ])?;
        }
        stack.start_worker()?;
        stack.start_proxy(0)?;
        Ok(stack)
    }

    /// A stack on the shared dev server for a test binary's fixture ([`Self::shared`]), drift
    /// checks every 10 minutes and access runs every 3 s, with `sections` added to its
    /// configuration and `env` to every process.
    pub fn start_shared(
        plinth: &Path,
        sections: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<PlinthStack> {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Self::start_in(
            crate::DevServer::shared(),
            plinth,
            "10m",
            "3s",
            "",
            sections,
            &env,
        )
        .and_then(PlinthStack::shared)
    }

    /// Makes this stack a fixture that a test binary's tests share through a static, which is
    /// never dropped: its processes stop when the test process ends, however it ends, and its
    /// home is removed then.
    pub fn shared(mut self) -> anyhow::Result<PlinthStack> {
        self.janitor = Some(Janitor::remove_at_exit(self.home.path())?);
        Ok(self)
    }

    /// Replaces the directory file at once (write and rename), as a directory sync would.
    pub fn write_directory(&self, text: &str) -> anyhow::Result<()> {
        let path = self.home.path().join("directory.yaml");
        let staged = self.home.path().join("directory.yaml.new");
        std::fs::write(&staged, text)?;
        std::fs::rename(staged, path)?;
        Ok(())
    }

    /// The stack's `$PLINTH_HOME`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    fn user_dir(&self, user: &str) -> PathBuf {
        self.home.path().join("users").join(user)
    }

    fn spawn(&self, role: &str) -> anyhow::Result<Guarded> {
        self.spawn_with(role, &[])
    }

    fn spawn_with(&self, role: &str, env: &[(&str, &str)]) -> anyhow::Result<Guarded> {
        let mut command = self.command();
        command
            .arg(role)
            .env_remove("TEMPORAL_ADDRESS")
            .envs(env.iter().copied());
        Guarded::spawn(&command, &self.home.path().join(format!("{role}.log")))
            .with_context(|| format!("start plinth {role}"))
    }

    /// Starts the worker process (again) and waits until it polls.
    pub fn start_worker(&mut self) -> anyhow::Result<()> {
        self.start_worker_with(&[])
    }

    /// Starts the worker with extra environment (fault injection) and waits until it polls.
    pub fn start_worker_with(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let polling_before = self.log("worker").matches("worker polling").count();
        let mut worker = self.spawn_with("worker", env)?;
        self.wait_until_polling(&mut worker, "worker", polling_before)?;
        self.worker = Some(worker);
        Ok(())
    }

    /// Starts one more worker of this platform, beside the first, and waits until it polls.
    /// It is worker number `n` of [`Self::start_worker_at`], counting the first as 0.
    pub fn start_another_worker(&mut self) -> anyhow::Result<usize> {
        let metrics = format!("127.0.0.1:{}", free_port());
        self.more_workers.push((None, metrics));
        let n = self.more_workers.len();
        self.start_worker_at(n)?;
        Ok(n)
    }

    /// Starts worker `n` (0: the first; again, after [`Self::kill_worker_at`]) and waits
    /// until it polls.
    pub fn start_worker_at(&mut self, n: usize) -> anyhow::Result<()> {
        if n == 0 {
            return self.start_worker();
        }
        let role = format!("worker{}", n + 1);
        let mut command = self.command();
        command
            .args(["worker", "--metrics-listen", &self.more_workers[n - 1].1])
            .env_remove("TEMPORAL_ADDRESS");
        let polling_before = self.log(&role).matches("worker polling").count();
        let mut worker = Guarded::spawn(&command, &self.home.path().join(format!("{role}.log")))
            .with_context(|| format!("start plinth {role}"))?;
        self.wait_until_polling(&mut worker, &role, polling_before)?;
        self.more_workers[n - 1].0 = Some(worker);
        Ok(())
    }

    /// Kills worker `n` (0: the first) at once, as a crash would.
    pub fn kill_worker_at(&mut self, n: usize) {
        match n {
            0 => self.kill_worker(),
            n => drop(self.more_workers[n - 1].0.take()),
        }
    }

    /// Waits until the `role` worker logs that it polls, `before` times having been logged.
    fn wait_until_polling(
        &self,
        worker: &mut Guarded,
        role: &str,
        before: usize,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log(role).matches("worker polling").count() == before {
            if let Some(status) = worker.try_wait()? {
                bail!("plinth {role} exited ({status}): {}", self.log(role));
            }
            if Instant::now() > deadline {
                bail!("plinth {role} did not start polling: {}", self.log(role));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts `plinth codec` (HTTPS, bearer tokens from the stack's JWKS) and waits until it
    /// listens.
    pub fn start_codec(&mut self) -> anyhow::Result<()> {
        let mut codec = self.spawn("codec")?;
        let listening = self.wait_for_listener(&mut codec, "codec", &self.codec_address);
        self.codec = Some(codec);
        listening
    }

    /// [`Self::profile`] for `user` in `namespace`, pointed at `address` (a balancer, say)
    /// instead of the first proxy.
    pub fn profile_via(
        &self,
        user: &str,
        namespace: &str,
        address: &str,
    ) -> anyhow::Result<PathBuf> {
        let profile = self.profile(user, namespace)?;
        let moved = profile.with_file_name(format!("via-{}.toml", address.replace(':', "-")));
        let text = std::fs::read_to_string(&profile)?;
        std::fs::write(&moved, text.replace(&self.proxy_address, address))?;
        Ok(moved)
    }

    /// The codec server's process id.
    pub fn codec_pid(&self) -> u32 {
        self.codec.as_ref().map_or(0, Guarded::id)
    }

    /// Stops the codec server with SIGTERM and waits for it to exit; its exit status.
    pub fn terminate_codec(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.codec
            .as_mut()
            .context("the codec server is not running")?
            .terminate(Duration::from_secs(60))
    }

    /// Starts one more proxy of this platform, beside the first, and returns where it listens.
    /// It is proxy number `n` of [`Self::terminate_proxy`], counting the first as 0.
    pub fn start_another_proxy(&mut self) -> anyhow::Result<ProxyAddresses> {
        let addresses = ProxyAddresses {
            address: format!("127.0.0.1:{}", free_port()),
            metrics_address: format!("127.0.0.1:{}", free_port()),
        };
        self.more_proxies.push(AnotherProxy {
            process: None,
            addresses: addresses.clone(),
        });
        self.start_proxy(self.more_proxies.len())?;
        Ok(addresses)
    }

    /// Where the first proxy listens.
    pub fn first_proxy(&self) -> ProxyAddresses {
        ProxyAddresses {
            address: self.proxy_address.clone(),
            metrics_address: self.proxy_metrics_address.clone(),
        }
    }

    /// HAProxy over the first proxy and `second`, each checked with `/readyz`.
    pub fn balance(&self, second: &ProxyAddresses) -> anyhow::Result<Balancer> {
        let backends = [self.first_proxy(), second.clone()].map(|proxy| Backend {
            address: proxy.address,
            health: proxy.metrics_address,
        });
        Balancer::start(&backends, "/readyz")
    }

    /// Kills proxy `n` (0: the first) at once, as a crash would.
    pub fn kill_proxy(&mut self, n: usize) {
        match n {
            0 => drop(self.proxy.take()),
            n => drop(self.more_proxies[n - 1].process.take()),
        }
    }

    /// Stops proxy `n` (0: the first) with SIGTERM and waits for it to exit; its exit status.
    pub fn terminate_proxy(&mut self, n: usize) -> anyhow::Result<std::process::ExitStatus> {
        let process = match n {
            0 => self.proxy.as_mut(),
            n => self.more_proxies[n - 1].process.as_mut(),
        };
        process
            .context("that proxy is not running")?
            .terminate(Duration::from_secs(60))
    }

    /// Starts proxy `n` (0: the first; again, after [`Self::terminate_proxy`]) where it
    /// listens, and waits until it listens.
    pub fn start_proxy(&mut self, n: usize) -> anyhow::Result<()> {
        let role = match n {
            0 => "proxy".to_owned(),
            n => format!("proxy{}", n + 1),
        };
        let mut command = self.command();
        command.arg("proxy").env_remove("TEMPORAL_ADDRESS");
        let address = match n {
            0 => self.proxy_address.clone(),
            n => {
                let addresses = &self.more_proxies[n - 1].addresses;
                command.args([
                    "--listen",
                    &addresses.address,
                    "--metrics-listen",
                    &addresses.metrics_address,
                ]);
                addresses.address.clone()
            }
        };
        let mut proxy = Guarded::spawn(&command, &self.home.path().join(format!("{role}.log")))
            .with_context(|| format!("start plinth {role}"))?;
        self.wait_for_listener(&mut proxy, &role, &address)?;
        match n {
            0 => self.proxy = Some(proxy),
            n => self.more_proxies[n - 1].process = Some(proxy),
        }
        Ok(())
    }

    /// The key id (`encryption-key-id`) workflow `id`'s input in `namespace` is stored
    /// under, read from Temporal directly, around the proxy.
    pub fn stored_key_id(&self, namespace: &str, id: &str) -> String {
        let payload = crate::sealed::stored_payload(self, namespace, id);
        crate::sealed::metadata(&payload, "encryption-key-id")
    }

    /// A bearer token for `email`, for `audience`, expiring `expires_in` seconds from now
    /// (negative: already expired).
    pub fn token(&self, email: &str, audience: &str, expires_in: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = serde_json::json!({
            "email": email,
            "email_verified": true,
            "iss": TOKEN_ISSUER,
            "aud": audience,
            "exp": now + expires_in,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(TOKEN_KEY_ID.to_owned());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.token_key);
        jsonwebtoken::encode(&header, &claims, &key).expect("sign token")
    }

    /// `plinth profile` for `user` on `namespace`: the temporal.toml it wrote, whose profile
    /// is named `team`.
    pub fn profile(&self, user: &str, namespace: &str) -> anyhow::Result<PathBuf> {
        // `plinth profile` issues the user's certificate into one place: two at once may leave
        // one's key beside the other's certificate.
        static ISSUING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = ISSUING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = self
            .home
            .path()
            .join("profiles")
            .join(format!("{user}-{namespace}.toml"));
        self.run_ok(&[
            "profile",
            "--namespace",
            namespace,
            "--user",
            user,
            "--name",
            "team",
            "--out",
            out.to_str().context("UTF-8 path")?,
        ])?;
        Ok(out)
    }

    /// Runs `plinth` with these arguments in the stack's home.
    pub fn plinth(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run plinth")
    }

    /// The proxy's process id.
    pub fn proxy_pid(&self) -> u32 {
        self.proxy.as_ref().map_or(0, Guarded::id)
    }

    /// Kills the worker process at once, as a crash would.
    pub fn kill_worker(&mut self) {
        self.worker.take();
    }

    /// Waits until `child` (the `role` process) listens on `address`.
    fn wait_for_listener(
        &self,
        child: &mut Guarded,
        role: &str,
        address: &str,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(address).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("plinth {role} exited ({status}): {}", self.log(role));
            }
            if Instant::now() > deadline {
                bail!("plinth {role} did not listen: {}", self.log(role));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// What a role (`worker` or `proxy`) logged so far.
    pub fn log(&self, role: &str) -> String {
        std::fs::read_to_string(self.home.path().join(format!("{role}.log"))).unwrap_or_default()
    }

    fn run_ok(&self, args: &[&str]) -> anyhow::Result<Output> {
        let output = self.command().args(args).output()?;
        if !output.status.success() {
            bail!(
                "plinth {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.plinth);
        command
            .arg("--home")
            .arg(self.home.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// The paths of `user`'s client certificate, key and the CA.
    pub fn credentials(&self, user: &str) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.user_dir(user);
        (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("ca.pem"),
        )
    }

    /// Runs a `plinth` client command as `user`, with `stdin` as standard input.
    pub fn plinth_as_with_input(&self, user: &str, args: &[&str], stdin: &str) -> Output {
        let (cert, key, _) = self.credentials(user);
        let mut command = self.command();
        command
            .env("PLINTH_CLIENT_CERT", &cert)
            .env("PLINTH_CLIENT_KEY", &key)
            .args(args);
        crate::cli::with_input(&mut command, stdin)
    }

    /// `plinth apply -f -` of `yaml` as `user`, with extra `flags`.
    pub fn apply_as(&self, user: &str, yaml: &str, flags: &[&str]) -> Output {
        let mut args = vec!["apply", "-f", "-"];
        args.extend(flags);
        self.plinth_as_with_input(user, &args, yaml)
    }

    /// Runs a `plinth` client command as `user`.
    pub fn plinth_as(&self, user: &str, args: &[&str]) -> Output {
        self.plinth_as_with_input(user, args, "")
    }

    /// Applies namespace `name` (Temporal namespace `temporal_name`, retention 3 days) as the
    /// payments team's, adds the team to its writers, and waits until the access run has
    /// granted them.
    pub fn provision_for_team(&self, name: &str, temporal_name: &str) -> anyhow::Result<()> {
        self.provision_for_team_with(name, temporal_name, "")
    }

    /// [`Self::provision_for_team`] with `extra_spec` (indented YAML lines) in the spec.
    pub fn provision_for_team_with(
        &self,
        name: &str,
        temporal_name: &str,
        extra_spec: &str,
    ) -> anyhow::Result<()> {
        let yaml = crate::cli::namespace_yaml(name, temporal_name, PAYMENTS_TEAM, 3, extra_spec);
        crate::cli::ok(self.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
        let writers = format!("TEMPORAL-ns-{temporal_name}");
        crate::cli::ok(self.plinth_as(
            PAYMENTS_MEMBER,
            &["policy", "add-rule", &writers, "--group", PAYMENTS_TEAM],
        ));
        let member = format!("user:{PAYMENTS_MEMBER}");
        crate::cli::wait_for("write access", || {
            let out = self.plinth_as(PAYMENTS_MEMBER, &["get", "access", temporal_name]);
            String::from_utf8_lossy(&out.stdout).contains(&member)
        });
        Ok(())
    }

    /// The namespace's effective access list and last run, as `plinth get access -o json`
    /// shows them to anyone.
    pub fn access_list(&self, temporal_name: &str) -> serde_json::Value {
        self.get_json(&["access", temporal_name])
    }

    /// `plinth get ARGS -o json` as anyone, asked again while it fails: an access list's last
    /// run is refused while Temporal does not answer for it.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let all = [&["get"], args, &["-o", "json"]].concat();
        let mut output = None;
        crate::cli::wait_for("plinth get", || {
            output = Some(self.plinth_as(OUTSIDER, &all)).filter(|o| o.status.success());
            output.is_some()
        });
        serde_json::from_slice(&output.expect("answered").stdout).expect("JSON")
    }

    /// When the control plane's workflow `workflow_id` (an access run, say) started, as
    /// Temporal recorded it; asked again while the CLI fails (a busy dev server).
    pub fn started(&self, workflow_id: &str) -> std::time::SystemTime {
        let mut output = None;
        crate::cli::wait_for("temporal workflow describe", || {
            output = Some(self.describe(workflow_id)).filter(|o| o.status.success());
            output.is_some()
        });
        let output = output.expect("described");
        let described: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let started = described["workflowExecutionInfo"]["startTime"].as_str();
        humantime::parse_rfc3339(started.unwrap_or_default())
            .unwrap_or_else(|e| panic!("start time: {e}: {described}"))
    }

    /// `temporal workflow describe -o json` of the control plane's workflow `workflow_id`.
    fn describe(&self, workflow_id: &str) -> Output {
        let args = [
            "workflow",
            "describe",
            "-w",
            workflow_id,
            "--namespace",
            &self.control_namespace,
            "-o",
            "json",
        ];
        crate::cli::temporal(&args, &self.temporal_address)
    }

    /// `identity → access` of the namespace's effective access list.
    pub fn access(&self, temporal_name: &str) -> Vec<(String, String)> {
        self.access_list(temporal_name)["grants"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|grant| {
                let field = |k: &str| grant[k].as_str().unwrap_or_default().to_owned();
                (field("identity"), field("access"))
            })
            .collect()
    }
}

/// Writes a JWKS with one P-256 key and returns the key's PKCS#8, for signing.
fn write_jwks(path: &Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let point = key.public_key_raw();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwks = serde_json::json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": TOKEN_KEY_ID,
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    }]});
    std::fs::write(path, jwks.to_string())?;
    Ok(key.serialize_der())
}

impl Drop for PlinthStack {
    fn drop(&mut self) {
        self.codec.take();
        self.worker.take();
        self.proxy.take();
        // A failed test's logs and configuration stay for whoever investigates.
        if std::thread::panicking() {
            self.home.disable_cleanup(true);
            eprintln!(
                "stack home kept for inspection: {}",
                self.home.path().display()
            );
        }
    }
}
