//! A bundle's `config.json`, checked and turned into what the container's init needs
//! ([`ContainerConfig`]), everything converted before the clone so the init only makes syscalls.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Spec};

use crate::caps;

/// Errors of reading a bundle's spec.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `config.json` could not be read or decoded.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The spec asks for something the launcher does not do (use runc for it).
    #[error("{} asks for {what}, which dagr-launcher does not support", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The field or value.
        what: String,
    },
    /// A required field is missing or malformed.
    #[error("{}: {what}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// One mount of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Absolute destination inside the container.
    pub destination: String,
    /// Filesystem type (`bind` for binds).
    pub kind: String,
    /// Source (a host path for binds).
    pub source: String,
    /// `mount(8)`-style options.
    pub options: Vec<String>,
}

/// A container's spec as the launcher runs it.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The root filesystem (absolute).
    pub rootfs: PathBuf,
    /// Whether the root is read-only.
    pub readonly_root: bool,
    /// The hostname, if the spec sets one.
    pub hostname: Option<String>,
    /// The process's argv.
    pub args: Vec<CString>,
    /// The process's environment.
    pub env: Vec<CString>,
    /// `PATH` from the environment, to look `args[0]` up.
    pub path_env: String,
    /// The working directory (created if missing).
    pub cwd: String,
    /// Whether stdin is a terminal to make the controlling one.
    pub terminal: bool,
    /// The user.
    pub uid: u32,
    /// The group.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Capability sets, as bit masks (bit N is capability N).
    pub caps: caps::CapSets,
    /// `no_new_privs`.
    pub no_new_privileges: bool,
    /// Resource limits: resource number, soft, hard.
    pub rlimits: Vec<(i32, u64, u64)>,
    /// Mounts, in order.
    pub mounts: Vec<MountEntry>,
    /// Paths hidden from the container.
    pub masked_paths: Vec<String>,
    /// Paths made read-only.
    pub readonly_paths: Vec<String>,
    /// Namespaces to create (a `CLONE_NEW*` mask).
    pub new_namespaces: i32,
    /// The network namespace to join, if one is given by path.
    pub netns: Option<PathBuf>,
    /// The cgroup path (relative to each hierarchy's root).
    pub cgroups_path: Option<PathBuf>,
    /// The seccomp filter.
    pub seccomp: Option<LinuxSeccomp>,
}

fn cstring(path: &Path, what: &str, s: &str) -> Result<CString, ConfigError> {
    CString::new(s).map_err(|_| ConfigError::Invalid {
        path: path.to_owned(),
        what: format!("{what} contains a nul byte"),
    })
}

impl ContainerConfig {
    /// Reads and checks `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> Result<Self, ConfigError> {
        let path = bundle.join("config.json");
        let spec = Spec::load(&path).map_err(|e| ConfigError::Read {
            path: path.clone(),
            source: Box::new(e),
        })?;
        Self::from_spec(&spec, bundle, &path)
    }

    /// Checks `spec` (read from `path`, in `bundle`).
    pub fn from_spec(spec: &Spec, bundle: &Path, path: &Path) -> Result<Self, ConfigError> {
        let unsupported = |what: &str| ConfigError::Unsupported {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        let invalid = |what: &str| ConfigError::Invalid {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        if spec.hooks().as_ref().is_some_and(|h| {
            [
                h.prestart().as_ref(),
                h.create_runtime().as_ref(),
                h.create_container().as_ref(),
                h.start_container().as_ref(),
                h.poststart().as_ref(),
                h.poststop().as_ref(),
            ]
            .into_iter()
            .any(|hooks| hooks.is_some_and(|v| !v.is_empty()))
        }) {
            return Err(unsupported("hooks"));
        }
        let root = spec.root().as_ref().ok_or_else(|| invalid("no root"))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| invalid("no process"))?;
        if process.apparmor_profile().is_some()
            || process.selinux_label().is_some()
            || process.oom_score_adj().is_some()
            || process.scheduler().is_some()
            || process.io_priority().is_some()
            || process.exec_cpu_affinity().is_some()
        {
            return Err(unsupported(
                "process.apparmorProfile/selinuxLabel/oomScoreAdj/scheduler/ioPriority/execCPUAffinity",
            ));
        }
        let args = process
            .args()
            .as_ref()
            .ok_or_else(|| invalid("no process.args"))?;
        if args.is_empty() {
            return Err(invalid("process.args is empty"));
        }
        let env: Vec<String> = process.env().clone().unwrap_or_default();
        let path_env = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .to_owned();
        let user = process.user();
        let caps = match process.capabilities() {
            Some(c) => caps::CapSets::from_spec(c),
            None => caps::CapSets::default(),
        };
        let mut rlimits = Vec::new();
        for limit in process.rlimits().iter().flatten() {
            let name = serde_json::to_value(limit.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let resource = rlimit_resource(&name).ok_or_else(|| unsupported(&name))?;
            rlimits.push((resource, limit.soft(), limit.hard()));
        }

        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| invalid("no linux section"))?;
        if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        {
            return Err(unsupported("uid/gid mappings"));
        }
        if linux.resources().is_some() {
            return Err(unsupported(
                "linux.resources (limits are set on the parent cgroup)",
            ));
        }
        if linux.devices().as_ref().is_some_and(|d| !d.is_empty())
            || linux.sysctl().as_ref().is_some_and(|s| !s.is_empty())
            || linux.rootfs_propagation().is_some()
            || linux.mount_label().is_some()
            || linux.intel_rdt().is_some()
            || linux.personality().is_some()
            || linux.time_offsets().is_some()
            || linux.net_devices().is_some()
        {
            return Err(unsupported(
                "linux.devices/sysctl/rootfsPropagation/mountLabel/intelRdt/personality/timeOffsets/netDevices",
            ));
        }
        let mut new_namespaces = 0;
        let mut netns = None;
        for ns in linux.namespaces().iter().flatten() {
            let flag = match ns.typ() {
                LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
                LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
                LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
                LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
                LinuxNamespaceType::Network => libc::CLONE_NEWNET,
                other => return Err(unsupported(&format!("a {other} namespace"))),
            };
            match ns.path() {
                Some(p) if flag == libc::CLONE_NEWNET => netns = Some(p.clone()),
                Some(_) => return Err(unsupported("joining a namespace other than the network's")),
                None => new_namespaces |= flag,
            }
        }
        for needed in [libc::CLONE_NEWNS, libc::CLONE_NEWPID] {
            if new_namespaces & needed == 0 {
                return Err(unsupported(
                    "a container without its own mount and pid namespaces",
                ));
            }
        }
        let mounts = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| MountEntry {
                destination: m.destination().to_string_lossy().into_owned(),
                kind: m.typ().clone().unwrap_or_else(|| "bind".to_owned()),
                source: m
                    .source()
                    .as_ref()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                options: m.options().clone().unwrap_or_default(),
            })
            .collect();

        Ok(ContainerConfig {
            rootfs,
            readonly_root: root.readonly().unwrap_or(false),
            hostname: spec.hostname().clone(),
            args: args
                .iter()
                .map(|a| cstring(path, "process.args", a))
                .collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|e| cstring(path, "process.env", e))
                .collect::<Result<_, _>>()?,
            path_env,
            cwd: process.cwd().to_string_lossy().into_owned(),
            terminal: process.terminal().unwrap_or(false),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            caps,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            rlimits,
            mounts,
            masked_paths: linux.masked_paths().clone().unwrap_or_default(),
            readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
            new_namespaces,
            netns,
            cgroups_path: linux.cgroups_path().clone(),
            seccomp: linux.seccomp().clone(),
        })
    }
}

