//! The commands besides pulling (`cache`, `completions`, the man page), `--help` and
//! `--version`.

use std::time::{Duration, SystemTime};

use crate::common::{Work, cache_blobs};
use crate::support::image::{Flavor, random_image};
use crate::support::registry::FakeRegistry;

/// Every pull flag of the command-line contract, as `--help` must show it.
const CONTRACT_FLAGS: &[&str] = &[
    "--platform",
    "-a, --arch",
    "-o, --output",
    "-f, --format",
    "-j, --max-concurrent-downloads",
    "--workers",
    "-u, --username",
    "-p, --password",
    "--password-stdin",
    "-r, --registry",
    "--mirror",
    "--cache-dir",
    "--no-cache",
    "--insecure",
    "--plain-http",
    "--ca-cert",
    "--proxy",
    "--tag",
    "-i, --images-file",
    "--timeout",
    "--retries",
    "--log-file",
    "--debug",
    "-q, --quiet",
    "--json",
    "-h, --help",
    "-V, --version",
];

#[test]
fn help_documents_every_flag_of_the_contract() {
    let work = Work::new();
    let run = work.run(&["--help"]);
    run.success();
    for flag in CONTRACT_FLAGS {
        assert!(
            run.stdout.contains(flag),
            "--help lacks {flag}:\n{}",
            run.stdout
        );
    }
    for format in ["docker", "legacy", "oci", "oci-dir"] {
        assert!(run.stdout.contains(format), "--help lacks format {format}");
    }
    for command in ["cache", "completions"] {
        assert!(run.stdout.contains(command), "--help lacks {command}");
    }
}

