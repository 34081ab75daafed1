//! End-to-end suite: the `docker-pull` binary against real components.
//!
//! scripts/test.sh starts a CNCF distribution registry, a second one behind Bearer token auth
//! (token server: tests/e2e/tokenserver.py) and a private Docker engine, exports their addresses
//! and runs `cargo test --features e2e --test e2e`. The first test to run pushes the fixtures
//! (see `env`); every test then pulls with the real binary, loads the archive with
//! `docker load` and, for runnable images, runs a container.
//!
//! Tests take turns (one lock around the engine) and clear the engine of fixture images before
//! loading, so every `docker load` really loads.
//!
//! The registry/network tests (`tls`, `credentials`, `redirect`, `renewal`, `mirrors`,
//! `proxies`, `secrets`) use more components test.sh starts: a TLS registry with Basic auth, a
//! registry redirecting blobs to tests/e2e/blobserver.py, a registry with 2-second tokens
//! behind tests/e2e/throttle.py, tinyproxy and microsocks (see `env::Network`).

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod credentials;
mod diskfull;
mod env;
mod errors;
mod formats;
mod mirrors;
mod proxies;
mod pull;
mod push;
mod query;
mod ratelimit;
mod redirect;
mod renewal;
mod run;
mod secrets;
mod tls;
mod verify;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::env::HELLO;
use crate::run::{Run, docker, docker_pull, docker_pull_command, run_command};

/// A scratch directory for one test: `home` (HOME, docker config), `cache`, `out`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self { dir: scratch_dir() }
    }
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Runs docker-pull with `--cache-dir <scratch>/cache` plus `args`.
    pub fn pull(&self, args: &[&str]) -> Run {
        let cache = self.cache();
        let mut all: Vec<&str> = vec!["--cache-dir", cache.to_str().expect("utf-8 temp path")];
        all.extend_from_slice(args);
        docker_pull(all, self.path())
    }

    /// A docker-pull command (clean environment, see `run::docker_pull_command`) with
    /// `--cache-dir <scratch>/cache` plus `args`, in the scratch directory: adjust its
    /// environment, then [`Scratch::run`] it.
    pub fn command(&self, args: &[&str]) -> Command {
        let cache = self.cache();
        let mut all: Vec<&str> = vec!["--cache-dir", cache.to_str().expect("utf-8 temp path")];
        all.extend_from_slice(args);
        let mut cmd = docker_pull_command(all, self.path());
        cmd.current_dir(self.path());
        cmd
    }

    /// Runs `cmd` with `input` on stdin (2 minutes at most).
    pub fn run(&self, cmd: Command, input: Option<&str>) -> Run {
        run_command(cmd, input.map(str::as_bytes), Duration::from_secs(120))
    }

    /// The docker config directory docker-pull reads (its `DOCKER_CONFIG`).
    pub fn docker_config_dir(&self) -> PathBuf {
        self.path().join("docker-config")
    }

    /// Writes `config` as `$DOCKER_CONFIG/config.json`; returns the file's path.
    pub fn write_docker_config(&self, config: &Value) -> PathBuf {
        let dir = self.docker_config_dir();
        std::fs::create_dir_all(&dir).expect("creating the docker config dir");
        let path = dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Runs docker-pull `--json` with the scratch cache, expecting success; returns the one
    /// JSON object per image it printed.
    pub fn pull_json(&self, args: &[&str], images: usize) -> (Run, Vec<Value>) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.pull(&all).success();
        let objects = parse_json_lines(&run);
        assert_eq!(
            objects.len(),
            images,
            "expected {images} JSON object(s) on stdout\n{}",
            run.describe()
        );
        (run, objects)
    }
}

/// The scratch directory lives under the system temp dir, named `docker-pull-e2e-*`.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("docker-pull-e2e-")
        .tempdir()
        .expect("creating a temporary directory")
}

/// Every stdout line as a JSON object (panics on anything else: `--json` allows nothing else).
pub fn parse_json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "stdout line is not JSON ({e}): {line:?}\n{}",
                    run.describe()
                )
            });
            assert!(
                value.is_object(),
                "stdout line is not a JSON object: {line}"
            );
            value
        })
        .collect()
}

/// A string field of a `--json` object.
pub fn field<'a>(object: &'a Value, name: &str) -> &'a str {
    object
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("--json object lacks string field {name:?}: {object}"))
}

/// An integer field of a `--json` object.
pub fn number(object: &Value, name: &str) -> u64 {
    object
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("--json object lacks integer field {name:?}: {object}"))
}

