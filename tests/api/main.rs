//! Behaviour tests of the running gateway over real HTTP, each on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod answer_check;
mod helpers;

mod auth;
mod conventions;
mod db_tx;
mod health;
mod idempotency;
mod input_caps;
mod jobs;
mod keys;
mod ledger_authority;
mod lti;
mod lti_dynreg;
mod lti_env;
mod lti_grades;
mod metrics;
mod openapi;
mod pages_security;
mod partners;
mod role_matrix;
mod sandbox;
mod smart;
mod smart_env;
mod smart_refresh;
mod smart_usage;
mod sso;
mod sso_saml;
mod ssrf;
mod statements;
mod statements_corrections;
mod statements_sealed;
mod usage_ingest;
mod usage_query;
mod webhooks;
