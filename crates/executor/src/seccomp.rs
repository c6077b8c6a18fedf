//! Docker's default seccomp profile as an OCI [`LinuxSeccomp`] ([`default_profile`]).
//!
//! This is the profile of `github.com/moby/profiles/seccomp` (v0.2.3, the one Docker vendors
//! and BuildKit applies to `RUN` steps in its sandbox security mode, Dagger to execs without
//! `insecureRootCapabilities`), expressed as data: the syscalls always allowed
//! ([`ALLOWED_SYSCALLS`]), then rules that apply only under conditions. A rule applies when
//! every condition of its `includes` holds (the process has all of its capabilities, the
//! architecture is one of its architectures, the host kernel is at least its version) and none
//! of its `excludes` does (the process has one of its capabilities, the architecture is one of
//! its architectures, the kernel is at least its version). Everything else fails with `EPERM`.
//!
//! Capabilities are the process' bounding set, as Docker reads them. The architecture is the
//! engine's (Go name, `amd64`, `arm64`...): it fills `architectures` (the native one and the
//! ones the kernel can also run, e.g. x86 and x32 on amd64) and decides the architecture
//! rules. Execs of a foreign platform run under QEMU user emulation, which makes host
//! syscalls, so they get the host's profile too.
//!
//! As with Docker's profile, runc skips the syscall names the host's libseccomp does not know,
//! and answers `ENOSYS` (not `EPERM`) to syscalls newer than every one the filter names, so
//! programs fall back to older ones.

use std::sync::OnceLock;

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Errno of the default action (and of every syscall no rule allows).
const EPERM: u32 = libc::EPERM as u32;
/// Errno of `clone3` without `CAP_SYS_ADMIN`: its flags live in memory seccomp cannot read, so
/// it is refused in a way that makes libc fall back to `clone`.
const ENOSYS: u32 = libc::ENOSYS as u32;

/// The `clone` flags that create namespaces; without `CAP_SYS_ADMIN` `clone` is allowed only
/// when none of them is set.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `socket` is allowed for every address family but these two.
const AF_ALG: u64 = libc::AF_ALG as u64;
const AF_VSOCK: u64 = libc::AF_VSOCK as u64;

/// `personality` personas the profile allows: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32 | UNAME26`, and `0xffffffff` (query the current persona).
const PER_LINUX: u64 = 0x0000;
const PER_LINUX32: u64 = 0x0008;
const UNAME26: u64 = 0x0002_0000;
const PERSONALITY_QUERY: u64 = 0xffff_ffff;

/// Syscalls the profile always allows, whatever the capabilities, architecture and kernel.
pub const ALLOWED_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat", // kernel 6.5, libseccomp 2.5.5
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2", // kernel 6.6, libseccomp 2.5.5
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue", // kernel 6.7, libseccomp 2.5.5
    "futex_time64",
    "futex_wait", // kernel 6.7, libseccomp 2.5.5
    "futex_waitv",
    "futex_wake", // kernel 6.7, libseccomp 2.5.5
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat", // kernel 6.13, libseccomp 2.6.0
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount", // kernel 6.8, libseccomp 2.6.0
    "listxattr",
    "listxattrat", // kernel 6.13, libseccomp 2.6.0
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack", // kernel 6.6, libseccomp 2.5.5
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal", // kernel 6.9, libseccomp 2.6.0
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat", // kernel 6.13, libseccomp 2.6.0
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe", // kernel 6.12, libseccomp 2.6.0
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat", // kernel 6.13, libseccomp 2.6.0
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount", // kernel 6.8, libseccomp 2.6.0
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe", // kernel 6.11, libseccomp 2.6.0
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed only with `CAP_SYS_ADMIN`: mounts, namespaces, `bpf`, `perf_event_open`,
/// host and domain names, quotas, the kernel log, and `clone`/`clone3` with any flags.
const SYS_ADMIN_SYSCALLS: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "lsm_get_self_attr", // kernel 6.8, libseccomp 2.6.0
    "lsm_list_modules",  // kernel 6.8, libseccomp 2.6.0
    "lsm_set_self_attr", // kernel 6.8, libseccomp 2.6.0
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

