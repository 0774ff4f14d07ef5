//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>, "Signature scheme"):
//! the signed content is `{webhook-id}.{webhook-timestamp}.{body}`; `v1` is HMAC-SHA256 with a
//! `whsec_` secret (24-64 random bytes here), `v1a` is ed25519 with a `whsk_` seed and its
//! `whpk_` public key; the `webhook-signature` header is a space-separated list of
//! `version,base64` so that an old and a new secret can sign side by side during rotation.
//! Also the timestamped HMAC header many billing providers use (`t=...,v1=hex`). Pure: no
//! I/O, `now` is an argument.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer, Verifier};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes in a newly generated `whsec_` secret (the spec asks for 24 to 64).
pub const NEW_SECRET_BYTES: usize = 32;
pub const MIN_SECRET_BYTES: usize = 24;
pub const MAX_SECRET_BYTES: usize = 64;

/// The signing schemes of an outbound endpoint.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum Scheme {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v1a")]
    V1a,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::V1 => "v1",
            Scheme::V1a => "v1a",
        }
    }

    pub fn parse(s: &str) -> Option<Scheme> {
        match s {
            "v1" => Some(Scheme::V1),
            "v1a" => Some(Scheme::V1a),
            _ => None,
        }
    }
}

/// A key that signs: an HMAC secret or an ed25519 signing key. Not `Debug`-printable.
#[derive(Clone)]
pub enum SigningKey {
    Hmac(Vec<u8>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Hmac(_) => f.write_str("SigningKey::Hmac(<redacted>)"),
            SigningKey::Ed25519(_) => f.write_str("SigningKey::Ed25519(<redacted>)"),
        }
    }
}

impl SigningKey {
    /// A new random key of `scheme`.
    pub fn generate(scheme: Scheme) -> SigningKey {
        let mut rng = rand::rng();
        match scheme {
            Scheme::V1 => {
                let mut b = vec![0u8; NEW_SECRET_BYTES];
                rng.fill_bytes(&mut b);
                SigningKey::Hmac(b)
            }
            Scheme::V1a => {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                SigningKey::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed)))
            }
        }
    }

    pub fn scheme(&self) -> Scheme {
        match self {
            SigningKey::Hmac(_) => Scheme::V1,
            SigningKey::Ed25519(_) => Scheme::V1a,
        }
    }

    /// The serialized secret as shown once to its owner: `whsec_...` or `whsk_...`.
    pub fn encode(&self) -> String {
        match self {
            SigningKey::Hmac(b) => format!("whsec_{}", B64.encode(b)),
            SigningKey::Ed25519(k) => format!("whsk_{}", B64.encode(k.to_bytes())),
        }
    }

    /// Parse `whsec_...` (24-64 bytes) or `whsk_...` (a 32-byte ed25519 seed).
    pub fn decode(s: &str) -> Result<SigningKey, KeyError> {
        if let Some(b) = s.strip_prefix("whsec_") {
            let bytes = B64.decode(b).map_err(|_| KeyError::Base64("whsec_"))?;
            if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
                return Err(KeyError::Length {
                    prefix: "whsec_",
                    got: bytes.len(),
                    expected: "24 to 64",
                });
            }
            Ok(SigningKey::Hmac(bytes))
        } else if let Some(b) = s.strip_prefix("whsk_") {
            let bytes = B64.decode(b).map_err(|_| KeyError::Base64("whsk_"))?;
            let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length {
                prefix: "whsk_",
                got: bytes.len(),
                expected: "32",
            })?;
            Ok(SigningKey::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from_bytes(&seed),
            )))
        } else {
            Err(KeyError::Prefix)
        }
    }

    /// What a receiver verifies with: the same `whsec_` secret, or the `whpk_` public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            SigningKey::Hmac(b) => VerifyingKey::Hmac(b.clone()),
            SigningKey::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
        }
    }

    /// The public key as `whpk_...` (ed25519 only).
    pub fn public_key(&self) -> Option<String> {
        match self {
            SigningKey::Hmac(_) => None,
            SigningKey::Ed25519(k) => {
                Some(format!("whpk_{}", B64.encode(k.verifying_key().to_bytes())))
            }
        }
    }

    /// One `version,base64` signature of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        match self {
            SigningKey::Hmac(secret) => {
                let mut mac = hmac_with(secret);
                feed(&mut mac, id, timestamp, body);
                format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
            }
            SigningKey::Ed25519(k) => {
                let msg = signed_content(id, timestamp, body);
                format!("v1a,{}", B64.encode(k.sign(&msg).to_bytes()))
            }
        }
    }
}

