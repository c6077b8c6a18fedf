//! dagr-network: the network of the engine's containers.
//!
//! - [`Network`] (set up by [`Network::start`] from a [`NetworkConfig`], or
//!   [`Network::loopback`]) hands each exec an [`ExecNetwork`]: a network namespace pinned on a
//!   file ([`NetworkNamespace`]) with loopback up and, in [`NetworkMode::Bridge`], a veth into
//!   the engine's bridge, an address from the [`Ipam`] and a default route through the bridge.
//!   Namespaces are prepared ahead of time by a small pool, so an exec does not wait for one.
//! - In bridge mode the engine's DNS server ([`DnsServer`], names in a [`DnsTable`]) listens on
//!   the bridge address: an exec sees the names published in its scope (a session's services)
//!   and the aliases it binds; other names go to the upstream resolvers. Outbound traffic is
//!   masqueraded ([`Nat`], iptables rules tagged with the bridge's name).
//! - Everything is returned: an exec's address, names and namespace when its [`ExecNetwork`] is
//!   released or dropped; the pool, DNS server and rules at [`Network::shutdown`]. A starting
//!   network removes what a dead predecessor left (veths on its bridge, pinned namespaces,
//!   rules).
//!
//! Blocking: [`Network::acquire`] and [`ExecNetwork::release`] make syscalls and netlink
//! requests; call them on blocking threads (the executor prepares bundles on one).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cidr;
mod dns;
mod ipam;
mod nat;
mod netlink;
mod netns;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

pub use cidr::{CidrError, HostRoute, Ipv4Cidr, parse_proc_routes};
pub use dns::{Answer, DOMAIN, DnsError, DnsServer, DnsTable};
pub use ipam::{Ipam, IpamError};
pub use nat::{Nat, NatError};
pub use netns::{NetnsError, NetworkNamespace, run_inside};

/// The default subnet of the bridge.
pub const DEFAULT_CIDR: &str = "10.87.0.0/16";
/// The default name of the bridge.
pub const DEFAULT_BRIDGE: &str = "dagr0";
/// Namespaces kept ready by default.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// The name of an exec's interface into the bridge.
pub const EXEC_INTERFACE: &str = "eth0";

/// Errors of the network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Nat(#[from] NatError),
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// The subnet overlaps a route of the host.
    #[error(
        "network cidr {cidr} overlaps the host route {route} on {interface}: choose another --network-cidr"
    )]
    Overlap {
        cidr: Ipv4Cidr,
        route: Ipv4Cidr,
        interface: String,
    },
    /// The bridge could not be created or configured.
    #[error("bridge {bridge}: {source}")]
    Bridge { bridge: String, source: io::Error },
    /// A host file could not be read.
    #[error("read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The exec's interface on the host side could not be attached.
    #[error("attach {veth} to bridge {bridge}: {source}")]
    Attach {
        veth: String,
        bridge: String,
        source: io::Error,
    },
    /// Names or aliases were asked of a network without a bridge.
    #[error(
        "services need container networking, and the engine runs with --network=none (asked to resolve {0})"
    )]
    NoBridge(String),
}

/// How execs are networked.
#[derive(Debug, Clone)]
pub enum NetworkMode {
    /// Loopback only.
    Loopback,
    /// A bridge with NAT and DNS.
    Bridge(BridgeConfig),
}

/// The bridge's settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The bridge's interface name.
    pub name: String,
    pub cidr: Ipv4Cidr,
    /// Where names that are not the engine's are resolved.
    pub dns_upstreams: Vec<SocketAddr>,
    /// The iptables binary (a path, or a name looked up in `PATH`).
    pub iptables: PathBuf,
}

/// What [`Network::start`] sets up.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Where namespaces are pinned (owned by the network: stale files are removed at start).
    pub netns_dir: PathBuf,
    pub mode: NetworkMode,
    /// Namespaces prepared ahead of time (0: each exec prepares its own).
    pub pool_size: usize,
}

