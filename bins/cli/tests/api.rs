//! The core API end to end: `dagr query` against a real `dagr-engine` (runc, the loopback
//! registry of `dagr-testkit` with the busybox image), with the client's working directory in a
//! temp dir so host paths are relative to it. One engine per test (testkit's `EngineProcess`
//! stops it on drop and detaches whatever it left mounted).

mod common;

use common::{Tmux, dagr, engine_bin};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dagr_testkit::EngineProcess;
use serde_json::{Value, json};

/// An engine for one test plus the client's working directory.
struct Api {
    engine: EngineProcess,
    /// The client's working directory: host paths are relative to it.
    work: tempfile::TempDir,
    /// `127.0.0.1:PORT/busybox:latest`.
    image: String,
}

impl Api {
    fn start() -> Api {
        // A fixture dir of this test binary's own: other test crates build theirs concurrently.
        let image = dagr_testkit::registry(concat!(env!("CARGO_TARGET_TMPDIR"), "/dagr-cli-api"))
            .image
            .clone();
        Api {
            engine: EngineProcess::start(&engine_bin(), &[]),
            work: tempfile::tempdir().expect("work dir"),
            image,
        }
    }

    fn work(&self) -> &Path {
        self.work.path()
    }

    /// Runs `dagr query` with `doc` on stdin; `$img` is always set to the busybox image.
    fn run(&self, doc: &str, vars: &[(&str, &str)]) -> Output {
        let mut args = vec![
            "query".to_owned(),
            "--var".to_owned(),
            format!("img={}", self.image),
        ];
        for (k, v) in vars {
            args.extend(["--var".to_owned(), format!("{k}={v}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.dagr(&args, doc.as_bytes())
    }

    /// Runs `dagr ARGS` against this engine from the work dir with `stdin` written to it.
    fn dagr(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(dagr())
            .args(args)
            .env("DAGR_HOST", self.engine.host())
            .current_dir(self.work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dagr");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write dagr's stdin");
        child.wait_with_output().expect("dagr output")
    }

    /// [`Api::dagr`] that must succeed: its stdout.
    fn dagr_ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.dagr(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "dagr {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// A query that must succeed: its data.
    fn ok(&self, doc: &str, vars: &[(&str, &str)]) -> Value {
        let out = self.run(doc, vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "query failed ({}):\n{stderr}\nquery:\n{doc}",
            out.status
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A query that must fail: its errors (message and extensions) as `dagr query` prints them.
    fn err(&self, doc: &str, vars: &[(&str, &str)]) -> Vec<QueryError> {
        let out = self.run(doc, vars);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "query should fail with exit 1; stdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        let errors = parse_errors(&stderr);
        assert!(!errors.is_empty(), "no error printed:\n{stderr}");
        errors
    }
}

/// A `dagr session` (one engine session for several requests, the way SDKs use it), queried
/// with curl through its basic-auth proxy. Ends the session on drop (stdin EOF).
struct Session {
    child: std::process::Child,
    port: u16,
    token: String,
}

impl Session {
    fn start(api: &Api) -> Session {
        use std::io::BufRead as _;
        let mut child = Command::new(dagr())
            .arg("session")
            .env("DAGR_HOST", api.engine.host())
            .current_dir(api.work())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn dagr session");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("session line");
        let v: Value = serde_json::from_str(&line).expect("one JSON line");
        Session {
            port: u16::try_from(v["port"].as_u64().expect("port")).expect("u16"),
            token: v["session_token"].as_str().expect("token").to_owned(),
            child,
        }
    }

    /// The whole GraphQL response (`data` and `errors`).
    fn query(&self, doc: &str, vars: Value) -> Value {
        let body = json!({ "query": doc, "variables": vars }).to_string();
        let mut child = Command::new("curl")
            .args(["-sS", "--max-time", "600", "-u"])
            .arg(format!("{}:", self.token))
            .args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                "@-",
            ])
            .arg(format!("http://127.0.0.1:{}/query", self.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("write body");
        let out = child.wait_with_output().expect("curl output");
        assert!(out.status.success(), "curl failed: {}", out.status);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A query that must succeed: its data.
    fn ok(&self, doc: &str, vars: Value) -> Value {
        let v = self.query(doc, vars);
        assert!(
            v.get("errors").is_none(),
            "query failed: {v}\nquery:\n{doc}"
        );
        v["data"].clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One error of a failed `dagr query`.
#[derive(Debug)]
struct QueryError {
    message: String,
    extensions: Option<Value>,
}

/// Reads `error: MSG` lines, each optionally followed by `  extensions: JSON`.
fn parse_errors(stderr: &str) -> Vec<QueryError> {
    let mut out: Vec<QueryError> = Vec::new();
    for line in stderr.lines() {
        if let Some(msg) = line.strip_prefix("error: ") {
            out.push(QueryError {
                message: msg.to_owned(),
                extensions: None,
            });
        } else if let Some(ext) = line.strip_prefix("  extensions: ")
            && let Some(last) = out.last_mut()
        {
            last.extensions = Some(serde_json::from_str(ext).expect("extensions are JSON"));
        }
    }
    out
}

/// `v` at a `/`-separated path of object keys.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('/') {
        cur = cur
            .get(key)
            .unwrap_or_else(|| panic!("no {key:?} on the way to {path} in {v}"));
    }
    cur
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {v}"))
}

#[test]
fn exec_env_workdir_user_stdin_and_redirect() {
    let api = Api::start();
    let v = api.ok(
        r#"query($img: String!) {
          container { from(address: $img) {
            out: withExec(args: ["echo", "hello", "world"]) { stdout stderr }
            err: withExec(args: ["sh", "-c", "echo oops >&2"]) { stderr }
            env: withEnvVariable(name: "A", value: "one") {
              withEnvVariable(name: "B", value: "${A}-two", expand: true) {
                withEnvVariable(name: "C", value: "${A}-raw") {
                  withExec(args: ["sh", "-c", "echo $A $B $C"]) { stdout }
                  b: envVariable(name: "B")
                  missing: envVariable(name: "NOPE")
                }
              }
            }
            wd: withWorkdir(path: "/tmp") { withWorkdir(path: "sub") {
              workdir
              withExec(args: ["pwd"]) { stdout }
            } }
            user: withUser(name: "65534") { user withExec(args: ["id", "-u"]) { stdout } }
            named: withUser(name: "nobody") { withExec(args: ["id", "-u"]) { stdout } }
            stdin: withExec(args: ["cat"], stdin: "from stdin\n") { stdout }
            redirected: withExec(args: ["echo", "to a file"], redirectStdout: "/out.txt") {
              stdout
              file(path: "/out.txt") { contents }
            }
          } }
        }"#,
        &[],
    );
    let c = at(&v, "container/from");
    assert_eq!(s(c, "out/stdout"), "hello world\n");
    assert_eq!(s(c, "out/stderr"), "");
    assert_eq!(s(c, "err/stderr"), "oops\n");
    let env = at(c, "env/withEnvVariable/withEnvVariable");
    assert_eq!(s(env, "withExec/stdout"), "one one-two ${A}-raw\n");
    assert_eq!(s(env, "b"), "one-two");
    assert!(at(env, "missing").is_null());
    assert_eq!(s(c, "wd/withWorkdir/workdir"), "/tmp/sub");
    // `pwd` in a workdir that did not exist: the engine creates it.
    assert_eq!(s(c, "wd/withWorkdir/withExec/stdout"), "/tmp/sub\n");
    assert_eq!(s(c, "user/user"), "65534");
    assert_eq!(s(c, "user/withExec/stdout"), "65534\n");
    assert_eq!(s(c, "named/withExec/stdout"), "65534\n");
    assert_eq!(s(c, "stdin/stdout"), "from stdin\n");
    // Like Dagger 0.11's shim: the redirect file gets stdout, and `stdout` still returns it.
    assert_eq!(s(c, "redirected/stdout"), "to a file\n");
    assert_eq!(s(c, "redirected/file/contents"), "to a file\n");
}

#[test]
fn entrypoint_default_args_env_variables_and_labels() {
    let api = Api::start();
    let v = api.ok(
        r#"query($img: String!) {
          container { from(address: $img) {
            entrypoint
            defaultArgs
            withEntrypoint(args: ["echo", "ep"]) {
              entrypoint
              defaultArgs
              withDefaultArgs(args: ["default", "args"]) {
                defaultArgs
                plain: withExec(args: []) { stdout }
                given: withExec(args: ["given"]) { stdout }
                skipped: withExec(args: ["echo", "no", "entrypoint"], skipEntrypoint: true) { stdout }
              }
            }
            kept: withDefaultArgs(args: ["kept"]) {
              withEntrypoint(args: ["echo"], keepDefaultArgs: true) {
                defaultArgs
                withExec(args: []) { stdout }
              }
            }
            withEnvVariable(name: "GREETING", value: "hi") {
              envVariables { id name value }
            }
            withLabel(name: "org.example.a", value: "1") {
              withLabel(name: "org.example.b", value: "2") {
                a: label(name: "org.example.a")
                labels { name value }
                withoutLabel(name: "org.example.a") {
                  labels { name value }
                  gone: label(name: "org.example.a")
                }
              }
            }
          } }
        }"#,
        &[],
    );
    let c = at(&v, "container/from");
    // The busybox image has no entrypoint and `Cmd: ["/bin/sh"]`.
    assert_eq!(at(c, "entrypoint"), &json!([]));
    assert_eq!(at(c, "defaultArgs"), &json!(["/bin/sh"]));
    let ep = at(c, "withEntrypoint");
    assert_eq!(at(ep, "entrypoint"), &json!(["echo", "ep"]));
    // A new entrypoint drops the image's default args unless told to keep them.
    assert_eq!(at(ep, "defaultArgs"), &json!([]));
    let da = at(ep, "withDefaultArgs");
    assert_eq!(at(da, "defaultArgs"), &json!(["default", "args"]));
    assert_eq!(s(da, "plain/stdout"), "ep default args\n");
    assert_eq!(s(da, "given/stdout"), "ep given\n");
    assert_eq!(s(da, "skipped/stdout"), "no entrypoint\n");
    let kept = at(c, "kept/withEntrypoint");
    assert_eq!(at(kept, "defaultArgs"), &json!(["kept"]));
    assert_eq!(s(kept, "withExec/stdout"), "kept\n");

    let vars = at(c, "withEnvVariable/envVariables")
        .as_array()
        .expect("a list");
    let names: Vec<&str> = vars.iter().map(|e| s(e, "name")).collect();
    assert_eq!(names, ["PATH", "GREETING"], "image env first, in order");
    assert_eq!(s(&vars[1], "value"), "hi");
    let loaded = api.ok(
        "query($id: EnvVariableID!) { loadEnvVariableFromID(id: $id) { name value } }",
        &[("id", s(&vars[1], "id"))],
    );
    assert_eq!(
        at(&loaded, "loadEnvVariableFromID"),
        &json!({"name": "GREETING", "value": "hi"})
    );

    let l = at(c, "withLabel/withLabel");
    assert_eq!(s(l, "a"), "1");
    assert_eq!(
        at(l, "labels"),
        &json!([{"name": "org.example.a", "value": "1"}, {"name": "org.example.b", "value": "2"}])
    );
    assert_eq!(
        at(l, "withoutLabel/labels"),
        &json!([{"name": "org.example.b", "value": "2"}])
    );
    assert!(at(l, "withoutLabel/gone").is_null());
}

#[test]
fn directories_built_in_the_engine() {
    let api = Api::start();
    let base = api.ok(
        r#"{
          directory {
            withNewFile(path: "a.txt", contents: "alpha") {
              withNewFile(path: "sub/b.log", contents: "bravo!") {
                withNewFile(path: "sub/deep/c.txt", contents: "charlie") {
                  withNewDirectory(path: "empty") {
                    id
                    entries
                    sub: entries(path: "sub")
                    txt: glob(pattern: "**/*.txt")
                    top: glob(pattern: "*")
                    file(path: "sub/b.log") { contents size name }
                    directory(path: "sub") {
                      entries
                      file(path: "deep/c.txt") { contents name }
                    }
                  }
                }
              }
            }
          }
        }"#,
        &[],
    );
    let d = at(
        &base,
        "directory/withNewFile/withNewFile/withNewFile/withNewDirectory",
    );
    assert_eq!(at(d, "entries"), &json!(["a.txt", "empty", "sub"]));
    assert_eq!(at(d, "sub"), &json!(["b.log", "deep"]));
    assert_eq!(at(d, "txt"), &json!(["a.txt", "sub/deep/c.txt"]));
    assert_eq!(at(d, "top"), &json!(["a.txt", "empty", "sub"]));
    assert_eq!(
        at(d, "file"),
        &json!({"contents": "bravo!", "size": 6, "name": "b.log"})
    );
    assert_eq!(at(d, "directory/entries"), &json!(["b.log", "deep"]));
    assert_eq!(
        at(d, "directory/file"),
        &json!({"contents": "charlie", "name": "c.txt"})
    );

    // Copies between directories, by ID, in a new session.
    let id = s(d, "id");
    let v = api.ok(
        r#"query($d: DirectoryID!) {
          loadDirectoryFromID(id: $d) {
            file(path: "a.txt") { id withName(name: "renamed.txt") { id name contents } }
            sub: directory(path: "sub") { id }
          }
        }"#,
        &[("d", id)],
    );
    let a_id = s(&v, "loadDirectoryFromID/file/id").to_owned();
    let renamed = at(&v, "loadDirectoryFromID/file/withName");
    assert_eq!(s(renamed, "name"), "renamed.txt");
    assert_eq!(s(renamed, "contents"), "alpha");
    let renamed_id = s(renamed, "id").to_owned();
    let sub_id = s(&v, "loadDirectoryFromID/sub/id").to_owned();
    let v = api.ok(
        r#"query($d: DirectoryID!, $a: FileID!, $r: FileID!, $sub: DirectoryID!) {
          directory {
            one: withFile(path: "copied/one.txt", source: $a) {
              entries(path: "copied")
              file(path: "copied/one.txt") { contents }
            }
            many: withFiles(path: "files", sources: [$a, $r]) { entries(path: "files") }
            all: withDirectory(path: "all", directory: $d) { glob(pattern: "all/**") }
            inc: withDirectory(path: "/", directory: $d, include: ["**/*.txt"]) {
              glob(pattern: "**")
            }
            exc: withDirectory(path: "x", directory: $d, exclude: ["sub/deep", "*.txt"]) {
              glob(pattern: "**")
            }
            subdir: withDirectory(path: "s", directory: $sub) { glob(pattern: "**") }
          }
          loadDirectoryFromID(id: $d) {
            withoutFile(path: "sub/b.log") { glob(pattern: "**") }
            withoutDirectory(path: "sub") { entries }
          }
        }"#,
        &[
            ("d", id),
            ("a", &a_id),
            ("r", &renamed_id),
            ("sub", &sub_id),
        ],
    );
    let d = at(&v, "directory");
    assert_eq!(at(d, "one/entries"), &json!(["one.txt"]));
    assert_eq!(s(d, "one/file/contents"), "alpha");
    assert_eq!(at(d, "many/entries"), &json!(["a.txt", "renamed.txt"]));
    assert_eq!(
        at(d, "all/glob"),
        &json!([
            "all/a.txt",
            "all/empty",
            "all/sub",
            "all/sub/b.log",
            "all/sub/deep",
            "all/sub/deep/c.txt"
        ])
    );
    // Parent directories of included files come along (as in Dagger/BuildKit).
    assert_eq!(
        at(d, "inc/glob"),
        &json!(["a.txt", "sub", "sub/deep", "sub/deep/c.txt"])
    );
    assert_eq!(
        at(d, "exc/glob"),
        &json!(["x", "x/empty", "x/sub", "x/sub/b.log"])
    );
    assert_eq!(
        at(d, "subdir/glob"),
        &json!(["s", "s/b.log", "s/deep", "s/deep/c.txt"])
    );
    let l = at(&v, "loadDirectoryFromID");
    assert_eq!(
        at(l, "withoutFile/glob"),
        &json!(["a.txt", "empty", "sub", "sub/deep", "sub/deep/c.txt"])
    );
    assert_eq!(
        at(l, "withoutDirectory/entries"),
        &json!(["a.txt", "empty"])
    );
}

#[test]
fn container_file_ops_and_mounts() {
    let api = Api::start();
    let dir = api.ok(
        r#"{ directory { withNewFile(path: "in.txt", contents: "from a directory") {
               id
               file(path: "in.txt") { id }
        } } }"#,
        &[],
    );
    let dir_id = s(&dir, "directory/withNewFile/id").to_owned();
    let file_id = s(&dir, "directory/withNewFile/file/id").to_owned();
    let v = api.ok(
        r#"query($img: String!, $dir: DirectoryID!, $file: FileID!,
                 $cache: CacheVolumeID!) {
          container { from(address: $img) {
            newfile: withNewFile(path: "/etc/greeting", contents: "hello\n") {
              file(path: "/etc/greeting") { contents }
              withExec(args: ["cat", "/etc/greeting"]) { stdout }
            }
            withdir: withDirectory(path: "/data", directory: $dir) {
              withExec(args: ["cat", "/data/in.txt"]) { stdout }
            }
            mounted: withMountedDirectory(path: "/mnt", source: $dir) {
              mounts
              withExec(args: ["sh", "-c", "cat /mnt/in.txt; echo written > /mnt/new.txt"]) {
                stdout
                directory(path: "/mnt") { entries file(path: "new.txt") { contents } }
                rootfs { glob(pattern: "mnt/**") }
              }
            }
            mfile: withMountedFile(path: "/m/file.txt", source: $file) {
              withExec(args: ["cat", "/m/file.txt"]) { stdout }
              file(path: "/m/file.txt") { contents }
              withNewFile(path: "/m/file.txt", contents: "replaced") {
                withExec(args: ["cat", "/m/file.txt"]) { stdout }
              }
            }
            temp: withMountedTemp(path: "/scratch") {
              withExec(args: ["sh", "-c", "echo x > /scratch/t; grep -c /scratch /proc/mounts"]) {
                stdout
                withExec(args: ["ls", "-A", "/scratch"]) { stdout }
              }
            }
            cache: withMountedCache(path: "/cache", cache: $cache) {
              withExec(args: ["sh", "-c", "echo first > /cache/shared"]) {
                withMountedCache(path: "/cache", cache: $cache, sharing: LOCKED) {
                  withExec(args: ["cat", "/cache/shared"]) {
                    stdout
                    withoutMount(path: "/cache") {
                      withMountedCache(path: "/c2", cache: $cache, sharing: PRIVATE) {
                        withExec(args: ["ls", "/c2"]) { stdout }
                      }
                    }
                  }
                }
              }
            }
            without: withMountedTemp(path: "/scratch") {
              withMountedDirectory(path: "/mnt", source: $dir) {
                mounts
                withoutMount(path: "/scratch") {
                  mounts
                  withExec(args: ["sh", "-c", "grep -c /scratch /proc/mounts || true"]) { stdout }
                }
              }
            }
          } }
        }"#,
        &[
            ("dir", &dir_id),
            ("file", &file_id),
            ("cache", &cache_volume(&api, "file-ops-cache")),
        ],
    );
    let c = at(&v, "container/from");
    assert_eq!(s(c, "newfile/file/contents"), "hello\n");
    assert_eq!(s(c, "newfile/withExec/stdout"), "hello\n");
    assert_eq!(s(c, "withdir/withExec/stdout"), "from a directory");
    let m = at(c, "mounted");
    assert_eq!(at(m, "mounts"), &json!(["/mnt"]));
    assert_eq!(s(m, "withExec/stdout"), "from a directory");
    assert_eq!(
        at(m, "withExec/directory/entries"),
        &json!(["in.txt", "new.txt"])
    );
    assert_eq!(
        s(m, "withExec/directory/file/contents"),
        "written\n",
        "the exec's write into the mount is in directory(mountpath)"
    );
    assert_eq!(
        at(m, "withExec/rootfs/glob"),
        &json!([]),
        "the mount's contents are not in the rootfs"
    );
    assert_eq!(s(c, "mfile/withExec/stdout"), "from a directory");
    assert_eq!(
        s(c, "mfile/file/contents"),
        "from a directory",
        "file(path) of a mounted file is its source"
    );
    assert_eq!(
        s(c, "mfile/withNewFile/withExec/stdout"),
        "replaced",
        "writing a mounted file's path changes what is mounted"
    );
    assert_eq!(s(c, "temp/withExec/stdout"), "1\n");
    assert_eq!(
        s(c, "temp/withExec/withExec/stdout"),
        "",
        "a tmpfs starts empty in every exec"
    );
    let cache = at(c, "cache/withExec/withMountedCache/withExec");
    assert_eq!(
        s(cache, "stdout"),
        "first\n",
        "a cache is shared between execs"
    );
    assert_eq!(
        s(cache, "withoutMount/withMountedCache/withExec/stdout"),
        "shared\n",
        "a PRIVATE mount nobody else holds reuses the volume"
    );
    let w = at(c, "without/withMountedDirectory");
    assert_eq!(at(w, "mounts"), &json!(["/scratch", "/mnt"]));
    assert_eq!(at(w, "withoutMount/mounts"), &json!(["/mnt"]));
    assert_eq!(s(w, "withoutMount/withExec/stdout"), "0\n");
}

