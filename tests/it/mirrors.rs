//! Mirrors (`--mirror [REGISTRY=]HOST`, `DOCKER_PULL_MIRRORS`). Docker Hub (and ghcr.io, quay.io)
//! cannot be reached from the tests, so fake registries play their mirrors: for Docker Hub they
//! serve the image at `library/NAME` (or `PREFIX/library/NAME`). The origin, tried last, is
//! unreachable here, so every successful pull below was served by a mirror.

use crate::common::{
    Ann, Archive, Expected, Run, Work, assert_docker_archive, auths_with_auth, closed_port,
};
use crate::support::image::{Flavor, Image, small_image};
use crate::support::registry::{Auth, Config, FakeRegistry, TokenAuth};

/// A name Docker Hub does not have, in case the machine can reach it after all.
const NAME: &str = "docker-pull-mirror-test";
const TAG: &str = "v1";
const USER: &str = "alice";
const PASS: &str = "s3cr3t-Pa55w0rd";

fn hub_image() -> Image {
    small_image(Flavor::Docker, "served by a mirror")
}

/// A mirror serving `image` as `[prefix/]library/NAME:TAG`.
fn mirror(config: Config, prefix: Option<&str>, image: &Image) -> FakeRegistry {
    let registry = FakeRegistry::start(config);
    let repo = match prefix {
        Some(prefix) => format!("{prefix}/library/{NAME}"),
        None => format!("library/{NAME}"),
    };
    registry.push_image(&repo, TAG, image);
    registry
}

fn public_mirror(image: &Image) -> FakeRegistry {
    mirror(Config::default(), None, image)
}

/// `--json -o <work>/hub.tar --retries 1 <args> <image>` with `env` (no `-q`: the mirror
/// warnings are looked for).
fn pull_hub(work: &Work, args: &[&str], image: &str, env: &[(&str, &str)]) -> Run {
    let out = work.path("hub.tar");
    let cache = work.cache();
    let mut all = vec![
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
        "--json",
        "--retries",
        "1",
    ];
    all.extend_from_slice(args);
    all.push(image);
    work.run_with(&all, env, None)
}

fn hub_ref() -> String {
    format!("docker.io/library/{NAME}:{TAG}")
}

/// The pull succeeded, the archive holds `image` named `NAME:TAG`, and `source` is `source`.
#[track_caller]
fn assert_served_by(run: &Run, work: &Work, image: &Image, source: &str) {
    run.success();
    let report = run.json();
    assert_eq!(report["source"], source, "--json source: {report}");
    let archive = Archive::open(&work.path("hub.tar"));
    assert_docker_archive(
        &archive,
        &[Expected {
            image,
            full_name: Ann::Any,
            ref_name: Ann::Is(TAG.to_string()),
            repo_tags: vec![format!("{NAME}:{TAG}")],
            optional_blobs: Vec::new(),
        }],
    );
}

/// stderr has `warning: mirror <mirror> failed for ...; trying <next>`.
#[track_caller]
fn assert_mirror_warning(run: &Run, mirror: &str, next: &str) {
    assert!(
        run.stderr.lines().any(|l| {
            l.contains(&format!("warning: mirror {mirror} failed for"))
                && l.contains(&format!("; trying {next}"))
        }),
        "expected a warning that mirror {mirror} failed, trying {next}:\n{}",
        run.stderr
    );
}

#[test]
fn first_mirror_down_second_serves() {
    let image = hub_image();
    let good = public_mirror(&image);
    let down = format!("127.0.0.1:{}", closed_port());
    let work = Work::new();

    let run = pull_hub(
        &work,
        &["--mirror", &down, "--mirror", &good.addr()],
        &hub_ref(),
        &[],
    );
    assert_served_by(&run, &work, &image, &good.addr());
    assert_mirror_warning(&run, &down, &good.addr());
}

