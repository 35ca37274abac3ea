//! `plinth.toml`: every setting with its default, loaded once and shared by all subcommands.
//!
//! Precedence, lowest first: built-in defaults, the file (`--config`, `$PLINTH_CONFIG`, or
//! `$PLINTH_HOME/plinth.toml` when present), `PLINTH_<SECTION>_<KEY>` environment variables,
//! then command-line flags. `plinth.example.toml` documents every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides.
const ENV_PREFIX: &str = "PLINTH_";

/// All of Plinth's settings.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// The platform's own Temporal, where the control plane runs.
    pub temporal: TemporalConfig,
    /// Certificates and identities.
    pub pki: PkiConfig,
    /// `plinth dev`.
    pub dev: DevConfig,
    /// Namespace resources: who administers, what is valid, how often drift is checked.
    pub platform: PlatformConfig,
    /// Where people and groups come from.
    pub directory: DirectoryConfig,
    /// Access on request: how long requests wait and grants may last.
    pub access: AccessConfig,
    /// Where managed namespaces live: the platform's own Temporal, or Temporal Cloud.
    pub backend: BackendConfig,
    /// `plinth proxy`: the mTLS front door.
    pub proxy: ProxyConfig,
    /// Payload encryption and `plinth codec`, the codec server the Web UI decrypts through.
    pub codec: CodecConfig,
    /// Where the key encryption keys live.
    pub keys: KeysConfig,
    /// How `plinth apply/get/describe/delete` reach the platform API.
    pub client: ClientConfig,
    /// `plinth worker`'s own endpoints.
    pub worker: WorkerConfig,
    /// Temporal's metrics, scraped by the worker into a time-series database.
    pub metrics: MetricsConfig,
    /// The audit trail: where it is shipped, and how often.
    pub audit: AuditConfig,
    /// Closed workflows' histories of namespaces with `spec.export.enabled`.
    pub export: ExportConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `plinth=debug,warn`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemporalConfig {
    /// `host:port` of the frontend.
    pub address: String,
    /// Control-plane namespace, created by the worker when missing.
    pub namespace: String,
    /// Task queue the Plinth worker polls.
    pub task_queue: String,
    /// TLS towards Temporal; absent means plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TemporalTls>,
}

impl Default for TemporalConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:7233".into(),
            namespace: plinth_control::DEFAULT_NAMESPACE.into(),
            task_queue: plinth_control::DEFAULT_TASK_QUEUE.into(),
            tls: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemporalTls {
    /// CA bundle that signed the server's certificate (system roots when absent).
    pub server_ca_cert: Option<PathBuf>,
    /// Client certificate for mTLS.
    pub client_cert: Option<PathBuf>,
    /// Client private key for mTLS.
    pub client_key: Option<PathBuf>,
    /// Server name to verify, when it differs from the address's host.
    pub server_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PkiConfig {
    /// SPIFFE trust domain of issued and accepted identities.
    pub trust_domain: String,
    /// Lifetime of client certificates `plinth pki issue` creates.
    #[serde(with = "humantime_serde")]
    pub client_cert_ttl: Duration,
    /// Lifetime of the server certificate `plinth pki init` creates.
    #[serde(with = "humantime_serde")]
    pub server_cert_ttl: Duration,
    /// DNS names and IP addresses of the server certificate.
    pub server_names: Vec<String>,
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            trust_domain: "plinth.local".into(),
            client_cert_ttl: Duration::from_secs(12 * 3600),
            server_cert_ttl: Duration::from_secs(90 * 24 * 3600),
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevConfig {
    /// Address every dev listener binds.
    pub ip: String,
    /// Temporal frontend gRPC.
    pub grpc_port: u16,
    /// Temporal Web UI.
    pub ui_port: u16,
    /// Temporal HTTP API.
    pub http_port: u16,
    /// Temporal server `/metrics`.
    pub metrics_port: u16,
    /// `plinth proxy`: platform API over mTLS.
    pub proxy_port: u16,
    /// `plinth proxy`'s /metrics and health checks.
    pub proxy_metrics_port: u16,
    /// The worker's /metrics port.
    pub worker_metrics_port: u16,
    /// Codec server port (dev mode: plain HTTP, unauthenticated from loopback).
    pub codec_port: u16,
    /// The local user `plinth dev` issues a certificate for.
    pub user: String,
    /// `KEY=VALUE` dynamic configuration for the dev server, e.g.
    /// `frontend.namespaceCount=4096` to hold more concurrent long polls per namespace.
    pub dynamic_config: Vec<String>,
    /// `PRAGMA=VALUE` for the dev server's SQLite file (`journal_mode`, `synchronous`). A
    /// write-ahead log synced at checkpoints survives any process's death and lets a burst of
    /// writes go without a disk flush each (`plinth bench namespaces`: half the time of
    /// SQLite's default rollback journal); with `synchronous=full` it survives a power loss
    /// too.
    pub sqlite_pragmas: Vec<String>,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            ip: "127.0.0.1".into(),
            grpc_port: 7233,
            ui_port: 8233,
            http_port: 7243,
            metrics_port: 9233,
            proxy_port: 7443,
            proxy_metrics_port: 7449,
            worker_metrics_port: 7450,
            codec_port: 7280,
            user: "dev@example.com".into(),
            dynamic_config: Vec::new(),
            sqlite_pragmas: vec!["journal_mode=wal".into(), "synchronous=normal".into()],
        }
    }
}

