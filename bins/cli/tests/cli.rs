//! `dagr` end to end against a real `dagr-engine`: `query`, `run` and `session` with good and bad
//! basic auth, a SIGKILLed client ending its session at once, and `stdio://` hosts through
//! `dagr-engine dial-stdio`.

mod common;

use common::{dagr, engine_bin};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Output, Stdio};

type Engine = dagr_testkit::EngineProcess;

trait EngineExt {
    fn metric(&self, name: &str) -> u64;
}

impl EngineExt for Engine {
    fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        dagr_testkit::metric(&text, name)
            .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
    }
}

fn start_engine() -> Engine {
    Engine::start(&engine_bin(), &[])
}

fn run_dagr(engine: &Engine, args: &[&str], stdin: &str) -> Output {
    run_dagr_to(engine, args, stdin, Stdio::piped())
}

/// [`run_dagr`] with its stdout going to `stdout`.
fn run_dagr_to(engine: &Engine, args: &[&str], stdin: &str, stdout: impl Into<Stdio>) -> Output {
    let mut child = Command::new(dagr())
        .args(args)
        .env("DAGR_HOST", engine.host())
        .current_dir(engine.dir.path())
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dagr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("dagr output")
}

fn curl_query(port: u16, user: Option<&str>) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-D", "/dev/stderr", "-w", "\n%{http_code}"]);
    if let Some(u) = user {
        cmd.args(["-u", &format!("{u}:")]);
    }
    let out = cmd
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"query":"{ version }"}"#,
            &format!("http://127.0.0.1:{port}/query"),
        ])
        .output()
        .expect("curl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').expect("status line");
    (
        code.trim().parse().expect("code"),
        body.to_owned(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn query_from_stdin_and_file_with_variables() {
    let engine = start_engine();
    let out = run_dagr(&engine, &["query"], "{ version }");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let file = engine.dir.path().join("q.graphql");
    std::fs::write(
        &file,
        "query Q($v: String!) { ok: checkVersionCompatibility(version: $v) }",
    )
    .expect("write");
    let out = run_dagr(
        &engine,
        &["query", file.to_str().expect("path"), "--var", "v=0.11.8"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], true);

    // A reader that has gone away (`dagr query | head`) ends dagr quietly: no panic.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = run_dagr_to(&engine, &["query"], "{ version }", writer);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = run_dagr(&engine, &["query", "-"], "{ nope }");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "{err}");

    let out = Command::new(dagr())
        .args(["--host", "tcp://127.0.0.1:1", "query"])
        .stdin(Stdio::null())
        .output()
        .expect("dagr");
    assert!(!out.status.success());
    // Every session ended.
    engine.wait_metric("dagr_sessions_active", 0);
}

#[test]
fn run_proxies_queries_with_basic_auth() {
    let engine = start_engine();
    let script = r#"
        code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
        echo "good=$(curl -s -u "$DAGGER_SESSION_TOKEN:" -d '{"query":"{version}"}' http://127.0.0.1:$DAGGER_SESSION_PORT/query)"
        echo "none=$(code -d '{"query":"{version}"}' http://127.0.0.1:$DAGGER_SESSION_PORT/query)"
        echo "bad=$(code -u wrong: -d '{"query":"{version}"}' http://127.0.0.1:$DAGGER_SESSION_PORT/query)"
        exit 7
    "#;
    let out = run_dagr(&engine, &["run", "--", "sh", "-c", script], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exit code of the command: {stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "good={{\"data\":{{\"version\":\"{}\"}}}}",
            env!("CARGO_PKG_VERSION")
        )),
        "{stdout}"
    );
    assert!(stdout.contains("none=401"), "{stdout}");
    assert!(stdout.contains("bad=401"), "{stdout}");
    engine.wait_metric("dagr_sessions_active", 0);
}

/// A `dagr session` child and its announced port and token.
struct SessionProcess {
    child: Child,
    port: u16,
    token: String,
}

fn start_session(engine: &Engine, extra: &[&str]) -> SessionProcess {
    let mut child = Command::new(dagr())
        .arg("session")
        .args(extra)
        .env("DAGR_HOST", engine.host())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn dagr session");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("session line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    assert_eq!(v.as_object().expect("object").len(), 2, "{line}");
    SessionProcess {
        port: u16::try_from(v["port"].as_u64().expect("port")).expect("u16"),
        token: v["session_token"].as_str().expect("token").to_owned(),
        child,
    }
}

#[test]
fn session_prints_port_and_token_and_ends_on_stdin_eof() {
    let engine = start_engine();
    let mut s = start_session(&engine, &["--label", "dagger.io/sdk.name:test"]);
    assert_eq!(engine.metric("dagr_sessions_active"), 1);

    let (code, body, _) = curl_query(s.port, Some(&s.token));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(env!("CARGO_PKG_VERSION")));
    let (code, _, headers) = curl_query(s.port, Some("wrong"));
    assert_eq!(code, 401);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm="),
        "{headers}"
    );
    let (code, _, _) = curl_query(s.port, None);
    assert_eq!(code, 401);

    drop(s.child.stdin.take());
    let status = s.child.wait().expect("wait");
    assert!(status.success());
    engine.wait_metric("dagr_sessions_active", 0);
    assert_eq!(engine.metric("dagr_clients_active"), 0);
}

