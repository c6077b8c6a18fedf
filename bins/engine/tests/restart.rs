//! The engine killed with SIGKILL in the middle of an exec, then restarted on the same state
//! directory: it starts, leaves no container or mount of the dead one behind, and serves what
//! was built before the crash from its persistent cache.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn engine_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dagr-engine"))
}

fn opts(host: &str, workdir: &Path) -> dagr_client::ConnectOptions {
    dagr_testkit::connect_options(host, workdir)
}

fn containers(runc_root: &Path) -> String {
    let out = Command::new("runc")
        .arg("--root")
        .arg(runc_root)
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let prefix = dir.to_string_lossy().to_string();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_exec_then_restart_recovers_and_keeps_the_cache() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let base = tempfile::tempdir().expect("tmp");
    let state = base.path().join("state");
    let runc_root = state.join("worker/exec/runc");
    let stamp_query = serde_json::json!({ "query": format!(
        r#"{{ container {{ from(address: "{}") {{ withExec(args: ["sh", "-c", "cat /proc/sys/kernel/random/uuid"]) {{ stdout }} }} }} }}"#,
        registry.image
    )});

    let mut first = dagr_testkit::EngineProcess::start_in(
        engine_bin(),
        base.path(),
        tempfile::tempdir().expect("tmp"),
        &[],
    );
    let client = dagr_client::connect(opts(&first.host(), base.path()))
        .await
        .expect("connect");
    let before = client.query(stamp_query.clone()).await.expect("query");
    let stamp = before["data"]["container"]["from"]["withExec"]["stdout"]
        .as_str()
        .expect("stdout")
        .to_owned();
    // Start a long exec and kill the engine while it runs.
    let sleeper = serde_json::json!({ "query": format!(
        r#"{{ container {{ from(address: "{}") {{ withExec(args: ["sleep", "1000"]) {{ sync }} }} }} }}"#,
        registry.image
    )});
    let client = std::sync::Arc::new(client);
    let c2 = client.clone();
    let _pending = tokio::spawn(async move { c2.query(sleeper).await });
    let start = Instant::now();
    while containers(&runc_root).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the exec never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    drop(first);

    // Same state directory: the new engine starts and cleans up what the dead one left.
    let second = dagr_testkit::EngineProcess::start_in(
        engine_bin(),
        base.path(),
        tempfile::tempdir().expect("tmp"),
        &[],
    );
    assert_eq!(
        containers(&runc_root),
        "",
        "containers of the dead engine are gone"
    );
    let stale: Vec<String> = mounts_under(&state);
    assert!(
        stale.is_empty(),
        "mounts left under the state dir: {stale:?}"
    );
    let client = dagr_client::connect(opts(&second.host(), base.path()))
        .await
        .expect("connect");
    let after = client.query(stamp_query).await.expect("query");
    assert_eq!(
        after["data"]["container"]["from"]["withExec"]["stdout"].as_str(),
        Some(stamp.as_str()),
        "the exec was served from the cache built before the crash"
    );
    client.close().await.expect("close");
}

/// An engine killed with SIGKILL takes its containers with it: its watchdog kills them, with
/// no new engine needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_engine_leaves_no_container_running() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let base = tempfile::tempdir().expect("tmp");
    let mut engine = dagr_testkit::EngineProcess::start_in(
        engine_bin(),
        base.path(),
        tempfile::tempdir().expect("tmp"),
        &[],
    );
    let client = dagr_client::connect(opts(&engine.host(), base.path()))
        .await
        .expect("connect");
    let script = format!("sleep 1000; echo {}", std::process::id());
    let sleeper = serde_json::json!({ "query": format!(
        r#"{{ container {{ from(address: "{}") {{ withExec(args: ["sh", "-c", {}]) {{ sync }} }} }} }}"#,
        registry.image,
        serde_json::json!(script)
    )});
    let client = std::sync::Arc::new(client);
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.query(sleeper).await })
    };
    let argv = ["sh", "-c", script.as_str()];
    tokio::task::block_in_place(|| {
        dagr_testkit::wait_processes(&argv, true, "the exec's process");
    });
    // The exec's id, from its process's pids cgroup (`/dagr/<id>/ctr`).
    let pid = dagr_testkit::processes_running(&argv)[0];
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let exec_id = cgroups
        .lines()
        .find_map(|l| l.split_once(":pids:").map(|(_, path)| path.to_owned()))
        .and_then(|path| path.split('/').nth(2).map(str::to_owned))
        .unwrap_or_else(|| panic!("no pids cgroup in {cgroups}"));
    engine.child.kill().expect("SIGKILL");
    let _ = engine.child.wait();
    tokio::task::block_in_place(|| {
        dagr_testkit::wait_processes(&argv, false, "the dead engine's container");
    });
    // Its cgroups go too (hang protection: a minute).
    let left = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .expect("cgroup hierarchies")
            .flatten()
            .map(|h| h.path().join("dagr").join(&exec_id))
            .filter(|p| p.exists())
            .collect()
    };
    let start = Instant::now();
    while !left().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cgroups left: {:?}",
            left()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pending.abort();
    // The mounts the dead engine left are the next engine's to remove; there is none here.
    dagr_testkit::detach_mounts_under(base.path());
}
