//! Shared fixtures of the integration tests: a busybox rootfs and an executor in a temp state dir.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use dagr_executor::{Executor, ExecutorConfig};
use tempfile::TempDir;

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\nwheel:x:10:app\napp:x:1000:\n";

/// Builds a busybox rootfs in `dir`: `/bin/busybox` plus one symlink per applet, and
/// `/etc/passwd` + `/etc/group` with `root` and `app` (1000).
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    assert!(list.status.success());
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for d in ["etc", "tmp", "proc", "dev", "sys", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(dir.join("etc/group"), GROUP).unwrap();
}

/// The OCI runtime these tests run on: runc, or the binary `DAGR_TEST_RUNTIME` names (`cargo
/// xtask test` runs the suite a second time on `dagr-launcher`).
pub fn test_runtime() -> PathBuf {
    std::env::var_os("DAGR_TEST_RUNTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("runc"))
}

/// An executor with its own state dir and a busybox rootfs, both removed on drop.
pub struct Fixture {
    pub executor: Executor,
    pub state: TempDir,
    pub rootfs: TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub fn with_config(adjust: impl FnOnce(&mut ExecutorConfig)) -> Self {
        let state = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        busybox_rootfs(rootfs.path());
        let mut config = ExecutorConfig::new(state.path());
        config.runtime_binary = test_runtime();
        // dagr-launcher runs every exec but terminals on a launcher placed in its cgroups.
        if config.runtime_binary.ends_with("dagr-launcher") {
            config.placed_launchers = 2;
        }
        adjust(&mut config);
        let executor = Executor::new(config);
        executor
            .runtime()
            .check()
            .expect("runc is required for these tests");
        Fixture {
            executor,
            state,
            rootfs,
        }
    }

    /// Runs `spec` on the fixture's rootfs with default options; its error.
    pub async fn run_err(&self, spec: &dagr_executor::ExecSpec) -> dagr_executor::ExecError {
        self.executor
            .run(&self.rootfs(), spec, dagr_executor::RunOptions::default())
            .await
            .expect_err("the run should fail")
    }

    pub fn rootfs(&self) -> dagr_executor::Rootfs {
        dagr_executor::Rootfs::Directory(self.rootfs.path().to_path_buf())
    }

    /// Asserts that no exec left anything behind once the executor is idle (cleanups finish in
    /// the background): no container in the runtime's state root, no mount under the state
    /// dir, no bundle, no netns file.
    pub async fn assert_clean(&self) {
        self.executor.wait_idle().await;
        self.assert_nothing_left();
    }

    /// [`Fixture::assert_clean`] without waiting for the executor to be idle: for a test that
    /// lost an exec (its run future forgotten), which the executor would wait for forever.
    pub fn assert_nothing_left(&self) {
        let containers = self.executor.runtime().list_blocking().unwrap();
        assert!(containers.is_empty(), "containers left: {containers:?}");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let state = self.state.path().to_string_lossy().to_string();
        let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&state)).collect();
        assert!(left.is_empty(), "mounts left: {left:?}");
        for dir in [self.executor.bundles_dir(), self.executor.netns_dir()] {
            if dir.exists() {
                let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
                assert!(entries.is_empty(), "left in {}: {entries:?}", dir.display());
            }
        }
    }
}

pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}
