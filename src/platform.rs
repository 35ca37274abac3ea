//! The platform settings the worker and the proxy share, from one configuration.

use std::sync::Arc;

use anyhow::Context;
use plinth_control::PlatformSettings;
use plinth_control::directory::{
    Directory, LdapDirectory, PolledDirectory, Source, WatchedDirectory,
};
use plinth_control::{Cloud, CloudSettings, NamespaceBackend, SelfHosted, UpstreamAuth};
use plinth_control::{ControlPlane, ControlSettings, ScimResources};
use plinth_identity::CertificateAuthority;
use plinth_scim::ScimDirectory;
use temporalio_client::{Client, Connection};

use crate::config::{BackendKind, Config, DirectorySource, UpstreamAuthKind};
use crate::home::Home;

/// How often the directory file is checked for changes.
pub const DIRECTORY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// The directory `[directory] source` names: the file `[platform] directory` names (or
/// `$PLINTH_HOME/directory.yaml`), re-read when it changes; LDAP, read now and then every
/// `[directory] refresh_interval`; or what SCIM clients pushed to the control plane
/// `control` reaches, read likewise.
async fn load_directory(
    config: &Config,
    home: &Home,
    control: &ControlPlane,
) -> anyhow::Result<Arc<dyn Directory>> {
    let settings = &config.directory;
    match settings.source {
        DirectorySource::File => {
            let path = config
                .platform
                .directory
                .clone()
                .unwrap_or_else(|| home.directory_file());
            let directory = WatchedDirectory::load(&path).context("[platform] directory")?;
            Ok(Arc::new(directory))
        }
        DirectorySource::Ldap => {
            let ldap = LdapDirectory::new(settings.ldap.clone())?;
            polled(config, ldap, "ldap", settings.min_share).await
        }
        DirectorySource::Scim => {
            let store = Arc::new(ScimResources::new(control.clone()));
            // What was pushed is read whole or not at all: a short read is a real departure,
            // never an outage, so no share of the last one is asked for.
            polled(config, ScimDirectory::new(store), "scim", 0.0).await
        }
    }
}

/// `source`, read now (which must succeed) and every `[directory] refresh_interval`; a later
/// read listing under `min_share` of the people or memberships in force is refused.
async fn polled(
    config: &Config,
    source: impl Source,
    name: &str,
    min_share: f64,
) -> anyhow::Result<Arc<dyn Directory>> {
    let settings = &config.directory;
    anyhow::ensure!(
        config.platform.directory.is_none(),
        "[platform] directory: a YAML file is only read with [directory] source = \"file\""
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&settings.min_share),
        "[directory] min_share: {} is not between 0 and 1",
        settings.min_share
    );
    anyhow::ensure!(
        !settings.refresh_interval.is_zero(),
        "[directory] refresh_interval: must be longer than zero"
    );
    let directory = PolledDirectory::start(source, min_share)
        .await
        .with_context(|| {
            format!("[directory] source = \"{name}\": the first read, which must succeed")
        })?;
    tokio::spawn(directory.follow(settings.refresh_interval));
    Ok(directory)
}

/// The control plane of `control` (its namespace made ready if it is not: worker and proxy
/// start independently, either may be first), a client of it, and the rules, directory,
/// resync interval and backend of the namespace workflows.
pub async fn settings(
    config: &Config,
    home: &Home,
    connection: &Connection,
    temporal_address: &str,
    control: &ControlSettings,
) -> anyhow::Result<(PlatformSettings, Client, ControlPlane)> {
    plinth_control::ensure_namespace(connection, &control.namespace).await?;
    let plane = ControlPlane::connect(connection.clone(), &control.namespace, &control.task_queue)
        .context("control-plane client")?;
    let client = plane.client().clone();
    let platform = PlatformSettings {
        directory: load_directory(config, home, &plane).await?,
        rules: config.platform.rules(&control.namespace),
        resync_interval: config.platform.resync_interval,
        backend: backend(config, home, connection, temporal_address)?,
        admin_group: config.platform.admin_group.clone(),
        access_interval: config.platform.access_interval,
    };
    Ok((platform, client, plane))
}

/// Where managed namespaces live, as `[backend] kind` says: the Temporal of `connection`
/// (reached by clients at `[platform] namespace_endpoint`, else at `temporal_address`), or
/// Temporal Cloud.
pub fn backend(
    config: &Config,
    home: &Home,
    connection: &Connection,
    temporal_address: &str,
) -> anyhow::Result<Arc<dyn NamespaceBackend>> {
    let mut backend: Arc<dyn NamespaceBackend> = match config.backend.kind {
        BackendKind::SelfHosted => {
            let endpoint = config
                .platform
                .namespace_endpoint
                .clone()
                .unwrap_or_else(|| temporal_address.to_owned());
            let refresh = config.backend.namespace_cache_refresh;
            // A deletion waits twice this within its 15-minute activity.
            anyhow::ensure!(
                (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(300))
                    .contains(&refresh),
                "[backend] namespace_cache_refresh: {} is outside 1s to 5m; give the cluster's \
                 system.namespaceCacheRefreshInterval",
                humantime::format_duration(refresh)
            );
            Arc::new(SelfHosted::new(connection.clone(), endpoint).registry_refresh(refresh))
        }
        BackendKind::Cloud => Arc::new(cloud(config, home)?),
    };
    if let Some(pause) = crate::fault::pause_after_register()? {
        tracing::warn!(
            ?pause,
            "fault injection: pausing after every namespace registration"
        );
        backend = Arc::new(crate::fault::PauseAfterRegister::new(backend, pause));
    }
    Ok(backend)
}

