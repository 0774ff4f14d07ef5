//! LTI 1.1 for legacy LMSs: Basic LTI launches (OAuth 1.0a HMAC-SHA1 signed forms, with
//! the timestamp window and single-use nonces checked) into the same launch model, and the
//! scores API delivered through Basic Outcomes (`replaceResult`, `readResult`,
//! `deleteResult` POX, signed with an OAuth body hash).

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};

use super::ags::{Attempt, Held, ScoreRequest};
use crate::http::page::Page;
use crate::jobs::JobError;
use crate::launches::{Launch, LaunchKind};
use crate::state::AppState;

/// RFC 5849 §3.6 percent-encoding: everything but ALPHA, DIGIT, `-`, `.`, `_`, `~`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The signature base string (RFC 5849 §3.4.1) of `method` `url` with `params` (every
/// parameter but `oauth_signature`).
pub fn base_string(method: &str, url: &str, params: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "oauth_signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    enc.sort();
    let normalized: Vec<String> = enc.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(url),
        encode(&normalized.join("&"))
    )
}

/// HMAC-SHA1 over the base string with `secret&` (no token secret in LTI), base64.
pub fn sign(base: &str, secret: &str) -> String {
    let key = format!("{}&", encode(secret));
    let mut mac = match Hmac::<Sha1>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(base.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Constant-time comparison of two signatures.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn refused(reason: impl Into<String>) -> Page {
    Page::new(StatusCode::BAD_REQUEST, "This launch could not be verified")
        .line(reason.into())
        .line("Open the activity again from your course; if this repeats, tell your LMS administrator.")
}

/// `POST /lti/11/launch`.
pub async fn launch(state: &AppState, params: Vec<(String, String)>) -> Response {
    use axum::response::IntoResponse;
    let flow = launch_inner(state, params);
    match crate::telemetry::metrics::counted("lti11", flow).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn launch_inner(state: &AppState, params: Vec<(String, String)>) -> Result<Response, Page> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let key = get("oauth_consumer_key")
        .ok_or_else(|| refused("The launch has no oauth_consumer_key."))?;
    let (partner, secret) = state
        .config
        .partners
        .iter()
        .find_map(|p| {
            p.lti
                .as_ref()?
                .lti11
                .iter()
                .find(|c| c.consumer_key == key)
                .map(|c| (p, c.shared_secret.expose().to_owned()))
        })
        .ok_or_else(|| refused(format!("Consumer key {key:?} is not registered.")))?;
    crate::telemetry::metrics::note_partner(&partner.id);
    if get("oauth_signature_method") != Some("HMAC-SHA1") {
        return Err(refused("Only HMAC-SHA1 signatures are accepted."));
    }
    let url = format!("{}/lti/11/launch", state.config.http.public_base());
    let given = get("oauth_signature").ok_or_else(|| refused("The launch is not signed."))?;
    if !same(&sign(&base_string("POST", &url, &params), &secret), given) {
        tracing::warn!(consumer_key = key, "LTI 1.1 launch with a bad signature");
        return Err(refused("The launch signature does not verify."));
    }
    let ts: i64 = get("oauth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| refused("The launch has no valid oauth_timestamp."))?;
    let window = state.config.lti.lti11_timestamp_window_secs as i64;
    if (Utc::now().timestamp() - ts).abs() > window {
        return Err(refused(
            "The launch is too old (or from a clock far off): its oauth_timestamp is outside the accepted window.",
        ));
    }
    let nonce = get("oauth_nonce").ok_or_else(|| refused("The launch has no oauth_nonce."))?;
    if !fresh_nonce(state, key, nonce, window)
        .await
        .map_err(|e| crate::http::page::internal(format!("{e:#}")))?
    {
        tracing::warn!(consumer_key = key, "LTI 1.1 launch with a reused nonce");
        return Err(refused(
            "This launch was already used (its nonce was seen before).",
        ));
    }
    if get("lti_message_type") != Some("basic-lti-launch-request") {
        return Err(refused(format!(
            "lti_message_type {:?} is not a launch.",
            get("lti_message_type").unwrap_or("")
        )));
    }
    if !matches!(get("lti_version"), Some("LTI-1p0" | "LTI-1p1" | "LTI-1p2")) {
        return Err(refused("lti_version must be LTI-1p0."));
    }
    let link =
        get("resource_link_id").ok_or_else(|| refused("The launch has no resource_link_id."))?;
    let reg = partner
        .lti
        .as_ref()
        .ok_or_else(|| crate::http::page::internal("no LTI registration".into()))?;

    let roles: Vec<String> = get("roles")
        .unwrap_or("")
        .split(',')
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    let custom: Map<String, Value> = params
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("custom_").map(|n| (n.to_owned(), json!(v))))
        .collect();
    let outcome_url = get("lis_outcome_service_url");
    let sourcedid = get("lis_result_sourcedid");
    let mut c = Map::new();
    c.insert("lti_version".into(), json!("1.1"));
    c.insert("consumer_key".into(), json!(key));
    c.insert(
        "tool_consumer".into(),
        json!(get("tool_consumer_info_product_family_code")),
    );
    c.insert(
        "email".into(),
        json!(get("lis_person_contact_email_primary")),
    );
    c.insert("roles".into(), json!(super::roles::normalise(&roles)));
    c.insert("roles_original".into(), json!(roles));
    c.insert("context".into(), json!({"id": get("context_id"), "title": get("context_title"), "label": get("context_label")}));
    c.insert(
        "resource_link".into(),
        json!({"id": link, "title": get("resource_link_title")}),
    );
    c.insert("custom".into(), Value::Object(custom));
    c.insert("launch_presentation".into(), json!({"return_url": get("launch_presentation_return_url"), "document_target": get("launch_presentation_document_target")}));
    c.insert(
        "grade_passback".into(),
        json!(outcome_url.is_some() && sourcedid.is_some()),
    );
    c.insert("roster".into(), json!(false));
    c.insert(
        "outcome".into(),
        json!({"service_url": outcome_url, "sourcedid": sourcedid}),
    );
    let now = Utc::now();
    let launch = Launch {
        id: crate::ids::new(crate::ids::LAUNCH),
        partner_id: partner.id.clone(),
        kind: LaunchKind::Lti,
        user_id: get("user_id").map(str::to_owned),
        user_name: get("lis_person_name_full").map(str::to_owned),
        context: c,
        scopes: Vec::new(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(state.config.launches.launch_ttl_hours as i64),
        sandbox: state.config.is_sandbox(&partner.id),
    };
    let event = crate::metering::UsageEvent {
        partner_id: partner.id.clone(),
        id: launch.id.clone(),
        source: "partner-gateway/lti".into(),
        event_type: "lti.launch".into(),
        subject: launch.user_id.clone(),
        time: now,
        data: Some(
            json!({"launch_id": launch.id, "lti_version": "1.1", "context_id": get("context_id"), "consumer_key": key}),
        ),
        extensions: None,
    };
    let expires =
        crate::time::to_micros(now) + state.config.launches.handoff_ttl_secs as i64 * 1_000_000;
    // The person: the 1.1 identity, which a later 1.3 launch's migration claim may join.
    let people = launch.user_id.as_deref().map(|u| super::launch::People {
        own: super::people::Identity::lti11(key, u),
        legacy: None,
        link: Some(link.to_owned()),
    });
    let code = super::launch::write_launch(state, &launch, &event, people, expires)
        .await
        .map_err(|e| crate::http::page::internal(format!("{e:#}")))?;
    tracing::info!(launch_id = %launch.id, partner_id = %partner.id, "LTI 1.1 launch completed");
    // Checked at config load too; checked again where the browser is sent, as the other flows do.
    let mut app =
        crate::http::page::redirect_target(&reg.app_url).map_err(crate::http::page::internal)?;
    app.query_pairs_mut().append_pair("code", &code);
    Ok(crate::http::page::redirect(app.as_str()))
}

/// Record the nonce; false when it was seen within the window (a replay).
async fn fresh_nonce(
    state: &AppState,
    key: &str,
    nonce: &str,
    window_secs: i64,
) -> anyhow::Result<bool> {
    let now = crate::time::now_micros();
    let forget_before = now - 2 * window_secs * 1_000_000;
    Ok(super::store::record_lti11_nonce(&state.db, key, nonce, now, forget_before).await?)
}

/// An OAuth 1.0a `Authorization` header for a POX body (OAuth Request Body Hash).
pub fn outcome_authorization(url: &str, key: &str, secret: &str, body: &str) -> String {
    let body_hash = STANDARD.encode(Sha1::digest(body.as_bytes()));
    let mut params: Vec<(String, String)> = vec![
        ("oauth_body_hash".into(), body_hash),
        ("oauth_consumer_key".into(), key.into()),
        ("oauth_nonce".into(), crate::random::token(16)),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), Utc::now().timestamp().to_string()),
        ("oauth_version".into(), "1.0".into()),
    ];
    // The query of the service URL is part of what is signed.
    let (base_url, query) = url.split_once('?').unwrap_or((url, ""));
    let mut signed = params.clone();
    signed.extend(
        url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned())),
    );
    let signature = sign(&base_string("POST", base_url, &signed), secret);
    params.push(("oauth_signature".into(), signature));
    let fields: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", encode(v)))
        .collect();
    format!("OAuth {}", fields.join(", "))
}

