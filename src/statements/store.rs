//! SQL for statements, their adjustments, and the ledger reads a statement needs (recorded
//! revenue and milestone events, and where late usage fell).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;

use super::calc::{ReferralEvent, RevenueEvent};
use super::model::{Document, Statement, Status, number_display};
use crate::db::{Db, Tx};
use crate::time::{from_micros, to_micros};
use crate::{with_db, with_tx};

/// The trigger's message when something tries to change an issued statement.
pub const IMMUTABLE: &str = "statement is issued and cannot change";

/// Whether a store error is the immutability trigger refusing a change.
pub fn is_immutable_refusal(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.message().contains(IMMUTABLE),
        _ => false,
    }
}

const COLUMNS: &str = "id, status, number, hash, document, computed_at_us, finalized_at_us, \
    finalized_by, voided_at_us, voided_by, void_reason, replaces, partner_id, \
    (SELECT r.id FROM statements r WHERE r.replaces = statements.id \
     ORDER BY r.computed_at_us DESC LIMIT 1)";

type Row = (
    String,
    String,
    Option<i64>,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

fn from_row(r: Row) -> anyhow::Result<Statement> {
    let (
        id,
        status,
        number,
        hash,
        document,
        computed,
        fin_at,
        fin_by,
        void_at,
        void_by,
        reason,
        replaces,
        partner,
        replaced_by,
    ) = r;
    let document: Document = serde_json::from_str(&document)?;
    Ok(Statement {
        status: Status::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("statement {id} has unknown status {status:?}"))?,
        id,
        number,
        number_display: number.map(|n| number_display(&partner, n)),
        hash,
        document,
        computed_at: from_micros(computed),
        finalized_at: fin_at.map(from_micros),
        finalized_by: fin_by,
        voided_at: void_at.map(from_micros),
        voided_by: void_by,
        void_reason: reason,
        replaces,
        replaced_by,
        settling: None,
    })
}

pub async fn get_statement(db: &Db, id: &str) -> anyhow::Result<Option<Statement>> {
    let sql = format!("SELECT {COLUMNS} FROM statements WHERE id = $1");
    let row: Option<Row> =
        with_db!(db, c => sqlx::query_as(&sql).bind(id).fetch_optional(c).await)?;
    row.map(from_row).transpose()
}

/// The draft or finalized statement of an agreement's period, if any (void ones are history).
pub async fn live_statement(
    db: &Db,
    agreement_id: &str,
    period: &str,
) -> anyhow::Result<Option<Statement>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM statements WHERE agreement_id = $1 AND period = $2 AND status <> 'void'"
    );
    let row: Option<Row> = with_db!(db, c => sqlx::query_as(&sql).bind(agreement_id).bind(period).fetch_optional(c).await)?;
    row.map(from_row).transpose()
}

/// The most recently voided statement of an agreement's period (a new draft replaces it).
pub async fn last_void(
    db: &Db,
    agreement_id: &str,
    period: &str,
) -> anyhow::Result<Option<String>> {
    let sql = "SELECT id FROM statements WHERE agreement_id = $1 AND period = $2 AND status = 'void' \
               ORDER BY voided_at_us DESC LIMIT 1";
    Ok(
        with_db!(db, c => sqlx::query_scalar(sql).bind(agreement_id).bind(period).fetch_optional(c).await)?,
    )
}

/// A finalized statement's place in its agreement's sequence.
#[derive(Debug, Clone)]
pub struct Issued {
    pub id: String,
    pub period: String,
    pub period_start_us: i64,
    pub ledger_as_of: DateTime<Utc>,
}

