//! `GET /healthz` (the process is up), `GET /readyz` (database reachable and migrations
//! current), `GET /metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;
use crate::telemetry::metrics::{COMMIT, VERSION};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

async fn healthz() -> Response {
    answer(StatusCode::OK, json!({"status": "ok"}))
}

/// A health answer: `fields` and the running version and commit.
fn answer(status: StatusCode, mut fields: serde_json::Value) -> Response {
    fields["version"] = json!(VERSION);
    fields["commit"] = json!(COMMIT);
    (status, Json(fields)).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.db.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "database": "unreachable"}),
        );
    }
    // Issued statements that no longer match their hash are reported here (and logged by
    // the checker) without taking the instance out of service: launches and the ledger do
    // not depend on them, and an operator has to look either way.
    let statements = match state.statement_integrity.latest() {
        None => json!({"issued": "not checked yet"}),
        Some(i) if i.mismatched.is_empty() => {
            json!({"issued": i.issued, "hashes": "match", "checked_at": i.checked_at})
        }
        Some(i) => json!({
            "issued": i.issued, "hashes": "MISMATCH", "mismatched": i.mismatched,
            "checked_at": i.checked_at,
        }),
    };
    match state.db.pending_migrations().await {
        Ok(pending) if pending.is_empty() => answer(
            StatusCode::OK,
            json!({"status": "ready", "database": "ok", "migrations": "current", "statements": statements}),
        ),
        Ok(pending) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "database": "ok", "migrations": "pending", "pending": pending}),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: cannot read migrations");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable"}),
            )
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    crate::telemetry::metrics::sample(&state.db).await;
    match crate::telemetry::prometheus() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render() + &crate::telemetry::metrics::process_text(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response(),
    }
}
