//! Small HTML pages for people in a browser (a clinician whose EHR launch failed, a student
//! whose LMS launch did). They say what went wrong in plain words; details a person cannot
//! act on go to the log with the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A browser-facing error or notice.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: StatusCode,
    pub title: String,
    pub lines: Vec<String>,
}

impl Page {
    pub fn new(status: StatusCode, title: impl Into<String>) -> Page {
        Page {
            status,
            title: title.into(),
            lines: Vec::new(),
        }
    }

    pub fn line(mut self, text: impl Into<String>) -> Page {
        self.lines.push(text.into());
        self
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let paragraphs: String = self
            .lines
            .iter()
            .map(|l| format!("<p>{}</p>\n", escape(l)))
            .collect();
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;\
             margin:3rem auto;padding:0 1rem;line-height:1.5;color:#222}}h1{{font-size:1.4rem}}\
             </style></head><body><h1>{title}</h1>\n{paragraphs}</body></html>\n",
            title = escape(&self.title),
        );
        html(
            self.status,
            body,
            "default-src 'none'; style-src 'unsafe-inline'",
        )
    }
}

/// The page for a failure inside the gateway (a launch in any protocol); the detail goes
/// to the log with the request id, not to the person.
pub fn internal(detail: String) -> Page {
    tracing::error!(%detail, "a launch failed inside the gateway");
    Page::new(StatusCode::INTERNAL_SERVER_ERROR, "The launch failed inside the gateway")
        .line("This is our fault, not yours. Try again in a moment; the request id in our log has the details.")
}

/// An HTML response with the headers every page here carries (no caching, no referrer)
/// and the given Content-Security-Policy.
pub fn html(status: StatusCode, body: String, csp: &str) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// A 302 to `location` that keeps it out of `Referer` headers and caches.
pub fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A page that POSTs `fields` to `action` at once (OIDC form_post, LTI Deep Linking
/// responses), with a button for browsers that run no script. The script runs under a
/// per-response CSP nonce; nothing else may run.
pub fn auto_post(action: &str, fields: &[(&str, &str)], title: &str) -> Response {
    let nonce = crate::smart::flow::random_token(16);
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><form id=\"f\" method=\"post\" action=\"{action}\">{inputs}\
         <noscript><button type=\"submit\">Continue</button></noscript></form>\
         <script nonce=\"{nonce}\">document.getElementById('f').submit();</script></body></html>\n",
        title = escape(title),
        action = escape(action),
    );
    html(
        StatusCode::OK,
        body,
        &format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; form-action *; style-src 'unsafe-inline'"
        ),
    )
}

/// A page with a script (platform storage, closing a registration window), under a
/// per-response CSP nonce. `script` must be built from escaped or JSON-encoded values.
/// `link` adds `<a id="continue">` for browsers that run no script.
pub fn script_page(
    status: StatusCode,
    title: &str,
    lines: &[String],
    script: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let nonce = crate::smart::flow::random_token(16);
    let mut paragraphs: String = lines
        .iter()
        .map(|l| format!("<p>{}</p>\n", escape(l)))
        .collect();
    if let Some((text, href)) = link {
        paragraphs.push_str(&format!(
            "<p><a id=\"continue\" href=\"{}\">{}</a></p>\n",
            escape(href),
            escape(text)
        ));
    }
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}</style>\
         </head><body><h1>{t}</h1>\n{paragraphs}<script nonce=\"{nonce}\">{script}</script></body></html>\n",
        t = escape(title),
    );
    html(
        status,
        body,
        &format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; form-action *; style-src 'unsafe-inline'; connect-src 'self'"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}
