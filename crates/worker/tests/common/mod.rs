//! What the worker's integration tests share: the registry fixture, a worker and solver on a
//! temp state directory, the fixture image as a vertex.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dagr_metadata::ClientRef;
use dagr_solver::{Op, Platform, Solver, SolverOptions, Vertex};
use dagr_worker::{
    HostAccess, HostError, SecretSource, SessionRegistryAuth, UserTerminal, Worker, WorkerConfig,
    WorkerSeams,
};
use futures::future::BoxFuture;

/// The busybox image in a loopback registry (shared test fixture).
pub fn fixture() -> &'static dagr_testkit::RegistryFixture {
    dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
}

/// Host reads are not exercised here (the engine tests cover the attachables path).
pub struct NoHost;
/// No session has registry credentials: every pull is anonymous.
pub struct NoCredentials;

impl SessionRegistryAuth for NoCredentials {
    fn credentials(&self, _session_id: &str, _host: &str) -> Option<(String, String)> {
        None
    }
}

impl HostAccess for NoHost {
    fn list_dir<'a>(
        &'a self,
        client: &'a ClientRef,
        _path: &'a str,
        _include: &'a [String],
        _exclude: &'a [String],
    ) -> BoxFuture<'a, Result<dagr_worker::HostListing, HostError>> {
        Box::pin(async move { Err(no_host(client)) })
    }
    fn push_dir<'a>(
        &'a self,
        client: &'a ClientRef,
        _src: &'a Path,
        _host_path: &'a str,
        _wipe: bool,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move { Err(no_host(client)) })
    }
    fn push_file<'a>(
        &'a self,
        client: &'a ClientRef,
        _src: &'a Path,
        _host_path: &'a str,
        _allow_parent_dir: bool,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move { Err(no_host(client)) })
    }
    fn read_file<'a>(
        &'a self,
        client: &'a ClientRef,
        _host_path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, HostError>> {
        Box::pin(async move { Err(no_host(client)) })
    }
    fn open_terminal<'a>(
        &'a self,
        client: &'a ClientRef,
    ) -> BoxFuture<'a, Result<UserTerminal, HostError>> {
        Box::pin(async move { Err(no_host(client)) })
    }
    fn dial<'a>(
        &'a self,
        client: &'a ClientRef,
        _network: &'a str,
        _address: &'a str,
    ) -> BoxFuture<'a, Result<dagr_worker::HostStream, HostError>> {
        Box::pin(async move { Err(no_host(client)) })
    }
    fn listen<'a>(
        &'a self,
        client: &'a ClientRef,
        _address: &'a str,
    ) -> BoxFuture<'a, Result<dagr_worker::HostListener, HostError>> {
        Box::pin(async move { Err(no_host(client)) })
    }
}

fn no_host(client: &ClientRef) -> HostError {
    HostError::NoAttachables {
        client: client.clone(),
    }
}

/// Secrets by id, the same for every session.
pub struct Secrets(pub BTreeMap<String, Bytes>);
impl SecretSource for Secrets {
    fn secret(&self, _session_id: &str, secret_id: &str) -> Option<Bytes> {
        self.0.get(secret_id).cloned()
    }
}

/// A worker state directory; [`Env::open`] opens a worker and solver on it (again after a drop:
/// a restart).
pub struct Env {
    _dir: tempfile::TempDir,
    pub state: PathBuf,
    secrets: BTreeMap<String, Bytes>,
}

impl Env {
    pub fn new() -> Env {
        Self::with_secrets(BTreeMap::new())
    }

    pub fn with_secrets(secrets: BTreeMap<String, Bytes>) -> Env {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        Env {
            _dir: dir,
            state,
            secrets,
        }
    }

    pub fn open(&self) -> Solver<Worker> {
        let worker = Worker::open(
            &WorkerConfig::new(&self.state),
            WorkerSeams {
                host: Arc::new(NoHost),
                secrets: Arc::new(Secrets(self.secrets.clone())),
                registry_auth: Arc::new(NoCredentials),
                nested: None,
            },
        )
        .expect("worker");
        Solver::open(
            &self.state.join("solver.redb"),
            worker,
            SolverOptions::default(),
        )
        .expect("solver")
    }
}

pub fn platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    }
}

/// The fixture image.
pub fn image() -> Arc<Vertex> {
    Vertex::new(
        Op::Image {
            reference: fixture().image.clone(),
            platform: platform(),
        },
        vec![],
    )
    .expect("vertex")
}
