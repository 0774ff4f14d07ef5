//! Browser routes of the LTI tool (`/lti/...`) and the app's LTI routes under
//! `/v1/launches/{id}/...`. Handlers stay thin: the work is in `login`, `launch`,
//! `deep_linking`.

use std::collections::HashMap;

use crate::http::Path;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::Caller;
use crate::http::list::{Page, Paging};
use crate::http::{ApiError, Body, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/lti/login", get(login).post(login))
        .route("/lti/launch", post(launch))
        .route("/lti/deep-link/{id}", post(deep_link_choice))
        .route("/lti/config/canvas.json", get(canvas_config))
        .route("/lti/11/launch", post(lti11_launch))
        .route("/lti/register", get(register))
        .routes(routes!(create_registration_link, list_registration_links))
        .routes(routes!(revoke_registration_link))
        .routes(routes!(app_deep_link))
        .routes(routes!(list_registrations))
        .routes(routes!(approve_registration))
        .routes(routes!(reject_registration))
        .routes(routes!(post_score))
        .routes(routes!(get_score))
        .routes(routes!(list_line_items, create_line_item))
        .routes(routes!(get_line_item, put_line_item, delete_line_item))
        .routes(routes!(members))
        .routes(routes!(read_outcome, delete_outcome))
        // The LMS shows the tool's pages in its own page.
        .route_layer(axum::middleware::map_response(
            crate::http::page::partner_frames,
        ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RegistrationsQuery {
    /// pending, approved or rejected; all when omitted.
    status: Option<String>,
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

crate::page_schema!(
    RegistrationList,
    super::dynreg::RegistrationView,
    "A page of registrations, oldest first."
);

#[derive(Serialize, utoipa::ToSchema)]
struct RegistrationDecided {
    id: String,
    /// approved or rejected.
    status: String,
}

/// An AGS score as the app posts it (IMS AGS 2.0 Score fields; the gateway adds the
/// timestamp and the line item of the launch's resource link unless `lineItem` names one).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"scoreGiven": 8, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded", "comment": "Well done"}))]
#[allow(dead_code, non_snake_case)]
struct ScoreBody {
    /// The LMS user id; the launch's user by default.
    userId: Option<String>,
    #[schema(minimum = 0)]
    scoreGiven: Option<f64>,
    /// Above 0; required with scoreGiven.
    scoreMaximum: Option<f64>,
    /// Initialized, Started, InProgress, Submitted or Completed.
    activityProgress: String,
    /// FullyGraded, Pending, PendingManual, Failed or NotReady.
    gradingProgress: String,
    #[schema(max_length = 10000)]
    comment: Option<String>,
    /// A line item URL of the launch's context.
    lineItem: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ScoreAccepted {
    /// Follow it at `GET /v1/scores/{score_id}`.
    score_id: String,
    /// Always pending: a job delivers it, retrying while the LMS fails.
    status: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LineItemQuery {
    /// The line item's URL (its `id` in the LMS).
    id: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LineItemsQuery {
    /// Passed to the LMS: only the items of this resource link.
    resource_link_id: Option<String>,
    resource_id: Option<String>,
    tag: Option<String>,
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documents the query; the handler reads it as pairs.
struct MembersQuery {
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

/// An item the LMS gave, as it gave it (an IMS line item or membership).
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
struct LmsItem(Value);

crate::page_schema!(
    LineItemList,
    LmsItem,
    "A page of the LMS's line items, in the LMS's order."
);
crate::page_schema!(
    MemberList,
    LmsItem,
    "A page of the context's members (NRPS), in the LMS's order."
);

/// The paging of a list the gateway gathers whole from the LMS (every page the LMS links
/// to), checked before the LMS is asked.
fn lms_paging(list: &'static str, q: Option<&str>) -> Result<Paging, ApiError> {
    let mut p = pairs(q.unwrap_or_default().as_bytes());
    let limit = p
        .remove("limit")
        .map(|l| {
            l.parse::<i64>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be a whole number; got {l:?}"),
                )
            })
        })
        .transpose()?;
    Paging::new(list, limit, p.remove("cursor").as_deref())
}

/// A page of what the LMS gave: the position in the LMS's order is the key, so a list the
/// LMS changes between calls may shift.
fn page_from_lms(paging: &Paging, items: Vec<Value>) -> Result<Page<Value>, ApiError> {
    let numbered: Vec<(usize, Value)> = items.into_iter().enumerate().collect();
    let page = paging.page_sorted(numbered, |(i, _)| *i)?;
    Ok(Page {
        data: page.data.into_iter().map(|(_, v)| v).collect(),
        next_cursor: page.next_cursor,
    })
}

/// An LTI Advantage line item (IMS AGS 2.0), passed to the LMS as it is.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"label": "Chapter 5 quiz", "scoreMaximum": 10, "resourceId": "quiz-5", "tag": "quiz"}))]
#[allow(dead_code, non_snake_case)]
struct LineItemBody {
    label: String,
    #[schema(exclusive_minimum = 0)]
    scoreMaximum: f64,
    resourceId: Option<String>,
    resourceLinkId: Option<String>,
    tag: Option<String>,
    startDateTime: Option<String>,
    endDateTime: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Outcome {
    launch_id: String,
    /// The LMS's result for the launch's user, 0.0 to 1.0; null when none.
    score: Option<f64>,
}

/// The content the app chose for a Deep Linking launch: LTI content items
/// (<https://www.imsglobal.org/spec/lti-dl/v2p0#content-item-types>).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"content_items": [{"type": "ltiResourceLink", "title": "Chapter 5 quiz", "url": "https://app.example/quiz/5", "lineItem": {"scoreMaximum": 10, "label": "Chapter 5 quiz"}}]}))]
#[allow(dead_code)]
struct DeepLinkBody {
    /// Each needs a `type` (ltiResourceLink, link, file, html, image); at most 100.
    #[schema(value_type = Vec<Object>, max_items = 100)]
    content_items: Vec<Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeepLinkResponse {
    /// Where the browser must POST the JWT (form field `JWT`).
    return_url: Option<String>,
    /// The signed LtiDeepLinkingResponse.
    jwt: String,
}

async fn register(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    super::dynreg::register(&state, q.as_deref().unwrap_or("")).await
}

/// A registration link to create (`POST /v1/lti/registration-links`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"partner": "moodle-campus", "expires_in_secs": 86400, "note": "for J. Smith, Moodle admin"}))]
struct NewRegistrationLink {
    /// The partner whose LMS registers (one with `[partners.lti]`).
    partner: String,
    /// How long the link is usable: 300 (5 minutes) to 2592000 (30 days); 7 days when
    /// omitted.
    #[schema(minimum = 300, maximum = 2592000)]
    expires_in_secs: Option<u64>,
    /// Who or what it is for (at most 500 characters, one line).
    note: Option<String>,
    /// The LTI 1.1 consumer key (one of the partner's `[[partners.lti.lti11]]`) the LMS's
    /// 1.3 tool replaces: its launches' migration claims are verified with its secret.
    lti11_consumer_key: Option<String>,
}

/// A new link, with its URL (holding the secret) shown this once.
#[derive(Serialize, utoipa::ToSchema)]
struct RegistrationLinkCreated {
    #[serde(flatten)]
    link: super::dynreg::LinkView,
    /// Give it to the LMS's administrator, who pastes it as the tool's dynamic registration
    /// URL; single use. Only its SHA-256 is kept: it cannot be shown again.
    url: String,
}

crate::page_schema!(
    RegistrationLinkList,
    super::dynreg::LinkView,
    "A page of registration links, newest first."
);

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RegistrationLinksQuery {
    /// Only this partner's links.
    partner: Option<String>,
    /// active, used, expired, revoked or exhausted.
    #[param(example = "active")]
    status: Option<String>,
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

impl From<super::dynreg::LinkError> for ApiError {
    fn from(e: super::dynreg::LinkError) -> Self {
        use super::dynreg::LinkError;
        match e {
            LinkError::UnknownPartner(_) => ApiError::NotFound(e.to_string()),
            LinkError::NotLti(_) => ApiError::Unprocessable {
                code: "not_an_lti_partner",
                detail: e.to_string(),
            },
            LinkError::Invalid(detail) => ApiError::bad_request("invalid_body", detail),
            LinkError::Store(e) => ApiError::Internal(e),
        }
    }
}

/// Create an LTI Dynamic Registration link for a partner: the URL to give its LMS's
/// administrator, single use, expiring. `/lti/register` does nothing without one.
#[utoipa::path(
    post,
    path = "/v1/lti/registration-links",
    tag = "lti",
    operation_id = "create_lti_registration_link",
    request_body = NewRegistrationLink,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Created; the URL is shown this once", body = RegistrationLinkCreated),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
        (status = 422, response = crate::http::openapi::Unprocessable),
    )
)]
async fn create_registration_link(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<(axum::http::StatusCode, Json<RegistrationLinkCreated>), ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    let req: NewRegistrationLink = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"partner\", \"expires_in_secs\"?, \"note\"?, \"lti11_consumer_key\"?}}: {e}"),
        )
    })?;
    let (link, url) = super::dynreg::create_link(
        &state,
        &req.partner,
        req.expires_in_secs,
        req.note,
        req.lti11_consumer_key,
        &caller.key_id,
        crate::time::now_micros(),
    )
    .await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(RegistrationLinkCreated { link, url }),
    ))
}

