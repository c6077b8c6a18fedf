//! Services end to end, with busybox from the local test registry on the engine's own bridge:
//! `httpd` bound under an alias and fetched with `wget`, a chain of two services, ten started at
//! once with one failing, start/stop cycles that leave nothing behind, DNS forwarding to an
//! upstream the test runs, and the errors of bad input.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use dagr_testkit::gql::query;
use serde_json::{Value, json};

fn engine(args: &[&str]) -> dagr_testkit::EngineProcess {
    dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), args)
}

async fn connect(engine: &dagr_testkit::EngineProcess) -> dagr_client::Client {
    dagr_client::connect(dagr_testkit::connect_options(
        &engine.host(),
        &std::env::temp_dir(),
    ))
    .await
    .expect("connect")
}

fn unique() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

fn image() -> String {
    dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone()
}

/// The ID of a busybox httpd service on `port` serving `/srv/index.html` = `page`, with
/// `extra` (GraphQL `Container` calls, e.g. a binding) before its exec.
async fn httpd(client: &dagr_client::Client, port: u16, page: &str, extra: &str) -> String {
    let data = query(
        client,
        format!(
            "{{ container {{ from(address: {img}) {{ withNewFile(path: \"/srv/index.html\", contents: {page}) {{ withExposedPort(port: {port}) {{ {extra} {{ withExec(args: [\"httpd\", \"-f\", \"-p\", \"{port}\", \"-h\", \"/srv\"]) {{ asService {{ id }} }} }} }} }} }} }} }}",
            img = json!(image()),
            page = json!(page),
            extra = if extra.is_empty() { "withWorkdir(path: \"/\")" } else { extra },
        ),
    )
    .await
    .expect("service defined");
    data["container"]["from"]["withNewFile"]["withExposedPort"]
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v["withExec"]["asService"]["id"].as_str())
        .expect("service id")
        .to_owned()
}

