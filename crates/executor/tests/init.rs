//! Integration tests with real runc (need root): with an init (Debian's tini-static), it is PID 1,
//! orphans are reaped, the exit status is the process's, and a missing executable is still a
//! start error. Without an init, orphans stay zombies: what the init is for.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{Fixture, sh};
use dagr_executor::{ExecError, ExecSpec, RunOptions};

const TINI: &str = "/usr/bin/tini-static";

fn with_init() -> Fixture {
    assert!(
        std::path::Path::new(TINI).is_file(),
        "{TINI} is missing: run `cargo xtask prereqs` (Debian's tini)"
    );
    Fixture::with_config(|c| c.init = Some(PathBuf::from(TINI)))
}

fn spec(args: Vec<String>) -> ExecSpec {
    ExecSpec {
        args,
        ..Default::default()
    }
}

async fn stdout_of(fixture: &Fixture, args: Vec<String>) -> String {
    let result = fixture
        .executor
        .run(&fixture.rootfs(), &spec(args), RunOptions::default())
        .await
        .unwrap();
    String::from_utf8_lossy(&result.stdout.bytes).into_owned()
}

/// Starts 50 orphans (each a background child of a subshell that exits at once), then makes
/// the process that was PID 1 a `sleep`, which never waits for children; meanwhile a
/// background counter prints the zombies left in the container once the orphans ended.
fn zombie_factory() -> Vec<String> {
    sh(
        "for i in $(seq 1 50); do (sleep 0.05 &); done; (sleep 0.6; ps -o stat | grep -c '^Z') & exec sleep 1",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_init_is_pid_1_and_reaps_orphans() {
    let fixture = with_init();
    let cmdline = stdout_of(&fixture, sh("tr '\\0' ' ' < /proc/1/cmdline")).await;
    assert!(cmdline.starts_with("/dev/.dagr-init -- "), "{cmdline}");
    assert_eq!(stdout_of(&fixture, zombie_factory()).await.trim(), "0");
    fixture.assert_clean().await;

    let bare = Fixture::new();
    let zombies: u32 = stdout_of(&bare, zombie_factory())
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(zombies > 0, "without an init orphans stay zombies");
    bare.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_and_start_errors_are_the_processes() {
    let fixture = with_init();
    let err = fixture.run_err(&spec(sh("exit 7"))).await;
    assert!(
        matches!(err, ExecError::Failed { exit_code: 7, .. }),
        "{err}"
    );
    for (program, want) in [
        ("no-such-program", "executable file not found in $PATH"),
        ("/no/such/binary", "no such file or directory"),
        ("/etc/passwd", "permission denied"),
    ] {
        let err = fixture.run_err(&spec(vec![program.into()])).await;
        match &err {
            ExecError::Start { message, .. } => {
                assert!(
                    message.contains(program) && message.contains(want),
                    "{message}"
                )
            }
            other => panic!("{program}: unexpected error: {other}"),
        }
    }
    fixture.assert_clean().await;
}
