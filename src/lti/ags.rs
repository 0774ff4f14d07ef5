//! Assignment and Grade Services 2.0 and Names and Role Provisioning 2.0 for the app:
//! scores are stored and delivered by a durable job (`lti.score`) in order per
//! (line item, user) with strictly increasing timestamps; line items and rosters are read
//! and written on request.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::platforms::Platform;
use super::store;
use super::token::{
    SCOPE_LINEITEM, SCOPE_LINEITEM_READ, SCOPE_NRPS, SCOPE_RESULT_READ, SCOPE_SCORE, platform_token,
};
use crate::http::{ApiError, FieldError};
use crate::jobs::{JobContext, JobError};
use crate::launches::Launch;
use crate::state::AppState;

pub const LINEITEM_TYPE: &str = "application/vnd.ims.lis.v2.lineitem+json";
pub const LINEITEMS_TYPE: &str = "application/vnd.ims.lis.v2.lineitemcontainer+json";
pub const SCORE_TYPE: &str = "application/vnd.ims.lis.v1.score+json";
pub const RESULTS_TYPE: &str = "application/vnd.ims.lis.v2.resultcontainer+json";
pub const MEMBERS_TYPE: &str = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json";

const ACTIVITY: [&str; 5] = [
    "Initialized",
    "Started",
    "InProgress",
    "Submitted",
    "Completed",
];
const GRADING: [&str; 5] = [
    "FullyGraded",
    "Pending",
    "PendingManual",
    "Failed",
    "NotReady",
];

/// `{line item}/scores`, keeping the line item's query string (Moodle's `?type_id=`).
pub fn scores_url(lineitem: &str) -> Result<url::Url, String> {
    let mut u = url::Url::parse(lineitem)
        .map_err(|e| format!("line item {lineitem:?} is not a URL: {e}"))?;
    let path = format!("{}/scores", u.path().trim_end_matches('/'));
    u.set_path(&path);
    Ok(u)
}

/// A score from the app, checked (AGS §3.4).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRequest {
    pub user_id: String,
    pub score_given: Option<f64>,
    pub score_maximum: Option<f64>,
    pub activity_progress: String,
    pub grading_progress: String,
    pub comment: Option<String>,
    pub line_item: Option<String>,
}

pub fn parse_score(
    body: &Value,
    default_user: Option<&str>,
) -> Result<ScoreRequest, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut err = |field: &str, reason: String| {
        errs.push(FieldError {
            index: None,
            field: field.into(),
            reason,
        })
    };
    let num = |k: &str| body.get(k).and_then(Value::as_f64);
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let user_id = text("userId").or_else(|| default_user.map(str::to_owned));
    if user_id.as_deref().is_none_or(str::is_empty) {
        err("userId", "missing, and the launch has no user".into());
    }
    let given = num("scoreGiven");
    let maximum = num("scoreMaximum");
    if body
        .get("scoreGiven")
        .is_some_and(|v| !v.is_number() && !v.is_null())
    {
        err("scoreGiven", "must be a number".into());
    }
    if let Some(g) = given
        && !(g >= 0.0 && g.is_finite())
    {
        err("scoreGiven", "must be 0 or more".into());
    }
    match (given, maximum) {
        (Some(_), None) => err("scoreMaximum", "required with scoreGiven".into()),
        (_, Some(m)) if !(m > 0.0 && m.is_finite()) => {
            err("scoreMaximum", "must be above 0".into())
        }
        _ => {}
    }
    let activity = text("activityProgress").unwrap_or_default();
    if !ACTIVITY.contains(&activity.as_str()) {
        err(
            "activityProgress",
            format!("must be one of {}", ACTIVITY.join(", ")),
        );
    }
    let grading = text("gradingProgress").unwrap_or_default();
    if !GRADING.contains(&grading.as_str()) {
        err(
            "gradingProgress",
            format!("must be one of {}", GRADING.join(", ")),
        );
    }
    let comment = text("comment");
    if comment.as_ref().is_some_and(|c| c.len() > 10_000) {
        err("comment", "at most 10000 characters".into());
    }
    let line_item = text("lineItem");
    if let Some(li) = &line_item
        && crate::outbound::parse_http_url(li).is_err()
    {
        err("lineItem", "must be the line item's URL".into());
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ScoreRequest {
        user_id: user_id.unwrap_or_default(),
        score_given: given,
        score_maximum: maximum,
        activity_progress: activity,
        grading_progress: grading,
        comment,
        line_item,
    })
}

