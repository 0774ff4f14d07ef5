//! Assignment and Grade Services 2.0: the line items container (§3.2), line items (§3.3),
//! scores (§3.4) and results (§3.5), with the vendors' differences in status codes and in
//! how out-of-order scores are treated.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value, json};

use super::data::LineItem;
use super::token::bearer;
use super::{
    AccessToken, AgsFault, Personality, RecordedScore, Refusal, Shared, UrlCtx, claim, essence,
    json_response, lock, media_type, parse_form,
};

const ACTIVITY_PROGRESS: [&str; 5] = [
    "Initialized",
    "Started",
    "InProgress",
    "Submitted",
    "Completed",
];
const GRADING_PROGRESS: [&str; 5] = [
    "FullyGraded",
    "Pending",
    "PendingManual",
    "Failed",
    "NotReady",
];
/// Canvas's line item extension: which kind of assignment the line item makes.
const CANVAS_SUBMISSION_TYPE: &str = "https://canvas.instructure.com/lti/submission_type";

/// An AGS error in the vendor's style: Moodle the reason in the HTTP status line and `[]`
/// as the body (its services.php sets the exception's message as the response's reason),
/// Canvas an `errors` list, the others a small JSON object.
pub(super) fn problem(s: &Shared, status: StatusCode, message: &str) -> Response {
    match s.personality {
        Personality::Moodle => {
            let mut response = (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                "[]",
            )
                .into_response();
            // A status line carries no CR, LF or other control characters.
            let phrase: String = message.chars().filter(|c| !c.is_control()).collect();
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()) {
                response.extensions_mut().insert(reason);
            }
            response
        }
        Personality::Canvas => (
            status,
            axum::Json(json!({ "errors": [{ "message": message }] })),
        )
            .into_response(),
        _ => (
            status,
            axum::Json(json!({ "error": status.canonical_reason().unwrap_or("error"), "message": message })),
        )
            .into_response(),
    }
}

/// Whether an `Accept` header admits `media` (absent admits everything).
pub(super) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept
        .split(',')
        .map(essence)
        .any(|m| m == media || m == "application/json" || m == "*/*" || m == "application/*")
}

fn content_type_is(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| essence(v) == media)
}

/// The request's course, checked to exist.
fn course<'a>(s: &Shared, params: &'a HashMap<String, String>) -> Result<&'a str, Refusal> {
    let ctx = params.get("ctx").map(String::as_str).unwrap_or("");
    if ctx.is_empty() || !lock(&s.data).has_course(ctx) {
        return Err(problem(s, StatusCode::NOT_FOUND, "Context not found").into());
    }
    Ok(ctx)
}

/// The URL parameters of the request's own URLs: the deployment it named (D2L) and the
/// `type_id` it carried or else the token's tool's (Moodle).
fn url_ctx(
    s: &Shared,
    params: &HashMap<String, String>,
    query: &[(String, String)],
    token: &AccessToken,
) -> UrlCtx {
    let default = s.default_url_ctx();
    let type_id = query
        .iter()
        .find(|(k, _)| k == "type_id")
        .and_then(|(_, v)| v.parse().ok())
        .or_else(|| s.tool(&token.client_id).map(|t| t.type_id))
        .unwrap_or(default.type_id);
    UrlCtx {
        type_id,
        deployment: params.get("dep").cloned().unwrap_or(default.deployment),
    }
}

/// Moodle's `type_id` is an integer; anything else there is a path appended after the
/// query (`...lineitem?type_id=1/scores`), which finds no resource.
fn check_query(s: &Shared, uri: &Uri) -> Result<Vec<(String, String)>, Refusal> {
    let query = parse_form(uri.query().unwrap_or("").as_bytes());
    let misplaced = query
        .iter()
        .any(|(k, v)| k == "type_id" && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit())))
        || query
            .iter()
            .any(|(_, v)| v.ends_with("/scores") || v.ends_with("/results"));
    if misplaced {
        return Err(problem(
            s,
            StatusCode::NOT_FOUND,
            "No such resource: append /scores or /results to the line item's path, before its query",
        )
        .into());
    }
    Ok(query)
}

