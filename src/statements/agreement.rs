//! Agreements: how revenue is shared with a partner, declared in config (`[[agreements]]`),
//! versioned by validity dates, and checked at load so a statement never meets a term it
//! cannot read.
//!
//! Every amount, price and rate is written as a string (`"0.18"`, `"18%"`, `"2500.00"`): a
//! TOML float would pass through binary floating point before it became a decimal.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

use super::money::{Currency, Rounding};
use super::period::{AgreementYear, Period, PeriodKind};
use crate::metering::meter::Aggregation;

/// One version of an agreement, as written in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementConfig {
    pub id: String,
    pub partner: String,
    #[serde(default = "one")]
    pub version: u32,
    /// First day the version applies (a period boundary, in the agreement's zone).
    pub valid_from: NaiveDate,
    /// First day it no longer applies (exclusive); open-ended when absent.
    #[serde(default)]
    pub valid_to: Option<NaiveDate>,
    pub currency: String,
    #[serde(default)]
    pub period: PeriodKind,
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub rounding: Rounding,
    /// First day of the first agreement year; defaults to the first version's `valid_from`.
    #[serde(default)]
    pub year_start: Option<NaiveDate>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub revenue: RevenueConfig,
    #[serde(default)]
    pub share: Option<ShareConfig>,
    #[serde(default)]
    pub referrals: Vec<ReferralConfig>,
    #[serde(default)]
    pub bonuses: Vec<BonusConfig>,
    #[serde(default)]
    pub minimum: Option<MinimumConfig>,
    /// Whether events the partner reported itself (its own API key, its untrusted webhook
    /// sources) count for this agreement's money lines. Must be stated when the partner
    /// self-reports a type the agreement reads; they are excluded otherwise.
    #[serde(default)]
    pub self_reported_events: Option<SelfReportedEvents>,
    /// When the partner is paid: net `days` from the period's end or from finalization.
    #[serde(default)]
    pub payment: Option<PaymentConfig>,
    /// Tax withheld from the payment (a withholding tax on royalties or fees).
    #[serde(default)]
    pub withholding: Option<WithholdingConfig>,
    /// Tax on the share (VAT, GST), or a reverse charge.
    #[serde(default)]
    pub tax: Option<TaxConfig>,
}

/// `payment = { terms_days = 30, from = "finalization" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    pub terms_days: u32,
    pub from: crate::statements::model::TermsFrom,
}

/// `withholding = { rate = "10%", reference = "...", applies_to = ["share"] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithholdingConfig {
    #[serde(deserialize_with = "rate")]
    pub rate: Decimal,
    /// The kinds of owed line it is withheld from; every owed kind when absent.
    #[serde(default)]
    pub applies_to: Option<Vec<crate::statements::model::LineKind>>,
    /// The legal basis, printed beside the amount ("Withheld under section 194J ...").
    pub reference: String,
}

/// `tax = { name = "VAT", rate = "20%" }`, or `{ name = "VAT", reverse_charge = true,
/// note = "..." }` when the partner accounts for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxConfig {
    pub name: String,
    #[serde(default, deserialize_with = "rate_opt")]
    pub rate: Option<Decimal>,
    #[serde(default)]
    pub reverse_charge: bool,
    /// Printed under the tax line (required for a reverse charge: its legal wording).
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfReportedEvents {
    Include,
    Exclude,
}

impl AgreementConfig {
    /// Meters the terms read.
    pub fn meter_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .revenue
            .prices
            .iter()
            .map(|p| p.meter.clone())
            .collect();
        out.extend(self.share.iter().filter_map(|s| s.meter.clone()));
        out.extend(self.bonuses.iter().map(|b| b.meter.clone()));
        out.sort();
        out.dedup();
        out
    }

    /// Whether the partner's own word counts for money (only when stated).
    pub fn counts_self_reported(&self) -> bool {
        self.self_reported_events == Some(SelfReportedEvents::Include)
    }
}

fn one() -> u32 {
    1
}
fn utc() -> String {
    "UTC".into()
}
fn yes() -> bool {
    true
}

