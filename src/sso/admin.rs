//! Connections created at runtime (`POST /v1/sso/connections`, admin keys): the body is a
//! connection as config would have it plus `partner`; it is checked field by field, then
//! against the IdP itself (OIDC discovery, or the SAML metadata fetched and parsed) before
//! anything is saved, so a connection that exists can be signed in with.

use serde_json::Value;

use super::Found;
use super::connection::{Protocol, SsoConnection};
use super::store::SaveProblem;
use crate::http::ApiError;
use crate::http::error::FieldError;
use crate::state::AppState;

fn invalid(detail: &str, errors: Vec<(String, String)>) -> ApiError {
    ApiError::Validation {
        detail: detail.to_owned(),
        errors: errors
            .into_iter()
            .map(|(field, reason)| FieldError {
                index: None,
                field,
                reason,
            })
            .collect(),
    }
}

/// Check and save a runtime connection; the saved connection on success.
pub async fn create(
    state: &AppState,
    body: Value,
    who: &crate::audit::Who,
) -> Result<Found, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object: a connection as in config, plus \"partner\"",
        ));
    };
    let partner_id = match obj.remove("partner") {
        Some(Value::String(p)) => p,
        _ => {
            return Err(invalid(
                "the connection is invalid",
                vec![(
                    "partner".into(),
                    "required: the id of the partner (organisation) it signs in to".into(),
                )],
            ));
        }
    };
    let Some(partner) = state.config.partner(&partner_id) else {
        return Err(invalid(
            "the connection is invalid",
            vec![("partner".into(), format!("no partner {partner_id:?}"))],
        ));
    };
    // Runtime connections carry values, never references to the server's environment
    // or files (an admin key must not read the server's secrets or disk through them).
    let mut early = Vec::new();
    if obj.contains_key("idp_metadata_file") {
        early.push((
            "idp_metadata_file".into(),
            "is for config files; give idp_metadata_url".into(),
        ));
    }
    if obj.get("client_secret").is_some_and(|v| !v.is_string()) {
        early.push((
            "client_secret".into(),
            "must be the secret itself (a string); env and file references are for config".into(),
        ));
    }
    // Staff sign-in to the console is decided in reviewed config files, never by an API
    // call: a connection made here could otherwise hand its IdP's people the admin role.
    if obj
        .get("console")
        .and_then(|c| c.get("audience"))
        .is_some_and(|a| a == "staff")
    {
        early.push((
            "console.audience".into(),
            "staff sign-in to the console is configured in config files only; use \"partner\""
                .into(),
        ));
    }
    if !early.is_empty() {
        return Err(invalid("the connection is invalid", early));
    }
    let definition = Value::Object(obj);
    let conn: SsoConnection = serde_path_to_error::deserialize(&definition).map_err(|e| {
        let path = e.path().to_string();
        invalid(
            "the connection is invalid",
            vec![(
                if path == "." { "body".into() } else { path },
                e.into_inner().to_string(),
            )],
        )
    })?;
    let problems = conn.problems();
    if !problems.is_empty() {
        return Err(invalid("the connection is invalid", problems));
    }
    if super::lookup::connection(state, &conn.id)
        .await
        .map_err(ApiError::Internal)?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "a connection {:?} exists already",
            conn.id
        )));
    }
    for d in &conn.domains {
        if let Some(f) = super::lookup::connection_for_email(state, &format!("x@{d}"))
            .await
            .map_err(ApiError::Internal)?
        {
            return Err(ApiError::Conflict(format!(
                "domain {d:?} already routes to connection {:?}",
                f.conn.id
            )));
        }
    }
    // Against the IdP itself: what a sign-in would fetch first.
    match conn.protocol {
        Protocol::Oidc => {
            state
                .sso
                .discovery
                .metadata(&state.outbound, &conn.issuer)
                .await
                .map_err(|e| ApiError::Unprocessable {
                    code: "idp_unreachable",
                    detail: format!("the issuer's OpenID Connect discovery failed: {e}"),
                })?;
        }
        Protocol::Saml => {
            super::saml::load_idp_metadata(&state.outbound, &conn)
                .await
                .map_err(|detail| ApiError::Unprocessable {
                    code: "idp_metadata_invalid",
                    detail,
                })?;
        }
    }
    let bytes = serde_json::to_vec(&definition).map_err(|e| ApiError::Internal(e.into()))?;
    let saved = super::store::insert_connection(
        &state.db,
        &state.master_key,
        &conn,
        &partner.id,
        &bytes,
        crate::time::now_micros(),
        who,
    )
    .await
    .map_err(ApiError::Internal)?;
    match saved {
        Ok(()) => {}
        Err(SaveProblem::IdTaken) => {
            return Err(ApiError::Conflict(format!(
                "a connection {:?} exists already",
                conn.id
            )));
        }
        Err(SaveProblem::DomainTaken(d)) => {
            return Err(ApiError::Conflict(format!(
                "domain {d:?} already routes to another connection"
            )));
        }
    }
    tracing::info!(connection = %conn.id, partner = %partner.id, protocol = conn.protocol.as_str(), "SSO connection created");
    Ok(Found {
        partner_id: partner.id.clone(),
        partner_name: partner.name.clone(),
        conn: std::sync::Arc::new(conn),
    })
}

/// Remove a runtime connection (those in config are changed in config).
pub async fn delete(state: &AppState, id: &str, who: &crate::audit::Who) -> Result<(), ApiError> {
    if super::lookup::configured(&state.config).any(|f| f.conn.id == id) {
        return Err(ApiError::Conflict(format!(
            "connection {id:?} is defined in the config file; remove it there"
        )));
    }
    if super::store::delete_connection(&state.db, id, who)
        .await
        .map_err(ApiError::Internal)?
    {
        tracing::info!(connection = %id, "SSO connection deleted");
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no runtime connection {id:?}")))
    }
}