#[test]
fn paths_under_cache_tmpfs_and_file_mounts_are_refused() {
    let api = Api::start();
    let file_id = {
        let v = api.ok(
            r#"{ directory { withNewFile(path: "f", contents: "f") { file(path: "f") { id } } } }"#,
            &[],
        );
        s(&v, "directory/withNewFile/file/id").to_owned()
    };
    let cache = cache_volume(&api, "refusals");
    for (field, var) in [
        (
            r#"withMountedCache(path: "/mnt", cache: $v)"#,
            Some(("CacheVolumeID", &cache)),
        ),
        (r#"withMountedTemp(path: "/mnt")"#, None),
        (
            r#"withMountedFile(path: "/mnt", source: $v)"#,
            Some(("FileID", &file_id)),
        ),
    ] {
        let decl = var.map_or(String::new(), |(t, _)| format!(", $v: {t}!"));
        let doc = format!(
            r#"query($img: String!{decl}) {{
              container {{ from(address: $img) {{ {field} {{
                directory(path: "/mnt/sub") {{ entries }}
              }} }} }}
            }}"#
        );
        let vars: Vec<(&str, &str)> = var.iter().map(|(_, v)| ("v", v.as_str())).collect();
        let errors = api.err(&doc, &vars);
        assert!(
            errors[0].message.contains("/mnt/sub")
                && errors[0].message.replace("/mnt/sub", "").contains("/mnt"),
            "{field}: the refusal names the path and the mount: {errors:?}"
        );
    }
}

