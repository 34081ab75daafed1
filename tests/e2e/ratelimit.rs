//! `--limit-rate` against the real plain registry: the `small` fixture (busybox) pulled under a
//! cap, its large layer in ranged chunks over several connections. The achieved rate is checked
//! from above only: a slow machine makes a pull slower, never faster.

use std::time::Instant;

use crate::env::setup;
use crate::{Scratch, assert_loads_and_runs};

#[test]
fn limit_rate_caps_a_chunked_pull_from_the_plain_registry() {
    let (_engine, env) = setup();
    env.reset_engine();
    let scratch = Scratch::new();
    let archive = scratch.out("capped.tar");
    let reference = env.plain("small");
    let cap = 256.0 * 1024.0;
    let mut cmd = scratch.command(&[
        "-q",
        "--limit-rate",
        "256K",
        "-j",
        "4",
        "-o",
        archive.to_str().expect("utf-8 path"),
        &reference,
    ]);
    cmd.env("DOCKER_PULL_CHUNK_THRESHOLD", "100K")
        .env("DOCKER_PULL_CHUNK_SIZE", "128K");
    let start = Instant::now();
    let run = scratch.run(cmd, None).success();
    let secs = start.elapsed().as_secs_f64();
    let bytes = env.fixtures.small.blob_bytes() as f64;
    let rate = bytes / secs;
    eprintln!(
        "{bytes} bytes in {secs:.2} s: {rate:.0} B/s ({:.3} of the cap)",
        rate / cap
    );
    assert!(
        rate <= 1.1 * cap,
        "--limit-rate 256K: {rate:.0} B/s is more than 10% over the cap\n{}",
        run.describe()
    );
    assert_loads_and_runs(&archive, &format!("{reference}:latest"));
}