/// Registration links, newest first, with what became of each (the registration it made,
/// or why the last try failed).
#[utoipa::path(
    get,
    path = "/v1/lti/registration-links",
    tag = "lti",
    operation_id = "list_lti_registration_links",
    params(RegistrationLinksQuery),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "The links", body = RegistrationLinkList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
    )
)]
async fn list_registration_links(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RegistrationLinksQuery>,
) -> Result<Json<Page<super::dynreg::LinkView>>, ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    let paging = Paging::new("lti_registration_links", q.limit, q.cursor.as_deref())?;
    if let Some(s) = &q.status
        && !super::dynreg::LINK_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "status {s:?} is not one of {}",
                super::dynreg::LINK_STATUSES.join(", ")
            ),
        ));
    }
    let links = super::dynreg::list_links(
        &state,
        q.partner.as_deref(),
        q.status.as_deref(),
        crate::time::now_micros(),
    )
    .await?;
    // Links are made by admins, one per LMS to connect: paged in memory. Ids are UUIDv7,
    // so newest first is descending id.
    Ok(Json(
        paging.page_sorted(links, |l| std::cmp::Reverse(l.id.clone()))?,
    ))
}

/// Revoke a registration link nobody used yet.
#[utoipa::path(
    delete,
    path = "/v1/lti/registration-links/{id}",
    tag = "lti",
    operation_id = "revoke_lti_registration_link",
    params(("id" = String, Path, description = "The link's id (`lrl_...`)")),
    security(("admin_key" = [])),
    responses(
        (status = 204, description = "Revoked: the link registers nothing any more"),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
    )
)]
async fn revoke_registration_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    let link = super::store::link(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no registration link {id:?}")))?;
    if !super::store::revoke_link(&state.db, &id, crate::time::now_micros()).await? {
        let what = if link.used_at_us.is_some() {
            "was used already"
        } else {
            "is revoked already"
        };
        return Err(ApiError::Conflict(format!("registration link {id} {what}")));
    }
    tracing::info!(link_id = %id, key_id = %caller.key_id, "LTI registration link revoked");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// LTI Dynamic Registrations made by platforms, for an admin to approve or reject.
#[utoipa::path(
    get,
    path = "/v1/lti/registrations",
    tag = "lti",
    operation_id = "list_lti_registrations",
    params(RegistrationsQuery),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "The registrations, oldest first", body = RegistrationList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
    )
)]
async fn list_registrations(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RegistrationsQuery>,
) -> Result<Json<Page<super::dynreg::RegistrationView>>, ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    let paging = Paging::new("lti_registrations", q.limit, q.cursor.as_deref())?;
    let status = q.status;
    if let Some(s) = &status
        && !matches!(s.as_str(), "pending" | "approved" | "rejected")
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status must be pending, approved or rejected",
        ));
    }
    // Registrations come from LMS administrators through single-use links: paged in
    // memory, oldest first.
    let all = super::dynreg::list(&state, status.as_deref()).await?;
    Ok(Json(paging.page_sorted(all, |r| {
        (r.created_at.clone(), r.id.clone())
    })?))
}

