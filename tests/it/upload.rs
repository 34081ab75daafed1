//! The upload side of the registry layer, called as a library against the fake registry: blobs
//! skipped, mounted, sent whole or in chunks, resumed where the registry stands after a cut
//! connection, retried after 5xx and 429, sent whole to a registry that does not take chunks,
//! refused when the source is not the blob; manifests put and read back; the push scope with
//! token auth, and what a user is told when a push is not allowed.

use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docker_pull::digest::Digest;
use docker_pull::registry::auth::Secret;
use docker_pull::registry::{
    BlobPushed, Credentials, Registry, RegistryError, TransportOptions, UploadBody, transport,
};
use reqwest::Method;

use crate::support::image::{Flavor, SplitMix64, sha256_digest, small_image};
use crate::support::registry::{
    Action, Auth, Chunked, Config, FakeRegistry, Fault, Match, Mounts, PushGrant, TokenAuth,
};

const MIB: usize = 1024 * 1024;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(future)
}

/// A client for the fake, as `session.rs` builds one.
fn client(fake: &FakeRegistry, credentials: Option<Credentials>) -> Registry {
    client_with_timeout(fake, credentials, Duration::from_secs(10))
}

fn client_with_timeout(
    fake: &FakeRegistry,
    credentials: Option<Credentials>,
    timeout: Duration,
) -> Registry {
    let opts = TransportOptions {
        retries: 4,
        timeout,
        ..TransportOptions::default()
    };
    let clients = transport::build_client(&opts).expect("HTTP clients");
    Registry::new(&fake.addr(), &fake.addr(), clients, opts, credentials)
}

/// Bytes shared with the readers handed out.
#[derive(Clone)]
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A blob in memory that records the offsets it is opened at.
struct Source {
    data: Shared,
    opened: Mutex<Vec<u64>>,
}

impl Source {
    fn new(data: Vec<u8>) -> Arc<Source> {
        Arc::new(Source {
            data: Shared(Arc::new(data)),
            opened: Mutex::new(Vec::new()),
        })
    }

    fn opened(&self) -> Vec<u64> {
        self.opened.lock().unwrap().clone()
    }
}

impl UploadBody for Source {
    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        self.opened.lock().unwrap().push(offset);
        let mut cursor = Cursor::new(self.data.clone());
        cursor.set_position(offset);
        Ok(Box::new(cursor))
    }
}

/// `len` pseudo-random bytes and their digest.
fn blob(len: usize, seed: u64) -> (Vec<u8>, Digest) {
    let data = SplitMix64::new(seed).bytes(len);
    let digest: Digest = sha256_digest(&data).parse().expect("digest");
    (data, digest)
}

/// Pushes `data` as `digest` to `repo` with chunk size `chunk`.
fn push(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    source: &Arc<Source>,
    mount_from: &[String],
    chunk: usize,
) -> Result<BlobPushed, RegistryError> {
    let size = source.data.0.len() as u64;
    let body: Arc<dyn UploadBody> = source.clone();
    block_on(registry.push_blob(repo, digest, size, mount_from, body, chunk as u64))
}

/// Pushes `source` as the blob `digest` of `size` bytes, whatever the source holds.
fn push_as(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    size: usize,
    source: &Arc<Source>,
    chunk: usize,
) -> Result<BlobPushed, RegistryError> {
    let body: Arc<dyn UploadBody> = source.clone();
    block_on(registry.push_blob(repo, digest, size as u64, &[], body, chunk as u64))
}

fn requests(fake: &FakeRegistry, method: &str) -> Vec<crate::support::registry::Request> {
    fake.upload_requests()
        .into_iter()
        .filter(|r| r.method == method)
        .collect()
}

/// Where each `PATCH` started (the first number of its `Content-Range`).
fn patch_starts(fake: &FakeRegistry) -> Vec<u64> {
    requests(fake, "PATCH")
        .iter()
        .map(|r| {
            let range = r
                .content_range
                .as_deref()
                .expect("PATCH with Content-Range");
            range.split('-').next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn a_small_blob_goes_up_in_one_put() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let (data, digest) = blob(300 * 1024, 1);
    let source = Source::new(data.clone());
    let pushed = push(&registry, "team/app", &digest, &source, &[], MIB).expect("push");
    assert_eq!(
        pushed,
        BlobPushed::Uploaded {
            bytes_sent: data.len() as u64
        }
    );
    assert_eq!(
        fake.blob("team/app", &digest.to_string()),
        Some(data.clone())
    );
    assert_eq!(requests(&fake, "POST").len(), 1);
    assert!(
        requests(&fake, "PATCH").is_empty(),
        "no chunks for a small blob"
    );
    let puts = requests(&fake, "PUT");
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].status, 201);
    assert!(
        puts[0]
            .query
            .as_deref()
            .is_some_and(|q| q.contains(&format!("digest={}", digest).replace(':', "%3A"))),
        "{:?}",
        puts[0].query
    );
    assert_eq!(fake.uploaded_bytes(&digest.to_string()), data.len() as u64);
}

