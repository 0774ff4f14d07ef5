//! A mock OpenID Connect identity provider on loopback, for SSO tests and benches, following
//! OpenID Connect Core 1.0 and Discovery 1.0: discovery document, JWKS, an authorization
//! endpoint (the signed-in user is set by the test; consent is implicit), a token endpoint
//! (authorization code, PKCE S256 required, `client_secret_basic` or `client_secret_post`),
//! `private_key_jwt` (RFC 7523, the client's keys read from its JWKS URL), userinfo, RS256
//! id_tokens with the request's nonce.
//!
//! Personalities, as the vendors document them: Entra ID (tenant-specific issuer
//! `{base}/{tenant}/v2.0`, `tid` and `oid` claims), Okta (`groups` claim), Google Workspace
//! (`hd` claim with the Workspace domain, `email_verified`), generic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

use super::ehr::Signer;
use crate::util::lock;

/// The Entra tenant id the mock plays.
pub const ENTRA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpVendor {
    Generic,
    Entra,
    Okta,
    Google,
}

/// Who is signed in at the IdP.
#[derive(Debug, Clone)]
pub struct IdpUser {
    pub sub: String,
    pub email: String,
    pub name: String,
    pub groups: Vec<String>,
}

/// A defect the next id_token carries, for the relying party's rejection tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenFault {
    AlgNone,
    WrongAudience,
    Expired,
    UnknownKid,
    BadSignature,
    WrongNonce,
    WrongIssuer,
}

pub struct MockIdp {
    shared: Arc<Shared>,
    _server: crate::util::Served,
}

struct Shared {
    vendor: IdpVendor,
    base: String,
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    /// Published keys, the last one signing (a rotation adds one; the old stays published).
    signers: Mutex<Vec<Arc<Signer>>>,
    user: Mutex<IdpUser>,
    faults: Mutex<Vec<IdTokenFault>>,
    codes: Mutex<HashMap<String, Grant>>,
    tokens: Mutex<HashMap<String, IdpUser>>,
    /// Set: the client authenticates with `private_key_jwt`, keys at this JWKS URL.
    client_jwks: Mutex<Option<String>>,
    jtis: Mutex<std::collections::HashSet<String>>,
}

#[derive(Clone)]
struct Grant {
    user: IdpUser,
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random() -> String {
    crate::util::random_token_of(24)
}

impl MockIdp {
    /// Start an IdP with one registered client (its secret and redirect URI) and a user.
    pub async fn start(
        vendor: IdpVendor,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        user: IdpUser,
    ) -> anyhow::Result<MockIdp> {
        let (listener, addr) = crate::util::bind_loopback("mock IdP").await?;
        let base = format!("http://{addr}");
        let issuer = match vendor {
            IdpVendor::Entra => format!("{base}/{ENTRA_TENANT}/v2.0"),
            _ => base.clone(),
        };
        let signer = tokio::task::spawn_blocking(Signer::generate)
            .await
            .context("signing key generation panicked")??;
        let shared = Arc::new(Shared {
            vendor,
            base,
            issuer,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            signers: Mutex::new(vec![Arc::new(signer)]),
            user: Mutex::new(user),
            faults: Mutex::new(Vec::new()),
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            client_jwks: Mutex::new(None),
            jtis: Mutex::new(std::collections::HashSet::new()),
        });
        let prefix = match vendor {
            IdpVendor::Entra => format!("/{ENTRA_TENANT}/v2.0"),
            _ => String::new(),
        };
        let app = Router::new()
            .route(
                &format!("{prefix}/.well-known/openid-configuration"),
                get(discovery),
            )
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(shared.clone());
        let _server = crate::util::serve(listener, app, "mock IdP");
        Ok(MockIdp { shared, _server })
    }

    /// The issuer to configure (`iss` of its id_tokens).
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn set_user(&self, user: IdpUser) {
        *lock(&self.shared.user) = user;
    }

    /// Start signing with a new key (new `kid`), publishing it beside the old one, as an
    /// IdP rolling its keys does.
    pub async fn rotate_key(&self) -> anyhow::Result<()> {
        let signer = tokio::task::spawn_blocking(Signer::generate)
            .await
            .context("signing key generation panicked")??;
        lock(&self.shared.signers).push(Arc::new(signer));
        Ok(())
    }

