//! A mock LMS on loopback: an LTI 1.3 Advantage platform (OIDC third-party-initiated launch,
//! Assignment and Grade Services 2.0, Names and Role Provisioning Services 2.0, Deep Linking
//! 2.0, Dynamic Registration 1.0) and an LTI 1.1 consumer (Basic Outcomes with OAuth 1.0a
//! body signing), shaped like Moodle, Canvas, Blackboard Learn, D2L Brightspace or a plain
//! platform.
//!
//! The gateway's tests and benchmarks start one with [`MockLms::start`], register the gateway
//! as a tool ([`MockTool`]), and drive the browser steps by hand: [`MockLms::login_initiation`]
//! gives the request the LMS would make the browser send to the tool's login URL; the tool
//! redirects to [`MockLms::auth_url`], which answers an auto-submitting form
//! ([`parse_auto_post_form`]) that carries the signed `id_token` to the tool.
//!
//! Faithful to the specs and to the vendor quirks that bite tools in practice: Canvas's fixed
//! issuer and `lti_storage_target`, Moodle's `?type_id=` line item URLs, 60 s id_tokens and
//! 409 on a score not newer than the stored one (at one-second resolution), D2L's separate
//! token audience and 422 for users who cannot be graded, RS256-only client assertions.
//! Defects can be queued ([`LaunchFault`], [`AgsFault`]) and every token request, score,
//! deep-linking response and registration is recorded for assertions.
//!
//! Layout: `oidc` (login initiation, auth endpoint, id_token), `token` (client credentials
//! and the verification of tool-signed JWTs), `ags`, `nrps`, `deep_linking`, `registration`
//! (dynamic registration and the OpenID configuration), `lti11` (launch signing, outcomes),
//! `data` (courses, members, line items, gradebook).

mod ags;
mod data;
mod deep_linking;
mod gradebook;
mod lti11;
mod nrps;
mod oidc;
mod registration;
mod token;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use crate::util::{lock, now_secs, parse_form, random_token};
use anyhow::Context as _;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

/// LIS v2 context role of a student: the role LMSs grade.
pub const ROLE_LEARNER: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner";
/// LIS v2 context role of a teacher.
pub const ROLE_INSTRUCTOR: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor";
/// LIS v2 institution role of an administrator.
pub const ROLE_INSTITUTION_ADMIN: &str =
    "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator";

/// The claim names of LTI 1.3 messages and the scope names of its services.
pub mod claim {
    pub const MESSAGE_TYPE: &str = "https://purl.imsglobal.org/spec/lti/claim/message_type";
    pub const VERSION: &str = "https://purl.imsglobal.org/spec/lti/claim/version";
    pub const DEPLOYMENT_ID: &str = "https://purl.imsglobal.org/spec/lti/claim/deployment_id";
    pub const TARGET_LINK_URI: &str = "https://purl.imsglobal.org/spec/lti/claim/target_link_uri";
    pub const ROLES: &str = "https://purl.imsglobal.org/spec/lti/claim/roles";
    pub const CONTEXT: &str = "https://purl.imsglobal.org/spec/lti/claim/context";
    pub const RESOURCE_LINK: &str = "https://purl.imsglobal.org/spec/lti/claim/resource_link";
    pub const LAUNCH_PRESENTATION: &str =
        "https://purl.imsglobal.org/spec/lti/claim/launch_presentation";
    pub const CUSTOM: &str = "https://purl.imsglobal.org/spec/lti/claim/custom";
    pub const TOOL_PLATFORM: &str = "https://purl.imsglobal.org/spec/lti/claim/tool_platform";
    pub const LIS: &str = "https://purl.imsglobal.org/spec/lti/claim/lis";
    pub const AGS_ENDPOINT: &str = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint";
    pub const NRPS: &str = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice";
    pub const DL_SETTINGS: &str =
        "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings";
    pub const DL_CONTENT_ITEMS: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/content_items";
    pub const DL_DATA: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/data";
    pub const CANVAS_PLACEMENT: &str = "https://www.instructure.com/placement";
    pub const LTI11_LEGACY_USER_ID: &str =
        "https://purl.imsglobal.org/spec/lti/claim/lti11_legacy_user_id";
    pub const LTI1P1: &str = "https://purl.imsglobal.org/spec/lti/claim/lti1p1";
    pub const TOOL_CONFIGURATION: &str = "https://purl.imsglobal.org/spec/lti-tool-configuration";
    pub const PLATFORM_CONFIGURATION: &str =
        "https://purl.imsglobal.org/spec/lti-platform-configuration";

    pub const SCOPE_LINEITEM: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem";
    pub const SCOPE_LINEITEM_READONLY: &str =
        "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly";
    pub const SCOPE_RESULT_READONLY: &str =
        "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly";
    pub const SCOPE_SCORE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
    pub const SCOPE_NRPS: &str =
        "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly";
}

/// The AGS media types (AGS 2.0 §3.2, §3.3, §3.4, §3.5) and NRPS's (NRPS 2.0 §2.2).
pub mod media_type {
    pub const LINEITEM_CONTAINER: &str = "application/vnd.ims.lis.v2.lineitemcontainer+json";
    pub const LINEITEM: &str = "application/vnd.ims.lis.v2.lineitem+json";
    pub const SCORE: &str = "application/vnd.ims.lis.v1.score+json";
    pub const RESULT_CONTAINER: &str = "application/vnd.ims.lis.v2.resultcontainer+json";
    pub const MEMBERSHIP_CONTAINER: &str =
        "application/vnd.ims.lti-nrps.v2.membershipcontainer+json";
}

