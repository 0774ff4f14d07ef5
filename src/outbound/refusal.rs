//! Why a partner system refused a request, in words a person can act on. Platforms put the
//! reason in different places: Moodle's LTI services in the HTTP status line ("409
//! Refusing score with an earlier timestamp…") with a body of `[]`, Canvas in an `errors`
//! list, OAuth servers in `error_description`, and some in an HTML error page. Pure
//! functions: the caller reads the response.

use serde_json::Value;

/// How much of a reason is kept (it goes to logs, API answers and pages).
const MAX_CHARS: usize = 300;

/// The status line's reason phrase when the server sent its own (not the standard one for
/// the code): hyper keeps only such phrases, as `hyper::ext::ReasonPhrase`.
pub fn reason_phrase(resp: &reqwest::Response) -> Option<String> {
    resp.extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|p| clean(&String::from_utf8_lossy(p.as_bytes())))
        .filter(|p| !p.is_empty())
}

/// The reason for a refusal: the server's own status-line phrase and a readable excerpt of
/// the body, whichever say something, joined; empty when neither does.
pub fn describe(phrase: Option<&str>, body: &[u8]) -> String {
    let excerpt = excerpt(body);
    let parts: Vec<&str> = [phrase.unwrap_or(""), excerpt.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    // A body that repeats the phrase adds nothing.
    let joined = match parts.as_slice() {
        [p, e] if e.contains(p) => (*e).to_owned(),
        _ => parts.join(": "),
    };
    truncate(&joined)
}

/// A readable excerpt of a body: the message fields of a JSON error, else its compact form
/// (nothing for an empty `[]`, `{}`, `null` or `""`); the text of an HTML page without its
/// markup, scripts and styles; plain text as it is. Whitespace collapsed, at most 300
/// characters, control characters (and U+0000, which PostgreSQL refuses) dropped.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
        return truncate(&clean(&json_reason(&value)));
    }
    let looks_html = trimmed.starts_with('<')
        && (trimmed.contains("</") || trimmed.to_ascii_lowercase().contains("<html"));
    let plain = if looks_html {
        html_text(trimmed)
    } else {
        trimmed.to_owned()
    };
    truncate(&clean(&plain))
}

fn json_reason(v: &Value) -> String {
    let field = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let listed: Vec<&str> = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("message").and_then(Value::as_str).or(e.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let said: Vec<&str> = [
        field("error"),
        field("error_description"),
        field("message"),
        field("reason"),
        field("detail"),
    ]
    .into_iter()
    .flatten()
    .chain(listed)
    .collect();
    if !said.is_empty() {
        let mut uniq: Vec<&str> = Vec::new();
        for s in said {
            if !uniq.contains(&s) {
                uniq.push(s);
            }
        }
        return uniq.join(": ");
    }
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => String::new(),
        Value::Object(o) if o.is_empty() => String::new(),
        other => other.to_string(),
    }
}

/// The text of an HTML page: tags, comments, scripts and styles removed, the common
/// entities decoded.
fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        if rest.starts_with('<') {
            let lrest = &lower[i..];
            // Skip the content of script and style elements and comments entirely.
            let skip_to = if lrest.starts_with("<!--") {
                lrest.find("-->").map(|e| e + 3)
            } else if lrest.starts_with("<script") {
                lrest.find("</script>").map(|e| e + 9)
            } else if lrest.starts_with("<style") {
                lrest.find("</style>").map(|e| e + 8)
            } else {
                lrest.find('>').map(|e| e + 1)
            };
            match skip_to {
                Some(n) => {
                    i += n;
                    out.push(' ');
                }
                None => break, // an unclosed tag: the rest is markup
            }
        } else {
            let next = rest.find('<').unwrap_or(rest.len());
            out.push_str(&rest[..next]);
            i += next;
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Whitespace collapsed to single spaces, control characters dropped.
fn clean(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_CHARS {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX_CHARS - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moodle_keeps_its_reason_in_the_status_line() {
        assert_eq!(
            describe(
                Some("Refusing score with an earlier timestamp for item 7 and user 42"),
                b"[]"
            ),
            "Refusing score with an earlier timestamp for item 7 and user 42"
        );
        assert_eq!(describe(None, b"[]"), "");
        assert_eq!(
            describe(Some("Incorrect score received"), b""),
            "Incorrect score received"
        );
    }

    #[test]
    fn json_errors_give_their_messages() {
        assert_eq!(
            excerpt(br#"{"errors":[{"message":"User not found in course or is not a student"}]}"#),
            "User not found in course or is not a student"
        );
        assert_eq!(
            excerpt(
                br#"{"error":"invalid_client_metadata","error_description":"domain mismatch"}"#
            ),
            "invalid_client_metadata: domain mismatch"
        );
        assert_eq!(excerpt(br#"{"x": 1}"#), r#"{"x":1}"#);
        assert_eq!(excerpt(b"null"), "");
    }

    #[test]
    fn html_pages_give_their_text() {
        let page = b"<!DOCTYPE html>\n<html><head><title>Error</title><style>p{color:red}</style>\
            <script>var x = '<b>';</script></head><body>\n<div class=\"notifytiny\">\
            <p>domain_targetlinkuri_mismatch</p><!-- id 3 --></div>\n<p>Tom &amp; Jerry &lt;3</p></body></html>";
        assert_eq!(
            excerpt(page),
            "Error domain_targetlinkuri_mismatch Tom & Jerry <3"
        );
    }

    #[test]
    fn text_is_cleaned_and_bounded() {
        assert_eq!(excerpt(b"  bad\x00 \r\n request\t"), "bad request");
        let long = "x".repeat(1000);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), 300);
        assert!(e.ends_with('…'));
        // A body that repeats the phrase is said once.
        assert_eq!(describe(Some("Gone away"), b"Gone away"), "Gone away");
    }
}