/// Which system holds managed namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The Temporal of `[temporal]` (or `[platform] namespace_endpoint`).
    #[default]
    SelfHosted,
    /// Temporal Cloud, through its Ops API.
    Cloud,
}

/// `[backend]`: where managed namespaces live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    pub kind: BackendKind,
    /// Cloud: the Ops API.
    pub endpoint: String,
    /// Cloud: the account id (namespaces are `<name>.<account>`).
    pub account: String,
    /// Cloud: a file holding the API key, re-read when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Cloud: an environment variable holding the API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Cloud: PEM CA bundle namespaces accept client certificates from (default: Plinth's
    /// upstream CA, whose certificates only the proxy holds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_client_ca: Option<PathBuf>,
    /// Cloud: namespaces also accept API keys.
    pub api_key_auth: bool,
    /// Cloud: invite people policies grant access who are not in the account yet (otherwise
    /// the access run reports them).
    pub invite_users: bool,
    /// Cloud: the codec server (https) Cloud's Web UI decrypts through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec_endpoint: Option<String>,
    /// Cloud: how long one operation may run before the call is retried.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Self-hosted: the cluster's `system.namespaceCacheRefreshInterval`. A deletion ends
    /// twice this after Temporal confirms it, when no frontend serves the old namespace by
    /// its name any more.
    #[serde(with = "humantime_serde")]
    pub namespace_cache_refresh: Duration,
    /// Cloud: lifetime of the client certificates `plinth proxy` issues itself from Plinth's
    /// upstream CA to reach namespaces; each is renewed at two thirds of it.
    #[serde(with = "humantime_serde")]
    pub certificate_lifetime: Duration,
    /// Cloud: CA bundle of the namespaces' endpoints (default: the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<PathBuf>,
    /// Cloud: how `plinth proxy` reaches namespaces.
    pub upstream_auth: UpstreamAuthKind,
    /// Cloud, `upstream_auth = "api-key"`: the service account the proxy's key belongs to;
    /// Plinth gives it write on every namespace it manages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_service_account: Option<String>,
    /// Cloud, `upstream_auth = "api-key"`: a file holding the proxy's key, re-read when it
    /// changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_api_key_file: Option<PathBuf>,
    /// Cloud, `upstream_auth = "api-key"`: an environment variable holding the proxy's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_api_key_env: Option<String>,
    /// Cloud: the S3 bucket Cloud exports the closed workflows of namespaces with
    /// `spec.export.enabled` to (point `[export] destination` at it to read them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_bucket: Option<String>,
    /// Cloud: the bucket's region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_region: Option<String>,
    /// Cloud: the IAM role Cloud assumes to write to the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_role: Option<String>,
    /// Cloud: the AWS account holding the bucket and the role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_aws_account_id: Option<String>,
    /// Cloud: the KMS key the bucket encrypts with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_kms_arn: Option<String>,
}

/// `[keys]`: where the key encryption keys live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// `file` (`[codec] keyring`), `pkcs11` (a hardware security module) or `aws-kms`.
    pub provider: KeyProviderKind,
    /// aws-kms: the installation's key, an alias (`alias/plinth`, which rotation points at
    /// each new key) or a key ARN.
    pub aws_kms_key: String,
    /// aws-kms: the region; the AWS credential chain's (`AWS_REGION`, profile) when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// aws-kms: an endpoint other than the region's, such as a VPC endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_kms_endpoint: Option<String>,
    /// aws-kms: aliases of namespaces' own keys start with this; by default
    /// `<aws_kms_key's alias>/ns/`, so installations with different keys never share one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_kms_namespace_alias_prefix: Option<String>,
    /// pkcs11: the module (library) that speaks to the HSM.
    pub pkcs11_module: PathBuf,
    /// pkcs11: the label of the token holding Plinth's keys.
    pub pkcs11_token: String,
    /// pkcs11: a file holding the token's user PIN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// pkcs11: an environment variable holding the PIN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkcs11_pin_env: Option<String>,
    /// Each namespace gets a key encryption key of its own as it is provisioned, recorded
    /// in its status; its data keys are wrapped by that key alone.
    pub per_namespace: bool,
    /// How long the keys of a namespace deleted with `spec.shredOnDelete` wait before they
    /// are destroyed: the window in which `plinth keys restore` keeps them.
    #[serde(with = "humantime_serde")]
    pub shred_delay: std::time::Duration,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            provider: KeyProviderKind::File,
            aws_kms_key: "alias/plinth".into(),
            aws_region: None,
            aws_kms_endpoint: None,
            aws_kms_namespace_alias_prefix: None,
            pkcs11_module: PathBuf::from(plinth_codec::SOFTHSM_MODULE),
            pkcs11_token: "plinth".into(),
            pkcs11_pin_file: None,
            pkcs11_pin_env: None,
            per_namespace: false,
            shred_delay: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl KeysConfig {
    /// aws-kms: where namespaces' own keys' aliases start.
    pub fn aws_kms_namespace_alias_prefix(&self) -> String {
        if let Some(prefix) = &self.aws_kms_namespace_alias_prefix {
            return prefix.clone();
        }
        match self.aws_kms_key.find("alias/") {
            Some(at) => format!("{}/ns/", self.aws_kms_key[at..].trim_end_matches('/')),
            None => "alias/plinth/ns/".into(),
        }
    }

    /// The token's PIN's source.
    pub fn pkcs11_pin(&self) -> anyhow::Result<plinth_identity::SecretSource> {
        secret_source(
            "[keys] pkcs11_pin",
            &self.pkcs11_pin_file,
            &self.pkcs11_pin_env,
        )
        .context("[keys] provider = \"pkcs11\" logs in to the token with its user PIN")
    }
}

