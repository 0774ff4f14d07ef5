//! `Idempotency-Key` on every non-GET `/v1` operation, as Stripe does it: the first request
//! with a key runs, and its status, headers and body are kept with the key, the calling API
//! key and a hash of the request; a repeat with the same key and request gets the kept
//! answer (`Idempotent-Replayed: true`) without running again; a repeat with another request
//! is 422; a repeat while the first still runs is 409. Keys live `http.idempotency_ttl_secs`
//! (24 h). The store is the database, so instances share keys.
//!
//! The kept body is sealed with the master key (AES-256-GCM, bound to the caller and key):
//! some answers carry a secret shown once (a new API key, a webhook endpoint's signing
//! secret, a registration link), and the store keeps no secret in the clear.
//!
//! What is kept: answers below 500 except 408 and 429 (a retry of those should run again).
//! A 5xx releases the key. An instance that dies after the work committed but before the
//! answer was kept leaves the key `running`; it is taken over after the request timeout
//! (plus a margin), and that retry runs again: the one window this cannot close without
//! storing the answer in each handler's own transaction.

use std::sync::atomic::{AtomicI64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::db::Db;
use crate::state::AppState;
use crate::with_db;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted (Stripe: 255).
const MAX_KEY: usize = 255;
/// How long past the request timeout a `running` key is honoured before another request may
/// take it over (its instance is presumed gone).
const TAKEOVER_MARGIN_US: i64 = 10_000_000;
/// Expired keys are purged at most this often per instance.
const PURGE_EVERY_US: i64 = 60_000_000;
static LAST_PURGE: AtomicI64 = AtomicI64::new(0);

/// Headers of a kept answer that are not replayed (they belong to the first exchange).
const NOT_REPLAYED: [&str; 4] = [
    "date",
    "x-request-id",
    "content-length",
    "transfer-encoding",
];

/// Why a key cannot be used: each a 4xx with a stable code.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Invalid(String),
    Mismatch { method: String, path: String },
    InUse,
}

impl Refusal {
    fn into_error(self) -> ApiError {
        match self {
            Refusal::Invalid(why) => ApiError::bad_request("invalid_idempotency_key", why),
            Refusal::Mismatch { method, path } => ApiError::Unprocessable {
                code: "idempotency_key_reused",
                detail: format!(
                    "this Idempotency-Key was first used for another request ({method} {path} with a different body); use a new key for a new request"
                ),
            },
            Refusal::InUse => ApiError::ConflictCode {
                code: "idempotency_key_in_use",
                detail: "a request with this Idempotency-Key is still running; retry when it has finished".into(),
            },
        }
    }
}

/// A key as sent: 1 to 255 visible ASCII characters.
pub fn check_key(raw: &HeaderValue) -> Result<String, Refusal> {
    let text = raw
        .to_str()
        .map_err(|_| Refusal::Invalid("Idempotency-Key must be visible ASCII".into()))?;
    if text.is_empty() || text.len() > MAX_KEY {
        return Err(Refusal::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY} characters (a UUID is a good choice)"
        )));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::Invalid(
            "Idempotency-Key must be visible ASCII without spaces".into(),
        ));
    }
    Ok(text.to_owned())
}

