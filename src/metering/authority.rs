//! Who may write which event types into the ledger, and what the ledger keeps about who did
//! (pure; no I/O).
//!
//! Statements turn ledger events into money, so the right to record an event is the right
//! to move money. Three classes of event type, three rules:
//! - the gateway's own types (namespaces [`GATEWAY_NAMESPACES`]: launches, FHIR calls,
//!   grades, sign-ins, deliveries) are written only by the gateway itself;
//! - money-bearing types (`revenue.recognized`, `referral.*`, any type an agreement's
//!   referrals name, any type a meter an agreement reads selects) only by trusted
//!   recorders: admin and app keys, `usage import` by an operator, and inbound webhook
//!   sources marked `trusted` in config;
//! - a partner's own key records only the types its partner's config lists in
//!   `self_reported_types` (none by default); such events are marked as reported by the
//!   partner, and an agreement counts them for money only when it says so.

use serde::Serialize;

use crate::config::Config;
use crate::metering::meter::TypePattern;
use crate::statements::events::{REFERRAL_PREFIX, REVENUE_RECOGNIZED};

/// Event type namespaces that only the gateway writes. Every type the gateway records sits
/// in one of them (a unit test checks the literals in `src/`).
pub const GATEWAY_NAMESPACES: &[&str] = &[
    "smart.", "lti.", "sso.", "fhir.", "webhook.", "launch.", "gateway.",
];

/// Whether `event_type` belongs to the gateway.
pub fn is_gateway_type(event_type: &str) -> bool {
    GATEWAY_NAMESPACES
        .iter()
        .any(|ns| event_type.starts_with(ns))
}

/// Who wrote an event. Stored with every event as `recorded_by` (the kind) and
/// `recorded_ref` (which key, source or file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorder {
    /// The gateway, for what it did itself.
    Gateway,
    AdminKey {
        key_id: String,
    },
    /// The company's own product back end.
    AppKey {
        key_id: String,
    },
    /// A partner's own key: the partner's word.
    PartnerKey {
        key_id: String,
    },
    /// An inbound webhook source; `trusted` ones (the company's billing provider, a
    /// marketplace's signed reports) may record money, the others speak for the partner.
    Webhook {
        source: String,
        trusted: bool,
    },
    /// `usage import FILE` run by an operator.
    Import {
        file: String,
    },
}

/// Stored for events written before provenance was kept.
pub const LEGACY: &str = "legacy";
/// The stored kinds that are the partner's own word.
pub const SELF_REPORTED_KINDS: &[&str] = &["partner_key", "partner_webhook"];

impl Recorder {
    /// The stored kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::AdminKey { .. } => "admin_key",
            Self::AppKey { .. } => "app_key",
            Self::PartnerKey { .. } => "partner_key",
            Self::Webhook { trusted: true, .. } => "webhook",
            Self::Webhook { trusted: false, .. } => "partner_webhook",
            Self::Import { .. } => "import",
        }
    }

    /// The stored reference: the key id, the source id or the file name.
    pub fn reference(&self) -> Option<&str> {
        match self {
            Self::Gateway => None,
            Self::AdminKey { key_id } | Self::AppKey { key_id } | Self::PartnerKey { key_id } => {
                Some(key_id)
            }
            Self::Webhook { source, .. } => Some(source),
            Self::Import { file } => Some(file),
        }
    }

    /// Whether the event is the partner's own word about itself.
    pub fn self_reported(&self) -> bool {
        SELF_REPORTED_KINDS.contains(&self.kind())
    }
}

/// How a statement or a person reads a stored (kind, reference): "the billing webhook
/// `billing`", "reported by the partner (API key)". Key ids are left out: the statement's
/// JSON keeps them for audit, documents need not show them.
pub fn describe(kind: &str, reference: Option<&str>) -> String {
    let r = reference.unwrap_or("");
    match kind {
        "gateway" => "recorded by the gateway".into(),
        "admin_key" => "recorded with an admin key".into(),
        "app_key" => "recorded by the app".into(),
        "partner_key" => "reported by the partner (its API key)".into(),
        "webhook" => format!("recorded by the webhook `{r}`"),
        "partner_webhook" => format!("reported by the partner (webhook `{r}`)"),
        "import" if r.is_empty() => "imported by an operator".into(),
        "import" => format!("imported by an operator from `{r}`"),
        LEGACY => "recorded before provenance was kept".into(),
        other => format!("recorded by {other}"),
    }
}

/// One refusal, naming the type and the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal(pub String);

