//! `/v1/webhooks/...`: endpoints (create, list, read, update, delete, rotate the secret,
//! replay failed messages), messages and their attempts (list, read, replay), the event
//! catalogue; and `POST /webhooks/in/{partner}/{source}` for partners' systems.
//!
//! Who may do what: admin keys manage every endpoint; partner keys their own partner's;
//! app keys (the company's product back end) the app's endpoints, which hear every
//! partner's events. Finance keys have no business here.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::endpoint::{self, Endpoint, EndpointPatch, NewEndpoint};
use super::signature::{Scheme, SigningKey};
use super::store::{self, EndpointRow, MessageFilter, Owner, SecretRow};
use crate::apikeys::Role;
use crate::app::AppState;
use crate::http::auth::Caller;
use crate::http::{ApiError, Body, Query};
use crate::keys::crypto::MasterKey;
use crate::time::to_micros;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/webhooks/endpoints", post(create).get(list))
        .route(
            "/v1/webhooks/endpoints/{id}",
            get(read).patch(update).delete(delete),
        )
        .route("/v1/webhooks/endpoints/{id}/rotate-secret", post(rotate))
        .route("/v1/webhooks/endpoints/{id}/replay", post(replay_endpoint))
        .route("/v1/webhooks/messages", get(list_messages))
        .route("/v1/webhooks/messages/{id}", get(read_message))
        .route("/v1/webhooks/messages/{id}/attempts", get(attempts))
        .route("/v1/webhooks/messages/{id}/replay", post(replay_message))
        .route("/v1/webhooks/event-types", get(event_types))
        .route(
            "/webhooks/in/{partner}/{source}",
            post(super::inbound::receive),
        )
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

/// The additional data sealed with a secret: the endpoint and version it belongs to.
fn secret_aad(endpoint_id: &str, version: i32) -> String {
    format!("webhook-secret:{endpoint_id}:{version}")
}

/// Open a stored secret.
pub fn open_secret(master: &MasterKey, s: &SecretRow) -> anyhow::Result<SigningKey> {
    let sealed = B64.decode(&s.sealed)?;
    let plain = master.open(&secret_aad(&s.endpoint_id, s.version), &sealed)?;
    let text = String::from_utf8(plain)?;
    Ok(SigningKey::decode(&text)?)
}

fn seal_secret(
    master: &MasterKey,
    endpoint_id: &str,
    version: i32,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> Result<SecretRow, ApiError> {
    let sealed = master.seal(&secret_aad(endpoint_id, version), key.encode().as_bytes())?;
    Ok(SecretRow {
        endpoint_id: endpoint_id.to_owned(),
        version,
        scheme: key.scheme().as_str().to_owned(),
        sealed: B64.encode(sealed),
        public_key: key.public_key(),
        created_at_us: to_micros(now),
        retire_at_us: None,
    })
}

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

/// Check a URL against the outbound policy, resolving its host name.
async fn check_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    if url.len() > 2000 {
        return Err(ApiError::bad_request(
            "invalid_url",
            "the URL is longer than 2000 characters",
        ));
    }
    let parsed = crate::outbound::parse_http_url(url)
        .map_err(|e| ApiError::bad_request("invalid_url", e))?;
    state
        .outbound
        .url_resolved(parsed.as_str())
        .await
        .map_err(|e| ApiError::bad_request("url_refused", e.to_string()))?;
    Ok(parsed.to_string())
}

fn field_errors(errors: Vec<crate::http::FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::Validation {
        detail: "the endpoint has invalid fields".into(),
        errors,
    })
}

