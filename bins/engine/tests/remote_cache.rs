//! The remote cache: engines with separate state directories sharing results through a
//! `docker-registry` of the test's own (`--cache-to`, `--cache-from`). An engine that imports
//! runs no exec and answers byte for byte what the exporter did; every fault of the registry
//! (stopped, damaged or missing blobs, refused credentials) still gives a correct answer, run
//! here; nothing derived from a secret and no cache volume ever reaches the registry.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use dagr_testkit::EngineProcess;
use dagr_testkit::gql::{connect, query};
use dagr_testkit::scratch_registry::ScratchRegistry;
use serde_json::{Value, json};

fn engine(args: &[&str]) -> EngineProcess {
    EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), args)
}

fn image() -> String {
    dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone()
}

fn unique() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

/// Two execs: the first writes random bytes, the second prints a digest of them. Run again,
/// it prints something else; imported, the same.
fn pipeline(marker: &str) -> String {
    format!(
        r#"{{ container {{ from(address: {img}) {{
            withExec(args: ["sh", "-c", {first}]) {{
              withExec(args: ["sh", "-c", "cat /r; sha256sum /big | cut -c1-64"]) {{
                stdout
                file(path: "/r") {{ contents }}
            }} }} }} }} }}"#,
        img = json!(image()),
        first = json!(format!(
            "echo {marker} > /marker; head -c 3000000 /dev/urandom > /big; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' ' > /r"
        )),
    )
}

/// Runs `q` in a session of its own (the session ends when this returns).
async fn run(engine: &EngineProcess, q: String) -> Value {
    let client = connect(engine, false).await;
    let answer = query(&client, q).await.unwrap();
    client.close().await.unwrap();
    answer
}