async fn decide(
    state: AppState,
    caller: Caller,
    headers: axum::http::HeaderMap,
    id: String,
    approve: bool,
) -> Result<Json<RegistrationDecided>, ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    if !super::dynreg::decide(&state, &id, approve, &caller.who(&headers)).await? {
        return Err(ApiError::Conflict(format!(
            "registration {id:?} does not exist or was already decided"
        )));
    }
    tracing::info!(registration_id = %id, approve, "LTI registration decided");
    Ok(Json(RegistrationDecided {
        id,
        status: if approve { "approved" } else { "rejected" }.to_owned(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/lti/registrations/{id}/approve",
    tag = "lti",
    operation_id = "approve_lti_registration",
    params(("id" = String, Path, description = "The registration's id")),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Decided", body = RegistrationDecided),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 409, response = crate::http::openapi::Conflict),
    )
)]
async fn approve_registration(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegistrationDecided>, ApiError> {
    decide(state, caller, headers, id, true).await
}

#[utoipa::path(
    post,
    path = "/v1/lti/registrations/{id}/reject",
    tag = "lti",
    operation_id = "reject_lti_registration",
    params(("id" = String, Path, description = "The registration's id")),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Decided", body = RegistrationDecided),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 409, response = crate::http::openapi::Conflict),
    )
)]
async fn reject_registration(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegistrationDecided>, ApiError> {
    decide(state, caller, headers, id, false).await
}

async fn lti11_launch(State(state): State<AppState>, body: Bytes) -> Response {
    super::lti11::launch(&state, super::lti11::form_params(&body)).await
}

/// `POST /v1/launches/{id}/scores`: 202 with the score id once stored; delivered by a job.
#[utoipa::path(
    post,
    path = "/v1/launches/{launch_id}/scores",
    tag = "lti",
    operation_id = "post_score",
    params(("launch_id" = String, Path, description = "An LTI launch's id")),
    request_body = ScoreBody,
    security(("app_key" = [])),
    responses(
        (status = 202, description = "Stored; a job delivers it to the LMS", body = ScoreAccepted),
        (status = 400, response = crate::http::openapi::BadRequest),
        crate::http::openapi::LaunchErrors,
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
async fn post_score(
    State(state): State<AppState>,
    caller: Caller,
    Path(launch_id): Path<String>,
    Body(body): Body,
) -> Result<(axum::http::StatusCode, Json<ScoreAccepted>), ApiError> {
    caller.require(&[crate::apikeys::Role::App])?;
    let launch = crate::launches::routes::authorized_launch(&state, &caller, &launch_id).await?;
    let req: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("expected a JSON score: {e}"))
    })?;
    let score = super::ags::parse_score(&req, launch.user_id.as_deref()).map_err(|errors| {
        ApiError::Validation {
            detail: "the score is invalid; nothing was stored".into(),
            errors,
        }
    })?;
    let id = super::ags::accept_score(&state, &launch, score).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(ScoreAccepted {
            score_id: id,
            status: "pending".into(),
        }),
    ))
}

