//! The command line. Every command takes `--config DIR` (default `config/`).

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::apikeys::{self, Role};
use crate::app;
use crate::config::Config;
use crate::db::Db;
use crate::state::{AppState, Schema};

#[derive(Parser, Debug)]
#[command(
    name = "partner-gateway",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PARTNER_GATEWAY_COMMIT"), ")"),
    about = "Integration gateway and usage ledger for partner systems"
)]
pub struct Cli {
    /// Directory holding the *.toml config files.
    #[arg(long, global = true, default_value = "config", value_name = "DIR")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server and background workers.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration; print every problem with its file and field.
    CheckConfig,
    /// Manage API keys.
    #[command(subcommand)]
    ApiKeys(ApiKeysCommand),
    /// Usage ledger tools.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// The gateway's signing keys (published at /.well-known/jwks.json).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Revenue-share statements for finance.
    #[command(subcommand)]
    Statements(StatementsCommand),
    /// Database tools.
    #[command(subcommand)]
    Db(DbCommand),
    /// The LTI tool.
    #[command(subcommand)]
    Lti(LtiCommand),
    /// Personal data: export or erase a person, run the retention purge (PRIVACY.md).
    #[command(subcommand)]
    Privacy(PrivacyCommand),
    /// The console at /console: sign-in links for people without SSO.
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Try every flow on this machine: the gateway on SQLite under --data-dir with
    /// simulated EHRs (Epic, Oracle), LMSs (Canvas, Moodle), IdPs (OIDC, SAML), a webhook
    /// receiver and a sample app, all registered as sandbox partners. Ignores --config.
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// The gateway's port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The start page and sample app's port (default: --port + 1; any free port when
        /// --port is 0).
        #[arg(long)]
        site_port: Option<u16>,
        /// Where the sandbox keeps its database and master key (never the production ones).
        #[arg(long, default_value = "data/sandbox", value_name = "DIR")]
        data_dir: PathBuf,
    },
}

