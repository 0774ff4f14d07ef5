//! Client authentication at the token, revocation and introspection endpoints: public
//! clients (`client_id` only), `client_secret_basic` / `client_secret_post`, and
//! `private_key_jwt` (SMART asymmetric authentication, RFC 7523) with the client's keys
//! fetched from its registered JWKS URL.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{MockClient, MockClientAuth, OAuthError, Shared, lock, now_secs, single};

pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// SMART's ceiling on a client assertion's lifetime (Epic enforces it too).
const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// A client that proved who it is, and how.
pub(super) struct Authenticated<'a> {
    pub client: &'a MockClient,
    /// `none`, `client_secret_basic`, `client_secret_post` or `private_key_jwt`.
    pub method: &'static str,
}

/// The credentials a request presents, before checking them.
enum Presented<'a> {
    None {
        client_id: &'a str,
    },
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: &'a str,
        secret: &'a str,
    },
    Jwt {
        assertion: &'a str,
        client_id: Option<&'a str>,
    },
}

/// The authentication method a request uses, for the request log. Never fails.
pub(super) fn method_name(headers: &HeaderMap, form: &[(String, String)]) -> &'static str {
    if basic_credentials(headers).is_some() {
        "client_secret_basic"
    } else if form.iter().any(|(k, _)| k == "client_assertion") {
        "private_key_jwt"
    } else if form.iter().any(|(k, _)| k == "client_secret") {
        "client_secret_post"
    } else {
        "none"
    }
}

/// Authenticate the client of a token-endpoint-style request by its registered type.
pub(super) async fn authenticate<'a>(
    s: &'a Shared,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Authenticated<'a>, OAuthError> {
    let param = |name: &'static str| {
        single(form, name)
            .map_err(|n| OAuthError::invalid_request(format!("{n} appears more than once")))
    };
    let form_client_id = param("client_id")?;
    let form_secret = param("client_secret")?;
    let assertion = param("client_assertion")?;
    let assertion_type = param("client_assertion_type")?;
    let basic = basic_credentials(headers);

    let presented = match (basic, form_secret, assertion) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            // RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
            return Err(OAuthError::invalid_request(
                "more than one client authentication method in one request",
            ));
        }
        (Some(basic), None, None) => {
            let (client_id, secret) = basic.map_err(OAuthError::invalid_client)?;
            if form_client_id.is_some_and(|id| id != client_id) {
                return Err(OAuthError::invalid_client(
                    "client_id in the form differs from the one in the Authorization header",
                ));
            }
            Presented::Basic { client_id, secret }
        }
        (None, Some(secret), None) => Presented::Post {
            client_id: form_client_id
                .ok_or_else(|| OAuthError::invalid_client("client_secret without client_id"))?,
            secret,
        },
        (None, None, Some(assertion)) => {
            if assertion_type != Some(JWT_BEARER) {
                return Err(OAuthError::invalid_client(format!(
                    "client_assertion_type must be {JWT_BEARER}"
                )));
            }
            Presented::Jwt {
                assertion,
                client_id: form_client_id,
            }
        }
        (None, None, None) => Presented::None {
            client_id: form_client_id.ok_or_else(|| {
                OAuthError::invalid_client("no client authentication and no client_id")
            })?,
        },
    };

    match presented {
        Presented::None { client_id } => {
            let client = known(s, client_id)?;
            match client.auth {
                MockClientAuth::Public => Ok(Authenticated {
                    client,
                    method: "none",
                }),
                _ => Err(OAuthError::invalid_client(
                    "this client is confidential and must authenticate",
                )),
            }
        }
        Presented::Basic { client_id, secret } => {
            let client = known(s, &client_id)?;
            check_secret(client, &secret)?;
            Ok(Authenticated {
                client,
                method: "client_secret_basic",
            })
        }
        Presented::Post { client_id, secret } => {
            let client = known(s, client_id)?;
            check_secret(client, secret)?;
            Ok(Authenticated {
                client,
                method: "client_secret_post",
            })
        }
        Presented::Jwt {
            assertion,
            client_id,
        } => {
            let client_id = match client_id {
                Some(id) => id.to_owned(),
                None => unverified_claims(assertion)
                    .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned))
                    .ok_or_else(|| OAuthError::invalid_client("client_assertion has no iss"))?,
            };
            let client = known(s, &client_id)?;
            let MockClientAuth::Asymmetric { jwks_url } = &client.auth else {
                return Err(OAuthError::invalid_client(
                    "this client is not registered for private_key_jwt",
                ));
            };
            verify_assertion(s, client, jwks_url, assertion).await?;
            Ok(Authenticated {
                client,
                method: "private_key_jwt",
            })
        }
    }
}

fn known<'a>(s: &'a Shared, client_id: &str) -> Result<&'a MockClient, OAuthError> {
    s.clients
        .get(client_id)
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))
}

fn check_secret(client: &MockClient, presented: &str) -> Result<(), OAuthError> {
    let MockClientAuth::Symmetric { secret } = &client.auth else {
        return Err(OAuthError::invalid_client(
            "this client is not registered with a client secret",
        ));
    };
    // Compare digests so the comparison time does not depend on where the secrets differ.
    if Sha256::digest(secret.as_bytes()) == Sha256::digest(presented.as_bytes()) {
        Ok(())
    } else {
        Err(OAuthError::invalid_client("wrong client secret"))
    }
}

/// `Authorization: Basic` credentials: `None` without the header, `Some(Err)` if malformed.
/// The id and secret are form-urlencoded inside (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), &'static str>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    Some((|| {
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| "the Basic credentials are not base64")?;
        let text = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
        let (id, secret) = text
            .split_once(':')
            .ok_or("the Basic credentials have no ':'")?;
        Ok((form_decode(id), form_decode(secret)))
    })())
}