/// Which provider holds the key encryption keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyProviderKind {
    /// A key ring file (mode 0600) every proxy and codec server reads.
    #[default]
    File,
    /// A hardware security module through PKCS#11: keys never leave it.
    Pkcs11,
    /// AWS KMS: keys never leave it, and every use is in CloudTrail.
    AwsKms,
}

/// How `plinth proxy` authenticates to Temporal Cloud namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamAuthKind {
    /// Client certificates the proxy issues itself from Plinth's upstream CA.
    #[default]
    Mtls,
    /// An API key of `upstream_service_account`.
    ApiKey,
}

/// Where the secret `<setting>_file` or `<setting>_env` names comes from; `setting` (such as
/// `[backend] api_key`) names both in errors.
fn secret_source(
    setting: &str,
    file: &Option<PathBuf>,
    env: &Option<String>,
) -> anyhow::Result<plinth_identity::SecretSource> {
    use plinth_identity::SecretSource;
    match (file, env) {
        (None, Some(name)) if name.trim().is_empty() => {
            anyhow::bail!("{setting}_env: empty; name the environment variable")
        }
        (Some(path), None) => Ok(SecretSource::File(path.clone())),
        (None, Some(name)) => Ok(SecretSource::Env(name.clone())),
        (None, None) => anyhow::bail!("{setting}_file or {setting}_env: required; set one"),
        (Some(_), Some(_)) => {
            anyhow::bail!("{setting}_file and {setting}_env are both set: keep one")
        }
    }
}

impl BackendConfig {
    /// The Ops API key's source.
    pub fn api_key(&self) -> anyhow::Result<plinth_identity::SecretSource> {
        secret_source("[backend] api_key", &self.api_key_file, &self.api_key_env)
            .context("Temporal Cloud needs an API key for its Ops API")
    }

