//! SSO bench: complete OIDC and SAML logins per second through the gateway against the
//! mock IdPs on loopback, each beside a same-run baseline: for OIDC the mock IdP's
//! (`partner_sim::idp`, Okta personality) own authorization + token rate (the same client,
//! PKCE and RS256 id_token, without the gateway); for SAML the mock IdP's
//! (`partner_sim::saml_idp`, Shibboleth personality) own rate of answering an AuthnRequest with
//! a signed response (RSA-SHA256 through xmlsec).
//!
//! ```sh
//! cargo bench --bench sso                                   # SQLite, then PostgreSQL
//! cargo bench --bench sso -- --backend sqlite --workers 8 --secs 5 --sequential 200
//! ```
//! PostgreSQL: `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! a fresh database, dropped after.
//!
//! A login is what a browser and the app do: `GET /sso/start?organisation=` -> the IdP's
//! authorize (code issued) -> `GET /sso/oidc/callback` (state spent, code exchanged with
//! PKCE and client_secret_basic, id_token verified, launch + `sso.login` + handoff in one
//! transaction) -> `POST /v1/launches/exchange`. Discovery and JWKS are cached after the
//! first login, as in production. A SAML login: `GET /sso/start?organisation=` (AuthnRequest,
//! RelayState stored) -> the IdP's SSO URL (signed Response in an auto-post form) ->
//! `POST /sso/saml/{connection}/acs` (RelayState spent, signature verified with xmlsec,
//! conditions checked, assertion id recorded, launch + `sso.login` + handoff in one
//! transaction) -> `POST /v1/launches/exchange`. Afterwards the bench checks one
//! `sso.login` per login.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use partner_gateway::apikeys::Role;
use partner_gateway::random::token as random_token;
use partner_gateway::smart::flow::pkce_challenge;
use partner_sim::idp::{IdpUser, IdpVendor, MockIdp};
use partner_sim::saml_idp::{MockSamlIdp, SamlIdpUser, SamlIdpVendor};
use support::args::{Args, pg_url_or_default};
use support::db::{Backend, PgDatabase};
use support::server::{self, Serving};
use support::stats::{ms, percentile};

const SECRET: &str = "bench-secret";
const CLIENT: &str = "bench-gateway";

const USAGE: &str = "usage: cargo bench --bench sso -- [--backend sqlite|postgres|both] [--workers N (8)] [--secs S (5)] [--sequential N (200)]";

struct Opts {
    backends: Vec<Backend>,
    workers: usize,
    secs: u64,
    sequential: usize,
    pg_url: String,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        backends: Backend::BOTH.to_vec(),
        workers: 8,
        secs: 5,
        sequential: 200,
        pg_url: pg_url_or_default(),
    };
    let mut args = Args::new(USAGE);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--backend" => o.backends = args.backends()?,
            "--workers" => o.workers = args.num(&a)?,
            "--secs" => o.secs = args.num(&a)?,
            "--sequential" => o.sequential = args.num(&a)?,
            other => args.other(other)?,
        }
    }
    Ok(o)
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> anyhow::Result<String> {
    anyhow::ensure!(
        r.status().is_redirection(),
        "expected a redirect, got {}",
        r.status()
    );
    Ok(r.headers()
        .get("location")
        .context("no location")?
        .to_str()?
        .to_owned())
}

/// `GET /sso/start?organisation=`: where the gateway sends the browser.
async fn start(b: &reqwest::Client, gateway: &str, organisation: &str) -> anyhow::Result<String> {
    let r = b
        .get(format!("{gateway}/sso/start?organisation={organisation}"))
        .send()
        .await?;
    location(&r)
}

/// The `code` query parameter of a redirect.
fn code_in(redirect: &str, missing: &'static str) -> anyhow::Result<String> {
    url::Url::parse(redirect)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .context(missing)
}

/// The app's step: the one-time code for the launch.
async fn exchange(
    b: &reqwest::Client,
    gateway: &str,
    app_key: &str,
    code: &str,
) -> anyhow::Result<()> {
    let r = b
        .post(format!("{gateway}/v1/launches/exchange"))
        .bearer_auth(app_key)
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "exchange answered {}", r.status());
    Ok(())
}

/// One whole login; returns when the app holds the launch.
async fn login(b: &reqwest::Client, gateway: &str, app_key: &str) -> anyhow::Result<()> {
    let authorize = start(b, gateway, "bench-idp").await?;
    let callback = location(&b.get(&authorize).send().await?)?;
    let to_app = location(&b.get(&callback).send().await?)?;
    let code = code_in(&to_app, "no code for the app")?;
    exchange(b, gateway, app_key, &code).await
}

