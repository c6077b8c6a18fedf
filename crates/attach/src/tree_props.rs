//! Property tests of the receiving side of tree transfers: any sequence of packets (hostile paths
//! with `..`, absolute paths, links pointing anywhere, data at any offset, packets after the end)
//! is applied or refused, never panicking and never writing outside the target.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use crate::proto::{Data, End, Header, Kind, Packet, packet::Item};
use crate::tree::{TreeWriter, WriteTarget};

fn path() -> impl Strategy<Value = Vec<u8>> {
    let component = prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("".to_owned()),
        Just("sentinel".to_owned()),
        "[a-z]{1,4}",
    ];
    (any::<bool>(), proptest::collection::vec(component, 0..4)).prop_map(|(absolute, parts)| {
        let joined = parts.join("/");
        let path = if absolute {
            format!("/{joined}")
        } else {
            joined
        };
        path.into_bytes()
    })
}

fn packet() -> impl Strategy<Value = Packet> {
    let kind = prop_oneof![
        Just(Kind::Dir),
        Just(Kind::File),
        Just(Kind::Symlink),
        Just(Kind::Other),
        Just(Kind::Unspecified),
    ];
    let header = (path(), kind, 0u64..64, path(), 0u32..0o10000).prop_map(
        |(path, kind, size, link_target, mode)| {
            Item::Header(Header {
                path,
                mode,
                size,
                mtime_ns: 1_000_000_000,
                kind: kind as i32,
                link_target,
                ..Header::default()
            })
        },
    );
    let data = (0u64..80, proptest::collection::vec(any::<u8>(), 0..32))
        .prop_map(|(offset, data)| Item::Data(Data { offset, data }));
    prop_oneof![
        4 => header,
        4 => data,
        1 => Just(Item::End(End {})),
        1 => Just(Item::Header(Header::default())),
    ]
    .prop_map(|item| Packet { item: Some(item) })
}

/// Every entry under `dir` with its kind and content (files) or target (links).
fn describe(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let what = if meta.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else {
                format!("file {:?}", std::fs::read(&p).unwrap_or_default())
            };
            out.insert(rel, what);
        }
    }
    out
}

proptest! {
    #[test]
    fn random_packet_streams_never_write_outside_the_target(packets in proptest::collection::vec(packet(), 0..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let sentinel = tmp.path().join("sentinel");
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("keep"), b"original").unwrap();
        let outside = |d: &BTreeMap<String, String>| {
            d.iter()
                .filter(|(k, _)| !k.starts_with("root"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        let before = outside(&describe(tmp.path()));
        let mut writer = TreeWriter::new(WriteTarget::Dir { root: root.clone(), wipe: false }).unwrap();
        for packet in packets {
            if writer.apply(packet).is_err() {
                break;
            }
        }
        let _ = writer.finish();
        prop_assert_eq!(outside(&describe(tmp.path())), before);
    }

    #[test]
    fn random_packet_streams_into_a_single_file_stay_there(packets in proptest::collection::vec(packet(), 0..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("dir/target");
        std::fs::write(tmp.path().join("keep"), b"original").unwrap();
        let mut writer = TreeWriter::new(WriteTarget::File { path: target.clone(), mode: None }).unwrap();
        for packet in packets {
            if writer.apply(packet).is_err() {
                break;
            }
        }
        let _ = writer.finish();
        let after = describe(tmp.path());
        prop_assert_eq!(after.get("keep").map(String::as_str), Some("file [111, 114, 105, 103, 105, 110, 97, 108]"));
        for name in after.keys() {
            prop_assert!(name == "keep" || name == "dir" || name == "dir/target" || name.starts_with("dir/.tmp"), "{name}");
        }
    }
}

proptest! {
    /// A listing of hostile headers is accepted only when it is canonical: rooted, in
    /// [`crate::path_order`], every parent a listed directory, no unsafe component.
    #[test]
    fn random_listings_are_accepted_only_when_canonical(packets in proptest::collection::vec(packet(), 0..40)) {
        let mut check = crate::sync::ListingCheck::default();
        let headers = packets.into_iter().filter_map(|p| match p.item {
            Some(Item::Header(h)) => Some(h),
            _ => None,
        });
        for header in headers {
            if check.push(header).is_err() {
                break;
            }
        }
        let entries = check.into_entries();
        let mut dirs: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            if i == 0 {
                prop_assert!(e.path.is_empty());
            } else {
                prop_assert!(crate::tree::check_relative(&e.path).is_ok());
                prop_assert_eq!(crate::path_order(&entries[i - 1].path, &e.path), std::cmp::Ordering::Less);
                let parent = match e.path.iter().rposition(|b| *b == b'/') {
                    Some(at) => &e.path[..at],
                    None => &e.path[..0],
                };
                prop_assert!(dirs.contains(parent));
            }
            if e.kind == crate::EntryKind::Dir {
                dirs.insert(&e.path);
            }
        }
    }

    /// The content phase of a sync writes only what was asked for, whatever the stream holds.
    #[test]
    fn a_fetch_writes_only_what_it_asked_for(packets in proptest::collection::vec(packet(), 0..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let expected = crate::tree::Expected {
            dirs: [b"".to_vec(), b"abc".to_vec()].into_iter().collect(),
            files: [b"abc/d".to_vec()].into_iter().collect(),
        };
        let mut writer = TreeWriter::new(WriteTarget::Dir { root: root.clone(), wipe: false })
            .unwrap()
            .expecting(expected);
        for packet in packets {
            if writer.apply(packet).is_err() {
                break;
            }
        }
        let _ = writer.finish();
        for name in describe(tmp.path()).keys() {
            prop_assert!(["root", "root/abc", "root/abc/d"].contains(&name.as_str()), "{name}");
        }
    }
}
