//! The FHIR R4 resource server under `{iss}/`: bearer tokens checked on every request,
//! `application/fhir+json` in and out, a loose patient compartment for patient-scoped
//! tokens, and `fhirVersion` content negotiation (Oracle answers 406 to a version it does
//! not serve).
//!
//! Reads are on the benchmarked path: the token lookup clones an `Arc`, the resource is
//! pre-serialized, and only the request record allocates.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::data::{LARGE_BINARY_LEN, Stored, large_binary};
use super::{
    AccessToken, FHIR_LOG_CAP, RecordedFhirRequest, Shared, json_bytes, json_patch, lock, now_secs,
};

pub(super) const FHIR_JSON: &str = "application/fhir+json";

/// Chunk size of the streamed `Binary/large`.
const BINARY_CHUNK: usize = 64 * 1024;

pub(super) async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let chunked = s.fhir_chunked && method != Method::HEAD;
    let resp = answer(s, method, uri, headers, body).await;
    let bodiless = matches!(
        resp.status(),
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    );
    if chunked && !bodiless {
        rechunk(resp).await
    } else {
        resp
    }
}

/// The answer with its body as a stream of unknown length, which hyper sends chunked (the
/// body ends with its own, separate, closing chunk: what stalls a peer without
/// `TCP_NODELAY`).
async fn rechunk(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let once: Vec<Result<Bytes, std::convert::Infallible>> = vec![Ok(bytes)];
    Response::from_parts(parts, Body::from_stream(futures_util::stream::iter(once)))
}

async fn answer(
    s: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !s.fhir_latency.is_zero() {
        tokio::time::sleep(s.fhir_latency).await;
    }
    let path = uri.path().get(s.paths.fhir.len() + 1..).unwrap_or_default();
    record(&s, &method, path, uri.query(), &headers, &body);

    let token = match bearer(&headers) {
        Some(token) => lock(&s.tokens).get(token).cloned(),
        None => return unauthorized("no bearer token"),
    };
    let Some(token) = token.filter(|t| t.is_active(now_secs())) else {
        return unauthorized("the access token is unknown, expired or revoked");
    };
    if s.take_fault(|f| (*f == super::Fault::FhirServerError).then_some(()))
        .is_some()
    {
        return outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "injected fault: the server failed to process the request",
        );
    }
    if let Some(response) = unacceptable_version(&headers) {
        return response;
    }
    if asks_fhir_version(&headers)
        && s.take_fault(|f| (*f == super::Fault::RefuseFhirVersion).then_some(()))
            .is_some()
    {
        return outcome(
            StatusCode::NOT_ACCEPTABLE,
            "not-supported",
            "this server does not take a fhirVersion parameter in Accept",
        );
    }
    let request = Request {
        s: &s,
        token: &token,
        method: &method,
        query: uri.query(),
        headers: &headers,
        body,
    };
    let mut segments = path.split('/');
    let resource_type = segments.next().unwrap_or_default();
    let id = segments.next().filter(|id| !id.is_empty());
    if segments.next().is_some() {
        return outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "this server supports only [type] and [type]/[id] URLs",
        );
    }
    match (resource_type, id) {
        ("Patient", Some(id)) => request.only_get(|r| r.read_patient(id)),
        ("Patient", None) => request.only_get(Request::search_patients),
        ("Practitioner", Some(id)) => request.only_get(|r| r.read_practitioner(id)),
        ("Observation", None) => match method {
            Method::GET => request.search_observations(),
            Method::POST => request.create_observation(),
            _ => not_allowed(),
        },
        ("Observation", Some(id)) => match method {
            Method::GET => request.read_observation(id),
            Method::PUT => request.update_observation(id),
            Method::PATCH => request.patch_observation(id),
            Method::DELETE => request.delete_observation(id),
            _ => not_allowed(),
        },
        ("Binary", Some("large")) => request.only_get(|_| large_binary_response()),
        ("Binary", Some(_)) => outcome(StatusCode::NOT_FOUND, "not-found", "no such Binary"),
        (other, _) => outcome(
            StatusCode::NOT_FOUND,
            "not-supported",
            &format!("resource type {other} is not supported by this server"),
        ),
    }
}

fn record(
    s: &Shared,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) {
    let entry = RecordedFhirRequest {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let mut log = lock(&s.fhir_log);
    if log.len() >= FHIR_LOG_CAP {
        log.pop_front();
    }
    log.push_back(entry);
}

/// The token of an `Authorization: Bearer` header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The 406 for an `Accept` that asks only for FHIR versions other than R4 (4.0 / 4.0.1).
pub(super) fn unacceptable_version(headers: &HeaderMap) -> Option<Response> {
    let mut asked = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            for param in range.split(';').skip(1) {
                let Some((name, version)) = param.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("fhirVersion") {
                    asked = true;
                    if matches!(version.trim().trim_matches('"'), "4.0" | "4.0.1") {
                        return None;
                    }
                }
            }
        }
    }
    asked.then(|| {
        outcome(
            StatusCode::NOT_ACCEPTABLE,
            "not-supported",
            "this server serves FHIR 4.0.1 only (Accept fhirVersion=4.0)",
        )
    })
}