    /// The proxy's key to namespaces, with `upstream_auth = "api-key"`.
    pub fn upstream_api_key(&self) -> anyhow::Result<plinth_identity::SecretSource> {
        secret_source(
            "[backend] upstream_api_key",
            &self.upstream_api_key_file,
            &self.upstream_api_key_env,
        )
        .context(
            "[backend] upstream_auth = \"api-key\": the proxy reaches namespaces with an API key",
        )
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            kind: BackendKind::SelfHosted,
            endpoint: "https://saas-api.tmprl.cloud:443".into(),
            account: String::new(),
            api_key_file: None,
            api_key_env: None,
            accepted_client_ca: None,
            api_key_auth: false,
            invite_users: false,
            codec_endpoint: None,
            operation_timeout: Duration::from_secs(600),
            namespace_cache_refresh: plinth_control::DEFAULT_REGISTRY_REFRESH,
            certificate_lifetime: Duration::from_secs(3600),
            upstream_ca: None,
            upstream_auth: UpstreamAuthKind::Mtls,
            upstream_service_account: None,
            upstream_api_key_file: None,
            upstream_api_key_env: None,
            export_bucket: None,
            export_region: None,
            export_role: None,
            export_aws_account_id: None,
            export_kms_arn: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformConfig {
    /// Group whose members administer every namespace.
    pub admin_group: String,
    /// Directory YAML (default: $PLINTH_HOME/directory.yaml).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    /// Regions a namespace may name.
    pub regions: Vec<String>,
    pub min_retention_days: i32,
    pub max_retention_days: i32,
    /// How often each namespace is checked for drift.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// How often each namespace's access is recomputed from its policies and the directory.
    #[serde(with = "humantime_serde")]
    pub access_interval: Duration,
    /// Where clients reach managed namespaces (default: [temporal] address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_endpoint: Option<String>,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        let rules = plinth_proto::ValidationRules::default();
        Self {
            admin_group: "temporal-dev".into(),
            directory: None,
            regions: rules.regions,
            min_retention_days: rules.min_retention_days,
            max_retention_days: rules.max_retention_days,
            resync_interval: Duration::from_secs(600),
            access_interval: Duration::from_secs(300),
            namespace_endpoint: None,
        }
    }
}

impl PlatformConfig {
    /// The rules resources are held to, `control_namespace` among the names none may take;
    /// on Temporal Cloud (`<name>.<account>`) its short name, which a spec names.
    pub fn rules(&self, control_namespace: &str) -> plinth_proto::ValidationRules {
        let mut reserved_names = vec![
            control_namespace.to_owned(),
            plinth_proto::TEMPORAL_SYSTEM.to_owned(),
        ];
        if let Some((short, _account)) = control_namespace.split_once('.') {
            reserved_names.push(short.to_owned());
        }
        plinth_proto::ValidationRules {
            regions: self.regions.clone(),
            min_retention_days: self.min_retention_days,
            max_retention_days: self.max_retention_days,
            reserved_names,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address of the mTLS listener.
    pub listen: String,
    /// Server certificate (default: $PLINTH_HOME/pki/server.pem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Server key (default: $PLINTH_HOME/pki/server.key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// CA bundle client certificates must chain to (default: $PLINTH_HOME/pki/ca.pem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz (plain HTTP).
    pub metrics_listen: String,
    /// Threads serving calls. One thread handles thousands of calls a second at the least CPU
    /// per call; more spread client connections over cores (a connection's calls share one).
    pub threads: usize,
    /// How often the namespace table is re-read from the control plane.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Send every namespace here instead of the endpoint its status names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Reach upstreams over TLS (implied by any other upstream_* certificate setting).
    pub upstream_tls: bool,
    /// CA bundle of the upstreams' certificates (default: the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<PathBuf>,
    /// The proxy's client certificate for upstreams; re-read when the file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_cert: Option<PathBuf>,
    /// Its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_key: Option<PathBuf>,
    /// Name the upstreams' certificates are checked against (default: the endpoint's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_server_name: Option<String>,
    /// What to do with an RPC missing from the proxy's reviewed table.
    pub unknown_rpcs: UnknownRpcs,
    /// The largest request message, before and after decompression; larger ones are refused
    /// with RESOURCE_EXHAUSTED before they are read whole.
    pub max_message_bytes: usize,
    /// Calls one client connection may have open at once (each long poll holds one).
    pub max_streams_per_connection: u32,
    /// Request bytes the proxy holds at most while it reads, decompresses and seals them.
    pub max_buffered_bytes: usize,
    /// The same, for one client connection.
    pub max_buffered_bytes_per_connection: usize,
    /// TLS handshakes under way at once; a connection past it is dropped.
    pub max_handshakes: usize,
    /// The same, from one IP address.
    pub max_handshakes_per_peer: usize,
    /// A TLS handshake not finished within this is dropped.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A request whose body has not arrived whole within this is refused.
    #[serde(with = "humantime_serde")]
    pub request_body_timeout: Duration,
    /// Calls other than long polls in flight at once; more are refused with
    /// RESOURCE_EXHAUSTED instead of queueing.
    pub max_concurrent_calls: usize,
    /// The same, of one caller (the identity its certificate names).
    pub max_calls_per_identity: usize,
    /// Long polls (a worker's task queue polls, update polls) waiting at once.
    pub max_long_polls: usize,
    /// The same, of one caller.
    pub max_long_polls_per_identity: usize,
    /// On SIGTERM, how long /readyz fails while connections are still accepted, so a load
    /// balancer takes the proxy out first: its health-check interval times its failure count.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// Then, how long calls in flight have to finish after GOAWAY; long polls still waiting
    /// then are answered empty (workers poll again elsewhere), other calls UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// What the proxy does with an RPC it does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownRpcs {
    /// Refused with UNIMPLEMENTED: it can be neither authorized nor encrypted.
    #[default]
    Refuse,
    /// Forwarded as a write, its payloads unencrypted.
    Forward,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let door = plinth_proxy::DoorSettings::default();
        Self {
            listen: "127.0.0.1:7443".into(),
            cert: None,
            key: None,
            client_ca: None,
            metrics_listen: "127.0.0.1:7449".into(),
            threads: 1,
            refresh_interval: Duration::from_secs(10),
            upstream: None,
            upstream_tls: false,
            upstream_ca: None,
            upstream_cert: None,
            upstream_key: None,
            upstream_server_name: None,
            unknown_rpcs: UnknownRpcs::Refuse,
            max_message_bytes: door.max_message_bytes,
            max_streams_per_connection: door.max_streams_per_connection,
            max_buffered_bytes: door.max_buffered_bytes,
            max_buffered_bytes_per_connection: door.max_buffered_bytes_per_connection,
            max_handshakes: door.max_handshakes,
            max_handshakes_per_peer: door.max_handshakes_per_peer,
            handshake_timeout: door.handshake_timeout,
            request_body_timeout: door.request_body_timeout,
            max_concurrent_calls: door.limits.max_concurrent_calls,
            max_calls_per_identity: door.limits.max_calls_per_identity,
            max_long_polls: door.limits.max_long_polls,
            max_long_polls_per_identity: door.limits.max_long_polls_per_identity,
            shutdown_delay: door.shutdown_delay,
            shutdown_grace: door.shutdown_grace,
        }
    }
}

impl ProxyConfig {
    /// What the front door accepts, as configured; a limit that would refuse every call or a
    /// shutdown no orchestrator waits for is an error naming its setting.
    pub fn door_settings(&self) -> anyhow::Result<plinth_proxy::DoorSettings> {
        for (key, value) in [
            ("max_concurrent_calls", self.max_concurrent_calls),
            ("max_calls_per_identity", self.max_calls_per_identity),
            ("max_long_polls", self.max_long_polls),
            (
                "max_long_polls_per_identity",
                self.max_long_polls_per_identity,
            ),
        ] {
            anyhow::ensure!(value > 0, "[proxy] {key}: must be at least 1");
        }
        check_shutdown("proxy", self.shutdown_delay, self.shutdown_grace)?;
        Ok(plinth_proxy::DoorSettings {
            forward_unknown_rpcs: self.unknown_rpcs == UnknownRpcs::Forward,
            max_message_bytes: self.max_message_bytes,
            max_streams_per_connection: self.max_streams_per_connection,
            max_buffered_bytes: self.max_buffered_bytes,
            max_buffered_bytes_per_connection: self.max_buffered_bytes_per_connection,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_peer: self.max_handshakes_per_peer,
            handshake_timeout: self.handshake_timeout,
            request_body_timeout: self.request_body_timeout,
            limits: plinth_proxy::CallLimits {
                max_concurrent_calls: self.max_concurrent_calls,
                max_calls_per_identity: self.max_calls_per_identity,
                max_long_polls: self.max_long_polls,
                max_long_polls_per_identity: self.max_long_polls_per_identity,
            },
            shutdown_delay: self.shutdown_delay,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// Bounds of `shutdown_delay` and `shutdown_grace`: a long poll lasts about a minute.
const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(300);
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(300);

/// `[section] shutdown_delay` and `shutdown_grace` within their bounds.
fn check_shutdown(section: &str, delay: Duration, grace: Duration) -> anyhow::Result<()> {
    for (key, value, max) in [
        ("shutdown_delay", delay, MAX_SHUTDOWN_DELAY),
        ("shutdown_grace", grace, MAX_SHUTDOWN_GRACE),
    ] {
        anyhow::ensure!(
            value <= max,
            "[{section}] {key}: {} is longer than the {} allowed",
            humantime::format_duration(value),
            humantime::format_duration(max)
        );
    }
    Ok(())
}

impl CodecConfig {
    /// How the codec server stops, as configured.
    pub fn drain(&self) -> anyhow::Result<plinth_codec::server::Drain> {
        check_shutdown("codec", self.shutdown_delay, self.shutdown_grace)?;
        Ok(plinth_codec::server::Drain {
            delay: self.shutdown_delay,
            grace: self.shutdown_grace,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodecConfig {
    /// Address of the codec server.
    pub listen: String,
    /// Browser origins allowed to call it (exact match; credentials are allowed).
    pub allowed_origins: Vec<String>,
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Serve HTTPS (client certificates optional, verified when presented).
    pub tls: bool,
    /// Key ring of key encryption keys (default: $PLINTH_HOME/keys/keyring.json).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyring: Option<PathBuf>,
    /// A namespace's data key seals nothing more after this long.
    #[serde(with = "humantime_serde")]
    pub data_key_max_age: Duration,
    /// ... or after sealing this many payloads.
    pub data_key_max_uses: u64,
    /// An unwrapped data key is kept this long for opening, then unwrapped again.
    #[serde(with = "humantime_serde")]
    pub data_key_cache_lifetime: Duration,
    /// Payloads larger than this many bytes are compressed before sealing.
    pub compress_above: usize,
    /// JWKS file or http(s) URL that bearer tokens are verified against (default: no tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Required `iss` of bearer tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of bearer tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    /// The claim of a bearer token holding the caller's e-mail address; `email` must come
    /// with `email_verified: true`.
    pub jwt_identity_claim: String,
    /// On SIGTERM, how long /readyz fails while requests are still served, so a load balancer
    /// takes the server out first.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// Then, how long requests in flight have to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for CodecConfig {
    fn default() -> Self {
        let data_keys = plinth_codec::DataKeyPolicy::default();
        Self {
            listen: "127.0.0.1:7280".into(),
            allowed_origins: vec![
                "http://127.0.0.1:8233".into(),
                "http://localhost:8233".into(),
            ],
            max_body_bytes: 4 << 20,
            tls: true,
            keyring: None,
            data_key_max_age: data_keys.max_age,
            data_key_max_uses: data_keys.max_uses,
            data_key_cache_lifetime: data_keys.cache_lifetime,
            compress_above: plinth_codec::CodecSettings::default().compress_above,
            jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_identity_claim: "email".into(),
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl CodecConfig {
    /// The codec's settings, with `[keys]` deciding whose key wraps a namespace's data keys.
    pub fn settings(&self, keys: &KeysConfig) -> plinth_codec::CodecSettings {
        plinth_codec::CodecSettings {
            data_keys: plinth_codec::DataKeyPolicy {
                max_age: self.data_key_max_age,
                max_uses: self.data_key_max_uses,
                cache_lifetime: self.data_key_cache_lifetime,
                per_namespace: keys.per_namespace,
            },
            compress_above: self.compress_above,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Platform API `host:port` (default: the running `plinth dev`, else 127.0.0.1:7443).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Server name to verify (default: the address's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Client certificate (default: [dev] user's, issued by `plinth dev`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// CA bundle of the server certificate (default: $PLINTH_HOME/pki/ca.pem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// The codec server's URL, which `plinth history get` decrypts exported histories with
    /// (default: the running `plinth dev`'s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
}

/// `[worker]`: the worker's own endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Address of the worker's /metrics (plain HTTP).
    pub metrics_listen: String,
    /// On SIGTERM the worker stops polling and lets running tasks finish for this long, then
    /// exits, abandoning what still runs (Temporal retries those activities when their
    /// timeouts expire).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            metrics_listen: "127.0.0.1:7450".into(),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// `[audit]`: where the audit trail is shipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Time between shipments to each destination.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Destinations by name (lowercase letters, digits and dashes): object storage URLs,
    /// `s3://bucket/prefix`, `gs://…`, `az://…` or `file:///…`. None given: `local`, the
    /// `archive` directory under PLINTH_HOME.
    pub destinations: std::collections::BTreeMap<String, String>,
    /// The destination `plinth audit` reads (default: the first by name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_from: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            destinations: std::collections::BTreeMap::new(),
            read_from: None,
        }
    }
}

impl AuditConfig {
    /// The destinations, `local` under `home` when none are given; a name that cannot be a
    /// workflow id's part or a URL that names no store is refused naming it.
    pub fn destinations(
        &self,
        home: &crate::home::Home,
    ) -> anyhow::Result<std::collections::BTreeMap<String, plinth_archive::Archive>> {
        let mut given = self.destinations.clone();
        if given.is_empty() {
            let dir = home.archive_dir();
            given.insert(
                "local".into(),
                plinth_archive::directory_url(&dir)
                    .ok_or_else(|| anyhow::anyhow!("{}: not an absolute path", dir.display()))?,
            );
        }
        let mut destinations = std::collections::BTreeMap::new();
        for (name, url) in given {
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                anyhow::bail!(
                    "[audit] destinations: {name:?} is not a name: use 1 to 63 lowercase \
                     letters, digits and dashes"
                );
            }
            let archive = plinth_archive::Archive::open(&url)
                .map_err(|e| anyhow::anyhow!("[audit] destinations.{name}: {e}"))?;
            destinations.insert(name, archive);
        }
        Ok(destinations)
    }

    /// Which of `destinations` (as [`Self::destinations`] opened them) `plinth audit` reads.
    pub fn read_from(
        &self,
        destinations: &std::collections::BTreeMap<String, plinth_archive::Archive>,
    ) -> anyhow::Result<plinth_archive::Archive> {
        match &self.read_from {
            Some(name) => destinations.get(name).cloned().ok_or_else(|| {
                anyhow::anyhow!("[audit] read_from: {name:?} is not in [audit] destinations")
            }),
            None => destinations
                .values()
                .next()
                .cloned()
                .context("[audit] destinations: none"),
        }
    }
}

/// `[export]`: where closed workflows' histories are exported, and how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// A request nobody answered ends after this long.
    #[serde(with = "humantime_serde")]
    pub request_ttl: Duration,
    /// The longest grant a person may ask for.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Pending requests and live grants one person may have at once.
    pub max_open_per_person: usize,
}

impl Default for AccessConfig {
    fn default() -> Self {
        let defaults = plinth_api::RequestSettings::default();
        Self {
            request_ttl: defaults.request_ttl,
            max_duration: defaults.max_duration,
            max_open_per_person: defaults.max_open_per_person,
        }
    }
}

impl AccessConfig {
    pub fn settings(&self) -> plinth_api::RequestSettings {
        plinth_api::RequestSettings {
            request_ttl: self.request_ttl,
            max_duration: self.max_duration,
            max_open_per_person: self.max_open_per_person,
        }
    }
}

/// Where people and groups are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectorySource {
    /// The YAML file `[platform] directory` names, followed on disk.
    #[default]
    File,
    /// An LDAP server, as `[directory.ldap]` says.
    Ldap,
    /// What identity providers push to the proxy's SCIM service (`[directory.scim]`),
    /// kept in the control plane.
    Scim,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    pub source: DirectorySource,
    /// How often LDAP is read again (a file is checked every few seconds).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// The smallest share (0 to 1) of the people in force that a new read of LDAP may list
    /// and be taken up: fewer is more likely an outage or a wrong filter than departures.
    pub min_share: f64,
    /// Used with `source = "ldap"`.
    pub ldap: plinth_control::directory::LdapSettings,
    /// Used with `source = "scim"`.
    pub scim: ScimConfig,
}

/// The SCIM 2.0 service `plinth proxy` serves with `[directory] source = "scim"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScimConfig {
    /// Address of its HTTPS listener (the proxy's server certificate; no client certificate).
    pub listen: String,
    /// File holding the bearer token clients present (at least 32 characters; default
    /// `$PLINTH_HOME/scim-token`, which `plinth dev` writes).
    pub token_file: Option<PathBuf>,
}

impl Default for ScimConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7444".into(),
            token_file: None,
        }
    }
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            source: DirectorySource::File,
            refresh_interval: Duration::from_secs(300),
            min_share: 0.5,
            ldap: Default::default(),
            scim: Default::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Time between exports of a namespace.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a closed workflow may take to show in Temporal's visibility: each export
    /// takes the workflows closed at least this long ago.
    #[serde(with = "humantime_serde")]
    pub visibility_lag: Duration,
    /// Object storage URL (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///…`); default:
    /// the `archive` directory under PLINTH_HOME. On Temporal Cloud, the bucket Cloud's
    /// export sink writes to, which Plinth reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            visibility_lag: Duration::from_secs(300),
            destination: None,
        }
    }
}

impl ExportConfig {
    /// The destination, opened; a URL that names no store is refused naming the key.
    pub fn destination(&self, home: &crate::home::Home) -> anyhow::Result<plinth_archive::Archive> {
        let url = match &self.destination {
            Some(url) => url.clone(),
            None => {
                let dir = home.archive_dir();
                plinth_archive::directory_url(&dir)
                    .ok_or_else(|| anyhow::anyhow!("{}: not an absolute path", dir.display()))?
            }
        };
        plinth_archive::Archive::open(&url)
            .map_err(|e| anyhow::anyhow!("[export] destination: {e}"))
    }
}

/// `[metrics]`: what the worker scrapes and where the samples go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Time between scrapes of a target, unless the target sets its own.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A scrape without a whole answer by then is abandoned and counted as failed.
    #[serde(with = "humantime_serde")]
    pub scrape_timeout: Duration,
    /// Prometheus remote-write endpoint the samples are sent to (required with targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_write_url: Option<String>,
    /// File holding the remote-write bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_write_token_file: Option<PathBuf>,
    /// Environment variable holding the remote-write bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_write_token_env: Option<String>,
    /// Endpoints to scrape.
    pub targets: Vec<MetricsTarget>,
    /// Series not to store.
    pub drop: Vec<MetricsDropRule>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(20),
            remote_write_url: None,
            remote_write_token_file: None,
            remote_write_token_env: None,
            targets: Vec::new(),
            drop: Vec::new(),
        }
    }
}

/// `[[metrics.targets]]`: a Temporal Cloud OpenMetrics endpoint or any Prometheus text one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsTarget {
    /// Names the target's workflow (`metrics/<name>`) and its series' `plinth_target` label.
    pub name: String,
    /// The endpoint, e.g. `https://metrics.temporal.io/v1/metrics`.
    pub url: String,
    /// Temporal Cloud's endpoint: each scrape asks only for the Ready namespaces Plinth manages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub temporal_cloud: bool,
    /// File holding the bearer token (a Temporal Cloud API key with the metrics-read role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Time between scrapes (default: `[metrics] interval`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
}

