//! Inbound webhooks: `POST /webhooks/in/{partner}/{source}`. A partner's system (billing, a
//! marketplace, an LMS) posts its events; the source's config says how they are signed and
//! how each event type becomes a ledger event. Verified before anything is parsed; an
//! event id seen before is acknowledged and not stored twice (the ledger's unique key).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::signature::{self, Headers, VerifyError, VerifyingKey};
use super::source::{Field, InboundSource, Mapping, Signing};
use crate::http::{ApiError, Body};
use crate::metering::authority::Recorder;
use crate::state::AppState;

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
    let (db, subjects) = (state.db.clone(), state.subjects.clone());
    // In a task of its own: a sender that hangs up cannot cancel the commit half-way.
    let inserted = tokio::spawn(async move {
        let mut tx = db.begin().await?;
        let n = crate::metering::store::insert_usage_events(
            &mut tx,
            &subjects,
            vec![usage],
            &recorder,
            now,
        )
        .await?;
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
        if let Field::Spec(spec) = field
            && spec.optional
            && payload.pointer(&spec.pointer).is_none_or(Value::is_null)
        {
            continue;
        }
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
            invoice = { pointer = "/data/object/invoice", optional = true }
        "#;
        toml::from_str(toml).unwrap()
    }

    /// An optional field is left out when the payload has nothing or null there; a
    /// required one still refuses the event.
    #[test]
    fn optional_fields_are_left_out_when_absent() {
        let src = billing();
        let with = |object: Value| {
            let payload = json!({"id": "evt_1", "type": "invoice.paid", "created": 1_793_000_000,
                "data": {"object": object}});
            to_cloud_event("canvas", &src, &src.events[0], &payload, "evt_1", 0)
        };
        let base =
            json!({"amount_paid": 100, "currency": "usd", "customer": "cus_9", "product": "p"});
        let e = with(base.clone()).unwrap();
        assert!(e["data"].get("invoice").is_none(), "{e}");
        let mut null = base.clone();
        null["invoice"] = Value::Null;
        assert!(with(null).unwrap()["data"].get("invoice").is_none());
        let mut present = base.clone();
        present["invoice"] = json!("in_42");
        assert_eq!(with(present).unwrap()["data"]["invoice"], "in_42");
        let mut no_customer = base;
        no_customer.as_object_mut().unwrap().remove("customer");
        assert!(
            with(no_customer)
                .unwrap_err()
                .contains("/data/object/customer")
        );
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
