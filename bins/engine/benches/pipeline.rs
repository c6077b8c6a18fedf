//! Build pipelines through `/query`, each against a baseline measured in the same run:
//! - `cached_pipeline`: a fully cached 5-step pipeline (from + 4 execs, `stdout`) re-queried over
//!   h2c on a live session vs a bare hyper h2c server answering the same bytes (goal: <= 3x);
//! - `exec_true`: an uncached `withExec(["true"])` end to end (on dagr-launcher, the default)
//!   vs `runc run` of a bare prepared bundle (goal: <= 10 ms), then on an engine with `--runtime
//!   runc`, each with the mean of each phase (`/metrics`);
//! - `three_steps`: a 3-step graph cold and fully cached, vs `buildah bud --layers` of the same
//!   Containerfile when buildah is installed and `docker build` (BuildKit, a private dockerd;
//!   goals >= 3x cold, >= 20x cached);
//! - nested `{version}` from inside a container vs from the host;
//! - terminal keystroke echo: a key typed into `Container.terminal` through the terminal
//!   attachable until its echo comes back, vs the same through `runc run` on a host pty.
//!
//! Needs root, runc, docker-registry and skopeo (`cargo xtask bench` installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};

use dagr_testkit::h2c::{self, Sender as H2, bare_server, median, post};

fn query_body(query: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "query": query }).to_string())
}

/// A runc bundle running `true` in a busybox rootfs, to time `runc run` itself.
fn runc_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true")).expect("link");
    let status = Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .expect("runc spec");
    assert!(status.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    spec["process"]["terminal"] = serde_json::Value::Bool(false);
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    // The same namespaces as the engine's execs, network included.
    std::fs::write(&path, serde_json::to_vec(&spec).expect("json")).expect("write");
    bundle
}

