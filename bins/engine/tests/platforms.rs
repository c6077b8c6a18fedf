//! Other platforms: a `linux/arm64` busybox (Debian's `busybox-static:arm64`) runs under QEMU
//! user emulation, which the engine registers in `binfmt_misc`; a platform nothing can emulate
//! fails with an error that says so.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use dagr_testkit::gql::query;
use serde_json::{Value, json};

fn engine() -> dagr_testkit::EngineProcess {
    dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[])
}

async fn connect(engine: &dagr_testkit::EngineProcess) -> dagr_client::Client {
    dagr_testkit::gql::connect(engine, true).await
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

/// `skopeo inspect --raw` of `target` (`docker://...` or `oci-archive:...`).
fn inspect_raw(target: &str) -> Value {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", target])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn platforms_of(index: &Value) -> Vec<String> {
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn platform_variants_publish_and_export_an_index() {
    let image = json!(multi());
    let registry = &dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR")).addr;
    let engine = engine();
    let client = connect(&engine).await;
    let variant = |platform: &str| {
        format!(
            "container(platform: \"{platform}\") {{ from(address: {image}) {{ withExec(args: [\"sh\", \"-c\", \"uname -m > /arch\"]) {{ id }} }} }}"
        )
    };
    let data = query(&client, format!("{{ {} }}", variant("linux/arm64")))
        .await
        .unwrap();
    let arm64 = data["container"]["from"]["withExec"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("multi.tar");
    let target = format!("{registry}/published:multi");
    let data = query(
        &client,
        format!(
            "{{ c: {main} }}",
            main = variant("linux/amd64").replace(
                "{ id }",
                &format!(
                    "{{ publish(address: {t}, platformVariants: [{v}]) export(path: {p}, platformVariants: [{v}]) asTarball(platformVariants: [{v}]) {{ export(path: {p2}) }} }}",
                    t = json!(target),
                    v = json!(arm64),
                    p = json!(archive.display().to_string()),
                    p2 = json!(out.path().join("tarball.tar").display().to_string())
                )
            )
        ),
    )
    .await
    .unwrap();
    let pushed = data["c"]["from"]["withExec"]["publish"].as_str().unwrap();
    assert!(pushed.contains("@sha256:"), "{pushed}");
    let index = inspect_raw(&format!("docker://{target}"));
    assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"]);
    let exported = inspect_raw(&format!("oci-archive:{}", archive.display()));
    assert_eq!(platforms_of(&exported), ["linux/amd64", "linux/arm64"]);
    let tarball = inspect_raw(&format!(
        "oci-archive:{}",
        out.path().join("tarball.tar").display()
    ));
    assert_eq!(
        tarball, exported,
        "asTarball and export build the same index"
    );

    // The arm64 image of the index is the arm64 container: its exec wrote aarch64.
    let data = query(
        &client,
        format!(
            "{{ container(platform: \"linux/arm64\") {{ from(address: {}) {{ file(path: \"/arch\") {{ contents }} }} }} }}",
            json!(target)
        ),
    )
    .await
    .unwrap();
    assert_eq!(data["container"]["from"]["file"]["contents"], "aarch64\n");
}