/// The nameservers of a `resolv.conf` text, on port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The bridge as execs use it.
#[derive(Debug)]
struct Bridge {
    config: BridgeConfig,
    index: u32,
    /// The host's network namespace, where the execs' veth peers go.
    host_netns: File,
    /// A netlink socket of the host's namespace.
    host: Mutex<netlink::Netlink>,
    ipam: Mutex<Ipam>,
    dns: Arc<DnsTable>,
}

impl std::fmt::Debug for netlink::Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netlink")
    }
}

#[derive(Debug)]
struct Shared {
    netns_dir: PathBuf,
    bridge: Option<Bridge>,
}

/// Namespaces prepared ahead of time.
#[derive(Debug, Default)]
struct Pool {
    ready: Mutex<VecDeque<ExecNetwork>>,
    wake: Condvar,
    stopped: AtomicBool,
}

/// The engine's container network (see the crate docs).
#[derive(Debug)]
pub struct Network {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    pool_size: usize,
    pool_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    dns_server: Mutex<Option<DnsServer>>,
    nat: Option<Nat>,
}

/// Numbers for tests and leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkStats {
    /// Exec addresses given out (pooled ones included).
    pub addresses: usize,
    /// Names published in the DNS table.
    pub names: usize,
    /// Execs with a DNS view.
    pub sources: usize,
    /// Namespaces ready in the pool.
    pub pooled: usize,
}

