//! A mock SAML 2.0 identity provider on loopback, for SSO tests and benches, following
//! the SAML 2.0 core, bindings and Web Browser SSO profile: IdP metadata (entity id,
//! signing certificate, HTTP-Redirect SingleSignOnService), an SSO endpoint taking the
//! SP's AuthnRequest over HTTP-Redirect (signature checked when the request is signed)
//! and answering with an auto-posting HTML form (HTTP-POST binding), responses signed with
//! a real RSA key through xmlsec (exclusive C14N, RSA-SHA256), assertions encrypted to the
//! certificate in the SP's metadata (AES-128-GCM, RSA-OAEP), as an IdP administrator's
//! "load the SP metadata" step gives it.
//!
//! Personalities, as the vendors ship them: Shibboleth IdP (persistent NameID with
//! NameQualifier/SPNameQualifier, eduPerson/SCHAC attributes by OID with FriendlyNames,
//! the Response signed) and ADFS / Entra ID (claim-URI attributes, the Assertion signed).
//! Every field of a response can be set by a test (`ResponseSpec`) to play a faulty or
//! hostile IdP.
//!
//! Like a real IdP it serves several SPs (each registered from its metadata; the
//! AuthnRequest's Issuer picks one), and persistent NameIDs are what SAML core 8.3.7 says
//! they are: pairwise, unique per IdP–SP pair, so two SPs may be sent the same value for
//! different people (`set_user` between sign-ins plays that). Sign-ins started at the IdP
//! come from its unsolicited endpoint (Shibboleth `/idp/profile/SAML2/Unsolicited/SSO`,
//! ADFS `idpinitiatedsignon.aspx`), without `InResponseTo` as the profile says, or with
//! `InResponseTo=""` as some SAML libraries' templates write it
//! (`set_empty_in_response_to`).

use std::io::Read;
use std::sync::{Arc, Mutex};

use crate::util::lock;
use anyhow::Context;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use openssl::pkey::{PKey, Private};
use samael::crypto::CryptoProvider;

/// The SAML 2.0 HTTP-POST binding (SAML Bindings §3.5).
const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const URI_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamlIdpVendor {
    Shibboleth,
    Adfs,
}

/// Which parts of a response carry a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    Response,
    Assertion,
    Both,
    None,
}

/// Who is signed in at the IdP.
#[derive(Debug, Clone)]
pub struct SamlIdpUser {
    /// The persistent NameID value (opaque, per SP, as Shibboleth computes it).
    pub persistent_id: String,
    pub principal_name: String,
    pub email: String,
    pub name: String,
    pub affiliations: Vec<String>,
    pub groups: Vec<String>,
}

/// One SAML attribute: `Name`, `FriendlyName`, values.
#[derive(Debug, Clone)]
pub struct Attr {
    pub name: String,
    pub friendly: Option<String>,
    pub values: Vec<String>,
}

/// Everything a response says; `MockSamlIdp::spec` fills it for the registered SP and a
/// test changes what it wants.
#[derive(Debug, Clone)]
pub struct ResponseSpec {
    pub response_id: String,
    /// `Some("")` writes `InResponseTo=""` (on the Response and the SubjectConfirmationData).
    pub in_response_to: Option<String>,
    pub destination: Option<String>,
    pub recipient: String,
    pub audience: Option<String>,
    pub issuer: String,
    /// The SP the NameID is for (its `SPNameQualifier`).
    pub sp_name_qualifier: String,
    pub assertion_id: String,
    pub issue_instant: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub not_on_or_after: DateTime<Utc>,
    pub name_id: String,
    pub name_id_format: String,
    pub attributes: Vec<Attr>,
    pub status: String,
    pub signing: Signing,
    /// Encrypt the assertion to this certificate (DER).
    pub encrypt_to: Option<Vec<u8>>,
    /// The content encryption algorithm's URI (AES-128-GCM by default; AES-128/256 in GCM
    /// or CBC are produced, any other URI is written as given over AES-128-GCM).
    pub encrypt_alg: String,
}

