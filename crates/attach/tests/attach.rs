//! Both halves of the attachables connection against each other over real 127.0.0.1 sockets.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{HANG, connect_pair, metadata, start_engine};
use dagr_attach::{
    AttachError, EntryKind, HostProviders, TerminalInput, TerminalOutput, TerminalProvider, methods,
};
use filetime::FileTime;
use tokio::net::TcpStream;

fn providers(root: &Path, allow_send: bool) -> HostProviders {
    HostProviders {
        root: root.to_path_buf(),
        allow_send,
        container: None,
        terminal: None,
        tunnel: None,
        host_id: dagr_attach::random_host_id(),
    }
}

fn set_mtime(path: &Path, secs: i64) {
    let t = FileTime::from_unix_time(secs, 123_456_789);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// What a tree looks like: relative path -> (kind, mode, size, mtime, link target, content hash).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mtime = (meta.mtime(), meta.mtime_nsec());
            let desc = if meta.file_type().is_symlink() {
                format!("link {:?} {mtime:?}", fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {:o} {mtime:?}", meta.mode() & 0o7777)
            } else {
                let content = fs::read(&path).unwrap();
                let sum: u64 = content
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (i as u64 + 1) * u64::from(*b))
                    .sum();
                format!(
                    "file {:o} {} {sum} {mtime:?}",
                    meta.mode() & 0o7777,
                    meta.len()
                )
            };
            out.insert(rel, desc);
        }
    }
    walk(root, root, &mut out);
    out
}

/// A tree with nested and empty dirs, modes, symlinks (relative, absolute, dangling) and mtimes.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("src/nested/deep")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::create_dir_all(root.join("target/debug")).unwrap();
    fs::write(root.join("README.md"), b"hello\n").unwrap();
    fs::write(root.join("src/main.rs"), b"fn main() {}\n").unwrap();
    fs::write(root.join("src/lib.rs"), b"").unwrap();
    fs::write(root.join("src/nested/deep/data.txt"), b"deep data").unwrap();
    fs::write(root.join("target/debug/out.bin"), vec![7u8; 1000]).unwrap();
    fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("secret.txt"), b"s").unwrap();
    fs::set_permissions(root.join("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    // A dense file of several chunks with a pattern.
    let mut big = fs::File::create(root.join("src/big.bin")).unwrap();
    let block: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    for i in 0..5u8 {
        let mut b = block.clone();
        b[0] = i;
        big.write_all(&b).unwrap();
    }
    big.write_all(b"tail").unwrap();
    drop(big);
    symlink("src/main.rs", root.join("link-rel")).unwrap();
    symlink("/etc/hostname", root.join("link-abs")).unwrap();
    symlink("missing/target", root.join("src/dangling")).unwrap();
    fs::set_permissions(root.join("src/nested"), fs::Permissions::from_mode(0o750)).unwrap();
    // mtimes last, children before parents.
    for (i, rel) in [
        "README.md",
        "src/main.rs",
        "src/lib.rs",
        "src/big.bin",
        "src/nested/deep/data.txt",
        "target/debug/out.bin",
        "run.sh",
        "secret.txt",
        "link-rel",
        "link-abs",
        "src/dangling",
        "src/nested/deep",
        "src/nested",
        "src",
        "empty",
        "target/debug",
        "target",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(rel), 1_600_000_000 + i as i64 * 1000);
    }
}

#[tokio::test]
async fn health_methods_and_unannounced_calls() {
    let host = tempfile::tempdir().unwrap();
    let pair = connect_pair(providers(host.path(), false)).await;
    pair.client.health_check().await.unwrap();
    assert!(pair.client.methods().iter().any(|m| m == methods::PULL_DIR));
    assert!(!pair.client.methods().iter().any(|m| m == methods::PUSH_DIR));
    let src = tempfile::tempdir().unwrap();
    let err = pair
        .client
        .push_dir(src.path(), "out", false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AttachError::NotAnnounced { method } if method == methods::PUSH_DIR),
        "{err}"
    );
    assert!(err.to_string().contains("PushDir"));
    // The connection is still fine after the refused call.
    pair.client.health_check().await.unwrap();
    assert!(!pair.client.is_closed());
}

