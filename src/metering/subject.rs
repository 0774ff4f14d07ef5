//! Pseudonymous ledger subjects. The ledger is kept forever (statements are recomputed
//! from it), so it never holds a person's id: each event's `subject` is stored as a keyed
//! hash of it, `ps1_` and 24 characters of base64url (144 bits of HMAC-SHA256). The key
//! is the partner's own, derived from the master key, so:
//!
//! - equal ids of one partner give equal pseudonyms: UNIQUE_COUNT meters, and the
//!   statements priced from them, count exactly what they counted over raw ids;
//! - the same id at two partners gives two unrelated pseudonyms;
//! - without the master key no one can tell whose a pseudonym is, nor test a guess.
//!
//! Erasing a person relabels their rows with a random pseudonym of the same form
//! ([`Subjects::unlinked`]): the rows still count as one subject, and nothing, the master
//! key included, leads from the person to them any more.
//!
//! The hash is taken in one place, the ledger's insert (`store.rs`), so every way in (the
//! API, imports, webhooks, the gateway's own events) stores the same pseudonym.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::keys::crypto::MasterKey;

/// What every pseudonym starts with: the form of the hash, so a later form can be told
/// apart (and a pseudonym is never mistaken for an id a partner might send).
pub const PREFIX: &str = "ps1_";
/// Bytes of the HMAC kept: 144 bits, 24 base64url characters.
const KEPT: usize = 18;
/// The master key's label for the ledger's subject keys.
const LABEL: &str = "partner-gateway ledger subjects v1";

/// The keys that turn a partner's subject ids into ledger pseudonyms.
#[derive(Clone)]
pub struct Subjects {
    root: Hmac<Sha256>,
}

impl std::fmt::Debug for Subjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subjects([redacted])")
    }
}

impl Subjects {
    pub fn new(master: &MasterKey) -> Subjects {
        Self::from_root(&master.derive(LABEL))
    }

    fn from_root(root: &[u8; 32]) -> Subjects {
        Subjects {
            // HMAC takes a key of any length: this cannot fail.
            root: <Hmac<Sha256> as Mac>::new_from_slice(root)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
        }
    }

    /// The ledger's pseudonym of `subject` at `partner`.
    pub fn pseudonym(&self, partner: &str, subject: &str) -> String {
        let mut per_partner = self.root.clone();
        per_partner.update(partner.as_bytes());
        let key = per_partner.finalize().into_bytes();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(subject.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&digest[..KEPT]))
    }

    /// The ledger's pseudonym of a patient the EHR named (`smart.launch`'s `data.patient`):
    /// apart from any user with the same id.
    pub fn patient(&self, partner: &str, patient: &str) -> String {
        self.pseudonym(partner, &format!("patient {patient}"))
    }

    /// A random pseudonym of the same form: what an erased person's rows are relabelled
    /// with. It is no one's hash, so no id, and no key, leads to it.
    pub fn unlinked() -> String {
        let mut bytes = [0u8; KEPT];
        rand::rng().fill_bytes(&mut bytes);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Replace each event's subject by its pseudonym.
    pub fn apply(&self, events: &mut [super::UsageEvent]) {
        for e in events {
            if let Some(s) = &e.subject {
                e.subject = Some(self.pseudonym(&e.partner_id, s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(byte: u8) -> Subjects {
        Subjects::from_root(&[byte; 32])
    }

    #[test]
    fn equal_ids_of_a_partner_are_equal_pseudonyms_and_nothing_else_is() {
        let s = subjects(1);
        let a = s.pseudonym("acme", "student-7");
        assert_eq!(a, s.pseudonym("acme", "student-7"));
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 24, "{a}");
        assert!(!a.contains("student"));
        // Another id, another partner, another master key: each another pseudonym.
        assert_ne!(a, s.pseudonym("acme", "student-8"));
        assert_ne!(a, s.pseudonym("globex", "student-7"));
        assert_ne!(a, subjects(2).pseudonym("acme", "student-7"));
        // The partner and the id are not simply concatenated.
        assert_ne!(s.pseudonym("ac", "mestudent-7"), a);
    }

    #[test]
    fn unlinked_pseudonyms_look_alike_and_never_repeat() {
        let (a, b) = (Subjects::unlinked(), Subjects::unlinked());
        assert_ne!(a, b);
        assert_eq!(a.len(), subjects(1).pseudonym("p", "x").len());
        assert!(a.starts_with(PREFIX));
    }

    #[test]
    fn the_key_comes_from_the_master_key() {
        use base64::engine::general_purpose::STANDARD;
        let m1 = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let m2 = MasterKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert_eq!(
            Subjects::new(&m1).pseudonym("p", "u"),
            Subjects::new(&m1).pseudonym("p", "u")
        );
        assert_ne!(
            Subjects::new(&m1).pseudonym("p", "u"),
            Subjects::new(&m2).pseudonym("p", "u")
        );
        // Not the master key used directly.
        assert_ne!(m1.derive(LABEL), [7u8; 32]);
    }
}