    /// Authenticate the client with `private_key_jwt` from now on (secrets refused), its
    /// public keys read from `jwks_url` (the gateway's `/.well-known/jwks.json`).
    pub fn require_private_key_jwt(&self, jwks_url: &str) {
        *lock(&self.shared.client_jwks) = Some(jwks_url.to_owned());
    }

    /// The next id_token carries this defect.
    pub fn inject(&self, fault: IdTokenFault) {
        lock(&self.shared.faults).push(fault);
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    let b = &s.base;
    axum::Json(json!({
        "issuer": s.issuer,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "userinfo_endpoint": format!("{b}/userinfo"),
        "jwks_uri": format!("{b}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "name"],
    }))
    .into_response()
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    let keys: Vec<Value> = lock(&s.signers)
        .iter()
        .map(|k| k.public_jwk.clone())
        .collect();
    axum::Json(json!({ "keys": keys })).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn authorize(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str);
    // Errors before the redirect URI is trusted are shown, not redirected (RFC 6749 4.1.2.1).
    if get("client_id") != Some(s.client_id.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unknown client_id",
        );
    }
    let Some(redirect) = get("redirect_uri").filter(|r| *r == s.redirect_uri) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri is not registered for this client",
        );
    };
    let problem = if get("response_type") != Some("code") {
        Some("response_type must be code")
    } else if !get("scope").is_some_and(|sc| sc.split(' ').any(|x| x == "openid")) {
        Some("scope must include openid")
    } else if get("code_challenge_method") != Some("S256") || get("code_challenge").is_none() {
        Some("PKCE with S256 is required")
    } else {
        None
    };
    let mut to = match url::Url::parse(redirect) {
        Ok(u) => u,
        Err(_) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "bad redirect"),
    };
    if let Some(p) = problem {
        to.query_pairs_mut()
            .append_pair("error", "invalid_request")
            .append_pair("error_description", p);
    } else {
        let code = random();
        lock(&s.codes).insert(
            code.clone(),
            Grant {
                user: lock(&s.user).clone(),
                nonce: get("nonce").map(str::to_owned),
                challenge: get("code_challenge").unwrap_or_default().to_owned(),
                redirect_uri: redirect.to_owned(),
            },
        );
        to.query_pairs_mut().append_pair("code", &code);
    }
    if let Some(state) = get("state") {
        to.query_pairs_mut().append_pair("state", state);
    }
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| form.get(k).map(String::as_str);
    // Client authentication: HTTP Basic (form-encoded parts, RFC 6749 2.3.1) or the body.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let dec = |x: &str| {
                url::form_urlencoded::parse(format!("v={x}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((dec(id)?, dec(secret)?))
        });
    let jwks_url = lock(&s.client_jwks).clone();
    if let Some(jwks_url) = jwks_url {
        if let Err(why) = check_assertion(&s, &form, &jwks_url).await {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &why);
        }
    } else {
        let (id, secret) = match basic {
            Some(pair) => pair,
            None => (
                get("client_id").unwrap_or_default().to_owned(),
                get("client_secret").unwrap_or_default().to_owned(),
            ),
        };
        if id != s.client_id || secret != s.client_secret {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
    }
    if get("grant_type") != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let Some(grant) = get("code").and_then(|c| lock(&s.codes).remove(c)) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    if get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs",
        );
    }
    let verifier = get("code_verifier").unwrap_or_default();
    if crate::util::pkce_challenge(verifier) != grant.challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    let access = random();
    lock(&s.tokens).insert(access.clone(), grant.user.clone());
    let id_token = match id_token(&s, &grant) {
        Ok(t) => t,
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            );
        }
    };
    axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "openid email profile",
        "id_token": id_token,
    }))
    .into_response()
}

