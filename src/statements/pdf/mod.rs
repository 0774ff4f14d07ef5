//! The PDF of a revenue-share statement: the document finance sends a partner.
//!
//! Written by hand as PDF 1.4 with three of the standard 14 fonts (Helvetica,
//! Helvetica-Bold, Courier), so nothing is embedded and no PDF library is needed. Text is
//! laid out with the fonts' real AFM widths, so amounts right-align and long text wraps
//! inside its column instead of running off the page. Content streams are left
//! uncompressed. The bytes depend on the statement alone (the creation date is the
//! statement's own), so the same statement always renders to the same file.

use std::fmt::Write as _;

use chrono::{DateTime, Months, NaiveDate, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::model::{Line, LineKind, Statement, Status, number_display};

/// What heads the statement besides the document itself.
pub struct Letterhead<'a> {
    pub company_address: &'a [String],
}

/// A finished PDF document (PDF 1.4) for one statement.
#[must_use]
pub fn render(statement: &Statement, letterhead: &Letterhead<'_>) -> Vec<u8> {
    let mut pages = layout(statement, letterhead);
    let count = pages.len();
    for (i, page) in pages.iter_mut().enumerate() {
        page.extend(footer(statement, i + 1, count));
    }
    write_pdf(statement, &pages)
}

// ---------------------------------------------------------------------------------------
// Page geometry (US Letter, in points).

const PAGE_W: f32 = 612.0;
const PAGE_H: f32 = 792.0;
const LEFT: f32 = 50.0;
const RIGHT: f32 = PAGE_W - 50.0;
const WIDTH: f32 = RIGHT - LEFT;
const TOP: f32 = PAGE_H - 50.0;
/// Body text stops here; the footer lives below.
const BOTTOM: f32 = 76.0;
const FOOTER_RULE: f32 = 64.0;
const FOOTER_LINE: f32 = 53.0;
const FOOTER_HASH: f32 = 42.0;

/// Table columns: x and width. Five-point gutters between them; together they span the
/// text width exactly, so the amount column's right edge is the right margin.
const COL_KIND: (f32, f32) = (LEFT, 60.0);
const COL_DESC: (f32, f32) = (115.0, 158.0);
const COL_QTY: (f32, f32) = (278.0, 54.0);
const COL_PRICE: (f32, f32) = (337.0, 54.0);
const COL_TIER: (f32, f32) = (396.0, 54.0);
const COL_PERIOD: (f32, f32) = (455.0, 36.0);
const COL_AMOUNT: (f32, f32) = (496.0, RIGHT - 496.0);

// ---------------------------------------------------------------------------------------
// Fonts and their metrics.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    fn resource(self) -> &'static str {
        match self {
            Font::Regular => "F1",
            Font::Bold => "F2",
            Font::Mono => "F3",
        }
    }

    /// Advance width of one WinAnsi byte, in 1/1000 of the font size.
    fn advance(self, byte: u8) -> u64 {
        let table = match self {
            // Courier is monospaced: every glyph is 600 units wide.
            Font::Mono => return 600,
            Font::Regular => &HELVETICA,
            Font::Bold => &HELVETICA_BOLD,
        };
        byte.checked_sub(32)
            .and_then(|i| table.get(usize::from(i)))
            .map_or(0, |w| u64::from(*w))
    }
}

/// Widths of WinAnsiEncoding codes 32..=255 from Adobe's Helvetica AFM (the core 14
/// metrics every viewer uses for the unembedded font); 0 for the codes WinAnsi leaves
/// undefined (127, 129, 141, 143, 144, 157), which the text mapping never produces.
const HELVETICA: [u16; 224] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, // 32
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, // 48
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, // 64
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, // 80
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, // 96
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, 0, // 112
    556, 0, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, // 128
    0, 222, 222, 333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 0, 500, 667, // 144
    278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370, 556, 584, 333, 737, 333, // 160
    400, 584, 333, 333, 333, 556, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611, // 176
    667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, // 192
    722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611, // 208
    556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278, // 224
    556, 556, 556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500, // 240
];

/// The same for Helvetica-Bold.
const HELVETICA_BOLD: [u16; 224] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, // 32
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, // 48
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778, // 64
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, // 80
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, // 96
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, 0, // 112
    556, 0, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, // 128
    0, 278, 278, 500, 500, 350, 556, 1000, 333, 1000, 556, 333, 944, 0, 500, 667, // 144
    278, 333, 556, 556, 556, 556, 280, 556, 333, 737, 370, 556, 584, 333, 737, 333, // 160
    400, 584, 333, 333, 333, 611, 556, 278, 333, 333, 365, 556, 834, 834, 834, 611, // 176
    722, 722, 722, 722, 722, 722, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, // 192
    722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611, // 208
    556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278, // 224
    611, 611, 611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556, // 240
];

/// Width of WinAnsi text in font units (1/1000 of the size): integers, so wrapping and
/// alignment decisions don't depend on float rounding.
fn units(font: Font, text: &[u8]) -> u64 {
    text.iter().map(|&b| font.advance(b)).sum()
}

/// Width of WinAnsi text in points.
fn width(font: Font, text: &[u8], size: f32) -> f32 {
    units(font, text) as f32 * size / 1000.0
}

/// How many font units fit in `points` at `size` (rounded down, so text never overhangs).
fn budget(points: f32, size: f32) -> u64 {
    if size > 0.0 && points > 0.0 {
        (points * 1000.0 / size).floor() as u64
    } else {
        0
    }
}

/// Text as WinAnsiEncoding bytes. Characters WinAnsi has become their byte; whitespace
/// becomes a space (a newline stays, as a paragraph break); anything else becomes '?', so
/// no input can produce bytes the font can't show.
fn winansi(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let b = match c {
            '\n' => b'\n',
            '\r' | '\u{AD}' => continue, // CR of CRLF; a soft hyphen is invisible
            c if c.is_whitespace() => b' ',
            ' '..='~' | '\u{A1}'..='\u{FF}' => u8::try_from(u32::from(c)).unwrap_or(b'?'),
            '€' => 0x80,
            '‚' => 0x82,
            'ƒ' => 0x83,
            '„' => 0x84,
            '…' => 0x85,
            '†' => 0x86,
            '‡' => 0x87,
            'ˆ' => 0x88,
            '‰' => 0x89,
            'Š' => 0x8A,
            '‹' => 0x8B,
            'Œ' => 0x8C,
            'Ž' => 0x8E,
            '\u{2018}' => 0x91,
            '\u{2019}' => 0x92,
            '\u{201C}' => 0x93,
            '\u{201D}' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '˜' => 0x98,
            '™' => 0x99,
            'š' => 0x9A,
            '›' => 0x9B,
            'œ' => 0x9C,
            'ž' => 0x9E,
            'Ÿ' => 0x9F,
            _ => b'?',
        };
        out.push(b);
    }
    out
}

