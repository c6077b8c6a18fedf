//! [`StdioTerminal`]: the user's terminal is this process's stdin and stdout.

use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dagr_attach::{TerminalInput, TerminalOutput, TerminalProvider};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

/// How often the stdin reader checks whether its session ended.
const STDIN_POLL: Duration = Duration::from_millis(50);

/// Carries terminal sessions to this process's stdin and stdout. While a session runs, a stdin
/// that is a terminal is in raw mode (every key goes to the process, ^C included) and window
/// size changes (`SIGWINCH`) are forwarded; the mode is restored when the process exits. A
/// stdin that is not a terminal is forwarded as it is, its end sent as ^D.
#[derive(Debug)]
pub struct StdioTerminal {
    /// The exit code (and error) of the last session's process, set once all its output is
    /// written; `None` while a session runs.
    last_exit: watch::Sender<Option<(i32, String)>>,
    /// The raw mode of the running session, if any.
    raw: Arc<Mutex<Option<RawMode>>>,
}

impl Default for StdioTerminal {
    fn default() -> Self {
        StdioTerminal {
            last_exit: watch::Sender::new(None),
            raw: Arc::default(),
        }
    }
}

impl StdioTerminal {
    pub fn new() -> Self {
        Self::default()
    }

    /// The exit code (and error, if it could not run) of the last session's process.
    pub fn last_exit(&self) -> Option<(i32, String)> {
        self.last_exit.borrow().clone()
    }

    /// Waits up to `timeout` for the last session's exit: the engine answers the query that
    /// ran it on another connection, possibly before the exit and the last output got here.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<(i32, String)> {
        let mut exit = self.last_exit.subscribe();
        match tokio::time::timeout(timeout, exit.wait_for(Option::is_some)).await {
            Ok(Ok(exit)) => exit.clone(),
            _ => None,
        }
    }

    /// Puts the terminal back in the mode it had before a running session (when leaving
    /// early, before printing anything).
    pub fn restore(&self) {
        drop(self.raw.lock().take());
    }
}

/// The size of the terminal on stdout, else stdin, else 80x24.
fn window_size() -> (u16, u16) {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    [stdout.as_fd(), stdin.as_fd()]
        .into_iter()
        .find_map(|fd| rustix::termios::tcgetwinsize(fd).ok())
        .filter(|ws| ws.ws_col > 0 && ws.ws_row > 0)
        .map_or((80, 24), |ws| (ws.ws_col, ws.ws_row))
}

/// Raw mode on a terminal, undone on drop.
#[derive(Debug)]
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enable(fd: BorrowedFd<'_>) -> Option<RawMode> {
        let saved = rustix::termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = rustix::termios::tcsetattr(
            stdin.as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Reads stdin until `stop`, polling so that the thread ends with its session instead of
/// staying blocked in a read (a read already under way when the session ends still takes what
/// it reads, at most one poll interval's worth of typing).
fn read_stdin(input: mpsc::Sender<TerminalInput>, stop: Arc<AtomicBool>, is_tty: bool) {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let mut buf = [0u8; 4096];
    let mut line_open = false;
    while !stop.load(Ordering::Acquire) {
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(STDIN_POLL).ok();
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => {
                // End of a piped stdin: what ^D at the start of a line does on a terminal (a
                // first ^D ends an unfinished line).
                if !is_tty {
                    let eof: &'static [u8] = if line_open { b"\x04\x04" } else { b"\x04" };
                    let _ = input.blocking_send(TerminalInput::Data(Bytes::from_static(eof)));
                }
                return;
            }
            Ok(n) => {
                line_open = !matches!(buf[n - 1], b'\n' | b'\r');
                let data = Bytes::copy_from_slice(&buf[..n]);
                if input.blocking_send(TerminalInput::Data(data)).is_err() {
                    return;
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(_) => return,
        }
    }
}

impl TerminalProvider for StdioTerminal {
    fn open(
        &self,
        mut output: mpsc::Receiver<TerminalOutput>,
    ) -> std::io::Result<mpsc::Receiver<TerminalInput>> {
        let (input, input_rx) = mpsc::channel(64);
        let (cols, rows) = window_size();
        input
            .try_send(TerminalInput::Resize { cols, rows })
            .map_err(std::io::Error::other)?;
        let mut winch =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        let stdin = std::io::stdin();
        let is_tty = rustix::termios::isatty(stdin.as_fd());
        let stop = Arc::new(AtomicBool::new(false));
        let reader_input = input.clone();
        let reader_stop = stop.clone();
        std::thread::Builder::new()
            .name("dagr-terminal-stdin".into())
            .spawn(move || read_stdin(reader_input, reader_stop, is_tty))?;
        if is_tty {
            *self.raw.lock() = RawMode::enable(stdin.as_fd());
        }
        self.last_exit.send_replace(None);
        let (ended, mut ended_rx) = watch::channel(false);

        // Window sizes travel on their own task: waiting for room in the input channel must
        // never stop the output from being drained.
        let resize_input = input.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = winch.recv() => {
                        let (cols, rows) = window_size();
                        if resize_input.send(TerminalInput::Resize { cols, rows }).await.is_err() {
                            break;
                        }
                    }
                    _ = ended_rx.changed() => break,
                }
            }
        });

        let raw = self.raw.clone();
        let last_exit = self.last_exit.clone();
        tokio::spawn(async move {
            let mut exit = None;
            while let Some(item) = output.recv().await {
                match item {
                    TerminalOutput::Data(bytes) => {
                        let written = tokio::task::spawn_blocking(move || {
                            let mut stdout = std::io::stdout().lock();
                            stdout.write_all(&bytes).and_then(|()| stdout.flush())
                        })
                        .await;
                        if !matches!(written, Ok(Ok(()))) {
                            break;
                        }
                    }
                    TerminalOutput::Exit { code, error } => {
                        exit = Some((code, error));
                        break;
                    }
                }
            }
            stop.store(true, Ordering::Release);
            let _ = ended.send(true);
            drop(raw.lock().take());
            // `input` lived until here: the process keeps its stdin while it runs.
            drop(input);
            if exit.is_some() {
                last_exit.send_replace(exit);
            }
        });
        Ok(input_rx)
    }
}