/// The `webhook-signature` header value: one signature per key, space-separated (the newest
/// key first, an old key beside it while a rotation overlaps).
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A key that verifies.
#[derive(Clone)]
pub enum VerifyingKey {
    Hmac(Vec<u8>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyingKey::Hmac(_) => f.write_str("VerifyingKey::Hmac(<redacted>)"),
            VerifyingKey::Ed25519(k) => {
                write!(f, "VerifyingKey::Ed25519({})", B64.encode(k.to_bytes()))
            }
        }
    }
}

impl VerifyingKey {
    /// Parse `whsec_...` or `whpk_...`.
    pub fn decode(s: &str) -> Result<VerifyingKey, KeyError> {
        if s.starts_with("whsec_") {
            return Ok(SigningKey::decode(s)?.verifying_key());
        }
        let Some(b) = s.strip_prefix("whpk_") else {
            return Err(KeyError::Prefix);
        };
        let bytes = B64.decode(b).map_err(|_| KeyError::Base64("whpk_"))?;
        let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length {
            prefix: "whpk_",
            got: bytes.len(),
            expected: "32",
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map(VerifyingKey::Ed25519)
            .map_err(|_| KeyError::NotAPoint)
    }

    fn version(&self) -> &'static str {
        match self {
            VerifyingKey::Hmac(_) => "v1",
            VerifyingKey::Ed25519(_) => "v1a",
        }
    }

    fn matches(&self, id: &str, timestamp: i64, body: &[u8], sig: &[u8]) -> bool {
        match self {
            VerifyingKey::Hmac(secret) => {
                let mut mac = hmac_with(secret);
                feed(&mut mac, id, timestamp, body);
                // Constant-time comparison.
                mac.verify_slice(sig).is_ok()
            }
            VerifyingKey::Ed25519(k) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                    return false;
                };
                k.verify(&signed_content(id, timestamp, body), &sig).is_ok()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a webhook key starts with whsec_, whsk_ or whpk_")]
    Prefix,
    #[error("the part after {0} is not base64")]
    Base64(&'static str),
    #[error("{prefix} key has {got} bytes; expected {expected}")]
    Length {
        prefix: &'static str,
        got: usize,
        expected: &'static str,
    },
    #[error("whpk_ key is not a valid ed25519 public key")]
    NotAPoint,
}

/// Why a signed request was refused. Each names what is wrong, for the 400/401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("{0} header is malformed")]
    Malformed(&'static str),
    #[error("timestamp is {0} s older than allowed")]
    TooOld(i64),
    #[error("timestamp is {0} s in the future")]
    TooNew(i64),
    #[error("no signature matches")]
    NoMatch,
}

impl VerifyError {
    /// Whether the request is malformed (400) rather than unauthenticated (401).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            VerifyError::MissingHeader(_) | VerifyError::Malformed(_)
        )
    }
}

/// The three Standard Webhooks headers as received.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Verify a Standard Webhooks request: the timestamp within `tolerance_secs` of `now`
/// either way, and at least one signature of a version the keys speak matching one of the
/// keys. Returns the webhook id.
pub fn verify<'a>(
    headers: Headers<'a>,
    body: &[u8],
    keys: &[VerifyingKey],
    tolerance_secs: i64,
    now: DateTime<Utc>,
) -> Result<&'a str, VerifyError> {
    let id = headers
        .id
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts_raw = headers
        .timestamp
        .ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let sigs = headers
        .signature
        .ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    // The id is signed with a `.` after it; ids holding a `.` could shift the boundary.
    if id.contains('.') || id.len() > 256 {
        return Err(VerifyError::Malformed("webhook-id"));
    }
    let timestamp: i64 = ts_raw
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed("webhook-timestamp"))?;
    check_timestamp(timestamp, tolerance_secs, now)?;
    for item in sigs.split(' ').filter(|s| !s.is_empty()) {
        let Some((version, b64)) = item.split_once(',') else {
            continue;
        };
        let Ok(sig) = B64.decode(b64) else { continue };
        if keys
            .iter()
            .any(|k| k.version() == version && k.matches(id, timestamp, body, &sig))
        {
            return Ok(id);
        }
    }
    Err(VerifyError::NoMatch)
}

