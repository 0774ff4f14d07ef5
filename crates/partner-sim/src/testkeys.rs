//! Keys for the simulators' own tests: a tool's or an app's signing key as the gateway
//! would hold it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs384,
    Es384,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs384 => "RS384",
            Alg::Es384 => "ES384",
        }
    }

    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::Rs384 => jsonwebtoken::Algorithm::RS384,
            Alg::Es384 => jsonwebtoken::Algorithm::ES384,
        }
    }
}

pub struct GeneratedKey {
    pub kid: String,
    pub alg: Alg,
    /// PKCS#1 (RSA) or PKCS#8 (EC) DER.
    pub private_der: Vec<u8>,
    pub public_jwk: Value,
}

pub fn generate_key(alg: Alg) -> anyhow::Result<GeneratedKey> {
    let kid = uuid::Uuid::new_v4().simple().to_string();
    let mut rng = rand_core::OsRng;
    let (private_der, mut jwk) = match alg {
        Alg::Rs384 => {
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