/// Breaks text into lines no wider than `max` points: at spaces, and inside a word only
/// when the word alone is wider than the line (an id or a long number). A newline starts
/// a new line. Blank text gives no lines.
fn wrap(text: &[u8], font: Font, size: f32, max: f32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return out;
    }
    let max = budget(max, size);
    let space = font.advance(b' ');
    for para in text.split(|&b| b == b'\n') {
        let mut line: Vec<u8> = Vec::new();
        let mut used = 0;
        for word in para.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
            let w = units(font, word);
            if !line.is_empty() && used + space + w <= max {
                line.push(b' ');
                line.extend_from_slice(word);
                used += space + w;
                continue;
            }
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
                used = 0;
            }
            if w <= max {
                line.extend_from_slice(word);
                used = w;
                continue;
            }
            for &b in word {
                let bw = font.advance(b);
                // At least one byte per line, so even a too-narrow column makes progress.
                if !line.is_empty() && used + bw > max {
                    out.push(std::mem::take(&mut line));
                    used = 0;
                }
                line.push(b);
                used += bw;
            }
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

/// One line, cut with "..." if it is wider than `max` points (for the footer, which has
/// room for one line only; the full text is in the body).
fn fit(text: &[u8], font: Font, size: f32, max: f32) -> Vec<u8> {
    let max = budget(max, size);
    if units(font, text) <= max {
        return text.to_vec();
    }
    let room = max.saturating_sub(units(font, b"..."));
    let mut out = Vec::new();
    let mut used = 0;
    for &b in text {
        used += font.advance(b);
        if used > room {
            break;
        }
        out.push(b);
    }
    out.extend_from_slice(b"...");
    out
}

// ---------------------------------------------------------------------------------------
// Layout: cells wrap into lines, rows of cells into bands (one text line high), bands
// flow onto pages.

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rgb(f32, f32, f32);

const BLACK: Rgb = Rgb(0.0, 0.0, 0.0);
const GRAY: Rgb = Rgb(0.4, 0.4, 0.4);
const LIGHT: Rgb = Rgb(0.8, 0.8, 0.8);
const RED: Rgb = Rgb(0.75, 0.0, 0.0);
const AMBER: Rgb = Rgb(0.6, 0.33, 0.0);

#[derive(Debug, Clone, Copy)]
struct Style {
    font: Font,
    size: f32,
    color: Rgb,
    /// Height of a line in this style.
    leading: f32,
}

const fn style(font: Font, size: f32, color: Rgb, leading: f32) -> Style {
    Style {
        font,
        size,
        color,
        leading,
    }
}

const COMPANY: Style = style(Font::Bold, 14.0, BLACK, 18.0);
const ADDRESS: Style = style(Font::Regular, 9.0, BLACK, 11.5);
const TITLE: Style = style(Font::Bold, 16.0, BLACK, 20.0);
const NUMBER: Style = style(Font::Bold, 11.0, BLACK, 15.0);
const META: Style = style(Font::Regular, 8.5, BLACK, 11.0);
const META_RED: Style = style(Font::Bold, 8.5, RED, 11.0);
const VOID_MARK: Style = style(Font::Bold, 30.0, RED, 34.0);
const VOID_TEXT: Style = style(Font::Bold, 10.0, RED, 13.5);
const NOTICE: Style = style(Font::Bold, 9.5, AMBER, 13.0);
const LABEL: Style = style(Font::Bold, 8.5, BLACK, 11.5);
const VALUE: Style = style(Font::Regular, 8.5, BLACK, 11.5);
const SECTION: Style = style(Font::Bold, 11.0, BLACK, 16.0);
const NOTE: Style = style(Font::Regular, 7.5, GRAY, 10.0);
const HEAD: Style = style(Font::Bold, 7.5, BLACK, 9.5);
const HEAD_SMALL: Style = style(Font::Regular, 6.5, GRAY, 8.0);
const BODY: Style = style(Font::Regular, 8.0, BLACK, 10.0);
const BODY_BOLD: Style = style(Font::Bold, 8.5, BLACK, 11.0);
const SMALL: Style = style(Font::Regular, 6.5, GRAY, 8.5);
const TOTAL: Style = style(Font::Bold, 10.0, BLACK, 14.0);

/// Something drawn. In a band, `y` is measured down from the band's top; once placed on
/// a page it is the absolute PDF coordinate (up from the bottom edge).
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Text {
        x: f32,
        y: f32,
        font: Font,
        size: f32,
        color: Rgb,
        text: Vec<u8>,
    },
    Rule {
        x1: f32,
        x2: f32,
        y: f32,
        width: f32,
        color: Rgb,
    },
}

impl Item {
    fn placed(&self, top: f32) -> Item {
        let mut item = self.clone();
        match &mut item {
            Item::Text { y, .. } | Item::Rule { y, .. } => *y = top - *y,
        }
        item
    }
}

/// One line's height of a page, with what is drawn in it.
#[derive(Debug, Clone)]
struct Band {
    height: f32,
    items: Vec<Item>,
}

fn height(bands: &[Band]) -> f32 {
    bands.iter().map(|b| b.height).sum()
}

struct CellLine {
    text: Vec<u8>,
    style: Style,
}

/// A column of wrapped text lines.
struct Cell {
    x: f32,
    width: f32,
    right: bool,
    lines: Vec<CellLine>,
}

impl Cell {
    fn left((x, width): (f32, f32)) -> Cell {
        Cell {
            x,
            width,
            right: false,
            lines: Vec::new(),
        }
    }

    fn right((x, width): (f32, f32)) -> Cell {
        Cell {
            right: true,
            ..Cell::left((x, width))
        }
    }

