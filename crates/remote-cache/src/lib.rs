//! dagr-remote-cache: a build cache shared through any OCI registry.
//!
//! - [`CacheSpec`] (`spec.rs`): where a cache lives and what an export writes
//!   (`type=registry,ref=REF[,mode=min|max]`, or a Dagger client's `{Type, Attrs}` entry).
//! - [`CacheIndex`] (`index.rs`): the document a cache tag points to: entries by cache key,
//!   each a result's outputs as layer chains plus the runner's metadata, and the layers they
//!   use. The tag names an OCI image manifest whose config blob is the index and whose layers
//!   are every layer, so any registry stores it and its garbage collection keeps the layers.
//! - [`RemoteCache`] (`remote.rs`): reads a tag's index, fetches the layers of an entry
//!   (verified, only when a key is hit) and exports entries by merging them into what the tag
//!   holds (concurrent exporters merge; none removes another's entries).
//!
//! What goes into an entry and how a snapshot becomes layers is the worker's concern; this
//! crate only moves documents and blobs.

mod index;
mod remote;
mod spec;

pub use index::{
    CacheEntry, CacheIndex, INDEX_MEDIA_TYPE, IndexError, LayerInfo, MANIFEST_MEDIA_TYPE,
};
pub use remote::{ExportReport, RemoteCache, RemoteCacheError};
pub use spec::{CacheSpec, CacheSpecError, ExportMode};
