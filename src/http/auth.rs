//! API-key authentication: `Authorization: Bearer <key>`. Missing or unknown key: 401.
//! Wrong role, or another partner's data: 403.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::apikeys::Role;
use crate::http::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    /// Set for partner keys only.
    pub partner_id: Option<String>,
}

impl Caller {
    /// Refuse unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::Forbidden(format!(
            "this needs a key with role {}; this key's role is {}",
            names.join(" or "),
            self.role.as_str()
        )))
    }

    /// Whether the caller may see this partner's data.
    pub fn may_access_partner(&self, partner_id: &str) -> bool {
        match self.role {
            Role::Partner => self.partner_id.as_deref() == Some(partner_id),
            Role::Admin | Role::Finance | Role::App => true,
        }
    }

    /// For an object addressed by its id: another partner's is 404, exactly as an id that
    /// does not exist, so a partner key cannot probe which ids exist. (A partner named in a
    /// path or filter, whose existence is public config, is 403: [`Caller::check_partner`].)
    pub fn check_owner(
        &self,
        partner_id: &str,
        missing: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        if self.may_access_partner(partner_id) {
            Ok(())
        } else {
            Err(ApiError::NotFound(missing()))
        }
    }

    /// This caller, for the audit log: its key, and the request id of `headers` (set by
    /// the request-id layer).
    pub fn who(&self, headers: &axum::http::HeaderMap) -> crate::audit::Who {
        let request = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        crate::audit::Who {
            id: self.key_id.clone(),
            role: self.role.as_str().to_owned(),
            partner: self.partner_id.clone(),
            origin: format!("api {request}"),
        }
    }

    pub fn check_partner(&self, partner_id: &str) -> Result<(), ApiError> {
        if self.may_access_partner(partner_id) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this key belongs to partner {:?} and may not act for partner {partner_id:?}",
                self.partner_id.as_deref().unwrap_or("")
            )))
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization: Bearer <api key> header".into())
        })?;
        let value = header.to_str().map_err(|_| {
            ApiError::Unauthorized("the Authorization header is not valid text".into())
        })?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <api key>`".into(),
            ));
        }
        let key = state
            .api_keys
            .find(&state.db, token.trim())
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))?;
        let span = tracing::Span::current();
        span.record("role", key.role.as_str());
        if let Some(p) = &key.partner_id {
            span.record("partner_id", p.as_str());
            match state.config.partner(p) {
                Some(cfg) => crate::http::sandbox::note(cfg.sandbox),
                None => {
                    return Err(ApiError::Forbidden(format!(
                        "partner {p:?} is no longer configured; its keys are inactive"
                    )));
                }
            }
        }
        Ok(Caller {
            key_id: key.id.clone(),
            role: key.role,
            partner_id: key.partner_id.clone(),
        })
    }
}
