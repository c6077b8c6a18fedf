//! The containers a state root holds: `<root>/<id>/state.json` ([`ContainerState`]), and the
//! commands on them ([`kill`], [`delete`], [`list`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Errors of state commands.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No container of that id under the root.
    #[error("container {id} does not exist")]
    NotFound {
        /// The container id.
        id: String,
    },
    /// The id could name a path outside the root.
    #[error("invalid container id {id:?}")]
    InvalidId {
        /// The id given.
        id: String,
    },
    /// A state file or directory could not be read, written or removed.
    #[error("container state {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
    /// A state file does not decode.
    #[error("container state {}: {source}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The container is running and `force` was not given.
    #[error("container {id} is running (pid {pid})")]
    Running {
        /// The container id.
        id: String,
        /// Its init's pid.
        pid: i32,
    },
    /// Signalling the container's init failed.
    #[error("signal {signal} to container {id} (pid {pid}): {source}")]
    Signal {
        /// The container id.
        id: String,
        /// Its init's pid.
        pid: i32,
        /// The signal number.
        signal: i32,
        /// The system error.
        source: std::io::Error,
    },
    /// The container's init did not go away after SIGKILL.
    #[error("container {id} (pid {pid}) still runs after SIGKILL")]
    Stuck {
        /// The container id.
        id: String,
        /// Its init's pid.
        pid: i32,
    },
}

/// What the launcher records of a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// The container id.
    pub id: String,
    /// The host pid of the container's init.
    pub pid: i32,
    /// Its start time (`/proc/<pid>/stat` field 22), so that a reused pid is never signalled.
    pub start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Cgroup directories the launcher made for the container (removed on delete).
    pub cgroups: Vec<PathBuf>,
}

const STATE_FILE: &str = "state.json";

/// The directory of container `id` under `root`, refusing ids that are not plain names.
pub(crate) fn container_dir(root: &Path, id: &str) -> Result<PathBuf, StateError> {
    let plain = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(StateError::InvalidId { id: id.to_owned() });
    }
    Ok(root.join(id))
}

impl ContainerState {
    /// Writes the state (atomically: a temporary file renamed into place).
    pub(crate) fn save(&self, root: &Path) -> Result<(), StateError> {
        let dir = container_dir(root, &self.id)?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        let bytes = serde_json::to_vec(self).map_err(|source| StateError::Decode {
            path: dir.join(STATE_FILE),
            source,
        })?;
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        let path = dir.join(STATE_FILE);
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// The state of container `id` under `root`.
    pub fn load(root: &Path, id: &str) -> Result<Self, StateError> {
        let path = container_dir(root, id)?.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound { id: id.to_owned() });
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| StateError::Decode { path, source })
    }

    /// Whether the recorded init still runs (the same process: its start time matches).
    pub fn is_running(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 of `/proc/<pid>/stat` (after the parenthesized command, which may hold spaces);
/// `None` once the process is gone or a zombie.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace();
    // Field 3 (state) is the first after the command.
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Sends `signal` to container `id`'s init (`runc kill`).
pub fn kill(root: &Path, id: &str, signal: i32) -> Result<(), StateError> {
    let state = ContainerState::load(root, id)?;
    if !state.is_running() {
        return Err(StateError::NotFound { id: id.to_owned() });
    }
    signal_pid(&state, signal)
}

fn signal_pid(state: &ContainerState, signal: i32) -> Result<(), StateError> {
    // SAFETY: kill(2) takes plain integers.
    let sent = unsafe { libc::kill(state.pid, signal) };
    if sent != 0 {
        let source = std::io::Error::last_os_error();
        if source.raw_os_error() != Some(libc::ESRCH) {
            return Err(StateError::Signal {
                id: state.id.clone(),
                pid: state.pid,
                signal,
                source,
            });
        }
    }
    Ok(())
}

/// Removes container `id` (`runc delete`): with `force`, kills its init first (and with it the
/// container's pid namespace) and waits up to 5 s for it to go. Removes its cgroups and state.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), StateError> {
    let dir = container_dir(root, id)?;
    let state = match ContainerState::load(root, id) {
        Ok(state) => Some(state),
        Err(StateError::NotFound { .. }) if dir.exists() => None,
        Err(StateError::Decode { .. }) => None,
        Err(e) => return Err(e),
    };
    if let Some(state) = &state {
        if state.is_running() {
            if !force {
                return Err(StateError::Running {
                    id: id.to_owned(),
                    pid: state.pid,
                });
            }
            signal_pid(state, libc::SIGKILL)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while state.is_running() {
                if Instant::now() > deadline {
                    return Err(StateError::Stuck {
                        id: id.to_owned(),
                        pid: state.pid,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        remove_cgroups(&state.cgroups);
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io { path: dir, source }),
    }
}

/// Removes cgroup directories, retrying briefly while their last processes exit.
pub(crate) fn remove_cgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => break,
            }
        }
    }
}

/// The ids of the containers under `root` (`runc list -q`).
pub fn list(root: &Path) -> Result<Vec<String>, StateError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Io {
                path: root.to_owned(),
                source,
            });
        }
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StateError::Io {
            path: root.to_owned(),
            source,
        })?;
        if entry.path().is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            ids.push(name.to_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_not_plain_names_are_refused() {
        let root = Path::new("/state");
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(
                matches!(container_dir(root, bad), Err(StateError::InvalidId { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            container_dir(root, "dagr-0123abcd").unwrap(),
            root.join("dagr-0123abcd")
        );
    }

    #[test]
    fn state_round_trips_and_lists_and_deletes() {
        let root = tempfile::tempdir().unwrap();
        let state = ContainerState {
            id: "c1".into(),
            pid: std::process::id() as i32,
            start_time: process_start_time(std::process::id() as i32).unwrap(),
            bundle: "/bundle".into(),
            cgroups: Vec::new(),
        };
        std::fs::create_dir(root.path().join("c1")).unwrap();
        state.save(root.path()).unwrap();
        assert_eq!(ContainerState::load(root.path(), "c1").unwrap(), state);
        assert!(state.is_running(), "this process runs");
        assert_eq!(list(root.path()).unwrap(), vec!["c1".to_string()]);
        // Without force, a running container is not deleted.
        assert!(matches!(
            delete(root.path(), "c1", false),
            Err(StateError::Running { .. })
        ));
        // A recorded process that is gone (another start time) is not signalled.
        let gone = ContainerState {
            start_time: state.start_time + 1,
            ..state
        };
        gone.save(root.path()).unwrap();
        assert!(!gone.is_running());
        assert!(matches!(
            kill(root.path(), "c1", 0),
            Err(StateError::NotFound { .. })
        ));
        delete(root.path(), "c1", true).unwrap();
        assert!(list(root.path()).unwrap().is_empty());
        assert!(matches!(
            ContainerState::load(root.path(), "c1"),
            Err(StateError::NotFound { .. })
        ));
    }

    #[test]
    fn start_time_parsing_survives_spaces_and_parens_in_the_command() {
        // Our own process: present, not a zombie.
        assert!(process_start_time(std::process::id() as i32).is_some());
        assert_eq!(process_start_time(i32::MAX), None);
    }
}
