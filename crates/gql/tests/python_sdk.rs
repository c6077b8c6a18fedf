//! The real Python SDK (dagger-io 0.11.8 with gql 3.5, the mid-2024 pins) against the core API
//! signatures served by this executor over a minimal HTTP/1.1 listener on 127.0.0.1: it
//! introspects, validates its queries locally, chains calls, passes IDs and objects, and turns
//! `EXEC_ERROR` extensions into `ExecError`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dagr_gql::{FieldError, Request, RequestData, Resolver, Schema, Value};
use serde_json::json;

fn python() -> PathBuf {
    dagr_testkit::python::venv(
        env!("CARGO_TARGET_TMPDIR"),
        "dagger-sdk-0.11.8",
        dagr_testkit::python::DAGGER_SDK_REQUIREMENTS,
    )
}

#[derive(Clone, Default)]
struct FakeContainer {
    env: Vec<(String, String)>,
    last_exec: Vec<String>,
    mounts: Vec<String>,
}

struct FakeCache(String);

fn ctr(ctx: &dagr_gql::ResolveCtx) -> Result<FakeContainer, FieldError> {
    Ok(ctx.parent::<FakeContainer>()?.clone())
}

fn object(c: FakeContainer) -> Value {
    Value::object("Container", Arc::new(c))
}

/// Just enough behaviour behind the real signatures for the script below.
fn resolvers(type_name: &str, field: &str) -> Option<Resolver> {
    let r: Resolver = match (type_name, field) {
        ("Query", "version") => Arc::new(|_| Box::pin(async { Ok(Value::leaf("v0.11.8")) })),
        ("Query", "checkVersionCompatibility") => {
            Arc::new(|_| Box::pin(async { Ok(Value::leaf(true)) }))
        }
        ("Query", "container") => {
            Arc::new(|_| Box::pin(async { Ok(object(FakeContainer::default())) }))
        }
        ("Query", "cacheVolume") => Arc::new(|ctx| {
            Box::pin(async move {
                Ok(Value::object(
                    "CacheVolume",
                    Arc::new(FakeCache(ctx.arg("key")?)),
                ))
            })
        }),
        ("Container", "from") => Arc::new(|ctx| Box::pin(async move { Ok(object(ctr(&ctx)?)) })),
        ("Container", "withEnvVariable") => Arc::new(|ctx| {
            Box::pin(async move {
                let mut c = ctr(&ctx)?;
                c.env.push((ctx.arg("name")?, ctx.arg("value")?));
                Ok(object(c))
            })
        }),
        ("Container", "envVariable") => Arc::new(|ctx| {
            Box::pin(async move {
                let name: String = ctx.arg("name")?;
                let c = ctr(&ctx)?;
                Ok(c.env
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == name)
                    .map_or(Value::Null, |(_, v)| Value::leaf(v.clone())))
            })
        }),
        ("Container", "withMountedCache") => Arc::new(|ctx| {
            Box::pin(async move {
                let mut c = ctr(&ctx)?;
                let cache = ctx.loaded::<FakeCache>("cache")?;
                c.mounts
                    .push(format!("{}:{}", ctx.arg::<String>("path")?, cache.0));
                Ok(object(c))
            })
        }),
        ("Container", "withExec") => Arc::new(|ctx| {
            Box::pin(async move {
                let mut c = ctr(&ctx)?;
                c.last_exec = ctx.arg("args")?;
                Ok(object(c))
            })
        }),
        ("Container", "stdout") => Arc::new(|ctx| {
            Box::pin(async move {
                let c = ctr(&ctx)?;
                if c.last_exec == ["false"] {
                    return Err(FieldError::new(
                        "process \"false\" did not complete successfully: exit code: 1",
                    )
                    .with_extension("_type", "EXEC_ERROR")
                    .with_extension("cmd", json!(["false"]))
                    .with_extension("exitCode", 1)
                    .with_extension("stdout", "")
                    .with_extension("stderr", "nope"));
                }
                let mut out = c.last_exec.join(" ");
                for m in &c.mounts {
                    out.push_str(&format!(" [{m}]"));
                }
                Ok(Value::leaf(out + "\n"))
            })
        }),
        _ => return None,
    };
    Some(r)
}

/// A one-route HTTP/1.1 server (POST /query, keep-alive) on 127.0.0.1, stopped on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(schema: Schema) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            let rt = Arc::new(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .build()
                    .unwrap(),
            );
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (schema, rt) = (schema.clone(), Arc::clone(&rt));
                std::thread::spawn(move || serve_connection(stream, &schema, &rt));
            }
        });
        Server {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn serve_connection(stream: TcpStream, schema: &Schema, rt: &tokio::runtime::Runtime) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let response = match serde_json::from_slice::<Request>(&body) {
            Ok(request) => rt
                .block_on(schema.execute(request, RequestData::new()))
                .to_json(),
            Err(e) => json!({"errors": [{"message": e.to_string()}]}),
        };
        let payload = serde_json::to_vec(&response).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            payload.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(&payload))
            .is_err()
        {
            return;
        }
    }
}

/// Kills the script if the test fails while it runs.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SCRIPT: &str = r#"
import sys, anyio, dagger

async def main():
    async with dagger.Connection(dagger.Config(log_output=sys.stderr)) as client:
        assert await client.version() == "v0.11.8"
        ctr = client.container().from_("alpine").with_env_variable("A", "1").with_exec(["echo", "hi"])
        assert await ctr.stdout() == "echo hi\n"
        cid = await ctr.id()
        again = client.load_container_from_id(cid)
        assert await again.env_variable("A") == "1"
        assert await again.id() == cid
        cached = client.container().from_("alpine").with_mounted_cache("/c", client.cache_volume("k")).with_exec(["ls"])
        assert await cached.stdout() == "ls [/c:k]\n"
        try:
            await client.container().from_("alpine").with_exec(["false"]).stdout()
        except dagger.ExecError as e:
            assert e.exit_code == 1 and e.command == ["false"] and e.stderr == "nope", e
        else:
            raise AssertionError("no ExecError")
        long = client.container().from_("alpine")
        for i in range(120):
            long = long.with_env_variable(f"V{i}", str(i))
        assert await long.env_variable("V119") == "119"
    print("sdk ok")

anyio.run(main)
"#;

#[test]
fn python_sdk_0_11_8_runs_against_the_executor() {
    let python = python();
    let (schema, _) = common::core_api::core_api(resolvers);
    let server = Server::start(schema);
    let child = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .env("DAGGER_SESSION_PORT", server.port.to_string())
        .env("DAGGER_SESSION_TOKEN", "test-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    // Drain both pipes while the script runs so it can never block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout_reader = drain(Box::new(guard.0.stdout.take().unwrap()));
    let stderr_reader = drain(Box::new(guard.0.stderr.take().unwrap()));
    // Hang protection only.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the SDK script hung");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout_reader.join().unwrap();
    let stderr = stderr_reader.join().unwrap();
    assert!(status.success(), "SDK script failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "sdk ok", "{stderr}");
    drop(server);
}
