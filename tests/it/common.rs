//! Shared helpers for the integration tests: running the binary with an isolated environment,
//! reading the archives it writes, and checking them against the output contract.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::image::{Blob, Image};

/// The only variables a child inherits from the test process; everything else (docker
/// configs, proxies, `DOCKER_PULL_*`, `RUST_LOG`, ...) is what each test sets.
const INHERITED: &[&str] = &["PATH", "TMPDIR", "LANG", "LC_ALL"];

/// How long one run of the binary may take before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The outcome of one run of `docker-pull`.
#[derive(Debug)]
pub struct Run {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for failure messages.
    pub command: String,
    /// The run was killed after `RUN_TIMEOUT`.
    pub timed_out: bool,
}

impl Run {
    /// Panics with the full output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert!(
            !self.timed_out,
            "`{}` did not finish in time and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.stdout, self.stderr
        );
        assert_eq!(
            self.code,
            Some(code),
            "`{}` exited with {:?}, expected {code}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the run succeeded.
    #[track_caller]
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }

    /// The `--json` objects on stdout (every stdout line must be one).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!(
                        "stdout line is not a JSON object ({e}): {line:?}\n--- full stdout ---\n{}\n--- stderr ---\n{}",
                        self.stdout, self.stderr
                    )
                })
            })
            .collect()
    }

    /// The single `--json` object on stdout.
    #[track_caller]
    pub fn json(&self) -> Value {
        let lines = self.json_lines();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one JSON line on stdout, got {}:\n{}",
            lines.len(),
            self.stdout
        );
        lines.into_iter().next().expect("one line")
    }

    /// Asserts that neither stream shows a Rust panic or backtrace.
    #[track_caller]
    pub fn assert_no_panic(&self) {
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            assert!(
                !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
                "`{}` panicked ({name}):\n{text}",
                self.command
            );
        }
    }

    /// Asserts that `secret` appears in no output.
    #[track_caller]
    pub fn assert_not_leaked(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "`{}` printed the secret {secret:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.stdout,
            self.stderr
        );
    }
}

/// A scratch area for one test: a cache directory and an output directory.
pub struct Work {
    pub dir: tempfile::TempDir,
    /// How long one run may take before it is killed.
    pub timeout: Duration,
    /// `RLIMIT_NOFILE` (soft, hard) for the runs, when set.
    pub fd_limit: Option<(u64, u64)>,
}

