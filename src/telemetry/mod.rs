//! Logs (text or JSON, switchable) and the Prometheus recorder.

pub mod metrics;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

/// Install the global tracing subscriber. Logs go to stderr so stdout stays free for
/// command output (`api-keys create` prints the key alone on stdout).
pub fn init_tracing(cfg: &TelemetryConfig) {
    // PostgreSQL's NOTICEs ("relation _sqlx_migrations already exists, skipping" on every
    // migrate) are not news; RUST_LOG still shows them when asked.
    let quiet = |f: EnvFilter| match "sqlx::postgres::notice=warn".parse() {
        Ok(d) => f.add_directive(d),
        Err(_) => f,
    };
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&cfg.log_level).map(quiet))
        .unwrap_or_else(|_| quiet(EnvFilter::new("info")));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => {
            // Colours only for a person at a terminal, not into a log file.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            registry.with(text_layer(std::io::stderr, ansi)).try_init()
        }
    };
    // A second init (tests starting several apps) keeps the first subscriber.
    let _ = result;
}

/// The text log layer. Every field value and message goes through [`escape_controls`]: a
/// request value carrying CR/LF or an escape sequence (`?iss=x%0A<forged line>%1b[2J`)
/// cannot start a line of its own or drive the terminal, as JSON logs cannot.
pub fn text_layer<S, W>(writer: W, ansi: bool) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::field::MakeExt;
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() != "message" {
            write!(w, "{}=", field.name())?;
        }
        std::fmt::write(&mut EscapeControls(w), format_args!("{value:?}"))
    })
    .delimited(" ");
    tracing_subscriber::fmt::layer()
        .fmt_fields(fields)
        .with_ansi(ansi)
        .with_writer(writer)
}

/// Writes through, with control characters shown as escapes: `\n`, `\r`, `\t`, other C0
/// and DEL as `\x1b`-style, C1 as `\u{9b}`.
struct EscapeControls<'a, W: std::fmt::Write + ?Sized>(&'a mut W);

impl<W: std::fmt::Write + ?Sized> std::fmt::Write for EscapeControls<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| c.is_control()) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or('\0');
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(self.0, "\\x{:02x}", c as u32)?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// `s` as the text log shows it (for tests and messages).
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // Writing to a String cannot fail.
    let _ = std::fmt::Write::write_str(&mut EscapeControls(&mut out), s);
    out
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus handle; the recorder is installed on first use. `None` only if
/// another recorder was installed first, in which case `/metrics` reports that.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            ::metrics::set_global_recorder(recorder).ok()?;
            metrics::describe();
            Some(handle)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_controls("a\nb\r\x1b[2J\u{9b}\tc"),
            "a\\nb\\r\\x1b[2J\\u{9b}\\tc"
        );
        assert_eq!(escape_controls("plain é"), "plain é");
    }

    #[test]
    fn a_request_value_cannot_forge_a_log_line_or_reach_the_terminal() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber =
            tracing_subscriber::registry().with(text_layer(move || writer.clone(), false));
        let forged = "x\n2026-01-01T00:00:00Z  INFO forged: admin logged in\x1b[2J\r";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", path = %forged);
            let _g = span.enter();
            tracing::warn!(iss = %forged, quoted = forged, "unregistered issuer {forged}");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\x1b') && !out.contains('\r'), "{out:?}");
        assert!(
            out.contains("x\\n2026-01-01T00:00:00Z  INFO forged"),
            "{out}"
        );
        assert!(
            out.contains("iss=x\\n") && out.contains("path=x\\n"),
            "{out}"
        );
    }
}

/// A request path as logs show it: a FHIR proxy path keeps its resource type and loses
/// the rest (`.../fhir/Patient/123/_history/2` is logged as `.../fhir/Patient/…`), since
/// ids there name patients and their records (PRIVACY.md: no personal data in logs).
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    let Some(at) = path.find("/fhir/") else {
        return std::borrow::Cow::Borrowed(path);
    };
    let rest = &path[at + "/fhir/".len()..];
    match rest.find('/') {
        None => std::borrow::Cow::Borrowed(path),
        Some(end) => {
            std::borrow::Cow::Owned(format!("{}…", &path[..at + "/fhir/".len() + end + 1]))
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::loggable_path;

    #[test]
    fn fhir_ids_never_reach_the_log() {
        assert_eq!(
            loggable_path("/v1/launches/lch_1/fhir/Patient/erXuFYUfucBZaryVksYEcMg3"),
            "/v1/launches/lch_1/fhir/Patient/…"
        );
        assert_eq!(
            loggable_path("/v1/partners/epic/fhir/Observation/9/_history/2"),
            "/v1/partners/epic/fhir/Observation/…"
        );
        // A search by type keeps its type (the query, with any patient id, is never logged).
        assert_eq!(
            loggable_path("/v1/launches/lch_1/fhir/Observation"),
            "/v1/launches/lch_1/fhir/Observation"
        );
        assert_eq!(
            loggable_path("/v1/statements/stmt_1"),
            "/v1/statements/stmt_1"
        );
    }
}
