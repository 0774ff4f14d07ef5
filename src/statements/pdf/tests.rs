//! The statement PDF read back by poppler (pdftotext, pdfinfo, pdfimages, pdftoppm), which
//! must be installed: these checks are not skipped without it.

use super::super::model::Document;
use super::layout::{BOTTOM, TOP};
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
    let en = Formats::english();
    assert_eq!(quantity(&en, d("120000")), "120,000");
    assert_eq!(quantity(&en, d("1.1234567")), "1.123456\u{2026}");
    assert_eq!(quantity(&en, d("1.1200000")), "1.12");
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
        form: 1,
        parties: None,
        settlement: None,
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

fn address() -> Vec<String> {
    vec![
        "100 Market Street, Suite 400".into(),
        "Chicago, IL 60606".into(),
    ]
}

fn pdf_in(s: &Statement, locale: &str, logo: Option<&Logo>) -> Vec<u8> {
    render(
        s,
        &Letterhead {
            company_address: &address(),
            logo,
            locale,
        },
    )
}

fn pdf(s: &Statement) -> Vec<u8> {
    pdf_in(s, "en", None)
}

fn layout_en(s: &Statement, letterhead: &Letterhead<'_>) -> Vec<Vec<Item>> {
    layout(s, letterhead, &Formats::english())
}

fn no_letterhead() -> Letterhead<'static> {
    Letterhead {
        company_address: &[],
        logo: None,
        locale: "en",
    }
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

fn info_of(pdf: &[u8]) -> String {
    let (out, err) = poppler("pdfinfo", &["-isodates"], &[], pdf);
    assert!(err.trim().is_empty(), "pdfinfo complained: {err}");
    out
}

