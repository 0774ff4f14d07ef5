//! From the total owed to the amount payable (pure): withholding, tax on the share and
//! the due date, by the agreement version's terms. Every amount is rounded once, with the
//! agreement's rule, to the currency's minor unit; the payable amount is a sum of rounded
//! figures, so a spreadsheet reproduces it from the statement's CSV alone.

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;

use super::agreement::Agreement;
use super::model::{Line, LineKind, PaymentTerms, Settlement, Tax, Withholding};

/// The kinds of owed line withholding applies to when the agreement does not say.
pub const OWED_KINDS: [LineKind; 6] = [
    LineKind::Share,
    LineKind::Referral,
    LineKind::Bonus,
    LineKind::MinimumTrueUp,
    LineKind::CarriedLateUsage,
    LineKind::Adjustment,
];

/// The settlement of a statement's lines. `last_day` is the period's last local day;
/// `finalized_on` the local date it was (or is being) finalized, when it has been.
pub fn settle(
    a: &Agreement,
    lines: &[Line],
    last_day: NaiveDate,
    finalized_on: Option<NaiveDate>,
) -> Settlement {
    let c = &a.config;
    let minor = a.currency.minor_units;
    let round = |d: Decimal| {
        let mut r = c.rounding.round(d, a.currency);
        r.rescale(minor);
        r
    };
    let money = |mut d: Decimal| {
        d.rescale(minor);
        d
    };
    let owed = lines.iter().filter(|l| l.payable());
    let gross: Decimal = owed
        .clone()
        .filter(|l| l.kind != LineKind::Adjustment)
        .map(|l| l.amount)
        .sum();
    let adjustments: Decimal = owed
        .clone()
        .filter(|l| l.kind == LineKind::Adjustment)
        .map(|l| l.amount)
        .sum();
    let net = gross + adjustments;

    let withholding = c.withholding.as_ref().map(|w| {
        let applies_to = w.applies_to.clone().unwrap_or_else(|| OWED_KINDS.to_vec());
        let base: Decimal = owed
            .clone()
            .filter(|l| applies_to.contains(&l.kind))
            .map(|l| l.amount)
            .sum();
        // Nothing is withheld from a credit: a negative base means the partner owes, and
        // withholding is a tax on a payment made.
        let precise = if base > Decimal::ZERO {
            (base * w.rate).normalize()
        } else {
            Decimal::ZERO
        };
        Withholding {
            rate: w.rate.normalize(),
            applies_to,
            base: money(base),
            precise,
            amount: round(precise),
            reference: w.reference.trim().to_owned(),
        }
    });
    let tax = c.tax.as_ref().map(|t| {
        // A reverse charge adds nothing: the partner accounts for the tax itself.
        let precise = match (t.reverse_charge, t.rate) {
            (false, Some(rate)) => (net * rate).normalize(),
            _ => Decimal::ZERO,
        };
        Tax {
            name: t.name.trim().to_owned(),
            rate: t.rate.map(|r| r.normalize()),
            base: money(net),
            precise,
            amount: round(precise),
            reverse_charge: t.reverse_charge,
            note: t
                .note
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        }
    });
    let payable = net - withholding.as_ref().map_or(Decimal::ZERO, |w| w.amount)
        + tax.as_ref().map_or(Decimal::ZERO, |t| t.amount);
    let payment_terms = c.payment.as_ref().map(|p| PaymentTerms {
        days: p.terms_days,
        from: p.from,
    });
    let due_date = due_date(payment_terms, last_day, finalized_on);
    Settlement {
        gross_share: money(gross),
        adjustments: money(adjustments),
        net_share: money(net),
        withholding,
        tax,
        amount_payable: money(payable),
        payment_terms,
        due_date,
    }
}

/// Net N days from the period's last day, or from the day it was finalized (unknown
/// before then).
pub fn due_date(
    terms: Option<PaymentTerms>,
    last_day: NaiveDate,
    finalized_on: Option<NaiveDate>,
) -> Option<NaiveDate> {
    let t = terms?;
    let from = match t.from {
        super::model::TermsFrom::PeriodEnd => Some(last_day),
        super::model::TermsFrom::Finalization => finalized_on,
    }?;
    from.checked_add_days(Days::new(u64::from(t.days)))
}

#[cfg(test)]
mod tests;
