//! Sources end to end through the GraphQL API: git over `git daemon` and over smart HTTP with
//! a token (`git http-backend`), downloads with ETag revalidation, and `sync` of paths that do
//! not exist. Every server is the test's own, on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use dagr_testkit::git::GitServer;
use dagr_testkit::gql::query;
use dagr_testkit::http::FileServer;
use serde_json::json;

fn engine() -> dagr_testkit::EngineProcess {
    dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[])
}

async fn connect(engine: &dagr_testkit::EngineProcess) -> dagr_client::Client {
    dagr_testkit::gql::connect(engine, false).await
}

/// `{ git(url) { <reference> { tree { entries } commit } } }` → (entries, commit).
async fn tree(
    client: &dagr_client::Client,
    url: &str,
    args: &str,
    reference: &str,
) -> Result<(Vec<String>, String), String> {
    let data = query(
        client,
        format!(
            "{{ git(url: {url}{args}) {{ r: {reference} {{ tree {{ entries }} commit }} }} }}",
            url = json!(url)
        ),
    )
    .await?;
    let r = &data["git"]["r"];
    let entries = r["tree"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    Ok((entries, r["commit"].as_str().unwrap().to_owned()))
}

#[tokio::test]
async fn git_refs_over_git_daemon_and_a_moved_branch() {
    let server = GitServer::start(None);
    server.create("repo.git");
    let first = server.commit("repo.git", "main", &[("a.txt", "one")], "first");
    server.tag("repo.git", "v1", &first, Some("release"));
    let second = server.commit("repo.git", "main", &[("b.txt", "two")], "second");
    let engine = engine();
    let client = connect(&engine).await;
    let url = server.daemon_url("repo.git");

    let (entries, commit) = tree(&client, &url, "", "branch(name: \"main\")")
        .await
        .unwrap();
    assert_eq!(entries, ["a.txt", "b.txt"]);
    assert_eq!(commit, second);
    let (entries, commit) = tree(&client, &url, "", "tag(name: \"v1\")").await.unwrap();
    assert_eq!((entries, commit), (vec!["a.txt".to_owned()], first.clone()));
    let (entries, _) = tree(&client, &url, "", &format!("commit(id: \"{first}\")"))
        .await
        .unwrap();
    assert_eq!(entries, ["a.txt"]);
    let (_, commit) = tree(&client, &url, "", "head").await.unwrap();
    assert_eq!(commit, second);
    let (entries, _) = tree(&client, &url, ", keepGitDir: true", "ref(name: \"main\")")
        .await
        .unwrap();
    assert_eq!(entries, [".git", "a.txt", "b.txt"]);

    // Unmoved: the second solve of the same tree asks for the ref and fetches nothing.
    let before = server.daemon_upload_packs();
    let contents = format!(
        "{{ git(url: {}) {{ branch(name: \"main\") {{ tree {{ file(path: \"b.txt\") {{ contents }} }} }} }} }}",
        json!(url)
    );
    let data = query(&client, contents.clone()).await.unwrap();
    assert_eq!(data["git"]["branch"]["tree"]["file"]["contents"], "two");
    assert_eq!(
        server.daemon_upload_packs() - before,
        1,
        "one ls-remote, no fetch"
    );

    // Moved: the same query now gives the new tree.
    server.commit("repo.git", "main", &[("b.txt", "three")], "third");
    let data = query(&client, contents).await.unwrap();
    assert_eq!(data["git"]["branch"]["tree"]["file"]["contents"], "three");

    let err = tree(&client, &url, "", "branch(name: \"nope\")")
        .await
        .unwrap_err();
    assert!(err.contains("\"nope\" not found"), "{err}");
    let err = tree(&client, "file:///etc", "", "head").await.unwrap_err();
    assert!(err.contains("\"file:///etc\" is not supported"), "{err}");
    let err = tree(&client, &url, "", "commit(id: \"abc\")")
        .await
        .unwrap_err();
    assert!(err.contains("not a full commit hash"), "{err}");
}

#[tokio::test]
async fn git_over_http_with_a_token_kept_out_of_ids_and_errors() {
    let token = "tok-a1b2c3d4e5f6g7h8";
    let server = GitServer::start(Some(token));
    server.create("private.git");
    server.commit("private.git", "main", &[("README", "private")], "c");
    let engine = engine();
    let client = connect(&engine).await;
    let url = json!(server.http_url("private.git"));

    let err = tree(&client, &server.http_url("private.git"), "", "head")
        .await
        .unwrap_err();
    assert!(err.contains("ls-remote"), "{err}");

    for (secret, ok) in [("wrong-token-zzz", false), (token, true)] {
        let data = query(
            &client,
            format!(
                "{{ setSecret(name: \"t\", plaintext: {}) {{ id }} }}",
                json!(secret)
            ),
        )
        .await
        .unwrap();
        let secret_id = data["setSecret"]["id"].as_str().unwrap().to_owned();
        let repo = query(
            &client,
            format!(
                "{{ git(url: {url}) {{ withAuthToken(token: {}) {{ id }} }} }}",
                json!(secret_id)
            ),
        )
        .await
        .unwrap();
        let repo_id = repo["git"]["withAuthToken"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!repo_id.contains(secret), "the ID carries the token");
        let answer = query(
            &client,
            format!(
                "{{ loadGitRepositoryFromID(id: {}) {{ head {{ tree {{ file(path: \"README\") {{ contents }} }} }} }} }}",
                json!(repo_id)
            ),
        )
        .await;
        match answer {
            Ok(data) if ok => assert_eq!(
                data["loadGitRepositoryFromID"]["head"]["tree"]["file"]["contents"],
                "private"
            ),
            Err(err) if !ok => assert!(!err.contains(secret), "{err}"),
            other => panic!("token {secret}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn http_downloads_revalidate_and_missing_urls_fail() {
    let server = FileServer::start();
    server.put("/files/hello.txt", b"hello");
    let engine = engine();
    let client = connect(&engine).await;
    let q = format!(
        "{{ http(url: {}) {{ contents name }} }}",
        json!(server.url("/files/hello.txt"))
    );
    let data = query(&client, q.clone()).await.unwrap();
    assert_eq!(data["http"]["contents"], "hello");
    assert_eq!(data["http"]["name"].as_str().unwrap().len(), 64);
    let data = query(&client, q.clone()).await.unwrap();
    assert_eq!(data["http"]["contents"], "hello");
    assert_eq!(server.counts(), (1, 1), "the second solve revalidated");

    server.put("/files/hello.txt", b"hello again");
    let data = query(&client, q).await.unwrap();
    assert_eq!(data["http"]["contents"], "hello again");

    let err = query(
        &client,
        format!(
            "{{ http(url: {}) {{ contents }} }}",
            json!(server.url("/missing"))
        ),
    )
    .await
    .unwrap_err();
    assert!(err.contains("404 Not Found"), "{err}");
    assert!(err.contains("/missing"), "{err}");
}

#[tokio::test]
async fn sync_checks_that_paths_exist_and_have_their_kind() {
    let engine = engine();
    let client = connect(&engine).await;
    let with_file = "directory { withNewFile(path: \"f\", contents: \"x\") {";
    for (q, want) in [
        (
            "{ directory { directory(path: \"missing\") { sync } } }".to_owned(),
            "missing: no such file or directory",
        ),
        (
            format!("{{ {with_file} file(path: \"missing\") {{ sync }} }} }} }}"),
            "missing: no such file or directory",
        ),
        (
            format!("{{ {with_file} directory(path: \"f\") {{ sync }} }} }} }}"),
            "not a directory",
        ),
        (
            format!("{{ {with_file} file(path: \"missing\") {{ contents }} }} }} }}"),
            "no such file or directory",
        ),
    ] {
        let err = query(&client, q.clone()).await.unwrap_err();
        assert!(err.contains(want), "{q}: {err}");
    }
    let ok = format!("{{ {with_file} file(path: \"f\") {{ sync }} }} }} }}");
    query(&client, ok).await.unwrap();
}

#[tokio::test]
async fn http_from_a_service_of_the_session() {
    let engine = engine();
    let client = connect(&engine).await;
    let image = json!(dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR")).image);
    let data = query(
        &client,
        format!(
            "{{ container {{ from(address: {image}) {{ withNewFile(path: \"/srv/data.txt\", contents: \"from the service\") {{ withExposedPort(port: 8080) {{ withExec(args: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/srv\"]) {{ asService {{ id hostname }} }} }} }} }} }} }}"
        ),
    )
    .await
    .unwrap();
    let service =
        &data["container"]["from"]["withNewFile"]["withExposedPort"]["withExec"]["asService"];
    let (id, hostname) = (
        service["id"].as_str().unwrap(),
        service["hostname"].as_str().unwrap(),
    );
    let data = query(
        &client,
        format!(
            "{{ http(url: \"http://{hostname}:8080/data.txt\", experimentalServiceHost: {}) {{ contents }} }}",
            json!(id)
        ),
    )
    .await
    .unwrap();
    assert_eq!(data["http"]["contents"], "from the service");
}

#[tokio::test]
async fn git_over_ssh_with_the_clients_agent() {
    let server = GitServer::start(None);
    server.create("repo.git");
    let commit = server.commit("repo.git", "main", &[("hello.txt", "over ssh")], "c");
    let ssh = dagr_testkit::git::SshServer::start();
    let url = json!(ssh.url(&server, "repo.git"));
    let engine = engine();
    let client = connect(&engine).await;
    let known = json!(ssh.known_hosts);
    let socket = query(
        &client,
        format!(
            "{{ host {{ unixSocket(path: {}) {{ id }} }} }}",
            json!(ssh.agent_socket.display().to_string())
        ),
    )
    .await
    .unwrap();
    let socket = json!(socket["host"]["unixSocket"]["id"].as_str().unwrap());
    let data = query(
        &client,
        format!(
            "{{ git(url: {url}, sshKnownHosts: {known}, sshAuthSocket: {socket}) {{ branch(name: \"main\") {{ commit tree {{ file(path: \"hello.txt\") {{ contents }} }} }} }} }}"
        ),
    )
    .await
    .unwrap();
    assert_eq!(data["git"]["branch"]["commit"], commit.as_str());
    assert_eq!(
        data["git"]["branch"]["tree"]["file"]["contents"],
        "over ssh"
    );

    // Without the agent the server refuses; with other known hosts the client does.
    let err = query(
        &client,
        format!("{{ git(url: {url}, sshKnownHosts: {known}) {{ head {{ commit }} }} }}"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    let other = json!(ssh.known_hosts.replace("[127.0.0.1]", "[127.0.0.2]"));
    let err = query(
        &client,
        format!(
            "{{ git(url: {url}, sshKnownHosts: {other}, sshAuthSocket: {socket}) {{ head {{ commit }} }} }}"
        ),
    )
    .await
    .unwrap_err();
    assert!(err.contains("Host key verification failed"), "{err}");
}