pub struct MockSamlIdp {
    shared: Arc<Shared>,
    _server: crate::util::Served,
}

struct Sp {
    entity_id: String,
    acs_url: String,
    encryption_cert: Option<Vec<u8>>,
    signing_certs: Vec<Vec<u8>>,
}

struct Shared {
    vendor: SamlIdpVendor,
    base: String,
    entity_id: String,
    key_der: Vec<u8>,
    cert_der: Vec<u8>,
    user: Mutex<SamlIdpUser>,
    /// The SPs registered, in the order they were first registered.
    sps: Mutex<Vec<Sp>>,
    signing: Mutex<Signing>,
    encrypt: Mutex<bool>,
    /// The metadata offers SSO over HTTP-Redirect (else over HTTP-POST only).
    redirect_binding: Mutex<bool>,
    /// Unsolicited responses carry `InResponseTo=""`.
    empty_in_response_to: Mutex<bool>,
    /// AuthnRequests received (their IDs), newest last.
    requests: Mutex<Vec<String>>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_id() -> String {
    format!("_{}", uuid::Uuid::new_v4().simple())
}

impl MockSamlIdp {
    pub async fn start(vendor: SamlIdpVendor, user: SamlIdpUser) -> anyhow::Result<MockSamlIdp> {
        let (listener, addr) = crate::util::bind_loopback("mock SAML IdP").await?;
        let base = format!("http://{addr}");
        let entity_id = match vendor {
            SamlIdpVendor::Shibboleth => format!("{base}/idp/shibboleth"),
            SamlIdpVendor::Adfs => format!("{base}/adfs/services/trust"),
        };
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
        let key_der = key.rsa()?.private_key_to_der()?;
        let cert_der = self_signed(&key, &format!("{addr} mock SAML IdP"))?;
        let shared = Arc::new(Shared {
            vendor,
            base,
            entity_id,

            key_der,
            cert_der,
            user: Mutex::new(user),
            sps: Mutex::new(Vec::new()),
            signing: Mutex::new(match vendor {
                SamlIdpVendor::Shibboleth => Signing::Response,
                SamlIdpVendor::Adfs => Signing::Assertion,
            }),
            encrypt: Mutex::new(false),
            redirect_binding: Mutex::new(true),
            empty_in_response_to: Mutex::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let sso_path = match vendor {
            SamlIdpVendor::Shibboleth => "/idp/profile/SAML2/Redirect/SSO",
            SamlIdpVendor::Adfs => "/adfs/ls/",
        };
        let app = Router::new()
            .route("/metadata", get(metadata))
            .route(sso_path, get(sso))
            .route(unsolicited_path(vendor), get(unsolicited))
            .with_state(shared.clone());
        let _server = crate::util::serve(listener, app, "mock SAML IdP");
        Ok(MockSamlIdp { shared, _server })
    }

    pub fn entity_id(&self) -> String {
        self.shared.entity_id.clone()
    }

    pub fn metadata_url(&self) -> String {
        format!("{}/metadata", self.shared.base)
    }

    pub fn metadata_xml(&self) -> String {
        self.shared.metadata_xml()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.shared.cert_der.clone()
    }

    pub fn set_user(&self, user: SamlIdpUser) {
        *lock(&self.shared.user) = user;
    }

    pub fn set_signing(&self, signing: Signing) {
        *lock(&self.shared.signing) = signing;
    }

    /// Encrypt assertions to the SP's encryption certificate from its metadata.
    pub fn set_encrypt(&self, on: bool) {
        *lock(&self.shared.encrypt) = on;
    }

    /// Whether the metadata offers a SingleSignOnService over HTTP-Redirect; off, it lists
    /// one over HTTP-POST only, as an IdP configured for POST-bound AuthnRequests does.
    pub fn set_redirect_binding(&self, on: bool) {
        *lock(&self.shared.redirect_binding) = on;
    }

    /// Write `InResponseTo=""` on unsolicited responses (the Response and its bearer
    /// SubjectConfirmationData), as the default templates of some SAML libraries do,
    /// instead of leaving the attribute out as the profile says.
    pub fn set_empty_in_response_to(&self, on: bool) {
        *lock(&self.shared.empty_in_response_to) = on;
    }

    /// The IdP's page that signs the current user in to the SP `sp_entity_id` unasked
    /// (IdP-initiated), with `target` as the RelayState where the vendor takes one
    /// (Shibboleth's `target`; ADFS's `loginToRp` takes none here).
    pub fn unsolicited_url(&self, sp_entity_id: &str, target: Option<&str>) -> String {
        let mut u = format!(
            "{}{}?{}={}",
            self.shared.base,
            unsolicited_path(self.shared.vendor),
            match self.shared.vendor {
                SamlIdpVendor::Shibboleth => "providerId",
                SamlIdpVendor::Adfs => "loginToRp",
            },
            url::form_urlencoded::byte_serialize(sp_entity_id.as_bytes()).collect::<String>()
        );
        if let (SamlIdpVendor::Shibboleth, Some(t)) = (self.shared.vendor, target) {
            u.push_str("&target=");
            u.extend(url::form_urlencoded::byte_serialize(t.as_bytes()));
        }
        u
    }

    /// The AuthnRequest IDs received so far.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// Load an SP's metadata, as an IdP administrator does: entity id, ACS URL, its
    /// certificates. Metadata for an SP already registered (same entity id) replaces what
    /// the IdP knew of it, as a metadata refresh does; another SP is added beside it.
    pub fn register_sp(&self, sp_metadata: &str) -> anyhow::Result<()> {
        let ed: samael::metadata::EntityDescriptor =
            sp_metadata.parse().context("parsing the SP metadata")?;
        let entity_id = ed
            .entity_id
            .clone()
            .context("SP metadata without entityID")?;
        let sp = ed
            .sp_sso_descriptors
            .as_ref()
            .and_then(|v| v.first())
            .context("SP metadata without SPSSODescriptor")?;
        let acs_url = sp
            .assertion_consumer_services
            .iter()
            .find(|a| a.binding == HTTP_POST)
            .map(|a| a.location.clone())
            .context("SP metadata without an HTTP-POST AssertionConsumerService")?;
        // Every certificate per use, in metadata order (a rollover publishes several).
        let certs = |usage: &str| -> Vec<Vec<u8>> {
            sp.key_descriptors
                .iter()
                .flatten()
                .filter(|k| k.key_use.as_deref() == Some(usage))
                .filter_map(|k| k.key_info.x509_data.as_ref())
                .filter_map(|x| x.certificates.first())
                .filter_map(|c| {
                    let compact: String = c.chars().filter(|c| !c.is_whitespace()).collect();
                    STANDARD.decode(compact).ok()
                })
                .collect()
        };
        let sp = Sp {
            entity_id,
            acs_url,
            // The newest: an IdP that loaded rolled-over metadata encrypts to the new key.
            encryption_cert: certs("encryption").pop(),
            signing_certs: certs("signing"),
        };
        let mut sps = lock(&self.shared.sps);
        match sps.iter_mut().find(|s| s.entity_id == sp.entity_id) {
            Some(known) => *known = sp,
            None => sps.push(sp),
        }
        Ok(())
    }

    /// A response for the SP registered last, answering `in_response_to` (or unsolicited),
    /// with the IdP's current user, signing and encryption settings.
    pub fn spec(&self, in_response_to: Option<&str>) -> anyhow::Result<ResponseSpec> {
        let last = lock(&self.shared.sps)
            .last()
            .map(|sp| sp.entity_id.clone())
            .context("no SP registered with the mock IdP")?;
        self.shared.spec(&last, in_response_to)
    }

    /// A response for the registered SP `sp_entity_id`.
    pub fn spec_for(
        &self,
        sp_entity_id: &str,
        in_response_to: Option<&str>,
    ) -> anyhow::Result<ResponseSpec> {
        self.shared.spec(sp_entity_id, in_response_to)
    }

    /// The response as XML (signed and encrypted as the spec says), before base64.
    pub fn response_xml(&self, spec: &ResponseSpec) -> anyhow::Result<String> {
        self.shared.response_xml(spec)
    }

    /// The `SAMLResponse` form value for a spec.
    pub fn response(&self, spec: &ResponseSpec) -> anyhow::Result<String> {
        Ok(STANDARD.encode(self.response_xml(spec)?))
    }

    /// Sign an arbitrary document's first `ds:Signature` template with the IdP's key (for
    /// tests building hostile responses).
    pub fn sign(&self, xml: &str) -> anyhow::Result<String> {
        Ok(samael::crypto::Crypto::sign_xml(xml, &self.shared.key_der)?)
    }

    /// A `ds:Signature` template over the element with this ID.
    pub fn signature_template(&self, id: &str) -> String {
        signature_template(id, &self.shared.cert_der)
    }
}

fn self_signed(key: &PKey<Private>, cn: &str) -> anyhow::Result<Vec<u8>> {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::{X509, X509NameBuilder};
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = openssl::bn::BigNum::from_u32(rand::random::<u32>())?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(365)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build().to_der()?)
}

fn signature_template(id: &str, cert_der: &[u8]) -> String {
    format!(
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
<ds:Reference URI=\"#{id}\"><ds:Transforms>\
<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>\
<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue></ds:DigestValue>\
</ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data>\
<ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
        STANDARD.encode(cert_der)
    )
}

impl Shared {
    fn metadata_xml(&self) -> String {
        let redirect = *lock(&self.redirect_binding);
        let binding = if redirect {
            "HTTP-Redirect"
        } else {
            "HTTP-POST"
        };
        let sso = match (self.vendor, redirect) {
            (SamlIdpVendor::Shibboleth, true) => "/idp/profile/SAML2/Redirect/SSO",
            (SamlIdpVendor::Shibboleth, false) => "/idp/profile/SAML2/POST/SSO",
            (SamlIdpVendor::Adfs, _) => "/adfs/ls/",
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{entity}\">\n\
  <md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">\n\
    <md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>\n\
    <md:NameIDFormat>{PERSISTENT}</md:NameIDFormat>\n\
    <md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:{binding}\" Location=\"{base}{sso}\"/>\n\
  </md:IDPSSODescriptor>\n\
</md:EntityDescriptor>\n",
            entity = escape(&self.entity_id),
            cert = STANDARD.encode(&self.cert_der),
            base = self.base,
        )
    }

