//! Developer tasks: `cargo xtask engine` (build and run the engine with developer defaults),
//! `cargo xtask test` (install prerequisites, then format check, clippy and the whole test suite),
//! `cargo xtask prereqs` (only the installation), `cargo xtask bench` (criterion benchmarks),
//! `cargo xtask image` (the engine's OCI image, assembled by dagr).

mod image;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "dagr developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build and run the engine with developer defaults: state under target/dagr-dev, a unix socket
    /// there and a TCP listener on 127.0.0.1.
    Engine {
        /// TCP port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 7777)]
        port: u16,
        /// Build with --release.
        #[arg(long)]
        release: bool,
        /// Extra arguments passed to dagr-engine.
        #[arg(last = true)]
        engine_args: Vec<String>,
    },
    /// Build dagr and dagr-engine (installing what the engine needs to run), then run `dagr`
    /// with these arguments; without --host it starts its engine in the background (stop it
    /// with `cargo xtask dagr engine stop`).
    Dagr {
        /// The arguments of `dagr` (e.g. `query examples/hello.graphql`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install the system prerequisites (apt packages), then run cargo fmt --check, clippy and the
    /// whole test suite.
    Test {
        /// Skip fmt and clippy; only run the tests.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments passed to `cargo test`.
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Install the system prerequisites only (runc, busybox-static, docker-registry, skopeo, ...).
    Prereqs,
    /// Build the engine's OCI image (dagr-engine, dagr, runc, tini, iptables, git, CA
    /// certificates and the QEMU emulators of this machine), assembled by dagr itself (the
    /// engine of DAGR_HOST, else the one dagr starts), as an archive that `docker load` reads.
    Image {
        /// Where the archive goes.
        #[arg(
            long,
            default_value = "target/dagr-engine-image.tar",
            value_name = "PATH"
        )]
        output: PathBuf,
        /// Also load it into Docker (the `docker` CLI, DOCKER_HOST) under this name.
        #[arg(long, value_name = "NAME:TAG")]
        load: Option<String>,
        /// Also push it to this registry reference.
        #[arg(long, value_name = "REF")]
        push: Option<String>,
        /// Take dagr-engine and dagr from this directory instead of building them (release).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Leave the QEMU emulators out.
        #[arg(long)]
        no_emulators: bool,
    },
    /// Run the criterion benchmarks (prerequisites installed first).
    Bench {
        /// Extra arguments passed to `cargo bench`.
        #[arg(last = true)]
        bench_args: Vec<String>,
    },
    /// Run the reliability suite's long form (release build): 50 concurrent sessions x 20 mixed
    /// queries and 50 SIGKILLs of the engine at random points with restarts, printing the figures
    /// of RELIABILITY.md. `cargo xtask test` runs the short form.
    Soak,
    /// Run the property tests of the parsers and decoders that take hostile input (the GraphQL
    /// executor, the metadata header, the layer unpacker, the Dockerfile parser, the attachables' tree writer, the remote cache index) over and over with many cases and
    /// fresh random seeds, for about this long. `cargo xtask test` runs them with 256 cases.
    Fuzz {
        /// How long to keep going.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Cases per property per round.
        #[arg(long, default_value_t = 5000)]
        cases: u32,
    },
}

/// The crates with property tests (`tests/props.rs`).
const PROPERTY_TESTS: &[&str] = &[
    "dagr-metadata",
    "dagr-gql",
    "dagr-snapshot",
    "dagr-dockerfile",
    "dagr-remote-cache",
];

/// Commands the tests and the engine need, with the Debian package that provides each.
const PREREQS: &[(&str, &str)] = &[
    ("runc", "runc"),
    ("busybox", "busybox-static"),
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("curl", "curl"),
    ("tar", "tar"),
    ("python3", "python3"),
    ("tmux", "tmux"),
    ("openssl", "openssl"),
    // The engine's container network: NAT and forwarding rules; `ip` for the tests' checks.
    ("iptables", "iptables"),
    ("ip", "iproute2"),
    // Git sources: the engine runs git; tests serve repositories with git daemon and
    // git http-backend (both in Debian's git package).
    ("git", "git"),
    // Git over SSH: the engine runs ssh; a test runs its own sshd and ssh-agent on loopback.
    ("ssh", "openssh-client"),
    ("sshd", "openssh-server"),
    // Other platforms: QEMU user emulators, registered in binfmt_misc by the engine.
    ("qemu-aarch64-static", "qemu-user-static"),
    // The disk test makes a small ext4 for the engine's state.
    ("mkfs.ext4", "e2fsprogs"),
    // Every container's PID 1: Debian's static tini.
    ("tini-static", "tini"),
    // The Dockerfile corpus compares with `docker build` on a private dockerd (BuildKit); the
    // docker-image:// driver test runs the engine image there.
    ("dockerd", "docker.io"),
    // The kube-pod:// driver runs kubectl (tested up to the command it runs).
    ("kubectl", "kubernetes-client"),
];

