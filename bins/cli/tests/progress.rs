//! `dagr --progress`: the steps of a run on stderr while stdout stays the program's. Plain mode
//! is read from a pipe; the live tree from a real terminal (tmux).

mod common;

use common::{Tmux, dagr, engine_bin};
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use dagr_testkit::EngineProcess;
use serde_json::{Value, json};

struct Run {
    engine: EngineProcess,
    work: tempfile::TempDir,
    image: String,
    nonce: String,
}

impl Run {
    fn start() -> Run {
        let image =
            dagr_testkit::registry(concat!(env!("CARGO_TARGET_TMPDIR"), "/dagr-cli-progress"))
                .image
                .clone();
        Run {
            engine: EngineProcess::start(&engine_bin(), &[]),
            work: tempfile::tempdir().expect("work dir"),
            image,
            nonce: hex::encode(rand::random::<[u8; 6]>()),
        }
    }

    /// A query running each script of `scripts` as a chained `withExec(["sh", "-c", script])`,
    /// then `stdout`.
    fn pipeline(&self, scripts: &[String]) -> String {
        let mut q = format!("{{ container {{ from(address: {}) {{ ", json!(self.image));
        for script in scripts {
            q.push_str(&format!(
                "withExec(args: {}) {{ ",
                json!(["sh", "-c", script])
            ));
        }
        q.push_str("stdout");
        for _ in scripts {
            q.push_str(" }");
        }
        q.push_str(" } } }");
        q
    }

