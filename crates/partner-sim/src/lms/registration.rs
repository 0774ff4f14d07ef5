//! LTI Dynamic Registration 1.0: the registration initiation URL (§3.3), the platform's
//! OpenID configuration (§3.4, OpenID Connect Discovery) and the registration endpoint
//! (§3.5, OpenID Connect Dynamic Client Registration with the LTI tool configuration).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::token::assertion_algs;
use super::{
    MockTool, Personality, Refusal, RegistrationFault, SUPPORTED_SCOPES, Shared, ToolEntry, claim,
    essence, lock, now_secs, oauth_error, random_token,
};

/// How long a registration token stays usable.
const REGISTRATION_TOKEN_SECS: u64 = 3600;

#[derive(Default)]
pub(crate) struct State {
    /// Unused registration tokens with their expiry.
    tokens: HashMap<String, u64>,
    /// The client metadata of the registrations accepted, in order.
    pub accepted: Vec<Value>,
    /// Reads of the OpenID configuration and POSTs to the registration endpoint.
    pub configuration_reads: usize,
    pub registration_posts: usize,
    pub fault: Option<RegistrationFault>,
}

pub(super) fn initiation_url(s: &Shared, tool_register_url: &str) -> String {
    let token = random_token();
    let now = now_secs();
    {
        let mut state = lock(&s.registration);
        state.tokens.retain(|_, exp| *exp > now);
        state
            .tokens
            .insert(token.clone(), now + REGISTRATION_TOKEN_SECS);
    }
    let config = s.url(&s.paths.openid_configuration);
    match url::Url::parse(tool_register_url) {
        Ok(mut url) => {
            if s.personality == Personality::Moodle {
                // startltiadvregistration.php: `moodle_url::param()` replaces a parameter the
                // tool URL already has and keeps the others, in their order.
                let kept: Vec<(String, String)> = url
                    .query_pairs()
                    .filter(|(k, _)| k != "openid_configuration" && k != "registration_token")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                url.set_query(None);
                if !kept.is_empty() {
                    url.query_pairs_mut().extend_pairs(kept);
                }
            }
            url.query_pairs_mut()
                .append_pair("openid_configuration", &config)
                .append_pair("registration_token", &token);
            url.into()
        }
        Err(_) => {
            let sep = if tool_register_url.contains('?') {
                '&'
            } else {
                '?'
            };
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("openid_configuration", &config)
                .append_pair("registration_token", &token)
                .finish();
            format!("{tool_register_url}{sep}{query}")
        }
    }
}

pub(super) async fn openid_configuration(AxumState(s): AxumState<Arc<Shared>>) -> Response {
    let p = s.personality;
    let fault = {
        let mut state = lock(&s.registration);
        state.configuration_reads += 1;
        state.fault.clone()
    };
    let algs: Vec<String> = assertion_algs(p).iter().map(|a| format!("{a:?}")).collect();
    let mut scopes = vec!["openid".to_owned()];
    scopes.extend(SUPPORTED_SCOPES.iter().map(|s| (*s).to_owned()));
    let mut config = json!({
        "issuer": s.issuer,
        "authorization_endpoint": s.url(&s.paths.auth),
        "token_endpoint": s.url(&s.paths.token),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "jwks_uri": s.url(&s.paths.jwks),
        "registration_endpoint": s.url(&s.paths.registration),
        "scopes_supported": scopes,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": [
            "sub", "iss", "name", "given_name", "family_name", "email", "locale"
        ],
        claim::PLATFORM_CONFIGURATION: {
            "product_family_code": p.product_family_code(),
            "version": "1.0",
            "messages_supported": [
                { "type": "LtiResourceLinkRequest" },
                { "type": "LtiDeepLinkingRequest" },
            ],
            "variables": ["ResourceLink.id", "Context.id", "User.id", "Person.email.primary"],
        },
    });
    if let Value::Object(map) = &mut config {
        if p == Personality::D2l {
            // DR 1.0 §3.4: the `aud` of client assertions when it is not the token endpoint.
            map.insert("authorization_server".into(), json!(s.token_audience()));
        }
        match fault {
            Some(RegistrationFault::Issuer(issuer)) => {
                map.insert("issuer".into(), json!(issuer));
            }
            Some(RegistrationFault::RegistrationEndpoint(url)) => {
                map.insert("registration_endpoint".into(), json!(url));
            }
            Some(RegistrationFault::Refuse(_)) | None => {}
        }
    }
    axum::Json(config).into_response()
}