/// `GET /v1/scores/{id}`: where a score is (pending, delivered, failed) and why.
#[utoipa::path(
    get,
    path = "/v1/scores/{score_id}",
    tag = "lti",
    operation_id = "get_score",
    params(("score_id" = String, Path, description = "From the score's 202")),
    security(("app_key" = []), ("partner_key" = []), ("admin_key" = [])),
    responses(
        (status = 200, description = "The score's delivery", body = super::store::ScoreStatus),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn get_score(
    State(state): State<AppState>,
    caller: Caller,
    Path(score_id): Path<String>,
) -> Result<Json<super::store::ScoreStatus>, ApiError> {
    caller.require(&[
        crate::apikeys::Role::App,
        crate::apikeys::Role::Partner,
        crate::apikeys::Role::Admin,
    ])?;
    let (partner_id, view) = super::store::score_status(&state.db, &score_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no score {score_id:?}")))?;
    state.sandbox_partner(&partner_id);
    caller.check_owner(&partner_id, || format!("no score {score_id:?}"))?;
    Ok(Json(view))
}

async fn app_launch(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<crate::launches::Launch, ApiError> {
    caller.require(&[crate::apikeys::Role::App])?;
    let l = crate::launches::routes::authorized_launch(state, caller, id).await?;
    if l.kind != crate::launches::LaunchKind::Lti {
        return Err(ApiError::Conflict(format!(
            "launch {id} is not an LTI launch"
        )));
    }
    Ok(l)
}

/// The line items of the launch's context, from the LMS (AGS line item service).
#[utoipa::path(
    get,
    path = "/v1/launches/{launch_id}/lineitems",
    tag = "lti",
    operation_id = "list_line_items",
    params(("launch_id" = String, Path, description = "An LTI launch's id"), LineItemsQuery),
    security(("app_key" = [])),
    responses(
        (status = 200, description = "A page of the LMS's line items", body = LineItemList),
        (status = 400, response = crate::http::openapi::BadRequest),
        crate::http::openapi::LaunchErrors,
        (status = 502, response = crate::http::openapi::BadGateway),
        (status = "default", description = "Any other status is the LMS's own, with its body", body = Object),
    )
)]
async fn list_line_items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Page<Value>>, ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    let paging = lms_paging("lti_line_items", q.as_deref())?;
    let items = super::ags::list_line_items(&state, &launch, q.as_deref()).await?;
    Ok(Json(page_from_lms(&paging, items)?))
}