#[test]
fn version_names_commit_and_target() {
    let work = Work::new();
    let run = work.run(&["--version"]);
    run.success();
    let line = run.stdout.trim();
    assert!(
        line.starts_with(&format!(
            "docker-pull {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
    let inner = line
        .split_once("(commit ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .expect("(commit C, TARGET)");
    let (commit, target) = inner.split_once(", ").expect("commit and target");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    assert!(
        target.contains(std::env::consts::ARCH) && target.contains(std::env::consts::OS),
        "{target}"
    );
}

#[test]
fn completions_for_every_shell() {
    let work = Work::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef docker-pull"),
        ("fish", "complete -c docker-pull"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let run = work.run(&["completions", shell]);
        run.success();
        assert!(run.stdout.contains(marker), "{shell}: {}", run.stdout);
        for flag in ["mirror", "platform", "password-stdin"] {
            assert!(run.stdout.contains(flag), "{shell} completions lack {flag}");
        }
    }
    work.run(&["completions", "tcsh"]).expect_code(2);
}

#[test]
fn man_page_is_roff_with_every_flag() {
    let work = Work::new();
    let run = work.run(&["man"]);
    run.success();
    assert!(run.stdout.contains(".TH docker-pull 1"), "{}", run.stdout);
    for flag in [
        "mirror",
        "platform",
        "ca\\-cert",
        "password\\-stdin",
        "format",
    ] {
        assert!(run.stdout.contains(flag), "man page lacks {flag}");
    }
}

fn warm_cache(work: &Work) -> (FakeRegistry, usize) {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 3, 32 * 1024, 7);
    registry.push_image("cached", "v1", &image);
    work.pull(&["-q", &registry.reference("cached", "v1")])
        .success();
    let blobs = cache_blobs(&work.cache()).len();
    assert_eq!(blobs, 4, "config and three layers");
    (registry, blobs)
}

fn cache_cmd(work: &Work, args: &[&str]) -> crate::common::Run {
    let cache = work.cache();
    let mut all = vec!["cache"];
    all.extend_from_slice(args);
    all.extend(["--cache-dir", cache.to_str().unwrap()]);
    work.run(&all)
}

#[test]
fn cache_stats_and_ls() {
    let work = Work::new();
    let (_registry, blobs) = warm_cache(&work);
    let run = cache_cmd(&work, &["stats", "--json"]);
    run.success();
    let v = run.json();
    assert_eq!(v["blobs"], blobs as u64, "{v}");
    let total: u64 = cache_blobs(&work.cache())
        .iter()
        .map(|hex| {
            std::fs::metadata(work.cache().join("blobs/sha256").join(hex))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(v["bytes"], total, "{v}");
    assert_eq!(v["partial_downloads"], 0, "{v}");

    let run = cache_cmd(&work, &["ls", "--json"]);
    run.success();
    let listed = run.json_lines();
    assert_eq!(listed.len(), blobs);
    for entry in &listed {
        let hex = entry["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        assert!(
            cache_blobs(&work.cache()).contains(&hex.to_string()),
            "{entry}"
        );
    }
    let human = cache_cmd(&work, &["stats"]);
    human.success();
    assert!(
        human.stdout.contains(&format!("Blobs: {blobs} ")),
        "{}",
        human.stdout
    );
}

/// Makes a stored blob look used `age` ago: its mtime and its use record's.
fn age_blob(work: &Work, hex: &str, age: Duration) {
    let record = work.cache().join("meta").join(format!("{hex}.json"));
    for path in [work.cache().join("blobs/sha256").join(hex), record] {
        let f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }
}

#[test]
fn cache_prune_by_age_and_size_and_clear() {
    let work = Work::new();
    let (registry, blobs) = warm_cache(&work);
    let all = cache_blobs(&work.cache());
    let day = Duration::from_secs(86_400);
    age_blob(&work, &all[0], day * 30);
    let run = cache_cmd(&work, &["prune", "--older-than", "7d"]);
    run.success();
    assert!(run.stdout.contains("Removed 1 blobs"), "{}", run.stdout);
    assert_eq!(cache_blobs(&work.cache()).len(), blobs - 1);
    assert!(!cache_blobs(&work.cache()).contains(&all[0]));

    let run = cache_cmd(&work, &["prune", "--max-size", "0"]);
    run.success();
    assert!(cache_blobs(&work.cache()).is_empty());

    // The next pull downloads again and works.
    registry.reset_log();
    work.pull(&["-q", &registry.reference("cached", "v1")])
        .success();
    assert_eq!(registry.total_blob_gets(), blobs);
    let run = cache_cmd(&work, &["clear"]);
    run.success();
    assert!(cache_blobs(&work.cache()).is_empty());

    cache_cmd(&work, &["prune"]).expect_code(2);
    cache_cmd(&work, &["prune", "--older-than", "7y"]).expect_code(2);
}

#[test]
fn cache_max_prunes_after_a_pull_keeping_what_it_used() {
    let work = Work::new();
    let registry = FakeRegistry::anonymous();
    let old = random_image(Flavor::Docker, 2, 64 * 1024, 11);
    let new = random_image(Flavor::Docker, 2, 64 * 1024, 12);
    registry.push_image("old", "v1", &old);
    registry.push_image("new", "v1", &new);
    work.pull(&["-q", &registry.reference("old", "v1")])
        .success();
    for hex in cache_blobs(&work.cache()) {
        age_blob(&work, &hex, Duration::from_secs(3600));
    }
    let run = work.pull_env(
        &["-q", &registry.reference("new", "v1")],
        &[("DOCKER_PULL_CACHE_MAX", "200K")],
        &[],
        None,
    );
    run.success();
    let left = cache_blobs(&work.cache());
    let total: u64 = left
        .iter()
        .map(|hex| {
            std::fs::metadata(work.cache().join("blobs/sha256").join(hex))
                .unwrap()
                .len()
        })
        .sum();
    assert!(total <= 200 * 1024, "{total} bytes left");
    for layer in &new.layers {
        assert!(
            left.iter().any(|h| h == layer.hex()),
            "the layers just used stay: {left:?}"
        );
    }
    work.pull_env(
        &["-q", &registry.reference("new", "v1")],
        &[("DOCKER_PULL_CACHE_MAX", "lots")],
        &[],
        None,
    )
    .expect_code(2);
}

#[test]
fn prune_keeps_what_a_running_pull_uses() {
    use crate::support::image::ImageBuilder;
    use crate::support::registry::Throttle;
    let work = Work::new();
    let registry = FakeRegistry::anonymous();
    let base = random_image(Flavor::Docker, 1, 32 * 1024, 21);
    registry.push_image("base", "v1", &base);
    work.pull(&["-q", &registry.reference("base", "v1")])
        .success();
    // An image on the same base plus a layer that arrives slowly.
    let slow = random_image(Flavor::Docker, 1, 200 * 1024, 22);
    let app = ImageBuilder::new(Flavor::Docker)
        .raw_layer(base.layers[0].clone(), base.diff_ids[0].clone())
        .raw_layer(slow.layers[0].clone(), slow.diff_ids[0].clone())
        .build();
    registry.push_image("app", "v1", &app);
    registry.throttle_blobs(Some(Throttle {
        chunk: 16 * 1024,
        delay: Duration::from_millis(150),
    }));
    let running = work.spawn_pull(&["-q", &registry.reference("app", "v1")]);
    // Wait until the slow layer is being fetched: the base layer is then in use.
    let started = std::time::Instant::now();
    while registry.blob_gets(&app.layers[1].digest) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the slow layer was never asked for"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = cache_cmd(&work, &["prune", "--max-size", "0"]);
    run.success();
    assert!(
        run.stdout.contains("Removed 1 blobs")
            && run
                .stdout
                .contains("Kept 2 blobs that a running pull is using"),
        "the base's config goes; the shared layer and the new config stay: {}",
        run.stdout
    );
    assert!(
        cache_blobs(&work.cache())
            .iter()
            .any(|h| h == base.layers[0].hex()),
        "the shared base layer stays while the pull runs"
    );
    running.wait().success();
}
