//! Where credentials come from when no flag gives them: docker config `auths` (every key form),
//! credential helpers (`credHelpers`, `credsStore`), identity tokens (OAuth2 refresh tokens) and
//! registry tokens, containers auth files; the order between all of these; the warnings and
//! messages around them; and that none of the secrets ever reach the output or the log.

use base64::Engine as _;
use serde_json::json;

use crate::common::{
    CredentialHelper, HelperReply, Run, Work, assert_default_archive, auths_with_auth,
};
use crate::support::image::{Flavor, Image, small_image};
use crate::support::proxy::HttpProxy;
use crate::support::registry::{Auth, Config, FakeRegistry, TokenAuth};

const USER: &str = "alice";
const PASS: &str = "s3cr3t-Pa55w0rd";
const WRONG: &str = "Wr0ng-Pa55-xyz";
const REPO: &str = "private/app";
const PULL_SCOPE: &str = "repository:private/app:pull";
const P_WARNING: &str = "warning: a password given with -p is visible to other users of this machine; use --password-stdin";

fn registry(config: Config) -> (FakeRegistry, Image) {
    let registry = FakeRegistry::start(config);
    let image = small_image(Flavor::Docker, "credentials");
    registry.push_image(REPO, "v1", &image);
    (registry, image)
}

/// A Bearer registry whose token endpoint wants `USER`/`PASS`.
fn bearer_registry() -> (FakeRegistry, Image) {
    registry(Config::with_auth(Auth::bearer(USER, PASS)))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `<registry>/private/app:v1` with `env` (no `-q`: some tests look for warnings).
fn pull(work: &Work, registry: &FakeRegistry, env: &[(&str, &str)]) -> Run {
    work.pull_env(&[&registry.reference(REPO, "v1")], env, &[], None)
}

#[track_caller]
fn assert_pulled(run: &Run, work: &Work, registry: &FakeRegistry, image: &Image) {
    run.success();
    assert_default_archive(work, registry, image, REPO, "v1");
}

/// At least one token was issued, and every issued token was asked for with `auth`.
#[track_caller]
fn assert_tokens_issued_with(registry: &FakeRegistry, auth: &TokenAuth) {
    let log = registry.token_log();
    let issued: Vec<_> = log.iter().filter(|r| r.ok()).collect();
    assert!(!issued.is_empty(), "no token was issued: {log:#?}");
    for r in issued {
        assert_eq!(&r.auth, auth, "token request {r:#?}");
    }
}

#[track_caller]
fn assert_password_used(registry: &FakeRegistry, pass: &str) {
    assert_tokens_issued_with(
        registry,
        &TokenAuth::Basic {
            user: USER.to_string(),
            pass: pass.to_string(),
        },
    );
}

// --- docker config `auths` ------------------------------------------------------------------

#[test]
fn config_auths_base64_auth() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
    assert!(
        !run.stderr.contains("warning"),
        "no warning expected: {}",
        run.stderr
    );
}

#[test]
fn config_auths_username_and_password_fields() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &json!({ "auths": { registry.addr(): { "username": USER, "password": PASS } } }),
    );

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

/// The config key `key(addr)` matches the registry `127.0.0.1:PORT`.
#[track_caller]
fn assert_config_key_matches(key: impl Fn(&str) -> String) {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let key = key(&registry.addr());
    work.write_json(&work.docker_config(), &auths_with_auth(&key, USER, PASS));

    let run = pull(&work, &registry, &[]);
    assert!(
        run.code == Some(0),
        "config key {key:?} was not used for {}:\n{}",
        registry.addr(),
        run.stderr
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn config_key_http_url_with_v2_path() {
    assert_config_key_matches(|addr| format!("http://{addr}/v2/"));
}

#[test]
fn config_key_https_url() {
    assert_config_key_matches(|addr| format!("https://{addr}"));
}

#[test]
fn config_key_https_url_with_v1_path() {
    assert_config_key_matches(|addr| format!("https://{addr}/v1/"));
}

#[test]
fn config_key_of_another_registry_is_not_used() {
    let (registry, _) = bearer_registry();
    let other = FakeRegistry::anonymous();
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&other.addr(), USER, PASS),
    );

    let run = pull(&work, &registry, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("asks for credentials"),
        "credentials for {} must not be used for {}: {}",
        other.addr(),
        registry.addr(),
        run.stderr
    );
    assert!(
        registry
            .token_log()
            .iter()
            .all(|r| r.auth == TokenAuth::Anonymous),
        "{:#?}",
        registry.token_log()
    );
}

