//! Binding a sign-in to the browser that started it, shared by SMART, LTI and SSO: the
//! start sets a cookie holding a random secret and stores the secret's SHA-256 with the
//! state; the answer (callback, launch, ACS) spends the state only when it comes with the
//! secret. Without it an attacker could stop their own sign-in at the callback and send
//! the link to a victim, whose browser would then finish it (login CSRF).

use axum::http::{HeaderMap, HeaderValue, header};

/// A new binding secret (256 bits, URL-safe: 43 characters).
pub fn new_secret() -> String {
    crate::random::token(32)
}

/// What the store keeps of a secret.
pub fn hash(secret: &str) -> String {
    super::hash_code(secret)
}

/// A cookie name of its own for each state (`{prefix}_{first 16 of the state hash}`), so
/// several sign-ins in flight in one browser (tabs, frames) do not undo each other.
pub fn per_state_name(prefix: &str, state_hash: &str) -> String {
    format!("{prefix}_{}", &state_hash[..16.min(state_hash.len())])
}

/// Where a binding cookie must still arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Inside a partner's page (an LMS or EHR framing the flow) and on the partner's
    /// cross-site redirect or form post back: `SameSite=None; Secure; Partitioned` (CHIPS:
    /// browsers that block third-party cookies still keep it, in the partition of the
    /// framing site, which is where the flow comes back). Needs HTTPS (or loopback).
    Framed,
    /// Top level only, but coming back by a cross-site POST (a SAML IdP): `SameSite=None;
    /// Secure`.
    CrossSitePost,
    /// Top level, coming back by a GET redirect: `SameSite=Lax` is enough, and the only
    /// choice over plain HTTP (development), where browsers refuse `Secure` cookies.
    Lax,
}

impl Site {
    /// `wanted` over HTTPS; over plain HTTP a `Secure` cookie would be dropped, so `Lax`.
    pub fn for_base(public_base: &str, wanted: Site) -> Site {
        if public_base.starts_with("https://") {
            wanted
        } else {
            Site::Lax
        }
    }

    fn attributes(self) -> &'static str {
        match self {
            Site::Framed => "Secure; SameSite=None; Partitioned",
            Site::CrossSitePost => "SameSite=None; Secure",
            Site::Lax => "SameSite=Lax",
        }
    }
}

/// One binding cookie: its name, the path it is sent to and how long it lives.
#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    pub path: &'static str,
    pub max_age_secs: u64,
    pub site: Site,
}

impl Cookie {
    /// The `Set-Cookie` value carrying `secret` (HttpOnly: no script reads it).
    pub fn set(&self, secret: &str) -> Option<HeaderValue> {
        self.header(secret, self.max_age_secs)
    }

    /// The `Set-Cookie` value removing it, once its state is spent.
    pub fn clear(&self) -> Option<HeaderValue> {
        self.header("", 0)
    }

    fn header(&self, value: &str, max_age: u64) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{}={value}; Path={}; Max-Age={max_age}; HttpOnly; {}",
            self.name,
            self.path,
            self.site.attributes()
        ))
        .ok()
    }

    /// What this request carries in the cookie (checked against the stored hash; reused
    /// as a secret only when [`is_secret`]).
    pub fn read(&self, headers: &HeaderMap) -> Option<String> {
        read(headers, &self.name)
    }
}

/// The value of cookie `name`, if the request has a non-empty one.
pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// A value `new_secret` could have made: only such a value is kept as a browser's secret.
pub fn is_secret(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(site: Site) -> Cookie {
        Cookie {
            name: per_state_name("pgw_x", "0123456789abcdef0123"),
            path: "/x",
            max_age_secs: 600,
            site,
        }
    }

    #[test]
    fn a_framed_cookie_is_partitioned_and_a_plain_http_one_is_lax() {
        let secret = new_secret();
        let set = cookie(Site::Framed).set(&secret).unwrap();
        assert_eq!(
            set.to_str().unwrap(),
            format!(
                "pgw_x_0123456789abcdef={secret}; Path=/x; Max-Age=600; HttpOnly; Secure; SameSite=None; Partitioned"
            )
        );
        assert_eq!(
            Site::for_base("http://127.0.0.1:8080", Site::Framed),
            Site::Lax
        );
        assert_eq!(
            Site::for_base("https://gw.example", Site::Framed),
            Site::Framed
        );
        let cleared = cookie(Site::Lax).clear().unwrap();
        assert!(cleared.to_str().unwrap().contains("=; Path=/x; Max-Age=0;"));
    }

    #[test]
    fn a_cookie_is_read_by_its_exact_name_and_only_a_secret_shape_counts_as_one() {
        let secret = new_secret();
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "other=1; pgw_x_0123456789abcdef0={secret}; pgw_x_0123456789abcdef={secret}"
            ))
            .unwrap(),
        );
        assert_eq!(cookie(Site::Lax).read(&h), Some(secret.clone()));
        assert_eq!(read(&h, "other").as_deref(), Some("1"));
        assert_eq!(read(&h, "missing"), None);
        assert!(is_secret(&secret));
        assert!(!is_secret("1") && !is_secret(&format!("{}!", &secret[..42])));
    }
}
