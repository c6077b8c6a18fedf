//! Pull, push and layout tests against a real loopback `docker-registry`, skopeo, and in-test
//! HTTP servers (token auth, corrupt blobs, redirects).

#![allow(clippy::unwrap_used)]

mod common;

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use common::{Registry, SeenRequest, TestServer, fixture, respond, skopeo};
use dagr_registry::image::{OCI_INDEX, OCI_MANIFEST, REF_NAME_ANNOTATION};
use dagr_registry::layout::{self, LayoutError};
use dagr_registry::{
    Anonymous, BlobPush, ExportEntry, Platform, PullError, Reference, RegistryClient,
    RegistryConfig, StaticCredentials, TransportError,
};
use dagr_snapshot::{ContentError, ContentStore, Digest};

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig::default(), Arc::new(Anonymous))
}

fn new_store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    (dir, store)
}

fn skopeo_push_fixture(registry: &Registry, repo: &str) {
    let f = fixture();
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", f.layout.display()),
        &format!("docker://{}/{repo}:latest", registry.addr),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_an_image_skopeo_pushed() {
    let f = fixture();
    let registry = Registry::start();
    skopeo_push_fixture(&registry, "library/busybox");
    let (_dir, store) = new_store();
    let reference = Reference::parse(&format!("{}/library/busybox", registry.addr)).unwrap();

    let image = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
    assert_eq!(image.config_digest, f.config_digest);
    assert_eq!(image.index_digest, None);
    assert_eq!(image.layers.len(), 1);
    assert_eq!(
        image.layers[0].digest().to_string(),
        f.layer_digest.to_string()
    );
    assert_eq!(image.config.architecture().to_string(), "amd64");
    assert_eq!(
        image.config.rootfs().diff_ids().len(),
        1,
        "fixture has one diff id"
    );
    assert_eq!(
        image
            .config
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap(),
        &vec!["/bin/sh".to_string()]
    );
    assert_eq!(store.read_bytes(&f.layer_digest).await.unwrap(), f.layer);
    assert_eq!(
        store.read_bytes(&f.manifest_digest).await.unwrap(),
        f.manifest
    );

    // A second pull finds every blob present; pinning the digest resolves the same image.
    let pinned = reference.with_digest(f.manifest_digest.clone());
    let again = client()
        .pull(&pinned, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(again.manifest_digest, f.manifest_digest);

    // Two pulls of the same image into one empty store at once both succeed.
    let (_dir2, fresh) = new_store();
    let c = client();
    let platform = Platform::default();
    let (a, b) = tokio::join!(
        c.pull(&reference, &platform, &fresh),
        c.pull(&reference, &platform, &fresh)
    );
    assert_eq!(a.unwrap().manifest_digest, f.manifest_digest);
    assert_eq!(b.unwrap().manifest_digest, f.manifest_digest);
    assert_eq!(fresh.read_bytes(&f.layer_digest).await.unwrap(), f.layer);

    // A missing tag is reported as such.
    let missing = reference.with_tag("nope").unwrap();
    let err = client()
        .pull(&missing, &Platform::default(), &store)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::ManifestNotFound { .. }), "{err}");
}