/// Every scope the platform grants.
const SUPPORTED_SCOPES: [&str; 5] = [
    claim::SCOPE_LINEITEM,
    claim::SCOPE_LINEITEM_READONLY,
    claim::SCOPE_RESULT_READONLY,
    claim::SCOPE_SCORE,
    claim::SCOPE_NRPS,
];

/// How long a login initiation stays redeemable at the auth endpoint.
const LAUNCH_TTL_SECS: u64 = 600;
/// Access token lifetime (all four vendors answer 3600).
const ACCESS_TOKEN_SECS: u64 = 3600;
/// Clock skew tolerated on `exp` and `iat` of tool-signed JWTs.
const LEEWAY_SECS: u64 = 5;
/// Recorded token requests kept; older ones are dropped so benchmarks run in flat memory.
const TOKEN_LOG_CAP: usize = 1000;

/// Which LMS the mock imitates: URL layout, issuer, claims, service quirks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Personality {
    Moodle,
    Canvas,
    Blackboard,
    D2l,
    #[default]
    Generic,
}

impl Personality {
    pub const ALL: [Personality; 5] = [
        Personality::Moodle,
        Personality::Canvas,
        Personality::Blackboard,
        Personality::D2l,
        Personality::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Personality::Moodle => "moodle",
            Personality::Canvas => "canvas",
            Personality::Blackboard => "blackboard",
            Personality::D2l => "d2l",
            Personality::Generic => "generic",
        }
    }

    /// `tool_platform.product_family_code`, as each vendor sends it.
    pub fn product_family_code(self) -> &'static str {
        match self {
            Personality::Moodle => "moodle",
            Personality::Canvas => "canvas",
            Personality::Blackboard => "BlackboardLearn",
            Personality::D2l => "desire2learn",
            Personality::Generic => "mock-lms",
        }
    }
}

/// A tool registration in the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockTool {
    pub client_id: String,
    pub deployment_ids: Vec<String>,
    /// The tool's OIDC login initiation URL.
    pub login_url: String,
    /// Compared exactly at the auth endpoint, as the vendors do.
    pub redirect_uris: Vec<String>,
    /// The default launch URL.
    pub target_link_uri: String,
    /// The tool's JWKS: client assertions and deep-linking responses are verified with it.
    pub jwks_url: String,
    /// `(consumer key, shared secret)` for LTI 1.1.
    pub lti11: Option<(String, String)>,
    /// The 1.3 tool replaces the 1.1 tool of `lti11` (Canvas: associated through the
    /// developer key; Moodle: the tool keeps the 1.1 key and secret): launches carry the
    /// signed `lti1p1` migration claim naming the learner's 1.1 `user_id`.
    pub migrated_from_lti11: bool,
}

impl MockTool {
    /// The gateway's endpoints under `tool_base`: `/lti/login`, `/lti/launch`,
    /// `/.well-known/jwks.json`.
    pub fn gateway(client_id: &str, deployment_id: &str, tool_base: &str) -> MockTool {
        let base = tool_base.trim_end_matches('/');
        MockTool {
            client_id: client_id.to_owned(),
            deployment_ids: vec![deployment_id.to_owned()],
            login_url: format!("{base}/lti/login"),
            redirect_uris: vec![format!("{base}/lti/launch")],
            target_link_uri: format!("{base}/lti/launch"),
            jwks_url: format!("{base}/.well-known/jwks.json"),
            lti11: None,
            migrated_from_lti11: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MockLmsOptions {
    pub personality: Personality,
    pub tools: Vec<MockTool>,
    /// NRPS page size when the tool sends no `limit` (default 2, so paging shows up early).
    pub page_size: usize,
    /// Whether launches offer the AGS result service (`result.readonly`); default true, as
    /// Moodle, Canvas and Blackboard do. Off, a tool cannot read back what was stored.
    pub results_service: bool,
}

impl MockLmsOptions {
    pub fn new(personality: Personality, tools: Vec<MockTool>) -> MockLmsOptions {
        MockLmsOptions {
            personality,
            tools,
            page_size: 2,
            results_service: true,
        }
    }
}

impl Default for MockLmsOptions {
    fn default() -> MockLmsOptions {
        MockLmsOptions::new(Personality::Generic, Vec::new())
    }
}

/// A person in the LMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockUser {
    pub sub: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Full LIS v2 role URIs (e.g. [`ROLE_LEARNER`]).
    pub roles: Vec<String>,
    /// The `user_id` of this person's LTI 1.1 launches when it is not what the personality
    /// derives ([`MockUser::lti11_user_id`]): a user whose 1.1 id came from elsewhere (an
    /// earlier LMS, an imported account).
    pub lti11_id: Option<String>,
}

impl MockUser {
    pub fn new(sub: &str, name: &str, roles: &[&str]) -> MockUser {
        let email = format!(
            "{}@example.edu",
            sub.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
        );
        MockUser {
            sub: sub.to_owned(),
            name: Some(name.to_owned()),
            email: Some(email),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            lti11_id: None,
        }
    }

    /// This person with `id` as their LTI 1.1 `user_id`.
    pub fn with_lti11_id(mut self, id: &str) -> MockUser {
        self.lti11_id = Some(id.to_owned());
        self
    }

    /// The `user_id` this person has in the LMS's LTI 1.1 launches: Canvas gives 1.1 tools
    /// an opaque id (the one it repeats as `lti11_legacy_user_id` in 1.3 launches); Moodle
    /// uses the same user id in both versions (so do the other personalities here).
    pub fn lti11_user_id(&self, personality: Personality) -> String {
        if let Some(id) = &self.lti11_id {
            return id.clone();
        }
        match personality {
            Personality::Canvas => {
                use sha2::Digest;
                format!("{:x}", sha2::Sha256::digest(self.sub.as_bytes()))
            }
            _ => self.sub.clone(),
        }
    }

    pub fn learner(sub: &str) -> MockUser {
        MockUser::new(sub, &format!("Student {sub}"), &[ROLE_LEARNER])
    }

    pub fn instructor(sub: &str) -> MockUser {
        MockUser::new(sub, &format!("Teacher {sub}"), &[ROLE_INSTRUCTOR])
    }

    /// LMSs grade learners only (Moodle's `gradebookroles` default is "student").
    pub fn is_gradable(&self) -> bool {
        self.roles.iter().any(|r| {
            r == ROLE_LEARNER
                || r.starts_with("http://purl.imsglobal.org/vocab/lis/v2/membership/Learner#")
                || r == "Learner"
        })
    }

    pub(crate) fn given_family(&self) -> (Option<String>, Option<String>) {
        match self.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => match name.rsplit_once(' ') {
                Some((given, family)) => (Some(given.to_owned()), Some(family.to_owned())),
                None => (Some(name.to_owned()), None),
            },
            _ => (None, None),
        }
    }
}

/// The LTI message a launch carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `LtiResourceLinkRequest` for the resource link `id`.
    ResourceLink { id: String, title: Option<String> },
    /// `LtiDeepLinkingRequest`. Without `return_url` the platform makes one under its base
    /// URL and verifies the response posted there.
    DeepLinking {
        return_url: Option<String>,
        data: Option<String>,
    },
}