    fn spec(
        &self,
        sp_entity_id: &str,
        in_response_to: Option<&str>,
    ) -> anyhow::Result<ResponseSpec> {
        let sps = lock(&self.sps);
        let sp = sps
            .iter()
            .find(|sp| sp.entity_id == sp_entity_id)
            .with_context(|| format!("no SP {sp_entity_id} registered with the mock IdP"))?;
        let user = lock(&self.user).clone();
        let in_response_to = match in_response_to {
            Some(id) => Some(id.to_owned()),
            None if *lock(&self.empty_in_response_to) => Some(String::new()),
            None => None,
        };
        let now = Utc::now();
        let attributes = match self.vendor {
            SamlIdpVendor::Shibboleth => vec![
                attr(
                    "urn:oid:1.3.6.1.4.1.5923.1.1.1.6",
                    "eduPersonPrincipalName",
                    vec![user.principal_name.clone()],
                ),
                attr(
                    "urn:oid:0.9.2342.19200300.100.1.3",
                    "mail",
                    vec![user.email.clone()],
                ),
                attr(
                    "urn:oid:2.16.840.1.113730.3.1.241",
                    "displayName",
                    vec![user.name.clone()],
                ),
                attr(
                    "urn:oid:1.3.6.1.4.1.5923.1.1.1.9",
                    "eduPersonScopedAffiliation",
                    user.affiliations.clone(),
                ),
                attr(
                    "urn:oid:1.3.6.1.4.1.5923.1.1.1.1",
                    "eduPersonAffiliation",
                    user.affiliations
                        .iter()
                        .map(|a| a.split('@').next().unwrap_or(a).to_owned())
                        .collect(),
                ),
                attr(
                    "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
                    "isMemberOf",
                    user.groups.clone(),
                ),
            ],
            SamlIdpVendor::Adfs => vec![
                Attr {
                    name: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
                        .into(),
                    friendly: None,
                    values: vec![user.email.clone()],
                },
                Attr {
                    name: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name".into(),
                    friendly: None,
                    values: vec![user.name.clone()],
                },
                Attr {
                    name: "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups".into(),
                    friendly: None,
                    values: user.groups.clone(),
                },
            ],
        };
        Ok(ResponseSpec {
            response_id: random_id(),
            in_response_to,
            destination: Some(sp.acs_url.clone()),
            recipient: sp.acs_url.clone(),
            audience: Some(sp.entity_id.clone()),
            issuer: self.entity_id.clone(),
            sp_name_qualifier: sp.entity_id.clone(),
            assertion_id: random_id(),
            issue_instant: now,
            not_before: now - Duration::seconds(30),
            not_on_or_after: now + Duration::minutes(5),
            name_id: user.persistent_id.clone(),
            name_id_format: PERSISTENT.into(),
            attributes,
            status: SUCCESS.into(),
            signing: *lock(&self.signing),
            encrypt_alg: "http://www.w3.org/2009/xmlenc11#aes128-gcm".into(),
            encrypt_to: if *lock(&self.encrypt) {
                sp.encryption_cert.clone()
            } else {
                None
            },
        })
    }

