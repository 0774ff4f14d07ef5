//! The SMART launch, start to finish: from the EHR's (or the user's) first request to the
//! redirect to the app with a one-time code. Failures become pages for the user.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::flow::{AuthorizeRequest, TokenResponse, authorize_url, pkce_pair};
use super::registration::{ClientType, SmartRegistration};
use super::store::{PendingState, Session, StateProblem};
use super::token::{ClientAuth, TokenError};
use crate::config::PartnerConfig;
use crate::http::page::{Page, internal};
use crate::launches::{Launch, LaunchKind, binding};
use crate::metering::UsageEvent;
use crate::state::AppState;
use crate::time::{now_micros, to_micros};

/// The redirect URI registered with every EHR.
pub fn redirect_uri(state: &AppState) -> String {
    format!("{}/smart/callback", state.config.http.public_base())
}

/// The partner that registered `iss`, and the issuer as registered.
pub fn partner_for_issuer<'a>(
    state: &'a AppState,
    iss: &str,
) -> Option<(&'a PartnerConfig, &'a SmartRegistration)> {
    state.config.partners.iter().find_map(|p| {
        let reg = p.smart.as_ref()?;
        reg.issuer(iss).map(|_| (p, reg))
    })
}

/// The cookie binding the state `state_hash` to the browser that started the launch. An
/// EHR may show the app in a frame of its own page (web EHR clients, and embedded-browser
/// ones such as Epic Hyperspace/Hyperdrive or Oracle Health PowerChart when they frame
/// it): the cookie must then be kept in a frame of the EHR's site and sent on the EHR's
/// cross-site redirect back, so over HTTPS it is `SameSite=None; Secure; Partitioned`, as
/// LTI's; `Lax` would do for a top-level launch only. Over plain HTTP (development, top
/// level) `SameSite=Lax`.
pub fn binding_cookie(state: &AppState, state_hash: &str) -> binding::Cookie {
    binding::Cookie {
        name: binding::per_state_name("pgw_smart", state_hash),
        path: "/smart",
        max_age_secs: state.config.smart.state_ttl_secs,
        site: binding::Site::for_base(&state.config.http.public_base(), binding::Site::Framed),
    }
}

/// An authorization request started: where to send the browser, and the cookie binding
/// its state to this browser.
pub struct Started {
    pub url: String,
    pub cookie: Option<HeaderValue>,
}

/// Start an authorization request for `partner` at `iss`: the URL to send the browser to
/// and the binding cookie to set.
pub async fn begin(
    state: &AppState,
    partner: &PartnerConfig,
    reg: &SmartRegistration,
    iss: &str,
    launch: Option<&str>,
) -> Result<Started, Page> {
    let iss = reg
        .issuer(iss)
        .unwrap_or(iss)
        .trim_end_matches('/')
        .to_owned();
    let cfg = state.smart.discovery.configuration(&iss).await.map_err(|e| {
        tracing::warn!(partner_id = %partner.id, %iss, error = %e, "SMART discovery failed");
        Page::new(StatusCode::BAD_GATEWAY, "The EHR could not be reached")
            .line(format!("The gateway could not read the SMART configuration of {iss}."))
            .line(e.to_string())
            .line("Try the launch again in a moment; if it keeps failing, tell your EHR administrator.")
    })?;
    let endpoint = url::Url::parse(&cfg.authorization_endpoint)
        .map_err(|e| internal(format!("authorization endpoint: {e}")))?;
    if endpoint.scheme() != "https" && !state.config.outbound.allow_http {
        return Err(Page::new(
            StatusCode::BAD_GATEWAY,
            "The EHR's sign-in address is not secure",
        )
        .line(format!(
            "{iss} names an authorization endpoint that is not https; the gateway refuses it."
        )));
    }
    let (verifier, challenge) = pkce_pair();
    let state_value = crate::random::token(32);
    let state_hash = crate::launches::hash_code(&state_value);
    let secret = binding::new_secret();
    let scope = reg.scope_for(launch.is_some());
    let now = now_micros();
    let pending = PendingState {
        partner_id: partner.id.clone(),
        iss: iss.clone(),
        launch_param: launch.map(str::to_owned),
        code_verifier: verifier,
        scope: scope.clone(),
        binding_hash: binding::hash(&secret),
    };
    let expires = now + (state.config.smart.state_ttl_secs as i64) * 1_000_000;
    super::store::insert_state(
        &state.db,
        &state.master_key,
        &state_hash,
        &pending,
        now,
        expires,
    )
    .await
    .map_err(|e| internal(format!("storing the authorization state: {e:#}")))?;
    let redirect = redirect_uri(state);
    let url = authorize_url(
        &endpoint,
        &AuthorizeRequest {
            client_id: &reg.client_id,
            redirect_uri: &redirect,
            scope: &scope,
            state: &state_value,
            aud: &iss,
            code_challenge: &challenge,
            launch,
        },
    );
    tracing::info!(partner_id = %partner.id, %iss, ehr_launch = launch.is_some(), "SMART authorization started");
    Ok(Started {
        url: url.to_string(),
        cookie: binding_cookie(state, &state_hash).set(&secret),
    })
}

