//! A blob is written once: into its place in the archive being written, from the buffer it
//! arrived in, and (unless `--no-cache` pulls a single image) into the cache from the same
//! buffer. With `--no-cache` and one image the cache gets none of the layer's bytes. Whatever
//! way a blob got into the archive, the archive's bytes are the same, and a blob damaged in
//! transit or fetched in ranged chunks ends right in its place.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Archive, Expected, Work, assert_cache_sound, assert_docker_archive, files_in};
use crate::support::image::{Flavor, ImageBuilder, LayerBuilder, SplitMix64, random_image};
use crate::support::registry::{BodyFault, FakeRegistry, Throttle};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, with its size.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in read.filter_map(Result::ok) {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            found.extend(files_under(&entry.path()));
        } else {
            found.push((entry.path(), meta.len()));
        }
    }
    found
}

/// `docker-pull --no-cache -q -o OUT ARGS` with `TMPDIR` in the scratch area (where the
/// temporary cache goes), as a running process.
fn spawn_no_cache(work: &Work, out: &Path, args: &[&str]) -> crate::common::Running {
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut all = vec!["--no-cache", "-q", "-o", out.to_str().unwrap()];
    all.extend_from_slice(args);
    work.spawn_env(&all, &[("TMPDIR", tmp.to_str().unwrap())], &[], None)
}

#[test]
fn with_no_cache_a_layer_goes_into_the_archive_only() {
    let registry = FakeRegistry::anonymous();
    let big = SplitMix64::new(81).bytes(400_000);
    let image = ImageBuilder::new(Flavor::Docker)
        .layer(LayerBuilder::new().file("big.bin", big, 0o644))
        .layer(LayerBuilder::new().file("slow.txt", b"slow\n".repeat(60), 0o644))
        .build();
    registry.push_image("placed", "v1", &image);
    let (fast, slow) = (&image.layers[0], &image.layers[1]);
    registry.blob_fault(
        &slow.digest,
        BodyFault::Drip {
            every: Duration::from_millis(3_000 / slow.data.len() as u64 + 1),
        },
        1,
    );
    let work = Work::new().with_timeout(Duration::from_secs(60));
    let out = work.path("out.tar");
    let mut running = spawn_no_cache(&work, &out, &[&registry.reference("placed", "v1")]);

    // Once the fast layer is in the temporary archive (the slow one still arriving), no file
    // of the temporary cache holds it, nor anything of its size.
    let deadline = Instant::now() + Duration::from_secs(30);
    let cache_files = loop {
        let partial = files_in(&work.path(""))
            .into_iter()
            .find(|n| n.ends_with(".partial"))
            .and_then(|n| std::fs::read(work.path(&n)).ok());
        if partial.is_some_and(|bytes| contains(&bytes, &fast.data)) && !running.finished() {
            break Some(files_under(&work.path("tmp")));
        }
        if running.finished() || Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    running.wait().success();
    let cache_files =
        cache_files.expect("the fast layer was in the archive while the slow one downloaded");
    assert!(
        cache_files
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains("docker-pull-")),
        "the temporary cache is where TMPDIR says: {cache_files:?}"
    );
    for (path, len) in &cache_files {
        assert!(
            *len < fast.data.len() as u64,
            "{} holds {len} bytes: the layer went into the cache too",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            name != fast.hex() && name != format!("{}.data", fast.hex()),
            "{} is the layer in the cache",
            path.display()
        );
    }
    assert_docker_archive(
        &Archive::open(&out),
        &[Expected::tagged(&image, &registry.addr(), "placed", "v1")],
    );
    assert!(
        files_under(&work.path("tmp")).is_empty(),
        "the temporary cache is gone"
    );
}

