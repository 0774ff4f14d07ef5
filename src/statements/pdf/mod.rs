//! The PDF of a revenue-share statement: the document finance sends a partner.
//!
//! `text.rs` shapes and measures text with the compiled-in fonts (Noto Sans, then Droid Sans
//! Fallback for CJK), `layout.rs` wraps it into cells, rows and pages, `draw.rs` writes the
//! pages with krilla (fonts subset and embedded). This file is the statement's content:
//! header, details, the revenue and owed tables, notes, footer. Amounts, numbers and dates
//! are written as the letterhead's locale writes them (`super::locale`). The bytes depend on
//! the statement and letterhead alone (the creation date is the statement's own), so the
//! same statement always renders to the same file.

mod draw;
mod layout;
mod partner;
mod text;

use std::path::Path;

use chrono::{DateTime, Months, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::locale::Formats;
use super::model::{Line, LineKind, Statement, Status, number_display};
use super::money::Currency;
use layout::{
    AMBER, BLACK, Band, Cell, Flow, GRAY, Item, LEFT, LIGHT, PAGE_H, RED, RIGHT, Style, WIDTH,
    height, pad, para, row, rule_above, rule_below, style,
};
use text::Weight;

/// What heads the statement besides the document itself.
pub struct Letterhead<'a> {
    pub company_address: &'a [String],
    /// Drawn at the top left of the first page, above the company's name.
    pub logo: Option<&'a Logo>,
    /// A BCP-47 tag ("en", "de-CH", "ja") for amounts, numbers and dates. One that can't
    /// be used falls back to English (config checks it before it gets here).
    pub locale: &'a str,
}

/// A letterhead logo: a PNG or JPEG file, checked and decoded once, when it is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Logo {
    image: krilla::image::Image,
}

impl Logo {
    /// The logo in `bytes`, read from `path` (named in errors). PNG or JPEG, told by their
    /// signatures, not by the file name. SVG is not taken: krilla-svg would compile in
    /// usvg's system-font loading (fontdb, fontconfig) whatever features we ask for.
    pub fn from_file_bytes(bytes: Vec<u8>, path: &Path) -> Result<Logo, String> {
        let path = path.display();
        let png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
        let jpeg = bytes.starts_with(b"\xFF\xD8\xFF");
        let what = if png { "PNG" } else { "JPEG" };
        if !png && !jpeg {
            let svg = bytes.starts_with(b"<svg") || bytes.starts_with(b"<?xml");
            return Err(format!(
                "logo {path}: {}; it must be a PNG or JPEG file",
                if svg {
                    "SVG is not supported"
                } else {
                    "unknown image format"
                }
            ));
        }
        // krilla decodes a PNG here, once (without its rayon feature, at construction); a
        // JPEG's header is read and its data later embedded as it is.
        let data = krilla::Data::from(bytes);
        let image = if png {
            krilla::image::Image::from_png(data, true)
        } else {
            krilla::image::Image::from_jpeg(data, true)
        }
        .map_err(|e| format!("logo {path}: not a readable {what} file: {e}"))?;
        let logo = Logo { image };
        let (w, h) = logo.size();
        if !(w > 0.0 && h > 0.0) {
            return Err(format!("logo {path}: the {what} image is empty"));
        }
        // A decoding error surfaces only when a document is written: write one now, with
        // the same (already decoded) image, so a bad file fails at load and not on a
        // statement.
        let probe = vec![vec![Item::Image {
            x: 0.0,
            y: 0.0,
            width: w.min(100.0),
            height: h.min(100.0),
            logo: logo.clone(),
        }]];
        draw::document(&probe, &probe_info())
            .map_err(|e| format!("logo {path}: the {what} file can't be decoded: {e}"))?;
        Ok(logo)
    }

    /// Width and height in pixels.
    fn size(&self) -> (f32, f32) {
        let (w, h) = self.image.size();
        (w as f32, h as f32)
    }

    fn image(&self) -> krilla::image::Image {
        self.image.clone()
    }
}

