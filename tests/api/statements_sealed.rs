//! An issued statement stays what was issued, whatever SQL reaches the store (issue 17, M5),
//! and a change that gets past the store's guards is found and reported.

use partner_gateway::apikeys::Role;
use partner_gateway::db::Db;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::TestApp;

/// A finalized statement of northwind-consulting for October 2026: (id, its row's total).
async fn issued(app: &TestApp) -> String {
    let finance = app.key(Role::Finance, None).await;
    let r = app
        .client
        .post(app.url("/v1/statements"))
        .bearer_auth(&finance)
        .json(&json!({"partner": "northwind-consulting", "period": "2026-10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let st: Value = r.json().await.unwrap();
    let id = st["id"].as_str().unwrap().to_owned();
    let r = app
        .client
        .post(app.url(&format!("/v1/statements/{id}/finalize")))
        .bearer_auth(&finance)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    id
}

async fn total(app: &TestApp, id: &str) -> String {
    partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(
        "SELECT total FROM statements WHERE id = $1").bind(id).fetch_one(c).await)
    .unwrap()
}

async fn readyz(app: &TestApp) -> Value {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

both! {
    async fn an_issued_statement_cannot_be_replaced_or_truncated(app) {
        let id = issued(&app).await;
        let before = total(&app, &id).await;
        match app.db() {
            Db::Sqlite(pool) => {
                let mut c = pool.acquire().await.unwrap();
                sqlx::query("CREATE TEMP TABLE forged AS SELECT * FROM statements WHERE id = $1")
                    .bind(&id).execute(&mut *c).await.unwrap();
                sqlx::query("UPDATE forged SET total = '999999.00'").execute(&mut *c).await.unwrap();
                // Same id: REPLACE would delete the issued row without its DELETE trigger.
                let e = sqlx::query("INSERT OR REPLACE INTO statements SELECT * FROM forged")
                    .execute(&mut *c).await.unwrap_err();
                assert!(e.to_string().contains("statement is issued"), "{e}");
                // Another id, the same agreement and period: the live-statement index would
                // make REPLACE delete the issued one.
                sqlx::query("UPDATE forged SET id = 'stmt_forged', number = 99").execute(&mut *c).await.unwrap();
                let e = sqlx::query("INSERT OR REPLACE INTO statements SELECT * FROM forged")
                    .execute(&mut *c).await.unwrap_err();
                assert!(e.to_string().contains("statement is issued"), "{e}");
                let e = sqlx::query("REPLACE INTO statement_adjustments (id, statement_id, amount, reason, author, created_at_us) VALUES ('adj_x', $1, '-1.00', 'r', 'a', 0)")
                    .bind(&id).execute(&mut *c).await.unwrap_err();
                assert!(e.to_string().contains("statement is issued"), "{e}");
            }
            Db::Postgres(pool) => {
                for sql in ["TRUNCATE statements CASCADE", "TRUNCATE statement_adjustments", "TRUNCATE partners CASCADE"] {
                    let e = sqlx::query(sql).execute(pool).await.unwrap_err();
                    assert!(e.to_string().contains("statement is issued"), "{sql}: {e}");
                }
            }
        }
        assert_eq!(total(&app, &id).await, before);
        let finance = app.key(Role::Finance, None).await;
        let v: Value = app.get(&finance, &format!("/v1/statements/{id}/verify")).await.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }

    async fn a_changed_issued_statement_is_reported_by_the_integrity_check_and_readyz(app) {
        let id = issued(&app).await;
        let watch = &app.state.statement_integrity;
        let ok = watch.refresh(app.db(), chrono::Utc::now()).await.unwrap();
        assert_eq!((ok.issued, ok.mismatched.len()), (1, 0));
        assert_eq!(readyz(&app).await["statements"]["hashes"], "match");
        // Someone with the database's owner rights switches the guards off and edits it.
        let edit = "UPDATE statements SET document = replace(document, '\"total\":\"0.00\"', '\"total\":\"50000.00\"') WHERE id = $1";
        match app.db() {
            Db::Sqlite(pool) => {
                sqlx::query("DROP TRIGGER statements_issued_are_immutable").execute(pool).await.unwrap();
                let n = sqlx::query(edit).bind(&id).execute(pool).await.unwrap().rows_affected();
                assert_eq!(n, 1);
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("ALTER TABLE statements DISABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
                sqlx::query(edit).bind(&id).execute(&mut *tx).await.unwrap();
                sqlx::query("ALTER TABLE statements ENABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        }
        let found = watch.refresh(app.db(), chrono::Utc::now()).await.unwrap();
        assert_eq!(found.mismatched.len(), 1, "{found:?}");
        assert!(found.mismatched[0].starts_with(&id), "{found:?}");
        let r = readyz(&app).await;
        assert_eq!(r["status"], "ready", "{r}");
        assert_eq!(r["statements"]["hashes"], "MISMATCH", "{r}");
        assert!(r["statements"]["mismatched"][0].as_str().unwrap().contains("NORTHWIND-CONSULTING-00001"), "{r}");
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        // (The gauge is process-wide, shared with concurrent tests: its presence is checked.)
        assert!(metrics.contains("gateway_statements_hash_mismatches"), "{metrics}");
    }
}
