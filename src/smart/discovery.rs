//! Discovery: `{iss}/.well-known/smart-configuration`, falling back to the `oauth-uris`
//! extension of the CapabilityStatement at `{iss}/metadata`; and the issuer's JWKS for
//! id_token signatures. Both cached per instance for `smart.discovery_ttl_secs`; a JWKS is
//! refetched early when a token names a key it lacks, at most once every 10 s per URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::outbound::Outbound;

/// What the gateway needs from a SMART server's configuration (SMART App Launch 2.2
/// §Conformance). Unknown fields are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SmartConfiguration {
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub response_types_supported: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub management_endpoint: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{0}")]
    Refused(#[from] crate::outbound::Refused),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// Parse a `.well-known/smart-configuration` document.
pub fn parse_smart_configuration(body: &[u8]) -> Result<SmartConfiguration, String> {
    let cfg: SmartConfiguration = serde_json::from_slice(body)
        .map_err(|e| format!("the smart-configuration document is not valid: {e}"))?;
    for (name, value) in [
        ("authorization_endpoint", &cfg.authorization_endpoint),
        ("token_endpoint", &cfg.token_endpoint),
    ] {
        crate::outbound::parse_http_url(value).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(cfg)
}

/// Read the endpoints from a CapabilityStatement's `rest[].security.extension` oauth-uris.
pub fn parse_capability_statement(body: &[u8]) -> Result<SmartConfiguration, String> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the metadata document is not JSON: {e}"))?;
    if doc.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement") {
        return Err("the metadata document is not a CapabilityStatement".into());
    }
    let rests = doc
        .get("rest")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let uris = rests
        .iter()
        .filter_map(|r| r.pointer("/security/extension").and_then(Value::as_array))
        .flatten()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(OAUTH_URIS))
        .and_then(|e| e.get("extension").and_then(Value::as_array))
        .ok_or("the CapabilityStatement has no oauth-uris security extension")?;
    let find = |name: &str| {
        uris.iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(name))
            .and_then(|e| e.get("valueUri").or_else(|| e.get("valueUrl")))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let authorization_endpoint =
        find("authorize").ok_or("the oauth-uris extension has no authorize URI")?;
    let token_endpoint = find("token").ok_or("the oauth-uris extension has no token URI")?;
    for value in [&authorization_endpoint, &token_endpoint] {
        crate::outbound::parse_http_url(value)?;
    }
    Ok(SmartConfiguration {
        issuer: None,
        jwks_uri: None,
        authorization_endpoint,
        token_endpoint,
        token_endpoint_auth_methods_supported: Vec::new(),
        token_endpoint_auth_signing_alg_values_supported: Vec::new(),
        grant_types_supported: Vec::new(),
        scopes_supported: Vec::new(),
        response_types_supported: Vec::new(),
        capabilities: Vec::new(),
        code_challenge_methods_supported: Vec::new(),
        introspection_endpoint: find("introspect"),
        revocation_endpoint: find("revoke"),
        management_endpoint: find("manage"),
        extra: Map::new(),
    })
}

struct Cached<T> {
    at: Instant,
    value: Arc<T>,
}

/// Per-instance caches of discovery documents and JWKS.
#[derive(Clone)]
pub struct Discovery {
    outbound: Outbound,
    ttl: Duration,
    configs: Arc<Mutex<HashMap<String, Cached<SmartConfiguration>>>>,
    jwks: Arc<Mutex<HashMap<String, Cached<Value>>>>,
    /// When each JWKS was last refetched for an unknown kid.
    forced: Arc<Mutex<HashMap<String, Instant>>>,
}

/// A JWKS is refetched for an unknown `kid` at most this often per URL, so tokens naming
/// random kids cannot make the gateway hammer a partner (a real rotation is picked up by
/// the first launch after it).
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(10);

impl Discovery {
    pub fn new(outbound: Outbound, ttl: Duration) -> Discovery {
        Discovery {
            outbound,
            ttl,
            configs: Arc::default(),
            jwks: Arc::default(),
            forced: Arc::default(),
        }
    }

    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    /// The SMART configuration of `iss`, from the cache when fresh.
    pub async fn configuration(
        &self,
        iss: &str,
    ) -> Result<Arc<SmartConfiguration>, DiscoveryError> {
        let key = iss.trim_end_matches('/').to_owned();
        if let Some(hit) = fresh(&self.configs, &key, self.ttl) {
            return Ok(hit);
        }
        let well_known = format!("{key}/.well-known/smart-configuration");
        let cfg = match self.fetch_json(&well_known).await {
            Ok(body) => parse_smart_configuration(&body).map_err(DiscoveryError::Invalid)?,
            Err(first) => {
                // SMART 1.0 servers publish the endpoints in the CapabilityStatement only.
                let metadata = format!("{key}/metadata");
                match self.fetch_json(&metadata).await {
                    Ok(body) => parse_capability_statement(&body).map_err(|e| {
                        DiscoveryError::Invalid(format!(
                            "{well_known} failed ({first}) and {metadata} has no usable endpoints: {e}"
                        ))
                    })?,
                    Err(_) => return Err(first),
                }
            }
        };
        let value = Arc::new(cfg);
        store(&self.configs, key, value.clone());
        Ok(value)
    }