/// RFC 7523 client authentication: the assertion's signature against the client's JWKS,
/// `iss` = `sub` = client_id, `aud` = this token endpoint, a short life, a fresh `jti`.
async fn check_assertion(
    s: &Shared,
    form: &HashMap<String, String>,
    jwks_url: &str,
) -> Result<(), String> {
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err("client_assertion_type must be jwt-bearer".into());
    }
    if form.contains_key("client_secret") {
        return Err("this client authenticates with private_key_jwt, not a secret".into());
    }
    let jwt = form.get("client_assertion").ok_or("no client_assertion")?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("bad assertion: {e}"))?;
    let kid = header.kid.ok_or("the assertion has no kid")?;
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(jwks_url)
        .await
        .map_err(|e| format!("JWKS: {e}"))?
        .json()
        .await
        .map_err(|e| format!("JWKS: {e}"))?;
    let jwk = jwks.find(&kid).ok_or("no key with the assertion's kid")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[format!("{}/token", s.base)]);
    v.set_issuer(&[s.client_id.as_str()]);
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let data =
        jsonwebtoken::decode::<Value>(jwt, &key, &v).map_err(|e| format!("assertion: {e}"))?;
    let c = data.claims;
    if c.get("sub").and_then(Value::as_str) != Some(s.client_id.as_str()) {
        return Err("sub must be the client_id".into());
    }
    let exp = c.get("exp").and_then(Value::as_i64).unwrap_or(0);
    if exp > now_secs() + 300 {
        return Err("the assertion lives longer than 5 minutes".into());
    }
    let jti = c.get("jti").and_then(Value::as_str).ok_or("no jti")?;
    if !lock(&s.jtis).insert(jti.to_owned()) {
        return Err("jti reused".into());
    }
    Ok(())
}

fn user_claims(s: &Shared, user: &IdpUser) -> serde_json::Map<String, Value> {
    let mut c = serde_json::Map::new();
    c.insert("sub".into(), json!(user.sub));
    c.insert("email".into(), json!(user.email));
    c.insert("name".into(), json!(user.name));
    match s.vendor {
        IdpVendor::Entra => {
            c.insert("tid".into(), json!(ENTRA_TENANT));
            c.insert("oid".into(), json!(format!("oid-{}", user.sub)));
            c.insert("preferred_username".into(), json!(user.email));
        }
        IdpVendor::Okta => {
            c.insert("groups".into(), json!(user.groups));
        }
        IdpVendor::Google => {
            c.insert("email_verified".into(), json!(true));
            if let Some((_, domain)) = user.email.split_once('@') {
                c.insert("hd".into(), json!(domain));
            }
        }
        IdpVendor::Generic => {
            c.insert("groups".into(), json!(user.groups));
        }
    }
    c
}

fn id_token(s: &Shared, grant: &Grant) -> anyhow::Result<String> {
    let fault = {
        let mut f = lock(&s.faults);
        if f.is_empty() {
            None
        } else {
            Some(f.remove(0))
        }
    };
    let now = now_secs();
    let mut claims = user_claims(s, &grant.user);
    claims.insert("iss".into(), json!(s.issuer));
    claims.insert("aud".into(), json!(s.client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + 3600));
    if let Some(n) = &grant.nonce {
        claims.insert("nonce".into(), json!(n));
    }
    match fault {
        Some(IdTokenFault::WrongAudience) => {
            claims.insert("aud".into(), json!("another-client"));
        }
        Some(IdTokenFault::Expired) => {
            claims.insert("iat".into(), json!(now - 7200));
            claims.insert("exp".into(), json!(now - 3600));
        }
        Some(IdTokenFault::WrongNonce) => {
            claims.insert("nonce".into(), json!("not-the-nonce"));
        }
        Some(IdTokenFault::WrongIssuer) => {
            claims.insert("iss".into(), json!("https://evil.example.com"));
        }
        _ => {}
    }
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    if fault == Some(IdTokenFault::AlgNone) {
        return Ok(format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&Value::Object(claims))
        ));
    }
    let signer = lock(&s.signers)
        .last()
        .cloned()
        .context("the mock IdP has no signing key")?;
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some(match fault {
        Some(IdTokenFault::UnknownKid) => "a-kid-the-jwks-does-not-have".into(),
        _ => signer.kid.clone(),
    });
    let key = match fault {
        Some(IdTokenFault::BadSignature) => Signer::impostor_key()?,
        _ => signer.encoding.clone(),
    };
    Ok(jsonwebtoken::encode(&h, &Value::Object(claims), &key)?)
}

async fn userinfo(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let user = token.and_then(|t| lock(&s.tokens).get(t).cloned());
    match user {
        Some(u) => axum::Json(Value::Object(user_claims(&s, &u))).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
        )
            .into_response(),
    }
}
