//! The git and HTTP sources against real servers on loopback: `git daemon`, `git http-backend`
//! (with a token) and a small HTTP server with ETags.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dagr_source::{Fetched, Git, GitCredentials, GitError, GitRemote, HttpError, HttpFetcher};
use dagr_testkit::git::GitServer;
use dagr_testkit::http::FileServer;

fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if rel == ".git" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                out.push(format!("{rel}/"));
            } else {
                out.push(format!(
                    "{rel}={}",
                    std::fs::read_to_string(e.path()).unwrap()
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn branches_tags_commits_and_head_over_git_daemon() {
    let server = GitServer::start(None);
    server.create("repo.git");
    let first = server.commit("repo.git", "main", &[("a.txt", "one")], "first");
    let second = server.commit("repo.git", "main", &[("b/c.txt", "two")], "second");
    server.tag("repo.git", "v1", &first, Some("annotated"));
    server.tag("repo.git", "light", &second, None);
    let git = Git::default();
    let remote = GitRemote::new(&server.daemon_url("repo.git")).unwrap();

    assert_eq!(git.resolve(&remote, "main").await.unwrap(), second);
    assert_eq!(
        git.resolve(&remote, "refs/heads/main").await.unwrap(),
        second
    );
    assert_eq!(git.resolve(&remote, "HEAD").await.unwrap(), second);
    assert_eq!(
        git.resolve(&remote, "v1").await.unwrap(),
        first,
        "peeled tag"
    );
    assert_eq!(git.resolve(&remote, "light").await.unwrap(), second);
    assert_eq!(git.resolve(&remote, &first).await.unwrap(), first);
    let err = git.resolve(&remote, "nope").await.unwrap_err();
    assert!(matches!(err, GitError::UnknownRef { .. }), "{err}");
    assert!(err.to_string().contains("\"nope\""), "{err}");

    let dest = tempfile::tempdir().unwrap();
    git.checkout(&remote, "v1", &first, dest.path(), false)
        .await
        .unwrap();
    assert_eq!(tree(dest.path()), vec!["a.txt=one".to_owned()]);
    assert!(!dest.path().join(".git").exists());

    let kept = tempfile::tempdir().unwrap();
    git.checkout(&remote, "main", &second, kept.path(), true)
        .await
        .unwrap();
    assert!(kept.path().join(".git").is_dir());
    let head = std::process::Command::new("git")
        .arg("-C")
        .arg(kept.path())
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), second);
    let shallow = std::fs::read_to_string(kept.path().join(".git/shallow")).unwrap();
    assert_eq!(shallow.trim(), second, "only the one commit was fetched");
}

#[tokio::test]
async fn smart_http_with_a_token_that_never_shows() {
    let token = "tok-9f8e7d6c5b4a";
    let server = GitServer::start(Some(token));
    server.create("private.git");
    let commit = server.commit("private.git", "main", &[("secret.txt", "s")], "c");
    let git = Git::default();

    let mut anonymous = GitRemote::new(&server.http_url("private.git")).unwrap();
    let err = git.resolve(&anonymous, "main").await.unwrap_err();
    assert!(matches!(err, GitError::Command { .. }), "{err}");

    anonymous.credentials = Some(GitCredentials::Token("wrong-token".into()));
    let err = git
        .resolve(&anonymous, "main")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("wrong-token"), "{err}");

    let mut remote = GitRemote::new(&server.http_url("private.git")).unwrap();
    remote.credentials = Some(GitCredentials::Token(token.into()));
    assert_eq!(git.resolve(&remote, "main").await.unwrap(), commit);
    let dest = tempfile::tempdir().unwrap();
    git.checkout(&remote, "main", &commit, dest.path(), true)
        .await
        .unwrap();
    assert_eq!(tree(dest.path()), vec!["secret.txt=s".to_owned()]);
    let config = std::fs::read_to_string(dest.path().join(".git/config")).unwrap();
    assert!(!config.contains(token), "{config}");
}

#[tokio::test]
async fn downloads_revalidate_with_etags_and_name_missing_files() {
    let server = FileServer::start();
    server.put("/dl/tool.txt", b"version one");
    let fetcher = HttpFetcher::new();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");

    let first = fetcher
        .fetch(&server.url("/dl/tool.txt"), None, &dest)
        .await
        .unwrap();
    let Fetched::Downloaded {
        digest, validators, ..
    } = first
    else {
        panic!("expected a download, got {first:?}");
    };
    assert_eq!(std::fs::read(&dest).unwrap(), b"version one");
    assert!(validators.etag.is_some());
    let mtime = std::fs::metadata(&dest).unwrap().modified().unwrap();
    assert_eq!(
        mtime,
        httpdate::parse_http_date("Tue, 15 Nov 1994 08:12:31 GMT").unwrap()
    );

    let again = fetcher
        .fetch(&server.url("/dl/tool.txt"), Some(&validators), &dest)
        .await
        .unwrap();
    assert_eq!(again, Fetched::NotModified);
    assert_eq!(server.counts(), (1, 1));

    server.put("/dl/tool.txt", b"version two");
    let changed = fetcher
        .fetch(&server.url("/dl/tool.txt"), Some(&validators), &dest)
        .await
        .unwrap();
    let Fetched::Downloaded { digest: d2, .. } = changed else {
        panic!("expected a new download");
    };
    assert_ne!(digest, d2);
    assert_eq!(std::fs::read(&dest).unwrap(), b"version two");

    server.redirect("/old", "/dl/tool.txt");
    let redirected = fetcher
        .fetch(&server.url("/old"), None, &dest)
        .await
        .unwrap();
    assert!(matches!(redirected, Fetched::Downloaded { .. }));

    let err = fetcher
        .fetch(&server.url("/missing"), None, &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Status { .. }));
    assert!(err.to_string().contains("404 Not Found"), "{err}");
    assert!(err.to_string().contains("/missing"), "{err}");
}
