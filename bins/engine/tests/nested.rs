//! Nested clients: execs with `experimentalPrivilegedNesting` call the engine back on their own
//! listener, with basic auth, as a client of the caller's session whose host is the container.

use std::path::Path;

use serde_json::{Value, json};

fn opts(host: &str) -> dagr_client::ConnectOptions {
    dagr_testkit::connect_options(host, &std::env::temp_dir())
}

fn engine() -> dagr_testkit::EngineProcess {
    dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[])
}

/// A shell snippet that POSTs the JSON file `body` to the nested listener with `auth` as the basic
/// auth user ("$DAGGER_SESSION_TOKEN" for the right one) and prints the answer.
fn post_from_inside(body: &str, auth: &str) -> String {
    format!(
        "A=$(echo -n \"{auth}:\" | base64); wget -q -O- --header \"Authorization: Basic $A\" \
         --post-file {body} http://127.0.0.1:$DAGGER_SESSION_PORT/query 2>&1 || echo \" status=$?\""
    )
}

/// `from(image) { withNewFile(path, contents) { withExec([sh, -c, script], nesting) { stdout } } }`
/// as a GraphQL query string.
fn nested_exec_query(image: &str, files: &[(&str, String)], script: &str) -> String {
    let mut q = format!("container {{ from(address: {}) {{ ", json!(image));
    for (path, contents) in files {
        q.push_str(&format!(
            "withNewFile(path: {}, contents: {}) {{ ",
            json!(path),
            json!(contents)
        ));
    }
    q.push_str(&format!(
        "withExec(args: [\"sh\", \"-c\", {}], experimentalPrivilegedNesting: true) {{ stdout }}",
        json!(script)
    ));
    for _ in files {
        q.push_str(" }");
    }
    q.push_str(" } }");
    q
}

