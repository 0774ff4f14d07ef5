//! Golden and property tests of the settlement: withholding, tax, reverse charge, payable
//! amount and due date.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::str::FromStr;

use proptest::prelude::*;

use super::*;
use crate::metering::meter::Aggregation;
use crate::statements::agreement::{AgreementConfig, Agreements};
use crate::statements::model::TermsFrom;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn agreement(terms: &str, currency: &str, rounding: &str) -> Agreement {
    let text = format!(
        "id = \"a\"\npartner = \"p\"\nvalid_from = \"2026-01-01\"\ncurrency = \"{currency}\"\nrounding = \"{rounding}\"\nshare = {{ rate = \"10%\" }}\n{terms}"
    );
    let c: AgreementConfig = toml::from_str(&text).unwrap();
    let set = Agreements::check(&[c], &["p"], &BTreeMap::<String, Aggregation>::new()).unwrap();
    set.versions("a").unwrap()[0].clone()
}

fn line(kind: LineKind, amount: &str) -> Line {
    let mut l = Line::new(kind, "x");
    l.amount = d(amount);
    l.precise = d(amount);
    l
}

fn oct31() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 31).unwrap()
}

#[test]
fn without_terms_the_payable_amount_is_the_total_owed() {
    let a = agreement("", "USD", "half_away_from_zero");
    let lines = [
        line(LineKind::Revenue, "1000.00"),
        line(LineKind::Share, "100.00"),
        line(LineKind::Adjustment, "-10.00"),
    ];
    let s = settle(&a, &lines, oct31(), None);
    assert_eq!(s.gross_share.to_string(), "100.00");
    assert_eq!(s.adjustments.to_string(), "-10.00");
    assert_eq!(s.net_share.to_string(), "90.00");
    assert_eq!(s.amount_payable.to_string(), "90.00");
    assert!(s.withholding.is_none() && s.tax.is_none());
    assert!(s.payment_terms.is_none() && s.due_date.is_none());
}

/// Withholding 10% on the share only (not the referral, not the adjustment), VAT 20% on
/// the whole net share, net 30 from the period's end.
#[test]
fn withholding_and_tax_golden() {
    let a = agreement(
        r#"payment = { terms_days = 30, from = "period_end" }
withholding = { rate = "10%", applies_to = ["share", "carried_late_usage"], reference = "Income Tax Act s. 194J" }
tax = { name = "VAT", rate = "20%" }"#,
        "EUR",
        "half_away_from_zero",
    );
    let mut carried_rev = line(LineKind::CarriedLateUsage, "50.00");
    carried_rev.carried_kind = Some(LineKind::Revenue);
    let lines = [
        line(LineKind::Revenue, "12345.67"),
        line(LineKind::Share, "1234.57"),
        line(LineKind::Referral, "250.00"),
        line(LineKind::CarriedLateUsage, "3.35"),
        carried_rev,
        line(LineKind::Adjustment, "-35.50"),
    ];
    let s = settle(&a, &lines, oct31(), None);
    assert_eq!(s.gross_share.to_string(), "1487.92");
    assert_eq!(s.adjustments.to_string(), "-35.50");
    assert_eq!(s.net_share.to_string(), "1452.42");
    let w = s.withholding.as_ref().unwrap();
    assert_eq!(w.base.to_string(), "1237.92");
    assert_eq!(w.precise.to_string(), "123.792");
    assert_eq!(w.amount.to_string(), "123.79");
    assert_eq!(w.reference, "Income Tax Act s. 194J");
    let t = s.tax.as_ref().unwrap();
    assert_eq!(t.base.to_string(), "1452.42");
    assert_eq!(t.precise.to_string(), "290.484");
    assert_eq!(t.amount.to_string(), "290.48");
    // 1452.42 - 123.79 + 290.48
    assert_eq!(s.amount_payable.to_string(), "1619.11");
    assert_eq!(s.due_date, NaiveDate::from_ymd_opt(2026, 11, 30));
}

