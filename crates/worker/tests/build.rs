//! The build core end to end, as root with real runc: the busybox fixture image (built by
//! `dagr_testkit::image` from the host's static busybox, pushed by skopeo into a `docker-registry` on 127.0.0.1) pulled
//! and unpacked by the worker, execs run through the solver, results cached across solves and
//! across a restart, single-flight, cancellation cleanup and file ops.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dagr_solver::{
    CacheSharing, CopyOp, ExecOp, InputRef, MkFileOp, Mount, MountSource, Op, Vertex,
};
use dagr_worker::ResultMeta;

mod common;

use common::{Env, image};

fn exec(root: Arc<Vertex>, args: &[&str], extra_mounts: Vec<Mount>) -> Arc<Vertex> {
    exec_with(vec![root], args, extra_mounts)
}

/// An exec whose rootfs is input 0; `extra_mounts` may name the other inputs.
fn exec_with(inputs: Vec<Arc<Vertex>>, args: &[&str], extra_mounts: Vec<Mount>) -> Arc<Vertex> {
    let mut mounts = vec![Mount {
        dest: "/".into(),
        source: MountSource::Input {
            input: InputRef::main(0),
            path: String::new(),
        },
        readonly: false,
    }];
    mounts.extend(extra_mounts);
    Vertex::new(
        Op::Exec(ExecOp {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: BTreeMap::from([("PATH".to_owned(), "/bin:/usr/bin:/sbin".to_owned())]),
            workdir: "/".into(),
            mounts,
            ..Default::default()
        }),
        inputs,
    )
    .expect("exec vertex")
}

fn counter_mount(volume: &str) -> Mount {
    Mount {
        dest: "/count".into(),
        source: MountSource::Cache {
            id: volume.into(),
            sharing: CacheSharing::Shared,
            base: None,
        },
        readonly: false,
    }
}

fn stdout(solved: &dagr_solver::Solved) -> String {
    ResultMeta::of(&solved.result)
        .exec
        .expect("exec meta")
        .stdout
}

