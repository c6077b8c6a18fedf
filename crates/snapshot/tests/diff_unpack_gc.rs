//! Diff round trips, unpacking image layers into chain-id snapshots, and GC with leases.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read as _;
use std::path::Path;

use common::{LayerBuilder, TestDir, describe};
use dagr_snapshot::{
    ApplyOptions, Backend, ContentStore, Digest, Kind, LayerDescriptor, SnapshotError, Snapshotter,
    SnapshotterOptions, UnpackError, apply_layer, chain_id,
};

fn open(dir: &TestDir, backend: Backend) -> (Snapshotter, ContentStore) {
    let s = Snapshotter::open(
        &dir.path().join("state"),
        SnapshotterOptions {
            backend: Some(backend),
        },
    )
    .unwrap();
    let c = ContentStore::open(&dir.path().join("content")).unwrap();
    (s, c)
}

/// Prepares `key` on `parent`, runs `f` on the mounted tree, commits it as `name`.
async fn build(
    s: &Snapshotter,
    target: &Path,
    name: &str,
    parent: Option<&str>,
    f: impl FnOnce(&Path),
) {
    let key = format!("build-{name}");
    s.prepare(&key, parent).await.unwrap();
    {
        let _g = s.mount(&key, target).unwrap();
        f(target);
    }
    s.commit(name, &key).await.unwrap();
}

async fn read_view(
    s: &Snapshotter,
    target: &Path,
    of: &str,
) -> std::collections::BTreeMap<String, String> {
    let key = format!("view-{of}");
    s.view(&key, Some(of)).await.unwrap();
    let tree = {
        let _g = s.mount(&key, target).unwrap();
        describe(target)
    };
    s.remove(&key).await.unwrap();
    tree
}

