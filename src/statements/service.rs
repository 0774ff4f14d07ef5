//! Statement operations shared by the API and the CLI: generate (create or recompute a
//! draft), adjust, finalize, void, verify, and run a whole period. The store gathers what
//! the ledger holds; [`calc`] does the arithmetic.
//!
//! A statement counts the events the ledger had *received* by its cut-off (`ledger_as_of`),
//! so it can be recomputed to the cent later however much arrives afterwards. Usage for an
//! already finalized period that arrives after that period's statement was cut off is found
//! by arrival time and carried into the next statement as the difference it makes.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use rust_decimal::Decimal;
use serde_json::json;

use super::agreement::{Agreement, Agreements, TierReset, TrueUp};
use super::calc::{self, CalcError, Inputs};
use super::model::{CURRENT_FORM, Document, Line, LineKind, RecordedBy, Statement, Status};
use super::period::Period;
use super::store::{self, Adjustment, Span};
use super::{parties, settle};
use crate::audit::Who;
use crate::config::Config;
use crate::db::Db;
use crate::metering::Meter;
use crate::metering::store::meter_value;
use crate::metering::window::Window;

/// Who recorded the events a period's lines were computed from (kept beside the inputs,
/// which the arithmetic does not need it for).
#[derive(Debug, Default)]
struct Sources {
    /// Recorded revenue by line (`calc::revenue_key`): recorder -> events.
    revenue: BTreeMap<calc::RevenueKey, BTreeMap<store::Recorded, u64>>,
    /// Referral event id -> recorder.
    referrals: BTreeMap<String, store::Recorded>,
    /// Whether the partner reported events itself in the period, and what became of them.
    self_reported: Option<&'static str>,
    /// Whether the reads left those events out.
    span_exclude: bool,
}

impl Sources {
    fn add_revenue(&mut self, key: calc::RevenueKey, by: store::Recorded) {
        *self.revenue.entry(key).or_default().entry(by).or_default() += 1;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("unknown partner {0:?}")]
    UnknownPartner(String),
    #[error(
        "partner {0:?} is a sandbox partner (sandbox = true in its config): sandbox usage is never billed, so it has no statements"
    )]
    Sandbox(String),
    #[error("partner {partner:?} has no agreement {agreement:?}")]
    UnknownAgreement { partner: String, agreement: String },
    #[error("no statement {0:?}")]
    NotFound(String),
    #[error("{0}")]
    BadPeriod(String),
    #[error("no agreement of partner {partner:?} covers {period}{hint}")]
    NoAgreement {
        partner: String,
        period: String,
        hint: String,
    },
    #[error(
        "partner {partner:?} has several agreements covering {period} ({}): name one with \"agreement\"",
        ids.join(", ")
    )]
    AmbiguousAgreement {
        partner: String,
        period: String,
        ids: Vec<String>,
    },
    #[error(
        "the statement for {period} ({number}) is finalized and cannot be recomputed; a correction goes in a later statement as an adjustment"
    )]
    AlreadyFinalized { period: String, number: String },
    #[error("statement {id} is {status}, not a draft")]
    NotDraft { id: String, status: &'static str },
    #[error("statement {0} is a draft: only an issued statement has a hash to verify")]
    NotIssued(String),
    #[error("statement {id} is {status}; only a finalized statement can be voided")]
    NotFinalized { id: String, status: &'static str },
    #[error(
        "{period} has not ended (it ends {end}, and the ledger settles for {settle} s after that): it can be a draft, not finalized"
    )]
    NotEnded {
        period: String,
        end: DateTime<Utc>,
        settle: i64,
    },
    #[error("{0}")]
    OutOfOrder(String),
    #[error(
        "the draft was computed before the statement for {0} was finalized: recompute it (POST /v1/statements) and review it again"
    )]
    Stale(String),
    #[error(
        "a later statement ({0}) is finalized: void only the latest one, and correct earlier periods with an adjustment in the next statement"
    )]
    NotLatest(String),
    #[error(
        "the statement for {later_period} ({later_id}) is already finalized, so one for {period} could never be finalized (periods are finalized in order): usage of {period} that reached the ledger late is billed in the next statement"
    )]
    LaterIssued {
        period: String,
        later_period: String,
        later_id: String,
    },
    #[error("statement {statement} has no adjustment {adjustment:?}")]
    NoAdjustment {
        statement: String,
        adjustment: String,
    },
    #[error("{0}")]
    BadAdjustment(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Calc(#[from] CalcError),
    #[error("the statement cannot be computed: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StatementError {
    fn from(e: sqlx::Error) -> Self {
        if store::is_immutable_refusal(&e) {
            return StatementError::Conflict(
                "the statement is issued; the store refuses to change it".into(),
            );
        }
        if let sqlx::Error::Database(d) = &e
            && d.is_unique_violation()
        {
            return StatementError::Conflict(
                "another change to this statement happened at the same moment; retry".into(),
            );
        }
        StatementError::Store(e.into())
    }
}

/// What verification found.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub id: String,
    pub number: Option<String>,
    /// The stored hash matches the stored content.
    pub hash_matches: bool,
    /// Recomputing from the ledger gives the stored content.
    pub recomputed_matches: bool,
    pub hash: Option<String>,
    pub recomputed_hash: Option<String>,
    pub differences: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.hash_matches && self.recomputed_matches
    }
}

/// What an issued statement fixed, which its recomputation keeps: the names and parties
/// as issued, its form, and the day it was finalized (a due date counts from it).
#[derive(Clone, Copy)]
struct AsIssued<'a> {
    doc: &'a Document,
    finalized_at: Option<DateTime<Utc>>,
}