pub(super) fn lineitem_json(s: &Shared, ctx: &str, item: &LineItem, at: &UrlCtx) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(s.lineitem_url(ctx, item.num, at)));
    for (k, v) in &item.fields {
        out.insert(k.clone(), v.clone());
    }
    if s.personality == Personality::Moodle {
        // Moodle's item_for_json: empty strings for absent resourceId and tag, and the
        // pre-2.0 ltiLinkId beside resourceLinkId.
        for name in ["resourceId", "tag"] {
            out.entry(name).or_insert_with(|| json!(""));
        }
        if let Some(link) = item.fields.get("resourceLinkId") {
            out.insert("ltiLinkId".into(), link.clone());
        }
    }
    Value::Object(out)
}

/// The fields of a line item from a POST or PUT body (AGS 2.0 §3.2.8, §3.3.1).
fn lineitem_fields(s: &Shared, body: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(input) = value else {
        return Err("the body is not a JSON object".into());
    };
    let mut fields = Map::new();
    match input.get("label") {
        Some(Value::String(label)) if !label.trim().is_empty() => {
            fields.insert("label".into(), json!(label));
        }
        _ => return Err("label is required and must be a non-empty string".into()),
    }
    match input.get("scoreMaximum").and_then(Value::as_f64) {
        Some(max) if max > 0.0 => {
            fields.insert("scoreMaximum".into(), json!(max));
        }
        _ => return Err("scoreMaximum is required and must be a number greater than 0".into()),
    }
    for name in ["resourceId", "tag", "resourceLinkId"] {
        match input.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) => {
                fields.insert(name.into(), json!(v));
            }
            Some(_) => return Err(format!("{name} must be a string")),
        }
    }
    for name in ["startDateTime", "endDateTime"] {
        match input.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if DateTime::parse_from_rfc3339(v).is_ok() => {
                fields.insert(name.into(), json!(v));
            }
            Some(_) => return Err(format!("{name} must be an ISO 8601 date and time")),
        }
    }
    match input.get("gradesReleased") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            fields.insert("gradesReleased".into(), json!(b));
        }
        Some(_) => return Err("gradesReleased must be a boolean".into()),
    }
    if s.personality == Personality::Canvas
        && let Some(ext) = input.get(CANVAS_SUBMISSION_TYPE)
    {
        let kind = ext.get("type").and_then(Value::as_str);
        if !matches!(kind, Some("none" | "external_tool")) {
            return Err(format!(
                "{CANVAS_SUBMISSION_TYPE}.type must be none or external_tool"
            ));
        }
        fields.insert(CANVAS_SUBMISSION_TYPE.into(), ext.clone());
    }
    Ok(fields)
}

/// `limit` and 1-based `page` from the query: `None` limit means everything.
fn paging(query: &[(String, String)]) -> Result<(Option<usize>, usize), String> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let limit = match get("limit") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err("limit must be a positive integer".into()),
        },
    };
    let page = match get("page") {
        None => 1,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return Err("page must be a positive integer".into()),
        },
    };
    Ok((limit, page))
}

/// One page of `items` and, when more follow, the URL of the next page: `base` with the
/// request's query less `page`, plus `page=N+1`.
pub(super) fn page_of<T: Clone>(
    items: &[T],
    limit: Option<usize>,
    page: usize,
    base: &str,
    query: &[(String, String)],
) -> (Vec<T>, Option<String>) {
    let Some(limit) = limit else {
        return (items.to_vec(), None);
    };
    let start = limit.saturating_mul(page - 1).min(items.len());
    let end = start.saturating_add(limit).min(items.len());
    let next = (end < items.len()).then(|| {
        let mut url = match url::Url::parse(base) {
            Ok(url) => url,
            Err(_) => return base.to_owned(),
        };
        let existing: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                if k != "page" && !existing.iter().any(|(ek, _)| ek == k) {
                    pairs.append_pair(k, v);
                }
            }
            pairs.append_pair("page", &(page + 1).to_string());
        }
        url.into()
    });
    (items[start..end].to_vec(), next)
}

