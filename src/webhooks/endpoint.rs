//! Endpoints: what a partner (or the company's app) asks to hear, and where. Pure: the
//! request shapes, their checks and the event-type filter.

use serde::{Deserialize, Serialize};

use super::signature::Scheme;
use crate::http::error::FieldError;

/// Longest description kept.
const MAX_DESCRIPTION: usize = 1000;
/// Most filter entries on one endpoint.
const MAX_TYPES: usize = 100;
/// Highest rate limit accepted (deliveries per second).
pub const MAX_RATE_LIMIT: i32 = 10_000;

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: String,
    /// `None`: an endpoint of the company's app, hearing every partner's events.
    pub partner: Option<String>,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub rate_limit: Option<i32>,
    pub ordered: bool,
    pub scheme: Scheme,
    /// The `whpk_` key receivers verify `v1a` signatures with (public, shown any time).
    pub public_key: Option<String>,
    pub failing_since: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /v1/webhooks/endpoints`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.partner.example/gateway", "event_types": ["launch.completed", "grade.delivered"], "description": "Production receiver", "scheme": "v1"}))]
pub struct NewEndpoint {
    /// Admin keys name the partner, or leave it out with `"app": true`; partner keys may
    /// leave it out (their own).
    pub partner: Option<String>,
    #[serde(default)]
    pub app: bool,
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub enabled: bool,
    /// Deliveries per second at most; none by default.
    pub rate_limit: Option<i32>,
    #[serde(default)]
    pub ordered: bool,
    /// v1 (HMAC-SHA256 with a shared secret) or v1a (ed25519; receivers need only the
    /// public key). Standard Webhooks signatures either way.
    #[serde(default = "v1")]
    pub scheme: Scheme,
}

fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        index: None,
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn yes() -> bool {
    true
}

fn v1() -> Scheme {
    Scheme::V1
}

/// `PATCH /v1/webhooks/endpoints/{id}`: fields left out stay as they are; `rate_limit:
/// null` removes the limit.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "rate_limit": null}))]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// A number sets the limit, `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i32>)]
    pub rate_limit: Option<Option<i32>>,
    pub ordered: Option<bool>,
}

fn double_option<'de, D>(d: D) -> Result<Option<Option<i32>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<i32>::deserialize(d).map(Some)
}

/// Check the fields both creation and update carry. The URL's address policy is checked
/// apart (it needs DNS).
pub fn check_fields(
    description: Option<&str>,
    event_types: Option<&[String]>,
    rate_limit: Option<Option<i32>>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(d) = description
        && d.chars().count() > MAX_DESCRIPTION
    {
        errors.push(field_error(
            "description",
            format!("longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    if let Some(types) = event_types {
        if types.len() > MAX_TYPES {
            errors.push(field_error(
                "event_types",
                format!("more than {MAX_TYPES} entries"),
            ));
        }
        for t in types {
            if let Err(why) = check_pattern(t)
                .map_err(str::to_owned)
                .and_then(|()| check_known(t))
            {
                errors.push(field_error("event_types", format!("{t:?}: {why}")));
            }
        }
    }
    if let Some(Some(r)) = rate_limit
        && !(1..=MAX_RATE_LIMIT).contains(&r)
    {
        errors.push(field_error(
            "rate_limit",
            format!("deliveries per second must be 1 to {MAX_RATE_LIMIT}, or null for none"),
        ));
    }
    errors
}

/// An event type is dot-separated identifiers of `[A-Za-z0-9_]` (the spec's advice); a
/// filter entry is a type, or a prefix of whole identifiers followed by `.*`.
fn check_pattern(p: &str) -> Result<(), &'static str> {
    let body = p.strip_suffix(".*").unwrap_or(p);
    if body.is_empty() {
        return Err("expected an event type such as grade.delivered, or a prefix such as grade.*");
    }
    let ok = body.split('.').all(|part| {
        !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if ok {
        Ok(())
    } else {
        Err("expected dot-separated names of letters, digits and _, optionally ending in .*")
    }
}

/// What a filter may name: every type of the catalogue, and `prefix.*` for each prefix of
/// whole names they have (`grade.*`, `lti.*`, `lti.registration.*`...).
pub fn known_filters() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in super::events::CATALOGUE.iter().map(|e| e.name) {
        let parts: Vec<&str> = t.split('.').collect();
        for n in 1..parts.len() {
            let prefix = format!("{}.*", parts[..n].join("."));
            if !out.contains(&prefix) {
                out.push(prefix);
            }
        }
        out.push(t.to_owned());
    }
    out
}

/// A filter entry must hear something the gateway sends: a filter naming no event type
/// (`grades.*` for `grade.*`) would be accepted and never receive anything.
fn check_known(t: &str) -> Result<(), String> {
    let known = known_filters();
    if known.iter().any(|k| k == t) {
        return Ok(());
    }
    let nearest = crate::config::messages::nearest(t, known.iter().map(String::as_str))
        .map(|n| format!("; the nearest is {n}"))
        .unwrap_or_default();
    Err(format!(
        "not an event type the gateway sends (GET /v1/webhooks/event-types lists them){nearest}"
    ))
}

/// Whether an endpoint with filter `types` hears `event_type` (an empty filter hears all).
pub fn filter_matches<S: AsRef<str>>(types: &[S], event_type: &str) -> bool {
    types.is_empty()
        || types.iter().any(|t| {
            let t = t.as_ref();
            match t.strip_suffix(".*") {
                Some(prefix) => event_type
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.')),
                None => t == event_type,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_types_and_prefixes_match_whole_names() {
        let f = ["grade.*".to_owned(), "launch.completed".to_owned()];
        assert!(filter_matches(&f, "grade.delivered"));
        assert!(filter_matches(&f, "grade.failed"));
        assert!(filter_matches(&f, "launch.completed"));
        assert!(!filter_matches(&f, "grades.delivered"));
        assert!(!filter_matches(&f, "grade"));
        assert!(!filter_matches(&f, "launch.completed.extra"));
        assert!(filter_matches::<String>(&[], "anything.at_all"));
    }

    #[test]
    fn bad_patterns_and_limits_are_named() {
        let types = vec![
            "grade.*".into(),
            "*".into(),
            "a..b".into(),
            "statement.finalized".into(),
        ];
        let errs = check_fields(Some("d"), Some(&types), Some(Some(0)));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["event_types", "event_types", "rate_limit"]);
        assert!(check_fields(None, None, Some(None)).is_empty());
    }

    #[test]
    fn filters_must_name_what_the_gateway_sends() {
        let errs = check_fields(None, Some(&["grades.*".to_owned()]), None);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].reason.contains("\"grades.*\": not an event type"),
            "{}",
            errs[0].reason
        );
        assert!(
            errs[0].reason.ends_with("the nearest is grade.*"),
            "{}",
            errs[0].reason
        );
        let errs = check_fields(None, Some(&["score.delivered".to_owned()]), None);
        assert!(
            errs[0].reason.ends_with("the nearest is grade.delivered"),
            "{}",
            errs[0].reason
        );
        for ok in [
            "grade.*",
            "lti.registration.*",
            "lti.*",
            "webhook.endpoint.disabled",
        ] {
            assert!(
                check_fields(None, Some(&[ok.to_owned()]), None).is_empty(),
                "{ok}"
            );
        }
    }
}
