//! A mock EHR on loopback: a SMART App Launch 2.2 authorization server and a small FHIR R4
//! server, shaped like Epic's, Oracle Health's (Cerner Millennium) or a plain SMART server.
//!
//! The gateway's tests and benchmarks start one with [`MockEhr::start`], point the gateway at
//! [`MockEhr::iss`] and drive the browser steps by hand. It is faithful to the server side of
//! the SMART spec (discovery, EHR and standalone launch, PKCE S256, the three client
//! authentication types, refresh, OpenID Connect id_tokens, Backend Services) and to the
//! vendor quirks that bite clients in practice: Oracle's 570 s tokens and non-rotating
//! refresh tokens, its dropping of v1 scopes for v2-registered apps, Epic's string-typed
//! `need_patient_banner` and `__epic.dstu2.patient`, relative vs absolute `fhirUser`.
//!
//! Faults ([`Fault`]) can be queued to make the next authorize, token or id_token fail in a
//! chosen way, a refresh outage ([`MockEhr::fail_refreshes`]) makes the token endpoint fail
//! every refresh for N requests or a while (down, hanging, or refusing the refresh token),
//! and every token and FHIR request is recorded for assertions.
//!
//! Layout: `discovery` (smart-configuration, CapabilityStatement), `authorize`, `token`
//! (grants and id_tokens), `client_auth` (the three client authentication types), `fhir`
//! (the resource server), `data` (sample resources), `json_patch` (RFC 6902).

mod authorize;
mod client_auth;
mod data;
mod discovery;
mod fhir;
mod json_patch;
mod token;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use crate::util::{lock, now_secs, parse_form, random_token};
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

/// Oracle Health's public sandbox tenant; the mock serves it so URLs look like the real ones.
pub const ORACLE_SANDBOX_TENANT: &str = "ec2458f2-1e24-41c8-b71b-0e701af7583d";

/// How long an authorization code lives (RFC 6749 §4.1.2 recommends at most 10 minutes).
const CODE_TTL_SECS: u64 = 300;
/// How long an unused EHR launch stays redeemable.
const LAUNCH_TTL_SECS: u64 = 3600;
/// How long an id_token lives.
const ID_TOKEN_TTL_SECS: u64 = 300;
/// Refresh tokens live long; the tests that care revoke them explicitly.
const REFRESH_TTL_SECS: u64 = 30 * 24 * 3600;
/// Recorded FHIR requests kept; older ones are dropped so benchmarks run in flat memory.
const FHIR_LOG_CAP: usize = 1000;
/// Recorded token requests kept.
const TOKEN_LOG_CAP: usize = 1000;

/// Which EHR the mock imitates: URL layout, discovery documents, token response extras.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Epic,
    Oracle,
    Generic,
}

impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Epic => "epic",
            Vendor::Oracle => "oracle",
            Vendor::Generic => "generic",
        }
    }
}

/// How a registered client authenticates at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockClientAuth {
    /// No credentials: `client_id` in the form, PKCE protects the code.
    Public,
    /// `client_secret_basic` (or `client_secret_post`).
    Symmetric { secret: String },
    /// `private_key_jwt`: assertions verified against the JWKS served at `jwks_url`.
    Asymmetric { jwks_url: String },
}

/// A client registered with the mock EHR.
#[derive(Debug, Clone)]
pub struct MockClient {
    pub client_id: String,
    pub auth: MockClientAuth,
    /// Compared exactly (no prefix or trailing-slash tolerance), as the vendors do.
    pub redirect_uris: Vec<String>,
    /// Registered with SMART v2 scopes: Oracle then drops requested v1 clinical scopes.
    pub v2_scopes: bool,
}

impl MockClient {
    pub fn public(client_id: &str, redirect_uri: &str) -> MockClient {
        MockClient {
            client_id: client_id.to_owned(),
            auth: MockClientAuth::Public,
            redirect_uris: vec![redirect_uri.to_owned()],
            v2_scopes: false,
        }
    }

    pub fn symmetric(client_id: &str, secret: &str, redirect_uri: &str) -> MockClient {
        MockClient {
            auth: MockClientAuth::Symmetric {
                secret: secret.to_owned(),
            },
            ..MockClient::public(client_id, redirect_uri)
        }
    }

