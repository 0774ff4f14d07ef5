//! The partner-facing layout of a statement of form 2 on: who it is between (both parties'
//! legal details), what is paid and when (the settlement), the detail a partner reconciles
//! (revenue per customer and invoice, tier words, the difference late usage made), and a
//! verification block. Numbers and dates are the partner's locale's; no internal ids,
//! precise values or ledger internals are printed. Form-1 statements keep the layout they
//! were issued with (`super::layout`).

use rust_decimal::Decimal;

use super::layout::{
    AMBER, BLACK, Band, Cell, Flow, GRAY, LEFT, LIGHT, RIGHT, Style, WIDTH, height, pad, para, row,
    rule_above, rule_below, style,
};
use super::text::Weight;
use super::{
    LOGO_H, LOGO_W, Letterhead, local_dates, minor_units, rounding_name, shown_number, void_notice,
};
use crate::statements::locale::Formats;
use crate::statements::model::{
    Document, Line, LineKind, Party, Settlement, Statement, Status, TermsFrom, TierRange,
};

const COL_DESC: (f32, f32) = (LEFT, 265.0);
const COL_QTY: (f32, f32) = (320.0, 75.0);
const COL_PRICE: (f32, f32) = (400.0, 70.0);
const COL_AMOUNT: (f32, f32) = (475.0, RIGHT - 475.0);

const COMPANY: Style = style(Weight::Bold, 11.0, BLACK, 15.0);
const ADDRESS: Style = style(Weight::Regular, 8.5, BLACK, 11.0);
const TITLE: Style = style(Weight::Bold, 16.0, BLACK, 20.0);
const NUMBER: Style = style(Weight::Bold, 11.0, BLACK, 15.0);
const META: Style = style(Weight::Regular, 8.5, BLACK, 11.0);
const LABEL: Style = style(Weight::Bold, 8.0, GRAY, 11.0);
const NOTICE: Style = style(Weight::Bold, 9.5, AMBER, 13.0);
const SECTION: Style = style(Weight::Bold, 11.0, BLACK, 16.0);
const NOTE: Style = style(Weight::Regular, 7.5, GRAY, 10.0);
const HEAD: Style = style(Weight::Bold, 7.5, BLACK, 9.5);
const BODY: Style = style(Weight::Regular, 8.0, BLACK, 10.5);
const DETAIL: Style = style(Weight::Regular, 7.0, GRAY, 9.0);
const BODY_BOLD: Style = style(Weight::Bold, 8.5, BLACK, 11.0);
const TOTAL: Style = style(Weight::Bold, 10.5, BLACK, 14.0);
const MONO: Style = style(Weight::Regular, 7.0, BLACK, 9.5);

pub(super) fn layout(s: &Statement, letterhead: &Letterhead<'_>, f: &Formats) -> Flow {
    let d = &s.document;
    let minor = minor_units(&d.currency);
    let mut flow = Flow::new();
    flow.keep(&header(s, letterhead, f));
    if s.status == Status::Void {
        flow.gap(8.0);
        flow.keep(&void_notice(s));
    }
    if s.status == Status::Draft {
        flow.gap(6.0);
        flow.keep(&para(
            "Draft for review: not issued, no statement number yet, and it may change before it is issued.",
            NOTICE,
        ));
    }
    if d.provisional {
        flow.keep(&para(
            "Provisional: the period had not ended when this was computed.",
            NOTICE,
        ));
    }
    flow.gap(10.0);
    flow.keep(&parties(s, f));
    if let Some(settlement) = &d.settlement {
        summary(&mut flow, d, settlement, f, minor);
    }
    let revenue: Vec<&Line> = d
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Revenue)
        .collect();
    let mut groups: Vec<Vec<Band>> = revenue.iter().map(|l| line_row(l, f, minor)).collect();
    if groups.is_empty() {
        groups.push(para("No revenue in this period.", BODY));
    }
    groups.push(subtotal(
        &format!("Revenue basis ({})", d.currency),
        &f.amount(d.revenue_basis, minor),
    ));
    section(
        &mut flow,
        "Revenue basis",
        "Revenue the share is computed on: it is not owed to the partner. Recorded revenue is listed per customer and invoice; refunds are lines of their own.",
        groups,
    );
    let owed: Vec<&Line> = d
        .lines
        .iter()
        .filter(|l| l.kind != LineKind::Revenue)
        .collect();
    let mut groups: Vec<Vec<Band>> = owed.iter().map(|l| line_row(l, f, minor)).collect();
    if groups.is_empty() {
        groups.push(para("Nothing is owed for this period.", BODY));
    }
    groups.push(subtotal(
        &format!("Total owed ({})", d.currency),
        &f.amount(d.total, minor),
    ));
    section(
        &mut flow,
        "Amounts owed",
        "Shares, fees, bonuses and guarantees earned in the period, usage of earlier periods that arrived late, and adjustments.",
        groups,
    );
    flow.gap(12.0);
    flow.keep(&para(
        &format!(
            "Amounts are in {}. Each line is rounded to the currency's minor unit ({}); totals are sums of the rounded lines.",
            d.currency,
            rounding_name(&d.rounding)
        ),
        NOTE,
    ));
    if s.status != Status::Draft {
        flow.gap(10.0);
        flow.keep(&verification(s));
    }
    flow
}

