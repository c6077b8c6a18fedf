//! The Dockerfile corpus (`tests/dockerfiles/<case>/`): each case is built by dagr
//! (`Directory.dockerBuild`) and by `docker build` (a private dockerd, BuildKit, `--network=none`)
//! from the busybox image of the test registry, and the two images must have the same files
//! (paths, types, modes, owners, contents, symlink targets) and the same image config. Only
//! timestamps, which BuildKit documents as not reproducible, are left out.
//!
//! A case directory holds the context with its `Dockerfile`, and optionally `build-args` (one
//! `NAME=value` per line) and `target` (the stage to build). `BASE` is always passed as a
//! build arg: the busybox image's reference.
//!
//! The reference is Debian's `docker.io` 20.10, whose built-in Dockerfile frontend is BuildKit
//! v0.8's: cases leave out what it cannot build (heredocs, `${VAR-x}` and `${VAR+x}`,
//! `RUN --network`) or builds differently from current BuildKit, which dagr follows (the empty
//! mount points RUN mounts leave, so mount targets exist beforehand; `ADD --chown` of an
//! archive; the mode of directories `COPY --chmod` creates), and `# syntax=` (its frontend
//! image would be pulled).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dagr_testkit::docker::DockerDaemon;
use dagr_testkit::oci::{Entry, read_archive, read_rootfs_tar};
use serde_json::{Value, json};

/// The config keys compared (what `docker build` sets from Dockerfile instructions).
const CONFIG_KEYS: [&str; 12] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfiles");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    cases
}

fn build_args(case: &Path, base: &str) -> Vec<(String, String)> {
    let mut args = vec![("BASE".to_owned(), base.to_owned())];
    if let Ok(text) = std::fs::read_to_string(case.join("build-args")) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=').unwrap();
            args.push((k.to_owned(), v.to_owned()));
        }
    }
    args
}

fn target(case: &Path) -> Option<String> {
    std::fs::read_to_string(case.join("target"))
        .ok()
        .map(|t| t.trim().to_owned())
}

/// The compared part of a config's `config` section: listed keys, blanks dropped.
fn config_subset(config: &Value) -> BTreeMap<String, Value> {
    CONFIG_KEYS
        .iter()
        .filter_map(|k| {
            let v = config.get(*k)?;
            let blank = v.is_null()
                || v.as_str().is_some_and(str::is_empty)
                || v.as_array().is_some_and(Vec::is_empty)
                || v.as_object().is_some_and(serde_json::Map::is_empty);
            (!blank).then(|| ((*k).to_owned(), v.clone()))
        })
        .collect()
}

/// Differences between two file maps, one line each.
fn diff_files(dagr: &BTreeMap<String, Entry>, docker: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, want) in docker {
        match dagr.get(path) {
            None => out.push(format!("  missing in dagr: {path} {want:?}")),
            Some(got) if got != want => out.push(format!("  {path}: dagr {got:?} docker {want:?}")),
            Some(_) => {}
        }
    }
    for (path, got) in dagr {
        if !docker.contains_key(path) {
            out.push(format!("  only in dagr: {path} {got:?}"));
        }
    }
    out
}

#[tokio::test]
async fn dagr_builds_what_docker_builds() {
    let base = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone();
    let docker = DockerDaemon::start();
    let engine =
        dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[]);
    let mut options = dagr_testkit::connect_options(&engine.host(), &std::env::temp_dir());
    options.allow_send = true;
    let client = dagr_client::connect(options).await.expect("connect");
    let out = tempfile::tempdir().unwrap();
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let args = build_args(case, &base);
        let target = target(case);

        let docker_tar = out.path().join(format!("{name}-docker.tar"));
        let mut docker_args = Vec::new();
        for (k, v) in &args {
            docker_args.push("--build-arg".to_owned());
            docker_args.push(format!("{k}={v}"));
        }
        if let Some(t) = &target {
            docker_args.push(format!("--target={t}"));
        }
        let docker_config =
            docker.build(case, &docker_args, &docker_tar, &format!("corpus/{name}"));

        let dagr_tar = out.path().join(format!("{name}-dagr.tar"));
        let build_args = args
            .iter()
            .map(|(k, v)| format!("{{name: {}, value: {}}}", json!(k), json!(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let target_arg = target
            .as_ref()
            .map(|t| format!(", target: {}", json!(t)))
            .unwrap_or_default();
        let q = format!(
            "{{ host {{ directory(path: {ctx}) {{ dockerBuild(buildArgs: [{build_args}]{target_arg}) {{ export(path: {dest}) }} }} }} }}",
            ctx = json!(case.display().to_string()),
            dest = json!(dagr_tar.display().to_string()),
        );
        let answer = client
            .query(json!({ "query": q }))
            .await
            .expect("query sent");
        if let Some(errors) = answer.get("errors").filter(|e| !e.is_null()) {
            failures.push(format!("{name}: dagr failed: {errors}"));
            continue;
        }
        let dagr = read_archive(&dagr_tar);
        let docker_files = read_rootfs_tar(&docker_tar);
        assert!(
            docker_files.contains_key("bin/busybox") && dagr.files.contains_key("bin/busybox"),
            "{name}: both images hold the base image's files"
        );
        let mut problems = diff_files(&dagr.files, &docker_files);
        let (a, b) = (
            config_subset(&dagr.config["config"]),
            config_subset(&docker_config),
        );
        if a != b {
            problems.push(format!(
                "  config: dagr {} docker {}",
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            ));
        }
        if !problems.is_empty() {
            failures.push(format!("{name}:\n{}", problems.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from docker build:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
