//! Networking and services, each against a baseline measured in the same run:
//! - an uncached `withExec(["true"])` on the engine's bridge vs `runc run` of a prepared bundle
//!   joining a prepared network namespace (goal: <= 1.3x);
//! - `Service.start` of a busybox `httpd` until it is healthy vs `runc run --detach` of the same
//!   `httpd` in a prepared namespace until it accepts a connection (goal: within 30 ms);
//! - 1 GiB read through `Service.up` from a service (busybox `httpd` sending a sparse file) vs
//!   the same amount through a direct loopback connection (goal: >= 0.5x the throughput).
//!
//! Needs root, runc, iptables, docker-registry and skopeo (`cargo xtask bench` installs them).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dagr_testkit::h2c::median;
use serde_json::{Value, json};

const GIB: u64 = 1 << 30;

/// A runc bundle of busybox running `args`, joining the network namespace pinned on `netns`.
fn bundle(dir: &Path, name: &str, args: &[&str], netns: &Path) -> PathBuf {
    let bundle = dir.join(name);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox");
    let status = Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .expect("runc spec");
    assert!(status.success());
    let path = bundle.join("config.json");
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    spec["process"]["terminal"] = Value::Bool(false);
    spec["process"]["args"] = json!(args);
    for ns in spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
    {
        if ns["type"] == "network" {
            ns["path"] = json!(netns);
        }
    }
    std::fs::write(&path, serde_json::to_vec(&spec).expect("json")).expect("write");
    bundle
}

fn runc(root: &Path, args: &[&str]) -> bool {
    Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runc")
        .success()
}

async fn query(client: &dagr_client::Client, q: String) -> Value {
    let answer = client.query(json!({ "query": q })).await.expect("query");
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"].clone()
}

