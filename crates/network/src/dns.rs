//! The engine's DNS server on the bridge address. It answers, for the exec that asks (known by
//! its source address): the aliases of the services that exec binds, and the names published
//! in its scope (a session: service hostnames). Names under [`DOMAIN`] that it does not know are
//! answered "no such name"; every other query is forwarded to the upstream resolvers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parking_lot::RwLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// The search domain of execs: `NAME.dagr.local` and `NAME` are the same name.
pub const DOMAIN: &str = "dagr.local";

/// How long an upstream gets to answer one query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Time to live of local answers: names change as services start and stop.
const LOCAL_TTL: u32 = 5;

/// Queries forwarded at once, at most (the others are answered SERVFAIL).
const MAX_FORWARDS: usize = 256;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The UDP or TCP socket could not be bound.
    #[error("bind the DNS server on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What one exec sees.
#[derive(Debug, Clone)]
struct SourceView {
    scope: String,
    /// Alias -> the name it stands for (looked up in the scope when asked).
    aliases: HashMap<String, String>,
}

/// Names and who sees them (shared by the server and the exec networks).
#[derive(Debug, Default)]
pub struct DnsTable {
    inner: RwLock<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    sources: HashMap<Ipv4Addr, SourceView>,
    /// (scope, name) -> address.
    names: HashMap<(String, String), Ipv4Addr>,
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A name of ours: its address (none: the name exists, without a record of that type).
    Local(Option<Ipv4Addr>),
    /// A name under [`DOMAIN`] that nobody published.
    NoSuchName,
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// `name` in lower case without the trailing dot and without the [`DOMAIN`] suffix, and
/// whether it was under [`DOMAIN`].
fn local_part(name: &str) -> (String, bool) {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match name.strip_suffix(DOMAIN) {
        Some("") => (String::new(), true),
        Some(rest) if rest.ends_with('.') => (rest.trim_end_matches('.').to_owned(), true),
        _ => (name, false),
    }
}

impl DnsTable {
    /// Makes the exec at `address` see the names of `scope` and its `aliases` (alias -> name).
    pub fn add_source(&self, address: Ipv4Addr, scope: &str, aliases: Vec<(String, String)>) {
        let aliases = aliases
            .into_iter()
            .map(|(alias, name)| (alias.to_ascii_lowercase(), name.to_ascii_lowercase()))
            .collect();
        self.inner.write().sources.insert(
            address,
            SourceView {
                scope: scope.to_owned(),
                aliases,
            },
        );
    }

    pub fn remove_source(&self, address: Ipv4Addr) {
        self.inner.write().sources.remove(&address);
    }

    /// Publishes `name` -> `address` in `scope`.
    pub fn publish(&self, scope: &str, name: &str, address: Ipv4Addr) {
        self.inner
            .write()
            .names
            .insert((scope.to_owned(), name.to_ascii_lowercase()), address);
    }

    /// Withdraws `name`, if it still points at `address`.
    pub fn withdraw(&self, scope: &str, name: &str, address: Ipv4Addr) {
        let mut inner = self.inner.write();
        let key = (scope.to_owned(), name.to_ascii_lowercase());
        if inner.names.get(&key) == Some(&address) {
            inner.names.remove(&key);
        }
    }

    /// Answers a query for `name` of type `record_type` asked by `source`.
    pub fn answer(&self, source: IpAddr, name: &str, record_type: RecordType) -> Answer {
        let (local, under_domain) = local_part(name);
        let inner = self.inner.read();
        let view = match source {
            IpAddr::V4(v4) => inner.sources.get(&v4),
            IpAddr::V6(_) => None,
        };
        let found = view.and_then(|view| {
            let target = view.aliases.get(&local).unwrap_or(&local);
            let (target, _) = local_part(target);
            inner.names.get(&(view.scope.clone(), target)).copied()
        });
        match found {
            Some(address) if record_type == RecordType::A => Answer::Local(Some(address)),
            Some(_) => Answer::Local(None),
            None if under_domain => Answer::NoSuchName,
            None => Answer::Forward,
        }
    }

