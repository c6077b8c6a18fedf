//! What to run ([`ExecSpec`], [`ExecMount`]) and its translation into an OCI runtime
//! `config.json` ([`build_runtime_spec`]).
//!
//! oci-spec's builders fill unset fields with surprising defaults (hostname "youki", three
//! capabilities, `RLIMIT_NOFILE` 1024, `noNewPrivileges: true`...), so every field of the generated
//! spec is set explicitly here.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use dagr_platform::Platform;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, Mount as OciMount, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::mount::Mount;
use crate::seccomp;
use crate::user::ResolvedUser;

/// `PATH` given to processes whose environment has none (BuildKit's default).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// OCI runtime spec version written in `config.json` (the one runc 1.1 implements).
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Upper bound for `RLIMIT_NOFILE` inside containers (further capped by the host's hard limit).
pub const MAX_OPEN_FILES: u64 = 1_048_576;

/// Capabilities a process gets by default: BuildKit's (and Docker's) default set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability, granted with `insecure_root_capabilities`.
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Paths hidden from containers (runc's defaults plus containerd's powercap).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in containers (runc's defaults).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A process to run in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// argv; `args[0]` is looked up in the container's `PATH` by the runtime.
    pub args: Vec<String>,
    /// `KEY=value` entries; [`DEFAULT_PATH_ENV`] is added when no `PATH` is given.
    pub env: Vec<String>,
    /// Absolute working directory; empty means `/`.
    pub workdir: String,
    /// `uid[:gid]` or `name[:group]` looked up in the rootfs; empty means root.
    pub user: String,
    /// Bytes fed to the process' stdin (closed right after); `None` gives `/dev/null`.
    pub stdin: Option<Bytes>,
    /// Hostname inside the container; empty gives a name derived from the exec id.
    pub hostname: String,
    /// Mounts on top of the rootfs.
    pub mounts: Vec<ExecMount>,
    /// Grant every capability and unmask `/proc` and `/sys` paths (Dagger's
    /// `insecureRootCapabilities`).
    pub insecure_root_capabilities: bool,
    /// Loopback only, even on a bridged engine (no address, no DNS).
    pub network_disabled: bool,
}

/// A mount on top of the rootfs.
#[derive(Debug, Clone)]
pub struct ExecMount {
    /// Absolute path inside the container.
    pub dest: String,
    /// What is mounted.
    pub kind: ExecMountKind,
}

/// What an [`ExecMount`] mounts.
#[derive(Clone)]
pub enum ExecMountKind {
    /// A host directory or file (cache volumes are binds of a directory the caller manages).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mount read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes (`None`: the kernel's default of half the RAM).
        size: Option<u64>,
    },
    /// A file holding secret bytes; written on a tmpfs of the executor, never in a layer.
    Secret {
        /// The content.
        bytes: Bytes,
        /// File mode (e.g. `0o400`).
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A snapshot given as containerd-style mounts (for example another container's rootfs).
    Snapshot {
        /// Mounts applied, in order, on a directory of the executor, then bound in.
        mounts: Vec<Mount>,
        /// Bind read-only into the container.
        readonly: bool,
    },
}

impl fmt::Debug for ExecMountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind { source, readonly } => f
                .debug_struct("Bind")
                .field("source", source)
                .field("readonly", readonly)
                .finish(),
            Self::Tmpfs { size } => f.debug_struct("Tmpfs").field("size", size).finish(),
            Self::Secret {
                bytes,
                mode,
                uid,
                gid,
            } => f
                .debug_struct("Secret")
                .field("bytes", &format_args!("<{} bytes redacted>", bytes.len()))
                .field("mode", &format_args!("{mode:o}"))
                .field("uid", uid)
                .field("gid", gid)
                .finish(),
            Self::Snapshot { mounts, readonly } => f
                .debug_struct("Snapshot")
                .field("mounts", mounts)
                .field("readonly", readonly)
                .finish(),
        }
    }
}

/// A mount as the runtime sees it, once secrets and snapshots were prepared on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerMount {
    /// Bind of a host path.
    Bind {
        /// Path inside the container.
        dest: String,
        /// Host path.
        source: PathBuf,
        /// Read-only.
        readonly: bool,
        /// Also `nosuid,nodev,noexec` (secrets).
        restricted: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Path inside the container.
        dest: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
}

