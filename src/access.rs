//! `plinth access`: ask for temporary access to a namespace, answer requests, end grants.

use std::process::ExitCode;
use std::time::Duration;

use plinth_proto::v1::{
    AccessRequest, AccessRequestId, ListAccessRequestsRequest, RequestAccessRequest,
};

use crate::client::{Output, connect, print_rows, show, status_error};
use crate::config::Config;
use crate::home::Home;

#[derive(Debug, clap::Subcommand)]
pub enum AccessCommand {
    /// Ask for read or write access to a namespace for a while; the editors of its policies
    /// approve.
    Request(RequestArgs),
    /// What you asked for (pending and granted), and the requests waiting on you.
    Requests(ListArgs),
    /// Grant a request (an editor of the namespace's policies; never your own).
    Approve(IdArgs),
    /// Refuse a request.
    Deny(IdArgs),
    /// End a grant before its time (its requester or an approver).
    Revoke(IdArgs),
}

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The Temporal namespace.
    namespace: String,
    /// `read` or `write`.
    #[arg(long, value_parser = ["read", "write"])]
    level: String,
    /// How long the access lasts once approved, e.g. 2h or 30m.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Why you need it; the approvers and the audit trail see it.
    #[arg(long)]
    reason: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The request, e.g. ar-3f2a9c0d11b4.
    id: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

pub async fn run(
    config: &Config,
    home: &Home,
    command: &AccessCommand,
) -> anyhow::Result<ExitCode> {
    let mut api = connect(config, home).await?;
    match command {
        AccessCommand::Request(args) => {
            let request = api
                .request_access(RequestAccessRequest {
                    namespace: args.namespace.clone(),
                    access: args.level.clone(),
                    duration_seconds: i64::try_from(args.duration.as_secs()).unwrap_or(i64::MAX),
                    reason: args.reason.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            show(args.output, &request, || {
                println!(
                    "access request {} sent: {} on {} for {}; a member of {} approves it",
                    request.id,
                    request.access,
                    request.namespace,
                    humantime::format_duration(Duration::from_secs(
                        request.duration_seconds.unsigned_abs()
                    )),
                    request.approvers.join(" or ")
                )
            })?;
        }
        AccessCommand::Requests(args) => {
            let list = api
                .list_access_requests(ListAccessRequestsRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            show(args.output, &list, || {
                println!("Mine:");
                print_rows(&HEADER, rows(&list.mine));
                println!("\nWaiting on me:");
                print_rows(&HEADER, rows(&list.to_answer));
            })?;
        }
        AccessCommand::Approve(args) | AccessCommand::Deny(args) | AccessCommand::Revoke(args) => {
            let id = AccessRequestId {
                id: args.id.clone(),
            };
            let answered = match command {
                AccessCommand::Approve(_) => api.approve_access_request(id).await,
                AccessCommand::Deny(_) => api.deny_access_request(id).await,
                _ => api.revoke_access_request(id).await,
            }
            .map_err(status_error)?
            .into_inner();
            show(args.output, &answered, || match answered.state.as_str() {
                "granted" => println!(
                    "access request {} approved: {} has {} on {} until {}",
                    answered.id,
                    answered.requester,
                    answered.access,
                    answered.namespace,
                    answered.expires_at
                ),
                state => println!("access request {} {state}", answered.id),
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

const HEADER: [&str; 8] = [
    "ID",
    "NAMESPACE",
    "ACCESS",
    "FOR",
    "STATE",
    "REQUESTER",
    "EXPIRES",
    "REASON",
];

fn rows(requests: &[AccessRequest]) -> Vec<Vec<String>> {
    requests
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.namespace.clone(),
                r.access.clone(),
                humantime::format_duration(Duration::from_secs(r.duration_seconds.unsigned_abs()))
                    .to_string(),
                r.state.clone(),
                r.requester.clone(),
                r.expires_at.clone(),
                r.reason.clone(),
            ]
        })
        .collect()
}
