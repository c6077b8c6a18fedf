//! Sources and builds, each against a baseline measured in the same run:
//! - a 10-step, three-stage Dockerfile (ARG, ENV, COPY, RUN, COPY --from) built cold by
//!   `Directory.dockerBuild` (context uploaded from the host) vs `docker build` of the same
//!   context on a private dockerd (BuildKit, `--network=none`); every step is made cold in both
//!   by a fresh build arg the first step of each stage uses (goal: >= 3x faster);
//! - the same build fully cached in both (goal: >= 20x faster);
//! - a git tree of a 1,000-commit repository over `git daemon`, cold (a new commit each round),
//!   vs `git clone --depth 1` of the same state (goal: <= 1.2x).
//!
//! Needs root, runc, docker-registry, skopeo, git and Debian's docker.io (`cargo xtask bench`
//! installs them).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dagr_testkit::docker::DockerDaemon;
use dagr_testkit::h2c::median;
use serde_json::{Value, json};

const DOCKERFILE: &str = r#"ARG BASE
ARG NONCE
FROM $BASE AS deps
ARG NONCE
RUN echo "$NONCE" > /nonce && mkdir -p /deps && for i in 1 2 3 4 5; do echo "dep $i" > /deps/$i; done
ENV DEPS=/deps

FROM $BASE AS build
ARG NONCE
ARG VERSION=1.0
RUN echo "$NONCE" > /nonce
COPY src/ /src/
RUN cat /src/*.txt | sort > /build.out && echo "$VERSION" >> /build.out

FROM $BASE
ARG NONCE
RUN echo "$NONCE" > /nonce
COPY --from=deps /deps /opt/deps
COPY --from=build /build.out /opt/build.out
ENV APP=/opt
CMD ["cat", "/opt/build.out"]
"#;

async fn query(client: &dagr_client::Client, q: String) -> Value {
    let answer = client.query(json!({ "query": q })).await.expect("query");
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"].clone()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn git(args: &[&str], cwd: &Path) {
    let status = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

/// A bare repository `repo.git` under the server with `commits` commits on `main`, each
/// changing one of 200 files (written with `git fast-import`).
fn big_repository(server: &dagr_testkit::git::GitServer, commits: usize) {
    server.create("repo.git");
    let mut stream = String::new();
    for i in 0..commits {
        stream.push_str(&format!(
            "commit refs/heads/main\ncommitter dagr <dagr@example.invalid> {} +0000\ndata 8\ncommit {}\n",
            1_700_000_000 + i,
            i % 10
        ));
        if i == 0 {
            for f in 0..200 {
                let body = format!("file {f}\n").repeat(50);
                stream.push_str(&format!(
                    "M 644 inline src/f{f}.txt\ndata {}\n{body}\n",
                    body.len()
                ));
            }
        } else {
            let body = format!("file {} changed in commit {i}\n", i % 200).repeat(50);
            stream.push_str(&format!(
                "M 644 inline src/f{}.txt\ndata {}\n{body}\n",
                i % 200,
                body.len()
            ));
        }
    }
    let repo = server.repo_path("repo.git");
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .env("GIT_DIR", &repo)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("git fast-import");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream.as_bytes())
        .expect("write the import stream");
    assert!(child.wait().expect("fast-import").success());
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
    let runs = 8;

    // 1 and 2: the Dockerfile, cold and cached.
    let ctx = tmp.path().join("context");
    std::fs::create_dir_all(ctx.join("src")).expect("context");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("Dockerfile");
    for i in 0..20 {
        std::fs::write(ctx.join(format!("src/{i}.txt")), format!("line {i}\n")).expect("src");
    }
    let docker = DockerDaemon::start();
    let docker_build = |nonce: &str| {
        docker.timed_build(
            &ctx,
            "bench/sources",
            &[format!("BASE={image}"), format!("NONCE={nonce}")],
        )
    };
    let dagr_build = |nonce: &str| {
        let q = format!(
            "{{ host {{ directory(path: {ctx}) {{ dockerBuild(buildArgs: [{{name: \"BASE\", value: {image}}}, {{name: \"NONCE\", value: {nonce}}}]) {{ sync }} }} }} }}",
            ctx = json!(ctx.display().to_string()),
            image = json!(image),
            nonce = json!(nonce),
        );
        let t = Instant::now();
        rt.block_on(query(&client, q));
        t.elapsed()
    };
    // Base image pulled by both first.
    docker_build("warm-up");
    dagr_build("warm-up");
    let (mut docker_cold, mut dagr_cold) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let nonce = format!("cold-{i}-{}", std::process::id());
        docker_cold.push(docker_build(&nonce));
        dagr_cold.push(dagr_build(&nonce));
    }
    let (docker_cold, dagr_cold) = (median(docker_cold), median(dagr_cold));
    println!(
        "10-step Dockerfile, cold: dagr median {dagr_cold:?}, docker build median {docker_cold:?}, dagr is {:.1}x faster (goal >= 3x)",
        ratio(docker_cold, dagr_cold)
    );
    let (mut docker_cached, mut dagr_cached) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        docker_cached.push(docker_build("cached"));
        dagr_cached.push(dagr_build("cached"));
    }
    let (docker_cached, dagr_cached) = (median(docker_cached), median(dagr_cached));
    println!(
        "10-step Dockerfile, fully cached: dagr median {dagr_cached:?}, docker build median {docker_cached:?}, dagr is {:.1}x faster (goal >= 20x)",
        ratio(docker_cached, dagr_cached)
    );
    drop(docker);

    // 3: a git tree of a 1,000-commit repository vs git clone --depth 1.
    let server = dagr_testkit::git::GitServer::start(None);
    big_repository(&server, 1000);
    let url = server.daemon_url("repo.git");
    let work = tmp.path().join("clones");
    std::fs::create_dir_all(&work).expect("clones");
    let (mut clones, mut trees) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // A new commit: nothing of it is cached in the engine.
        server.commit(
            "repo.git",
            "main",
            &[("round.txt", &format!("{i}"))],
            "round",
        );
        let dest = work.join(format!("clone-{i}"));
        let t = Instant::now();
        git(
            &[
                "clone",
                "--quiet",
                "--depth",
                "1",
                &url,
                dest.to_str().expect("utf-8"),
            ],
            &work,
        );
        clones.push(t.elapsed());
        let q = format!(
            "{{ git(url: {}) {{ branch(name: \"main\") {{ tree {{ sync }} }} }} }}",
            json!(url)
        );
        let t = Instant::now();
        rt.block_on(query(&client, q));
        trees.push(t.elapsed());
    }
    let (clone, tree) = (median(clones), median(trees));
    println!(
        "git tree of a 1,000-commit repository over git daemon: dagr median {tree:?}, git clone --depth 1 median {clone:?}, ratio {:.2}x (goal <= 1.2x)",
        ratio(tree, clone)
    );
}
