//! The `/scim/v2` endpoints (RFC 7644 §3): bearer token first, bounded bodies and
//! concurrency, then the store.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::filter::{self, Filter};
use crate::schema::{self, Kind};
use crate::{Resource, ScimError, ScimStore, StoreError, patch};

/// Largest request body read.
pub const MAX_BODY_BYTES: usize = 2 << 20;
/// Largest resource kept, as JSON: a store may hold it in one record (Temporal's memo and
/// payload limits are 2 MB). A group of 20,000 members fits.
pub const MAX_RESOURCE_BYTES: usize = 1_000_000;
/// Requests served at once; more are answered 429 at once.
const MAX_IN_FLIGHT: usize = 32;
/// Largest page of a list.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;
/// Tries of a change whose resource changed meanwhile, when the client named no version.
const TRIES: usize = 3;

const SCIM_JSON: &str = "application/scim+json";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// Told of every stored change that may give or take access: a group's members or name, a
/// person's status or address, a deletion.
#[async_trait::async_trait]
pub trait ChangeListener: Send + Sync + 'static {
    async fn access_changed(&self, what: String);
}

/// The SCIM service: [`ScimService::router`] serves it.
#[derive(Clone)]
pub struct ScimService {
    store: Arc<dyn ScimStore>,
    /// SHA-256 of the bearer token: compared as digests, so timing tells nothing of it.
    token: [u8; 32],
    listener: Option<Arc<dyn ChangeListener>>,
    in_flight: Arc<Semaphore>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl ScimService {
    /// Serves `store` to clients presenting `token`.
    pub fn new(store: Arc<dyn ScimStore>, token: &str) -> Self {
        Self {
            store,
            token: digest(token.as_bytes()),
            listener: None,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    pub fn on_access_change(mut self, listener: Arc<dyn ChangeListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// `/scim/v2/…`.
    pub fn router(self) -> Router {
        let state = Arc::new(self);
        let api = Router::new()
            .route("/ServiceProviderConfig", get(service_provider_config))
            .route("/ResourceTypes", get(resource_types))
            .route("/ResourceTypes/{name}", get(resource_type))
            .route("/Schemas", get(schemas))
            .route("/Schemas/{id}", get(one_schema))
            .route("/Users", get(list_users).post(create_user))
            .route(
                "/Users/{id}",
                get(get_user)
                    .put(put_user)
                    .patch(patch_user)
                    .delete(delete_user),
            )
            .route("/Groups", get(list_groups).post(create_group))
            .route(
                "/Groups/{id}",
                get(get_group)
                    .put(put_group)
                    .patch(patch_group)
                    .delete(delete_group),
            )
            .route("/.search", axum::routing::post(search))
            .fallback(not_found)
            .method_not_allowed_fallback(not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state);
        Router::new().nest("/scim/v2", api).fallback(not_found)
    }
}

type Shared = State<Arc<ScimService>>;

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = scim_json(status, self.body());
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn scim_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
}

/// Checks the bearer token, and holds one of the in-flight slots for the request.
async fn gate(State(service): Shared, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim())
        });
    if presented.is_none_or(|token| digest(token.as_bytes()) != service.token) {
        return ScimError::new(401, None, "a valid bearer token is required").into_response();
    }
    let Ok(_slot) = service.in_flight.clone().try_acquire_owned() else {
        let mut response = ScimError::new(
            429,
            None,
            format!("over {MAX_IN_FLIGHT} requests in flight; try again shortly"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

async fn not_found() -> Response {
    ScimError::new(404, None, "no such endpoint").into_response()
}

async fn search() -> Response {
    ScimError::new(
        501,
        None,
        "searching by POST is not supported; use GET with filter",
    )
    .into_response()
}

async fn not_allowed() -> Response {
    ScimError::new(405, None, "method not allowed here").into_response()
}

/// `https://<host>/scim/v2`, as the client reached it.
fn base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    format!("https://{host}/scim/v2")
}

async fn service_provider_config(headers: HeaderMap) -> Response {
    let base = base(&headers);
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://github.com/plinth-dev/plinth#scim",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_PAGE},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "The token in [scim] token_file, as Authorization: Bearer <token>.",
                "primary": true,
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base}/ServiceProviderConfig"),
            },
        }),
    )
}

