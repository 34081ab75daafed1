//! Pulls from the plain distribution registry, loaded (and run) by the Docker engine.

use crate::env::setup;
use crate::{
    Scratch, assert_loaded, assert_runs, docker_load, engine_platform, field, inspect, number,
};

/// `small` (Docker media types) into a directory: default archive name, the text result,
/// `docker load` restores the name, the container runs.
#[test]
fn small_docker_flavor_loads_and_runs() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let out_dir = scratch.out("archives");
    let reference = env.plain("small");

    let run = scratch
        .pull(&[&reference, "-o", out_dir.to_str().unwrap()])
        .success();

    let name = format!("{reference}:latest");
    let archive_name = format!(
        "{}_small_latest_{}.tar",
        env.registry.replace(':', "_"),
        env.host_platform
            .trim_start_matches("linux/")
            .replace('/', "_")
    );
    let archive = out_dir.join(&archive_name);
    let platform = &env.host_platform;
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("Pulled {name} ({platform})").as_str()),
        "first result line\n{}",
        run.describe()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == format!("Archive: {}", archive.display())),
        "no `Archive: {}` line\n{}",
        archive.display(),
        run.describe()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == format!("Digest: {}", env.fixtures.small.manifest.digest)),
        "no `Digest: {}` line\n{}",
        env.fixtures.small.manifest.digest,
        run.describe()
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("Cache hits: 0/1 layers (0.0%)")),
        "last line should be the cache line for a cold cache\n{}",
        run.describe()
    );
    assert!(
        archive.is_file(),
        "default-named archive {archive_name} missing\n{}",
        run.describe()
    );

    let loaded = docker_load(&archive);
    assert_loaded(&loaded, &name);
    assert_eq!(
        inspect(&name, "{{.Id}}"),
        env.fixtures.small.config.digest,
        "image ID is the config digest"
    );
    assert_runs(&name);
}

/// `small-oci` (OCI media types) with `--json`: every field, then load and run.
#[test]
fn small_oci_flavor_json_loads_and_runs() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("small-oci.tar");
    let reference = env.plain("small-oci");
    let image = &env.fixtures.small_oci;

    let (run, objects) = scratch.pull_json(&[&reference, "-o", archive.to_str().unwrap()], 1);
    let o = &objects[0];
    let name = format!("{reference}:latest");
    assert_eq!(field(o, "image"), reference, "{}", run.describe());
    assert_eq!(field(o, "resolved"), name);
    assert_eq!(field(o, "digest"), image.manifest.digest);
    assert_eq!(field(o, "manifest_digest"), image.manifest.digest);
    assert_eq!(field(o, "image_id"), image.config.digest);
    assert_eq!(field(o, "platform"), env.host_platform);
    assert_eq!(field(o, "format"), "docker");
    assert_eq!(field(o, "output"), archive.to_str().unwrap());
    assert_eq!(number(o, "layers"), 1);
    assert_eq!(number(o, "cache_hits"), 0);
    assert_eq!(number(o, "bytes_from_cache"), 0);
    assert_eq!(
        number(o, "bytes_downloaded"),
        image.blob_bytes(),
        "a cold pull downloads config + layers"
    );
    assert!(o.get("seconds").and_then(|s| s.as_f64()).is_some());

    let loaded = docker_load(&archive);
    assert_loaded(&loaded, &name);
    assert_eq!(inspect(&name, "{{.Id}}"), image.config.digest);
    assert_runs(&name);
}

/// `multi` (OCI index with attestation) for the host platform: the runnable image.
#[test]
fn multi_default_platform_is_the_host_and_runs() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("multi.tar");
    let reference = env.plain("multi");
    let index = &env.fixtures.multi;
    let chosen = index
        .image_for(&env.host_platform)
        .expect("fixture has the host platform");

    let (run, objects) = scratch.pull_json(&[&reference, "-o", archive.to_str().unwrap()], 1);
    let o = &objects[0];
    assert_eq!(
        field(o, "digest"),
        index.index.digest,
        "digest is the index's\n{}",
        run.describe()
    );
    assert_eq!(field(o, "manifest_digest"), chosen.manifest.digest);
    assert_eq!(field(o, "image_id"), chosen.config.digest);
    assert_eq!(field(o, "platform"), env.host_platform);

    let name = format!("{reference}:latest");
    assert_loaded(&docker_load(&archive), &name);
    assert_eq!(engine_platform(&name), env.host_platform);
    assert_runs(&name);
}