/// Runs `sh -c script` in busybox with `service` bound as `alias`; its stdout.
async fn run_bound(
    client: &dagr_client::Client,
    alias: &str,
    service: &str,
    script: &str,
) -> Result<String, String> {
    let data = query(
        client,
        format!(
            "{{ container {{ from(address: {img}) {{ withEnvVariable(name: \"BUST\", value: {bust}) {{ withServiceBinding(alias: {alias}, service: {service}) {{ withExec(args: [\"sh\", \"-c\", {script}]) {{ stdout }} }} }} }} }} }}",
            img = json!(image()),
            bust = json!(unique()),
            alias = json!(alias),
            service = json!(service),
            script = json!(script),
        ),
    )
    .await?;
    Ok(
        data["container"]["from"]["withEnvVariable"]["withServiceBinding"]["withExec"]["stdout"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn metric(engine: &dagr_testkit::EngineProcess, name: &str) -> u64 {
    dagr_testkit::metric(&engine.metrics(), name).unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_service_answers_under_its_alias_and_stops_after() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let page = format!("hello from {}", unique());
    let service = httpd(&client, 8080, &page, "").await;
    let got = run_bound(
        &client,
        "web",
        &service,
        "wget -q -O- http://web:8080/index.html",
    )
    .await
    .unwrap();
    assert_eq!(got, page);
    // The hostname is stable and resolves in binding execs too; endpoint() names it.
    let data = query(
        &client,
        format!(
            "{{ loadServiceFromID(id: {}) {{ hostname endpoint(scheme: \"http\") ports {{ port protocol experimentalSkipHealthcheck }} }} }}",
            json!(service)
        ),
    )
    .await
    .unwrap();
    let hostname = data["loadServiceFromID"]["hostname"].as_str().unwrap();
    assert_eq!(
        data["loadServiceFromID"]["endpoint"],
        json!(format!("http://{hostname}:8080"))
    );
    assert_eq!(
        data["loadServiceFromID"]["ports"],
        json!([{ "port": 8080, "protocol": "TCP", "experimentalSkipHealthcheck": false }])
    );
    let by_hostname = run_bound(
        &client,
        "web",
        &service,
        &format!("wget -q -O- http://{hostname}:8080/index.html"),
    )
    .await
    .unwrap();
    assert_eq!(by_hostname, page);
    // The alias resolves only in the containers that bind it.
    let unbound = query(
        &client,
        format!(
            "{{ container {{ from(address: {}) {{ withEnvVariable(name: \"B\", value: {}) {{ withExec(args: [\"wget\", \"-q\", \"-T\", \"2\", \"-O-\", \"http://web:8080/\"]) {{ stdout }} }} }} }} }}",
            json!(image()),
            json!(unique())
        ),
    )
    .await;
    assert!(unbound.is_err(), "an unbound alias resolved: {unbound:?}");
    // Nothing is left running once the binding execs are done.
    engine.wait_metric("dagr_services_running", 0);
    engine.wait_metric("dagr_network_dns_names", 0);
    engine.wait_metric("dagr_network_dns_views", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_can_bind_another() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let page = format!("from the first {}", unique());
    let first = httpd(&client, 8080, &page, "").await;
    // The second copies the first's page at start, then serves it.
    let data = query(
        &client,
        format!(
            "{{ container {{ from(address: {img}) {{ withServiceBinding(alias: \"first\", service: {first}) {{ withExposedPort(port: 8081) {{ withExec(args: [\"sh\", \"-c\", \"mkdir -p /srv && wget -q -O /srv/index.html http://first:8080/index.html && exec httpd -f -p 8081 -h /srv\"]) {{ asService {{ id }} }} }} }} }} }} }}",
            img = json!(image()),
            first = json!(first),
        ),
    )
    .await
    .unwrap();
    let second =
        data["container"]["from"]["withServiceBinding"]["withExposedPort"]["withExec"]["asService"]
            ["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let got = run_bound(
        &client,
        "second",
        &second,
        "wget -q -O- http://second:8081/index.html",
    )
    .await
    .unwrap();
    assert_eq!(got, page);
    engine.wait_metric("dagr_services_running", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_services_start_at_once_and_the_failing_one_is_named() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(httpd(&client, 8000 + i, &format!("page {i}"), "").await);
    }
    let data = query(
        &client,
        format!(
            "{{ container {{ from(address: {}) {{ withExposedPort(port: 9999) {{ withExec(args: [\"sh\", \"-c\", \"echo the database is on fire; exit 3\"]) {{ asService {{ id hostname }} }} }} }} }} }}",
            json!(image())
        ),
    )
    .await
    .unwrap();
    let failing = &data["container"]["from"]["withExposedPort"]["withExec"]["asService"];
    let failing_host = failing["hostname"].as_str().unwrap().to_owned();
    ids.push(failing["id"].as_str().unwrap().to_owned());
    // Each in a request of its own, all at once (an error in a request nulls its whole data).
    let starts = ids.iter().map(|id| {
        query(
            &client,
            format!("{{ loadServiceFromID(id: {}) {{ start }} }}", json!(id)),
        )
    });
    let answers = futures::future::join_all(starts).await;
    let (failed, started): (Vec<_>, Vec<_>) = answers.into_iter().partition(Result::is_err);
    assert_eq!(started.len(), 9, "{failed:?}");
    let message = failed[0].clone().unwrap_err();
    assert!(message.contains(&failing_host), "{message}");
    assert!(message.contains("exited with code 3"), "{message}");
    assert!(message.contains("the database is on fire"), "{message}");
    assert_eq!(metric(&engine, "dagr_services_running"), 9);
    // Ending the session stops what it started.
    client.close().await.unwrap();
    engine.wait_metric("dagr_services_running", 0);
    engine.wait_metric("dagr_network_dns_names", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stop_cycles_leave_nothing_behind() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let service = httpd(&client, 8080, "cycles", "").await;
    let pooled = metric(&engine, "dagr_network_addresses_in_use");
    for _ in 0..500 {
        query(
            &client,
            format!(
                "{{ loadServiceFromID(id: {}) {{ start }} }}",
                json!(service)
            ),
        )
        .await
        .unwrap();
        assert_eq!(metric(&engine, "dagr_services_running"), 1);
        query(
            &client,
            format!("{{ loadServiceFromID(id: {}) {{ stop }} }}", json!(service)),
        )
        .await
        .unwrap();
    }
    assert_eq!(metric(&engine, "dagr_services_running"), 0);
    assert_eq!(metric(&engine, "dagr_network_dns_names"), 0);
    assert_eq!(metric(&engine, "dagr_network_addresses_in_use"), pooled);
    assert!(
        dagr_testkit::processes_running(&["httpd", "-f", "-p", "8080"]).is_empty(),
        "an httpd outlived its service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_services_go_to_the_upstream_resolver() {
    // A DNS server of the test's own on loopback, answering every A query with 10.9.8.7.
    let upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = upstream.recv_from(&mut buf) {
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80;
            reply[7] = 1;
            // Only the question: drop any additional records the client sent.
            reply[10] = 0;
            reply[11] = 0;
            let question_end = 12 + reply[12..].iter().position(|&b| b == 0).unwrap() + 5;
            reply.truncate(question_end);
            reply.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 8, 7]);
            let _ = upstream.send_to(&reply, peer);
        }
    });
    let engine = engine(&["--dns-upstream", &upstream_addr]);
    let client = connect(&engine).await;
    let data = query(
        &client,
        format!(
            "{{ container {{ from(address: {}) {{ withEnvVariable(name: \"B\", value: {}) {{ withExec(args: [\"nslookup\", \"pkg.example.test\"]) {{ stdout }} }} }} }} }}",
            json!(image()),
            json!(unique())
        ),
    )
    .await
    .unwrap();
    let out = data["container"]["from"]["withEnvVariable"]["withExec"]["stdout"]
        .as_str()
        .unwrap();
    assert!(out.contains("10.9.8.7"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_reaches_the_bridge_address_through_its_default_route() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let bridge = engine.bridge.clone().unwrap();
    let gateway = bridge.cidr.gateway();
    let listener = std::net::TcpListener::bind((gateway, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\noutside");
    });
    let data = query(
        &client,
        format!(
            "{{ container {{ from(address: {}) {{ withEnvVariable(name: \"B\", value: {}) {{ withExec(args: [\"sh\", \"-c\", \"ip route | grep default; wget -q -O- http://{gateway}:{port}/\"]) {{ stdout }} }} }} }} }}",
            json!(image()),
            json!(unique())
        ),
    )
    .await
    .unwrap();
    let out = data["container"]["from"]["withEnvVariable"]["withExec"]["stdout"]
        .as_str()
        .unwrap();
    assert!(out.contains(&format!("default via {gateway}")), "{out}");
    assert!(out.ends_with("outside"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ports_and_aliases_are_named() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let img = json!(image());
    for (calls, expect) in [
        (
            "withExposedPort(port: 0)".to_owned(),
            "port 0 is out of range",
        ),
        (
            "withExposedPort(port: 70000)".to_owned(),
            "port 70000 is out of range",
        ),
        (
            "withExposedPort(port: 80) { withExposedPort(port: 80)".to_owned(),
            "port 80/TCP is already exposed",
        ),
    ] {
        let closing = "}".repeat(calls.matches('{').count());
        let err = query(
            &client,
            format!("{{ container {{ from(address: {img}) {{ {calls} {{ id }} {closing} }} }} }}"),
        )
        .await
        .unwrap_err();
        assert!(err.contains(expect), "{calls}: {err}");
    }
    let service = httpd(&client, 8080, "x", "").await;
    let err = query(
        &client,
        format!(
            "{{ container {{ withServiceBinding(alias: \"not a label!\", service: {}) {{ id }} }} }}",
            json!(service)
        ),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("alias \"not a label!\" is not a DNS label"),
        "{err}"
    );
}

/// A Python `http.server` on the test's loopback serving a temp dir with `page.txt` = `text`;
/// killed on drop.
struct HostServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl HostServer {
    fn start(text: &str) -> HostServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("page.txt"), text).unwrap();
        let port = dagr_testkit::free_port();
        let child = std::process::Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "http.server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        HostServer {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 GET of `path` on 127.0.0.1:`port` from this process; the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reaches_a_server_on_the_clients_loopback() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let text = format!("on the host {}", unique());
    let server = HostServer::start(&text);
    let data = query(
        &client,
        format!(
            "{{ host {{ service(ports: [{{frontend: 80, backend: {}}}]) {{ id }} }} }}",
            server.port
        ),
    )
    .await
    .unwrap();
    let service = data["host"]["service"]["id"].as_str().unwrap().to_owned();
    let got = run_bound(
        &client,
        "hostsvc",
        &service,
        "wget -q -O- http://hostsvc/page.txt",
    )
    .await
    .unwrap();
    assert_eq!(got, text);
    // Nothing listening on the client: the exec's connection fails at once instead of hanging.
    let dead_port = dagr_testkit::free_port();
    let data = query(
        &client,
        format!(
            "{{ host {{ service(ports: [{{frontend: 80, backend: {dead_port}}}]) {{ id }} }} }}"
        ),
    )
    .await
    .unwrap();
    let dead = data["host"]["service"]["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let failed = run_bound(&client, "dead", &dead, "wget -q -T 20 -O- http://dead/").await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the exec waited for its timeout instead of failing"
    );
    engine.wait_metric("dagr_services_running", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_brings_a_service_to_the_clients_host() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let page = format!("tunnelled {}", unique());
    let service = httpd(&client, 8080, &page, "").await;
    let data = query(
        &client,
        format!(
            "{{ host {{ tunnel(service: {}) {{ id }} }} }}",
            json!(service)
        ),
    )
    .await
    .unwrap();
    let tunnel = data["host"]["tunnel"]["id"].as_str().unwrap().to_owned();
    let data = query(
        &client,
        format!(
            "{{ loadServiceFromID(id: {}) {{ start endpoint(scheme: \"http\") }} }}",
            json!(tunnel)
        ),
    )
    .await
    .unwrap();
    let endpoint = data["loadServiceFromID"]["endpoint"].as_str().unwrap();
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let got = tokio::task::spawn_blocking(move || http_get(port, "/index.html"))
        .await
        .unwrap();
    assert_eq!(got, page);
    query(
        &client,
        format!("{{ loadServiceFromID(id: {}) {{ stop }} }}", json!(tunnel)),
    )
    .await
    .unwrap();
    engine.wait_metric("dagr_services_running", 0);
    // The listener on this host closes once the attachables relay the stop.
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the tunnel still listens 10 s after stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dagr_up_forwards_a_service_until_interrupted() {
    up_forwards_until_interrupted(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dagr_up_in_another_network_namespace_is_relayed_through_the_client() {
    // A client whose host is not the engine's network: the engine cannot bind its ports, the
    // client listens and relays.
    let dir = tempfile::tempdir().unwrap();
    let netns = dagr_network::NetworkNamespace::create(&dir.path().join("netns")).unwrap();
    let lo = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.path().display()))
        .args(["ip", "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(lo.success());
    up_forwards_until_interrupted(Some(netns.path())).await;
}

/// `dagr up` of an httpd service on a free port, `curl` of it, then SIGINT; with `netns` both
/// run in that network namespace (reaching the engine by its unix socket).
async fn up_forwards_until_interrupted(netns: Option<&Path>) {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let page = format!("up {}", unique());
    let service = httpd(&client, 8080, &page, "").await;
    let local = dagr_testkit::free_port();
    let dagr = Path::new(env!("CARGO_BIN_EXE_dagr-engine")).with_file_name("dagr");
    let command = |program: &Path| match netns {
        Some(netns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net={}", netns.display()))
                .arg("--")
                .arg(program);
            c
        }
        None => std::process::Command::new(program),
    };
    let host = match netns {
        Some(_) => format!("unix://{}", engine.unix.display()),
        None => engine.host(),
    };
    let mut up = command(&dagr)
        .args(["--host", &host, "--progress", "quiet", "up"])
        .arg(&service)
        .args(["--port", &format!("{local}:8080")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dagr up");
    let stderr = up.stderr.take().unwrap();
    let forwarding = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let line = lines.next().unwrap().unwrap();
        std::thread::spawn(move || for _ in lines {});
        line
    })
    .await
    .unwrap();
    assert_eq!(forwarding, format!("dagr up: forwarding 127.0.0.1:{local}"));
    let mut curl = command(Path::new("curl"));
    curl.args(["-sf", &format!("http://127.0.0.1:{local}/index.html")]);
    let got = tokio::task::spawn_blocking(move || {
        String::from_utf8(curl.output().unwrap().stdout).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(got, page);
    if netns.is_some() {
        // Not on the engine's loopback: the client listens in its own namespace.
        assert!(std::net::TcpStream::connect(("127.0.0.1", local)).is_err());
    }
    // SIGINT, as Ctrl-C: dagr exits 0 and the service stops.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let status = up.wait().unwrap();
    assert!(status.success(), "{status}");
    engine.wait_metric("dagr_services_running", 0);
    drop(client);
}

/// A directory holding the host's `curl`, the libraries it links and `curl.sh`, which runs it
/// through the dynamic loader from `/opt/curl` in a busybox container.
fn curl_bundle(dir: &Path) -> std::path::PathBuf {
    let bundle = dir.join("curl-bundle");
    let curl = std::path::PathBuf::from(
        String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", "command -v curl"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    );
    let mut files = vec![curl.clone()];
    files.extend(dagr_testkit::linked_libraries(&[curl]));
    let loader = dagr_testkit::flat_bundle(&bundle, files).expect("ldd names the dynamic loader");
    let script = format!(
        "#!/bin/sh\nexec /opt/curl/{loader} --library-path /opt/curl /opt/curl/curl \"$@\"\n"
    );
    std::fs::write(bundle.join("curl.sh"), script).unwrap();
    let mut perms = std::fs::metadata(bundle.join("curl.sh"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(bundle.join("curl.sh"), perms).unwrap();
    bundle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_talks_to_a_unix_socket_of_the_clients_host() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = curl_bundle(dir.path());
    // The client's server: answers each HTTP request with the request line it got.
    let socket_path = dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok() && line.trim() != "" {
                line.clear();
            }
            let body = format!("echo: {}", request_line.trim());
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let data = query(
        &client,
        format!(
            "{{ host {{ directory(path: {}) {{ id }} unixSocket(path: {}) {{ id }} }} }}",
            json!(bundle.to_str().unwrap()),
            json!(socket_path.to_str().unwrap()),
        ),
    )
    .await
    .unwrap();
    let bundle_id = data["host"]["directory"]["id"].as_str().unwrap();
    let socket_id = data["host"]["unixSocket"]["id"].as_str().unwrap();
    let data = query(
        &client,
        format!(
            "{{ container {{ from(address: {}) {{ withMountedDirectory(path: \"/opt/curl\", source: {}) {{ withUnixSocket(path: \"/run/echo.sock\", source: {}, owner: \"1000\") {{ withEnvVariable(name: \"B\", value: {}) {{ withExec(args: [\"sh\", \"-c\", \"stat -c %u /run/echo.sock; /opt/curl/curl.sh -s --unix-socket /run/echo.sock http://client/hello\"]) {{ stdout }} }} }} }} }} }} }}",
            json!(image()),
            json!(bundle_id),
            json!(socket_id),
            json!(unique()),
        ),
    )
    .await
    .unwrap();
    let out = data["container"]["from"]["withMountedDirectory"]["withUnixSocket"]
        ["withEnvVariable"]["withExec"]["stdout"]
        .as_str()
        .unwrap();
    assert_eq!(out, "1000\necho: GET /hello HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_client_leaves_no_service_running() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    let marker = format!("sigkill-{}", unique());
    let page = marker.clone();
    let service = httpd(
        &client,
        8080,
        &page,
        "withEnvVariable(name: \"M\", value: \"x\")",
    )
    .await;
    client.close().await.unwrap();
    let dagr = Path::new(env!("CARGO_BIN_EXE_dagr-engine")).with_file_name("dagr");
    let mut up = std::process::Command::new(&dagr)
        .args([
            "--host",
            &engine.host(),
            "--progress",
            "quiet",
            "up",
            "--random",
        ])
        .arg(&service)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dagr up");
    let stderr = up.stderr.take().unwrap();
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let line = lines.next().unwrap().unwrap();
        assert!(line.starts_with("dagr up: forwarding 127.0.0.1:"), "{line}");
        std::thread::spawn(move || for _ in lines {});
    })
    .await
    .unwrap();
    assert_eq!(metric(&engine, "dagr_services_running"), 1);
    up.kill().unwrap();
    let _ = up.wait();
    let killed = std::time::Instant::now();
    let argv = ["httpd", "-f", "-p", "8080"];
    while metric(&engine, "dagr_services_running") != 0
        || !dagr_testkit::processes_running(&argv).is_empty()
    {
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(2),
            "the service outlived its client by 2 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposed_ports_are_written_to_the_image_config() {
    let engine = engine(&[]);
    let mut options = dagr_testkit::connect_options(&engine.host(), &std::env::temp_dir());
    // Exports write to this host.
    options.allow_send = true;
    let client = dagr_client::connect(options).await.expect("connect");
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("image.tar");
    query(
        &client,
        format!(
            "{{ container {{ from(address: {}) {{ withExposedPort(port: 8080) {{ withExposedPort(port: 53, protocol: UDP) {{ withoutExposedPort(port: 8080) {{ withExposedPort(port: 9090, description: \"metrics\") {{ exposedPorts {{ port protocol description }} asTarball {{ export(path: {}) }} }} }} }} }} }} }} }}",
            json!(image()),
            json!(tarball.to_str().unwrap()),
        ),
    )
    .await
    .map(|data| {
        let ported = &data["container"]["from"]["withExposedPort"]["withExposedPort"]
            ["withoutExposedPort"]["withExposedPort"];
        assert_eq!(
            ported["exposedPorts"],
            json!([
                { "port": 53, "protocol": "UDP", "description": null },
                { "port": 9090, "protocol": "TCP", "description": "metrics" },
            ])
        );
    })
    .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let blob = |digest: &str| -> Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(out.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let mut exposed: Vec<&String> = config["config"]["ExposedPorts"]
        .as_object()
        .expect("ExposedPorts")
        .keys()
        .collect();
    exposed.sort();
    assert_eq!(exposed, ["53/udp", "9090/tcp"]);
}

/// The ID of a service (no ports) whose process records in cache volume `cache` that it
/// started, and on SIGTERM that it stopped gracefully.
async fn trapping_service(client: &dagr_client::Client, cache: &str) -> String {
    let script = "trap 'echo graceful > /cache/stopped; exit 0' TERM; echo up > /cache/started; while :; do sleep 0.1; done";
    let data = query(
        client,
        format!(
            "{{ container {{ from(address: {img}) {{ withMountedCache(path: \"/cache\", cache: {cache}) {{ withExec(args: [\"sh\", \"-c\", {script}]) {{ asService {{ id }} }} }} }} }} }}",
            img = json!(image()),
            cache = json!(cache_id(client, cache).await),
            script = json!(script),
        ),
    )
    .await
    .expect("service defined");
    data["container"]["from"]["withMountedCache"]["withExec"]["asService"]["id"]
        .as_str()
        .expect("service id")
        .to_owned()
}

async fn cache_id(client: &dagr_client::Client, key: &str) -> String {
    let data = query(
        client,
        format!("{{ cacheVolume(key: {}) {{ id }} }}", json!(key)),
    )
    .await
    .expect("cache volume");
    data["cacheVolume"]["id"]
        .as_str()
        .expect("cache id")
        .to_owned()
}

/// `cat /cache/<file>` in a fresh exec with cache volume `cache`.
async fn read_cache(
    client: &dagr_client::Client,
    cache: &str,
    file: &str,
) -> Result<String, String> {
    let data = query(
        client,
        format!(
            "{{ container {{ from(address: {img}) {{ withMountedCache(path: \"/cache\", cache: {cache}) {{ withEnvVariable(name: \"N\", value: {n}) {{ withExec(args: [\"cat\", \"/cache/{file}\"]) {{ stdout }} }} }} }} }} }}",
            img = json!(image()),
            cache = json!(cache_id(client, cache).await),
            n = json!(unique()),
        ),
    )
    .await?;
    Ok(
        data["container"]["from"]["withMountedCache"]["withEnvVariable"]["withExec"]["stdout"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn stop_terminates_gracefully_unless_killed() {
    let engine = engine(&[]);
    let client = connect(&engine).await;
    for (kill, want) in [(false, Some("graceful\n")), (true, None)] {
        let cache = format!("stop-{kill}-{}", unique());
        let service = trapping_service(&client, &cache).await;
        let id = json!(service);
        query(
            &client,
            format!("{{ loadServiceFromID(id: {id}) {{ start }} }}"),
        )
        .await
        .unwrap();
        // The trap is set once the process wrote `started`.
        let mut started = false;
        for _ in 0..200 {
            if read_cache(&client, &cache, "started").await.is_ok() {
                started = true;
                break;
            }
        }
        assert!(started, "the service never started");
        query(
            &client,
            format!("{{ loadServiceFromID(id: {id}) {{ stop(kill: {kill}) }} }}"),
        )
        .await
        .unwrap();
        let stopped = read_cache(&client, &cache, "stopped").await.ok();
        assert_eq!(stopped.as_deref(), want, "kill: {kill}");
    }
}