fn stdout_of(answer: &Value) -> String {
    answer["container"]["from"]["withExec"]["withExec"]["stdout"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Checks an answer of [`pipeline`] is well formed (a fresh run's answer is not predictable).
fn assert_well_formed(answer: &Value) {
    let stdout = stdout_of(answer);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout:?}");
    assert_eq!(lines[0].len(), 32, "{stdout:?}");
    assert_eq!(lines[1].len(), 64, "{stdout:?}");
}

fn counter(engine: &EngineProcess, name: &str) -> u64 {
    dagr_testkit::metric(&engine.metrics(), name).unwrap_or(0)
}

/// The layer digests of the cache manifest at `reference`.
fn cache_layers(reference: &str, creds: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    let out = cmd.arg(format!("docker://{reference}")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Exports [`pipeline`] from a fresh engine to `spec` and returns its answer.
async fn export(spec: &str, extra: &[&str], marker: &str) -> Value {
    let mut args = vec!["--cache-to", spec];
    args.extend_from_slice(extra);
    let a = engine(&args);
    let answer = run(&a, pipeline(marker)).await;
    assert_well_formed(&answer);
    a.wait_metric("dagr_remote_cache_exports_total", 1);
    assert_eq!(counter(&a, "dagr_remote_cache_export_errors_total"), 0);
    answer
}

#[tokio::test]
async fn an_engine_with_anothers_cache_runs_no_exec_and_answers_the_same() {
    let registry = ScratchRegistry::start(None);
    let reference = format!("{}/cache:main", registry.addr);
    let marker = unique();
    let exported = export(
        &format!("type=registry,ref={reference},mode=max"),
        &[],
        &marker,
    )
    .await;

    let b = engine(&["--cache-from", &format!("type=registry,ref={reference}")]);
    let imported = run(&b, pipeline(&marker)).await;
    assert_eq!(imported, exported, "the imported result differs");
    assert_eq!(counter(&b, "dagr_execs_run_total"), 0, "{}", b.metrics());
    assert!(counter(&b, "dagr_remote_cache_hits_total") >= 1);
    assert_eq!(counter(&b, "dagr_remote_cache_import_errors_total"), 0);

    // The same through a client's own configuration (Dagger's variable, sent in the metadata
    // by the client): an engine without --cache-from imports too.
    let c = engine(&[]);
    let mut options = dagr_testkit::connect_options(&c.host(), &std::env::temp_dir());
    options.cache_imports = vec![dagr_client::CacheOptionsEntry {
        kind: "registry".into(),
        attrs: [("ref".to_owned(), reference.clone())].into(),
    }];
    let client = dagr_client::connect(options).await.unwrap();
    let again = query(&client, pipeline(&marker)).await.unwrap();
    client.close().await.unwrap();
    assert_eq!(again, exported);
    assert_eq!(counter(&c, "dagr_execs_run_total"), 0);

    // Without the cache the pipeline runs, and gives other bytes.
    let d = engine(&[]);
    let fresh = run(&d, pipeline(&marker)).await;
    assert_well_formed(&fresh);
    assert_ne!(fresh, exported);
    assert_eq!(counter(&d, "dagr_execs_run_total"), 2);
}

/// A fresh engine reading `reference` answers correctly, runs the pipeline itself, and counts
/// the failed import.
async fn assert_runs_here(spec: &str, extra: &[&str], marker: &str, what: &str) {
    let mut args = vec!["--cache-from", spec];
    args.extend_from_slice(extra);
    let b = engine(&args);
    let answer = run(&b, pipeline(marker)).await;
    assert_well_formed(&answer);
    assert_eq!(counter(&b, "dagr_execs_run_total"), 2, "{what}");
    assert!(
        counter(&b, "dagr_remote_cache_import_errors_total") >= 1,
        "{what}: {}",
        b.metrics()
    );
}

#[tokio::test]
async fn registry_faults_degrade_to_a_local_run() {
    let mut registry = ScratchRegistry::start(None);
    let reference = format!("{}/cache:main", registry.addr);
    let spec = format!("type=registry,ref={reference}");
    let marker = unique();
    export(&format!("{spec},mode=max"), &[], &marker).await;
    let layers = cache_layers(&reference, None);
    assert!(!layers.is_empty());

    // The registry stops after the session read the index, before the hit's blobs come.
    {
        let b = engine(&["--cache-from", &spec]);
        let client = connect(&b, false).await;
        // A miss: the lookup waits for the index to be read.
        let warm = format!(
            r#"{{ container {{ from(address: {img}) {{ withExec(args: ["echo", {m}]) {{ stdout }} }} }} }}"#,
            img = json!(image()),
            m = json!(unique()),
        );
        query(&client, warm).await.unwrap();
        registry.stop();
        let answer = query(&client, pipeline(&marker)).await.unwrap();
        client.close().await.unwrap();
        assert_well_formed(&answer);
        assert_eq!(counter(&b, "dagr_execs_run_total"), 3);
        assert!(counter(&b, "dagr_remote_cache_import_errors_total") >= 1);
        registry.restart();
    }

    // Damaged blobs (same size, other bytes): refused by digest, never unpacked.
    for digest in &layers {
        let file = registry.blob_file(digest);
        let len = std::fs::metadata(&file).unwrap().len() as usize;
        std::fs::write(&file, vec![b'x'; len]).unwrap();
    }
    assert_runs_here(&spec, &[], &marker, "corrupted blobs").await;

    // Missing blobs.
    for digest in &layers {
        std::fs::remove_dir_all(registry.blob_file(digest).parent().unwrap()).unwrap();
    }
    assert_runs_here(&spec, &[], &marker, "deleted blobs").await;

    // A registry that is not there at all: the warning reaches the session's telemetry too.
    registry.stop();
    assert_runs_here(&spec, &[], &marker, "registry down").await;
    let b = engine(&["--cache-from", &spec]);
    let mut client = connect(&b, false).await;
    let mut feed = client.subscribe().await.unwrap();
    let answer = query(&client, pipeline(&marker)).await.unwrap();
    client.close().await.unwrap();
    assert_well_formed(&answer);
    let mut warnings = Vec::new();
    while let Some(event) = feed.events.recv().await {
        if let dagr_client::TelemetryEvent::Spans(data) = event {
            for span in data
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
            {
                // Status code 2: error.
                if span.name.contains("reading the remote cache failed")
                    && span.status.as_ref().is_some_and(|s| s.code == 2)
                {
                    warnings.push(span.status.unwrap_or_default().message);
                }
            }
        }
    }
    assert!(
        warnings.iter().any(|m| m.contains(&registry.addr)),
        "no failed remote cache span: {warnings:?}"
    );
}

#[tokio::test]
async fn credentials_are_used_and_refused_ones_degrade_to_a_local_run() {
    let registry = ScratchRegistry::start(Some(("alice", "s3cret-pw")));
    let reference = format!("{}/cache:main", registry.addr);
    let spec = format!("type=registry,ref={reference}");
    let dir = tempfile::tempdir().unwrap();
    let auth_file = |name: &str, password: &str| {
        use base64::Engine as _;
        let path = dir.path().join(name);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"));
        std::fs::write(
            &path,
            json!({ "auths": { registry.addr.clone(): { "auth": auth } } }).to_string(),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let good = auth_file("good.json", "s3cret-pw");
    let bad = auth_file("bad.json", "wrong");
    let marker = unique();
    let exported = export(
        &format!("{spec},mode=max"),
        &["--registry-auth-file", &good],
        &marker,
    )
    .await;

    assert_runs_here(
        &spec,
        &["--registry-auth-file", &bad],
        &marker,
        "wrong credentials",
    )
    .await;
    assert_runs_here(&spec, &[], &marker, "no credentials").await;

    let b = engine(&["--cache-from", &spec, "--registry-auth-file", &good]);
    assert_eq!(run(&b, pipeline(&marker)).await, exported);
    assert_eq!(counter(&b, "dagr_execs_run_total"), 0);
}

#[tokio::test]
async fn secrets_and_cache_volumes_never_reach_the_registry() {
    let registry = ScratchRegistry::start(None);
    let spec = format!("type=registry,ref={}/cache:main,mode=max", registry.addr);
    let a = engine(&["--cache-to", &spec]);
    let u = unique();
    let (secret, volume_mark, root_mark) = (
        format!("s3cr3t-{u}"),
        format!("volume-{u}"),
        format!("rootfs-{u}"),
    );
    let client = connect(&a, false).await;
    let id = query(
        &client,
        format!(
            r#"{{ setSecret(name: "token", plaintext: {}) {{ id }} }}"#,
            json!(secret)
        ),
    )
    .await
    .unwrap()["setSecret"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let leaky = format!(
        r#"{{ container {{ from(address: {img}) {{ withSecretVariable(name: "TOKEN", secret: {id}) {{
            withExec(args: ["sh", "-c", "echo $TOKEN > /leak; echo $TOKEN | rev"]) {{
              withExec(args: ["sh", "-c", "cat /leak | rev > /leak2"]) {{ sync }} }} }} }} }} }}"#,
        img = json!(image()),
        id = json!(id),
    );
    query(&client, leaky).await.unwrap();
    let volume = format!(
        r#"{{ container {{ from(address: {img}) {{
            withMountedCache(path: "/cache", cache: {vol}) {{
              withExec(args: ["sh", "-c", {script}]) {{ stdout }} }} }} }} }}"#,
        img = json!(image()),
        vol = json!(
            query(
                &client,
                format!(r#"{{ cacheVolume(key: "v-{u}") {{ id }} }}"#)
            )
            .await
            .unwrap()["cacheVolume"]["id"]
        ),
        script = json!(format!(
            "echo {volume_mark} > /cache/f; echo {root_mark} > /rootfile; echo {root_mark}-out"
        )),
    );
    query(&client, volume).await.unwrap();
    client.close().await.unwrap();
    a.wait_metric("dagr_remote_cache_exports_total", 1);

    let reversed: String = secret.chars().rev().collect();
    let mut found_root = false;
    let blobs = registry.blob_files();
    assert!(!blobs.is_empty());
    for blob in blobs {
        // Layers are gzip: read them decompressed as well as raw.
        let raw = std::fs::read(&blob).unwrap();
        let unzipped = Command::new("zcat")
            .arg("-f")
            .arg(&blob)
            .output()
            .unwrap()
            .stdout;
        for bytes in [&raw, &unzipped] {
            let text = String::from_utf8_lossy(bytes);
            for forbidden in [&secret, &reversed, &volume_mark] {
                assert!(
                    !text.contains(forbidden.as_str()),
                    "{} holds {forbidden}",
                    blob.display()
                );
            }
            found_root |= text.contains(&root_mark);
        }
    }
    assert!(
        found_root,
        "the cache-volume exec's own result was exported"
    );
}

#[tokio::test]
async fn concurrent_exports_to_one_ref_merge() {
    let registry = ScratchRegistry::start(None);
    let reference = format!("{}/cache:shared", registry.addr);
    let to = format!("type=registry,ref={reference},mode=min");
    let exporters: Vec<EngineProcess> = (0..3).map(|_| engine(&["--cache-to", &to])).collect();
    let markers: Vec<String> = (0..3).map(|_| unique()).collect();
    // Three sessions end together: their exports race for the tag.
    let answers = futures::future::join_all(
        exporters
            .iter()
            .zip(&markers)
            .map(|(e, m)| run(e, pipeline(m))),
    )
    .await;
    for e in &exporters {
        e.wait_metric("dagr_remote_cache_exports_total", 1);
    }
    let b = engine(&["--cache-from", &format!("type=registry,ref={reference}")]);
    for (marker, exported) in markers.iter().zip(&answers) {
        assert_eq!(&run(&b, pipeline(marker)).await, exported);
    }
    assert_eq!(counter(&b, "dagr_execs_run_total"), 0, "an export was lost");
}
