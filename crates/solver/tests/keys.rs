//! Cache key determinism and sensitivity, and the serialized graph form.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use common::*;
use dagr_solver::{
    CacheKey, CacheSharing, ClientRef, CopyOp, Definition, ExecOp, GraphError, InputRef, MkDirOp,
    MkFileOp, Mount, MountSource, Op, RmOp, Vertex, canonical_op,
};

fn sample_exec() -> ExecOp {
    let mut op = exec_op(&["sh", "-c", "make"]);
    op.env = BTreeMap::from([
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ("CGO_ENABLED".to_owned(), "0".to_owned()),
    ]);
    op.user = Some("1000:1000".into());
    op.workdir = "/src".into();
    op.mounts.push(Mount {
        dest: "/cache".into(),
        source: MountSource::Cache {
            id: "gomod".into(),
            sharing: CacheSharing::Shared,
            base: None,
        },
        readonly: false,
    });
    op.secret_env = BTreeMap::from([("TOKEN".to_owned(), "secret-1".to_owned())]);
    op
}

fn sample_graph() -> Arc<Vertex> {
    let base = mkfile(&empty(), "/etc/motd", "hello");
    Vertex::new(Op::Exec(sample_exec()), vec![base]).unwrap()
}

#[test]
fn keys_are_stable_across_processes() {
    // A fixed graph has a fixed key: if this changes, every existing cache is invalidated, so
    // change it only together with the key version tags.
    let key = sample_graph().structural_key();
    assert_eq!(
        key.to_string(),
        "sha256:4e649192f008e4b787ceb62ab6b6bb4586e293a025c1d7db900b864aa98e4a72"
    );
    // Rebuilding the same graph gives the same key.
    assert_eq!(sample_graph().structural_key(), key);
}

#[test]
fn canonical_encoding_is_sorted_compact_json() {
    let op = Op::MkDir(MkDirOp {
        base: InputRef::main(0),
        path: "/x".into(),
        mode: 0o755,
        make_parents: true,
        owner: None,
    });
    assert_eq!(
        String::from_utf8(canonical_op(&op).unwrap()).unwrap(),
        r#"{"base":{"input":0,"output":0},"make_parents":true,"mode":493,"op":"mk_dir","path":"/x"}"#
    );
}

#[test]
fn map_and_field_order_do_not_change_the_key() {
    // Env set in another order.
    let mut reordered = sample_exec();
    reordered.env = BTreeMap::new();
    reordered
        .env
        .insert("CGO_ENABLED".to_owned(), "0".to_owned());
    reordered
        .env
        .insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
    let base = mkfile(&empty(), "/etc/motd", "hello");
    let v = Vertex::new(Op::Exec(reordered), vec![base]).unwrap();
    assert_eq!(v.structural_key(), sample_graph().structural_key());

    // The same definition as JSON with fields and map entries in another order.
    let def = Definition::from_root(&sample_graph()).unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&def).unwrap();
    let exec = &mut json["vertices"][2]["op"];
    let reversed: serde_json::Map<String, serde_json::Value> = exec
        .as_object()
        .unwrap()
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    *exec = serde_json::Value::Object(reversed);
    let env_rev: serde_json::Map<String, serde_json::Value> = exec["env"]
        .as_object()
        .unwrap()
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    exec["env"] = serde_json::Value::Object(env_rev);
    let text = serde_json::to_string(&json).unwrap();
    assert!(text.find("\"PATH\"").unwrap() < text.find("\"CGO_ENABLED\"").unwrap());
    let parsed: Definition = serde_json::from_str(&text).unwrap();
    assert_eq!(
        parsed.to_vertex().unwrap().structural_key(),
        sample_graph().structural_key()
    );
}

