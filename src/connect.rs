//! Where a Plinth process finds Temporal and its control plane: flags, a `temporal.toml`
//! profile, or plinth.toml's `[temporal]`.

use std::path::PathBuf;

use plinth_control::ControlSettings;
use temporalio_client::ConnectionOptions;
use temporalio_common::envconfig::{
    ClientConfigProfile, ClientConfigTLS, ConfigError, DataSource, LoadClientConfigProfileOptions,
    load_client_config_profile,
};

use crate::config::TemporalConfig;

/// Where a Plinth process connects. Precedence: flags, then a `temporal.toml` profile with its
/// `TEMPORAL_*` variables (when `--config-file`/`--profile` or `TEMPORAL_CONFIG_FILE`/
/// `TEMPORAL_PROFILE` select one), else `[temporal]` of plinth.toml with `TEMPORAL_*` on top.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    /// Temporal frontend, host:port.
    #[arg(long)]
    pub address: Option<String>,
    /// Control-plane namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Task queue to poll.
    #[arg(long)]
    pub task_queue: Option<String>,
    /// CA bundle of the server certificate (enables TLS).
    #[arg(long)]
    pub tls_ca_cert: Option<PathBuf>,
    /// Client certificate for mTLS (enables TLS).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client private key for mTLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Server name to verify.
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// A standard temporal.toml file to read the profile from.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Profile name inside the temporal.toml file.
    #[arg(long)]
    pub profile: Option<String>,
}

impl ConnectArgs {
    /// The connection options, the `host:port` they dial, and what to poll.
    pub fn resolve(
        &self,
        config: &TemporalConfig,
    ) -> anyhow::Result<(ConnectionOptions, String, ControlSettings)> {
        let mut profile = self.base_profile(config)?;
        if let Some(address) = &self.address {
            profile.address = Some(address.clone());
        }
        if let Some(namespace) = &self.namespace {
            profile.namespace = Some(namespace.clone());
        }
        let wants_tls = self.tls_ca_cert.is_some() || self.tls_cert.is_some();
        if wants_tls || self.tls_server_name.is_some() {
            let tls = profile.tls.get_or_insert_with(ClientConfigTLS::default);
            tls.disabled = Some(false);
            if let Some(ca) = &self.tls_ca_cert {
                tls.server_ca_cert = Some(path_source(ca));
            }
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls.client_cert = Some(path_source(cert));
                tls.client_key = Some(path_source(key));
            }
            if let Some(name) = &self.tls_server_name {
                tls.server_name = Some(name.clone());
            }
        }
        let settings = ControlSettings {
            namespace: profile
                .namespace
                .clone()
                .unwrap_or_else(|| config.namespace.clone()),
            task_queue: self
                .task_queue
                .clone()
                .unwrap_or_else(|| config.task_queue.clone()),
        };
        let address = profile
            .address
            .clone()
            .unwrap_or_else(|| config.address.clone());
        let options = ConnectionOptions::try_from(profile)
            .map_err(|e| config_error("Temporal connection", e))?;
        Ok((options, address, settings))
    }

    fn base_profile(&self, config: &TemporalConfig) -> anyhow::Result<ClientConfigProfile> {
        let env_selects = ["TEMPORAL_CONFIG_FILE", "TEMPORAL_PROFILE"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if self.config_file.is_some() || self.profile.is_some() || env_selects {
            let options = LoadClientConfigProfileOptions::builder()
                .maybe_config_source(self.config_file.as_deref().map(path_source))
                .maybe_config_file_profile(self.profile.clone())
                .config_file_strict(true)
                .build();
            return load_client_config_profile(options, None)
                .map_err(|e| config_error("temporal.toml profile", e));
        }
        let mut profile = ClientConfigProfile::default();
        profile.address = Some(config.address.clone());
        profile.namespace = Some(config.namespace.clone());
        if let Some(tls) = &config.tls {
            let mut t = ClientConfigTLS::default();
            t.server_ca_cert = tls.server_ca_cert.as_deref().map(path_source);
            t.client_cert = tls.client_cert.as_deref().map(path_source);
            t.client_key = tls.client_key.as_deref().map(path_source);
            t.server_name = tls.server_name.clone();
            profile.tls = Some(t);
        }
        profile
            .load_from_env(None)
            .map_err(|e| config_error("TEMPORAL_* environment variables", e))?;
        Ok(profile)
    }
}

// The SDK's error is not Send, so it cannot be wrapped as a source.
fn config_error(what: &str, error: ConfigError) -> anyhow::Error {
    anyhow::anyhow!("{what}: {error}")
}

fn path_source(path: &std::path::Path) -> DataSource {
    DataSource::Path(path.display().to_string())
}
