//! Small HTML pages for people in a browser (a clinician whose EHR launch failed, a student
//! whose LMS launch did). They say what went wrong in plain words; details a person cannot
//! act on go to the log with the request id.
//!
//! Every page comes from one layout with a fixed stylesheet and carries a
//! Content-Security-Policy allowing only what it needs (OWASP XSS prevention: escape for
//! the context, then forbid the rest):
//! - text goes through [`escape`] (element content and quoted attributes);
//! - there is no inline script but a few fixed ones (`&'static str` constants) allowed by
//!   their SHA-256 in the policy; a value a script needs travels in a
//!   `<script type="application/json">` block escaped for that context
//!   ([`json_for_script`]), never spliced into code. So nothing a request puts in a page
//!   can run, escaped or not;
//! - `form-action` names exactly where the page's form goes (nowhere, the gateway, or the
//!   one endpoint of a partner it must post to), `base-uri 'none'`, and
//!   `frame-ancestors 'none'` unless the area's router lets partners frame its pages
//!   ([`partner_frames`]: LTI and SMART flows run inside the LMS's or EHR's page).
//!
//! `http::headers` adds `nosniff` to every response and `X-Frame-Options: DENY` where the
//! policy forbids framing.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::{Digest, Sha256};

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

/// Text for element content or a quoted attribute value.
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

/// JSON for the inside of a `<script type="application/json">` block: nothing in it can
/// close the element (`</script>`), open a comment (`<!--`) or end a line in a JavaScript
/// string (U+2028/U+2029). The escapes are JSON's own, so `JSON.parse` reads the value
/// back unchanged.
pub fn json_for_script(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The one stylesheet of every page (allowed by its hash).
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;\
padding:0 1rem;line-height:1.5;color:#222}h1{font-size:1.4rem}ul{list-style:none;padding:0}\
input[type=email]{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}\
button{font-size:1rem;margin-top:.8rem;padding:.4rem 1rem}";

/// The CSP source for an inline element's exact text.
fn hash_source(text: &str) -> String {
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

static STYLE_SOURCE: LazyLock<String> = LazyLock::new(|| hash_source(STYLE));

/// Where a page's forms may go (CSP `form-action`).
#[derive(Debug, Clone, Copy)]
pub enum Forms<'a> {
    /// The page has no form.
    None,
    /// Forms post to the gateway itself.
    Gateway,
    /// The page posts to this one endpoint of a partner (a platform's Deep Linking return
    /// URL); checked with [`redirect_target`] by the caller.
    To(&'a url::Url),
}

/// Who may frame the pages of an area whose router does not say otherwise.
const NO_FRAMES: &str = "frame-ancestors 'none'";

/// Who may frame LTI and SMART pages: the LMS or EHR showing the flow in its own page.
/// Their framing origins are not known in advance (an LMS is served on each school's own
/// domain), so any HTTPS page, and loopback for development.
const PARTNER_FRAMES: &str = "frame-ancestors https: http://localhost:* http://127.0.0.1:*";

/// The policy of a page with the given fixed script and forms.
fn policy(script: Option<&str>, forms: Forms) -> Result<String, String> {
    let form_action = match forms {
        Forms::None => "'none'".to_owned(),
        Forms::Gateway => "'self'".to_owned(),
        Forms::To(url) => csp_source(url)?,
    };
    let script_src = script
        .map(|s| format!("; script-src {}", hash_source(s)))
        .unwrap_or_default();
    Ok(format!(
        "default-src 'none'; style-src {style}{script_src}; form-action {form_action}; \
         base-uri 'none'; {NO_FRAMES}",
        style = *STYLE_SOURCE,
    ))
}

/// `url` as a CSP source expression: scheme, host, port and path (CSP ignores the query).
/// Characters that could end the expression or the directive (`;`, `,`, quotes, spaces)
/// are percent-encoded; CSP decodes paths before comparing.
fn csp_source(url: &url::Url) -> Result<String, String> {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        _ => return Err(format!("{url} has no host a CSP source can name")),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let mut path = String::new();
    for c in url.path().chars() {
        match c {
            ';' | ',' | '\'' | '"' => path.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_ascii_graphic() => path.push(c),
            _ => return Err(format!("{url} has a path a CSP source cannot name")),
        }
    }
    Ok(format!("{}://{host}{port}{path}", url.scheme()))
}

/// The layout every page shares: `inner` is HTML already escaped; `data` goes into the
/// JSON block the fixed `script` reads.
fn document(
    title: &str,
    inner: &str,
    data: Option<&Value>,
    script: Option<&'static str>,
) -> String {
    let data = data
        .map(|d| {
            format!(
                "<script type=\"application/json\" id=\"pgw-data\">{}</script>",
                json_for_script(d)
            )
        })
        .unwrap_or_default();
    let script = script
        .map(|s| format!("<script>{s}</script>"))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>{inner}{data}{script}</body></html>\n",
        title = escape(title),
    )
}

fn paragraphs(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("<p>{}</p>\n", escape(l)))
        .collect()
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let inner = notice(&self.title, &self.lines, None);
        layout(self.status, &self.title, &inner, Forms::None)
    }
}

