//! Capabilities: the spec's sets as bit masks ([`CapSets`]) and their application in the
//! container's init (bounding set first, then the user change keeping them, then `capset`).

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

/// Capability names in kernel number order: index N is capability N.
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability name (`CAP_...`).
pub fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// The five capability sets as bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

fn mask(set: &Option<Capabilities>) -> u64 {
    set.iter()
        .flatten()
        .filter_map(|c| {
            let name = serde_json::to_value(c).ok()?;
            number(name.as_str()?)
        })
        .fold(0, |m, n| m | (1u64 << n))
}

impl CapSets {
    /// The sets a spec's `process.capabilities` names.
    pub fn from_spec(caps: &LinuxCapabilities) -> Self {
        CapSets {
            bounding: mask(caps.bounding()),
            effective: mask(caps.effective()),
            permitted: mask(caps.permitted()),
            inheritable: mask(caps.inheritable()),
            ambient: mask(caps.ambient()),
        }
    }
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: these prctl options take integer arguments only.
    let r = unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The highest capability this kernel knows.
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability outside `sets.bounding` from the bounding set (needs `CAP_SETPCAP`,
/// so before the user changes) and keeps the permitted set across the user change.
pub(crate) fn drop_bounding(sets: &CapSets, last_cap: u32) -> std::io::Result<()> {
    for cap in 0..=last_cap.min(63) {
        if sets.bounding & (1u64 << cap) == 0 {
            match prctl(libc::PR_CAPBSET_DROP, cap.into()) {
                Ok(()) => {}
                // Capabilities this kernel does not have.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    prctl(libc::PR_SET_KEEPCAPS, 1)
}

/// Sets the effective, permitted and inheritable sets, then the ambient set (after the user
/// change).
pub(crate) fn apply(sets: &CapSets, last_cap: u32) -> std::io::Result<()> {
    let flags = rustix::thread::CapabilitySet::from_bits_retain;
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: flags(sets.effective),
            permitted: flags(sets.permitted),
            inheritable: flags(sets.inheritable),
        },
    )?;
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;
    // The kernel raises an ambient capability only if it is permitted and inheritable; runc
    // skips the others (its default spec names ambient capabilities without inheritable ones).
    let raisable = sets.ambient & sets.permitted & sets.inheritable;
    for cap in 0..=last_cap.min(63) {
        if raisable & (1u64 << cap) != 0 {
            // SAFETY: integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_in_kernel_order() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_AUDIT_READ"), Some(37));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
    }
}