#[test]
fn a_mirror_without_the_image_is_skipped() {
    let image = hub_image();
    let empty = FakeRegistry::anonymous();
    let good = public_mirror(&image);
    let work = Work::new();

    let run = pull_hub(
        &work,
        &["--mirror", &empty.addr(), "--mirror", &good.addr()],
        &hub_ref(),
        &[],
    );
    assert_served_by(&run, &work, &image, &good.addr());
    assert!(
        empty
            .manifest_requests()
            .iter()
            .any(|r| r.path == format!("/v2/library/{NAME}/manifests/{TAG}") && r.status == 404),
        "the first mirror was not asked: {:#?}",
        empty.requests()
    );
    assert_mirror_warning(&run, &empty.addr(), &good.addr());
}

#[test]
fn mirrors_from_the_environment_comma_separated() {
    let image = hub_image();
    let empty = FakeRegistry::anonymous();
    let good = public_mirror(&image);
    let work = Work::new();
    let mirrors = format!("{},{}", empty.addr(), good.addr());

    // The short form of the name is a Docker Hub image too.
    let run = pull_hub(
        &work,
        &[],
        &format!("{NAME}:{TAG}"),
        &[("DOCKER_PULL_MIRRORS", &mirrors)],
    );
    assert_served_by(&run, &work, &image, &good.addr());
    assert!(
        !empty.requests().is_empty(),
        "the first mirror in DOCKER_PULL_MIRRORS was not tried"
    );
}

#[test]
fn mirrors_from_the_environment_space_separated() {
    let image = hub_image();
    let down = format!("127.0.0.1:{}", closed_port());
    let good = public_mirror(&image);
    let work = Work::new();
    let mirrors = format!("{down} {}", good.addr());

    let run = pull_hub(&work, &[], &hub_ref(), &[("DOCKER_PULL_MIRRORS", &mirrors)]);
    assert_served_by(&run, &work, &image, &good.addr());
    assert_mirror_warning(&run, &down, &good.addr());
}

#[test]
fn the_mirror_flag_overrides_the_environment() {
    let image = hub_image();
    let from_env = public_mirror(&image);
    let from_flag = public_mirror(&image);
    let work = Work::new();

    let run = pull_hub(
        &work,
        &["--mirror", &from_flag.addr()],
        &hub_ref(),
        &[("DOCKER_PULL_MIRRORS", &from_env.addr())],
    );
    assert_served_by(&run, &work, &image, &from_flag.addr());
    assert!(
        from_env.requests().is_empty(),
        "DOCKER_PULL_MIRRORS was used although --mirror was given: {:#?}",
        from_env.requests()
    );
}

#[test]
fn a_mirror_with_a_path_prefix() {
    let image = hub_image();
    let good = mirror(Config::default(), Some("proxy"), &image);
    let work = Work::new();
    let spec = format!("{}/proxy", good.addr());

    let run = pull_hub(&work, &["--mirror", &spec], &hub_ref(), &[]);
    assert_served_by(&run, &work, &image, &spec);
    let manifests = good.manifest_requests();
    assert!(!manifests.is_empty());
    for r in &manifests {
        assert!(
            r.path
                .starts_with(&format!("/v2/proxy/library/{NAME}/manifests/")),
            "request outside the prefix: {}",
            r.path
        );
    }
}

#[test]
fn an_http_scheme_mirror() {
    let image = hub_image();
    let good = public_mirror(&image);
    let work = Work::new();

    let run = pull_hub(
        &work,
        &["--mirror", &format!("http://{}", good.addr())],
        &hub_ref(),
        &[],
    );
    assert_served_by(&run, &work, &image, &good.addr());
}

#[test]
fn an_https_scheme_mirror_gets_no_plain_http_fallback() {
    // The fake speaks plain HTTP only: with https:// it must fail (TLS) and be skipped.
    let image = hub_image();
    let plain = public_mirror(&image);
    let good = public_mirror(&image);
    let work = Work::new();

    let run = pull_hub(
        &work,
        &[
            "--mirror",
            &format!("https://{}", plain.addr()),
            "--mirror",
            &good.addr(),
        ],
        &hub_ref(),
        &[],
    );
    assert_served_by(&run, &work, &image, &good.addr());
    assert!(
        plain.requests().is_empty(),
        "an https:// mirror was spoken to in plain HTTP: {:#?}",
        plain.requests()
    );
}

