//! Revenue-share statements: agreements from config, the pure calculation from what the
//! ledger holds, and statements with a lifecycle (draft, finalized, void) in the store.

pub mod agreement;
pub mod calc;
pub mod events;
pub mod export;
pub mod integrity;
pub mod locale;
pub mod model;
pub mod money;
pub mod parties;
pub mod pdf;
pub mod period;
pub mod routes;
pub mod service;
pub mod settle;
pub mod store;
