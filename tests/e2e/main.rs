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

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod env;
mod errors;
mod pull;
mod run;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::env::HELLO;
use crate::run::{Run, docker, docker_pull};

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