/// Create an endpoint: 201 with its secret, shown this once (`v1`), or its public key
/// (`v1a`; the private key never leaves the gateway).
async fn create(
    State(state): State<AppState>,
    caller: Caller,
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
    if let Some(p) = &partner
        && state.config.partner(p).is_none()
    {
        return Err(ApiError::NotFound(format!("unknown partner {p:?}")));
    }
    field_errors(endpoint::check_fields(
        Some(&req.description),
        Some(&req.event_types),
        Some(req.rate_limit),
    ))?;
    let url = check_url(&state, &req.url).await?;
    let now = Utc::now();
    let row = EndpointRow {
        id: format!("ep_{}", uuid::Uuid::now_v7().simple()),
        partner_id: partner,
        url,
        description: req.description,
        event_types: serde_json::to_string(&req.event_types).map_err(anyhow::Error::from)?,
        enabled: req.enabled,
        disabled_reason: None,
        rate_limit: req.rate_limit,
        ordered: req.ordered,
        scheme: req.scheme.as_str().to_owned(),
        failing_since_us: None,
        created_at_us: to_micros(now),
        updated_at_us: to_micros(now),
    };
    let key = SigningKey::generate(req.scheme);
    let secret = seal_secret(&state.master_key, &row.id, 1, &key, now)?;
    let mut tx = state.db.begin().await?;
    store::insert_endpoint(&mut tx, &row).await?;
    store::insert_secret(&mut tx, &secret).await?;
    tx.commit().await?;
    let mut body =
        serde_json::to_value(view(&row, key.public_key())).map_err(anyhow::Error::from)?;
    if req.scheme == Scheme::V1 {
        body["secret"] = Value::String(key.encode());
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    partner: Option<String>,
    #[serde(default)]
    app: bool,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    manager(&caller)?;
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
    let rows = store::list_endpoints(&state.db, owner).await?;
    Ok(Json(json!({ "endpoints": views(&state, &rows).await? })))
}

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

/// Change fields; enabling a disabled endpoint clears its reason and failure clock, and its
/// waiting deliveries go out again.
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Endpoint>, ApiError> {
    let mut row = owned_endpoint(&state, &caller, &id).await?;
    let patch: EndpointPatch = parse(&body, "the endpoint fields to change")?;
    field_errors(endpoint::check_fields(
        patch.description.as_deref(),
        patch.event_types.as_deref(),
        patch.rate_limit,
    ))?;
    if let Some(url) = &patch.url {
        row.url = check_url(&state, url).await?;
    }
    if let Some(d) = patch.description {
        row.description = d;
    }
    if let Some(t) = &patch.event_types {
        row.event_types = serde_json::to_string(t).map_err(anyhow::Error::from)?;
    }
    if let Some(r) = patch.rate_limit {
        row.rate_limit = r;
    }
    if let Some(o) = patch.ordered {
        row.ordered = o;
    }
    if let Some(enabled) = patch.enabled {
        if enabled && !row.enabled {
            row.disabled_reason = None;
            row.failing_since_us = None;
        } else if !enabled && row.enabled {
            row.disabled_reason = Some(format!("disabled by key {}", caller.key_id));
        }
        row.enabled = enabled;
    }
    row.updated_at_us = to_micros(Utc::now());
    let mut tx = state.db.begin().await?;
    if !store::update_endpoint(&mut tx, &row).await? {
        return Err(ApiError::NotFound(format!("no webhook endpoint {id:?}")));
    }
    tx.commit().await?;
    read(State(state), caller, Path(id)).await
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    owned_endpoint(&state, &caller, &id).await?;
    let mut tx = state.db.begin().await?;
    store::delete_endpoint(&mut tx, &id, Utc::now()).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret (shown once); the old one keeps signing beside it for
/// `webhooks.rotation_overlap_secs`, so receivers can switch without losing a message.
async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = owned_endpoint(&state, &caller, &id).await?;
    let scheme = Scheme::parse(&row.scheme).unwrap_or(Scheme::V1);
    let now = Utc::now();
    let overlap = i64::try_from(state.config.webhooks.rotation_overlap_secs).unwrap_or(86_400);
    let retire_at = now + chrono::Duration::seconds(overlap);
    let key = SigningKey::generate(scheme);
    let mut tx = state.db.begin().await?;
    let version = store::retire_secrets(&mut tx, &id, retire_at).await?;
    let secret = seal_secret(&state.master_key, &id, version, &key, now)?;
    store::insert_secret(&mut tx, &secret).await?;
    tx.commit().await?;
    let mut body = json!({
        "endpoint_id": id,
        "scheme": scheme.as_str(),
        "version": version,
        "previous_signs_until": retire_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    match key.public_key() {
        Some(pk) => body["public_key"] = Value::String(pk),
        None => body["secret"] = Value::String(key.encode()),
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaySince {
    since: String,
}

/// Replay every message whose delivery to this endpoint failed for good since a time.
async fn replay_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    owned_endpoint(&state, &caller, &id).await?;
    let req: ReplaySince = parse(&body, "{\"since\": \"<RFC 3339 time>\"}")?;
    let since = DateTime::parse_from_rfc3339(&req.since)
        .map_err(|e| {
            ApiError::bad_request("invalid_body", format!("since: not an RFC 3339 time: {e}"))
        })?
        .with_timezone(&Utc);
    let mut tx = state.db.begin().await?;
    let n = store::replay_failed(&mut tx, &id, since, Utc::now()).await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "endpoint_id": id, "replayed": n })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    partner: Option<String>,
    endpoint: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    state: Option<String>,
    before: Option<String>,
    limit: Option<i64>,
}

const DELIVERY_STATES: [&str; 5] = ["pending", "sending", "delivered", "failed", "cancelled"];

async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Value>, ApiError> {
    manager(&caller)?;
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
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let rows = store::list_messages(
        &state.db,
        &MessageFilter {
            partner,
            endpoint: q.endpoint.clone(),
            event_type: q.event_type.clone(),
            state: q.state.clone(),
            before: q.before.clone(),
            limit,
        },
    )
    .await?;
    let visible = visible_endpoints(&state, &caller).await?;
    let ids: Vec<&str> = rows.iter().map(|m| m.id.as_str()).collect();
    let deliveries = store::deliveries_of(&state.db, &ids).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|m| m.id.clone()))
        .flatten();
    let messages: Vec<Value> = rows
        .iter()
        .map(|m| message_view(m, &deliveries, visible.as_ref(), false))
        .collect();
    Ok(Json(json!({ "messages": messages, "next_before": next })))
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
) -> Value {
    let ds: Vec<Value> = deliveries
        .iter()
        .filter(|d| d.message_id == m.id && visible.is_none_or(|v| v.contains(&d.endpoint_id)))
        .map(|d| {
            json!({
                "delivery_id": d.id,
                "endpoint_id": d.endpoint_id,
                "state": d.state,
                "attempts": d.attempts,
                "next_attempt_at": matches!(d.state.as_str(), "pending").then(|| store::rfc3339(d.next_at_us)),
                "last_status": d.last_status,
                "last_error": d.last_error,
                "created_at": store::rfc3339(d.created_at_us),
                "finished_at": d.finished_at_us.map(store::rfc3339),
            })
        })
        .collect();
    let mut v = json!({
        "id": m.id,
        "partner": m.partner_id,
        "type": m.event_type,
        "created_at": store::rfc3339(m.created_at_us),
        "purged_at": m.purged_at_us.map(store::rfc3339),
        "deliveries": ds,
    });
    if with_payload {
        v["payload"] = m
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(Value::Null);
    }
    v
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

async fn read_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let m = visible_message(&state, &caller, &id).await?;
    let deliveries = store::deliveries_of(&state.db, &[m.id.as_str()]).await?;
    let visible = visible_endpoints(&state, &caller).await?;
    Ok(Json(message_view(&m, &deliveries, visible.as_ref(), true)))
}

