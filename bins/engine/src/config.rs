//! Command-line configuration of the engine: listen addresses and the state directory.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context as _, bail};

/// Where the engine listens: `unix:///path/to/sock` or `tcp://127.0.0.1:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                bail!("listen address {s:?} has no socket path");
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("listen address {s:?} is not tcp://IP:PORT"))?;
            // The API runs containers as root: it is never exposed beyond this machine.
            if !addr.ip().is_loopback() {
                bail!(
                    "listen address {s:?} is not a loopback address; the engine API has no \
                     authentication, so it only listens on 127.0.0.1, ::1 or unix sockets"
                );
            }
            return Ok(ListenAddr::Tcp(addr));
        }
        bail!("listen address {s:?} must start with unix:// or tcp://")
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// `/var/lib/dagr` as root, else `$XDG_STATE_HOME/dagr` (or `~/.local/state/dagr`).
pub fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/dagr");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("dagr");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".local/state/dagr")
}

/// The default unix socket of an engine with this state directory.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("engine.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "unix:///run/x.sock".parse::<ListenAddr>().expect("unix"),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:0".parse::<ListenAddr>().expect("tcp"),
            ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr"))
        );
        assert!("tcp://[::1]:80".parse::<ListenAddr>().is_ok());
        let err = "tcp://0.0.0.0:80"
            .parse::<ListenAddr>()
            .expect_err("not loopback");
        assert!(err.to_string().contains("not a loopback address"));
        assert!("http://x".parse::<ListenAddr>().is_err());
        assert!("unix://".parse::<ListenAddr>().is_err());
    }
}