    /// Adds text, wrapped to the cell's width.
    fn text(mut self, text: &str, style: Style) -> Cell {
        for line in wrap(&winansi(text), style.font, style.size, self.width) {
            self.lines.push(CellLine { text: line, style });
        }
        self
    }
}

/// Cells side by side, as bands: band i holds line i of every cell, as high as its
/// tallest line. Text sits centred on the band so mixed sizes share a line neatly.
fn row(cells: &[Cell]) -> Vec<Band> {
    let n = cells.iter().map(|c| c.lines.len()).max().unwrap_or(0);
    let mut bands = Vec::with_capacity(n);
    for i in 0..n {
        let height = cells
            .iter()
            .filter_map(|c| c.lines.get(i))
            .map(|l| l.style.leading)
            .fold(0.0, f32::max);
        let mut items = Vec::new();
        for cell in cells {
            let Some(line) = cell.lines.get(i) else {
                continue;
            };
            if line.text.is_empty() {
                continue;
            }
            let s = line.style;
            let x = if cell.right {
                cell.x + cell.width - width(s.font, &line.text, s.size)
            } else {
                cell.x
            };
            items.push(Item::Text {
                x,
                y: height / 2.0 + 0.36 * s.size,
                font: s.font,
                size: s.size,
                color: s.color,
                text: line.text.clone(),
            });
        }
        bands.push(Band { height, items });
    }
    bands
}

/// One full-width paragraph.
fn para(text: &str, style: Style) -> Vec<Band> {
    row(&[Cell::left((LEFT, WIDTH)).text(text, style)])
}

/// Extra space under the last band.
fn pad(bands: &mut [Band], extra: f32) {
    if let Some(last) = bands.last_mut() {
        last.height += extra;
    }
}

fn rule_below(bands: &mut [Band], width: f32, color: Rgb) {
    if let Some(last) = bands.last_mut() {
        last.items.push(Item::Rule {
            x1: LEFT,
            x2: RIGHT,
            y: last.height,
            width,
            color,
        });
    }
}

fn rule_above(bands: &mut [Band], x1: f32, width: f32, color: Rgb) {
    if let Some(first) = bands.first_mut() {
        first.items.push(Item::Rule {
            x1,
            x2: RIGHT,
            y: 0.0,
            width,
            color,
        });
    }
}

/// Bands placed top to bottom, page after page.
struct Flow {
    pages: Vec<Vec<Item>>,
    /// Top of the next band.
    y: f32,
    /// Nothing but the repeated header is on this page yet: breaking again would not help.
    fresh: bool,
    /// Drawn at the top of every new page (a table's heading and column titles).
    repeat: Vec<Band>,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            pages: vec![Vec::new()],
            y: TOP,
            fresh: true,
            repeat: Vec::new(),
        }
    }

    fn room(&self) -> f32 {
        self.y - BOTTOM
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = TOP;
        let repeat = std::mem::take(&mut self.repeat);
        for band in &repeat {
            self.draw(band);
        }
        self.repeat = repeat;
        self.fresh = true;
    }

    fn draw(&mut self, band: &Band) {
        let top = self.y;
        if let Some(page) = self.pages.last_mut() {
            page.extend(band.items.iter().map(|i| i.placed(top)));
        }
        self.y -= band.height;
        self.fresh = false;
    }

    fn band(&mut self, band: &Band) {
        if band.height > self.room() && !self.fresh {
            self.new_page();
        }
        self.draw(band);
    }

    /// Starts a new page unless `h` points fit here; not if they wouldn't fit on a new
    /// page either (a huge row then splits across pages rather than leaving one blank).
    fn need(&mut self, h: f32) {
        let page = TOP - BOTTOM - height(&self.repeat);
        if h > self.room() && !self.fresh && h <= page {
            self.new_page();
        }
    }

    /// Bands kept on one page where they fit on one.
    fn keep(&mut self, bands: &[Band]) {
        self.need(height(bands));
        for band in bands {
            self.band(band);
        }
    }

    fn gap(&mut self, h: f32) {
        if !self.fresh {
            self.y -= h;
        }
    }
}

fn layout(s: &Statement, letterhead: &Letterhead<'_>) -> Vec<Vec<Item>> {
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
    for group in details(s) {
        flow.keep(&group);
    }
    revenue_section(&mut flow, s);
    owed_section(&mut flow, s);
    flow.gap(12.0);
    for group in notes(s) {
        flow.keep(&group);
    }
    flow.pages
}

