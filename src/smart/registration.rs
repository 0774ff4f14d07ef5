//! A partner's SMART on FHIR registration, as written under `[partners.smart]`, and the
//! checks `check-config` runs on it.

use serde::Deserialize;

use crate::config::{PartnerKind, Secret};
use crate::keys::Alg;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartRegistration {
    /// FHIR base URLs (`iss`) this partner launches from. Matched exactly (a trailing `/`
    /// aside): an EHR launch from any other `iss` is refused.
    pub issuers: Vec<String>,
    pub client_id: String,
    pub client_type: ClientType,
    /// For `confidential-symmetric` only: `{ env = "VAR" }` or `{ file = "path" }`.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// For `confidential-asymmetric`: which of the gateway's keys signs the client
    /// assertion (`RS384` or `ES384`; both are published in the JWKS).
    #[serde(default = "default_alg")]
    pub signing_alg: String,
    /// Scopes to request, v1 (`patient/*.read`) or v2 (`patient/Patient.rs`) syntax. The
    /// gateway adds `launch` to an EHR launch and `launch/patient` to a standalone launch
    /// unless a launch scope is already listed.
    pub scopes: Vec<String>,
    #[serde(default)]
    pub vendor: Vendor,
    /// Where the user is sent after the launch, with `?code=<one-time code>` appended.
    pub app_url: String,
    /// SMART Backend Services (system-to-system) registration, when the partner has one.
    #[serde(default)]
    pub backend: Option<BackendRegistration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRegistration {
    pub client_id: String,
    /// `system/...` scopes.
    pub scopes: Vec<String>,
    /// The FHIR base to use; defaults to the first of `issuers`.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default = "default_alg")]
    pub signing_alg: String,
}

fn default_alg() -> String {
    "RS384".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientType {
    Public,
    ConfidentialSymmetric,
    ConfidentialAsymmetric,
}

impl ClientType {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientType::Public => "public",
            ClientType::ConfidentialSymmetric => "confidential-symmetric",
            ClientType::ConfidentialAsymmetric => "confidential-asymmetric",
        }
    }
}

/// The EHR vendor, for its documented quirks (see README, "Registering with an EHR").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Epic,
    Oracle,
    #[default]
    Generic,
}

impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Epic => "epic",
            Vendor::Oracle => "oracle",
            Vendor::Generic => "generic",
        }
    }
}

impl SmartRegistration {
    /// The algorithm of the client assertion (validated by [`Self::problems`]).
    pub fn alg(&self) -> Alg {
        Alg::parse(&self.signing_alg).unwrap_or(Alg::Rs384)
    }

    /// The registered issuer equal to `iss` (ignoring one trailing slash), as registered.
    pub fn issuer(&self, iss: &str) -> Option<&str> {
        let want = iss.trim_end_matches('/');
        self.issuers
            .iter()
            .map(String::as_str)
            .find(|i| i.trim_end_matches('/') == want)
    }

