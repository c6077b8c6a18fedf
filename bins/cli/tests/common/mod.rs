//! What the CLI's integration tests share: the two binaries under test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `dagr` binary of this package.
pub fn dagr() -> &'static str {
    env!("CARGO_BIN_EXE_dagr")
}

/// `dagr-engine`, built next to `dagr` by `cargo test --workspace` / `cargo xtask test`.
pub fn engine_bin() -> PathBuf {
    let p = Path::new(dagr()).with_file_name("dagr-engine");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p dagr-engine` (cargo xtask test does)",
        p.display()
    );
    p
}

/// Starts `dagr ARGS` with `envs`, no engine named by the environment (`DAGR_HOST`,
/// `DAGGER_SESSION_PORT` removed), `stdin` written to it and closed, stdout and stderr piped.
pub fn spawn_dagr(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> std::process::Child {
    use std::io::Write as _;
    let mut cmd = Command::new(dagr());
    cmd.args(args)
        .env_remove("DAGR_HOST")
        .env_remove("DAGGER_SESSION_PORT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("dagr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child
}

/// [`spawn_dagr`], waited for.
pub fn run_dagr(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> std::process::Output {
    spawn_dagr(args, envs, stdin)
        .wait_with_output()
        .expect("dagr")
}

/// A detached tmux server with one session running a shell command in a pane, on a private
/// socket. Killed on drop.
pub struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    pub fn start(dir: &Path, command: &str, cols: u16, rows: u16) -> Tmux {
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let out = tmux
            .command()
            .args(["new-session", "-d", "-s", "t", "-x"])
            .arg(cols.to_string())
            .arg("-y")
            .arg(rows.to_string())
            .arg(command)
            .output()
            .expect("tmux (apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).args(["-f", "/dev/null"]);
        cmd
    }

    pub fn tmux(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's text, scrollback included.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-1000", "-t", "t"])
    }

    /// Types `line` and Enter.
    pub fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", line]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Waits (up to two minutes) until the screen shows a line for which `found` holds.
    pub fn wait_line(&self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.lines().any(|l| found(l.trim_end())) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no line with {what} on the terminal:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `rows cols` of the pane, as `stty size` prints them.
    pub fn pane_size(&self) -> String {
        self.tmux(&["display", "-p", "-t", "t", "#{pane_height} #{pane_width}"])
            .trim()
            .to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}
