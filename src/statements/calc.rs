//! The calculation (pure): an agreement version, a period and what the ledger holds for it
//! in, lines out. No I/O and no clock, so a statement can be recomputed anywhere.
//!
//! Order of work: revenue lines (priced usage, then recorded revenue by product) make the
//! basis as the sum of their *rounded* amounts (what the statement shows, so a reader can
//! redo "18% of 12,345.67" by hand); shares, referrals and bonuses follow; a minimum
//! guarantee tops the earned lines up last.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::agreement::{Agreement, PriceModel, TierMode, TierReset, TrueUp};
use super::model::{Line, LineKind};
use super::period::Period;

/// One `revenue.recognized` event.
#[derive(Debug, Clone, PartialEq)]
pub struct RevenueEvent {
    pub id: String,
    pub product: Option<String>,
    pub customer: Option<String>,
    /// `data.invoice`, where the billing system names one.
    pub invoice: Option<String>,
    pub currency: String,
    /// Negative for a refund.
    pub amount: Decimal,
}

/// One milestone event a referral fee is paid on.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferralEvent {
    pub id: String,
    pub event_type: String,
    pub customer: Option<String>,
    pub contract_value: Option<Decimal>,
    pub currency: Option<String>,
}

/// What the ledger holds for one period, gathered by the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// Each meter the agreement reads, over the period.
    pub meters: BTreeMap<String, Decimal>,
    /// The share meter's values over the earlier periods of the agreement year, summed
    /// (read only when tiers reset per agreement year).
    pub share_volume_before: Decimal,
    pub revenue: Vec<RevenueEvent>,
    pub referrals: Vec<ReferralEvent>,
    /// Earned lines (share, referral, bonus) of the earlier covered periods of the
    /// agreement year, rounded and summed (read by a year-end minimum true-up).
    pub year_earned_before: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error(
        "event {event_id:?} is in {currency} but agreement {agreement:?} is in {expected}: record it in {expected} or settle it outside the statement"
    )]
    CurrencyMismatch {
        event_id: String,
        currency: String,
        expected: String,
        agreement: String,
    },
    #[error("event {event_id:?}: {reason}")]
    BadEvent { event_id: String, reason: String },
}

/// How recorded revenue is grouped into lines: `(customer, invoice, product, refund)`.
/// Form 1 grouped by product only (its documents verify as computed then); form 2 on,
/// per customer and invoice, with refunds on lines of their own.
pub type RevenueKey = (Option<String>, Option<String>, Option<String>, bool);

pub fn revenue_key(form: u32, e: &RevenueEvent) -> RevenueKey {
    if form < 2 {
        (None, None, e.product.clone(), false)
    } else {
        (
            e.customer.clone(),
            e.invoice.clone(),
            e.product.clone(),
            e.amount < Decimal::ZERO,
        )
    }
}

/// The key of a recorded revenue line (as [`revenue_key`] gave its events).
pub fn revenue_key_of(l: &Line) -> RevenueKey {
    (
        l.customer.clone(),
        l.invoice.clone(),
        l.product.clone(),
        l.refund,
    )
}

/// The computed lines of one period in the current form (no carried or adjustment lines:
/// those are added by the statement around it).
pub fn compute(a: &Agreement, period: Period, input: &Inputs) -> Result<Vec<Line>, CalcError> {
    compute_form(a, period, input, super::model::CURRENT_FORM)
}

