//! dagr-source: content that comes from outside the engine, fetched on the engine's host.
//!
//! - [`git`]: [`GitRemote`] (a repository URL with optional token, header or SSH settings) and
//!   [`Git`], which drives the `git` binary: [`Git::resolve`] turns a ref into a commit with one
//!   `ls-remote` round trip, [`Git::checkout`] fetches exactly that commit shallowly into a
//!   directory. Credentials travel in the environment of `git` (never its arguments) and are
//!   scrubbed from every error.
//! - [`http`]: [`HttpFetcher`] downloads a URL to a file, revalidating a previous download with
//!   its [`Validators`] (`ETag`, `Last-Modified`), and reports the content digest.
//!
//! Why the `git` binary rather than gitoxide: it speaks every transport users have (smart
//! HTTP(S), `git://`, SSH through `ssh` and an agent) with the behaviour they know, it is on every
//! machine that builds from git, and it keeps a large dependency tree out of the engine.

pub mod git;
pub mod http;

pub use git::{Git, GitCredentials, GitError, GitRemote, SshSettings};
pub use http::{Fetched, HttpError, HttpFetcher, Validators, file_name_of};