    /// The address `name` (bare or under [`DOMAIN`]) is published under in `scope`: how the
    /// engine itself reaches a service (the engine asks no DNS server).
    pub fn lookup(&self, scope: &str, name: &str) -> Option<Ipv4Addr> {
        let (local, _) = local_part(name);
        self.inner
            .read()
            .names
            .get(&(scope.to_owned(), local))
            .copied()
    }

    /// Names published, in every scope (for leak checks).
    pub fn published(&self) -> usize {
        self.inner.read().names.len()
    }

    /// Execs with a view (for leak checks).
    pub fn sources(&self) -> usize {
        self.inner.read().sources.len()
    }
}

/// The answer to `query` for `source`, or `None` to forward it.
fn respond(table: &DnsTable, source: IpAddr, query: &Message) -> Option<Message> {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = query.queries.clone();
    let [question] = query.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Some(response);
    };
    if query.metadata.op_code != OpCode::Query || query.metadata.message_type != MessageType::Query
    {
        response.metadata.response_code = ResponseCode::NotImp;
        return Some(response);
    }
    let name = question.name().to_ascii();
    match table.answer(source, &name, question.query_type()) {
        Answer::Forward => return None,
        Answer::NoSuchName => response.metadata.response_code = ResponseCode::NXDomain,
        Answer::Local(None) => {}
        Answer::Local(Some(address)) => {
            let record_name: Name = question.name().clone();
            response.add_answer(Record::from_rdata(
                record_name,
                LOCAL_TTL,
                RData::A(A(address)),
            ));
        }
    }
    response.metadata.authoritative = true;
    Some(response)
}

/// A running DNS server; dropping it stops it.
#[derive(Debug)]
pub struct DnsServer {
    cancel: CancellationToken,
    addr: SocketAddr,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl DnsServer {
    /// Serves `table` on `addr` (UDP and TCP), forwarding other names to `upstreams`. Spawns
    /// its tasks on the current tokio runtime.
    pub async fn start(
        addr: SocketAddr,
        table: Arc<DnsTable>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<DnsServer, DnsError> {
        let bind_err = |source| DnsError::Bind { addr, source };
        let udp = Arc::new(UdpSocket::bind(addr).await.map_err(bind_err)?);
        let addr = udp.local_addr().map_err(bind_err)?;
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            table,
            upstreams,
            forwards: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)),
        });
        tokio::spawn(serve_udp(udp, shared.clone(), cancel.clone()));
        tokio::spawn(serve_tcp(tcp, shared, cancel.clone()));
        Ok(DnsServer { cancel, addr })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

struct Shared {
    table: Arc<DnsTable>,
    upstreams: Vec<SocketAddr>,
    forwards: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The reply to the raw query `packet` from `source`: local, forwarded, or a failure.
    async fn reply(&self, source: IpAddr, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let query = Message::from_vec(packet).ok()?;
        if let Some(local) = respond(&self.table, source, &query) {
            return local.to_vec().ok();
        }
        let forwarded = match self.forwards.clone().try_acquire_owned() {
            Ok(_permit) => self.forward(packet, tcp).await,
            Err(_) => None,
        };
        forwarded.or_else(|| {
            Message::error_msg(
                query.metadata.id,
                query.metadata.op_code,
                ResponseCode::ServFail,
            )
            .to_vec()
            .ok()
        })
    }

    /// Asks each upstream in turn.
    async fn forward(&self, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let asked = if tcp {
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward_tcp(*upstream, packet)).await
            } else {
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward_udp(*upstream, packet)).await
            };
            match asked {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "dns upstream failed"),
                Err(_) => tracing::debug!(%upstream, "dns upstream timed out"),
            }
        }
        None
    }
}

