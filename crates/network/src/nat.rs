//! Outbound NAT and forwarding for the bridge, as iptables rules tagged with a comment that
//! names the bridge, so that a restarted engine finds and replaces its predecessor's rules.
//! iptables (with either back end, legacy or nf_tables) is on every distribution and is what
//! Docker, Podman and BuildKit's CNI setups use; rules change only at engine start and stop.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cidr::Ipv4Cidr;

/// Errors of the NAT rules.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// No iptables binary.
    #[error(
        "iptables not found in PATH: container networking needs it (apt-get install iptables), or run the engine with --network=none"
    )]
    Missing,
    /// iptables refused a rule.
    #[error("iptables {args}: {message}")]
    Rule {
        /// The arguments.
        args: String,
        /// What it printed (or why it could not run).
        message: String,
    },
    /// IP forwarding could not be turned on.
    #[error("enable IPv4 forwarding ({path}): {source}", path = .path.display())]
    Forwarding {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The rules of one bridge.
#[derive(Debug, Clone)]
pub struct Nat {
    iptables: PathBuf,
    bridge: String,
    cidr: Ipv4Cidr,
}

/// A rule: table, chain, match and target.
struct Rule {
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    /// iptables arguments applying `op` (`-C`, `-I`, `-D`) to this rule, at `position` if given.
    fn args(&self, op: &str, position: Option<&str>) -> Vec<String> {
        let mut args = vec!["-t".into(), self.table.into(), op.into(), self.chain.into()];
        args.extend(position.map(String::from));
        args.extend(self.spec.iter().cloned());
        args
    }
}

impl Nat {
    /// The rules for `bridge` and its subnet, set with `iptables` (a path, or a name looked up
    /// in `PATH`).
    pub fn new(iptables: impl Into<PathBuf>, bridge: &str, cidr: Ipv4Cidr) -> Nat {
        Nat {
            iptables: iptables.into(),
            bridge: bridge.to_owned(),
            cidr,
        }
    }

    fn rules(&self) -> Vec<Rule> {
        let tag = |mut spec: Vec<String>| {
            spec.extend(
                [
                    "-m",
                    "comment",
                    "--comment",
                    &format!("dagr:{}", self.bridge),
                ]
                .map(String::from),
            );
            spec
        };
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        vec![
            Rule {
                table: "nat",
                chain: "POSTROUTING",
                spec: tag(words(&format!(
                    "-s {} ! -o {} -j MASQUERADE",
                    self.cidr, self.bridge
                ))),
            },
            Rule {
                table: "filter",
                chain: "FORWARD",
                spec: tag(words(&format!("-i {} -j ACCEPT", self.bridge))),
            },
            Rule {
                table: "filter",
                chain: "FORWARD",
                spec: tag(words(&format!("-o {} -j ACCEPT", self.bridge))),
            },
        ]
    }

    /// Runs iptables; `Ok(false)` when it refused (with what it printed).
    fn iptables(&self, args: &[String]) -> Result<Result<(), String>, NatError> {
        let output = Command::new(&self.iptables)
            .arg("-w")
            .args(args)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => NatError::Missing,
                _ => NatError::Rule {
                    args: args.join(" "),
                    message: e.to_string(),
                },
            })?;
        if output.status.success() {
            Ok(Ok(()))
        } else {
            Ok(Err(String::from_utf8_lossy(&output.stderr)
                .trim()
                .to_owned()))
        }
    }

    fn run(&self, args: &[String]) -> Result<(), NatError> {
        self.iptables(args)?.map_err(|message| NatError::Rule {
            args: args.join(" "),
            message,
        })
    }

    /// Blocking: turns IPv4 forwarding on and installs the rules (first in their chains, so
    /// that a host firewall's DROP policy does not stop the bridge), once each.
    pub fn install(&self) -> Result<(), NatError> {
        let forward = Path::new("/proc/sys/net/ipv4/ip_forward");
        std::fs::write(forward, "1").map_err(|source| NatError::Forwarding {
            path: forward.to_path_buf(),
            source,
        })?;
        for rule in self.rules() {
            if self.iptables(&rule.args("-C", None))?.is_ok() {
                continue;
            }
            self.run(&rule.args("-I", Some("1")))?;
        }
        Ok(())
    }

    /// Blocking: removes the rules (every copy of each).
    pub fn remove(&self) -> Result<(), NatError> {
        for rule in self.rules() {
            let delete = rule.args("-D", None);
            // -D removes one copy per call; 16 bounds a loop on a rule that will not go.
            for _ in 0..16 {
                if self.iptables(&delete)?.is_err() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Blocking: how many of the rules are installed (for tests and leak checks).
    pub fn installed(&self) -> Result<usize, NatError> {
        let mut count = 0;
        for rule in self.rules() {
            count += usize::from(self.iptables(&rule.args("-C", None))?.is_ok());
        }
        Ok(count)
    }
}
