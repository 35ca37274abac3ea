//! The Temporal that runs the double's namespaces: each is registered there when its
//! creation completes, as Cloud brings a namespace up before reporting it active.

use std::time::Duration;

use temporalio_common::protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CountWorkflowExecutionsRequest, RegisterNamespaceRequest,
};
use tonic::Code;

const DAY_SECS: i64 = 24 * 3600;
/// How long a registered namespace may take to be served by the frontend.
const USABLE_WITHIN: Duration = Duration::from_secs(30);

/// Registers `name` on the frontend at `temporal` (already there is fine) and waits until
/// calls in it are served.
pub(crate) async fn register(
    temporal: &str,
    name: &str,
    retention_days: i32,
) -> Result<(), String> {
    let mut client = WorkflowServiceClient::connect(temporal.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    let request = RegisterNamespaceRequest {
        namespace: name.to_owned(),
        workflow_execution_retention_period: Some(prost_wkt_types::Duration {
            seconds: i64::from(retention_days.max(1)) * DAY_SECS,
            nanos: 0,
        }),
        ..Default::default()
    };
    match client.register_namespace(request).await {
        Ok(_) => {}
        Err(status) if status.code() == Code::AlreadyExists => {}
        Err(status) => return Err(status.message().to_owned()),
    }
    let deadline = tokio::time::Instant::now() + USABLE_WITHIN;
    loop {
        let count = CountWorkflowExecutionsRequest {
            namespace: name.to_owned(),
            ..Default::default()
        };
        match client.count_workflow_executions(count).await {
            Err(status) if status.code() == Code::NotFound => {
                if tokio::time::Instant::now() > deadline {
                    return Err("registered, but not served in time".into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => return Err(status.message().to_owned()),
            Ok(_) => return Ok(()),
        }
    }
}