#[test]
fn basic_registry_gets_config_credentials() {
    let (registry, image) = registry(Config::with_auth(Auth::basic(USER, PASS)));
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    let served: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/") && r.status == 200)
        .collect();
    assert!(!served.is_empty());
    assert!(
        served
            .iter()
            .all(|r| r.auth_scheme.as_deref() == Some("Basic")),
        "{served:#?}"
    );
}

#[test]
fn docker_config_env_var_names_the_directory() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let elsewhere = work.path("elsewhere");
    work.write_json(
        &elsewhere.join("config.json"),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );
    // The default location holds wrong credentials: it must not be read.
    work.write_json(
        &work.home().join(".docker").join("config.json"),
        &auths_with_auth(&registry.addr(), USER, WRONG),
    );

    let run = pull(
        &work,
        &registry,
        &[("DOCKER_CONFIG", elsewhere.to_str().expect("utf-8"))],
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn home_docker_config_without_docker_config_var() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.home().join(".docker").join("config.json"),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );

    let run = work.pull_env(
        &["-q", &registry.reference(REPO, "v1")],
        &[],
        &["DOCKER_CONFIG"],
        None,
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn invalid_config_json_warns_and_the_pull_goes_on() {
    let (registry, image) = registry(Config::with_auth(Auth::bearer_anonymous()));
    let work = Work::new();
    let config = work.docker_config();
    work.write_file(&config, "{ this is not json");

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    let path = config.display().to_string();
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("warning:") && l.contains(&path)),
        "expected a warning naming {path}: {}",
        run.stderr
    );
    assert_tokens_issued_with(&registry, &TokenAuth::Anonymous);
}

#[test]
fn rejected_config_credentials_name_the_file() {
    let (registry, _) = bearer_registry();
    let work = Work::new();
    let config = work.docker_config();
    work.write_json(&config, &auths_with_auth(&registry.addr(), USER, WRONG));

    let run = pull(&work, &registry, &[]);
    run.expect_code(1);
    run.assert_not_leaked(WRONG);
    let wanted = format!("rejected the credentials (from {})", config.display());
    assert!(
        run.stderr.contains(&wanted),
        "expected {wanted:?} in: {}",
        run.stderr
    );
    assert!(run.stderr.contains(REPO), "{}", run.stderr);
    work.assert_no_output();
}

// --- credential helpers ---------------------------------------------------------------------

fn helper_credentials(username: &str, secret: &str) -> HelperReply {
    HelperReply::Credentials {
        username: username.to_string(),
        secret: secret.to_string(),
    }
}

#[track_caller]
fn assert_helper_asked_for(helper: &CredentialHelper, registry: &FakeRegistry) {
    let calls = helper.calls();
    assert!(
        !calls.is_empty(),
        "docker-credential-{} was never run",
        helper.name
    );
    for call in &calls {
        assert_eq!(
            call,
            &registry.addr(),
            "docker-credential-{} got the wrong server address on stdin",
            helper.name
        );
    }
}

#[test]
fn cred_helpers_entry_for_the_registry() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let helper = CredentialHelper::install(&work, "test", helper_credentials(USER, PASS));
    work.write_json(
        &work.docker_config(),
        &json!({ "credHelpers": { registry.addr(): "test" } }),
    );

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    assert_pulled(&run, &work, &registry, &image);
    assert_helper_asked_for(&helper, &registry);
    assert_password_used(&registry, PASS);
}