fn probe_info() -> draw::Info {
    draw::Info {
        title: String::new(),
        author: String::new(),
        subject: String::new(),
        created: DateTime::<Utc>::UNIX_EPOCH,
    }
}

/// A finished PDF document for one statement. Empty only if krilla can't write it, which
/// the compiled-in fonts and a logo checked at load leave no known way to cause; that is
/// logged as an error.
#[must_use]
pub fn render(statement: &Statement, letterhead: &Letterhead<'_>) -> Vec<u8> {
    let formats = Formats::new(letterhead.locale).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "statement PDF: locale not usable, English used");
        Formats::english()
    });
    // Statements of form 2 on are laid out for the partner; earlier ones as issued.
    let mut pages = if statement.document.form >= 2 {
        partner::layout(statement, letterhead, &formats).pages
    } else {
        layout(statement, letterhead, &formats)
    };
    let count = pages.len();
    for (i, page) in pages.iter_mut().enumerate() {
        page.extend(footer(statement, &formats, i + 1, count));
    }
    match draw::document(&pages, &info(statement)) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(statement = %statement.id, error = %e, "statement PDF not written");
            Vec::new()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Where things go (points from the top of the page).

const FOOTER_RULE: f32 = PAGE_H - 64.0;
const FOOTER_LINE: f32 = PAGE_H - 53.0;
const FOOTER_HASH: f32 = PAGE_H - 42.0;

/// The logo's box at the top left of the first page: fitted inside, its aspect kept.
const LOGO_W: f32 = 150.0;
const LOGO_H: f32 = 48.0;

/// Table columns: x and width. Five-point gutters between them; together they span the
/// text width exactly, so the amount column's right edge is the right margin.
const COL_KIND: (f32, f32) = (LEFT, 60.0);
const COL_DESC: (f32, f32) = (115.0, 158.0);
const COL_QTY: (f32, f32) = (278.0, 54.0);
const COL_PRICE: (f32, f32) = (337.0, 54.0);
const COL_TIER: (f32, f32) = (396.0, 54.0);
const COL_PERIOD: (f32, f32) = (455.0, 36.0);
const COL_AMOUNT: (f32, f32) = (496.0, RIGHT - 496.0);

const COMPANY: Style = style(Weight::Bold, 14.0, BLACK, 18.0);
const ADDRESS: Style = style(Weight::Regular, 9.0, BLACK, 11.5);
const TITLE: Style = style(Weight::Bold, 16.0, BLACK, 20.0);
const NUMBER: Style = style(Weight::Bold, 11.0, BLACK, 15.0);
const META: Style = style(Weight::Regular, 8.5, BLACK, 11.0);
const META_RED: Style = style(Weight::Bold, 8.5, RED, 11.0);
const VOID_MARK: Style = style(Weight::Bold, 30.0, RED, 34.0);
const VOID_TEXT: Style = style(Weight::Bold, 10.0, RED, 13.5);
const NOTICE: Style = style(Weight::Bold, 9.5, AMBER, 13.0);
const LABEL: Style = style(Weight::Bold, 8.5, BLACK, 11.5);
const VALUE: Style = style(Weight::Regular, 8.5, BLACK, 11.5);
const SECTION: Style = style(Weight::Bold, 11.0, BLACK, 16.0);
const NOTE: Style = style(Weight::Regular, 7.5, GRAY, 10.0);
const HEAD: Style = style(Weight::Bold, 7.5, BLACK, 9.5);
const HEAD_SMALL: Style = style(Weight::Regular, 6.5, GRAY, 8.0);
const BODY: Style = style(Weight::Regular, 8.0, BLACK, 10.0);
const BODY_BOLD: Style = style(Weight::Bold, 8.5, BLACK, 11.0);
const SMALL: Style = style(Weight::Regular, 6.5, GRAY, 8.5);
const TOTAL: Style = style(Weight::Bold, 10.0, BLACK, 14.0);
const FOOT: Style = style(Weight::Regular, 8.0, GRAY, 10.0);

// ---------------------------------------------------------------------------------------
// The statement's content.

