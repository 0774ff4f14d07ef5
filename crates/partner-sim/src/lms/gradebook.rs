//! The course gradebook as a teacher would look at it in the LMS: every line item (column)
//! with the scores the platform kept, newest last. A sandbox page, not an LTI service: it
//! shows what AGS score posts did to the platform's own records.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{Shared, html_escape, lock};

/// Where the page is served, under the LMS's base URL.
pub(super) const PATH: &str = "/sandbox/gradebook/{ctx}";

/// `canvas` -> `Canvas`.
fn display_name(id: &str) -> String {
    let mut c = id.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

pub(super) async fn page(State(s): State<Arc<Shared>>, Path(ctx): Path<String>) -> Response {
    let at = s.default_url_ctx();
    let (items, scores) = {
        let data = lock(&s.data);
        let items: Vec<Value> = data
            .items(&ctx)
            .iter()
            .map(|item| super::ags::lineitem_json(&s, &ctx, item, &at))
            .collect();
        (items, data.gradebook(&ctx))
    };
    let label_of = |url: &str| {
        items
            .iter()
            .find(|i| i.get("id").and_then(Value::as_str) == Some(url))
            .and_then(|i| i.get("label").and_then(Value::as_str))
            .unwrap_or(url)
            .to_owned()
    };
    let mut rows = String::new();
    for sc in &scores {
        let given = sc
            .score_given
            .map_or_else(|| "(cleared)".to_owned(), |g| g.to_string());
        let max = sc
            .score_maximum
            .map_or_else(String::new, |m| format!(" / {m}"));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"score\">{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&label_of(&sc.line_item)),
            html_escape(&sc.user_id),
            html_escape(&given),
            html_escape(&max),
            html_escape(&sc.grading_progress),
            html_escape(sc.comment.as_deref().unwrap_or("")),
            html_escape(&sc.timestamp),
        ));
    }
    if rows.is_empty() {
        rows = "<tr><td colspan=\"6\">No scores yet: post a grade from the sample app.</td></tr>"
            .into();
    }
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Gradebook: {ctx}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}\
         th{{background:#f3f3f3}}.score{{font-weight:bold}}</style></head>\
         <body><h1>{lms} gradebook</h1><p>Course <code>{ctx}</code> in the mock {lms} at {base}: {n} line item(s), {m} score(s).</p>\
         <table id=\"gradebook\"><tr><th>Line item</th><th>User</th><th>Score</th><th>Grading</th><th>Comment</th><th>Timestamp</th></tr>{rows}</table>\
         </body></html>\n",
        ctx = html_escape(&ctx),
        lms = html_escape(&display_name(s.personality.as_str())),
        base = html_escape(&s.base),
        n = items.len(),
        m = scores.len(),
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
