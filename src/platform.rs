//! The platform settings the worker and the proxy share, from one configuration.

use std::sync::Arc;

use anyhow::Context;
use plinth_control::PlatformSettings;
use plinth_control::directory::{Directory, WatchedDirectory};
use plinth_control::{NamespaceBackend, SelfHosted};
use temporalio_client::Connection;

use crate::config::Config;
use crate::home::Home;

/// How often the directory file is checked for changes.
pub const DIRECTORY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// The directory file `[platform] directory` names, or `$PLINTH_HOME/directory.yaml`; it is
/// re-read when it changes.
fn load_directory(config: &Config, home: &Home) -> anyhow::Result<Arc<dyn Directory>> {
    let path = config
        .platform
        .directory
        .clone()
        .unwrap_or_else(|| home.directory_file());
    let directory = WatchedDirectory::load(&path).context("[platform] directory")?;
    Ok(Arc::new(directory))
}

/// Rules, directory, resync interval and backend for the namespace workflows.
pub fn settings(
    config: &Config,
    home: &Home,
    connection: &Connection,
    temporal_address: &str,
) -> anyhow::Result<PlatformSettings> {
    Ok(PlatformSettings {
        directory: load_directory(config, home)?,
        rules: config.platform.rules(),
        resync_interval: config.platform.resync_interval,
        backend: backend(config, connection, temporal_address)?,
        admin_group: config.platform.admin_group.clone(),
        access_interval: config.platform.access_interval,
    })
}

/// Where managed namespaces live: the Temporal of `connection`, reached by clients at
/// `[platform] namespace_endpoint`, else at `temporal_address`.
pub fn backend(
    config: &Config,
    connection: &Connection,
    temporal_address: &str,
) -> anyhow::Result<Arc<dyn NamespaceBackend>> {
    let endpoint = config
        .platform
        .namespace_endpoint
        .clone()
        .unwrap_or_else(|| temporal_address.to_owned());
    let mut backend: Arc<dyn NamespaceBackend> =
        Arc::new(SelfHosted::new(connection.clone(), endpoint));
    if let Some(pause) = crate::fault::pause_after_register()? {
        tracing::warn!(
            ?pause,
            "fault injection: pausing after every namespace registration"
        );
        backend = Arc::new(crate::fault::PauseAfterRegister::new(backend, pause));
    }
    Ok(backend)
}
