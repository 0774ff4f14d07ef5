//! What a statement says: its lines and totals, the document that is hashed when it is
//! finalized, and the record around it (status, number, who did what).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a line is for. Revenue lines show the basis; every other kind is owed.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Revenue,
    Share,
    Referral,
    Bonus,
    MinimumTrueUp,
    /// Usage of an earlier, finalized period that reached the ledger after it was finalized.
    CarriedLateUsage,
    Adjustment,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revenue => "revenue",
            Self::Share => "share",
            Self::Referral => "referral",
            Self::Bonus => "bonus",
            Self::MinimumTrueUp => "minimum_true_up",
            Self::CarriedLateUsage => "carried_late_usage",
            Self::Adjustment => "adjustment",
        }
    }
    /// Whether the line is part of what the partner is owed (revenue lines are the basis).
    pub fn payable(self) -> bool {
        self != Self::Revenue
    }
    /// Earned by the partner's own activity: what a minimum guarantee is measured against.
    pub fn earned(self) -> bool {
        matches!(self, Self::Share | Self::Referral | Self::Bonus)
    }
}

/// One traceable line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    pub kind: LineKind,
    pub description: String,
    /// The meter a priced or tiered line reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
    /// The product of recorded revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
    /// The tier, 1-based, with its range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// For carried lines: the period the usage belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// For carried lines: the kind of line that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_kind: Option<LineKind>,
    /// An event id (referral) or adjustment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Who added an adjustment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Recorded revenue and referrals (form 2 on): the customer the revenue or milestone
    /// is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Recorded revenue (form 2 on): the invoice, where the billing event names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<String>,
    /// Recorded revenue (form 2 on): the line holds refunds (negative amounts), kept apart
    /// from what was invoiced so gross, refunds and net can each be read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refund: bool,
    /// Priced and tiered lines (form 2 on): the tier as numbers, for words a person reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_range: Option<TierRange>,
    /// Licence lines (form 2 on): the period's fraction of the annual fee is 1/this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods_per_year: Option<u32>,
    /// Carried lines (form 2 on): what changed in the late period, beside the amounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// Who recorded the events behind the line, with how many each (usage lines: the
    /// events the meter selects; recorded revenue and referrals: their events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recorded_by: Vec<RecordedBy>,
    /// The exact value before rounding.
    pub precise: Decimal,
    /// Rounded to the currency's minor unit with the agreement's rule.
    pub amount: Decimal,
}

impl Line {
    /// Owed to the partner: every line but revenue (a carried revenue difference too, which
    /// is shown beside the carried share it produced).
    pub fn payable(&self) -> bool {
        self.kind.payable() && self.carried_kind != Some(LineKind::Revenue)
    }

    pub fn new(kind: LineKind, description: impl Into<String>) -> Line {
        Line {
            kind,
            description: description.into(),
            meter: None,
            product: None,
            quantity: None,
            unit_price: None,
            rate: None,
            tier: None,
            period: None,
            carried_kind: None,
            reference: None,
            author: None,
            customer: None,
            invoice: None,
            refund: false,
            tier_range: None,
            periods_per_year: None,
            change: None,
            recorded_by: Vec::new(),
            precise: Decimal::ZERO,
            amount: Decimal::ZERO,
        }
    }
}

/// A tier as numbers: tier `number` (1-based) holds what is above `above` up to and
/// including `up_to` (no bound: from zero, or without limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TierRange {
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<Decimal>,
}

/// What a carried line's difference consists of: the late period's figure as issued
/// (`before`) and as recomputed with the late events (`after`), for the line's quantity.
/// The line's `quantity` is `after - before`; its amount is the difference in money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    pub quantity_before: Decimal,
    pub quantity_after: Decimal,
    pub amount_before: Decimal,
    pub amount_after: Decimal,
}

/// Who recorded some of a line's events (`metering::authority`): the stored kind
/// (`gateway`, `webhook`, `partner_key`, ...), which key, source or file, and how many.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct RecordedBy {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub events: u64,
}

impl RecordedBy {
    /// As people read it: "recorded by the webhook `billing`".
    pub fn describe(&self) -> String {
        crate::metering::authority::describe(&self.kind, self.reference.as_deref())
    }
}

