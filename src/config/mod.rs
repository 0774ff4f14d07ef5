//! Configuration: defaults built into the binary, then every `*.toml` file in the config
//! directory (in name order), then `GATEWAY__SECTION__KEY` environment variables.
//!
//! Loading never stops at the first mistake: every problem is collected with the file (or
//! environment variable) and the field it came from, so `check-config` can list them all.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::metering::meter::{Aggregation, Meter, TypePattern};
use crate::statements::agreement::{AgreementConfig, Agreements};

/// The prefix of environment variables that override config values.
pub mod messages;

pub const ENV_PREFIX: &str = "GATEWAY__";

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub telemetry: TelemetryConfig,
    pub jobs: JobsConfig,
    pub keys: KeysConfig,
    pub outbound: OutboundConfig,
    pub launches: LaunchesConfig,
    pub smart: SmartConfig,
    pub lti: LtiConfig,
    pub statements: StatementsConfig,
    pub webhooks: WebhooksConfig,
    pub sso: SsoConfig,
    pub usage: UsageConfig,
    pub privacy: PrivacyConfig,
    pub console: ConsoleConfig,
    pub partners: Vec<PartnerConfig>,
    pub meters: Vec<MeterConfig>,
    pub agreements: Vec<AgreementConfig>,
    /// What loading noticed without refusing: variables that look like the gateway's but
    /// are not read. Printed at start.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Largest accepted request body; a batch of 1000 events with modest `data` fits in 4 MiB.
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// How long `serve` waits for in-flight requests after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Serve HTTP; switch off to run an instance that only works jobs.
    pub enabled: bool,
    /// The URL partners and browsers reach the gateway at (scheme, host, optional port and
    /// path prefix, no trailing slash), e.g. `https://gateway.example.com`. Redirect URIs
    /// registered with EHRs and LMSs are built from it. Unset: `http://{addr}`.
    pub public_url: Option<String>,
    /// API keys are kept in memory after their first use; a revocation (from any instance
    /// or the CLI) takes effect everywhere within this many milliseconds. 0: every request
    /// reads the store (revocation immediate, about 60 µs more per request).
    pub api_key_cache_ms: u64,
    /// A connection that has not sent a request's whole header in this many seconds is
    /// closed, so slow-header clients cannot hold connections open.
    pub header_read_timeout_secs: u64,
    /// How long an `Idempotency-Key` and the answer kept with it last (24 h).
    pub idempotency_ttl_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 4 * 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 30,
            enabled: true,
            public_url: None,
            api_key_cache_ms: 1000,
            header_read_timeout_secs: 10,
            idempotency_ttl_secs: 86_400,
        }
    }
}

impl HttpConfig {
    /// `public_url`, or `http://{addr}` when unset, without a trailing slash.
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.addr),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing) or `postgres://...`. A secret: it may hold a
    /// password, so it can come from `{ env = "VAR" }` or `{ file = "path" }`.
    pub url: Secret,
    pub max_connections: u32,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// SQLite `synchronous` pragma. FULL makes an acknowledged event survive power loss, not
    /// just a process crash; NORMAL trades that for speed.
    pub sqlite_synchronous: SqliteSynchronous,
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://data/gateway.db"),
            max_connections: 10,
            migrate_on_start: true,
            sqlite_synchronous: SqliteSynchronous::Full,
            acquire_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// A `tracing` filter directive such as `info` or `partner_gateway=debug,info`.
    pub log_level: String,
    /// Which answers get a line of their own (target `access`, at `info`): see
    /// [`AccessLog`].
    pub access_log: AccessLog,
    /// With `access_log = "failures"`, the fraction of other answers logged too (0 to 1;
    /// every Nth answer, N = 1/fraction), so a busy gateway's log shows its traffic without
    /// a line, and a write, per request.
    pub access_log_sample: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            access_log: AccessLog::Failures,
            access_log_sample: 0.0,
        }
    }
}

/// The access log: one line per answer (method, route, status, error code, latency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    /// Every answer: for development, or a gateway behind nothing that logs requests.
    All,
    /// 4xx and 5xx answers, and `access_log_sample` of the rest (the default).
    Failures,
    /// None (metrics still count every answer by route and status).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Run job workers in this instance.
    pub enabled: bool,
    /// Jobs worked at once by this instance.
    pub concurrency: usize,
    pub poll_interval_ms: u64,
    /// A claimed job is the worker's for this long; the worker renews it while it works, and
    /// any instance may take the job once it lapses (the worker died).
    pub lease_secs: u64,
    pub max_attempts: i32,
    /// Retry delay: base * 2^(attempt-1), capped, with full jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    /// On shutdown, in-flight jobs get this long before their leases are released.
    pub shutdown_grace_secs: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 4,
            poll_interval_ms: 500,
            lease_secs: 60,
            max_attempts: 10,
            backoff_base_ms: 1000,
            backoff_max_secs: 3600,
            shutdown_grace_secs: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The master key sealing the signing keys at rest: base64 of 32 random bytes, e.g.
    /// `{ env = "GATEWAY_MASTER_KEY" }`. When unset, `master_key_file` is used.
    pub master_key: Option<Secret>,
    /// Read when `master_key` is unset; created (mode 0600) on first start if missing.
    /// Back it up with the database: without it the signing keys cannot be read.
    pub master_key_file: PathBuf,
    /// How long a rotated-out key stays published in the JWKS.
    pub rotation_overlap_hours: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            master_key: None,
            master_key_file: PathBuf::from("data/master.key"),
            rotation_overlap_hours: 48,
        }
    }
}

/// Requests the gateway makes to partners (discovery, tokens, FHIR, JWKS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// Allow plain `http://` partner URLs. Off in production: tokens would cross the wire
    /// in clear. Tests and local sandboxes switch it on.
    pub allow_http: bool,
    /// Deprecated: `true` is refused (it let every URL, a discovery document's or an LMS's
    /// included, reach any internal address); `false` has no effect. Non-public addresses
    /// are reached only inside `private_networks` (here or a partner's).
    pub allow_private_networks: Option<bool>,
    /// Networks (`10.20.0.0/16`) or addresses (`127.0.0.1`) with non-public addresses every
    /// outbound request may reach: the company's own services (the app's webhook receiver).
    /// A partner's systems go in that partner's `private_networks`.
    #[serde(deserialize_with = "crate::outbound::deserialize_networks")]
    pub private_networks: Vec<crate::outbound::Network>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 15,
            connect_timeout_secs: 5,
            allow_http: false,
            allow_private_networks: None,
            private_networks: Vec::new(),
        }
    }
}

