//! The sandbox site: the start page listing every flow, the "click to launch" of the mock
//! EHRs and LMSs, and a sample app that receives the handoff, exchanges the code
//! server-side with the app key and shows the launch context with its follow-on actions.
//!
//! Handlers here do what the partner's system or the app's back end would do, through the
//! gateway's public endpoints only; small HTML, no script but the auto-post of a form, no
//! external asset (the sandbox works offline).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::run::{
    CANVAS, COURSE, LTI_CLIENT, LTI_DEPLOYMENT, MOODLE, OKTA, PARTNERS, SHIBBOLETH, Site,
    USAGE_METER, console_signin,
};
use crate::http::page::escape;
use client::{Answer, answer, url_segment};
use html::{auto_post, error_page, html, pretty};
use partner_sim::ehr::{LaunchContext, MockEhr};
use partner_sim::lms::{LaunchSpec, MockLms, MockUser};

mod client;
mod html;

type S = State<Arc<Site>>;

pub fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/sandbox") }))
        .route("/sandbox", get(start_page))
        .route("/ehr/{vendor}/launch", get(ehr_launch))
        .route("/lms/{vendor}/launch", get(lms_launch))
        .route("/app", get(app_handoff))
        .route("/app/{launch_id}", get(app_page))
        .route("/app/{launch_id}/patient", get(app_patient))
        .route("/app/{launch_id}/grade", post(app_grade))
        .route("/app/{launch_id}/deep-link", post(app_deep_link))
        .route("/webhooks", get(webhooks_page))
        .route("/reading", get(reading))
        .with_state(site)
}

impl Site {
    fn ehr(&self, vendor: &str) -> Option<&MockEhr> {
        match vendor {
            "epic" => Some(&self.sims.epic),
            "oracle" => Some(&self.sims.oracle),
            _ => None,
        }
    }

    fn lms(&self, vendor: &str) -> Option<&MockLms> {
        match vendor {
            "canvas" => Some(&self.sims.canvas),
            "moodle" => Some(&self.sims.moodle),
            _ => None,
        }
    }

    fn lms_of_partner(&self, partner: &str) -> Option<&MockLms> {
        match partner {
            CANVAS => Some(&self.sims.canvas),
            MOODLE => Some(&self.sims.moodle),
            _ => None,
        }
    }

