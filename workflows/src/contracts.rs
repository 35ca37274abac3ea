//! The activities Plinth's workflows call: name, input and output of each. Implementations
//! bind to these with `#[activity(definition = ...)]`, so a mismatch fails to compile.

use plinth_proto::v1::{AccessSummary, MetricsTargetSpec, Namespace, NamespaceSpec, Rule};
use serde::{Deserialize, Serialize};
use temporalio_common::ActivityDefinition;

/// What a worker says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's Temporal identity (`pid@host`).
    pub identity: String,
    /// Plinth version the worker runs.
    pub version: String,
    /// Namespace the worker polls.
    pub namespace: String,
    /// Task queue the worker polls.
    pub task_queue: String,
}

/// Result of a canary run: the token sent, echoed by the worker that ran the activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryReport {
    /// The token the caller sent, returned unchanged.
    pub token: String,
    /// The worker that executed the activity.
    pub worker: WorkerInfo,
}

/// Activity `DescribeWorker`: echoes a token with the executing worker's details.
#[derive(Clone, Copy, Debug)]
pub struct DescribeWorker;

impl ActivityDefinition for DescribeWorker {
    type Input = String;
    type Output = CanaryReport;

    fn name(&self) -> &str {
        "DescribeWorker"
    }
}

/// What the namespace workflows read of the platform settings (`plinth_control::PlatformSettings`)
/// at the start of every run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncSettings {
    /// How often a namespace is re-checked for drift made behind Plinth's back.
    pub resync_interval_secs: u64,
    /// The backend's calls end within seconds (no long operations): reconciling runs in the
    /// workflow's task, as a local activity. False for Temporal Cloud, and in histories from
    /// before it.
    #[serde(default)]
    pub reconcile_in_task: bool,
}

/// Activity `LoadPlatformSettings`: the worker's settings, read at the start of every run.
#[derive(Clone, Copy, Debug)]
pub struct LoadPlatformSettings;

impl ActivityDefinition for LoadPlatformSettings {
    type Input = ();
    type Output = ResyncSettings;

    fn name(&self) -> &str {
        "LoadPlatformSettings"
    }
}

/// Outcome of validating a resource: `None` when valid, else `field: message`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The first problem found, naming the field.
    pub error: Option<String>,
}

/// Activity `ValidateNamespace`: the same validation the platform API runs, with the worker's
/// directory, so resources started directly with the `temporal` CLI are held to it too.
#[derive(Clone, Copy, Debug)]
pub struct ValidateNamespace;

impl ActivityDefinition for ValidateNamespace {
    type Input = Namespace;
    type Output = ValidationReport;

    fn name(&self) -> &str {
        "ValidateNamespace"
    }
}

/// What reconciling a namespace did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// The namespace did not exist and was registered.
    pub created: bool,
    /// Each difference found and repaired, `what: before → after`.
    pub changes: Vec<String>,
    /// Where clients reach the namespace.
    pub endpoint: String,
    /// The namespace's name on the data path (empty in reports recorded before it existed).
    #[serde(default)]
    pub temporal_namespace: String,
    /// The namespace's own key encryption key, when namespaces have their own.
    #[serde(default)]
    pub encryption_key: String,
}

/// Activity `ReconcileNamespace`: brings the backend to the spec, deriving every write from
/// what it observes, so a retry after a crash repeats nothing that already happened.
#[derive(Clone, Copy, Debug)]
pub struct ReconcileNamespace;

impl ActivityDefinition for ReconcileNamespace {
    type Input = NamespaceSpec;
    type Output = ReconcileReport;

    fn name(&self) -> &str {
        "ReconcileNamespace"
    }
}

/// Activity `DeleteNamespace`: removes the Temporal namespace named by the input.
#[derive(Clone, Copy, Debug)]
pub struct DeleteNamespace;

impl ActivityDefinition for DeleteNamespace {
    type Input = String;
    type Output = ();

    fn name(&self) -> &str {
        "DeleteNamespace"
    }
}

/// Input of `ScheduleShred`: the namespace resource's `spec.name`, and who deleted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShredRequest {
    /// `spec.name`.
    pub name: String,
    /// Who deleted it, as the platform API identified them.
    pub by: String,
}

