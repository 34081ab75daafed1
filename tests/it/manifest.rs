//! Manifest negotiation: the Accept header, and refusing schema 1.

use crate::common::Work;
use crate::support::image::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Flavor, OCI_INDEX, OCI_MANIFEST, schema1_manifest,
    small_image,
};
use crate::support::registry::FakeRegistry;

#[test]
fn schema1_is_not_supported() {
    let registry = FakeRegistry::anonymous();
    let manifest = schema1_manifest("old/app", "v1");
    registry.put_manifest("old/app", "v1", &manifest.media_type, &manifest.data);
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("old/app", "v1")]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("not supported"),
        "the message should say schema 1 is not supported: {}",
        run.stderr
    );
    work.assert_no_output();
}

#[test]
fn schema1_served_as_plain_json_is_not_supported() {
    let registry = FakeRegistry::anonymous();
    let manifest = schema1_manifest("old/app", "v1");
    registry.put_manifest("old/app", "v1", "application/json", &manifest.data);
    let work = Work::new();

    let run = work.pull(&["-q", &registry.reference("old/app", "v1")]);
    run.expect_code(1);
    work.assert_no_output();
}

#[test]
fn accept_header_lists_all_four_media_types() {
    let registry = FakeRegistry::anonymous();
    registry.push_image("app", "v1", &small_image(Flavor::Docker, "accept"));
    let work = Work::new();

    work.pull(&["-q", &registry.reference("app", "v1")])
        .success();

    let requests = registry.manifest_requests();
    assert!(!requests.is_empty(), "no manifest request seen");
    for request in requests {
        let accept = request.accept.clone().unwrap_or_default();
        for media_type in [
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
            OCI_MANIFEST,
            DOCKER_MANIFEST,
        ] {
            assert!(
                accept.contains(media_type),
                "{} {}: Accept lacks {media_type}: {accept:?}",
                request.method,
                request.path
            );
        }
    }
}
