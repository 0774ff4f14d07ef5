//! The authorization endpoint (RFC 6749 §4.1.1, SMART App Launch 2.2 §"Obtain authorization
//! code"). There is no login or consent page: the request is checked and, if sound,
//! approved at once for the launch's user (EHR launch) or the mock's default practitioner
//! (standalone launch).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::{
    AuthCode, CODE_TTL_SECS, Fault, Grant, LaunchContext, MockClient, Shared, Vendor, html_page,
    lock, now_secs, parse_form, random_token, single,
};

/// The authorize parameters that must not repeat (RFC 6749 §3.1).
const SINGLE_VALUED: [&str; 9] = [
    "response_type",
    "scope",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "launch",
    "nonce",
    "prompt",
];

pub(super) async fn authorize(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // SMART's authorize-post: the same parameters as a form body.
    let params = if method == Method::POST {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return bad_request("An authorize POST must be application/x-www-form-urlencoded.");
        }
        parse_form(&body)
    } else {
        parse_form(uri.query().unwrap_or("").as_bytes())
    };

    // Until the client and its redirect_uri check out, errors go to the user agent, never
    // to the redirect_uri (RFC 6749 §4.1.2.1): an open redirector otherwise.
    let client = match single(&params, "client_id") {
        Ok(Some(id)) => match s.clients.get(id) {
            Some(client) => client,
            None => return bad_request("Unknown client_id: no application is registered with it."),
        },
        Ok(None) => return bad_request("The request has no client_id."),
        Err(_) => return bad_request("client_id appears more than once."),
    };
    let redirect_uri = match single(&params, "redirect_uri") {
        Ok(Some(uri)) if client.redirect_uris.iter().any(|r| r == uri) => uri,
        Ok(Some(_)) => {
            return bad_request("redirect_uri does not match any URI registered for this client.");
        }
        Ok(None) => return bad_request("The request has no redirect_uri."),
        Err(_) => return bad_request("redirect_uri appears more than once."),
    };
    let Ok(redirect) = Url::parse(redirect_uri) else {
        return bad_request("The registered redirect_uri is not an absolute URL.");
    };

    let state = single(&params, "state").ok().flatten();
    let fail =
        |error: &str, description: &str| error_redirect(&redirect, error, description, state);

    if let Some(name) = SINGLE_VALUED
        .into_iter()
        .find(|&name| single(&params, name).is_err())
    {
        return fail("invalid_request", &format!("{name} appears more than once"));
    }
    let param = |name: &'static str| single(&params, name).ok().flatten();

    match param("response_type") {
        Some("code") => {}
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is supported",
            );
        }
        None => return fail("invalid_request", "response_type is required"),
    }
    if state.is_none_or(str::is_empty) {
        return fail("invalid_request", "state is required");
    }
    match param("aud") {
        None | Some("") => return fail("invalid_request", "aud is required: the FHIR base URL"),
        Some(aud) if aud != s.iss => {
            return fail(
                "invalid_request",
                "aud does not match this server's FHIR base URL",
            );
        }
        Some(_) => {}
    }
    let code_challenge = match param("code_challenge") {
        Some(c) if !c.is_empty() => c,
        _ => return fail("invalid_request", "code_challenge is required (PKCE)"),
    };
    match param("code_challenge_method") {
        Some("S256") => {}
        Some(_) => return fail("invalid_request", "code_challenge_method must be S256"),
        None => {
            // RFC 7636 would default to plain, which SMART forbids.
            return fail(
                "invalid_request",
                "code_challenge_method is required and must be S256",
            );
        }
    }
    // An S256 challenge is a base64url SHA-256: 43 characters.
    if code_challenge.len() != 43
        || !code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail(
            "invalid_request",
            "code_challenge is not a base64url SHA-256 digest",
        );
    }

    let launch = param("launch").filter(|l| !l.is_empty());
    let launch_ctx = match launch {
        Some(id) => match launch_context(&s, id) {
            Some(ctx) => Some(ctx),
            None => {
                return fail(
                    "invalid_request",
                    "launch is unknown, expired or already used",
                );
            }
        },
        None => None,
    };

    let requested = param("scope").unwrap_or("");
    if requested.trim().is_empty() {
        return fail("invalid_scope", "scope is required");
    }
    let scopes = grant_scopes(s.vendor, client, requested, launch.is_some());
    if scopes.is_empty() {
        return fail(
            "invalid_scope",
            "none of the requested scopes can be granted",
        );
    }

    if s.take_fault(|f| (*f == Fault::DenyAuthorize).then_some(()))
        .is_some()
    {
        if let Some(id) = launch {
            mark_launch_used(&s, id);
        }
        return fail(
            "access_denied",
            "The user declined to authorize the application.",
        );
    }

    let ehr_launch = launch_ctx.is_some();
    let ctx = launch_ctx.unwrap_or_default();
    let has = |scope: &str| scopes.iter().any(|s| s == scope);
    let patient = match ctx.patient {
        Some(p) => Some(p),
        // Standalone: the mock's "patient picker" always picks the default patient.
        None if has("launch/patient") => Some(s.default_patient.clone()),
        None => None,
    };
    let user = if ctx.user.is_empty() {
        s.default_practitioner.clone()
    } else {
        ctx.user
    };
    let smart_style_url = ctx.smart_style_url.or_else(|| match s.vendor {
        // Epic and Oracle always send a style; a generic server only when it has one.
        Vendor::Epic | Vendor::Oracle => Some(s.url(&s.paths.style)),
        Vendor::Generic => None,
    });

    let code = random_token();
    {
        let mut auth = lock(&s.auth);
        if let Some(id) = launch {
            // Re-checked under the lock: two racing requests must not share one launch.
            match auth.launches.get_mut(id) {
                Some(l) if !l.used => l.used = true,
                _ => {
                    return fail(
                        "invalid_request",
                        "launch is unknown, expired or already used",
                    );
                }
            }
        }
        let now = now_secs();
        auth.codes.retain(|_, c| c.expires_at > now);
        auth.next_family += 1;
        let family = auth.next_family;
        auth.codes.insert(
            code.clone(),
            AuthCode {
                grant: Grant {
                    client_id: client.client_id.clone(),
                    scopes,
                    patient,
                    encounter: ctx.encounter,
                    user: Some(user),
                    fhir_context: ctx.fhir_context,
                    intent: ctx.intent,
                    // A standalone app has no EHR chrome around it to show the patient.
                    need_patient_banner: if ehr_launch {
                        ctx.need_patient_banner
                    } else {
                        true
                    },
                    smart_style_url,
                    family,
                },
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: code_challenge.to_owned(),
                state: state.unwrap_or_default().to_owned(),
                nonce: param("nonce").map(str::to_owned),
                expires_at: now + CODE_TTL_SECS,
                used: false,
            },
        );
    }
    let mut target = redirect;
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state.unwrap_or_default());
    found(&target)
}