/// The AGS score body.
pub fn score_body(s: &ScoreRequest, timestamp: DateTime<Utc>) -> Value {
    let mut v = json!({
        "userId": s.user_id,
        "activityProgress": s.activity_progress,
        "gradingProgress": s.grading_progress,
        "timestamp": timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    if let Some(g) = s.score_given {
        v["scoreGiven"] = json!(g);
    }
    if let Some(m) = s.score_maximum {
        v["scoreMaximum"] = json!(m);
    }
    if let Some(c) = &s.comment {
        v["comment"] = json!(c);
    }
    v
}

/// The platform of an LTI launch, as registered now.
pub async fn launch_platform(state: &AppState, launch: &Launch) -> Result<Platform, ApiError> {
    let s = |k: &str| {
        launch
            .context
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let platforms = super::platforms::find(state, &s("iss"), Some(&s("client_id"))).await?;
    super::platforms::for_deployment(&platforms, &s("deployment_id"))
        .cloned()
        .ok_or_else(|| {
            ApiError::Gone(format!(
                "the platform of launch {} is no longer registered",
                launch.id
            ))
        })
}

/// The AGS scopes the launch's claim offers: the only ones the tool may ask a token for
/// (AGS 2.0 §3.1).
fn offered(ags: &Value) -> Vec<&str> {
    ags.get("scope")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The scope to read line items with: `lineitem.readonly` when offered, else `lineitem`
/// (full management includes reading); None when neither is.
fn read_scope(ags: &Value) -> Option<&'static str> {
    let o = offered(ags);
    if o.contains(&SCOPE_LINEITEM_READ) {
        Some(SCOPE_LINEITEM_READ)
    } else if o.contains(&SCOPE_LINEITEM) {
        Some(SCOPE_LINEITEM)
    } else {
        None
    }
}

fn ags_claim(launch: &Launch) -> Result<&Value, ApiError> {
    launch
        .context
        .get("ags")
        .filter(|a| !a.is_null())
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "launch {} has no grade service (AGS): the LMS did not offer it",
                launch.id
            ))
        })
}

/// Store the score and enqueue its delivery, in one transaction. Returns the score id.
pub async fn accept_score(
    state: &AppState,
    posted_on: &Launch,
    mut score: ScoreRequest,
) -> Result<String, ApiError> {
    // A learner who launched this link again through the other LTI version gets the score
    // through that newer launch (`people::score_launch`), under its user id.
    let routed = super::people::score_launch(
        &state.db,
        posted_on,
        &score.user_id,
        score.line_item.as_deref(),
    )
    .await?;
    if let Some(other) = &routed {
        score.user_id = other.user_id.clone().unwrap_or_default();
    }
    let launch = routed.as_ref().unwrap_or(posted_on);
    if launch.kind != crate::launches::LaunchKind::Lti {
        return Err(ApiError::Conflict(format!(
            "launch {} is not an LTI launch",
            launch.id
        )));
    }
    let lti11 = launch.context.get("lti_version").and_then(Value::as_str) == Some("1.1");
    if lti11 && score.score_given.is_none() {
        // replaceResult carries a number from 0 to 1 and nothing else: refuse now rather
        // than accept what can never be delivered.
        return Err(ApiError::Validation {
            detail: format!(
                "launch {} is an LTI 1.1 launch: its outcome service takes a score only; nothing was stored",
                launch.id
            ),
            errors: vec![FieldError {
                index: None,
                field: "scoreGiven".into(),
                reason: "required for an LTI 1.1 launch (with scoreMaximum)".into(),
            }],
        });
    }
    if !lti11 {
        let ags = ags_claim(launch)?;
        let can_score = ags
            .get("scope")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|x| x.as_str() == Some(SCOPE_SCORE)));
        if !can_score {
            return Err(ApiError::Conflict(format!(
                "the LMS did not grant launch {} the score scope",
                launch.id
            )));
        }
        if let Some(li) = &score.line_item {
            same_origin(ags, li)?;
        }
    }
    let target = score
        .line_item
        .clone()
        .or_else(|| {
            launch
                .ctx("/resource_link/id")
                .and_then(Value::as_str)
                .map(|r| format!("rl:{r}"))
        })
        .unwrap_or_else(|| format!("launch:{}", launch.id));
    let series = hex::encode(Sha256::digest(
        format!(
            "{}\n{}\n{}\n{}",
            launch
                .context
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            launch
                .context
                .get("deployment_id")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            target,
            score.user_id
        )
        .as_bytes(),
    ));
    let id = crate::ids::new(crate::ids::SCORE);
    let payload = serde_json::to_string(&json!({
        "userId": score.user_id, "scoreGiven": score.score_given, "scoreMaximum": score.score_maximum,
        "activityProgress": score.activity_progress, "gradingProgress": score.grading_progress,
        "comment": score.comment, "lineItem": score.line_item,
    }))
    .map_err(|e| ApiError::Internal(e.into()))?;
    for attempt in 0..3 {
        let now = crate::time::now_micros();
        let mut tx = state.db.begin().await?;
        // The same score already posted on the learner's launch of the other version: one
        // score, delivered once.
        let last = store::last_score(&mut tx, &series).await?;
        if let Some(prev) = &last
            && prev.status != "failed"
            && prev.payload == payload
            && prev.posted_on != posted_on.id
        {
            return Ok(prev.id.clone());
        }
        let (seq, ts) = match last {
            // At least a second after the previous one: Moodle compares at one-second resolution.
            Some(prev) => (prev.seq + 1, now.max(prev.timestamp_us + 1_000_000)),
            None => (1, now),
        };
        let row = store::NewScore {
            id: &id,
            launch_id: &launch.id,
            partner_id: &launch.partner_id,
            series: &series,
            seq,
            user_id: &score.user_id,
            payload: &payload,
            timestamp_us: ts,
            created_at_us: now,
            posted_launch_id: routed.as_ref().map(|_| posted_on.id.as_str()),
        };
        let inserted = store::insert_score(&mut tx, &row).await;
        match inserted {
            Err(e) if crate::db::is_unique_violation(&e) && attempt < 2 => continue, // a concurrent score took seq
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let mut job = crate::jobs::NewJob::new("lti.score", json!({ "score_id": id }));
        job.partner_id = Some(launch.partner_id.clone());
        job.dedupe_key = Some(format!("lti.score:{id}"));
        crate::jobs::enqueue(
            &mut tx,
            &job,
            state.config.jobs.max_attempts,
            chrono::Utc::now(),
        )
        .await?;
        tx.commit().await?;
        return Ok(id);
    }
    Err(ApiError::Conflict(
        "too many concurrent scores for this user; retry".into(),
    ))
}