/// Every character the fonts' ToUnicode maps (`bfchar` entries) give a glyph, read from
/// the deflated streams: what a viewer copies, whatever pdftotext makes of it.
fn to_unicode(pdf: &[u8]) -> Vec<char> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = find(&pdf[at..], b"stream\n") {
        let start = at + p + 7;
        let Some(len) = find(&pdf[start..], b"endstream") else {
            break;
        };
        // Past "endstream", whose tail would match "stream" again.
        at = start + len + 9;
        let mut cmap = String::new();
        let inflated = flate2::read::ZlibDecoder::new(&pdf[start..start + len])
            .read_to_string(&mut cmap)
            .is_ok();
        if !inflated || !cmap.contains("beginbfchar") {
            continue;
        }
        for line in cmap.lines() {
            // <0003> <0020>: glyph 3 is U+0020 (one UTF-16 unit; CJK and the rest alike).
            let Some((_, to)) = line.split_once("> <") else {
                continue;
            };
            let units: Vec<u16> = to
                .trim_end_matches('>')
                .as_bytes()
                .chunks(4)
                .filter_map(|h| u16::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
                .collect();
            out.extend(char::decode_utf16(units).filter_map(Result::ok));
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One field of pdfinfo's output.
fn info_field<'a>(info: &'a str, key: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {info}"))
        .trim()
}

fn page_count(pdf: &[u8]) -> usize {
    info_of(pdf)
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .expect("pdfinfo prints Pages:")
        .trim()
        .parse()
        .unwrap()
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The file's frame: header, the cross-reference table where startxref says, and every
/// object where the table says; then poppler reads it without a complaint.
fn check_structure(pdf: &[u8]) {
    assert!(pdf.starts_with(b"%PDF-1.7"));
    assert!(pdf.trim_ascii_end().ends_with(b"%%EOF"));
    let sx = rfind(pdf, b"startxref").unwrap();
    let rest = std::str::from_utf8(&pdf[sx + 9..]).unwrap();
    let xref: usize = rest.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        pdf[xref..].starts_with(b"xref"),
        "startxref must point at xref"
    );
    let table = std::str::from_utf8(&pdf[xref..sx]).unwrap();
    let mut lines = table.lines().skip(1);
    let count: usize = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    for (n, entry) in lines.take(count).enumerate().skip(1) {
        if entry.ends_with('n') || entry.ends_with("n ") {
            let offset: usize = entry[..10].parse().unwrap();
            let want = format!("{n} 0 obj");
            assert!(
                pdf[offset..].starts_with(want.as_bytes()),
                "xref entry {n} points at {offset}, not at `{want}`"
            );
        }
    }
    let _ = page_count(pdf);
}

/// A `w` x `h` PNG, made here (png is in krilla's tree): a blue field with a white band.
fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    let mut data = Vec::new();
    for y in 0..h {
        for _ in 0..w {
            if y > h / 3 && y < h / 2 {
                data.extend([255, 255, 255]);
            } else {
                data.extend([20, 60, 160]);
            }
        }
    }
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

fn logo(w: u32, h: u32) -> Logo {
    Logo::from_file_bytes(png(w, h), Path::new("/etc/gateway/logo.png")).unwrap()
}

#[test]
fn the_file_is_well_formed() {
    check_structure(&pdf(&finalized(document(sample_lines()))));
    check_structure(&pdf(&draft(document(Vec::new()))));
}

#[test]
fn the_same_statement_gives_the_same_bytes() {
    let s = finalized(document(sample_lines()));
    let first = pdf(&s);
    assert_eq!(first, pdf(&s));
    // Two renders at once, each on its own thread.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| pdf(&s));
        let b = scope.spawn(|| pdf(&s));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, first);
    assert_eq!(b, first);
    let info = info_of(&first);
    for (key, want) in [
        ("CreationDate", "2026-11-04T15:30:00Z"),
        ("ModDate", "2026-11-04T15:30:00Z"),
        ("Producer", "partner-gateway"),
        ("Creator", "partner-gateway"),
        ("Author", "Northwind Platform Inc."),
        (
            "Title",
            "Revenue share statement ACME-00012 — Acme Resellers GmbH",
        ),
        (
            "Subject",
            "Revenue share for Acme Resellers GmbH, agreement acme-rev-share version 3, period 2026-10",
        ),
    ] {
        assert_eq!(info_field(&info, key), want, "{info}");
    }
    let d = draft(document(sample_lines()));
    let info = info_of(&pdf(&d));
    assert_eq!(info_field(&info, "CreationDate"), "2026-11-03T06:00:00Z");
}

/// Set in the child process of the test below: where to write the PDF.
const CHILD_OUT: &str = "PG_STATEMENT_PDF_OUT";

#[test]
fn the_same_statement_gives_the_same_bytes_in_another_process() {
    let mut s = finalized(document(sample_lines()));
    s.document.partner_name = "東京大学病院 · Łódź".into();
    let bytes = pdf_in(&s, "fr", Some(&logo(40, 20)));
    if let Ok(path) = std::env::var(CHILD_OUT) {
        std::fs::write(path, &bytes).unwrap();
        return;
    }
    let out = std::env::temp_dir().join(format!("pg-statement-child-{}.pdf", std::process::id()));
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "statements::pdf::tests::the_same_statement_gives_the_same_bytes_in_another_process",
            "--test-threads=1",
        ])
        .env(CHILD_OUT, &out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let theirs = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(theirs.len(), bytes.len());
    assert!(theirs == bytes, "another process wrote other bytes");
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
        "2026-10 (America/Chicago): October 1, 2026 – October 31, 2026, local dates",
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
        "120,000",
        "1,500.00",
        "ref evt_7Q2",
        "added by controller@example.com",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    let en = Formats::english();
    for l in &s.document.lines {
        let fragment: String = l.description.chars().take(24).collect();
        assert!(t.contains(&fragment), "missing {fragment:?} in:\n{t}");
        let amount = en.amount(l.amount, 2);
        assert!(t.contains(&amount), "missing {amount} in:\n{t}");
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
    assert!(t.contains(&Formats::english().amount(s.document.total, 2)));
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
    // Every character as written now; the check mark is in neither font and becomes
    // U+FFFD (it was '?' with WinAnsi).
    assert!(t.contains("Café visits — €5 each \u{FFFD}"), "{t}");
    let info = info_of(&bytes);
    assert!(info.contains("Universitätsklinikum Zürich – Süd"), "{info}");
}

#[test]
fn names_in_other_scripts_read_back_exactly() {
    for name in [
        "東京大学病院",
        "Łódź Uniwersytet Medyczny",
        "Πανεπιστήμιο Αθηνών",
        "Московский университет",
        "서울대학교병원",
    ] {
        let mut d = document(sample_lines());
        d.partner_name = name.into();
        d.lines[2].description = name.into();
        let bytes = pdf(&finalized(d));
        check_structure(&bytes);
        let t = text(&bytes);
        // As the partner, as a line's description (the Referral line), in the footer.
        let partner = t.lines().find(|l| l.starts_with("Partner ")).unwrap();
        assert_eq!(partner.trim_start_matches("Partner").trim(), name, "{t}");
        let referral = t.lines().find(|l| l.starts_with("Referral ")).unwrap();
        assert!(referral.contains(&format!(" {name} ")), "{name}:\n{t}");
        assert!(
            t.contains(&format!("ACME-00012 · {name} · 2026-10")),
            "{name}:\n{t}"
        );
        assert!(info_of(&bytes).contains(name));
    }
}

#[test]
fn amounts_read_back_in_the_locale_with_its_spaces() {
    let mut lines = sample_lines();
    lines.push(line(LineKind::Bonus, "Volume bonus", "12345.5", "12345.50"));
    let s = finalized(document(lines));
    // The PDF's text is the locale's, with U+202F (French) and U+00A0 (Polish) between the
    // groups; pdftotext (poppler 22.12) writes every Unicode space as an ASCII space, so
    // the spaces are checked in the ToUnicode maps and the rest in its output.
    let fr_pdf = pdf_in(&s, "fr", None);
    let pl_pdf = pdf_in(&s, "pl", None);
    assert!(to_unicode(&fr_pdf).contains(&'\u{202f}'));
    assert!(!to_unicode(&fr_pdf).contains(&'\u{a0}'));
    assert!(to_unicode(&pl_pdf).contains(&'\u{a0}'));
    assert!(!to_unicode(&pl_pdf).contains(&'\u{202f}'));
    let fr = text(&fr_pdf);
    for want in [
        "12 345,50",
        "1 500,00",
        "-35,50",
        "120 000",
        "0,0125",
        "1 octobre 2026 – 31 octobre 2026",
        "Page 1 of 1",
    ] {
        assert!(fr.contains(want), "fr: missing {want:?} in:\n{fr}");
    }
    let pl = text(&pl_pdf);
    // Polish groups from five digits on.
    for want in [
        "12 345,50",
        "1500,00",
        "-35,50",
        "120 000",
        "1 października 2026",
    ] {
        assert!(pl.contains(want), "pl: missing {want:?} in:\n{pl}");
    }
    let de = text(&pdf_in(&s, "de", None));
    assert!(
        de.contains("12.345,50") && de.contains("1. Oktober 2026"),
        "{de}"
    );
    // A tag that isn't one: English, not a failure.
    let bad = text(&pdf_in(&s, "no such locale!", None));
    assert!(bad.contains("12,345.50"), "{bad}");
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
                    x, y, size, line, ..
                } => {
                    let right = x + line.width(*size);
                    assert!(*x >= LEFT - 0.01, "page {p}: starts left of the margin");
                    assert!(
                        right <= RIGHT + 0.01,
                        "page {p}: {:?} ends at {right}",
                        line.text
                    );
                    assert!(*y >= TOP && *y <= BOTTOM, "page {p}: y {y}");
                }
                Item::Rule { x1, x2, y, .. } => {
                    assert!(*x1 >= LEFT - 0.01 && *x2 <= RIGHT + 0.01);
                    assert!(*y >= TOP - 0.01 && *y <= BOTTOM + 0.01, "rule at {y}");
                }
                Item::Image {
                    x,
                    y,
                    width,
                    height,
                    ..
                } => {
                    assert!(*x >= LEFT - 0.01 && x + width <= RIGHT + 0.01);
                    assert!(*y >= TOP - 0.01 && y + height <= BOTTOM + 0.01);
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
        "tabs\tand\r\nnew\nlines\u{0}control \u{1F600} \u{202E}rtl",
        "1",
        "1.00",
    ));
    lines.push(line(LineKind::Share, &"東".repeat(5_000), "1", "1.00"));
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
    let wide = logo(4000, 10);
    let head = Letterhead {
        company_address: &address,
        logo: Some(&wide),
        locale: "en",
    };
    let pages = layout_en(&s, &head);
    check_inside(&pages);
    assert!(pages.len() > 3);
    for (i, _) in pages.iter().enumerate() {
        for item in footer(&s, &Formats::english(), i + 1, pages.len()) {
            if let Item::Text { x, size, line, .. } = item {
                assert!(x + line.width(size) <= RIGHT + 0.01);
                assert!(x >= LEFT - 0.01);
            }
        }
    }
    let bytes = render(&s, &head);
    check_structure(&bytes);
    assert_eq!(page_count(&bytes), pages.len());
    let t = text(&bytes);
    // Too wide for the amount column even alone: it wraps, a chunk a line.
    assert!(t.contains("-79,228,1"), "{t}");
}

