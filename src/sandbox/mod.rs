//! Sandboxes partners and tests run against instead of a real partner system.
pub mod ehr;
pub mod idp;
pub mod lms;
pub mod receiver;
pub mod saml_idp;