/// The page for a failure inside the gateway (a launch in any protocol); the detail goes
/// to the log with the request id, not to the person.
pub fn internal(detail: String) -> Page {
    tracing::error!(%detail, "a launch failed inside the gateway");
    Page::new(StatusCode::INTERNAL_SERVER_ERROR, "The launch failed inside the gateway")
        .line("This is our fault, not yours. Try again in a moment; the request id in our log has the details.")
}

/// A page without script in the shared layout; `inner` is HTML already escaped.
pub fn layout(status: StatusCode, title: &str, inner: &str, forms: Forms) -> Response {
    respond(status, document(title, inner, None, None), None, forms)
}

fn respond(status: StatusCode, body: String, script: Option<&str>, forms: Forms) -> Response {
    match policy(script, forms) {
        Ok(csp) => html(status, body, &csp),
        Err(e) => internal(format!("a page's form target: {e}")).into_response(),
    }
}

/// An HTML response with the headers every page here carries (no caching, no referrer)
/// and the given Content-Security-Policy.
fn html(status: StatusCode, body: String, csp: &str) -> Response {
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

/// Where the gateway may send a browser (an app URL, a Deep Linking return URL): an
/// absolute `https` URL with a host, no user info and no fragment; plain `http` only to a
/// loopback host (development). Anything else (`javascript:`, `data:`, `ftp:`, a relative
/// path) would let a config or API mistake run script or leak the one-time code.
pub fn redirect_target(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not an absolute URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "{s:?} must be https (plain http only for a loopback host in development)"
            ));
        }
        _ => return Err(format!("{s:?} must be an https URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{s:?} must not carry user info"));
    }
    if url.fragment().is_some() {
        return Err(format!("{s:?} must not have a fragment"));
    }
    Ok(url)
}

/// Mark a response (a redirect) as never to be framed, as its pages are.
pub fn deny_framing(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(NO_FRAMES),
        );
    }
    resp
}