#[test]
fn sigkilled_client_ends_its_session_at_once() {
    let engine = start_engine();
    let mut s = start_session(&engine, &[]);
    let (code, _, _) = curl_query(s.port, Some(&s.token));
    assert_eq!(code, 200);
    assert_eq!(engine.metric("dagr_sessions_active"), 1);
    s.child.kill().expect("SIGKILL");
    let _ = s.child.wait();
    // The engine notices the closed attachables connection itself: well under any health-check
    // interval (the 30 s bound is only hang protection).
    let took = engine.wait_metric("dagr_sessions_active", 0);
    eprintln!("session ended {took:?} after SIGKILL");
    assert_eq!(engine.metric("dagr_clients_active"), 0);
}

#[test]
fn stdio_host_through_dial_stdio() {
    let engine = start_engine();
    let host = format!(
        "stdio://{} dial-stdio --addr unix://{}",
        engine_bin().display(),
        engine.unix.display()
    );
    let mut child = Command::new(dagr())
        .args(["--host", &host, "query"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dagr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{ version }")
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    engine.wait_metric("dagr_sessions_active", 0);
}

#[test]
fn dagr_inside_a_session_joins_it_through_the_session_env() {
    let engine = start_engine();
    // The inner dagr has no --host/DAGR_HOST: it uses DAGGER_SESSION_PORT/TOKEN, here those of
    // `dagr run` (the same interface a nested exec's listener offers).
    let script = format!("unset DAGR_HOST; echo '{{ version }}' | {} query", dagr());
    let out = run_dagr(&engine, &["run", "--", "sh", "-c", &script], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

/// `dagr du`'s size column of `kind` as bytes (it prints `12.3 MiB`-like sizes).
fn du_bytes(out: &str, kind: &str) -> (u64, f64) {
    let line = out
        .lines()
        .find(|l| l.starts_with(kind))
        .unwrap_or_else(|| panic!("no {kind} line in:\n{out}"));
    let fields: Vec<&str> = line[kind.len()..].split_whitespace().collect();
    let entries: u64 = fields[0].parse().expect("entries");
    let scale = match fields[2] {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other}"),
    };
    (entries, fields[1].parse::<f64>().expect("size") * scale)
}

#[test]
fn du_shows_the_cache_by_kind_and_prune_empties_it() {
    let engine = start_engine();
    let image = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone();
    let q = format!(
        "{{ container {{ from(address: \"{image}\") {{ withExec(args: [\"dd\", \"if=/dev/zero\", \"of=/big\", \"bs=1M\", \"count=8\"]) {{ sync }} }} }} }}"
    );
    let out = run_dagr(&engine, &["query"], &q);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let du = run_dagr(&engine, &["du"], "");
    assert!(
        du.status.success(),
        "{}",
        String::from_utf8_lossy(&du.stderr)
    );
    let text = String::from_utf8_lossy(&du.stdout).into_owned();
    let (images, image_bytes) = du_bytes(&text, "images");
    let (execs, exec_bytes) = du_bytes(&text, "execs");
    assert!(images >= 1 && image_bytes > 1e6, "{text}");
    assert!(execs >= 1 && exec_bytes >= 8.0 * 1024.0 * 1024.0, "{text}");

    // Used just now: kept by --older-than, removed by a plain prune (the session ended).
    let kept = run_dagr(&engine, &["prune", "--older-than", "1h"], "");
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    let after = String::from_utf8_lossy(&run_dagr(&engine, &["du"], "").stdout).into_owned();
    assert_eq!(du_bytes(&after, "execs").0, execs, "{after}");
    // The results are older than the handover window once a few seconds passed.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let pruned = run_dagr(&engine, &["prune"], "");
    let report = String::from_utf8_lossy(&pruned.stdout).into_owned();
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    assert!(report.starts_with("removed "), "{report}");
    let empty = String::from_utf8_lossy(&run_dagr(&engine, &["du"], "").stdout).into_owned();
    assert_eq!(du_bytes(&empty, "execs"), (0, 0.0), "{empty}");
    assert_eq!(du_bytes(&empty, "images").0, 0, "{empty}");

    let bad = run_dagr(&engine, &["prune", "--older-than", "3 weeks"], "");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("duration"));
}

#[test]
fn prune_removes_cache_volumes_and_downloads_unless_kept() {
    let engine = start_engine();
    let image = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone();
    let files = dagr_testkit::http::FileServer::start();
    files.put("/tool.tar", b"a download");
    let query = |q: String| -> serde_json::Value {
        let out = run_dagr(&engine, &["query"], &q);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let volume = query(r#"{ cacheVolume(key: "deps") { id } }"#.to_owned())["cacheVolume"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // "warm" when the volume holds what an earlier exec left, "fresh" when it starts empty.
    let use_volume = |n: &str| -> String {
        let script = "if [ -e /deps/m ]; then echo warm; else touch /deps/m; echo fresh; fi";
        let data = query(format!(
            "{{ container {{ from(address: {}) {{ withEnvVariable(name: \"N\", value: {}) {{ withMountedCache(path: \"/deps\", cache: {}) {{ withExec(args: [\"sh\", \"-c\", {}]) {{ stdout }} }} }} }} }} }}",
            serde_json::json!(image),
            serde_json::json!(n),
            serde_json::json!(volume),
            serde_json::json!(script)
        ));
        data["container"]["from"]["withEnvVariable"]["withMountedCache"]["withExec"]["stdout"]
            .as_str()
            .expect("stdout")
            .trim()
            .to_owned()
    };
    assert_eq!(use_volume("1"), "fresh");
    assert_eq!(use_volume("2"), "warm");
    let download = query(format!(
        "{{ http(url: {}) {{ contents }} }}",
        serde_json::json!(files.url("/tool.tar"))
    ));
    assert_eq!(download["http"]["contents"], "a download");

    let du = || String::from_utf8_lossy(&run_dagr(&engine, &["du"], "").stdout).into_owned();
    let prune = |args: &[&str]| -> String {
        let out = run_dagr(&engine, &[&["prune"], args].concat(), "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = du();
    assert_eq!(du_bytes(&text, "cache volumes").0, 1, "{text}");
    assert_eq!(du_bytes(&text, "downloads"), (1, 10.0), "{text}");

    // Used just now: an age keeps both.
    prune(&["--older-than", "1h"]);
    let text = du();
    assert_eq!(du_bytes(&text, "cache volumes").0, 1, "{text}");
    assert_eq!(du_bytes(&text, "downloads").0, 1, "{text}");
    // Kept on request; the download goes.
    let report = prune(&["--keep-cache-volumes"]);
    assert!(
        report.contains(" 0 cache volumes and 1 downloads"),
        "{report}"
    );
    let text = du();
    assert_eq!(du_bytes(&text, "cache volumes").0, 1, "{text}");
    assert_eq!(du_bytes(&text, "downloads"), (0, 0.0), "{text}");
    assert_eq!(use_volume("3"), "warm");
    // A plain prune removes the volume: the next exec starts it empty.
    let report = prune(&[]);
    assert!(
        report.contains(" 1 cache volumes and 0 downloads"),
        "{report}"
    );
    let text = du();
    assert_eq!(du_bytes(&text, "cache volumes"), (0, 0.0), "{text}");
    assert_eq!(use_volume("4"), "fresh");
    // The download comes again when asked for (its cached result went with the prune).
    let again = query(format!(
        "{{ http(url: {}) {{ contents }} }}",
        serde_json::json!(files.url("/tool.tar"))
    ));
    assert_eq!(again["http"]["contents"], "a download");
}
