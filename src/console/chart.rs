//! Line and grouped-bar charts for the console, rendered on the server as an `<svg>` string.
//!
//! Server-side SVG means the console's pages show their charts without JavaScript and pass a
//! strict Content-Security-Policy: the output has no script, no event handlers and no inline
//! styles (only SVG presentation attributes, plus `class` hooks a stylesheet may theme).
//! Everything shown as text — ticks, values, labels — comes from `Decimal`, so a label never
//! reads `0.30000000000000004`; `f64` is used for pixel positions only. The output depends on
//! the input alone (no clock, no randomness, no hash-map order), so it can be golden-tested.

use std::fmt::Write as _;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Writing into a `String` cannot fail, so the `fmt::Result` is dropped.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}
/// One line (or bar group member) of a chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Legend text, e.g. "2026-10" or "epic-sandbox".
    pub name: String,
    /// One per x label; `None` = no data (a gap, not zero). Values past the last label are
    /// ignored.
    pub values: Vec<Option<Decimal>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Line,
    Bars,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// E.g. "Launches per day".
    pub title: String,
    /// E.g. "launches" or "USD"; shown on the y axis and in hover text.
    pub unit: String,
    /// E.g. dates "2026-10-01".
    pub x_labels: Vec<String>,
    pub series: Vec<Series>,
    pub kind: Kind,
}

/// Okabe–Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

/// Dash patterns for line series after the first, so lines differ without colour too.
const DASHES: [&str; 11] = [
    "8 4",
    "2 3",
    "8 3 2 3",
    "12 4",
    "4 4",
    "8 3 2 3 2 3",
    "1 4",
    "12 3 4 3",
    "6 2",
    "3 6",
    "16 4 2 4",
];

const NO_DATA: &str = "No data for this range";
const WIDTH: f64 = 800.0;
const BASE_HEIGHT: f64 = 320.0;
const FONT: f64 = 11.0;
/// Rough advance of one character at `FONT`; only used to reserve room for text.
const CHAR_W: f64 = FONT * 0.6;
const LEGEND_ROW: f64 = 18.0;
/// More labels than this overlap on an 800-wide axis.
const MAX_X_LABELS: usize = 12;
/// Beyond this many drawn x labels, dates no longer fit side by side.
const ROTATE_ABOVE: usize = 6;
/// Beyond this many points per series, markers turn into a blur of dots.
const MARKER_LIMIT: usize = 120;

/// The chart as an `<svg>` element (no XML prolog) to embed in an HTML page.
pub fn render(chart: &Chart) -> String {
    let id = chart_id(chart);
    let n = chart.x_labels.len();
    if n == 0 || chart.series.is_empty() {
        return render_empty(chart, &id);
    }

    let mut min: Option<Decimal> = None;
    let mut max: Option<Decimal> = None;
    for series in &chart.series {
        for &v in series.values.iter().take(n).flatten() {
            min = Some(min.map_or(v, |m| m.min(v)));
            max = Some(max.map_or(v, |m| m.max(v)));
        }
    }
    let axis = ticks(min.unwrap_or(Decimal::ZERO), max.unwrap_or(Decimal::ZERO));
    let tick_labels: Vec<String> = axis.iter().map(|t| format_decimal(*t)).collect();

    let legend = if chart.series.len() > 1 {
        legend_layout(&chart.series)
    } else {
        Vec::new()
    };
    let legend_rows = legend.iter().map(|item| item.row + 1).max().unwrap_or(0);

    let shown = thinned(n);
    let rotated = shown.len() > ROTATE_ABOVE;
    let widest_tick = tick_labels
        .iter()
        .map(|s| text_width(s))
        .fold(0.0, f64::max);
    let left = (30.0 + widest_tick + 8.0).max(52.0);
    let right = WIDTH - 16.0;
    let plot_w = right - left;
    let max_label_chars = if rotated {
        14
    } else {
        // Unrotated labels share the width evenly.
        ((plot_w / shown.len() as f64 - 4.0) / CHAR_W)
            .floor()
            .max(3.0) as usize
    };
    let x_texts: Vec<(usize, String)> = shown
        .iter()
        .filter_map(|&j| Some((j, truncate(chart.x_labels.get(j)?, max_label_chars))))
        .collect();
    let longest = x_texts
        .iter()
        .map(|(_, s)| s.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let bottom_margin = if rotated {
        // A -45° label drops by its length × sin 45°.
        18.0 + longest * CHAR_W * std::f64::consts::FRAC_1_SQRT_2
    } else {
        24.0
    };
    let height = BASE_HEIGHT + LEGEND_ROW * legend_rows.saturating_sub(1) as f64;
    let top = if legend_rows > 0 {
        34.0 + LEGEND_ROW * legend_rows as f64 + 8.0
    } else {
        40.0
    };
    let frame = Frame {
        left,
        right,
        top,
        bottom: height - bottom_margin,
        lo: to_f64(axis.first().copied().unwrap_or(Decimal::ZERO)),
        hi: to_f64(axis.last().copied().unwrap_or(Decimal::ONE)),
        n,
    };

    let mut out = String::new();
    open_svg(&mut out, chart, &id, height, &describe(chart, min, max));
    write_legend(&mut out, chart.kind, &chart.series, &legend);

    // Gridlines first so data draws over them.
    w!(
        out,
        "<g class=\"chart-grid\" stroke=\"#e0e0e0\" stroke-width=\"1\">"
    );
    for t in &axis {
        let y = px(frame.y(*t));
        w!(
            out,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>",
            px(left),
            px(right)
        );
    }
    out.push_str("</g>");

    w!(
        out,
        "<g class=\"chart-axis chart-y-axis\" font-size=\"{FONT}\" fill=\"#444444\" text-anchor=\"end\">"
    );
    for (t, label) in axis.iter().zip(&tick_labels) {
        w!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            px(left - 6.0),
            px(frame.y(*t) + FONT * 0.35),
            escape(label)
        );
    }
    out.push_str("</g>");
    if !chart.unit.trim().is_empty() {
        let mid = px((frame.top + frame.bottom) / 2.0);
        w!(
            out,
            "<text class=\"chart-axis chart-unit\" x=\"16\" y=\"{mid}\" transform=\"rotate(-90 16 {mid})\" text-anchor=\"middle\" font-size=\"{FONT}\" fill=\"#444444\">{}</text>",
            escape(&truncate(&chart.unit, 40))
        );
    }

    w!(
        out,
        "<g class=\"chart-axis chart-x-axis\" font-size=\"{FONT}\" fill=\"#444444\" stroke=\"#666666\" stroke-width=\"1\">"
    );
    w!(
        out,
        "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\"/><line x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>",
        l = px(left),
        r = px(right),
        t = px(frame.top),
        b = px(frame.bottom)
    );
    for (j, label) in &x_texts {
        let x = frame.x(*j);
        let y = frame.bottom + 14.0;
        w!(
            out,
            "<line x1=\"{x}\" y1=\"{b}\" x2=\"{x}\" y2=\"{b4}\"/>",
            x = px(x),
            b = px(frame.bottom),
            b4 = px(frame.bottom + 4.0)
        );
        if rotated {
            let (lx, ly) = (px(x + 3.0), px(y));
            w!(
                out,
                "<text x=\"{lx}\" y=\"{ly}\" text-anchor=\"end\" transform=\"rotate(-45 {lx} {ly})\" stroke=\"none\">{}</text>",
                escape(label)
            );
        } else {
            w!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" stroke=\"none\">{}</text>",
                px(x),
                px(y),
                escape(label)
            );
        }
    }
    out.push_str("</g>");

    // Below zero the bars hang from this line, so it must be visible apart from the grid.
    if frame.lo < 0.0 {
        let y = px(frame.y(Decimal::ZERO));
        w!(
            out,
            "<line class=\"chart-zero\" x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#333333\" stroke-width=\"1.5\"/>",
            px(left),
            px(right)
        );
    }

    match chart.kind {
        Kind::Bars => write_bars(&mut out, chart, &frame),
        Kind::Line => write_lines(&mut out, chart, &frame),
    }

    if max.is_none() {
        w!(
            out,
            "<text class=\"chart-empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\" fill=\"#666666\">{NO_DATA}</text>",
            px((left + right) / 2.0),
            px((frame.top + frame.bottom) / 2.0)
        );
    }
    out.push_str("</svg>");
    out
}