async fn diff_round_trip(backend: Backend) {
    let dir = TestDir::new();
    let (s, content) = open(&dir, backend);
    let target = dir.subdir("target");
    build(&s, &target, "base", None, |t| {
        std::fs::create_dir_all(t.join("etc/conf.d")).unwrap();
        std::fs::write(t.join("etc/conf.d/a"), b"a").unwrap();
        std::fs::write(t.join("etc/modify"), b"before").unwrap();
        std::fs::write(t.join("etc/chmod"), b"same").unwrap();
        std::fs::write(t.join("delete-me"), b"x").unwrap();
        std::fs::create_dir_all(t.join("tree/sub")).unwrap();
        std::fs::write(t.join("tree/sub/f"), b"x").unwrap();
        std::fs::create_dir_all(t.join("replace/old")).unwrap();
        std::fs::write(t.join("replace/old/f"), b"old").unwrap();
        std::os::unix::fs::symlink("etc/modify", t.join("link")).unwrap();
        std::fs::write(t.join("file-becomes-dir"), b"x").unwrap();
    })
    .await;
    build(&s, &target, "child", Some("base"), |t| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(t.join("etc/modify"), b"after, longer").unwrap();
        std::fs::set_permissions(t.join("etc/chmod"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::remove_file(t.join("delete-me")).unwrap();
        std::fs::remove_dir_all(t.join("tree")).unwrap();
        std::fs::remove_dir_all(t.join("replace")).unwrap();
        std::fs::create_dir(t.join("replace")).unwrap();
        std::fs::write(t.join("replace/new"), b"new").unwrap();
        std::fs::remove_file(t.join("link")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", t.join("link")).unwrap();
        std::fs::write(t.join("new"), b"fresh").unwrap();
        std::fs::hard_link(t.join("new"), t.join("new-hardlink")).unwrap();
        std::fs::remove_file(t.join("file-becomes-dir")).unwrap();
        std::fs::create_dir(t.join("file-becomes-dir")).unwrap();
        rustix::fs::lsetxattr(
            t.join("new"),
            "user.note",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    })
    .await;

    let layer = s.diff(&content, "child").await.unwrap();
    assert_eq!(
        layer.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(content.size(&layer.digest).unwrap(), layer.size);
    let blob = std::fs::read(content.blob_path(&layer.digest)).unwrap();
    assert_eq!(Digest::of_bytes(&blob), layer.digest);
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(Digest::of_bytes(&tar_bytes), layer.diff_id);
    // The same changes as zstd: the same tar inside.
    let zstd = s
        .diff_with(&content, "child", dagr_snapshot::Compression::Zstd)
        .await
        .unwrap();
    assert_eq!(zstd.media_type, dagr_snapshot::LAYER_MEDIA_TYPE_ZSTD);
    assert_eq!(zstd.diff_id, layer.diff_id);
    let zstd_blob = std::fs::read(content.blob_path(&zstd.digest)).unwrap();
    assert_eq!(zstd::decode_all(&zstd_blob[..]).unwrap(), tar_bytes);
    let names: Vec<String> = tar::Archive::new(&tar_bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&".wh.delete-me".to_owned()), "{names:?}");
    assert!(names.contains(&".wh.tree".to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("etc/conf.d")),
        "unchanged content must not be in the diff: {names:?}"
    );
    if backend == Backend::Overlay {
        assert!(
            names.contains(&"replace/.wh..wh..opq".to_owned()),
            "{names:?}"
        );
    }

    // Apply the diff onto the parent: same tree as the child.
    s.prepare("replay", Some("base")).await.unwrap();
    {
        let g = s.mount("replay", &target).unwrap();
        let stats = apply_layer(&blob[..], &target, &ApplyOptions::default()).unwrap();
        assert_eq!(stats.diff_id, layer.diff_id);
        g.unmount().unwrap();
    }
    s.commit("replayed", "replay").await.unwrap();
    let child = read_view(&s, &target, "child").await;
    let replayed = read_view(&s, &target, "replayed").await;
    assert_eq!(child, replayed);
    assert!(child.contains_key("replace/new") && !child.contains_key("replace/old"));

    s.view("check-xattr", Some("replayed")).await.unwrap();
    {
        let _g = s.mount("check-xattr", &target).unwrap();
        let mut buf = [0u8; 16];
        let n = rustix::fs::lgetxattr(target.join("new"), "user.note", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"kept");
    }

    // A diff of a parentless snapshot holds everything; views have no diff.
    let base_layer = s.diff(&content, "base").await.unwrap();
    assert!(base_layer.size > 0);
    assert!(matches!(
        s.diff(&content, "check-xattr").await,
        Err(dagr_snapshot::DiffError::Snapshot(
            SnapshotError::WrongKind { .. }
        ))
    ));
    assert!(dir.leftover_mounts().is_empty());
}

#[tokio::test]
async fn diff_round_trip_overlay() {
    diff_round_trip(Backend::Overlay).await;
}

#[tokio::test]
async fn diff_round_trip_copy() {
    diff_round_trip(Backend::Copy).await;
}

async fn unpack(backend: Backend) {
    let dir = TestDir::new();
    let (s, content) = open(&dir, backend);
    let target = dir.subdir("target");
    let l1_tar = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/os-release", b"dagr", 0o644)
        .file("etc/old", b"old", 0o644)
        .symlink("bin", "usr/bin")
        .tar();
    let l2_tar = LayerBuilder::new()
        .file("usr/bin/tool", b"#!", 0o755)
        .whiteout("etc", "old")
        .tar();
    let l1 = content
        .put_bytes(&LayerBuilder::new().dir("etc", 0o755).tar())
        .await
        .unwrap();
    let _ = l1; // an unrelated blob; the real layers follow
    let gz = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&l1_tar).unwrap();
        e.finish().unwrap()
    };
    let zs = zstd::encode_all(&l2_tar[..], 1).unwrap();
    let d1 = content.put_bytes(&gz).await.unwrap();
    let d2 = content.put_bytes(&zs).await.unwrap();
    let layers = vec![
        LayerDescriptor {
            digest: d1.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        },
        LayerDescriptor {
            digest: d2.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
        },
    ];
    let key = s
        .unpack_image_layers(&content, &layers, &ApplyOptions::default())
        .await
        .unwrap();
    let c1 = chain_id(None, &Digest::of_bytes(&l1_tar));
    let c2 = chain_id(Some(&c1), &Digest::of_bytes(&l2_tar));
    assert_eq!(key, c2.to_string());
    assert_eq!(s.stat(&key).unwrap().parent, Some(c1.to_string()));
    assert_eq!(s.stat(&key).unwrap().kind, Kind::Committed);
    let tree = read_view(&s, &target, &key).await;
    let names: Vec<&str> = tree.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "bin",
            "etc",
            "etc/os-release",
            "usr",
            "usr/bin",
            "usr/bin/tool"
        ]
    );

    // A second unpack is a no-op: it does not even need the blobs any more.
    let before = s.list().unwrap().len();
    content.delete(&d1).unwrap();
    content.delete(&d2).unwrap();
    let again = s
        .unpack_image_layers(&content, &layers, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(again, key);
    assert_eq!(s.list().unwrap().len(), before);

    // A malicious layer on top fails with its digest and entry named, leaving nothing behind.
    let evil = content
        .put_bytes(
            &LayerBuilder::new()
                .file("ok", b"1", 0o644)
                .file("../../escape", b"x", 0o644)
                .tar(),
        )
        .await
        .unwrap();
    let mut bad = layers.clone();
    bad.push(LayerDescriptor {
        digest: evil.clone(),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    });
    let err = s
        .unpack_image_layers(&content, &bad, &ApplyOptions::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, UnpackError::Apply { .. }), "{msg}");
    assert!(
        msg.contains(&evil.to_string()) && msg.contains("../../escape"),
        "{msg}"
    );
    assert_eq!(s.list().unwrap().len(), before);
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/mnt"))
            .unwrap()
            .count(),
        0
    );
    assert!(!dir.path().join("escape").exists());

    // A layer whose blob is not in the store is named in the error.
    let absent = Digest::of_bytes(b"never stored");
    let mut missing = layers.clone();
    missing.push(LayerDescriptor {
        digest: absent.clone(),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    });
    let err = s
        .unpack_image_layers(&content, &missing, &ApplyOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, UnpackError::Content { .. }), "{err}");
    assert!(err.to_string().contains(&absent.to_string()), "{err}");
    assert_eq!(s.list().unwrap().len(), before);

    let mut odd = layers.clone();
    odd[0].media_type = "application/vnd.oci.image.config.v1+json".into();
    assert!(matches!(
        s.unpack_image_layers(&content, &odd, &ApplyOptions::default())
            .await,
        Err(UnpackError::UnsupportedMediaType { .. })
    ));
    assert!(dir.leftover_mounts().is_empty());
}