#[test]
fn mirrors_are_only_for_docker_hub_images() {
    let image = small_image(Flavor::Docker, "not from hub");
    let registry = FakeRegistry::anonymous();
    registry.push_image("team/app", TAG, &image);
    let mirror = public_mirror(&image);
    let work = Work::new();

    let run = pull_hub(
        &work,
        &["--mirror", &mirror.addr()],
        &registry.reference("team/app", TAG),
        &[],
    );
    run.success();
    assert_eq!(run.json()["source"], registry.addr(), "{}", run.stdout);
    assert!(
        mirror.requests().is_empty(),
        "a mirror was asked for a non-Hub image: {:#?}",
        mirror.requests()
    );
}

#[test]
fn explicit_credentials_are_not_sent_to_a_mirror() {
    let image = hub_image();
    let good = mirror(Config::with_auth(Auth::bearer_anonymous()), None, &image);
    let work = Work::new();

    let run = pull_hub(
        &work,
        &["-u", USER, "-p", PASS, "--mirror", &good.addr()],
        &hub_ref(),
        &[],
    );
    assert_served_by(&run, &work, &image, &good.addr());
    run.assert_not_leaked(PASS);
    for r in good.requests() {
        assert_ne!(
            r.auth_scheme.as_deref(),
            Some("Basic"),
            "-u/-p credentials reached the mirror: {} {}",
            r.method,
            r.path
        );
    }
    let log = good.token_log();
    assert!(!log.is_empty(), "the mirror issued no token");
    assert!(
        log.iter().all(|r| r.auth == TokenAuth::Anonymous),
        "-u/-p credentials reached the mirror's token endpoint: {log:#?}"
    );
}

#[test]
fn a_mirror_gets_config_credentials_for_its_host() {
    let image = hub_image();
    let good = mirror(Config::with_auth(Auth::bearer(USER, PASS)), None, &image);
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&good.addr(), USER, PASS),
    );

    let run = pull_hub(&work, &["--mirror", &good.addr()], &hub_ref(), &[]);
    assert_served_by(&run, &work, &image, &good.addr());
    assert!(
        good.token_log().iter().any(|r| r.ok()
            && r.auth
                == TokenAuth::Basic {
                    user: USER.to_string(),
                    pass: PASS.to_string()
                }),
        "{:#?}",
        good.token_log()
    );
}

#[test]
fn a_bad_mirror_is_a_usage_error() {
    let work = Work::new();
    for bad in [
        "ftp://mirror.example:5000",
        "mirror example",
        "mirror.example:port",
        "",
    ] {
        let run = pull_hub(&work, &["--mirror", bad], &hub_ref(), &[]);
        run.expect_code(2);
        assert!(
            run.stderr.to_lowercase().contains("mirror"),
            "the usage error for {bad:?} should mention the mirror: {}",
            run.stderr
        );
    }
    let run = pull_hub(
        &work,
        &[],
        &hub_ref(),
        &[("DOCKER_PULL_MIRRORS", "ftp://mirror.example:5000")],
    );
    run.expect_code(2);
}

#[test]
fn when_every_mirror_fails_the_pull_fails() {
    let down = format!("127.0.0.1:{}", closed_port());
    let empty = FakeRegistry::anonymous();
    let work = Work::new().with_timeout(std::time::Duration::from_secs(60));

    let run = pull_hub(
        &work,
        &[
            "--timeout",
            "3",
            "--mirror",
            &down,
            "--mirror",
            &empty.addr(),
        ],
        &hub_ref(),
        &[],
    );
    // The origin, tried last, is unreachable from the tests (or lacks this name).
    run.expect_code(1);
    assert_mirror_warning(&run, &down, &empty.addr());
    assert_mirror_warning(&run, &empty.addr(), "registry-1.docker.io");
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        !last.starts_with("warning:"),
        "the pull failed without an error message: {}",
        run.stderr
    );
    assert!(!work.path("hub.tar").exists(), "no archive on failure");
}

