//! The console (issue 23) over real HTTP on both backends: sign-in by single-use link and
//! through a staff SSO connection (mock IdP, roles from groups), sessions in the store
//! (served by either of two instances; idle timeout; sign-out everywhere), CSRF and
//! Origin checks on every form, strict headers, finance's month-end to a finalized PDF,
//! the audit log written with each action, and a partner user kept to its own partner on
//! every console route.

use chrono::Utc;
use partner_gateway::audit::Who;
use partner_gateway::console::role::Role;
use partner_gateway::console::session::{LinkKind, create_link};
use partner_sim::idp::{IdpUser, IdpVendor, MockIdp};
use reqwest::redirect::Policy;

use crate::both_backends;
use crate::helpers::TestApp;
use crate::statements::{Ev, at, feed};

/// A browser: its own cookie jar, redirects not followed (each is asserted).
pub(crate) struct Browser {
    pub client: reqwest::Client,
    pub base: String,
}

pub(crate) struct Answer {
    pub status: u16,
    pub location: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(Policy::none())
                .cookie_store(true)
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    async fn answer(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let location = headers
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = r.text().await.unwrap_or_default();
        Answer {
            status,
            location,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        Self::answer(self.client.get(url).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        Self::answer(r).await
    }

    /// Post with the CSRF token of the page at `page`.
    pub async fn submit(&self, page: &str, path: &str, form: &[(&str, &str)]) -> Answer {
        let token = csrf_of(&self.get(page).await.body);
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(form);
        self.post(path, &all).await
    }

    /// Sign in with a single-use link's token, as a person would: open the link, press the
    /// button.
    pub async fn redeem(&self, token: &str) -> Answer {
        let page = self.get(&format!("/console/redeem?token={token}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let pre = attr_after(&page.body, "name=\"pre\" value=\"");
        self.post("/console/redeem", &[("token", token), ("pre", &pre)])
            .await
    }
}

/// The value of the first `name="csrf"` field of a page.
pub(crate) fn csrf_of(html: &str) -> String {
    attr_after(html, "name=\"csrf\" value=\"")
}

fn attr_after(html: &str, marker: &str) -> String {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// A fresh link's token for `role` (at `partner`, for `email`).
pub(crate) async fn link(
    app: &TestApp,
    role: Role,
    partner: Option<&str>,
    email: Option<&str>,
) -> String {
    let kind = if role.is_partner() {
        LinkKind::Invitation
    } else {
        LinkKind::BreakGlass
    };
    let cfg = &app.state.config.console;
    create_link(
        app.db(),
        cfg,
        kind,
        role,
        partner,
        email,
        &Who::cli(),
        Utc::now(),
    )
    .await
    .unwrap()
    .token
}

/// A browser signed in with `role`.
pub(crate) async fn signed_in(app: &TestApp, role: Role, partner: Option<&str>) -> Browser {
    let b = Browser::new(&app.address);
    let email = if role.is_partner() {
        Some("pat@partner.example")
    } else {
        None
    };
    let r = b.redeem(&link(app, role, partner, email).await).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, "/console");
    b
}

async fn audit_actions(app: &TestApp) -> Vec<(String, String, Option<String>)> {
    let sql = "SELECT action, actor, subject_ref FROM audit_log ORDER BY at_us, id";
    partner_gateway::with_db!(app.db(), c => sqlx::query_as(sql).fetch_all(c).await).unwrap()
}

async fn statement_count(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM statements";
    partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(sql).fetch_one(c).await).unwrap()
}

/// October 2026 revenue for the EHR partner and launches for the LMS one.
async fn october(app: &TestApp) {
    let revenue = |amount: &str| {
        Some(
            serde_json::json!({"amount": amount, "currency": "USD", "product": "care-pathways", "customer": "Mercy"}),
        )
    };
    let ehr: Vec<Ev> = vec![
        (
            "r1",
            "revenue.recognized",
            "inv-1",
            "2026-10-03T15:00:00Z",
            revenue("12000.00"),
        ),
        (
            "r2",
            "revenue.recognized",
            "inv-2",
            "2026-10-20T15:00:00Z",
            revenue("3450.55"),
        ),
    ];
    feed(app, "epic-sandbox", &ehr, at("2026-11-02T09:00:00Z")).await;
    let lms: Vec<Ev> = vec![(
        "l1",
        "lti.launch",
        "learner-1",
        "2026-10-15T12:00:00Z",
        None,
    )];
    feed(app, "canvas-sandbox", &lms, at("2026-11-02T09:00:00Z")).await;
}

async fn statement_of(app: &TestApp, partner: &str) -> String {
    let sql = "SELECT id FROM statements WHERE partner_id = $1";
    partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(sql).bind(partner).fetch_one(c).await).unwrap()
}

/// The id in the first `/console/statements/{id}` link of a page.
fn first_statement_link(html: &str) -> String {
    let marker = "href=\"/console/statements/";
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no statement link in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find(['"', '/', '?']).unwrap()].to_owned()
}