fn runc_run(bundle: &Path, root: &Path, i: usize) {
    let status = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("bench-{i}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("runc run");
    assert!(status.success());
}

fn benches(c: &mut Criterion) {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine =
        dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(dagr_client::connect(dagr_testkit::connect_options(
            &engine.host(),
            &std::env::temp_dir(),
        )))
        .expect("connect");
    let metadata = client.metadata().encode();
    let image = &registry.image;

    // 1. A fully cached 5-step pipeline vs the bare h2c floor.
    let pipeline = query_body(&format!(
        r#"{{ container {{ from(address: "{image}") {{ withExec(args: ["sh", "-c", "echo 1 > /1"]) {{ withExec(args: ["sh", "-c", "echo 2 > /2"]) {{ withExec(args: ["sh", "-c", "echo 3 > /3"]) {{ withExec(args: ["cat", "/1", "/2", "/3"]) {{ stdout }} }} }} }} }} }} }}"#
    ));
    let (mut engine_conn, mut bare_conn) = rt.block_on(async {
        let mut conn = h2c::connect(engine.tcp).await;
        let answer = post(&mut conn, Some(&metadata), &pipeline).await;
        assert!(
            answer.starts_with(b"{\"data\""),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let bare = bare_server(answer);
        (conn, h2c::connect(bare).await)
    });
    let time = |conn: &mut H2, md: Option<&str>, body: &Bytes| {
        rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..1000 {
                let t = Instant::now();
                post(conn, md, body).await;
                v.push(t.elapsed());
            }
            median(v)
        })
    };
    let bare = time(&mut bare_conn, None, &pipeline);
    let cached = time(&mut engine_conn, Some(&metadata), &pipeline);
    println!(
        "cached 5-step pipeline: engine median {cached:?}, bare h2c median {bare:?}, ratio {:.2}x (goal <= 3x)",
        cached.as_secs_f64() / bare.as_secs_f64()
    );
    let mut group = c.benchmark_group("cached_pipeline");
    group.bench_function("engine", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = engine_conn.clone();
            let (md, body) = (metadata.clone(), pipeline.clone());
            async move { post(&mut conn, Some(&md), &body).await }
        });
    });
    group.bench_function("bare_h2c", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = bare_conn.clone();
            let body = pipeline.clone();
            async move { post(&mut conn, None, &body).await }
        });
    });
    group.finish();

    // 2. Uncached withExec(["true"]) vs runc run of a prepared bundle.
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = runc_bundle(tmp.path());
    let runc_root = tmp.path().join("runc-root");
    // Enough runs that the group commit's passes (one per 50 ms, beside whichever exec runs
    // then) weigh in the median as they do in a pipeline.
    let runs = 40;
    let mut runc_times = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        runc_run(&bundle, &runc_root, i);
        runc_times.push(t.elapsed());
    }
    // Warm the image pull and the rootfs first.
    let exec_query = |i: usize| {
        query_body(&format!(
            r#"{{ container {{ from(address: "{image}") {{ withEnvVariable(name: "RUN", value: "{i}-{}") {{ withExec(args: ["true"]) {{ sync }} }} }} }} }}"#,
            std::process::id()
        ))
    };
    rt.block_on(post(
        &mut engine_conn,
        Some(&metadata),
        &exec_query(usize::MAX),
    ));
    let phases_before = engine.metrics();
    let mut exec_times = Vec::new();
    for i in 0..runs {
        let body = exec_query(i);
        let t = Instant::now();
        let answer = rt.block_on(post(&mut engine_conn, Some(&metadata), &body));
        exec_times.push(t.elapsed());
        assert!(
            answer.starts_with(b"{\"data\""),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let (p10, p90) = quantiles(&exec_times);
    let (runc_med, exec_med) = (median(runc_times), median(exec_times));
    println!(
        "withExec([\"true\"]) uncached (default runtime: dagr-launcher): engine median {exec_med:?} (p10 {p10:?}, p90 {p90:?}), runc run of a bare bundle median {runc_med:?}, ratio {:.2}x (goal: <= 10 ms)",
        exec_med.as_secs_f64() / runc_med.as_secs_f64()
    );
    print_exec_phases(&phases_before, &engine.metrics(), exec_med);

    // 2b. The same on an engine whose containers run on runc (the main engine runs them on
    // dagr-launcher, built beside it by `cargo xtask bench`).
    let launcher = Path::new(env!("CARGO_BIN_EXE_dagr-engine")).with_file_name("dagr-launcher");
    if !launcher.is_file() {
        println!(
            "dagr-launcher not built beside the engine (run `cargo xtask bench`): the main engine ran on runc"
        );
    }
    {
        let on_runc = dagr_testkit::EngineProcess::start(
            Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
            &["--runtime", "runc"],
        );
        let client = rt
            .block_on(dagr_client::connect(dagr_testkit::connect_options(
                &on_runc.host(),
                &std::env::temp_dir(),
            )))
            .expect("connect");
        let metadata = client.metadata().encode();
        let mut conn = rt.block_on(h2c::connect(on_runc.tcp));
        rt.block_on(post(
            &mut conn,
            Some(&metadata),
            &exec_query(usize::MAX - 1),
        ));
        let before = on_runc.metrics();
        let mut times = Vec::new();
        for i in 0..runs {
            let body = exec_query(1000 + i);
            let t = Instant::now();
            let answer = rt.block_on(post(&mut conn, Some(&metadata), &body));
            times.push(t.elapsed());
            assert!(
                answer.starts_with(b"{\"data\""),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
        let med = median(times);
        println!(
            "withExec([\"true\"]) uncached on an engine with --runtime runc: median {med:?} ({:.2}x runc run; the default engine is {:.2}x this)",
            med.as_secs_f64() / runc_med.as_secs_f64(),
            exec_med.as_secs_f64() / med.as_secs_f64()
        );
        print_exec_phases(&before, &on_runc.metrics(), med);
        rt.block_on(client.close()).ok();
    }

    // 3. A 3-step graph cold and cached (and buildah when installed).
    let three = |tag: &str| {
        query_body(&format!(
            r#"{{ container {{ from(address: "{image}") {{ withEnvVariable(name: "T", value: "{tag}") {{ withExec(args: ["sh", "-c", "echo a > /a"]) {{ withExec(args: ["sh", "-c", "cat /a > /b"]) {{ withExec(args: ["cat", "/b"]) {{ stdout }} }} }} }} }} }} }}"#
        ))
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for i in 0..5 {
        let body = three(&format!("{}-{i}", std::process::id()));
        let t = Instant::now();
        rt.block_on(post(&mut engine_conn, Some(&metadata), &body));
        cold.push(t.elapsed());
        let t = Instant::now();
        rt.block_on(post(&mut engine_conn, Some(&metadata), &body));
        warm.push(t.elapsed());
    }
    let (cold, warm) = (median(cold), median(warm));
    println!("3-step graph: cold median {cold:?}, cached median {warm:?}");
    if Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        buildah_compare(tmp.path(), image, cold, warm);
    } else {
        println!("3-step graph vs buildah: buildah is not installed; no comparison");
    }
    docker_build_compare(tmp.path(), image, cold, warm);
    // 4. `{version}` from inside a nested exec vs from the host, with the same client (busybox
    // wget in a shell loop) on both sides.
    nested_round_trip(&rt, &engine, &metadata, image);
    rt.block_on(client.close()).expect("close");

    // 5. Keystroke echo through a terminal vs through runc on a host pty.
    terminal_echo(&rt, &engine, image, tmp.path());

    // 6. The official Python SDK running a 3-step pipeline, cold and warm, end to end.
    python_sdk(&engine, image);
}

/// A shell loop of `n` busybox-wget `{version}` round trips printing its start and end times in
/// centiseconds (`/proc/uptime`: busybox `date` has no `%N`); `bb` prefixes applets (`busybox `
/// on the host, empty in the busybox image).
/// The mean of each exec phase over the runs between two `/metrics` readings, and what is left
/// of the end-to-end median (GraphQL, solver, index, HTTP).
/// The 10th and 90th percentiles of `times`.
fn quantiles(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.1), at(0.9))
}

fn print_exec_phases(before: &str, after: &str, end_to_end: Duration) {
    let delta = |name: &str| {
        let at = |text: &str| dagr_testkit::metric(text, name).unwrap_or(0);
        at(after).saturating_sub(at(before))
    };
    let runs = delta("dagr_exec_phase_runs_total").max(1);
    let mut line = String::from("uncached exec phases (mean):");
    let mut accounted = 0;
    for phase in [
        "mount", "bundle", "prestart", "cgroup", "spec", "runtime", "cleanup", "commit",
    ] {
        let us = delta(&format!("dagr_exec_{phase}_microseconds_total")) / runs;
        accounted += us;
        line.push_str(&format!(" {phase} {:.2} ms,", us as f64 / 1000.0));
    }
    let writes = delta("dagr_index_writes_total").max(1);
    let index_us = delta("dagr_index_write_microseconds_total") / writes;
    accounted += index_us;
    let rest = (end_to_end.as_micros() as u64).saturating_sub(accounted);
    println!(
        "{line} index write {:.2} ms, the rest (query, solver, HTTP) {:.2} ms",
        index_us as f64 / 1000.0,
        rest as f64 / 1000.0
    );
}

fn wget_loop(n: usize, url: &str, header: &str, bb: &str, tmp: &str) -> String {
    format!(
        "echo '{{\"query\":\"{{version}}\"}}' > {tmp}/q.json; \
         s=$({bb}cut -d' ' -f1 /proc/uptime | {bb}tr -d .); i=0; \
         while [ $i -lt {n} ]; do {bb}wget -q -O /dev/null --header \"{header}\" --post-file {tmp}/q.json {url} || exit 1; \
         i=$((i+1)); done; e=$({bb}cut -d' ' -f1 /proc/uptime | {bb}tr -d .); echo $s $e"
    )
}

fn nested_round_trip(
    rt: &tokio::runtime::Runtime,
    engine: &dagr_testkit::EngineProcess,
    metadata: &str,
    image: &str,
) {
    const N: usize = 1000;
    let inside = wget_loop(
        N,
        "http://127.0.0.1:$DAGGER_SESSION_PORT/query",
        "Authorization: Basic $(echo -n $DAGGER_SESSION_TOKEN: | base64)",
        "",
        "/tmp",
    );
    let query = query_body(&format!(
        r#"{{ container {{ from(address: "{image}") {{ withEnvVariable(name: "RUN", value: "{}") {{ withExec(args: ["sh", "-c", {}], experimentalPrivilegedNesting: true) {{ stdout }} }} }} }} }}"#,
        std::process::id(),
        serde_json::json!(inside)
    ));
    let answer = rt.block_on(async {
        let mut conn = h2c::connect(engine.tcp).await;
        post(&mut conn, Some(metadata), &query).await
    });
    let v: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    // `start end` in centiseconds -> mean microseconds per round trip.
    let mean_us = |out: &str| -> Option<u64> {
        let mut it = out.split_whitespace().map(|t| t.parse::<u64>().ok());
        let (start, end) = (it.next()??, it.next()??);
        Some(end.saturating_sub(start) * 10_000 / N as u64)
    };
    let nested_us = v["data"]["container"]["from"]["withEnvVariable"]["withExec"]["stdout"]
        .as_str()
        .and_then(mean_us)
        .unwrap_or_else(|| panic!("nested loop failed: {v}"));
    let tmp = tempfile::tempdir().expect("tmp");
    let host = wget_loop(
        N,
        &format!("http://{}/query", engine.tcp),
        &format!("X-Dagger-Client-Metadata: {metadata}"),
        "busybox ",
        &tmp.path().display().to_string(),
    );
    let out = Command::new("busybox")
        .args(["sh", "-c", &host])
        .output()
        .expect("busybox sh");
    let host_us = mean_us(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|| panic!("host loop failed: {}", String::from_utf8_lossy(&out.stderr)));
    println!(
        "nested {{version}} round trip (busybox wget, {N} runs): inside a nested exec {nested_us} us, \
         from the host {host_us} us, ratio {:.2}x",
        nested_us as f64 / host_us.max(1) as f64
    );
}

/// Keystrokes timed per terminal.
const KEYS: usize = 500;

/// What both sides run: `cat` on the terminal, whose line discipline echoes every key.
const ECHO_CMD: [&str; 3] = ["sh", "-c", "echo ready; exec cat"];

/// A user terminal that waits for `ready`, types `KEYS` keys one at a time (each timed until its
/// echo is back), then ends `cat` (^U ^D) and reports the times.
#[derive(Debug)]
struct EchoProbe {
    times: std::sync::mpsc::Sender<Vec<Duration>>,
}

impl dagr_attach::TerminalProvider for EchoProbe {
    fn open(
        &self,
        mut output: tokio::sync::mpsc::Receiver<dagr_attach::TerminalOutput>,
    ) -> std::io::Result<tokio::sync::mpsc::Receiver<dagr_attach::TerminalInput>> {
        use dagr_attach::{TerminalInput, TerminalOutput};
        let (input, input_rx) = tokio::sync::mpsc::channel(8);
        input
            .try_send(TerminalInput::Resize { cols: 80, rows: 24 })
            .map_err(std::io::Error::other)?;
        let times = self.times.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !seen.windows(5).any(|w| w == b"ready") {
                match output.recv().await {
                    Some(TerminalOutput::Data(b)) => seen.extend_from_slice(&b),
                    _ => return,
                }
            }
            let mut measured = Vec::with_capacity(KEYS);
            for _ in 0..KEYS {
                let t = Instant::now();
                if input
                    .send(TerminalInput::Data(Bytes::from_static(b"a")))
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    match output.recv().await {
                        Some(TerminalOutput::Data(b)) if b.contains(&b'a') => break,
                        Some(TerminalOutput::Data(_)) => {}
                        _ => return,
                    }
                }
                measured.push(t.elapsed());
            }
            // ^U clears the typed line, ^D ends cat's input.
            let _ = input
                .send(TerminalInput::Data(Bytes::from_static(b"\x15\x04")))
                .await;
            while let Some(item) = output.recv().await {
                if matches!(item, TerminalOutput::Exit { .. }) {
                    break;
                }
            }
            let _ = times.send(measured);
        });
        Ok(input_rx)
    }
}