/// What running dagr needs (`cargo xtask dagr`): the engine's runtime, init, network and git.
const RUN_PREREQS: &[(&str, &str)] = &[
    ("runc", "runc"),
    ("tini-static", "tini"),
    ("iptables", "iptables"),
    ("git", "git"),
    ("ssh", "openssh-client"),
];

/// What running dagr builds: the engine, the CLI and the container launcher.
pub(crate) const ENGINE_PACKAGES: &[&str] = &[
    "-p",
    "dagr-engine",
    "-p",
    "dagr-cli",
    "-p",
    "dagr-launcher-bin",
];

/// What only the benchmarks need: the baselines they compare against (`buildah bud --layers`
/// for the pipeline benchmark).
const BENCH_PREREQS: &[(&str, &str)] = &[("buildah", "buildah")];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.command {
        Task::Engine {
            port,
            release,
            engine_args,
        } => engine(&root, port, release, &engine_args),
        Task::Test { no_lint, test_args } => {
            prereqs(&[])?;
            arm64_busybox(&root)?;
            if !no_lint {
                run(Command::new(cargo()).args(["fmt", "--all", "--", "--check"]))
                    .context("cargo fmt --check failed: run `cargo fmt --all`")?;
                run(Command::new(cargo()).args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))?;
            }
            // `cargo test` builds a package's binaries only for that package's own integration
            // tests; the suites start the engine, the CLI and the launcher from the target dir.
            run(Command::new(cargo()).arg("build").args(ENGINE_PACKAGES))?;
            run(Command::new(cargo())
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(&test_args))?;
            // The executor's suite again, on dagr's own launcher instead of runc.
            let launcher = target_dir(&root).join("debug/dagr-launcher");
            run(Command::new(cargo())
                .args(["test", "-p", "dagr-executor", "--no-fail-fast"])
                .args(["--test", "exec", "--test", "seccomp", "--test", "init"])
                .env("DAGR_TEST_RUNTIME", &launcher))
            .context("the executor's suite on dagr-launcher failed")
        }
        Task::Prereqs => prereqs(&[]).and_then(|()| arm64_busybox(&root)),
        Task::Dagr { args } => {
            install(RUN_PREREQS, &build_packages())?;
            run(Command::new(cargo()).arg("build").args(ENGINE_PACKAGES))?;
            let status = Command::new(target_dir(&root).join("debug/dagr"))
                .args(&args)
                .status()
                .context("starting dagr")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Image {
            output,
            load,
            push,
            bin_dir,
            no_emulators,
        } => {
            prereqs(&[])?;
            image::build(
                &root,
                &image::ImageArgs {
                    bin_dir,
                    output,
                    load,
                    push,
                    emulators: !no_emulators,
                },
            )
        }
        Task::Soak => {
            prereqs(&[])?;
            // The suite's engines run on dagr-launcher, found beside the release engine.
            run(Command::new(cargo()).args(["build", "--release", "-p", "dagr-launcher-bin"]))?;
            run(Command::new(cargo())
                .args([
                    "test",
                    "--release",
                    "-p",
                    "dagr-engine",
                    "--test",
                    "soak",
                    "--test",
                    "disk",
                ])
                .args(["--", "--nocapture", "--test-threads=1"])
                .env("DAGR_SOAK", "long"))
        }
        Task::Fuzz { minutes, cases } => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(minutes * 60);
            let mut round = 0u64;
            loop {
                round += 1;
                eprintln!("xtask fuzz: round {round} ({cases} cases per property)");
                let mut cmd = Command::new(cargo());
                cmd.arg("test");
                for krate in PROPERTY_TESTS {
                    cmd.args(["-p", krate]);
                }
                run(cmd
                    .args(["--test", "props", "--release"])
                    .env("PROPTEST_CASES", cases.to_string()))?;
                // The attachables' tree writer is crate-private: its properties are unit tests.
                run(Command::new(cargo())
                    .args([
                        "test",
                        "-p",
                        "dagr-attach",
                        "--lib",
                        "--release",
                        "tree_props",
                    ])
                    .env("PROPTEST_CASES", cases.to_string()))?;
                if std::time::Instant::now() >= deadline {
                    eprintln!("xtask fuzz: {round} rounds, no failure");
                    return Ok(());
                }
            }
        }
        Task::Bench { bench_args } => {
            prereqs(BENCH_PREREQS)?;
            // The pipeline benchmark runs an engine on dagr-launcher too (found beside it).
            run(Command::new(cargo()).args(["build", "--release", "-p", "dagr-launcher-bin"]))?;
            run(Command::new(cargo())
                .args(["bench", "--workspace"])
                .args(&bench_args))
        }
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask is not inside the workspace")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status: ExitStatus = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Installs missing prerequisites (and the `extra` ones) with apt-get (as root), or says exactly
/// what to install.
fn prereqs(extra: &[(&'static str, &'static str)]) -> anyhow::Result<()> {
    let wanted: Vec<(&str, &str)> = PREREQS.iter().chain(extra).copied().collect();
    let mut packages = Vec::new();
    // The busybox used in container images must be the static one.
    if !Path::new("/bin/busybox").exists() {
        packages.push("busybox-static");
    }
    // Tests build Python virtualenvs (graphql-core, the Dagger SDK).
    let venv_ok = have("python3")
        && Command::new("python3")
            .args(["-c", "import venv, ensurepip"])
            .status()
            .is_ok_and(|s| s.success());
    if !venv_ok {
        packages.push("python3-venv");
    }
    packages.extend(build_packages());
    install(&wanted, &packages)
}