/// [`compute`] in a given document form (an issued statement is recomputed in its own).
pub fn compute_form(
    a: &Agreement,
    period: Period,
    input: &Inputs,
    form: u32,
) -> Result<Vec<Line>, CalcError> {
    let detailed = form >= 2;
    let round = |d: Decimal| a.config.rounding.round(d, a.currency);
    let c = &a.config;
    let meter = |name: &str| input.meters.get(name).copied().unwrap_or(Decimal::ZERO);
    let mut lines = Vec::new();

    // Revenue (a): priced usage.
    for price in &c.revenue.prices {
        let q = meter(&price.meter);
        let label = price
            .description
            .clone()
            .unwrap_or_else(|| price.meter.clone());
        let base = |desc: String| {
            let mut l = Line::new(LineKind::Revenue, desc);
            l.meter = Some(price.meter.clone());
            l.quantity = Some(q);
            l
        };
        let bounds: Vec<Option<Decimal>> = price.tiers.iter().map(|t| t.up_to).collect();
        match price.model {
            PriceModel::PerUnit => {
                let unit = price.unit_price.unwrap_or_default();
                let mut l = base(format!("{label}: {q} at {unit} each"));
                l.unit_price = Some(unit);
                l.precise = q * unit;
                lines.push(l);
            }
            PriceModel::Package => {
                let size = Decimal::from(price.package_size.unwrap_or(1).max(1));
                let unit = price.package_price.unwrap_or_default();
                let packages = (q / size).ceil();
                let mut l = base(format!(
                    "{label}: {q} in packages of {size}: {packages} package(s) at {unit}"
                ));
                l.unit_price = Some(unit);
                l.precise = packages * unit;
                lines.push(l);
            }
            PriceModel::Graduated => {
                let slices = slices(&bounds, Decimal::ZERO, q);
                for (k, s) in slices {
                    let t = &price.tiers[k];
                    let unit = t.unit_price.unwrap_or_default();
                    let fee = if s > Decimal::ZERO {
                        t.flat_fee.unwrap_or_default()
                    } else {
                        Decimal::ZERO
                    };
                    let mut l = base(format!("{label}: {s} at {unit} each"));
                    l.quantity = Some(s);
                    l.unit_price = Some(unit);
                    l.tier = Some(tier_label(&bounds, k));
                    if detailed {
                        l.tier_range = Some(tier_range(&bounds, k));
                    }
                    l.precise = s * unit + fee;
                    if !fee.is_zero() {
                        l.description.push_str(&format!(" plus tier fee {fee}"));
                    }
                    lines.push(l);
                }
            }
            PriceModel::Volume => {
                let k = tier_reached(&bounds, q);
                let t = &price.tiers[k];
                let unit = t.unit_price.unwrap_or_default();
                let fee = if q > Decimal::ZERO {
                    t.flat_fee.unwrap_or_default()
                } else {
                    Decimal::ZERO
                };
                let mut l = base(format!("{label}: all {q} at {unit} each"));
                l.unit_price = Some(unit);
                l.tier = Some(tier_label(&bounds, k));
                if detailed {
                    l.tier_range = Some(tier_range(&bounds, k));
                }
                l.precise = q * unit + fee;
                if !fee.is_zero() {
                    l.description.push_str(&format!(" plus tier fee {fee}"));
                }
                lines.push(l);
            }
            PriceModel::Licence => {
                let k = tier_reached(&bounds, q);
                let annual = price.tiers[k].annual_fee.unwrap_or_default();
                let per_year = Decimal::from(a.kind().per_year());
                // No seats in use, no licence fee for the period.
                let fee = if q > Decimal::ZERO {
                    annual / per_year
                } else {
                    Decimal::ZERO
                };
                let mut l = base(format!(
                    "{label}: licence for {q} seats, {annual} a year, 1/{per_year} of it"
                ));
                l.unit_price = Some(annual);
                l.tier = Some(tier_label(&bounds, k));
                if detailed {
                    l.tier_range = Some(tier_range(&bounds, k));
                    l.periods_per_year = Some(a.kind().per_year());
                }
                l.precise = fee;
                lines.push(l);
            }
        }
    }

    // Revenue (b): recorded revenue by product; refunds are negative amounts.
    if c.revenue.recorded {
        let mut groups: BTreeMap<RevenueKey, (u64, Decimal)> = BTreeMap::new();
        for e in &input.revenue {
            if e.currency != a.currency.code {
                return Err(CalcError::CurrencyMismatch {
                    event_id: e.id.clone(),
                    currency: e.currency.clone(),
                    expected: a.currency.code.to_owned(),
                    agreement: c.id.clone(),
                });
            }
            if !c.revenue.products.is_empty()
                && !e
                    .product
                    .as_ref()
                    .is_some_and(|p| c.revenue.products.contains(p))
            {
                continue;
            }
            let entry = groups.entry(revenue_key(form, e)).or_default();
            entry.0 += 1;
            entry.1 += e.amount;
        }
        for ((customer, invoice, product, refund), (n, sum)) in groups {
            let name = product.clone().unwrap_or_else(|| "(no product)".into());
            let description = if detailed {
                let who = customer.as_deref().unwrap_or("(no customer)");
                let what = if refund {
                    "Refunds"
                } else {
                    "Recorded revenue"
                };
                match &invoice {
                    Some(inv) => format!("{what}, {who}, invoice {inv}, {name}: {n} event(s)"),
                    None => format!("{what}, {who}, {name}: {n} event(s)"),
                }
            } else {
                format!("Recorded revenue, {name}: {n} event(s)")
            };
            let mut l = Line::new(LineKind::Revenue, description);
            l.product = product;
            l.customer = customer;
            l.invoice = invoice;
            l.refund = refund;
            l.quantity = Some(Decimal::from(n));
            l.precise = sum;
            lines.push(l);
        }
    }
    for l in &mut lines {
        l.amount = round(l.precise);
    }
    let basis: Decimal = lines.iter().map(|l| l.amount).sum();

    // Percentage share of the basis.
    if let Some(s) = &c.share {
        if let Some(rate) = s.rate {
            let mut l = Line::new(
                LineKind::Share,
                format!("Share {} of revenue {basis}", pct(rate)),
            );
            l.quantity = Some(basis);
            l.rate = Some(rate);
            l.precise = basis * rate;
            lines.push(l);
        } else {
            let name = s.meter.clone().unwrap_or_default();
            let v = meter(&name);
            let before = match s.reset {
                TierReset::Period => Decimal::ZERO,
                TierReset::AgreementYear => input.share_volume_before,
            };
            let bounds: Vec<Option<Decimal>> = s.tiers.iter().map(|t| t.up_to).collect();
            let scope = match s.reset {
                TierReset::Period => "this period",
                TierReset::AgreementYear => "the agreement year",
            };
            match s.mode.unwrap_or(TierMode::Graduated) {
                TierMode::Graduated if v > Decimal::ZERO => {
                    for (k, slice) in slices(&bounds, before, before + v) {
                        let rate = s.tiers[k].rate;
                        let mut l = Line::new(
                            LineKind::Share,
                            format!(
                                "Share {} on {slice} of {v} {name} ({scope}) of revenue {basis}",
                                pct(rate)
                            ),
                        );
                        l.meter = Some(name.clone());
                        l.quantity = Some(basis * slice / v);
                        l.rate = Some(rate);
                        l.tier = Some(tier_label(&bounds, k));
                        if detailed {
                            l.tier_range = Some(tier_range(&bounds, k));
                        }
                        l.precise = basis * rate * slice / v;
                        lines.push(l);
                    }
                }
                mode => {
                    // Volume mode, or no volume at all: one rate for the whole basis. With
                    // no volume, a graduated share sits in the tier its next unit would.
                    let k = if mode == TierMode::Volume {
                        tier_reached(&bounds, before + v)
                    } else {
                        tier_of_next(&bounds, before)
                    };
                    let rate = s.tiers[k].rate;
                    let mut l = Line::new(
                        LineKind::Share,
                        format!(
                            "Share {} of revenue {basis} at {} {name} ({scope})",
                            pct(rate),
                            before + v
                        ),
                    );
                    l.meter = Some(name.clone());
                    l.quantity = Some(basis);
                    l.rate = Some(rate);
                    l.tier = Some(tier_label(&bounds, k));
                    if detailed {
                        l.tier_range = Some(tier_range(&bounds, k));
                    }
                    l.precise = basis * rate;
                    lines.push(l);
                }
            }
        }
    }

    // Referral fees, one line per milestone event, in event id order.
    let mut referrals: Vec<&ReferralEvent> = input.referrals.iter().collect();
    referrals.sort_by(|x, y| x.id.cmp(&y.id));
    for e in referrals {
        for r in c.referrals.iter().filter(|r| r.event_type == e.event_type) {
            if let Some(cur) = &e.currency
                && cur != a.currency.code
            {
                return Err(CalcError::CurrencyMismatch {
                    event_id: e.id.clone(),
                    currency: cur.clone(),
                    expected: a.currency.code.to_owned(),
                    agreement: c.id.clone(),
                });
            }
            let customer = e.customer.clone().unwrap_or_else(|| "(no customer)".into());
            let mut l = Line::new(LineKind::Referral, String::new());
            l.reference = Some(e.id.clone());
            if detailed {
                l.customer = e.customer.clone();
            }
            l.quantity = Some(Decimal::ONE);
            match (r.rate, r.amount) {
                (Some(rate), _) => {
                    let value = e.contract_value.ok_or_else(|| CalcError::BadEvent {
                        event_id: e.id.clone(),
                        reason: "a percentage referral needs data.contract_value".into(),
                    })?;
                    l.description = format!(
                        "Referral {} of contract value {value}: {customer}",
                        pct(rate)
                    );
                    l.quantity = Some(value);
                    l.rate = Some(rate);
                    l.precise = value * rate;
                }
                (None, Some(amount)) => {
                    l.description = format!("Referral fee: {customer}");
                    l.unit_price = Some(amount);
                    l.precise = amount;
                }
                (None, None) => continue,
            }
            lines.push(l);
        }
    }

    // Performance bonuses.
    for b in &c.bonuses {
        let v = meter(&b.meter);
        if v < b.threshold {
            continue;
        }
        let what = b.description.clone().unwrap_or_else(|| {
            format!("Bonus: {} reached {v} (threshold {})", b.meter, b.threshold)
        });
        let mut l = Line::new(LineKind::Bonus, what);
        l.meter = Some(b.meter.clone());
        match (b.rate, b.amount) {
            (Some(rate), _) => {
                l.quantity = Some(basis);
                l.rate = Some(rate);
                l.precise = basis * rate;
            }
            (None, Some(amount)) => {
                l.quantity = Some(v);
                l.precise = amount;
            }
            (None, None) => continue,
        }
        lines.push(l);
    }

    for l in &mut lines {
        l.amount = round(l.precise);
    }

    // Minimum guarantee, measured against the rounded earned lines.
    if let Some(m) = &c.minimum {
        let earned: Decimal = lines
            .iter()
            .filter(|l| l.kind.earned())
            .map(|l| l.amount)
            .sum();
        let per_year = Decimal::from(a.kind().per_year());
        let (year, covered) = a.year_of(period);
        let shortfall = match m.true_up {
            TrueUp::PerPeriod => {
                let target = m.annual / per_year;
                Some((
                    target - earned,
                    format!(
                        "Minimum guarantee: {} a year, {} for the period; earned {earned}",
                        m.annual,
                        target.normalize()
                    ),
                ))
            }
            TrueUp::YearEnd if covered.last() == Some(&period) => {
                let n = Decimal::from(covered.len() as u64);
                let target = m.annual * n / per_year;
                let year_earned = input.year_earned_before + earned;
                let partial = if n == per_year {
                    String::new()
                } else {
                    format!(
                        " pro-rated for {n} of {per_year} periods: {}",
                        target.normalize()
                    )
                };
                Some((
                    target - year_earned,
                    format!(
                        "Minimum guarantee for the agreement year {} to {}: {}{partial}; earned {year_earned}",
                        year.start,
                        year.end.pred_opt().unwrap_or(year.end),
                        m.annual
                    ),
                ))
            }
            TrueUp::YearEnd => None,
        };
        if let Some((short, description)) = shortfall
            && short > Decimal::ZERO
        {
            let mut l = Line::new(LineKind::MinimumTrueUp, description);
            l.precise = short;
            l.amount = round(short);
            lines.push(l);
        }
    }
    for l in &mut lines {
        l.precise = l.precise.normalize();
        // A line with a rate applies it to money: show that money with the currency's
        // decimals at least ("87500.50", not "87500.5").
        let money = l.rate.is_some();
        l.quantity = l.quantity.map(|q| {
            let mut q = q.normalize();
            if money && q.scale() < a.currency.minor_units {
                q.rescale(a.currency.minor_units);
            }
            q
        });
        l.rate = l.rate.map(|r| r.normalize());
        l.unit_price = l.unit_price.map(|u| u.normalize());
        // Show every amount with the currency's decimals ("12.50", not "12.5").
        l.amount.rescale(a.currency.minor_units);
    }
    Ok(lines)
}

