//! CloudEvents 1.0 usage events: parsing and validation (pure; no I/O).
//! Spec: <https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md>

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

/// Longest accepted `id`, `source`, `type` or `subject`.
pub const MAX_ATTRIBUTE_LEN: usize = 1024;
/// Events dated further ahead than this are refused: a clock far off would otherwise let an
/// event land in a billing period that has not started.
pub const MAX_FUTURE_SKEW: Duration = Duration::hours(24);
/// Default of `usage.max_data_bytes`: an event's `data` is a handful of fields for meters
/// and statements, so 64 KiB is generous; a batch of 1000 such events is still bounded by
/// `http.body_limit_bytes`.
pub const DEFAULT_MAX_DATA_BYTES: usize = 64 * 1024;

/// A validated event, attributed to a partner, ready for the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    pub partner_id: String,
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    pub data: Option<Value>,
    /// Other CloudEvents attributes (extensions, `dataschema`, ...), kept for audit.
    pub extensions: Option<Map<String, Value>>,
}

/// A parsed event whose partner is not yet settled: the `partner` extension, if any, is
/// checked against the caller by [`crate::metering::ingest`].
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    pub partner: Option<String>,
    pub event: UsageEvent,
}

/// One thing wrong with one event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldProblem {
    pub field: String,
    pub reason: String,
}

fn problem(field: &str, reason: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Parse one structured-mode CloudEvent. Every problem with the event is reported, not just
/// the first, so a client can fix them in one go.
pub fn parse_event(value: Value, now: DateTime<Utc>) -> Result<ParsedEvent, Vec<FieldProblem>> {
    let Value::Object(mut obj) = value else {
        return Err(vec![problem("(event)", "must be a JSON object")]);
    };
    let mut problems = Vec::new();

    match obj.remove("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::String(v)) => problems.push(problem(
            "specversion",
            format!("must be \"1.0\", got {v:?}"),
        )),
        Some(_) => problems.push(problem("specversion", "must be the string \"1.0\"")),
        None => problems.push(problem("specversion", "is required")),
    }
    let id = required_string(&mut obj, "id", &mut problems);
    let source = required_string(&mut obj, "source", &mut problems);
    let event_type = required_string(&mut obj, "type", &mut problems);
    let subject = optional_string(&mut obj, "subject", &mut problems);
    let partner = optional_string(&mut obj, "partner", &mut problems);

    let time = match obj.remove("time") {
        None | Some(Value::Null) => Some(now),
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => {
                let t = t.with_timezone(&Utc);
                if t > now + MAX_FUTURE_SKEW {
                    problems.push(problem(
                        "time",
                        format!("{s:?} is more than 24 hours in the future"),
                    ));
                    None
                } else {
                    Some(t)
                }
            }
            Err(_) => {
                problems.push(problem(
                    "time",
                    format!("{s:?} is not an RFC 3339 timestamp such as 2026-11-23T10:00:00Z"),
                ));
                None
            }
        },
        Some(_) => {
            problems.push(problem("time", "must be an RFC 3339 timestamp string"));
            None
        }
    };

    match obj.remove("datacontenttype") {
        None | Some(Value::Null) => {}
        Some(Value::String(ct)) if is_json_media_type(&ct) => {}
        Some(other) => problems.push(problem(
            "datacontenttype",
            format!("only JSON data is accepted, got {other}"),
        )),
    }
    if obj.remove("data_base64").is_some() {
        problems.push(problem(
            "data_base64",
            "binary data is not accepted; send JSON in data",
        ));
    }
    let data = match obj.remove("data") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => {
            problems.push(problem("data", "must be a JSON object"));
            None
        }
    };

    // What is left are extension attributes (and `dataschema`). CloudEvents names are
    // lowercase letters and digits; values are scalars.
    for (name, v) in &obj {
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            || name.is_empty()
        {
            problems.push(problem(
                name,
                "is not a valid CloudEvents attribute name (a-z, 0-9)",
            ));
        } else if v.is_object() || v.is_array() {
            problems.push(problem(
                name,
                "extension attributes must be strings, numbers or booleans",
            ));
        }
    }

    // Events that statements turn into money must be readable as money: refuse a bad
    // amount or currency now rather than when finance runs the period.
    if let Some(t) = &event_type
        && let Some(reason) = crate::statements::events::check(t, data.as_ref())
    {
        problems.push(problem("data", reason));
    }

    match (id, source, event_type, time) {
        (Some(id), Some(source), Some(event_type), Some(time)) if problems.is_empty() => {
            Ok(ParsedEvent {
                partner,
                event: UsageEvent {
                    partner_id: String::new(),
                    id,
                    source,
                    event_type,
                    subject,
                    time,
                    data,
                    extensions: if obj.is_empty() { None } else { Some(obj) },
                },
            })
        }
        _ => Err(problems),
    }
}

