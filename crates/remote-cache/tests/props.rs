//! Property tests: a cache index read from a registry (any bytes, or JSON shaped like an index
//! with arbitrary keys, digests and chains) is parsed or refused without a panic, every entry it
//! keeps names only described layers, and merging never drops an entry. `PROPTEST_CASES` sets
//! how many cases run.

use dagr_remote_cache::{CacheEntry, CacheIndex, LayerInfo};
use dagr_snapshot::Digest;
use proptest::prelude::*;

fn digest(n: u8) -> Digest {
    Digest::of_bytes(&[n])
}

fn index_strategy() -> impl Strategy<Value = CacheIndex> {
    (
        proptest::collection::btree_map(
            "[a-z0-9:]{1,16}",
            proptest::collection::vec(proptest::collection::vec(0u8..8, 0..4), 0..3),
            0..6,
        ),
        proptest::collection::btree_set(0u8..8, 0..8),
    )
        .prop_map(|(entries, described)| {
            let mut index = CacheIndex::new();
            for n in described {
                index.layers.insert(
                    digest(n),
                    LayerInfo {
                        media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                        size: u64::from(n),
                        diff_id: digest(n.wrapping_add(100)),
                    },
                );
            }
            for (key, chains) in entries {
                index.entries.insert(
                    key,
                    CacheEntry {
                        outputs: chains
                            .into_iter()
                            .map(|c| c.into_iter().map(digest).collect())
                            .collect(),
                        metadata: serde_json::Value::Null,
                        created_unix: 0,
                    },
                );
            }
            index
        })
}

proptest! {
    #[test]
    fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = CacheIndex::parse(&Digest::of_bytes(&bytes), &bytes);
    }

    #[test]
    fn parsed_entries_name_only_described_layers(index in index_strategy()) {
        let bytes = index.to_bytes();
        let parsed = CacheIndex::parse(&Digest::of_bytes(&bytes), &bytes).expect("parse");
        for entry in parsed.entries.values() {
            for d in entry.outputs.iter().flatten() {
                prop_assert!(parsed.layers.contains_key(d));
            }
        }
        // Entries whose layers are all described are kept.
        for (key, entry) in &index.entries {
            let described = entry.outputs.iter().flatten().all(|d| index.layers.contains_key(d));
            prop_assert_eq!(parsed.entries.contains_key(key), described);
        }
    }

    #[test]
    fn merging_keeps_every_entry(a in index_strategy(), b in index_strategy()) {
        let mut merged = a.clone();
        merged.merge(&b);
        prop_assert!(merged.contains_all(&a));
        prop_assert!(merged.contains_all(&b));
        for (key, entry) in &a.entries {
            prop_assert_eq!(&merged.entries[key], entry);
        }
    }
}
