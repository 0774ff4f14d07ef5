//! Inbound webhooks: `POST /webhooks/in/{partner}/{source}`. A partner's system (billing, a
//! marketplace, an LMS) posts its events; the source's config says how they are signed and
//! how each event type becomes a ledger event. Verified before anything is parsed; an
//! event id seen before is acknowledged and not stored twice (the ledger's unique key).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::signature::{self, Headers, VerifyError, VerifyingKey};
use crate::app::AppState;
use crate::config::Secret;
use crate::http::{ApiError, Body};
use crate::metering::authority::Recorder;

/// One source of inbound webhooks, under a partner in config
/// (`[[partners.webhook_sources]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSource {
    /// The last path segment: letters, digits, `-` and `_`.
    pub id: String,
    pub signing: Signing,
    /// `standard`: `whsec_` secrets or `whpk_` public keys; `timestamped-hmac`: the shared
    /// secret(s). Several while the sender rotates.
    pub secrets: Vec<Secret>,
    /// How far the signed timestamp may be from now, either way.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: i64,
    /// `timestamped-hmac`: the header carrying `t=...,v1=...` (e.g. `Stripe-Signature`).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// JSON pointer to the event type in the payload.
    #[serde(default = "default_type_pointer")]
    pub type_pointer: String,
    /// JSON pointer to the event id in the payload; the `webhook-id` header when absent
    /// (required for `timestamped-hmac`, which has no id header).
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// How payload types become ledger events; other types are acknowledged and ignored.
    #[serde(default)]
    pub events: Vec<Mapping>,
    /// A system the company relies on for money (its billing provider, a marketplace's
    /// signed reports): it may record money-bearing event types, and its events read
    /// "recorded by the webhook `id`" on statements. An untrusted source speaks for the
    /// partner: it records only other types, or those in the partner's
    /// `self_reported_types`, marked as reported by the partner.
    #[serde(default)]
    pub trusted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signing {
    /// Standard Webhooks `v1` / `v1a`.
    Standard,
    /// `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.
    TimestampedHmac,
}

fn default_tolerance() -> i64 {
    300
}

fn default_type_pointer() -> String {
    "/type".into()
}

/// One payload type mapped to a ledger event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The payload's type value, e.g. `invoice.paid`.
    pub when: String,
    /// The ledger event type, e.g. `revenue.recognized`.
    pub event_type: String,
    /// Pointer to the subject (a customer, a user).
    #[serde(default)]
    pub subject: Option<String>,
    /// Pointer to the event time (unix seconds or RFC 3339); the signed timestamp if absent.
    #[serde(default)]
    pub time: Option<String>,
    /// `data` fields of the ledger event.
    #[serde(default)]
    pub data: BTreeMap<String, Field>,
}

/// A `data` field: a JSON pointer, or a pointer with a conversion.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Field {
    Pointer(String),
    Spec(FieldSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub pointer: String,
    /// Upper-case the text (ISO currency codes sent in lower case).
    #[serde(default)]
    pub upper: bool,
    /// The value is an integer in minor units of the currency at this pointer (cents for
    /// USD, yen for JPY): turn it into a decimal string.
    #[serde(default)]
    pub minor_units_of: Option<String>,
    /// Flip the sign of a number (a refund sent as a positive amount).
    #[serde(default)]
    pub negate: bool,
}