pub(super) fn with_next_link(mut response: Response, next: Option<String>) -> Response {
    if let Some(next) = next
        && let Ok(value) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

pub(super) async fn lineitems(
    State(s): State<Arc<Shared>>,
    method: Method,
    Path(params): Path<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = match check_query(&s, &uri) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let scopes: &[&str] = match method {
        Method::GET => &[claim::SCOPE_LINEITEM, claim::SCOPE_LINEITEM_READONLY],
        Method::POST => &[claim::SCOPE_LINEITEM],
        _ => return problem(&s, StatusCode::METHOD_NOT_ALLOWED, "GET or POST"),
    };
    let token = match bearer(&s, &headers, scopes) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let ctx = match course(&s, &params) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let at = url_ctx(&s, &params, &query, &token);

    if method == Method::POST {
        if !content_type_is(&headers, media_type::LINEITEM) {
            return problem(
                &s,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Content-Type must be {}", media_type::LINEITEM),
            );
        }
        let fields = match lineitem_fields(&s, &body) {
            Ok(f) => f,
            Err(e) => return problem(&s, StatusCode::BAD_REQUEST, &e),
        };
        let mut data = lock(&s.data);
        let num = data.create_item(ctx, fields, Some(token.client_id.clone()));
        let item = match data.item(ctx, num) {
            Some(item) => lineitem_json(&s, ctx, item, &at),
            None => return problem(&s, StatusCode::INTERNAL_SERVER_ERROR, "line item lost"),
        };
        drop(data);
        return json_response(StatusCode::CREATED, media_type::LINEITEM, &item);
    }

    if !accepts(&headers, media_type::LINEITEM_CONTAINER) {
        return problem(
            &s,
            StatusCode::NOT_ACCEPTABLE,
            &format!("Accept must admit {}", media_type::LINEITEM_CONTAINER),
        );
    }
    let (limit, page) = match paging(&query) {
        Ok(p) => p,
        Err(e) => return problem(&s, StatusCode::BAD_REQUEST, &e),
    };
    let filter = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let items: Vec<Value> = {
        let data = lock(&s.data);
        data.items(ctx)
            .iter()
            .filter(|i| {
                // Canvas scopes line items to the developer key that made them.
                (s.personality != Personality::Canvas
                    || i.owner.as_ref().is_none_or(|o| *o == token.client_id))
                    && filter("resource_link_id")
                        .is_none_or(|f| i.str_field("resourceLinkId") == Some(f))
                    && filter("resource_id").is_none_or(|f| i.str_field("resourceId") == Some(f))
                    && filter("tag").is_none_or(|f| i.str_field("tag") == Some(f))
            })
            .map(|i| lineitem_json(&s, ctx, i, &at))
            .collect()
    };
    let base = s.lineitems_url(ctx, &at);
    let (page_items, next) = page_of(&items, limit, page, &base, &query);
    with_next_link(
        json_response(
            StatusCode::OK,
            media_type::LINEITEM_CONTAINER,
            &Value::Array(page_items),
        ),
        next,
    )
}

/// The line item a request names, with its URL parameters, after the bearer check.
struct Target {
    ctx: String,
    num: u64,
    at: UrlCtx,
    query: Vec<(String, String)>,
}

fn target(
    s: &Shared,
    params: &HashMap<String, String>,
    uri: &Uri,
    headers: &HeaderMap,
    scopes: &[&str],
) -> Result<Target, Refusal> {
    let query = check_query(s, uri)?;
    let token = bearer(s, headers, scopes)?;
    let ctx = course(s, params)?.to_owned();
    let num = params
        .get("id")
        .and_then(|id| s.parse_item_id(id))
        .filter(|num| lock(&s.data).item(&ctx, *num).is_some())
        .ok_or_else(|| {
            problem(
                s,
                StatusCode::NOT_FOUND,
                "The specified line item does not exist.",
            )
        })?;
    let at = url_ctx(s, params, &query, &token);
    Ok(Target {
        ctx,
        num,
        at,
        query,
    })
}

pub(super) async fn lineitem(
    State(s): State<Arc<Shared>>,
    method: Method,
    Path(params): Path<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scopes: &[&str] = match method {
        Method::GET => &[claim::SCOPE_LINEITEM, claim::SCOPE_LINEITEM_READONLY],
        Method::PUT | Method::DELETE => &[claim::SCOPE_LINEITEM],
        _ => {
            // A POST here is usually a score sent to the line item URL itself.
            if let Err(r) = check_query(&s, &uri) {
                return r.into_response();
            }
            return problem(&s, StatusCode::METHOD_NOT_ALLOWED, "GET, PUT or DELETE");
        }
    };
    let t = match target(&s, &params, &uri, &headers, scopes) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    match method {
        Method::GET => {
            if !accepts(&headers, media_type::LINEITEM) {
                return problem(
                    &s,
                    StatusCode::NOT_ACCEPTABLE,
                    &format!("Accept must admit {}", media_type::LINEITEM),
                );
            }
            let data = lock(&s.data);
            match data.item(&t.ctx, t.num) {
                Some(item) => {
                    let body = lineitem_json(&s, &t.ctx, item, &t.at);
                    drop(data);
                    json_response(StatusCode::OK, media_type::LINEITEM, &body)
                }
                None => problem(
                    &s,
                    StatusCode::NOT_FOUND,
                    "The specified line item does not exist.",
                ),
            }
        }
        Method::PUT => {
            if !content_type_is(&headers, media_type::LINEITEM) {
                return problem(
                    &s,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!("Content-Type must be {}", media_type::LINEITEM),
                );
            }
            let fields = match lineitem_fields(&s, &body) {
                Ok(f) => f,
                Err(e) => return problem(&s, StatusCode::BAD_REQUEST, &e),
            };
            let own_url = s.lineitem_url(&t.ctx, t.num, &t.at);
            let body_id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
            if body_id.is_some_and(|id| id != own_url) {
                return problem(
                    &s,
                    StatusCode::BAD_REQUEST,
                    "id does not match the line item's URL",
                );
            }
            let mut data = lock(&s.data);
            let Some(item) = data.item_mut(&t.ctx, t.num) else {
                return problem(
                    &s,
                    StatusCode::NOT_FOUND,
                    "The specified line item does not exist.",
                );
            };
            item.fields = fields;
            let body = lineitem_json(&s, &t.ctx, item, &t.at);
            drop(data);
            json_response(StatusCode::OK, media_type::LINEITEM, &body)
        }
        _ => {
            lock(&s.data).delete_item(&t.ctx, t.num);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

/// Remove and return the first queued AGS fault `pick` accepts.
fn take_fault<T>(s: &Shared, pick: impl Fn(&mut AgsFault) -> Option<(T, bool)>) -> Option<T> {
    let mut faults = lock(&s.ags_faults);
    for i in 0..faults.len() {
        let Some(fault) = faults.get_mut(i) else {
            break;
        };
        if let Some((out, done)) = pick(fault) {
            if done {
                faults.remove(i);
            }
            return Some(out);
        }
    }
    None
}

/// A parsed score (AGS 2.0 §3.4.2).
struct Score {
    user_id: String,
    score_given: Option<f64>,
    score_maximum: Option<f64>,
    activity_progress: String,
    grading_progress: String,
    timestamp: String,
    at: DateTime<FixedOffset>,
    comment: Option<String>,
}

fn parse_score(s: &Shared, body: &[u8]) -> Result<Score, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    let user_id = text("userId")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("The parameter userId is missing".into()))?
        .to_owned();
    let activity_progress = text("activityProgress")
        .ok_or_else(|| bad("The parameter activityProgress is missing".into()))?;
    if !ACTIVITY_PROGRESS.contains(&activity_progress) {
        return Err(bad(format!(
            "activityProgress {activity_progress} is not one of {ACTIVITY_PROGRESS:?}"
        )));
    }
    let grading_progress = text("gradingProgress")
        .ok_or_else(|| bad("The parameter gradingProgress is missing".into()))?;
    if !GRADING_PROGRESS.contains(&grading_progress) {
        return Err(bad(format!(
            "gradingProgress {grading_progress} is not one of {GRADING_PROGRESS:?}"
        )));
    }
    let timestamp =
        text("timestamp").ok_or_else(|| bad("The parameter timestamp is missing".into()))?;
    let at = DateTime::parse_from_rfc3339(timestamp).map_err(|_| {
        bad(format!(
            "Provided timestamp of {timestamp} not a valid timestamp"
        ))
    })?;
    // AGS §3.4.2: "ISO 8601 with a sub-second precision".
    let has_fraction = timestamp
        .split_once('T')
        .is_some_and(|(_, time)| time.contains('.'));
    if !has_fraction {
        return Err(bad(format!(
            "timestamp {timestamp} has no sub-second precision"
        )));
    }
    let number = |name: &str| match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| bad(format!("{name} must be a number"))),
    };
    let score_given = number("scoreGiven")?;
    let score_maximum = number("scoreMaximum")?;
    if score_given.is_some_and(|g| g < 0.0) {
        return Err(bad("scoreGiven must not be negative".into()));
    }
    if score_maximum.is_some_and(|m| m <= 0.0) {
        return Err(bad("scoreMaximum must be greater than 0".into()));
    }
    if score_given.is_some() && score_maximum.is_none() {
        // Canvas answers 422 here; Moodle (and the spec's MUST) a plain 400.
        let status = if s.personality == Personality::Canvas {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        return Err((
            status,
            "ScoreMaximum not supplied when ScoreGiven present.".into(),
        ));
    }
    let comment = match value.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(_) => return Err(bad("comment must be a string".into())),
    };
    Ok(Score {
        user_id,
        score_given,
        score_maximum,
        activity_progress: activity_progress.to_owned(),
        grading_progress: grading_progress.to_owned(),
        timestamp: timestamp.to_owned(),
        at,
        comment,
    })
}

