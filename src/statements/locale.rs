//! Numbers and dates as a locale writes them, for the statement PDF: ICU4X with its compiled
//! CLDR data (no data files, no system locale). Pure: the same tag and value always give the
//! same string.
//!
//! Amounts are `rust_decimal` values already rounded by the agreement's rule; they go to ICU
//! through their exact decimal string, so nothing passes through a float and nothing is
//! rounded here.

use chrono::{Datelike, NaiveDate};
use icu_calendar::{Date, Gregorian};
use icu_datetime::FixedCalendarDateTimeFormatter;
use icu_datetime::fieldsets::YMD;
use icu_decimal::DecimalFormatter;
use icu_decimal::input::Decimal as IcuDecimal;
use icu_decimal::options::DecimalFormatterOptions;
use icu_locale_core::Locale;
use rust_decimal::Decimal;

/// A locale tag that can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocaleError {
    #[error("locale {tag:?} is not a BCP-47 language tag ({reason})")]
    Tag { tag: String, reason: String },
    #[error("no {what} formats for locale {tag:?} ({reason})")]
    Data {
        tag: String,
        what: &'static str,
        reason: String,
    },
}

/// Number and date formats of one locale. Build once per document, not per value.
#[derive(Debug)]
pub struct Formats {
    tag: String,
    decimal: DecimalFormatter,
    date: FixedCalendarDateTimeFormatter<Gregorian, YMD>,
}

impl Formats {
    /// Formats for a BCP-47 tag ("en", "en-GB", "pl", "zh-Hant-TW"). A well-formed tag that
    /// CLDR has no data for falls back as ICU does (to its language, then to the root
    /// locale); a malformed one is an error naming it.
    pub fn new(tag: &str) -> Result<Formats, LocaleError> {
        let locale: Locale = tag.parse().map_err(|e| LocaleError::Tag {
            tag: tag.to_owned(),
            reason: format!("{e}"),
        })?;
        let decimal =
            DecimalFormatter::try_new((&locale).into(), DecimalFormatterOptions::default())
                .map_err(|e| LocaleError::Data {
                    tag: tag.to_owned(),
                    what: "number",
                    reason: format!("{e}"),
                })?;
        // Always the Gregorian calendar, whatever the locale's default (a statement period
        // is a Gregorian month or quarter); this also links only Gregorian date data.
        let date = FixedCalendarDateTimeFormatter::try_new((&locale).into(), YMD::long()).map_err(
            |e| LocaleError::Data {
                tag: tag.to_owned(),
                what: "date",
                reason: format!("{e}"),
            },
        )?;
        Ok(Formats {
            tag: tag.to_owned(),
            decimal,
            date,
        })
    }

    /// English: the fallback when a configured locale can't be used.
    pub fn english() -> Formats {
        // ICU's compiled data always has English: `english_formats_load` below proves it.
        #[allow(clippy::expect_used, reason = "a constant tag and compiled-in data")]
        Formats::new("en").expect("compiled ICU data has English")
    }

    /// The tag these formats were built from.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// An amount in a currency with `minor_units` decimals: exactly that many decimals
    /// (zeros added), grouped as the locale groups, with the locale's minus sign. The value
    /// is already rounded; one with more decimals than `minor_units` shows them all rather
    /// than lose a digit.
    pub fn amount(&self, value: Decimal, minor_units: u32) -> String {
        let shown = minor_units.max(value.scale());
        self.decimal_with(value, shown)
    }

    /// A quantity or price: grouped, with as many decimals as it has once trailing zeros
    /// are dropped (1500.00 -> "1,500"; 0.0125 -> "0.0125").
    pub fn number(&self, value: Decimal) -> String {
        let value = value.normalize();
        self.decimal_with(value, value.scale())
    }

    /// A rate as a percentage: 0.18 -> "18%". icu_decimal 2.4 has no percent formatter
    /// (CLDR's percent patterns are in icu_experimental), so this is the locale's number and
    /// a plain "%", which is not every locale's form (German and French put a no-break
    /// space before it). A rate too large to scale is shown as the number it is.
    pub fn percent(&self, rate: Decimal) -> String {
        match rate.checked_mul(Decimal::ONE_HUNDRED) {
            Some(p) => format!("{}%", self.number(p)),
            None => self.number(rate),
        }
    }

    /// A date written out, in the Gregorian calendar: "March 31, 2026", "31. März 2026".
    pub fn date(&self, date: NaiveDate) -> String {
        let Ok(month) = u8::try_from(date.month()) else {
            return date.to_string();
        };
        let Ok(day) = u8::try_from(date.day()) else {
            return date.to_string();
        };
        match Date::try_new_gregorian(date.year(), month, day) {
            Ok(d) => self.date.format(&d).to_string(),
            // Out of ICU's range (a year beyond ±9999): the ISO form rather than nothing.
            Err(_) => date.to_string(),
        }
    }

    /// From one date to another, both written out: "October 1, 2026 – October 31, 2026".
    /// ICU's range formatter ("October 1 – 31, 2026") is behind its `unstable` feature in
    /// 2.4, so this joins two dates with an en dash.
    pub fn date_range(&self, first: NaiveDate, last: NaiveDate) -> String {
        format!("{} – {}", self.date(first), self.date(last))
    }