#[test]
fn owners_and_permissions() {
    let api = Api::start();
    let v = api.ok(
        r#"{ directory {
          withNewFile(path: "sub/a.txt", contents: "a", permissions: 384) {
            id
            file(path: "sub/a.txt") { id }
          }
        } }"#,
        &[],
    );
    let dir_id = s(&v, "directory/withNewFile/id").to_owned();
    let file_id = s(&v, "directory/withNewFile/file/id").to_owned();
    let v = api.ok(
        r#"query($img: String!, $d: DirectoryID!, $f: FileID!) {
          container { from(address: $img) {
            newfile: withNewFile(path: "/f.txt", contents: "x", permissions: 416, owner: "1000:1001") {
              withExec(args: ["stat", "-c", "%a %u:%g", "/f.txt"]) { stdout }
            }
            withfile: withFile(path: "/copied", source: $f, permissions: 448, owner: "7") {
              withExec(args: ["stat", "-c", "%a %u:%g", "/copied"]) { stdout }
            }
            withdir: withDirectory(path: "/d", directory: $d, owner: "1234") {
              withExec(args: ["stat", "-c", "%a %u:%g %n", "/d/sub", "/d/sub/a.txt"]) { stdout }
            }
            plain: withDirectory(path: "/p", directory: $d) {
              withExec(args: ["stat", "-c", "%a %u:%g", "/p/sub/a.txt"]) { stdout }
            }
            mounted: withMountedDirectory(path: "/m", source: $d, owner: "1000:1000") {
              withUser(name: "1000") {
                withExec(args: ["sh", "-c",
                  "stat -c '%u:%g %n' /m /m/sub /m/sub/a.txt && touch /m/new && echo wrote"]) {
                  stdout
                }
              }
            }
          } }
        }"#,
        &[("d", &dir_id), ("f", &file_id)],
    );
    let c = at(&v, "container/from");
    assert_eq!(s(c, "newfile/withExec/stdout"), "640 1000:1001\n");
    assert_eq!(s(c, "withfile/withExec/stdout"), "700 7:7\n");
    assert_eq!(
        s(c, "withdir/withExec/stdout"),
        "755 1234:1234 /d/sub\n600 1234:1234 /d/sub/a.txt\n"
    );
    assert_eq!(
        s(c, "plain/withExec/stdout"),
        "600 0:0\n",
        "without an owner, files keep theirs and their mode"
    );
    assert_eq!(
        s(c, "mounted/withUser/withExec/stdout"),
        "1000:1000 /m\n1000:1000 /m/sub\n1000:1000 /m/sub/a.txt\nwrote\n",
        "the owner of a mounted directory owns its root too, and can write there"
    );
}

