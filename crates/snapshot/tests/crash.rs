//! Real crash: a child process works on the snapshotter and is killed with SIGKILL mid-flight;
//! reopening recovers a consistent state, with everything synced before the kill.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use common::TestDir;
use dagr_snapshot::{Backend, Kind, Snapshotter, SnapshotterOptions};

/// Kills (SIGKILL) and reaps the child on drop, also when an assertion fails.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CHILD_ENV: &str = "DAGR_SNAPSHOT_CRASH_CHILD_DIR";

/// Not a test on its own: the body of the child process of `kill9_during_work_recovers`.
#[tokio::test]
#[ignore = "run only as the child of kill9_during_work_recovers"]
async fn kill9_child() {
    let dir = std::path::PathBuf::from(std::env::var(CHILD_ENV).unwrap());
    let s = Snapshotter::open(
        &dir.join("state"),
        SnapshotterOptions {
            backend: Some(Backend::Overlay),
        },
    )
    .unwrap();
    let start = s
        .list()
        .unwrap()
        .iter()
        .filter(|i| i.kind == Kind::Committed)
        .count();
    let mut parent = s
        .list()
        .unwrap()
        .into_iter()
        .filter(|i| i.kind == Kind::Committed)
        .map(|i| i.key)
        .max_by_key(|k| k.trim_start_matches("c").parse::<u64>().unwrap_or(0));
    let target = dir.join(format!("target-{}", std::process::id()));
    std::fs::create_dir_all(&target).unwrap();
    for i in start.. {
        let key = format!("active-{i}");
        s.prepare(&key, parent.as_deref()).await.unwrap();
        let g = s.mount(&key, &target).unwrap();
        std::fs::write(target.join(format!("f{i}")), vec![b'x'; 64 * 1024]).unwrap();
        if i % 3 == 0 {
            // Leave it mounted while committing elsewhere: the kill may catch a live mount.
            std::mem::forget(g);
            let other = dir.join("state/mnt").join(format!("leftover-{i}"));
            std::fs::create_dir_all(&other).unwrap();
            s.view(&format!("view-{i}"), parent.as_deref())
                .await
                .unwrap();
            std::mem::forget(s.mount(&format!("view-{i}"), &other).unwrap());
            let _ = rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH);
        } else {
            g.unmount().unwrap();
        }
        let name = format!("c{i}");
        s.commit(&name, &key).await.unwrap();
        let lease = format!("lease-{i}");
        s.create_lease(&lease).await.unwrap();
        s.lease_snapshot(&lease, &name).await.unwrap();
        parent = Some(name);
        println!("committed {i}");
        // Every other commit is synced: the kill finds synced and unsynced work.
        if i % 2 == 0 {
            assert!(s.sync().unwrap());
            println!("synced {i}");
        }
        std::io::stdout().flush().unwrap();
    }
}

#[tokio::test]
async fn kill9_during_work_recovers() {
    let dir = TestDir::new();
    for round in 1..=3 {
        let mut child = ChildGuard(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "kill9_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Kill it at a different point each round.
        let wanted = 2 * round + 1;
        let mut seen = 0;
        let mut synced: Option<usize> = None;
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        while seen < wanted {
            let line = lines.next().expect("child exited early").unwrap();
            if line.starts_with("committed ") {
                seen += 1;
            }
            if let Some(i) = line.strip_prefix("synced ") {
                synced = Some(i.parse().unwrap());
            }
        }
        drop(child);

        let s = Snapshotter::open(
            &dir.path().join("state"),
            SnapshotterOptions {
                backend: Some(Backend::Overlay),
            },
        )
        .unwrap();
        // Mounts of the dead process under the state dir are gone (the child's own targets outside
        // it are its owner's business; TestDir detaches them at the end).
        let state = std::fs::canonicalize(dir.path().join("state")).unwrap();
        assert!(
            dagr_snapshot::mount::mounts_under(&state)
                .unwrap()
                .is_empty(),
            "round {round}"
        );
        let infos = s.list().unwrap();
        assert!(
            infos.iter().all(|i| i.kind == Kind::Committed),
            "round {round}: {infos:?}"
        );
        // What was synced survived; every committed snapshot is whole: its view shows one
        // file per layer below it.
        let top = infos
            .iter()
            .max_by_key(|i| i.key.trim_start_matches('c').parse::<u64>().unwrap())
            .expect("synced snapshots survive");
        let depth = top.key.trim_start_matches('c').parse::<usize>().unwrap() + 1;
        assert!(
            synced.is_some_and(|f| depth > f),
            "round {round}: synced up to {synced:?}, {depth} survived"
        );
        assert!(infos.len() >= depth, "round {round}");
        let view = dir.subdir("check");
        s.view("check", Some(&top.key)).await.unwrap();
        {
            let _g = s.mount("check", &view).unwrap();
            assert_eq!(
                std::fs::read_dir(&view).unwrap().count(),
                depth,
                "round {round}"
            );
        }
        s.remove("check").await.unwrap();
        // Each committed snapshot's lease survived with it (a lease may also be ahead by one).
        let leases = s.leases().unwrap();
        assert!(leases.len() >= infos.len() - 1, "round {round}");
        let ids: Vec<String> = std::fs::read_dir(dir.path().join("state/snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(ids.len(), infos.len(), "round {round}: orphan dirs {ids:?}");
    }
}