fn xml_escape(s: &str) -> String {
    crate::http::page::escape(s)
}

/// A POX request envelope for `operation` (`replaceResult`, `readResult`, `deleteResult`).
pub fn pox(operation: &str, sourcedid: &str, score: Option<f64>) -> String {
    let result = score
        .map(|s| format!("<result><resultScore><language>en</language><textString>{s}</textString></resultScore></result>"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<imsx_POXEnvelopeRequest xmlns=\"http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0\">\
         <imsx_POXHeader><imsx_POXRequestHeaderInfo><imsx_version>V1.0</imsx_version><imsx_messageIdentifier>{id}</imsx_messageIdentifier></imsx_POXRequestHeaderInfo></imsx_POXHeader>\
         <imsx_POXBody><{operation}Request><resultRecord><sourcedGUID><sourcedId>{sid}</sourcedId></sourcedGUID>{result}</resultRecord></{operation}Request></imsx_POXBody></imsx_POXEnvelopeRequest>",
        id = uuid::Uuid::new_v4(),
        sid = xml_escape(sourcedid),
    )
}

/// The text of the first `<tag>...</tag>` in `xml` (POX answers are small and flat).
pub fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = xml.find(&format!("<{tag}"))?;
    let start = open + xml[open..].find('>')? + 1;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].trim())
}

