//! dagr-executor: runs processes in OCI containers with runc.
//!
//! - [`Executor`] (configured by [`ExecutorConfig`]) prepares a bundle for an [`ExecSpec`] on a
//!   [`Rootfs`] (a directory, or containerd-style [`Mount`]s applied through [`MountOps`]), gives
//!   the container a network of its own from the configured [`Network`] (a namespace with
//!   loopback, and in bridge mode an address on the engine's bridge; see [`ExecNames`]), runs it
//!   with `runc run` ([`Runtime`]), captures stdout/stderr up to a cap ([`CapturedOutput`],
//!   optionally streamed as [`OutputChunk`]s) and returns an [`ExecResult`] or an [`ExecError`].
//!   With [`RunOptions::terminal`] the process runs on a pseudo-terminal fed by [`TerminalIo`]
//!   ([`TerminalInput`]: keystrokes and [`WindowSize`] changes).
//!   A concurrency limit bounds running execs; cancellation (a `CancellationToken` or dropping
//!   the future) kills the container's whole process tree. Every run ends with the container,
//!   its mounts and its network removed before its result is given, and its cgroups and
//!   bundle removed right after in the background (by a thread of its own when the run future
//!   is dropped; [`Executor::wait_idle`] waits for those). Nothing blocks the caller's
//!   runtime threads: bundle preparation and cleanup run on blocking threads, and the
//!   [`PrestartHook`] (run once the network namespace exists, see [`PrestartContext`]) is async.
//! - [`build_runtime_spec`] turns an [`ExecSpec`] into an OCI runtime spec with every field set
//!   explicitly (BuildKit's default capabilities, runc's masked paths, host-bounded rlimits).
//! - [`seccomp`]: Docker's default seccomp profile (none with `insecure_root_capabilities`).
//! - [`ExecLimits`] (processes, memory) apply to every exec through a cgroup of its own; a
//!   failed exec says which one it ran into ([`LimitHit`] in [`ExecError::Failed`]).
//! - With [`ExecutorConfig::init`] (the engine passes Debian's `tini-static`), every exec runs
//!   under that init as PID 1 ([`INIT_PATH`] on the `/dev` tmpfs): zombies are reaped, signals
//!   forwarded, the exit status kept; its failure to exec the process is a start error.
//! - [`emulation`]: execs of another architecture run under QEMU through `binfmt_misc`;
//!   [`register_qemu_handlers`] registers Debian's handlers at engine start and
//!   [`check_emulator`] says whether (and why not) a platform can run here.
//! - [`resolve_user`] resolves `uid[:gid]` / `name[:group]` against the rootfs' passwd and group
//!   files.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cgroup;
pub mod emulation;
mod executor;
mod mount;
mod output;
mod placed;
mod pty;
mod runtime;
pub mod seccomp;
mod spec;
mod user;

pub use cgroup::{ExecLimits, LimitHit, remove_exec_cgroups};
pub use dagr_network::{NetnsError, Network, NetworkError, NetworkNamespace};
pub use emulation::{EmulationError, check_emulator, register_qemu_handlers};
pub use executor::{
    DEFAULT_OUTPUT_CAP, ExecError, ExecNames, ExecPhases, ExecResult, Executor, ExecutorConfig,
    PrestartContext, PrestartError, PrestartFuture, PrestartHook, Rootfs, RunOptions, StaleState,
};
pub use mount::{Mount, MountError, MountOps, ParsedOptions, SyscallMountOps, parse_options};
pub use output::{CapturedOutput, OutputChunk, OutputStream};
pub use pty::{TerminalInput, TerminalIo, WindowSize};
pub use runtime::{Runtime, RuntimeError, runtime_log_errors};
pub use seccomp::{KernelVersion, default_profile};
pub use spec::{
    ALL_CAPABILITIES, ContainerMount, DEFAULT_CAPABILITIES, DEFAULT_PATH_ENV, ExecMount,
    ExecMountKind, ExecSpec, INIT_PATH, MASKED_PATHS, MAX_OPEN_FILES, OCI_VERSION, READONLY_PATHS,
    RuntimeSpecInput, SpecError, build_runtime_spec, host_capability_bound, process_env, validate,
};
pub use user::{ResolvedUser, UserError, resolve_user, resolve_user_from};
