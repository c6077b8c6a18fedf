//! What the CLI's integration tests share: the two binaries under test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `dagr` binary of this package.
pub fn dagr() -> &'static str {
    env!("CARGO_BIN_EXE_dagr")
}

/// `dagr-engine`, built next to `dagr` by `cargo test --workspace` / `cargo xtask test`.
pub fn engine_bin() -> PathBuf {
    let p = Path::new(dagr()).with_file_name("dagr-engine");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p dagr-engine` (cargo xtask test does)",
        p.display()
    );
    p
}
