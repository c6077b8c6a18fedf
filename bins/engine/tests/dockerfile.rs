//! Dockerfile builds through the API (`Directory.dockerBuild`, `Container.build`) with busybox
//! from the test registry: stages, build args, targets, secrets, caching, and the errors of bad
//! Dockerfiles. `dockerfile_corpus.rs` compares whole results with `docker build`.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use dagr_testkit::gql::query;
use serde_json::{Value, json};

fn engine() -> dagr_testkit::EngineProcess {
    dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[])
}

async fn connect(engine: &dagr_testkit::EngineProcess) -> dagr_client::Client {
    dagr_testkit::gql::connect(engine, false).await
}

fn image() -> String {
    dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone()
}

/// `directory { withNewFile(...) ... }` holding `files`, as a GraphQL selection prefix; close
/// it with [`close`].
fn context(files: &[(&str, &str)]) -> String {
    let mut q = "directory {".to_owned();
    for (path, contents) in files {
        q.push_str(&format!(
            " withNewFile(path: {}, contents: {}) {{",
            json!(path),
            json!(contents)
        ));
    }
    q
}

fn close(files: usize) -> String {
    " }".repeat(files + 1)
}

/// Builds `dockerfile` (with `files` beside it) with `args` and selects `selection` of the
/// container; the container's data.
async fn build(
    client: &dagr_client::Client,
    dockerfile: &str,
    files: &[(&str, &str)],
    args: &str,
    selection: &str,
) -> Result<Value, String> {
    let mut all = vec![("Dockerfile", dockerfile)];
    all.extend_from_slice(files);
    let q = format!(
        "{{ {} dockerBuild{args} {{ {selection} }} {} }}",
        context(&all),
        close(all.len())
    );
    let data = query(client, q).await?;
    let mut v = &data["directory"];
    for _ in 0..all.len() {
        v = &v["withNewFile"];
    }
    Ok(v["dockerBuild"].clone())
}

