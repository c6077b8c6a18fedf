//! The busybox test image, built from the host's static `/bin/busybox` with no registry access.
//!
//! [`busybox_image`] writes a one-layer OCI image into a directory: an OCI image layout (`oci/`,
//! tag `latest`), the same layout as an OCI archive (`busybox-oci.tar`), and the image's blobs as
//! plain files (`layer.tar.gz`, `config.json`, `manifest.json`). The bytes are reproducible: fixed
//! mtimes and owners, entries in byte order, gzip without a name or time; so the manifest digest
//! only changes with the host's busybox binary.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// Where the busybox binary of the image comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The tag of the image in its layout and archive.
pub const TAG: &str = "latest";

/// The image written by [`busybox_image`].
pub struct BusyboxImage {
    /// The directory everything was written to.
    pub dir: PathBuf,
    /// The OCI image layout (`<dir>/oci`), tag [`TAG`].
    pub layout: PathBuf,
    /// The OCI archive (`<dir>/busybox-oci.tar`): a tar of the layout.
    pub archive: PathBuf,
    /// The manifest, config and gzip layer blobs, byte for byte as in the layout.
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    /// `sha256:<hex>` of the uncompressed layer.
    pub diff_id: String,
}

/// One entry of a rootfs layer or of an OCI layout, with its permission bits.
pub(crate) enum Entry {
    /// A directory.
    Dir(u32),
    /// A regular file and its bytes.
    File(u32, Vec<u8>),
    /// A symlink and its target.
    Symlink(String),
}

/// What differs between the one-layer fixture images: their config and layer compression.
pub(crate) struct ImageSpec<'a> {
    /// `amd64`, `arm64`.
    pub architecture: &'a str,
    /// The config's `Env`.
    pub env: &'a [&'a str],
    /// The config's `Cmd`.
    pub cmd: &'a [&'a str],
    /// The `created_by` of the single history entry.
    pub created_by: &'a str,
    /// How the layer is gzipped.
    pub compression: Gzip,
}

/// How a layer is gzipped (without a file name or mtime, so equal input gives equal bytes).
pub(crate) enum Gzip {
    /// In process with flate2 at this level.
    Flate2(flate2::Compression),
    /// By the host's `gzip -n -<level>`: several times faster than flate2 in the unoptimized
    /// test builds, for large layers.
    Command(u32),
}

