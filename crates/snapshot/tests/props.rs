//! Property tests: a layer made of random entries (names with `..`, absolute paths, links that
//! point anywhere, whiteouts, devices, files declaring sizes they do not have) is applied or
//! refused, never panicking and never writing outside the target. `PROPTEST_CASES` sets how
//! many cases run.

#![allow(clippy::unwrap_used)]

mod common;

use common::{LayerBuilder, describe};
use dagr_snapshot::{ApplyOptions, apply_layer};
use proptest::prelude::*;

/// A path made of a few components, some of them hostile.
fn path() -> impl Strategy<Value = String> {
    let component = prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("".to_owned()),
        Just("sentinel".to_owned()),
        Just(".wh..wh..opq".to_owned()),
        "\\.wh\\.[a-z]{1,3}",
        "[a-z]{1,4}",
    ];
    (any::<bool>(), proptest::collection::vec(component, 1..5)).prop_map(|(absolute, parts)| {
        let joined = parts.join("/");
        let path = if absolute {
            format!("/{joined}")
        } else {
            joined
        };
        // The tar header's name field holds 100 bytes.
        path.chars().take(90).collect()
    })
}

#[derive(Debug, Clone)]
enum Entry {
    Dir(String),
    File(String, Vec<u8>),
    Symlink(String, String),
    Hardlink(String, String),
    Lying(String, u64, usize),
    Device(String),
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        path().prop_map(Entry::Dir),
        (path(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(p, c)| Entry::File(p, c)),
        (path(), path()).prop_map(|(p, t)| Entry::Symlink(p, t)),
        (path(), path()).prop_map(|(p, t)| Entry::Hardlink(p, t)),
        (path(), 0u64..4096, 0usize..64).prop_map(|(p, d, a)| Entry::Lying(p, d, a)),
        path().prop_map(Entry::Device),
    ]
}

fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = LayerBuilder::new();
    for e in entries {
        b = match e {
            Entry::Dir(p) => b.dir(p, 0o755),
            Entry::File(p, c) => b.file(p, c, 0o644),
            Entry::Symlink(p, t) => b.symlink(p, t),
            Entry::Hardlink(p, t) => b.hardlink(p, t),
            Entry::Lying(p, declared, actual) => {
                b.file_declaring(p, (*declared).max(*actual as u64), *actual)
            }
            Entry::Device(p) => b.device(p, tar::EntryType::Char, 1, 3),
        };
    }
    b.tar()
}

proptest! {
    #[test]
    fn random_layers_never_write_outside_the_target(entries in proptest::collection::vec(entry(), 0..24)) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let sentinel = tmp.path().join("sentinel");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("keep"), b"original").unwrap();
        let before = describe(tmp.path());
        let outside = |d: &std::collections::BTreeMap<String, String>| {
            d.iter()
                .filter(|(k, _)| !k.starts_with("root"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        let _ = apply_layer(layer(&entries).as_slice(), &root, &ApplyOptions::default());
        prop_assert_eq!(outside(&describe(tmp.path())), outside(&before));
    }

    #[test]
    fn random_bytes_are_refused_or_applied_never_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let tmp = tempfile::tempdir().unwrap();
        let _ = apply_layer(bytes.as_slice(), tmp.path(), &ApplyOptions::default());
    }
}
