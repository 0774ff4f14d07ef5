//! `GET /v1/launches/{launch_id}/patient`: a small typed summary of the launch's patient,
//! read with `fhir-sdk`'s models (crate `fhir-summary`). Servers that refuse the
//! `fhirVersion` Accept parameter (406/415), or a Patient the typed models will not take,
//! fall back to the raw JSON path, which yields the same shape.

use crate::http::Path;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};

use crate::http::ApiError;
use crate::http::auth::Caller;
use crate::state::AppState;

const TYPED_ACCEPT: &str = "application/fhir+json; fhirVersion=4.0";
const PLAIN_ACCEPT: &str = "application/fhir+json";

/// The launch's patient, read through the FHIR proxy and summarised (name, birth date,
/// identifiers...) so the app need not parse FHIR for a banner.
#[utoipa::path(
    get,
    path = "/v1/launches/{launch_id}/patient",
    tag = "smart",
    operation_id = "get_launch_patient",
    params(("launch_id" = String, Path, description = "A SMART launch's id")),
    security(("app_key" = []), ("partner_key" = [])),
    responses(
        (status = 200, description = "The patient summary", body = Object),
        crate::http::openapi::LaunchErrors,
        (status = 502, response = crate::http::openapi::BadGateway),
    )
)]
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    Path(launch_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (launch, session) = super::proxy::launch_session(&state, &caller, &launch_id).await?;
    let patient = launch
        .context
        .get("patient")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ApiError::Conflict(format!("launch {launch_id} has no patient in its context"))
        })?
        .to_owned();
    let raw_path = format!(
        "Patient/{}",
        url::form_urlencoded::byte_serialize(patient.as_bytes()).collect::<String>()
    );
    super::proxy::check_relative_path(&raw_path).map_err(|e| ApiError::BadGateway {
        code: "ehr_bad_context",
        detail: e,
    })?;
    let url = super::proxy::target_url(&state, &session.iss, &raw_path, None)?;

    let mut accept = TYPED_ACCEPT;
    let (status, body) = loop {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static(accept));
        let call = super::proxy::forward(
            &state,
            &session,
            &Method::GET,
            &url,
            &headers,
            bytes::Bytes::new(),
        )
        .await;
        super::proxy::record_fhir_request(
            &state,
            &launch.partner_id,
            launch.user_id.clone(),
            Some(&launch.id),
            &Method::GET,
            &raw_path,
            &call,
        )
        .await;
        let resp = call.result?;
        let status = resp.status().as_u16();
        if matches!(status, 406 | 415) && accept == TYPED_ACCEPT {
            accept = PLAIN_ACCEPT; // the server will not take the fhirVersion parameter
            continue;
        }
        let body = resp.bytes().await.map_err(|e| ApiError::BadGateway {
            code: "ehr_unreachable",
            detail: format!("reading the Patient failed: {e}"),
        })?;
        break (status, body);
    };
    match status {
        200..=299 => {}
        404 | 410 => {
            return Err(ApiError::NotFound(format!(
                "the EHR has no Patient {patient:?} (HTTP {status})"
            )));
        }
        403 => {
            return Err(ApiError::Forbidden(format!(
                "the EHR does not let this launch read Patient {patient:?} (check the granted scopes)"
            )));
        }
        _ => {
            return Err(ApiError::BadGateway {
                code: "ehr_error",
                detail: format!("the EHR answered HTTP {status} for Patient {patient:?}"),
            });
        }
    }
    let summary = fhir_summary::typed(&body)
        .or_else(|typed_err| {
            // The parser's message can quote the patient's fields: only where it failed.
            let at = typed_err.to_string();
            let at = at
                .rsplit_once(" at line ")
                .map_or("", |(_, l)| l)
                .to_owned();
            tracing::debug!(at, "typed Patient read failed; using raw JSON");
            fhir_summary::raw(&body)
        })
        .map_err(|e| ApiError::BadGateway {
            code: "ehr_bad_resource",
            detail: format!("the EHR's answer is not a usable Patient: {e}"),
        })?;
    Ok(Json(json!({
        "launch_id": launch.id,
        "patient": summary,
    })))
}
