//! Tokens that expire during a pull: the short-token registry (its token server's tokens work
//! `E2E_SLOW_TTL` seconds) reached through the throttling relay, pulled one blob at a time
//! (`-j 1`), so the pull of the `slow` fixture lasts several token lifetimes.
//!
//! Under `private/slow-honest` the token server tells the real lifetime (`expires_in`): the
//! client must renew before the token runs out, so the registry never rejects a blob request.
//! Under `private/slow-lying` it claims 300 s: the registry answers 401 mid-pull and the client
//! must renew on that challenge. The registry's access log shows which happened.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::env::{SLOW_HONEST, SLOW_LYING, setup};
use crate::{LogMark, Scratch, TokenLog, assert_loads_and_runs, field, json_objects};

/// What one slow pull left behind: the tokens issued for it and the registry's access-log
/// lines of its blob requests answered 401.
struct SlowPull {
    issued: Vec<Value>,
    rejected_blob_requests: Vec<String>,
}

/// Pulls `repo` from the short-token registry with the token user's credentials; asserts the
/// pull took several token lifetimes, that more than one token was issued for it, and that the
/// archive loads and runs.
fn slow_pull(repo: &str) -> SlowPull {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let reference = format!("{}/{repo}", net.slow_registry);
    let archive = scratch.out("slow.tar");
    let tokens = TokenLog::start(&net.slow_token_server);
    let access_log = LogMark::new(&net.slow_registry_log);

    let cmd = scratch.command(&[
        "--json",
        "-j",
        "1",
        &reference,
        "-u",
        &env.token_user,
        "--password-stdin",
        "-o",
        archive.to_str().unwrap(),
    ]);
    let started = Instant::now();
    let run = scratch.run(cmd, Some(&format!("{}\n", env.token_pass)));
    let took = started.elapsed();
    let issued = tokens.access_tokens_for(repo);
    let run = run.success();
    let objects = json_objects(&run, 1);
    assert_eq!(
        field(&objects[0], "image_id"),
        env.fixtures.slow.config.digest,
        "{}",
        run.describe()
    );

    let ttl = Duration::from_secs(net.slow_ttl);
    assert!(
        took >= ttl * 3,
        "the pull took {took:?}, less than three token lifetimes ({ttl:?} each): the relay in \
         front of {} does not slow it down enough for this test to mean anything",
        net.slow_registry
    );
    assert!(
        issued.len() > 1,
        "a pull of {took:?} with tokens that work {ttl:?} needs more than one token; the token \
         server issued {} for {repo}: {issued:?}\n{}",
        issued.len(),
        run.describe()
    );
    assert!(
        issued.iter().all(|t| t["user"] == env.token_user.as_str()),
        "every renewal presents the credentials again: {issued:?}"
    );
    let blobs = format!("/v2/{repo}/blobs/");
    let rejected_blob_requests = access_log
        .added()
        .lines()
        .filter(|l| l.contains(&blobs) && l.contains("HTTP/1.1\" 401 "))
        .map(str::to_string)
        .collect();
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
    SlowPull {
        issued,
        rejected_blob_requests,
    }
}

/// `expires_in` is the real lifetime: the client renews before the token runs out, and never
/// presents an expired one.
#[test]
fn short_tokens_are_renewed_before_they_expire() {
    let pull = slow_pull(SLOW_HONEST);
    let ttl = setup().1.net().slow_ttl;
    let issued = &pull.issued;
    assert!(
        issued.iter().all(|t| t["expires_in"].as_u64() == Some(ttl)),
        "the token server should have told the real lifetime ({ttl} s): {issued:?}"
    );
    assert!(
        pull.rejected_blob_requests.is_empty(),
        "told the real lifetime, docker-pull should renew before the token expires, but the \
         registry rejected blob requests:\n{}",
        pull.rejected_blob_requests.join("\n")
    );
}

/// `expires_in` claims 300 s but the registry rejects the token after a few: the client meets
/// 401 mid-pull, fetches a new token on the challenge and goes on.
#[test]
fn tokens_rejected_mid_pull_are_renewed_on_the_challenge() {
    let pull = slow_pull(SLOW_LYING);
    let issued = &pull.issued;
    assert!(
        !pull.rejected_blob_requests.is_empty(),
        "the registry should have rejected an expired token mid-pull (its access log shows no \
         401 for a blob of {SLOW_LYING}): the test did not exercise renewal on a challenge"
    );
    assert!(
        issued.iter().all(|t| t["expires_in"].as_u64() == Some(300)),
        "the token server should have claimed 300 s under {SLOW_LYING}: {issued:?}"
    );
}
