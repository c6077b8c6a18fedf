//! The engine the CLI uses when none is named ([`LocalEngine`]): the one listening on the
//! default socket of the default state directory, started in the background when none answers
//! (`dagr-engine` beside `dagr`, else from the `PATH`), one per state directory however many
//! CLIs start at once (an exclusive lock on `engine.lock` around "check, start, wait until it
//! answers"); and `dagr engine status|stop`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a started engine may take to answer (it checks runc and sets up its network).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `stop` waits for the engine to finish its sessions and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The engine of a state directory on this machine.
#[derive(Debug, Clone)]
pub struct LocalEngine {
    pub state_dir: PathBuf,
}

impl LocalEngine {
    /// `DAGR_STATE_DIR`, else the engine's own default: /var/lib/dagr as root, else
    /// $XDG_STATE_HOME/dagr (or ~/.local/state/dagr).
    pub fn default_location() -> LocalEngine {
        let state_dir = std::env::var_os("DAGR_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // SAFETY: geteuid has no preconditions and cannot fail.
                if unsafe { libc::geteuid() } == 0 {
                    return PathBuf::from("/var/lib/dagr");
                }
                std::env::var_os("XDG_STATE_HOME")
                    .filter(|v| !v.is_empty())
                    .map(|x| PathBuf::from(x).join("dagr"))
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/dagr"))
                    })
                    .unwrap_or_else(|| PathBuf::from("/tmp/dagr"))
            });
        LocalEngine { state_dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("engine.sock")
    }

    /// `unix://<state>/engine.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn log_file(&self) -> PathBuf {
        self.state_dir.join("engine.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.state_dir.join("engine.pid")
    }

    fn answers(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.socket()).is_ok()
    }

    /// Makes sure an engine answers on the socket: starts one when none does.
    pub async fn ensure_running(&self) -> anyhow::Result<()> {
        if self.answers() {
            return Ok(());
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.start_locked())
            .await
            .context("starting the engine")?
    }

    /// Under the lock: check again (another CLI may have started it meanwhile), else start.
    fn start_locked(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("creating {}", self.state_dir.display()))?;
        let lock_path = self.state_dir.join("engine.lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if self.answers() {
            return Ok(());
        }
        let binary = engine_binary();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .with_context(|| format!("opening {}", self.log_file().display()))?;
        let extra: Vec<String> = std::env::var("DAGR_ENGINE_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let mut cmd = Command::new(&binary);
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("engine log")?)
            .stderr(log);
        // A session of its own: the terminal's ^C and hang-up reach the CLI, not the engine.
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (build it with `cargo build -p dagr-engine`, or name an engine with --host)",
                binary.display()
            )
        })?;
        let started = Instant::now();
        while !self.answers() {
            if let Some(status) = child.try_wait().context("waiting for the engine")? {
                bail!(
                    "the engine exited ({status}) before answering; its log {} ends with:\n{}",
                    self.log_file().display(),
                    log_tail(&self.log_file())
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "the engine (pid {}) did not answer on {} within {}s; see {}",
                    child.id(),
                    self.socket().display(),
                    START_TIMEOUT.as_secs(),
                    self.log_file().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "dagr: started an engine (pid {}) at {} in {} ms; log {}; stop it with `dagr engine stop`",
            child.id(),
            self.host(),
            started.elapsed().as_millis(),
            self.log_file().display()
        );
        Ok(())
    }

    /// The pid in the engine's pid file, if that process is a live `dagr-engine`.
    fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_live_engine(pid).then_some(pid)
    }

    /// `dagr engine status`.
    pub fn status(&self) -> anyhow::Result<ExitCode> {
        if !self.answers() {
            println!(
                "no engine answers at {} (dagr starts one when a command needs it)",
                self.host()
            );
            return Ok(ExitCode::from(1));
        }
        let metrics = unix_get(&self.socket(), "/metrics").unwrap_or_default();
        let sessions = metrics
            .lines()
            .find_map(|l| l.strip_prefix("dagr_sessions_active "))
            .unwrap_or("?");
        println!("engine at {}", self.host());
        match self.running_pid() {
            Some(pid) => println!("  pid {pid}"),
            None => println!(
                "  pid unknown (no pid file in {})",
                self.state_dir.display()
            ),
        }
        println!("  state directory {}", self.state_dir.display());
        println!("  log {}", self.log_file().display());
        println!("  active sessions {sessions}");
        println!("stop it with `dagr engine stop`");
        Ok(ExitCode::SUCCESS)
    }

    /// `dagr engine stop`: SIGTERM (the engine ends its sessions, then exits), then waits.
    pub fn stop(&self) -> anyhow::Result<ExitCode> {
        let Some(pid) = self.running_pid() else {
            if self.answers() {
                bail!(
                    "an engine answers at {} but {} names no live dagr-engine; stop it where it was started",
                    self.host(),
                    self.pid_file().display()
                );
            }
            println!("no engine is running at {}", self.host());
            return Ok(ExitCode::SUCCESS);
        };
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).context("pid")?,
            rustix::process::Signal::TERM,
        )
        .with_context(|| format!("signalling engine pid {pid}"))?;
        let started = Instant::now();
        while is_live_engine(pid) {
            if started.elapsed() > STOP_TIMEOUT {
                bail!(
                    "engine pid {pid} is still running {}s after SIGTERM; see {}",
                    STOP_TIMEOUT.as_secs(),
                    self.log_file().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("stopped the engine at {} (pid {pid})", self.host());
        Ok(ExitCode::SUCCESS)
    }
}

/// `dagr-engine` beside this executable, else the name for a `PATH` lookup.
fn engine_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("dagr-engine"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("dagr-engine"))
}

/// Whether `pid` is a `dagr-engine` that has not exited (a zombie has).
fn is_live_engine(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let is_engine = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(argv0))
        .file_name()
        .is_some_and(|n| n == "dagr-engine");
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    is_engine && !zombie
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A plain HTTP/1.1 GET over a unix socket (unscoped routes such as `/metrics`).
fn unix_get(socket: &Path, path: &str) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: dagr\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}
