//! `/v1/webhooks/...`: endpoints (create, list, read, update, delete, rotate the secret,
//! replay failed messages), messages and their attempts (list, read, replay), the event
//! catalogue; and `POST /webhooks/in/{partner}/{source}` for partners' systems.
//!
//! Who may do what: admin keys manage every endpoint; partner keys their own partner's;
//! app keys (the company's product back end) the app's endpoints, which hear every
//! partner's events. Finance keys have no business here.

use crate::http::Path;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::endpoint::{Endpoint, EndpointPatch, NewEndpoint};
use super::signature::Scheme;
use super::store::{self, EndpointRow, MessageFilter, Owner};
use crate::apikeys::Role;
use crate::http::auth::Caller;
use crate::http::list::{Page, Paging};
use crate::http::{ApiError, Body, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, delete))
        .routes(routes!(rotate))
        .routes(routes!(replay_endpoint))
        .routes(routes!(list_messages))
        .routes(routes!(read_message))
        .routes(routes!(attempts))
        .routes(routes!(replay_message))
        .routes(routes!(event_types))
        .route(
            "/webhooks/in/{partner}/{source}",
            post(super::inbound::receive),
        )
}

/// A new endpoint, with its `v1` secret shown this once.
#[derive(Serialize, utoipa::ToSchema)]
struct EndpointCreated {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// `whsec_...`: v1 endpoints only, shown only here; sign checks with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

crate::page_schema!(EndpointList, Endpoint, "A page of endpoints, oldest first.");

#[derive(Serialize, utoipa::ToSchema)]
struct SecretRotated {
    endpoint_id: String,
    scheme: Scheme,
    version: i32,
    /// The previous secret keeps signing beside the new one until then.
    previous_signs_until: String,
    /// v1a: the new public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    /// v1: the new secret, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EndpointReplayed {
    endpoint_id: String,
    /// Failed deliveries queued again.
    replayed: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MessageReplayed {
    message_id: String,
    endpoints: Vec<String>,
    replayed: u64,
}

/// A message and its delivery to each endpoint.
#[derive(Serialize, utoipa::ToSchema)]
struct MessageView {
    id: String,
    /// None for messages of the company's app.
    partner: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    created_at: String,
    /// Set once the payload was dropped after the retention period.
    purged_at: Option<String>,
    deliveries: Vec<DeliveryView>,
    /// The message body as sent (`GET /v1/webhooks/messages/{id}` only; null once purged).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryView {
    /// `dlv_...`: the message's delivery to one endpoint.
    delivery_id: String,
    endpoint_id: String,
    /// pending, sending, delivered, failed or cancelled.
    state: String,
    attempts: i32,
    next_attempt_at: Option<String>,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: String,
    finished_at: Option<String>,
}

crate::page_schema!(
    MessageList,
    MessageView,
    "A page of messages, newest first."
);

#[derive(Serialize, utoipa::ToSchema)]
struct AttemptView {
    /// `att_...`
    id: String,
    message_id: String,
    delivery_id: String,
    endpoint_id: String,
    attempt: i32,
    started_at: String,
    duration_ms: f64,
    /// The receiver's HTTP status; null when no answer came.
    status: Option<i32>,
    outcome: String,
    error: Option<String>,
    #[schema(value_type = Option<Object>)]
    response_headers: Option<Value>,
    /// The start of the receiver's answer.
    response_body: Option<String>,
    next_attempt_at: Option<String>,
}

crate::page_schema!(
    AttemptList,
    AttemptView,
    "A page of a message's attempts, first first."
);

/// An event type: `type`, `description` and an `example` body.
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
struct EventType(Value);

crate::page_schema!(
    EventTypeList,
    EventType,
    "A page of the event type catalogue."
);

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

/// Deliveries and attempts are numbered by the store; the API shows them with a prefix as
/// every other id.
fn delivery_id(n: i64) -> String {
    format!("dlv_{n}")
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("expected {shape}: {e}")))
}

fn manager(caller: &Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Admin, Role::Partner, Role::App])
}

/// Whether the caller may manage (and read) this endpoint.
fn may_manage(caller: &Caller, partner: Option<&str>) -> bool {
    match caller.role {
        Role::Admin => true,
        Role::Partner => partner.is_some() && caller.partner_id.as_deref() == partner,
        Role::App => partner.is_none(),
        Role::Finance => false,
    }
}

