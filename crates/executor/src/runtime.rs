//! The OCI runtime binary (runc) and the commands the executor gives it, all under one state root
//! (`runc --root`), so separate executors never see each other's containers.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Errors of runtime commands.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime binary is missing.
    #[error("oci runtime {} not found: {source} (install it with `apt-get install runc`)", binary.display())]
    NotFound {
        /// The binary asked for.
        binary: PathBuf,
        /// The spawn error.
        source: io::Error,
    },
    /// The binary could not be started.
    #[error("start {} {command}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The subcommand.
        command: String,
        /// The spawn error.
        source: io::Error,
    },
    /// A runtime command exited with an error.
    #[error("{} {command} {id} failed: {stderr}", binary.display())]
    Failed {
        /// The binary.
        binary: PathBuf,
        /// The subcommand.
        command: String,
        /// The container id.
        id: String,
        /// What the runtime printed on stderr.
        stderr: String,
    },
}

/// An OCI runtime binary with its state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    binary: PathBuf,
    root: PathBuf,
}

impl Runtime {
    /// A runtime run as `binary` (a path, or a name looked up in `PATH`) keeping its container
    /// state under `root`.
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Runtime {
            binary: binary.into(),
            root: root.into(),
        }
    }

    /// The binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The state root (`--root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks that the binary runs and returns the first line of its `--version`.
    pub fn check(&self) -> Result<String, RuntimeError> {
        let output = Command::new(&self.binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::NotFound {
                binary: self.binary.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(RuntimeError::Failed {
                binary: self.binary.clone(),
                command: "--version".into(),
                id: String::new(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())
    }

    /// Whether the runtime holds state for container `id`.
    pub fn has_container(&self, id: &str) -> bool {
        self.root.join(id).exists()
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root).stdin(Stdio::null());
        command
    }

    fn run_blocking(&self, command: &str, args: &[&str], id: &str) -> Result<String, RuntimeError> {
        let output = self
            .command()
            .arg(command)
            .args(args)
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                command: command.to_string(),
                source,
            })?;
        if !output.status.success() {
            return Err(RuntimeError::Failed {
                binary: self.binary.clone(),
                command: command.to_string(),
                id: id.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `runc kill <id> KILL`: kills the container's init, and with it its whole pid namespace.
    pub fn kill_blocking(&self, id: &str) -> Result<(), RuntimeError> {
        self.run_blocking("kill", &[id, "KILL"], id).map(drop)
    }

    /// `runc kill <id> SIGNAL`: signals the container's init.
    pub fn signal_blocking(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        self.run_blocking("kill", &[id, signal], id).map(drop)
    }

    /// `runc delete --force <id>`: kills what is left and removes the container's state and
    /// cgroups.
    pub fn delete_force_blocking(&self, id: &str) -> Result<(), RuntimeError> {
        self.run_blocking("delete", &["--force", id], id).map(drop)
    }

    /// `runc list -q`: ids of the containers under this state root.
    pub fn list_blocking(&self) -> Result<Vec<String>, RuntimeError> {
        let out = self.run_blocking("list", &["-q"], "")?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The `runc run` command of a prepared bundle, logging runtime errors as JSON to `log`.
    /// With `wait_in_cgroup` (dagr-launcher only), the launcher first moves into that cgroup
    /// path and waits for a start byte on stdin before it reads the bundle.
    pub fn run_command(
        &self,
        bundle: &Path,
        id: &str,
        pid_file: &Path,
        log: &Path,
        wait_in_cgroup: Option<&str>,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg("--no-new-keyring");
        if let Some(cgroup) = wait_in_cgroup {
            command.arg("--wait-in-cgroup").arg(cgroup);
        }
        command.arg(id);
        command
    }
}

/// Error messages (`level` `error` or `fatal`) of a runc JSON log.
pub fn runtime_log_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| matches!(entry["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|entry| entry["msg"].as_str().map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_are_extracted() {
        let log = concat!(
            r#"{"level":"warning","msg":"something odd","time":"2024-01-01T00:00:00Z"}"#,
            "\n",
            "not json\n",
            r#"{"level":"error","msg":"runc run failed: unable to start container process: exec: \"nope\": executable file not found in $PATH","time":"2024-01-01T00:00:00Z"}"#,
            "\n"
        );
        assert_eq!(
            runtime_log_errors(log),
            vec![
                "runc run failed: unable to start container process: exec: \"nope\": executable file not found in $PATH"
                    .to_string()
            ]
        );
        assert!(runtime_log_errors("").is_empty());
    }

    #[test]
    fn missing_binary_is_reported_with_the_install_hint() {
        let runtime = Runtime::new("/nonexistent/runc", "/tmp/unused");
        let err = runtime.check().unwrap_err();
        let message = err.to_string();
        assert!(message.contains("/nonexistent/runc"), "{message}");
        assert!(message.contains("apt-get install runc"), "{message}");
    }
}