    /// The scope parameter for an EHR (`ehr = true`) or standalone launch, per SMART App
    /// Launch 2.2 ("Scopes for requesting context data"):
    ///
    /// - EHR launch: `launch`, which with the `launch` parameter asks the EHR for the
    ///   context it has open. The standalone scopes `launch/patient` and `launch/encounter`
    ///   of the registration are left out (they would only be hints the EHR may ignore).
    /// - Standalone launch: there is no EHR context at the outset, so every context must be
    ///   asked for by name. `launch` (meaningless without a `launch` parameter) is dropped,
    ///   `launch/encounter` and other `launch/...` scopes are sent as listed, and
    ///   `launch/patient` is added when the launch needs a patient: the registration lists
    ///   no launch scope at all, or `launch`, or `launch/encounter` (an encounter is a
    ///   patient's), or any `patient/` scope (granting one obliges the EHR to establish a
    ///   patient, and it MAY refuse such a request without `launch/patient`).
    ///
    /// Each scope is sent once, in the registration's order after the launch scope.
    pub fn scope_for(&self, ehr: bool) -> String {
        let listed = |want: &str| self.scopes.iter().any(|s| s == want);
        let is_launch = |s: &str| s == "launch" || s.starts_with("launch/");
        let mut out: Vec<&str> = Vec::with_capacity(self.scopes.len() + 1);
        if ehr {
            out.push("launch");
        } else {
            let needs_patient = !self.scopes.iter().any(|s| is_launch(s))
                || listed("launch")
                || listed("launch/patient")
                || listed("launch/encounter")
                || self.scopes.iter().any(|s| s.starts_with("patient/"));
            if needs_patient {
                out.push("launch/patient");
            }
        }
        for s in &self.scopes {
            let skip = if ehr { is_launch(s) } else { s == "launch" };
            if !skip && !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
        out.join(" ")
    }

    pub fn requests_openid(&self) -> bool {
        self.scopes.iter().any(|s| s == "openid")
    }

    /// Every problem, as (field relative to `smart.`, message).
    pub fn problems(&self, kind: PartnerKind) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if kind != PartnerKind::Ehr {
            out.push((
                "(section)".into(),
                "a SMART registration belongs to a partner of kind \"ehr\"".into(),
            ));
        }
        if self.issuers.is_empty() {
            out.push(("issuers".into(), "list at least one FHIR base URL".into()));
        }
        for (i, iss) in self.issuers.iter().enumerate() {
            if let Err(e) = crate::outbound::parse_base_url(iss) {
                out.push((format!("issuers[{i}]"), e));
            }
        }
        if self.client_id.trim().is_empty() {
            out.push(("client_id".into(), "must not be empty".into()));
        }
        match (self.client_type, &self.client_secret) {
            (ClientType::ConfidentialSymmetric, None) => out.push((
                "client_secret".into(),
                "a confidential-symmetric client needs client_secret (use { env = \"VAR\" } or { file = \"path\" })".into(),
            )),
            (ClientType::ConfidentialSymmetric, Some(s)) if s.expose().is_empty() => {
                out.push(("client_secret".into(), "must not be empty".into()))
            }
            (ClientType::Public | ClientType::ConfidentialAsymmetric, Some(_)) => out.push((
                "client_secret".into(),
                format!(
                    "a {} client has no client secret; remove it",
                    self.client_type.as_str()
                ),
            )),
            _ => {}
        }
        if !smart_alg(&self.signing_alg) {
            out.push(("signing_alg".into(), "must be RS384 or ES384".into()));
        }
        if self.scopes.is_empty() {
            out.push(("scopes".into(), "list the scopes to request".into()));
        }
        for (i, s) in self.scopes.iter().enumerate() {
            if let Err(e) = check_scope(s) {
                out.push((format!("scopes[{i}]"), e));
            }
        }
        if let Err(e) = crate::http::page::redirect_target(&self.app_url) {
            out.push(("app_url".into(), e));
        }
        if let Some(b) = &self.backend {
            if b.client_id.trim().is_empty() {
                out.push(("backend.client_id".into(), "must not be empty".into()));
            }
            if b.scopes.is_empty() {
                out.push((
                    "backend.scopes".into(),
                    "list the system/ scopes to request".into(),
                ));
            }
            for (i, s) in b.scopes.iter().enumerate() {
                if !s.starts_with("system/") {
                    out.push((
                        format!("backend.scopes[{i}]"),
                        format!("{s:?}: Backend Services requests system/ scopes only"),
                    ));
                } else if let Err(e) = check_scope(s) {
                    out.push((format!("backend.scopes[{i}]"), e));
                }
            }
            if let Some(iss) = &b.issuer
                && self.issuer(iss).is_none()
            {
                out.push((
                    "backend.issuer".into(),
                    format!("{iss:?} is not one of this partner's issuers"),
                ));
            }
            if !smart_alg(&b.signing_alg) {
                out.push((
                    "backend.signing_alg".into(),
                    "must be RS384 or ES384".into(),
                ));
            }
        }
        out
    }
}

/// SMART asks clients to sign with RS384 or ES384 (RS256 is the gateway's LTI key).
fn smart_alg(s: &str) -> bool {
    matches!(Alg::parse(s), Some(Alg::Rs384 | Alg::Es384))
}