/// For the routers of flows a partner shows in its own page (LTI, SMART): their pages may
/// be framed by any HTTPS page instead of none (`.route_layer(map_response(partner_frames))`).
pub async fn partner_frames(mut resp: Response) -> Response {
    let framed = resp
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .filter(|csp| csp.contains(NO_FRAMES))
        .map(|csp| csp.replace(NO_FRAMES, PARTNER_FRAMES))
        .and_then(|csp| HeaderValue::from_str(&csp).ok());
    if let Some(v) = framed {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// Submits the page's form `f` at once.
const SUBMIT: &str = "document.getElementById('f').submit();";

/// A page that POSTs `fields` to `action` at once (LTI Deep Linking responses), with a
/// button for browsers that run no script. `action` must pass [`redirect_target`]; the
/// policy lets the form go there and nowhere else.
pub fn auto_post(action: &url::Url, fields: &[(&str, &str)], title: &str) -> Response {
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
    let inner = format!(
        "<form id=\"f\" method=\"post\" action=\"{action}\">{inputs}\
         <noscript><button type=\"submit\">Continue</button></noscript></form>",
        action = escape(action.as_str()),
    );
    respond(
        StatusCode::OK,
        document(title, &inner, None, Some(SUBMIT)),
        Some(SUBMIT),
        Forms::To(action),
    )
}

/// The inner HTML of a notice: its title, lines and, for browsers that run no script,
/// an `<a id="continue">` link.
pub fn notice(title: &str, lines: &[String], link: Option<(&str, &str)>) -> String {
    let mut inner = format!("<h1>{}</h1>\n{}", escape(title), paragraphs(lines));
    if let Some((text, href)) = link {
        inner.push_str(&format!(
            "<p><a id=\"continue\" href=\"{}\">{}</a></p>\n",
            escape(href),
            escape(text)
        ));
    }
    inner
}

/// A page with a fixed script (closing a registration window) and no data.
/// `link` adds `<a id="continue">` for browsers that run no script.
pub fn script_page(
    status: StatusCode,
    title: &str,
    lines: &[String],
    script: &'static str,
    link: Option<(&str, &str)>,
) -> Response {
    data_script_page(
        status,
        title,
        &notice(title, lines, link),
        script,
        &Value::Null,
        Forms::None,
    )
}

/// A page (`inner`: HTML already escaped) whose fixed `script` reads `data` from the
/// page's JSON block (`JSON.parse(document.getElementById('pgw-data').textContent)`):
/// platform storage.
pub fn data_script_page(
    status: StatusCode,
    title: &str,
    inner: &str,
    script: &'static str,
    data: &Value,
    forms: Forms,
) -> Response {
    let data = (!data.is_null()).then_some(data);
    respond(
        status,
        document(title, inner, data, Some(script)),
        Some(script),
        forms,
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

    #[test]
    fn json_for_a_script_block_cannot_close_it_and_reads_back_the_same() {
        let v = serde_json::json!({"t": "</script><!-- & \u{2028}\u{2029} '\""});
        let out = json_for_script(&v);
        for bad in ["<", ">", "&", "\u{2028}", "\u{2029}"] {
            assert!(!out.contains(bad), "{bad:?} in {out}");
        }
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), v);
    }

    #[test]
    fn only_https_or_loopback_http_targets_are_redirect_targets() {
        for ok in [
            "https://app.example.com/launch?x=1",
            "http://127.0.0.1:3000/launch",
            "http://localhost:8080/",
            "http://[::1]:9000/a",
        ] {
            assert!(redirect_target(ok).is_ok(), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "ftp://files.example.com/x",
            "http://app.example.com/launch",
            "/relative",
            "https://user:pw@app.example.com/",
            "https://app.example.com/#frag",
            "file:///etc/passwd",
        ] {
            assert!(redirect_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_form_target_becomes_one_csp_source_that_cannot_add_directives() {
        let u =
            url::Url::parse("https://lms.example.com:8443/dl/return;script-src *,x?q=1").unwrap();
        let src = csp_source(&u).unwrap();
        assert_eq!(
            src,
            "https://lms.example.com:8443/dl/return%3Bscript-src%20*%2Cx"
        );
        let p = policy(None, Forms::To(&u)).unwrap();
        assert_eq!(p.matches(';').count(), 4, "{p}");
        assert!(p.contains(&format!("form-action {src};")), "{p}");
    }

    #[test]
    fn a_page_with_a_script_allows_exactly_that_script() {
        let p = policy(Some(SUBMIT), Forms::None).unwrap();
        assert!(
            p.contains(&format!("script-src {};", hash_source(SUBMIT))),
            "{p}"
        );
        assert!(!p.contains("unsafe-inline"), "{p}");
        assert!(p.contains("base-uri 'none'") && p.contains("frame-ancestors 'none'"));
    }
}
