//! Applying tar layers: content, metadata, whiteouts, and refusal of malicious layers.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use common::{LayerBuilder, describe};
use dagr_snapshot::{ApplyOptions, Compression, Digest, LayerError, apply_layer};

/// A target dir next to a sentinel dir that must never be touched.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    sentinel: std::path::PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let sentinel = tmp.path().join("sentinel");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("keep"), b"original").unwrap();
        Self {
            _tmp: tmp,
            root,
            sentinel,
        }
    }

    fn apply(&self, layer: &[u8]) -> Result<dagr_snapshot::ApplyStats, LayerError> {
        apply_layer(layer, &self.root, &ApplyOptions::default())
    }

    fn assert_sentinel_untouched(&self) {
        let d = describe(&self.sentinel);
        assert_eq!(d.len(), 1, "sentinel dir changed: {d:?}");
        assert_eq!(
            std::fs::read(self.sentinel.join("keep")).unwrap(),
            b"original"
        );
    }
}

#[test]
fn applies_files_dirs_links_devices_with_metadata() {
    let sb = Sandbox::new();
    let layer = LayerBuilder::new()
        .dir("etc", 0o755)
        .file_owned("etc/passwd", b"root:x:0:0", 0o640, 0, 42)
        .file("bin/tool", b"#!/bin/sh", 0o4755)
        .symlink("etc/link", "passwd")
        .symlink("abs", "/etc/passwd")
        .hardlink("etc/passwd2", "etc/passwd")
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/fifo", tar::EntryType::Fifo, 0, 0)
        .tar();
    let stats = sb.apply(&layer).unwrap();
    assert_eq!(stats.diff_id, Digest::of_bytes(&layer));
    assert_eq!(stats.compression, Compression::None);
    assert_eq!(stats.entries, 8);

    let m = std::fs::metadata(sb.root.join("etc/passwd")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!(m.gid(), 42);
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(m.nlink(), 2);
    assert_eq!(
        m.ino(),
        std::fs::metadata(sb.root.join("etc/passwd2"))
            .unwrap()
            .ino()
    );
    assert_eq!(
        std::fs::metadata(sb.root.join("bin/tool")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_link(sb.root.join("etc/link")).unwrap(),
        Path::new("passwd")
    );
    assert_eq!(
        std::fs::read_link(sb.root.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::metadata(sb.root.join("etc")).unwrap().mtime(),
        1_600_000_000
    );
    let dev = std::fs::symlink_metadata(sb.root.join("dev/null")).unwrap();
    assert_eq!(dev.rdev(), rustix::fs::makedev(1, 3));
    use std::os::unix::fs::FileTypeExt as _;
    assert!(dev.file_type().is_char_device());
    assert!(
        std::fs::symlink_metadata(sb.root.join("dev/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    sb.assert_sentinel_untouched();
}

#[test]
fn gzip_and_zstd_are_detected_and_give_the_same_tree() {
    let build = || {
        LayerBuilder::new()
            .dir("a", 0o755)
            .file("a/b", b"hello", 0o644)
    };
    let plain = Sandbox::new();
    let s1 = plain.apply(&build().tar()).unwrap();
    let gz = Sandbox::new();
    let s2 = gz.apply(&build().gzip()).unwrap();
    let zs = Sandbox::new();
    let s3 = zs.apply(&build().zstd()).unwrap();
    assert_eq!(
        (s2.compression, s3.compression),
        (Compression::Gzip, Compression::Zstd)
    );
    assert_eq!(s1.diff_id, s2.diff_id);
    assert_eq!(s1.diff_id, s3.diff_id);
    assert_eq!(describe(&plain.root), describe(&gz.root));
    assert_eq!(describe(&plain.root), describe(&zs.root));
}

#[test]
fn whiteouts_and_opaque_dirs() {
    let sb = Sandbox::new();
    sb.apply(
        &LayerBuilder::new()
            .file("keep", b"1", 0o644)
            .file("gone", b"1", 0o644)
            .file("d/sub/deep", b"1", 0o644)
            .file("o/old1", b"1", 0o644)
            .file("o/olddir/x", b"1", 0o644)
            .tar(),
    )
    .unwrap();
    sb.apply(
        &LayerBuilder::new()
            .whiteout("", "gone")
            .whiteout("d", "sub")
            .whiteout("", "never-existed")
            .dir(".wh..wh.plnk", 0o700)
            .file(".wh..wh.plnk/1.2", b"aufs", 0o644)
            .dir("o", 0o755)
            .file("o/new-before", b"2", 0o644)
            .opaque("o")
            .file("o/new-after", b"2", 0o644)
            .tar(),
    )
    .unwrap();
    let tree = describe(&sb.root);
    let names: Vec<&str> = tree.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["d", "keep", "o", "o/new-after", "o/new-before"]);
}

#[test]
fn symlink_chains_are_kept_as_links_and_replaced_not_followed() {
    let sb = Sandbox::new();
    let outside = sb.sentinel.join("keep");
    sb.apply(
        &LayerBuilder::new()
            .symlink("l1", "l2")
            .symlink("l2", "l3")
            .symlink("l3", outside.to_str().unwrap())
            .tar(),
    )
    .unwrap();
    // Writing a file over a symlink replaces the link; it never writes through it.
    sb.apply(
        &LayerBuilder::new()
            .file("l1", b"replaced", 0o644)
            .file("l3", b"also", 0o644)
            .tar(),
    )
    .unwrap();
    assert_eq!(std::fs::read(sb.root.join("l1")).unwrap(), b"replaced");
    assert_eq!(
        std::fs::read_link(sb.root.join("l2")).unwrap(),
        Path::new("l3")
    );
    assert!(
        std::fs::symlink_metadata(sb.root.join("l3"))
            .unwrap()
            .is_file()
    );
    sb.assert_sentinel_untouched();
}

fn assert_unsafe(err: LayerError, path_part: &str) {
    let msg = err.to_string();
    assert!(
        matches!(err, LayerError::UnsafePath { .. }),
        "unexpected error: {msg}"
    );
    assert!(
        msg.contains(path_part),
        "error should name {path_part}: {msg}"
    );
}

#[test]
fn path_traversal_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .apply(
            &LayerBuilder::new()
                .file("../sentinel/keep", b"evil", 0o644)
                .tar(),
        )
        .unwrap_err();
    assert_unsafe(err, "../sentinel/keep");
    let err = sb
        .apply(
            &LayerBuilder::new()
                .file("a/../../../etc/x", b"evil", 0o644)
                .tar(),
        )
        .unwrap_err();
    assert_unsafe(err, "a/../../../etc/x");
    let err = sb
        .apply(&LayerBuilder::new().whiteout("..", "sentinel").tar())
        .unwrap_err();
    assert_unsafe(err, "../.wh.sentinel");
    sb.assert_sentinel_untouched();
}

#[test]
fn absolute_paths_land_inside_the_tree() {
    let sb = Sandbox::new();
    let abs = format!("{}/keep", sb.sentinel.display());
    sb.apply(&LayerBuilder::new().file(&abs, b"inside", 0o644).tar())
        .unwrap();
    let inside = sb.root.join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"inside");
    sb.assert_sentinel_untouched();
}

#[test]
fn symlink_escape_is_refused() {
    let sb = Sandbox::new();
    let target = sb.sentinel.to_str().unwrap().to_owned();
    let err = sb
        .apply(
            &LayerBuilder::new()
                .symlink("a", &target)
                .file("a/keep", b"evil", 0o644)
                .tar(),
        )
        .unwrap_err();
    assert_unsafe(err, "a/keep");
    // Relative escape, across two layers, and a dir symlink in the middle of a path.
    sb.apply(&LayerBuilder::new().symlink("up", "../sentinel").tar())
        .unwrap();
    let err = sb
        .apply(&LayerBuilder::new().file("up/new", b"evil", 0o644).tar())
        .unwrap_err();
    assert_unsafe(err, "up/new");
    let err = sb
        .apply(&LayerBuilder::new().whiteout("up", "keep").tar())
        .unwrap_err();
    assert_unsafe(err, "up/.wh.keep");
    let err = sb
        .apply(&LayerBuilder::new().opaque("up").tar())
        .unwrap_err();
    assert_unsafe(err, "up/.wh..wh..opq");
    sb.assert_sentinel_untouched();
}

#[test]
fn hard_link_escape_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .apply(&LayerBuilder::new().hardlink("h", "../sentinel/keep").tar())
        .unwrap_err();
    assert_unsafe(err, "\"h\"");
    let target = sb.sentinel.to_str().unwrap().to_owned();
    let err = sb
        .apply(
            &LayerBuilder::new()
                .symlink("s", &target)
                .hardlink("h", "s/keep")
                .tar(),
        )
        .unwrap_err();
    assert_unsafe(err, "s/keep");
    // An absolute target is inside the tree, where it does not exist.
    let err = sb
        .apply(
            &LayerBuilder::new()
                .hardlink("h2", &format!("{target}/keep"))
                .tar(),
        )
        .unwrap_err();
    assert!(matches!(err, LayerError::LinkTargetMissing { .. }), "{err}");
    assert!(!sb.root.join("h2").exists());
    assert_eq!(
        std::fs::metadata(sb.sentinel.join("keep")).unwrap().nlink(),
        1
    );
    sb.assert_sentinel_untouched();
}

#[test]
fn ten_gib_bombs_are_refused_before_writing() {
    let sb = Sandbox::new();
    let err = sb
        .apply(
            &LayerBuilder::new()
                .file_declaring("bomb", 10 << 30, 512)
                .tar(),
        )
        .unwrap_err();
    assert!(
        matches!(err, LayerError::EntryTooLarge { size, .. } if size == 10 << 30),
        "{err}"
    );
    assert!(err.to_string().contains("bomb"));
    assert!(!sb.root.join("bomb").exists());

    let err = sb
        .apply(&LayerBuilder::new().sparse_bomb("sparse", 10 << 30).tar())
        .unwrap_err();
    assert!(
        matches!(err, LayerError::EntryTooLarge { size, .. } if size == 10 << 30),
        "{err}"
    );
    assert!(err.to_string().contains("sparse"));
    assert!(!sb.root.join("sparse").exists());

    // Many files each under the entry bound, together over the total bound.
    let opts = ApplyOptions {
        max_entry_bytes: 1 << 20,
        max_total_bytes: 1 << 20,
        ..ApplyOptions::default()
    };
    let mut b = LayerBuilder::new();
    for i in 0..3 {
        b = b.file_declaring(&format!("f{i}"), 400 << 10, 400 << 10);
    }
    let err = apply_layer(&b.tar()[..], &sb.root, &opts).unwrap_err();
    assert!(matches!(err, LayerError::TotalTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("f2"), "{err}");
    sb.assert_sentinel_untouched();
}

#[test]
fn data_shorter_than_declared_is_refused() {
    let sb = Sandbox::new();
    // Header declares 1 MiB, the archive ends after 4 KiB (no end-of-archive blocks either).
    let mut layer = LayerBuilder::new()
        .file_declaring("short", 1 << 20, 4096)
        .tar();
    layer.truncate(512 + 4096);
    let err = sb.apply(&layer).unwrap_err();
    assert!(
        matches!(err, LayerError::Truncated { size, actual, .. } if size == 1 << 20 && actual == 4096),
        "{err}"
    );
    assert!(err.to_string().contains("short"));
}

#[test]
fn empty_numeric_header_fields_read_as_zero() {
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    // uid, gid and mtime left empty, as some writers do.
    b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
    sb.apply(&b.into_inner().unwrap()).unwrap();
    let m = std::fs::metadata(sb.root.join("f")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mtime()), (0, 0, 0));
    // A field with garbage is still an error.
    let mut layer = LayerBuilder::new().file("g", b"x", 0o644).tar();
    layer[108..115].copy_from_slice(b"zzzzzzz"); // uid field
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&layer[..512]);
    h.set_cksum();
    layer[..512].copy_from_slice(h.as_bytes());
    let err = sb.apply(&layer).unwrap_err();
    assert!(matches!(err, LayerError::Read(_)), "{err}");
}

#[test]
fn entry_count_and_trailing_data_are_bounded() {
    let sb = Sandbox::new();
    let mut b = LayerBuilder::new();
    for i in 0..5 {
        b = b.file(&format!("e{i}"), b"", 0o644);
    }
    let opts = ApplyOptions {
        max_entries: 4,
        ..ApplyOptions::default()
    };
    let err = apply_layer(&b.tar()[..], &sb.root, &opts).unwrap_err();
    assert!(
        matches!(err, LayerError::TooManyEntries { limit: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("e4"), "{err}");

    let mut layer = LayerBuilder::new().file("x", b"1", 0o644).tar();
    layer.extend(std::iter::repeat_n(0u8, (1 << 20) + 4096));
    let err = sb.apply(&layer).unwrap_err();
    assert!(matches!(err, LayerError::TrailingData { .. }), "{err}");
    // Ordinary padding is fine and part of the diff id.
    let mut padded = LayerBuilder::new().file("y", b"1", 0o644).tar();
    padded.extend(std::iter::repeat_n(0u8, 10240));
    assert_eq!(
        sb.apply(&padded).unwrap().diff_id,
        Digest::of_bytes(&padded)
    );
}