fn check_timestamp(
    timestamp: i64,
    tolerance_secs: i64,
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let age = now.timestamp() - timestamp;
    if age > tolerance_secs {
        return Err(VerifyError::TooOld(age - tolerance_secs));
    }
    if -age > tolerance_secs {
        return Err(VerifyError::TooNew(-age));
    }
    Ok(())
}

/// Verify the timestamped HMAC header billing providers use (Stripe's `Stripe-Signature`,
/// among others): `t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">[,v1=...]`, the
/// secret used as raw bytes of its text. Returns the timestamp.
pub fn verify_timestamped_hmac(
    header: Option<&str>,
    header_name: &'static str,
    body: &[u8],
    secrets: &[&[u8]],
    tolerance_secs: i64,
    now: DateTime<Utc>,
) -> Result<i64, VerifyError> {
    let header = header.ok_or(VerifyError::MissingHeader(header_name))?;
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t_raw = t.ok_or(VerifyError::Malformed(header_name))?;
    let timestamp: i64 = t_raw
        .parse()
        .map_err(|_| VerifyError::Malformed(header_name))?;
    if sigs.is_empty() {
        return Err(VerifyError::Malformed(header_name));
    }
    check_timestamp(timestamp, tolerance_secs, now)?;
    for sig in sigs {
        let Ok(sig) = hex::decode(sig) else { continue };
        for secret in secrets {
            let mut mac = hmac_with(secret);
            mac.update(t_raw.as_bytes());
            mac.update(b".");
            mac.update(body);
            if mac.verify_slice(&sig).is_ok() {
                return Ok(timestamp);
            }
        }
    }
    Err(VerifyError::NoMatch)
}