/// Undo application/x-www-form-urlencoded encoding of one component; a malformed escape
/// stays as it is.
fn form_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JOSE header of a compact JWS, unverified (for the request log).
pub(super) fn unverified_header(jwt: &str) -> Option<Value> {
    decode_segment(jwt.split('.').next()?)
}

/// The claims of a compact JWS, unverified (for the request log and to find the client).
pub(super) fn unverified_claims(jwt: &str) -> Option<Value> {
    decode_segment(jwt.split('.').nth(1)?)
}

fn decode_segment(segment: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn verify_assertion(
    s: &Shared,
    client: &MockClient,
    jwks_url: &str,
    assertion: &str,
) -> Result<(), OAuthError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| {
        OAuthError::invalid_client("client_assertion is not a JWS signed with RS384 or ES384")
    })?;
    let alg = header.alg;
    if !matches!(alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(OAuthError::invalid_client(format!(
            "client_assertion alg {alg:?} is not allowed: use RS384 or ES384"
        )));
    }
    let kid = header
        .kid
        .filter(|k| !k.is_empty())
        .ok_or_else(|| OAuthError::invalid_client("client_assertion header has no kid"))?;
    let key = decoding_key(s, jwks_url, &kid, alg).await?;

    let token_url = s.url(&s.paths.token);
    let mut validation = Validation::new(alg);
    validation.set_audience(&[token_url.as_str()]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| OAuthError::invalid_client(format!("client_assertion rejected: {e}")))?
        .claims;

    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if claim("iss") != Some(client.client_id.as_str())
        || claim("sub") != Some(client.client_id.as_str())
    {
        return Err(OAuthError::invalid_client(
            "client_assertion iss and sub must both be the client_id",
        ));
    }
    let now = now_secs();
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    if exp > now + MAX_ASSERTION_LIFETIME_SECS + LEEWAY_SECS {
        return Err(OAuthError::invalid_client(
            "client_assertion exp is more than five minutes in the future",
        ));
    }
    if let Some(iat) = claims.get("iat") {
        match iat.as_u64() {
            Some(iat) if iat <= now + LEEWAY_SECS => {}
            _ => {
                return Err(OAuthError::invalid_client(
                    "client_assertion iat is in the future",
                ));
            }
        }
    }
    let jti = claim("jti")
        .filter(|j| !j.is_empty())
        .ok_or_else(|| OAuthError::invalid_client("client_assertion has no jti"))?;

    // A jti need only be remembered until its assertion expires.
    let mut auth = lock(&s.auth);
    auth.seen_jti.retain(|_, exp| *exp + LEEWAY_SECS >= now);
    let key = format!("{}\u{0}{jti}", client.client_id);
    if auth.seen_jti.contains_key(&key) {
        return Err(OAuthError::invalid_client(
            "client_assertion jti was already used (replay)",
        ));
    }
    auth.seen_jti.insert(key, exp);
    Ok(())
}

/// The key `kid` from the client's JWKS: from the cache, else fetched once more (the client
/// may have rotated its keys since the cache was filled).
async fn decoding_key(
    s: &Shared,
    jwks_url: &str,
    kid: &str,
    alg: Algorithm,
) -> Result<DecodingKey, OAuthError> {
    let find = |keys: &[Jwk]| {
        keys.iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned()
    };
    let cached = lock(&s.jwks_cache).get(jwks_url).cloned();
    let jwk = match cached.as_deref().and_then(|keys| find(keys)) {
        Some(jwk) => jwk,
        None => {
            let keys = fetch_jwks(s, jwks_url).await?;
            let jwk = find(&keys);
            lock(&s.jwks_cache).insert(jwks_url.to_owned(), keys);
            jwk.ok_or_else(|| {
                OAuthError::invalid_client(format!("no key with kid {kid} in the client's JWKS"))
            })?
        }
    };
    key_for(&jwk, alg)
}

async fn fetch_jwks(s: &Shared, url: &str) -> Result<Arc<Vec<Jwk>>, OAuthError> {
    let unreachable = |what: String| {
        OAuthError::invalid_client(format!("cannot use the client's JWKS at {url}: {what}"))
    };
    let response = s
        .http
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unreachable(format!("HTTP {}", response.status())));
    }
    let body: Value = response
        .json()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let keys = body
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| unreachable("no keys array".into()))?;
    // Keys of types this server cannot use are skipped rather than failing the whole set.
    let usable = keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .collect();
    Ok(Arc::new(usable))
}

fn key_for(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, OAuthError> {
    let declared = jwk.common.key_algorithm;
    let fits = match (alg, &jwk.algorithm) {
        (Algorithm::RS384, AlgorithmParameters::RSA(_)) => {
            declared.is_none_or(|a| a == KeyAlgorithm::RS384)
        }
        (Algorithm::ES384, AlgorithmParameters::EllipticCurve(ec)) => {
            ec.curve == EllipticCurve::P384 && declared.is_none_or(|a| a == KeyAlgorithm::ES384)
        }
        _ => false,
    };
    if !fits {
        return Err(OAuthError::invalid_client(format!(
            "the client's key does not fit alg {alg:?}"
        )));
    }
    DecodingKey::from_jwk(jwk)
        .map_err(|e| OAuthError::invalid_client(format!("the client's key is unusable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_undoes_plus_and_percent() {
        assert_eq!(form_decode("a+b%3Ac%25"), "a b:c%");
        assert_eq!(form_decode("plain"), "plain");
        assert_eq!(form_decode("trailing%"), "trailing%");
        assert_eq!(form_decode("bad%zz"), "bad%zz");
    }
}