#[test]
fn a_large_blob_goes_up_in_chunks() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let (data, digest) = blob(40 * MIB, 2);
    let source = Source::new(data.clone());
    let pushed = push(&registry, "team/app", &digest, &source, &[], 16 * MIB).expect("push");
    assert_eq!(
        pushed,
        BlobPushed::Uploaded {
            bytes_sent: data.len() as u64
        }
    );
    assert!(fake.blob("team/app", &digest.to_string()) == Some(data));
    let ranges: Vec<_> = requests(&fake, "PATCH")
        .into_iter()
        .map(|r| (r.content_range.unwrap(), r.body_bytes))
        .collect();
    assert_eq!(
        ranges,
        [
            ("0-16777215".to_string(), 16 * MIB),
            ("16777216-33554431".to_string(), 16 * MIB),
            ("33554432-41943039".to_string(), 8 * MIB),
        ]
    );
    let puts = requests(&fake, "PUT");
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].body_bytes, 0, "the final PUT carries no bytes");
    assert_eq!(source.opened(), [0, 16 * MIB as u64, 32 * MIB as u64]);
}

#[test]
fn a_blob_the_registry_has_is_not_sent() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let (data, digest) = blob(100_000, 3);
    fake.put_blob_bytes("team/app", &digest.to_string(), data.clone());
    let source = Source::new(data);
    let pushed = push(&registry, "team/app", &digest, &source, &[], MIB).expect("push");
    assert_eq!(pushed, BlobPushed::Present);
    assert!(fake.upload_requests().is_empty());
    assert_eq!(fake.upload_bytes(), 0);
    assert!(source.opened().is_empty(), "the source is not even read");
}

#[test]
fn a_blob_in_another_repository_is_mounted() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let (data, digest) = blob(2 * MIB, 4);
    fake.put_blob_bytes("library/base", &digest.to_string(), data.clone());
    let source = Source::new(data.clone());
    let from = ["team/app".to_string(), "library/base".to_string()];
    let pushed = push(&registry, "team/app", &digest, &source, &from, MIB).expect("push");
    assert_eq!(pushed, BlobPushed::Mounted);
    assert_eq!(fake.blob("team/app", &digest.to_string()), Some(data));
    let posts = requests(&fake, "POST");
    assert_eq!(posts.len(), 1);
    let query = posts[0].query.as_deref().unwrap();
    assert!(query.contains("from=library%2Fbase"), "{query}");
    assert_eq!(posts[0].status, 201);
    assert_eq!(fake.upload_bytes(), 0, "no bytes sent for a mount");
    assert!(source.opened().is_empty());
}

#[test]
fn a_registry_that_does_not_mount_gets_the_upload_in_the_session_it_opened() {
    let fake = FakeRegistry::start(Config::default().mounts(Mounts::Refused));
    let registry = client(&fake, None);
    let (data, digest) = blob(3 * MIB, 5);
    fake.put_blob_bytes("library/base", &digest.to_string(), data.clone());
    let source = Source::new(data.clone());
    let from = ["library/base".to_string(), "library/other".to_string()];
    let pushed = push(&registry, "team/app", &digest, &source, &from, MIB).expect("push");
    assert_eq!(
        pushed,
        BlobPushed::Uploaded {
            bytes_sent: data.len() as u64
        }
    );
    assert_eq!(fake.blob("team/app", &digest.to_string()), Some(data));
    let posts = requests(&fake, "POST");
    assert_eq!(posts.len(), 1, "the session the mount opened is used");
    assert_eq!(posts[0].status, 202);
    assert_eq!(patch_starts(&fake), [0, MIB as u64, 2 * MIB as u64]);
}