/// Lines' provenance as one text: "3 recorded by the webhook `billing`; 1 reported by ...".
pub fn describe_recorded_by(list: &[RecordedBy]) -> String {
    list.iter()
        .map(|r| format!("{} {}", r.events, r.describe()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The statement's content: everything the hash covers. Its serde form is the API's (and
/// the store's); the bytes the hash is taken over are [`Document::canonical`]'s, a form
/// frozen so that statements issued under it verify forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Document {
    pub company: String,
    /// The partner's id (stored documents written before the API had one name for it say
    /// `partner_id`).
    #[serde(rename = "partner", alias = "partner_id")]
    pub partner_id: String,
    pub partner_name: String,
    pub agreement_id: String,
    pub agreement_version: u32,
    pub period: String,
    #[serde(with = "crate::time::api")]
    pub period_start: DateTime<Utc>,
    #[serde(with = "crate::time::api")]
    pub period_end: DateTime<Utc>,
    pub time_zone: String,
    pub currency: String,
    pub rounding: String,
    /// The ledger as of this instant (events received until then) is what was counted.
    #[serde(with = "crate::time::api")]
    pub ledger_as_of: DateTime<Utc>,
    /// Late usage received after this instant (the previous statement's cut-off) is carried.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::api_opt"
    )]
    pub carried_since: Option<DateTime<Utc>>,
    /// The period had not ended when this was computed: a draft only.
    pub provisional: bool,
    /// Lines carry who recorded their events (statements computed since provenance is kept;
    /// older issued ones verify without it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provenance: bool,
    /// `included` or `excluded`: what the agreement did with events the partner reported
    /// itself, when there were any in the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_reported_events: Option<String>,
    pub lines: Vec<Line>,
    /// Sum of rounded revenue lines: the basis shares are computed on.
    pub revenue_basis: Decimal,
    /// Sum of rounded payable lines: what the partner is owed.
    pub total: Decimal,
    /// Sum of precise payable lines, for reference.
    pub total_precise: Decimal,
    /// Which form of the document this is: 1 for statements computed before parties,
    /// settlement and per-customer revenue existed (they verify as they were computed), 2
    /// since.
    #[serde(default = "form_one")]
    pub form: u32,
    /// Who the statement is between, as issued (form 2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parties: Option<Parties>,
    /// From the total owed to the amount payable: withholding, tax, payment terms (form 2
    /// on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
}

/// The form new statements are computed in.
pub const CURRENT_FORM: u32 = 2;

fn form_one() -> u32 {
    1
}

/// Both sides of a statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Parties {
    pub company: Party,
    pub partner: Party,
}

/// One side's legal details as printed on the statement.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Party {
    pub legal_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<String>,
    /// VAT, GST or tax registration number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<String>,
    /// Who to ask about the statement (the company's finance contact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contact: Vec<String>,
    /// The partner: a reference to the payment details on file ("bank account ending
    /// 4821"), never the details themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_details: Option<String>,
    /// The partner: the locale its documents are formatted in (BCP 47).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// What the partner is paid: the total owed, less withholding, plus tax, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Settlement {
    /// Payable lines other than adjustments: shares, referrals, bonuses, minimum
    /// true-ups, late usage.
    pub gross_share: Decimal,
    /// Adjustment lines.
    pub adjustments: Decimal,
    /// `gross_share + adjustments`: the document's total.
    pub net_share: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withholding: Option<Withholding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<Tax>,
    /// `net_share - withholding + tax`.
    pub amount_payable: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_terms: Option<PaymentTerms>,
    /// The payment's due date: known when computed for terms from the period's end, at
    /// finalization for terms from finalization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<chrono::NaiveDate>,
}

/// Tax withheld from the payment and paid to an authority on the partner's behalf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Withholding {
    pub rate: Decimal,
    /// The kinds of line it is withheld from.
    pub applies_to: Vec<LineKind>,
    /// Sum of those lines (no withholding when it is not positive).
    pub base: Decimal,
    /// `base x rate`, exact.
    pub precise: Decimal,
    /// Rounded with the agreement's rule; subtracted from the payment.
    pub amount: Decimal,
    /// The legal basis, printed beside the amount.
    pub reference: String,
}

/// Tax on the share (VAT, GST): added to the payment, or accounted for by the recipient
/// under a reverse charge (then the amount is zero and the note says so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tax {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
    pub base: Decimal,
    pub precise: Decimal,
    pub amount: Decimal,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverse_charge: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Net N days from the period's end (its last local day) or from finalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentTerms {
    pub days: u32,
    pub from: TermsFrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TermsFrom {
    PeriodEnd,
    Finalization,
}

impl TermsFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PeriodEnd => "period_end",
            Self::Finalization => "finalization",
        }
    }
}