impl InboundSource {
    /// Config problems as (field, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let valid_id = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            out.push(("id".into(), "1-64 letters, digits, - or _".into()));
        }
        if self.secrets.is_empty() {
            out.push(("secrets".into(), "at least one secret is needed".into()));
        }
        if self.signing == Signing::Standard {
            for (i, s) in self.secrets.iter().enumerate() {
                if let Err(e) = VerifyingKey::decode(s.expose()) {
                    out.push((format!("secrets[{i}]"), e.to_string()));
                }
            }
        }
        if self.signing == Signing::TimestampedHmac {
            if self.signature_header.is_none() {
                out.push((
                    "signature_header".into(),
                    "timestamped-hmac needs the header name".into(),
                ));
            }
            if self.id_pointer.is_none() {
                out.push((
                    "id_pointer".into(),
                    "timestamped-hmac needs a pointer to the event id".into(),
                ));
            }
        }
        if !(1..=86_400).contains(&self.tolerance_secs) {
            out.push(("tolerance_secs".into(), "1 to 86400 seconds".into()));
        }
        let mut pointers = vec![("type_pointer".to_owned(), self.type_pointer.clone())];
        if let Some(p) = &self.id_pointer {
            pointers.push(("id_pointer".into(), p.clone()));
        }
        for (i, m) in self.events.iter().enumerate() {
            for (k, f) in &m.data {
                let p = match f {
                    Field::Pointer(p) => p,
                    Field::Spec(s) => &s.pointer,
                };
                pointers.push((format!("events[{i}].data.{k}"), p.clone()));
            }
            if let Some(p) = &m.subject {
                pointers.push((format!("events[{i}].subject"), p.clone()));
            }
        }
        for (field, p) in pointers {
            if !(p.is_empty() || p.starts_with('/')) {
                out.push((
                    field,
                    format!("{p:?} is not a JSON pointer (it starts with /)"),
                ));
            }
        }
        out
    }
}

/// What became of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Accepted {
        event_id: String,
        event_type: String,
    },
    Duplicate {
        event_id: String,
    },
    Ignored {
        payload_type: String,
    },
}

/// Verify, map and record one webhook.
pub async fn receive(
    State(state): State<AppState>,
    Path((partner, source)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = Utc::now();
    let src = state
        .config
        .partner(&partner)
        .and_then(|p| p.webhook_sources.iter().find(|s| s.id == source))
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_source",
                format!("partner {partner:?} has no inbound webhook source {source:?}"),
            )
        })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (webhook_id, signed_at) = verify(src, &header, &body, now).map_err(|e| refusal(src, e))?;
    let mut payload: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("the payload is not JSON: {e}"))
    })?;
    // Signed by the sender, who cannot change it: keep the event, without NUL.
    crate::text::scrub_nul(&mut payload);
    let outcome = record(&state, &partner, src, &payload, webhook_id, signed_at, now).await?;
    let body = match &outcome {
        Received::Accepted {
            event_id,
            event_type,
        } => json!({"status": "accepted", "event_id": event_id, "event_type": event_type}),
        Received::Duplicate { event_id } => json!({"status": "duplicate", "event_id": event_id}),
        Received::Ignored { payload_type } => json!({
            "status": "ignored",
            "reason": format!("no ledger mapping for payload type {payload_type:?}"),
        }),
    };
    tracing::info!(%partner, %source, outcome = ?outcome, "inbound webhook");
    Ok((StatusCode::OK, Json(body)))
}

/// The signature check: returns the webhook id (standard) and the signed timestamp.
fn verify<'a>(
    src: &InboundSource,
    header: &dyn Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(Option<String>, i64), VerifyError> {
    match src.signing {
        Signing::Standard => {
            let keys: Vec<VerifyingKey> = src
                .secrets
                .iter()
                .filter_map(|s| VerifyingKey::decode(s.expose()).ok())
                .collect();
            let h = Headers {
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
            };
            let id = signature::verify(h, body, &keys, src.tolerance_secs, now)?;
            let ts = h
                .timestamp
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(now.timestamp());
            Ok((Some(id.to_owned()), ts))
        }
        Signing::TimestampedHmac => {
            let name = src
                .signature_header
                .as_deref()
                .unwrap_or("webhook-signature");
            let secrets: Vec<&[u8]> = src.secrets.iter().map(|s| s.expose().as_bytes()).collect();
            // The name is only for messages; leak-free as a 'static via a fixed label.
            let ts = signature::verify_timestamped_hmac(
                header(name),
                "signature",
                body,
                &secrets,
                src.tolerance_secs,
                now,
            )?;
            Ok((None, ts))
        }
    }
}

/// 401 for a missing, stale or wrong signature; 400 for a malformed request.
fn refusal(src: &InboundSource, e: VerifyError) -> ApiError {
    let header = src
        .signature_header
        .as_deref()
        .unwrap_or("webhook-signature");
    let detail = match &e {
        VerifyError::MissingHeader("signature") => format!("missing {header} header"),
        VerifyError::Malformed("signature") => format!("{header} header is malformed"),
        _ => e.to_string(),
    };
    match e {
        VerifyError::MissingHeader("webhook-signature" | "signature")
        | VerifyError::TooOld(_)
        | VerifyError::TooNew(_)
        | VerifyError::NoMatch => ApiError::Unauthorized(format!("webhook refused: {detail}")),
        _ => ApiError::bad_request("invalid_webhook", format!("webhook refused: {detail}")),
    }
}

