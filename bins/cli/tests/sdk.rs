//! dagr end to end with the official Dagger Python SDK (dagger-io 0.11.8 and the mid-2024
//! dependency pins of `python/requirements.txt`), installed once per target dir into the
//! virtualenv of `dagr_testkit::python` under `CARGO_TARGET_TMPDIR` (reused while the file matches).
//!
//! Every test starts its own `dagr-engine` (the loopback busybox registry of `dagr-testkit`), writes
//! a Python script into a temp working directory and runs it both ways an SDK meets dagr:
//! - [`Mode::Run`]: `dagr run -- python script.py` (the SDK finds DAGGER_SESSION_PORT/TOKEN);
//! - [`Mode::Session`]: `python script.py` with `_EXPERIMENTAL_DAGGER_CLI_BIN` naming `dagr`, so
//!   the SDK starts `dagr session --label ...` itself and ends it by closing its stdin.
//!
//! A script records what it observed in a dict and prints it as one JSON line after its connection
//! closed cleanly; the Rust side asserts on that, on the script's raw output and on the host files
//! it exported. Scripts, processes (their whole process group), engines and the mounts those leave
//! behind are cleaned up by guards, also when an assertion fails.

mod common;

use common::{dagr, engine_bin};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dagr_testkit::EngineProcess;
use serde_json::Value;

/// Hang protection for one script run (never reached when things work).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(600);

/// The line prefix under which a script prints what it observed.
const RESULT_MARKER: &str = "DAGR-SDK-RESULT ";

/// Put in front of every script: `IMAGE` (argv[1]), `NONCE` (argv[2], unique per run),
/// `REGISTRY` (argv[3], the loopback registry's `127.0.0.1:PORT`), the
/// `RESULT` dict and `connect_and_run(main, **config)`, which runs `main` inside
/// `dagger.connection` and prints `RESULT` once the connection (and any `dagr session`) closed.
const PRELUDE: &str = r#"
import base64, hashlib, json, os, sys
import anyio
import dagger
from dagger import dag

IMAGE = sys.argv[1]
NONCE = sys.argv[2]
REGISTRY = sys.argv[3]
RESULT = {}

def connect_and_run(main, **config):
    async def session():
        async with dagger.connection(dagger.Config(log_output=sys.stderr, **config)):
            await main()
    anyio.run(session)
    print("DAGR-SDK-RESULT " + json.dumps(RESULT), flush=True)
"#;

/// The python of the shared virtualenv with the Dagger SDK pins (built on first use).
fn venv_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        dagr_testkit::python::venv(
            env!("CARGO_TARGET_TMPDIR"),
            "dagger-sdk-0.11.8",
            dagr_testkit::python::DAGGER_SDK_REQUIREMENTS,
        )
    })
}

/// How the SDK reaches the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `dagr run -- python script.py`.
    Run,
    /// The SDK starts `dagr session` itself (`_EXPERIMENTAL_DAGGER_CLI_BIN`).
    Session,
}

const MODES: [Mode; 2] = [Mode::Run, Mode::Session];

/// An engine for one test (stopped by [`EngineProcess`]'s drop: SIGTERM, then SIGKILL as hang
/// protection, and the mounts it left under its state dir detached).
struct Sdk {
    engine: EngineProcess,
    /// `127.0.0.1:PORT`, the loopback registry.
    registry: String,
    /// `127.0.0.1:PORT/busybox:latest`.
    image: String,
}

impl Sdk {
    fn start() -> Sdk {
        // The virtualenv first (a pip failure fails the test before an engine starts).
        venv_python();
        let fixture = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
        Sdk {
            engine: EngineProcess::start(&engine_bin(), &[]),
            registry: fixture.addr.clone(),
            image: fixture.image.clone(),
        }
    }

    /// Writes `PRELUDE + body` to `work/script.py` and runs it from `work` in `mode`; the
    /// script's argv is `IMAGE NONCE REGISTRY`.
    fn run_script(&self, mode: Mode, work: &Path, body: &str, nonce: &str) -> Output {
        self.run_script_then(mode, work, body, nonce, || {})
    }

    /// [`Sdk::run_script`], calling `after_exit` once the script's process exited but before
    /// anything left of its process group is killed.
    fn run_script_then(
        &self,
        mode: Mode,
        work: &Path,
        body: &str,
        nonce: &str,
        after_exit: impl FnOnce(),
    ) -> Output {
        let script = work.join("script.py");
        std::fs::write(&script, format!("{PRELUDE}\n{body}")).expect("write the script");
        let python = venv_python();
        let mut cmd = match mode {
            Mode::Run => {
                let mut c = Command::new(dagr());
                c.arg("run").arg("--").arg(python);
                c.env_remove("_EXPERIMENTAL_DAGGER_CLI_BIN");
                c
            }
            Mode::Session => {
                let mut c = Command::new(python);
                c.env("_EXPERIMENTAL_DAGGER_CLI_BIN", dagr());
                c
            }
        };
        cmd.arg(&script)
            .arg(&self.image)
            .arg(nonce)
            .arg(&self.registry)
            .current_dir(work)
            .env("DAGR_HOST", self.engine.host())
            .env_remove("DAGGER_SESSION_PORT")
            .env_remove("DAGGER_SESSION_TOKEN")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = ProcessGroup(cmd.spawn().expect("spawn the script"));
        child.wait_with_output(SCRIPT_DEADLINE, after_exit)
    }

    /// Runs a script that must succeed and returns its `RESULT` dict.
    fn result(&self, mode: Mode, work: &Path, body: &str) -> Value {
        let nonce = format!("{mode:?}-{}", rand_suffix());
        let out = self.run_script(mode, work, body, &nonce);
        parse_result(mode, &out)
    }
}

/// A child leading its own process group; the whole group is SIGKILLed on drop if the child is
/// still running (so `dagr session` or python under `dagr run` cannot outlive a failed test).
struct ProcessGroup(Child);

impl ProcessGroup {
    fn wait_with_output(mut self, deadline: Duration, after_exit: impl FnOnce()) -> Output {
        let stdout = drain(self.0.stdout.take());
        let stderr = drain(self.0.stderr.take());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("wait for the script") {
                break status;
            }
            if start.elapsed() > deadline {
                self.kill_group();
                let _ = self.0.wait();
                let stdout = stdout.join().unwrap_or_default();
                let stderr = stderr.join().unwrap_or_default();
                panic!(
                    "the script hung (hang protection, {deadline:?}); stdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(after_exit));
        // Whatever is left of the group (nothing, normally) must not keep the pipes open.
        self.kill_group();
        if let Err(panic) = checked {
            std::panic::resume_unwind(panic);
        }
        Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }

    fn kill_group(&self) {
        let pgid = self.0.id() as libc::pid_t;
        // SAFETY: signals our own process group (the child leads it: process_group(0)).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.kill_group();
            let _ = self.0.wait();
        }
    }
}

fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn rand_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `RESULT` line of a script that exited 0.
fn parse_result(mode: Mode, out: &Output) -> Value {
    let stdout = lossy(&out.stdout);
    let stderr = lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{mode:?}: the script failed ({});\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_MARKER))
        .unwrap_or_else(|| {
            panic!("{mode:?}: no result line;\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{mode:?}: result is not JSON ({e}): {line}"))
}