/// The raw event's `data` when it is longer than `max` bytes of JSON: the problem names the
/// size and the cap (`usage.max_data_bytes`).
pub fn data_size_problem(event: &Value, max: usize) -> Option<FieldProblem> {
    let data = event.get("data")?;
    let size = json_len(data);
    (size > max).then(|| {
        problem(
            "data",
            format!(
                "is {size} bytes of JSON; the gateway accepts at most {max} (usage.max_data_bytes)"
            ),
        )
    })
}

/// [`data_size_problem`] for each event of a batch, by index (the whole batch is refused).
pub fn check_data_sizes(events: &[Value], max: usize) -> Result<(), Vec<crate::http::FieldError>> {
    let errors: Vec<crate::http::FieldError> = events
        .iter()
        .enumerate()
        .filter_map(|(index, e)| {
            data_size_problem(e, max).map(|p| crate::http::FieldError {
                index: Some(index),
                field: p.field,
                reason: p.reason,
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What an NDJSON line may not hold before it is even parsed as an event: U+0000 anywhere
/// (the ledger never stores it; `crate::text`), or `data` over `max_data_bytes`.
pub fn line_problem(event: &Value, max_data_bytes: usize) -> Option<FieldProblem> {
    if let Some(pointer) = crate::text::find_nul(event) {
        let field = if pointer.is_empty() {
            "(event)"
        } else {
            pointer.as_str()
        };
        return Some(problem(
            field,
            "holds a NUL character (U+0000), which the ledger does not store",
        ));
    }
    data_size_problem(event, max_data_bytes)
}

/// Bytes of `v` as compact JSON, counted without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value to a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

fn is_json_media_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn required_string(
    obj: &mut Map<String, Value>,
    field: &str,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    match obj.remove(field) {
        None | Some(Value::Null) => {
            problems.push(problem(field, "is required"));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            problems.push(problem(field, "must not be empty"));
            None
        }
        Some(Value::String(s)) if s.len() > MAX_ATTRIBUTE_LEN => {
            problems.push(problem(
                field,
                format!("is longer than {MAX_ATTRIBUTE_LEN} bytes"),
            ));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            problems.push(problem(field, "must be a string"));
            None
        }
    }
}

fn optional_string(
    obj: &mut Map<String, Value>,
    field: &str,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => {
            obj.remove(field);
            None
        }
        Some(_) => required_string(obj, field, problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn data_over_the_cap_and_nul_anywhere_are_named() {
        let e = json!({"id": "1", "data": {"k": "abcdef"}});
        assert_eq!(data_size_problem(&e, 14), None); // {"k":"abcdef"} is 14 bytes
        let p = data_size_problem(&e, 13).unwrap();
        assert_eq!(p.field, "data");
        assert!(
            p.reason.contains("14 bytes") && p.reason.contains("usage.max_data_bytes"),
            "{}",
            p.reason
        );
        assert_eq!(data_size_problem(&json!({"id": "1"}), 0), None);
        let errs = check_data_sizes(&[json!({}), e.clone()], 13).unwrap_err();
        assert_eq!(errs[0].index, Some(1));
        let nul = line_problem(&json!({"id": "1", "data": {"customer": "a\u{0}"}}), 1000).unwrap();
        assert_eq!(nul.field, "/data/customer");
        assert_eq!(line_problem(&e, 1000), None);
    }

    #[test]
    fn a_minimal_event_defaults_its_time_to_now() {
        let p = parse_event(
            json!({"specversion":"1.0","id":"1","source":"s","type":"t"}),
            now(),
        )
        .unwrap();
        assert_eq!(p.event.time, now());
        assert_eq!(p.partner, None);
        assert_eq!(p.event.extensions, None);
    }

    #[test]
    fn every_problem_is_listed() {
        let errs = parse_event(
            json!({"specversion":"0.3","source":"","type":5,"time":"yesterday"}),
            now(),
        )
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["specversion", "id", "source", "type", "time"]);
    }

    #[test]
    fn partner_extension_is_separated_and_others_kept() {
        let p = parse_event(
            json!({"specversion":"1.0","id":"1","source":"s","type":"t","partner":"epic","traceparent":"00-x","data":{"a":1}}),
            now(),
        )
        .unwrap();
        assert_eq!(p.partner.as_deref(), Some("epic"));
        assert_eq!(p.event.extensions.unwrap()["traceparent"], "00-x");
        assert_eq!(p.event.data, Some(json!({"a":1})));
    }

    #[test]
    fn far_future_and_non_object_data_are_rejected() {
        let errs = parse_event(
            json!({"specversion":"1.0","id":"1","source":"s","type":"t","time":"2027-01-01T00:00:00Z","data":[1]}),
            now(),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
    }

    #[test]
    fn offsets_in_time_are_normalised_to_utc() {
        let p = parse_event(
            json!({"specversion":"1.0","id":"1","source":"s","type":"t","time":"2026-11-23T08:00:00-04:00"}),
            now(),
        )
        .unwrap();
        assert_eq!(p.event.time, now());
    }
}