/// A scope in SMART v1 (`patient/Observation.read`) or v2 (`patient/Observation.rs`,
/// optionally `?category=...`) syntax, or any scope without a `patient/`, `user/` or
/// `system/` prefix (identity and vendor scopes are passed as written).
pub fn check_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty()
        || scope
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        return Err(format!("{scope:?} is not a valid scope token"));
    }
    let Some((context, rest)) = scope.split_once('/') else {
        return Ok(());
    };
    if !matches!(context, "patient" | "user" | "system") {
        return Ok(());
    }
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let Some((resource, perms)) = rest.rsplit_once('.') else {
        return Err(format!(
            "{scope:?}: expected {context}/Resource.permissions"
        ));
    };
    let resource_ok = resource == "*"
        || (resource
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
            && resource.chars().all(|c| c.is_ascii_alphanumeric()));
    if !resource_ok {
        return Err(format!(
            "{scope:?}: {resource:?} is not a FHIR resource type or *"
        ));
    }
    let v1 = matches!(perms, "read" | "write" | "*");
    let v2 = !perms.is_empty()
        && perms.chars().all(|c| "cruds".contains(c))
        && perms
            .chars()
            .map(|c| "cruds".find(c))
            .collect::<Vec<_>>()
            .windows(2)
            .all(|w| w[0] < w[1]);
    if v1 || v2 {
        Ok(())
    } else {
        Err(format!(
            "{scope:?}: permissions must be read, write or * (SMART v1) or letters of cruds in that order (SMART v2)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(scopes: &[&str]) -> SmartRegistration {
        SmartRegistration {
            issuers: vec!["https://ehr.example.com/fhir/".into()],
            client_id: "c".into(),
            client_type: ClientType::Public,
            client_secret: None,
            signing_alg: "RS384".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            vendor: Vendor::Generic,
            app_url: "https://app.example.com/launch".into(),
            backend: None,
        }
    }

    #[test]
    fn v1_and_v2_scopes_are_accepted_and_malformed_ones_named() {
        for ok in [
            "patient/*.read",
            "user/Observation.write",
            "patient/Patient.rs",
            "patient/Observation.rs?category=laboratory",
            "system/*.cruds",
            "openid",
            "fhirUser",
            "launch/patient",
            "offline_access",
        ] {
            assert!(check_scope(ok).is_ok(), "{ok}");
        }
        for bad in [
            "patient/Patient.sr",
            "patient/patient.read",
            "user/Observation",
            "patient/*.rw",
            "a b",
        ] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_launch_scope_follows_the_kind_of_launch() {
        let r = reg(&["openid", "fhirUser", "patient/Patient.rs"]);
        assert_eq!(
            r.scope_for(true),
            "launch openid fhirUser patient/Patient.rs"
        );
        assert_eq!(
            r.scope_for(false),
            "launch/patient openid fhirUser patient/Patient.rs"
        );
        let r = reg(&["launch", "patient/*.read"]);
        assert_eq!(r.scope_for(true), "launch patient/*.read");
        assert_eq!(r.scope_for(false), "launch/patient patient/*.read");
    }

    /// The registration: `launch/encounter` without `launch/patient` sent no patient
    /// scope on a standalone launch, and the launch came back with `patient: null`.
    #[test]
    fn a_standalone_launch_asks_for_a_patient_whenever_it_needs_one() {
        let r = reg(&["launch/encounter", "openid", "patient/Observation.rs"]);
        assert_eq!(
            r.scope_for(false),
            "launch/patient launch/encounter openid patient/Observation.rs"
        );
        // The EHR launch carries its own context: one `launch`, no standalone scopes.
        assert_eq!(r.scope_for(true), "launch openid patient/Observation.rs");
        // An encounter belongs to a patient even for a user-level app.
        let r = reg(&["launch/encounter", "user/Encounter.rs"]);
        assert_eq!(
            r.scope_for(false),
            "launch/patient launch/encounter user/Encounter.rs"
        );
        // A patient/ scope obliges the EHR to establish a patient: ask for it.
        let r = reg(&["launch/location", "patient/Patient.rs"]);
        assert_eq!(
            r.scope_for(false),
            "launch/patient launch/location patient/Patient.rs"
        );
        // Other context only, no patient data: sent as registered, nothing added.
        let r = reg(&["launch/location", "user/Location.rs"]);
        assert_eq!(r.scope_for(false), "launch/location user/Location.rs");
        assert_eq!(r.scope_for(true), "launch user/Location.rs");
        // Listed already: sent once, first.
        let r = reg(&["openid", "launch/patient", "patient/Patient.rs"]);
        assert_eq!(
            r.scope_for(false),
            "launch/patient openid patient/Patient.rs"
        );
    }

    /// Every scope goes out once, however the registration repeats it or mixes launch
    /// scopes (a consecutive-only dedup sent `launch openid launch` before).
    #[test]
    fn no_scope_is_sent_twice() {
        let r = reg(&[
            "launch/patient",
            "openid",
            "launch/encounter",
            "openid",
            "launch",
        ]);
        assert_eq!(r.scope_for(true), "launch openid");
        assert_eq!(r.scope_for(false), "launch/patient openid launch/encounter");
    }

    #[test]
    fn issuers_match_exactly_apart_from_a_trailing_slash() {
        let r = reg(&["openid"]);
        assert!(r.issuer("https://ehr.example.com/fhir").is_some());
        assert!(r.issuer("https://ehr.example.com/fhir/").is_some());
        assert!(r.issuer("https://ehr.example.com/fhir/other").is_none());
        assert!(r.issuer("https://ehr.example.com/FHIR").is_none());
    }

    #[test]
    fn a_symmetric_client_without_a_secret_is_a_problem() {
        let mut r = reg(&["openid"]);
        r.client_type = ClientType::ConfidentialSymmetric;
        let p = r.problems(PartnerKind::Ehr);
        assert!(p.iter().any(|(f, _)| f == "client_secret"), "{p:?}");
        assert!(reg(&["openid"]).problems(PartnerKind::Ehr).is_empty());
        assert!(!reg(&["openid"]).problems(PartnerKind::Lms).is_empty());
    }
}
