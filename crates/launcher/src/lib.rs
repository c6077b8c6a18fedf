//! dagr-launcher: runs an OCI bundle as a container, the part of an OCI runtime dagr's executor
//! uses, at a fraction of `runc run`'s start-up cost.
//!
//! - [`run`] runs a bundle in the foreground ([`RunOptions`]): it reads `config.json`
//!   ([`ContainerConfig`] checks that the spec asks only for what the launcher does), joins the
//!   network namespace and the cgroup, clones the container's init into new mount, pid, ipc and
//!   uts namespaces, records [`ContainerState`] under the state root, and returns the process's
//!   exit status once it ends (128 + signal when killed). The container's init sets up the root
//!   filesystem ([`rootfs`]: mounts resolved inside the rootfs, devices, `pivot_root`, masked and
//!   read-only paths), the hostname, rlimits, the seccomp filter ([`seccomp`], compiled by
//!   libseccomp once per profile and kept as BPF under the state root), the user and capabilities ([`caps`]), and execs the process. A failure before
//!   the exec is reported back on a pipe and returned as [`LaunchError::Start`].
//!   A launcher can also be started ahead of its container ([`RunOptions::wait_in_cgroup`]):
//!   it moves itself into the container's cgroups and waits for a start byte on stdin, so the
//!   init is born in them.
//! - [`kill`], [`delete`] and [`list`] act on the containers recorded under a state root, as
//!   `runc kill`, `runc delete --force` and `runc list -q` do.
//!
//! The launcher is one short-lived, single-threaded process per container (`dagr-launcher`, in
//! `bins/launcher`, with runc's command line for these commands): it forks with `clone(2)`, which
//! is only sound in a single-threaded process, so this crate must never be driven from a
//! multi-threaded one. If the launcher dies, the container's init gets SIGKILL (parent-death
//! signal) and its pid namespace goes with it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod caps;
mod config;
mod init;
pub mod rootfs;
mod run;
pub mod seccomp;
mod state;
mod tty;

pub use config::{ConfigError, ContainerConfig};
pub use run::{RunOptions, run};
pub use state::{ContainerState, StateError, delete, kill, list};

use std::path::PathBuf;

/// Errors of launching a container.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The bundle's spec could not be read or asks for something unsupported.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The container's state could not be recorded.
    #[error(transparent)]
    State(#[from] StateError),
    /// A step on the launcher's side failed.
    #[error("container {id}: {step}: {source}")]
    Setup {
        /// The container id.
        id: String,
        /// What was being done.
        step: String,
        /// The system error.
        source: std::io::Error,
    },
    /// The container's init failed before it could exec the process.
    #[error("container {id}: {message}")]
    Start {
        /// The container id.
        id: String,
        /// What failed, as the init reported it.
        message: String,
    },
    /// A placed launcher's standard input ended before the start byte (see
    /// [`RunOptions::wait_in_cgroup`]): its container was never asked for.
    #[error("container {id}: not started: standard input ended before the start byte")]
    NotStarted {
        /// The container id.
        id: String,
    },
    /// A file given on the command line could not be written.
    #[error("write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
}
