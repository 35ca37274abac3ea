//! The gRPC face of the double: Cloud's API key and version header on every call, then the
//! state's rules. Methods the double does not model answer `UNIMPLEMENTED`.

use std::sync::{Arc, Mutex, PoisonError};

use temporalio_common::protos::temporal::api::cloud::cloudservice::v1::*;
use temporalio_common::protos::temporal::api::cloud::identity::v1::{
    AccountAccess, ServiceAccount, ServiceAccountNamespaceAssignment, ServiceAccountSpec,
    UserNamespaceAssignment, account_access,
};
use temporalio_common::protos::temporal::api::cloud::region::v1::{Region, region};
use tonic::{Request, Response, Status};

use crate::API_VERSION_HEADER;
use crate::state::{Principals, State};

mod generated {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("temporal.api.cloud.cloudservice.v1");
}

use generated::cloud_service_server::{CloudService, CloudServiceServer};

type Shared = Arc<Mutex<State>>;

/// The service with its credentials check in front.
pub(crate) fn server(
    state: Shared,
) -> tonic::service::interceptor::InterceptedService<
    CloudServiceServer<Double>,
    impl tonic::service::Interceptor + Clone,
> {
    let shared = state.clone();
    CloudServiceServer::with_interceptor(Double { state }, move |request: Request<()>| {
        credentials(&lock(&shared), &request)?;
        Ok(request)
    })
}

/// The bearer key a call carries.
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Cloud's checks of who calls: a bearer API key it knows (the account's, or one a user or
/// service account owns), and an API version.
fn credentials(state: &State, request: &Request<()>) -> Result<(), Status> {
    let metadata = request.metadata();
    let token = bearer(request).ok_or_else(|| {
        Status::unauthenticated("missing API key: send Authorization: Bearer <key>")
    })?;
    if !state.settings.api_keys.iter().any(|key| key == token)
        && state.api_key_owner(token).is_none()
    {
        return Err(Status::unauthenticated("invalid API key"));
    }
    if metadata
        .get(API_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_none_or(str::is_empty)
    {
        return Err(Status::invalid_argument(format!(
            "missing {API_VERSION_HEADER} header"
        )));
    }
    Ok(())
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone)]
pub(crate) struct Double {
    state: Shared,
}

impl Double {
    /// Counts the call, applies the rate limit, and runs `f` on the state.
    fn call<T>(
        &self,
        method: &str,
        f: impl FnOnce(&mut State) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let mut state = lock(&self.state);
        state.admit(method)?;
        f(&mut state).map(Response::new)
    }
}