impl Work {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("docker-pull-it-")
                .tempdir()
                .expect("creating a temp dir"),
            timeout: RUN_TIMEOUT,
            fd_limit: None,
        }
    }

    /// Kills runs that take longer than `timeout` (the run then reports `timed_out`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the binary with at most `soft` open files, which it may raise up to `hard`.
    pub fn with_fd_limit(mut self, soft: u64, hard: u64) -> Self {
        self.fd_limit = Some((soft, hard));
        self
    }

    /// The cache directory passed with `--cache-dir`.
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The output directory passed with `-o` by [`Work::pull`].
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Asserts that nothing (no archive, no temporary file) was written to the output directory.
    pub fn assert_no_output(&self) {
        let files = files_in(&self.out());
        assert!(
            files.is_empty(),
            "nothing should be written on failure: {files:?}"
        );
    }

    /// A path inside the scratch area.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `--cache-dir <cache> -o <out>` followed by `args`.
    fn pull_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "--cache-dir".to_string(),
            self.cache().to_str().expect("utf-8 temp path").to_string(),
            "-o".to_string(),
            self.out().to_str().expect("utf-8 temp path").to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// Runs `docker-pull --cache-dir <cache> -o <out> <args>`.
    pub fn pull(&self, args: &[&str]) -> Run {
        let all = self.pull_args(args);
        self.run(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// [`Work::pull`] with extra environment variables, variables to remove and optional stdin.
    pub fn pull_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        unset: &[&str],
        stdin: Option<&str>,
    ) -> Run {
        let all = self.pull_args(args);
        self.run_env(
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
            env,
            unset,
            stdin,
        )
    }

    /// Runs `docker-pull --cache-dir <cache> <args>` (the caller chooses `-o`).
    pub fn pull_to(&self, args: &[&str]) -> Run {
        let cache = self.cache();
        let mut all: Vec<&str> = vec!["--cache-dir", cache.to_str().expect("utf-8 temp path")];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Runs the binary with exactly `args`, in the scratch directory, with an isolated environment
    /// (no docker config, no proxies, no `DOCKER_PULL_*` variables).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None)
    }

    /// Like [`Work::run`], with extra environment variables and optional stdin.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        self.spawn_with(args, env, stdin).wait()
    }

    /// Starts `docker-pull --cache-dir <cache> -o <out> <args>` without waiting for it.
    pub fn spawn_pull(&self, args: &[&str]) -> Running {
        let all = self.pull_args(args);
        self.spawn_with(
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
            None,
        )
    }

    /// Starts the binary with an isolated environment (see [`Work::run`]) without waiting.
    pub fn spawn_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Running {
        self.spawn_env(args, env, &[], stdin)
    }

    /// Like [`Work::run_with`], and also removes the variables in `unset` from the child's
    /// environment (e.g. `DOCKER_CONFIG` or `XDG_RUNTIME_DIR`, which the isolation sets).
    pub fn run_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        unset: &[&str],
        stdin: Option<&str>,
    ) -> Run {
        self.spawn_env(args, env, unset, stdin).wait()
    }

    /// Like [`Work::spawn_with`], removing the variables in `unset` after setting the others.
    pub fn spawn_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        unset: &[&str],
        stdin: Option<&str>,
    ) -> Running {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("creating a fake HOME");
        let mut command = Command::new(env!("CARGO_BIN_EXE_docker-pull"));
        // Nothing of the developer's or CI's environment but what a process
        // needs to run: the child sees only the variables set here.
        command.env_clear();
        for (key, value) in std::env::vars_os() {
            if INHERITED.iter().any(|k| key == *k) {
                command.env(key, value);
            }
        }
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", &home)
            .env("DOCKER_CONFIG", home.join(".docker"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
            // The machine's /etc/containers/registries.conf and
            // /etc/docker/daemon.json stay out of the tests.
            .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
            .env("DOCKER_PULL_DAEMON_JSON", "/dev/null")
            .env("NO_COLOR", "1");
        for (key, value) in env {
            command.env(key, value);
        }
        for key in unset {
            command.env_remove(key);
        }
        if let Some((soft, hard)) = self.fd_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: the hook only calls setrlimit, which is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let description = format!("docker-pull {}", args.join(" "));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{description}`: {e}"));
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes()).expect("writing stdin");
        }
        // Drain both pipes on threads so a chatty child cannot block on a full pipe.
        let mut out_pipe = child.stdout.take().expect("piped stdout");
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stdout = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out_pipe.read_to_end(&mut s);
            s
        });
        let stderr = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err_pipe.read_to_end(&mut s);
            s
        });
        Running {
            child,
            stdout,
            stderr,
            command: description,
            started: Instant::now(),
            timeout: self.timeout,
        }
    }
}

/// Where a test writes credential files for the isolated child (see [`Work::spawn_with`]).
impl Work {
    /// The child's `$HOME`.
    pub fn home(&self) -> PathBuf {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("creating a fake HOME");
        home
    }

    /// The child's docker config file, `$DOCKER_CONFIG/config.json`.
    pub fn docker_config(&self) -> PathBuf {
        self.home().join(".docker").join("config.json")
    }

    /// The child's `$REGISTRY_AUTH_FILE`.
    pub fn registry_auth_file(&self) -> PathBuf {
        self.home().join("auth.json")
    }

    /// The child's `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub fn runtime_auth_file(&self) -> PathBuf {
        self.home().join("run").join("containers").join("auth.json")
    }

    /// `~/.config/containers/auth.json` for the child (when `XDG_CONFIG_HOME` is unset).
    pub fn config_home_auth_file(&self) -> PathBuf {
        self.home()
            .join(".config")
            .join("containers")
            .join("auth.json")
    }

    /// Writes `contents` to `path`, creating its directory.
    pub fn write_file(&self, path: &Path, contents: &str) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating a config directory");
        }
        std::fs::write(path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Writes `value` as JSON to `path`.
    pub fn write_json(&self, path: &Path, value: &Value) {
        self.write_file(path, &value.to_string());
    }
}

/// `{"auths": {KEY: {"auth": base64(user:pass)}}}`, the docker config / auth.json form.
pub fn auths_with_auth(key: &str, user: &str, pass: &str) -> Value {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    serde_json::json!({ "auths": { key: { "auth": auth } } })
}

/// What a fake `docker-credential-NAME get` answers.
#[derive(Clone, Debug)]
pub enum HelperReply {
    /// `{"ServerURL": <stdin>, "Username": .., "Secret": ..}` on stdout, exit 0.
    Credentials { username: String, secret: String },
    /// `credentials not found in native keychain` on stdout, exit 1 (what real helpers do).
    NotFound,
    /// This message on stderr, exit 1: a helper that is broken.
    Fail(String),
}

/// A fake docker credential helper: a shell script `docker-credential-NAME` in `<work>/bin`
/// that logs the server address it is asked about and answers with a canned reply.
pub struct CredentialHelper {
    pub name: String,
    pub bin: PathBuf,
    pub log: PathBuf,
}

impl CredentialHelper {
    /// Installs `docker-credential-<name>` (several helpers can share the directory).
    pub fn install(work: &Work, name: &str, reply: HelperReply) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let bin = work.path("bin");
        std::fs::create_dir_all(&bin).expect("creating the helper directory");
        let log = work.path(&format!("helper-{name}.log"));
        let answer = match &reply {
            HelperReply::Credentials { username, secret } => {
                for value in [username, secret] {
                    assert!(
                        !value.contains(['\'', '%', '"', '\\']),
                        "keep helper test values shell- and JSON-safe: {value:?}"
                    );
                }
                format!(
                    "printf '{{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}}\\n' \"$server\" '{username}' '{secret}'\nexit 0"
                )
            }
            HelperReply::NotFound => {
                "echo 'credentials not found in native keychain'\nexit 1".to_string()
            }
            HelperReply::Fail(message) => format!("echo '{message}' >&2\nexit 1"),
        };
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" != get ]; then echo \"unsupported: $1\" >&2; exit 2; fi\nserver=$(cat)\nprintf '%s\\n' \"$server\" >> '{}'\n{answer}\n",
            log.display()
        );
        let path = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&path, script).expect("writing the credential helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making the credential helper executable");
        Self {
            name: name.to_string(),
            bin,
            log,
        }
    }

    /// `PATH` for the child: the helper directory first.
    pub fn path_env(&self) -> String {
        match std::env::var("PATH") {
            Ok(path) if !path.is_empty() => format!("{}:{path}", self.bin.display()),
            _ => format!("{}:/usr/bin:/bin", self.bin.display()),
        }
    }

    /// The server addresses the helper was asked about, one per call.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a throwaway port");
    listener.local_addr().expect("local address").port()
}

