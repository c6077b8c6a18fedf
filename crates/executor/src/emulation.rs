//! Foreign platforms: execs of another CPU architecture run under QEMU user emulation, which
//! the kernel starts through `binfmt_misc`. [`register_qemu_handlers`] registers the handlers
//! Debian's `qemu-user-static` describes (`/usr/lib/binfmt.d/qemu-*.conf`, with the `F` flag,
//! so the emulator is opened at registration and works inside containers) when nothing else
//! did; [`check_emulator`] tells, before an exec starts, whether a platform can run here, and
//! says what to install when it cannot.

use std::path::{Path, PathBuf};

use dagr_platform::Platform;

/// Where the kernel's `binfmt_misc` handlers live.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";
/// Where Debian's `qemu-user-static` describes its handlers.
pub const BINFMT_CONF_DIR: &str = "/usr/lib/binfmt.d";

/// Why a foreign platform cannot run, or the handlers could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    #[error(
        "no emulator for {platform} on this {host} engine: install qemu-user-static \
         (`cargo xtask prereqs`) so that binfmt_misc has a qemu-{arch} handler"
    )]
    NoEmulator {
        platform: String,
        host: String,
        arch: String,
    },
    #[error("platform {platform} has an architecture this engine cannot emulate")]
    UnknownArchitecture { platform: String },
    #[error("binfmt_misc {path}: {source}")]
    Binfmt {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The kernel's (and QEMU's) name of a Go architecture name.
pub fn kernel_arch(platform: &Platform) -> Option<&'static str> {
    Some(
        match (platform.architecture.as_str(), platform.variant.as_deref()) {
            ("amd64", _) => "x86_64",
            ("386", _) => "i386",
            ("arm64", _) => "aarch64",
            ("arm", _) => "arm",
            ("riscv64", _) => "riscv64",
            ("ppc64le", _) => "ppc64le",
            ("s390x", _) => "s390x",
            ("mips64le", _) => "mips64el",
            ("mips64", _) => "mips64",
            ("loong64", _) => "loongarch64",
            _ => return None,
        },
    )
}

/// Whether execs of `platform` can run on an engine of `host`: natively, or through an
/// enabled `qemu-<arch>` handler in `binfmt_dir`.
pub fn check_emulator(
    host: &Platform,
    platform: &Platform,
    binfmt_dir: &Path,
) -> Result<(), EmulationError> {
    if platform.os == host.os && platform.architecture == host.architecture {
        return Ok(());
    }
    // 32-bit x86 runs natively on x86_64.
    if host.architecture == "amd64" && platform.architecture == "386" {
        return Ok(());
    }
    let arch = kernel_arch(platform).ok_or_else(|| EmulationError::UnknownArchitecture {
        platform: platform.to_string(),
    })?;
    if handler_enabled(binfmt_dir, arch) {
        return Ok(());
    }
    Err(EmulationError::NoEmulator {
        platform: platform.to_string(),
        host: host.to_string(),
        arch: arch.to_owned(),
    })
}

/// Whether an enabled handler runs `qemu-<arch>`: by name (`qemu-<arch>`, as Debian and
/// Docker's binfmt register them) or by its interpreter.
fn handler_enabled(binfmt_dir: &Path, arch: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(binfmt_dir) else {
        return false;
    };
    let wanted = format!("qemu-{arch}");
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            return false;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            return false;
        };
        let enabled = text.lines().next() == Some("enabled");
        let interpreter = text
            .lines()
            .find_map(|l| l.strip_prefix("interpreter "))
            .unwrap_or_default();
        let runs_it = name == wanted
            || interpreter.contains(&format!("{wanted}-static"))
            || interpreter.ends_with(&format!("/{arch}-binfmt-P"));
        enabled && runs_it
    })
}

