//! Cost of the executor around its runtime: an exec of `true` through [`Executor::run`] against
//! `runc run` of an equivalent, already prepared bundle; then the same bundle and the executor on
//! dagr-launcher (built beside this bench by `cargo xtask bench`), against the floor: `unshare`
//! of the same namespaces plus `chroot`. Needs root and runc.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dagr_executor::{
    ExecSpec, MAX_OPEN_FILES, NetworkNamespace, ResolvedUser, RunOptions, RuntimeSpecInput,
    build_runtime_spec,
};

fn true_spec() -> ExecSpec {
    ExecSpec {
        args: vec!["true".into()],
        hostname: "bench".into(),
        ..Default::default()
    }
}

/// A bundle for `true` built the way the executor builds one, run directly with runc.
struct PreparedBundle {
    _dir: tempfile::TempDir,
    bundle: std::path::PathBuf,
    runc_root: std::path::PathBuf,
    _netns: NetworkNamespace,
}

impl PreparedBundle {
    fn new(rootfs: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        let runc_root = dir.path().join("runc");
        std::fs::create_dir(&runc_root).unwrap();
        let hosts = bundle.join("hosts");
        std::fs::write(&hosts, "127.0.0.1\tlocalhost bench\n").unwrap();
        let resolv = bundle.join("resolv.conf");
        std::fs::write(&resolv, "").unwrap();
        // Mount points the executor would create and remove around each run stay in place.
        std::fs::write(rootfs.join("etc/hosts"), "").unwrap();
        std::fs::write(rootfs.join("etc/resolv.conf"), "").unwrap();
        let netns = NetworkNamespace::create(&dir.path().join("netns")).unwrap();
        let exec = true_spec();
        let user = ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        };
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .maximum
            .unwrap_or(MAX_OPEN_FILES)
            .min(MAX_OPEN_FILES);
        let spec = build_runtime_spec(&RuntimeSpecInput {
            exec: &exec,
            rootfs,
            user: &user,
            hostname: "bench",
            hosts_file: &hosts,
            resolv_conf_file: &resolv,
            netns: Some(netns.path()),
            cgroups_path: "/dagr/bench-direct",
            max_open_files: nofile,
            mounts: &[],
            capability_bound: dagr_executor::host_capability_bound(),
            terminal: false,
            init: None,
        })
        .unwrap();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        PreparedBundle {
            _dir: dir,
            bundle,
            runc_root,
            _netns: netns,
        }
    }

    fn run(&self) {
        self.run_on(Path::new("runc"));
    }

    fn run_on(&self, runtime: &Path) {
        assert!(self.try_run_on(runtime).is_ok());
    }

    /// `runtime run` of the bundle; its stderr when it fails.
    fn try_run_on(&self, runtime: &Path) -> Result<(), String> {
        let output = Command::new(runtime)
            .arg("--root")
            .arg(&self.runc_root)
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--no-new-keyring")
            .arg("dagr-bench-direct")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// `runc create` of the bundle (untimed: the preparation done ahead), then the time of
    /// `runc start` alone, the least a create/start split leaves on an exec's path; the
    /// container is deleted afterwards.
    fn runc_start_after_create(&self, id: &str) -> Duration {
        let runc = |args: &[&str]| {
            let status = Command::new("runc")
                .arg("--root")
                .arg(&self.runc_root)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "runc {args:?}");
        };
        let bundle = self.bundle.to_string_lossy().into_owned();
        runc(&["create", "--bundle", &bundle, "--no-new-keyring", id]);
        let start = Instant::now();
        runc(&["start", id]);
        let took = start.elapsed();
        runc(&["delete", "--force", id]);
        took
    }
}