fn resource_type_of(kind: Kind, base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": kind.name(),
        "name": kind.name(),
        "endpoint": format!("/{}", kind.endpoint()),
        "description": match kind { Kind::User => "People", Kind::Group => "Groups of people" },
        "schema": kind.schema(),
        "schemaExtensions": [],
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{base}/ResourceTypes/{}", kind.name()),
        },
    })
}

/// A ListResponse: the page from `start` (1-based) of `total` results.
fn list_response(total: usize, start: usize, page: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": page.len(),
        "Resources": page,
    })
}

fn list_of(resources: Vec<Value>) -> Value {
    list_response(resources.len(), 1, resources)
}

async fn resource_types(headers: HeaderMap) -> Response {
    let base = base(&headers);
    let types = [Kind::User, Kind::Group].map(|k| resource_type_of(k, &base));
    scim_json(StatusCode::OK, list_of(types.into()))
}

async fn resource_type(headers: HeaderMap, Path(name): Path<String>) -> Response {
    match [Kind::User, Kind::Group]
        .into_iter()
        .find(|k| k.name() == name)
    {
        Some(kind) => scim_json(StatusCode::OK, resource_type_of(kind, &base(&headers))),
        None => ScimError::new(404, None, format!("no resource type {name:?}")).into_response(),
    }
}

async fn schemas(headers: HeaderMap) -> Response {
    let base = base(&headers);
    let all = [Kind::User, Kind::Group].map(|k| schema::schema_resource(k, &base));
    scim_json(StatusCode::OK, list_of(all.into()))
}

async fn one_schema(headers: HeaderMap, Path(id): Path<String>) -> Response {
    match [Kind::User, Kind::Group]
        .into_iter()
        .find(|k| k.schema() == id)
    {
        Some(kind) => scim_json(
            StatusCode::OK,
            schema::schema_resource(kind, &base(&headers)),
        ),
        None => ScimError::new(404, None, format!("no schema {id:?}")).into_response(),
    }
}

/// Query parameters of reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadParams {
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

fn store_error(error: StoreError, kind: Kind, id: &str) -> ScimError {
    match error {
        StoreError::NotFound => ScimError::new(404, None, format!("no {} {id}", kind.name())),
        StoreError::Stale { current } => ScimError::new(
            412,
            None,
            format!(
                "{} {id} changed meanwhile: version {current} is current",
                kind.name()
            ),
        ),
        StoreError::Taken(name) => ScimError::new(
            409,
            Some("uniqueness"),
            format!("{} {name:?} is taken", kind.name_attribute()),
        ),
        StoreError::Unavailable(message) => {
            tracing::error!(error = %message, "SCIM store failed");
            ScimError::new(503, None, "the directory store is unavailable; try again")
        }
    }
}

/// Keeps only the attributes asked for (`attributes`) or drops those refused
/// (`excludedAttributes`); `id` and `schemas` always stay.
fn project(kind: Kind, mut shown: Map<String, Value>, params: &ReadParams) -> Map<String, Value> {
    let names = |list: &str| -> Vec<(String, Option<String>)> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|path| {
                let path = schema::strip_urn(kind, path);
                match path.split_once('.') {
                    Some((a, s)) => (a.to_ascii_lowercase(), Some(s.to_ascii_lowercase())),
                    None => (path.to_ascii_lowercase(), None),
                }
            })
            .collect()
    };
    let always = |key: &str| key == "id" || key == "schemas";
    if let Some(list) = &params.attributes {
        let wanted = names(list);
        shown.retain(|key, value| {
            let key_lower = key.to_ascii_lowercase();
            if always(key) {
                return true;
            }
            let subs: Vec<&String> = wanted
                .iter()
                .filter(|(a, _)| *a == key_lower)
                .filter_map(|(_, s)| s.as_ref())
                .collect();
            let whole = wanted.iter().any(|(a, s)| *a == key_lower && s.is_none());
            if whole {
                return true;
            }
            if subs.is_empty() {
                return false;
            }
            keep_subs(value, &subs);
            true
        });
    }
    if let Some(list) = &params.excluded_attributes {
        for (attribute, sub) in names(list) {
            let Some(key) = shown
                .keys()
                .find(|k| k.eq_ignore_ascii_case(&attribute) && !always(k))
                .cloned()
            else {
                continue;
            };
            match sub {
                None => {
                    shown.remove(&key);
                }
                Some(sub) => drop_sub(shown.get_mut(&key).expect("found above"), &sub),
            }
        }
    }
    shown
}