/// Sum of a period's rounded earned lines (what a minimum guarantee counts).
pub fn earned(lines: &[Line]) -> Decimal {
    lines
        .iter()
        .filter(|l| l.kind.earned())
        .map(|l| l.amount)
        .sum()
}

/// Lines for usage of `period` that reached the ledger late: the difference, line by line,
/// between the period computed with it (`after`) and as it stood before (`before`).
///
/// Form 2 on, each line also says what changed (`Change`: the figure before and after for
/// quantity and amount) and its description names the difference, not the recomputed
/// period; recorded revenue is matched per customer, invoice and refund as it is computed.
pub fn carried(period: &str, before: &[Line], after: &[Line], form: u32) -> Vec<Line> {
    type Key = (
        LineKind,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        RevenueKey,
    );
    let key = |l: &Line| -> Key {
        (
            l.kind,
            l.meter.clone(),
            l.product.clone(),
            l.tier.clone(),
            l.reference.clone(),
            revenue_key_of(l),
        )
    };
    #[derive(Default)]
    struct Side {
        precise: Decimal,
        amount: Decimal,
        quantity: Decimal,
    }
    #[derive(Default)]
    struct Diff {
        before: Side,
        after: Side,
        description: String,
        rate: Option<Decimal>,
        tier_range: Option<super::model::TierRange>,
        periods_per_year: Option<u32>,
    }
    let mut diff: BTreeMap<Key, Diff> = BTreeMap::new();
    for (is_after, side) in [(false, before), (true, after)] {
        for l in side {
            let e = diff.entry(key(l)).or_default();
            let s = if is_after {
                &mut e.after
            } else {
                &mut e.before
            };
            s.precise += l.precise;
            s.amount += l.amount;
            s.quantity += l.quantity.unwrap_or_default();
            if is_after || e.description.is_empty() {
                e.description = l.description.clone();
                e.rate = l.rate;
                e.tier_range = l.tier_range.clone();
                e.periods_per_year = l.periods_per_year;
            }
        }
    }
    let mut out = Vec::new();
    for ((kind, meter, product, tier, reference, (customer, invoice, _, refund)), d) in diff {
        let precise = d.after.precise - d.before.precise;
        let amount = d.after.amount - d.before.amount;
        let qty = d.after.quantity - d.before.quantity;
        if precise.is_zero() && amount.is_zero() {
            continue;
        }
        let description = if form >= 2 {
            let what = [meter.as_deref(), customer.as_deref(), product.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            let what = if what.is_empty() {
                String::new()
            } else {
                format!(" ({what})")
            };
            format!(
                "Late usage for {period}, {}{what}: quantity {} to {} ({}), amount {} to {} ({})",
                kind.as_str(),
                d.before.quantity.normalize(),
                d.after.quantity.normalize(),
                signed(qty.normalize()),
                d.before.amount,
                d.after.amount,
                signed(amount),
            )
        } else {
            format!(
                "Late usage for {period}, {}: {}",
                kind.as_str(),
                d.description
            )
        };
        let mut l = Line::new(LineKind::CarriedLateUsage, description);
        l.carried_kind = Some(kind);
        l.period = Some(period.to_owned());
        l.meter = meter;
        l.product = product;
        l.tier = tier;
        l.reference = reference;
        l.quantity = Some(qty.normalize());
        l.rate = d.rate;
        l.precise = precise.normalize();
        l.amount = amount;
        if form >= 2 {
            l.customer = customer;
            l.invoice = invoice;
            l.refund = refund;
            l.tier_range = d.tier_range;
            l.periods_per_year = d.periods_per_year;
            l.change = Some(super::model::Change {
                quantity_before: d.before.quantity.normalize(),
                quantity_after: d.after.quantity.normalize(),
                amount_before: d.before.amount,
                amount_after: d.after.amount,
            });
        }
        out.push(l);
    }
    out
}

/// "+2", "-3.50", "0".
fn signed(d: Decimal) -> String {
    if d > Decimal::ZERO {
        format!("+{d}")
    } else {
        d.to_string()
    }
}

fn pct(rate: Decimal) -> String {
    format!("{}%", (rate * Decimal::ONE_HUNDRED).normalize())
}

/// `(tier, amount)` for each tier the range `(from, to]` passes through. Tier `k` holds
/// `(up_to[k-1], up_to[k]]`; bounds are inclusive upper limits, the last one open.
pub fn slices(bounds: &[Option<Decimal>], from: Decimal, to: Decimal) -> Vec<(usize, Decimal)> {
    let mut out = Vec::new();
    let mut lo = Decimal::ZERO;
    for (k, hi) in bounds.iter().enumerate() {
        let top = hi.map_or(to, |h| h.min(to));
        let bottom = lo.max(from);
        if top > bottom {
            out.push((k, top - bottom));
        }
        match hi {
            Some(h) if *h < to => lo = *h,
            _ => break,
        }
    }
    if out.is_empty() && !bounds.is_empty() {
        out.push((tier_of_next(bounds, from), Decimal::ZERO));
    }
    out
}

/// The tier a total reaches: the first whose upper bound is at or above it.
pub fn tier_reached(bounds: &[Option<Decimal>], q: Decimal) -> usize {
    bounds
        .iter()
        .position(|b| b.is_none_or(|h| q <= h))
        .unwrap_or(bounds.len().saturating_sub(1))
}

/// The tier the next unit after `q` falls in.
fn tier_of_next(bounds: &[Option<Decimal>], q: Decimal) -> usize {
    bounds
        .iter()
        .position(|b| b.is_none_or(|h| q < h))
        .unwrap_or(bounds.len().saturating_sub(1))
}

fn tier_range(bounds: &[Option<Decimal>], k: usize) -> super::model::TierRange {
    super::model::TierRange {
        number: u32::try_from(k + 1).unwrap_or(u32::MAX),
        above: if k == 0 { None } else { bounds[k - 1] },
        up_to: bounds[k],
    }
}

fn tier_label(bounds: &[Option<Decimal>], k: usize) -> String {
    let lo = if k == 0 { None } else { bounds[k - 1] };
    match (lo, bounds[k]) {
        (None, Some(hi)) => format!("{}: up to {hi}", k + 1),
        (Some(lo), Some(hi)) => format!("{}: above {lo} up to {hi}", k + 1),
        (Some(lo), None) => format!("{}: above {lo}", k + 1),
        (None, None) => format!("{}: all", k + 1),
    }
}

#[cfg(test)]
mod tests;