fn layout(s: &Statement, letterhead: &Letterhead<'_>, f: &Formats) -> Vec<Vec<Item>> {
    let mut flow = Flow::new();
    flow.keep(&header(s, letterhead));
    if s.status == Status::Void {
        flow.gap(8.0);
        flow.keep(&void_notice(s));
    }
    if s.document.provisional {
        flow.gap(8.0);
        flow.keep(&para(
            "Provisional: the period had not ended when computed",
            NOTICE,
        ));
    }
    flow.gap(8.0);
    for group in details(s, f) {
        flow.keep(&group);
    }
    revenue_section(&mut flow, s, f);
    owed_section(&mut flow, s, f);
    flow.gap(12.0);
    for group in notes(s) {
        flow.keep(&group);
    }
    flow.pages
}

fn header(s: &Statement, letterhead: &Letterhead<'_>) -> Vec<Band> {
    let half = (WIDTH - 20.0) / 2.0;
    let mut left = Cell::left((LEFT, half));
    if let Some(logo) = letterhead.logo {
        left = left.image(logo, LOGO_W, LOGO_H);
    }
    left = left.text(&s.document.company, COMPANY);
    for line in letterhead.company_address {
        left = left.text(line, ADDRESS);
    }
    let mut right = Cell::right((RIGHT - half, half)).text("Revenue share statement", TITLE);
    right = match s.status {
        Status::Draft => right.text("DRAFT — not issued", NUMBER),
        _ => right.text(&format!("Statement no. {}", shown_number(s)), NUMBER),
    };
    right = match s.status {
        Status::Void => right.text("Status: VOID", META_RED),
        status => right.text(&format!("Status: {}", status_name(status)), META),
    };
    right = right.text(&format!("Statement id: {}", s.id), META);
    if let Some(old) = &s.replaces {
        right = right.text(&format!("Replaces statement {old}"), META);
    }
    let mut bands = row(&[left, right]);
    pad(&mut bands, 6.0);
    rule_below(&mut bands, 1.0, BLACK);
    bands
}

/// Most digits a printed quantity or precise value keeps after the point. A graduated share
/// divides by the volume, so its precise values can run to 28 digits; the JSON and CSV keep
/// every one, the page shows six and an ellipsis to say there are more.
const SHOWN_DECIMALS: u32 = 6;

fn shown(d: Decimal) -> String {
    if d.scale() <= SHOWN_DECIMALS {
        return d.to_string();
    }
    let cut = d.round_dp_with_strategy(SHOWN_DECIMALS, rust_decimal::RoundingStrategy::ToZero);
    if cut == d {
        cut.normalize().to_string()
    } else {
        format!("{cut}\u{2026}")
    }
}

/// A quantity in the locale's digits, cut like a precise value.
fn quantity(f: &Formats, q: Decimal) -> String {
    if q.scale() <= SHOWN_DECIMALS {
        return f.number(q);
    }
    let cut = q.round_dp_with_strategy(SHOWN_DECIMALS, rust_decimal::RoundingStrategy::ToZero);
    if cut == q {
        f.number(cut)
    } else {
        format!("{}\u{2026}", f.number(cut))
    }
}

/// Decimals of the statement's currency; for a code the gateway doesn't know, none (an
/// amount then shows the decimals it has).
fn minor_units(currency: &str) -> u32 {
    Currency::parse(currency).map_or(0, |c| c.minor_units)
}

fn void_notice(s: &Statement) -> Vec<Band> {
    let cell = Cell::left((LEFT + 8.0, WIDTH - 8.0))
        .text("VOID", VOID_MARK)
        .text(
            "This statement has been voided. Nothing is owed under it.",
            VOID_TEXT,
        )
        .text(
            &format!(
                "Reason: {}",
                s.void_reason.as_deref().unwrap_or("not recorded")
            ),
            VOID_TEXT,
        )
        .text(
            &format!(
                "Voided by {} on {}",
                s.voided_by.as_deref().unwrap_or("(not recorded)"),
                s.voided_at
                    .map_or_else(|| "(date not recorded)".into(), instant)
            ),
            VOID_TEXT,
        );
    let cell = match &s.replaced_by {
        Some(new) => cell.text(&format!("Replaced by statement {new}"), VOID_TEXT),
        None => cell,
    };
    let mut bands = row(&[cell]);
    pad(&mut bands, 4.0);
    rule_above(&mut bands, LEFT, 2.0, RED);
    rule_below(&mut bands, 2.0, RED);
    bands
}