/// What `ScheduleShred` and `ShredKeys` found: the namespace's keys, when they are destroyed,
/// and how long until then (0: destroyed, or restored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShredPlan {
    /// The Temporal namespace whose keys these are.
    pub namespace: String,
    /// The keys marked (or destroyed).
    pub keys: Vec<String>,
    /// When they are destroyed (RFC 3339).
    pub due: String,
    /// Seconds until then; 0 once done.
    pub wait_secs: u64,
    /// `plinth keys restore` took the destruction back.
    pub restored: bool,
}

/// Activity `ScheduleShred`: marks a deleted namespace's own keys for destruction after
/// `[keys] shred_delay`; a mark made already stands.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleShred;

impl ActivityDefinition for ScheduleShred {
    type Input = ShredRequest;
    type Output = ShredPlan;

    fn name(&self) -> &str {
        "ScheduleShred"
    }
}

/// Activity `ShredKeys`: destroys the keys of the namespace (`spec.name`) whose time has
/// come, unless restored.
#[derive(Clone, Copy, Debug)]
pub struct ShredKeys;

impl ActivityDefinition for ShredKeys {
    type Input = String;
    type Output = ShredPlan;

    fn name(&self) -> &str {
        "ShredKeys"
    }
}

/// Input of `SeedAccess`: the Temporal namespace and its owner group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessSeed {
    /// The Temporal namespace.
    pub namespace: String,
    /// The owner group, editor of the seeded policies.
    pub owner: String,
}

/// What seeding a namespace's access did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessSetup {
    /// Policies that did not exist and were created.
    pub policies_created: Vec<String>,
    /// Policies whose editors were moved to a new owner group.
    pub editors_changed: Vec<String>,
    /// The `users/<namespace>` schedule did not exist (or had another interval or run) and
    /// was written.
    pub schedule_written: bool,
}

/// Activity `SeedAccess`: creates the namespace's writers and readers policies if absent
/// (existing rules are never touched; editors follow the owner group) and its access
/// schedule.
#[derive(Clone, Copy, Debug)]
pub struct SeedAccess;

impl ActivityDefinition for SeedAccess {
    type Input = AccessSeed;
    type Output = AccessSetup;

    fn name(&self) -> &str {
        "SeedAccess"
    }
}

/// Activity `RemoveAccessSchedule`: deletes the `users/<namespace>` schedule; one already
/// gone is fine.
#[derive(Clone, Copy, Debug)]
pub struct RemoveAccessSchedule;

impl ActivityDefinition for RemoveAccessSchedule {
    type Input = String;
    type Output = ();

    fn name(&self) -> &str {
        "RemoveAccessSchedule"
    }
}

/// Activity `TriggerAccessRun`: runs the namespace's access schedule now (after the current
/// run, if one is in progress). False when the namespace has no schedule.
#[derive(Clone, Copy, Debug)]
pub struct TriggerAccessRun;

impl ActivityDefinition for TriggerAccessRun {
    type Input = String;
    type Output = bool;

    fn name(&self) -> &str {
        "TriggerAccessRun"
    }
}

/// A grant on request that came into force (`granted`) or ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantChange {
    /// The Temporal namespace.
    pub namespace: String,
    /// The access request.
    pub id: String,
    pub granted: bool,
}

/// Activity `TriggerGrantRun`: once visibility shows the change, runs the namespace's access
/// schedule, so the run applies it.
#[derive(Clone, Copy, Debug)]
pub struct TriggerGrantRun;

impl ActivityDefinition for TriggerGrantRun {
    type Input = GrantChange;
    type Output = bool;

    fn name(&self) -> &str {
        "TriggerGrantRun"
    }
}

/// Activity `ReconcileAccess`: resolves the namespace's policies through the directory and
/// applies the difference to the backend's access list.
#[derive(Clone, Copy, Debug)]
pub struct ReconcileAccess;

impl ActivityDefinition for ReconcileAccess {
    type Input = String;
    type Output = AccessSummary;

    fn name(&self) -> &str {
        "ReconcileAccess"
    }
}

/// What checking a policy rule found: the rule as stored (e-mail addresses lower-cased), or
/// the problem as `field: message`.
pub type RuleCheck = Result<Rule, String>;

/// Activity `ValidateRule`: the rule names exactly one existing group, valid e-mail or valid
/// app name. Groups are checked against the worker's directory.
#[derive(Clone, Copy, Debug)]
pub struct ValidateRule;

impl ActivityDefinition for ValidateRule {
    type Input = Rule;
    type Output = RuleCheck;