/// `v[key]` as a string.
fn s<'a>(mode: Mode, v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{mode:?}: {key} is not a string in {v}"))
}

/// `v[key]` as a list of strings.
fn strings(mode: Mode, v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{mode:?}: {key} is not a list in {v}"))
        .iter()
        .map(|e| {
            e.as_str()
                .unwrap_or_else(|| panic!("{mode:?}: {key} holds a non-string: {v}"))
                .to_owned()
        })
        .collect()
}

/// The hex SHA-256 of `bytes` (by coreutils' `sha256sum`, through a file in `scratch`).
fn sha256_hex(scratch: &Path, bytes: &[u8]) -> String {
    let file = scratch.join("sha256-input");
    std::fs::write(&file, bytes).expect("write the bytes to hash");
    let out = Command::new("sha256sum")
        .arg(&file)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn temp_work() -> tempfile::TempDir {
    tempfile::tempdir().expect("work dir")
}

#[test]
fn exec_output_env_and_workdir() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    base = dag.container().from_(IMAGE)
    RESULT["echo"] = await base.with_exec(["echo", "hello", "from", "dagr"]).stdout()
    ctr = (
        base.with_env_variable("GREETING", "hi there")
        .with_env_variable("EXPANDED", "${GREETING}!", expand=True)
        .with_workdir("/srv/app")
        .with_exec(["sh", "-c", 'echo "$GREETING|$EXPANDED|$(pwd)"'])
    )
    RESULT["env_workdir"] = await ctr.stdout()
    RESULT["stderr"] = await base.with_exec(["sh", "-c", "echo oops >&2"]).stderr()
    RESULT["workdir"] = await ctr.workdir()
    RESULT["env_variable"] = await ctr.env_variable("GREETING")
    RESULT["env_variables"] = [
        f"{await e.name()}={await e.value()}" for e in await ctr.env_variables()
    ]
    RESULT["without_env"] = await ctr.without_env_variable("GREETING").with_exec(
        ["sh", "-c", 'echo "[${GREETING:-unset}]"']).stdout()
    # Several queries of one session at once.
    outs = {}
    async def one(i):
        outs[i] = await base.with_exec(["sh", "-c", f"echo run-{i}"]).stdout()
    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
    RESULT["concurrent"] = [outs[i] for i in range(4)]

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let r = sdk.result(mode, work.path(), body);
        assert_eq!(s(mode, &r, "echo"), "hello from dagr\n", "{mode:?}");
        assert_eq!(
            s(mode, &r, "env_workdir"),
            "hi there|hi there!|/srv/app\n",
            "{mode:?}"
        );
        assert_eq!(s(mode, &r, "stderr"), "oops\n", "{mode:?}");
        assert_eq!(s(mode, &r, "workdir"), "/srv/app", "{mode:?}");
        assert_eq!(s(mode, &r, "env_variable"), "hi there", "{mode:?}");
        let env = strings(mode, &r, "env_variables");
        assert!(
            env.iter().any(|e| e.starts_with("PATH=")),
            "{mode:?}: {env:?}"
        );
        assert!(
            env.iter().any(|e| e == "GREETING=hi there"),
            "{mode:?}: {env:?}"
        );
        assert!(
            env.iter().any(|e| e == "EXPANDED=hi there!"),
            "{mode:?}: {env:?}"
        );
        assert_eq!(s(mode, &r, "without_env"), "[unset]\n", "{mode:?}");
        assert_eq!(
            strings(mode, &r, "concurrent"),
            ["run-0\n", "run-1\n", "run-2\n", "run-3\n"],
            "{mode:?}"
        );
    }
}

#[test]
fn default_command_entrypoint_user_and_stdin() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    base = dag.container().from_(IMAGE)
    # Dagger v0.11: stdout/stderr without an exec run the default command.
    RESULT["default_args"] = await base.with_default_args(["echo", "by", "default"]).stdout()
    RESULT["default_stderr"] = await base.with_default_args(
        ["sh", "-c", "echo to-err >&2"]).stderr()
    ep = base.with_entrypoint(["echo", "ep"])
    RESULT["entrypoint_and_default"] = await ep.with_default_args(["da"]).stdout()
    RESULT["entrypoint_exec"] = await ep.with_exec(["arg"]).stdout()
    RESULT["skip_entrypoint"] = await ep.with_exec(["echo", "plain"], skip_entrypoint=True).stdout()
    RESULT["empty_exec"] = await base.with_default_args(["echo", "empty"]).with_exec([]).stdout()
    try:
        await dag.container().stdout()
        RESULT["no_command"] = "no error"
    except dagger.QueryError as e:
        RESULT["no_command"] = str(e)
    nobody = base.with_user("65534:65534")
    RESULT["user"] = await nobody.user()
    RESULT["id"] = await nobody.with_exec(["id"]).stdout()
    RESULT["stdin"] = await base.with_exec(["cat"], stdin="from stdin").stdout()
    RESULT["redirect"] = await base.with_exec(
        ["echo", "redirected"], redirect_stdout="/out.txt").file("/out.txt").contents()
    RESULT["labels"] = [
        f"{await l.name()}={await l.value()}"
        for l in await base.with_label("org.example.a", "1").labels()
    ]

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let r = sdk.result(mode, work.path(), body);
        assert_eq!(s(mode, &r, "default_args"), "by default\n", "{mode:?}");
        assert_eq!(s(mode, &r, "default_stderr"), "to-err\n", "{mode:?}");
        assert_eq!(s(mode, &r, "entrypoint_and_default"), "ep da\n", "{mode:?}");
        assert_eq!(s(mode, &r, "entrypoint_exec"), "ep arg\n", "{mode:?}");
        assert_eq!(s(mode, &r, "skip_entrypoint"), "plain\n", "{mode:?}");
        assert_eq!(s(mode, &r, "empty_exec"), "empty\n", "{mode:?}");
        let no_command = s(mode, &r, "no_command");
        assert!(
            no_command.contains("no command has been set"),
            "{mode:?}: {no_command}"
        );
        assert_eq!(s(mode, &r, "user"), "65534:65534", "{mode:?}");
        assert!(
            s(mode, &r, "id").starts_with("uid=65534(nobody) gid=65534("),
            "{mode:?}: {r}"
        );
        assert_eq!(s(mode, &r, "stdin"), "from stdin", "{mode:?}");
        assert_eq!(s(mode, &r, "redirect"), "redirected\n", "{mode:?}");
        assert!(
            strings(mode, &r, "labels").contains(&"org.example.a=1".to_owned()),
            "{mode:?}: {r}"
        );
    }
}