/// Writes a layout whose `multi` entry is an index of an amd64 and an arm64/v8 manifest.
fn write_multi_platform_layout(dir: &std::path::Path) -> (Digest, Digest, Digest) {
    let f = fixture();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::of_bytes(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    put(&f.layer);
    put(&f.config);
    let amd64 = put(&f.manifest);
    let config_arm = String::from_utf8(f.config.clone()).unwrap().replace(
        "\"architecture\":\"amd64\"",
        "\"architecture\":\"arm64\",\"variant\":\"v8\"",
    );
    let config_arm_digest = put(config_arm.as_bytes());
    let manifest_arm = String::from_utf8(f.manifest.clone()).unwrap().replace(
        &format!(
            "\"digest\":\"{}\",\"size\":{}",
            f.config_digest,
            f.config.len()
        ),
        &format!(
            "\"digest\":\"{config_arm_digest}\",\"size\":{}",
            config_arm.len()
        ),
    );
    let arm64 = put(manifest_arm.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64.to_string(), "size": f.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64.to_string(), "size": manifest_arm.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ]
    })
    .to_string();
    let index_digest = put(index.as_bytes());
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_INDEX, "digest": index_digest.to_string(), "size": index.len(),
                       "annotations": {REF_NAME_ANNOTATION: "multi"}}]
    });
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (index_digest, amd64, arm64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_the_requested_platform_from_an_index() {
    let registry = Registry::start();
    let layout_dir = tempfile::tempdir().unwrap();
    let (index_digest, amd64, arm64) = write_multi_platform_layout(layout_dir.path());
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout_dir.path().display()),
        &format!("docker://{}/multi/busybox:latest", registry.addr),
    ]);
    let reference = Reference::parse(&format!("{}/multi/busybox:latest", registry.addr)).unwrap();
    let (_dir, store) = new_store();

    let image = client()
        .pull(
            &reference,
            &Platform::from_str("linux/arm64").unwrap(),
            &store,
        )
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, arm64);
    assert_eq!(image.index_digest.as_ref(), Some(&index_digest));
    assert_eq!(image.config.architecture().to_string(), "arm64");
    assert_eq!(image.config.variant().as_deref(), Some("v8"));

    let image = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, amd64);

    let err = client()
        .pull(
            &reference,
            &Platform::from_str("linux/s390x").unwrap(),
            &store,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no manifest for platform linux/s390x"),
        "{err}"
    );

    // Importing the same layout chooses the same way.
    let (_dir2, store2) = new_store();
    let imported = layout::import_layout(
        &store2,
        layout_dir.path(),
        Some("multi"),
        &Platform::from_str("linux/arm64/v8").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(imported.manifest_digest, arm64);

    // Pushing the index (all platforms are in store2 after importing both) round-trips.
    layout::import_layout(
        &store2,
        layout_dir.path(),
        Some("multi"),
        &Platform::default(),
    )
    .await
    .unwrap();
    let target = Reference::parse(&format!("{}/ours/multi:v1", registry.addr)).unwrap();
    let pushed = client()
        .push(&store2, &index_digest, &target, None)
        .await
        .unwrap();
    assert_eq!(pushed, index_digest);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert_eq!(Digest::of_bytes(&raw), index_digest);

    // Exporting the index writes every platform; skopeo reads it back whole.
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("multi.tar");
    layout::export_archive(
        &store2,
        &archive,
        &[ExportEntry {
            digest: index_digest.clone(),
            ref_name: Some("multi".into()),
            image_name: None,
        }],
    )
    .await
    .unwrap();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:multi", archive.display()),
    ]);
    assert_eq!(Digest::of_bytes(&raw), index_digest);
    let copied = out.path().join("copied");
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        &format!("oci-archive:{}:multi", archive.display()),
        &format!("oci:{}:multi", copied.display()),
    ]);
    for digest in [&amd64, &arm64] {
        assert!(copied.join("blobs/sha256").join(digest.hex()).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_what_skopeo_can_read_monolithic_chunked_and_mounted() {
    let f = fixture();
    let registry = Registry::start();
    let (_dir, store) = new_store();
    let image = layout::import_layout(&store, &f.layout, Some("latest"), &Platform::default())
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);

    // Monolithic upload.
    let first = Reference::parse(&format!("{}/ours/busybox:v1", registry.addr)).unwrap();
    let digest = client()
        .push(&store, &image.manifest_digest, &first, None)
        .await
        .unwrap();
    assert_eq!(digest, f.manifest_digest);
    let inspect: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{first}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], f.manifest_digest.to_string());
    assert_eq!(inspect["Layers"][0], f.layer_digest.to_string());
    assert_eq!(inspect["Architecture"], "amd64");

    // Chunked upload (PATCH) of the ~1 MB layer in 100 KB pieces, to another repository.
    let second = Reference::parse(&format!("{}/chunked/busybox:v2", registry.addr)).unwrap();
    let chunked = client().with_chunk_size(100 * 1024);
    assert_eq!(
        chunked
            .push_blob(&store, &second, &f.layer_digest, None)
            .await
            .unwrap(),
        BlobPush::Uploaded
    );
    assert_eq!(
        chunked
            .push_blob(&store, &second, &f.layer_digest, None)
            .await
            .unwrap(),
        BlobPush::AlreadyPresent
    );
    chunked
        .push(&store, &image.manifest_digest, &second, None)
        .await
        .unwrap();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{second}"),
    ]);
    assert_eq!(raw, f.manifest);
    // skopeo can copy the chunk-pushed image out, which reads and verifies every blob.
    let copy_dir = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{second}"),
        &format!("oci:{}:x", copy_dir.path().display()),
    ]);
    assert_eq!(
        std::fs::read(
            copy_dir
                .path()
                .join("blobs/sha256")
                .join(f.layer_digest.hex())
        )
        .unwrap(),
        f.layer
    );

    // Cross-repository mount.
    let third = Reference::parse(&format!("{}/mounted/busybox:v3", registry.addr)).unwrap();
    assert_eq!(
        client()
            .push_blob(&store, &third, &f.layer_digest, Some("ours/busybox"))
            .await
            .unwrap(),
        BlobPush::Mounted
    );
    client()
        .push(&store, &image.manifest_digest, &third, Some("ours/busybox"))
        .await
        .unwrap();
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{third}"),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_layouts_and_archives_that_skopeo_reads() {
    let f = fixture();
    let (_dir, store) = new_store();
    let image = layout::import_archive(&store, &f.archive, Some("latest"), &Platform::default())
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
    assert_eq!(image.layers[0].size(), f.layer.len() as u64);

    let out = tempfile::tempdir().unwrap();
    let entries = [ExportEntry {
        digest: image.manifest_digest.clone(),
        ref_name: Some("v1".into()),
        image_name: Some("example.test/exported:v1".into()),
    }];
    let archive = out.path().join("image.tar");
    layout::export_archive(&store, &archive, &entries)
        .await
        .unwrap();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:v1", archive.display()),
    ]);
    assert_eq!(Digest::of_bytes(&raw), f.manifest_digest);
    let inspect: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        &format!("oci-archive:{}:v1", archive.display()),
    ]))
    .unwrap();
    assert_eq!(inspect["Layers"][0], f.layer_digest.to_string());
    // `docker load` reads the same file through Docker's manifest.json, by its full name.
    let as_docker: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        &format!(
            "docker-archive:{}:example.test/exported:v1",
            archive.display()
        ),
    ]))
    .unwrap();
    // (Its layers are named by their diff ids.)
    assert_eq!(as_docker["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(as_docker["Architecture"], inspect["Architecture"]);

    let dir = out.path().join("layout");
    layout::export_layout(&store, &dir, &entries).await.unwrap();
    // containerd reads the full name from the index, next to the tag.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        "example.test/exported:v1"
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "v1");
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:v1", dir.display())]);
    assert_eq!(raw, f.manifest);
    let umoci = std::process::Command::new("umoci")
        .args(["stat", "--image", &format!("{}:v1", dir.display())])
        .output()
        .unwrap();
    assert!(
        umoci.status.success(),
        "{}",
        String::from_utf8_lossy(&umoci.stderr)
    );

    // Our export imports back (into a fresh store), from both forms.
    let (_dir2, store2) = new_store();
    let back = layout::import_archive(&store2, &archive, Some("v1"), &Platform::default())
        .await
        .unwrap();
    assert_eq!(back.manifest_digest, f.manifest_digest);
    let (_dir3, store3) = new_store();
    let back = layout::import_layout(&store3, &dir, None, &Platform::default())
        .await
        .unwrap();
    assert_eq!(back.config_digest, f.config_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_then_our_pull_then_our_export_matches_skopeo() {
    let f = fixture();
    let registry = Registry::start();
    skopeo_push_fixture(&registry, "copied/busybox");
    let (_dir, store) = new_store();
    let reference = Reference::parse(&format!("{}/copied/busybox:latest", registry.addr)).unwrap();
    let image = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    layout::export_layout(
        &store,
        out.path(),
        &[ExportEntry {
            digest: image.manifest_digest.clone(),
            ref_name: Some("latest".into()),
            image_name: None,
        }],
    )
    .await
    .unwrap();
    // skopeo copies our layout back into the registry under a new name, unchanged.
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", out.path().display()),
        &format!("docker://{}/again/busybox:latest", registry.addr),
    ]);
    let digest = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{}/again/busybox:latest", registry.addr),
    ]);
    assert_eq!(
        String::from_utf8(digest).unwrap().trim(),
        f.manifest_digest.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_blobs_that_do_not_match_their_digest() {
    let f = fixture();
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", f.layout.display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    let layer_path = copy.path().join("blobs/sha256").join(f.layer_digest.hex());
    let mut corrupt = f.layer.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    std::fs::write(&layer_path, &corrupt).unwrap();

    let (_dir, store) = new_store();
    let err = layout::import_layout(&store, copy.path(), Some("latest"), &Platform::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LayoutError::Content { source: ContentError::DigestMismatch { expected, .. }, .. }
                if *expected == f.layer_digest
        ),
        "{err}"
    );
    assert!(!store.has(&f.layer_digest));

    let err = layout::import_layout(&store, copy.path(), Some("nope"), &Platform::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LayoutError::NoSuchImage { .. }), "{err}");
}