#[test]
fn every_exec_field_changes_the_key() {
    let base = sample_exec();
    type Change = Box<dyn Fn(&mut ExecOp)>;
    let variants: Vec<(&str, Change)> = vec![
        ("args", Box::new(|o| o.args.push("-j2".into()))),
        (
            "env value",
            Box::new(|o| {
                o.env.insert("PATH".into(), "/bin".into());
            }),
        ),
        (
            "env name",
            Box::new(|o| {
                let v = o.env.remove("PATH").unwrap();
                o.env.insert("PATH2".into(), v);
            }),
        ),
        ("workdir", Box::new(|o| o.workdir = "/src2".into())),
        ("user", Box::new(|o| o.user = None)),
        (
            "mount dest",
            Box::new(|o| o.mounts[1].dest = "/cache2".into()),
        ),
        ("mount readonly", Box::new(|o| o.mounts[0].readonly = true)),
        (
            "mount subpath",
            Box::new(|o| {
                o.mounts[0].source = MountSource::Input {
                    input: InputRef::main(0),
                    path: "/sub".into(),
                }
            }),
        ),
        (
            "mount output",
            Box::new(|o| {
                o.mounts[0].source = MountSource::Input {
                    input: InputRef {
                        input: 0,
                        output: 1,
                    },
                    path: "/".into(),
                }
            }),
        ),
        (
            "cache id",
            Box::new(|o| {
                o.mounts[1].source = MountSource::Cache {
                    id: "other".into(),
                    sharing: CacheSharing::Shared,
                    base: None,
                }
            }),
        ),
        (
            "cache sharing",
            Box::new(|o| {
                o.mounts[1].source = MountSource::Cache {
                    id: "gomod".into(),
                    sharing: CacheSharing::Locked,
                    base: None,
                }
            }),
        ),
        (
            "tmpfs",
            Box::new(|o| {
                o.mounts.push(Mount {
                    dest: "/tmp".into(),
                    source: MountSource::Tmpfs { size: None },
                    readonly: false,
                })
            }),
        ),
        (
            "secret mount",
            Box::new(|o| {
                o.mounts.push(Mount {
                    dest: "/run/secret".into(),
                    source: MountSource::Secret {
                        secret_id: "s".into(),
                        uid: 0,
                        gid: 0,
                        mode: 0o400,
                    },
                    readonly: true,
                })
            }),
        ),
        (
            "secret env",
            Box::new(|o| {
                o.secret_env.insert("TOKEN".into(), "secret-2".into());
            }),
        ),
        ("stdin", Box::new(|o| o.stdin = Some("in".into()))),
        (
            "redirect stdout",
            Box::new(|o| o.redirect_stdout = Some("/out".into())),
        ),
        (
            "redirect stderr",
            Box::new(|o| o.redirect_stderr = Some("/err".into())),
        ),
        ("hostname", Box::new(|o| o.hostname = Some("h".into()))),
        ("nesting", Box::new(|o| o.privileged_nesting = true)),
        (
            "root caps",
            Box::new(|o| o.insecure_root_capabilities = true),
        ),
    ];
    let input = mkfile(&empty(), "/etc/motd", "hello");
    let key_of = |op: ExecOp| {
        Vertex::new(Op::Exec(op), vec![Arc::clone(&input)])
            .unwrap()
            .structural_key()
    };
    let mut seen: HashSet<CacheKey> = HashSet::from([key_of(base.clone())]);
    for (name, change) in &variants {
        let mut op = base.clone();
        change(&mut op);
        assert_ne!(op, base, "{name} did not change the op");
        assert!(
            seen.insert(key_of(op)),
            "changing {name} did not change the key"
        );
    }
}