/// Pulls `repo` for `args` (a platform option) and checks the loaded image's platform.
fn pull_foreign(repo: &str, platform_args: &[&str], expect_platform: &str, docker_flavor: bool) {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("foreign.tar");
    let reference = env.plain(repo);
    let index = if docker_flavor {
        &env.fixtures.multi_docker
    } else {
        &env.fixtures.multi
    };
    let chosen = index
        .image_for(expect_platform)
        .expect("fixture has the platform");

    let mut args = vec![reference.as_str(), "-o", archive.to_str().unwrap()];
    args.extend_from_slice(platform_args);
    let (run, objects) = scratch.pull_json(&args, 1);
    let o = &objects[0];
    assert_eq!(field(o, "platform"), expect_platform, "{}", run.describe());
    assert_eq!(field(o, "digest"), index.index.digest);
    assert_eq!(field(o, "manifest_digest"), chosen.manifest.digest);
    assert_eq!(field(o, "image_id"), chosen.config.digest);

    let name = format!("{reference}:latest");
    assert_loaded(&docker_load(&archive), &name);
    assert_eq!(engine_platform(&name), expect_platform);
    assert_eq!(inspect(&name, "{{.Id}}"), chosen.config.digest);
}

#[test]
fn multi_platform_linux_arm64() {
    pull_foreign(
        "multi",
        &["--platform", "linux/arm64"],
        "linux/arm64/v8",
        false,
    );
}

#[test]
fn multi_arch_arm_is_arm_v7() {
    pull_foreign("multi", &["-a", "arm"], "linux/arm/v7", false);
}

#[test]
fn multi_docker_platform_arm64() {
    pull_foreign(
        "multi-docker",
        &["--platform", "linux/arm64"],
        "linux/arm64/v8",
        true,
    );
}

/// `multi-docker` (Docker manifest list) for the host platform: runs.
#[test]
fn multi_docker_default_platform_runs() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("multi-docker.tar");
    let reference = env.plain("multi-docker");
    let index = &env.fixtures.multi_docker;
    let chosen = index
        .image_for(&env.host_platform)
        .expect("fixture has the host platform");

    let (run, objects) = scratch.pull_json(&[&reference, "-o", archive.to_str().unwrap()], 1);
    let o = &objects[0];
    assert_eq!(field(o, "digest"), index.index.digest, "{}", run.describe());
    assert_eq!(field(o, "manifest_digest"), chosen.manifest.digest);
    assert_eq!(field(o, "platform"), env.host_platform);

    let name = format!("{reference}:latest");
    assert_loaded(&docker_load(&archive), &name);
    assert_runs(&name);
}

/// Two images in one `-o bundle.tar`: one archive, both names load, both run.
#[test]
fn bundle_of_two_images_loads_both_names() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let bundle = scratch.out("bundle.tar");
    let small = env.plain("small");
    let multi = env.plain("multi-docker");

    let (run, objects) = scratch.pull_json(&[&small, &multi, "-o", bundle.to_str().unwrap()], 2);
    for o in &objects {
        assert_eq!(
            field(o, "output"),
            bundle.to_str().unwrap(),
            "both images go to the bundle\n{}",
            run.describe()
        );
    }
    let tars: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "tar"))
        .map(|e| e.file_name())
        .collect();
    assert_eq!(tars, vec!["bundle.tar"], "exactly one archive is written");

    let loaded = docker_load(&bundle);
    let small_name = format!("{small}:latest");
    let multi_name = format!("{multi}:latest");
    assert_loaded(&loaded, &small_name);
    assert_loaded(&loaded, &multi_name);
    assert_runs(&small_name);
    assert_runs(&multi_name);
}

/// A second pull with the same cache downloads no blob, and its archive loads (and is the same
/// bytes as the first).
#[test]
fn repeated_pull_uses_the_cache() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let first = scratch.out("first.tar");
    let second = scratch.out("second.tar");
    let reference = env.plain("multi");
    let chosen = env
        .fixtures
        .multi
        .image_for(&env.host_platform)
        .expect("fixture has the host platform");

    let (_, cold) = scratch.pull_json(&[&reference, "-o", first.to_str().unwrap()], 1);
    assert_eq!(number(&cold[0], "cache_hits"), 0, "{}", cold[0]);
    assert!(number(&cold[0], "bytes_downloaded") > 0, "{}", cold[0]);

    let (run, warm) = scratch.pull_json(&[&reference, "-o", second.to_str().unwrap()], 1);
    let o = &warm[0];
    let layers = number(o, "layers");
    assert_eq!(layers, chosen.layers.len() as u64, "{}", run.describe());
    assert_eq!(
        number(o, "cache_hits"),
        layers,
        "every layer from the cache: {o}"
    );
    assert_eq!(number(o, "bytes_downloaded"), 0, "no blob downloaded: {o}");
    assert_eq!(
        number(o, "bytes_from_cache"),
        chosen.layer_bytes(),
        "layer bytes from cache: {o}"
    );

    let a = std::fs::read(&first).unwrap();
    let b = std::fs::read(&second).unwrap();
    assert!(a == b, "the same image gives the same archive bytes");

    let name = format!("{reference}:latest");
    assert_loaded(&docker_load(&second), &name);
    assert_runs(&name);
}

