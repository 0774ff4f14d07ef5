//! Revenue-share statements over real HTTP, on a ledger fed directly (the issue's fixture):
//! golden statements for each sample agreement, the lifecycle, immutability in the store,
//! late usage, and bad input.

use chrono::{DateTime, Utc};
use partner_gateway::apikeys::Role;
use partner_gateway::metering::UsageEvent;
use partner_gateway::metering::authority::Recorder;
use partner_gateway::metering::store::insert_usage_events;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::TestApp;

pub(crate) fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// One ledger event: (id, type, subject, time, data).
pub(crate) type Ev<'a> = (&'a str, &'a str, &'a str, &'a str, Option<Value>);

/// Write events straight into the ledger as received at `received`.
pub(crate) async fn feed(app: &TestApp, partner: &str, events: &[Ev<'_>], received: DateTime<Utc>) {
    let events: Vec<UsageEvent> = events
        .iter()
        .map(|(id, ty, subject, time, data)| UsageEvent {
            partner_id: partner.into(),
            id: (*id).into(),
            source: "/billing".into(),
            event_type: (*ty).into(),
            subject: Some((*subject).into()),
            time: at(time),
            data: data.clone(),
            extensions: None,
        })
        .collect();
    let mut tx = app.db().begin().await.unwrap();
    // As the gateway (its launches) or the billing system (revenue) would have recorded them.
    let (own, billed): (Vec<UsageEvent>, Vec<UsageEvent>) = events
        .into_iter()
        .partition(|e| partner_gateway::metering::authority::is_gateway_type(&e.event_type));
    let billing = Recorder::Webhook {
        source: "billing".into(),
        trusted: true,
    };
    insert_usage_events(
        &mut tx,
        &app.state.subjects,
        own,
        &Recorder::Gateway,
        received,
    )
    .await
    .unwrap();
    insert_usage_events(&mut tx, &app.state.subjects, billed, &billing, received)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn revenue(amount: &str, product: &str, customer: &str) -> Option<Value> {
    Some(json!({"amount": amount, "currency": "USD", "product": product, "customer": customer}))
}

/// `n` distinct learners launching in October 2026 (New York time).
async fn learners(app: &TestApp, n: usize) {
    let ids: Vec<String> = (0..n).map(|i| format!("launch-{i}")).collect();
    let subjects: Vec<String> = (0..n).map(|i| format!("learner-{i}")).collect();
    let evs: Vec<Ev> = ids
        .iter()
        .zip(&subjects)
        .map(|(id, s)| {
            (
                id.as_str(),
                "lti.launch",
                s.as_str(),
                "2026-10-15T12:00:00Z",
                None,
            )
        })
        .collect();
    for chunk in evs.chunks(1000) {
        feed(app, "canvas-sandbox", chunk, at("2026-11-01T12:00:00Z")).await;
    }
}

pub(crate) async fn finance(app: &TestApp) -> String {
    app.key(Role::Finance, None).await
}

pub(crate) async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn generate(app: &TestApp, key: &str, partner: &str, period: &str) -> Value {
    let (status, body) = post(
        app,
        key,
        "/v1/statements",
        json!({"partner": partner, "period": period}),
    )
    .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    body
}

/// (kind, amount) of each line, for golden comparisons.
fn lines(st: &Value) -> Vec<(String, String)> {
    st["document"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// RFC 4180 as a spreadsheet reads it (quoted cells may hold commas and quotes).
pub(crate) fn parse_csv(csv: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell, mut quoted) = (Vec::new(), Vec::new(), String::new(), false);
    let mut chars = csv.chars().peekable();
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

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn ehr_fixture(app: &TestApp) {
    let received = at("2026-11-02T09:00:00Z");
    feed(
        app,
        "epic-sandbox",
        &[
            (
                "r1",
                "revenue.recognized",
                "inv-1",
                "2026-10-03T15:00:00Z",
                revenue("12000.00", "care-pathways", "Mercy Health"),
            ),
            (
                "r2",
                "revenue.recognized",
                "inv-2",
                "2026-10-20T15:00:00Z",
                revenue("3450.55", "care-pathways", "St. Luke's"),
            ),
            (
                "r3",
                "revenue.recognized",
                "inv-1",
                "2026-10-28T15:00:00Z",
                revenue("-450.00", "care-pathways", "Mercy Health"),
            ),
            (
                "r4",
                "revenue.recognized",
                "inv-3",
                "2026-10-31T20:00:00Z",
                revenue("999.99", "analytics", "Mercy Health"),
            ),
            // 1 November 01:00 in Chicago: November, not October.
            (
                "r5",
                "revenue.recognized",
                "inv-4",
                "2026-11-01T06:00:00Z",
                revenue("500.00", "analytics", "Mercy Health"),
            ),
            // Under version 1 (15%).
            (
                "r6",
                "revenue.recognized",
                "inv-5",
                "2026-06-10T15:00:00Z",
                revenue("1000.00", "analytics", "Mercy Health"),
            ),
            // Not revenue: launches do not count toward the EHR share.
            ("l1", "smart.launch", "dr-who", "2026-10-10T15:00:00Z", None),
        ],
        received,
    )
    .await;
}

both! {
    async fn golden_ehr_statement_is_18_percent_of_net_revenue(app) {
        ehr_fixture(&app).await;
        let key = finance(&app).await;
        let st = generate(&app, &key, "epic-sandbox", "2026-10").await;
        let d = &st["document"];
        assert_eq!(st["status"], "draft");
        assert_eq!(d["agreement_id"], "epic-revenue-share");
        assert_eq!(d["agreement_version"], 2);
        assert_eq!(d["time_zone"], "America/Chicago");
        assert_eq!(d["provisional"], false);
        // Recorded revenue per customer (and product), the refund on a line of its own.
        assert_eq!(lines(&st), pairs(&[
            ("revenue", "999.99"),
            ("revenue", "12000.00"),
            ("revenue", "-450.00"),
            ("revenue", "3450.55"),
            ("share", "2880.10"),
        ]));
        let l = &d["lines"];
        assert_eq!(l[0]["product"], "analytics");
        assert_eq!(l[0]["customer"], "Mercy Health");
        assert_eq!(l[1]["product"], "care-pathways");
        assert_eq!(l[1]["quantity"], "1");
        assert_eq!(l[2]["refund"], true);
        assert_eq!(l[2]["customer"], "Mercy Health");
        assert_eq!(l[3]["customer"], "St. Luke's");
        assert_eq!(l[4]["rate"], "0.18");
        assert_eq!(l[4]["quantity"], "16000.54");
        // 16,000.54 x 18% = 2,880.0972: the precise value is kept beside the rounded one.
        assert_eq!(d["revenue_basis"], "16000.54");
        assert_eq!(l[4]["precise"], "2880.0972");
        assert_eq!(d["total"], "2880.10");
        // No withholding or tax: the payable amount is the total; net 30 from finalization,
        // so a draft has no due date yet.
        assert_eq!(d["form"], 2);
        assert_eq!(d["settlement"]["amount_payable"], "2880.10");
        assert_eq!(d["settlement"]["payment_terms"], json!({"days": 30, "from": "finalization"}));
        assert!(d["settlement"].get("due_date").is_none(), "{d}");
        assert_eq!(d["parties"]["partner"]["legal_name"], "Verona Clinical Interoperability LLC");
        assert_eq!(d["parties"]["partner"]["locale"], "en-US");

        // June falls under version 1 at 15%.
        let june = generate(&app, &key, "epic-sandbox", "2026-06").await;
        assert_eq!(june["document"]["agreement_version"], 1);
        assert_eq!(lines(&june), pairs(&[("revenue", "1000.00"), ("share", "150.00")]));
    }

    async fn golden_lms_statement_grades_the_share_by_active_learners(app) {
        learners(&app, 1500).await;
        feed(&app, "canvas-sandbox", &[
            // The same learner again: still 1,500 distinct.
            ("again", "lti.launch", "learner-7", "2026-10-16T12:00:00Z", None),
            // 30 September 23:30 in New York: September.
            ("sep", "lti.launch", "learner-sep", "2026-10-01T03:30:00Z", None),
            ("c1", "revenue.recognized", "inv-9", "2026-10-05T12:00:00Z", revenue("5000.00", "course-bundle", "State University")),
        ], at("2026-11-01T12:00:00Z")).await;
        let key = finance(&app).await;
        let st = generate(&app, &key, "canvas-sandbox", "2026-10").await;
        // Licence: 1,500 seats is tier 2 (40,000 a year), 1/12 of it for the month; then
        // recorded revenue; the basis 8,333.33 is shared 25% on 1,000 learners' part and
        // 30% on the other 500's.
        assert_eq!(lines(&st), pairs(&[
            ("revenue", "3333.33"),
            ("revenue", "5000.00"),
            ("share", "1388.89"),
            ("share", "833.33"),
        ]));
        let l = &st["document"]["lines"];
        assert_eq!(l[0]["tier"], "2: above 500 up to 2000");
        assert_eq!(l[0]["quantity"], "1500");
        assert_eq!(l[2]["tier"], "1: up to 1000");
        assert_eq!(l[2]["rate"], "0.25");
        assert_eq!(l[3]["tier"], "2: above 1000 up to 5000");
        assert_eq!(l[3]["rate"], "0.3");
        assert_eq!(st["document"]["revenue_basis"], "8333.33");
        assert_eq!(st["document"]["total"], "2222.22");
    }

    async fn golden_lms_december_adds_the_bonus_and_the_minimum_true_up(app) {
        // 5,001 learners in December: the bonus, and the third tier.
        let n = 5001;
        let ids: Vec<String> = (0..n).map(|i| format!("dec-{i}")).collect();
        let subjects: Vec<String> = (0..n).map(|i| format!("learner-{i}")).collect();
        let evs: Vec<Ev> = ids.iter().zip(&subjects)
            .map(|(id, s)| (id.as_str(), "lti.launch", s.as_str(), "2026-12-10T12:00:00Z", None))
            .collect();
        for chunk in evs.chunks(1000) {
            feed(&app, "canvas-sandbox", chunk, at("2026-11-01T12:00:00Z")).await;
        }
        let key = finance(&app).await;
        let st = generate(&app, &key, "canvas-sandbox", "2026-12").await;
        // December is in the future here (today is before 2027): a provisional draft.
        assert_eq!(st["document"]["provisional"], json!(chrono::Utc::now() < at("2027-01-01T05:00:00Z")));
        let kinds: Vec<String> = lines(&st).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, ["revenue", "share", "share", "share", "bonus", "minimum_true_up"]);
        let l = &st["document"]["lines"];
        // Licence tier 3: 100,000 a year, 8,333.33 a month.
        assert_eq!(l[0]["amount"], "8333.33");
        // 8,333.33 x (1000 x 25% + 4000 x 30% + 1 x 35%) / 5001.
        assert_eq!(l[1]["amount"], "416.58");
        assert_eq!(l[2]["amount"], "1999.60");
        assert_eq!(l[3]["amount"], "0.58");
        assert_eq!(l[4]["amount"], "2500.00");
        // The year's minimum (60,000; the agreement runs all of 2026) less what was earned:
        // only December earned anything (416.58 + 1,999.60 + 0.58 + 2,500.00).
        assert_eq!(l[5]["amount"], "55083.24");
        assert_eq!(st["document"]["total"], "60000.00");
    }

    async fn golden_referral_statement_pays_12_percent_per_implementation(app) {
        feed(&app, "northwind-consulting", &[
            ("impl-1", "referral.implementation_completed", "acme", "2026-10-07T10:00:00Z",
             Some(json!({"contract_value": "250000.00", "currency": "USD", "customer": "Acme Clinics"}))),
            ("impl-2", "referral.implementation_completed", "beta", "2026-10-21T10:00:00Z",
             Some(json!({"contract_value": "87500.50", "customer": "Beta Hospital"}))),
            // Revenue is not part of this agreement's basis.
            ("rev", "revenue.recognized", "x", "2026-10-21T10:00:00Z", revenue("1000.00", "p", "c")),
        ], at("2026-11-01T00:00:00Z")).await;
        let key = finance(&app).await;
        let st = generate(&app, &key, "northwind-consulting", "2026-10").await;
        assert_eq!(lines(&st), pairs(&[("referral", "30000.00"), ("referral", "10500.06")]));
        let l = &st["document"]["lines"];
        assert_eq!(l[0]["reference"], "impl-1");
        assert_eq!(l[0]["customer"], "Acme Clinics");
        assert_eq!(l[1]["precise"], "10500.06");
        assert_eq!(l[1]["quantity"], "87500.50");
        assert_eq!(st["document"]["total"], "40500.06");
    }

    async fn golden_marketplace_statement_is_20_percent_and_refunds_reverse(app) {
        feed(&app, "cloud-marketplace", &[
            ("m1", "revenue.recognized", "o1", "2026-10-02T00:00:00Z", revenue("1999.995", "private-offer", "Gamma")),
            ("m2", "revenue.recognized", "o2", "2026-10-09T00:00:00Z", revenue("0.005", "private-offer", "Delta")),
            ("m3", "revenue.recognized", "o1", "2026-10-30T00:00:00Z", revenue("-500.00", "private-offer", "Gamma")),
        ], at("2026-11-01T00:00:00Z")).await;
        let key = finance(&app).await;
        let st = generate(&app, &key, "cloud-marketplace", "2026-10").await;
        // Per customer, each rounded: Delta's 0.005 is a cent, Gamma's 1,999.995 2,000.00,
        // and Gamma's refund its own line. 20% of 1,500.01 = 300.002.
        assert_eq!(lines(&st), pairs(&[
            ("revenue", "0.01"),
            ("revenue", "2000.00"),
            ("revenue", "-500.00"),
            ("share", "300.00"),
        ]));
        assert_eq!(st["document"]["revenue_basis"], "1500.01");
        assert_eq!(st["document"]["lines"][2]["refund"], true);
    }

    // The settlement of each sample agreement: withholding, tax (and a reverse charge),
    // the amount payable and the due date, issued, verified and reproduced from the CSV.
    async fn golden_settlements_withhold_tax_and_fix_the_due_date(app) {
        feed(&app, "northwind-consulting", &[
            ("impl-1", "referral.implementation_completed", "acme", "2026-10-07T10:00:00Z",
             Some(json!({"contract_value": "250000.00", "currency": "USD", "customer": "Acme Clinics"}))),
            ("impl-2", "referral.implementation_completed", "beta", "2026-10-21T10:00:00Z",
             Some(json!({"contract_value": "87500.50", "customer": "Beta Hospital"}))),
        ], at("2026-11-01T00:00:00Z")).await;
        feed(&app, "cloud-marketplace", &[
            ("m1", "revenue.recognized", "o1", "2026-10-02T00:00:00Z",
             Some(json!({"amount": "1500.00", "currency": "USD", "product": "private-offer", "customer": "Gamma", "invoice": "in_77"}))),
        ], at("2026-11-01T00:00:00Z")).await;
        learners(&app, 1500).await;
        let key = finance(&app).await;

        // Northwind: 20% withheld from 40,500.06 (8,100.012), 23% VAT added (9,315.0138).
        let st = generate(&app, &key, "northwind-consulting", "2026-10").await;
        let s = &st["document"]["settlement"];
        assert_eq!(s["gross_share"], "40500.06");
        assert_eq!(s["adjustments"], "0.00");
        assert_eq!(s["net_share"], "40500.06");
        assert_eq!(s["withholding"]["rate"], "0.2");
        assert_eq!(s["withholding"]["base"], "40500.06");
        assert_eq!(s["withholding"]["precise"], "8100.012");
        assert_eq!(s["withholding"]["amount"], "8100.01");
        assert!(s["withholding"]["reference"].as_str().unwrap().contains("Polish CIT Act"));
        assert_eq!(s["tax"]["name"], "VAT");
        assert_eq!(s["tax"]["amount"], "9315.01");
        assert_eq!(s["amount_payable"], "41715.06");
        assert_eq!(st["document"]["parties"]["partner"]["legal_name"], "Northwind Doradztwo Medyczne Sp. z o.o.");
        assert_eq!(st["document"]["parties"]["partner"]["address"][1], "90-926 Łódź");
        // An adjustment changes what is withheld and taxed with it.
        let id = st["id"].as_str().unwrap().to_owned();
        let (code, adj) = post(&app, &key, &format!("/v1/statements/{id}/adjustments"),
            json!({"amount": "-500.06", "reason": "Duplicate milestone credited back"})).await;
        assert_eq!(code, 201, "{adj}");
        let s = &adj["document"]["settlement"];
        assert_eq!(s["adjustments"], "-500.06");
        assert_eq!(s["withholding"]["amount"], "8000.00");
        assert_eq!(s["tax"]["amount"], "9200.00");
        assert_eq!(s["amount_payable"], "41200.00");
        // Finalized: net 14 days from today (UTC, the agreement's zone).
        let (code, fin) = post(&app, &key, &format!("/v1/statements/{id}/finalize"), json!({})).await;
        assert_eq!(code, 200, "{fin}");
        let due = (Utc::now().date_naive() + chrono::Days::new(14)).to_string();
        assert_eq!(fin["document"]["settlement"]["due_date"], due.as_str());
        let v: Value = app.get(&key, &format!("/v1/statements/{id}/verify")).await.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
        // The CSV alone gives the payable amount: total + withholding + tax.
        let csv = app.get(&key, &format!("/v1/statements/{id}?format=csv")).await.text().await.unwrap();
        let rows = parse_csv(&csv);
        let col = |n: &str| rows[0].iter().position(|h| h == n).unwrap();
        let amount_of = |kind: &str| -> rust_decimal::Decimal {
            rows.iter().find(|r| r[col("kind")] == kind).unwrap()[col("amount")].parse().unwrap()
        };
        assert_eq!(amount_of("withholding").to_string(), "-8000.00");
        assert_eq!(
            amount_of("total") + amount_of("withholding") + amount_of("tax"),
            amount_of("amount_payable")
        );
        assert_eq!(amount_of("amount_payable").to_string(), "41200.00");
        assert!(csv.contains(&format!(",{due},")), "{csv}");

        // The marketplace: 10% withheld from the share only; net 30 from the period's end.
        let st = generate(&app, &key, "cloud-marketplace", "2026-10").await;
        let d = &st["document"];
        assert_eq!(d["lines"][0]["invoice"], "in_77");
        assert_eq!(d["settlement"]["withholding"]["applies_to"], json!(["share"]));
        assert_eq!(d["settlement"]["withholding"]["amount"], "30.00");
        assert_eq!(d["settlement"]["amount_payable"], "270.00");
        assert_eq!(d["settlement"]["due_date"], "2026-11-30");
        assert_eq!(d["parties"]["partner"]["legal_name"], "東京クラウドマーケットプレイス株式会社");

        // The LMS partner accounts for the VAT itself: nothing added, the note carried;
        // net 45 from the period's end.
        let st = generate(&app, &key, "canvas-sandbox", "2026-10").await;
        let s = &st["document"]["settlement"];
        assert_eq!(s["tax"]["reverse_charge"], true);
        assert_eq!(s["tax"]["amount"], "0.00");
        assert!(s["tax"]["note"].as_str().unwrap().starts_with("Reverse charge"));
        assert_eq!(s["amount_payable"], st["document"]["total"]);
        assert_eq!(s["due_date"], "2026-12-15");
        // The licence line says its tier in numbers.
        let lic = &st["document"]["lines"][0];
        assert_eq!(lic["tier_range"], json!({"number": 2, "above": "500", "up_to": "2000"}));
        assert_eq!(lic["periods_per_year"], 12);
    }

    // A statement issued before parties, settlement and per-customer revenue (form 1)
    // recomputes in its own form and still verifies.
    async fn a_statement_issued_in_the_first_form_still_verifies(app) {
        learners(&app, 1500).await;
        feed(&app, "canvas-sandbox", &[
            ("c1", "revenue.recognized", "inv-9", "2026-10-05T12:00:00Z", revenue("5000.00", "course-bundle", "State University")),
        ], at("2026-11-01T12:00:00Z")).await;
        let key = finance(&app).await;
        let st = generate(&app, &key, "canvas-sandbox", "2026-10").await;
        let id = st["id"].as_str().unwrap().to_owned();
        // The document as the code before form 2 wrote it: no form, parties or settlement,
        // no customer or tier numbers on lines, revenue described per product.
        let mut old = st["document"].clone();
        let o = old.as_object_mut().unwrap();
        for k in ["form", "parties", "settlement"] {
            o.remove(k);
        }
        for l in o["lines"].as_array_mut().unwrap() {
            let l = l.as_object_mut().unwrap();
            for k in ["customer", "invoice", "refund", "tier_range", "periods_per_year", "change"] {
                l.remove(k);
            }
            if l["kind"] == "revenue" && l.get("product") == Some(&json!("course-bundle")) {
                l.insert("description".into(), json!("Recorded revenue, course-bundle: 1 event(s)"));
            }
        }
        let doc = serde_json::to_string(&old).unwrap();
        partner_gateway::with_db!(app.db(), pool => sqlx::query("UPDATE statements SET document = $1 WHERE id = $2")
            .bind(&doc).bind(&id).execute(pool).await.map(|_| ())).unwrap();
        let (code, fin) = post(&app, &key, &format!("/v1/statements/{id}/finalize"), json!({})).await;
        assert_eq!(code, 200, "{fin}");
        assert_eq!(fin["document"]["form"], 1);
        assert!(fin["document"].get("settlement").is_none());
        let v: Value = app.get(&key, &format!("/v1/statements/{id}/verify")).await.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }

    async fn a_partner_without_activity_still_gets_a_zero_statement(app) {
        let key = finance(&app).await;
        let st = generate(&app, &key, "cloud-marketplace", "2026-09").await;
        assert_eq!(lines(&st), pairs(&[("share", "0.00")]));
        assert_eq!(st["document"]["total"], "0.00");
        let (status, fin) = post(&app, &key, &format!("/v1/statements/{}/finalize", st["id"].as_str().unwrap()), json!({})).await;
        assert_eq!(status, 200, "{fin}");
        assert_eq!(fin["number"], 1);
    }

    async fn finalized_statements_are_numbered_hashed_and_cannot_change(app) {
        ehr_fixture(&app).await;
        let key = finance(&app).await;
        let st = generate(&app, &key, "epic-sandbox", "2026-09").await;
        let id9 = st["id"].as_str().unwrap().to_owned();
        let (s, adj) = post(&app, &key, &format!("/v1/statements/{id9}/adjustments"),
            json!({"amount": "-25.00", "reason": "Credit for the August outage", "author": "Jane Finance"})).await;
        assert_eq!(s, 201, "{adj}");
        assert_eq!(adj["document"]["total"], "-25.00");
        let adj_line = &adj["document"]["lines"][1];
        assert_eq!(adj_line["kind"], "adjustment");
        assert!(adj_line["author"].as_str().unwrap().starts_with("Jane Finance (key "));
        let (s, fin) = post(&app, &key, &format!("/v1/statements/{id9}/finalize"), json!({})).await;
        assert_eq!(s, 200, "{fin}");
        assert_eq!(fin["status"], "finalized");
        assert_eq!(fin["number"], 1);
        assert_eq!(fin["number_display"], "EPIC-SANDBOX-00001");
        let hash = fin["hash"].as_str().unwrap().to_owned();
        assert_eq!(hash.len(), 64);

        // The next period gets the next number.
        let oct = generate(&app, &key, "epic-sandbox", "2026-10").await;
        let id10 = oct["id"].as_str().unwrap().to_owned();
        let (_, fin10) = post(&app, &key, &format!("/v1/statements/{id10}/finalize"), json!({})).await;
        assert_eq!(fin10["number"], 2);

        // Through the API: no recompute, no adjustment, no second finalize.
        let (s, body) = post(&app, &key, "/v1/statements", json!({"partner": "epic-sandbox", "period": "2026-09"})).await;
        assert_eq!(s, 409, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("finalized"), "{body}");
        let (s, _) = post(&app, &key, &format!("/v1/statements/{id9}/adjustments"), json!({"amount": "1.00", "reason": "x"})).await;
        assert_eq!(s, 409);
        let (s, _) = post(&app, &key, &format!("/v1/statements/{id9}/finalize"), json!({})).await;
        assert_eq!(s, 409);

        // Through the store: the database itself refuses.
        let db = app.db();
        for sql in [
            "UPDATE statements SET total = '1000000.00' WHERE id = $1",
            "UPDATE statements SET document = '{}' WHERE id = $1",
            "UPDATE statements SET status = 'draft', number = NULL, hash = NULL WHERE id = $1",
            "DELETE FROM statements WHERE id = $1",
            "UPDATE statement_adjustments SET amount = '0' WHERE statement_id = $1",
            "DELETE FROM statement_adjustments WHERE statement_id = $1",
        ] {
            let r = partner_gateway::with_db!(db, c => sqlx::query(sql).bind(&id9).execute(c).await.map(|r| r.rows_affected()));
            let e = r.expect_err(sql).to_string();
            assert!(e.contains("cannot change"), "{sql}: {e}");
        }
        let r = partner_gateway::with_db!(db, c => sqlx::query(
            "INSERT INTO statement_adjustments (id, statement_id, amount, reason, author, created_at_us) VALUES ('x', $1, '5', 'r', 'a', 0)"
        ).bind(&id9).execute(c).await.map(|r| r.rows_affected()));
        assert!(r.unwrap_err().to_string().contains("cannot change"));

        // Still as finalized, and verifiable from the ledger.
        let got: Value = app.get(&key, &format!("/v1/statements/{id9}")).await.json().await.unwrap();
        assert_eq!(got["hash"], hash.as_str());
        assert_eq!(got["document"]["total"], "-25.00");
        let v: Value = app.get(&key, &format!("/v1/statements/{id9}/verify")).await.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }

    async fn late_usage_is_carried_into_the_next_statement_and_never_changes_the_finalized_one(app) {
        ehr_fixture(&app).await;
        let key = finance(&app).await;
        let oct = generate(&app, &key, "epic-sandbox", "2026-10").await;
        let id10 = oct["id"].as_str().unwrap().to_owned();
        let (_, fin) = post(&app, &key, &format!("/v1/statements/{id10}/finalize"), json!({})).await;
        let hash = fin["hash"].as_str().unwrap().to_owned();

        // October revenue the billing system sends late.
        feed(&app, "epic-sandbox", &[
            ("late-1", "revenue.recognized", "inv-8", "2026-10-30T15:00:00Z", revenue("1000.00", "analytics", "Mercy Health")),
        ], Utc::now()).await;

        // October is untouched and still verifies (it counts what the ledger had at its cut-off).
        let v: Value = app.get(&key, &format!("/v1/statements/{id10}/verify")).await.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
        let got: Value = app.get(&key, &format!("/v1/statements/{id10}")).await.json().await.unwrap();
        assert_eq!(got["hash"], hash.as_str());
        assert_eq!(got["document"]["total"], "2880.10");

        // November carries it, as separate lines naming October.
        let nov = generate(&app, &key, "epic-sandbox", "2026-11").await;
        let carried: Vec<&Value> = nov["document"]["lines"].as_array().unwrap().iter()
            .filter(|l| l["kind"] == "carried_late_usage").collect();
        assert_eq!(carried.len(), 2, "{nov}");
        assert!(carried.iter().all(|l| l["period"] == "2026-10"));
        assert_eq!(carried[0]["carried_kind"], "revenue");
        assert_eq!(carried[0]["amount"], "1000.00");
        assert_eq!(carried[1]["carried_kind"], "share");
        assert_eq!(carried[1]["amount"], "180.00");
        // November's own revenue (r5, 500.00) is shared as usual; the carried revenue is
        // shown but only its share is owed.
        assert_eq!(nov["document"]["revenue_basis"], "500.00");
        assert_eq!(nov["document"]["total"], "270.00");
    }

    async fn void_keeps_the_record_and_a_replacement_references_it(app) {
        ehr_fixture(&app).await;
        let key = finance(&app).await;
        let sep = generate(&app, &key, "epic-sandbox", "2026-09").await;
        let id9 = sep["id"].as_str().unwrap().to_owned();
        post(&app, &key, &format!("/v1/statements/{id9}/finalize"), json!({})).await;
        let oct = generate(&app, &key, "epic-sandbox", "2026-10").await;
        let id10 = oct["id"].as_str().unwrap().to_owned();
        post(&app, &key, &format!("/v1/statements/{id10}/finalize"), json!({})).await;

        // Only the latest finalized statement can be voided, and only with a reason.
        let (s, body) = post(&app, &key, &format!("/v1/statements/{id9}/void"), json!({"reason": "wrong"})).await;
        assert_eq!(s, 409, "{body}");
        let (s, _) = post(&app, &key, &format!("/v1/statements/{id10}/void"), json!({})).await;
        assert_eq!(s, 400);
        let (s, void) = post(&app, &key, &format!("/v1/statements/{id10}/void"), json!({"reason": "Sent with the wrong bank details"})).await;
        assert_eq!(s, 200, "{void}");
        assert_eq!(void["status"], "void");
        assert_eq!(void["void_reason"], "Sent with the wrong bank details");
        assert_eq!(void["number"], 2);
        assert!(void["hash"].is_string());

        let again = generate(&app, &key, "epic-sandbox", "2026-10").await;
        assert_eq!(again["replaces"], id10.as_str());
        let voided: Value = app.get(&key, &format!("/v1/statements/{id10}")).await.json().await.unwrap();
        assert_eq!(voided["replaced_by"], again["id"]);
        assert_ne!(again["id"], id10.as_str());
        let (_, fin) = post(&app, &key, &format!("/v1/statements/{}/finalize", again["id"].as_str().unwrap()), json!({})).await;
        assert_eq!(fin["number"], 3);
        let list: Value = app.get(&key, "/v1/statements?partner=epic-sandbox&period=2026-10").await.json().await.unwrap();
        let statuses: Vec<&str> = list["data"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.contains(&"void") && statuses.contains(&"finalized"));
        let v: Value = app.get(&key, &format!("/v1/statements/{id10}/verify")).await.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }

    async fn periods_are_finalized_in_order_and_not_before_they_end(app) {
        let key = finance(&app).await;
        let aug = generate(&app, &key, "cloud-marketplace", "2026-08").await;
        post(&app, &key, &format!("/v1/statements/{}/finalize", aug["id"].as_str().unwrap()), json!({})).await;
        let oct = generate(&app, &key, "cloud-marketplace", "2026-10").await;
        let (s, body) = post(&app, &key, &format!("/v1/statements/{}/finalize", oct["id"].as_str().unwrap()), json!({})).await;
        assert_eq!(s, 409, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("2026-09"), "{body}");

        // A period that has not ended is a provisional draft, and cannot be finalized.
        let next = chrono::Utc::now() + chrono::Duration::days(40);
        let label = next.format("%Y-%m").to_string();
        let future = generate(&app, &key, "cloud-marketplace", &label).await;
        assert_eq!(future["document"]["provisional"], true);
        let (s, body) = post(&app, &key, &format!("/v1/statements/{}/finalize", future["id"].as_str().unwrap()), json!({})).await;
        assert_eq!(s, 409, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("has not ended"), "{body}");
    }

    async fn bad_requests_get_clear_errors_and_write_nothing(app) {
        let key = finance(&app).await;
        let cases = [
            (json!({"partner": "nobody", "period": "2026-10"}), 404, "unknown partner"),
            (json!({"partner": "epic-sandbox", "period": "2026-13"}), 400, "2026-10"),
            (json!({"partner": "epic-sandbox", "period": "October"}), 400, "2026-10"),
            (json!({"partner": "epic-sandbox", "period": "2025-10"}), 422, "covers 2025-10"),
            (json!({"partner": "epic-sandbox", "period": "2026-10", "agreement": "nope"}), 404, "no agreement"),
            (json!({"partner": "epic-sandbox"}), 400, "period"),
        ];
        for (body, status, needle) in cases {
            let (s, resp) = post(&app, &key, "/v1/statements", body.clone()).await;
            assert_eq!(s, status, "{body} -> {resp}");
            assert!(resp["detail"].as_str().unwrap().contains(needle), "{body} -> {resp}");
        }
        // Revenue in a currency the agreement does not use.
        feed(&app, "cloud-marketplace", &[
            ("eur", "revenue.recognized", "o9", "2026-10-02T00:00:00Z",
             Some(json!({"amount": "100.00", "currency": "EUR", "product": "x"}))),
        ], at("2026-11-01T00:00:00Z")).await;
        let (s, resp) = post(&app, &key, "/v1/statements", json!({"partner": "cloud-marketplace", "period": "2026-10"})).await;
        assert_eq!(s, 422, "{resp}");
        assert_eq!(resp["code"], "currency_mismatch");
        assert!(resp["detail"].as_str().unwrap().contains("\"eur\""), "{resp}");
        let n = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM statements").fetch_one(c).await).unwrap();
        assert_eq!(n, 0);
        // Bad adjustments.
        let st = generate(&app, &key, "epic-sandbox", "2026-10").await;
        // Generating again recomputes the same draft: 200, not a second statement.
        let (s, again) = post(&app, &key, "/v1/statements", json!({"partner": "epic-sandbox", "period": "2026-10"})).await;
        assert_eq!(s, 200, "{again}");
        assert_eq!(again["id"], st["id"]);
        // A draft has nothing issued to verify.
        let r = app.get(&key, &format!("/v1/statements/{}/verify", st["id"].as_str().unwrap())).await;
        assert_eq!(r.status(), 409);
        let path = format!("/v1/statements/{}/adjustments", st["id"].as_str().unwrap());
        for (body, needle) in [
            (json!({"amount": "1.005", "reason": "x"}), "more decimals"),
            (json!({"amount": "0", "reason": "x"}), "zero"),
            (json!({"amount": "ten", "reason": "x"}), "decimal"),
            (json!({"amount": "10.00", "reason": "  "}), "reason"),
        ] {
            let (s, resp) = post(&app, &key, &path, body.clone()).await;
            assert_eq!(s, 400, "{body} -> {resp}");
            assert!(resp["detail"].as_str().unwrap().contains(needle), "{body} -> {resp}");
        }
        let n = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM statement_adjustments").fetch_one(c).await).unwrap();
        assert_eq!(n, 0);
    }

    async fn revenue_events_with_float_amounts_are_refused_at_ingest(app) {
        let key = app.partner_key("cloud-marketplace").await;
        let mut e = crate::helpers::event("f1", "revenue.recognized", "o1", "2026-10-02T00:00:00Z");
        e["data"] = json!({"amount": 19.99, "currency": "USD"});
        let resp = app.post_json(&key, &e).await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert!(body.to_string().contains("JSON float"), "{body}");
        assert_eq!(app.ledger_count().await, 0);
    }

    async fn roles_decide_who_sees_what(app) {
        ehr_fixture(&app).await;
        let key = finance(&app).await;
        let draft = generate(&app, &key, "epic-sandbox", "2026-10").await;
        let id = draft["id"].as_str().unwrap().to_owned();
        let epic = app.partner_key("epic-sandbox").await;
        let other = app.partner_key("canvas-sandbox").await;
        let app_key = app.key(Role::App, None).await;
        // Partners do not see drafts, nor create statements.
        assert_eq!(app.get(&epic, &format!("/v1/statements/{id}")).await.status(), 404);
        let (s, _) = post(&app, &epic, "/v1/statements", json!({"partner": "epic-sandbox", "period": "2026-10"})).await;
        assert_eq!(s, 403);
        let (s, _) = post(&app, &app_key, "/v1/statements", json!({"partner": "epic-sandbox", "period": "2026-10"})).await;
        assert_eq!(s, 403);
        // The app's keys have no business with statements.
        assert_eq!(app.get(&app_key, &format!("/v1/statements/{id}")).await.status(), 403);
        post(&app, &key, &format!("/v1/statements/{id}/finalize"), json!({})).await;
        // Issued: the partner reads its own, in every format; another partner cannot.
        let resp = app.get(&epic, &format!("/v1/statements/{id}")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(app.get(&other, &format!("/v1/statements/{id}")).await.status(), 404);
        let list: Value = app.get(&epic, "/v1/statements").await.json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        let list: Value = app.get(&other, "/v1/statements").await.json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 0);
        assert_eq!(app.get(&other, "/v1/statements?partner=epic-sandbox").await.status(), 403);
        assert_eq!(app.get(&epic, "/v1/statements?status=draft").await.status(), 403);

        let csv = app.get(&epic, &format!("/v1/statements/{id}?format=csv")).await;
        assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
        let text = csv.text().await.unwrap();
        assert!(text.starts_with("statement_id,number,status"), "{text}");
        assert!(text.contains(",share,") && text.contains("2880.10"), "{text}");
        assert!(text.ends_with("\r\n"));
        let pdf = reqwest::Client::new().get(app.url(&format!("/v1/statements/{id}")))
            .bearer_auth(&epic).header("accept", "application/pdf").send().await.unwrap();
        assert_eq!(pdf.headers()["content-type"], "application/pdf");
        assert!(pdf.headers()["content-disposition"].to_str().unwrap().contains("EPIC-SANDBOX-00001.pdf"));
        let bytes = pdf.bytes().await.unwrap();
        assert!(bytes.starts_with(b"%PDF-1.7"), "krilla writes PDF 1.7");
        assert_eq!(app.get(&epic, &format!("/v1/statements/{id}?format=xml")).await.status(), 400);
    }
}

both! {
    async fn splitting_the_events_into_batches_in_any_order_gives_the_same_statement(app) {
        let backend = match app.db().backend() {
            partner_gateway::db::Backend::Sqlite => crate::helpers::Backend::Sqlite,
            partner_gateway::db::Backend::Postgres => crate::helpers::Backend::Postgres,
        };
        let other = TestApp::spawn(backend).await.unwrap();
        let ids: Vec<String> = (0..60).map(|i| format!("e{i}")).collect();
        let subjects: Vec<String> = (0..60).map(|i| format!("learner-{}", i % 45)).collect();
        let times: Vec<String> = (0..60).map(|i| format!("2026-10-{:02}T{:02}:17:00Z", 1 + i % 30, i % 24)).collect();
        let evs: Vec<Ev> = (0..60)
            .map(|i| {
                if i % 4 == 0 {
                    let amount = format!("{}.{:02}", 100 + i * 7, (i * 13) % 100);
                    let amount = if i % 8 == 0 { format!("-{amount}") } else { amount };
                    (ids[i].as_str(), "revenue.recognized", subjects[i].as_str(), times[i].as_str(), revenue(&amount, if i % 3 == 0 { "a" } else { "b" }, "c"))
                } else {
                    (ids[i].as_str(), "lti.launch", subjects[i].as_str(), times[i].as_str(), None)
                }
            })
            .collect();
        feed(&app, "canvas-sandbox", &evs, at("2026-11-01T00:00:00Z")).await;
        let mut reversed = evs.clone();
        reversed.reverse();
        for (n, chunk) in reversed.chunks(7).enumerate() {
            feed(&other, "canvas-sandbox", chunk, at("2026-11-01T00:00:00Z") + chrono::Duration::minutes(n as i64)).await;
        }
        // A repeated batch is a duplicate, not a second count.
        feed(&other, "canvas-sandbox", &evs[..10], at("2026-11-02T00:00:00Z")).await;
        let a = generate(&app, &finance(&app).await, "canvas-sandbox", "2026-10").await;
        let b = generate(&other, &finance(&other).await, "canvas-sandbox", "2026-10").await;
        assert_eq!(a["document"]["lines"], b["document"]["lines"]);
        assert_eq!(a["document"]["total"], b["document"]["total"]);
        assert_ne!(a["document"]["total"], "0.00");
    }
}

/// A quarterly agreement in yen (no minor unit) with banker's rounding, a per-launch price
/// and a volume share whose tiers count the agreement year (from April) so far.
const QUARTERLY: &str = r#"
[jobs]
enabled = false

[[agreements]]
id = "oracle-quarterly"
partner = "oracle-health-sandbox"
valid_from = "2026-04-01"
currency = "JPY"
period = "quarterly"
time_zone = "Asia/Tokyo"
rounding = "half_even"

[agreements.revenue]
recorded = false

[[agreements.revenue.prices]]
meter = "smart_launches"
model = "per_unit"
unit_price = "150.5"

[agreements.share]
meter = "smart_launches"
mode = "volume"
reset = "agreement_year"
tiers = [{ up_to = "10", rate = "10%" }, { rate = "20%" }]
"#;

both! {
    async fn a_quarterly_yen_agreement_rounds_to_whole_yen_and_counts_the_year_so_far(app) {
        let backend = match app.db().backend() {
            partner_gateway::db::Backend::Sqlite => crate::helpers::Backend::Sqlite,
            partner_gateway::db::Backend::Postgres => crate::helpers::Backend::Postgres,
        };
        let app = TestApp::spawn_with(backend, QUARTERLY, partner_gateway::jobs::Handlers::new()).await.unwrap();
        let ids: Vec<String> = (0..15).map(|i| format!("l{i}")).collect();
        let mut evs: Vec<Ev> = Vec::new();
        for id in &ids[..8] {
            evs.push((id.as_str(), "smart.launch", "dr-a", "2026-08-10T03:00:00Z", None));
        }
        for id in &ids[8..12] {
            evs.push((id.as_str(), "smart.launch", "dr-a", "2026-11-10T03:00:00Z", None));
        }
        // 1 October 00:30 in Tokyo: Q4. 1 January 2027 00:30 in Tokyo: not Q4.
        evs.push((ids[12].as_str(), "smart.launch", "dr-a", "2026-09-30T15:30:00Z", None));
        evs.push((ids[13].as_str(), "smart.launch", "dr-a", "2026-12-31T15:30:00Z", None));
        feed(&app, "oracle-health-sandbox", &evs, at("2026-11-15T00:00:00Z")).await;

        let key = finance(&app).await;
        let st = generate(&app, &key, "oracle-health-sandbox", "2026-Q4").await;
        let d = &st["document"];
        assert_eq!(d["currency"], "JPY");
        assert_eq!(d["rounding"], "half_even");
        assert_eq!(d["period_start"], "2026-09-30T15:00:00.000000Z");
        // 5 launches x 150.5 = 752.5 yen, to even: 752. The year so far is 8 + 5 = 13
        // launches: the whole at the second tier's 20%: 150.4 -> 150.
        assert_eq!(lines(&st), pairs(&[("revenue", "752"), ("share", "150")]));
        assert_eq!(d["lines"][0]["precise"], "752.5");
        assert_eq!(d["lines"][1]["tier"], "2: above 10");
        assert_eq!(d["total"], "150");

        // A monthly label for a quarterly agreement says what it expects.
        let (s, body) = post(&app, &key, "/v1/statements", json!({"partner": "oracle-health-sandbox", "period": "2026-10"})).await;
        assert_eq!(s, 400, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("2026-Q4"), "{body}");
    }
}

/// Every page of `path` (which has its query already), `limit` at a time.
pub(crate) async fn all_pages(app: &TestApp, key: &str, path: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = app.get(key, &url).await;
        assert_eq!(r.status(), 200, "{url}");
        let page: Value = r.json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit, "{url}: {} items", data.len());
        out.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(data.len(), limit, "only a full page has a next one");
                cursor = Some(c.to_owned());
            }
            None => return out,
        }
    }
    panic!("{path} never ended");
}

