//! How Plinth's records in the control-plane namespace are named and started: workflow ids,
//! search attributes, the memo key, and the workflow types and updates this crate starts or
//! calls by name. `plinth-workflows` implements them; its tests hold its types to these
//! names and inputs, and its replay tests hold the names to recorded histories.

use plinth_proto::audit::AuditRecord;
use plinth_proto::v1::{AccessRequest, AccessSummary, MetricsTarget, Policy};
use serde::{Deserialize, Serialize};
use temporalio_common::data_converters::RawValue;
use temporalio_common::search_attributes::SearchAttributeKey;
use temporalio_common::{HasWorkflowDefinition, UpdateDefinition, WorkflowDefinition};

/// `PlinthKind`: what resource a control-plane workflow manages.
pub const KIND_ATTRIBUTE: SearchAttributeKey<String> = SearchAttributeKey::keyword("PlinthKind");
/// `PlinthOwner`: the owner group.
pub const OWNER_ATTRIBUTE: SearchAttributeKey<String> = SearchAttributeKey::keyword("PlinthOwner");
/// `PlinthPhase`: the resource's phase.
pub const PHASE_ATTRIBUTE: SearchAttributeKey<String> = SearchAttributeKey::keyword("PlinthPhase");
/// `PlinthName`: the name a resource is found by, besides its workflow id. A SCIM resource's
/// is the SHA-256 (hex) of its name in lower case (any name fits in a keyword and needs no
/// quoting in a query); a Namespace resource's is its Temporal namespace (`spec.name`).
pub const NAME_ATTRIBUTE: SearchAttributeKey<String> = SearchAttributeKey::keyword("PlinthName");
/// Memo key holding the whole resource, so reads need no query (and no worker): describe or
/// list the workflow and read it.
pub const RESOURCE_MEMO: &str = "resource";

const NAMESPACE_ID_PREFIX: &str = "namespace/";
const SCRAPE_ID_PREFIX: &str = "metrics/";

/// Workflow id of the namespace resource named `name`.
pub fn workflow_id(name: &str) -> String {
    format!("{NAMESPACE_ID_PREFIX}{name}")
}

/// The namespace resource a [`workflow_id`] belongs to.
pub fn namespace_name_of(workflow_id: &str) -> Option<&str> {
    workflow_id.strip_prefix(NAMESPACE_ID_PREFIX)
}

/// Workflow id of the policy named `name`.
pub fn policy_workflow_id(name: &str) -> String {
    format!("policy/{name}")
}

/// Schedule id of the access runs of Temporal namespace `namespace`; the workflows it starts
/// are `users/<namespace>-<time>`.
pub fn access_schedule_id(namespace: &str) -> String {
    format!("users/{namespace}")
}

/// Workflow id of a target's scraping.
pub fn scrape_workflow_id(target: &str) -> String {
    format!("{SCRAPE_ID_PREFIX}{target}")
}

/// The target a [`scrape_workflow_id`] belongs to.
pub fn scrape_target_of(workflow_id: &str) -> Option<&str> {
    workflow_id.strip_prefix(SCRAPE_ID_PREFIX)
}

/// A target to scrape and how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScrapeTarget {
    /// `[[metrics.targets]] name`, or the resource's `metadata.name`.
    pub name: String,
    /// Seconds between scrapes.
    pub interval_secs: u64,
    /// The `MetricsTarget` resource; `None` for a target in the worker's configuration.
    #[serde(default)]
    pub resource: Option<MetricsTarget>,
}

impl ScrapeTarget {
    /// The target a `MetricsTarget` resource describes.
    pub fn from_resource(resource: MetricsTarget) -> Self {
        Self {
            name: resource.name().to_owned(),
            interval_secs: resource.spec_or_default().interval_secs(),
            resource: Some(resource),
        }
    }
}

