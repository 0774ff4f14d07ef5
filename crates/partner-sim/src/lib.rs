//! The partner systems partner-gateway integrates with, simulated on loopback for its
//! tests, benches and `sandbox` command: an EHR (SMART on FHIR, with Epic's and Oracle
//! Health's quirks), an LMS (LTI 1.3 Advantage and LTI 1.1, with Canvas's, Moodle's,
//! Blackboard's, D2L's and TalentLMS's), an OIDC IdP, a SAML IdP and a webhook receiver.
//!
//! Each simulator is built to the specifications and the vendors' documentation, and can be
//! told to fail as the real systems do (outages, slow answers, refusals with the reason in
//! the status line, answers lost after the write). None depends on the gateway: they meet
//! it only over HTTP, as the real systems do.

pub mod ehr;
pub mod idp;
pub mod lms;
pub mod receiver;
pub mod saml_idp;
mod util;

#[cfg(test)]
mod testkeys;