/// The conditional rules, in the profile's order, after the always-allowed set.
const CONDITIONAL_RULES: &[Rule] = &[
    // ptrace could bypass seccomp before 4.8 (the filter was not rechecked after a tracer
    // changed the syscall); from then on it is as safe as the rest.
    Rule::allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
        .includes(Condition::min_kernel(KernelVersion::new(4, 8))),
    // socket(2) for every address family but AF_ALG (38) and AF_VSOCK (40).
    Rule::allow(&["socket"]).args(&[ArgCheck::new(0, AF_ALG, LinuxSeccompOperator::ScmpCmpLt)]),
    Rule::allow(&["socket"]).args(&[ArgCheck::new(
        0,
        AF_ALG + 1,
        LinuxSeccompOperator::ScmpCmpEq,
    )]),
    Rule::allow(&["socket"]).args(&[ArgCheck::new(0, AF_VSOCK, LinuxSeccompOperator::ScmpCmpGt)]),
    Rule::allow(&["personality"]).args(&[ArgCheck::eq(0, PER_LINUX)]),
    Rule::allow(&["personality"]).args(&[ArgCheck::eq(0, PER_LINUX32)]),
    Rule::allow(&["personality"]).args(&[ArgCheck::eq(0, UNAME26)]),
    Rule::allow(&["personality"]).args(&[ArgCheck::eq(0, PER_LINUX32 | UNAME26)]),
    Rule::allow(&["personality"]).args(&[ArgCheck::eq(0, PERSONALITY_QUERY)]),
    // Architecture-specific syscalls.
    Rule::allow(&["sync_file_range2", "swapcontext"]).includes(Condition::arches(&["ppc64le"])),
    Rule::allow(&[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ])
    .includes(Condition::arches(&["arm", "arm64"])),
    Rule::allow(&["arch_prctl"]).includes(Condition::arches(&["amd64", "x32"])),
    Rule::allow(&["modify_ldt"]).includes(Condition::arches(&["amd64", "x32", "x86"])),
    Rule::allow(&[
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
    ])
    .includes(Condition::arches(&["s390", "s390x"])),
    Rule::allow(&["riscv_flush_icache"]).includes(Condition::arches(&["riscv64"])),
    // Capability-specific syscalls.
    Rule::allow(&["open_by_handle_at"]).includes(Condition::caps(&[Capability::DacReadSearch])),
    Rule::allow(SYS_ADMIN_SYSCALLS).includes(Condition::caps(&[Capability::SysAdmin])),
    // Without CAP_SYS_ADMIN, clone only when it creates no namespace. s390 swaps clone's first
    // two arguments, so the flags are the second one there.
    Rule::allow(&["clone"])
        .args(&[ArgCheck::masked_zero(0, CLONE_NAMESPACE_FLAGS)])
        .excludes(Condition {
            caps: &[Capability::SysAdmin],
            arches: &["s390", "s390x"],
            min_kernel: None,
        }),
    Rule::allow(&["clone"])
        .args(&[ArgCheck::masked_zero(1, CLONE_NAMESPACE_FLAGS)])
        .includes(Condition::arches(&["s390", "s390x"]))
        .excludes(Condition::caps(&[Capability::SysAdmin])),
    Rule::errno(&["clone3"], ENOSYS).excludes(Condition::caps(&[Capability::SysAdmin])),
    Rule::allow(&["reboot"]).includes(Condition::caps(&[Capability::SysBoot])),
    Rule::allow(&["chroot"]).includes(Condition::caps(&[Capability::SysChroot])),
    Rule::allow(&["delete_module", "init_module", "finit_module"])
        .includes(Condition::caps(&[Capability::SysModule])),
    Rule::allow(&["acct"]).includes(Condition::caps(&[Capability::SysPacct])),
    Rule::allow(&[
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ])
    .includes(Condition::caps(&[Capability::SysPtrace])),
    Rule::allow(&["iopl", "ioperm"]).includes(Condition::caps(&[Capability::SysRawio])),
    Rule::allow(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
        .includes(Condition::caps(&[Capability::SysTime])),
    Rule::allow(&["vhangup"]).includes(Condition::caps(&[Capability::SysTtyConfig])),
    Rule::allow(&[
        "get_mempolicy",
        "mbind",
        "set_mempolicy",
        "set_mempolicy_home_node", // kernel 5.17, libseccomp 2.5.4
    ])
    .includes(Condition::caps(&[Capability::SysNice])),
    Rule::allow(&["syslog"]).includes(Condition::caps(&[Capability::Syslog])),
    Rule::allow(&["bpf"]).includes(Condition::caps(&[Capability::Bpf])),
    Rule::allow(&["perf_event_open"]).includes(Condition::caps(&[Capability::Perfmon])),
];

/// A kernel version as the profile's conditions compare it: `major.minor`, ignoring the patch
/// level and any suffix (`6.1.0-18-amd64` is 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// The `6` of `6.1.0`.
    pub major: u32,
    /// The `1` of `6.1.0`.
    pub minor: u32,
}