both! {
    // Only webhook messages could be paged; statements stopped at 1000.
    async fn statements_page_by_cursor_in_one_order_without_repeats(app) {
        let key = finance(&app).await;
        for partner in ["epic-sandbox", "canvas-sandbox", "cloud-marketplace"] {
            for period in ["2026-08", "2026-09", "2026-10"] {
                generate(&app, &key, partner, period).await;
            }
        }
        let whole: Value = app.get(&key, "/v1/statements").await.json().await.unwrap();
        let whole: Vec<Value> = whole["data"].as_array().unwrap_or_else(|| panic!("{whole}")).clone();
        assert_eq!(whole.len(), 9);
        for limit in [1, 2, 4] {
            let paged = all_pages(&app, &key, "/v1/statements", limit).await;
            let ids = |v: &[Value]| v.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
            assert_eq!(ids(&paged), ids(&whole), "limit {limit}");
        }
        // Newest period first (by its start, an instant: agreements have zones), then by
        // partner.
        let order: Vec<(String, String)> = whole
            .iter()
            .map(|s| (s["document"]["period_start"].as_str().unwrap().to_owned(), s["document"]["partner"].as_str().unwrap().to_owned()))
            .collect();
        let mut sorted = order.clone();
        sorted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        assert_eq!(order, sorted);
        // Filters hold on every page.
        let epic = all_pages(&app, &key, "/v1/statements?partner=epic-sandbox", 2).await;
        assert_eq!(epic.len(), 3);
        assert!(epic.iter().all(|s| s["document"]["partner"] == "epic-sandbox"));
        // A cursor is read, not trusted: garbage or another list's is a 400 naming it.
        for bad in ["not-a-cursor", "eyJsIjoiam9icyIsImsiOlsxLCJ4Il19"] {
            let r = app.get(&key, &format!("/v1/statements?cursor={bad}")).await;
            assert_eq!(r.status(), 400, "{bad}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "invalid_cursor", "{body}");
        }
        for bad in ["0", "1001"] {
            let body: Value = app.get(&key, &format!("/v1/statements?limit={bad}")).await.json().await.unwrap();
            assert_eq!(body["code"], "invalid_limit", "{body}");
        }
    }
}

/// The company's details as the sample `config/gateway.toml` gives them, the logo by an
/// absolute path (the test's config has no file for a relative one to be relative to).
fn company_section() -> String {
    format!(
        r#"
[statements]
company_name = "Example Learning & Health Software, Inc."
company_address = ["100 Market Street, Suite 400", "San Francisco, CA 94105", "United States"]
company_tax_id = "EIN 94-7654321"
company_contact = ["Partner finance: partner-finance@example.com"]
company_logo = "{}/config/logo.png"
"#,
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Text of a PDF as poppler's pdftotext reads it (the layout kept), and page 1 rendered to
/// a PNG beside the test binaries for a person to look at.
fn pdf_text(pdf: &[u8], name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/statement-pngs");
    let shots = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| std::path::PathBuf::from(d).join("statement-pngs"))
        .unwrap_or(shots);
    std::fs::create_dir_all(&shots).unwrap();
    let png = std::process::Command::new("pdftoppm")
        .args(["-r", "80", "-png", "-f", "1", "-l", "1", "-singlefile"])
        .arg(&path)
        .arg(shots.join(name))
        .output()
        .expect("pdftoppm (poppler-utils) runs");
    assert!(
        png.status.success(),
        "{}",
        String::from_utf8_lossy(&png.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

both! {
    // The four sample statements as a partner receives them: both parties' details, the
    // settlement and the due date, the partner's script and number forms, no internal ids.
    async fn the_sample_statements_render_as_documents_a_partner_can_be_sent(app) {
        let backend = match app.db().backend() {
            partner_gateway::db::Backend::Sqlite => crate::helpers::Backend::Sqlite,
            partner_gateway::db::Backend::Postgres => crate::helpers::Backend::Postgres,
        };
        let app = TestApp::spawn_with(backend, &company_section(), partner_gateway::jobs::Handlers::new()).await.unwrap();
        ehr_fixture(&app).await;
        learners(&app, 1800).await;
        feed(&app, "northwind-consulting", &[
            ("impl-1", "referral.implementation_completed", "acme", "2026-10-07T10:00:00Z",
             Some(json!({"contract_value": "250000.00", "currency": "USD", "customer": "Szpital Uniwersytecki w Krakowie"}))),
        ], at("2026-11-01T00:00:00Z")).await;
        feed(&app, "cloud-marketplace", &[
            ("m1", "revenue.recognized", "o1", "2026-10-02T00:00:00Z",
             Some(json!({"amount": "1234567.50", "currency": "USD", "product": "private-offer", "customer": "東京大学病院", "invoice": "in_77"}))),
            ("m2", "revenue.recognized", "o1", "2026-10-20T00:00:00Z",
             Some(json!({"amount": "-4567.50", "currency": "USD", "product": "private-offer", "customer": "東京大学病院", "invoice": "in_77"}))),
        ], at("2026-11-01T00:00:00Z")).await;
        let key = finance(&app).await;
        let mut texts = Vec::new();
        for partner in ["epic-sandbox", "canvas-sandbox", "northwind-consulting", "cloud-marketplace"] {
            let st = generate(&app, &key, partner, "2026-10").await;
            let id = st["id"].as_str().unwrap().to_owned();
            let (code, fin) = post(&app, &key, &format!("/v1/statements/{id}/finalize"), json!({})).await;
            assert_eq!(code, 200, "{fin}");
            let pdf = reqwest::Client::new().get(app.url(&format!("/v1/statements/{id}")))
                .bearer_auth(&key).header("accept", "application/pdf").send().await.unwrap()
                .bytes().await.unwrap();
            let name = format!("{partner}-{}", app.db().backend().as_str());
            let text = pdf_text(&pdf, &name);
            // Internal ids and ledger internals stay off the page (the statement id only in
            // the verification block's URL).
            assert!(!text.contains("Ledger as of") && !text.contains("precise"), "{text}");
            assert_eq!(text.matches(id.as_str()).count(), 1, "{text}");
            assert!(text.contains("Example Learning & Health Software"), "{text}");
            assert!(text.contains("Tax id: EIN 94-7654321"), "{text}");
            assert!(text.contains("Amount payable (USD)"), "{text}");
            assert!(text.contains(fin["hash"].as_str().unwrap()), "{text}");
            texts.push((partner, fin, text));
        }
        let (_, _, epic) = &texts[0];
        assert!(epic.contains("Verona Clinical Interoperability LLC"), "{epic}");
        assert!(epic.contains("Tax id: EIN 39-1234567"), "{epic}");
        assert!(epic.contains("To: ACH to the account on file ending 4821"), "{epic}");
        assert!(epic.contains("Terms: net 30 days from the date of issue"), "{epic}");
        assert!(epic.contains("Mercy Health") && epic.contains("1 refund"), "{epic}");
        // en-US: 2,880.10; the period in words.
        assert!(epic.contains("2,880.10"), "{epic}");
        assert!(epic.contains("October 1, 2026 – October 31, 2026"), "{epic}");
        let (_, canvas, text) = &texts[1];
        // de-DE: 1.800 seats in tier 2 (501–2.000), the licence at 40.000,00 a year.
        assert!(text.contains("Lernwerk Bildungstechnologie GmbH"), "{text}");
        assert!(text.contains("1.800 seats, tier 2 (501–2.000): 40.000,00 a year, 1/12"), "{text}");
        assert!(text.contains("VAT: reverse charge"), "{text}");
        assert!(text.contains("Payment due: 15. Dezember 2026"), "{text}");
        let payable = canvas["document"]["settlement"]["amount_payable"].as_str().unwrap();
        assert_eq!(payable, canvas["document"]["total"].as_str().unwrap());
        let (_, _, text) = &texts[2];
        // pl-PL: the Polish name as written, withholding and VAT on their own lines.
        assert!(text.contains("Northwind Doradztwo Medyczne Sp. z o.o."), "{text}");
        assert!(text.contains("90-926 Łódź"), "{text}");
        assert!(text.contains("Withholding tax 20%"), "{text}");
        assert!(text.contains("Polish CIT Act"), "{text}");
        // 30,000.00 - 6,000.00 + 6,900.00 (pdftotext writes the no-break spaces as spaces).
        assert!(text.contains("30 900,00"), "{text}");
        let (_, market, text) = &texts[3];
        // ja-JP: the CJK names read back exactly.
        assert!(text.contains("東京クラウドマーケットプレイス株式会社"), "{text}");
        assert!(text.contains("東京大学病院"), "{text}");
        assert!(text.contains("2026年11月30日"), "{text}");
        assert_eq!(market["document"]["settlement"]["amount_payable"], "221400.00");
        assert!(text.contains("221,400.00"), "{text}");
    }
}