#[test]
fn amounts_are_right_aligned_on_the_right_margin() {
    let s = finalized(document(sample_lines()));
    let pages = layout_en(&s, &no_letterhead());
    check_inside(&pages);
    let en = Formats::english();
    let mut seen = 0;
    for l in &s.document.lines {
        let want = en.amount(l.amount, 2);
        for item in &pages[0] {
            if let Item::Text { x, size, line, .. } = item
                && line.text == want
                && *x > COL_AMOUNT.0
            {
                let right = x + line.width(*size);
                assert!((right - RIGHT).abs() < 0.01, "{want:?} ends at {right}");
                seen += 1;
            }
        }
    }
    assert!(seen >= s.document.lines.len());
}

#[test]
fn a_long_cjk_description_wraps_inside_its_column() {
    let mut lines = sample_lines();
    let long =
        "東京大学病院の検査部門における遠隔画像診断サービスの月額利用料金および追加解析費用の合計";
    lines[1].description = long.into();
    let s = finalized(document(lines));
    let pages = layout_en(&s, &no_letterhead());
    check_inside(&pages);
    let parts: Vec<&Item> = pages[0]
        .iter()
        .filter(|i| matches!(i, Item::Text { line, .. } if long.contains(line.text.as_str()) && !line.text.is_empty()))
        .collect();
    assert!(parts.len() >= 3, "{} lines", parts.len());
    let mut joined = String::new();
    for item in parts {
        let Item::Text { x, size, line, .. } = item else {
            unreachable!()
        };
        assert_eq!(*x, COL_DESC.0);
        assert!(
            x + line.width(*size) <= COL_DESC.0 + COL_DESC.1 + 0.01,
            "{}",
            line.text
        );
        joined.push_str(&line.text);
    }
    assert_eq!(joined, long);
    let t = text(&pdf(&s));
    assert!(t.contains("東京大学病院の検査部門"), "{t}");
}

