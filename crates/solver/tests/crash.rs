//! The result index survives kill -9: a child process (this test binary, re-run on the ignored
//! `crash_child` test) solves a graph, syncs the index (the engine's group commit) and SIGKILLs
//! itself; the parent reopens the index and solves the same graph without running anything.
//! Without the sync, the results written since are lost, all of them, and run again.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;
use std::sync::Arc;

use common::*;
use dagr_solver::Vertex;

const DB_ENV: &str = "DAGR_SOLVER_CRASH_TEST_DIR";
const SYNC_ENV: &str = "DAGR_SOLVER_CRASH_TEST_SYNC";

fn graph() -> Arc<Vertex> {
    exec(
        &mkfile(&mkfile(&empty(), "/a", "A"), "/b", "B"),
        &["write", "/c", "C"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by index_survives_kill_9 in a child process"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(DB_ENV) else {
        return;
    };
    let solver = open(std::path::Path::new(&dir), TestRunner::default());
    let solved = solver
        .solve(&graph(), "child", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(solver.runner().calls().len(), 4);
    if std::env::var_os(SYNC_ENV).is_some() {
        assert!(solver.sync_index().unwrap());
    }
    std::fs::write(
        std::path::Path::new(&dir).join("result-id"),
        solved.result.id(),
    )
    .unwrap();
    // No destructors, no flush: die like kill -9.
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL did not end the process");
}

/// Runs `crash_child` in `dir` (syncing the index before the kill if `sync`); returns the id of
/// the result it solved.
fn crash_child_in(dir: &std::path::Path, sync: bool) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(DB_ENV, dir);
    if sync {
        child.env(SYNC_ENV, "1");
    }
    let status = child.status().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "child: {status:?}");
    std::fs::read_to_string(dir.join("result-id")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let child_result = crash_child_in(dir.path(), true);

    let solver = open(dir.path(), TestRunner::default());
    assert_eq!(solver.cached_count(), 4);
    let solved = solver
        .solve(&graph(), "parent", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert!(solver.runner().calls().is_empty());
    assert_eq!(solved.result.id(), child_result);
    assert_eq!(files(&solved.result)["/c"], "C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_not_synced_before_kill_9_run_again() {
    let dir = tempfile::tempdir().unwrap();
    crash_child_in(dir.path(), false);

    let solver = open(dir.path(), TestRunner::default());
    assert_eq!(solver.cached_count(), 0, "none of them half there");
    let solved = solver
        .solve(&graph(), "parent", &dagr_telemetry::SpanCx::off())
        .await
        .unwrap();
    assert_eq!(solver.runner().calls().len(), 4);
    assert_eq!(files(&solved.result)["/c"], "C");
}