#[test]
fn other_ops_fields_and_inputs_change_the_key() {
    let a = mkfile(&empty(), "/a", "A");
    let b = mkfile(&empty(), "/b", "B");
    let mut keys = HashSet::new();
    let mut add = |v: Arc<Vertex>| assert!(keys.insert(v.structural_key()), "{:?}", v.op());

    add(mkfile(&a, "/f", "x"));
    add(mkfile(&a, "/f", "y"));
    add(mkfile(&a, "/g", "x"));
    add(mkfile(&b, "/f", "x")); // other input
    add(Vertex::new(
        Op::MkFile(MkFileOp {
            base: InputRef::main(0),
            path: "/f".into(),
            contents: b"x".to_vec(),
            mode: 0o600,
            owner: None,
        }),
        vec![Arc::clone(&a)],
    )
    .unwrap());
    add(merge(&a, &b));
    add(merge(&b, &a)); // input order matters
    let copy = |src: &str, include: Vec<String>| {
        Vertex::new(
            Op::Copy(CopyOp {
                base: InputRef::main(0),
                from: InputRef::main(1),
                src: src.into(),
                dest: "/dst".into(),
                include,
                exclude: vec![],
                owner: None,
                mode: None,
                copy_dir_contents: true,
                create_dest_path: true,
                allow_wildcard: false,
                follow_symlinks: false,
                unpack_archive: false,
            }),
            vec![Arc::clone(&a), Arc::clone(&b)],
        )
        .unwrap()
    };
    add(copy("/b", vec![]));
    add(copy("/c", vec![]));
    add(copy("/b", vec!["*.go".into()]));
    let rm = |path: &str, allow_not_found| {
        Vertex::new(
            Op::Rm(RmOp {
                base: InputRef::main(0),
                path: path.into(),
                allow_not_found,
                allow_wildcard: false,
            }),
            vec![Arc::clone(&a)],
        )
        .unwrap()
    };
    add(rm("/a", false));
    add(rm("/a", true));
    add(Vertex::new(
        Op::Diff {
            lower: InputRef::main(0),
            upper: InputRef::main(1),
        },
        vec![Arc::clone(&a), Arc::clone(&b)],
    )
    .unwrap());
    add(image("alpine:3.20"));
    add(image("alpine:3.19"));
    add(empty());
    let host = |client: &str, exclude: Vec<String>| {
        Vertex::new(
            Op::HostDir {
                client: ClientRef {
                    session_id: "s".into(),
                    client_id: client.into(),
                },
                path: "/src".into(),
                include: vec![],
                exclude,
            },
            vec![],
        )
        .unwrap()
    };
    add(host("c1", vec![]));
    add(host("c2", vec![]));
    add(host("c1", vec!["target".into()]));
}

#[test]
fn input_references_are_checked() {
    let err = Vertex::new(
        Op::MkFile(MkFileOp {
            base: InputRef::main(1),
            path: "/f".into(),
            contents: vec![],
            mode: 0o644,
            owner: None,
        }),
        vec![empty()],
    )
    .unwrap_err();
    assert!(matches!(
        err,
        GraphError::InputOutOfRange {
            kind: "mkfile",
            input: 1,
            count: 1
        }
    ));
}

#[test]
fn definition_round_trips_and_shares_vertices() {
    let shared = mkfile(&empty(), "/a", "A");
    let root = merge(
        &exec(&shared, &["write", "/b", "B"]),
        &mkfile(&shared, "/c", "C"),
    );
    let def = Definition::from_root(&root).unwrap();
    // empty, shared mkfile, exec, mkfile /c, merge: the shared vertex is stored once.
    assert_eq!(def.vertices.len(), 5);
    assert_eq!(def.root, 4);
    let json = serde_json::to_string(&def).unwrap();
    let back: Definition = serde_json::from_str(&json).unwrap();
    assert_eq!(back, def);
    let rebuilt = back.to_vertex().unwrap();
    assert_eq!(rebuilt.structural_key(), root.structural_key());

    // Inputs must come before their users.
    let mut bad = def.clone();
    bad.vertices[1].inputs = vec![3];
    assert!(matches!(
        bad.to_vertex(),
        Err(GraphError::ForwardReference {
            vertex: 1,
            input: 3
        })
    ));
    let mut bad_root = def;
    bad_root.root = 9;
    assert!(matches!(
        bad_root.to_vertex(),
        Err(GraphError::RootOutOfRange { root: 9, count: 5 })
    ));
}

#[test]
fn runtime_keyed_vertices_are_marked() {
    assert!(!mkfile(&empty(), "/a", "a").needs_runtime_key());
    assert!(image("alpine").needs_runtime_key());
    assert!(mkfile(&host_dir(std::path::Path::new("/tmp")), "/a", "a").needs_runtime_key());
}

#[test]
fn images_pinned_to_a_digest_need_no_resolution() {
    let platform = dagr_solver::Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    };
    let tagged = dagr_solver::Op::Image {
        reference: "docker.io/library/busybox:latest".into(),
        platform: platform.clone(),
    };
    let pinned = dagr_solver::Op::Image {
        reference: format!("docker.io/library/busybox@sha256:{}", "a".repeat(64)),
        platform,
    };
    assert_eq!(tagged.key_mode(), dagr_solver::KeyMode::Resolved);
    assert_eq!(pinned.key_mode(), dagr_solver::KeyMode::Structural);
    let v = dagr_solver::Vertex::new(pinned, vec![]).expect("vertex");
    assert!(!v.needs_runtime_key());
}
