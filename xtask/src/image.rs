//! `cargo xtask image`: the engine's OCI image, assembled by dagr itself.
//!
//! A root filesystem is staged from this machine's files (Debian's): `dagr-engine`, `dagr` and
//! `dagr-launcher` (debug info stripped), runc, tini, iptables (nft, with its extensions), git
//! with its HTTP helpers and ssh (git sources), the QEMU user emulators that have binfmt handlers
//! here, CA certificates, the static busybox as the shell and tools, every shared library those link
//! (at the same paths, with this machine's `ld.so.cache`), and a minimal `/etc`. Then `dagr`
//! reads that directory as a host directory and makes it a container's root filesystem with
//! `dagr-engine` as its entrypoint, and exports it as an archive (`--output`, which `docker
//! load` reads; `--load` does that and tags it) or publishes it (`--push REF`).
//!
//! The image runs as Dagger's does: privileged, its state (`/var/lib/dagr`) on a volume or a
//! host path, listening on `/var/lib/dagr/engine.sock` (`dagr-engine dial-stdio` in the image
//! connects there: `docker-image://`, `docker-container://`, `kube-pod://`).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// What `cargo xtask image` was asked.
pub struct ImageArgs {
    /// Where `dagr-engine`, `dagr` and `dagr-launcher` are; `None`: build them (release).
    pub bin_dir: Option<PathBuf>,
    pub output: PathBuf,
    pub load: Option<String>,
    pub push: Option<String>,
    pub emulators: bool,
}

/// Where the image's `PATH` looks.
const PATH: &str = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Files of this machine the image needs (those missing are reported).
const HOST_FILES: &[&str] = &[
    "/usr/sbin/runc",
    "/usr/bin/tini-static",
    "/usr/bin/git",
    "/usr/lib/git-core/git-remote-http",
    "/usr/lib/git-core/git-remote-https",
    "/usr/bin/ssh",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ld.so.cache",
];

pub fn build(root: &Path, args: &ImageArgs) -> anyhow::Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            crate::run(
                Command::new(crate::cargo())
                    .args(["build", "--release"])
                    .args(crate::ENGINE_PACKAGES),
            )?;
            crate::target_dir(root).join("release")
        }
    };
    // Beside the archive: `x.tar` is staged in `x.rootfs`.
    let rootfs = std::path::absolute(&args.output)?.with_extension("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)
            .with_context(|| format!("removing {}", rootfs.display()))?;
    }
    stage(&rootfs, &bin_dir, args.emulators)?;
    eprintln!(
        "xtask: staged the image's root filesystem in {}",
        rootfs.display()
    );
    assemble(&bin_dir.join("dagr"), &rootfs, args)
}

/// Copies `from` (symlinks resolved) to `rootfs/<to>`, keeping its mode.
fn copy(rootfs: &Path, from: &Path, to: &str) -> anyhow::Result<PathBuf> {
    let dest = rootfs.join(to.trim_start_matches('/'));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, &dest)
        .with_context(|| format!("copying {} into the image", from.display()))?;
    Ok(dest)
}

fn symlink(rootfs: &Path, target: &str, at: &str) -> anyhow::Result<()> {
    let link = rootfs.join(at.trim_start_matches('/'));
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(target, &link)
        .with_context(|| format!("linking {} in the image", link.display()))
}

/// The shared libraries `files` link (the dynamic loader included), as `ldd` names them;
/// files that are not dynamically linked ELF (static binaries, data) link none.
fn libraries(files: &[PathBuf]) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for file in files {
        let out = Command::new("ldd")
            .arg(file)
            .output()
            .context("running ldd")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || text.contains("statically linked") {
            continue;
        }
        for line in text.lines() {
            if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libs)
}