/// The launch model shared by SMART, LTI and SSO: how long its pieces live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchesConfig {
    /// Lifetime of the one-time code handed to the app; the app exchanges it at once.
    pub handoff_ttl_secs: u64,
    /// How long the app may use a launch (FHIR proxy, context) after it completed.
    pub launch_ttl_hours: u64,
}

impl Default for LaunchesConfig {
    fn default() -> Self {
        Self {
            handoff_ttl_secs: 120,
            launch_ttl_hours: 12,
        }
    }
}

/// Single sign-on settings shared by every connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsoConfig {
    /// How long an IdP's discovery document and JWKS are reused.
    pub discovery_ttl_secs: u64,
    /// An id_token with an unknown `kid` makes the gateway fetch the IdP's keys again, at
    /// most this often per IdP (a rotation is picked up; a flood of forged kids is not a
    /// flood of fetches).
    pub jwks_min_refetch_secs: u64,
    /// How long the person has between the redirect to the IdP and the callback.
    pub state_ttl_secs: u64,
    /// How often a SAML IdP's metadata (URL or file) is read again; a failed refresh keeps
    /// the last good copy and is logged.
    pub saml_metadata_refresh_secs: u64,
    /// Clock difference tolerated against a SAML IdP's NotBefore / NotOnOrAfter.
    pub saml_clock_skew_secs: u64,
    /// How old (by IssueInstant) a SAML response or assertion may be when it arrives.
    pub saml_max_response_age_secs: u64,
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            discovery_ttl_secs: 3600,
            jwks_min_refetch_secs: 10,
            state_ttl_secs: 600,
            saml_metadata_refresh_secs: 21_600,
            saml_clock_skew_secs: 60,
            saml_max_response_age_secs: 300,
        }
    }
}

/// SMART on FHIR client settings shared by every EHR partner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmartConfig {
    /// How long a fetched discovery document (and issuer JWKS) is reused.
    pub discovery_ttl_secs: u64,
    /// How long the user has between the redirect to the EHR and the callback.
    pub state_ttl_secs: u64,
    /// Refresh an access token this long before it expires.
    pub refresh_ahead_secs: u64,
    /// After an early refresh (inside `refresh_ahead_secs`) fails, the launch keeps its
    /// still valid token and tries again no sooner than this.
    pub refresh_retry_secs: u64,
    /// Leeway for `exp`/`iat` in id_tokens from EHRs.
    pub clock_skew_secs: u64,
    /// `fhir.request` usage events are written in batches at most this often (0: each
    /// proxied call writes its event before the response is returned).
    pub usage_flush_ms: u64,
}

impl Default for SmartConfig {
    fn default() -> Self {
        Self {
            discovery_ttl_secs: 3600,
            state_ttl_secs: 600,
            refresh_ahead_secs: 60,
            refresh_retry_secs: 10,
            clock_skew_secs: 60,
            usage_flush_ms: 200,
        }
    }
}

/// LTI tool settings shared by every LMS partner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LtiConfig {
    /// Time between login initiation and the launch POST.
    pub state_ttl_secs: u64,
    /// Leeway for `exp`/`iat` of platform id_tokens (Moodle's live 60 s).
    pub clock_skew_secs: u64,
    /// An id_token issued longer ago than this is refused even if unexpired.
    pub max_token_age_secs: u64,
    /// Dynamic registrations become usable at once instead of waiting for an admin.
    pub auto_approve_registrations: bool,
    /// LTI 1.1 launches: accepted `oauth_timestamp` distance from now.
    pub lti11_timestamp_window_secs: u64,
}

impl Default for LtiConfig {
    fn default() -> Self {
        Self {
            state_ttl_secs: 600,
            clock_skew_secs: 60,
            max_token_age_secs: 600,
            auto_approve_registrations: false,
            lti11_timestamp_window_secs: 300,
        }
    }
}

/// What heads every statement, and how statement runs behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatementsConfig {
    /// The company issuing statements, as printed on them.
    pub company_name: String,
    /// Postal address lines printed under the name.
    pub company_address: Vec<String>,
    /// The company's VAT, GST or tax registration number.
    pub company_tax_id: Option<String>,
    /// Who partners ask about a statement ("Partner finance: partners@example.com").
    pub company_contact: Vec<String>,
    /// A PNG or JPEG file printed at the head of every statement (a relative path is
    /// relative to the config file that names it).
    pub company_logo: Option<PathBuf>,
    /// A statement counts events received up to this many seconds before it is computed
    /// (a transaction that stamped its events a moment ago may not have committed yet),
    /// and a period can be finalized this long after it ends.
    pub settle_secs: u64,
    /// How often `serve` checks that every issued statement still matches its hash (and at
    /// start); a mismatch is logged as an error and shown by `/readyz` and the
    /// `gateway_statements_hash_mismatches` gauge.
    pub integrity_check_secs: u64,
}

impl Default for StatementsConfig {
    fn default() -> Self {
        StatementsConfig {
            company_name: "partner-gateway".into(),
            company_address: Vec::new(),
            company_tax_id: None,
            company_contact: Vec::new(),
            company_logo: None,
            settle_secs: 60,
            integrity_check_secs: 900,
        }
    }
}

/// Webhooks: delivery, retries, retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// This instance sends deliveries (any number of instances may).
    pub delivery_enabled: bool,
    /// Attempts in flight at once on this instance.
    pub concurrency: usize,
    /// Most deliveries claimed (and attempts recorded) per transaction.
    pub claim_batch: usize,
    /// How often an idle dispatcher looks for due deliveries.
    pub poll_interval_ms: u64,
    /// Per-attempt timeout (the receiver's whole answer).
    pub timeout_secs: u64,
    /// Delays before the 2nd, 3rd, ... attempt; attempts = this length + 1.
    pub retry_schedule_secs: Vec<u64>,
    /// Each delay is moved by up to this percentage either way.
    pub retry_jitter_percent: u32,
    /// A receiver's `Retry-After` (429, 503) is honoured up to this.
    pub retry_after_max_secs: u64,
    /// An endpoint failing continuously this long is disabled.
    pub disable_after_failing_secs: u64,
    /// After a secret rotation the old secret keeps signing this long.
    pub rotation_overlap_secs: u64,
    /// Message payloads and response bodies are purged after this many days.
    pub retention_days: u64,
    /// How often meter thresholds are checked.
    pub thresholds_interval_secs: u64,
    /// Most live endpoints one partner (or the company's app) may have.
    pub max_endpoints_per_partner: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            delivery_enabled: true,
            concurrency: 256,
            claim_batch: 256,
            poll_interval_ms: 100,
            timeout_secs: 15,
            // The Standard Webhooks example schedule: about a day and a half in all.
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400],
            retry_jitter_percent: 20,
            retry_after_max_secs: 3600,
            disable_after_failing_secs: 5 * 86_400,
            rotation_overlap_secs: 86_400,
            retention_days: 30,
            thresholds_interval_secs: 60,
            max_endpoints_per_partner: 50,
        }
    }
}

