//! dagr-solver: the operation graph, content-addressed cache keys, single-flight scheduling and
//! the persistent result index of the dagr build engine. It does no build IO itself: ops run
//! through an [`OpRunner`] the caller provides.
//!
//! Main types:
//! - [`Op`] (with [`ExecOp`], [`MkFileOp`], [`CopyOp`], ... as plain serde data), [`Vertex`] (an
//!   op and its input vertices, with its structural [`CacheKey`]) and [`Definition`] (a graph
//!   flattened for serialization).
//! - [`OpRunner`], the seam to the snapshotter/registry/executor: runs one vertex given its
//!   inputs' [`ResultRef`]s and returns a [`RunOutput`].
//! - [`Solver`]: [`Solver::solve`] computes keys (resolving images and keying host reads by
//!   content), answers from the index (in memory, backed by redb), runs missing ops once per key
//!   however many solves wait (cancelled when none do), limits concurrent execs, leases results
//!   to sessions ([`Solver::release_session`], [`Solver::leased_refs`]) and forgets pruned
//!   results ([`Solver::prune`]).

mod index;
mod key;
mod op;
mod runner;
mod solver;

pub use index::{IndexEntry, IndexError, IndexWrites};
pub use key::{CacheKey, KeyError, canonical_op};
pub use op::{
    CacheSharing, ClientRef, CopyOp, Definition, DefinitionVertex, ExecOp, GitAuth, GitOp,
    GraphError, HostSocket, HttpOp, ImageArchiveOp, ImageVariant, ImportImageOp, InputRef, KeyMode,
    MkDirOp, MkFileOp, Mount, MountSource, Op, Owner, OwnerError, Platform, RmOp, ServiceBinding,
    SetTimestampsOp, Vertex,
};
pub use runner::{OpRunner, ResultRef, RunCtx, RunError, RunOutput};
pub use solver::{SessionResults, SolveError, Solved, Solver, SolverOptions};
