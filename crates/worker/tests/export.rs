//! Image export end to end, as root with real runc: the busybox fixture image (built by
//! `dagr_testkit::image` from the host's static busybox, served by a `docker-registry` on 127.0.0.1) pulled by the
//! worker, changed by an exec, built into an OCI image, exported as an `oci-archive` (checked
//! with skopeo and umoci), published to the loopback registry and pulled back; a scratch image
//! of one file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use dagr_snapshot::Digest;
use dagr_solver::{ExecOp, InputRef, MkFileOp, Mount, MountSource, Op, Vertex};
use dagr_worker::ResultMeta;
use dagr_worker::export::{self, ExportError, ImageConfigInput};

mod common;

use common::{Env, fixture, image, platform};

fn image_at(reference: &str) -> Arc<Vertex> {
    Vertex::new(
        Op::Image {
            reference: reference.to_owned(),
            platform: platform(),
        },
        vec![],
    )
    .expect("vertex")
}

fn exec(root: Arc<Vertex>, args: &[&str]) -> Arc<Vertex> {
    Vertex::new(
        Op::Exec(ExecOp {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: BTreeMap::from([("PATH".to_owned(), "/bin:/usr/bin:/sbin".to_owned())]),
            workdir: "/".into(),
            mounts: vec![Mount {
                dest: "/".into(),
                source: MountSource::Input {
                    input: InputRef::main(0),
                    path: String::new(),
                },
                readonly: false,
            }],
            ..Default::default()
        }),
        vec![root],
    )
    .expect("exec vertex")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::piped()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `skopeo inspect` of an image as JSON.
fn inspect(image: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", image]));
    serde_json::from_str(&out).expect("inspect json")
}

/// Copies an `oci-archive` into a fresh OCI layout (as `latest`) and unpacks it with umoci;
/// returns the rootfs.
fn unpack_archive(archive: &Path, tag: Option<&str>, dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    run(Command::new("skopeo").args([
        "copy".to_owned(),
        "--quiet".to_owned(),
        match tag {
            Some(tag) => format!("oci-archive:{}:{tag}", archive.display()),
            None => format!("oci-archive:{}", archive.display()),
        },
        format!("oci:{}:latest", layout.display()),
    ]));
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

fn env_of(inspected: &serde_json::Value) -> Vec<String> {
    inspected["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_with_an_exec_layer_exports_publishes_and_pulls_back() {
    let env = Env::new();
    let solver = env.open();
    let worker = solver.runner().clone();
    let base = solver
        .solve(&image(), "s", &dagr_telemetry::SpanCx::off())
        .await
        .expect("pull");
    let base_meta = ResultMeta::of(&base.result).image.expect("image meta");
    let base_digest: Digest = base_meta.manifest_digest.parse().expect("digest");
    let changed = solver
        .solve(
            &exec(image(), &["sh", "-c", "echo exported > /hello.txt"]),
            "s",
            &dagr_telemetry::SpanCx::off(),
        )
        .await
        .expect("exec");

    let mut config = ImageConfigInput::from_oci_config(&base_meta.config);
    assert_eq!(config.cmd, Some(vec!["/bin/sh".to_owned()]));
    config.env.push("FOO=bar".to_owned());
    config
        .labels
        .insert("org.example.test".to_owned(), "export".to_owned());
    let built = export::build_image(
        &worker,
        changed.result.id(),
        Some(&base_digest),
        config.clone(),
    )
    .await
    .expect("build");
    assert_eq!(built.layer_count, 2);
    assert_eq!(
        built.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    let again = export::build_image(
        &worker,
        changed.result.id(),
        Some(&base_digest),
        config.clone(),
    )
    .await
    .expect("build again");
    assert_eq!(again, built, "same snapshots and config, same image");

    // The base layer blob is reused as it is.
    let manifest: serde_json::Value = serde_json::from_slice(
        &worker
            .content()
            .read_bytes(&built.manifest_digest)
            .await
            .expect("manifest"),
    )
    .expect("json");
    let base_manifest: serde_json::Value = serde_json::from_slice(
        &worker
            .content()
            .read_bytes(&base_digest)
            .await
            .expect("base manifest"),
    )
    .expect("json");
    assert_eq!(
        manifest["layers"][0]["digest"],
        base_manifest["layers"][0]["digest"]
    );

    let tmp = tempfile::tempdir().expect("tmp");
    let archive = tmp.path().join("image.tar");
    let name = "example.test/exported:v1";
    export::export_tarball(&worker, &built.manifest_digest, &archive, Some(name))
        .await
        .expect("export");
    let inspected = inspect(&format!("oci-archive:{}:{name}", archive.display()));
    assert_eq!(
        inspected["Digest"].as_str(),
        Some(built.manifest_digest.to_string().as_str())
    );
    assert_eq!(inspected["Layers"].as_array().expect("Layers").len(), 2);
    let envs = env_of(&inspected);
    assert!(
        envs.iter().any(|e| e.starts_with("PATH=")) && envs.contains(&"FOO=bar".to_owned()),
        "{envs:?}"
    );
    assert_eq!(inspected["Labels"]["org.example.test"], "export");
    assert_eq!(inspected["Architecture"], "amd64");
    // GNU tar reads it too: the layout files and four blobs (manifest, config, two layers).
    let listing = run(Command::new("tar").arg("-tf").arg(&archive));
    let entries: Vec<&str> = listing.lines().collect();
    for expected in ["oci-layout", "index.json", "manifest.json"] {
        assert!(entries.contains(&expected), "{entries:?}");
    }
    let blob_entries = entries
        .iter()
        .filter(|e| e.starts_with("blobs/sha256/") && e.len() > "blobs/sha256/".len())
        .count();
    assert_eq!(blob_entries, 4, "{entries:?}");
    // The same file read the way `docker load` does: manifest.json with the name as RepoTags.
    let as_docker = inspect(&format!("docker-archive:{}:{name}", archive.display()));
    assert_eq!(as_docker["Layers"].as_array().expect("Layers").len(), 2);
    assert_eq!(env_of(&as_docker), envs);

    let rootfs = unpack_archive(&archive, Some(name), tmp.path());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello.txt")).expect("hello.txt"),
        "exported\n"
    );
    assert!(rootfs.join("bin/busybox").is_file(), "base layer unpacked");

    // Exporting again gives the same bytes.
    let again_archive = tmp.path().join("again.tar");
    export::export_tarball(&worker, &built.manifest_digest, &again_archive, Some(name))
        .await
        .expect("export again");
    assert!(
        std::fs::read(&archive).expect("archive") == std::fs::read(&again_archive).expect("again"),
        "archives differ"
    );

    let target = format!(
        "{}/exported:v1",
        fixture().image.split('/').next().expect("registry")
    );
    let pinned = export::publish(&worker, &built.manifest_digest, &target, "s")
        .await
        .expect("publish");
    assert_eq!(pinned, format!("{target}@{}", built.manifest_digest));
    let remote = inspect(&format!("docker://{target}"));
    assert_eq!(
        remote["Digest"].as_str(),
        Some(built.manifest_digest.to_string().as_str())
    );

    // A fresh worker pulls the published image and sees the file.
    let env2 = Env::new();
    let solver2 = env2.open();
    let read = solver2
        .solve(
            &exec(image_at(&target), &["cat", "/hello.txt"]),
            "s",
            &dagr_telemetry::SpanCx::off(),
        )
        .await
        .expect("pull back");
    assert_eq!(
        ResultMeta::of(&read.result).exec.expect("exec").stdout,
        "exported\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_image_is_one_layer() {
    let env = Env::new();
    let solver = env.open();
    let worker = solver.runner().clone();
    let file = Vertex::new(
        Op::MkFile(MkFileOp {
            base: InputRef::main(0),
            path: "/greeting.txt".into(),
            contents: b"hi from scratch".to_vec(),
            mode: 0o644,
            owner: None,
        }),
        vec![Vertex::new(Op::Empty, vec![]).expect("empty")],
    )
    .expect("mkfile");
    let solved = solver
        .solve(&file, "s", &dagr_telemetry::SpanCx::off())
        .await
        .expect("mkfile");
    let config = ImageConfigInput {
        cmd: Some(vec!["/greeting.txt".to_owned()]),
        ..Default::default()
    };
    let built = export::build_image(&worker, solved.result.id(), None, config)
        .await
        .expect("build");
    assert_eq!(built.layer_count, 1);

    let tmp = tempfile::tempdir().expect("tmp");
    let archive = tmp.path().join("scratch.tar");
    export::export_tarball(&worker, &built.manifest_digest, &archive, None)
        .await
        .expect("export");
    let inspected = inspect(&format!("oci-archive:{}", archive.display()));
    assert_eq!(inspected["Layers"].as_array().expect("Layers").len(), 1);
    assert_eq!(inspected["Os"], "linux");
    let as_docker = inspect(&format!("docker-archive:{}", archive.display()));
    assert_eq!(as_docker["Layers"].as_array().expect("Layers").len(), 1);

    let rootfs = unpack_archive(&archive, None, tmp.path());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("greeting.txt")).expect("greeting"),
        "hi from scratch"
    );
    let entries: Vec<_> = std::fs::read_dir(&rootfs)
        .expect("rootfs")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("greeting.txt")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_not_on_the_base_image_is_refused() {
    let env = Env::new();
    let solver = env.open();
    let worker = solver.runner().clone();
    let base = solver
        .solve(&image(), "s", &dagr_telemetry::SpanCx::off())
        .await
        .expect("pull");
    let base_digest: Digest = ResultMeta::of(&base.result)
        .image
        .expect("image meta")
        .manifest_digest
        .parse()
        .expect("digest");
    let file = Vertex::new(
        Op::MkFile(MkFileOp {
            base: InputRef::main(0),
            path: "/x".into(),
            contents: b"x".to_vec(),
            mode: 0o644,
            owner: None,
        }),
        vec![Vertex::new(Op::Empty, vec![]).expect("empty")],
    )
    .expect("mkfile");
    let solved = solver
        .solve(&file, "s", &dagr_telemetry::SpanCx::off())
        .await
        .expect("mkfile");
    let err = export::build_image(
        &worker,
        solved.result.id(),
        Some(&base_digest),
        ImageConfigInput::default(),
    )
    .await
    .expect_err("not on the base");
    assert!(
        matches!(&err, ExportError::NotOnBase { rootfs, .. } if rootfs == solved.result.id()),
        "{err}"
    );
    let missing = export::build_image(
        &worker,
        "no-such-snapshot",
        None,
        ImageConfigInput::default(),
    )
    .await
    .expect_err("missing snapshot");
    assert!(
        matches!(&missing, ExportError::Snapshot { key, .. } if key == "no-such-snapshot"),
        "{missing}"
    );
}