/// What the EHR sends back to `/smart/callback`.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub error_uri: Option<String>,
}

/// Finish the launch started in the browser whose request `headers` carry; returns the app
/// URL (with the one-time code) to redirect to.
pub async fn complete(
    state: &AppState,
    params: CallbackParams,
    headers: &HeaderMap,
) -> Result<String, Page> {
    let Some(state_value) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err(Page::new(StatusCode::BAD_REQUEST, "This sign-in link is incomplete")
            .line("The EHR's answer has no state parameter, so the gateway cannot tell which launch it belongs to.")
            .line("Start the app again from the EHR."));
    };
    if state_value.len() > 512 {
        return Err(state_page(StateProblem::Unknown));
    }
    let hash = crate::launches::hash_code(state_value);
    let now = now_micros();
    // Spent only together with this browser's binding: a link to an attacker's callback
    // opened in another browser is refused and leaves the state alone.
    let secret = binding_cookie(state, &hash).read(headers);
    let pending = super::store::take_state(
        &state.db,
        &state.master_key,
        &hash,
        secret.as_deref().map(binding::hash).as_deref(),
        now,
    )
    .await
    .map_err(|e| internal(format!("reading the authorization state: {e:#}")))?
    .map_err(|p| {
        if p == StateProblem::OtherBrowser {
            tracing::warn!(
                cookie = secret.is_some(),
                "SMART callback from a browser that did not start the launch"
            );
        }
        state_page(p)
    })?;
    crate::telemetry::metrics::note_partner(&pending.partner_id);
    let partner = state
        .config
        .partner(&pending.partner_id)
        .filter(|p| p.smart.is_some())
        .ok_or_else(|| {
            internal(format!(
                "partner {} has no SMART registration any more",
                pending.partner_id
            ))
        })?;
    let reg = partner
        .smart
        .as_ref()
        .ok_or_else(|| internal("no registration".into()))?;

    if let Some(error) = &params.error {
        let description = params.error_description.clone().unwrap_or_default();
        tracing::warn!(partner_id = %partner.id, iss = %pending.iss, %error, %description,
            error_uri = params.error_uri.as_deref().unwrap_or(""), "the EHR returned an authorization error");
        let mut page = Page::new(StatusCode::BAD_REQUEST, "The EHR did not authorize the app")
            .line(format!("{} answered: {error}", partner.name));
        if !description.is_empty() {
            page = page.line(description);
        }
        return Err(page.line(
            "Start the app again from the EHR; if this repeats, tell your EHR administrator.",
        ));
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(
            Page::new(StatusCode::BAD_REQUEST, "This sign-in link is incomplete")
                .line("The EHR's answer has neither an authorization code nor an error."),
        );
    };

    let cfg = state
        .smart
        .discovery
        .configuration(&pending.iss)
        .await
        .map_err(|e| {
            Page::new(StatusCode::BAD_GATEWAY, "The EHR could not be reached").line(e.to_string())
        })?;
    let auth = client_auth(state, reg, &reg.client_id, reg.alg()).await?;
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_owned()),
        ("redirect_uri", redirect_uri(state)),
        ("code_verifier", pending.code_verifier.clone()),
    ];
    let token = super::token::request(state.smart.discovery.outbound(), &cfg.token_endpoint, &auth, form)
        .await
        .map_err(|e| {
            tracing::warn!(partner_id = %partner.id, iss = %pending.iss, error = %e, "SMART code exchange failed");
            Page::new(StatusCode::BAD_GATEWAY, "The EHR did not complete the sign-in")
                .line(match &e {
                    TokenError::Refused(m) => format!("Exchanging the authorization code was refused: {m}."),
                    other => other.to_string(),
                })
                .line("Start the app again from the EHR.")
        })?;

    let user = identify_user(state, reg, &pending, &cfg, &token).await?;
    finish(
        state,
        partner,
        reg,
        &pending,
        &cfg.token_endpoint,
        token,
        user,
    )
    .await
}

