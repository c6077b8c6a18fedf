//! Snapshotter on both backends: prepare/commit/view/remove through real mounts, and recovery.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestDir, describe};
use dagr_snapshot::{Backend, Kind, SnapshotError, Snapshotter, SnapshotterOptions};

fn open(dir: &TestDir, backend: Option<Backend>) -> Snapshotter {
    Snapshotter::open(&dir.path().join("state"), SnapshotterOptions { backend }).unwrap()
}

#[test]
fn auto_backend_is_overlay_on_this_kernel() {
    let dir = TestDir::new();
    let s = open(&dir, None);
    assert_eq!(s.backend(), Backend::Overlay);
    assert!(!dir.path().join("state/probe").exists());
    assert!(dir.leftover_mounts().is_empty());
}

async fn lifecycle(backend: Backend) {
    let dir = TestDir::new();
    let s = open(&dir, Some(backend));
    let target = dir.subdir("target");

    // Base layer.
    s.prepare("a", None).await.unwrap();
    {
        let g = s.mount("a", &target).unwrap();
        std::fs::create_dir(target.join("etc")).unwrap();
        std::fs::write(target.join("etc/keep"), b"base").unwrap();
        std::fs::write(target.join("etc/modify"), b"base").unwrap();
        std::fs::write(target.join("gone"), b"base").unwrap();
        g.unmount().unwrap();
    }
    s.commit("base", "a").await.unwrap();
    assert!(matches!(s.stat("a"), Err(SnapshotError::NotFound(_))));
    assert_eq!(s.stat("base").unwrap().kind, Kind::Committed);

    // Child on top.
    s.prepare("b", Some("base")).await.unwrap();
    {
        let _g = s.mount("b", &target).unwrap();
        assert_eq!(std::fs::read(target.join("etc/keep")).unwrap(), b"base");
        std::fs::write(target.join("etc/modify"), b"child").unwrap();
        std::fs::remove_file(target.join("gone")).unwrap();
        std::fs::write(target.join("new"), b"child").unwrap();
    }
    s.commit("child", "b").await.unwrap();
    assert_eq!(s.stat("child").unwrap().parent.as_deref(), Some("base"));
    assert!(s.usage("child").await.unwrap().inodes >= 2);

    // Read both back through read-only views.
    s.view("v-child", Some("child")).await.unwrap();
    {
        let _g = s.mount("v-child", &target).unwrap();
        assert_eq!(std::fs::read(target.join("etc/modify")).unwrap(), b"child");
        assert_eq!(std::fs::read(target.join("etc/keep")).unwrap(), b"base");
        assert_eq!(std::fs::read(target.join("new")).unwrap(), b"child");
        assert!(!target.join("gone").exists());
        let err = std::fs::write(target.join("x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    }
    s.view("v-base", Some("base")).await.unwrap();
    {
        let _g = s.mount("v-base", &target).unwrap();
        assert_eq!(std::fs::read(target.join("etc/modify")).unwrap(), b"base");
        assert!(target.join("gone").exists());
        assert!(!target.join("new").exists());
    }
    assert!(
        describe(&target).is_empty(),
        "target must be empty after unmount"
    );

    // Errors name what failed.
    let err = s.prepare("c", Some("v-base")).await.unwrap_err();
    assert!(
        matches!(err, SnapshotError::ParentNotCommitted { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("v-base"));
    assert!(matches!(
        s.prepare("c", Some("nope")).await,
        Err(SnapshotError::ParentNotCommitted { .. })
    ));
    assert!(matches!(
        s.prepare("child", None).await,
        Err(SnapshotError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.commit("z", "v-base").await,
        Err(SnapshotError::WrongKind { .. })
    ));
    assert!(matches!(
        s.mounts("base"),
        Err(SnapshotError::WrongKind { .. })
    ));
    let err = s.remove("base").await.unwrap_err();
    assert!(
        matches!(&err, SnapshotError::HasChildren { children, .. } if children.len() == 2),
        "{err}"
    );

    let keys: Vec<String> = s.list().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, vec!["base", "child", "v-base", "v-child"]);
    for k in ["v-base", "v-child", "child", "base"] {
        s.remove(k).await.unwrap();
    }
    assert!(s.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/snapshots"))
            .unwrap()
            .count(),
        0
    );
    assert!(dir.leftover_mounts().is_empty());
}

#[tokio::test]
async fn lifecycle_overlay() {
    lifecycle(Backend::Overlay).await;
}

#[tokio::test]
async fn lifecycle_copy() {
    lifecycle(Backend::Copy).await;
}

#[tokio::test]
async fn copy_backend_preserves_metadata_links_and_devices() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = TestDir::new();
    let s = open(&dir, Some(Backend::Copy));
    let target = dir.subdir("target");
    s.prepare("a", None).await.unwrap();
    {
        let _g = s.mount("a", &target).unwrap();
        std::fs::write(target.join("f"), b"data").unwrap();
        // chown clears set-id bits, so it goes first.
        std::os::unix::fs::chown(target.join("f"), Some(123), Some(456)).unwrap();
        std::fs::set_permissions(target.join("f"), std::fs::Permissions::from_mode(0o4751))
            .unwrap();
        std::fs::hard_link(target.join("f"), target.join("f2")).unwrap();
        std::os::unix::fs::symlink("/nowhere", target.join("l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            target.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::lsetxattr(
            target.join("f"),
            "user.k",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    s.commit("base", "a").await.unwrap();
    s.prepare("b", Some("base")).await.unwrap();
    let _g = s.mount("b", &target).unwrap();
    let m = std::fs::metadata(target.join("f")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.nlink()),
        (0o4751, 123, 456, 2)
    );
    assert_eq!(m.ino(), std::fs::metadata(target.join("f2")).unwrap().ino());
    assert_eq!(
        std::fs::read_link(target.join("l")).unwrap().to_str(),
        Some("/nowhere")
    );
    assert_eq!(
        std::fs::symlink_metadata(target.join("null"))
            .unwrap()
            .rdev(),
        rustix::fs::makedev(1, 3)
    );
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(target.join("f"), "user.k", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"v");
    // The copy is independent of the parent.
    std::fs::write(target.join("f"), b"changed").unwrap();
    drop(_g);
    s.view("v", Some("base")).await.unwrap();
    let _g = s.mount("v", &target).unwrap();
    assert_eq!(std::fs::read(target.join("f")).unwrap(), b"data");
}

#[tokio::test]
async fn recovery_after_crash_removes_active_orphans_and_mounts() {
    for backend in [Backend::Overlay, Backend::Copy] {
        let dir = TestDir::new();
        let target = dir.subdir("target");
        {
            let s = open(&dir, Some(backend));
            s.prepare("a", None).await.unwrap();
            {
                let _g = s.mount("a", &target).unwrap();
                std::fs::write(target.join("f"), b"committed").unwrap();
            }
            s.commit("base", "a").await.unwrap();
            s.prepare("work", Some("base")).await.unwrap();
            s.view("look", Some("base")).await.unwrap();
            // A mount of the dead process under the state dir.
            let inner_target = dir.path().join("state/mnt/leftover");
            std::fs::create_dir_all(&inner_target).unwrap();
            let g = s.mount("work", &inner_target).unwrap();
            std::fs::write(inner_target.join("scratch"), b"x").unwrap();
            std::mem::forget(g);
            // A directory whose record never got committed.
            std::fs::create_dir_all(dir.path().join("state/snapshots/999/fs")).unwrap();
            // Dropped without any cleanup, as a killed process would leave it.
        }
        assert_eq!(dir.leftover_mounts().len(), 1);
        let s = open(&dir, Some(backend));
        assert!(dir.leftover_mounts().is_empty());
        let keys: Vec<String> = s.list().unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, vec!["base"], "{backend:?}");
        assert!(!dir.path().join("state/snapshots/999").exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("state/snapshots"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("state/mnt"))
                .unwrap()
                .count(),
            0
        );
        // The committed snapshot is intact and usable.
        s.view("again", Some("base")).await.unwrap();
        let _g = s.mount("again", &target).unwrap();
        assert_eq!(std::fs::read(target.join("f")).unwrap(), b"committed");
        assert!(!target.join("scratch").exists());
    }
}

#[tokio::test]
async fn deep_chain_mounts_every_layer() {
    // A long root path makes the lowerdir list exceed one page (4096 bytes) after ~16 layers, so
    // the later mounts go through fsopen/fsconfig with `lowerdir+`.
    let dir = TestDir::new();
    let root = dir.path().join("r".repeat(200)).join("state");
    let s = Snapshotter::open(
        &root,
        SnapshotterOptions {
            backend: Some(Backend::Overlay),
        },
    )
    .unwrap();
    let target = dir.subdir("target");
    let mut parent: Option<String> = None;
    for i in 0..30 {
        s.prepare("tmp", parent.as_deref()).await.unwrap();
        {
            let _g = s.mount("tmp", &target).unwrap();
            std::fs::write(target.join(format!("f{i}")), i.to_string()).unwrap();
        }
        let name = format!("layer-{i}");
        s.commit(&name, "tmp").await.unwrap();
        parent = Some(name);
    }
    let mounts = s.view("top", parent.as_deref()).await.unwrap();
    assert!(mounts[0].options.iter().map(|o| o.len()).sum::<usize>() > 4096);
    let _g = s.mount("top", &target).unwrap();
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 30);
    assert_eq!(std::fs::read_to_string(target.join("f0")).unwrap(), "0");
    assert_eq!(std::fs::read_to_string(target.join("f29")).unwrap(), "29");
    let err = std::fs::write(target.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

/// A writable overlay is mounted `volatile` (its unmount syncs nothing), can be mounted again
/// after it was unmounted, and its commit waits for a sync to be durable.
#[tokio::test]
async fn a_volatile_overlay_mounts_again_and_its_commit_waits_for_a_sync() {
    let dir = TestDir::new();
    let s = open(&dir, Some(Backend::Overlay));
    s.prepare("a", None).await.unwrap();
    s.commit("base", "a").await.unwrap();
    assert!(s.sync().unwrap());
    assert!(!s.sync().unwrap(), "nothing left to sync");
    let mounts = s.prepare("b", Some("base")).await.unwrap();
    assert!(
        mounts[0].options.iter().any(|o| o == "volatile"),
        "{:?}",
        mounts[0].options
    );
    let target = dir.subdir("target");
    {
        let _g = s.mount("b", &target).unwrap();
        std::fs::write(target.join("first"), b"1").unwrap();
    }
    {
        let _g = s.mount("b", &target).unwrap();
        assert_eq!(std::fs::read(target.join("first")).unwrap(), b"1");
        std::fs::write(target.join("second"), b"2").unwrap();
    }
    let before = s.sync_stats();
    assert!(!before.commits_pending, "records alone");
    s.commit("top", "b").await.unwrap();
    assert!(s.sync_stats().commits_pending);
    tokio::time::timeout(std::time::Duration::from_secs(5), s.wait_unsynced())
        .await
        .expect("a commit wakes the sync task");
    assert!(s.sync().unwrap());
    let after = s.sync_stats();
    assert_eq!(after.syncs, before.syncs + 1);
    assert!(!after.commits_pending);
    s.view("look", Some("top")).await.unwrap();
    let _g = s.mount("look", &target).unwrap();
    assert_eq!(std::fs::read(target.join("second")).unwrap(), b"2");
}

#[tokio::test]
async fn overlay_mounts_pin_features_off() {
    let dir = TestDir::new();
    let s = open(&dir, Some(Backend::Overlay));
    s.prepare("a", None).await.unwrap();
    s.commit("base", "a").await.unwrap();
    let mounts = s.prepare("b", Some("base")).await.unwrap();
    assert_eq!(mounts.len(), 1);
    for o in dagr_snapshot::snapshotter::OVERLAY_PINNED_OPTIONS {
        assert!(
            mounts[0].options.iter().any(|x| x == o),
            "{o} missing from {:?}",
            mounts[0].options
        );
    }
    let target = dir.subdir("target");
    let _g = s.mount("b", &target).unwrap();
    std::fs::write(target.join("x"), b"x").unwrap();
}

#[tokio::test]
async fn backend_is_remembered_and_a_second_opener_touches_nothing() {
    let dir = TestDir::new();
    {
        let s = open(&dir, Some(Backend::Copy));
        s.prepare("a", None).await.unwrap();
        s.commit("base", "a").await.unwrap();
    }
    let err = Snapshotter::open(
        &dir.path().join("state"),
        SnapshotterOptions {
            backend: Some(Backend::Overlay),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, SnapshotError::BackendMismatch { .. }),
        "{err}"
    );
    // Auto-detection keeps the recorded backend.
    let s = open(&dir, None);
    assert_eq!(s.backend(), Backend::Copy);

    // While `s` is open and has a live mount, another opener fails without touching it.
    s.prepare("live", Some("base")).await.unwrap();
    let inner = dir.path().join("state/mnt/live");
    std::fs::create_dir_all(&inner).unwrap();
    let _g = s.mount("live", &inner).unwrap();
    std::fs::write(inner.join("f"), b"x").unwrap();
    let err =
        Snapshotter::open(&dir.path().join("state"), SnapshotterOptions::default()).unwrap_err();
    assert!(matches!(err, SnapshotError::Db(_)), "{err}");
    assert_eq!(std::fs::read(inner.join("f")).unwrap(), b"x");
    assert_eq!(dir.leftover_mounts().len(), 1);
    assert_eq!(s.stat("live").unwrap().kind, Kind::Active);
}

/// A kernel without overlayfs: overlay mounts fail with ENODEV, binds work for real.
#[derive(Debug)]
struct NoOverlayKernel;

impl dagr_snapshot::MountSyscalls for NoOverlayKernel {
    fn mount_overlay(&self, _: &std::path::Path, _: &str, _: bool) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::ENODEV))
    }
    fn bind(
        &self,
        source: &std::path::Path,
        target: &std::path::Path,
        recursive: bool,
    ) -> std::io::Result<()> {
        dagr_snapshot::LinuxMounts.bind(source, target, recursive)
    }
    fn remount_read_only(&self, target: &std::path::Path) -> std::io::Result<()> {
        dagr_snapshot::LinuxMounts.remount_read_only(target)
    }
    fn unmount(&self, target: &std::path::Path, detach: bool) -> std::io::Result<()> {
        dagr_snapshot::LinuxMounts.unmount(target, detach)
    }
}

#[tokio::test]
async fn without_overlay_auto_detection_falls_back_to_copy() {
    let dir = TestDir::new();
    let s = Snapshotter::open_with(
        &dir.path().join("state"),
        SnapshotterOptions::default(),
        std::sync::Arc::new(NoOverlayKernel),
    )
    .unwrap();
    assert_eq!(s.backend(), Backend::Copy);
    assert!(!dir.path().join("state/probe").exists());
    let target = dir.subdir("target");
    s.prepare("a", None).await.unwrap();
    {
        let _g = s.mount("a", &target).unwrap();
        std::fs::write(target.join("f"), b"x").unwrap();
    }
    s.commit("base", "a").await.unwrap();
    let mounts = s.prepare("b", Some("base")).await.unwrap();
    assert!(
        mounts
            .iter()
            .all(|m| m.kind == dagr_snapshot::MountKind::Bind)
    );
    let _g = s.mount("b", &target).unwrap();
    assert_eq!(std::fs::read(target.join("f")).unwrap(), b"x");
}