#[test]
fn creds_store_for_every_registry() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let helper = CredentialHelper::install(&work, "test", helper_credentials(USER, PASS));
    work.write_json(&work.docker_config(), &json!({ "credsStore": "test" }));

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    assert_pulled(&run, &work, &registry, &image);
    assert_helper_asked_for(&helper, &registry);
    assert_password_used(&registry, PASS);
}

#[test]
fn cred_helpers_entry_beats_creds_store() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let store = CredentialHelper::install(&work, "store", helper_credentials(USER, WRONG));
    let helper = CredentialHelper::install(&work, "test", helper_credentials(USER, PASS));
    work.write_json(
        &work.docker_config(),
        &json!({ "credsStore": "store", "credHelpers": { registry.addr(): "test" } }),
    );

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    assert_pulled(&run, &work, &registry, &image);
    assert_helper_asked_for(&helper, &registry);
    assert_password_used(&registry, PASS);
    assert!(
        store.calls().is_empty(),
        "credsStore was asked although credHelpers names a helper"
    );
}

#[test]
fn helper_beats_auths() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let helper = CredentialHelper::install(&work, "test", helper_credentials(USER, PASS));
    let mut config = auths_with_auth(&registry.addr(), USER, WRONG);
    config["credHelpers"] = json!({ registry.addr(): "test" });
    work.write_json(&work.docker_config(), &config);

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn helper_without_credentials_falls_back_to_auths_silently() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let helper = CredentialHelper::install(&work, "test", HelperReply::NotFound);
    let mut config = auths_with_auth(&registry.addr(), USER, PASS);
    config["credHelpers"] = json!({ registry.addr(): "test" });
    work.write_json(&work.docker_config(), &config);

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    assert_pulled(&run, &work, &registry, &image);
    assert_helper_asked_for(&helper, &registry);
    assert_password_used(&registry, PASS);
    assert!(
        !run.stderr.contains("warning"),
        "\"credentials not found\" is not worth a warning: {}",
        run.stderr
    );
}

#[test]
fn failing_helper_warns_and_the_pull_goes_on() {
    let (registry, image) = registry(Config::with_auth(Auth::bearer_anonymous()));
    let work = Work::new();
    let helper = CredentialHelper::install(
        &work,
        "test",
        HelperReply::Fail("the keychain is locked".to_string()),
    );
    work.write_json(&work.docker_config(), &json!({ "credsStore": "test" }));

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    assert_pulled(&run, &work, &registry, &image);
    assert_helper_asked_for(&helper, &registry);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("warning:") && l.contains("docker-credential-test")),
        "expected a warning about the helper: {}",
        run.stderr
    );
    assert_tokens_issued_with(&registry, &TokenAuth::Anonymous);
}

#[test]
fn rejected_helper_credentials_name_the_helper() {
    let (registry, _) = bearer_registry();
    let work = Work::new();
    let helper = CredentialHelper::install(&work, "test", helper_credentials(USER, WRONG));
    work.write_json(
        &work.docker_config(),
        &json!({ "credHelpers": { registry.addr(): "test" } }),
    );

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    run.expect_code(1);
    run.assert_not_leaked(WRONG);
    assert!(
        run.stderr
            .contains("rejected the credentials (from credential helper docker-credential-test)"),
        "{}",
        run.stderr
    );
}

// --- identity tokens and registry tokens ----------------------------------------------------

const IDENTITY: &str = "idt-0f3a9c-refresh";

/// A Bearer registry that also takes the refresh token `IDENTITY`.
fn identity_registry(config: Config) -> (FakeRegistry, Image) {
    registry(config.refresh_token(IDENTITY))
}

