//! Access on request: a person asks for read or write on a namespace for a while, a member
//! of an approver group (the editors of the namespace's policies, never the requester)
//! answers, and the grant goes by itself. Each request is an `AccessRequest` workflow in one
//! of its requester's numbered slots, so Temporal's workflow ids hold the limit on how many
//! one person has open.

use std::time::{Duration, SystemTime};

use plinth_control::contract::{
    ACCESS_GRANTED, ACCESS_PENDING, ApproveAccess, DenyAccess, MAX_OPEN_REQUESTS, RevokeAccess,
    access_request_slot, access_request_workflow_id,
};
use plinth_control::{Admins, BackendError, ControlPlane};
use plinth_identity::Identity;
use plinth_proto::policy::{readers_policy_name, writers_policy_name};
use plinth_proto::v1::{AccessRequest, ListAccessRequestsResponse, RequestAccessRequest};
use tonic::Status;

use crate::{allowed, backend_status, denied};

/// The longest reason kept: a sentence or two, not a document.
const MAX_REASON_CHARS: usize = 500;
/// The longest namespace name looked up (Temporal's own limit is lower).
const MAX_NAMESPACE_CHARS: usize = 255;
/// Pending requests one listing shows an approver, oldest first: an answer a page long.
const MAX_TO_ANSWER: usize = 500;
/// The shortest grant asked for.
const MIN_DURATION: Duration = Duration::from_secs(60);

/// `[access]`: how long requests wait and grants last, and how many one person keeps open.
#[derive(Clone, Debug)]
pub struct RequestSettings {
    /// A pending request nobody answered ends after this long.
    pub request_ttl: Duration,
    /// The longest grant that may be asked for.
    pub max_duration: Duration,
    /// Pending requests and live grants one person may have at once (at most 1,000).
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
        let settings = RequestSettings {
            // Slots are numbered in three digits.
            max_open_per_person: settings.max_open_per_person.min(1_000),
            ..settings
        };
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
        if asked.namespace.is_empty() || asked.namespace.chars().count() > MAX_NAMESPACE_CHARS {
            return Err(invalid(
                "namespace",
                format!("required, at most {MAX_NAMESPACE_CHARS} characters"),
            ));
        }
        let resource = format!("access to namespace {:?}", asked.namespace);
        let Identity::User { email } = identity else {
            let why = "access on request is for people; workloads get access by policy".into();
            return Err(denied(identity, "request", &resource, why));
        };
        // A grant counts only while its requester is active, so nobody else asks.
        if !self.admins.directory().is_active(email) {
            let why = "only people active in the directory ask for access".into();
            return Err(denied(identity, "request", &resource, why));
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
        // Shown to approvers in their terminal: nothing that moves the cursor, reorders or
        // hides text.
        if reason.chars().any(|c| c.is_control() || is_format(c)) {
            return Err(invalid(
                "reason",
                "holds control or invisible characters; one line of plain text",
            ));
        }
        let approvers = self.approvers(&asked.namespace, &asked.access).await?;
        let person = person_digest(email);
        let mut request = AccessRequest {
            namespace: asked.namespace,
            access: asked.access,
            duration_seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            reason: reason.to_owned(),
            requester: identity.to_string(),
            approvers,
            state: ACCESS_PENDING.into(),
            requested_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ttl_seconds: i64::try_from(self.settings.request_ttl.as_secs()).unwrap_or(i64::MAX),
            ..AccessRequest::default()
        };
        // The first free slot takes it: Temporal refuses a second open workflow of one id,
        // so the limit holds however many requests arrive at once.
        for slot in 0..self.settings.max_open_per_person {
            request.id = format!("ar-{person}-{slot}-{}", random_hex()?);
            let started = self
                .control
                .start_access_request(&access_request_slot(&person, slot), request.clone())
                .await
                .map_err(backend_status)?;
            if started {
                tracing::info!(
                    %identity,
                    request = %request.id,
                    namespace = %request.namespace,
                    access = %request.access,
                    seconds = request.duration_seconds,
                    approvers = ?request.approvers,
                    "access requested"
                );
                return Ok(request);
            }
        }
        Err(Status::resource_exhausted(format!(
            "{identity} has {} open access requests and grants, the most one person may have \
             ([access] max_open_per_person); revoke or wait for one to end",
            self.settings.max_open_per_person
        )))
    }

