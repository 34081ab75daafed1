//! Checks of the test support itself: the fake registry speaks the distribution API the way the
//! other tests assume, and the image builder is deterministic. If these fail, the binary's test
//! results mean nothing.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::image::{
    Flavor, IN_TOTO, LayerBuilder, OCI_INDEX, busybox_image, gunzip, index, random_image,
    sha256_digest, small_image,
};
use crate::support::registry::{Auth, Config, FakeRegistry, Fault};

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(future)
}

#[test]
fn builder_is_deterministic() {
    assert_eq!(
        random_image(Flavor::Docker, 2, 1000, 5).manifest,
        random_image(Flavor::Docker, 2, 1000, 5).manifest
    );
    assert_ne!(
        random_image(Flavor::Docker, 2, 1000, 5).manifest,
        random_image(Flavor::Docker, 2, 1000, 6).manifest
    );
    assert_eq!(
        small_image(Flavor::Oci, "x").manifest.digest,
        small_image(Flavor::Oci, "x").manifest.digest
    );
    let image = busybox_image(Flavor::Oci, b"not really busybox");
    let config: Value = serde_json::from_slice(&image.config.data).expect("config json");
    assert_eq!(config["rootfs"]["diff_ids"][0], image.diff_ids[0].as_str());
    assert_eq!(config["architecture"], "amd64");
    let tar = gunzip(&image.layers[0].data);
    assert_eq!(
        sha256_digest(&tar),
        image.diff_ids[0],
        "diff_id is the digest of the uncompressed tar"
    );
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut seen = Vec::new();
    for entry in archive.entries().expect("layer tar") {
        let entry = entry.expect("entry");
        let header = entry.header();
        assert_eq!(header.mtime().expect("mtime"), 0);
        seen.push((
            entry.path().expect("path").to_string_lossy().into_owned(),
            header.mode().expect("mode") & 0o7777,
            entry
                .link_name()
                .expect("link")
                .map(|l| l.to_string_lossy().into_owned()),
        ));
    }
    assert!(
        seen.contains(&("bin/busybox".into(), 0o755, None)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("bin/sh".into(), 0o777, Some("busybox".into()))),
        "{seen:?}"
    );
    let random = random_image(Flavor::Oci, 1, 100_000, 1);
    assert!(
        random.layers[0].size() > 100_000,
        "random data must not compress: {}",
        random.layers[0].size()
    );
    let (plain, diff) = LayerBuilder::new()
        .file("a", b"a".to_vec(), 0o644)
        .build_uncompressed(Flavor::Oci);
    assert_eq!(plain.digest, diff);
}

#[test]
fn index_carries_platforms_and_attestation() {
    let amd64 = small_image(Flavor::Oci, "a");
    let idx = index(Flavor::Oci, vec![amd64.clone()], true);
    assert_eq!(idx.index.media_type, OCI_INDEX);
    let value: Value = serde_json::from_slice(&idx.index.data).expect("index json");
    let manifests = value["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0]["platform"]["architecture"], "amd64");
    assert_eq!(manifests[0]["digest"], amd64.manifest.digest.as_str());
    assert_eq!(manifests[1]["platform"]["os"], "unknown");
    assert_eq!(
        manifests[1]["annotations"]["vnd.docker.reference.digest"],
        amd64.manifest.digest.as_str()
    );
    assert_eq!(idx.extra_manifests[0].layers[0].media_type, IN_TOTO);
}

#[test]
fn serves_manifests_blobs_ranges_and_errors() {
    let registry = FakeRegistry::anonymous();
    let image = random_image(Flavor::Docker, 1, 1000, 9);
    registry.push_image("lib/app", "v1", &image);
    let base = format!("http://{}", registry.addr());
    let layer = image.layers[0].clone();
    block_on(async {
        let client = reqwest::Client::new();
        let r = client
            .get(format!("{base}/v2/lib/app/manifests/v1"))
            .send()
            .await
            .expect("GET manifest");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-type"],
            image.manifest.media_type.as_str()
        );
        assert_eq!(
            r.headers()["docker-content-digest"],
            image.manifest.digest.as_str()
        );
        assert_eq!(
            r.bytes().await.expect("body").as_ref(),
            image.manifest.data.as_slice()
        );

        let r = client
            .head(format!(
                "{base}/v2/lib/app/manifests/{}",
                image.manifest.digest
            ))
            .send()
            .await
            .expect("HEAD");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-length"],
            image.manifest.size().to_string().as_str()
        );

        let url = format!("{base}/v2/lib/app/blobs/{}", layer.digest);
        let r = client.head(&url).send().await.expect("HEAD blob");
        assert_eq!(
            r.headers()["content-length"],
            layer.size().to_string().as_str()
        );
        let r = client
            .get(&url)
            .header("Range", "bytes=10-")
            .send()
            .await
            .expect("ranged GET");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes 10-{}/{}", layer.size() - 1, layer.size()).as_str()
        );
        assert_eq!(r.bytes().await.expect("body").as_ref(), &layer.data[10..]);
        let r = client
            .get(&url)
            .header("Range", "bytes=2-4")
            .send()
            .await
            .expect("ranged GET");
        assert_eq!(r.bytes().await.expect("body").as_ref(), &layer.data[2..5]);
        let r = client
            .get(&url)
            .header("Range", format!("bytes={}-", layer.size()))
            .send()
            .await
            .expect("ranged GET");
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

        for (path, code) in [
            ("/v2/nope/manifests/v1", "NAME_UNKNOWN"),
            ("/v2/lib/app/manifests/v2", "MANIFEST_UNKNOWN"),
            ("/v2/lib/app/blobs/sha256:00", "BLOB_UNKNOWN"),
        ] {
            let r = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("GET");
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            let body: Value = r.json().await.expect("error envelope");
            assert_eq!(body["errors"][0]["code"], code, "{path}");
        }
    });
    assert_eq!(
        registry.blob_gets(&layer.digest),
        3,
        "HEADs are not counted"
    );
    assert_eq!(registry.blob_bytes_sent(), layer.size() - 10 + 3);
    registry.inject(
        Fault::status("/v2/", 503)
            .times(1)
            .header("Retry-After", "7"),
    );
    block_on(async {
        let r = reqwest::get(format!("{base}/v2/")).await.expect("GET /v2/");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(
            reqwest::get(format!("{base}/v2/"))
                .await
                .expect("GET /v2/")
                .status(),
            StatusCode::OK
        );
    });
}

