//! `plinth proxy`: the mTLS front door serving the platform API.

use anyhow::Context;
use plinth_identity::ClientVerifier;
use plinth_proxy::PlatformApi;
use temporalio_client::{Client, ClientOptions};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::home::Home;
use crate::signals::shutdown_signal;
use crate::worker::ConnectArgs;

/// Where to listen, and the control plane to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Address of the mTLS listener (overrides [proxy] listen).
    #[arg(long)]
    listen: Option<String>,
    #[command(flatten)]
    temporal: ConnectArgs,
}

/// The server certificate and client CA of `[proxy]` (defaults: `$PLINTH_HOME/pki`), as a
/// TLS configuration offering `alpn`, with client certificates `required` or optional.
pub fn server_tls(
    config: &Config,
    home: &Home,
    required: bool,
    alpn: &[u8],
) -> anyhow::Result<(std::sync::Arc<rustls::ServerConfig>, ClientVerifier)> {
    let proxy = &config.proxy;
    let read = |path: Option<std::path::PathBuf>, default: std::path::PathBuf, key: &str| {
        let path = path.unwrap_or(default);
        std::fs::read(&path).with_context(|| format!("[proxy] {key}: {}", path.display()))
    };
    let ca = read(proxy.client_ca.clone(), home.ca_cert(), "client_ca")?;
    let cert = read(proxy.cert.clone(), home.server_cert(), "cert")?;
    let key = read(proxy.key.clone(), home.server_key(), "key")?;
    let verifier = ClientVerifier::new(&ca, crate::pki::trust_domain(&config.pki)?)
        .context("[proxy] client_ca")?;
    let tls = plinth_identity::server_config(&cert, &key, &verifier, required, &[alpn])?;
    Ok((tls, verifier))
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(config: &Config, home: &Home, args: &ProxyArgs) -> anyhow::Result<()> {
    let (options, address, settings) = args.temporal.resolve(&config.temporal)?;
    let connection = plinth_worker::connect(options).await?;
    // Worker and proxy start independently: either may be first to prepare the control plane.
    plinth_worker::ensure_namespace(&connection, &settings.namespace).await?;
    let platform = crate::platform::settings(config, home, &connection, &address)?;
    let client = Client::new(
        connection,
        ClientOptions::new(settings.namespace.clone()).build(),
    )
    .context("control-plane client")?;
    let api = PlatformApi::new(
        client,
        settings.task_queue,
        platform.backend,
        platform.directory,
        platform.rules,
        platform.admin_group,
    );
    let (tls, verifier) = server_tls(config, home, true, b"h2")?;
    let proxy = &config.proxy;
    let listen = args.listen.clone().unwrap_or_else(|| proxy.listen.clone());
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    plinth_proxy::serve(listener, tls, verifier, api, shutdown_signal()).await?;
    tracing::info!("proxy stopped");
    Ok(())
}
