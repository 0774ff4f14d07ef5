//! The OIDC relying party (OpenID Connect Core 1.0, authorization code with PKCE S256) on
//! the `openidconnect` crate; every request to the IdP goes through the gateway's outbound
//! client, so the address policy applies. Discovery and JWKS are cached per issuer and
//! fetched again for an id_token whose `kid` is unknown (at most every 10 s per issuer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{Map, Value};

use super::connection::{ClientAuth, SsoConnection};
use crate::outbound::Outbound;
use crate::smart::discovery::error_chain;

#[derive(Clone)]
pub struct Discovery {
    cache: Arc<Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>>,
    /// How long a discovery document and its JWKS are reused.
    ttl: Duration,
    /// Fetch again for an unknown `kid` at most this often per issuer.
    refetch_every: Duration,
}

/// An error talking to the IdP, said so a person can act on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdpError(pub String);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpFailure(String);

/// The `openidconnect` HTTP client: one request through the outbound client.
async fn send(
    outbound: Outbound,
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpFailure> {
    let url = outbound
        .url(&req.uri().to_string())
        .map_err(|e| HttpFailure(e.to_string()))?;
    let (parts, body) = req.into_parts();
    let resp = outbound
        .client()
        .request(parts.method, url)
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpFailure(error_chain(&e.without_url())))?;
    let mut out = openidconnect::http::Response::builder().status(resp.status());
    if let Some(h) = out.headers_mut() {
        h.extend(resp.headers().clone());
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| HttpFailure(error_chain(&e.without_url())))?;
    out.body(bytes.to_vec())
        .map_err(|e| HttpFailure(e.to_string()))
}

impl Discovery {
    pub fn new(ttl: Duration, refetch_every: Duration) -> Discovery {
        Discovery {
            cache: Arc::default(),
            ttl,
            refetch_every,
        }
    }

    /// Fetch the issuer's metadata and JWKS now, whatever the cache holds (and keep them).
    pub async fn fetch(
        &self,
        outbound: &Outbound,
        issuer: &str,
    ) -> Result<CoreProviderMetadata, IdpError> {
        let url = IssuerUrl::new(issuer.to_owned())
            .map_err(|e| IdpError(format!("the issuer {issuer} is not a URL: {e}")))?;
        let http = |r| send(outbound.clone(), r);
        let meta = CoreProviderMetadata::discover_async(url, &http)
            .await
            .map_err(|e| IdpError(format!("discovery at {issuer} failed: {}", error_chain(&e))))?;
        self.lock()
            .insert(issuer.to_owned(), (Instant::now(), meta.clone()));
        Ok(meta)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, CoreProviderMetadata)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The issuer's metadata (with its JWKS), from the cache while fresh.
    pub async fn metadata(
        &self,
        outbound: &Outbound,
        issuer: &str,
    ) -> Result<CoreProviderMetadata, IdpError> {
        if let Some((at, meta)) = self.lock().get(issuer)
            && at.elapsed() < self.ttl
        {
            return Ok(meta.clone());
        }
        self.fetch(outbound, issuer).await
    }

    /// Fetch again for an unknown key, unless this issuer was fetched within 10 s.
    async fn refetch(&self, outbound: &Outbound, issuer: &str) -> Option<CoreProviderMetadata> {
        let recent = self
            .lock()
            .get(issuer)
            .is_some_and(|(at, _)| at.elapsed() < self.refetch_every);
        if recent {
            return None;
        }
        self.fetch(outbound, issuer).await.ok()
    }
}

type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn client(
    conn: &SsoConnection,
    meta: CoreProviderMetadata,
    redirect: &str,
) -> Result<Client, IdpError> {
    let secret = conn
        .client_secret
        .as_ref()
        .map(|s| ClientSecret::new(s.expose().to_owned()));
    let redirect = RedirectUrl::new(redirect.to_owned())
        .map_err(|e| IdpError(format!("the redirect URI is not a URL: {e}")))?;
    Ok(
        CoreClient::from_provider_metadata(meta, ClientId::new(conn.client_id.clone()), secret)
            .set_redirect_uri(redirect)
            .set_auth_type(match conn.client_auth {
                ClientAuth::ClientSecretBasic => AuthType::BasicAuth,
                // private_key_jwt: client_id in the body beside the assertion.
                ClientAuth::ClientSecretPost | ClientAuth::PrivateKeyJwt => AuthType::RequestBody,
            }),
    )
}

/// A started sign-in: where to send the browser and what to keep for the callback.
pub struct Started {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
}

pub async fn start(
    discovery: &Discovery,
    outbound: &Outbound,
    conn: &SsoConnection,
    redirect: &str,
) -> Result<Started, IdpError> {
    let meta = discovery.metadata(outbound, &conn.issuer).await?;
    let client = client(conn, meta, redirect)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for s in conn.scope_list().into_iter().filter(|s| s != "openid") {
        req = req.add_scope(Scope::new(s));
    }
    let (url, state, nonce) = req.url();
    Ok(Started {
        url: url.to_string(),
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        code_verifier: verifier.secret().clone(),
    })
}