/// What the user clicked in the LMS.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub client_id: String,
    pub deployment_id: String,
    pub user: MockUser,
    pub context_id: String,
    pub message: Message,
    pub custom: serde_json::Map<String, Value>,
    /// Overrides the tool's default `target_link_uri`.
    pub target_link_uri: Option<String>,
    /// The `login_hint` sent at login initiation; the user's `sub` when unset. Platforms
    /// such as Canvas send an opaque value instead.
    pub login_hint: Option<String>,
}

impl LaunchSpec {
    pub fn resource_link(
        client_id: &str,
        deployment_id: &str,
        user: MockUser,
        context_id: &str,
        link_id: &str,
    ) -> LaunchSpec {
        LaunchSpec {
            client_id: client_id.to_owned(),
            deployment_id: deployment_id.to_owned(),
            user,
            context_id: context_id.to_owned(),
            message: Message::ResourceLink {
                id: link_id.to_owned(),
                title: Some(format!("Activity {link_id}")),
            },
            custom: serde_json::Map::new(),
            target_link_uri: None,
            login_hint: None,
        }
    }

    pub fn deep_linking(
        client_id: &str,
        deployment_id: &str,
        user: MockUser,
        context_id: &str,
        data: Option<&str>,
    ) -> LaunchSpec {
        LaunchSpec {
            message: Message::DeepLinking {
                return_url: None,
                data: data.map(str::to_owned),
            },
            ..LaunchSpec::resource_link(client_id, deployment_id, user, context_id, "")
        }
    }
}

/// The third-party-initiated login request the LMS makes the browser send to the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginInitiation {
    /// The tool's login URL.
    pub url: String,
    /// `iss`, `login_hint`, `target_link_uri`, `lti_message_hint`, `client_id`,
    /// `lti_deployment_id`, and the vendor's extras (Canvas: `deployment_id`,
    /// `canvas_region`, `canvas_environment`, `lti_storage_target`).
    pub params: Vec<(String, String)>,
    /// A form POST (Canvas, Moodle) rather than a GET with a query (Blackboard, D2L,
    /// Generic).
    pub post: bool,
}

impl LoginInitiation {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The URL with the parameters in its query: what a GET initiation requests.
    pub fn get_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) => {
                url.query_pairs_mut().extend_pairs(&self.params);
                url.into()
            }
            Err(_) => self.url.clone(),
        }
    }
}

/// A defect to put in the next id_token the auth endpoint issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchFault {
    /// No `kid` in the JOSE header.
    NoKid,
    /// A `kid` the platform's JWKS does not have.
    UnknownKid,
    /// `version` is `1.2.0`.
    WrongVersion,
    MissingMessageType,
    MissingRoles,
    MissingDeploymentId,
    MissingResourceLink,
    MissingSub,
    /// Issued two hours ago, expired an hour ago.
    ExpiredIat,
    /// Issued an hour from now.
    FutureIat,
    /// `aud` is another client's id.
    WrongAud,
    /// `{"alg":"none"}` and an empty signature.
    AlgNone,
    /// A deployment id the tool does not know.
    UnregisteredDeployment,
    /// Signed by another key that carries the published `kid`.
    BadSignature,
}

/// What the platform's dynamic registration does wrong, for hostile tests: it holds for
/// every configuration served until [`MockLms::set_registration_fault`] clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationFault {
    /// The OpenID configuration names this issuer (another platform's) instead of its own.
    Issuer(String),
    /// The OpenID configuration sends the tool to register at this URL.
    RegistrationEndpoint(String),
    /// The registration is refused with this error code, in the platform's style (Moodle:
    /// an HTML body with the code; the others: an OAuth error JSON).
    Refuse(String),
}

