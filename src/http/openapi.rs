//! The API contract: an OpenAPI 3.1 document generated from the handlers' `#[utoipa::path]`
//! attributes and the request/response types' `ToSchema` derives. Each area registers its
//! `/v1` routes through `utoipa_axum::routes!`, which takes the path from the same attribute
//! the document does, so a route cannot be served without being described. Served at
//! `/openapi.json`; `/docs` renders it with Swagger UI from assets inside the binary.

use std::collections::BTreeMap;

use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi as _};
use utoipa_swagger_ui::SwaggerUi;

use crate::http::error::{ErrorBody, FieldError};
use crate::state::AppState;

/// The document's fixed parts; the paths come from the areas' routers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "partner-gateway",
        description = "The integration gateway between the company's product and its partners' systems: \
EHR launches (SMART on FHIR) and the FHIR proxy, LMS launches (LTI 1.3) with grades and rosters, \
single sign-on, webhooks, the per-partner usage ledger and revenue-share statements.\n\n\
Every `/v1` call carries an API key: `Authorization: Bearer <key>`. A key has one role \
(admin, finance, partner, app); each operation lists the roles it accepts as its security \
requirements, and a partner key acts only for its own partner. Errors are JSON: \
`{\"code\": \"...\", \"detail\": \"...\", \"errors\": [...]}`, where `code` is stable and \
`detail` says what is wrong; a query, path or body the server cannot read is 400 \
`invalid_query`, `invalid_path` or `invalid_body`.\n\n\
Conventions: every list answers `{\"data\": [...], \"next_cursor\": ...}`; pass \
`next_cursor` back as `cursor` for the next page (`limit` 1 to 1000, default 100). Instants \
are RFC 3339 in UTC with `Z` and six fraction digits. Ids carry a type prefix (`lch_` \
launch, `scr_` score, `stmt_` statement, ...); the field naming a partner is `partner`. \
Send `Idempotency-Key` with any changing request to make its retry safe: a repeat gets the \
first answer (`Idempotent-Replayed: true`).\n\n\
Sandbox partners (`partner-gateway sandbox`, or `sandbox = true` in config) are test \
partners: every response made by their keys or for their launches carries \
`X-Gateway-Sandbox: true`, launch contexts and usage answers say `\"sandbox\": true`, and \
they never get statements.",
        license(name = "Proprietary"),
    ),
    components(
        schemas(ErrorBody, FieldError),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            Unprocessable,
            PayloadTooLarge,
            UnsupportedMediaType,
            Gone,
            WrongLaunch,
            BadGateway,
            IdempotencyKeyInvalid,
            IdempotencyKeyInUse,
            IdempotencyKeyReused
        )
    ),
    modifiers(&Roles),
    tags(
        (name = "partners", description = "The partners the gateway integrates with (from config)."),
        (name = "usage", description = "The usage ledger: CloudEvents ingest and meter queries."),
        (name = "launches", description = "Launch handoff to the app and the launch context."),
        (name = "smart", description = "Calls to an EHR on a launch's behalf: the FHIR proxy."),
        (name = "lti", description = "Calls to an LMS on a launch's behalf: grades, line items, rosters, deep linking; dynamic registrations."),
        (name = "sso", description = "Single-sign-on connections created at runtime."),
        (name = "webhooks", description = "Outbound webhook endpoints, messages, attempts and replay."),
        (name = "statements", description = "Revenue-share statements for finance."),
        (name = "jobs", description = "The durable job queue, for operators."),
        (name = "privacy", description = "Everything held about a person: export and erasure, for admins; each request is audited."),
    )
)]
pub struct ApiDoc;

/// The security scheme of each key role: the same bearer header, told apart by the role the
/// key was created with (`api-keys create --role ...`).
pub const ADMIN: &str = "admin_key";
pub const FINANCE: &str = "finance_key";
pub const PARTNER: &str = "partner_key";
pub const APP: &str = "app_key";

struct Roles;