#[test]
fn exec_writes_reach_each_mounted_directory() {
    let api = Api::start();
    let v = api.ok(
        r#"{ directory { withNewFile(path: "sub/a.txt", contents: "a") {
               id
               directory(path: "sub") { id }
               file(path: "sub/a.txt") { id }
        } } }"#,
        &[],
    );
    let d = at(&v, "directory/withNewFile");
    let v = api.ok(
        r#"query($img: String!, $d: DirectoryID!, $sub: DirectoryID!, $f: FileID!) {
          container { from(address: $img) {
            withMountedDirectory(path: "/a", source: $d) {
              withMountedFile(path: "/f", source: $f) {
                withMountedDirectory(path: "/b", source: $d) {
                  withMountedTemp(path: "/t") {
                    withMountedDirectory(path: "/s", source: $sub) {
                      withMountedDirectory(path: "/s/inner", source: $sub) {
                        withExec(args: ["sh", "-c",
                          "echo x > /a/x; echo y > /b/y; echo s > /s/s; echo i > /s/inner/i; echo r > /r"]) {
                          a: directory(path: "/a") { entries }
                          b: directory(path: "/b") { entries }
                          s: directory(path: "/s") { entries }
                          inner: directory(path: "/s/inner") { entries }
                          rootfs { entries }
                          withExec(args: ["sh", "-c", "cat /a/x /b/y /s/s /s/inner/i /f /r"]) { stdout }
                        }
                      }
                    }
                  }
                }
              }
            }
          } }
        }"#,
        &[
            ("d", s(d, "id")),
            ("sub", s(d, "directory/id")),
            ("f", s(d, "file/id")),
        ],
    );
    let e = at(
        &v,
        "container/from/withMountedDirectory/withMountedFile/withMountedDirectory/withMountedTemp/withMountedDirectory/withMountedDirectory/withExec",
    );
    // Two mounts of one directory are two independent copies.
    assert_eq!(at(e, "a/entries"), &json!(["sub", "x"]));
    assert_eq!(at(e, "b/entries"), &json!(["sub", "y"]));
    // A mounted subdirectory; the mountpoint of the nested mount stays in it (as in BuildKit).
    assert_eq!(at(e, "s/entries"), &json!(["a.txt", "inner", "s"]));
    assert_eq!(at(e, "inner/entries"), &json!(["a.txt", "i"]));
    let root = at(e, "rootfs/entries").as_array().expect("entries");
    assert!(root.contains(&json!("r")), "{root:?}");
    for stub in ["a", "b", "f", "s", "t"] {
        assert!(
            !root.contains(&json!(stub)),
            "mountpoint {stub} left in the rootfs: {root:?}"
        );
    }
    assert_eq!(s(e, "withExec/stdout"), "x\ny\ns\ni\nar\n");
}

/// BuildKit's copy (fsutil `prepareTargetDir`), which Dagger's `withFile` uses: a file copied onto
/// an existing directory lands inside it under its own name; the directory stays.
#[test]
fn with_file_onto_an_existing_directory_copies_into_it() {
    let api = Api::start();
    let v = api.ok(
        r#"{ directory { withNewFile(path: "f.txt", contents: "F") { file(path: "f.txt") { id } } } }"#,
        &[],
    );
    let file_id = s(&v, "directory/withNewFile/file/id").to_owned();
    let v = api.ok(
        r#"query($img: String!, $f: FileID!) {
          directory { withNewFile(path: "d/keep.txt", contents: "k") {
            withFile(path: "d", source: $f) { glob(pattern: "**") }
          } }
          container { from(address: $img) {
            withFile(path: "/etc", source: $f) {
              withExec(args: ["sh", "-c", "cat /etc/f.txt; test -f /etc/passwd && echo kept"]) {
                stdout
              }
            }
          } }
        }"#,
        &[("f", &file_id)],
    );
    assert_eq!(
        at(&v, "directory/withNewFile/withFile/glob"),
        &json!(["d", "d/f.txt", "d/keep.txt"])
    );
    assert_eq!(s(&v, "container/from/withFile/withExec/stdout"), "Fkept\n");
}

/// BuildKit's copy with a chown (Dagger's `withDirectory(owner:)`) gives the directory it creates
/// at the destination the owner too: Dagger's ownership tests `stat` it along with the files.
#[test]
fn with_directory_owner_owns_the_created_directory() {
    let api = Api::start();
    let v = api.ok(
        r#"{ directory { withNewFile(path: "a.txt", contents: "a") { id } } }"#,
        &[],
    );
    let dir_id = s(&v, "directory/withNewFile/id").to_owned();
    let v = api.ok(
        r#"query($img: String!, $d: DirectoryID!) {
          container { from(address: $img) {
            withDirectory(path: "/d", directory: $d, owner: "1234:4321") {
              withExec(args: ["stat", "-c", "%u:%g %n", "/d", "/d/a.txt"]) { stdout }
            }
          } }
        }"#,
        &[("d", &dir_id)],
    );
    assert_eq!(
        s(&v, "container/from/withDirectory/withExec/stdout"),
        "1234:4321 /d\n1234:4321 /d/a.txt\n"
    );
}

/// `insecureRootCapabilities` grants what the engine itself holds (BuildKit's privileged mode:
/// containerd's `WithAllCurrentCapabilities`), CAP_SYS_ADMIN included; a default exec lacks it.
#[test]
fn insecure_root_capabilities_grant_the_engines_capabilities() {
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    let api = Api::start();
    let v = api.ok(
        r#"query($img: String!) {
          container { from(address: $img) {
            plain: withExec(args: ["sh", "-c", "grep CapEff /proc/self/status"]) { stdout }
            insecure: withExec(args: ["sh", "-c", "grep CapEff /proc/self/status"],
                               insecureRootCapabilities: true) { stdout }
          } }
        }"#,
        &[],
    );
    let caps = |key: &str| {
        let line = s(&v, &format!("container/from/{key}/stdout"));
        let hex = line.trim().rsplit('\t').next().expect("a CapEff value");
        u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    assert_eq!(caps("plain") & CAP_SYS_ADMIN, 0);
    assert_ne!(caps("insecure") & CAP_SYS_ADMIN, 0);
}

/// Dagger's `stdout` is the whole stream (the shim writes it to a file the engine reads back).
#[test]
fn stdout_of_a_long_exec_is_whole() {
    let api = Api::start();
    let v = api.ok(
        r#"query($img: String!) {
          container { from(address: $img) {
            withExec(args: ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a; echo END"]) {
              stdout
            }
          } }
        }"#,
        &[],
    );
    let out = s(&v, "container/from/withExec/stdout");
    assert_eq!(out.len(), 3_000_004, "{} bytes", out.len());
    assert!(out.ends_with("aEND\n"));
}

/// The ID of `cacheVolume(key:)`.
fn cache_volume(api: &Api, key: &str) -> String {
    let v = api.ok(
        "query($k: String!) { cacheVolume(key: $k) { id } }",
        &[("k", key)],
    );
    s(&v, "cacheVolume/id").to_owned()
}

#[test]
fn rootfs_and_with_rootfs() {
    let api = Api::start();
    let v = api.ok(
        r#"query($img: String!) {
          container { from(address: $img) {
            withExec(args: ["sh", "-c", "echo made > /made.txt"]) {
              rootfs {
                id
                file(path: "made.txt") { contents }
                entries
              }
            }
          } }
        }"#,
        &[],
    );
    let root = at(&v, "container/from/withExec/rootfs");
    assert_eq!(s(root, "file/contents"), "made\n");
    let entries = at(root, "entries").as_array().expect("entries");
    assert!(entries.contains(&json!("bin")) && entries.contains(&json!("made.txt")));
    let v = api.ok(
        r#"query($root: DirectoryID!) {
          container {
            withRootfs(directory: $root) {
              withExec(args: ["cat", "/made.txt"]) { stdout }
            }
          }
          directory { withNewFile(path: "only.txt", contents: "x") { id } }
        }"#,
        &[("root", s(root, "id"))],
    );
    assert_eq!(s(&v, "container/withRootfs/withExec/stdout"), "made\n");
    let v = api.ok(
        r#"query($d: DirectoryID!) {
          container { withRootfs(directory: $d) { rootfs { entries } } }
        }"#,
        &[("d", s(&v, "directory/withNewFile/id"))],
    );
    assert_eq!(
        at(&v, "container/withRootfs/rootfs/entries"),
        &json!(["only.txt"])
    );
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Relative paths of everything under `dir`, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            out.push(
                p.strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().expect("type").is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn host_directory_and_file_uploads() {
    let api = Api::start();
    let w = api.work();
    write(&w.join("src/a.txt"), "host a");
    write(&w.join("src/b.log"), "host b");
    write(&w.join("src/sub/c.txt"), "host c");
    write(&w.join("src/node_modules/x.js"), "x");
    write(&w.join("top.txt"), "top file\n");
    let v = api.ok(
        r#"{
          host {
            all: directory(path: "src") { glob(pattern: "**") }
            some: directory(path: "src", exclude: ["node_modules", "*.log"]) {
              id
              glob(pattern: "**")
              file(path: "sub/c.txt") { contents }
            }
            sub: directory(path: "./src/sub") { entries }
            file(path: "top.txt") { id name size contents }
            nested: file(path: "src/sub/c.txt") { name contents }
          }
        }"#,
        &[],
    );
    let h = at(&v, "host");
    assert_eq!(
        at(h, "all/glob"),
        &json!([
            "a.txt",
            "b.log",
            "node_modules",
            "node_modules/x.js",
            "sub",
            "sub/c.txt"
        ])
    );
    assert_eq!(at(h, "some/glob"), &json!(["a.txt", "sub", "sub/c.txt"]));
    assert_eq!(s(h, "some/file/contents"), "host c");
    assert_eq!(at(h, "sub/entries"), &json!(["c.txt"]));
    assert_eq!(
        at(h, "file"),
        &json!({"id": s(h, "file/id"), "name": "top.txt", "size": 9, "contents": "top file\n"})
    );
    assert_eq!(
        at(h, "nested"),
        &json!({"name": "c.txt", "contents": "host c"})
    );

    // The uploads in a container (a new session: the IDs replay the host reads).
    let v = api.ok(
        r#"query($img: String!, $dir: DirectoryID!, $file: FileID!) {
          container { from(address: $img) {
            withDirectory(path: "/src", directory: $dir) {
              withFile(path: "/top.txt", source: $file) {
                withExec(args: ["sh", "-c", "cat /top.txt; find /src | sort"]) { stdout }
              }
            }
          } }
        }"#,
        &[("dir", s(h, "some/id")), ("file", s(h, "file/id"))],
    );
    assert_eq!(
        s(&v, "container/from/withDirectory/withFile/withExec/stdout"),
        "top file\n/src\n/src/a.txt\n/src/sub\n/src/sub/c.txt\n"
    );

    // A changed host file is read again by the next session.
    write(&w.join("top.txt"), "changed\n");
    let v = api.ok(r#"{ host { file(path: "top.txt") { contents } } }"#, &[]);
    assert_eq!(s(&v, "host/file/contents"), "changed\n");
}

