//! The commands besides pulling: `push`, `cache`, `verify`, `completions`
//! and the hidden `man`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use clap::CommandFactory;

use docker_pull::cache::{Cache, PruneOutcome};
use docker_pull::cli::{CacheAction, Cli, Command, FormatArg, default_cache_dir, parse_copy_file};
use docker_pull::progress::{self, Mode, View};
use docker_pull::push;
use docker_pull::report::human_bytes;
use docker_pull::text::escape_for_terminal;
use docker_pull::verify;

/// Runs a command (`cli` holds the options given with it); returns the
/// exit code.
pub fn run(command: Command, cli: Cli) -> u8 {
    let result = match command {
        Command::Verify { sources } => return verify_command(&sources, cli.quiet, cli.json),
        Command::Push {
            source,
            target,
            image,
        } => return push_command(cli, source, &target, image),
        Command::Copy {
            image,
            target,
            platform,
            images_file,
            mirror,
        } => {
            let pairs = match (images_file, image, target) {
                (Some(file), _, _) => std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))
                    .and_then(|text| parse_copy_file(&text).map_err(|e| e.to_string())),
                (None, Some(image), Some(target)) => Ok(vec![(image, target)]),
                _ => Err("give IMAGE TARGET, or -i FILE".to_string()),
            };
            return match pairs {
                Ok(pairs) => copy_command(cli, pairs, platform, mirror),
                Err(e) => {
                    eprintln!("error: {e}");
                    2
                }
            };
        }
        Command::Inspect {
            image,
            platform,
            mirror,
        } => return inspect_command(cli, image, platform, mirror),
        Command::Tags {
            repository,
            mirror,
            page_size,
        } => return tags_command(cli, repository, mirror, page_size),
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
        Command::Cache { action } => {
            let dir = cli.cache_dir.clone().unwrap_or_else(default_cache_dir);
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

/// The settings of a question about one image (`inspect`, `tags`): the
/// registry options as for a pull of `image`.
fn query_settings(
    cli: Cli,
    image: String,
    platform: Option<String>,
    mirror: Vec<String>,
) -> Result<docker_pull::cli::Settings, String> {
    let mut cli = cli;
    cli.command = None;
    cli.images = vec![image];
    cli.images_file = None;
    cli.platform = platform;
    cli.mirror = mirror;
    // Every platform may be described; nothing is written.
    cli.format = FormatArg::Oci;
    cli.output = None;
    cli.split = None;
    cli.exclude_from = Vec::new();
    cli.tag = None;
    cli.into_settings(&mut std::io::stdin())
        .map_err(|e| e.to_string())
}

/// Runs a question on a fresh runtime, Ctrl-C ending it with 130; `show`
/// prints the answer.
fn ask<T>(
    settings: &docker_pull::cli::Settings,
    question: impl std::future::Future<Output = Result<T, docker_pull::error::PullError>>,
    show: impl FnOnce(&mut dyn Write, &T) -> std::io::Result<()>,
) -> u8 {
    let options = docker_pull::cli::RunOptions {
        logging: settings.logging(),
        json: settings.json,
        warnings: settings.warnings.clone(),
        password_on_command_line: settings.password_on_command_line,
    };
    let (runtime, _view) = match start(&options) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let answer = runtime.block_on(async {
        tokio::select! {
            answer = question => Some(answer),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match answer {
        None => 130,
        Some(Ok(answer)) => {
            let mut out = std::io::stdout().lock();
            match show(&mut out, &answer).and_then(|_| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: cannot write the answer: {e}");
                    1
                }
                _ => 0,
            }
        }
        Some(Err(e)) => {
            eprintln!("error: {}", escape_for_terminal(&e.to_string()));
            1
        }
    }
}

/// `inspect IMAGE`: 0 when the registry described it, else 1.
fn inspect_command(cli: Cli, image: String, platform: Option<String>, mirror: Vec<String>) -> u8 {
    let no_cache = cli.no_cache;
    let settings = match query_settings(cli, image, platform, mirror) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let cache = match &settings.cache_dir {
        Some(dir) if !no_cache => Cache::open(dir),
        _ => Cache::temporary(),
    };
    let cache = match cache {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            eprintln!("error: cannot open the cache: {e}; choose another with --cache-dir");
            return 1;
        }
    };
    let json = settings.json;
    ask(
        &settings,
        docker_pull::query::inspect(&settings, cache),
        |out, ins| match json {
            true => writeln!(
                out,
                "{}",
                serde_json::to_string(ins).map_err(std::io::Error::other)?
            ),
            false => docker_pull::inspect::write_text(out, ins),
        },
    )
}

/// `tags REPOSITORY`: 0 when the registry listed them, else 1.
fn tags_command(cli: Cli, repository: String, mirror: Vec<String>, page_size: Option<u32>) -> u8 {
    let last = repository.rsplit('/').next().unwrap_or(&repository);
    if last.contains(':') || last.contains('@') {
        eprintln!(
            "error: {}: give a repository without a tag or digest, such as {}",
            escape_for_terminal(&repository),
            escape_for_terminal(&format!(
                "{}{}",
                &repository[..repository.len() - last.len()],
                last.split([':', '@']).next().unwrap_or_default()
            ))
        );
        return 2;
    }
    let settings = match query_settings(cli, repository, None, mirror) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let json = settings.json;
    ask(
        &settings,
        docker_pull::query::tags(&settings, page_size),
        |out, tags| match json {
            true => writeln!(
                out,
                "{}",
                serde_json::to_string(tags).map_err(std::io::Error::other)?
            ),
            false => tags.iter().try_for_each(|t| writeln!(out, "{t}")),
        },
    )
}

/// `verify SOURCE...`: 0 when every image of every source is sound, else 1
/// with every problem on stderr (and in the `--json` objects).
/// `copy IMAGE TARGET` (or `-i FILE`): every image pulled into one layout in
/// the cache directory (so the cache serves and resumes the pull side), then
/// each pushed from there to its target.
fn copy_command(
    cli: Cli,
    pairs: Vec<(String, String)>,
    platform: Option<String>,
    mirror: Vec<String>,
) -> u8 {
    let root = if cli.no_cache {
        std::env::temp_dir()
    } else {
        cli.cache_dir.clone().unwrap_or_else(default_cache_dir)
    };
    let scratch = match std::fs::create_dir_all(&root)
        .and_then(|_| tempfile::Builder::new().prefix(".copy-").tempdir_in(&root))
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "error: cannot create a scratch directory in {}: {e}",
                root.display()
            );
            return 1;
        }
    };
    let layout = scratch.path().join("layout");
    let mut pull_cli = cli.clone();
    pull_cli.command = None;
    pull_cli.images = pairs.iter().map(|(i, _)| i.clone()).collect();
    pull_cli.images_file = None;
    pull_cli.platform = platform;
    pull_cli.mirror = mirror;
    pull_cli.format = FormatArg::OciDir;
    pull_cli.output = Some(layout.clone());
    pull_cli.tag = None;
    pull_cli.split = None;
    pull_cli.exclude_from = Vec::new();
    // -u is for the target; the source uses stored credentials.
    pull_cli.username = None;
    pull_cli.password = None;
    pull_cli.password_stdin = false;
    let pull = match pull_cli.into_settings(&mut std::io::empty()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let Some((first_image, first_target)) = pairs.first().cloned() else {
        return 2;
    };
    let prepared = cli.into_push_settings(
        layout,
        &first_target,
        Some(first_image),
        &mut std::io::stdin(),
    );
    let (push_base, options) = match prepared {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut pushes = vec![push_base.clone()];
    for (image, target) in pairs.iter().skip(1) {
        match docker_pull::push::target::Target::parse(target) {
            Ok(t) => pushes.push(docker_pull::push::PushSettings {
                target: t,
                image: Some(image.clone()),
                ..push_base.clone()
            }),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    }
    let (runtime, view) = match start(&options) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let code = runtime.block_on(async {
        tokio::select! {
            code = copy_all(&pull, &pushes, view, options.json) => code,
            _ = tokio::signal::ctrl_c() => {
                docker_pull::archive::remove_partial_archives();
                130
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    drop(scratch);
    code
}

/// The pull into the layout, then each push; the exit code.
async fn copy_all(
    pull: &docker_pull::cli::Settings,
    pushes: &[docker_pull::push::PushSettings],
    view: std::sync::Arc<dyn docker_pull::events::Observer>,
    json: bool,
) -> u8 {
    let cache = match &pull.cache_dir {
        Some(dir) => Cache::open(dir),
        None => Cache::temporary(),
    };
    let cache = match cache {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            eprintln!("error: cannot open the cache: {e}; choose another with --cache-dir");
            return 1;
        }
    };
    let pulled = match docker_pull::pull::Puller::new(pull, cache, std::sync::Arc::clone(&view)) {
        Ok(mut puller) => {
            puller
                .run(
                    |_| {},
                    |e| {
                        let _ = progress::write_stderr(crate::line_for(e).as_bytes());
                    },
                )
                .await
        }
        Err(e) => Err(e),
    };
    let pulled = match pulled {
        Ok(o) => o,
        Err(e) => {
            let _ = progress::write_stderr(crate::line_for(&e).as_bytes());
            return 1;
        }
    };
    let mut failed = pulled.failed;
    for settings in pushes {
        let wanted = settings.image.as_deref().unwrap_or_default();
        let resolved = pulled.reports.iter().find(|r| r.image == wanted);
        if resolved.is_none() {
            continue; // its pull failed, and said so
        }
        let outcome = push::run(
            settings,
            std::sync::Arc::clone(&view),
            |r| {
                let mut out = std::io::stdout().lock();
                let _ = push::print_report(&mut out, r, json).and_then(|_| out.flush());
            },
            |e| {
                let _ = progress::write_stderr(crate::line_for(e).as_bytes());
            },
        )
        .await;
        match outcome {
            Ok(o) => failed += o.failed,
            Err(e) => {
                let _ = progress::write_stderr(crate::line_for(&e).as_bytes());
                failed += 1;
            }
        }
    }
    u8::from(failed > 0)
}

/// Logging, the runtime and the progress view of a command; else the exit
/// code (2 when the log file cannot be opened, 1 without a runtime).
pub fn start(
    options: &docker_pull::cli::RunOptions,
) -> Result<
    (
        tokio::runtime::Runtime,
        std::sync::Arc<dyn docker_pull::events::Observer>,
    ),
    u8,
> {
    if let Err(e) = crate::init_logging(&options.logging) {
        eprintln!("error: {e}");
        return Err(2);
    }
    for warning in &options.warnings {
        tracing::warn!("{warning}");
    }
    if options.password_on_command_line {
        tracing::warn!(
            "a password given with -p is visible to other users of this machine; use --password-stdin"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            1u8
        })?;
    let mode = if options.logging.quiet || options.json && !std::io::stderr().is_terminal() {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Bars
    } else {
        Mode::Plain
    };
    let view: std::sync::Arc<dyn docker_pull::events::Observer> =
        std::sync::Arc::new(View::new(mode));
    Ok((runtime, view))
}

/// `push SOURCE TARGET`.
fn push_command(cli: Cli, source: PathBuf, target: &str, image: Option<String>) -> u8 {
    let (settings, options) =
        match cli.into_push_settings(source, target, image, &mut std::io::stdin()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
    let json = options.json;
    let (runtime, view) = match start(&options) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let code = runtime.block_on(async {
        let pushing = push::run(
            &settings,
            view,
            |r| {
                let mut out = std::io::stdout().lock();
                let _ = push::print_report(&mut out, r, json).and_then(|_| out.flush());
            },
            |e| {
                let _ = progress::write_stderr(crate::line_for(e).as_bytes());
            },
        );
        let outcome = tokio::select! {
            r = pushing => r,
            _ = tokio::signal::ctrl_c() => return 130,
        };
        match outcome {
            Ok(o) if o.failed == 0 => 0,
            Ok(_) => 1,
            Err(e) => {
                let _ = progress::write_stderr(crate::line_for(&e).as_bytes());
                e.exit_code()
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

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
