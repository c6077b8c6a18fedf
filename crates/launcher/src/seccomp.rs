//! The spec's seccomp profile compiled by libseccomp ([`Filter::compile`]) before the clone and
//! loaded by the container's init ([`Filter::load`]), with runc's rules for profiles: names this
//! libseccomp does not know are skipped, rules whose action is the default one are skipped, and
//! conditions on the same argument are separate (ORed) rules.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};

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
    context: ScmpFilterContext,
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
            }
        }
        Ok(Filter { context })
    }

    /// Loads the filter into the calling thread (the container's init, before its exec).
    pub fn load(&self) -> Result<(), SeccompError> {
        self.context.load().map_err(|source| SeccompError::Library {
            step: "load the filter".to_owned(),
            source,
        })
    }
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
