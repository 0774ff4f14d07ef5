//! Checking a platform's launch `id_token` (LTI 1.3 core §5, Security Framework §5.1.3):
//! the signature (RS256 only, `kid` required, key from the platform's JWKS), then every
//! claim the spec requires. Pure except for the key lookup, which the caller does.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

pub const CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/";
pub const MESSAGE_TYPE: &str = "https://purl.imsglobal.org/spec/lti/claim/message_type";
pub const VERSION: &str = "https://purl.imsglobal.org/spec/lti/claim/version";
pub const DEPLOYMENT_ID: &str = "https://purl.imsglobal.org/spec/lti/claim/deployment_id";
pub const ROLES: &str = "https://purl.imsglobal.org/spec/lti/claim/roles";
pub const RESOURCE_LINK: &str = "https://purl.imsglobal.org/spec/lti/claim/resource_link";
pub const CONTEXT: &str = "https://purl.imsglobal.org/spec/lti/claim/context";
pub const CUSTOM: &str = "https://purl.imsglobal.org/spec/lti/claim/custom";
pub const TARGET_LINK_URI: &str = "https://purl.imsglobal.org/spec/lti/claim/target_link_uri";
pub const LAUNCH_PRESENTATION: &str =
    "https://purl.imsglobal.org/spec/lti/claim/launch_presentation";
pub const TOOL_PLATFORM: &str = "https://purl.imsglobal.org/spec/lti/claim/tool_platform";
pub const AGS: &str = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint";
pub const NRPS: &str = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice";
pub const DEEP_LINKING: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    ResourceLink,
    DeepLinking,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::ResourceLink => "LtiResourceLinkRequest",
            MessageType::DeepLinking => "LtiDeepLinkingRequest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error("the id_token is malformed: {0}")]
    Malformed(String),
    #[error("the id_token header has no kid")]
    NoKid,
    #[error("the id_token names key {0:?}, which is not in the platform's JWKS")]
    UnknownKid(String),
    #[error("the id_token uses algorithm {0}; LTI requires RS256")]
    Algorithm(String),
    #[error("the id_token signature does not verify")]
    Signature,
    #[error("the id_token has expired")]
    Expired,
    #[error("the id_token's iat is {0}")]
    IssuedAt(&'static str),
    #[error("the id_token's iss {0:?} is not this platform")]
    Issuer(String),
    #[error("the id_token is not for this tool (aud {0})")]
    Audience(String),
    #[error("the id_token's azp {0:?} is not this tool")]
    AuthorizedParty(String),
    #[error("the id_token's nonce does not match this launch")]
    Nonce,
    #[error("the id_token lacks the required claim {0}")]
    Missing(&'static str),
    #[error("the id_token's {0} is invalid: {1}")]
    Invalid(&'static str, String),
    #[error("the LTI version is {0:?}, not 1.3.0")]
    Version(String),
    #[error("the message type {0:?} is not supported")]
    MessageType(String),
    #[error("deployment {0:?} is not registered for this platform")]
    Deployment(String),
}

/// The header's `alg` and `kid`, read before anything is trusted.
pub fn header(token: &str) -> Result<(String, Option<String>), LaunchError> {
    use base64::Engine;
    let head = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| LaunchError::Malformed("the header is not base64url".into()))?;
    let h: Value = serde_json::from_slice(&bytes)
        .map_err(|_| LaunchError::Malformed("the header is not JSON".into()))?;
    let alg = h
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kid = h.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok((alg, kid))
}

/// The JWK named `kid` in `jwks`, if any.
pub fn find_key(jwks: &Value, kid: &str) -> Option<Jwk> {
    let keys = jwks.get("keys")?.as_array()?;
    keys.iter()
        .filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
        .find_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
}

/// Check the signature with `key`; returns the claims. RS256 only.
pub fn verify_signature(token: &str, key: &Jwk) -> Result<Value, LaunchError> {
    let (alg, _) = header(token)?;
    if alg != "RS256" {
        return Err(LaunchError::Algorithm(if alg.is_empty() {
            "(none)".into()
        } else {
            alg
        }));
    }
    let decoding = DecodingKey::from_jwk(key)
        .map_err(|e| LaunchError::Malformed(format!("the platform's key cannot be used: {e}")))?;
    let mut v = Validation::new(Algorithm::RS256);
    // Claims are checked below with LTI's rules and precise messages.
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &decoding, &v)
        .map(|d| {
            // Signed by the platform: a NUL (which no store keeps) becomes U+FFFD.
            let mut claims = d.claims;
            crate::text::scrub_nul(&mut claims);
            claims
        })
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => LaunchError::Signature,
            other => LaunchError::Malformed(format!("{other:?}")),
        })
}