/// The console at `/console` (sign-in, sessions, invitations).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console's pages.
    pub enabled: bool,
    /// A session unused this long signs out (30 minutes).
    pub idle_timeout_secs: u64,
    /// A session ends this long after sign-in whatever its use (12 hours).
    pub absolute_timeout_secs: u64,
    /// How long a partner user's invitation link stays valid (72 hours).
    pub invitation_ttl_hours: u64,
    /// How long a break-glass sign-in link (`console link`) stays valid (15 minutes).
    pub link_ttl_secs: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            idle_timeout_secs: 30 * 60,
            absolute_timeout_secs: 12 * 3600,
            invitation_ttl_hours: 72,
            link_ttl_secs: 15 * 60,
        }
    }
}

/// How long personal data is kept (PRIVACY.md), and the purge job that enforces it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// How often a purge runs (as a durable job: one instance runs each).
    pub purge_interval_secs: u64,
    /// Rows changed per transaction by the purge, so it never holds long locks.
    pub purge_batch: u32,
    pub retention: RetentionConfig,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            purge_interval_secs: 3600,
            purge_batch: 1000,
            retention: RetentionConfig::default(),
        }
    }
}

/// Days each kind of personal data is kept. The ledger (pseudonymous) and statements are
/// kept forever; webhook payloads and response bodies by `webhooks.retention_days`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// A launch's user id, name and context (emails, roles, patient and encounter, SSO
    /// claims and attributes), its sealed EHR tokens and handoff codes: days after the
    /// launch expired. The launch row stays (id, partner, kind, times) for what refers to it.
    pub launch_days: u64,
    /// Scores the app posted (learner id, score, comment, the LMS's answer): days after
    /// the score was delivered or given up.
    pub score_days: u64,
    /// Finished jobs (their errors may quote a partner's answer naming a user).
    pub finished_job_days: u64,
    /// Which LTI identities are one person, and each person's newest launch per link:
    /// days after the person's last launch. Long enough to span an academic year, so a
    /// learner migrating from LTI 1.1 stays one person.
    pub lti_people_days: u64,
    /// The audit log (who exported or erased whose data, and when): kept for years.
    pub audit_log_days: u64,
    /// Console sessions (names, emails, roles) after they ended or expired, sign-in links
    /// after they were used or lapsed, and period runs (who started them) after they ended.
    pub console_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            launch_days: 30,
            score_days: 30,
            finished_job_days: 30,
            lti_people_days: 400,
            // Six years: HIPAA's retention of documentation (45 CFR 164.316(b)(2)).
            audit_log_days: 6 * 366,
            console_days: 30,
        }
    }
}

/// The usage ledger's limits on what it accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Largest `data` of one usage event, in bytes of JSON (API ingest and `usage import`).
    pub max_data_bytes: usize,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            max_data_bytes: crate::metering::event::DEFAULT_MAX_DATA_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    pub id: String,
    pub name: String,
    pub kind: PartnerKind,
    #[serde(default)]
    pub contact: Option<String>,
    /// SMART on FHIR registration (EHR partners).
    #[serde(default)]
    pub smart: Option<crate::smart::registration::SmartRegistration>,
    /// LTI tool registration (LMS partners).
    #[serde(default)]
    pub lti: Option<crate::lti::registration::LtiRegistration>,
    /// Inbound webhook sources: `POST /webhooks/in/{partner}/{source}`.
    #[serde(default)]
    pub webhook_sources: Vec<crate::webhooks::source::InboundSource>,
    /// Single sign-on connections to the organisation's identity providers.
    #[serde(default)]
    pub sso_connections: Vec<crate::sso::connection::SsoConnection>,
    /// A sandbox partner: for trying flows out, never billed. Its responses carry
    /// `X-Gateway-Sandbox: true`, its usage events are marked, and statements refuse it.
    #[serde(default)]
    pub sandbox: bool,
    /// Event types the partner's own API key (and its untrusted webhook sources) may record
    /// in the ledger: exact types or prefixes ending in `*`. None by default; never a type
    /// of the gateway's own (`smart.*`, `lti.*`, ...). Statements count these events for
    /// money only where the agreement says `self_reported_events = "include"`.
    #[serde(default)]
    pub self_reported_types: Vec<String>,
    /// Networks (`10.20.0.0/16`) or addresses (`127.0.0.1`) with non-public addresses where
    /// this partner's systems are (an on-premises EHR, a campus LMS). Outbound requests
    /// reach them; LTI Dynamic Registration for this partner reaches only these.
    #[serde(default, deserialize_with = "crate::outbound::deserialize_networks")]
    pub private_networks: Vec<crate::outbound::Network>,
    /// Legal details statements are addressed with (legal name, address, tax id, payment
    /// details reference, locale).
    #[serde(default)]
    pub billing: Option<crate::statements::parties::BillingConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartnerKind {
    Ehr,
    Lms,
    Idp,
    Marketplace,
    Referral,
    Other,
}

impl PartnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ehr => "ehr",
            Self::Lms => "lms",
            Self::Idp => "idp",
            Self::Marketplace => "marketplace",
            Self::Referral => "referral",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Exact event types, or prefixes ending in `*`.
    pub event_types: Vec<String>,
    pub aggregation: String,
    /// `subject` or a path into `data` such as `$.duration_ms`.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Events left out of the meter: `{ field = value }` or `{ field = [values] }`, where
    /// a field is written as in `group_by` (`"$.reached"`, `subject`) and a value is a
    /// boolean, an integer or a string. An event is left out when one of its fields has one
    /// of the values listed for it; an event without the field is counted.
    #[serde(default)]
    pub exclude: BTreeMap<String, serde_json::Value>,
    /// Values that send `usage.threshold.crossed` once per partner and month (UTC) when the
    /// meter reaches them.
    #[serde(default)]
    pub thresholds: Vec<rust_decimal::Decimal>,
}

/// A secret value: never printed by `Debug` or `Display`. In a file it is written inline,
/// or as `{ env = "VAR" }` or `{ file = "path" }` so the value itself stays out of the file.
#[derive(Clone, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct Secret(String);

/// The forms a secret takes, for the message when it is written any other way.
const SECRET_FORMS: &str = "a secret is written as a string, { env = \"VARIABLE\" } or \
     { file = \"/path/to/file\" }; as environment variables: GATEWAY__SECTION__KEY=value, \
     GATEWAY__SECTION__KEY__ENV=VARIABLE or GATEWAY__SECTION__KEY__FILE=/path/to/file";