/// Declares a workflow type by name: a start of it takes `$input` and ends with `$output`.
macro_rules! workflow_type {
    ($(#[$doc:meta])* $marker:ident = $name:literal, $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $marker;

        impl WorkflowDefinition for $marker {
            type Input = $input;
            type Output = $output;
            fn name(&self) -> &str {
                $name
            }
        }

        impl HasWorkflowDefinition for $marker {
            type Run = Self;
        }
    };
}

workflow_type!(
    /// `PolicyWorkflow`, one policy for its whole life, started with the policy.
    PolicyStart = "PolicyWorkflow", Policy => Policy
);
workflow_type!(
    /// `UsersWorkflow`, one access run of the namespace it is started with. Still its
    /// first name, which the schedules and histories of running deployments carry.
    AccessRunStart = "UsersWorkflow", String => AccessSummary
);
workflow_type!(
    /// `ScrapeMetricsWorkflow`, one target's scraping. Its summary is never read here.
    ScrapeStart = "ScrapeMetricsWorkflow", ScrapeTarget => RawValue
);

/// The `set_editors` update of a policy: replaces its editor groups. Its answer is never
/// read here.
#[derive(Clone, Copy, Debug)]
pub struct SetPolicyEditors;

impl UpdateDefinition for SetPolicyEditors {
    type Workflow = PolicyStart;
    type Input = Vec<String>;
    type Output = RawValue;
    fn name(&self) -> &str {
        "set_editors"
    }
}

/// The audit trail's stream of data-path records (the proxy's refusals, the codec server's
/// decodes), shipped apart from changes so a flood of them never holds a change up.
pub const DATA_STREAM: &str = "data";

/// Workflow id of the audit trail's shipping of `stream` (empty: changes) to destination
/// `name` (`[audit] destinations`).
pub fn audit_workflow_id(name: &str, stream: &str) -> String {
    if stream.is_empty() {
        format!("audit/{name}")
    } else {
        format!("audit/{name}/{stream}")
    }
}

/// What an `AuditExport` run starts from: the destination, and what the run before it handed
/// over.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditExportState {
    /// The destination's name in `[audit] destinations`.
    pub destination: String,
    /// Which records: empty for changes, or [`DATA_STREAM`].
    #[serde(default)]
    pub stream: String,
    /// Number of the next batch written there.
    #[serde(default)]
    pub next_batch: u64,
    /// Records accepted and not yet written.
    #[serde(default)]
    pub pending: Vec<AuditRecord>,
    /// Digests of the ids last accepted, oldest first: a record delivered again is kept once.
    #[serde(default)]
    pub recent: std::collections::VecDeque<String>,
    /// Where pulling the backend's own audit log stopped (Temporal Cloud's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_cursor: Option<crate::AccountAuditCursor>,
}

impl AuditExportState {
    /// Where the shipping of `stream` to destination `name` starts: nothing written yet.
    pub fn new(name: &str, stream: &str) -> Self {
        Self {
            destination: name.to_owned(),
            stream: stream.to_owned(),
            ..Default::default()
        }
    }
}

/// What an `append` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Appended {
    /// Records taken.
    pub accepted: usize,
    /// Records already taken before, left out.
    pub duplicates: usize,
}

workflow_type!(
    /// `AuditExport`, the audit trail's shipping to one destination.
    AuditExportStart = "AuditExport", AuditExportState => RawValue
);

/// The `append` update of an `AuditExport`: takes records to ship, or refuses them all while
/// too many wait, so the sender retries later.
#[derive(Clone, Copy, Debug)]
pub struct AppendAudit;

impl UpdateDefinition for AppendAudit {
    type Workflow = AuditExportStart;
    type Input = Vec<AuditRecord>;
    type Output = Appended;
    fn name(&self) -> &str {
        "append"
    }
}

/// Workflow id of the history export of the namespace resource `name`.
pub fn history_export_workflow_id(name: &str) -> String {
    format!("history-export/{name}")
}

