//! Managing endpoints, for every surface that does it (the `/v1/webhooks` API and the
//! console's partner portal): create, change, delete, rotate the secret, replay, send a test
//! message. The caller has already decided who may manage the endpoint; each change here
//! writes its audit entry in its own transaction, so a partner changing where its events go
//! is on record whichever way it did it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::endpoint::{self, EndpointPatch, NewEndpoint};
use super::signature::{Scheme, SigningKey};
use super::store::{self, EndpointRow, SecretRow};
use crate::audit::Who;
use crate::http::ApiError;
use crate::keys::crypto::MasterKey;
use crate::state::AppState;
use crate::time::to_micros;

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

/// Check a URL against the outbound policy of the endpoint's owner (`None`: the app),
/// resolving its host name.
pub async fn check_url(
    state: &AppState,
    owner: Option<&str>,
    url: &str,
) -> Result<String, ApiError> {
    if url.len() > 2000 {
        return Err(ApiError::bad_request(
            "invalid_url",
            "the URL is longer than 2000 characters",
        ));
    }
    let parsed = crate::outbound::parse_http_url(url)
        .map_err(|e| ApiError::bad_request("invalid_url", e))?;
    state
        .endpoint_outbound
        .for_owner(owner)
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

async fn audit(
    tx: &mut crate::db::Tx,
    who: &Who,
    action: &str,
    e: &EndpointRow,
    detail: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let entry = who.entry(action, e.partner_id.as_deref(), Some(&e.id), &detail);
    crate::audit::store::insert(tx, &entry, to_micros(now)).await?;
    Ok(())
}

/// A new endpoint and its first key (a v1 secret is shown to the caller once).
pub struct Created {
    pub row: EndpointRow,
    pub key: SigningKey,
}

/// Create an endpoint of `partner` (`None`: the company's app).
pub async fn create(
    state: &AppState,
    partner: Option<String>,
    req: NewEndpoint,
    who: &Who,
) -> Result<Created, ApiError> {
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
    let url = check_url(state, partner.as_deref(), &req.url).await?;
    let now = Utc::now();
    let row = EndpointRow {
        id: crate::ids::new(crate::ids::ENDPOINT),
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
    // Counted and inserted under one lock, so concurrent creations cannot pass the cap.
    let owner = row.partner_id.as_deref().unwrap_or("(app)");
    tx.lock_named(&format!("webhook-endpoints:{owner}")).await?;
    let max = state.config.webhooks.max_endpoints_per_partner;
    if store::count_endpoints(&mut tx, row.partner_id.as_deref()).await? >= max as i64 {
        return Err(ApiError::Unprocessable {
            code: "too_many_endpoints",
            detail: format!(
                "{} has {max} webhook endpoints, the most allowed (webhooks.max_endpoints_per_partner); delete one first",
                match &row.partner_id {
                    Some(p) => format!("partner {p:?}"),
                    None => "the app".to_owned(),
                }
            ),
        });
    }
    store::insert_endpoint(&mut tx, &row).await?;
    store::insert_secret(&mut tx, &secret).await?;
    let detail = json!({ "url": row.url, "event_types": req.event_types, "scheme": row.scheme });
    audit(&mut tx, who, "webhook.endpoint.create", &row, detail, now).await?;
    tx.commit().await?;
    Ok(Created { row, key })
}

/// Change fields; enabling a disabled endpoint clears its reason and failure clock, and its
/// waiting deliveries go out again.
pub async fn update(
    state: &AppState,
    mut row: EndpointRow,
    patch: EndpointPatch,
    who: &Who,
) -> Result<EndpointRow, ApiError> {
    field_errors(endpoint::check_fields(
        patch.description.as_deref(),
        patch.event_types.as_deref(),
        patch.rate_limit,
    ))?;
    let mut changed = serde_json::Map::new();
    if let Some(url) = &patch.url {
        row.url = check_url(state, row.partner_id.as_deref(), url).await?;
        changed.insert("url".into(), json!(row.url));
    }
    if let Some(d) = patch.description {
        row.description = d;
        changed.insert("description".into(), json!(row.description));
    }
    if let Some(t) = &patch.event_types {
        row.event_types = serde_json::to_string(t).map_err(anyhow::Error::from)?;
        changed.insert("event_types".into(), json!(t));
    }
    if let Some(r) = patch.rate_limit {
        row.rate_limit = r;
        changed.insert("rate_limit".into(), json!(r));
    }
    if let Some(o) = patch.ordered {
        row.ordered = o;
        changed.insert("ordered".into(), json!(o));
    }
    if let Some(enabled) = patch.enabled {
        if enabled && !row.enabled {
            row.disabled_reason = None;
            row.failing_since_us = None;
        } else if !enabled && row.enabled {
            row.disabled_reason = Some(format!("disabled by {}", who.id));
        }
        row.enabled = enabled;
        changed.insert("enabled".into(), json!(enabled));
    }
    let now = Utc::now();
    row.updated_at_us = to_micros(now);
    let mut tx = state.db.begin().await?;
    if !store::update_endpoint(&mut tx, &row).await? {
        return Err(ApiError::NotFound(format!(
            "no webhook endpoint {:?}",
            row.id
        )));
    }
    let detail = serde_json::Value::Object(changed);
    audit(&mut tx, who, "webhook.endpoint.update", &row, detail, now).await?;
    tx.commit().await?;
    Ok(row)
}

/// Delete an endpoint; its waiting deliveries are cancelled.
pub async fn delete(state: &AppState, row: &EndpointRow, who: &Who) -> Result<(), ApiError> {
    let now = Utc::now();
    let mut tx = state.db.begin().await?;
    store::delete_endpoint(&mut tx, &row.id, now).await?;
    let detail = json!({ "url": row.url });
    audit(&mut tx, who, "webhook.endpoint.delete", row, detail, now).await?;
    tx.commit().await?;
    Ok(())
}

/// A rotated key: the new one (a v1 secret is shown once) and until when the old signs.
pub struct Rotated {
    pub scheme: Scheme,
    pub version: i32,
    pub retire_at: DateTime<Utc>,
    pub key: SigningKey,
}

/// A new secret; the old one keeps signing beside it for `webhooks.rotation_overlap_secs`,
/// so receivers can switch without losing a message.
pub async fn rotate(state: &AppState, row: &EndpointRow, who: &Who) -> Result<Rotated, ApiError> {
    let scheme = Scheme::parse(&row.scheme).unwrap_or(Scheme::V1);
    let now = Utc::now();
    let overlap = i64::try_from(state.config.webhooks.rotation_overlap_secs).unwrap_or(86_400);
    let retire_at = now + chrono::Duration::seconds(overlap);
    let key = SigningKey::generate(scheme);
    let mut tx = state.db.begin().await?;
    let version = store::retire_secrets(&mut tx, &row.id, retire_at).await?;
    let secret = seal_secret(&state.master_key, &row.id, version, &key, now)?;
    store::insert_secret(&mut tx, &secret).await?;
    let detail =
        json!({ "version": version, "previous_signs_until": crate::time::rfc3339(retire_at) });
    audit(
        &mut tx,
        who,
        "webhook.endpoint.rotate_secret",
        row,
        detail,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Rotated {
        scheme,
        version,
        retire_at,
        key,
    })
}

/// Queue again every message whose delivery to the endpoint failed for good since `since`.
pub async fn replay_failed(
    state: &AppState,
    row: &EndpointRow,
    since: DateTime<Utc>,
    who: &Who,
) -> Result<u64, ApiError> {
    let now = Utc::now();
    let mut tx = state.db.begin().await?;
    let n = store::replay_failed(&mut tx, &row.id, since, now).await?;
    let detail = json!({ "since": crate::time::rfc3339(since), "replayed": n });
    audit(&mut tx, who, "webhook.endpoint.replay", row, detail, now).await?;
    tx.commit().await?;
    Ok(n)
}

/// Send message `message_id` again to `targets` (endpoints the caller manages).
pub async fn replay_message(
    state: &AppState,
    message_id: &str,
    partner: Option<&str>,
    targets: &[String],
    who: &Who,
) -> Result<u64, ApiError> {
    let now = Utc::now();
    let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut tx = state.db.begin().await?;
    let n = store::replay_message(&mut tx, message_id, &refs, now).await?;
    let detail = json!({ "endpoints": targets, "replayed": n });
    let entry = who.entry("webhook.message.replay", partner, Some(message_id), &detail);
    crate::audit::store::insert(&mut tx, &entry, to_micros(now)).await?;
    tx.commit().await?;
    Ok(n)
}

/// A `webhook.test` message to this endpoint only; its id.
pub async fn send_test(state: &AppState, row: &EndpointRow, who: &Who) -> Result<String, ApiError> {
    let now = Utc::now();
    let data = json!({
        "endpoint_id": row.id,
        "partner": row.partner_id,
        "requested_by": who.id,
        "note": "A test message from partner-gateway. It carries nothing to act on.",
    });
    let mut tx = state.db.begin().await?;
    let id = super::emit_test(&mut tx, row.partner_id.as_deref(), &row.id, &data, now).await?;
    let detail = json!({ "message": id });
    audit(&mut tx, who, "webhook.endpoint.test", row, detail, now).await?;
    tx.commit().await?;
    Ok(id)
}
