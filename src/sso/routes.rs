//! SSO routes, thin: `GET /sso/start` (home-realm discovery, then `login::begin`),
//! `GET /sso/oidc/callback` (`login::complete`), the SAML SP's metadata and ACS
//! (`login::complete_saml`), and `GET`/`POST /v1/sso/connections`.

use std::collections::HashMap;

use crate::http::Path;
use axum::extract::{RawForm, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Found;
use super::connection::Protocol;
use crate::http::page::{self, Page};
use crate::launches::binding;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/sso/start", get(start))
        .route("/sso/oidc/callback", get(callback))
        .route("/sso/saml/{connection}/metadata", get(saml_metadata))
        .route("/sso/saml/{connection}/acs", post(saml_acs))
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(delete_connection))
}

/// A connection as its IdP administrator needs it: for OIDC the redirect URI to
/// register, for SAML the SP metadata URL (or entity id and ACS URL to copy).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub id: String,
    pub partner: String,
    pub organisation: String,
    /// oidc or saml.
    pub protocol: String,
    pub domains: Vec<String>,
    /// The sign-in link to give people.
    pub start_url: String,
    pub app_url: String,
    /// The ledger names this connection's people `{subject_namespace}:{user.id}` (the
    /// handoff's `subject`); the connection's id unless set.
    pub subject_namespace: String,
    /// OIDC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// OIDC: register this at the IdP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// SAML.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_metadata_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_entity_id: Option<String>,
    /// SAML: give this to the IdP (or the entity id and ACS URL below).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sp_metadata_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sp_entity_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acs_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_idp_initiated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_encrypted_assertions: Option<bool>,
}

crate::page_schema!(
    ConnectionList,
    ConnectionView,
    "A page of connections, by id."
);

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

/// The body of `POST /v1/sso/connections`: a connection as in config (its schema, which
/// refuses unknown fields), plus the partner it signs in to.
struct NewConnection;

impl utoipa::PartialSchema for NewConnection {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
        let partner = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The partner (organisation) whose people sign in through it.",
            ));
        match <super::connection::SsoConnection as utoipa::PartialSchema>::schema() {
            RefOr::T(Schema::Object(conn)) => {
                let mut obj: Object = conn;
                obj.properties.insert("partner".into(), partner.into());
                obj.required.insert(0, "partner".into());
                RefOr::T(Schema::Object(obj))
            }
            other => other,
        }
    }
}

impl utoipa::ToSchema for NewConnection {}

/// Every connection with what its IdP administrator registers (the redirect URI) and the
/// sign-in link to give people. Admin keys only: it names every customer's IdP.
#[utoipa::path(
    get,
    path = "/v1/sso/connections",
    tag = "sso",
    operation_id = "list_sso_connections",
    params(ListQuery),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "A page of the connections from config and created at runtime, by id", body = ConnectionList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
    )
)]
async fn list_connections(
    State(state): State<AppState>,
    caller: crate::http::auth::Caller,
    crate::http::Query(q): crate::http::Query<ListQuery>,
) -> Result<axum::Json<crate::http::list::Page<ConnectionView>>, crate::http::ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    let paging = crate::http::list::Paging::new("sso_connections", q.limit, q.cursor.as_deref())?;
    // Connections are few (one per customer organisation): paged in memory.
    let mut connections: Vec<ConnectionView> = super::lookup::all_connections(&state)
        .await
        .map_err(crate::http::ApiError::Internal)?
        .iter()
        .map(|f| describe(&state, f))
        .collect();
    connections.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(axum::Json(
        paging.page_sorted(connections, |c| c.id.clone())?,
    ))
}