#[test]
fn local_dates_of_a_period_label() {
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
fn a_logo_must_be_a_png_or_jpeg_that_decodes() {
    let path = Path::new("/etc/gateway/logo.png");
    let ok = Logo::from_file_bytes(png(300, 100), path).unwrap();
    assert_eq!(ok.size(), (300.0, 100.0));
    let err = Logo::from_file_bytes(b"GIF89a....".to_vec(), path).unwrap_err();
    assert!(
        err.contains("/etc/gateway/logo.png") && err.contains("unknown image format"),
        "{err}"
    );
    let err = Logo::from_file_bytes(
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
        path,
    )
    .unwrap_err();
    assert!(err.contains("SVG is not supported"), "{err}");
    let err = Logo::from_file_bytes(Vec::new(), path).unwrap_err();
    assert!(err.contains("unknown image format"), "{err}");
    // Cut short: the header reads, the pixels don't.
    let whole = png(300, 100);
    let err = Logo::from_file_bytes(whole[..whole.len() - 40].to_vec(), path).unwrap_err();
    assert!(
        err.contains("/etc/gateway/logo.png") && err.contains("PNG"),
        "{err}"
    );
    let err = Logo::from_file_bytes(whole[..20].to_vec(), path).unwrap_err();
    assert!(err.contains("not a readable PNG file"), "{err}");
    let err = Logo::from_file_bytes(b"\xFF\xD8\xFF\xE0garbage".to_vec(), path).unwrap_err();
    assert!(err.contains("not a readable JPEG file"), "{err}");
}

#[test]
fn the_logo_sits_top_left_fitted_in_its_box() {
    let s = finalized(document(sample_lines()));
    for (w, h, want) in [
        (300, 100, (144.0, 48.0)),
        (600, 100, (150.0, 25.0)),
        (20, 10, (96.0, 48.0)),
    ] {
        let logo = logo(w, h);
        let head = Letterhead {
            logo: Some(&logo),
            ..no_letterhead()
        };
        let pages = layout_en(&s, &head);
        check_inside(&pages);
        let images: Vec<(f32, f32, f32, f32)> = pages
            .iter()
            .flatten()
            .filter_map(|i| match i {
                Item::Image {
                    x,
                    y,
                    width,
                    height,
                    ..
                } => Some((*x, *y, *width, *height)),
                _ => None,
            })
            .collect();
        assert_eq!(images.len(), 1);
        let (x, y, width, height) = images[0];
        assert_eq!((x, y), (LEFT, TOP));
        assert!(
            (width - want.0).abs() < 0.01 && (height - want.1).abs() < 0.01,
            "{images:?}"
        );
        // The company's name is below it.
        let name_y = pages[0]
            .iter()
            .find_map(|i| match i {
                Item::Text { y, line, .. } if line.text == "Northwind Platform Inc." => Some(*y),
                _ => None,
            })
            .unwrap();
        assert!(name_y > TOP + height, "name at {name_y}");
    }
    let logo = logo(300, 100);
    let bytes = pdf_in(&s, "en", Some(&logo));
    check_structure(&bytes);
    let (list, _) = poppler("pdfimages", &["-list"], &[], &bytes);
    assert_eq!(
        list.lines().count(),
        3,
        "one image (and a mask-less listing):\n{list}"
    );
    assert!(list.contains(" 300   100 "), "{list}");
    assert!(text(&bytes).contains("Northwind Platform Inc."));
}

/// Page 1 as a PNG at 72 dpi, kept in the temp folder (`pg-statement-<name>.png`) for a
/// person to look at.
fn page_one_png(pdf: &[u8], name: &str) -> std::path::PathBuf {
    let prefix = std::env::temp_dir().join(format!("pg-statement-{name}"));
    poppler(
        "pdftoppm",
        &["-r", "72", "-png", "-f", "1", "-l", "1", "-singlefile"],
        &[prefix.to_str().unwrap()],
        pdf,
    );
    let file = prefix.with_extension("png");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "{}", file.display());
    file
}

