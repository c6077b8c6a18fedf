//! A Python 3.11 base image and a wheelhouse of the Dagger Python SDK, for tests of Python
//! modules with no internet inside containers.
//!
//! A Python module runs in a Python image and installs the SDK and its build backend with pip;
//! tests reach neither Docker Hub nor PyPI from their containers. This module makes both from
//! what the host already has:
//! - [`python_image`]: `ADDR/python:3.11-debian` in the loopback registry of [`crate::registry`],
//!   one layer built from the host's Debian Python (`/usr/bin/python3.11`, never pyenv's): every
//!   file of the [`PACKAGES`] (with the host's byte-compiled stdlib), the shared libraries its
//!   binary and extension modules link, the `C.utf8` locale, the static busybox with its applets
//!   as the shell and tools, and a minimal `/etc`. `/bin`, `/lib`, `/lib64` and `/sbin` are
//!   symlinks into `/usr`, as on the host. The layer is reproducible (entries in byte order,
//!   mtime 0, root-owned), built once per target directory and pushed once per test process.
//! - [`wheelhouse`]: a directory of the wheels of
//!   [`DAGGER_SDK_REQUIREMENTS`](crate::python::DAGGER_SDK_REQUIREMENTS) and of
//!   [`BUILD_REQUIREMENTS`] (setuptools, wheel, hatchling: the build backends pip's build
//!   isolation needs to install a local `pyproject.toml` project), downloaded on the host once.
//!
//! In a container of the image with the wheelhouse mounted at `/wheels`, offline (pip takes
//! `--no-index --find-links /wheels` from `PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels` too):
//! ```text
//! python3 -m venv /opt/venv
//! /opt/venv/bin/pip install --no-index --find-links /wheels -r /wheels/dagr-requirements.txt
//! cd /src/module && /opt/venv/bin/pip install --no-index --find-links /wheels -e .
//! ```
//! The image has no `pip` outside virtualenvs (Debian's system Python is externally managed);
//! `python3 -m venv` installs pip 23.0.1 and setuptools 66.1.1 from `/usr/share/python-wheels`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::image::{Entry, Gzip, ImageSpec};

/// The Debian packages whose files make the image (those not installed are left out, except
/// `python3.11-minimal` and `python3.11-venv`, which must be).
pub const PACKAGES: [&str; 10] = [
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11",
    "python3-minimal",
    "python3",
    "python3.11-venv",
    "python3-venv",
    "python3-pip-whl",
    "python3-setuptools-whl",
];

/// The packages without which the image is useless.
const REQUIRED_PACKAGES: [&str; 2] = ["python3.11-minimal", "python3.11-venv"];

/// The interpreter of the image, at the same path as on the host.
pub const PYTHON: &str = "/usr/bin/python3.11";

/// Where the interpreter's extension modules are; the libraries they link go in the image.
const LIB_DYNLOAD: &str = "/usr/lib/python3.11/lib-dynload";

/// The locale of the image's `LANG` (from Debian's `libc-bin`).
const LOCALE: &str = "/usr/lib/locale/C.utf8";

/// The repository and tag of the image in the registry: `ADDR/python:3.11-debian`.
pub const REPOSITORY_TAG: &str = "python:3.11-debian";

/// The config of the image.
const SPEC: ImageSpec<'static> = ImageSpec {
    architecture: "amd64",
    env: &[
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
    ],
    cmd: &["python3"],
    created_by: "host Debian python3.11 and busybox-static rootfs",
    // ~55 MB of tar: the host's gzip at its default level takes 2 s where flate2 in a test
    // build takes 10, and -9 would save 1%.
    compression: Gzip::Command(6),
};

/// Bumped when the way the rootfs is made changes, so cached layouts are rebuilt.
const FORMAT: &str = "dagr-python-image-1";

/// Build backends for installing local `pyproject.toml` projects offline, pinned (mid-2024, like
/// the SDK's pins) with their dependencies: pip's build isolation installs the project's
/// `build-system.requires` (`hatchling` for Dagger's module template, setuptools and wheel for
/// the rest) from the wheelhouse. `editables` is what older hatchling asks for editable installs.
pub const BUILD_REQUIREMENTS: &str = "\
setuptools==70.1.0
wheel==0.43.0
hatchling==1.25.0
packaging==24.1
pathspec==0.12.1
pluggy==1.5.0
trove-classifiers==2024.5.22
editables==0.5
";

/// The name of the requirements file in the wheelhouse: the SDK's requirements followed by
/// [`BUILD_REQUIREMENTS`], which the wheelhouse satisfies completely.
pub const WHEELHOUSE_REQUIREMENTS: &str = "dagr-requirements.txt";