both_backends! {
    // The month-end walk finance does: run, open, adjust, finalize with the number shown,
    // download the PDF; each step in the audit log, by the person, from the console.
    async fn finance_runs_a_month_adjusts_finalizes_and_downloads_the_pdf(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        october(&app).await;
        let b = signed_in(&app, Role::Finance, None).await;
        let home = b.get("/console").await;
        assert_eq!((home.status, home.location.as_str()), (303, "/console/finance"));
        let before = b.get("/console/finance?period=2026-10").await;
        assert_eq!(before.status, 200, "{}", before.body);
        assert!(before.body.contains("not run"), "{}", before.body);
        let run = b.submit("/console/finance?period=2026-10", "/console/finance/run", &[("period", "2026-10")]).await;
        assert_eq!(run.status, 303, "{}", run.body);
        assert_eq!(run.location, "/console/finance?period=2026-10");
        let after = b.get(&run.location).await;
        // The run's outcome, kept in the store, is said on the page.
        assert!(after.body.contains("statements computed"), "{}", after.body);
        assert!(after.body.contains("status-draft"), "{}", after.body);
        assert!(after.body.contains("15,450.55 USD") || after.body.contains("USD"), "{}", after.body);
        let id = first_statement_link(&after.body);
        // A run still going is shown with its progress on a page that refreshes itself, and
        // a second one for the period is not started beside it; one whose instance went away
        // says so, and may be started again.
        let now_us = partner_gateway::time::to_micros(Utc::now());
        let sql = "INSERT INTO statement_runs (id, period, started_by, started_at_us, done, total, updated_at_us) \
                   VALUES ('run_live', '2026-10', 'Grace', $1, 3, 100, $1)";
        partner_gateway::with_db!(app.db(), c => sqlx::query(sql).bind(now_us + 1).execute(c).await.map(|_| ())).unwrap();
        let live = b.get("/console/finance?period=2026-10").await;
        assert!(live.body.contains("Running 2026-10: 3 of 100") && live.body.contains("http-equiv=\"refresh\""), "{}", live.body);
        let again = b.submit("/console/finance?period=2026-10", "/console/finance/run", &[("period", "2026-10")]).await;
        assert_eq!(again.status, 303);
        let runs = "SELECT COUNT(*) FROM statement_runs";
        let n: i64 = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(runs).fetch_one(c).await).unwrap();
        assert_eq!(n, 2, "a second run started beside a live one");
        let stale = "UPDATE statement_runs SET updated_at_us = updated_at_us - 600000000 WHERE id = 'run_live'";
        partner_gateway::with_db!(app.db(), c => sqlx::query(stale).execute(c).await.map(|_| ())).unwrap();
        let stopped = b.get("/console/finance?period=2026-10").await;
        assert!(stopped.body.contains("stopped at 3 of 100") && !stopped.body.contains("http-equiv"), "{}", stopped.body);
        let path = format!("/console/statements/{id}");
        let page = b.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let adj = b.submit(&path, &format!("{path}/adjustments"), &[("amount", "-125.00"), ("reason", "Refund <b>agreed</b>")]).await;
        assert_eq!((adj.status, adj.location.clone()), (303, format!("{path}?done=adjusted")), "{}", adj.body);
        let page = b.get(&adj.location).await;
        // The reason is shown escaped, never as markup.
        assert!(page.body.contains("Refund &lt;b&gt;agreed&lt;/b&gt;"), "{}", page.body);
        assert!(page.body.contains("-125.00 USD"), "{}", page.body);
        // A bad amount is refused with the reason, and nothing is added.
        let bad = b.submit(&path, &format!("{path}/adjustments"), &[("amount", "12,5"), ("reason", "x")]).await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("not a decimal amount"), "{}", bad.body);
        // Finalizing needs the box ticked, and shows the number it takes.
        let number = attr_after(&page.body, "name=\"number\" value=\"");
        assert!(number.ends_with("-00001"), "{number}");
        let unticked = b.submit(&path, &format!("{path}/finalize"), &[("number", &number)]).await;
        assert_eq!(unticked.status, 400);
        let stale = b.submit(&path, &format!("{path}/finalize"), &[("number", "X-99999"), ("confirm", "yes")]).await;
        assert_eq!(stale.status, 409, "{}", stale.body);
        let fin = b.submit(&path, &format!("{path}/finalize"), &[("number", &number), ("confirm", "yes")]).await;
        assert_eq!((fin.status, fin.location.clone()), (303, format!("{path}?done=finalized")), "{}", fin.body);
        let issued = b.get(&fin.location).await;
        assert!(issued.body.contains(&number) && issued.body.contains("status-finalized"), "{}", issued.body);
        let pdf = b.get(&format!("{path}/download?format=pdf")).await;
        assert_eq!(pdf.status, 200);
        assert_eq!(pdf.headers["content-type"], "application/pdf");
        assert!(pdf.headers["content-disposition"].to_str().unwrap().contains(&number));
        let csv = b.get(&format!("{path}/download?format=csv")).await;
        assert_eq!(csv.status, 200);
        assert!(csv.body.contains("-125.00"), "{}", csv.body);
        let verify = b.get(&format!("{path}/verify")).await;
        assert!(verify.body.contains("Verified"), "{}", verify.body);
        // Void needs a reason.
        let no_reason = b.submit(&path, &format!("{path}/void"), &[("reason", " ")]).await;
        assert_eq!(no_reason.status, 400, "{}", no_reason.body);
        let actions = audit_actions(&app).await;
        let names: Vec<&str> = actions.iter().map(|a| a.0.as_str()).collect();
        for want in ["console.link.create", "console.signin", "statement.compute", "statement.adjust", "statement.finalize"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let fin_entry = actions.iter().find(|a| a.0 == "statement.finalize").unwrap();
        assert!(fin_entry.1.starts_with("con:link:lnk_"), "{fin_entry:?}");
        assert_eq!(fin_entry.2.as_deref(), Some(id.as_str()));
        // Each refused attempt changed nothing and wrote nothing.
        assert_eq!(names.iter().filter(|n| **n == "statement.adjust").count(), 1);
        app.stop().await;
    }

    // CSRF: a form without the token, with another session's token, or from another site
    // is refused and changes nothing.
    async fn a_form_without_the_right_csrf_token_or_from_another_site_is_refused(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        october(&app).await;
        let b = signed_in(&app, Role::Finance, None).await;
        let other = signed_in(&app, Role::Finance, None).await;
        let theirs = csrf_of(&other.get("/console/finance?period=2026-10").await.body);
        let none = b.post("/console/finance/run", &[("period", "2026-10")]).await;
        assert_eq!(none.status, 403, "{}", none.body);
        assert!(none.body.contains("security token"), "{}", none.body);
        let wrong = b.post("/console/finance/run", &[("period", "2026-10"), ("csrf", &theirs)]).await;
        assert_eq!(wrong.status, 403);
        let mine = csrf_of(&b.get("/console/finance?period=2026-10").await.body);
        let cross = b.client.post(format!("{}/console/finance/run", app.address))
            .header("origin", "https://evil.example")
            .form(&[("period", "2026-10"), ("csrf", mine.as_str())])
            .send().await.unwrap();
        assert_eq!(cross.status(), 403);
        // Fetch metadata: another site's form is refused even with the right token; a
        // privacy-restricted `Origin: null` passes only from this very origin.
        for (origin, site, want) in [
            (None, Some("cross-site"), 403),
            (Some("null"), None, 403),
            (Some("null"), Some("cross-site"), 403),
        ] {
            let mut req = b.client.post(format!("{}/console/finance/run", app.address))
                .form(&[("period", "2026-10"), ("csrf", mine.as_str())]);
            if let Some(o) = origin { req = req.header("origin", o); }
            if let Some(s) = site { req = req.header("sec-fetch-site", s); }
            assert_eq!(req.send().await.unwrap().status(), want, "{origin:?} {site:?}");
        }
        assert_eq!(statement_count(&app).await, 0);
        let same = b.client.post(format!("{}/console/finance/run", app.address))
            .header("origin", "null").header("sec-fetch-site", "same-origin")
            .form(&[("period", "2026-10"), ("csrf", mine.as_str())]).send().await.unwrap();
        assert_eq!(same.status(), 303, "a same-origin form with Origin: null was refused");
        // Signing out is a form too.
        let out = b.post("/console/signout", &[]).await;
        assert_eq!(out.status, 403);
        assert_eq!(b.get("/console/finance").await.status, 200);
        app.stop().await;
    }

    // Sessions live in the store: a second instance serves them; an idle one lapses back to
    // sign-in with the page to return to; sign-out everywhere ends every one of the person's.
    async fn sessions_are_shared_expire_when_idle_and_sign_out_everywhere(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        let second = app.another_instance().await;
        let b = signed_in(&app, Role::Finance, None).await;
        let secret = {
            let token = link(&app, Role::Finance, None, Some("fin@company.example")).await;
            let fresh = Browser::new(&app.address);
            let r = fresh.redeem(&token).await;
            let set = r.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).find(|c| c.starts_with("pgw_console=")).unwrap();
            assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"), "{set}");
            set.split(';').next().unwrap().to_owned()
        };
        let other = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        let r = other.get(format!("{}/console/finance?period=2026-10", second.address)).header("cookie", &secret).send().await.unwrap();
        assert_eq!(r.status(), 200, "the second instance did not know the session");
        // Idle for longer than the timeout: back to sign-in, saying why, coming back here.
        let idle_us = (app.state.config.console.idle_timeout_secs as i64 + 5) * 1_000_000;
        let sql = "UPDATE console_sessions SET last_seen_at_us = last_seen_at_us - $1";
        partner_gateway::with_db!(app.db(), c => sqlx::query(sql).bind(idle_us).execute(c).await.map(|_| ())).unwrap();
        let lapsed = b.get("/console/finance?period=2026-10").await;
        assert_eq!(lapsed.status, 303);
        assert_eq!(lapsed.location, "/console/signin?next=%2Fconsole%2Ffinance%3Fperiod%3D2026-10&expired=1");
        let signin = b.get(&lapsed.location).await;
        assert!(signin.body.contains("Your session ended"), "{}", signin.body);
        // Two sessions of one person (two invitations to the same address), ended together.
        let p1 = Browser::new(&app.address);
        let p2 = Browser::new(&second.address);
        assert_eq!(p1.redeem(&link(&app, Role::PartnerViewer, Some("canvas-sandbox"), Some("Pat@Partner.example")).await).await.status, 303);
        assert_eq!(p2.redeem(&link(&app, Role::PartnerViewer, Some("canvas-sandbox"), Some("pat@partner.example")).await).await.status, 303);
        assert_eq!(p2.get("/console/partner").await.status, 200);
        let out = p1.submit("/console/partner", "/console/signout", &[("everywhere", "1")]).await;
        assert_eq!((out.status, out.location.as_str()), (303, "/console/signin?why=signed-out-everywhere"));
        assert_eq!(p2.get("/console/partner").await.status, 303, "the other session survived sign-out everywhere");
        assert_eq!(p1.get("/console/partner").await.status, 303);
        second.stop().await;
        app.stop().await;
    }

    // A link signs in once, not after it expires or is revoked, and only from the browser
    // that opened it (no login CSRF); opening it spends nothing.
    async fn a_sign_in_link_works_once_and_only_in_the_browser_that_opened_it(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        let token = link(&app, Role::Admin, None, None).await;
        let b = Browser::new(&app.address);
        // Opened twice (a mail scanner, then the person): still good.
        assert_eq!(b.get(&format!("/console/redeem?token={token}")).await.status, 200);
        // Posted from elsewhere (no pairing cookie): refused, and the link still works.
        let attacker = Browser::new(&app.address);
        let forged = attacker.post("/console/redeem", &[("token", &token), ("pre", "x")]).await;
        assert_eq!(forged.status, 403, "{}", forged.body);
        assert_eq!(b.redeem(&token).await.status, 303);
        let again = Browser::new(&app.address).redeem_page_status(&token).await;
        assert_eq!(again, 400);
        assert_eq!(Browser::new(&app.address).redeem_page_status("not-a-token").await, 400);
        let expired = link(&app, Role::Admin, None, None).await;
        let sql = "UPDATE console_links SET expires_at_us = 0 WHERE used_at_us IS NULL";
        partner_gateway::with_db!(app.db(), c => sqlx::query(sql).execute(c).await.map(|_| ())).unwrap();
        assert_eq!(Browser::new(&app.address).redeem_page_status(&expired).await, 400);
        // An admin revokes an invitation from the console; it no longer signs in.
        let inv = link(&app, Role::PartnerAdmin, Some("canvas-sandbox"), Some("new@partner.example")).await;
        let page = b.get("/console/admin/invitations").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let marker = "action=\"/console/admin/invitations/";
        let at = page.body.find(marker).unwrap();
        let rest = &page.body[at + marker.len()..];
        let id = &rest[..rest.find('/').unwrap()];
        let r = b.submit("/console/admin/invitations", &format!("/console/admin/invitations/{id}/revoke"), &[]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(Browser::new(&app.address).redeem_page_status(&inv).await, 400);
        app.stop().await;
    }

    // A partner user reaches its own partner's issued statements and nothing else: every
    // staff page and form is refused, another partner's statement reads as missing.
    async fn a_partner_user_reaches_only_its_own_partner_on_every_console_route(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        october(&app).await;
        let fin = signed_in(&app, Role::Finance, None).await;
        fin.submit("/console/finance?period=2026-10", "/console/finance/run", &[("period", "2026-10")]).await;
        let month = fin.get("/console/finance?period=2026-10").await.body;
        let ids: Vec<String> = month.split("href=\"/console/statements/").skip(1).map(|s| s[..s.find('"').unwrap()].to_owned()).collect();
        assert_eq!(ids.len(), 4, "{month}");
        let epic = statement_of(&app, "epic-sandbox").await;
        let canvas = statement_of(&app, "canvas-sandbox").await;
        for id in [&epic, &canvas] {
            let path = format!("/console/statements/{id}");
            let page = fin.get(&path).await.body;
            let number = attr_after(&page, "name=\"number\" value=\"");
            let r = fin.submit(&path, &format!("{path}/finalize"), &[("number", &number), ("confirm", "yes")]).await;
            assert_eq!(r.status, 303, "{}", r.body);
        }
        let p = signed_in(&app, Role::PartnerAdmin, Some("canvas-sandbox")).await;
        let home = p.get("/console").await;
        assert_eq!(home.location, "/console/partner");
        let mine = p.get("/console/partner").await;
        assert!(mine.body.contains(&canvas) && !mine.body.contains(&epic), "{}", mine.body);
        assert_eq!(p.get(&format!("/console/statements/{canvas}")).await.status, 200);
        assert_eq!(p.get(&format!("/console/statements/{canvas}/download?format=pdf")).await.status, 200);
        let token = csrf_of(&mine.body);
        for path in [
            format!("/console/statements/{epic}"),
            format!("/console/statements/{epic}/download?format=pdf"),
            format!("/console/statements/{epic}/download?format=csv"),
        ] {
            let r = p.get(&path).await;
            assert_eq!(r.status, 404, "{path}: {}", r.body);
            assert!(!r.body.contains("Epic"), "{path} leaked: {}", r.body);
        }
        for path in ["/console/finance", "/console/finance?period=2026-10", "/console/admin/audit", "/console/admin/audit.csv", "/console/admin/invitations", &format!("/console/statements/{canvas}/verify")] {
            let r = p.get(path).await;
            assert_eq!(r.status, 403, "{path}: {}", r.body);
        }
        for path in [
            "/console/finance/run".to_owned(),
            format!("/console/statements/{epic}/void"),
            format!("/console/statements/{canvas}/void"),
            format!("/console/statements/{epic}/adjustments"),
            format!("/console/statements/{epic}/finalize"),
            format!("/console/statements/{epic}/adjustments/adj_x/delete"),
            "/console/admin/invitations".to_owned(),
            "/console/admin/invitations/inv_x/revoke".to_owned(),
        ] {
            let r = p.post(&path, &[("csrf", &token), ("period", "2026-10"), ("reason", "x"), ("amount", "1"), ("confirm", "yes"), ("partner", "epic-sandbox"), ("email", "x@y.example"), ("role", "partner-admin")]).await;
            assert_eq!(r.status, 403, "{path}: {}", r.body);
        }
        // Nothing of the above changed a statement.
        let sql = "SELECT COUNT(*) FROM statements WHERE status = 'finalized'";
        let n: i64 = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(sql).fetch_one(c).await).unwrap();
        assert_eq!(n, 2);
        // Signed out, every page sends to sign-in.
        let anon = Browser::new(&app.address);
        for path in ["/console", "/console/partner", "/console/finance", "/console/admin/audit", &format!("/console/statements/{canvas}")] {
            let r = anon.get(path).await;
            assert_eq!(r.status, 303, "{path}");
            assert!(r.location.starts_with("/console/signin"), "{path}: {}", r.location);
        }
        let posted = anon.post("/console/finance/run", &[("period", "2026-10")]).await;
        assert_eq!((posted.status, posted.location.as_str()), (303, "/console/signin"));
        app.stop().await;
    }

    // The company's staff sign in through the SSO connection marked for the console; the
    // IdP's groups give the role, a person in none is refused, and no launch or usage is
    // recorded for it. A runtime connection cannot be made a staff one.
    async fn staff_sign_in_through_sso_with_the_role_their_groups_give(backend) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        let redirect = format!("{gateway}/sso/oidc/callback");
        let user = |groups: &[&str]| IdpUser { sub: "00u1grace".into(), email: "grace@company.example".into(), name: "Grace Hopper".into(), groups: groups.iter().map(|g| g.to_string()).collect() };
        let idp = MockIdp::start(IdpVendor::Okta, "console-client", "s3cret", &redirect, user(&["finance-team"])).await.unwrap();
        let config = format!(
            "[jobs]\nenabled = false\n[outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n[http]\npublic_url = \"{gateway}\"\n\
             [[partners]]\nid = \"company\"\nname = \"The Company\"\nkind = \"idp\"\n\
             [[partners.sso_connections]]\nid = \"company-okta\"\nprotocol = \"oidc\"\nissuer = \"{}\"\nclient_id = \"console-client\"\nclient_secret = \"s3cret\"\ndomains = [\"company.example\"]\napp_url = \"https://app.example.com/sso\"\n\
             [partners.sso_connections.console]\naudience = \"staff\"\nroles = {{ admin = [\"gw-admins\"], finance = [\"finance-team\"] }}\n",
            idp.issuer()
        );
        let Some(app) = TestApp::spawn_on_listener(backend, listener, &config).await else { return };
        let b = Browser::new(&gateway);
        let signin = b.get("/console/signin").await;
        assert!(signin.body.contains("/console/signin/sso/company-okta"), "{}", signin.body);
        let start = b.get("/console/signin/sso/company-okta").await;
        assert_eq!(start.status, 302, "{}", start.body);
        let cb = b.get(&start.location).await;
        assert_eq!(cb.status, 302, "{}", cb.body);
        let done = b.get(&cb.location).await;
        assert_eq!((done.status, done.location.as_str()), (303, "/console"), "{}", done.body);
        let month = b.get("/console/finance").await;
        assert_eq!(month.status, 200, "{}", month.body);
        assert!(month.body.contains("Grace Hopper") && month.body.contains("Finance"), "{}", month.body);
        assert_eq!(b.get("/console/admin/audit").await.status, 403);
        // Signing in to the console is not the partner's use of the product.
        assert_eq!(app.usage_count("sso.login").await, 0);
        let launches: i64 = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar("SELECT COUNT(*) FROM launches").fetch_one(c).await).unwrap();
        assert_eq!(launches, 0);
        // In no mapped group: refused.
        idp.set_user(user(&["engineering"]));
        let b2 = Browser::new(&gateway);
        let start = b2.get("/console/signin/sso/company-okta").await;
        let cb = b2.get(&start.location).await;
        let refused = b2.get(&cb.location).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.body.contains("none of the groups"), "{}", refused.body);
        assert_eq!(b2.get("/console/finance").await.status, 303);
        // A runtime connection may not be a staff one.
        let admin = app.admin().await;
        let r = reqwest::Client::new().post(app.url("/v1/sso/connections")).bearer_auth(&admin)
            .json(&serde_json::json!({"partner": "company", "id": "rogue", "protocol": "oidc", "issuer": idp.issuer(), "client_id": "x", "client_secret": "y", "app_url": "https://app.example.com/sso", "console": {"audience": "staff", "default_role": "admin"}}))
            .send().await.unwrap();
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "console.audience", "{body}");
        app.stop().await;
    }

    // Every console page carries the strict policy: no inline script or style, never
    // framed, not cached, no referrer; assets are files the gateway serves.
    async fn console_pages_carry_a_strict_policy_and_are_never_framed(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        let b = signed_in(&app, Role::Admin, None).await;
        for path in ["/console/signin", "/console/finance", "/console/admin/audit", "/console/admin/invitations"] {
            let r = b.get(path).await;
            assert_eq!(r.status, 200, "{path}");
            let csp = r.headers["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert_eq!(r.headers["x-frame-options"], "DENY");
            assert_eq!(r.headers["cache-control"], "no-store");
            assert_eq!(r.headers["referrer-policy"], "same-origin");
            assert!(!r.body.contains("<script>") && !r.body.contains(" style="), "{path} has inline script or style");
        }
        let css = b.get("/console/assets/console.css").await;
        assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
        // A period that is not one is refused with the reason; text in it is never markup.
        let bad = b.get("/console/finance?period=%3Cscript%3E").await;
        assert_eq!(bad.status, 400);
        assert!(!bad.body.contains("<script>"));
        app.stop().await;
    }
}