/// A `docker-pull` process that is still running.
pub struct Running {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    command: String,
    started: Instant,
    timeout: Duration,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    pub fn finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends `SIGINT` (what Ctrl-C does) to this process only.
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -INT {} failed", self.pid());
    }

    /// Waits for the exit (killing it after the work's timeout) and collects the output.
    pub fn wait(self) -> Run {
        self.wait_raw().0
    }

    /// [`Running::wait`], with stdout's bytes as they came (an archive on stdout).
    pub fn wait_raw(mut self) -> (Run, Vec<u8>) {
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for docker-pull") {
                break status;
            }
            if self.started.elapsed() > self.timeout {
                timed_out = true;
                let _ = self.child.kill();
                break self
                    .child
                    .wait()
                    .expect("waiting for the killed docker-pull");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let raw = self.stdout.join().unwrap_or_default();
        let stdout = String::from_utf8_lossy(&raw).into_owned();
        let stderr = String::from_utf8_lossy(&self.stderr.join().unwrap_or_default()).into_owned();
        let run = Run {
            code: status.code(),
            stdout,
            stderr,
            command: self.command,
            timed_out,
        };
        run.assert_no_panic();
        (run, raw)
    }
}

/// One tar entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    pub data: Vec<u8>,
}

/// A tar archive read fully into memory.
#[derive(Debug)]
pub struct Archive {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

impl Archive {
    /// Reads `path` (panics with the reason if it is missing or not a tar).
    #[track_caller]
    pub fn open(path: &Path) -> Self {
        let file = std::fs::File::open(path)
            .unwrap_or_else(|e| panic!("cannot open archive {}: {e}", path.display()));
        let mut archive = tar::Archive::new(file);
        let mut entries = Vec::new();
        for entry in archive
            .entries()
            .unwrap_or_else(|e| panic!("{} is not a tar: {e}", path.display()))
        {
            let mut entry =
                entry.unwrap_or_else(|e| panic!("bad tar entry in {}: {e}", path.display()));
            let header = entry.header().clone();
            let entry_path = entry
                .path()
                .unwrap_or_else(|e| panic!("bad entry path in {}: {e}", path.display()))
                .to_string_lossy()
                .into_owned();
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .unwrap_or_else(|e| panic!("reading {entry_path} in {}: {e}", path.display()));
            entries.push(Entry {
                path: entry_path,
                kind: header.entry_type(),
                mode: header.mode().unwrap_or(0) & 0o7777,
                mtime: header.mtime().unwrap_or(u64::MAX),
                uid: header.uid().unwrap_or(u64::MAX),
                gid: header.gid().unwrap_or(u64::MAX),
                data,
            });
        }
        Self {
            path: path.to_path_buf(),
            entries,
        }
    }