fn passthrough(
    (status, body): (u16, Value),
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let code =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    if code.is_server_error() {
        return Err(ApiError::BadGateway {
            code: "lms_error",
            detail: format!("the LMS answered {status}: {body}"),
        });
    }
    Ok((code, Json(body)))
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("expected a JSON line item: {e}"))
    })
}

fn item_id(q: Option<String>) -> Result<String, ApiError> {
    pairs(q.unwrap_or_default().as_bytes())
        .remove("id")
        .ok_or_else(|| ApiError::bad_request("missing_id", "name the line item with ?id=<its URL>"))
}

/// Create a line item in the launch's context.
#[utoipa::path(
    post,
    path = "/v1/launches/{launch_id}/lineitems",
    tag = "lti",
    operation_id = "create_line_item",
    params(("launch_id" = String, Path, description = "An LTI launch's id")),
    request_body = LineItemBody,
    security(("app_key" = [])),
    responses(
        (status = 201, description = "The LMS created it", body = Object),
        (status = 400, response = crate::http::openapi::BadRequest),
        crate::http::openapi::LaunchErrors,
        (status = 502, response = crate::http::openapi::BadGateway),
        (status = "default", description = "Any other status is the LMS's own, with its body", body = Object),
    )
)]
async fn create_line_item(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    let item = json_body(&body)?;
    if item
        .get("label")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        || item
            .get("scoreMaximum")
            .and_then(Value::as_f64)
            .is_none_or(|m| m <= 0.0)
    {
        return Err(ApiError::bad_request(
            "invalid_line_item",
            "a line item needs a label and a scoreMaximum above 0",
        ));
    }
    passthrough(
        super::ags::write_line_item(&state, &launch, reqwest::Method::POST, None, Some(item))
            .await?,
    )
}

/// One line item of the launch's context, named by `?id=<its URL>`.
#[utoipa::path(
    get,
    path = "/v1/launches/{launch_id}/lineitems/item",
    tag = "lti",
    operation_id = "get_line_item",
    params(("launch_id" = String, Path, description = "An LTI launch's id"), LineItemQuery),
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The line item", body = Object),
        (status = 400, response = crate::http::openapi::BadRequest),
        crate::http::openapi::LaunchErrors,
        (status = 502, response = crate::http::openapi::BadGateway),
        (status = "default", description = "Any other status is the LMS's own, with its body", body = Object),
    )
)]
async fn get_line_item(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    q: RawQuery,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    line_item(state, Method::GET, caller, id, q, None).await
}

/// Replace a line item (the whole of it), named by `?id=<its URL>`.
#[utoipa::path(
    put,
    path = "/v1/launches/{launch_id}/lineitems/item",
    tag = "lti",
    operation_id = "put_line_item",
    params(("launch_id" = String, Path, description = "An LTI launch's id"), LineItemQuery),
    request_body = LineItemBody,
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The line item as the LMS now has it", body = Object),
        (status = 400, response = crate::http::openapi::BadRequest),
        crate::http::openapi::LaunchErrors,
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
        (status = 502, response = crate::http::openapi::BadGateway),
        (status = "default", description = "Any other status is the LMS's own, with its body", body = Object),
    )
)]
async fn put_line_item(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    q: RawQuery,
    Body(body): Body,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    line_item(state, Method::PUT, caller, id, q, Some(body)).await
}

