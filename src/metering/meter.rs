//! Meters: named aggregations over event types, declared in config and compiled once.

use crate::config::MeterConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Count,
    Sum,
    UniqueCount,
    Max,
    Latest,
}

impl Aggregation {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "COUNT" => Some(Self::Count),
            "SUM" => Some(Self::Sum),
            "UNIQUE_COUNT" => Some(Self::UniqueCount),
            "MAX" => Some(Self::Max),
            "LATEST" => Some(Self::Latest),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "COUNT",
            Self::Sum => "SUM",
            Self::UniqueCount => "UNIQUE_COUNT",
            Self::Max => "MAX",
            Self::Latest => "LATEST",
        }
    }
}

/// Which event types a meter reads: exact names or prefixes (`lti.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    Exact(String),
    Prefix(String),
}

impl TypePattern {
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::Exact(t) => t == event_type,
            Self::Prefix(p) => event_type.starts_with(p.as_str()),
        }
    }
}

/// A field of an event a meter can read: the subject, the source, the type, or a path into
/// `data` (`$.a.b`). Path segments are restricted to `[A-Za-z0-9_-]` so they can be written
/// into SQL as literals without any quoting question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Subject,
    Source,
    Type,
    Data(Vec<String>),
}

impl Field {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "subject" => return Ok(Self::Subject),
            "source" => return Ok(Self::Source),
            "type" => return Ok(Self::Type),
            _ => {}
        }
        let Some(rest) = s.strip_prefix("$.") else {
            return Err(format!(
                "{s:?} is not a field: use subject, source, type, or a data path like $.duration_ms"
            ));
        };
        let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
        let ok = segments.iter().all(|seg| {
            !seg.is_empty()
                && seg.len() <= 64
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !ok || segments.len() > 8 {
            return Err(format!(
                "{s:?} is not a supported data path: use $.name or $.a.b with letters, digits, '_' or '-'"
            ));
        }
        Ok(Self::Data(segments))
    }
}

/// A value an `exclude` entry compares an event's field with. Floats are not offered: the
/// two backends would not agree on when two of them are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Text(String),
}

/// Most `exclude` fields, and values per field, in one meter: each is a term of every query
/// of the meter.
pub const MAX_EXCLUDE: usize = 16;
/// Longest string value in `exclude`.
const MAX_EXCLUDE_TEXT: usize = 256;