/// Send one POX operation for a 1.1 launch; returns the answer's body on success.
pub async fn call(
    state: &AppState,
    launch: &Launch,
    operation: &str,
    score: Option<f64>,
) -> Result<String, (bool, String)> {
    let s = |p: &str| launch.ctx(p).and_then(Value::as_str).map(str::to_owned);
    let (Some(url), Some(sourcedid), Some(key)) = (
        s("/outcome/service_url"),
        s("/outcome/sourcedid"),
        s("/consumer_key"),
    ) else {
        return Err((true, "the LMS gave this launch no outcome service".into()));
    };
    let secret = state
        .config
        .partners
        .iter()
        .filter_map(|p| p.lti.as_ref())
        .flat_map(|l| l.lti11.iter())
        .find(|c| c.consumer_key == key)
        .map(|c| c.shared_secret.expose().to_owned())
        .ok_or((true, format!("consumer key {key} is no longer registered")))?;
    let body = pox(operation, &sourcedid, score);
    let target = state
        .outbound
        .url(&url)
        .map_err(|e| (true, e.to_string()))?;
    let resp = state
        .outbound
        .client()
        .post(target)
        .header("content-type", "application/xml")
        .header(
            "authorization",
            outcome_authorization(&url, &key, &secret, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| {
            (
                false,
                crate::smart::discovery::error_chain(&e.without_url()),
            )
        })?;
    let status = resp.status().as_u16();
    let phrase = crate::outbound::refusal::reason_phrase(&resp);
    let bytes = resp.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let said = || {
        let why = crate::outbound::refusal::describe(phrase.as_deref(), &bytes);
        if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        }
    };
    if status >= 500 || status == 429 {
        return Err((false, format!("the LMS answered {status}{}", said())));
    }
    match xml_text(&text, "imsx_codeMajor") {
        Some("success") => Ok(text),
        Some(code) => Err((
            true,
            format!(
                "the LMS answered {code}: {}",
                xml_text(&text, "imsx_description").unwrap_or("")
            ),
        )),
        None => Err((
            status >= 400,
            format!("the LMS answered {status} without a POX status{}", said()),
        )),
    }
}