/// Map the payload and write the ledger event.
async fn record(
    state: &AppState,
    partner: &str,
    src: &InboundSource,
    payload: &Value,
    webhook_id: Option<String>,
    signed_at: i64,
    now: DateTime<Utc>,
) -> Result<Received, ApiError> {
    let payload_type = text_at(payload, &src.type_pointer).unwrap_or_default();
    let Some(mapping) = src.events.iter().find(|m| m.when == payload_type) else {
        return Ok(Received::Ignored { payload_type });
    };
    let id = match &src.id_pointer {
        Some(p) => text_at(payload, p),
        None => webhook_id,
    }
    .filter(|s| !s.is_empty())
    .ok_or_else(|| {
        unprocessable(format!(
            "the payload has no event id at {:?}",
            src.id_pointer.as_deref().unwrap_or("webhook-id")
        ))
    })?;
    let event =
        to_cloud_event(partner, src, mapping, payload, &id, signed_at).map_err(unprocessable)?;
    let parsed = crate::metering::event::parse_event(event, now).map_err(|problems| {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.reason))
            .collect();
        unprocessable(format!(
            "the mapped ledger event is invalid: {}",
            list.join("; ")
        ))
    })?;
    let mut usage = parsed.event;
    usage.partner_id = partner.to_owned();
    let recorder = Recorder::Webhook {
        source: src.id.clone(),
        trusted: src.trusted,
    };
    // check-config refuses a mapping the source may not record; this holds the line for
    // a config that was never checked.
    state
        .ledger_rules
        .check(&recorder, partner, &usage.event_type)
        .map_err(|r| ApiError::Forbidden(r.0))?;
    let event_id = usage.id.clone();
    let event_type = usage.event_type.clone();
    let db = state.db.clone();
    // In a task of its own: a sender that hangs up cannot cancel the commit half-way.
    let inserted = tokio::spawn(async move {
        let mut tx = db.begin().await?;
        let n =
            crate::metering::store::insert_usage_events(&mut tx, &[usage], &recorder, now).await?;
        tx.commit().await?;
        Ok::<u64, sqlx::Error>(n)
    })
    .await
    .map_err(|e| anyhow::anyhow!("the ledger write failed: {e}"))??;
    Ok(if inserted == 1 {
        Received::Accepted {
            event_id,
            event_type,
        }
    } else {
        Received::Duplicate { event_id }
    })
}

fn unprocessable(detail: String) -> ApiError {
    ApiError::Unprocessable {
        code: "unmappable_webhook",
        detail,
    }
}

/// The ledger event (CloudEvents 1.0) a mapped payload becomes. Pure.
pub fn to_cloud_event(
    partner: &str,
    src: &InboundSource,
    m: &Mapping,
    payload: &Value,
    id: &str,
    signed_at: i64,
) -> Result<Value, String> {
    let time = match &m.time {
        Some(p) => match payload.pointer(p) {
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|s| Utc.timestamp_opt(s, 0).single())
                .ok_or_else(|| format!("{p}: not a unix time"))?,
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("{p}: {e}"))?
                .with_timezone(&Utc),
            _ => return Err(format!("the payload has no time at {p}")),
        },
        None => Utc
            .timestamp_opt(signed_at, 0)
            .single()
            .ok_or("the signed timestamp is out of range")?,
    };
    let mut data = Map::new();
    for (name, field) in &m.data {
        data.insert(name.clone(), field_value(payload, field)?);
    }
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("partner-gateway/webhooks/in/{}", src.id),
        "type": m.event_type,
        "time": crate::time::rfc3339(time),
        "partner": partner,
        "data": Value::Object(data),
    });
    if let Some(p) = &m.subject {
        let s = text_at(payload, p).ok_or_else(|| format!("the payload has no subject at {p}"))?;
        event["subject"] = Value::String(s);
    }
    Ok(event)
}