    fn name(&self) -> &str {
        "ValidateRule"
    }
}

/// One run of a target's scrapes: the target's name, its spec when it is a `MetricsTarget`
/// resource (which names where the worker finds the token, never the token), and how many
/// scrapes before the run returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScrapeRun {
    /// `[[metrics.targets]] name` or the resource's `metadata.name`.
    pub target: String,
    /// The resource's spec; `None` for a target in the worker's configuration.
    #[serde(default)]
    pub spec: Option<MetricsTargetSpec>,
    /// Scrapes to make before returning, so the workflow can continue as new.
    pub scrapes: u32,
}

/// What a run of scrapes did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeSummary {
    /// Scrapes attempted.
    pub scrapes: u32,
    /// Scrapes that read nothing (unreachable, refused, malformed, rate limited).
    pub failures: u32,
    /// Samples the time-series database accepted.
    pub samples_sent: u64,
    /// Samples given up on after the sink's retries.
    pub samples_dropped: u64,
    /// Samples left out by drop rules.
    pub samples_filtered: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// Activity `ScrapeMetrics`: scrapes one target on its interval, relabels and sends, and
/// heartbeats its progress so a retry after a worker dies resumes on schedule.
#[derive(Clone, Copy, Debug)]
pub struct ScrapeMetrics;

impl ActivityDefinition for ScrapeMetrics {
    type Input = ScrapeRun;
    type Output = ScrapeSummary;

    fn name(&self) -> &str {
        "ScrapeMetrics"
    }
}

/// One batch of the audit trail, for destination `destination`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditBatch {
    /// The destination's name in `[audit] destinations`.
    pub destination: String,
    /// Which records: empty for changes, or the data stream.
    #[serde(default)]
    pub stream: String,
    /// The batch's number: the same number always writes the same objects.
    pub batch: u64,
    /// The records, in the order accepted.
    pub records: Vec<plinth_proto::audit::AuditRecord>,
}

/// Activity `ShipAudit`: writes a batch to its destination; answers the keys written.
#[derive(Clone, Copy, Debug)]
pub struct ShipAudit;

impl ActivityDefinition for ShipAudit {
    type Input = AuditBatch;
    type Output = Vec<String>;

    fn name(&self) -> &str {
        "ShipAudit"
    }
}

/// How often the audit trail is shipped to a destination (`[audit] interval`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSettings {
    /// Seconds between shipments.
    pub interval_secs: u64,
    /// The backend keeps an audit log of its own (Temporal Cloud's), pulled into the trail.
    #[serde(default)]
    pub account_audit: bool,
}

/// Activity `LoadAuditSettings`: the worker's `[audit]` settings for a destination, read at
/// the start of every run.
#[derive(Clone, Copy, Debug)]
pub struct LoadAuditSettings;

impl ActivityDefinition for LoadAuditSettings {
    type Input = String;
    type Output = AuditSettings;

    fn name(&self) -> &str {
        "LoadAuditSettings"
    }
}

/// Activity `RecordAudit`: hands records to the audit trail's shipping to every destination.
#[derive(Clone, Copy, Debug)]
pub struct RecordAudit;

impl ActivityDefinition for RecordAudit {
    type Input = Vec<plinth_proto::audit::AuditRecord>;
    type Output = ();

    fn name(&self) -> &str {
        "RecordAudit"
    }
}

/// One change an access run makes to a namespace's access list: an identity's level before
/// and after (`read`, `write`; none when it had or keeps no access).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessStep {
    /// `user:…` or `app:…`.
    pub identity: String,
    /// The level held before, if any.
    pub before: Option<String>,
    /// The level held after, if any.
    pub after: Option<String>,
}

/// What an access run of a namespace changes, and its summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessPlan {
    /// The Temporal namespace.
    pub namespace: String,
    /// Each change, in the order made.
    pub steps: Vec<AccessStep>,
    /// Counts of the plan (backend writes zero until applied).
    pub summary: AccessSummary,
}

/// Activity `PlanAccess`: resolves the namespace's policies through the directory against
/// its access list, changing nothing.
#[derive(Clone, Copy, Debug)]
pub struct PlanAccess;

impl ActivityDefinition for PlanAccess {
    type Input = String;
    type Output = AccessPlan;

    fn name(&self) -> &str {
        "PlanAccess"
    }
}