impl Document {
    /// The document as it was computed before provenance was kept, for verifying a
    /// statement issued then.
    pub fn without_provenance(mut self) -> Document {
        self.provenance = false;
        self.self_reported_events = None;
        for l in &mut self.lines {
            l.recorded_by.clear();
        }
        self
    }

    /// [`Document::sum`], with the revenue basis and total written to the currency's minor
    /// units (as every statement shows them).
    pub fn sum_rounded(&mut self, minor_units: u32) {
        self.sum();
        self.revenue_basis.rescale(minor_units);
        self.total.rescale(minor_units);
    }

    /// Totals from the lines: the total is the sum of rounded payable lines.
    pub fn sum(&mut self) {
        self.revenue_basis = self
            .lines
            .iter()
            .filter(|l| l.kind == LineKind::Revenue)
            .map(|l| l.amount)
            .sum();
        self.total = self
            .lines
            .iter()
            .filter(|l| l.payable())
            .map(|l| l.amount)
            .sum();
        self.total_precise = self
            .lines
            .iter()
            .filter(|l| l.payable())
            .map(|l| l.precise)
            .sum::<Decimal>()
            .normalize();
    }

    /// The canonical bytes the hash is taken over, with the number the statement is issued
    /// under (the number is part of what was issued). The form is frozen: the fields in
    /// this order, `partner_id`, instants as chrono writes them (`Z`, fraction only when
    /// not zero), decimals as strings. The API's form may change; this may not, or
    /// statements issued before stop verifying.
    pub fn canonical(&self, number: i64) -> Vec<u8> {
        #[derive(Serialize)]
        struct Canonical<'a> {
            company: &'a str,
            partner_id: &'a str,
            partner_name: &'a str,
            agreement_id: &'a str,
            agreement_version: u32,
            period: &'a str,
            period_start: &'a DateTime<Utc>,
            period_end: &'a DateTime<Utc>,
            time_zone: &'a str,
            currency: &'a str,
            rounding: &'a str,
            ledger_as_of: &'a DateTime<Utc>,
            #[serde(skip_serializing_if = "Option::is_none")]
            carried_since: Option<&'a DateTime<Utc>>,
            provisional: bool,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            provenance: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            self_reported_events: Option<&'a str>,
            lines: &'a [Line],
            revenue_basis: &'a Decimal,
            total: &'a Decimal,
            total_precise: &'a Decimal,
            // Form 2 on: after every form-1 field, and absent from form-1 documents, so
            // those hash exactly as they were issued.
            #[serde(skip_serializing_if = "is_form_one")]
            form: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            parties: Option<&'a Parties>,
            #[serde(skip_serializing_if = "Option::is_none")]
            settlement: Option<&'a Settlement>,
        }
        #[derive(Serialize)]
        struct Issued<'a> {
            number: i64,
            document: Canonical<'a>,
        }
        let d = self;
        serde_json::to_vec(&Issued {
            number,
            document: Canonical {
                company: &d.company,
                partner_id: &d.partner_id,
                partner_name: &d.partner_name,
                agreement_id: &d.agreement_id,
                agreement_version: d.agreement_version,
                period: &d.period,
                period_start: &d.period_start,
                period_end: &d.period_end,
                time_zone: &d.time_zone,
                currency: &d.currency,
                rounding: &d.rounding,
                ledger_as_of: &d.ledger_as_of,
                carried_since: d.carried_since.as_ref(),
                provisional: d.provisional,
                provenance: d.provenance,
                self_reported_events: d.self_reported_events.as_deref(),
                lines: &d.lines,
                revenue_basis: &d.revenue_basis,
                total: &d.total,
                total_precise: &d.total_precise,
                form: d.form,
                parties: d.parties.as_ref(),
                settlement: d.settlement.as_ref(),
            },
        })
        .unwrap_or_default()
    }

    /// SHA-256 of the canonical content, as lowercase hex.
    pub fn hash(&self, number: i64) -> String {
        hex::encode(Sha256::digest(self.canonical(number)))
    }
}

fn is_form_one(form: &u32) -> bool {
    *form <= 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Finalized,
    Void,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Finalized => "finalized",
            Self::Void => "void",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "draft" => Some(Self::Draft),
            "finalized" => Some(Self::Finalized),
            "void" => Some(Self::Void),
            _ => None,
        }
    }
}