impl KernelVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Parses a kernel release (`uname -r`): its leading `major.minor`, whatever follows
    /// (`3.12.25-gentoo`, `3.12-1-amd64`, `3.12-rc5` and `3.12` are all 3.12).
    pub fn parse(release: &str) -> Option<Self> {
        let (major, rest) = release.trim().split_once('.')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        Some(Self {
            major: major.parse().ok()?,
            minor: rest[..digits].parse().ok()?,
        })
    }

    /// The running kernel's version, from `/proc/sys/kernel/osrelease` (read once); `None` when
    /// it cannot be read or parsed.
    pub fn host() -> Option<Self> {
        static HOST: OnceLock<Option<KernelVersion>> = OnceLock::new();
        *HOST.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .and_then(|release| Self::parse(&release))
        })
    }
}

/// Docker's default profile for a process with these capabilities (its bounding set) on an
/// engine of architecture `arch` (Go name: `amd64`, `arm64`, ...), on this host's kernel.
pub fn default_profile(
    capabilities: &[Capability],
    arch: &str,
) -> Result<LinuxSeccomp, OciSpecError> {
    default_profile_for_kernel(capabilities, arch, KernelVersion::host())
}

/// [`default_profile`] for a given kernel. An unknown kernel (`None`) counts as older than every
/// version a rule asks for: ptrace then needs `CAP_SYS_PTRACE`, as on kernels before 4.8
/// (Docker refuses to build the profile instead).
pub fn default_profile_for_kernel(
    capabilities: &[Capability],
    arch: &str,
    kernel: Option<KernelVersion>,
) -> Result<LinuxSeccomp, OciSpecError> {
    let (native_arch, architectures) = match ARCHITECTURES.iter().find(|a| a.go == arch) {
        Some(entry) => (entry.native, entry.architectures),
        None => ("", &[][..]),
    };
    let syscalls: Vec<LinuxSyscall> = std::iter::once(&ALWAYS_ALLOWED)
        .chain(CONDITIONAL_RULES)
        .filter(|rule| rule.applies(capabilities, native_arch, kernel))
        .map(Rule::to_oci)
        .collect::<Result<_, _>>()?;

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    // Without architectures the runtime filters the native one only.
    profile.set_architectures(if architectures.is_empty() {
        None
    } else {
        Some(architectures.to_vec())
    });
    profile.set_flags(None);
    profile.set_listener_path(None);
    profile.set_listener_metadata(None);
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

/// The rule of [`ALLOWED_SYSCALLS`].
const ALWAYS_ALLOWED: Rule = Rule::allow(ALLOWED_SYSCALLS);

/// An architecture the profile knows: its Go name, the name the profile's architecture
/// conditions use, and the seccomp architectures its filter covers.
struct ArchEntry {
    go: &'static str,
    native: &'static str,
    architectures: &'static [Arch],
}

/// Docker's architecture map. Only the architectures with sub-architectures, plus riscv64, get
/// an `architectures` list; for the others (and for `loong64` and `mipsle`, whose names Docker's
/// lookup misses) the list stays empty and the runtime filters the native architecture only.
const ARCHITECTURES: &[ArchEntry] = &[
    ArchEntry {
        go: "amd64",
        native: "amd64",
        architectures: &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
    },
    ArchEntry {
        go: "arm64",
        native: "arm64",
        architectures: &[Arch::ScmpArchAarch64, Arch::ScmpArchArm],
    },
    ArchEntry {
        go: "s390x",
        native: "s390x",
        architectures: &[Arch::ScmpArchS390x, Arch::ScmpArchS390],
    },
    ArchEntry {
        go: "riscv64",
        native: "riscv64",
        architectures: &[Arch::ScmpArchRiscv64],
    },
    ArchEntry {
        go: "mips64",
        native: "mips64",
        architectures: &[
            Arch::ScmpArchMips64,
            Arch::ScmpArchMips,
            Arch::ScmpArchMips64n32,
        ],
    },
    ArchEntry {
        go: "mips64p32",
        native: "mips64n32",
        architectures: &[
            Arch::ScmpArchMips64n32,
            Arch::ScmpArchMips,
            Arch::ScmpArchMips64,
        ],
    },
    ArchEntry {
        go: "mips64le",
        native: "mipsel64",
        architectures: &[
            Arch::ScmpArchMipsel64,
            Arch::ScmpArchMipsel,
            Arch::ScmpArchMipsel64n32,
        ],
    },
    ArchEntry {
        go: "mips64p32le",
        native: "mips3l64n32",
        architectures: &[
            Arch::ScmpArchMipsel64n32,
            Arch::ScmpArchMipsel,
            Arch::ScmpArchMipsel64,
        ],
    },
    ArchEntry {
        go: "386",
        native: "x86",
        architectures: &[],
    },
    ArchEntry {
        go: "arm",
        native: "arm",
        architectures: &[],
    },
    ArchEntry {
        go: "loong64",
        native: "loongarch64",
        architectures: &[],
    },
    ArchEntry {
        go: "mipsle",
        native: "mipsel",
        architectures: &[],
    },
    ArchEntry {
        go: "ppc",
        native: "ppc",
        architectures: &[],
    },
    ArchEntry {
        go: "ppc64",
        native: "ppc64",
        architectures: &[],
    },
    ArchEntry {
        go: "ppc64le",
        native: "ppc64le",
        architectures: &[],
    },
    ArchEntry {
        go: "s390",
        native: "s390",
        architectures: &[],
    },
];

/// What a rule does with the syscalls it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Let them run.
    Allow,
    /// Fail them with this errno.
    Errno(u32),
}

