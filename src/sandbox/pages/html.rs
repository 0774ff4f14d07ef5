//! The sandbox site's HTML: one layout (inline style, no external asset), the error page,
//! and the auto-submitting form the LMS and the app use to post through the browser.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::http::page::escape;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#23395d;color:#fff;padding:1rem 2rem}header a{color:#cfe0ff}\
header h1{margin:0;font-size:1.4rem}main{padding:1rem 2rem;max-width:70rem}\
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:.8rem 1.2rem;margin:1rem 0}\
h2{font-size:1.1rem;margin:.2rem 0 .6rem}p{margin:.4rem 0}\
a.button,button{display:inline-block;background:#2f6fde;color:#fff;border:0;border-radius:4px;padding:.45rem .9rem;margin:.2rem .4rem .2rem 0;text-decoration:none;font-size:.95rem;cursor:pointer}\
a.button.secondary{background:#5b6577}\
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #dde1e8;padding:.25rem .6rem;text-align:left;vertical-align:top}\
th{background:#eef1f6}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}\
pre{background:#10151f;color:#d6e2ff;padding:.8rem;border-radius:4px;overflow:auto;font-size:.85rem}\
td pre{max-width:34rem;white-space:pre-wrap;overflow-wrap:anywhere;margin:0}\
.badge{display:inline-block;background:#f0a500;color:#1d2330;border-radius:3px;padding:0 .4rem;font-size:.8rem;font-weight:700}\
.ok{color:#1a7f37;font-weight:600}.bad{color:#b42318;font-weight:600}.muted{color:#5b6577}";

pub(super) fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head>\
         <body><header><h1>{t} <span class=\"badge\">SANDBOX</span></h1>\
         <a href=\"/sandbox\">Start page</a></header><main>{body}</main></body></html>\n",
        t = escape(title),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

pub(super) fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    html(
        status,
        title,
        &format!(
            "<section><p class=\"bad\">{}</p><p><a class=\"button\" href=\"/sandbox\">Back to the start page</a></p></section>",
            escape(detail)
        ),
    )
}

pub(super) fn pretty(v: &Value) -> String {
    escape(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()))
}

/// A page that posts `fields` to `action` as soon as it loads (what LMSs write for a login
/// initiation, and what Deep Linking asks of the tool's answer), with a button for browsers
/// that run no script.
pub(super) fn auto_post(message: &str, action: &str, fields: &[(&str, &str)]) -> Response {
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
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{m}</title></head>\
         <body onload=\"document.forms[0].submit()\"><p>{m}</p>\
         <form method=\"post\" action=\"{action}\">{inputs}<button type=\"submit\">Continue</button></form></body></html>\n",
        m = escape(message),
        action = escape(action),
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}
