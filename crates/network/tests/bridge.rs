//! The bridge network for real (needs root): namespaces reach each other and the host through
//! the bridge, the DNS server answers by scope and alias and forwards the rest, and nothing is
//! left behind.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use dagr_network::{BridgeConfig, ExecNetwork, Network, NetworkConfig, NetworkMode, run_inside};

/// A bridge name and a /24 of their own for each test (tests of several binaries run at once).
fn unique_bridge(dns_upstreams: Vec<SocketAddr>) -> BridgeConfig {
    let n: u32 = rand_u32();
    BridgeConfig {
        name: format!("dt{:06x}", n & 0xff_ffff),
        cidr: format!("10.{}.{}.0/24", 200 + (n >> 8) % 50, n % 250)
            .parse()
            .unwrap(),
        dns_upstreams,
        iptables: "iptables".into(),
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    u32::from_le_bytes(bytes)
}

fn links() -> String {
    String::from_utf8(
        std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

async fn start(dir: &std::path::Path, bridge: BridgeConfig, pool_size: usize) -> Network {
    Network::start(NetworkConfig {
        netns_dir: dir.join("netns"),
        mode: NetworkMode::Bridge(bridge),
        pool_size,
    })
    .await
    .unwrap()
}

async fn acquire(network: &Arc<Network>) -> ExecNetwork {
    let network = network.clone();
    tokio::task::spawn_blocking(move || network.acquire())
        .await
        .unwrap()
        .unwrap()
}

/// Asks `server` for `name` (type A) from inside `netns`, returns the first address.
async fn resolve(netns: &std::path::Path, server: Ipv4Addr, name: &str) -> Option<Ipv4Addr> {
    let name = name.to_owned();
    run_inside(netns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            query.push(label.len() as u8);
            query.extend(label.as_bytes());
        }
        query.extend([0, 0, 1, 0, 1]);
        socket.send_to(&query, (server, 53)).unwrap();
        let mut buf = [0u8; 512];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no answer for {name} from {server}: {e}"));
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        // One answer with a 4-byte address is the reply's last 4 bytes.
        (answers > 0).then(|| Ipv4Addr::new(buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execs_reach_each_other_the_host_and_names() {
    // The upstream resolver: answers every query with 192.0.2.7.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = upstream.recv_from(&mut buf) {
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // response
            reply[7] = 1; // one answer
            reply.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
            let _ = upstream.send_to(&reply, peer);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = unique_bridge(vec![upstream_addr]);
    let _guard = BridgeGuard(config.clone());
    let bridge_name = config.name.clone();
    let network = Arc::new(start(dir.path(), config, 2).await);
    let gateway = network.gateway().unwrap();
    assert!(
        network
            .resolv_conf()
            .contains(&format!("nameserver {gateway}"))
    );

    let mut server = acquire(&network).await;
    let mut client = acquire(&network).await;
    let server_ip = server.address().unwrap();
    assert_ne!(Some(server_ip), client.address());
    server.configure("s1", &["web1".into()], vec![]).unwrap();
    client
        .configure("s1", &[], vec![("www".into(), "web1".into())])
        .unwrap();

    // Exec to exec across the bridge.
    let listener = run_inside(server.netns_path(), || {
        TcpListener::bind("0.0.0.0:8080").unwrap()
    })
    .await
    .unwrap();
    let accept = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"hello").unwrap();
    });
    let got = run_inside(client.netns_path(), move || {
        let mut stream = TcpStream::connect((server_ip, 8080)).unwrap();
        let mut got = String::new();
        stream.read_to_string(&mut got).unwrap();
        got
    })
    .await
    .unwrap();
    assert_eq!(got, "hello");
    accept.join().unwrap();

    // Exec to a server on the bridge address, through its default route.
    let host_listener = TcpListener::bind((gateway, 0)).unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let host_accept = std::thread::spawn(move || host_listener.accept().unwrap().1);
    run_inside(client.netns_path(), move || {
        TcpStream::connect((gateway, host_port)).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(host_accept.join().unwrap().ip(), client.address().unwrap());

    // Names: the alias and the hostname for the binding exec, forwarding for the rest.
    let client_ns = client.netns_path().to_path_buf();
    assert_eq!(resolve(&client_ns, gateway, "www").await, Some(server_ip));
    assert_eq!(
        resolve(&client_ns, gateway, "web1.dagr.local").await,
        Some(server_ip)
    );
    assert_eq!(
        resolve(&client_ns, gateway, "example.org").await,
        Some(Ipv4Addr::new(192, 0, 2, 7))
    );
    // The server itself does not see the client's alias (it is forwarded upstream).
    let server_ns = server.netns_path().to_path_buf();
    assert_eq!(
        resolve(&server_ns, gateway, "www").await,
        Some(Ipv4Addr::new(192, 0, 2, 7))
    );

    let stats = network.stats();
    assert_eq!((stats.names, stats.sources), (1, 2));
    tokio::task::spawn_blocking(move || {
        server.release().unwrap();
        client.release().unwrap();
    })
    .await
    .unwrap();
    network.shutdown().await;
    let stats = network.stats();
    assert_eq!(stats, Default::default(), "everything returned: {stats:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("netns")).unwrap().count(),
        0
    );
    let nat = dagr_network::Nat::new("iptables", &bridge_name, network.bridge().unwrap().cidr);
    assert_eq!(nat.installed().unwrap(), 0, "rules removed at shutdown");
    remove_bridge(&bridge_name);
}

fn remove_bridge(name: &str) {
    let _ = std::process::Command::new("ip")
        .args(["link", "del", name])
        .status();
}

/// Removes the bridge and its rules even when the test fails.
struct BridgeGuard(BridgeConfig);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = dagr_network::Nat::new("iptables", &self.0.name, self.0.cidr).remove();
        remove_bridge(&self.0.name);
    }
}

/// Veth peers vanish with their namespace, asynchronously: wait for them.
fn wait_for_no_veths(bridge: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let links = links();
        let attached: Vec<&str> = links
            .lines()
            .filter(|l| l.contains(&format!("master {bridge} ")))
            .collect();
        if attached.is_empty() || std::time::Instant::now() > deadline {
            return attached.join("\n");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_removes_what_a_dead_network_left() {
    let dir = tempfile::tempdir().unwrap();
    let config = unique_bridge(vec![]);
    let _guard = BridgeGuard(config.clone());
    let name = config.name.clone();
    let network = Arc::new(start(dir.path(), config.clone(), 0).await);
    // "Crash": the namespaces stay pinned, the rules installed.
    let held: Vec<ExecNetwork> = vec![acquire(&network).await, acquire(&network).await];
    std::mem::forget(held);
    drop(network);
    // The dropped DNS server's tasks close its sockets on their next poll.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("netns")).unwrap().count(),
        2
    );

    let network = start(dir.path(), config.clone(), 0).await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("netns")).unwrap().count(),
        0,
        "stale namespaces unpinned and removed"
    );
    assert_eq!(wait_for_no_veths(&name), "", "stale veths removed");
    network.shutdown().await;
    remove_bridge(&name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_cycles_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = unique_bridge(vec![]);
    let _guard = BridgeGuard(config.clone());
    let name = config.name.clone();
    let network = Arc::new(start(dir.path(), config, 4).await);
    for _ in 0..100 {
        let mut exec = acquire(&network).await;
        exec.configure("s", &["n".into()], vec![("a".into(), "n".into())])
            .unwrap();
        tokio::task::spawn_blocking(move || exec.release().unwrap())
            .await
            .unwrap();
    }
    network.shutdown().await;
    assert_eq!(network.stats(), Default::default());
    assert_eq!(wait_for_no_veths(&name), "");
    remove_bridge(&name);
}

#[tokio::test]
async fn a_subnet_over_a_host_route_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = unique_bridge(vec![]);
    // Loopback's own route (127.0.0.0/8) is in every host's table.
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    let route = dagr_network::parse_proc_routes(&routes)
        .into_iter()
        .next()
        .expect("the host has a route");
    config.cidr = route.destination;
    let err = Network::start(NetworkConfig {
        netns_dir: dir.path().join("netns"),
        mode: NetworkMode::Bridge(config),
        pool_size: 0,
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("overlaps the host route"), "{err}");
}