#[test]
fn directory_and_file_exports_to_the_host() {
    let api = Api::start();
    let w = api.work();
    write(&w.join("out/stale.txt"), "stale");
    write(&w.join("wiped/stale.txt"), "stale");
    write(
        &w.join("file-out.txt"),
        "old contents, longer than the new ones",
    );
    let v = api.ok(
        r#"{
          directory {
            withNewFile(path: "one.txt", contents: "one") {
              withNewFile(path: "sub/two.txt", contents: "two") {
                merged: export(path: "out")
                wiped: export(path: "wiped", wipe: true)
                fresh: export(path: "new/deeper")
                sub: directory(path: "sub") { export(path: "only-sub") }
                file(path: "sub/two.txt") {
                  new: export(path: "two.txt")
                  overwrite: export(path: "file-out.txt")
                  allowed: export(path: "out/sub/again.txt", allowParentDirPath: true)
                }
              }
            }
          }
        }"#,
        &[],
    );
    let d = at(&v, "directory/withNewFile/withNewFile");
    for key in ["merged", "wiped", "fresh", "sub/export"] {
        assert_eq!(at(d, key), &json!(true), "{key}");
    }
    assert_eq!(
        tree(&w.join("wiped")),
        ["one.txt", "sub", "sub/two.txt"],
        "wipe: true removes what was there"
    );
    assert_eq!(
        tree(&w.join("new/deeper")),
        ["one.txt", "sub", "sub/two.txt"]
    );
    assert_eq!(tree(&w.join("only-sub")), ["two.txt"]);
    let f = at(d, "file");
    for key in ["new", "overwrite", "allowed"] {
        assert_eq!(at(f, key), &json!(true), "{key}");
    }
    assert_eq!(read(&w.join("two.txt")), "two");
    assert_eq!(
        read(&w.join("file-out.txt")),
        "two",
        "an existing file is replaced"
    );
    assert_eq!(read(&w.join("out/sub/again.txt")), "two");
    assert_eq!(
        tree(&w.join("out")),
        [
            "one.txt",
            "stale.txt",
            "sub",
            "sub/again.txt",
            "sub/two.txt"
        ],
        "wipe: false merges into what is there"
    );
    assert_eq!(read(&w.join("out/sub/two.txt")), "two");
}

/// Dagger 0.11.8's file export (its client-side filesync `FileSend`): missing parents of the
/// path are always created; `allowParentDirPath: true` lets the path be an existing directory,
/// the file then keeps its name inside it; without it an existing directory is refused with
/// `destination "<path>" is a directory; must be a file path unless allowParentDirPath is set`.
#[test]
fn file_export_creates_parents_and_allow_parent_dir_path_exports_into_a_directory() {
    let api = Api::start();
    let w = api.work();
    write(&w.join("existing/keep.txt"), "keep");
    let v = api.ok(
        r#"{ directory { withNewFile(path: "sub/two.txt", contents: "two") {
               file(path: "sub/two.txt") {
                 nested: export(path: "made/parents/two.txt")
                 into: export(path: "existing", allowParentDirPath: true)
               }
        } } }"#,
        &[],
    );
    assert_eq!(
        at(&v, "directory/withNewFile/file"),
        &json!({"nested": true, "into": true})
    );
    assert_eq!(read(&w.join("made/parents/two.txt")), "two");
    assert_eq!(tree(&w.join("existing")), ["keep.txt", "two.txt"]);
    assert_eq!(read(&w.join("existing/two.txt")), "two");

    let errors = api.err(
        r#"{ directory { withNewFile(path: "f.txt", contents: "f") {
               file(path: "f.txt") { export(path: "existing") }
        } } }"#,
        &[],
    );
    assert!(
        errors[0]
            .message
            .contains("is a directory; must be a file path unless allowParentDirPath is set"),
        "{errors:?}"
    );
    assert_eq!(tree(&w.join("existing")), ["keep.txt", "two.txt"]);
}

#[test]
fn secrets_are_scrubbed_and_never_in_ids_or_errors() {
    const PLAIN: &str = "hunter2-s3cr3t-VALUE";
    let api = Api::start();
    let session = Session::start(&api);
    let v = session.ok(
        r#"query($p: String!) { setSecret(name: "token", plaintext: $p) { id name plaintext } }"#,
        json!({ "p": PLAIN }),
    );
    let secret = at(&v, "setSecret");
    assert_eq!(s(secret, "name"), "token");
    assert_eq!(s(secret, "plaintext"), PLAIN);
    let secret_id = s(secret, "id").to_owned();
    let v = session.ok(
        r#"query($img: String!, $s: SecretID!) {
          loadSecretFromID(id: $s) { name plaintext }
          container { from(address: $img) {
            withSecretVariable(name: "TOKEN", secret: $s) {
              token: envVariable(name: "TOKEN")
              envVariables { name value }
              withMountedSecret(path: "/run/secrets/token", source: $s) {
                id
                withExec(args: ["sh", "-c",
                  "echo env=$TOKEN; echo file=$(cat /run/secrets/token); echo err=$TOKEN >&2; stat -c %a /run/secrets/token"]) {
                  id
                  stdout
                  stderr
                }
              }
            }
          } }
        }"#,
        json!({ "img": api.image, "s": secret_id }),
    );
    assert_eq!(
        at(&v, "loadSecretFromID"),
        &json!({"name": "token", "plaintext": PLAIN})
    );
    let with_var = at(&v, "container/from/withSecretVariable");
    assert!(
        at(with_var, "token").is_null(),
        "a secret variable is no plain variable"
    );
    assert!(
        !at(with_var, "envVariables").to_string().contains("TOKEN"),
        "{with_var}"
    );
    let c = at(with_var, "withMountedSecret");
    assert_eq!(s(c, "withExec/stdout"), "env=***\nfile=***\n400\n");
    assert_eq!(s(c, "withExec/stderr"), "err=***\n");
    let failing = session.query(
        r#"query($img: String!, $s: SecretID!) {
          container { from(address: $img) {
            withSecretVariable(name: "TOKEN", secret: $s) {
              withExec(args: ["sh", "-c", "echo out=$TOKEN; echo err=$TOKEN >&2; exit 3"]) {
                stdout
              }
            }
          } }
        }"#,
        json!({ "img": api.image, "s": secret_id }),
    );
    let error = &failing["errors"][0];
    assert_eq!(error["extensions"]["_type"], "EXEC_ERROR", "{failing}");
    assert_eq!(error["extensions"]["stdout"], "out=***", "{failing}");
    assert_eq!(error["extensions"]["stderr"], "err=***", "{failing}");
    // The plaintext is nowhere: not in IDs (nor their decoded form), outputs or errors.
    let ids = [secret_id.as_str(), s(c, "id"), s(c, "withExec/id")];
    for id in ids {
        assert!(!id.contains(PLAIN), "plaintext in an ID: {id}");
        assert!(
            !decoded(id).contains(PLAIN),
            "plaintext in a decoded ID: {}",
            decoded(id)
        );
    }
    assert!(!failing.to_string().contains(PLAIN), "{failing}");
    drop(session);

    // Another session cannot read the secret through its ID.
    let errors = api.err(
        "query($s: SecretID!) { loadSecretFromID(id: $s) { plaintext } }",
        &[("s", &secret_id)],
    );
    assert!(
        errors[0].message.contains("not set in this session"),
        "{errors:?}"
    );
    assert!(!errors[0].message.contains(PLAIN));
}

/// An ID's text after base64 decoding (standard or URL-safe; the ID itself if neither).
fn decoded(id: &str) -> String {
    use base64::Engine as _;
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(id).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| id.to_owned())
}