impl Scalar {
    fn parse(v: &serde_json::Value) -> Result<Scalar, String> {
        use serde_json::Value;
        match v {
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            Value::Number(n) => n.as_i64().map(Scalar::Int).ok_or_else(|| {
                format!("{n} is not an integer; exclude compares booleans, integers and strings")
            }),
            Value::String(s) if s.len() > MAX_EXCLUDE_TEXT => Err(format!(
                "a string of {} bytes; at most {MAX_EXCLUDE_TEXT}",
                s.len()
            )),
            Value::String(s) if s.contains('\0') => {
                Err("a string holding a NUL character, which no event can hold".into())
            }
            Value::String(s) => Ok(Scalar::Text(s.clone())),
            other => Err(format!(
                "{other} is not a boolean, an integer or a string (or a list of them)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Meter {
    pub name: String,
    pub description: String,
    pub event_types: Vec<TypePattern>,
    pub aggregation: Aggregation,
    pub value: Option<Field>,
    /// Group-by fields as written in config (the key in query results) with their parse.
    pub group_by: Vec<(String, Field)>,
    /// Events whose field has one of the values are not counted (`exclude` in config);
    /// events without the field are.
    pub exclude: Vec<(Field, Vec<Scalar>)>,
}

impl Meter {
    /// Compile a config entry, or list each problem as (field, message).
    pub fn compile(c: &MeterConfig) -> Result<Meter, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let name_ok = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            errs.push((
                "name".into(),
                format!(
                    "{:?} is not a valid meter name: use 1-64 of a-z, 0-9, '_'",
                    c.name
                ),
            ));
        }
        if c.event_types.is_empty() {
            errs.push((
                "event_types".into(),
                "must list at least one event type".into(),
            ));
        }
        let mut event_types = Vec::new();
        for (i, t) in c.event_types.iter().enumerate() {
            let star = t.find('*');
            match star {
                None if !t.is_empty() => event_types.push(TypePattern::Exact(t.clone())),
                Some(pos) if pos == t.len() - 1 => {
                    event_types.push(TypePattern::Prefix(t[..pos].to_owned()))
                }
                _ => errs.push((
                    format!("event_types[{i}]"),
                    format!("{t:?}: use an exact type or a prefix ending in a single '*'"),
                )),
            }
        }
        let aggregation = Aggregation::parse(&c.aggregation);
        if aggregation.is_none() {
            errs.push((
                "aggregation".into(),
                format!(
                    "{:?} is not an aggregation: use COUNT, SUM, UNIQUE_COUNT, MAX or LATEST",
                    c.aggregation
                ),
            ));
        }
        let value = match &c.value {
            None => None,
            Some(v) => match Field::parse(v) {
                Ok(f) => Some(f),
                Err(e) => {
                    errs.push(("value".into(), e));
                    None
                }
            },
        };
        match (aggregation, &c.value) {
            (Some(Aggregation::Count), Some(_)) => errs.push((
                "value".into(),
                "COUNT counts events and takes no value; remove it".into(),
            )),
            (Some(a), None) if a != Aggregation::Count => errs.push((
                "value".into(),
                format!(
                    "{} needs a value: subject or a data path like $.duration_ms",
                    a.as_str()
                ),
            )),
            _ => {}
        }
        let mut group_by = Vec::new();
        for (i, g) in c.group_by.iter().enumerate() {
            match Field::parse(g) {
                Ok(f) => group_by.push((g.clone(), f)),
                Err(e) => errs.push((format!("group_by[{i}]"), e)),
            }
        }
        if c.exclude.len() > MAX_EXCLUDE {
            errs.push((
                "exclude".into(),
                format!("names {} fields; at most {MAX_EXCLUDE}", c.exclude.len()),
            ));
        }
        let mut exclude = Vec::new();
        for (name, value) in &c.exclude {
            let at = format!("exclude.{name}");
            let field = match Field::parse(name) {
                // The ledger holds pseudonyms, not ids (`super::subject`); an id to leave
                // out would also be a person's id written into config.
                Ok(Field::Subject) => {
                    errs.push((
                        at,
                        "subjects are pseudonymous in the ledger, so a meter cannot leave one out \
                         by its id (PRIVACY.md): leave such events out by a data field instead"
                            .into(),
                    ));
                    continue;
                }
                Ok(f) => f,
                Err(e) => {
                    errs.push((at, e));
                    continue;
                }
            };
            let items = match value {
                serde_json::Value::Array(items) if items.is_empty() => {
                    errs.push((at, "list at least one value".into()));
                    continue;
                }
                serde_json::Value::Array(items) if items.len() > MAX_EXCLUDE => {
                    errs.push((
                        at,
                        format!("lists {} values; at most {MAX_EXCLUDE}", items.len()),
                    ));
                    continue;
                }
                serde_json::Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            let mut values = Vec::new();
            for v in items {
                match Scalar::parse(v) {
                    // The subject, source and type are strings: only a string can equal one.
                    Ok(Scalar::Text(t)) => values.push(Scalar::Text(t)),
                    Ok(other) if matches!(field, Field::Data(_)) => values.push(other),
                    Ok(_) => errs.push((
                        at.clone(),
                        format!("{name} is text: compare it with a string"),
                    )),
                    Err(e) => errs.push((at.clone(), e)),
                }
            }
            exclude.push((field, values));
        }
        match (errs.is_empty(), aggregation) {
            (true, Some(aggregation)) => Ok(Meter {
                name: c.name.clone(),
                description: c.description.clone(),
                event_types,
                aggregation,
                value,
                group_by,
                exclude,
            }),
            _ => Err(errs),
        }
    }

    pub fn matches_type(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|p| p.matches(event_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(agg: &str, value: Option<&str>, types: &[&str]) -> MeterConfig {
        MeterConfig {
            name: "m".into(),
            description: String::new(),
            event_types: types.iter().map(|s| s.to_string()).collect(),
            aggregation: agg.into(),
            value: value.map(str::to_owned),
            group_by: vec![],
            exclude: Default::default(),
            thresholds: vec![],
        }
    }

    #[test]
    fn prefix_patterns_match_by_prefix() {
        let m = Meter::compile(&cfg("COUNT", None, &["lti.*", "smart.launch"])).unwrap();
        assert!(m.matches_type("lti.grade_posted"));
        assert!(m.matches_type("smart.launch"));
        assert!(!m.matches_type("smart.launch.x"));
    }

    #[test]
    fn sum_without_value_is_rejected() {
        let errs = Meter::compile(&cfg("SUM", None, &["x"])).unwrap_err();
        assert_eq!(errs[0].0, "value");
    }

    #[test]
    fn data_paths_with_quotes_are_rejected() {
        assert!(Field::parse("$.a'b").is_err());
        assert!(Field::parse("$.a..b").is_err());
        assert_eq!(
            Field::parse("$.a.b_c").unwrap(),
            Field::Data(vec!["a".into(), "b_c".into()])
        );
    }

    #[test]
    fn exclude_takes_fields_and_booleans_integers_or_strings() {
        let mut c = cfg("COUNT", None, &["fhir.request"]);
        c.exclude
            .insert("$.reached".into(), serde_json::json!(false));
        c.exclude
            .insert("$.status".into(), serde_json::json!([401, 403]));
        c.exclude
            .insert("source".into(), serde_json::json!("replay"));
        let m = Meter::compile(&c).unwrap();
        assert_eq!(
            m.exclude,
            vec![
                (
                    Field::Data(vec!["reached".into()]),
                    vec![Scalar::Bool(false)]
                ),
                (
                    Field::Data(vec!["status".into()]),
                    vec![Scalar::Int(401), Scalar::Int(403)]
                ),
                (Field::Source, vec![Scalar::Text("replay".into())]),
            ]
        );
    }

    #[test]
    fn exclude_names_each_bad_entry() {
        for (field, value, why) in [
            ("reached", serde_json::json!(false), "not a field"),
            ("$.a'b", serde_json::json!(false), "not a data path"),
            ("$.ratio", serde_json::json!(0.5), "not an integer"),
            ("$.x", serde_json::json!({"a": 1}), "a table"),
            ("$.x", serde_json::json!([]), "an empty list"),
            ("$.x", serde_json::json!([[true]]), "a nested list"),
            (
                "source",
                serde_json::json!(true),
                "a boolean for a text field",
            ),
            (
                "subject",
                serde_json::json!("student-7"),
                "a subject: the ledger keeps pseudonyms",
            ),
            ("$.x", serde_json::json!("a\u{0}b"), "a NUL"),
        ] {
            let mut c = cfg("COUNT", None, &["x"]);
            c.exclude.insert(field.into(), value);
            let errs = Meter::compile(&c).unwrap_err();
            assert!(
                errs.iter().any(|(f, _)| f == &format!("exclude.{field}")),
                "{why}: {errs:?}"
            );
        }
    }

    #[test]
    fn star_in_the_middle_is_rejected() {
        assert!(Meter::compile(&cfg("COUNT", None, &["a*b"])).is_err());
    }
}
