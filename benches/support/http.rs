//! The bench's side of HTTP: answers checked the same way, and the app's exchange of a
//! launch's one-time code.

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

/// The first 300 characters of an answer, on one line, for an error message.
pub fn snippet(s: &str) -> String {
    let s: String = s.chars().take(300).collect();
    s.replace('\n', " ")
}

/// The text of an answer from `what` (as an error names it), when its status is one `ok`
/// accepts.
pub async fn answer_text(
    r: reqwest::Response,
    ok: fn(reqwest::StatusCode) -> bool,
    what: &str,
) -> anyhow::Result<String> {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    ensure!(ok(status), "{what} answered {status}: {}", snippet(&text));
    Ok(text)
}

/// The app's step of a launch: `POST /v1/launches/exchange` with its key and the one-time
/// code; the launch id.
pub async fn exchange(
    browser: &reqwest::Client,
    gateway: &str,
    app_key: &str,
    code: &str,
) -> anyhow::Result<String> {
    let r = browser
        .post(format!("{gateway}/v1/launches/exchange"))
        .bearer_auth(app_key)
        .json(&json!({ "code": code }))
        .send()
        .await
        .context("POST /v1/launches/exchange: request failed")?;
    let text = answer_text(r, |s| s.is_success(), "POST /v1/launches/exchange").await?;
    let body: Value = serde_json::from_str(&text).context("the exchange answer is not JSON")?;
    body["launch_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no launch_id in {}", snippet(&text)))
}

/// GET `url`, expect a redirect; returns its Location.
pub async fn redirect_of(b: &reqwest::Client, url: &str, step: &str) -> anyhow::Result<String> {
    let r = b
        .get(url)
        .send()
        .await
        .with_context(|| format!("{step}: request failed"))?;
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.text().await.unwrap_or_default();
    match location {
        Some(l) if status.is_redirection() => Ok(l),
        _ => bail!(
            "{step}: expected a redirect, got {status}: {}",
            snippet(&body)
        ),
    }
}

pub fn query_param(url: &str, name: &str) -> anyhow::Result<String> {
    let u = url::Url::parse(url).with_context(|| format!("not a URL: {url}"))?;
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .with_context(|| format!("no {name} in {}", snippet(url)))
}

/// The EHR's access token, as the mock EHR last saw it on a FHIR request for `path` (the
/// gateway's proxied call): what a direct call to the EHR needs.
pub fn bearer_seen(ehr: &partner_sim::ehr::MockEhr, path: &str) -> anyhow::Result<String> {
    ehr.fhir_requests()
        .iter()
        .rev()
        .find(|r| r.path == path)
        .and_then(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone())
        })
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        .context("the mock recorded no bearer token for the proxied request")
}
