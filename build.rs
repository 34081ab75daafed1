//! Records the commit and target the binary was built from, for `--version`.

use std::process::Command;

fn main() {
    let commit = std::env::var("DOCKER_PULL_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=DOCKER_PULL_COMMIT={commit}");
    println!("cargo:rustc-env=DOCKER_PULL_TARGET={target}");
    println!("cargo:rerun-if-env-changed=DOCKER_PULL_COMMIT");
    // A new commit changes HEAD or the branch it points at.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
