//! The container's init: the cloned child, pid 1 of its new pid namespace. It waits for the
//! launcher to put it in its cgroups, sets everything up and execs the process; a failure is
//! written to the error pipe (closed on a successful exec) and the init exits.

use std::ffi::{CStr, CString};
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;

use crate::caps;
use crate::config::ContainerConfig;
use crate::rootfs::{self, CgroupBinds};
use crate::seccomp::Filter;

/// What the init gets from the launcher, all prepared before the clone.
pub(crate) struct InitArgs<'a> {
    pub config: &'a ContainerConfig,
    pub filter: Option<&'a Filter>,
    pub cgroup_binds: &'a CgroupBinds,
    pub last_cap: u32,
    /// Read end: one byte once the launcher has recorded the container.
    pub go: OwnedFd,
    /// Write end, close-on-exec: the error, if any.
    pub errors: OwnedFd,
    /// With a terminal: the socket the pty's master is sent on.
    pub console: Option<OwnedFd>,
}

/// Runs in the child; never returns.
pub(crate) fn run(args: InitArgs<'_>) -> ! {
    let InitArgs { errors, .. } = &args;
    let message = match setup_and_exec(&args) {
        Ok(never) => match never {},
        Err(message) => message,
    };
    let mut out = std::fs::File::from(match errors.try_clone() {
        Ok(fd) => fd,
        Err(_) => exit(1),
    });
    let _ = out.write_all(message.as_bytes());
    exit(1)
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit handlers or
    // destructors (this is a forked copy).
    unsafe { libc::_exit(code) }
}

fn os(step: &str) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{step}: {e}")
}

enum Never {}

fn setup_and_exec(args: &InitArgs<'_>) -> Result<Never, String> {
    let config = args.config;
    // Signals the launcher blocked (to forward them) are open again here.
    // SAFETY: a plain sigset manipulated through libc on this thread.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        // Ignored signals stay ignored across exec: the launcher's runtime ignores SIGPIPE.
        for signal in 1..32 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
    }
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("set the parent-death signal: {e}"))?;
    // The launcher (outside this pid namespace) writes one byte once it has recorded the
    // container; end of file means it died, and the parent-death signal is on its way.
    let mut byte = [0u8; 1];
    let mut go = std::fs::File::from(args.go.try_clone().map_err(os("wait for the launcher"))?);
    if go.read(&mut byte).map_err(os("wait for the launcher"))? != 1 {
        return Err("the launcher went away".into());
    }
    close_inherited_on_exec().map_err(os("mark inherited descriptors close-on-exec"))?;
    rustix::process::umask(rustix::fs::Mode::empty());
    if let Some(hostname) = &config.hostname
        && config.new_namespaces & libc::CLONE_NEWUTS != 0
    {
        rustix::system::sethostname(hostname.as_bytes())
            .map_err(|e| format!("set the hostname {hostname:?}: {e}"))?;
    }
    rootfs::setup(config, args.cgroup_binds).map_err(|e| e.to_string())?;
    if let Some(console) = &args.console {
        crate::tty::setup_in_container(console)?;
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    for (resource, soft, hard) in &config.rlimits {
        let limit = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: a valid rlimit struct.
        if unsafe { libc::setrlimit(*resource as _, &limit) } != 0 {
            return Err(format!(
                "setrlimit {resource}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let cwd = if config.cwd.is_empty() {
        "/"
    } else {
        config.cwd.as_str()
    };
    // runc creates a missing working directory (as root, before the user changes).
    if std::fs::symlink_metadata(cwd).is_err() {
        std::fs::create_dir_all(cwd)
            .map_err(|e| format!("create the working directory {cwd}: {e}"))?;
    }
    caps::drop_bounding(&config.caps, args.last_cap).map_err(os("drop capabilities"))?;
    if config.no_new_privileges {
        rustix::thread::set_no_new_privs(true).map_err(|e| format!("set no_new_privs: {e}"))?;
    } else if let Some(filter) = args.filter {
        // Loaded while CAP_SYS_ADMIN is held (no no_new_privs needed); the profile allows the
        // calls left before the exec.
        filter.load().map_err(|e| e.to_string())?;
    }
    set_user(config)?;
    caps::apply(&config.caps, args.last_cap).map_err(os("set capabilities"))?;
    std::env::set_current_dir(cwd).map_err(|e| format!("chdir to {cwd}: {e}"))?;
    if config.no_new_privileges
        && let Some(filter) = args.filter
    {
        filter.load().map_err(|e| e.to_string())?;
    }
    Err(exec(config))
}

/// Marks every descriptor above stdio close-on-exec, so that nothing the launcher inherited (from
/// the engine, or a test) reaches the container's process.
fn close_inherited_on_exec() -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range(2) with integer arguments; it only sets flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: each open descriptor in turn.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; a closed one just fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

fn check(what: &str, r: libc::c_int) -> Result<(), String> {
    if r != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_user(config: &ContainerConfig) -> Result<(), String> {
    let groups: Vec<libc::gid_t> = config.additional_gids.clone();
    // SAFETY: valid pointers and lengths; plain integer ids.
    unsafe {
        check("setgroups", libc::setgroups(groups.len(), groups.as_ptr()))?;
        check(
            "setresgid",
            libc::setresgid(config.gid, config.gid, config.gid),
        )?;
        check(
            "setresuid",
            libc::setresuid(config.uid, config.uid, config.uid),
        )?;
    }
    Ok(())
}

/// Execs `args[0]` (looked up in the spec's `PATH` unless it holds a `/`); returns the error.
fn exec(config: &ContainerConfig) -> String {
    let program = &config.args[0];
    let name = program.to_string_lossy().into_owned();
    let mut argv: Vec<*const libc::c_char> = config.args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = config.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let try_exec = |path: &CStr| -> std::io::Error {
        // SAFETY: argv and envp are null-terminated arrays of valid C strings that outlive the
        // call.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        std::io::Error::last_os_error()
    };
    if name.contains('/') {
        let e = try_exec(program);
        return format!("exec: {name:?}: {}", lowercase(&e));
    }
    let mut denied = None;
    for dir in config.path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = std::path::Path::new(dir).join(&name);
        let Ok(candidate) = CString::new(candidate.as_os_str().as_bytes()) else {
            continue;
        };
        let e = try_exec(&candidate);
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            Some(libc::EACCES) => denied = Some(e),
            _ => return format!("exec: {name:?}: {}", lowercase(&e)),
        }
    }
    match denied {
        Some(e) => format!("exec: {name:?}: {}", lowercase(&e)),
        None => format!("exec: {name:?}: executable file not found in $PATH"),
    }
}

fn lowercase(e: &std::io::Error) -> String {
    let text = e.to_string();
    // "No such file or directory (os error 2)" -> "no such file or directory"
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}
