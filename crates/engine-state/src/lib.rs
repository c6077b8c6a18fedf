//! The registry of sessions and clients: [`SessionRegistry`] owns every [`Session`], each session
//! owns its [`Client`]s. States are explicit ([`SessionState`], [`ClientState`]); every in-flight
//! request holds an [`ActiveRequest`] guard, and when the guard count of a session's main client
//! reaches zero the session is removed and its teardown hooks run.
//!
//! # Lock order
//! `registry map -> session -> client`, on every path. No lock is held across an `.await`: hooks are
//! taken out under the lock and awaited after it is released.
//!
//! # Counting
//! A client's in-flight count only changes while its session's lock is held, so "the main client
//! reached zero, remove the session" and "a new request joins the session" cannot interleave: a
//! request either joins before removal (and keeps the session alive) or sees `Removed`.
//!
//! This crate knows nothing of HTTP, GraphQL or containers; other crates attach their per-session
//! resources through [`Session::on_teardown`] and per-client state through [`Client::extensions`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dagr_metadata::ClientMetadata;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

/// How many removed session ids are remembered, so that a late request naming one gets a clear
/// "removed" error instead of silently creating a fresh session.
const REMOVED_IDS_KEPT: usize = 4096;

/// A unit of cleanup run when a session ends (stop execs, release leases, close listeners).
pub type TeardownHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A registry-wide observer called for every session that ends (after the session's own hooks).
pub type SessionEndObserver = Arc<dyn Fn(&str) -> BoxFuture<'static, ()> + Send + Sync>;

/// Called with the metadata of the main client of every new session, as its first request is
/// scoped (synchronously: it must only start work, not wait for it).
pub type SessionStartObserver = Arc<dyn Fn(&ClientMetadata) + Send + Sync>;

/// Why a request could not be scoped to a session and client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("session {0} was removed")]
    SessionRemoved(String),
    #[error("client {client_id} of session {session_id} presented a different secret token")]
    TokenMismatch {
        session_id: String,
        client_id: String,
    },
    #[error("engine is shutting down")]
    ShuttingDown,
}

/// Lifecycle of a session: `Uninitialized -> Initialized -> Removed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Uninitialized,
    Initialized,
    Removed,
}

/// Lifecycle of a client: `Uninitialized -> Initialized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Uninitialized,
    Initialized,
}

/// Gauges and counters the engine exports as metrics.
#[derive(Debug, Default)]
pub struct RegistryMetrics {
    sessions_active: AtomicUsize,
    clients_active: AtomicUsize,
    sessions_created: AtomicU64,
    sessions_removed: AtomicU64,
}

impl RegistryMetrics {
    pub fn sessions_active(&self) -> usize {
        self.sessions_active.load(Ordering::Relaxed)
    }
    pub fn clients_active(&self) -> usize {
        self.clients_active.load(Ordering::Relaxed)
    }
    pub fn sessions_created(&self) -> u64 {
        self.sessions_created.load(Ordering::Relaxed)
    }
    pub fn sessions_removed(&self) -> u64 {
        self.sessions_removed.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct RegistryInner {
    sessions: HashMap<String, Arc<Session>>,
    removed_ids: HashSet<String>,
    removed_order: VecDeque<String>,
    shutting_down: bool,
}

impl RegistryInner {
    fn remember_removed(&mut self, id: &str) {
        if self.removed_ids.insert(id.to_owned()) {
            self.removed_order.push_back(id.to_owned());
            while self.removed_order.len() > REMOVED_IDS_KEPT {
                if let Some(old) = self.removed_order.pop_front() {
                    self.removed_ids.remove(&old);
                }
            }
        }
    }
}

/// All sessions of the engine. Cheap to clone (an `Arc` inside).
#[derive(Clone, Default)]
pub struct SessionRegistry {
    shared: Arc<RegistryShared>,
}

#[derive(Default)]
struct RegistryShared {
    inner: Mutex<RegistryInner>,
    observers: Mutex<Vec<SessionEndObserver>>,
    start_observers: Mutex<Vec<SessionStartObserver>>,
    metrics: RegistryMetrics,
}

impl fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("sessions_active", &self.shared.metrics.sessions_active())
            .finish()
    }
}

