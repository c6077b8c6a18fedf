//! The engine dagr starts itself: with no --host and no engine on the default socket of its
//! state directory, a command starts `dagr-engine` in the background; concurrent commands start
//! exactly one; `dagr engine status` reports it and `dagr engine stop` stops it.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

/// Kills the engine of `state` if a failed test left it running.
struct EngineGuard(PathBuf);

impl Drop for EngineGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("engine.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: kill(2) of a pid this test's engine wrote; at worst it is gone.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        dagr_testkit::detach_mounts_under(&self.0);
    }
}

fn dagr(state: &Path, args: &[&str], stdin: &str) -> std::process::Child {
    let state = state.to_string_lossy();
    common::spawn_dagr(
        args,
        &[
            ("DAGR_STATE_DIR", &state),
            // Loopback-only execs: no bridge to share with other tests' engines.
            ("DAGR_ENGINE_ARGS", "--network none --shutdown-grace 2"),
        ],
        stdin,
    )
}

fn finish(child: std::process::Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn commands_start_one_engine_that_engine_stop_stops() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _guard = EngineGuard(state.clone());
    let engine_argv = [
        common::engine_bin().to_string_lossy().into_owned(),
        "--state-dir".to_owned(),
        state.to_string_lossy().into_owned(),
        "--network".to_owned(),
        "none".to_owned(),
        "--shutdown-grace".to_owned(),
        "2".to_owned(),
    ];
    let argv: Vec<&str> = engine_argv.iter().map(String::as_str).collect();

    let status = finish(dagr(&state, &["engine", "status"], ""));
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    assert!(dagr_testkit::processes_running(&argv).is_empty());

    // Three commands at once, none with an engine to talk to: one engine starts.
    let children: Vec<_> = (0..3)
        .map(|_| dagr(&state, &["query", "--progress", "quiet"], "{ version }"))
        .collect();
    let version_query = finish(dagr(
        &state,
        &["query", "--progress", "quiet"],
        "{ version }",
    ));
    let outputs: Vec<Output> = children.into_iter().map(finish).collect();
    assert!(
        version_query.status.success(),
        "{}",
        String::from_utf8_lossy(&version_query.stderr)
    );
    assert!(String::from_utf8_lossy(&version_query.stdout).contains("\"version\""));
    let mut started = 0;
    for out in outputs.iter().chain([&version_query]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        started += stderr.matches("started an engine").count();
    }
    assert_eq!(started, 1, "{outputs:?} {version_query:?}");
    let pids = dagr_testkit::processes_running(&argv);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let stderr = String::from_utf8_lossy(&version_query.stderr).into_owned()
        + &outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<String>();
    assert!(
        stderr.contains("dagr engine stop") && stderr.contains("engine.sock"),
        "{stderr}"
    );

    let status = finish(dagr(&state, &["engine", "status"], ""));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(text.contains(&format!("pid {}", pids[0])), "{text}");
    assert!(text.contains("engine.sock"), "{text}");

    let stop = finish(dagr(&state, &["engine", "stop"], ""));
    assert!(stop.status.success(), "{stop:?}");
    assert!(dagr_testkit::processes_running(&argv).is_empty());
    let status = finish(dagr(&state, &["engine", "status"], ""));
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    // A second stop finds nothing to stop.
    assert!(
        finish(dagr(&state, &["engine", "stop"], ""))
            .status
            .success()
    );
}