    async fn usage_table(&self, partner: &str) -> String {
        match self.usage(partner).await {
            Ok((marked, rows)) => {
                let mut out = format!(
                    "<table class=\"usage\" id=\"usage-{p}\"><tr><th colspan=\"2\">{p} {mark}</th></tr><tr><th>event type</th><th>count</th></tr>",
                    p = escape(partner),
                    mark = if marked {
                        "<span class=\"badge\">sandbox: true</span>"
                    } else {
                        ""
                    },
                );
                if rows.is_empty() {
                    out.push_str(
                        "<tr><td colspan=\"2\" class=\"muted\">nothing recorded yet</td></tr>",
                    );
                }
                for (ty, n) in rows {
                    out.push_str(&format!(
                        "<tr><td><code>{}</code></td><td>{}</td></tr>",
                        escape(&ty),
                        escape(&n)
                    ));
                }
                out.push_str("</table>");
                out
            }
            Err(e) => format!(
                "<p class=\"bad\">usage of {}: {}</p>",
                escape(partner),
                escape(&e)
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Start page

async fn start_page(State(site): S) -> Response {
    let g = escape(&site.gateway);
    let canvas_book = escape(&site.sims.canvas.gradebook_url(COURSE));
    let moodle_book = escape(&site.sims.moodle.gradebook_url(COURSE));
    let mut usage = String::new();
    for p in PARTNERS {
        usage.push_str(&site.usage_table(p).await);
    }
    let received = site.sims.receiver.count();
    let console = escape(&console_signin(&site.gateway));
    let body = format!(
        r#"<section><p>The real gateway runs at <a href="{g}/healthz">{g}</a> on its embedded SQLite store,
with simulators of two EHRs, two LMSs and two identity providers registered as <em>sandbox partners</em>
(ids starting <code>sbx-</code>; never billed, marked <code>X-Gateway-Sandbox: true</code> on every answer).
Each button below starts a real flow through the gateway and ends on the <strong>sample app</strong>,
which exchanges the one-time code with an app key and shows what it received.</p></section>

<section id="flow-ehr"><h2>1. EHR launch (SMART on FHIR)</h2>
<p>The clinician opens the app from a patient's chart: the EHR sends <code>iss</code> and <code>launch</code>
to <code>/smart/launch</code>; the gateway authorizes with PKCE, exchanges the code and hands the context to the app.</p>
<a class="button" id="ehr-epic" href="/ehr/epic/launch">Launch from Epic</a>
<a class="button" id="ehr-oracle" href="/ehr/oracle/launch">Launch from Oracle Health</a>
<p class="muted">On the app page: read the patient through the FHIR proxy.</p></section>

<section id="flow-lti"><h2>2. LTI 1.3 launch</h2>
<p>A learner opens the activity in the course: the LMS posts a login initiation to <code>/lti/login</code>,
authenticates, and posts the signed <code>id_token</code> to <code>/lti/launch</code>.</p>
<a class="button" id="lti-canvas" href="/lms/canvas/launch">Launch from Canvas</a>
<a class="button" id="lti-moodle" href="/lms/moodle/launch">Launch from Moodle</a></section>

<section id="flow-deep-linking"><h2>3. Deep linking</h2>
<p>A teacher adds the tool's content to the course.</p>
<a class="button" id="dl-canvas" href="/lms/canvas/launch?message=deep-linking">Canvas: pick in the gateway's picker</a>
<a class="button" id="dl-moodle" href="/lms/moodle/launch?message=deep-linking">Moodle: the app chooses (API)</a></section>

<section id="flow-grades"><h2>4. A grade posted, seen in the gradebook</h2>
<p>After an LTI launch, post a score from the app page (<code>POST /v1/launches/{{id}}/scores</code>);
a durable job delivers it to the LMS through Assignment and Grade Services.</p>
<a class="button secondary" id="gradebook-canvas" href="{canvas_book}">Canvas gradebook</a>
<a class="button secondary" id="gradebook-moodle" href="{moodle_book}">Moodle gradebook</a></section>

<section id="flow-sso"><h2>5. Single sign-on</h2>
<p>A person of a customer organisation signs in through its IdP; the app gets the same handoff as for a launch.</p>
<a class="button" id="sso-oidc" href="{g}/sso/start?organisation={okta}">Sign in with Okta (OIDC)</a>
<a class="button" id="sso-saml" href="{g}/sso/start?organisation={shib}">Sign in with Shibboleth (SAML)</a></section>

<section id="flow-webhooks"><h2>6. Webhooks</h2>
<p>The app's webhook endpoint is a receiver beside the sandbox: every launch sends <code>launch.completed</code>,
every delivered grade <code>grade.delivered</code>, signed to the Standard Webhooks spec.</p>
<a class="button secondary" id="webhooks" href="/webhooks">Webhooks received ({received})</a></section>

<section id="usage"><h2>7. Usage recorded</h2>
<p>From <code>GET /v1/usage/query?meter={meter}&amp;partner=...&amp;group_by=type</code>; every event of a sandbox partner is marked in the ledger.
Reload after a flow.</p>
<div style="display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start">{usage}</div></section>

<section id="flow-console"><h2>8. The console</h2>
<p>The company's finance staff work in the gateway's console at <code>/console</code>, signed in through
the sandbox Okta (its user is in the finance group): the month-end page (sandbox partners are never billed,
so no agreement is listed there) and the usage explorer, with the simulated partners' usage.</p>
<a class="button" id="console" href="{console}">Console (finance)</a></section>
"#,
        okta = OKTA,
        shib = SHIBBOLETH,
        meter = USAGE_METER,
    );
    html(StatusCode::OK, "partner-gateway sandbox", &body)
}

// ---------------------------------------------------------------------------------------
// The EHR and the LMS starting a launch

/// What the EHR does when the clinician clicks the app: register the launch, send the
/// browser to the app's launch URL (the gateway) with `iss` and `launch`.
async fn ehr_launch(State(site): S, Path(vendor): Path<String>) -> Response {
    let Some(ehr) = site.ehr(&vendor) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Unknown EHR",
            "choose epic or oracle",
        );
    };
    let launch = ehr.launch(LaunchContext {
        patient: Some(ehr.default_patient()),
        encounter: None,
        user: ehr.default_practitioner(),
        fhir_context: Vec::new(),
        intent: None,
        need_patient_banner: true,
        smart_style_url: None,
    });
    let mut url = match url::Url::parse(&format!("{}/smart/launch", site.gateway)) {
        Ok(u) => u,
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Bad gateway URL",
                &e.to_string(),
            );
        }
    };
    url.query_pairs_mut()
        .append_pair("iss", &ehr.iss())
        .append_pair("launch", &launch);
    Redirect::to(url.as_str()).into_response()
}