fn bench_exec(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fixture = common::Fixture::new();
    let direct_rootfs = tempfile::tempdir().unwrap();
    common::busybox_rootfs(direct_rootfs.path());
    let direct = PreparedBundle::new(direct_rootfs.path());
    let spec = true_spec();
    let run_executor = || {
        runtime
            .block_on(
                fixture
                    .executor
                    .run(&fixture.rootfs(), &spec, RunOptions::default()),
            )
            .unwrap();
    };

    let mut group = c.benchmark_group("exec_true");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("executor", |b| b.iter(run_executor));
    group.bench_function("runc_run_prepared_bundle", |b| b.iter(|| direct.run()));
    group.finish();

    // The same comparison in one run, interleaved, for the ratio.
    let rounds = 20;
    let (mut executor_total, mut runc_total) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let start = Instant::now();
        run_executor();
        executor_total += start.elapsed();
        let start = Instant::now();
        direct.run();
        runc_total += start.elapsed();
    }
    println!(
        "exec of `true`: executor {:.1} ms, runc run {:.1} ms, ratio executor/runc {:.2}",
        executor_total.as_secs_f64() * 1000.0 / f64::from(rounds),
        runc_total.as_secs_f64() * 1000.0 / f64::from(rounds),
        executor_total.as_secs_f64() / runc_total.as_secs_f64()
    );
    runtime.block_on(fixture.assert_clean());

    // dagr-launcher: the same prepared bundle, and the executor on it, against the floor.
    let launcher = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("dagr-launcher")))
        .filter(|path| path.is_file());
    let Some(launcher) = launcher else {
        println!("dagr-launcher not built beside the bench: run `cargo xtask bench`");
        return;
    };
    let on_launcher = common::Fixture::with_config(|config| {
        config.runtime_binary = launcher.clone();
    });
    let run_on_launcher = || {
        runtime
            .block_on(
                on_launcher
                    .executor
                    .run(&on_launcher.rootfs(), &spec, RunOptions::default()),
            )
            .unwrap();
    };
    let floor = || {
        let status = Command::new("unshare")
            .args([
                "--mount", "--pid", "--fork", "--ipc", "--uts", "--net", "chroot",
            ])
            .arg(direct_rootfs.path())
            .arg("true")
            .status()
            .unwrap();
        assert!(status.success());
    };
    let median = |f: &dyn Fn()| {
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    };
    run_on_launcher();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let executor_launcher = median(&run_on_launcher);
    let bundle_launcher = median(&|| direct.run_on(&launcher));
    let bundle_runc = median(&|| direct.run());
    let floor = median(&floor);
    println!(
        "exec of `true` (medians): executor on dagr-launcher {:.1} ms, the bundle on dagr-launcher {:.1} ms, on runc {:.1} ms, unshare+chroot {:.1} ms; launcher/runc {:.2}, launcher/floor {:.2}",
        ms(executor_launcher),
        ms(bundle_launcher),
        ms(bundle_runc),
        ms(floor),
        bundle_launcher.as_secs_f64() / bundle_runc.as_secs_f64(),
        bundle_launcher.as_secs_f64() / floor.as_secs_f64(),
    );
    // Where the executor's time goes on the launcher (means).
    let mut sum = dagr_executor::ExecPhases::default();
    for _ in 0..rounds {
        let result = runtime
            .block_on(
                on_launcher
                    .executor
                    .run(&on_launcher.rootfs(), &spec, RunOptions::default()),
            )
            .unwrap();
        let p = result.phases;
        sum.bundle += p.bundle;
        sum.cgroup += p.cgroup;
        sum.spec += p.spec;
        sum.runtime += p.runtime;
        sum.cleanup += p.cleanup;
    }
    let mean = |d: Duration| ms(d) / f64::from(rounds);
    println!(
        "executor phases on dagr-launcher (means): bundle {:.2} ms, cgroup {:.2} ms, spec {:.2} ms, runtime {:.2} ms, cleanup {:.2} ms",
        mean(sum.bundle),
        mean(sum.cgroup),
        mean(sum.spec),
        mean(sum.runtime),
        mean(sum.cleanup)
    );
    runtime.block_on(on_launcher.assert_clean());

    // The other candidates, measured beside it: runc's create/start split, and youki
    // (not packaged here: `cargo install youki --no-default-features --features v1,v2,seccomp`,
    // then DAGR_BENCH_YOUKI=PATH).
    let mut starts: Vec<Duration> = (0..rounds)
        .map(|i| direct.runc_start_after_create(&format!("dagr-bench-split-{i}")))
        .collect();
    starts.sort();
    println!(
        "runc start after an untimed runc create (median, the process not waited for): {:.1} ms",
        ms(starts[starts.len() / 2])
    );
    if let Some(youki) = std::env::var_os("DAGR_BENCH_YOUKI").map(std::path::PathBuf::from) {
        match direct.try_run_on(&youki) {
            Ok(()) => println!(
                "the bundle on youki: {:.1} ms (median)",
                ms(median(&|| direct.run_on(&youki)))
            ),
            Err(e) => println!("youki cannot run the bundle: {}", e.trim()),
        }
    }
}

criterion_group!(benches, bench_exec);
criterion_main!(benches);
