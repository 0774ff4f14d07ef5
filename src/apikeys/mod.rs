//! API keys: `Authorization: Bearer <key>`. Only a SHA-256 hash of each key is stored; keys
//! carry 192 random bits, so a fast hash is enough (no password stretching needed).

pub mod cache;
pub mod store;

use rand::RngCore;
use sha2::{Digest, Sha256};

pub use cache::KeyCache;
pub use store::{
    ApiKey, create_api_key, create_api_key_by, find_api_key, list_api_keys, revoke_api_key,
    revoke_api_key_by,
};

/// Every key starts with this, so leaked keys are easy to find by secret scanners.
pub const KEY_PREFIX: &str = "pgw_";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Operates the gateway: everything.
    Admin,
    /// Reads usage and statements for every partner.
    Finance,
    /// A partner's own integration: scoped to that partner.
    Partner,
    /// The company's own product back end.
    App,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Finance => "finance",
            Role::Partner => "partner",
            Role::App => "app",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "finance" => Some(Role::Finance),
            "partner" => Some(Role::Partner),
            "app" => Some(Role::App),
            _ => None,
        }
    }
}

/// A fresh key and what the store keeps of it.
pub struct GeneratedKey {
    pub secret: String,
    pub hash: String,
    /// The first characters, shown in listings so a key can be recognised without the secret.
    pub prefix: String,
}

pub fn generate_key() -> GeneratedKey {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    GeneratedKey {
        hash: hash_key(&secret),
        prefix: secret[..KEY_PREFIX.len() + 8].to_owned(),
        secret,
    }
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_and_hash_consistently() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash_key(&a.secret));
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(a.secret.len(), KEY_PREFIX.len() + 48);
    }
}
