//! A private `dockerd` for tests that compare with `docker build` (Debian's `docker.io`, whose
//! builder is BuildKit): its own data root, exec root and socket under a temp dir, no bridge
//! and no iptables rules (`--bridge=none --iptables=false --ip-masq=false`), stopped (SIGTERM,
//! then SIGKILL) and its directories removed when dropped. Builds run with `--network=none`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's docker CLI (another `docker` earlier on the `PATH` may lack the BuildKit builder).
pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// See the module docs.
pub struct DockerDaemon {
    dir: tempfile::TempDir,
    child: Child,
    /// The bridge its containers attach to, made for it and removed with it.
    bridge: Option<String>,
}

impl DockerDaemon {
    /// Starts `dockerd` and waits until it answers (at most 60 s).
    pub fn start() -> DockerDaemon {
        Self::start_with(None)
    }

    /// [`DockerDaemon::start`] with a bridge of its own (a /24 from [`crate::test_bridge`],
    /// still no iptables rules), so that `docker run` gives containers a network namespace
    /// with an address, as a default Docker does.
    pub fn start_with_bridge() -> DockerDaemon {
        Self::start_with(Some(()))
    }

    fn start_with(bridge: Option<()>) -> DockerDaemon {
        assert!(
            Path::new("/usr/sbin/dockerd").exists() && Path::new(DOCKER_CLI).exists(),
            "dockerd is missing: run `cargo xtask prereqs` (Debian's docker.io)"
        );
        let dir = tempfile::Builder::new()
            .prefix("dagr-dockerd-")
            .tempdir()
            .expect("dockerd dir");
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).expect("dockerd log");
        let bridge = bridge.map(|()| {
            let config = crate::test_bridge(d);
            let name = format!("dd{}", &config.name[2..]);
            let gateway = config.cidr.to_string().replace(".0/24", ".1/24");
            for args in [
                vec!["link", "add", &name, "type", "bridge"],
                vec!["addr", "add", &gateway, "dev", &name],
                vec!["link", "set", &name, "up"],
            ] {
                let status = Command::new("ip").args(&args).status().expect("ip");
                assert!(status.success(), "ip {args:?}");
            }
            name
        });
        let mut cmd = Command::new("/usr/sbin/dockerd");
        cmd.arg(format!("--bridge={}", bridge.as_deref().unwrap_or("none")))
            .arg("--iptables=false")
            .arg("--ip-masq=false")
            .arg("--ip6tables=false")
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
            .arg(format!("--host=unix://{}", d.join("docker.sock").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start dockerd");
        let daemon = DockerDaemon { dir, child, bridge };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = daemon.docker().arg("info").output().expect("docker info");
            if info.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(daemon.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    /// `docker` talking to this daemon, with BuildKit.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_BUILDKIT", "1")
            .env("DOCKER_CONFIG", self.dir.path().join("config"));
        cmd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// `docker build --quiet --network=none --tag TAG` of `context` with the `build_args`
    /// (`NAME=VALUE`), for benchmarks: how long it took. Panics with the builder's output on
    /// failure.
    pub fn timed_build(&self, context: &Path, tag: &str, build_args: &[String]) -> Duration {
        let started = Instant::now();
        let mut args = vec!["--quiet".to_owned(), "--tag".to_owned(), tag.to_owned()];
        args.extend(build_args.iter().map(|a| format!("--build-arg={a}")));
        self.run_build(context, &args);
        started.elapsed()
    }

    /// `docker build --network=none ARGS CONTEXT`; panics with the builder's output on failure.
    fn run_build(&self, context: &Path, args: &[String]) {
        let out = self
            .docker()
            .args(["build", "--network=none"])
            .args(args)
            .arg(context)
            .output()
            .expect("docker build");
        assert!(
            out.status.success(),
            "docker build of {} failed: {}",
            context.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Builds `context` with `args` (`docker build --network=none ...`): the root filesystem as
    /// a tar at `rootfs_tar` (the tar exporter) and the image config's `config` section (of the
    /// same build, tagged `tag` and inspected; the second build is served from the cache).
    /// Panics with the builder's output on failure.
    pub fn build(
        &self,
        context: &Path,
        args: &[String],
        rootfs_tar: &Path,
        tag: &str,
    ) -> serde_json::Value {
        let build = |output: &[String]| {
            let mut all = vec!["--progress=plain".to_owned()];
            all.extend_from_slice(args);
            all.extend_from_slice(output);
            self.run_build(context, &all);
        };
        build(&[
            "--output".to_owned(),
            format!("type=tar,dest={}", rootfs_tar.display()),
        ]);
        build(&["--tag".to_owned(), tag.to_owned()]);
        let inspect = self
            .docker()
            .args(["image", "inspect", "--format", "{{json .Config}}", tag])
            .output()
            .expect("docker image inspect");
        assert!(inspect.status.success(), "docker image inspect {tag}");
        serde_json::from_slice(&inspect.stdout).expect("config json")
    }
}

impl Drop for DockerDaemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon this fixture started.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        // Whatever dockerd left mounted under its directories goes before they are removed.
        crate::detach_mounts_under(self.dir.path());
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(Stdio::null())
                .status();
        }
    }
}