/// Registers the `qemu-*` handlers described in `conf_dir` that `binfmt_dir` lacks, with the
/// `F` flag added; mounts `binfmt_misc` on `binfmt_dir` first when it is not mounted. Returns
/// the names registered. Blocking; for engine start-up.
pub fn register_qemu_handlers(
    conf_dir: &Path,
    binfmt_dir: &Path,
) -> Result<Vec<String>, EmulationError> {
    let binfmt_err = |path: &Path| {
        let path = path.to_owned();
        move |source| EmulationError::Binfmt { path, source }
    };
    let register = binfmt_dir.join("register");
    if !register.exists() {
        rustix::mount::mount(
            "binfmt_misc",
            binfmt_dir,
            "binfmt_misc",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .map_err(|e| binfmt_err(binfmt_dir)(e.into()))?;
    }
    let mut registered = Vec::new();
    let Ok(entries) = std::fs::read_dir(conf_dir) else {
        return Ok(registered);
    };
    let mut confs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("qemu-") && n.ends_with(".conf"))
        })
        .collect();
    confs.sort();
    for conf in confs {
        let text = std::fs::read_to_string(&conf).map_err(binfmt_err(&conf))?;
        for line in text.lines().filter(|l| l.starts_with(':')) {
            let Some(rule) = with_fix_binary(line) else {
                continue;
            };
            let name = rule.name;
            if binfmt_dir.join(&name).exists() {
                continue;
            }
            // The emulator must exist: the F flag opens it now.
            if !Path::new(&rule.interpreter).exists() {
                continue;
            }
            std::fs::write(&register, rule.line).map_err(binfmt_err(&register))?;
            registered.push(name);
        }
    }
    Ok(registered)
}

/// A `binfmt_misc` registration line and the parts that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Rule {
    name: String,
    interpreter: String,
    line: String,
}

/// `:name:type:offset:magic:mask:interpreter:flags` with `F` among the flags.
fn with_fix_binary(line: &str) -> Option<Rule> {
    let fields: Vec<&str> = line.split(':').collect();
    // The leading ':' gives an empty first field.
    let [_, name, kind, offset, magic, mask, interpreter, flags] = fields.as_slice() else {
        return None;
    };
    let flags = if flags.contains('F') {
        (*flags).to_owned()
    } else {
        format!("{flags}F")
    };
    Some(Rule {
        name: (*name).to_owned(),
        interpreter: (*interpreter).to_owned(),
        line: format!(":{name}:{kind}:{offset}:{magic}:{mask}:{interpreter}:{flags}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        text.parse().expect("platform")
    }

    #[test]
    fn native_platforms_need_no_emulator() {
        let host = platform("linux/amd64");
        let empty = tempfile::tempdir().expect("tmp");
        assert!(check_emulator(&host, &platform("linux/amd64"), empty.path()).is_ok());
        assert!(check_emulator(&host, &platform("linux/386"), empty.path()).is_ok());
        let err =
            check_emulator(&host, &platform("linux/arm64"), empty.path()).expect_err("no handler");
        let text = err.to_string();
        assert!(
            text.contains("linux/arm64") && text.contains("qemu-aarch64"),
            "{text}"
        );
        assert!(matches!(
            check_emulator(&host, &platform("linux/vax"), empty.path()),
            Err(EmulationError::UnknownArchitecture { .. })
        ));
    }

    #[test]
    fn enabled_qemu_handlers_count() {
        let host = platform("linux/amd64");
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            "disabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\n",
        )
        .expect("write");
        assert!(check_emulator(&host, &platform("linux/arm64"), dir.path()).is_err());
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n",
        )
        .expect("write");
        assert!(check_emulator(&host, &platform("linux/arm64"), dir.path()).is_ok());
    }

    #[test]
    fn registration_lines_get_the_fix_binary_flag() {
        let rule =
            with_fix_binary(":qemu-aarch64:M::\\x7fELF:\\xff:/usr/bin/qemu-aarch64-static:OP")
                .expect("rule");
        assert_eq!(rule.name, "qemu-aarch64");
        assert_eq!(rule.interpreter, "/usr/bin/qemu-aarch64-static");
        assert!(rule.line.ends_with(":OPF"), "{}", rule.line);
        assert!(with_fix_binary("garbage").is_none());
    }
}