impl SessionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn metrics(&self) -> &RegistryMetrics {
        &self.shared.metrics
    }

    /// Registers an observer called with the id of every session that ends, after the session's own
    /// hooks. Used by crates that keep per-session state keyed by id (solver leases, ...).
    pub fn on_session_end(&self, observer: SessionEndObserver) {
        self.shared.observers.lock().push(observer);
    }

    /// Registers an observer called when a session is created (see [`SessionStartObserver`]).
    pub fn on_session_start(&self, observer: SessionStartObserver) {
        self.shared.start_observers.lock().push(observer);
    }

    /// Looks up a live session.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.shared.inner.lock().sessions.get(id).cloned()
    }

    /// Scopes a request: finds or creates the session named by `md.session_id` (the creating client
    /// becomes its main client), initializes it once, finds or creates the client (checking its token
    /// in constant time), and counts the request as in flight. The returned guard ends the request.
    pub fn begin_request(&self, md: &ClientMetadata) -> Result<ActiveRequest, StateError> {
        let mut created = false;
        let session = {
            let mut inner = self.shared.inner.lock();
            if inner.shutting_down {
                return Err(StateError::ShuttingDown);
            }
            if inner.removed_ids.contains(&md.session_id) {
                return Err(StateError::SessionRemoved(md.session_id.clone()));
            }
            match inner.sessions.get(&md.session_id) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Session::new(&md.session_id, &md.client_id));
                    inner.sessions.insert(md.session_id.clone(), s.clone());
                    self.shared
                        .metrics
                        .sessions_active
                        .fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .metrics
                        .sessions_created
                        .fetch_add(1, Ordering::Relaxed);
                    created = true;
                    s
                }
            }
        };
        if created {
            let observers: Vec<SessionStartObserver> = self.shared.start_observers.lock().clone();
            for obs in observers {
                obs(md);
            }
        }
        let client = session.join(md, &self.shared.metrics)?;
        Ok(ActiveRequest {
            registry: self.clone(),
            session,
            client,
        })
    }

    /// Removes a session now, whatever its in-flight count, and runs its teardown. Returns `false`
    /// when the session was not (or no longer) in the registry.
    pub async fn remove_session(&self, id: &str) -> bool {
        let Some(session) = self.session(id) else {
            return false;
        };
        match session.mark_removed() {
            Some(hooks) => {
                self.finish_removal(&session, hooks).await;
                true
            }
            None => false,
        }
    }

    /// Tears down every session and refuses new ones (engine shutdown).
    pub async fn shutdown(&self) {
        let sessions: Vec<Arc<Session>> = {
            let mut inner = self.shared.inner.lock();
            inner.shutting_down = true;
            inner.sessions.values().cloned().collect()
        };
        let mut pending = Vec::new();
        for s in sessions {
            if let Some(hooks) = s.mark_removed() {
                pending.push(async move { self.finish_removal(&s, hooks).await });
            }
        }
        futures::future::join_all(pending).await;
    }

    /// Second half of removal (the session is already `Removed`): leave the registry, run hooks.
    async fn finish_removal(&self, session: &Arc<Session>, hooks: Vec<TeardownHook>) {
        {
            let mut inner = self.shared.inner.lock();
            if inner
                .sessions
                .get(&session.id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                inner.sessions.remove(&session.id);
            }
            inner.remember_removed(&session.id);
        }
        let clients = session.clients_len();
        self.shared
            .metrics
            .clients_active
            .fetch_sub(clients, Ordering::Relaxed);
        self.shared
            .metrics
            .sessions_active
            .fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(session = %session.id, hooks = hooks.len(), "session teardown");
        // Hooks run in reverse registration order: later resources may depend on earlier ones.
        for hook in hooks.into_iter().rev() {
            hook().await;
        }
        let observers: Vec<SessionEndObserver> = self.shared.observers.lock().clone();
        for obs in observers {
            obs(&session.id).await;
        }
        self.shared
            .metrics
            .sessions_removed
            .fetch_add(1, Ordering::Relaxed);
        session.torn_down.send_replace(true);
    }
}

struct SessionInner {
    state: SessionState,
    clients: HashMap<String, Arc<Client>>,
    hooks: Vec<TeardownHook>,
}

