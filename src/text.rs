//! Text the gateway never stores: U+0000 (NUL). PostgreSQL refuses it in `text` and `jsonb`
//! ("invalid byte sequence" / "unsupported Unicode escape sequence") while SQLite keeps it,
//! so one rule holds on both backends:
//!
//! - input the caller can fix (the `/v1` API, browser forms and queries, `usage import`
//!   lines) is refused with the place of the NUL named ([`find_nul`], [`json_nul`]);
//! - data a third party signed and cannot change (id_token claims, userinfo, SAML
//!   attributes, EHR token responses, a verified inbound webhook) has each NUL replaced by
//!   U+FFFD right after its verification ([`scrub_nul`]), so nothing else is lost.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// What a NUL becomes in third-party data.
pub const REPLACEMENT: char = '\u{FFFD}';

pub fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// `s` with every NUL replaced by U+FFFD.
pub fn scrub_nul_str(s: &mut String) {
    if has_nul(s) {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

/// `s` without NUL, for chaining (`.map(without_nul)`).
pub fn without_nul(mut s: String) -> String {
    scrub_nul_str(&mut s);
    s
}

/// Replace every NUL in the strings of `v`, object keys included.
pub fn scrub_nul(v: &mut Value) {
    match v {
        Value::String(s) => scrub_nul_str(s),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul),
        Value::Object(map) => scrub_nul_map(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// [`scrub_nul`] for an object.
pub fn scrub_nul_map(map: &mut Map<String, Value>) {
    if map.keys().any(|k| has_nul(k)) {
        let old = std::mem::take(map);
        for (k, mut v) in old {
            scrub_nul(&mut v);
            // A key that only differs by its NUL keeps the first value, as a JSON parser
            // keeps one of two equal keys.
            map.entry(without_nul(k)).or_insert(v);
        }
    } else {
        map.values_mut().for_each(scrub_nul);
    }
}

/// The JSON pointer (RFC 6901) of the first string in `v`, key or value, holding a NUL;
/// the NUL itself is written `\u0000` so the pointer can go into a message or a log.
pub fn find_nul(v: &Value) -> Option<String> {
    fn walk(v: &Value, path: &mut Vec<String>) -> bool {
        match v {
            Value::String(s) => has_nul(s),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                path.push(i.to_string());
                let found = walk(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(k, item)| {
                path.push(k.clone());
                let found = has_nul(k) || walk(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    let mut path = Vec::new();
    walk(v, &mut path).then(|| {
        path.iter()
            .map(|p| format!("/{}", printable(&p.replace('~', "~0").replace('/', "~1"))))
            .collect()
    })
}

/// `s` with NUL shown as `\u0000`, for messages.
pub fn printable(s: &str) -> Cow<'_, str> {
    if has_nul(s) {
        Cow::Owned(s.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Where a JSON text holds a NUL: `Some(pointer)` when it parses and a string in it holds
/// one (the pointer is `""` for a bare top-level string). Cheap when there is none: the text
/// is parsed only if it contains the escape `\u0000` (a raw NUL byte is not valid JSON, so
/// the caller's own parse refuses it).
pub fn json_nul(body: &[u8]) -> Option<String> {
    if !contains_nul_escape(body) {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    find_nul(&value)
}

/// Whether `body` holds the six bytes `\u0000` as an escape (not an escaped backslash
/// followed by `u0000`).
fn contains_nul_escape(body: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = body[i..].iter().position(|&b| b == b'\\') {
        let at = i + off;
        if body[at + 1..].starts_with(b"u0000") {
            return true;
        }
        // Skip the escaped character, so `\\u0000` is not taken for a NUL.
        i = at + 2;
        if i >= body.len() {
            return false;
        }
    }
    false
}

/// A JSON text with every `\u0000` escape turned into `\ufffd`: for third-party JSON read
/// before it is deserialized into types (a token response). Text that is not JSON comes
/// back unchanged in meaning (only escapes inside strings are touched).
pub fn scrub_nul_json(body: &[u8]) -> Cow<'_, [u8]> {
    if !contains_nul_escape(body) {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\\' {
            if body[i + 1..].starts_with(b"u0000") {
                out.extend_from_slice(b"\\ufffd");
                i += 6;
            } else {
                let end = (i + 2).min(body.len());
                out.extend_from_slice(&body[i..end]);
                i = end;
            }
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_pointer_names_the_first_string_or_key_with_a_nul() {
        assert_eq!(find_nul(&json!({"a": "ok", "b": [1, "x"]})), None);
        assert_eq!(
            find_nul(&json!([{"data": {"customer": "ac\u{0}me"}}])).as_deref(),
            Some("/0/data/customer")
        );
        assert_eq!(
            find_nul(&json!({"data": {"cu\u{0}s": 1}})).as_deref(),
            Some("/data/cu\\u0000s")
        );
        assert_eq!(
            find_nul(&json!({"a/b~": "\u{0}"})).as_deref(),
            Some("/a~1b~0")
        );
        assert_eq!(find_nul(&json!("\u{0}")).as_deref(), Some(""));
    }

    #[test]
    fn only_a_real_nul_escape_is_found_in_json_text() {
        assert_eq!(json_nul(br#"{"a": "x\u0000"}"#).as_deref(), Some("/a"));
        assert_eq!(json_nul(br#"{"a": "x\\u0000"}"#), None);
        assert_eq!(json_nul(br#"{"a": "x\\\u0000"}"#).as_deref(), Some("/a"));
        assert_eq!(json_nul(br#"{"a": "x\u0041"}"#), None);
        assert_eq!(json_nul(br#"not json \u0000"#), None);
        assert_eq!(json_nul(b"\\"), None);
    }

    #[test]
    fn scrubbing_replaces_nul_everywhere_and_keeps_the_rest() {
        let mut v =
            json!({"sub": "a\u{0}b", "list": ["\u{0}", 1, null], "k\u{0}": {"x": "\u{0}\u{0}"}});
        scrub_nul(&mut v);
        assert_eq!(
            v,
            json!({"sub": "a\u{FFFD}b", "list": ["\u{FFFD}", 1, null], "k\u{FFFD}": {"x": "\u{FFFD}\u{FFFD}"}})
        );
        assert_eq!(find_nul(&v), None);
    }

    #[test]
    fn json_text_is_scrubbed_without_touching_escaped_backslashes() {
        let text = br#"{"a": "x\u0000", "b": "\\u0000", "c": "\\\u0000"}"#;
        let out = scrub_nul_json(text);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"a": "x\u{FFFD}", "b": "\\u0000", "c": "\\\u{FFFD}"})
        );
        assert!(matches!(scrub_nul_json(b"{}"), Cow::Borrowed(_)));
    }
}