/// Sign like a billing provider: the `t=...,v1=...` header value (the sandbox and tests).
pub fn timestamped_hmac_header(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac_with(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

fn hmac_with(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn feed(mac: &mut HmacSha256, id: &str, timestamp: i64, body: &[u8]) {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(id.len() + body.len() + 24);
    msg.extend_from_slice(id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap()
    }

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> Headers<'a> {
        Headers {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    /// The example from the Standard Webhooks reference libraries' tests.
    #[test]
    fn v1_matches_the_reference_example() {
        let key = SigningKey::decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let vk = VerifyingKey::decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let id = verify(
            headers("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig),
            body,
            &[vk],
            300,
            at(1614265330),
        )
        .unwrap();
        assert_eq!(id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
    }

    #[test]
    fn v1a_round_trips_through_its_serialized_keys() {
        let sk = SigningKey::generate(Scheme::V1a);
        let sk2 = SigningKey::decode(&sk.encode()).unwrap();
        let pk = VerifyingKey::decode(&sk.public_key().unwrap()).unwrap();
        let sig = sk2.sign("msg_1", 1_700_000_000, b"{}");
        assert!(sig.starts_with("v1a,"));
        assert!(
            verify(
                headers("msg_1", "1700000000", &sig),
                b"{}",
                &[pk],
                300,
                at(1_700_000_000)
            )
            .is_ok()
        );
    }

    #[test]
    fn a_tampered_body_id_or_timestamp_is_refused() {
        let sk = SigningKey::generate(Scheme::V1);
        let vk = [sk.verifying_key()];
        let sig = sk.sign("msg_1", 1000, b"{\"a\":1}");
        let now = at(1000);
        assert_eq!(
            verify(headers("msg_1", "1000", &sig), b"{\"a\":2}", &vk, 300, now),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(headers("msg_2", "1000", &sig), b"{\"a\":1}", &vk, 300, now),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(headers("msg_1", "1001", &sig), b"{\"a\":1}", &vk, 300, now),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let sk = SigningKey::generate(Scheme::V1);
        let vk = [sk.verifying_key()];
        let sig = sk.sign("m", 1000, b"x");
        assert_eq!(
            verify(headers("m", "1000", &sig), b"x", &vk, 300, at(1301)),
            Err(VerifyError::TooOld(1))
        );
        assert_eq!(
            verify(headers("m", "1000", &sig), b"x", &vk, 300, at(699)),
            Err(VerifyError::TooNew(301))
        );
        assert!(verify(headers("m", "1000", &sig), b"x", &vk, 300, at(1300)).is_ok());
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let vk = [SigningKey::generate(Scheme::V1).verifying_key()];
        let h = Headers {
            id: None,
            timestamp: Some("1"),
            signature: Some("v1,xx"),
        };
        assert_eq!(
            verify(h, b"", &vk, 300, at(1)),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            verify(headers("m", "soon", "v1,xx"), b"", &vk, 300, at(1)),
            Err(VerifyError::Malformed("webhook-timestamp"))
        );
        assert_eq!(
            verify(headers("a.b", "1", "v1,xx"), b"", &vk, 300, at(1)),
            Err(VerifyError::Malformed("webhook-id"))
        );
    }

    #[test]
    fn rotation_signs_with_both_keys_and_either_verifies() {
        let old = SigningKey::generate(Scheme::V1);
        let new = SigningKey::generate(Scheme::V1a);
        let header = signature_header(&[new.clone(), old.clone()], "m", 5, b"b");
        assert_eq!(header.split(' ').count(), 2);
        assert!(
            verify(
                headers("m", "5", &header),
                b"b",
                &[old.verifying_key()],
                300,
                at(5)
            )
            .is_ok()
        );
        assert!(
            verify(
                headers("m", "5", &header),
                b"b",
                &[new.verifying_key()],
                300,
                at(5)
            )
            .is_ok()
        );
        let other = SigningKey::generate(Scheme::V1);
        assert_eq!(
            verify(
                headers("m", "5", &header),
                b"b",
                &[other.verifying_key()],
                300,
                at(5)
            ),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn a_v1_signature_never_satisfies_a_v1a_key() {
        let hmac = SigningKey::decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let ed = SigningKey::generate(Scheme::V1a);
        // Relabel an HMAC signature as v1a: the ed25519 key must refuse it.
        let forged = hmac.sign("m", 5, b"b").replacen("v1,", "v1a,", 1);
        assert_eq!(
            verify(
                headers("m", "5", &forged),
                b"b",
                &[ed.verifying_key()],
                300,
                at(5)
            ),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn secrets_outside_24_to_64_bytes_are_refused() {
        let short = format!("whsec_{}", B64.encode([1u8; 23]));
        let long = format!("whsec_{}", B64.encode([1u8; 65]));
        assert!(matches!(
            SigningKey::decode(&short),
            Err(KeyError::Length { got: 23, .. })
        ));
        assert!(matches!(
            SigningKey::decode(&long),
            Err(KeyError::Length { got: 65, .. })
        ));
        assert_eq!(SigningKey::decode("sk_abc").unwrap_err(), KeyError::Prefix);
        let k = SigningKey::generate(Scheme::V1);
        assert!(k.encode().starts_with("whsec_"));
        assert_eq!(format!("{k:?}"), "SigningKey::Hmac(<redacted>)");
    }

    #[test]
    fn timestamped_hmac_verifies_and_refuses() {
        let secret = b"whsec_billing_test";
        let body = br#"{"id":"evt_1"}"#;
        let header = timestamped_hmac_header(secret, 1000, body);
        let ok = verify_timestamped_hmac(
            Some(&header),
            "stripe-signature",
            body,
            &[secret],
            300,
            at(1000),
        );
        assert_eq!(ok, Ok(1000));
        let bad = verify_timestamped_hmac(
            Some(&header),
            "stripe-signature",
            b"{}",
            &[secret],
            300,
            at(1000),
        );
        assert_eq!(bad, Err(VerifyError::NoMatch));
        let stale = verify_timestamped_hmac(
            Some(&header),
            "stripe-signature",
            body,
            &[secret],
            300,
            at(2000),
        );
        assert_eq!(stale, Err(VerifyError::TooOld(700)));
        let missing =
            verify_timestamped_hmac(None, "stripe-signature", body, &[secret], 300, at(1000));
        assert_eq!(missing, Err(VerifyError::MissingHeader("stripe-signature")));
        let nosig = verify_timestamped_hmac(
            Some("t=1000"),
            "stripe-signature",
            body,
            &[secret],
            300,
            at(1000),
        );
        assert_eq!(nosig, Err(VerifyError::Malformed("stripe-signature")));
    }
}