/// A line item URL must live with the launch's line items (no posting tokens elsewhere).
fn same_origin(ags: &Value, url: &str) -> Result<(), ApiError> {
    let origin = |u: &str| {
        url::Url::parse(u)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    };
    let container = ags
        .get("lineitems")
        .or_else(|| ags.get("lineitem"))
        .and_then(Value::as_str);
    match (container.and_then(origin), origin(url)) {
        (Some(a), Some(b)) if a == b => Ok(()),
        _ => Err(ApiError::bad_request(
            "invalid_line_item",
            format!("{url} is not a line item of this launch's platform"),
        )),
    }
}

/// The `lti.score` job: deliver one stored score.
///
/// A score can reach the LMS while its answer does not reach the gateway (the LMS answered
/// after the outbound timeout, or the gateway crashed waiting). The resend carries the same
/// timestamp, and Moodle refuses it with 409 ("not later than the stored one"): so a 409,
/// or any refusal of a resend, is final only after the LMS's result for the user has been
/// read back and does not hold this score ([`confirm_resend`]).
pub async fn deliver(state: AppState, ctx: JobContext) -> Result<(), JobError> {
    let score_id = ctx
        .payload
        .get("score_id")
        .and_then(Value::as_str)
        .ok_or_else(|| JobError::Permanent("the job has no score_id".into()))?
        .to_owned();
    let row = store::score_to_send(&state.db, &score_id)
        .await
        .map_err(|e| JobError::Retry(e.to_string()))?;
    let Some(store::ScoreToSend {
        launch_id,
        series,
        status,
        seq,
        payload: body,
        timestamp_us: ts,
        attempts,
        line_item: known_line_item,
    }) = row
    else {
        return Err(JobError::Permanent(format!("score {score_id} is gone")));
    };
    if status != "pending" {
        return Ok(()); // delivered or refused by an earlier run
    }
    let earlier = store::pending_before(&state.db, &series, seq)
        .await
        .map_err(|e| JobError::Retry(e.to_string()))?;
    if earlier > 0 {
        return Err(JobError::RetryAfter {
            reason: "an earlier score for this user and line item is still on its way".into(),
            after: Duration::from_secs(1),
        });
    }
    // Counted before sending: an attempt whose answer is lost still counts, so the next
    // run knows it is a resend.
    bump_attempts(&state, &score_id).await;
    let attempt = Attempt(attempts + 1);
    let launch = crate::launches::find_launch(&state.db, &launch_id)
        .await
        .map_err(|e| JobError::Retry(e.to_string()))?
        .ok_or_else(|| JobError::Permanent(format!("launch {launch_id} is gone")))?;
    let req: Value = serde_json::from_str(&body).map_err(|e| JobError::Permanent(e.to_string()))?;
    let score = parse_score(&req, None)
        .map_err(|e| JobError::Permanent(format!("stored score is invalid: {e:?}")))?;
    let timestamp = crate::time::from_micros(ts);
    if launch.context.get("lti_version").and_then(Value::as_str) == Some("1.1") {
        return super::lti11::deliver(&state, &launch, &score_id, &score, attempt).await;
    }
    let platform = launch_platform(&state, &launch)
        .await
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    let line_item = match known_line_item.or(score.line_item.clone()) {
        Some(li) => li,
        None => resolve_line_item(&state, &platform, &launch, &score).await?,
    };
    record_line_item(&state, &score_id, &line_item).await;
    let url = scores_url(&line_item).map_err(JobError::Permanent)?;
    let body = score_body(&score, timestamp);
    let mut fresh = false;
    loop {
        let token = match platform_token(&state, &platform, &[SCOPE_SCORE], fresh).await {
            Ok(t) => t,
            Err(e) => {
                let why = format!("getting a token from the LMS: {e}");
                note_failure(&state, &score_id, None, &why).await;
                return Err(JobError::Retry(why));
            }
        };
        let sent = state
            .outbound
            .client()
            .post(url.clone())
            .bearer_auth(&token)
            .header("content-type", SCORE_TYPE)
            .body(body.to_string())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                // The LMS may have stored it anyway (a late answer): the resend finds out.
                let why = format!(
                    "posting the score: {}",
                    crate::smart::discovery::error_chain(&e.without_url())
                );
                note_failure(&state, &score_id, None, &why).await;
                return Err(JobError::Retry(why));
            }
        };
        let status = resp.status().as_u16();
        if status == 401 && !fresh {
            fresh = true; // the cached token was revoked or expired early
            continue;
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Moodle says why in the status line ("Incorrect score received") with a body of `[]`.
        let phrase = crate::outbound::refusal::reason_phrase(&resp);
        let text = resp.bytes().await.unwrap_or_default();
        let reason = crate::outbound::refusal::describe(phrase.as_deref(), &text);
        let answered = if reason.is_empty() {
            format!("the platform answered {status}")
        } else {
            format!("the platform answered {status}: {reason}")
        };
        return match status {
            200..=299 => {
                mark_delivered(&state, &score_id, &launch, &line_item, status, &score, None)
                    .await?;
                Ok(())
            }
            429 | 503 => {
                note_failure(&state, &score_id, Some(status), &answered).await;
                Err(JobError::RetryAfter {
                    reason: answered,
                    after: Duration::from_secs(retry_after.unwrap_or(30).min(3600)),
                })
            }
            500..=599 | 408 => {
                note_failure(&state, &score_id, Some(status), &answered).await;
                Err(JobError::Retry(answered))
            }
            _ => {
                // 400 (Moodle: user not gradable), 403, 404, 409, 422 (D2L): it will not get
                // better, unless it is the LMS refusing a copy of what it already holds.
                let why = if reason.is_empty() {
                    format!("the platform refused the score with {status}")
                } else {
                    format!("the platform refused the score with {status}: {reason}")
                };
                if status != 409 && !attempt.is_resend() {
                    mark_refused(&state, &score_id, &launch, &score.user_id, status, &why).await?;
                    return Err(JobError::Permanent(why));
                }
                let held = confirm_resend(&state, &platform, &launch, &line_item, &score).await;
                settle_refusal(
                    &state, &score_id, &launch, &line_item, &score, attempt, status, &why, held,
                )
                .await
            }
        };
    }
}

