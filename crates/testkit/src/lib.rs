//! Fixtures for dagr's integration tests (a dev-dependency only):
//! - [`registry`]: a `docker-registry` on a free loopback port for the whole test process, with the
//!   busybox image of [`image::busybox_image`] pushed by skopeo ([`RegistryFixture`]);
//! - [`image`]: that image as an OCI layout and archive, built from the host's static busybox;
//! - [`EngineProcess`]: a `dagr-engine` child on a temp state dir, listening on 127.0.0.1:0 and a
//!   unix socket, killed on drop;
//! - [`metric`]: one value out of the engine's `/metrics` text;
//! - [`git::GitServer`]: bare repositories served by `git daemon` and `git http-backend`;
//! - [`http::FileServer`]: files over HTTP with `ETag` revalidation;
//! - [`scratch_registry::ScratchRegistry`]: an empty registry of a test's own (optionally with
//!   basic auth) that the test can stop and damage;
//! - [`docker::DockerDaemon`]: a private `dockerd` to compare with `docker build`;
//! - [`oci::read_archive`]: an OCI archive's config and flattened file tree;
//! - [`pyimage`]: a Python 3.11 image made of the host's Debian Python, pushed to that registry,
//!   and a wheelhouse of the Dagger SDK's wheels, for Python module tests without internet.
//!
//! Everything listens on loopback only and dies with the test process (PR_SET_PDEATHSIG).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod docker;
pub mod git;
pub mod http;
pub mod image;
pub mod oci;
pub mod pyimage;
pub mod scratch_registry;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A loopback registry serving `busybox:latest`, for the whole test process.
pub struct RegistryFixture {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `127.0.0.1:PORT/busybox:latest`.
    pub image: String,
    /// The OCI layout the image was built into.
    pub layout: PathBuf,
    fixture_dir: PathBuf,
    multi: OnceLock<String>,
    /// The reference of the Python image once pushed ([`pyimage::python_image`]).
    python: OnceLock<String>,
}

/// Starts `cmd` from a thread that lives as long as the process, with PR_SET_PDEATHSIG, so the
/// child dies with the test binary however it ends.
pub fn spawn_for_process_lifetime(mut cmd: Command) -> u32 {
    use std::os::unix::process::CommandExt as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Some(child.id()));
                let _ = child.wait();
                // Keep this thread (the child's parent) alive until the process ends.
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                eprintln!("spawning {cmd:?}: {e}");
                let _ = tx.send(None);
            }
        }
    });
    rx.recv().ok().flatten().expect("child started")
}

/// The registry fixture, started on first use. `work` names a directory under `target/tmp` of
/// the calling test crate (pass `env!("CARGO_TARGET_TMPDIR")`).
pub fn registry(target_tmp: &str) -> &'static RegistryFixture {
    static FIXTURE: OnceLock<RegistryFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let out = PathBuf::from(target_tmp).join("dagr-testkit-fixture");
        std::fs::create_dir_all(&out).expect("fixture dir");
        // Test binaries running at the same time share the image directory: one builds and reads
        // it at a time (the build is reproducible, so rebuilding gives the same bytes).
        let lock = std::fs::File::create(out.join(".lock")).expect("lock file");
        // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        let built = image::busybox_image(&out);
        remove_stale_registries(&out);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let data = out.join(format!("registry-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&data).expect("registry dir");
        let config = data.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  delete:\n    enabled: true\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                data.join("data").display()
            ),
        )
        .expect("registry config");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn_for_process_lifetime(cmd);
        wait_for_port(&addr);
        let reference = format!("{addr}/busybox:latest");
        image::push_layout(&built.layout, &reference, false);
        drop(lock);
        RegistryFixture {
            addr,
            image: reference,
            layout: built.layout,
            fixture_dir: out,
            multi: OnceLock::new(),
            python: OnceLock::new(),
        }
    })
}

