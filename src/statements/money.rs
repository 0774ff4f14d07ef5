//! Money for statements: exact `rust_decimal` amounts, ISO 4217 currencies with their minor
//! units, and an explicit rounding rule per agreement. `Decimal::round_dp` alone is banker's
//! rounding (half to even); finance's default here is half away from zero, per line, to the
//! currency's minor unit, so the strategy is always named.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

/// An ISO 4217 currency the gateway knows, with its minor units (USD 2, JPY 0, KWD 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    pub code: &'static str,
    pub minor_units: u32,
}

/// ISO 4217 active codes with their minor units (ISO 4217 list one; the few with 0 or 3
/// decimals matter most: a wrong table would round yen to cents).
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
];

impl Currency {
    /// The currency for an ISO 4217 code (upper case), if the gateway knows it.
    pub fn parse(code: &str) -> Option<Currency> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(c, m)| Currency {
                code: c,
                minor_units: *m,
            })
    }
}

/// How an agreement rounds each line to the currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// 2.345 -> 2.35, -2.345 -> -2.35 (the default: what finance teams expect).
    #[default]
    HalfAwayFromZero,
    /// Banker's rounding: 2.345 -> 2.34, 2.355 -> 2.36.
    HalfEven,
    /// Toward zero: 2.349 -> 2.34, -2.349 -> -2.34.
    Down,
    /// Away from zero: 2.341 -> 2.35, -2.341 -> -2.35.
    Up,
}

impl Rounding {
    fn strategy(self) -> RoundingStrategy {
        match self {
            Rounding::HalfAwayFromZero => RoundingStrategy::MidpointAwayFromZero,
            Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
            Rounding::Down => RoundingStrategy::ToZero,
            Rounding::Up => RoundingStrategy::AwayFromZero,
        }
    }

    /// `amount` rounded to `currency`'s minor unit with this rule.
    pub fn round(self, amount: Decimal, currency: Currency) -> Decimal {
        amount.round_dp_with_strategy(currency.minor_units, self.strategy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn half_cents_round_away_from_zero_by_default_for_charges_and_refunds() {
        let usd = Currency::parse("USD").unwrap();
        let r = Rounding::default();
        assert_eq!(r.round(d("2.345"), usd), d("2.35"));
        assert_eq!(r.round(d("-2.345"), usd), d("-2.35"));
        assert_eq!(r.round(d("2.344999"), usd), d("2.34"));
        // Banker's rounding, only when an agreement asks for it, differs on the half.
        assert_eq!(Rounding::HalfEven.round(d("2.345"), usd), d("2.34"));
        assert_eq!(Rounding::HalfEven.round(d("2.355"), usd), d("2.36"));
    }

    #[test]
    fn each_currency_rounds_to_its_own_minor_unit() {
        let jpy = Currency::parse("JPY").unwrap();
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(Rounding::default().round(d("1234.5"), jpy), d("1235"));
        assert_eq!(Rounding::default().round(d("1.2345"), kwd), d("1.235"));
        assert_eq!(
            Rounding::Down.round(d("-2.349"), Currency::parse("EUR").unwrap()),
            d("-2.34")
        );
        assert_eq!(
            Rounding::Up.round(d("-2.341"), Currency::parse("EUR").unwrap()),
            d("-2.35")
        );
        assert!(Currency::parse("XYZ").is_none());
        assert!(Currency::parse("usd").is_none(), "codes are upper case");
    }

    #[test]
    fn the_currency_table_has_unique_upper_case_codes() {
        let mut seen = std::collections::BTreeSet::new();
        for (code, minor) in CURRENCIES {
            assert!(
                code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()),
                "{code}"
            );
            assert!(*minor <= 3);
            assert!(seen.insert(*code), "{code} twice");
        }
    }
}