#[test]
fn directories_built_in_the_engine() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    d = (
        dag.directory()
        .with_new_file("a.txt", "A")
        .with_new_file("sub/b.txt", "B")
        .with_new_directory("empty")
    )
    RESULT["entries"] = await d.entries()
    RESULT["sub_entries"] = await d.entries(path="sub")
    RESULT["b"] = await d.file("sub/b.txt").contents()
    RESULT["without"] = await d.without_file("a.txt").entries()
    RESULT["in_container"] = await (
        dag.container().from_(IMAGE)
        .with_directory("/data", d)
        .with_exec(["sh", "-c", "cd /data && find . | sort && cat a.txt sub/b.txt"])
        .stdout()
    )
    made = dag.container().from_(IMAGE).with_exec(
        ["sh", "-c", "mkdir -p /out/deep && echo made > /out/deep/m.txt"]).directory("/out")
    RESULT["from_exec"] = await made.entries(path="deep")
    RESULT["from_exec_contents"] = await made.file("deep/m.txt").contents()

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let r = sdk.result(mode, work.path(), body);
        assert_eq!(
            strings(mode, &r, "entries"),
            ["a.txt", "empty", "sub"],
            "{mode:?}"
        );
        assert_eq!(strings(mode, &r, "sub_entries"), ["b.txt"], "{mode:?}");
        assert_eq!(s(mode, &r, "b"), "B", "{mode:?}");
        assert_eq!(strings(mode, &r, "without"), ["empty", "sub"], "{mode:?}");
        assert_eq!(
            s(mode, &r, "in_container"),
            ".\n./a.txt\n./empty\n./sub\n./sub/b.txt\nAB",
            "{mode:?}"
        );
        assert_eq!(strings(mode, &r, "from_exec"), ["m.txt"], "{mode:?}");
        assert_eq!(s(mode, &r, "from_exec_contents"), "made\n", "{mode:?}");
    }
}

#[test]
fn host_directory_upload_with_exclude_and_exports_to_the_host() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    # Docker's .dockerignore patterns: `*.log` only at the top, `**/*.tmp` at any depth.
    src = dag.host().directory("src", exclude=["*.log", "skip", "**/*.tmp"])
    RESULT["entries"] = await src.entries()
    RESULT["uploaded"] = await (
        dag.container().from_(IMAGE)
        .with_directory("/src", src)
        .with_exec(["sh", "-c", "cd /src && find . -type f | sort && cat sub/b.txt"])
        .stdout()
    )
    RESULT["included"] = await (
        dag.container().from_(IMAGE)
        .with_directory("/src", dag.host().directory("src", include=["**/*.txt"], exclude=["skip"]))
        .with_exec(["sh", "-c", "cd /src && find . -type f | sort"])
        .stdout()
    )
    RESULT["host_file"] = await dag.host().file("src/a.txt").contents()
    built = dag.directory().with_new_file("x.txt", "X").with_new_file("nested/y.txt", "Y")
    RESULT["dir_export"] = await built.export("out-dir")
    RESULT["file_export"] = await built.file("nested/y.txt").export("out-file.txt")
    RESULT["into_dir"] = await built.file("x.txt").export("existing", allow_parent_dir_path=True)
    ctr = dag.container().from_(IMAGE).with_exec(
        ["sh", "-c", "mkdir /made && echo from-exec > /made/e.txt"])
    RESULT["ctr_dir_export"] = await ctr.directory("/made").export("out-ctr")
    RESULT["ctr_file_export"] = await ctr.file("/made/e.txt").export("out-e.txt")

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let w = work.path();
        std::fs::create_dir_all(w.join("src/sub")).expect("prepare the work dir");
        std::fs::create_dir_all(w.join("src/skip")).expect("prepare the work dir");
        std::fs::write(w.join("src/a.txt"), "a\n").expect("prepare the work dir");
        std::fs::write(w.join("src/sub/b.txt"), "b\n").expect("prepare the work dir");
        std::fs::write(w.join("src/skip/x.txt"), "x\n").expect("prepare the work dir");
        std::fs::write(w.join("src/c.log"), "log\n").expect("prepare the work dir");
        std::fs::write(w.join("src/sub/d.log"), "log\n").expect("prepare the work dir");
        std::fs::write(w.join("src/e.tmp"), "tmp\n").expect("prepare the work dir");
        std::fs::write(w.join("src/sub/f.tmp"), "tmp\n").expect("prepare the work dir");
        std::fs::create_dir(w.join("existing")).expect("prepare the work dir");
        let r = sdk.result(mode, w, body);
        assert_eq!(strings(mode, &r, "entries"), ["a.txt", "sub"], "{mode:?}");
        assert_eq!(
            s(mode, &r, "uploaded"),
            "./a.txt\n./sub/b.txt\n./sub/d.log\nb\n",
            "{mode:?}"
        );
        assert_eq!(
            s(mode, &r, "included"),
            "./a.txt\n./sub/b.txt\n",
            "{mode:?}"
        );
        assert_eq!(s(mode, &r, "host_file"), "a\n", "{mode:?}");
        for key in [
            "dir_export",
            "file_export",
            "into_dir",
            "ctr_dir_export",
            "ctr_file_export",
        ] {
            assert_eq!(r.get(key), Some(&Value::Bool(true)), "{mode:?}: {key}");
        }
        assert_eq!(read(&w.join("out-dir/x.txt")), "X");
        assert_eq!(read(&w.join("out-dir/nested/y.txt")), "Y");
        assert_eq!(read(&w.join("out-file.txt")), "Y");
        assert_eq!(read(&w.join("existing/x.txt")), "X");
        assert_eq!(read(&w.join("out-ctr/e.txt")), "from-exec\n");
        assert_eq!(read(&w.join("out-e.txt")), "from-exec\n");
    }
}

