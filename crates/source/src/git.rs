//! Git repositories through the `git` binary.
//!
//! [`GitRemote::new`] accepts `https://`, `http://`, `git://`, `ssh://` and scp-like
//! `user@host:path` URLs and nothing else (no local paths, no `file://`, no `ext::`), and refuses
//! passwords in URLs: credentials are secrets and belong in [`GitCredentials`].
//!
//! Every `git` runs with a cleared environment (only `PATH`), no system or global config, no
//! prompts, and `GIT_ALLOW_PROTOCOL` limited to the accepted transports. Credentials reach it as
//! `GIT_CONFIG_*` environment entries, which other users cannot read (unlike arguments), and every
//! error text has them replaced by `***`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;

/// Failures talking to a git remote or checking a commit out.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "git url {url:?} is not supported: use https://, http://, git://, ssh:// or user@host:path"
    )]
    UnsupportedUrl { url: String },
    #[error(
        "git url {url:?} carries a password: pass credentials with withAuthToken or withAuthHeader"
    )]
    PasswordInUrl { url: String },
    #[error("git ref {reference:?} not found in {url}")]
    UnknownRef { url: String, reference: String },
    #[error("git ref {reference:?} of {url} moved to another commit while it was fetched")]
    RefMoved { url: String, reference: String },
    #[error("git {action} of {url} failed: {message}")]
    Command {
        action: &'static str,
        url: String,
        message: String,
    },
    #[error("running {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git workspace {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// HTTP credentials for a remote (plaintexts of secrets).
#[derive(Clone)]
pub enum GitCredentials {
    /// A token, sent as basic auth with the user `x-access-token` (as BuildKit does).
    Token(String),
    /// A whole `Authorization` header value (`Bearer ...`, `Basic ...`).
    Header(String),
}

impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GitCredentials::Token(_) => "Token(***)",
            GitCredentials::Header(_) => "Header(***)",
        })
    }
}

impl GitCredentials {
    fn header(&self) -> String {
        match self {
            GitCredentials::Token(token) => format!(
                "Authorization: Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
            ),
            GitCredentials::Header(value) => format!("Authorization: {value}"),
        }
    }

    /// Texts that must never appear in an error.
    fn secrets(&self) -> Vec<String> {
        let header = self.header();
        let value = header.trim_start_matches("Authorization: ").to_owned();
        let (GitCredentials::Token(raw) | GitCredentials::Header(raw)) = self;
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut out = vec![header, value, raw.clone(), encoded];
        out.retain(|s| !s.is_empty());
        // Longest first, so a secret containing another is replaced whole.
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }
}

/// SSH settings of a remote.
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    /// An ssh-agent socket on this machine (the client's agent, relayed).
    pub auth_socket: Option<PathBuf>,
    /// `known_hosts` lines; empty accepts the server's key (as BuildKit does without them).
    pub known_hosts: String,
}

/// A repository URL and how to authenticate with it.
#[derive(Debug, Clone)]
pub struct GitRemote {
    url: String,
    pub credentials: Option<GitCredentials>,
    pub ssh: SshSettings,
    /// Host names that reach the given addresses (services of a session, unknown to DNS).
    pub hosts: HashMap<String, IpAddr>,
}

impl GitRemote {
    /// Checks the URL's form (see the module docs); `host.name/path` without a scheme means
    /// `https://host.name/path`, as in BuildKit.
    pub fn new(url: &str) -> Result<GitRemote, GitError> {
        let url = match url.split_once('/') {
            Some((host, _))
                if !url.contains(':')
                    && host.contains('.')
                    && host.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
            {
                format!("https://{url}")
            }
            _ => url.to_owned(),
        };
        check_url(&url)?;
        Ok(GitRemote {
            url,
            credentials: None,
            ssh: SshSettings::default(),
            hosts: HashMap::new(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL's host and port (the scheme's default when none is written).
    fn host_port(&self) -> Option<(String, u16)> {
        let (scheme, rest) = match self.url.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            // scp-like: `[user@]host:path`.
            None => {
                let host = self.url.split(':').next()?;
                let host = host.rsplit('@').next()?;
                return Some((host.to_ascii_lowercase(), 22));
            }
        };
        let authority = rest.split('/').next()?;
        let authority = authority.rsplit('@').next()?;
        let default = match scheme {
            "https" => 443,
            "http" => 80,
            "git" => 9418,
            _ => 22,
        };
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                Some((host.to_ascii_lowercase(), port.parse().ok()?))
            }
            _ => Some((authority.to_ascii_lowercase(), default)),
        }
    }

