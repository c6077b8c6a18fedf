//! The engine killed with SIGKILL in the middle of an exec, then restarted on the same state
//! directory: it starts, leaves no container or mount of the dead one behind, and serves what
//! was built (and group-committed) before the crash from its persistent cache.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn engine_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dagr-engine"))
}

fn opts(host: &str, workdir: &Path) -> dagr_client::ConnectOptions {
    dagr_testkit::connect_options(host, workdir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_exec_then_restart_recovers_and_keeps_the_cache() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let base = tempfile::tempdir().expect("tmp");
    let state = base.path().join("state");
    let runc_root = state.join("run/runtime");
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
    // The result reaches the disk by group commit, shortly after the answer: a crash before
    // that would (correctly) run the exec again.
    tokio::task::block_in_place(|| first.wait_metric("dagr_cache_unsynced", 0));
    // Start a long exec and kill the engine while it runs.
    let sleeper = serde_json::json!({ "query": format!(
        r#"{{ container {{ from(address: "{}") {{ withExec(args: ["sleep", "1000"]) {{ sync }} }} }} }}"#,
        registry.image
    )});
    let client = std::sync::Arc::new(client);
    let c2 = client.clone();
    let _pending = tokio::spawn(async move { c2.query(sleeper).await });
    let start = Instant::now();
    while dagr_testkit::runtime_containers(&runc_root).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the exec never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    // What the dead engine left mounted (its exec's and its network pool's namespaces).
    let left_by_first = dagr_testkit::mounts_under(&state);
    assert!(!left_by_first.is_empty());
    drop(first);

    // Same state directory: the new engine starts and cleans up what the dead one left.
    let second = dagr_testkit::EngineProcess::start_in(
        engine_bin(),
        base.path(),
        tempfile::tempdir().expect("tmp"),
        &[],
    );
    assert_eq!(
        dagr_testkit::runtime_containers(&runc_root),
        "",
        "containers of the dead engine are gone"
    );
    // (The new engine's own network pool pins namespaces of its own there, and the run
    // directory's tmpfs, where the dead engine's container state was read, is the new one's.)
    let run_dir = std::fs::canonicalize(state.join("run")).expect("run dir");
    let stale: Vec<String> = dagr_testkit::mounts_under(&state)
        .into_iter()
        .filter(|m| left_by_first.contains(m) && Path::new(m) != run_dir)
        .collect();
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

/// An engine killed with SIGKILL while a service runs: its container dies with it, and the
/// next engine on the same state directory starts clean (no stale namespace, veth or rule) and
/// runs the service again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_engine_with_services_comes_back_clean() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let base = tempfile::tempdir().expect("tmp");
    let netns_dir = base.path().join("state/network/netns");
    let marker = format!("svc-{}", std::process::id());
    let start_service = serde_json::json!({ "query": format!(
        r#"{{ container {{ from(address: "{}") {{ withExposedPort(port: 8080) {{ withExec(args: ["sh", "-c", {}]) {{ asService {{ start }} }} }} }} }} }}"#,
        registry.image,
        serde_json::json!(format!("mkdir -p /srv && echo {marker} > /srv/index.html && exec httpd -f -p 8080 -h /srv"))
    )});
    let argv = ["httpd", "-f", "-p", "8080", "-h", "/srv"];
    let first = dagr_testkit::EngineProcess::start_in(
        engine_bin(),
        base.path(),
        tempfile::tempdir().expect("tmp"),
        &[],
    );
    let bridge = first.bridge.clone().expect("a bridge");
    let client = dagr_client::connect(opts(&first.host(), base.path()))
        .await
        .expect("connect");
    let started = client.query(start_service.clone()).await.expect("query");
    assert!(started.get("errors").is_none(), "{started}");
    let mut first = first;
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    tokio::task::block_in_place(|| {
        dagr_testkit::wait_processes(&argv, false, "the dead engine's service");
    });
    // Its namespaces stay pinned until the next engine removes them.
    assert!(!dagr_testkit::mounts_under(&netns_dir).is_empty());
    // Keep the bridge and rules as the dead engine left them (the drop would remove them).
    let first_dir = std::mem::replace(&mut first.dir, tempfile::tempdir().expect("tmp"));
    first.bridge = None;
    drop(first);

    let second = dagr_testkit::EngineProcess::start_in(engine_bin(), base.path(), first_dir, &[]);
    // Only the new pool's namespaces (4) remain, with their veths; the rules are installed once.
    let pooled = || {
        let mounts = dagr_testkit::mounts_under(&netns_dir).len();
        let veths = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "link", "show", "master", &bridge.name])
                .output()
                .expect("ip link")
                .stdout,
        )
        .lines()
        .count();
        (mounts, veths)
    };
    let start = Instant::now();
    while pooled() != (4, 4) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "namespaces and veths after the restart: {:?}",
            pooled()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rules = |table: &str| {
        String::from_utf8_lossy(
            &Command::new("iptables")
                .args(["-t", table, "-S"])
                .output()
                .expect("iptables")
                .stdout,
        )
        .matches(&format!("dagr:{}", bridge.name))
        .count()
    };
    assert_eq!((rules("nat"), rules("filter")), (1, 2));
    let client = dagr_client::connect(opts(&second.host(), base.path()))
        .await
        .expect("connect");
    let again = client.query(start_service).await.expect("query");
    assert!(again.get("errors").is_none(), "{again}");
    client.close().await.expect("close");
    second.wait_metric("dagr_services_running", 0);
}

/// A cache index the engine cannot read (here: overwritten with garbage) is set aside with a
/// log line, and the engine starts with an empty cache instead of failing to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cache_index_is_set_aside() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let base = tempfile::tempdir().expect("tmp");
    let index = base.path().join("state/worker/solver.redb");
    let echo = serde_json::json!({ "query": format!(
        r#"{{ container {{ from(address: "{}") {{ withExec(args: ["echo", "ok"]) {{ stdout }} }} }} }}"#,
        registry.image
    )});
    let first = dagr_testkit::EngineProcess::start_in(
        engine_bin(),
        base.path(),
        tempfile::tempdir().expect("tmp"),
        &[],
    );
    let client = dagr_client::connect(opts(&first.host(), base.path()))
        .await
        .expect("connect");
    client.query(echo.clone()).await.expect("query");
    client.close().await.expect("close");
    drop(first);
    assert!(index.is_file(), "{} exists", index.display());
    std::fs::write(&index, vec![0x5a; 64 * 1024]).expect("damage the index");

    let second = dagr_testkit::EngineProcess::start_in(
        engine_bin(),
        base.path(),
        tempfile::tempdir().expect("tmp"),
        &[],
    );
    let client = dagr_client::connect(opts(&second.host(), base.path()))
        .await
        .expect("connect");
    let answer = client.query(echo).await.expect("query");
    assert_eq!(
        answer["data"]["container"]["from"]["withExec"]["stdout"], "ok\n",
        "{answer}"
    );
    client.close().await.expect("close");
    let set_aside: Vec<_> = std::fs::read_dir(base.path().join("state/worker"))
        .expect("worker dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("solver.damaged-"))
        .collect();
    assert_eq!(set_aside.len(), 1, "{set_aside:?}");
}
