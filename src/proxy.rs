//! `plinth proxy`: the mTLS front door serving the platform API and Temporal's services.

use anyhow::Context;
use plinth_api::{AuditReader, HistoryReader, PlatformApi};
use plinth_control::{AccessLists, ControlPlane};
use plinth_identity::ClientVerifier;
use plinth_identity::{CertificateAuthority, Identity, Secret, TrustDomain};
use plinth_proxy::{
    Budgets, ClientIdentity, FrontDoor, KeyCheck, ProxyMetrics, Routes, SelfIssued, TemporalHealth,
    UpstreamTls, Upstreams,
};
use tokio::net::TcpListener;

use crate::config::{Config, UpstreamAuthKind};
use crate::connect::ConnectArgs;
use crate::home::Home;
use crate::signals::shutdown_signal;

/// Where to listen, and the control plane to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Address of the mTLS listener (overrides [proxy] listen).
    #[arg(long)]
    listen: Option<String>,
    /// Address of /metrics and the health checks (overrides [proxy] metrics_listen).
    #[arg(long)]
    metrics_listen: Option<String>,
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
    let door_settings = config.proxy.door_settings()?;
    let (mut options, address, settings) = args.temporal.resolve(&config.temporal)?;
    // The proxy's own calls (routes, access lists) are small and frequent: gzip would cost
    // the proxy CPU it spends on every forwarded call (a few percent at low call rates).
    options.grpc_compression = temporalio_client::GrpcCompression::None;
    let connection = plinth_control::connect(options).await?;
    let (platform, client, control) =
        crate::platform::settings(config, home, &connection, &address, &settings).await?;
    let access: std::sync::Arc<dyn plinth_control::AccessCheck> =
        std::sync::Arc::new(AccessLists::new(platform.backend.clone()));
    let destinations = config.audit.destinations(home)?;
    let trail = config.audit.read_from(&destinations)?;
    let audit = audit_sender(control.clone(), &destinations, "proxy");
    let api = PlatformApi::new(
        client.clone(),
        settings.task_queue.clone(),
        platform.backend.clone(),
        platform.directory,
        platform.rules,
        platform.admin_group,
    )
    .with_request_settings(config.access.settings())
    .with_audit(
        AuditReader::new(trail, access.clone()),
        destinations.keys().cloned().collect(),
    )
    .with_histories(HistoryReader::new(
        config.export.destination(home)?,
        access.clone(),
        platform.backend.clone(),
    ));
    if let Some(check) = ProxyKeyCheck::of(config)? {
        check.check().await.map_err(anyhow::Error::msg)?;
    }
    let proxy = &config.proxy;
    let temporal = std::sync::Arc::new(TemporalHealth::new(
        control.clone(),
        address.clone(),
        config.backend.kind == crate::config::BackendKind::SelfHosted,
    ));
    let default_upstream = proxy.upstream.clone().unwrap_or(address);
    let door = std::sync::Arc::new(FrontDoor {
        codec: crate::codec::load(config, home)?,
        access,
        admins: api.admins().clone(),
        routes: std::sync::Arc::new(Routes::new(control.clone(), proxy.upstream.clone())),
        upstreams: std::sync::Arc::new(upstreams(config, home, &default_upstream)?),
        default_upstream,
        metrics: std::sync::Arc::new(ProxyMetrics::default()),
        nexus: Default::default(),
        budgets: Budgets::new(
            proxy.max_buffered_bytes,
            proxy.max_buffered_bytes_per_connection,
        ),
        settings: door_settings,
        audit,
        temporal,
        draining: Default::default(),
    });
    let (tls, verifier) = server_tls(config, home, true, b"h2")?;
    let (listener, _) = bind(args.listen.as_ref(), &proxy.listen, "[proxy] listen").await?;
    let (monitoring, metrics_listen) = bind(
        args.metrics_listen.as_ref(),
        &proxy.metrics_listen,
        "[proxy] metrics_listen",
    )
    .await?;
    tracing::info!(address = %metrics_listen, "proxy metrics and health listening (HTTP)");
    let app = plinth_proxy::monitoring(door.clone());
    let monitor = tokio::spawn(async move { axum::serve(monitoring, app).await });
    let scim = match config.directory.source {
        crate::config::DirectorySource::Scim => {
            Some(crate::scim::serve(config, home, control, api.admins().clone()).await?)
        }
        _ => None,
    };
    plinth_proxy::serve(
        listener,
        tls,
        verifier,
        plinth_proto::v1::platform_service_server::PlatformServiceServer::new(api),
        door,
        proxy.refresh_interval,
        shutdown_signal(),
    )
    .await;
    monitor.abort();
    if let Some(scim) = scim {
        scim.abort();
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// Listens on the address a flag gives, else the configured one (`key` names it in errors);
/// returns the listener and its address.
pub async fn bind(
    flag: Option<&String>,
    configured: &str,
    key: &str,
) -> anyhow::Result<(TcpListener, String)> {
    let address = flag.map_or(configured, String::as_str).to_owned();
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("{key}: cannot listen on {address}"))?;
    Ok((listener, address))
}

