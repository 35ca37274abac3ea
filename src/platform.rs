//! The platform settings the worker and the proxy share, from one configuration.

use std::sync::Arc;

use anyhow::Context;
use plinth_activities::directory::{Directory, FileDirectory};
use plinth_worker::PlatformSettings;

use crate::config::Config;
use crate::home::Home;

/// The directory file `[platform] directory` names, or `$PLINTH_HOME/directory.yaml`.
pub fn load_directory(config: &Config, home: &Home) -> anyhow::Result<Arc<dyn Directory>> {
    let path = config
        .platform
        .directory
        .clone()
        .unwrap_or_else(|| home.directory_file());
    let directory = FileDirectory::load(&path).context("[platform] directory")?;
    Ok(Arc::new(directory))
}

/// Rules, directory and resync interval for the namespace workflows; `temporal_address` is
/// where managed namespaces are reached unless `[platform] namespace_endpoint` says otherwise.
pub fn settings(config: &Config, home: &Home, temporal_address: &str) -> anyhow::Result<PlatformSettings> {
    Ok(PlatformSettings {
        directory: load_directory(config, home)?,
        rules: config.platform.rules(),
        resync_interval: config.platform.resync_interval,
        namespace_endpoint: config
            .platform
            .namespace_endpoint
            .clone()
            .unwrap_or_else(|| temporal_address.to_owned()),
    })
}