/// Who launched: from the verified id_token when `openid` was requested.
struct User {
    id: Option<String>,
    fhir_user: Option<String>,
    name: Option<String>,
}

async fn identify_user(
    state: &AppState,
    reg: &SmartRegistration,
    pending: &PendingState,
    cfg: &super::discovery::SmartConfiguration,
    token: &TokenResponse,
) -> Result<User, Page> {
    let openid = pending.scope.split_whitespace().any(|s| s == "openid");
    let Some(id_token) = token.id_token.as_deref() else {
        if openid
            && token
                .granted_scopes(&pending.scope)
                .iter()
                .any(|s| s == "openid")
        {
            return Err(id_token_page("the EHR granted openid but sent no id_token"));
        }
        return Ok(User {
            id: None,
            fhir_user: None,
            name: None,
        });
    };
    let jwks_uri = state
        .smart
        .discovery
        .jwks_uri(cfg, &pending.iss)
        .await
        .map_err(|e| id_token_page(&e.to_string()))?;
    let mut issuers = vec![pending.iss.as_str()];
    if let Some(i) = cfg.issuer.as_deref() {
        issuers.push(i);
    }
    let leeway = state.config.smart.clock_skew_secs;
    let mut jwks = state
        .smart
        .discovery
        .jwks(&jwks_uri, false)
        .await
        .map_err(|e| id_token_page(&e.to_string()))?;
    let mut verdict = super::idtoken::verify(id_token, &jwks, &issuers, &reg.client_id, leeway);
    if verdict.as_ref().err().is_some_and(|e| e.wants_fresh_keys()) {
        jwks = state
            .smart
            .discovery
            .jwks(&jwks_uri, true)
            .await
            .map_err(|e| id_token_page(&e.to_string()))?;
        verdict = super::idtoken::verify(id_token, &jwks, &issuers, &reg.client_id, leeway);
    }
    let claims = verdict.map_err(|e| {
        tracing::warn!(partner_id = %pending.partner_id, iss = %pending.iss, error = %e, "id_token rejected");
        id_token_page(&e.to_string())
    })?;
    let (fhir_user, sub, name) = super::idtoken::user_of(&claims, &pending.iss);
    Ok(User {
        id: fhir_user.clone().or(sub),
        fhir_user,
        name,
    })
}

async fn finish(
    state: &AppState,
    partner: &PartnerConfig,
    reg: &SmartRegistration,
    pending: &PendingState,
    token_endpoint: &str,
    token: TokenResponse,
    user: User,
) -> Result<String, Page> {
    let now = Utc::now();
    let now_us = to_micros(now);
    let launch_id = crate::ids::new(crate::ids::LAUNCH);
    let mut context = token.context(&pending.iss);
    context.insert("fhirUser".into(), json!(user.fhir_user));
    context.insert(
        "launch_type".into(),
        json!(if pending.launch_param.is_some() {
            "ehr"
        } else {
            "standalone"
        }),
    );
    let launch = Launch {
        id: launch_id.clone(),
        partner_id: partner.id.clone(),
        kind: LaunchKind::Smart,
        user_id: user.id.clone(),
        user_name: user.name.clone(),
        context,
        scopes: token.granted_scopes(&pending.scope),
        created_at: now,
        expires_at: now + chrono::Duration::hours(state.config.launches.launch_ttl_hours as i64),
        sandbox: state.config.is_sandbox(&partner.id),
    };
    // Without expires_in, assume the common hour and let a 401 trigger the refresh.
    let lifetime = token.expires_in_secs().unwrap_or(3600).max(0);
    let session = Session {
        launch_id: launch_id.clone(),
        partner_id: partner.id.clone(),
        iss: pending.iss.clone(),
        token_endpoint: token_endpoint.to_owned(),
        access_token: token.access_token.clone(),
        refresh_token: token.refresh_token.clone(),
        access_expires_at_us: now_us + lifetime * 1_000_000,
        version: 1,
        launch_expires_at_us: to_micros(launch.expires_at),
    };
    let event = UsageEvent {
        partner_id: partner.id.clone(),
        id: launch_id.clone(),
        source: "partner-gateway/smart".into(),
        event_type: "smart.launch".into(),
        subject: user.id.clone(),
        time: now,
        data: Some(json!({
            "launch_id": launch_id,
            "iss": pending.iss,
            "launch_type": if pending.launch_param.is_some() { "ehr" } else { "standalone" },
            "vendor": reg.vendor.as_str(),
            // The patient as a pseudonym (distinct patients can still be counted), never
            // the EHR's id: the ledger is kept forever (PRIVACY.md).
            "patient": token.patient.as_deref().map(|p| state.subjects.patient(&partner.id, p)),
        })),
        extensions: None,
    };
    let handoff_expires = now_us + (state.config.launches.handoff_ttl_secs as i64) * 1_000_000;
    let code = write_launch(state, &launch, &session, &event, handoff_expires, now_us)
        .await
        .map_err(|e| internal(format!("recording the launch: {e:#}")))?;
    tracing::info!(launch_id = %launch.id, partner_id = %partner.id, "SMART launch completed");
    let mut app = crate::http::page::redirect_target(&reg.app_url)
        .map_err(|e| internal(format!("app_url: {e}")))?;
    app.query_pairs_mut().append_pair("code", &code);
    Ok(app.to_string())
}

