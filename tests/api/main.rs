//! Behaviour tests of the running gateway over real HTTP, each on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod auth;
mod db_tx;
mod health;
mod jobs;
mod keys;
mod lti;
mod lti_env;
mod openapi;
mod pages_security;
mod partners;
mod sandbox;
mod smart;
mod smart_env;
mod sso;
mod sso_saml;
mod statements;
mod usage_ingest;
mod usage_query;
mod webhooks;
