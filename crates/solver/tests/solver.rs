//! Solver behaviour through the runner seam: caching, persistence, single-flight, cancellation,
//! failures, content-keyed host reads, resolved images, exec limits, leases and pruning,
//! remote cache imports and the results a session may export.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use dagr_solver::{Op, SolveError, Solver, Vertex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_step_graph_solved_twice_runs_each_op_once() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open(dir.path(), TestRunner::default());
    let graph = exec(&mkfile(&empty(), "/a", "A"), &["write", "/b", "B"]);

    let first = solver
        .solve(&graph, "s1", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(
        solver.runner().calls(),
        ["empty ", "mkfile /a", "exec write /b B"]
    );
    let fs = files(&first.result);
    assert_eq!(fs.get("/a").map(String::as_str), Some("A"));
    assert_eq!(fs.get("/b").map(String::as_str), Some("B"));
    assert_eq!(first.key, graph.structural_key());

    let second = solver
        .solve(&graph, "s1", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(solver.runner().calls().len(), 3);
    assert_eq!(solver.cached_count(), 3);

    // A graph sharing the first two steps runs only its new step.
    let other = exec(&mkfile(&empty(), "/a", "A"), &["write", "/c", "C"]);
    solver
        .solve(&other, "s1", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(solver.runner().calls().len(), 4);
    assert_eq!(solver.runner().calls()[3], "exec write /c C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_index_answers_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let graph = exec(&mkfile(&empty(), "/a", "A"), &["write", "/b", "B"]);
    let first = {
        let solver = open(dir.path(), TestRunner::default());
        let solved = solver
            .solve(&graph, "s1", &dagr_telemetry::SpanCx::off())
            .await
            .unwrap();
        assert_eq!(solver.runner().calls().len(), 3);
        solved
    };
    let solver = open(dir.path(), TestRunner::default());
    assert_eq!(solver.cached_count(), 3);
    let again = solver
        .solve(&graph, "s2", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(again, first);
    assert!(solver.runner().calls().is_empty());
    // A new step on top of the restored cache runs only itself.
    solver
        .solve(
            &exec(&graph, &["write", "/c", "C"]),
            "s2",
            &dagr_telemetry::SpanCx::off(),
        )
        .await
        .unwrap();
    assert_eq!(solver.runner().calls(), ["exec write /c C"]);
    let entries = solver.entries();
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|e| e.last_used_unix >= e.created_unix));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_identical_solves_run_the_exec_once() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open(dir.path(), TestRunner::default());
    let graph = exec(&empty(), &["block", "x"]);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let solver = solver.clone();
            let graph = Arc::clone(&graph);
            tokio::spawn(async move {
                solver
                    .solve(&graph, &format!("s{i}"), &dagr_telemetry::SpanCx::off())
                    .await
            })
        })
        .collect();
    wait_until("the exec to start", || {
        solver.runner().execs_running.load(Ordering::SeqCst) == 1
    })
    .await;
    // Give every task time to join the flight before the exec finishes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    solver.runner().gate.open();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert_eq!(solver.runner().count("exec"), 1);
    assert_eq!(solver.runner().count("empty"), 1);
    assert!(results.iter().all(|r| *r == results[0]));
    assert_eq!(solver.leased_refs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_is_cancelled_when_every_waiter_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open(dir.path(), TestRunner::default());
    let graph = exec(&empty(), &["block", "c"]);
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let solver = solver.clone();
            let graph = Arc::clone(&graph);
            tokio::spawn(async move {
                solver
                    .solve(&graph, &format!("s{i}"), &dagr_telemetry::SpanCx::off())
                    .await
            })
        })
        .collect();
    wait_until("the exec to start", || {
        solver.runner().execs_running.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The running exec's input is in use: GC must keep it.
    let in_use = solver.leased_refs();
    assert_eq!(in_use.len(), 1);
    assert!(files(&in_use[0]).is_empty());
    let mut tasks = tasks.into_iter();
    let last = tasks.next().unwrap();
    for t in tasks {
        t.abort();
        assert!(t.await.unwrap_err().is_cancelled());
    }
    // One waiter left: the exec keeps running.
    assert_eq!(solver.runner().dropped.load(Ordering::SeqCst), 0);
    assert_eq!(solver.runner().execs_running.load(Ordering::SeqCst), 1);
    last.abort();
    assert!(last.await.unwrap_err().is_cancelled());
    // The flight's task is aborted; its future (and the runner's) is dropped soon after.
    wait_until("the runner's future to be dropped", || {
        solver.runner().dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(solver.runner().execs_running.load(Ordering::SeqCst), 0);
    // Nobody holds anything any more: the running exec's input was only pinned while it ran.
    assert!(solver.leased_refs().is_empty());

    // Nothing was cached for the exec: a later solve runs it again.
    solver.runner().gate.open();
    let solved = solver
        .solve(&graph, "s9", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(files(&solved.result)["/blocked"], "c");
    assert_eq!(solver.runner().count("exec"), 2);
    assert_eq!(solver.runner().count("empty"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_one_of_two_waiters_does_not_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open(dir.path(), TestRunner::default());
    let graph = exec(&empty(), &["block", "k"]);
    let first = {
        let (solver, graph) = (solver.clone(), Arc::clone(&graph));
        tokio::spawn(async move {
            solver
                .solve(&graph, "a", &dagr_telemetry::SpanCx::off())
                .await
        })
    };
    let second = {
        let (solver, graph) = (solver.clone(), Arc::clone(&graph));
        tokio::spawn(async move {
            solver
                .solve(&graph, "b", &dagr_telemetry::SpanCx::off())
                .await
        })
    };
    wait_until("the exec to start", || {
        solver.runner().execs_running.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    solver.runner().gate.open();
    let solved = second.await.unwrap().unwrap();
    assert_eq!(files(&solved.result)["/blocked"], "k");
    assert_eq!(solver.runner().dropped.load(Ordering::SeqCst), 0);
    assert_eq!(solver.runner().count("exec"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_op_error_reaches_all_waiters_and_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open(dir.path(), TestRunner::default());
    solver.runner().failing.store(true, Ordering::SeqCst);
    let graph = exec(&mkfile(&empty(), "/a", "A"), &["fail"]);
    let tasks: Vec<_> = (0..2)
        .map(|i| {
            let solver = solver.clone();
            let graph = Arc::clone(&graph);
            tokio::spawn(async move {
                solver
                    .solve(&graph, &format!("s{i}"), &dagr_telemetry::SpanCx::off())
                    .await
            })
        })
        .collect();
    wait_until("the exec to start", || {
        solver.runner().execs_running.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    solver.runner().gate.open();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        match &err {
            SolveError::Run { kind, key, source } => {
                assert_eq!(*kind, "exec");
                assert_eq!(*key, graph.structural_key());
                assert_eq!(source.to_string(), "exit code 1");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("exit code 1"));
    }
    assert_eq!(solver.runner().count("exec"), 1);
    // Inputs that succeeded stay cached; the failure does not.
    assert_eq!(solver.cached_count(), 2);
    assert!(solver.leased_refs().is_empty());

    solver.runner().failing.store(false, Ordering::SeqCst);
    solver
        .solve(&graph, "s0", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(solver.runner().count("exec"), 2);
    assert_eq!(solver.runner().count("mkfile"), 1);
    assert_eq!(solver.cached_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_panic_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open(dir.path(), TestRunner::default());
    let graph = exec(&empty(), &["panic"]);
    let err = solver
        .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap_err();
    assert!(matches!(err, SolveError::Panicked { key } if key == graph.structural_key()));
    let graph = mkfile(&image("panic"), "/a", "a");
    let err = solver
        .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap_err();
    assert!(matches!(err, SolveError::Panicked { key } if key == image("panic").structural_key()));
    // The solver still works.
    solver
        .solve(
            &exec(&empty(), &["write", "/x", "y"]),
            "s",
            &dagr_telemetry::SpanCx::off(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_dir_dependents_are_keyed_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("main.go"), "package main").unwrap();
    let solver = open(&dir.path().join("db").tap_create(), TestRunner::default());
    let graph = exec(&mkfile(&host_dir(&host), "/b", "B"), &["write", "/c", "C"]);
    assert!(graph.needs_runtime_key());

    let first = solver
        .solve(&graph, "s1", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(
        solver.runner().calls(),
        [
            format!("host_dir {}", host.display()),
            "mkfile /b".into(),
            "exec write /c C".into()
        ]
    );
    assert_eq!(files(&first.result)["/main.go"], "package main");
    assert_ne!(first.key, graph.structural_key());

    // Same content: the host is read again, its dependents are cached.
    let second = solver
        .solve(&graph, "s1", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(solver.runner().count("host_dir"), 2);
    assert_eq!(solver.runner().calls().len(), 4);
    // The second read's copy of the unchanged tree is dropped at once; the first is kept.
    let discarded = solver.runner().discarded.lock().clone();
    assert_eq!(discarded.len(), 1, "{discarded:?}");
    assert_ne!(discarded[0].0, discarded[0].1);
    assert_eq!(solver.cached_count(), 3);

    // Changed content: dependents run again.
    std::fs::write(host.join("main.go"), "package main // changed").unwrap();
    let third = solver
        .solve(&graph, "s1", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_ne!(third.key, first.key);
    assert_eq!(files(&third.result)["/main.go"], "package main // changed");
    assert_eq!(solver.runner().count("host_dir"), 3);
    assert_eq!(solver.runner().count("mkfile"), 2);
    assert_eq!(solver.runner().count("exec"), 2);

    // Back to the first content: cached again, even across a restart.
    std::fs::write(host.join("main.go"), "package main").unwrap();
    drop(solver);
    let solver = open(&dir.path().join("db"), TestRunner::default());
    let fourth = solver
        .solve(&graph, "s1", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(fourth, first);
    assert_eq!(
        solver.runner().calls(),
        [format!("host_dir {}", host.display())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_dir_used_twice_in_one_graph_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("f"), "1").unwrap();
    let solver = open(dir.path(), TestRunner::default());
    let h = host_dir(&host);
    let graph = merge(&mkfile(&h, "/x", "x"), &mkfile(&h, "/y", "y"));
    let solved = solver
        .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(solver.runner().count("host_dir"), 1);
    assert_eq!(solver.runner().count("mkfile"), 2);
    let fs = files(&solved.result);
    assert_eq!(fs.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_is_keyed_by_its_resolved_digest() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::default();
    runner
        .image_digests
        .lock()
        .insert("alpine:3.20".into(), "sha256:1111".into());
    let solver = open(dir.path(), runner);
    let graph = exec(&image("alpine:3.20"), &["write", "/a", "A"]);

    let first = solver
        .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(
        files(&first.result)["/etc/image"],
        "alpine:3.20 sha256:1111"
    );
    let second = solver
        .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(solver.runner().resolves.load(Ordering::SeqCst), 2);
    assert_eq!(solver.runner().calls().len(), 2);

    // The tag moved: image and exec run again.
    solver
        .runner()
        .image_digests
        .lock()
        .insert("alpine:3.20".into(), "sha256:2222".into());
    let third = solver
        .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_ne!(third.key, first.key);
    assert_eq!(
        files(&third.result)["/etc/image"],
        "alpine:3.20 sha256:2222"
    );
    assert_eq!(solver.runner().count("image"), 2);
    assert_eq!(solver.runner().count("exec"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_concurrency_limit_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open_with(dir.path(), TestRunner::default(), 2);
    let base = mkfile(&empty(), "/base", "b");
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let solver = solver.clone();
            let graph = exec(&base, &["block", &i.to_string()]);
            tokio::spawn(async move {
                solver
                    .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
                    .await
            })
        })
        .collect();
    wait_until("two execs to run", || {
        solver.runner().execs_running.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(solver.runner().execs_running.load(Ordering::SeqCst), 2);
    solver.runner().gate.open();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(solver.runner().count("exec"), 6);
    assert_eq!(solver.runner().execs_max.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheap_ops_and_nesting_execs_are_not_limited() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open_with(dir.path(), TestRunner::default(), 1);
    let blocked = {
        let solver = solver.clone();
        let graph = exec(&empty(), &["block", "1"]);
        tokio::spawn(async move {
            solver
                .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
                .await
        })
    };
    wait_until("the exec to start", || {
        solver.runner().execs_running.load(Ordering::SeqCst) == 1
    })
    .await;
    // An exec with privileged nesting (it waits for its nested client's solves) takes no slot.
    let mut nesting = exec_op(&["block", "nested"]);
    nesting.privileged_nesting = true;
    let nesting = dagr_solver::Vertex::new(dagr_solver::Op::Exec(nesting), vec![empty()]).unwrap();
    let nested = {
        let solver = solver.clone();
        tokio::spawn(async move {
            solver
                .solve(&nesting, "s", &dagr_telemetry::SpanCx::off())
                .await
        })
    };
    wait_until("the nesting exec to start", || {
        solver.runner().execs_running.load(Ordering::SeqCst) == 2
    })
    .await;
    // The exec slot is taken, file ops still run.
    let file = solver
        .solve(
            &mkfile(&mkfile(&empty(), "/p", "1"), "/q", "2"),
            "s",
            &dagr_telemetry::SpanCx::off(),
        )
        .await
        .unwrap();
    assert_eq!(files(&file.result).len(), 2);
    solver.runner().gate.open();
    blocked.await.unwrap().unwrap();
    nested.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_leases_release_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open(dir.path(), TestRunner::default());
    let a = mkfile(&empty(), "/a", "A");
    let b = mkfile(&a, "/b", "B");
    let ra = solver
        .solve(&a, "sa", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    let rb = solver
        .solve(&b, "sb", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    let ids = |s: &Solver<TestRunner>| {
        let mut v: Vec<String> = s.leased_refs().iter().map(|r| r.id().to_owned()).collect();
        v.sort();
        v
    };
    let mut both = vec![ra.result.id().to_owned(), rb.result.id().to_owned()];
    both.sort();
    assert_eq!(ids(&solver), both);

    assert_eq!(solver.release_session("sa"), 1);
    assert_eq!(ids(&solver), [rb.result.id().to_owned()]);
    assert_eq!(solver.release_session("sa"), 0);
    assert_eq!(solver.release_session("sb"), 1);
    assert!(solver.leased_refs().is_empty());

    // GC removed the data of `b`: prune forgets it, the next solve rebuilds only it.
    let gone = rb.result.id().to_owned();
    let pruned = solver.prune(|r| r.id() != gone).unwrap();
    assert_eq!(pruned, [b.structural_key()]);
    assert_eq!(solver.cached_count(), 2);
    let rebuilt = solver
        .solve(&b, "sc", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_ne!(rebuilt.result.id(), gone);
    assert_eq!(solver.runner().count("mkfile /b"), 2);
    assert_eq!(solver.runner().count("mkfile /a"), 1);

    // The prune is durable.
    solver.prune(|r| r.id() != rebuilt.result.id()).unwrap();
    drop(solver);
    let solver = open(dir.path(), TestRunner::default());
    assert_eq!(solver.cached_count(), 2);
    assert!(solver.flush().is_ok());
}

/// Extension used to create a directory inline.
trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for std::path::PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Deep graphs neither overflow the stack when solved (structural and runtime-keyed) nor when
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_chain_solves() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let solver = open(dir.path(), TestRunner::default());
    for base in [empty(), host_dir(&host)] {
        let mut v = base;
        for i in 0..DEPTH {
            v = mkfile(&v, "/f", &i.to_string());
        }
        let solved = solver
            .solve(&v, "s", &dagr_telemetry::SpanCx::off())
            .await
            .unwrap();
        assert_eq!(files(&solved.result)["/f"], (DEPTH - 1).to_string());
    }
    assert_eq!(solver.runner().count("mkfile"), 2 * DEPTH);
}

const DEPTH: usize = 1000;

#[test]
fn deep_chain_drops() {
    let mut v = empty();
    for i in 0..100_000 {
        v = mkfile(&v, "/f", &i.to_string());
    }
    drop(v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_times_are_flushed_to_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let graph = mkfile(&empty(), "/a", "A");
    {
        let solver = open(dir.path(), TestRunner::default());
        solver
            .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
            .await
            .unwrap();
        assert_eq!(
            solver.flush().unwrap(),
            0,
            "nothing used since it was written"
        );
        // Timestamps have a resolution of one second: let the clock move on.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        solver
            .solve(&graph, "s", &dagr_telemetry::SpanCx::off())
            .await
            .unwrap();
        assert_eq!(solver.flush().unwrap(), 1);
        assert_eq!(solver.flush().unwrap(), 0);
    }
    let solver = open(dir.path(), TestRunner::default());
    let entry = solver
        .entries()
        .into_iter()
        .find(|e| e.key == graph.structural_key())
        .unwrap();
    assert!(entry.last_used_unix > entry.created_unix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reports_its_exportable_results_and_never_secret_derived_ones() {
    let dir = tempfile::tempdir().unwrap();
    let solver = open(dir.path(), TestRunner::default());
    let base = mkfile(&empty(), "/a", "A");
    let plain = exec(&base, &["write", "/b", "B"]);
    let mut with_secret = exec_op(&["write", "/s", "S"]);
    with_secret
        .secret_env
        .insert("TOKEN".into(), "sha256:feed".into());
    let secret = Vertex::new(Op::Exec(with_secret), vec![base.clone()]).unwrap();
    let after_secret = exec(&secret, &["write", "/t", "T"]);
    assert!(plain.exportable() && base.exportable());
    assert!(!empty().exportable(), "nothing to export");
    assert!(!secret.exportable() && !after_secret.exportable());

    let off = dagr_telemetry::SpanCx::off();
    solver.solve(&plain, "s1", &off).await.unwrap();
    solver.solve(&after_secret, "s1", &off).await.unwrap();
    let results = solver.session_results("s1");
    let keys = |v: &[(dagr_solver::CacheKey, dagr_solver::ResultRef)]| {
        let mut k: Vec<_> = v.iter().map(|(k, _)| *k).collect();
        k.sort();
        k
    };
    assert_eq!(keys(&results.roots), vec![plain.structural_key()]);
    let mut all = vec![plain.structural_key(), base.structural_key()];
    all.sort();
    assert_eq!(keys(&results.all), all);

    // Held past the session: the results stay leased to the holder until it lets go.
    solver.hold("export", results.all.iter().map(|(k, _)| *k));
    solver.release_session("s1");
    assert!(solver.session_results("s1").all.is_empty());
    assert_eq!(solver.leased_refs().len(), 2);
    assert_eq!(solver.release_session("export"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_result_runs_neither_the_op_nor_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let graph = exec(&mkfile(&empty(), "/a", "A"), &["write", "/b", "B"]);
    let runner = TestRunner::default();
    runner.remote.lock().insert(
        graph.structural_key(),
        [("/b".to_owned(), "from remote".to_owned())].into(),
    );
    let solver = open(dir.path(), runner);
    let off = dagr_telemetry::SpanCx::off();
    let solved = solver.solve(&graph, "s1", &off).await.unwrap();
    assert_eq!(solver.runner().calls(), ["import exec"]);
    assert_eq!(files(&solved.result)["/b"], "from remote");
    // Indexed like a run: the next solve is a plain hit.
    solver.solve(&graph, "s2", &off).await.unwrap();
    assert_eq!(solver.runner().calls().len(), 1);
    // A secret-derived vertex is never looked up remotely.
    let mut op = exec_op(&["write", "/c", "C"]);
    op.secret_env.insert("T".into(), "sha256:feed".into());
    let secret = Vertex::new(Op::Exec(op), vec![empty()]).unwrap();
    solver
        .runner()
        .remote
        .lock()
        .insert(secret.structural_key(), Default::default());
    solver.solve(&secret, "s1", &off).await.unwrap();
    assert_eq!(solver.runner().calls()[1..], ["empty ", "exec write /c C"]);
}
