//! The event types the gateway emits, each with what it means and an example payload (the
//! README's catalogue and `GET /v1/webhooks/event-types` come from here), and the helpers
//! the other areas call inside the transaction of the change.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::db::Tx;
use crate::launches::Launch;

/// One entry of the catalogue.
pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
    /// An example `data` object.
    pub example: fn() -> Value,
}

pub const LAUNCH_COMPLETED: &str = "launch.completed";
pub const GRADE_DELIVERED: &str = "grade.delivered";
pub const GRADE_FAILED: &str = "grade.failed";
pub const GRADE_UNCONFIRMED: &str = "grade.unconfirmed";
pub const STATEMENT_FINALIZED: &str = "statement.finalized";
pub const STATEMENT_VOIDED: &str = "statement.voided";
pub const LTI_REGISTRATION_PENDING: &str = "lti.registration.pending";
pub const ENDPOINT_DISABLED: &str = "webhook.endpoint.disabled";
pub const THRESHOLD_CROSSED: &str = "usage.threshold.crossed";
pub const WEBHOOK_TEST: &str = "webhook.test";

pub const CATALOGUE: &[EventType] = &[
    EventType {
        name: LAUNCH_COMPLETED,
        description: "A person arrived through a partner (SMART, LTI 1.3, LTI 1.1) and was handed to the app.",
        example: || {
            json!({
                "launch_id": "lch_0193e4c18f7a7d2e9a413c5b2f1e0d9a",
                "partner": "canvas",
                "kind": "lti",
                "user": {"id": "a6d5c443-1f51-4783-ba1a-7686ffe3b54a", "name": "Ada Lovelace"},
                "context_id": "course-42",
                "resource_link_id": "rl-7",
                "patient": null,
                "created_at": "2026-11-02T09:15:00.000000Z"
            })
        },
    },
    EventType {
        name: GRADE_DELIVERED,
        description: "A score the app posted reached the LMS gradebook (2xx from the platform).",
        example: || {
            json!({
                "score_id": "scr_0193e4c20b117c3a8f555d2e7a9b1c40",
                "launch_id": "lch_0193e4c18f7a7d2e9a413c5b2f1e0d9a",
                "partner": "moodle",
                "user_id": "42",
                "line_item": "https://moodle.example.edu/mod/lti/services.php/2/lineitems/7/lineitem?type_id=3",
                "status": 200
            })
        },
    },
    EventType {
        name: GRADE_FAILED,
        description: "The LMS refused a score for good (kept with the platform's status and reason; not retried).",
        example: || {
            json!({
                "score_id": "scr_0193e4c20b117c3a8f555d2e7a9b1c40",
                "launch_id": "lch_0193e4c18f7a7d2e9a413c5b2f1e0d9a",
                "partner": "d2l",
                "user_id": "42",
                "status": 422,
                "reason": "the platform refused the score with 422: scoreGiven exceeds scoreMaximum"
            })
        },
    },
    EventType {
        name: GRADE_UNCONFIRMED,
        description: "The LMS refused a resend of a score that an earlier attempt may already have stored (its answer was lost), and offers no way to read back what it holds: delivered or refused, unknown. Check the gradebook; not retried.",
        example: || {
            json!({
                "score_id": "scr_0193e4c20b117c3a8f555d2e7a9b1c40",
                "launch_id": "lch_0193e4c18f7a7d2e9a413c5b2f1e0d9a",
                "partner": "moodle",
                "user_id": "42",
                "status": 409,
                "reason": "delivered or refused: unknown. the platform refused the score with 409: Refusing score with an earlier timestamp for item 7 and user 42; an earlier attempt may have stored it, and the LMS offers no result service to read back what it stored (scope result.readonly): check the gradebook"
            })
        },
    },
    EventType {
        name: STATEMENT_FINALIZED,
        description: "A revenue-share statement was issued: numbered, hashed, immutable.",
        example: || {
            json!({
                "statement_id": "stmt_0193e4c35a2b7e11b0c49f8e7d6c5b4a",
                "partner": "epic",
                "agreement": "epic-revenue-share",
                "period": "2026-10",
                "number": 7,
                "currency": "USD",
                "total": "18234.50",
                "hash": "sha256:6f1c…"
            })
        },
    },
    EventType {
        name: STATEMENT_VOIDED,
        description: "An issued statement was voided (the record stays; a replacement references it).",
        example: || {
            json!({
                "statement_id": "stmt_0193e4c35a2b7e11b0c49f8e7d6c5b4a",
                "partner": "epic",
                "period": "2026-10",
                "number": 7,
                "reason": "agreement rate entered wrongly"
            })
        },
    },
    EventType {
        name: LTI_REGISTRATION_PENDING,
        description: "An LMS registered the tool through LTI Dynamic Registration and waits for an admin's approval.",
        example: || {
            json!({
                "registration_id": "reg_0193e4c41d2e7f30a1b2c3d4e5f60718",
                "partner": "moodle",
                "issuer": "https://moodle.example.edu",
                "client_id": "kZ3vQ9",
                "deployment_id": "1",
                "platform": "moodle"
            })
        },
    },
    EventType {
        name: ENDPOINT_DISABLED,
        description: "A webhook endpoint was disabled (it answered 410 Gone, or failed continuously for the configured window); sent to the partner's other endpoints and the app's.",
        example: || {
            json!({
                "endpoint_id": "ep_0193e4c5a0b17c2d8e9f0a1b2c3d4e5f",
                "partner": "canvas",
                "url": "https://hooks.canvas-partner.example/gateway",
                "reason": "the endpoint answered 410 Gone"
            })
        },
    },
    EventType {
        name: THRESHOLD_CROSSED,
        description: "A partner's meter reached a threshold set in config for the current month (UTC); sent once per threshold and month.",
        example: || {
            json!({
                "partner": "canvas",
                "meter": "launches",
                "threshold": "10000",
                "value": "10012",
                "window_start": "2026-11-01T00:00:00.000000Z",
                "window_end": "2026-12-01T00:00:00.000000Z"
            })
        },
    },
    EventType {
        name: WEBHOOK_TEST,
        description: "Sent on request (the console's \"Send a test event\") to one endpoint only, to check it receives and verifies the gateway's messages; carries nothing to act on.",
        example: || {
            json!({
                "endpoint_id": "ep_0193e4c5a0b17c2d8e9f0a1b2c3d4e5f",
                "partner": "canvas",
                "requested_by": "con:email:canvas:ana@partner.example",
                "note": "A test message from partner-gateway. It carries nothing to act on."
            })
        },
    },
];

/// The catalogue as JSON: name, description, example body.
pub fn catalogue() -> Vec<Value> {
    CATALOGUE
        .iter()
        .map(|e| {
            json!({
                "type": e.name,
                "description": e.description,
                "example": {"type": e.name, "timestamp": "2026-11-02T09:15:00.123456Z", "data": (e.example)()},
            })
        })
        .collect()
}

/// `launch.completed`, inside the launch's own transaction.
pub async fn launch_completed(
    tx: &mut Tx,
    launch: &Launch,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let str_at = |p: &str| launch.ctx(p).cloned().unwrap_or(Value::Null);
    let data = json!({
        "launch_id": launch.id,
        "partner": launch.partner_id,
        "kind": launch.kind.as_str(),
        "user": {"id": launch.user_id, "name": launch.user_name},
        "context_id": str_at("/context/id"),
        "resource_link_id": str_at("/resource_link/id"),
        "patient": str_at("/patient"),
        "created_at": crate::time::rfc3339(launch.created_at),
    });
    super::emit(tx, Some(&launch.partner_id), LAUNCH_COMPLETED, &data, now).await?;
    Ok(())
}