/// A failure queued for the next score posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgsFault {
    /// The next `count` score posts fail with `status` (and `Retry-After` when given).
    Status {
        status: u16,
        retry_after: Option<u64>,
        count: usize,
    },
    /// The next score post is for a user who cannot be graded: Moodle 400, Canvas and D2L
    /// 422, Blackboard 400, Generic 422; an LTI 1.1 `replaceResult` gets a POX `failure`.
    NotGradable,
    /// The next `count` score posts (AGS or LTI 1.1 `replaceResult`) are answered only after
    /// `delay`. With `stored`, the score is kept first: past the tool's timeout its answer
    /// is lost while the grade sits in the gradebook (a slow Moodle, or a tool that crashed
    /// waiting). Without, nothing is kept and the late answer is a 504.
    Hold {
        delay: Duration,
        stored: bool,
        count: usize,
    },
}

/// A score the platform kept.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedScore {
    /// The line item's URL (its `id`).
    pub line_item: String,
    pub user_id: String,
    /// `None` when no score was given, or (Moodle) when grading is not `FullyGraded`:
    /// Moodle then clears the grade.
    pub score_given: Option<f64>,
    pub score_maximum: Option<f64>,
    pub timestamp: String,
    pub activity_progress: String,
    pub grading_progress: String,
    pub comment: Option<String>,
}

/// A token endpoint request, as received (assertions included: the mock is a test double).
#[derive(Debug, Clone)]
pub struct RecordedTokenRequest {
    pub grant_type: String,
    pub scope: Option<String>,
    pub assertion_header: Option<Value>,
    pub assertion_claims: Option<Value>,
    pub form: BTreeMap<String, String>,
}

/// An auto-submitting HTML form, as the auth endpoint and the LMS's launch pages answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPostForm {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

impl AutoPostForm {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse the first `<form>` of a page: its `action` and its `<input name=.. value=..>`s
/// (HTML-unescaped). Enough for the pages this mock writes; not a general HTML parser.
pub fn parse_auto_post_form(html: &str) -> Option<AutoPostForm> {
    let start = html.find("<form")?;
    let rest = &html[start..];
    let tag_end = rest.find('>')?;
    let action = attribute(&rest[..tag_end], "action")?;
    let body = &rest[tag_end..];
    let body = &body[..body.find("</form>").unwrap_or(body.len())];
    let mut fields = Vec::new();
    let mut cursor = body;
    while let Some(i) = cursor.find("<input") {
        let after = &cursor[i..];
        let close = after.find('>').unwrap_or(after.len());
        let tag = &after[..close];
        if let Some(name) = attribute(tag, "name") {
            fields.push((name, attribute(tag, "value").unwrap_or_default()));
        }
        cursor = &after[close..];
    }
    Some(AutoPostForm { action, fields })
}

/// A double-quoted attribute of a tag, unescaped.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(html_unescape(&tag[start..start + len]))
}

/// A running mock LMS; it stops serving when dropped.
pub struct MockLms {
    shared: Arc<Shared>,
    _server: crate::util::Served,
}

impl MockLms {
    /// Bind `127.0.0.1:0`, generate the signing key and serve until dropped.
    pub async fn start(opts: MockLmsOptions) -> anyhow::Result<MockLms> {
        let (listener, addr) = crate::util::bind_loopback("mock LMS").await?;
        // Key generation is CPU-bound; keep it off the async workers.
        let signer = tokio::task::spawn_blocking(Signer::generate)
            .await
            .context("signing key generation panicked")??;
        let shared = Arc::new(Shared::new(opts, addr, signer)?);
        let app = router(shared.clone());
        let _server = crate::util::serve(listener, app, "mock LMS server");
        Ok(MockLms { shared, _server })
    }

    pub fn personality(&self) -> Personality {
        self.shared.personality
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// The `iss` of id_tokens. Canvas: `https://canvas.instructure.com` and Blackboard:
    /// `https://blackboard.com`, whatever the host (as their cloud services do); the others
    /// use the base URL, as a Moodle site's `wwwroot` or a Brightspace domain.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn auth_url(&self) -> String {
        self.shared.url(&self.shared.paths.auth)
    }

    pub fn token_url(&self) -> String {
        self.shared.url(&self.shared.paths.token)
    }

    pub fn jwks_url(&self) -> String {
        self.shared.url(&self.shared.paths.jwks)
    }

    /// The `aud` client assertions must carry: D2L's is not its token URL.
    pub fn token_audience(&self) -> String {
        self.shared.token_audience()
    }

    /// Where the platform's OpenID configuration is served (also at
    /// `/.well-known/openid-configuration`).
    pub fn openid_configuration_url(&self) -> String {
        self.shared.url(&self.shared.paths.openid_configuration)
    }

    pub fn registration_url(&self) -> String {
        self.shared.url(&self.shared.paths.registration)
    }

    /// The LTI 1.1 Basic Outcomes service URL (`lis_outcome_service_url`).
    pub fn lti11_outcomes_url(&self) -> String {
        self.shared.url(lti11::OUTCOMES_PATH)
    }

    /// The tools registered so far (configured and dynamically registered).
    pub fn tools(&self) -> Vec<MockTool> {
        lock(&self.shared.tools)
            .iter()
            .map(|t| t.tool.clone())
            .collect()
    }

