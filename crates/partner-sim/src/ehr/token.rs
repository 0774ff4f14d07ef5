//! The token endpoint (RFC 6749 §4.1.3, §6; SMART App Launch 2.2; SMART Backend Services)
//! with its id_tokens, plus token revocation (RFC 7009) and introspection (RFC 7662).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::authorize::ClinicalScope;
use super::client_auth::{self, Authenticated};
use super::{
    AccessToken, AuthState, Fault, Grant, ID_TOKEN_TTL_SECS, IdTokenFault, OAuthError,
    REFRESH_TTL_SECS, RecordedTokenRequest, RefreshFailure, RefreshGrant, Shared, TOKEN_LOG_CAP,
    Vendor, lock, now_secs, parse_form, random_token, single,
};

/// Token request parameters that must not repeat (RFC 6749 §3.2).
const SINGLE_VALUED: [&str; 6] = [
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "scope",
];

pub(super) async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    record(&s, &headers, &form);
    let is_refresh = single(&form, "grant_type").ok().flatten() == Some("refresh_token");
    if is_refresh && let Some(failure) = s.refresh_failure() {
        return refresh_outage(failure).await;
    }
    if let Some((status, error)) = s.take_fault(|f| match f {
        Fault::TokenError { status, error } => Some((*status, error.clone())),
        _ => None,
    }) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return OAuthError {
            status,
            error,
            description: "injected fault".into(),
            www_authenticate: (status == StatusCode::UNAUTHORIZED)
                .then_some(r#"Basic realm="mock-ehr", charset="UTF-8""#),
        }
        .into_response();
    }
    match grant(&s, &headers, &form).await {
        Ok(body) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A refresh request during an outage ([`super::MockEhr::fail_refreshes`]).
async fn refresh_outage(failure: RefreshFailure) -> Response {
    match failure {
        RefreshFailure::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::RETRY_AFTER, "5"),
                (header::CONTENT_TYPE, "text/plain"),
            ],
            "token service unavailable",
        )
            .into_response(),
        RefreshFailure::Hang(wait) => {
            tokio::time::sleep(wait).await;
            (
                StatusCode::GATEWAY_TIMEOUT,
                [(header::CONTENT_TYPE, "text/plain")],
                "upstream token service timed out",
            )
                .into_response()
        }
        RefreshFailure::InvalidGrant => {
            OAuthError::invalid_grant("the refresh token was revoked").into_response()
        }
    }
}

fn record(s: &Shared, headers: &HeaderMap, form: &[(String, String)]) {
    let assertion = form
        .iter()
        .find(|(k, _)| k == "client_assertion")
        .map(|(_, v)| v.as_str());
    let entry = RecordedTokenRequest {
        grant_type: form
            .iter()
            .find(|(k, _)| k == "grant_type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        client_auth: client_auth::method_name(headers, form).to_owned(),
        assertion_header: assertion.and_then(client_auth::unverified_header),
        assertion_claims: assertion.and_then(client_auth::unverified_claims),
        form: form.iter().cloned().collect(),
    };
    let mut log = lock(&s.token_log);
    if log.len() >= TOKEN_LOG_CAP {
        log.pop_front();
    }
    log.push_back(entry);
}

fn has_form_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        })
}

async fn grant(
    s: &Shared,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Value, OAuthError> {
    if !has_form_content_type(headers) {
        return Err(OAuthError::invalid_request(
            "the token request must be application/x-www-form-urlencoded",
        ));
    }
    if let Some(name) = SINGLE_VALUED
        .into_iter()
        .find(|&name| single(form, name).is_err())
    {
        return Err(OAuthError::invalid_request(format!(
            "{name} appears more than once"
        )));
    }
    let param = |name: &'static str| single(form, name).ok().flatten();
    let grant_type =
        param("grant_type").ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !matches!(
        grant_type,
        "authorization_code" | "refresh_token" | "client_credentials"
    ) {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            format!("grant_type {grant_type} is not supported"),
        ));
    }
    let client = client_auth::authenticate(s, headers, form).await?;
    match grant_type {
        "authorization_code" => authorization_code(s, &client, param).await,
        "refresh_token" => refresh(s, &client, param),
        _ => client_credentials(s, &client, param),
    }
}

