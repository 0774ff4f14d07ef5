//! Sandboxes partners and tests run against instead of a real partner system, and the
//! `sandbox` command that runs them beside the gateway (`run.rs`, its pages in `pages.rs`).
pub mod ehr;
pub mod idp;
pub mod lms;
pub mod pages;
pub mod receiver;
pub mod run;
pub mod saml_idp;