impl TryFrom<serde_json::Value> for Secret {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        use serde_json::Value;
        let source = match &v {
            Value::Object(m) if m.len() == 1 => m.iter().next(),
            _ => None,
        };
        match (&v, source) {
            (Value::String(s), _) => Ok(Secret(s.clone())),
            // An environment override reads digits as a number: the secret is the text.
            (Value::Number(n), _) => Ok(Secret(n.to_string())),
            (_, Some((k, Value::String(env)))) if k == "env" => std::env::var(env)
                .map(Secret)
                .map_err(|_| format!("environment variable {env} is not set")),
            (_, Some((k, Value::String(file)))) if k == "file" => std::fs::read_to_string(file)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| format!("cannot read secret file {file}: {e}")),
            _ => Err(SECRET_FORMS.to_owned()),
        }
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// One thing wrong with the configuration, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, environment variable or "default" that set the field.
    pub origin: String,
    /// Dotted path of the field, e.g. `partners[1].kind`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.field, self.message)
        }
    }
}

/// Every problem found while loading; `Display` prints one per line.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A source of config text: the file name it came from and its contents.
pub struct Layer {
    pub origin: String,
    pub text: String,
}

const SECTIONS: [&str; 15] = [
    "http",
    "database",
    "telemetry",
    "jobs",
    "keys",
    "outbound",
    "launches",
    "smart",
    "lti",
    "statements",
    "webhooks",
    "sso",
    "usage",
    "privacy",
    "console",
];
const LISTS: [&str; 3] = ["partners", "meters", "agreements"];