/// Which run of a score's job this is (1 = the first send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt(pub i64);

impl Attempt {
    /// An earlier attempt sent the score, and its answer may have been lost.
    pub fn is_resend(self) -> bool {
        self.0 > 1
    }
}

/// What the LMS holds for the user, read back after a refusal.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// This score: an earlier attempt delivered it.
    Same,
    /// Something else, or nothing: the refusal stands.
    Other(String),
    /// The LMS offers no way to read it (no result service, or it refused the read).
    Unreadable(String),
    /// The read failed for now (network, 5xx, 429): try the whole delivery again later.
    Later(String),
}

/// End a refused send by what the LMS holds: delivered when it holds this score; refused
/// when it holds something else or nothing; for a resend that cannot be checked, neither:
/// `unknown` (a first send cannot have been stored before, so there it is refused).
#[allow(clippy::too_many_arguments)]
pub async fn settle_refusal(
    state: &AppState,
    score_id: &str,
    launch: &Launch,
    line_item: &str,
    score: &ScoreRequest,
    attempt: Attempt,
    status: u16,
    why: &str,
    held: Held,
) -> Result<(), JobError> {
    match held {
        Held::Same => {
            let note = format!(
                "{why}; the LMS already holds this score (read back from its result for the user): an earlier attempt delivered it"
            );
            mark_delivered(
                state,
                score_id,
                launch,
                line_item,
                status,
                score,
                Some(&note),
            )
            .await
        }
        Held::Unreadable(cannot) if attempt.is_resend() => {
            let note = format!(
                "delivered or refused: unknown. {why}; an earlier attempt may have stored it, and {cannot}: check the gradebook"
            );
            mark_unknown(state, score_id, launch, &score.user_id, status, &note).await?;
            Err(JobError::Permanent(note))
        }
        Held::Later(e) => {
            let note = format!("{why}; reading back the LMS's result failed for now: {e}");
            note_failure(state, score_id, Some(status), &note).await;
            Err(JobError::Retry(note))
        }
        Held::Other(_) | Held::Unreadable(_) => {
            mark_refused(state, score_id, launch, &score.user_id, status, why).await?;
            Err(JobError::Permanent(why.to_owned()))
        }
    }
}

/// `{line item}/results?user_id=...`, keeping the line item's query (Moodle's `?type_id=`).
pub fn results_url(lineitem: &str, user_id: &str) -> Result<url::Url, String> {
    let mut u = url::Url::parse(lineitem)
        .map_err(|e| format!("line item {lineitem:?} is not a URL: {e}"))?;
    let path = format!("{}/results", u.path().trim_end_matches('/'));
    u.set_path(&path);
    u.query_pairs_mut().append_pair("user_id", user_id);
    Ok(u)
}

