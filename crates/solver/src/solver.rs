//! The [`Solver`]: computes cache keys, answers from the result index, runs missing ops through
//! the [`OpRunner`] with single-flight per key, limits concurrent execs, and tracks which results
//! sessions hold.
//!
//! Solving a graph has two phases. First the cache key of the root is computed: for graphs
//! without runtime-keyed vertices it is the structural key computed when the vertices were built;
//! otherwise images are resolved and host reads are run (their content digest gives the key of
//! everything above them). Then the root's result is looked up and, on a miss, its flight runs:
//! inputs' results are obtained the same way (recursively, concurrently), then the op runs.
//!
//! A flight is a shared future. Every solve that needs the same key waits on the same flight;
//! when all of them are dropped, the flight (and the runner's future in it) is dropped.
//!
//! Telemetry: every vertex a solve visits gets a span under the solve's [`SpanCx`]: a cache hit
//! is one finished span marked cached; a run is a span from the moment its inputs are ready to
//! the op's end, whose context the runner gets ([`RunCtx::span`]) for its own spans and logs. A
//! flight joined by another solve is reported by the solve that started it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::{self, BoxFuture, Either, FutureExt as _, Ready, Shared, WeakShared};
use parking_lot::Mutex;

use crate::index::{IndexEntry, IndexError, IndexWrites, ResultIndex};
use crate::key::{self, CacheKey};
use crate::op::{KeyMode, Vertex};
use crate::runner::{Annotations, OpRunner, ResultRef, RunCtx, RunError};
use dagr_telemetry::{SpanCx, attr};

/// Errors of a solve. Cloneable: one failure is returned to every waiter of the failed op.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SolveError {
    #[error("{kind} op {key} failed: {source}")]
    Run {
        kind: &'static str,
        key: CacheKey,
        source: RunError,
    },
    #[error("resolving {kind} op {key} failed: {source}")]
    Resolve {
        kind: &'static str,
        key: CacheKey,
        source: RunError,
    },
    #[error("content-keyed {kind} op {key} returned no content digest")]
    MissingContentDigest { kind: &'static str, key: CacheKey },
    #[error("op {key} panicked in the runner")]
    Panicked { key: CacheKey },
    #[error("op {key} was cancelled")]
    Cancelled { key: CacheKey },
    #[error("solving needs a tokio runtime")]
    NoRuntime,
    #[error("exec concurrency limiter closed while op {key} waited for it")]
    LimiterClosed { key: CacheKey },
    #[error(transparent)]
    Index(Arc<IndexError>),
}

impl SolveError {
    /// Whether opening failed because the index database is damaged ([`IndexError::is_damaged`]).
    pub fn is_damaged_index(&self) -> bool {
        matches!(self, SolveError::Index(e) if e.is_damaged())
    }
}

impl From<IndexError> for SolveError {
    fn from(e: IndexError) -> Self {
        SolveError::Index(Arc::new(e))
    }
}

/// Options for [`Solver::open`].
#[derive(Debug, Clone)]
pub struct SolverOptions {
    /// How many exec ops may run at once (other ops, and execs with privileged nesting, are not
    /// limited). At least 1.
    pub exec_concurrency: usize,
}

