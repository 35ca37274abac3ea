//! Access on request: a person asks for read or write on a namespace for a while, a member
//! of an approver group (the editors of the namespace's policies, never the requester)
//! answers, and the grant goes by itself. Each request is an `AccessRequest` workflow.

use std::time::{Duration, SystemTime};

use plinth_control::contract::{
    ACCESS_GRANTED, ACCESS_PENDING, ApproveAccess, DenyAccess, MAX_OPEN_REQUESTS, RevokeAccess,
};
use plinth_control::{Admins, BackendError, ControlPlane};
use plinth_identity::Identity;
use plinth_proto::policy::{readers_policy_name, writers_policy_name};
use plinth_proto::v1::{AccessRequest, ListAccessRequestsResponse, RequestAccessRequest};
use tonic::Status;

use crate::{allowed, backend_status, denied};

/// The longest reason kept: a sentence or two, not a document.
const MAX_REASON_CHARS: usize = 500;
/// The shortest grant asked for.
const MIN_DURATION: Duration = Duration::from_secs(60);

/// `[access]`: how long requests wait and grants last, and how many one person keeps open.
#[derive(Clone, Debug)]
pub struct RequestSettings {
    /// A pending request nobody answered ends after this long.
    pub request_ttl: Duration,
    /// The longest grant that may be asked for.
    pub max_duration: Duration,
    /// Pending requests and live grants one person may have at once.
    pub max_open_per_person: usize,
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self {
            request_ttl: Duration::from_secs(24 * 3600),
            max_duration: Duration::from_secs(24 * 3600),
            max_open_per_person: 10,
        }
    }
}

/// Requests, answers and revocations, each checked against the directory.
#[derive(Clone, Debug)]
pub(crate) struct AccessRequests {
    control: ControlPlane,
    admins: Admins,
    settings: RequestSettings,
}

fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}

impl AccessRequests {
    pub(crate) fn new(control: ControlPlane, admins: Admins, settings: RequestSettings) -> Self {
        Self {
            control,
            admins,
            settings,
        }
    }

    /// Starts a request of `identity`'s, once it is valid and the namespace has approvers.
    pub(crate) async fn request(
        &self,
        identity: &Identity,
        asked: RequestAccessRequest,
    ) -> Result<AccessRequest, Status> {
        let resource = format!("access to namespace {:?}", asked.namespace);
        if !matches!(identity, Identity::User { .. }) {
            let why = "access on request is for people; workloads get access by policy".into();
            return Err(denied(identity, "request", &resource, why));
        }
        if asked.namespace.is_empty() {
            return Err(invalid("namespace", "required"));
        }
        if asked.access != "read" && asked.access != "write" {
            return Err(invalid(
                "access",
                format!(
                    "{:?} is not read or write (admin is never granted)",
                    asked.access
                ),
            ));
        }
        let duration = Duration::from_secs(u64::try_from(asked.duration_seconds).unwrap_or(0));
        if duration < MIN_DURATION || duration > self.settings.max_duration {
            return Err(invalid(
                "duration",
                format!(
                    "must be between {} and {} ([access] max_duration)",
                    humantime::format_duration(MIN_DURATION),
                    humantime::format_duration(self.settings.max_duration)
                ),
            ));
        }
        let reason = asked.reason.trim();
        if reason.is_empty() {
            return Err(invalid("reason", "required: say why the access is needed"));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(invalid(
                "reason",
                format!("longer than {MAX_REASON_CHARS} characters"),
            ));
        }
        let approvers = self.approvers(&asked.namespace).await?;
        let requester = identity.to_string();
        let open = self.open().await?;
        let mine = open.iter().filter(|r| r.requester == requester).count();
        if mine >= self.settings.max_open_per_person {
            return Err(Status::resource_exhausted(format!(
                "{requester} has {mine} open access requests and grants, the most one person \
                 may have ([access] max_open_per_person); revoke or wait for one to end"
            )));
        }
        let request = AccessRequest {
            id: new_id()?,
            namespace: asked.namespace,
            access: asked.access,
            duration_seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            reason: reason.to_owned(),
            requester,
            approvers,
            state: ACCESS_PENDING.into(),
            requested_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ttl_seconds: i64::try_from(self.settings.request_ttl.as_secs()).unwrap_or(i64::MAX),
            ..AccessRequest::default()
        };
        self.control
            .start_access_request(request.clone())
            .await
            .map_err(backend_status)?;
        tracing::info!(
            %identity,
            request = %request.id,
            namespace = %request.namespace,
            access = %request.access,
            seconds = request.duration_seconds,
            approvers = ?request.approvers,
            "access requested"
        );
        Ok(request)
    }

