//! [`ScratchRegistry`]: a `docker-registry` of a test's own on a free loopback port, empty,
//! optionally requiring basic auth (htpasswd, bcrypt made by Python's `crypt`), that the test can
//! stop and whose storage it can read and damage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// An htpasswd line (bcrypt, made by Python's `crypt`) letting `user` in with `password`.
pub fn htpasswd_line(user: &str, password: &str) -> Vec<u8> {
    let hash = Command::new("python3")
        .args(["-W", "ignore", "-c"])
        .arg(format!(
            "import crypt; print('{user}:' + crypt.crypt('{password}', crypt.mksalt(crypt.METHOD_BLOWFISH)))"
        ))
        .output()
        .expect("python3");
    assert!(
        hash.status.success(),
        "{}",
        String::from_utf8_lossy(&hash.stderr)
    );
    hash.stdout
}

/// A registry process with its storage in a temp directory; killed on drop.
pub struct ScratchRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl ScratchRegistry {
    /// Starts one; with `auth` it answers only requests with that user and password.
    pub fn start(auth: Option<(&str, &str)>) -> ScratchRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{}", crate::free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  delete:\n    enabled: true\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, htpasswd_line(user, password)).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let mut registry = ScratchRegistry {
            addr,
            child: None,
            dir,
        };
        registry.restart();
        registry
    }

    /// Starts it again after [`ScratchRegistry::stop`], on the same address and storage.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Dies with the thread that started it (the test's) if the test process is killed.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("docker-registry"));
        crate::wait_for_port(&self.addr);
    }

    /// Stops the registry (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The file of every blob it stores.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let root = self.dir.path().join("data/docker/registry/v2/blobs");
        let mut files = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n == "data") {
                    files.push(path);
                }
            }
        }
        files
    }

    /// The file of blob `digest` (`sha256:<hex>`).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Where its storage is.
    pub fn storage(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