/// Take a queued [`AgsFault::NotGradable`].
pub(super) fn take_not_gradable(s: &Shared) -> bool {
    take_fault(s, |f| {
        matches!(f, AgsFault::NotGradable).then_some(((), true))
    })
    .is_some()
}

/// Take a queued [`AgsFault::Hold`]: `(delay, stored)`.
pub(super) fn take_hold(s: &Shared) -> Option<(std::time::Duration, bool)> {
    take_fault(s, |f| match f {
        AgsFault::Hold {
            delay,
            stored,
            count,
        } if *count > 0 => {
            *count -= 1;
            Some(((*delay, *stored), *count == 0))
        }
        _ => None,
    })
}

pub(super) async fn scores(
    State(s): State<Arc<Shared>>,
    method: Method,
    Path(params): Path<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hold = if method == Method::POST {
        take_hold(&s)
    } else {
        None
    };
    if let Some((delay, false)) = hold {
        tokio::time::sleep(delay).await;
        return problem(&s, StatusCode::GATEWAY_TIMEOUT, "injected fault: not kept");
    }
    let response = score(s, method, params, uri, headers, body).await;
    if let Some((delay, true)) = hold {
        // Kept; the answer comes too late for a tool with a shorter timeout.
        tokio::time::sleep(delay).await;
    }
    response
}