/// Where a `HistoryExport` run stands: the namespace, how far it exported, and what.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryExportState {
    /// The namespace resource's name.
    pub namespace: String,
    /// The Temporal namespace whose workflows are exported.
    pub temporal_namespace: String,
    /// Every workflow that closed before this (unix seconds) is exported; 0 before the first
    /// export, which takes every closed workflow Temporal still keeps.
    #[serde(default)]
    pub exported_through: i64,
    /// Workflows exported so far (a workflow exported again by a retry counts again).
    #[serde(default)]
    pub workflows: u64,
    /// Objects and bytes written so far.
    #[serde(default)]
    pub objects: u64,
    #[serde(default)]
    pub bytes: u64,
}

workflow_type!(
    /// `HistoryExport`, the export of one namespace's closed workflows, for as long as the
    /// namespace asks for it.
    HistoryExportStart = "HistoryExport", HistoryExportState => HistoryExportState
);

/// The `finish` update of a `HistoryExport`: exports every workflow closed until now, then
/// ends the export; answers where it stopped.
#[derive(Clone, Copy, Debug)]
pub struct FinishHistoryExport;

impl UpdateDefinition for FinishHistoryExport {
    type Workflow = HistoryExportStart;
    type Input = ();
    type Output = HistoryExportState;
    fn name(&self) -> &str {
        "finish"
    }
}

/// Workflow id of the latest `plinth directory reload`.
pub const DIRECTORY_RELOAD_WORKFLOW_ID: &str = "directory-reload";

/// Who asked for a directory reload and, when it was forced, the size the proxy took: a
/// worker takes a read that shrank the directory down to `[directory] min_share` of that, as
/// it would of the version in force, so an outage's read far under that stays refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadRequest {
    pub by: String,
    #[serde(default)]
    pub floor: Option<plinth_directory::Size>,
}

workflow_type!(
    /// `DirectoryReload`, the mark of a `plinth directory reload`: its start time tells
    /// every worker to read the directory again. It ends at once.
    DirectoryReloadStart = "DirectoryReload", ReloadRequest => ()
);

/// `PlinthKind` of access request workflows; `PlinthOwner` is their namespace and
/// `PlinthPhase` their state.
pub const KIND_ACCESS_REQUEST: &str = "AccessRequest";

/// The state of a request whose grant is in force (until its `expires_at`).
pub const ACCESS_GRANTED: &str = "granted";
/// The state of a request waiting for an answer.
pub const ACCESS_PENDING: &str = "pending";
/// The state of a grant someone ended early.
pub const ACCESS_REVOKED: &str = "revoked";

/// Requests read at once from visibility: far above the grants one namespace has, so a read
/// stays bounded.
pub const MAX_OPEN_REQUESTS: usize = 10_000;

/// Workflow id of slot `slot` of the person whose digest is `person`: each person's open
/// requests and grants fill numbered slots, so Temporal's workflow ids hold the limit on
/// how many one person has open, whoever asks at once.
pub fn access_request_slot(person: &str, slot: usize) -> String {
    format!("access-request/ar-{person}-{slot}")
}

/// Workflow id of access request `id` (`ar-<person>-<slot>-<random>`), or `None` for what
/// is no request id.
pub fn access_request_workflow_id(id: &str) -> Option<String> {
    let mut parts = id.strip_prefix("ar-")?.split('-');
    let (person, slot, random) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let slot_ok = !slot.is_empty() && slot.len() <= 3 && slot.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !hex(person, 16) || !hex(random, 8) || !slot_ok {
        return None;
    }
    Some(format!("access-request/ar-{person}-{slot}"))
}

workflow_type!(
    /// `AccessRequest`, one request for temporary access from asking to its end; it keeps
    /// the request in its memo and ends with it.
    AccessRequestStart = "AccessRequest", AccessRequest => AccessRequest
);

