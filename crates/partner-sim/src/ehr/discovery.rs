//! Discovery: `{iss}/.well-known/smart-configuration`, the CapabilityStatement at
//! `{iss}/metadata` (with the `oauth-uris` extension), the JWKS, and the small pages a
//! vendor links from its discovery document.
//!
//! Each vendor's document keeps the field set and values of the real one (see
//! `fixtures/smart/`), with the mock's URLs. Differences from the real documents, all
//! deliberate: `issuer` is the FHIR base (what the brief's clients verify id_tokens
//! against; Epic and Oracle publish their authorization server there instead), Epic also
//! lists `token_endpoint_auth_signing_alg_values_supported` and `introspection_endpoint`,
//! and every document carries an `x_mock_ehr` member clients must ignore (RFC 8414 §3).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{DiscoveryMode, Shared, Vendor, html_page, json_bytes};

const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// The SMART configuration for `shared`'s vendor.
pub(super) fn smart_configuration(s: &Shared) -> Value {
    let url = |p: &str| s.url(p);
    let mut doc = match s.vendor {
        // Epic's document (fhir.epic.com and customer instances alike): no signing-alg list,
        // a short scopes_supported, and the jwt-bearer and token-exchange grants.
        Vendor::Epic => json!({
            "authorization_endpoint": url(&s.paths.authorize),
            "token_endpoint": url(&s.paths.token),
            "token_endpoint_auth_methods_supported":
                ["client_secret_post", "client_secret_basic", "private_key_jwt"],
            "scopes_supported": ["epic.scanning.dmsusername", "fhirUser", "launch", "openid", "profile"],
            "response_types_supported": ["code"],
            "capabilities": [
                "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "context-banner", "context-style",
                "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
                "permission-offline", "permission-patient", "permission-user", "permission-v1",
                "permission-v2", "sso-openid-connect", "authorize-post"
            ],
            "grant_types_supported": [
                "authorization_code", "refresh_token", "client_credentials",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ],
            "code_challenge_methods_supported": ["S256"],
            "issuer": s.iss,
            "jwks_uri": url(&s.paths.jwks),
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "introspection_endpoint": s.paths.introspect.as_deref().map(url),
        }),
        // Oracle Health's provider persona: refresh_token is missing from
        // grant_types_supported although refresh works, public clients are not listed in
        // the auth methods although they exist, and there is no context-standalone-patient.
        Vendor::Oracle => json!({
            "issuer": s.iss,
            "authorization_endpoint": url(&s.paths.authorize),
            "token_endpoint": url(&s.paths.token),
            "revocation_endpoint": s.paths.revoke.as_deref().map(url),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "jwks_uri": url(&s.paths.jwks),
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "scopes_supported": oracle_scopes(),
            "response_types_supported": ["code"],
            "management_endpoint": s.paths.manage.as_deref().map(url),
            "introspection_endpoint": s.paths.introspect.as_deref().map(url),
            "capabilities": [
                "authorize-post", "launch-ehr", "launch-standalone", "client-public",
                "client-confidential-asymmetric", "client-confidential-symmetric",
                "sso-openid-connect", "context-banner", "context-style", "context-ehr-patient",
                "context-ehr-encounter", "permission-patient", "permission-user",
                "permission-offline", "permission-online", "permission-v1", "permission-v2",
                "health-cards"
            ],
            "code_challenge_methods_supported": ["S256"],
        }),
        // A by-the-book SMART 2.2 server.
        Vendor::Generic => json!({
            "issuer": s.iss,
            "jwks_uri": url(&s.paths.jwks),
            "authorization_endpoint": url(&s.paths.authorize),
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint": url(&s.paths.token),
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": [
                "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                "offline_access", "online_access", "patient/*.rs", "user/*.rs", "system/*.rs",
                "patient/*.read", "user/*.read", "system/*.read", "patient/Observation.cruds",
                "user/Observation.cruds", "system/Observation.cruds"
            ],
            "response_types_supported": ["code"],
            "introspection_endpoint": s.paths.introspect.as_deref().map(url),
            "revocation_endpoint": s.paths.revoke.as_deref().map(url),
            "code_challenge_methods_supported": ["S256"],
            "capabilities": [
                "launch-ehr", "launch-standalone", "authorize-post", "client-public",
                "client-confidential-symmetric", "client-confidential-asymmetric",
                "context-passthrough-banner", "context-passthrough-style", "context-ehr-patient",
                "context-ehr-encounter", "context-standalone-patient", "permission-offline",
                "permission-online", "permission-patient", "permission-user", "permission-v1",
                "permission-v2", "sso-openid-connect"
            ],
        }),
    };
    if let Value::Object(map) = &mut doc {
        // Optional endpoints a vendor lacks come out as null above; drop them.
        map.retain(|_, v| !v.is_null());
        map.insert(
            "x_mock_ehr".into(),
            json!({
                "vendor": s.vendor.as_str(),
                "note": "partner-gateway mock EHR; clients must ignore members they do not know"
            }),
        );
    }
    doc
}

/// A representative slice of Oracle's 303 scopes: v1 and v2 forms side by side.
fn oracle_scopes() -> Vec<String> {
    let mut scopes: Vec<String> = [
        "fhirUser",
        "launch",
        "offline_access",
        "online_access",
        "openid",
        "profile",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for (resource, v2) in [
        ("Binary", "r"),
        ("Encounter", "crus"),
        ("Observation", "crus"),
        ("Patient", "crus"),
        ("Practitioner", "crs"),
    ] {
        for context in ["patient", "system", "user"] {
            if context == "patient" && resource == "Practitioner" {
                continue;
            }
            scopes.push(format!("{context}/{resource}.read"));
            scopes.push(format!("{context}/{resource}.{v2}"));
            if v2.contains('c') || v2.contains('u') {
                scopes.push(format!("{context}/{resource}.write"));
            }
        }
    }
    scopes.sort();
    scopes
}

/// The CapabilityStatement, with the endpoints in `rest[0].security`'s `oauth-uris`.
pub(super) fn capability_statement(s: &Shared) -> Value {
    let uri = |name: &str, path: &str| json!({ "url": name, "valueUri": s.url(path) });
    let mut oauth = Vec::new();
    match s.vendor {
        // Epic lists only authorize and token.
        Vendor::Epic => {
            oauth.push(uri("authorize", &s.paths.authorize));
            oauth.push(uri("token", &s.paths.token));
        }
        // Oracle lists everything, token first.
        Vendor::Oracle | Vendor::Generic => {
            oauth.push(uri("token", &s.paths.token));
            if let Some(p) = &s.paths.revoke {
                oauth.push(uri("revoke", p));
            }
            oauth.push(uri("authorize", &s.paths.authorize));
            if let Some(p) = &s.paths.manage {
                oauth.push(uri("manage", p));
            }
            if let Some(p) = &s.paths.introspect {
                oauth.push(uri("introspect", p));
            }
        }
    }
    let (name, publisher, description) = match s.vendor {
        Vendor::Epic => (
            "EpicCapabilityStatement",
            "Epic",
            "FHIR Sandbox FHIR Server",
        ),
        Vendor::Oracle => (
            "OracleHealthCapabilityStatement",
            "Oracle Health",
            "Oracle Health implementation of FHIR on top of Millennium",
        ),
        Vendor::Generic => ("MockEhrCapabilityStatement", "partner-gateway", "Mock EHR"),
    };
    let read_search = json!([{ "code": "read" }, { "code": "search-type" }]);
    json!({
        "resourceType": "CapabilityStatement",
        "url": format!("{}/metadata", s.iss),
        "name": name,
        "status": "active",
        "date": "2026-01-01",
        "publisher": publisher,
        "description": description,
        "kind": "instance",
        "implementation": { "description": description, "url": s.iss },
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "extension": [{ "url": OAUTH_URIS, "extension": oauth }],
                "cors": true,
                "service": [{
                    "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR"
                    }],
                    "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org/)."
                }],
                "description": "OAuth2 plus SMART extensions"
            },
            "resource": [
                { "type": "Patient", "interaction": read_search },
                { "type": "Practitioner", "interaction": [{ "code": "read" }] },
                {
                    "type": "Observation",
                    "interaction": [
                        { "code": "read" }, { "code": "search-type" }, { "code": "create" },
                        { "code": "update" }, { "code": "patch" }, { "code": "delete" }
                    ],
                    "updateCreate": true
                },
                { "type": "Binary", "interaction": [{ "code": "read" }] }
            ]
        }]
    })
}

/// The SMART configuration: plain JSON whatever the Accept header asks, as the vendors serve it.
pub(super) async fn well_known(State(s): State<Arc<Shared>>) -> Response {
    if s.discovery == DiscoveryMode::MetadataOnly {
        return super::fhir::outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "this server publishes its endpoints only in the CapabilityStatement (GET metadata)",
        );
    }
    json_bytes(
        StatusCode::OK,
        "application/json",
        s.smart_configuration.clone(),
    )
}

pub(super) async fn metadata(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(response) = super::fhir::unacceptable_version(&headers) {
        return response;
    }
    json_bytes(
        StatusCode::OK,
        super::fhir::FHIR_JSON,
        s.capability_statement.clone(),
    )
}

pub(super) async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    let mut response = json_bytes(StatusCode::OK, "application/json", s.jwks.clone());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The style document a launch's `smart_style_url` points at by default.
pub(super) async fn smart_style() -> Response {
    axum::Json(json!({
        "color_background": "#edeae3",
        "color_error": "#9e2d2d",
        "color_highlight": "#69b5ce",
        "color_modal_backdrop": "",
        "color_success": "#498e49",
        "color_text": "#303030",
        "dim_border_radius": "6px",
        "dim_font_size": "13px",
        "dim_spacing_size": "20px",
        "font_family_body": "Georgia, Times, 'Times New Roman', serif",
        "font_family_heading": "'HelveticaNeue-Light', Helvetica, Arial, 'Lucida Grande', sans-serif"
    }))
    .into_response()
}

/// Oracle's `management_endpoint`: where a user would review the apps they authorized.
pub(super) async fn manage() -> Response {
    html_page(
        StatusCode::OK,
        "My authorizations",
        "The mock EHR approves every request automatically; there is nothing to manage here.",
    )
}