/// What the launch must match.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now_secs: i64,
    pub leeway_secs: i64,
    pub max_age_secs: i64,
}

/// Check the claims of a verified id_token.
pub fn check(claims: &Value, expect: &Expect<'_>) -> Result<MessageType, LaunchError> {
    let s = |name: &'static str| claims.get(name).and_then(Value::as_str);
    match s("iss") {
        Some(i) if i == expect.issuer => {}
        other => return Err(LaunchError::Issuer(other.unwrap_or("").into())),
    }
    match claims.get("aud") {
        Some(Value::String(a)) if a == expect.client_id => {}
        Some(Value::Array(list)) if list.iter().any(|a| a.as_str() == Some(expect.client_id)) => {
            // Several audiences: the spec requires azp naming this tool.
            if list.len() > 1 || claims.get("azp").is_some() {
                match s("azp") {
                    Some(azp) if azp == expect.client_id => {}
                    Some(azp) => return Err(LaunchError::AuthorizedParty(azp.into())),
                    None if list.len() > 1 => return Err(LaunchError::Missing("azp")),
                    None => {}
                }
            }
        }
        other => {
            return Err(LaunchError::Audience(
                other
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "missing".into()),
            ));
        }
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(LaunchError::Missing("exp"))?;
    if exp + expect.leeway_secs < expect.now_secs {
        return Err(LaunchError::Expired);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(LaunchError::Missing("iat"))?;
    if iat > expect.now_secs + expect.leeway_secs {
        return Err(LaunchError::IssuedAt("in the future"));
    }
    if iat < expect.now_secs - expect.max_age_secs {
        return Err(LaunchError::IssuedAt("too long ago"));
    }
    match s("nonce") {
        Some(n) if n == expect.nonce => {}
        Some(_) => return Err(LaunchError::Nonce),
        None => return Err(LaunchError::Missing("nonce")),
    }
    match s(VERSION) {
        Some("1.3.0") => {}
        Some(v) => return Err(LaunchError::Version(v.into())),
        None => return Err(LaunchError::Missing("version")),
    }
    let message = match s(MESSAGE_TYPE) {
        Some("LtiResourceLinkRequest") => MessageType::ResourceLink,
        Some("LtiDeepLinkingRequest") => MessageType::DeepLinking,
        Some(m) => return Err(LaunchError::MessageType(m.into())),
        None => return Err(LaunchError::Missing("message_type")),
    };
    if s(DEPLOYMENT_ID).is_none_or(str::is_empty) {
        return Err(LaunchError::Missing("deployment_id"));
    }
    match claims.get(ROLES) {
        Some(Value::Array(roles)) if roles.iter().all(Value::is_string) => {}
        Some(_) => {
            return Err(LaunchError::Invalid(
                "roles",
                "not an array of strings".into(),
            ));
        }
        None => return Err(LaunchError::Missing("roles")),
    }
    match message {
        MessageType::ResourceLink => {
            if s("sub").is_none_or(str::is_empty) {
                return Err(LaunchError::Missing("sub"));
            }
            let link = claims
                .get(RESOURCE_LINK)
                .ok_or(LaunchError::Missing("resource_link"))?;
            if link
                .get("id")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(LaunchError::Missing("resource_link.id"));
            }
        }
        MessageType::DeepLinking => {
            let settings = claims
                .get(DEEP_LINKING)
                .ok_or(LaunchError::Missing("deep_linking_settings"))?;
            let ret = settings
                .get("deep_link_return_url")
                .and_then(Value::as_str)
                .ok_or(LaunchError::Missing("deep_link_return_url"))?;
            crate::outbound::parse_http_url(ret)
                .map_err(|e| LaunchError::Invalid("deep_link_return_url", e))?;
        }
    }
    if let Some(t) = s(TARGET_LINK_URI)
        && t.is_empty()
    {
        return Err(LaunchError::Invalid("target_link_uri", "empty".into()));
    }
    Ok(message)
}