#[test]
fn pages_render_to_images_and_stay_small() {
    let latin = finalized(document(sample_lines()));
    let mut d = document(sample_lines());
    d.company = "株式会社ノースウィンド".into();
    d.partner_name = "東京大学病院".into();
    d.lines[0].description = "API呼び出し：120000回、単価0.0125".into();
    d.lines[1].description =
        "収益分配 18%（東京大学病院の検査部門における遠隔画像診断サービス）".into();
    let cjk = finalized(d);
    let mut d = document(sample_lines());
    d.partner_name = "Łódź Uniwersytet Medyczny".into();
    d.lines[2].description = "Opłata polecająca: Szpital Wojewódzki w Białymstoku".into();
    let polish = finalized(d);
    let logo = logo(300, 100);
    let mut sizes = Vec::new();
    for (name, s, locale) in [
        ("latin", &latin, "en"),
        ("cjk", &cjk, "ja"),
        ("polish", &polish, "pl"),
    ] {
        let bytes = pdf_in(s, locale, Some(&logo));
        page_one_png(&bytes, name);
        sizes.push((name, bytes.len(), pdf_in(s, locale, None).len()));
    }
    eprintln!("PDF sizes (with logo, without): {sizes:?}");
    for (name, with_logo, without) in sizes {
        // Font subsets, not whole fonts (the fonts are 4.5 MB together).
        assert!(without < 80_000, "{name}: {without} bytes");
        assert!(with_logo > without, "{name}");
    }
}

