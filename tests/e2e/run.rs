//! Running the programs the suite drives: the `docker-pull` binary under test and the `docker`
//! CLI (against `$DOCKER_HOST`), with captured output, a time limit and readable failures.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Captured result of one command.
#[derive(Debug)]
pub struct Run {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything about this run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.command, self.status, self.stdout, self.stderr
        )
    }

    /// Panics (with the whole output) unless the command exited 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(self.status.success(), "command failed\n{}", self.describe());
        self
    }

    /// Panics unless the command exited with `code`.
    #[track_caller]
    pub fn exit_code(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait_with_timeout(child: &mut Child, limit: Duration, command: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => panic!("waiting for `{command}`: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` did not finish within {limit:?}; killed it");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` with stdin from `input` (or empty), capturing stdout/stderr, killing it after
/// `limit`.
pub fn run_command(mut cmd: Command, input: Option<&[u8]>, limit: Duration) -> Run {
    let command = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    if let Some(input) = input {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(input)
            .unwrap_or_else(|e| panic!("writing stdin of `{command}`: {e}"));
    }
    let out = spawn_reader(child.stdout.take().expect("piped stdout"));
    let err = spawn_reader(child.stderr.take().expect("piped stderr"));
    let status = wait_with_timeout(&mut child, limit, &command);
    Run {
        command,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The binary under test.
pub fn docker_pull_bin() -> &'static str {
    env!("CARGO_BIN_EXE_docker-pull")
}

/// A `docker-pull` command with a clean environment: no proxies, no credentials or cache from
/// the environment, no docker config, containers auth file or certs.d of this machine
/// (`XDG_CONFIG_HOME` is `<home>/xdg-config`, `XDG_RUNTIME_DIR` is unset).
pub fn docker_pull_command<I, S>(args: I, home: &Path) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(docker_pull_bin());
    cmd.args(args);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "DOCKER_PULL_USERNAME",
        "DOCKER_PULL_PASSWORD",
        "DOCKER_PULL_CACHE",
        "DOCKER_PULL_MIRRORS",
        "DOCKER_PULL_DAEMON_JSON",
        "CONTAINERS_REGISTRIES_CONF",
        "DOCKER_PULL_LIMIT_RATE",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
    ] {
        cmd.env_remove(var);
    }
    let docker_config = home.join("docker-config");
    std::fs::create_dir_all(&docker_config).expect("creating an empty docker config dir");
    cmd.env("DOCKER_CONFIG", docker_config)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("xdg-cache"))
        .env("XDG_CONFIG_HOME", home.join("xdg-config"))
        .env("NO_PROXY", "127.0.0.1,localhost,::1");
    cmd
}

/// Runs `docker-pull ARGS` (2 minutes at most).
pub fn docker_pull<I, S>(args: I, home: &Path) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(
        docker_pull_command(args, home),
        None,
        Duration::from_secs(120),
    )
}

/// The docker CLI: `$E2E_DOCKER` or `docker` from `PATH`.
pub fn docker_cli() -> PathBuf {
    std::env::var_os("E2E_DOCKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("docker"))
}

/// Runs `docker ARGS` against `$DOCKER_HOST` (3 minutes at most).
pub fn docker<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(docker_cli());
    cmd.args(args);
    run_command(cmd, None, Duration::from_secs(180))
}
