//! Privacy (PRIVACY.md): what the gateway keeps about people, for how long, and how it is
//! exported or erased.
//!
//! - The ledger never holds a person's id: `metering::subject` turns each subject into a
//!   keyed pseudonym at the ledger's insert.
//! - `purge.rs`: the retention purge (`privacy.retention`), a durable job per interval
//!   (`job.rs`: its handler).
//! - `person.rs`: one person's records found by partner and id or email; export and
//!   erasure, each in the audit log.
//! - `store.rs`: the SQL; `routes.rs`: the admin API.

pub mod job;
pub mod person;
pub mod purge;
pub mod routes;
pub mod store;