/// A reverse charge adds no tax; the note is carried; the rule rounds the withholding.
#[test]
fn reverse_charge_and_rounding_rule_golden() {
    let a = agreement(
        r#"payment = { terms_days = 45, from = "finalization" }
withholding = { rate = "15%", reference = "Treaty art. 12" }
tax = { name = "VAT", reverse_charge = true, note = "Reverse charge: VAT to be accounted for by the recipient" }"#,
        "EUR",
        "half_even",
    );
    let lines = [line(LineKind::Share, "100.30")];
    // 100.30 x 15% = 15.045: half to even gives 15.04 (half away from zero 15.05).
    let s = settle(&a, &lines, oct31(), None);
    assert_eq!(s.withholding.as_ref().unwrap().amount.to_string(), "15.04");
    let t = s.tax.as_ref().unwrap();
    assert!(t.reverse_charge);
    assert_eq!(t.amount.to_string(), "0.00");
    assert_eq!(t.rate, None);
    assert_eq!(
        t.note.as_deref(),
        Some("Reverse charge: VAT to be accounted for by the recipient")
    );
    assert_eq!(s.amount_payable.to_string(), "85.26");
    // From finalization: unknown until then.
    assert_eq!(s.due_date, None);
    let fin = settle(&a, &lines, oct31(), NaiveDate::from_ymd_opt(2026, 11, 20));
    assert_eq!(fin.due_date, NaiveDate::from_ymd_opt(2027, 1, 4));
    assert_eq!(
        fin.payment_terms,
        Some(PaymentTerms {
            days: 45,
            from: TermsFrom::Finalization
        })
    );
}

/// Yen has no minor unit: every figure is whole.
#[test]
fn zero_decimal_currency_golden() {
    let a = agreement(
        r#"withholding = { rate = "20.42%", reference = "Income Tax Act art. 204" }
tax = { name = "JCT", rate = "10%" }"#,
        "JPY",
        "half_away_from_zero",
    );
    let lines = [line(LineKind::Share, "123457")];
    let s = settle(&a, &lines, oct31(), None);
    // 123457 x 0.2042 = 25209.9194 -> 25210; 123457 x 0.10 = 12345.7 -> 12346
    assert_eq!(s.withholding.as_ref().unwrap().amount.to_string(), "25210");
    assert_eq!(s.tax.as_ref().unwrap().amount.to_string(), "12346");
    assert_eq!(s.amount_payable.to_string(), "110593");
}

/// A credit (the adjustments exceed the share) withholds nothing and reduces the tax.
#[test]
fn a_credit_withholds_nothing_and_reduces_the_tax() {
    let a = agreement(
        r#"withholding = { rate = "10%", reference = "s. 194J" }
tax = { name = "GST", rate = "10%" }"#,
        "AUD",
        "half_away_from_zero",
    );
    let lines = [
        line(LineKind::Share, "100.00"),
        line(LineKind::Adjustment, "-150.00"),
    ];
    let s = settle(&a, &lines, oct31(), None);
    let w = s.withholding.as_ref().unwrap();
    assert_eq!(w.base.to_string(), "-50.00");
    assert_eq!(w.amount.to_string(), "0.00");
    assert_eq!(s.tax.as_ref().unwrap().amount.to_string(), "-5.00");
    assert_eq!(s.amount_payable.to_string(), "-55.00");
}

