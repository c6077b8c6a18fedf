//! The launcher's side of a run: prepare, clone the init, record it, wait for its exit while
//! forwarding signals, remove what it made.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use crate::config::ContainerConfig;
use crate::init::{self, InitArgs};
use crate::rootfs::CgroupBinds;
use crate::seccomp::Filter;
use crate::state::{ContainerState, container_dir, process_start_time, remove_cgroups};
use crate::{LaunchError, caps};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The state root.
    pub root: PathBuf,
    /// The bundle directory (with `config.json`).
    pub bundle: PathBuf,
    /// The container id.
    pub id: String,
    /// Where to write the init's host pid, if anywhere.
    pub pid_file: Option<PathBuf>,
    /// Start placed: make this cgroup path (the one the bundle's spec will name) and move the
    /// launcher into it, then wait for one byte on standard input before reading the bundle.
    /// The container's init is then born in its cgroups, so the slow move of a process into a
    /// cgroup (an RCU grace period on cgroup v1, several milliseconds) happens before the
    /// container is asked for. Once in its cgroups the launcher writes one byte to standard
    /// output, so that its caller knows it is placed (end of file there instead means it
    /// failed, its error in the log). Standard input and output are the container's once the
    /// start byte is read; end of file instead of the byte ends the launcher
    /// ([`LaunchError::NotStarted`]). The cgroups stay when the launcher ends (it is in them):
    /// whoever started it removes them.
    pub wait_in_cgroup: Option<PathBuf>,
}

/// A failed step of the launcher, for `map_err`.
fn setup_error(id: &str, step: &str) -> impl FnOnce(std::io::Error) -> LaunchError + use<> {
    let (id, step) = (id.to_owned(), step.to_owned());
    move |source| LaunchError::Setup { id, step, source }
}