/// Whether a result (AGS 2.0 §3.3) is this score: the same fraction of the maximum (LMSs
/// rescale to the line item's maximum and round: Moodle keeps five decimals), and the same
/// comment when the LMS returns one. A score without `scoreGiven` matches a result without
/// `resultScore`.
pub fn result_matches(result: &Value, score: &ScoreRequest) -> bool {
    let given = result.get("resultScore").and_then(Value::as_f64);
    let same_score = match (score.score_given, given) {
        (Some(g), Some(r)) => {
            let ours = g / score.score_maximum.unwrap_or(1.0);
            let max = result
                .get("resultMaximum")
                .and_then(Value::as_f64)
                .filter(|m| *m > 0.0)
                .unwrap_or(1.0);
            (ours - r / max).abs() <= 1e-4
        }
        (None, None) => true,
        _ => false,
    };
    let same_comment = match (
        score.comment.as_deref().map(str::trim),
        result.get("comment").and_then(Value::as_str).map(str::trim),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    same_score && same_comment
}

/// Read the LMS's result for the score's user on the line item (AGS result service).
pub async fn confirm_resend(
    state: &AppState,
    platform: &Platform,
    launch: &Launch,
    line_item: &str,
    score: &ScoreRequest,
) -> Held {
    let offered_results = launch
        .context
        .get("ags")
        .is_some_and(|a| offered(a).contains(&SCOPE_RESULT_READ));
    if !offered_results {
        return Held::Unreadable(
            "the LMS offers no result service to read back what it stored (scope result.readonly)"
                .into(),
        );
    }
    let url = match results_url(line_item, &score.user_id) {
        Ok(u) => u,
        Err(e) => return Held::Unreadable(e),
    };
    let token = match platform_token(state, platform, &[SCOPE_RESULT_READ], false).await {
        Ok(t) => t,
        Err(e) => return Held::Later(format!("a token to read results: {e}")),
    };
    let resp = match state
        .outbound
        .client()
        .get(url)
        .bearer_auth(&token)
        .header("accept", RESULTS_TYPE)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Held::Later(format!(
                "reading the result: {}",
                crate::smart::discovery::error_chain(&e.without_url())
            ));
        }
    };
    let status = resp.status().as_u16();
    let phrase = crate::outbound::refusal::reason_phrase(&resp);
    let bytes = resp.bytes().await.unwrap_or_default();
    match status {
        200..=299 => {}
        429 | 500..=599 => return Held::Later(format!("the results read answered {status}")),
        _ => {
            let why = crate::outbound::refusal::describe(phrase.as_deref(), &bytes);
            return Held::Unreadable(format!(
                "the LMS refused to read its result ({status} {why})"
            ));
        }
    }
    let results: Vec<Value> = match serde_json::from_slice(&bytes) {
        Ok(Value::Array(items)) => items,
        _ => return Held::Unreadable("the LMS's results answer is not a list".into()),
    };
    let mine = results
        .iter()
        .filter(|r| r.get("userId").and_then(Value::as_str) == Some(score.user_id.as_str()))
        .collect::<Vec<_>>();
    match mine.as_slice() {
        [] => Held::Other("the LMS holds no result for the user".into()),
        list if list.iter().any(|r| result_matches(r, score)) => Held::Same,
        [r, ..] => Held::Other(format!("the LMS holds another result: {r}")),
    }
}

// Bookkeeping beside a delivery: a failure to write it must not fail the delivery, so it is
// logged and the job goes on.
async fn bump_attempts(state: &AppState, id: &str) {
    if let Err(e) = store::bump_attempts(&state.db, id).await {
        tracing::warn!(score = id, error = %e, "cannot count a score's attempt");
    }
}

async fn record_line_item(state: &AppState, id: &str, li: &str) {
    if let Err(e) = store::set_line_item(&state.db, id, li).await {
        tracing::warn!(score = id, error = %e, "cannot record a score's line item");
    }
}

/// Keep a failure that will be retried beside the score: the LMS's status, or none when
/// it was not reached (network, timeout, token).
pub async fn note_failure(state: &AppState, id: &str, status: Option<u16>, reason: &str) {
    let reason = clean_reason(reason);
    if let Err(e) = store::note_failure(&state.db, id, status, &reason).await {
        tracing::warn!(score = id, error = %e, "cannot record a score's failed attempt");
    }
}

/// A platform's text may hold U+0000, which PostgreSQL refuses; and it is kept bounded.
fn clean_reason(reason: &str) -> String {
    reason.chars().filter(|c| *c != '\0').take(1000).collect()
}

/// The LMS refused a resend and offers no way to tell whether an earlier attempt stored the
/// score: `unknown`, with `grade.unconfirmed`. Not metered (not known to have been posted).
pub async fn mark_unknown(
    state: &AppState,
    id: &str,
    launch: &Launch,
    user_id: &str,
    status: u16,
    reason: &str,
) -> Result<(), JobError> {
    let event = crate::webhooks::events::GRADE_UNCONFIRMED;
    settle_undelivered(state, id, launch, user_id, status, reason, "unknown", event).await
}

/// The platform refused the score for good: keep its status and reason, with
/// `grade.failed`.
pub async fn mark_refused(
    state: &AppState,
    id: &str,
    launch: &Launch,
    user_id: &str,
    status: u16,
    reason: &str,
) -> Result<(), JobError> {
    let event = crate::webhooks::events::GRADE_FAILED;
    settle_undelivered(state, id, launch, user_id, status, reason, "failed", event).await
}

