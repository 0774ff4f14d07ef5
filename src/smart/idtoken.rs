//! Verifying the `id_token` an EHR returns when `openid` was requested: signature against
//! the issuer's JWKS with the algorithm pinned to asymmetric ones the key allows (never
//! `none`, never HS* — an HMAC "signed" with the public key is the classic confusion),
//! then `iss`, `aud`, `exp` (and `iat`, `nbf`) with bounded leeway.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Algorithms an id_token may use. RS256 is what SMART servers are required to support.
const ALLOWED: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("the id_token is malformed: {0}")]
    Malformed(String),
    #[error("the id_token uses algorithm {0}, which is not accepted")]
    Algorithm(String),
    #[error("the id_token names key {0:?}, which is not in the issuer's JWKS")]
    UnknownKey(String),
    #[error("the id_token signature does not verify")]
    Signature,
    #[error("the id_token is for audience {0}, not this client")]
    Audience(String),
    #[error("the id_token issuer {0:?} is not the expected issuer")]
    Issuer(String),
    #[error("the id_token has expired")]
    Expired,
    #[error("the id_token is invalid: {0}")]
    Invalid(String),
}

impl IdTokenError {
    /// Whether a fresh copy of the JWKS might help.
    pub fn wants_fresh_keys(&self) -> bool {
        matches!(self, IdTokenError::UnknownKey(_))
    }
}

/// The header's algorithm, read without trusting anything else in the token.
fn header_alg(token: &str) -> Result<(String, Option<String>), IdTokenError> {
    use base64::Engine;
    let head = token
        .split('.')
        .next()
        .ok_or_else(|| IdTokenError::Malformed("no header".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| IdTokenError::Malformed("the header is not base64url".into()))?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|_| IdTokenError::Malformed("the header is not JSON".into()))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| IdTokenError::Malformed("the header has no alg".into()))?
        .to_owned();
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok((alg, kid))
}

/// Verify `token`; returns its claims. `issuers` are the accepted `iss` values (the
/// discovery `issuer` and the FHIR base); `client_id` must be in `aud`.
pub fn verify(
    token: &str,
    jwks: &Value,
    issuers: &[&str],
    client_id: &str,
    leeway_secs: u64,
) -> Result<Value, IdTokenError> {
    if token.split('.').count() != 3 {
        return Err(IdTokenError::Malformed("not a compact JWS".into()));
    }
    let (alg_name, kid) = header_alg(token)?;
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|_| IdTokenError::Algorithm(alg_name.clone()))?;
    if !ALLOWED.contains(&alg) {
        return Err(IdTokenError::Algorithm(alg_name));
    }
    let set: JwkSet = serde_json::from_value(strip_unusable(jwks))
        .map_err(|e| IdTokenError::Invalid(format!("the issuer's JWKS cannot be read: {e}")))?;
    let candidates: Vec<&Jwk> = match &kid {
        Some(k) => set
            .keys
            .iter()
            .filter(|j| j.common.key_id.as_deref() == Some(k))
            .collect(),
        // No kid: only acceptable when the issuer publishes a single key.
        None if set.keys.len() == 1 => set.keys.iter().collect(),
        None => return Err(IdTokenError::UnknownKey("(none)".into())),
    };
    let jwk = candidates
        .first()
        .ok_or_else(|| IdTokenError::UnknownKey(kid.clone().unwrap_or_default()))?;
    // A key that states its algorithm pins it.
    if let Some(key_alg) = &jwk.common.key_algorithm
        && format!("{key_alg:?}") != alg_name
    {
        return Err(IdTokenError::Algorithm(format!(
            "{alg_name} (the key is for {key_alg:?})"
        )));
    }
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| IdTokenError::Invalid(format!("the issuer's key cannot be used: {e}")))?;
    let mut validation = Validation::new(alg);
    validation.leeway = leeway_secs;
    validation.set_audience(&[client_id]);
    validation.set_issuer(issuers);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(mut data) => {
            check_iat(&data.claims, leeway_secs)?;
            // Signed by the EHR: a NUL (which no store keeps) becomes U+FFFD.
            crate::text::scrub_nul(&mut data.claims);
            Ok(data.claims)
        }
        Err(e) => Err(map_error(e, token)),
    }
}

