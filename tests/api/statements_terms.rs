//! Property test of the settlement terms through the running gateway, on both backends:
//! agreements with random payment terms, withholding (rate, the lines it applies to), tax
//! (a rate or a reverse charge), rounding rule, currency (0, 2 and 3 minor units), time zone
//! and partner locale, fed random revenue, refunds and referral milestones, given random
//! adjustments, then finalized. Each statement must settle as the terms say (recomputed
//! here, independently of `statements::settle`), verify, reproduce its payable amount from
//! the CSV alone, and render as a PDF.
//!
//! The cases come from a seed printed with every failure (`PGW_TERMS_SEED=<n>` replays it);
//! one app per backend holds all of them, as one deployment holds many partners.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::TestApp;
use crate::statements::{at, feed, finance, generate, parse_csv, post};
use partner_gateway::jobs::Handlers;

const CASES: usize = 10;

#[derive(Debug, Clone)]
enum TaxTerm {
    Rate(Decimal),
    Reverse,
}

#[derive(Debug, Clone)]
struct Case {
    currency: (&'static str, u32),
    time_zone: &'static str,
    rounding: (&'static str, RoundingStrategy),
    locale: &'static str,
    share_rate: Decimal,
    referral_rate: Option<Decimal>,
    withholding: Option<(Decimal, Option<Vec<&'static str>>)>,
    tax: Option<TaxTerm>,
    payment: Option<(u32, &'static str)>,
    // (customer, amount with up to four decimals; negative is a refund)
    revenue: Vec<(usize, Decimal)>,
    referrals: Vec<Decimal>,
    // In the currency's minor unit, never zero.
    adjustments: Vec<Decimal>,
}

/// A rate in (0, 0.6] with up to four decimals of a percent.
fn rate() -> impl Strategy<Value = Decimal> {
    (1i64..=600_000).prop_map(|n| Decimal::new(n, 6))
}

/// A payment of up to 99,999.9999, or (one in five) a refund of up to 400.
fn recorded() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        4 => (1i64..=999_999_999).prop_map(|n| Decimal::new(n, 4)),
        1 => (1i64..=4_000_000).prop_map(|n| Decimal::new(-n, 4)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let money = (
        prop::sample::select(vec![("USD", 2u32), ("JPY", 0), ("KWD", 3), ("EUR", 2)]),
        prop::sample::select(vec![
            "UTC",
            "America/New_York",
            "Asia/Tokyo",
            "Pacific/Kiritimati",
            "Pacific/Pago_Pago",
        ]),
        prop::sample::select(vec![
            (
                "half_away_from_zero",
                RoundingStrategy::MidpointAwayFromZero,
            ),
            ("half_even", RoundingStrategy::MidpointNearestEven),
            ("down", RoundingStrategy::ToZero),
            ("up", RoundingStrategy::AwayFromZero),
        ]),
        prop::sample::select(vec!["en-US", "de-DE", "pl-PL", "ja-JP"]),
    );
    let kinds = prop::sample::subsequence(vec!["share", "referral", "adjustment"], 1..=3);
    let terms = (
        rate(),
        prop::option::of(rate()),
        prop::option::of((rate(), prop::option::of(kinds))),
        prop::option::weighted(
            0.8,
            prop_oneof![rate().prop_map(TaxTerm::Rate), Just(TaxTerm::Reverse)],
        ),
        prop::option::weighted(
            0.9,
            (
                0u32..=120,
                prop::sample::select(vec!["period_end", "finalization"]),
            ),
        ),
    );
    let revenue = prop::collection::vec((0usize..3, recorded()), 0..8);
    let referrals =
        prop::collection::vec((1i64..=50_000_000).prop_map(|n| Decimal::new(n, 2)), 0..3);
    // Up to 20,000 either way, in minor units (scaled once the currency is known).
    let adjustments =
        prop::collection::vec(prop_oneof![1i64..=2_000_000, -2_000_000i64..=-1], 0..4);
    (money, terms, revenue, referrals, adjustments).prop_map(
        |(
            (currency, time_zone, rounding, locale),
            (share_rate, referral_rate, withholding, tax, payment),
            revenue,
            referrals,
            adjustments,
        )| {
            let minor = currency.1;
            Case {
                currency,
                time_zone,
                rounding,
                locale,
                share_rate,
                referral_rate,
                withholding,
                tax,
                payment,
                revenue,
                referrals: if referral_rate.is_some() {
                    referrals
                } else {
                    Vec::new()
                },
                // Whole minor units of the currency (an adjustment may not be finer).
                adjustments: adjustments
                    .into_iter()
                    .map(|n| Decimal::new(n, minor))
                    .collect(),
            }
        },
    )
}

fn seed() -> u64 {
    std::env::var("PGW_TERMS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn cases(seed: u64) -> Vec<Case> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        PropConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let s = case();
    (0..CASES)
        .map(|_| s.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// A rate as the config may write it: "12.5%" or "0.125".
fn written(rate: Decimal, percent: bool) -> String {
    if percent {
        format!("{}%", (rate * Decimal::ONE_HUNDRED).normalize())
    } else {
        rate.normalize().to_string()
    }
}

fn config(cases: &[Case]) -> String {
    let mut out = String::from("[jobs]\nenabled = false\n");
    for (i, c) in cases.iter().enumerate() {
        out += &format!(
            "[[partners]]\nid = \"terms-{i}\"\nname = \"Terms partner {i}\"\nkind = \"other\"\n\
             [partners.billing]\nlegal_name = \"Terms Partner {i} Ltd\"\naddress = [\"{i} Main Street\"]\n\
             locale = \"{}\"\n",
            c.locale
        );
    }
    for (i, c) in cases.iter().enumerate() {
        out += &format!(
            "[[agreements]]\nid = \"terms-{i}\"\npartner = \"terms-{i}\"\nvalid_from = \"2026-01-01\"\n\
             currency = \"{}\"\ntime_zone = \"{}\"\nrounding = \"{}\"\nshare = {{ rate = \"{}\" }}\n",
            c.currency.0,
            c.time_zone,
            c.rounding.0,
            written(c.share_rate, i % 2 == 0)
        );
        if let Some((days, from)) = c.payment {
            out += &format!("payment = {{ terms_days = {days}, from = \"{from}\" }}\n");
        }
        if let Some((r, kinds)) = &c.withholding {
            let applies = kinds
                .as_ref()
                .map(|k| format!(", applies_to = {}", json!(k)))
                .unwrap_or_default();
            out += &format!(
                "withholding = {{ rate = \"{}\", reference = \"Withheld under test rule {i}\"{applies} }}\n",
                written(*r, i % 3 == 0)
            );
        }
        match &c.tax {
            Some(TaxTerm::Rate(r)) => {
                out += &format!(
                    "tax = {{ name = \"GST\", rate = \"{}\" }}\n",
                    written(*r, true)
                );
            }
            Some(TaxTerm::Reverse) => {
                out += "tax = { name = \"VAT\", reverse_charge = true, note = \"Reverse charge: VAT due by the recipient\" }\n";
            }
            None => {}
        }
        if let Some(r) = c.referral_rate {
            out += &format!(
                "[[agreements.referrals]]\nevent_type = \"referral.implementation_completed\"\nrate = \"{}\"\n",
                written(r, true)
            );
        }
    }
    out
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap_or_else(|e| panic!("{v}: {e}"))
}

fn local_today(tz: &str) -> NaiveDate {
    let tz: chrono_tz::Tz = tz.parse().unwrap();
    Utc::now().with_timezone(&tz).date_naive()
}

const OWED: [&str; 6] = [
    "share",
    "referral",
    "bonus",
    "minimum_true_up",
    "carried_late_usage",
    "adjustment",
];

/// The statement's settlement, recomputed from its lines and the case's terms.
fn check(i: usize, c: &Case, doc: &Value, before: NaiveDate, after: NaiveDate) {
    let (_, minor) = c.currency;
    let round = |d: Decimal| d.round_dp_with_strategy(minor, c.rounding.1);
    let ctx = format!("case {i}: {c:?}\n{doc:#}");
    let lines = doc["lines"].as_array().unwrap();
    let owed: Vec<&Value> = lines
        .iter()
        .filter(|l| OWED.contains(&l["kind"].as_str().unwrap()) && l["carried_kind"] != "revenue")
        .collect();
    let sum_of = |pred: &dyn Fn(&Value) -> bool| -> Decimal {
        owed.iter()
            .filter(|l| pred(l))
            .map(|l| dec(&l["amount"]))
            .sum()
    };

    // Lines: revenue rounded per line within half a unit (a whole one rounding up or down)
    // of what was recorded; the share of the rounded basis; a referral per milestone.
    let unit = Decimal::new(1, minor);
    let revenue: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "revenue").collect();
    let exact: Decimal = c.revenue.iter().map(|(_, a)| *a).sum();
    let basis: Decimal = revenue.iter().map(|l| dec(&l["amount"])).sum();
    assert_eq!(dec(&doc["revenue_basis"]), basis, "{ctx}");
    let slack = unit * Decimal::from(revenue.len().max(1));
    assert!(
        (basis - exact).abs() <= slack,
        "basis {basis} vs recorded {exact}: {ctx}"
    );
    let share = lines.iter().find(|l| l["kind"] == "share").unwrap();
    assert_eq!(dec(&share["amount"]), round(basis * c.share_rate), "{ctx}");
    let referral_lines: Vec<Decimal> = lines
        .iter()
        .filter(|l| l["kind"] == "referral")
        .map(|l| dec(&l["amount"]))
        .collect();
    let mut expected_referrals: Vec<Decimal> = c
        .referrals
        .iter()
        .map(|v| round(*v * c.referral_rate.unwrap_or_default()))
        .collect();
    let mut got_referrals = referral_lines.clone();
    expected_referrals.sort();
    got_referrals.sort();
    assert_eq!(got_referrals, expected_referrals, "{ctx}");
    let adj_lines: Vec<Decimal> = lines
        .iter()
        .filter(|l| l["kind"] == "adjustment")
        .map(|l| dec(&l["amount"]))
        .collect();
    let mut want_adj = c.adjustments.clone();
    let mut got_adj = adj_lines.clone();
    want_adj.sort();
    got_adj.sort();
    assert_eq!(got_adj, want_adj, "{ctx}");

    // The settlement.
    let s = &doc["settlement"];
    let gross = sum_of(&|l| l["kind"] != "adjustment");
    let adjustments = sum_of(&|l| l["kind"] == "adjustment");
    let net = gross + adjustments;
    assert_eq!(dec(&s["gross_share"]), gross, "{ctx}");
    assert_eq!(dec(&s["adjustments"]), adjustments, "{ctx}");
    assert_eq!(dec(&s["net_share"]), net, "{ctx}");
    assert_eq!(dec(&doc["total"]), net, "{ctx}");
    let withheld = match &c.withholding {
        None => {
            assert!(s.get("withholding").is_none_or(Value::is_null), "{ctx}");
            Decimal::ZERO
        }
        Some((rate, kinds)) => {
            let w = &s["withholding"];
            let applies: Vec<&str> = kinds.clone().unwrap_or_else(|| OWED.to_vec());
            assert_eq!(w["applies_to"], json!(applies), "{ctx}");
            let base = sum_of(&|l| applies.contains(&l["kind"].as_str().unwrap()));
            assert_eq!(dec(&w["base"]), base, "{ctx}");
            // Nothing is withheld from a credit.
            let amount = if base > Decimal::ZERO {
                round(base * rate)
            } else {
                Decimal::ZERO
            };
            assert_eq!(dec(&w["amount"]), amount, "{ctx}");
            assert_eq!(
                w["reference"],
                format!("Withheld under test rule {i}"),
                "{ctx}"
            );
            amount
        }
    };
    let taxed = match &c.tax {
        None => {
            assert!(s.get("tax").is_none_or(Value::is_null), "{ctx}");
            Decimal::ZERO
        }
        Some(TaxTerm::Reverse) => {
            assert_eq!(s["tax"]["reverse_charge"], true, "{ctx}");
            assert_eq!(dec(&s["tax"]["amount"]), Decimal::ZERO, "{ctx}");
            assert_eq!(
                s["tax"]["note"], "Reverse charge: VAT due by the recipient",
                "{ctx}"
            );
            Decimal::ZERO
        }
        Some(TaxTerm::Rate(r)) => {
            let amount = round(net * r);
            assert_eq!(dec(&s["tax"]["amount"]), amount, "{ctx}");
            amount
        }
    };
    let payable = net - withheld + taxed;
    assert_eq!(dec(&s["amount_payable"]), payable, "{ctx}");
    // Every figure in the currency's minor unit, as a spreadsheet would show it.
    for f in ["gross_share", "adjustments", "net_share", "amount_payable"] {
        assert_eq!(dec(&s[f]).scale(), minor, "{f}: {ctx}");
    }
    // The due date: net N days from the period's last day or from the local day it was
    // finalized (the call may straddle midnight there).
    match c.payment {
        None => assert!(s.get("due_date").is_none_or(Value::is_null), "{ctx}"),
        Some((days, from)) => {
            let due = |d: NaiveDate| (d + chrono::Days::new(u64::from(days))).to_string();
            let got = s["due_date"].as_str().unwrap();
            if from == "period_end" {
                assert_eq!(
                    got,
                    due(NaiveDate::from_ymd_opt(2026, 10, 31).unwrap()),
                    "{ctx}"
                );
            } else {
                assert!(got == due(before) || got == due(after), "{got}: {ctx}");
            }
        }
    }
}

both_backends! {
    async fn random_terms_settle_verify_and_reproduce_from_the_csv(backend) {
        let seed = seed();
        let cases = cases(seed);
        let Some(app) = TestApp::spawn_with(backend, &config(&cases), Handlers::new()).await else { return };
        eprintln!("settlement terms property: seed {seed} (PGW_TERMS_SEED={seed} replays it)");
        let key = finance(&app).await;
        let received: DateTime<Utc> = at("2026-11-01T00:00:00Z");
        for (i, c) in cases.iter().enumerate() {
            let partner = format!("terms-{i}");
            let ids: Vec<String> = (0..c.revenue.len() + c.referrals.len()).map(|k| format!("e{k}")).collect();
            let customers = ["Hôpital Saint-Éloi", "東京大学病院", "Szpital w Łodzi"];
            let mut evs = Vec::new();
            for (k, (cust, a)) in c.revenue.iter().enumerate() {
                evs.push((ids[k].as_str(), "revenue.recognized", "cust", "2026-10-15T12:00:00Z",
                    Some(json!({"amount": a.to_string(), "currency": c.currency.0, "product": "suite", "customer": customers[*cust]}))));
            }
            for (k, v) in c.referrals.iter().enumerate() {
                evs.push((ids[c.revenue.len() + k].as_str(), "referral.implementation_completed", "impl", "2026-10-16T12:00:00Z",
                    Some(json!({"contract_value": v.to_string(), "currency": c.currency.0, "customer": customers[k % 3]}))));
            }
            if !evs.is_empty() {
                feed(&app, &partner, &evs, received).await;
            }
            let st = generate(&app, &key, &partner, "2026-10").await;
            let id = st["id"].as_str().unwrap().to_owned();
            for a in &c.adjustments {
                let (code, body) = post(&app, &key, &format!("/v1/statements/{id}/adjustments"),
                    json!({"amount": a.to_string(), "reason": "Property test adjustment"})).await;
                assert_eq!(code, 201, "seed {seed} case {i}: {body}");
            }
            let before = local_today(c.time_zone);
            let (code, fin) = post(&app, &key, &format!("/v1/statements/{id}/finalize"), json!({})).await;
            let after = local_today(c.time_zone);
            assert_eq!(code, 200, "seed {seed} case {i}: {fin}");
            check(i, c, &fin["document"], before, after);

            let v: Value = app.get(&key, &format!("/v1/statements/{id}/verify")).await.json().await.unwrap();
            assert_eq!(v["ok"], true, "seed {seed} case {i}: {v}");

            // The CSV alone: total + withholding + tax = amount payable.
            let csv = app.get(&key, &format!("/v1/statements/{id}?format=csv")).await.text().await.unwrap();
            let rows = parse_csv(&csv);
            let col = |n: &str| rows[0].iter().position(|h| h == n).unwrap();
            let amount_of = |kind: &str| -> Decimal {
                rows.iter().find(|r| r[col("kind")] == kind).map_or(Decimal::ZERO, |r| r[col("amount")].parse().unwrap())
            };
            assert_eq!(
                amount_of("total") + amount_of("withholding") + amount_of("tax"),
                amount_of("amount_payable"),
                "seed {seed} case {i}: {csv}"
            );
            assert_eq!(amount_of("amount_payable"), dec(&fin["document"]["settlement"]["amount_payable"]), "seed {seed} case {i}");

            let pdf = app.get(&key, &format!("/v1/statements/{id}?format=pdf")).await;
            assert_eq!(pdf.status(), 200, "seed {seed} case {i}");
            let bytes = pdf.bytes().await.unwrap();
            assert!(bytes.starts_with(b"%PDF-"), "seed {seed} case {i}");
        }
    }
}