#[test]
fn bearer_flow() {
    let registry = FakeRegistry::start(Config::with_auth(Auth::bearer("u", "p")));
    let image = small_image(Flavor::Oci, "t");
    registry.push_image("a/b", "v1", &image);
    let base = format!("http://{}", registry.addr());
    block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{base}/v2/a/b/manifests/v1");
        let r = client.get(&url).send().await.expect("GET");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert_eq!(
            challenge,
            format!(
                "Bearer realm=\"{base}/token\",service=\"fake-registry\",scope=\"repository:a/b:pull\""
            )
        );
        let token_url = format!("{base}/token?service=fake-registry&scope=repository:a/b:pull");
        let r = client
            .get(&token_url)
            .basic_auth("u", Some("wrong"))
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = client
            .get(&token_url)
            .basic_auth("u", Some("p"))
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), StatusCode::OK);
        let token: Value = r.json().await.expect("token json");
        let token = token["token"].as_str().expect("token string").to_string();
        let r = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::OK);
        let other = client
            .get(format!("{base}/v2/other/manifests/v1"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert_eq!(
            other.status(),
            StatusCode::UNAUTHORIZED,
            "a token is scoped to its repository"
        );
    });
    assert_eq!(registry.token_requests(), 2);
}

#[test]
fn takes_uploads_as_distribution_does() {
    let registry = FakeRegistry::anonymous();
    let image = small_image(Flavor::Oci, "uploaded");
    let base = format!("http://{}", registry.addr());
    let layer = image.layers[0].clone();
    let (head, tail) = layer.data.split_at(layer.data.len() / 2);
    block_on(async {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{base}/v2/lib/app/blobs/uploads/"))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(r.headers()["range"], "0-0");
        assert!(r.headers().contains_key("docker-upload-uuid"));
        let location = format!("{base}{}", r.headers()["location"].to_str().unwrap());
        let patch = |range: String, body: Vec<u8>| {
            client
                .patch(&location)
                .header("content-range", range)
                .body(body)
                .send()
        };
        let r = patch(format!("5-{}", 4 + head.len()), head.to_vec())
            .await
            .expect("PATCH");
        assert_eq!(
            r.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "not where it stands"
        );
        let r = patch(format!("0-{}", head.len() - 1), head.to_vec())
            .await
            .expect("PATCH");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(
            r.headers()["range"],
            format!("0-{}", head.len() - 1).as_str()
        );
        let r = client.get(&location).send().await.expect("GET status");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            r.headers()["range"],
            format!("0-{}", head.len() - 1).as_str()
        );
        let r = client
            .put(format!("{location}?digest={}", sha256_digest(b"other")))
            .body(tail.to_vec())
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.text().await.unwrap().contains("DIGEST_INVALID"));
        let r = client.get(&location).send().await.expect("GET status");
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "a refused session is gone"
        );

        let r = client
            .post(format!(
                "{base}/v2/lib/app/blobs/uploads/?digest={}",
                layer.digest
            ))
            .body(layer.data.clone())
            .send()
            .await
            .expect("POST whole");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["docker-content-digest"], layer.digest.as_str());
        let manifest_url = format!("{base}/v2/lib/app/manifests/v1");
        let put_manifest = || {
            client
                .put(&manifest_url)
                .header("content-type", image.manifest.media_type.as_str())
                .body(image.manifest.data.clone())
                .send()
        };
        let r = put_manifest().await.expect("PUT manifest");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the config is missing");
        assert!(r.text().await.unwrap().contains("MANIFEST_BLOB_UNKNOWN"));
        let r = client
            .post(format!(
                "{base}/v2/lib/app/blobs/uploads/?mount={}&from=lib/base",
                image.config.digest
            ))
            .send()
            .await
            .expect("POST mount");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "nothing to mount from");
    });
    registry.put_blob("lib/base", &image.config);
    block_on(async {
        let client = reqwest::Client::new();
        let r = client
            .post(format!(
                "{base}/v2/lib/app/blobs/uploads/?mount={}&from=lib/base",
                image.config.digest
            ))
            .send()
            .await
            .expect("POST mount");
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = client
            .put(format!("{base}/v2/lib/app/manifests/v1"))
            .header("content-type", image.manifest.media_type.as_str())
            .body(image.manifest.data.clone())
            .send()
            .await
            .expect("PUT manifest");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            r.headers()["docker-content-digest"],
            image.manifest.digest.as_str()
        );
    });
    assert_eq!(
        registry.manifest("lib/app", "v1").map(|(_, bytes)| bytes),
        Some(image.manifest.data.clone())
    );
}