/// What `ApplyAccessSteps` made, for the run's records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessApplied {
    /// Counts of the run, backend writes included.
    pub summary: AccessSummary,
    /// Each identity's change now in effect that this run made: those applied now, and
    /// those of its plan an earlier attempt applied. A planned step the policies no longer
    /// give, or one already in effect before, is not among them.
    pub steps: Vec<AccessStep>,
}

/// Activity `ApplyAccessSteps`: as `ApplyAccess`, answering the steps it made.
#[derive(Clone, Copy, Debug)]
pub struct ApplyAccessSteps;

impl ActivityDefinition for ApplyAccessSteps {
    type Input = AccessPlan;
    type Output = AccessApplied;

    fn name(&self) -> &str {
        "ApplyAccessSteps"
    }
}

/// Activity `ApplyAccess`: makes the steps of a plan that are not in effect yet, so a retry
/// after a partial apply finishes it.
#[derive(Clone, Copy, Debug)]
pub struct ApplyAccess;

impl ActivityDefinition for ApplyAccess {
    type Input = AccessPlan;
    type Output = AccessSummary;

    fn name(&self) -> &str {
        "ApplyAccess"
    }
}

/// Input of `SetHistoryExport`: a namespace and whether its closed workflows are exported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryExportSetting {
    /// The namespace resource's name.
    pub name: String,
    /// The spec's Temporal namespace name.
    pub namespace: String,
    /// `spec.export.enabled`; false also when the namespace is deleted.
    pub enabled: bool,
    /// The namespace is being deleted: what its export kept is marked as another's for
    /// whoever re-creates the name.
    #[serde(default)]
    pub deleted: bool,
}

/// Activity `SetHistoryExport`: starts the namespace's `HistoryExport` (or, on Temporal Cloud,
/// configures its export sink) when enabled, and finishes it otherwise; answers what changed
/// (empty: nothing).
#[derive(Clone, Copy, Debug)]
pub struct SetHistoryExport;

impl ActivityDefinition for SetHistoryExport {
    type Input = HistoryExportSetting;
    type Output = String;

    fn name(&self) -> &str {
        "SetHistoryExport"
    }
}

/// How often histories are exported (`[export] interval`), and how long after a workflow
/// closes it is visible to the export (`[export] visibility_lag`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSettings {
    /// Seconds between exports.
    pub interval_secs: u64,
    /// Seconds a closed workflow may take to appear in visibility.
    pub lag_secs: u64,
}

/// Activity `LoadExportSettings`: the worker's `[export]` settings, read at the start of
/// every run.
#[derive(Clone, Copy, Debug)]
pub struct LoadExportSettings;

impl ActivityDefinition for LoadExportSettings {
    type Input = ();
    type Output = ExportSettings;

    fn name(&self) -> &str {
        "LoadExportSettings"
    }
}

/// One export: the workflows of a Temporal namespace that closed in `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportWindow {
    /// The Temporal namespace.
    pub namespace: String,
    /// Unix seconds.
    pub from: i64,
    /// Unix seconds, exclusive.
    pub to: i64,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    /// Workflows exported.
    pub workflows: u64,
    /// Objects written, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Workflows listed but not exported: deleted since, or refused by the backend (logged).
    #[serde(default)]
    pub skipped: u64,
}

/// Activity `ExportHistories`: writes the histories of a window's closed workflows to
/// `[export] destination`; a retry resumes from its last page and writes the same objects.
#[derive(Clone, Copy, Debug)]
pub struct ExportHistories;

impl ActivityDefinition for ExportHistories {
    type Input = ExportWindow;
    type Output = ExportReport;

    fn name(&self) -> &str {
        "ExportHistories"
    }
}

/// Input of `PullAccountAudit`: where the last pull stopped, and how many records fit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountAuditPull {
    /// `None` before the first pull.
    pub cursor: Option<plinth_control::AccountAuditCursor>,
    /// Records taken at most.
    pub max: u32,
}

/// Activity `PullAccountAudit`: the backend's own audit log after the cursor (Temporal
/// Cloud's `GetAuditLogs`), as records of the trail.
#[derive(Clone, Copy, Debug)]
pub struct PullAccountAudit;

impl ActivityDefinition for PullAccountAudit {
    type Input = AccountAuditPull;
    type Output = plinth_control::AccountAudit;

    fn name(&self) -> &str {
        "PullAccountAudit"
    }
}