fn header(s: &Statement, letterhead: &Letterhead<'_>, f: &Formats) -> Vec<Band> {
    let d = &s.document;
    let half = (WIDTH - 20.0) / 2.0;
    let company = d.parties.as_ref().map(|p| &p.company);
    let mut left = Cell::left((LEFT, half));
    if let Some(logo) = letterhead.logo {
        left = left.image(logo, LOGO_W, LOGO_H);
    }
    left = left.text(
        company.map_or(d.company.as_str(), |c| c.legal_name.as_str()),
        COMPANY,
    );
    match company {
        Some(c) => {
            for line in &c.address {
                left = left.text(line, ADDRESS);
            }
            if let Some(tax) = &c.tax_id {
                left = left.text(&format!("Tax id: {tax}"), ADDRESS);
            }
            for line in &c.contact {
                left = left.text(line, ADDRESS);
            }
        }
        None => {
            for line in letterhead.company_address {
                left = left.text(line, ADDRESS);
            }
        }
    }
    let mut right = Cell::right((RIGHT - half, half)).text("Revenue share statement", TITLE);
    right = match s.status {
        Status::Draft => right.text("DRAFT — not issued", NUMBER),
        Status::Void => right.text(&format!("Statement {} — VOID", shown_number(s)), NUMBER),
        Status::Finalized => right.text(&format!("Statement {}", shown_number(s)), NUMBER),
    };
    right = right.text(&format!("Period: {}", period_words(d, f)), META);
    if let Some(at) = s.finalized_at {
        let local = d
            .time_zone
            .parse::<chrono_tz::Tz>()
            .map_or_else(|_| at.date_naive(), |tz| at.with_timezone(&tz).date_naive());
        right = right.text(&format!("Issued: {}", f.date(local)), META);
    }
    if let Some(due) = d.settlement.as_ref().and_then(|s| s.due_date) {
        right = right.text(&format!("Payment due: {}", f.date(due)), META);
    }
    right = right.text(
        &format!(
            "Agreement: {} (version {})",
            d.agreement_id, d.agreement_version
        ),
        META,
    );
    if let Some(old) = &s.replaces {
        right = right.text(&format!("Replaces a voided statement ({old})"), META);
    }
    let mut bands = row(&[left, right]);
    pad(&mut bands, 6.0);
    rule_below(&mut bands, 1.0, BLACK);
    bands
}

fn period_words(d: &Document, f: &Formats) -> String {
    match local_dates(&d.period) {
        Some((first, last)) => f.date_range(first, last),
        None => d.period.clone(),
    }
}

fn party_cell(x: (f32, f32), title: &str, p: &Party) -> Cell {
    let mut c = Cell::left(x)
        .text(title, LABEL)
        .text(&p.legal_name, BODY_BOLD);
    for line in &p.address {
        c = c.text(line, BODY);
    }
    if let Some(tax) = &p.tax_id {
        c = c.text(&format!("Tax id: {tax}"), BODY);
    }
    c
}

