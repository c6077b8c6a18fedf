//! dagr-registry: OCI distribution client and OCI image layouts.
//!
//! - [`Reference`] parses and normalizes image references the way Docker does
//!   (`busybox` -> `docker.io/library/busybox:latest`, served by `registry-1.docker.io`).
//! - [`RegistryClient`] pulls ([`RegistryClient::pull`] -> [`PulledImage`]) and pushes
//!   ([`RegistryClient::push`]) images over the OCI distribution API, with https (rustls, webpki
//!   roots), plain http for loopback and configured insecure hosts, mirrors ([`RegistryConfig`]),
//!   anonymous, bearer-token and basic authentication ([`CredentialsProvider`]), platform choice
//!   from indexes and manifest lists ([`Platform`]), and bounded concurrent blob transfers.
//!   Every pulled blob is digest- and size-verified on its way into the
//!   [`dagr_snapshot::ContentStore`].
//! - [`layout`] imports images from OCI layout directories and `oci-archive` tarballs into the
//!   content store and exports images from it ([`layout::import_layout`],
//!   [`layout::import_archive`], [`layout::export_layout`], [`layout::export_archive`]).
//!
//! Layer blobs are stored as they come (gzip, zstd or uncompressed); unpacking them is the
//! snapshotter's concern.

pub mod auth;
pub mod client;
pub mod image;
pub mod layout;
pub mod pull;
pub mod push;
pub mod reference;
pub mod transport;

pub use auth::{Anonymous, Credentials, CredentialsProvider, StaticCredentials};
pub use client::RegistryClient;
pub use image::{ManifestKind, Platform, PulledImage};
pub use layout::ExportEntry;
pub use pull::{FetchedManifest, PullError, ResolvedImage};
pub use push::{BlobPush, PushError};
pub use reference::{Reference, ReferenceError};
pub use transport::{RegistryConfig, TransportError};