/// Delete a draft's adjustment; false when the statement has no such adjustment. The store
/// refuses it for an issued statement.
pub async fn delete_adjustment(
    tx: &mut Tx,
    statement_id: &str,
    adjustment_id: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "DELETE FROM statement_adjustments WHERE statement_id = $1 AND id = $2";
    let n = with_tx!(tx, c => sqlx::query(sql).bind(statement_id).bind(adjustment_id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Delete a draft with its adjustments; false when it is no longer a draft.
pub async fn delete_draft(tx: &mut Tx, id: &str) -> Result<bool, sqlx::Error> {
    with_tx!(tx, c => sqlx::query("DELETE FROM statement_adjustments WHERE statement_id = $1 \
        AND EXISTS (SELECT 1 FROM statements WHERE id = $1 AND status = 'draft')")
        .bind(id).execute(c).await.map(|r| r.rows_affected()))?;
    let n = with_tx!(tx, c => sqlx::query("DELETE FROM statements WHERE id = $1 AND status = 'draft'")
        .bind(id).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Finalized statements of an agreement, in period order.
pub async fn finalized_of_agreement(db: &Db, agreement_id: &str) -> anyhow::Result<Vec<Issued>> {
    let sql = "SELECT id, period, period_start_us, ledger_as_of_us FROM statements \
               WHERE agreement_id = $1 AND status = 'finalized' ORDER BY period_start_us";
    let rows: Vec<(String, String, i64, i64)> =
        with_db!(db, c => sqlx::query_as(sql).bind(agreement_id).fetch_all(c).await)?;
    Ok(rows
        .into_iter()
        .map(|(id, period, start, asof)| Issued {
            id,
            period,
            period_start_us: start,
            ledger_as_of: from_micros(asof),
        })
        .collect())
}

/// Filters for listing; `None` means any.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub partner: Option<String>,
    pub period: Option<String>,
    pub statuses: Vec<Status>,
    pub agreement: Option<String>,
}

/// Statements in list order (newest period first, then partner and agreement, then newest
/// computed first, ties by id), after the `after` position when given.
pub async fn list_statements(
    db: &Db,
    f: &ListFilter,
    after: Option<ListKey>,
    limit: i64,
) -> anyhow::Result<Vec<Statement>> {
    let statuses: Vec<&str> = if f.statuses.is_empty() {
        vec!["draft", "finalized", "void"]
    } else {
        f.statuses.iter().map(|s| s.as_str()).collect()
    };
    let (start, partner, agreement, computed, id) = match after {
        Some((a, b, c, d, e)) => (Some(a), Some(b), Some(c), Some(d), Some(e)),
        None => (None, None, None, None, None),
    };
    // Unused filters bind NULL, which the `IS NULL OR` terms read as "any". The position
    // term follows the ORDER BY, column by column, each in its own direction.
    let sql = format!(
        "SELECT {COLUMNS} FROM statements WHERE ($1 IS NULL OR partner_id = $1) \
         AND ($2 IS NULL OR period = $2) AND ($3 IS NULL OR agreement_id = $3) \
         AND status IN ('{}') \
         AND (CAST($4 AS BIGINT) IS NULL OR period_start_us < $4 OR (period_start_us = $4 AND ( \
              partner_id > $5 OR (partner_id = $5 AND ( \
              agreement_id > $6 OR (agreement_id = $6 AND ( \
              computed_at_us < $7 OR (computed_at_us = $7 AND statements.id < $8)))))))) \
         ORDER BY period_start_us DESC, partner_id, agreement_id, computed_at_us DESC, statements.id DESC LIMIT $9",
        statuses.join("', '")
    );
    let rows: Vec<Row> = with_db!(db, c => sqlx::query_as(&sql)
        .bind(f.partner.as_deref())
        .bind(f.period.as_deref())
        .bind(f.agreement.as_deref())
        .bind(start)
        .bind(partner.as_deref())
        .bind(agreement.as_deref())
        .bind(computed)
        .bind(id.as_deref())
        .bind(limit)
        .fetch_all(c)
        .await)?;
    rows.into_iter().map(from_row).collect()
}

/// A statement's place in list order: period start, partner, agreement, computed at, id.
pub type ListKey = (i64, String, String, i64, String);

pub fn list_key(s: &Statement) -> ListKey {
    (
        to_micros(s.document.period_start),
        s.document.partner_id.clone(),
        s.document.agreement_id.clone(),
        to_micros(s.computed_at),
        s.id.clone(),
    )
}

/// A new draft.
pub async fn insert_draft(
    tx: &mut Tx,
    id: &str,
    doc: &Document,
    computed_at: DateTime<Utc>,
    replaces: Option<&str>,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO statements (id, partner_id, agreement_id, agreement_version, period, \
               period_start_us, period_end_us, status, document, currency, total, provisional, \
               ledger_as_of_us, computed_at_us, replaces) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'draft', $8, $9, $10, $11, $12, $13, $14)";
    let document = serde_json::to_string(doc).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    with_tx!(tx, c => sqlx::query(sql)
        .bind(id)
        .bind(&doc.partner_id)
        .bind(&doc.agreement_id)
        .bind(i64::from(doc.agreement_version))
        .bind(&doc.period)
        .bind(to_micros(doc.period_start))
        .bind(to_micros(doc.period_end))
        .bind(&document)
        .bind(&doc.currency)
        .bind(doc.total.to_string())
        .bind(doc.provisional)
        .bind(to_micros(doc.ledger_as_of))
        .bind(to_micros(computed_at))
        .bind(replaces)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Replace a draft's content; false when it is no longer a draft.
pub async fn update_draft(
    tx: &mut Tx,
    id: &str,
    doc: &Document,
    computed_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE statements SET agreement_version = $2, document = $3, total = $4, \
               provisional = $5, ledger_as_of_us = $6, computed_at_us = $7 \
               WHERE id = $1 AND status = 'draft'";
    let document = serde_json::to_string(doc).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let n = with_tx!(tx, c => sqlx::query(sql)
        .bind(id)
        .bind(i64::from(doc.agreement_version))
        .bind(&document)
        .bind(doc.total.to_string())
        .bind(doc.provisional)
        .bind(to_micros(doc.ledger_as_of))
        .bind(to_micros(computed_at))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// The partner's next statement number (numbers are per partner, across agreements).
pub async fn next_number(tx: &mut Tx, partner_id: &str) -> Result<i64, sqlx::Error> {
    // Two instances finalizing two of one partner's statements at once take turns on the
    // partner's row, so both get a number instead of one failing on the unique key.
    // (SQLite has one writer at a time already.)
    if let Tx::Postgres(t) = tx {
        sqlx::query("SELECT id FROM partners WHERE id = $1 FOR UPDATE")
            .bind(partner_id)
            .execute(&mut **t)
            .await?;
    }
    let sql = "SELECT COALESCE(MAX(number), 0) + 1 FROM statements WHERE partner_id = $1";
    with_tx!(tx, c => sqlx::query_scalar::<_, i64>(sql).bind(partner_id).fetch_one(c).await)
}

/// The number the partner's next finalized statement will take (shown before finalizing;
/// the finalizing transaction takes it for real).
pub async fn peek_next_number(db: &Db, partner_id: &str) -> anyhow::Result<i64> {
    let sql = "SELECT COALESCE(MAX(number), 0) + 1 FROM statements WHERE partner_id = $1";
    Ok(with_db!(db, c => sqlx::query_scalar::<_, i64>(sql).bind(partner_id).fetch_one(c).await)?)
}

/// Finalize a draft; false when it is no longer a draft.
pub async fn finalize_statement(
    tx: &mut Tx,
    id: &str,
    number: i64,
    hash: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE statements SET status = 'finalized', number = $2, hash = $3, \
               finalized_by = $4, finalized_at_us = $5 WHERE id = $1 AND status = 'draft'";
    let n = with_tx!(tx, c => sqlx::query(sql)
        .bind(id)
        .bind(number)
        .bind(hash)
        .bind(by)
        .bind(to_micros(at))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Void a finalized statement; false when it is not finalized.
pub async fn void_statement(
    tx: &mut Tx,
    id: &str,
    reason: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE statements SET status = 'void', void_reason = $2, voided_by = $3, \
               voided_at_us = $4 WHERE id = $1 AND status = 'finalized'";
    let n = with_tx!(tx, c => sqlx::query(sql)
        .bind(id)
        .bind(reason)
        .bind(by)
        .bind(to_micros(at))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// A manual line on a draft.
#[derive(Debug, Clone)]
pub struct Adjustment {
    pub id: String,
    pub amount: Decimal,
    pub reason: String,
    pub author: String,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_adjustment(
    tx: &mut Tx,
    statement_id: &str,
    a: &Adjustment,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO statement_adjustments (id, statement_id, amount, reason, author, created_at_us) \
               VALUES ($1, $2, $3, $4, $5, $6)";
    with_tx!(tx, c => sqlx::query(sql)
        .bind(&a.id)
        .bind(statement_id)
        .bind(a.amount.to_string())
        .bind(&a.reason)
        .bind(&a.author)
        .bind(to_micros(a.created_at))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn adjustments(db: &Db, statement_id: &str) -> anyhow::Result<Vec<Adjustment>> {
    let sql = "SELECT id, amount, reason, author, created_at_us FROM statement_adjustments \
               WHERE statement_id = $1 ORDER BY created_at_us, id";
    let rows: Vec<(String, String, String, String, i64)> =
        with_db!(db, c => sqlx::query_as(sql).bind(statement_id).fetch_all(c).await)?;
    rows.into_iter()
        .map(|(id, amount, reason, author, at)| {
            Ok(Adjustment {
                amount: Decimal::from_str(&amount)
                    .map_err(|e| anyhow::anyhow!("adjustment {id} amount {amount:?}: {e}"))?,
                id,
                reason,
                author,
                created_at: from_micros(at),
            })
        })
        .collect()
}

/// An issued statement's stored content, for the integrity check.
#[derive(sqlx::FromRow)]
pub struct IssuedContent {
    pub id: String,
    pub partner_id: String,
    pub number: Option<i64>,
    pub hash: Option<String>,
    pub document: String,
}

/// Every finalized or void statement's number, hash and document as stored.
pub async fn issued_contents(db: &Db) -> anyhow::Result<Vec<IssuedContent>> {
    let sql = "SELECT id, partner_id, number, hash, document FROM statements \
               WHERE status <> 'draft' ORDER BY id";
    Ok(with_db!(db, c => sqlx::query_as(sql).fetch_all(c).await)?)
}

// ---- ledger reads ----

/// Where and when to read: a partner's events dated in `[start, end)` that the ledger had
/// received by `as_of`.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a> {
    pub partner_id: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub as_of: DateTime<Utc>,
    /// Leave out the events the partner reported itself (its own key, its untrusted
    /// webhook sources): the agreement does not count its word for money.
    pub exclude_self_reported: bool,
}

/// `AND` condition leaving out self-reported events; the same text as the partial index
/// `usage_events_self_reported`, negated.
const NOT_SELF_REPORTED: &str = " AND recorded_by NOT IN ('partner_key', 'partner_webhook')";

/// Who recorded an event: the stored (kind, reference).
pub type Recorded = (String, Option<String>);

/// One event read for a statement, with who recorded it.
type EventRow = (String, String, Option<String>, String, Option<String>);

/// Events of `types` in the span: (event id, type, data, recorded by, reference), in
/// event id order.
async fn events_with_data(
    db: &Db,
    span: Span<'_>,
    types: &[String],
) -> anyhow::Result<Vec<EventRow>> {
    if types.is_empty() {
        return Ok(Vec::new());
    }
    let own = if span.exclude_self_reported {
        NOT_SELF_REPORTED
    } else {
        ""
    };
    let where_ = format!(
        "WHERE partner_id = $1 AND time_us >= $2 AND time_us < $3 AND received_at_us <= $4{own}"
    );
    let (from, to, as_of) = (
        to_micros(span.start),
        to_micros(span.end),
        to_micros(span.as_of),
    );
    let rows = match db {
        Db::Sqlite(c) => {
            let sql = format!(
                "SELECT event_id, type, data, recorded_by, recorded_ref FROM usage_events {where_} \
                 AND type IN (SELECT value FROM json_each($5)) ORDER BY event_id, source"
            );
            sqlx::query_as(&sql)
                .bind(span.partner_id)
                .bind(from)
                .bind(to)
                .bind(as_of)
                .bind(serde_json::to_string(types)?)
                .fetch_all(c)
                .await?
        }
        Db::Postgres(c) => {
            let sql = format!(
                "SELECT event_id, type, data::text, recorded_by, recorded_ref FROM usage_events {where_} \
                 AND type = ANY($5::text[]) ORDER BY event_id, source"
            );
            // Unprepared: partners differ 100x in size, and a generic plan reused across them
            // (PostgreSQL switches after five runs) suits none of them.
            sqlx::query_as(&sql)
                .persistent(false)
                .bind(span.partner_id)
                .bind(from)
                .bind(to)
                .bind(as_of)
                .bind(types)
                .fetch_all(c)
                .await?
        }
    };
    Ok(rows)
}

/// A bad event found while reading the ledger for a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEvent {
    pub event_id: String,
    pub reason: String,
}

fn data_of(data: Option<&str>) -> Value {
    data.and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null)
}

/// `revenue.recognized` events in the span. Shapes were checked at ingest; an event that
/// still does not read is reported rather than skipped, so no revenue goes missing quietly.
pub async fn revenue_events(
    db: &Db,
    span: Span<'_>,
) -> anyhow::Result<Result<Vec<(RevenueEvent, Recorded)>, BadEvent>> {
    let types = [super::events::REVENUE_RECOGNIZED.to_owned()];
    let mut out = Vec::new();
    for (id, _, data, by, by_ref) in events_with_data(db, span, &types).await? {
        match super::events::revenue(&data_of(data.as_deref())) {
            Ok(r) => out.push((
                RevenueEvent {
                    id,
                    product: r.product,
                    customer: r.customer,
                    invoice: r.invoice,
                    currency: r.currency,
                    amount: r.amount,
                },
                (by, by_ref),
            )),
            Err(reason) => {
                return Ok(Err(BadEvent {
                    event_id: id,
                    reason,
                }));
            }
        }
    }
    Ok(Ok(out))
}

/// Milestone events of `types` in the span.
pub async fn referral_events(
    db: &Db,
    span: Span<'_>,
    types: &[String],
) -> anyhow::Result<Result<Vec<(ReferralEvent, Recorded)>, BadEvent>> {
    let mut out = Vec::new();
    for (id, event_type, data, by, by_ref) in events_with_data(db, span, types).await? {
        match super::events::referral(&data_of(data.as_deref())) {
            Ok(r) => out.push((
                ReferralEvent {
                    id,
                    event_type,
                    customer: r.customer,
                    contract_value: r.contract_value,
                    currency: r.currency,
                },
                (by, by_ref),
            )),
            Err(reason) => {
                return Ok(Err(BadEvent {
                    event_id: id,
                    reason,
                }));
            }
        }
    }
    Ok(Ok(out))
}

/// Whether the partner reported any event itself in the span (by its cut-off). Answered
/// from the small partial index `usage_events_self_reported`, so an agreement that leaves
/// them out filters only when there is something to leave out.
pub async fn has_self_reported(db: &Db, span: Span<'_>) -> anyhow::Result<bool> {
    let sql = "SELECT EXISTS (SELECT 1 FROM usage_events WHERE partner_id = $1 \
               AND time_us >= $2 AND time_us < $3 \
               AND recorded_by IN ('partner_key', 'partner_webhook') AND received_at_us <= $4)";
    let found: bool = with_db!(db, c => sqlx::query_scalar(sql)
        .persistent(false)
        .bind(span.partner_id)
        .bind(to_micros(span.start))
        .bind(to_micros(span.end))
        .bind(to_micros(span.as_of))
        .fetch_one(c)
        .await)?;
    Ok(found)
}

/// When the ledger began keeping provenance (migration 0011): events received before it
/// read `legacy`.
pub async fn provenance_since(db: &Db) -> anyhow::Result<Option<DateTime<Utc>>> {
    let since: Option<i64> = with_db!(db, c => sqlx::query_scalar(
        "SELECT MIN(since_us) FROM ledger_provenance").fetch_one(c).await)?;
    Ok(since.map(from_micros))
}

/// How many events of each type each recorder wrote in the span (by its cut-off when
/// `cutoff`): what the usage lines of a statement show as their provenance.
///
/// With `gateway_from_index` (the caller knows the span holds no event from before
/// provenance was kept), one pass over the covering index `(partner_id, time_us, type, ...)`
/// counts every type without reading rows, and the gateway's own types are the gateway's
/// (the write rules let nobody else record them); only the other types present (revenue,
/// milestones, the app's) are read row by row, by type, as the revenue lines are.
pub async fn recorded_by_type(
    db: &Db,
    span: Span<'_>,
    cutoff: bool,
    gateway_from_index: bool,
) -> anyhow::Result<Vec<(String, String, Option<String>, i64)>> {
    let own = if span.exclude_self_reported {
        NOT_SELF_REPORTED
    } else {
        ""
    };
    let cut = if cutoff {
        " AND received_at_us <= $4"
    } else {
        ""
    };
    let range = format!("partner_id = $1 AND time_us >= $2 AND time_us < $3{cut}");
    let next = if cutoff { 5 } else { 4 };
    // The span's binds: partner, start, end, and the cut-off when the SQL has one.
    macro_rules! span_query {
        ($sql:expr) => {{
            let q = sqlx::query_as($sql)
                .persistent(false)
                .bind(span.partner_id)
                .bind(to_micros(span.start))
                .bind(to_micros(span.end));
            if cutoff {
                q.bind(to_micros(span.as_of))
            } else {
                q
            }
        }};
    }
    if !gateway_from_index {
        let sql = format!(
            "SELECT type, recorded_by, recorded_ref, COUNT(*) FROM usage_events \
             WHERE {range}{own} GROUP BY type, recorded_by, recorded_ref"
        );
        return Ok(with_db!(db, c => span_query!(&sql).fetch_all(c).await)?);
    }
    let sql = format!("SELECT type, COUNT(*) FROM usage_events WHERE {range} GROUP BY type");
    let counts: Vec<(String, i64)> = with_db!(db, c => span_query!(&sql).fetch_all(c).await)?;
    let mut rows: Vec<(String, String, Option<String>, i64)> = Vec::new();
    let mut types: Vec<String> = Vec::new();
    for (t, n) in counts {
        if crate::metering::authority::is_gateway_type(&t) {
            rows.push((t, "gateway".to_owned(), None, n));
        } else {
            types.push(t);
        }
    }
    if types.is_empty() {
        return Ok(rows);
    }
    let by = "GROUP BY type, recorded_by, recorded_ref";
    let more: Vec<(String, String, Option<String>, i64)> = match db {
        Db::Sqlite(c) => {
            let sql = format!(
                "SELECT type, recorded_by, recorded_ref, COUNT(*) FROM usage_events \
                 WHERE {range} AND type IN (SELECT value FROM json_each(${next})){own} {by}"
            );
            span_query!(&sql)
                .bind(serde_json::to_string(&types)?)
                .fetch_all(c)
                .await?
        }
        Db::Postgres(c) => {
            let sql = format!(
                "SELECT type, recorded_by, recorded_ref, COUNT(*) FROM usage_events \
                 WHERE {range} AND type = ANY(${next}::text[]){own} {by}"
            );
            span_query!(&sql).bind(&types).fetch_all(c).await?
        }
    };
    rows.extend(more);
    Ok(rows)
}

/// Events of a partner dated in `[$3, $4)` that the ledger received after `$2`.
// `+time_us`: SQLite otherwise rates both indexes alike and seeks the one whose range
// holds the partner's whole month, reading every row to test the arrival time.
const ARRIVED_AFTER: &str =
    "partner_id = $1 AND received_at_us > $2 AND +time_us >= $3 AND +time_us < $4";

/// Whether any event dated in the span arrived after its cut-off. Usually none has (the
/// period ended long before), and then a meter can be read without the cut-off condition,
/// from the covering index alone.
pub async fn arrived_after(db: &Db, span: Span<'_>) -> anyhow::Result<bool> {
    arrived_after_scalar(
        db,
        span,
        "SELECT EXISTS (SELECT 1 FROM usage_events WHERE {})",
    )
    .await
}

/// How many events dated in the span the ledger received after its cut-off.
pub async fn count_arrived_after(db: &Db, span: Span<'_>) -> anyhow::Result<i64> {
    arrived_after_scalar(db, span, "SELECT COUNT(*) FROM usage_events WHERE {}").await
}

/// One value over the events of the span that arrived after its cut-off: `select` with
/// `{}` where the condition goes.
async fn arrived_after_scalar<T>(db: &Db, span: Span<'_>, select: &str) -> anyhow::Result<T>
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    // Unprepared, so PostgreSQL plans it with this partner's values (see events_with_data).
    let sql = select.replace("{}", ARRIVED_AFTER);
    let value: T = with_db!(db, c => sqlx::query_scalar(&sql)
        .persistent(false)
        .bind(span.partner_id)
        .bind(to_micros(span.as_of))
        .bind(to_micros(span.start))
        .bind(to_micros(span.end))
        .fetch_one(c)
        .await)?;
    Ok(value)
}

/// The earliest and latest event time among events dated in `[from, before)` that the
/// ledger received in `(after, upto]`: where late usage fell, if anywhere.
pub async fn late_usage_span(
    db: &Db,
    partner_id: &str,
    from: DateTime<Utc>,
    before: DateTime<Utc>,
    after: DateTime<Utc>,
    upto: DateTime<Utc>,
) -> anyhow::Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    // `+received_at_us`: keeps SQLite on the (partner, time) index; everything received since
    // the last cut-off is a whole month, the late events' dates are a narrow range.
    let sql = "SELECT MIN(time_us), MAX(time_us) FROM usage_events WHERE partner_id = $1 \
               AND time_us >= $2 AND time_us < $3 \
               AND +received_at_us > $4 AND +received_at_us <= $5";
    let (lo, hi): (Option<i64>, Option<i64>) = with_db!(db, c => sqlx::query_as(sql)
        .persistent(false)
        .bind(partner_id)
        .bind(to_micros(from))
        .bind(to_micros(before))
        .bind(to_micros(after))
        .bind(to_micros(upto))
        .fetch_one(c)
        .await)?;
    Ok(lo.zip(hi).map(|(l, h)| (from_micros(l), from_micros(h))))
}
