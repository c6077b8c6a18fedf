//! Other platforms: a `linux/arm64` busybox (Debian's `busybox-static:arm64`) runs under QEMU
//! user emulation, which the engine registers in `binfmt_misc`; a platform nothing can emulate
//! fails with an error that says so.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::{Value, json};

fn engine() -> dagr_testkit::EngineProcess {
    dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[])
}

async fn connect(engine: &dagr_testkit::EngineProcess) -> dagr_client::Client {
    dagr_client::connect(dagr_testkit::connect_options(
        &engine.host(),
        &std::env::temp_dir(),
    ))
    .await
    .expect("connect")
}

async fn query(client: &dagr_client::Client, query: String) -> Result<Value, String> {
    let answer = client
        .query(json!({ "query": query }))
        .await
        .expect("query sent");
    match answer.get("errors").and_then(Value::as_array) {
        Some(errors) if !errors.is_empty() => Err(errors
            .iter()
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join("\n")),
        _ => Ok(answer["data"].clone()),
    }
}

fn multi() -> String {
    dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .multi_platform()
        .to_owned()
}

#[tokio::test]
async fn arm64_runs_under_emulation_and_amd64_natively() {
    let image = json!(multi());
    let engine = engine();
    let client = connect(&engine).await;
    for (platform, machine) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        let data = query(
            &client,
            format!(
                "{{ container(platform: \"{platform}\") {{ from(address: {image}) {{ platform withExec(args: [\"uname\", \"-m\"]) {{ stdout }} }} }} }}"
            ),
        )
        .await
        .unwrap();
        let from = &data["container"]["from"];
        assert_eq!(from["platform"], platform);
        assert_eq!(from["withExec"]["stdout"], format!("{machine}\n"));
    }
}

#[tokio::test]
async fn a_platform_without_an_emulator_is_a_clear_error() {
    let engine = engine();
    let client = connect(&engine).await;
    let err = query(
        &client,
        "{ container(platform: \"linux/wasm\") { withExec(args: [\"true\"]) { sync } } }"
            .to_owned(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("linux/wasm"), "{err}");
    assert!(err.contains("cannot emulate"), "{err}");
}