fn each_object(value: &mut Value) -> Vec<&mut Map<String, Value>> {
    match value {
        Value::Array(values) => values.iter_mut().filter_map(Value::as_object_mut).collect(),
        Value::Object(fields) => vec![fields],
        _ => Vec::new(),
    }
}

fn keep_subs(value: &mut Value, subs: &[&String]) {
    for fields in each_object(value) {
        fields.retain(|k, _| subs.iter().any(|s| k.eq_ignore_ascii_case(s)));
    }
}

fn drop_sub(value: &mut Value, sub: &str) {
    for fields in each_object(value) {
        fields.retain(|k, _| !k.eq_ignore_ascii_case(sub));
    }
}

/// The body of a change: a JSON object of a SCIM or JSON content type, sent as is.
fn object_body(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ScimError> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ScimError::new(
            415,
            None,
            "request bodies are read only as sent (no Content-Encoding)",
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(SCIM_JSON) && !essence.eq_ignore_ascii_case("application/json")
    {
        return Err(ScimError::new(
            415,
            None,
            format!("Content-Type must be {SCIM_JSON} or application/json"),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ScimError::bad_request(
            "invalidSyntax",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ScimError::bad_request(
            "invalidSyntax",
            format!("the body is not JSON: {e}"),
        )),
    }
}

/// A new resource's body must name its core schema (RFC 7643 §3).
fn check_schemas(kind: Kind, body: &Map<String, Value>) -> Result<(), ScimError> {
    let named = body
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(kind.schema())));
    if named {
        Ok(())
    } else {
        Err(ScimError::bad_request(
            "invalidSyntax",
            format!("schemas must hold {}", kind.schema()),
        ))
    }
}

/// The version an `If-Match` or `If-None-Match` header names: `W/"3"`, `"3"`, or `*`.
fn version_in(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<u64>, ScimError> {
    let Some(value) = headers.get(&name) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ScimError::bad_request(
                "invalidValue",
                format!("{name}: {text:?} is not an ETag of this server"),
            )
        })
}