#[test]
fn secrets_are_scrubbed_and_stay_out_of_ids() {
    let sdk = Sdk::start();
    const SECRET: &str = "s3cr3t-Value-9d4e1";
    let body = r#"
SECRET = "s3cr3t-Value-9d4e1"

async def main():
    s = dag.set_secret("token", SECRET)
    RESULT["plaintext_matches"] = (await s.plaintext()) == SECRET
    ctr = dag.container().from_(IMAGE).with_secret_variable("TOKEN", s).with_exec(
        ["sh", "-c", 'echo "token=$TOKEN"; echo "err=$TOKEN" >&2; printf %s "$TOKEN" | sha256sum'])
    RESULT["stdout"] = await ctr.stdout()
    RESULT["stderr"] = await ctr.stderr()
    RESULT["want_sha"] = hashlib.sha256(SECRET.encode()).hexdigest()
    mounted = dag.container().from_(IMAGE).with_mounted_secret("/run/secrets/token", s).with_exec(
        ["sh", "-c", "cat /run/secrets/token; echo; sha256sum < /run/secrets/token"])
    RESULT["mounted"] = await mounted.stdout()
    RESULT["ids"] = [await ctr.id(), await mounted.id(), await s.id()]
    try:
        await dag.container().from_(IMAGE).with_secret_variable("TOKEN", s).with_exec(
            ["sh", "-c", 'echo "out=$TOKEN"; echo "err=$TOKEN" >&2; exit 4']).sync()
    except dagger.ExecError as e:
        RESULT["exec_error"] = [e.exit_code, e.stdout, e.stderr, SECRET in str(e)]

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let out = sdk.run_script(mode, work.path(), body, &rand_suffix());
        let r = parse_result(mode, &out);
        assert_eq!(
            r.get("plaintext_matches"),
            Some(&Value::Bool(true)),
            "{mode:?}"
        );
        let want_sha = s(mode, &r, "want_sha");
        assert_eq!(
            s(mode, &r, "stdout"),
            format!("token=***\n{want_sha}  -\n"),
            "{mode:?}"
        );
        assert_eq!(s(mode, &r, "stderr"), "err=***\n", "{mode:?}");
        assert_eq!(
            s(mode, &r, "mounted"),
            format!("***\n{want_sha}  -\n"),
            "{mode:?}"
        );
        assert_eq!(
            r.get("exec_error"),
            Some(&serde_json::json!([4, "out=***", "err=***", false])),
            "{mode:?}"
        );
        for id in strings(mode, &r, "ids") {
            assert!(!id.contains(SECRET), "{mode:?}: the secret is in an ID");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&id)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&id))
                .unwrap_or_else(|e| panic!("{mode:?}: ID {id} is not base64: {e}"));
            assert!(
                !lossy(&decoded).contains(SECRET),
                "{mode:?}: the secret is in a decoded ID: {}",
                lossy(&decoded)
            );
        }
        // The script never prints the value; neither may anything the SDK, `dagr run` or
        // `dagr session` logged.
        let mut everything = lossy(&out.stdout);
        everything.push_str(&lossy(&out.stderr));
        assert!(
            !everything.contains(SECRET),
            "{mode:?}: the secret leaked into the script's output:\n{everything}"
        );
    }
}

#[test]
fn failing_exec_raises_exec_error() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    base = dag.container().from_(IMAGE)
    try:
        await base.with_exec(["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]).stdout()
        RESULT["raised"] = "nothing"
    except dagger.ExecError as e:
        RESULT["raised"] = "ExecError"
        RESULT["is_query_error"] = isinstance(e, dagger.QueryError)
        RESULT["exit_code"] = e.exit_code
        RESULT["stdout"] = e.stdout
        RESULT["stderr"] = e.stderr
        RESULT["message"] = str(e)
        RESULT["error_message"] = e.message
        RESULT["command"] = e.command
    try:
        await base.with_exec(["false"]).sync()
    except dagger.ExecError as e:
        RESULT["false_exit_code"] = e.exit_code
    # The session stays usable after a failed exec.
    RESULT["after"] = await base.with_exec(["echo", "still fine"]).stdout()

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let r = sdk.result(mode, work.path(), body);
        assert_eq!(s(mode, &r, "raised"), "ExecError", "{mode:?}: {r}");
        assert_eq!(r.get("is_query_error"), Some(&Value::Bool(true)));
        assert_eq!(r.get("exit_code"), Some(&Value::from(3)), "{mode:?}: {r}");
        assert_eq!(s(mode, &r, "stdout").trim_end(), "to-out", "{mode:?}");
        assert_eq!(s(mode, &r, "stderr").trim_end(), "to-err", "{mode:?}");
        let message = s(mode, &r, "message");
        assert!(message.contains("exit code: 3"), "{mode:?}: {message}");
        assert_eq!(
            s(mode, &r, "error_message"),
            r#"process "sh -c echo to-out; echo to-err >&2; exit 3" did not complete successfully: exit code: 3"#,
            "{mode:?}"
        );
        assert_eq!(
            strings(mode, &r, "command"),
            ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"],
            "{mode:?}"
        );
        assert_eq!(
            r.get("false_exit_code"),
            Some(&Value::from(1)),
            "{mode:?}: {r}"
        );
        assert_eq!(s(mode, &r, "after"), "still fine\n", "{mode:?}");
    }
}

#[test]
fn ids_round_trip() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    def pipeline():
        return dag.container().from_(IMAGE).with_env_variable("X", "from-id").with_exec(
            ["sh", "-c", 'echo "$X" > /x.txt; cat /x.txt'])
    ctr = pipeline()
    cid = await ctr.id()
    RESULT["same_id_twice"] = cid == await pipeline().id()
    loaded = dag.load_container_from_id(cid)
    RESULT["loaded_stdout"] = await loaded.stdout()
    RESULT["loaded_env"] = await loaded.env_variable("X")
    RESULT["extended"] = await loaded.with_exec(["cat", "/x.txt"]).stdout()
    d = dag.directory().with_new_file("f", "in a directory")
    RESULT["dir"] = await dag.load_directory_from_id(await d.id()).file("f").contents()
    f = d.file("f")
    RESULT["file"] = await dag.load_file_from_id(await f.id()).contents()
    # IDs also work as arguments of other fields.
    RESULT["mounted_by_id"] = await dag.container().from_(IMAGE).with_directory(
        "/d", dag.load_directory_from_id(await d.id())).with_exec(["cat", "/d/f"]).stdout()

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let r = sdk.result(mode, work.path(), body);
        assert_eq!(r.get("same_id_twice"), Some(&Value::Bool(true)), "{mode:?}");
        assert_eq!(s(mode, &r, "loaded_stdout"), "from-id\n", "{mode:?}");
        assert_eq!(s(mode, &r, "loaded_env"), "from-id", "{mode:?}");
        assert_eq!(s(mode, &r, "extended"), "from-id\n", "{mode:?}");
        assert_eq!(s(mode, &r, "dir"), "in a directory", "{mode:?}");
        assert_eq!(s(mode, &r, "file"), "in a directory", "{mode:?}");
        assert_eq!(s(mode, &r, "mounted_by_id"), "in a directory", "{mode:?}");
    }
}