/// Label and value rows about the statement; each row is kept on one page.
fn details(s: &Statement, f: &Formats) -> Vec<Vec<Band>> {
    let d = &s.document;
    let mut rows: Vec<(&str, String)> = vec![
        ("Partner", d.partner_name.clone()),
        ("Partner id", d.partner_id.clone()),
        (
            "Agreement",
            format!("{}, version {}", d.agreement_id, d.agreement_version),
        ),
    ];
    let period = match local_dates(&d.period) {
        Some((first, last)) => format!(
            "{} ({}): {}, local dates",
            d.period,
            d.time_zone,
            f.date_range(first, last)
        ),
        None => format!("{} ({})", d.period, d.time_zone),
    };
    rows.push(("Period", period));
    rows.push(("Period start", instant(d.period_start)));
    rows.push((
        "Period end",
        format!("{} (exclusive)", instant(d.period_end)),
    ));
    rows.push(("Currency", d.currency.clone()));
    rows.push((
        "Rounding",
        format!(
            "{}, per line to the currency's minor unit",
            rounding_name(&d.rounding)
        ),
    ));
    rows.push(("Ledger as of", instant(d.ledger_as_of)));
    if let Some(since) = d.carried_since {
        rows.push((
            "Carried since",
            format!(
                "{}: late usage received after this instant is carried",
                instant(since)
            ),
        ));
    }
    if let Some(what) = &d.self_reported_events {
        rows.push((
            "Partner-reported events",
            match what.as_str() {
                "excluded" => "events the partner reported itself are not counted for money".into(),
                _ => "events the partner reported itself are counted, as the agreement says".into(),
            },
        ));
    }
    rows.push(("Computed at", instant(s.computed_at)));
    if let Some(at) = s.finalized_at {
        let by = s
            .finalized_by
            .as_deref()
            .map_or_else(String::new, |b| format!(" by {b}"));
        rows.push(("Issued", format!("{}{by}", instant(at))));
    }
    rows.into_iter()
        .map(|(label, value)| {
            row(&[
                Cell::left((LEFT, 100.0)).text(label, LABEL),
                Cell::left((LEFT + 105.0, WIDTH - 105.0)).text(&value, VALUE),
            ])
        })
        .collect()
}

/// Revenue lines are the basis the shares are computed on, not owed: they get their own
/// table and subtotal. Carried revenue differences are in neither the basis nor the total
/// (see `Document::sum`), so they follow the subtotal, marked as for reference.
fn revenue_section(flow: &mut Flow, s: &Statement, f: &Formats) {
    let d = &s.document;
    let minor = minor_units(&d.currency);
    let mut groups: Vec<Vec<Band>> = Vec::new();
    let current: Vec<&Line> = d
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Revenue)
        .collect();
    let carried: Vec<&Line> = d
        .lines
        .iter()
        .filter(|l| !l.payable() && l.kind != LineKind::Revenue)
        .collect();
    if current.is_empty() {
        groups.push(para("No revenue lines for this period.", BODY));
    }
    groups.extend(current.into_iter().map(|l| line_row(l, f, minor)));
    groups.push(subtotal(
        &format!("Revenue basis ({})", d.currency),
        &f.amount(d.revenue_basis, minor),
    ));
    if !carried.is_empty() {
        let mut note = para(
            "Late revenue for earlier periods (for reference; not part of the basis above)",
            BODY_BOLD,
        );
        pad(&mut note, 2.0);
        rule_below(&mut note, 0.5, GRAY);
        groups.push(note);
        groups.extend(carried.into_iter().map(|l| line_row(l, f, minor)));
    }
    section(
        flow,
        "Revenue basis",
        "Revenue is the basis the shares are computed on; it is not owed to the partner.",
        groups,
    );
}