// --- mirrors of other registries (`REGISTRY=HOST`) ---------------------------------------------

/// Pulls `reference` with `args` and `env` and checks it came from the mirror `source` (the
/// origin, a registry this machine cannot reach, is never needed).
#[track_caller]
fn assert_pulled_through(
    source: &str,
    args: &[&str],
    env: &[(&str, &str)],
    reference: &str,
    image: &Image,
) {
    let work = Work::new();
    let run = pull_hub(&work, args, reference, env);
    run.success();
    assert_eq!(run.json()["source"], source, "--json source");
    assert_docker_archive(
        &Archive::open(&work.path("hub.tar")),
        &[Expected {
            image,
            full_name: Ann::Any,
            ref_name: Ann::Is(TAG.to_string()),
            repo_tags: vec![reference.to_string()],
            optional_blobs: Vec::new(),
        }],
    );
}

#[test]
fn a_mirror_for_another_registry_serves_its_images() {
    let image = hub_image();
    let mirror = FakeRegistry::anonymous();
    mirror.push_image("owner/app", TAG, &image);
    let flag = format!("ghcr.io=http://{}", mirror.addr());
    let reference = format!("ghcr.io/owner/app:{TAG}");
    assert_pulled_through(
        &mirror.addr(),
        &["--mirror", &flag],
        &[],
        &reference,
        &image,
    );
    assert_pulled_through(
        &mirror.addr(),
        &[],
        &[("DOCKER_PULL_MIRRORS", &flag)],
        &reference,
        &image,
    );
}

#[test]
fn a_prefix_style_mirror_serves_a_registry_under_its_name() {
    let image = hub_image();
    let mirror = FakeRegistry::anonymous();
    mirror.push_image("quay.io/org/app", TAG, &image);
    let flag = format!("quay.io=http://{}/quay.io", mirror.addr());
    let reference = format!("quay.io/org/app:{TAG}");
    let source = format!("{}/quay.io", mirror.addr());
    assert_pulled_through(&source, &["--mirror", &flag], &[], &reference, &image);
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/v2/quay.io/org/app/manifests/")),
        "the mirror was asked for /v2/quay.io/org/app/...: {:#?}",
        mirror.requests()
    );
}

#[test]
fn a_mirror_for_one_registry_is_not_used_for_another() {
    let image = hub_image();
    let mirror = FakeRegistry::anonymous();
    mirror.push_image("owner/app", TAG, &image);
    let origin = FakeRegistry::anonymous();
    origin.push_image("owner/app", TAG, &image);
    let work = Work::new();
    let flag = format!("ghcr.io=http://{}", mirror.addr());
    let reference = format!("{}/owner/app:{TAG}", origin.addr());
    let run = pull_hub(&work, &["--mirror", &flag], &reference, &[]);
    run.success();
    assert_eq!(run.json()["source"], origin.addr());
    assert!(mirror.requests().is_empty(), "{:#?}", mirror.requests());
}

// --- registries.conf and daemon.json ------------------------------------------------------------

/// Writes `text` to `<work>/<name>` and returns its path as text.
fn settings_file(work: &Work, name: &str, text: &str) -> String {
    let path = work.path(name);
    work.write_file(&path, text);
    path.to_str().expect("utf-8").to_string()
}

