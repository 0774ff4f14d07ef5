//! The command line. Every command takes `--config DIR` (default `config/`).

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::apikeys::{self, Role};
use crate::app::{self, AppState};
use crate::config::Config;
use crate::db::Db;

#[derive(Parser, Debug)]
#[command(
    name = "partner-gateway",
    version,
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
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add a new signing key per algorithm; the old ones stay published for
    /// `keys.rotation_overlap_hours`, then are retired. Prints the new key ids.
    Rotate {
        /// Only this algorithm (RS256, RS384 or ES384); all when omitted.
        #[arg(long)]
        alg: Option<String>,
    },
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
    if let Command::CheckConfig = cli.command {
        println!(
            "configuration OK: {} partner(s), {} meter(s), database {}",
            config.partners.len(),
            config.meters.len(),
            crate::db::redact_url(config.database.url.expose())
        );
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

async fn run_command(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig => Ok(ExitCode::SUCCESS),
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
        Command::Migrate => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            eprintln!("migrations applied ({})", db.backend().as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKeys(cmd) => {
            let state = AppState::prepare(config, true).await?;
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
                    let (_, secret) = apikeys::create_api_key(
                        &state.db,
                        role,
                        partner.as_deref(),
                        name.as_deref(),
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
                    if !apikeys::revoke_api_key(&state.db, &key).await? {
                        anyhow::bail!("no active key with id or prefix {key:?}");
                    }
                    eprintln!("revoked {key}");
                }
            }
            state.db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Rotate { alg }) => {
            let algs = match alg.as_deref() {
                None => crate::keys::Alg::ALL.to_vec(),
                Some(a) => vec![crate::keys::Alg::parse(a).ok_or_else(|| {
                    anyhow::anyhow!("--alg must be RS256, RS384 or ES384, not {a:?}")
                })?],
            };
            let state = AppState::prepare(config, true).await?;
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
        Command::Usage(UsageCommand::Import { file, partner }) => {
            let state = AppState::prepare(config, true).await?;
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
            let outcome = crate::metering::import::import_ndjson(
                &state.db,
                &state.config,
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