    /// Store the launch under an opaque `lti_message_hint` (single use, ten minutes) and
    /// return the login initiation the LMS would send to the tool.
    pub fn login_initiation(&self, spec: LaunchSpec) -> LoginInitiation {
        oidc::login_initiation(&self.shared, spec)
    }

    /// The next id_token issued has this defect (faults queue up in order).
    /// Turn the migration claim of every tool with an LTI 1.1 consumer on or off, as an
    /// administrator associating (Canvas) or converting (Moodle) the tool would.
    pub fn set_migrated_from_lti11(&self, on: bool) {
        for t in lock(&self.shared.tools).iter_mut() {
            t.tool.migrated_from_lti11 = on && t.tool.lti11.is_some();
        }
    }

    /// Associate every tool, dynamically registered ones included, with the LTI 1.1
    /// consumer `(key, secret)` they replace: launches carry the signed migration claim.
    pub fn associate_lti11(&self, key: &str, secret: &str) {
        for t in lock(&self.shared.tools).iter_mut() {
            t.tool.lti11 = Some((key.to_owned(), secret.to_owned()));
            t.tool.migrated_from_lti11 = true;
        }
    }

    pub fn inject_launch(&self, fault: LaunchFault) {
        lock(&self.shared.launch_faults).push_back(fault);
    }

    pub fn inject_ags(&self, fault: AgsFault) {
        // A fault for no request at all would sit in the queue forever.
        if matches!(
            fault,
            AgsFault::Status { count: 0, .. } | AgsFault::Hold { count: 0, .. }
        ) {
            return;
        }
        lock(&self.shared.ags_faults).push_back(fault);
    }

    /// Make a new id_token signing key current; the old one stays in the JWKS. Returns the
    /// new `kid`.
    pub async fn rotate_key(&self) -> anyhow::Result<String> {
        let signer = tokio::task::spawn_blocking(Signer::generate)
            .await
            .context("signing key generation panicked")??;
        let kid = signer.kid.clone();
        let mut keys = lock(&self.shared.keys);
        let old = std::mem::replace(&mut keys.current, Arc::new(signer));
        keys.retired.push(old.public_jwk.clone());
        Ok(kid)
    }

    /// The `kid` id_tokens are signed with now.
    pub fn signing_kid(&self) -> String {
        lock(&self.shared.keys).current.kid.clone()
    }

    /// The JWKS served at [`MockLms::jwks_url`].
    pub fn jwks(&self) -> Value {
        self.shared.jwks()
    }

    /// The course's line items container URL, as the AGS claim gives it (Moodle:
    /// `?type_id=` of the first tool; D2L: under the first tool's first deployment).
    pub fn context_lineitems_url(&self, context_id: &str) -> String {
        let at = self.shared.default_url_ctx();
        self.shared.lineitems_url(context_id, &at)
    }

    /// The course's NRPS membership URL.
    pub fn memberships_url(&self, context_id: &str) -> String {
        let at = self.shared.default_url_ctx();
        self.shared.memberships_url(context_id, &at)
    }

    /// Enrol `user` in the course (replacing an enrolment with the same `sub`). A launch
    /// enrols its user too.
    pub fn add_member(&self, context_id: &str, user: MockUser) {
        lock(&self.shared.data).add_member(context_id, user);
    }

    /// A line item the LMS made itself (a graded activity), optionally bound to a resource
    /// link: launches of that link then carry its URL in the AGS claim. Returns its URL.
    pub fn create_lineitem(
        &self,
        context_id: &str,
        label: &str,
        score_maximum: f64,
        resource_link_id: Option<&str>,
    ) -> String {
        let mut fields = serde_json::Map::new();
        fields.insert("label".into(), json!(label));
        fields.insert("scoreMaximum".into(), json!(score_maximum));
        if let Some(link) = resource_link_id {
            fields.insert("resourceLinkId".into(), json!(link));
        }
        let num = lock(&self.shared.data).create_item(context_id, fields, None);
        let at = self.shared.default_url_ctx();
        self.shared.lineitem_url(context_id, num, &at)
    }

    /// The course's gradebook page (HTML), as a teacher sees it.
    pub fn gradebook_url(&self, context_id: &str) -> String {
        self.shared
            .url(&gradebook::PATH.replace("{ctx}", context_id))
    }

    /// Every score the platform kept for the course, oldest first.
    pub fn gradebook(&self, context_id: &str) -> Vec<RecordedScore> {
        lock(&self.shared.data).gradebook(context_id)
    }

    /// The course's line items as the AGS container would show them.
    pub fn lineitems(&self, context_id: &str) -> Vec<Value> {
        let at = self.shared.default_url_ctx();
        let data = lock(&self.shared.data);
        data.items(context_id)
            .iter()
            .map(|item| ags::lineitem_json(&self.shared, context_id, item, &at))
            .collect()
    }

    /// The last (up to) 1000 token requests, oldest first.
    pub fn token_requests(&self) -> Vec<RecordedTokenRequest> {
        lock(&self.shared.token_log).iter().cloned().collect()
    }

    /// The verified claims of every deep-linking response the platform accepted.
    pub fn deep_link_responses(&self) -> Vec<Value> {
        lock(&self.shared.deep_links).accepted.clone()
    }

    /// Make a one-time registration token and return the tool's registration URL with
    /// `openid_configuration` and `registration_token` added to its query.
    pub fn dynamic_registration_url(&self, tool_register_url: &str) -> String {
        registration::initiation_url(&self.shared, tool_register_url)
    }