/// What revenue is attributed to the partner: priced usage and recorded revenue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueConfig {
    /// Count `revenue.recognized` events from the billing system.
    #[serde(default = "yes")]
    pub recorded: bool,
    /// Only these products' recorded revenue (all when empty).
    #[serde(default)]
    pub products: Vec<String>,
    /// Price plans that turn meters into revenue.
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
}

impl Default for RevenueConfig {
    fn default() -> Self {
        RevenueConfig {
            recorded: true,
            products: Vec::new(),
            prices: Vec::new(),
        }
    }
}

/// A price plan on one meter. Which fields apply depends on `model`; the check at load
/// refuses the ones that do not, so a misplaced price cannot be silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub meter: String,
    pub model: PriceModel,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "exact_opt")]
    pub unit_price: Option<Decimal>,
    #[serde(default)]
    pub package_size: Option<u64>,
    #[serde(default, deserialize_with = "exact_opt")]
    pub package_price: Option<Decimal>,
    #[serde(default)]
    pub tiers: Vec<PriceTier>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceModel {
    /// quantity x unit price.
    PerUnit,
    /// Whole packages; a part-used package is charged in full.
    Package,
    /// Each slice of the quantity at its tier's price (plus each reached tier's flat fee).
    Graduated,
    /// The whole quantity at the price of the tier it reaches (plus that tier's flat fee).
    Volume,
    /// An annual licence fee by seat tier (the meter counts seats), charged per period.
    Licence,
}

impl PriceModel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerUnit => "per_unit",
            Self::Package => "package",
            Self::Graduated => "graduated",
            Self::Volume => "volume",
            Self::Licence => "licence",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    /// Inclusive upper bound; the last tier has none.
    #[serde(default, deserialize_with = "exact_opt")]
    pub up_to: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_opt")]
    pub unit_price: Option<Decimal>,
    /// Charged once when the tier is reached (graduated, volume).
    #[serde(default, deserialize_with = "exact_opt")]
    pub flat_fee: Option<Decimal>,
    /// The licence fee per year at this seat tier (licence).
    #[serde(default, deserialize_with = "exact_opt")]
    pub annual_fee: Option<Decimal>,
}

/// The partner's percentage of the revenue basis: flat, or tiered by a volume meter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareConfig {
    #[serde(default, deserialize_with = "rate_opt")]
    pub rate: Option<Decimal>,
    /// The meter whose value picks the tier.
    #[serde(default)]
    pub meter: Option<String>,
    #[serde(default)]
    pub mode: Option<TierMode>,
    #[serde(default)]
    pub reset: TierReset,
    #[serde(default)]
    pub tiers: Vec<RateTier>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMode {
    /// Each slice of the volume earns its tier's rate on its part of the basis.
    Graduated,
    /// The whole basis earns the rate of the tier the volume reaches.
    Volume,
}

impl TierMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Graduated => "graduated",
            Self::Volume => "volume",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierReset {
    /// Each period's volume stands alone.
    #[default]
    Period,
    /// Volume accumulates over the agreement year (the meter's per-period values summed).
    AgreementYear,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateTier {
    #[serde(default, deserialize_with = "exact_opt")]
    pub up_to: Option<Decimal>,
    #[serde(deserialize_with = "rate")]
    pub rate: Decimal,
}

/// A fee per milestone event, such as a completed implementation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferralConfig {
    #[serde(default = "referral_event")]
    pub event_type: String,
    /// Percentage of the event's `data.contract_value`.
    #[serde(default, deserialize_with = "rate_opt")]
    pub rate: Option<Decimal>,
    /// Or a fixed amount per event.
    #[serde(default, deserialize_with = "exact_opt")]
    pub amount: Option<Decimal>,
}

fn referral_event() -> String {
    "referral.implementation_completed".into()
}

