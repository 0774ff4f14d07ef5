//! Partners: declared in config (reviewable, versioned), synced into the store at start so
//! that keys and ledger rows can refer to them.

pub mod routes;
pub mod store;

pub use store::{Partner, list_partners, sync_partners};