async fn score(
    s: Arc<Shared>,
    method: Method,
    params: HashMap<String, String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return problem(&s, StatusCode::METHOD_NOT_ALLOWED, "POST requests only.");
    }
    let t = match target(&s, &params, &uri, &headers, &[claim::SCOPE_SCORE]) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if !content_type_is(&headers, media_type::SCORE) {
        return problem(
            &s,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Content-Type must be {}", media_type::SCORE),
        );
    }
    let injected = take_fault(&s, |f| match f {
        AgsFault::Status {
            status,
            retry_after,
            count,
        } if *count > 0 => {
            *count -= 1;
            Some(((*status, *retry_after), *count == 0))
        }
        _ => None,
    });
    if let Some((status, retry_after)) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = problem(&s, status, "injected fault");
        if let Some(secs) = retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let score = match parse_score(&s, &body) {
        Ok(score) => score,
        Err((status, message)) => return problem(&s, status, &message),
    };

    let forced = take_not_gradable(&s);
    let gradable = !forced
        && lock(&s.data)
            .member(&t.ctx, &score.user_id)
            .is_some_and(|m| m.is_gradable());
    if !gradable {
        return match s.personality {
            // Moodle's is_user_gradable_in_course check ends in "Incorrect score received".
            Personality::Moodle => problem(&s, StatusCode::BAD_REQUEST, "Incorrect score received"),
            Personality::Blackboard => problem(
                &s,
                StatusCode::BAD_REQUEST,
                "User is not gradable in this course",
            ),
            Personality::Canvas => problem(
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                "User not found in course or is not a student",
            ),
            Personality::D2l | Personality::Generic => problem(
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                "The user cannot be graded in this org unit",
            ),
        };
    }

    let line_item = s.lineitem_url(&t.ctx, t.num, &t.at);
    let mut data = lock(&s.data);
    let on_record = data.stamp(&t.ctx, t.num, &score.user_id);
    let mut score_given = score.score_given;
    let mut stamp = Some(score.at);
    match s.personality {
        Personality::Moodle => {
            // Moodle compares strtotime(timestamp) with the grade's timemodified: whole
            // seconds, and a tie is refused too.
            if on_record.is_some_and(|r| r.timestamp() >= score.at.timestamp()) {
                drop(data);
                return problem(
                    &s,
                    StatusCode::CONFLICT,
                    &format!(
                        "Refusing score with an earlier timestamp for item {} and user {}",
                        t.num, score.user_id
                    ),
                );
            }
            // Moodle saves a null grade (and no timemodified) unless FullyGraded.
            if score.grading_progress != "FullyGraded" {
                score_given = None;
            }
            if score_given.is_none() {
                stamp = None;
            }
        }
        Personality::Canvas => {
            if let Some(recorded) = on_record.filter(|r| *r > score.at) {
                drop(data);
                return problem(
                    &s,
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Provided timestamp of {} before last updated timestamp of {}",
                        score.timestamp,
                        recorded.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    ),
                );
            }
        }
        Personality::Blackboard | Personality::D2l | Personality::Generic => {
            // AGS §3.4.2: an older score MUST NOT update the result; it may be ignored.
            if on_record.is_some_and(|r| r > score.at) {
                drop(data);
                return score_accepted(&s, &t);
            }
        }
    }
    data.keep_score(
        &t.ctx,
        t.num,
        RecordedScore {
            line_item,
            user_id: score.user_id.clone(),
            score_given,
            score_maximum: score.score_maximum,
            timestamp: score.timestamp,
            activity_progress: score.activity_progress,
            grading_progress: score.grading_progress,
            comment: score.comment,
        },
        stamp,
    );
    drop(data);
    score_accepted(&s, &t)
}