impl Default for SolverOptions {
    /// One exec per available core.
    fn default() -> Self {
        Self {
            exec_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// The outcome of [`Solver::solve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    /// The root's cache key (runtime-derived where the graph needed it).
    pub key: CacheKey,
    pub result: ResultRef,
}

/// Schedules ops, owns cache keys and the result index. Cheap to clone (shared state).
pub struct Solver<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Solver<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<R> {
    runner: R,
    index: ResultIndex,
    flights: Arc<FlightMap<ResultRef>>,
    /// Runs of content-keyed ops, by the key of their definition and inputs.
    impure_flights: Arc<FlightMap<(CacheKey, ResultRef)>>,
    exec_limit: tokio::sync::Semaphore,
    /// Session id -> keys of the results it solved.
    leases: Mutex<HashMap<String, HashSet<CacheKey>>>,
    /// Keys in use by running solves and flights, with counts.
    pins: Arc<Mutex<HashMap<CacheKey, usize>>>,
    /// Session id -> keys of the exportable results its solves produced or used.
    visits: Mutex<HashMap<String, HashSet<CacheKey>>>,
}

/// The exportable results ([`Vertex::exportable`]) of a session, for a remote cache.
#[derive(Debug, Clone, Default)]
pub struct SessionResults {
    /// The results the session's solves returned.
    pub roots: Vec<(CacheKey, ResultRef)>,
    /// Every result its solves produced or used, the roots included.
    pub all: Vec<(CacheKey, ResultRef)>,
}

impl<R: OpRunner> Solver<R> {
    /// Opens the result index at `db_path` (created if missing) and wraps `runner`.
    pub fn open(db_path: &Path, runner: R, options: SolverOptions) -> Result<Self, SolveError> {
        let index = ResultIndex::open(db_path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                runner,
                index,
                flights: Arc::new(FlightMap::new()),
                impure_flights: Arc::new(FlightMap::new()),
                exec_limit: tokio::sync::Semaphore::new(options.exec_concurrency.max(1)),
                leases: Mutex::new(HashMap::new()),
                pins: Arc::new(Mutex::new(HashMap::new())),
                visits: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The runner this solver calls.
    pub fn runner(&self) -> &R {
        &self.inner.runner
    }

    /// Solves the graph under `root` for `session_id`, which then holds a lease on the result
    /// until [`Solver::release_session`].
    ///
    /// Dropping the returned future gives up on the solve; ops nobody else waits for are
    /// cancelled. A failed op is not cached: a later solve runs it again.
    ///
    /// The vertices' spans go under `span` ([`SpanCx::off`]: none).
    pub async fn solve(
        &self,
        root: &Arc<Vertex>,
        session_id: &str,
        span: &SpanCx,
    ) -> Result<Solved, SolveError> {
        let inner = &self.inner;
        if !root.needs_runtime_key() {
            let key = root.structural_key();
            if let Some(result) = inner.index.get(&key) {
                record_cached(span, root, key);
                inner.lease(session_id, key);
                if root.exportable() {
                    inner.visit(session_id, key);
                }
                return Ok(Solved { key, result });
            }
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SolveError::NoRuntime);
        }
        let scope = SolveScope {
            session: Arc::from(session_id),
            span: span.clone(),
        };
        let pins = PinGuard::new(Arc::clone(&inner.pins));
        let node = if root.needs_runtime_key() {
            let phase = Arc::new(KeyPhase {
                inner: Arc::clone(inner),
                scope: scope.clone(),
                memo: Mutex::new(HashMap::new()),
                pins: pins.clone(),
            });
            let _clear = ClearMemo(Arc::clone(&phase));
            phase.node(root).await?
        } else {
            Arc::new(Node::structural(Arc::clone(root)))
        };
        let result = result_of(inner, node.clone(), &scope).await?;
        inner.lease(session_id, node.key);
        drop(pins);
        Ok(Solved {
            key: node.key,
            result,
        })
    }

    /// Drops every lease of `session_id` (a session, or a holder of [`Solver::hold`]); returns
    /// how many there were.
    pub fn release_session(&self, session_id: &str) -> usize {
        self.inner.visits.lock().remove(session_id);
        self.inner
            .leases
            .lock()
            .remove(session_id)
            .map_or(0, |keys| keys.len())
    }

    /// The exportable results of `session_id` that are still indexed.
    pub fn session_results(&self, session_id: &str) -> SessionResults {
        let visited = self
            .inner
            .visits
            .lock()
            .get(session_id)
            .cloned()
            .unwrap_or_default();
        let leased = self
            .inner
            .leases
            .lock()
            .get(session_id)
            .cloned()
            .unwrap_or_default();
        let with_result = |k: &CacheKey| self.inner.index.peek(k).map(|r| (*k, r));
        SessionResults {
            roots: visited
                .iter()
                .filter(|k| leased.contains(k))
                .filter_map(with_result)
                .collect(),
            all: visited.iter().filter_map(with_result).collect(),
        }
    }

    /// Leases `keys` to `holder` (GC keeps them) until `release_session(holder)`: how work that
    /// outlives a session (an export) keeps its results.
    pub fn hold(&self, holder: &str, keys: impl IntoIterator<Item = CacheKey>) {
        for key in keys {
            self.inner.lease(holder, key);
        }
    }

    /// Results GC must keep: those leased by sessions and those in use by running solves.
    pub fn leased_refs(&self) -> Vec<ResultRef> {
        let mut keys: HashSet<CacheKey> = self.inner.pins.lock().keys().copied().collect();
        for held in self.inner.leases.lock().values() {
            keys.extend(held.iter().copied());
        }
        keys.iter()
            .filter_map(|k| self.inner.index.peek(k))
            .collect()
    }

    /// Every index entry, for GC decisions.
    pub fn entries(&self) -> Vec<IndexEntry> {
        self.inner.index.entries()
    }

    /// The index's inserts (one per result of an op that ran) and syncs since it opened.
    pub fn index_writes(&self) -> IndexWrites {
        self.inner.index.writes()
    }

    /// Makes every result indexed so far durable (group commit: new results are written
    /// without fsync). Blocking: one durable database commit if any was written since the last
    /// sync. Returns whether there was anything to sync.
    pub fn sync_index(&self) -> Result<bool, SolveError> {
        Ok(self.inner.index.sync()?)
    }

    /// Resolves once results were indexed since the last [`Solver::sync_index`].
    pub async fn wait_index_unsynced(&self) {
        self.inner.index.wait_unsynced().await;
    }

    /// How many results are indexed.
    pub fn cached_count(&self) -> usize {
        self.inner.index.len()
    }

    /// Removes the index entries whose result `keep` rejects (their data was removed by GC), so
    /// later solves run those ops again. Blocking: one durable database commit.
    pub fn prune(&self, keep: impl Fn(&ResultRef) -> bool) -> Result<Vec<CacheKey>, SolveError> {
        Ok(self.inner.index.prune(keep)?)
    }

    /// Persists the last-used times that changed in memory since the last flush (cache hits do
    /// not write to the database). Blocking. Returns how many entries were written.
    pub fn flush(&self) -> Result<usize, SolveError> {
        Ok(self.inner.index.flush()?)
    }
}

impl<R> Inner<R> {
    fn visit(&self, session_id: &str, key: CacheKey) {
        let mut visits = self.visits.lock();
        match visits.get_mut(session_id) {
            Some(keys) => {
                keys.insert(key);
            }
            None => {
                visits.insert(session_id.to_owned(), HashSet::from([key]));
            }
        }
    }

    fn lease(&self, session_id: &str, key: CacheKey) {
        let mut leases = self.leases.lock();
        match leases.get_mut(session_id) {
            Some(keys) => {
                keys.insert(key);
            }
            None => {
                leases.insert(session_id.to_owned(), HashSet::from([key]));
            }
        }
    }
}

/// A vertex with its cache key decided.
struct Node {
    vertex: Arc<Vertex>,
    key: CacheKey,
    /// `None`: the inputs' keys are their structural keys.
    inputs: Option<Vec<Arc<Node>>>,
    resolved_digest: Option<String>,
    /// A result already obtained while deciding the key (content-keyed ops).
    preset: Option<ResultRef>,
}

impl Node {
    fn structural(vertex: Arc<Vertex>) -> Self {
        Node {
            key: vertex.structural_key(),
            vertex,
            inputs: None,
            resolved_digest: None,
            preset: None,
        }
    }

    fn input_nodes(&self) -> Vec<Arc<Node>> {
        match &self.inputs {
            Some(nodes) => nodes.clone(),
            None => self
                .vertex
                .inputs()
                .iter()
                .map(|v| Arc::new(Node::structural(Arc::clone(v))))
                .collect(),
        }
    }
}

impl Drop for Node {
    /// Drops input chains iteratively: a deep graph must not overflow the stack.
    fn drop(&mut self) {
        let mut stack = self.inputs.take().unwrap_or_default();
        while let Some(node) = stack.pop() {
            if let Some(mut owned) = Arc::into_inner(node) {
                stack.extend(owned.inputs.take().unwrap_or_default());
            }
        }
    }
}

type Flight<T> = Shared<BoxFuture<'static, Result<T, SolveError>>>;
type WeakFlight<T> = WeakShared<BoxFuture<'static, Result<T, SolveError>>>;

/// In-flight runs by key. Entries are weak: a flight lives only while someone waits for it.
struct FlightMap<T> {
    map: Mutex<HashMap<CacheKey, (u64, WeakFlight<T>)>>,
    next_id: AtomicU64,
}

impl<T: Clone + Send + Sync + 'static> FlightMap<T> {
    fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Joins the running flight for `key`, or returns what `recheck` finds (checked under the
    /// map lock, so a flight finishing concurrently is not run twice), or starts `start()`.
    fn join_or_start(
        self: &Arc<Self>,
        key: CacheKey,
        recheck: impl FnOnce() -> Option<T>,
        start: impl FnOnce() -> BoxFuture<'static, Result<T, SolveError>>,
    ) -> Either<Ready<Result<T, SolveError>>, Flight<T>> {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(&key).and_then(|(_, weak)| weak.upgrade()) {
            return Either::Right(flight);
        }
        if let Some(done) = recheck() {
            return Either::Left(future::ready(Ok(done)));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let guard = FlightEntryGuard {
            map: Arc::downgrade(self),
            key,
            id,
        };
        let run = start();
        let flight = spawn_shared(
            key,
            async move {
                let _guard = guard;
                run.await
            }
            .boxed(),
        );
        if let Some(weak) = flight.downgrade() {
            map.insert(key, (id, weak));
        }
        Either::Right(flight)
    }
}

/// Runs `run` as a tokio task whose result every clone of the returned future shares. The task
/// is aborted when the last clone is dropped. (A task per flight also keeps polling depth flat:
/// deep graphs do not nest their flights' polls on one stack.)
fn spawn_shared<T: Clone + Send + Sync + 'static>(
    key: CacheKey,
    run: BoxFuture<'static, Result<T, SolveError>>,
) -> Shared<BoxFuture<'static, Result<T, SolveError>>> {
    let task = AbortOnDrop(tokio::spawn(run));
    task.join(key).boxed().shared()
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<Result<T, SolveError>>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self, key: CacheKey) -> Result<T, SolveError> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(SolveError::Panicked { key }),
            Err(_) => Err(SolveError::Cancelled { key }),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a flight's map entry when its future completes or is dropped.
struct FlightEntryGuard<T> {
    map: std::sync::Weak<FlightMap<T>>,
    key: CacheKey,
    id: u64,
}

impl<T> Drop for FlightEntryGuard<T> {
    fn drop(&mut self) {
        if let Some(map) = self.map.upgrade() {
            let mut map = map.map.lock();
            if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                map.remove(&self.key);
            }
        }
    }
}

/// Counted pins on keys, released on drop. Clones share the held set.
#[derive(Clone)]
struct PinGuard {
    held: Arc<PinSet>,
}

struct PinSet {
    pins: Arc<Mutex<HashMap<CacheKey, usize>>>,
    held: Mutex<Vec<CacheKey>>,
}

impl PinGuard {
    fn new(pins: Arc<Mutex<HashMap<CacheKey, usize>>>) -> Self {
        Self {
            held: Arc::new(PinSet {
                pins,
                held: Mutex::new(Vec::new()),
            }),
        }
    }

