//! dagr-dockerfile: Dockerfiles parsed and translated into dagr solver ops, with BuildKit's
//! semantics. Pure: no IO, no processes, no network.
//!
//! - [`parse`] reads a Dockerfile into a [`Dockerfile`]: parser directives, the ARGs before
//!   the first FROM and the [`Stage`]s with their typed [`Instruction`]s (flags, heredocs, JSON
//!   and shell forms checked). Errors are [`ParseError`]s naming the line.
//! - Translation has two phases so the caller can resolve images in between:
//!   [`images_needed`] lists the [`ImageRequest`]s of the stages the target needs, then
//!   [`translate`] builds the target's vertices and image config ([`Build`]) from the resolved
//!   [`BaseImage`]s. Options are [`BuildOptions`]; errors are [`BuildError`]s.
//! - [`parse_dockerignore`] reads `.dockerignore` patterns; [`ImageConfig`] is the image
//!   config's `config` section; [`shell::Lex`] is BuildKit's word expansion.
//!
//! Not supported (a [`BuildError`] says so): `ADD` of git repositories, `ADD --checksum`,
//! `RUN --mount=type=ssh`, `RUN --network=host`, `RUN --security=insecure`, `RUN --device`,
//! symbolic `--chmod`, and user or group names other than `root` in `--chown` (files are owned
//! by numeric ids; resolving names would need the image's `/etc/passwd`).

mod config;
mod dockerignore;
mod error;
mod flags;
mod instructions;
mod mounts;
mod parser;
mod paths;
mod plan;
mod reference;
mod remote;
pub mod shell;
mod translate;

pub use config::{DEFAULT_PATH, Healthcheck, ImageConfig};
pub use dockerignore::parse_dockerignore;
pub use error::{BuildError, BuildErrorKind, ParseError, ParseErrorKind};
pub use instructions::{
    Add, ArgDecl, Command, CommandLine, Copy, Dockerfile, Files, HealthcheckSpec, InlineFile,
    Instruction, KeyValue, Network, Run, Stage, parse,
};
pub use parser::Heredoc;
pub use plan::{ImageRequest, images_needed};
pub use translate::{BaseImage, Build, BuildOptions, Fs, translate};