/// Nice axis ticks from 0 (or the minimum, if negative) to at least `max`: round steps of 1, 2
/// or 5 × 10^k, about 5 ticks, as exact decimals.
pub fn ticks(min: Decimal, max: Decimal) -> Vec<Decimal> {
    let (min, max) = if min <= max { (min, max) } else { (max, min) };
    let lo = min.min(Decimal::ZERO);
    let mut hi = max.max(Decimal::ZERO);
    if hi == lo {
        // Only zeros: a 0–1 axis still reads as "nothing happened".
        hi = Decimal::ONE;
    }
    nice_ticks(lo, hi).unwrap_or_else(|| vec![lo.normalize(), hi.normalize()])
}

/// `None` only where `Decimal` would overflow or underflow (ranges near its limits).
fn nice_ticks(lo: Decimal, hi: Decimal) -> Option<Vec<Decimal>> {
    let ten = Decimal::TEN;
    let raw = hi.checked_sub(lo)?.checked_div(Decimal::from(5))?;
    if raw <= Decimal::ZERO {
        return None;
    }
    // p = the largest power of ten not above raw.
    let mut p = Decimal::ONE;
    while p > raw {
        if p.scale() >= 28 {
            return None;
        }
        p = p.checked_div(ten)?;
    }
    while let Some(next) = p.checked_mul(ten) {
        if next > raw {
            break;
        }
        p = next;
    }
    // Steps grow by at most 2.5×, and 10p leaves fewer than 5 intervals (plus one where the
    // range straddles zero), so the first step with ≤ 6 intervals gives 3 to 7 ticks.
    for m in [1, 2, 5, 10] {
        let Some(step) = p.checked_mul(Decimal::from(m)) else {
            continue;
        };
        let Some((first, last, count)) = span(lo, hi, step) else {
            continue;
        };
        if count <= 6 {
            let mut out = Vec::with_capacity(count + 1);
            let mut t = first;
            for _ in 0..=count {
                out.push(t.normalize());
                t = t.checked_add(step)?;
            }
            if out.last().is_some_and(|l| *l >= last) {
                return Some(out);
            }
        }
    }
    None
}

/// First and last multiple of `step` around `lo..=hi`, and the number of steps between.
fn span(lo: Decimal, hi: Decimal, step: Decimal) -> Option<(Decimal, Decimal, usize)> {
    let mut first = lo.checked_div(step)?.floor().checked_mul(step)?;
    let mut last = hi.checked_div(step)?.ceil().checked_mul(step)?;
    // Division rounds at 28 digits; never let that cut a value off the axis.
    if first > lo {
        first = first.checked_sub(step)?;
    }
    if last < hi {
        last = last.checked_add(step)?;
    }
    let count = last
        .checked_sub(first)?
        .checked_div(step)?
        .round()
        .to_usize()?;
    Some((first, last, count))
}

/// Plot area and value → pixel mapping.
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    /// First and last tick.
    lo: f64,
    hi: f64,
    /// Number of x positions.
    n: usize,
}

impl Frame {
    fn band(&self) -> f64 {
        (self.right - self.left) / self.n.max(1) as f64
    }

    /// Centre of the x label's band; lines and bar groups share it so they line up.
    fn x(&self, j: usize) -> f64 {
        self.left + self.band() * (j as f64 + 0.5)
    }

    fn y(&self, v: Decimal) -> f64 {
        let span = self.hi - self.lo;
        let span = if span > 0.0 { span } else { 1.0 };
        self.bottom - (to_f64(v) - self.lo) / span * (self.bottom - self.top)
    }
}

fn write_bars(out: &mut String, chart: &Chart, frame: &Frame) {
    let count = chart.series.len() as f64;
    let group = frame.band() * 0.8;
    let bar = group / count;
    // A 1px gap between neighbours only where bars are wide enough to spare it.
    let gap = if bar > 4.0 { 1.0 } else { 0.0 };
    let zero = frame.y(Decimal::ZERO);
    for (i, series) in chart.series.iter().enumerate() {
        w!(
            out,
            "<g class=\"chart-series chart-series-{i}\" fill=\"{}\">",
            colour(i)
        );
        for (j, v) in points(series, frame.n) {
            let y = frame.y(v);
            // A zero still gets a 1px bar, so it reads differently from a gap (no data).
            let h = (zero - y).abs().max(1.0);
            let top = if y < zero { y } else { zero };
            let x = frame.x(j) - group / 2.0 + bar * i as f64;
            w!(
                out,
                "<rect class=\"chart-bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}</title></rect>",
                px(x),
                px(top),
                px((bar - gap).max(0.5)),
                px(h),
                escape(&hover(chart, series, j, v))
            );
        }
        out.push_str("</g>");
    }
}