/// How [`fixture_handler`] guards `/v2/`.
enum ServerAuth {
    Open,
    /// Basic credentials alice:s3cret on every request.
    Basic,
    /// Bearer tokens from `/token`, which wants alice:s3cret; the realm url and the token
    /// queries seen.
    Token {
        realm: Arc<Mutex<String>>,
        queries: Arc<Mutex<Vec<String>>>,
    },
}

/// Serves the fixture image as `demo/busybox:latest`, blobs through a redirect, optionally
/// with a corrupt layer and optionally behind token auth.
fn fixture_handler(corrupt_layer: bool, auth: ServerAuth) -> common::Handler {
    let f = fixture();
    let mut layer = f.layer.clone();
    if corrupt_layer {
        let middle = layer.len() / 2;
        layer[middle] ^= 0xff;
    }
    let layer = Bytes::from(layer);
    let manifest = Bytes::from(f.manifest.clone());
    let config = Bytes::from(f.config.clone());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    Arc::new(move |req: &SeenRequest| {
        if matches!(auth, ServerAuth::Basic)
            && req.path.starts_with("/v2/")
            && req.authorization.as_deref() != Some(basic.as_str())
        {
            let mut r = respond(401, None, "");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(r#"Basic realm="test""#),
            );
            return r;
        }
        if let ServerAuth::Token { realm, queries } = &auth {
            if req.path == "/token" && req.method == http::Method::POST {
                let form = String::from_utf8_lossy(&req.body).into_owned();
                queries.lock().unwrap().push(format!("POST {form}"));
                if !form.contains("grant_type=refresh_token")
                    || !form.contains("refresh_token=idtok-xyz")
                {
                    return respond(401, None, "bad refresh token");
                }
                return respond(
                    200,
                    Some("application/json"),
                    r#"{"access_token":"tok-123","expires_in":300}"#,
                );
            }
            if req.path == "/token" {
                queries.lock().unwrap().push(req.query.clone());
                if req.authorization.as_deref() != Some(basic.as_str()) {
                    return respond(401, None, "bad credentials");
                }
                return respond(
                    200,
                    Some("application/json"),
                    r#"{"token":"tok-123","expires_in":300}"#,
                );
            }
            if req.path.starts_with("/v2/")
                && req.authorization.as_deref() != Some("Bearer tok-123")
            {
                let realm = realm.lock().unwrap().clone();
                let mut r = respond(401, None, "");
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_str(&format!(
                        r#"Bearer realm="{realm}",service="test-registry",scope="repository:demo/busybox:pull""#
                    ))
                    .unwrap(),
                );
                return r;
            }
        }
        let blob = |hex: &str| {
            if hex == f.layer_digest.to_string() {
                Some(layer.clone())
            } else if hex == f.config_digest.to_string() {
                Some(config.clone())
            } else {
                None
            }
        };
        match req.path.as_str() {
            "/v2/demo/busybox/manifests/latest" => {
                respond(200, Some(OCI_MANIFEST), manifest.clone())
            }
            p if p.starts_with("/v2/demo/busybox/blobs/") => {
                let mut r = respond(307, None, "");
                let target = format!("/storage/{}", &p["/v2/demo/busybox/blobs/".len()..]);
                r.headers_mut().insert(
                    http::header::LOCATION,
                    http::HeaderValue::from_str(&target).unwrap(),
                );
                r
            }
            p if p.starts_with("/storage/") => match blob(&p["/storage/".len()..]) {
                Some(b) => respond(200, Some("application/octet-stream"), b),
                None => respond(404, None, "unknown blob"),
            },
            _ => respond(404, None, "not found"),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_refuses_a_layer_that_does_not_match_its_digest() {
    let f = fixture();
    let server = TestServer::start(fixture_handler(true, ServerAuth::Open)).await;
    let (_dir, store) = new_store();
    let reference = Reference::parse(&format!("{}/demo/busybox", server.addr)).unwrap();
    let err = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PullError::Content { digest, source: ContentError::DigestMismatch { .. }, .. }
                if *digest == f.layer_digest
        ),
        "{err}"
    );
    assert!(!store.has(&f.layer_digest));

    // A pinned digest that the served manifest does not hash to is refused as well.
    let other = Digest::of_bytes(b"something else");
    let pinned = Reference::parse(&format!("{}/demo/busybox:latest", server.addr))
        .unwrap()
        .with_digest(other);
    let err = client()
        .pull(&pinned, &Platform::default(), &store)
        .await
        .unwrap_err();
    // The server has no manifest under that digest.
    assert!(matches!(err, PullError::ManifestNotFound { .. }), "{err}");

    // The same server with an intact layer works (through the blob redirect).
    let good = TestServer::start(fixture_handler(false, ServerAuth::Open)).await;
    let reference = Reference::parse(&format!("{}/demo/busybox", good.addr)).unwrap();
    let image = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
    assert_eq!(store.read_bytes(&f.layer_digest).await.unwrap(), f.layer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_uses_the_challenge_and_the_callers_credentials() {
    let f = fixture();
    let scopes = Arc::new(Mutex::new(Vec::new()));
    // The realm names the server's own address, known once it listens.
    let realm = Arc::new(Mutex::new(String::new()));
    let server = TestServer::start(fixture_handler(
        false,
        ServerAuth::Token {
            realm: realm.clone(),
            queries: scopes.clone(),
        },
    ))
    .await;
    *realm.lock().unwrap() = format!("http://{}/token", server.addr);

    let reference = Reference::parse(&format!("{}/demo/busybox", server.addr)).unwrap();

    // Anonymous: the token server refuses, and the error names the realm.
    let (_dir, store) = new_store();
    let anonymous = client();
    let refused = |err: &PullError| {
        matches!(
            err,
            PullError::Transport { source: TransportError::TokenStatus { status, .. }, .. }
                if status.as_u16() == 401
        )
    };
    let err = anonymous
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap_err();
    assert!(refused(&err), "{err}");

    let mut credentials = StaticCredentials::new();
    credentials.insert(&server.addr, "alice", "s3cret");
    let authed = anonymous.with_credentials(Arc::new(credentials));
    let image = authed
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);

    // The token obtained with alice's credentials does not serve the anonymous client.
    let (_dir2, store2) = new_store();
    let err = anonymous
        .pull(&reference, &Platform::default(), &store2)
        .await
        .unwrap_err();
    assert!(refused(&err), "{err}");
    let seen = scopes.lock().unwrap().clone();
    assert!(
        seen.iter().all(|q| q.contains("service=test-registry")
            && q.contains("scope=repository%3Ademo%2Fbusybox%3Apull")),
        "{seen:?}"
    );
    // The token is cached: the authenticated pull asked the token server once, each
    // anonymous attempt once.
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_sends_the_callers_credentials() {
    let f = fixture();
    let server = TestServer::start(fixture_handler(false, ServerAuth::Basic)).await;
    let reference = Reference::parse(&format!("{}/demo/busybox", server.addr)).unwrap();
    let (_dir, store) = new_store();
    let err = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PullError::Transport { source: TransportError::Unauthorized { host, .. }, .. } if *host == server.addr),
        "{err}"
    );
    let mut wrong = StaticCredentials::new();
    wrong.insert(&server.addr, "alice", "wrong");
    let err = RegistryClient::new(RegistryConfig::default(), Arc::new(wrong))
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unauthorized"), "{err}");

    let mut right = StaticCredentials::new();
    right.insert(&server.addr, "alice", "s3cret");
    let image = RegistryClient::new(RegistryConfig::default(), Arc::new(right))
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_docker_schema2_manifests_and_lists() {
    let registry = Registry::start();
    let f = fixture();
    skopeo(&[
        "copy",
        "--quiet",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", f.layout.display()),
        &format!("docker://{}/docker/busybox:latest", registry.addr),
    ]);
    let reference = Reference::parse(&format!("{}/docker/busybox:latest", registry.addr)).unwrap();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    let (_dir, store) = new_store();
    let image = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, Digest::of_bytes(&raw));
    assert_eq!(
        image.manifest_media_type,
        dagr_registry::image::DOCKER_MANIFEST
    );
    assert_eq!(
        image.layers[0].media_type().to_string(),
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        image.layers[0].digest().to_string(),
        f.layer_digest.to_string()
    );
    assert_eq!(image.config.os().to_string(), "linux");

    // A Docker manifest list with two platforms.
    let layout_dir = tempfile::tempdir().unwrap();
    write_multi_platform_layout(layout_dir.path());
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout_dir.path().display()),
        &format!("docker://{}/docker/multi:latest", registry.addr),
    ]);
    let list_ref = Reference::parse(&format!("{}/docker/multi:latest", registry.addr)).unwrap();
    let list_raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{list_ref}"),
    ]);
    let list: serde_json::Value = serde_json::from_slice(&list_raw).unwrap();
    assert_eq!(
        list["mediaType"],
        dagr_registry::image::DOCKER_MANIFEST_LIST
    );
    let image = client()
        .pull(
            &list_ref,
            &Platform::from_str("linux/arm64/v8").unwrap(),
            &store,
        )
        .await
        .unwrap();
    assert_eq!(image.index_digest, Some(Digest::of_bytes(&list_raw)));
    assert_eq!(image.config.architecture().to_string(), "arm64");
    assert_eq!(
        image.manifest_media_type,
        dagr_registry::image::DOCKER_MANIFEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_first_and_fall_back_to_the_registry() {
    let f = fixture();
    let upstream = Registry::start();
    let mirror = Registry::start();
    skopeo_push_fixture(&upstream, "mirrored/busybox");

    // The mirror lacks the image: the pull falls back to the registry itself.
    let mut config = RegistryConfig::default();
    config
        .mirrors
        .insert(upstream.addr.clone(), vec![mirror.addr.clone()]);
    let reference = Reference::parse(&format!("{}/mirrored/busybox", upstream.addr)).unwrap();
    let (_dir, store) = new_store();
    let image = RegistryClient::new(config, Arc::new(Anonymous))
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);

    // The registry itself is down (nothing listens on its port) but its mirror has the image.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let mut config = RegistryConfig::default();
    config
        .mirrors
        .insert(dead.clone(), vec![format!("http://{}", upstream.addr)]);
    let reference = Reference::parse(&format!("{dead}/mirrored/busybox")).unwrap();
    let (_dir2, store2) = new_store();
    let client_with_mirror = RegistryClient::new(config, Arc::new(Anonymous));
    let resolved = client_with_mirror
        .resolve(&reference, &Platform::default(), &store2)
        .await
        .unwrap();
    assert_eq!(resolved.config_digest, f.config_digest);
    assert!(store2.has(&f.config_digest));
    assert!(!store2.has(&f.layer_digest), "resolve fetches no layers");
    let image = client_with_mirror
        .pull(&reference, &Platform::default(), &store2)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
    assert!(store2.has(&f.layer_digest));

    // Without the mirror the dead registry is an error naming the reference.
    let err = client()
        .pull(&reference, &Platform::default(), &store2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&dead), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_permanent_ones_are_not() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let f = fixture();
    let inner = fixture_handler(false, ServerAuth::Open);
    let failures = Arc::new(AtomicUsize::new(0));
    let failures_in_handler = failures.clone();
    // The first manifest request answers 502, the first blob request 503.
    let server = TestServer::start(Arc::new(move |req: &SeenRequest| {
        let failing = (req.path.contains("/manifests/") || req.path.starts_with("/storage/"))
            && failures_in_handler.load(Ordering::SeqCst) < 2;
        let first_of_kind = |n: usize| {
            failures_in_handler
                .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        };
        if failing {
            if req.path.contains("/manifests/") && first_of_kind(0) {
                return respond(502, None, "bad gateway");
            }
            if req.path.starts_with("/storage/") && first_of_kind(1) {
                return respond(503, None, "slow down");
            }
        }
        inner(req)
    }))
    .await;
    let reference = Reference::parse(&format!("{}/demo/busybox", server.addr)).unwrap();
    let (_dir, store) = new_store();
    let image = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        2,
        "both failures were served"
    );

    // A 404 for a blob is permanent: reported at once, naming the digest's url.
    let missing_layer = TestServer::start(Arc::new(move |req: &SeenRequest| {
        if req.path.starts_with("/storage/") {
            return respond(404, None, "blob unknown");
        }
        fixture_handler(false, ServerAuth::Open)(req)
    }))
    .await;
    let reference = Reference::parse(&format!("{}/demo/busybox", missing_layer.addr)).unwrap();
    let (_dir2, store2) = new_store();
    let err = client()
        .pull(&reference, &Platform::default(), &store2)
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_layers_are_pulled_as_stored() {
    let registry = Registry::start();
    let f = fixture();
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-compress-format",
        "zstd",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", f.layout.display()),
        &format!("docker://{}/zstd/busybox:latest", registry.addr),
    ]);
    let reference = Reference::parse(&format!("{}/zstd/busybox", registry.addr)).unwrap();
    let (_dir, store) = new_store();
    let image = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(
        image.layers[0].media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let layer =
        dagr_registry::image::descriptor_digest(&image.manifest_digest, &image.layers[0]).unwrap();
    let bytes = store.read_bytes(&layer).await.unwrap();
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
    assert_eq!(bytes.len() as u64, image.layers[0].size());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_against_configured_ca_certificates() {
    let f = fixture();
    let certs = common::test_certificates();
    let registry = Registry::start_with_tls(Some((&certs.server_certificate, &certs.server_key)));
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", f.layout.display()),
        &format!("docker://{}/tls/busybox:latest", registry.addr),
    ]);
    // Loopback registries are reached over http; an explicit https mirror forces TLS.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let reference = Reference::parse(&format!("{dead}/tls/busybox")).unwrap();
    let mut config = RegistryConfig::default();
    config
        .mirrors
        .insert(dead.clone(), vec![format!("https://{}", registry.addr)]);

    // Public roots only: the private CA is not trusted.
    let (_dir, store) = new_store();
    let err = RegistryClient::new(config.clone(), Arc::new(Anonymous))
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap_err();
    let chain = format!("{:?}", err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    // Garbage in place of the CA is reported, naming the host.
    let mut garbage = config.clone();
    garbage
        .ca_certificates
        .insert(registry.addr.clone(), b"not a certificate".to_vec());
    let err = RegistryClient::new(garbage, Arc::new(Anonymous))
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&registry.addr) && err.to_string().contains("ca certificates"),
        "{err}"
    );

    config
        .ca_certificates
        .insert(registry.addr.clone(), certs.ca_pem.clone());
    let image = RegistryClient::new(config, Arc::new(Anonymous))
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
    assert!(store.has(&f.layer_digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_tokens_use_the_refresh_token_grant() {
    let f = fixture();
    let queries = Arc::new(Mutex::new(Vec::new()));
    let realm = Arc::new(Mutex::new(String::new()));
    let server = TestServer::start(fixture_handler(
        false,
        ServerAuth::Token {
            realm: realm.clone(),
            queries: queries.clone(),
        },
    ))
    .await;
    *realm.lock().unwrap() = format!("http://{}/token", server.addr);
    let reference = Reference::parse(&format!("{}/demo/busybox", server.addr)).unwrap();

    let mut credentials = StaticCredentials::new();
    credentials.insert(
        &server.addr,
        dagr_registry::auth::IDENTITY_TOKEN_USERNAME,
        "idtok-xyz",
    );
    let (_dir, store) = new_store();
    let image = client()
        .with_credentials(Arc::new(credentials))
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
    let seen = queries.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("POST "), "{seen:?}");
    assert!(seen[0].contains("service=test-registry"), "{seen:?}");
    assert!(
        seen[0].contains("scope=repository%3Ademo%2Fbusybox%3Apull"),
        "{seen:?}"
    );

    // A wrong identity token is refused by the token server.
    let mut wrong = StaticCredentials::new();
    wrong.insert(
        &server.addr,
        dagr_registry::auth::IDENTITY_TOKEN_USERNAME,
        "other",
    );
    let err = client()
        .with_credentials(Arc::new(wrong))
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad refresh token"), "{err}");
}

/// Established TCP connections of this network namespace whose remote end is `port` on
/// 127.0.0.1 (ours to the registry; the registry's own sockets have it as their local port).
fn connections_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    tcp.lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_a_registry_are_bounded() {
    let registry = Registry::start();
    skopeo_push_fixture(&registry, "library/busybox");
    let reference = Reference::parse(&format!("{}/library/busybox", registry.addr)).unwrap();
    let port: u16 = registry.addr.rsplit(':').next().unwrap().parse().unwrap();
    let client = client();
    let (_dir, store) = new_store();
    // 50 concurrent resolutions: as many connections as they need while they run.
    let platform = Platform::default();
    let resolutions = (0..50).map(|_| client.resolve(&reference, &platform, &store));
    for resolved in futures::future::join_all(resolutions).await {
        resolved.unwrap();
    }
    // Connections beyond the idle bound are closed as they go back to the pool.
    let mut open = connections_to(port);
    for _ in 0..200 {
        if open <= dagr_registry::transport::POOL_MAX_IDLE_PER_HOST {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(std::time::Duration::from_millis(10));
        open = connections_to(port);
    }
    assert!(
        open <= dagr_registry::transport::POOL_MAX_IDLE_PER_HOST,
        "{open} connections stay open to the registry"
    );
}

/// A registry that answers 503 with `Retry-After` once, 429 once, and a damaged layer once:
/// each is retried (the `Retry-After` honoured), and the pull ends with verified content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_faults_are_retried_and_retry_after_is_honoured() {
    let f = fixture();
    let inner = fixture_handler(false, ServerAuth::Open);
    let mut damaged = f.layer.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    let damaged = Bytes::from(damaged);
    let layer_path = format!("/storage/{}", f.layer_digest);
    let seen: Arc<Mutex<Vec<(String, std::time::Instant)>>> = Arc::default();
    let handler: common::Handler = {
        let seen = seen.clone();
        let layer_path = layer_path.clone();
        Arc::new(move |req: &SeenRequest| {
            let count = {
                let mut seen = seen.lock().unwrap();
                seen.push((req.path.clone(), std::time::Instant::now()));
                seen.iter().filter(|(p, _)| *p == req.path).count()
            };
            let with_retry_after = |status: u16| {
                let mut r = respond(status, None, "try later");
                r.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
                r
            };
            match (req.path.as_str(), count) {
                ("/v2/demo/busybox/manifests/latest", 1) => with_retry_after(503),
                (p, 1) if p == layer_path => with_retry_after(429),
                (p, 2) if p == layer_path => {
                    respond(200, Some("application/octet-stream"), damaged.clone())
                }
                _ => inner(req),
            }
        })
    };
    let server = TestServer::start(handler).await;
    let (_dir, store) = new_store();
    let reference = Reference::parse(&format!("{}/demo/busybox", server.addr)).unwrap();
    let image = client()
        .pull(&reference, &Platform::default(), &store)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, f.manifest_digest);
    assert_eq!(store.read_bytes(&f.layer_digest).await.unwrap(), f.layer);
    let seen = seen.lock().unwrap().clone();
    let times = |path: &str| -> Vec<std::time::Instant> {
        seen.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    };
    let manifests = times("/v2/demo/busybox/manifests/latest");
    assert!(manifests.len() >= 2, "{seen:?}");
    // The second attempt waited for the second the registry asked for.
    assert!(
        manifests[1] - manifests[0] >= std::time::Duration::from_secs(1),
        "{seen:?}"
    );
    let layers = times(&layer_path);
    assert_eq!(layers.len(), 3, "429, damaged, then whole: {seen:?}");
    assert!(layers[1] - layers[0] >= std::time::Duration::from_secs(1));
}

