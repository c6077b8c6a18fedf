//! dagr-snapshot: the storage layer of the build core.
//!
//! - [`ContentStore`] keeps blobs (layers, manifests, configs) by their sha256 [`Digest`]. Blobs
//!   are written through a verifying [`BlobWriter`] into a temp file, fsynced and renamed into
//!   place: atomic, verified, deduplicated.
//! - [`Snapshotter`] manages directory snapshots in containerd's shape (`prepare`, `view`,
//!   `commit`, `remove`, `mounts`, `stat`, `usage`, `list`) with metadata in redb. It uses
//!   overlayfs when a probe mount works ([`Backend::Overlay`]) and copies otherwise
//!   ([`Backend::Copy`]); [`Snapshotter::open`] recovers from a crash.
//! - [`Mount`] says how to mount a snapshot; [`mount_all`] mounts a list on a directory through the
//!   [`MountSyscalls`] seam ([`LinuxMounts`] for real) and returns a [`MountGuard`] that unmounts.
//! - [`apply_layer`] unpacks an OCI tar layer (plain/gzip/zstd) onto a tree without ever leaving
//!   it; [`Snapshotter::unpack_image_layers`] turns an image's [`LayerDescriptor`]s into a chain
//!   of committed snapshots keyed by chain id; [`Snapshotter::diff`] writes a snapshot's changes
//!   back as a gzip layer ([`DiffLayer`]).
//! - [`Lease`]s (held in the snapshotter's database) protect blobs and snapshots from
//!   [`Snapshotter::gc`], which removes the rest oldest-unused first down to a byte budget.
//! - Writes reach the disk by group commit: writable overlays are mounted `volatile`, records
//!   are written without fsync, and [`Snapshotter::sync`] syncs the files, then the records, of
//!   everything committed since the last sync ([`SyncStats`]).

mod beneath;
pub mod content;
pub mod diff;
pub mod digest;
mod fsutil;
pub mod gc;
mod group_commit;
pub mod layer;
pub mod mount;
pub mod snapshotter;
pub mod unpack;

pub use content::{BlobInfo, BlobWriter, ContentError, ContentStore};
pub use diff::{DiffError, DiffLayer, LAYER_MEDIA_TYPE_GZIP, LAYER_MEDIA_TYPE_ZSTD};
pub use digest::{Digest, DigestError};
pub use fsutil::{Usage, disk_usage};
pub use gc::{GcError, GcReport};
pub use group_commit::SyncStats;
pub use layer::{ApplyOptions, ApplyStats, Compression, LayerError, apply_layer, is_tar_archive};
pub use mount::{LinuxMounts, Mount, MountError, MountGuard, MountKind, MountSyscalls, mount_all};
pub use snapshotter::{Backend, Info, Kind, Lease, SnapshotError, Snapshotter, SnapshotterOptions};
pub use unpack::{LAYER_MEDIA_TYPES, LayerDescriptor, UnpackError, chain_id};