impl Modify for Roles {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, about) in [
            (
                ADMIN,
                "An admin key: operators (partners, jobs, webhooks endpoints, SSO connections, registrations).",
            ),
            (
                FINANCE,
                "A finance key: statements and the usage of every partner.",
            ),
            (
                PARTNER,
                "A partner key: acts only for its own partner (its usage, its webhooks, its launches).",
            ),
            (
                APP,
                "An app key: the company's product back end (launch exchange, calls on a launch's behalf).",
            ),
        ] {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(about.to_owned());
            components.add_security_scheme(name, SecurityScheme::Http(http));
        }
    }
}

/// A reusable error response whose body is [`ErrorBody`].
/// Each with an example of its own status (not one error for every response in `/docs`).
macro_rules! error_response {
    ($name:ident, $description:literal, $example:expr) => {
        pub struct $name;

        impl<'s> utoipa::ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_body($description, $example))
            }
        }
    };
}

fn error_body(description: &str, example: serde_json::Value) -> RefOr<Response> {
    let content = utoipa::openapi::ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "ErrorBody",
        ))))
        .example(Some(example))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .into()
}

/// JSON content whose schema is [`ErrorBody`].
fn error_content() -> Content {
    Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
        "ErrorBody",
    ))))
}

error_response!(
    BadRequest,
    "The request is malformed: `code` names the kind (invalid_body, invalid_query, validation_failed, ...) and `detail` what is wrong; `errors` lists per-field problems.",
    serde_json::json!({"code": "validation_failed", "detail": "the score is invalid; nothing was stored", "errors": [{"field": "scoreMaximum", "reason": "required with scoreGiven"}]})
);
error_response!(
    Unauthorized,
    "No `Authorization: Bearer <key>` header, or the key is unknown or revoked.",
    serde_json::json!({"code": "unauthorized", "detail": "missing Authorization: Bearer <api key> header"})
);
error_response!(
    Forbidden,
    "The key's role may not do this, or the request names a partner the key does not belong to (another partner's object is 404).",
    serde_json::json!({"code": "forbidden", "detail": "this needs a key with role admin or finance; this key's role is partner"})
);
error_response!(
    NotFound,
    "The named object does not exist.",
    serde_json::json!({"code": "not_found", "detail": "no statement \"stmt_0193e4c35a2b7e11b0c49f8e7d6c5b4a\""})
);
error_response!(
    Conflict,
    "The object's state does not allow this (already exists, already finalized, not dead).",
    serde_json::json!({"code": "conflict", "detail": "statement stmt_0193e4c35a2b7e11b0c49f8e7d6c5b4a is finalized, not a draft"})
);
error_response!(
    Unprocessable,
    "Well-formed, but it cannot be done with what is there; `code` says why.",
    serde_json::json!({"code": "no_agreement", "detail": "no agreement of partner \"epic-sandbox\" covers 2025-12"})
);
error_response!(
    PayloadTooLarge,
    "The body is larger than the gateway accepts (`http.body_limit_bytes`).",
    serde_json::json!({"code": "payload_too_large", "detail": "the body is larger than 4194304 bytes"})
);
error_response!(
    UnsupportedMediaType,
    "The body's content type is not one this operation accepts.",
    serde_json::json!({"code": "unsupported_media_type", "detail": "the body must be application/json"})
);
error_response!(
    Gone,
    "The launch has expired; the user must launch again.",
    serde_json::json!({"code": "gone", "detail": "launch lch_0193e4c18f7a7d2e9a413c5b2f1e0d9a expired at 2026-11-02T10:15:00.000000Z; the user must launch again"})
);
error_response!(
    WrongLaunch,
    "The launch is not of the kind this needs (an LTI operation on a SMART launch, FHIR on an LTI launch, LTI 1.1 outcomes on an LTI 1.3 launch, a Deep Linking answer for a resource link launch), or lacks what it needs (a patient in context, a service the platform did not offer).",
    serde_json::json!({"code": "conflict", "detail": "launch lch_0193e4c18f7a7d2e9a413c5b2f1e0d9a is a lti launch; only SMART launches have a FHIR server"})
);
error_response!(
    BadGateway,
    "The partner system failed or refused what the gateway asked of it; `code` and `detail` say how.",
    serde_json::json!({"code": "ehr_refresh_failed", "detail": "the EHR's token endpoint answered 503"})
);