    /// The URL to connect with: for `git://` and SSH, a host of [`GitRemote::hosts`] replaced
    /// by its address (HTTP keeps the name, for TLS and virtual hosts, and gets
    /// `http.curloptResolve` instead).
    fn connect_url(&self) -> String {
        let Some((host, _)) = self.host_port() else {
            return self.url.clone();
        };
        match self.hosts.get(&host) {
            Some(ip) if !self.url.starts_with("http") => {
                self.url.replacen(&host, &ip.to_string(), 1)
            }
            _ => self.url.clone(),
        }
    }

    /// `http.curloptResolve` entries (`host:port:address`) for HTTP(S) remotes.
    fn curl_resolve(&self) -> Option<String> {
        if !self.url.starts_with("http") {
            return None;
        }
        let (host, port) = self.host_port()?;
        self.hosts
            .get(&host)
            .map(|ip| format!("{host}:{port}:{ip}"))
    }

    /// Replaces every credential in `text` by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        if let Some(credentials) = &self.credentials {
            for secret in credentials.secrets() {
                out = out.replace(&secret, "***");
            }
        }
        out
    }
}

fn check_url(url: &str) -> Result<(), GitError> {
    let unsupported = || GitError::UnsupportedUrl {
        url: url.to_owned(),
    };
    if url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(unsupported());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "git" | "ssh") {
            return Err(unsupported());
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(unsupported());
        }
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(GitError::PasswordInUrl {
                url: url.to_owned(),
            });
        }
        return Ok(());
    }
    // scp-like: `[user@]host:path`, where the host has no `/` before the colon.
    match url.split_once(':') {
        Some((host, path))
            if !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_@[]".contains(&b))
                && !path.is_empty()
                && !path.starts_with(':') =>
        {
            Ok(())
        }
        _ => Err(unsupported()),
    }
}