#[test]
fn failing_exec_answers_exec_error() {
    let api = Api::start();
    let doc = r#"query($img: String!) {
      container { from(address: $img) {
        withEntrypoint(args: ["sh", "-c"]) {
          withExec(args: ["echo some out; echo some err >&2; exit 5"]) { stdout }
        }
      } }
    }"#;
    let errors = api.err(doc, &[]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(
        e.message,
        r#"process "sh -c echo some out; echo some err >&2; exit 5" did not complete successfully: exit code: 5"#
    );
    let ext = e.extensions.as_ref().expect("extensions");
    assert_eq!(ext["_type"], "EXEC_ERROR");
    assert_eq!(
        ext["cmd"],
        json!(["sh", "-c", "echo some out; echo some err >&2; exit 5"])
    );
    assert_eq!(ext["exitCode"], 5);
    assert_eq!(ext["stdout"], "some out");
    assert_eq!(ext["stderr"], "some err");

    // Long outputs keep their end (Dagger keeps the last 100 KiB), marked as cut.
    let errors = api.err(
        r#"query($img: String!) {
          container { from(address: $img) {
            withExec(args: ["sh", "-c", "head -c 150000 /dev/zero | tr '\\0' a; echo; echo END; exit 1"]) {
              stdout
            }
          } }
        }"#,
        &[],
    );
    let out = errors[0].extensions.as_ref().expect("extensions")["stdout"]
        .as_str()
        .expect("stdout")
        .to_owned();
    assert!(out.starts_with("[omitting "), "{}", &out[..40]);
    assert!(out.ends_with("aaaa\nEND"), "{}", &out[out.len() - 40..]);
    assert!(out.len() <= 100 * 1024 + 40, "{} bytes", out.len());

    // `sync` of the failed container reports the same error; a later step is not reached.
    let errors = api.err(
        r#"query($img: String!) {
          container { from(address: $img) {
            withExec(args: ["false"]) { withExec(args: ["echo", "never"]) { sync } }
          } }
        }"#,
        &[],
    );
    assert_eq!(
        errors[0].message,
        r#"process "false" did not complete successfully: exit code: 1"#
    );
    let ext = errors[0].extensions.as_ref().expect("extensions");
    assert_eq!(ext["_type"], "EXEC_ERROR");
    assert_eq!(ext["cmd"], json!(["false"]));
    assert_eq!(ext["exitCode"], 1);
    assert_eq!(ext["stdout"], "");
    assert_eq!(ext["stderr"], "");
}

#[test]
fn ids_round_trip_and_are_content_addressed() {
    let api = Api::start();
    let doc = r#"query($img: String!) {
      container { from(address: $img) {
        withEnvVariable(name: "X", value: "1") {
          withExec(args: ["sh", "-c", "echo x=$X; date +%N"]) { id stdout }
        }
        other: withExec(args: ["echo", "other"]) { id }
      } }
      directory { withNewFile(path: "f", contents: "f") { id } }
    }"#;
    let first = api.ok(doc, &[]);
    let second = api.ok(doc, &[]);
    let exec = at(&first, "container/from/withEnvVariable/withExec");
    let id = s(exec, "id");
    let stdout = s(exec, "stdout");
    assert!(stdout.starts_with("x=1\n"), "{stdout}");
    assert_eq!(
        s(&second, "container/from/withEnvVariable/withExec/id"),
        id,
        "the same chain gives the same ID, byte for byte, in another session"
    );
    assert_ne!(s(&first, "container/from/other/id"), id);
    let loaded = api.ok(
        "query($id: ContainerID!) { loadContainerFromID(id: $id) { stdout id } }",
        &[("id", id)],
    );
    assert_eq!(
        s(&loaded, "loadContainerFromID/stdout"),
        stdout,
        "the loaded container is the same (cached) exec"
    );
    // Loading keeps the object's own chain.
    assert_eq!(s(&loaded, "loadContainerFromID/id"), id);
    // Its ID as an argument works too.
    let v = api.ok(
        r#"query($id: ContainerID!) {
          container(id: $id) { withExec(args: ["sh", "-c", "echo then $X"]) { stdout } }
        }"#,
        &[("id", id)],
    );
    assert_eq!(s(&v, "container/withExec/stdout"), "then 1\n");

    let dir_id = s(&first, "directory/withNewFile/id");
    for doc in [
        "query($id: ContainerID!) { loadContainerFromID(id: $id) { id } }",
        "query($id: ContainerID!) { container(id: $id) { id } }",
    ] {
        let errors = api.err(doc, &[("id", dir_id)]);
        let msg = &errors[0].message;
        assert!(
            msg.contains("Directory") && msg.contains("Container"),
            "the refusal names both types: {msg}"
        );
    }
    let errors = api.err(
        "query($id: ContainerID!) { loadContainerFromID(id: $id) { id } }",
        &[("id", "not an id")],
    );
    assert!(!errors[0].message.is_empty());
}

#[test]
fn identical_chains_run_once_and_errors_are_not_cached() {
    let api = Api::start();
    let cache = cache_volume(&api, "counter");
    let doc = r#"query($img: String!, $cache: CacheVolumeID!) {
      container { from(address: $img) {
        withMountedCache(path: "/cache", cache: $cache) {
          a: withExec(args: ["sh", "-c", "echo run >> /cache/log; wc -l < /cache/log"]) { stdout }
          b: withExec(args: ["sh", "-c", "echo run >> /cache/log; wc -l < /cache/log"]) { stdout }
        }
      } }
    }"#;
    let v = api.ok(doc, &[("cache", &cache)]);
    let c = at(&v, "container/from/withMountedCache");
    assert_eq!(s(c, "a/stdout"), "1\n");
    assert_eq!(s(c, "b/stdout"), "1\n");
    // A new `dagr query` process: a new session, served from the cache.
    let v = api.ok(doc, &[("cache", &cache)]);
    assert_eq!(s(&v, "container/from/withMountedCache/a/stdout"), "1\n");

    let failing = r#"query($img: String!, $cache: CacheVolumeID!) {
      container { from(address: $img) {
        withMountedCache(path: "/cache", cache: $cache) {
          withExec(args: ["sh", "-c", "echo fail >> /cache/fails; exit 2"]) { stdout }
        }
      } }
    }"#;
    for _ in 0..2 {
        let errors = api.err(failing, &[("cache", &cache)]);
        assert_eq!(
            errors[0].extensions.as_ref().expect("extensions")["exitCode"],
            2
        );
    }
    // Each read is a chain of its own (a repeated chain would come from the cache).
    let read = |name: &str| {
        let v = api.ok(
            r#"query($img: String!, $cache: CacheVolumeID!, $cmd: String!) {
              container { from(address: $img) {
                withMountedCache(path: "/cache", cache: $cache) {
                  withExec(args: ["sh", "-c", $cmd]) { stdout }
                }
              } }
            }"#,
            &[
                ("cache", &cache),
                ("cmd", &format!("wc -l < /cache/{name}")),
            ],
        );
        s(&v, "container/from/withMountedCache/withExec/stdout").to_owned()
    };
    assert_eq!(read("log"), "1\n", "the cached exec ran once in all");
    assert_eq!(read("fails"), "2\n", "the failed exec ran again");
}

#[test]
fn platform_image_ref_and_version() {
    let api = Api::start();
    let v = api.ok(
        r#"query($img: String!) {
          version
          defaultPlatform
          container {
            platform
            from(address: $img) {
              imageRef
              platform
              withExec(args: ["uname", "-m"]) { stdout }
            }
          }
        }"#,
        &[],
    );
    // The engine's platform is the machine's, in OCI names.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let platform = format!("linux/{arch}");
    assert_eq!(s(&v, "version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(s(&v, "defaultPlatform"), platform);
    assert_eq!(s(&v, "container/platform"), platform);
    let from = at(&v, "container/from");
    assert_eq!(s(from, "platform"), platform);
    assert_eq!(
        s(from, "withExec/stdout"),
        format!("{}\n", std::env::consts::ARCH)
    );
    let image_ref = s(from, "imageRef");
    let (name, digest) = image_ref.split_once('@').expect("a pinned reference");
    assert_eq!(name, api.image, "{image_ref}");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{image_ref}"
    );
    // A changed container has no image reference any more.
    let errors = api.err(
        r#"query($img: String!) {
          container { from(address: $img) { withNewFile(path: "/x", contents: "x") { imageRef } } }
        }"#,
        &[],
    );
    assert!(errors[0].message.contains("imageRef"), "{errors:?}");
    // Another architecture is a container of its own (its execs run under emulation); one
    // nothing can emulate fails at its first exec, named.
    let other = api.ok(
        r#"{ container(platform: "linux/s390x") { platform } }"#,
        &[],
    );
    assert_eq!(other["container"]["platform"], "linux/s390x");
    let errors = api.err(
        r#"{ container(platform: "linux/wasm") { withExec(args: ["true"]) { sync } } }"#,
        &[],
    );
    assert!(
        errors[0].message.contains("linux/wasm") && errors[0].message.contains("cannot emulate"),
        "{errors:?}"
    );
}

