//! Integration tests with real runc (need root): execs run under Docker's default seccomp
//! profile, and without any filter with `insecure_root_capabilities`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Fixture, sh};
use dagr_executor::{ExecError, ExecSpec, RunOptions};

fn spec(args: Vec<String>, insecure_root_capabilities: bool) -> ExecSpec {
    ExecSpec {
        args,
        insecure_root_capabilities,
        ..Default::default()
    }
}

async fn stdout_of(fixture: &Fixture, spec: &ExecSpec) -> String {
    let result = fixture
        .executor
        .run(&fixture.rootfs(), spec, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(result.exit_code, 0);
    String::from_utf8_lossy(&result.stdout.bytes).into_owned()
}

/// The `Seccomp:` mode of the exec's own process (0: none, 2: filter).
fn seccomp_mode() -> Vec<String> {
    sh("grep '^Seccomp:' /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_namespace_is_refused_by_the_filter_and_allowed_when_insecure() {
    let fixture = Fixture::new();
    // unshare(CLONE_NEWUSER) needs no capability: only the seccomp filter refuses it.
    let unshare = || vec!["unshare".into(), "-U".into(), "true".into()];

    let err = fixture
        .executor
        .run(
            &fixture.rootfs(),
            &spec(unshare(), false),
            RunOptions::default(),
        )
        .await
        .unwrap_err();
    match err {
        ExecError::Failed {
            exit_code, stderr, ..
        } => {
            assert_ne!(exit_code, 0);
            let stderr = String::from_utf8_lossy(&stderr);
            assert!(stderr.contains("Operation not permitted"), "{stderr}");
        }
        other => panic!("unexpected error: {other}"),
    }

    let result = fixture
        .executor
        .run(
            &fixture.rootfs(),
            &spec(unshare(), true),
            RunOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(result.exit_code, 0);
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execs_run_in_seccomp_filter_mode_unless_insecure() {
    let fixture = Fixture::new();
    let confined = stdout_of(&fixture, &spec(seccomp_mode(), false)).await;
    assert_eq!(
        confined.split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"]
    );
    let unconfined = stdout_of(&fixture, &spec(seccomp_mode(), true)).await;
    assert_eq!(
        unconfined.split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "0"]
    );
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_commands_still_run_under_the_filter() {
    let fixture = Fixture::new();
    // Forks, pipes, a background job, sockets, files, chroot (CAP_SYS_CHROOT is a default
    // capability) and a non-root user.
    let script = "echo start > /tmp/f; (sleep 0.1; echo bg) & wait; \
                  cat /tmp/f | tr a-z A-Z; nc -l -p 7000 -s 127.0.0.1 -w 1 & sleep 0.2; \
                  chroot / true && echo chrooted; id -u; uname -s";
    let out = stdout_of(&fixture, &spec(sh(script), false)).await;
    assert_eq!(out, "bg\nSTART\nchrooted\n0\nLinux\n");
    let user = ExecSpec {
        user: "1000".into(),
        ..spec(sh("id -u && ls / > /dev/null && echo listed"), false)
    };
    assert_eq!(stdout_of(&fixture, &user).await, "1000\nlisted\n");
    fixture.assert_clean().await;
}