fn random_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Blocking: unpins and removes every namespace file under `dir` (a dead predecessor's).
fn remove_stale_namespaces(dir: &Path) -> Result<usize, NetworkError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(NetworkError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        // Not mounted (EINVAL) is fine: the file alone is left.
        let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
        if std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

impl Network {
    /// Loopback-only namespaces pinned under `netns_dir`, prepared when asked: nothing is
    /// started. The executor's default.
    pub fn loopback(netns_dir: impl Into<PathBuf>) -> Network {
        Network {
            shared: Arc::new(Shared {
                netns_dir: netns_dir.into(),
                bridge: None,
            }),
            pool: Arc::default(),
            pool_size: 0,
            pool_thread: Mutex::new(None),
            dns_server: Mutex::new(None),
            nat: None,
        }
    }

    /// Sets the network up: removes what a dead predecessor left, creates or reuses the
    /// bridge, installs the NAT rules, starts the DNS server (on the current tokio runtime) and
    /// the pool's thread.
    pub async fn start(config: NetworkConfig) -> Result<Network, NetworkError> {
        let NetworkConfig {
            netns_dir,
            mode,
            pool_size,
        } = config;
        let setup_dir = netns_dir.clone();
        let setup_mode = mode.clone();
        let (bridge, nat) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&setup_dir).map_err(|source| NetworkError::Read {
                path: setup_dir.clone(),
                source,
            })?;
            remove_stale_namespaces(&setup_dir)?;
            match setup_mode {
                NetworkMode::Loopback => Ok::<_, NetworkError>((None, None)),
                NetworkMode::Bridge(config) => {
                    let (bridge, nat) = Self::set_up_bridge(config)?;
                    Ok((Some(bridge), Some(nat)))
                }
            }
        })
        .await
        .map_err(|e| NetworkError::Read {
            path: netns_dir.clone(),
            source: io::Error::other(e.to_string()),
        })??;
        let dns_server = match &bridge {
            Some(bridge) => Some(
                DnsServer::start(
                    SocketAddr::new(bridge.config.cidr.gateway().into(), 53),
                    bridge.dns.clone(),
                    bridge.config.dns_upstreams.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let network = Network {
            shared: Arc::new(Shared { netns_dir, bridge }),
            pool: Arc::default(),
            pool_size,
            pool_thread: Mutex::new(None),
            dns_server: Mutex::new(dns_server),
            nat,
        };
        network.start_pool();
        Ok(network)
    }

    /// Blocking: checks the subnet against the host's routes, creates (or takes over) the
    /// bridge, removes stale veths on it and installs the NAT rules.
    fn set_up_bridge(config: BridgeConfig) -> Result<(Bridge, Nat), NetworkError> {
        let routes_path = Path::new("/proc/net/route");
        let routes = std::fs::read_to_string(routes_path).map_err(|source| NetworkError::Read {
            path: routes_path.to_path_buf(),
            source,
        })?;
        for route in parse_proc_routes(&routes) {
            if route.interface != config.name && route.destination.overlaps(&config.cidr) {
                return Err(NetworkError::Overlap {
                    cidr: config.cidr,
                    route: route.destination,
                    interface: route.interface,
                });
            }
        }
        let bridge_err = |source| NetworkError::Bridge {
            bridge: config.name.clone(),
            source,
        };
        let host_netns = File::open("/proc/thread-self/ns/net").map_err(bridge_err)?;
        let mut host = netlink::Netlink::open().map_err(bridge_err)?;
        let index = match host.link_index(&config.name).map_err(bridge_err)? {
            Some(index) => index,
            None => {
                host.add_bridge(&config.name).map_err(bridge_err)?;
                host.link_index(&config.name)
                    .map_err(bridge_err)?
                    .ok_or_else(|| bridge_err(io::Error::other("created but not found")))?
            }
        };
        // Veths a dead predecessor attached.
        for link in host.links().map_err(bridge_err)? {
            if link.controller == Some(index)
                && let Err(e) = host.delete_link(link.index)
                && e.raw_os_error() != Some(libc::ENODEV)
            {
                tracing::warn!(veth = %link.name, error = %e, "stale veth removal failed");
            }
        }
        // A bridge whose address is not set takes the lowest of its ports' addresses, so it
        // would change as execs come and go, and execs would lose the gateway until their ARP
        // entry expired. A fixed, locally administered address derived from the subnet.
        let [a, b, c, d] = config.cidr.gateway().octets();
        host.set_mac(index, [0x02, 0xda, a, b, c, d])
            .map_err(bridge_err)?;
        host.add_address(index, config.cidr.gateway(), config.cidr.prefix_len())
            .map_err(bridge_err)?;
        host.set_up(index, None).map_err(bridge_err)?;
        let nat = Nat::new(config.iptables.clone(), &config.name, config.cidr);
        nat.install()?;
        let ipam = Ipam::new(config.cidr);
        Ok((
            Bridge {
                config,
                index,
                host_netns,
                host: Mutex::new(host),
                ipam: Mutex::new(ipam),
                dns: Arc::new(DnsTable::default()),
            },
            nat,
        ))
    }

    fn start_pool(&self) {
        if self.pool_size == 0 {
            return;
        }
        let shared = self.shared.clone();
        let pool = self.pool.clone();
        let wanted = self.pool_size;
        let thread = std::thread::Builder::new()
            .name("dagr-netpool".into())
            .spawn(move || {
                let mut ready = pool.ready.lock();
                while !pool.stopped.load(Ordering::Acquire) {
                    if ready.len() >= wanted {
                        pool.wake.wait(&mut ready);
                        continue;
                    }
                    drop(ready);
                    let prepared = shared.prepare();
                    ready = pool.ready.lock();
                    match prepared {
                        // Stopped meanwhile: it is released (on drop) instead of kept.
                        Ok(_) if pool.stopped.load(Ordering::Acquire) => {}
                        Ok(network) => ready.push_back(network),
                        Err(e) => {
                            tracing::warn!(error = %e, "preparing a network namespace failed");
                            // Execs prepare their own (and report the error) until this
                            // recovers.
                            pool.wake
                                .wait_for(&mut ready, std::time::Duration::from_secs(1));
                        }
                    }
                }
            });
        match thread {
            Ok(thread) => *self.pool_thread.lock() = Some(thread),
            Err(e) => tracing::warn!(error = %e, "network pool thread did not start"),
        }
    }

    /// Blocking: a network for one exec, from the pool when one is ready.
    pub fn acquire(&self) -> Result<ExecNetwork, NetworkError> {
        let ready = self.pool.ready.lock().pop_front();
        if let Some(ready) = ready {
            self.pool.wake.notify_one();
            return Ok(ready);
        }
        self.shared.prepare()
    }

    /// A namespace with loopback only, whatever the mode (an exec that asked for no network).
    pub fn acquire_isolated(&self) -> Result<ExecNetwork, NetworkError> {
        self.shared.prepare_isolated()
    }

    /// `/etc/resolv.conf` of execs: the engine's DNS server in bridge mode, nothing otherwise.
    pub fn resolv_conf(&self) -> String {
        match &self.shared.bridge {
            Some(bridge) => format!(
                "nameserver {}\nsearch {DOMAIN}\noptions ndots:1\n",
                bridge.config.cidr.gateway()
            ),
            None => String::new(),
        }
    }

    /// The bridge's settings, in bridge mode.
    pub fn bridge(&self) -> Option<&BridgeConfig> {
        self.shared.bridge.as_ref().map(|b| &b.config)
    }

    /// The bridge's address (the execs' gateway and nameserver), in bridge mode.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.bridge().map(|b| b.cidr.gateway())
    }

    /// The DNS table, in bridge mode.
    pub fn dns(&self) -> Option<&Arc<DnsTable>> {
        self.shared.bridge.as_ref().map(|b| &b.dns)
    }

    pub fn stats(&self) -> NetworkStats {
        let (addresses, names, sources) = match &self.shared.bridge {
            Some(b) => (b.ipam.lock().in_use(), b.dns.published(), b.dns.sources()),
            None => (0, 0, 0),
        };
        NetworkStats {
            addresses,
            names,
            sources,
            pooled: self.pool.ready.lock().len(),
        }
    }

    /// Stops the pool (releasing what it held) and the DNS server, and removes the NAT rules
    /// and the bridge. Call it once no exec runs.
    pub async fn shutdown(&self) {
        {
            // Under the lock, so the pool thread cannot miss it between its check and its wait.
            let _ready = self.pool.ready.lock();
            self.pool.stopped.store(true, Ordering::Release);
        }
        self.pool.wake.notify_all();
        let thread = self.pool_thread.lock().take();
        let pool = self.pool.clone();
        let nat = self.nat.clone();
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(thread) = thread {
                let _ = thread.join();
            }
            let ready: Vec<ExecNetwork> = pool.ready.lock().drain(..).collect();
            for network in ready {
                if let Err(e) = network.release() {
                    tracing::warn!(error = %e, "pooled network release failed");
                }
            }
            if let Some(nat) = nat
                && let Err(e) = nat.remove()
            {
                tracing::warn!(error = %e, "NAT rules removal failed");
            }
            if let Some(bridge) = &shared.bridge
                && let Err(e) = bridge.host.lock().delete_link(bridge.index)
            {
                tracing::warn!(bridge = %bridge.config.name, error = %e, "bridge removal failed");
            }
        })
        .await;
        self.dns_server.lock().take();
    }
}