fn write_lines(out: &mut String, chart: &Chart, frame: &Frame) {
    let markers = frame.n <= MARKER_LIMIT;
    for (i, series) in chart.series.iter().enumerate() {
        let c = colour(i);
        w!(
            out,
            "<g class=\"chart-series chart-series-{i}\" stroke=\"{c}\" fill=\"{c}\">"
        );
        // A gap (None) ends a segment: a line must not bridge missing data.
        let mut segments: Vec<Vec<(usize, Decimal)>> = Vec::new();
        let mut current = Vec::new();
        for j in 0..frame.n {
            match value(series, j) {
                Some(v) => current.push((j, v)),
                None if !current.is_empty() => segments.push(std::mem::take(&mut current)),
                None => {}
            }
        }
        if !current.is_empty() {
            segments.push(current);
        }
        let dash = dash(i)
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        for segment in segments.iter().filter(|s| s.len() > 1) {
            let coords: Vec<String> = segment
                .iter()
                .map(|&(j, v)| format!("{},{}", px(frame.x(j)), px(frame.y(v))))
                .collect();
            w!(
                out,
                "<polyline class=\"chart-line\" fill=\"none\" stroke-width=\"2\" stroke-linejoin=\"round\"{dash} points=\"{}\"/>",
                coords.join(" ")
            );
        }
        for segment in &segments {
            for &(j, v) in segment {
                let (x, y) = (px(frame.x(j)), px(frame.y(v)));
                let title = escape(&hover(chart, series, j, v));
                if markers {
                    w!(
                        out,
                        "<circle class=\"chart-marker\" cx=\"{x}\" cy=\"{y}\" r=\"3\"><title>{title}</title></circle>"
                    );
                } else {
                    // Too dense for markers: an isolated point would vanish without a dot,
                    // and hover still needs a target, so each point gets an invisible one.
                    if segment.len() == 1 {
                        w!(
                            out,
                            "<circle class=\"chart-marker\" cx=\"{x}\" cy=\"{y}\" r=\"2\"/>"
                        );
                    }
                    w!(
                        out,
                        "<circle class=\"chart-hit\" cx=\"{x}\" cy=\"{y}\" r=\"5\" fill=\"#000000\" fill-opacity=\"0\" stroke=\"none\"><title>{title}</title></circle>"
                    );
                }
            }
        }
        out.push_str("</g>");
    }
}

/// One legend entry's place; rows wrap at the chart width.
struct LegendItem {
    row: usize,
    x: f64,
    text: String,
}

fn legend_layout(series: &[Series]) -> Vec<LegendItem> {
    let mut items = Vec::with_capacity(series.len());
    let (mut row, mut x) = (0, 8.0);
    for s in series {
        let text = truncate(&s.name, 32);
        let w = 28.0 + text_width(&text) + 14.0;
        if x > 8.0 && x + w > WIDTH - 8.0 {
            row += 1;
            x = 8.0;
        }
        items.push(LegendItem { row, x, text });
        x += w;
    }
    items
}

fn write_legend(out: &mut String, kind: Kind, series: &[Series], items: &[LegendItem]) {
    if items.is_empty() {
        return;
    }
    w!(
        out,
        "<g class=\"chart-legend\" font-size=\"{FONT}\" fill=\"#333333\">"
    );
    for (i, item) in items.iter().enumerate() {
        let y = 34.0 + LEGEND_ROW * item.row as f64;
        let c = colour(i);
        w!(out, "<g class=\"chart-legend-item chart-series-{i}\">");
        // Keep the full name reachable when the visible text is truncated.
        if let Some(s) = series.get(i).filter(|s| s.name != item.text) {
            w!(out, "<title>{}</title>", escape(&s.name));
        }
        match kind {
            // The line sample shows the dash pattern, the cue that works without colour.
            Kind::Line => {
                let dash = dash(i)
                    .map(|d| format!(" stroke-dasharray=\"{d}\""))
                    .unwrap_or_default();
                w!(
                    out,
                    "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{c}\" stroke-width=\"2.5\"{dash}/>",
                    px(item.x),
                    px(y + 6.0),
                    px(item.x + 22.0),
                    px(y + 6.0)
                );
            }
            Kind::Bars => w!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{c}\"/>",
                px(item.x + 5.0),
                px(y)
            ),
        }
        w!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            px(item.x + 28.0),
            px(y + 10.0),
            escape(&item.text)
        );
        out.push_str("</g>");
    }
    out.push_str("</g>");
}

fn open_svg(out: &mut String, chart: &Chart, id: &str, height: f64, desc: &str) {
    let kind = match chart.kind {
        Kind::Line => "chart-kind-line",
        Kind::Bars => "chart-kind-bars",
    };
    let title = if chart.title.trim().is_empty() {
        "Chart"
    } else {
        chart.title.as_str()
    };
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {kind}\" viewBox=\"0 0 {} {}\" width=\"100%\" preserveAspectRatio=\"xMidYMid meet\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" font-family=\"sans-serif\">",
        px(WIDTH),
        px(height)
    );
    w!(
        out,
        "<title id=\"{id}-title\">{t}</title><desc id=\"{id}-desc\">{}</desc><text class=\"chart-title\" x=\"8\" y=\"20\" font-size=\"14\" font-weight=\"bold\" fill=\"#222222\">{t}</text>",
        escape(desc),
        t = escape(title)
    );
}

fn render_empty(chart: &Chart, id: &str) -> String {
    let mut out = String::new();
    open_svg(&mut out, chart, id, BASE_HEIGHT, &format!("{NO_DATA}."));
    w!(
        out,
        "<text class=\"chart-empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\" fill=\"#666666\">{NO_DATA}</text></svg>",
        px(WIDTH / 2.0),
        px(BASE_HEIGHT / 2.0)
    );
    out
}

/// The `<desc>`: what a screen reader says instead of showing the picture.
fn describe(chart: &Chart, min: Option<Decimal>, max: Option<Decimal>) -> String {
    let kind = match chart.kind {
        Kind::Line => "Line chart",
        Kind::Bars => "Bar chart",
    };
    let n = chart.x_labels.len();
    let first = chart.x_labels.first().map_or("", String::as_str);
    let last = chart.x_labels.last().map_or("", String::as_str);
    let range = if n == 1 {
        format!("for {first}")
    } else {
        format!("across {n} x values from {first} to {last}")
    };
    let values = match (min, max) {
        (Some(min), Some(max)) if min < Decimal::ZERO => format!(
            "maximum {}, minimum {}",
            with_unit(max, &chart.unit),
            with_unit(min, &chart.unit)
        ),
        (_, Some(max)) => format!("maximum {}", with_unit(max, &chart.unit)),
        _ => NO_DATA.to_lowercase(),
    };
    format!("{kind} of {} series {range}; {values}.", chart.series.len())
}

/// Hover text of one point: "{series} — {x label}: {value} {unit}".
fn hover(chart: &Chart, series: &Series, j: usize, v: Decimal) -> String {
    let label = chart.x_labels.get(j).map_or("", String::as_str);
    format!(
        "{} \u{2014} {label}: {}",
        series.name,
        with_unit(v, &chart.unit)
    )
}

