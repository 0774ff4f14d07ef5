//! The SAML 2.0 service provider (Web Browser SSO profile: the AuthnRequest over
//! HTTP-Redirect, the response over HTTP-POST) on `samael`, whose XML signature checks and
//! decryption are xmlsec's (libxmlsec1): the gateway never canonicalises XML itself.
//! `samael` cuts the response down to what the IdP's signature covers before reading it,
//! which is what defeats signature wrapping; this module adds what it leaves to the SP
//! (an audience is required, unsolicited responses only where the connection allows them,
//! no DTDs, no comments that could split a NameID, no RSA-1.5 key transport, one
//! assertion) and turns the assertion into the person the app receives.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use openssl::pkey::{PKey, Private};
use quick_xml::events::Event;
use samael::crypto::{AllowedSignatureAlgorithm, Crypto, CryptoProvider, ReduceMode};
use samael::metadata::{EntityDescriptor, EntityDescriptorType};
use samael::schema::Assertion;
use samael::service_provider::{Error as SpError, ServiceProvider};

use super::connection::SsoConnection;
use crate::outbound::Outbound;
use crate::smart::discovery::error_chain;

pub const HTTP_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// The transforms a SAML signature may name (SAML core 5.4.4).
const TRANSFORMS: [&str; 5] = [
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
];
/// The largest IdP metadata read: a federation aggregate (InCommon, eduGAIN) is tens of
/// megabytes.
const MAX_METADATA_BYTES: usize = 128 * 1024 * 1024;
/// The largest SAMLResponse read (base64): signed and encrypted responses with many
/// attributes are tens of kilobytes.
const MAX_RESPONSE_BYTES: usize = 512 * 1024;

/// Signature algorithms accepted from an IdP: SHA-256 or stronger (SHA-1 is refused).
const SIGNATURE_ALGS: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// The gateway's SP key pair: it signs AuthnRequests and decrypts assertions; its
/// self-signed certificate is what the SP metadata publishes, for what `published` says.
#[derive(Clone)]
pub struct SpKey {
    pub kid: String,
    pub key: PKey<Private>,
    pub cert_der: Vec<u8>,
    pub published: Published,
}

/// What the SP metadata publishes a key's certificate for, during a rollover in stages
/// (`keys rotate --saml-sp --stage`). Every key not retired decrypts, whatever it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Signing and encryption: the current key (the oldest such one signs AuthnRequests).
    Both,
    /// Signing only: a new key announced before it signs, so IdPs that verify signed
    /// AuthnRequests learn it, while the metadata keeps one encryption certificate.
    Signing,
    /// Not at all: a replaced key kept to decrypt what IdPs still on older metadata
    /// encrypt to it, until it retires.
    None,
}

impl Published {
    pub fn as_str(self) -> &'static str {
        match self {
            Published::Both => "both",
            Published::Signing => "signing",
            Published::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Published> {
        match s {
            "both" => Some(Published::Both),
            "signing" => Some(Published::Signing),
            "none" => Some(Published::None),
            _ => None,
        }
    }
}

/// The key that signs AuthnRequests: the oldest published for both uses (during a plain
/// overlap the old key signs until it retires; a staged key signs once promoted).
pub fn signer(keys: &[SpKey]) -> Option<&SpKey> {
    keys.iter().find(|k| k.published == Published::Both)
}

/// A new SP key: RSA-2048 (what every SAML IdP can encrypt to) and a self-signed
/// certificate valid for ten years. Returns the PKCS#8 private key DER and the cert DER.
pub fn generate_sp_key(common_name: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::{X509, X509NameBuilder};

    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    // A CN is at most 64 characters (RFC 5280).
    let cn: String = common_name.chars().take(64).collect();
    name.append_entry_by_nid(Nid::COMMONNAME, &cn)?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(3650)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((key.private_key_to_pkcs8()?, b.build().to_der()?))
}

impl SpKey {
    pub fn from_der(
        kid: String,
        pkcs8: &[u8],
        cert_der: Vec<u8>,
        published: Published,
    ) -> anyhow::Result<SpKey> {
        Ok(SpKey {
            kid,
            key: PKey::private_key_from_pkcs8(pkcs8)?,
            cert_der,
            published,
        })
    }
}

/// IdP metadata per connection, read again every `refresh`; when a refresh fails the last
/// good copy stays in use (and the failure is logged), retried a minute later.
/// When each entry was read, and the entity.
type MetadataEntries = HashMap<String, (Instant, Arc<EntityDescriptor>)>;

#[derive(Clone)]
pub struct IdpMetadataCache {
    cache: Arc<Mutex<MetadataEntries>>,
    loading: Arc<tokio::sync::Mutex<()>>,
    refresh: Duration,
}

impl IdpMetadataCache {
    pub fn new(refresh: Duration) -> IdpMetadataCache {
        IdpMetadataCache {
            cache: Arc::default(),
            loading: Arc::default(),
            refresh,
        }
    }

    fn cache_key(conn: &SsoConnection) -> String {
        format!(
            "{}\n{:?}\n{:?}\n{:?}",
            conn.id, conn.idp_metadata_url, conn.idp_metadata_file, conn.idp_entity_id
        )
    }