fn parties(s: &Statement, f: &Formats) -> Vec<Band> {
    let d = &s.document;
    let half = (WIDTH - 20.0) / 2.0;
    let partner = d.parties.as_ref().map_or_else(
        || Party {
            legal_name: d.partner_name.clone(),
            ..Party::default()
        },
        |p| p.partner.clone(),
    );
    let left = party_cell((LEFT, half), "STATEMENT TO", &partner);
    let mut right = Cell::left((RIGHT - half, half)).text("PAYMENT", LABEL);
    let settlement = d.settlement.as_ref();
    let reference = match s.status {
        Status::Draft => "given when the statement is issued".to_owned(),
        _ => shown_number(s),
    };
    right = right.text(&format!("Reference: {reference}"), BODY);
    if let Some(details) = &partner.payment_details {
        right = right.text(&format!("To: {details}"), BODY);
    }
    match settlement.and_then(|s| s.payment_terms) {
        Some(t) => {
            let from = match t.from {
                TermsFrom::PeriodEnd => "the end of the period",
                TermsFrom::Finalization => "the date of issue",
            };
            right = right.text(&format!("Terms: net {} days from {from}", t.days), BODY);
        }
        None => right = right.text("Terms: as agreed", BODY),
    }
    if let Some(s) = settlement {
        let due = match s.due_date {
            Some(due) => f.date(due),
            None => "set when the statement is issued".to_owned(),
        };
        right = right.text(&format!("Due: {due}"), BODY);
    }
    let mut bands = row(&[left, right]);
    pad(&mut bands, 4.0);
    bands
}

/// From the total owed to the amount payable, each figure on a line of its own.
fn summary(flow: &mut Flow, d: &Document, s: &Settlement, f: &Formats, minor: u32) {
    let label_x = (LEFT, COL_AMOUNT.0 - 5.0 - LEFT);
    let line = |label: &str, note: Option<&str>, amount: String, st: Style| {
        let mut l = Cell::left(label_x).text(label, st);
        if let Some(n) = note {
            l = l.text(n, DETAIL);
        }
        let mut bands = row(&[l, Cell::right(COL_AMOUNT).text(&amount, st)]);
        pad(&mut bands, 2.0);
        rule_below(&mut bands, 0.3, LIGHT);
        bands
    };
    let mut groups = vec![
        line(
            "Shares, fees and late usage",
            None,
            f.amount(s.gross_share, minor),
            BODY,
        ),
        line("Adjustments", None, f.amount(s.adjustments, minor), BODY),
        line("Total owed", None, f.amount(s.net_share, minor), BODY_BOLD),
    ];
    if let Some(w) = &s.withholding {
        groups.push(line(
            &format!(
                "Withholding tax {} of {}",
                f.percent(w.rate),
                f.amount(w.base, minor)
            ),
            Some(&w.reference),
            f.amount(-w.amount, minor),
            BODY,
        ));
    }
    if let Some(t) = &s.tax {
        let label = match (t.reverse_charge, t.rate) {
            (true, _) => format!("{}: reverse charge", t.name),
            (false, Some(rate)) => format!(
                "{} {} of {}",
                t.name,
                f.percent(rate),
                f.amount(t.base, minor)
            ),
            (false, None) => t.name.clone(),
        };
        groups.push(line(
            &label,
            t.note.as_deref(),
            f.amount(t.amount, minor),
            BODY,
        ));
    }
    let mut payable = row(&[
        Cell::left(label_x).text(&format!("Amount payable ({})", d.currency), TOTAL),
        Cell::right(COL_AMOUNT).text(&f.amount(s.amount_payable, minor), TOTAL),
    ]);
    pad(&mut payable, 3.0);
    rule_above(&mut payable, LEFT, 1.0, BLACK);
    rule_below(&mut payable, 1.0, BLACK);
    groups.push(payable);
    let heading = para("Summary", SECTION);
    flow.gap(10.0);
    flow.need(height(&heading) + groups.iter().map(|g| height(g)).sum::<f32>());
    for band in &heading {
        flow.band(band);
    }
    for g in &groups {
        flow.keep(g);
    }
}

/// A titled table in this layout's columns (see `super::table`).
fn section(flow: &mut Flow, title: &str, intro: &str, groups: Vec<Vec<Band>>) {
    super::table(flow, title, intro, table_header(), &groups);
}

