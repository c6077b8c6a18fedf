//! The session attachables connection, both halves. Only this crate knows its wire format.
//!
//! A client opens a fresh HTTP/1.1 connection, sends `GET /sessionAttachables` with its metadata and
//! one `X-Docker-Expose-Session-Grpc-Method` header per method it serves, reads the engine's
//! `101 Switching Protocols`, writes one `0x00` ack byte, and from then on serves gRPC (HTTP/2) on that
//! connection while the engine is the gRPC client.
//!
//! - Engine half ([`engine`]): [`accept`] validates the request and returns the 101 plus a
//!   [`PendingAttach`]; [`PendingAttach::finish`] completes the handshake and yields an
//!   [`AttachablesClient`], the typed caller of the client's services (health, stat, pull a host
//!   directory or file, list a host directory and fetch only the files it asks for
//!   ([`sync`]: [`Listing`], [`PendingFetch`]), push a tree or file to the host), which also
//!   reports the end of the connection at once ([`AttachablesClient::closed`]).
//! - Client half ([`host`]): [`attach`] performs the handshake on a fresh connection and returns an
//!   [`AttachedSession`] whose [`AttachedSession::serve`] runs the services of [`HostProviders`] until
//!   the connection ends.
//!
//! - Terminal ([`terminal`]): the client's [`TerminalProvider`] carries an interactive process
//!   the engine runs ([`AttachablesClient::open_terminal`] -> [`RemoteTerminal`]) to its user.
//! - Tunnel ([`tunnel`]): with a [`TunnelProvider`] (e.g. [`HostTunnel`]) the client relays
//!   network connections of its host: the engine dials a TCP or unix-socket target there
//!   ([`AttachablesClient::dial`] -> a [`TunnelStream`]) or listens on a TCP port there
//!   ([`AttachablesClient::listen`] -> [`RemoteListener`], whose accepted connections are
//!   tunnel streams too).
//!
//! Transfers stream packets (header, data chunks of 1 MiB, end) in batches with bounded buffering; the
//! receiving side refuses paths that would escape its target ([`tree`]).

pub mod engine;
pub mod host;
mod io;
pub mod network;
pub mod sync;
pub mod terminal;
pub mod tree;
#[cfg(test)]
mod tree_props;
pub mod tunnel;

// The tests of [`tunnel`] reuse the integration tests' harness, which names this crate.
#[cfg(test)]
extern crate self as dagr_attach;
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
#[allow(clippy::unwrap_used)] // test setup may unwrap
mod test_common;

/// Generated protobuf and gRPC code of the `dagr.filesync.v1` services.
pub mod proto {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("dagr.filesync.v1");

    /// The `dagr.terminal.v1` service.
    pub mod terminal {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("dagr.terminal.v1");
    }

    /// The `dagr.tunnel.v1` service.
    pub mod tunnel {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("dagr.tunnel.v1");
    }
}

pub use engine::{AttachablesClient, PendingAttach, accept};
pub use host::{AttachedSession, ContainerRoot, HostProviders, attach, random_host_id};
pub use sync::{HostEntry, Listing, PendingFetch, path_order};
pub use terminal::{
    RemoteTerminal, TerminalInput, TerminalOutput, TerminalProvider, TerminalReader, TerminalWriter,
};
pub use tree::{EntryKind, HostStat, TransferStats, TreeError};
pub use tunnel::{HostTunnel, RemoteListener, TunnelProvider, TunnelStream};

/// gRPC method paths, as announced in `X-Docker-Expose-Session-Grpc-Method` headers.
pub mod methods {
    pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
    pub const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
    pub const PULL_DIR: &str = "/dagr.filesync.v1.FileSync/PullDir";
    pub const PULL_FILE: &str = "/dagr.filesync.v1.FileSync/PullFile";
    pub const STAT: &str = "/dagr.filesync.v1.FileSync/Stat";
    pub const SYNC_DIR: &str = "/dagr.filesync.v1.FileSync/SyncDir";
    pub const PUSH_DIR: &str = "/dagr.filesync.v1.FileSend/PushDir";
    pub const PUSH_FILE: &str = "/dagr.filesync.v1.FileSend/PushFile";
    pub const TERMINAL_SESSION: &str = "/dagr.terminal.v1.Terminal/Session";
    pub const TUNNEL_DIAL: &str = "/dagr.tunnel.v1.Tunnel/Dial";
    pub const TUNNEL_LISTEN: &str = "/dagr.tunnel.v1.Tunnel/Listen";
}

/// Why the attachables handshake or a call over the attachables connection failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("bad attachables request: {0}")]
    BadRequest(String),
    #[error("attachables upgrade failed: {0}")]
    Upgrade(hyper::Error),
    #[error("attachables ack byte not received: {0}")]
    AckMissing(std::io::Error),
    #[error("attachables ack byte is {0:#04x}, expected 0x00")]
    BadAck(u8),
    #[error("cannot open the gRPC channel over the attachables connection: {0}")]
    Channel(tonic::transport::Error),
    #[error("attachables http exchange failed: {0}")]
    Http(hyper::Error),
    #[error("attachables connection i/o failed: {0}")]
    Io(std::io::Error),
    #[error("engine refused the attachables connection ({status}): {message}")]
    Refused {
        status: http::StatusCode,
        message: String,
    },
    #[error("the client did not announce {method}")]
    NotAnnounced { method: &'static str },
    #[error("attachables health check failed: {0}")]
    Unhealthy(String),
    #[error("{method} for host path {path:?} failed: {status}")]
    Rpc {
        method: &'static str,
        path: String,
        status: tonic::Status,
    },
    #[error("{method} for host path {path:?} failed: {source}")]
    Transfer {
        method: &'static str,
        path: String,
        source: TreeError,
    },
    #[error("serving the attachables connection failed: {0}")]
    Serve(hyper::Error),
    /// A tunnel through the client's host failed: `operation` is "dial" or "listen", `target`
    /// what it names (e.g. "tcp 127.0.0.1:9", "127.0.0.1:0"), `message` the client's reason.
    #[error("tunnel {operation} {target} on the client's host failed: {message}")]
    Tunnel {
        operation: &'static str,
        target: String,
        message: String,
    },
}