    /// The JWKS at `uri`; `refresh` asks for a fresh copy (an unknown `kid`), honoured at
    /// most once every 10 s per URL.
    pub async fn jwks(&self, uri: &str, refresh: bool) -> Result<Arc<Value>, DiscoveryError> {
        if refresh {
            let recently = self
                .forced
                .lock()
                .ok()
                .and_then(|m| m.get(uri).copied())
                .is_some_and(|at| at.elapsed() < JWKS_REFETCH_MIN);
            if recently && let Some(hit) = fresh(&self.jwks, uri, self.ttl) {
                return Ok(hit);
            }
            if let Ok(mut m) = self.forced.lock() {
                m.insert(uri.to_owned(), Instant::now());
            }
        } else if let Some(hit) = fresh(&self.jwks, uri, self.ttl) {
            return Ok(hit);
        }
        let body = self.fetch_json(uri).await?;
        let jwks: Value = serde_json::from_slice(&body)
            .map_err(|e| DiscoveryError::Invalid(format!("{uri} is not a JWKS: {e}")))?;
        if !jwks.get("keys").is_some_and(Value::is_array) {
            return Err(DiscoveryError::Invalid(format!(
                "{uri} is not a JWKS: no keys array"
            )));
        }
        let value = Arc::new(jwks);
        store(&self.jwks, uri.to_owned(), value.clone());
        Ok(value)
    }

    /// The JWKS URI of an issuer: from its SMART configuration, else from its OpenID
    /// configuration at `{issuer}/.well-known/openid-configuration`.
    pub async fn jwks_uri(
        &self,
        cfg: &SmartConfiguration,
        iss: &str,
    ) -> Result<String, DiscoveryError> {
        if let Some(uri) = &cfg.jwks_uri {
            return Ok(uri.clone());
        }
        let issuer = cfg.issuer.as_deref().unwrap_or(iss).trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let body = self.fetch_json(&url).await?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| DiscoveryError::Invalid(format!("{url} is not JSON: {e}")))?;
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| DiscoveryError::Invalid(format!("{url} names no jwks_uri")))
    }

    async fn fetch_json(&self, url: &str) -> Result<bytes::Bytes, DiscoveryError> {
        let parsed = self.outbound.url(url)?;
        let unreachable = |reason: String| DiscoveryError::Unreachable {
            url: crate::outbound::redact(&parsed),
            reason,
        };
        let resp = self
            .outbound
            .client()
            .get(parsed.clone())
            .header("accept", "application/json, application/fhir+json")
            .send()
            .await
            .map_err(|e| unreachable(error_chain(&e.without_url())))?;
        if !resp.status().is_success() {
            return Err(unreachable(format!("HTTP {}", resp.status().as_u16())));
        }
        resp.bytes()
            .await
            .map_err(|e| unreachable(error_chain(&e.without_url())))
    }
}

/// An error with its sources, for messages (reqwest's top error alone says little).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn fresh<T>(
    map: &Mutex<HashMap<String, Cached<T>>>,
    key: &str,
    max_age: Duration,
) -> Option<Arc<T>> {
    let guard = map.lock().ok()?;
    guard
        .get(key)
        .filter(|c| c.at.elapsed() < max_age)
        .map(|c| c.value.clone())
}

fn store<T>(map: &Mutex<HashMap<String, Cached<T>>>, key: String, value: Arc<T>) {
    if let Ok(mut guard) = map.lock() {
        guard.insert(
            key,
            Cached {
                at: Instant::now(),
                value,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epics_published_sandbox_configuration_parses() {
        let cfg = parse_smart_configuration(include_bytes!(
            "../../fixtures/smart/epic-smart-configuration.json"
        ))
        .unwrap();
        assert_eq!(
            cfg.authorization_endpoint,
            "https://fhir.epic.com/interconnect-fhir-oauth/oauth2/authorize"
        );
        assert_eq!(
            cfg.token_endpoint,
            "https://fhir.epic.com/interconnect-fhir-oauth/oauth2/token"
        );
        // Epic's id_tokens name the OAuth server, not the FHIR base, as issuer.
        assert_eq!(
            cfg.issuer.as_deref(),
            Some("https://fhir.epic.com/interconnect-fhir-oauth/oauth2")
        );
        assert!(cfg.jwks_uri.is_some());
        assert!(cfg.capabilities.iter().any(|c| c == "launch-ehr"));
    }

    #[test]
    fn oracles_published_sandbox_configuration_parses() {
        let cfg = parse_smart_configuration(include_bytes!(
            "../../fixtures/smart/oracle-smart-configuration.json"
        ))
        .unwrap();
        assert!(
            cfg.token_endpoint
                .contains("/tenants/ec2458f2-1e24-41c8-b71b-0e701af7583d/")
        );
        assert!(
            cfg.code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256")
        );
        assert!(cfg.scopes_supported.len() > 100);
        assert!(!cfg.token_endpoint_auth_methods_supported.is_empty());
    }

    #[test]
    fn oracles_capability_statement_yields_the_oauth_uris() {
        let cfg =
            parse_capability_statement(include_bytes!("../../fixtures/smart/oracle-metadata.json"))
                .unwrap();
        assert!(cfg.authorization_endpoint.ends_with("/authorize"));
        assert!(cfg.token_endpoint.ends_with("/token"));
        assert!(cfg.revocation_endpoint.is_some());
        assert!(cfg.introspection_endpoint.is_some());
    }

    #[test]
    fn a_document_without_endpoints_is_refused_with_a_reason() {
        let e = parse_smart_configuration(br#"{"issuer":"https://x"}"#).unwrap_err();
        assert!(e.contains("authorization_endpoint"), "{e}");
        let e =
            parse_capability_statement(br#"{"resourceType":"CapabilityStatement","rest":[{}]}"#)
                .unwrap_err();
        assert!(e.contains("oauth-uris"), "{e}");
        let e = parse_smart_configuration(
            br#"{"authorization_endpoint":"javascript:alert(1)","token_endpoint":"https://x/t"}"#,
        )
        .unwrap_err();
        assert!(e.contains("authorization_endpoint"), "{e}");
    }
}