/// A bonus when a meter reaches a threshold in the period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BonusConfig {
    pub meter: String,
    #[serde(deserialize_with = "exact")]
    pub threshold: Decimal,
    #[serde(default, deserialize_with = "exact_opt")]
    pub amount: Option<Decimal>,
    /// Or an extra rate on the revenue basis.
    #[serde(default, deserialize_with = "rate_opt")]
    pub rate: Option<Decimal>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A guaranteed minimum total share per agreement year.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinimumConfig {
    #[serde(deserialize_with = "exact")]
    pub annual: Decimal,
    #[serde(default)]
    pub true_up: TrueUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrueUp {
    /// The statement that closes the agreement year tops the year up.
    #[default]
    YearEnd,
    /// Every statement tops its period up to the annual minimum's share of a year.
    PerPeriod,
}

// ---- exact decimals from config ----

#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Text(String),
    Int(i64),
    Float(f64),
}

fn parse_written(w: Written, percent_ok: bool) -> Result<Decimal, String> {
    match w {
        Written::Int(i) => Ok(Decimal::from(i)),
        Written::Float(f) => Err(format!(
            "{f} is a float; write it as a string (\"{f}\") so it stays exact"
        )),
        Written::Text(s) => {
            let t = s.trim();
            if percent_ok && let Some(p) = t.strip_suffix('%') {
                return Decimal::from_str(p.trim())
                    .map(|d| d / Decimal::ONE_HUNDRED)
                    .map_err(|_| format!("{s:?} is not a percentage like \"18%\""));
            }
            Decimal::from_str(t).map_err(|_| format!("{s:?} is not a decimal number"))
        }
    }
}

fn exact<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    parse_written(Written::deserialize(d)?, false).map_err(serde::de::Error::custom)
}
fn exact_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    exact(d).map(Some)
}
fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    parse_written(Written::deserialize(d)?, true).map_err(serde::de::Error::custom)
}
fn rate_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    rate(d).map(Some)
}

// ---- the checked form ----

/// A version checked at load, with its parsed currency and zone.
#[derive(Debug, Clone)]
pub struct Agreement {
    pub config: AgreementConfig,
    pub currency: Currency,
    pub tz: Tz,
    /// First day of agreement year one (the same for every version of the agreement).
    pub year_anchor: NaiveDate,
    /// First day of the agreement's first version and end of its last (for partial years).
    pub first_day: NaiveDate,
    pub last_day: Option<NaiveDate>,
}

impl Agreement {
    pub fn id(&self) -> &str {
        &self.config.id
    }
    pub fn version(&self) -> u32 {
        self.config.version
    }
    pub fn kind(&self) -> PeriodKind {
        self.config.period
    }
    /// Whether this version applies to `period`.
    pub fn covers(&self, period: Period) -> bool {
        let d = period.start_date();
        d >= self.config.valid_from && self.config.valid_to.is_none_or(|to| d < to)
    }
    /// The agreement year of `period`, and the periods of it the agreement (any version)
    /// covers: fewer than a full year at either end makes a partial year.
    pub fn year_of(&self, period: Period) -> (AgreementYear, Vec<Period>) {
        let year = AgreementYear::of(period, self.year_anchor);
        let covered = year
            .periods(self.kind())
            .into_iter()
            .filter(|p| {
                p.start_date() >= self.first_day
                    && self.last_day.is_none_or(|last| p.start_date() < last)
            })
            .collect();
        (year, covered)
    }
    /// Meters the terms read.
    pub fn meters(&self) -> Vec<String> {
        self.config.meter_names()
    }
}

/// Every agreement, grouped by id with versions in order of validity.
#[derive(Debug, Clone, Default)]
pub struct Agreements {
    by_id: BTreeMap<String, Vec<Agreement>>,
}