fn score_accepted(s: &Shared, t: &Target) -> Response {
    match s.personality {
        Personality::Canvas => {
            let url = s.lineitem_sub_url(&t.ctx, t.num, "/results", &t.at);
            (StatusCode::OK, axum::Json(json!({ "resultUrl": url }))).into_response()
        }
        // Moodle answers 200 with an empty body.
        Personality::Moodle => StatusCode::OK.into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

pub(super) async fn results(
    State(s): State<Arc<Shared>>,
    method: Method,
    Path(params): Path<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return problem(&s, StatusCode::METHOD_NOT_ALLOWED, "GET requests only.");
    }
    let t = match target(&s, &params, &uri, &headers, &[claim::SCOPE_RESULT_READONLY]) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if !accepts(&headers, media_type::RESULT_CONTAINER) {
        return problem(
            &s,
            StatusCode::NOT_ACCEPTABLE,
            &format!("Accept must admit {}", media_type::RESULT_CONTAINER),
        );
    }
    let (limit, page) = match paging(&t.query) {
        Ok(p) => p,
        Err(e) => return problem(&s, StatusCode::BAD_REQUEST, &e),
    };
    let user_filter = t
        .query
        .iter()
        .find(|(k, _)| k == "user_id")
        .map(|(_, v)| v.clone());
    let line_item = s.lineitem_url(&t.ctx, t.num, &t.at);
    let results_url = s.lineitem_sub_url(&t.ctx, t.num, "/results", &t.at);
    let results: Vec<Value> = lock(&s.data)
        .results(&t.ctx, t.num)
        .into_iter()
        .filter(|r| user_filter.as_deref().is_none_or(|u| r.user_id == u))
        .map(|r| {
            let mut out = Map::new();
            let sep = if results_url.contains('?') { '&' } else { '?' };
            out.insert(
                "id".into(),
                json!(format!(
                    "{results_url}{sep}user_id={}",
                    super::path_segment(&r.user_id)
                )),
            );
            out.insert("scoreOf".into(), json!(line_item));
            out.insert("userId".into(), json!(r.user_id));
            if let Some(given) = r.score_given {
                out.insert("resultScore".into(), json!(given));
                out.insert(
                    "resultMaximum".into(),
                    json!(r.score_maximum.unwrap_or(1.0)),
                );
            }
            if let Some(comment) = r.comment {
                out.insert("comment".into(), json!(comment));
            }
            Value::Object(out)
        })
        .collect();
    let (page_items, next) = page_of(&results, limit, page, &results_url, &t.query);
    with_next_link(
        json_response(
            StatusCode::OK,
            media_type::RESULT_CONTAINER,
            &Value::Array(page_items),
        ),
        next,
    )
}