/// `name@sha256:...`: the digest-only archive loads untagged with the config digest as ID;
/// `name:tag@sha256:...` keeps the tag.
#[test]
fn pull_by_digest() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let image = &env.fixtures.small;
    let by_digest = format!("{}@{}", env.plain("small"), image.manifest.digest);
    let archive = scratch.out("by-digest.tar");

    let (run, objects) = scratch.pull_json(&[&by_digest, "-o", archive.to_str().unwrap()], 1);
    let o = &objects[0];
    assert_eq!(
        field(o, "digest"),
        image.manifest.digest,
        "{}",
        run.describe()
    );
    assert_eq!(field(o, "image_id"), image.config.digest);

    let loaded = docker_load(&archive);
    assert!(
        loaded
            .lines()
            .any(|l| l.trim() == format!("Loaded image ID: {}", image.config.digest)),
        "a digest-only reference loads untagged with its image ID; docker load said:\n{loaded}"
    );
    assert_eq!(
        inspect(&image.config.digest, "{{.Id}}"),
        field(o, "image_id")
    );
    assert_runs(&image.config.digest);

    // With a tag the registry does not have: pulled by digest, named by the tag.
    env.reset_engine();
    let tagged = format!("{}:pinned@{}", env.plain("small"), image.manifest.digest);
    let archive = scratch.out("tag-and-digest.tar");
    let (run, objects) = scratch.pull_json(&[&tagged, "-o", archive.to_str().unwrap()], 1);
    assert_eq!(
        field(&objects[0], "digest"),
        image.manifest.digest,
        "{}",
        run.describe()
    );
    let name = format!("{}:pinned", env.plain("small"));
    assert_loaded(&docker_load(&archive), &name);
    assert_eq!(inspect(&name, "{{.Id}}"), image.config.digest);
}

/// `multi@<index digest>` picks the host's image out of the index.
#[test]
fn pull_index_by_digest_picks_host_platform() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let index = &env.fixtures.multi;
    let chosen = index
        .image_for(&env.host_platform)
        .expect("fixture has the host platform");
    let reference = format!("{}@{}", env.plain("multi"), index.index.digest);
    let archive = scratch.out("index-digest.tar");

    let (run, objects) = scratch.pull_json(&[&reference, "-o", archive.to_str().unwrap()], 1);
    let o = &objects[0];
    assert_eq!(field(o, "digest"), index.index.digest, "{}", run.describe());
    assert_eq!(field(o, "manifest_digest"), chosen.manifest.digest);
    docker_load(&archive);
    assert_eq!(
        inspect(&chosen.config.digest, "{{.Id}}"),
        chosen.config.digest
    );
    assert_runs(&chosen.config.digest);
}

/// `-i FILE` with two references (comments and blank lines ignored) into a directory: one
/// default-named archive each, both load and run.
#[test]
fn images_file_into_directory_one_archive_each() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let list = scratch.out("images.txt");
    let small = env.plain("small");
    let multi = env.plain("multi");
    std::fs::write(
        &list,
        format!("# fixtures\n{small}\n\n   \n{multi}:latest\n# done\n"),
    )
    .unwrap();
    let out_dir = scratch.out("dir");

    let (run, objects) = scratch.pull_json(
        &[
            "-i",
            list.to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
        ],
        2,
    );
    let registry = env.registry.replace(':', "_");
    let host = env
        .host_platform
        .trim_start_matches("linux/")
        .replace('/', "_");
    let mut want = vec![
        format!("{registry}_small_latest_{host}.tar"),
        format!("{registry}_multi_latest_{host}.tar"),
    ];
    want.sort();
    let mut got: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", out_dir.display(), run.describe()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        want,
        "one default-named archive per image\n{}",
        run.describe()
    );
    for o in &objects {
        let output = field(o, "output");
        assert!(
            std::path::Path::new(output).is_file(),
            "--json output {output} exists"
        );
    }

    for file in &got {
        docker_load(&out_dir.join(file));
    }
    assert_runs(&format!("{small}:latest"));
    assert_runs(&format!("{multi}:latest"));
}

/// `--tag NAME:TAG` names the image in the archive; `docker load` restores that name.
#[test]
fn tag_option_renames_the_loaded_image() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("renamed.tar");
    let new_name = "docker-pull-e2e/renamed:1.0";

    let run = scratch
        .pull(&[
            "-q",
            &env.plain("small-oci"),
            "--tag",
            new_name,
            "-o",
            archive.to_str().unwrap(),
        ])
        .success();
    assert!(
        run.stderr.trim().is_empty(),
        "-q: no progress on stderr\n{}",
        run.describe()
    );
    assert!(
        run.stdout.starts_with("Pulled "),
        "-q still prints the result\n{}",
        run.describe()
    );
    let loaded = docker_load(&archive);
    assert_loaded(&loaded, new_name);
    assert_eq!(
        inspect(new_name, "{{.Id}}"),
        env.fixtures.small_oci.config.digest
    );
    assert_runs(new_name);
    crate::run::docker(["rmi", new_name]).success();
}
