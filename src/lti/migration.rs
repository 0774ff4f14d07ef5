//! The LTI 1.1 migration claim (`https://purl.imsglobal.org/spec/lti/claim/lti1p1`, 1EdTech
//! "LTI 1.3 Migration" §3): a platform moving a tool from 1.1 to 1.3 names, in the 1.3
//! launch, the learner's 1.1 `user_id` and the 1.1 consumer key, and proves it knows that
//! key's secret with `oauth_consumer_key_sign`. Pure: parsing and the signature check; the
//! caller supplies the secret and records the link.
//!
//! The signature is HMAC-SHA256, keyed with the 1.1 shared secret, over
//! `oauth_consumer_key & deployment_id & iss & client_id & exp & nonce`, base64-encoded.
//! PHP platforms encode the HMAC's hexadecimal text instead of its bytes (`hash_hmac` without
//! `raw_output`: Moodle's enrol_lti and its tests do this); both encodings of the same MAC are
//! accepted, since either proves knowledge of the secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

pub const LTI1P1: &str = "https://purl.imsglobal.org/spec/lti/claim/lti1p1";

/// What a verified claim says about the learner's LTI 1.1 identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lti11Identity {
    pub consumer_key: String,
    /// The learner's 1.1 `user_id`; absent when the platform kept the same id (Moodle sends
    /// none when `sub` is the 1.1 id), in which case `sub` is the 1.1 id.
    pub user_id: String,
    /// The 1.1 `resource_link_id`, sent when it differs from the 1.3 one (Canvas).
    pub resource_link_id: Option<String>,
    pub context_id: Option<String>,
}

/// Why a claim was not trusted (logged; the launch goes on as a plain 1.3 launch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimProblem {
    #[error("the lti1p1 claim is not a JSON object")]
    NotObject,
    #[error("the lti1p1 claim has no oauth_consumer_key")]
    NoConsumerKey,
    #[error("the lti1p1 claim is not signed (no oauth_consumer_key_sign)")]
    Unsigned,
    #[error(
        "the lti1p1 claim names consumer key {0:?}, which is not the LTI 1.1 consumer configured for this platform"
    )]
    UnknownConsumer(String),
    #[error("the launch lacks {0}, which the lti1p1 signature covers")]
    MissingField(&'static str),
    #[error("the lti1p1 claim's oauth_consumer_key_sign does not verify")]
    BadSignature,
    #[error("the lti1p1 claim has no user_id and the launch no sub")]
    NoUser,
}

/// The string the platform signs (§3.2): key, deployment id, issuer, client id, `exp`,
/// `nonce`, joined by `&`, each as it appears in the token. `None` when a field is missing.
pub fn base_string(claims: &Value, consumer_key: &str) -> Result<String, ClaimProblem> {
    let text = |name: &'static str, v: Option<&Value>| -> Result<String, ClaimProblem> {
        match v {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(ClaimProblem::MissingField(name)),
        }
    };
    // `aud` may be an array (LTI core §5.1.2): the tool's client id is then `azp`.
    let client_id = match claims.get("aud") {
        Some(Value::Array(_)) => text("azp", claims.get("azp"))?,
        other => text("aud", other)?,
    };
    Ok([
        consumer_key.to_owned(),
        text("deployment_id", claims.get(super::claims::DEPLOYMENT_ID))?,
        text("iss", claims.get("iss"))?,
        client_id,
        text("exp", claims.get("exp"))?,
        text("nonce", claims.get("nonce"))?,
    ]
    .join("&"))
}

/// The HMAC over `base`; `None` cannot happen (HMAC takes a key of any length).
fn mac(base: &str, secret: &str) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(base.as_bytes());
    Some(m)
}

fn mac_bytes(base: &str, secret: &str) -> Vec<u8> {
    mac(base, secret).map_or_else(Vec::new, |m| m.finalize().into_bytes().to_vec())
}

/// `oauth_consumer_key_sign` as the spec defines it (base64 of the MAC's bytes): what the
/// simulators send and what a platform following the spec sends.
pub fn sign(base: &str, secret: &str) -> String {
    STANDARD.encode(mac_bytes(base, secret))
}