    fn assertion_xml(&self, s: &ResponseSpec, signature: &str) -> String {
        let irt = s
            .in_response_to
            .as_ref()
            .map(|r| format!(" InResponseTo=\"{}\"", escape(r)))
            .unwrap_or_default();
        let audience = s
            .audience
            .as_ref()
            .map(|a| format!("<saml:AudienceRestriction><saml:Audience>{}</saml:Audience></saml:AudienceRestriction>", escape(a)))
            .unwrap_or_default();
        let mut attrs = String::new();
        for a in s.attributes.iter().filter(|a| !a.values.is_empty()) {
            let friendly = a
                .friendly
                .as_ref()
                .map(|f| format!(" FriendlyName=\"{}\"", escape(f)))
                .unwrap_or_default();
            attrs.push_str(&format!(
                "<saml:Attribute Name=\"{}\" NameFormat=\"{URI_FORMAT}\"{friendly}>",
                escape(&a.name)
            ));
            for v in &a.values {
                attrs.push_str(&format!(
                    "<saml:AttributeValue xsi:type=\"xs:string\">{}</saml:AttributeValue>",
                    escape(v)
                ));
            }
            attrs.push_str("</saml:Attribute>");
        }
        format!(
            "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ID=\"{id}\" IssueInstant=\"{iat}\" Version=\"2.0\">\
<saml:Issuer>{issuer}</saml:Issuer>{signature}\
<saml:Subject><saml:NameID Format=\"{fmt}\" NameQualifier=\"{issuer}\" SPNameQualifier=\"{spq}\">{name_id}</saml:NameID>\
<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"><saml:SubjectConfirmationData{irt} NotOnOrAfter=\"{nooa}\" Recipient=\"{recipient}\"/></saml:SubjectConfirmation></saml:Subject>\
<saml:Conditions NotBefore=\"{nb}\" NotOnOrAfter=\"{nooa}\">{audience}</saml:Conditions>\
<saml:AuthnStatement AuthnInstant=\"{iat}\" SessionIndex=\"{session}\"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>\
<saml:AttributeStatement>{attrs}</saml:AttributeStatement></saml:Assertion>",
            id = s.assertion_id,
            iat = time(s.issue_instant),
            issuer = escape(&s.issuer),
            fmt = escape(&s.name_id_format),
            spq = escape(&s.sp_name_qualifier),
            name_id = escape(&s.name_id),
            nooa = time(s.not_on_or_after),
            nb = time(s.not_before),
            recipient = escape(&s.recipient),
            session = random_id(),
        )
    }

