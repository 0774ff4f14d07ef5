//! Unguessable values: OAuth `state`, nonces, PKCE verifiers, handoff codes, browser-binding
//! secrets. One generator so every flow gets the same strength.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// `bytes` random bytes from the OS-seeded generator, base64url without padding.
pub fn token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_base64url_of_the_asked_length_and_differ() {
        let s = super::token(32);
        assert_eq!(s.len(), 43);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(s, super::token(32));
    }
}