/// `docker load -i archive`; returns its stdout.
pub fn docker_load(archive: &Path) -> String {
    assert!(
        archive.is_file(),
        "archive {} does not exist",
        archive.display()
    );
    docker(["load", "-i", archive.to_str().expect("utf-8 path")])
        .success()
        .stdout
}

/// Asserts `docker load` printed `Loaded image: <name>`.
#[track_caller]
pub fn assert_loaded(load_output: &str, name: &str) {
    let want = format!("Loaded image: {name}");
    assert!(
        load_output.lines().any(|l| l.trim() == want),
        "docker load did not report {want:?}; it said:\n{load_output}"
    );
}

/// Runs a container of `image` (no network) and asserts what it prints.
#[track_caller]
pub fn assert_runs(image: &str) {
    let run = docker(["run", "--rm", "--network", "none", image]).success();
    assert_eq!(
        run.stdout.trim(),
        HELLO,
        "unexpected container output\n{}",
        run.describe()
    );
}

/// `docker image inspect -f FORMAT image`, trimmed.
pub fn inspect(image: &str, format: &str) -> String {
    docker(["image", "inspect", "-f", format, image])
        .success()
        .stdout
        .trim()
        .to_string()
}

/// `architecture/variant` of a loaded image as the engine reports it.
pub fn engine_platform(image: &str) -> String {
    inspect(image, "{{.Os}}/{{.Architecture}}/{{.Variant}}")
        .trim_end_matches('/')
        .to_string()
}

/// `docker load` of `archive` reports `name`, and a container of `name` runs.
#[track_caller]
pub fn assert_loads_and_runs(archive: &Path, name: &str) {
    assert_loaded(&docker_load(archive), name);
    assert_runs(name);
}

/// The `--json` objects of a successful run, exactly `images` of them.
#[track_caller]
pub fn json_objects(run: &Run, images: usize) -> Vec<Value> {
    let objects = parse_json_lines(run);
    assert_eq!(
        objects.len(),
        images,
        "expected {images} JSON object(s) on stdout\n{}",
        run.describe()
    );
    objects
}

/// `GET http://ADDR/PATH` of a support server (never through a proxy), as JSON.
pub fn get_json(addr: &str, path: &str) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sSf", "--noproxy", "*", &format!("http://{addr}{path}")]);
    let run = run_command(cmd, None, Duration::from_secs(20)).success();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("http://{addr}{path} is not JSON ({e}): {}", run.stdout))
}

/// The tokens a token server (tests/e2e/tokenserver.py) issues from now on.
pub struct TokenLog {
    server: String,
    start: u64,
}

impl TokenLog {
    /// Starts counting at the server's current number of issued tokens.
    pub fn start(server: &str) -> Self {
        let stats = get_json(server, "/_stats");
        Self {
            server: server.to_string(),
            start: number(&stats, "tokens_issued"),
        }
    }

    /// Every token issued since [`TokenLog::start`]: objects with `kind` (`access` or
    /// `refresh`), `token`, `user`, `grant`, `scopes`, `expires_in`.
    pub fn issued(&self) -> Vec<Value> {
        match get_json(&self.server, &format!("/_tokens?since={}", self.start)) {
            Value::Array(tokens) => tokens,
            other => panic!("/_tokens of {} is not a list: {other}", self.server),
        }
    }

    /// The access tokens issued since the start whose scopes name `repo`.
    pub fn access_tokens_for(&self, repo: &str) -> Vec<Value> {
        let needle = format!("repository:{repo}:");
        self.issued()
            .into_iter()
            .filter(|t| t["kind"] == "access")
            .filter(|t| {
                t["scopes"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|s| s.as_str().unwrap_or("").starts_with(&needle))
                })
            })
            .collect()
    }
}

/// What a service log file gains from now on (tinyproxy's and microsocks's logs).
pub struct LogMark {
    path: PathBuf,
    offset: u64,
}

impl LogMark {
    pub fn new(path: &Path) -> Self {
        let offset = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("log {}: {e}", path.display()))
            .len();
        Self {
            path: path.to_path_buf(),
            offset,
        }
    }

    /// The text appended since [`LogMark::new`] (after a short wait for the writer to flush).
    pub fn added(&self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        let all = std::fs::read(&self.path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.path.display()));
        let start = (self.offset as usize).min(all.len());
        String::from_utf8_lossy(&all[start..]).into_owned()
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("local address").port()
}

/// Asserts stderr has a line starting with `error:` and no panic.
#[track_caller]
pub fn assert_error_line(run: &Run) {
    assert!(
        run.stderr.lines().any(|l| l.starts_with("error:")),
        "an `error:` line on stderr\n{}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("panicked"),
        "no panic\n{}",
        run.describe()
    );
}