fn main() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let image = registry.image.clone();
    let engine =
        dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(dagr_client::connect(dagr_testkit::connect_options(
            &engine.host(),
            &std::env::temp_dir(),
        )))
        .expect("connect");
    let tmp = tempfile::tempdir().expect("tmp");
    let netns = dagr_network::NetworkNamespace::create(&tmp.path().join("netns")).expect("netns");
    let runc_root = tmp.path().join("runc-root");
    let runs = 30;

    // 1. Uncached withExec(["true"]) on the bridge vs runc run in a prepared namespace.
    let true_bundle = bundle(tmp.path(), "true", &["/bin/busybox", "true"], netns.path());
    let mut runc_times = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        assert!(runc(
            &runc_root,
            &[
                "run",
                "--bundle",
                true_bundle.to_str().expect("utf-8"),
                &format!("true-{i}")
            ]
        ));
        runc_times.push(t.elapsed());
    }
    let mut exec_times = Vec::new();
    rt.block_on(async {
        // Pulled and unpacked once.
        query(&client, format!(r#"{{ container {{ from(address: "{image}") {{ id }} }} }}"#)).await;
        for i in 0..runs {
            let q = format!(
                r#"{{ container {{ from(address: "{image}") {{ withEnvVariable(name: "N", value: "{i}-{}") {{ withExec(args: ["true"]) {{ sync }} }} }} }} }}"#,
                std::process::id()
            );
            let t = Instant::now();
            query(&client, q).await;
            exec_times.push(t.elapsed());
        }
    });
    let (runc_med, exec_med) = (median(runc_times), median(exec_times));
    println!(
        "withExec([\"true\"]) uncached, networked: engine median {exec_med:?}, runc run in a prepared netns median {runc_med:?}, ratio {:.2}x (goal <= 1.3x)",
        exec_med.as_secs_f64() / runc_med.as_secs_f64()
    );
    // The network's share: the same on an engine with loopback-only namespaces.
    {
        let loopback = dagr_testkit::EngineProcess::start(
            Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
            &["--network", "none"],
        );
        let times = rt.block_on(async {
            let client = dagr_client::connect(dagr_testkit::connect_options(
                &loopback.host(),
                &std::env::temp_dir(),
            ))
            .await
            .expect("connect");
            query(&client, format!(r#"{{ container {{ from(address: "{image}") {{ id }} }} }}"#)).await;
            let mut times = Vec::new();
            for i in 0..runs {
                let q = format!(
                    r#"{{ container {{ from(address: "{image}") {{ withEnvVariable(name: "L", value: "{i}-{}") {{ withExec(args: ["true"]) {{ sync }} }} }} }} }}"#,
                    std::process::id()
                );
                let t = Instant::now();
                query(&client, q).await;
                times.push(t.elapsed());
            }
            times
        });
        let loopback_med = median(times);
        println!(
            "withExec([\"true\"]) uncached, --network=none: engine median {loopback_med:?}; the bridge network adds {:.1} ms",
            (exec_med.as_secs_f64() - loopback_med.as_secs_f64()) * 1000.0
        );
    }

    // 2. Service start to healthy vs runc run --detach of the same httpd until it accepts.
    let httpd_args = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/"];
    let httpd_bundle = bundle(tmp.path(), "httpd", &httpd_args, netns.path());
    let mut runc_times = Vec::new();
    for i in 0..runs {
        let id = format!("httpd-{i}");
        let t = Instant::now();
        assert!(runc(
            &runc_root,
            &[
                "run",
                "--detach",
                "--bundle",
                httpd_bundle.to_str().expect("utf-8"),
                &id
            ]
        ));
        let accepted = rt.block_on(dagr_network::run_inside(netns.path(), || {
            while std::net::TcpStream::connect(("127.0.0.1", 8080)).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
        accepted.expect("netns");
        runc_times.push(t.elapsed());
        assert!(runc(&runc_root, &["delete", "--force", &id]));
    }
    let mut service_times = Vec::new();
    rt.block_on(async {
        for i in 0..runs {
            let data = query(
                &client,
                format!(
                    r#"{{ container {{ from(address: "{image}") {{ withEnvVariable(name: "N", value: "{i}-{}") {{ withExposedPort(port: 8080) {{ withExec(args: ["httpd", "-f", "-p", "8080", "-h", "/"]) {{ asService {{ id }} }} }} }} }} }} }}"#,
                    std::process::id()
                ),
            )
            .await;
            let id = data["container"]["from"]["withEnvVariable"]["withExposedPort"]["withExec"]
                ["asService"]["id"]
                .as_str()
                .expect("id")
                .to_owned();
            let t = Instant::now();
            query(&client, format!("{{ loadServiceFromID(id: {}) {{ start }} }}", json!(id))).await;
            service_times.push(t.elapsed());
            query(&client, format!("{{ loadServiceFromID(id: {}) {{ stop }} }}", json!(id))).await;
        }
    });
    let (runc_med, service_med) = (median(runc_times), median(service_times));
    println!(
        "service start to healthy (busybox httpd): engine median {service_med:?}, runc run --detach until it accepts median {runc_med:?}, difference {:.1} ms (goal <= 30 ms)",
        (service_med.as_secs_f64() - runc_med.as_secs_f64()) * 1000.0
    );

    // 3. 1 GiB through Service.up vs a direct loopback copy, alternating, five rounds each
    // (the loopback figure itself moves a lot from run to run on this machine).
    let port = dagr_testkit::free_port();
    let engine_pid = engine.child.id();
    let up = rt.block_on(async {
        let data = query(
            &client,
            format!(
                r#"{{ container {{ from(address: "{image}") {{ withExposedPort(port: 9000) {{ withExec(args: ["sh", "-c", "mkdir -p /srv && truncate -s {GIB} /srv/big && exec httpd -f -p 9000 -h /srv"]) {{ asService {{ id }} }} }} }} }} }}"#
            ),
        )
        .await;
        let id = data["container"]["from"]["withExposedPort"]["withExec"]["asService"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        // For reference: the same GiB from a container bound to the service, across the bridge.
        let t = Instant::now();
        let counted = query(
            &client,
            format!(
                r#"{{ container {{ from(address: "{image}") {{ withEnvVariable(name: "B", value: "{}") {{ withServiceBinding(alias: "src", service: {}) {{ withExec(args: ["sh", "-c", "wget -q -O- http://src:9000/big | wc -c"]) {{ stdout }} }} }} }} }} }}"#,
                std::process::id(),
                json!(id)
            ),
        )
        .await;
        let bridge_read = t.elapsed();
        let counted = counted["container"]["from"]["withEnvVariable"]["withServiceBinding"]
            ["withExec"]["stdout"]
            .as_str()
            .expect("stdout")
            .trim()
            .to_owned();
        println!("1 GiB from a container bound to the service (bytes: {counted}): {bridge_read:?}, exec and service start included");
        let up = format!(
            "{{ loadServiceFromID(id: {}) {{ up(ports: [{{frontend: {port}, backend: 9000}}]) }} }}",
            json!(id)
        );
        let client = std::sync::Arc::new(client);
        let forwarding = {
            let client = client.clone();
            tokio::spawn(async move { client.query(json!({ "query": up })).await })
        };
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let direct = tokio::task::spawn_blocking(direct_copy).await.expect("copy");
            let cpu_before = (cpu_time(engine_pid), cpu_time(std::process::id()));
            let up = tokio::task::spawn_blocking(move || {
                let stream = loop {
                    if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                        break stream;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                };
                let t = Instant::now();
                let mut stream = stream;
                stream
                    .write_all(b"GET /big HTTP/1.0\r\n\r\n")
                    .expect("request");
                let got = read_all(stream);
                assert!(got > GIB, "{got} bytes");
                t.elapsed()
            })
            .await
            .expect("reader");
            let cpu_after = (cpu_time(engine_pid), cpu_time(std::process::id()));
            rounds.push(Round {
                direct,
                up,
                engine_cpu: cpu_after.0 - cpu_before.0,
                client_cpu: cpu_after.1 - cpu_before.1,
            });
        }
        forwarding.abort();
        rounds
    });
    let median_of = |f: fn(&Round) -> Duration| median(up.iter().map(f).collect());
    let (direct, up_median) = (median_of(|r| r.direct), median_of(|r| r.up));
    let ratios: Vec<String> = up
        .iter()
        .map(|r| format!("{:.2}", r.direct.as_secs_f64() / r.up.as_secs_f64()))
        .collect();
    println!(
        "CPU time per Service.up transfer (median): engine {:?}, client and reader (this process) {:?}",
        median_of(|r| r.engine_cpu),
        median_of(|r| r.client_cpu)
    );
    let up = up_median;
    let mib_s = |d: Duration| GIB as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "1 GiB through Service.up: median {up:?} ({:.0} MiB/s), direct loopback copy median {direct:?} ({:.0} MiB/s), throughput ratio of the medians {:.2}x (goal >= 0.5x); ratio per round: {}",
        mib_s(up),
        mib_s(direct),
        direct.as_secs_f64() / up.as_secs_f64(),
        ratios.join(", ")
    );
    drop(netns);
}

/// Rounds of the Service.up throughput comparison.
const ROUNDS: usize = 5;

/// One round: the direct copy, then the same through Service.up with the CPU time it took.
struct Round {
    direct: Duration,
    up: Duration,
    engine_cpu: Duration,
    client_cpu: Duration,
}

/// 1 GiB over a direct loopback TCP connection, written and read 256 KiB at a time.
fn direct_copy() -> Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let writer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let chunk = vec![0u8; 256 << 10];
        let mut left = GIB;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n]).expect("write");
            left -= n as u64;
        }
    });
    let t = Instant::now();
    let got = read_all(std::net::TcpStream::connect(addr).expect("connect"));
    let took = t.elapsed();
    assert_eq!(got, GIB);
    writer.join().expect("writer");
    took
}

/// User plus system CPU time of process `pid`, all threads (from `/proc/PID/stat`).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / per_second)
}

fn read_all(mut stream: std::net::TcpStream) -> u64 {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) => panic!("read: {e}"),
        }
    }
}