/// Removes the data of registries (`registry-PORT-PID`) whose test process is gone: each test
/// binary's registry lives as long as the binary, and its data would pile up otherwise.
fn remove_stale_registries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("registry-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl RegistryFixture {
    /// `ADDR/busybox:multi`: busybox for `linux/amd64` and `linux/arm64` (from Debian's
    /// `busybox-static:arm64`, see [`image::busybox_arm64_image`]) under one index, pushed on
    /// first use.
    pub fn multi_platform(&self) -> &str {
        self.multi.get_or_init(|| {
            let target_dir = self
                .fixture_dir
                .ancestors()
                .find(|p| p.file_name().is_some_and(|n| n == "tmp"))
                .and_then(Path::parent)
                .expect("fixture dir under target/tmp")
                .to_path_buf();
            let lock = std::fs::File::create(self.fixture_dir.join(".lock-multi")).expect("lock");
            // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
            let amd64 = image::busybox_image(&self.fixture_dir.join("amd64"));
            let arm64 = image::busybox_arm64_image(&self.fixture_dir.join("arm64"), &target_dir);
            let layout =
                image::multi_platform_layout(&self.fixture_dir.join("multi"), &[&amd64, &arm64]);
            let reference = format!("{}/busybox:multi", self.addr);
            image::push_layout(&layout, &reference, true);
            reference
        })
    }
}

pub fn wait_for_port(addr: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {addr}");
}

/// A running `dagr-engine`; SIGKILLed and reaped on drop.
pub struct EngineProcess {
    pub child: Child,
    pub tcp: SocketAddr,
    pub unix: PathBuf,
    pub dir: tempfile::TempDir,
    /// Its bridge network, removed (with its rules) once the engine is gone, however it died.
    pub bridge: Option<dagr_network::BridgeConfig>,
}

/// A bridge name and a /24 of its own for the engine whose state is in `base` (tests run many
/// engines at once; a restarted engine gets the same bridge back).
pub fn test_bridge(base: &Path) -> dagr_network::BridgeConfig {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(base.as_os_str().as_encoded_bytes());
    dagr_network::BridgeConfig {
        name: format!("dk{}", hex::encode(&hash[..5])),
        cidr: format!("10.{}.{}.0/24", 100 + hash[5] % 100, hash[6])
            .parse()
            .expect("a /24"),
        dns_upstreams: Vec::new(),
        iptables: PathBuf::from("iptables"),
    }
}

/// Removes a test engine's bridge and its rules (what a SIGKILLed engine leaves).
pub fn remove_bridge(bridge: &dagr_network::BridgeConfig) {
    let _ = dagr_network::Nat::new(&bridge.iptables, &bridge.name, bridge.cidr).remove();
    let _ = Command::new("ip")
        .args(["link", "del", &bridge.name])
        .stderr(Stdio::null())
        .status();
}

impl EngineProcess {
    /// Starts `binary` with a temp state dir, `tcp://127.0.0.1:0` and a unix socket.
    pub fn start(binary: &Path, extra_args: &[&str]) -> EngineProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().to_path_buf();
        Self::start_in(binary, &base, dir, extra_args)
    }

    /// Starts `binary` with its state and socket in `base` (which outlives this engine: for
    /// restart tests); `dir` is kept alive with the process.
    pub fn start_in(
        binary: &Path,
        base: &Path,
        dir: tempfile::TempDir,
        extra_args: &[&str],
    ) -> EngineProcess {
        let unix = base.join("engine.sock");
        let bridge =
            (!extra_args.iter().any(|a| a.starts_with("--network"))).then(|| test_bridge(base));
        let network_args = bridge
            .as_ref()
            .map(|b| {
                vec![
                    "--network-bridge".to_owned(),
                    b.name.clone(),
                    "--network-cidr".to_owned(),
                    b.cidr.to_string(),
                ]
            })
            .unwrap_or_default();
        let mut network_args = network_args;
        if !extra_args.iter().any(|a| a.starts_with("--dns-upstream")) {
            // Tests stay offline: names that are not the engine's fail fast (nothing listens
            // on the discard port) instead of reaching the host's resolvers.
            network_args.extend(["--dns-upstream".to_owned(), "127.0.0.1:9".to_owned()]);
        }
        if !extra_args
            .iter()
            .any(|a| a.starts_with("--runtime") || a.starts_with("--runc"))
        {
            // The engine's default runtime is the launcher beside it; without it the engine
            // quietly falls back to runc and the suites would test the wrong runtime.
            let launcher = binary.with_file_name("dagr-launcher");
            assert!(
                launcher.is_file(),
                "{} is missing: build it with `cargo build -p dagr-launcher-bin` (cargo xtask test does)",
                launcher.display()
            );
        }
        let mut child = Command::new(binary)
            .arg("--state-dir")
            .arg(base.join("state"))
            .arg("--listen")
            .arg("tcp://127.0.0.1:0")
            .arg("--listen")
            .arg(format!("unix://{}", unix.display()))
            // Tests drop engines while their own idle connections are still open.
            .args(["--shutdown-grace", "2"])
            .args(&network_args)
            .args(extra_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn dagr-engine");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut tcp = None;
        for _ in 0..2 {
            let line = lines
                .next()
                .expect("the engine printed its listeners (did it fail to start?)")
                .expect("line");
            if let Some(a) = line.strip_prefix("dagr-engine listening on tcp://") {
                tcp = Some(a.parse().expect("addr"));
            }
        }
        std::thread::spawn(move || for _ in lines {});
        EngineProcess {
            child,
            tcp: tcp.expect("tcp listener"),
            unix,
            dir,
            bridge,
        }
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("tcp://{}", self.tcp)
    }

    /// The engine's `/metrics` text.
    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.tcp).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: dagger\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }

    /// Waits (hang protection: 30 s) until a metric has the wanted value.
    pub fn wait_metric(&self, name: &str, want: u64) -> Duration {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if metric(&self.metrics(), name) == Some(want) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{name} never reached {want}:\n{}", self.metrics());
    }
}