/// Delete a line item (and its grades in the LMS), named by `?id=<its URL>`.
#[utoipa::path(
    delete,
    path = "/v1/launches/{launch_id}/lineitems/item",
    tag = "lti",
    operation_id = "delete_line_item",
    params(("launch_id" = String, Path, description = "An LTI launch's id"), LineItemQuery),
    security(("app_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = crate::http::openapi::BadRequest),
        crate::http::openapi::LaunchErrors,
        (status = 502, response = crate::http::openapi::BadGateway),
        (status = "default", description = "Any other status is the LMS's own, with its body", body = Object),
    )
)]
async fn delete_line_item(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    q: RawQuery,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    line_item(state, Method::DELETE, caller, id, q, None).await
}

async fn line_item(
    State(state): State<AppState>,
    method: Method,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Option<Bytes>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    let body = body.map(|b| json_body(&b)).transpose()?;
    passthrough(
        super::ags::write_line_item(&state, &launch, method, Some(&item_id(q)?), body).await?,
    )
}

/// The roster of the launch's context (NRPS 2.0), all pages, from the LMS.
#[utoipa::path(
    get,
    path = "/v1/launches/{launch_id}/members",
    tag = "lti",
    operation_id = "list_members",
    params(("launch_id" = String, Path, description = "An LTI launch's id"), MembersQuery),
    security(("app_key" = [])),
    responses(
        (status = 200, description = "A page of the context's members", body = MemberList),
        (status = 400, response = crate::http::openapi::BadRequest),
        crate::http::openapi::LaunchErrors,
        (status = 502, response = crate::http::openapi::BadGateway),
    )
)]
async fn members(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Page<Value>>, ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    let paging = lms_paging("lti_members", q.as_deref())?;
    let members = super::ags::members(&state, &launch).await?;
    Ok(Json(page_from_lms(&paging, members)?))
}

fn lti11_only(l: &crate::launches::Launch) -> Result<(), ApiError> {
    if l.context.get("lti_version").and_then(Value::as_str) != Some("1.1") {
        return Err(ApiError::Conflict(
            "outcomes are for LTI 1.1 launches; use /scores and /lineitems".into(),
        ));
    }
    Ok(())
}

