//! Settings from the environment: a variable that is set but cannot be read is a usage error
//! (exit 2) that names it, before any registry is contacted.

use crate::common::Work;
use crate::support::image::{Flavor, small_image};
use crate::support::registry::FakeRegistry;

/// Pulls a small image with `var=value` set and expects a usage error naming `var`.
#[track_caller]
fn assert_usage_error_names(var: &str, value: &str) {
    let registry = FakeRegistry::anonymous();
    registry.push_image("team/app", "v1", &small_image(Flavor::Docker, "settings"));
    let work = Work::new();

    let run = work.pull_env(
        &["-q", &registry.reference("team/app", "v1")],
        &[(var, value)],
        &[],
        None,
    );
    run.expect_code(2);
    run.assert_no_panic();
    assert!(
        run.stderr.contains(var) && run.stderr.contains(value),
        "the message should name {var} and its value {value:?}: {}",
        run.stderr
    );
    assert!(
        registry.requests().is_empty(),
        "the registry was contacted: {:#?}",
        registry.requests()
    );
    work.assert_no_output();
}

#[test]
fn an_unreadable_chunk_size_is_a_usage_error() {
    assert_usage_error_names("DOCKER_PULL_CHUNK_SIZE", "lots");
}

#[test]
fn an_unreadable_chunk_threshold_is_a_usage_error() {
    assert_usage_error_names("DOCKER_PULL_CHUNK_THRESHOLD", "64Q");
}