fn owed_section(flow: &mut Flow, s: &Statement, f: &Formats) {
    let d = &s.document;
    let minor = minor_units(&d.currency);
    let mut groups: Vec<Vec<Band>> = Vec::new();
    let owed: Vec<&Line> = d.lines.iter().filter(|l| l.payable()).collect();
    if owed.is_empty() {
        groups.push(para("No amounts owed for this period.", BODY));
    }
    groups.extend(owed.into_iter().map(|l| line_row(l, f, minor)));
    let label = Cell::right((LEFT, COL_PERIOD.0 + COL_PERIOD.1 - LEFT))
        .text(&format!("Total owed ({})", d.currency), TOTAL)
        .text("precise, before rounding", SMALL);
    let amount = Cell::right(COL_AMOUNT)
        .text(&f.amount(d.total, minor), TOTAL)
        .text(&shown(d.total_precise), SMALL);
    let mut total = row(&[label, amount]);
    pad(&mut total, 3.0);
    rule_above(&mut total, LEFT, 1.0, BLACK);
    rule_below(&mut total, 1.0, BLACK);
    groups.push(total);
    section(
        flow,
        "Amounts owed",
        "What the partner is owed for the period: every line but revenue.",
        groups,
    );
}

/// A titled table: its heading and column titles repeat on every page it runs onto.
fn section(flow: &mut Flow, title: &str, intro: &str, groups: Vec<Vec<Band>>) {
    table(flow, title, intro, table_header(), &groups);
}

/// A titled table with its column titles: heading, titles and the first row kept together,
/// and the heading and titles repeated on every page the rows run onto.
fn table(flow: &mut Flow, title: &str, intro: &str, columns: Vec<Band>, groups: &[Vec<Band>]) {
    let heading = para(title, SECTION);
    let intro = para(intro, NOTE);
    let mut repeat = para(&format!("{title} (continued)"), SECTION);
    repeat.extend(columns.iter().cloned());
    // Keep the heading with the column titles and the first row.
    let first = groups.first().map_or(0.0, |g| height(g)).min(60.0);
    flow.repeat.clear();
    flow.gap(14.0);
    flow.need(height(&heading) + height(&intro) + height(&columns) + first);
    for band in heading.iter().chain(&intro).chain(&columns) {
        flow.band(band);
    }
    flow.repeat = repeat;
    for group in groups {
        flow.keep(group);
    }
    flow.repeat.clear();
}

fn table_header() -> Vec<Band> {
    let mut bands = row(&[
        Cell::left(COL_KIND).text("Kind", HEAD),
        Cell::left(COL_DESC).text("Description", HEAD),
        Cell::right(COL_QTY).text("Quantity", HEAD),
        Cell::right(COL_PRICE)
            .text("Unit price", HEAD)
            .text("or rate", HEAD_SMALL),
        Cell::left(COL_TIER).text("Tier", HEAD),
        Cell::left(COL_PERIOD).text("Period", HEAD),
        Cell::right(COL_AMOUNT)
            .text("Amount", HEAD)
            .text("precise", HEAD_SMALL),
    ]);
    pad(&mut bands, 2.0);
    rule_below(&mut bands, 0.75, BLACK);
    bands
}

fn line_row(line: &Line, f: &Formats, minor: u32) -> Vec<Band> {
    let mut desc = Cell::left(COL_DESC).text(&line.description, BODY);
    let trace = trace(line);
    if !trace.is_empty() {
        desc = desc.text(&trace, SMALL);
    }
    let mut price = Cell::right(COL_PRICE);
    if let Some(unit) = line.unit_price {
        price = price.text(&f.number(unit), BODY);
    }
    if let Some(rate) = line.rate {
        price = price.text(&f.percent(rate), BODY);
    }
    let mut bands = row(&[
        Cell::left(COL_KIND).text(&kind_name(line), BODY),
        desc,
        Cell::right(COL_QTY).text(
            &line.quantity.map_or_else(String::new, |q| quantity(f, q)),
            BODY,
        ),
        price,
        Cell::left(COL_TIER).text(line.tier.as_deref().unwrap_or(""), BODY),
        Cell::left(COL_PERIOD).text(line.period.as_deref().unwrap_or(""), BODY),
        // Exactly the scale it was rounded to (padded to the minor unit), never a float.
        Cell::right(COL_AMOUNT)
            .text(&f.amount(line.amount, minor), BODY)
            .text(&shown(line.precise), SMALL),
    ]);
    pad(&mut bands, 3.0);
    rule_below(&mut bands, 0.3, LIGHT);
    bands
}