    /// The client metadata tools POSTed to the registration endpoint and the platform
    /// accepted, in order.
    pub fn registrations(&self) -> Vec<Value> {
        lock(&self.shared.registration).accepted.clone()
    }

    /// How many times the OpenID configuration was read, and how many registrations were
    /// POSTed (accepted or not).
    pub fn registration_requests(&self) -> (usize, usize) {
        let state = lock(&self.shared.registration);
        (state.configuration_reads, state.registration_posts)
    }

    /// Serve a hostile configuration from now on (`None`: the platform's own again).
    pub fn set_registration_fault(&self, fault: Option<RegistrationFault>) {
        lock(&self.shared.registration).fault = fault;
    }

    /// A signed LTI 1.1 Basic LTI launch form for the tool registered with `consumer_key`
    /// (enrols the user as a 1.3 launch would).
    pub fn lti11_launch(
        &self,
        tool_url: &str,
        consumer_key: &str,
        user: MockUser,
        context_id: &str,
        resource_link_id: &str,
    ) -> Vec<(String, String)> {
        lti11::launch(
            &self.shared,
            tool_url,
            consumer_key,
            user,
            context_id,
            resource_link_id,
        )
    }

    /// Every `lis_result_sourcedid` an outcome was written for, with its grade (`None`
    /// once deleted), in the order first written.
    pub fn lti11_grades(&self) -> Vec<(String, Option<f64>)> {
        lock(&self.shared.lti11).grades()
    }
}

/// Paths (relative to the base URL) of the platform's endpoints. Service paths are axum
/// route patterns: `{ctx}` course, `{id}` line item, `{dep}` deployment, `{type}` Moodle's
/// tool type id.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub auth: String,
    pub token: String,
    pub jwks: String,
    pub openid_configuration: String,
    pub registration: String,
    pub lineitems: String,
    pub lineitem: String,
    pub memberships: String,
    /// Moodle puts `type_id` in the query of its line item URLs.
    pub type_id_query: bool,
}

impl Paths {
    fn for_personality(p: Personality) -> Paths {
        match p {
            Personality::Moodle => Paths {
                auth: "/mod/lti/auth.php".into(),
                token: "/mod/lti/token.php".into(),
                jwks: "/mod/lti/certs.php".into(),
                openid_configuration: "/mod/lti/openid-configuration.php".into(),
                registration: "/mod/lti/openid-registration.php".into(),
                lineitems: "/mod/lti/services.php/{ctx}/lineitems".into(),
                lineitem: "/mod/lti/services.php/{ctx}/lineitems/{id}/lineitem".into(),
                memberships:
                    "/mod/lti/services.php/CourseSection/{ctx}/bindings/{type}/memberships".into(),
                type_id_query: true,
            },
            Personality::Canvas => Paths {
                auth: "/api/lti/authorize_redirect".into(),
                token: "/login/oauth2/token".into(),
                jwks: "/api/lti/security/jwks".into(),
                openid_configuration: "/api/lti/security/openid-configuration".into(),
                registration: "/api/lti/registrations".into(),
                lineitems: "/api/lti/courses/{ctx}/line_items".into(),
                lineitem: "/api/lti/courses/{ctx}/line_items/{id}".into(),
                memberships: "/api/lti/courses/{ctx}/names_and_roles".into(),
                type_id_query: false,
            },
            Personality::Blackboard => Paths {
                auth: "/api/v1/gateway/oidcauth".into(),
                token: "/api/v1/gateway/oauth2/jwttoken".into(),
                jwks: "/api/v1/management/applications/mock/jwks.json".into(),
                openid_configuration: "/.well-known/openid-configuration".into(),
                registration: "/api/v1/gateway/registration".into(),
                lineitems: "/learn/api/v1/lti/courses/{ctx}/lineItems".into(),
                lineitem: "/learn/api/v1/lti/courses/{ctx}/lineItems/{id}".into(),
                memberships: "/learn/api/v1/lti/courses/{ctx}/memberships".into(),
                type_id_query: false,
            },
            Personality::D2l => Paths {
                auth: "/d2l/lti/authenticate".into(),
                token: "/core/connect/token".into(),
                jwks: "/d2l/.well-known/jwks".into(),
                openid_configuration: "/.well-known/openid-configuration".into(),
                registration: "/d2l/lti/dynamic-registration".into(),
                lineitems: "/d2l/api/lti/ags/2.0/deployment/{dep}/orgunit/{ctx}/lineitems".into(),
                lineitem: "/d2l/api/lti/ags/2.0/deployment/{dep}/orgunit/{ctx}/lineitems/{id}"
                    .into(),
                memberships: "/d2l/api/lti/nrps/2.0/deployment/{dep}/orgunit/{ctx}/memberships"
                    .into(),
                type_id_query: false,
            },
            Personality::Generic => Paths {
                auth: "/lti/authorize".into(),
                token: "/lti/token".into(),
                jwks: "/.well-known/jwks.json".into(),
                openid_configuration: "/.well-known/openid-configuration".into(),
                registration: "/lti/register".into(),
                lineitems: "/lti/courses/{ctx}/lineitems".into(),
                lineitem: "/lti/courses/{ctx}/lineitems/{id}".into(),
                memberships: "/lti/courses/{ctx}/memberships".into(),
                type_id_query: false,
            },
        }
    }
}

