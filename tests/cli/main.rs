//! Black-box tests of the `partner-gateway` binary: every test runs the compiled program
//! with a temp config dir and a database of its own, SQLite or PostgreSQL.
//!
//! PostgreSQL variants run when `TEST_DATABASE_URL` is set (each test gets a fresh schema):
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test --test cli
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod api_keys;
mod check_config;
mod console;
mod crash;
mod db_backup;
mod db_roles;
mod errors;
mod grade_crash;
mod hygiene;
mod import;
mod keys;
mod lti;
mod migrate;
mod multi_instance;
mod privacy;
mod shutdown;
mod statements;
mod webhook_crash;