/// Who may record what (`metering::authority`): self-reported types are patterns outside
/// the gateway's namespaces; a webhook source maps payloads only to types it may record; an
/// agreement that reads a type its partner reports itself says whether those events count.
fn ledger_authority_problems(config: &Config) -> Vec<(String, String)> {
    use crate::metering::authority::{self, Authority, Recorder};
    let mut out = Vec::new();
    let rules = Authority::from_config(config);
    for (i, p) in config.partners.iter().enumerate() {
        for (j, t) in p.self_reported_types.iter().enumerate() {
            let field = format!("partners[{i}].self_reported_types[{j}]");
            match authority::pattern(t) {
                None => out.push((
                    field,
                    format!("{t:?} is not an event type or a prefix ending in *"),
                )),
                Some(pat)
                    if authority::GATEWAY_NAMESPACES.iter().any(|ns| {
                        pattern_overlaps(&pat, &TypePattern::Prefix((*ns).to_owned()))
                    }) =>
                {
                    out.push((
                        field,
                        format!(
                            "{t:?} covers event types only the gateway records ({})",
                            authority::GATEWAY_NAMESPACES.join("*, ")
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        for (j, src) in p.webhook_sources.iter().enumerate() {
            let recorder = Recorder::Webhook {
                source: src.id.clone(),
                trusted: src.trusted,
            };
            for (k, m) in src.events.iter().enumerate() {
                if let Err(refusal) = rules.check(&recorder, &p.id, &m.event_type) {
                    out.push((
                        format!("partners[{i}].webhook_sources[{j}].events[{k}].event_type"),
                        refusal.0,
                    ));
                }
            }
        }
    }
    for (i, a) in config.agreements.iter().enumerate() {
        if a.self_reported_events.is_some() {
            continue;
        }
        let Some(partner) = config.partners.iter().find(|p| p.id == a.partner) else {
            continue;
        };
        let own: Vec<TypePattern> = partner
            .self_reported_types
            .iter()
            .filter_map(|t| authority::pattern(t))
            .collect();
        let mut read: Vec<(String, TypePattern)> = Vec::new();
        if a.revenue.recorded {
            read.push((
                "recorded revenue".into(),
                TypePattern::Exact(crate::statements::events::REVENUE_RECOGNIZED.into()),
            ));
        }
        for r in &a.referrals {
            read.push((
                "a referral".into(),
                TypePattern::Exact(r.event_type.clone()),
            ));
        }
        for name in a.meter_names() {
            if let Some(m) = config.meters.iter().find(|m| m.name == name) {
                for t in &m.event_types {
                    if let Some(pat) = authority::pattern(t) {
                        read.push((format!("meter {name:?}"), pat));
                    }
                }
            }
        }
        if let Some((what, _)) = read
            .iter()
            .find(|(_, r)| own.iter().any(|o| pattern_overlaps(o, r)))
        {
            out.push((
                format!("agreements[{i}].self_reported_events"),
                format!(
                    "partner {:?} reports event types itself that {what} reads: say whether \
                     they count for money (\"include\" or \"exclude\")",
                    a.partner
                ),
            ));
        }
    }
    out
}

/// Whether some event type matches both patterns.
fn pattern_overlaps(a: &TypePattern, b: &TypePattern) -> bool {
    match (a, b) {
        (TypePattern::Exact(x), TypePattern::Exact(y)) => x == y,
        (TypePattern::Exact(x), TypePattern::Prefix(p))
        | (TypePattern::Prefix(p), TypePattern::Exact(x)) => x.starts_with(p.as_str()),
        (TypePattern::Prefix(p), TypePattern::Prefix(q)) => {
            p.starts_with(q.as_str()) || q.starts_with(p.as_str())
        }
    }
}

impl Config {
    /// Load from a config directory and the process environment.
    pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
        let layers = read_dir_layers(dir)?;
        Self::from_layers(layers, std::env::vars())
    }

    /// Load from explicit layers and environment pairs (tests use this directly).
    pub fn from_layers(
        layers: Vec<Layer>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        let mut merged = toml::Table::new();
        let mut origins = Origins::default();

        for layer in &layers {
            match layer.text.parse::<toml::Table>() {
                Ok(table) => merge_layer(
                    &mut merged,
                    &mut origins,
                    table,
                    &layer.origin,
                    &mut problems,
                ),
                Err(e) => {
                    let origin = match e.span() {
                        Some(span) => {
                            let (line, column) = messages::position(&layer.text, span.start);
                            format!("{}:{line}:{column}", layer.origin)
                        }
                        None => layer.origin.clone(),
                    };
                    problems.push(Problem {
                        origin,
                        field: String::new(),
                        message: format!("not valid TOML: {}", e.message().trim_end()),
                    });
                }
            }
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        apply_env(
            &mut merged,
            &mut origins,
            env.iter().cloned(),
            &mut problems,
        );
        let warnings = unread_variables(&merged, env.iter().map(|(k, _)| k.as_str()));

        for key in merged.keys() {
            if !SECTIONS.contains(&key.as_str()) && !LISTS.contains(&key.as_str()) {
                problems.push(Problem {
                    origin: origins.of(key),
                    field: key.clone(),
                    message: format!(
                        "unknown section; expected one of {}",
                        [SECTIONS.as_slice(), LISTS.as_slice()].concat().join(", ")
                    ),
                });
            }
        }

        let http = section::<HttpConfig>(&merged, "http", &origins, &mut problems);
        let database = section::<DatabaseConfig>(&merged, "database", &origins, &mut problems);
        let telemetry = section::<TelemetryConfig>(&merged, "telemetry", &origins, &mut problems);
        let jobs = section::<JobsConfig>(&merged, "jobs", &origins, &mut problems);
        let keys = section::<KeysConfig>(&merged, "keys", &origins, &mut problems);
        let outbound = section::<OutboundConfig>(&merged, "outbound", &origins, &mut problems);
        let launches = section::<LaunchesConfig>(&merged, "launches", &origins, &mut problems);
        let smart = section::<SmartConfig>(&merged, "smart", &origins, &mut problems);
        let lti = section::<LtiConfig>(&merged, "lti", &origins, &mut problems);
        let partners = list::<PartnerConfig>(&merged, "partners", &origins, &mut problems);
        let meters = list::<MeterConfig>(&merged, "meters", &origins, &mut problems);
        let statements =
            section::<StatementsConfig>(&merged, "statements", &origins, &mut problems);
        let agreements = list::<AgreementConfig>(&merged, "agreements", &origins, &mut problems);
        let webhooks = section::<WebhooksConfig>(&merged, "webhooks", &origins, &mut problems);
        let sso = section::<SsoConfig>(&merged, "sso", &origins, &mut problems);
        let usage = section::<UsageConfig>(&merged, "usage", &origins, &mut problems);
        let privacy = section::<PrivacyConfig>(&merged, "privacy", &origins, &mut problems);
        let console = section::<ConsoleConfig>(&merged, "console", &origins, &mut problems);

        let config = Config {
            http: http.unwrap_or_default(),
            database: database.unwrap_or_default(),
            telemetry: telemetry.unwrap_or_default(),
            jobs: jobs.unwrap_or_default(),
            keys: keys.unwrap_or_default(),
            outbound: outbound.unwrap_or_default(),
            launches: launches.unwrap_or_default(),
            smart: smart.unwrap_or_default(),
            lti: lti.unwrap_or_default(),
            statements: statements.unwrap_or_default(),
            webhooks: webhooks.unwrap_or_default(),
            sso: sso.unwrap_or_default(),
            usage: usage.unwrap_or_default(),
            privacy: privacy.unwrap_or_default(),
            console: console.unwrap_or_default(),
            partners,
            meters,
            agreements,
            warnings,
        };
        // A partner or meter that did not parse (a bad `kind`) is reported once, for itself,
        // not again by everything that names it.
        let unparsed = |list: &str, key: &str, parsed: Vec<&str>| -> Vec<String> {
            let Some(toml::Value::Array(items)) = merged.get(list) else {
                return Vec::new();
            };
            items
                .iter()
                .filter_map(|i| i.get(key).and_then(toml::Value::as_str))
                .filter(|id| !parsed.contains(id))
                .map(str::to_owned)
                .collect()
        };
        // A relative logo path is relative to the file that names it (config/ in a clone,
        // /etc/partner-gateway in the image), whatever the working directory.
        let mut config = config;
        if let Some(logo) = config.statements.company_logo.as_mut()
            && logo.is_relative()
        {
            let origin = origins.of("statements.company_logo");
            if let Some(dir) = Path::new(&origin)
                .is_file()
                .then(|| Path::new(&origin).parent())
                .flatten()
            {
                *logo = dir.join(&*logo);
            }
        }
        let mut cascades: Vec<String> = Vec::new();
        for id in unparsed(
            "partners",
            "id",
            config.partners.iter().map(|p| p.id.as_str()).collect(),
        ) {
            cascades.push(format!("no partner {id:?} is configured"));
        }
        for name in unparsed(
            "meters",
            "name",
            config.meters.iter().map(|m| m.name.as_str()).collect(),
        ) {
            cascades.push(format!("no meter {name:?} is configured"));
        }
        for (field, message) in config.semantic_problems() {
            if cascades.iter().any(|c| message.starts_with(c.as_str())) {
                continue;
            }
            problems.push(Problem {
                origin: origins.of(&field),
                field,
                message,
            });
        }
        let names = messages::ItemNames::from_merged(&merged);
        for p in &mut problems {
            p.field = names.relabel(&p.field);
            p.message = names.relabel(&p.message);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Checks that need more than one field, or more than a type, to judge.
    fn semantic_problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            out.push((
                "database.url".into(),
                "must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
        if self.database.max_connections == 0 {
            out.push((
                "database.max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        let c = &self.console;
        if !(60..=86_400).contains(&c.idle_timeout_secs) {
            out.push((
                "console.idle_timeout_secs".into(),
                "must be between 60 and 86400 (a day)".into(),
            ));
        }
        if c.absolute_timeout_secs < c.idle_timeout_secs || c.absolute_timeout_secs > 30 * 86_400 {
            out.push((
                "console.absolute_timeout_secs".into(),
                "must be at least idle_timeout_secs and at most 2592000 (30 days)".into(),
            ));
        }
        if !(1..=720).contains(&c.invitation_ttl_hours) {
            out.push((
                "console.invitation_ttl_hours".into(),
                "must be between 1 and 720 (30 days)".into(),
            ));
        }
        if !(60..=86_400).contains(&c.link_ttl_secs) {
            out.push((
                "console.link_ttl_secs".into(),
                "must be between 60 and 86400".into(),
            ));
        }
        let p = &self.privacy;
        if p.purge_interval_secs < 60 {
            out.push((
                "privacy.purge_interval_secs".into(),
                "must be at least 60".into(),
            ));
        }
        if p.purge_batch == 0 || p.purge_batch > 100_000 {
            out.push((
                "privacy.purge_batch".into(),
                "must be between 1 and 100000".into(),
            ));
        }
        let r = &p.retention;
        for (field, days, least) in [
            ("launch_days", r.launch_days, 1),
            ("score_days", r.score_days, 1),
            ("finished_job_days", r.finished_job_days, 1),
            // An LTI person forgotten within a term would be counted again as a new one.
            ("lti_people_days", r.lti_people_days, 30),
            ("audit_log_days", r.audit_log_days, 365),
            ("console_days", r.console_days, 1),
        ] {
            if days < least {
                out.push((
                    format!("privacy.retention.{field}"),
                    format!("must be at least {least} days"),
                ));
            } else if days > 36_500 {
                out.push((
                    format!("privacy.retention.{field}"),
                    "must be at most 36500 days (100 years)".into(),
                ));
            }
        }
        if self.http.body_limit_bytes < 1024 {
            out.push((
                "http.body_limit_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        if self.http.request_timeout_secs == 0 {
            out.push((
                "http.request_timeout_secs".into(),
                "must be at least 1".into(),
            ));
        }
        if self.http.header_read_timeout_secs == 0 {
            out.push((
                "http.header_read_timeout_secs".into(),
                "must be at least 1".into(),
            ));
        }
        if self.webhooks.max_endpoints_per_partner == 0 {
            out.push((
                "webhooks.max_endpoints_per_partner".into(),
                "must be at least 1".into(),
            ));
        }
        if self.usage.max_data_bytes < 2 {
            out.push((
                "usage.max_data_bytes".into(),
                "must be at least 2 (the size of {})".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.telemetry.access_log_sample) {
            out.push((
                "telemetry.access_log_sample".into(),
                format!(
                    "{} is not a fraction from 0 to 1 (0.01 logs one answer in a hundred)",
                    self.telemetry.access_log_sample
                ),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).is_err() {
            out.push((
                "telemetry.log_level".into(),
                format!("not a valid log filter: {:?}", self.telemetry.log_level),
            ));
        }
        if self.jobs.concurrency == 0 {
            out.push(("jobs.concurrency".into(), "must be at least 1".into()));
        }
        if self.jobs.max_attempts < 1 {
            out.push(("jobs.max_attempts".into(), "must be at least 1".into()));
        }
        if self.jobs.lease_secs < 2 {
            out.push(("jobs.lease_secs".into(), "must be at least 2".into()));
        }
        if self.jobs.poll_interval_ms == 0 {
            out.push(("jobs.poll_interval_ms".into(), "must be at least 1".into()));
        }

        let mut seen = BTreeMap::new();
        let mut sso_ids: BTreeMap<String, String> = BTreeMap::new();
        let mut sso_domains: BTreeMap<String, String> = BTreeMap::new();
        for (i, p) in self.partners.iter().enumerate() {
            if !valid_partner_id(&p.id) {
                out.push((
                    format!("partners[{i}].id"),
                    format!(
                        "{:?} is not a valid partner id: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit",
                        p.id
                    ),
                ));
            }
            if p.name.trim().is_empty() {
                out.push((format!("partners[{i}].name"), "must not be empty".into()));
            }
            if let Some(first) = seen.insert(p.id.clone(), i) {
                out.push((
                    format!("partners[{i}].id"),
                    format!("duplicate partner id {:?} (also partners[{first}])", p.id),
                ));
            }
            if let Some(smart) = &p.smart {
                for (field, msg) in smart.problems(p.kind) {
                    out.push((format!("partners[{i}].smart.{field}"), msg));
                }
            }
            if let Some(lti) = &p.lti {
                for (field, msg) in lti.problems(p.kind) {
                    out.push((format!("partners[{i}].lti.{field}"), msg));
                }
            }
            for (j, c) in p.sso_connections.iter().enumerate() {
                for (field, msg) in c.problems() {
                    out.push((format!("partners[{i}].sso_connections[{j}].{field}"), msg));
                }
                if let Some(first) =
                    sso_ids.insert(c.id.clone(), format!("partners[{i}].sso_connections[{j}]"))
                {
                    out.push((
                        format!("partners[{i}].sso_connections[{j}].id"),
                        format!("duplicate connection id {:?} (also {first})", c.id),
                    ));
                }
                for d in &c.domains {
                    if let Some(first) = sso_domains.insert(d.clone(), c.id.clone()) {
                        out.push((
                            format!("partners[{i}].sso_connections[{j}].domains"),
                            format!("domain {d:?} already routes to connection {first:?}"),
                        ));
                    }
                }
            }
            let mut source_ids = BTreeMap::new();
            for (j, src) in p.webhook_sources.iter().enumerate() {
                for (field, msg) in src.problems() {
                    out.push((format!("partners[{i}].webhook_sources[{j}].{field}"), msg));
                }
                if let Some(first) = source_ids.insert(src.id.clone(), j) {
                    out.push((
                        format!("partners[{i}].webhook_sources[{j}].id"),
                        format!(
                            "duplicate source id {:?} (also webhook_sources[{first}])",
                            src.id
                        ),
                    ));
                }
            }
        }
        out.extend(ledger_authority_problems(self));
        // A launch finds its partner by (issuer, client id, deployment): one owner each.
        let mut deployments: BTreeMap<(String, String, String), String> = BTreeMap::new();
        let mut consumers: BTreeMap<String, String> = BTreeMap::new();
        for (i, p) in self.partners.iter().enumerate() {
            let Some(lti) = &p.lti else { continue };
            for (j, pl) in lti.platforms.iter().enumerate() {
                for d in &pl.deployment_ids {
                    let key = (pl.issuer.clone(), pl.client_id.clone(), d.clone());
                    if let Some(other) = deployments.insert(key, p.id.clone()) {
                        out.push((
                            format!("partners[{i}].lti.platforms[{j}].deployment_ids"),
                            format!("deployment {d:?} of {} / {} is also registered by partner {other:?}", pl.issuer, pl.client_id),
                        ));
                    }
                }
            }
            for (j, c) in lti.lti11.iter().enumerate() {
                if let Some(other) = consumers.insert(c.consumer_key.clone(), p.id.clone()) {
                    out.push((
                        format!("partners[{i}].lti.lti11[{j}].consumer_key"),
                        format!(
                            "consumer key {:?} is also used by partner {other:?}",
                            c.consumer_key
                        ),
                    ));
                }
            }
        }
        // One issuer belongs to one partner: an EHR launch finds its partner by `iss`.
        let mut issuers: BTreeMap<String, String> = BTreeMap::new();
        for (i, p) in self.partners.iter().enumerate() {
            for iss in p.smart.iter().flat_map(|s| s.issuers.iter()) {
                let key = iss.trim_end_matches('/').to_owned();
                if let Some(other) = issuers.insert(key, p.id.clone()) {
                    out.push((
                        format!("partners[{i}].smart.issuers"),
                        format!("issuer {iss:?} is also registered by partner {other:?}"),
                    ));
                }
            }
        }
        if let Some(u) = &self.http.public_url
            && let Err(e) = crate::outbound::parse_base_url(u)
        {
            out.push(("http.public_url".into(), e));
        }
        if self.launches.handoff_ttl_secs == 0 || self.launches.handoff_ttl_secs > 600 {
            out.push((
                "launches.handoff_ttl_secs".into(),
                "must be between 1 and 600: the code is exchanged at once".into(),
            ));
        }
        if self.launches.launch_ttl_hours == 0 {
            out.push((
                "launches.launch_ttl_hours".into(),
                "must be at least 1".into(),
            ));
        }
        if self.smart.state_ttl_secs < 30 {
            out.push(("smart.state_ttl_secs".into(), "must be at least 30".into()));
        }
        if self.smart.refresh_retry_secs == 0 {
            out.push((
                "smart.refresh_retry_secs".into(),
                "must be at least 1: 0 would ask a failing token endpoint again on every call"
                    .into(),
            ));
        }
        if self.lti.state_ttl_secs < 30 {
            out.push(("lti.state_ttl_secs".into(), "must be at least 30".into()));
        }
        if self.lti.clock_skew_secs > 300 {
            out.push((
                "lti.clock_skew_secs".into(),
                "must be at most 300: a larger leeway weakens token expiry".into(),
            ));
        }
        if self.outbound.allow_private_networks == Some(true) {
            out.push((
                "outbound.allow_private_networks".into(),
                "is no longer supported: it let every outbound request (URLs from discovery documents, webhook endpoints, LTI Dynamic Registration) reach any internal address. Remove it and list the networks instead: `private_networks = [\"10.20.0.0/16\"]` in the [[partners]] entry whose systems are there, or outbound.private_networks for the company's own services (\"127.0.0.1\" for this machine)".into(),
            ));
        }
        if self.outbound.timeout_secs == 0 {
            out.push(("outbound.timeout_secs".into(), "must be at least 1".into()));
        }

        if let Err(problems) = self.checked_agreements() {
            out.extend(problems);
        }
        out.extend(sandbox_agreement_problems(&self.partners, &self.agreements));
        if self.statements.integrity_check_secs < 10 {
            out.push((
                "statements.integrity_check_secs".into(),
                "must be at least 10".into(),
            ));
        }
        out.extend(crate::statements::parties::problems(self));
        if self.statements.company_name.trim().is_empty() {
            out.push((
                "statements.company_name".into(),
                "must not be empty: it heads every statement".into(),
            ));
        }

        let mut names = BTreeMap::new();
        for (i, m) in self.meters.iter().enumerate() {
            if let Err(errs) = Meter::compile(m) {
                for (field, msg) in errs {
                    out.push((format!("meters[{i}].{field}"), msg));
                }
            }
            if let Some(first) = names.insert(m.name.clone(), i) {
                out.push((
                    format!("meters[{i}].name"),
                    format!("duplicate meter name {:?} (also meters[{first}])", m.name),
                ));
            }
        }
        out
    }

    /// The agreements, checked against each other, the partners and the meters (config
    /// loading has already refused a set with problems, so this is the happy path).
    pub fn checked_agreements(&self) -> Result<Agreements, Vec<(String, String)>> {
        let partners: Vec<&str> = self.partners.iter().map(|p| p.id.as_str()).collect();
        let meters = self
            .meters
            .iter()
            .filter_map(|m| Aggregation::parse(&m.aggregation).map(|a| (m.name.clone(), a)))
            .collect();
        Agreements::check(&self.agreements, &partners, &meters)
    }

    pub fn partner(&self, id: &str) -> Option<&PartnerConfig> {
        self.partners.iter().find(|p| p.id == id)
    }

    /// Whether `id` is a configured sandbox partner.
    pub fn is_sandbox(&self, id: &str) -> bool {
        self.partner(id).is_some_and(|p| p.sandbox)
    }
}

/// Sandbox partners are never billed: an agreement naming one is a mistake (test data would
/// otherwise reach a statement), so it is refused with both fields named.
fn sandbox_agreement_problems(
    partners: &[PartnerConfig],
    agreements: &[AgreementConfig],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, a) in agreements.iter().enumerate() {
        if let Some(i) = partners.iter().position(|p| p.sandbox && p.id == a.partner) {
            out.push((
                format!("agreements[{k}].partner"),
                format!(
                    "partner {:?} is a sandbox partner (partners[{i}].sandbox = true) and sandbox partners are excluded from statements: remove agreement {:?} or set partners[{i}].sandbox = false",
                    a.partner, a.id
                ),
            ));
        }
    }
    out
}

pub fn valid_partner_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

fn read_dir_layers(dir: &Path) -> Result<Vec<Layer>, ConfigErrors> {
    let problem = |message: String| {
        ConfigErrors(vec![Problem {
            origin: dir.display().to_string(),
            field: "(directory)".into(),
            message,
        }])
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| problem(format!("cannot read config directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut layers = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => layers.push(Layer {
                origin: path.display().to_string(),
                text,
            }),
            Err(e) => problems.push(Problem {
                origin: path.display().to_string(),
                field: "(file)".into(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(layers)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// Where each field (or list element) was set, by dotted path.
#[derive(Default)]
struct Origins(BTreeMap<String, String>);

impl Origins {
    /// The origin of the longest recorded prefix of `path`.
    fn of(&self, path: &str) -> String {
        let mut p = path;
        loop {
            if let Some(o) = self.0.get(p) {
                return o.clone();
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
        // Set through a deeper key (`GATEWAY__KEYS__MASTER_KEY__FILE` for keys.master_key).
        let child = format!("{path}.");
        self.0
            .range(child.clone()..)
            .take_while(|(k, _)| k.starts_with(&child))
            .map(|(_, o)| o.clone())
            .next()
            .unwrap_or_else(|| "default".into())
    }
}

/// Variables that look like the gateway's but that it does not read: `GATEWAY_HTTP_ADDR`
/// (single underscores) or any `GATEWAY_*` name, unless the config reads it as a secret
/// (`{ env = "GATEWAY_MASTER_KEY" }`).
fn unread_variables<'a>(merged: &toml::Table, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    fn referenced(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                if t.len() == 1
                    && let Some(toml::Value::String(name)) = t.get("env")
                {
                    out.push(name.clone());
                }
                t.values().for_each(|v| referenced(v, out));
            }
            toml::Value::Array(a) => a.iter().for_each(|v| referenced(v, out)),
            _ => {}
        }
    }
    let mut read = Vec::new();
    merged.values().for_each(|v| referenced(v, &mut read));
    let mut warnings: Vec<String> = names
        .filter(|n| n.to_ascii_uppercase().starts_with("GATEWAY_") && !n.starts_with(ENV_PREFIX))
        .filter(|n| !read.iter().any(|r| r == n) && *n != "GATEWAY_BUILD_COMMIT")
        .map(|n| {
            let suggestion = n
                .get("GATEWAY_".len()..)
                .map(|rest| format!("{ENV_PREFIX}{}", rest.replacen('_', "__", 1)))
                .filter(|s| s.contains("__") && s.len() > ENV_PREFIX.len())
                .map(|s| {
                    format!(" (overrides are GATEWAY__SECTION__KEY, with double underscores: {s}?)")
                })
                .unwrap_or_default();
            format!("environment variable {n} is not read by the gateway{suggestion}")
        })
        .collect();
    warnings.sort();
    warnings
}

fn merge_layer(
    merged: &mut toml::Table,
    origins: &mut Origins,
    table: toml::Table,
    origin: &str,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in table {
        if LISTS.contains(&key.as_str()) {
            let toml::Value::Array(items) = value else {
                problems.push(Problem {
                    origin: origin.into(),
                    field: key.clone(),
                    message: format!("must be an array of tables ([[{key}]])"),
                });
                continue;
            };
            let entry = merged
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            if let toml::Value::Array(existing) = entry {
                for item in items {
                    origins
                        .0
                        .insert(format!("{key}[{}]", existing.len()), origin.into());
                    existing.push(item);
                }
            }
            continue;
        }
        match value {
            toml::Value::Table(fields) => {
                let entry = merged
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let Some(section) = entry.as_table_mut() else {
                    continue;
                };
                for (field, v) in fields {
                    let path = format!("{key}.{field}");
                    if let Some(previous) = origins.0.get(&path) {
                        problems.push(Problem {
                            origin: origin.into(),
                            field: path.clone(),
                            message: format!("also set in {previous}; set each field in one file"),
                        });
                    }
                    origins.0.insert(path, origin.into());
                    section.insert(field, v);
                }
            }
            other => {
                origins.0.insert(key.clone(), origin.into());
                merged.insert(key, other);
            }
        }
    }
}

/// `GATEWAY__HTTP__ADDR=0.0.0.0:8080` sets `http.addr`. Values that read as a TOML boolean,
/// integer or float are taken as such; anything else is a string.
fn apply_env(
    merged: &mut toml::Table,
    origins: &mut Origins,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<Problem>,
) {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let origin = format!("environment variable {name}");
        if path.len() < 2
            || path.iter().any(String::is_empty)
            || !SECTIONS.contains(&path[0].as_str())
        {
            problems.push(Problem {
                origin,
                field: path.join("."),
                message: format!(
                    "environment overrides take the form GATEWAY__SECTION__KEY with SECTION one of {}",
                    SECTIONS.join(", ")
                ),
            });
            continue;
        }
        insert_at(merged, &path, env_value(&raw));
        origins.0.insert(path.join("."), origin);
    }
}

/// Set `path` (a non-empty list of keys) to `value`, creating tables on the way.
fn insert_at(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [leaf] => {
            table.insert(leaf.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                insert_at(t, rest, value);
            }
        }
    }
}

fn env_value(raw: &str) -> toml::Value {
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if raw.contains('.')
        && !raw.contains(':')
        && let Ok(f) = raw.parse::<f64>()
    {
        return toml::Value::Float(f);
    }
    toml::Value::String(raw.to_owned())
}

fn deserialize_at<T: DeserializeOwned>(
    value: toml::Value,
    base: &str,
    origins: &Origins,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let field = if inner == "." || inner.is_empty() {
                base.to_owned()
            } else {
                format!("{base}.{inner}")
            };
            problems.push(Problem {
                origin: origins.of(&field),
                field,
                message: messages::plain(e.into_inner().message()),
            });
            None
        }
    }
}

fn section<T: DeserializeOwned + Default>(
    merged: &toml::Table,
    name: &str,
    origins: &Origins,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match merged.get(name) {
        None => Some(T::default()),
        Some(v) if !v.is_table() => {
            problems.push(Problem {
                origin: origins.of(name),
                field: name.into(),
                message: "must be a table".into(),
            });
            None
        }
        Some(v) => deserialize_at(v.clone(), name, origins, problems),
    }
}

fn list<T: DeserializeOwned>(
    merged: &toml::Table,
    name: &str,
    origins: &Origins,
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    let Some(toml::Value::Array(items)) = merged.get(name) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            deserialize_at(item.clone(), &format!("{name}[{i}]"), origins, problems)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(origin: &str, text: &str) -> Layer {
        Layer {
            origin: origin.into(),
            text: text.into(),
        }
    }

    #[test]
    fn defaults_apply_when_no_file_sets_anything() {
        let c = Config::from_layers(vec![], Vec::new()).unwrap();
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database.url.expose(), "sqlite://data/gateway.db");
    }

    #[test]
    fn environment_overrides_files() {
        let c = Config::from_layers(
            vec![layer("gateway.toml", "[http]\naddr = \"127.0.0.1:9000\"\n")],
            vec![
                ("GATEWAY__HTTP__ADDR".into(), "0.0.0.0:7000".into()),
                ("GATEWAY__JOBS__CONCURRENCY".into(), "2".into()),
                ("OTHER".into(), "x".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.http.addr.to_string(), "0.0.0.0:7000");
        assert_eq!(c.jobs.concurrency, 2);
    }

    #[test]
    fn every_problem_is_reported_with_its_file_and_field() {
        let err = Config::from_layers(
            vec![
                layer("gateway.toml", "[http]\naddr = \"nope\"\n[jobs]\nconcurrency = 0\n"),
                layer(
                    "partners.toml",
                    "[[partners]]\nid = \"a\"\nname = \"A\"\nkind = \"ehr\"\n[[partners]]\nid = \"b\"\nname = \"B\"\nkind = \"spaceship\"\n",
                ),
            ],
            vec![("GATEWAY__DATABASE__URL".into(), "mysql://x".into())],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("gateway.toml: http.addr:"), "{text}");
        assert!(
            text.contains("gateway.toml: jobs.concurrency: must be at least 1"),
            "{text}"
        );
        assert!(
            text.contains("partners.toml: partners[id = \"b\"].kind:"),
            "{text}"
        );
        assert!(
            text.contains("environment variable GATEWAY__DATABASE__URL: database.url:"),
            "{text}"
        );
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let c = Config::from_layers(
            vec![layer(
                "g.toml",
                "[database]\nurl = \"postgres://u:hunter2@db/x\"\n",
            )],
            Vec::new(),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn secret_from_missing_env_var_is_a_problem() {
        let err = Config::from_layers(
            vec![layer(
                "g.toml",
                "[database]\nurl = { env = \"PGW_TEST_SURELY_UNSET_VAR\" }\n",
            )],
            Vec::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("PGW_TEST_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
    }

    #[test]
    fn a_field_set_in_two_files_is_a_problem() {
        let err = Config::from_layers(
            vec![
                layer("a.toml", "[http]\naddr = \"127.0.0.1:1\"\n"),
                layer("b.toml", "[http]\naddr = \"127.0.0.1:2\"\n"),
            ],
            Vec::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("b.toml: http.addr: also set in a.toml"),
            "{err}"
        );
    }
}