/// The blobs of a one-layer image and the entries of its OCI layout (tag [`TAG`]).
pub(crate) struct OneLayerImage {
    /// The manifest, config and gzip layer blobs, byte for byte as in the layout.
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    /// `sha256:<hex>` of the uncompressed layer.
    pub diff_id: String,
    /// The layout: `oci-layout`, `index.json` and `blobs/sha256/*`.
    pub layout: BTreeMap<String, Entry>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Builds the image into `dir` (created if missing; earlier contents of the same names are
/// replaced). Panics with a clear message when `/bin/busybox` is missing or not static.
pub fn busybox_image(dir: &Path) -> BusyboxImage {
    busybox_image_of(dir, Path::new(BUSYBOX), "amd64")
}

/// Where `cargo xtask prereqs` puts the arm64 busybox of Debian's `busybox-static:arm64`,
/// relative to the target directory.
pub const ARM64_BUSYBOX: &str = "fixtures/busybox-arm64";

/// The `linux/arm64` busybox image, from the binary at [`ARM64_BUSYBOX`] under `target_dir`.
/// Panics saying how to get it when it is missing.
pub fn busybox_arm64_image(dir: &Path, target_dir: &Path) -> BusyboxImage {
    let binary = target_dir.join(ARM64_BUSYBOX);
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo xtask prereqs` (it extracts Debian's busybox-static:arm64)",
        binary.display()
    );
    busybox_image_of(dir, &binary, "arm64")
}

/// The image of the static busybox `binary` for `architecture` (applets as the host's busybox
/// lists them).
pub fn busybox_image_of(dir: &Path, binary: &Path, architecture: &str) -> BusyboxImage {
    let image = one_layer_image(
        &rootfs(binary),
        &ImageSpec {
            architecture,
            env: &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            cmd: &["/bin/sh"],
            created_by: "busybox-static rootfs",
            compression: Gzip::Flate2(flate2::Compression::best()),
        },
    );
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let layout_dir = dir.join("oci");
    write_layout(&layout_dir, &image.layout);
    let archive = dir.join("busybox-oci.tar");
    for (name, bytes) in [
        (archive.clone(), tar_of(&image.layout)),
        (dir.join("layer.tar.gz"), image.layer.clone()),
        (dir.join("config.json"), image.config.clone()),
        (dir.join("manifest.json"), image.manifest.clone()),
    ] {
        write_file(&name, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", name.display()));
    }
    BusyboxImage {
        dir: dir.to_path_buf(),
        layout: layout_dir,
        archive,
        manifest: image.manifest,
        config: image.config,
        layer: image.layer,
        diff_id: image.diff_id,
    }
}

/// The one-layer image of `rootfs` (a tar of it in key order, gzipped), with the config of
/// `spec`: reproducible bytes, so equal entries give equal digests.
pub(crate) fn one_layer_image(
    rootfs: &BTreeMap<String, Entry>,
    spec: &ImageSpec<'_>,
) -> OneLayerImage {
    let layer_tar = tar_of(rootfs);
    let diff_id = sha256_digest(&layer_tar);
    let layer = match spec.compression {
        Gzip::Flate2(level) => gzip(&layer_tar, level),
        Gzip::Command(level) => gzip_command(&layer_tar, level),
    };
    drop(layer_tar);
    let layer_digest = sha256_digest(&layer);
    let architecture = spec.architecture;
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": spec.env,
            "Cmd": spec.cmd,
            "WorkingDir": "/"
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": spec.created_by }]
    }))
    .expect("config json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(&config),
            "size": config.len()
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer.len()
        }]
    }))
    .expect("manifest json");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&manifest),
            "size": manifest.len(),
            "platform": { "architecture": architecture, "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": TAG }
        }]
    }))
    .expect("index json");

    let mut layout: BTreeMap<String, Entry> = BTreeMap::new();
    layout.insert("blobs".into(), Entry::Dir(0o755));
    layout.insert("blobs/sha256".into(), Entry::Dir(0o755));
    for (digest, blob) in [
        (layer_digest, &layer),
        (sha256_digest(&config), &config),
        (sha256_digest(&manifest), &manifest),
    ] {
        let hex = &digest["sha256:".len()..];
        layout.insert(
            format!("blobs/sha256/{hex}"),
            Entry::File(0o644, blob.clone()),
        );
    }
    layout.insert(
        "oci-layout".into(),
        Entry::File(0o644, br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    layout.insert("index.json".into(), Entry::File(0o644, index));
    OneLayerImage {
        manifest,
        config,
        layer,
        diff_id,
        layout,
    }
}

/// Writes the layout `entries` (directories and files) as the directory `layout_dir`,
/// replacing whatever was there.
pub(crate) fn write_layout(layout_dir: &Path, entries: &BTreeMap<String, Entry>) {
    let _ = std::fs::remove_dir_all(layout_dir);
    for (path, entry) in entries {
        let target = layout_dir.join(path);
        match entry {
            Entry::Dir(_) => std::fs::create_dir_all(&target),
            Entry::File(_, bytes) => write_file(&target, bytes),
            Entry::Symlink(_) => unreachable!("the layout has no symlinks"),
        }
        .unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
    }
}

/// Pushes the image tagged [`TAG`] in the OCI layout `layout` to `reference`
/// (`ADDR/name:tag` on a plain-HTTP registry) with skopeo; `all`: every manifest of an index.
pub(crate) fn push_layout(layout: &Path, reference: &str, all: bool) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    let status = cmd
        .arg(format!("oci:{}:{TAG}", layout.display()))
        .arg(format!("docker://{reference}"))
        .status()
        .unwrap_or_else(|e| panic!("skopeo: {e}"));
    assert!(
        status.success(),
        "skopeo copy of {} to {reference} failed",
        layout.display()
    );
}

/// An OCI layout at `dir` (tag [`TAG`]) whose index lists the manifests of `images` (each with
/// its config's platform): a multi-platform image.
pub fn multi_platform_layout(dir: &Path, images: &[&BusyboxImage]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("create {}: {e}", blobs.display()));
    let mut manifests = Vec::new();
    for image in images {
        for blob in [&image.layer, &image.config, &image.manifest] {
            let hex = &sha256_digest(blob)["sha256:".len()..];
            write_file(&blobs.join(hex), blob).expect("write blob");
        }
        let config: serde_json::Value = serde_json::from_slice(&image.config).expect("config");
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&image.manifest),
            "size": image.manifest.len(),
            "platform": { "architecture": config["architecture"], "os": config["os"] },
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let index_bytes = serde_json::to_vec(&index).expect("index json");
    write_file(
        &blobs.join(&sha256_digest(&index_bytes)["sha256:".len()..]),
        &index_bytes,
    )
    .expect("write index blob");
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256_digest(&index_bytes),
            "size": index_bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": TAG }
        }]
    });
    write_file(
        &dir.join("index.json"),
        &serde_json::to_vec(&top).expect("json"),
    )
    .expect("index");
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("layout");
    dir.to_path_buf()
}

/// Writes through a temporary name then renames, so a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The rootfs: busybox, one absolute symlink per applet (as `busybox --install -s` makes them),
/// the usual directories and a minimal `/etc`.
fn rootfs(binary_path: &Path) -> BTreeMap<String, Entry> {
    let binary = read_static_busybox(binary_path);
    let list = busybox_applets();

    let mut entries = BTreeMap::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "var", "run",
    ] {
        entries.insert(dir.to_owned(), Entry::Dir(0o755));
    }
    entries.insert("tmp".into(), Entry::Dir(0o1777));
    entries.insert("root".into(), Entry::Dir(0o700));
    for applet in &list {
        let applet = applet.as_str();
        let mut parent = Path::new(applet).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir(0o755));
            parent = p.parent();
        }
        entries.insert(applet.to_owned(), Entry::Symlink("/bin/busybox".into()));
    }
    entries.insert("bin/busybox".into(), Entry::File(0o755, binary));
    for (name, text) in ETC_FILES {
        entries.insert(name.into(), Entry::File(0o644, text.as_bytes().to_vec()));
    }
    entries
}

/// The minimal `/etc` of the fixture images (mode 0644): root and nobody, files-then-DNS name
/// lookups, empty hosts, resolv.conf and hostname for the engine to fill or bind-mount.
pub(crate) const ETC_FILES: [(&str, &str); 6] = [
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ("etc/nsswitch.conf", "hosts: files dns\n"),
    ("etc/hosts", ""),
    ("etc/resolv.conf", ""),
    ("etc/hostname", ""),
];

/// The bytes of the static busybox at `binary_path`; panics saying what to install when it is
/// missing or dynamically linked.
pub(crate) fn read_static_busybox(binary_path: &Path) -> Vec<u8> {
    let binary = std::fs::read(binary_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (apt-get install busybox-static)",
            binary_path.display()
        )
    });
    let ldd = Command::new("ldd").arg(binary_path).output();
    assert!(
        ldd.is_err() || ldd.is_ok_and(|o| !o.status.success()),
        "{} is dynamically linked: install busybox-static",
        binary_path.display()
    );
    binary
}

/// The paths of the host busybox's applets relative to `/` (`busybox --list-full`, e.g.
/// `bin/sh`, `usr/bin/env`), busybox itself left out.
pub(crate) fn busybox_applets() -> Vec<String> {
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .unwrap_or_else(|e| panic!("{BUSYBOX} --list-full: {e}"));
    assert!(list.status.success(), "{BUSYBOX} --list-full failed");
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|applet| applet.trim().trim_start_matches('/').to_owned())
        .filter(|applet| !applet.is_empty() && applet != "bin/busybox")
        .collect()
}

/// A ustar archive of `entries` in key order, owned by 0:0 with mtime 0.
pub(crate) fn tar_of(entries: &BTreeMap<String, Entry>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let (kind, mode, data): (tar::EntryType, u32, &[u8]) = match entry {
            Entry::Dir(mode) => (tar::EntryType::Directory, *mode, &[]),
            Entry::File(mode, bytes) => (tar::EntryType::Regular, *mode, bytes),
            Entry::Symlink(target) => {
                header
                    .set_link_name(target)
                    .unwrap_or_else(|e| panic!("link name of {path}: {e}"));
                (tar::EntryType::Symlink, 0o777, &[])
            }
        };
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        let name = match entry {
            Entry::Dir(_) => format!("{path}/"),
            _ => path.clone(),
        };
        builder
            .append_data(&mut header, name, data)
            .unwrap_or_else(|e| panic!("tar entry {path}: {e}"));
    }
    builder.into_inner().expect("finish tar")
}

/// gzip without a file name or mtime, so equal input gives equal bytes.
fn gzip(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new().mtime(0).write(Vec::new(), level);
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// `gzip -n -<level>` of `bytes` by the host's gzip (same bytes for the same gzip version).
fn gzip_command(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-n", &format!("-{level}"), "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("gzip: {e}"));
    let mut stdin = child.stdin.take().expect("gzip stdin");
    let out = std::thread::scope(|scope| {
        scope.spawn(move || stdin.write_all(bytes).expect("write to gzip"));
        child.wait_with_output().expect("gzip output")
    });
    assert!(out.status.success(), "gzip failed ({})", out.status);
    out.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_complete() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let first = busybox_image(a.path());
        let second = busybox_image(b.path());
        assert_eq!(first.manifest, second.manifest);
        assert_eq!(
            std::fs::read(&first.archive).expect("archive"),
            std::fs::read(&second.archive).expect("archive")
        );

        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&first.layer[..]));
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            if path == "bin/sh" {
                assert_eq!(
                    entry.link_name().expect("link").as_deref(),
                    Some(Path::new("/bin/busybox"))
                );
            }
            names.push(path);
        }
        for want in ["bin/busybox", "bin/sh", "etc/passwd", "tmp/", "root/"] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries in byte order");

        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(first.layout.join("index.json")).expect("index"))
                .expect("index json");
        assert_eq!(
            index["manifests"][0]["digest"],
            sha256_digest(&first.manifest).as_str()
        );
        let blob = first
            .layout
            .join("blobs/sha256")
            .join(&sha256_digest(&first.layer)["sha256:".len()..]);
        assert_eq!(std::fs::read(blob).expect("layer blob"), first.layer);
    }
}
