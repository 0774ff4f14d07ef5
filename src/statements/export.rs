//! CSV export (pure): one row per line with the statement's header repeated, then the
//! basis and total rows, so a spreadsheet or an import needs no other context. Statements
//! with a settlement (form 2 on) add its rows: the total owed, the withholding (negative)
//! and the tax sum to the amount payable, so the payment can be reproduced from the CSV.

use super::model::{Line, Statement};

const COLUMNS: [&str; 35] = [
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
    "customer",
    "invoice",
    "refund",
    "partner_legal_name",
    "partner_tax_id",
    "company_legal_name",
    "company_tax_id",
    "payment_terms",
    "due_date",
    "payment_reference",
];

/// RFC 4180 CSV with CRLF line ends. Text that a spreadsheet would run as a formula (it
/// starts with `=`, `+`, `-`, `@`, tab or CR) is prefixed with `'`: descriptions carry
/// customer names from partners' events.
pub fn csv(st: &Statement) -> String {
    let d = &st.document;
    let mut out = String::new();
    push_row(&mut out, COLUMNS.iter().map(|c| (*c).to_owned()).collect());
    let parties = d.parties.as_ref();
    let settlement = d.settlement.as_ref();
    let tail: Vec<String> = vec![
        parties
            .map(|p| p.partner.legal_name.clone())
            .unwrap_or_default(),
        parties
            .and_then(|p| p.partner.tax_id.clone())
            .unwrap_or_default(),
        parties
            .map(|p| p.company.legal_name.clone())
            .unwrap_or_default(),
        parties
            .and_then(|p| p.company.tax_id.clone())
            .unwrap_or_default(),
        settlement
            .and_then(|s| s.payment_terms)
            .map(|t| {
                format!(
                    "net {} days from {}",
                    t.days,
                    t.from.as_str().replace('_', " ")
                )
            })
            .unwrap_or_default(),
        settlement
            .and_then(|s| s.due_date)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        // The statement number is the reference the payment carries.
        st.number_display.clone().unwrap_or_default(),
    ];
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
        row.extend([
            l.customer.clone().unwrap_or_default(),
            l.invoice.clone().unwrap_or_default(),
            if l.refund {
                "true".into()
            } else {
                String::new()
            },
        ]);
        row.extend(tail.iter().cloned());
        push_row(&mut out, row);
    }
    let mut summary: Vec<Summary> = vec![
        Summary::new(
            "revenue_basis",
            "Revenue basis",
            d.revenue_basis.to_string(),
        ),
        Summary {
            precise: d.total_precise.to_string(),
            ..Summary::new("total", "Total owed", d.total.to_string())
        },
    ];
    if let Some(s) = settlement {
        summary.insert(
            1,
            Summary::new(
                "gross_share",
                "Share, fees and late usage",
                s.gross_share.to_string(),
            ),
        );
        summary.insert(
            2,
            Summary::new("adjustments", "Adjustments", s.adjustments.to_string()),
        );
        if let Some(w) = &s.withholding {
            summary.push(Summary {
                quantity: w.base.to_string(),
                rate: w.rate.to_string(),
                precise: (-w.precise).to_string(),
                ..Summary::new(
                    "withholding",
                    &format!("Withholding ({})", w.reference),
                    (-w.amount).to_string(),
                )
            });
        }
        if let Some(t) = &s.tax {
            let desc = match &t.note {
                Some(note) => format!("{} ({note})", t.name),
                None => t.name.clone(),
            };
            summary.push(Summary {
                quantity: t.base.to_string(),
                rate: t.rate.map(|r| r.to_string()).unwrap_or_default(),
                precise: t.precise.to_string(),
                ..Summary::new("tax", &desc, t.amount.to_string())
            });
        }
        summary.push(Summary::new(
            "amount_payable",
            "Amount payable: total owed, withholding and tax",
            s.amount_payable.to_string(),
        ));
    }
    for r in summary {
        let mut row = head(String::new(), r.kind);
        row.extend([
            String::new(),
            String::new(),
            r.description,
            String::new(),
            String::new(),
            r.quantity,
            String::new(),
            r.rate,
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            r.precise,
            r.amount,
            String::new(),
            String::new(),
            String::new(),
        ]);
        row.extend(tail.iter().cloned());
        push_row(&mut out, row);
    }
    out
}

/// A row after the lines: a subtotal, total or settlement figure.
struct Summary {
    kind: &'static str,
    description: String,
    quantity: String,
    rate: String,
    precise: String,
    amount: String,
}