#[tokio::test]
async fn unpack_overlay() {
    unpack(Backend::Overlay).await;
}

#[tokio::test]
async fn unpack_copy() {
    unpack(Backend::Copy).await;
}

#[tokio::test]
async fn gc_respects_leases_parents_and_age() {
    let dir = TestDir::new();
    let (s, content) = open(&dir, Backend::Overlay);
    let target = dir.subdir("target");
    let mut blobs = Vec::new();
    for (i, secs) in [1_000u64, 2_000, 3_000].into_iter().enumerate() {
        let d = content.put_bytes(&vec![i as u8; 10_000]).await.unwrap();
        let f = std::fs::File::open(content.blob_path(&d)).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
        blobs.push(d);
    }
    s.create_lease("l1").await.unwrap();
    assert!(matches!(
        s.create_lease("l1").await,
        Err(SnapshotError::LeaseExists(_))
    ));
    assert!(matches!(
        s.lease_blob("nope", &blobs[0]).await,
        Err(SnapshotError::LeaseNotFound(_))
    ));
    s.lease_blob("l1", &blobs[2]).await.unwrap();
    // A lease may name a blob that is not written yet.
    let future = Digest::of_bytes(b"not yet written");
    s.lease_blob("l1", &future).await.unwrap();

    let write = |t: &Path| std::fs::write(t.join("data"), vec![1u8; 20_000]).unwrap();
    build(&s, &target, "base", None, write).await;
    build(&s, &target, "child", Some("base"), write).await;
    build(&s, &target, "kept", None, write).await;
    build(&s, &target, "base2", None, write).await;
    s.prepare("work", Some("base2")).await.unwrap();
    s.lease_snapshot("l1", "kept").await.unwrap();
    assert_eq!(s.leases().unwrap()[0].snapshots.len(), 1);

    // Just over budget: only the oldest candidate goes (the oldest blob).
    let first = s.gc(&content, u64::MAX).await.unwrap();
    assert!(first.removed_blobs.is_empty() && first.removed_snapshots.is_empty());
    let total = first.remaining_bytes;
    let one = s.gc(&content, total - 1).await.unwrap();
    assert_eq!(one.removed_blobs, vec![blobs[0].clone()]);
    assert!(one.removed_snapshots.is_empty());
    assert_eq!(one.remaining_bytes, total - 10_000);

    // Everything collectable goes; leased, active, and parents of live snapshots stay.
    let all = s.gc(&content, 0).await.unwrap();
    assert_eq!(all.removed_blobs, vec![blobs[1].clone()]);
    assert_eq!(
        all.removed_snapshots,
        vec!["child".to_owned(), "base".to_owned()]
    );
    assert!(content.has(&blobs[2]));
    let keys: Vec<String> = s.list().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, vec!["base2", "kept", "work"]);

    s.delete_lease("l1").await.unwrap();
    assert!(matches!(
        s.delete_lease("l1").await,
        Err(SnapshotError::LeaseNotFound(_))
    ));
    s.remove("work").await.unwrap();
    let rest = s.gc(&content, 0).await.unwrap();
    assert_eq!(rest.removed_blobs, vec![blobs[2].clone()]);
    let mut removed = rest.removed_snapshots.clone();
    removed.sort();
    assert_eq!(removed, vec!["base2".to_owned(), "kept".to_owned()]);
    assert_eq!(rest.remaining_bytes, 0);
    assert!(content.list().unwrap().is_empty());
    assert!(s.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unpacks_of_the_same_image_agree() {
    let dir = TestDir::new();
    let (s, content) = open(&dir, Backend::Overlay);
    let mut layers = Vec::new();
    for i in 0..3 {
        let blob = LayerBuilder::new()
            .file(&format!("layer{i}/f"), format!("{i}").as_bytes(), 0o644)
            .gzip();
        let digest = content.put_bytes(&blob).await.unwrap();
        layers.push(LayerDescriptor {
            digest,
            media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
        });
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, content, layers) = (s.clone(), content.clone(), layers.clone());
        tasks.push(tokio::spawn(async move {
            s.unpack_image_layers(&content, &layers, &ApplyOptions::default())
                .await
                .unwrap()
        }));
    }
    let mut keys = Vec::new();
    for t in tasks {
        keys.push(t.await.unwrap());
    }
    keys.dedup();
    assert_eq!(keys.len(), 1);
    let infos = s.list().unwrap();
    assert_eq!(infos.len(), 3, "{infos:?}");
    assert!(
        infos
            .iter()
            .all(|i| i.kind == Kind::Committed && i.key.starts_with("sha256:"))
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/snapshots"))
            .unwrap()
            .count(),
        3
    );
    assert!(dir.leftover_mounts().is_empty());
}