    /// `value` with exactly `decimals` decimals (never fewer than it has).
    fn decimal_with(&self, value: Decimal, decimals: u32) -> String {
        // rust_decimal's Display is a plain decimal with its scale ("-1234.50"), which
        // fixed_decimal parses exactly.
        let Ok(mut d) = IcuDecimal::try_from_str(&value.to_string()) else {
            return value.to_string();
        };
        // A Decimal has at most 28 decimals, so this fits an i16.
        let position = i16::try_from(decimals).map_or(i16::MIN, |n| -n);
        d.absolute.pad_end(position);
        self.decimal.format(&d).to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn f(tag: &str) -> Formats {
        Formats::new(tag).unwrap()
    }

    #[test]
    fn english_formats_load() {
        assert_eq!(Formats::english().tag(), "en");
        assert_eq!(Formats::english().amount(dec("1234.5"), 2), "1,234.50");
    }

    #[test]
    fn a_malformed_tag_is_an_error_naming_it() {
        for bad in ["", "not a tag", "en_US!", "e"] {
            let err = Formats::new(bad).unwrap_err();
            assert!(
                matches!(&err, LocaleError::Tag { tag, .. } if tag == bad),
                "{bad:?}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn a_well_formed_tag_without_data_falls_back() {
        // Klingon has no CLDR data: the root locale's formats.
        let tlh = f("tlh");
        assert_eq!(tlh.amount(dec("1234567.5"), 2), "1,234,567.50");
        // A region CLDR has no special data for: the language's.
        assert_eq!(f("de-AQ").amount(dec("1234.5"), 2), "1.234,50");
        assert_eq!(f("EN-gb").tag(), "EN-gb");
    }

    #[test]
    fn amounts_in_each_locale() {
        let cases: &[(&str, [&str; 4])] = &[
            // 1234567.5, -1234.5, 0, 1234.5 (all with 2 minor units)
            ("en", ["1,234,567.50", "-1,234.50", "0.00", "1,234.50"]),
            ("en-GB", ["1,234,567.50", "-1,234.50", "0.00", "1,234.50"]),
            ("de", ["1.234.567,50", "-1.234,50", "0,00", "1.234,50"]),
            (
                "fr",
                [
                    "1\u{202f}234\u{202f}567,50",
                    "-1\u{202f}234,50",
                    "0,00",
                    "1\u{202f}234,50",
                ],
            ),
            // Polish groups only from five digits (minimum grouping digits 2).
            (
                "pl",
                ["1\u{a0}234\u{a0}567,50", "-1234,50", "0,00", "1234,50"],
            ),
            ("ja", ["1,234,567.50", "-1,234.50", "0.00", "1,234.50"]),
            ("zh", ["1,234,567.50", "-1,234.50", "0.00", "1,234.50"]),
            (
                "ru",
                [
                    "1\u{a0}234\u{a0}567,50",
                    "-1\u{a0}234,50",
                    "0,00",
                    "1\u{a0}234,50",
                ],
            ),
            ("el", ["1.234.567,50", "-1.234,50", "0,00", "1.234,50"]),
        ];
        for (tag, want) in cases {
            let fm = f(tag);
            let got = [
                fm.amount(dec("1234567.5"), 2),
                fm.amount(dec("-1234.50"), 2),
                fm.amount(dec("0"), 2),
                fm.amount(dec("1234.5"), 2),
            ];
            assert_eq!(&got, want, "{tag}");
        }
        assert_eq!(f("pl").amount(dec("12345.5"), 2), "12\u{a0}345,50");
    }

    #[test]
    fn amounts_pad_but_never_round_or_drop_digits() {
        let en = f("en");
        assert_eq!(en.amount(dec("1.5"), 2), "1.50");
        assert_eq!(en.amount(dec("1.505"), 2), "1.505");
        assert_eq!(en.amount(dec("1.500"), 2), "1.500");
        assert_eq!(en.amount(dec("1234"), 0), "1,234");
        assert_eq!(en.amount(dec("1234.5"), 3), "1,234.500");
        assert_eq!(en.amount(dec("-0.01"), 2), "-0.01");
        assert_eq!(
            en.amount(Decimal::MAX, 2),
            "79,228,162,514,264,337,593,543,950,335.00"
        );
        assert_eq!(
            en.amount(dec("-0.0000000000000000000000000001"), 2),
            "-0.0000000000000000000000000001"
        );
    }

    #[test]
    fn numbers_and_percentages() {
        let en = f("en");
        assert_eq!(en.number(dec("120000")), "120,000");
        assert_eq!(en.number(dec("1500.00")), "1,500");
        assert_eq!(en.number(dec("0.0125")), "0.0125");
        assert_eq!(en.number(dec("-2.50")), "-2.5");
        assert_eq!(en.percent(dec("0.18")), "18%");
        assert_eq!(en.percent(dec("0.125")), "12.5%");
        assert_eq!(en.percent(dec("1")), "100%");
        assert_eq!(
            en.percent(Decimal::MAX),
            "79,228,162,514,264,337,593,543,950,335"
        );
        assert_eq!(f("de").number(dec("120000.5")), "120.000,5");
        assert_eq!(f("de").percent(dec("0.125")), "12,5%");
        assert_eq!(f("fr").percent(dec("0.18")), "18%");
    }

    #[test]
    fn long_dates_in_each_locale() {
        let d = date(2026, 3, 31);
        for (tag, want) in [
            ("en", "March 31, 2026"),
            ("en-GB", "31 March 2026"),
            ("de", "31. März 2026"),
            ("fr", "31 mars 2026"),
            ("pl", "31 marca 2026"),
            ("ja", "2026年3月31日"),
            ("zh", "2026年3月31日"),
            ("ru", "31 марта 2026\u{202f}г."),
            ("el", "31 Μαρτίου 2026"),
        ] {
            assert_eq!(f(tag).date(d), want, "{tag}");
        }
        // Thai's default calendar is Buddhist; a statement date stays Gregorian.
        assert!(f("th").date(d).contains("2026"), "{}", f("th").date(d));
        assert_eq!(
            f("en").date_range(date(2026, 10, 1), date(2026, 10, 31)),
            "October 1, 2026 – October 31, 2026"
        );
    }
}