/// Deliver a score to a 1.1 launch (the `lti.score` job's 1.1 path): `replaceResult` with
/// scoreGiven / scoreMaximum in 0..1. A refused resend is checked with `readResult` the way
/// an AGS one is with the result service (see `ags::deliver`).
pub async fn deliver(
    state: &AppState,
    launch: &Launch,
    score_id: &str,
    score: &ScoreRequest,
    attempt: Attempt,
) -> Result<(), JobError> {
    let (Some(given), Some(max)) = (score.score_given, score.score_maximum) else {
        // Refused with 400 when posted since; a score stored before that ends here.
        let why = "LTI 1.1 outcomes carry a score only: scoreGiven and scoreMaximum are required";
        super::ags::mark_refused(state, score_id, launch, &score.user_id, 400, why).await?;
        return Err(JobError::Permanent(why.into()));
    };
    let value = (given / max).clamp(0.0, 1.0);
    let service = launch
        .ctx("/outcome/service_url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match call(state, launch, "replaceResult", Some(value)).await {
        Ok(_) => {
            super::ags::mark_delivered(state, score_id, launch, &service, 200, score, None).await
        }
        Err((true, reason)) if !attempt.is_resend() => {
            super::ags::mark_refused(state, score_id, launch, &score.user_id, 400, &reason).await?;
            Err(JobError::Permanent(reason))
        }
        Err((true, reason)) => {
            let held = match read_result(state, launch).await {
                Ok(Some(stored)) if (stored - value).abs() <= 1e-4 => Held::Same,
                Ok(other) => Held::Other(format!("the LMS holds {other:?}")),
                Err((true, e)) => Held::Unreadable(format!("readResult was refused ({e})")),
                Err((false, e)) => Held::Later(e),
            };
            let why = format!("the LMS refused the score: {reason}");
            super::ags::settle_refusal(
                state, score_id, launch, &service, score, attempt, 400, &why, held,
            )
            .await
        }
        Err((false, reason)) => {
            super::ags::note_failure(state, score_id, None, &reason).await;
            Err(JobError::Retry(reason))
        }
    }
}

/// The params of a form body in order (duplicates kept: they are all signed).
pub fn form_params(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// readResult: the stored score (0..1) or None.
pub async fn read_result(state: &AppState, launch: &Launch) -> Result<Option<f64>, (bool, String)> {
    let xml = call(state, launch, "readResult", None).await?;
    Ok(xml_text(&xml, "textString").and_then(|t| t.parse().ok()))
}

pub async fn delete_result(state: &AppState, launch: &Launch) -> Result<(), (bool, String)> {
    call(state, launch, "deleteResult", None).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5849 §3.4.1.1's example, with the client secret of §1.2 ("kd94hf93k423kf44") and
    /// token secret "pfkkdhi9sl3r4s00" (LTI has none, so only the base string is compared
    /// here, and the signature over a known base separately).
    #[test]
    fn the_base_string_matches_rfc_5849() {
        let params: Vec<(String, String)> = [
            ("b5", "=%3D"),
            ("a3", "a"),
            ("c@", ""),
            ("a2", "r b"),
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
            ("c2", ""),
            ("a3", "2 q"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            base_string("post", "http://example.com/request", &params),
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
        );
    }

    #[test]
    fn hmac_sha1_signs_like_the_reference() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog") — key here is "key&".
        let mut mac = Hmac::<Sha1>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
        assert_eq!(encode("a b&c~"), "a%20b%26c~");
    }

    #[test]
    fn pox_answers_are_read() {
        let xml = "<imsx_POXEnvelopeResponse><imsx_POXHeader><imsx_POXResponseHeaderInfo><imsx_statusInfo><imsx_codeMajor>success</imsx_codeMajor></imsx_statusInfo></imsx_POXResponseHeaderInfo></imsx_POXHeader><imsx_POXBody><readResultResponse><result><resultScore><language>en</language><textString>0.91</textString></resultScore></result></readResultResponse></imsx_POXBody></imsx_POXEnvelopeResponse>";
        assert_eq!(xml_text(xml, "imsx_codeMajor"), Some("success"));
        assert_eq!(xml_text(xml, "textString"), Some("0.91"));
        assert!(
            pox("replaceResult", "s<1>", Some(0.5)).contains("<sourcedId>s&lt;1&gt;</sourcedId>")
        );
    }
}