    pub async fn get(
        &self,
        outbound: &Outbound,
        conn: &SsoConnection,
    ) -> Result<Arc<EntityDescriptor>, String> {
        let key = Self::cache_key(conn);
        let cached = || {
            self.cache
                .lock()
                .ok()
                .and_then(|m| m.get(&key).cloned())
                .filter(|(_, d)| current(d))
        };
        if let Some((at, d)) = cached()
            && at.elapsed() < self.refresh
        {
            return Ok(d);
        }
        // One refresh at a time: sign-ins arriving meanwhile wait for it, not fetch too.
        let _one = self.loading.lock().await;
        let cached = cached();
        if let Some((at, d)) = &cached
            && at.elapsed() < self.refresh
        {
            return Ok(d.clone());
        }
        match load_idp_metadata(outbound, conn).await {
            Ok(d) => {
                let d = Arc::new(d);
                if let Ok(mut m) = self.cache.lock() {
                    m.insert(key, (Instant::now(), d.clone()));
                }
                Ok(d)
            }
            Err(e) => match cached {
                Some((_, d)) => {
                    tracing::warn!(connection = %conn.id, error = %e, "IdP metadata refresh failed; keeping the last good copy");
                    let retry_at = Instant::now()
                        .checked_sub(self.refresh.saturating_sub(Duration::from_secs(60)))
                        .unwrap_or_else(Instant::now);
                    if let Ok(mut m) = self.cache.lock() {
                        m.insert(key, (retry_at, d.clone()));
                    }
                    Ok(d)
                }
                None => Err(e),
            },
        }
    }
}

/// The connection's IdP metadata, fetched (through the outbound policy) or read.
pub async fn load_idp_metadata(
    outbound: &Outbound,
    conn: &SsoConnection,
) -> Result<EntityDescriptor, String> {
    let xml = if let Some(url) = &conn.idp_metadata_url {
        let u = outbound
            .url(url)
            .map_err(|e| format!("the IdP metadata URL is refused: {e}"))?;
        let resp = outbound.client().get(u).send().await.map_err(|e| {
            format!(
                "fetching the IdP metadata: {}",
                error_chain(&e.without_url())
            )
        })?;
        if !resp.status().is_success() {
            return Err(format!(
                "the IdP metadata URL answered HTTP {}",
                resp.status().as_u16()
            ));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the IdP metadata: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_METADATA_BYTES {
                return Err(format!(
                    "the IdP metadata is larger than {} MB",
                    MAX_METADATA_BYTES / 1024 / 1024
                ));
            }
        }
        String::from_utf8(body).map_err(|_| "the IdP metadata is not UTF-8".to_owned())?
    } else if let Some(f) = &conn.idp_metadata_file {
        tokio::fs::read_to_string(f)
            .await
            .map_err(|e| format!("reading the IdP metadata file {f}: {e}"))?
    } else {
        return Err("the connection names no IdP metadata".into());
    };
    let want = conn.idp_entity_id.clone();
    // Parsing an aggregate takes a while: off the async threads.
    tokio::task::spawn_blocking(move || parse_idp_metadata(&xml, want.as_deref()))
        .await
        .map_err(|e| format!("parsing the IdP metadata: {e}"))?
}

/// Still within its validUntil (checked again on every use of a cached copy).
fn current(d: &EntityDescriptor) -> bool {
    d.valid_until.is_none_or(|u| u >= chrono::Utc::now())
}

/// The IdP's entity descriptor from a metadata document (one entity, or an aggregate from
/// which `want` picks one). It must have an entity id and a signing certificate: without
/// one no response could be verified.
pub fn parse_idp_metadata(xml: &str, want: Option<&str>) -> Result<EntityDescriptor, String> {
    scan(xml, Scan::Metadata).map_err(|r| r.message)?;
    let parsed: EntityDescriptorType = xml
        .parse()
        .map_err(|e| format!("the IdP metadata is not SAML 2.0 metadata: {e}"))?;
    let idps: Vec<EntityDescriptor> = parsed
        .iter()
        .filter(|e| {
            e.idp_sso_descriptors
                .as_ref()
                .is_some_and(|v| !v.is_empty())
        })
        .cloned()
        .collect();
    let chosen = match want {
        Some(w) => idps
            .into_iter()
            .find(|e| e.entity_id.as_deref() == Some(w))
            .ok_or_else(|| format!("the metadata has no IdP with entity id {w:?}"))?,
        None => {
            let n = idps.len();
            let mut it = idps.into_iter();
            match (it.next(), n) {
                (Some(only), 1) => only,
                (None, _) => {
                    return Err("the metadata describes no IdP (no IDPSSODescriptor)".into());
                }
                _ => {
                    return Err(format!(
                        "the metadata names {n} IdPs; set idp_entity_id to the one to use"
                    ));
                }
            }
        }
    };
    if chosen.entity_id.as_deref().unwrap_or("").is_empty() {
        return Err("the IdP metadata has no entityID".into());
    }
    // Metadata past its validUntil is stale by the publisher's own word (SAML metadata
    // 2.0, 2.3.1): its certificates may have been replaced.
    if let Some(until) = chosen.valid_until
        && until < chrono::Utc::now()
    {
        return Err(format!(
            "the IdP metadata expired at {} (validUntil); the IdP must publish a fresh copy",
            crate::time::rfc3339(until)
        ));
    }
    let probe = ServiceProvider {
        idp_metadata: chosen.clone(),
        ..ServiceProvider::default()
    };
    match probe.idp_signing_certs() {
        Ok(Some(_)) => {}
        Ok(None) => return Err("the IdP metadata has no signing certificate".into()),
        Err(e) => {
            return Err(format!(
                "the IdP metadata's certificate does not parse: {e}"
            ));
        }
    }
    if probe.sso_binding_location(HTTP_REDIRECT).is_none() {
        let offered: Vec<&str> = chosen
            .idp_sso_descriptors
            .iter()
            .flatten()
            .flat_map(|d| d.single_sign_on_services.iter())
            .map(|e| e.binding.rsplit(':').next().unwrap_or(&e.binding))
            .collect();
        return Err(format!(
            "the IdP metadata has no SingleSignOnService for the HTTP-Redirect binding ({}); the gateway sends its AuthnRequest over HTTP-Redirect only: turn that binding on at the IdP",
            if offered.is_empty() {
                "it lists none".to_owned()
            } else {
                format!("it offers {}", offered.join(", "))
            }
        ));
    }
    Ok(chosen)
}

/// What the gateway is, for one connection.
pub struct Sp {
    pub entity_id: String,
    pub acs_url: String,
    pub keys: Arc<Vec<SpKey>>,
    pub clock_skew: Duration,
    pub max_age: Duration,
}

impl Sp {
    fn provider(
        &self,
        idp: &EntityDescriptor,
        key: Option<&SpKey>,
        unsolicited: bool,
    ) -> ServiceProvider {
        let secs = |d: Duration| chrono::Duration::seconds(d.as_secs() as i64);
        ServiceProvider {
            entity_id: Some(self.entity_id.clone()),
            key: key.map(|k| k.key.clone()),
            certificate: key.map(|k| k.cert_der.clone().into()),
            acs_url: Some(self.acs_url.clone()),
            idp_metadata: idp.clone(),
            allow_idp_initiated: unsolicited,
            max_issue_delay: secs(self.max_age + self.clock_skew),
            max_clock_skew: secs(self.clock_skew),
            allowed_signature_algorithms: Some(SIGNATURE_ALGS.to_vec()),
            ..ServiceProvider::default()
        }
    }
}

/// The IdP's sign-in URL carrying this AuthnRequest (deflated, base64, and signed when
/// `signer` is given) and `relay_state`.
pub fn authn_request_url(
    sp: &Sp,
    idp: &EntityDescriptor,
    name_id_format: Option<&str>,
    request_id: &str,
    relay_state: &str,
    signer: Option<&SpKey>,
) -> Result<String, String> {
    let mut provider = sp.provider(idp, None, false);
    provider.authn_name_id_format = name_id_format.map(str::to_owned);
    let dest = provider
        .sso_binding_location(HTTP_REDIRECT)
        .ok_or("the IdP metadata has no HTTP-Redirect SingleSignOnService")?;
    let mut req = provider
        .make_authentication_request(&dest)
        .map_err(|e| e.to_string())?;
    req.id = request_id.to_owned();
    req.force_authn = None;
    let url = match signer {
        Some(k) => req.signed_redirect(relay_state, &k.key),
        None => req.redirect(relay_state),
    }
    .map_err(|e| e.to_string())?
    .ok_or("the AuthnRequest has no destination")?;
    Ok(url.to_string())
}

/// Why a response was refused: `code` for logs and tests, `message` for the person.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// The person a valid response names.
#[derive(Debug, Clone)]
pub struct SamlUser {
    pub subject: String,
    pub name_id: Option<String>,
    pub name_id_format: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// Every attribute by its `Name` (and `FriendlyName` where given).
    pub attributes: BTreeMap<String, Vec<String>>,
    pub issuer: String,
    pub assertion_id: String,
    pub session_index: Option<String>,
    /// Until when the assertion could be presented (for the replay record).
    pub valid_until: DateTime<Utc>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scan {
    Metadata,
    Response,
}

#[derive(Default)]
struct Shape {
    assertions: usize,
    encrypted: usize,
    /// The Response itself carries a signature (a `ds:Signature` child).
    response_signed: bool,
    /// The Response's `InResponseTo`, as written (before any signature is checked: only
    /// ever a reason to refuse).
    in_response_to: Option<String>,
    signatures: usize,
    references: usize,
}

/// A pass over the raw XML before any of it is trusted: no DTD (entity expansion), no
/// comment inside an element (a comment splits a text node without changing the
/// canonical form the signature covers, so `alice@uni.edu<!---->.evil.com` would verify as
/// `alice@uni.edu.evil.com` and could be read as `alice@uni.edu`), no RSA-1.5 key
/// transport; and the response's shape.
fn scan(xml: &str, what: Scan) -> Result<Shape, Refusal> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    let mut shape = Shape::default();
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| refuse("malformed", format!("the XML does not parse: {e}")))?;
        match ev {
            Event::DocType(_) => {
                return Err(refuse(
                    "malformed",
                    "the XML has a DOCTYPE; SAML messages must not",
                ));
            }
            Event::Comment(_) if depth > 0 && what == Scan::Response => {
                return Err(refuse(
                    "comment",
                    "the response has an XML comment inside an element; the gateway refuses those (a comment can change how a NameID or attribute value reads without breaking the signature)",
                ));
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = e.local_name();
                let local = local.as_ref();
                if depth == 0 && what == Scan::Response && local != b"Response" {
                    return Err(refuse(
                        "malformed",
                        "the SAMLResponse is not a samlp:Response",
                    ));
                }
                if depth == 0 && what == Scan::Response {
                    shape.in_response_to = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == b"InResponseTo")
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned());
                }
                if what == Scan::Response {
                    // Signature wrapping moves the signed element somewhere the
                    // verifier still finds it (inside an Extensions, an Object, another
                    // assertion) and puts a forged one where the reader looks. SAML puts
                    // assertions right under the Response and nests neither: refuse
                    // any other shape before the signature is even looked at.
                    let nested = match local {
                        b"Response" => depth > 0,
                        b"Assertion" | b"EncryptedAssertion" => depth != 1,
                        _ => false,
                    };
                    if nested {
                        return Err(refuse(
                            "wrapping",
                            "the response has a Response or assertion nested where SAML puts none (an XML signature wrapping attempt)",
                        ));
                    }
                }
                if depth == 1 && local == b"Assertion" {
                    shape.assertions += 1;
                }
                if depth == 1 && local == b"EncryptedAssertion" {
                    shape.encrypted += 1;
                }
                if depth == 1 && local == b"Signature" {
                    shape.response_signed = true;
                }
                if what == Scan::Response {
                    // Bounded signature work for whatever arrives before it is trusted:
                    // at most the Response's and the assertion's signatures, one
                    // reference each, and only the transforms SAML uses (so no XPath,
                    // no XSLT, no thousands of references to digest).
                    match local {
                        b"Signature" => shape.signatures += 1,
                        b"Reference" => shape.references += 1,
                        b"Transform" => {
                            let alg = e
                                .attributes()
                                .flatten()
                                .find(|a| a.key.as_ref() == b"Algorithm")
                                .map(|a| a.value.into_owned())
                                .unwrap_or_default();
                            if !TRANSFORMS.iter().any(|t| t.as_bytes() == alg.as_slice()) {
                                return Err(refuse(
                                    "signature",
                                    format!(
                                        "the signature uses the transform {:?}; SAML signatures use only enveloped-signature and exclusive C14N",
                                        String::from_utf8_lossy(&alg)
                                    ),
                                ));
                            }
                        }
                        _ => {}
                    }
                    if shape.signatures > 2 || shape.references > 2 {
                        return Err(refuse(
                            "signature",
                            "the response has more signatures or references than a Response and its assertion need",
                        ));
                    }
                }
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(shape)
}