/// A stored statement. Money is a decimal string, rounded per line to the currency's minor
/// unit with the agreement's rule; `precise` keeps the exact value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Statement {
    pub id: String,
    pub status: Status,
    /// The partner's statement number, from finalization on.
    pub number: Option<i64>,
    /// `{PARTNER}-{number:05}` for people.
    pub number_display: Option<String>,
    pub hash: Option<String>,
    pub document: Document,
    #[serde(with = "crate::time::api")]
    pub computed_at: DateTime<Utc>,
    #[serde(with = "crate::time::api_opt")]
    pub finalized_at: Option<DateTime<Utc>>,
    pub finalized_by: Option<String>,
    #[serde(with = "crate::time::api_opt")]
    pub voided_at: Option<DateTime<Utc>>,
    pub voided_by: Option<String>,
    pub void_reason: Option<String>,
    /// The voided statement this one replaces.
    pub replaces: Option<String>,
    /// For a void statement: the statement that replaces it, once there is one.
    pub replaced_by: Option<String>,
    /// On the answer to a generate or run only (not stored): events of the period the
    /// ledger received after this draft's cut-off, which it does not count yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settling: Option<Settling>,
}

/// A draft computed inside the ledger's settle window (`statements.settle_secs`): what it
/// leaves out for now, and when a recompute includes everything received so far.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Settling {
    /// The ledger cut-off the draft counts up to (its `document.ledger_as_of`).
    #[serde(with = "crate::time::api")]
    pub cut_off: DateTime<Utc>,
    /// Events of the period received after the cut-off.
    pub events_after_cut_off: i64,
    /// From this time on, a recompute (generate again, or `--wait` on the CLI) counts every
    /// event received until now.
    #[serde(with = "crate::time::api")]
    pub complete_at: DateTime<Utc>,
}

pub fn number_display(partner: &str, number: i64) -> String {
    format!("{}-{number:05}", partner.to_ascii_uppercase())
}

#[cfg(test)]
mod canonical_tests {
    use super::*;
    use chrono::TimeZone;

    fn doc() -> Document {
        Document {
            company: "Acme".into(),
            partner_id: "epic".into(),
            partner_name: "Epic".into(),
            agreement_id: "epic-2026".into(),
            agreement_version: 2,
            period: "2026-11".into(),
            period_start: Utc.with_ymd_and_hms(2026, 11, 1, 4, 0, 0).unwrap(),
            period_end: Utc.with_ymd_and_hms(2026, 12, 1, 5, 0, 0).unwrap(),
            time_zone: "America/New_York".into(),
            currency: "USD".into(),
            rounding: "half_even".into(),
            ledger_as_of: Utc.timestamp_micros(1_796_000_000_123_456).unwrap(),
            carried_since: None,
            provisional: false,
            provenance: true,
            self_reported_events: None,
            lines: vec![],
            revenue_basis: Decimal::new(1050, 2),
            total: Decimal::new(105, 2),
            total_precise: Decimal::new(105, 2),
            form: 1,
            parties: None,
            settlement: None,
        }
    }

    /// The bytes a statement's hash is taken over never change with the API's form: this
    /// is what every statement issued so far was hashed as.
    #[test]
    fn the_canonical_form_is_frozen() {
        let bytes = doc().canonical(7);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"number":7,"document":{"company":"Acme","partner_id":"epic","partner_name":"Epic","agreement_id":"epic-2026","agreement_version":2,"period":"2026-11","period_start":"2026-11-01T04:00:00Z","period_end":"2026-12-01T05:00:00Z","time_zone":"America/New_York","currency":"USD","rounding":"half_even","ledger_as_of":"2026-11-30T00:53:20.123456Z","provisional":false,"provenance":true,"lines":[],"revenue_basis":"10.50","total":"1.05","total_precise":"1.05"}}"#
        );
    }

    /// The API (and the store, from now on) writes one name and one time form; documents
    /// stored in the old form still read, and hash the same.
    #[test]
    fn the_api_form_reads_back_and_old_stored_documents_still_read() {
        let d = doc();
        let api = serde_json::to_value(&d).unwrap();
        assert_eq!(api["partner"], "epic");
        assert!(api.get("partner_id").is_none());
        assert_eq!(api["period_start"], "2026-11-01T04:00:00.000000Z");
        let back: Document = serde_json::from_value(api).unwrap();
        assert_eq!(back, d);
        let old = String::from_utf8(d.canonical(7)).unwrap();
        let old: serde_json::Value = serde_json::from_str(&old).unwrap();
        let read: Document = serde_json::from_value(old["document"].clone()).unwrap();
        assert_eq!(read.hash(7), d.hash(7));
    }
}