/// Refuses attributes too large to keep.
fn check_size(kind: Kind, attributes: &Map<String, Value>) -> Result<(), ScimError> {
    let size = serde_json::to_vec(attributes).map_or(usize::MAX, |json| json.len());
    if size > MAX_RESOURCE_BYTES {
        return Err(ScimError::invalid_value(format!(
            "the {} would take {size} bytes, over the {MAX_RESOURCE_BYTES} one may take",
            kind.name()
        )));
    }
    Ok(())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `bytes` random bytes, in hex.
fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut random = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .expect("system randomness");
    random.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_id() -> String {
    random_hex(16)
}

/// A new bearer token for clients of the service: 256 random bits.
pub fn new_token() -> String {
    random_hex(32)
}

/// `resource` as served with `status`, narrowed as `params` ask.
fn shown(
    resource: &Resource,
    headers: &HeaderMap,
    status: StatusCode,
    params: &ReadParams,
) -> Response {
    let base = base(headers);
    let body = Value::Object(project(resource.kind, resource.render(&base), params));
    let mut response = scim_json(status, body);
    let etag = HeaderValue::from_str(&resource.etag()).expect("an ETag is ASCII");
    response.headers_mut().insert(header::ETAG, etag);
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!(
            "{base}/{}/{}",
            resource.kind.endpoint(),
            resource.id
        ))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Whether the change from `before` to `after` (`None`: deleted) can give or take access.
fn touches_access(kind: Kind, before: Option<&Resource>, after: Option<&Resource>) -> bool {
    let keys: &[&str] = match kind {
        Kind::User => &["active", "emails", "userName"],
        Kind::Group => &["displayName", "members"],
    };
    match (before, after) {
        (Some(before), Some(after)) => keys
            .iter()
            .any(|k| before.attributes.get(*k) != after.attributes.get(*k)),
        // A new User belongs to no group yet.
        (None, Some(_)) => kind == Kind::Group,
        _ => true,
    }
}

impl ScimService {
    async fn changed(
        &self,
        kind: Kind,
        id: &str,
        before: Option<&Resource>,
        after: Option<&Resource>,
    ) {
        if touches_access(kind, before, after) {
            self.notify(kind, id).await;
        }
    }

    async fn notify(&self, kind: Kind, id: &str) {
        if let Some(listener) = &self.listener {
            listener
                .access_changed(format!("{} {id}", kind.name()))
                .await;
        }
    }

    async fn list(
        &self,
        kind: Kind,
        headers: &HeaderMap,
        params: ReadParams,
    ) -> Result<Response, ScimError> {
        let filter: Option<Filter> = params.filter.as_deref().map(filter::parse).transpose()?;
        let by_id = filter.as_ref().and_then(|f| f.value_sought(kind, "id"));
        let by_name = filter
            .as_ref()
            .and_then(|f| f.value_sought(kind, kind.name_attribute()));
        let mut found = match by_id {
            // Entra checks membership with `id eq "…" and members[value eq "…"]`.
            Some(id) => self
                .store
                .get(kind, id)
                .await
                .map_err(|e| store_error(e, kind, id))?
                .into_iter()
                .collect(),
            None => self
                .store
                .list(kind, by_name)
                .await
                .map_err(|e| store_error(e, kind, "list"))?,
        };
        found.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        let base = base(headers);
        let matching: Vec<Map<String, Value>> = found
            .iter()
            .map(|r| r.render(&base))
            .filter(|shown| filter.as_ref().is_none_or(|f| f.matches(kind, shown)))
            .collect();
        let total = matching.len();
        let start = usize::try_from(params.start_index.unwrap_or(1).max(1)).unwrap_or(1);
        let count = usize::try_from(params.count.unwrap_or(DEFAULT_PAGE as i64).max(0))
            .unwrap_or(0)
            .min(MAX_PAGE);
        let page = matching
            .into_iter()
            .skip(start - 1)
            .take(count)
            .map(|shown| Value::Object(project(kind, shown, &params)))
            .collect::<Vec<_>>();
        Ok(scim_json(StatusCode::OK, list_response(total, start, page)))
    }

    async fn read(
        &self,
        kind: Kind,
        id: &str,
        headers: &HeaderMap,
        params: ReadParams,
    ) -> Result<Response, ScimError> {
        let resource = self
            .store
            .get(kind, id)
            .await
            .map_err(|e| store_error(e, kind, id))?
            .ok_or_else(|| store_error(StoreError::NotFound, kind, id))?;
        if version_in(headers, header::IF_NONE_MATCH)? == Some(resource.version) {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        Ok(shown(&resource, headers, StatusCode::OK, &params))
    }

    async fn create(
        &self,
        kind: Kind,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ScimError> {
        let body = object_body(headers, &body)?;
        check_schemas(kind, &body)?;
        let attributes = schema::normalize(kind, &body)?;
        check_size(kind, &attributes)?;
        let stamp = now();
        let resource = Resource {
            kind,
            id: new_id(),
            version: 1,
            created: stamp.clone(),
            modified: stamp,
            attributes,
        };
        self.store
            .create(&resource)
            .await
            .map_err(|e| store_error(e, kind, &resource.id))?;
        tracing::info!(kind = kind.name(), id = %resource.id, name = resource.name(), "SCIM resource created");
        self.changed(kind, &resource.id, None, Some(&resource))
            .await;
        Ok(shown(
            &resource,
            headers,
            StatusCode::CREATED,
            &ReadParams::default(),
        ))
    }

    /// Replaces (PUT) or patches the resource, based on the version `If-Match` names or, when
    /// none is named, on the current one (tried again if it changes meanwhile).
    async fn change(
        &self,
        kind: Kind,
        id: &str,
        headers: &HeaderMap,
        body: Bytes,
        patching: bool,
    ) -> Result<Response, ScimError> {
        let body = object_body(headers, &body)?;
        let asked = version_in(headers, header::IF_MATCH)?;
        for _ in 0..TRIES {
            let current = self
                .store
                .get(kind, id)
                .await
                .map_err(|e| store_error(e, kind, id))?
                .ok_or_else(|| store_error(StoreError::NotFound, kind, id))?;
            if let Some(asked) = asked
                && asked != current.version
            {
                return Err(store_error(
                    StoreError::Stale {
                        current: current.version,
                    },
                    kind,
                    id,
                ));
            }
            let attributes = if patching {
                patch::apply(kind, &current.attributes, &Value::Object(body.clone()))?
            } else {
                schema::normalize(kind, &body)?
            };
            if attributes == current.attributes {
                // Perhaps a retry of a change whose answer was lost: its reload may be too.
                self.notify(kind, id).await;
                return Ok(shown(
                    &current,
                    headers,
                    StatusCode::OK,
                    &ReadParams::default(),
                ));
            }
            check_size(kind, &attributes)?;
            let next = Resource {
                version: current.version + 1,
                modified: now(),
                attributes,
                ..current.clone()
            };
            match self.store.replace(&next, &current).await {
                Ok(()) => {
                    tracing::info!(kind = kind.name(), %id, version = next.version, "SCIM resource changed");
                    self.changed(kind, id, Some(&current), Some(&next)).await;
                    return Ok(shown(
                        &next,
                        headers,
                        StatusCode::OK,
                        &ReadParams::default(),
                    ));
                }
                Err(StoreError::Stale { .. }) if asked.is_none() => continue,
                Err(e) => return Err(store_error(e, kind, id)),
            }
        }
        Err(ScimError::new(
            409,
            None,
            format!("{} {id} kept changing; try again", kind.name()),
        ))
    }

    async fn delete(
        &self,
        kind: Kind,
        id: &str,
        headers: &HeaderMap,
    ) -> Result<Response, ScimError> {
        let asked = version_in(headers, header::IF_MATCH)?;
        let before = self
            .store
            .get(kind, id)
            .await
            .map_err(|e| store_error(e, kind, id))?;
        let Some(before) = before else {
            // Perhaps a retry of a deletion whose answer was lost: its reload may be too.
            self.notify(kind, id).await;
            return Err(store_error(StoreError::NotFound, kind, id));
        };
        if let Some(asked) = asked
            && asked != before.version
        {
            let stale = StoreError::Stale {
                current: before.version,
            };
            return Err(store_error(stale, kind, id));
        }
        self.store
            .delete(kind, id, asked)
            .await
            .map_err(|e| store_error(e, kind, id))?;
        tracing::info!(kind = kind.name(), %id, "SCIM resource deleted");
        self.changed(kind, id, Some(&before), None).await;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// Query parameters, or a SCIM error naming the one that does not read.
fn read_params(params: Result<Query<ReadParams>, QueryRejection>) -> Result<ReadParams, ScimError> {
    params.map(|Query(params)| params).map_err(|e| {
        ScimError::bad_request(
            "invalidValue",
            format!("query parameters: {}", e.body_text()),
        )
    })
}

fn answer(result: Result<Response, ScimError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

macro_rules! endpoints {
    ($kind:expr, $list:ident, $create:ident, $get:ident, $put:ident, $patch:ident, $delete:ident) => {
        async fn $list(
            State(s): Shared,
            headers: HeaderMap,
            params: Result<Query<ReadParams>, QueryRejection>,
        ) -> Response {
            answer(async { s.list($kind, &headers, read_params(params)?).await }.await)
        }
        async fn $create(State(s): Shared, headers: HeaderMap, body: Bytes) -> Response {
            answer(s.create($kind, &headers, body).await)
        }
        async fn $get(
            State(s): Shared,
            headers: HeaderMap,
            Path(id): Path<String>,
            params: Result<Query<ReadParams>, QueryRejection>,
        ) -> Response {
            answer(async { s.read($kind, &id, &headers, read_params(params)?).await }.await)
        }
        async fn $put(
            State(s): Shared,
            headers: HeaderMap,
            Path(id): Path<String>,
            body: Bytes,
        ) -> Response {
            answer(s.change($kind, &id, &headers, body, false).await)
        }
        async fn $patch(
            State(s): Shared,
            headers: HeaderMap,
            Path(id): Path<String>,
            body: Bytes,
        ) -> Response {
            answer(s.change($kind, &id, &headers, body, true).await)
        }
        async fn $delete(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
            answer(s.delete($kind, &id, &headers).await)
        }
    };
}

endpoints!(
    Kind::User,
    list_users,
    create_user,
    get_user,
    put_user,
    patch_user,
    delete_user
);
endpoints!(
    Kind::Group,
    list_groups,
    create_group,
    get_group,
    put_group,
    patch_group,
    delete_group
);

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::MemoryStore;
    use crate::schema::{GROUP_SCHEMA, USER_SCHEMA};

    const TOKEN: &str = "t0ken-of-the-test";

    fn app() -> Router {
        ScimService::new(Arc::new(MemoryStore::default()), TOKEN).router()
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "plinth.test")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, SCIM_JSON);
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, value)
    }

    fn user(name: &str) -> Value {
        json!({"schemas": [USER_SCHEMA], "userName": name, "active": true})
    }

    #[tokio::test]
    async fn a_request_without_the_token_is_refused() {
        let app = app();
        let request = axum::http::Request::get("/scim/v2/Users")
            .header(header::AUTHORIZATION, "Bearer wrong")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[tokio::test]
    async fn a_user_is_created_found_by_name_and_paged() {
        let app = app();
        for name in ["ann@x", "bob@x", "cy@x"] {
            let (status, headers, body) =
                call(&app, "POST", "/scim/v2/Users", Some(user(name)), &[]).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            assert_eq!(
                headers[header::LOCATION],
                body["meta"]["location"].as_str().unwrap()
            );
            assert_eq!(body["meta"]["version"], "W/\"1\"");
        }
        let (_, _, found) = call(
            &app,
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22BOB@x%22",
            None,
            &[],
        )
        .await;
        assert_eq!(found["totalResults"], 1);
        assert_eq!(found["Resources"][0]["userName"], "bob@x");
        let (_, _, page) = call(
            &app,
            "GET",
            "/scim/v2/Users?startIndex=2&count=1&attributes=userName",
            None,
            &[],
        )
        .await;
        assert_eq!(
            (page["totalResults"].as_u64(), page["itemsPerPage"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(
            page["Resources"][0]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["id", "schemas", "userName"]
        );
        let (status, _, taken) =
            call(&app, "POST", "/scim/v2/Users", Some(user("ANN@x")), &[]).await;
        assert_eq!(
            (status, taken["scimType"].as_str()),
            (StatusCode::CONFLICT, Some("uniqueness"))
        );
    }

    #[tokio::test]
    async fn a_change_based_on_an_old_version_is_refused() {
        let app = app();
        let (_, _, created) = call(&app, "POST", "/scim/v2/Users", Some(user("ann@x")), &[]).await;
        let uri = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
        let deactivate = json!({"schemas": [patch::PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": false}]});
        let (status, headers, patched) = call(
            &app,
            "PATCH",
            &uri,
            Some(deactivate.clone()),
            &[("If-Match", "W/\"1\"")],
        )
        .await;
        assert_eq!(
            (status, patched["active"].as_bool()),
            (StatusCode::OK, Some(false))
        );
        assert_eq!(headers[header::ETAG], "W/\"2\"");
        let (status, _, _) = call(
            &app,
            "PUT",
            &uri,
            Some(user("ann@x")),
            &[("If-Match", "W/\"1\"")],
        )
        .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        let (status, _, _) = call(&app, "GET", &uri, None, &[("If-None-Match", "W/\"2\"")]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let (status, _, _) = call(&app, "DELETE", &uri, None, &[("If-Match", "W/\"1\"")]).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        let (status, _, _) = call(&app, "DELETE", &uri, None, &[]).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, gone) = call(&app, "GET", &uri, None, &[]).await;
        assert_eq!(
            (status, gone["status"].as_str()),
            (StatusCode::NOT_FOUND, Some("404"))
        );
    }

    #[tokio::test]
    async fn a_group_too_large_to_keep_is_refused_and_changes_nothing() {
        let app = app();
        let member = |i: usize| json!({"value": format!("{i:0>64}"), "type": "User"});
        let members: Vec<Value> = (0..20_000).map(member).collect();
        let group =
            json!({"schemas": [GROUP_SCHEMA], "displayName": "everyone", "members": members});
        let (status, _, error) = call(&app, "POST", "/scim/v2/Groups", Some(group), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error["detail"]
                .as_str()
                .unwrap()
                .contains("bytes, over the"),
            "{error}"
        );
        let (_, _, listed) = call(&app, "GET", "/scim/v2/Groups", None, &[]).await;
        assert_eq!(listed["totalResults"], 0);
    }

    #[tokio::test]
    async fn compressed_or_untyped_bodies_are_refused_before_reading() {
        let app = app();
        let (status, _, _) = call(
            &app,
            "POST",
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP_SCHEMA], "displayName": "g"})),
            &[("Content-Encoding", "gzip")],
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (status, _, error) = call(
            &app,
            "POST",
            "/scim/v2/Groups",
            Some(json!({"displayName": "g"})),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error["detail"].as_str().unwrap().contains(GROUP_SCHEMA));
    }
}
