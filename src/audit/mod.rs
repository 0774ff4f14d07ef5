//! The audit log: who did what to whose data or money, when and from where. Every console
//! action, every statement change through the API or CLI, and every privacy request writes
//! one entry in the same transaction as the change itself, so there is never a change
//! without its entry, nor an entry for a change that rolled back. Kept for
//! `privacy.retention.audit_log_days`; admins read it in the console and export it as CSV.

pub mod store;

use serde_json::Value;

/// Who is acting, as the log names them.
#[derive(Debug, Clone)]
pub struct Who {
    /// An API key id, `cli`, or a console person (`con:{email or connection:subject}`).
    pub id: String,
    pub role: String,
    pub partner: Option<String>,
    /// `api <request id>`, `cli <host>` or `console <address> <request id>`.
    pub origin: String,
}

impl Who {
    /// The command line: the operator's login name on this host.
    pub fn cli() -> Who {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown host".into());
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown user".into());
        Who {
            id: "cli".into(),
            role: "operator".into(),
            partner: None,
            origin: format!("cli {user}@{host}"),
        }
    }

    /// An entry of this actor's.
    pub fn entry<'a>(
        &'a self,
        action: &'a str,
        partner_id: Option<&'a str>,
        subject_ref: Option<&'a str>,
        detail: &'a Value,
    ) -> Entry<'a> {
        Entry {
            actor: &self.id,
            actor_role: &self.role,
            actor_partner: self.partner.as_deref(),
            action,
            partner_id,
            subject_ref,
            origin: &self.origin,
            detail,
        }
    }
}

/// One audit entry, as written.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub actor: &'a str,
    pub actor_role: &'a str,
    pub actor_partner: Option<&'a str>,
    /// `statement.finalize`, `webhook.endpoint.create`, `privacy.erase`...
    pub action: &'a str,
    /// The partner whose data or money it touched.
    pub partner_id: Option<&'a str>,
    /// What it touched: a statement id, an endpoint id, a keyed hash of a person.
    pub subject_ref: Option<&'a str>,
    pub origin: &'a str,
    /// What was done, as JSON (ids and amounts; no personal fields).
    pub detail: &'a Value,
}

/// CSV of entries, newest first, for an admin's download (RFC 4180 quoting; a cell that a
/// spreadsheet would run as a formula is prefixed with `'`).
pub fn csv(records: &[store::Record]) -> String {
    let mut out = String::from(
        "id,at,actor,actor_role,actor_partner,action,partner_id,subject_ref,origin,detail\r\n",
    );
    for r in records {
        let at =
            crate::time::from_micros(r.at_us).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let cells = [
            r.id.as_str(),
            &at,
            &r.actor,
            &r.actor_role,
            r.actor_partner.as_deref().unwrap_or(""),
            &r.action,
            r.partner_id.as_deref().unwrap_or(""),
            r.subject_ref.as_deref().unwrap_or(""),
            &r.origin,
            &r.detail,
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One CSV cell: quoted where RFC 4180 needs it, and a leading character that would make a
/// spreadsheet run it as a formula defused.
pub fn csv_cell(s: &str) -> String {
    // OWASP CSV injection: a leading = + - @ tab or CR makes a spreadsheet evaluate it.
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let r = store::Record {
            id: "aud_1".into(),
            at_us: 0,
            actor: "=HYPERLINK(\"x\")".into(),
            actor_role: "admin".into(),
            actor_partner: None,
            action: "statement.void".into(),
            partner_id: Some("p".into()),
            subject_ref: None,
            origin: "console 127.0.0.1".into(),
            detail: "{\"reason\":\"a, b\"}".into(),
        };
        let text = csv(&[r]);
        let row = text.lines().nth(1).unwrap_or_default();
        assert!(row.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{row}");
        assert!(row.contains("\"{\"\"reason\"\":\"\"a, b\"\"}\""), "{row}");
        assert!(
            row.starts_with("aud_1,1970-01-01T00:00:00.000000Z,"),
            "{row}"
        );
    }
}
