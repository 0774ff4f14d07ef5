//! LTI 1.3 Advantage tool (and LTI 1.1 for legacy LMSs): OIDC login initiation with the
//! state bound to the browser, launch validation, the handoff through `launches`, Deep
//! Linking, and the grade and roster services.

pub mod claims;
pub mod deep_linking;
pub mod launch;
pub mod login;
pub mod platforms;
pub mod registration;
pub mod roles;
pub mod routes;
pub mod store;

pub use routes::router;
