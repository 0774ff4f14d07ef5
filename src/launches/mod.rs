//! The launch model shared by SMART, LTI and SSO: whoever arrives through a partner ends in
//! a launch (partner, kind, user, context, scopes, lifetime). The protocol areas create it;
//! the app receives a one-time code, and exchanges it at `POST /v1/launches/exchange` for
//! the launch's context (see [`Launch::view`]). Partner tokens stay in the gateway.

pub mod binding;
pub mod routes;
pub mod store;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

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
    pub fn view(&self) -> LaunchView {
        let mut context = self.context.clone();
        let fhir_user = match self.kind {
            LaunchKind::Smart => Some(context.remove("fhirUser").unwrap_or(Value::Null)),
            _ => {
                context.remove("fhirUser");
                None
            }
        };
        LaunchView {
            launch_id: self.id.clone(),
            partner: self.partner_id.clone(),
            kind: self.kind.as_str().to_owned(),
            user: LaunchUser {
                id: self.user_id.clone(),
                fhir_user,
                name: self.user_name.clone(),
            },
            scopes: self.scopes.clone(),
            created_at: crate::time::rfc3339(self.created_at),
            expires_at: crate::time::rfc3339(self.expires_at),
            sandbox: self.sandbox,
            context,
        }
    }
}

/// The launch context the app receives from `POST /v1/launches/exchange`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "launch_id": "lch_01HZX3", "partner": "epic-sandbox", "kind": "smart",
    "user": {"id": "Practitioner/e1", "fhirUser": "https://fhir.example/Practitioner/e1", "name": "Dr. Ada Lovelace"},
    "iss": "https://fhir.example/api/FHIR/R4", "patient": "erXuFYUfucBZaryVksYEcMg3",
    "encounter": "eGmO0h.1-kF7wSiwCb8oEoA3", "need_patient_banner": true,
    "scopes": ["launch", "openid", "fhirUser", "patient/Patient.read"],
    "created_at": "2026-11-02T14:03:11.000000Z", "expires_at": "2026-11-02T22:03:11.000000Z",
    "sandbox": false
}))]
pub struct LaunchView {
    /// Use it for calls on the launch's behalf (`/v1/launches/{launch_id}/...`).
    pub launch_id: String,
    pub partner: String,
    /// smart (EHR), lti (LMS) or sso (an organisation's identity provider).
    pub kind: String,
    pub user: LaunchUser,
    /// Granted scopes (SMART) or the services the platform offers (LTI).
    pub scopes: Vec<String>,
    pub created_at: String,
    /// After this, calls on the launch answer 410 and the user must launch again.
    pub expires_at: String,
    /// The partner is a sandbox partner: test data, never billed. Always present, so an app
    /// can branch on it without guessing from the partner id.
    pub sandbox: bool,
    /// The kind's context fields, named as the protocol names them: SMART `iss`, `patient`,
    /// `encounter`, `fhirContext`, `need_patient_banner`, `tenant`...; LTI `context`,
    /// `resource_link`, `roles`, `platform`, `deployment_id`, `ags`, `nrps`, `deep_linking`,
    /// `person` (one id for a learner across LTI 1.1 and 1.3, with every platform id)...;
    /// SSO `connection`, `email`, `groups`, `attributes`...
    #[serde(flatten)]
    pub context: Map<String, Value>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LaunchUser {
    /// The user as the partner names them; null when the partner did not say.
    pub id: Option<String>,
    /// SMART launches only: the FHIR resource URL of the user (null when not granted).
    #[serde(rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<Value>,
    pub name: Option<String>,
}

/// A new random one-time code (256 bits, URL-safe) and the hash the store keeps.
pub fn new_code() -> (String, String) {
    let code = crate::random::token(32);
    let hash = hash_code(&code);
    (code, hash)
}

pub fn hash_code(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}
