//! `-j N`: at most N blobs are downloaded at once, and N are when there are enough.

use std::time::Duration;

use crate::common::{Work, assert_default_archive};
use crate::support::image::{Flavor, random_image};
use crate::support::registry::{Action, FakeRegistry, Fault, Match, Throttle};

#[test]
fn max_concurrent_downloads_is_honoured() {
    let image = random_image(Flavor::Oci, 6, 120_000, 61);
    for workers in [1usize, 2, 4] {
        let registry = FakeRegistry::anonymous();
        registry.push_image("par", "v1", &image);
        registry.throttle_blobs(Some(Throttle {
            chunk: 16 * 1024,
            delay: Duration::from_millis(25),
        }));
        let work = Work::new();
        work.pull(&[
            "-q",
            "-j",
            &workers.to_string(),
            &registry.reference("par", "v1"),
        ])
        .success();
        assert_eq!(
            registry.max_blobs_in_flight(),
            workers,
            "-j {workers}: most blobs downloaded at once"
        );
        assert_default_archive(&work, &registry, &image, "par", "v1");
    }
}

#[test]
fn workers_alias() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 3, 50_000, 62);
    registry.push_image("par", "v1", &image);
    registry.throttle_blobs(Some(Throttle {
        chunk: 16 * 1024,
        delay: Duration::from_millis(20),
    }));
    let work = Work::new();
    work.pull(&["-q", "--workers", "1", &registry.reference("par", "v1")])
        .success();
    assert_eq!(registry.max_blobs_in_flight(), 1, "--workers 1");
}

/// The images of one command are pulled at once, their blobs within the one `-j` budget, and
/// report in the order given (the first image, slowest, still reports first); a bundle too.
#[test]
fn images_of_one_command_go_at_once_within_one_budget() {
    let images: Vec<_> = (0..4)
        .map(|i| random_image(Flavor::Docker, 1, 120_000, 70 + i))
        .collect();
    for (workers, bundle) in [(1usize, false), (4, false), (4, true)] {
        let registry = FakeRegistry::anonymous();
        for (i, image) in images.iter().enumerate() {
            registry.push_image(&format!("img{i}"), "v1", image);
        }
        registry.throttle_blobs(Some(Throttle {
            chunk: 16 * 1024,
            delay: Duration::from_millis(25),
        }));
        let refs: Vec<String> = (0..4)
            .map(|i| registry.reference(&format!("img{i}"), "v1"))
            .collect();
        let work = Work::new();
        let jobs = workers.to_string();
        let bundle_path = work.path("all.tar");
        let mut args = vec!["--json", "-j", jobs.as_str()];
        if bundle {
            args.extend(["-o", bundle_path.to_str().unwrap()]);
        }
        args.extend(refs.iter().map(String::as_str));
        let run = if bundle {
            work.pull_to(&args)
        } else {
            work.pull(&args)
        };
        run.success();
        let most = registry.max_blobs_in_flight();
        assert!(most <= workers, "-j {workers}: {most} blobs at once");
        if workers > 1 {
            assert!(
                most >= 2,
                "-j {workers}: the images' blobs went one at a time"
            );
        }
        let order: Vec<String> = run
            .json_lines()
            .iter()
            .map(|l| l["image"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(order, refs, "reports in the order given");
    }
}

/// The config and the layers are requested together: the layer's request goes out before the
/// config, served slowly, is in.
#[test]
fn the_config_and_the_layers_go_together() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 200_000, 80);
    registry.push_image("one", "v1", &image);
    registry.add_fault(
        Fault::new(
            Match::blob(&image.config.digest),
            Action::Pace(Throttle {
                chunk: 64,
                delay: Duration::from_millis(50),
            }),
        )
        .always(),
    );
    let work = Work::new();
    let run = work.pull(&["--debug", &registry.reference("one", "v1")]);
    run.success();
    let lines: Vec<&str> = run.stderr.lines().collect();
    let at = |what: &str, digest: &str| {
        lines
            .iter()
            .position(|l| l.contains(what) && l.contains(digest))
            .unwrap_or_else(|| panic!("no {what:?} for {digest}\n{}", run.stderr))
    };
    let layer_asked = at("request method=GET", &image.layers[0].digest);
    let config_in = at("blob in the cache", &image.config.digest);
    assert!(
        layer_asked < config_in,
        "the layer waited for the config\n{}",
        run.stderr
    );
    assert_default_archive(&work, &registry, &image, "one", "v1");
}

/// The connections the blobs need are opened while the registry is first reached (the `/v2/`
/// ping goes out on `-j` connections at once), not once the manifest is in. Over a link with a
/// round trip, every connection is up before any answer comes back; here a registry that takes
/// 100 ms to answer `/v2/` stands in for it. `/v2/` is asked `-j` times, and every connection
/// a blob goes over was accepted before the manifest was answered. (Two blobs, the config sent
/// slowly so that the layer is asked for while it is on its way, over a connection of its own.
/// The client's pool may open a connection more than it then uses, when one it waits for comes
/// free first, so connections are not counted; on loopback that new one may even win, so a
/// request that follows another on one connection, as with `-j 1`, proves nothing here.)
#[test]
fn the_connections_for_the_blobs_are_open_before_the_manifest_is_in() {
    let image = random_image(Flavor::Docker, 1, 50_000, 81);
    let registry = FakeRegistry::anonymous();
    registry.push_image("warm", "v1", &image);
    let slow = Action::Delay(Duration::from_millis(100));
    registry.add_fault(Fault::new(Match::path("/v2/"), slow).always());
    let paced = Action::Pace(Throttle {
        chunk: 64,
        delay: Duration::from_millis(40),
    });
    registry.add_fault(Fault::new(Match::blob(&image.config.digest), paced).always());
    let work = Work::new();
    work.pull(&["-q", "-j", "3", &registry.reference("warm", "v1")])
        .success();
    let log = registry.requests();
    let manifest = log
        .iter()
        .position(|r| r.path.contains("/manifests/"))
        .expect("a manifest request");
    let pings = log.iter().filter(|r| r.path == "/v2/").count();
    assert_eq!(pings, 3, "one ping per connection: {log:#?}");
    let blobs: std::collections::BTreeSet<u16> = log
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .map(|r| r.connection)
        .collect();
    assert_eq!(blobs.len(), 2, "{log:#?}");
    let accepted = registry.connections();
    for port in &blobs {
        let answered_before = accepted
            .iter()
            .find(|(p, _)| p == port)
            .map(|(_, n)| *n)
            .expect("the blob's connection was accepted");
        assert!(
            answered_before <= manifest,
            "connection {port} was opened after the manifest was in: {log:#?}"
        );
    }
    assert_default_archive(&work, &registry, &image, "warm", "v1");
}