    pub fn asymmetric(client_id: &str, jwks_url: &str, redirect_uris: Vec<String>) -> MockClient {
        MockClient {
            client_id: client_id.to_owned(),
            auth: MockClientAuth::Asymmetric {
                jwks_url: jwks_url.to_owned(),
            },
            redirect_uris,
            v2_scopes: false,
        }
    }
}

/// Where the SMART endpoints are advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiscoveryMode {
    /// `{iss}/.well-known/smart-configuration` and the CapabilityStatement both answer.
    #[default]
    WellKnown,
    /// `/.well-known/smart-configuration` is 404; the endpoints are only in the
    /// CapabilityStatement's `oauth-uris` extension (older servers).
    MetadataOnly,
}

#[derive(Debug, Clone)]
pub struct MockEhrOptions {
    pub vendor: Vendor,
    pub clients: Vec<MockClient>,
    /// Access token lifetime; default Epic 3600, Oracle 570, Generic 3600.
    pub access_token_secs: Option<u64>,
    pub discovery: DiscoveryMode,
    /// Time the FHIR API takes before answering (waited, not computed), as a real EHR's
    /// database and network do; zero answers from memory at once.
    pub fhir_latency: Duration,
    /// FHIR answers sent with `Transfer-Encoding: chunked` instead of a `Content-Length`,
    /// as HAPI FHIR, IIS-hosted and many other servers send them.
    pub fhir_chunked: bool,
}

impl MockEhrOptions {
    pub fn new(vendor: Vendor, clients: Vec<MockClient>) -> MockEhrOptions {
        MockEhrOptions {
            vendor,
            clients,
            access_token_secs: None,
            discovery: DiscoveryMode::WellKnown,
            fhir_latency: Duration::ZERO,
            fhir_chunked: false,
        }
    }
}

/// What the EHR user had open when they launched the app.
#[derive(Debug, Clone, Default)]
pub struct LaunchContext {
    pub patient: Option<String>,
    pub encounter: Option<String>,
    /// The Practitioner id of the user.
    pub user: String,
    pub fhir_context: Vec<Value>,
    pub intent: Option<String>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
}

/// A defect to put in the next id_token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenFault {
    /// Signed by a different RSA key that carries the published `kid`.
    BadSignature,
    /// `aud` is not the client_id.
    WrongAudience,
    /// `exp` ten minutes in the past.
    Expired,
    /// `{"alg":"none"}` and an empty signature.
    AlgNone,
    /// HS256 keyed with the PEM of the mock's public key: the algorithm-confusion attack.
    Hs256WithPublicKey,
    /// `iss` is not the FHIR server's issuer.
    WrongIssuer,
}

/// A failure queued for the next matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next authorize request that passes validation is answered as if the user
    /// declined: `error=access_denied`.
    DenyAuthorize,
    /// The next token request gets this HTTP status and OAuth error code.
    TokenError { status: u16, error: String },
    /// The next id_token issued has this defect.
    IdToken(IdTokenFault),
    /// The next FHIR request whose `Accept` has a `fhirVersion` parameter gets 406, as
    /// from a server that does not take the parameter at all.
    RefuseFhirVersion,
    /// The next FHIR request with a valid token gets 500 and an `exception`
    /// OperationOutcome, as from a server whose database failed.
    FhirServerError,
}

/// How the token endpoint answers refresh requests during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshFailure {
    /// 503 with `Retry-After`, as a token service that is down or overloaded answers (no
    /// OAuth body: what answers is usually a load balancer).
    Unavailable,
    /// No answer for this long, then 504 as a proxy in front of a hung token service gives:
    /// a client with a shorter timeout gives up first. The refresh is not carried out (the
    /// refresh token stays good), as when the service hangs before reaching its database.
    Hang(Duration),
    /// 400 `invalid_grant`: the refresh token is refused, as when it was revoked or has
    /// outlived its own lifetime at the EHR (access tokens already issued stay valid).
    InvalidGrant,
}

/// How long a refresh outage lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageSpan {
    /// The next N refresh requests fail.
    Requests(u32),
    /// Refresh requests fail for this long from now.
    For(Duration),
}

/// A refresh outage in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshOutage {
    pub failure: RefreshFailure,
    pub left: Option<u32>,
    pub until: Option<std::time::Instant>,
}

