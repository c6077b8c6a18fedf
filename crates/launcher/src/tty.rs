//! Terminals, as runc runs them in the foreground: the init opens a pty in the container's own
//! devpts (after the pivot) and makes its slave the process's controlling terminal and stdio,
//! then passes the master to the launcher over a socket ([`send_master`], [`recv_master`]); the
//! launcher relays between its own stdio (the caller's terminal) and the master, and copies its
//! terminal's window size to the master on `SIGWINCH` ([`relay_until_exit`]).

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::pty::OpenptFlags;

/// The socket pair the master travels on (the launcher's end, the init's end).
pub(crate) fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(Into::into)
}

/// In the init, after the pivot: a pty of the container's devpts as the controlling terminal
/// and stdio (sized as the launcher's terminal), its master sent on `socket`.
pub(crate) fn setup_in_container(socket: &OwnedFd) -> Result<(), String> {
    let fail = |step: &'static str| move |e: rustix::io::Errno| format!("terminal: {step}: {e}");
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(fail("open /dev/ptmx"))?;
    rustix::pty::unlockpt(&master).map_err(fail("unlock the pty"))?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(fail("open the pty's slave"))?;
    if let Ok(size) = rustix::termios::tcgetwinsize(rustix::stdio::stdin()) {
        rustix::termios::tcsetwinsize(&slave, size).map_err(fail("set the window size"))?;
    }
    rustix::process::setsid().map_err(fail("setsid"))?;
    rustix::process::ioctl_tiocsctty(&slave).map_err(fail("make it the controlling terminal"))?;
    rustix::stdio::dup2_stdin(&slave).map_err(fail("dup2"))?;
    rustix::stdio::dup2_stdout(&slave).map_err(fail("dup2"))?;
    rustix::stdio::dup2_stderr(&slave).map_err(fail("dup2"))?;
    send_master(socket, master.as_fd()).map_err(fail("send the master"))
}

fn send_master(socket: &OwnedFd, master: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [master];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"m")],
        &mut control,
        SendFlags::empty(),
    )
    .map(drop)
}

/// In the launcher: the master the init sent, or `None` when the init ended without one.
pub(crate) fn recv_master(socket: &OwnedFd) -> std::io::Result<Option<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    if received.bytes == 0 {
        return Ok(None);
    }
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Relays between the launcher's stdio and `master` until the init `pid` exits, handling the
/// signals in `mask` (blocked: read from a signalfd): SIGCHLD reaps, SIGWINCH resizes, the rest
/// are forwarded. Returns the init's wait status.
pub(crate) fn relay_until_exit(
    pid: i32,
    master: OwnedFd,
    mask: &libc::sigset_t,
) -> std::io::Result<i32> {
    // SAFETY: `mask` is an initialized sigset; the result is a new descriptor we own.
    let sfd = unsafe { libc::signalfd(-1, mask, libc::SFD_CLOEXEC) };
    if sfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `sfd` was just returned by signalfd and is owned by nobody else.
    let signals: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(sfd) };
    let stdin = rustix::stdio::stdin();
    let stdout = rustix::stdio::stdout();
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = vec![PollFd::new(&signals, PollFlags::IN)];
        if master_open {
            fds.push(PollFd::new(&master, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<(i32, PollFlags)> = fds
            .iter()
            .map(|p| (p.as_fd().as_raw_fd(), p.revents()))
            .collect();
        for (fd, revents) in ready {
            if revents.is_empty() {
                continue;
            }
            if fd == signals.as_raw_fd() {
                let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
                if rustix::io::read(&signals, &mut info).is_err() {
                    continue;
                }
                let signal = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
                match signal {
                    libc::SIGCHLD => {
                        if let Some(status) = crate::run::reaped(pid) {
                            drain(&master, stdout, &mut buf);
                            return Ok(status);
                        }
                    }
                    libc::SIGWINCH => {
                        if let Ok(size) = rustix::termios::tcgetwinsize(stdin) {
                            let _ = rustix::termios::tcsetwinsize(&master, size);
                        }
                    }
                    other => {
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid, other) };
                    }
                }
            } else if fd == master.as_raw_fd() {
                match rustix::io::read(&master, &mut buf) {
                    Ok(0) | Err(rustix::io::Errno::IO) => master_open = false,
                    Ok(n) => {
                        write_all(stdout, &buf[..n]);
                    }
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                    Err(_) => master_open = false,
                }
            } else {
                match rustix::io::read(stdin, &mut buf) {
                    Ok(0) => stdin_open = false,
                    Ok(n) => {
                        if !write_all(master.as_fd(), &buf[..n]) {
                            stdin_open = false;
                        }
                    }
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                    Err(_) => stdin_open = false,
                }
            }
        }
    }
}

/// Copies what the master still holds once the process is gone.
fn drain(master: &OwnedFd, stdout: BorrowedFd<'_>, buf: &mut [u8]) {
    let _ = rustix::io::ioctl_fionbio(master, true);
    while let Ok(n) = rustix::io::read(master, &mut *buf) {
        if n == 0 || !write_all(stdout, &buf[..n]) {
            break;
        }
    }
}