fn map_error(e: &SpError, sp: &Sp) -> Refusal {
    use SpError as E;
    match e {
        E::FailedToValidateSignature => refuse(
            "signature",
            "the response's signature does not verify with the IdP's certificate, or part of the response is outside what the IdP signed (the response or its assertion must be signed with SHA-256 or stronger)",
        ),
        E::DestinationValidationError {
            response_destination,
            ..
        } => refuse(
            "destination",
            format!(
                "the response's Destination {:?} is not this connection's ACS URL {}",
                response_destination.as_deref().unwrap_or(""),
                sp.acs_url
            ),
        ),
        E::AssertionRecipientMismatch {
            assertion_recipient,
            ..
        } => refuse(
            "recipient",
            format!(
                "the assertion's Recipient {:?} is not this connection's ACS URL {}",
                assertion_recipient.as_deref().unwrap_or(""),
                sp.acs_url
            ),
        ),
        E::AssertionConditionAudienceRestrictionFailed { .. } => refuse(
            "audience",
            format!(
                "the assertion is for another audience; it must name {}",
                sp.entity_id
            ),
        ),
        E::ResponseInResponseToInvalid { .. } | E::AssertionInResponseToInvalid { .. } => refuse(
            "in_response_to",
            "the response answers a request the gateway did not send (InResponseTo)",
        ),
        E::AssertionExpired { .. }
        | E::ResponseExpired { .. }
        | E::AssertionConditionExpired { .. }
        | E::AssertionSubjectConfirmationExpired { .. } => {
            refuse("expired", format!("the response has expired: {e}"))
        }
        E::AssertionConditionExpiredBefore { .. }
        | E::AssertionSubjectConfirmationExpiredBefore { .. } => refuse(
            "not_yet_valid",
            format!("the response is not valid yet (check the clocks): {e}"),
        ),
        E::AssertionIssuerMismatch { .. } | E::ResponseIssuerMismatch { .. } => refuse(
            "issuer",
            format!("the response comes from another IdP: {e}"),
        ),
        E::ResponseBadStatusCode { code } => refuse(
            "status",
            format!("the identity provider did not sign you in (status {code})"),
        ),
        E::AssertionBearerSubjectConfirmationMissing | E::AssertionSubjectConfirmationMissing => {
            refuse("subject_confirmation", e.to_string())
        }
        E::MissingPrivateKeySP
        | E::MissingEncryptedKeyInfo
        | E::MissingEncryptedValueInfo
        | E::EncryptedAssertionKeyMethodUnsupported { .. }
        | E::EncryptedAssertionValueMethodUnsupported { .. }
        | E::EncryptedAssertionInvalid
        | E::FailedToDecryptAssertion => refuse(
            "decryption",
            format!("the encrypted assertion could not be decrypted with the gateway's key: {e}"),
        ),
        // The raw document parsed as a Response (scan); what fails here is what is left
        // once everything outside the IdP's signature is cut away.
        E::FailedToParseSamlResponse(_) | E::FailedToParseSamlAssertion(_) => refuse(
            "signature",
            "the part of the response the IdP signed is not the response or its assertion (the signature's reference points elsewhere)",
        ),
        other => refuse(
            "malformed",
            format!("the response could not be read: {other}"),
        ),
    }
}

