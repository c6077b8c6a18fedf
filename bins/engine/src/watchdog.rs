//! The engine's watchdog: a process of its own (`dagr-engine watchdog`, started by the engine in
//! a process group of its own) that holds the read end of a pipe whose write end only the engine
//! has. When the engine ends, however it ends (a SIGKILL included), the pipe closes and the
//! watchdog kills every container still in the engine's runtime state, so no container keeps
//! running while no engine watches it. (The runtime's `run` processes then exit; mounts,
//! bundles and network namespaces left behind are removed by the next engine's start.)

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::Context as _;

/// The engine's side: the watchdog process and the pipe that keeps it waiting.
pub struct Watchdog {
    child: Child,
    /// Dropping it (the engine ends) wakes the watchdog.
    lifeline: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts `dagr-engine watchdog` for the containers of the runtime `runc` with state in
    /// `runc_root`.
    pub fn start(runc: &Path, runc_root: &Path) -> anyhow::Result<Watchdog> {
        use std::os::unix::process::CommandExt as _;
        let exe = std::env::current_exe().context("finding the engine's own binary")?;
        let mut child = Command::new(exe)
            .arg("watchdog")
            .arg("--runc")
            .arg(runc)
            .arg("--runc-root")
            .arg(runc_root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Outside the engine's process group: a signal to the group leaves it to clean up.
            .process_group(0)
            .spawn()
            .context("starting the engine's watchdog")?;
        let lifeline = child.stdin.take();
        Ok(Watchdog { child, lifeline })
    }

    /// The engine is stopping cleanly (its containers are gone): the watchdog finds nothing
    /// to do and exits; it is reaped here.
    pub fn stop(mut self) {
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}

/// The watchdog process: waits for the engine to end, then kills what it left running.
pub fn run(runc: &Path, runc_root: &Path) -> anyhow::Result<()> {
    // Blocks until the engine's end of the pipe closes (nothing is ever written to it).
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    while !matches!(stdin.read(&mut sink), Ok(0) | Err(_)) {}
    let ids = containers(runc_root);
    for id in &ids {
        let killed = Command::new(runc)
            .arg("--root")
            .arg(runc_root)
            .args(["kill", "--all", id, "KILL"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // A container that ended by itself meanwhile is no failure: its runtime process
        // removes its state once it has reaped it.
        if !killed.is_ok_and(|s| s.success()) && !state_gone(&runc_root.join(id)) {
            eprintln!("dagr-engine watchdog: could not kill container {id} of the ended engine");
        }
    }
    // Their cgroups go once the processes are gone (the runtime's `run` processes remove the
    // containers' own; the exec's parent is the engine's to remove): a few seconds at most.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut left: Vec<&String> = ids.iter().collect();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        left.retain(|id| !dagr_executor::remove_exec_cgroups(id));
        if !left.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Whether a container's state directory is gone, or goes within a second.
fn state_gone(state: &Path) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while state.exists() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// The containers in a runtime state directory (one directory per container).
fn containers(runc_root: &Path) -> Vec<String> {
    std::fs::read_dir(runc_root)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The arguments of `dagr-engine watchdog`.
#[derive(clap::Args, Debug)]
pub struct WatchdogArgs {
    /// The runtime binary.
    #[arg(long, value_name = "PATH")]
    pub runc: PathBuf,
    /// The runtime's state directory.
    #[arg(long, value_name = "DIR")]
    pub runc_root: PathBuf,
}
