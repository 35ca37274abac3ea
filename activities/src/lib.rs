//! The activities Plinth's workflows call, implemented against the contracts in
//! `plinth_workflows::contracts` with the domain in `plinth_control`: namespaces, access runs,
//! metrics scraping, shipping the audit trail, exporting histories, and the worker describing itself.

mod access_activities;
mod audit_activities;
mod heartbeat;
mod history_activities;
mod metrics_activities;
mod namespaces;
pub mod telemetry;
mod worker_info;

pub use access_activities::{AccessActivities, reconcile_access};
pub use audit_activities::AuditActivities;
pub use history_activities::{FETCHES_AT_ONCE, HistoryActivities, export_histories};
pub use metrics_activities::{MetricsActivities, ScrapeTargetSettings};
pub use namespaces::NamespaceActivities;
pub use worker_info::WorkerActivities;