/// Check a base64 `SAMLResponse` for this connection. `request_id` is the AuthnRequest it
/// must answer, or `None` for an unsolicited (IdP-initiated) response.
pub fn validate_response(
    saml_response: &str,
    conn: &SsoConnection,
    idp: &EntityDescriptor,
    sp: &Sp,
    request_id: Option<&str>,
) -> Result<SamlUser, Refusal> {
    if saml_response.len() > MAX_RESPONSE_BYTES {
        return Err(refuse(
            "malformed",
            format!(
                "the SAMLResponse is {} bytes; the gateway reads at most {MAX_RESPONSE_BYTES}",
                saml_response.len()
            ),
        ));
    }
    let compact: String = saml_response
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| refuse("malformed", "SAMLResponse is not base64"))?;
    let xml = String::from_utf8(bytes)
        .map_err(|_| refuse("malformed", "SAMLResponse is not UTF-8 XML"))?;
    let shape = scan(&xml, Scan::Response)?;
    // An unsolicited Response must not claim to answer a request (SAML profiles 4.1.5);
    // samael does not look when IdP-initiated responses are allowed. `InResponseTo=""`
    // (some SAML libraries' template for unsolicited responses) answers nothing.
    if request_id.is_none() && shape.in_response_to.as_deref().is_some_and(answers) {
        return Err(unsolicited_answer());
    }
    if shape.assertions + shape.encrypted != 1 {
        return Err(refuse(
            "wrapping",
            format!(
                "the response carries {} assertions; exactly one is expected (more is how signature wrapping hides a forged one)",
                shape.assertions + shape.encrypted
            ),
        ));
    }
    if conn.require_encrypted_assertions && shape.encrypted == 0 {
        return Err(refuse(
            "encryption_required",
            "this connection requires encrypted assertions and the assertion arrived in clear",
        ));
    }
    if shape.encrypted == 0 {
        return check(&xml, conn, idp, sp, request_id, Verify::Here);
    }
    let enc = super::xmlenc::find(&xml)?
        .ok_or_else(|| refuse("malformed", "the encrypted assertion could not be found"))?;
    if shape.response_signed {
        // The Response signature covers the ciphertext: verify it first (samael, xmlsec),
        // keep only what it covers, then decrypt that, so nothing unauthenticated is ever
        // decrypted. The assertion inside needs no signature of its own.
        let certs = signing_certs(idp)?;
        let signed = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            &xml,
            &certs,
            ReduceMode::ValidateAndMarkNoAncestors,
            Some(&SIGNATURE_ALGS),
        )
        .map_err(|_| map_error(&SpError::FailedToValidateSignature, sp))?;
        let inner = scan(&signed, Scan::Response)?;
        if inner.encrypted != 1 || inner.assertions != 0 {
            return Err(map_error(
                &SpError::FailedToParseSamlAssertion("no signed assertion".into()),
                sp,
            ));
        }
        let enc = super::xmlenc::find(&signed)?
            .ok_or_else(|| refuse("malformed", "the encrypted assertion could not be found"))?;
        let decrypted = super::xmlenc::decrypt_in_place(&signed, &enc, &sp.keys)?;
        let shape = scan(&decrypted, Scan::Response)?;
        if shape.assertions != 1 || shape.encrypted != 0 {
            return Err(refuse(
                "wrapping",
                "the decrypted response does not hold exactly one assertion",
            ));
        }
        return check(&decrypted, conn, idp, sp, request_id, Verify::Done);
    }
    // No Response signature: the assertion must be signed inside its encryption. Anyone
    // can encrypt to the SP's certificate, so until that signature has verified every
    // failure reads the same (the real reason is logged): the gateway is no decryption
    // oracle for a captured ciphertext.
    let inside = (|| {
        let decrypted = super::xmlenc::decrypt_in_place(&xml, &enc, &sp.keys)?;
        let shape = scan(&decrypted, Scan::Response)?;
        if shape.assertions != 1 || shape.encrypted != 0 {
            return Err(refuse(
                "wrapping",
                "the decrypted response does not hold exactly one assertion",
            ));
        }
        check(&decrypted, conn, idp, sp, request_id, Verify::Here)
    })();
    inside.map_err(|r| {
        tracing::warn!(code = r.code, reason = %r.message, "encrypted SAML response refused");
        Refusal {
            code: "decryption",
            message: "the encrypted assertion could not be decrypted and verified (it must be encrypted to the certificate in the gateway's SP metadata and, when the Response is not signed, signed inside by the IdP)".into(),
        }
    })
}

