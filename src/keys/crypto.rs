//! Sealing private keys at rest: AES-256-GCM under the master key, a random 96-bit nonce
//! per seal, stored as `nonce || ciphertext+tag`. The key id is bound as associated data,
//! so a sealed key cannot be swapped onto another row.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::KeysConfig;

#[derive(Clone)]
pub struct MasterKey(Aes256Gcm, Hmac<Sha256>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn from_base64(text: &str) -> anyhow::Result<MasterKey> {
        let bytes = STANDARD
            .decode(text.trim())
            .context("the master key is not base64")?;
        anyhow::ensure!(
            bytes.len() == 32,
            "the master key must be 32 bytes (base64 of 32 random bytes), not {} bytes; make one with `openssl rand -base64 32`",
            bytes.len()
        );
        Ok(MasterKey(
            Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| anyhow::anyhow!("bad master key length"))?,
            <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
                .map_err(|_| anyhow::anyhow!("bad master key length"))?,
        ))
    }

    /// The configured key: `keys.master_key` if set, else the file `keys.master_key_file`,
    /// created with 32 random bytes (mode 0600) when it does not exist yet.
    pub fn load(cfg: &KeysConfig) -> anyhow::Result<MasterKey> {
        if let Some(secret) = &cfg.master_key {
            return Self::from_base64(secret.expose()).context("keys.master_key");
        }
        let path = &cfg.master_key_file;
        if !path.exists() {
            create_key_file(path)?;
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read keys.master_key_file {}", path.display()))?;
        Self::from_base64(&text).with_context(|| format!("keys.master_key_file {}", path.display()))
    }

    /// What `serve` would say of the configured key, without creating a missing key file
    /// (`check-config`). `Ok(Some(note))` when the file will be created on first start.
    pub fn check(cfg: &KeysConfig) -> anyhow::Result<Option<String>> {
        if cfg.master_key.is_some() || cfg.master_key_file.exists() {
            return Self::load(cfg).map(|_| None);
        }
        Ok(Some(format!(
            "keys.master_key_file {} does not exist yet: serve creates it on first start (back it up)",
            cfg.master_key_file.display()
        )))
    }

    /// A key of its own for one purpose, named by `label` (HMAC-SHA256 of the label under
    /// the master key: one block of HKDF-Expand), so no purpose ever uses the master key
    /// itself and learning one derived key tells nothing of the others.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = self.1.clone();
        mac.update(label.as_bytes());
        mac.update(&[1]);
        mac.finalize().into_bytes().into()
    }

    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing the private key failed"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    pub fn open(&self, kid: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(sealed.len() > 12, "sealed key {kid} is truncated");
        let (nonce, body) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| anyhow::anyhow!("sealed key {kid} is truncated"))?;
        self.0
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt signing key {kid}: wrong master key, or the row was altered"
                )
            })
    }
}

fn create_key_file(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create keys.master_key_file {}", path.display()))?;
    std::io::Write::write_all(
        &mut file,
        format!("{}\n", STANDARD.encode(bytes)).as_bytes(),
    )?;
    tracing::warn!(path = %path.display(), "created a new master key file; back it up: the signing keys cannot be read without it");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn sealed_keys_open_only_under_their_kid_and_master_key() {
        let sealed = key().seal("kid-1", b"private").unwrap();
        assert_eq!(key().open("kid-1", &sealed).unwrap(), b"private");
        assert!(key().open("kid-2", &sealed).is_err());
        let other = MasterKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open("kid-1", &sealed).is_err());
        assert!(!sealed.windows(7).any(|w| w == b"private"));
    }

    #[test]
    fn short_master_keys_are_refused() {
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }
}