impl ContainerMount {
    /// Path inside the container.
    pub fn dest(&self) -> &str {
        match self {
            Self::Bind { dest, .. } | Self::Tmpfs { dest, .. } => dest,
        }
    }
}

/// Errors of spec validation and generation.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `args` is empty.
    #[error("exec has no arguments")]
    NoArgs,
    /// A path that must be absolute and clean is not.
    #[error("{what} {path:?} must be an absolute path without '..'")]
    InvalidPath {
        /// Which path (`"workdir"`, `"mount destination"`).
        what: &'static str,
        /// The path.
        path: String,
    },
    /// Two mounts have the same destination.
    #[error("duplicate mount destination {dest:?}")]
    DuplicateMount {
        /// The destination.
        dest: String,
    },
    /// A mount destination is one the executor mounts itself.
    #[error("mount destination {dest:?} is reserved")]
    ReservedMount {
        /// The destination.
        dest: String,
    },
    /// oci-spec refused a value.
    #[error("build runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

fn is_clean_absolute(path: &str) -> bool {
    let p = Path::new(path);
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Checks what can be checked before touching the host: arguments, workdir, mount destinations.
pub fn validate(exec: &ExecSpec) -> Result<(), SpecError> {
    if exec.args.is_empty() {
        return Err(SpecError::NoArgs);
    }
    if !exec.workdir.is_empty() && !is_clean_absolute(&exec.workdir) {
        return Err(SpecError::InvalidPath {
            what: "workdir",
            path: exec.workdir.clone(),
        });
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    for mount in &exec.mounts {
        if !is_clean_absolute(&mount.dest) || Path::new(&mount.dest) == Path::new("/") {
            return Err(SpecError::InvalidPath {
                what: "mount destination",
                path: mount.dest.clone(),
            });
        }
        let normalized: PathBuf = Path::new(&mount.dest).components().collect();
        if RESERVED_DESTINATIONS
            .iter()
            .any(|r| Path::new(r) == normalized)
        {
            return Err(SpecError::ReservedMount {
                dest: mount.dest.clone(),
            });
        }
        if seen.contains(&normalized) {
            return Err(SpecError::DuplicateMount {
                dest: mount.dest.clone(),
            });
        }
        seen.push(normalized);
    }
    Ok(())
}

/// Environment with [`DEFAULT_PATH_ENV`] added when `env` sets no `PATH`.
pub fn process_env(env: &[String]) -> Vec<String> {
    let mut out = env.to_vec();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH_ENV.to_string());
    }
    out
}

/// Everything [`build_runtime_spec`] needs besides the [`ExecSpec`], decided by the executor.
#[derive(Debug, Clone)]
pub struct RuntimeSpecInput<'a> {
    /// The process to run.
    pub exec: &'a ExecSpec,
    /// The rootfs directory (absolute, or relative to the bundle).
    pub rootfs: &'a Path,
    /// Resolved identity of the process.
    pub user: &'a ResolvedUser,
    /// Hostname of the container.
    pub hostname: &'a str,
    /// Host file bound read-only on `/etc/hosts`.
    pub hosts_file: &'a Path,
    /// Host file bound read-only on `/etc/resolv.conf`.
    pub resolv_conf_file: &'a Path,
    /// Network namespace to join (`None`: the runtime creates one, with loopback down).
    pub netns: Option<&'a Path>,
    /// Cgroup path, unique per exec.
    pub cgroups_path: &'a str,
    /// `RLIMIT_NOFILE` (soft and hard); must not exceed the host's hard limit.
    pub max_open_files: u64,
    /// User mounts, prepared.
    pub mounts: &'a [ContainerMount],
    /// The capabilities the engine itself may hand out (its bounding set, bit N = capability N,
    /// see [`host_capability_bound`]): `insecure_root_capabilities` grants all of these, not
    /// capabilities the runtime could not apply.
    pub capability_bound: u64,
    /// Give the process a terminal (`process.terminal`): the runtime allocates its console.
    pub terminal: bool,
    /// A static init binary on the host (tini): bound read-only at [`INIT_PATH`] and run as
    /// PID 1 with the process as its child (it reaps zombies, forwards signals and exits with
    /// the child's status). `None`: the process is PID 1 itself.
    pub init: Option<&'a Path>,
}

