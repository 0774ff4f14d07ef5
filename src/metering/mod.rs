//! The usage ledger. Events arrive as CloudEvents (HTTP ingest, `usage import`, or other
//! modules recording inside their own transaction), are attributed to one partner, and are
//! stored once per (partner, source, id) forever. Meters turn them into numbers per window.

pub mod authority;
pub mod event;
pub mod import;
pub mod ingest;
pub mod meter;
mod pg_group;
pub mod query;
pub mod recorder;
pub mod routes;
pub mod store;
pub mod subject;
pub mod window;

pub use event::UsageEvent;
pub use ingest::{Ingested, ingest_batch};
pub use meter::Meter;
pub use recorder::UsageRecorder;
pub use store::record_usage_event;

/// Most events accepted in one request or one import batch.
pub const MAX_BATCH: usize = 1000;