/// A comparison of one syscall argument; a rule with several needs all of them to hold.
#[derive(Debug, Clone, Copy)]
struct ArgCheck {
    index: usize,
    value: u64,
    /// Only for `SCMP_CMP_MASKED_EQ` (`arg & value == value_two`); absent means 0.
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
}

impl ArgCheck {
    const fn new(index: usize, value: u64, op: LinuxSeccompOperator) -> Self {
        Self {
            index,
            value,
            value_two: None,
            op,
        }
    }

    const fn eq(index: usize, value: u64) -> Self {
        Self::new(index, value, LinuxSeccompOperator::ScmpCmpEq)
    }

    /// None of the bits of `mask` is set.
    const fn masked_zero(index: usize, mask: u64) -> Self {
        Self::new(index, mask, LinuxSeccompOperator::ScmpCmpMaskedEq)
    }

    fn to_oci(self) -> Result<LinuxSeccompArg, OciSpecError> {
        let arg = LinuxSeccompArgBuilder::default()
            .index(self.index)
            .value(self.value)
            .op(self.op);
        match self.value_two {
            Some(value_two) => arg.value_two(value_two),
            None => arg,
        }
        .build()
    }
}

/// When a rule applies (as `includes`: all of these hold) or does not (as `excludes`: any of
/// these holds). Empty lists and no version are no condition.
#[derive(Debug, Clone, Copy)]
struct Condition {
    /// Capabilities of the process' bounding set.
    caps: &'static [Capability],
    /// Native architecture names (`amd64`, `x86`, `x32`, `arm`, `arm64`, `s390x`, ...).
    arches: &'static [&'static str],
    /// Lowest host kernel.
    min_kernel: Option<KernelVersion>,
}

impl Condition {
    const NONE: Self = Self {
        caps: &[],
        arches: &[],
        min_kernel: None,
    };

    const fn caps(caps: &'static [Capability]) -> Self {
        Self { caps, ..Self::NONE }
    }

    const fn arches(arches: &'static [&'static str]) -> Self {
        Self {
            arches,
            ..Self::NONE
        }
    }

    const fn min_kernel(version: KernelVersion) -> Self {
        Self {
            min_kernel: Some(version),
            ..Self::NONE
        }
    }
}