/// A token endpoint request, as received (secrets, codes and assertions included: the mock
/// is a test double and tests assert on them).
#[derive(Debug, Clone)]
pub struct RecordedTokenRequest {
    pub grant_type: String,
    /// `none`, `client_secret_basic`, `client_secret_post` or `private_key_jwt`.
    pub client_auth: String,
    pub assertion_header: Option<Value>,
    pub assertion_claims: Option<Value>,
    pub form: BTreeMap<String, String>,
}

/// A FHIR request, as received.
#[derive(Debug, Clone)]
pub struct RecordedFhirRequest {
    pub method: String,
    /// Relative to the FHIR base, e.g. `Patient/abc`.
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A running mock EHR; it stops serving when dropped.
pub struct MockEhr {
    shared: Arc<Shared>,
    _server: crate::util::Served,
}

impl MockEhr {
    /// Bind `127.0.0.1:0`, generate the signing key and serve until dropped.
    pub async fn start(opts: MockEhrOptions) -> anyhow::Result<MockEhr> {
        let (listener, addr) = crate::util::bind_loopback("mock EHR").await?;
        // Key generation is CPU-bound; keep it off the async workers.
        let signer = tokio::task::spawn_blocking(Signer::generate)
            .await
            .context("signing key generation panicked")??;
        let shared = Arc::new(Shared::new(opts, addr, signer)?);
        let app = router(shared.clone());
        let _server = crate::util::serve(listener, app, "mock EHR server");
        Ok(MockEhr { shared, _server })
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// The FHIR base URL (no trailing slash): what an EHR passes as `iss` in a launch.
    pub fn iss(&self) -> String {
        self.shared.iss.clone()
    }

    /// Oracle's tenant id (a path segment of `iss`); `None` for the other vendors.
    pub fn tenant(&self) -> Option<String> {
        self.shared.tenant.clone()
    }

    pub fn authorize_url(&self) -> String {
        self.shared.url(&self.shared.paths.authorize)
    }

    pub fn token_url(&self) -> String {
        self.shared.url(&self.shared.paths.token)
    }

    pub fn jwks_url(&self) -> String {
        self.shared.url(&self.shared.paths.jwks)
    }

    /// Register an EHR launch (the user clicked the app in the EHR) and return the opaque
    /// `launch` value the EHR would pass to the app. Single use.
    pub fn launch(&self, ctx: LaunchContext) -> String {
        self.shared.data.ensure_practitioner(&ctx.user);
        if let Some(patient) = &ctx.patient {
            self.shared.data.ensure_patient(patient);
        }
        let launch = random_token();
        let now = now_secs();
        let mut auth = lock(&self.shared.auth);
        auth.launches.retain(|_, l| l.expires_at > now && !l.used);
        auth.launches.insert(
            launch.clone(),
            PendingLaunch {
                ctx,
                expires_at: now + LAUNCH_TTL_SECS,
                used: false,
            },
        );
        launch
    }

    /// Queue a fault for the next matching request.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// The token endpoint fails every `refresh_token` request (the other grants are served)
    /// in the given way, for `span`; it replaces an outage in progress. Failed requests are
    /// recorded in [`MockEhr::token_requests`] like the others.
    pub fn fail_refreshes(&self, failure: RefreshFailure, span: OutageSpan) {
        let (left, until) = match span {
            OutageSpan::Requests(n) => (Some(n), None),
            OutageSpan::For(d) => (None, Some(std::time::Instant::now() + d)),
        };
        *lock(&self.shared.refresh_outage) = Some(RefreshOutage {
            failure,
            left,
            until,
        });
    }

    /// End a refresh outage now: the token endpoint recovers.
    pub fn end_refresh_outage(&self) {
        *lock(&self.shared.refresh_outage) = None;
    }

    /// Every access token issued so far answers 401 from now on (tokens issued later work).
    pub fn expire_access_tokens(&self) {
        for token in lock(&self.shared.tokens).values() {
            token.revoked.store(true, Ordering::Relaxed);
        }
    }

    pub fn token_requests(&self) -> Vec<RecordedTokenRequest> {
        lock(&self.shared.token_log).iter().cloned().collect()
    }

    /// The last (up to) 1000 FHIR requests, oldest first.
    pub fn fhir_requests(&self) -> Vec<RecordedFhirRequest> {
        lock(&self.shared.fhir_log).iter().cloned().collect()
    }

    /// The patient a standalone launch with `launch/patient` gets (the mock's "picker").
    pub fn default_patient(&self) -> String {
        self.shared.default_patient.clone()
    }

    /// The practitioner a standalone launch signs in as.
    pub fn default_practitioner(&self) -> String {
        self.shared.default_practitioner.clone()
    }

    /// The mock's id_token signing key as a JWK (also served at [`MockEhr::jwks_url`]).
    pub fn signing_jwk(&self) -> Value {
        self.shared.signer.public_jwk.clone()
    }
}

/// Paths (relative to the base URL) of the authorization server's endpoints.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// The FHIR base path, e.g. `/api/FHIR/R4`.
    pub fhir: String,
    pub authorize: String,
    pub token: String,
    pub jwks: String,
    pub revoke: Option<String>,
    pub introspect: Option<String>,
    pub manage: Option<String>,
    pub style: String,
}

impl Paths {
    fn for_vendor(vendor: Vendor, tenant: Option<&str>) -> Paths {
        match vendor {
            Vendor::Epic => Paths {
                fhir: "/api/FHIR/R4".into(),
                authorize: "/oauth2/authorize".into(),
                token: "/oauth2/token".into(),
                jwks: "/api/epic/2019/Security/Open/PublicKeys/530027/OIDC".into(),
                revoke: None,
                introspect: Some("/oauth2/introspect".into()),
                manage: None,
                style: "/api/epic/2016/EDI/HTTP/style/smart-style.json".into(),
            },
            Vendor::Oracle => {
                let t = tenant.unwrap_or(ORACLE_SANDBOX_TENANT);
                let profile = format!("/tenants/{t}/protocols/oauth2/profiles/smart-v1");
                Paths {
                    fhir: format!("/r4/{t}"),
                    authorize: format!("{profile}/personas/provider/authorize"),
                    token: format!("{profile}/token"),
                    jwks: "/jwk".into(),
                    revoke: Some(format!("{profile}/token/revoke")),
                    introspect: Some("/tokeninfo".into()),
                    manage: Some(format!("/tenants/{t}/personas/provider/my-authorizations")),
                    style: "/styles/smart-v1.json".into(),
                }
            }
            Vendor::Generic => Paths {
                fhir: "/fhir".into(),
                authorize: "/auth/authorize".into(),
                token: "/auth/token".into(),
                jwks: "/.well-known/jwks.json".into(),
                revoke: Some("/auth/revoke".into()),
                introspect: Some("/auth/introspect".into()),
                manage: None,
                style: "/smart-style.json".into(),
            },
        }
    }
}

/// The mock's id_token signing key (RS256, as Epic and Oracle sign id_tokens).
pub(crate) struct Signer {
    pub kid: String,
    pub encoding: jsonwebtoken::EncodingKey,
    pub public_jwk: Value,
    /// The public key as SPKI PEM: the HMAC secret of the algorithm-confusion fault.
    pub public_pem: String,
}

impl Signer {
    pub(crate) fn generate() -> anyhow::Result<Signer> {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)?;
        let der = key.to_pkcs1_der()?;
        let public = key.to_public_key();
        let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
        // An RFC 7638 thumbprint, base64 (not url) encoded: Epic's kids look like this.
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = base64::engine::general_purpose::STANDARD
            .encode(<sha2::Sha256 as sha2::Digest>::digest(thumbprint_input));
        let public_pem = public.to_public_key_pem(LineEnding::LF)?;
        Ok(Signer {
            public_jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e,
            }),
            kid,
            encoding: jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
            public_pem,
        })
    }

    /// Another key that claims the same `kid`: for [`IdTokenFault::BadSignature`].
    pub fn impostor_key() -> anyhow::Result<jsonwebtoken::EncodingKey> {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)?;
        Ok(jsonwebtoken::EncodingKey::from_rsa_der(
            key.to_pkcs1_der()?.as_bytes(),
        ))
    }
}