#[derive(Deserialize)]
struct LmsLaunchQuery {
    message: Option<String>,
}

/// What the LMS does when someone opens the activity: a login initiation to the tool (a
/// form POST for Canvas and Moodle, as they send it).
async fn lms_launch(
    State(site): S,
    Path(vendor): Path<String>,
    Query(q): Query<LmsLaunchQuery>,
) -> Response {
    let Some(lms) = site.lms(&vendor) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Unknown LMS",
            "choose canvas or moodle",
        );
    };
    let spec = match q.message.as_deref() {
        Some("deep-linking") => LaunchSpec::deep_linking(
            LTI_CLIENT,
            LTI_DEPLOYMENT,
            MockUser::new(
                "sandbox-teacher-1",
                "Tess Teacher",
                &[partner_sim::lms::ROLE_INSTRUCTOR],
            ),
            COURSE,
            Some("sandbox-deep-link-data"),
        ),
        _ => {
            let mut spec = LaunchSpec::resource_link(
                LTI_CLIENT,
                LTI_DEPLOYMENT,
                MockUser::new(
                    "sandbox-learner-1",
                    "Lee Learner",
                    &[partner_sim::lms::ROLE_LEARNER],
                ),
                COURSE,
                "sandbox-activity-1",
            );
            spec.message = partner_sim::lms::Message::ResourceLink {
                id: "sandbox-activity-1".into(),
                title: Some("Sandbox activity".into()),
            };
            spec
        }
    };
    let init = lms.login_initiation(spec);
    if !init.post {
        return Redirect::to(&init.get_url()).into_response();
    }
    // The LMS's own page: a form posting the initiation to the tool's login URL.
    let fields: Vec<(&str, &str)> = init
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let message = format!("{} is opening the tool...", lms.personality().as_str());
    auto_post(&message, &init.url, &fields)
}

// ---------------------------------------------------------------------------------------
// The sample app

#[derive(Deserialize)]
struct Handoff {
    code: Option<String>,
}

/// The app's launch URL: exchange the one-time code server-side, then show the launch at
/// its own URL (so a reload does not spend the code twice).
async fn app_handoff(State(site): S, Query(h): Query<Handoff>) -> Response {
    let Some(code) = h.code.filter(|c| !c.is_empty()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Sample app",
            "no code: the gateway sends people here with ?code=... after a launch",
        );
    };
    let a = match app_call(
        site.api(
            reqwest::Method::POST,
            "/v1/launches/exchange",
            &site.app_key,
        )
        .json(&json!({ "code": code })),
        StatusCode::BAD_REQUEST,
        "Sample app: exchange refused",
    )
    .await
    {
        Ok(a) => a,
        Err(page) => return page,
    };
    match a.body.get("launch_id").and_then(Value::as_str) {
        Some(id) => Redirect::to(&format!("/app/{}", url_segment(id))).into_response(),
        None => error_page(
            StatusCode::BAD_GATEWAY,
            "Sample app",
            "the exchange answer had no launch_id",
        ),
    }
}

async fn launch_context(site: &Site, launch_id: &str) -> Result<Answer, Response> {
    app_call(
        site.api(
            reqwest::Method::GET,
            &format!("/v1/launches/{}", url_segment(launch_id)),
            &site.app_key,
        ),
        StatusCode::NOT_FOUND,
        "Sample app: no such launch",
    )
    .await
}

