//! The gateway's own signing keys (RS256 for LTI, RS384 and ES384 for SMART), published at
//! `GET /.well-known/jwks.json`, used to sign the JWTs the gateway presents to partners
//! (`private_key_jwt` client assertions in SMART and LTI). Private keys are stored encrypted
//! with AES-256-GCM under a master key (`keys.master_key`, or the file `keys.master_key_file`).
//!
//! Rotation (`partner-gateway keys rotate`) adds a new key per algorithm and sets the old
//! ones to retire after `keys.rotation_overlap_hours`: they stay published until then, so a
//! partner that cached the JWKS still verifies tokens signed just before the rotation.

pub mod crypto;
pub mod routes;
pub mod store;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

pub use store::{
    SigningKey, ensure_signing_keys, published_keys, rotate_signing_keys, signing_key,
};

/// The algorithms the gateway signs with: SMART asks clients to support RS384 and ES384;
/// LTI 1.3 (IMS Security Framework) uses RS256. Each has its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Es384,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::Rs256, Alg::Rs384, Alg::Es384];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Es384 => "ES384",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "RS256" => Some(Alg::Rs256),
            "RS384" => Some(Alg::Rs384),
            "ES384" => Some(Alg::Es384),
            _ => None,
        }
    }

    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::Rs256 => jsonwebtoken::Algorithm::RS256,
            Alg::Rs384 => jsonwebtoken::Algorithm::RS384,
            Alg::Es384 => jsonwebtoken::Algorithm::ES384,
        }
    }
}

/// A freshly generated key: the private key as the DER the JWT signer takes (PKCS#1 for
/// RSA, PKCS#8 for EC) and the public JWK.
pub struct GeneratedKey {
    pub kid: String,
    pub alg: Alg,
    pub private_der: Vec<u8>,
    pub public_jwk: Value,
}

pub fn generate_key(alg: Alg) -> anyhow::Result<GeneratedKey> {
    let kid = uuid::Uuid::new_v4().simple().to_string();
    let mut rng = rand_core::OsRng;
    let (private_der, mut jwk) = match alg {
        Alg::Rs256 | Alg::Rs384 => {
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048)?;
            let der = key.to_pkcs1_der()?.as_bytes().to_vec();
            let public = key.to_public_key();
            let jwk = json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            });
            (der, jwk)
        }
        Alg::Es384 => {
            use p384::pkcs8::EncodePrivateKey;
            let secret = p384::SecretKey::random(&mut rng);
            let der = secret.to_pkcs8_der()?.as_bytes().to_vec();
            let jwk: Value = serde_json::from_str(&secret.public_key().to_jwk_string())?;
            (der, jwk)
        }
    };
    if let Value::Object(m) = &mut jwk {
        m.insert("kid".into(), json!(kid));
        m.insert("alg".into(), json!(alg.as_str()));
        m.insert("use".into(), json!("sig"));
    }
    Ok(GeneratedKey {
        kid,
        alg,
        private_der,
        public_jwk: jwk,
    })
}

/// Sign `claims` as a JWT with `kid` in the header.
pub fn sign_jwt(key: &SigningKey, claims: &Value) -> anyhow::Result<String> {
    let mut header = jsonwebtoken::Header::new(key.alg.jwt());
    header.kid = Some(key.kid.clone());
    let encoding = match key.alg {
        Alg::Rs256 | Alg::Rs384 => jsonwebtoken::EncodingKey::from_rsa_der(&key.private_der),
        Alg::Es384 => jsonwebtoken::EncodingKey::from_ec_der(&key.private_der),
    };
    Ok(jsonwebtoken::encode(&header, claims, &encoding)?)
}