#[test]
fn cache_volumes_are_shared_between_execs() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    base = dag.container().from_(IMAGE)
    shared = dag.cache_volume("shared-" + NONCE)
    other = dag.cache_volume("other-" + NONCE)
    await base.with_mounted_cache("/cache", shared).with_exec(
        ["sh", "-c", "echo written-by-first > /cache/note"]).sync()
    RESULT["second"] = await base.with_env_variable("ANOTHER", "exec").with_mounted_cache(
        "/var/cache/x", shared).with_exec(["cat", "/var/cache/x/note"]).stdout()
    RESULT["other_key"] = await base.with_mounted_cache("/cache", other).with_exec(
        ["sh", "-c", "ls -A /cache | wc -l"]).stdout()
    # Not part of the container's filesystem afterwards.
    RESULT["without"] = await base.with_mounted_cache("/cache", shared).without_mount(
        "/cache").with_exec(["sh", "-c", "ls -A /cache 2>/dev/null | wc -l"]).stdout()

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let r = sdk.result(mode, work.path(), body);
        assert_eq!(s(mode, &r, "second"), "written-by-first\n", "{mode:?}");
        assert_eq!(s(mode, &r, "other_key").trim(), "0", "{mode:?}");
        assert_eq!(s(mode, &r, "without").trim(), "0", "{mode:?}");
    }
}

#[test]
fn requerying_leaves_does_not_rerun_execs() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    runs = dag.cache_volume("runs-@PIPELINE_KEY@")
    base = dag.container().from_(IMAGE).with_mounted_cache("/runs", runs)
    ctr = (
        base.with_exec(["sh", "-c", "echo run >> /runs/first; echo one; echo warn >&2"])
        .with_exec(["sh", "-c", "echo run >> /runs/second; echo two > /made.txt; echo two"])
    )
    RESULT["stdout"] = await ctr.stdout()
    RESULT["stderr"] = await ctr.stderr()
    await ctr.sync()
    RESULT["file"] = await ctr.file("/made.txt").contents()
    RESULT["entries"] = "made.txt" in await ctr.directory("/").entries()
    RESULT["stdout_again"] = await ctr.stdout()
    RESULT["by_id"] = await dag.load_container_from_id(await ctr.id()).stdout()
    # A new exec each run (NONCE), so the counts are read afresh.
    RESULT["counts"] = await base.with_env_variable("COUNT", NONCE).with_exec(
        ["sh", "-c", "wc -l < /runs/first; wc -l < /runs/second"]).stdout()

connect_and_run(main)
"#;
    // One pipeline for all four sessions (two per mode): the execs are cached across sessions
    // too, as buildkit's cache does for Dagger.
    let body = body.replace("@PIPELINE_KEY@", &rand_suffix());
    for mode in [Mode::Run, Mode::Session, Mode::Run, Mode::Session] {
        let work = temp_work();
        let r = sdk.result(mode, work.path(), &body);
        assert_eq!(s(mode, &r, "stdout"), "two\n", "{mode:?}");
        assert_eq!(s(mode, &r, "stderr"), "", "{mode:?}");
        assert_eq!(s(mode, &r, "file"), "two\n", "{mode:?}");
        assert_eq!(r.get("entries"), Some(&Value::Bool(true)), "{mode:?}");
        assert_eq!(s(mode, &r, "stdout_again"), "two\n", "{mode:?}");
        assert_eq!(s(mode, &r, "by_id"), "two\n", "{mode:?}");
        let counts: Vec<&str> = s(mode, &r, "counts").split_whitespace().collect();
        assert_eq!(counts, ["1", "1"], "{mode:?}: each exec ran exactly once");
    }
}

#[test]
fn session_mode_passes_the_configured_workdir() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    RESULT["entries"] = await dag.host().directory(".").entries()
    RESULT["exported"] = await dag.directory().with_new_file("o.txt", "out").export("exported")

connect_and_run(main, workdir="project")
"#;
    let work = temp_work();
    let w = work.path();
    std::fs::create_dir_all(w.join("project/inner")).expect("prepare the work dir");
    std::fs::write(w.join("project/p.txt"), "p").expect("prepare the work dir");
    std::fs::write(w.join("outside.txt"), "o").expect("prepare the work dir");
    let r = sdk.result(Mode::Session, w, body);
    assert_eq!(
        strings(Mode::Session, &r, "entries"),
        ["inner", "p.txt"],
        "host paths resolve against the SDK's workdir (dagr session --workdir)"
    );
    assert_eq!(read(&w.join("project/exported/o.txt")), "out");
    assert!(!w.join("exported").exists());
}

#[test]
fn publish_and_export_images() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    ctr = dag.container().from_(IMAGE).with_new_file("/hello.txt", contents="published " + NONCE).with_exec(
        ["sh", "-c", "echo built > /built.txt"])
    ref = await ctr.publish(f"{REGISTRY}/sdk-publish:{NONCE.lower()}")
    RESULT["ref"] = ref
    pulled = dag.container().from_(ref)
    RESULT["hello"] = await pulled.file("/hello.txt").contents()
    RESULT["built"] = await pulled.with_exec(["cat", "/built.txt"]).stdout()
    RESULT["exported"] = await ctr.export("image.tar")

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let nonce = format!("{mode:?}-{}", rand_suffix());
        let out = sdk.run_script(mode, work.path(), body, &nonce);
        let r = parse_result(mode, &out);
        let tag = format!("{}/sdk-publish:{}", sdk.registry, nonce.to_lowercase());
        let reference = s(mode, &r, "ref");
        let digest = reference
            .strip_prefix(&format!("{tag}@"))
            .unwrap_or_else(|| panic!("{mode:?}: publish answered {reference}, not {tag}@DIGEST"));
        assert!(digest.starts_with("sha256:"), "{mode:?}: {reference}");
        assert_eq!(
            s(mode, &r, "hello"),
            format!("published {nonce}"),
            "{mode:?}"
        );
        assert_eq!(s(mode, &r, "built"), "built\n", "{mode:?}");
        // The registry holds that manifest under the tag (read by skopeo, not by dagr).
        let inspect = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{tag}"))
            .output()
            .expect("run skopeo");
        assert!(
            inspect.status.success(),
            "{mode:?}: skopeo inspect {tag}: {}",
            lossy(&inspect.stderr)
        );
        let manifest_digest = format!("sha256:{}", sha256_hex(work.path(), &inspect.stdout));
        assert_eq!(manifest_digest, digest, "{mode:?}");
        // Container.export wrote an OCI archive on the host that skopeo reads, with the
        // busybox layer plus one for the new file and the exec.
        assert_eq!(r.get("exported"), Some(&Value::Bool(true)), "{mode:?}");
        let archive = work.path().join("image.tar");
        let inspect = Command::new("skopeo")
            .args(["inspect", "--format", "{{len .Layers}}"])
            .arg(format!("oci-archive:{}", archive.display()))
            .output()
            .expect("run skopeo");
        assert!(
            inspect.status.success(),
            "{mode:?}: skopeo inspect {}: {}",
            archive.display(),
            lossy(&inspect.stderr)
        );
        let layers: usize = lossy(&inspect.stdout).trim().parse().expect("layer count");
        assert!(layers >= 2, "{mode:?}: {layers} layers");
    }
}

