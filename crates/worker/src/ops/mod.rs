//! One file per op kind, like BuildKit's `solver/llbsolver/ops`: each adds the [`crate::Worker`]
//! methods that run its ops, and [`crate::Worker`]'s `OpRunner` impl dispatches to them.
//! - [`image`] runs `Image` (resolve, pull, unpack);
//! - [`exec`] runs `Exec` and interactive terminals;
//! - [`file`] runs `MkFile`, `MkDir`, `Rm`, `Copy`, `Diff` and `SetTimestamps`;
//! - [`host`] runs `HostDir`;
//! - [`archive`] runs `ImageArchive` and `ImportImage`;
//! - [`git`] resolves and runs `Git`; [`http`] resolves (downloads) and runs `Http`.

pub(crate) mod archive;
pub(crate) mod exec;
pub(crate) mod fetch_services;
pub(crate) mod file;
pub(crate) mod git;
pub(crate) mod host;
pub(crate) mod http;
pub(crate) mod image;
