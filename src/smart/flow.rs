//! The pure parts of the SMART authorization code flow: PKCE, the
//! authorization URL, the client assertion's claims and the token response.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;

/// A PKCE pair: the verifier (43-128 characters from the unreserved set: 64 here) and its
/// S256 challenge (RFC 7636 §4).
pub fn pkce_pair() -> (String, String) {
    let verifier = crate::random::token(48);
    let challenge = pkce_challenge(&verifier);
    (verifier, challenge)
}

pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The parameters of one authorization request.
pub struct AuthorizeRequest<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    /// The FHIR base the token is for (SMART's `aud`).
    pub aud: &'a str,
    pub code_challenge: &'a str,
    /// The EHR's `launch` value (EHR launch only).
    pub launch: Option<&'a str>,
}

/// The authorization endpoint URL with the request's parameters added to any it has.
pub fn authorize_url(endpoint: &Url, req: &AuthorizeRequest<'_>) -> Url {
    let mut url = endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", req.client_id)
            .append_pair("redirect_uri", req.redirect_uri)
            .append_pair("scope", req.scope)
            .append_pair("state", req.state)
            .append_pair("aud", req.aud)
            .append_pair("code_challenge", req.code_challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(launch) = req.launch {
            q.append_pair("launch", launch);
        }
    }
    url
}

/// Claims of a `private_key_jwt` client assertion (SMART Backend Services / asymmetric
/// client auth): `exp` four minutes out (under the five-minute ceiling EHRs enforce) and a
/// fresh `jti` each time.
pub fn client_assertion_claims(client_id: &str, token_url: &str, now_secs: i64) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now_secs,
        "exp": now_secs + 240,
    })
}

/// A token endpoint response (RFC 6749 §5.1 plus SMART's launch context). Fields the
/// gateway does not know are kept in `extra` and handed to the app.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub expires_in: Option<Value>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub patient: Option<String>,
    #[serde(default)]
    pub encounter: Option<String>,
    #[serde(default, rename = "fhirContext")]
    pub fhir_context: Option<Value>,
    /// Epic sends it as the string "true"/"false"; see [`TokenResponse::banner`].
    #[serde(default)]
    pub need_patient_banner: Option<Value>,
    #[serde(default)]
    pub smart_style_url: Option<String>,
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TokenResponse {
    /// Parse and sanity-check a 2xx token response body.
    pub fn parse(body: &[u8]) -> Result<TokenResponse, String> {
        let t: TokenResponse = serde_json::from_slice(body)
            .map_err(|e| format!("the token response is not the expected JSON: {e}"))?;
        if t.access_token.is_empty() {
            return Err("the token response has an empty access_token".into());
        }
        if !t.token_type.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "the token response has token_type {:?}; only Bearer is supported",
                t.token_type
            ));
        }
        Ok(t)
    }

    /// `expires_in` in seconds; some servers send it as a string. None when absent.
    pub fn expires_in_secs(&self) -> Option<i64> {
        match &self.expires_in {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// `need_patient_banner` as a boolean, whether sent as one or as a string.
    pub fn banner(&self) -> Option<bool> {
        match &self.need_patient_banner {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The granted scopes: the response's `scope` when present (it may differ from the
    /// request), else what was requested (RFC 6749 §5.1).
    pub fn granted_scopes(&self, requested: &str) -> Vec<String> {
        self.scope
            .as_deref()
            .unwrap_or(requested)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// The launch context the app receives, without any token.
    pub fn context(&self, iss: &str) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("iss".into(), json!(iss));
        c.insert("patient".into(), json!(self.patient));
        c.insert("encounter".into(), json!(self.encounter));
        c.insert(
            "fhirContext".into(),
            self.fhir_context.clone().unwrap_or_else(|| json!([])),
        );
        c.insert("need_patient_banner".into(), json!(self.banner()));
        c.insert("smart_style_url".into(), json!(self.smart_style_url));
        c.insert("intent".into(), json!(self.intent));
        c.insert("tenant".into(), json!(self.tenant));
        c.insert("extra".into(), Value::Object(self.extra.clone()));
        c
    }
}

/// An OAuth error body (RFC 6749 §5.2), for messages.
pub fn oauth_error_text(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => match e.error_description {
            Some(d) => format!("{} ({d}), HTTP {status}", e.error),
            None => format!("{}, HTTP {status}", e.error),
        },
        Err(_) => format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_carries_enough_randomness() {
        let (v, c) = pkce_pair();
        assert_eq!(v.len(), 64);
        assert!(
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(c, pkce_challenge(&v));
    }

    #[test]
    fn the_pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_authorize_url_carries_every_smart_parameter() {
        let endpoint = Url::parse("https://ehr.example.com/oauth2/authorize?tenant=x").unwrap();
        let url = authorize_url(
            &endpoint,
            &AuthorizeRequest {
                client_id: "app",
                redirect_uri: "https://gw.example.com/smart/callback",
                scope: "launch openid",
                state: "s",
                aud: "https://ehr.example.com/fhir",
                code_challenge: "c",
                launch: Some("l1"),
            },
        );
        let q: std::collections::BTreeMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "x");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["aud"], "https://ehr.example.com/fhir");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["launch"], "l1");
        assert_eq!(q["scope"], "launch openid");
    }

    #[test]
    fn token_responses_keep_context_and_unknown_fields() {
        let body = br#"{"access_token":"a","token_type":"bearer","expires_in":"570","scope":"patient/Patient.rs",
            "patient":"p1","need_patient_banner":"true","fhirContext":[{"reference":"Encounter/1"}],"tenant":"t","__epic.dstu2.patient":"x"}"#;
        let t = TokenResponse::parse(body).unwrap();
        assert_eq!(t.expires_in_secs(), Some(570));
        assert_eq!(
            t.granted_scopes("launch patient/*.read"),
            vec!["patient/Patient.rs"]
        );
        let c = t.context("https://ehr/fhir");
        assert_eq!(c["patient"], "p1");
        assert_eq!(c["need_patient_banner"], true);
        assert_eq!(c["extra"]["__epic.dstu2.patient"], "x");
        assert!(!c.contains_key("access_token"));
        assert!(TokenResponse::parse(br#"{"access_token":"a","token_type":"mac"}"#).is_err());
    }

    #[test]
    fn the_client_assertion_expires_within_five_minutes() {
        let c = client_assertion_claims("app", "https://ehr/token", 1000);
        assert_eq!(c["aud"], "https://ehr/token");
        assert!(c["exp"].as_i64().unwrap() - 1000 <= 300);
        assert_ne!(
            c["jti"],
            client_assertion_claims("app", "https://ehr/token", 1000)["jti"]
        );
    }
}
