//! An in-memory cache of live API keys, so a request does not read the store to know who
//! is calling. Revocation stays prompt and works across instances and the CLI: a cached key
//! is used only while this instance has checked the store's revocation watermark within the
//! last `api_keys.cache_ms`; when the watermark moved (any key revoked anywhere), every
//! cached key is dropped. So a revoked key stops working everywhere within `cache_ms`.
//! `cache_ms = 0` turns the cache off (a store read per request, revocation immediate).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ApiKey, hash_key, store};
use crate::db::Db;

/// More live keys than any deployment holds; reaching it clears the map (memory stays bounded
/// whatever callers send, since only keys found live in the store are ever added).
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone)]
pub struct KeyCache {
    lag: Duration,
    inner: Arc<Mutex<Inner>>,
    /// One watermark check at a time; the others wait for its answer.
    checking: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, Arc<ApiKey>>,
    /// Bumped on every clear, so a store read that began before a clear is not cached.
    generation: u64,
    watermark: Option<(i64, i64)>,
    /// When the last successful watermark check *began*.
    checked_at: Option<Instant>,
}

impl KeyCache {
    pub fn new(lag: Duration) -> Self {
        KeyCache {
            lag,
            inner: Arc::default(),
            checking: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map inconsistent (plain inserts
        // and clears), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self, inner: &Inner) -> bool {
        inner.checked_at.is_some_and(|t| t.elapsed() < self.lag)
    }

    /// The live key with this secret: from memory while the revocation check is fresh,
    /// otherwise from the store.
    pub async fn find(&self, db: &Db, secret: &str) -> anyhow::Result<Option<Arc<ApiKey>>> {
        if self.lag.is_zero() {
            return Ok(store::find_api_key(db, secret).await?.map(Arc::new));
        }
        let hash = hash_key(secret);
        {
            let inner = self.lock();
            if self.fresh(&inner)
                && let Some(k) = inner.keys.get(&hash)
            {
                return Ok(Some(k.clone()));
            }
        }
        self.revalidate(db).await?;
        let generation = self.lock().generation;
        let found = store::find_api_key_by_hash(db, &hash).await?.map(Arc::new);
        if let Some(key) = &found {
            let mut inner = self.lock();
            if inner.generation == generation {
                if inner.keys.len() >= MAX_ENTRIES {
                    inner.keys.clear();
                }
                inner.keys.insert(hash, key.clone());
            }
        }
        Ok(found)
    }

    /// Check the revocation watermark unless a check began within the lag; drop every
    /// cached key when it moved.
    async fn revalidate(&self, db: &Db) -> anyhow::Result<()> {
        let _turn = self.checking.lock().await;
        if self.fresh(&self.lock()) {
            return Ok(());
        }
        let began = Instant::now();
        let watermark = store::revocation_watermark(db).await?;
        let mut inner = self.lock();
        if inner.watermark != Some(watermark) {
            inner.keys.clear();
            inner.generation += 1;
            inner.watermark = Some(watermark);
        }
        inner.checked_at = Some(began);
        Ok(())
    }
}