fn with_unit(v: Decimal, unit: &str) -> String {
    let unit = unit.trim();
    if unit.is_empty() {
        format_decimal(v)
    } else {
        format!("{} {unit}", format_decimal(v))
    }
}

fn value(series: &Series, j: usize) -> Option<Decimal> {
    series.values.get(j).copied().flatten()
}

/// The series' present values among the first `n`, with their x index.
fn points(series: &Series, n: usize) -> impl Iterator<Item = (usize, Decimal)> + '_ {
    series
        .values
        .iter()
        .take(n)
        .enumerate()
        .filter_map(|(j, v)| v.map(|v| (j, v)))
}

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// `None` (solid) for the first series; every later one gets a different pattern, also past
/// the end of `DASHES` (a suffix numbered by the round keeps them apart).
fn dash(i: usize) -> Option<String> {
    let k = i.checked_sub(1)?;
    let base = DASHES[k % DASHES.len()];
    let round = k / DASHES.len();
    Some(if round == 0 {
        base.to_string()
    } else {
        format!("{base} 1 {}", round + 1)
    })
}

/// Indices of the x labels to draw: at most `MAX_X_LABELS`, evenly spaced, always the first and
/// the last.
fn thinned(n: usize) -> Vec<usize> {
    if n <= MAX_X_LABELS {
        return (0..n).collect();
    }
    let last = n - 1;
    let step = last.div_ceil(MAX_X_LABELS - 1);
    let mut shown: Vec<usize> = (0..last).step_by(step).collect();
    // Too close to the last label and the two would overlap.
    if shown.len() > 1 && shown.last().is_some_and(|&p| last - p < step.div_ceil(2)) {
        shown.pop();
    }
    shown.push(last);
    shown
}

/// Short, stable id for this chart's `<title>`/`<desc>`, so several charts on one page don't
/// clash: FNV-1a over the title, unit, labels and series names.
fn chart_id(chart: &Chart) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |s: &str| {
        for b in s.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&chart.title);
    feed(&chart.unit);
    for label in &chart.x_labels {
        feed(label);
    }
    for series in &chart.series {
        feed(&series.name);
    }
    format!("chart-{:08x}", (h ^ (h >> 32)) as u32)
}

/// Decimal as text with thousands separated by commas (`12,500`, `-1,234.5`); the scale is the
/// value's own, so callers decide how many decimals a figure shows.
fn format_decimal(d: Decimal) -> String {
    // `-0` would read oddly.
    let d = if d.is_zero() { d.abs() } else { d };
    let s = d.to_string();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s.as_str()),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let mut out = String::with_capacity(s.len() + int.len() / 3);
    out.push_str(sign);
    let len = int.len();
    for (k, c) in int.chars().enumerate() {
        if k > 0 && (len - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// XML-escapes text for both content and attribute values. Characters XML 1.0 forbids
/// (most C0 controls) become U+FFFD, or one stray byte would break the whole page's SVG.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('\u{2026}');
    out
}

fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * CHAR_W
}