fn invalid(error: &str, description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

fn is_absolute_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// Moodle's domain rule (registration_helper): `domain` must equal the host of
/// `target_link_uri` with its port when it has one (`lti_get_domain_from_url`: everything
/// between the scheme and the first `/`, a leading `www.` dropped on both sides).
fn moodle_domain_refusal(metadata: &Value) -> Option<&'static str> {
    let config = metadata.get(claim::TOOL_CONFIGURATION)?;
    let domain = config.get("domain").and_then(Value::as_str).unwrap_or("");
    if domain.is_empty() {
        return Some("missing_domain");
    }
    let target = config
        .get("target_link_uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("https://{domain}"));
    let of = |url: &str| {
        let lower = url.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
            .unwrap_or(&lower)
            .to_owned();
        let rest = rest.strip_prefix("www.").unwrap_or(&rest).to_owned();
        rest.split('/').next().unwrap_or("").to_owned()
    };
    (of(domain) != of(&target)).then_some("domain_targetlinkuri_mismatch")
}

/// A registration refused as a Moodle 4.5 site with developer debugging answers it: the
/// exception's code as the body after the deprecation notice its response class prints,
/// as HTML (PHP's default content type).
fn moodle_refusal(code: &str) -> Response {
    let body = format!(
        "<div class=\"notifytiny debuggingmessage\" data-rel=\"debugging\">Class \\mod_lti\\local\\ltiservice\\response \
         is deprecated, please use \\core_ltix\\local\\ltiservice\\response instead.<ul style=\"text-align: left\" \
         data-rel=\"backtrace\"><li>line 56 of /mod/lti/openid-registration.php: call to debugging()</li></ul></div>{code}"
    );
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// The metadata rules of DR 1.0 §3.5.1 and §3.5.2.
fn validate(metadata: &Value) -> Result<(), Refusal> {
    let text = |name: &str| metadata.get(name).and_then(Value::as_str);
    let strings = |name: &str| -> Vec<&str> {
        metadata
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let meta = |d: &str| Refusal::from(invalid("invalid_client_metadata", d));
    if text("application_type") != Some("web") {
        return Err(meta("application_type must be web"));
    }
    let grants = strings("grant_types");
    if !grants.contains(&"implicit") || !grants.contains(&"client_credentials") {
        return Err(meta(
            "grant_types must include implicit and client_credentials",
        ));
    }
    if !strings("response_types").contains(&"id_token") {
        return Err(meta("response_types must include id_token"));
    }
    let redirects = strings("redirect_uris");
    if redirects.is_empty() || redirects.iter().any(|r| !is_absolute_url(r)) {
        return Err(invalid(
            "invalid_redirect_uri",
            "redirect_uris must be a non-empty array of absolute URLs",
        )
        .into());
    }
    if !text("initiate_login_uri").is_some_and(is_absolute_url) {
        return Err(meta("initiate_login_uri must be an absolute URL"));
    }
    if text("client_name").is_none_or(|n| n.trim().is_empty()) {
        return Err(meta("client_name is required"));
    }
    if !text("jwks_uri").is_some_and(is_absolute_url) {
        return Err(meta("jwks_uri must be an absolute URL"));
    }
    if text("token_endpoint_auth_method") != Some("private_key_jwt") {
        return Err(meta("token_endpoint_auth_method must be private_key_jwt"));
    }
    if metadata.get("scope").is_some_and(|s| !s.is_string()) {
        return Err(meta("scope must be a space-separated string"));
    }
    let Some(config) = metadata
        .get(claim::TOOL_CONFIGURATION)
        .filter(|c| c.is_object())
    else {
        return Err(meta(&format!("{} is required", claim::TOOL_CONFIGURATION)));
    };
    if config
        .get("domain")
        .and_then(Value::as_str)
        .is_none_or(|d| d.trim().is_empty())
    {
        return Err(meta("the tool configuration needs a domain"));
    }
    if !config
        .get("target_link_uri")
        .and_then(Value::as_str)
        .is_some_and(is_absolute_url)
    {
        return Err(meta(
            "the tool configuration needs an absolute target_link_uri",
        ));
    }
    if let Some(claims) = config.get("claims")
        && !claims
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err(meta("claims must be an array of strings"));
    }
    if let Some(messages) = config.get("messages")
        && !messages.as_array().is_some_and(|a| {
            a.iter()
                .all(|m| m.get("type").and_then(Value::as_str).is_some())
        })
    {
        return Err(meta("each message needs a type"));
    }
    Ok(())
}

pub(super) async fn register(
    AxumState(s): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&s.registration).registration_posts += 1;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let now = now_secs();
    let known = token.as_deref().is_some_and(|t| {
        lock(&s.registration)
            .tokens
            .get(t)
            .is_some_and(|exp| *exp > now)
    });
    if !known {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the registration token is missing, unknown, expired or already used",
        );
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| essence(v) == "application/json");
    if !json_type {
        return invalid(
            "invalid_client_metadata",
            "the body must be application/json",
        );
    }
    let metadata: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return invalid("invalid_client_metadata", "the body is not a JSON object"),
    };
    if let Err(refusal) = validate(&metadata) {
        return refusal.into_response();
    }
    if s.personality == Personality::Moodle
        && let Some(code) = moodle_domain_refusal(&metadata)
    {
        return moodle_refusal(code);
    }
    let refuse = match &lock(&s.registration).fault {
        Some(RegistrationFault::Refuse(code)) => Some(code.clone()),
        _ => None,
    };
    if let Some(code) = refuse {
        return match s.personality {
            Personality::Moodle => moodle_refusal(&code),
            _ => invalid(&code, "refused by the platform (injected fault)"),
        };
    }

    // Consume the token and add the tool under one lock each, token first: a racing
    // second registration with the same token fails.
    let consumed = token
        .as_deref()
        .is_some_and(|t| lock(&s.registration).tokens.remove(t).is_some());
    if !consumed {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the registration token was used meanwhile",
        );
    }
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
    let config = metadata
        .get(claim::TOOL_CONFIGURATION)
        .cloned()
        .unwrap_or(Value::Null);
    let entry = {
        let mut tools = lock(&s.tools);
        let n = tools.len() + 1;
        let type_id = u32::try_from(n).unwrap_or(u32::MAX);
        let client_id = match s.personality {
            Personality::Canvas => format!("10000000000{n:03}"),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let deployment_id = match s.personality {
            Personality::Moodle => type_id.to_string(),
            Personality::Canvas => format!("{n}:{}", &random_token()[..20]),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let tool = MockTool {
            client_id,
            deployment_ids: vec![deployment_id],
            login_url: text(&metadata, "initiate_login_uri"),
            redirect_uris: metadata
                .get("redirect_uris")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            target_link_uri: text(&config, "target_link_uri"),
            jwks_url: text(&metadata, "jwks_uri"),
            lti11: None,
            migrated_from_lti11: false,
        };
        let entry = ToolEntry { tool, type_id };
        tools.push(entry.clone());
        entry
    };
    lock(&s.registration).accepted.push(metadata.clone());

    let granted: Vec<String> = metadata
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split_ascii_whitespace()
        .filter(|scope| SUPPORTED_SCOPES.contains(scope))
        .map(str::to_owned)
        .collect();
    let mut response = metadata;
    if let Value::Object(map) = &mut response {
        map.insert("client_id".into(), json!(entry.tool.client_id));
        map.insert("scope".into(), json!(granted.join(" ")));
        let mut config = config;
        if let Value::Object(c) = &mut config {
            c.insert(
                "deployment_id".into(),
                json!(
                    entry
                        .tool
                        .deployment_ids
                        .first()
                        .cloned()
                        .unwrap_or_default()
                ),
            );
        }
        map.insert(claim::TOOL_CONFIGURATION.into(), config);
    }
    axum::Json(response).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(domain: &str, target: &str) -> Value {
        json!({ claim::TOOL_CONFIGURATION: { "domain": domain, "target_link_uri": target } })
    }

    #[test]
    fn moodle_wants_the_port_in_the_domain_when_the_target_has_one() {
        let refused = |d, t| moodle_domain_refusal(&config(d, t));
        assert_eq!(
            refused("127.0.0.1", "http://127.0.0.1:18010/lti/launch"),
            Some("domain_targetlinkuri_mismatch")
        );
        assert_eq!(
            refused("127.0.0.1:18010", "http://127.0.0.1:18010/lti/launch"),
            None
        );
        assert_eq!(
            refused("tool.example", "https://www.tool.example/launch"),
            None
        );
        assert_eq!(
            refused("", "https://tool.example/launch"),
            Some("missing_domain")
        );
    }
}