impl Drop for EngineProcess {
    /// SIGTERM first (the engine tears its sessions down and unmounts), SIGKILL after 20 s, then
    /// whatever a killed engine left mounted under its directory is detached so the temp dir can
    /// be removed without going through mounts.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        detach_mounts_under(self.dir.path());
        if let Some(bridge) = &self.bridge {
            remove_bridge(bridge);
        }
    }
}

/// The mount points at or under `dir` (from this process' mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let prefix = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect()
}

/// The ids of the containers in an OCI runtime's state root, one per line (empty: none).
pub fn runtime_containers(runtime_root: &Path) -> String {
    // runc and dagr-launcher both keep a container as `<root>/<id>/state.json`.
    let mut ids: Vec<String> = std::fs::read_dir(runtime_root)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("state.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids.join("\n")
}

/// Lazily unmounts whatever is still mounted under `dir` (deepest first).
pub fn detach_mounts_under(dir: &Path) {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p) else {
            continue;
        };
        // SAFETY: a valid C string; MNT_DETACH only detaches.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The shared libraries (`ldd`) that `files` link, the dynamic loader included.
pub fn linked_libraries(files: &[PathBuf]) -> std::collections::BTreeSet<PathBuf> {
    let mut libs = std::collections::BTreeSet::new();
    for chunk in files.chunks(200) {
        let out = Command::new("ldd").args(chunk).output().expect("ldd");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)".
            if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    libs
}

/// Puts `files` (symlinks resolved) side by side in `dir` under their own names, hard-linked
/// where possible, else copied. Returns the name of the dynamic loader among them, if any: in a
/// container with `dir` mounted at `/d`, `/d/<loader> --library-path /d /d/<binary>` runs a
/// binary whose libraries were given too.
pub fn flat_bundle(dir: &Path, files: impl IntoIterator<Item = PathBuf>) -> Option<String> {
    std::fs::create_dir_all(dir).expect("bundle dir");
    let mut loader = None;
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name")
            .to_owned();
        let real = std::fs::canonicalize(&file).expect("bundled file");
        let to = dir.join(&name);
        if std::fs::hard_link(&real, &to).is_err() {
            std::fs::copy(&real, &to).expect("copy into the bundle");
        }
        if name.starts_with("ld-linux") {
            loader = Some(name);
        }
    }
    loader
}

/// Pids of the processes whose argv is exactly `argv` (read from `/proc/*/cmdline`).
pub fn processes_running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted) {
            found.push(pid);
        }
    }
    found
}

/// Waits (up to a minute, then panics naming `what`) until processes with exactly `argv` are
/// running (`running`) or all gone (`!running`).
pub fn wait_processes(argv: &[&str], running: bool, what: &str) {
    let start = std::time::Instant::now();
    while processes_running(argv).is_empty() == running {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{what}: {argv:?} still {}",
            if running { "not running" } else { "running" }
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// HTTP/2 cleartext helpers for benchmarks: a client connection, a POST, and the bare hyper
/// server that is the floor every engine round trip is compared with.
pub mod h2c {
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    pub type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

    /// An HTTP/2 prior-knowledge connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Sender {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        send
    }

    /// POSTs `body` to `/query` with an optional metadata header; returns the answer's bytes.
    pub async fn post(send: &mut Sender, metadata: Option<&str>, body: &Bytes) -> Bytes {
        let mut b = Request::post("http://dagger/query");
        if let Some(m) = metadata {
            b = b.header("x-dagger-client-metadata", m);
        }
        let resp = send
            .send_request(b.body(Full::new(body.clone())).expect("request"))
            .await
            .expect("round trip");
        resp.into_body().collect().await.expect("body").to_bytes()
    }

    /// A bare hyper h2c server answering every request with `answer`, on its own runtime thread
    /// (as the engine runs in its own process, both pay the same cross-thread wake-ups).
    pub fn bare_server(answer: Bytes) -> SocketAddr {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(
                            move |req: Request<hyper::body::Incoming>| {
                                let answer = answer.clone();
                                async move {
                                    let _ = req.into_body().collect().await;
                                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                        answer,
                                    )))
                                }
                            },
                        );
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        rx.recv().expect("bare server address")
    }

    /// The median of samples.
    pub fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }
}

