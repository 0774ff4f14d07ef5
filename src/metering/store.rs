//! SQL for the usage ledger.
//!
//! A batch is written with one statement per backend: SQLite expands a JSON array with
//! `json_each`, PostgreSQL expands typed arrays with `UNNEST`. The unique key
//! (partner_id, source, event_id) with `ON CONFLICT DO NOTHING` is what makes a retried
//! event a duplicate instead of a second count, across restarts and instances alike.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;

use super::UsageEvent;
use super::authority::Recorder;
use super::meter::{Aggregation, Field, Meter, Scalar, TypePattern};
use super::subject::Subjects;
use super::window::Window;
use crate::db::{Db, Tx};
use crate::time::to_micros;

// `sandbox` comes from the partner's row (one primary-key probe per event), never from the
// event itself, so every entry path marks a sandbox partner's events and no client can.
const INSERT_SQLITE: &str = "INSERT INTO usage_events \
    (partner_id, source, event_id, type, subject, time_us, data, extensions, received_at_us, sandbox, \
     recorded_by, recorded_ref, subject_form) \
    SELECT value->>'p', value->>'s', value->>'i', value->>'t', value->>'u', value->>'m', \
           value->'d', value->'x', $2, \
           EXISTS (SELECT 1 FROM partners pa WHERE pa.id = value->>'p' AND pa.sandbox), $3, $4, 1 \
    FROM json_each($1) WHERE true \
    ON CONFLICT (partner_id, source, event_id) DO NOTHING";

/// The PostgreSQL insert: typed arrays through `UNNEST`, the receipt time and recorder per
/// row (one statement may carry several writers' events, `super::pg_group`), and the keys
/// stored returned so each writer learns which of its events were new.
const INSERT_POSTGRES: &str = "INSERT INTO usage_events \
    (partner_id, source, event_id, type, subject, time_us, data, extensions, received_at_us, sandbox, \
     recorded_by, recorded_ref, subject_form) \
    SELECT p, s, i, t, u, m, d::jsonb, x::jsonb, r, \
           EXISTS (SELECT 1 FROM partners pa WHERE pa.id = e.p AND pa.sandbox), b, f, 1 \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], \
                $9::bigint[], $10::text[], $11::text[]) \
         AS e(p, s, i, t, u, m, d, x, r, b, f) \
    ON CONFLICT (partner_id, source, event_id) DO NOTHING \
    RETURNING partner_id, source, event_id";

/// Insert events inside the caller's transaction; returns how many were new (the rest were
/// already in the ledger, or repeated within the batch). `recorder` is kept with each event
/// (`recorded_by`, `recorded_ref`): who wrote it is part of what a statement shows. Each
/// subject is stored as its pseudonym (`super::subject`).
pub async fn insert_usage_events(
    tx: &mut Tx,
    subjects: &Subjects,
    mut events: Vec<UsageEvent>,
    recorder: &Recorder,
    received_at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    check_recorder(&events, recorder)?;
    subjects.apply(&mut events);
    match tx {
        Tx::Sqlite(t) => insert_sqlite(t, &events, recorder, received_at).await,
        Tx::Postgres(t) => {
            let part = [GroupPart {
                events: &events,
                recorder,
                received_at,
            }];
            Ok(insert_postgres(&mut **t, &part).await?.len() as u64)
        }
    }
}

/// Store a batch that is a change of its own (the ingest API, the importer, the gateway's
/// batched recorder): the same rows and rules as [`insert_usage_events`], committed before
/// this returns. On PostgreSQL concurrent writers share one self-committing statement
/// (`super::pg_group`: no BEGIN and COMMIT round trips, one WAL flush for many); SQLite
/// goes through the shared group commit.
pub async fn store_usage_events(
    db: &Db,
    subjects: &Subjects,
    mut events: Vec<UsageEvent>,
    recorder: Recorder,
    received_at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    check_recorder(&events, &recorder)?;
    match db {
        Db::Postgres(pool) => {
            subjects.apply(&mut events);
            super::pg_group::store(pool, events, recorder, received_at).await
        }
        Db::Sqlite(_) => {
            let mut tx = db.begin().await?;
            let accepted =
                insert_usage_events(&mut tx, subjects, events, &recorder, received_at).await?;
            tx.commit().await?;
            Ok(accepted)
        }
    }
}