/// A layer unpacked as it is read: committed under its chain id when its bytes are the
/// digest, nothing kept when they are not (a damaged download), and known afterwards.
#[tokio::test]
async fn a_layer_read_as_it_downloads_is_verified_before_it_is_committed() {
    let dir = TestDir::new();
    let (s, _content) = open(&dir, Backend::Overlay);
    let tar = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/streamed", b"yes", 0o644)
        .tar();
    let blob = zstd::encode_all(&tar[..], 3).unwrap();
    let layer = LayerDescriptor {
        digest: Digest::of_bytes(&blob),
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
    };
    let before = s.list().unwrap().len();
    // Damaged bytes: a valid layer, but not the one named.
    let other = zstd::encode_all(&tar[..], 1).unwrap();
    assert_ne!(Digest::of_bytes(&other), layer.digest);
    let err = s
        .unpack_layer_from(std::io::Cursor::new(other), &layer, None)
        .await
        .expect_err("damaged");
    assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");
    assert_eq!(s.list().unwrap().len(), before, "nothing of it kept");
    assert_eq!(
        s.unpacked_chain(std::slice::from_ref(&layer)).unwrap(),
        None
    );

    let top = s
        .unpack_layer_from(std::io::Cursor::new(blob), &layer, None)
        .await
        .unwrap();
    assert_eq!(top, chain_id(None, &Digest::of_bytes(&tar)).to_string());
    assert_eq!(
        s.unpacked_chain(std::slice::from_ref(&layer)).unwrap(),
        Some(top.clone())
    );
    let target = dir.subdir("target");
    let tree = read_view(&s, &target, &top).await;
    assert!(tree.contains_key("etc/streamed"), "{tree:?}");
}
