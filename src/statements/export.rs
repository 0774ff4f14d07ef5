//! CSV export (pure): one row per line with the statement's header repeated, then the
//! basis and total rows, so a spreadsheet or an import needs no other context.

use super::model::{Line, Statement};

const COLUMNS: [&str; 25] = [
    "statement_id",
    "number",
    "status",
    "partner_id",
    "agreement_id",
    "agreement_version",
    "period",
    "time_zone",
    "currency",
    "line",
    "kind",
    "carried_kind",
    "usage_period",
    "description",
    "meter",
    "product",
    "quantity",
    "unit_price",
    "rate",
    "tier",
    "reference",
    "author",
    "recorded_by",
    "precise",
    "amount",
];

/// RFC 4180 CSV with CRLF line ends. Text that a spreadsheet would run as a formula (it
/// starts with `=`, `+`, `-`, `@`, tab or CR) is prefixed with `'`: descriptions carry
/// customer names from partners' events.
pub fn csv(st: &Statement) -> String {
    let d = &st.document;
    let mut out = String::new();
    push_row(&mut out, COLUMNS.iter().map(|c| (*c).to_owned()).collect());
    let head = |line: String, kind: &str| -> Vec<String> {
        vec![
            st.id.clone(),
            st.number_display.clone().unwrap_or_default(),
            st.status.as_str().to_owned(),
            d.partner_id.clone(),
            d.agreement_id.clone(),
            d.agreement_version.to_string(),
            d.period.clone(),
            d.time_zone.clone(),
            d.currency.clone(),
            line,
            kind.to_owned(),
        ]
    };
    for (i, l) in d.lines.iter().enumerate() {
        let mut row = head((i + 1).to_string(), l.kind.as_str());
        row.extend(line_fields(l));
        push_row(&mut out, row);
    }
    for (kind, desc, amount, precise) in [
        ("revenue_basis", "Revenue basis", d.revenue_basis, None),
        ("total", "Total owed", d.total, Some(d.total_precise)),
    ] {
        let mut row = head(String::new(), kind);
        row.extend([
            String::new(),
            String::new(),
            desc.to_owned(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            precise.map(|p| p.to_string()).unwrap_or_default(),
            amount.to_string(),
        ]);
        push_row(&mut out, row);
    }
    out
}

fn line_fields(l: &Line) -> Vec<String> {
    let opt = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
    vec![
        l.carried_kind
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default(),
        l.period.clone().unwrap_or_default(),
        l.description.clone(),
        l.meter.clone().unwrap_or_default(),
        l.product.clone().unwrap_or_default(),
        opt(l.quantity),
        opt(l.unit_price),
        opt(l.rate),
        l.tier.clone().unwrap_or_default(),
        l.reference.clone().unwrap_or_default(),
        l.author.clone().unwrap_or_default(),
        super::model::describe_recorded_by(&l.recorded_by),
        l.precise.to_string(),
        l.amount.to_string(),
    ]
}

fn push_row(out: &mut String, fields: Vec<String>) {
    let cells: Vec<String> = fields.into_iter().map(|f| cell(&f)).collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

fn cell(v: &str) -> String {
    // Numbers such as "-12.50" are data, not formulas: only text gets the guard.
    let numeric = rust_decimal::Decimal::from_str_exact(v).is_ok();
    let guarded = if !numeric && v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-12.50"), "-12.50");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
    }
}
