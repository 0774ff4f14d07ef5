//! The config of one inbound webhook source (`[[partners.webhook_sources]]`): how its
//! events are signed and how each payload type becomes a ledger event. Plain data and its
//! checks, read by the config loader and by `inbound.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::signature::VerifyingKey;
use crate::config::Secret;

/// One source of inbound webhooks, under a partner in config
/// (`[[partners.webhook_sources]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSource {
    /// The last path segment: letters, digits, `-` and `_`.
    pub id: String,
    pub signing: Signing,
    /// `standard`: `whsec_` secrets or `whpk_` public keys; `timestamped-hmac`: the shared
    /// secret(s). Several while the sender rotates.
    pub secrets: Vec<Secret>,
    /// How far the signed timestamp may be from now, either way.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: i64,
    /// `timestamped-hmac`: the header carrying `t=...,v1=...` (e.g. `Stripe-Signature`).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// JSON pointer to the event type in the payload.
    #[serde(default = "default_type_pointer")]
    pub type_pointer: String,
    /// JSON pointer to the event id in the payload; the `webhook-id` header when absent
    /// (required for `timestamped-hmac`, which has no id header).
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// How payload types become ledger events; other types are acknowledged and ignored.
    #[serde(default)]
    pub events: Vec<Mapping>,
    /// A system the company relies on for money (its billing provider, a marketplace's
    /// signed reports): it may record money-bearing event types, and its events read
    /// "recorded by the webhook `id`" on statements. An untrusted source speaks for the
    /// partner: it records only other types, or those in the partner's
    /// `self_reported_types`, marked as reported by the partner.
    #[serde(default)]
    pub trusted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signing {
    /// Standard Webhooks `v1` / `v1a`.
    Standard,
    /// `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.
    TimestampedHmac,
}

fn default_tolerance() -> i64 {
    300
}

fn default_type_pointer() -> String {
    "/type".into()
}

/// One payload type mapped to a ledger event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The payload's type value, e.g. `invoice.paid`.
    pub when: String,
    /// The ledger event type, e.g. `revenue.recognized`.
    pub event_type: String,
    /// Pointer to the subject (a customer, a user).
    #[serde(default)]
    pub subject: Option<String>,
    /// Pointer to the event time (unix seconds or RFC 3339); the signed timestamp if absent.
    #[serde(default)]
    pub time: Option<String>,
    /// `data` fields of the ledger event.
    #[serde(default)]
    pub data: BTreeMap<String, Field>,
}

/// A `data` field: a JSON pointer, or a pointer with a conversion.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Field {
    Pointer(String),
    Spec(FieldSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub pointer: String,
    /// Upper-case the text (ISO currency codes sent in lower case).
    #[serde(default)]
    pub upper: bool,
    /// The value is an integer in minor units of the currency at this pointer (cents for
    /// USD, yen for JPY): turn it into a decimal string.
    #[serde(default)]
    pub minor_units_of: Option<String>,
    /// Flip the sign of a number (a refund sent as a positive amount).
    #[serde(default)]
    pub negate: bool,
    /// Leave the field out when the payload has nothing (or null) there, instead of
    /// refusing the event (a charge refunded outside any invoice has no invoice).
    #[serde(default)]
    pub optional: bool,
}

impl InboundSource {
    /// Config problems as (field, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let valid_id = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            out.push(("id".into(), "1-64 letters, digits, - or _".into()));
        }
        if self.secrets.is_empty() {
            out.push(("secrets".into(), "at least one secret is needed".into()));
        }
        if self.signing == Signing::Standard {
            for (i, s) in self.secrets.iter().enumerate() {
                if let Err(e) = VerifyingKey::decode(s.expose()) {
                    out.push((format!("secrets[{i}]"), e.to_string()));
                }
            }
        }
        if self.signing == Signing::TimestampedHmac {
            if self.signature_header.is_none() {
                out.push((
                    "signature_header".into(),
                    "timestamped-hmac needs the header name".into(),
                ));
            }
            if self.id_pointer.is_none() {
                out.push((
                    "id_pointer".into(),
                    "timestamped-hmac needs a pointer to the event id".into(),
                ));
            }
        }
        if !(1..=86_400).contains(&self.tolerance_secs) {
            out.push(("tolerance_secs".into(), "1 to 86400 seconds".into()));
        }
        let mut pointers = vec![("type_pointer".to_owned(), self.type_pointer.clone())];
        if let Some(p) = &self.id_pointer {
            pointers.push(("id_pointer".into(), p.clone()));
        }
        for (i, m) in self.events.iter().enumerate() {
            for (k, f) in &m.data {
                let p = match f {
                    Field::Pointer(p) => p,
                    Field::Spec(s) => &s.pointer,
                };
                pointers.push((format!("events[{i}].data.{k}"), p.clone()));
            }
            if let Some(p) = &m.subject {
                pointers.push((format!("events[{i}].subject"), p.clone()));
            }
        }
        for (field, p) in pointers {
            if !(p.is_empty() || p.starts_with('/')) {
                out.push((
                    field,
                    format!("{p:?} is not a JSON pointer (it starts with /)"),
                ));
            }
        }
        out
    }
}