    fn pin(&self, key: CacheKey) {
        *self.held.pins.lock().entry(key).or_insert(0) += 1;
        self.held.held.lock().push(key);
    }
}

impl Drop for PinSet {
    fn drop(&mut self) {
        let held = std::mem::take(&mut *self.held.lock());
        let mut pins = self.pins.lock();
        for key in held {
            if let Some(count) = pins.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(&key);
                }
            }
        }
    }
}

/// Who a solve is for: the session (for leases and the runner) and where its spans go.
#[derive(Clone)]
struct SolveScope {
    session: Arc<str>,
    span: SpanCx,
}

/// The span of a vertex answered from the cache.
fn record_cached(span: &SpanCx, vertex: &Vertex, key: CacheKey) {
    if span.is_on() {
        span.record_done(
            vertex.op().describe(),
            vec![
                (attr::CACHED, true.into()),
                (attr::DIGEST, key.to_string().into()),
            ],
        );
    }
}

/// The result of `node`: preset, indexed, or from its (possibly shared) flight.
fn result_of<R: OpRunner>(
    inner: &Arc<Inner<R>>,
    node: Arc<Node>,
    scope: &SolveScope,
) -> Either<Ready<Result<ResultRef, SolveError>>, Flight<ResultRef>> {
    if let Some(result) = &node.preset {
        return Either::Left(future::ready(Ok(result.clone())));
    }
    if node.vertex.exportable() {
        inner.visit(&scope.session, node.key);
    }
    if let Some(result) = inner.index.get(&node.key) {
        record_cached(&scope.span, &node.vertex, node.key);
        return Either::Left(future::ready(Ok(result)));
    }
    let key = node.key;
    inner.flights.join_or_start(
        key,
        || inner.index.peek(&key),
        || run_flight(Arc::clone(inner), node, scope.clone()).boxed(),
    )
}