/// End a pending score as `outcome` (failed or unknown) with its status and reason, and
/// send `event`, in one transaction (spawned, so a cancelled job cannot cut it in two).
#[allow(clippy::too_many_arguments)]
async fn settle_undelivered(
    state: &AppState,
    id: &str,
    launch: &Launch,
    user_id: &str,
    status: u16,
    reason: &str,
    outcome: &'static str,
    event: &'static str,
) -> Result<(), JobError> {
    let now = chrono::Utc::now();
    let reason = clean_reason(reason);
    let data = json!({
        "score_id": id, "launch_id": launch.id, "partner": launch.partner_id,
        "user_id": user_id, "status": status, "reason": reason,
    });
    let (db, id, partner) = (state.db.clone(), id.to_owned(), launch.partner_id.clone());
    tokio::spawn(async move {
        let mut tx = db.begin().await?;
        store::settle_score(&mut tx, &id, status, &reason, outcome).await?;
        crate::webhooks::emit(&mut tx, Some(&partner), event, &data, now).await?;
        tx.commit().await?;
        Ok::<(), anyhow::Error>(())
    })
    .await
    .map_err(|e| JobError::Retry(e.to_string()))?
    .map_err(|e| JobError::Retry(format!("{e:#}")))
}

/// Mark delivered and record `lti.grade_posted`, in one transaction. `note` says how it
/// was known when not from a 2xx (a resend refused, the result read back).
pub async fn mark_delivered(
    state: &AppState,
    id: &str,
    launch: &Launch,
    line_item: &str,
    status: u16,
    score: &ScoreRequest,
    note: Option<&str>,
) -> Result<(), JobError> {
    let note = note.map(clean_reason);
    let now = chrono::Utc::now();
    let event = crate::metering::UsageEvent {
        partner_id: launch.partner_id.clone(),
        id: format!("score:{id}"),
        source: "partner-gateway/lti".into(),
        event_type: "lti.grade_posted".into(),
        subject: Some(score.user_id.clone()),
        time: now,
        data: Some(json!({
            "launch_id": launch.id, "score_id": id, "line_item": line_item,
            "context_id": launch.ctx("/context/id"),
            "grading_progress": score.grading_progress,
        })),
        extensions: None,
    };
    let delivered = json!({
        "score_id": id, "launch_id": launch.id, "partner": launch.partner_id,
        "user_id": score.user_id, "line_item": line_item, "status": status,
    });
    let (db, id, partner) = (state.db.clone(), id.to_owned(), launch.partner_id.clone());
    let subjects = state.subjects.clone();
    tokio::spawn(async move {
        let mut tx = db.begin().await?;
        let at = crate::time::to_micros(now);
        store::mark_delivered(&mut tx, &id, at, status, note.as_deref()).await?;
        crate::metering::record_usage_event(&mut tx, &subjects, event).await?;
        crate::webhooks::emit(
            &mut tx,
            Some(&partner),
            crate::webhooks::events::GRADE_DELIVERED,
            &delivered,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok::<(), anyhow::Error>(())
    })
    .await
    .map_err(|e| JobError::Retry(e.to_string()))?
    .map_err(|e| JobError::Retry(format!("{e:#}")))
}

/// The line item for a score without one: the launch's own, else the one of its resource
/// link in the container, else a new one.
async fn resolve_line_item(
    state: &AppState,
    platform: &Platform,
    launch: &Launch,
    score: &ScoreRequest,
) -> Result<String, JobError> {
    let ags = launch.context.get("ags").cloned().unwrap_or(Value::Null);
    if let Some(li) = ags.get("lineitem").and_then(Value::as_str) {
        return Ok(li.to_owned());
    }
    let container = ags
        .get("lineitems")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            JobError::Permanent(
                "the launch has neither a line item nor a line item container".into(),
            )
        })?;
    let link = launch
        .ctx("/resource_link/id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let read = read_scope(&ags).ok_or_else(|| {
        JobError::Permanent(
            "the LMS offered no line item scope and no line item for this launch: send lineItem with the score"
                .into(),
        )
    })?;
    let token = platform_token(state, platform, &[read], false)
        .await
        .map_err(|e| JobError::Retry(format!("platform token: {e}")))?;
    let mut list = url::Url::parse(container).map_err(|e| JobError::Permanent(e.to_string()))?;
    list.query_pairs_mut().append_pair("resource_link_id", link);
    let items = get_all(state, &token, list.as_str(), LINEITEMS_TYPE)
        .await
        .map_err(|e| JobError::Retry(e.to_string()))?;
    if let Some(li) = items
        .iter()
        .find_map(|i| i.get("id").and_then(Value::as_str))
    {
        return Ok(li.to_owned());
    }
    if !offered(&ags).contains(&SCOPE_LINEITEM) {
        return Err(JobError::Permanent(
            "the resource link has no line item and the LMS did not offer line item management to create one"
                .into(),
        ));
    }
    let token = if read == SCOPE_LINEITEM {
        token
    } else {
        platform_token(state, platform, &[SCOPE_LINEITEM], false)
            .await
            .map_err(|e| JobError::Retry(format!("platform token: {e}")))?
    };
    let title = launch
        .ctx("/resource_link/title")
        .and_then(Value::as_str)
        .unwrap_or("Score");
    let create = json!({
        "scoreMaximum": score.score_maximum.unwrap_or(100.0),
        "label": title,
        "resourceLinkId": link,
    });
    let resp = state
        .outbound
        .client()
        .post(container)
        .bearer_auth(&token)
        .header("content-type", LINEITEM_TYPE)
        .header("accept", LINEITEM_TYPE)
        .body(create.to_string())
        .send()
        .await
        .map_err(|e| {
            JobError::Retry(format!(
                "creating the line item: {}",
                crate::smart::discovery::error_chain(&e.without_url())
            ))
        })?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match (status, body.get("id").and_then(Value::as_str)) {
        (200..=299, Some(id)) => Ok(id.to_owned()),
        (500..=599 | 429, _) => Err(JobError::Retry(format!("creating the line item: {status}"))),
        _ => Err(JobError::Permanent(format!(
            "the platform refused the line item: {status} {body}"
        ))),
    }
}