#[test]
fn directory_diff_and_timestamps() {
    let api = Api::start();
    let v = api.ok(
        r#"{ directory {
              withNewFile(path: "keep.txt", contents: "same") {
                lower: id
                withNewFile(path: "new/added.txt", contents: "added") {
                  withNewFile(path: "keep.txt", contents: "changed") {
                    upper: id
                  }
                }
              }
        } }"#,
        &[],
    );
    let lower = s(&v, "directory/withNewFile/lower").to_owned();
    let upper = s(&v, "directory/withNewFile/withNewFile/withNewFile/upper").to_owned();
    let v = api.ok(
        r#"query($l: DirectoryID!, $u: DirectoryID!) {
          loadDirectoryFromID(id: $l) { diff(other: $u) {
            glob(pattern: "**")
            file(path: "keep.txt") { contents }
          } }
        }"#,
        &[("l", &lower), ("u", &upper)],
    );
    assert_eq!(
        at(&v, "loadDirectoryFromID/diff/glob"),
        &serde_json::json!(["keep.txt", "new", "new/added.txt"])
    );
    assert_eq!(s(&v, "loadDirectoryFromID/diff/file/contents"), "changed");
    // Diffs of different subpaths are refused like Dagger does.
    let errors = api.err(
        r#"query($u: DirectoryID!) { directory { directory(path: "sub") { diff(other: $u) { entries } } } }"#,
        &[("u", &upper)],
    );
    assert!(
        errors[0]
            .message
            .contains("cannot diff with different relative paths"),
        "{errors:?}"
    );
    // withTimestamps on a directory and on a file, seen from inside a container.
    let v = api.ok(
        r#"query($img: String!) {
          directory { withNewFile(path: "sub/f", contents: "x") { withTimestamps(timestamp: 1000) {
            file(path: "sub/f") { withTimestamps(timestamp: 2000) { id } }
            id
          } } }
          container { from(address: $img) { id } }
        }"#,
        &[],
    );
    let dir = s(&v, "directory/withNewFile/withTimestamps/id").to_owned();
    let file = s(
        &v,
        "directory/withNewFile/withTimestamps/file/withTimestamps/id",
    )
    .to_owned();
    let v = api.ok(
        r#"query($img: String!, $d: DirectoryID!, $f: FileID!) { container { from(address: $img) {
            withMountedDirectory(path: "/d", source: $d) { withMountedFile(path: "/f", source: $f) {
              withExec(args: ["stat", "-c", "%Y", "/d", "/d/sub", "/d/sub/f", "/f"]) { stdout }
            } }
        } } }"#,
        &[("d", &dir), ("f", &file)],
    );
    assert_eq!(
        s(
            &v,
            "container/from/withMountedDirectory/withMountedFile/withExec/stdout"
        ),
        "1000\n1000\n1000\n2000\n"
    );
}

#[test]
fn as_tarball_and_import_round_trip() {
    let api = Api::start();
    let v = api.ok(
        r#"query($img: String!) { container { from(address: $img) {
            withEnvVariable(name: "FROM_TARBALL", value: "yes") {
              withNewFile(path: "/hello.txt", contents: "hi from the tarball") {
                asTarball { id size export(path: "image.tar") }
              }
            }
        } } }"#,
        &[],
    );
    let tarball = at(&v, "container/from/withEnvVariable/withNewFile/asTarball");
    assert!(tarball["size"].as_u64().expect("size") > 1000, "{tarball}");
    let file_id = tarball["id"].as_str().expect("id").to_owned();
    // The archive is an OCI image skopeo reads, with our layer on the base image's.
    let inspect = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "oci-archive:{}",
            api.work().join("image.tar").display()
        ))
        .output()
        .expect("skopeo");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let info: Value = serde_json::from_slice(&inspect.stdout).expect("json");
    assert_eq!(
        info["Layers"].as_array().expect("layers").len(),
        2,
        "{info}"
    );
    assert!(
        info["Env"].to_string().contains("FROM_TARBALL=yes"),
        "{info}"
    );
    // Imported back: files and config come with it.
    let v = api.ok(
        r#"query($f: FileID!) { container { import(source: $f) {
            withExec(args: ["sh", "-c", "cat /hello.txt; echo; echo $FROM_TARBALL"]) { stdout }
        } } }"#,
        &[("f", &file_id)],
    );
    assert_eq!(
        s(&v, "container/import/withExec/stdout"),
        "hi from the tarball\nyes\n"
    );
}

/// A `docker-registry` on a free loopback port that requires basic auth (htpasswd, bcrypt made by
/// Python's crypt), holding the busybox image; lives as long as the test process.
fn auth_registry(api: &Api) -> String {
    // Lives as long as the test process (like the registry): under the target dir, not /tmp.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("auth-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("registry dir");
    std::fs::write(
        dir.join("htpasswd"),
        dagr_testkit::scratch_registry::htpasswd_line("alice", "s3cret-pw"),
    )
    .expect("htpasswd");
    let addr = format!("127.0.0.1:{}", dagr_testkit::free_port());
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display()
        ),
    )
    .expect("config");
    let mut cmd = std::process::Command::new("docker-registry");
    cmd.arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    dagr_testkit::spawn_for_process_lifetime(cmd);
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:s3cret-pw",
        ])
        .arg(format!("docker://{}", api.image))
        .arg(format!("docker://{addr}/private:latest"))
        .args(["--src-tls-verify=false"])
        .status()
        .expect("skopeo");
    assert!(status.success(), "seeding the private registry failed");
    addr
}

#[test]
fn registry_auth_for_pulls_and_publishes_of_the_session() {
    let api = Api::start();
    let registry = auth_registry(&api);
    let private = format!("{registry}/private:latest");
    // Without credentials the private image cannot be pulled.
    let errors = api.err(
        "query($r: String!) { container { from(address: $r) { id } } }",
        &[("r", &private)],
    );
    assert!(!errors.is_empty());
    // With them (one session: the credentials belong to it), pull, then publish.
    let session = Session::start(&api);
    let secret = session.ok(
        r#"{ setSecret(name: "pw", plaintext: "s3cret-pw") { id } }"#,
        json!({}),
    );
    let secret_id = secret["setSecret"]["id"].as_str().expect("id").to_owned();
    let v = session.ok(
        r#"query($s: SecretID!, $r: String!, $out: String!) { container {
            withRegistryAuth(address: $r, username: "alice", secret: $s) {
              from(address: $r) {
                withExec(args: ["echo", "pulled with credentials"]) {
                  stdout
                  publish(address: $out)
                }
              }
            }
        } }"#,
        json!({ "s": secret_id, "r": private, "out": format!("{registry}/published:v1") }),
    );
    let exec = &v["container"]["withRegistryAuth"]["from"]["withExec"];
    assert_eq!(exec["stdout"], "pulled with credentials\n");
    let published = exec["publish"].as_str().expect("publish");
    assert!(
        published.starts_with(&format!("{registry}/published:v1@sha256:")),
        "{published}"
    );
    let inspect = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            "alice:s3cret-pw",
        ])
        .arg(format!("docker://{registry}/published:v1"))
        .output()
        .expect("skopeo");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
}

/// The first `id` string of a query result, depth first.
fn first_id(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => map
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| map.values().find_map(first_id)),
        _ => None,
    }
}

/// The ID of the container `doc` selects (a busybox container with a marker file, changed by
/// `extra` fields) written to `ctr.id` in the work dir, for `dagr terminal @ctr.id`.
fn terminal_container(api: &Api, extra: &str, vars: &[(&str, &str)]) -> std::path::PathBuf {
    let doc = format!(
        r#"query($img: String!{}) {{ container {{ from(address: $img) {{
            withNewFile(path: "/marker", contents: "marker-text") {{ {extra} }} }} }} }}"#,
        vars.iter()
            .map(|(k, _)| format!(", ${k}: DirectoryID!"))
            .collect::<String>()
    );
    let id = first_id(&api.ok(&doc, vars)).expect("a container id");
    let path = api.work().join("ctr.id");
    std::fs::write(&path, id).expect("write the id");
    path
}

/// `dagr terminal ARGS @ID_FILE` in a tmux pane (in the work dir), then `dagr exited CODE`.
fn tmux_terminal(api: &Api, args: &str, id_file: &Path) -> Tmux {
    Tmux::start(
        api.work(),
        &format!(
            "cd {} && S=$(stty -g) && DAGR_HOST={} {} terminal {args} @{}; echo \"dagr exited $?\"; \
             [ \"$(stty -g)\" = \"$S\" ] && echo 'terminal mode restored'; sleep 600",
            api.work().display(),
            api.engine.host(),
            dagr(),
            id_file.display()
        ),
        100,
        30,
    )
}