/// What identifies a request: method, path with query, and body.
pub fn request_hash(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// Whether an answer is kept for replay.
pub fn keeps(status: StatusCode) -> bool {
    status.as_u16() < 500
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
}

/// The middleware (route layer): only `/v1` POST, PUT, PATCH and DELETE requests that
/// carry the header and a known API key; everything else passes through untouched (a
/// TRACE or any other method the API does not serve gets its 405 from the router).
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let changing = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !changing || !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match check_key(raw) {
        Ok(k) => k,
        Err(r) => return r.into_error().into_response(),
    };
    // Keys are per API key; without a valid one the handler answers 401 as usual.
    let Some(caller) = caller_id(&state, req.headers()).await else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.http.body_limit_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::PayloadTooLarge(format!(
                "the body is larger than {} bytes",
                state.config.http.body_limit_bytes
            ))
            .into_response();
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let hash = request_hash(&parts.method, &path, &bytes);
    let now = crate::time::now_micros();
    purge_now_and_then(&state.db, now).await;
    let claim = Claim {
        caller: &caller,
        key: &key,
        hash: &hash,
        method: parts.method.as_str(),
        path: &path,
        now,
        locked_until: now
            + (state.config.http.request_timeout_secs as i64) * 1_000_000
            + TAKEOVER_MARGIN_US,
        expires_at: now + (state.config.http.idempotency_ttl_secs as i64) * 1_000_000,
    };
    match begin(&state.db, &claim).await {
        Ok(Begun::Run) => {}
        Ok(Begun::Replay(mut kept)) => {
            kept.body = match state
                .master_key
                .open(&seal_label(&caller, &key), &kept.body)
            {
                Ok(b) => b,
                Err(e) => {
                    return ApiError::Internal(e.context("opening a kept answer")).into_response();
                }
            };
            return replay(kept);
        }
        Ok(Begun::Refused(r)) => return r.into_error().into_response(),
        Err(e) => return ApiError::Internal(e).into_response(),
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = resp.status();
    if !keeps(status) {
        if let Err(e) = release(&state.db, &caller, &key).await {
            tracing::warn!(error = %e, "releasing an idempotency key failed");
        }
        return resp;
    }
    let (rparts, rbody) = resp.into_parts();
    let body = match axum::body::to_bytes(rbody, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            let _ = release(&state.db, &caller, &key).await;
            return ApiError::Internal(anyhow::anyhow!("reading the answer: {e}")).into_response();
        }
    };
    let headers = kept_headers(&rparts.headers);
    let sealed = match state.master_key.seal(&seal_label(&caller, &key), &body) {
        Ok(s) => s,
        Err(e) => {
            let _ = release(&state.db, &caller, &key).await;
            tracing::error!(error = %e, "sealing an idempotent answer failed; the key is released");
            return Response::from_parts(rparts, Body::from(body));
        }
    };
    if let Err(e) = finish(&state.db, &caller, &key, status.as_u16(), &headers, &sealed).await {
        // The work is done; the answer goes out. A retry will find the key running and,
        // after the takeover margin, run again: logged so it can be told apart.
        tracing::error!(error = %e, "keeping the answer of an idempotent request failed");
    }
    Response::from_parts(rparts, Body::from(body))
}

/// What a kept body is sealed to: it opens only as the answer for this caller and key.
fn seal_label(caller: &str, key: &str) -> String {
    format!("idempotency:{caller}:{key}")
}

async fn caller_id(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = state.api_keys.find(&state.db, token.trim()).await.ok()??;
    Some(key.id.clone())
}

fn kept_headers(headers: &HeaderMap) -> Value {
    let list: Vec<Value> = headers
        .iter()
        .filter(|(n, _)| !NOT_REPLAYED.contains(&n.as_str()))
        .filter_map(|(n, v)| Some(serde_json::json!([n.as_str(), v.to_str().ok()?])))
        .collect();
    Value::Array(list)
}

/// An answer kept with its key.
#[derive(Debug)]
pub struct Kept {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

fn replay(kept: Kept) -> Response {
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    // Built bare: the kept headers (content-type included) are the first answer's.
    let mut resp = Response::new(Body::from(Bytes::from(kept.body)));
    *resp.status_mut() = status;
    let headers: Value = serde_json::from_str(&kept.headers).unwrap_or(Value::Null);
    for pair in headers.as_array().into_iter().flatten() {
        let (Some(n), Some(v)) = (
            pair.get(0).and_then(Value::as_str),
            pair.get(1).and_then(Value::as_str),
        ) else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(n), HeaderValue::try_from(v)) {
            resp.headers_mut().append(n, v);
        }
    }
    resp.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

// ---- store ----

pub struct Claim<'a> {
    pub caller: &'a str,
    pub key: &'a str,
    pub hash: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub now: i64,
    pub locked_until: i64,
    pub expires_at: i64,
}

#[derive(Debug)]
pub enum Begun {
    /// This request holds the key: run it.
    Run,
    Replay(Kept),
    Refused(Refusal),
}

type KeyRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
);