fn subtotal(label: &str, amount: &str) -> Vec<Band> {
    let mut bands = row(&[
        Cell::right((LEFT, COL_PERIOD.0 + COL_PERIOD.1 - LEFT)).text(label, BODY_BOLD),
        Cell::right(COL_AMOUNT).text(amount, BODY_BOLD),
    ]);
    pad(&mut bands, 3.0);
    rule_above(&mut bands, COL_AMOUNT.0, 0.75, BLACK);
    bands
}

fn notes(s: &Statement) -> Vec<Vec<Band>> {
    let d = &s.document;
    let mut notes = vec![format!(
        "Amounts are in {}. Each line is rounded to the currency's minor unit ({}); totals \
         are sums of the rounded lines. The smaller figure under each amount is its precise \
         value before rounding.",
        d.currency,
        rounding_name(&d.rounding)
    )];
    match s.status {
        Status::Draft => notes.push(
            "This is a draft for review: it is not issued, has no statement number and may \
             change before it is finalized."
                .into(),
        ),
        Status::Finalized | Status::Void => notes.push(
            "The SHA-256 in the footer is the fingerprint of the statement's content as \
             issued, with its number."
                .into(),
        ),
    }
    notes.iter().map(|n| para(n, NOTE)).collect()
}

fn footer(s: &Statement, f: &Formats, page: usize, count: usize) -> Vec<Item> {
    let mut items = vec![Item::Rule {
        x1: LEFT,
        x2: RIGHT,
        y: FOOTER_RULE,
        width: 0.5,
        color: GRAY,
    }];
    let pages = text::shape(
        &format!(
            "Page {} of {}",
            f.number(Decimal::from(page)),
            f.number(Decimal::from(count))
        ),
        FOOT.weight,
    );
    let pages_w = pages.width(FOOT.size);
    items.push(Item::text(RIGHT - pages_w, FOOTER_LINE, pages, FOOT));
    // Who and which period too, so a page that gets separated still says what it is.
    let partner_name = s
        .document
        .parties
        .as_ref()
        .map_or(s.document.partner_name.as_str(), |p| {
            p.partner.legal_name.as_str()
        });
    let ident = match s.status {
        // A form-2 draft says nothing internal: the id is in the API, not on the page.
        Status::Draft if s.document.form >= 2 => "DRAFT — not issued".to_owned(),
        Status::Draft => format!("DRAFT — not issued · statement id {}", s.id),
        Status::Finalized => format!("Statement {}", shown_number(s)),
        Status::Void => format!("Statement {} · VOID", shown_number(s)),
    } + &format!(" · {partner_name} · {}", s.document.period);
    let ident = text::fit(&ident, FOOT.weight, FOOT.size, WIDTH - pages_w - 12.0);
    items.push(Item::text(LEFT, FOOTER_LINE, ident, FOOT));
    // Form 2 on, the hash is in the verification block at the end.
    if s.status != Status::Draft && s.document.form < 2 {
        let hash = text::shape(
            &format!("SHA-256: {}", s.hash.as_deref().unwrap_or("not recorded")),
            Weight::Regular,
        );
        // A 64-digit hash fits at 7 pt; anything longer shrinks, and is cut only past 4.5 pt.
        let size = [7.0, 6.5, 6.0, 5.5, 5.0, 4.5]
            .into_iter()
            .find(|&sz| hash.width(sz) <= WIDTH)
            .unwrap_or(4.5);
        let line = text::fit(&hash.text, Weight::Regular, size, WIDTH);
        items.push(Item::text(
            LEFT,
            FOOTER_HASH,
            line,
            style(Weight::Regular, size, GRAY, size),
        ));
    }
    items
}