    /// The editor groups of `namespace`'s policies; a namespace without policies is not
    /// Plinth's, and one whose policies name no editor has nobody to ask.
    async fn approvers(&self, namespace: &str) -> Result<Vec<String>, Status> {
        let mut approvers = Vec::new();
        let mut managed = false;
        for name in [
            writers_policy_name(namespace),
            readers_policy_name(namespace),
        ] {
            if let Some(policy) = self.control.policy(&name).await.map_err(backend_status)? {
                managed = true;
                approvers.extend(policy.editors);
            }
        }
        approvers.sort();
        approvers.dedup();
        if !managed {
            return Err(Status::not_found(format!(
                "namespace {namespace:?} has no access policies: Plinth does not manage it"
            )));
        }
        if approvers.is_empty() {
            return Err(Status::failed_precondition(format!(
                "the policies of namespace {namespace:?} name no editors, so nobody may approve"
            )));
        }
        Ok(approvers)
    }

    async fn open(&self) -> Result<Vec<AccessRequest>, Status> {
        self.control
            .open_access_requests(None, MAX_OPEN_REQUESTS)
            .await
            .map_err(backend_status)
    }

    /// Whether `identity` is in one of the request's approver groups now.
    fn approves(&self, identity: &Identity, request: &AccessRequest) -> bool {
        let directory = self.admins.directory();
        request
            .approvers
            .iter()
            .any(|group| directory.is_member(identity, group))
    }

    /// What `identity` asked for that is still open, and the pending requests they may answer.
    pub(crate) async fn list(
        &self,
        identity: &Identity,
    ) -> Result<ListAccessRequestsResponse, Status> {
        let me = identity.to_string();
        let (mut mine, mut to_answer) = (Vec::new(), Vec::new());
        for request in self.open().await? {
            if request.requester == me {
                mine.push(request);
            } else if request.state == ACCESS_PENDING && self.approves(identity, &request) {
                to_answer.push(request);
            }
        }
        for list in [&mut mine, &mut to_answer] {
            list.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
        }
        Ok(ListAccessRequestsResponse { mine, to_answer })
    }

    /// Approves (`approve`) or denies request `id` as `identity`.
    pub(crate) async fn answer(
        &self,
        identity: &Identity,
        id: &str,
        approve: bool,
    ) -> Result<AccessRequest, Status> {
        let action = if approve { "approve" } else { "deny" };
        let resource = format!("access request {id}");
        let request = self.find(id).await?;
        if request.requester == identity.to_string() {
            let why = "the requester never answers their own request".into();
            return Err(denied(identity, action, &resource, why));
        }
        if !self.approves(identity, &request) {
            let why = format!(
                "answering it needs membership of one of {:?}",
                request.approvers
            );
            return Err(denied(identity, action, &resource, why));
        }
        allowed(identity, action, &resource);
        let me = identity.to_string();
        let answered = if approve {
            self.control
                .answer_access_request(id, ApproveAccess, &me)
                .await
        } else {
            self.control
                .answer_access_request(id, DenyAccess, &me)
                .await
        }
        .map_err(refused)?;
        tracing::info!(%identity, request = id, state = %answered.state, expires = %answered.expires_at, "access request answered");
        Ok(answered)
    }

    /// Ends grant `id` now, as its requester or an approver.
    pub(crate) async fn revoke(
        &self,
        identity: &Identity,
        id: &str,
    ) -> Result<AccessRequest, Status> {
        let resource = format!("access request {id}");
        let request = self.find(id).await?;
        if request.requester != identity.to_string() && !self.approves(identity, &request) {
            let why = format!(
                "revoking needs to be its requester or a member of one of {:?}",
                request.approvers
            );
            return Err(denied(identity, "revoke", &resource, why));
        }
        if request.state != ACCESS_GRANTED {
            return Err(Status::failed_precondition(format!(
                "access request {id} is {}: only a grant in force is revoked",
                request.state
            )));
        }
        allowed(identity, "revoke", &resource);
        let revoked = self
            .control
            .answer_access_request(id, RevokeAccess, &identity.to_string())
            .await
            .map_err(refused)?;
        tracing::info!(%identity, request = id, "access grant revoked");
        Ok(revoked)
    }

    async fn find(&self, id: &str) -> Result<AccessRequest, Status> {
        let malformed =
            id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if id.is_empty() || malformed {
            return Err(invalid("id", format!("{id:?} is not an access request id")));
        }
        self.control
            .access_request(id)
            .await
            .map_err(backend_status)?
            .ok_or_else(|| Status::not_found(format!("no access request {id}")))
    }
}

/// A workflow's refusal is the caller's mistake, not a missing thing.
fn refused(error: BackendError) -> Status {
    match error {
        BackendError::Rejected(message) => Status::failed_precondition(message),
        other => backend_status(other),
    }
}

/// `ar-` and 12 random hex digits.
fn new_id() -> Result<String, Status> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 6];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Status::unavailable("no randomness for a request id"))?;
    Ok(format!(
        "ar-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}
