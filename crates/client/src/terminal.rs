//! [`StdioTerminal`]: the user's terminal is this process's stdin and stdout.

use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dagr_attach::{TerminalInput, TerminalOutput, TerminalProvider};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// How often the stdin reader checks whether its session ended.
const STDIN_POLL: Duration = Duration::from_millis(50);

/// Carries terminal sessions to this process's stdin and stdout. While a session runs, a stdin
/// that is a terminal is in raw mode (every key goes to the process, ^C included) and window
/// size changes (`SIGWINCH`) are forwarded; the mode is restored when the process exits. A
/// stdin that is not a terminal is forwarded as it is, its end sent as ^D.
#[derive(Debug, Default)]
pub struct StdioTerminal {
    last_exit: Arc<Mutex<Option<(i32, String)>>>,
    /// The raw mode of the running session, if any.
    raw: Arc<Mutex<Option<RawMode>>>,
}

impl StdioTerminal {
    pub fn new() -> Self {
        Self::default()
    }

    /// The exit code (and error, if it could not run) of the last session's process.
    pub fn last_exit(&self) -> Option<(i32, String)> {
        self.last_exit.lock().clone()
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

/// Reads stdin until `stop` (polling, so the thread ends with its session and never keeps a
/// read pending that would steal the next session's first keys).
fn read_stdin(input: mpsc::Sender<TerminalInput>, stop: Arc<AtomicBool>, is_tty: bool) {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let mut buf = [0u8; 4096];
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
                // End of a piped stdin: what ^D at the start of a line does on a terminal.
                if !is_tty {
                    let _ = input.blocking_send(TerminalInput::Data(Bytes::from_static(b"\x04")));
                }
                return;
            }
            Ok(n) => {
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
    ) -> Result<mpsc::Receiver<TerminalInput>, String> {
        let (input, input_rx) = mpsc::channel(64);
        let (cols, rows) = window_size();
        input
            .try_send(TerminalInput::Resize { cols, rows })
            .map_err(|e| e.to_string())?;
        let stdin = std::io::stdin();
        let is_tty = rustix::termios::isatty(stdin.as_fd());
        if is_tty {
            *self.raw.lock() = RawMode::enable(stdin.as_fd());
        }
        let raw = self.raw.clone();
        let stop = Arc::new(AtomicBool::new(false));

        let reader_input = input.clone();
        let reader_stop = stop.clone();
        std::thread::Builder::new()
            .name("dagr-terminal-stdin".into())
            .spawn(move || read_stdin(reader_input, reader_stop, is_tty))
            .map_err(|e| format!("reading stdin: {e}"))?;

        let mut winch =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .map_err(|e| format!("watching window size changes: {e}"))?;
        let last_exit = self.last_exit.clone();
        tokio::spawn(async move {
            // `input` lives here until the exit: the process keeps its stdin while it runs.
            loop {
                tokio::select! {
                    item = output.recv() => match item {
                        Some(TerminalOutput::Data(bytes)) => {
                            let written = tokio::task::spawn_blocking(move || {
                                let mut stdout = std::io::stdout().lock();
                                stdout.write_all(&bytes).and_then(|()| stdout.flush())
                            })
                            .await;
                            if !matches!(written, Ok(Ok(()))) {
                                break;
                            }
                        }
                        Some(TerminalOutput::Exit { code, error }) => {
                            *last_exit.lock() = Some((code, error));
                            break;
                        }
                        None => break,
                    },
                    _ = winch.recv() => {
                        let (cols, rows) = window_size();
                        let _ = input.send(TerminalInput::Resize { cols, rows }).await;
                    }
                }
            }
            stop.store(true, Ordering::Release);
            drop(raw.lock().take());
            drop(input);
        });
        Ok(input_rx)
    }
}