/// An `iat` far in the future means a skewed or forged token.
fn check_iat(claims: &Value, leeway_secs: u64) -> Result<(), IdTokenError> {
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64) {
        let now = chrono::Utc::now().timestamp();
        if iat > now + leeway_secs as i64 {
            return Err(IdTokenError::Invalid("iat is in the future".into()));
        }
    }
    Ok(())
}

fn map_error(e: jsonwebtoken::errors::Error, token: &str) -> IdTokenError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => IdTokenError::Signature,
        ErrorKind::ExpiredSignature => IdTokenError::Expired,
        ErrorKind::InvalidAudience => IdTokenError::Audience(claim(token, "aud")),
        ErrorKind::InvalidIssuer => IdTokenError::Issuer(claim(token, "iss")),
        ErrorKind::InvalidAlgorithm => IdTokenError::Algorithm("(does not match the key)".into()),
        ErrorKind::MissingRequiredClaim(c) => IdTokenError::Invalid(format!("no {c} claim")),
        ErrorKind::ImmatureSignature => IdTokenError::Invalid("not valid yet (nbf)".into()),
        other => IdTokenError::Invalid(format!("{other:?}")),
    }
}

/// A claim of an unverified token, for error messages only.
fn claim(token: &str, name: &str) -> String {
    use base64::Engine;
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get(name).cloned())
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// JWKS entries this verifier cannot use (e.g. `kty: oct`, or encryption keys) would make
/// the whole set unreadable; drop them first.
fn strip_unusable(jwks: &Value) -> Value {
    let keys: Vec<Value> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .map(|ks| {
            ks.iter()
                .filter(|k| {
                    matches!(
                        k.get("kty").and_then(Value::as_str),
                        Some("RSA" | "EC" | "OKP")
                    ) && k
                        .get("use")
                        .and_then(Value::as_str)
                        .is_none_or(|u| u == "sig")
                })
                .filter(|k| serde_json::from_value::<Jwk>((*k).clone()).is_ok())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({ "keys": keys })
}

/// The user the id_token names: `fhirUser` made absolute against the FHIR base when it
/// is relative (`Practitioner/123`), and a display name when one is given.
pub fn user_of(
    claims: &Value,
    fhir_base: &str,
) -> (Option<String>, Option<String>, Option<String>) {
    let fhir_user = claims
        .get("fhirUser")
        .or_else(|| claims.get("profile"))
        .and_then(Value::as_str)
        .map(|u| absolute_reference(u, fhir_base));
    let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
    let name = display_name(claims);
    (fhir_user, sub, name)
}

/// A display name from OIDC claims: `name`, else given and family names.
pub fn display_name(claims: &Value) -> Option<String> {
    if let Some(n) = claims.get("name").and_then(Value::as_str) {
        return Some(n.to_owned());
    }
    let given = claims.get("given_name").and_then(Value::as_str);
    let family = claims.get("family_name").and_then(Value::as_str);
    match (given, family) {
        (Some(g), Some(f)) => Some(format!("{g} {f}")),
        (Some(x), None) | (None, Some(x)) => Some(x.to_owned()),
        _ => None,
    }
}

/// `Practitioner/1` against `https://ehr/fhir` is `https://ehr/fhir/Practitioner/1`; an
/// absolute URL stays as it is.
pub fn absolute_reference(reference: &str, fhir_base: &str) -> String {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        reference.to_owned()
    } else {
        format!(
            "{}/{}",
            fhir_base.trim_end_matches('/'),
            reference.trim_start_matches('/')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_fhir_users_are_made_absolute() {
        assert_eq!(
            absolute_reference("Practitioner/12", "https://ehr/r4/t/"),
            "https://ehr/r4/t/Practitioner/12"
        );
        assert_eq!(
            absolute_reference("https://ehr/fhir/Practitioner/12", "https://x"),
            "https://ehr/fhir/Practitioner/12"
        );
    }

    #[test]
    fn alg_none_and_hmac_are_refused_before_any_key_is_used() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwks = serde_json::json!({"keys": []});
        let none = format!("{}.{}.", enc(r#"{"alg":"none"}"#), enc(r#"{"sub":"x"}"#));
        assert!(matches!(
            verify(&none, &jwks, &["i"], "c", 0),
            Err(IdTokenError::Algorithm(_))
        ));
        let hs = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"HS256"}"#),
            enc(r#"{"sub":"x"}"#)
        );
        assert!(matches!(
            verify(&hs, &jwks, &["i"], "c", 0),
            Err(IdTokenError::Algorithm(_))
        ));
    }
}