    fn response_xml(&self, s: &ResponseSpec) -> anyhow::Result<String> {
        let sign_assertion = matches!(s.signing, Signing::Assertion | Signing::Both);
        let sign_response = matches!(s.signing, Signing::Response | Signing::Both);
        let mut assertion = if sign_assertion {
            let t = self.assertion_xml(s, &signature_template(&s.assertion_id, &self.cert_der));
            samael::crypto::Crypto::sign_xml(&t, &self.key_der)?
        } else {
            self.assertion_xml(s, "")
        };
        // libxml2 writes an XML declaration in front of a signed document.
        if let Some(i) = assertion.find("<saml:Assertion") {
            assertion = assertion[i..].trim_end().to_owned();
        }
        if let Some(cert) = &s.encrypt_to {
            assertion = encrypt(&assertion, cert, self.vendor, &s.encrypt_alg)?;
        }
        let irt = s
            .in_response_to
            .as_ref()
            .map(|r| format!(" InResponseTo=\"{}\"", escape(r)))
            .unwrap_or_default();
        let dest = s
            .destination
            .as_ref()
            .map(|d| format!(" Destination=\"{}\"", escape(d)))
            .unwrap_or_default();
        let sig = if sign_response {
            signature_template(&s.response_id, &self.cert_der)
        } else {
            String::new()
        };
        let xml = format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{iat}\"{dest}{irt}>\
<saml:Issuer>{issuer}</saml:Issuer>{sig}<samlp:Status><samlp:StatusCode Value=\"{status}\"/></samlp:Status>{assertion}</samlp:Response>",
            id = s.response_id,
            iat = time(s.issue_instant),
            issuer = escape(&s.issuer),
            status = escape(&s.status),
        );
        if sign_response {
            Ok(samael::crypto::Crypto::sign_xml(&xml, &self.key_der)?)
        } else {
            Ok(xml)
        }
    }