#[test]
fn the_archive_is_the_same_however_its_blobs_got_there() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 3, 150_000, 82);
    registry.push_image("same", "v1", &image);
    let reference = registry.reference("same", "v1");
    let work = Work::new();
    let cold = work.path("cold.tar");
    let warm = work.path("warm.tar");
    let direct = work.path("direct.tar");
    // Cold: into the cache and the archive at once; warm: copied from the cache; --no-cache:
    // into the archive only.
    work.pull_to(&["-q", "-o", cold.to_str().unwrap(), &reference])
        .success();
    let gets = registry.total_blob_gets();
    work.pull_to(&["-q", "-o", warm.to_str().unwrap(), &reference])
        .success();
    assert_eq!(
        registry.total_blob_gets(),
        gets,
        "the warm pull downloads nothing"
    );
    spawn_no_cache(&work, &direct, &[&reference])
        .wait()
        .success();
    assert_eq!(
        registry.total_blob_gets(),
        gets + image.layers.len() + 1,
        "--no-cache downloads every blob once"
    );
    let cold = std::fs::read(&cold).unwrap();
    assert!(
        cold == std::fs::read(&warm).unwrap(),
        "cold and warm archives differ"
    );
    assert!(
        cold == std::fs::read(&direct).unwrap(),
        "the --no-cache archive differs"
    );
    assert_docker_archive(
        &Archive::open(&work.path("cold.tar")),
        &[Expected::tagged(&image, &registry.addr(), "same", "v1")],
    );
    // The cold pull left every blob verified in the cache.
    assert_cache_sound(&work.cache());
    for layer in &image.layers {
        assert!(
            work.cache()
                .join("blobs/sha256")
                .join(layer.hex())
                .is_file()
        );
    }
}

#[test]
fn a_layer_damaged_in_transit_is_written_again_in_its_place() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 2, 100_000, 83);
    registry.push_image("damaged", "v1", &image);
    let layer = &image.layers[1];
    let mut bad = layer.data.clone();
    bad[50_000] ^= 0xff;
    registry.add_fault(crate::support::registry::Fault::new(
        crate::support::registry::Match::blob(&layer.digest),
        crate::support::registry::Action::ServeBytes(bad),
    ));
    let work = Work::new();
    for cached in [false, true] {
        let out = work.path(&format!("out-{cached}.tar"));
        let run = match cached {
            true => work.pull_to(&[
                "-q",
                "-o",
                out.to_str().unwrap(),
                &registry.reference("damaged", "v1"),
            ]),
            false => spawn_no_cache(&work, &out, &[&registry.reference("damaged", "v1")]).wait(),
        };
        run.success();
        assert_docker_archive(
            &Archive::open(&out),
            &[Expected::tagged(&image, &registry.addr(), "damaged", "v1")],
        );
        // Re-arm the fault for the second round.
        registry.add_fault(crate::support::registry::Fault::new(
            crate::support::registry::Match::blob(&layer.digest),
            crate::support::registry::Action::ServeBytes({
                let mut bad = layer.data.clone();
                bad[10] ^= 1;
                bad
            }),
        ));
    }
    assert!(
        registry.blob_gets(&layer.digest) >= 4,
        "each round fetched the layer twice"
    );
    assert_cache_sound(&work.cache());
}

#[test]
fn ranged_chunks_with_no_cache_land_in_their_places() {
    // Slow per connection, so parallel chunks join and some finish ahead of the hashed
    // prefix (hashed back from the archive, there being no cache file).
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 640 * 1024, 84);
    registry.push_image("big", "v1", &image);
    registry.throttle_blobs(Some(Throttle {
        chunk: 8 * 1024,
        delay: Duration::from_millis(8),
    }));
    let work = Work::new().with_timeout(Duration::from_secs(90));
    let out = work.path("big.tar");
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let reference = registry.reference("big", "v1");
    work.run_env(
        &[
            "--no-cache",
            "-q",
            "-j",
            "4",
            "-o",
            out.to_str().unwrap(),
            &reference,
        ],
        &[
            ("TMPDIR", tmp.to_str().unwrap()),
            ("DOCKER_PULL_CHUNK_THRESHOLD", "100K"),
            ("DOCKER_PULL_CHUNK_SIZE", "64K"),
        ],
        &[],
        None,
    )
    .success();
    assert!(
        registry.max_blobs_in_flight() >= 2,
        "parallel chunks: {} at most",
        registry.max_blobs_in_flight()
    );
    assert_eq!(
        registry.blob_bytes_sent(),
        image.blob_bytes(),
        "every byte sent once"
    );
    assert_docker_archive(
        &Archive::open(&out),
        &[Expected::tagged(&image, &registry.addr(), "big", "v1")],
    );
}