async fn authorization_code<'f>(
    s: &Shared,
    client: &Authenticated<'_>,
    param: impl Fn(&'static str) -> Option<&'f str>,
) -> Result<Value, OAuthError> {
    let code = param("code").ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let redirect_uri = param("redirect_uri")
        .ok_or_else(|| OAuthError::invalid_request("redirect_uri is required"))?;
    let verifier = param("code_verifier")
        .ok_or_else(|| OAuthError::invalid_grant("code_verifier is required (PKCE)"))?;
    let now = now_secs();
    let (grant, state, nonce) = {
        let mut auth = lock(&s.auth);
        let Some(entry) = auth.codes.get_mut(code) else {
            return Err(OAuthError::invalid_grant(
                "unknown or expired authorization code",
            ));
        };
        if entry.used {
            // RFC 6749 §4.1.2: a replayed code revokes what it was exchanged for.
            let family = entry.grant.family;
            revoke_family(s, &mut auth, family);
            return Err(OAuthError::invalid_grant(
                "authorization code already used; the tokens issued for it are revoked",
            ));
        }
        if entry.expires_at <= now {
            return Err(OAuthError::invalid_grant("authorization code expired"));
        }
        if entry.grant.client_id != client.client.client_id {
            return Err(OAuthError::invalid_grant(
                "authorization code was issued to another client",
            ));
        }
        if entry.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        if !pkce_matches(verifier, &entry.code_challenge) {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        entry.used = true;
        (
            entry.grant.clone(),
            entry.state.clone(),
            entry.nonce.clone(),
        )
    };

    let with_refresh = grant.has_scope("offline_access") || grant.has_scope("online_access");
    let (access_token, refresh_token) = issue(s, &grant, with_refresh);
    let mut body = Map::new();
    base_response(s, &mut body, access_token, &grant.scopes.join(" "));
    if let Some(refresh) = refresh_token {
        body.insert("refresh_token".into(), refresh.into());
    }
    if grant.has_scope("openid") {
        body.insert("id_token".into(), id_token(s, &grant, nonce).await?.into());
    }
    context(s, &mut body, &grant);
    if s.vendor == Vendor::Epic {
        body.insert("state".into(), state.into());
    }
    Ok(Value::Object(body))
}

fn refresh<'f>(
    s: &Shared,
    client: &Authenticated<'_>,
    param: impl Fn(&'static str) -> Option<&'f str>,
) -> Result<Value, OAuthError> {
    let presented = param("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let now = now_secs();
    // Oracle keeps the refresh token and returns none; Epic and generic servers rotate it.
    let rotate = s.vendor != Vendor::Oracle;
    let original = {
        let mut auth = lock(&s.auth);
        let Some(entry) = auth.refresh.get(presented) else {
            return Err(OAuthError::invalid_grant(
                "unknown, revoked or rotated refresh token",
            ));
        };
        if entry.expires_at <= now {
            auth.refresh.remove(presented);
            return Err(OAuthError::invalid_grant("refresh token expired"));
        }
        if entry.grant.client_id != client.client.client_id {
            return Err(OAuthError::invalid_grant(
                "refresh token was issued to another client",
            ));
        }
        let grant = entry.grant.clone();
        if rotate {
            auth.refresh.remove(presented);
        }
        grant
    };
    // A narrower scope applies to this access token only (RFC 6749 §6).
    let mut narrowed = original.clone();
    if let Some(scope) = param("scope") {
        let mut scopes: Vec<String> = Vec::new();
        for wanted in scope.split(' ').filter(|w| !w.is_empty()) {
            if !original.has_scope(wanted) {
                return Err(OAuthError::new(
                    "invalid_scope",
                    format!("{wanted} was not granted originally"),
                ));
            }
            if !scopes.iter().any(|s| s == wanted) {
                scopes.push(wanted.to_owned());
            }
        }
        narrowed.scopes = scopes;
    }
    let (access_token, _) = issue(s, &narrowed, false);
    let mut body = Map::new();
    base_response(s, &mut body, access_token, &narrowed.scopes.join(" "));
    if rotate {
        let new_refresh = random_token();
        lock(&s.auth).refresh.insert(
            new_refresh.clone(),
            RefreshGrant {
                grant: original,
                expires_at: now + REFRESH_TTL_SECS,
            },
        );
        body.insert("refresh_token".into(), new_refresh.into());
    }
    context(s, &mut body, &narrowed);
    Ok(Value::Object(body))
}

fn client_credentials<'f>(
    s: &Shared,
    client: &Authenticated<'_>,
    param: impl Fn(&'static str) -> Option<&'f str>,
) -> Result<Value, OAuthError> {
    if client.method != "private_key_jwt" {
        return Err(OAuthError::new(
            "unauthorized_client",
            "client_credentials needs a client assertion (SMART Backend Services)",
        ));
    }
    let requested = param("scope").unwrap_or("");
    let mut scopes: Vec<String> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        match ClinicalScope::parse(scope) {
            Some(c) if c.context == "system" => {
                if !scopes.iter().any(|s| s == scope) {
                    scopes.push(scope.to_owned());
                }
            }
            _ => {
                return Err(OAuthError::new(
                    "invalid_scope",
                    format!(
                        "{scope} is not a system scope; Backend Services grant only system/ scopes"
                    ),
                ));
            }
        }
    }
    if scopes.is_empty() {
        return Err(OAuthError::new("invalid_scope", "scope is required"));
    }
    let grant = Grant {
        client_id: client.client.client_id.clone(),
        scopes,
        patient: None,
        encounter: None,
        user: None,
        fhir_context: Vec::new(),
        intent: None,
        need_patient_banner: false,
        smart_style_url: None,
        family: 0,
    };
    let (access_token, _) = issue(s, &grant, false);
    let mut body = Map::new();
    base_response(s, &mut body, access_token, &grant.scopes.join(" "));
    Ok(Value::Object(body))
}

/// RFC 7636 §4.6 with S256; a verifier outside the RFC's alphabet or length never matches.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

/// Store a new access token (and a refresh token if asked) for `grant`.
fn issue(s: &Shared, grant: &Grant, with_refresh: bool) -> (String, Option<String>) {
    let now = now_secs();
    let access = random_token();
    let has_context = |context: &str| {
        grant
            .scopes
            .iter()
            .filter_map(|s| ClinicalScope::parse(s))
            .any(|c| c.context == context)
    };
    let token = Arc::new(AccessToken {
        client_id: grant.client_id.clone(),
        scope: grant.scopes.join(" "),
        patient: grant.patient.clone(),
        user: grant.user.clone(),
        patient_scoped: has_context("patient") && !has_context("user") && !has_context("system"),
        expires_at: now + s.access_token_secs,
        family: grant.family,
        revoked: AtomicBool::new(false),
    });
    {
        let mut tokens = lock(&s.tokens);
        // Sweep dead tokens now and then so a long benchmark does not grow the map forever.
        if tokens.len() % 4096 == 4095 {
            tokens.retain(|_, t| t.is_active(now));
        }
        tokens.insert(access.clone(), token);
    }
    let refresh = with_refresh.then(|| {
        let refresh = random_token();
        lock(&s.auth).refresh.insert(
            refresh.clone(),
            RefreshGrant {
                grant: grant.clone(),
                expires_at: now + REFRESH_TTL_SECS,
            },
        );
        refresh
    });
    (access, refresh)
}

/// Revoke every token descended from one authorization code.
fn revoke_family(s: &Shared, auth: &mut AuthState, family: u64) {
    auth.refresh.retain(|_, r| r.grant.family != family);
    for token in lock(&s.tokens).values() {
        if token.family == family {
            token.revoked.store(true, Ordering::Relaxed);
        }
    }
}

fn base_response(s: &Shared, body: &mut Map<String, Value>, access_token: String, scope: &str) {
    body.insert("access_token".into(), access_token.into());
    body.insert("token_type".into(), "Bearer".into());
    body.insert("expires_in".into(), s.access_token_secs.into());
    body.insert("scope".into(), scope.into());
}

/// The launch context members of a token response, in each vendor's dialect.
fn context(s: &Shared, body: &mut Map<String, Value>, grant: &Grant) {
    if let Some(patient) = &grant.patient {
        body.insert("patient".into(), patient.clone().into());
        if s.vendor == Vendor::Epic {
            body.insert("__epic.dstu2.patient".into(), epic_dstu2_id(patient).into());
        }
    }
    if let Some(encounter) = &grant.encounter {
        body.insert("encounter".into(), encounter.clone().into());
    }
    if !grant.fhir_context.is_empty() {
        body.insert("fhirContext".into(), grant.fhir_context.clone().into());
    }
    if let Some(intent) = &grant.intent {
        body.insert("intent".into(), intent.clone().into());
    }
    if grant.user.is_some() {
        // Epic sends the banner flag as a string ("true"/"false"), not a JSON boolean.
        let banner = match s.vendor {
            Vendor::Epic => Value::from(grant.need_patient_banner.to_string()),
            Vendor::Oracle | Vendor::Generic => Value::from(grant.need_patient_banner),
        };
        body.insert("need_patient_banner".into(), banner);
    }
    if let Some(style) = &grant.smart_style_url {
        body.insert("smart_style_url".into(), style.clone().into());
    }
    if s.vendor == Vendor::Oracle {
        if let Some(tenant) = &s.tenant {
            body.insert("tenant".into(), tenant.clone().into());
        }
        if let Some(user) = &grant.user {
            body.insert("user".into(), user.clone().into());
            body.insert("username".into(), s.data.username(user).into());
        }
    }
}

/// A stable stand-in for the DSTU2 patient id Epic returns beside the R4 one.
fn epic_dstu2_id(patient: &str) -> String {
    let digest = URL_SAFE_NO_PAD.encode(Sha256::digest(patient.as_bytes()));
    format!("T{}B", &digest[..40])
}

/// An OpenID Connect id_token for the grant's user, with the queued defect if any.
async fn id_token(s: &Shared, grant: &Grant, nonce: Option<String>) -> Result<String, OAuthError> {
    let server_error = |e: String| OAuthError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        error: "server_error".into(),
        description: e,
        www_authenticate: None,
    };
    let fault = s.take_fault(|f| match f {
        Fault::IdToken(fault) => Some(*fault),
        _ => None,
    });
    let now = now_secs();
    let user = grant
        .user
        .clone()
        .unwrap_or_else(|| s.default_practitioner.clone());
    let (iat, exp) = match fault {
        Some(IdTokenFault::Expired) => (now.saturating_sub(900), now.saturating_sub(600)),
        _ => (now, now + ID_TOKEN_TTL_SECS),
    };
    let mut claims = json!({
        "iss": if fault == Some(IdTokenFault::WrongIssuer) { s.url("/not-the-issuer") } else { s.iss.clone() },
        "sub": user,
        "aud": if fault == Some(IdTokenFault::WrongAudience) {
            format!("{}-other-app", grant.client_id)
        } else {
            grant.client_id.clone()
        },
        "iat": iat,
        "exp": exp,
        "auth_time": iat,
    });
    if let Value::Object(map) = &mut claims {
        if let Some(nonce) = nonce {
            map.insert("nonce".into(), nonce.into());
        }
        if grant.has_scope("fhirUser") {
            // Epic sends an absolute URL, Oracle a relative reference; SMART allows both.
            let fhir_user = match s.vendor {
                Vendor::Oracle => format!("Practitioner/{user}"),
                Vendor::Epic | Vendor::Generic => format!("{}/Practitioner/{user}", s.iss),
            };
            map.insert("fhirUser".into(), fhir_user.into());
        }
        // Epic's id_token carries no name; Oracle's and a generic server's do.
        if s.vendor != Vendor::Epic
            && let Some((given, family)) = s.data.practitioner_name(&user)
        {
            map.insert("name".into(), format!("{given} {family}").into());
            map.insert("given_name".into(), given.into());
            map.insert("family_name".into(), family.into());
        }
    }

    let signer = &s.signer;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(signer.kid.clone());
    header.typ = Some("JWT".into());
    match fault {
        Some(IdTokenFault::AlgNone) => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
            Ok(format!("{header}.{payload}."))
        }
        Some(IdTokenFault::Hs256WithPublicKey) => {
            header.alg = jsonwebtoken::Algorithm::HS256;
            let key = jsonwebtoken::EncodingKey::from_secret(signer.public_pem.as_bytes());
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| server_error(e.to_string()))
        }
        Some(IdTokenFault::BadSignature) => {
            let key = tokio::task::spawn_blocking(super::Signer::impostor_key)
                .await
                .map_err(|e| server_error(e.to_string()))?
                .map_err(|e| server_error(e.to_string()))?;
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| server_error(e.to_string()))
        }
        _ => jsonwebtoken::encode(&header, &claims, &signer.encoding)
            .map_err(|e| server_error(e.to_string())),
    }
}