#[tokio::test]
async fn pull_dir_round_trip_preserves_tree() {
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("project");
    make_tree(&src);
    let pair = connect_pair(providers(host.path(), false)).await;
    let dest_parent = tempfile::tempdir().unwrap();
    let dest = dest_parent.path().join("copy");
    // Relative to the client's root.
    let stats = pair
        .client
        .pull_dir("project", &[], &[], &dest)
        .await
        .unwrap();
    assert_eq!(snapshot(&src), snapshot(&dest));
    assert_eq!(stats.files, 8);
    assert_eq!(stats.symlinks, 3);
    assert_eq!(stats.dirs, 6);
    assert_eq!(
        stats.bytes,
        fs::metadata(src.join("src/big.bin")).unwrap().len() + 6 + 13 + 9 + 1000 + 18 + 1
    );
    // The root's own mode and mtime are carried too.
    let (src_meta, dest_meta) = (fs::metadata(&src).unwrap(), fs::metadata(&dest).unwrap());
    assert_eq!(src_meta.mtime(), dest_meta.mtime());
    assert_eq!(src_meta.mode(), dest_meta.mode());
    // Absolute host paths are used as is.
    let dest2 = dest_parent.path().join("copy2");
    pair.client
        .pull_dir(src.to_str().unwrap(), &[], &[], &dest2)
        .await
        .unwrap();
    assert_eq!(snapshot(&src), snapshot(&dest2));
}