fn field_value(payload: &Value, field: &Field) -> Result<Value, String> {
    let spec = match field {
        Field::Pointer(p) => {
            return payload
                .pointer(p)
                .cloned()
                .ok_or_else(|| format!("the payload has nothing at {p}"));
        }
        Field::Spec(s) => s,
    };
    let raw = payload
        .pointer(&spec.pointer)
        .ok_or_else(|| format!("the payload has nothing at {}", spec.pointer))?;
    if let Some(cur_ptr) = &spec.minor_units_of {
        let code = text_at(payload, cur_ptr)
            .ok_or_else(|| format!("the payload has no currency at {cur_ptr}"))?
            .to_ascii_uppercase();
        let currency = crate::statements::money::Currency::parse(&code)
            .ok_or_else(|| format!("{code:?} at {cur_ptr} is not an ISO 4217 currency"))?;
        let units: i64 = match raw {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "{}: expected an integer amount in minor units",
                spec.pointer
            )
        })?;
        let mut amount = Decimal::new(units, currency.minor_units);
        if spec.negate {
            amount = -amount;
        }
        return Ok(Value::String(amount.to_string()));
    }
    match raw {
        Value::String(s) if spec.upper => Ok(Value::String(s.to_uppercase())),
        other => Ok(other.clone()),
    }
}

/// A scalar at `pointer` as text.
fn text_at(payload: &Value, pointer: &str) -> Option<String> {
    match payload.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn billing() -> InboundSource {
        let toml = r#"
            id = "billing"
            signing = "timestamped-hmac"
            secrets = ["s3cret"]
            signature_header = "Billing-Signature"
            id_pointer = "/id"
            [[events]]
            when = "invoice.paid"
            event_type = "revenue.recognized"
            subject = "/data/object/customer"
            time = "/created"
            [events.data]
            amount = { pointer = "/data/object/amount_paid", minor_units_of = "/data/object/currency" }
            currency = { pointer = "/data/object/currency", upper = true }
            customer = "/data/object/customer"
            product = "/data/object/product"
        "#;
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn a_paid_invoice_becomes_recognized_revenue_in_major_units() {
        let src = billing();
        assert!(src.problems().is_empty(), "{:?}", src.problems());
        let payload = json!({
            "id": "evt_1", "type": "invoice.paid", "created": 1_793_000_000,
            "data": {"object": {"amount_paid": 129_999, "currency": "usd", "customer": "cus_9", "product": "prod_lms"}}
        });
        let e = to_cloud_event("canvas", &src, &src.events[0], &payload, "evt_1", 0).unwrap();
        assert_eq!(e["type"], "revenue.recognized");
        assert_eq!(e["data"]["amount"], "1299.99");
        assert_eq!(e["data"]["currency"], "USD");
        assert_eq!(e["subject"], "cus_9");
        assert_eq!(e["source"], "partner-gateway/webhooks/in/billing");
        let jpy = json!({"id": "e", "type": "invoice.paid", "created": 1_793_000_000,
            "data": {"object": {"amount_paid": -500, "currency": "jpy", "customer": "c", "product": "p"}}});
        let e = to_cloud_event("canvas", &src, &src.events[0], &jpy, "e", 0).unwrap();
        assert_eq!(e["data"]["amount"], "-500");
    }

    #[test]
    fn missing_fields_and_bad_currencies_are_named() {
        let src = billing();
        let payload = json!({"id": "evt_1", "type": "invoice.paid", "created": 1,
            "data": {"object": {"amount_paid": 1, "currency": "usd"}}});
        let err = to_cloud_event("p", &src, &src.events[0], &payload, "evt_1", 0).unwrap_err();
        assert!(err.contains("/data/object/customer"), "{err}");
        let payload = json!({"id": "evt_1", "type": "invoice.paid", "created": 1,
            "data": {"object": {"amount_paid": 1, "currency": "xxq", "customer": "c", "product": "p"}}});
        let err = to_cloud_event("p", &src, &src.events[0], &payload, "evt_1", 0).unwrap_err();
        assert!(err.contains("ISO 4217"), "{err}");
    }

    #[test]
    fn config_problems_are_named() {
        let mut src = billing();
        src.id = "bad id".into();
        src.signature_header = None;
        src.type_pointer = "type".into();
        let fields: Vec<String> = src.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["id", "signature_header", "type_pointer"]);
    }
}