impl Agreements {
    /// Check the configured versions against each other, the partners and the meters.
    /// Problems are `(field, message)` with the field as `agreements[i].x`.
    pub fn check(
        configs: &[AgreementConfig],
        partners: &[&str],
        meters: &BTreeMap<String, Aggregation>,
    ) -> Result<Agreements, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut groups: BTreeMap<String, Vec<(usize, &AgreementConfig)>> = BTreeMap::new();
        for (i, c) in configs.iter().enumerate() {
            for (field, msg) in version_problems(c, partners, meters) {
                problems.push((format!("agreements[{i}].{field}"), msg));
            }
            groups.entry(c.id.clone()).or_default().push((i, c));
        }
        let mut by_id = BTreeMap::new();
        for (id, mut versions) in groups {
            versions.sort_by_key(|(_, c)| c.valid_from);
            let (first_i, first) = versions[0];
            for pair in versions.windows(2) {
                let ((i, a), (j, b)) = (pair[0], pair[1]);
                let field = |f: &str| format!("agreements[{j}].{f}");
                if a.valid_to.is_none_or(|to| to > b.valid_from) {
                    problems.push((
                        field("valid_from"),
                        format!(
                            "agreement {id:?} version {} overlaps version {} (agreements[{i}], valid from {}{}); one version must end before the next begins",
                            b.version,
                            a.version,
                            a.valid_from,
                            a.valid_to.map_or(" with no end".into(), |t| format!(" to {t}"))
                        ),
                    ));
                }
                if let Some(to) = a.valid_to
                    && to < b.valid_from
                {
                    problems.push((
                        field("valid_from"),
                        format!(
                            "agreement {id:?} has no version from {to} to {}: start version {} where version {} ends",
                            b.valid_from, b.version, a.version
                        ),
                    ));
                }
                if a.version == b.version {
                    problems.push((
                        field("version"),
                        format!("agreement {id:?} has two versions numbered {}", a.version),
                    ));
                }
                for (name, same) in [
                    ("partner", a.partner == b.partner),
                    ("currency", a.currency == b.currency),
                    ("period", a.period == b.period),
                    ("time_zone", a.time_zone == b.time_zone),
                    (
                        "year_start",
                        b.year_start.is_none() || b.year_start == first.year_start,
                    ),
                ] {
                    if !same {
                        problems.push((
                            field(name),
                            format!(
                                "every version of agreement {id:?} must have the same {name} as agreements[{first_i}]: late usage and annual terms span versions"
                            ),
                        ));
                    }
                }
            }
            let anchor = first.year_start.unwrap_or(first.valid_from);
            // A defaulted anchor is valid_from, whose own check already speaks for it.
            if first.year_start.is_some() && !first.period.is_boundary(anchor) {
                problems.push((
                    format!("agreements[{first_i}].year_start"),
                    format!(
                        "{anchor} must be the first day of a {} period",
                        first.period.as_str()
                    ),
                ));
            }
            let last_day = versions.last().and_then(|(_, c)| c.valid_to);
            let mut checked = Vec::new();
            for (_, c) in &versions {
                let (Some(currency), Ok(tz)) =
                    (Currency::parse(&c.currency), c.time_zone.parse::<Tz>())
                else {
                    continue;
                };
                checked.push(Agreement {
                    config: (*c).clone(),
                    currency,
                    tz,
                    year_anchor: anchor,
                    first_day: first.valid_from,
                    last_day,
                });
            }
            by_id.insert(id, checked);
        }
        if problems.is_empty() {
            Ok(Agreements { by_id })
        } else {
            Err(problems)
        }
    }

    /// Versions of every agreement that cover `period` for `partner` (any agreement's
    /// period kind: the label is parsed per agreement).
    pub fn for_partner(&self, partner: &str) -> Vec<&Vec<Agreement>> {
        self.by_id
            .values()
            .filter(|v| v.first().is_some_and(|a| a.config.partner == partner))
            .collect()
    }

    pub fn versions(&self, id: &str) -> Option<&[Agreement]> {
        self.by_id.get(id).map(Vec::as_slice)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// The version of agreement `id` that applies to `period`.
    pub fn version_for(&self, id: &str, period: Period) -> Option<&Agreement> {
        self.by_id.get(id)?.iter().find(|a| a.covers(period))
    }
}

