//! The disk: an engine whose state directory is on a small filesystem the test makes (a
//! loop-mounted 256 MiB ext4). An exec that fills it fails with "no space left on device" and the
//! engine keeps serving; once the session that filled it ends, garbage collection under
//! `--gc-min-free` gives the space back.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dagr_testkit::gql::query;
use serde_json::json;

/// A loop-mounted ext4 of `mib` MiB at `<dir>/mnt`, unmounted (and its loop device freed) on
/// drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(mib: u64) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(mib << 20).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir.path().join("mnt")));
        SmallFs { dir }
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(self.mount_point()).unwrap();
        st.f_bavail * st.f_frsize
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // The mount point itself included.
        dagr_testkit::detach_mounts_under(&self.mount_point());
    }
}

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn a_full_disk_fails_the_op_and_gc_gives_the_space_back() {
    let image = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone();
    let fs = SmallFs::new(256);
    let base = fs.mount_point();
    let holder = tempfile::tempdir().unwrap();
    let engine = dagr_testkit::EngineProcess::start_in(
        Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
        &base,
        holder,
        &[
            "--gc-min-free",
            "150M",
            "--gc-reserved",
            "0",
            "--gc-interval",
            "3600",
        ],
    );
    let runs_before = dagr_testkit::metric(&engine.metrics(), "dagr_gc_runs_total").unwrap_or(0);
    let write = |mib: u64, n: &str| {
        format!(
            "{{ container {{ from(address: {img}) {{ withEnvVariable(name: \"N\", value: {n}) {{ withExec(args: [\"dd\", \"if=/dev/zero\", \"of=/big\", \"bs=1M\", \"count={mib}\"]) {{ sync }} }} }} }} }}",
            img = json!(image),
            n = json!(n),
        )
    };
    {
        let client = dagr_testkit::gql::connect(&engine, false).await;
        // Too much for the filesystem: the exec fails with the error it hit (its stderr, in
        // the EXEC_ERROR extension), and the engine carries on.
        let answer = client
            .query(json!({ "query": write(400, "full") }))
            .await
            .unwrap();
        let error = &answer["errors"][0];
        assert_eq!(error["extensions"]["_type"], "EXEC_ERROR", "{answer}");
        let stderr = error["extensions"]["stderr"].as_str().unwrap_or_default();
        assert!(stderr.contains("No space left on device"), "{answer}");
        // The failed exec's writes go with it.
        let start = Instant::now();
        while fs.free() < 200 * MIB {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the failed exec's writes stayed: {} MiB free",
                fs.free() / MIB
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Three results of 40 MiB each fill it past --gc-min-free.
        for n in 0..3 {
            query(&client, write(40, &n.to_string())).await.unwrap();
        }
        assert!(
            fs.free() < 150 * MIB,
            "the results should fill the filesystem: {} MiB free",
            fs.free() / MIB
        );
        client.close().await.unwrap();
    }
    // The session's results are collectable now: GC gets the space back.
    let start = Instant::now();
    while fs.free() < 150 * MIB {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} MiB free after a minute",
            fs.free() / MIB
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let runs = dagr_testkit::metric(&engine.metrics(), "dagr_gc_runs_total").unwrap_or(0);
    assert!(runs > runs_before, "a collection ran");
    // And the engine still builds.
    let client = dagr_testkit::gql::connect(&engine, false).await;
    query(&client, write(10, "after")).await.unwrap();
    client.close().await.unwrap();
}