impl Drop for Network {
    /// Stops the pool and releases the namespaces it held (blocking, briefly: each is an
    /// unmount). [`Network::shutdown`] also removes the NAT rules and stops the DNS server.
    fn drop(&mut self) {
        {
            let _ready = self.pool.ready.lock();
            self.pool.stopped.store(true, Ordering::Release);
        }
        self.pool.wake.notify_all();
        let ready: Vec<ExecNetwork> = self.pool.ready.lock().drain(..).collect();
        drop(ready);
    }
}

impl Shared {
    /// Blocking: a new namespace, with its veth and address in bridge mode.
    fn prepare_isolated(self: &Arc<Self>) -> Result<ExecNetwork, NetworkError> {
        let path = self.netns_dir.join(format!("n-{}", random_suffix()));
        Ok(ExecNetwork {
            netns: Some(NetworkNamespace::create(&path)?),
            address: None,
            shared: self.clone(),
            published: Vec::new(),
            viewing: false,
        })
    }

    fn prepare(self: &Arc<Self>) -> Result<ExecNetwork, NetworkError> {
        let Some(bridge) = &self.bridge else {
            return self.prepare_isolated();
        };
        let path = self.netns_dir.join(format!("n-{}", random_suffix()));
        let address = bridge.ipam.lock().allocate()?;
        let mut network = ExecNetwork {
            netns: None,
            address: Some(address),
            shared: self.clone(),
            published: Vec::new(),
            viewing: false,
        };
        let veth = format!("dv{}", random_suffix());
        let host_fd = bridge.host_netns.as_raw_fd();
        let cidr = bridge.config.cidr;
        network.netns = Some(NetworkNamespace::create_with(&path, || {
            let mut inside = netlink::Netlink::open()?;
            inside.add_veth(EXEC_INTERFACE, &veth, host_fd)?;
            let index = inside
                .link_index(EXEC_INTERFACE)?
                .ok_or_else(|| io::Error::other("veth created but not found"))?;
            inside.add_address(index, address, cidr.prefix_len())?;
            inside.set_up(index, None)?;
            inside.add_default_route(cidr.gateway())
        })?);
        let attach_err = |source| NetworkError::Attach {
            veth: veth.clone(),
            bridge: bridge.config.name.clone(),
            source,
        };
        let mut host = bridge.host.lock();
        let index = host
            .link_index(&veth)
            .map_err(attach_err)?
            .ok_or_else(|| attach_err(io::Error::from_raw_os_error(libc::ENODEV)))?;
        host.set_up(index, Some(bridge.index)).map_err(attach_err)?;
        Ok(network)
    }
}

