//! Which network a client's host is: the identity of a network namespace,
//! `<boot id>/<nsfs device>:<inode>`, equal for two processes exactly when they share one
//! network namespace on one boot of one machine. A client sends its own with the attachables
//! handshake ([`NETWORK_HEADER`]); the engine compares it with its own
//! (when they match, [`crate::AttachablesClient::listen`] binds in the engine). It names the client process's own namespace,
//! whatever relays (ssh, `dial-stdio`, a proxy) its connection goes through.
//!
//! A client that claims the engine's identity without sharing its network gets the ports it
//! asks for bound on the engine's loopback instead of its own (only loopback addresses with
//! unprivileged ports are bound that way): nothing it could not reach through a tunnel anyway.

use std::os::unix::fs::MetadataExt as _;
use std::sync::OnceLock;

/// The handshake header carrying the client's network identity.
pub const NETWORK_HEADER: &str = "x-dagr-network-namespace";

/// This process's network identity (of its main thread's namespace), when `/proc` tells.
/// Reads `/proc` on the first call only.
pub fn own_network() -> Option<&'static str> {
    static OWN: OnceLock<Option<String>> = OnceLock::new();
    OWN.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let namespace = std::fs::metadata("/proc/self/ns/net").ok()?;
        Some(format!(
            "{}/{}:{}",
            boot.trim(),
            namespace.dev(),
            namespace.ino()
        ))
    })
    .as_deref()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap

    use super::*;

    #[test]
    fn the_identity_names_the_boot_and_the_namespace() {
        let own = own_network().unwrap();
        let (boot, namespace) = own.split_once('/').unwrap();
        assert_eq!(boot.len(), 36, "{own}");
        let (device, inode) = namespace.split_once(':').unwrap();
        assert!(
            device.parse::<u64>().is_ok() && inode.parse::<u64>().is_ok(),
            "{own}"
        );
        assert_eq!(own_network(), Some(own), "stable");
    }
}