    /// The SSO endpoint (HTTP-Redirect binding): the AuthnRequest inflated and read, its
    /// signature checked when signed, answered with an auto-posting form to the ACS URL.
    fn sso(&self, raw_query: &str) -> Result<String, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        let q: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let req = get("SAMLRequest").ok_or_else(|| bad("no SAMLRequest".into()))?;
        let deflated = STANDARD
            .decode(req.as_bytes())
            .map_err(|e| bad(format!("SAMLRequest base64: {e}")))?;
        let mut xml = String::new();
        flate2::read::DeflateDecoder::new(&deflated[..])
            .read_to_string(&mut xml)
            .map_err(|e| bad(format!("SAMLRequest inflate: {e}")))?;
        let authn: samael::schema::AuthnRequest =
            xml.parse().map_err(|e| bad(format!("AuthnRequest: {e}")))?;
        // The request's Issuer names the SP: one whose metadata the IdP loaded.
        let issuer = authn.issuer_value();
        let (sp_entity, acs, sp_cert) = {
            let sps = lock(&self.sps);
            let sp = sps
                .iter()
                .find(|sp| Some(sp.entity_id.as_str()) == issuer.as_deref())
                .ok_or_else(|| bad(format!("unknown SP {issuer:?}")))?;
            (
                sp.entity_id.clone(),
                sp.acs_url.clone(),
                sp.signing_certs.clone(),
            )
        };
        if let Some(a) = &authn.assertion_consumer_service_url
            && *a != acs
        {
            return Err(bad(format!("ACS URL {a} is not in the SP's metadata")));
        }
        if let Some(sig_alg) = get("SigAlg") {
            // The signature covers the query as sent: SAMLRequest, RelayState, SigAlg.
            let signed: Vec<&str> = raw_query
                .split('&')
                .filter(|p| {
                    p.starts_with("SAMLRequest=")
                        || p.starts_with("RelayState=")
                        || p.starts_with("SigAlg=")
                })
                .collect();
            let sig = get("Signature").ok_or_else(|| bad("SigAlg without Signature".into()))?;
            let sig = STANDARD
                .decode(sig.as_bytes())
                .map_err(|e| bad(format!("Signature: {e}")))?;
            if sp_cert.is_empty() {
                return Err(bad("signed request but no SP signing certificate".into()));
            }
            if sig_alg != "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" {
                return Err(bad(format!("SigAlg {sig_alg} not supported")));
            }
            let verifies = |cert: &[u8]| -> anyhow::Result<bool> {
                let pk = openssl::x509::X509::from_der(cert)?.public_key()?;
                let mut v =
                    openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &pk)?;
                v.update(signed.join("&").as_bytes())?;
                Ok(v.verify(&sig)?)
            };
            let ok = sp_cert.iter().any(|c| verifies(c).unwrap_or(false));
            if !ok {
                return Err(bad("the AuthnRequest signature does not verify".into()));
            }
        }
        lock(&self.requests).push(authn.id.clone());
        let spec = self
            .spec(&sp_entity, Some(&authn.id))
            .map_err(|e| bad(e.to_string()))?;
        self.post_form(&spec, &acs, get("RelayState").as_deref())
    }

    /// The IdP-initiated endpoint: a response nobody asked for, to the SP the query names
    /// (Shibboleth `providerId` with an optional `target` RelayState; ADFS `loginToRp`).
    fn unsolicited(&self, raw_query: &str) -> Result<String, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        let q: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (sp_param, relay) = match self.vendor {
            SamlIdpVendor::Shibboleth => ("providerId", get("target")),
            SamlIdpVendor::Adfs => ("loginToRp", None),
        };
        let sp_entity = get(sp_param).ok_or_else(|| bad(format!("no {sp_param}")))?;
        let acs = lock(&self.sps)
            .iter()
            .find(|sp| sp.entity_id == sp_entity)
            .map(|sp| sp.acs_url.clone())
            .ok_or_else(|| bad(format!("unknown SP {sp_entity:?}")))?;
        let spec = self
            .spec(&sp_entity, None)
            .map_err(|e| bad(e.to_string()))?;
        self.post_form(&spec, &acs, relay.as_deref())
    }

    /// The auto-posting form (HTTP-POST binding) carrying the response to the ACS.
    fn post_form(
        &self,
        spec: &ResponseSpec,
        acs: &str,
        relay: Option<&str>,
    ) -> Result<String, (StatusCode, String)> {
        let response = self
            .response_xml(spec)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let relay = relay
            .map(|r| {
                format!(
                    "<input type=\"hidden\" name=\"RelayState\" value=\"{}\"/>",
                    escape(r)
                )
            })
            .unwrap_or_default();
        Ok(format!(
            "<!doctype html><html><body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">\
<input type=\"hidden\" name=\"SAMLResponse\" value=\"{}\"/>{relay}<noscript><button type=\"submit\">Continue</button></noscript></form></body></html>",
            escape(acs),
            STANDARD.encode(response)
        ))
    }
}