#[test]
fn a_cut_chunk_resumes_where_the_registry_stands() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let size = 40 * MIB;
    let (data, digest) = blob(size, 6);
    // The first two PATCHes are cut after 12 MiB each; the fake keeps what arrived.
    fake.reset_uploads(Method::PATCH, 12 * MIB, 2);
    let source = Source::new(data.clone());
    let pushed = push(&registry, "team/app", &digest, &source, &[], 16 * MIB).expect("push");
    let BlobPushed::Uploaded { bytes_sent } = pushed else {
        panic!("{pushed:?}");
    };
    assert!(fake.blob("team/app", &digest.to_string()) == Some(data));
    assert_eq!(
        patch_starts(&fake),
        [0, 12 * MIB as u64, 24 * MIB as u64],
        "each resume starts at the byte after the Range the registry reported"
    );
    let gets = requests(&fake, "GET");
    assert_eq!(gets.len(), 2, "one status request per cut");
    assert_eq!(source.opened(), [0, 12 * MIB as u64, 24 * MIB as u64]);
    assert_eq!(fake.uploaded_bytes(&digest.to_string()), size as u64);
    assert!(
        bytes_sent <= size as u64 * 3 / 2,
        "{bytes_sent} bytes sent for a blob of {size}"
    );
    assert!(bytes_sent >= size as u64);
}

#[test]
fn a_registry_that_stops_taking_a_chunk_is_left_and_the_upload_resumed() {
    let fake = FakeRegistry::anonymous();
    let registry = client_with_timeout(&fake, None, Duration::from_secs(2));
    let (data, digest) = blob(12 * MIB, 15);
    fake.stall_uploads(Method::PATCH, 3 * MIB, 1);
    let source = Source::new(data.clone());
    let started = std::time::Instant::now();
    push(&registry, "team/app", &digest, &source, &[], 8 * MIB).expect("push");
    assert!(fake.blob("team/app", &digest.to_string()) == Some(data));
    assert_eq!(patch_starts(&fake), [0, 3 * MIB as u64, 11 * MIB as u64]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_session_that_is_gone_is_replaced() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let (data, digest) = blob(3 * MIB, 7);
    fake.reset_uploads(Method::PATCH, MIB / 2, 1);
    fake.add_fault(Fault::new(
        Match::uploads().method(Method::GET),
        Action::Respond {
            status: 404,
            headers: Vec::new(),
            body: r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"gone"}]}"#.into(),
        },
    ));
    let source = Source::new(data.clone());
    push(&registry, "team/app", &digest, &source, &[], MIB).expect("push");
    assert_eq!(fake.blob("team/app", &digest.to_string()), Some(data));
    assert_eq!(requests(&fake, "POST").len(), 2, "a new session");
    assert_eq!(patch_starts(&fake), [0, 0, MIB as u64, 2 * MIB as u64]);
}

#[test]
fn server_errors_and_rate_limits_on_uploads_are_retried() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let (data, digest) = blob(3 * MIB, 8);
    let fail = |method: Method, status: u16| {
        Fault::new(
            Match::uploads().method(method),
            Action::Respond {
                status,
                headers: Vec::new(),
                body: String::new(),
            },
        )
    };
    fake.add_fault(fail(Method::POST, 500));
    fake.add_fault(fail(Method::PATCH, 429).header("Retry-After", "0"));
    fake.add_fault(fail(Method::PUT, 503).times(2));
    let source = Source::new(data.clone());
    push(&registry, "team/app", &digest, &source, &[], MIB).expect("push");
    assert_eq!(fake.blob("team/app", &digest.to_string()), Some(data));
    let statuses =
        |method: &str| -> Vec<u16> { requests(&fake, method).iter().map(|r| r.status).collect() };
    assert_eq!(statuses("POST"), [500, 202]);
    assert_eq!(statuses("PATCH"), [429, 202, 202, 202]);
    assert_eq!(statuses("PUT"), [503, 503, 201]);
    assert_eq!(patch_starts(&fake), [0, 0, MIB as u64, 2 * MIB as u64]);
}

#[test]
fn a_registry_that_ignores_chunks_gets_the_blob_whole() {
    for chunked in [Chunked::Ignored, Chunked::Refused] {
        let fake = FakeRegistry::start(Config::default().chunked(chunked));
        let registry = client(&fake, None);
        let size = 3 * MIB;
        let (data, digest) = blob(size, 9);
        let source = Source::new(data.clone());
        let pushed = push(&registry, "team/app", &digest, &source, &[], MIB).expect("push");
        let BlobPushed::Uploaded { bytes_sent } = pushed else {
            panic!("{pushed:?}");
        };
        assert!(
            fake.blob("team/app", &digest.to_string()) == Some(data),
            "{chunked:?}"
        );
        assert_eq!(
            requests(&fake, "PATCH").len(),
            1,
            "{chunked:?}: one chunk tried"
        );
        let puts = requests(&fake, "PUT");
        assert_eq!(puts.len(), 1, "{chunked:?}");
        assert_eq!(
            puts[0].body_bytes, size,
            "{chunked:?}: the whole blob in the PUT"
        );
        assert!(
            bytes_sent <= (size + MIB) as u64,
            "{chunked:?}: {bytes_sent}"
        );
    }
}

