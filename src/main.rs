//! The `docker-pull` binary: parse flags, set up logging, run the pull, and
//! map the outcome to an exit code (0 written, 1 failed, 2 usage, 130 interrupted).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use docker_pull::archive;
use docker_pull::cache::Cache;
use docker_pull::cli::{Cli, Logging, Settings};
use docker_pull::error::PullError;
use docker_pull::progress;
use docker_pull::pull::Puller;
use docker_pull::report;

mod commands;

fn main() -> ExitCode {
    raise_open_file_limit();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let mut cli = cli;
    if let Some(command) = cli.command.take() {
        return ExitCode::from(commands::run(command, cli));
    }
    let settings = match cli.into_settings(&mut std::io::stdin()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = docker_pull::cli::RunOptions {
        logging: settings.logging(),
        json: settings.json,
        warnings: settings.warnings.clone(),
        password_on_command_line: settings.password_on_command_line,
    };
    let (runtime, view) = match commands::start(&options) {
        Ok(started) => started,
        Err(code) => return ExitCode::from(code),
    };
    let code = runtime.block_on(run(settings, view));
    // Blocking tasks (archive writers) may still run after an interrupt.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code)
}

async fn run(settings: Settings, view: Arc<dyn docker_pull::events::Observer>) -> u8 {
    let cache = match &settings.cache_dir {
        Some(dir) => Cache::open(dir),
        None => Cache::temporary(),
    };
    let cache = match cache {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let dir = settings.cache_dir.as_ref().map_or_else(
                || "a temporary directory".to_string(),
                |d| d.display().to_string(),
            );
            eprintln!(
                "error: cannot create the cache in {dir}: {e}; choose another with --cache-dir"
            );
            return 1;
        }
    };
    let temporary_cache = settings
        .cache_dir
        .is_none()
        .then(|| cache.root().to_path_buf());
    let json = settings.json;
    // With -o - stdout carries the archive: the reports go to stderr.
    let to_stderr = settings.output == docker_pull::cli::Output::Stdout;
    let report_out = move || -> Box<dyn Write> {
        match to_stderr {
            true => Box::new(std::io::stderr().lock()),
            false => Box::new(std::io::stdout().lock()),
        }
    };

    let outcome = {
        let mut puller = match Puller::new(&settings, Arc::clone(&cache), view) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let pulling = puller.run(
            |r| {
                let mut out = report_out();
                let _ = report::print_image(&mut out, r, json).and_then(|_| out.flush());
            },
            |e| {
                let _ = progress::write_stderr(error_line(e).as_bytes());
            },
        );
        tokio::select! {
            r = pulling => r,
            _ = tokio::signal::ctrl_c() => Err(PullError::Interrupted),
        }
    };
    match outcome {
        Ok(outcome) => {
            if !json && !outcome.reports.is_empty() {
                let mut out = report_out();
                let _ = writeln!(out, "{}", report::cache_line(&outcome.reports))
                    .and_then(|_| out.flush());
            }
            if let (Some(max), Some(_)) = (settings.cache_max, &settings.cache_dir) {
                match cache.prune(None, Some(max)) {
                    Ok(p) if p.blobs > 0 => tracing::info!(
                        "DOCKER_PULL_CACHE_MAX: evicted {} blobs ({})",
                        p.blobs,
                        report::human_bytes(p.freed)
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("cannot prune the cache to DOCKER_PULL_CACHE_MAX: {e}")
                    }
                }
            }
            if outcome.failed == 0 {
                return 0;
            }
            if !outcome.reports.is_empty() {
                let total = outcome.failed + outcome.reports.len();
                let _ = progress::write_stderr(
                    format!("error: {} of {total} images failed\n", outcome.failed).as_bytes(),
                );
            }
            1
        }
        Err(PullError::Interrupted) => {
            archive::remove_partial_archives();
            if let Some(dir) = temporary_cache {
                let _ = std::fs::remove_dir_all(dir);
            }
            let _ = progress::write_stderr(
                b"interrupted; partial downloads stay in the cache and resume next time\n",
            );
            130
        }
        Err(e) => {
            tracing::debug!(error = ?e, "pull failed");
            let _ = progress::write_stderr(error_line(&e).as_bytes());
            1
        }
    }
}

/// Raises the soft limit on open files to the hard one, for headroom: a
/// pull opens a file per download and per connection at once (`-j`), plus
/// the archive, the cache's lease and the layers a writer copies. Best
/// effort.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            // macOS refuses RLIM_INFINITY here; the soft limit then stays.
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `error: <message>` for stderr. Registry text in errors is escaped where
/// it enters them; this escapes once more whatever control characters are
/// left (but the line's own line feeds), so that no message can rewrite the
/// terminal.
fn error_line(e: &PullError) -> String {
    line_for(e)
}

/// `error: ...` for the terminal, escaped.
pub fn line_for(e: &dyn std::fmt::Display) -> String {
    docker_pull::text::escape_for_terminal(&format!("error: {e}\n"))
}

/// Logs go to stderr (warnings, or everything with `--debug`) and, with
/// `--log-file`, in full to that file.
pub fn init_logging(settings: &Logging) -> Result<(), String> {
    let stderr_filter = if settings.debug {
        EnvFilter::new("docker_pull=debug")
    } else if settings.quiet {
        EnvFilter::new("docker_pull=error")
    } else {
        EnvFilter::new("docker_pull=warn")
    };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(StderrWriter)
        .with_ansi(false)
        .event_format(LevelPrefix)
        .with_filter(stderr_filter);
    let file_layer = match &settings.log_file {
        Some(path) => {
            // Owner only (it records registries, images and paths), and
            // never through a link someone planted at the path.
            let file = docker_pull::cache::fsx::open_nofollow_append(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(Arc::new(file))
                    .with_ansi(false)
                    .with_filter(EnvFilter::new("docker_pull=debug")),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .map_err(|e| e.to_string())
}

/// Log lines on stderr read like the error line: `warning: ...`, `debug: ...`.
struct LevelPrefix;

impl<S, N> FormatEvent<S, N> for LevelPrefix
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(writer, "{level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Log output to stderr that keeps the progress display intact.
struct StderrWriter;

impl Write for StderrWriter {
    /// Each call is one formatted event; its control characters (but line
    /// feeds) are escaped like those of error lines.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = docker_pull::text::escape_for_terminal(&String::from_utf8_lossy(buf));
        progress::write_stderr(line.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for StderrWriter {
    type Writer = StderrWriter;
    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter
    }
}