/// The PHP variant: base64 of the MAC's lowercase hexadecimal text.
pub fn sign_php(base: &str, secret: &str) -> String {
    STANDARD.encode(hex::encode(mac_bytes(base, secret)))
}

/// Whether `given` (base64 of the MAC, or base64 of its hex text) is the MAC of `base`,
/// compared in constant time by the MAC itself.
fn verifies(base: &str, secret: &str, given: &str) -> bool {
    let Ok(decoded) = STANDARD.decode(given.trim()) else {
        return false;
    };
    // 32 bytes: the MAC itself; 64: its hex text.
    let raw = if decoded.len() == 64 {
        match std::str::from_utf8(&decoded)
            .ok()
            .and_then(|h| hex::decode(h).ok())
        {
            Some(r) => r,
            None => return false,
        }
    } else {
        decoded
    };
    mac(base, secret).is_some_and(|m| m.verify_slice(&raw).is_ok())
}

/// Check the claim of a verified 1.3 launch (`claims`, the token's payload) against the 1.1
/// consumer configured for its platform (`consumer`: key and secret). `Ok(None)` when the
/// launch has no claim.
pub fn verify(
    claims: &Value,
    consumer: Option<(&str, &str)>,
) -> Result<Option<Lti11Identity>, ClaimProblem> {
    let Some(claim) = claims.get(LTI1P1) else {
        return Ok(None);
    };
    let claim = claim.as_object().ok_or(ClaimProblem::NotObject)?;
    // Canvas sends the claim with only the 1.1 `user_id` on every launch of a tool that no
    // 1.1 tool is associated with: informative, not a migration, and nothing to verify.
    if !claim.contains_key("oauth_consumer_key") && !claim.contains_key("oauth_consumer_key_sign") {
        return Ok(None);
    }
    let field = |k: &str| {
        claim
            .get(k)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    let key = field("oauth_consumer_key").ok_or(ClaimProblem::NoConsumerKey)?;
    let given = field("oauth_consumer_key_sign").ok_or(ClaimProblem::Unsigned)?;
    let secret = match consumer {
        Some((k, secret)) if k == key => secret,
        _ => return Err(ClaimProblem::UnknownConsumer(key)),
    };
    let base = base_string(claims, &key)?;
    if !verifies(&base, secret, &given) {
        return Err(ClaimProblem::BadSignature);
    }
    let user_id = field("user_id")
        .or_else(|| claims.get("sub").and_then(Value::as_str).map(str::to_owned))
        .filter(|s| !s.is_empty())
        .ok_or(ClaimProblem::NoUser)?;
    Ok(Some(Lti11Identity {
        consumer_key: key,
        user_id,
        resource_link_id: field("resource_link_id"),
        context_id: field("context_id"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The example of the 1EdTech migration guide (§3.2), also used by Canvas's and Tsugi's
    /// tests: the same inputs must give the published signature.
    fn spec_token() -> Value {
        json!({
            "nonce": "172we8671fd8z",
            "iat": 1551290796,
            "exp": 1551290856,
            "iss": "https://lmsvendor.com",
            "aud": "PM48OJSfGDTAzAo",
            "sub": "3",
            "https://purl.imsglobal.org/spec/lti/claim/deployment_id": "689302",
            LTI1P1: {
                "user_id": "34212",
                "oauth_consumer_key": "179248902",
                "oauth_consumer_key_sign": "lWd54kFo5qU7xshAna6v8BwoBm6tmUjc6GTax6+12ps="
            }
        })
    }

    const CONSUMER: Option<(&str, &str)> = Some(("179248902", "my-lti11-secret"));

    #[test]
    fn the_spec_example_verifies() {
        let t = spec_token();
        assert_eq!(
            base_string(&t, "179248902").unwrap(),
            "179248902&689302&https://lmsvendor.com&PM48OJSfGDTAzAo&1551290856&172we8671fd8z"
        );
        let id = verify(&t, CONSUMER).unwrap().unwrap();
        assert_eq!(id.user_id, "34212");
        assert_eq!(id.consumer_key, "179248902");
    }

    #[test]
    fn the_php_hex_encoding_verifies_too() {
        let mut t = spec_token();
        let base = base_string(&t, "179248902").unwrap();
        t[LTI1P1]["oauth_consumer_key_sign"] = json!(sign_php(&base, "my-lti11-secret"));
        assert!(verify(&t, CONSUMER).unwrap().is_some());
    }

    #[test]
    fn a_wrong_secret_a_changed_field_or_no_signature_is_refused() {
        let t = spec_token();
        assert_eq!(
            verify(&t, Some(("179248902", "another-secret"))),
            Err(ClaimProblem::BadSignature)
        );
        // Every signed field matters: a token from another deployment, issuer, tool, time
        // or nonce cannot reuse the signature.
        for (path, v) in [
            ("/nonce", json!("other")),
            ("/exp", json!(1551290857)),
            ("/iss", json!("https://evil.example")),
            ("/aud", json!("other-client")),
        ] {
            let mut t = spec_token();
            *t.pointer_mut(path).unwrap() = v;
            assert_eq!(
                verify(&t, CONSUMER),
                Err(ClaimProblem::BadSignature),
                "{path}"
            );
        }
        let mut t = spec_token();
        t["https://purl.imsglobal.org/spec/lti/claim/deployment_id"] = json!("689303");
        assert_eq!(verify(&t, CONSUMER), Err(ClaimProblem::BadSignature));
        // The user id is not signed by the spec: it is trusted only with the signature of a
        // platform that holds the secret, which also names the user in `sub`.
        let mut t = spec_token();
        t[LTI1P1]
            .as_object_mut()
            .unwrap()
            .remove("oauth_consumer_key_sign");
        assert_eq!(verify(&t, CONSUMER), Err(ClaimProblem::Unsigned));
        let mut t = spec_token();
        t[LTI1P1]["oauth_consumer_key_sign"] = json!("");
        assert_eq!(verify(&t, CONSUMER), Err(ClaimProblem::Unsigned));
    }

    #[test]
    fn a_claim_for_another_consumer_is_not_trusted() {
        let t = spec_token();
        assert_eq!(
            verify(&t, Some(("other-key", "my-lti11-secret"))),
            Err(ClaimProblem::UnknownConsumer("179248902".into()))
        );
        assert_eq!(
            verify(&t, None),
            Err(ClaimProblem::UnknownConsumer("179248902".into()))
        );
    }

    #[test]
    fn no_claim_is_no_identity_and_a_malformed_one_is_a_problem() {
        let mut t = spec_token();
        t.as_object_mut().unwrap().remove(LTI1P1);
        assert_eq!(verify(&t, CONSUMER), Ok(None));
        t[LTI1P1] = json!("179248902");
        assert_eq!(verify(&t, CONSUMER), Err(ClaimProblem::NotObject));
        t[LTI1P1] = json!({"oauth_consumer_key_sign": "x"});
        assert_eq!(verify(&t, CONSUMER), Err(ClaimProblem::NoConsumerKey));
        // Canvas's claim for a tool with no 1.1 tool associated: just the 1.1 user id.
        t[LTI1P1] = json!({"user_id": "34212"});
        assert_eq!(verify(&t, CONSUMER), Ok(None));
    }

    #[test]
    fn without_user_id_the_sub_is_the_lti11_id() {
        let mut t = spec_token();
        t[LTI1P1].as_object_mut().unwrap().remove("user_id");
        let id = verify(&t, CONSUMER).unwrap().unwrap();
        assert_eq!(id.user_id, "3");
    }

    #[test]
    fn an_audience_array_signs_with_azp() {
        let mut t = spec_token();
        t["aud"] = json!(["PM48OJSfGDTAzAo", "other"]);
        t["azp"] = json!("PM48OJSfGDTAzAo");
        assert!(verify(&t, CONSUMER).unwrap().is_some());
        t.as_object_mut().unwrap().remove("azp");
        assert_eq!(verify(&t, CONSUMER), Err(ClaimProblem::MissingField("azp")));
    }
}
