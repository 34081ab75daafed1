//! The commands besides pulling: `cache`, `verify`, `completions` and the
//! hidden `man`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use clap::CommandFactory;

use docker_pull::cache::{Cache, PruneOutcome};
use docker_pull::cli::{CacheAction, Cli, Command, default_cache_dir};
use docker_pull::progress::{self, Mode, View};
use docker_pull::report::human_bytes;
use docker_pull::text::escape_for_terminal;
use docker_pull::verify;

/// Runs a command; returns the exit code.
pub fn run(command: Command) -> u8 {
    let result = match command {
        Command::Verify {
            sources,
            quiet,
            json,
        } => return verify_command(&sources, quiet, json),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "docker-pull", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(format!("cannot write the man page: {e}"))
                }
                _ => Ok(()),
            }
        }
        Command::Cache { action, cache_dir } => {
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            match Cache::open(&dir) {
                Ok(cache) => match cache_command(&cache, action) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        Err(format!("cache {}: {e}", dir.display()))
                    }
                    _ => Ok(()),
                },
                Err(e) => Err(format!(
                    "cannot open the cache in {}: {e}; choose another with --cache-dir",
                    dir.display()
                )),
            }
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `verify SOURCE...`: 0 when every image of every source is sound, else 1
/// with every problem on stderr (and in the `--json` objects).
fn verify_command(sources: &[PathBuf], quiet: bool, json: bool) -> u8 {
    let stderr_terminal = std::io::stderr().is_terminal();
    let mode = if quiet || json && !stderr_terminal {
        Mode::Quiet
    } else if stderr_terminal {
        Mode::Bars
    } else {
        Mode::Plain
    };
    let view = View::new(mode);
    let (mut images, mut failed, mut unreadable) = (0usize, 0usize, 0usize);
    for path in sources {
        let given = path.display().to_string();
        let checked = match verify::verify(path, &view) {
            Ok(checked) => checked,
            Err(e) => vec![verify::unreadable(&given, &e)],
        };
        for c in &checked {
            let mut out = std::io::stdout().lock();
            let _ = verify::print(&mut out, c, json).and_then(|_| out.flush());
            images += usize::from(!c.unreadable);
            if c.ok() {
                continue;
            }
            if c.unreadable {
                unreadable += 1;
                for p in &c.problems {
                    let _ = progress::write_stderr(
                        escape_for_terminal(&format!("error: {p}\n")).as_bytes(),
                    );
                }
                continue;
            }
            failed += 1;
            let name = c.name.as_deref().unwrap_or("(unnamed image)");
            for p in &c.problems {
                let line = format!("error: {given}: {name}: {p}\n");
                let _ = progress::write_stderr(escape_for_terminal(&line).as_bytes());
            }
        }
    }
    if failed == 0 && unreadable == 0 {
        return 0;
    }
    let mut line = String::from("error: ");
    if unreadable > 0 {
        let s = if unreadable == 1 { "" } else { "s" };
        line.push_str(&format!("{unreadable} source{s} could not be read; "));
    }
    line.push_str(&format!(
        "{failed} of {images} images failed verification\n"
    ));
    let _ = progress::write_stderr(line.as_bytes());
    1
}

fn cache_command(cache: &Cache, action: CacheAction) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        CacheAction::Stats { json } => {
            let s = cache.stats()?;
            if json {
                let v = serde_json::json!({
                    "path": cache.root().display().to_string(),
                    "blobs": s.blobs,
                    "bytes": s.bytes,
                    "hits": s.hits,
                    "partial_downloads": s.partials,
                    "partial_bytes": s.partial_bytes,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "Cache: {}", cache.root().display())?;
                writeln!(out, "Blobs: {} ({})", s.blobs, human_bytes(s.bytes))?;
                writeln!(out, "Cache hits: {}", s.hits)?;
                writeln!(
                    out,
                    "Partial downloads: {} ({})",
                    s.partials,
                    human_bytes(s.partial_bytes)
                )?;
                if let Some(t) = s.oldest_use {
                    writeln!(out, "Least recently used: {} ago", ago(t))?;
                }
            }
        }
        CacheAction::Ls { json } => {
            for e in cache.entries()? {
                if json {
                    let v = serde_json::json!({
                        "digest": format!("sha256:{}", e.hex),
                        "size": e.size,
                        "hits": e.hits,
                        "images": e.images,
                        "last_used": e.last_used
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0),
                    });
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(
                        out,
                        "sha256:{}  {:>10}  used {} ago  hits {}  {}",
                        e.hex,
                        human_bytes(e.size),
                        ago(e.last_used),
                        e.hits,
                        e.images.join(", ")
                    )?;
                }
            }
        }
        CacheAction::Prune {
            older_than,
            max_size,
        } => {
            let p = cache.prune(older_than, max_size)?;
            report_removal(&mut out, &p)?;
        }
        CacheAction::Clear => {
            let p = cache.clear()?;
            report_removal(&mut out, &p)?;
        }
    }
    out.flush()
}

fn report_removal(out: &mut dyn Write, p: &PruneOutcome) -> std::io::Result<()> {
    writeln!(
        out,
        "Removed {} blobs and {} partial downloads, {} freed",
        p.blobs,
        p.partials,
        human_bytes(p.freed)
    )?;
    if p.leftovers > 0 {
        writeln!(
            out,
            "Removed {} files that interrupted runs left behind",
            p.leftovers
        )?;
    }
    if p.in_use > 0 {
        writeln!(out, "Kept {} blobs that a running pull is using", p.in_use)?;
    }
    Ok(())
}

/// `3 d`, `5 h`, `42 s`.
fn ago(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s >= 86_400 => format!("{} d", s / 86_400),
        s if s >= 3600 => format!("{} h", s / 3600),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}