impl Browser {
    async fn redeem_page_status(&self, token: &str) -> u16 {
        self.get(&format!("/console/redeem?token={token}"))
            .await
            .status
    }
}

both_backends! {
    // The usage explorer draws a meter per day as an SVG the page carries inline (escaped
    // text, no script), with the same numbers in a table and as CSV; comparing adds the
    // period before; a partner user charts its own partner only, whatever it asks for.
    async fn the_usage_explorer_charts_a_meter_with_its_table_and_csv(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        let lms: Vec<Ev> = vec![
            ("u1", "lti.launch", "learner-1", "2026-10-14T12:00:00Z", None),
            ("u2", "lti.launch", "learner-2", "2026-10-14T13:00:00Z", None),
            ("u3", "lti.launch", "learner-1", "2026-10-15T12:00:00Z", None),
            ("u4", "lti.launch", "learner-1", "2026-09-15T12:00:00Z", None),
        ];
        feed(&app, "canvas-sandbox", &lms, at("2026-10-16T09:00:00Z")).await;
        feed(&app, "epic-sandbox", &[("e1", "smart.launch", "dr-1", "2026-10-14T12:00:00Z", None)], at("2026-10-16T09:00:00Z")).await;
        let b = signed_in(&app, Role::ReadOnly, None).await;
        let q = "/console/usage?partner=canvas-sandbox&meter=active_learners&window=day&from=2026-10-13&to=2026-10-16";
        let page = b.get(q).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("<svg") && page.body.contains("role=\"img\""), "{}", page.body);
        // Per day, New York days (the agreement's zone): 0, 2, 1, 0.
        let csv = b.get(&format!("{q}&format=csv")).await;
        assert_eq!(csv.status, 200);
        assert_eq!(csv.body, "window_start,canvas-sandbox\r\n2026-10-13,0\r\n2026-10-14,2\r\n2026-10-15,1\r\n2026-10-16,0\r\n", "{}", csv.body);
        let cmp = b.get(&format!("{q}&compare=1&format=csv")).await;
        assert!(cmp.body.starts_with("window_start,canvas-sandbox (2026-10-13 to 2026-10-16),canvas-sandbox (2026-10-09 to 2026-10-12)\r\n"), "{}", cmp.body);
        let bad = b.get("/console/usage?meter=%3Cscript%3E").await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("&lt;script&gt;") && !bad.body.contains("<script>"), "{}", bad.body);
        // A partner user asking for another partner still sees its own.
        let p = signed_in(&app, Role::PartnerViewer, Some("canvas-sandbox")).await;
        let theirs = p.get("/console/usage?partner=epic-sandbox&meter=active_learners&window=day&from=2026-10-13&to=2026-10-16&format=csv").await;
        assert_eq!(theirs.status, 200, "{}", theirs.body);
        assert!(theirs.body.starts_with("window_start,canvas-sandbox\r\n"), "{}", theirs.body);
        assert!(!theirs.body.contains("epic"), "{}", theirs.body);
        app.stop().await;
    }
}