/// The directory `<target_tmp>/dagr-wheelhouse` holding a wheel (for CPython 3.11 on this host's
/// platform) of every package [`DAGGER_SDK_REQUIREMENTS`](crate::python::DAGGER_SDK_REQUIREMENTS)
/// and [`BUILD_REQUIREMENTS`] need, dependencies included, and their text as
/// [`WHEELHOUSE_REQUIREMENTS`]. Downloaded with the pip of the SDK's test virtualenv
/// ([`crate::python::venv`]) into a scratch directory then renamed, under a lock shared by
/// concurrent test binaries; reused while its requirements match. Needs PyPI the first time;
/// panics with pip's output when the download fails.
pub fn wheelhouse(target_tmp: &str) -> PathBuf {
    let name = "dagr-wheelhouse";
    let dir = Path::new(target_tmp).join(name);
    let requirements = format!(
        "{}\n{BUILD_REQUIREMENTS}",
        crate::python::DAGGER_SDK_REQUIREMENTS.trim_end()
    );
    std::fs::create_dir_all(target_tmp).expect("target tmp dir");
    let lock = lock_file(&Path::new(target_tmp).join(format!(".{name}.lock")));
    if std::fs::read_to_string(dir.join(WHEELHOUSE_REQUIREMENTS)).is_ok_and(|r| r == requirements) {
        return dir;
    }
    let python = crate::python::venv(
        target_tmp,
        "dagger-sdk-0.11.8",
        crate::python::DAGGER_SDK_REQUIREMENTS,
    );
    let scratch = PathBuf::from(format!("{}.building-{}", dir.display(), std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .unwrap_or_else(|e| panic!("create {}: {e}", scratch.display()));
    let requirements_file = scratch.join(WHEELHOUSE_REQUIREMENTS);
    std::fs::write(&requirements_file, &requirements).expect("write the requirements file");
    crate::python::step(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-input",
                "--disable-pip-version-check",
                // Wheels for the image's interpreter, whatever python the venv has.
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--dest",
            ])
            .arg(&scratch)
            .arg("-r")
            .arg(&requirements_file),
        "pip download (the wheelhouse)",
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&scratch, &dir).expect("move the wheelhouse into place");
    drop(lock);
    dir
}

/// The image built by [`build_python_image`].
pub struct PythonImage {
    /// The OCI image layout (`<dir>/oci`), tag [`crate::image::TAG`].
    pub layout: PathBuf,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the uncompressed layer.
    pub diff_id: String,
    /// The size of the gzip layer, in bytes.
    pub layer_size: usize,
}

/// Builds the Python image as an OCI layout at `<dir>/oci` (tag [`crate::image::TAG`]),
/// replacing an earlier one: no cache, no registry (see [`python_image`] for both). Panics
/// saying what to install when `python3.11-minimal`, `python3.11-venv` or `busybox-static` is
/// missing.
pub fn build_python_image(dir: &Path) -> PythonImage {
    write_image(dir, &rootfs().entries)
}

/// The layout of the Python image under `<target_tmp>/dagr-testkit-fixture/python`, rebuilt
/// (about 5 s) when what the host would put in it changed (a stamp holds the digest of the
/// rootfs entries, host files by path, size, mtime and inode; checking it costs about 0.4 s),
/// under a lock shared by concurrent test binaries. Returns the layout directory.
pub fn python_layout(target_tmp: &str) -> PathBuf {
    with_python_layout(target_tmp, Path::to_path_buf)
}

/// `ADDR/python:3.11-debian` (`ADDR` = `registry.addr`): the Python image of this module,
/// built once per target directory ([`python_layout`]) and pushed to `registry` on the first
/// call of the test process (the registry's data lives as long as the process).
pub fn python_image(target_tmp: &str, registry: &crate::RegistryFixture) -> String {
    registry
        .python
        .get_or_init(|| {
            let reference = format!("{}/{REPOSITORY_TAG}", registry.addr);
            with_python_layout(target_tmp, |layout| {
                crate::image::push_layout(layout, &reference, false)
            });
            reference
        })
        .clone()
}

