//! A webhook receiver on loopback, for tests, benchmarks and trying endpoints out: it
//! records every request (headers, exact body, arrival time) and answers from a script
//! (200 by default; a status, a `Retry-After`, a delay, a redirect), the way real receivers
//! fail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How to answer the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After` (seconds or an HTTP date).
    RetryAfter(u16, String),
    /// Wait, then 200 (longer than the sender's timeout, it is a timeout).
    Delay(Duration),
    /// 302 to this URL.
    Redirect(String),
    /// A status with a body.
    Body(u16, String),
}

#[derive(Default)]
struct Inner {
    received: Vec<Request>,
    script: VecDeque<Reply>,
    /// Answer when the script is empty.
    default: Option<Reply>,
}

/// A running receiver. Cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Listen on 127.0.0.1 and a free port.
    pub async fn start() -> std::io::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener)
    }

    /// Serve on `listener` (a fixed address, e.g. for a restart).
    pub fn serve(listener: TcpListener) -> std::io::Result<Receiver> {
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { addr, inner })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answer the next requests with these, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Answer with this whenever the script is empty (200 when unset).
    pub fn set_default(&self, reply: Option<Reply>) {
        self.lock().default = reply;
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Request> {
        self.lock().received.clone()
    }

    pub fn count(&self) -> usize {
        self.lock().received.len()
    }

    /// Wait until at least `n` requests arrived, or `timeout`; returns the count.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.count();
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        g.received.push(Request {
            path: uri.path().to_owned(),
            headers,
            body,
            at: Instant::now(),
        });
        g.script.pop_front().or_else(|| g.default.clone())
    };
    let status = |c: u16| StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply {
        None => StatusCode::OK.into_response(),
        Some(Reply::Status(c)) => status(c).into_response(),
        Some(Reply::RetryAfter(c, v)) => (status(c), [("retry-after", v)]).into_response(),
        Some(Reply::Delay(d)) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        Some(Reply::Redirect(to)) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Some(Reply::Body(c, b)) => (status(c), b).into_response(),
    }
}
