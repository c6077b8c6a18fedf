//! The result index survives kill -9: a child process (this test binary, re-run on the ignored
//! `crash_child` test) solves a graph and SIGKILLs itself; the parent reopens the index and solves
//! the same graph without running anything.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;
use std::sync::Arc;

use common::*;
use dagr_solver::Vertex;

const DB_ENV: &str = "DAGR_SOLVER_CRASH_TEST_DIR";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(DB_ENV, dir.path())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "child: {status:?}");
    let child_result = std::fs::read_to_string(dir.path().join("result-id")).unwrap();

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