/// Extracts the layers of the single-image OCI layout `layout` (tag [`crate::image::TAG`]) into
/// `dest` (created if missing) with the host's GNU tar, modes, owners, symlinks and mtimes kept
/// (the tar crate would turn the layer's mtime 0 into 1, making the byte code look stale): a
/// rootfs to `chroot` into.
pub fn unpack_rootfs(layout: &Path, dest: &Path) {
    let read_json = |path: PathBuf| -> serde_json::Value {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().expect("a digest");
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index = read_json(layout.join("index.json"));
    let manifest = read_json(blob(&index["manifests"][0]["digest"]));
    std::fs::create_dir_all(dest).unwrap_or_else(|e| panic!("create {}: {e}", dest.display()));
    for layer in manifest["layers"].as_array().expect("layers") {
        let path = blob(&layer["digest"]);
        let out = Command::new("tar")
            .args([
                "--extract",
                "--gzip",
                "--same-permissions",
                "--numeric-owner",
            ])
            .arg("--file")
            .arg(&path)
            .arg("--directory")
            .arg(dest)
            .output()
            .unwrap_or_else(|e| panic!("tar: {e}"));
        assert!(
            out.status.success(),
            "tar --extract of {} into {} failed ({}): {}",
            path.display(),
            dest.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `f` on the cached layout while holding the lock that rebuilds it.
fn with_python_layout<T>(target_tmp: &str, f: impl FnOnce(&Path) -> T) -> T {
    let fixture = Path::new(target_tmp).join("dagr-testkit-fixture");
    std::fs::create_dir_all(&fixture).expect("fixture dir");
    let lock = lock_file(&fixture.join(".lock-python"));
    let dir = fixture.join("python");
    let stamp = dir.join("stamp");
    let layout = dir.join("oci");
    let rootfs = rootfs();
    let fingerprint = rootfs.fingerprint();
    if !(layout.join("index.json").is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint))
    {
        let _ = std::fs::remove_file(&stamp);
        write_image(&dir, &rootfs.entries);
        std::fs::write(&stamp, &fingerprint)
            .unwrap_or_else(|e| panic!("write {}: {e}", stamp.display()));
    }
    drop(rootfs);
    let out = f(&layout);
    drop(lock);
    out
}

/// An exclusive `flock` on `path` (created), released when the file is dropped.
fn lock_file(path: &Path) -> std::fs::File {
    let lock =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    lock
}

fn write_image(dir: &Path, rootfs: &BTreeMap<String, Entry>) -> PythonImage {
    let image = crate::image::one_layer_image(rootfs, &SPEC);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let layout = dir.join("oci");
    crate::image::write_layout(&layout, &image.layout);
    PythonImage {
        layout,
        manifest_digest: crate::image::sha256_digest(&image.manifest),
        diff_id: image.diff_id,
        layer_size: image.layer.len(),
    }
}

/// The entries of the image's layer, and where the files copied from the host come from.
struct Rootfs {
    entries: BTreeMap<String, Entry>,
    /// Image path -> `<host path> <size> <mtime ns> <inode>` of the host file it copies: the
    /// fingerprint hashes this instead of the content (tens of MB, slow to hash in test builds).
    host: BTreeMap<String, String>,
}

impl Rootfs {
    /// Adds a file copied from the host's `source`.
    fn host_file(&mut self, path: String, source: &Path, meta: &std::fs::Metadata, entry: Entry) {
        self.host.insert(
            path.clone(),
            format!(
                "{} {} {}.{:09} {}",
                source.display(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ino()
            ),
        );
        self.entries.insert(path, entry);
    }

    /// The digest of the entries (host files by their metadata) and of the image format: what
    /// the stamp of a cached layout holds.
    fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(FORMAT);
        hash.update(serde_json::to_vec(&SPEC.env).expect("env json"));
        hash.update(serde_json::to_vec(&SPEC.cmd).expect("cmd json"));
        for (path, entry) in &self.entries {
            hash.update(path.as_bytes());
            match entry {
                Entry::Dir(mode) => hash.update(format!("\0d{mode:o}\0")),
                Entry::File(mode, bytes) => {
                    hash.update(format!("\0f{mode:o}:{}\0", bytes.len()));
                    match self.host.get(path) {
                        Some(source) => hash.update(source.as_bytes()),
                        None => hash.update(bytes),
                    }
                }
                Entry::Symlink(target) => hash.update(format!("\0l{target}\0")),
            }
        }
        format!("sha256:{}", hex::encode(hash.finalize()))
    }
}

/// The rootfs of the image, from the host.
fn rootfs() -> Rootfs {
    let mut rootfs = Rootfs {
        entries: BTreeMap::new(),
        host: BTreeMap::new(),
    };
    let entries = &mut rootfs.entries;
    // usrmerge, as on Debian 12: the top-level directories are symlinks into /usr.
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        entries.insert(link.to_owned(), Entry::Symlink(target.to_owned()));
    }
    for dir in [
        "dev",
        "etc",
        "home",
        "proc",
        "run",
        "sys",
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/lib64",
        "usr/local",
        "usr/local/bin",
        "usr/local/lib",
        "usr/sbin",
        "var",
    ] {
        entries.insert(dir.to_owned(), Entry::Dir(0o755));
    }
    entries.insert("tmp".into(), Entry::Dir(0o1777));
    entries.insert("var/tmp".into(), Entry::Dir(0o1777));
    entries.insert("root".into(), Entry::Dir(0o700));
    for (name, text) in crate::image::ETC_FILES {
        entries.insert(name.into(), Entry::File(0o644, text.as_bytes().to_vec()));
    }

    // Every file of the packages, with the byte code Debian compiled for their modules.
    for package in PACKAGES {
        let Some(paths) = package_paths(package) else {
            assert!(
                !REQUIRED_PACKAGES.contains(&package),
                "the Debian package {package} is not installed: apt-get install python3-venv \
                 (the Python test image is made of the host's Debian python3.11)"
            );
            continue;
        };
        for path in paths {
            rootfs.add_host_path(&path, false);
            rootfs.add_byte_code(&path);
        }
    }

    // The shared libraries of the interpreter and its extension modules, with the symlinks
    // they are found by (`/lib64/ld-linux-x86-64.so.2`, `libz.so.1`, ...).
    let mut binaries = vec![PathBuf::from(PYTHON)];
    let mut modules: Vec<PathBuf> = std::fs::read_dir(LIB_DYNLOAD)
        .unwrap_or_else(|e| panic!("{LIB_DYNLOAD}: {e} (apt-get install python3.11-minimal)"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "so"))
        .collect();
    modules.sort();
    binaries.extend(modules);
    for library in crate::linked_libraries(&binaries) {
        rootfs.add_host_path(&library, true);
    }

    // The locale `LANG` names (glibc's built-in C locale is not UTF-8).
    if Path::new(LOCALE).is_dir() {
        rootfs.add_tree(Path::new(LOCALE));
    }

    // busybox for the shell and the usual tools: one symlink per applet where the packages put
    // nothing (the host's `/bin/sh` is dash, which is not in the image).
    let busybox = Path::new(crate::image::BUSYBOX);
    let bytes = crate::image::read_static_busybox(busybox);
    let meta =
        std::fs::metadata(busybox).unwrap_or_else(|e| panic!("{}: {e}", crate::image::BUSYBOX));
    rootfs.host_file(
        "usr/bin/busybox".into(),
        busybox,
        &meta,
        Entry::File(0o755, bytes),
    );
    for applet in crate::image::busybox_applets() {
        // Not `/linuxrc`: only applets in a bin directory.
        if !applet.contains('/') {
            continue;
        }
        if let Some(path) = image_path(&Path::new("/").join(&applet)) {
            add_parents(&mut rootfs.entries, &path);
            rootfs
                .entries
                .entry(path)
                .or_insert_with(|| Entry::Symlink("/bin/busybox".into()));
        }
    }
    rootfs
}

impl Rootfs {
    /// Adds the host's directory, file or symlink at `host` (nothing if it does not exist) with
    /// its permission bits, under [`image_path`]; with `follow`, a symlink's target too,
    /// recursively.
    fn add_host_path(&mut self, host: &Path, follow: bool) {
        let Some(path) = image_path(host) else {
            return;
        };
        let Ok(meta) = std::fs::symlink_metadata(host) else {
            return;
        };
        let mode = meta.mode() & 0o7777;
        add_parents(&mut self.entries, &path);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(host)
                .unwrap_or_else(|e| panic!("readlink {}: {e}", host.display()));
            self.entries
                .insert(path, Entry::Symlink(target.to_string_lossy().into_owned()));
            if follow {
                let next = host.parent().unwrap_or(Path::new("/")).join(&target);
                self.add_host_path(&next, true);
            }
        } else if meta.is_dir() {
            self.entries.insert(path, Entry::Dir(mode));
        } else if meta.is_file() {
            let bytes =
                std::fs::read(host).unwrap_or_else(|e| panic!("read {}: {e}", host.display()));
            self.host_file(path, host, &meta, Entry::File(mode, bytes));
        }
    }

    /// Adds the tree under the host directory `dir` (directories, files and symlinks).
    fn add_tree(&mut self, dir: &Path) {
        self.add_host_path(dir, false);
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        let mut children: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            if std::fs::symlink_metadata(&child).is_ok_and(|m| m.is_dir()) {
                self.add_tree(&child);
            } else {
                self.add_host_path(&child, false);
            }
        }
    }

    /// For a module `source` (`.../x.py`), adds the host's `.../__pycache__/x.cpython-311.pyc`
    /// when it is current, with the source mtime in its header set to 0, the mtime of every
    /// entry of the layer: Python finds it valid and does not compile the stdlib again in every
    /// container (it would, without a word, where the layer is unpacked with other mtimes).
    fn add_byte_code(&mut self, source: &Path) {
        if source.extension().is_none_or(|ext| ext != "py") {
            return;
        }
        let (Some(parent), Some(stem)) = (source.parent(), source.file_stem()) else {
            return;
        };
        let pyc = parent
            .join("__pycache__")
            .join(format!("{}.cpython-311.pyc", stem.to_string_lossy()));
        let (Ok(source_meta), Ok(pyc_meta), Ok(mut bytes)) = (
            std::fs::metadata(source),
            std::fs::metadata(&pyc),
            std::fs::read(&pyc),
        ) else {
            return;
        };
        // PEP 552 header: magic, flags (0: checked against the source's mtime and size),
        // mtime, size.
        let word = |bytes: &[u8], at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if bytes.len() < 16
            || word(&bytes, 4) != 0
            || word(&bytes, 8) != source_meta.mtime() as u32
            || word(&bytes, 12) != source_meta.size() as u32
        {
            return;
        }
        bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
        let Some(path) = image_path(&pyc) else {
            return;
        };
        add_parents(&mut self.entries, &path);
        self.host_file(path, &pyc, &pyc_meta, Entry::File(0o644, bytes));
    }
}