/// The app's call to the gateway, or the page saying what went wrong: a 502 page when the
/// gateway did not answer, `refused` with `title` when it answered with an error.
async fn app_call(
    req: reqwest::RequestBuilder,
    refused: StatusCode,
    title: &str,
) -> Result<Answer, Response> {
    let a = answer(req)
        .await
        .map_err(|e| error_page(StatusCode::BAD_GATEWAY, "Sample app", &e))?;
    if !a.ok() {
        return Err(error_page(refused, title, &a.problem()));
    }
    Ok(a)
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

async fn app_page(State(site): S, Path(launch_id): Path<String>) -> Response {
    let a = match launch_context(&site, &launch_id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let ctx = &a.body;
    let id = url_segment(&launch_id);
    let kind = s(ctx, "/kind");
    let partner = s(ctx, "/partner");
    let mut facts = vec![
        ("kind", "context-kind", kind.to_owned()),
        ("partner", "partner", partner.to_owned()),
        (
            "sandbox",
            "sandbox",
            ctx.get("sandbox")
                .map_or_else(String::new, Value::to_string),
        ),
        ("user", "user", {
            let name = s(ctx, "/user/name");
            let uid = s(ctx, "/user/id");
            if name.is_empty() {
                uid.to_owned()
            } else {
                format!("{name} ({uid})")
            }
        }),
    ];
    let mut actions = String::new();
    match kind {
        "smart" => {
            facts.push(("patient", "patient", s(ctx, "/patient").to_owned()));
            facts.push(("FHIR server", "iss", s(ctx, "/iss").to_owned()));
            actions.push_str(&format!(
                "<a class=\"button\" id=\"read-patient\" href=\"/app/{id}/patient\">Read the patient through the FHIR proxy</a>"
            ));
        }
        "lti" => {
            facts.push(("course", "course", s(ctx, "/context/id").to_owned()));
            facts.push((
                "course title",
                "course-title",
                s(ctx, "/context/title").to_owned(),
            ));
            facts.push((
                "message",
                "message-type",
                s(ctx, "/message_type").to_owned(),
            ));
            facts.push((
                "roles",
                "roles",
                ctx.get("roles").map_or_else(String::new, Value::to_string),
            ));
            if s(ctx, "/message_type") == "LtiDeepLinkingRequest" {
                actions.push_str(&format!(
                    "<form method=\"post\" action=\"/app/{id}/deep-link\"><p>The app chooses what to add to the course:</p>\
                     <label><input type=\"checkbox\" name=\"chapter\" value=\"1\" checked> Chapter 1 (graded, out of 10)</label><br>\
                     <label><input type=\"checkbox\" name=\"chapter\" value=\"2\"> Chapter 2 (graded, out of 10)</label><br>\
                     <button type=\"submit\" id=\"return-selection\">Return the selection to the LMS</button></form>"
                ));
            } else {
                let book = site
                    .lms_of_partner(partner)
                    .map(|l| l.gradebook_url(s(ctx, "/context/id")))
                    .unwrap_or_default();
                actions.push_str(&format!(
                    "<form method=\"post\" action=\"/app/{id}/grade\"><label>Score (out of 10): \
                     <input type=\"number\" name=\"score\" id=\"score\" min=\"0\" max=\"10\" step=\"0.5\" value=\"8.5\"></label> \
                     <button type=\"submit\" id=\"post-grade\">Post the grade to the LMS</button></form>\
                     <p><a class=\"button secondary\" href=\"{}\">Open the LMS gradebook</a></p>",
                    escape(&book)
                ));
            }
        }
        "sso" => {
            facts.push(("email", "email", s(ctx, "/email").to_owned()));
            facts.push((
                "organisation",
                "organisation",
                s(ctx, "/organisation").to_owned(),
            ));
            facts.push(("protocol", "protocol", s(ctx, "/protocol").to_owned()));
            facts.push((
                "groups",
                "groups",
                ctx.get("groups").map_or_else(String::new, Value::to_string),
            ));
        }
        _ => {}
    }
    let dl: String = facts
        .iter()
        .map(|(k, id, v)| format!("<dt>{}</dt><dd id=\"{}\">{}</dd>", escape(k), id, escape(v)))
        .collect();
    let usage = site.usage_table(partner).await;
    let body = format!(
        "<section><h2>Handed over by the gateway</h2><p>The gateway sent the browser here with a one-time <code>code</code>; \
         the app's back end exchanged it at <code>POST /v1/launches/exchange</code> with its app key and now reads \
         <code>GET /v1/launches/{id}</code>.</p>{hdr}<dl id=\"facts\">{dl}</dl></section>\
         <section><h2>Next</h2>{actions}<p><a class=\"button secondary\" href=\"/webhooks\">Webhooks received</a> \
         <a class=\"button secondary\" href=\"/sandbox\">Start page</a></p></section>\
         <section><h2>Usage recorded for {p}</h2>{usage}</section>\
         <section><h2>Launch context</h2><pre id=\"context\">{json}</pre></section>",
        hdr = a.header_line(),
        p = escape(partner),
        json = pretty(ctx),
    );
    html(StatusCode::OK, "Sample app", &body)
}

async fn app_patient(State(site): S, Path(launch_id): Path<String>) -> Response {
    let ctx = match launch_context(&site, &launch_id).await {
        Ok(a) => a.body,
        Err(r) => return r,
    };
    let id = url_segment(&launch_id);
    let patient = s(&ctx, "/patient");
    if patient.is_empty() {
        return error_page(
            StatusCode::CONFLICT,
            "Sample app",
            "this launch has no patient",
        );
    }
    let path = format!("/v1/launches/{id}/fhir/Patient/{}", url_segment(patient));
    let a = match answer(site.api(reqwest::Method::GET, &path, &site.app_key)).await {
        Ok(a) => a,
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, "Sample app", &e),
    };
    let name = a
        .body
        .pointer("/name/0/text")
        .and_then(Value::as_str)
        .unwrap_or("(no name)");
    let body = format!(
        "<section><h2>GET {path}</h2><p>Status {status}. The gateway forwarded the read to the EHR's FHIR server with \
         the launch's access token, which never leaves the gateway.</p>{hdr}\
         <dl><dt>name</dt><dd id=\"patient-name\">{name}</dd><dt>birth date</dt><dd>{birth}</dd></dl>\
         <p><a class=\"button secondary\" href=\"/app/{id}\">Back to the launch</a></p></section>\
         <section><h2>Patient resource</h2><pre>{json}</pre></section>",
        path = escape(&path),
        status = a.status,
        hdr = a.header_line(),
        name = escape(name),
        birth = escape(s(&a.body, "/birthDate")),
        json = pretty(&a.body),
    );
    html(StatusCode::OK, "Sample app: patient", &body)
}

#[derive(Deserialize)]
struct GradeForm {
    score: String,
}

async fn app_grade(
    State(site): S,
    Path(launch_id): Path<String>,
    Form(f): Form<GradeForm>,
) -> Response {
    let ctx = match launch_context(&site, &launch_id).await {
        Ok(a) => a.body,
        Err(r) => return r,
    };
    let id = url_segment(&launch_id);
    let Ok(score) = f.score.trim().parse::<f64>() else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Sample app",
            "the score must be a number",
        );
    };
    let posted = match app_call(
        site.api(
            reqwest::Method::POST,
            &format!("/v1/launches/{id}/scores"),
            &site.app_key,
        )
        .json(&json!({
            "scoreGiven": score,
            "scoreMaximum": 10.0,
            "activityProgress": "Completed",
            "gradingProgress": "FullyGraded",
            "comment": "Posted from the partner-gateway sandbox app",
        })),
        StatusCode::BAD_REQUEST,
        "Sample app: score refused",
    )
    .await
    {
        Ok(a) => a,
        Err(page) => return page,
    };
    let score_id = s(&posted.body, "/score_id").to_owned();
    // Delivery is a durable job; wait a little for it so the page can say how it went.
    let mut status = posted.body.clone();
    for _ in 0..50 {
        match answer(site.api(
            reqwest::Method::GET,
            &format!("/v1/scores/{}", url_segment(&score_id)),
            &site.app_key,
        ))
        .await
        {
            Ok(a) if a.ok() => {
                let pending = s(&a.body, "/status") == "pending";
                status = a.body;
                if !pending {
                    break;
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let book = site
        .lms_of_partner(s(&ctx, "/partner"))
        .map(|l| l.gradebook_url(s(&ctx, "/context/id")))
        .unwrap_or_default();
    let state = s(&status, "/status");
    let body = format!(
        "<section><h2>Score {score}/10 posted</h2><p><code>POST /v1/launches/{id}/scores</code> answered {code}; \
         the <code>lti.score</code> job delivers it to the LMS.</p>\
         <p>Delivery: <span id=\"score-status\" class=\"{class}\">{state}</span></p>\
         <p><a class=\"button\" id=\"open-gradebook\" href=\"{book}\">See it in the LMS gradebook</a>\
         <a class=\"button secondary\" href=\"/app/{id}\">Back to the launch</a></p></section>\
         <section><h2>GET /v1/scores/{sid}</h2><pre>{json}</pre></section>",
        code = posted.status,
        class = if state == "delivered" { "ok" } else { "bad" },
        state = escape(state),
        book = escape(&book),
        sid = escape(&score_id),
        json = pretty(&status),
    );
    html(StatusCode::OK, "Sample app: grade", &body)
}

async fn app_deep_link(
    State(site): S,
    Path(launch_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let id = url_segment(&launch_id);
    // Repeated checkboxes: read the form by hand (`chapter=1&chapter=2`).
    let mut items = Vec::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if k == "chapter" && (v == "1" || v == "2") {
            items.push(json!({
                "type": "ltiResourceLink",
                "title": format!("Sample app: chapter {v}"),
                "text": "Added from the partner-gateway sandbox app",
                "lineItem": { "scoreMaximum": 10, "label": format!("Chapter {v}") },
            }));
        }
    }
    if items.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Sample app",
            "choose at least one chapter",
        );
    }
    let a = match app_call(
        site.api(
            reqwest::Method::POST,
            &format!("/v1/launches/{id}/deep-link"),
            &site.app_key,
        )
        .json(&json!({ "content_items": items })),
        StatusCode::BAD_REQUEST,
        "Sample app: deep link refused",
    )
    .await
    {
        Ok(a) => a,
        Err(page) => return page,
    };
    let return_url = s(&a.body, "/return_url");
    let jwt = s(&a.body, "/jwt");
    // The signed response goes back through the browser, as Deep Linking says.
    let message = format!("Returning {} item(s) to the LMS...", items.len());
    auto_post(&message, return_url, &[("JWT", jwt)])
}

async fn reading() -> Response {
    html(
        StatusCode::OK,
        "Course reading",
        "<section><p>A plain link the Canvas deep linking picker can add to a course.</p></section>",
    )
}

// ---------------------------------------------------------------------------------------
// Webhooks

async fn webhooks_page(State(site): S) -> Response {
    let keys: Vec<_> = crate::webhooks::signature::SigningKey::decode(&site.webhook_secret)
        .map(|k| vec![k.verifying_key()])
        .unwrap_or_default();
    let now = chrono::Utc::now();
    let mut rows = String::new();
    for r in site.sims.receiver.received().iter().rev() {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let verified = crate::webhooks::signature::verify(
            crate::webhooks::signature::Headers {
                id: r.header("webhook-id"),
                timestamp: r.header("webhook-timestamp"),
                signature: r.header("webhook-signature"),
            },
            &r.body,
            &keys,
            // Shown later than it arrived: accept any age, the check here is the signature.
            i64::MAX / 4,
            now,
        );
        rows.push_str(&format!(
            "<tr><td><code>{ty}</code></td><td>{partner}</td><td><code>{id}</code></td><td class=\"{class}\">{v}</td><td><pre>{json}</pre></td></tr>",
            ty = escape(s(&body, "/type")),
            partner = escape(s(&body, "/data/partner")),
            id = escape(r.header("webhook-id").unwrap_or("")),
            class = if verified.is_ok() { "ok" } else { "bad" },
            v = match &verified {
                Ok(_) => "signature valid".to_owned(),
                Err(e) => escape(&e.to_string()),
            },
            json = pretty(&body),
        ));
    }
    if rows.is_empty() {
        rows = "<tr><td colspan=\"5\" class=\"muted\">Nothing yet: launch something, or post a grade.</td></tr>".into();
    }
    let body = format!(
        "<section><p>The receiver at <code>{url}</code> is the app's webhook endpoint (registered through \
         <code>POST /v1/webhooks/endpoints</code>); each message is checked against the endpoint's secret.</p>\
         <table id=\"webhooks\"><tr><th>type</th><th>partner</th><th>webhook-id</th><th>signature</th><th>body</th></tr>{rows}</table></section>",
        url = escape(&site.sims.receiver.url("/webhooks")),
    );
    html(StatusCode::OK, "Webhooks received", &body)
}
