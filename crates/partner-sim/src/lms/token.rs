//! The token endpoint: the OAuth 2.0 client credentials grant with a JWT client assertion
//! (RFC 7523; LTI Security Framework 1.0 §4.1), the bearer check of the services, and the
//! verification of JWTs tools sign (client assertions, deep-linking responses) against the
//! tool's JWKS URL.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::{
    ACCESS_TOKEN_SECS, AccessToken, LEEWAY_SECS, Personality, RecordedTokenRequest, Refusal,
    SUPPORTED_SCOPES, Shared, TOKEN_LOG_CAP, lock, now_secs, oauth_error, parse_form, random_token,
    single,
};

pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Client assertion algorithms each vendor documents: RS256 only, except the generic
/// platform, which also takes the SMART-style RS384 and ES384.
pub(super) fn assertion_algs(p: Personality) -> &'static [Algorithm] {
    match p {
        Personality::Generic => &[Algorithm::RS256, Algorithm::RS384, Algorithm::ES384],
        _ => &[Algorithm::RS256],
    }
}

pub(super) async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    record(&s, &form);
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| super::essence(v) == "application/x-www-form-urlencoded");
    if !form_type {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the token request must be application/x-www-form-urlencoded",
        );
    }
    match grant(&s, &form).await {
        Ok(body) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(body),
        )
            .into_response(),
        Err(response) => response,
    }
}

fn record(s: &Shared, form: &[(String, String)]) {
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let assertion = get("client_assertion");
    let entry = RecordedTokenRequest {
        grant_type: get("grant_type").unwrap_or_default(),
        scope: get("scope"),
        assertion_header: assertion.as_deref().and_then(unverified_header),
        assertion_claims: assertion.as_deref().and_then(unverified_claims),
        form: form.iter().cloned().collect(),
    };
    let mut log = lock(&s.token_log);
    if log.len() >= TOKEN_LOG_CAP {
        log.pop_front();
    }
    log.push_back(entry);
}

fn invalid_client(description: &str) -> Response {
    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

async fn grant(s: &Shared, form: &[(String, String)]) -> Result<Value, Response> {
    for name in [
        "grant_type",
        "scope",
        "client_assertion",
        "client_assertion_type",
    ] {
        if single(form, name).is_err() {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{name} appears more than once"),
            ));
        }
    }
    let param = |name: &'static str| single(form, name).ok().flatten();
    match param("grant_type") {
        Some("client_credentials") => {}
        Some(_) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            ));
        }
        None => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            ));
        }
    }
    if param("client_assertion_type") != Some(JWT_BEARER) {
        return Err(invalid_client(&format!(
            "client_assertion_type must be {JWT_BEARER}"
        )));
    }
    let Some(assertion) = param("client_assertion").filter(|a| !a.is_empty()) else {
        return Err(invalid_client("client_assertion is required"));
    };
    let client_id = unverified_claims(assertion)
        .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| invalid_client("client_assertion has no iss"))?;
    let tool = s
        .tool(&client_id)
        .ok_or_else(|| invalid_client("client_assertion iss is not a registered client_id"))?;
    let (_, claims) = verify_tool_jwt(
        s,
        &tool.tool.jwks_url,
        assertion,
        assertion_algs(s.personality),
    )
    .await
    .map_err(|e| invalid_client(&format!("client_assertion rejected: {e}")))?;
    check_assertion_claims(s, &client_id, &claims).map_err(|e| invalid_client(&e))?;

    let requested: Vec<&str> = param("scope")
        .unwrap_or("")
        .split_ascii_whitespace()
        .collect();
    if requested.is_empty() {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope is required",
        ));
    }
    // Without the result service the platform cannot grant its scope.
    let grantable = |scope: &str| {
        SUPPORTED_SCOPES.contains(&scope)
            && (s.results_service || scope != super::claim::SCOPE_RESULT_READONLY)
    };
    let unknown: Vec<&str> = requested
        .iter()
        .copied()
        .filter(|r| !grantable(r))
        .collect();
    if s.personality == Personality::Canvas && !unknown.is_empty() {
        // Canvas refuses the whole request when one scope is not on the developer key.
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("scopes not allowed: {}", unknown.join(" ")),
        ));
    }
    let mut granted: Vec<String> = Vec::new();
    for scope in requested {
        if grantable(scope) && !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_owned());
        }
    }
    if granted.is_empty() {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "none of the requested scopes can be granted",
        ));
    }

    let access_token = random_token();
    let now = now_secs();
    let scope = granted.join(" ");
    {
        let mut tokens = lock(&s.tokens);
        tokens.retain(|_, t| t.expires_at > now);
        tokens.insert(
            access_token.clone(),
            AccessToken {
                client_id,
                scopes: granted,
                expires_at: now + ACCESS_TOKEN_SECS,
            },
        );
    }
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECS,
        "scope": scope,
    }))
}

/// The claims of a verified client assertion (LTI Security Framework §4.1.1).
fn check_assertion_claims(s: &Shared, client_id: &str, claims: &Value) -> Result<(), String> {
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if claim("iss") != Some(client_id) || claim("sub") != Some(client_id) {
        return Err("client_assertion iss and sub must both be the client_id".into());
    }
    let audience = s.token_audience();
    if !aud_contains(claims.get("aud"), &audience) {
        return Err(format!("client_assertion aud must be {audience}"));
    }
    let now = now_secs();
    check_times(claims, now)?;
    let jti = claim("jti")
        .filter(|j| !j.is_empty())
        .ok_or("client_assertion has no jti")?;
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
    // A jti need only be remembered until its assertion expires.
    let mut seen = lock(&s.seen_jti);
    seen.retain(|_, exp| *exp + LEEWAY_SECS >= now);
    let key = (client_id.to_owned(), jti.to_owned());
    if seen.contains_key(&key) {
        return Err("client_assertion jti was already used (replay)".into());
    }
    seen.insert(key, exp);
    Ok(())
}