/// One writer's part of a grouped PostgreSQL insert.
pub struct GroupPart<'a> {
    pub events: &'a [UsageEvent],
    pub recorder: &'a Recorder,
    pub received_at: DateTime<Utc>,
}

/// Insert the parts of several writers in one self-committing statement; returns the keys
/// (partner, source, id) that were new.
pub async fn insert_postgres_group(
    pool: &sqlx::PgPool,
    parts: &[GroupPart<'_>],
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    insert_postgres(pool, parts).await
}

/// The PostgreSQL insert, on a transaction's connection or straight on the pool.
async fn insert_postgres<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    parts: &[GroupPart<'_>],
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let n: usize = parts.iter().map(|p| p.events.len()).sum();
    let mut cols: (Vec<&str>, Vec<&str>, Vec<&str>, Vec<&str>) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut u, mut m, mut d, mut x) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut r, mut b, mut f) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for part in parts {
        let received = to_micros(part.received_at);
        for e in part.events {
            cols.0.push(e.partner_id.as_str());
            cols.1.push(e.source.as_str());
            cols.2.push(e.id.as_str());
            cols.3.push(e.event_type.as_str());
            u.push(e.subject.as_deref());
            m.push(to_micros(e.time));
            d.push(e.data.as_ref().map(Value::to_string));
            x.push(
                e.extensions
                    .as_ref()
                    .map(|m| Value::Object(m.clone()).to_string()),
            );
            r.push(received);
            b.push(part.recorder.kind());
            f.push(part.recorder.reference());
        }
    }
    sqlx::query_as(INSERT_POSTGRES)
        .bind(cols.0)
        .bind(cols.1)
        .bind(cols.2)
        .bind(cols.3)
        .bind(u)
        .bind(m)
        .bind(d)
        .bind(x)
        .bind(r)
        .bind(b)
        .bind(f)
        .fetch_all(conn)
        .await
}

/// The write rules, held at the last door too: statements count the gateway's own types as
/// the gateway's without reading each row.
fn check_recorder(events: &[UsageEvent], recorder: &Recorder) -> Result<(), sqlx::Error> {
    if *recorder != Recorder::Gateway
        && let Some(e) = events
            .iter()
            .find(|e| super::authority::is_gateway_type(&e.event_type))
    {
        return Err(sqlx::Error::InvalidArgument(format!(
            "event type {:?} is recorded only by the gateway itself, not by {}",
            e.event_type,
            recorder.kind()
        )));
    }
    Ok(())
}

async fn insert_sqlite(
    conn: &mut sqlx::SqliteConnection,
    events: &[UsageEvent],
    recorder: &Recorder,
    received_at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut row = json!({
                "p": e.partner_id, "s": e.source, "i": e.id, "t": e.event_type,
                "u": e.subject, "m": to_micros(e.time),
            });
            // Absent keys read as SQL NULL; a JSON null would be stored as 'null'.
            if let Some(d) = &e.data {
                row["d"] = d.clone();
            }
            if let Some(x) = &e.extensions {
                row["x"] = Value::Object(x.clone());
            }
            row
        })
        .collect();
    let batch = Value::Array(rows).to_string();
    Ok(sqlx::query(INSERT_SQLITE)
        .bind(batch)
        .bind(to_micros(received_at))
        .bind(recorder.kind())
        .bind(recorder.reference())
        .execute(conn)
        .await?
        .rows_affected())
}

