//! The dispatcher: claims due deliveries in batches, sends each (signed at the attempt, with
//! the attempt's timestamp), and records the attempts of many deliveries in one
//! transaction. At least once: a delivery is marked delivered only after its 2xx, so a
//! sender that dies mid-way leaves a lease that lapses and any instance sends it again (the
//! receiver dedupes on `webhook-id`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::schedule::{self, Next, Policy, Response};
use super::signature::{self, SigningKey};
use super::store::{self, AttemptRecord, Claimed, EndpointRow};
use crate::config::WebhooksConfig;
use crate::metering::UsageEvent;
use crate::state::AppState;
use crate::time::to_micros;

/// Response bodies are kept up to this many bytes.
pub const BODY_LIMIT: usize = 64 * 1024;
/// A claim's lease: the attempt timeout plus this (the rate slot is at most 1 s ahead).
const LEASE_MARGIN_SECS: i64 = 11;
/// The ledger source of `webhook.delivered` events.
pub const USAGE_SOURCE: &str = "partner-gateway/webhooks";

/// One attempt's result, on its way to the batch writer.
#[derive(Debug)]
struct Done {
    record: AttemptRecord,
    next: Next,
    endpoint_partner: Option<String>,
    message_partner: Option<String>,
    event_type: String,
    endpoint_url: String,
}

/// Sends webhook deliveries. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    state: AppState,
    owner: Arc<str>,
    policy: Arc<Policy>,
}

impl Dispatcher {
    pub fn new(state: AppState) -> Dispatcher {
        let policy = policy(&state.config.webhooks);
        Dispatcher {
            state,
            owner: format!("webhooks-{}", uuid::Uuid::new_v4().simple()).into(),
            policy: Arc::new(policy),
        }
    }

    fn cfg(&self) -> &WebhooksConfig {
        &self.state.config.webhooks
    }

