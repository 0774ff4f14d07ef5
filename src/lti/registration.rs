//! A partner's LTI registration, as written under `[partners.lti]`: the platforms (LMS
//! instances) it launches from, the app URL, and the content items offered to Deep Linking.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{PartnerKind, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LtiRegistration {
    /// Where the user is sent after the launch, with `?code=<one-time code>` appended.
    pub app_url: String,
    #[serde(default)]
    pub platforms: Vec<PlatformConfig>,
    /// What the Deep Linking picker offers (empty: the app chooses; see README).
    #[serde(default)]
    pub content_items: Vec<ContentItem>,
    /// LTI 1.1 consumers (legacy LMSs): key and shared secret.
    #[serde(default)]
    pub lti11: Vec<Lti11Consumer>,
}

/// One LTI 1.3 platform registration (issuer + client id), with the deployments that
/// belong to this partner.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    pub issuer: String,
    pub client_id: String,
    /// Blackboard uses one issuer and client id for every customer: the deployment tells
    /// the tenants apart, so a launch from an unlisted deployment is refused.
    pub deployment_ids: Vec<String>,
    /// OIDC authorization endpoint (the "auth login URL").
    pub auth_url: String,
    pub token_url: String,
    pub jwks_url: String,
    /// The `aud` of client assertions when it is not the token URL (D2L).
    #[serde(default)]
    pub token_audience: Option<String>,
    #[serde(default)]
    pub vendor: LmsVendor,
    /// The LTI 1.1 consumer key (one of this partner's `lti11` consumers) this platform
    /// used before moving to 1.3: its secret verifies the `lti1p1` migration claim, which
    /// makes a learner's 1.1 and 1.3 launches one person. Unset: claims are ignored.
    #[serde(default)]
    pub lti11_consumer_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LmsVendor {
    Canvas,
    Moodle,
    Blackboard,
    D2l,
    #[default]
    Generic,
}

impl LmsVendor {
    pub fn as_str(self) -> &'static str {
        match self {
            LmsVendor::Canvas => "canvas",
            LmsVendor::Moodle => "moodle",
            LmsVendor::Blackboard => "blackboard",
            LmsVendor::D2l => "d2l",
            LmsVendor::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> LmsVendor {
        match s {
            "canvas" => LmsVendor::Canvas,
            "moodle" => LmsVendor::Moodle,
            "blackboard" => LmsVendor::Blackboard,
            "d2l" => LmsVendor::D2l,
            _ => LmsVendor::Generic,
        }
    }
}

/// A Deep Linking content item (LTI DL 2.0 `ltiResourceLink` or `link`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContentItem {
    pub title: String,
    #[serde(default = "default_item_type", rename = "type")]
    pub item_type: String,
    /// The launch URL (`ltiResourceLink`, defaults to the tool's launch URL) or the link.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// Custom parameters the platform sends back on launches of this item.
    #[serde(default)]
    pub custom: Map<String, Value>,
    /// Create a gradebook column with this maximum score.
    #[serde(default)]
    pub score_maximum: Option<f64>,
}

fn default_item_type() -> String {
    "ltiResourceLink".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lti11Consumer {
    pub consumer_key: String,
    pub shared_secret: Secret,
}

impl LtiRegistration {
    /// Every problem, as (field relative to `lti.`, message).
    pub fn problems(&self, kind: PartnerKind) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if kind != PartnerKind::Lms {
            out.push((
                "(section)".into(),
                "an LTI registration belongs to a partner of kind \"lms\"".into(),
            ));
        }
        if let Err(e) = crate::http::page::redirect_target(&self.app_url) {
            out.push(("app_url".into(), e));
        }
        for (i, p) in self.platforms.iter().enumerate() {
            let f = |name: &str| format!("platforms[{i}].{name}");
            if p.issuer.trim().is_empty() {
                out.push((f("issuer"), "must not be empty".into()));
            }
            if p.client_id.trim().is_empty() {
                out.push((f("client_id"), "must not be empty".into()));
            }
            if p.deployment_ids.is_empty() {
                out.push((
                    f("deployment_ids"),
                    "list the deployment ids of this partner".into(),
                ));
            }
            for (name, url) in [
                ("auth_url", &p.auth_url),
                ("token_url", &p.token_url),
                ("jwks_url", &p.jwks_url),
            ] {
                if let Err(e) = crate::outbound::parse_http_url(url) {
                    out.push((f(name), e));
                }
            }
            if let Some(a) = &p.token_audience
                && a.trim().is_empty()
            {
                out.push((f("token_audience"), "must not be empty when set".into()));
            }
            if let Some(k) = &p.lti11_consumer_key
                && !self.lti11.iter().any(|c| &c.consumer_key == k)
            {
                out.push((
                    f("lti11_consumer_key"),
                    format!(
                        "{k:?} is not one of this partner's [[partners.lti.lti11]] consumers: \
                         declare it there with its shared_secret, which verifies the migration claim"
                    ),
                ));
            }
        }
        for (i, c) in self.content_items.iter().enumerate() {
            if !matches!(c.item_type.as_str(), "ltiResourceLink" | "link") {
                out.push((
                    format!("content_items[{i}].type"),
                    format!("{:?}: use ltiResourceLink or link", c.item_type),
                ));
            }
            if c.item_type == "link" && c.url.is_none() {
                out.push((
                    format!("content_items[{i}].url"),
                    "a link needs a url".into(),
                ));
            }
            if let Some(u) = &c.url
                && let Err(e) = crate::outbound::parse_http_url(u)
            {
                out.push((format!("content_items[{i}].url"), e));
            }
            if let Some(m) = c.score_maximum
                && !(m > 0.0 && m.is_finite())
            {
                out.push((
                    format!("content_items[{i}].score_maximum"),
                    "must be above 0".into(),
                ));
            }
        }
        for (i, c) in self.lti11.iter().enumerate() {
            if c.consumer_key.trim().is_empty() {
                out.push((
                    format!("lti11[{i}].consumer_key"),
                    "must not be empty".into(),
                ));
            }
            if c.shared_secret.expose().len() < 16 {
                out.push((
                    format!("lti11[{i}].shared_secret"),
                    "must be at least 16 characters".into(),
                ));
            }
        }
        out
    }
}
