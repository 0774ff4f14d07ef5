//! What the sample app's back end does with the gateway: calls with an API key, read back
//! with the `X-Gateway-Sandbox` header, and the usage rows the panels show.

use serde_json::Value;

use super::super::run::{Site, USAGE_METER};

/// A gateway answer: status, the `X-Gateway-Sandbox` header, the JSON body.
pub(super) struct Answer {
    pub status: u16,
    pub sandbox: bool,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The API error's detail, or the status.
    pub fn problem(&self) -> String {
        self.body.get("detail").and_then(Value::as_str).map_or_else(
            || format!("the gateway answered {}", self.status),
            str::to_owned,
        )
    }

    pub fn header_line(&self) -> String {
        if self.sandbox {
            "<p class=\"muted\">The gateway's answer carried <code>X-Gateway-Sandbox: true</code>.</p>".into()
        } else {
            "<p class=\"bad\">The gateway's answer carried no X-Gateway-Sandbox header.</p>".into()
        }
    }
}

pub(super) async fn answer(req: reqwest::RequestBuilder) -> Result<Answer, String> {
    let resp = req
        .send()
        .await
        .map_err(|e| format!("the gateway did not answer: {e}"))?;
    let status = resp.status().as_u16();
    let sandbox = resp
        .headers()
        .get(crate::http::sandbox::HEADER)
        .is_some_and(|v| v.as_bytes() == b"true");
    let text = resp
        .text()
        .await
        .map_err(|e| format!("reading the gateway's answer: {e}"))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer {
        status,
        sandbox,
        body,
    })
}

impl Site {
    /// A request to the gateway's API with `key`.
    pub(super) fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.gateway))
            .bearer_auth(key)
    }

    /// The partner's usage events by type, through `GET /v1/usage/query`: whether the
    /// answer marks the partner sandbox, and (type, count) rows.
    pub(super) async fn usage(
        &self,
        partner: &str,
    ) -> Result<(bool, Vec<(String, String)>), String> {
        let from = (chrono::Utc::now() - chrono::Duration::days(366))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let a = answer(
            self.api(reqwest::Method::GET, "/v1/usage/query", &self.admin_key)
                .query(&[
                    ("meter", USAGE_METER),
                    ("partner", partner),
                    ("from", from.as_str()),
                    ("group_by", "type"),
                ]),
        )
        .await?;
        if !a.ok() {
            return Err(a.problem());
        }
        Ok(usage_rows(&a.body))
    }
}

/// (type, count) rows of a usage query grouped by type, and whether it marks the partner a
/// sandbox.
pub(super) fn usage_rows(body: &Value) -> (bool, Vec<(String, String)>) {
    let rows = body
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| {
            let ty = d
                .pointer("/group/type")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let n = match d.get("value") {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => "0".into(),
            };
            (ty, n)
        })
        .collect();
    (
        body.get("sandbox").and_then(Value::as_bool) == Some(true),
        rows,
    )
}

/// Ids are a type prefix and hex (older launches: UUIDs): keep only what they are made of before an id goes into a URL.
pub(super) fn url_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_rows_read_a_grouped_count_and_the_mark() {
        let body = json!({"sandbox": true, "data": [
            {"value": 2, "group": {"type": "smart.launch"}},
            {"value": "3", "group": {"type": "fhir.request"}},
            {"group": {}},
        ]});
        let (marked, rows) = usage_rows(&body);
        assert!(marked);
        let want: Vec<(String, String)> =
            [("smart.launch", "2"), ("fhir.request", "3"), ("?", "0")]
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect();
        assert_eq!(rows, want);
        assert_eq!(usage_rows(&json!({"sandbox": false})), (false, Vec::new()));
    }

    #[test]
    fn url_segments_keep_only_id_characters() {
        assert_eq!(
            url_segment("01a23d7f-b0bf-7348-a756-3b498505caa8"),
            "01a23d7f-b0bf-7348-a756-3b498505caa8"
        );
        assert_eq!(
            url_segment("lch_01a24d61136d7477bb2549c9c616b95b"),
            "lch_01a24d61136d7477bb2549c9c616b95b"
        );
        assert_eq!(url_segment("../../v1/keys?x=1#y"), "v1keysx1y");
    }
}