const FAST_WEBHOOKS: &str = "[jobs]\nenabled = false\n[outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n\
[webhooks]\npoll_interval_ms = 20\nretry_schedule_secs = [1, 1, 1]\nretry_jitter_percent = 0\ntimeout_secs = 2\n";

/// The endpoint id in the first endpoint link of the list page.
fn endpoint_link(html: &str) -> String {
    let marker = "href=\"/console/partner/webhooks/";
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no endpoint link in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

both_backends! {
    // A partner administrator, like in Svix's App Portal: adds an endpoint (filters checked
    // against the catalogue, the secret shown once and verifying what arrives), sends a
    // test event, reads the attempt in the delivery log, replays it, disables and rotates;
    // each change in the audit log. A viewer reads but cannot change; another partner's
    // endpoint is not found.
    async fn a_partner_manages_its_webhook_endpoints_and_replays_a_delivery(backend) {
        use partner_sim::receiver::{Receiver, Reply};
        let Some(app) = TestApp::spawn_with(backend, FAST_WEBHOOKS, Default::default()).await else { return };
        let rx = Receiver::start().await.unwrap();
        rx.script([Reply::Body(500, "receiver <b>down</b>".into())]);
        let p = signed_in(&app, Role::PartnerAdmin, Some("canvas-sandbox")).await;
        let list = "/console/partner/webhooks";
        assert_eq!(p.get(list).await.status, 200);
        let bad = p.submit(list, list, &[("url", &rx.url("/hook")), ("event_type", "grades.delivered")]).await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        assert!(bad.body.contains("grades.delivered"), "{}", bad.body);
        let made = p.submit(list, list, &[("url", &rx.url("/hook")), ("description", "LMS <sync>"), ("scheme", "v1"), ("event_type", "webhook.test"), ("event_type", "grade.delivered")]).await;
        assert_eq!(made.status, 200, "{}", made.body);
        let secret = attr_after(&made.body, "id=\"key\" type=\"text\" readonly value=\"");
        assert!(secret.starts_with("whsec_"), "{secret}");
        let id = endpoint_link(&p.get(list).await.body);
        let detail = format!("{list}/{id}");
        let page = p.get(&detail).await;
        assert!(page.body.contains("LMS &lt;sync&gt;"), "{}", page.body);
        assert!(!page.body.contains("whsec_"), "the secret is shown again");
        // A test event reaches this endpoint only; the first answer is a 500, then replayed.
        let t = p.submit(&detail, &format!("{detail}/test"), &[]).await;
        assert_eq!((t.status, t.location.as_str()), (303, detail.as_str()), "{}", t.body);
        assert_eq!(rx.wait_for(1, std::time::Duration::from_secs(20)).await, 1);
        let first = &rx.received()[0];
        assert!(String::from_utf8_lossy(&first.body).contains("\"type\":\"webhook.test\""), "{:?}", first.body);
        let keys = [partner_gateway::webhooks::signature::VerifyingKey::decode(&secret).unwrap()];
        let h = partner_gateway::webhooks::signature::Headers { id: first.header("webhook-id"), timestamp: first.header("webhook-timestamp"), signature: first.header("webhook-signature") };
        assert!(partner_gateway::webhooks::signature::verify(h, &first.body, &keys, 300, Utc::now()).is_ok());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let log = loop {
            let log = p.get(&detail).await.body;
            if log.contains("HTTP 500") || std::time::Instant::now() > deadline { break log; }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert!(log.contains("HTTP 500") && log.contains("receiver &lt;b&gt;down&lt;/b&gt;"), "{log}");
        let at = log.find("/messages/msg_").unwrap();
        let msg = &log[at + "/messages/".len()..];
        let msg = &msg[..msg.find('/').unwrap()];
        let replay_path = format!("{detail}/messages/{msg}/replay");
        let r = p.submit(&detail, &replay_path, &[]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert!(rx.wait_for(2, std::time::Duration::from_secs(20)).await >= 2, "the replay did not arrive");
        // Disable, rotate (a new secret, shown once).
        assert_eq!(p.submit(&detail, &format!("{detail}/enabled"), &[("enabled", "0")]).await.status, 303);
        assert!(p.get(&detail).await.body.contains("status-void"));
        let rot = p.submit(&detail, &format!("{detail}/rotate"), &[]).await;
        assert_eq!(rot.status, 200, "{}", rot.body);
        assert!(rot.body.contains("whsec_") && !rot.body.contains(&secret));
        let actions = audit_actions(&app).await;
        let names: Vec<&str> = actions.iter().map(|a| a.0.as_str()).collect();
        for want in ["webhook.endpoint.create", "webhook.endpoint.test", "webhook.message.replay", "webhook.endpoint.update", "webhook.endpoint.rotate_secret"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        // A viewer of the same partner reads, cannot change.
        let viewer = signed_in(&app, Role::PartnerViewer, Some("canvas-sandbox")).await;
        let seen = viewer.get(&detail).await;
        assert_eq!(seen.status, 200);
        assert!(!seen.body.contains("Send a test event"), "{}", seen.body);
        let token = csrf_of(&seen.body);
        for path in [format!("{detail}/test"), format!("{detail}/rotate"), format!("{detail}/delete"), list.to_owned()] {
            let r = viewer.post(&path, &[("csrf", &token), ("url", "https://x.example/")]).await;
            assert_eq!(r.status, 403, "{path}: {}", r.body);
        }
        // Another partner's administrator: not found, on every endpoint route.
        let other = signed_in(&app, Role::PartnerAdmin, Some("epic-sandbox")).await;
        assert_eq!(other.get(&detail).await.status, 404);
        let token = csrf_of(&other.get(list).await.body);
        for path in [detail.clone(), format!("{detail}/test"), format!("{detail}/enabled"), format!("{detail}/rotate"), format!("{detail}/replay"), format!("{detail}/delete")] {
            let r = other.post(&path, &[("csrf", &token), ("enabled", "1"), ("since", "2026-01-01T00:00"), ("url", "https://x.example/")]).await;
            assert_eq!(r.status, 404, "{path}: {}", r.body);
        }
        assert!(!other.get(list).await.body.contains(&id));
        // Staff have no partner portal of their own.
        let fin = signed_in(&app, Role::Finance, None).await;
        assert_eq!(fin.get(list).await.status, 403);
        // Delete.
        assert_eq!(p.submit(&detail, &format!("{detail}/delete"), &[]).await.location, list);
        assert_eq!(p.get(&detail).await.status, 404);
        app.stop().await;
    }
}

both_backends! {
    // The admin's desk: partners at a glance; a key created (shown once, working at the
    // API) and revoked (refused there); a dead job retried; config SSO connections listed
    // and not deletable; each change in the audit log. A partner's integration page shows
    // its own URLs. None of it reachable by finance or a partner user.
    async fn the_admin_desk_creates_and_revokes_keys_retries_jobs_and_lists_connections(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        let a = signed_in(&app, Role::Admin, None).await;
        let overview = a.get("/console/admin/partners").await;
        assert_eq!(overview.status, 200, "{}", overview.body);
        assert!(overview.body.contains("canvas-sandbox") && overview.body.contains("never"), "{}", overview.body);
        let made = a.submit("/console/admin/keys", "/console/admin/keys", &[("role", "partner"), ("partner", "canvas-sandbox"), ("name", "LMS <sync>")]).await;
        assert_eq!(made.status, 200, "{}", made.body);
        let key = attr_after(&made.body, "id=\"key\" type=\"text\" readonly value=\"");
        assert_eq!(app.get(&key, "/v1/statements").await.status(), 200);
        let list = a.get("/console/admin/keys").await;
        assert!(list.body.contains("LMS &lt;sync&gt;") && !list.body.contains(&key), "{}", list.body);
        // A partner key without a partner is refused with the reason.
        let bad = a.submit("/console/admin/keys", "/console/admin/keys", &[("role", "partner"), ("partner", "")]).await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        let marker = "action=\"/console/admin/keys/";
        let at = list.body.rfind(marker).unwrap();
        let rest = &list.body[at + marker.len()..];
        let id = rest[..rest.find('/').unwrap()].to_owned();
        let r = a.submit("/console/admin/keys", &format!("/console/admin/keys/{id}/revoke"), &[]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        tokio::time::sleep(std::time::Duration::from_millis(app.state.config.http.api_key_cache_ms + 200)).await;
        assert_eq!(app.get(&key, "/v1/statements").await.status(), 401);
        // A dead job, retried.
        let sql = "INSERT INTO jobs (id, kind, partner_id, payload, state, attempts, max_attempts, run_at_us, \
                   created_at_us, updated_at_us, last_error, finished_at_us) \
                   VALUES ('job_dead1', 'lti.score', 'canvas-sandbox', '{}', 'dead', 8, 8, 0, 0, 0, 'the LMS said <no>', 0)";
        partner_gateway::with_db!(app.db(), c => sqlx::query(sql).execute(c).await.map(|_| ())).unwrap();
        let jobs = a.get("/console/admin/jobs").await;
        assert!(jobs.body.contains("job_dead1") && jobs.body.contains("the LMS said &lt;no&gt;"), "{}", jobs.body);
        let r = a.submit("/console/admin/jobs", "/console/admin/jobs/job_dead1/retry", &[]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        let again = a.submit("/console/admin/jobs", "/console/admin/jobs/job_dead1/retry", &[]).await;
        assert_eq!(again.status, 409);
        assert_eq!(a.get("/console/admin/registrations").await.status, 200);
        let sso = a.get("/console/admin/sso").await;
        assert_eq!(sso.status, 200, "{}", sso.body);
        let bad = a.submit("/console/admin/sso", "/console/admin/sso", &[("partner", "canvas-sandbox"), ("definition", "{\"id\": \"x\"}")]).await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        let actions = audit_actions(&app).await;
        let names: Vec<&str> = actions.iter().map(|x| x.0.as_str()).collect();
        for want in ["api_key.create", "api_key.revoke", "job.retry"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        // Finance and partner users reach none of it.
        let fin = signed_in(&app, Role::Finance, None).await;
        let p = signed_in(&app, Role::PartnerAdmin, Some("canvas-sandbox")).await;
        let token = csrf_of(&fin.get("/console/finance").await.body);
        let ptoken = csrf_of(&p.get("/console/partner").await.body);
        for path in ["/console/admin/partners", "/console/admin/keys", "/console/admin/jobs", "/console/admin/registrations", "/console/admin/sso"] {
            assert_eq!(fin.get(path).await.status, 403, "{path}");
            assert_eq!(p.get(path).await.status, 403, "{path}");
        }
        for path in ["/console/admin/keys", "/console/admin/jobs/job_dead1/retry", "/console/admin/registrations/reg_x/approve", "/console/admin/sso", "/console/admin/sso/x/delete", &format!("/console/admin/keys/{id}/revoke")] {
            assert_eq!(fin.post(path, &[("csrf", &token), ("role", "admin")]).await.status, 403, "{path}");
            assert_eq!(p.post(path, &[("csrf", &ptoken), ("role", "admin")]).await.status, 403, "{path}");
        }
        // The partner's integration details: its own LMS URLs, not another's EHR ones.
        let integ = p.get("/console/partner/integration").await;
        assert_eq!(integ.status, 200, "{}", integ.body);
        assert!(integ.body.contains("/lti/login") && integ.body.contains("/lti/config/canvas.json"), "{}", integ.body);
        assert!(!integ.body.contains("/smart/callback"), "{}", integ.body);
        assert_eq!(fin.get("/console/partner/integration").await.status, 403);
        assert_eq!(p.post("/console/partner/integration/test/okta-x", &[("csrf", &ptoken)]).await.status, 404);
        app.stop().await;
    }
}

both_backends! {
    // A partner's people sign in through their own IdP (a connection with audience
    // "partner"), found by their email's domain: the portal of that partner only, with the
    // default role; nothing staff-only.
    async fn partner_users_sign_in_through_their_own_idp_found_by_email_domain(backend) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        let redirect = format!("{gateway}/sso/oidc/callback");
        let user = IdpUser { sub: "u-77".into(), email: "lee@state.example".into(), name: "Lee <Admin>".into(), groups: vec!["lms-admins".into()] };
        let idp = MockIdp::start(IdpVendor::Okta, "portal-client", "s3cret", &redirect, user).await.unwrap();
        let config = format!(
            "[jobs]\nenabled = false\n[outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n[http]\npublic_url = \"{gateway}\"\n\
             [[partners]]\nid = \"state-u\"\nname = \"State University\"\nkind = \"lms\"\n\
             [[partners.sso_connections]]\nid = \"state-entra\"\nprotocol = \"oidc\"\nissuer = \"{}\"\nclient_id = \"portal-client\"\nclient_secret = \"s3cret\"\ndomains = [\"state.example\"]\napp_url = \"https://app.example.com/sso\"\n\
             [partners.sso_connections.console]\naudience = \"partner\"\nroles = {{ \"partner-admin\" = [\"lms-admins\"] }}\ndefault_role = \"partner-viewer\"\n",
            idp.issuer()
        );
        let Some(app) = TestApp::spawn_on_listener(backend, listener, &config).await else { return };
        let b = Browser::new(&gateway);
        let signin = b.get("/console/signin").await;
        // A partner's connection is not offered as a staff button.
        assert!(!signin.body.contains("/console/signin/sso/state-entra"), "{}", signin.body);
        let found = b.get("/console/signin/email?email=lee%40STATE.example").await;
        assert_eq!((found.status, found.location.as_str()), (303, "/console/signin/sso/state-entra"));
        let start = b.get(&found.location).await;
        let cb = b.get(&start.location).await;
        let done = b.get(&cb.location).await;
        assert_eq!((done.status, done.location.as_str()), (303, "/console"), "{}", done.body);
        assert_eq!(b.get("/console").await.location, "/console/partner");
        let portal = b.get("/console/partner").await;
        assert!(portal.body.contains("Lee &lt;Admin&gt;") && portal.body.contains("Partner administrator") && portal.body.contains("state-u"), "{}", portal.body);
        assert_eq!(b.get("/console/finance").await.status, 403);
        // An address whose domain signs in nowhere here: back to sign-in, saying so.
        let nowhere = b.get("/console/signin/email?email=x%40elsewhere.example").await;
        assert_eq!(nowhere.location, "/console/signin?problem=no-connection");
        app.stop().await;
    }
}

both_backends! {
    // Console sessions, links and runs are personal data of their own (names, emails): the
    // retention purge removes them `privacy.retention.console_days` after they ended, and
    // keeps what is live or recent.
    async fn the_retention_purge_removes_old_console_sessions_links_and_runs(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        let _live = signed_in(&app, Role::Finance, None).await;
        let old = partner_gateway::time::to_micros(Utc::now()) - 40 * 86_400_000_000;
        for sql in [
            "INSERT INTO console_sessions (id_hash, person, display_name, email, role, partner_id, via, csrf, created_at_us, last_seen_at_us, expires_at_us, ended_at_us) \
             VALUES ('old', 'email:staff:ex@company.example', 'Ex', 'ex@company.example', 'finance', NULL, 'link x', 'c', $1, $1, $1, $1)",
            "INSERT INTO console_links (id, token_hash, kind, role, partner_id, email, created_by, created_at_us, expires_at_us, used_at_us) \
             VALUES ('inv_old', 'h-old', 'invitation', 'partner-viewer', 'canvas-sandbox', 'ex@partner.example', 'cli', $1, $1, $1)",
            "INSERT INTO statement_runs (id, period, started_by, started_at_us, done, total, updated_at_us, finished_at_us) \
             VALUES ('run_old', '2026-08', 'Ex', $1, 1, 1, $1, $1)",
        ] {
            partner_gateway::with_db!(app.db(), c => sqlx::query(sql).bind(old).execute(c).await.map(|_| ())).unwrap();
        }
        let done = partner_gateway::privacy::purge::purge(app.db(), &app.state.subjects, &app.state.config, Utc::now()).await.unwrap();
        assert_eq!(done.console, 3, "{done:?}");
        let left = "SELECT (SELECT COUNT(*) FROM console_sessions) + (SELECT COUNT(*) FROM console_links) + (SELECT COUNT(*) FROM statement_runs)";
        let n: i64 = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(left).fetch_one(c).await).unwrap();
        // The live session and the link it was opened with stay.
        assert_eq!(n, 2);
        app.stop().await;
    }
}

both_backends! {
    // A statement period charts the days the statement counts, in the agreement's zone, and
    // compares with the period before; a period no agreement covers is refused, saying why.
    async fn the_usage_explorer_charts_a_statement_period_beside_the_one_before(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n", Default::default()).await else { return };
        let lms: Vec<Ev> = vec![
            ("p1", "lti.launch", "learner-1", "2026-10-01T03:30:00Z", None),
            ("p2", "lti.launch", "learner-2", "2026-10-31T12:00:00Z", None),
            ("p3", "lti.launch", "learner-3", "2026-09-30T12:00:00Z", None),
        ];
        feed(&app, "canvas-sandbox", &lms, at("2026-11-02T09:00:00Z")).await;
        let b = signed_in(&app, Role::Finance, None).await;
        let csv = b.get("/console/usage?partner=canvas-sandbox&meter=active_learners&window=month&period=2026-10&compare=1&format=csv").await;
        assert_eq!(csv.status, 200, "{}", csv.body);
        // 03:30 UTC on 1 October is still 30 September in New York: it counts in September.
        assert_eq!(csv.body, "window_start,canvas-sandbox (2026-10-01 to 2026-10-31),canvas-sandbox (2026-09-01 to 2026-09-30)\r\n2026-10,1,2\r\n", "{}", csv.body);
        let bad = b.get("/console/usage?partner=canvas-sandbox&meter=active_learners&period=1999-01").await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        assert!(bad.body.contains("1999-01"), "{}", bad.body);
        app.stop().await;
    }
}
