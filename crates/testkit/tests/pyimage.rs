//! The Python image of `dagr_testkit::pyimage`, checked without an engine: its layer is unpacked
//! and chrooted into in a new network namespace (no network at all, as root), where the
//! interpreter must start with its native modules, and the SDK and a hatchling project must
//! install from the wheelhouse alone.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use dagr_testkit::pyimage;

const TARGET_TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Runs `script` with `/bin/sh` chrooted into `root`, in new network and mount namespaces (only
/// loopback, down), with the host's `/dev` and a `/proc`, a clean environment like the image's
/// config, and `wheels` (if any) mounted at `/wheels`.
fn run_offline(root: &Path, wheels: Option<&Path>, script: &str) -> Output {
    let mut setup = format!(
        "mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc",
        root = root.display()
    );
    if let Some(wheels) = wheels {
        std::fs::create_dir_all(root.join("wheels")).expect("mkdir /wheels");
        setup += &format!(
            " && mount --bind -o ro {} {}/wheels",
            wheels.display(),
            root.display()
        );
    }
    Command::new("unshare")
        .args(["--net", "--mount", "--fork", "/bin/sh", "-c"])
        .arg(format!(
            "{setup} && exec chroot {} /usr/bin/env -i \
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
             HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
             /bin/sh -c \"$0\"",
            root.display()
        ))
        .arg(script)
        .output()
        .expect("unshare")
}

fn assert_ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn python_runs_offline_in_the_image() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let image = pyimage::build_python_image(&tmp.path().join("image"));
    eprintln!(
        "built {} ({} bytes of gzip layer) in {:?}",
        image.manifest_digest,
        image.layer_size,
        start.elapsed()
    );
    let root = tmp.path().join("root");
    pyimage::unpack_rootfs(&image.layout, &root);
    for link in ["bin", "lib", "lib64", "sbin"] {
        assert_eq!(
            std::fs::read_link(root.join(link)).expect("usrmerge symlink"),
            Path::new("usr").join(link)
        );
    }
    // (not os: Python 3.11 runs its startup modules frozen, whatever byte code is there)
    let pyc = root.join("usr/lib/python3.11/json/__pycache__/decoder.cpython-311.pyc");
    assert!(pyc.is_file(), "the stdlib byte code is in the image");

    let out = run_offline(
        &root,
        None,
        "set -e; echo shell; ls / >/dev/null; python3 -c '\
import ssl, hashlib, json, sqlite3, ctypes, zlib, bz2, lzma, decimal, uuid, asyncio, socket
import locale, sys, venv, ensurepip, pyexpat
ssl.create_default_context()
hashlib.sha256(b\"\").hexdigest()
sqlite3.connect(\":memory:\").execute(\"select 1\")
ctypes.CDLL(None)
print(sys.executable, sys.version_info[:2], locale.getpreferredencoding(), ssl.OPENSSL_VERSION)
'",
    );
    let stdout = assert_ok(&out, "python3 in the image");
    assert!(
        stdout.contains("shell\n/usr/bin/python3 (3, 11) UTF-8 OpenSSL"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::metadata(&pyc)
            .expect("pyc")
            .modified()
            .expect("mtime"),
        std::time::UNIX_EPOCH,
        "python found the image's byte code stale and wrote it again"
    );
}

#[test]
fn the_sdk_and_a_hatchling_project_install_offline() {
    let start = Instant::now();
    let wheels = pyimage::wheelhouse(TARGET_TMP);
    eprintln!("wheelhouse ready in {:?}", start.elapsed());
    let start = Instant::now();
    let layout = pyimage::python_layout(TARGET_TMP);
    eprintln!("image layout ready in {:?}", start.elapsed());

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    pyimage::unpack_rootfs(&layout, &root);
    // A module as Dagger's Python template makes it: hatchling builds it, the SDK is its
    // dependency.
    let project = root.join("src/proj");
    std::fs::create_dir_all(project.join("src/main")).expect("project dir");
    std::fs::write(
        project.join("pyproject.toml"),
        "[project]\nname = \"main\"\nversion = \"0.0.0\"\ndependencies = [\"dagger-io==0.11.8\"]\n\n\
         [build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n\n\
         [tool.hatch.build.targets.wheel]\npackages = [\"src/main\"]\n",
    )
    .expect("pyproject.toml");
    std::fs::write(project.join("src/main/__init__.py"), "ANSWER = 42\n").expect("module");

    let start = Instant::now();
    let out = run_offline(
        &root,
        Some(&wheels),
        "set -e
export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels
python3 -m venv /opt/venv
export VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
cd /src/proj
pip install --quiet --no-input -e .
pip check
cd / && python -c 'import dagger, dagger.mod.cli, main; print(dagger.__name__, main.ANSWER)'",
    );
    let stdout = assert_ok(&out, "offline installs in the image");
    eprintln!("venv and offline installs in {:?}", start.elapsed());
    assert!(stdout.ends_with("dagger 42\n"), "{stdout}");
}

#[test]
fn the_image_is_pushed_to_the_registry() {
    let registry = dagr_testkit::registry(TARGET_TMP);
    let reference = pyimage::python_image(TARGET_TMP, registry);
    assert_eq!(reference, format!("{}/python:3.11-debian", registry.addr));
    assert_eq!(pyimage::python_image(TARGET_TMP, registry), reference);
    let out = Command::new("skopeo")
        .args(["inspect", "--config", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo inspect");
    let config: serde_json::Value =
        serde_json::from_slice(&assert_ok(&out, "skopeo inspect").into_bytes()).expect("config");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["python3"]));
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8"
        ])
    );
}
