//! Webhooks, both ways, to the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>).
//!
//! Outbound: an event is written as a message (the exact JSON body, signed at each attempt)
//! in the same transaction as the change that caused it, with one delivery per matching
//! endpoint (fan-out). The dispatcher claims due deliveries in batches with a lease, sends
//! them (signed, no redirects, the outbound address policy), and records every attempt;
//! failures retry on a schedule spanning about a day and a half. Rate limits and ordering
//! are decided by the store, so several instances together honour them.
//!
//! Inbound: `POST /webhooks/in/{partner}/{source}` verifies a partner system's signature and
//! turns its events into ledger events (see `inbound.rs`).

pub mod dispatch;
pub mod endpoint;
pub mod events;
pub mod inbound;
pub mod manage;
pub mod routes;
pub mod schedule;
pub mod signature;
pub mod source;
pub mod store;
pub mod thresholds;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::db::Tx;

/// The body every outbound message carries: `{"type", "timestamp", "data"}` in that order,
/// and `"sandbox": true` after them for a sandbox partner's events (absent otherwise, so
/// production payloads keep their shape).
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a Value,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sandbox: bool,
}

/// Emit an event inside the caller's transaction: the message and one delivery per enabled
/// endpoint that wants it (the partner's own endpoints and the company app's) are written
/// with the change that caused it, or not at all. Returns the message id (`webhook-id`).
pub async fn emit(
    tx: &mut Tx,
    partner_id: Option<&str>,
    event_type: &str,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let (id, payload) = message(tx, partner_id, event_type, data, now).await?;
    store::insert_message_and_fan_out(tx, &id, partner_id, event_type, &payload, now).await?;
    Ok(id)
}

/// A `webhook.test` message to one endpoint only (no fan-out: no other endpoint, nor the
/// app's, hears a test), in the caller's transaction. Returns the message id.
pub async fn emit_test(
    tx: &mut Tx,
    partner_id: Option<&str>,
    endpoint_id: &str,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let (id, payload) = message(tx, partner_id, events::WEBHOOK_TEST, data, now).await?;
    store::insert_message(tx, &id, partner_id, events::WEBHOOK_TEST, &payload, now).await?;
    store::replay_message(tx, &id, &[endpoint_id], now).await?;
    Ok(id)
}

/// A new message's id and its body, marked sandbox when the partner is one (read in the
/// caller's transaction, like the ledger's mark).
async fn message(
    tx: &mut Tx,
    partner_id: Option<&str>,
    event_type: &str,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<(String, String), sqlx::Error> {
    let sandbox = match partner_id {
        Some(p) => crate::partners::store::is_sandbox(tx, p).await?,
        None => false,
    };
    let body = Body {
        event_type,
        timestamp: crate::time::rfc3339(now),
        data,
        sandbox,
    };
    // Serializing a struct of strings and a JSON value cannot fail.
    let payload = serde_json::to_string(&body).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    Ok((new_message_id(), payload))
}

/// `msg_` and a UUIDv7 in hex: unique, free of `.` (it is signed before a `.`), and sorting
/// in creation order.
pub fn new_message_id() -> String {
    crate::ids::new(crate::ids::MESSAGE)
}