fn rlimit_resource(name: &str) -> Option<i32> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> Spec {
        let mut base = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {
                "args": ["sh", "-c", "true"],
                "env": ["PATH=/bin:/usr/bin", "A=b"],
                "cwd": "/work",
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048}],
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_CHOWN", "CAP_KILL"]}
            },
            "hostname": "box",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}],
            "linux": {
                "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network", "path": "/run/netns/x"}],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "cgroupsPath": "/dagr/x/ctr"
            }
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                if let (Some(b), Some(e)) = (
                    base.get_mut(k).and_then(|b| b.as_object_mut()),
                    v.as_object(),
                ) {
                    b.extend(e.clone());
                } else {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn check(extra: serde_json::Value) -> Result<ContainerConfig, ConfigError> {
        ContainerConfig::from_spec(&spec(extra), Path::new("/b"), Path::new("/b/config.json"))
    }

    #[test]
    fn a_plain_spec_is_converted() {
        let c = check(json!({})).unwrap();
        assert_eq!(c.rootfs, PathBuf::from("/b/rootfs"));
        assert_eq!(c.args.len(), 3);
        assert_eq!(c.path_env, "/bin:/usr/bin");
        assert_eq!(
            (c.uid, c.gid, c.additional_gids.clone()),
            (1000, 1000, vec![5])
        );
        assert_eq!(c.rlimits, vec![(libc::RLIMIT_NOFILE as i32, 1024, 2048)]);
        assert_eq!(c.caps.bounding, (1 << 0) | (1 << 5));
        assert_eq!(c.caps.effective, 1 << 5);
        assert_eq!(c.netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!(
            c.new_namespaces,
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS
        );
        assert_eq!(c.hostname.as_deref(), Some("box"));
        assert_eq!(c.cgroups_path, Some(PathBuf::from("/dagr/x/ctr")));
        assert_eq!(c.mounts[0].kind, "proc");
    }

    #[test]
    fn what_the_launcher_does_not_do_is_refused_by_name() {
        let cases = [
            (
                json!({"hooks": {"prestart": [{"path": "/bin/true"}]}}),
                "hooks",
            ),
            (
                json!({"linux": {"resources": {"pids": {"limit": 5}}}}),
                "linux.resources",
            ),
            (
                json!({"linux": {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}}),
                "mappings",
            ),
            (
                json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "user"}]}}),
                "user namespace",
            ),
            (
                json!({"linux": {"namespaces": [{"type": "pid"}]}}),
                "own mount and pid",
            ),
            (json!({"process": {"oomScoreAdj": 5}}), "oomScoreAdj"),
        ];
        for (extra, needle) in cases {
            let err = check(extra.clone()).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
            assert!(err.contains("/b/config.json"), "{err}");
        }
    }
}