fn version_problems(
    c: &AgreementConfig,
    partners: &[&str],
    meters: &BTreeMap<String, Aggregation>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |f: &str, m: String| out.push((f.to_owned(), m));
    let id_ok = !c.id.is_empty()
        && c.id.len() <= 64
        && c.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !id_ok {
        push(
            "id",
            format!(
                "{:?} is not a valid agreement id: use 1-64 of a-z, 0-9, '-', '_'",
                c.id
            ),
        );
    }
    if !partners.contains(&c.partner.as_str()) {
        push(
            "partner",
            format!(
                "no partner {:?} is configured{}",
                c.partner,
                crate::config::messages::hint(&c.partner, partners.iter().copied())
            ),
        );
    }
    if c.version == 0 {
        push("version", "must be at least 1".into());
    }
    if Currency::parse(&c.currency).is_none() {
        push(
            "currency",
            format!(
                "{:?} is not an ISO 4217 currency code the gateway knows (e.g. USD, EUR, JPY)",
                c.currency
            ),
        );
    }
    if c.time_zone.parse::<Tz>().is_err() {
        push(
            "time_zone",
            format!(
                "{:?} is not an IANA time zone such as America/New_York or UTC",
                c.time_zone
            ),
        );
    }
    if !c.period.is_boundary(c.valid_from) {
        push(
            "valid_from",
            format!(
                "{} must be the first day of a {} period",
                c.valid_from,
                c.period.as_str()
            ),
        );
    }
    if let Some(to) = c.valid_to {
        if to <= c.valid_from {
            push("valid_to", format!("{to} must be after valid_from"));
        } else if !c.period.is_boundary(to) {
            push(
                "valid_to",
                format!(
                    "{to} must be the first day of a {} period (the first day it no longer applies)",
                    c.period.as_str()
                ),
            );
        }
    }
    let mut meter_ok = |field: &str, name: &str| match meters.get(name) {
        None => out.push((
            field.to_owned(),
            format!(
                "no meter {name:?} is configured{}",
                crate::config::messages::hint(name, meters.keys().map(String::as_str))
            ),
        )),
        Some(Aggregation::Latest) => out.push((
            field.to_owned(),
            format!(
                "meter {name:?} is LATEST; terms need a number (COUNT, SUM, UNIQUE_COUNT or MAX)"
            ),
        )),
        Some(_) => {}
    };
    for (i, p) in c.revenue.prices.iter().enumerate() {
        meter_ok(&format!("revenue.prices[{i}].meter"), &p.meter);
    }
    if let Some(s) = &c.share
        && let Some(m) = &s.meter
    {
        meter_ok("share.meter", m);
    }
    for (i, b) in c.bonuses.iter().enumerate() {
        meter_ok(&format!("bonuses[{i}].meter"), &b.meter);
    }
    for (i, p) in c.revenue.prices.iter().enumerate() {
        price_problems(&mut out, &format!("revenue.prices[{i}]"), p);
    }
    if let Some(s) = &c.share {
        match (s.rate, s.tiers.is_empty()) {
            (Some(r), true) => rate_ok(&mut out, "share.rate", r),
            (None, false) => {
                if s.meter.is_none() {
                    out.push((
                        "share.meter".into(),
                        "tiered shares need the meter whose volume picks the tier".into(),
                    ));
                }
                if s.mode.is_none() {
                    out.push((
                        "share.mode".into(),
                        "tiered shares need mode = \"graduated\" or \"volume\"".into(),
                    ));
                }
                tier_bounds(&mut out, "share", s.tiers.iter().map(|t| t.up_to).collect());
                for (j, t) in s.tiers.iter().enumerate() {
                    rate_ok(&mut out, &format!("share.tiers[{j}].rate"), t.rate);
                }
            }
            (Some(_), false) => out.push((
                "share".into(),
                "give either a flat rate or tiers, not both".into(),
            )),
            (None, true) => out.push(("share".into(), "needs a rate or tiers".into())),
        }
    }
    for (i, r) in c.referrals.iter().enumerate() {
        let f = format!("referrals[{i}]");
        match (r.rate, r.amount) {
            (Some(rate), None) => rate_ok(&mut out, &format!("{f}.rate"), rate),
            (None, Some(a)) => nonneg(&mut out, &f, "amount", a),
            _ => out.push((f, "give exactly one of rate or amount".into())),
        }
    }
    for (i, b) in c.bonuses.iter().enumerate() {
        let f = format!("bonuses[{i}]");
        match (b.rate, b.amount) {
            (Some(rate), None) => rate_ok(&mut out, &format!("{f}.rate"), rate),
            (None, Some(a)) => nonneg(&mut out, &f, "amount", a),
            _ => out.push((f.clone(), "give exactly one of rate or amount".into())),
        }
        if b.threshold < Decimal::ZERO {
            out.push((format!("{f}.threshold"), "must not be negative".into()));
        }
    }
    if let Some(m) = &c.minimum {
        nonneg(&mut out, "minimum", "annual", m.annual);
    }
    if let Some(p) = &c.payment
        && p.terms_days > 366
    {
        out.push((
            "payment.terms_days".into(),
            format!(
                "{} days is more than a year; payment terms are net 0 to 366 days",
                p.terms_days
            ),
        ));
    }
    if let Some(w) = &c.withholding {
        rate_ok(&mut out, "withholding.rate", w.rate);
        if w.reference.trim().is_empty() {
            out.push((
                "withholding.reference".into(),
                "must name the legal basis of the withholding: it is printed beside the amount"
                    .into(),
            ));
        }
        if let Some(kinds) = &w.applies_to {
            if kinds.is_empty() {
                out.push((
                    "withholding.applies_to".into(),
                    "is empty: leave it out to withhold from every owed line".into(),
                ));
            }
            if kinds.contains(&crate::statements::model::LineKind::Revenue) {
                out.push((
                    "withholding.applies_to".into(),
                    "\"revenue\" is the basis, not owed: withhold from share, referral, bonus, minimum_true_up, carried_late_usage or adjustment".into(),
                ));
            }
        }
    }
    if let Some(t) = &c.tax {
        if t.name.trim().is_empty() {
            out.push((
                "tax.name".into(),
                "must not be empty (\"VAT\", \"GST\")".into(),
            ));
        }
        match (t.rate, t.reverse_charge) {
            (Some(r), false) => rate_ok(&mut out, "tax.rate", r),
            (None, false) => out.push((
                "tax.rate".into(),
                "is required unless reverse_charge = true".into(),
            )),
            (Some(_), true) => out.push((
                "tax.rate".into(),
                "does not apply to a reverse charge: the partner accounts for the tax, so none is added".into(),
            )),
            (None, true) => {}
        }
        if t.reverse_charge && t.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
            out.push((
                "tax.note".into(),
                "is required for a reverse charge: the wording the statement must carry (\"Reverse charge: VAT to be accounted for by the recipient, Article 196 Directive 2006/112/EC\")".into(),
            ));
        }
    }
    if c.share.is_none() && c.referrals.is_empty() && c.bonuses.is_empty() && c.minimum.is_none() {
        out.push((
            "share".into(),
            "the agreement has no terms: give a share, referrals, bonuses or a minimum".into(),
        ));
    }
    out
}