/// The IdP's part alone: authorize (code) and token (basic auth, PKCE, RS256 id_token).
async fn idp_only(b: &reqwest::Client, issuer: &str, redirect: &str) -> anyhow::Result<()> {
    let verifier = random_token(32);
    let mut u = url::Url::parse(&format!("{issuer}/authorize"))?;
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid email profile")
        .append_pair("state", &random_token(16))
        .append_pair("nonce", &random_token(16))
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let cb = location(&b.get(u.as_str()).send().await?)?;
    let code = code_in(&cb, "no code")?;
    let r = b
        .post(format!("{issuer}/token"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "token answered {}", r.status());
    let body: serde_json::Value = r.json().await?;
    anyhow::ensure!(body["id_token"].is_string(), "no id_token");
    Ok(())
}

fn form_value(html: &str, name: &str) -> anyhow::Result<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).context("no form field")? + marker.len();
    let end = html[start..].find('"').context("no end of field")? + start;
    Ok(html[start..end]
        .replace("&quot;", "\"")
        .replace("&amp;", "&"))
}

/// One whole SAML login; returns when the app holds the launch.
async fn login_saml(b: &reqwest::Client, gateway: &str, app_key: &str) -> anyhow::Result<()> {
    let to_idp = start(b, gateway, "bench-saml").await?;
    let html = b.get(&to_idp).send().await?.text().await?;
    let form = [
        ("SAMLResponse", form_value(&html, "SAMLResponse")?),
        ("RelayState", form_value(&html, "RelayState")?),
    ];
    let r = b
        .post(format!("{gateway}/sso/saml/bench-saml/acs"))
        .form(&form)
        .send()
        .await?;
    let to_app = location(&r)?;
    let code = code_in(&to_app, "no code for the app")?;
    exchange(b, gateway, app_key, &code).await
}

/// The SAML IdP's part alone: an AuthnRequest answered with a signed response.
async fn saml_idp_only(b: &reqwest::Client, sso_url: &str) -> anyhow::Result<()> {
    let r = b.get(sso_url).send().await?;
    anyhow::ensure!(r.status() == 200, "the IdP answered {}", r.status());
    anyhow::ensure!(r.text().await?.contains("SAMLResponse"), "no response");
    Ok(())
}

struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    n: usize,
}