impl Summary {
    fn new(kind: &'static str, description: &str, amount: String) -> Summary {
        Summary {
            kind,
            description: description.to_owned(),
            quantity: String::new(),
            rate: String::new(),
            precise: String::new(),
            amount,
        }
    }
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::statements::model::{
        Document, LineKind, Parties, Party, PaymentTerms, Settlement, Status, Tax, TermsFrom,
        Withholding,
    };
    use rust_decimal::Decimal;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn statement() -> Statement {
        let mut share = Line::new(LineKind::Share, "Share 20% of revenue 1500.00");
        share.amount = dec("300.00");
        share.precise = dec("300.002");
        let mut adj = Line::new(LineKind::Adjustment, "=cmd|' /C calc'!A0");
        adj.amount = dec("-10.00");
        adj.precise = dec("-10.00");
        let mut rev = Line::new(LineKind::Revenue, "Recorded revenue");
        rev.customer = Some("Łódź, \"Szpital\"".into());
        rev.invoice = Some("in_1".into());
        rev.amount = dec("1500.00");
        rev.precise = dec("1500.00");
        let at = chrono::DateTime::UNIX_EPOCH;
        let document = Document {
            company: "Acme".into(),
            partner_id: "p".into(),
            partner_name: "P".into(),
            agreement_id: "a".into(),
            agreement_version: 1,
            period: "2026-10".into(),
            period_start: at,
            period_end: at,
            time_zone: "UTC".into(),
            currency: "EUR".into(),
            rounding: "half_away_from_zero".into(),
            ledger_as_of: at,
            carried_since: None,
            provisional: false,
            provenance: true,
            self_reported_events: None,
            lines: vec![rev, share, adj],
            revenue_basis: dec("1500.00"),
            total: dec("290.00"),
            total_precise: dec("290.002"),
            form: 2,
            parties: Some(Parties {
                company: Party {
                    legal_name: "Acme Inc.".into(),
                    tax_id: Some("EIN 1".into()),
                    ..Party::default()
                },
                partner: Party {
                    legal_name: "東京大学病院".into(),
                    tax_id: Some("T123".into()),
                    ..Party::default()
                },
            }),
            settlement: Some(Settlement {
                gross_share: dec("300.00"),
                adjustments: dec("-10.00"),
                net_share: dec("290.00"),
                withholding: Some(Withholding {
                    rate: dec("0.1"),
                    applies_to: vec![LineKind::Share],
                    base: dec("300.00"),
                    precise: dec("30.00"),
                    amount: dec("30.00"),
                    reference: "Treaty art. 12".into(),
                }),
                tax: Some(Tax {
                    name: "VAT".into(),
                    rate: Some(dec("0.23")),
                    base: dec("290.00"),
                    precise: dec("66.7"),
                    amount: dec("66.70"),
                    reverse_charge: false,
                    note: None,
                }),
                amount_payable: dec("326.70"),
                payment_terms: Some(PaymentTerms {
                    days: 30,
                    from: TermsFrom::PeriodEnd,
                }),
                due_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 30),
            }),
        };
        Statement {
            id: "stmt_1".into(),
            status: Status::Finalized,
            number: Some(3),
            number_display: Some("P-00003".into()),
            hash: Some("ab".into()),
            document,
            computed_at: at,
            finalized_at: Some(at),
            finalized_by: Some("jane".into()),
            voided_at: None,
            voided_by: None,
            void_reason: None,
            replaces: None,
            replaced_by: None,
            settling: None,
        }
    }

    /// Reads the CSV back as a spreadsheet would (RFC 4180 quoting).
    fn parse(csv: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let (mut row, mut cell, mut quoted, mut chars) =
            (Vec::new(), String::new(), false, csv.chars().peekable());
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => cell.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut cell)),
                (false, '\r') => {}
                (false, '\n') => {
                    row.push(std::mem::take(&mut cell));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => cell.push(c),
            }
        }
        rows
    }

    /// A spreadsheet reproduces the amount payable from the CSV alone: the owed lines sum
    /// to the total, and total + withholding + tax is the payable row.
    #[test]
    fn the_payable_amount_is_reproduced_from_the_csv_alone() {
        let rows = parse(&csv(&statement()));
        let head = &rows[0];
        let col = |name: &str| head.iter().position(|h| h == name).unwrap();
        assert!(rows.iter().all(|r| r.len() == head.len()), "{rows:?}");
        let (kind, amount) = (col("kind"), col("amount"));
        let sum = |kinds: &[&str]| -> Decimal {
            rows[1..]
                .iter()
                .filter(|r| kinds.contains(&r[kind].as_str()))
                .map(|r| dec(&r[amount]))
                .sum()
        };
        let owed = sum(&[
            "share",
            "referral",
            "bonus",
            "minimum_true_up",
            "carried_late_usage",
            "adjustment",
        ]);
        assert_eq!(owed, sum(&["total"]));
        assert_eq!(
            sum(&["total", "withholding", "tax"]),
            sum(&["amount_payable"])
        );
        assert_eq!(sum(&["amount_payable"]), dec("326.70"));
        let w = rows.iter().find(|r| r[kind] == "withholding").unwrap();
        assert_eq!(w[col("rate")], "0.1");
        assert_eq!(w[col("quantity")], "300.00");
        assert!(w[col("description")].contains("Treaty art. 12"));
        let last = rows.last().unwrap();
        assert_eq!(last[col("partner_legal_name")], "東京大学病院");
        assert_eq!(last[col("company_tax_id")], "EIN 1");
        assert_eq!(last[col("due_date")], "2026-11-30");
        assert_eq!(last[col("payment_terms")], "net 30 days from period end");
        assert_eq!(last[col("payment_reference")], "P-00003");
        let rev = rows.iter().find(|r| r[kind] == "revenue").unwrap();
        assert_eq!(rev[col("customer")], "Łódź, \"Szpital\"");
        assert_eq!(rev[col("invoice")], "in_1");
        // A description that would run as a formula is defused.
        let adj = rows.iter().find(|r| r[kind] == "adjustment").unwrap();
        assert!(adj[col("description")].starts_with("'="));
    }

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
