//! partner-gateway: the integration gateway between the company's product and its partners
//! (EHRs, LMSs, identity providers), with a per-partner usage ledger.
//!
//! `ARCHITECTURE.md` at the repository root is the map of these modules.

/// API keys: generation, hashing, lookup.
pub mod apikeys;
/// Assembly: every area's routes, the job runner and the dispatcher over one state; run until stopped.
pub mod app;
/// Who did what, when, from where: one entry per change, in the change's transaction.
pub mod audit;
/// Command-line interface: `serve`, `migrate`, `check-config`, `api-keys`, `usage import`, `keys rotate`, `sandbox`.
pub mod cli;
/// Layered configuration (built-in defaults, files, `GATEWAY__*` environment) and validation.
pub mod config;
/// The console at `/console`: finance's month-end, the partner portal, the admin's desk.
pub mod console;
/// The two storage backends (SQLite, PostgreSQL), migrations and transactions.
pub mod db;
/// Shared HTTP pieces: the error type, API-key authentication, health and metrics routes.
pub mod http;
/// Ids with a type prefix.
pub mod ids;
/// Durable background jobs: enqueue inside a transaction, leased claims, retries, dead jobs.
pub mod jobs;
/// The gateway's signing keys (RS256, RS384, ES384): JWKS, rotation, sealed at rest.
pub mod keys;
/// The launch model shared by SMART, LTI and SSO, and the app's handoff exchange.
pub mod launches;
/// LTI 1.3 Advantage tool (and LTI 1.1): launches, Deep Linking, grades, rosters.
pub mod lti;
/// Usage ledger: CloudEvents ingest, deduplication, meters and windowed queries.
pub mod metering;
/// The outbound HTTP client and its policy (https only, no private networks by default).
pub mod outbound;
/// Partners declared in config and synced into the store.
pub mod partners;
/// Personal data: retention, export and erasure, the audit log (PRIVACY.md).
pub mod privacy;
/// Unguessable tokens: state, nonces, PKCE verifiers, handoff codes.
pub mod random;
/// The `sandbox` command: the simulated partners of `crates/partner-sim` beside the gateway,
/// with a sample app (the default `sandbox` feature).
#[cfg(feature = "sandbox")]
pub mod sandbox;
/// SMART on FHIR client: EHR and standalone launch, token handling, FHIR proxy.
pub mod smart;
/// Single sign-on for customer organisations (OIDC) through the launch handoff.
pub mod sso;
/// The application state every handler reaches, below the areas (they depend on it).
pub mod state;
/// Revenue-share statements: agreements, the calculation, the issued record, exports.
pub mod statements;
/// Tracing (text or JSON logs) and the Prometheus recorder.
pub mod telemetry;
/// U+0000, which the gateway never stores: found in input it refuses, scrubbed from signed
/// third-party data.
pub mod text;
/// Wall-clock helpers: the store keeps instants as microseconds since the Unix epoch.
pub mod time;
/// Webhooks: signed, durable outbound delivery; verified inbound events into the ledger.
pub mod webhooks;