#[tonic::async_trait]
impl CloudService for Double {
    async fn get_current_identity(
        &self,
        request: Request<GetCurrentIdentityRequest>,
    ) -> Result<Response<GetCurrentIdentityResponse>, Status> {
        let token = bearer(&request).unwrap_or_default().to_owned();
        self.call("GetCurrentIdentity", |state| {
            if let Some(principal) = state.api_key_owner(&token) {
                return Ok(GetCurrentIdentityResponse {
                    principal: Some(principal),
                    principal_api_key: None,
                });
            }
            // The account's own keys are an admin service account's.
            let account = ServiceAccount {
                id: "sa-plinth".into(),
                spec: Some(ServiceAccountSpec {
                    name: "plinth".into(),
                    access: Some(
                        temporalio_common::protos::temporal::api::cloud::identity::v1::Access {
                            account_access: Some(AccountAccess {
                                role: account_access::Role::Admin as i32,
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            Ok(GetCurrentIdentityResponse {
                principal: Some(get_current_identity_response::Principal::ServiceAccount(
                    account,
                )),
                principal_api_key: None,
            })
        })
    }

    async fn get_regions(
        &self,
        _request: Request<GetRegionsRequest>,
    ) -> Result<Response<GetRegionsResponse>, Status> {
        self.call("GetRegions", |state| {
            let regions = state
                .settings
                .regions
                .iter()
                .map(|id| {
                    let (provider, region) = id.split_once('-').unwrap_or(("aws", id));
                    Region {
                        id: id.clone(),
                        cloud_provider: match provider {
                            "gcp" => region::CloudProvider::Gcp,
                            _ => region::CloudProvider::Aws,
                        } as i32,
                        cloud_provider_region: region.to_owned(),
                        location: region.to_owned(),
                        ..Default::default()
                    }
                })
                .collect();
            Ok(GetRegionsResponse { regions })
        })
    }

    async fn get_async_operation(
        &self,
        request: Request<GetAsyncOperationRequest>,
    ) -> Result<Response<GetAsyncOperationResponse>, Status> {
        let id = request.into_inner().async_operation_id;
        let (response, to_serve, temporal) = {
            let mut state = lock(&self.state);
            state.admit("GetAsyncOperation")?;
            let operation = state.poll(&id)?;
            (
                operation,
                state.to_serve(&id),
                state.settings.temporal.clone(),
            )
        };
        // A namespace is usable when its creation reports fulfilled: registered first.
        if let (Some((name, retention)), Some(temporal)) = (to_serve, temporal) {
            crate::backing::register(&temporal, &name, retention)
                .await
                .map_err(|e| {
                    Status::unavailable(format!("cloud double: {name} on {temporal}: {e}"))
                })?;
            lock(&self.state).served(name);
        }
        Ok(Response::new(GetAsyncOperationResponse {
            async_operation: Some(response),
        }))
    }

    async fn create_namespace(
        &self,
        request: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let request = request.into_inner();
        self.call("CreateNamespace", |state| {
            let spec = request
                .spec
                .ok_or_else(|| Status::invalid_argument("spec: required"))?;
            let (namespace, operation) =
                state.create_namespace(spec, request.tags, &request.async_operation_id)?;
            Ok(CreateNamespaceResponse {
                namespace,
                async_operation: Some(operation),
            })
        })
    }

    async fn get_namespace(
        &self,
        request: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = request.into_inner().namespace;
        self.call("GetNamespace", |state| {
            let namespace = state
                .namespace_by_id(&name)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("namespace {name:?} not found")))?;
            Ok(GetNamespaceResponse {
                namespace: Some(namespace),
            })
        })
    }

    async fn create_namespace_export_sink(
        &self,
        request: Request<CreateNamespaceExportSinkRequest>,
    ) -> Result<Response<CreateNamespaceExportSinkResponse>, Status> {
        let request = request.into_inner();
        self.call("CreateNamespaceExportSink", |state| {
            let operation = state.write_export_sink(
                &request.namespace,
                request.spec,
                None,
                &request.async_operation_id,
            )?;
            Ok(CreateNamespaceExportSinkResponse {
                async_operation: Some(operation),
            })
        })
    }

    async fn get_namespace_export_sink(
        &self,
        request: Request<GetNamespaceExportSinkRequest>,
    ) -> Result<Response<GetNamespaceExportSinkResponse>, Status> {
        let request = request.into_inner();
        self.call("GetNamespaceExportSink", |state| {
            Ok(GetNamespaceExportSinkResponse {
                sink: Some(state.export_sink(&request.namespace, &request.name)?),
            })
        })
    }

    async fn update_namespace_export_sink(
        &self,
        request: Request<UpdateNamespaceExportSinkRequest>,
    ) -> Result<Response<UpdateNamespaceExportSinkResponse>, Status> {
        let request = request.into_inner();
        self.call("UpdateNamespaceExportSink", |state| {
            let operation = state.write_export_sink(
                &request.namespace,
                request.spec,
                Some(&request.resource_version),
                &request.async_operation_id,
            )?;
            Ok(UpdateNamespaceExportSinkResponse {
                async_operation: Some(operation),
            })
        })
    }

    async fn get_audit_logs(
        &self,
        request: Request<GetAuditLogsRequest>,
    ) -> Result<Response<GetAuditLogsResponse>, Status> {
        let request = request.into_inner();
        let time = |t: Option<prost_wkt_types::Timestamp>| {
            t.and_then(|t| std::time::SystemTime::try_from(t).ok())
        };
        self.call("GetAuditLogs", |state| {
            let (logs, next_page_token) = state.audit_logs(
                request.page_size,
                &request.page_token,
                time(request.start_time_inclusive),
                time(request.end_time_exclusive),
            )?;
            Ok(GetAuditLogsResponse {
                logs,
                next_page_token,
            })
        })
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        self.call("GetNamespaces", |state| {
            Ok(GetNamespacesResponse {
                namespaces: state.namespaces(),
                next_page_token: String::new(),
            })
        })
    }

    async fn update_namespace(
        &self,
        request: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let request = request.into_inner();
        self.call("UpdateNamespace", |state| {
            let spec = request
                .spec
                .ok_or_else(|| Status::invalid_argument("spec: required"))?;
            let operation = state.update_namespace(
                &request.namespace,
                spec,
                &request.resource_version,
                &request.async_operation_id,
            )?;
            Ok(UpdateNamespaceResponse {
                async_operation: Some(operation),
            })
        })
    }

    async fn delete_namespace(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<DeleteNamespaceResponse>, Status> {
        let request = request.into_inner();
        self.call("DeleteNamespace", |state| {
            let operation = state.delete_namespace(
                &request.namespace,
                &request.resource_version,
                &request.async_operation_id,
            )?;
            Ok(DeleteNamespaceResponse {
                async_operation: Some(operation),
            })
        })
    }

    async fn get_users(
        &self,
        request: Request<GetUsersRequest>,
    ) -> Result<Response<GetUsersResponse>, Status> {
        let request = request.into_inner();
        self.call("GetUsers", |state| {
            let (users, next_page_token) = state.users_page(
                &request.email,
                &request.namespace,
                request.page_size,
                &request.page_token,
            )?;
            Ok(GetUsersResponse {
                users,
                next_page_token,
            })
        })
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let id = request.into_inner().user_id;
        self.call("GetUser", |state| {
            let user = state
                .user(&id)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("user {id:?} not found")))?;
            Ok(GetUserResponse { user: Some(user) })
        })
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let request = request.into_inner();
        self.call("CreateUser", |state| {
            let spec = request
                .spec
                .ok_or_else(|| Status::invalid_argument("spec: required"))?;
            let (user_id, operation) = state.create_user(spec, &request.async_operation_id)?;
            Ok(CreateUserResponse {
                user_id,
                async_operation: Some(operation),
            })
        })
    }

    async fn set_user_namespace_access(
        &self,
        request: Request<SetUserNamespaceAccessRequest>,
    ) -> Result<Response<SetUserNamespaceAccessResponse>, Status> {
        let request = request.into_inner();
        self.call("SetUserNamespaceAccess", |state| {
            let operation = state.set_user_access(
                &request.namespace,
                &request.user_id,
                request.access,
                &request.resource_version,
                &request.async_operation_id,
            )?;
            Ok(SetUserNamespaceAccessResponse {
                async_operation: Some(operation),
            })
        })
    }

    async fn get_user_namespace_assignments(
        &self,
        request: Request<GetUserNamespaceAssignmentsRequest>,
    ) -> Result<Response<GetUserNamespaceAssignmentsResponse>, Status> {
        let request = request.into_inner();
        self.call("GetUserNamespaceAssignments", |state| {
            let all: Vec<UserNamespaceAssignment> = state
                .assignments(&request.namespace, Principals::Users)?
                .into_iter()
                .map(|a| UserNamespaceAssignment {
                    id: a.id,
                    email: a.name,
                    namespace_access: Some(a.access),
                    inherited_access: false,
                    resource_version: a.resource_version,
                })
                .collect();
            let (users, next_page_token) =
                crate::state::page_of(all, request.page_size, &request.page_token)?;
            Ok(GetUserNamespaceAssignmentsResponse {
                users,
                next_page_token,
            })
        })
    }

    async fn get_service_accounts(
        &self,
        request: Request<GetServiceAccountsRequest>,
    ) -> Result<Response<GetServiceAccountsResponse>, Status> {
        let request = request.into_inner();
        self.call("GetServiceAccounts", |state| {
            let (service_account, next_page_token) =
                state.service_accounts_page(request.page_size, &request.page_token)?;
            Ok(GetServiceAccountsResponse {
                service_account,
                next_page_token,
            })
        })
    }

    async fn get_service_account(
        &self,
        request: Request<GetServiceAccountRequest>,
    ) -> Result<Response<GetServiceAccountResponse>, Status> {
        let id = request.into_inner().service_account_id;
        self.call("GetServiceAccount", |state| {
            let service_account = state
                .service_account(&id)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("service account {id:?} not found")))?;
            Ok(GetServiceAccountResponse {
                service_account: Some(service_account),
            })
        })
    }

    async fn set_service_account_namespace_access(
        &self,
        request: Request<SetServiceAccountNamespaceAccessRequest>,
    ) -> Result<Response<SetServiceAccountNamespaceAccessResponse>, Status> {
        let request = request.into_inner();
        self.call("SetServiceAccountNamespaceAccess", |state| {
            let operation = state.set_service_account_access(
                &request.namespace,
                &request.service_account_id,
                request.access,
                &request.resource_version,
                &request.async_operation_id,
            )?;
            Ok(SetServiceAccountNamespaceAccessResponse {
                async_operation: Some(operation),
            })
        })
    }

    async fn get_service_account_namespace_assignments(
        &self,
        request: Request<GetServiceAccountNamespaceAssignmentsRequest>,
    ) -> Result<Response<GetServiceAccountNamespaceAssignmentsResponse>, Status> {
        let request = request.into_inner();
        self.call("GetServiceAccountNamespaceAssignments", |state| {
            let all: Vec<ServiceAccountNamespaceAssignment> = state
                .assignments(&request.namespace, Principals::ServiceAccounts)?
                .into_iter()
                .map(|a| ServiceAccountNamespaceAssignment {
                    id: a.id,
                    name: a.name,
                    namespace_access: Some(a.access),
                    inherited_access: false,
                    resource_version: a.resource_version,
                })
                .collect();
            let (service_accounts, next_page_token) =
                crate::state::page_of(all, request.page_size, &request.page_token)?;
            Ok(GetServiceAccountNamespaceAssignmentsResponse {
                service_accounts,
                next_page_token,
            })
        })
    }
}
