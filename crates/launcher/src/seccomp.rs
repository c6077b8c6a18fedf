//! The spec's seccomp profile compiled by libseccomp ([`Filter::compile`]) before the clone and
//! loaded by the container's init ([`Filter::load`]), with runc's rules for profiles: names this
//! libseccomp does not know are skipped, rules whose action is the default one are skipped, and
//! conditions on the same argument are separate (ORed) rules.
//!
//! Compiling Docker's profile for three architectures costs libseccomp ~18 ms, most of a
//! launch: [`Filter::cached`] keeps each profile's BPF program in a file named by the profile's
//! SHA-256 under the state root and loads that program directly the next time.
//!
//! Programs are compiled as a binary tree sorted by syscall number (libseccomp's optimization
//! level 2, where the library has it) rather than a list of rules: the kernel runs the filter on
//! every syscall number of every architecture when it loads it (to cache the syscalls it always
//! allows) and on every syscall the container makes, and a tree walk is O(log n) where the list
//! is O(n). Loading Docker's profile took 1.1 ms as a list.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};
use sha2::{Digest as _, Sha256};

/// How programs are compiled, part of the cache's file names (with libseccomp's version): a
/// program compiled otherwise is not reused.
const PROGRAM_FORMAT: &[u8] = b"dagr-seccomp-tree-1\n";

/// Profiles with fewer rules are compiled as a list, as runc does: libseccomp before 2.5.4
/// ignored the default action of a tree without rules (libseccomp#370), and a short list costs
/// nothing to walk.
const TREE_MIN_RULES: usize = 8;

/// Errors of compiling or loading a profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A value of the profile is not one libseccomp knows.
    #[error("seccomp profile: unsupported {what} {value:?}")]
    Unsupported {
        /// What kind of value.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The kernel refused the program.
    #[error("seccomp: load the filter: {source}")]
    Load {
        /// The system error.
        source: std::io::Error,
    },
    /// libseccomp refused.
    #[error("seccomp: {step}: {source}")]
    Library {
        /// What was being done.
        step: String,
        /// libseccomp's error.
        source: libseccomp::error::SeccompError,
    },
}

/// A compiled filter, ready to load.
pub struct Filter {
    program: Program,
}

enum Program {
    /// Compiled now by libseccomp.
    Compiled(ScmpFilterContext),
    /// A BPF program exported by libseccomp earlier.
    Bpf(Vec<libc::sock_filter>),
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Filter")
    }
}

fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn action(action: &LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let name = name_of(action);
    let value = match name.as_str() {
        // runc's default errno for SCMP_ACT_ERRNO is EPERM.
        "SCMP_ACT_ERRNO" => Some(errno.map_or(libc::EPERM, |e| e as i32)),
        "SCMP_ACT_TRACE" => Some(errno.map_or(libc::EPERM, |e| e as i32)),
        _ => None,
    };
    ScmpAction::from_str(&name, value).map_err(|_| SeccompError::Unsupported {
        what: "action",
        value: name,
    })
}

fn compare(arg: &oci_spec::runtime::LinuxSeccompArg) -> Result<ScmpArgCompare, SeccompError> {
    let name = name_of(&arg.op());
    let op = match name.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // OCI: value is the mask, valueTwo the datum.
        "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(arg.value()),
        _ => {
            return Err(SeccompError::Unsupported {
                what: "comparison",
                value: name,
            });
        }
    };
    let datum = if name == "SCMP_CMP_MASKED_EQ" {
        arg.value_two().unwrap_or(0)
    } else {
        arg.value()
    };
    Ok(ScmpArgCompare::new(arg.index() as u32, op, datum))
}

impl Filter {
    /// Compiles `profile`. The filter does not set `no_new_privs` itself (the init loads it
    /// while it still has `CAP_SYS_ADMIN` unless the spec asks for `noNewPrivileges`).
    pub fn compile(profile: &LinuxSeccomp) -> Result<Self, SeccompError> {
        let lib = |step: &str| {
            let step = step.to_owned();
            move |source| SeccompError::Library { step, source }
        };
        let default = action(&profile.default_action(), profile.default_errno_ret())?;
        let mut context = ScmpFilterContext::new(default).map_err(lib("create the filter"))?;
        context
            .set_ctl_nnp(false)
            .map_err(lib("clear no_new_privs"))?;
        for arch in profile.architectures().iter().flatten() {
            let name = name_of(arch);
            let arch: ScmpArch = name.parse().map_err(|_| SeccompError::Unsupported {
                what: "architecture",
                value: name.clone(),
            })?;
            context
                .add_arch(arch)
                .map_err(lib(&format!("add {name}")))?;
        }
        let mut rules = 0usize;
        for rule in profile.syscalls().iter().flatten() {
            let rule_action = action(&rule.action(), rule.errno_ret())?;
            if rule_action == default {
                continue;
            }
            let args = rule.args().clone().unwrap_or_default();
            let comparisons: Vec<ScmpArgCompare> =
                args.iter().map(compare).collect::<Result<_, _>>()?;
            // One rule with every condition (ANDed), unless an argument repeats: then a rule
            // per condition (ORed), as runc does.
            let mut indices: Vec<usize> = args.iter().map(|a| a.index()).collect();
            indices.sort_unstable();
            let repeats = indices.windows(2).any(|w| w[0] == w[1]);
            for name in rule.names() {
                let Ok(syscall) = ScmpSyscall::from_name(name) else {
                    continue;
                };
                let added = if comparisons.is_empty() {
                    context.add_rule(rule_action, syscall)
                } else if repeats {
                    comparisons
                        .iter()
                        .try_for_each(|c| {
                            context
                                .add_rule_conditional(rule_action, syscall, std::slice::from_ref(c))
                                .map(drop)
                        })
                        .map(|()| &mut context)
                } else {
                    context.add_rule_conditional(rule_action, syscall, &comparisons)
                };
                added.map_err(lib(&format!("add a rule for {name}")))?;
                rules += 1;
            }
        }
        // A binary tree (see the module docs). libseccomp before 2.5 refuses the level and
        // compiles its list, which filters the same syscalls, only slower.
        if rules >= TREE_MIN_RULES {
            let _ = context.set_ctl_optimize(2);
        }
        Ok(Filter {
            program: Program::Compiled(context),
        })
    }