/// Whether `text` is a full commit hash (SHA-1 or SHA-256).
pub fn is_commit_hash(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs the `git` binary.
#[derive(Debug, Clone)]
pub struct Git {
    binary: PathBuf,
}

impl Default for Git {
    fn default() -> Self {
        Git::new("git")
    }
}

impl Git {
    pub fn new(binary: impl Into<PathBuf>) -> Git {
        Git {
            binary: binary.into(),
        }
    }

    /// The commit `reference` names on the remote: a full commit hash is returned as is;
    /// `HEAD`, a full ref (`refs/...`), a branch or a tag (in that order of preference; an
    /// annotated tag gives the commit it points to) cost one `ls-remote` round trip.
    pub async fn resolve(&self, remote: &GitRemote, reference: &str) -> Result<String, GitError> {
        if is_commit_hash(reference) {
            return Ok(reference.to_ascii_lowercase());
        }
        let candidates: Vec<String> = if reference == "HEAD" || reference.starts_with("refs/") {
            vec![reference.to_owned()]
        } else {
            vec![
                format!("refs/heads/{reference}"),
                format!("refs/tags/{reference}"),
            ]
        };
        let home = scratch_home().await?;
        let mut args = vec![
            "ls-remote".to_owned(),
            "--".to_owned(),
            remote.connect_url(),
        ];
        for candidate in &candidates {
            // Patterns match whole names: the peeled line of an annotated tag needs its own.
            args.push(candidate.clone());
            args.push(format!("{candidate}^{{}}"));
        }
        let listing = self
            .run(remote, home.path(), None, "ls-remote", &args)
            .await?;
        pick_ref(&listing, &candidates).ok_or_else(|| GitError::UnknownRef {
            url: remote.url.clone(),
            reference: reference.to_owned(),
        })
    }

    /// Fetches `commit` (which `reference` resolved to) with depth 1 into the empty directory
    /// `dest` and checks it out there. The `.git` directory is removed unless `keep_git_dir`;
    /// when kept, its `origin` is the remote's URL.
    pub async fn checkout(
        &self,
        remote: &GitRemote,
        reference: &str,
        commit: &str,
        dest: &Path,
        keep_git_dir: bool,
    ) -> Result<(), GitError> {
        let home = scratch_home().await?;
        let home = home.path();
        let dest_str = dest.to_string_lossy().into_owned();
        let git_dir = dest.join(".git");
        let run = |action: &'static str, args: Vec<String>| {
            let git_dir = git_dir.clone();
            async move { self.run(remote, home, Some(&git_dir), action, &args).await }
        };
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // Without GIT_DIR: `init` would record a work tree relative to it.
        let init = s(&[
            "init",
            "-q",
            "--template=",
            "--initial-branch=dagr",
            &dest_str,
        ]);
        self.run(remote, home, None, "init", &init).await?;
        run(
            "remote",
            s(&["remote", "add", "origin", "--", remote.url.as_str()]),
        )
        .await?;
        // By commit first (protocol v2 servers allow it); servers that refuse unadvertised
        // objects get the ref instead, which must still point at the commit.
        let url = remote.connect_url();
        let by_commit = run(
            "fetch",
            s(&["fetch", "-q", "--depth=1", "--no-tags", &url, commit]),
        )
        .await;
        if let Err(first) = by_commit {
            if is_commit_hash(reference) {
                return Err(first);
            }
            run(
                "fetch",
                s(&["fetch", "-q", "--depth=1", "--no-tags", &url, reference]),
            )
            .await?;
            let fetched = run("rev-parse", s(&["rev-parse", "FETCH_HEAD^{commit}"])).await?;
            if !fetched.trim().eq_ignore_ascii_case(commit) {
                return Err(GitError::RefMoved {
                    url: remote.url.clone(),
                    reference: reference.to_owned(),
                });
            }
        }
        let work_tree = format!("--work-tree={dest_str}");
        run(
            "checkout",
            vec![
                work_tree,
                "checkout".to_owned(),
                "-q".to_owned(),
                "--detach".to_owned(),
                commit.to_owned(),
            ],
        )
        .await?;
        if !keep_git_dir {
            tokio::fs::remove_dir_all(&git_dir)
                .await
                .map_err(|source| GitError::Io {
                    path: git_dir.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Runs `git args` (in `git_dir` when given) and returns its stdout.
    async fn run(
        &self,
        remote: &GitRemote,
        home: &Path,
        git_dir: Option<&Path>,
        action: &'static str,
        args: &[String],
    ) -> Result<String, GitError> {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", "http:https:git:ssh")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = git_dir {
            command.env("GIT_DIR", dir);
        }
        let mut config = Vec::new();
        if let Some(credentials) = &remote.credentials {
            config.push(("http.extraHeader".to_owned(), credentials.header()));
        }
        if let Some(resolve) = remote.curl_resolve() {
            config.push(("http.curloptResolve".to_owned(), resolve));
        }
        for (i, (key, value)) in config.iter().enumerate() {
            command
                .env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        command.env("GIT_CONFIG_COUNT", config.len().to_string());
        let known_hosts = home.join("known_hosts");
        let mut ssh = format!(
            "ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={} ",
            known_hosts.display()
        );
        if remote.ssh.known_hosts.is_empty() {
            ssh.push_str("-o StrictHostKeyChecking=no");
        } else {
            tokio::fs::write(&known_hosts, &remote.ssh.known_hosts)
                .await
                .map_err(|source| GitError::Io {
                    path: known_hosts.clone(),
                    source,
                })?;
            ssh.push_str("-o StrictHostKeyChecking=yes");
        }
        command.env("GIT_SSH_COMMAND", ssh);
        if let Some(socket) = &remote.ssh.auth_socket {
            command.env("SSH_AUTH_SOCK", socket);
        }
        command.args(args);
        let output = command.output().await.map_err(|source| GitError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let message = if message.is_empty() {
                format!("git exited with {}", output.status)
            } else {
                message
            };
            return Err(GitError::Command {
                action,
                url: remote.url.clone(),
                message: remote.scrub(&message),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A private `HOME` for one git invocation's helpers (ssh writes `known_hosts` there).
async fn scratch_home() -> Result<tempfile::TempDir, GitError> {
    let created = tokio::task::spawn_blocking(tempfile::tempdir)
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    created.map_err(|source| GitError::Io {
        path: std::env::temp_dir(),
        source,
    })
}

/// The commit of the first candidate ref listed (`<hash>\t<ref>` lines), preferring the peeled
/// (`^{}`) line of an annotated tag.
fn pick_ref(listing: &str, candidates: &[String]) -> Option<String> {
    let lines: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .collect();
    for candidate in candidates {
        let peeled = format!("{candidate}^{{}}");
        let found = lines
            .iter()
            .find(|(_, name)| *name == peeled)
            .or_else(|| lines.iter().find(|(_, name)| name == candidate));
        if let Some((hash, _)) = found {
            return Some(hash.to_ascii_lowercase());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_supported_transports_only() {
        for ok in [
            "https://example.com/repo.git",
            "http://127.0.0.1:8080/repo",
            "git://127.0.0.1/repo.git",
            "ssh://git@example.com/repo.git",
            "git@github.com:dagger/dagger.git",
            "https://user@example.com/repo.git",
        ] {
            assert!(GitRemote::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            GitRemote::new("github.com/dagger/dagger")
                .expect("host/path")
                .url(),
            "https://github.com/dagger/dagger"
        );
        for bad in [
            "file:///etc",
            "/srv/repo.git",
            "./repo",
            "ext::sh -c touch% /tmp/x",
            "ftp://example.com/x",
            "-uhelp",
            "https://",
            "repo",
        ] {
            assert!(
                matches!(GitRemote::new(bad), Err(GitError::UnsupportedUrl { .. })),
                "{bad}"
            );
        }
        let err = GitRemote::new("https://me:hunter2@example.com/r").expect_err("password");
        assert!(matches!(err, GitError::PasswordInUrl { .. }));
    }

    #[test]
    fn refs_prefer_branches_then_tags_and_peel_annotated_tags() {
        let listing = "1111111111111111111111111111111111111111\trefs/heads/main\n\
                       2222222222222222222222222222222222222222\trefs/tags/v1\n\
                       3333333333333333333333333333333333333333\trefs/tags/v1^{}\n";
        let c = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            pick_ref(listing, &c(&["refs/heads/main", "refs/tags/main"])).as_deref(),
            Some("1111111111111111111111111111111111111111")
        );
        assert_eq!(
            pick_ref(listing, &c(&["refs/heads/v1", "refs/tags/v1"])).as_deref(),
            Some("3333333333333333333333333333333333333333")
        );
        assert_eq!(pick_ref(listing, &c(&["refs/heads/nope"])), None);
    }

    #[test]
    fn credentials_are_scrubbed_from_messages() {
        let mut remote = GitRemote::new("https://example.com/r").expect("url");
        remote.credentials = Some(GitCredentials::Token("s3cr3t-token".into()));
        let header = remote.credentials.as_ref().expect("set").header();
        let text = format!("failed with s3cr3t-token and {header}");
        let scrubbed = remote.scrub(&text);
        assert!(!scrubbed.contains("s3cr3t"), "{scrubbed}");
        let b64 = base64::engine::general_purpose::STANDARD.encode("x-access-token:s3cr3t-token");
        assert!(!scrubbed.contains(&b64), "{scrubbed}");
        assert_eq!(
            format!("{:?}", remote.credentials),
            "Some(Token(***))".to_owned()
        );
    }

    #[test]
    fn service_hosts_are_reached_by_address() {
        let ip: IpAddr = "10.87.0.9".parse().expect("ip");
        let with_host = |url: &str| {
            let mut remote = GitRemote::new(url).expect("url");
            remote.hosts.insert("svc".into(), ip);
            remote
        };
        let git = with_host("git://svc/repo.git");
        assert_eq!(git.connect_url(), "git://10.87.0.9/repo.git");
        assert_eq!(git.curl_resolve(), None);
        let http = with_host("http://svc:8080/repo.git");
        assert_eq!(http.connect_url(), "http://svc:8080/repo.git");
        assert_eq!(http.curl_resolve().as_deref(), Some("svc:8080:10.87.0.9"));
        assert_eq!(
            with_host("https://svc/r").curl_resolve().as_deref(),
            Some("svc:443:10.87.0.9")
        );
        assert_eq!(
            with_host("git@svc:r.git").connect_url(),
            "git@10.87.0.9:r.git"
        );
        assert_eq!(with_host("git://other/r").connect_url(), "git://other/r");
    }

    #[test]
    fn commit_hashes_are_recognised() {
        assert!(is_commit_hash("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_hash("main"));
        assert!(!is_commit_hash("0123456789abcdef"));
    }
}