fn table_header() -> Vec<Band> {
    let mut bands = row(&[
        Cell::left(COL_DESC).text("Description", HEAD),
        Cell::right(COL_QTY).text("Quantity", HEAD),
        Cell::right(COL_PRICE).text("Price or rate", HEAD),
        Cell::right(COL_AMOUNT).text("Amount", HEAD),
    ]);
    pad(&mut bands, 2.0);
    rule_below(&mut bands, 0.75, BLACK);
    bands
}

fn subtotal(label: &str, amount: &str) -> Vec<Band> {
    let mut bands = row(&[
        Cell::right((LEFT, COL_AMOUNT.0 - 5.0 - LEFT)).text(label, BODY_BOLD),
        Cell::right(COL_AMOUNT).text(amount, BODY_BOLD),
    ]);
    pad(&mut bands, 3.0);
    rule_above(&mut bands, COL_AMOUNT.0, 0.75, BLACK);
    bands
}

/// A line's words: what it is, a detail line, its quantity and its price or rate.
struct Words {
    main: String,
    detail: Option<String>,
    quantity: String,
    price: String,
}

fn line_row(l: &Line, f: &Formats, minor: u32) -> Vec<Band> {
    let w = words(l, f, minor);
    let mut desc = Cell::left(COL_DESC).text(&w.main, BODY);
    if let Some(detail) = &w.detail {
        desc = desc.text(detail, DETAIL);
    }
    let mut bands = row(&[
        desc,
        Cell::right(COL_QTY).text(&w.quantity, BODY),
        Cell::right(COL_PRICE).text(&w.price, BODY),
        Cell::right(COL_AMOUNT).text(&f.amount(l.amount, minor), BODY),
    ]);
    pad(&mut bands, 3.0);
    rule_below(&mut bands, 0.3, LIGHT);
    bands
}

/// The label a priced line was configured with (the text before the first colon).
fn label(l: &Line) -> &str {
    l.description.split(':').next().unwrap_or(&l.description)
}

/// Whole numbers read as counts: tier 2 above 500 up to 2,000 is "501–2,000".
fn tier_words(t: &TierRange, f: &Formats) -> String {
    let whole = |d: Decimal| d.fract().is_zero();
    let range = match (t.above, t.up_to) {
        (None, Some(hi)) => format!("up to {}", f.number(hi)),
        (Some(lo), Some(hi)) if whole(lo) && whole(hi) => {
            format!("{}–{}", f.number(lo + Decimal::ONE), f.number(hi))
        }
        (Some(lo), Some(hi)) => format!("above {} up to {}", f.number(lo), f.number(hi)),
        (Some(lo), None) => format!("above {}", f.number(lo)),
        (None, None) => "all".into(),
    };
    format!("tier {} ({range})", t.number)
}

fn count(n: Decimal, one: &str, many: &str, f: &Formats) -> String {
    if n == Decimal::ONE {
        format!("1 {one}")
    } else {
        format!("{} {many}", f.number(n))
    }
}

