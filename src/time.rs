use chrono::{DateTime, TimeZone, Utc};

/// Microseconds since the Unix epoch: the one instant representation in both stores, so the
/// same SQL compares and buckets times on SQLite and PostgreSQL.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`to_micros`]; out-of-range values clamp to the epoch rather than panic.
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

pub fn now_micros() -> i64 {
    to_micros(Utc::now())
}

/// The API's one way of writing an instant: RFC 3339 in UTC with `Z` and microseconds (the
/// ledger's resolution), e.g. `2026-11-01T04:00:00.000000Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `#[serde(with = "crate::time::api")]`: an instant written as [`rfc3339`]; read from any
/// RFC 3339 form (stored documents written before the API had one form still read).
pub mod api {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }
}

/// [`api`] for an optional instant (with `#[serde(default)]` where it may be absent).
pub mod api_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<DateTime<Utc>>::deserialize(d)
    }
}