fn attr(name: &str, friendly: &str, values: Vec<String>) -> Attr {
    Attr {
        name: name.into(),
        friendly: Some(friendly.into()),
        values,
    }
}

/// XML Encryption of the assertion: AES-128-GCM content key, wrapped with RSA-OAEP
/// (MGF1-SHA1) under the SP's certificate. Shibboleth (OpenSAML) writes `ds:KeyInfo` with
/// its prefix declared on it; ADFS (.NET) a `KeyInfo` in the default namespace.
fn encrypt(
    assertion: &str,
    cert_der: &[u8],
    vendor: SamlIdpVendor,
    alg: &str,
) -> anyhow::Result<String> {
    use openssl::symm::{Cipher, encrypt, encrypt_aead};
    let (cipher, gcm) = match alg.rsplit_once('#').map(|(_, n)| n) {
        Some("aes128-gcm") => (Cipher::aes_128_gcm(), true),
        Some("aes256-gcm") => (Cipher::aes_256_gcm(), true),
        Some("aes128-cbc") => (Cipher::aes_128_cbc(), false),
        Some("aes256-cbc") => (Cipher::aes_256_cbc(), false),
        _ => (Cipher::aes_128_gcm(), true), // the URI is kept: a test of refusals
    };
    let mut key = vec![0u8; cipher.key_len()];
    openssl::rand::rand_bytes(&mut key)?;
    let value = if gcm {
        let iv: [u8; 12] = rand::random();
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(cipher, &key, Some(&iv), &[], assertion.as_bytes(), &mut tag)?;
        [iv.as_slice(), &ct, &tag].concat()
    } else {
        // OpenSSL's PKCS#7 padding is one of the paddings XML Encryption allows.
        let iv: [u8; 16] = rand::random();
        let ct = encrypt(cipher, &key, Some(&iv), assertion.as_bytes())?;
        [iv.as_slice(), &ct].concat()
    };
    let rsa = openssl::x509::X509::from_der(cert_der)?
        .public_key()?
        .rsa()?;
    let mut wrapped = vec![0u8; rsa.size() as usize];
    let n = rsa.public_encrypt(&key, &mut wrapped, openssl::rsa::Padding::PKCS1_OAEP)?;
    wrapped.truncate(n);
    let (open, close) = match vendor {
        SamlIdpVendor::Shibboleth => (
            "<ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">",
            "</ds:KeyInfo>",
        ),
        SamlIdpVendor::Adfs => (
            "<KeyInfo xmlns=\"http://www.w3.org/2000/09/xmldsig#\">",
            "</KeyInfo>",
        ),
    };
    Ok(format!(
        "<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" Type=\"http://www.w3.org/2001/04/xmlenc#Element\">\
<xenc:EncryptionMethod Algorithm=\"{alg}\"/>\
{open}<xenc:EncryptedKey>\
<xenc:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p\"><DigestMethod xmlns=\"http://www.w3.org/2000/09/xmldsig#\" Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/></xenc:EncryptionMethod>\
<xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey>{close}\
<xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion>",
        STANDARD.encode(wrapped),
        STANDARD.encode(value),
        open = open,
        close = close,
        alg = alg,
    ))
}

async fn metadata(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
        s.metadata_xml(),
    )
        .into_response()
}

async fn sso(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    html(s.sso(&q.unwrap_or_default()))
}

async fn unsolicited(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    html(s.unsolicited(&q.unwrap_or_default()))
}

fn html(page: Result<String, (StatusCode, String)>) -> Response {
    match page {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err((status, msg)) => (status, msg).into_response(),
    }
}

/// Where each vendor's IdP-initiated sign-in lives.
fn unsolicited_path(vendor: SamlIdpVendor) -> &'static str {
    match vendor {
        SamlIdpVendor::Shibboleth => "/idp/profile/SAML2/Unsolicited/SSO",
        SamlIdpVendor::Adfs => "/adfs/ls/idpinitiatedsignon.aspx",
    }
}