/// Whether two PEM bundles hold a certificate in common.
fn shares_a_certificate(a: &[u8], b: &[u8]) -> bool {
    use plinth_identity::pki_types::CertificateDer;
    use plinth_identity::pki_types::pem::PemObject;
    let certificates = |pem: &[u8]| -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(pem)
            .flatten()
            .map(|c| c.to_vec())
            .collect()
    };
    let theirs = certificates(b);
    certificates(a).iter().any(|c| theirs.contains(c))
}

/// The Temporal Cloud account `[backend]` configures.
pub fn cloud(config: &Config, home: &Home) -> anyhow::Result<Cloud> {
    let backend = &config.backend;
    anyhow::ensure!(
        !backend.account.is_empty(),
        "[backend] account: required when kind = \"cloud\" (the Temporal Cloud account id)"
    );
    let api_key = backend.api_key()?;
    let upstream = match backend.upstream_auth {
        UpstreamAuthKind::Mtls => {
            let unused = [
                (
                    "upstream_service_account",
                    backend.upstream_service_account.is_some(),
                ),
                (
                    "upstream_api_key_file",
                    backend.upstream_api_key_file.is_some(),
                ),
                (
                    "upstream_api_key_env",
                    backend.upstream_api_key_env.is_some(),
                ),
            ];
            if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
                anyhow::bail!(
                    "[backend] {key}: only used with upstream_auth = \"api-key\"; the proxy \
                     reaches namespaces over mTLS (upstream_auth = \"mtls\")"
                );
            }
            UpstreamAuth::Mtls
        }
        UpstreamAuthKind::ApiKey => {
            anyhow::ensure!(
                backend.accepted_client_ca.is_none(),
                "[backend] accepted_client_ca: not used with upstream_auth = \"api-key\", where \
                 namespaces accept no client certificate"
            );
            anyhow::ensure!(
                backend.api_key_auth,
                "[backend] upstream_auth = \"api-key\" needs api_key_auth = true: the proxy's key \
                 only opens namespaces that accept API keys"
            );
            let service_account = backend
                .upstream_service_account
                .clone()
                .filter(|name| !name.trim().is_empty())
                .context(
                    "[backend] upstream_service_account: required with upstream_auth = \"api-key\" \
                     (the service account the proxy's key belongs to)",
                )?;
            UpstreamAuth::ApiKey { service_account }
        }
    };
    let accepted_client_ca = match upstream {
        UpstreamAuth::Mtls => accepted_client_ca(config, home)?,
        // Namespaces then accept no client certificate.
        UpstreamAuth::ApiKey { .. } => Vec::new(),
    };
    if let Some(endpoint) = &backend.codec_endpoint {
        anyhow::ensure!(
            endpoint.starts_with("https://"),
            "[backend] codec_endpoint: {endpoint:?} must be an https URL: Temporal Cloud's Web UI \
             only calls codec servers over HTTPS"
        );
    }
    let export_sink = match &backend.export_bucket {
        None => None,
        Some(_) => {
            let required = |value: &Option<String>, key: &str| {
                value.clone().filter(|v| !v.is_empty()).with_context(|| {
                    format!("[backend] {key}: required with export_bucket (Cloud's export sink)")
                })
            };
            Some(plinth_control::CloudExportSink {
                bucket: required(&backend.export_bucket, "export_bucket")?,
                region: required(&backend.export_region, "export_region")?,
                role: required(&backend.export_role, "export_role")?,
                aws_account_id: required(&backend.export_aws_account_id, "export_aws_account_id")?,
                kms_arn: backend.export_kms_arn.clone(),
            })
        }
    };
    Ok(Cloud::new(CloudSettings {
        endpoint: backend.endpoint.clone(),
        account: backend.account.clone(),
        api_key,
        accepted_client_ca,
        api_key_auth: backend.api_key_auth,
        codec_endpoint: backend.codec_endpoint.clone(),
        operation_timeout: backend.operation_timeout,
        invite_users: backend.invite_users,
        upstream,
        export_sink,
    })?)
}