/// What varies in service URLs besides the course: Moodle's tool type and D2L's deployment.
#[derive(Debug, Clone)]
pub(crate) struct UrlCtx {
    pub type_id: u32,
    pub deployment: String,
}

/// The platform's id_token signing key (RS256: the one algorithm every LMS signs with).
pub(crate) struct Signer {
    pub kid: String,
    pub encoding: jsonwebtoken::EncodingKey,
    pub public_jwk: Value,
}

impl Signer {
    fn generate() -> anyhow::Result<Signer> {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)?;
        let der = key.to_pkcs1_der()?;
        let public = key.to_public_key();
        let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
        // An RFC 7638 thumbprint: stable, unique, and what Moodle and Canvas kids look like.
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(thumbprint_input));
        Ok(Signer {
            public_jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e,
            }),
            kid,
            encoding: jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
        })
    }

    /// Another key, for [`LaunchFault::BadSignature`].
    fn impostor() -> anyhow::Result<jsonwebtoken::EncodingKey> {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)?;
        Ok(jsonwebtoken::EncodingKey::from_rsa_der(
            key.to_pkcs1_der()?.as_bytes(),
        ))
    }
}

pub(crate) struct KeyRing {
    pub current: Arc<Signer>,
    /// Public JWKs of rotated-out keys: still published, as platforms do during rotation.
    pub retired: Vec<Value>,
}

/// A registered tool with the platform's own numbering of it.
#[derive(Debug, Clone)]
pub(crate) struct ToolEntry {
    pub tool: MockTool,
    /// Moodle's `lti_types.id`: 1-based in registration order.
    pub type_id: u32,
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at: u64,
}

pub(crate) struct Shared {
    pub personality: Personality,
    pub base: String,
    pub issuer: String,
    pub paths: Paths,
    pub page_size: usize,
    pub results_service: bool,
    pub tools: Mutex<Vec<ToolEntry>>,
    pub keys: Mutex<KeyRing>,
    pub http: reqwest::Client,
    pub launches: Mutex<HashMap<String, oidc::PendingLaunch>>,
    pub launch_faults: Mutex<VecDeque<LaunchFault>>,
    pub ags_faults: Mutex<VecDeque<AgsFault>>,
    pub tokens: Mutex<HashMap<String, AccessToken>>,
    /// Client assertion `(client_id, jti)`s seen, with their `exp`, to refuse replays.
    pub seen_jti: Mutex<HashMap<(String, String), u64>>,
    pub token_log: Mutex<VecDeque<RecordedTokenRequest>>,
    /// Tool JWKS by URL (only the keys this mock can use).
    pub jwks_cache: Mutex<HashMap<String, Arc<Vec<jsonwebtoken::jwk::Jwk>>>>,
    pub data: Mutex<data::Data>,
    pub deep_links: Mutex<deep_linking::State>,
    pub registration: Mutex<registration::State>,
    pub lti11: Mutex<lti11::State>,
}