/// Every issued token came from `POST grant_type=refresh_token` with `IDENTITY`, and the form
/// carried service, scope and client id.
#[track_caller]
fn assert_refresh_token_posted(registry: &FakeRegistry) {
    let log = registry.token_log();
    let issued: Vec<_> = log.iter().filter(|r| r.ok()).collect();
    assert!(!issued.is_empty(), "no token was issued: {log:#?}");
    for r in issued {
        assert_eq!(r.method, "POST", "{r:#?}");
        assert_eq!(
            r.auth,
            TokenAuth::RefreshToken(IDENTITY.to_string()),
            "{r:#?}"
        );
        assert_eq!(r.service.as_deref(), Some("fake-registry"), "{r:#?}");
        assert_eq!(r.client_id.as_deref(), Some("docker-pull"), "{r:#?}");
        assert!(r.has_scope(PULL_SCOPE) || r.scopes.is_empty(), "{r:#?}");
    }
    assert!(
        log.iter().any(|r| r.ok() && r.has_scope(PULL_SCOPE)),
        "no token for {PULL_SCOPE}: {log:#?}"
    );
}

#[test]
fn helper_identity_token_is_exchanged_with_an_oauth2_post() {
    let (registry, image) = identity_registry(Config::with_auth(Auth::bearer(USER, PASS)));
    let work = Work::new();
    let helper = CredentialHelper::install(&work, "test", helper_credentials("<token>", IDENTITY));
    work.write_json(
        &work.docker_config(),
        &json!({ "credHelpers": { registry.addr(): "test" } }),
    );

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    assert_pulled(&run, &work, &registry, &image);
    assert_refresh_token_posted(&registry);
}

#[test]
fn identity_token_falls_back_to_get_when_post_is_not_supported() {
    let (registry, image) =
        identity_registry(Config::with_auth(Auth::bearer(USER, PASS)).post_token_status(404));
    let work = Work::new();
    let helper = CredentialHelper::install(&work, "test", helper_credentials("<token>", IDENTITY));
    work.write_json(
        &work.docker_config(),
        &json!({ "credHelpers": { registry.addr(): "test" } }),
    );

    let run = pull(&work, &registry, &[("PATH", &helper.path_env())]);
    assert_pulled(&run, &work, &registry, &image);
    let log = registry.token_log();
    assert!(
        log.iter().any(|r| r.method == "POST" && r.status == 404),
        "the OAuth2 POST was not tried first: {log:#?}"
    );
    let issued: Vec<_> = log.iter().filter(|r| r.ok()).collect();
    assert!(!issued.is_empty(), "{log:#?}");
    for r in issued {
        assert_eq!(r.method, "GET", "{r:#?}");
        match &r.auth {
            TokenAuth::Basic { pass, .. } => assert_eq!(pass, IDENTITY, "{r:#?}"),
            other => {
                panic!("the GET fallback should send Basic <user>:<identity token>: {other:?}")
            }
        }
    }
}

#[test]
fn config_identitytoken_is_exchanged_with_an_oauth2_post() {
    let (registry, image) = identity_registry(Config::with_auth(Auth::bearer(USER, PASS)));
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &json!({ "auths": { registry.addr(): { "username": USER, "identitytoken": IDENTITY } } }),
    );

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    assert_refresh_token_posted(&registry);
}

#[test]
fn config_registrytoken_is_sent_as_bearer_as_is() {
    let (registry, image) = bearer_registry();
    let token = "regtok-7f1d2e-static";
    registry.add_token(token, &[REPO]);
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &json!({ "auths": { registry.addr(): { "registrytoken": token } } }),
    );

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    run.assert_not_leaked(token);
    assert_eq!(
        registry.token_requests(),
        0,
        "a registry token needs no token request: {:#?}",
        registry.token_log()
    );
    assert!(
        registry
            .requests()
            .iter()
            .filter(|r| r.path.contains("/blobs/") && r.status == 200)
            .all(|r| r.auth_scheme.as_deref() == Some("Bearer"))
    );
}

// --- containers auth files --------------------------------------------------------------------