/// Record one of the gateway's own events inside the transaction of the change that caused
/// it (a launch, a grade post), so the event exists if and only if the change was committed.
/// Returns false when the ledger already holds an event with this (partner, source, id).
pub async fn record_usage_event(
    tx: &mut Tx,
    subjects: &Subjects,
    event: UsageEvent,
) -> Result<bool, sqlx::Error> {
    Ok(insert_usage_events(tx, subjects, vec![event], &Recorder::Gateway, Utc::now()).await? == 1)
}

/// One result row: the window's index, the group values, and the aggregated value.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub window: usize,
    pub group: Vec<Option<String>>,
    pub value: Value,
}

#[derive(Clone, Copy)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// SQL text of a field, as text (for grouping and value parsing).
    fn text(self, f: &Field) -> String {
        match f {
            Field::Subject => "e.subject".into(),
            Field::Source => "e.source".into(),
            Field::Type => "e.type".into(),
            // Path segments are validated to [A-Za-z0-9_-] when the meter is compiled.
            Field::Data(path) => match self {
                Dialect::Sqlite => format!("CAST(e.data ->> '$.{}' AS TEXT)", path.join(".")),
                Dialect::Postgres => format!("(e.data #>> '{{{}}}')", path.join(",")),
            },
        }
    }

    /// SQL that is true when the event's field equals `v`, false when it holds something
    /// else, and NULL when the event lacks it. Booleans and integers are written as literals;
    /// a string is the bind `$n` (pushed to `binds`). A data field matches only a JSON
    /// value of the same kind (`"404"` is not `404`), alike on both backends.
    fn equals(self, f: &Field, v: &Scalar, next: &mut usize, binds: &mut Vec<String>) -> String {
        let mut bind = |t: &str| {
            binds.push(t.to_owned());
            *next += 1;
            format!("${}", *next - 1)
        };
        let data = match f {
            Field::Data(path) => path,
            Field::Subject | Field::Source | Field::Type => {
                return match v {
                    Scalar::Text(t) => format!("{} = {}", self.text(f), bind(t)),
                    // Refused when the meter is compiled: a text field never equals these.
                    Scalar::Bool(_) | Scalar::Int(_) => "FALSE".to_owned(),
                };
            }
        };
        match self {
            Dialect::Sqlite => {
                let at = format!("e.data, '$.{}'", data.join("."));
                match v {
                    Scalar::Bool(b) => format!("json_type({at}) = '{b}'"),
                    Scalar::Int(i) => format!(
                        "(json_type({at}) IN ('integer', 'real') AND json_extract({at}) = {i})"
                    ),
                    Scalar::Text(t) => {
                        format!(
                            "(json_type({at}) = 'text' AND json_extract({at}) = {})",
                            bind(t)
                        )
                    }
                }
            }
            Dialect::Postgres => {
                let at = format!("(e.data #> '{{{}}}')", data.join(","));
                match v {
                    Scalar::Bool(b) => format!("{at} = '{b}'::jsonb"),
                    // jsonb compares numbers as numbers: 404 equals 404.0, as in SQLite.
                    Scalar::Int(i) => format!("{at} = '{i}'::jsonb"),
                    Scalar::Text(t) => format!("{at} = to_jsonb({}::text)", bind(t)),
                }
            }
        }
    }

    /// ` AND NOT ...`: the meter's `exclude`, or nothing. An event lacking a field is kept
    /// (`COALESCE`): events recorded before a field existed count as they always did.
    fn exclusion(self, meter: &Meter, next: &mut usize, binds: &mut Vec<String>) -> String {
        let terms: Vec<String> = meter
            .exclude
            .iter()
            .flat_map(|(f, values)| values.iter().map(move |v| (f, v)))
            .map(|(f, v)| self.equals(f, v, next, binds))
            .collect();
        if terms.is_empty() {
            return String::new();
        }
        format!(" AND NOT COALESCE(({}), FALSE)", terms.join(") OR ("))
    }

    /// SQL of a field as JSON text (for LATEST, which returns the value as it was sent).
    fn json(self, f: &Field) -> String {
        match (self, f) {
            (Dialect::Sqlite, Field::Data(path)) => format!("(e.data -> '$.{}')", path.join(".")),
            (Dialect::Postgres, Field::Data(path)) => {
                format!("((e.data #> '{{{}}}')::text)", path.join(","))
            }
            (Dialect::Sqlite, other) => format!("json_quote({})", self.text(other)),
            (Dialect::Postgres, other) => format!("(to_jsonb({})::text)", self.text(other)),
        }
    }
}