impl Shared {
    fn new(opts: MockLmsOptions, addr: SocketAddr, signer: Signer) -> anyhow::Result<Shared> {
        let base = format!("http://{addr}");
        let issuer = match opts.personality {
            Personality::Canvas => "https://canvas.instructure.com".to_owned(),
            Personality::Blackboard => "https://blackboard.com".to_owned(),
            Personality::Moodle | Personality::D2l | Personality::Generic => base.clone(),
        };
        let mut tools = Vec::new();
        let mut seen = HashSet::new();
        for tool in opts.tools {
            anyhow::ensure!(
                !tool.client_id.is_empty(),
                "a mock LMS tool needs a client_id"
            );
            anyhow::ensure!(
                seen.insert(tool.client_id.clone()),
                "two mock LMS tools share a client_id"
            );
            let type_id = u32::try_from(tools.len() + 1)?;
            tools.push(ToolEntry { tool, type_id });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client for tool JWKS")?;
        Ok(Shared {
            personality: opts.personality,
            paths: Paths::for_personality(opts.personality),
            base,
            issuer,
            page_size: opts.page_size.max(1),
            results_service: opts.results_service,
            tools: Mutex::new(tools),
            keys: Mutex::new(KeyRing {
                current: Arc::new(signer),
                retired: Vec::new(),
            }),
            http,
            launches: Mutex::new(HashMap::new()),
            launch_faults: Mutex::new(VecDeque::new()),
            ags_faults: Mutex::new(VecDeque::new()),
            tokens: Mutex::new(HashMap::new()),
            seen_jti: Mutex::new(HashMap::new()),
            token_log: Mutex::new(VecDeque::new()),
            jwks_cache: Mutex::new(HashMap::new()),
            data: Mutex::new(data::Data::default()),
            deep_links: Mutex::new(deep_linking::State::default()),
            registration: Mutex::new(registration::State::default()),
            lti11: Mutex::new(lti11::State::default()),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn token_audience(&self) -> String {
        match self.personality {
            Personality::D2l => "https://api.brightspace.com/auth/token".to_owned(),
            _ => self.url(&self.paths.token),
        }
    }

    pub fn tool(&self, client_id: &str) -> Option<ToolEntry> {
        lock(&self.tools)
            .iter()
            .find(|t| t.tool.client_id == client_id)
            .cloned()
    }

    pub fn jwks(&self) -> Value {
        let keys = lock(&self.keys);
        let mut all = vec![keys.current.public_jwk.clone()];
        all.extend(keys.retired.iter().rev().cloned());
        json!({ "keys": all })
    }

    /// URLs handed out outside a launch or request: the first tool's type and deployment.
    pub fn default_url_ctx(&self) -> UrlCtx {
        let tools = lock(&self.tools);
        let first = tools.first();
        UrlCtx {
            type_id: first.map_or(1, |t| t.type_id),
            deployment: first
                .and_then(|t| t.tool.deployment_ids.first().cloned())
                .unwrap_or_else(|| "1".to_owned()),
        }
    }

    fn fill(&self, template: &str, ctx: &str, id: Option<u64>, at: &UrlCtx) -> String {
        let mut path = template
            .replace("{ctx}", &path_segment(ctx))
            .replace("{dep}", &path_segment(&at.deployment))
            .replace("{type}", &at.type_id.to_string());
        if let Some(id) = id {
            path = path.replace("{id}", &self.item_id(id));
        }
        self.url(&path)
    }

    /// How the vendor spells a line item id in its URLs (Blackboard: `_12_1`).
    pub fn item_id(&self, num: u64) -> String {
        match self.personality {
            Personality::Blackboard => format!("_{num}_1"),
            _ => num.to_string(),
        }
    }

    /// The inverse of [`Shared::item_id`].
    pub fn parse_item_id(&self, text: &str) -> Option<u64> {
        match self.personality {
            Personality::Blackboard => text.strip_prefix('_')?.strip_suffix("_1")?.parse().ok(),
            _ => text.parse().ok(),
        }
    }

    fn type_query(&self, at: &UrlCtx) -> String {
        if self.paths.type_id_query {
            format!("?type_id={}", at.type_id)
        } else {
            String::new()
        }
    }

    pub fn lineitems_url(&self, ctx: &str, at: &UrlCtx) -> String {
        format!(
            "{}{}",
            self.fill(&self.paths.lineitems, ctx, None, at),
            self.type_query(at)
        )
    }

    pub fn lineitem_url(&self, ctx: &str, num: u64, at: &UrlCtx) -> String {
        self.lineitem_sub_url(ctx, num, "", at)
    }

    /// `{lineitem}{suffix}` with the query after the suffix: `.../lineitem/scores?type_id=1`.
    pub fn lineitem_sub_url(&self, ctx: &str, num: u64, suffix: &str, at: &UrlCtx) -> String {
        format!(
            "{}{suffix}{}",
            self.fill(&self.paths.lineitem, ctx, Some(num), at),
            self.type_query(at)
        )
    }

    pub fn memberships_url(&self, ctx: &str, at: &UrlCtx) -> String {
        self.fill(&self.paths.memberships, ctx, None, at)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let p = shared.paths.clone();
    let mut app = Router::new()
        .route(&p.auth, get(oidc::authorize).post(oidc::authorize))
        .route(&p.token, post(token::token))
        .route(&p.jwks, get(oidc::jwks))
        .route(
            &p.openid_configuration,
            get(registration::openid_configuration),
        )
        .route(&p.registration, post(registration::register))
        .route(&p.lineitems, any(ags::lineitems))
        .route(&p.lineitem, any(ags::lineitem))
        .route(&format!("{}/scores", p.lineitem), any(ags::scores))
        .route(&format!("{}/results", p.lineitem), any(ags::results))
        .route(&p.memberships, get(nrps::memberships))
        .route(
            &format!("{}/{{session}}", deep_linking::RETURN_PATH),
            post(deep_linking::deep_link_return),
        )
        .route(lti11::OUTCOMES_PATH, post(lti11::outcomes))
        .route(gradebook::PATH, get(gradebook::page));
    if p.openid_configuration != "/.well-known/openid-configuration" {
        app = app.route(
            "/.well-known/openid-configuration",
            get(registration::openid_configuration),
        );
    }
    app.with_state(shared)
}

/// The single value of `name`: `Ok(None)` if absent, `Err(name)` if repeated.
pub(crate) fn single<'a>(
    form: &'a [(String, String)],
    name: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    let mut found = None;
    for (k, v) in form {
        if k == name {
            if found.is_some() {
                return Err(name);
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

/// Percent-encode one path segment (RFC 3986 unreserved characters pass).
pub(crate) fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The media type of a `Content-Type` or `Accept` item, without parameters, lowercased.
pub(crate) fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A response a helper gives up with, for the handler to answer as is. Boxed: a `Response`
/// is too large to carry in every `Result`.
pub(crate) struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(response: Response) -> Refusal {
        Refusal(Box::new(response))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// An OAuth 2.0 error body (RFC 6749 §5.2).
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// A JSON response with a fixed content type.
pub(crate) fn json_response(status: StatusCode, content_type: &str, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Escape text for HTML element content and attribute values.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Undo [`html_escape`] (and the numeric references other writers use for quotes).
pub(crate) fn html_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#34;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A minimal HTML page, for the endpoints a browser lands on.
pub(crate) fn html_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>\n",
        t = html_escape(title),
        m = html_escape(message),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// A page with one form that posts `fields` to `action` as soon as it loads.
pub(crate) fn auto_post_page(action: &str, fields: &[(&str, &str)]) -> Response {
    let mut inputs = String::new();
    for (name, value) in fields {
        inputs.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            html_escape(name),
            html_escape(value)
        ));
    }
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Launching</title></head>\n\
         <body onload=\"document.forms[0].submit()\">\n\
         <form method=\"post\" action=\"{}\">\n{inputs}\
         <noscript><button type=\"submit\">Continue</button></noscript>\n</form>\n</body></html>\n",
        html_escape(action),
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