#[test]
fn an_sdk_process_that_dies_ends_its_session() {
    let sdk = Sdk::start();
    // No `dagger.connection` cleanup: the process exits in the middle of its session.
    let body = r#"
async def main():
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        out = await dag.container().from_(IMAGE).with_exec(["echo", "alive"]).stdout()
        print("echo:" + out, flush=True)
        os._exit(7)

anyio.run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let out = sdk.run_script_then(mode, work.path(), body, &rand_suffix(), || {
            // Nothing of the group is killed yet: `dagr session` (or `dagr run`) must end the
            // session on its own (hang protection: 30 s).
            sdk.engine.wait_metric("dagr_sessions_active", 0);
        });
        assert_eq!(
            out.status.code(),
            Some(7),
            "{mode:?}: the exit code passes through; stderr:\n{}",
            lossy(&out.stderr)
        );
        assert!(
            lossy(&out.stdout).contains("echo:alive"),
            "{mode:?}: {}",
            lossy(&out.stdout)
        );
    }
}

/// What the SDK does when it starts `dagr session` itself, with many keep-alive connections
/// still open to the session proxy when it closes `dagr session`'s stdin: the session must end
/// cleanly (exit 0), every proxied connection released first.
#[test]
fn dagr_session_ends_cleanly_with_open_proxy_connections() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let sdk = Sdk::start();
    for round in 0..3 {
        let mut session = ProcessGroup(
            Command::new(dagr())
                .args(["session", "--label", "dagger.io/sdk.name:python"])
                .env("DAGR_HOST", sdk.engine.host())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .expect("spawn dagr session"),
        );
        let mut line = String::new();
        BufReader::new(session.0.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read the connect params");
        let params: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("round {round}: bad connect params {line:?}: {e}"));
        let port = params["port"].as_u64().expect("port");
        let token = params["session_token"].as_str().expect("token");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{token}:"));
        let body = r#"{"query":"{ defaultPlatform }"}"#;
        let request = format!(
            "POST /query HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut connections = Vec::new();
        for _ in 0..24 {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port as u16)).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(60)))
                .expect("read timeout");
            c.write_all(request.as_bytes()).expect("send the query");
            // Read until the JSON body arrived: the connection stays open (keep-alive).
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !lossy(&seen).contains("defaultPlatform") {
                let n = c.read(&mut buf).expect("read the answer");
                assert!(n > 0, "round {round}: the proxy closed the connection");
                seen.extend_from_slice(&buf[..n]);
            }
            assert!(lossy(&seen).starts_with("HTTP/1.1 200"), "{}", lossy(&seen));
            connections.push(c);
        }
        // The SDK ends the session by closing stdin.
        drop(session.0.stdin.take());
        let out = session.wait_with_output(SCRIPT_DEADLINE, || {});
        assert!(
            out.status.success(),
            "round {round}: dagr session failed ({}): {}",
            out.status,
            lossy(&out.stderr)
        );
        drop(connections);
    }
}

/// Three SDK processes at once on one engine (both ways of connecting): the same exec runs once
/// for all of them, while a secret of the same name holds each session's own value.
#[test]
fn concurrent_sessions_share_execs_but_not_secrets() {
    let sdk = Sdk::start();
    let body = r#"
async def main():
    runs = dag.cache_volume("concurrent-@PIPELINE_KEY@")
    base = dag.container().from_(IMAGE).with_mounted_cache("/runs", runs)
    RESULT["out"] = await base.with_exec(
        ["sh", "-c", "echo run >> /runs/log; sleep 1; echo done"]).stdout()
    secret = "value-of-" + NONCE
    s = dag.set_secret("same-name", secret)
    RESULT["secret_ok"] = (await base.with_secret_variable("T", s).with_exec(
        ["sh", "-c", 'printf %s "$T" | sha256sum']).stdout()).split()[0] == hashlib.sha256(
        secret.encode()).hexdigest()
    RESULT["count"] = (await base.with_env_variable("READER", NONCE).with_exec(
        ["sh", "-c", "wc -l < /runs/log"]).stdout()).strip()

connect_and_run(main)
"#;
    let body = body.replace("@PIPELINE_KEY@", &rand_suffix());
    let results: Vec<(Mode, Value)> = std::thread::scope(|scope| {
        let runs: Vec<_> = [Mode::Run, Mode::Session, Mode::Run]
            .into_iter()
            .map(|mode| {
                let sdk = &sdk;
                let body = &body;
                scope.spawn(move || {
                    let work = temp_work();
                    (mode, sdk.result(mode, work.path(), body))
                })
            })
            .collect();
        runs.into_iter()
            .map(|h| h.join().expect("a script thread panicked"))
            .collect()
    });
    for (mode, r) in results {
        assert_eq!(s(mode, &r, "out"), "done\n", "{mode:?}");
        assert_eq!(r.get("secret_ok"), Some(&Value::Bool(true)), "{mode:?}");
        assert_eq!(
            s(mode, &r, "count"),
            "1",
            "{mode:?}: the shared exec ran once"
        );
    }
}