/// Whether any `Accept` media range carries a `fhirVersion` parameter.
fn asks_fhir_version(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("fhirversion="))
}

/// An OperationOutcome response.
pub(super) fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }]
    });
    json_bytes(
        status,
        FHIR_JSON,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

fn unauthorized(description: &str) -> Response {
    let mut response = outcome(StatusCode::UNAUTHORIZED, "login", description);
    let challenge = format!(r#"Bearer error="invalid_token", error_description="{description}""#);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn forbidden(description: &str) -> Response {
    outcome(StatusCode::FORBIDDEN, "forbidden", description)
}

fn not_allowed() -> Response {
    outcome(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "this interaction is not supported on this resource",
    )
}

fn large_binary_response() -> Response {
    let data = large_binary();
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = (0..LARGE_BINARY_LEN)
        .step_by(BINARY_CHUNK)
        .map(|start| Ok(data.slice(start..(start + BINARY_CHUNK).min(LARGE_BINARY_LEN))))
        .collect();
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(LARGE_BINARY_LEN)),
        ],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

/// A resource response with its version as ETag.
fn resource(status: StatusCode, stored: &Stored) -> Response {
    let mut response = json_bytes(status, FHIR_JSON, stored.bytes.clone());
    if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", stored.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

struct Request<'a> {
    s: &'a Shared,
    token: &'a AccessToken,
    method: &'a Method,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    body: Bytes,
}

impl Request<'_> {
    fn only_get(self, f: impl FnOnce(&Self) -> Response) -> Response {
        if *self.method == Method::GET {
            f(&self)
        } else {
            not_allowed()
        }
    }

    fn query_params(&self) -> Vec<(String, String)> {
        super::parse_form(self.query.unwrap_or_default().as_bytes())
    }

    /// Whether a patient-scoped token may see `patient`'s data.
    fn in_compartment(&self, patient: &str) -> bool {
        !self.token.patient_scoped || self.token.patient.as_deref() == Some(patient)
    }

    fn read_patient(&self, id: &str) -> Response {
        if !self.in_compartment(id) {
            return forbidden("the token is scoped to another patient");
        }
        match self.s.data.patient(id) {
            Some(bytes) => json_bytes(StatusCode::OK, FHIR_JSON, bytes),
            None => outcome(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("Patient/{id} is not known"),
            ),
        }
    }

    fn read_practitioner(&self, id: &str) -> Response {
        match self.s.data.practitioner(id) {
            Some(bytes) => json_bytes(StatusCode::OK, FHIR_JSON, bytes),
            None => outcome(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("Practitioner/{id} is not known"),
            ),
        }
    }

    fn search_patients(&self) -> Response {
        let params = self.query_params();
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let found = if let Some(ids) = get("_id") {
            let mut found = Vec::new();
            for id in ids.split(',').filter(|i| !i.is_empty()) {
                if !self.in_compartment(id) {
                    return forbidden("the token is scoped to another patient");
                }
                found.extend(self.s.data.patient_resource(id));
            }
            found
        } else if let Some(identifier) = get("identifier") {
            let (system, value) = match identifier.split_once('|') {
                Some((system, value)) => (Some(system).filter(|s| !s.is_empty()), value),
                None => (None, identifier),
            };
            let found = self.s.data.patients_with_identifier(system, value);
            found
                .into_iter()
                .filter(|p| p["id"].as_str().is_some_and(|id| self.in_compartment(id)))
                .collect()
        } else {
            return outcome(
                StatusCode::BAD_REQUEST,
                "required",
                "a Patient search needs _id or identifier",
            );
        };
        self.bundle("Patient", found)
    }

    fn search_observations(&self) -> Response {
        let params = self.query_params();
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let patient = get("patient")
            .or_else(|| get("subject"))
            .map(|p| p.strip_prefix("Patient/").unwrap_or(p));
        let Some(patient) = patient.filter(|p| !p.is_empty()) else {
            // Epic and Oracle both insist on a patient for Observation searches.
            return outcome(
                StatusCode::BAD_REQUEST,
                "required",
                "an Observation search needs patient (or subject)",
            );
        };
        if !self.in_compartment(patient) {
            return forbidden("the token is scoped to another patient");
        }
        let found = self.s.data.search_observations(patient, get("category"));
        self.bundle("Observation", found)
    }

    fn bundle(&self, resource_type: &str, resources: Vec<Value>) -> Response {
        let iss = &self.s.iss;
        let self_url = match self.query {
            Some(q) if !q.is_empty() => format!("{iss}/{resource_type}?{q}"),
            _ => format!("{iss}/{resource_type}"),
        };
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|r| {
                let full_url = format!(
                    "{iss}/{resource_type}/{}",
                    r["id"].as_str().unwrap_or_default()
                );
                json!({ "fullUrl": full_url, "resource": r, "search": { "mode": "match" } })
            })
            .collect();
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": entries.len(),
            "link": [{ "relation": "self", "url": self_url }],
            "entry": entries
        });
        json_bytes(
            StatusCode::OK,
            FHIR_JSON,
            Bytes::from(serde_json::to_vec(&bundle).unwrap_or_default()),
        )
    }

    fn read_observation(&self, id: &str) -> Response {
        match self.s.data.observation(id) {
            Some(stored) if !self.in_compartment(subject_patient(&stored.resource)) => {
                forbidden("the token is scoped to another patient")
            }
            Some(stored) => resource(StatusCode::OK, &stored),
            None => outcome(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("Observation/{id} is not known"),
            ),
        }
    }

    /// The request body as an Observation, or the error response (boxed: a `Response` is
    /// large and this is not a hot path).
    fn observation_body(&self) -> Result<Value, Box<Response>> {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case(FHIR_JSON) && !media.eq_ignore_ascii_case("application/json")
        {
            return Err(Box::new(outcome(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-supported",
                "send application/fhir+json",
            )));
        }
        let body: Value = serde_json::from_slice(&self.body).map_err(|e| {
            Box::new(outcome(
                StatusCode::BAD_REQUEST,
                "structure",
                &format!("the body is not JSON: {e}"),
            ))
        })?;
        if body.get("resourceType").and_then(Value::as_str) != Some("Observation") {
            return Err(Box::new(outcome(
                StatusCode::BAD_REQUEST,
                "invalid",
                "the body is not an Observation",
            )));
        }
        if !self.in_compartment(subject_patient(&body)) {
            return Err(Box::new(forbidden(
                "the token is scoped to another patient",
            )));
        }
        Ok(body)
    }

    fn prefers_minimal(&self) -> bool {
        self.headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim() == "return=minimal"))
    }

    fn created(&self, stored: &Stored, status: StatusCode) -> Response {
        let id = stored.resource["id"].as_str().unwrap_or_default();
        let mut response = if self.prefers_minimal() {
            (
                status,
                [(header::ETAG, format!("W/\"{}\"", stored.version))],
            )
                .into_response()
        } else {
            resource(status, stored)
        };
        if status == StatusCode::CREATED {
            let location = format!(
                "{}/Observation/{id}/_history/{}",
                self.s.iss, stored.version
            );
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
        }
        response
    }

    fn create_observation(&self) -> Response {
        let body = match self.observation_body() {
            Ok(body) => body,
            Err(response) => return *response,
        };
        // The server assigns the id; one in the body is ignored (FHIR create).
        let id = uuid::Uuid::new_v4().to_string();
        let (stored, _) = self.s.data.put_observation(&id, body);
        self.created(&stored, StatusCode::CREATED)
    }

    fn update_observation(&self, id: &str) -> Response {
        let body = match self.observation_body() {
            Ok(body) => body,
            Err(response) => return *response,
        };
        if body
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|b| b != id)
        {
            return outcome(
                StatusCode::BAD_REQUEST,
                "invalid",
                "the body's id differs from the URL's",
            );
        }
        if let Some(existing) = self.s.data.observation(id)
            && !self.in_compartment(subject_patient(&existing.resource))
        {
            return forbidden("the token is scoped to another patient");
        }
        let (stored, created) = self.s.data.put_observation(id, body);
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        self.created(&stored, status)
    }

    fn patch_observation(&self, id: &str) -> Response {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("application/json-patch+json") {
            return outcome(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-supported",
                "PATCH takes application/json-patch+json",
            );
        }
        let Some(existing) = self.s.data.observation(id) else {
            return outcome(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("Observation/{id} is not known"),
            );
        };
        if !self.in_compartment(subject_patient(&existing.resource)) {
            return forbidden("the token is scoped to another patient");
        }
        let patch: Value = match serde_json::from_slice(&self.body) {
            Ok(patch) => patch,
            Err(e) => {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "structure",
                    &format!("the patch is not JSON: {e}"),
                );
            }
        };
        let mut patched = existing.resource.clone();
        if let Err(e) = json_patch::apply(&mut patched, &patch) {
            return outcome(StatusCode::UNPROCESSABLE_ENTITY, "processing", &e);
        }
        if patched.get("resourceType") != existing.resource.get("resourceType")
            || patched.get("id") != existing.resource.get("id")
        {
            return outcome(
                StatusCode::UNPROCESSABLE_ENTITY,
                "processing",
                "a patch may not change resourceType or id",
            );
        }
        let (stored, _) = self.s.data.put_observation(id, patched);
        resource(StatusCode::OK, &stored)
    }

    fn delete_observation(&self, id: &str) -> Response {
        if let Some(existing) = self.s.data.observation(id) {
            if !self.in_compartment(subject_patient(&existing.resource)) {
                return forbidden("the token is scoped to another patient");
            }
            self.s.data.delete_observation(id);
        }
        // Deleting what is not there succeeds too (FHIR allows it).
        StatusCode::NO_CONTENT.into_response()
    }
}

/// The patient id an Observation is about (`subject: Patient/{id}`), or "" if none.
fn subject_patient(resource: &Value) -> &str {
    resource["subject"]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Patient/"))
        .unwrap_or_default()
}