/// GET a paged AGS/NRPS collection, following `Link: <...>; rel="next"` (at most 100
/// pages). Returns the items (for NRPS, the `members`).
pub async fn get_all(
    state: &AppState,
    token: &str,
    first: &str,
    accept: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(u) = next.take() {
        pages += 1;
        anyhow::ensure!(pages <= 100, "more than 100 pages");
        let url = state.outbound.url(&u)?;
        let resp = state
            .outbound
            .client()
            .get(url)
            .bearer_auth(token)
            .header("accept", accept)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(crate::smart::discovery::error_chain(&e.without_url())))?;
        let status = resp.status();
        next = resp
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(
            status.is_success(),
            "the platform answered {} for {}",
            status.as_u16(),
            u
        );
        match body {
            Value::Array(items) => out.extend(items),
            Value::Object(ref o) if o.contains_key("members") => out.extend(
                o.get("members")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => anyhow::bail!("unexpected body from {u}"),
        }
    }
    Ok(out)
}

/// The `rel="next"` target of a Link header value.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// The roster of a launch's context.
pub async fn members(state: &AppState, launch: &Launch) -> Result<Vec<Value>, ApiError> {
    let url = launch
        .ctx("/nrps/context_memberships_url")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::Conflict(format!("launch {} has no roster service (NRPS)", launch.id))
        })?
        .to_owned();
    let platform = launch_platform(state, launch).await?;
    let token = platform_token(state, &platform, &[SCOPE_NRPS], false)
        .await
        .map_err(|e| ApiError::BadGateway {
            code: "lms_token_failed",
            detail: e.to_string(),
        })?;
    let members = get_all(state, &token, &url, MEMBERS_TYPE)
        .await
        .map_err(|e| ApiError::BadGateway {
            code: "lms_error",
            detail: format!("{e:#}"),
        })?;
    Ok(members)
}

/// Line items of the launch's context (`query` passes `resource_link_id`, `tag`, ...).
pub async fn list_line_items(
    state: &AppState,
    launch: &Launch,
    query: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let container = ags_claim(launch)?
        .get("lineitems")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::Conflict("the LMS gave this launch no line item container".into())
        })?;
    let mut url = url::Url::parse(container).map_err(|e| ApiError::Internal(e.into()))?;
    if let Some(q) = query {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            // The LMS's own filters; `limit` and `cursor` are the gateway's paging over
            // every page the LMS gives.
            if matches!(k.as_ref(), "resource_link_id" | "resource_id" | "tag") {
                url.query_pairs_mut().append_pair(&k, &v);
            }
        }
    }
    let scope = read_scope(ags_claim(launch)?).ok_or_else(|| {
        ApiError::Conflict("the LMS offered this launch no line item scope".into())
    })?;
    let platform = launch_platform(state, launch).await?;
    let token = platform_token(state, &platform, &[scope], false)
        .await
        .map_err(|e| ApiError::BadGateway {
            code: "lms_token_failed",
            detail: e.to_string(),
        })?;
    let items = get_all(state, &token, url.as_str(), LINEITEMS_TYPE)
        .await
        .map_err(|e| ApiError::BadGateway {
            code: "lms_error",
            detail: format!("{e:#}"),
        })?;
    Ok(items)
}