fn stage(rootfs: &Path, bin_dir: &Path, emulators: bool) -> anyhow::Result<()> {
    let mut linked: Vec<PathBuf> = Vec::new();
    // The engine runs containers with dagr-launcher when it is beside it.
    for name in ["dagr-engine", "dagr", "dagr-launcher"] {
        let from = bin_dir.join(name);
        if !from.is_file() {
            bail!("{} is missing", from.display());
        }
        let dest = copy(rootfs, &from, &format!("/usr/local/bin/{name}"))?;
        // Debug info is most of a debug build; the image does not need it.
        let _ = Command::new("strip")
            .arg("--strip-debug")
            .arg(&dest)
            .status();
        linked.push(dest);
    }
    let missing: Vec<&str> = HOST_FILES
        .iter()
        .copied()
        .filter(|f| !Path::new(f).exists())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the image needs {} (run `cargo xtask prereqs`)",
            missing.join(", ")
        );
    }
    for file in HOST_FILES {
        linked.push(copy(rootfs, Path::new(file), file)?);
    }
    // iptables: Debian's nft variant, its names, and the extensions it loads at run time.
    let xtables = std::fs::canonicalize("/usr/sbin/iptables")
        .context("iptables is missing (run `cargo xtask prereqs`)")?;
    let multi = format!(
        "/usr/sbin/{}",
        xtables
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("xtables-nft-multi")
    );
    linked.push(copy(rootfs, &xtables, &multi)?);
    let multi_name = multi.trim_start_matches("/usr/sbin/").to_owned();
    for name in ["iptables", "iptables-save", "iptables-restore", "ip6tables"] {
        symlink(rootfs, &multi_name, &format!("/usr/sbin/{name}"))?;
    }
    let arch_lib = Path::new("/usr/lib/x86_64-linux-gnu/xtables");
    let arch_lib = if arch_lib.is_dir() {
        arch_lib.to_path_buf()
    } else {
        PathBuf::from("/usr/lib/aarch64-linux-gnu/xtables")
    };
    for entry in std::fs::read_dir(&arch_lib)
        .with_context(|| format!("reading {}", arch_lib.display()))?
        .flatten()
    {
        let path = entry.path();
        let to = path.to_string_lossy().into_owned();
        linked.push(copy(rootfs, &path, &to)?);
    }
    // The QEMU emulators with a handler here, and their handlers (the engine registers them).
    if emulators && let Ok(entries) = std::fs::read_dir("/usr/lib/binfmt.d") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(arch) = name
                .strip_prefix("qemu-")
                .and_then(|n| n.strip_suffix(".conf"))
            else {
                continue;
            };
            let emulator = format!("/usr/bin/qemu-{arch}-static");
            if Path::new(&emulator).exists() {
                copy(rootfs, Path::new(&emulator), &emulator)?;
                copy(rootfs, &entry.path(), &format!("/usr/lib/binfmt.d/{name}"))?;
            }
        }
    }
    // The shell and tools.
    copy(rootfs, Path::new("/bin/busybox"), "/usr/bin/busybox")?;
    let applets = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .context("busybox --list")?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let at = format!("/usr/bin/{applet}");
        if !rootfs.join(at.trim_start_matches('/')).exists()
            && !rootfs.join("usr/sbin").join(applet).exists()
        {
            symlink(rootfs, "busybox", &at)?;
        }
    }
    // The libraries, at the paths the loader looks them up (as on this machine).
    let host_paths: Vec<PathBuf> = linked
        .iter()
        .map(|p| Path::new("/").join(p.strip_prefix(rootfs).unwrap_or(p)))
        .collect();
    for lib in libraries(&linked)? {
        let to = lib.to_string_lossy().into_owned();
        if !host_paths.contains(&lib) {
            copy(rootfs, &lib, &to)?;
        }
    }
    // /bin, /sbin, /lib: as on Debian, into /usr (what is not a directory of its own already).
    for dir in ["bin", "sbin"] {
        symlink(rootfs, &format!("usr/{dir}"), &format!("/{dir}"))?;
    }
    for (path, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        (
            "etc/nsswitch.conf",
            "hosts: files dns\npasswd: files\ngroup: files\n",
        ),
        ("etc/hosts", "127.0.0.1 localhost\n"),
    ] {
        let dest = rootfs.join(path);
        std::fs::create_dir_all(dest.parent().context("etc")?)?;
        std::fs::write(&dest, text)?;
    }
    for dir in ["tmp", "var/lib/dagr", "run", "root", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// Runs `dagr query` with `document` and `vars`; its answer's `data`.
fn dagr_query(
    dagr: &Path,
    document: &str,
    vars: &[(&str, &str)],
) -> anyhow::Result<serde_json::Value> {
    let mut cmd = Command::new(dagr);
    cmd.args(["query", "--progress", "plain"]);
    for (k, v) in vars {
        cmd.arg("--var")
            .arg(format!("{k}={}", serde_json::json!(v)));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", dagr.display()))?;
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("dagr's stdin")?
            .write_all(document.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("dagr query failed ({})", out.status);
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("dagr printed no JSON")?;
    Ok(answer)
}

fn assemble(dagr: &Path, rootfs: &Path, args: &ImageArgs) -> anyhow::Result<()> {
    let rootfs_path = rootfs.to_string_lossy().into_owned();
    let answer = dagr_query(
        dagr,
        "query($path: String!) { host { directory(path: $path) { id } } }",
        &[("path", &rootfs_path)],
    )?;
    let id = answer["host"]["directory"]["id"]
        .as_str()
        .context("no directory id in dagr's answer")?
        .to_owned();
    let container = r#"container {
        withRootfs(directory: $rootfs) {
          withEnvVariable(name: "PATH", value: $path) {
            withEntrypoint(args: ["/usr/local/bin/dagr-engine"]) {
              withLabel(name: "org.opencontainers.image.title", value: "dagr-engine") {"#;
    let output = std::path::absolute(&args.output)?;
    let output_text = output.to_string_lossy().into_owned();
    let answer = dagr_query(
        dagr,
        &format!(
            "query($rootfs: DirectoryID!, $path: String!, $output: String!) {{ {container} export(path: $output) }} }} }} }} }} }}"
        ),
        &[("rootfs", &id), ("path", PATH), ("output", &output_text)],
    )?;
    if answer["container"]["withRootfs"]["withEnvVariable"]["withEntrypoint"]["withLabel"]["export"]
        != serde_json::Value::Bool(true)
    {
        bail!("exporting the image failed: {answer}");
    }
    eprintln!("xtask: wrote the engine image to {}", output.display());
    if let Some(reference) = &args.push {
        let answer = dagr_query(
            dagr,
            &format!(
                "query($rootfs: DirectoryID!, $path: String!, $ref: String!) {{ {container} publish(address: $ref) }} }} }} }} }} }}"
            ),
            &[("rootfs", &id), ("path", PATH), ("ref", reference)],
        )?;
        let published = &answer["container"]["withRootfs"]["withEnvVariable"]["withEntrypoint"]["withLabel"]
            ["publish"];
        eprintln!("xtask: pushed {}", published.as_str().unwrap_or(reference));
    }
    if let Some(tag) = &args.load {
        load(&output, tag)?;
    }
    Ok(())
}

/// `docker load` of the archive, then `docker tag` of the image it loaded.
fn load(archive: &Path, tag: &str) -> anyhow::Result<()> {
    let out = Command::new("docker")
        .arg("load")
        .arg("--input")
        .arg(archive)
        .output()
        .context("starting docker (apt-get install docker.io)")?;
    if !out.status.success() {
        bail!(
            "docker load failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let loaded = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Loaded image ID: ")
                .or_else(|| l.strip_prefix("Loaded image: "))
        })
        .context("docker load named no image")?
        .trim()
        .to_owned();
    crate::run(Command::new("docker").args(["tag", &loaded, tag]))?;
    eprintln!("xtask: loaded the engine image into docker as {tag}");
    Ok(())
}