/// A host directory keeps modes, symlinks, empty and hidden directories and non-ASCII names on
/// its way into a container and back out to the host.
#[test]
fn host_directory_round_trip_keeps_modes_links_and_names() {
    use std::os::unix::fs::PermissionsExt as _;
    let sdk = Sdk::start();
    let body = r#"
async def main():
    src = dag.host().directory("src")
    RESULT["entries"] = await src.entries()
    RESULT["inside"] = await dag.container().from_(IMAGE).with_directory("/s", src).with_exec(
        ["sh", "-c",
         "cd /s && stat -c '%a %F %n' run.sh .hidden/h empty && readlink link && ./link && cat 'ünï cödé.txt'"]
    ).stdout()
    RESULT["exported"] = await src.export("back")

connect_and_run(main)
"#;
    for mode in MODES {
        let work = temp_work();
        let src = work.path().join("src");
        std::fs::create_dir_all(src.join("empty")).expect("prepare the work dir");
        std::fs::create_dir_all(src.join(".hidden")).expect("prepare the work dir");
        std::fs::write(src.join("run.sh"), "#!/bin/sh\necho ran\n").expect("prepare the work dir");
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::write(src.join(".hidden/h"), "h").expect("prepare the work dir");
        std::fs::set_permissions(
            src.join(".hidden/h"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("run.sh", src.join("link")).expect("symlink");
        std::fs::write(src.join("ünï cödé.txt"), "unicode\n").expect("prepare the work dir");
        let r = sdk.result(mode, work.path(), body);
        assert_eq!(
            strings(mode, &r, "entries"),
            [".hidden", "empty", "link", "run.sh", "ünï cödé.txt"],
            "{mode:?}"
        );
        assert_eq!(
            s(mode, &r, "inside"),
            "755 regular file run.sh\n600 regular file .hidden/h\n755 directory empty\n\
             run.sh\nran\nunicode\n",
            "{mode:?}"
        );
        assert_eq!(r.get("exported"), Some(&Value::Bool(true)), "{mode:?}");
        let back = work.path().join("back");
        let mode_of = |p: &str| {
            std::fs::symlink_metadata(back.join(p))
                .unwrap_or_else(|e| panic!("{mode:?}: back/{p}: {e}"))
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode_of("run.sh"), 0o755, "{mode:?}");
        assert_eq!(mode_of(".hidden/h"), 0o600, "{mode:?}");
        assert!(back.join("empty").is_dir(), "{mode:?}");
        assert_eq!(
            std::fs::read_link(back.join("link")).expect("read_link"),
            Path::new("run.sh"),
            "{mode:?}"
        );
        assert_eq!(read(&back.join("ünï cödé.txt")), "unicode\n", "{mode:?}");
    }
}

fn files_named(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_named(&path, suffix, out);
        } else if kind.is_file() && path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
}

/// What a busybox container needs to run the host's python with the SDK's virtualenv: the
/// interpreter and every library it and its extension modules link (`bundle`, run through the
/// dynamic loader named `loader`), the standard library's path and the SDK's site-packages.
struct PythonBundle {
    bundle: PathBuf,
    loader: String,
    interpreter: String,
    /// `sys.base_prefix` (PYTHONHOME), under which `stdlib` is.
    prefix: String,
    stdlib: String,
    site_packages: String,
}

fn python_bundle(dir: &Path) -> PythonBundle {
    let python = venv_python();
    let paths = Command::new(python)
        .args([
            "-c",
            "import sys, sysconfig; p = sysconfig.get_paths(); \
             print(p['stdlib']); print(p['purelib']); print(sys._base_executable); \
             print(sys.base_prefix)",
        ])
        .output()
        .expect("ask python for its paths");
    let text = lossy(&paths.stdout);
    let mut lines = text.lines();
    let (stdlib, site_packages, base, prefix) = (
        lines.next().expect("stdlib").to_owned(),
        lines.next().expect("purelib").to_owned(),
        lines.next().expect("base executable").to_owned(),
        lines.next().expect("base prefix").to_owned(),
    );
    let interpreter_path = std::fs::canonicalize(&base).expect("python binary");
    let mut linking = vec![interpreter_path.clone()];
    files_named(Path::new(&stdlib), ".so", &mut linking);
    files_named(Path::new(&site_packages), ".so", &mut linking);
    let bundle = dir.join("python-bundle");
    // The python trees themselves are mounted whole: only the libraries outside them.
    let libraries = dagr_testkit::linked_libraries(&linking)
        .into_iter()
        .filter(|l| !l.to_string_lossy().contains("/python3"));
    let loader = dagr_testkit::flat_bundle(
        &bundle,
        std::iter::once(interpreter_path.clone()).chain(libraries),
    );
    PythonBundle {
        bundle,
        loader: loader.expect("the dynamic loader"),
        interpreter: interpreter_path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned(),
        prefix,
        stdlib,
        site_packages,
    }
}

#[test]
fn python_sdk_inside_a_nested_container_runs_a_pipeline() {
    let sdk = Sdk::start();
    let work = temp_work();
    let py = python_bundle(work.path());
    // Runs inside the container: the SDK finds DAGGER_SESSION_PORT/TOKEN of the nested exec.
    std::fs::write(
        work.path().join("inner.py"),
        r#"
import json, sys
import anyio
import dagger
from dagger import dag

async def main():
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        out = await dag.container().from_(sys.argv[1]).with_exec(
            ["echo", "inner-" + sys.argv[2]]).stdout()
        entries = await dag.host().directory(".").entries()
        marker = await dag.host().file("nested-marker").contents()
    print("INNER " + json.dumps({"stdout": out, "entries": sorted(entries), "marker": marker}))

anyio.run(main)
"#,
    )
    .expect("write inner.py");
    let body = format!(
        r#"
async def main():
    exclude = ["**/__pycache__"]
    ctr = (
        dag.container().from_(IMAGE)
        .with_mounted_directory("/py", dag.host().directory({bundle:?}))
        .with_mounted_directory({stdlib:?}, dag.host().directory({stdlib:?}, exclude=exclude))
        .with_mounted_directory("/sdk", dag.host().directory({site:?}, exclude=exclude))
        .with_new_file("/work/nested-marker", contents=NONCE)
        .with_mounted_file("/work/inner.py", dag.host().file("inner.py"))
        .with_env_variable("PYTHONHOME", {prefix:?})
        .with_env_variable("PYTHONPATH", "/sdk")
        .with_env_variable("PYTHONDONTWRITEBYTECODE", "1")
        .with_env_variable("LD_LIBRARY_PATH", "/py")
        .with_workdir("/work")
    )
    RESULT["stdout"] = await ctr.with_exec(
        ["/py/{loader}", "/py/{interpreter}", "inner.py", IMAGE, NONCE],
        experimental_privileged_nesting=True,
    ).stdout()

connect_and_run(main)
"#,
        bundle = py.bundle.display().to_string(),
        stdlib = py.stdlib,
        prefix = py.prefix,
        site = py.site_packages,
        loader = py.loader,
        interpreter = py.interpreter,
    );
    let mode = Mode::Run;
    let nonce = format!("nested-{}", rand_suffix());
    let out = sdk.run_script(mode, work.path(), &body, &nonce);
    let r = parse_result(mode, &out);
    let stdout = s(mode, &r, "stdout");
    let inner = stdout
        .lines()
        .find_map(|l| l.strip_prefix("INNER "))
        .unwrap_or_else(|| panic!("no INNER line in the nested exec's stdout:\n{stdout}"));
    let inner: Value = serde_json::from_str(inner).expect("INNER is JSON");
    assert_eq!(s(mode, &inner, "stdout"), format!("inner-{nonce}\n"));
    // The nested SDK's host is the container: its workdir, the mounted script included.
    assert_eq!(
        strings(mode, &inner, "entries"),
        ["inner.py", "nested-marker"]
    );
    assert_eq!(s(mode, &inner, "marker"), nonce);
}

/// Under `dagr run`, the SDK's own spans (exported to the CLI's OTLP receiver) join the tree,
/// with the engine's spans for the calls made inside them as their children.
#[test]
fn sdk_spans_join_the_tree_with_the_engine_spans_under_them() {
    let sdk = Sdk::start();
    let work = temp_work();
    let nonce = format!("spans-{}", rand_suffix());
    let body = r#"
from dagger import telemetry

async def main():
    with telemetry.get_tracer().start_as_current_span("python-pipeline-" + NONCE):
        RESULT["out"] = await dag.container().from_(IMAGE).with_exec(["echo", NONCE]).stdout()

connect_and_run(main)
"#;
    let out = sdk.run_script(Mode::Run, work.path(), body, &nonce);
    let v = parse_result(Mode::Run, &out);
    assert_eq!(s(Mode::Run, &v, "out"), format!("{nonce}\n"));
    let stderr = lossy(&out.stderr);
    // The summary at the end nests steps by indentation: find the SDK span's last line, then
    // the engine's call among the lines indented under it.
    let lines: Vec<&str> = stderr.lines().collect();
    let span = format!("✔ python-pipeline-{nonce}");
    let at = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with(&span))
        .unwrap_or_else(|| panic!("no {span} in the summary:\n{stderr}"));
    let depth = |l: &str| l.len() - l.trim_start().len();
    let own = depth(lines[at]);
    let under: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| depth(l) > own)
        .copied()
        .collect();
    assert!(
        under
            .iter()
            .any(|l| l.trim_start().starts_with("✔ Container.stdout")),
        "the engine's call under the SDK's span:\n{stderr}"
    );
    assert!(
        under
            .iter()
            .any(|l| l.trim_start().starts_with(&format!("✔ exec echo {nonce}"))),
        "and the step it ran:\n{stderr}"
    );
}

