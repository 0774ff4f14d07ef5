//! SSO connections in config: `[[partners.sso_connections]]`, each an organisation's IdP.

use serde::Deserialize;

use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Oidc,
}

/// How the gateway authenticates to the IdP's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (the OIDC default).
    #[default]
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
    /// A JWT signed with the gateway's key (RFC 7523), `client_assertion_alg`; the IdP
    /// reads the public key from the gateway's `/.well-known/jwks.json`. No secret.
    PrivateKeyJwt,
}

/// Which claims name the user. Defaults are the OIDC standard claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub subject: String,
    pub email: String,
    pub name: String,
    pub groups: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            subject: "sub".into(),
            email: "email".into(),
            name: "name".into(),
            groups: "groups".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConnection {
    /// Unique across all partners; appears in URLs (`/sso/start?organisation=`).
    pub id: String,
    pub protocol: Protocol,
    /// The organisation's display name; the partner's name when unset.
    #[serde(default)]
    pub organisation: Option<String>,
    /// The IdP's issuer (exact `iss` of its id_tokens); discovery is
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The gateway key that signs `private_key_jwt` assertions: RS256, RS384 or ES384.
    #[serde(default = "default_alg")]
    pub client_assertion_alg: String,
    /// Requested scopes; `openid` is always sent.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The id_token signature algorithm this IdP uses; any other is refused.
    #[serde(default = "default_alg")]
    pub id_token_alg: String,
    /// Email domains whose users sign in here (home-realm discovery).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Read the userinfo endpoint too and merge its claims (same `sub` required).
    #[serde(default)]
    pub userinfo: bool,
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Where the user is sent with the one-time code.
    pub app_url: String,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_alg() -> String {
    "RS256".into()
}

/// The asymmetric JWS algorithms an IdP may be pinned to.
pub const ALGS: [&str; 6] = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"];

impl SsoConnection {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.push((
                "id".into(),
                "must be letters, digits, - or _ (it appears in URLs)".into(),
            ));
        }
        match url::Url::parse(&self.issuer) {
            Ok(u) if u.query().is_none() && u.fragment().is_none() => {}
            _ => out.push((
                "issuer".into(),
                "must be an absolute URL without query or fragment".into(),
            )),
        }
        if self.client_id.is_empty() {
            out.push(("client_id".into(), "must not be empty".into()));
        }
        match (&self.client_secret, self.client_auth) {
            (Some(_), ClientAuth::PrivateKeyJwt) => out.push((
                "client_secret".into(),
                "private_key_jwt needs no secret; remove it".into(),
            )),
            (None, ClientAuth::PrivateKeyJwt) => {
                if crate::keys::Alg::parse(&self.client_assertion_alg).is_none() {
                    out.push((
                        "client_assertion_alg".into(),
                        "must be RS256, RS384 or ES384 (the gateway's keys)".into(),
                    ));
                }
            }
            (None, _) => out.push((
                "client_secret".into(),
                "the IdP's client secret is needed (use { env = \"VAR\" } or { file = \"path\" })"
                    .into(),
            )),
            (Some(s), _) if s.expose().is_empty() => {
                out.push(("client_secret".into(), "must not be empty".into()))
            }
            (Some(_), _) => {}
        }
        if !ALGS.contains(&self.id_token_alg.as_str()) {
            out.push((
                "id_token_alg".into(),
                format!("must be one of {}", ALGS.join(", ")),
            ));
        }
        for d in &self.domains {
            if d.is_empty() || d.contains('@') || d.contains('/') || d != &d.to_ascii_lowercase() {
                out.push((
                    "domains".into(),
                    format!("{d:?} is not a lower-case domain name such as example.edu"),
                ));
            }
        }
        if url::Url::parse(&self.app_url).is_err() {
            out.push(("app_url".into(), "must be an absolute URL".into()));
        }
        out
    }

    /// The scopes to send, `openid` first and once.
    pub fn scope_list(&self) -> Vec<String> {
        let mut v = vec!["openid".to_owned()];
        v.extend(self.scopes.iter().filter(|s| *s != "openid").cloned());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> SsoConnection {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_complete_connection_has_no_problems_and_sends_openid_once() {
        let c = parse(
            r#"id = "acme"
protocol = "oidc"
issuer = "https://login.acme.example"
client_id = "gw"
client_secret = "x"
scopes = ["email", "openid", "profile"]
domains = ["acme.example"]
app_url = "https://app.example.com/sso""#,
        );
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.scope_list(), ["openid", "email", "profile"]);
        assert_eq!(c.id_token_alg, "RS256");
    }

    #[test]
    fn each_problem_is_named() {
        let c = parse(
            r#"id = "a b"
protocol = "oidc"
issuer = "not a url"
client_id = ""
id_token_alg = "HS256"
domains = ["Acme.example", "x@y"]
app_url = "/relative""#,
        );
        let fields: Vec<String> = c.problems().into_iter().map(|(f, _)| f).collect();
        for f in [
            "id",
            "issuer",
            "client_id",
            "client_secret",
            "id_token_alg",
            "domains",
            "app_url",
        ] {
            assert!(
                fields.iter().any(|x| x == f),
                "{f} not reported: {fields:?}"
            );
        }
        assert!(toml::from_str::<SsoConnection>("id = \"a\"\nprotocol = \"saml2\"").is_err());
    }
}