    /// Entry paths in archive order, directories without their trailing `/`.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| e.path.trim_end_matches('/').to_string())
            .collect()
    }

    /// The entry at `path` (trailing `/` ignored).
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        let want = path.trim_end_matches('/');
        self.entries
            .iter()
            .find(|e| e.path.trim_end_matches('/') == want)
    }

    /// The bytes of the file at `path`.
    #[track_caller]
    pub fn file(&self, path: &str) -> &[u8] {
        &self
            .entry(path)
            .unwrap_or_else(|| {
                panic!(
                    "{} has no entry {path}; entries: {:?}",
                    self.path.display(),
                    self.names()
                )
            })
            .data
    }

    /// The file at `path` parsed as JSON.
    #[track_caller]
    pub fn json(&self, path: &str) -> Value {
        serde_json::from_slice(self.file(path))
            .unwrap_or_else(|e| panic!("{path} in {} is not JSON: {e}", self.path.display()))
    }

    /// The file `blobs/sha256/<hex>` for `digest`.
    #[track_caller]
    pub fn blob(&self, digest: &str) -> &[u8] {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.file(&format!("blobs/sha256/{hex}"))
    }

    /// Hex names of all `blobs/sha256/*` files.
    pub fn blob_names(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.kind.is_file())
            .filter_map(|e| e.path.strip_prefix("blobs/sha256/").map(str::to_string))
            .collect()
    }
}

/// What an `index.json` annotation should be.
#[derive(Clone, Debug)]
pub enum Ann {
    /// Exactly this value.
    Is(String),
    /// Not present (digest-only references).
    Absent,
    /// Not checked (where the contract does not say).
    Any,
}

/// What one image in an archive is expected to look like.
pub struct Expected<'a> {
    pub image: &'a Image,
    /// `io.containerd.image.name`, e.g. `127.0.0.1:5000/small:latest`.
    pub full_name: Ann,
    /// `org.opencontainers.image.ref.name`, the tag.
    pub ref_name: Ann,
    /// `manifest.json` RepoTags.
    pub repo_tags: Vec<String>,
    /// Further blobs the archive may (but need not) hold, e.g. the index of a multi-platform image.
    pub optional_blobs: Vec<&'a Blob>,
}

impl<'a> Expected<'a> {
    /// An image pulled as `<addr>/<repo>:<tag>` from a non-Docker-Hub registry.
    pub fn tagged(image: &'a Image, addr: &str, repo: &str, tag: &str) -> Self {
        let name = format!("{addr}/{repo}:{tag}");
        Self {
            image,
            full_name: Ann::Is(name.clone()),
            ref_name: Ann::Is(tag.to_string()),
            repo_tags: vec![name],
            optional_blobs: Vec::new(),
        }
    }

    /// An image pulled by digest only: no annotations, no RepoTags.
    pub fn digest_only(image: &'a Image) -> Self {
        Self {
            image,
            full_name: Ann::Absent,
            ref_name: Ann::Absent,
            repo_tags: Vec::new(),
            optional_blobs: Vec::new(),
        }
    }

    /// Allows `blob` in the archive as well.
    pub fn allow(mut self, blob: &'a Blob) -> Self {
        self.optional_blobs.push(blob);
        self
    }
}

