//! The one error type at the HTTP edge. Every error body is
//! `{"code": "...", "detail": "...", "errors": [...]}`; 5xx details stay in the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A per-field problem in a validation error. `index` is the event's position in a batch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A malformed request: `code` names the kind, `detail` says what is wrong.
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// A method the route does not serve; `allow` lists the ones it does.
    #[error("{detail}")]
    MethodNotAllowed { detail: String, allow: &'static str },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Conflict(String),
    /// A conflict with its own stable code (an Idempotency-Key still in use).
    #[error("{detail}")]
    ConflictCode { code: &'static str, detail: String },
    /// Well-formed, but it cannot be done with what is there (no agreement covers the
    /// period, the ledger holds revenue in another currency).
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    /// The thing existed but is no longer usable (an expired launch).
    #[error("{0}")]
    Gone(String),
    /// A partner system failed or refused what the gateway asked of it.
    #[error("{detail}")]
    BadGateway { code: &'static str, detail: String },
    #[error("the request took longer than {0} s")]
    Timeout(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e))
    }
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// U+0000 in the request, which the gateway never stores (`crate::text`): `place`
    /// names where (a JSON pointer, a parameter) so the caller can fix its input.
    pub fn nul_character(place: impl Into<String>) -> Self {
        ApiError::bad_request(
            "nul_character",
            format!(
                "{} holds a NUL character (U+0000), which the gateway does not accept",
                place.into()
            ),
        )
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Validation { .. } => (StatusCode::BAD_REQUEST, "validation_failed"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::ConflictCode { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::BadGateway { code, .. } => (StatusCode::BAD_GATEWAY, code),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The `code` of an error answer, kept on the response for the request log line.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

/// Every error's body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"code": "not_found", "detail": "no launch \"lch_0193e4c18f7a7d2e9a413c5b2f1e0d9a\""}))]
pub struct ErrorBody {
    /// Stable and machine-readable: `not_found`, `forbidden`, `validation_failed`, ...
    pub code: String,
    /// What is wrong, for a person.
    pub detail: String,
    /// Per-field problems of a `validation_failed` error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            // Logged here, once, inside the request span; the client sees no internals.
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal error; the request id identifies it in the gateway's log".to_owned()
            }
            other => other.to_string(),
        };
        let allow = match &self {
            ApiError::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        };
        let errors = match self {
            ApiError::Validation { errors, .. } => errors,
            _ => Vec::new(),
        };
        let mut resp = (
            status,
            Json(ErrorBody {
                code: code.to_owned(),
                detail,
                errors,
            }),
        )
            .into_response();
        resp.extensions_mut().insert(ErrorCode(code));
        if let Some(allow) = allow {
            let v = axum::http::HeaderValue::from_static(allow);
            resp.headers_mut().insert(axum::http::header::ALLOW, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