#[test]
fn terminal_through_tmux_carries_keys_output_resizes_and_the_exit_code() {
    let api = Api::start();
    let id_file = terminal_container(&api, "id", &[]);
    let tmux = tmux_terminal(&api, "", &id_file);
    tmux.wait_line("the shell's prompt", |l| l.ends_with("/ #"));
    // The container's files, and a pty of the terminal's size.
    tmux.type_line("cat /marker; echo; tty; stty size");
    let size = tmux.pane_size();
    let screen = tmux.wait_line("the pane's size", |l| l == size);
    assert!(screen.lines().any(|l| l == "marker-text"), "{screen}");
    assert!(screen.lines().any(|l| l == "/dev/pts/0"), "{screen}");
    // A resize reaches the pty.
    tmux.tmux(&["resize-window", "-t", "t", "-x", "120", "-y", "40"]);
    let resized = tmux.pane_size();
    assert_ne!(resized, size);
    tmux.type_line("stty size");
    tmux.wait_line("the new size", |l| l == resized);
    // ^C reaches the process group in the container, not dagr.
    tmux.type_line("sleep 1000");
    std::thread::sleep(Duration::from_millis(300));
    tmux.tmux(&["send-keys", "-t", "t", "C-c"]);
    tmux.type_line("echo after-interrupt");
    tmux.wait_line("the shell after ^C", |l| l == "after-interrupt");
    tmux.type_line("echo hi; exit 7");
    let screen = tmux.wait_line("dagr's exit", |l| l.starts_with("dagr exited"));
    assert!(screen.lines().any(|l| l == "hi"), "{screen}");
    assert!(screen.lines().any(|l| l == "dagr exited 7"), "{screen}");
    tmux.wait_line("the pane's terminal mode", |l| {
        l == "terminal mode restored"
    });
    // The terminal's session is over: nothing left running.
    api.engine.wait_metric("dagr_sessions_active", 0);
}

/// A directory holding `dagr`, the libraries it links and `dagr.sh`, which runs it through
/// the dynamic loader: a busybox container can run the host's `dagr` from it.
fn dagr_bundle(dir: &Path) -> std::path::PathBuf {
    let bundle = dir.join("dagr-bundle");
    let dagr = std::path::PathBuf::from(dagr());
    let mut files = vec![dagr.clone()];
    files.extend(dagr_testkit::linked_libraries(&[dagr]));
    let loader = dagr_testkit::flat_bundle(&bundle, files).expect("ldd names the dynamic loader");
    let script = format!(
        "#!/bin/sh\nexec /opt/dagr/{loader} --library-path /opt/dagr /opt/dagr/dagr \"$@\"\n"
    );
    std::fs::write(bundle.join("dagr.sh"), script).expect("dagr.sh");
    let mut perms = std::fs::metadata(bundle.join("dagr.sh"))
        .expect("dagr.sh")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(bundle.join("dagr.sh"), perms).expect("chmod dagr.sh");
    bundle
}

#[test]
fn terminal_with_nesting_runs_a_nested_dagr_query() {
    let api = Api::start();
    dagr_bundle(api.work());
    let bundle = api.ok(r#"{ host { directory(path: "dagr-bundle") { id } } }"#, &[]);
    let bundle = first_id(&bundle).expect("bundle id");
    let id_file = terminal_container(
        &api,
        r#"withMountedDirectory(path: "/opt/dagr", source: $bundle) { id }"#,
        &[("bundle", &bundle)],
    );
    let tmux = tmux_terminal(&api, "--experimental-privileged-nesting", &id_file);
    tmux.wait_line("the shell's prompt", |l| l.ends_with("/ #"));
    // The nested client's host is the container as its process sees it: it lists the
    // directory mounted at /opt/dagr.
    tmux.type_line(
        r#"echo '{host{directory(path:"/opt/dagr"){entries}}}' | /opt/dagr/dagr.sh query | grep -c '"dagr.sh"'; echo "nested exit $?""#,
    );
    let screen = tmux.wait_line("the nested query's end", |l| l.starts_with("nested exit"));
    assert!(screen.lines().any(|l| l == "nested exit 0"), "{screen}");
    assert!(screen.lines().any(|l| l == "1"), "{screen}");
    tmux.type_line("exit");
    let screen = tmux.wait_line("dagr's exit", |l| l.starts_with("dagr exited"));
    assert!(screen.lines().any(|l| l == "dagr exited 0"), "{screen}");
    api.engine.wait_metric("dagr_sessions_active", 0);
}

#[test]
fn terminal_in_a_query_uses_the_default_terminal_cmd_and_a_piped_stdin() {
    let api = Api::start();
    let doc = api.work().join("terminal.graphql");
    std::fs::write(
        &doc,
        r#"query($img: String!) { container { from(address: $img) {
            withDefaultTerminalCmd(args: ["sh", "-c", "read line; echo \"got-$line-$((6*7))\"; exit 4"]) {
              terminal { sync }
            } } } }"#,
    )
    .expect("write the query");
    let img = format!("img={}", api.image);
    let doc = doc.to_string_lossy();
    // Typed ahead on a stdin that is not a terminal: forwarded as it is.
    let stdout = api.dagr_ok(&["query", &doc, "--var", &img], b"hello\r");
    // The terminal's output, then the query's data: the exit code does not fail the query.
    assert!(stdout.contains("got-hello-42"), "{stdout}");
    assert!(stdout.contains("\"sync\": \""), "{stdout}");
}

#[test]
fn terminal_needs_a_client_that_offers_one() {
    let api = Api::start();
    // `dagr session` serves an SDK over stdio: it offers no terminal.
    let session = Session::start(&api);
    let v = session.query(
        r#"query($img: String!) { container { from(address: $img) { terminal { sync } } } }"#,
        json!({ "img": api.image }),
    );
    let message = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot open a terminal")
            && message.contains("/dagr.terminal.v1.Terminal/Session"),
        "{v}"
    );
}

#[test]
fn terminal_in_a_dagr_run_flow_uses_dagrs_terminal() {
    let api = Api::start();
    let body = json!({
        "query": r#"query($img: String!) { container { from(address: $img) {
            terminal(cmd: ["sh", "-c", "read line; echo \"run-got-$line\""]) { sync } } } }"#,
        "variables": { "img": api.image },
    });
    std::fs::write(api.work().join("body.json"), body.to_string()).expect("write the body");
    // What an SDK under `dagr run` does: query the session with its token; the terminal is
    // the one `dagr run` was started on (here a piped stdin and stdout).
    let script = r#"curl -sS --fail-with-body -u "$DAGGER_SESSION_TOKEN:" -H 'content-type: application/json' \
        --data-binary @body.json "http://127.0.0.1:$DAGGER_SESSION_PORT/query""#;
    // An unfinished last line: its end of input is still seen (^D twice).
    let stdout = api.dagr_ok(&["run", "--", "sh", "-c", script], b"typed");
    assert!(stdout.contains("run-got-typed"), "{stdout}");
    assert!(stdout.contains(r#""sync":""#), "{stdout}");
}

#[test]
fn a_terminal_whose_dagr_is_killed_leaves_nothing_running() {
    let api = Api::start();
    let id_file = terminal_container(&api, "id", &[]);
    let tmux = tmux_terminal(&api, "", &id_file);
    tmux.wait_line("the shell's prompt", |l| l.ends_with("/ #"));
    tmux.type_line("sleep 1006");
    dagr_testkit::wait_processes(&["sleep", "1006"], true, "the typed command");
    // The user's side goes away at once (its tmux server and dagr with it).
    drop(tmux);
    api.engine.wait_metric("dagr_sessions_active", 0);
    dagr_testkit::wait_processes(
        &["sleep", "1006"],
        false,
        "the terminal's process outlived its user",
    );
}

#[test]
fn a_terminated_dagr_terminal_restores_the_terminal_and_stops_the_process() {
    let api = Api::start();
    let id_file = terminal_container(&api, "id", &[]);
    let tmux = tmux_terminal(&api, "", &id_file);
    tmux.wait_line("the shell's prompt", |l| l.ends_with("/ #"));
    tmux.type_line("sleep 1007");
    dagr_testkit::wait_processes(&["sleep", "1007"], true, "the typed command");
    let id_arg = format!("@{}", id_file.display());
    let dagr_pids = dagr_testkit::processes_running(&[dagr(), "terminal", &id_arg]);
    assert_eq!(dagr_pids.len(), 1, "{dagr_pids:?}");
    let status = Command::new("kill")
        .args(["-TERM", &dagr_pids[0].to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let screen = tmux.wait_line("dagr's exit", |l| l.starts_with("dagr exited"));
    assert!(screen.lines().any(|l| l == "dagr exited 1"), "{screen}");
    assert!(screen.contains("terminated"), "{screen}");
    tmux.wait_line("the pane's terminal mode", |l| {
        l == "terminal mode restored"
    });
    dagr_testkit::wait_processes(
        &["sleep", "1007"],
        false,
        "the terminal's process outlived dagr",
    );
    api.engine.wait_metric("dagr_sessions_active", 0);
}