    /// Claim, send and record until `shutdown`; then let attempts in flight finish (up to
    /// the attempt timeout) and record them.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.cfg().concurrency.max(1)));
        let (tx, rx) = mpsc::channel::<Done>(self.cfg().concurrency.max(1) * 2);
        let writer = tokio::spawn(self.clone().write_results(rx));
        let poll = Duration::from_millis(self.cfg().poll_interval_ms.max(1));
        let mut last_thresholds = Instant::now() - Duration::from_secs(3600);
        let mut thresholds = super::thresholds::Watch::default();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let every = Duration::from_secs(self.cfg().thresholds_interval_secs.max(1));
            if last_thresholds.elapsed() >= every {
                last_thresholds = Instant::now();
                if let Err(e) =
                    super::thresholds::check(&self.state, Utc::now(), &mut thresholds).await
                {
                    tracing::error!(error = %format!("{e:#}"), "checking usage thresholds failed");
                }
            }
            // Claim only what can be sent now, so nothing claimed waits on a permit while
            // its lease runs.
            // Wait for a quarter of the slots to be free: claiming one or two at a time
            // under load would spend a transaction per delivery.
            let free = permits.available_permits();
            let enough =
                (self.cfg().concurrency.max(1) / 4).clamp(1, self.cfg().claim_batch.max(1));
            if free < enough {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let limit = free.min(self.cfg().claim_batch.max(1));
            let claimed = match self.claim(limit).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "claiming webhook deliveries failed");
                    Vec::new()
                }
            };
            let n = claimed.len();
            for (c, job) in claimed {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let me = self.clone();
                let tx = tx.clone();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Some(done) = me.attempt(c, job, stop).await {
                        let _ = tx.send(done).await;
                    }
                });
            }
            if n < limit {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
        // Wait for attempts in flight: each holds a permit until it has handed its result.
        let all = u32::try_from(self.cfg().concurrency.max(1)).unwrap_or(u32::MAX);
        let grace = Duration::from_secs(self.cfg().timeout_secs + 5);
        let _ = tokio::time::timeout(grace, permits.acquire_many(all)).await;
        drop(tx);
        let _ = writer.await;
    }

    /// Claim one batch, send it, and record the attempts; returns how many were attempted.
    /// For tests and tools that drain the queue step by step.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let claimed = self.claim(self.cfg().claim_batch.max(1)).await?;
        let n = claimed.len();
        let stop = CancellationToken::new();
        let attempts = futures_util::stream::iter(claimed)
            .map(|(c, job)| self.attempt(c, job, stop.clone()))
            .buffer_unordered(self.cfg().concurrency.max(1))
            .filter_map(|d| async move { d })
            .collect::<Vec<_>>()
            .await;
        self.write(&attempts).await?;
        Ok(n)
    }

    /// Claim due deliveries and gather what sending them needs.
    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<(Claimed, Option<Job>)>> {
        let now = Utc::now();
        // Rate-limited endpoints hand out start slots up to a second ahead.
        let horizon = now + chrono::Duration::seconds(1);
        // Long enough for the slot, the attempt and recording it; a sender that died is
        // replaced this soon after.
        let timeout = i64::try_from(self.cfg().timeout_secs).unwrap_or(15);
        let lease = now + chrono::Duration::seconds(timeout + LEASE_MARGIN_SECS);
        let claimed = store::claim_deliveries(
            &self.state.db,
            &self.owner,
            now,
            horizon,
            lease,
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut msg_ids: Vec<&str> = claimed.iter().map(|c| c.message_id.as_str()).collect();
        msg_ids.sort_unstable();
        msg_ids.dedup();
        let mut ep_ids: Vec<&str> = claimed.iter().map(|c| c.endpoint_id.as_str()).collect();
        ep_ids.sort_unstable();
        ep_ids.dedup();
        let messages: HashMap<String, store::MessageForSend> =
            store::messages_for_send(&self.state.db, &msg_ids)
                .await?
                .into_iter()
                .map(|m| (m.id.clone(), m))
                .collect();
        let endpoints: HashMap<String, EndpointRow> =
            store::endpoints_by_id(&self.state.db, &ep_ids)
                .await?
                .into_iter()
                .map(|e| (e.id.clone(), e))
                .collect();
        let mut keys: HashMap<String, Vec<SigningKey>> = HashMap::new();
        for s in store::signing_secrets(&self.state.db, &ep_ids, now).await? {
            match super::routes::open_secret(&self.state.master_key, &s) {
                Ok(k) => keys.entry(s.endpoint_id.clone()).or_default().push(k),
                Err(e) => {
                    tracing::error!(endpoint = %s.endpoint_id, version = s.version, error = %format!("{e:#}"), "a webhook secret cannot be opened")
                }
            }
        }
        Ok(claimed
            .into_iter()
            .map(|c| {
                let job = match (messages.get(&c.message_id), endpoints.get(&c.endpoint_id)) {
                    (Some(m), Some(e)) => Some(Job {
                        payload: m.payload.clone(),
                        message_partner: m.partner_id.clone(),
                        event_type: m.event_type.clone(),
                        endpoint_partner: e.partner_id.clone(),
                        url: e.url.clone(),
                        keys: keys.get(&c.endpoint_id).cloned().unwrap_or_default(),
                    }),
                    _ => None,
                };
                (c, job)
            })
            .collect())
    }

    /// Make one attempt. `None` when shutdown came before the attempt's rate slot (the
    /// delivery is handed back untried).
    async fn attempt(&self, c: Claimed, job: Option<Job>, stop: CancellationToken) -> Option<Done> {
        let wait = (c.send_at - Utc::now()).to_std().unwrap_or_default();
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {
                    if let Err(e) = store::release_deliveries(&self.state.db, &self.owner, &[c.delivery_id], Utc::now()).await {
                        tracing::warn!(error = %e, "handing back a webhook delivery failed; its lease will lapse");
                    }
                    return None;
                }
            }
        }
        let started = Utc::now();
        let clock = Instant::now();
        let (response, mut outcome) = match &job {
            None => (
                Response::NoResponse,
                Outcome::error("the message or endpoint is gone"),
            ),
            Some(j) if j.payload.is_none() => (
                Response::NoResponse,
                Outcome::error("the payload was purged after the retention period"),
            ),
            Some(j) if j.keys.is_empty() => (
                Response::NoResponse,
                Outcome::error("the endpoint has no secret to sign with"),
            ),
            Some(j) => self.send(&c, j, started).await,
        };
        let duration_us = i64::try_from(clock.elapsed().as_micros()).unwrap_or(i64::MAX);
        let now = Utc::now();
        let unit: f64 = rand::rng().random();
        let mut next = self.policy.next(c.attempt, &response, now, unit);
        // Nothing to send (payload purged, endpoint gone) will not get better by waiting.
        if job.as_ref().is_none_or(|j| j.payload.is_none()) {
            next = Next::GiveUp;
        }
        let (state, next_at, finished) = match &next {
            Next::Delivered => ("delivered", None, Some(to_micros(now))),
            Next::Retry(at) => ("pending", Some(to_micros(*at)), None),
            Next::GiveUp => ("failed", None, Some(to_micros(now))),
            // Waits for the endpoint to be enabled again; nothing is lost.
            Next::EndpointGone => ("pending", Some(to_micros(now)), None),
        };
        if matches!(next, Next::EndpointGone) {
            outcome.label = "gone";
        }
        let record = AttemptRecord {
            delivery_id: c.delivery_id,
            message_id: c.message_id.clone(),
            endpoint_id: c.endpoint_id.clone(),
            attempt: c.attempt,
            started_at_us: to_micros(started),
            duration_us,
            status: outcome.status,
            outcome: outcome.label.to_owned(),
            error: outcome.error,
            response_headers: outcome.headers,
            response_body: outcome.body,
            next_at_us: next_at,
            state: state.to_owned(),
            finished_at_us: finished,
        };
        let j = job.unwrap_or_default();
        Some(Done {
            record,
            next,
            endpoint_partner: j.endpoint_partner,
            message_partner: j.message_partner,
            event_type: j.event_type,
            endpoint_url: j.url,
        })
    }

    /// The HTTP request itself.
    async fn send(&self, c: &Claimed, job: &Job, started: DateTime<Utc>) -> (Response, Outcome) {
        let Some(payload) = job.payload.as_deref() else {
            return (Response::NoResponse, Outcome::error("no payload"));
        };
        // The endpoint owner's networks only (as when the URL was set): a name that now
        // resolves elsewhere is refused at connect time by that client's resolver.
        let outbound = self
            .state
            .endpoint_outbound
            .for_owner(job.endpoint_partner.as_deref());
        let url = match outbound.url(&job.url) {
            Ok(u) => u,
            Err(e) => {
                return (
                    Response::NoResponse,
                    Outcome::error(&format!("refused: {e}")),
                );
            }
        };
        let ts = started.timestamp();
        let sig = signature::signature_header(&job.keys, &c.message_id, ts, payload.as_bytes());
        let request = outbound
            .webhooks()
            .post(url)
            .timeout(Duration::from_secs(self.cfg().timeout_secs.max(1)))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &c.message_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(payload.to_owned());
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return (Response::NoResponse, Outcome::error(&describe(&e))),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&v);
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), Value::String(v));
                }
            }
        }
        let (body, body_error) = read_prefix(response, BODY_LIMIT).await;
        let mut outcome = Outcome {
            label: if (200..300).contains(&status) {
                "succeeded"
            } else {
                "failed"
            },
            status: Some(i32::from(status)),
            error: body_error,
            headers: Some(Value::Object(headers).to_string()),
            body: Some(body),
        };
        if (300..400).contains(&status) {
            outcome.error = Some("redirects are not followed: update the endpoint URL".into());
        }
        (
            Response::Status {
                code: status,
                retry_after,
            },
            outcome,
        )
    }

    /// Receive attempt results and write them in batches.
    async fn write_results(self, mut rx: mpsc::Receiver<Done>) {
        let max = self.cfg().claim_batch.max(1);
        let mut batch = Vec::with_capacity(max);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            // Whatever else is already waiting goes into the same transaction.
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            let mut tries = 0;
            loop {
                match self.write(&batch).await {
                    Ok(()) => break,
                    Err(e) if tries < 3 => {
                        tries += 1;
                        tracing::warn!(error = %format!("{e:#}"), "recording webhook attempts failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                    }
                    Err(e) => {
                        // The deliveries' leases lapse and they are sent again.
                        tracing::error!(error = %format!("{e:#}"), n = batch.len(), "recording webhook attempts failed");
                        break;
                    }
                }
            }
            batch.clear();
        }
    }

    /// One transaction: the attempts, the deliveries' new states, a `webhook.delivered`
    /// usage event per delivered message, and endpoint health (disabling an endpoint that
    /// answered 410 or failed for the whole window, and telling its partner's other
    /// endpoints).
    async fn write(&self, done: &[Done]) -> anyhow::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let records: Vec<AttemptRecord> = done.iter().map(|d| d.record.clone()).collect();
        let usage: Vec<UsageEvent> = done
            .iter()
            .filter(|d| matches!(d.next, Next::Delivered))
            .filter_map(|d| {
                let partner = d
                    .endpoint_partner
                    .clone()
                    .or_else(|| d.message_partner.clone())?;
                Some(UsageEvent {
                    partner_id: partner,
                    // Once per (message, endpoint): a second delivery after a lost lease
                    // or a replay is not a second count.
                    id: format!("{}/{}", d.record.message_id, d.record.endpoint_id),
                    source: USAGE_SOURCE.into(),
                    event_type: "webhook.delivered".into(),
                    subject: Some(d.record.endpoint_id.clone()),
                    time: crate::time::from_micros(d.record.started_at_us),
                    data: Some(json!({
                        "message_id": d.record.message_id,
                        "event_type": d.event_type,
                        "endpoint_id": d.record.endpoint_id,
                        "attempt": d.record.attempt,
                    })),
                    extensions: None,
                })
            })
            .collect();
        // Endpoint health from this batch, in attempt order per endpoint.
        let mut health: HashMap<String, (Option<i64>, bool, String, Option<String>)> =
            HashMap::new();
        let mut ordered: Vec<&Done> = done.iter().collect();
        ordered.sort_by_key(|d| d.record.started_at_us);
        let mut gone: Vec<(&str, &str, Option<String>)> = Vec::new();
        for d in &ordered {
            let entry = health.entry(d.record.endpoint_id.clone()).or_insert((
                None,
                false,
                d.endpoint_url.clone(),
                d.endpoint_partner.clone(),
            ));
            match d.next {
                Next::Delivered => {
                    entry.0 = None;
                    entry.1 = true;
                }
                Next::EndpointGone => {
                    gone.push((
                        &d.record.endpoint_id,
                        &d.endpoint_url,
                        d.endpoint_partner.clone(),
                    ));
                }
                _ => {
                    if entry.0.is_none() {
                        entry.0 = Some(d.record.started_at_us);
                    }
                    entry.1 = true;
                }
            }
        }
        let window = Duration::from_secs(self.cfg().disable_after_failing_secs);
        let mut tx = self.state.db.begin().await?;
        store::record_attempts(&mut tx, &self.owner, &records, now).await?;
        let gateway = crate::metering::authority::Recorder::Gateway;
        crate::metering::store::insert_usage_events(
            &mut tx,
            &self.state.subjects,
            usage,
            &gateway,
            now,
        )
        .await?;
        let updates: Vec<(String, Option<i64>)> = health
            .iter()
            .filter(|(_, h)| h.1)
            .map(|(id, h)| (id.clone(), h.0))
            .collect();
        let failing = store::set_failing_since(&mut tx, &updates).await?;
        for (id, since) in failing {
            let Some(since) = since else { continue };
            if schedule::should_disable(crate::time::from_micros(since), now, window) {
                let (_, _, url, partner) = &health[&id];
                let reason = format!(
                    "failing continuously since {} (webhooks.disable_after_failing_secs = {})",
                    store::rfc3339(since),
                    window.as_secs()
                );
                disable_and_tell(&mut tx, &id, url, partner.as_deref(), &reason, now).await?;
            }
        }
        for (id, url, partner) in gone {
            let reason = "the endpoint answered 410 Gone";
            disable_and_tell(&mut tx, id, url, partner.as_deref(), reason, now).await?;
        }
        tx.commit().await?;
        let succeeded = done
            .iter()
            .filter(|d| matches!(d.next, Next::Delivered))
            .count() as u64;
        metrics::counter!("gateway_webhook_attempts_total", "outcome" => "succeeded")
            .increment(succeeded);
        metrics::counter!("gateway_webhook_attempts_total", "outcome" => "failed")
            .increment(done.len() as u64 - succeeded);
        Ok(())
    }
}