#[test]
fn registry_auth_file() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let file = work.path("custom-auth.json");
    work.write_json(&file, &auths_with_auth(&registry.addr(), USER, PASS));

    let run = pull(
        &work,
        &registry,
        &[("REGISTRY_AUTH_FILE", file.to_str().expect("utf-8"))],
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn xdg_runtime_dir_auth_json() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.runtime_auth_file(),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn xdg_config_home_auth_json() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let config_home = work.path("xdg-config");
    work.write_json(
        &config_home.join("containers").join("auth.json"),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );

    let run = pull(
        &work,
        &registry,
        &[("XDG_CONFIG_HOME", config_home.to_str().expect("utf-8"))],
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn home_config_containers_auth_json() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.config_home_auth_file(),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );

    let run = work.pull_env(
        &["-q", &registry.reference(REPO, "v1")],
        &[],
        &["XDG_CONFIG_HOME"],
        None,
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

// --- precedence: a wrong password at the lower level proves it was not used -------------------

#[test]
fn flags_beat_environment_and_files() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&registry.addr(), USER, WRONG),
    );

    let run = work.pull_env(
        &[
            "-q",
            "-u",
            USER,
            "-p",
            PASS,
            &registry.reference(REPO, "v1"),
        ],
        &[
            ("DOCKER_PULL_USERNAME", USER),
            ("DOCKER_PULL_PASSWORD", WRONG),
        ],
        &[],
        None,
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn environment_beats_docker_config() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&registry.addr(), USER, WRONG),
    );
    work.write_json(
        &work.registry_auth_file(),
        &auths_with_auth(&registry.addr(), USER, WRONG),
    );

    let run = pull(
        &work,
        &registry,
        &[
            ("DOCKER_PULL_USERNAME", USER),
            ("DOCKER_PULL_PASSWORD", PASS),
        ],
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn docker_config_beats_auth_json() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );
    work.write_json(
        &work.registry_auth_file(),
        &auths_with_auth(&registry.addr(), USER, WRONG),
    );

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn docker_config_hit_wins_even_when_auth_json_is_right() {
    // First hit wins: rejected config credentials are not followed by the auth.json ones.
    let (registry, _) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&registry.addr(), USER, WRONG),
    );
    work.write_json(
        &work.registry_auth_file(),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );

    let run = pull(&work, &registry, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&format!(
            "rejected the credentials (from {})",
            work.docker_config().display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn registry_auth_file_beats_xdg_runtime_dir() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    work.write_json(
        &work.registry_auth_file(),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );
    work.write_json(
        &work.runtime_auth_file(),
        &auths_with_auth(&registry.addr(), USER, WRONG),
    );

    let run = pull(&work, &registry, &[]);
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

#[test]
fn xdg_runtime_dir_beats_xdg_config_home() {
    let (registry, image) = bearer_registry();
    let work = Work::new();
    let config_home = work.path("xdg-config");
    work.write_json(
        &work.runtime_auth_file(),
        &auths_with_auth(&registry.addr(), USER, PASS),
    );
    work.write_json(
        &config_home.join("containers").join("auth.json"),
        &auths_with_auth(&registry.addr(), USER, WRONG),
    );

    let run = pull(
        &work,
        &registry,
        &[("XDG_CONFIG_HOME", config_home.to_str().expect("utf-8"))],
    );
    assert_pulled(&run, &work, &registry, &image);
    assert_password_used(&registry, PASS);
}

// --- the -p warning -----------------------------------------------------------------------------

#[test]
fn password_flag_warns() {
    let (registry, image) = bearer_registry();
    let work = Work::new();

    let run = work.pull(&["-u", USER, "-p", PASS, &registry.reference(REPO, "v1")]);
    assert_pulled(&run, &work, &registry, &image);
    assert!(run.stderr.contains(P_WARNING), "{}", run.stderr);
    run.assert_not_leaked(PASS);
}

#[test]
fn password_stdin_and_environment_do_not_warn() {
    let (registry, image) = bearer_registry();
    let work = Work::new();

    let run = work.pull_env(
        &[
            "-u",
            USER,
            "--password-stdin",
            &registry.reference(REPO, "v1"),
        ],
        &[],
        &[],
        Some(&format!("{PASS}\n")),
    );
    assert_pulled(&run, &work, &registry, &image);
    assert!(
        !run.stderr.contains("visible to other users"),
        "{}",
        run.stderr
    );

    let run = pull(
        &work,
        &registry,
        &[
            ("DOCKER_PULL_USERNAME", USER),
            ("DOCKER_PULL_PASSWORD", PASS),
        ],
    );
    run.success();
    assert!(
        !run.stderr.contains("visible to other users"),
        "{}",
        run.stderr
    );
}

// --- secrets never leak ---------------------------------------------------------------------------

/// `run`, and the log file at `log`, show none of `secrets`; the log is not empty.
#[track_caller]
fn assert_nothing_leaked(run: &Run, log: &std::path::Path, secrets: &[String]) {
    let log_text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("no log file {}: {e}", log.display()));
    assert!(!log_text.trim().is_empty(), "--log-file wrote nothing");
    for secret in secrets {
        run.assert_not_leaked(secret);
        assert!(
            !log_text.contains(secret.as_str()),
            "the log file contains the secret {secret:?}:\n{log_text}"
        );
    }
}

#[test]
fn no_secret_reaches_the_output_or_the_log() {
    const PROXY_USER: &str = "pxuser";
    const PROXY_PASS: &str = "Pr0xy-Pa55-q7";
    const HELPER_SECRET: &str = "h3lper-Secret-z9";

    // 1. -u/-p through an authenticating proxy.
    let (flags_registry, _) = bearer_registry();
    let proxy = HttpProxy::with_auth(PROXY_USER, PROXY_PASS);
    // 2. An identity token from the docker config.
    let (identity_registry, _) = identity_registry(Config::with_auth(Auth::bearer(USER, PASS)));
    // 3. A credential helper's password.
    let (helper_registry, _) = registry(Config::with_auth(Auth::bearer(USER, HELPER_SECRET)));

    let work = Work::new();
    let helper = CredentialHelper::install(&work, "test", helper_credentials(USER, HELPER_SECRET));
    work.write_json(
        &work.docker_config(),
        &json!({
            "auths": { identity_registry.addr(): { "identitytoken": IDENTITY } },
            "credHelpers": { helper_registry.addr(): "test" },
        }),
    );
    let path = helper.path_env();

    let mut runs = Vec::new();
    for (i, (registry, extra)) in [
        (
            &flags_registry,
            vec![
                "-u".to_string(),
                USER.to_string(),
                "-p".to_string(),
                PASS.to_string(),
                "--plain-http".to_string(),
                "--proxy".to_string(),
                proxy.url_with(PROXY_USER, PROXY_PASS),
            ],
        ),
        (&identity_registry, vec![]),
        (&helper_registry, vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let log = work.path(&format!("pull-{i}.log"));
        let mut args = vec![
            "--debug".to_string(),
            "--log-file".to_string(),
            log.to_str().expect("utf-8").to_string(),
        ];
        args.extend(extra);
        args.push(registry.reference(REPO, "v1"));
        let run = work.pull_env(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[("PATH", &path)],
            &[],
            None,
        );
        run.success();
        runs.push((run, log));
    }
    assert!(
        proxy.requests().iter().any(|r| r.authorized),
        "the first pull did not go through the proxy"
    );

    let mut secrets: Vec<String> = [PASS, PROXY_PASS, HELPER_SECRET, IDENTITY]
        .iter()
        .map(|s| s.to_string())
        .collect();
    secrets.push(b64(&format!("{USER}:{PASS}")));
    secrets.push(b64(&format!("{PROXY_USER}:{PROXY_PASS}")));
    secrets.push(b64(&format!("{USER}:{HELPER_SECRET}")));
    secrets.push(b64(&format!("<token>:{IDENTITY}")));
    for registry in [&flags_registry, &identity_registry, &helper_registry] {
        let issued = registry.issued_tokens();
        assert!(!issued.is_empty(), "a pull got no token");
        secrets.extend(issued);
    }
    for (run, log) in &runs {
        assert_nothing_leaked(run, log, &secrets);
    }
}

// --- credentials given with -u belong to one registry -------------------------------------------

/// A registry that hands out tokens to anyone, holding `public/app:v1`.
fn public_registry() -> (FakeRegistry, Image) {
    let registry = FakeRegistry::start(Config::with_auth(Auth::bearer_anonymous()));
    let image = small_image(Flavor::Docker, "public");
    registry.push_image("public/app", "v1", &image);
    (registry, image)
}

/// Asserts that `registry` never saw Basic credentials, nor `PASS` at its token endpoint.
#[track_caller]
fn assert_no_credentials_reached(registry: &FakeRegistry) {
    let basic: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.auth_scheme.as_deref() == Some("Basic"))
        .collect();
    assert!(basic.is_empty(), "Basic credentials were sent: {basic:#?}");
    let log = registry.token_log();
    assert!(!log.is_empty(), "no token was asked for");
    for r in &log {
        assert_eq!(r.auth, TokenAuth::Anonymous, "token request {r:#?}");
    }
}

#[test]
fn given_credentials_never_reach_the_other_registry_of_an_images_file() {
    let (private, private_image) = registry(Config::with_auth(Auth::basic(USER, PASS)));
    let (public, public_image) = public_registry();
    let work = Work::new();
    let list = work.path("images.txt");
    work.write_file(
        &list,
        &format!(
            "{}\n{}\n",
            private.reference(REPO, "v1"),
            public.reference("public/app", "v1")
        ),
    );

    let run = work.pull_env(
        &[
            "-u",
            USER,
            "--password-stdin",
            "-i",
            list.to_str().expect("utf-8"),
        ],
        &[],
        &[],
        Some(&format!("{PASS}\n")),
    );
    run.success();
    run.assert_not_leaked(PASS);
    assert_default_archive(&work, &private, &private_image, REPO, "v1");
    assert_default_archive(&work, &public, &public_image, "public/app", "v1");
    assert!(
        private
            .requests()
            .iter()
            .any(|r| r.auth_scheme.as_deref() == Some("Basic") && r.status == 200),
        "the private registry should get the credentials: {:#?}",
        private.requests()
    );
    assert_no_credentials_reached(&public);
    assert!(
        run.stderr.contains(&format!(
            "are for {}, the first image's registry, only",
            private.addr()
        )) && run.stderr.contains(&public.addr()),
        "the run should say which registry the credentials are for: {}",
        run.stderr
    );
}

#[test]
fn other_registries_use_their_stored_credentials() {
    // The first image is on the command line, the second in the images file; the second's
    // registry wants other credentials, which the docker config holds.
    const OTHER_USER: &str = "bob";
    const OTHER_PASS: &str = "0ther-Pa55-z9";
    let (first, first_image) = registry(Config::with_auth(Auth::basic(USER, PASS)));
    let (second, second_image) = registry(Config::with_auth(Auth::basic(OTHER_USER, OTHER_PASS)));
    let work = Work::new();
    work.write_json(
        &work.docker_config(),
        &auths_with_auth(&second.addr(), OTHER_USER, OTHER_PASS),
    );
    let list = work.path("images.txt");
    work.write_file(&list, &format!("{}\n", second.reference(REPO, "v1")));

    let run = work.pull_env(
        &[
            "-q",
            &first.reference(REPO, "v1"),
            "-i",
            list.to_str().expect("utf-8"),
        ],
        &[
            ("DOCKER_PULL_USERNAME", USER),
            ("DOCKER_PULL_PASSWORD", PASS),
        ],
        &[],
        None,
    );
    run.success();
    run.assert_not_leaked(PASS);
    run.assert_not_leaked(OTHER_PASS);
    assert_default_archive(&work, &first, &first_image, REPO, "v1");
    assert_default_archive(&work, &second, &second_image, REPO, "v1");
    assert!(
        second
            .requests()
            .iter()
            .all(|r| r.status != 401 || r.auth_scheme.is_none()),
        "the second registry rejected credentials: {:#?}",
        second.requests()
    );
}
