//! The application state every handler reaches: the store, config, and each area's shared
//! parts, built once at start. It sits below the areas: it names their state types (caches,
//! recorders, checked config) but none of their routes, so areas depend on it and `app.rs`
//! only assembles (routes, workers, serving).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::db::{Db, SchemaState};
use crate::keys::crypto::MasterKey;
use crate::metering::{Meter, UsageRecorder};
use crate::outbound::Outbound;
use crate::smart::SmartState;

/// What every handler can reach: one `Arc`, so the clones axum makes for every request and
/// extractor cost one reference count, not one per part (measured: the per-part clones and
/// drops were ~7% of the FHIR proxy's CPU).
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Parts {
    pub db: Db,
    pub config: Arc<Config>,
    pub meters: Arc<BTreeMap<String, Meter>>,
    pub master_key: MasterKey,
    /// The keys that turn subject ids into the ledger's pseudonyms (from the master key).
    pub subjects: crate::metering::subject::Subjects,
    /// The one client for requests to partners, with the outbound policy.
    pub outbound: Outbound,
    /// Clients for webhook endpoints, limited to their owner's networks.
    pub endpoint_outbound: crate::outbound::Scoped,
    pub smart: SmartState,
    /// Batched writer for usage events recorded on hot paths (`fhir.request`).
    pub usage: UsageRecorder,
    pub lti: crate::lti::LtiState,
    /// Revenue-share agreements from config, checked.
    pub agreements: Arc<crate::statements::agreement::Agreements>,
    /// Live API keys seen recently (revocations honoured within `http.api_key_cache_ms`).
    pub api_keys: crate::apikeys::KeyCache,
    pub sso: crate::sso::SsoState,
    /// Who may record which event types in the ledger (from config).
    pub ledger_rules: Arc<crate::metering::authority::Authority>,
    /// The latest check of issued statements against their hashes.
    pub statement_integrity: crate::statements::integrity::IntegrityWatch,
    /// The letterhead logo (`statements.company_logo`), read and decoded once at start
    /// rather than on every PDF; a file that can't be read is logged and left out.
    pub statement_logo: Option<crate::statements::pdf::Logo>,
}