error_response!(
    IdempotencyKeyInvalid,
    "The `Idempotency-Key` header is not 1 to 255 visible ASCII characters.",
    serde_json::json!({"code": "invalid_idempotency_key", "detail": "Idempotency-Key must be 1 to 255 visible ASCII characters"})
);
error_response!(
    IdempotencyKeyInUse,
    "A request with this `Idempotency-Key` is still being answered; retry after it ends.",
    serde_json::json!({"code": "idempotency_key_in_use", "detail": "a request with this Idempotency-Key is still running; retry when it has answered"})
);
error_response!(
    IdempotencyKeyReused,
    "This `Idempotency-Key` was used for a different request (method, path or body) by this API key.",
    serde_json::json!({"code": "idempotency_key_reused", "detail": "this Idempotency-Key was used for another request (POST /v1/statements/stmt_0193e4c35a2b7e11b0c49f8e7d6c5b4a/adjustments with another body); use a new key"})
);

/// The header every non-GET operation takes (`crate::http::idempotency`).
fn idempotency_header() -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(
            "Makes a retry safe: the first answer (status and body) is kept for 24 hours \
             (`http.idempotency_ttl_secs`) under this key and the calling API key; a repeat with \
             the same method, path and body gets it again with `Idempotent-Replayed: true` and \
             does nothing twice. A UUID per logical operation is a good key.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[!-~]+$"))
                .examples([serde_json::json!("8e03978e-40d5-43e8-bc93-6894a57f9324")]),
        ))
        .build()
}

fn response_ref(name: &str) -> RefOr<Response> {
    RefOr::Ref(utoipa::openapi::Ref::from_response_name(name))
}

/// The errors of every call on a launch's behalf: a key of the wrong role (403), no such
/// launch or another partner's (404), a launch of the wrong kind (409), an expired launch
/// (410).
pub struct LaunchErrors;

impl utoipa::IntoResponses for LaunchErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("403", "Forbidden"),
            ("404", "NotFound"),
            ("409", "WrongLaunch"),
            ("410", "Gone"),
        ]
        .into_iter()
        .map(|(status, name)| (status.to_owned(), response_ref(name)))
        .collect()
    }
}

/// What a FHIR proxy answers: the FHIR server's own status and body, streamed back, or the
/// gateway's JSON error before or instead of the call. 403 and 404 come from either.
pub struct FhirProxyResponses;

impl utoipa::IntoResponses for FhirProxyResponses {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let fhir = || {
            Content::new(Some(RefOr::T(
                utoipa::openapi::schema::Object::new().into(),
            )))
        };
        let either = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", error_content())
                .content("application/fhir+json", fhir())
                .into()
        };
        let passed = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content("application/fhir+json", fhir())
                .into()
        };
        BTreeMap::from([
            (
                "2XX".to_owned(),
                passed("The FHIR server's success, status and body as it answered"),
            ),
            ("400".to_owned(), response_ref("BadRequest")),
            (
                "403".to_owned(),
                either(
                    "The key may not use this (JSON error), or the FHIR server refused (its OperationOutcome)",
                ),
            ),
            (
                "404".to_owned(),
                either(
                    "No such launch or partner (JSON error), or the FHIR server has no such resource (its OperationOutcome)",
                ),
            ),
            ("502".to_owned(), response_ref("BadGateway")),
            (
                "default".to_owned(),
                passed("Any other status is the FHIR server's own, with its body"),
            ),
        ])
    }
}