/// Take the key for this request, or say what an earlier request with it left.
pub async fn begin(db: &Db, c: &Claim<'_>) -> anyhow::Result<Begun> {
    const INSERT: &str = "INSERT INTO idempotency_keys (caller, key, request_hash, method, path, state, \
                          created_at_us, locked_until_us, expires_at_us) \
                          VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8) ON CONFLICT (caller, key) DO NOTHING";
    const READ: &str = "SELECT request_hash, method, path, state, locked_until_us, expires_at_us, status, headers, body \
                        FROM idempotency_keys WHERE caller = $1 AND key = $2";
    // Twice at most: once more after removing an expired or abandoned key.
    for _ in 0..3 {
        let inserted = with_db!(db, pool => sqlx::query(INSERT)
            .bind(c.caller).bind(c.key).bind(c.hash).bind(c.method).bind(c.path)
            .bind(c.now).bind(c.locked_until).bind(c.expires_at)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        if inserted == 1 {
            return Ok(Begun::Run);
        }
        let row: Option<KeyRow> = with_db!(db, pool => sqlx::query_as(READ)
            .bind(c.caller).bind(c.key).fetch_optional(pool).await)?;
        let Some((hash, method, path, state, locked_until, expires_at, status, headers, body)) =
            row
        else {
            continue; // released meanwhile
        };
        if expires_at <= c.now {
            remove_if(db, c.caller, c.key, "expires_at_us <= $3", c.now).await?;
            continue;
        }
        if hash != c.hash {
            return Ok(Begun::Refused(Refusal::Mismatch { method, path }));
        }
        if state == "running" {
            if locked_until > c.now {
                return Ok(Begun::Refused(Refusal::InUse));
            }
            // Its instance is gone: whoever removes it first runs the request again.
            remove_if(
                db,
                c.caller,
                c.key,
                "state = 'running' AND locked_until_us <= $3",
                c.now,
            )
            .await?;
            continue;
        }
        return Ok(Begun::Replay(Kept {
            status: status.unwrap_or(200) as u16,
            headers: headers.unwrap_or_default(),
            body: body.unwrap_or_default(),
        }));
    }
    Ok(Begun::Refused(Refusal::InUse))
}

async fn remove_if(db: &Db, caller: &str, key: &str, cond: &str, now: i64) -> anyhow::Result<()> {
    let sql = format!("DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND {cond}");
    with_db!(db, pool => sqlx::query(&sql).bind(caller).bind(key).bind(now).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Keep the answer with the key.
pub async fn finish(
    db: &Db,
    caller: &str,
    key: &str,
    status: u16,
    headers: &Value,
    body: &[u8],
) -> anyhow::Result<()> {
    let sql = "UPDATE idempotency_keys SET state = 'done', status = $3, headers = $4, body = $5 \
               WHERE caller = $1 AND key = $2";
    let headers = headers.to_string();
    with_db!(db, pool => sqlx::query(sql).bind(caller).bind(key).bind(i64::from(status))
        .bind(&headers).bind(body).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Give the key back (the request failed in a way a retry should run again).
pub async fn release(db: &Db, caller: &str, key: &str) -> anyhow::Result<()> {
    let sql = "DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND state = 'running'";
    with_db!(db, pool => sqlx::query(sql).bind(caller).bind(key).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

async fn purge_now_and_then(db: &Db, now: i64) {
    let last = LAST_PURGE.load(Ordering::Relaxed);
    if now - last < PURGE_EVERY_US
        || LAST_PURGE
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let sql = "DELETE FROM idempotency_keys WHERE expires_at_us <= $1";
    if let Err(e) = with_db!(db, pool => sqlx::query(sql).bind(now).execute(pool).await.map(|r| r.rows_affected()))
    {
        tracing::warn!(error = %e, "purging expired idempotency keys failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(check_key(&HeaderValue::from_static("0193e4c1-8f7a-7d2e")).is_ok());
        assert!(check_key(&HeaderValue::from_static("")).is_err());
        assert!(check_key(&HeaderValue::from_static("has space")).is_err());
        let long = "k".repeat(256);
        assert!(check_key(&HeaderValue::from_str(&long).unwrap()).is_err());
    }

    #[test]
    fn the_hash_covers_method_path_and_body() {
        let a = request_hash(&Method::POST, "/v1/x", b"{}");
        assert_eq!(a, request_hash(&Method::POST, "/v1/x", b"{}"));
        assert_ne!(a, request_hash(&Method::POST, "/v1/x", b"{ }"));
        assert_ne!(a, request_hash(&Method::PUT, "/v1/x", b"{}"));
        assert_ne!(a, request_hash(&Method::POST, "/v1/x?y=1", b"{}"));
    }

    #[test]
    fn answers_worth_running_again_are_not_kept() {
        assert!(keeps(StatusCode::CREATED));
        assert!(keeps(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(!keeps(StatusCode::TOO_MANY_REQUESTS));
        assert!(!keeps(StatusCode::SERVICE_UNAVAILABLE));
    }
}