    /// Who may answer a request for `access` to `namespace` now: the editors of its
    /// writers policy for write, of either policy for read. A namespace without policies is
    /// not Plinth's, and one whose policies name no editor has nobody to ask.
    async fn approvers(&self, namespace: &str, access: &str) -> Result<Vec<String>, Status> {
        let policies = match access {
            "read" => vec![
                writers_policy_name(namespace),
                readers_policy_name(namespace),
            ],
            _ => vec![writers_policy_name(namespace)],
        };
        let mut approvers = Vec::new();
        let mut managed = false;
        for name in policies {
            let policy = self.control.policy(&name).await.map_err(backend_status)?;
            // `TEMPORAL-ns-a-readers` also names the writers policy of a namespace `a-readers`:
            // only the namespace's own policies count.
            if let Some(policy) = policy.filter(|p| p.namespace == namespace) {
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

    /// Whether `identity` is in one of `approvers` now.
    fn approves(&self, identity: &Identity, approvers: &[String]) -> bool {
        let directory = self.admins.directory();
        approvers
            .iter()
            .any(|group| directory.is_member(identity, group))
    }

    /// What `identity` asked for that is still open (read from its slots, so a request just
    /// made shows), and the oldest pending requests they may answer.
    pub(crate) async fn list(
        &self,
        identity: &Identity,
    ) -> Result<ListAccessRequestsResponse, Status> {
        let Identity::User { email } = identity else {
            return Ok(ListAccessRequestsResponse::default());
        };
        let person = person_digest(email);
        let mut mine = Vec::new();
        for slot in 0..self.settings.max_open_per_person {
            let open = self
                .control
                .access_request_in(&access_request_slot(&person, slot))
                .await
                .map_err(backend_status)?;
            mine.extend(open);
        }
        let mut pending = self
            .control
            .access_requests_in_state(ACCESS_PENDING, None, MAX_OPEN_REQUESTS)
            .await
            .map_err(backend_status)?;
        pending.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
        let me = identity.to_string();
        let to_answer = pending
            .into_iter()
            .filter(|request| {
                request.requester != me && self.approves(identity, &request.approvers)
            })
            .take(MAX_TO_ANSWER)
            .collect();
        mine.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
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
        // Platform admins may always refuse, even where no policy names an editor.
        if approve || !self.admins.include(identity) {
            // Who approves is read again now: a group no longer an editor no longer answers.
            let approvers = self.approvers(&request.namespace, &request.access).await?;
            if !self.approves(identity, &approvers) {
                let why = format!("answering it needs membership of one of {approvers:?}");
                return Err(denied(identity, action, &resource, why));
            }
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

    /// Ends grant `id` now, as its requester, an approver or a platform admin.
    pub(crate) async fn revoke(
        &self,
        identity: &Identity,
        id: &str,
    ) -> Result<AccessRequest, Status> {
        let resource = format!("access request {id}");
        let request = self.find(id).await?;
        if request.requester != identity.to_string() && !self.admins.include(identity) {
            let approvers = self.approvers(&request.namespace, &request.access).await?;
            if !self.approves(identity, &approvers) {
                let why = format!(
                    "revoking needs to be its requester or a member of one of {approvers:?}"
                );
                return Err(denied(identity, "revoke", &resource, why));
            }
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
        if access_request_workflow_id(id).is_none() {
            let shown: String = id.chars().take(80).collect();
            return Err(invalid(
                "id",
                format!("{shown:?} is not an access request id"),
            ));
        }
        self.control
            .access_request(id)
            .await
            .map_err(backend_status)?
            .ok_or_else(|| Status::not_found(format!("no access request {id}")))
    }
}

/// Unicode's invisible format characters: bidirectional overrides and isolates, zero-width
/// characters, the soft hyphen and the byte-order mark.
fn is_format(c: char) -> bool {
    matches!(
        c,
        // Format characters (Cf), line and paragraph separators (Zl, Zp).
        '\u{00AD}' | '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
            | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{08E2}'
            | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
            | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}'
            // Invisible joiners, variation selectors and fillers that hide or reshape text.
            | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}'
            | '\u{180B}'..='\u{180F}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}'
            // Private use (Co): no meaning an approver can read.
            | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}'
    )
}

/// A workflow's refusal is the caller's mistake, not a missing thing.
fn refused(error: BackendError) -> Status {
    match error {
        BackendError::Rejected(message) => Status::failed_precondition(message),
        other => backend_status(other),
    }
}

/// Names a person in request ids and slots: 16 hex digits of the SHA-256 of the lower-case
/// address, so ids carry no address and every spelling of one address is one person.
fn person_digest(email: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, email.to_ascii_lowercase().as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 8 random hex digits: requests that take one slot in turn have different ids.
fn random_hex() -> Result<String, Status> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Status::unavailable("no randomness for a request id"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::is_format;

    #[test]
    fn reasons_refuse_characters_that_hide_or_reshape_text_and_keep_every_script() {
        let hiding = [
            '\u{200B}',
            '\u{202E}',
            '\u{2028}',
            '\u{2029}',
            '\u{E0049}',
            '\u{FE0F}',
            '\u{E0100}',
            '\u{FFF9}',
            '\u{034F}',
            '\u{3164}',
            '\u{E000}',
            '\u{10FFFD}',
            '\u{206A}',
            '\u{1D173}',
            '\u{13430}',
            '\u{1BCA0}',
            '\u{0600}',
            '\u{180B}',
        ];
        for c in hiding {
            assert!(is_format(c), "U+{:04X} passes", c as u32);
        }
        let plain = "Paged for payments: José, 支払い, Ελληνικά, עברית, 🚨 incident #42";
        assert!(!plain.chars().any(is_format), "{plain}");
    }
}