/// What building the workspace needs beyond the Rust toolchain: libseccomp's headers and link
/// library (dagr-launcher compiles seccomp profiles with it).
fn build_packages() -> Vec<&'static str> {
    if Path::new("/usr/include/seccomp.h").exists() {
        Vec::new()
    } else {
        vec!["libseccomp-dev"]
    }
}

/// Installs the packages of the `wanted` commands that are missing, and `packages` (as root),
/// or says exactly what to install.
fn install(wanted: &[(&str, &str)], packages: &[&'static str]) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    for p in packages {
        if !missing.contains(p) {
            missing.push(p);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing prerequisites; install them with: sudo apt-get install -y {}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install failed")?;
    for (cmd, pkg) in wanted {
        if !have(cmd) {
            bail!("{cmd} is still missing after installing {pkg}");
        }
    }
    Ok(())
}

/// The directory cargo builds into.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Puts the busybox of Debian's `busybox-static:arm64` at `target/fixtures/busybox-arm64`, for
/// the tests' `linux/arm64` image (the package is downloaded and unpacked, not installed).
fn arm64_busybox(root: &Path) -> anyhow::Result<()> {
    let dest = target_dir(root).join("fixtures/busybox-arm64");
    if dest.is_file() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "{} is missing; as root, run: dpkg --add-architecture arm64 && apt-get update && \
             apt-get download busybox-static:arm64, then copy bin/busybox out of the package",
            dest.display()
        );
    }
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .context("running dpkg")?;
    if !String::from_utf8_lossy(&foreign.stdout)
        .lines()
        .any(|a| a == "arm64")
    {
        run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        run(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    let work = std::env::temp_dir().join(format!("dagr-arm64-busybox-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let downloaded = run(Command::new("apt-get")
        .args(["download", "-qq", "busybox-static:arm64"])
        .current_dir(&work));
    let result = downloaded.and_then(|()| {
        let deb = std::fs::read_dir(&work)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download gave no .deb")?;
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(work.join("x")))?;
        std::fs::create_dir_all(dest.parent().context("fixtures dir")?)?;
        std::fs::copy(work.join("x/bin/busybox"), &dest)?;
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&work);
    result.context("extracting Debian's busybox-static:arm64")
}

fn engine(root: &Path, port: u16, release: bool, extra: &[String]) -> anyhow::Result<()> {
    if !have("runc") {
        eprintln!(
            "xtask: runc is not installed; containers will not run (run `cargo xtask prereqs`)"
        );
    }
    install(&[], &build_packages())?;
    let mut build = Command::new(cargo());
    build.arg("build").args(ENGINE_PACKAGES);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let profile = if release { "release" } else { "debug" };
    let bin_dir = root.join("target").join(profile);
    let state = root.join("target/dagr-dev/state");
    std::fs::create_dir_all(&state)?;
    let sock = root.join("target/dagr-dev/engine.sock");
    println!("dagr engine (developer mode)");
    println!("  state dir: {}", state.display());
    println!("  connect:   export DAGR_HOST=unix://{}", sock.display());
    println!("         or: export DAGR_HOST=tcp://127.0.0.1:{port}");
    println!(
        "  then:      echo '{{version}}' | {} query",
        bin_dir.join("dagr").display()
    );
    let status = Command::new(bin_dir.join("dagr-engine"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .arg("--listen")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(extra)
        .status()
        .context("starting dagr-engine")?;
    if !status.success() {
        bail!("dagr-engine exited with {status}");
    }
    Ok(())
}