/// The endpoint, if it exists and the caller may manage it; otherwise 404 (an endpoint of
/// another partner is not confirmed to exist).
async fn owned_endpoint(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<EndpointRow, ApiError> {
    manager(caller)?;
    match store::get_endpoint(&state.db, id).await? {
        Some(e) if may_manage(caller, e.partner_id.as_deref()) => Ok(e),
        _ => Err(ApiError::NotFound(format!("no webhook endpoint {id:?}"))),
    }
}

pub use super::manage::open_secret;

fn view(e: &EndpointRow, public_key: Option<String>) -> Endpoint {
    Endpoint {
        id: e.id.clone(),
        partner: e.partner_id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: store::event_types(&e.event_types),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        rate_limit: e.rate_limit,
        ordered: e.ordered,
        scheme: Scheme::parse(&e.scheme).unwrap_or(Scheme::V1),
        public_key,
        failing_since: e.failing_since_us.map(store::rfc3339),
        created_at: store::rfc3339(e.created_at_us),
        updated_at: store::rfc3339(e.updated_at_us),
    }
}

async fn views(state: &AppState, rows: &[EndpointRow]) -> Result<Vec<Endpoint>, ApiError> {
    let ids: Vec<&str> = rows.iter().map(|e| e.id.as_str()).collect();
    let keys: std::collections::HashMap<String, String> = store::public_keys(&state.db, &ids)
        .await?
        .into_iter()
        .collect();
    Ok(rows
        .iter()
        .map(|e| view(e, keys.get(&e.id).cloned()))
        .collect())
}

/// Create an endpoint: 201 with its secret, shown this once (`v1`), or its public key
/// (`v1a`; the private key never leaves the gateway).
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    operation_id = "create_webhook_endpoint",
    request_body = super::endpoint::NewEndpoint,
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 201, description = "Created; a v1 endpoint's secret is shown this once", body = EndpointCreated),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
        (status = 422, description = "The partner (or the app) has `webhooks.max_endpoints_per_partner` endpoints already (`too_many_endpoints`)", body = crate::http::error::ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    manager(&caller)?;
    let req: NewEndpoint = parse(&body, "an endpoint object: {\"url\", \"event_types\", ...}")?;
    let partner = match (caller.role, req.partner.as_deref(), req.app) {
        (_, Some(_), true) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give either `partner` or `app: true`, not both",
            ));
        }
        (Role::Admin, None, false) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "admin keys name the endpoint's `partner`, or set `app: true` for an endpoint of the company's app",
            ));
        }
        (Role::Admin, Some(p), false) => Some(p.to_owned()),
        (Role::Admin | Role::App, None, true) => None,
        (Role::App, None, false) => None,
        (Role::App, Some(_), false) => {
            return Err(ApiError::Forbidden(
                "app keys manage the app's own endpoints; leave `partner` out".into(),
            ));
        }
        (Role::Partner, p, false) => {
            let own = caller.partner_id.clone().unwrap_or_default();
            if let Some(p) = p {
                caller.check_partner(p)?;
            }
            Some(own)
        }
        (_, _, true) => {
            return Err(ApiError::Forbidden(
                "only admin and app keys create endpoints of the company's app".into(),
            ));
        }
        (Role::Finance, ..) => {
            return Err(ApiError::Forbidden(
                "finance keys do not manage webhooks".into(),
            ));
        }
    };
    let scheme = req.scheme;
    let created = super::manage::create(&state, partner, req, &caller.who(&headers)).await?;
    let body = EndpointCreated {
        endpoint: view(&created.row, created.key.public_key()),
        secret: (scheme == Scheme::V1).then(|| created.key.encode()),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Admin keys: one partner's endpoints.
    partner: Option<String>,
    /// Admin keys: the company's app endpoints.
    #[serde(default)]
    app: bool,
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    operation_id = "list_webhook_endpoints",
    params(ListQuery),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "A page of the endpoints the key manages, oldest first", body = EndpointList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<Endpoint>>, ApiError> {
    manager(&caller)?;
    let paging = Paging::new("webhook_endpoints", q.limit, q.cursor.as_deref())?;
    let owner = match caller.role {
        Role::Partner => {
            if let Some(p) = &q.partner {
                caller.check_partner(p)?;
            }
            Owner::Partner(caller.partner_id.as_deref().unwrap_or(""))
        }
        Role::App => Owner::App,
        _ if q.app => Owner::App,
        _ => q.partner.as_deref().map_or(Owner::All, Owner::Partner),
    };
    // Endpoints are few per owner (`webhooks.max_endpoints_per_partner`): paged in memory.
    let rows = store::list_endpoints(&state.db, owner).await?;
    let page = paging.page_sorted(rows, |e| (e.created_at_us, e.id.clone()))?;
    Ok(Json(Page {
        data: views(&state, &page.data).await?,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    operation_id = "get_webhook_endpoint",
    params(("id" = String, Path, description = "The endpoint's id (ep_...)")),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    let row = owned_endpoint(&state, &caller, &id).await?;
    let mut v = views(&state, std::slice::from_ref(&row)).await?;
    v.pop()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no webhook endpoint {id:?}")))
}

#[utoipa::path(
    patch,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    operation_id = "update_webhook_endpoint",
    params(("id" = String, Path, description = "The endpoint's id (ep_...)")),
    request_body = super::endpoint::EndpointPatch,
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "The endpoint as changed", body = Endpoint),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
/// Change fields; enabling a disabled endpoint clears its reason and failure clock, and its
/// waiting deliveries go out again.
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Endpoint>, ApiError> {
    let row = owned_endpoint(&state, &caller, &id).await?;
    let patch: EndpointPatch = parse(&body, "the endpoint fields to change")?;
    super::manage::update(&state, row, patch, &caller.who(&headers)).await?;
    read(State(state), caller, Path(id)).await
}

/// Delete an endpoint; its waiting deliveries are cancelled.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook_endpoint",
    params(("id" = String, Path, description = "The endpoint's id (ep_...)")),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = owned_endpoint(&state, &caller, &id).await?;
    super::manage::delete(&state, &row, &caller.who(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/rotate-secret",
    tag = "webhooks",
    operation_id = "rotate_webhook_secret",
    params(("id" = String, Path, description = "The endpoint's id (ep_...)")),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "The new secret or public key", body = SecretRotated),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
/// A new secret (shown once); the old one keeps signing beside it for
/// `webhooks.rotation_overlap_secs`, so receivers can switch without losing a message.
async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SecretRotated>, ApiError> {
    let row = owned_endpoint(&state, &caller, &id).await?;
    let r = super::manage::rotate(&state, &row, &caller.who(&headers)).await?;
    let (scheme, version, retire_at) = (r.scheme, r.version, r.retire_at);
    let public_key = r.key.public_key();
    let secret = public_key.is_none().then(|| r.key.encode());
    Ok(Json(SecretRotated {
        endpoint_id: id,
        scheme,
        version,
        previous_signs_until: crate::time::rfc3339(retire_at),
        public_key,
        secret,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"since": "2026-11-02T00:00:00Z"}))]
struct ReplaySince {
    /// RFC 3339: deliveries that failed for good since then are queued again.
    since: String,
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/replay",
    tag = "webhooks",
    operation_id = "replay_webhook_endpoint",
    params(("id" = String, Path, description = "The endpoint's id (ep_...)")),
    request_body = ReplaySince,
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 202, description = "Queued again", body = EndpointReplayed),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
/// Replay every message whose delivery to this endpoint failed for good since a time.
async fn replay_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<EndpointReplayed>), ApiError> {
    let row = owned_endpoint(&state, &caller, &id).await?;
    let req: ReplaySince = parse(&body, "{\"since\": \"<RFC 3339 time>\"}")?;
    let since = DateTime::parse_from_rfc3339(&req.since)
        .map_err(|e| {
            ApiError::bad_request("invalid_body", format!("since: not an RFC 3339 time: {e}"))
        })?
        .with_timezone(&Utc);
    let n = super::manage::replay_failed(&state, &row, since, &caller.who(&headers)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EndpointReplayed {
            endpoint_id: id,
            replayed: n,
        }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MessagesQuery {
    partner: Option<String>,
    /// Only messages with a delivery to this endpoint.
    endpoint: Option<String>,
    /// An event type, e.g. `launch.completed`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Deliveries in this state: pending, sending, delivered, failed or cancelled.
    state: Option<String>,
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

const DELIVERY_STATES: [&str; 5] = ["pending", "sending", "delivered", "failed", "cancelled"];

/// Messages, newest first, with their deliveries.
#[utoipa::path(
    get,
    path = "/v1/webhooks/messages",
    tag = "webhooks",
    operation_id = "list_webhook_messages",
    params(MessagesQuery),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "A page of messages", body = MessageList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Page<MessageView>>, ApiError> {
    manager(&caller)?;
    let paging = Paging::new("webhook_messages", q.limit, q.cursor.as_deref())?;
    if let Some(s) = &q.state
        && !DELIVERY_STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("state must be one of {}", DELIVERY_STATES.join(", ")),
        ));
    }
    let mut partner = q.partner.clone();
    if caller.role == Role::Partner {
        if let Some(p) = &partner {
            caller.check_partner(p)?;
        }
        partner = caller.partner_id.clone();
    }
    if let Some(e) = &q.endpoint {
        owned_endpoint(&state, &caller, e).await?;
    }
    let rows = store::list_messages(
        &state.db,
        &MessageFilter {
            partner,
            endpoint: q.endpoint.clone(),
            event_type: q.event_type.clone(),
            state: q.state.clone(),
            before: paging.after()?,
            limit: paging.fetch(),
        },
    )
    .await?;
    let visible = visible_endpoints(&state, &caller).await?;
    let page = paging.page(rows, |m| m.id.clone());
    let ids: Vec<&str> = page.data.iter().map(|m| m.id.as_str()).collect();
    let deliveries = store::deliveries_of(&state.db, &ids).await?;
    Ok(Json(Page {
        data: page
            .data
            .iter()
            .map(|m| message_view(m, &deliveries, visible.as_ref(), false))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Endpoints whose deliveries a partner key may see (`None`: all).
async fn visible_endpoints(
    state: &AppState,
    caller: &Caller,
) -> Result<Option<std::collections::HashSet<String>>, ApiError> {
    if caller.role != Role::Partner {
        return Ok(None);
    }
    let own = caller.partner_id.as_deref().unwrap_or("");
    let rows = store::list_endpoints(&state.db, Owner::Partner(own)).await?;
    Ok(Some(rows.into_iter().map(|e| e.id).collect()))
}

fn message_view(
    m: &store::MessageRow,
    deliveries: &[store::DeliveryRow],
    visible: Option<&std::collections::HashSet<String>>,
    with_payload: bool,
) -> MessageView {
    let deliveries = deliveries
        .iter()
        .filter(|d| d.message_id == m.id && visible.is_none_or(|v| v.contains(&d.endpoint_id)))
        .map(|d| DeliveryView {
            delivery_id: delivery_id(d.id),
            endpoint_id: d.endpoint_id.clone(),
            state: d.state.clone(),
            attempts: d.attempts,
            next_attempt_at: matches!(d.state.as_str(), "pending")
                .then(|| store::rfc3339(d.next_at_us)),
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            created_at: store::rfc3339(d.created_at_us),
            finished_at: d.finished_at_us.map(store::rfc3339),
        })
        .collect();
    MessageView {
        id: m.id.clone(),
        partner: m.partner_id.clone(),
        event_type: m.event_type.clone(),
        created_at: store::rfc3339(m.created_at_us),
        purged_at: m.purged_at_us.map(store::rfc3339),
        deliveries,
        payload: with_payload.then(|| {
            m.payload
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(Value::Null)
        }),
    }
}

/// A message the caller may see: partner keys see their own partner's messages.
async fn visible_message(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<store::MessageRow, ApiError> {
    manager(caller)?;
    match store::get_message(&state.db, id).await? {
        Some(m)
            if caller.role != Role::Partner
                || (m.partner_id.is_some() && m.partner_id == caller.partner_id) =>
        {
            Ok(m)
        }
        _ => Err(ApiError::NotFound(format!("no webhook message {id:?}"))),
    }
}

/// A message with its payload and deliveries.
#[utoipa::path(
    get,
    path = "/v1/webhooks/messages/{id}",
    tag = "webhooks",
    operation_id = "get_webhook_message",
    params(("id" = String, Path, description = "The message's id (msg_...)")),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "The message", body = MessageView),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn read_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let m = visible_message(&state, &caller, &id).await?;
    let deliveries = store::deliveries_of(&state.db, &[m.id.as_str()]).await?;
    let visible = visible_endpoints(&state, &caller).await?;
    Ok(Json(message_view(&m, &deliveries, visible.as_ref(), true)))
}

/// Every delivery attempt of a message: when, how long, the receiver's answer.
#[utoipa::path(
    get,
    path = "/v1/webhooks/messages/{id}/attempts",
    tag = "webhooks",
    operation_id = "list_webhook_attempts",
    params(("id" = String, Path, description = "The message's id (msg_...)"), PageQuery),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "A page of the attempts, first first", body = AttemptList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<AttemptView>>, ApiError> {
    let paging = Paging::new("webhook_attempts", q.limit, q.cursor.as_deref())?;
    let m = visible_message(&state, &caller, &id).await?;
    let visible = visible_endpoints(&state, &caller).await?;
    let rows = store::attempts_of(&state.db, &m.id).await?;
    let rows: Vec<store::AttemptRow> = rows
        .into_iter()
        .filter(|a| visible.as_ref().is_none_or(|v| v.contains(&a.endpoint_id)))
        .collect();
    // A message has a bounded number of attempts (retries, replays): paged in memory.
    let page = paging.page_sorted(rows, |a| a.id)?;
    let attempts: Vec<AttemptView> = page
        .data
        .into_iter()
        .map(|a| AttemptView {
            id: format!("att_{}", a.id),
            message_id: a.message_id,
            delivery_id: delivery_id(a.delivery_id),
            endpoint_id: a.endpoint_id,
            attempt: a.attempt,
            started_at: store::rfc3339(a.started_at_us),
            duration_ms: a.duration_us as f64 / 1000.0,
            status: a.status,
            outcome: a.outcome,
            error: a.error,
            response_headers: a
                .response_headers
                .as_deref()
                .and_then(|h| serde_json::from_str::<Value>(h).ok()),
            response_body: a.response_body,
            next_attempt_at: a.next_at_us.map(store::rfc3339),
        })
        .collect();
    Ok(Json(Page {
        data: attempts,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayOne {
    /// One endpoint; every endpoint the key manages that it went to when omitted.
    endpoint: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/messages/{id}/replay",
    tag = "webhooks",
    operation_id = "replay_webhook_message",
    params(("id" = String, Path, description = "The message's id (msg_...)")),
    request_body(content = Option<ReplayOne>, description = "Optional: the one endpoint to send it to"),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 202, description = "Queued again", body = MessageReplayed),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 410, description = "The payload was purged after the retention period", body = crate::http::error::ErrorBody),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
/// Send a message again (same `webhook-id`) to one endpoint, or to every endpoint it was
/// delivered or attempted to that the caller manages.
async fn replay_message(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<MessageReplayed>), ApiError> {
    let m = visible_message(&state, &caller, &id).await?;
    if m.payload.is_none() {
        return Err(ApiError::Gone(format!(
            "message {id:?} was purged after the retention period and cannot be replayed"
        )));
    }
    let req: ReplayOne = if body.is_empty() {
        ReplayOne::default()
    } else {
        parse(&body, "{\"endpoint\": \"ep_...\"} or an empty body")?
    };
    let targets: Vec<String> = match req.endpoint {
        Some(e) => vec![owned_endpoint(&state, &caller, &e).await?.id],
        None => {
            let deliveries = store::deliveries_of(&state.db, &[m.id.as_str()]).await?;
            let mut ids: Vec<&str> = deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            store::endpoints_by_id(&state.db, &ids)
                .await?
                .into_iter()
                .filter(|e| may_manage(&caller, e.partner_id.as_deref()))
                .map(|e| e.id)
                .collect()
        }
    };
    let who = caller.who(&headers);
    let n = super::manage::replay_message(&state, &m.id, m.partner_id.as_deref(), &targets, &who)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageReplayed {
            message_id: m.id,
            endpoints: targets,
            replayed: n,
        }),
    ))
}

/// The event types the gateway sends, with an example body of each.
#[utoipa::path(
    get,
    path = "/v1/webhooks/event-types",
    tag = "webhooks",
    operation_id = "list_webhook_event_types",
    params(PageQuery),
    security(("admin_key" = []), ("partner_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "A page of the catalogue, in its order", body = EventTypeList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
    )
)]
async fn event_types(
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Value>>, ApiError> {
    manager(&caller)?;
    let paging = Paging::new("webhook_event_types", q.limit, q.cursor.as_deref())?;
    // The catalogue's order groups related types; the position is the key.
    let numbered: Vec<(usize, Value)> =
        super::events::catalogue().into_iter().enumerate().collect();
    let page = paging.page_sorted(numbered, |(i, _)| *i)?;
    Ok(Json(Page {
        data: page.data.into_iter().map(|(_, v)| v).collect(),
        next_cursor: page.next_cursor,
    }))
}