/// JWKS parse check used when the platform publishes keys this library cannot read.
pub fn parse_jwks(jwks: &Value) -> Option<JwkSet> {
    serde_json::from_value(jwks.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "iss": "https://lms.example.com", "aud": ["tool-1"], "azp": "tool-1", "sub": "u1",
            "exp": 1_000_060, "iat": 1_000_000, "nonce": "n1",
            VERSION: "1.3.0", MESSAGE_TYPE: "LtiResourceLinkRequest", DEPLOYMENT_ID: "d1",
            ROLES: [], RESOURCE_LINK: {"id": "rl1"}, TARGET_LINK_URI: "https://tool/launch",
        })
    }

    fn expect() -> Expect<'static> {
        Expect {
            issuer: "https://lms.example.com",
            client_id: "tool-1",
            nonce: "n1",
            now_secs: 1_000_010,
            leeway_secs: 60,
            max_age_secs: 600,
        }
    }

    fn without(field: &str) -> Value {
        let mut c = good();
        c.as_object_mut().unwrap().remove(field);
        c
    }

    #[test]
    fn a_well_formed_launch_passes_with_empty_roles() {
        assert_eq!(check(&good(), &expect()), Ok(MessageType::ResourceLink));
    }

    #[test]
    fn each_missing_or_wrong_claim_is_named() {
        assert_eq!(
            check(&without(MESSAGE_TYPE), &expect()),
            Err(LaunchError::Missing("message_type"))
        );
        assert_eq!(
            check(&without(ROLES), &expect()),
            Err(LaunchError::Missing("roles"))
        );
        assert_eq!(
            check(&without(DEPLOYMENT_ID), &expect()),
            Err(LaunchError::Missing("deployment_id"))
        );
        assert_eq!(
            check(&without(RESOURCE_LINK), &expect()),
            Err(LaunchError::Missing("resource_link"))
        );
        assert_eq!(
            check(&without("sub"), &expect()),
            Err(LaunchError::Missing("sub"))
        );
        let mut c = good();
        c[VERSION] = json!("1.2.0");
        assert_eq!(
            check(&c, &expect()),
            Err(LaunchError::Version("1.2.0".into()))
        );
        let mut c = good();
        c["aud"] = json!("someone-else");
        assert!(matches!(
            check(&c, &expect()),
            Err(LaunchError::Audience(_))
        ));
        let mut c = good();
        c["aud"] = json!(["tool-1", "other"]);
        c.as_object_mut().unwrap().remove("azp");
        assert_eq!(check(&c, &expect()), Err(LaunchError::Missing("azp")));
        let mut c = good();
        c["nonce"] = json!("other");
        assert_eq!(check(&c, &expect()), Err(LaunchError::Nonce));
    }

    #[test]
    fn times_are_bounded() {
        let mut c = good();
        c["exp"] = json!(1_000_010 - 61);
        assert_eq!(check(&c, &expect()), Err(LaunchError::Expired));
        let mut c = good();
        c["iat"] = json!(1_000_010 + 61);
        assert_eq!(
            check(&c, &expect()),
            Err(LaunchError::IssuedAt("in the future"))
        );
        let mut c = good();
        c["iat"] = json!(1_000_010 - 601);
        c["exp"] = json!(1_000_100);
        assert_eq!(
            check(&c, &expect()),
            Err(LaunchError::IssuedAt("too long ago"))
        );
        // Moodle: 60 s tokens, checked 50 s late with the leeway, still fine.
        let mut c = good();
        c["exp"] = json!(1_000_000);
        assert!(check(&c, &expect()).is_ok());
    }

    #[test]
    fn a_string_aud_is_accepted() {
        let mut c = good();
        c["aud"] = json!("tool-1");
        c.as_object_mut().unwrap().remove("azp");
        assert!(check(&c, &expect()).is_ok());
    }
}
