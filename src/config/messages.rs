//! Config problems in words an operator acts on (pure): serde's Rust type names replaced,
//! "did you mean" for near-miss names, list items named by their id instead of an index,
//! and a TOML syntax error's line and column.

use std::fmt::Write as _;

/// The candidate closest to `word` when it is close enough to be a typo: at most two edits,
/// and fewer than half the word's length.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = 2.min(word.chars().count().saturating_sub(1) / 2 + 1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The candidate closest to `word` however far (ties: the first), for "the nearest known
/// one is ..." where any answer helps.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `"; did you mean \"x\"?"`, or nothing.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|c| format!("; did you mean {c:?}?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A serde message without Rust jargon, with a hint for an unknown field or variant.
pub fn plain(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, words) in [
        ("usize", "a whole number (0 or more)"),
        ("u64", "a whole number (0 or more)"),
        ("u32", "a whole number (0 or more)"),
        ("u16", "a whole number (0 or more)"),
        ("u8", "a whole number (0 or more)"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
        ("a sequence", "an array"),
        ("a map", "a table"),
        ("a borrowed string", "a string"),
    ] {
        out = replace_expected(&out, rust, words);
    }
    // `expected struct HttpConfig` → `expected a table`.
    if let Some(at) = out.find("expected struct ") {
        let rest = &out[at + "expected struct ".len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(rest.len());
        out = format!("{}expected a table{}", &out[..at], &rest[end..]);
    }
    for kind in ["variant", "field"] {
        if let Some(h) = unknown_hint(&out, kind) {
            out.push_str(&h);
        }
    }
    out
}

/// Replace `expected <rust>` where `<rust>` ends at a word boundary.
fn replace_expected(s: &str, rust: &str, words: &str) -> String {
    let pat = format!("expected {rust}");
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(&pat) {
        let after = &rest[at + pat.len()..];
        let boundary = after
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        out.push_str(&rest[..at]);
        out.push_str(if boundary { "expected " } else { &pat });
        if boundary {
            out.push_str(words);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// For ``unknown variant `lmss`, expected one of `ehr`, `lms` ``: `; did you mean "lms"?`.
fn unknown_hint(message: &str, kind: &str) -> Option<String> {
    let start = message.find(&format!("unknown {kind} `"))? + format!("unknown {kind} `").len();
    let word = &message[start..start + message[start..].find('`')?];
    let list = &message[message.find("expected ")?..];
    let candidates: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    did_you_mean(word, candidates.iter().copied()).map(|c| format!("; did you mean {c:?}?"))
}

/// What a list item is called in a problem: its id (and an agreement's version).
pub struct ItemNames {
    /// (list, index, name), e.g. ("agreements", 2, `id = "x", version = 1`).
    names: Vec<(&'static str, usize, String)>,
}

impl ItemNames {
    pub fn from_merged(merged: &toml::Table) -> ItemNames {
        let mut names = Vec::new();
        for (list, key) in [("partners", "id"), ("meters", "name"), ("agreements", "id")] {
            let Some(toml::Value::Array(items)) = merged.get(list) else {
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                let Some(id) = item.get(key).and_then(toml::Value::as_str) else {
                    continue;
                };
                let mut name = format!("{key} = {id:?}");
                if list == "agreements"
                    && let Some(v) = item.get("version").and_then(toml::Value::as_integer)
                {
                    let _ = write!(name, ", version = {v}");
                }
                names.push((list, i, name));
            }
        }
        ItemNames { names }
    }

    /// `s` with every `agreements[2]` (and partners, meters) named by its id instead.
    pub fn relabel(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (list, i, name) in &self.names {
            out = out.replace(&format!("{list}[{i}]"), &format!("{list}[{name}]"));
        }
        out
    }
}

/// `line:column` (1-based, columns in characters) of a byte offset into `text`.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_get_a_hint_and_strangers_do_not() {
        let kinds = ["ehr", "lms", "idp", "marketplace", "referral", "other"];
        assert_eq!(did_you_mean("lmss", kinds), Some("lms"));
        assert_eq!(did_you_mean("markteplace", kinds), Some("marketplace"));
        assert_eq!(did_you_mean("zz", kinds), None);
        assert_eq!(
            did_you_mean("epic-sandbx", ["epic-sandbox", "canvas-sandbox"]),
            Some("epic-sandbox")
        );
    }

    #[test]
    fn serde_messages_lose_their_rust_words() {
        assert_eq!(
            plain("invalid value: integer `-5`, expected usize"),
            "invalid value: integer `-5`, expected a whole number (0 or more)"
        );
        assert_eq!(
            plain("invalid type: string \"lots\", expected u32"),
            "invalid type: string \"lots\", expected a whole number (0 or more)"
        );
        assert_eq!(
            plain("invalid type: integer `1`, expected struct HttpConfig"),
            "invalid type: integer `1`, expected a table"
        );
        assert_eq!(
            plain("unknown variant `lmss`, expected one of `ehr`, `lms`, `idp`"),
            "unknown variant `lmss`, expected one of `ehr`, `lms`, `idp`; did you mean \"lms\"?"
        );
        assert_eq!(
            plain("unknown field `adrr`, expected one of `addr`, `enabled`"),
            "unknown field `adrr`, expected one of `addr`, `enabled`; did you mean \"addr\"?"
        );
        assert_eq!(plain("expected usizes"), "expected usizes");
    }

    #[test]
    fn items_are_named_by_id_and_version() {
        let merged: toml::Table =
            "[[agreements]]\nid = \"a\"\nversion = 2\n[[partners]]\nid = \"p\"\n"
                .parse()
                .unwrap();
        let names = ItemNames::from_merged(&merged);
        assert_eq!(
            names.relabel("agreements[0].partner: same as agreements[0]; partners[0]"),
            "agreements[id = \"a\", version = 2].partner: same as agreements[id = \"a\", version = 2]; partners[id = \"p\"]"
        );
    }

    #[test]
    fn positions_count_lines_and_characters() {
        // "bé" is three bytes, two characters: byte 10 is the 4th character of line 2.
        assert_eq!(position("a = 1\nbé = x\n", 10), (2, 4));
        assert_eq!(position("x", 0), (1, 1));
    }
}