fn to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// A pixel coordinate with one decimal, `.0` dropped: short and byte-stable.
fn px(v: f64) -> String {
    if !v.is_finite() {
        return "0".to_string();
    }
    let s = format!("{:.1}", v);
    let s = s.strip_suffix(".0").unwrap_or(&s);
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;
    use std::str::FromStr;

    use quick_xml::events::{BytesStart, Event};
    use quick_xml::{Reader, XmlVersion};

    use super::*;

    /// Just enough of a DOM to ask questions about the output.
    #[derive(Debug, Default)]
    struct El {
        name: String,
        attrs: Vec<(String, String)>,
        children: Vec<El>,
        text: String,
    }

    impl El {
        fn attr(&self, key: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }

        fn has_class(&self, class: &str) -> bool {
            self.attr("class")
                .is_some_and(|c| c.split_whitespace().any(|c| c == class))
        }

        /// This element and all below it, in document order.
        fn walk(&self) -> Vec<&El> {
            let mut out = vec![self];
            for c in &self.children {
                out.extend(c.walk());
            }
            out
        }

        fn by_class(&self, class: &str) -> Vec<&El> {
            self.walk()
                .into_iter()
                .filter(|e| e.has_class(class))
                .collect()
        }

        fn by_name(&self, name: &str) -> Vec<&El> {
            self.walk().into_iter().filter(|e| e.name == name).collect()
        }

        fn title(&self) -> Option<&str> {
            self.children
                .iter()
                .find(|c| c.name == "title")
                .map(|c| c.text.as_str())
        }

        fn num(&self, key: &str) -> f64 {
            self.attr(key).unwrap().parse().unwrap()
        }
    }

    fn element(e: &BytesStart) -> El {
        let mut el = El {
            name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
            ..El::default()
        };
        for a in e.attributes() {
            let a = a.unwrap();
            let key = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
            el.attrs.push((
                key,
                a.normalized_value(XmlVersion::Implicit1_0)
                    .unwrap()
                    .into_owned(),
            ));
        }
        el
    }

    /// Parses with quick-xml (which checks that end tags match) and insists on exactly one
    /// root element and only the five predefined entities or character references.
    fn parse(svg: &str) -> El {
        let mut reader = Reader::from_str(svg);
        let mut stack = vec![El::default()];
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) => stack.push(element(&e)),
                Event::Empty(e) => stack.last_mut().unwrap().children.push(element(&e)),
                Event::End(e) => {
                    let el = stack.pop().unwrap();
                    assert_eq!(el.name.as_bytes(), e.name().as_ref());
                    stack.last_mut().unwrap().children.push(el);
                }
                Event::Text(t) => {
                    let text = t.decode().unwrap();
                    assert!(stack.len() > 1, "text outside the root: {text:?}");
                    stack.last_mut().unwrap().text.push_str(&text);
                }
                Event::GeneralRef(r) => {
                    let c = if r.is_char_ref() {
                        r.resolve_char_ref().unwrap().unwrap()
                    } else {
                        match r.decode().unwrap().as_ref() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => panic!("undefined entity &{other};"),
                        }
                    };
                    stack.last_mut().unwrap().text.push(c);
                }
                Event::Eof => break,
                other => panic!("unexpected XML event {other:?}"),
            }
        }
        assert_eq!(stack.len(), 1, "unclosed element");
        let doc = stack.pop().unwrap();
        assert_eq!(doc.children.len(), 1, "exactly one root element");
        doc.children.into_iter().next().unwrap()
    }

    /// Renders, then checks what every chart must satisfy: well-formed, CSP-safe,
    /// accessible, deterministic.
    fn render_checked(chart: &Chart) -> (String, El) {
        let svg = render(chart);
        assert_eq!(svg, render(chart), "deterministic");
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        let root = parse(&svg);
        assert_eq!(root.name, "svg");
        assert_eq!(root.attr("role"), Some("img"));
        assert_eq!(root.attr("width"), Some("100%"));
        assert_eq!(root.attr("preserveAspectRatio"), Some("xMidYMid meet"));
        assert!(root.has_class("chart"));
        let allowed = [
            "svg", "title", "desc", "g", "line", "text", "rect", "circle", "polyline",
        ];
        let mut ids = BTreeSet::new();
        for el in root.walk() {
            assert!(allowed.contains(&el.name.as_str()), "element {}", el.name);
            for (k, v) in &el.attrs {
                assert!(k != "style" && !k.starts_with("on"), "attribute {k}");
                assert!(!v.contains("javascript:"), "{k}={v}");
            }
            if let Some(id) = el.attr("id") {
                assert!(ids.insert(id.to_string()), "duplicate id {id}");
            }
        }
        // aria-labelledby points at this chart's own <title> and <desc>.
        let refs: Vec<&str> = root
            .attr("aria-labelledby")
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(refs.len(), 2);
        for r in &refs {
            assert!(r.starts_with("chart-"), "{r}");
            assert!(ids.contains(*r), "{r} missing");
        }
        let title = root
            .walk()
            .into_iter()
            .find(|e| e.attr("id") == Some(refs[0]));
        assert_eq!(title.unwrap().name, "title");
        let desc = root
            .walk()
            .into_iter()
            .find(|e| e.attr("id") == Some(refs[1]));
        assert_eq!(desc.unwrap().name, "desc");
        assert!(!svg.contains("<style") && !svg.contains("<script"));
        (svg, root)
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn days(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("2026-{:03}", i + 1)).collect()
    }

    fn series(name: &str, values: &[Option<&str>]) -> Series {
        Series {
            name: name.to_string(),
            values: values.iter().map(|v| v.map(d)).collect(),
        }
    }

    fn chart(kind: Kind, x_labels: Vec<String>, series: Vec<Series>) -> Chart {
        Chart {
            title: "Launches per day".to_string(),
            unit: "launches".to_string(),
            x_labels,
            series,
            kind,
        }
    }

    fn texts<'a>(els: &[&'a El]) -> Vec<&'a str> {
        els.iter().map(|e| e.text.as_str()).collect()
    }

    fn y_labels(root: &El) -> Vec<String> {
        let axis = root.by_class("chart-y-axis");
        texts(&axis[0].by_name("text"))
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    fn x_labels(root: &El) -> Vec<&El> {
        root.by_class("chart-x-axis")[0].by_name("text")
    }

    fn assert_nice(min: Decimal, max: Decimal) {
        let t = ticks(min, max);
        let (lo, hi) = (min.min(max), max.max(min));
        assert!((3..=8).contains(&t.len()), "{min}..{max}: {t:?}");
        assert!(t[0] <= lo && t[0] <= Decimal::ZERO, "{min}..{max}: {t:?}");
        let last = *t.last().unwrap();
        assert!(last >= hi && last >= Decimal::ZERO, "{min}..{max}: {t:?}");
        assert!(t.contains(&Decimal::ZERO), "{min}..{max}: {t:?}");
        let step = t[1] - t[0];
        for w in t.windows(2) {
            assert_eq!(w[1] - w[0], step, "{min}..{max}: {t:?}");
        }
        let mut m = step.normalize().mantissa();
        while m % 10 == 0 {
            m /= 10;
        }
        assert!([1, 2, 5].contains(&m), "step {step} for {min}..{max}");
        // Already normalized, so labels carry no needless zeros.
        for x in &t {
            assert_eq!(x.to_string(), x.normalize().to_string());
        }
    }

    #[test]
    fn ticks_are_nice_over_many_ranges() {
        let maxes = [
            "0",
            "0.001",
            "0.3",
            "1",
            "1.5",
            "7",
            "9.99",
            "10",
            "11",
            "99",
            "100",
            "101",
            "12500",
            "999999",
            "1000000000000",
            "123456789.123",
            "7000000000000000000000000000",
        ];
        let mins = ["0", "-0.5", "-3", "-37", "-12500", "-1000000000000"];
        for max in maxes {
            for min in mins {
                assert_nice(d(min), d(max));
                // Argument order and positive minimums don't matter.
                assert_nice(d(max), d(min));
            }
            assert_nice(d(max) / Decimal::TWO, d(max));
        }
        assert_nice(
            d("-7000000000000000000000000000"),
            d("7000000000000000000000000000"),
        );
        assert_nice(d("-5"), d("-1"));
        assert_nice(
            d("0.0000000000000000000000001"),
            d("0.0000000000000000000000003"),
        );
    }

    #[test]
    fn ticks_examples() {
        let t =
            |a, b| -> Vec<String> { ticks(d(a), d(b)).iter().map(ToString::to_string).collect() };
        assert_eq!(t("0", "0"), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(t("0", "1"), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(
            t("0", "0.3"),
            ["0", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3"]
        );
        assert_eq!(t("0", "12500"), ["0", "5000", "10000", "15000"]);
        assert_eq!(t("-37", "120"), ["-50", "0", "50", "100", "150"]);
        assert_eq!(t("-5", "-1"), ["-5", "-4", "-3", "-2", "-1", "0"]);
        // 0.1 + 0.2 is exactly 0.3 in Decimal: no float artefacts.
        assert_eq!(
            ticks(d("0.1") + d("0.2"), d("0.1")),
            ticks(d("0"), d("0.3"))
        );
    }

    #[test]
    fn ticks_at_decimal_limits_do_not_panic() {
        for (a, b) in [
            (Decimal::MAX, Decimal::MAX),
            (Decimal::MIN, Decimal::MAX),
            (Decimal::MIN, Decimal::MIN),
            (Decimal::ZERO, Decimal::new(1, 28)),
        ] {
            let t = ticks(a, b);
            assert!(t.len() >= 2, "{a}..{b}: {t:?}");
            assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
            assert!(t[0] <= a.min(b) && *t.last().unwrap() >= a.max(b).max(Decimal::ZERO));
        }
        // And such values still make a chart.
        let c = chart(
            Kind::Bars,
            days(2),
            vec![Series {
                name: "x".into(),
                values: vec![Some(Decimal::MAX), Some(Decimal::MIN)],
            }],
        );
        render_checked(&c);
    }

    #[test]
    fn numbers_are_grouped_and_exact() {
        assert_eq!(format_decimal(d("12500")), "12,500");
        assert_eq!(format_decimal(d("999")), "999");
        assert_eq!(format_decimal(d("1000")), "1,000");
        assert_eq!(format_decimal(d("-1234567.50")), "-1,234,567.50");
        assert_eq!(format_decimal(d("0.05")), "0.05");
        assert_eq!(format_decimal(d("-0.00")), "0.00");
        assert_eq!(format_decimal(d("1000000000000")), "1,000,000,000,000");
        assert_eq!(format_decimal(d("0.1") + d("0.2")), "0.3");
    }

    #[test]
    fn palette_is_okabe_ito_in_order_and_cycles() {
        assert_eq!(
            PALETTE,
            [
                "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
                "#000000"
            ]
        );
        for i in 0..24 {
            assert_eq!(colour(i), PALETTE[i % 8]);
        }
    }

    #[test]
    fn dashes_are_distinct_for_every_series() {
        assert_eq!(dash(0), None);
        let all: Vec<String> = (1..200).map(|i| dash(i).unwrap()).collect();
        let unique: BTreeSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        for p in &all {
            assert!(p.split(' ').all(|n| n.parse::<u32>().is_ok_and(|n| n > 0)));
        }
    }

    #[test]
    fn thinning_keeps_first_and_last_and_at_most_twelve() {
        assert!(thinned(0).is_empty());
        for n in 1..=400 {
            let shown = thinned(n);
            assert_eq!(shown[0], 0, "n={n}");
            assert_eq!(*shown.last().unwrap(), n - 1, "n={n}");
            assert!(shown.len() <= MAX_X_LABELS, "n={n}: {}", shown.len());
            assert!(shown.len() >= n.min(7), "n={n}: {}", shown.len());
            assert!(shown.windows(2).all(|w| w[0] < w[1]), "n={n}");
        }
        assert_eq!(thinned(5), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn escape_covers_markup_and_control_characters() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{1}b"), "a\u{fffd}b");
    }

    #[test]
    fn user_text_is_escaped_everywhere() {
        let mut c = chart(
            Kind::Line,
            vec!["<b>day</b>".into(), "it's \"x\"".into()],
            vec![
                series("<script>alert(1)</script>", &[Some("1"), Some("2")]),
                series("a & b", &[Some("3"), None]),
            ],
        );
        c.title = "Costs <img src=x onerror=alert(1)> & more".into();
        c.unit = "US$ <i>".into();
        let (svg, root) = render_checked(&c);
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!svg.contains("<script") && !svg.contains("<img") && !svg.contains("<b>"));
        assert!(svg.contains("a &amp; b"));
        // Parsed back, the text is what the user typed.
        let legend = texts(&root.by_class("chart-legend")[0].by_name("text"));
        assert_eq!(legend, ["<script>alert(1)</script>", "a & b"]);
        assert_eq!(
            root.title(),
            Some("Costs <img src=x onerror=alert(1)> & more")
        );
        let hovers: Vec<&str> = root
            .by_class("chart-marker")
            .iter()
            .filter_map(|m| m.title())
            .collect();
        assert_eq!(
            hovers[0],
            "<script>alert(1)</script> \u{2014} <b>day</b>: 1 US$ <i>"
        );
        assert_eq!(hovers[2], "a & b \u{2014} <b>day</b>: 3 US$ <i>");
        assert_eq!(texts(&x_labels(&root)), ["<b>day</b>", "it's \"x\""]);
    }

    #[test]
    fn accessible_title_and_desc() {
        let c = chart(
            Kind::Line,
            days(31),
            vec![
                series("2026-10", &[Some("12500.50"); 31]),
                series("2026-09", &[Some("3"); 31]),
            ],
        );
        let (_, root) = render_checked(&c);
        assert_eq!(root.title(), Some("Launches per day"));
        let desc = &root.by_name("desc")[0].text;
        assert_eq!(
            desc,
            "Line chart of 2 series across 31 x values from 2026-001 to 2026-031; maximum \
             12,500.50 launches."
        );
        // Visible title too.
        assert_eq!(texts(&root.by_class("chart-title")), ["Launches per day"]);
        assert_eq!(texts(&root.by_class("chart-unit")), ["launches"]);
    }

    #[test]
    fn ids_differ_between_charts_and_are_short() {
        let a = chart(Kind::Line, days(3), vec![series("a", &[Some("1"); 3])]);
        let mut b = a.clone();
        b.title = "Cost per day".into();
        let mut c = a.clone();
        c.x_labels = days(4)[1..].to_vec();
        let ids: BTreeSet<String> = [&a, &b, &c].iter().map(|c| chart_id(c)).collect();
        assert_eq!(ids.len(), 3);
        for id in &ids {
            assert_eq!(id.len(), "chart-".len() + 8);
            assert!(id["chart-".len()..].chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(chart_id(&a), chart_id(&a.clone()));
    }

    #[test]
    fn no_series_or_no_labels_says_no_data() {
        let cases = [
            chart(Kind::Line, days(5), vec![]),
            chart(Kind::Bars, vec![], vec![series("a", &[Some("1")])]),
            chart(Kind::Line, vec![], vec![]),
        ];
        for c in &cases {
            let (_, root) = render_checked(c);
            assert_eq!(texts(&root.by_class("chart-empty")), [NO_DATA]);
            assert!(root.by_class("chart-series").is_empty());
            assert_eq!(root.by_name("desc")[0].text, "No data for this range.");
        }
    }

    #[test]
    fn all_zero_values_draw_on_a_zero_to_one_axis() {
        for kind in [Kind::Line, Kind::Bars] {
            let c = chart(
                kind,
                days(4),
                vec![
                    series("a", &[Some("0"); 4]),
                    series("b", &[Some("0.00"); 4]),
                ],
            );
            let (_, root) = render_checked(&c);
            assert!(root.by_class("chart-empty").is_empty());
            assert_eq!(y_labels(&root), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
            let marks = match kind {
                Kind::Line => root.by_class("chart-marker"),
                Kind::Bars => root.by_class("chart-bar"),
            };
            assert_eq!(marks.len(), 8);
            assert_eq!(marks[4].title(), Some("b \u{2014} 2026-001: 0.00 launches"));
            if kind == Kind::Bars {
                // Visible, unlike a gap.
                assert!(marks.iter().all(|m| m.num("height") >= 1.0));
            }
        }
    }

    #[test]
    fn all_none_values_keep_the_axes_and_say_no_data() {
        for kind in [Kind::Line, Kind::Bars] {
            let c = chart(kind, days(3), vec![series("a", &[None, None, None])]);
            let (_, root) = render_checked(&c);
            assert_eq!(texts(&root.by_class("chart-empty")), [NO_DATA]);
            assert_eq!(
                texts(&x_labels(&root)),
                ["2026-001", "2026-002", "2026-003"]
            );
            assert!(root.by_class("chart-marker").is_empty());
            assert!(root.by_class("chart-bar").is_empty());
            assert!(root.by_class("chart-line").is_empty());
        }
    }

    #[test]
    fn a_single_point() {
        let c = chart(Kind::Line, days(1), vec![series("a", &[Some("5")])]);
        let (_, root) = render_checked(&c);
        assert!(
            root.by_class("chart-line").is_empty(),
            "no one-point polyline"
        );
        let markers = root.by_class("chart-marker");
        assert_eq!(markers.len(), 1);
        assert_eq!(markers[0].title(), Some("a \u{2014} 2026-001: 5 launches"));
        // Centred in the plot.
        let axis = &root.by_class("chart-x-axis")[0].by_name("line")[1];
        let mid = (axis.num("x1") + axis.num("x2")) / 2.0;
        assert!((markers[0].num("cx") - mid).abs() < 0.1);
        assert!(root.by_name("desc")[0].text.contains("for 2026-001"));

        let c = Chart {
            kind: Kind::Bars,
            ..c
        };
        let (_, root) = render_checked(&c);
        assert_eq!(root.by_class("chart-bar").len(), 1);
        assert!(
            root.by_class("chart-legend").is_empty(),
            "no legend for one series"
        );
    }

    #[test]
    fn negative_values_hang_from_a_drawn_zero_line() {
        let c = Chart {
            unit: "USD".into(),
            ..chart(
                Kind::Bars,
                days(3),
                vec![series(
                    "adjustments",
                    &[Some("120"), Some("-37"), Some("0")],
                )],
            )
        };
        let (_, root) = render_checked(&c);
        assert_eq!(y_labels(&root), ["-50", "0", "50", "100", "150"]);
        let zero = root.by_class("chart-zero");
        assert_eq!(zero.len(), 1);
        let zy = zero[0].num("y1");
        let bars = root.by_class("chart-bar");
        // Positive bar ends at zero, negative starts there.
        assert!((bars[0].num("y") + bars[0].num("height") - zy).abs() < 0.11);
        assert!((bars[1].num("y") - zy).abs() < 0.11);
        assert_eq!(
            bars[1].title(),
            Some("adjustments \u{2014} 2026-002: -37 USD")
        );
        assert!(
            root.by_name("desc")[0]
                .text
                .ends_with("maximum 120 USD, minimum -37 USD.")
        );
        // No zero line when nothing is negative: the x axis is zero.
        let c = chart(
            Kind::Line,
            days(2),
            vec![series("a", &[Some("1"), Some("2")])],
        );
        assert!(render_checked(&c).1.by_class("chart-zero").is_empty());
    }

    #[test]
    fn very_large_values() {
        let c = Chart {
            unit: "USD".into(),
            ..chart(
                Kind::Line,
                days(2),
                vec![series(
                    "big",
                    &[Some("1000000000000"), Some("250000000000.75")],
                )],
            )
        };
        let (_, root) = render_checked(&c);
        let labels = y_labels(&root);
        assert_eq!(labels.last().unwrap(), "1,000,000,000,000");
        assert!(labels.iter().all(|l| !l.contains('e')));
        let markers = root.by_class("chart-marker");
        assert_eq!(
            markers[1].title(),
            Some("big \u{2014} 2026-002: 250,000,000,000.75 USD")
        );
        // The y-axis labels have room: the plot starts right of their estimated width.
        let plot_left = root.by_class("chart-x-axis")[0].by_name("line")[0].num("x1");
        assert!(plot_left > text_width("1,000,000,000,000") + 20.0);
    }

    #[test]
    fn ninety_labels_are_thinned_and_rotated() {
        let values: Vec<Option<&str>> = (0..90).map(|_| Some("4")).collect();
        let c = chart(Kind::Bars, days(90), vec![series("a", &values)]);
        let (_, root) = render_checked(&c);
        let labels = x_labels(&root);
        assert!(labels.len() <= 12 && labels.len() > 6, "{}", labels.len());
        assert_eq!(labels[0].text, "2026-001");
        assert_eq!(labels.last().unwrap().text, "2026-090");
        assert!(labels.iter().all(|l| {
            l.attr("transform")
                .is_some_and(|t| t.starts_with("rotate(-45 "))
                && l.attr("text-anchor") == Some("end")
        }));
        assert_eq!(root.by_class("chart-bar").len(), 90);
        // Up to six labels stay level.
        let c = chart(Kind::Bars, days(6), vec![series("a", &values[..6])]);
        let (_, root) = render_checked(&c);
        assert!(
            x_labels(&root)
                .iter()
                .all(|l| l.attr("transform").is_none())
        );
    }

    #[test]
    fn a_leap_year_of_points_keeps_hover_without_markers() {
        let values: Vec<Option<String>> = (0..366)
            .map(|i| (i != 100).then(|| format!("{}.5", i % 17)))
            .collect();
        // One isolated point (between two gaps) too.
        let mut values: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
        values[102] = None;
        let c = chart(Kind::Line, days(366), vec![series("a", &values)]);
        let (svg, root) = render_checked(&c);
        let labels = x_labels(&root);
        assert!(labels.len() <= 12, "{}", labels.len());
        assert_eq!(labels[0].text, "2026-001");
        assert_eq!(labels.last().unwrap().text, "2026-366");
        let hits = root.by_class("chart-hit");
        assert_eq!(hits.len(), 364);
        assert!(hits.iter().all(|h| h.title().is_some()));
        assert_eq!(hits[0].title(), Some("a \u{2014} 2026-001: 0.5 launches"));
        assert!(hits.iter().all(|h| h.attr("fill-opacity") == Some("0")));
        // Only the isolated point gets a visible dot, without its own title.
        let dots = root.by_class("chart-marker");
        assert_eq!(dots.len(), 1);
        assert!(dots[0].title().is_none());
        assert_eq!(root.by_class("chart-line").len(), 2);
        assert!(svg.len() < 200_000, "{} bytes", svg.len());
    }

    #[test]
    fn gaps_break_lines() {
        let c = chart(
            Kind::Line,
            days(7),
            vec![series(
                "a",
                &[
                    Some("1"),
                    Some("2"),
                    None,
                    Some("3"),
                    Some("4"),
                    None,
                    Some("5"),
                ],
            )],
        );
        let (_, root) = render_checked(&c);
        let lines = root.by_class("chart-line");
        assert_eq!(lines.len(), 2);
        assert!(
            lines
                .iter()
                .all(|l| l.attr("points").unwrap().split(' ').count() == 2)
        );
        assert_eq!(root.by_class("chart-marker").len(), 5);
    }

    #[test]
    fn ragged_values_are_padded_and_cut_to_the_labels() {
        let c = chart(
            Kind::Bars,
            days(3),
            vec![
                series("short", &[Some("1")]),
                series("long", &[Some("1"), Some("2"), Some("3"), Some("1000")]),
            ],
        );
        let (_, root) = render_checked(&c);
        assert_eq!(root.by_class("chart-bar").len(), 4);
        assert_eq!(y_labels(&root).last().unwrap(), "3");
    }

    #[test]
    fn bars_are_grouped_side_by_side() {
        let c = chart(
            Kind::Bars,
            days(2),
            vec![
                series("a", &[Some("1"), Some("2")]),
                series("b", &[Some("3"), Some("4")]),
                series("c", &[Some("5"), Some("6")]),
            ],
        );
        let (_, root) = render_checked(&c);
        let groups = root.by_class("chart-series");
        assert_eq!(groups.len(), 3);
        let bars: Vec<Vec<&El>> = groups.iter().map(|g| g.by_class("chart-bar")).collect();
        for pair in bars.windows(2) {
            for (l, r) in pair[0].iter().zip(&pair[1]) {
                assert!(l.num("x") + l.num("width") <= r.num("x"), "no overlap");
            }
        }
        // The second group starts right of the first.
        assert!(bars[2][0].num("x") + bars[2][0].num("width") < bars[0][1].num("x"));
        for (i, g) in groups.iter().enumerate() {
            assert_eq!(g.attr("fill"), Some(PALETTE[i]));
        }
    }

    #[test]
    fn many_series_cycle_the_palette_with_distinct_dashes() {
        let all: Vec<Series> = (0..20)
            .map(|i| Series {
                name: format!("epic-sandbox-{i}"),
                values: vec![Some(Decimal::from(i)), Some(Decimal::from(i + 1)), None],
            })
            .collect();
        let c = chart(Kind::Line, days(3), all);
        let (_, root) = render_checked(&c);
        let groups = root.by_class("chart-series");
        assert_eq!(groups.len(), 20);
        let mut styles = BTreeSet::new();
        for (i, g) in groups.iter().enumerate() {
            assert!(g.has_class(&format!("chart-series-{i}")));
            assert_eq!(g.attr("stroke"), Some(PALETTE[i % 8]));
            let line = g.by_class("chart-line")[0];
            assert_eq!(line.attr("stroke-dasharray").is_none(), i == 0);
            assert!(styles.insert(line.attr("stroke-dasharray").map(str::to_string)));
        }
        // Legend: one entry per series, same colour and dash, wrapped into several rows.
        let items = root.by_class("chart-legend-item");
        assert_eq!(items.len(), 20);
        for (i, item) in items.iter().enumerate() {
            let sample = item.by_name("line")[0];
            assert_eq!(sample.attr("stroke"), Some(PALETTE[i % 8]));
            assert_eq!(sample.attr("stroke-dasharray").map(str::to_string), dash(i));
            assert_eq!(item.by_name("text")[0].text, format!("epic-sandbox-{i}"));
        }
        let rows: BTreeSet<String> = items
            .iter()
            .map(|i| i.by_name("text")[0].attr("y").unwrap().to_string())
            .collect();
        assert!(rows.len() > 1);
        let view: Vec<f64> = root
            .attr("viewBox")
            .unwrap()
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(view[3] > BASE_HEIGHT, "taller to fit the legend");
        // Legend sits above the plot.
        let plot_top = root.by_class("chart-x-axis")[0].by_name("line")[0].num("y1");
        let last_row: f64 = rows
            .iter()
            .map(|y| y.parse::<f64>().unwrap())
            .fold(0.0, f64::max);
        assert!(last_row < plot_top);

        let c = Chart {
            kind: Kind::Bars,
            ..c
        };
        let (_, root) = render_checked(&c);
        for (i, item) in root.by_class("chart-legend-item").iter().enumerate() {
            assert_eq!(item.by_name("rect")[0].attr("fill"), Some(PALETTE[i % 8]));
        }
    }

    #[test]
    fn long_names_are_truncated_with_the_full_text_on_hover() {
        let name = "a-very-long-series-name-that-goes-on-and-on-and-on";
        let c = chart(
            Kind::Line,
            vec!["a label far too long to fit under a narrow column".into(); 2],
            vec![series(name, &[Some("1"); 2]), series("b", &[Some("2"); 2])],
        );
        let (_, root) = render_checked(&c);
        let item = root.by_class("chart-legend-item")[0];
        assert_eq!(item.title(), Some(name));
        assert!(item.by_name("text")[0].text.ends_with('\u{2026}'));
        assert!(root.by_class("chart-legend-item")[1].title().is_none());
    }

    #[test]
    fn no_float_artefacts_in_text() {
        let c = chart(
            Kind::Line,
            days(3),
            vec![Series {
                name: "a".into(),
                values: vec![Some(d("0.1") + d("0.2")), Some(d("0.1")), Some(d("0.7"))],
            }],
        );
        let (_, root) = render_checked(&c);
        for el in root.walk() {
            assert!(!el.text.contains("0000"), "{:?}", el.text);
        }
        assert_eq!(
            root.by_class("chart-marker")[0].title(),
            Some("a \u{2014} 2026-001: 0.3 launches")
        );
        // Coordinates have at most one decimal.
        for el in root.walk() {
            for key in ["x", "y", "cx", "cy", "x1", "y1", "width", "height"] {
                if let Some(v) = el.attr(key) {
                    assert!(
                        v.split('.').nth(1).is_none_or(|f| f.len() == 1),
                        "{key}={v}"
                    );
                }
            }
        }
    }

    #[test]
    fn empty_unit_leaves_no_trailing_space() {
        let c = Chart {
            unit: String::new(),
            ..chart(Kind::Bars, days(1), vec![series("a", &[Some("2")])])
        };
        let (_, root) = render_checked(&c);
        assert_eq!(
            root.by_class("chart-bar")[0].title(),
            Some("a \u{2014} 2026-001: 2")
        );
        assert!(root.by_class("chart-unit").is_empty());
    }

    #[test]
    fn pixel_formatting_is_stable() {
        assert_eq!(px(12.0), "12");
        assert_eq!(px(12.345), "12.3");
        assert_eq!(px(-0.04), "0");
        assert_eq!(px(f64::NAN), "0");
    }

    #[test]
    fn golden_small_chart() {
        let c = chart(Kind::Bars, days(1), vec![series("a", &[Some("2")])]);
        let svg = render(&c);
        let id = chart_id(&c);
        assert!(svg.starts_with(&format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart chart-kind-bars\" viewBox=\"0 0 \
             800 320\" width=\"100%\" preserveAspectRatio=\"xMidYMid meet\" role=\"img\" \
             aria-labelledby=\"{id}-title {id}-desc\" font-family=\"sans-serif\"><title \
             id=\"{id}-title\">Launches per day</title><desc id=\"{id}-desc\">Bar chart of 1 \
             series for 2026-001; maximum 2 launches.</desc>"
        )));
    }
}
