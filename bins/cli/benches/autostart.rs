//! The time from a cold `dagr query '{ version }'` (no engine running: `dagr` starts one) to its
//! answer, with its phases, against the same query to an engine already running (same run).
//! Phases: the engine's start until it answers on its socket (what `dagr` reports), split by the
//! engine's own log (network set up, container runtime checked, listening), then the session
//! and the query.
//!
//! The engine starts with its defaults (bridge network included), as users get it. Needs root,
//! runc and iptables (`cargo xtask bench` installs them). Plain timing: each sample needs a
//! fresh state directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `dagr query` of `{ version }` with `state` as its state directory; (elapsed, stderr).
fn query(state: &Path) -> (Duration, String) {
    use std::io::Write as _;
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dagr"))
        .args(["query", "--progress", "quiet"])
        .env("DAGR_STATE_DIR", state)
        .env_remove("DAGR_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dagr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{ version }")
        .expect("write");
    let out = child.wait_with_output().expect("dagr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        start.elapsed(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kills the engine of a state directory if a round failed before stopping it.
struct EngineGuard(std::path::PathBuf);

impl Drop for EngineGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("engine.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

fn stop(state: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_dagr"))
        .args(["engine", "stop"])
        .env("DAGR_STATE_DIR", state)
        .stdout(Stdio::null())
        .status()
        .expect("dagr engine stop");
    assert!(status.success());
}

/// Seconds since midnight of a log line's RFC 3339 timestamp.
fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split('T').nth(1)?;
    let t = t.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut cold = Vec::new();
    let mut started = Vec::new();
    let mut warm = Vec::new();
    let mut phases: Vec<[f64; 3]> = Vec::new();
    for _ in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let _guard = EngineGuard(state.clone());
        let (elapsed, stderr) = query(&state);
        cold.push(elapsed);
        let start_ms = stderr
            .split(" in ")
            .nth(1)
            .and_then(|r| r.split(" ms").next())
            .and_then(|s| s.parse::<u64>().ok())
            .expect("dagr reported the engine's start");
        started.push(Duration::from_millis(start_ms));
        warm.push(query(&state).0);
        let log = std::fs::read_to_string(state.join("engine.log")).unwrap_or_default();
        let at = |needle: &str| log.lines().find(|l| l.contains(needle)).and_then(log_time);
        if let (Some(first), Some(net), Some(runtime), Some(ready)) = (
            log.lines().next().and_then(log_time),
            at("container network"),
            at("container runtime"),
            at("engine ready"),
        ) {
            phases.push([net - first, runtime - net, ready - runtime]);
        }
        stop(&state);
    }
    let (cold, started, warm) = (median(cold), median(started), median(warm));
    println!(
        "auto-start: cold `dagr query '{{ version }}'` median {cold:?} (engine started and answering: {started:?}; the rest, session and query: {:?}); the same query to the running engine: {warm:?} ({:.1}x)",
        cold.saturating_sub(started),
        cold.as_secs_f64() / warm.as_secs_f64()
    );
    if !phases.is_empty() {
        let mid = |i: usize| {
            let mut v: Vec<f64> = phases.iter().map(|p| p[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] * 1000.0
        };
        let logged = mid(0) + mid(1) + mid(2);
        println!(
            "auto-start: engine phases (medians; from its log): until its first log line (process start, state directory, bridge network) {:.0} ms, network logged {:.0} ms, runtime checked (runc, watchdog) {:.0} ms, listening {:.0} ms",
            (started.as_secs_f64() * 1000.0 - logged).max(0.0),
            mid(0),
            mid(1),
            mid(2)
        );
    }
}