#[test]
fn terms_that_cannot_be_read_are_refused_at_load() {
    let check = |terms: &str| {
        let text = format!(
            "id = \"a\"\npartner = \"p\"\nvalid_from = \"2026-01-01\"\ncurrency = \"USD\"\nshare = {{ rate = \"10%\" }}\n{terms}"
        );
        let c: AgreementConfig = toml::from_str(&text).unwrap();
        Agreements::check(&[c], &["p"], &BTreeMap::new())
            .err()
            .unwrap_or_default()
    };
    let p = check(r#"withholding = { rate = "120%", reference = " " }"#);
    assert!(
        p.iter()
            .any(|(f, m)| f.ends_with("withholding.rate") && m.contains("between 0 and 1")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|(f, _)| f.ends_with("withholding.reference")),
        "{p:?}"
    );
    let p = check(r#"withholding = { rate = "10%", reference = "x", applies_to = ["revenue"] }"#);
    assert!(
        p.iter()
            .any(|(f, m)| f.ends_with("applies_to") && m.contains("basis")),
        "{p:?}"
    );
    let p = check(r#"tax = { name = "VAT" }"#);
    assert!(
        p.iter()
            .any(|(f, m)| f.ends_with("tax.rate") && m.contains("required")),
        "{p:?}"
    );
    let p = check(r#"tax = { name = "VAT", reverse_charge = true, rate = "20%" }"#);
    assert!(p.iter().any(|(f, _)| f.ends_with("tax.rate")), "{p:?}");
    assert!(p.iter().any(|(f, _)| f.ends_with("tax.note")), "{p:?}");
    let p = check(r#"payment = { terms_days = 400, from = "period_end" }"#);
    assert!(
        p.iter().any(|(f, _)| f.ends_with("payment.terms_days")),
        "{p:?}"
    );
    assert!(check(r#"payment = { terms_days = 30, from = "finalization" }"#).is_empty());
    // A misspelt basis is a parse error naming the choices.
    let text = "id = \"a\"\npartner = \"p\"\nvalid_from = \"2026-01-01\"\ncurrency = \"USD\"\nshare = { rate = \"10%\" }\npayment = { terms_days = 30, from = \"invoice\" }";
    let err = toml::from_str::<AgreementConfig>(text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("period_end") && err.contains("finalization"),
        "{err}"
    );
}

fn amount() -> impl Strategy<Value = Decimal> {
    (-5_000_000i64..50_000_000).prop_map(|c| Decimal::new(c, 2))
}

fn kind() -> impl Strategy<Value = LineKind> {
    prop_oneof![
        Just(LineKind::Revenue),
        Just(LineKind::Share),
        Just(LineKind::Referral),
        Just(LineKind::Bonus),
        Just(LineKind::MinimumTrueUp),
        Just(LineKind::CarriedLateUsage),
        Just(LineKind::Adjustment),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The payable amount is exactly the net share less the withholding plus the tax, each
    /// a figure with the currency's decimals; withholding never exceeds its base nor goes
    /// below zero; the tax is the net share times the rate, rounded once.
    #[test]
    fn payable_is_the_sum_of_its_rounded_parts(
        lines in prop::collection::vec((kind(), amount()), 0..12),
        w_bp in 0u32..=5000,
        t_bp in 0u32..=3000,
        reverse in any::<bool>(),
    ) {
        let tax = if reverse {
            r#"tax = { name = "VAT", reverse_charge = true, note = "rc" }"#.to_owned()
        } else {
            format!(r#"tax = {{ name = "VAT", rate = "{}" }}"#, Decimal::new(i64::from(t_bp), 4))
        };
        let a = agreement(
            &format!("withholding = {{ rate = \"{}\", reference = \"r\" }}\n{tax}", Decimal::new(i64::from(w_bp), 4)),
            "USD",
            "half_away_from_zero",
        );
        let lines: Vec<Line> = lines.into_iter().map(|(k, a)| line(k, &a.to_string())).collect();
        let s = settle(&a, &lines, oct31(), None);
        let w = s.withholding.as_ref().unwrap();
        let t = s.tax.as_ref().unwrap();
        let owed: Decimal = lines.iter().filter(|l| l.payable()).map(|l| l.amount).sum();
        prop_assert_eq!(s.net_share, owed);
        prop_assert_eq!(s.gross_share + s.adjustments, s.net_share);
        prop_assert_eq!(s.amount_payable, s.net_share - w.amount + t.amount);
        for v in [s.amount_payable, w.amount, t.amount, s.net_share] {
            prop_assert_eq!(v.scale(), 2);
        }
        prop_assert!(w.amount >= Decimal::ZERO);
        prop_assert!(w.amount <= w.base.max(Decimal::ZERO));
        prop_assert!((w.amount - w.precise).abs() <= Decimal::new(5, 3));
        if reverse {
            prop_assert!(t.amount.is_zero());
        } else {
            prop_assert!((t.amount - s.net_share * Decimal::new(i64::from(t_bp), 4)).abs() <= Decimal::new(5, 3));
        }
    }
}
