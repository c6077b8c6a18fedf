//! dagr-registry: OCI distribution client and OCI image layouts.
//!
//! - [`Reference`] parses and normalizes image references the way Docker does
//!   (`busybox` -> `docker.io/library/busybox:latest`, served by `registry-1.docker.io`).
//! - [`RegistryClient`] talks the OCI distribution API: [`RegistryClient::resolve`] (manifest
//!   and config, no layers), [`RegistryClient::pull`] -> [`PulledImage`], [`RegistryClient::push`]
//!   (blobs skipped when present, cross-repository mounts, monolithic or chunked uploads, then
//!   manifests, indexes and tags). Transport: https with rustls (ring; webpki roots, or per-host
//!   CA certificates), plain http for loopback and configured insecure hosts, pull mirrors with
//!   fallback ([`RegistryConfig`]), retries of transient failures, redirects. Authentication:
//!   anonymous, bearer tokens from the `WWW-Authenticate` challenge (GET with basic credentials,
//!   or the OAuth2 refresh-token grant for identity tokens), and basic; credentials come from a
//!   [`CredentialsProvider`] and tokens are cached per client ([`RegistryClient::with_credentials`]
//!   gives each session its own cache). Indexes and Docker manifest lists are resolved with
//!   [`Platform`]; every pulled blob is digest- and size-verified on its way into the
//!   [`dagr_snapshot::ContentStore`].
//! - [`layout`] imports images from OCI layout directories and `oci-archive` tarballs into the
//!   content store and exports images (manifests or indexes, as [`ExportEntry`]s) from it
//!   ([`layout::import_layout`], [`layout::import_archive`], [`layout::export_layout`],
//!   [`layout::export_archive`]: the engine's one `oci-archive` writer, whose tarballs also carry
//!   Docker's `manifest.json`).
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
pub use pull::{BlobStream, FetchedManifest, PullError, ResolvedImage};
pub use push::{BlobPush, PushError};
pub use reference::{Reference, ReferenceError};
pub use transport::{RegistryConfig, TransportError};