/// Windows below this many are queried on one connection; above it the windows are split
/// into contiguous runs queried at once on several pooled connections (each window's value
/// depends on its own rows only, so the runs are independent). A month by day of
/// UNIQUE_COUNT over a million events is CPU-bound in the database, so this divides its
/// latency by the cores available.
const PARALLEL_FROM_WINDOWS: usize = 8;

/// Run a meter over the windows for one partner (its `exclude` applied in the SQL). COUNT
/// and UNIQUE_COUNT aggregate in SQL (exact on both backends); SUM, MAX and LATEST fold in
/// Rust with exact decimals, so both backends give the same figures. Buckets come back ordered by window. With `received_by`,
/// only events the ledger had received by then count (a statement's cut-off).
pub async fn query_meter(
    db: &Db,
    partner_id: &str,
    meter: &Meter,
    windows: &[Window],
    group_by: &[Field],
    received_by: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<Bucket>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runs = cores.clamp(1, 4);
    if windows.len() < PARALLEL_FROM_WINDOWS || runs == 1 {
        return query_meter_run(db, partner_id, meter, windows, group_by, received_by).await;
    }
    let per_run = windows.len().div_ceil(runs);
    let mut tasks = tokio::task::JoinSet::new();
    for (n, chunk) in windows.chunks(per_run).enumerate() {
        let (db, partner, meter, chunk, group_by) = (
            db.clone(),
            partner_id.to_owned(),
            meter.clone(),
            chunk.to_vec(),
            group_by.to_vec(),
        );
        tasks.spawn(async move {
            let buckets =
                query_meter_run(&db, &partner, &meter, &chunk, &group_by, received_by).await;
            (n, buckets)
        });
    }
    let mut parts = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (n, buckets) = done?;
        parts.push((n, buckets?));
    }
    parts.sort_by_key(|(n, _)| *n);
    Ok(parts
        .into_iter()
        .flat_map(|(n, buckets)| {
            buckets.into_iter().map(move |mut b| {
                b.window += n * per_run;
                b
            })
        })
        .collect())
}