/// A registry (in memory, in the test) whose first blob upload answers 503 with `Retry-After`,
/// whose first blob `PUT` fails with 500 and whose first manifest `PUT` answers 429: each push is
/// started over, the `Retry-After` honoured, and everything arrives verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_faults_are_retried() {
    let f = fixture();
    let blobs: Arc<Mutex<std::collections::HashMap<String, Bytes>>> = Arc::default();
    let manifests: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let seen: Arc<Mutex<Vec<(String, std::time::Instant)>>> = Arc::default();
    let handler: common::Handler = {
        let (blobs, manifests, seen) = (blobs.clone(), manifests.clone(), seen.clone());
        Arc::new(move |req: &SeenRequest| {
            let what = format!("{} {}", req.method, req.path);
            let count = {
                let mut seen = seen.lock().unwrap();
                let kind =
                    if req.path.contains("/blobs/uploads/") && req.method == http::Method::PUT {
                        "PUT upload".to_owned()
                    } else {
                        what.clone()
                    };
                seen.push((kind.clone(), std::time::Instant::now()));
                seen.iter().filter(|(k, _)| *k == kind).count()
            };
            let retry_after = |status: u16| {
                let mut r = respond(status, None, "try later");
                r.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
                r
            };
            match req.method.clone() {
                http::Method::HEAD if req.path.contains("/blobs/") => {
                    let digest = req.path.rsplit('/').next().unwrap_or_default();
                    if blobs.lock().unwrap().contains_key(digest) {
                        respond(200, None, Bytes::new())
                    } else {
                        respond(404, None, Bytes::new())
                    }
                }
                http::Method::POST if req.path.ends_with("/blobs/uploads/") => {
                    if count == 1 {
                        return retry_after(503);
                    }
                    let mut r = respond(202, None, Bytes::new());
                    let location = format!("{}{}", req.path, count);
                    r.headers_mut().insert(
                        http::header::LOCATION,
                        http::HeaderValue::from_str(&location).unwrap(),
                    );
                    r
                }
                http::Method::PUT if req.path.contains("/blobs/uploads/") => {
                    if count == 1 {
                        return respond(500, None, "disk trouble");
                    }
                    let digest = req
                        .query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("digest="))
                        .unwrap_or_default()
                        .replace("%3A", ":");
                    let actual = format!(
                        "sha256:{}",
                        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&req.body))
                    );
                    if actual != digest {
                        return respond(400, None, "digest mismatch");
                    }
                    blobs.lock().unwrap().insert(digest, req.body.clone());
                    respond(201, None, Bytes::new())
                }
                http::Method::PUT if req.path.contains("/manifests/") => {
                    if count == 1 {
                        return retry_after(429);
                    }
                    let digest = format!(
                        "sha256:{}",
                        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&req.body))
                    );
                    manifests
                        .lock()
                        .unwrap()
                        .push((req.path.clone(), req.body.clone()));
                    let mut r = respond(201, None, Bytes::new());
                    r.headers_mut().insert(
                        "docker-content-digest",
                        http::HeaderValue::from_str(&digest).unwrap(),
                    );
                    r
                }
                _ => respond(404, None, format!("unexpected {what}")),
            }
        })
    };
    let server = TestServer::start(handler).await;
    let (_dir, store) = new_store();
    for blob in [&f.layer, &f.config, &f.manifest] {
        store.put_bytes(blob).await.unwrap();
    }
    let reference = Reference::parse(&format!("{}/demo/pushed:v1", server.addr)).unwrap();
    let pushed = client()
        .push(&store, &f.manifest_digest, &reference, None)
        .await
        .unwrap();
    assert_eq!(pushed, f.manifest_digest);
    let blobs = blobs.lock().unwrap().clone();
    assert_eq!(
        blobs.get(&f.layer_digest.to_string()).map(|b| b.to_vec()),
        Some(f.layer.clone())
    );
    assert_eq!(
        blobs.get(&f.config_digest.to_string()).map(|b| b.to_vec()),
        Some(f.config.clone())
    );
    let manifests = manifests.lock().unwrap().clone();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!(manifests[0].1.to_vec(), f.manifest);
    let seen = seen.lock().unwrap().clone();
    let times = |kind: &str| -> Vec<std::time::Instant> {
        seen.iter()
            .filter(|(k, _)| k.starts_with(kind))
            .map(|(_, t)| *t)
            .collect()
    };
    let manifest_puts = times("PUT /v2/demo/pushed/manifests/v1");
    assert_eq!(manifest_puts.len(), 2, "{seen:?}");
    assert!(manifest_puts[1] - manifest_puts[0] >= std::time::Duration::from_secs(1));
    assert!(
        times("PUT upload").len() >= 3,
        "a failed PUT and two good ones: {seen:?}"
    );
}