// ---------------------------------------------------------------------------------------
// Words and numbers.

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Draft => "Draft",
        Status::Finalized => "Finalized",
        Status::Void => "VOID",
    }
}

/// The number people use, else one made from the number, else a plain marker.
fn shown_number(s: &Statement) -> String {
    match (&s.number_display, s.number) {
        (Some(display), _) => display.clone(),
        (None, Some(n)) => number_display(&s.document.partner_id, n),
        (None, None) => format!("(no number) id {}", s.id),
    }
}

fn kind_name(line: &Line) -> String {
    match line.kind {
        LineKind::CarriedLateUsage => match line.carried_kind {
            Some(k) => format!("Late usage ({})", plain_kind(k)),
            None => "Late usage".into(),
        },
        k => plain_kind(k).into(),
    }
}

fn plain_kind(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Revenue => "Revenue",
        LineKind::Share => "Share",
        LineKind::Referral => "Referral",
        LineKind::Bonus => "Bonus",
        LineKind::MinimumTrueUp => "Minimum true-up",
        LineKind::CarriedLateUsage => "Late usage",
        LineKind::Adjustment => "Adjustment",
    }
}

/// Where a line comes from (meter, product, event or adjustment id, who added it), so a
/// partner's question about a line can be traced.
fn trace(line: &Line) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &line.meter {
        parts.push(format!("meter {m}"));
    }
    if let Some(p) = &line.product {
        parts.push(format!("product {p}"));
    }
    if let Some(r) = &line.reference {
        parts.push(format!("ref {r}"));
    }
    if let Some(a) = &line.author {
        parts.push(format!("added by {a}"));
    }
    if !line.recorded_by.is_empty() {
        parts.push(crate::statements::model::describe_recorded_by(
            &line.recorded_by,
        ));
    }
    parts.join(" · ")
}

fn instant(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn rounding_name(rule: &str) -> String {
    match rule {
        "half_away_from_zero" => "half away from zero".into(),
        "half_even" => "half to even".into(),
        "down" => "toward zero".into(),
        "up" => "away from zero".into(),
        other => other.into(),
    }
}

/// First and last local date of a period label ("2026-10" or "2026-Q4"): the model has the
/// time zone's name but no offsets, so the dates come from the label itself.
fn local_dates(label: &str) -> Option<(NaiveDate, NaiveDate)> {
    let (year, rest) = label.split_once('-')?;
    if year.len() != 4 {
        return None;
    }
    let year: i32 = year.parse().ok()?;
    let (month, months) = match rest.strip_prefix('Q') {
        Some(q) if q.len() == 1 => {
            let q: u32 = q.parse().ok()?;
            if !(1..=4).contains(&q) {
                return None;
            }
            ((q - 1) * 3 + 1, 3)
        }
        Some(_) => return None,
        None if rest.len() == 2 => (rest.parse().ok()?, 1),
        None => return None,
    };
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let last = first.checked_add_months(Months::new(months))?.pred_opt()?;
    Some((first, last))
}
fn info(s: &Statement) -> draw::Info {
    let d = &s.document;
    let title = match s.status {
        Status::Draft => format!(
            "Revenue share statement DRAFT {} — {}",
            d.period, d.partner_name
        ),
        Status::Finalized => format!(
            "Revenue share statement {} — {}",
            shown_number(s),
            d.partner_name
        ),
        Status::Void => format!(
            "Revenue share statement {} (VOID) — {}",
            shown_number(s),
            d.partner_name
        ),
    };
    draw::Info {
        title,
        author: d.company.clone(),
        subject: format!(
            "Revenue share for {}, agreement {} version {}, period {}",
            d.partner_name, d.agreement_id, d.agreement_version, d.period
        ),
        // The statement's own instant, never the clock: the same statement, the same bytes.
        created: s.finalized_at.unwrap_or(s.computed_at),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
