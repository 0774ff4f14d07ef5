//! SMART on FHIR App Launch 2.2 client: registration (config), discovery, EHR and
//! standalone launch with PKCE, the callback and code exchange with the three client
//! authentications, id_token verification, sealed token storage, the handoff to the app
//! (through `launches`), the FHIR proxy with refresh, a typed patient summary, and
//! Backend Services.

pub mod backend;
pub mod discovery;
pub mod flow;
pub mod idtoken;
pub mod launch;
pub mod patient;
pub mod proxy;
pub mod refresh;
pub mod registration;
pub mod routes;
pub mod store;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::launches::Launch;
use crate::outbound::Outbound;
use store::Session;

/// Per-instance SMART state: caches only (everything that must survive or be shared
/// between instances is in the store).
#[derive(Clone)]
pub struct SmartState {
    pub discovery: discovery::Discovery,
    sessions: Arc<Mutex<HashMap<String, CachedSession>>>,
    pub(crate) backend_tokens: Arc<tokio::sync::Mutex<HashMap<String, (String, Instant)>>>,
    /// Launches whose early refresh this instance will not try before the time (µs): it
    /// failed, or another instance holds the lease or its back-off (`refresh` module). The
    /// store holds the same back-off for every instance; this spares the store a write per
    /// call while it lasts.
    early_backoff: Arc<Mutex<HashMap<String, i64>>>,
}

struct CachedSession {
    at: Instant,
    launch: Arc<Launch>,
    session: Arc<Session>,
}

/// Sessions kept in memory at most; beyond it the oldest are dropped.
const MAX_CACHED_SESSIONS: usize = 10_000;

impl SmartState {
    pub fn new(outbound: Outbound, discovery_ttl: Duration) -> SmartState {
        SmartState {
            discovery: discovery::Discovery::new(outbound, discovery_ttl),
            sessions: Arc::default(),
            backend_tokens: Arc::default(),
            early_backoff: Arc::default(),
        }
    }

    fn cached(&self, launch_id: &str, max_age: Duration) -> Option<(Arc<Launch>, Arc<Session>)> {
        let guard = self.sessions.lock().ok()?;
        guard
            .get(launch_id)
            .filter(|c| c.at.elapsed() < max_age)
            .map(|c| (c.launch.clone(), c.session.clone()))
    }

    fn remember(&self, launch: Arc<Launch>, session: Arc<Session>) {
        if let Ok(mut guard) = self.sessions.lock() {
            if guard.len() >= MAX_CACHED_SESSIONS {
                let mut ages: Vec<(Instant, String)> =
                    guard.iter().map(|(k, v)| (v.at, k.clone())).collect();
                ages.sort();
                for (_, k) in ages.into_iter().take(MAX_CACHED_SESSIONS / 10) {
                    guard.remove(&k);
                }
            }
            guard.insert(
                launch.id.clone(),
                CachedSession {
                    at: Instant::now(),
                    launch,
                    session,
                },
            );
        }
    }

    /// Whether an early refresh of `launch_id` waits until later.
    fn early_refresh_waits(&self, launch_id: &str, now_us: i64) -> bool {
        self.early_backoff
            .lock()
            .is_ok_and(|g| g.get(launch_id).is_some_and(|until| *until > now_us))
    }

    /// No early refresh of `launch_id` on this instance before `until_us`.
    fn delay_early_refresh(&self, launch_id: &str, until_us: i64, now_us: i64) {
        if let Ok(mut guard) = self.early_backoff.lock() {
            if guard.len() >= MAX_CACHED_SESSIONS {
                guard.retain(|_, until| *until > now_us);
            }
            guard.insert(launch_id.to_owned(), until_us);
        }
    }

    /// A newer session (after a refresh) replaces the cached one.
    fn update_session(&self, session: Arc<Session>) {
        if let Ok(mut guard) = self.early_backoff.lock() {
            guard.remove(&session.launch_id);
        }
        if let Ok(mut guard) = self.sessions.lock()
            && let Some(c) = guard.get_mut(&session.launch_id)
            && c.session.version < session.version
        {
            c.session = session;
        }
    }
}