/// Gets the inputs' results (pinned while the op runs) and runs the op.
async fn run_inputs_and_op<R: OpRunner>(
    inner: &Arc<Inner<R>>,
    node: &Node,
    scope: &SolveScope,
) -> Result<crate::runner::RunOutput, SolveError> {
    let inputs = node.input_nodes();
    let pins = PinGuard::new(Arc::clone(&inner.pins));
    let results = future::try_join_all(
        inputs
            .iter()
            .map(|n| result_of(inner, Arc::clone(n), scope)),
    )
    .await?;
    for n in &inputs {
        pins.pin(n.key);
    }
    let op = node.vertex.op();
    let _permit = if op.is_limited_exec() {
        Some(
            inner
                .exec_limit
                .acquire()
                .await
                .map_err(|_| SolveError::LimiterClosed { key: node.key })?,
        )
    } else {
        None
    };
    let mut span = scope.span.start_with(
        op.describe(),
        vec![
            (attr::CACHED, false.into()),
            (attr::DIGEST, node.key.to_string().into()),
        ],
    );
    let ctx = RunCtx {
        session_id: Arc::clone(&scope.session),
        key: node.key,
        resolved_digest: node.resolved_digest.clone(),
        span: span.cx(),
        annotations: Annotations::default(),
    };
    tracing::debug!(kind = op.kind(), key = %node.key, "running op");
    let ran = inner
        .runner
        .run(&node.vertex, results, &ctx)
        .await
        .map_err(|source| SolveError::Run {
            kind: op.kind(),
            key: node.key,
            source,
        });
    for (key, value) in ctx.annotations.take() {
        span.set_attribute(key, value);
    }
    span.end_with(&ran);
    ran
}