/// A statement of form 2 (parties, settlement) with `n` per-invoice revenue lines whose
/// customers have long names in several scripts.
fn partner_statement(n: usize) -> Statement {
    use super::super::model::{Parties, Party, PaymentTerms, Settlement, TermsFrom, Withholding};
    let names = [
        "Samodzielny Publiczny Zakład Opieki Zdrowotnej Uniwersytecki Szpital Kliniczny w Łodzi",
        "東京大学医学部附属病院 臨床研究支援センター 遠隔医療連携推進室 国際共同研究部門",
        "Πανεπιστημιακό Γενικό Νοσοκομείο Αθηνών «ΑΤΤΙΚΟΝ» — Κλινική Ψηφιακής Υγείας",
        "Federal State Budgetary Institution «Московский научно-практический центр»",
    ];
    let mut lines: Vec<Line> = (0..n)
        .map(|i| {
            let mut l = line(
                LineKind::Revenue,
                "Recorded revenue",
                "1234567.5",
                "1234567.50",
            );
            l.customer = Some(names[i % names.len()].into());
            l.invoice = Some(format!("in_{i:06}_{}", "x".repeat(i % 40)));
            l.product = Some("a-product-name-without-any-spaces-that-runs-on-and-on".into());
            l.refund = i % 7 == 0;
            l.quantity = Some(dec("1"));
            l
        })
        .collect();
    let mut share = line(LineKind::Share, "Share", "12345.675", "12345.68");
    share.rate = Some(dec("0.18"));
    share.quantity = Some(dec("68587.09"));
    lines.push(share);
    let mut adj = line(
        LineKind::Adjustment,
        &"Credit for the outage of the integration during the quarter-end close, agreed with the partner's finance team ".repeat(3),
        "-10",
        "-10.00",
    );
    adj.reference = Some("adj_1".into());
    lines.push(adj);
    let mut d = document(lines);
    d.form = 2;
    let long = "Bardzo Długa Nazwa Spółki Partnerskiej Zajmującej Się Integracją Systemów Medycznych Spółka z ograniczoną odpowiedzialnością";
    d.parties = Some(Parties {
        company: Party {
            legal_name: "Example Learning & Health Software, Inc.".into(),
            address: address(),
            tax_id: Some("EIN 94-7654321".into()),
            ..Party::default()
        },
        partner: Party {
            legal_name: long.into(),
            address: vec!["ul. Piotrkowska 104".into(), "90-926 Łódź".into()],
            tax_id: Some("NIP PL7251234567".into()),
            payment_details: Some("Przelew na rachunek w aktach, końcówka 0917".into()),
            locale: Some("pl-PL".into()),
            contact: Vec::new(),
        },
    });
    d.settlement = Some(Settlement {
        gross_share: dec("12345.68"),
        adjustments: dec("-10.00"),
        net_share: dec("12335.68"),
        withholding: Some(Withholding {
            rate: dec("0.2"),
            applies_to: vec![LineKind::Share],
            base: dec("12345.68"),
            precise: dec("2469.136"),
            amount: dec("2469.14"),
            reference: "Withheld under art. 21(1)(2a) of the Polish CIT Act; a certificate of residence lowers the rate".into(),
        }),
        tax: None,
        amount_payable: dec("9866.54"),
        payment_terms: Some(PaymentTerms {
            days: 14,
            from: TermsFrom::Finalization,
        }),
        due_date: NaiveDate::from_ymd_opt(2026, 11, 17),
    });
    finalized(d)
}

/// Text on one baseline never runs into the next piece of text on it: nothing overflows
/// its column into the neighbour's.
fn check_columns(pages: &[Vec<Item>]) {
    for (p, page) in pages.iter().enumerate() {
        let mut by_line: std::collections::BTreeMap<i64, Vec<(f32, f32, String)>> =
            std::collections::BTreeMap::new();
        for item in page {
            if let Item::Text {
                x, y, size, line, ..
            } = item
            {
                by_line.entry((y * 100.0) as i64).or_default().push((
                    *x,
                    x + line.width(*size),
                    line.text.clone(),
                ));
            }
        }
        for (_, mut texts) in by_line {
            texts.sort_by(|a, b| a.0.total_cmp(&b.0));
            for pair in texts.windows(2) {
                assert!(
                    pair[0].1 <= pair[1].0 + 0.01,
                    "page {p}: {:?} runs into {:?}",
                    pair[0].2,
                    pair[1].2
                );
            }
        }
    }
}

