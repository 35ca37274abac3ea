//! Changes made outside any workflow (a key rotated or imported on this host) handed to the
//! audit trail, as the workflows hand theirs: the command fails when the trail does not take
//! the record.

use anyhow::Context;
use plinth_control::ControlPlane;
use plinth_proto::audit::AuditRecord;

use crate::config::Config;
use crate::connect::ConnectArgs;
use crate::home::Home;

/// Who acts from this host's command line: `operator:<user>@<host>`.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("operator:{user}@{host}")
}

/// Hands `record` to every `[audit] destinations`' trail through the control plane.
pub async fn record_change(
    config: &Config,
    home: &Home,
    record: AuditRecord,
) -> anyhow::Result<()> {
    let action = record.action.clone();
    let recorded = async {
        let (options, _, settings) = ConnectArgs::default().resolve(&config.temporal)?;
        let connection = plinth_control::connect(options).await?;
        let destinations: Vec<String> = config.audit.destinations(home)?.into_keys().collect();
        ControlPlane::connect(connection, &settings.namespace, &settings.task_queue)?
            .record_change(&destinations, record)
            .await?;
        anyhow::Ok(())
    };
    recorded
        .await
        .with_context(|| format!("{action}: done, but the audit trail did not take its record"))
}