/// Finish the generated document: every operation that needs a key can answer 401, and an
/// operation served for several methods (the FHIR proxies) gets one operationId per method.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    for item in doc.paths.paths.values_mut() {
        let several = [&item.get, &item.post, &item.put, &item.patch, &item.delete]
            .into_iter()
            .flatten()
            .filter_map(|op| op.operation_id.clone())
            .collect::<Vec<_>>();
        let shared = several.len() > 1 && several.iter().all(|id| *id == several[0]);
        for (method, op) in [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ] {
            let Some(op) = op else { continue };
            if shared && let Some(id) = &op.operation_id {
                op.operation_id = Some(format!("{id}_{method}"));
            }
            if method != "get" {
                op.parameters
                    .get_or_insert_with(Vec::new)
                    .push(idempotency_header());
                // Where the operation has no answer of these statuses of its own, the
                // header's own refusals are its only ones.
                for (status, name) in [
                    ("400", "IdempotencyKeyInvalid"),
                    ("409", "IdempotencyKeyInUse"),
                    ("422", "IdempotencyKeyReused"),
                ] {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| response_ref(name));
                }
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                op.responses
                    .responses
                    .entry("401".to_owned())
                    .or_insert_with(|| {
                        RefOr::Ref(utoipa::openapi::Ref::from_response_name("Unauthorized"))
                    });
            }
        }
    }
    doc
}

/// The document's start: [`ApiDoc`] with the server's version.
pub fn base() -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// `/openapi.json` and `/docs`.
pub fn router(doc: OpenApi) -> Router<AppState> {
    let docs: Router<AppState> = SwaggerUi::new("/docs").url("/openapi.json", doc).into();
    docs.layer(axum::middleware::map_response(docs_policy))
}

/// Swagger UI's page loads its scripts, styles and images from `/docs/` (vendored in the
/// binary) and reads `/openapi.json`; nothing else loads, nothing frames it. The one
/// `<style>` element its bundle (5.17.14) inserts is allowed by its hash (checked in
/// headless Chromium: no other violation); another version's would be dropped, which
/// costs only looks.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

async fn docs_policy(mut resp: axum::response::Response) -> axum::response::Response {
    resp.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(DOCS_CSP),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_route_in_the_source_is_in_the_document() {
        // Routes registered with `routes!` are documented by construction; a plain
        // `.route("/v1...")` (the FHIR proxies' wildcards) must be described some other way.
        let (_, doc) = crate::app::api_routes().split_for_parts();
        let doc = finish(doc);
        let mut missing = Vec::new();
        for file in walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (at, _) in text.match_indices(".route(") {
                let rest = text[at + ".route(".len()..].trim_start();
                let Some(rest) = rest.strip_prefix("\"/v1") else {
                    continue;
                };
                let path = format!("/v1{}", rest.split('"').next().unwrap_or(""));
                let documented = path.replace("{*", "{");
                if !doc.paths.paths.contains_key(&documented) {
                    missing.push(format!("{}: {path}", file.display()));
                }
            }
        }
        assert!(missing.is_empty(), "undocumented /v1 routes: {missing:#?}");
        assert!(doc.paths.paths.len() >= 30, "{:?}", doc.paths.paths.keys());
        let mut ids = std::collections::HashSet::new();
        for (path, item) in &doc.paths.paths {
            assert!(path.starts_with("/v1/"), "{path}");
            for op in operations(item) {
                assert!(
                    op.security.as_ref().is_some_and(|s| !s.is_empty()),
                    "{path} has no security requirement"
                );
                assert!(op.responses.responses.contains_key("401"), "{path}");
                let id = op.operation_id.clone().unwrap_or_default();
                assert!(ids.insert(id.clone()), "operationId {id} twice");
            }
        }
    }

    fn operations(item: &utoipa::openapi::PathItem) -> Vec<&utoipa::openapi::path::Operation> {
        [&item.get, &item.post, &item.put, &item.patch, &item.delete]
            .into_iter()
            .flatten()
            .collect()
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        // Everything under src/ but this file (its test names the pattern it looks for).
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.extend(walk(&p));
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("openapi.rs") {
                    out.push(p);
                }
            }
        }
        out
    }
}