/// Clients of the platform's Temporal (`own`) as `[proxy] upstream_*` configures them and,
/// on Temporal Cloud, of its namespaces with a certificate the proxy issues itself or the
/// API key `[backend] upstream_auth` names.
fn upstreams(config: &Config, home: &Home, own: &str) -> anyhow::Result<Upstreams> {
    let upstreams = Upstreams::new(upstream_tls(&config.proxy)?).context("[proxy] upstream")?;
    if config.backend.kind != crate::config::BackendKind::Cloud {
        return Ok(upstreams);
    }
    let backend = &config.backend;
    let tls = match backend.upstream_auth {
        UpstreamAuthKind::Mtls => UpstreamTls {
            ca: backend.upstream_ca.clone(),
            client: Some(ClientIdentity::Issued(std::sync::Arc::new(self_issued(
                config, home,
            )?))),
            server_name: None,
            api_key: None,
            api_key_check: None,
        },
        UpstreamAuthKind::ApiKey => UpstreamTls {
            ca: backend.upstream_ca.clone(),
            client: None,
            server_name: None,
            api_key: Some(std::sync::Arc::new(Secret::new(
                "[backend] upstream_api_key",
                backend.upstream_api_key()?,
            ))),
            api_key_check: ProxyKeyCheck::of(config)?
                .map(|check| std::sync::Arc::new(check) as std::sync::Arc<dyn KeyCheck>),
        },
    };
    upstreams
        .with_managed(own.to_owned(), tls)
        .context("[backend] Temporal Cloud namespaces")
}

/// The check of the API key the proxy reaches Cloud namespaces with, at start and each
/// time its file changes: the key of `[backend] upstream_service_account` and no broader.
#[derive(Debug)]
struct ProxyKeyCheck {
    ops_endpoint: String,
    key: plinth_identity::SecretSource,
    service_account: String,
}

impl ProxyKeyCheck {
    /// The check `[backend]` asks for; `None` unless the proxy uses an API key on Cloud.
    fn of(config: &Config) -> anyhow::Result<Option<Self>> {
        let backend = &config.backend;
        if backend.kind != crate::config::BackendKind::Cloud
            || backend.upstream_auth != UpstreamAuthKind::ApiKey
        {
            return Ok(None);
        }
        Ok(Some(Self {
            ops_endpoint: backend.endpoint.clone(),
            key: backend.upstream_api_key()?,
            service_account: backend.upstream_service_account.clone().unwrap_or_default(),
        }))
    }
}

impl KeyCheck for ProxyKeyCheck {
    fn check(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            plinth_control::check_proxy_key(
                &self.ops_endpoint,
                self.key.clone(),
                &self.service_account,
            )
            .await
            .map_err(|e| e.to_string())
        })
    }
}

/// What the proxy issues its client certificates to Cloud namespaces with.
fn self_issued(config: &Config, home: &Home) -> anyhow::Result<SelfIssued> {
    let backend = &config.backend;
    anyhow::ensure!(
        backend.certificate_lifetime >= MIN_CERTIFICATE_LIFETIME,
        "[backend] certificate_lifetime: {} is shorter than {}s, too short to renew in time",
        humantime::format_duration(backend.certificate_lifetime),
        MIN_CERTIFICATE_LIFETIME.as_secs()
    );
    let authority = CertificateAuthority::load(&home.upstream_pki_dir()).with_context(|| {
        format!(
            "[backend] kind = \"cloud\": the proxy issues its client certificates from Plinth's \
             upstream CA in {} (`plinth pki init` makes it)",
            home.upstream_pki_dir().display()
        )
    })?;
    let trust_domain: TrustDomain = config
        .pki
        .trust_domain
        .parse()
        .context("[pki] trust_domain")?;
    Ok(SelfIssued {
        authority,
        identity: Identity::app(PROXY_APP).expect("a valid app name"),
        trust_domain,
        lifetime: backend.certificate_lifetime,
    })
}

/// The identity of the certificates the proxy issues itself.
const PROXY_APP: &str = "plinth-proxy";
/// Renewal at two thirds of a certificate's life, checked every second, needs this much.
const MIN_CERTIFICATE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(6);

/// `[proxy] upstream_*` as TLS settings; `None` for plaintext upstreams.
fn upstream_tls(proxy: &crate::config::ProxyConfig) -> anyhow::Result<Option<UpstreamTls>> {
    let client = match (&proxy.upstream_cert, &proxy.upstream_key) {
        (Some(cert), Some(key)) => Some(ClientIdentity::Files(cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("[proxy] upstream_cert is set but upstream_key is not"),
        (None, Some(_)) => anyhow::bail!("[proxy] upstream_key is set but upstream_cert is not"),
    };
    let tls = proxy.upstream_tls || proxy.upstream_ca.is_some() || client.is_some();
    Ok(tls.then(|| UpstreamTls {
        ca: proxy.upstream_ca.clone(),
        client,
        server_name: proxy.upstream_server_name.clone(),
        api_key: None,
        api_key_check: None,
    }))
}

/// Where the data path of `source` (`proxy`, `codec`) records its refusals and decodes: every
/// one of `destinations`' data streams, delivered by a task spawned here.
pub fn audit_sender(
    control: ControlPlane,
    destinations: &std::collections::BTreeMap<String, plinth_archive::Archive>,
    source: &'static str,
) -> std::sync::Arc<dyn plinth_control::AuditSink> {
    let names = destinations.keys().cloned().collect();
    let (sender, delivery) = plinth_control::AuditSender::new(control, names, source);
    tokio::spawn(delivery);
    std::sync::Arc::new(sender)
}
