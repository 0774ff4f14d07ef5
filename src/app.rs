//! Assembly: the router of every area's routes, the job runner and the webhook dispatcher
//! over one [`AppState`] (built in `state.rs`), run until a shutdown signal.

use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::jobs::{Handlers, Runner};
use crate::state::AppState;

/// Every route of the gateway, with its middleware.
pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request so no early count is lost.
    crate::telemetry::prometheus();
    crate::telemetry::metrics::register(&state.config, &state.db);
    let (api, doc) = api_routes().split_for_parts();
    let mut routes = api
        .merge(crate::http::health::router())
        .merge(crate::http::openapi::router(crate::http::openapi::finish(
            doc,
        )));
    if state.config.console.enabled {
        routes = routes.merge(crate::console::router());
    }
    crate::http::middleware::with_middleware(routes, state)
}

/// Every area's routes: the `/v1` API with its OpenAPI description, and the browser and
/// protocol endpoints (launch, callback, JWKS, ACS...) that are not part of it.
pub fn api_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::with_openapi(crate::http::openapi::base())
        .merge(crate::partners::routes::router())
        .merge(crate::keys::routes::router())
        .merge(crate::metering::routes::router())
        .merge(crate::jobs::routes::router())
        .merge(crate::launches::routes::router())
        .merge(crate::smart::routes::router())
        .merge(crate::lti::routes::router())
        .merge(crate::statements::routes::router())
        .merge(crate::webhooks::routes::router())
        .merge(crate::sso::routes::router())
        .merge(crate::privacy::routes::router())
}

/// The job handlers of this build: each area registers its kinds here.
pub fn job_handlers(state: &AppState) -> Handlers {
    let mut h = Handlers::new();
    h.extend(crate::lti::ags::job_handlers(state));
    h.extend(crate::privacy::job::job_handlers(state));
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
        let d = crate::webhooks::dispatch::Dispatcher::new(state.clone());
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
    // Every instance schedules the retention purge; the job's dedupe key makes one run per
    // interval, on whichever instance's runner claims it.
    let purge = tokio::spawn(crate::privacy::purge::schedule(
        state.db.clone(),
        state.config.privacy.clone(),
        state.config.jobs.max_attempts,
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
    let _ = purge.await;
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
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // The peer's address, for the console's audit log ("from where").
        let svc = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        );
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
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

/// The next connection, with `TCP_NODELAY` set. Without it a response written in pieces
/// (a streamed FHIR body: a chunk, then the closing chunk) waits for the client's delayed
/// ACK, ~40 ms, before its last piece goes out.
async fn accept(
    listener: &TcpListener,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    let (stream, peer) = listener.accept().await?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY failed");
    }
    Ok((stream, peer))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // The chunked-answer stall (issue 25): every connection the gateway serves has
    // TCP_NODELAY, so the last piece of a streamed answer is not held for the client's ACK.
    #[tokio::test]
    async fn accepted_connections_have_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (served, _) = accept(&listener).await.unwrap();
        assert!(
            served.nodelay().unwrap(),
            "TCP_NODELAY is off on an accepted connection"
        );
        drop(client.await.unwrap().unwrap());
    }
}
