//! Connection drivers: `dagr --host ssh://...` through Debian's `openssh-server` on 127.0.0.1
//! with a test key (the engine's socket reached by `dagr-engine dial-stdio` at the other end),
//! what the tool printed when it fails, a missing tool named with its package, and
//! `kube-pod://`, which can only be tested up to the command it runs (`kubectl`, with a
//! kubeconfig naming a cluster at a closed loopback port: no cluster is started here).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use dagr_testkit::git::SshServer;

fn dagr(host: &str, envs: &[(&str, &str)], stdin: &str) -> Output {
    // ssh gets its agent only where a test gives it one.
    let mut envs = envs.to_vec();
    if !envs.iter().any(|(k, _)| *k == "SSH_AUTH_SOCK") {
        envs.push(("SSH_AUTH_SOCK", ""));
    }
    common::run_dagr(
        &["--host", host, "query", "--progress", "quiet"],
        &envs,
        stdin,
    )
}

#[test]
fn ssh_reaches_the_engine_through_dial_stdio() {
    let engine = dagr_testkit::EngineProcess::start(&common::engine_bin(), &[]);
    let image = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone();
    let sshd = SshServer::start();
    let bin_dir = common::engine_bin().parent().unwrap().to_owned();
    sshd.set_session_path(&format!(
        "{}:/usr/sbin:/usr/bin:/sbin:/bin",
        bin_dir.display()
    ));
    let known_hosts = sshd.dir().join("known_hosts");
    std::fs::write(&known_hosts, &sshd.known_hosts).unwrap();
    let ssh_command = format!(
        "ssh -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
        known_hosts.display()
    );
    let port = sshd.addr.rsplit_once(':').unwrap().1;
    let host = format!("ssh://root@127.0.0.1:{port}{}", engine.unix.display());
    let agent = sshd.agent_socket.to_string_lossy().into_owned();
    let envs = [
        ("DAGR_SSH_COMMAND", ssh_command.as_str()),
        ("SSH_AUTH_SOCK", agent.as_str()),
    ];
    let query = format!(
        r#"{{ container {{ from(address: "{image}") {{ withExec(args: ["echo", "over ssh"]) {{ stdout }} }} }} }}"#
    );
    let out = dagr(&host, &envs, &query);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("over ssh\\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Without the agent the server refuses the key: the error says what ssh printed.
    let out = dagr(&host, &envs[..1], "{ version }");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the connection helper printed") && stderr.contains("Permission denied"),
        "{stderr}"
    );
}

#[test]
fn a_missing_tool_is_named_with_its_package() {
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_string_lossy().into_owned();
    for (host, tool, package) in [
        ("podman-container://engine", "podman", "podman"),
        ("docker-container://engine", "docker", "docker.io"),
        ("kube-pod://engine", "kubectl", "kubernetes-client"),
        ("ssh://nowhere", "ssh", "openssh-client"),
    ] {
        let out = dagr(host, &[("PATH", &path)], "{ version }");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("cannot start \"{tool}\""))
                && stderr.contains(&format!("apt-get install {package}")),
            "{host}: {stderr}"
        );
    }
}

#[test]
fn kube_pod_runs_kubectl_exec_with_the_urls_parameters() {
    // Tested up to the command it runs: kubectl is real, the cluster is not (its address is a
    // closed loopback port), so the error is kubectl's own, about that cluster.
    assert!(
        Path::new("/usr/bin/kubectl").exists(),
        "kubectl is missing: run `cargo xtask prereqs` (kubernetes-client)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = dagr_testkit::free_port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n\
             contexts:\n- name: ci\n  context:\n    cluster: test\n    user: u\ncurrent-context: other\n\
             users:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let out = dagr(
        "kube-pod://dagr-engine-x?namespace=dagr&container=engine&context=ci",
        &[("KUBECONFIG", &kubeconfig)],
        "{ version }",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The context of the URL was used (the config's current one names no cluster), and kubectl
    // tried that cluster's address.
    assert!(
        stderr.contains("the connection helper printed")
            && stderr.contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// Runs `dagr query` against `host` with `envs`; its answer's `data`.
fn query_data(host: &str, envs: &[(&str, &str)], document: &str) -> serde_json::Value {
    let out = dagr(host, envs, document);
    assert!(
        out.status.success(),
        "{host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn docker_image_starts_the_engine_image_and_docker_container_reaches_it() {
    // The image of `cargo xtask image`, made by the xtask binary `cargo xtask` builds, from the
    // binaries under test, assembled by a test engine.
    let xtask = Path::new(common::dagr()).with_file_name("xtask");
    assert!(
        xtask.is_file(),
        "{} is missing: build it with `cargo build -p xtask` (cargo xtask test does)",
        xtask.display()
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("engine.tar");
    let assembler = dagr_testkit::EngineProcess::start(&common::engine_bin(), &[]);
    let docker = dagr_testkit::docker::DockerDaemon::start_with_bridge();
    let docker_host = format!("unix://{}", docker.socket().display());
    // Debian's docker CLI first.
    let path = format!(
        "/usr/bin:/usr/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let tag = "dagr-engine:test";
    let status = Command::new(&xtask)
        .args(["image", "--no-emulators", "--load", tag, "--bin-dir"])
        .arg(common::engine_bin().parent().unwrap())
        .arg("--output")
        .arg(&archive)
        .env("DAGR_HOST", assembler.host())
        .env("DOCKER_HOST", &docker_host)
        .env("PATH", &path)
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask image failed");
    drop(assembler);

    let envs = [
        ("DOCKER_HOST", docker_host.as_str()),
        ("PATH", path.as_str()),
    ];
    let host = format!("docker-image://{tag}");
    // A rootfs of the static busybox, read from this host through the engine in the container.
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
    let id = query_data(
        &host,
        &envs,
        &format!(
            r#"{{ host {{ directory(path: "{}") {{ id }} }} }}"#,
            rootfs.display()
        ),
    )["host"]["directory"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = query_data(
        &host,
        &envs,
        &format!(
            r#"{{ container {{ withRootfs(directory: "{id}") {{ withExec(args: ["/busybox", "echo", "from the engine image"]) {{ stdout }} }} }} }}"#
        ),
    );
    assert_eq!(
        answer["container"]["withRootfs"]["withExec"]["stdout"],
        "from the engine image\n"
    );
    // One engine container, started by the first connection and reused by the second.
    let name = dagr_client::image_container_name(tag);
    let ps = docker
        .docker()
        .args(["ps", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), name);
    // The same engine by container name.
    let version = query_data(&format!("docker-container://{name}"), &envs, "{ version }");
    assert!(version["version"].is_string(), "{version}");
}