/// The launch's context if it is known, unexpired and unused.
fn launch_context(s: &Shared, id: &str) -> Option<LaunchContext> {
    let auth = lock(&s.auth);
    let launch = auth.launches.get(id)?;
    (!launch.used && launch.expires_at > now_secs()).then(|| launch.ctx.clone())
}

fn mark_launch_used(s: &Shared, id: &str) {
    if let Some(launch) = lock(&s.auth).launches.get_mut(id) {
        launch.used = true;
    }
}

/// The scopes granted for a request: the requested ones the mock can grant, in request order.
pub(super) fn grant_scopes(
    vendor: Vendor,
    client: &MockClient,
    requested: &str,
    ehr_launch: bool,
) -> Vec<String> {
    let mut granted: Vec<String> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if granted.iter().any(|g| g == scope) {
            continue;
        }
        let keep = match scope {
            "openid" | "fhirUser" | "profile" | "offline_access" | "online_access"
            | "launch/patient" | "launch/encounter" => true,
            // Without a launch parameter there is no EHR context to grant.
            "launch" => ehr_launch,
            _ => match ClinicalScope::parse(scope) {
                // System scopes come only from Backend Services (client_credentials).
                Some(c) if c.context == "system" => false,
                // Oracle: an app registered for v2 scopes loses the v1 ones it asks for.
                Some(c) if c.v1 && vendor == Vendor::Oracle && client.v2_scopes => false,
                Some(_) => true,
                None => false,
            },
        };
        if keep {
            granted.push(scope.to_owned());
        }
    }
    granted
}

/// A SMART clinical scope: `context/Resource.permissions[?query]`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ClinicalScope<'a> {
    pub context: &'a str,
    pub resource: &'a str,
    /// v1 permissions (`read`, `write`, `*`) rather than v2 (`cruds` letters).
    pub v1: bool,
    pub read: bool,
}

impl<'a> ClinicalScope<'a> {
    pub fn parse(scope: &'a str) -> Option<ClinicalScope<'a>> {
        let (context, rest) = scope.split_once('/')?;
        if !matches!(context, "patient" | "user" | "system") {
            return None;
        }
        let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
        let (resource, permissions) = rest.split_once('.')?;
        let resource_ok = resource == "*"
            || (resource.starts_with(|c: char| c.is_ascii_uppercase())
                && resource.chars().all(|c| c.is_ascii_alphanumeric()));
        if !resource_ok {
            return None;
        }
        let (v1, read) = match permissions {
            "read" | "*" => (true, true),
            "write" => (true, false),
            p if is_v2_permissions(p) => (false, p.contains('r') || p.contains('s')),
            _ => return None,
        };
        Some(ClinicalScope {
            context,
            resource,
            v1,
            read,
        })
    }
}

/// SMART v2 permissions: a non-empty subsequence of `cruds`, in that order.
fn is_v2_permissions(p: &str) -> bool {
    let mut rest = "cruds";
    !p.is_empty()
        && p.chars().all(|c| match rest.find(c) {
            Some(i) => {
                rest = &rest[i + 1..];
                true
            }
            None => false,
        })
}

fn error_redirect(redirect: &Url, error: &str, description: &str, state: Option<&str>) -> Response {
    let mut target = redirect.clone();
    {
        let mut query = target.query_pairs_mut();
        query
            .append_pair("error", error)
            .append_pair("error_description", description);
        if let Some(state) = state {
            query.append_pair("state", state);
        }
    }
    found(&target)
}

fn found(target: &Url) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, target.as_str()),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    html_page(
        StatusCode::BAD_REQUEST,
        "Authorization request refused",
        message,
    )
}
