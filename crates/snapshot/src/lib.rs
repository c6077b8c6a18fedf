//! dagr-snapshot: the storage layer of the build core.
//!
//! - [`ContentStore`] keeps blobs (layers, manifests, configs) by their sha256 [`Digest`]; blobs are
//!   written through a verifying [`BlobWriter`] and committed atomically.

pub mod content;
pub mod digest;

pub use content::{BlobInfo, BlobWriter, ContentError, ContentStore};
pub use digest::{Digest, DigestError};
pub mod mount;
pub use mount::{LinuxMounts, Mount, MountError, MountGuard, MountKind, MountSyscalls, mount_all};
mod beneath;
pub mod layer;
pub use layer::{ApplyOptions, ApplyStats, Compression, LayerError, apply_layer};
mod fsutil;
pub mod snapshotter;
pub use fsutil::Usage;
pub use snapshotter::{Backend, Info, Kind, Lease, SnapshotError, Snapshotter, SnapshotterOptions};
pub mod diff;
pub use diff::{DiffError, DiffLayer, LAYER_MEDIA_TYPE_GZIP};
pub mod unpack;
pub use unpack::{LAYER_MEDIA_TYPES, LayerDescriptor, UnpackError, chain_id};
pub mod gc;
pub use gc::{GcError, GcReport};