/// One exec's network: its namespace and, in bridge mode, its address and the names it is
/// known by. Released by [`ExecNetwork::release`] or on drop (blocking either way).
#[derive(Debug)]
pub struct ExecNetwork {
    netns: Option<NetworkNamespace>,
    address: Option<Ipv4Addr>,
    shared: Arc<Shared>,
    /// (scope, name) published for this exec's address.
    published: Vec<(String, String)>,
    /// Whether the DNS table has a view for this exec's address.
    viewing: bool,
}

impl ExecNetwork {
    /// The file the namespace is pinned on.
    pub fn netns_path(&self) -> &Path {
        self.netns
            .as_ref()
            .map_or(Path::new(""), |netns| netns.path())
    }

    /// The exec's address on the bridge (none in loopback mode).
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.address
    }

    /// Makes the exec see the names of `scope` and `aliases` (alias -> name), and publishes it
    /// in `scope` under `names`. Without a bridge only empty lists are accepted.
    pub fn configure(
        &mut self,
        scope: &str,
        names: &[String],
        aliases: Vec<(String, String)>,
    ) -> Result<(), NetworkError> {
        let (Some(bridge), Some(address)) = (&self.shared.bridge, self.address) else {
            return match names.first().or(aliases.first().map(|(a, _)| a)) {
                Some(name) => Err(NetworkError::NoBridge(name.clone())),
                None => Ok(()),
            };
        };
        bridge.dns.add_source(address, scope, aliases);
        self.viewing = true;
        for name in names {
            bridge.dns.publish(scope, name, address);
            self.published.push((scope.to_owned(), name.clone()));
        }
        Ok(())
    }

    /// Blocking: withdraws the names, unpins the namespace (its veth pair goes with it) and
    /// returns the address.
    pub fn release(mut self) -> Result<(), NetworkError> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), NetworkError> {
        if let (Some(bridge), Some(address)) = (&self.shared.bridge, self.address) {
            for (scope, name) in self.published.drain(..) {
                bridge.dns.withdraw(&scope, &name, address);
            }
            if std::mem::take(&mut self.viewing) {
                bridge.dns.remove_source(address);
            }
        }
        let removed = match self.netns.take() {
            Some(netns) => netns.remove().map_err(NetworkError::from),
            None => Ok(()),
        };
        // Returned once the namespace is unpinned: the kernel destroys it (and the veth pair)
        // once its last process is gone, and round-robin allocation keeps the address unused
        // meanwhile.
        if let (Some(bridge), Some(address)) = (&self.shared.bridge, self.address.take()) {
            bridge.ipam.lock().release(address);
        }
        removed
    }
}

impl Drop for ExecNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            tracing::warn!(error = %e, "exec network release failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers() {
        assert_eq!(
            parse_resolv_conf(
                "# x\nnameserver 10.0.0.53\nsearch a\nnameserver ::1\nnameserver bad\n"
            ),
            vec!["10.0.0.53:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