/// `[[metrics.drop]]`: series whose metric name matches `metric` (a regex matching the whole
/// name), and, with `label`, whose value of that label matches `matches`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsDropRule {
    /// Regex over metric names.
    pub metric: String,
    /// A label narrowing the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Regex over that label's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// Loads defaults, then `file` (when given and present or explicitly requested), then the
    /// environment.
    pub fn load(file: Option<&Path>, required: bool) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, required, &env)
    }

    fn load_with_env(
        file: Option<&Path>,
        required: bool,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) if required || path.exists() => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.to_owned(),
                    message: e.message().to_owned() + &location(&text, e.span()),
                })?
            }
            _ => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    /// Applies `PLINTH_<SECTION>_<KEY>` overrides for every key of [`Config::every_key`].
    fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        let toml::Value::Table(mut root) =
            toml::Value::try_from(&*self).expect("config serializes")
        else {
            unreachable!("config serializes to a table")
        };
        let mut changed = None;
        for (section, keys) in Self::every_key() {
            let toml::Value::Table(keys) = keys else {
                continue;
            };
            for (key, template) in keys {
                let var = format!("{ENV_PREFIX}{section}_{key}").to_ascii_uppercase();
                if let Some((_, raw)) = env.iter().find(|(k, _)| *k == var) {
                    let table = root
                        .entry(section.clone())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(table) = table {
                        table.insert(key, env_value(raw, &template));
                    }
                    changed = Some(var);
                }
            }
        }
        if let Some(var) = changed {
            *self = toml::Value::Table(root)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Env {
                    var,
                    message: e.message().to_owned(),
                })?;
        }
        Ok(())
    }

    /// Every top-level key of every section, optional ones included (absent from the
    /// defaults), so each can be overridden from the environment.
    fn every_key() -> toml::Table {
        let mut all = Config::default();
        let some_path = || Some(PathBuf::new());
        all.platform.directory = some_path();
        all.platform.namespace_endpoint = Some(String::new());
        all.backend.api_key_file = some_path();
        all.backend.api_key_env = Some(String::new());
        all.backend.accepted_client_ca = some_path();
        all.backend.codec_endpoint = Some(String::new());
        all.backend.upstream_ca = some_path();
        all.backend.upstream_service_account = Some(String::new());
        all.backend.upstream_api_key_file = some_path();
        all.backend.upstream_api_key_env = Some(String::new());
        all.backend.export_bucket = Some(String::new());
        all.backend.export_region = Some(String::new());
        all.backend.export_role = Some(String::new());
        all.backend.export_aws_account_id = Some(String::new());
        all.backend.export_kms_arn = Some(String::new());
        all.proxy.cert = some_path();
        all.proxy.key = some_path();
        all.proxy.client_ca = some_path();
        all.proxy.upstream = Some(String::new());
        all.proxy.upstream_ca = some_path();
        all.proxy.upstream_cert = some_path();
        all.proxy.upstream_key = some_path();
        all.proxy.upstream_server_name = Some(String::new());
        all.codec.keyring = some_path();
        all.audit.read_from = Some(String::new());
        all.keys.aws_region = Some(String::new());
        all.keys.aws_kms_endpoint = Some(String::new());
        all.keys.aws_kms_namespace_alias_prefix = Some(String::new());
        all.keys.pkcs11_pin_file = some_path();
        all.keys.pkcs11_pin_env = Some(String::new());
        all.codec.jwks = Some(String::new());
        all.codec.jwt_issuer = Some(String::new());
        all.codec.jwt_audience = Some(String::new());
        all.client = ClientConfig {
            address: Some(String::new()),
            server_name: Some(String::new()),
            cert: some_path(),
            key: some_path(),
            ca: some_path(),
            codec: Some(String::new()),
        };
        all.export.destination = Some(String::new());
        match toml::Value::try_from(all).expect("config serializes") {
            toml::Value::Table(table) => table,
            _ => unreachable!("config serializes to a table"),
        }
    }
}