/// Signals forwarded to the container's init while it runs.
const FORWARDED: [i32; 8] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Runs the bundle in the foreground (stdio inherited) and returns the process's exit status
/// (128 + signal when killed). The calling process must be single-threaded.
pub fn run(options: &RunOptions) -> Result<i32, LaunchError> {
    let id = options.id.as_str();
    let setup = |step: &str| setup_error(id, step);
    let placed = match &options.wait_in_cgroup {
        Some(path) => {
            let cgroups = make_cgroups(path).map_err(setup("create the container's cgroups"))?;
            join_cgroups(&cgroups).map_err(setup("move into the container's cgroups"))?;
            announce_placed().map_err(setup("announce its placement"))?;
            wait_for_start(id)?;
            Some(cgroups)
        }
        None => None,
    };
    let config = ContainerConfig::load(&options.bundle)?;
    if let Some(path) = &options.wait_in_cgroup
        && config.cgroups_path.as_ref() != Some(path)
    {
        return Err(LaunchError::Start {
            id: id.to_owned(),
            message: format!(
                "the spec's cgroup {:?} is not {}, the one the launcher waited in",
                config.cgroups_path,
                path.display()
            ),
        });
    }
    std::fs::create_dir_all(&options.root).map_err(setup("create the state root"))?;
    let filter = match &config.seccomp {
        Some(profile) => {
            Some(
                Filter::cached(profile, &options.root).map_err(|e| LaunchError::Start {
                    id: id.to_owned(),
                    message: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    let dir = container_dir(&options.root, id)?;
    std::fs::create_dir(&dir).map_err(setup("create the container's state directory"))?;
    let result = run_in(options, &config, filter.as_ref(), placed);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Moves this process into each cgroup directory.
fn join_cgroups(cgroups: &[(Option<String>, PathBuf)]) -> std::io::Result<()> {
    let pid = std::process::id().to_string();
    for (_, dir) in cgroups {
        std::fs::write(dir.join("cgroup.procs"), &pid)?;
    }
    Ok(())
}

/// Writes the placement byte to standard output.
fn announce_placed() -> std::io::Result<()> {
    loop {
        match rustix::io::write(rustix::stdio::stdout(), &[PLACED_BYTE]) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(std::io::ErrorKind::WriteZero.into()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The byte a placed launcher writes once it is in its cgroups.
const PLACED_BYTE: u8 = b'P';

/// Reads the start byte from standard input (one byte: the rest is the container's).
fn wait_for_start(id: &str) -> Result<(), LaunchError> {
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(rustix::stdio::stdin(), &mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => {
                return Err(LaunchError::NotStarted { id: id.to_owned() });
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(setup_error(id, "wait for the start byte")(e.into())),
        }
    }
}

fn run_in(
    options: &RunOptions,
    config: &ContainerConfig,
    filter: Option<&Filter>,
    placed: Option<Vec<(Option<String>, PathBuf)>>,
) -> Result<i32, LaunchError> {
    let id = options.id.as_str();
    let setup = |step: &str| setup_error(id, step);
    if let Some(netns) = &config.netns {
        let fd = std::fs::File::open(netns).map_err(setup("open the network namespace"))?;
        rustix::thread::move_into_link_name_space(
            fd.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| setup("join the network namespace")(e.into()))?;
    }
    // A placed launcher is in its cgroups already: the init is born there.
    let join = placed.is_none();
    let cgroups = match (placed, &config.cgroups_path) {
        (Some(cgroups), _) => cgroups,
        (None, Some(path)) => {
            make_cgroups(path).map_err(setup("create the container's cgroups"))?
        }
        (None, None) => Vec::new(),
    };
    let cgroup_binds: CgroupBinds = cgroups
        .iter()
        .filter_map(|(name, dir)| name.clone().map(|n| (n, dir.clone())))
        .collect();
    let cgroup_dirs: Vec<PathBuf> = cgroups.into_iter().map(|(_, d)| d).collect();
    let joined: &[PathBuf] = if join { &cgroup_dirs } else { &[] };
    let outcome = clone_and_wait(options, config, filter, &cgroup_binds, joined, &cgroup_dirs);
    if join {
        remove_cgroups(&cgroup_dirs);
    }
    outcome
}

fn clone_and_wait(
    options: &RunOptions,
    config: &ContainerConfig,
    filter: Option<&Filter>,
    cgroup_binds: &CgroupBinds,
    join: &[PathBuf],
    cgroup_dirs: &[PathBuf],
) -> Result<i32, LaunchError> {
    let id = options.id.as_str();
    let setup = |step: &str| setup_error(id, step);
    let pipe = || -> std::io::Result<(OwnedFd, OwnedFd)> {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(Into::into)
    };
    let (go_read, go_write) = pipe().map_err(setup("pipe"))?;
    let (errors_read, errors_write) = pipe().map_err(setup("pipe"))?;
    let console = if config.terminal {
        Some(crate::tty::socket_pair().map_err(setup("socketpair"))?)
    } else {
        None
    };
    let (console_launcher, console_init) = match console {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let last_cap = caps::last_cap();
    // Signals to forward are blocked here and waited for; the init unblocks them.
    // SAFETY: sigset operations on a local set.
    let mask = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain([&libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let flags = config.new_namespaces & !libc::CLONE_NEWNET | libc::SIGCHLD;
    let flags = if config.netns.is_none() {
        flags | (config.new_namespaces & libc::CLONE_NEWNET)
    } else {
        flags
    };
    // SAFETY: clone without a new stack behaves as fork; this process is single-threaded, so
    // the child may run any code. The child never returns from `init::run`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(setup("clone the container's init")(
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        drop(go_write);
        drop(errors_read);
        drop(console_launcher);
        init::run(InitArgs {
            config,
            filter,
            cgroup_binds,
            last_cap,
            go: go_read,
            errors: errors_write,
            console: console_init,
        });
    }
    let pid = pid as i32;
    drop(go_read);
    drop(errors_write);
    drop(console_init);
    let recorded = record(options, pid, join, cgroup_dirs);
    if let Err(e) = recorded {
        kill_and_reap(pid);
        return Err(e);
    }
    // Let the init go on, then read its error, if any, until the exec closes the pipe.
    let mut go = std::fs::File::from(go_write);
    let _ = go.write_all(&[1]);
    drop(go);
    // With a terminal the init sends the pty's master before it execs (or ends without it).
    let master = match &console_launcher {
        Some(socket) => crate::tty::recv_master(socket).map_err(setup("receive the pty"))?,
        None => None,
    };
    let mut message = String::new();
    let _ = std::fs::File::from(errors_read).read_to_string(&mut message);
    if !message.is_empty() {
        kill_and_reap(pid);
        return Err(LaunchError::Start {
            id: id.to_owned(),
            message,
        });
    }
    let status = match master {
        Some(master) => {
            crate::tty::relay_until_exit(pid, master, &mask).map_err(setup("relay the terminal"))?
        }
        None => wait_forwarding(pid, &mask),
    };
    Ok(exit_code(status))
}

/// The exit status of a wait status: the code, or 128 + the signal that killed the process.
fn exit_code(status: i32) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Puts the init in the cgroups of `join` and writes the pid file and the state (which names
/// all of the container's cgroups).
fn record(
    options: &RunOptions,
    pid: i32,
    join: &[PathBuf],
    cgroup_dirs: &[PathBuf],
) -> Result<(), LaunchError> {
    let id = options.id.as_str();
    for cgroup in join {
        let procs = cgroup.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|source| LaunchError::Write {
            path: procs.clone(),
            source,
        })?;
    }
    if let Some(pid_file) = &options.pid_file {
        let tmp = pid_file.with_extension("tmp");
        std::fs::write(&tmp, pid.to_string())
            .and_then(|()| std::fs::rename(&tmp, pid_file))
            .map_err(|source| LaunchError::Write {
                path: pid_file.clone(),
                source,
            })?;
    }
    let state = ContainerState {
        id: id.to_owned(),
        pid,
        start_time: process_start_time(pid).unwrap_or(0),
        bundle: options.bundle.clone(),
        cgroups: cgroup_dirs.to_vec(),
    };
    state.save(&options.root)?;
    Ok(())
}

fn kill_and_reap(pid: i32) {
    // SAFETY: plain integer syscalls on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// The init's wait status once it has exited (reaped here), else `None`.
pub(crate) fn reaped(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        return Some(status);
    }
    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
        return Some(255 << 8);
    }
    None
}

/// Waits for the init's exit, forwarding the blocked signals to it; its wait status.
fn wait_forwarding(pid: i32, mask: &libc::sigset_t) -> i32 {
    loop {
        if let Some(status) = reaped(pid) {
            return status;
        }
        // SAFETY: `mask` is an initialized sigset; the info pointer may be null.
        let signal = unsafe { libc::sigwaitinfo(mask, std::ptr::null_mut()) };
        if signal > 0 && signal != libc::SIGCHLD {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// Creates the container's cgroup `path` in every hierarchy where its parent exists (the
/// executor made the parent with the exec's limits), returning each hierarchy's name (for the
/// container's `/sys/fs/cgroup` on v1; `None` on v2) and the directory made.
fn make_cgroups(path: &Path) -> std::io::Result<Vec<(Option<String>, PathBuf)>> {
    let root = Path::new("/sys/fs/cgroup");
    let rel = path.strip_prefix("/").unwrap_or(path);
    let parent_exists = |base: &Path| rel.parent().is_none_or(|p| base.join(p).is_dir());
    let mut made = Vec::new();
    if root.join("cgroup.controllers").exists() {
        if parent_exists(root) {
            let dir = root.join(rel);
            std::fs::create_dir_all(&dir)?;
            made.push((None, dir));
        }
        return Ok(made);
    }
    let mut entries: Vec<_> = std::fs::read_dir(root)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        // Links (`cpu` -> `cpu,cpuacct`) name hierarchies listed under their own name; the
        // unified hierarchy of a hybrid host is not one the container's limits live in.
        if !kind.is_dir() || name == "unified" {
            continue;
        }
        let base = entry.path();
        if parent_exists(&base) {
            let dir = base.join(rel);
            std::fs::create_dir_all(&dir)?;
            if name.split(',').any(|c| c == "cpuset") {
                // A new cpuset has no cpus or memory nodes: its parent's, as runc does.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if let Some(parent) = dir.parent() {
                        let value = std::fs::read_to_string(parent.join(file))?;
                        std::fs::write(dir.join(file), value.trim())?;
                    }
                }
            }
            made.push((Some(name), dir));
        }
    }
    Ok(made)
}
