//! Git fixtures: [`GitServer`] holds bare repositories in a temp dir and serves them with
//! `git daemon` (`git://127.0.0.1:PORT/NAME`) and with `git http-backend` behind a small
//! HTTP/1.1 server (`http://127.0.0.1:PORT/NAME`), which can require a token. [`GitServer::commit`]
//! writes files and commits them on a branch; [`GitServer::tag`] tags a commit.
//!
//! Both servers listen on 127.0.0.1 only and die with the test process.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::{free_port, spawn_for_process_lifetime, wait_for_port};

/// Bare repositories served over `git://` and smart HTTP.
pub struct GitServer {
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT` of `git daemon`.
    pub daemon_addr: String,
    /// `127.0.0.1:PORT` of the HTTP server.
    pub http_addr: String,
    /// Requests the HTTP server answered, by path and query (`/repo.git/info/refs?...`).
    http_requests: Arc<Mutex<Vec<String>>>,
    /// `git daemon --verbose`'s log (one line per request).
    daemon_log: PathBuf,
    daemon_pid: u32,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon this fixture started.
        unsafe {
            libc::kill(self.daemon_pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

impl GitServer {
    /// Starts both servers; the HTTP one requires `Authorization: Basic
    /// base64(x-access-token:TOKEN)` when `token` is given.
    pub fn start(token: Option<&str>) -> GitServer {
        let dir = tempfile::tempdir().expect("git server dir");
        let repos = dir.path().join("repos");
        std::fs::create_dir_all(&repos).expect("repos dir");
        let daemon_port = free_port();
        let daemon_log = dir.path().join("daemon.log");
        let log = std::fs::File::create(&daemon_log).expect("daemon log");
        let mut daemon = Command::new("git");
        daemon
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--verbose")
            .arg(format!("--base-path={}", repos.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={daemon_port}"))
            .arg(&repos)
            .stdout(Stdio::null())
            .stderr(log);
        let daemon_pid = spawn_for_process_lifetime(daemon);
        let daemon_addr = format!("127.0.0.1:{daemon_port}");
        wait_for_port(&daemon_addr);

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind git http");
        let http_addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let expected = token.map(|t| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{t}"))
            )
        });
        let served = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let repos = repos.clone();
                let expected = expected.clone();
                let served = served.clone();
                std::thread::spawn(move || {
                    let _ = serve_cgi(stream, &repos, expected.as_deref(), &served);
                });
            }
        });
        GitServer {
            dir,
            daemon_addr,
            http_addr,
            http_requests: requests,
            daemon_log,
            daemon_pid,
        }
    }

    fn repos(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    /// Where the bare repository `name` lives.
    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.repos().join(name)
    }

    /// Creates the bare repository `name` (e.g. `repo.git`) whose HEAD is `main`.
    pub fn create(&self, name: &str) {
        let path = self.repos().join(name);
        git(
            &["init", "-q", "--bare", "--initial-branch=main"],
            None,
            Some(&path),
        );
        // Protocol v2 servers let clients fetch any commit; say it for older defaults too.
        git(
            &["config", "uploadpack.allowReachableSHA1InWant", "true"],
            Some(&path),
            None,
        );
    }

    /// `git://127.0.0.1:PORT/NAME`.
    pub fn daemon_url(&self, name: &str) -> String {
        format!("git://{}/{name}", self.daemon_addr)
    }

    /// `http://127.0.0.1:PORT/NAME`.
    pub fn http_url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.http_addr)
    }

    /// Commits `files` (path, contents) on `branch` of repository `name` (on top of the branch
    /// when it exists) and returns the commit hash.
    pub fn commit(
        &self,
        name: &str,
        branch: &str,
        files: &[(&str, &str)],
        message: &str,
    ) -> String {
        let repo = self.repos().join(name);
        let work = tempfile::tempdir().expect("work dir");
        let w = work.path();
        git(&["init", "-q", "--initial-branch=work"], None, Some(w));
        let exists = Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ])
            .stdout(Stdio::null())
            .status()
            .expect("git rev-parse")
            .success();
        if exists {
            git(
                &["fetch", "-q", repo.to_str().expect("utf-8"), branch],
                Some(&w.join(".git")),
                Some(w),
            );
            git(
                &["reset", "-q", "--hard", "FETCH_HEAD"],
                Some(&w.join(".git")),
                Some(w),
            );
        }
        for (path, contents) in files {
            let target = w.join(path);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::write(&target, contents).expect("write");
        }
        git(&["add", "-A"], Some(&w.join(".git")), Some(w));
        git(
            &[
                "-c",
                "user.name=dagr",
                "-c",
                "user.email=dagr@example.invalid",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                message,
            ],
            Some(&w.join(".git")),
            Some(w),
        );
        git(
            &[
                "push",
                "-q",
                "-f",
                repo.to_str().expect("utf-8"),
                &format!("HEAD:refs/heads/{branch}"),
            ],
            Some(&w.join(".git")),
            Some(w),
        );
        rev_parse(&repo, &format!("refs/heads/{branch}"))
    }

    /// Tags `commit` as `tag` (annotated when `message` is given) in repository `name`.
    pub fn tag(&self, name: &str, tag: &str, commit: &str, message: Option<&str>) {
        let repo = self.repos().join(name);
        let mut args = vec![
            "-c",
            "user.name=dagr",
            "-c",
            "user.email=dagr@example.invalid",
            "tag",
            "-f",
        ];
        if let Some(m) = message {
            args.extend(["-a", "-m", m]);
        }
        args.extend([tag, commit]);
        git(&args, Some(&repo), None);
    }

    /// The commit `reference` names in repository `name`.
    pub fn rev_parse(&self, name: &str, reference: &str) -> String {
        rev_parse(&self.repos().join(name), reference)
    }

    /// HTTP requests answered so far (path and query).
    pub fn http_requests(&self) -> Vec<String> {
        self.http_requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// `upload-pack` requests `git daemon` served so far (each `ls-remote` or fetch is one).
    pub fn daemon_upload_packs(&self) -> usize {
        std::fs::read_to_string(&self.daemon_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Request upload-pack"))
            .count()
    }
}

fn rev_parse(repo: &Path, reference: &str) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["rev-parse", &format!("{reference}^{{commit}}")])
        .output()
        .expect("git rev-parse");
    assert!(out.status.success(), "rev-parse {reference}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs git with `GIT_DIR` (when given) in `cwd` (when given), panicking on failure.
fn git(args: &[&str], git_dir: Option<&Path>, cwd: Option<&Path>) {
    let mut command = Command::new("git");
    command.args(args);
    if let Some(dir) = git_dir {
        command.env("GIT_DIR", dir);
    }
    match cwd {
        Some(dir) if args.first() == Some(&"init") => {
            command.arg(dir);
        }
        Some(dir) => {
            command.current_dir(dir);
        }
        None => {}
    }
    let out = command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves one HTTP/1.1 request with `git http-backend` (CGI) and closes the connection.
fn serve_cgi(
    stream: TcpStream,
    repos: &Path,
    token: Option<&str>,
    served: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let body = read_body(&mut reader, &headers)?;
    let mut out = stream;
    if let Some(token) = token
        && headers.get("authorization").map(String::as_str) != Some(token)
    {
        out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    if let Ok(mut r) = served.lock() {
        r.push(target.clone());
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_PROJECT_ROOT", repos)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(v) = headers.get(header) {
            cgi.env(var, v);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut output)?;
    let _ = writer.join();
    child.wait()?;
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, rest) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&output[..i]).into_owned(),
            &output[i + n..],
        ),
        None => (String::new(), &output[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response_headers = String::new();
    for h in head.lines() {
        if let Some(s) = h.strip_prefix("Status:") {
            status = s.trim().to_owned();
        } else if !h.trim().is_empty() {
            response_headers.push_str(h.trim());
            response_headers.push_str("\r\n");
        }
    }
    write!(
        out,
        "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        rest.len()
    )?;
    out.write_all(rest)?;
    out.flush()
}

/// A request body of `Content-Length` bytes or `chunked` encoding.
fn read_body(
    reader: &mut BufReader<TcpStream>,
    headers: &HashMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0; n];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = headers.get("content-length").and_then(|v| v.parse().ok()) {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

/// An `sshd` on 127.0.0.1 that lets `root` in with one key, and an `ssh-agent` holding that
/// key: git over SSH with the client's agent. Both die with the fixture.
pub struct SshServer {
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The agent's socket (`SSH_AUTH_SOCK`).
    pub agent_socket: PathBuf,
    /// A `known_hosts` line for the server's host key.
    pub known_hosts: String,
    pids: Vec<u32>,
}

impl SshServer {
    pub fn start() -> SshServer {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is missing: run `cargo xtask prereqs` (openssh-server)"
        );
        let dir = tempfile::tempdir().expect("sshd dir");
        let d = dir.path();
        for key in ["host_key", "user_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(status.success(), "ssh-keygen {key}");
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("authorized");
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nPidFile {pid}\nPermitUserEnvironment PATH\n",
                host = d.join("host_key").display(),
                auth = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .expect("sshd config");
        let mut sshd = Command::new("/usr/sbin/sshd");
        sshd.args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let sshd_pid = spawn_for_process_lifetime(sshd);
        wait_for_port(&addr);
        let agent_socket = d.join("agent.sock");
        let mut agent = Command::new("ssh-agent");
        agent
            .arg("-D")
            .arg("-a")
            .arg(&agent_socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let agent_pid = spawn_for_process_lifetime(agent);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !agent_socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "ssh-agent did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let status = Command::new("ssh-add")
            .arg("-q")
            .arg(d.join("user_key"))
            .env("SSH_AUTH_SOCK", &agent_socket)
            .status()
            .expect("ssh-add");
        assert!(status.success(), "ssh-add");
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let mut fields = host_pub.split_whitespace();
        let known_hosts = format!(
            "[127.0.0.1]:{port} {} {}\n",
            fields.next().expect("key type"),
            fields.next().expect("key")
        );
        SshServer {
            dir,
            addr,
            agent_socket,
            known_hosts,
            pids: vec![sshd_pid, agent_pid],
        }
    }

    /// `ssh://root@127.0.0.1:PORT/<repo>` for the repository `name` of `server`.
    pub fn url(&self, server: &GitServer, name: &str) -> String {
        format!(
            "ssh://root@{}{}",
            self.addr,
            server.repo_path(name).display()
        )
    }

    /// Sessions of the key get `path` as their `PATH` (for commands the test built, such as
    /// `dagr-engine`).
    pub fn set_session_path(&self, path: &str) {
        let d = self.dir.path();
        let key = std::fs::read_to_string(d.join("user_key.pub")).expect("user key");
        std::fs::write(
            d.join("authorized_keys"),
            format!("environment=\"PATH={path}\" {key}"),
        )
        .expect("authorized_keys");
    }

    /// Where the fixture keeps its keys and config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        for pid in &self.pids {
            // SAFETY: kill(2) on processes this fixture started.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
}