/// Who checks the signatures in `check`: samael (`Here`), or no one because the document
/// is already the part a verified signature covers (`Done`).
#[derive(Clone, Copy, PartialEq)]
enum Verify {
    Here,
    Done,
}

/// The IdP's signing certificates; none is an error (samael would skip the check).
fn signing_certs(idp: &EntityDescriptor) -> Result<Vec<samael::crypto::CertificateDer>, Refusal> {
    let probe = ServiceProvider {
        idp_metadata: idp.clone(),
        ..ServiceProvider::default()
    };
    match probe.idp_signing_certs() {
        Ok(Some(c)) if !c.is_empty() => Ok(c),
        _ => Err(refuse(
            "signature",
            "the IdP metadata has no signing certificate",
        )),
    }
}

/// samael's reading and checks of a clear-text response (signatures unless `Done`,
/// Destination, InResponseTo, issuer, status, times, Recipient), then ours.
fn check(
    xml: &str,
    conn: &SsoConnection,
    idp: &EntityDescriptor,
    sp: &Sp,
    request_id: Option<&str>,
    verify: Verify,
) -> Result<SamlUser, Refusal> {
    let ids: Vec<&str> = request_id.into_iter().collect();
    let unsolicited = request_id.is_none();
    let provider = match verify {
        Verify::Here => {
            // samael skips the signature check when the IdP has no signing certificate:
            // make sure there is one.
            signing_certs(idp)?;
            sp.provider(idp, signer(&sp.keys), unsolicited)
        }
        Verify::Done => {
            // Already verified: an IdP without certificates makes samael read and check
            // everything else without looking for signatures again.
            let mut bare = idp.clone();
            for d in bare.idp_sso_descriptors.iter_mut().flatten() {
                d.key_descriptors.clear();
            }
            sp.provider(&bare, signer(&sp.keys), unsolicited)
        }
    };
    let assertion = provider
        .parse_xml_response(xml, Some(&ids))
        .map_err(|e| map_error(&e, sp))?;
    check_assertion(&assertion, sp, unsolicited)?;
    user_from(&assertion, conn, sp)
}