/// Why a callback was refused after its state checked out.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("the identity provider did not answer as expected: {0}")]
    Idp(String),
    #[error("the identity provider's ID token was refused: {0}")]
    IdToken(String),
}

/// Exchange the code, verify the id_token (signature with the pinned algorithm, `iss`,
/// `aud`, `azp`, `exp`, `nonce`), read userinfo when configured; returns the claims.
/// `assertion_key`: the gateway key for a `private_key_jwt` connection.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    discovery: &Discovery,
    outbound: &Outbound,
    conn: &SsoConnection,
    redirect: &str,
    code: &str,
    nonce: &str,
    verifier: &str,
    assertion_key: Option<&crate::keys::SigningKey>,
) -> Result<Map<String, Value>, CallbackError> {
    let meta = discovery
        .metadata(outbound, &conn.issuer)
        .await
        .map_err(|e| CallbackError::Idp(e.0))?;
    let userinfo_url = meta.userinfo_endpoint().map(|u| u.url().clone());
    let token_url = meta.token_endpoint().map(|u| u.url().to_string());
    let c = client(conn, meta, redirect).map_err(|e| CallbackError::Idp(e.0))?;
    let http = |r| send(outbound.clone(), r);
    let mut exchange = c
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| CallbackError::Idp(format!("no token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
    if let Some(key) = assertion_key {
        // RFC 7523: iss = sub = client_id, aud = the token endpoint, short-lived, unique jti.
        let aud = token_url.unwrap_or_default();
        let claims = crate::smart::flow::client_assertion_claims(
            &conn.client_id,
            &aud,
            chrono::Utc::now().timestamp(),
        );
        let jwt = crate::keys::sign_jwt(key, &claims)
            .map_err(|e| CallbackError::Idp(format!("signing the client assertion: {e}")))?;
        exchange = exchange
            .add_extra_param(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .add_extra_param("client_assertion", jwt);
    }
    let token = exchange.request_async(&http).await.map_err(|e| {
        CallbackError::Idp(format!("the code exchange failed: {}", error_chain(&e)))
    })?;
    let id_token = token
        .id_token()
        .ok_or_else(|| CallbackError::IdToken("the token response has no id_token".into()))?;
    let alg: CoreJwsSigningAlgorithm =
        serde_json::from_value(Value::String(conn.id_token_alg.clone()))
            .map_err(|e| CallbackError::IdToken(format!("id_token_alg: {e}")))?;
    let nonce = Nonce::new(nonce.to_owned());
    let verified = {
        let v = c.id_token_verifier().set_allowed_algs(vec![alg.clone()]);
        id_token
            .claims(&v, &nonce)
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    };
    if let Err(first) = verified {
        // A key the cached JWKS lacks: the IdP may have rotated. Fetch again (rate-limited)
        // and verify once more; anything else is final.
        let unknown_kid = first.contains("no matching key") || first.contains("No matching key");
        let again = match (unknown_kid, discovery.refetch(outbound, &conn.issuer).await) {
            (true, Some(meta)) => {
                let c2 = client(conn, meta, redirect).map_err(|e| CallbackError::Idp(e.0))?;
                let v = c2.id_token_verifier().set_allowed_algs(vec![alg]);
                id_token
                    .claims(&v, &nonce)
                    .map(|_| ())
                    .map_err(|e| error_chain(&e))
            }
            _ => Err(first),
        };
        again.map_err(CallbackError::IdToken)?;
    }
    // Verified above; read every claim for the mapping (the crate's typed view drops
    // non-standard ones such as `groups`, `tid`, `hd`).
    let raw = id_token.to_string();
    let payload = raw
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .ok_or_else(|| CallbackError::IdToken("the id_token payload is not JSON".into()))?;
    let mut claims = payload;
    if conn.userinfo {
        let url = userinfo_url
            .ok_or_else(|| CallbackError::Idp("the IdP publishes no userinfo endpoint".into()))?;
        let info = userinfo(outbound, url.as_str(), token.access_token().secret()).await?;
        // OIDC Core 5.3.2: the userinfo `sub` must be the id_token's.
        if info.get("sub") != claims.get("sub") {
            return Err(CallbackError::Idp(
                "the userinfo sub differs from the id_token's".into(),
            ));
        }
        for (k, v) in info {
            claims.entry(k).or_insert(v);
        }
    }
    // Verified above: a NUL (which no store keeps) becomes U+FFFD.
    crate::text::scrub_nul_map(&mut claims);
    Ok(claims)
}

async fn userinfo(
    outbound: &Outbound,
    url: &str,
    access_token: &str,
) -> Result<Map<String, Value>, CallbackError> {
    let url = outbound
        .url(url)
        .map_err(|e| CallbackError::Idp(e.to_string()))?;
    let resp = outbound
        .client()
        .get(url)
        .bearer_auth(access_token)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| CallbackError::Idp(format!("userinfo: {}", error_chain(&e.without_url()))))?;
    if !resp.status().is_success() {
        return Err(CallbackError::Idp(format!(
            "userinfo answered {}",
            resp.status()
        )));
    }
    resp.json()
        .await
        .map_err(|e| CallbackError::Idp(format!("userinfo is not a JSON object: {e}")))
}