/// Median time for a key to echo through `runc run` of [`ECHO_CMD`] on a host pty (runc copies
/// between the pty and the container's console, as under the engine).
fn runc_terminal_echo(dir: &Path) -> Duration {
    use rustix::pty::OpenptFlags;
    let dir = &dir.join("terminal");
    let bundle = runc_bundle(dir);
    for applet in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin").join(applet))
            .expect("link");
    }
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    spec["process"]["terminal"] = serde_json::Value::Bool(true);
    spec["process"]["args"] = serde_json::json!(ECHO_CMD);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    std::fs::write(&path, serde_json::to_vec(&spec).expect("json")).expect("write");
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).expect("openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags).expect("pty peer");
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("window size");
    let mut child = Command::new("runc")
        .arg("--root")
        .arg(dir.join("runc-terminal-root"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("bench-terminal")
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave)
        .spawn()
        .expect("runc run");
    let mut master = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(5).any(|w| w == b"ready") {
        let n = std::io::Read::read(&mut master, &mut buf).expect("read the pty");
        seen.extend_from_slice(&buf[..n]);
    }
    let mut times = Vec::with_capacity(KEYS);
    for _ in 0..KEYS {
        let t = Instant::now();
        std::io::Write::write_all(&mut master, b"a").expect("type");
        loop {
            let n = std::io::Read::read(&mut master, &mut buf).expect("read the pty");
            if buf[..n].contains(&b'a') {
                break;
            }
        }
        times.push(t.elapsed());
    }
    std::io::Write::write_all(&mut master, b"\x15\x04").expect("end cat");
    assert!(child.wait().expect("runc").success());
    median(times)
}

fn terminal_echo(
    rt: &tokio::runtime::Runtime,
    engine: &dagr_testkit::EngineProcess,
    image: &str,
    dir: &Path,
) {
    let runc = runc_terminal_echo(dir);
    let (times_tx, times_rx) = std::sync::mpsc::channel();
    let mut options = dagr_testkit::connect_options(&engine.host(), &std::env::temp_dir());
    options.terminal = Some(std::sync::Arc::new(EchoProbe { times: times_tx }));
    let client = rt.block_on(dagr_client::connect(options)).expect("connect");
    let answer = rt
        .block_on(client.query(serde_json::json!({
            "query": format!(
                r#"{{ container {{ from(address: "{image}") {{ terminal(cmd: {}) {{ sync }} }} }} }}"#,
                serde_json::json!(ECHO_CMD)
            )
        })))
        .expect("terminal query");
    assert!(answer.get("errors").is_none(), "{answer}");
    rt.block_on(client.close()).expect("close");
    let engine_med = median(times_rx.recv().expect("the probe's times"));
    println!(
        "terminal keystroke echo ({KEYS} keys): engine median {engine_med:?}, runc on a host pty median {runc:?}, ratio {:.2}x",
        engine_med.as_secs_f64() / runc.as_secs_f64()
    );
}

/// `dagr run -- python` of a 3-step pipeline: wall time cold (new cache keys) and warm.
fn python_sdk(engine: &dagr_testkit::EngineProcess, image: &str) {
    let dagr = Path::new(env!("CARGO_BIN_EXE_dagr-engine")).with_file_name("dagr");
    if !dagr.exists() {
        println!(
            "Python SDK pipeline: {} is not built (cargo xtask bench builds it); skipped",
            dagr.display()
        );
        return;
    }
    let python = dagr_testkit::python::venv(
        env!("CARGO_TARGET_TMPDIR"),
        "dagger-sdk-0.11.8",
        dagr_testkit::python::DAGGER_SDK_REQUIREMENTS,
    );
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("pipeline.py");
    std::fs::write(
        &script,
        format!(
            r#"import sys, anyio, dagger
from dagger import dag
async def main():
    async with dagger.connection():
        out = await (dag.container().from_("{image}")
            .with_env_variable("RUN", sys.argv[1])
            .with_exec(["sh", "-c", "echo a > /a"])
            .with_exec(["sh", "-c", "cat /a > /b"])
            .with_exec(["cat", "/b"]).stdout())
        assert out == "a\n", out
anyio.run(main)
"#
        ),
    )
    .expect("script");
    let run = |tag: &str| {
        let t = Instant::now();
        let status = Command::new(&dagr)
            .args(["run", "--"])
            .arg(&python)
            .arg(&script)
            .arg(tag)
            .env("DAGR_HOST", engine.host())
            .stdout(Stdio::null())
            .status()
            .expect("dagr run");
        assert!(status.success(), "the SDK pipeline failed");
        t.elapsed()
    };
    let tag = format!("sdk-{}", std::process::id());
    let cold = run(&tag);
    let warm = median((0..3).map(|_| run(&tag)).collect());
    println!(
        "Python SDK 3-step pipeline (dagr run -- python): cold {cold:?}, warm median {warm:?}"
    );
}

fn buildah_compare(dir: &Path, image: &str, cold: Duration, warm: Duration) {
    let ctx = dir.join("buildah-ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    let storage = dir.join("buildah-storage");
    let run = |tag: &str| {
        std::fs::write(
            ctx.join("Containerfile"),
            format!("FROM {image}\nENV T={tag}\nRUN echo a > /a\nRUN cat /a > /b\nRUN cat /b\n"),
        )
        .expect("containerfile");
        let t = Instant::now();
        let status = Command::new("buildah")
            .arg("--root")
            .arg(&storage)
            .args(["--runroot"])
            .arg(dir.join("buildah-run"))
            .args([
                "bud",
                "--layers",
                "--tls-verify=false",
                "--runtime=runc",
                "--isolation=oci",
                "-q",
                "-t",
                "bench",
            ])
            .arg(&ctx)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("buildah");
        (status.success(), t.elapsed())
    };
    let (ok_cold, b_cold) = run("cold");
    let (ok_warm, b_warm) = run("cold");
    if !(ok_cold && ok_warm) {
        println!("3-step graph vs buildah: buildah bud failed here; no comparison");
        return;
    }
    println!(
        "3-step graph vs buildah bud --layers: cold {:.1}x faster (goal >= 5x), cached {:.1}x faster (goal >= 100x)",
        b_cold.as_secs_f64() / cold.as_secs_f64(),
        b_warm.as_secs_f64() / warm.as_secs_f64()
    );
}

/// The same 3 steps as a Dockerfile built by `docker build` (BuildKit, a private dockerd):
/// medians of 5 cold builds (a new `T` each) and 5 fully cached ones.
fn docker_build_compare(dir: &Path, image: &str, cold: Duration, warm: Duration) {
    let ctx = dir.join("docker-ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {image}\nARG T\nENV T=$T\nRUN echo a > /a\nRUN cat /a > /b\nRUN cat /b\n"),
    )
    .expect("Dockerfile");
    let docker = dagr_testkit::docker::DockerDaemon::start();
    let build = |tag: &str| docker.timed_build(&ctx, "bench/three", &[format!("T={tag}")]);
    build("warm-up");
    let mut docker_cold = Vec::new();
    let mut docker_warm = Vec::new();
    for i in 0..5 {
        let tag = format!("{}-{i}", std::process::id());
        docker_cold.push(build(&tag));
        docker_warm.push(build(&tag));
    }
    let (docker_cold, docker_warm) = (median(docker_cold), median(docker_warm));
    println!(
        "3-step graph vs docker build: docker cold median {docker_cold:?}, cached {docker_warm:?}; dagr cold {:.1}x faster (goal >= 3x), cached {:.1}x faster (goal >= 20x)",
        docker_cold.as_secs_f64() / cold.as_secs_f64(),
        docker_warm.as_secs_f64() / warm.as_secs_f64()
    );
}

criterion_group! {
    name = pipeline;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(pipeline);