/// One group of syscalls of the profile, with its action, argument checks and conditions.
#[derive(Debug, Clone)]
struct Rule {
    names: &'static [&'static str],
    action: Action,
    args: &'static [ArgCheck],
    includes: Condition,
    excludes: Condition,
}

impl Rule {
    const fn allow(names: &'static [&'static str]) -> Self {
        Self {
            names,
            action: Action::Allow,
            args: &[],
            includes: Condition::NONE,
            excludes: Condition::NONE,
        }
    }

    const fn errno(names: &'static [&'static str], errno: u32) -> Self {
        Self {
            action: Action::Errno(errno),
            ..Self::allow(names)
        }
    }

    const fn args(self, args: &'static [ArgCheck]) -> Self {
        Self { args, ..self }
    }

    const fn includes(self, includes: Condition) -> Self {
        Self { includes, ..self }
    }

    const fn excludes(self, excludes: Condition) -> Self {
        Self { excludes, ..self }
    }

    fn applies(
        &self,
        capabilities: &[Capability],
        native_arch: &str,
        kernel: Option<KernelVersion>,
    ) -> bool {
        let at_least = |min: KernelVersion| kernel.is_some_and(|k| k >= min);
        let excluded = self.excludes.arches.contains(&native_arch)
            || self.excludes.caps.iter().any(|c| capabilities.contains(c))
            || self.excludes.min_kernel.is_some_and(at_least);
        let included = (self.includes.arches.is_empty()
            || self.includes.arches.contains(&native_arch))
            && self.includes.caps.iter().all(|c| capabilities.contains(c))
            && self.includes.min_kernel.is_none_or(at_least);
        included && !excluded
    }

    fn to_oci(&self) -> Result<LinuxSyscall, OciSpecError> {
        let mut syscall = LinuxSyscall::default();
        syscall.set_names(self.names.iter().map(|n| n.to_string()).collect());
        match self.action {
            Action::Allow => {
                syscall.set_action(LinuxSeccompAction::ScmpActAllow);
                syscall.set_errno_ret(None);
            }
            Action::Errno(errno) => {
                syscall.set_action(LinuxSeccompAction::ScmpActErrno);
                syscall.set_errno_ret(Some(errno));
            }
        }
        syscall.set_args(if self.args.is_empty() {
            None
        } else {
            Some(
                self.args
                    .iter()
                    .map(|a| a.to_oci())
                    .collect::<Result<_, _>>()?,
            )
        });
        Ok(syscall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};
    use serde_json::{Value, json};

    const KERNEL: Option<KernelVersion> = Some(KernelVersion::new(6, 1));

    fn profile(capabilities: &[Capability]) -> LinuxSeccomp {
        default_profile_for_kernel(capabilities, "amd64", KERNEL).unwrap()
    }

    fn rules(profile: &LinuxSeccomp) -> &[LinuxSyscall] {
        profile.syscalls().as_deref().unwrap()
    }

    fn arg_holds(arg: &LinuxSeccompArg, args: &[u64]) -> bool {
        let Some(&actual) = args.get(arg.index()) else {
            return false;
        };
        let value = arg.value();
        match arg.op() {
            LinuxSeccompOperator::ScmpCmpNe => actual != value,
            LinuxSeccompOperator::ScmpCmpLt => actual < value,
            LinuxSeccompOperator::ScmpCmpLe => actual <= value,
            LinuxSeccompOperator::ScmpCmpEq => actual == value,
            LinuxSeccompOperator::ScmpCmpGe => actual >= value,
            LinuxSeccompOperator::ScmpCmpGt => actual > value,
            LinuxSeccompOperator::ScmpCmpMaskedEq => actual & value == arg.value_two().unwrap_or(0),
        }
    }

    /// What the filter answers to `name(args...)`: `Ok(())` when allowed, `Err(errno)` when not
    /// (a rule's errno, else the default EPERM).
    fn verdict(profile: &LinuxSeccomp, name: &str, args: &[u64]) -> Result<(), u32> {
        let matching: Vec<&LinuxSyscall> = rules(profile)
            .iter()
            .filter(|r| r.names().iter().any(|n| n == name))
            .filter(|r| {
                r.args()
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .all(|a| arg_holds(a, args))
            })
            .collect();
        if matching
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        {
            return Ok(());
        }
        match matching.first() {
            Some(rule) => Err(rule.errno_ret().unwrap()),
            None => Err(profile.default_errno_ret().unwrap()),
        }
    }

    fn allowed(profile: &LinuxSeccomp, name: &str) -> bool {
        verdict(profile, name, &[]).is_ok()
    }

    fn with(extra: Capability) -> Vec<Capability> {
        let mut caps = DEFAULT_CAPABILITIES.to_vec();
        caps.push(extra);
        caps
    }

    #[test]
    fn always_allowed_set_is_dockers() {
        assert_eq!(ALLOWED_SYSCALLS.len(), 361);
        let mut unique = ALLOWED_SYSCALLS.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ALLOWED_SYSCALLS.len());
        for name in [
            "read",
            "write",
            "execve",
            "openat",
            "fork",
            "vfork",
            "wait4",
            "socketcall",
        ] {
            assert!(ALLOWED_SYSCALLS.contains(&name), "{name}");
        }
        // Only conditionally allowed, or never.
        for name in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "ptrace",
            "reboot",
            "chroot",
            "socket",
            "personality",
            "kexec_load",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "swapon",
        ] {
            assert!(!ALLOWED_SYSCALLS.contains(&name), "{name}");
        }
    }

    #[test]
    fn default_capabilities_deny_the_dangerous_syscalls() {
        let p = profile(&DEFAULT_CAPABILITIES);
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "reboot",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "open_by_handle_at",
            "kcmp",
            "pidfd_getfd",
            "iopl",
            "ioperm",
            "settimeofday",
            "clock_settime",
            "swapon",
            "acct",
            "syslog",
            "vhangup",
            "mbind",
            "userfaultfd",
            "sethostname",
        ] {
            assert_eq!(verdict(&p, name, &[]), Err(1), "{name}");
        }
        for name in [
            "read",
            "write",
            "execve",
            "arch_prctl",
            "modify_ldt",
            "chroot",
        ] {
            assert!(allowed(&p, name), "{name}");
        }
        // Architecture rules of other architectures are left out.
        for name in ["cacheflush", "set_tls", "swapcontext", "s390_runtime_instr"] {
            assert!(!allowed(&p, name), "{name}");
        }
    }

    #[test]
    fn clone_without_namespace_flags_and_clone3_answers_enosys() {
        let p = profile(&DEFAULT_CAPABILITIES);
        let sigchld = libc::SIGCHLD as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(verdict(&p, "clone", &[sigchld]), Ok(()));
        assert_eq!(verdict(&p, "clone", &[thread]), Ok(()));
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(
                verdict(&p, "clone", &[sigchld | flag as u64]),
                Err(1),
                "{flag:#x}"
            );
        }
        assert_eq!(verdict(&p, "clone3", &[]), Err(libc::ENOSYS as u32));
    }

    #[test]
    fn socket_families_and_personalities() {
        let p = profile(&DEFAULT_CAPABILITIES);
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            39,
            41,
        ] {
            assert_eq!(verdict(&p, "socket", &[family as u64]), Ok(()), "{family}");
        }
        for family in [libc::AF_ALG, libc::AF_VSOCK] {
            assert_eq!(verdict(&p, "socket", &[family as u64]), Err(1), "{family}");
        }
        for persona in [0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff] {
            assert_eq!(
                verdict(&p, "personality", &[persona]),
                Ok(()),
                "{persona:#x}"
            );
        }
        // READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE
        for persona in [0x0040_0000, 0x0004_0000] {
            assert_eq!(
                verdict(&p, "personality", &[persona]),
                Err(1),
                "{persona:#x}"
            );
        }
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let cases: &[(Capability, &[&str])] = &[
            (
                Capability::SysAdmin,
                &[
                    "mount",
                    "umount2",
                    "unshare",
                    "setns",
                    "sethostname",
                    "bpf",
                    "clone3",
                ],
            ),
            (Capability::SysBoot, &["reboot"]),
            (
                Capability::SysModule,
                &["init_module", "finit_module", "delete_module"],
            ),
            (Capability::SysPacct, &["acct"]),
            (
                Capability::SysPtrace,
                &["kcmp", "pidfd_getfd", "process_madvise"],
            ),
            (Capability::SysRawio, &["iopl", "ioperm"]),
            (Capability::SysTime, &["settimeofday", "clock_settime"]),
            (Capability::SysTtyConfig, &["vhangup"]),
            (Capability::SysNice, &["mbind", "set_mempolicy"]),
            (Capability::Syslog, &["syslog"]),
            (Capability::Bpf, &["bpf"]),
            (Capability::Perfmon, &["perf_event_open"]),
            (Capability::DacReadSearch, &["open_by_handle_at"]),
        ];
        let without = profile(&DEFAULT_CAPABILITIES);
        for (cap, names) in cases {
            let p = profile(&with(*cap));
            for name in *names {
                assert!(!allowed(&without, name), "{name} without {cap:?}");
                assert!(allowed(&p, name), "{name} with {cap:?}");
            }
        }
        // kexec_load is never allowed, not even with every capability.
        assert!(!allowed(&profile(&ALL_CAPABILITIES), "kexec_load"));
    }

    #[test]
    fn chroot_needs_cap_sys_chroot() {
        let no_chroot: Vec<Capability> = DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| *c != Capability::SysChroot)
            .collect();
        assert!(allowed(&profile(&DEFAULT_CAPABILITIES), "chroot"));
        assert!(!allowed(&profile(&no_chroot), "chroot"));
    }

    #[test]
    fn cap_sys_admin_allows_clone_with_any_flags_and_drops_the_restricted_rules() {
        let p = profile(&with(Capability::SysAdmin));
        let newuser = (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64;
        assert_eq!(verdict(&p, "clone", &[newuser]), Ok(()));
        assert_eq!(verdict(&p, "clone3", &[]), Ok(()));
        let clone_rules: Vec<&LinuxSyscall> = rules(&p)
            .iter()
            .filter(|r| r.names().iter().any(|n| n == "clone" || n == "clone3"))
            .collect();
        assert_eq!(clone_rules.len(), 1, "{clone_rules:?}");
        assert!(clone_rules[0].args().is_none());
    }

    #[test]
    fn ptrace_follows_the_kernel_version_or_cap_sys_ptrace() {
        let at =
            |kernel| default_profile_for_kernel(&DEFAULT_CAPABILITIES, "amd64", kernel).unwrap();
        for name in ["ptrace", "process_vm_readv", "process_vm_writev"] {
            assert!(allowed(&at(Some(KernelVersion::new(4, 8))), name), "{name}");
            assert!(allowed(&at(Some(KernelVersion::new(6, 1))), name), "{name}");
            assert!(
                !allowed(&at(Some(KernelVersion::new(4, 7))), name),
                "{name}"
            );
            assert!(
                !allowed(&at(Some(KernelVersion::new(3, 10))), name),
                "{name}"
            );
            assert!(!allowed(&at(None), name), "{name}");
            let traced =
                default_profile_for_kernel(&with(Capability::SysPtrace), "amd64", None).unwrap();
            assert!(allowed(&traced, name), "{name}");
        }
    }

    #[test]
    fn architectures() {
        let archs = |arch| {
            default_profile_for_kernel(&DEFAULT_CAPABILITIES, arch, KERNEL)
                .unwrap()
                .architectures()
                .clone()
        };
        assert_eq!(
            archs("amd64"),
            Some(vec![
                Arch::ScmpArchX86_64,
                Arch::ScmpArchX86,
                Arch::ScmpArchX32
            ])
        );
        assert_eq!(
            archs("arm64"),
            Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm])
        );
        assert_eq!(
            archs("s390x"),
            Some(vec![Arch::ScmpArchS390x, Arch::ScmpArchS390])
        );
        assert_eq!(archs("riscv64"), Some(vec![Arch::ScmpArchRiscv64]));
        assert_eq!(archs("ppc64le"), None);
        assert_eq!(archs("x86_64"), None, "Rust names are not Go names");

        let arm64 = default_profile_for_kernel(&DEFAULT_CAPABILITIES, "arm64", KERNEL).unwrap();
        for name in [
            "cacheflush",
            "set_tls",
            "arm_fadvise64_64",
            "sync_file_range2",
        ] {
            assert!(allowed(&arm64, name), "{name}");
        }
        for name in ["arch_prctl", "modify_ldt"] {
            assert!(!allowed(&arm64, name), "{name}");
        }
        let ppc = default_profile_for_kernel(&DEFAULT_CAPABILITIES, "ppc64le", KERNEL).unwrap();
        assert!(allowed(&ppc, "swapcontext"));

        // s390 passes clone's flags as the second argument.
        let s390x = default_profile_for_kernel(&DEFAULT_CAPABILITIES, "s390x", KERNEL).unwrap();
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(verdict(&s390x, "clone", &[0, 0]), Ok(()));
        assert_eq!(verdict(&s390x, "clone", &[0, newuser]), Err(1));
        assert_eq!(verdict(&s390x, "clone", &[newuser, 0]), Ok(()));
        assert!(allowed(&s390x, "s390_runtime_instr"));
    }

    #[test]
    fn rule_counts_for_the_default_capabilities_on_amd64() {
        let p = profile(&DEFAULT_CAPABILITIES);
        let names: Vec<Vec<&str>> = rules(&p)
            .iter()
            .map(|r| r.names().iter().map(String::as_str).collect())
            .collect();
        assert_eq!(names[0].len(), 361);
        assert_eq!(
            names[1..],
            [
                vec!["process_vm_readv", "process_vm_writev", "ptrace"],
                vec!["socket"],
                vec!["socket"],
                vec!["socket"],
                vec!["personality"],
                vec!["personality"],
                vec!["personality"],
                vec!["personality"],
                vec!["personality"],
                vec!["arch_prctl"],
                vec!["modify_ldt"],
                vec!["clone"],
                vec!["clone3"],
                vec!["chroot"],
            ]
        );
        let unconditional: usize = rules(&p)
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
            .map(|r| r.names().len())
            .sum();
        assert_eq!(unconditional, 361 + 3 + 3);
    }

    #[test]
    fn json_has_the_shape_runc_reads() {
        let p = profile(&DEFAULT_CAPABILITIES);
        let value = serde_json::to_value(&p).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "architectures",
                "defaultAction",
                "defaultErrnoRet",
                "syscalls"
            ]
        );
        assert_eq!(value["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(value["defaultErrnoRet"], 1);
        assert_eq!(
            value["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let syscalls = value["syscalls"].as_array().unwrap();
        assert_eq!(syscalls[0]["action"], "SCMP_ACT_ALLOW");
        assert_eq!(syscalls[0]["names"][0], "accept");
        assert_eq!(
            syscalls[0].as_object().unwrap().len(),
            2,
            "names and action only"
        );
        let find = |name: &str| -> Vec<&Value> {
            syscalls
                .iter()
                .filter(|s| s["names"] == json!([name]))
                .collect()
        };
        assert_eq!(
            find("clone"),
            [&json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 2114060288u64, "op": "SCMP_CMP_MASKED_EQ"}]})]
        );
        assert_eq!(
            find("clone3"),
            [&json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})]
        );
        assert_eq!(
            find("socket"),
            [
                &json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": 38, "op": "SCMP_CMP_LT"}]}),
                &json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": 39, "op": "SCMP_CMP_EQ"}]}),
                &json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_GT"}]}),
            ]
        );
        assert_eq!(find("personality").len(), 5);
        assert_eq!(
            find("personality")[4]["args"],
            json!([{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}])
        );
        // Round trip.
        let back: LinuxSeccomp = serde_json::from_value(value).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn kernel_versions_parse_like_dockers() {
        let v = |major, minor| Some(KernelVersion::new(major, minor));
        assert_eq!(KernelVersion::parse("6.1.0-18-amd64"), v(6, 1));
        assert_eq!(KernelVersion::parse("3.12.25-gentoo"), v(3, 12));
        assert_eq!(KernelVersion::parse("3.12-1-amd64"), v(3, 12));
        assert_eq!(KernelVersion::parse("3.12-rc5"), v(3, 12));
        assert_eq!(KernelVersion::parse("4.8\n"), v(4, 8));
        assert_eq!(KernelVersion::parse("6"), None);
        assert_eq!(KernelVersion::parse("x.1"), None);
        assert_eq!(KernelVersion::parse("6.x"), None);
        assert!(KernelVersion::new(4, 10) > KernelVersion::new(4, 8));
        assert!(KernelVersion::new(5, 0) > KernelVersion::new(4, 20));
        assert!(KernelVersion::host().is_some());
    }
}