/// Whether an `InResponseTo` value names a request: an empty one (written by SAML
/// libraries whose unsolicited-response template always carries the attribute) does not.
fn answers(in_response_to: &str) -> bool {
    !in_response_to.is_empty()
}

fn unsolicited_answer() -> Refusal {
    refuse(
        "in_response_to",
        "the response answers a request the gateway did not send (InResponseTo, and no RelayState the gateway issued)",
    )
}

/// What samael leaves to the SP: an AudienceRestriction is required (it checks one only if
/// present), and an unsolicited response must not claim to answer a request.
fn check_assertion(a: &Assertion, sp: &Sp, unsolicited: bool) -> Result<(), Refusal> {
    let audiences: Vec<&String> = a
        .conditions
        .iter()
        .flat_map(|c| c.audience_restrictions.iter().flatten())
        .flat_map(|r| r.audience.iter())
        .collect();
    if !audiences.iter().any(|x| **x == sp.entity_id) {
        return Err(refuse(
            "audience",
            format!(
                "the assertion is for another audience; it must name {}",
                sp.entity_id
            ),
        ));
    }
    if unsolicited {
        let claims_an_answer = a
            .subject
            .iter()
            .flat_map(|s| s.subject_confirmations.iter().flatten())
            .filter(|c| c.method.as_deref() == Some(BEARER))
            .filter_map(|c| c.subject_confirmation_data.as_ref())
            .any(|d| d.in_response_to.as_deref().is_some_and(answers));
        if claims_an_answer {
            return Err(unsolicited_answer());
        }
    }
    Ok(())
}