async fn run_flight<R: OpRunner>(
    inner: Arc<Inner<R>>,
    node: Arc<Node>,
    scope: SolveScope,
) -> Result<ResultRef, SolveError> {
    if node.vertex.exportable()
        && let Some(out) = import(&inner, &node, &scope).await
    {
        return index_or_discard(&inner, node.key, out).await;
    }
    let out = run_inputs_and_op(&inner, &node, &scope).await?;
    index_or_discard(&inner, node.key, out).await
}

/// Indexes `out` under `key`; when the key has a result already (another run got there
/// first), that one is kept and the runner discards the new copy.
async fn index_or_discard<R: OpRunner>(
    inner: &Arc<Inner<R>>,
    key: CacheKey,
    out: crate::runner::RunOutput,
) -> Result<ResultRef, SolveError> {
    let produced = out.result.clone();
    let kept = inner.index.insert(key, out.result, out.size_hint).await?;
    if kept != produced {
        tracing::debug!(%key, "the key had a result already: the new copy is dropped");
        inner.runner.discard(produced, &kept).await;
    }
    Ok(kept)
}

/// The runner's import of `node` (a remote cache hit), recorded as a cached vertex.
async fn import<R: OpRunner>(
    inner: &Arc<Inner<R>>,
    node: &Node,
    scope: &SolveScope,
) -> Option<crate::runner::RunOutput> {
    let ctx = RunCtx {
        session_id: Arc::clone(&scope.session),
        key: node.key,
        resolved_digest: node.resolved_digest.clone(),
        span: scope.span.clone(),
        annotations: Annotations::default(),
    };
    let out = inner.runner.import(&node.vertex, &ctx).await?;
    if scope.span.is_on() {
        scope.span.record_done(
            node.vertex.op().describe(),
            vec![
                (attr::CACHED, true.into()),
                (attr::REMOTE_CACHE, true.into()),
                (attr::DIGEST, node.key.to_string().into()),
            ],
        );
    }
    tracing::debug!(kind = node.vertex.op().kind(), key = %node.key, "imported from a remote cache");
    Some(out)
}