/// Lines in the counter volume: one per time an exec that appends to it actually ran.
fn runs(env: &Env, volume: &str) -> usize {
    use sha2::Digest as _;
    let dir = env
        .state
        .join("cache-volumes")
        .join(hex::encode(sha2::Sha256::digest(volume.as_bytes())));
    std::fs::read_to_string(dir.join("runs")).map_or(0, |s| s.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_from_the_pulled_image_and_exit_codes() {
    let env = Env::with_secrets(BTreeMap::from([(
        "s1".to_owned(),
        Bytes::from_static(b"hunter2"),
    )]));
    let solver = env.open();
    let solved = solver
        .solve(
            &exec(image(), &["echo", "hello from busybox"], vec![]),
            "s",
            &dagr_telemetry::SpanCx::off(),
        )
        .await
        .expect("solve");
    assert_eq!(stdout(&solved), "hello from busybox\n");

    let err = solver
        .solve(
            &exec(
                image(),
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
                vec![],
            ),
            "s",
            &dagr_telemetry::SpanCx::off(),
        )
        .await
        .expect_err("fails");
    let exec_err = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<dagr_solver::RunError>())
        .and_then(|e| e.downcast_ref::<dagr_worker::WorkerError>());
    let msg = err.to_string();
    assert!(msg.contains("exit code: 3"), "{msg}");
    let Some(dagr_worker::WorkerError::ExecFailed(dagr_worker::ExecFailed {
        exit_code,
        stdout,
        stderr,
        ..
    })) = exec_err
    else {
        panic!("not an ExecFailed: {err:?}");
    };
    assert_eq!(*exit_code, 3);
    assert_eq!(&stdout[..], b"out\n");
    assert_eq!(&stderr[..], b"err\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_step_graph_cached_within_and_across_restarts() {
    let env = Env::with_secrets(BTreeMap::from([(
        "s1".to_owned(),
        Bytes::from_static(b"hunter2"),
    )]));
    let volume = "counter-3step";
    let step1 = exec(
        image(),
        &["sh", "-c", "echo 1 >> /count/runs; echo one > /one"],
        vec![counter_mount(volume)],
    );
    let step2 = exec(
        step1,
        &[
            "sh",
            "-c",
            "echo 2 >> /count/runs; cat /one > /two; echo two >> /two",
        ],
        vec![counter_mount(volume)],
    );
    let step3 = exec(
        step2,
        &["sh", "-c", "echo 3 >> /count/runs; cat /two"],
        vec![counter_mount(volume)],
    );
    {
        let solver = env.open();
        let first = solver
            .solve(&step3, "s", &dagr_telemetry::SpanCx::off())
            .await
            .expect("cold");
        assert_eq!(stdout(&first), "one\ntwo\n");
        assert_eq!(runs(&env, volume), 3);
        let second = solver
            .solve(&step3, "s", &dagr_telemetry::SpanCx::off())
            .await
            .expect("warm");
        assert_eq!(second.result, first.result);
        assert_eq!(runs(&env, volume), 3, "nothing ran again");
        solver.flush().expect("flush");
    }
    // A new solver and worker on the same state: still cached.
    let solver = env.open();
    let third = solver
        .solve(&step3, "s2", &dagr_telemetry::SpanCx::off())
        .await
        .expect("after restart");
    assert_eq!(stdout(&third), "one\ntwo\n");
    assert_eq!(runs(&env, volume), 3, "nothing ran after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_solves_run_the_exec_once() {
    let env = Env::with_secrets(BTreeMap::from([(
        "s1".to_owned(),
        Bytes::from_static(b"hunter2"),
    )]));
    let solver = env.open();
    let volume = "counter-20";
    let v = exec(
        image(),
        &["sh", "-c", "echo x >> /count/runs; sleep 0.5; echo done"],
        vec![counter_mount(volume)],
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let solver = solver.clone();
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            solver
                .solve(&v, &format!("s{i}"), &dagr_telemetry::SpanCx::off())
                .await
        }));
    }
    for t in tasks {
        let solved = t.await.expect("join").expect("solve");
        assert_eq!(stdout(&solved), "done\n");
    }
    assert_eq!(runs(&env, volume), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_exec_leaves_nothing_behind() {
    let env = Env::with_secrets(BTreeMap::from([(
        "s1".to_owned(),
        Bytes::from_static(b"hunter2"),
    )]));
    let solver = env.open();
    // Pull first so the cancelled solve is inside the exec.
    solver
        .solve(&image(), "s", &dagr_telemetry::SpanCx::off())
        .await
        .expect("pull");
    let v = exec(
        image(),
        &["sh", "-c", "touch /count/started; sleep 1000"],
        vec![counter_mount("cancel")],
    );
    let s2 = solver.clone();
    let task = tokio::spawn(async move { s2.solve(&v, "s", &dagr_telemetry::SpanCx::off()).await });
    let started = {
        use sha2::Digest as _;
        env.state
            .join("cache-volumes")
            .join(hex::encode(sha2::Sha256::digest(b"cancel")))
            .join("started")
    };
    for _ in 0..600 {
        if started.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.exists(), "the exec started");
    task.abort();
    let _ = task.await;
    // Cleanup runs in drop guards (and a spawned snapshot removal): wait for it (hang protection).
    let runc_root = env.state.join("exec/runc");
    let mut clean = false;
    for _ in 0..200 {
        let listed = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
            .expect("runc list");
        let containers = String::from_utf8_lossy(&listed.stdout).trim().to_owned();
        let bundles = std::fs::read_dir(env.state.join("exec/bundles")).map_or(0, |d| d.count());
        let work = std::fs::read_dir(env.state.join("work")).map_or(0, |d| d.count());
        let active = solver
            .runner()
            .snapshots()
            .list()
            .expect("list")
            .into_iter()
            .filter(|i| i.kind != dagr_snapshot::Kind::Committed)
            .count();
        if containers.is_empty()
            && bundles == 0
            && work == 0
            && active == 0
            && dagr_testkit::mounts_under(&env.state).is_empty()
        {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        clean,
        "left behind: mounts {:?}, snapshots {:?}",
        dagr_testkit::mounts_under(&env.state),
        solver.runner().snapshots().list().expect("list")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_ops_secrets_and_mount_outputs() {
    let env = Env::with_secrets(BTreeMap::from([(
        "s1".to_owned(),
        Bytes::from_static(b"hunter2"),
    )]));
    let solver = env.open();
    let base = image();
    let with_file = Vertex::new(
        Op::MkFile(MkFileOp {
            base: InputRef::main(0),
            path: "/data/hello.txt".into(),
            contents: b"hello file".to_vec(),
            mode: 0o640,
            owner: None,
        }),
        vec![base.clone()],
    )
    .expect("mkfile");
    let empty = Vertex::new(Op::Empty, vec![]).expect("empty");
    let copied = Vertex::new(
        Op::Copy(CopyOp {
            base: InputRef::main(0),
            from: InputRef::main(1),
            src: "/data".into(),
            dest: "/copy".into(),
            include: vec![],
            exclude: vec![],
            owner: None,
            mode: None,
            copy_dir_contents: true,
            create_dest_path: true,
            allow_wildcard: false,
            follow_symlinks: false,
            unpack_archive: false,
        }),
        vec![empty, with_file.clone()],
    )
    .expect("copy");
    // Mount the copied directory writable at /mnt, read the secret, and write into the mount.
    let run = exec_with(
        vec![with_file, copied],
        &[
            "sh",
            "-c",
            "cat /data/hello.txt; stat -c %a /data/hello.txt; cat /run/s; echo new > /mnt/new",
        ],
        vec![
            Mount {
                dest: "/mnt".into(),
                source: MountSource::Input {
                    input: InputRef::main(1),
                    path: "/copy".into(),
                },
                readonly: false,
            },
            Mount {
                dest: "/run/s".into(),
                source: MountSource::Secret {
                    secret_id: "s1".into(),
                    uid: 0,
                    gid: 0,
                    mode: 0o400,
                },
                readonly: true,
            },
        ],
    );
    let solved = solver
        .solve(&run, "s", &dagr_telemetry::SpanCx::off())
        .await
        .expect("run");
    assert_eq!(stdout(&solved), "hello file640\nhunter2");
    // Output 1 is the writable mount's snapshot: it has the new file next to the copied one.
    let out1 = dagr_worker::output_snapshot(&solved.result, 1).expect("output 1");
    let view = solver.runner().mount_view(&out1).await.expect("view");
    assert_eq!(
        std::fs::read_to_string(view.path().join("copy/new")).expect("new"),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(view.path().join("copy/hello.txt")).expect("copied"),
        "hello file"
    );
    view.release().await;
    // The secret never landed in the rootfs.
    let root_view = solver
        .runner()
        .mount_view(solved.result.id())
        .await
        .expect("view");
    assert!(
        !root_view.path().join("run/s").exists()
            || std::fs::read(root_view.path().join("run/s"))
                .expect("r")
                .is_empty()
    );
    root_view.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_what_sessions_hold_and_the_index_follows() {
    let env = Env::with_secrets(BTreeMap::from([(
        "s1".to_owned(),
        Bytes::from_static(b"hunter2"),
    )]));
    let solver = env.open();
    let kept = exec(image(), &["sh", "-c", "echo kept > /k"], vec![]);
    let dropped = exec(image(), &["sh", "-c", "echo dropped > /d"], vec![]);
    let kept_result = solver
        .solve(&kept, "holder", &dagr_telemetry::SpanCx::off())
        .await
        .expect("kept")
        .result;
    let dropped_result = solver
        .solve(&dropped, "gone", &dagr_telemetry::SpanCx::off())
        .await
        .expect("dropped")
        .result;
    solver.release_session("gone");
    let worker = solver.runner().clone();
    let report = worker
        .gc(&solver.leased_refs(), 0, Duration::ZERO)
        .await
        .expect("gc");
    assert!(
        report
            .removed_snapshots
            .contains(&dropped_result.id().to_owned()),
        "{report:?}"
    );
    assert!(worker.has_result(&kept_result), "a held result survives");
    assert!(!worker.has_result(&dropped_result));
    let pruned = solver.prune(|r| worker.has_result(r)).expect("prune");
    assert!(!pruned.is_empty());
    // The pruned result is rebuilt on demand.
    let again = solver
        .solve(&dropped, "gone", &dagr_telemetry::SpanCx::off())
        .await
        .expect("rebuilt")
        .result;
    assert!(worker.has_result(&again));
    // A result used within the grace period is never collected.
    let report = worker
        .gc(&[], 0, Duration::from_secs(3600))
        .await
        .expect("gc");
    assert!(report.removed_snapshots.is_empty(), "{report:?}");
    // Collections at the same time (a session ends during `dagr prune`) both complete: each
    // used to delete the other's lease ("lease \"dagr-worker-gc\" not found").
    let held = solver.leased_refs();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let (worker, held) = (worker.clone(), held.clone());
            tokio::spawn(async move { worker.gc(&held, 0, Duration::from_secs(3600)).await })
        })
        .collect();
    for run in runs {
        run.await.expect("gc task").expect("concurrent gc");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_the_blobs_of_held_images_and_an_image_without_them_is_pulled_again() {
    let env = Env::new();
    let solver = env.open();
    let span = dagr_telemetry::SpanCx::off();
    let pulled = solver
        .solve(&image(), "holder", &span)
        .await
        .expect("pull")
        .result;
    let worker = solver.runner().clone();
    // Held by a session: its manifest, config and layers stay (a publish may need them).
    worker
        .gc(&solver.leased_refs(), 0, Duration::ZERO)
        .await
        .expect("gc");
    assert!(worker.has_result(&pulled), "a held image keeps its blobs");
    // No longer held, but its snapshots were just used (the grace): they stay, its blobs go,
    // and the index lets the image go so that the next use pulls the blobs again.
    solver.release_session("holder");
    let report = worker
        .gc(&[], 0, Duration::from_secs(3600))
        .await
        .expect("gc");
    assert!(!report.removed_blobs.is_empty(), "{report:?}");
    assert!(
        !worker.has_result(&pulled),
        "an image without its blobs is not a result"
    );
    let pruned = solver.prune(|r| worker.has_result(r)).expect("prune");
    assert!(!pruned.is_empty());
    let again = solver
        .solve(&image(), "later", &span)
        .await
        .expect("pull again")
        .result;
    assert!(worker.has_result(&again), "the blobs came back");
}