fn price_problems(out: &mut Vec<(String, String)>, f: &str, p: &PriceConfig) {
    let model = p.model.as_str();
    let mut needs = |name: &str, present: bool, wanted: bool| {
        if present && !wanted {
            out.push((
                format!("{f}.{name}"),
                format!("does not apply to model {model:?}"),
            ));
        } else if !present && wanted {
            out.push((
                format!("{f}.{name}"),
                format!("is required by model {model:?}"),
            ));
        }
    };
    let tiered = matches!(
        p.model,
        PriceModel::Graduated | PriceModel::Volume | PriceModel::Licence
    );
    needs(
        "unit_price",
        p.unit_price.is_some(),
        p.model == PriceModel::PerUnit,
    );
    needs(
        "package_size",
        p.package_size.is_some(),
        p.model == PriceModel::Package,
    );
    needs(
        "package_price",
        p.package_price.is_some(),
        p.model == PriceModel::Package,
    );
    needs("tiers", !p.tiers.is_empty(), tiered);
    if p.package_size == Some(0) {
        out.push((format!("{f}.package_size"), "must be at least 1".into()));
    }
    for (name, v) in [
        ("unit_price", p.unit_price),
        ("package_price", p.package_price),
    ] {
        if let Some(v) = v {
            nonneg(out, f, name, v);
        }
    }
    if !tiered || p.tiers.is_empty() {
        return;
    }
    tier_bounds(out, f, p.tiers.iter().map(|t| t.up_to).collect());
    for (j, t) in p.tiers.iter().enumerate() {
        let at = format!("{f}.tiers[{j}]");
        if p.model == PriceModel::Licence {
            if t.annual_fee.is_none() {
                out.push((
                    format!("{at}.annual_fee"),
                    "is required by model \"licence\"".into(),
                ));
            }
            if t.unit_price.is_some() || t.flat_fee.is_some() {
                out.push((at.clone(), "licence tiers take annual_fee only".into()));
            }
        } else {
            if t.unit_price.is_none() && t.flat_fee.is_none() {
                out.push((at.clone(), "needs unit_price, flat_fee or both".into()));
            }
            if t.annual_fee.is_some() {
                out.push((
                    format!("{at}.annual_fee"),
                    format!("does not apply to model {model:?}"),
                ));
            }
        }
        for (name, v) in [
            ("unit_price", t.unit_price),
            ("flat_fee", t.flat_fee),
            ("annual_fee", t.annual_fee),
        ] {
            if let Some(v) = v {
                nonneg(out, &at, name, v);
            }
        }
    }
}