/// Where the init binary is bound in containers: on the `/dev` tmpfs, so nothing of it
/// reaches the rootfs.
pub const INIT_PATH: &str = "/dev/.dagr-init";

/// The engine's capability bounding set from `/proc/self/status` (`CapBnd`); every capability
/// when it cannot be read.
pub fn host_capability_bound() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn oci_mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> OciMount {
    let mut mount = OciMount::default();
    mount.set_destination(PathBuf::from(dest));
    mount.set_typ(Some(kind.to_string()));
    mount.set_source(Some(PathBuf::from(source)));
    mount.set_options(Some(strings(options)));
    mount.set_uid_mappings(None);
    mount.set_gid_mappings(None);
    mount
}

/// The system mounts every container gets (runc's defaults).
fn system_mounts() -> Vec<OciMount> {
    vec![
        oci_mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        oci_mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        oci_mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        oci_mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        oci_mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        oci_mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        oci_mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

fn user_mount(mount: &ContainerMount) -> OciMount {
    match mount {
        ContainerMount::Bind {
            dest,
            source,
            readonly,
            restricted,
        } => {
            let mut options = vec!["rbind"];
            options.push(if *readonly { "ro" } else { "rw" });
            if *restricted {
                options.extend(["nosuid", "nodev", "noexec"]);
            }
            oci_mount(dest, "bind", &source.to_string_lossy(), &options)
        }
        ContainerMount::Tmpfs { dest, size } => {
            let size_option = size.map(|s| format!("size={s}"));
            let mut options = vec!["nosuid", "nodev", "mode=1777"];
            if let Some(size_option) = &size_option {
                options.push(size_option);
            }
            oci_mount(dest, "tmpfs", "tmpfs", &options)
        }
    }
}

fn mount_depth(dest: &str) -> usize {
    Path::new(dest)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// Builds the OCI runtime spec (`config.json`) of one exec, every field set explicitly.
pub fn build_runtime_spec(input: &RuntimeSpecInput<'_>) -> Result<Spec, SpecError> {
    validate(input.exec)?;
    let exec = input.exec;

    let capabilities: Capabilities = if exec.insecure_root_capabilities {
        // ALL_CAPABILITIES is in kernel number order: index N is capability N.
        ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(n, _)| input.capability_bound & (1u64 << n) != 0)
            .map(|(_, c)| *c)
            .collect()
    } else {
        DEFAULT_CAPABILITIES.iter().copied().collect()
    };
    // Docker's default seccomp profile for the bounding set (as BuildKit applies it to RUN
    // steps); Dagger's insecureRootCapabilities (BuildKit's insecure mode) runs unconfined.
    // Emulated execs run QEMU, whose syscalls are the host's: the host architecture's profile.
    let seccomp_profile = if exec.insecure_root_capabilities {
        None
    } else {
        let bounding: Vec<Capability> = capabilities.iter().copied().collect();
        Some(seccomp::default_profile(
            &bounding,
            &Platform::host().architecture,
        )?)
    };
    let mut linux_capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capabilities.clone())
        .effective(capabilities.clone())
        .permitted(capabilities)
        .build()?;
    linux_capabilities.set_inheritable(None);
    linux_capabilities.set_ambient(None);

    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()?;
    let mut user = user;
    user.set_umask(None);
    user.set_username(None);

    let rlimits = vec![
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(input.max_open_files)
            .hard(input.max_open_files)
            .build()?,
    ];

    let workdir = if exec.workdir.is_empty() {
        "/"
    } else {
        exec.workdir.as_str()
    };
    let mut process = ProcessBuilder::default()
        .terminal(input.terminal)
        .user(user)
        .args(match input.init {
            Some(_) => [INIT_PATH.to_owned(), "--".to_owned()]
                .into_iter()
                .chain(exec.args.iter().cloned())
                .collect(),
            None => exec.args.clone(),
        })
        .env(process_env(&exec.env))
        .cwd(workdir)
        .capabilities(linux_capabilities)
        .rlimits(rlimits)
        .no_new_privileges(false)
        .build()?;
    process.set_console_size(None);
    process.set_command_line(None);
    process.set_apparmor_profile(None);
    process.set_oom_score_adj(None);
    process.set_selinux_label(None);
    process.set_io_priority(None);
    process.set_scheduler(None);
    process.set_exec_cpu_affinity(None);

    let root = RootBuilder::default()
        .path(input.rootfs.to_path_buf())
        .readonly(false)
        .build()?;

    let mut mounts = system_mounts();
    mounts.push(oci_mount(
        "/etc/hosts",
        "bind",
        &input.hosts_file.to_string_lossy(),
        &["rbind", "ro"],
    ));
    mounts.push(oci_mount(
        "/etc/resolv.conf",
        "bind",
        &input.resolv_conf_file.to_string_lossy(),
        &["rbind", "ro"],
    ));
    if let Some(init) = input.init {
        mounts.push(oci_mount(
            INIT_PATH,
            "bind",
            &init.to_string_lossy(),
            &["rbind", "ro"],
        ));
    }
    let mut user_mounts: Vec<&ContainerMount> = input.mounts.iter().collect();
    // Parents before children, otherwise in the given order.
    user_mounts.sort_by_key(|m| mount_depth(m.dest()));
    mounts.extend(user_mounts.into_iter().map(user_mount));

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    let mut network = LinuxNamespaceBuilder::default()
        .typ(LinuxNamespaceType::Network)
        .build()?;
    network.set_path(input.netns.map(Path::to_path_buf));
    namespaces.push(network);

    let (masked, readonly) = if exec.insecure_root_capabilities {
        (Vec::new(), Vec::new())
    } else {
        (strings(&MASKED_PATHS), strings(&READONLY_PATHS))
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .cgroups_path(PathBuf::from(input.cgroups_path))
        .build()?;
    linux.set_net_devices(None);
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_sysctl(None);
    linux.set_resources(None);
    linux.set_devices(None);
    linux.set_seccomp(seccomp_profile);
    linux.set_rootfs_propagation(None);
    linux.set_mount_label(None);
    linux.set_intel_rdt(None);
    linux.set_memory_policy(None);
    linux.set_personality(None);
    linux.set_time_offsets(None);

    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(root)
        .mounts(mounts)
        .process(process)
        .hostname(input.hostname)
        .linux(linux)
        .build()?;
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(None);
    spec.set_solaris(None);
    spec.set_windows(None);
    spec.set_vm(None);
    spec.set_zos(None);
    Ok(spec)
}

/// Destinations the executor mounts itself.
const RESERVED_DESTINATIONS: [&str; 10] = [
    INIT_PATH,
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/etc/hosts",
    "/etc/resolv.conf",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn exec() -> ExecSpec {
        ExecSpec {
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["FOO=bar".into()],
            workdir: "/src".into(),
            user: "1000".into(),
            hostname: "box".into(),
            mounts: vec![
                ExecMount {
                    dest: "/cache/sub".into(),
                    kind: ExecMountKind::Tmpfs { size: None },
                },
                ExecMount {
                    dest: "/cache".into(),
                    kind: ExecMountKind::Bind {
                        source: "/host/cache".into(),
                        readonly: false,
                    },
                },
            ],
            ..Default::default()
        }
    }

    fn generate(exec: &ExecSpec, mounts: &[ContainerMount]) -> Value {
        let user = ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10, 999],
        };
        let spec = build_runtime_spec(&RuntimeSpecInput {
            exec,
            rootfs: Path::new("/bundle/rootfs"),
            user: &user,
            hostname: "box",
            hosts_file: Path::new("/bundle/hosts"),
            resolv_conf_file: Path::new("/bundle/resolv.conf"),
            netns: Some(Path::new("/state/netns/x")),
            cgroups_path: "/dagr/x",
            max_open_files: 20000,
            mounts,
            capability_bound: u64::MAX,
            terminal: false,
            init: None,
        })
        .unwrap();
        serde_json::to_value(&spec).unwrap()
    }

    fn sorted_strings(value: &Value) -> Vec<String> {
        let mut items: Vec<String> = value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        items.sort();
        items
    }

    fn cap_names(caps: &[Capability]) -> Vec<String> {
        let mut names: Vec<String> = caps
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    fn container_mounts(exec: &ExecSpec) -> Vec<ContainerMount> {
        exec.mounts
            .iter()
            .map(|m| match &m.kind {
                ExecMountKind::Bind { source, readonly } => ContainerMount::Bind {
                    dest: m.dest.clone(),
                    source: source.clone(),
                    readonly: *readonly,
                    restricted: false,
                },
                ExecMountKind::Tmpfs { size } => ContainerMount::Tmpfs {
                    dest: m.dest.clone(),
                    size: *size,
                },
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn top_level_fields_are_exactly_the_ones_we_set() {
        let exec = exec();
        let config = generate(&exec, &container_mounts(&exec));
        let mut keys: Vec<&str> = config
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "hostname",
                "linux",
                "mounts",
                "ociVersion",
                "process",
                "root"
            ]
        );
        assert_eq!(config["ociVersion"], "1.0.2-dev");
        assert_eq!(config["hostname"], "box");
        assert_eq!(
            config["root"],
            json!({"path": "/bundle/rootfs", "readonly": false})
        );
    }

    #[test]
    fn process_section_snapshot() {
        let exec = exec();
        let config = generate(&exec, &container_mounts(&exec));
        let process = &config["process"];
        let mut keys: Vec<&str> = process
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "args",
                "capabilities",
                "cwd",
                "env",
                "noNewPrivileges",
                "rlimits",
                "terminal",
                "user"
            ]
        );
        assert_eq!(process["terminal"], false);
        assert_eq!(process["noNewPrivileges"], false);
        assert_eq!(process["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(process["cwd"], "/src");
        assert_eq!(process["env"], json!([DEFAULT_PATH_ENV, "FOO=bar"]));
        assert_eq!(
            process["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 999]})
        );
        assert_eq!(
            process["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}])
        );
        let caps = &process["capabilities"];
        let mut cap_keys: Vec<&str> = caps
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        cap_keys.sort();
        assert_eq!(cap_keys, ["bounding", "effective", "permitted"]);
        let expected = cap_names(&DEFAULT_CAPABILITIES);
        assert_eq!(expected.len(), 14);
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(sorted_strings(&caps[set]), expected, "{set}");
        }
        assert!(expected.contains(&"CAP_NET_RAW".to_string()));
        assert!(!expected.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn linux_section_snapshot() {
        let exec = exec();
        let config = generate(&exec, &container_mounts(&exec));
        let linux = &config["linux"];
        let mut keys: Vec<&str> = linux
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cgroupsPath",
                "maskedPaths",
                "namespaces",
                "readonlyPaths",
                "seccomp"
            ]
        );
        assert_eq!(linux["cgroupsPath"], "/dagr/x");
        assert_eq!(
            linux["namespaces"],
            json!([
                {"type": "mount"},
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "network", "path": "/state/netns/x"}
            ])
        );
        assert_eq!(linux["maskedPaths"], json!(MASKED_PATHS));
        assert_eq!(linux["readonlyPaths"], json!(READONLY_PATHS));
        // Docker's default profile for the default capabilities, on the host's architecture.
        let expected =
            seccomp::default_profile(&DEFAULT_CAPABILITIES, &Platform::host().architecture)
                .unwrap();
        assert_eq!(linux["seccomp"], serde_json::to_value(&expected).unwrap());
        assert_eq!(linux["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let chroot_allowed = linux["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["names"] == json!(["chroot"]));
        assert!(chroot_allowed, "CAP_SYS_CHROOT is a default capability");
    }

    #[test]
    fn mounts_snapshot_system_then_files_then_user_mounts_parents_first() {
        let exec = exec();
        let config = generate(&exec, &container_mounts(&exec));
        let expected = json!([
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/bundle/hosts",
             "options": ["rbind", "ro"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/bundle/resolv.conf",
             "options": ["rbind", "ro"]},
            {"destination": "/cache", "type": "bind", "source": "/host/cache",
             "options": ["rbind", "rw"]},
            {"destination": "/cache/sub", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
        ]);
        assert_eq!(config["mounts"], expected);
    }

    #[test]
    fn secrets_and_sized_tmpfs_get_their_options() {
        let exec = ExecSpec {
            args: vec!["true".into()],
            ..Default::default()
        };
        let mounts = [
            ContainerMount::Bind {
                dest: "/run/secrets/token".into(),
                source: "/bundle/secrets/0".into(),
                readonly: true,
                restricted: true,
            },
            ContainerMount::Tmpfs {
                dest: "/tmp".into(),
                size: Some(1 << 20),
            },
        ];
        let config = generate(&exec, &mounts);
        let user_mounts = &config["mounts"].as_array().unwrap()[9..];
        assert_eq!(
            user_mounts,
            [
                json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "mode=1777", "size=1048576"]}),
                json!({"destination": "/run/secrets/token", "type": "bind",
                       "source": "/bundle/secrets/0",
                       "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
            ]
        );
        assert_eq!(config["process"]["cwd"], "/");
    }

    #[test]
    fn insecure_root_capabilities_grant_everything_and_unmask() {
        let exec = ExecSpec {
            args: vec!["true".into()],
            env: vec!["PATH=/bin".into()],
            insecure_root_capabilities: true,
            ..Default::default()
        };
        let config = generate(&exec, &[]);
        let all = cap_names(&ALL_CAPABILITIES);
        assert_eq!(all.len(), 41);
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(sorted_strings(&config["process"]["capabilities"][set]), all);
        }
        assert_eq!(config["linux"]["maskedPaths"], json!([]));
        assert_eq!(config["linux"]["readonlyPaths"], json!([]));
        assert_eq!(config["process"]["env"], json!(["PATH=/bin"]));
        // Unconfined, as Dagger's insecureRootCapabilities.
        assert!(
            config["linux"].get("seccomp").is_none(),
            "{}",
            config["linux"]
        );
    }

    #[test]
    fn insecure_root_capabilities_stay_within_the_engines_bounding_set() {
        let exec = ExecSpec {
            args: vec!["true".into()],
            insecure_root_capabilities: true,
            ..Default::default()
        };
        let rootfs = Path::new("/rootfs");
        let user = ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        };
        let bound = !(1u64 << 24); // no CAP_SYS_RESOURCE
        let spec = build_runtime_spec(&RuntimeSpecInput {
            exec: &exec,
            rootfs,
            user: &user,
            hostname: "h",
            hosts_file: Path::new("/hosts"),
            resolv_conf_file: Path::new("/resolv.conf"),
            netns: None,
            cgroups_path: "/dagr/x",
            max_open_files: 1024,
            mounts: &[],
            capability_bound: bound,
            terminal: false,
            init: None,
        })
        .unwrap();
        let config = serde_json::to_value(&spec).unwrap();
        let caps = sorted_strings(&config["process"]["capabilities"]["bounding"]);
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()), "{caps:?}");
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn validation_rejects_bad_specs() {
        let ok = ExecSpec {
            args: vec!["true".into()],
            ..Default::default()
        };
        assert!(validate(&ok).is_ok());
        assert!(matches!(
            validate(&ExecSpec::default()),
            Err(SpecError::NoArgs)
        ));
        let relative_workdir = ExecSpec {
            workdir: "src".into(),
            ..ok.clone()
        };
        assert!(matches!(
            validate(&relative_workdir),
            Err(SpecError::InvalidPath {
                what: "workdir",
                ..
            })
        ));
        let tmpfs = |dest: &str| ExecMount {
            dest: dest.into(),
            kind: ExecMountKind::Tmpfs { size: None },
        };
        for bad in ["relative", "/a/../b", "/"] {
            let spec = ExecSpec {
                mounts: vec![tmpfs(bad)],
                ..ok.clone()
            };
            assert!(
                matches!(validate(&spec), Err(SpecError::InvalidPath { .. })),
                "{bad}"
            );
        }
        let duplicate = ExecSpec {
            mounts: vec![tmpfs("/x"), tmpfs("/x/")],
            ..ok.clone()
        };
        assert!(matches!(
            validate(&duplicate),
            Err(SpecError::DuplicateMount { .. })
        ));
        let reserved = ExecSpec {
            mounts: vec![tmpfs("/proc")],
            ..ok
        };
        assert!(matches!(
            validate(&reserved),
            Err(SpecError::ReservedMount { .. })
        ));
    }

    #[test]
    fn secret_bytes_are_not_in_debug_output() {
        let kind = ExecMountKind::Secret {
            bytes: Bytes::from_static(b"hunter2"),
            mode: 0o400,
            uid: 0,
            gid: 0,
        };
        let debug = format!("{kind:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("7 bytes redacted"), "{debug}");
    }
}