/// The ledger's write rules, compiled from config once.
#[derive(Debug, Clone, Default)]
pub struct Authority {
    /// Types that move money (for any partner: an agreement's terms are not a secret the
    /// rules should depend on, and a type priced for one partner is worth guarding for all).
    money: Vec<TypePattern>,
    /// Per partner: the types its own key and untrusted sources may report.
    self_reported: std::collections::BTreeMap<String, Vec<TypePattern>>,
}

/// Parse a type pattern as meters write them: an exact type, or a prefix ending in `*`.
pub fn pattern(text: &str) -> Option<TypePattern> {
    match text.find('*') {
        None if !text.is_empty() => Some(TypePattern::Exact(text.to_owned())),
        Some(pos) if pos + 1 == text.len() => Some(TypePattern::Prefix(text[..pos].to_owned())),
        _ => None,
    }
}

impl Authority {
    pub fn from_config(config: &Config) -> Authority {
        let mut money = vec![
            TypePattern::Exact(REVENUE_RECOGNIZED.to_owned()),
            TypePattern::Prefix(REFERRAL_PREFIX.to_owned()),
        ];
        for a in &config.agreements {
            for r in &a.referrals {
                money.push(TypePattern::Exact(r.event_type.clone()));
            }
            for name in a.meter_names() {
                if let Some(m) = config.meters.iter().find(|m| m.name == name) {
                    money.extend(m.event_types.iter().filter_map(|t| pattern(t)));
                }
            }
        }
        let self_reported = config
            .partners
            .iter()
            .map(|p| {
                let pats = p
                    .self_reported_types
                    .iter()
                    .filter_map(|t| pattern(t))
                    .collect();
                (p.id.clone(), pats)
            })
            .collect();
        Authority {
            money,
            self_reported,
        }
    }

    /// Whether `event_type` moves money under some agreement.
    pub fn is_money(&self, event_type: &str) -> bool {
        self.money.iter().any(|p| p.matches(event_type))
    }

    /// Whether `partner` reports `event_type` itself (its config says so).
    pub fn is_self_reported(&self, partner: &str, event_type: &str) -> bool {
        self.self_reported
            .get(partner)
            .is_some_and(|ps| ps.iter().any(|p| p.matches(event_type)))
    }