/// Disable an endpoint (once) and emit `webhook.endpoint.disabled` to its partner's other
/// endpoints and the app's, in the caller's transaction.
pub async fn disable_and_tell(
    tx: &mut crate::db::Tx,
    endpoint_id: &str,
    url: &str,
    partner: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if store::disable_endpoint(tx, endpoint_id, reason, now).await? {
        tracing::warn!(endpoint = endpoint_id, reason, "webhook endpoint disabled");
        let data = json!({
            "endpoint_id": endpoint_id,
            "partner": partner,
            "url": url,
            "reason": reason,
        });
        super::emit(tx, partner, "webhook.endpoint.disabled", &data, now).await?;
    }
    Ok(())
}

/// The retry policy from config.
pub fn policy(cfg: &WebhooksConfig) -> Policy {
    Policy {
        delays: cfg
            .retry_schedule_secs
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
        jitter: f64::from(cfg.retry_jitter_percent.min(100)) / 100.0,
        retry_after_max: Duration::from_secs(cfg.retry_after_max_secs),
    }
}

/// What sending one delivery needs.
#[derive(Debug, Clone, Default)]
struct Job {
    payload: Option<String>,
    message_partner: Option<String>,
    event_type: String,
    endpoint_partner: Option<String>,
    url: String,
    keys: Vec<SigningKey>,
}

/// The attempt's record fields.
struct Outcome {
    label: &'static str,
    status: Option<i32>,
    error: Option<String>,
    headers: Option<String>,
    body: Option<String>,
}

impl Outcome {
    fn error(msg: &str) -> Outcome {
        Outcome {
            label: "failed",
            status: None,
            error: Some(msg.to_owned()),
            headers: None,
            body: None,
        }
    }
}

/// Read at most `limit` bytes of the body (the rest is not waited for).
async fn read_prefix(response: reqwest::Response, limit: usize) -> (String, Option<String>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut stream = response.bytes_stream();
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                let room = limit - buf.len();
                buf.extend_from_slice(&c[..c.len().min(room)]);
                if buf.len() >= limit {
                    break;
                }
            }
            Err(e) => {
                error = Some(format!(
                    "reading the response body failed: {}",
                    describe(&e)
                ));
                break;
            }
        }
    }
    // The receiver's text, which no store may keep with a NUL in it (`crate::text`).
    (
        crate::text::without_nul(String::from_utf8_lossy(&buf).into_owned()),
        error,
    )
}

/// A transport error in words (timeouts, refused connections, the address policy).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