#[test]
fn a_partner_statement_runs_over_pages_with_its_header_repeated_and_nothing_overflowing() {
    let s = partner_statement(240);
    let f = Formats::new("pl-PL").unwrap();
    let pages = partner::layout(&s, &no_letterhead(), &f).pages;
    assert!(pages.len() >= 4, "240 lines on {} pages", pages.len());
    check_inside(&pages);
    check_columns(&pages);
    let bytes = pdf_in(&s, "pl-PL", Some(&logo(300, 100)));
    check_structure(&bytes);
    // The same statement, the same bytes.
    assert_eq!(bytes, pdf_in(&s, "pl-PL", Some(&logo(300, 100))));
    let n = page_count(&bytes);
    let t = text(&bytes);
    // The revenue table's heading and column titles on every page it runs onto.
    assert!(
        t.matches("Revenue basis (continued)").count() >= n - 2,
        "{t}"
    );
    assert!(t.matches("Price or rate").count() >= n - 1);
    assert!(t.contains(&format!("Page {n} of {n}")));
    // Party fields and the payable amount read back; no internal ids but the verify URL.
    assert!(t.contains("NIP PL7251234567"));
    assert!(t.contains("Przelew na rachunek w aktach, końcówka 0917"));
    assert!(t.contains("Polish CIT Act"));
    // Polish groups from five digits on: 9866,54, but 1 234 567,50.
    assert!(t.contains("9866,54"), "{t}");
    assert!(t.contains("1 234 567,50"), "{t}");
    assert!(t.contains("17 listopada 2026"), "{t}");
    assert!(!t.contains("Ledger as of") && !t.contains("precise"));
    assert_eq!(t.matches(s.id.as_str()).count(), 1);
}

/// Every value the partner layout prints from config or events, made hostile (huge, with
/// control characters, right-to-left text, emoji, markup): no panic, nothing off the page,
/// no column running into the next, and the PDF still reads back.
#[test]
fn hostile_values_in_a_partner_statement_stay_on_the_page() {
    let hostile = |tag: &str| {
        format!(
            "{tag} <script>alert(1)</script> \u{0}\u{7}\r\n\t\u{202e}مستشفى 👩‍⚕️ {}",
            "W".repeat(3000)
        )
    };
    let mut s = partner_statement(12);
    let d = &mut s.document;
    for l in d.lines.iter_mut() {
        l.customer = Some(hostile("customer"));
        l.invoice = Some(hostile("invoice"));
        l.product = Some(hostile("product"));
        l.description = hostile("description");
        l.reference = Some(hostile("reference"));
    }
    d.currency = hostile("currency");
    d.period = hostile("period");
    d.agreement_id = hostile("agreement");
    if let Some(p) = d.parties.as_mut() {
        p.partner.legal_name = hostile("legal name");
        p.partner.address = vec![hostile("address")];
        p.partner.tax_id = Some(hostile("tax id"));
        p.partner.payment_details = Some(hostile("payment"));
        p.company.contact = vec![hostile("contact")];
    }
    if let Some(w) = d.settlement.as_mut().and_then(|s| s.withholding.as_mut()) {
        w.reference = hostile("withholding reference");
    }
    s.replaces = Some(hostile("replaces"));
    s.number_display = Some(hostile("number"));
    for locale in ["pl-PL", "ja-JP", "not a locale"] {
        let f = Formats::new(locale).unwrap_or_else(|_| Formats::english());
        let pages = partner::layout(&s, &no_letterhead(), &f).pages;
        check_inside(&pages);
        check_columns(&pages);
        let bytes = pdf_in(&s, locale, None);
        check_structure(&bytes);
        assert!(text(&bytes).contains("legal name"));
    }
}