fn words(l: &Line, f: &Formats, minor: u32) -> Words {
    let q = l.quantity.unwrap_or_default();
    let mut w = Words {
        main: l.description.clone(),
        detail: None,
        quantity: l.quantity.map_or_else(String::new, |q| f.number(q)),
        price: l
            .rate
            .map(|r| f.percent(r))
            .or_else(|| l.unit_price.map(|u| f.number(u)))
            .unwrap_or_default(),
    };
    match l.kind {
        LineKind::Revenue if l.meter.is_some() => {
            let tier = l.tier_range.as_ref().map(|t| tier_words(t, f));
            match (l.periods_per_year, l.unit_price) {
                (Some(per_year), Some(annual)) => {
                    w.main = label(l).to_owned();
                    w.detail = Some(format!(
                        "{}{}: {} a year, 1/{per_year} for the period",
                        count(q, "seat", "seats", f),
                        tier.map_or_else(String::new, |t| format!(", {t}")),
                        f.amount(annual, minor)
                    ));
                    w.price = String::new();
                }
                _ => {
                    w.main = label(l).to_owned();
                    w.detail = tier.map(|t| format!("Priced at {t}"));
                }
            }
        }
        LineKind::Revenue => {
            w.main = l
                .customer
                .clone()
                .unwrap_or_else(|| "Customer not named".into());
            let mut parts = Vec::new();
            if l.refund {
                parts.push(count(q, "refund", "refunds", f));
            } else {
                parts.push(count(q, "payment", "payments", f));
            }
            if let Some(inv) = &l.invoice {
                parts.push(format!("invoice {inv}"));
            }
            if let Some(p) = &l.product {
                parts.push(p.clone());
            }
            w.detail = Some(parts.join(" · "));
            w.quantity = String::new();
        }
        LineKind::Share => {
            w.main = "Revenue share".into();
            w.quantity = f.amount(q, minor);
            w.detail = match (&l.tier_range, &l.meter) {
                (Some(t), Some(m)) => Some(format!("{}, by {m}", tier_words(t, f))),
                _ => Some("Of the revenue basis".into()),
            };
        }
        LineKind::Referral => {
            let who = l.customer.as_deref().unwrap_or("customer not named");
            w.main = format!("Referral: {who}");
            w.detail = l.reference.as_ref().map(|r| format!("Milestone {r}"));
            if l.rate.is_some() {
                w.quantity = f.amount(q, minor);
                w.detail = Some(format!(
                    "Of the contract value{}",
                    l.reference
                        .as_ref()
                        .map_or_else(String::new, |r| format!(" · milestone {r}"))
                ));
            } else {
                w.quantity = String::new();
                w.price = l.unit_price.map(|u| f.amount(u, minor)).unwrap_or_default();
            }
        }
        LineKind::Bonus => {
            w.quantity = l.quantity.map(|q| f.number(q)).unwrap_or_default();
        }
        LineKind::MinimumTrueUp => {
            w.main = "Minimum guarantee top-up".into();
            w.detail = Some(
                "Brings the period's (or agreement year's) earnings up to the agreed minimum"
                    .into(),
            );
            w.quantity = String::new();
        }
        LineKind::CarriedLateUsage => {
            let period = l.period.as_deref().and_then(local_dates).map_or_else(
                || l.period.clone().unwrap_or_default(),
                |(a, b)| f.date_range(a, b),
            );
            let kind = match l.carried_kind {
                Some(LineKind::Revenue) => "revenue (for reference: not owed)",
                Some(LineKind::Share) => "share",
                Some(LineKind::Referral) => "referral",
                Some(LineKind::Bonus) => "bonus",
                Some(LineKind::MinimumTrueUp) => "minimum top-up",
                _ => "usage",
            };
            w.main = format!("Late usage of {period}: {kind}");
            w.detail = l.change.as_ref().map(|c| {
                let diff = c.quantity_after - c.quantity_before;
                let sign = if diff > Decimal::ZERO { "+" } else { "" };
                format!(
                    "Reached the ledger after that period was issued. Quantity {} → {} ({sign}{}); amount {} → {}",
                    f.number(c.quantity_before),
                    f.number(c.quantity_after),
                    f.number(diff),
                    f.amount(c.amount_before, minor),
                    f.amount(c.amount_after, minor),
                )
            });
            w.quantity = String::new();
        }
        LineKind::Adjustment => {
            w.detail = Some("Adjustment".into());
            w.quantity = String::new();
            w.price = String::new();
        }
    }
    w
}

fn verification(s: &Statement) -> Vec<Band> {
    let cell = Cell::left((LEFT, WIDTH))
        .text("Verification", BODY_BOLD)
        .text(&format!("Statement {}", shown_number(s)), BODY)
        .text(
            &format!("SHA-256: {}", s.hash.as_deref().unwrap_or("not recorded")),
            MONO,
        )
        .text(
            &format!(
                "The SHA-256 is the fingerprint of this statement's content as issued. With your partner API key, GET /v1/statements/{}/verify recomputes it from the usage ledger and answers \"ok\": true when it matches.",
                s.id
            ),
            NOTE,
        );
    let mut bands = row(&[cell]);
    pad(&mut bands, 4.0);
    rule_above(&mut bands, LEFT, 0.5, GRAY);
    bands
}
