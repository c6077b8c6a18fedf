//! A network namespace of its own for each exec, with loopback up, pinned by a bind mount on a
//! file so that the runtime can join it by path and the executor can use it for the exec's life.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::mount::UnmountFlags;
use rustix::thread::UnshareFlags;

/// Errors of network namespace setup and removal.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The file the namespace is pinned on could not be created.
    #[error("create netns file {}: {source}", path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// `unshare(CLONE_NEWNET)` failed.
    #[error("unshare network namespace for {}: {source}", path.display())]
    Unshare {
        /// The netns file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// Loopback could not be brought up.
    #[error("bring loopback up in netns {}: {source}", path.display())]
    Loopback {
        /// The netns file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// The namespace could not be bind-mounted on its file.
    #[error("pin netns on {}: {source}", path.display())]
    Pin {
        /// The netns file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// A thread could not join the namespace.
    #[error("enter netns {}: {source}", path.display())]
    Enter {
        /// The netns file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// The namespace's interfaces could not be configured.
    #[error("configure netns {}: {source}", path.display())]
    Setup {
        /// The netns file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// The helper thread panicked.
    #[error("netns helper thread for {} panicked", path.display())]
    HelperPanicked {
        /// The netns file.
        path: PathBuf,
    },
    /// Unmounting or removing the pinned namespace failed.
    #[error("remove netns {}: {source}", path.display())]
    Remove {
        /// The netns file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
}

/// A network namespace pinned on a file. Dropping it unpins it and removes the file (the
/// namespace itself goes away with its last user).
#[derive(Debug)]
pub struct NetworkNamespace {
    path: PathBuf,
    pinned: bool,
}

/// Sets `IFF_UP` on the loopback interface of the calling thread's network namespace.
fn bring_loopback_up() -> io::Result<()> {
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: `ifreq` is plain old data (arrays, integers, a union of those and a pointer);
    // all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `socket` is an open socket and `request` a valid, NUL-terminated ifreq that the
    // kernel fills with the interface flags.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    unsafe {
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: same socket and request; SIOCSIFFLAGS only reads the request.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs on a dedicated thread: moves that thread into a new network namespace, brings loopback
/// up, runs `setup` there and pins the namespace on `path`.
fn create_on_this_thread(
    path: &Path,
    setup: impl FnOnce() -> io::Result<()>,
) -> Result<(), NetnsError> {
    // SAFETY: only the network namespace is unshared, not the file descriptor table, and only
    // on this short-lived helper thread that runs nothing else.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }.map_err(|e| {
        NetnsError::Unshare {
            path: path.to_path_buf(),
            source: e.into(),
        }
    })?;
    bring_loopback_up().map_err(|source| NetnsError::Loopback {
        path: path.to_path_buf(),
        source,
    })?;
    setup().map_err(|source| NetnsError::Setup {
        path: path.to_path_buf(),
        source,
    })?;
    rustix::mount::mount_bind("/proc/thread-self/ns/net", path).map_err(|e| NetnsError::Pin {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Runs `f` on a new thread that has joined the network namespace pinned on `path`, without
/// blocking the caller, and gives its result. Sockets created by `f` stay in the namespace.
pub async fn run_inside<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let (done, result) = tokio::sync::oneshot::channel();
    let thread_path = path.to_path_buf();
    std::thread::Builder::new()
        .name("dagr-netns".into())
        .spawn(move || {
            let entered = std::fs::File::open(&thread_path)
                .and_then(|file| {
                    use std::os::fd::AsFd;
                    rustix::thread::move_into_link_name_space(
                        file.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(io::Error::from)
                })
                .map_err(|source| NetnsError::Enter {
                    path: thread_path,
                    source,
                });
            // The caller may be gone; the thread ends either way.
            let _ = done.send(entered.map(|()| f()));
        })
        .map_err(|source| NetnsError::Enter {
            path: path.to_path_buf(),
            source,
        })?;
    result.await.map_err(|_| NetnsError::HelperPanicked {
        path: path.to_path_buf(),
    })?
}

impl NetworkNamespace {
    /// Creates a new network namespace with loopback up, pinned on the new file `path` (needs
    /// `CAP_SYS_ADMIN`). The calling thread's own namespace is untouched.
    pub fn create(path: &Path) -> Result<Self, NetnsError> {
        Self::create_with(path, || Ok(()))
    }

    /// [`NetworkNamespace::create`], running `setup` on a thread inside the new namespace
    /// before it is pinned (sockets it opens act on the new namespace).
    pub fn create_with(
        path: &Path,
        setup: impl FnOnce() -> io::Result<()> + Send,
    ) -> Result<Self, NetnsError> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| NetnsError::CreateFile {
                path: path.to_path_buf(),
                source,
            })?;
        let mut namespace = NetworkNamespace {
            path: path.to_path_buf(),
            pinned: false,
        };
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(|| create_on_this_thread(path, setup))
                .join()
                .map_err(|_| NetnsError::HelperPanicked {
                    path: path.to_path_buf(),
                })
        });
        match outcome {
            Ok(Ok(())) => {
                namespace.pinned = true;
                Ok(namespace)
            }
            Ok(Err(e)) | Err(e) => Err(e),
        }
    }

    /// The file the namespace is pinned on (usable with `setns(2)` or a runtime spec).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unpins the namespace and removes its file.
    pub fn remove(mut self) -> Result<(), NetnsError> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<(), NetnsError> {
        if self.pinned {
            rustix::mount::unmount(&self.path, UnmountFlags::DETACH).map_err(|e| {
                NetnsError::Remove {
                    path: self.path.clone(),
                    source: e.into(),
                }
            })?;
            self.pinned = false;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetnsError::Remove {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        if let Err(e) = self.remove_inner() {
            tracing::warn!(error = %e, "netns cleanup failed");
        }
    }
}