/// A source whose bytes are not the blob it is pushed as.
fn corrupted(data: &[u8]) -> Arc<Source> {
    let mut bad = data.to_vec();
    let last = bad.len() - 1;
    bad[last / 2] ^= 0x40;
    Source::new(bad)
}

#[test]
fn a_source_that_is_not_the_blob_commits_nothing() {
    for (size, chunk) in [(200 * 1024, MIB), (3 * MIB + 5, MIB)] {
        let fake = FakeRegistry::anonymous();
        let registry = client(&fake, None);
        let (data, digest) = blob(size, 10);
        let err = push(
            &registry,
            "team/app",
            &digest,
            &corrupted(&data),
            &[],
            chunk,
        )
        .expect_err("a corrupted source must fail");
        assert!(
            matches!(err, RegistryError::UploadSource { .. }),
            "{size}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("sha256"), "{message}");
        assert!(message.contains("nothing was committed"), "{message}");
        assert!(message.contains("team/app"), "{message}");
        assert_eq!(fake.blob("team/app", &digest.to_string()), None, "{size}");
        assert!(
            requests(&fake, "PUT").iter().all(|r| r.status != 201),
            "{size}"
        );
        assert_eq!(fake.open_uploads(), 0, "{size}: the session is cancelled");
        if size < chunk {
            assert!(
                fake.upload_requests().is_empty(),
                "a small blob is checked before anything is sent"
            );
        }
        let short = Source::new(data[..size - 1].to_vec());
        let err = push_as(&registry, "team/app", &digest, size, &short, chunk).unwrap_err();
        assert!(err.to_string().contains("ended after"), "{size}: {err}");
        assert_eq!(fake.blob("team/app", &digest.to_string()), None, "{size}");
    }
}

#[test]
fn a_manifest_put_reads_back_byte_for_byte() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let image = small_image(Flavor::Oci, "pushed");
    let manifest = &image.manifest;
    // Without its blobs the registry refuses it.
    let err =
        block_on(registry.put_manifest("team/app", "v1", &manifest.media_type, &manifest.data))
            .unwrap_err();
    assert!(err.to_string().contains("MANIFEST_BLOB_UNKNOWN"), "{err}");
    for blob in image.blobs() {
        let digest: Digest = blob.digest.parse().unwrap();
        let source = Source::new(blob.data.clone());
        push(&registry, "team/app", &digest, &source, &[], MIB).expect("blob");
    }
    let digest =
        block_on(registry.put_manifest("team/app", "v1", &manifest.media_type, &manifest.data))
            .expect("put manifest");
    assert_eq!(digest.to_string(), manifest.digest);
    assert!(block_on(registry.has_manifest("team/app", &digest)).unwrap());
    let got = block_on(registry.get_manifest("team/app", "v1")).expect("get it back");
    assert_eq!(got.bytes, manifest.data);
    assert_eq!(got.digest, digest);
    assert_eq!(
        got.content_type.as_deref(),
        Some(manifest.media_type.as_str())
    );
    let by_digest = block_on(registry.put_manifest(
        "team/app",
        &digest.to_string(),
        &manifest.media_type,
        &manifest.data,
    ))
    .expect("put by digest");
    assert_eq!(by_digest, digest);
    let other: Digest = sha256_digest(b"other").parse().unwrap();
    assert!(!block_on(registry.has_manifest("team/app", &other)).unwrap());
}

#[test]
fn a_registry_that_names_another_digest_for_a_manifest_is_an_error() {
    let fake = FakeRegistry::anonymous();
    let registry = client(&fake, None);
    let wrong = sha256_digest(b"not the manifest");
    fake.add_fault(
        Fault::new(
            Match::manifests().method(Method::PUT),
            Action::Respond {
                status: 201,
                headers: Vec::new(),
                body: String::new(),
            },
        )
        .header("Docker-Content-Digest", &wrong),
    );
    let err = block_on(registry.put_manifest(
        "team/app",
        "v1",
        "application/vnd.oci.image.index.v1+json",
        br#"{"schemaVersion":2,"manifests":[]}"#,
    ))
    .unwrap_err();
    assert!(matches!(err, RegistryError::Mismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&wrong), "{err}");
}