/// What a grant (code, refresh token, access token) carries: who, for what, in which context.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    /// The Practitioner id of the user; `None` for Backend Services.
    pub user: Option<String>,
    pub fhir_context: Vec<Value>,
    pub intent: Option<String>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
    /// Ties every token issued from one authorization code together, so that replaying the
    /// code can revoke them all (RFC 6749 §4.1.2).
    pub family: u64,
}

impl Grant {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

pub(crate) struct PendingLaunch {
    pub ctx: LaunchContext,
    pub expires_at: u64,
    pub used: bool,
}

pub(crate) struct AuthCode {
    pub grant: Grant,
    pub redirect_uri: String,
    pub code_challenge: String,
    /// Epic echoes the authorize `state` in the token response.
    pub state: String,
    pub nonce: Option<String>,
    pub expires_at: u64,
    pub used: bool,
}

pub(crate) struct RefreshGrant {
    pub grant: Grant,
    pub expires_at: u64,
}

/// An issued access token, looked up on every FHIR request.
#[derive(Debug)]
pub(crate) struct AccessToken {
    pub client_id: String,
    pub scope: String,
    pub patient: Option<String>,
    pub user: Option<String>,
    /// Only `patient/` clinical scopes: reads are confined to the patient's compartment.
    pub patient_scoped: bool,
    pub expires_at: u64,
    pub family: u64,
    pub revoked: AtomicBool,
}

impl AccessToken {
    pub fn is_active(&self, now: u64) -> bool {
        now < self.expires_at && !self.revoked.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct AuthState {
    pub launches: HashMap<String, PendingLaunch>,
    pub codes: HashMap<String, AuthCode>,
    pub refresh: HashMap<String, RefreshGrant>,
    /// Client assertion `jti`s seen, with their `exp`, to refuse replays.
    pub seen_jti: HashMap<String, u64>,
    pub next_family: u64,
}

pub(crate) struct Shared {
    pub vendor: Vendor,
    pub discovery: DiscoveryMode,
    pub base: String,
    pub iss: String,
    pub tenant: Option<String>,
    pub paths: Paths,
    pub clients: HashMap<String, MockClient>,
    pub access_token_secs: u64,
    pub fhir_latency: Duration,
    pub fhir_chunked: bool,
    pub signer: Signer,
    pub default_patient: String,
    pub default_practitioner: String,
    pub http: reqwest::Client,
    pub auth: Mutex<AuthState>,
    /// Kept apart from `auth` so FHIR reads only contend with token issuance.
    pub tokens: Mutex<HashMap<String, Arc<AccessToken>>>,
    /// Client JWKS by URL (only the keys this mock can use).
    pub jwks_cache: Mutex<HashMap<String, Arc<Vec<jsonwebtoken::jwk::Jwk>>>>,
    pub faults: Mutex<VecDeque<Fault>>,
    pub refresh_outage: Mutex<Option<RefreshOutage>>,
    pub token_log: Mutex<VecDeque<RecordedTokenRequest>>,
    pub fhir_log: Mutex<VecDeque<RecordedFhirRequest>>,
    pub data: data::FhirData,
    /// Pre-rendered discovery documents: they never change while the mock runs.
    pub smart_configuration: Bytes,
    pub capability_statement: Bytes,
    pub jwks: Bytes,
}

impl Shared {
    fn new(opts: MockEhrOptions, addr: SocketAddr, signer: Signer) -> anyhow::Result<Shared> {
        let base = format!("http://{addr}");
        let tenant = (opts.vendor == Vendor::Oracle).then(|| ORACLE_SANDBOX_TENANT.to_owned());
        let paths = Paths::for_vendor(opts.vendor, tenant.as_deref());
        let iss = format!("{base}{}", paths.fhir);
        let access_token_secs = opts.access_token_secs.unwrap_or(match opts.vendor {
            Vendor::Oracle => 570,
            Vendor::Epic | Vendor::Generic => 3600,
        });
        let mut clients = HashMap::new();
        for client in opts.clients {
            anyhow::ensure!(
                !client.client_id.is_empty(),
                "a mock EHR client needs a client_id"
            );
            if clients.insert(client.client_id.clone(), client).is_some() {
                anyhow::bail!("two mock EHR clients share a client_id");
            }
        }
        let data = data::FhirData::new(opts.vendor);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client for client JWKS")?;
        let mut shared = Shared {
            vendor: opts.vendor,
            discovery: opts.discovery,
            base,
            iss,
            tenant,
            paths,
            clients,
            access_token_secs,
            fhir_latency: opts.fhir_latency,
            fhir_chunked: opts.fhir_chunked,
            default_patient: data.default_patient().to_owned(),
            default_practitioner: data.default_practitioner().to_owned(),
            signer,
            http,
            auth: Mutex::new(AuthState::default()),
            tokens: Mutex::new(HashMap::new()),
            jwks_cache: Mutex::new(HashMap::new()),
            faults: Mutex::new(VecDeque::new()),
            refresh_outage: Mutex::new(None),
            token_log: Mutex::new(VecDeque::new()),
            fhir_log: Mutex::new(VecDeque::new()),
            data,
            smart_configuration: Bytes::new(),
            capability_statement: Bytes::new(),
            jwks: Bytes::new(),
        };
        shared.smart_configuration = Bytes::from(serde_json::to_vec(
            &discovery::smart_configuration(&shared),
        )?);
        shared.capability_statement = Bytes::from(serde_json::to_vec(
            &discovery::capability_statement(&shared),
        )?);
        shared.jwks = Bytes::from(serde_json::to_vec(
            &json!({ "keys": [shared.signer.public_jwk] }),
        )?);
        Ok(shared)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The failure for a refresh request arriving now, if an outage is in progress (counting
    /// the request against an outage of N requests).
    pub fn refresh_failure(&self) -> Option<RefreshFailure> {
        let mut outage = lock(&self.refresh_outage);
        let o = outage.as_mut()?;
        let active = match (o.left.as_mut(), o.until) {
            (Some(left), _) if *left > 0 => {
                *left -= 1;
                true
            }
            (None, Some(until)) => std::time::Instant::now() < until,
            _ => false,
        };
        if active {
            Some(o.failure)
        } else {
            *outage = None;
            None
        }
    }

    /// Remove and return the first queued fault `pick` accepts.
    pub fn take_fault<T>(&self, pick: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        let mut faults = lock(&self.faults);
        let index = faults.iter().position(|f| pick(f).is_some())?;
        faults.remove(index).and_then(|f| pick(&f))
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let p = shared.paths.clone();
    let fhir = p.fhir.as_str();
    let mut app = Router::new()
        .route(
            &p.authorize,
            get(authorize::authorize).post(authorize::authorize),
        )
        .route(&p.token, post(token::token))
        .route(&p.jwks, get(discovery::jwks))
        .route(&p.style, get(discovery::smart_style))
        .route(
            &format!("{fhir}/.well-known/smart-configuration"),
            get(discovery::well_known),
        )
        .route(&format!("{fhir}/metadata"), get(discovery::metadata))
        .route(&format!("{fhir}/{{*rest}}"), any(fhir::handle));
    if let Some(path) = &p.revoke {
        app = app.route(path, post(token::revoke));
    }
    if let Some(path) = &p.introspect {
        app = app.route(path, post(token::introspect));
    }
    if let Some(path) = &p.manage {
        app = app.route(path, get(discovery::manage));
    }
    app.with_state(shared)
}

/// The single value of `name`: `Ok(None)` if absent, `Err(name)` if repeated.
pub(crate) fn single<'a>(
    form: &'a [(String, String)],
    name: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    let mut found = None;
    for (k, v) in form {
        if k == name {
            if found.is_some() {
                return Err(name);
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

/// A JSON response with a fixed content type from pre-rendered bytes.
pub(crate) fn json_bytes(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// An OAuth error (RFC 6749 §5.2) from the token, revocation or introspection endpoints.
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
    /// Set on 401 `invalid_client`, as RFC 6749 §5.2 requires.
    pub www_authenticate: Option<&'static str>,
}

impl OAuthError {
    pub fn new(error: &str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: error.to_owned(),
            description: description.into(),
            www_authenticate: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_request", description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_grant", description)
    }

    pub fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client".to_owned(),
            description: description.into(),
            www_authenticate: Some(r#"Basic realm="mock-ehr", charset="UTF-8""#),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response();
        if let Some(challenge) = self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// Escape text for HTML element content and attribute values.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal HTML page, for the endpoints a browser lands on.
pub(crate) fn html_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>\n",
        t = html_escape(title),
        m = html_escape(message),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
