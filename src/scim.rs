//! The SCIM 2.0 service `plinth proxy` serves with `[directory] source = "scim"`.

use std::sync::Arc;

use anyhow::Context;
use plinth_codec::server::TlsListener;
use plinth_control::contract::ReloadRequest;
use plinth_control::{Admins, ControlPlane, ScimResources};
use plinth_scim::{ChangeListener, ScimService};

use crate::config::Config;
use crate::home::Home;

/// Shortest bearer token taken: guessing it must be hopeless.
const MIN_TOKEN_CHARS: usize = 32;

/// Reads `[directory.scim] token_file`.
pub fn token(config: &Config, home: &Home) -> anyhow::Result<String> {
    let path = config
        .directory
        .scim
        .token_file
        .clone()
        .unwrap_or_else(|| home.scim_token_file());
    // Whoever reads it may put anyone in the admin group: it is kept like a private key.
    let text = plinth_identity::read_private(&path)
        .with_context(|| format!("[directory.scim] token_file: {}", path.display()))?;
    let token = text.trim().to_owned();
    anyhow::ensure!(
        token.chars().count() >= MIN_TOKEN_CHARS && !token.chars().any(char::is_whitespace),
        "[directory.scim] token_file: {} must hold one token of at least {MIN_TOKEN_CHARS} \
         characters and no spaces",
        path.display()
    );
    Ok(token)
}

/// Writes a new random token to `path` (readable by its owner only) unless one is there.
pub fn write_token_unless_present(path: &std::path::Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let token = plinth_scim::new_token();
    plinth_identity::write_private(path, format!("{token}\n").as_bytes())
        .with_context(|| format!("SCIM token {}", path.display()))
}

/// A stored change that may give or take access: this proxy reads the directory again, and
/// the reload mark tells every worker, whose new directory starts the access runs. Changes
/// that come while a reload runs are taken by one more: an identity provider's burst costs a
/// few reads of the directory, not one each, and never holds its requests up.
struct ReloadOnChange {
    changed: Arc<tokio::sync::Notify>,
}

impl ReloadOnChange {
    fn start(admins: Admins, control: ControlPlane) -> Self {
        let changed = Arc::new(tokio::sync::Notify::new());
        let woken = changed.clone();
        tokio::spawn(async move {
            loop {
                woken.notified().await;
                if let Err(e) = admins.reload(None).await {
                    tracing::error!(error = %e, "SCIM change: the proxy's directory was not read again");
                }
                let request = ReloadRequest {
                    by: "scim".to_owned(),
                    floor: None,
                };
                if let Err(e) = control.request_directory_reload(request).await {
                    tracing::error!(error = %e, "SCIM change: workers were not told; they read it at [directory] refresh_interval");
                }
            }
        });
        Self { changed }
    }
}

#[async_trait::async_trait]
impl ChangeListener for ReloadOnChange {
    async fn access_changed(&self, what: String) {
        tracing::debug!(%what, "SCIM change: directory reload asked for");
        // Stores a permit when the reloader is busy: it runs once more after.
        self.changed.notify_one();
    }
}

/// Starts serving `/scim/v2` over TLS on `[directory.scim] listen`.
pub async fn serve(
    config: &Config,
    home: &Home,
    control: ControlPlane,
    admins: Admins,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let token = token(config, home)?;
    let store = Arc::new(ScimResources::new(control.clone()));
    let service = ScimService::new(store, &token)
        .on_access_change(Arc::new(ReloadOnChange::start(admins, control)));
    let (tls, verifier) = crate::proxy::server_tls(config, home, false, b"http/1.1")?;
    let (listener, address) = crate::proxy::bind(
        None,
        &config.directory.scim.listen,
        "[directory.scim] listen",
    )
    .await?;
    tracing::info!(%address, "SCIM service listening (HTTPS, bearer token)");
    let app = service.router();
    Ok(tokio::spawn(async move {
        axum::serve(TlsListener::new(listener, tls, verifier), app).await
    }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_token_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scim-token");
        std::fs::write(&path, "t".repeat(MIN_TOKEN_CHARS)).unwrap();
        let home = Home::new(dir.path().to_owned());
        let mut config = Config::default();
        config.directory.scim.token_file = Some(path.clone());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = format!("{:#}", token(&config, &home).unwrap_err());
        assert!(error.contains("has mode 644"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(token(&config, &home).unwrap(), "t".repeat(MIN_TOKEN_CHARS));
    }
}