    /// The filter of `profile`: the BPF program `dir` keeps for it, or compiled now and kept
    /// there (`seccomp-<sha256 of the profile>.bpf`, written atomically; a file that cannot be
    /// written only costs the next launch a compilation).
    pub fn cached(profile: &LinuxSeccomp, dir: &Path) -> Result<Self, SeccompError> {
        let json = serde_json::to_vec(profile).unwrap_or_default();
        let version = libseccomp::ScmpVersion::current()
            .map(|v| format!("{}.{}.{}\n", v.major, v.minor, v.micro))
            .unwrap_or_default();
        let digest = hex(&Sha256::new()
            .chain_update(PROGRAM_FORMAT)
            .chain_update(version.as_bytes())
            .chain_update(&json)
            .finalize());
        let path = dir.join(format!("seccomp-{digest}.bpf"));
        if let Ok(bytes) = std::fs::read(&path)
            && let Some(program) = decode(&bytes)
        {
            return Ok(Filter {
                program: Program::Bpf(program),
            });
        }
        let filter = Self::compile(profile)?;
        if let Program::Compiled(context) = &filter.program {
            let tmp = dir.join(format!(".seccomp-{digest}.{}", std::process::id()));
            let written = std::fs::File::create(&tmp)
                .ok()
                .filter(|file| context.export_bpf(file).is_ok())
                .is_some();
            if written {
                let _ = std::fs::rename(&tmp, &path);
            } else {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(filter)
    }

    /// Loads the filter into the calling thread (the container's init, before its exec).
    pub fn load(&self) -> Result<(), SeccompError> {
        match &self.program {
            Program::Compiled(context) => context.load().map_err(|source| SeccompError::Library {
                step: "load the filter".to_owned(),
                source,
            }),
            Program::Bpf(program) => {
                let fprog = libc::sock_fprog {
                    len: program.len() as libc::c_ushort,
                    filter: program.as_ptr().cast_mut(),
                };
                // SAFETY: `fprog` points at `program`, alive for the call; the kernel copies it.
                let r = unsafe {
                    libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                        &fprog as *const libc::sock_fprog,
                    )
                };
                if r != 0 {
                    return Err(SeccompError::Load {
                        source: std::io::Error::last_os_error(),
                    });
                }
                Ok(())
            }
        }
    }

    /// Whether this filter came from the cache.
    pub fn is_cached(&self) -> bool {
        matches!(self.program, Program::Bpf(_))
    }
}

/// A BPF program as libseccomp exports it: 8-byte instructions in host byte order.
fn decode(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) || bytes.len() / 8 > usize::from(u16::MAX)
    {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_profile_with_conditions_unknown_names_and_default_rules_compiles() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall_here"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}, {"index": 0, "value": 16, "op": "SCMP_CMP_NE"}]},
                {"names": ["mount"], "action": "SCMP_ACT_ERRNO"}
            ]
        }));
        Filter::compile(&p).unwrap();
    }

    #[test]
    fn a_cached_program_is_what_libseccomp_exported() {
        let dir = tempfile::tempdir().unwrap();
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]
        }));
        let first = Filter::cached(&p, dir.path()).unwrap();
        assert!(!first.is_cached());
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "one program, no temporary left");
        let second = Filter::cached(&p, dir.path()).unwrap();
        assert!(second.is_cached());
        let Program::Bpf(program) = &second.program else {
            unreachable!()
        };
        // libseccomp's programs start by loading the architecture and end with return actions.
        assert_eq!(program[0].code, 0x20, "ld [arch]");
        assert!(program.iter().any(|i| i.code == 0x06), "a return");
        // Another profile is another file.
        let other = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}));
        assert!(!Filter::cached(&other, dir.path()).unwrap().is_cached());
        // A damaged file is compiled again.
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            std::fs::write(f.path(), b"bad").unwrap();
        }
        assert!(!Filter::cached(&p, dir.path()).unwrap().is_cached());
    }

    #[test]
    fn unknown_architectures_are_refused_by_name() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_RISCV64"],
        }));
        // riscv64 is known to recent libseccomp; either it compiles or the error names it.
        if let Err(e) = Filter::compile(&p) {
            assert!(e.to_string().contains("RISCV64"), "{e}");
        }
    }
}