/// RFC 7009 token revocation.
pub(super) async fn revoke(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let result = async {
        if !has_form_content_type(&headers) {
            return Err(OAuthError::invalid_request(
                "the request must be application/x-www-form-urlencoded",
            ));
        }
        let client = client_auth::authenticate(&s, &headers, &form).await?;
        let token = single(&form, "token")
            .ok()
            .flatten()
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let client_id = client.client.client_id.as_str();
        {
            let mut auth = lock(&s.auth);
            if auth
                .refresh
                .get(token)
                .is_some_and(|r| r.grant.client_id == client_id)
            {
                auth.refresh.remove(token);
            }
        }
        if let Some(t) = lock(&s.tokens).get(token)
            && t.client_id == client_id
        {
            t.revoked.store(true, Ordering::Relaxed);
        }
        // Unknown tokens are not an error (RFC 7009 §2.2).
        Ok(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// RFC 7662 token introspection with the SMART members. The caller authenticates as a
/// client, or as a resource server presenting an active bearer token.
pub(super) async fn introspect(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let result = async {
        if !has_form_content_type(&headers) {
            return Err(OAuthError::invalid_request(
                "the request must be application/x-www-form-urlencoded",
            ));
        }
        let now = now_secs();
        let bearer = super::fhir::bearer(&headers).map(str::to_owned);
        let bearer_ok =
            bearer.is_some_and(|b| lock(&s.tokens).get(&b).is_some_and(|t| t.is_active(now)));
        if !bearer_ok {
            client_auth::authenticate(&s, &headers, &form).await?;
        }
        let token = single(&form, "token")
            .ok()
            .flatten()
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let access = lock(&s.tokens).get(token).cloned();
        if let Some(t) = access.filter(|t| t.is_active(now)) {
            let mut out = json!({
                "active": true,
                "scope": t.scope,
                "client_id": t.client_id,
                "exp": t.expires_at,
                "token_type": "Bearer",
                "iss": s.iss,
            });
            if let Value::Object(map) = &mut out {
                if let Some(patient) = &t.patient {
                    map.insert("patient".into(), patient.clone().into());
                }
                if let Some(user) = &t.user {
                    map.insert("sub".into(), user.clone().into());
                    if t.scope.split(' ').any(|s| s == "fhirUser") {
                        map.insert(
                            "fhirUser".into(),
                            format!("{}/Practitioner/{user}", s.iss).into(),
                        );
                    }
                }
            }
            return Ok(out);
        }
        let refresh = lock(&s.auth)
            .refresh
            .get(token)
            .filter(|r| r.expires_at > now)
            .map(|r| {
                (
                    r.grant.scopes.join(" "),
                    r.grant.client_id.clone(),
                    r.expires_at,
                )
            });
        Ok(match refresh {
            Some((scope, client_id, exp)) => {
                json!({ "active": true, "scope": scope, "client_id": client_id, "exp": exp })
            }
            None => json!({ "active": false }),
        })
    }
    .await;
    match result {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }

    #[test]
    fn epic_dstu2_ids_are_stable_and_shaped_like_epics() {
        let id = epic_dstu2_id("erXuFYUfucBZaryVksYEcMg3");
        assert_eq!(id, epic_dstu2_id("erXuFYUfucBZaryVksYEcMg3"));
        assert!(id.starts_with('T') && id.ends_with('B') && id.len() == 42);
    }
}