fn stdout_of(v: &Value) -> String {
    // data.container.from.(withNewFile...)*.withExec.stdout
    let mut node = &v["data"]["container"]["from"];
    while node.get("withExec").is_none() {
        node = &node["withNewFile"];
        assert!(!node.is_null(), "no withExec in {v}");
    }
    node["withExec"]["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("no stdout in {v}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_exec_calls_back_with_its_token_and_reads_its_own_files() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let client = dagr_client::connect(opts(&engine.host()))
        .await
        .expect("connect");
    let inner =
        json!({ "query": "{ version host { directory(path: \"/root/dir\") { entries } } }" })
            .to_string();
    let script = format!(
        "mkdir -p /root/dir && touch /root/dir/one /root/dir/two; {}; echo; {}; echo; {}",
        post_from_inside("/q.json", "$DAGGER_SESSION_TOKEN"),
        post_from_inside("/q.json", "wrong-token"),
        "wget -q -O- --post-file /q.json http://127.0.0.1:$DAGGER_SESSION_PORT/query 2>&1 || echo \" status=$?\""
    );
    let query = format!(
        "{{ {} }}",
        nested_exec_query(&registry.image, &[("/q.json", inner)], &script)
    );
    let v = client
        .query(json!({ "query": query }))
        .await
        .expect("query");
    let out = stdout_of(&v);
    let mut lines = out.lines();
    let first: Value = serde_json::from_str(lines.next().expect("answer")).expect("json answer");
    assert_eq!(first["data"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        first["data"]["host"]["directory"]["entries"],
        json!(["one", "two"])
    );
    let rest: String = lines.collect::<Vec<_>>().join("\n");
    // The wrong token and the missing one are both refused.
    assert_eq!(rest.matches("401 Unauthorized").count(), 2, "{out}");
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_recurses_three_levels() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let client = dagr_client::connect(opts(&engine.host()))
        .await
        .expect("connect");
    let post = post_from_inside("/q.json", "$DAGGER_SESSION_TOKEN");
    // Level 3 runs a plain exec; each level above posts the query of the level below.
    let level3 = json!({ "query": format!(
        "{{ container {{ from(address: {}) {{ withExec(args: [\"echo\", \"level three\"]) {{ stdout }} }} }} }}",
        json!(registry.image)
    )})
    .to_string();
    let level2 = json!({ "query": format!("{{ {} }}", nested_exec_query(&registry.image, &[("/q.json", level3)], &post)) })
        .to_string();
    let level1 = format!(
        "{{ {} }}",
        nested_exec_query(&registry.image, &[("/q.json", level2)], &post)
    );
    let v = client
        .query(json!({ "query": level1 }))
        .await
        .expect("query");
    // Each level's stdout is the JSON answer of the level below.
    let l2: Value = serde_json::from_str(stdout_of(&v).trim()).expect("level 2 answer");
    let l3: Value = serde_json::from_str(stdout_of(&l2).trim()).expect("level 3 answer");
    assert_eq!(
        l3["data"]["container"]["from"]["withExec"]["stdout"],
        "level three\n"
    );
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_client_cannot_read_another_sessions_secret() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let a = dagr_client::connect(opts(&engine.host()))
        .await
        .expect("connect a");
    let b = dagr_client::connect(opts(&engine.host()))
        .await
        .expect("connect b");
    let secret = a
        .query(json!({ "query": "{ setSecret(name: \"s\", plaintext: \"only-for-a\") { id } }" }))
        .await
        .expect("set secret");
    let id = secret["data"]["setSecret"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let inner = json!({
        "query": "query($id: SecretID!) { loadSecretFromID(id: $id) { plaintext } }",
        "variables": { "id": id }
    })
    .to_string();
    let post = post_from_inside("/q.json", "$DAGGER_SESSION_TOKEN");
    let query = format!(
        "{{ {} }}",
        nested_exec_query(&registry.image, &[("/q.json", inner)], &post)
    );
    // From session B's nested client: refused. From session A's: readable.
    let from_b: Value = serde_json::from_str(
        stdout_of(&b.query(json!({ "query": query.clone() })).await.expect("b")).trim(),
    )
    .expect("json");
    assert!(
        from_b["data"].is_null() || from_b["errors"].is_array(),
        "{from_b}"
    );
    assert!(
        from_b.to_string().contains("not set in this session"),
        "{from_b}"
    );
    assert!(!from_b.to_string().contains("only-for-a"));
    let from_a: Value = serde_json::from_str(
        stdout_of(&a.query(json!({ "query": query })).await.expect("a")).trim(),
    )
    .expect("json");
    // Session A's nested client reads it; the exec's stdout that carries it is scrubbed.
    assert_eq!(from_a["data"]["loadSecretFromID"]["plaintext"], "***");
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_listeners_and_attachables_go_away_with_their_exec() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let client = dagr_client::connect(opts(&engine.host()))
        .await
        .expect("connect");
    let inner = json!({ "query": "{ version }" }).to_string();
    let post = post_from_inside("/q.json", "$DAGGER_SESSION_TOKEN");
    let run = |i: usize| {
        // A distinct cache key per exec, so each one really runs with its own nested client.
        format!(
            "{{ {} }}",
            nested_exec_query(
                &registry.image,
                &[("/q.json", inner.clone())],
                &format!("echo {i} >/dev/null; {post}")
            )
        )
    };
    let alive = || {
        dagr_testkit::metric(&engine.metrics(), "dagr_runtime_alive_tasks").expect("tasks metric")
    };
    // Warm up (image pull, allocator pools, runtime threads).
    for i in 0..10 {
        client
            .query(json!({ "query": run(i) }))
            .await
            .expect("warm-up");
    }
    let fds = fd_count(engine.child.id());
    let tasks = alive();
    for i in 10..210 {
        let v = client
            .query(json!({ "query": run(i) }))
            .await
            .expect("nested exec");
        assert!(stdout_of(&v).contains(env!("CARGO_PKG_VERSION")), "{v}");
    }
    // Teardown of the last exec's nested client finishes asynchronously: allow it to settle.
    let mut settled = (fd_count(engine.child.id()), alive());
    for _ in 0..100 {
        if settled.0 <= fds + 2 && settled.1 <= tasks + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        settled = (fd_count(engine.child.id()), alive());
    }
    assert!(settled.0 <= fds + 2, "fds grew from {fds} to {}", settled.0);
    assert!(
        settled.1 <= tasks + 2,
        "tasks grew from {tasks} to {}",
        settled.1
    );
    client.close().await.expect("close");
}