/// Runs a content-keyed op; returns its content-derived key and its (indexed) result.
async fn run_impure<R: OpRunner>(
    inner: Arc<Inner<R>>,
    node: Arc<Node>,
    scope: SolveScope,
) -> Result<(CacheKey, ResultRef), SolveError> {
    let out = run_inputs_and_op(&inner, &node, &scope).await?;
    let kind = node.vertex.op().kind();
    let digest = out
        .content_digest
        .clone()
        .ok_or(SolveError::MissingContentDigest {
            kind,
            key: node.key,
        })?;
    let key = key::derive_content(kind, &digest);
    let result = index_or_discard(&inner, key, out).await?;
    Ok((key, result))
}

type NodeFlight = Shared<BoxFuture<'static, Result<Arc<Node>, SolveError>>>;

/// Key computation of one solve for graphs with runtime-keyed vertices, memoized per vertex so
/// that a host read used twice in one graph runs once and both uses see the same content.
struct KeyPhase<R> {
    inner: Arc<Inner<R>>,
    scope: SolveScope,
    memo: Mutex<HashMap<CacheKey, NodeFlight>>,
    /// Pins results obtained while computing keys, until the solve ends.
    pins: PinGuard,
}

/// Empties the memo when the solve ends, breaking the memo -> future -> phase cycle.
struct ClearMemo<R>(Arc<KeyPhase<R>>);

impl<R> Drop for ClearMemo<R> {
    fn drop(&mut self) {
        let memo = std::mem::take(&mut *self.0.memo.lock());
        drop(memo);
    }
}

impl<R: OpRunner> KeyPhase<R> {
    fn node(
        self: &Arc<Self>,
        vertex: &Arc<Vertex>,
    ) -> Either<Ready<Result<Arc<Node>, SolveError>>, NodeFlight> {
        if !vertex.needs_runtime_key() {
            return Either::Left(future::ready(Ok(Arc::new(Node::structural(Arc::clone(
                vertex,
            ))))));
        }
        let mut memo = self.memo.lock();
        let flight = memo
            .entry(vertex.structural_key())
            .or_insert_with(|| {
                spawn_shared(
                    vertex.structural_key(),
                    Arc::clone(self).compute(Arc::clone(vertex)).boxed(),
                )
            })
            .clone();
        Either::Right(flight)
    }

    async fn compute(self: Arc<Self>, vertex: Arc<Vertex>) -> Result<Arc<Node>, SolveError> {
        let inputs = future::try_join_all(vertex.inputs().iter().map(|v| self.node(v))).await?;
        let base_key = key::derive(vertex.op_digest(), inputs.iter().map(|n| n.key));
        let op = vertex.op();
        let node = match op.key_mode() {
            KeyMode::Structural => Node {
                vertex,
                key: base_key,
                inputs: Some(inputs),
                resolved_digest: None,
                preset: None,
            },
            KeyMode::Resolved => {
                let ctx = RunCtx {
                    session_id: Arc::clone(&self.scope.session),
                    key: base_key,
                    resolved_digest: None,
                    span: self.scope.span.clone(),
                    annotations: Annotations::default(),
                };
                let digest = self
                    .inner
                    .runner
                    .resolve(&vertex, &ctx)
                    .await
                    .map_err(|source| SolveError::Resolve {
                        kind: op.kind(),
                        key: base_key,
                        source,
                    })?;
                Node {
                    key: digest
                        .as_deref()
                        .map_or(base_key, |d| key::derive_resolved(base_key, d)),
                    vertex,
                    inputs: Some(inputs),
                    resolved_digest: digest,
                    preset: None,
                }
            }
            KeyMode::Content => {
                let pre = Arc::new(Node {
                    vertex: Arc::clone(&vertex),
                    key: base_key,
                    inputs: Some(inputs.clone()),
                    resolved_digest: None,
                    preset: None,
                });
                let inner = &self.inner;
                let scope = &self.scope;
                let (key, result) = inner
                    .impure_flights
                    .join_or_start(
                        base_key,
                        || None,
                        || run_impure(Arc::clone(inner), pre, scope.clone()).boxed(),
                    )
                    .await?;
                self.pins.pin(key);
                Node {
                    vertex,
                    key,
                    inputs: Some(inputs),
                    resolved_digest: None,
                    preset: Some(result),
                }
            }
        };
        Ok(Arc::new(node))
    }
}
