//! SSO connections: `[[partners.sso_connections]]` in config or `POST /v1/sso/connections`,
//! each an organisation's IdP, spoken to over OIDC or SAML 2.0.

use serde::Deserialize;

use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Oidc,
    Saml,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Oidc => "oidc",
            Protocol::Saml => "saml",
        }
    }
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

/// Which SAML attributes name the user; each list is tried in order, matching an
/// attribute's `Name` or `FriendlyName`. The defaults cover eduPerson/SCHAC (Shibboleth and
/// other university IdPs, by OID and by friendly name), ADFS/Entra claim URIs, Okta and
/// Google's plain names.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeMapping {
    /// `NameID` is the assertion's subject NameID (refused when it is transient: it
    /// changes at every login, so it cannot name a user).
    pub subject: Vec<String>,
    pub email: Vec<String>,
    pub name: Vec<String>,
    pub groups: Vec<String>,
}

impl Default for AttributeMapping {
    fn default() -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        AttributeMapping {
            subject: v(&["NameID"]),
            email: v(&[
                "urn:oid:0.9.2342.19200300.100.1.3",
                "mail",
                "email",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            ]),
            name: v(&[
                "urn:oid:2.16.840.1.113730.3.1.241",
                "displayName",
                "name",
                "http://schemas.microsoft.com/identity/claims/displayname",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            ]),
            groups: v(&[
                "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
                "isMemberOf",
                "groups",
                "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
                "urn:oid:1.3.6.1.4.1.5923.1.1.1.9",
                "eduPersonScopedAffiliation",
            ]),
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "state-university", "protocol": "saml", "organisation": "State University", "domains": ["state.edu"], "idp_metadata_url": "https://idp.state.edu/idp/shibboleth", "app_url": "https://app.example/sso"}))]
pub struct SsoConnection {
    /// Unique across all partners; appears in URLs (`/sso/start?organisation=`).
    pub id: String,
    /// oidc or saml.
    #[schema(value_type = String)]
    pub protocol: Protocol,
    /// The organisation's display name; the partner's name when unset.
    #[serde(default)]
    pub organisation: Option<String>,
    /// OIDC: the IdP's issuer (exact `iss` of its id_tokens); discovery is
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub issuer: String,
    /// OIDC: the client id the IdP gave the gateway.
    #[serde(default)]
    pub client_id: String,
    /// OIDC, client_secret_basic/post: the secret itself (runtime connections take values,
    /// not env or file references).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<Secret>,
    /// OIDC: client_secret_basic, client_secret_post or private_key_jwt.
    #[serde(default)]
    #[schema(value_type = String)]
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
    /// OIDC: which claims carry the user's id, email, name and groups.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub claims: ClaimMapping,
    /// Where the user is sent with the one-time code.
    pub app_url: String,
    /// Whose identifiers the IdP's subjects are: the ledger (the `sso.login` event, so
    /// `active_users`) names a person `{subject_namespace}:{subject}`. The connection's id
    /// by default, so two connections' people never merge; connections of one partner
    /// that share a namespace count a subject once (the same IdP with non-pairwise ids,
    /// or a subject mapped to an identifier both IdPs release, such as an employee number).
    #[serde(default)]
    pub subject_namespace: Option<String>,
    /// SAML: the IdP's metadata, from a URL (fetched again every
    /// `sso.saml_metadata_refresh_secs`) or a file (read again likewise).
    #[serde(default)]
    pub idp_metadata_url: Option<String>,
    #[serde(default)]
    pub idp_metadata_file: Option<String>,
    /// SAML: the IdP's entity id; needed when the metadata is a federation aggregate
    /// (InCommon, eduGAIN) naming many IdPs, checked against it otherwise.
    #[serde(default)]
    pub idp_entity_id: Option<String>,
    /// SAML: accept responses the IdP sends unasked (IdP-initiated, from its portal).
    #[serde(default)]
    pub allow_idp_initiated: bool,
    /// SAML: refuse assertions that arrive unencrypted.
    #[serde(default)]
    pub require_encrypted_assertions: bool,
    /// SAML: sign AuthnRequests (the SP metadata says so; the IdP must then know the
    /// gateway's certificate, which the metadata carries).
    #[serde(default)]
    pub sign_authn_requests: bool,
    /// SAML: the NameID format to ask for (e.g.
    /// `urn:oasis:names:tc:SAML:2.0:nameid-format:persistent`); the IdP's default otherwise.
    #[serde(default)]
    pub name_id_format: Option<String>,
    /// SAML: the gateway's entity id for this connection; the metadata URL by default.
    #[serde(default)]
    pub sp_entity_id: Option<String>,
    /// SAML: which attributes carry the email, name and groups (eduPerson, ADFS claim
    /// URIs and plain names are known by default).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: AttributeMapping,
    /// Sign people in to the console through this connection too:
    /// `{ audience = "staff" | "partner", roles = { role = [groups] }, default_role }`.
    /// A staff connection is for config files only.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub console: Option<crate::console::role::ConsoleAccess>,
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
        let word = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !word(&self.id) {
            out.push((
                "id".into(),
                "must be letters, digits, - or _ (it appears in URLs)".into(),
            ));
        }
        if let Some(ns) = &self.subject_namespace
            && !word(ns)
        {
            // No `:` either: it separates the namespace from the subject in the ledger.
            out.push((
                "subject_namespace".into(),
                "must be letters, digits, - or _ (the ledger names a person {subject_namespace}:{subject})".into(),
            ));
        }
        match self.protocol {
            Protocol::Oidc => self.oidc_problems(&mut out),
            Protocol::Saml => self.saml_problems(&mut out),
        }
        for d in &self.domains {
            if d.is_empty() || d.contains('@') || d.contains('/') || d != &d.to_ascii_lowercase() {
                out.push((
                    "domains".into(),
                    format!("{d:?} is not a lower-case domain name such as example.edu"),
                ));
            }
        }
        if let Err(e) = crate::http::page::redirect_target(&self.app_url) {
            out.push(("app_url".into(), e));
        }
        if let Some(c) = &self.console {
            out.extend(c.problems());
        }
        out
    }

    fn oidc_problems(&self, out: &mut Vec<(String, String)>) {
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
    }

    fn saml_problems(&self, out: &mut Vec<(String, String)>) {
        match (&self.idp_metadata_url, &self.idp_metadata_file) {
            (Some(u), None) => match url::Url::parse(u) {
                Ok(u) if matches!(u.scheme(), "https" | "http") => {}
                _ => out.push((
                    "idp_metadata_url".into(),
                    "must be an absolute http(s) URL".into(),
                )),
            },
            (None, Some(f)) if !f.is_empty() => {}
            (Some(_), Some(_)) => out.push((
                "idp_metadata_url".into(),
                "give idp_metadata_url or idp_metadata_file, not both".into(),
            )),
            _ => out.push((
                "idp_metadata_url".into(),
                "a SAML connection needs the IdP's metadata: idp_metadata_url or idp_metadata_file"
                    .into(),
            )),
        }
        for (field, set) in [
            ("issuer", !self.issuer.is_empty()),
            ("client_id", !self.client_id.is_empty()),
            ("client_secret", self.client_secret.is_some()),
            ("userinfo", self.userinfo),
        ] {
            if set {
                out.push((field.into(), "is for OIDC connections; remove it".into()));
            }
        }
        if let Some(e) = &self.sp_entity_id
            && e.trim().is_empty()
        {
            out.push(("sp_entity_id".into(), "must not be empty".into()));
        }
        if self.attributes.subject.is_empty() {
            out.push((
                "attributes.subject".into(),
                "name at least one attribute (or NameID)".into(),
            ));
        }
    }

    /// The namespace of this connection's subjects in the ledger (its id unless set).
    pub fn subject_namespace(&self) -> &str {
        self.subject_namespace.as_deref().unwrap_or(&self.id)
    }

    /// How the ledger names the person the IdP calls `subject`: unique within the partner
    /// however many IdPs sign its people in.
    pub fn ledger_subject(&self, subject: &str) -> String {
        format!("{}:{subject}", self.subject_namespace())
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
        // The ledger qualifies the IdP's subject with the connection, unless told otherwise.
        assert_eq!(c.ledger_subject("1"), "acme:1");
        let shared = SsoConnection {
            subject_namespace: Some("acme-staff".into()),
            ..c
        };
        assert!(shared.problems().is_empty(), "{:?}", shared.problems());
        assert_eq!(shared.ledger_subject("1"), "acme-staff:1");
        let bad = SsoConnection {
            subject_namespace: Some("a:b".into()),
            ..shared
        };
        assert!(bad.problems().iter().any(|(f, _)| f == "subject_namespace"));
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

    #[test]
    fn saml_connections_need_metadata_and_no_oidc_fields() {
        let c = parse(
            r#"id = "uni"
protocol = "saml"
idp_metadata_url = "https://idp.uni.example/idp/shibboleth"
domains = ["uni.example"]
app_url = "https://app.example.com/sso""#,
        );
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.attributes.subject, ["NameID"]);
        let c = parse(
            r#"id = "uni"
protocol = "saml"
client_id = "x"
app_url = "https://app.example.com/sso""#,
        );
        let fields: Vec<String> = c.problems().into_iter().map(|(f, _)| f).collect();
        assert!(
            fields.contains(&"idp_metadata_url".to_owned()),
            "{fields:?}"
        );
        assert!(fields.contains(&"client_id".to_owned()), "{fields:?}");
        let c = parse(
            r#"id = "uni"
protocol = "saml"
idp_metadata_url = "ftp://x"
idp_metadata_file = "/x.xml"
app_url = "https://app.example.com/sso""#,
        );
        assert!(!c.problems().is_empty());
    }
}