/// The paths `dpkg -L` lists for an installed `package` (`None` when it is not installed).
fn package_paths(package: &str) -> Option<Vec<PathBuf>> {
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .unwrap_or_else(|e| panic!("dpkg-query: {e} (the Python image needs a Debian host)"));
    if !status.status.success() || status.stdout != b"installed" {
        return None;
    }
    let list = Command::new("dpkg")
        .args(["-L", package])
        .output()
        .unwrap_or_else(|e| panic!("dpkg -L {package}: {e}"));
    assert!(list.status.success(), "dpkg -L {package} failed");
    Some(
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|line| line.starts_with('/') && *line != "/.")
            .map(PathBuf::from)
            .collect(),
    )
}

/// Where the host path `host` goes in the image (relative to `/`): its parent directory with
/// symlinks resolved, so `/lib/x86_64-linux-gnu/libz.so.1` lands in `usr/lib/...` like on the
/// usrmerged host, and the image's `/lib` symlink finds it again. `None` for `/` and paths
/// whose parent does not exist.
fn image_path(host: &Path) -> Option<String> {
    let name = host.file_name()?;
    let parent = std::fs::canonicalize(host.parent()?).ok()?;
    let path = parent.join(name);
    let relative = path.strip_prefix("/").ok()?;
    Some(relative.to_str()?.to_owned())
}