async fn forward_udp(upstream: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buf = vec![0; 65535];
    let n = socket.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

async fn forward_tcp(upstream: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(packet.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(packet).await?;
    read_framed(&mut stream).await
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "dns receive failed");
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let packet = buf[..n].to_vec();
        let socket = socket.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some(reply) = shared.reply(peer.ip(), &packet, false).await {
                let _ = socket.send_to(&reply, peer).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "dns accept failed");
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let packet = tokio::select! {
                    read = tokio::time::timeout(Duration::from_secs(10), read_framed(&mut stream)) => match read {
                        Ok(Ok(packet)) => packet,
                        _ => return,
                    },
                    _ = cancel.cancelled() => return,
                };
                let Some(reply) = shared.reply(peer.ip(), &packet, true).await else {
                    return;
                };
                let Ok(len) = u16::try_from(reply.len()) else {
                    return;
                };
                if stream.write_all(&len.to_be_bytes()).await.is_err()
                    || stream.write_all(&reply).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_by_scope_and_alias() {
        let table = DnsTable::default();
        let exec = Ipv4Addr::new(10, 9, 0, 5);
        let other = Ipv4Addr::new(10, 9, 0, 6);
        let service = Ipv4Addr::new(10, 9, 0, 7);
        table.publish("s1", "abc123", service);
        table.add_source(exec, "s1", vec![("www".into(), "abc123".into())]);
        table.add_source(other, "s2", vec![]);
        for name in [
            "www",
            "www.dagr.local.",
            "WWW.dagr.local",
            "abc123",
            "abc123.dagr.local",
        ] {
            assert_eq!(
                table.answer(IpAddr::V4(exec), name, RecordType::A),
                Answer::Local(Some(service)),
                "{name}"
            );
        }
        assert_eq!(
            table.answer(IpAddr::V4(exec), "www", RecordType::AAAA),
            Answer::Local(None)
        );
        // Another session sees neither the alias nor the hostname.
        assert_eq!(
            table.answer(IpAddr::V4(other), "abc123.dagr.local", RecordType::A),
            Answer::NoSuchName
        );
        assert_eq!(
            table.answer(IpAddr::V4(other), "www", RecordType::A),
            Answer::Forward
        );
        assert_eq!(
            table.answer(v4("127.0.0.1"), "example.org.", RecordType::A),
            Answer::Forward
        );
        table.withdraw("s1", "abc123", Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(table.published(), 1, "withdrawn only by its holder");
        table.withdraw("s1", "abc123", service);
        table.remove_source(exec);
        assert_eq!((table.published(), table.sources()), (0, 1));
    }

    #[tokio::test]
    async fn serves_local_names_and_forwards_the_rest() {
        // An upstream that answers every query with 192.0.2.9 (documentation address).
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            while let Ok((n, peer)) = upstream.recv_from(&mut buf).await {
                let query = Message::from_vec(&buf[..n]).unwrap();
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.queries = query.queries.clone();
                reply.add_answer(Record::from_rdata(
                    query.queries[0].name().clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 9))),
                ));
                upstream
                    .send_to(&reply.to_vec().unwrap(), peer)
                    .await
                    .unwrap();
            }
        });
        let table = Arc::new(DnsTable::default());
        table.add_source(Ipv4Addr::LOCALHOST, "s", vec![("db".into(), "h1".into())]);
        table.publish("s", "h1", Ipv4Addr::new(10, 9, 0, 2));
        let server = DnsServer::start("127.0.0.1:0".parse().unwrap(), table, vec![upstream_addr])
            .await
            .unwrap();
        let ask = |name: &str| {
            let mut query = Message::query();
            query.metadata.recursion_desired = true;
            query.add_query(hickory_proto::op::Query::query(
                Name::from_ascii(name).unwrap(),
                RecordType::A,
            ));
            query.to_vec().unwrap()
        };
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(server.addr()).await.unwrap();
        let mut buf = vec![0; 4096];
        for (name, expect) in [
            ("db.", Some(Ipv4Addr::new(10, 9, 0, 2))),
            ("example.org.", Some(Ipv4Addr::new(192, 0, 2, 9))),
            ("nope.dagr.local.", None),
        ] {
            client.send(&ask(name)).await.unwrap();
            let n = client.recv(&mut buf).await.unwrap();
            let reply = Message::from_vec(&buf[..n]).unwrap();
            let got = reply.answers.iter().find_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            });
            assert_eq!(got, expect, "{name}");
            if expect.is_none() {
                assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
            }
        }
        // Over TCP too.
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let packet = ask("db.dagr.local.");
        stream
            .write_all(&(packet.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&packet).await.unwrap();
        let reply = Message::from_vec(&read_framed(&mut stream).await.unwrap()).unwrap();
        assert_eq!(reply.answers.len(), 1);
    }
}
