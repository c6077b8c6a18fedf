//! Modules end to end, from `dagr` start to exit, each against a baseline measured in the same
//! run, `dagr query '{ version }'` (a CLI start, a session and one request: the floor any
//! command pays):
//! - cached `dagr call hello` of a Python module function returning a string (goal: <= 300 ms;
//!   Dagger's figure is 1.5-1.7 s, its issue #10584);
//! - cached module load, measured by `dagr functions` (goal: <= 200 ms; Dagger: 0.4-0.5 s);
//! - a cold call with the runtime's base image present (a module source never seen, so the
//!   runtime is built and the registration runs): the figure, and its phases, from the timings
//!   of a cold `dagr functions` (runtime build + registration) and a first call afterwards.
//!
//! The runtime is the official Python SDK 0.11.8 in Debian's Python, offline, as in
//! `tests/modules.rs`. Needs root, runc, docker-registry, skopeo, python3-venv and, once, PyPI
//! on the host for the wheelhouse (`cargo xtask bench` installs the rest).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dagr_testkit::EngineProcess;
use dagr_testkit::h2c::median;

const CODE: &str = r#"
from dagger import function, object_type


@object_type
class Bench:
    @function
    def hello(self, name: str = "world") -> str:
        return f"hello, {name}! NONCE"
"#;

fn dagr() -> &'static str {
    env!("CARGO_BIN_EXE_dagr")
}

/// Runs `dagr ARGS` in `dir`; its duration.
fn timed(engine: &EngineProcess, dir: &Path, args: &[&str], stdin: &str) -> Duration {
    use std::io::Write as _;
    let t = Instant::now();
    let mut child = Command::new(dagr())
        .args(["--host", &engine.host(), "--progress", "quiet"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dagr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("dagr");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "dagr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// A module named `bench` in `parent/name`, its code marked with `nonce`.
fn module(
    engine: &EngineProcess,
    parent: &Path,
    name: &str,
    nonce: &str,
    base: &str,
) -> std::path::PathBuf {
    timed(
        engine,
        parent,
        &["init", "--sdk=python", "--name", "bench", name],
        "",
    );
    let dir = parent.join(name);
    std::fs::write(
        dir.join("src/main/__init__.py"),
        CODE.replace("NONCE", nonce),
    )
    .expect("code");
    let pyproject = dir.join("pyproject.toml");
    let mut toml = std::fs::read_to_string(&pyproject).expect("pyproject");
    toml.push_str(&format!("\n[tool.dagger]\nbase-image = \"{base}\"\n"));
    std::fs::write(&pyproject, toml).expect("pyproject");
    dir
}

/// The slowest finished steps of a cold module load, from `--progress plain` (`✔ NAME 1.2s`).
fn cold_phases(engine: &EngineProcess, dir: &Path) -> Vec<(f64, String)> {
    let out = Command::new(dagr())
        .args(["--host", &engine.host(), "--progress", "plain", "functions"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("dagr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut steps: Vec<(f64, String)> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("✔ "))
        .filter_map(|l| {
            let (name, secs) = l.rsplit_once(' ')?;
            Some((secs.strip_suffix('s')?.parse().ok()?, name.to_owned()))
        })
        .collect();
    steps.sort_by(|a, b| b.0.total_cmp(&a.0));
    steps.retain(|(secs, _)| *secs >= 0.1);
    steps
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let engine = EngineProcess::start(
        &Path::new(dagr()).with_file_name("dagr-engine"),
        &["--python-find-links", "/wheels"],
    );
    let base = dagr_testkit::pyimage::module_base_image(env!("CARGO_TARGET_TMPDIR"), &engine);
    let tmp = tempfile::tempdir().expect("tmp");
    let runs = 10;

    // Baseline: a CLI start, a session and `{ version }`.
    timed(&engine, tmp.path(), &["query"], "{ version }");
    let floor = median(
        (0..runs)
            .map(|_| timed(&engine, tmp.path(), &["query"], "{ version }"))
            .collect(),
    );

    // Cold: a module never seen (the base image is in the engine's cache already).
    let mut cold_load = Vec::new();
    let mut first_call = Vec::new();
    let mut cold_call = Vec::new();
    for i in 0..3 {
        let dir = module(
            &engine,
            tmp.path(),
            &format!("cold-load-{i}"),
            &format!("load-{i}-{}", std::process::id()),
            &base,
        );
        cold_load.push(timed(&engine, &dir, &["functions"], ""));
        first_call.push(timed(&engine, &dir, &["call", "hello"], ""));
        let dir = module(
            &engine,
            tmp.path(),
            &format!("cold-call-{i}"),
            &format!("call-{i}-{}", std::process::id()),
            &base,
        );
        cold_call.push(timed(&engine, &dir, &["call", "hello"], ""));
    }

    let dir = module(
        &engine,
        tmp.path(),
        "phases",
        &format!("phases-{}", std::process::id()),
        &base,
    );
    let phases = cold_phases(&engine, &dir);

    // Cached: the same module again and again.
    let dir = module(&engine, tmp.path(), "cached", "cached", &base);
    timed(&engine, &dir, &["call", "hello"], "");
    let call = median(
        (0..runs)
            .map(|_| timed(&engine, &dir, &["call", "hello"], ""))
            .collect(),
    );
    let functions = median(
        (0..runs)
            .map(|_| timed(&engine, &dir, &["functions"], ""))
            .collect(),
    );

    let cold_call = median(cold_call);
    let cold_load = median(cold_load);
    let first_call = median(first_call);
    println!(
        "modules (medians; baseline `dagr query '{{ version }}'`: {:.1} ms)",
        ms(floor)
    );
    println!(
        "  cached dagr call:      {:7.1} ms  ({:.2}x the baseline; goal <= 300 ms)",
        ms(call),
        ms(call) / ms(floor)
    );
    println!(
        "  cached dagr functions: {:7.1} ms  ({:.2}x the baseline; goal <= 200 ms)",
        ms(functions),
        ms(functions) / ms(floor)
    );
    println!("  cold dagr call:        {:7.1} ms", ms(cold_call));
    println!(
        "    of which module load (runtime build + registration, cold dagr functions): {:.1} ms; then the first call: {:.1} ms",
        ms(cold_load),
        ms(first_call)
    );
    println!("    slowest steps of a cold load:");
    for (secs, name) in phases {
        println!(
            "      {secs:5.1} s  {}",
            name.chars().take(110).collect::<String>()
        );
    }
}
