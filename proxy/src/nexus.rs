//! Which namespace a Nexus endpoint hands operations to, asked of the upstream's endpoint
//! registry and kept for a short while: a command naming the endpoint acts on that namespace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message as _;
use temporalio_common::protos::temporal::api::nexus::v1::endpoint_target;
use temporalio_common::protos::temporal::api::operatorservice::v1::{
    ListNexusEndpointsRequest, ListNexusEndpointsResponse,
};
use tonic::Status;
use tonic::codegen::http::{HeaderMap, HeaderValue, uri::PathAndQuery};

use crate::frame::{GRPC_ENCODING, MAX_RESPONSE_BYTES, frame, unframe};
use crate::upstream::Upstream;

const LIST: &str = "/temporal.api.operatorservice.v1.OperatorService/ListNexusEndpoints";
/// An endpoint retargeted by an admin is seen within this.
const FRESH_FOR: Duration = Duration::from_secs(30);
/// Entries kept at most; the cache starts over past it.
const MAX_ENTRIES: usize = 4096;

/// Where an endpoint's operations go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A worker polling in this namespace.
    Namespace(String),
    /// A URL outside Temporal: no namespace stores what it is sent.
    External,
    /// No endpoint has the name (kept too, so made-up names do not each cost a lookup).
    Unregistered,
}

/// Endpoint targets by (upstream, endpoint name).
#[derive(Debug, Default)]
pub struct NexusEndpoints {
    known: Mutex<HashMap<(String, String), (Instant, Target)>>,
}

impl NexusEndpoints {
    /// The target of endpoint `name` on `upstream`'s cluster.
    pub(crate) async fn target(
        &self,
        upstream: &Upstream,
        upstream_name: &str,
        name: &str,
    ) -> Result<Target, Status> {
        let key = (upstream_name.to_owned(), name.to_owned());
        let cached = self
            .known
            .lock()
            .expect("nexus lock")
            .get(&key)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, target)| target.clone());
        let target = match cached {
            Some(target) => target,
            None => {
                let target = lookup(upstream, name).await?;
                let mut known = self.known.lock().expect("nexus lock");
                if known.len() >= MAX_ENTRIES {
                    known.clear();
                }
                known.insert(key, (Instant::now(), target.clone()));
                target
            }
        };
        match target {
            Target::Unregistered => Err(Status::failed_precondition(format!(
                "Nexus endpoint {name:?} is not registered"
            ))),
            target => Ok(target),
        }
    }
}

async fn lookup(upstream: &Upstream, name: &str) -> Result<Target, Status> {
    let unavailable =
        |why: String| Status::unavailable(format!("cannot look up Nexus endpoint {name:?}: {why}"));
    let request = ListNexusEndpointsRequest {
        page_size: 1,
        name: name.to_owned(),
        ..Default::default()
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    let reply = upstream
        .call(
            Some(&PathAndQuery::from_static(LIST)),
            headers,
            frame(&request.encode_to_vec()),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let status = reply.code();
    if status != Some(tonic::Code::Ok) {
        return Err(unavailable(format!("the registry answered {status:?}")));
    }
    let message = unframe(
        &reply.body,
        reply.head.headers.get(&GRPC_ENCODING),
        MAX_RESPONSE_BYTES,
    )
    .map_err(|e| unavailable(e.to_string()))?
    .map(|(message, _)| message)
    .unwrap_or_default();
    let listed =
        ListNexusEndpointsResponse::decode(message).map_err(|e| unavailable(e.to_string()))?;
    let Some(spec) = listed
        .endpoints
        .into_iter()
        .filter_map(|endpoint| endpoint.spec)
        .find(|spec| spec.name == name)
    else {
        return Ok(Target::Unregistered);
    };
    match spec.target.and_then(|target| target.variant) {
        Some(endpoint_target::Variant::Worker(worker)) => Ok(Target::Namespace(worker.namespace)),
        Some(endpoint_target::Variant::External(_)) => Ok(Target::External),
        None => Err(Status::failed_precondition(format!(
            "Nexus endpoint {name:?} has no target"
        ))),
    }
}
