//! LTI 1.3 Advantage tool (and LTI 1.1 for legacy LMSs): OIDC login initiation with the
//! state bound to the browser, launch validation, the handoff through `launches`, Deep
//! Linking, and the grade and roster services.

pub mod ags;
pub mod claims;
pub mod deep_linking;
pub mod dynreg;
pub mod launch;
pub mod login;
pub mod lti11;
pub mod migration;
pub mod people;
pub mod platforms;
pub mod registration;
pub mod roles;
pub mod routes;
pub mod store;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Per-instance LTI caches (platform tokens); everything shared lives in the store.
#[derive(Clone, Default)]
pub struct LtiState {
    pub(crate) tokens: Arc<tokio::sync::Mutex<HashMap<String, (String, Instant)>>>,
}