/// One run of contiguous windows on one connection.
async fn query_meter_run(
    db: &Db,
    partner_id: &str,
    meter: &Meter,
    windows: &[Window],
    group_by: &[Field],
    received_by: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<Bucket>> {
    let raw = meter_rows(db, partner_id, meter, windows, group_by, received_by, false).await?;
    Ok(super::query::fold(meter.aggregation, raw))
}

/// A meter's exact value over one window, ungrouped, as a decimal (statements price it;
/// the JSON form of a fractional SUM would pass through f64). LATEST is not a number and
/// reads as zero; config refuses LATEST meters in agreements. With `exclude_self_reported`,
/// events the partner reported itself do not count (an agreement that does not take its
/// word for money).
pub async fn meter_value(
    db: &Db,
    partner_id: &str,
    meter: &Meter,
    window: Window,
    received_by: Option<DateTime<Utc>>,
    exclude_self_reported: bool,
) -> anyhow::Result<rust_decimal::Decimal> {
    use rust_decimal::Decimal;
    let rows = meter_rows(
        db,
        partner_id,
        meter,
        &[window],
        &[],
        received_by,
        exclude_self_reported,
    )
    .await?;
    let values = rows
        .iter()
        .filter_map(|r| r.value.as_deref().and_then(super::query::parse_decimal));
    Ok(match meter.aggregation {
        Aggregation::Count | Aggregation::UniqueCount => {
            rows.iter().filter_map(|r| r.count).map(Decimal::from).sum()
        }
        Aggregation::Sum => values.sum(),
        Aggregation::Max => values.max().unwrap_or(Decimal::ZERO),
        Aggregation::Latest => Decimal::ZERO,
    })
}

/// The rows of a meter query: aggregated in SQL (COUNT, UNIQUE_COUNT) or one per event.
async fn meter_rows(
    db: &Db,
    partner_id: &str,
    meter: &Meter,
    windows: &[Window],
    group_by: &[Field],
    received_by: Option<DateTime<Utc>>,
    exclude_self_reported: bool,
) -> anyhow::Result<Vec<RawRow>> {
    let dialect = match db {
        Db::Sqlite(_) => Dialect::Sqlite,
        Db::Postgres(_) => Dialect::Postgres,
    };
    // Parameters: $1 partner, then windows ($2 on SQLite as JSON; $2, $3 on PostgreSQL),
    // then the exact types, then one per prefix.
    let mut next = match dialect {
        Dialect::Sqlite => 3,
        Dialect::Postgres => 4,
    };
    let exact: Vec<&str> = meter
        .event_types
        .iter()
        .filter_map(|t| match t {
            TypePattern::Exact(s) => Some(s.as_str()),
            TypePattern::Prefix(_) => None,
        })
        .collect();
    let prefixes: Vec<&str> = meter
        .event_types
        .iter()
        .filter_map(|t| match t {
            TypePattern::Prefix(s) => Some(s.as_str()),
            TypePattern::Exact(_) => None,
        })
        .collect();
    let mut type_terms = Vec::new();
    if !exact.is_empty() {
        type_terms.push(match dialect {
            Dialect::Sqlite => format!("e.type IN (SELECT value FROM json_each(${next}))"),
            Dialect::Postgres => format!("e.type = ANY(${next}::text[])"),
        });
        next += 1;
    }
    for p in &prefixes {
        type_terms.push(format!(
            "substr(e.type, 1, {}) = ${next}",
            p.chars().count()
        ));
        next += 1;
    }
    // The meter's `exclude` strings are bound next, then the cut-off.
    let mut exclude_binds: Vec<String> = Vec::new();
    let exclusion = dialect.exclusion(meter, &mut next, &mut exclude_binds);
    let mut cutoff = match received_by {
        Some(_) => format!("{exclusion} AND e.received_at_us <= ${next}"),
        None => exclusion,
    };
    if exclude_self_reported {
        // The kinds of `authority::SELF_REPORTED_KINDS`, as literals (no bind to count).
        cutoff.push_str(" AND e.recorded_by NOT IN ('partner_key', 'partner_webhook')");
    }
    let windows_cte = match dialect {
        Dialect::Sqlite => {
            "w(idx, ws, we) AS (SELECT key, value->>0, value->>1 FROM json_each($2))"
        }
        Dialect::Postgres => {
            "w(idx, ws, we) AS (SELECT ord - 1, s, e FROM UNNEST($2::bigint[], $3::bigint[]) \
             WITH ORDINALITY AS t(s, e, ord))"
        }
    };
    let groups: Vec<String> = group_by.iter().map(|g| dialect.text(g)).collect();
    let group_cols: String = groups.iter().map(|g| format!(", {g}")).collect();
    let from = format!(
        "FROM w JOIN usage_events e ON e.partner_id = $1 AND e.time_us >= w.ws AND e.time_us < w.we \
         WHERE ({}){cutoff}",
        type_terms.join(" OR ")
    );
    let group_positions: String = (0..groups.len()).map(|i| format!(", {}", i + 2)).collect();
    let in_sql = matches!(
        meter.aggregation,
        Aggregation::Count | Aggregation::UniqueCount
    );
    let value_field = meter.value.clone().unwrap_or(Field::Subject);
    let sql = if in_sql {
        let agg = match meter.aggregation {
            Aggregation::Count => "COUNT(*)".to_owned(),
            // Distinct over the text form, so both backends agree on what "the same" is.
            _ => format!("COUNT(DISTINCT {})", dialect.text(&value_field)),
        };
        format!(
            "WITH {windows_cte} SELECT w.idx{group_cols}, {agg} {from} GROUP BY 1{group_positions} ORDER BY 1{group_positions}"
        )
    } else {
        let value = match meter.aggregation {
            Aggregation::Latest => dialect.json(&value_field),
            _ => dialect.text(&value_field),
        };
        format!(
            "WITH {windows_cte} SELECT w.idx{group_cols}, {value}, e.time_us, e.seq {from} \
             ORDER BY 1{group_positions}, e.time_us, e.seq"
        )
    };

    let starts: Vec<i64> = windows.iter().map(|w| to_micros(w.start)).collect();
    let ends: Vec<i64> = windows.iter().map(|w| to_micros(w.end)).collect();
    let ngroups = groups.len();

    let raw: Vec<RawRow> = match db {
        Db::Sqlite(pool) => {
            let pairs: Vec<[i64; 2]> = starts.iter().zip(&ends).map(|(s, e)| [*s, *e]).collect();
            let mut q = sqlx::query(&sql)
                .bind(partner_id)
                .bind(serde_json::to_string(&pairs)?);
            if !exact.is_empty() {
                q = q.bind(serde_json::to_string(&exact)?);
            }
            for p in &prefixes {
                q = q.bind(*p);
            }
            for b in &exclude_binds {
                q = q.bind(b);
            }
            if let Some(t) = received_by {
                q = q.bind(to_micros(t));
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter()
                .map(|r| RawRow::read(r, ngroups, in_sql))
                .collect::<Result<_, _>>()?
        }
        Db::Postgres(pool) => {
            // Unprepared: a generic plan (PostgreSQL's choice after five runs of one prepared
            // statement) fits neither a partner with a hundred events nor one with millions.
            let mut q = sqlx::query(&sql)
                .persistent(false)
                .bind(partner_id)
                .bind(&starts)
                .bind(&ends);
            if !exact.is_empty() {
                q = q.bind(&exact);
            }
            for p in &prefixes {
                q = q.bind(*p);
            }
            for b in &exclude_binds {
                q = q.bind(b);
            }
            if let Some(t) = received_by {
                q = q.bind(to_micros(t));
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter()
                .map(|r| RawRow::read(r, ngroups, in_sql))
                .collect::<Result<_, _>>()?
        }
    };
    Ok(raw)
}

/// A row as read from either backend.
#[derive(Debug, Clone)]
pub struct RawRow {
    pub window: usize,
    pub group: Vec<Option<String>>,
    /// COUNT / UNIQUE_COUNT: the aggregate. Otherwise the event's value as text.
    pub count: Option<i64>,
    pub value: Option<String>,
}

impl RawRow {
    fn read<R>(row: &R, ngroups: usize, aggregated: bool) -> Result<Self, sqlx::Error>
    where
        R: Row,
        usize: sqlx::ColumnIndex<R>,
        i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let idx: i64 = row.try_get(0)?;
        let mut group = Vec::with_capacity(ngroups);
        for i in 0..ngroups {
            group.push(row.try_get::<Option<String>, _>(1 + i)?);
        }
        let (count, value) = if aggregated {
            (Some(row.try_get::<i64, _>(1 + ngroups)?), None)
        } else {
            (None, row.try_get::<Option<String>, _>(1 + ngroups)?)
        };
        Ok(RawRow {
            window: usize::try_from(idx).unwrap_or(0),
            group,
            count,
            value,
        })
    }
}

/// A row written before pseudonyms (`subject_form` 0).
#[derive(sqlx::FromRow)]
struct LegacyRow {
    seq: i64,
    partner_id: String,
    subject: Option<String>,
    /// `smart.launch`'s patient id, as stored then.
    patient: Option<String>,
}

/// Rows written before pseudonyms, oldest first.
async fn raw_subjects(db: &Db, limit: i64) -> Result<Vec<LegacyRow>, sqlx::Error> {
    let patient = match db {
        Db::Sqlite(_) => "json_extract(data, '$.patient')",
        Db::Postgres(_) => "(data ->> 'patient')",
    };
    let sql = format!(
        "SELECT seq, partner_id, subject, \
                CASE WHEN type = 'smart.launch' THEN {patient} END AS patient \
         FROM usage_events WHERE subject_form = 0 ORDER BY seq LIMIT $1"
    );
    crate::with_db!(db, pool => sqlx::query_as(&sql).bind(limit).fetch_all(pool).await)
}

/// Convert the ledger's rows written before pseudonyms, in batches of `batch`, each batch
/// committed on its own: the subject (and a `smart.launch`'s patient) becomes its
/// pseudonym and the row form 1. A row is converted only while it is still form 0, so
/// instances converting at once never hash a subject twice. Returns how many rows were
/// converted.
pub async fn pseudonymize_legacy(db: &Db, subjects: &Subjects, batch: i64) -> anyhow::Result<u64> {
    let mut done = 0u64;
    loop {
        let rows = raw_subjects(db, batch).await?;
        if rows.is_empty() {
            return Ok(done);
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let hashed: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                r.subject
                    .as_deref()
                    .map(|s| subjects.pseudonym(&r.partner_id, s))
            })
            .collect();
        let patients: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                r.patient
                    .as_deref()
                    .map(|p| subjects.patient(&r.partner_id, p))
            })
            .collect();
        let n = match db {
            Db::Sqlite(pool) => {
                let items: Vec<Value> = rows
                    .iter()
                    .zip(hashed.iter().zip(&patients))
                    .map(|(r, (u, p))| json!({"q": r.seq, "u": u, "p": p}))
                    .collect();
                sqlx::query(
                    "UPDATE usage_events SET subject = j.value->>'u', subject_form = 1, \
                       data = CASE WHEN j.value->>'p' IS NULL THEN data \
                              ELSE json_set(data, '$.patient', j.value->>'p') END \
                     FROM json_each($1) AS j \
                     WHERE usage_events.seq = j.value->>'q' AND usage_events.subject_form = 0",
                )
                .bind(Value::Array(items).to_string())
                .execute(pool)
                .await?
                .rows_affected()
            }
            Db::Postgres(pool) => sqlx::query(
                "UPDATE usage_events e SET subject = c.u, subject_form = 1, \
                   data = CASE WHEN c.p IS NULL THEN e.data \
                          ELSE jsonb_set(e.data, '{patient}', to_jsonb(c.p)) END \
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS c(q, u, p) \
                 WHERE e.seq = c.q AND e.subject_form = 0",
            )
            .bind(&seqs)
            .bind(&hashed)
            .bind(&patients)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        done += n;
        metrics::counter!("gateway_ledger_subjects_pseudonymized_total").increment(n);
    }
}

/// Relabel every ledger row of one pseudonym at one partner with `unlinked` (an erased
/// person): the rows keep counting as one subject. Returns the rows relabelled.
pub async fn relabel_subject(
    tx: &mut Tx,
    partner_id: &str,
    pseudonym: &str,
    unlinked: &str,
) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE usage_events SET subject = $3 WHERE partner_id = $1 AND subject = $2";
    crate::with_tx!(tx, conn => sqlx::query(sql)
        .bind(partner_id)
        .bind(pseudonym)
        .bind(unlinked)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))
}
