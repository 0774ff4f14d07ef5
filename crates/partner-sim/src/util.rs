//! Small pieces every simulator uses.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Lock a mutex, carrying on past poisoning: every critical section leaves the state
/// consistent, so a panic elsewhere must not take the whole simulator down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `bytes` random bytes, base64url: codes, tokens, hints, nonces.
pub(crate) fn random_token_of(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// 256 random bits, base64url.
pub(crate) fn random_token() -> String {
    random_token_of(32)
}

/// The S256 challenge of a PKCE verifier (RFC 7636 §4.2).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Parse an `application/x-www-form-urlencoded` string, keeping repeats (RFC 6749 §3.1
/// forbids repeating a parameter, and the handlers refuse them).
pub(crate) fn parse_form(input: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(input)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A listener on `127.0.0.1` and a free port, for the simulator `what` names (in the error).
pub(crate) async fn bind_loopback(what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .with_context(|| format!("cannot bind the {what} to 127.0.0.1"))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// A simulator's server: it serves until this is dropped.
pub(crate) struct Served(JoinHandle<()>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serve `app` on `listener` until the returned [`Served`] is dropped; an error that ends
/// the server is logged naming `what`. Accepted connections get `TCP_NODELAY`, as the web
/// servers in front of real EHRs and LMSs set it (nginx's `tcp_nodelay on` default).
pub(crate) fn serve(listener: TcpListener, app: axum::Router, what: &'static str) -> Served {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    Served(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "{what} stopped");
        }
    }))
}