/// Declares an update of `AccessRequest` that takes who answers (`user:<email>`) and gives
/// the request as it stands.
macro_rules! access_request_update {
    ($(#[$doc:meta])* $marker:ident = $name:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $marker;

        impl UpdateDefinition for $marker {
            type Workflow = AccessRequestStart;
            type Input = String;
            type Output = AccessRequest;
            fn name(&self) -> &str {
                $name
            }
        }
    };
}

access_request_update!(
    /// `approve`: the grant starts now and lasts the requested duration.
    ApproveAccess = "approve"
);
access_request_update!(
    /// `deny`: the request ends, nothing granted.
    DenyAccess = "deny"
);
access_request_update!(
    /// `revoke`: the grant ends now; answers once the access run that takes it away started.
    RevokeAccess = "revoke"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_names_its_slot_and_nothing_else_does() {
        let id = "ar-0123456789abcdef-3-a1b2c3d4";
        assert_eq!(
            access_request_workflow_id(id).as_deref(),
            Some(access_request_slot("0123456789abcdef", 3).as_str())
        );
        for bad in [
            "ar-0123456789abcdef-3",
            "ar-0123456789abcdef-3-a1b2c3d4-x",
            "ar-0123456789abcdeg-3-a1b2c3d4",
            "ar-0123456789abcdef-1000-a1b2c3d4",
            "ar-0123456789abcdef--a1b2c3d4",
            "ar-0123456789abcdef-3-a1b2c3d4' OR '1'='1",
            "policy/x",
        ] {
            assert_eq!(access_request_workflow_id(bad), None, "{bad}");
        }
    }
}

/// `PlinthKind` of the workflow keeping one SCIM resource of `kind`.
pub fn scim_kind(kind: plinth_scim::Kind) -> &'static str {
    match kind {
        plinth_scim::Kind::User => "ScimUser",
        plinth_scim::Kind::Group => "ScimGroup",
    }
}

/// Workflow id of the SCIM resource `id` of `kind`: `scim/Users/<id>`.
pub fn scim_workflow_id(kind: plinth_scim::Kind, id: &str) -> String {
    format!("scim/{}/{id}", kind.endpoint())
}

/// The `PlinthName` of a SCIM resource named `name`.
pub fn scim_name_digest(name: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.to_lowercase().as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

workflow_type!(
    /// `ScimResource`, one User or Group pushed over SCIM, for its whole life: it keeps the
    /// resource in its memo and ends when the resource is deleted.
    ScimResourceStart = "ScimResource", plinth_scim::Resource => ()
);

/// A change of a SCIM resource, made only if it is still at version `expected`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScimReplace {
    pub resource: plinth_scim::Resource,
    pub expected: u64,
}

/// What a change of a SCIM resource answers: whether it was made, and the version then
/// current (`0` once deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimWritten {
    pub done: bool,
    pub current: u64,
}

/// How `ScimResource` refuses a change based on another version than `current` (`0`: the
/// resource was deleted).
pub fn scim_refusal(current: u64) -> String {
    format!("{SCIM_STALE}{current}")
}

/// The version a refusal of [`scim_refusal`] names.
pub fn scim_refused_at(message: &str) -> Option<u64> {
    message.strip_prefix(SCIM_STALE)?.parse().ok()
}

const SCIM_STALE: &str = "stale: the current version is ";

/// `replace` of `ScimResource`.
#[derive(Clone, Copy, Debug)]
pub struct ReplaceScim;

impl UpdateDefinition for ReplaceScim {
    type Workflow = ScimResourceStart;
    type Input = ScimReplace;
    type Output = ScimWritten;
    fn name(&self) -> &str {
        "replace"
    }
}

/// `delete` of `ScimResource`: ends it, if at the version given (any, with none).
#[derive(Clone, Copy, Debug)]
pub struct DeleteScim;

impl UpdateDefinition for DeleteScim {
    type Workflow = ScimResourceStart;
    type Input = Option<u64>;
    type Output = ScimWritten;
    fn name(&self) -> &str {
        "delete"
    }
}