/// Create (`None` id, POST to the container), update (PUT) or delete a line item.
pub async fn write_line_item(
    state: &AppState,
    launch: &Launch,
    method: reqwest::Method,
    id: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value), ApiError> {
    let ags = ags_claim(launch)?;
    let target = match id {
        Some(i) => {
            same_origin(ags, i)?;
            i.to_owned()
        }
        None => ags
            .get("lineitems")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::Conflict("the LMS gave this launch no line item container".into())
            })?
            .to_owned(),
    };
    let platform = launch_platform(state, launch).await?;
    let scope = if method == reqwest::Method::GET {
        read_scope(ags).ok_or_else(|| {
            ApiError::Conflict("the LMS offered this launch no line item scope".into())
        })?
    } else if offered(ags).contains(&SCOPE_LINEITEM) {
        SCOPE_LINEITEM
    } else {
        return Err(ApiError::Conflict(
            "the LMS did not offer this launch line item management (scope lineitem)".into(),
        ));
    };
    let token = platform_token(state, &platform, &[scope], false)
        .await
        .map_err(|e| ApiError::BadGateway {
            code: "lms_token_failed",
            detail: e.to_string(),
        })?;
    let url = state
        .outbound
        .url(&target)
        .map_err(|e| ApiError::BadGateway {
            code: "lms_refused",
            detail: e.to_string(),
        })?;
    let mut req = state
        .outbound
        .client()
        .request(method, url)
        .bearer_auth(&token)
        .header("accept", LINEITEM_TYPE);
    if let Some(b) = body {
        req = req
            .header("content-type", LINEITEM_TYPE)
            .body(b.to_string());
    }
    let resp = req.send().await.map_err(|e| ApiError::BadGateway {
        code: "lms_unreachable",
        detail: crate::smart::discovery::error_chain(&e.without_url()),
    })?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    });
    Ok((status, value))
}

/// The job kinds of this area.
pub fn job_handlers(state: &crate::state::AppState) -> crate::jobs::Handlers {
    let mut h = crate::jobs::Handlers::new();
    let st = state.clone();
    h.register("lti.score", move |ctx| deliver(st.clone(), ctx));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_go_under_the_line_item_path_keeping_its_query() {
        assert_eq!(
            scores_url(
                "https://moodle.example/mod/lti/services.php/2/lineitems/7/lineitem?type_id=1"
            )
            .unwrap()
            .as_str(),
            "https://moodle.example/mod/lti/services.php/2/lineitems/7/lineitem/scores?type_id=1"
        );
        assert_eq!(
            scores_url("https://canvas.example/api/lti/courses/1/line_items/9")
                .unwrap()
                .as_str(),
            "https://canvas.example/api/lti/courses/1/line_items/9/scores"
        );
    }

    #[test]
    fn results_are_read_under_the_line_item_for_one_user() {
        assert_eq!(
            results_url(
                "https://moodle.example/mod/lti/services.php/2/lineitems/7/lineitem?type_id=1",
                "42"
            )
            .unwrap()
            .as_str(),
            "https://moodle.example/mod/lti/services.php/2/lineitems/7/lineitem/results?type_id=1&user_id=42"
        );
    }

    #[test]
    fn a_result_matches_the_same_fraction_and_comment() {
        let s = parse_score(
            &json!({"scoreGiven": 8, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded", "comment": "well done"}),
            Some("42"),
        )
        .unwrap();
        // Moodle rescales to the line item's maximum and keeps five decimals.
        assert!(result_matches(
            &json!({"userId": "42", "resultScore": 80.0, "resultMaximum": 100, "comment": "well done"}),
            &s
        ));
        assert!(result_matches(
            &json!({"userId": "42", "resultScore": 0.8}),
            &s
        ));
        assert!(!result_matches(
            &json!({"userId": "42", "resultScore": 7.0, "resultMaximum": 10}),
            &s
        ));
        assert!(!result_matches(
            &json!({"userId": "42", "resultScore": 8.0, "resultMaximum": 10, "comment": "redo"}),
            &s
        ));
        assert!(!result_matches(&json!({"userId": "42"}), &s));
        let unscored = parse_score(
            &json!({"activityProgress": "Submitted", "gradingProgress": "PendingManual"}),
            Some("42"),
        )
        .unwrap();
        assert!(result_matches(&json!({"userId": "42"}), &unscored));
        assert!(!result_matches(
            &json!({"userId": "42", "resultScore": 1.0}),
            &unscored
        ));
    }

    #[test]
    fn only_a_resend_can_have_been_stored_before() {
        assert!(!Attempt(1).is_resend());
        assert!(Attempt(2).is_resend());
    }

    #[test]
    fn link_headers_yield_the_next_page() {
        assert_eq!(
            next_link(r#"<https://lms/m?p=1>; rel="prev", <https://lms/m?p=3>; rel="next""#)
                .as_deref(),
            Some("https://lms/m?p=3")
        );
        assert_eq!(next_link(r#"<https://lms/m?p=1>; rel="first""#), None);
    }

    #[test]
    fn scores_are_checked_field_by_field() {
        let ok = json!({"scoreGiven": 8, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded"});
        let s = parse_score(&ok, Some("u1")).unwrap();
        assert_eq!(s.user_id, "u1");
        let bad =
            json!({"scoreGiven": -1, "activityProgress": "Done", "gradingProgress": "FullyGraded"});
        let fields: Vec<String> = parse_score(&bad, None)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["userId", "scoreGiven", "scoreMaximum", "activityProgress"]
        );
        let body = score_body(
            &s,
            chrono::DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap(),
        );
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.123Z");
    }
}
