//! The gateway on loopback, prepared and served as `serve` does it, with the bench's own
//! config layer; and the runtimes of the benches that keep it apart from their clients.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use partner_gateway::apikeys::{self, Role};
use partner_gateway::app;
use partner_gateway::config::{Config, Layer};
use partner_gateway::jobs::Handlers;
use partner_gateway::state::AppState;
use tokio::runtime::{Handle, Runtime};
use tokio_util::sync::CancellationToken;

/// `config/partners.toml` as in the repository.
pub fn partners_layer() -> Layer {
    Layer {
        origin: "config/partners.toml".into(),
        text: include_str!("../../config/partners.toml").into(),
    }
}

/// `config/meters.toml` as in the repository.
pub fn meters_layer() -> Layer {
    Layer {
        origin: "config/meters.toml".into(),
        text: include_str!("../../config/meters.toml").into(),
    }
}

/// The bench's own layer.
pub fn bench_layer(text: String) -> Layer {
    Layer {
        origin: "bench.toml".into(),
        text,
    }
}

/// The start of a bench's own layer: the store, the master key in `dir`, and outbound calls
/// allowed to plain HTTP on loopback (where the mock partners listen).
pub fn base_toml(db_url: &str, dir: &Path) -> String {
    format!(
        "[database]\nurl = \"{db_url}\"\n[keys]\nmaster_key_file = \"{}/master.key\"\n\
         [outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n",
        dir.display()
    )
}

/// The config of `layers` (no environment), and the gateway's state prepared from it.
pub async fn prepare(layers: Vec<Layer>) -> anyhow::Result<AppState> {
    let config = Config::from_layers(layers, Vec::new())
        .map_err(|e| anyhow::anyhow!("bench configuration: {e}"))?;
    AppState::prepare(config, true)
        .await
        .context("preparing the gateway (connect, migrate, sync partners, keys)")
}

/// A listener on a free port of 127.0.0.1 for the gateway, and the gateway's URL.
pub async fn bind() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the gateway's listener on 127.0.0.1")?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

/// A new API key of `role` (named "bench").
pub async fn api_key(state: &AppState, role: Role) -> anyhow::Result<String> {
    let (_, key) = apikeys::create_api_key(&state.db, role, None, Some("bench"))
        .await
        .with_context(|| format!("creating the {} API key", role.as_str()))?;
    Ok(key)
}

/// The gateway serving `listener` in a task of the current runtime, until `stop`.
pub struct Serving {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Serving {
    pub fn spawn(state: &AppState, listener: tokio::net::TcpListener) -> Serving {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app::serve(
            state.clone(),
            listener,
            Handlers::new(),
            shutdown.clone(),
        ));
        Serving { shutdown, task }
    }

    /// Shut the gateway down and wait for it (40 s at most); a warning when it did not stop
    /// cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(40), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: the gateway stopped with an error: {e:#}"),
            Ok(Err(e)) => eprintln!("warning: the gateway task failed: {e}"),
            Err(_) => eprintln!("warning: the gateway did not stop within 40 s"),
        }
    }
}

/// Wait until the gateway at `gateway` answers `/healthz` (5 s at most), so that nothing
/// timed waits for it.
pub async fn wait_healthy(client: &reqwest::Client, gateway: &str) -> anyhow::Result<()> {
    let health = format!("{gateway}/healthz");
    let mut last = String::new();
    for _ in 0..50 {
        match client.get(&health).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the gateway did not answer /healthz: {last}")
}

/// Two runtimes of 2 workers each: the server's (the gateway, its pool, the mock partners)
/// and the client's (the bench's own requests).
pub fn runtimes() -> anyhow::Result<(Runtime, Runtime)> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .context("building the server runtime")?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("building the client runtime")?;
    Ok((server, client))
}

/// Run `f` on the server runtime (where the gateway, its pool and the mock partners live).
pub async fn on_server<F>(h: &Handle, f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    h.spawn(f)
        .await
        .expect("a task on the server runtime panicked")
}

/// The environment back from the `Arc` its workers shared, to stop it; None (and a warning)
/// when something still holds it.
pub fn unshared<T>(env: std::sync::Arc<T>) -> Option<T> {
    match std::sync::Arc::try_unwrap(env) {
        Ok(env) => Some(env),
        Err(_) => {
            eprintln!("warning: the environment is still shared; not stopped cleanly");
            None
        }
    }
}
