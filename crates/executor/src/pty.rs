//! Interactive execs: the host pseudo-terminal given to `runc run` as its stdio.
//!
//! With `process.terminal` set, a foreground `runc run` allocates the container's own console and
//! copies between it and runc's stdin/stdout, which must be a terminal (runc puts it in raw mode
//! and copies its window size to the console on `SIGWINCH`). runc 1.1 refuses `--console-socket`
//! unless it detaches, so this keeps runc in the foreground, where its exit status is the
//! process's, and gives it the slave end of a [`Pty`] whose master the executor reads and
//! writes. A resize sets the master's window size and sends `SIGWINCH` to runc.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use rustix::pty::OpenptFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl Default for WindowSize {
    /// 80x24, the size of a terminal that never reported one.
    fn default() -> Self {
        WindowSize { cols: 80, rows: 24 }
    }
}

/// What the user sends to an interactive exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalInput {
    /// Keystrokes (bytes written to the terminal).
    Data(Bytes),
    /// The user's terminal changed size.
    Resize(WindowSize),
}

/// Runs an exec with a terminal (see [`crate::RunOptions::terminal`]): its output goes to the
/// run's output sink as [`crate::OutputStream::Stdout`] chunks; `input` carries keystrokes and
/// resizes. When `input` closes before the process exits (the user went away), the exec is
/// killed.
#[derive(Debug)]
pub struct TerminalIo {
    /// The size the terminal starts with.
    pub size: WindowSize,
    /// The user's input.
    pub input: mpsc::Receiver<TerminalInput>,
}

/// The master end of a pseudo-terminal, non-blocking, registered with the tokio reactor.
#[derive(Debug)]
pub(crate) struct Pty {
    master: AsyncFd<OwnedFd>,
}

impl Pty {
    /// Opens a pseudo-terminal of `size`; returns its master and its slave end.
    pub(crate) fn open(size: WindowSize) -> io::Result<(Pty, OwnedFd)> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let slave = rustix::pty::ioctl_tiocgptpeer(
            &master,
            OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
        )?;
        set_size(&master, size)?;
        // Raw from the start: runc sets it raw too, but only once it runs, and bytes typed
        // ahead must not be echoed or translated by this outer line discipline.
        let mut termios = rustix::termios::tcgetattr(&slave)?;
        termios.make_raw();
        rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &termios)?;
        set_nonblocking(&master)?;
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which closes it only after
        // deregistering it; nothing else holds or replaces this descriptor.
        let master = unsafe { AsyncFd::register(master)? };
        Ok((Pty { master }, slave))
    }

    /// Sets the terminal's window size.
    pub(crate) fn resize(&self, size: WindowSize) -> io::Result<()> {
        set_size(self.master.get_ref(), size)
    }

    /// Writes all of `data` to the terminal.
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

impl AsyncRead for &Pty {
    /// Reads output; the end (`EIO` once every slave descriptor is closed) reads as end of file.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.master.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

fn set_size(fd: impl AsFd, size: WindowSize) -> io::Result<()> {
    rustix::termios::tcsetwinsize(
        fd,
        rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .map_err(io::Error::from)
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn bytes_written_to_the_slave_are_read_from_the_master_then_eof() {
        let (pty, slave) = Pty::open(WindowSize {
            cols: 100,
            rows: 30,
        })
        .unwrap();
        let size = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (100, 30));
        pty.resize(WindowSize {
            cols: 120,
            rows: 40,
        })
        .unwrap();
        let size = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (120, 40));

        // Raw: input written to the master reaches the slave unchanged and is not echoed;
        // output written to the slave reaches the master as written.
        pty.write_all(b"hi\r").await.unwrap();
        let mut line = [0u8; 3];
        rustix::io::read(&slave, &mut line).unwrap();
        assert_eq!(&line, b"hi\r");
        rustix::io::write(&slave, b"out\n").unwrap();
        drop(slave);
        let mut all = Vec::new();
        (&pty).read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"out\n");
    }
}