/// The CA bundle Cloud namespaces accept client certificates from: never one the proxy
/// accepts callers from.
fn accepted_client_ca(config: &Config, home: &Home) -> anyhow::Result<Vec<u8>> {
    let backend = &config.backend;
    let ca_path = backend
        .accepted_client_ca
        .clone()
        .unwrap_or_else(|| CertificateAuthority::cert_path(&home.upstream_pki_dir()));
    let accepted_client_ca = std::fs::read(&ca_path).with_context(|| {
        format!(
            "[backend] accepted_client_ca: cannot read {} (the CA namespaces accept client \
             certificates from; `plinth pki init` makes Plinth's upstream CA)",
            ca_path.display()
        )
    })?;
    let front_door_ca = config
        .proxy
        .client_ca
        .clone()
        .unwrap_or_else(|| home.ca_cert());
    // Fails closed: a CA that cannot be compared is not known to differ.
    let front_door = std::fs::read(&front_door_ca).with_context(|| {
        format!(
            "[proxy] client_ca: cannot read {} to check that Cloud namespaces do not accept \
             the callers' CA",
            front_door_ca.display()
        )
    })?;
    if shares_a_certificate(&front_door, &accepted_client_ca) {
        anyhow::bail!(
            "[backend] accepted_client_ca: {} holds a CA the proxy accepts callers from ({}): \
             anyone with a caller's certificate could reach Cloud namespaces around the proxy",
            ca_path.display(),
            front_door_ca.display()
        );
    }
    Ok(accepted_client_ca)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendKind;

    /// A Cloud configuration whose namespaces accept `accepted` and whose proxy accepts
    /// callers from `front_door`.
    fn cloud_config(dir: &std::path::Path, accepted: &str, front_door: Option<&str>) -> Config {
        let mut config = Config::default();
        config.backend.kind = BackendKind::Cloud;
        config.backend.account = "acct".into();
        config.backend.api_key_env = Some("PLINTH_TEST_CLOUD_KEY".into());
        config.backend.accepted_client_ca = Some(dir.join(accepted));
        config.proxy.client_ca = front_door.map(|name| dir.join(name));
        config
    }

    fn ca(dir: &std::path::Path, name: &str) {
        let authority = CertificateAuthority::generate(name).unwrap();
        std::fs::write(dir.join(name), authority.cert_pem()).unwrap();
    }

    #[test]
    fn namespaces_may_not_accept_the_ca_callers_come_from() {
        let dir = tempfile::tempdir().unwrap();
        ca(dir.path(), "people.pem");
        let config = cloud_config(dir.path(), "people.pem", Some("people.pem"));
        let error = cloud(&config, &Home::new(dir.path().into())).unwrap_err();
        assert!(
            format!("{error:#}").contains("around the proxy"),
            "{error:#}"
        );
    }

    #[test]
    fn a_callers_ca_that_cannot_be_read_is_not_taken_to_differ() {
        let dir = tempfile::tempdir().unwrap();
        ca(dir.path(), "upstream.pem");
        let config = cloud_config(dir.path(), "upstream.pem", Some("missing.pem"));
        let error = cloud(&config, &Home::new(dir.path().into())).unwrap_err();
        assert!(
            format!("{error:#}").contains("[proxy] client_ca"),
            "{error:#}"
        );
    }

    #[tokio::test]
    async fn a_separate_upstream_ca_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        ca(dir.path(), "upstream.pem");
        ca(dir.path(), "people.pem");
        let config = cloud_config(dir.path(), "upstream.pem", Some("people.pem"));
        cloud(&config, &Home::new(dir.path().into())).unwrap();
    }

    #[tokio::test]
    async fn an_api_key_upstream_needs_namespaces_that_take_keys_and_the_keys_owner() {
        let dir = tempfile::tempdir().unwrap();
        ca(dir.path(), "upstream.pem");
        ca(dir.path(), "people.pem");
        let mut config = cloud_config(dir.path(), "upstream.pem", Some("people.pem"));
        config.backend.upstream_auth = UpstreamAuthKind::ApiKey;
        // Namespaces accept no client certificate then: no CA to name.
        config.backend.accepted_client_ca = None;
        let home = Home::new(dir.path().into());
        let error = format!("{:#}", cloud(&config, &home).unwrap_err());
        assert!(error.contains("api_key_auth = true"), "{error}");
        config.backend.api_key_auth = true;
        let error = format!("{:#}", cloud(&config, &home).unwrap_err());
        assert!(error.contains("upstream_service_account"), "{error}");
        config.backend.upstream_service_account = Some("plinth-proxy".into());
        cloud(&config, &home).unwrap();
    }

    #[test]
    fn api_key_settings_without_an_api_key_upstream_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        ca(dir.path(), "upstream.pem");
        ca(dir.path(), "people.pem");
        let mut config = cloud_config(dir.path(), "upstream.pem", Some("people.pem"));
        config.backend.upstream_api_key_env = Some("PROXY_KEY".into());
        let error = format!(
            "{:#}",
            cloud(&config, &Home::new(dir.path().into())).unwrap_err()
        );
        assert!(
            error.contains("[backend] upstream_api_key_env: only used with"),
            "{error}"
        );
    }
}
