//! Pushes a small runnable sample image to a registry, for scripts/demo.sh.
//!
//! The image is built in memory with the test support's deterministic builder: one layer holding
//! a static busybox (`/bin/busybox` plus applet links) and `Cmd ["/bin/sh", "-c", "echo hello from
//! docker-pull"]`, for this machine's architecture, with Docker media types (or OCI with `--oci`).
//!
//! ```text
//! cargo run --example push_sample -- 127.0.0.1:5000 demo/busybox:latest [--busybox /bin/busybox]
//!     [--oci] [--user NAME --password SECRET]
//! ```
//!
//! Talks plain HTTP to the registry (meant for a local one); answers Basic and Bearer challenges.

#[allow(dead_code)]
#[path = "../tests/support/image.rs"]
mod image;
#[allow(dead_code)]
#[path = "../tests/support/push.rs"]
mod push;

use std::process::ExitCode;

use image::{Flavor, busybox_image_builder};
use push::Pusher;

const USAGE: &str = "usage: push_sample REGISTRY REPOSITORY[:TAG] [--busybox PATH] [--oci] \
                     [--user NAME --password SECRET]";

struct Args {
    registry: String,
    repository: String,
    tag: String,
    busybox: String,
    flavor: Flavor,
    user: Option<String>,
    password: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut busybox = "/bin/busybox".to_string();
    let mut flavor = Flavor::Docker;
    let mut user = None;
    let mut password = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--busybox" => busybox = value("--busybox")?,
            "--oci" => flavor = Flavor::Oci,
            "--user" => user = Some(value("--user")?),
            "--password" => password = Some(value("--password")?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            _ => positional.push(arg),
        }
    }
    let [registry, reference] = <[String; 2]>::try_from(positional)
        .map_err(|_| "want REGISTRY and REPOSITORY[:TAG]".to_string())?;
    let (repository, tag) = match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (reference.clone(), "latest".to_string()),
    };
    if user.is_some() != password.is_some() {
        return Err("--user and --password go together".to_string());
    }
    Ok(Args {
        registry,
        repository,
        tag,
        busybox,
        flavor,
        user,
        password,
    })
}

/// `(architecture, variant)` of this machine as image configs spell it.
fn host_platform() -> Result<(&'static str, Option<&'static str>), String> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(("amd64", None)),
        "aarch64" => Ok(("arm64", Some("v8"))),
        "arm" => Ok(("arm", Some("v7"))),
        "riscv64" => Ok(("riscv64", None)),
        "s390x" => Ok(("s390x", None)),
        other => Err(format!("no image architecture known for {other}")),
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let busybox = std::fs::read(&args.busybox).map_err(|e| {
        format!(
            "cannot read {} ({e}); install busybox-static or pass --busybox PATH to a static busybox",
            args.busybox
        )
    })?;
    let (arch, variant) = host_platform()?;
    let image = busybox_image_builder(args.flavor, &busybox)
        .platform("linux", arch, variant)
        .label("org.opencontainers.image.title", "docker-pull demo")
        .build();

    let mut pusher = Pusher::new(&args.registry).map_err(|e| format!("{e:#}"))?;
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        pusher = pusher.with_credentials(user, password);
    }
    let digest = pusher
        .push_image(&args.repository, Some(&args.tag), &image)
        .map_err(|e| format!("{e:#}"))?;
    println!(
        "Pushed {}/{}:{} ({}, {} layer, {} bytes of blobs)",
        args.registry,
        args.repository,
        args.tag,
        image.platform_string(),
        image.layers.len(),
        image.blob_bytes()
    );
    println!("  Digest: {digest}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("push_sample: {message}");
            ExitCode::FAILURE
        }
    }
}
