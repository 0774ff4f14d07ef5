//! Assembly: connect the store, sync partners, compile meters, build the router and the job
//! runner, and run both until a shutdown signal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{Db, SchemaState};
use crate::jobs::{Handlers, Runner};
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
        let usage = UsageRecorder::start(
            db.clone(),
            Duration::from_millis(config.smart.usage_flush_ms),
        );
        let api_keys =
            crate::apikeys::KeyCache::new(Duration::from_millis(config.http.api_key_cache_ms));
        let ledger_rules = Arc::new(crate::metering::authority::Authority::from_config(&config));
        Ok(AppState(Arc::new(Parts {
            ledger_rules,
            statement_integrity: Default::default(),
            api_keys,
            sso: crate::sso::SsoState::new(&config.sso),
            db,
            config: Arc::new(config),
            meters: Arc::new(meters),
            master_key,
            outbound,
            endpoint_outbound,
            smart,
            usage,
            lti: crate::lti::LtiState::default(),
            agreements: Arc::new(agreements),
        })))
    }
}

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

/// Every route of the gateway, with its middleware.
pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request so no early count is lost.
    crate::telemetry::prometheus();
    crate::telemetry::metrics::register(&state);
    let (api, doc) = api_routes().split_for_parts();
    let routes = api
        .merge(crate::http::health::router())
        .merge(crate::http::openapi::router(crate::http::openapi::finish(
            doc,
        )));
    crate::http::with_middleware(routes, state)
}

/// Every area's routes: the `/v1` API with its OpenAPI description, and the browser and
/// protocol endpoints (launch, callback, JWKS, ACS...) that are not part of it.
pub fn api_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::with_openapi(crate::http::openapi::base())
        .merge(crate::partners::router())
        .merge(crate::keys::router())
        .merge(crate::metering::router())
        .merge(crate::jobs::router())
        .merge(crate::launches::router())
        .merge(crate::smart::router())
        .merge(crate::lti::router())
        .merge(crate::statements::router())
        .merge(crate::webhooks::router())
        .merge(crate::sso::router())
}

/// The job handlers of this build: each area registers its kinds here.
pub fn job_handlers(state: &AppState) -> Handlers {
    let mut h = Handlers::new();
    h.extend(crate::lti::job_handlers(state));
    h
}

/// Serve HTTP on `listener` and work jobs (the build's kinds and `handlers`) until `shutdown` is cancelled; then let in-flight
/// requests finish (up to `http.shutdown_grace_secs`) and give back job leases.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    handlers: Handlers,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_wrapped(state, listener, handlers, shutdown, |r| r).await
}

/// [`serve`] with the router passed through `wrap` first: the API tests add a layer that
/// checks every answer against the API's conventions.
pub async fn serve_wrapped(
    state: AppState,
    listener: TcpListener,
    handlers: Handlers,
    shutdown: CancellationToken,
    wrap: fn(Router) -> Router,
) -> anyhow::Result<()> {
    let runner = if state.config.jobs.enabled {
        // The build's own kinds, plus any the caller adds (tests).
        let mut all = job_handlers(&state);
        all.extend(handlers);
        let runner = Runner::new(state.db.clone(), all, state.config.jobs.clone());
        Some(tokio::spawn(runner.run(shutdown.clone())))
    } else {
        None
    };
    let dispatcher = if state.config.webhooks.delivery_enabled {
        let d = crate::webhooks::Dispatcher::new(state.clone());
        Some(tokio::spawn(d.run(shutdown.clone())))
    } else {
        None
    };
    let integrity = tokio::spawn(crate::statements::integrity::run(
        state.db.clone(),
        state.statement_integrity.clone(),
        Duration::from_secs(state.config.statements.integrity_check_secs),
        shutdown.clone(),
    ));
    let grace = Duration::from_secs(state.config.http.shutdown_grace_secs);
    let header_timeout = Duration::from_secs(state.config.http.header_read_timeout_secs);
    let http_enabled = state.config.http.enabled;
    let db = state.db.clone();
    let usage = state.usage.clone();
    if http_enabled {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "listening");
        let app = wrap(router(state));
        let token = shutdown.clone();
        let mut server = tokio::spawn(serve_http(listener, app, header_timeout, token));
        tokio::select! {
            done = &mut server => { done??; }
            _ = shutdown.cancelled() => {
                tracing::info!("shutting down: finishing in-flight requests");
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(done) => done??,
                    Err(_) => {
                        tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time");
                        server.abort();
                    }
                }
            }
        }
    } else {
        drop(listener);
        shutdown.cancelled().await;
    }
    if let Some(r) = runner {
        let _ = r.await;
    }
    if let Some(d) = dispatcher {
        let _ = d.await;
    }
    let _ = integrity.await;
    // Usage recorded by the last requests is committed before the store closes.
    usage.flush().await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `axum::serve` plus what it lacks: a header read timeout, so a client sending its headers
/// a byte at a time cannot hold a connection (and a task) open for ever. HTTP/1 as before;
/// on `stop`, accepting ends and open connections finish their requests, then close.
async fn serve_http(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let conn = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(app.clone()),
            )
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// As `axum::serve` does: a connection that failed before it was accepted is skipped; any
/// other error (too many open files) is logged and accepting pauses a second.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Cancel the token on SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown signal received");
        token.cancel();
    });
}