#[tokio::test]
async fn pull_dir_include_exclude_patterns() {
    let host = tempfile::tempdir().unwrap();
    make_tree(host.path());
    let pair = connect_pair(providers(host.path(), false)).await;
    let pull = |include: &[&str], exclude: &[&str]| {
        let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        let client = pair.client.clone();
        async move {
            let dest = tempfile::tempdir().unwrap();
            client
                .pull_dir("", &include, &exclude, dest.path())
                .await
                .unwrap();
            snapshot(dest.path()).into_keys().collect::<Vec<_>>()
        }
    };
    // Exclude a directory (not descended) and a glob.
    let got = pull(&[], &["target", "**/*.bin", "src/nested/deep"]).await;
    assert_eq!(
        got,
        [
            "README.md",
            "empty",
            "link-abs",
            "link-rel",
            "run.sh",
            "secret.txt",
            "src",
            "src/dangling",
            "src/lib.rs",
            "src/main.rs",
            "src/nested"
        ]
    );
    // Include a directory: everything under it, with its parents.
    let got = pull(&["src/nested"], &[]).await;
    assert_eq!(
        got,
        [
            "src",
            "src/nested",
            "src/nested/deep",
            "src/nested/deep/data.txt"
        ]
    );
    // `**` includes at any depth; `*` does not cross '/'; exclude wins.
    let got = pull(&["**/*.rs", "*.md"], &["src/lib.rs"]).await;
    assert_eq!(got, ["README.md", "src", "src/main.rs"]);
    let got = pull(&["*.rs"], &[]).await;
    assert!(got.is_empty(), "{got:?}");
    // An empty directory matched by include is kept.
    let got = pull(&["empty", "./run.sh"], &[]).await;
    assert_eq!(got, ["empty", "run.sh"]);
    // A bad pattern is a clear error.
    let dest = tempfile::tempdir().unwrap();
    let err = pair
        .client
        .pull_dir("", &["a[".into()], &[], dest.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a["), "{err}");
}

#[tokio::test]
async fn pull_sparse_gib_file_and_stat() {
    let host = tempfile::tempdir().unwrap();
    let size: u64 = 1 << 30;
    let path = host.path().join("sparse.img");
    let mut file = fs::File::create(&path).unwrap();
    file.set_len(size).unwrap();
    let marks = [
        (0u64, b"start".as_slice()),
        (512 << 20, b"middle"),
        (size - 3, b"end"),
    ];
    for (offset, data) in marks {
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(data).unwrap();
    }
    drop(file);
    let pair = connect_pair(providers(host.path(), false)).await;

    let stat = pair.client.stat("sparse.img").await.unwrap();
    assert_eq!(stat.kind, EntryKind::File);
    assert_eq!(stat.size, size);

    let dest_dir = tempfile::tempdir().unwrap();
    let dest = dest_dir.path().join("sub/copy.img");
    let stats = pair.client.pull_file("sparse.img", &dest).await.unwrap();
    assert_eq!(stats.files, 1);
    let check = |copy: &Path| {
        let mut file = fs::File::open(copy).unwrap();
        assert_eq!(file.metadata().unwrap().len(), size);
        for (offset, data) in marks {
            let mut buf = vec![0u8; data.len() + 2];
            file.seek(SeekFrom::Start(offset.saturating_sub(1)))
                .unwrap();
            let n = file.read(&mut buf).unwrap();
            let got = &buf[..n];
            let mut want = Vec::new();
            if offset > 0 {
                want.push(0);
            }
            want.extend_from_slice(data);
            if offset + (data.len() as u64) < size {
                want.push(0);
            }
            assert_eq!(&got[..want.len()], want.as_slice(), "at {offset}");
        }
        let mut buf = vec![1u8; 4096];
        file.seek(SeekFrom::Start(300 << 20)).unwrap();
        file.read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
    };
    check(&dest);
    // The same file inside a pulled directory.
    let tree_dest = dest_dir.path().join("tree");
    pair.client
        .pull_dir("", &[], &[], &tree_dest)
        .await
        .unwrap();
    check(&tree_dest.join("sparse.img"));
    // The copies are sparse too.
    assert!(fs::metadata(&dest).unwrap().blocks() * 512 < 64 << 20);
}

#[tokio::test]
async fn stat_kinds_and_not_found() {
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("f"), b"abc").unwrap();
    fs::set_permissions(host.path().join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&host.path().join("f"), 1_500_000_000);
    symlink("f", host.path().join("l")).unwrap();
    fs::create_dir(host.path().join("d")).unwrap();
    let pair = connect_pair(providers(host.path(), false)).await;
    let f = pair.client.stat("f").await.unwrap();
    assert_eq!(
        (f.kind, f.mode, f.size, f.mtime_ns),
        (EntryKind::File, 0o640, 3, 1_500_000_000_123_456_789)
    );
    let l = pair.client.stat("l").await.unwrap();
    assert_eq!(l.kind, EntryKind::Symlink);
    assert_eq!(l.link_target, Some(PathBuf::from("f")));
    let d = pair
        .client
        .stat(host.path().join("d").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(d.kind, EntryKind::Dir);
    let err = pair.client.stat("nope").await.unwrap_err();
    match &err {
        AttachError::Rpc { status, path, .. } => {
            assert_eq!(status.code(), tonic::Code::NotFound);
            assert_eq!(path, "nope");
        }
        other => panic!("unexpected {other}"),
    }
    let dest = tempfile::tempdir().unwrap();
    let err = pair
        .client
        .pull_dir("nope", &[], &[], dest.path())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AttachError::Rpc { status, .. } if status.code() == tonic::Code::NotFound),
        "{err}"
    );
    let err = pair
        .client
        .pull_file("d", &dest.path().join("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AttachError::Rpc { status, .. } if status.code() == tonic::Code::FailedPrecondition),
        "{err}"
    );
}

#[tokio::test]
async fn push_dir_merge_wipe_and_push_file() {
    let host = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("export");
    make_tree(&src);
    let pair = connect_pair(providers(host.path(), true)).await;

    // Merge into an existing dir: existing files survive, a host symlink in the way is replaced.
    let out = host.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep.txt"), b"keep").unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), out.join("src")).unwrap();
    let stats = pair.client.push_dir(&src, "out", false).await.unwrap();
    assert_eq!(stats.files, 8);
    let mut want = snapshot(&src);
    let got = snapshot(&out);
    assert!(got.contains_key("keep.txt"));
    want.insert("keep.txt".into(), got["keep.txt"].clone());
    assert_eq!(got, want);
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "wrote through a host symlink"
    );

    // Wipe first: the contents go, the directory itself stays (it may be someone's cwd).
    let inode = fs::metadata(&out).unwrap().ino();
    pair.client.push_dir(&src, "out", true).await.unwrap();
    assert_eq!(snapshot(&out), snapshot(&src));
    assert_eq!(fs::metadata(&out).unwrap().ino(), inode);

    // One file, parents created, mode override, replacing a symlink rather than writing through it.
    let victim = outside.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    fs::create_dir_all(host.path().join("files")).unwrap();
    symlink(&victim, host.path().join("files/run.sh")).unwrap();
    pair.client
        .push_file(&src.join("run.sh"), "files/run.sh", Some(0o700))
        .await
        .unwrap();
    let written = host.path().join("files/run.sh");
    assert!(fs::symlink_metadata(&written).unwrap().is_file());
    assert_eq!(
        fs::read(&written).unwrap(),
        fs::read(src.join("run.sh")).unwrap()
    );
    assert_eq!(fs::metadata(&written).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    let abs = host.path().join("a/b/c/big.bin");
    let stats = pair
        .client
        .push_file(&src.join("src/big.bin"), abs.to_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(stats.bytes, fs::metadata(&abs).unwrap().len());
    assert_eq!(
        fs::read(&abs).unwrap(),
        fs::read(src.join("src/big.bin")).unwrap()
    );

    // A missing local source fails locally, naming it, and nothing is written.
    let err = pair
        .client
        .push_file(&local.path().join("absent"), "files/absent", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
    assert!(!host.path().join("files/absent").exists());
}

#[tokio::test]
async fn closed_resolves_when_the_client_side_goes_away() {
    let host = tempfile::tempdir().unwrap();
    let pair = connect_pair(providers(host.path(), false)).await;
    pair.client.health_check().await.unwrap();
    assert!(!pair.client.is_closed());
    // Killing the serving task drops the client's end of the connection.
    drop(pair.serve);
    tokio::time::timeout(HANG, pair.client.closed())
        .await
        .expect("closed() hangs");
    assert!(pair.client.is_closed());
    let err = pair.client.health_check().await.unwrap_err();
    assert!(matches!(err, AttachError::Unhealthy(_)), "{err}");
}

#[tokio::test]
async fn graceful_shutdown_of_the_serving_side_closes_the_connection() {
    let host = tempfile::tempdir().unwrap();
    let mut engine = start_engine(false).await;
    let stream = TcpStream::connect(engine.addr).await.unwrap();
    let session = dagr_attach::attach(stream, &metadata(), providers(host.path(), false))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(session.serve_until(async move {
        let _ = stopped.await;
    }));
    let client = tokio::time::timeout(HANG, engine.attached.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    client.health_check().await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(HANG, client.closed())
        .await
        .expect("closed() hangs");
    tokio::time::timeout(HANG, serve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn refused_attach_reports_status_and_message() {
    let engine = start_engine(true).await;
    let stream = TcpStream::connect(engine.addr).await.unwrap();
    let host = tempfile::tempdir().unwrap();
    let err = dagr_attach::attach(stream, &metadata(), providers(host.path(), false))
        .await
        .unwrap_err();
    match err {
        AttachError::Refused { status, message } => {
            assert_eq!(status, http::StatusCode::BAD_REQUEST);
            assert_eq!(message, "client c1 already has an attachables connection");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn accept_validates_the_request() {
    let base = || {
        http::Request::get("/sessionAttachables")
            .version(http::Version::HTTP_11)
            .header("upgrade", "x")
            .header(dagr_metadata::EXPOSE_METHOD_HEADER, methods::HEALTH_CHECK)
    };
    let mut ok = base().body(()).unwrap();
    let (response, pending) = dagr_attach::accept(&mut ok).unwrap();
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "x");
    assert_eq!(pending.methods(), [methods::HEALTH_CHECK]);

    let mut post = base().method("POST").body(()).unwrap();
    assert!(
        dagr_attach::accept(&mut post)
            .unwrap_err()
            .to_string()
            .contains("GET")
    );
    let mut h2 = base().version(http::Version::HTTP_2).body(()).unwrap();
    assert!(
        dagr_attach::accept(&mut h2)
            .unwrap_err()
            .to_string()
            .contains("HTTP/1.1")
    );
    let mut no_upgrade = http::Request::get("/sessionAttachables")
        .header(dagr_metadata::EXPOSE_METHOD_HEADER, methods::HEALTH_CHECK)
        .body(())
        .unwrap();
    assert!(
        dagr_attach::accept(&mut no_upgrade)
            .unwrap_err()
            .to_string()
            .contains("Upgrade")
    );
    let mut no_methods = http::Request::get("/sessionAttachables")
        .header("upgrade", "x")
        .body(())
        .unwrap();
    assert!(
        dagr_attach::accept(&mut no_methods)
            .unwrap_err()
            .to_string()
            .contains("announce")
    );
}

#[tokio::test]
async fn engine_close_ends_the_connection_on_both_sides() {
    let host = tempfile::tempdir().unwrap();
    let mut engine = start_engine(false).await;
    let stream = TcpStream::connect(engine.addr).await.unwrap();
    let session = dagr_attach::attach(stream, &metadata(), providers(host.path(), false))
        .await
        .unwrap();
    let serve = tokio::spawn(session.serve());
    let client = tokio::time::timeout(HANG, engine.attached.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    client.health_check().await.unwrap();
    let other = client.clone();
    client.close();
    tokio::time::timeout(HANG, other.closed())
        .await
        .expect("closed() hangs");
    assert!(other.is_closed());
    // The client's serving side ends normally.
    tokio::time::timeout(HANG, serve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(other.health_check().await.is_err());
}

#[tokio::test]
async fn dropping_every_engine_handle_ends_the_client_side() {
    let host = tempfile::tempdir().unwrap();
    let mut engine = start_engine(false).await;
    let stream = TcpStream::connect(engine.addr).await.unwrap();
    let session = dagr_attach::attach(stream, &metadata(), providers(host.path(), false))
        .await
        .unwrap();
    let serve = tokio::spawn(session.serve());
    let client = tokio::time::timeout(HANG, engine.attached.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    client.health_check().await.unwrap();
    drop(client);
    tokio::time::timeout(HANG, serve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Every call's future is `Send` (callers box them as `Send` trait futures or spawn them).
#[allow(dead_code)]
fn calls_are_send(client: &dagr_attach::AttachablesClient, path: &Path, include: &[String]) {
    fn send<T: Send>(_: T) {}
    send(client.health_check());
    send(client.stat("x"));
    send(client.pull_dir("x", include, include, path));
    send(client.pull_file("x", path));
    send(client.push_dir(path, "x", true));
    send(client.push_file(path, "x", None));
    send(client.closed());
    let host = HostProviders::new(path.to_path_buf());
    send(async move {
        let stream = TcpStream::connect("127.0.0.1:1").await.unwrap();
        let session = dagr_attach::attach(stream, &metadata(), host)
            .await
            .unwrap();
        session.serve().await
    });
    send(dagr_attach::accept(&mut http::Request::new(())).map(|(_, pending)| pending.finish()));
}

#[tokio::test]
async fn over_a_thousand_files_and_concurrent_pulls_on_one_connection() {
    // 1,100 files: more packets than one batch holds (2,048), without burdening a loaded disk.
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("many");
    for d in 0..4 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..275 {
            fs::write(dir.join(format!("f{f:04}")), format!("{d}:{f}")).unwrap();
        }
    }
    let pair = connect_pair(providers(host.path(), false)).await;
    let dests: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let pulls = dests
        .iter()
        .map(|dest| pair.client.pull_dir("many", &[], &[], dest.path()));
    let results = futures::future::join_all(pulls).await;
    let want = snapshot(&src);
    assert_eq!(want.len(), 1104);
    for (result, dest) in results.into_iter().zip(&dests) {
        let stats = result.unwrap();
        assert_eq!((stats.files, stats.dirs), (1100, 4));
        assert_eq!(snapshot(dest.path()), want);
    }
}

/// A user terminal driven by the test: what the engine sends arrives on `output`; the test
/// types through the sender it gets back from `sessions`.
#[derive(Debug)]
struct ScriptedTerminal {
    sessions: tokio::sync::mpsc::UnboundedSender<(
        tokio::sync::mpsc::Receiver<TerminalOutput>,
        tokio::sync::mpsc::Sender<TerminalInput>,
    )>,
}

impl TerminalProvider for ScriptedTerminal {
    fn open(
        &self,
        output: tokio::sync::mpsc::Receiver<TerminalOutput>,
    ) -> std::io::Result<tokio::sync::mpsc::Receiver<TerminalInput>> {
        let (input, input_rx) = tokio::sync::mpsc::channel(8);
        input
            .try_send(TerminalInput::Resize {
                cols: 132,
                rows: 43,
            })
            .map_err(std::io::Error::other)?;
        self.sessions
            .send((output, input))
            .map_err(std::io::Error::other)?;
        Ok(input_rx)
    }
}

#[tokio::test]
async fn terminal_sessions_carry_input_output_and_exit_one_at_a_time() {
    let host = tempfile::tempdir().unwrap();
    // Not announced without a provider.
    let plain = connect_pair(providers(host.path(), false)).await;
    let err = plain.client.open_terminal().await.unwrap_err();
    assert!(
        matches!(err, AttachError::NotAnnounced { method } if method == methods::TERMINAL_SESSION),
        "{err}"
    );

    let (sessions, mut opened) = tokio::sync::mpsc::unbounded_channel();
    let mut with_terminal = providers(host.path(), false);
    with_terminal.terminal = Some(std::sync::Arc::new(ScriptedTerminal { sessions }));
    let pair = connect_pair(with_terminal).await;
    assert!(
        pair.client
            .methods()
            .iter()
            .any(|m| m == methods::TERMINAL_SESSION)
    );
    let mut remote = pair.client.open_terminal().await.unwrap();
    assert_eq!(remote.size, (132, 43));
    let (mut user_sees, user_types) = opened.recv().await.unwrap();

    // A second session while the first runs is refused.
    let err = pair.client.open_terminal().await.unwrap_err();
    assert!(err.to_string().contains("already open"), "{err}");

    user_types
        .send(TerminalInput::Data(Bytes::from_static(b"ls\r")))
        .await
        .unwrap();
    user_types
        .send(TerminalInput::Resize { cols: 80, rows: 25 })
        .await
        .unwrap();
    assert_eq!(
        remote.reader.next().await,
        Some(TerminalInput::Data(Bytes::from_static(b"ls\r")))
    );
    assert_eq!(
        remote.reader.next().await,
        Some(TerminalInput::Resize { cols: 80, rows: 25 })
    );
    assert!(remote.writer.output(Bytes::from_static(b"file\r\n")).await);
    remote.writer.exit(3, String::new()).await;
    assert_eq!(
        user_sees.recv().await,
        Some(TerminalOutput::Data(Bytes::from_static(b"file\r\n")))
    );
    assert_eq!(
        user_sees.recv().await,
        Some(TerminalOutput::Exit {
            code: 3,
            error: String::new()
        })
    );
    // The user's side closing ends the engine's reader.
    drop(user_types);
    assert_eq!(remote.reader.next().await, None);

    // Once it is over, a new session can start.
    let second = pair.client.open_terminal().await.unwrap();
    assert_eq!(second.size, (132, 43));
    let (_sees, types) = opened.recv().await.unwrap();
    drop(types);
}

#[tokio::test]
async fn list_dir_lists_in_order_and_fetch_brings_only_what_was_asked() {
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("project");
    make_tree(&src);
    let pair = connect_pair(providers(host.path(), false)).await;
    let exclude = vec!["target".to_owned()];
    let (listing, pending) = pair
        .client
        .list_dir("project", &[], &exclude)
        .await
        .unwrap();
    assert_eq!(listing.root, fs::canonicalize(&src).unwrap());
    assert!(listing.host_id.starts_with("random-"));
    let paths: Vec<String> = listing
        .entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "",
            "README.md",
            "empty",
            "link-abs",
            "link-rel",
            "run.sh",
            "secret.txt",
            "src",
            "src/big.bin",
            "src/dangling",
            "src/lib.rs",
            "src/main.rs",
            "src/nested",
            "src/nested/deep",
            "src/nested/deep/data.txt",
        ]
    );
    let data = paths
        .iter()
        .position(|p| p == "src/nested/deep/data.txt")
        .unwrap();
    let entry = &listing.entries[data];
    let meta = fs::metadata(src.join("src/nested/deep/data.txt")).unwrap();
    assert_eq!(
        (entry.kind, entry.size, entry.ino),
        (EntryKind::File, 9, meta.ino())
    );
    assert_eq!(
        entry.ctime_ns,
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
    );
    // Only that file, and the directories leading to it.
    let dest = tempfile::tempdir().unwrap();
    let stats = pending.fetch(&[data], dest.path()).await.unwrap();
    assert_eq!((stats.files, stats.bytes), (1, 9));
    let written = snapshot(dest.path());
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        [
            "src",
            "src/nested",
            "src/nested/deep",
            "src/nested/deep/data.txt"
        ]
    );
    assert_eq!(
        fs::read(dest.path().join("src/nested/deep/data.txt")).unwrap(),
        b"deep data"
    );
    // Asking for something that is not a file of the listing is refused before anything is sent.
    let (_, pending) = pair
        .client
        .list_dir("project", &[], &exclude)
        .await
        .unwrap();
    let src_dir = paths.iter().position(|p| p == "src").unwrap();
    assert!(pending.fetch(&[src_dir], dest.path()).await.is_err());
    // A listing dropped without a fetch ends the call; the connection is still fine.
    drop(pair.client.list_dir("project", &[], &[]).await.unwrap());
    pair.client.health_check().await.unwrap();
}