/// `aud` is `expected` or an array that holds it.
pub(super) fn aud_contains(aud: Option<&Value>, expected: &str) -> bool {
    match aud {
        Some(Value::String(a)) => a == expected,
        Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(expected)),
        _ => false,
    }
}

/// `exp` required and in the future, `iat` required and not in the future, `nbf` (if any)
/// passed, each with a little leeway.
pub(super) fn check_times(claims: &Value, now: u64) -> Result<(), String> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or("exp is missing or not a number")?;
    if exp + LEEWAY_SECS <= now {
        return Err("the JWT has expired".into());
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or("iat is missing or not a number")?;
    if iat > now + LEEWAY_SECS {
        return Err("iat is in the future".into());
    }
    if let Some(nbf) = claims.get("nbf") {
        match nbf.as_u64() {
            Some(nbf) if nbf <= now + LEEWAY_SECS => {}
            _ => return Err("nbf is in the future".into()),
        }
    }
    Ok(())
}

/// Check a tool-signed JWS against the tool's JWKS: the algorithm is one of `algs`, the
/// header names a `kid` found there (refetched once if unknown), the signature verifies.
/// The claims are returned unchecked: each caller knows its own rules.
pub(super) async fn verify_tool_jwt(
    s: &Shared,
    jwks_url: &str,
    jwt: &str,
    algs: &[Algorithm],
) -> Result<(jsonwebtoken::Header, Value), String> {
    let names = algs.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>();
    let header = jsonwebtoken::decode_header(jwt)
        .map_err(|_| format!("not a JWS signed with {}", names.join(" or ")))?;
    let alg = header.alg;
    if !algs.contains(&alg) {
        return Err(format!(
            "alg {alg:?} is not allowed: use {}",
            names.join(" or ")
        ));
    }
    let kid = header
        .kid
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("the JWS header has no kid")?;
    let key = decoding_key(s, jwks_url, &kid, alg).await?;
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|e| format!("signature check failed: {e}"))?
        .claims;
    Ok((header, claims))
}

/// The key `kid` from the tool's JWKS: from the cache, else fetched once more (the tool may
/// have rotated its keys since the cache was filled).
async fn decoding_key(
    s: &Shared,
    jwks_url: &str,
    kid: &str,
    alg: Algorithm,
) -> Result<DecodingKey, String> {
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
            jwk.ok_or_else(|| format!("no key with kid {kid} in the tool's JWKS"))?
        }
    };
    key_for(&jwk, alg)
}

async fn fetch_jwks(s: &Shared, url: &str) -> Result<Arc<Vec<Jwk>>, String> {
    let unusable = |what: String| format!("cannot use the tool's JWKS at {url}: {what}");
    let response = s
        .http
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unusable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unusable(format!("HTTP {}", response.status())));
    }
    let body: Value = response.json().await.map_err(|e| unusable(e.to_string()))?;
    let keys = body
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| unusable("no keys array".into()))?;
    // Keys of types this platform cannot use are skipped rather than failing the set.
    let usable = keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .collect();
    Ok(Arc::new(usable))
}

fn key_for(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, String> {
    let declared = jwk.common.key_algorithm;
    let fits = match (alg, &jwk.algorithm) {
        (Algorithm::RS256, AlgorithmParameters::RSA(_)) => {
            declared.is_none_or(|a| a == KeyAlgorithm::RS256)
        }
        (Algorithm::RS384, AlgorithmParameters::RSA(_)) => {
            declared.is_none_or(|a| a == KeyAlgorithm::RS384)
        }
        (Algorithm::ES384, AlgorithmParameters::EllipticCurve(ec)) => {
            ec.curve == EllipticCurve::P384 && declared.is_none_or(|a| a == KeyAlgorithm::ES384)
        }
        _ => false,
    };
    if !fits {
        return Err(format!("the tool's key does not fit alg {alg:?}"));
    }
    DecodingKey::from_jwk(jwk).map_err(|e| format!("the tool's key is unusable: {e}"))
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

/// The access token of a service request, if it is live and holds one of `any_of`.
/// Missing or unknown: 401 (RFC 6750 §3.1). Short of scope: 403, but Moodle answers 401.
pub(super) fn bearer(
    s: &Shared,
    headers: &HeaderMap,
    any_of: &[&str],
) -> Result<AccessToken, Refusal> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let Some(presented) = presented else {
        return Err(unauthorized("invalid_request", "a bearer access token is required").into());
    };
    let now = now_secs();
    let token = lock(&s.tokens)
        .get(&presented)
        .filter(|t| t.expires_at > now)
        .cloned();
    let Some(token) = token else {
        return Err(unauthorized("invalid_token", "the access token is unknown or expired").into());
    };
    if !token.scopes.iter().any(|t| any_of.contains(&t.as_str())) {
        let description = format!("this request needs the scope {}", any_of.join(" or "));
        if s.personality == Personality::Moodle {
            return Err(unauthorized("insufficient_scope", &description).into());
        }
        let mut response = oauth_error(StatusCode::FORBIDDEN, "insufficient_scope", &description);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="mock-lms", error="insufficient_scope""#),
        );
        return Err(response.into());
    }
    Ok(token)
}

fn unauthorized(error: &str, description: &str) -> Response {
    let mut response = oauth_error(StatusCode::UNAUTHORIZED, error, description);
    let challenge = format!(r#"Bearer realm="mock-lms", error="{error}""#);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
