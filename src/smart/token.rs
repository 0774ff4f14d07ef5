//! Calls to an EHR's token endpoint: code exchange, refresh and client_credentials, each
//! with the client authentication of the registration (SMART App Launch 2.2 §Client
//! authentication): public (`client_id` in the form), confidential-symmetric (HTTP Basic),
//! confidential-asymmetric (`private_key_jwt` assertion signed with the gateway's key).

use base64::Engine;
use url::Url;

use super::flow::{TokenResponse, client_assertion_claims, oauth_error_text};
use crate::keys::SigningKey;
use crate::outbound::Outbound;

/// How the gateway authenticates to a token endpoint.
pub enum ClientAuth {
    Public {
        client_id: String,
    },
    Symmetric {
        client_id: String,
        secret: String,
    },
    /// `audience`: the assertion's `aud` when it is not the token URL (D2L).
    Asymmetric {
        client_id: String,
        key: SigningKey,
        audience: Option<String>,
    },
}

impl ClientAuth {
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::Public { .. } => "none",
            ClientAuth::Symmetric { .. } => "client_secret_basic",
            ClientAuth::Asymmetric { .. } => "private_key_jwt",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The EHR answered with an OAuth error (or another non-2xx status).
    #[error("the EHR refused the token request: {0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Invalid(String),
}

impl TokenError {
    /// Whether the refresh token itself was refused (the user must launch again).
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, TokenError::Refused(m) if m.starts_with("invalid_grant"))
    }
}

/// POST `form` to the token endpoint with `auth`; parse a successful answer.
pub async fn request(
    outbound: &Outbound,
    token_url: &str,
    auth: &ClientAuth,
    mut form: Vec<(&'static str, String)>,
) -> Result<TokenResponse, TokenError> {
    let url: Url = outbound
        .url(token_url)
        .map_err(|e| TokenError::Invalid(e.to_string()))?;
    let mut req = outbound
        .client()
        .post(url.clone())
        .header("accept", "application/json");
    match auth {
        ClientAuth::Public { client_id } => form.push(("client_id", client_id.clone())),
        ClientAuth::Symmetric { client_id, secret } => {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic encoding.
            let user = form_encode(client_id);
            let pass = form_encode(secret);
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        ClientAuth::Asymmetric {
            client_id,
            key,
            audience,
        } => {
            let now = chrono::Utc::now().timestamp();
            let aud = audience.as_deref().unwrap_or(token_url);
            let claims = client_assertion_claims(client_id, aud, now);
            let assertion = crate::keys::sign_jwt(key, &claims)
                .map_err(|e| TokenError::Invalid(format!("signing the client assertion: {e}")))?;
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push(("client_assertion", assertion));
        }
    }
    let resp = req.form(&form).send().await.map_err(|e| {
        TokenError::Unreachable(format!(
            "could not reach the token endpoint {}: {}",
            crate::outbound::redact(&url),
            super::discovery::error_chain(&e.without_url())
        ))
    })?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| {
        TokenError::Unreachable(format!(
            "reading the token response: {}",
            super::discovery::error_chain(&e.without_url())
        ))
    })?;
    if !(200..300).contains(&status) {
        return Err(TokenError::Refused(oauth_error_text(status, &body)));
    }
    // The EHR's answer, which it alone can change: a NUL (which no store keeps) becomes
    // U+FFFD in the patient, encounter and other context the launch records.
    TokenResponse::parse(&crate::text::scrub_nul_json(&body)).map_err(TokenError::Invalid)
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