/// Create a connection at runtime, checked against the IdP before it is saved (OIDC
/// discovery, or the SAML metadata fetched and parsed).
#[utoipa::path(
    post,
    path = "/v1/sso/connections",
    tag = "sso",
    operation_id = "create_sso_connection",
    request_body = NewConnection,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Created; every instance uses it at once", body = ConnectionView),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 409, response = crate::http::openapi::Conflict),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
        (status = 422, description = "The IdP could not be reached or its discovery/metadata is unusable", body = crate::http::error::ErrorBody),
    )
)]
async fn create_connection(
    State(state): State<AppState>,
    caller: crate::http::auth::Caller,
    headers: axum::http::HeaderMap,
    crate::http::Body(body): crate::http::Body,
) -> Result<(StatusCode, axum::Json<ConnectionView>), crate::http::ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    let body: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        crate::http::ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}"))
    })?;
    let found = super::admin::create(&state, body, &caller.who(&headers)).await?;
    Ok((StatusCode::CREATED, axum::Json(describe(&state, &found))))
}

/// Delete a runtime connection (config connections are removed from config).
#[utoipa::path(
    delete,
    path = "/v1/sso/connections/{connection}",
    tag = "sso",
    operation_id = "delete_sso_connection",
    params(("connection" = String, Path, description = "The connection's id")),
    security(("admin_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
    )
)]
async fn delete_connection(
    State(state): State<AppState>,
    caller: crate::http::auth::Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, crate::http::ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    super::admin::delete(&state, &id, &caller.who(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A connection as `GET /v1/sso/connections` shows it.
pub fn describe(state: &AppState, f: &Found) -> ConnectionView {
    let c = &f.conn;
    let base = state.config.http.public_base();
    let oidc = c.protocol == Protocol::Oidc;
    let saml = c.protocol == Protocol::Saml;
    ConnectionView {
        id: c.id.clone(),
        partner: f.partner_id.clone(),
        organisation: f.organisation(),
        protocol: c.protocol.as_str().to_owned(),
        domains: c.domains.clone(),
        start_url: format!("{base}/sso/start?organisation={}", c.id),
        app_url: c.app_url.clone(),
        subject_namespace: c.subject_namespace().to_owned(),
        issuer: oidc.then(|| c.issuer.clone()),
        client_id: oidc.then(|| c.client_id.clone()),
        redirect_uri: oidc.then(|| super::oidc_redirect_uri(&state.config)),
        idp_metadata_url: if saml {
            c.idp_metadata_url.clone()
        } else {
            None
        },
        idp_entity_id: if saml { c.idp_entity_id.clone() } else { None },
        sp_metadata_url: saml.then(|| super::saml_metadata_url(&state.config, &c.id)),
        sp_entity_id: saml.then(|| super::saml_entity_id(&state.config, c)),
        acs_url: saml.then(|| super::saml_acs_url(&state.config, &c.id)),
        allow_idp_initiated: saml.then_some(c.allow_idp_initiated),
        require_encrypted_assertions: saml.then_some(c.require_encrypted_assertions),
    }
}

fn query(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The small page asking for an email address when the link named no organisation.
fn ask_email(note: Option<&str>) -> Response {
    let note = note
        .map(|n| format!("<p>{}</p>", page::escape(n)))
        .unwrap_or_default();
    let inner = format!(
        "<h1>Sign in with your organisation</h1>{note}\
         <form method=\"get\" action=\"start\"><label for=\"email\">Your work or school email</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required autofocus>\
         <button type=\"submit\">Continue</button></form>"
    );
    page::layout(
        StatusCode::OK,
        "Sign in with your organisation",
        &inner,
        page::Forms::Gateway,
    )
}

/// The cookie naming the browser a sign-in started in: one value per browser, kept across
/// sign-ins so two tabs do not undo each other, on `/sso` only. Over HTTPS it is
/// `SameSite=None; Secure`, because the SAML IdP brings the browser back with a cross-site
/// POST; plain HTTP (development) cannot carry such a cookie, so there it is `Lax`.
pub fn browser_cookie(state: &AppState) -> binding::Cookie {
    binding::Cookie {
        name: "pgw_sso".into(),
        path: "/sso",
        max_age_secs: state.config.sso.state_ttl_secs.max(60) * 6,
        site: binding::Site::for_base(
            &state.config.http.public_base(),
            binding::Site::CrossSitePost,
        ),
    }
}

async fn start(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query(raw);
    let found = if let Some(org) = q.get("organisation").filter(|s| !s.is_empty()) {
        match pick_organisation(&state, org).await {
            Ok(found) => found,
            Err(p) => return p.into_response(),
        }
    } else if let Some(email) = q.get("email").filter(|s| !s.trim().is_empty()) {
        match super::lookup::connection_for_email(&state, email).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or(email);
                return ask_email(Some(&format!(
                    "No organisation signs in with {domain} addresses here. Check the address, or ask your administrator for your organisation's sign-in link."
                )));
            }
            Err(e) => {
                return page::internal(format!("finding the connection: {e:#}")).into_response();
            }
        }
    } else {
        return ask_email(None);
    };
    let cookie = browser_cookie(&state);
    let browser = cookie
        .read(&headers)
        .filter(|v| binding::is_secret(v))
        .unwrap_or_else(binding::new_secret);
    match super::login::begin(&state, &found, &browser, false).await {
        Ok(url) => {
            let mut r = page::redirect(&url);
            if let Some(v) = cookie.set(&browser) {
                r.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
            page::deny_framing(r)
        }
        Err(p) => p.into_response(),
    }
}

/// `?organisation=` names a connection, or a partner with exactly one connection.
async fn pick_organisation(state: &AppState, org: &str) -> Result<Found, Page> {
    let lookup = |e: anyhow::Error| page::internal(format!("finding the connection: {e:#}"));
    if let Some(found) = super::lookup::connection(state, org)
        .await
        .map_err(lookup)?
    {
        return Ok(found);
    }
    if let Some(p) = state.config.partner(org) {
        let mut conns = super::lookup::partner_connections(state, &p.id)
            .await
            .map_err(lookup)?;
        match conns.len() {
            1 => return Ok(conns.remove(0)),
            0 => {}
            _ => {
                return Err(
                    Page::new(StatusCode::BAD_REQUEST, "Choose a sign-in connection").line(
                        format!(
                            "{} has several sign-in connections ({}); the link must name one.",
                            p.name,
                            conns
                                .iter()
                                .map(|c| c.conn.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                );
            }
        }
    }
    Err(
        Page::new(StatusCode::NOT_FOUND, "Unknown organisation").line(format!(
            "No organisation {org:?} signs in through this gateway."
        )),
    )
}

async fn callback(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let browser = browser_cookie(&state).read(&headers);
    let flow = super::login::complete(&state, query(raw), browser.as_deref());
    match crate::telemetry::metrics::counted("oidc", flow).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

/// The SP metadata an IdP administrator loads (or copies the entity id and ACS URL from).
async fn saml_metadata(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let found = match super::lookup::connection(&state, &id).await {
        Ok(Some(f)) if f.conn.protocol == Protocol::Saml => f,
        Ok(_) => {
            return Page::new(StatusCode::NOT_FOUND, "Unknown SAML connection")
                .line(format!(
                    "No SAML connection {id:?} signs in through this gateway."
                ))
                .into_response();
        }
        Err(e) => return page::internal(format!("finding the connection: {e:#}")).into_response(),
    };
    let keys = match super::lookup::sp_keys(&state).await {
        Ok(k) => k,
        Err(e) => return page::internal(format!("loading the SAML SP key: {e:#}")).into_response(),
    };
    let c = &found.conn;
    let xml = super::saml::sp_metadata(
        &super::saml_entity_id(&state.config, c),
        &super::saml_acs_url(&state.config, &c.id),
        &keys,
        c.sign_authn_requests,
        c.name_id_format.as_deref(),
        &found.organisation(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/samlmetadata+xml",
        )],
        xml,
    )
        .into_response()
}

async fn saml_acs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let browser = browser_cookie(&state).read(&headers);
    let flow = super::login::complete_saml(&state, &id, form, browser.as_deref());
    match crate::telemetry::metrics::counted("saml", flow).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}
