//! The launch model shared by SMART, LTI and SSO: whoever arrives through a partner ends in
//! a launch (partner, kind, user, context, scopes, lifetime). The protocol areas create it;
//! the app receives a one-time code, and exchanges it at `POST /v1/launches/exchange` for
//! the launch's context (see [`Launch::view`]). Partner tokens stay in the gateway.

pub mod routes;
pub mod store;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub use routes::router;
pub use store::{
    RedeemError, StateProblem, create_handoff, find_launch, insert_launch, redeem_handoff,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchKind {
    Smart,
    Lti,
    Sso,
}

impl LaunchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchKind::Smart => "smart",
            LaunchKind::Lti => "lti",
            LaunchKind::Sso => "sso",
        }
    }

    pub fn parse(s: &str) -> Option<LaunchKind> {
        match s {
            "smart" => Some(LaunchKind::Smart),
            "lti" => Some(LaunchKind::Lti),
            "sso" => Some(LaunchKind::Sso),
            _ => None,
        }
    }
}

/// A completed launch.
#[derive(Debug, Clone)]
pub struct Launch {
    pub id: String,
    pub partner_id: String,
    pub kind: LaunchKind,
    /// The user as the partner names them: SMART `fhirUser` (or the id_token `sub`), LTI
    /// `sub`, SSO subject. None when the partner did not say who it is.
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    /// Kind-specific context: for SMART `iss`, `patient`, `encounter`, `fhirContext`,
    /// `need_patient_banner`, `smart_style_url`, `intent`, `tenant`, `extra`.
    pub context: Map<String, Value>,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The partner is a sandbox partner (read from its row, not stored with the launch).
    pub sandbox: bool,
}

impl Launch {
    /// A value of the context by JSON pointer, e.g. `/resource_link/id`.
    pub fn ctx(&self, pointer: &str) -> Option<&Value> {
        let mut parts = pointer.trim_start_matches('/').splitn(2, '/');
        let first = self.context.get(parts.next()?)?;
        match parts.next() {
            Some(rest) => first.pointer(&format!("/{rest}")),
            None => Some(first),
        }
    }

    /// Whether the launch may still be used at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    /// What the app receives: the common fields every kind has, then the kind's context
    /// fields at the top level (names as the protocol spells them, e.g. `fhirContext`).
    pub fn view(&self) -> Value {
        let mut out = Map::new();
        out.insert("launch_id".into(), json!(self.id));
        out.insert("partner".into(), json!(self.partner_id));
        out.insert("kind".into(), json!(self.kind.as_str()));
        let mut user = Map::new();
        user.insert("id".into(), json!(self.user_id));
        if self.kind == LaunchKind::Smart {
            user.insert(
                "fhirUser".into(),
                self.context.get("fhirUser").cloned().unwrap_or(Value::Null),
            );
        }
        user.insert("name".into(), json!(self.user_name));
        out.insert("user".into(), Value::Object(user));
        for (k, v) in &self.context {
            if k != "fhirUser" {
                out.insert(k.clone(), v.clone());
            }
        }
        out.insert("scopes".into(), json!(self.scopes));
        out.insert("created_at".into(), json!(self.created_at.to_rfc3339()));
        out.insert("expires_at".into(), json!(self.expires_at.to_rfc3339()));
        // Always present, so an app can branch on it without guessing from the partner id.
        out.insert("sandbox".into(), json!(self.sandbox));
        Value::Object(out)
    }
}

/// A new random one-time code (256 bits, URL-safe) and the hash the store keeps.
pub fn new_code() -> (String, String) {
    let code = crate::smart::flow::random_token(32);
    let hash = hash_code(&code);
    (code, hash)
}

pub fn hash_code(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}