/// Whom a privacy request is about.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = true, args = ["user_id", "email"])]
pub struct PersonArgs {
    /// The partner the person came through.
    #[arg(long)]
    partner: String,
    /// Their id at the partner (an LTI `sub` or 1.1 `user_id`, a SMART `fhirUser` or
    /// `sub`, an SSO subject qualified by its connection: `acme-okta:00u1ada`).
    #[arg(long)]
    user_id: Option<String>,
    /// An email the partner sent for them (compared without case).
    #[arg(long)]
    email: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PrivacyCommand {
    /// Print everything held about a person at a partner as JSON (launches, LTI identities,
    /// scores, webhook messages, ledger events). Recorded in the audit log.
    Export {
        #[command(flatten)]
        person: PersonArgs,
    },
    /// Erase a person at a partner (see PRIVACY.md for what that does to each record);
    /// meters and issued statements are unchanged. Recorded in the audit log.
    Erase {
        #[command(flatten)]
        person: PersonArgs,
        /// Erase without asking (there is no undo).
        #[arg(long)]
        yes: bool,
    },
    /// Run the retention purge now (it also runs as a job every privacy.purge_interval_secs)
    /// and print what it removed.
    Purge,
}

#[derive(Subcommand, Debug)]
pub enum ConsoleCommand {
    /// Break glass: print a single-use link that signs in to the console with this role,
    /// valid console.link_ttl_secs (15 minutes), for the first sign-in before any SSO
    /// connection is set up, or when the IdP is down. Recorded in the audit log.
    Link {
        /// admin, finance or read-only.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Whose sign-in it is, for the audit log and the page header.
        #[arg(long)]
        email: Option<String>,
    },
    /// Invite a partner user: print a single-use link to the partner portal, valid
    /// console.invitation_ttl_hours (72 hours). Shown once; recorded in the audit log.
    Invite {
        #[arg(long)]
        partner: String,
        #[arg(long)]
        email: String,
        /// partner-viewer (reads) or partner-admin (also manages webhook endpoints).
        #[arg(long, default_value = "partner-viewer")]
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LtiCommand {
    /// Create an LTI Dynamic Registration link for a partner and print its URL alone on
    /// stdout. Give it to the LMS's administrator, who pastes it as the tool's dynamic
    /// registration URL (Moodle: "Tool URL"). Single use; only its SHA-256 is stored;
    /// revoke it with `DELETE /v1/lti/registration-links/{id}`.
    RegistrationLink {
        /// The partner whose LMS registers (one with [partners.lti]).
        #[arg(long)]
        partner: String,
        /// How long it stays usable: e.g. 30m, 12h, 7d (5 minutes to 30 days).
        #[arg(long, default_value = "7d", value_parser = parse_duration_secs)]
        expires_in: u64,
        /// Who or what it is for (shown when links are listed).
        #[arg(long)]
        note: Option<String>,
        /// The LTI 1.1 consumer key (one of the partner's [[partners.lti.lti11]]) the LMS's
        /// 1.3 tool replaces: migration claims are verified with its secret.
        #[arg(long)]
        lti11_consumer_key: Option<String>,
    },
}

/// `90s`, `30m`, `12h`, `7d`, or plain seconds.
fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 30m, 12h or 7d"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} is not a duration such as 30m, 12h or 7d")),
    };
    n.checked_mul(unit_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Copy the SQLite database to FILE, consistent and safe while the gateway serves
    /// (SQLite's VACUUM INTO reads one snapshot; writers carry on). PostgreSQL: pg_dump.
    Backup {
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum StatementsCommand {
    /// Create the draft statement of one partner's period, or recompute its draft.
    Generate {
        #[arg(long)]
        partner: String,
        /// `2026-10` for a monthly agreement, `2026-Q4` for a quarterly one.
        #[arg(long)]
        period: String,
        /// Needed only when several of the partner's agreements cover the period.
        #[arg(long)]
        agreement: Option<String>,
        /// Do not wait for the ledger's settle window (`statements.settle_secs`) when events
        /// of the period arrived after the cut-off (just imported): say so and return.
        #[arg(long)]
        no_wait: bool,
    },
    /// Generate or recompute the drafts of every partner's agreements for a period.
    Run {
        #[arg(long)]
        period: String,
        /// As for generate: do not wait for events just received to settle.
        #[arg(long)]
        no_wait: bool,
    },
    /// List statements.
    List {
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        period: Option<String>,
        /// draft, finalized or void.
        #[arg(long)]
        status: Option<String>,
    },
    /// Issue a draft: the partner's next number and a SHA-256 over its content.
    Finalize {
        id: String,
        /// Who is finalizing (recorded with the statement); defaults to $USER.
        #[arg(long)]
        author: Option<String>,
    },
    /// Void a finalized statement (the latest of its agreement); the record stays.
    Void {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        author: Option<String>,
    },
    /// Write a statement as JSON, CSV or PDF.
    Export {
        id: String,
        #[arg(long, default_value = "pdf")]
        format: String,
        /// Where to write it; `-` for stdout.
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute an issued statement from the ledger and check its hash (exit 4 if not).
    Verify { id: String },
}

/// `statements verify` exit code when the statement does not match.
pub const VERIFY_MISMATCH: u8 = 4;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add a new signing key per algorithm; the old ones stay published for
    /// `keys.rotation_overlap_hours`, then are retired. Prints the new key ids.
    Rotate {
        /// Only this algorithm (RS256, RS384 or ES384); all when omitted.
        #[arg(long)]
        alg: Option<String>,
        /// Instead: roll the SAML SP key over (see --stage). Leave IdPs time to load the
        /// new metadata: the old key decrypts until it retires after
        /// `keys.rotation_overlap_hours`.
        #[arg(long, conflicts_with = "alg")]
        saml_sp: bool,
        /// With --saml-sp: `both` (default) publishes the new certificate for signing and
        /// encryption at once beside the old one, which signs until it retires;
        /// `signing-only` publishes it for signature checks only (the metadata keeps one
        /// encryption certificate, for IdPs such as ADFS that cannot read two), and
        /// `promote`, once the IdPs have it, makes it the only certificate published and
        /// the signer.
        #[arg(long, value_enum, requires = "saml_sp", default_value = "both")]
        stage: SpRolloverStage,
    },
}

/// `keys rotate --saml-sp --stage`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpRolloverStage {
    Both,
    SigningOnly,
    Promote,
}

#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// Create a key and print it alone on one line of stdout (only its hash is stored).
    Create {
        #[arg(long, value_enum)]
        role: Role,
        /// The partner a `partner` key is scoped to.
        #[arg(long)]
        partner: Option<String>,
        /// A label to recognise the key by.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never the secrets).
    List,
    /// Revoke a key by id or prefix.
    Revoke { key: String },
}

#[derive(Subcommand, Debug)]
pub enum UsageCommand {
    /// Import NDJSON CloudEvents (one per line); idempotent.
    Import {
        file: PathBuf,
        /// Partner for lines without a `partner` attribute.
        #[arg(long)]
        partner: Option<String>,
    },
}

/// `usage import` exit code when the whole file was read but some lines were rejected.
pub const IMPORT_REJECTED_LINES: u8 = 3;

/// Run a parsed command line; the exit code says how it went.
pub async fn run(cli: Cli) -> ExitCode {
    // The sandbox builds its own configuration: it must not need (or read) the production
    // one, so it runs before the config directory is loaded.
    #[cfg(feature = "sandbox")]
    if let Command::Sandbox {
        port,
        site_port,
        data_dir,
    } = cli.command
    {
        return sandbox(crate::sandbox::run::Options {
            port,
            site_port,
            data_dir,
        })
        .await;
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("configuration has {} problem(s):", errors.0.len());
            for p in &errors.0 {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    if let Command::CheckConfig = cli.command {
        // The master key is checked as serve checks it (base64 of 32 bytes).
        match crate::keys::crypto::MasterKey::check(&config.keys) {
            Ok(None) => {}
            Ok(Some(note)) => eprintln!("note: {note}"),
            Err(e) => {
                eprintln!("configuration has 1 problem(s):");
                eprintln!("  {e:#}");
                return ExitCode::from(2);
            }
        }
        println!(
            "configuration OK: {} partner(s), {} meter(s), {} agreement version(s), database {}",
            config.partners.len(),
            config.meters.len(),
            config.agreements.len(),
            crate::db::redact_url(config.database.url.expose())
        );
        if config.outbound.allow_private_networks == Some(false) {
            eprintln!(
                "note: outbound.allow_private_networks is deprecated and has no effect; remove it (non-public addresses are reached only inside private_networks: a partner's, or outbound.private_networks)"
            );
        }
        return ExitCode::SUCCESS;
    }
    crate::telemetry::init_tracing(&config.telemetry);
    match run_command(cli.command, config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "sandbox")]
async fn sandbox(opts: crate::sandbox::run::Options) -> ExitCode {
    // Warnings only: the console is for the URLs printed below; RUST_LOG shows more.
    crate::telemetry::init_tracing(&crate::config::TelemetryConfig {
        log_level: "warn".into(),
        ..Default::default()
    });
    let shutdown = CancellationToken::new();
    app::cancel_on_signal(shutdown.clone());
    match crate::sandbox::run::run(opts, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    // Only `migrate` and `serve` (as `database.migrate_on_start` says) change the schema;
    // every other command refuses a database that is not current, naming what to run.
    match command {
        Command::CheckConfig => Ok(ExitCode::SUCCESS),
        #[cfg(feature = "sandbox")]
        Command::Sandbox { .. } => Ok(ExitCode::SUCCESS),
        Command::Serve => {
            let migrate = config.database.migrate_on_start;
            let addr = config.http.addr;
            let state = AppState::prepare(config, migrate).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (http.addr): {e}"))?;
            let shutdown = CancellationToken::new();
            app::cancel_on_signal(shutdown.clone());
            app::serve(state, listener, crate::jobs::Handlers::new(), shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Backup { file, force }) => {
            // Opening a SQLite URL creates a missing file: a relative path read from another
            // directory would "back up" a new, empty database. Refuse that instead.
            let url = config.database.url.expose();
            if url.starts_with("sqlite:")
                && let Ok(opts) =
                    <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
                && !opts.get_filename().exists()
            {
                anyhow::bail!(
                    "there is no database at {} (database.url); run from the directory the gateway runs in, or give database.url an absolute path",
                    opts.get_filename().display()
                );
            }
            let db = Db::connect(&config.database).await?;
            let report = db.backup(&file, force).await?;
            db.close().await;
            println!(
                "backup written to {} ({} bytes, {} tables, integrity ok)",
                file.display(),
                report.bytes,
                report.tables
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            eprintln!("migrations applied ({})", db.backend().as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKeys(cmd) => {
            let state = AppState::prepare_with(config, Schema::Require).await?;
            match cmd {
                ApiKeysCommand::Create {
                    role,
                    partner,
                    name,
                } => {
                    if let Some(p) = &partner
                        && state.config.partner(p).is_none()
                    {
                        anyhow::bail!("unknown partner {p:?}: it is not declared in the config");
                    }
                    let (_, secret) = apikeys::create_api_key_by(
                        &state.db,
                        role,
                        partner.as_deref(),
                        name.as_deref(),
                        Some(&crate::audit::Who::cli()),
                    )
                    .await?;
                    println!("{secret}");
                }
                ApiKeysCommand::List => {
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "{:<38} {:<14} {:<8} {:<20} {:<8} NAME",
                        "ID", "PREFIX", "ROLE", "PARTNER", "STATUS"
                    )?;
                    for k in apikeys::list_api_keys(&state.db).await? {
                        writeln!(
                            out,
                            "{:<38} {:<14} {:<8} {:<20} {:<8} {}",
                            k.id,
                            k.prefix,
                            k.role.as_str(),
                            k.partner_id.as_deref().unwrap_or("-"),
                            if k.revoked_at_us.is_some() {
                                "revoked"
                            } else {
                                "active"
                            },
                            k.name.as_deref().unwrap_or("")
                        )?;
                    }
                }
                ApiKeysCommand::Revoke { key } => {
                    let who = crate::audit::Who::cli();
                    if !apikeys::revoke_api_key_by(&state.db, &key, Some(&who)).await? {
                        anyhow::bail!("no active key with id or prefix {key:?}");
                    }
                    eprintln!(
                        "revoked {key}; running instances refuse it within {} ms (http.api_key_cache_ms)",
                        state.config.http.api_key_cache_ms
                    );
                }
            }
            state.db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Rotate {
            alg: _,
            saml_sp: true,
            stage,
        }) => {
            let state = AppState::prepare_with(config, Schema::Require).await?;
            let overlap_us = i64::try_from(state.config.keys.rotation_overlap_hours)
                .unwrap_or(i64::MAX / 3_600_000_000)
                .saturating_mul(3_600_000_000);
            let host = url::Url::parse(&state.config.http.public_base())
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "partner-gateway".into());
            use crate::sso::store::Rollover;
            let step = match stage {
                SpRolloverStage::Both => Rollover::Both,
                SpRolloverStage::SigningOnly => Rollover::SigningOnly,
                SpRolloverStage::Promote => Rollover::Promote,
            };
            let done = crate::sso::store::rotate_sp_key(
                &state.db,
                &state.master_key,
                &format!("{host} SAML SP"),
                crate::time::now_micros(),
                overlap_us,
                step,
            )
            .await;
            state.db.close().await;
            let kid = done?.map_err(|p| anyhow::anyhow!("{p}"))?;
            println!("{kid}");
            let hours = state.config.keys.rotation_overlap_hours;
            match step {
                Rollover::Both => eprintln!(
                    "the new SAML SP certificate is in every connection's SP metadata now, for signing and encryption beside the old one; the old key signs until it retires in {hours} h (running instances pick the change up within a minute)"
                ),
                Rollover::SigningOnly => eprintln!(
                    "the new SAML SP certificate is in every connection's SP metadata now, for signing only; the current key still signs and is the only encryption certificate. Once the IdPs have loaded the metadata: keys rotate --saml-sp --stage promote"
                ),
                Rollover::Promote => eprintln!(
                    "the staged SAML SP certificate is now the only one in the SP metadata and signs AuthnRequests; the old key is unpublished and decrypts until it retires in {hours} h (running instances pick the change up within a minute)"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Rotate { alg, .. }) => {
            let algs = match alg.as_deref() {
                None => crate::keys::Alg::ALL.to_vec(),
                Some(a) => vec![crate::keys::Alg::parse(a).ok_or_else(|| {
                    anyhow::anyhow!("--alg must be RS256, RS384 or ES384, not {a:?}")
                })?],
            };
            let state = AppState::prepare_with(config, Schema::Require).await?;
            let overlap_us = i64::try_from(state.config.keys.rotation_overlap_hours)
                .unwrap_or(i64::MAX / 3_600_000_000)
                .saturating_mul(3_600_000_000);
            let kids = crate::keys::rotate_signing_keys(
                &state.db,
                &state.master_key,
                &algs,
                crate::time::now_micros(),
                overlap_us,
            )
            .await?;
            for kid in kids {
                println!("{kid}");
            }
            state.db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lti(LtiCommand::RegistrationLink {
            partner,
            expires_in,
            note,
            lti11_consumer_key,
        }) => {
            let state = AppState::prepare_with(config, Schema::Require).await?;
            let created = crate::lti::dynreg::create_link(
                &state,
                &partner,
                Some(expires_in),
                note,
                lti11_consumer_key,
                "cli",
                crate::time::now_micros(),
            )
            .await;
            state.db.close().await;
            let (link, url) = created.map_err(|e| match e {
                crate::lti::dynreg::LinkError::Store(e) => e,
                other => anyhow::anyhow!("{other}"),
            })?;
            println!("{url}");
            eprintln!(
                "registration link {} for partner {} (single use) expires at {}",
                link.id, link.partner, link.expires_at
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Statements(cmd) => statements_command(cmd, config).await,
        Command::Privacy(cmd) => privacy_command(cmd, config).await,
        Command::Console(cmd) => console_command(cmd, config).await,
        Command::Usage(UsageCommand::Import { file, partner }) => {
            let state = AppState::prepare_with(config, Schema::Require).await?;
            if let Some(p) = &partner
                && state.config.partner(p).is_none()
            {
                anyhow::bail!("unknown partner {p:?}: it is not declared in the config");
            }
            let handle = std::fs::File::open(&file)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
            let total = handle.metadata().map(|m| m.len()).unwrap_or(0);
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| file.display().to_string());
            let outcome = crate::metering::import::import_ndjson(
                &state.db,
                &state.subjects,
                &state.config,
                &state.ledger_rules,
                &name,
                BufReader::new(handle),
                partner.as_deref(),
                |bytes| bar.set_position(bytes),
            )
            .await;
            bar.finish_and_clear();
            let report = &outcome.report;
            let mut out = std::io::stdout().lock();
            writeln!(out, "accepted: {}", report.accepted)?;
            writeln!(out, "duplicates: {}", report.duplicates)?;
            writeln!(out, "rejected: {}", report.rejected.len())?;
            for (line, reason) in &report.rejected {
                writeln!(out, "line {line}: {reason}")?;
            }
            state.db.close().await;
            // 1: the import stopped early (what was written stays; re-run to finish);
            // 3: the file was read to the end but some lines were rejected.
            Ok(match outcome.error {
                Some(e) => {
                    eprintln!("error: the import stopped early: {e:#}");
                    ExitCode::FAILURE
                }
                None if !report.rejected.is_empty() => ExitCode::from(IMPORT_REJECTED_LINES),
                None => ExitCode::SUCCESS,
            })
        }
    }
}

fn cli_actor(author: Option<String>) -> String {
    let who = author
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{who} (cli)")
}

fn print_statement(
    out: &mut impl Write,
    st: &crate::statements::model::Statement,
) -> std::io::Result<()> {
    let d = &st.document;
    writeln!(
        out,
        "{}\t{}\t{}\t{}\t{} v{}\t{}\t{} {}{}",
        st.id,
        st.status.as_str(),
        st.number_display.as_deref().unwrap_or("-"),
        d.partner_id,
        d.agreement_id,
        d.agreement_version,
        d.period,
        d.total,
        d.currency,
        if d.provisional {
            "\tprovisional (period not ended)"
        } else {
            ""
        }
    )
}

/// Drafts computed inside the settle window leave out what the ledger just received (an
/// import a minute ago would make every statement 0.00). Say so on stderr; unless
/// `no_wait`, return how long to wait before computing again with everything.
fn settle_wait(
    drafts: &[&crate::statements::model::Statement],
    no_wait: bool,
) -> Option<std::time::Duration> {
    let late: i64 = drafts
        .iter()
        .filter_map(|s| s.settling.as_ref())
        .map(|s| s.events_after_cut_off)
        .sum();
    let complete_at = drafts
        .iter()
        .filter_map(|s| s.settling.as_ref())
        .map(|s| s.complete_at)
        .max()?;
    let cut_off = drafts
        .iter()
        .filter_map(|s| s.settling.as_ref())
        .map(|s| s.cut_off)
        .min()?;
    let at = crate::time::rfc3339(complete_at);
    if no_wait {
        eprintln!(
            "{late} event(s) of the period arrived after the ledger cut-off ({}) and are not counted yet: generate again after {at} to include them",
            crate::time::rfc3339(cut_off)
        );
        return None;
    }
    let wait = (complete_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default()
        + std::time::Duration::from_millis(100);
    eprintln!(
        "{late} event(s) of the period arrived after the ledger cut-off ({}): waiting {} s, until {at}, for them to settle (--no-wait to skip)",
        crate::time::rfc3339(cut_off),
        wait.as_secs()
    );
    Some(wait)
}

async fn statements_command(cmd: StatementsCommand, config: Config) -> anyhow::Result<ExitCode> {
    let state = AppState::prepare_with(config, Schema::Require).await?;
    let now = chrono::Utc::now();
    let svc = state.statements();
    let who = crate::audit::Who::cli();
    let mut out = std::io::stdout().lock();
    let code = match cmd {
        StatementsCommand::Generate {
            partner,
            period,
            agreement,
            no_wait,
        } => {
            let (mut st, mut created) = svc
                .generate(&partner, agreement.as_deref(), &period, now, &who)
                .await?;
            if let Some(until) = settle_wait(&[&st], no_wait) {
                tokio::time::sleep(until).await;
                let again = svc
                    .generate(
                        &partner,
                        agreement.as_deref(),
                        &period,
                        chrono::Utc::now(),
                        &who,
                    )
                    .await?;
                st = again.0;
                created |= again.1;
            }
            print_statement(&mut out, &st)?;
            writeln!(
                out,
                "{} draft with {} line(s)",
                if created { "created" } else { "recomputed" },
                st.document.lines.len()
            )?;
            ExitCode::SUCCESS
        }
        StatementsCommand::Run { period, no_wait } => {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} statements",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let mut items = svc
                .run(&period, now, &who, |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .await;
            let drafts: Vec<&crate::statements::model::Statement> = items
                .iter()
                .filter_map(|i| i.outcome.as_ref().ok())
                .collect();
            if let Some(until) = settle_wait(&drafts, no_wait) {
                tokio::time::sleep(until).await;
                items = svc
                    .run(&period, chrono::Utc::now(), &who, |done, total| {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    })
                    .await;
            }
            bar.finish_and_clear();
            let mut failed = 0;
            for item in &items {
                match &item.outcome {
                    Ok(st) => print_statement(&mut out, st)?,
                    Err(e) => {
                        failed += 1;
                        writeln!(
                            out,
                            "-\terror\t-\t{}\t{}\t{period}\t{e}",
                            item.partner, item.agreement
                        )?;
                    }
                }
            }
            writeln!(out, "{} statement(s), {failed} failed", items.len())?;
            if failed > 0 {
                ExitCode::from(IMPORT_REJECTED_LINES)
            } else {
                ExitCode::SUCCESS
            }
        }
        StatementsCommand::List {
            partner,
            period,
            status,
        } => {
            let mut statuses = Vec::new();
            for s in status.iter().flat_map(|s| s.split(',')) {
                statuses.push(
                    crate::statements::model::Status::parse(s.trim()).ok_or_else(|| {
                        anyhow::anyhow!("status {s:?} is not one of draft, finalized, void")
                    })?,
                );
            }
            let filter = crate::statements::store::ListFilter {
                partner,
                period,
                statuses,
                agreement: None,
            };
            // Page through in list order, as an API client does with `next_cursor`.
            let mut after = None;
            loop {
                let page =
                    crate::statements::store::list_statements(&state.db, &filter, after, 500)
                        .await?;
                for st in &page {
                    print_statement(&mut out, st)?;
                }
                match page.last() {
                    Some(last) if page.len() == 500 => {
                        after = Some(crate::statements::store::list_key(last));
                    }
                    _ => break,
                }
            }
            ExitCode::SUCCESS
        }
        StatementsCommand::Finalize { id, author } => {
            let st = svc.finalize(&id, &cli_actor(author), now, &who).await?;
            print_statement(&mut out, &st)?;
            writeln!(out, "sha256 {}", st.hash.as_deref().unwrap_or(""))?;
            ExitCode::SUCCESS
        }
        StatementsCommand::Void { id, reason, author } => {
            let st = svc
                .void(&id, &reason, &cli_actor(author), now, &who)
                .await?;
            print_statement(&mut out, &st)?;
            ExitCode::SUCCESS
        }
        StatementsCommand::Export {
            id,
            format,
            out: path,
        } => {
            let st = svc.get(&id).await?;
            let bytes = match format.as_str() {
                "json" => serde_json::to_vec_pretty(&st)?,
                "csv" => crate::statements::export::csv(&st).into_bytes(),
                "pdf" => crate::statements::pdf::render(&st, &state.letterhead(&st.document)),
                other => anyhow::bail!("format {other:?} is not one of json, csv, pdf"),
            };
            if path.as_os_str() == "-" {
                out.write_all(&bytes)?;
            } else {
                // Write beside the target and rename, so a reader never sees half a file.
                let tmp = path.with_extension("partial");
                std::fs::write(&tmp, &bytes)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, &path)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
            }
            ExitCode::SUCCESS
        }
        StatementsCommand::Verify { id } => {
            let v = svc.verify(&id).await?;
            writeln!(
                out,
                "statement {} {}",
                v.id,
                v.number.as_deref().unwrap_or("")
            )?;
            writeln!(out, "stored hash:     {}", v.hash.as_deref().unwrap_or("-"))?;
            writeln!(
                out,
                "recomputed hash: {}",
                v.recomputed_hash.as_deref().unwrap_or("-")
            )?;
            writeln!(
                out,
                "hash over stored content: {}",
                if v.hash_matches {
                    "matches"
                } else {
                    "DOES NOT MATCH"
                }
            )?;
            writeln!(
                out,
                "recomputed from the ledger: {}",
                if v.recomputed_matches {
                    "matches"
                } else {
                    "DOES NOT MATCH"
                }
            )?;
            for d in &v.differences {
                writeln!(out, "  {d}")?;
            }
            if v.ok() {
                writeln!(out, "verified")?;
                ExitCode::SUCCESS
            } else {
                ExitCode::from(VERIFY_MISMATCH)
            }
        }
    };
    drop(out);
    state.db.close().await;
    Ok(code)
}

/// `privacy export | erase | purge`.
async fn console_command(cmd: ConsoleCommand, config: Config) -> anyhow::Result<ExitCode> {
    use crate::console::role::Role;
    use crate::console::session::{LinkKind, create_link};
    let state = AppState::prepare_with(config, Schema::Require).await?;
    let who = crate::audit::Who::cli();
    let now = chrono::Utc::now();
    let (kind, role, partner, email) = match cmd {
        ConsoleCommand::Link { role, email } => {
            let r = Role::parse(&role)
                .filter(|r| !r.is_partner())
                .ok_or_else(|| {
                    anyhow::anyhow!("--role {role:?} is not one of admin, finance, read-only")
                })?;
            (LinkKind::BreakGlass, r, None, email)
        }
        ConsoleCommand::Invite {
            partner,
            email,
            role,
        } => {
            let r = Role::parse(&role)
                .filter(|r| r.is_partner())
                .ok_or_else(|| {
                    anyhow::anyhow!("--role {role:?} is not one of partner-viewer, partner-admin")
                })?;
            if state.config.partner(&partner).is_none() {
                anyhow::bail!("unknown partner {partner:?}: it is not declared in the config");
            }
            if !crate::console::admin::valid_email(&email) {
                anyhow::bail!("--email {email:?} is not an email address");
            }
            (LinkKind::Invitation, r, Some(partner), Some(email))
        }
    };
    if let Some(e) = &email
        && !crate::console::admin::valid_email(e)
    {
        anyhow::bail!("--email {e:?} is not an email address");
    }
    let link = create_link(
        &state.db,
        &state.config.console,
        kind,
        role,
        partner.as_deref(),
        email.as_deref(),
        &who,
        now,
    )
    .await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        crate::console::admin::link_url(&state, &link.token)
    )?;
    eprintln!(
        "single use, valid until {} ({}); shown only now",
        link.expires_at.to_rfc3339(),
        link.id
    );
    Ok(ExitCode::SUCCESS)
}

async fn privacy_command(cmd: PrivacyCommand, config: Config) -> anyhow::Result<ExitCode> {
    use crate::privacy::person::{self, Actor, Lookup};
    let state = AppState::prepare_with(config, Schema::Require).await?;
    let lookup = |p: PersonArgs| -> anyhow::Result<Lookup> {
        let q = Lookup {
            partner: p.partner,
            user_id: p.user_id,
            email: p.email,
        };
        if let Some(problem) = q.problem() {
            anyhow::bail!("{problem}");
        }
        if state.config.partner(&q.partner).is_none() {
            anyhow::bail!(
                "unknown partner {:?}: it is not declared in the config",
                q.partner
            );
        }
        Ok(q)
    };
    // The audit log says it was done from the command line, on which host, by whom.
    let actor = Actor::cli();
    let now = chrono::Utc::now();
    let result = match cmd {
        PrivacyCommand::Export { person: p } => {
            let q = lookup(p)?;
            let found = person::find(&state.db, &state.subjects, &q).await?;
            person::audit_export(&state.db, &state.subjects, &actor, &q, &found, now).await?;
            let doc = person::export_document(&q, &found, now);
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
        PrivacyCommand::Erase { person: p, yes } => {
            let q = lookup(p)?;
            let found = person::find(&state.db, &state.subjects, &q).await?;
            let c = found.counts();
            eprintln!(
                "found at partner {}: {} launches, {} scores, {} LTI identities, {} webhook messages, {} ledger events",
                q.partner,
                c.launches,
                c.scores,
                c.lti_identities,
                c.webhook_messages,
                c.ledger_events
            );
            if yes {
                let (done, audit) =
                    person::erase(&state.db, &state.subjects, &actor, &q, &found, now).await?;
                let out = serde_json::json!({"erased": done, "audit_id": audit});
                println!("{}", serde_json::to_string_pretty(&out)?);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("nothing erased: add --yes to erase them (there is no undo)");
                Ok(ExitCode::from(2))
            }
        }
        PrivacyCommand::Purge => {
            let done = crate::privacy::purge::purge(&state.db, &state.subjects, &state.config, now)
                .await?;
            println!("{}", serde_json::to_string_pretty(&done)?);
            Ok(ExitCode::SUCCESS)
        }
    };
    state.db.close().await;
    result
}