/// Checks a `-f docker` archive against the contract: entry order and metadata, the OCI layout,
/// `index.json`, `manifest.json`, `repositories`, and every blob byte-for-byte, each stored once.
#[track_caller]
pub fn assert_docker_archive(archive: &Archive, expected: &[Expected<'_>]) {
    let names = archive.names();
    let where_ = archive.path.display();

    // Entry metadata.
    for entry in &archive.entries {
        assert_eq!(entry.mtime, 0, "{} in {where_}: mtime", entry.path);
        assert_eq!(
            (entry.uid, entry.gid),
            (0, 0),
            "{} in {where_}: uid/gid",
            entry.path
        );
        let want_mode = if entry.kind.is_dir() { 0o755 } else { 0o644 };
        assert!(
            entry.kind.is_dir() || entry.kind.is_file(),
            "{} in {where_}: unexpected entry type {:?}",
            entry.path,
            entry.kind
        );
        assert_eq!(
            entry.mode, want_mode,
            "{} in {where_}: mode {:o}, want {want_mode:o}",
            entry.path, entry.mode
        );
    }

    // Order: oci-layout, blobs/, blobs/sha256/, blobs..., index.json, manifest.json, repositories.
    let mut wanted_blobs: Vec<&Blob> = Vec::new();
    for e in expected {
        for blob in std::iter::once(&e.image.manifest).chain(e.image.blobs()) {
            if !wanted_blobs.iter().any(|b| b.digest == blob.digest) {
                wanted_blobs.push(blob);
            }
        }
    }
    assert_eq!(
        names.first().map(String::as_str),
        Some("oci-layout"),
        "{where_}: first entry; entries {names:?}"
    );
    assert_eq!(
        names.get(1).map(String::as_str),
        Some("blobs"),
        "{where_}: second entry; entries {names:?}"
    );
    assert_eq!(
        names.get(2).map(String::as_str),
        Some("blobs/sha256"),
        "{where_}: third entry; entries {names:?}"
    );
    let tail: Vec<&str> = names
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    // `repositories` lists tagged images only; with none it may be left out or be `{}`.
    let has_repositories = expected.iter().any(|e| !e.repo_tags.is_empty())
        || names.last().is_some_and(|n| n == "repositories");
    if has_repositories {
        assert_eq!(
            tail,
            ["index.json", "manifest.json", "repositories"],
            "{where_}: last entries; entries {names:?}"
        );
    } else {
        assert_eq!(
            &tail[1..],
            ["index.json", "manifest.json"],
            "{where_}: last entries; entries {names:?}"
        );
    }
    let trailer = if has_repositories { 3 } else { 2 };
    let middle = &names[3..names.len() - trailer];
    let mut blob_names: Vec<String> = middle
        .iter()
        .map(|n| {
            n.strip_prefix("blobs/sha256/")
                .unwrap_or_else(|| {
                    panic!("{where_}: unexpected entry {n} among the blobs; entries {names:?}")
                })
                .to_string()
        })
        .collect();
    let count = blob_names.len();
    blob_names.sort();
    blob_names.dedup();
    assert_eq!(
        blob_names.len(),
        count,
        "{where_}: a blob is stored twice; entries {names:?}"
    );
    let optional: Vec<&Blob> = expected
        .iter()
        .flat_map(|e| e.optional_blobs.iter().copied())
        .collect();
    for blob in &optional {
        if blob_names.iter().any(|n| n == blob.hex())
            && !wanted_blobs.iter().any(|b| b.digest == blob.digest)
        {
            wanted_blobs.push(blob);
        }
    }
    let mut want_names: Vec<String> = wanted_blobs.iter().map(|b| b.hex().to_string()).collect();
    want_names.sort();
    assert_eq!(blob_names, want_names, "{where_}: the set of blobs");
    for blob in &wanted_blobs {
        assert!(
            archive.blob(&blob.digest) == blob.data.as_slice(),
            "{where_}: blob {} ({}) differs from what the registry served",
            blob.digest,
            blob.media_type
        );
    }

    // oci-layout
    assert_eq!(
        archive.json("oci-layout"),
        serde_json::json!({"imageLayoutVersion": "1.0.0"}),
        "{where_}: oci-layout"
    );

    // index.json
    let index = archive.json("index.json");
    assert_eq!(
        index["schemaVersion"], 2,
        "{where_}: index.json schemaVersion: {index}"
    );
    let manifests = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{where_}: index.json has no manifests array: {index}"));
    assert_eq!(
        manifests.len(),
        expected.len(),
        "{where_}: index.json entries: {index}"
    );
    for (entry, e) in manifests.iter().zip(expected) {
        let m = &e.image.manifest;
        assert_eq!(
            entry["mediaType"],
            m.media_type.as_str(),
            "{where_}: index.json mediaType: {entry}"
        );
        assert_eq!(
            entry["digest"],
            m.digest.as_str(),
            "{where_}: index.json digest: {entry}"
        );
        assert_eq!(
            entry["size"],
            m.size(),
            "{where_}: index.json size: {entry}"
        );
        let annotations = &entry["annotations"];
        for (key, want) in [
            ("io.containerd.image.name", &e.full_name),
            ("org.opencontainers.image.ref.name", &e.ref_name),
        ] {
            match want {
                Ann::Is(value) => assert_eq!(
                    annotations[key],
                    value.as_str(),
                    "{where_}: index.json annotation {key}: {entry}"
                ),
                Ann::Absent => assert!(
                    annotations.get(key).is_none(),
                    "{where_}: index.json must not have annotation {key}: {entry}"
                ),
                Ann::Any => {}
            }
        }
    }

    // manifest.json
    let manifest = archive.json("manifest.json");
    let items = manifest
        .as_array()
        .unwrap_or_else(|| panic!("{where_}: manifest.json is not an array: {manifest}"));
    assert_eq!(
        items.len(),
        expected.len(),
        "{where_}: manifest.json items: {manifest}"
    );
    for (item, e) in items.iter().zip(expected) {
        assert_eq!(
            item["Config"],
            format!("blobs/sha256/{}", e.image.config.hex()),
            "{where_}: manifest.json Config: {item}"
        );
        let layers: Vec<String> = e
            .image
            .layers
            .iter()
            .map(|l| format!("blobs/sha256/{}", l.hex()))
            .collect();
        assert_eq!(
            item["Layers"],
            serde_json::json!(layers),
            "{where_}: manifest.json Layers: {item}"
        );
        assert_eq!(
            item["RepoTags"],
            serde_json::json!(e.repo_tags),
            "{where_}: manifest.json RepoTags: {item}"
        );
    }

    // repositories
    if has_repositories {
        let mut want: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for e in expected {
            for tag in &e.repo_tags {
                let (repo, t) = tag
                    .rsplit_once(':')
                    .unwrap_or_else(|| panic!("bad expected RepoTag {tag}"));
                want.entry(repo.to_string())
                    .or_default()
                    .insert(t.to_string(), e.image.config.hex().to_string());
            }
        }
        let repositories = archive.json("repositories");
        assert_eq!(
            repositories,
            serde_json::json!(want),
            "{where_}: repositories"
        );
    }
}

/// Regular files directly inside `dir` (names), sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(read) => read
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Hex names of the blobs in a cache directory (`<cache>/blobs/sha256/*`).
pub fn cache_blobs(cache: &Path) -> Vec<String> {
    files_in(&cache.join("blobs").join("sha256"))
}

/// The default archive name for `127.0.0.1:PORT/<repo>:<tag>` on `arch[/variant]`.
pub fn default_name(port: u16, repo: &str, tag: &str, arch: &str) -> String {
    format!(
        "127.0.0.1_{port}_{}_{}_{}.tar",
        repo.replace(['/', ':'], "_"),
        tag,
        arch.replace('/', "_")
    )
}

/// Opens the default-named linux/amd64 archive of `repo:tag` in the output directory and checks
/// that it holds exactly `image`, tagged as the registry names it.
#[track_caller]
pub fn assert_default_archive(
    work: &Work,
    registry: &crate::support::registry::FakeRegistry,
    image: &crate::support::image::Image,
    repo: &str,
    tag: &str,
) -> Archive {
    let archive = Archive::open(&work.out().join(default_name(
        registry.port(),
        repo,
        tag,
        "amd64",
    )));
    assert_docker_archive(
        &archive,
        &[Expected::tagged(image, &registry.addr(), repo, tag)],
    );
    archive
}

/// Asserts that every file under `<cache>/blobs/sha256` hashes to its name (no damaged or
/// half-written blob was committed).
#[track_caller]
pub fn assert_cache_sound(cache: &Path) {
    use sha2::{Digest as _, Sha256};
    for name in cache_blobs(cache) {
        let path = cache.join("blobs").join("sha256").join(&name);
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            name,
            "cached blob {} does not match its name",
            path.display()
        );
    }
}

/// Every file and directory below `dir` (relative paths, sorted); empty when `dir` is missing.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in read.filter_map(Result::ok) {
            let path = entry.path();
            out.push(
                path.strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The partial downloads (`*.data`) in `<cache>/ingest`, with their sizes.
pub fn ingest_partials(cache: &Path) -> Vec<(String, u64)> {
    files_in(&cache.join("ingest"))
        .into_iter()
        .filter(|n| n.ends_with(".data"))
        .map(|n| {
            let len = std::fs::metadata(cache.join("ingest").join(&n)).map_or(0, |m| m.len());
            (n, len)
        })
        .collect()
}

/// The start offset of a `Range: bytes=N-` header, if any.
pub fn range_start(range: &Option<String>) -> Option<u64> {
    range
        .as_deref()?
        .strip_prefix("bytes=")?
        .split('-')
        .next()?
        .parse()
        .ok()
}