#[tokio::test]
async fn stages_args_targets_and_config() {
    let engine = engine();
    let client = connect(&engine).await;
    let dockerfile = format!(
        r#"# syntax=docker/dockerfile:1
ARG BASE={image}
FROM $BASE AS builder
ARG GREETING=hello
WORKDIR /src
COPY greet.txt .
RUN echo "$GREETING from $(cat greet.txt)" > /src/out.txt

FROM builder AS unused
RUN exit 1

FROM $BASE
ENV APP_HOME=/app \
    MODE=${{MODE:-release}}
LABEL org.example.name="dagr test"
COPY --from=builder /src/out.txt $APP_HOME/
USER 1000:1000
EXPOSE 8080/tcp
ENTRYPOINT ["cat"]
CMD ["/app/out.txt"]
"#,
        image = image()
    );
    let c = build(
        &client,
        &dockerfile,
        &[("greet.txt", "the context")],
        "(buildArgs: [{name: \"GREETING\", value: \"hi\"}])",
        "file(path: \"/app/out.txt\") { contents } entrypoint defaultArgs user workdir envVariables { name value } labels { name value } withExec(args: []) { stdout }",
    )
    .await
    .unwrap();
    assert_eq!(c["file"]["contents"], "hi from the context\n");
    assert_eq!(c["entrypoint"], json!(["cat"]));
    assert_eq!(c["defaultArgs"], json!(["/app/out.txt"]));
    assert_eq!(c["user"], "1000:1000");
    let env: Vec<(String, String)> = c["envVariables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(env.contains(&("APP_HOME".into(), "/app".into())), "{env:?}");
    assert!(env.contains(&("MODE".into(), "release".into())), "{env:?}");
    assert_eq!(c["labels"][0]["value"], "dagr test");
    // As in Dagger, exposedPorts lists withExposedPort's ports; EXPOSE is in the image config.
    assert_eq!(c["withExec"]["stdout"], "hi from the context\n");

    // A target builds only what it needs: the failing stage runs when targeted.
    let err = build(
        &client,
        &dockerfile,
        &[("greet.txt", "x")],
        "(target: \"unused\")",
        "rootfs { entries }",
    )
    .await
    .unwrap_err();
    assert!(err.contains("exit 1"), "{err}");
    let builder = build(
        &client,
        &dockerfile,
        &[("greet.txt", "x")],
        "(target: \"builder\")",
        "workdir file(path: \"out.txt\") { contents }",
    )
    .await
    .unwrap();
    assert_eq!(builder["workdir"], "/src");
    assert_eq!(builder["file"]["contents"], "hello from x\n");
}

#[tokio::test]
async fn secrets_reach_run_mounts_and_stay_out_of_the_image() {
    let engine = engine();
    let client = connect(&engine).await;
    let data = query(
        &client,
        "{ setSecret(name: \"token\", plaintext: \"s3cr3t-value\") { id } }".to_owned(),
    )
    .await
    .unwrap();
    let secret = data["setSecret"]["id"].as_str().unwrap().to_owned();
    let dockerfile = format!(
        "FROM {}\nRUN --mount=type=secret,id=token test \"$(cat /run/secrets/token)\" = s3cr3t-value && echo ok > /checked\nRUN --mount=type=secret,id=token,target=/tok,required=true wc -c < /tok > /size\n",
        image()
    );
    let c = build(
        &client,
        &dockerfile,
        &[],
        &format!("(secrets: [{}])", json!(secret)),
        "rootfs { entries file(path: \"size\") { contents } } file(path: \"/checked\") { contents } withExec(args: [\"cat\", \"/run/secrets/token\"]) { stdout }",
    )
    .await
    .unwrap();
    assert_eq!(c["file"]["contents"], "ok\n");
    assert_eq!(
        c["rootfs"]["file"]["contents"].as_str().unwrap().trim(),
        "12"
    );
    assert!(
        !c["rootfs"]["entries"]
            .as_array()
            .unwrap()
            .contains(&json!("tok"))
    );
    // As in Dagger, the built container mounts the build's secrets (scrubbed from output).
    assert_eq!(c["withExec"]["stdout"], "***");
    // A required secret that was not given is an error naming it.
    let err = build(&client, &dockerfile, &[], "", "rootfs { entries }")
        .await
        .unwrap_err();
    assert!(err.contains("token"), "{err}");
}

#[tokio::test]
async fn container_build_and_cached_steps() {
    let engine = engine();
    let client = connect(&engine).await;
    let dockerfile = format!(
        "FROM {}\nRUN head -c 16 /dev/urandom | od -An -tx1 > /random\n",
        image()
    );
    let q = format!(
        "{{ container {{ build(context: {ctx} dockerfile: \"build.Dockerfile\") {{ file(path: \"/random\") {{ contents }} }} }} }}",
        ctx = "CTX"
    );
    let ctx_q = format!(
        "{{ {} id {} }}",
        context(&[("build.Dockerfile", &dockerfile)]),
        close(1)
    );
    let data = query(&client, ctx_q).await.unwrap();
    let ctx_id = data["directory"]["withNewFile"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = q.replace("CTX", &json!(ctx_id).to_string());
    let first = query(&client, q.clone()).await.unwrap();
    let second = query(&client, q).await.unwrap();
    let random = &first["container"]["build"]["file"]["contents"];
    assert_eq!(random.as_str().unwrap().split_whitespace().count(), 16);
    assert_eq!(
        random, &second["container"]["build"]["file"]["contents"],
        "the RUN was cached"
    );
}

#[tokio::test]
async fn bad_dockerfiles_are_errors_naming_the_line_or_value() {
    let engine = engine();
    let client = connect(&engine).await;
    let img = image();
    for (dockerfile, want) in [
        (format!("FROM {img}\nCOPY\n"), "line 2"),
        (format!("FROM {img}\nRUN --bogus true\n"), "--bogus"),
        (format!("FROM {img}\nFORM x\n"), "line 2"),
        (format!("FROM {img}\nFORM x\n"), "FORM"),
        (
            format!("FROM {img} AS a\nCOPY --from=nowhere/x:1 /a /b\n"),
            "nowhere/x:1",
        ),
        (
            format!("FROM {img}\nRUN --mount=type=magic,target=/x true\n"),
            "magic",
        ),
        (format!("FROM {img}\nCOPY --from=-bad /a /b\n"), "-bad"),
        ("RUN true\n".to_owned(), "line 1"),
        (
            format!("FROM {img}\nCOPY missing.txt /\n"),
            "no such file or directory",
        ),
    ] {
        let err = build(&client, &dockerfile, &[], "", "rootfs { entries }")
            .await
            .unwrap_err();
        assert!(err.contains(want), "{dockerfile:?}: {err}");
    }
    let err = build(
        &client,
        &format!("FROM {img} AS a\n"),
        &[],
        "(target: \"b\")",
        "rootfs { entries }",
    )
    .await
    .unwrap_err();
    assert!(err.contains("\"b\""), "{err}");
    let err = query(
        &client,
        "{ directory { dockerBuild { rootfs { entries } } } }".to_owned(),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("Dockerfile: no such file or directory"),
        "{err}"
    );
}

/// A plain tar (ASCII only, so it travels as a `withNewFile` string) with one file whose name
/// climbs out of the destination.
fn escaping_tar() -> String {
    let mut header = tar::Header::new_old();
    let name = b"../../escaped.txt";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(6);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(b"gotcha");
    bytes.resize(bytes.len() + (512 - 6) + 1024, 0);
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn add_refuses_an_archive_that_escapes_its_destination() {
    let engine = engine();
    let client = connect(&engine).await;
    let tar = escaping_tar();
    let err = build(
        &client,
        &format!("FROM {}\nADD evil.tar /unpacked/\n", image()),
        &[("evil.tar", &tar)],
        "",
        "rootfs { entries }",
    )
    .await
    .unwrap_err();
    assert!(err.contains("evil.tar"), "{err}");
    assert!(err.contains("escaped.txt") || err.contains(".."), "{err}");
}

#[tokio::test]
async fn add_of_a_url_downloads_it() {
    let server = dagr_testkit::http::FileServer::start();
    server.put("/dl/tool.sh", b"#!/bin/sh\necho tool\n");
    let engine = engine();
    let client = connect(&engine).await;
    let dockerfile = format!(
        "FROM {}\nADD {} /opt/\nADD --chmod=755 {} /opt/run.sh\n",
        image(),
        server.url("/dl/tool.sh"),
        server.url("/dl/tool.sh")
    );
    let c = build(
        &client,
        &dockerfile,
        &[],
        "",
        "withExec(args: [\"sh\", \"-c\", \"stat -c '%a %n' /opt/tool.sh /opt/run.sh && /opt/run.sh\"]) { stdout }",
    )
    .await
    .unwrap();
    assert_eq!(
        c["withExec"]["stdout"],
        "600 /opt/tool.sh\n755 /opt/run.sh\ntool\n"
    );
    // The second build revalidates the download instead of fetching it again.
    let (full, _) = server.counts();
    build(&client, &dockerfile, &[], "", "rootfs { entries }")
        .await
        .unwrap();
    assert_eq!(server.counts().0, full, "no second download");
}