    /// May `recorder` write an event of `event_type` for `partner`?
    pub fn check(
        &self,
        recorder: &Recorder,
        partner: &str,
        event_type: &str,
    ) -> Result<(), Refusal> {
        if is_gateway_type(event_type) {
            return if *recorder == Recorder::Gateway {
                Ok(())
            } else {
                Err(Refusal(format!(
                    "event type {event_type:?} is recorded only by the gateway itself (types \
                     under {} are its own launches, FHIR calls, grades, sign-ins and \
                     deliveries); send your own events under another name",
                    GATEWAY_NAMESPACES
                        .iter()
                        .map(|ns| format!("{ns}*"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            };
        }
        let money = self.is_money(event_type);
        let own_word = self.is_self_reported(partner, event_type);
        match recorder {
            Recorder::PartnerKey { .. } if !own_word => Err(Refusal(format!(
                "a partner key records only the event types its partner reports itself \
                 (partners.self_reported_types of {partner:?}); {event_type:?} is not one of \
                 them{}",
                if money {
                    ", and it is money-bearing: the billing system, an admin or the app records it"
                } else {
                    ""
                }
            ))),
            Recorder::Webhook {
                source,
                trusted: false,
            } if money && !own_word => Err(Refusal(format!(
                "event type {event_type:?} is money-bearing and webhook source {source:?} of \
                 {partner:?} is not trusted for money (set trusted = true on the source if it \
                 is the company's billing system)"
            ))),
            // The gateway, admin and app keys, an operator's import, trusted sources, and
            // partners within what their config lets them report.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> Authority {
        let mut self_reported = std::collections::BTreeMap::new();
        self_reported.insert(
            "lms".to_owned(),
            vec![
                TypePattern::Exact("course.completed".into()),
                TypePattern::Prefix("app.".into()),
            ],
        );
        Authority {
            money: vec![
                TypePattern::Exact(REVENUE_RECOGNIZED.into()),
                TypePattern::Prefix(REFERRAL_PREFIX.into()),
                TypePattern::Exact("course.completed".into()),
            ],
            self_reported,
        }
    }

    fn key(kind: &str) -> Recorder {
        let key_id = "k1".to_owned();
        match kind {
            "admin" => Recorder::AdminKey { key_id },
            "app" => Recorder::AppKey { key_id },
            _ => Recorder::PartnerKey { key_id },
        }
    }

    #[test]
    fn the_gateways_types_are_refused_to_every_other_recorder() {
        let a = authority();
        let others = [
            key("admin"),
            key("app"),
            key("partner"),
            Recorder::Webhook {
                source: "billing".into(),
                trusted: true,
            },
            Recorder::Import { file: "f".into() },
        ];
        for t in [
            "smart.launch",
            "lti.launch",
            "lti.grade_posted",
            "sso.login",
            "fhir.request",
            "webhook.delivered",
        ] {
            assert!(a.check(&Recorder::Gateway, "lms", t).is_ok());
            for r in &others {
                let err = a.check(r, "lms", t).unwrap_err();
                assert!(err.0.contains(t), "{err:?}");
            }
        }
    }

    #[test]
    fn a_partner_key_records_only_its_self_reported_types() {
        let a = authority();
        assert!(a.check(&key("partner"), "lms", "app.session").is_ok());
        assert!(a.check(&key("partner"), "lms", "course.completed").is_ok());
        let err = a
            .check(&key("partner"), "lms", REVENUE_RECOGNIZED)
            .unwrap_err();
        assert!(err.0.contains("revenue.recognized") && err.0.contains("money-bearing"));
        // Another partner lists nothing: nothing at all.
        assert!(a.check(&key("partner"), "ehr", "app.session").is_err());
        assert!(
            a.check(&key("partner"), "ehr", "referral.implementation_completed")
                .is_err()
        );
    }

    #[test]
    fn money_needs_a_trusted_recorder() {
        let a = authority();
        let untrusted = Recorder::Webhook {
            source: "lms-events".into(),
            trusted: false,
        };
        let trusted = Recorder::Webhook {
            source: "billing".into(),
            trusted: true,
        };
        assert!(a.check(&untrusted, "ehr", REVENUE_RECOGNIZED).is_err());
        assert!(a.check(&untrusted, "ehr", "app.session").is_ok());
        assert!(a.check(&trusted, "ehr", REVENUE_RECOGNIZED).is_ok());
        for r in [
            key("admin"),
            key("app"),
            Recorder::Import { file: "f".into() },
        ] {
            assert!(a.check(&r, "ehr", REVENUE_RECOGNIZED).is_ok());
            assert!(a.check(&r, "ehr", "referral.signed").is_ok());
        }
    }

    #[test]
    fn kinds_say_whose_word_it_is() {
        assert!(key("partner").self_reported());
        assert!(
            Recorder::Webhook {
                source: "s".into(),
                trusted: false
            }
            .self_reported()
        );
        for r in [
            Recorder::Gateway,
            key("admin"),
            key("app"),
            Recorder::Webhook {
                source: "s".into(),
                trusted: true,
            },
            Recorder::Import { file: "f".into() },
        ] {
            assert!(!r.self_reported(), "{r:?}");
        }
        assert_eq!(
            describe("webhook", Some("billing")),
            "recorded by the webhook `billing`"
        );
        assert_eq!(
            describe("partner_key", Some("k")),
            "reported by the partner (its API key)"
        );
    }

    #[test]
    fn patterns_read_like_meter_patterns() {
        assert_eq!(pattern("a.b"), Some(TypePattern::Exact("a.b".into())));
        assert_eq!(pattern("a.*"), Some(TypePattern::Prefix("a.".into())));
        assert_eq!(pattern("a*b"), None);
        assert_eq!(pattern(""), None);
    }

    /// Every event type the gateway writes itself must sit in a gateway namespace, or a key
    /// could forge it.
    #[test]
    fn every_type_the_gateway_records_is_in_a_gateway_namespace() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    // The simulators stand for partners, not the gateway.
                    if !path.ends_with("sandbox") {
                        stack.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Code only: a file's unit tests build events of any type.
                    let code = text.split("#[cfg(test)]").next().unwrap_or("");
                    for (n, line) in code.lines().enumerate() {
                        if let Some(rest) = line.split("event_type: \"").nth(1)
                            && let Some(t) = rest.split('"').next()
                        {
                            found.push((path.display().to_string(), n + 1, t.to_owned()));
                        }
                    }
                }
            }
        }
        assert!(found.len() >= 6, "found only {found:?}");
        for (file, line, t) in found {
            assert!(is_gateway_type(&t), "{file}:{line}: {t:?}");
        }
    }
}