/// Reads an environment value as the type of the default it replaces.
fn env_value(raw: &str, default: &toml::Value) -> toml::Value {
    match default {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(|s| toml::Value::String(s.trim().to_owned()))
                .collect(),
        ),
        _ => raw
            .parse::<toml::Value>()
            .ok()
            .or_else(|| {
                format!("v = {raw}")
                    .parse::<toml::Table>()
                    .ok()?
                    .remove("v")
            })
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_control_namespace_reserves_its_short_name_for_specs() {
        let rules = PlatformConfig::default().rules("plinth.acct1");
        let spec = plinth_proto::v1::NamespaceSpec {
            name: "plinth".into(),
            owner: "team".into(),
            regions: rules.regions.clone(),
            retention_days: 7,
            ..Default::default()
        };
        let resource = plinth_proto::namespace_resource("p", "payments", spec);
        let refused = plinth_proto::validate_namespace(&resource, &rules, &|_| true).unwrap_err();
        assert_eq!(refused.field, "spec.name", "{refused}");
        assert!(refused.to_string().contains("reserved"), "{refused}");
    }

    #[test]
    fn namespace_key_aliases_follow_the_installation_key_unless_set() {
        let mut keys = KeysConfig::default();
        assert_eq!(keys.aws_kms_namespace_alias_prefix(), "alias/plinth/ns/");
        keys.aws_kms_key = "arn:aws:kms:eu-central-1:123456789012:alias/staging".into();
        assert_eq!(keys.aws_kms_namespace_alias_prefix(), "alias/staging/ns/");
        keys.aws_kms_key = "arn:aws:kms:eu-central-1:123456789012:key/1234".into();
        assert_eq!(keys.aws_kms_namespace_alias_prefix(), "alias/plinth/ns/");
        keys.aws_kms_namespace_alias_prefix = Some("alias/mine/".into());
        assert_eq!(keys.aws_kms_namespace_alias_prefix(), "alias/mine/");
    }

    #[test]
    fn example_file_documents_the_defaults() {
        let example = include_str!("../plinth.example.toml");
        let parsed: Config = toml::from_str(example).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plinth.toml");
        std::fs::write(&path, "[dev]\ngrpc_port = 9000\nuser = \"a@example.com\"\n").unwrap();
        let env = vec![
            ("PLINTH_DEV_GRPC_PORT".to_owned(), "9100".to_owned()),
            ("PLINTH_LOG_FORMAT".to_owned(), "json".to_owned()),
            ("PLINTH_PKI_CLIENT_CERT_TTL".to_owned(), "1h".to_owned()),
        ];
        let config = Config::load_with_env(Some(&path), true, &env).unwrap();
        assert_eq!(config.dev.grpc_port, 9100);
        assert_eq!(config.dev.user, "a@example.com");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.pki.client_cert_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plinth.toml");
        std::fs::write(&path, "[dev]\n\ngrpc_prot = 1\n").unwrap();
        let err = Config::load_with_env(Some(&path), true, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpc_prot") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn optional_keys_can_come_from_the_environment() {
        let env = vec![
            ("PLINTH_CLIENT_CERT".to_owned(), "/tmp/me.pem".to_owned()),
            (
                "PLINTH_PLATFORM_DIRECTORY".to_owned(),
                "/etc/dir.yaml".to_owned(),
            ),
            ("PLINTH_KEYS_AWS_REGION".to_owned(), "eu-west-1".to_owned()),
        ];
        let config = Config::load_with_env(None, false, &env).unwrap();
        assert_eq!(config.client.cert, Some(PathBuf::from("/tmp/me.pem")));
        assert_eq!(config.keys.aws_region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            config.platform.directory,
            Some(PathBuf::from("/etc/dir.yaml"))
        );
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let env = vec![("PLINTH_DEV_GRPC_PORT".to_owned(), "seventy".to_owned())];
        let err = Config::load_with_env(None, false, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PLINTH_DEV_GRPC_PORT"), "{err}");
    }

    #[test]
    fn missing_required_file_is_an_error() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/plinth.toml")), true, &[]);
        assert!(matches!(err, Err(ConfigError::Read { .. })));
    }
}