#[test]
fn services_bind_and_come_up_on_the_host() {
    let sdk = Sdk::start();
    let body = r#"
import socket, urllib.request

async def main():
    srv = (
        dag.container().from_(IMAGE)
        .with_new_file("/srv/index.html", contents=f"sdk page {NONCE}")
        .with_exposed_port(8080)
        .with_exec(["httpd", "-f", "-p", "8080", "-h", "/srv"])
        .as_service()
    )
    RESULT["hostname"] = await srv.hostname()
    RESULT["endpoint"] = await srv.endpoint(scheme="http")
    RESULT["ports"] = [await p.port() for p in await srv.ports()]
    RESULT["bound"] = await (
        dag.container().from_(IMAGE)
        .with_env_variable("NONCE", NONCE)
        .with_service_binding("web", srv)
        .with_exec(["wget", "-q", "-O-", "http://web:8080/index.html"])
        .stdout()
    )
    # Service.up on a free local port, fetched from this process, then cancelled.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    def get():
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5).read().decode()
    async def fetch():
        for _ in range(400):
            try:
                return await anyio.to_thread.run_sync(get)
            except Exception:
                await anyio.sleep(0.05)
        return "never came up"
    async with anyio.create_task_group() as tg:
        async def up():
            await srv.up(ports=[dagger.PortForward(backend=8080, frontend=port)])
        tg.start_soon(up)
        RESULT["up"] = await fetch()
        tg.cancel_scope.cancel()

connect_and_run(main)
"#;
    let work = temp_work();
    let r = sdk.result(Mode::Run, work.path(), body);
    let hostname = s(Mode::Run, &r, "hostname").to_owned();
    assert_eq!(hostname.len(), 13, "{hostname}");
    assert_eq!(
        s(Mode::Run, &r, "endpoint"),
        format!("http://{hostname}:8080")
    );
    assert_eq!(r["ports"], serde_json::json!([8080]));
    let bound = s(Mode::Run, &r, "bound");
    assert!(bound.starts_with("sdk page Run-"), "{bound}");
    assert_eq!(s(Mode::Run, &r, "up"), bound);
    sdk.engine.wait_metric("dagr_services_running", 0);
}

#[test]
fn dockerfile_builds_and_git_sources() {
    let sdk = Sdk::start();
    let git = dagr_testkit::git::GitServer::start(None);
    git.create("repo.git");
    let commit = git.commit("repo.git", "main", &[("README", "from git")], "first");
    let body = r#"
async def main():
    base = dagger.BuildArg(name="BASE", value=IMAGE)
    ctx = dag.directory().with_new_file(
        "Dockerfile",
        contents='ARG BASE\nFROM $BASE\nARG MSG\nRUN echo "$MSG" > /msg\n',
    )
    built = dag.container().build(ctx, build_args=[base, dagger.BuildArg(name="MSG", value=NONCE)])
    RESULT["msg"] = await built.file("/msg").contents()
    secret = dag.set_secret("tok", "sekrit-" + NONCE)
    ctx2 = dag.directory().with_new_file(
        "Dockerfile",
        contents="ARG BASE\nFROM $BASE\nRUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len\n",
    )
    with_secret = ctx2.docker_build(build_args=[base], secrets=[secret])
    RESULT["len"] = (await with_secret.file("/len").contents()).strip()
    repo = dag.git(GIT_URL)
    RESULT["commit"] = await repo.branch("main").commit()
    RESULT["readme"] = await repo.branch("main").tree().file("README").contents()
    RESULT["kept"] = await dag.git(GIT_URL, keep_git_dir=True).head().tree().entries()

connect_and_run(main)
"#
    .replace("GIT_URL", &format!("{:?}", git.daemon_url("repo.git")));
    let work = temp_work();
    let r = sdk.result(Mode::Run, work.path(), &body);
    assert!(s(Mode::Run, &r, "msg").starts_with("Run-"), "{r}");
    // "sekrit-" + the nonce.
    let nonce_len = s(Mode::Run, &r, "msg").trim().len();
    assert_eq!(s(Mode::Run, &r, "len"), (7 + nonce_len).to_string());
    assert_eq!(s(Mode::Run, &r, "commit"), commit);
    assert_eq!(s(Mode::Run, &r, "readme"), "from git");
    assert_eq!(r["kept"], serde_json::json!([".git", "README"]));
}