/// Launch, tokens, usage event and handoff code: all or nothing.
async fn write_launch(
    state: &AppState,
    launch: &Launch,
    session: &Session,
    event: &UsageEvent,
    handoff_expires_us: i64,
    now_us: i64,
) -> anyhow::Result<String> {
    let (st, launch, session, event) = (
        state.clone(),
        launch.clone(),
        session.clone(),
        event.clone(),
    );
    // In a task of its own: a browser that goes away cannot cancel the commit half-way.
    tokio::spawn(async move {
        let mut tx = st.db.begin().await?;
        crate::launches::insert_launch(&mut tx, &launch).await?;
        super::store::insert_session(&mut tx, &st.master_key, &session, now_us).await?;
        crate::metering::record_usage_event(&mut tx, &st.subjects, event).await?;
        let code = crate::launches::create_handoff(&mut tx, &launch.id, handoff_expires_us).await?;
        tx.commit().await?;
        Ok::<String, anyhow::Error>(code)
    })
    .await?
}

/// The client authentication of a registration (or its backend client).
pub async fn client_auth(
    state: &AppState,
    reg: &SmartRegistration,
    client_id: &str,
    alg: crate::keys::Alg,
) -> Result<ClientAuth, Page> {
    Ok(match reg.client_type {
        ClientType::Public => ClientAuth::Public {
            client_id: client_id.to_owned(),
        },
        ClientType::ConfidentialSymmetric => ClientAuth::Symmetric {
            client_id: client_id.to_owned(),
            secret: reg
                .client_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .ok_or_else(|| internal("client_secret missing".into()))?,
        },
        ClientType::ConfidentialAsymmetric => ClientAuth::Asymmetric {
            client_id: client_id.to_owned(),
            key: crate::keys::signing_key(&state.db, &state.master_key, alg)
                .await
                .map_err(|e| internal(format!("loading the signing key: {e:#}")))?,
            audience: None,
        },
    })
}

fn state_page(problem: StateProblem) -> Page {
    let (title, why) = match problem {
        StateProblem::Unknown => (
            "This sign-in link is not one the gateway started",
            "The state parameter does not match any launch in progress.",
        ),
        StateProblem::Reused => (
            "This sign-in link was already used",
            "Each sign-in link works once; it may have been opened twice or bookmarked.",
        ),
        StateProblem::Expired => (
            "This sign-in link has expired",
            "Too much time passed between starting the app and coming back from the EHR's sign-in.",
        ),
        StateProblem::OtherBrowser => (
            "This sign-in was started in another browser",
            "A launch must finish in the browser that started it, with cookies allowed for the gateway. If the app opens inside your EHR and this repeats, your browser may block its cookies there: open the app in a window of its own.",
        ),
    };
    Page::new(StatusCode::BAD_REQUEST, title)
        .line(why)
        .line("Start the app again from the EHR.")
}

fn id_token_page(reason: &str) -> Page {
    Page::new(
        StatusCode::BAD_GATEWAY,
        "The EHR's identity token could not be trusted",
    )
    .line(format!("The gateway refused the sign-in: {reason}."))
    .line("Start the app again; if this repeats, tell your EHR administrator.")
}