#[test]
fn pushing_with_token_auth_needs_credentials_and_the_push_scope() {
    let fake = FakeRegistry::start(Config::with_auth(Auth::bearer("alice", "s3cret")));
    let (data, digest) = blob(100_000, 11);
    let source = Source::new(data.clone());

    let anonymous = client(&fake, None);
    let err = push(&anonymous, "team/app", &digest, &source, &[], MIB).unwrap_err();
    assert!(
        matches!(err, RegistryError::PushAuthRequired { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("log in to push"), "{message}");
    assert!(
        message.contains(&fake.addr()) && message.contains("team/app"),
        "{message}"
    );
    assert_eq!(fake.blob("team/app", &digest.to_string()), None);

    let alice = client(
        &fake,
        Some(Credentials::password("alice", "s3cret", "-u/-p")),
    );
    let pushed = push(&alice, "team/app", &digest, &source, &[], MIB).expect("push");
    assert!(matches!(pushed, BlobPushed::Uploaded { .. }));
    assert_eq!(fake.blob("team/app", &digest.to_string()), Some(data));
    let granted: Vec<_> = fake.token_log().into_iter().filter(|t| t.ok()).collect();
    assert!(
        granted
            .iter()
            .all(|t| t.has_scope("repository:team/app:pull,push")),
        "{granted:?}"
    );
    assert_eq!(
        granted.len(),
        1,
        "one token for the whole push: {granted:?}"
    );
}

#[test]
fn pushing_with_an_identity_token_works() {
    let fake = FakeRegistry::start(
        Config::with_auth(Auth::bearer("alice", "s3cret")).refresh_token("r3fresh"),
    );
    let (data, digest) = blob(100_000, 12);
    let credentials = Credentials {
        username: "alice".into(),
        secret: Secret::IdentityToken("r3fresh".into()),
        source: "config.json".into(),
    };
    let registry = client(&fake, Some(credentials));
    push(
        &registry,
        "team/app",
        &digest,
        &Source::new(data.clone()),
        &[],
        MIB,
    )
    .expect("push");
    assert_eq!(fake.blob("team/app", &digest.to_string()), Some(data));
    assert!(
        fake.token_log()
            .iter()
            .any(|t| t.auth == TokenAuth::RefreshToken("r3fresh".into())
                && t.has_scope("repository:team/app:pull,push"))
    );
}

#[test]
fn an_account_that_may_only_pull_is_told_so() {
    let (data, digest) = blob(100_000, 13);
    let source = Source::new(data);
    // Token auth: the token server grants pull only; the registry answers 401 insufficient_scope.
    let fake = FakeRegistry::start(
        Config::with_auth(Auth::bearer("alice", "s3cret")).push(PushGrant::Nobody),
    );
    let alice = client(
        &fake,
        Some(Credentials::password("alice", "s3cret", "-u/-p")),
    );
    let err = push(&alice, "team/app", &digest, &source, &[], MIB).unwrap_err();
    assert!(matches!(err, RegistryError::PushDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("may pull but not push"), "{err}");

    // Basic auth: a 403.
    let fake =
        FakeRegistry::start(Config::with_auth(Auth::basic("bob", "pw")).push(PushGrant::Nobody));
    let bob = client(&fake, Some(Credentials::password("bob", "pw", "-u/-p")));
    let err = push(&bob, "team/app", &digest, &source, &[], MIB).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, RegistryError::PushDenied { .. }), "{err:?}");
    assert!(message.contains("may pull but not push"), "{message}");
    assert!(message.contains("403"), "{message}");
    assert!(
        message.contains(&fake.addr()) && message.contains("team/app"),
        "{message}"
    );

    // A 403 on the start of an upload, whatever the registry.
    let fake = FakeRegistry::start(Config::with_auth(Auth::basic("bob", "pw")));
    fake.add_fault(Fault::new(
        Match::uploads().method(Method::POST),
        Action::Respond {
            status: 403,
            headers: Vec::new(),
            body: r#"{"errors":[{"code":"DENIED","message":"no push for you"}]}"#.into(),
        },
    ));
    let bob = client(&fake, Some(Credentials::password("bob", "pw", "-u/-p")));
    let err = push(&bob, "team/app", &digest, &source, &[], MIB).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("may pull but not push"), "{message}");
    assert!(message.contains("DENIED no push for you"), "{message}");
}

#[test]
fn wrong_credentials_for_a_push_are_rejected_as_such() {
    let fake = FakeRegistry::start(Config::with_auth(Auth::basic("bob", "pw")));
    let (data, digest) = blob(1000, 14);
    let mallory = client(&fake, Some(Credentials::password("bob", "nope", "-u/-p")));
    let err = push(&mallory, "team/app", &digest, &Source::new(data), &[], MIB).unwrap_err();
    assert!(matches!(err, RegistryError::AuthRejected { .. }), "{err:?}");
}