/// Python virtualenvs for tests that drive real Python clients (graphql-core, the Dagger SDK).
pub mod python {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The official Python SDK 0.11.8 with its mid-2024 dependency pins: the repository's
    /// `python/requirements.txt`, which the README gives users too.
    pub const DAGGER_SDK_REQUIREMENTS: &str = include_str!("../../../python/requirements.txt");

    /// Runs `cmd`, panicking with its output when it fails (`what` names the step).
    pub(crate) fn step(cmd: &mut Command, what: &str) {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed ({}); these tests need python3 with venv and PyPI.\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The python of a virtualenv `name` under `target_tmp` with `requirements` (the text of a
    /// pip requirements file) installed: built on first use into a scratch directory then renamed
    /// (an interrupted install is never reused), and reused while its requirements match.
    pub fn venv(target_tmp: &str, name: &str, requirements: &str) -> PathBuf {
        let dir = Path::new(target_tmp).join(name);
        std::fs::create_dir_all(target_tmp).expect("target tmp dir");
        // Test binaries running at the same time build the venv one after the other.
        let lock = std::fs::File::create(Path::new(target_tmp).join(format!(".{name}.lock")))
            .expect("venv lock file");
        // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        let requirements_file = "dagr-requirements.txt";
        let python = dir.join("bin/python");
        if python.exists()
            && std::fs::read_to_string(dir.join(requirements_file)).is_ok_and(|h| h == requirements)
        {
            return python;
        }
        let scratch = PathBuf::from(format!("{}.building-{}", dir.display(), std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        step(
            Command::new("python3").args(["-m", "venv"]).arg(&scratch),
            "python3 -m venv",
        );
        std::fs::write(scratch.join(requirements_file), requirements)
            .expect("write the requirements file");
        step(
            Command::new(scratch.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-input",
                    "--disable-pip-version-check",
                ])
                .arg("-r")
                .arg(scratch.join(requirements_file)),
            "pip install",
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&scratch, &dir).expect("move the virtualenv into place");
        python
    }
}

/// Options for a test client of the engine at `host` (`tcp://...`): a new session, host paths
/// relative to `workdir`, no exports to the host.
pub fn connect_options(host: &str, workdir: &Path) -> dagr_client::ConnectOptions {
    dagr_client::ConnectOptions {
        host: host.parse().expect("engine host"),
        session_id: None,
        client_id: None,
        token: None,
        workdir: workdir.to_path_buf(),
        labels: Default::default(),
        hostname: "dagr-test".into(),
        attach: true,
        allow_send: false,
        terminal: None,
        traceparent: None,
        tunnel: Some(std::sync::Arc::new(dagr_attach::HostTunnel)),
        cache_imports: Vec::new(),
        cache_exports: Vec::new(),
        host_id: None,
    }
}

/// Queries through a [`dagr_client::Client`], as the engine's integration tests do.
pub mod gql {
    use serde_json::{Value, json};

    /// A client of `engine` (attachables on, the temp dir as workdir); `allow_send` lets the
    /// engine write to this client's host (`export`).
    pub async fn connect(engine: &crate::EngineProcess, allow_send: bool) -> dagr_client::Client {
        let mut options = crate::connect_options(&engine.host(), &std::env::temp_dir());
        options.allow_send = allow_send;
        dagr_client::connect(options).await.expect("connect")
    }

    /// Runs `query`: its data, or its errors' messages joined by newlines.
    pub async fn query(client: &dagr_client::Client, query: String) -> Result<Value, String> {
        let answer = client
            .query(json!({ "query": query }))
            .await
            .expect("query sent");
        match answer.get("errors").and_then(Value::as_array) {
            Some(errors) if !errors.is_empty() => Err(errors
                .iter()
                .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
                .join("\n")),
            _ => Ok(answer["data"].clone()),
        }
    }
}
