//! A registry (htpasswd Basic auth) whose blob GETs answer 307 to another host: the blob server
//! (tests/e2e/blobserver.py) serves them, and refuses any request carrying `Authorization`, as a
//! pre-signed S3 URL does. The credentials must go to the registry and never to the redirect
//! target.

use serde_json::Value;

use crate::env::setup;
use crate::{Scratch, assert_error_line, assert_loads_and_runs, field, get_json, json_objects};

fn counter(stats: &Value, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("blob server stats lack {name}: {stats}"))
}

#[test]
fn redirected_blobs_are_fetched_without_the_credentials() {
    let (_engine, env) = setup();
    let net = env.net();
    env.reset_engine();
    let scratch = Scratch::new();
    let reference = format!("{}/small", net.redirect_registry);
    let image = &env.fixtures.small;

    // The registry really wants credentials.
    let archive = scratch.out("anonymous.tar");
    let run = scratch
        .pull(&[
            &reference,
            "--retries",
            "1",
            "-o",
            archive.to_str().unwrap(),
        ])
        .exit_code(1);
    assert_error_line(&run);
    assert!(
        run.stderr.contains("asks for credentials"),
        "anonymous pull of a Basic-auth registry\n{}",
        run.describe()
    );

    let before = get_json(&net.redirect_target, "/_stats");
    let archive = scratch.out("redirected.tar");
    let cmd = scratch.command(&[
        "--json",
        &reference,
        "-u",
        &net.basic_user,
        "--password-stdin",
        "-o",
        archive.to_str().unwrap(),
    ]);
    let run = scratch
        .run(cmd, Some(&format!("{}\n", net.basic_pass)))
        .success();
    let objects = json_objects(&run, 1);
    assert_eq!(field(&objects[0], "image_id"), image.config.digest);
    assert_eq!(field(&objects[0], "source"), net.redirect_registry);
    let after = get_json(&net.redirect_target, "/_stats");

    let blobs = image.blobs().len() as u64;
    assert!(
        counter(&after, "served") >= counter(&before, "served") + blobs,
        "the redirect target should have served the {blobs} blobs (config and layers): \
         before {before}, after {after}\n{}",
        run.describe()
    );
    assert_eq!(
        counter(&after, "rejected"),
        counter(&before, "rejected"),
        "requests with an Authorization header reached the redirect target: {after}\n{}",
        run.describe()
    );
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}