#[test]
fn registries_conf_mirrors_serve_a_registry_this_machine_cannot_reach() {
    let image = hub_image();
    let mirror = FakeRegistry::anonymous();
    mirror.push_image("ghcr-proxy/owner/app", TAG, &image);
    let work = Work::new();
    let conf = settings_file(
        &work,
        "registries.conf",
        &format!(
            "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nprefix = \"ghcr.io\"\nlocation = \"ghcr.io\"\n\n[[registry.mirror]]\nlocation = \"{}/ghcr-proxy\"\n",
            mirror.addr()
        ),
    );
    let reference = format!("ghcr.io/owner/app:{TAG}");
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.as_str())];
    let run = pull_hub(&work, &["--debug"], &reference, &env);
    run.success();
    assert_eq!(
        run.json()["source"],
        format!("{}/ghcr-proxy", mirror.addr())
    );
    assert!(
        run.stderr.contains(&conf),
        "--debug names the file the mirror came from:\n{}",
        run.stderr
    );
    assert!(
        mirror
            .manifest_requests()
            .iter()
            .any(|r| r.path == format!("/v2/ghcr-proxy/owner/app/manifests/{TAG}")),
        "{:#?}",
        mirror.requests()
    );
}

#[test]
fn registries_conf_location_moves_the_registry() {
    let image = hub_image();
    let real = FakeRegistry::anonymous();
    real.push_image("real/team/app", TAG, &image);
    let work = Work::new();
    let conf = settings_file(
        &work,
        "registries.conf",
        &format!(
            "[[registry]]\nprefix = \"registry.invalid/team\"\nlocation = \"{}/real/team\"\n",
            real.addr()
        ),
    );
    let run = pull_hub(
        &work,
        &[],
        &format!("registry.invalid/team/app:{TAG}"),
        &[("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    run.success();
    assert_eq!(run.json()["source"], format!("{}/real/team", real.addr()));
    let archive = Archive::open(&work.path("hub.tar"));
    assert_docker_archive(
        &archive,
        &[Expected {
            image: &image,
            full_name: Ann::Any,
            ref_name: Ann::Is(TAG.to_string()),
            repo_tags: vec![format!("registry.invalid/team/app:{TAG}")],
            optional_blobs: Vec::new(),
        }],
    );
}

#[test]
fn a_blocked_registry_is_refused_naming_the_file() {
    let image = hub_image();
    let mirror = FakeRegistry::anonymous();
    mirror.push_image("owner/app", TAG, &image);
    let work = Work::new();
    let conf = settings_file(
        &work,
        "blocked.conf",
        "[[registry]]\nprefix = \"ghcr.io/owner\"\nblocked = true\n",
    );
    let flag = format!("ghcr.io=http://{}", mirror.addr());
    let run = pull_hub(
        &work,
        &["--mirror", &flag],
        &format!("ghcr.io/owner/app:{TAG}"),
        &[("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains("blocked") && run.stderr.contains(&conf),
        "the error says which file blocks it:\n{}",
        run.stderr
    );
    assert!(mirror.requests().is_empty(), "not even a mirror is asked");
    // Another owner on the same registry is not blocked.
    let run = pull_hub(
        &work,
        &["--mirror", &flag],
        &format!("ghcr.io/other/app:{TAG}"),
        &[("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    run.expect_code(1);
    assert!(!run.stderr.contains("blocked"), "{}", run.stderr);
}

#[test]
fn a_broken_registries_conf_or_daemon_json_is_named() {
    let work = Work::new();
    let conf = settings_file(&work, "bad.conf", "[[registry]\nprefix = \"x\"\n");
    let run = pull_hub(
        &work,
        &[],
        &hub_ref(),
        &[("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    run.expect_code(1);
    assert!(run.stderr.contains(&conf), "{}", run.stderr);
    let json = settings_file(
        &work,
        "daemon.json",
        "{\"registry-mirrors\": [\"ftp://m\"]}",
    );
    let run = pull_hub(
        &work,
        &[],
        &hub_ref(),
        &[("DOCKER_PULL_DAEMON_JSON", &json)],
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains(&json) && run.stderr.contains("registry-mirrors"),
        "{}",
        run.stderr
    );
    run.assert_no_panic();
}

#[test]
fn daemon_json_registry_mirrors_serve_docker_hub() {
    let image = hub_image();
    let good = public_mirror(&image);
    let work = Work::new();
    let json = settings_file(
        &work,
        "daemon.json",
        &format!(
            "{{\n  \"data-root\": \"/var/lib/docker\",\n  \"registry-mirrors\": [\"http://{}\"]\n}}\n",
            good.addr()
        ),
    );
    let run = pull_hub(
        &work,
        &[],
        &hub_ref(),
        &[("DOCKER_PULL_DAEMON_JSON", &json)],
    );
    assert_served_by(&run, &work, &image, &good.addr());
}

/// Flags first, then registries.conf, then daemon.json: each failing one warns and hands over.
#[test]
fn sources_in_order_flags_registries_conf_daemon_json() {
    let image = hub_image();
    let from_flag = FakeRegistry::anonymous();
    let from_conf = FakeRegistry::anonymous();
    let from_daemon = public_mirror(&image);
    let work = Work::new();
    let conf = settings_file(
        &work,
        "registries.conf",
        &format!(
            "[[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
            from_conf.addr()
        ),
    );
    let json = settings_file(
        &work,
        "daemon.json",
        &format!(
            "{{\"registry-mirrors\": [\"http://{}\"]}}",
            from_daemon.addr()
        ),
    );
    let env = [
        ("CONTAINERS_REGISTRIES_CONF", conf.as_str()),
        ("DOCKER_PULL_DAEMON_JSON", json.as_str()),
    ];
    let run = pull_hub(&work, &["--mirror", &from_flag.addr()], &hub_ref(), &env);
    assert_served_by(&run, &work, &image, &from_daemon.addr());
    assert_mirror_warning(&run, &from_flag.addr(), &from_conf.addr());
    assert_mirror_warning(&run, &from_conf.addr(), &from_daemon.addr());
}

#[test]
fn mirror_by_digest_only_is_honoured() {
    let image = hub_image();
    let mirror = FakeRegistry::anonymous();
    mirror.push_image("owner/app", TAG, &image);
    let work = Work::new();
    let conf = settings_file(
        &work,
        "registries.conf",
        &format!(
            "[[registry]]\nprefix = \"ghcr.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"{}\"\n",
            mirror.addr()
        ),
    );
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.as_str())];
    let by_tag = pull_hub(
        &work,
        &["--timeout", "3"],
        &format!("ghcr.io/owner/app:{TAG}"),
        &env,
    );
    by_tag.expect_code(1);
    assert!(
        mirror.requests().is_empty(),
        "a tag never goes to a digest-only mirror"
    );
    let digest = &image.manifest.digest;
    let by_digest = pull_hub(&work, &[], &format!("ghcr.io/owner/app@{digest}"), &env);
    by_digest.success();
    assert_eq!(by_digest.json()["source"], mirror.addr());
}

/// A mirror that cannot be reached is tried for the first image only; the final error names
/// every source and why.
#[test]
fn an_unreachable_mirror_is_not_tried_again_and_every_failure_is_named() {
    let image = hub_image();
    let good = public_mirror(&image);
    good.push_image(&format!("library/{NAME}"), "v2", &image);
    let down = format!("127.0.0.1:{}", closed_port());
    let work = Work::new();
    let second = format!("docker.io/library/{NAME}:v2");
    let run = pull_hub(
        &work,
        &["--mirror", &down, "--mirror", &good.addr(), &second],
        &hub_ref(),
        &[],
    );
    run.success();
    let warned = run
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("mirror {down} failed")))
        .count();
    assert_eq!(warned, 1, "the dead mirror was tried once:\n{}", run.stderr);
    assert_eq!(run.json_lines().len(), 2);

    let empty = FakeRegistry::anonymous();
    let run = pull_hub(
        &work,
        &[
            "--timeout",
            "3",
            "--mirror",
            &down,
            "--mirror",
            &empty.addr(),
        ],
        &format!("docker.io/library/{NAME}:missing"),
        &[],
    );
    run.expect_code(1);
    let error = run.stderr.lines().last().unwrap_or_default();
    assert!(
        error.contains("the mirrors tried first failed too")
            && error.contains(&format!("{down} (cannot reach"))
            && error.contains(&format!("{} (", empty.addr()))
            && error.contains("404"),
        "the error names each source and why: {error}"
    );
}