fn user_from(a: &Assertion, conn: &SsoConnection, sp: &Sp) -> Result<SamlUser, Refusal> {
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for st in a.attribute_statements.iter().flatten() {
        for attr in &st.attributes {
            // Signed by the IdP: a NUL (which no store keeps) becomes U+FFFD. (XML 1.0 has no
            // way to carry one, but the parser is not ours to rely on.)
            let values: Vec<String> = attr
                .values
                .iter()
                .filter_map(|v| v.value.clone().map(crate::text::without_nul))
                .collect();
            for key in [&attr.name, &attr.friendly_name].into_iter().flatten() {
                attributes
                    .entry(key.clone())
                    .or_default()
                    .extend(values.iter().cloned());
            }
        }
    }
    let name_id = a.subject.as_ref().and_then(|s| s.name_id.as_ref());
    let first = |names: &[String]| -> Option<String> {
        names.iter().find_map(|n| {
            if n == "NameID" {
                name_id
                    .filter(|id| id.format.as_deref() != Some(TRANSIENT))
                    .map(|id| id.value.trim().to_owned())
                    .filter(|v| !v.is_empty())
            } else {
                attributes
                    .get(n)
                    .and_then(|v| v.iter().find(|x| !x.trim().is_empty()))
                    .cloned()
            }
        })
    };
    let map = &conn.attributes;
    let subject = first(&map.subject).ok_or_else(|| {
        refuse(
            "subject",
            format!(
                "the assertion names no user: none of {} is present{}",
                map.subject.join(", "),
                if name_id.is_some_and(|i| i.format.as_deref() == Some(TRANSIENT)) {
                    " (the NameID is transient, which changes at every login; release a persistent NameID or map attributes.subject to an identifier attribute)"
                } else {
                    ""
                }
            ),
        )
    })?;
    let groups = map
        .groups
        .iter()
        .find_map(|n| attributes.get(n).filter(|v| !v.is_empty()).cloned())
        .unwrap_or_default();
    let skew = chrono::Duration::seconds(sp.clock_skew.as_secs() as i64);
    let valid_until = a
        .subject
        .iter()
        .flat_map(|s| s.subject_confirmations.iter().flatten())
        .filter_map(|c| c.subject_confirmation_data.as_ref())
        .filter_map(|d| d.not_on_or_after)
        .chain(a.conditions.iter().filter_map(|c| c.not_on_or_after))
        .max()
        .unwrap_or_else(|| {
            a.issue_instant + chrono::Duration::seconds(sp.max_age.as_secs() as i64)
        })
        + skew;
    Ok(SamlUser {
        email: first(&map.email),
        name: first(&map.name),
        groups,
        name_id: name_id.map(|i| i.value.clone()),
        name_id_format: name_id.and_then(|i| i.format.clone()),
        session_index: a
            .authn_statements
            .iter()
            .flatten()
            .find_map(|s| s.session_index.clone()),
        issuer: a.issuer.value.clone().unwrap_or_default(),
        assertion_id: a.id.clone(),
        attributes,
        subject,
        valid_until,
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The SP metadata for one connection: entity id, ACS (HTTP-POST), the certificates to
/// check AuthnRequest signatures with and to encrypt assertions to (each SP key for what
/// it is published for, oldest first, so a rollover is announced before it happens), and
/// the encryption methods the gateway decrypts (`xmlenc.rs`), preferred first.
pub fn sp_metadata(
    entity_id: &str,
    acs_url: &str,
    keys: &[SpKey],
    sign_requests: bool,
    name_id_format: Option<&str>,
    organisation: &str,
) -> String {
    let mut kd = String::new();
    for k in keys {
        if k.published == Published::None {
            continue;
        }
        let cert = STANDARD.encode(&k.cert_der);
        kd.push_str(&format!(
            "    <md:KeyDescriptor use=\"signing\">\n      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\n    </md:KeyDescriptor>\n"
        ));
        if k.published != Published::Both {
            continue;
        }
        kd.push_str(&format!(
            "    <md:KeyDescriptor use=\"encryption\">\n      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\n      <md:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#aes256-gcm\"/>\n      <md:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#aes128-gcm\"/>\n      <md:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#aes256-cbc\"/>\n      <md:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#aes128-cbc\"/>\n      <md:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#rsa-oaep\"/>\n      <md:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p\"/>\n    </md:KeyDescriptor>\n"
        ));
    }
    let nameid = name_id_format
        .map(|f| format!("    <md:NameIDFormat>{}</md:NameIDFormat>\n", escape(f)))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{entity}\">\n\
  <md:SPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\" AuthnRequestsSigned=\"{signed}\" WantAssertionsSigned=\"true\">\n\
{kd}{nameid}    <md:AssertionConsumerService Binding=\"{HTTP_POST}\" Location=\"{acs}\" index=\"0\" isDefault=\"true\"/>\n\
  </md:SPSSODescriptor>\n\
  <md:Organization>\n    <md:OrganizationName xml:lang=\"en\">{org}</md:OrganizationName>\n    <md:OrganizationDisplayName xml:lang=\"en\">{org}</md:OrganizationDisplayName>\n    <md:OrganizationURL xml:lang=\"en\">{entity}</md:OrganizationURL>\n  </md:Organization>\n\
</md:EntityDescriptor>\n",
        entity = escape(entity_id),
        signed = sign_requests,
        acs = escape(acs_url),
        org = escape(organisation),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idp(entity: &str, cert: &str, extra: &str) -> String {
        format!(
            "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{entity}\"{extra}>\
<md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{cert}\
<md:SingleSignOnService Binding=\"{HTTP_REDIRECT}\" Location=\"https://idp.example/sso\"/>\
</md:IDPSSODescriptor></md:EntityDescriptor>"
        )
    }

    fn cert() -> String {
        let (_, der) = generate_sp_key("test idp").unwrap_or_else(|e| panic!("{e}"));
        format!(
            "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
            STANDARD.encode(der)
        )
    }

    #[test]
    fn one_idp_is_read_and_problems_are_named() {
        let c = cert();
        let one = idp("https://a.example/idp", &c, "");
        let d = parse_idp_metadata(&one, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.entity_id.as_deref(), Some("https://a.example/idp"));
        assert!(parse_idp_metadata(&one, Some("https://a.example/idp")).is_ok());
        let e = parse_idp_metadata(&one, Some("https://b.example/idp")).err();
        assert!(e.is_some_and(|e| e.contains("no IdP with entity id")));
        let e = parse_idp_metadata(&idp("https://a.example/idp", "", ""), None).err();
        assert!(e.is_some_and(|e| e.contains("no signing certificate")));
        let stale = idp(
            "https://a.example/idp",
            &c,
            " validUntil=\"2001-01-01T00:00:00Z\"",
        );
        let e = parse_idp_metadata(&stale, None).err();
        assert!(e.is_some_and(|e| e.contains("expired")));
        // SSO over HTTP-POST only: the gateway redirects, so it says what to turn on.
        let post_only = one.replace(HTTP_REDIRECT, HTTP_POST);
        let e = parse_idp_metadata(&post_only, None).err();
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("HTTP-Redirect") && e.contains("it offers HTTP-POST")),
            "{e:?}"
        );
        let e = parse_idp_metadata(&format!("<!DOCTYPE x []>{one}"), None).err();
        assert!(e.is_some_and(|e| e.contains("DOCTYPE")));
        let e = parse_idp_metadata("<html>not metadata</html>", None).err();
        assert!(e.is_some());
    }

    #[test]
    fn an_aggregate_needs_the_entity_id_to_pick_one() {
        let c = cert();
        let agg = format!(
            "<md:EntitiesDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" Name=\"fed\">{}{}</md:EntitiesDescriptor>",
            idp("https://a.example/idp", &c, ""),
            idp("https://b.example/idp", &c, "")
        );
        let e = parse_idp_metadata(&agg, None).err();
        assert!(e.is_some_and(|e| e.contains("names 2 IdPs")));
        let d = parse_idp_metadata(&agg, Some("https://b.example/idp"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.entity_id.as_deref(), Some("https://b.example/idp"));
    }

    #[test]
    fn the_sp_metadata_names_both_key_uses_and_escapes() {
        let (der, cert) = generate_sp_key("sp").unwrap_or_else(|e| panic!("{e}"));
        let key = SpKey::from_der("k".into(), &der, cert, Published::Both)
            .unwrap_or_else(|e| panic!("{e}"));
        let xml = sp_metadata(
            "https://gw.example/sso/saml/a/metadata",
            "https://gw.example/sso/saml/a/acs",
            &[key],
            true,
            None,
            "Fish & Chips U",
        );
        assert!(xml.contains("use=\"signing\"") && xml.contains("use=\"encryption\""));
        assert!(xml.contains("AuthnRequestsSigned=\"true\""));
        assert!(xml.contains("Fish &amp; Chips U"));
        // samael reads it back as an SP.
        let ed: EntityDescriptor = xml.parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(ed.sp_sso_descriptors.is_some_and(|v| v.len() == 1));
    }

    #[test]
    fn each_key_is_published_for_what_its_stage_says_and_the_right_one_signs() {
        let key = |kid: &str, published| {
            let (der, cert) = generate_sp_key(kid).unwrap_or_else(|e| panic!("{e}"));
            SpKey::from_der(kid.into(), &der, cert, published).unwrap_or_else(|e| panic!("{e}"))
        };
        let (old, new) = (key("old", Published::Both), key("new", Published::Signing));
        let count = |keys: &[SpKey]| {
            let xml = sp_metadata(
                "https://gw.example/e",
                "https://gw.example/acs",
                keys,
                true,
                None,
                "U",
            );
            (
                xml.matches("use=\"signing\"").count(),
                xml.matches("use=\"encryption\"").count(),
            )
        };
        // Staged: the new certificate only for signature checks; the old one signs.
        let staged = [old.clone(), new.clone()];
        assert_eq!(count(&staged), (2, 1));
        assert_eq!(signer(&staged).map(|k| k.kid.as_str()), Some("old"));
        // Promoted: the old key is unpublished (it still decrypts) and the new one signs.
        let promoted = [
            SpKey {
                published: Published::None,
                ..old
            },
            SpKey {
                published: Published::Both,
                ..new
            },
        ];
        assert_eq!(count(&promoted), (1, 1));
        assert_eq!(signer(&promoted).map(|k| k.kid.as_str()), Some("new"));
        for p in [Published::Both, Published::Signing, Published::None] {
            assert_eq!(Published::parse(p.as_str()), Some(p));
        }
    }
}