/// Adds the directories above `path`, those already there left alone.
fn add_parents(entries: &mut BTreeMap<String, Entry>, path: &str) {
    let mut parent = Path::new(path).parent();
    while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
        entries
            .entry(p.to_string_lossy().into_owned())
            .or_insert(Entry::Dir(0o755));
        parent = p.parent();
    }
}

/// `ADDR/python:3.11-wheels`: [`python_image`] with the [`wheelhouse`] at `/wheels` and
/// `PIP_NO_INDEX=1`, published to the loopback registry through `engine` (dagr itself): the base
/// image of Python modules in tests and benchmarks, with `--python-find-links /wheels` on their
/// engines, so that pip never reaches for the internet.
pub fn module_base_image(target_tmp: &str, engine: &crate::EngineProcess) -> String {
    use serde_json::json;
    let registry = crate::registry(target_tmp);
    let python = python_image(target_tmp, registry);
    let wheels = wheelhouse(target_tmp);
    let target = format!("{}/python:3.11-wheels", registry.addr);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = crate::gql::connect(engine, false).await;
        let dir = crate::gql::query(
            &client,
            format!(
                "{{ host {{ directory(path: {}) {{ id }} }} }}",
                json!(wheels.display().to_string())
            ),
        )
        .await
        .expect("the wheelhouse as a directory");
        let q = format!(
            r#"query($dir: DirectoryID!) {{ container {{ from(address: "{python}") {{
                withDirectory(path: "/wheels", directory: $dir) {{
                withEnvVariable(name: "PIP_NO_INDEX", value: "1") {{
                publish(address: "{target}") }} }} }} }} }}"#
        );
        let answer = client
            .query(json!({ "query": q, "variables": { "dir": dir["host"]["directory"]["id"] } }))
            .await
            .expect("publish sent");
        assert!(
            answer.get("errors").is_none(),
            "publishing the module base image: {answer}"
        );
        client.close().await.expect("close");
    });
    target
}