async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let m = visible_message(&state, &caller, &id).await?;
    let visible = visible_endpoints(&state, &caller).await?;
    let rows = store::attempts_of(&state.db, &m.id).await?;
    let list: Vec<Value> = rows
        .into_iter()
        .filter(|a| visible.as_ref().is_none_or(|v| v.contains(&a.endpoint_id)))
        .map(|a| {
            json!({
                "id": a.id,
                "delivery_id": a.delivery_id,
                "endpoint_id": a.endpoint_id,
                "attempt": a.attempt,
                "started_at": store::rfc3339(a.started_at_us),
                "duration_ms": a.duration_us as f64 / 1000.0,
                "status": a.status,
                "outcome": a.outcome,
                "error": a.error,
                "response_headers": a.response_headers.as_deref().and_then(|h| serde_json::from_str::<Value>(h).ok()),
                "response_body": a.response_body,
                "next_attempt_at": a.next_at_us.map(store::rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "message_id": m.id, "attempts": list })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayOne {
    endpoint: Option<String>,
}

/// Send a message again (same `webhook-id`) to one endpoint, or to every endpoint it was
/// delivered or attempted to that the caller manages.
async fn replay_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut tx = state.db.begin().await?;
    let n = store::replay_message(&mut tx, &m.id, &refs, Utc::now()).await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message_id": m.id, "endpoints": targets, "replayed": n })),
    ))
}

async fn event_types(caller: Caller) -> Result<Json<Value>, ApiError> {
    manager(&caller)?;
    Ok(Json(json!({ "event_types": super::events::catalogue() })))
}