/// `sequential` runs one after another; else `workers` loops for `secs`.
async fn measure<F, Fut>(o: &Opts, sequential: bool, f: F) -> anyhow::Result<Figures>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let t0 = Instant::now();
    let mut lat: Vec<Duration> = Vec::new();
    if sequential {
        for _ in 0..o.sequential {
            let t = Instant::now();
            f().await?;
            lat.push(t.elapsed());
        }
    } else {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..o.workers {
            let (f, stop) = (f.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut l = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    f().await?;
                    l.push(t.elapsed());
                }
                anyhow::Ok(l)
            }));
        }
        tokio::time::sleep(Duration::from_secs(o.secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            lat.extend(t.await??);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| ms(percentile(&lat, p));
    Ok(Figures {
        rate: lat.len() as f64 / wall,
        p50: pct(0.5),
        p99: pct(0.99),
        n: lat.len(),
    })
}

async fn run(o: &Opts, backend: Backend) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("pgw-bench-sso-")
        .tempdir()?;
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDatabase::create(&o.pg_url, "pgw_bench_sso_").await?),
    };
    let db_url = pg.as_ref().map_or_else(
        || format!("sqlite://{}/gw.db", dir.path().display()),
        |pg| pg.url.clone(),
    );
    println!("== {}", backend.name());
    let (listener, gateway) = server::bind().await?;
    let redirect = format!("{gateway}/sso/oidc/callback");
    let user = IdpUser {
        sub: "00u-bench".into(),
        email: "ada@bench.example".into(),
        name: "Ada Lovelace".into(),
        groups: vec!["clinicians".into()],
    };
    let idp = MockIdp::start(IdpVendor::Okta, CLIENT, SECRET, &redirect, user).await?;
    let saml_idp = MockSamlIdp::start(
        SamlIdpVendor::Shibboleth,
        SamlIdpUser {
            persistent_id: "bench-persistent-id".into(),
            principal_name: "ada@bench.example".into(),
            email: "ada@bench.example".into(),
            name: "Ada Lovelace".into(),
            affiliations: vec!["staff@bench.example".into()],
            groups: vec!["clinicians".into()],
        },
    )
    .await?;
    let layer = format!(
        "{base}[jobs]\nenabled = false\n\
         [http]\npublic_url = \"{gateway}\"\n\
         [[partners]]\nid = \"bench-org\"\nname = \"Bench University\"\nkind = \"idp\"\n\
         [[partners.sso_connections]]\nid = \"bench-idp\"\nprotocol = \"oidc\"\n\
         issuer = \"{issuer}\"\nclient_id = \"{CLIENT}\"\nclient_secret = \"{SECRET}\"\n\
         domains = [\"bench.example\"]\napp_url = \"https://app.example.test/sso\"\n\
         [[partners.sso_connections]]\nid = \"bench-saml\"\nprotocol = \"saml\"\n\
         idp_metadata_url = \"{saml_metadata}\"\n\
         domains = [\"saml.bench.example\"]\napp_url = \"https://app.example.test/sso\"\n",
        base = server::base_toml(&db_url, dir.path()),
        issuer = idp.issuer(),
        saml_metadata = saml_idp.metadata_url(),
    );
    let state = server::prepare(vec![server::meters_layer(), server::bench_layer(layer)]).await?;
    let serving = Serving::spawn(&state, listener);
    let app_key = server::api_key(&state, Role::App).await?;
    let b = browser();
    // The IdP administrator's step: load the SP metadata.
    let md = b
        .get(format!("{gateway}/sso/saml/bench-saml/metadata"))
        .send()
        .await?
        .text()
        .await?;
    saml_idp.register_sp(&md)?;
    // Warm-up: discovery, JWKS, IdP metadata, SP key, connection pools.
    for _ in 0..20 {
        login(&b, &gateway, &app_key).await?;
        idp_only(&b, &idp.issuer(), &redirect).await?;
        login_saml(&b, &gateway, &app_key).await?;
    }
    // A valid AuthnRequest URL for the SAML baseline (the mock answers it every time).
    let sso_url = start(&b, &gateway, "bench-saml").await?;
    let issuer = idp.issuer();
    for protocol in ["oidc", "saml"] {
        for (label, sequential) in [("sequential", true), ("workers", false)] {
            let (g, k) = (gateway.clone(), app_key.clone());
            let b1 = b.clone();
            let a = measure(o, sequential, move || {
                let (b, g, k) = (b1.clone(), g.clone(), k.clone());
                async move {
                    match protocol {
                        "oidc" => login(&b, &g, &k).await,
                        _ => login_saml(&b, &g, &k).await,
                    }
                }
            })
            .await?;
            let (i, r, u) = (issuer.clone(), redirect.clone(), sso_url.clone());
            let b2 = b.clone();
            let base = measure(o, sequential, move || {
                let (b, i, r, u) = (b2.clone(), i.clone(), r.clone(), u.clone());
                async move {
                    match protocol {
                        "oidc" => idp_only(&b, &i, &r).await,
                        _ => saml_idp_only(&b, &u).await,
                    }
                }
            })
            .await?;
            let mode = if sequential {
                "sequential".to_owned()
            } else {
                format!("{} workers, {} s", o.workers, o.secs)
            };
            println!(
                "  {protocol} {label:10} ({mode}): gateway logins {:.1}/s (p50 {:.2} ms, p99 {:.2} ms, {} logins); \
                 IdP alone {:.1}/s (p50 {:.2} ms); ratio {:.2}",
                a.rate,
                a.p50,
                a.p99,
                a.n,
                base.rate,
                base.p50,
                a.rate / base.rate
            );
        }
    }
    let events: i64 = partner_gateway::with_db!(&state.db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM usage_events WHERE type = 'sso.login'").fetch_one(pool).await
    })?;
    let launches: i64 = partner_gateway::with_db!(&state.db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM launches WHERE kind = 'sso'").fetch_one(pool).await
    })?;
    println!("  sso.login events {events} for {launches} SSO launches");
    anyhow::ensure!(events == launches, "a login lost its usage event");
    serving.stop().await;
    state.db.close().await;
    if let Some(pg) = pg {
        pg.finish(false).await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let o = opts()?;
    println!(
        "sso bench: {} sequential logins, then {} workers for {} s, each beside the IdP alone; nproc {}",
        o.sequential,
        o.workers,
        o.secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for &backend in &o.backends {
        run(&o, backend).await?;
    }
    Ok(())
}