fn outcome_error((permanent, reason): (bool, String)) -> ApiError {
    if permanent {
        ApiError::Conflict(reason)
    } else {
        ApiError::BadGateway {
            code: "lms_unreachable",
            detail: reason,
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/launches/{launch_id}/outcome",
    tag = "lti",
    operation_id = "read_outcome",
    params(("launch_id" = String, Path, description = "An LTI 1.1 launch's id")),
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The LMS's result (LTI 1.1 Basic Outcomes readResult)", body = Outcome),
        crate::http::openapi::LaunchErrors,
        (status = 502, response = crate::http::openapi::BadGateway),
    )
)]
/// readResult for an LTI 1.1 launch.
async fn read_outcome(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Outcome>, ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    lti11_only(&launch)?;
    let score = super::lti11::read_result(&state, &launch)
        .await
        .map_err(outcome_error)?;
    Ok(Json(Outcome {
        launch_id: id,
        score,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/launches/{launch_id}/outcome",
    tag = "lti",
    operation_id = "delete_outcome",
    params(("launch_id" = String, Path, description = "An LTI 1.1 launch's id")),
    security(("app_key" = [])),
    responses(
        (status = 204, description = "The LMS deleted the result"),
        crate::http::openapi::LaunchErrors,
        (status = 502, response = crate::http::openapi::BadGateway),
    )
)]
/// deleteResult for an LTI 1.1 launch.
async fn delete_outcome(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    lti11_only(&launch)?;
    super::lti11::delete_result(&state, &launch)
        .await
        .map_err(outcome_error)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Form or query pairs; the first of a repeated name wins.
pub fn pairs(bytes: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Login initiation: parameters in the query (GET) or the form body (POST), as platforms
/// differ.
async fn login(
    State(state): State<AppState>,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let mut params = pairs(q.unwrap_or_default().as_bytes());
    if method == Method::POST {
        for (k, v) in pairs(&body) {
            params.insert(k, v);
        }
    }
    super::login::initiate(&state, params).await
}

async fn launch(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    super::launch::launch(&state, &headers, pairs(&body)).await
}

async fn deep_link_choice(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let chosen: Vec<usize> = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "item")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    super::deep_linking::choose(&state, &id, chosen).await
}

/// The JSON to paste into a Canvas LTI 1.3 developer key ("Enter URL").
async fn canvas_config(State(state): State<AppState>) -> Json<Value> {
    let base = state.config.http.public_base();
    let host = url::Url::parse(&base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    Json(json!({
        "title": "Partner Gateway",
        "description": "Launches the app from Canvas with grade passback and rosters.",
        "oidc_initiation_url": format!("{base}/lti/login"),
        "target_link_uri": format!("{base}/lti/launch"),
        "public_jwk_url": format!("{base}/.well-known/jwks.json"),
        "scopes": [
            "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
            "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
            "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
            "https://purl.imsglobal.org/spec/lti-ags/scope/score",
            "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
        ],
        "extensions": [{
            "domain": host,
            "tool_id": "partner-gateway",
            "platform": "canvas.instructure.com",
            "privacy_level": "public",
            "settings": {
                "text": "Partner Gateway",
                "placements": [
                    {"placement": "link_selection", "message_type": "LtiDeepLinkingRequest", "target_link_uri": format!("{base}/lti/launch")},
                    {"placement": "assignment_selection", "message_type": "LtiDeepLinkingRequest", "target_link_uri": format!("{base}/lti/launch")},
                    {"placement": "course_navigation", "message_type": "LtiResourceLinkRequest", "target_link_uri": format!("{base}/lti/launch")}
                ]
            }
        }],
        "custom_fields": {
            "canvas_course_id": "$Canvas.course.id",
            "canvas_user_id": "$Canvas.user.id"
        }
    }))
}

/// Most content items in one Deep Linking answer (the spec sets none; a picker offers a few).
const MAX_CONTENT_ITEMS: usize = 100;

#[utoipa::path(
    post,
    path = "/v1/launches/{launch_id}/deep-link",
    tag = "lti",
    operation_id = "answer_deep_link",
    params(("launch_id" = String, Path, description = "A Deep Linking launch's id")),
    request_body = DeepLinkBody,
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The signed response and where to post it", body = DeepLinkResponse),
        (status = 400, response = crate::http::openapi::BadRequest),
        crate::http::openapi::LaunchErrors,
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
/// `POST /v1/launches/{id}/deep-link` (app keys): for a Deep Linking launch the app chose
/// content for, the signed response and where the browser must POST it (as field `JWT`).
async fn app_deep_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(launch_id): Path<String>,
    Body(body): Body,
) -> Result<Json<DeepLinkResponse>, ApiError> {
    // The answer is signed by the gateway and trusted by the LMS as the tool's choice: only
    // the company's app chooses content, never a partner's key.
    caller.require(&[crate::apikeys::Role::App])?;
    let launch = crate::launches::routes::authorized_launch(&state, &caller, &launch_id).await?;
    if launch.context.get("message_type").and_then(Value::as_str) != Some("LtiDeepLinkingRequest") {
        return Err(ApiError::Conflict(format!(
            "launch {launch_id} is not a Deep Linking request"
        )));
    }
    let req: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"content_items\": [...]}}: {e}"),
        )
    })?;
    let items = req
        .get("content_items")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_body",
                "content_items must be an array of LTI content items",
            )
        })?;
    if items.len() > MAX_CONTENT_ITEMS {
        return Err(ApiError::bad_request(
            "too_many_items",
            format!(
                "content_items holds {} items; a Deep Linking answer carries at most {MAX_CONTENT_ITEMS}",
                items.len()
            ),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if item.get("type").and_then(Value::as_str).is_none() {
            return Err(ApiError::Validation {
                detail: "every content item needs a type".into(),
                errors: vec![crate::http::FieldError {
                    index: Some(i),
                    field: "type".into(),
                    reason: "missing".into(),
                }],
            });
        }
    }
    let c = &launch.context;
    let s = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    // The settings came in the launch; the app's answer reuses them (data echoed).
    let settings = c.get("deep_linking").cloned().unwrap_or(Value::Null);
    let jwt = super::deep_linking::response_jwt(
        &state,
        &s("client_id"),
        &s("iss"),
        &s("deployment_id"),
        &settings,
        items,
    )
    .await?;
    Ok(Json(DeepLinkResponse {
        return_url: settings
            .get("deep_link_return_url")
            .and_then(Value::as_str)
            .map(str::to_owned),
        jwt,
    }))
}