/// One session: its main client, its other clients, and the hooks that release its resources.
pub struct Session {
    id: String,
    main_client_id: String,
    inner: Mutex<SessionInner>,
    /// `true` once removal has started (state `Removed`).
    removed: watch::Sender<bool>,
    /// `true` once every teardown hook has finished.
    torn_down: watch::Sender<bool>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("main_client_id", &self.main_client_id)
            .field("state", &self.state())
            .finish()
    }
}

impl Session {
    fn new(id: &str, main_client_id: &str) -> Self {
        Session {
            id: id.to_owned(),
            main_client_id: main_client_id.to_owned(),
            inner: Mutex::new(SessionInner {
                state: SessionState::Uninitialized,
                clients: HashMap::new(),
                hooks: Vec::new(),
            }),
            removed: watch::Sender::new(false),
            torn_down: watch::Sender::new(false),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn main_client_id(&self) -> &str {
        &self.main_client_id
    }

    pub fn state(&self) -> SessionState {
        self.inner.lock().state
    }

    pub fn client(&self, id: &str) -> Option<Arc<Client>> {
        self.inner.lock().clients.get(id).cloned()
    }

    fn clients_len(&self) -> usize {
        self.inner.lock().clients.len()
    }

    /// Registers cleanup to run when the session ends. If the session is already removed the hook is
    /// handed back so the caller can release its resource itself.
    pub fn on_teardown(&self, hook: TeardownHook) -> Result<(), TeardownHook> {
        let mut inner = self.inner.lock();
        if inner.state == SessionState::Removed {
            return Err(hook);
        }
        inner.hooks.push(hook);
        Ok(())
    }

    /// Resolves once removal of this session has started.
    pub async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Resolves once the session's teardown hooks and observers have all run.
    pub async fn torn_down(&self) {
        let mut rx = self.torn_down.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Joins (or initializes) the session as the client named in `md`, counting one request.
    fn join(
        &self,
        md: &ClientMetadata,
        metrics: &RegistryMetrics,
    ) -> Result<Arc<Client>, StateError> {
        let mut inner = self.inner.lock();
        match inner.state {
            SessionState::Removed => return Err(StateError::SessionRemoved(self.id.clone())),
            SessionState::Uninitialized => inner.state = SessionState::Initialized,
            SessionState::Initialized => {}
        }
        let client = match inner.clients.get(&md.client_id) {
            Some(c) => {
                if !c.token_matches(&md.client_secret_token) {
                    return Err(StateError::TokenMismatch {
                        session_id: self.id.clone(),
                        client_id: md.client_id.clone(),
                    });
                }
                c.clone()
            }
            None => {
                let c = Arc::new(Client::new(md, md.client_id == self.main_client_id));
                c.initialize();
                inner.clients.insert(md.client_id.clone(), c.clone());
                metrics.clients_active.fetch_add(1, Ordering::Relaxed);
                c
            }
        };
        client.active.fetch_add(1, Ordering::Relaxed);
        Ok(client)
    }

    /// Ends one request of `client`. Returns the hooks to run if this ended the session.
    fn leave(&self, client: &Client) -> Option<Vec<TeardownHook>> {
        let mut inner = self.inner.lock();
        let before = client.active.fetch_sub(1, Ordering::Relaxed);
        if before == 1 && client.is_main && inner.state != SessionState::Removed {
            inner.state = SessionState::Removed;
            drop(inner);
            return Some(self.take_hooks_after_removed());
        }
        None
    }

    /// Marks the session removed; returns its hooks if this call did the marking.
    fn mark_removed(&self) -> Option<Vec<TeardownHook>> {
        let mut inner = self.inner.lock();
        if inner.state == SessionState::Removed {
            return None;
        }
        inner.state = SessionState::Removed;
        drop(inner);
        Some(self.take_hooks_after_removed())
    }

    fn take_hooks_after_removed(&self) -> Vec<TeardownHook> {
        let hooks = std::mem::take(&mut self.inner.lock().hooks);
        self.removed.send_replace(true);
        hooks
    }
}

/// One client of a session (the main client, or a nested one).
pub struct Client {
    id: String,
    session_id: String,
    is_main: bool,
    hostname: String,
    version: String,
    labels: std::collections::BTreeMap<String, String>,
    token_digest: [u8; 32],
    state: Mutex<ClientState>,
    active: AtomicUsize,
    extensions: Mutex<http::Extensions>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("session_id", &self.session_id)
            .field("is_main", &self.is_main)
            .field("active", &self.active_requests())
            .finish()
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Client {
    fn new(md: &ClientMetadata, is_main: bool) -> Self {
        Client {
            id: md.client_id.clone(),
            session_id: md.session_id.clone(),
            is_main,
            hostname: md.client_hostname.clone(),
            version: md.client_version.clone(),
            labels: md.labels.clone(),
            // Only a digest of the token is kept; comparisons are constant time.
            token_digest: token_digest(&md.client_secret_token),
            state: Mutex::new(ClientState::Uninitialized),
            active: AtomicUsize::new(0),
            extensions: Mutex::new(http::Extensions::new()),
        }
    }

    fn initialize(&self) {
        let mut state = self.state.lock();
        if *state == ClientState::Uninitialized {
            *state = ClientState::Initialized;
        }
    }

    fn token_matches(&self, token: &str) -> bool {
        bool::from(token_digest(token).ct_eq(&self.token_digest))
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
    pub fn is_main(&self) -> bool {
        self.is_main
    }
    pub fn hostname(&self) -> &str {
        &self.hostname
    }
    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.labels
    }
    pub fn state(&self) -> ClientState {
        *self.state.lock()
    }
    pub fn active_requests(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Typed per-client values other crates attach (the attachables handle, ...). The closure runs
    /// under the client's lock: keep it short and never await inside.
    pub fn with_extensions<R>(&self, f: impl FnOnce(&mut http::Extensions) -> R) -> R {
        f(&mut self.extensions.lock())
    }

    /// A clone of a typed per-client value.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions.lock().get::<T>().cloned()
    }
}

/// An in-flight request of a client. Dropping it (response sent, connection closed, panic) ends the
/// request; the last request of a session's main client ends the session.
pub struct ActiveRequest {
    registry: SessionRegistry,
    session: Arc<Session>,
    client: Arc<Client>,
}

impl fmt::Debug for ActiveRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveRequest")
            .field("session", &self.session.id)
            .field("client", &self.client.id)
            .finish()
    }
}

impl ActiveRequest {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }
    pub fn registry(&self) -> &SessionRegistry {
        &self.registry
    }

    /// Another in-flight count for the same client (e.g. for a hijacked connection that outlives the
    /// HTTP request). Fails if the session was removed meanwhile.
    pub fn another(&self) -> Result<ActiveRequest, StateError> {
        let inner = self.session.inner.lock();
        if inner.state == SessionState::Removed {
            return Err(StateError::SessionRemoved(self.session.id.clone()));
        }
        // Counted under the session lock, like `join`.
        self.client.active.fetch_add(1, Ordering::Relaxed);
        drop(inner);
        Ok(ActiveRequest {
            registry: self.registry.clone(),
            session: self.session.clone(),
            client: self.client.clone(),
        })
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let Some(hooks) = self.session.leave(&self.client) else {
            return;
        };
        let registry = self.registry.clone();
        let session = self.session.clone();
        let teardown = async move { registry.finish_removal(&session, hooks).await };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(teardown);
            }
            // Outside a runtime (a test or a drop during runtime shutdown): run it to completion here.
            Err(_) => futures::executor::block_on(teardown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn md(session: &str, client: &str, token: &str) -> ClientMetadata {
        ClientMetadata {
            client_id: client.into(),
            client_secret_token: token.into(),
            session_id: session.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn create_join_and_teardown_on_last_main_request() {
        let reg = SessionRegistry::new();
        let main = reg.begin_request(&md("s", "main", "t")).expect("create");
        let session = main.session().clone();
        assert_eq!(session.state(), SessionState::Initialized);
        assert!(main.client().is_main());
        assert_eq!(main.client().state(), ClientState::Initialized);

        let ran = Arc::new(AtomicBool::new(false));
        let ran2 = ran.clone();
        session
            .on_teardown(Box::new(move || {
                Box::pin(async move { ran2.store(true, Ordering::SeqCst) })
            }))
            .unwrap_or_else(|_| panic!("session removed"));

        let other = reg.begin_request(&md("s", "nested", "u")).expect("join");
        assert!(!other.client().is_main());
        assert_eq!(reg.metrics().clients_active(), 2);
        drop(other); // a non-main client never ends the session
        assert_eq!(session.state(), SessionState::Initialized);

        let second = reg
            .begin_request(&md("s", "main", "t"))
            .expect("same client");
        drop(main);
        assert_eq!(session.state(), SessionState::Initialized);
        drop(second);
        session.torn_down().await;
        assert_eq!(session.state(), SessionState::Removed);
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(reg.metrics().sessions_active(), 0);
        assert_eq!(reg.metrics().clients_active(), 0);
        assert!(reg.session("s").is_none());

        let err = reg
            .begin_request(&md("s", "main", "t"))
            .expect_err("removed");
        assert_eq!(err, StateError::SessionRemoved("s".into()));
        assert_eq!(err.to_string(), "session s was removed");
    }

    #[tokio::test]
    async fn token_is_fixed_by_first_request() {
        let reg = SessionRegistry::new();
        let _a = reg.begin_request(&md("s", "c", "right")).expect("create");
        let err = reg
            .begin_request(&md("s", "c", "wrong"))
            .expect_err("mismatch");
        assert!(matches!(err, StateError::TokenMismatch { .. }));
        assert!(err.to_string().contains("client c"));
    }

    #[tokio::test]
    async fn hook_registered_after_removal_is_handed_back() {
        let reg = SessionRegistry::new();
        let r = reg.begin_request(&md("s", "c", "t")).expect("create");
        let session = r.session().clone();
        drop(r);
        session.removed().await;
        let back = session.on_teardown(Box::new(|| Box::pin(async {})));
        assert!(back.is_err());
    }

    #[tokio::test]
    async fn another_guard_keeps_session_alive() {
        let reg = SessionRegistry::new();
        let r = reg.begin_request(&md("s", "c", "t")).expect("create");
        let held = r.another().expect("another");
        let session = r.session().clone();
        drop(r);
        assert_eq!(session.state(), SessionState::Initialized);
        drop(held);
        session.torn_down().await;
        assert_eq!(session.state(), SessionState::Removed);
    }

    #[tokio::test]
    async fn remove_and_shutdown_run_hooks_once_and_refuse_new_sessions() {
        let reg = SessionRegistry::new();
        let count = Arc::new(AtomicUsize::new(0));
        let observed = Arc::new(AtomicUsize::new(0));
        let o = observed.clone();
        reg.on_session_end(Arc::new(move |_id| {
            o.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        }));
        let mut guards = Vec::new();
        for i in 0..3 {
            let g = reg
                .begin_request(&md(&format!("s{i}"), "c", "t"))
                .expect("create");
            let c = count.clone();
            g.session()
                .on_teardown(Box::new(move || {
                    Box::pin(async move {
                        c.fetch_add(1, Ordering::SeqCst);
                    })
                }))
                .unwrap_or_else(|_| panic!("session removed"));
            guards.push(g);
        }
        assert!(reg.remove_session("s0").await);
        assert!(!reg.remove_session("s0").await);
        reg.shutdown().await;
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert_eq!(observed.load(Ordering::SeqCst), 3);
        assert_eq!(reg.metrics().sessions_active(), 0);
        // Dropping guards of removed sessions must not run anything twice.
        drop(guards);
        tokio::task::yield_now().await;
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert_eq!(
            reg.begin_request(&md("new", "c", "t"))
                .expect_err("refused"),
            StateError::ShuttingDown
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_joins_and_leaves_keep_counts_consistent() {
        let reg = SessionRegistry::new();
        let keep = reg.begin_request(&md("s", "main", "t")).expect("create");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let reg = reg.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..500 {
                    let g = reg
                        .begin_request(&md("s", &format!("c{i}"), "t"))
                        .expect("join");
                    drop(g);
                    let g = reg.begin_request(&md("s", "main", "t")).expect("join main");
                    drop(g);
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(keep.client().active_requests(), 1);
        assert_eq!(keep.session().state(), SessionState::Initialized);
        assert_eq!(reg.metrics().clients_active(), 9);
        let s = keep.session().clone();
        drop(keep);
        s.torn_down().await;
        assert_eq!(reg.metrics().clients_active(), 0);
    }
}