fn header(s: &Statement, letterhead: &Letterhead<'_>) -> Vec<Band> {
    let half = (WIDTH - 20.0) / 2.0;
    let mut left = Cell::left((LEFT, half)).text(&s.document.company, COMPANY);
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
fn details(s: &Statement) -> Vec<Vec<Band>> {
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
            "{} ({}): {first} to {last}, local dates",
            d.period, d.time_zone
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
fn revenue_section(flow: &mut Flow, s: &Statement) {
    let d = &s.document;
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
    groups.extend(current.into_iter().map(line_row));
    groups.push(subtotal(
        &format!("Revenue basis ({})", d.currency),
        d.revenue_basis,
    ));
    if !carried.is_empty() {
        let mut note = para(
            "Late revenue for earlier periods (for reference; not part of the basis above)",
            BODY_BOLD,
        );
        pad(&mut note, 2.0);
        rule_below(&mut note, 0.5, GRAY);
        groups.push(note);
        groups.extend(carried.into_iter().map(line_row));
    }
    section(
        flow,
        "Revenue basis",
        "Revenue is the basis the shares are computed on; it is not owed to the partner.",
        groups,
    );
}

fn owed_section(flow: &mut Flow, s: &Statement) {
    let d = &s.document;
    let mut groups: Vec<Vec<Band>> = Vec::new();
    let owed: Vec<&Line> = d.lines.iter().filter(|l| l.payable()).collect();
    if owed.is_empty() {
        groups.push(para("No amounts owed for this period.", BODY));
    }
    groups.extend(owed.into_iter().map(line_row));
    let label = Cell::right((LEFT, COL_PERIOD.0 + COL_PERIOD.1 - LEFT))
        .text(&format!("Total owed ({})", d.currency), TOTAL)
        .text("precise, before rounding", SMALL);
    let amount = Cell::right(COL_AMOUNT)
        .text(&d.total.to_string(), TOTAL)
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
    let heading = para(title, SECTION);
    let intro = para(intro, NOTE);
    let columns = table_header();
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
    for group in &groups {
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

fn line_row(line: &Line) -> Vec<Band> {
    let mut desc = Cell::left(COL_DESC).text(&line.description, BODY);
    let trace = trace(line);
    if !trace.is_empty() {
        desc = desc.text(&trace, SMALL);
    }
    let mut price = Cell::right(COL_PRICE);
    if let Some(unit) = line.unit_price {
        price = price.text(&unit.to_string(), BODY);
    }
    if let Some(rate) = line.rate {
        price = price.text(&percent(rate), BODY);
    }
    let mut bands = row(&[
        Cell::left(COL_KIND).text(&kind_name(line), BODY),
        desc,
        Cell::right(COL_QTY).text(&line.quantity.map_or_else(String::new, shown), BODY),
        price,
        Cell::left(COL_TIER).text(line.tier.as_deref().unwrap_or(""), BODY),
        Cell::left(COL_PERIOD).text(line.period.as_deref().unwrap_or(""), BODY),
        // The Decimal's own string: exactly the scale it was rounded to, never a float.
        Cell::right(COL_AMOUNT)
            .text(&line.amount.to_string(), BODY)
            .text(&shown(line.precise), SMALL),
    ]);
    pad(&mut bands, 3.0);
    rule_below(&mut bands, 0.3, LIGHT);
    bands
}

fn subtotal(label: &str, amount: Decimal) -> Vec<Band> {
    let mut bands = row(&[
        Cell::right((LEFT, COL_PERIOD.0 + COL_PERIOD.1 - LEFT)).text(label, BODY_BOLD),
        Cell::right(COL_AMOUNT).text(&amount.to_string(), BODY_BOLD),
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

fn footer(s: &Statement, page: usize, count: usize) -> Vec<Item> {
    let size = 8.0;
    let mut items = vec![Item::Rule {
        x1: LEFT,
        x2: RIGHT,
        y: FOOTER_RULE,
        width: 0.5,
        color: GRAY,
    }];
    let pages = winansi(&format!("Page {page} of {count}"));
    let pages_w = width(Font::Regular, &pages, size);
    items.push(Item::Text {
        x: RIGHT - pages_w,
        y: FOOTER_LINE,
        font: Font::Regular,
        size,
        color: GRAY,
        text: pages,
    });
    // Who and which period too, so a page that gets separated still says what it is.
    let ident = match s.status {
        Status::Draft => format!("DRAFT — not issued · statement id {}", s.id),
        Status::Finalized => format!("Statement {}", shown_number(s)),
        Status::Void => format!("Statement {} · VOID", shown_number(s)),
    } + &format!(" · {} · {}", s.document.partner_name, s.document.period);
    items.push(Item::Text {
        x: LEFT,
        y: FOOTER_LINE,
        font: Font::Regular,
        size,
        color: GRAY,
        text: fit(
            &winansi(&ident),
            Font::Regular,
            size,
            WIDTH - pages_w - 12.0,
        ),
    });
    if s.status != Status::Draft {
        let hash = winansi(&format!(
            "SHA-256: {}",
            s.hash.as_deref().unwrap_or("not recorded")
        ));
        // A 64-digit hash fits at 7 pt; anything longer shrinks, and is cut only past 4.5 pt.
        let size = [7.0, 6.5, 6.0, 5.5, 5.0, 4.5]
            .into_iter()
            .find(|&sz| width(Font::Mono, &hash, sz) <= WIDTH)
            .unwrap_or(4.5);
        items.push(Item::Text {
            x: LEFT,
            y: FOOTER_HASH,
            font: Font::Mono,
            size,
            color: GRAY,
            text: fit(&hash, Font::Mono, size, WIDTH),
        });
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

/// A rate as a percentage: 0.18 -> "18%". Decimal arithmetic, never floats; a rate too
/// large to scale is shown as it is rather than overflowing.
fn percent(rate: Decimal) -> String {
    match rate.checked_mul(Decimal::ONE_HUNDRED) {
        Some(p) => format!("{}%", p.normalize()),
        None => rate.to_string(),
    }
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

// ---------------------------------------------------------------------------------------
// PDF syntax.

/// A number for a content stream: two decimals at most, no "-0".
fn num(v: f32) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".into()
    } else {
        s.to_owned()
    }
}

/// A literal string: `(`, `)` and `\` escaped, bytes outside printable ASCII as octal
/// escapes, so the file stays ASCII after its header.
fn literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('(');
    for &b in bytes {
        match b {
            b'(' | b')' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' '..=b'~' => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out.push(')');
    out
}

/// A text string for the document information dictionary: UTF-16BE with a byte order
/// mark, which carries any character (unlike the fonts, the viewer's UI can show them).
fn text_string(text: &str) -> String {
    let mut out = String::from("<FEFF");
    for unit in text.encode_utf16() {
        let _ = write!(out, "{unit:04X}");
    }
    out.push('>');
    out
}

fn content(items: &[Item]) -> Vec<u8> {
    let mut out = String::new();
    for item in items {
        match item {
            Item::Text {
                x,
                y,
                font,
                size,
                color,
                text,
            } => {
                let _ = writeln!(
                    out,
                    "BT /{} {} Tf {} {} {} rg {} {} Td {} Tj ET",
                    font.resource(),
                    num(*size),
                    num(color.0),
                    num(color.1),
                    num(color.2),
                    num(*x),
                    num(*y),
                    literal(text)
                );
            }
            Item::Rule {
                x1,
                x2,
                y,
                width,
                color,
            } => {
                let _ = writeln!(
                    out,
                    "{} w {} {} {} RG {} {} m {} {} l S",
                    num(*width),
                    num(color.0),
                    num(color.1),
                    num(color.2),
                    num(*x1),
                    num(*y),
                    num(*x2),
                    num(*y)
                );
            }
        }
    }
    out.into_bytes()
}

/// PDF date of an instant: `D:YYYYMMDDHHmmSSZ`.
fn pdf_date(at: DateTime<Utc>) -> String {
    at.format("D:%Y%m%d%H%M%SZ").to_string()
}

fn write_pdf(s: &Statement, pages: &[Vec<Item>]) -> Vec<u8> {
    // Objects 1-6 are fixed; page i is object 7 + 2i and its content 8 + 2i.
    let mut objects: Vec<Vec<u8>> = Vec::with_capacity(6 + 2 * pages.len());
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    let kids: Vec<String> = (0..pages.len())
        .map(|i| format!("{} 0 R", 7 + 2 * i))
        .collect();
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            pages.len()
        )
        .into_bytes(),
    );
    // Helvetica's widths go in the file too, so every viewer places glyphs exactly as
    // measured here; Courier needs none (monospaced).
    for (base, widths) in [
        ("Helvetica", Some(&HELVETICA)),
        ("Helvetica-Bold", Some(&HELVETICA_BOLD)),
        ("Courier", None),
    ] {
        let widths = widths.map_or_else(String::new, |w| {
            let list: Vec<String> = w.iter().map(u16::to_string).collect();
            format!(" /FirstChar 32 /LastChar 255 /Widths [{}]", list.join(" "))
        });
        objects.push(
            format!(
                "<< /Type /Font /Subtype /Type1 /BaseFont /{base} /Encoding /WinAnsiEncoding{widths} >>"
            )
            .into_bytes(),
        );
    }
    objects.push(info(s).into_bytes());
    for (i, page) in pages.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {} {}] /Resources << /Font << \
                 /F1 3 0 R /F2 4 0 R /F3 5 0 R >> /ProcSet [/PDF /Text] >> /Contents {} 0 R >>",
                num(PAGE_W),
                num(PAGE_H),
                8 + 2 * i
            )
            .into_bytes(),
        );
        let stream = content(page);
        let mut obj = format!("<< /Length {} >>\nstream\n", stream.len()).into_bytes();
        obj.extend_from_slice(&stream);
        obj.extend_from_slice(b"\nendstream");
        objects.push(obj);
    }

    // The binary comment tells transfer tools the file is binary.
    let mut out: Vec<u8> = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    // A file identifier from the content itself: stable for the same statement.
    let id = hex::encode(Sha256::digest(&out).get(..16).unwrap_or_default());
    let xref = out.len();
    let mut tail = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        // Each entry is exactly 20 bytes, ending in space and newline.
        let _ = writeln!(tail, "{offset:010} 00000 n ");
    }
    let _ = write!(
        tail,
        "trailer\n<< /Size {} /Root 1 0 R /Info 6 0 R /ID [<{id}> <{id}>] >>\nstartxref\n{xref}\n%%EOF",
        objects.len() + 1
    );
    out.extend_from_slice(tail.as_bytes());
    out
}

fn info(s: &Statement) -> String {
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
    // The statement's own instant, never the clock: the same statement, the same bytes.
    let date = pdf_date(s.finalized_at.unwrap_or(s.computed_at));
    format!(
        "<< /Title {} /Author {} /Subject {} /Producer (partner-gateway) /Creator \
         (partner-gateway) /CreationDate ({date}) /ModDate ({date}) >>",
        text_string(&title),
        text_string(&d.company),
        text_string(&format!(
            "Revenue share for {}, agreement {} version {}, period {}",
            d.partner_name, d.agreement_id, d.agreement_version, d.period
        )),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::model::Document;
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn long_precise_values_are_cut_to_six_decimals_with_an_ellipsis() {
        let d = |x: &str| x.parse::<Decimal>().unwrap();
        assert_eq!(
            shown(d("2121.4229166666666666666666667")),
            "2121.422916\u{2026}"
        );
        assert_eq!(shown(d("-0.0000001")), "0.000000\u{2026}");
        assert_eq!(shown(d("0.25")), "0.25");
        assert_eq!(shown(d("1.10000000")), "1.1");
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn line(kind: LineKind, description: &str, precise: &str, amount: &str) -> Line {
        let mut l = Line::new(kind, description);
        l.precise = dec(precise);
        l.amount = dec(amount);
        l
    }

    fn sample_lines() -> Vec<Line> {
        let mut api = line(
            LineKind::Revenue,
            "API calls: 120000 at 0.0125 each",
            "1500",
            "1500.00",
        );
        api.meter = Some("api_calls".into());
        api.quantity = Some(dec("120000"));
        api.unit_price = Some(dec("0.0125"));
        api.tier = Some("2: above 100000".into());
        let mut share = line(
            LineKind::Share,
            "Revenue share 18% of 1500.00",
            "270.0045",
            "270.00",
        );
        share.quantity = Some(dec("1500.00"));
        share.rate = Some(dec("0.18"));
        let mut referral = line(
            LineKind::Referral,
            "Referral fee: Globex Corporation",
            "250",
            "250.00",
        );
        referral.reference = Some("evt_7Q2".into());
        referral.unit_price = Some(dec("250"));
        let mut late = line(
            LineKind::CarriedLateUsage,
            "Late usage for 2026-09, share: Revenue share 18%",
            "4.5018",
            "4.50",
        );
        late.carried_kind = Some(LineKind::Share);
        late.period = Some("2026-09".into());
        let mut late_rev = line(
            LineKind::CarriedLateUsage,
            "Late usage for 2026-09, revenue: API calls",
            "25.01",
            "25.01",
        );
        late_rev.carried_kind = Some(LineKind::Revenue);
        late_rev.period = Some("2026-09".into());
        let mut adj = line(
            LineKind::Adjustment,
            "Credit for the September outage",
            "-35.5",
            "-35.50",
        );
        adj.reference = Some("adj_19".into());
        adj.author = Some("controller@example.com".into());
        vec![api, share, referral, late, late_rev, adj]
    }

    fn document(lines: Vec<Line>) -> Document {
        let mut d = Document {
            company: "Northwind Platform Inc.".into(),
            partner_id: "acme".into(),
            partner_name: "Acme Resellers GmbH".into(),
            agreement_id: "acme-rev-share".into(),
            agreement_version: 3,
            period: "2026-10".into(),
            period_start: at("2026-10-01T05:00:00Z"),
            period_end: at("2026-11-01T05:00:00Z"),
            time_zone: "America/Chicago".into(),
            currency: "USD".into(),
            rounding: "half_away_from_zero".into(),
            ledger_as_of: at("2026-11-03T06:00:00Z"),
            carried_since: Some(at("2026-10-03T06:00:00Z")),
            provisional: false,
            provenance: false,
            self_reported_events: None,
            lines,
            revenue_basis: Decimal::ZERO,
            total: Decimal::ZERO,
            total_precise: Decimal::ZERO,
        };
        d.sum();
        d.revenue_basis.rescale(2);
        d.total.rescale(2);
        d
    }

    fn finalized(document: Document) -> Statement {
        let hash = document.hash(12);
        Statement {
            id: "0192f1c4-7a1e-7cc3-9d0e-5a1b2c3d4e5f".into(),
            status: Status::Finalized,
            number: Some(12),
            number_display: Some(number_display("acme", 12)),
            hash: Some(hash),
            document,
            computed_at: at("2026-11-03T06:00:00Z"),
            finalized_at: Some(at("2026-11-04T15:30:00Z")),
            finalized_by: Some("controller@example.com".into()),
            voided_at: None,
            voided_by: None,
            void_reason: None,
            replaces: None,
            replaced_by: None,
            settling: None,
        }
    }

    fn draft(document: Document) -> Statement {
        Statement {
            status: Status::Draft,
            number: None,
            number_display: None,
            hash: None,
            finalized_at: None,
            finalized_by: None,
            ..finalized(document)
        }
    }

    fn letterhead() -> Vec<String> {
        vec![
            "100 Market Street, Suite 400".into(),
            "Chicago, IL 60606".into(),
        ]
    }

    fn pdf(s: &Statement) -> Vec<u8> {
        render(
            s,
            &Letterhead {
                company_address: &letterhead(),
            },
        )
    }

    /// Runs a poppler tool on the PDF (written to a file of its own) and returns stdout
    /// and stderr. A missing tool fails the test: these checks must not be skipped.
    fn poppler(tool: &str, before: &[&str], after: &[&str], pdf: &[u8]) -> (String, String) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pg-statement-{}-{}.pdf",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, pdf).unwrap();
        let out = Command::new(tool)
            .args(before)
            .arg(&path)
            .args(after)
            .output();
        let _ = std::fs::remove_file(&path);
        let out = match out {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{tool} is not installed: install poppler-utils (apt-get install -y poppler-utils) \
                 to run the PDF checks"
            ),
            Err(e) => panic!("could not run {tool}: {e}"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{tool} failed: {stderr}");
        (stdout, stderr)
    }

    fn text(pdf: &[u8]) -> String {
        let (out, err) = poppler("pdftotext", &["-layout"], &["-"], pdf);
        assert!(err.trim().is_empty(), "pdftotext complained: {err}");
        out
    }

    fn page_count(pdf: &[u8]) -> usize {
        let (out, err) = poppler("pdfinfo", &[], &[], pdf);
        assert!(err.trim().is_empty(), "pdfinfo complained: {err}");
        out.lines()
            .find_map(|l| l.strip_prefix("Pages:"))
            .expect("pdfinfo prints Pages:")
            .trim()
            .parse()
            .unwrap()
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).rposition(|w| w == needle)
    }

    /// The file's structure: header, objects where the xref says, startxref at the xref.
    fn check_structure(pdf: &[u8]) {
        assert!(pdf.starts_with(b"%PDF-1.4"));
        assert!(pdf.ends_with(b"%%EOF"));
        let sx = rfind(pdf, b"startxref\n").unwrap();
        let rest = std::str::from_utf8(&pdf[sx + 10..]).unwrap();
        let xref: usize = rest.lines().next().unwrap().trim().parse().unwrap();
        assert!(
            pdf[xref..].starts_with(b"xref\n"),
            "startxref must point at xref"
        );
        let table = std::str::from_utf8(&pdf[xref..sx]).unwrap();
        let mut lines = table.lines().skip(1);
        let head = lines.next().unwrap();
        let count: usize = head.split(' ').nth(1).unwrap().parse().unwrap();
        let entries: Vec<&str> = lines.take(count).collect();
        assert_eq!(entries.len(), count);
        assert_eq!(entries[0], "0000000000 65535 f ");
        for (n, entry) in entries.iter().enumerate().skip(1) {
            assert_eq!(entry.len(), 19, "entry {n} (plus newline) must be 20 bytes");
            let offset: usize = entry[..10].parse().unwrap();
            let want = format!("{n} 0 obj");
            assert!(
                pdf[offset..].starts_with(want.as_bytes()),
                "xref entry {n} points at {offset}, not at `{want}`"
            );
        }
        let trailer = std::str::from_utf8(&pdf[find(pdf, b"trailer").unwrap()..]).unwrap();
        assert!(trailer.contains(&format!("/Size {count}")));
        assert!(trailer.contains("/Root 1 0 R"));
        // Each stream's /Length is its exact byte count.
        let mut at = 0;
        while let Some(p) = find(&pdf[at..], b"/Length ") {
            let start = at + p + 8;
            let end = start + find(&pdf[start..], b" ").unwrap();
            let len: usize = std::str::from_utf8(&pdf[start..end])
                .unwrap()
                .parse()
                .unwrap();
            let data = start + find(&pdf[start..], b"stream\n").unwrap() + 7;
            assert!(pdf[data + len..].starts_with(b"\nendstream"));
            at = data + len;
        }
    }

    #[test]
    fn the_file_is_well_formed() {
        check_structure(&pdf(&finalized(document(sample_lines()))));
        check_structure(&pdf(&draft(document(Vec::new()))));
    }

    #[test]
    fn the_same_statement_gives_the_same_bytes() {
        let s = finalized(document(sample_lines()));
        assert_eq!(pdf(&s), pdf(&s));
        let info = String::from_utf8_lossy(&pdf(&s)).into_owned();
        assert!(info.contains("/CreationDate (D:20261104153000Z)"));
        assert!(info.contains("/Producer (partner-gateway)"));
        let d = draft(document(sample_lines()));
        let info = String::from_utf8_lossy(&pdf(&d)).into_owned();
        assert!(info.contains("/CreationDate (D:20261103060000Z)"));
    }

    #[test]
    fn a_finalized_statement_reads_back_with_every_line_and_the_hash() {
        let s = finalized(document(sample_lines()));
        let bytes = pdf(&s);
        let t = text(&bytes);
        assert_eq!(page_count(&bytes), 1);
        for want in [
            "Northwind Platform Inc.",
            "100 Market Street, Suite 400",
            "Revenue share statement",
            "Statement no. ACME-00012",
            "Status: Finalized",
            "Statement id: 0192f1c4-7a1e-7cc3-9d0e-5a1b2c3d4e5f",
            "Acme Resellers GmbH",
            "acme-rev-share, version 3",
            "2026-10 (America/Chicago): 2026-10-01 to 2026-10-31",
            "2026-10-01 05:00:00 UTC",
            "2026-11-01 05:00:00 UTC (exclusive)",
            "USD",
            "half away from zero",
            "2026-11-03 06:00:00 UTC",
            "Carried since",
            "Revenue basis",
            "Amounts owed",
            "Late revenue for earlier periods",
            "Total owed (USD)",
            "Page 1 of 1",
            "18%",
            "0.0125",
            "ref evt_7Q2",
            "added by controller@example.com",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
        for l in &s.document.lines {
            let fragment: String = l.description.chars().take(24).collect();
            assert!(t.contains(&fragment), "missing {fragment:?} in:\n{t}");
            assert!(
                t.contains(&l.amount.to_string()),
                "missing {} in:\n{t}",
                l.amount
            );
            assert!(t.contains(&shown(l.precise)), "missing {}", l.precise);
        }
        // 1500.00 basis; owed 270.00 + 250.00 + 4.50 - 35.50.
        assert_eq!(s.document.revenue_basis.to_string(), "1500.00");
        assert_eq!(s.document.total.to_string(), "489.00");
        assert!(t.contains("489.00"));
        assert!(t.contains(&shown(s.document.total_precise)));
        let hash = s.hash.clone().unwrap();
        assert_eq!(hash.len(), 64);
        assert!(
            t.contains(&format!("SHA-256: {hash}")),
            "hash missing:\n{t}"
        );
        assert!(!t.contains("Provisional"));
    }

    #[test]
    fn many_lines_paginate_with_the_table_header_repeated() {
        let lines = (1..=300)
            .map(|i| {
                let mut l = line(
                    LineKind::Referral,
                    &format!("Referral fee: customer number {i}"),
                    &format!("{i}.125"),
                    &format!("{i}.13"),
                );
                l.reference = Some(format!("evt_{i:04}"));
                l
            })
            .collect();
        let s = finalized(document(lines));
        let bytes = pdf(&s);
        check_structure(&bytes);
        let pages = page_count(&bytes);
        assert!(pages >= 3, "300 lines on {pages} pages");
        let t = text(&bytes);
        assert!(t.contains(&format!("Page 1 of {pages}")));
        assert!(t.contains(&format!("Page {pages} of {pages}")));
        assert_eq!(t.matches("Amounts owed (continued)").count(), pages - 1);
        // Column titles on every page (the first page has one table per section).
        assert_eq!(t.matches("Description").count(), pages + 1);
        assert_eq!(t.matches("SHA-256: ").count(), pages);
        for i in 1..=300 {
            let desc = format!("Referral fee: customer number {i} ");
            assert!(t.contains(desc.trim_end()), "line {i} missing");
            assert!(
                t.contains(&format!(" {i}.13\n")),
                "amount of line {i} missing"
            );
        }
        assert!(t.contains(&s.document.total.to_string()));
    }

    #[test]
    fn a_draft_says_it_is_not_issued() {
        let mut d = document(sample_lines());
        d.provisional = true;
        let s = draft(d);
        let bytes = pdf(&s);
        check_structure(&bytes);
        let t = text(&bytes);
        assert!(t.contains("DRAFT — not issued"), "{t}");
        assert!(t.contains("Status: Draft"));
        assert!(t.contains("Provisional: the period had not ended when computed"));
        assert!(!t.contains("SHA-256"));
        assert!(!t.contains("Statement no."));
    }

    #[test]
    fn a_void_statement_says_so_with_reason_who_and_when() {
        let mut s = finalized(document(sample_lines()));
        s.status = Status::Void;
        s.voided_at = Some(at("2026-11-10T09:15:00Z"));
        s.voided_by = Some("cfo@example.com".into());
        s.void_reason = Some("Wrong agreement version (rate should be 20%)".into());
        let bytes = pdf(&s);
        check_structure(&bytes);
        let t = text(&bytes);
        for want in [
            "VOID",
            "Status: VOID",
            "Reason: Wrong agreement version (rate should be 20%)",
            "Voided by cfo@example.com on 2026-11-10 09:15:00 UTC",
            "Statement ACME-00012 · VOID",
            "SHA-256: ",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
    }

    #[test]
    fn a_replacement_names_the_statement_it_replaces() {
        let mut s = finalized(document(sample_lines()));
        s.replaces = Some("0192f1c4-0000-7000-8000-000000000001".into());
        let t = text(&pdf(&s));
        assert!(t.contains("Replaces statement 0192f1c4-0000-7000-8000-000000000001"));
    }

    #[test]
    fn non_ascii_names_come_out_as_written() {
        let mut d = document(sample_lines());
        d.partner_name = "Universitätsklinikum Zürich – Süd".into();
        d.lines[0].description = "Café visits — €5 each ✓".into();
        let s = finalized(d);
        let bytes = pdf(&s);
        let t = text(&bytes);
        assert!(t.contains("Universitätsklinikum Zürich – Süd"), "{t}");
        // WinAnsi has €, é and the em dash; the check mark becomes '?'.
        assert!(t.contains("Café visits — €5 each ?"), "{t}");
        let (info, _) = poppler("pdfinfo", &[], &[], &bytes);
        assert!(info.contains("Universitätsklinikum Zürich – Süd"), "{info}");
    }

    #[test]
    fn an_empty_statement_renders() {
        let s = draft(document(Vec::new()));
        let bytes = pdf(&s);
        check_structure(&bytes);
        let t = text(&bytes);
        assert!(t.contains("No revenue lines for this period."));
        assert!(t.contains("No amounts owed for this period."));
        assert_eq!(page_count(&bytes), 1);
    }

    /// Everything drawn stays inside the margins, body text above the footer.
    fn check_inside(pages: &[Vec<Item>]) {
        for (p, page) in pages.iter().enumerate() {
            for item in page {
                match item {
                    Item::Text {
                        x,
                        y,
                        font,
                        size,
                        text,
                        ..
                    } => {
                        let right = x + width(*font, text, *size);
                        assert!(*x >= LEFT - 0.01, "page {p}: starts left of the margin");
                        assert!(
                            right <= RIGHT + 0.01,
                            "page {p}: {:?} ends at {right}",
                            String::from_utf8_lossy(text)
                        );
                        assert!(*y >= BOTTOM && *y <= TOP, "page {p}: y {y}");
                    }
                    Item::Rule { x1, x2, y, .. } => {
                        assert!(*x1 >= LEFT - 0.01 && *x2 <= RIGHT + 0.01);
                        assert!(*y >= BOTTOM - 0.01 && *y <= TOP + 0.01, "rule at {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn hostile_input_stays_on_the_page_and_does_not_panic() {
        let mut lines = sample_lines();
        let mut huge = line(LineKind::Share, &"x".repeat(60_000), "1", "1.00");
        huge.tier = Some("3: above 1000000000000 up to 9999999999999999".into());
        huge.quantity = Some(Decimal::MAX);
        huge.rate = Some(Decimal::MAX);
        huge.unit_price = Some(Decimal::MIN);
        lines.push(huge);
        lines.push(line(
            LineKind::Bonus,
            &"word ".repeat(3_000),
            "-0.0000000000000000000000000001",
            "-79228162514264337593543950335",
        ));
        lines.push(line(LineKind::Adjustment, "", "0", "0.00"));
        lines.push(line(
            LineKind::Share,
            "tabs\tand\r\nnew\nlines\u{0}control \u{1F600}",
            "1",
            "1.00",
        ));
        let mut d = document(lines);
        d.partner_name = "Very Long Partner Name ".repeat(400);
        d.company = "C".repeat(2_000);
        d.period = "not a period label".into();
        d.time_zone = "Z".repeat(500);
        let mut s = finalized(d);
        s.hash = Some("f".repeat(300));
        s.number_display = Some("N".repeat(400));
        s.id = "(id with \\ parens)".into();
        let address = vec!["A".repeat(5_000), String::new()];
        let head = Letterhead {
            company_address: &address,
        };
        let pages = layout(&s, &head);
        check_inside(&pages);
        assert!(pages.len() > 3);
        for (i, _) in pages.iter().enumerate() {
            for item in footer(&s, i + 1, pages.len()) {
                if let Item::Text {
                    x,
                    font,
                    size,
                    text,
                    ..
                } = item
                {
                    assert!(x + width(font, &text, size) <= RIGHT + 0.01);
                }
            }
        }
        let bytes = render(&s, &head);
        check_structure(&bytes);
        assert_eq!(page_count(&bytes), pages.len());
        let t = text(&bytes);
        // Too wide for the amount column even alone: it wraps, a chunk a line.
        assert!(t.contains("-79228162"), "{t}");
    }

    #[test]
    fn amounts_are_right_aligned_on_the_right_margin() {
        let s = finalized(document(sample_lines()));
        let pages = layout(
            &s,
            &Letterhead {
                company_address: &[],
            },
        );
        check_inside(&pages);
        let mut seen = 0;
        for l in &s.document.lines {
            let want = l.amount.to_string().into_bytes();
            for item in &pages[0] {
                if let Item::Text {
                    x,
                    font,
                    size,
                    text,
                    ..
                } = item
                    && *text == want
                    && *x > COL_AMOUNT.0
                {
                    let right = x + width(*font, text, *size);
                    assert!((right - RIGHT).abs() < 0.01, "{want:?} ends at {right}");
                    seen += 1;
                }
            }
        }
        assert!(seen >= s.document.lines.len());
    }

    #[test]
    fn text_maps_to_winansi_and_escapes() {
        assert_eq!(winansi("é€–—ü"), vec![0xE9, 0x80, 0x96, 0x97, 0xFC]);
        assert_eq!(winansi("a\tb✓\u{7}"), b"a b??".to_vec());
        assert_eq!(literal(b"a(b)c\\d"), "(a\\(b\\)c\\\\d)");
        assert_eq!(literal(&[0xE9, b'x', 0x0A]), "(\\351x\\012)");
        assert_eq!(percent(dec("0.18")), "18%");
        assert_eq!(percent(dec("0.125")), "12.5%");
        assert_eq!(percent(dec("1")), "100%");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(12.5), "12.5");
        assert_eq!(
            local_dates("2026-Q4").map(|(a, b)| (a.to_string(), b.to_string())),
            Some(("2026-10-01".into(), "2026-12-31".into()))
        );
        assert_eq!(
            local_dates("2028-02").map(|(_, b)| b.to_string()),
            Some("2028-02-29".into())
        );
        assert_eq!(local_dates("2026-13"), None);
        assert_eq!(local_dates("2026-Q5"), None);
    }

    #[test]
    fn wrapping_uses_the_real_widths() {
        // "Hello" in Helvetica: H 722 + e 556 + l 222 + l 222 + o 556 = 2278 units.
        assert_eq!(units(Font::Regular, b"Hello"), 2278);
        assert_eq!(units(Font::Bold, b"Hello"), 722 + 556 + 278 + 278 + 611);
        assert_eq!(units(Font::Mono, b"abc"), 1800);
        let lines = wrap(b"aaa bbb ccc", Font::Regular, 10.0, 40.0);
        assert_eq!(lines, vec![b"aaa bbb".to_vec(), b"ccc".to_vec()]);
        for l in wrap(&[b'W'; 500], Font::Bold, 9.0, 50.0) {
            assert!(width(Font::Bold, &l, 9.0) <= 50.0);
        }
        assert!(wrap(b"   ", Font::Regular, 8.0, 100.0).is_empty());
        // A column narrower than one glyph still makes progress, one byte a line.
        assert_eq!(wrap(b"WW", Font::Regular, 8.0, 1.0).len(), 2);
        assert_eq!(fit(b"abcdef", Font::Mono, 10.0, 30.0), b"ab...".to_vec());
    }
}