fn nonneg(out: &mut Vec<(String, String)>, at: &str, name: &str, v: Decimal) {
    if v < Decimal::ZERO {
        out.push((format!("{at}.{name}"), format!("{v} must not be negative")));
    }
}

fn rate_ok(out: &mut Vec<(String, String)>, field: &str, r: Decimal) {
    if r < Decimal::ZERO || r > Decimal::ONE {
        out.push((
            field.to_owned(),
            format!("{r} is not a rate between 0 and 1 (write \"0.18\" or \"18%\")"),
        ));
    }
}

/// Tiers: upper bounds strictly increasing, only the last one open.
fn tier_bounds(out: &mut Vec<(String, String)>, at: &str, bounds: Vec<Option<Decimal>>) {
    if bounds.is_empty() {
        out.push((format!("{at}.tiers"), "needs at least one tier".into()));
        return;
    }
    let mut prev: Option<Decimal> = None;
    for (j, b) in bounds.iter().enumerate() {
        let last = j + 1 == bounds.len();
        let field = format!("{at}.tiers[{j}].up_to");
        match b {
            None if !last => out.push((field, "only the last tier may be open-ended".into())),
            None => {}
            Some(v) => {
                if prev.is_some_and(|p| *v <= p) || *v <= Decimal::ZERO {
                    out.push((
                        field.clone(),
                        format!("{v} must be above zero and above the tier before"),
                    ));
                }
                if last {
                    out.push((field, "the last tier must be open-ended (no up_to)".into()));
                }
            }
        }
        if let Some(v) = b {
            prev = Some(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Layer};

    const BASE: &str = r#"
[[partners]]
id = "p"
name = "P"
kind = "ehr"
[[meters]]
name = "learners"
event_types = ["lti.launch"]
aggregation = "UNIQUE_COUNT"
value = "subject"
[[meters]]
name = "last"
event_types = ["x"]
aggregation = "LATEST"
value = "$.v"
"#;

    /// Every problem config loading reports for these agreements, as "field: message".
    fn problems(agreements: &str) -> Vec<String> {
        let layers = vec![
            Layer {
                origin: "base.toml".into(),
                text: BASE.into(),
            },
            Layer {
                origin: "agreements.toml".into(),
                text: agreements.into(),
            },
        ];
        match Config::from_layers(layers, Vec::new()) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect()
            }
        }
    }

    fn has(problems: &[String], field: &str, needle: &str) -> bool {
        problems
            .iter()
            .any(|p| p.starts_with(&format!("{field}:")) && p.contains(needle))
    }

    #[test]
    fn overlapping_versions_are_refused_naming_both() {
        let p = problems(
            r#"
[[agreements]]
id = "a"
partner = "p"
version = 1
valid_from = "2026-01-01"
valid_to = "2026-07-01"
currency = "USD"
share = { rate = "15%" }
[[agreements]]
id = "a"
partner = "p"
version = 2
valid_from = "2026-06-01"
currency = "USD"
share = { rate = "18%" }
"#,
        );
        assert!(
            has(
                &p,
                "agreements[id = \"a\", version = 2].valid_from",
                "overlaps version 1"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn an_open_ended_version_followed_by_another_overlaps_it() {
        let p = problems(
            r#"
[[agreements]]
id = "a"
partner = "p"
valid_from = "2026-01-01"
currency = "USD"
share = { rate = "15%" }
[[agreements]]
id = "a"
partner = "p"
version = 2
valid_from = "2026-07-01"
currency = "EUR"
share = { rate = "18%" }
"#,
        );
        assert!(
            has(
                &p,
                "agreements[id = \"a\", version = 2].valid_from",
                "with no end"
            ),
            "{p:?}"
        );
        assert!(
            has(
                &p,
                "agreements[id = \"a\", version = 2].currency",
                "same currency"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn bad_terms_are_each_named() {
        let p = problems(
            r#"
[[agreements]]
id = "Bad Id"
partner = "nobody"
valid_from = "2026-01-15"
currency = "usd"
time_zone = "Mars/Olympus"
[agreements.share]
meter = "last"
tiers = [{ up_to = "100", rate = "150%" }, { up_to = "50", rate = "10%" }]
[[agreements.revenue.prices]]
meter = "missing"
model = "per_unit"
package_size = 10
[[agreements.referrals]]
rate = "12%"
amount = "10.00"
"#,
        );
        for (field, needle) in [
            ("agreements[id = \"Bad Id\"].id", "not a valid agreement id"),
            (
                "agreements[id = \"Bad Id\"].partner",
                "no partner \"nobody\"",
            ),
            (
                "agreements[id = \"Bad Id\"].valid_from",
                "first day of a monthly period",
            ),
            ("agreements[id = \"Bad Id\"].currency", "ISO 4217"),
            ("agreements[id = \"Bad Id\"].time_zone", "IANA"),
            ("agreements[id = \"Bad Id\"].share.meter", "LATEST"),
            ("agreements[id = \"Bad Id\"].share.mode", "graduated"),
            (
                "agreements[id = \"Bad Id\"].share.tiers[0].rate",
                "between 0 and 1",
            ),
            (
                "agreements[id = \"Bad Id\"].share.tiers[1].up_to",
                "above the tier before",
            ),
            (
                "agreements[id = \"Bad Id\"].revenue.prices[0].meter",
                "no meter \"missing\"",
            ),
            (
                "agreements[id = \"Bad Id\"].revenue.prices[0].unit_price",
                "required",
            ),
            (
                "agreements[id = \"Bad Id\"].revenue.prices[0].package_size",
                "does not apply",
            ),
            (
                "agreements[id = \"Bad Id\"].referrals[0]",
                "exactly one of rate or amount",
            ),
        ] {
            assert!(has(&p, field, needle), "{field} / {needle}: {p:?}");
        }
    }

    #[test]
    fn float_amounts_in_config_are_refused_for_exactness() {
        let p = problems(
            r#"
[[agreements]]
id = "a"
partner = "p"
valid_from = "2026-01-01"
currency = "USD"
share = { rate = 0.18 }
"#,
        );
        assert!(
            p.iter().any(|m| m.contains("write it as a string")),
            "{p:?}"
        );
    }

    #[test]
    fn the_sample_agreements_load() {
        let layers = ["partners.toml", "meters.toml", "agreements.toml"]
            .iter()
            .map(|f| Layer {
                origin: (*f).into(),
                text: std::fs::read_to_string(format!("config/{f}")).unwrap(),
            })
            .collect();
        let config = Config::from_layers(layers, Vec::new()).unwrap();
        let set = config.checked_agreements().unwrap();
        assert_eq!(set.ids().count(), 4);
        assert_eq!(set.versions("epic-revenue-share").unwrap().len(), 2);
    }
}