/// The period's last local day (payment terms from the period's end count from it).
fn last_day(period: Period) -> chrono::NaiveDate {
    period.end_date().pred_opt().unwrap_or(period.start_date())
}

/// What a computation counts: the ledger as received by `as_of`, and late usage received
/// after `carried_since` for periods from `first_issued` on.
#[derive(Debug, Clone, Copy)]
struct Cut {
    as_of: DateTime<Utc>,
    carried_since: Option<DateTime<Utc>>,
    first_issued: Option<Period>,
}

/// One partner's outcome in a statement run.
#[derive(Debug)]
pub struct RunItem {
    pub partner: String,
    pub agreement: String,
    pub outcome: Result<Statement, StatementError>,
}

/// The statement operations over one store and one config.
pub struct Statements<'a> {
    pub db: &'a Db,
    pub config: &'a Config,
    pub agreements: &'a Agreements,
    pub meters: &'a BTreeMap<String, Meter>,
}

impl Statements<'_> {
    /// Events received this recently are left to the next computation: a transaction that
    /// stamped its events a moment ago may not have committed yet, and an event must never
    /// fall between one statement's cut-off and the next one's carried usage.
    fn settle(&self) -> Duration {
        Duration::seconds(i64::try_from(self.config.statements.settle_secs).unwrap_or(60))
    }

    /// The agreement and period a request names.
    fn resolve(
        &self,
        partner: &str,
        agreement: Option<&str>,
        label: &str,
    ) -> Result<(String, Period), StatementError> {
        match self.config.partner(partner) {
            None => return Err(StatementError::UnknownPartner(partner.to_owned())),
            Some(p) if p.sandbox => return Err(StatementError::Sandbox(partner.to_owned())),
            Some(_) => {}
        }
        let all = self.agreements.for_partner(partner);
        if let Some(id) = agreement {
            let versions = all
                .iter()
                .find(|v| v.first().is_some_and(|a| a.id() == id))
                .ok_or_else(|| StatementError::UnknownAgreement {
                    partner: partner.to_owned(),
                    agreement: id.to_owned(),
                })?;
            let kind = versions[0].kind();
            let period = Period::parse(label, kind).map_err(StatementError::BadPeriod)?;
            if !versions.iter().any(|a| a.covers(period)) {
                return Err(StatementError::NoAgreement {
                    partner: partner.to_owned(),
                    period: label.to_owned(),
                    hint: validity_hint(versions),
                });
            }
            return Ok((id.to_owned(), period));
        }
        let mut found = Vec::new();
        let mut parse_error = None;
        for versions in &all {
            match Period::parse(label, versions[0].kind()) {
                Ok(p) if versions.iter().any(|a| a.covers(p)) => {
                    found.push((versions[0].id().to_owned(), p));
                }
                Ok(_) => {}
                Err(e) => parse_error = Some(e),
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => match parse_error {
                Some(e) if all.len() == 1 => Err(StatementError::BadPeriod(e)),
                _ => Err(StatementError::NoAgreement {
                    partner: partner.to_owned(),
                    period: label.to_owned(),
                    hint: all
                        .first()
                        .map_or(" (the partner has no agreements in config)".into(), |v| {
                            validity_hint(v)
                        }),
                }),
            },
            _ => Err(StatementError::AmbiguousAgreement {
                partner: partner.to_owned(),
                period: label.to_owned(),
                ids: found.into_iter().map(|(id, _)| id).collect(),
            }),
        }
    }

    /// The instants a statement period covers, in the agreement's own zone: the agreement
    /// (named, or the partner's one covering the period), the period's start and end (UTC),
    /// and the zone's name. For usage queries by statement period.
    pub fn period_range(
        &self,
        partner: &str,
        agreement: Option<&str>,
        label: &str,
    ) -> Result<(String, DateTime<Utc>, DateTime<Utc>, String), StatementError> {
        let (id, period) = self.resolve(partner, agreement, label)?;
        let a = self.version(&id, period)?;
        let (start, end) = period.bounds(a.tz);
        Ok((id, start, end, a.tz.name().to_owned()))
    }

    fn version(&self, id: &str, period: Period) -> Result<&Agreement, StatementError> {
        self.agreements.version_for(id, period).ok_or_else(|| {
            StatementError::BadPeriod(format!(
                "agreement {id:?} does not cover {}",
                period.label()
            ))
        })
    }

    /// What the ledger held for one period at `as_of`, and who recorded the events read.
    async fn inputs(
        &self,
        a: &Agreement,
        period: Period,
        as_of: DateTime<Utc>,
        form: u32,
    ) -> Result<(Inputs, Sources), StatementError> {
        let partner = &a.config.partner;
        let (start, end) = period.bounds(a.tz);
        let mut span = Span {
            partner_id: partner,
            start,
            end,
            as_of,
            exclude_self_reported: false,
        };
        let mut sources = Sources::default();
        if store::has_self_reported(self.db, span).await? {
            let include = a.config.counts_self_reported();
            span.exclude_self_reported = !include;
            sources.self_reported = Some(if include { "included" } else { "excluded" });
        }
        // The cut-off changes a meter only when something arrived after it.
        let cutoff = store::arrived_after(self.db, span).await?.then_some(as_of);
        let mut inputs = Inputs::default();
        for name in a.meters() {
            let meter = self
                .meters
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("meter {name:?} is not compiled"))?;
            let v = meter_value(
                self.db,
                partner,
                meter,
                Window { start, end },
                cutoff,
                span.exclude_self_reported,
            )
            .await?;
            inputs.meters.insert(name, v);
        }
        if let Some(s) = &a.config.share
            && s.reset == TierReset::AgreementYear
            && let Some(name) = &s.meter
            && let Some(meter) = self.meters.get(name)
        {
            let (_, covered) = a.year_of(period);
            for q in covered.into_iter().filter(|q| *q < period) {
                let (qs, qe) = q.bounds(a.tz);
                inputs.share_volume_before += meter_value(
                    self.db,
                    partner,
                    meter,
                    Window { start: qs, end: qe },
                    Some(as_of),
                    !a.config.counts_self_reported(),
                )
                .await?;
            }
        }
        if a.config.revenue.recorded {
            let events = store::revenue_events(self.db, span).await?.map_err(|b| {
                StatementError::BadEvent(format!("revenue event {:?}: {}", b.event_id, b.reason))
            })?;
            for (e, by) in events {
                sources.add_revenue(calc::revenue_key(form, &e), by);
                inputs.revenue.push(e);
            }
        }
        let mut types: Vec<String> = a
            .config
            .referrals
            .iter()
            .map(|r| r.event_type.clone())
            .collect();
        types.sort();
        types.dedup();
        let referrals = store::referral_events(self.db, span, &types)
            .await?
            .map_err(|b| {
                StatementError::BadEvent(format!("milestone event {:?}: {}", b.event_id, b.reason))
            })?;
        for (e, by) in referrals {
            sources.referrals.insert(e.id.clone(), by);
            inputs.referrals.push(e);
        }
        sources.span_exclude = span.exclude_self_reported;
        Ok((inputs, sources))
    }

    /// The computed lines of one period as the ledger stood at `as_of`.
    pub async fn period_lines(
        &self,
        id: &str,
        period: Period,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<Line>, StatementError> {
        Ok(self
            .period_lines_and_sources(id, period, as_of, CURRENT_FORM)
            .await?
            .0)
    }

    async fn period_lines_and_sources(
        &self,
        id: &str,
        period: Period,
        as_of: DateTime<Utc>,
        form: u32,
    ) -> Result<(Vec<Line>, Sources), StatementError> {
        let a = self.version(id, period)?;
        let (mut inputs, sources) = self.inputs(a, period, as_of, form).await?;
        let closes_year = a
            .config
            .minimum
            .as_ref()
            .is_some_and(|m| m.true_up == TrueUp::YearEnd)
            && a.year_of(period).1.last() == Some(&period);
        if closes_year {
            let (_, covered) = a.year_of(period);
            for q in covered.into_iter().filter(|q| *q < period) {
                let aq = self.version(id, q)?;
                let (iq, _) = self.inputs(aq, q, as_of, form).await?;
                inputs.year_earned_before += calc::earned(&calc::compute_form(aq, q, &iq, form)?);
            }
        }
        Ok((calc::compute_form(a, period, &inputs, form)?, sources))
    }

    /// Who recorded the events behind each computed line of the period: usage lines from
    /// one count of the period's events by type and recorder, recorded revenue and referral
    /// lines from the events they were computed from.
    async fn attach_provenance(
        &self,
        a: &Agreement,
        period: Period,
        as_of: DateTime<Utc>,
        sources: &Sources,
        lines: &mut [Line],
    ) -> Result<(), StatementError> {
        let (start, end) = period.bounds(a.tz);
        let span = Span {
            partner_id: &a.config.partner,
            start,
            end,
            as_of,
            exclude_self_reported: sources.span_exclude,
        };
        let needs_types = lines.iter().any(|l| l.meter.is_some());
        let by_type = if needs_types {
            // Events are dated at most a day ahead of their arrival, so a period that starts
            // a day after provenance began holds no event from before it.
            let clean = store::provenance_since(self.db)
                .await?
                .is_some_and(|since| start >= since + Duration::hours(24));
            let cutoff = store::arrived_after(self.db, span).await?;
            store::recorded_by_type(self.db, span, cutoff, clean).await?
        } else {
            Vec::new()
        };
        for line in lines.iter_mut() {
            let mut tally: BTreeMap<(String, Option<String>), u64> = BTreeMap::new();
            match (line.kind, &line.meter) {
                (_, Some(name)) => {
                    let Some(meter) = self.meters.get(name) else {
                        continue;
                    };
                    for (t, by, by_ref, n) in &by_type {
                        if meter.matches_type(t) {
                            *tally.entry((by.clone(), by_ref.clone())).or_default() +=
                                u64::try_from(*n).unwrap_or(0);
                        }
                    }
                }
                (LineKind::Revenue, None) => {
                    if let Some(t) = sources.revenue.get(&calc::revenue_key_of(line)) {
                        tally = t.clone();
                    }
                }
                (LineKind::Referral, None) => {
                    if let Some(by) = line
                        .reference
                        .as_ref()
                        .and_then(|r| sources.referrals.get(r))
                    {
                        tally.insert(by.clone(), 1);
                    }
                }
                _ => {}
            }
            line.recorded_by = tally
                .into_iter()
                .map(|((kind, reference), events)| RecordedBy {
                    kind,
                    reference,
                    events,
                })
                .collect();
        }
        Ok(())
    }

    /// The whole document for a period: computed lines, carried late usage, adjustments.
    async fn document(
        &self,
        id: &str,
        period: Period,
        cut: Cut,
        adjustments: &[Adjustment],
        issued: Option<AsIssued<'_>>,
    ) -> Result<Document, StatementError> {
        let Cut {
            as_of,
            carried_since,
            first_issued,
        } = cut;
        let form = issued.map_or(CURRENT_FORM, |i| i.doc.form);
        let a = self.version(id, period)?;
        let (mut lines, sources) = self
            .period_lines_and_sources(id, period, as_of, form)
            .await?;
        self.attach_provenance(a, period, as_of, &sources, &mut lines)
            .await?;
        if let (Some(since), Some(first)) = (carried_since, first_issued) {
            let (first_start, _) = first.bounds(a.tz);
            let (start, _) = period.bounds(a.tz);
            let span = store::late_usage_span(
                self.db,
                &a.config.partner,
                first_start,
                start,
                since,
                as_of,
            )
            .await?;
            if let Some((lo, hi)) = span {
                let mut q =
                    Period::containing(lo.with_timezone(&a.tz).date_naive(), a.kind()).max(first);
                let last = Period::containing(hi.with_timezone(&a.tz).date_naive(), a.kind());
                while q <= last && q < period {
                    if self.agreements.version_for(id, q).is_some() {
                        let (before, _) = self.period_lines_and_sources(id, q, since, form).await?;
                        let (after, _) = self.period_lines_and_sources(id, q, as_of, form).await?;
                        lines.extend(calc::carried(&q.label(), &before, &after, form));
                    }
                    q = q.next();
                }
            }
        }
        lines.extend(
            adjustments
                .iter()
                .map(|adj| adjustment_line(adj, a.currency.minor_units)),
        );
        let (start, end) = period.bounds(a.tz);
        let (company, partner_name) = match issued {
            Some(i) => (i.doc.company.clone(), i.doc.partner_name.clone()),
            None => (
                self.config.statements.company_name.clone(),
                self.config
                    .partner(&a.config.partner)
                    .map_or_else(|| a.config.partner.clone(), |p| p.name.clone()),
            ),
        };
        let mut doc = Document {
            company,
            partner_id: a.config.partner.clone(),
            partner_name,
            agreement_id: id.to_owned(),
            agreement_version: a.version(),
            period: period.label(),
            period_start: start,
            period_end: end,
            time_zone: a.config.time_zone.clone(),
            currency: a.currency.code.to_owned(),
            rounding: rounding_name(a),
            ledger_as_of: as_of,
            carried_since,
            provisional: as_of < end,
            provenance: true,
            self_reported_events: sources.self_reported.map(str::to_owned),
            lines,
            revenue_basis: Decimal::ZERO,
            total: Decimal::ZERO,
            total_precise: Decimal::ZERO,
            form,
            parties: None,
            settlement: None,
        };
        doc.sum_rounded(a.currency.minor_units);
        if form >= 2 {
            // The parties as issued stay as issued; a draft takes today's config.
            doc.parties = Some(match issued.and_then(|i| i.doc.parties.clone()) {
                Some(p) => p,
                None => parties::parties(self.config, &a.config.partner),
            });
            let finalized_on = issued
                .and_then(|i| i.finalized_at)
                .map(|t| t.with_timezone(&a.tz).date_naive());
            doc.settlement = Some(settle::settle(
                a,
                &doc.lines,
                last_day(period),
                finalized_on,
            ));
        }
        Ok(doc)
    }

    /// Where a statement of `period` stands among the agreement's finalized ones: the cut-off
    /// of the one before it (late usage since then is carried) and the first issued period.
    async fn sequence(
        &self,
        id: &str,
        period: Period,
        kind_of: &Agreement,
    ) -> Result<(Option<store::Issued>, Option<Period>, Vec<store::Issued>), StatementError> {
        let issued = store::finalized_of_agreement(self.db, id).await?;
        let (start, _) = period.bounds(kind_of.tz);
        let start_us = crate::time::to_micros(start);
        let previous = issued
            .iter()
            .rev()
            .find(|s| s.period_start_us < start_us)
            .cloned();
        let first = issued
            .first()
            .and_then(|s| Period::parse(&s.period, kind_of.kind()).ok());
        Ok((previous, first, issued))
    }

    /// Create the draft for (partner, period), or recompute the existing draft. Returns the
    /// statement and whether it was created.
    pub async fn generate(
        &self,
        partner: &str,
        agreement: Option<&str>,
        label: &str,
        now: DateTime<Utc>,
        who: &Who,
    ) -> Result<(Statement, bool), StatementError> {
        self.generate_with(partner, agreement, label, now, true, who)
            .await
    }

    /// [`Self::generate`]; a new draft that replaces a voided statement carries the voided
    /// one's adjustments over when `carry` (each saying where it came from), so a credit
    /// agreed with the partner is not silently lost with the void.
    pub async fn generate_with(
        &self,
        partner: &str,
        agreement: Option<&str>,
        label: &str,
        now: DateTime<Utc>,
        carry: bool,
        who: &Who,
    ) -> Result<(Statement, bool), StatementError> {
        let (id, period) = self.resolve(partner, agreement, label)?;
        let a = self.version(&id, period)?;
        let live = store::live_statement(self.db, &id, &period.label()).await?;
        if let Some(s) = &live
            && s.status == Status::Finalized
        {
            return Err(StatementError::AlreadyFinalized {
                period: period.label(),
                number: s.number_display.clone().unwrap_or_default(),
            });
        }
        let (previous, first, issued) = self.sequence(&id, period, a).await?;
        let since = previous.as_ref().map(|p| p.ledger_as_of);
        let as_of = (now - self.settle()).max(since.unwrap_or(DateTime::<Utc>::MIN_UTC));
        let replaces = match &live {
            Some(_) => None,
            None => store::last_void(self.db, &id, &period.label()).await?,
        };
        let (adjustments, carried) = match (&live, &replaces) {
            (Some(s), _) => (store::adjustments(self.db, &s.id).await?, false),
            (None, Some(void)) if carry => (self.carried_adjustments(void, now).await?, true),
            _ => (Vec::new(), false),
        };
        let doc = self
            .document(
                &id,
                period,
                Cut {
                    as_of,
                    carried_since: since,
                    first_issued: first,
                },
                &adjustments,
                None,
            )
            .await?;
        // Periods are finalized in order: a draft before an issued period could never be
        // finalized (nor deleted, before DELETE existed). Late usage goes to the next one.
        let start_us = crate::time::to_micros(doc.period_start);
        if let Some(later) = issued.iter().rev().find(|s| s.period_start_us > start_us) {
            return Err(StatementError::LaterIssued {
                period: period.label(),
                later_period: later.period.clone(),
                later_id: later.id.clone(),
            });
        }
        let mut tx = self.db.begin().await?;
        let (sid, created) = match &live {
            Some(s) => {
                if !store::update_draft(&mut tx, &s.id, &doc, now).await? {
                    return Err(StatementError::Conflict(format!(
                        "statement {} was finalized while it was being recomputed",
                        s.id
                    )));
                }
                (s.id.clone(), false)
            }
            None => {
                let sid = crate::ids::new(crate::ids::STATEMENT);
                store::insert_draft(&mut tx, &sid, &doc, now, replaces.as_deref()).await?;
                if carried {
                    for adj in &adjustments {
                        store::insert_adjustment(&mut tx, &sid, adj).await?;
                    }
                }
                (sid, true)
            }
        };
        let detail = json!({
            "agreement": doc.agreement_id,
            "period": doc.period,
            "created": created,
            "total": doc.total.to_string(),
            "currency": doc.currency,
        });
        audit(
            &mut tx,
            who,
            "statement.compute",
            &doc.partner_id,
            &sid,
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        let mut st = store::get_statement(self.db, &sid)
            .await?
            .ok_or_else(|| StatementError::NotFound(sid.clone()))?;
        // Inside the settle window the draft leaves out what was just received (an import a
        // minute ago): say how much, and from when a recompute has it all.
        let late = store::count_arrived_after(
            self.db,
            Span {
                partner_id: &doc.partner_id,
                start: doc.period_start,
                end: doc.period_end,
                as_of,
                exclude_self_reported: false,
            },
        )
        .await?;
        if late > 0 {
            st.settling = Some(super::model::Settling {
                cut_off: as_of,
                events_after_cut_off: late,
                complete_at: now + self.settle(),
            });
        }
        Ok((st, created))
    }

    pub async fn get(&self, id: &str) -> Result<Statement, StatementError> {
        store::get_statement(self.db, id)
            .await?
            .ok_or_else(|| StatementError::NotFound(id.to_owned()))
    }

    /// The statement, which must be a draft (adjusting, removing an adjustment, deleting,
    /// finalizing).
    async fn draft(&self, id: &str) -> Result<Statement, StatementError> {
        let st = self.get(id).await?;
        if st.status != Status::Draft {
            return Err(StatementError::NotDraft {
                id: id.to_owned(),
                status: st.status.as_str(),
            });
        }
        Ok(st)
    }

    /// Add a manual line to a draft.
    pub async fn adjust(
        &self,
        id: &str,
        amount: Decimal,
        reason: &str,
        author: &str,
        now: DateTime<Utc>,
        who: &Who,
    ) -> Result<Statement, StatementError> {
        let st = self.draft(id).await?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(StatementError::BadAdjustment(
                "reason is required: say why the amount is added or taken off".into(),
            ));
        }
        if reason.chars().count() > 500 {
            return Err(StatementError::BadAdjustment(
                "reason is longer than 500 characters".into(),
            ));
        }
        let minor =
            super::money::Currency::parse(&st.document.currency).map_or(2, |c| c.minor_units);
        if amount.is_zero() {
            return Err(StatementError::BadAdjustment(
                "amount must not be zero".into(),
            ));
        }
        if amount.normalize().scale() > minor {
            return Err(StatementError::BadAdjustment(format!(
                "amount {amount} has more decimals than {} allows ({minor})",
                st.document.currency
            )));
        }
        let adj = Adjustment {
            id: crate::ids::new(crate::ids::ADJUSTMENT),
            amount,
            reason: reason.to_owned(),
            author: author.to_owned(),
            created_at: now,
        };
        let mut doc = st.document.clone();
        doc.lines.push(adjustment_line(&adj, minor));
        self.resum(&mut doc, minor)?;
        let mut tx = self.db.begin().await?;
        store::insert_adjustment(&mut tx, id, &adj).await?;
        if !store::update_draft(&mut tx, id, &doc, st.computed_at).await? {
            return Err(StatementError::NotDraft {
                id: id.to_owned(),
                status: "no longer a draft",
            });
        }
        let detail = json!({
            "adjustment": adj.id,
            "amount": adj.amount.to_string(),
            "currency": doc.currency,
            "reason": adj.reason,
        });
        audit(
            &mut tx,
            who,
            "statement.adjust",
            &doc.partner_id,
            id,
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        self.get(id).await
    }

    /// Totals and settlement again after a draft's lines changed (an adjustment added or
    /// taken off): withholding and tax follow the total owed.
    fn resum(&self, doc: &mut Document, minor: u32) -> Result<(), StatementError> {
        doc.sum_rounded(minor);
        if doc.form < 2 {
            return Ok(());
        }
        let gone = || {
            StatementError::BadPeriod(format!(
                "agreement {:?} no longer covers {}: its terms are needed to settle the statement",
                doc.agreement_id, doc.period
            ))
        };
        let kind_of = self
            .agreements
            .versions(&doc.agreement_id)
            .and_then(|v| v.first())
            .ok_or_else(gone)?;
        let period =
            Period::parse(&doc.period, kind_of.kind()).map_err(StatementError::BadPeriod)?;
        let a = self
            .agreements
            .version_for(&doc.agreement_id, period)
            .ok_or_else(gone)?;
        doc.settlement = Some(settle::settle(a, &doc.lines, last_day(period), None));
        Ok(())
    }

    /// The adjustments of voided statement `void_id`, as new adjustments of its replacement
    /// that name where they came from.
    async fn carried_adjustments(
        &self,
        void_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Adjustment>, StatementError> {
        let void = self.get(void_id).await?;
        let name = void
            .number_display
            .clone()
            .unwrap_or_else(|| void_id.to_owned());
        Ok(store::adjustments(self.db, void_id)
            .await?
            .into_iter()
            .map(|a| Adjustment {
                id: crate::ids::new(crate::ids::ADJUSTMENT),
                reason: format!(
                    "{} (carried over from voided statement {name}, adjustment {})",
                    a.reason, a.id
                ),
                created_at: now,
                ..a
            })
            .collect())
    }

    /// Take an adjustment off a draft (finance made a mistake): the line goes, the total is
    /// summed again, in one transaction with the adjustment's row. An issued statement's
    /// adjustments are part of it for good (the store refuses too).
    pub async fn remove_adjustment(
        &self,
        id: &str,
        adjustment: &str,
        now: DateTime<Utc>,
        who: &Who,
    ) -> Result<Statement, StatementError> {
        let st = self.draft(id).await?;
        let missing = || StatementError::NoAdjustment {
            statement: id.to_owned(),
            adjustment: adjustment.to_owned(),
        };
        let minor =
            super::money::Currency::parse(&st.document.currency).map_or(2, |c| c.minor_units);
        let mut doc = st.document.clone();
        let before = doc.lines.len();
        doc.lines.retain(|l| {
            !(l.kind == LineKind::Adjustment && l.reference.as_deref() == Some(adjustment))
        });
        if doc.lines.len() == before {
            return Err(missing());
        }
        self.resum(&mut doc, minor)?;
        let mut tx = self.db.begin().await?;
        if !store::delete_adjustment(&mut tx, id, adjustment).await? {
            return Err(missing());
        }
        if !store::update_draft(&mut tx, id, &doc, st.computed_at).await? {
            return Err(StatementError::NotDraft {
                id: id.to_owned(),
                status: "no longer a draft",
            });
        }
        let detail = json!({ "adjustment": adjustment });
        let action = "statement.adjustment.remove";
        audit(&mut tx, who, action, &doc.partner_id, id, &detail, now).await?;
        tx.commit().await?;
        self.get(id).await
    }

    /// Delete a draft and its adjustments. Issued statements are never deleted: one is
    /// voided and replaced.
    pub async fn delete_draft(
        &self,
        id: &str,
        now: DateTime<Utc>,
        who: &Who,
    ) -> Result<(), StatementError> {
        let st = self.draft(id).await?;
        let mut tx = self.db.begin().await?;
        if !store::delete_draft(&mut tx, id).await? {
            return Err(StatementError::NotDraft {
                id: id.to_owned(),
                status: "no longer a draft",
            });
        }
        let doc = &st.document;
        let detail = json!({ "agreement": doc.agreement_id, "period": doc.period });
        audit(
            &mut tx,
            who,
            "statement.delete",
            &doc.partner_id,
            id,
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn finalize(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
        who: &Who,
    ) -> Result<Statement, StatementError> {
        let st = self.draft(id).await?;
        let doc = &st.document;
        if doc.provisional || now < doc.period_end + self.settle() {
            return Err(StatementError::NotEnded {
                period: doc.period.clone(),
                end: doc.period_end,
                settle: self.settle().num_seconds(),
            });
        }
        let kind_of = self
            .agreements
            .versions(&doc.agreement_id)
            .and_then(|v| v.first())
            .ok_or_else(|| {
                StatementError::BadPeriod(format!(
                    "agreement {:?} is no longer configured",
                    doc.agreement_id
                ))
            })?;
        let period =
            Period::parse(&doc.period, kind_of.kind()).map_err(StatementError::BadPeriod)?;
        let (previous, _, issued) = self.sequence(&doc.agreement_id, period, kind_of).await?;
        let start_us = crate::time::to_micros(doc.period_start);
        if let Some(later) = issued.iter().find(|s| s.period_start_us > start_us) {
            return Err(StatementError::OutOfOrder(format!(
                "the statement for {} is already finalized; periods are finalized in order",
                later.period
            )));
        }
        if let Some(prev) = &previous {
            let expected = period.prev();
            if prev.period != expected.label()
                && self
                    .agreements
                    .version_for(&doc.agreement_id, expected)
                    .is_some()
            {
                return Err(StatementError::OutOfOrder(format!(
                    "finalize the statement for {} first: periods are finalized in order",
                    expected.label()
                )));
            }
        }
        if doc.carried_since != previous.as_ref().map(|p| p.ledger_as_of) {
            return Err(StatementError::Stale(
                previous.map_or_else(|| "an earlier period".into(), |p| p.period),
            ));
        }
        // Terms from finalization: the due date is known now, and is part of what is issued.
        let mut issued_doc = doc.clone();
        if let Some(s) = issued_doc.settlement.as_mut() {
            s.due_date = settle::due_date(
                s.payment_terms,
                last_day(period),
                Some(now.with_timezone(&kind_of.tz).date_naive()),
            );
        }
        let doc = &issued_doc;
        let mut tx = self.db.begin().await?;
        if doc != &st.document && !store::update_draft(&mut tx, id, doc, st.computed_at).await? {
            return Err(StatementError::Conflict(format!(
                "statement {id} changed while it was being finalized"
            )));
        }
        let number = store::next_number(&mut tx, &doc.partner_id).await?;
        let hash = doc.hash(number);
        if !store::finalize_statement(&mut tx, id, number, &hash, by, now).await? {
            return Err(StatementError::Conflict(format!(
                "statement {id} changed while it was being finalized"
            )));
        }
        let data = serde_json::json!({
            "statement_id": id,
            "partner": doc.partner_id,
            "agreement": doc.agreement_id,
            "agreement_version": doc.agreement_version,
            "period": doc.period,
            "number": number,
            "currency": doc.currency,
            "total": doc.total.to_string(),
            "amount_payable": doc.settlement.as_ref().map(|s| s.amount_payable.to_string()),
            "due_date": doc.settlement.as_ref().and_then(|s| s.due_date).map(|d| d.to_string()),
            "hash": hash,
        });
        let event = crate::webhooks::events::STATEMENT_FINALIZED;
        crate::webhooks::emit(&mut tx, Some(&doc.partner_id), event, &data, now).await?;
        audit(
            &mut tx,
            who,
            "statement.finalize",
            &doc.partner_id,
            id,
            &data,
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(statement = id, number, partner = %doc.partner_id, "statement finalized");
        self.get(id).await
    }

    /// Void the latest finalized statement of its agreement; the record stays.
    pub async fn void(
        &self,
        id: &str,
        reason: &str,
        by: &str,
        now: DateTime<Utc>,
        who: &Who,
    ) -> Result<Statement, StatementError> {
        let st = self.get(id).await?;
        if st.status != Status::Finalized {
            return Err(StatementError::NotFinalized {
                id: id.to_owned(),
                status: st.status.as_str(),
            });
        }
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(StatementError::BadAdjustment(
                "reason is required to void a statement".into(),
            ));
        }
        let issued = store::finalized_of_agreement(self.db, &st.document.agreement_id).await?;
        let start_us = crate::time::to_micros(st.document.period_start);
        if let Some(later) = issued.iter().find(|s| s.period_start_us > start_us) {
            return Err(StatementError::NotLatest(later.period.clone()));
        }
        let mut tx = self.db.begin().await?;
        if !store::void_statement(&mut tx, id, reason, by, now).await? {
            return Err(StatementError::Conflict(format!(
                "statement {id} changed while it was being voided"
            )));
        }
        let data = serde_json::json!({
            "statement_id": id,
            "partner": st.document.partner_id,
            "agreement": st.document.agreement_id,
            "period": st.document.period,
            "number": st.number,
            "reason": reason,
        });
        let event = crate::webhooks::events::STATEMENT_VOIDED;
        let partner = &st.document.partner_id;
        crate::webhooks::emit(&mut tx, Some(partner), event, &data, now).await?;
        audit(&mut tx, who, "statement.void", partner, id, &data, now).await?;
        tx.commit().await?;
        tracing::info!(statement = id, partner = %st.document.partner_id, "statement voided");
        self.get(id).await
    }

    /// Recompute an issued statement from the ledger at its cut-off and check its hash.
    pub async fn verify(&self, id: &str) -> Result<Verification, StatementError> {
        let st = self.get(id).await?;
        let doc = &st.document;
        let Some(number) = st.number else {
            return Err(StatementError::NotIssued(id.to_owned()));
        };
        let hash_matches = st.hash.as_deref() == Some(doc.hash(number).as_str());
        let mut differences = Vec::new();
        let recomputed = match self
            .agreements
            .versions(&doc.agreement_id)
            .and_then(|v| v.first())
        {
            None => {
                differences.push(format!(
                    "agreement {:?} is no longer configured",
                    doc.agreement_id
                ));
                None
            }
            Some(kind_of) => {
                let period = Period::parse(&doc.period, kind_of.kind())
                    .map_err(StatementError::BadPeriod)?;
                let (_, first, _) = self.sequence(&doc.agreement_id, period, kind_of).await?;
                // The first issued period, as it stood when this one was computed: at the
                // latest, this one.
                let first = first.map(|f| f.min(period));
                let adjustments = store::adjustments(self.db, id).await?;
                let fresh = self
                    .document(
                        &doc.agreement_id,
                        period,
                        Cut {
                            as_of: doc.ledger_as_of,
                            carried_since: doc.carried_since,
                            first_issued: first,
                        },
                        &adjustments,
                        Some(AsIssued {
                            doc,
                            finalized_at: st.finalized_at,
                        }),
                    )
                    .await?;
                // Issued before provenance was kept: compare what was computed then.
                let fresh = if doc.provenance {
                    fresh
                } else {
                    fresh.without_provenance()
                };
                differences.extend(diff(doc, &fresh));
                Some(fresh)
            }
        };
        let recomputed_matches = recomputed.as_ref().is_some_and(|f| f == doc);
        Ok(Verification {
            id: st.id.clone(),
            number: st.number_display.clone(),
            hash_matches,
            recomputed_matches,
            hash: st.hash.clone(),
            recomputed_hash: recomputed.map(|f| f.hash(number)),
            differences,
        })
    }

    /// Every (partner, agreement) with an agreement version covering period `label`, in
    /// config order. Sandbox partners are left out: check-config refuses agreements naming
    /// them, and a run must not fail over one either.
    pub fn covering(&self, label: &str) -> Vec<(String, String)> {
        let mut todo = Vec::new();
        for p in self.config.partners.iter().filter(|p| !p.sandbox) {
            for versions in self.agreements.for_partner(&p.id) {
                let Some(first) = versions.first() else {
                    continue;
                };
                if let Ok(period) = Period::parse(label, first.kind())
                    && versions.iter().any(|a| a.covers(period))
                {
                    todo.push((p.id.clone(), first.id().to_owned()));
                }
            }
        }
        todo
    }

    /// The label of the period before `label` under agreement `agreement`'s kind.
    pub fn previous_label(&self, agreement: &str, label: &str) -> Option<String> {
        let kind = self.agreements.versions(agreement)?.first()?.kind();
        Period::parse(label, kind).ok().map(|p| p.prev().label())
    }

    /// The settle window: events younger than this may still be arriving.
    pub fn settle_window(&self) -> Duration {
        self.settle()
    }

    /// Generate the draft of `label` for every configured agreement that covers it;
    /// finalized periods are reported and left alone.
    pub async fn run(
        &self,
        label: &str,
        now: DateTime<Utc>,
        who: &Who,
        mut progress: impl FnMut(usize, usize),
    ) -> Vec<RunItem> {
        let todo = self.covering(label);
        let total = todo.len();
        // Several partners at once: each statement is a handful of independent queries, so
        // the database's cores (PostgreSQL backends, SQLite reader connections) share the run.
        let width = usize::try_from(self.config.database.max_connections)
            .unwrap_or(1)
            .clamp(1, 8);
        let mut out = Vec::with_capacity(total);
        let mut pending =
            futures_util::stream::iter(todo.into_iter().map(|(partner, agreement)| async move {
                let outcome = self
                    .generate(&partner, Some(&agreement), label, now, who)
                    .await
                    .map(|(s, _)| s);
                RunItem {
                    partner,
                    agreement,
                    outcome,
                }
            }))
            .buffer_unordered(width);
        while let Some(item) = pending.next().await {
            out.push(item);
            progress(out.len(), total);
        }
        // Report in partner order, whatever order they finished in.
        out.sort_by(|a, b| (&a.partner, &a.agreement).cmp(&(&b.partner, &b.agreement)));
        out
    }
}

/// Write the audit entry of a change to statement `id`, in the change's transaction.
async fn audit(
    tx: &mut crate::db::Tx,
    who: &Who,
    action: &str,
    partner: &str,
    id: &str,
    detail: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), StatementError> {
    let entry = who.entry(action, Some(partner), Some(id), detail);
    crate::audit::store::insert(tx, &entry, crate::time::to_micros(now)).await?;
    Ok(())
}

/// A manual line as the statement shows it (already in the currency's minor unit: the
/// amount was checked when it was added).
fn adjustment_line(adj: &Adjustment, minor_units: u32) -> Line {
    let mut l = Line::new(LineKind::Adjustment, adj.reason.clone());
    l.reference = Some(adj.id.clone());
    l.author = Some(adj.author.clone());
    l.precise = adj.amount;
    l.amount = adj.amount;
    l.amount.rescale(minor_units);
    l
}

fn rounding_name(a: &Agreement) -> String {
    use super::money::Rounding;
    match a.config.rounding {
        Rounding::HalfAwayFromZero => "half_away_from_zero",
        Rounding::HalfEven => "half_even",
        Rounding::Down => "down",
        Rounding::Up => "up",
    }
    .to_owned()
}

fn validity_hint(versions: &[Agreement]) -> String {
    let spans: Vec<String> = versions
        .iter()
        .map(|a| match a.config.valid_to {
            Some(to) => format!(
                "{} v{} from {} to {to}",
                a.id(),
                a.version(),
                a.config.valid_from
            ),
            None => format!("{} v{} from {}", a.id(), a.version(), a.config.valid_from),
        })
        .collect();
    format!(" (valid: {})", spans.join("; "))
}

/// Human-readable differences between a stored and a recomputed document.
fn diff(stored: &Document, fresh: &Document) -> Vec<String> {
    let mut out = Vec::new();
    if stored.agreement_version != fresh.agreement_version {
        out.push(format!(
            "agreement version: stored {}, configured now {}",
            stored.agreement_version, fresh.agreement_version
        ));
    }
    let n = stored.lines.len().max(fresh.lines.len());
    for i in 0..n {
        match (stored.lines.get(i), fresh.lines.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => out.push(format!(
                "line {}: stored {} {} ({}), recomputed {} {} ({})",
                i + 1,
                a.kind.as_str(),
                a.amount,
                a.description,
                b.kind.as_str(),
                b.amount,
                b.description
            )),
            (Some(a), None) => out.push(format!(
                "line {}: stored {} {} is not recomputed",
                i + 1,
                a.kind.as_str(),
                a.amount
            )),
            (None, Some(b)) => out.push(format!(
                "line {}: recomputed {} {} is not stored",
                i + 1,
                b.kind.as_str(),
                b.amount
            )),
            (None, None) => {}
        }
    }
    if stored.total != fresh.total {
        out.push(format!(
            "total: stored {}, recomputed {}",
            stored.total, fresh.total
        ));
    }
    if stored.settlement != fresh.settlement {
        let payable = |d: &Document| {
            d.settlement
                .as_ref()
                .map_or_else(|| "none".to_owned(), |s| s.amount_payable.to_string())
        };
        out.push(format!(
            "settlement (withholding, tax or payment terms): stored amount payable {}, recomputed {}",
            payable(stored),
            payable(fresh)
        ));
    }
    if out.is_empty() && stored != fresh {
        out.push("the header differs (period bounds, currency, rounding or cut-off)".into());
    }
    out
}