    fn dagr(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(dagr())
            .args(args)
            .env("DAGR_HOST", self.engine.host())
            .env_remove("DAGR_PROGRESS")
            .current_dir(self.work.path())
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
            .expect("write the query");
        child.wait_with_output().expect("dagr output")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plain_progress_has_a_line_per_step_and_output_line_and_stdout_stays_json() {
    let run = Run::start();
    let n = &run.nonce;
    let query = run.pipeline(&[format!("echo one-{n}"), format!("echo two-{n}")]);
    let first = run.dagr(&["--progress=plain", "query"], &query);
    let stderr = text(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&first.stdout).expect("stdout is the JSON alone");
    assert_eq!(
        v["container"]["from"]["withExec"]["withExec"]["stdout"],
        format!("two-{n}\n")
    );
    for word in ["one", "two"] {
        let step = format!("exec sh -c echo {word}-{n}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&step)).collect();
        assert!(
            lines.iter().any(|l| *l == format!("▶ {step}")),
            "a start line for {step}:\n{stderr}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("✔ {step} "))),
            "an end line for {step}:\n{stderr}"
        );
        assert!(
            lines.iter().any(|l| *l == format!("  {step} │ {word}-{n}")),
            "its output line:\n{stderr}"
        );
        assert_eq!(
            stderr.lines().filter(|l| *l == format!("▶ {step}")).count(),
            1,
            "one start line per step:\n{stderr}"
        );
    }
    // The summary nests the steps under the call that ran them.
    assert!(
        stderr.lines().any(|l| l.starts_with("✔ Container.stdout ")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("  ✔ exec sh -c echo two-{n} "))),
        "{stderr}"
    );

    let again = run.dagr(&["--progress=plain", "query"], &query);
    let stderr = text(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| *l == format!("● exec sh -c echo two-{n} CACHED")),
        "the second run is cached:\n{stderr}"
    );
}

#[test]
fn a_failed_step_keeps_its_whole_output_and_exit_code_in_the_summary() {
    let run = Run::start();
    let n = &run.nonce;
    let script = format!("for i in 1 2 3 4 5 6 7 8; do echo line-$i-{n}; done; exit 3");
    let out = run.dagr(
        &["--progress=plain", "query"],
        &run.pipeline(std::slice::from_ref(&script)),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    let summary = stderr
        .split(&format!("✘ exec sh -c {script} failed with exit code 3"))
        .nth(1)
        .unwrap_or_else(|| panic!("no summary of the failed step:\n{stderr}"));
    for i in 1..=8 {
        assert!(
            summary.contains(&format!("  │ line-{i}-{n}")),
            "line {i} kept:\n{stderr}"
        );
    }
    assert!(out.stdout.is_empty() || serde_json::from_slice::<Value>(&out.stdout).is_ok());
}

#[test]
fn quiet_progress_prints_nothing_but_the_result() {
    let run = Run::start();
    let out = run.dagr(
        &["--progress=quiet", "query"],
        &run.pipeline(&[format!("echo {}", run.nonce)]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("exec sh"),
        "{}",
        text(&out.stderr)
    );
}

/// The live tree on a terminal: the running step with a spinner and its output so far, then
/// the finished tree; the JSON goes to stdout (a file here) untouched.
#[test]
fn the_live_tree_shows_the_running_step_then_the_finished_tree() {
    let run = Run::start();
    let n = &run.nonce;
    let script = format!("echo started-{n}; sleep 4; echo finished-{n}");
    let query = run.pipeline(std::slice::from_ref(&script));
    std::fs::write(run.work.path().join("q.graphql"), &query).expect("write the query");
    let command = format!(
        "cd {} && DAGR_HOST={} {} --progress=tty query q.graphql > out.json; echo exited-$?; sleep 600",
        run.work.path().display(),
        run.engine.host(),
        dagr()
    );
    let tmux = Tmux::start(run.work.path(), &command, 160, 40);
    let step = format!("exec sh -c {script}");
    let running = tmux.wait_line("the step's output while it runs", |l| {
        l.trim_start() == format!("│ started-{n}")
    });
    assert!(
        running.lines().any(|l| {
            let l = l.trim_start();
            l.contains(&step) && !l.starts_with('✔') && l.ends_with('s')
        }),
        "the step is shown running:\n{running}"
    );
    let done = tmux.wait_line("the exit", |l| l.starts_with("exited-"));
    assert!(done.contains("exited-0"), "{done}");
    assert!(
        done.lines()
            .any(|l| l.trim_start().starts_with(&format!("✔ {step} "))),
        "the finished tree:\n{done}"
    );
    let v: Value =
        serde_json::from_slice(&std::fs::read(run.work.path().join("out.json")).expect("out.json"))
            .expect("stdout is the JSON alone");
    assert_eq!(
        v["container"]["from"]["withExec"]["stdout"],
        format!("started-{n}\nfinished-{n}\n")
    );
}

/// `dagr run` points CMD's OpenTelemetry exporter at itself: a span CMD posts (OTLP/HTTP JSON,
/// as busybox wget can) under its TRACEPARENT joins the summary.
#[test]
fn dagr_run_takes_the_spans_its_command_exports() {
    let run = Run::start();
    let n = &run.nonce;
    let script = format!(
        r#"t=$(echo $TRACEPARENT | cut -d- -f2); p=$(echo $TRACEPARENT | cut -d- -f3)
printf '{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"%s","spanId":"0102030405060708","parentSpanId":"%s","name":"from-cmd-{n}","startTimeUnixNano":"1000","endTimeUnixNano":"2000"}}]}}]}}]}}' $t $p > span.json
busybox wget -q -O /dev/null --header 'Content-Type: application/json' --post-file span.json "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT""#
    );
    let out = run.dagr(&["--progress=plain", "run", "--", "sh", "-c", &script], "");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("✔ from-cmd-{n}"))),
        "the command's span in the summary:\n{stderr}"
    );
}

/// Internal steps (resolving the image's tag) are shown only with `--debug`.
#[test]
fn internal_steps_show_with_debug_only() {
    let run = Run::start();
    let query = run.pipeline(&[format!("echo {}", run.nonce)]);
    let plain = run.dagr(&["--progress=plain", "query"], &query);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let resolve = format!("resolve {}", run.image);
    assert!(
        !text(&plain.stderr).contains(&resolve),
        "{}",
        text(&plain.stderr)
    );
    let debug = run.dagr(&["--progress=plain", "--debug", "query"], &query);
    assert!(debug.status.success(), "{}", text(&debug.stderr));
    assert!(
        text(&debug.stderr)
            .lines()
            .any(|l| l.starts_with(&format!("✔ {resolve} "))),
        "{}",
        text(&debug.stderr)
    );
}
