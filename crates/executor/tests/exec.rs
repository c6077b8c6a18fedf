//! Integration tests with real runc (need root): run busybox containers and check output,
//! exit codes, identity, mounts, networking, cancellation and cleanup.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Fixture, sh};
use dagr_executor::{
    ExecError, ExecLimits, ExecMount, ExecMountKind, ExecSpec, LimitHit, Mount, OutputStream,
    Rootfs, RunOptions,
};
use dagr_testkit::processes_running;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn spec(args: Vec<String>) -> ExecSpec {
    ExecSpec {
        args,
        ..Default::default()
    }
}

async fn run_ok(fixture: &Fixture, spec: &ExecSpec) -> dagr_executor::ExecResult {
    fixture
        .executor
        .run(&fixture.rootfs(), spec, RunOptions::default())
        .await
        .unwrap()
}

fn stdout_of(result: &dagr_executor::ExecResult) -> String {
    String::from_utf8_lossy(&result.stdout.bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_goes_to_stdout() {
    let fixture = Fixture::new();
    let etc = fixture.rootfs.path().join("etc");
    let etc_modified = std::fs::metadata(&etc).unwrap().modified().unwrap();
    let result = run_ok(&fixture, &spec(vec!["echo".into(), "hello".into()])).await;
    assert_eq!(result.exit_code, 0);
    assert_eq!(stdout_of(&result), "hello\n");
    assert!(result.stderr.bytes.is_empty());
    assert!(!result.stdout.truncated());
    fixture.assert_clean().await;
    // Mount points the runtime needed were removed from the directory rootfs.
    assert!(!fixture.rootfs.path().join("etc/hosts").exists());
    assert!(!fixture.rootfs.path().join("etc/resolv.conf").exists());
    assert_eq!(
        std::fs::metadata(&etc).unwrap().modified().unwrap(),
        etc_modified
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_of_the_engine_never_reach_the_container() {
    let fixture = Fixture::new();
    // A descriptor without close-on-exec in this process: the runtime inherits it; the
    // container's process must not.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let result = run_ok(&fixture, &spec(vec!["ls".into(), "/proc/self/fd".into()])).await;
    // SAFETY: closing the two descriptors made above.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    // stdio, and the directory `ls` reads.
    assert_eq!(stdout_of(&result), "0\n1\n2\n3\n");
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_is_failed_with_output() {
    let fixture = Fixture::new();
    let err = fixture
        .run_err(&spec(sh("echo out; echo err >&2; exit 3")))
        .await;
    assert_eq!(
        err.to_string(),
        "process \"sh -c echo out; echo err >&2; exit 3\" did not complete successfully: exit code: 3"
    );
    match err {
        ExecError::Failed {
            exit_code,
            stdout,
            stderr,
            ..
        } => {
            assert_eq!(exit_code, 3);
            assert_eq!(&stdout[..], b"out\n");
            assert_eq!(&stderr[..], b"err\n");
        }
        other => panic!("unexpected error: {other}"),
    }
    let err = fixture.run_err(&spec(vec!["false".into()])).await;
    assert!(
        matches!(err, ExecError::Failed { exit_code: 1, .. }),
        "{err}"
    );
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_is_captured_separately() {
    let fixture = Fixture::new();
    let result = run_ok(&fixture, &spec(sh("echo to-err >&2"))).await;
    assert!(result.stdout.bytes.is_empty());
    assert_eq!(&result.stderr.bytes[..], b"to-err\n");
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_executable_is_a_start_error() {
    let fixture = Fixture::new();
    let err = fixture.run_err(&spec(vec!["/no/such/binary".into()])).await;
    match &err {
        ExecError::Start { message, .. } => {
            assert!(message.contains("/no/such/binary"), "{message}")
        }
        other => panic!("unexpected error: {other}"),
    }
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_workdir_user_and_hostname_apply() {
    let fixture = Fixture::new();
    let exec = ExecSpec {
        args: sh("echo $FOO; pwd; id -u; id -g; id -G; hostname; echo $PATH"),
        env: vec!["FOO=bar baz".into()],
        workdir: "/tmp".into(),
        user: "app".into(),
        hostname: "box".into(),
        ..Default::default()
    };
    let result = run_ok(&fixture, &exec).await;
    let out = stdout_of(&result);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "bar baz",
            "/tmp",
            "1000",
            "1000",
            "1000 10",
            "box",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );

    let numeric = ExecSpec {
        args: vec!["id".into()],
        user: "4242:77".into(),
        ..Default::default()
    };
    let result = run_ok(&fixture, &numeric).await;
    assert!(
        stdout_of(&result).starts_with("uid=4242 gid=77"),
        "{}",
        stdout_of(&result)
    );

    let unknown = ExecSpec {
        args: vec!["true".into()],
        user: "nobody-here".into(),
        ..Default::default()
    };
    let err = fixture
        .executor
        .run(&fixture.rootfs(), &unknown, RunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::User { .. }), "{err}");
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_fed_and_closed() {
    let fixture = Fixture::new();
    let exec = ExecSpec {
        args: vec!["cat".into()],
        stdin: Some(Bytes::from_static(b"line one\nline two\n")),
        ..Default::default()
    };
    let result = run_ok(&fixture, &exec).await;
    assert_eq!(stdout_of(&result), "line one\nline two\n");
    // Without stdin, reading gets end of file at once.
    let result = run_ok(&fixture, &spec(vec!["cat".into()])).await;
    assert!(result.stdout.bytes.is_empty());
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_up_and_usable() {
    let fixture = Fixture::new();
    let result = run_ok(
        &fixture,
        &spec(sh(
            "cat /sys/class/net/lo/flags; ip -o addr show lo; ls /sys/class/net",
        )),
    )
    .await;
    let out = stdout_of(&result);
    let mut lines = out.lines();
    let flags = u32::from_str_radix(lines.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP not set: {out}");
    assert!(out.contains("inet 127.0.0.1/8"), "{out}");
    // Only loopback: the container is isolated from the host's interfaces.
    assert_eq!(out.lines().last(), Some("lo"), "{out}");

    // A TCP round trip over loopback inside the container: busybox httpd serves a file and
    // wget fetches it once the server's socket is in LISTEN state (port 8123 is 0x1FBB; tcp6
    // too, when it binds there): it waits for the listener itself, not for time. (busybox nc
    // was the server before: with /dev/null as its stdin it could quit before reading what
    // the client sent, a few times in a hundred under load.)
    let result = run_ok(
        &fixture,
        &spec(sh("mkdir -p /tmp/www && echo ping > /tmp/www/ping; \
             httpd -f -p 127.0.0.1:8123 -h /tmp/www & \
             until grep -qs ':1FBB [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6; do usleep 1000; done; \
             wget -q -O- http://127.0.0.1:8123/ping; kill $!; wait; rm -r /tmp/www")),
    )
    .await;
    assert_eq!(stdout_of(&result), "ping\n");
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mounts_read_only_and_read_write() {
    let fixture = Fixture::new();
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("file"), "original").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let exec = ExecSpec {
        args: sh("cat /ro/file; echo new > /rw/out; if echo x > /ro/file; then echo WROTE; fi"),
        mounts: vec![
            ExecMount {
                dest: "/ro".into(),
                kind: ExecMountKind::Bind {
                    source: ro.path().to_path_buf(),
                    readonly: true,
                },
            },
            ExecMount {
                dest: "/rw".into(),
                kind: ExecMountKind::Bind {
                    source: rw.path().to_path_buf(),
                    readonly: false,
                },
            },
        ],
        ..Default::default()
    };
    let result = run_ok(&fixture, &exec).await;
    assert_eq!(stdout_of(&result), "original");
    assert!(
        String::from_utf8_lossy(&result.stderr.bytes).contains("Read-only file system"),
        "{:?}",
        result.stderr
    );
    assert_eq!(
        std::fs::read_to_string(ro.path().join("file")).unwrap(),
        "original"
    );
    assert_eq!(
        std::fs::read_to_string(rw.path().join("out")).unwrap(),
        "new\n"
    );
    // The mount points created for the run are gone from the rootfs.
    assert!(!fixture.rootfs.path().join("ro").exists());
    assert!(!fixture.rootfs.path().join("rw").exists());
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_mount_is_a_tmpfs_and_leaves_nothing() {
    let fixture = Fixture::new();
    let exec = ExecSpec {
        args: sh("grep ' /scratch ' /proc/mounts; echo data > /scratch/f; cat /scratch/f"),
        mounts: vec![ExecMount {
            dest: "/scratch".into(),
            kind: ExecMountKind::Tmpfs {
                size: Some(4 << 20),
            },
        }],
        ..Default::default()
    };
    let result = run_ok(&fixture, &exec).await;
    let out = stdout_of(&result);
    assert!(out.starts_with("tmpfs /scratch tmpfs"), "{out}");
    assert!(out.contains("size=4096k"), "{out}");
    assert!(out.ends_with("data\n"), "{out}");
    assert!(!fixture.rootfs.path().join("scratch").exists());
    fixture.assert_clean().await;
}

fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if tree_contains(&entry.path(), needle) {
                return true;
            }
        } else if kind.is_file() {
            let content = std::fs::read(entry.path()).unwrap();
            if content.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_is_visible_inside_and_never_in_the_rootfs() {
    let fixture = Fixture::new();
    let secret = b"s3cr3t-value-8d1f";
    let exec = ExecSpec {
        args: sh(
            "cat /run/secrets/token; echo; stat -c '%a %u %g' /run/secrets/token; \
             grep ' /run/secrets/token ' /proc/mounts | cut -d' ' -f3",
        ),
        mounts: vec![ExecMount {
            dest: "/run/secrets/token".into(),
            kind: ExecMountKind::Secret {
                bytes: Bytes::from_static(secret),
                mode: 0o400,
                uid: 1000,
                gid: 1000,
            },
        }],
        ..Default::default()
    };
    let result = run_ok(&fixture, &exec).await;
    assert_eq!(
        stdout_of(&result),
        "s3cr3t-value-8d1f\n400 1000 1000\ntmpfs\n"
    );
    assert!(!fixture.rootfs.path().join("run").exists());
    assert!(!tree_contains(fixture.rootfs.path(), secret));
    assert!(!tree_contains(fixture.state.path(), secret));
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_and_streamed() {
    let fixture = Fixture::with_config(|c| c.output_cap = 1000);
    let (tx, mut rx) = mpsc::channel::<dagr_executor::OutputChunk>(1024);
    let collector = tokio::spawn(async move {
        let mut stdout = 0usize;
        let mut stderr = Vec::new();
        while let Some(chunk) = rx.recv().await {
            match chunk.stream {
                OutputStream::Stdout => stdout += chunk.bytes.len(),
                OutputStream::Stderr => stderr.extend_from_slice(&chunk.bytes),
            }
        }
        (stdout, stderr)
    });
    let result = fixture
        .executor
        .run(
            &fixture.rootfs(),
            &spec(sh("yes | head -c 100000; echo done >&2")),
            RunOptions {
                output_sink: Some(tx),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(result.stdout.bytes.len(), 1000);
    assert_eq!(result.stdout.total_len, 100_000);
    assert!(result.stdout.truncated());
    assert!(
        result
            .stdout
            .bytes
            .iter()
            .all(|b| *b == b'y' || *b == b'\n')
    );
    assert!(!result.stderr.truncated());
    let (streamed_stdout, streamed_stderr) = collector.await.unwrap();
    assert_eq!(streamed_stdout, 100_000);
    assert_eq!(streamed_stderr, b"done\n");
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_rootfs_works_and_writes_go_to_the_upper_dir() {
    let fixture = Fixture::new();
    let layers = tempfile::tempdir().unwrap();
    let upper = layers.path().join("upper");
    let work = layers.path().join("work");
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let rootfs = Rootfs::Mounts(vec![Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            format!("lowerdir={}", fixture.rootfs.path().display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    }]);
    let exec = ExecSpec {
        args: sh(
            "echo layer > /created; cat /created; grep '^overlay / ' /proc/mounts | cut -d' ' -f1",
        ),
        mounts: vec![ExecMount {
            dest: "/cache".into(),
            kind: ExecMountKind::Tmpfs { size: None },
        }],
        ..Default::default()
    };
    let result = fixture
        .executor
        .run(&rootfs, &exec, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(stdout_of(&result), "layer\noverlay\n");
    assert_eq!(
        std::fs::read_to_string(upper.join("created")).unwrap(),
        "layer\n"
    );
    assert!(!fixture.rootfs.path().join("created").exists());
    // Mount points created for the run do not end up in the layer.
    // Overlay copied `/etc` up when `/etc/hosts` was created; the stub is gone and the
    // directory's times are those of the lower one again.
    let mut upper_entries: Vec<String> = std::fs::read_dir(&upper)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    upper_entries.sort();
    assert_eq!(upper_entries, ["created", "etc"]);
    assert_eq!(std::fs::read_dir(upper.join("etc")).unwrap().count(), 0);
    let lower_etc = std::fs::metadata(fixture.rootfs.path().join("etc")).unwrap();
    let upper_etc = std::fs::metadata(upper.join("etc")).unwrap();
    assert_eq!(lower_etc.modified().unwrap(), upper_etc.modified().unwrap());
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_mount_is_mounted_and_bound_read_only() {
    let fixture = Fixture::new();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello.txt"), "from snapshot").unwrap();
    let exec = ExecSpec {
        args: sh("cat /data/hello.txt; touch /data/x 2>/dev/null || echo ' ro'"),
        mounts: vec![ExecMount {
            dest: "/data".into(),
            kind: ExecMountKind::Snapshot {
                mounts: vec![Mount {
                    kind: "bind".into(),
                    source: data.path().to_string_lossy().into_owned(),
                    options: vec!["rbind".into()],
                }],
                readonly: true,
            },
        }],
        ..Default::default()
    };
    let result = run_ok(&fixture, &exec).await;
    assert_eq!(stdout_of(&result), "from snapshot ro\n");
    assert!(!data.path().join("x").exists());
    fixture.assert_clean().await;
}

/// Processes whose command line is exactly `argv`.
/// Waits (hang protection only) until `path` exists.
async fn wait_for_file(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

fn started_spec(marker_dir: &Path, seconds: &str) -> ExecSpec {
    ExecSpec {
        args: sh(&format!("touch /marker/started; exec sleep {seconds}")),
        mounts: vec![ExecMount {
            dest: "/marker".into(),
            kind: ExecMountKind::Bind {
                source: marker_dir.to_path_buf(),
                readonly: false,
            },
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_token_kills_everything_and_cleans_up() {
    let fixture = Arc::new(Fixture::new());
    let marker = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let exec = started_spec(marker.path(), "1001");
    let task = {
        let fixture = fixture.clone();
        let token = token.clone();
        tokio::spawn(async move {
            fixture
                .executor
                .run(
                    &fixture.rootfs(),
                    &exec,
                    RunOptions {
                        cancel: Some(token),
                        ..Default::default()
                    },
                )
                .await
        })
    };
    wait_for_file(&marker.path().join("started")).await;
    // The marker is touched just before `exec sleep` replaces the shell.
    dagr_testkit::wait_processes(&["sleep", "1001"], true, "the exec's sleep");
    assert_eq!(processes_running(&["sleep", "1001"]).len(), 1);
    assert_eq!(fixture.executor.runtime().list_blocking().unwrap().len(), 1);
    token.cancel();
    let err = task.await.unwrap().unwrap_err();
    let ExecError::Cancelled { id } = &err else {
        panic!("unexpected error: {err}");
    };
    assert!(processes_running(&["sleep", "1001"]).is_empty());
    fixture.assert_clean().await;
    // The exec's cgroups are gone (v1 hierarchies or the v2 tree).
    for root in [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup",
    ] {
        let dir = Path::new(root).join("dagr").join(id);
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_future_kills_everything_and_cleans_up() {
    let fixture = Arc::new(Fixture::new());
    let marker = tempfile::tempdir().unwrap();
    let exec = started_spec(marker.path(), "1002");
    let task = {
        let fixture = fixture.clone();
        tokio::spawn(async move {
            fixture
                .executor
                .run(&fixture.rootfs(), &exec, RunOptions::default())
                .await
        })
    };
    wait_for_file(&marker.path().join("started")).await;
    // The marker is touched just before `exec sleep` replaces the shell.
    dagr_testkit::wait_processes(&["sleep", "1002"], true, "the exec's sleep");
    assert_eq!(processes_running(&["sleep", "1002"]).len(), 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The dropped run's cleanup runs on a thread of its own.
    fixture.executor.wait_idle().await;
    assert!(processes_running(&["sleep", "1002"]).is_empty());
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_execs_with_a_limit_of_two() {
    let fixture = Arc::new(Fixture::with_config(|c| c.max_concurrent_execs = 2));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let fixture = fixture.clone();
        tasks.spawn(async move {
            let result = fixture
                .executor
                .run(
                    &fixture.rootfs(),
                    &spec(vec!["echo".into(), format!("exec-{i}")]),
                    RunOptions::default(),
                )
                .await
                .unwrap();
            (
                i,
                String::from_utf8_lossy(&result.stdout.bytes).into_owned(),
            )
        });
    }
    let mut seen = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, out) = joined.unwrap();
        assert_eq!(out, format!("exec-{i}\n"));
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestart_hook_can_listen_inside_the_exec_network_namespace() {
    use std::io::{BufRead, BufReader, Write};

    let fixture = Fixture::new();
    let (listener_tx, listener_rx) = std::sync::mpsc::channel();
    let hook: dagr_executor::PrestartHook = Arc::new(move |ctx| {
        let listener_tx = listener_tx.clone();
        Box::pin(async move {
            // Every exec has its own namespace: a fixed port cannot clash.
            let listener = ctx
                .run_in_netns(|| std::net::TcpListener::bind("127.0.0.1:7777"))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            listener_tx
                .send((listener, ctx.pid_file))
                .map_err(|e| e.to_string())?;
            Ok(vec!["PEER_PORT=7777".to_string()])
        })
    });
    let server = std::thread::spawn(move || {
        let (listener, pid_file) = listener_rx.recv().unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        // The running process's filesystem, its mounts included, through its pid (runc
        // writes the file just after starting the process, which may have called first).
        let mut pid = String::new();
        for _ in 0..1000 {
            pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if !pid.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let in_mount = format!("/proc/{}/root/mnt/t/x", pid.trim());
        let seen = std::fs::read_to_string(in_mount).unwrap();
        stream.write_all(b"pong\n").unwrap();
        (line, seen)
    });
    let mut exec = spec(sh(
        "echo in-tmpfs > /mnt/t/x; echo hello-host | nc 127.0.0.1 $PEER_PORT",
    ));
    exec.mounts.push(ExecMount {
        dest: "/mnt/t".into(),
        kind: ExecMountKind::Tmpfs { size: None },
    });
    let result = fixture
        .executor
        .run(
            &fixture.rootfs(),
            &exec,
            RunOptions {
                prestart: Some(hook),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stdout_of(&result), "pong\n");
    assert_eq!(
        server.join().unwrap(),
        ("hello-host\n".to_owned(), "in-tmpfs\n".to_owned())
    );

    let refusing: dagr_executor::PrestartHook =
        Arc::new(|_| Box::pin(async { Err("not today".into()) }));
    let err = fixture
        .executor
        .run(
            &fixture.rootfs(),
            &spec(vec!["true".into()]),
            RunOptions {
                prestart: Some(refusing),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Prestart { .. }), "{err}");
    assert!(err.to_string().ends_with("not today"), "{err}");
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_workdir_is_created() {
    let fixture = Fixture::new();
    let exec = ExecSpec {
        args: vec!["pwd".into()],
        workdir: "/work/dir".into(),
        ..Default::default()
    };
    let result = run_ok(&fixture, &exec).await;
    assert_eq!(stdout_of(&result), "/work/dir\n");
    assert!(fixture.rootfs.path().join("work/dir").is_dir());

    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_state_of_a_lost_exec_is_removed() {
    let fixture = Fixture::new();
    let marker = tempfile::tempdir().unwrap();
    let layers = tempfile::tempdir().unwrap();
    let (upper, work) = (layers.path().join("upper"), layers.path().join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let rootfs = Rootfs::Mounts(vec![Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            format!("lowerdir={}", fixture.rootfs.path().display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    }]);
    let mut exec = started_spec(marker.path(), "1003");
    exec.mounts.push(ExecMount {
        dest: "/run/secrets/s".into(),
        kind: ExecMountKind::Secret {
            bytes: Bytes::from_static(b"x"),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
    });
    let started = marker.path().join("started");
    let mut run = Box::pin(fixture.executor.run(&rootfs, &exec, RunOptions::default()));
    tokio::select! {
        outcome = &mut run => panic!("exec ended early: {outcome:?}"),
        () = wait_for_file(&started) => {}
    }
    // Lose the exec as a crash would: no destructor runs.
    std::mem::forget(run);
    // The marker is touched just before `exec sleep` replaces the shell.
    dagr_testkit::wait_processes(&["sleep", "1003"], true, "the exec's sleep");
    assert_eq!(processes_running(&["sleep", "1003"]).len(), 1);

    let stale = fixture.executor.remove_stale_state().unwrap();
    assert_eq!(stale.containers.len(), 1);
    // rootfs overlay, secrets tmpfs, netns.
    assert_eq!(stale.mounts.len(), 3, "{stale:?}");
    // The bundle, the netns file and, on a placed launcher, its marker.
    let placed = fixture.executor.config().placed_launchers > 0;
    assert_eq!(stale.paths.len(), 2 + usize::from(placed), "{stale:?}");
    assert!(processes_running(&["sleep", "1003"]).is_empty());
    fixture.assert_nothing_left();
    // Nothing left: a second pass finds nothing.
    assert_eq!(
        fixture.executor.remove_stale_state().unwrap(),
        Default::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_die_with_the_exec() {
    let fixture = Fixture::new();
    let result = run_ok(&fixture, &spec(sh("sleep 1004 & echo started"))).await;
    assert_eq!(stdout_of(&result), "started\n");
    assert!(processes_running(&["sleep", "1004"]).is_empty());
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_runtime_binary_is_reported_with_a_hint() {
    let fixture = Fixture::new();
    let mut config = fixture.executor.config().clone();
    config.runtime_binary = "/nonexistent/runc".into();
    let executor = dagr_executor::Executor::new(config);
    let err = executor
        .run(
            &fixture.rootfs(),
            &spec(vec!["true".into()]),
            RunOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("apt-get install runc"), "{err}");
    executor.wait_idle().await;
    fixture.assert_clean().await;
}

fn terminal_options(
    size: dagr_executor::WindowSize,
) -> (
    RunOptions,
    mpsc::Sender<dagr_executor::TerminalInput>,
    mpsc::Receiver<dagr_executor::OutputChunk>,
) {
    let (input_tx, input) = mpsc::channel(16);
    let (sink, output) = mpsc::channel(64);
    let options = RunOptions {
        output_sink: Some(sink),
        terminal: Some(dagr_executor::TerminalIo { size, input }),
        ..Default::default()
    };
    (options, input_tx, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_carries_keystrokes_output_resizes_and_the_exit_code() {
    use dagr_executor::{TerminalInput, WindowSize};
    let fixture = Fixture::new();
    let (options, input, mut output) = terminal_options(WindowSize {
        cols: 100,
        rows: 30,
    });
    let rootfs = fixture.rootfs();
    let exec = spec(vec!["sh".into()]);
    let run = fixture.executor.run(&rootfs, &exec, options);
    // Like a user: wait for the prompt, resize, then type.
    let user = async move {
        let mut all = Vec::new();
        let mut typed = false;
        while let Some(chunk) = output.recv().await {
            assert_eq!(chunk.stream, OutputStream::Stdout);
            all.extend_from_slice(&chunk.bytes);
            if !typed && String::from_utf8_lossy(&all).contains("/ # ") {
                typed = true;
                let size = WindowSize {
                    cols: 120,
                    rows: 40,
                };
                input.send(TerminalInput::Resize(size)).await.unwrap();
                let line = b"tty; stty size; echo \"term=$TERM sum=$((40+2))\"; exit 3\r";
                input
                    .send(TerminalInput::Data(Bytes::from_static(line)))
                    .await
                    .unwrap();
            }
        }
        (String::from_utf8_lossy(&all).into_owned(), input)
    };
    let (outcome, (streamed, input)) = tokio::join!(run, user);
    let err = outcome.unwrap_err();
    let ExecError::Failed {
        exit_code, stdout, ..
    } = err
    else {
        panic!("expected the shell's exit code, got {err}");
    };
    assert_eq!(exit_code, 3);
    let captured = String::from_utf8_lossy(&stdout).into_owned();
    for expected in ["/dev/pts/0", "40 120", "term=xterm sum=42"] {
        assert!(captured.contains(expected), "{expected:?} in {captured:?}");
    }
    assert_eq!(streamed, captured);
    drop(input);
    fixture.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_whose_user_goes_away_is_killed_and_cleaned_up() {
    let fixture = Fixture::new();
    let (options, input, _output) = terminal_options(dagr_executor::WindowSize::default());
    let (rootfs, exec) = (fixture.rootfs(), spec(sh("sleep 1005")));
    let run = fixture.executor.run(&rootfs, &exec, options);
    let dropper = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(input);
    };
    let (outcome, ()) = tokio::join!(run, dropper);
    assert!(
        matches!(outcome, Err(ExecError::Cancelled { .. })),
        "{outcome:?}"
    );
    assert!(processes_running(&["sleep", "1005"]).is_empty());
    fixture.assert_clean().await;
}

/// Runs `spec` and tells the exec's id too (a prestart hook sees it).
async fn run_with_id(
    fixture: &Fixture,
    spec: &ExecSpec,
) -> (Result<dagr_executor::ExecResult, ExecError>, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    let hook: dagr_executor::PrestartHook = Arc::new(move |ctx| {
        let _ = tx.send(ctx.id.clone());
        Box::pin(async { Ok(Vec::new()) })
    });
    let result = fixture
        .executor
        .run(
            &fixture.rootfs(),
            spec,
            RunOptions {
                prestart: Some(hook),
                ..RunOptions::default()
            },
        )
        .await;
    (result, rx.recv().expect("the hook ran"))
}

/// The cgroup directories of exec `id` left in any hierarchy (v1 controllers or v2).
fn cgroups_of(id: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|controller| controller.path().join("dagr").join(id))
        .chain(std::iter::once(
            std::path::Path::new("/sys/fs/cgroup/dagr").join(id),
        ))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_the_pids_limit_with_a_clear_error() {
    let fixture = Fixture::with_config(|c| {
        c.limits = ExecLimits {
            pids: Some(64),
            memory_bytes: None,
        };
    });
    let (result, id) = run_with_id(
        &fixture,
        &spec(sh(
            "i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); done; exit 1",
        )),
    )
    .await;
    let err = result.unwrap_err();
    let ExecError::Failed { limit, .. } = &err else {
        panic!("expected a failed exec, got {err}");
    };
    assert_eq!(*limit, Some(LimitHit::Pids { limit: 64 }), "{err}");
    assert!(
        err.to_string()
            .contains("pids limit reached (64 processes)"),
        "{err}"
    );
    fixture.executor.wait_idle().await;
    fixture.assert_clean().await;
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_killed_at_the_memory_limit_with_a_clear_error() {
    let fixture = Fixture::with_config(|c| {
        c.limits = ExecLimits {
            pids: Some(64),
            memory_bytes: Some(32 << 20),
        };
    });
    // busybox tail keeps the last lines of /dev/zero: one line that never ends.
    let (result, id) = run_with_id(&fixture, &spec(sh("tail /dev/zero"))).await;
    let err = result.unwrap_err();
    let ExecError::Failed {
        limit, exit_code, ..
    } = &err
    else {
        panic!("expected a failed exec, got {err}");
    };
    assert_eq!(
        *limit,
        Some(LimitHit::Memory {
            limit_bytes: 32 << 20
        }),
        "{err}"
    );
    assert_eq!(*exit_code, 137, "{err}");
    assert!(err.to_string().contains("killed: out of memory"), "{err}");
    // Within the limits, nothing is reported; every cgroup goes away.
    let (ok, ok_id) = run_with_id(&fixture, &spec(sh("echo fine"))).await;
    assert_eq!(stdout_of(&ok.unwrap()), "fine\n");
    fixture.executor.wait_idle().await;
    fixture.assert_clean().await;
    for id in [id, ok_id] {
        assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launchers_placed_ahead_run_execs_in_their_cgroups_and_leave_nothing() {
    let fixture = Fixture::with_config(|c| {
        c.limits = ExecLimits {
            pids: Some(64),
            memory_bytes: None,
        };
    });
    // dagr-launcher runs execs on launchers placed ahead; runc never does.
    let placed = fixture.executor.config().placed_launchers > 0;
    let mut ids = Vec::new();
    for i in 0..3 {
        let result = run_ok(
            &fixture,
            &spec(sh(&format!("echo run {i}; cat /proc/self/cgroup"))),
        )
        .await;
        assert_eq!(result.placed_launcher, placed, "run {i}");
        let out = stdout_of(&result);
        assert!(out.starts_with(&format!("run {i}\n")), "{out}");
        // The process is in its exec's cgroup (the one with the limits, or a child of it).
        let pids_line = out
            .lines()
            .find(|l| l.contains(":pids:") || l.starts_with("0::"))
            .unwrap_or_else(|| panic!("no pids cgroup in {out}"));
        assert!(
            pids_line.contains(&result.id),
            "{pids_line} (exec {})",
            result.id
        );
        ids.push(result.id);
    }
    // A failed start on a placed launcher is the same clear error.
    let err = fixture.run_err(&spec(vec!["no-such-program".into()])).await;
    assert!(err.to_string().contains("no-such-program"), "{err}");
    // Launchers wait for the next execs (started in the background once an exec's container
    // has ended), each with its cgroup and marker...
    let markers = fixture.state.path().join("placed");
    let list_markers = || -> Vec<String> {
        std::fs::read_dir(&markers)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let expected = if placed { 2 } else { 0 };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let waiting = list_markers();
        let complete = waiting.iter().all(|id| !cgroups_of(id).is_empty());
        if (waiting.len() == expected && complete) || std::time::Instant::now() > deadline {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(waiting.len(), expected, "{waiting:?}");
    for id in &waiting {
        assert!(
            !cgroups_of(id).is_empty(),
            "no cgroup for placed launcher {id}"
        );
    }
    // ...and go, with them, once the executor is idle.
    fixture.assert_clean().await;
    for id in ids.iter().chain(&waiting) {
        assert!(cgroups_of(id).is_empty(), "{:?}", cgroups_of(id));
    }
    assert!(!markers.exists() || std::fs::read_dir(&markers).unwrap().next().is_none());
    // No launcher of this executor is left waiting.
    let state = fixture.state.path().to_string_lossy().into_owned();
    let waiting_launchers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("--wait-in-cgroup") && c.contains(&state))
        .collect();
    assert!(waiting_launchers.is_empty(), "{waiting_launchers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_that_cannot_be_placed_falls_back_to_a_usual_start() {
    // A runtime that refuses `--wait-in-cgroup` (as a launcher that cannot join its cgroups
    // does: it exits with its error before announcing its placement).
    let wrapper_dir = tempfile::tempdir().unwrap();
    let wrapper = wrapper_dir.path().join("refuses-placing");
    let fixture = Fixture::with_config(|c| {
        let script = format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --wait-in-cgroup ] && {{ echo 'cannot place' >&2; exit 1; }}; done\nexec {} \"$@\"\n",
            c.runtime_binary.display()
        );
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        c.runtime_binary = wrapper.clone();
        c.limits = ExecLimits {
            pids: Some(64),
            memory_bytes: None,
        };
    });
    for i in 0..3 {
        let result = run_ok(&fixture, &spec(sh(&format!("echo run {i}")))).await;
        assert_eq!(stdout_of(&result), format!("run {i}\n"));
        assert!(!result.placed_launcher, "run {i} claims a placed launcher");
    }
    // A failing command is still its own failure, not the launcher's.
    let err = fixture.run_err(&spec(sh("exit 3"))).await;
    assert!(
        matches!(err, ExecError::Failed { exit_code: 3, .. }),
        "{err}"
    );
    fixture.assert_clean().await;
    let markers = fixture.state.path().join("placed");
    assert!(!markers.exists() || std::fs::read_dir(&markers).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_marker_stays_while_its_cgroup_holds_a_process() {
    let fixture = Fixture::new();
    // A dead engine's placed launcher whose cgroup still holds a process.
    let id = format!("dagr-stale{:08x}", std::process::id());
    let marker = fixture.state.path().join("placed").join(&id);
    std::fs::create_dir_all(&marker).unwrap();
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup/dagr").join(&id)
    } else {
        Path::new("/sys/fs/cgroup/pids/dagr").join(&id)
    };
    std::fs::create_dir_all(&cgroup).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("1006")
        .spawn()
        .unwrap();
    std::fs::write(cgroup.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    // The sweep cannot remove the cgroup: the marker stays for the next one.
    let stale = fixture.executor.remove_stale_state().unwrap();
    assert!(marker.exists(), "{stale:?}");
    assert!(cgroup.exists());
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    // Once the process is gone, the next sweep removes both.
    let stale = fixture.executor.remove_stale_state().unwrap();
    assert!(!marker.exists(), "{stale:?}");
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
    fixture.assert_clean().await;
}
