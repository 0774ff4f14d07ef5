//! Browser routes of the SMART client (`/smart/...`) and the app's routes that use a
//! launch (`/v1/launches/{id}/fhir/...`, `/v1/launches/{id}/patient`) or a partner's
//! Backend Services client (`/v1/partners/{partner}/fhir/...`). Handlers stay thin: the
//! work is in `launch`, `proxy`, `patient` and `backend`.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::launch::{self, CallbackParams};
use crate::http::page::{Page, redirect};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .route("/smart/launch", get(ehr_launch))
        .route("/smart/callback", get(callback))
        .route("/smart/{partner}/start", get(standalone_launch))
        .routes(routes!(super::patient::summary))
        // A FHIR path has slashes, which an OpenAPI path parameter cannot: the proxies are
        // served on axum wildcards and described by ProxyDoc with `{path}`.
        .route(
            "/v1/launches/{launch_id}/fhir/{*path}",
            any(super::proxy::launch_proxy),
        )
        .route(
            "/v1/partners/{partner}/fhir/{*path}",
            any(super::backend::partner_proxy),
        );
    router
        .get_openapi_mut()
        .merge(<ProxyDoc as utoipa::OpenApi>::openapi());
    // An EHR may show the launch (and so its error pages) in its own page.
    router.route_layer(axum::middleware::map_response(
        crate::http::page::partner_frames,
    ))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(super::proxy::launch_proxy, super::backend::partner_proxy))]
struct ProxyDoc;

/// Query parameters; the first of a repeated name wins.
fn params(raw: Option<String>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// `GET /smart/launch?iss=...&launch=...`: the EHR opened the app.
async fn ehr_launch(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = params(raw);
    let Some(iss) = q.get("iss").filter(|s| !s.is_empty()) else {
        return Page::new(
            StatusCode::BAD_REQUEST,
            "This launch is missing its EHR address",
        )
        .line("An EHR launch must carry iss (the FHIR server) and launch parameters.")
        .into_response();
    };
    let Some(launch_param) = q.get("launch").filter(|s| !s.is_empty()) else {
        return Page::new(
            StatusCode::BAD_REQUEST,
            "This launch is missing its launch context",
        )
        .line(format!(
            "The EHR at {iss} opened the app without a launch parameter."
        ))
        .into_response();
    };
    let Some((partner, reg)) = launch::partner_for_issuer(&state, iss) else {
        tracing::warn!(%iss, "EHR launch from an unregistered issuer");
        return Page::new(StatusCode::BAD_REQUEST, "This EHR is not registered with the gateway")
            .line(format!("The launch came from {iss}, which no partner has registered."))
            .line("If your organisation should have access, ask your EHR administrator to contact us with this address.")
            .into_response();
    };
    started(launch::begin(&state, partner, reg, iss, Some(launch_param)).await)
}

/// `GET /smart/{partner}/start[?iss=...]`: the user opened the app outside the EHR.
async fn standalone_launch(
    State(state): State<AppState>,
    Path(partner_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = params(raw);
    let Some((partner, reg)) = state
        .config
        .partner(&partner_id)
        .and_then(|p| p.smart.as_ref().map(|r| (p, r)))
    else {
        return Page::new(StatusCode::NOT_FOUND, "No such EHR")
            .line(format!(
                "The gateway has no SMART registration for {partner_id:?}."
            ))
            .into_response();
    };
    let iss = match (q.get("iss"), reg.issuers.as_slice()) {
        (Some(iss), _) => match reg.issuer(iss) {
            Some(i) => i.to_owned(),
            None => {
                return Page::new(
                    StatusCode::BAD_REQUEST,
                    "This EHR address is not registered",
                )
                .line(format!(
                    "{iss} is not one of {}'s FHIR servers.",
                    partner.name
                ))
                .into_response();
            }
        },
        (None, [only]) => only.clone(),
        (None, several) => {
            let mut page = Page::new(StatusCode::BAD_REQUEST, "Choose your EHR").line(format!(
                "{} has several FHIR servers; add ?iss= with one of:",
                partner.name
            ));
            for i in several {
                page = page.line(i.clone());
            }
            return page.into_response();
        }
    };
    started(launch::begin(&state, partner, reg, &iss, None).await)
}

/// The redirect to the EHR's authorize endpoint, setting the state's binding cookie.
fn started(result: Result<launch::Started, Page>) -> Response {
    match result {
        Ok(started) => {
            let mut resp = redirect(&started.url);
            if let Some(cookie) = started.cookie {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
            resp
        }
        Err(page) => page.into_response(),
    }
}

/// `GET /smart/callback`: the EHR sends the browser back with a code (or an error)
/// (SMART App Launch 2.x, <https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code>).
async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut q = params(raw);
    let params = CallbackParams {
        code: q.remove("code"),
        state: q.remove("state"),
        error: q.remove("error"),
        error_description: q.remove("error_description"),
        error_uri: q.remove("error_uri"),
    };
    // The binding cookie has done its work once the state is spent (or cannot be).
    let clear = params
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| launch::binding_cookie(&state, &crate::launches::hash_code(s)).clear());
    let flow = launch::complete(&state, params, &headers);
    let result = crate::telemetry::metrics::counted("smart", flow).await;
    let mut resp = match result {
        Ok(url) => redirect(&url),
        Err(page) => page.into_response(),
    };
    if let Some(c) = clear {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}