impl AppState {
    /// The statement operations over this state's store and config.
    pub fn statements(&self) -> crate::statements::service::Statements<'_> {
        crate::statements::service::Statements {
            db: &self.db,
            config: &self.config,
            agreements: &self.agreements,
            meters: &self.meters,
        }
    }

    /// What heads `doc` as a PDF: the company's address and logo, in the partner's locale.
    pub fn letterhead<'a>(
        &'a self,
        doc: &'a crate::statements::model::Document,
    ) -> crate::statements::pdf::Letterhead<'a> {
        crate::statements::pdf::Letterhead {
            company_address: &self.config.statements.company_address,
            logo: self.statement_logo.as_ref(),
            locale: crate::statements::parties::locale(doc),
        }
    }

    /// Whether `partner` is a sandbox partner; noted for this response's
    /// `X-Gateway-Sandbox` header (`http::sandbox`).
    pub fn sandbox_partner(&self, partner: &str) -> bool {
        crate::http::sandbox::partner(&self.config, partner)
    }

    /// Connect, optionally migrate, and sync the configured partners into the store.
    pub async fn prepare(config: Config, migrate: bool) -> anyhow::Result<AppState> {
        let schema = if migrate {
            Schema::Migrate
        } else {
            Schema::Serve
        };
        Self::prepare_with(config, schema).await
    }

    /// [`AppState::prepare`], saying what may happen to the schema.
    pub async fn prepare_with(config: Config, schema: Schema) -> anyhow::Result<AppState> {
        // The recorder first: the transactions of the start-up are the first samples.
        crate::telemetry::prometheus();
        let db = Db::connect(&config.database).await?;
        if schema == Schema::Migrate {
            db.migrate().await?;
        } else {
            match db.schema_state().await? {
                SchemaState::Current => {}
                SchemaState::Empty => anyhow::bail!(
                    "the database has no schema: run `partner-gateway migrate` (as the role that owns the tables), or let `serve` do it with database.migrate_on_start = true"
                ),
                // A rolling upgrade: /readyz answers 503 until the migration has run.
                SchemaState::Behind(pending) if schema == Schema::Serve => tracing::warn!(
                    ?pending,
                    "migrations are pending and database.migrate_on_start is off: run `partner-gateway migrate`"
                ),
                SchemaState::Behind(pending) => anyhow::bail!(
                    "the database is {} migration(s) behind this binary (versions {pending:?}): run `partner-gateway migrate` first; commands other than migrate and serve do not change the schema",
                    pending.len()
                ),
            }
        }
        crate::partners::sync_partners(&db, &config.partners)
            .await
            .context("syncing partners from config into the store")?;
        let master_key = MasterKey::load(&config.keys)?;
        crate::keys::ensure_signing_keys(&db, &master_key, crate::time::now_micros())
            .await
            .context("creating the gateway's signing keys")?;
        // Fail at start, not at the first launch, when this instance's master key is not the
        // one the store's keys were sealed with (every instance must share it).
        for alg in crate::keys::Alg::ALL {
            crate::keys::signing_key(&db, &master_key, alg)
                .await
                .context("the master key does not open the stored signing keys: every instance must use the same keys.master_key (or master_key_file)")?;
        }
        // Rows the ledger kept before its subjects were pseudonyms: converted before this
        // instance serves (a no-op, one probe of an empty index, once they all are). With
        // migrations still pending the column is not there yet: the purge job sweeps later.
        if db.pending_migrations().await?.is_empty() {
            let subjects = crate::metering::subject::Subjects::new(&master_key);
            let converted =
                crate::metering::store::pseudonymize_legacy(&db, &subjects, PSEUDONYMIZE_BATCH)
                    .await
                    .context("converting the ledger's subjects to pseudonyms")?;
            if converted > 0 {
                tracing::info!(
                    converted,
                    "ledger subjects written before pseudonyms were converted"
                );
            }
        }
        Self::with_db(db, config, master_key)
    }

    /// Build the state over an open store (no I/O; starts the usage writer task, so call it
    /// inside the runtime).
    pub fn with_db(db: Db, config: Config, master_key: MasterKey) -> anyhow::Result<AppState> {
        let mut meters = BTreeMap::new();
        for m in &config.meters {
            let compiled = Meter::compile(m)
                .map_err(|errs| anyhow::anyhow!("meter {:?} is invalid: {errs:?}", m.name))?;
            meters.insert(m.name.clone(), compiled);
        }
        let agreements = config.checked_agreements().map_err(|problems| {
            anyhow::anyhow!("the agreements in config have problems: {problems:?}")
        })?;
        let outbound = Outbound::from_config(&config)?;
        let endpoint_outbound = crate::outbound::Scoped::from_config(&config)?;
        let smart = SmartState::new(
            outbound.clone(),
            Duration::from_secs(config.smart.discovery_ttl_secs),
        );
        let subjects = crate::metering::subject::Subjects::new(&master_key);
        let usage = UsageRecorder::start(
            db.clone(),
            subjects.clone(),
            Duration::from_millis(config.smart.usage_flush_ms),
        );
        let api_keys =
            crate::apikeys::KeyCache::new(Duration::from_millis(config.http.api_key_cache_ms));
        let ledger_rules = Arc::new(crate::metering::authority::Authority::from_config(&config));
        let statement_logo = crate::statements::parties::logo(&config.statements);
        Ok(AppState(Arc::new(Parts {
            ledger_rules,
            statement_integrity: Default::default(),
            statement_logo,
            api_keys,
            sso: crate::sso::SsoState::new(&config.sso),
            db,
            config: Arc::new(config),
            meters: Arc::new(meters),
            master_key,
            subjects,
            outbound,
            endpoint_outbound,
            smart,
            usage,
            lti: crate::lti::LtiState::default(),
            agreements: Arc::new(agreements),
        })))
    }
}

/// Ledger rows converted to pseudonyms per transaction at start.
const PSEUDONYMIZE_BATCH: i64 = 5_000;

/// What starting may do to the database schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply pending migrations (`serve` with `database.migrate_on_start`, tests, sandbox).
    Migrate,
    /// `serve` without migrating: refuse a database with no schema, warn when behind.
    Serve,
    /// Every other command: refuse a database that is not current.
    Require,
}
