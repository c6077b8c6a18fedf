//! The seam between the solver and whatever runs ops: [`OpRunner`], the opaque [`ResultRef`] it
//! returns, its [`RunCtx`], [`RunOutput`] and [`RunError`].

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::key::CacheKey;
use crate::op::Vertex;

/// An opaque handle to a result (e.g. a snapshot key and metadata). The runner defines what it
/// means; the solver stores it in its index and hands it back. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ResultRefData", into = "ResultRefData")]
pub struct ResultRef(Arc<ResultRefData>);

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ResultRefData {
    id: String,
    #[serde(default)]
    metadata: serde_json::Value,
}

impl From<ResultRefData> for ResultRef {
    fn from(data: ResultRefData) -> Self {
        Self(Arc::new(data))
    }
}

impl From<ResultRef> for ResultRefData {
    fn from(r: ResultRef) -> Self {
        Arc::unwrap_or_clone(r.0)
    }
}

impl ResultRef {
    pub fn new(id: impl Into<String>, metadata: serde_json::Value) -> Self {
        Self(Arc::new(ResultRefData {
            id: id.into(),
            metadata,
        }))
    }

    /// The runner's identifier of the result (e.g. a snapshot key).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// Whatever else the runner recorded about the result.
    pub fn metadata(&self) -> &serde_json::Value {
        &self.0.metadata
    }
}

impl fmt::Debug for ResultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultRef")
            .field("id", &self.0.id)
            .field("metadata", &self.0.metadata)
            .finish()
    }
}

/// What the runner learns about the op it runs.
#[derive(Debug, Clone)]
pub struct RunCtx {
    pub(crate) session_id: Arc<str>,
    pub(crate) key: CacheKey,
    pub(crate) resolved_digest: Option<String>,
    pub(crate) span: dagr_telemetry::SpanCx,
    pub(crate) annotations: Annotations,
}

/// Attributes a runner adds to its op's span (set when the span ends).
#[derive(Debug, Clone, Default)]
pub(crate) struct Annotations(
    Arc<parking_lot::Mutex<Vec<(&'static str, dagr_telemetry::AttrValue)>>>,
);

impl Annotations {
    pub(crate) fn take(&self) -> Vec<(&'static str, dagr_telemetry::AttrValue)> {
        std::mem::take(&mut *self.0.lock())
    }
}

impl RunCtx {
    /// The session whose solve started this run. A run is shared by every solve of the same key
    /// (single-flight), so other sessions may be waiting for it too.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The cache key the result will be stored under; for a content-keyed op (and for
    /// [`OpRunner::resolve`]) the key derived from its definition and inputs.
    pub fn key(&self) -> CacheKey {
        self.key
    }

    /// Where the runner's own spans and logs go: under the op's span (for
    /// [`OpRunner::resolve`], under the solve's).
    pub fn span(&self) -> &dagr_telemetry::SpanCx {
        &self.span
    }

    /// Adds an attribute to the op's span (e.g. an exec's exit code), whether the op succeeds
    /// or fails.
    pub fn annotate(&self, key: &'static str, value: impl Into<dagr_telemetry::AttrValue>) {
        if self.span.is_on() {
            self.annotations.0.lock().push((key, value.into()));
        }
    }

    /// For a resolved op (an image), the digest [`OpRunner::resolve`] returned.
    pub fn resolved_digest(&self) -> Option<&str> {
        self.resolved_digest.as_deref()
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub result: ResultRef,
    /// Required for content-keyed ops (host reads): a digest identifying the result's content
    /// completely. Dependents are cached under a key derived from it. Ignored for other ops.
    pub content_digest: Option<String>,
    /// Size of the result in bytes, if known (kept in the index for GC decisions).
    pub size_hint: Option<u64>,
}

impl RunOutput {
    pub fn new(result: ResultRef) -> Self {
        Self {
            result,
            content_digest: None,
            size_hint: None,
        }
    }
}

/// A runner's error. Shared by every waiter of a failed op, so it is reference-counted; the
/// original error can be recovered with [`RunError::downcast_ref`].
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct RunError(Arc<dyn StdError + Send + Sync>);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct MessageError(String);

impl RunError {
    pub fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// An error that is just a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self(Arc::new(MessageError(message.into())))
    }

    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

/// Runs ops. Implemented by the core API crate on top of the snapshotter, registry and executor;
/// the solver only schedules calls and caches the results.
///
/// A run is cancelled by dropping its future (when every solve waiting for it went away), so
/// implementations must clean up in `Drop` guards.
pub trait OpRunner: Send + Sync + 'static {
    /// Runs `vertex` given its inputs' results (in the order of [`Vertex::inputs`]).
    fn run(
        &self,
        vertex: &Vertex,
        inputs: Vec<ResultRef>,
        ctx: &RunCtx,
    ) -> impl Future<Output = Result<RunOutput, RunError>> + Send;

    /// Called before running an exportable vertex ([`Vertex::exportable`]) the index does not
    /// have: its result found elsewhere (a remote cache) under `ctx.key()`, or `None` to run it.
    /// The solver indexes what it returns as if the op had run. `ctx.span()` is the solve's.
    fn import(
        &self,
        vertex: &Vertex,
        ctx: &RunCtx,
    ) -> impl Future<Output = Option<RunOutput>> + Send {
        let _ = (vertex, ctx);
        async { None }
    }

    /// Called when a run's result was not indexed because its key already had one (a host read
    /// of an unchanged tree, keyed by its content): `dropped` is the new copy, `kept` the result
    /// the key keeps. The runner removes what `dropped` holds that `kept` does not, so an
    /// unchanged input is stored once however often it is read.
    fn discard(&self, dropped: ResultRef, kept: &ResultRef) -> impl Future<Output = ()> + Send {
        let _ = (dropped, kept);
        async {}
    }

    /// Called before the cache lookup of a [`crate::KeyMode::Resolved`] op (an image): returns a
    /// digest the op's cache key should follow (e.g. the manifest digest a tag points to), or
    /// `None` to key it by its definition alone. Called on every solve that needs the key.
    fn resolve(
        &self,
        vertex: &Vertex,
        ctx: &RunCtx,
    ) -> impl Future<Output = Result<Option<String>, RunError>> + Send {
        let _ = (vertex, ctx);
        async { Ok(None) }
    }
}
