//! Shared HTTP pieces: the error type, the body, query and path extractors, authentication,
//! health and metrics routes, and (`middleware.rs`) the layers every route runs under.

pub mod auth;
pub mod error;
pub mod headers;
pub mod health;
pub mod idempotency;
pub mod list;
pub mod middleware;
pub mod openapi;
pub mod page;
pub mod sandbox;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

pub use error::{ApiError, FieldError};

/// The raw request body, with an over-limit body turned into our JSON 413. On the `/v1`
/// API a JSON body holding U+0000 anywhere is refused here, naming the field by its JSON
/// pointer (`crate::text`): every handler reading a body gets the rule, none repeats it.
/// Other routes (inbound webhooks) scrub the data after verifying it instead.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let api = is_api(req.uri().path());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(
                    "the request body is larger than the gateway accepts (http.body_limit_bytes)"
                        .into(),
                )
            } else {
                ApiError::bad_request(
                    "unreadable_body",
                    format!("could not read the request body: {e}"),
                )
            }
        })?;
        if api && let Some(pointer) = crate::text::json_nul(&bytes) {
            let place = if pointer.is_empty() {
                "the JSON body".to_owned()
            } else {
                format!("the JSON body at {pointer}")
            };
            return Err(ApiError::nul_character(place));
        }
        Ok(Body(bytes))
    }
}

/// The gateway's own API, whose errors are JSON.
pub(crate) fn is_api(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// Query parameters, with a malformed query turned into our JSON 400.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Query<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", query_problem(&e.body_text())))
    }
}

/// Path parameters, with one the framework cannot read (percent-encoding that is not
/// UTF-8, say) turned into our JSON 400.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for Path<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| {
                use axum::extract::rejection::PathRejection;
                let why = match &e {
                    PathRejection::FailedToDeserializePathParams(inner) => match inner.kind() {
                        axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key } => {
                            format!("the path parameter {key} is not UTF-8 once percent-decoded")
                        }
                        other => other.to_string(),
                    },
                    other => other.body_text(),
                };
                ApiError::bad_request("invalid_path", format!("the path is invalid: {why}"))
            })
    }
}

/// The framework's words for a query it could not read, as ours: "Failed to deserialize
/// query string: limit: invalid digit found in string" becomes "the query string is
/// invalid: limit: invalid digit found in string".
pub fn query_problem(text: &str) -> String {
    let why = text
        .strip_prefix("Failed to deserialize query string: ")
        .or_else(|| text.strip_prefix("Failed to deserialize query string"))
        .unwrap_or(text)
        .trim();
    if why.is_empty() {
        "the query string is invalid".into()
    } else {
        format!("the query string is invalid: {why}")
    }
}
