use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use dagr_solver::{
    CacheSharing, CopyOp, ExecOp, HttpOp, MkDirOp, MkFileOp, MountSource, Op, Owner, Platform,
    Vertex,
};
use serde_json::{Value, json};

use super::*;
use crate::{images_needed, parse};

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn platform(text: &str) -> Platform {
    text.parse().expect("platform")
}

fn context() -> Fs {
    let op = Op::Image {
        reference: "dagr.test/context:latest".to_owned(),
        platform: Platform::default(),
    };
    (Vertex::new(op, Vec::new()).expect("vertex"), 0)
}

fn opts() -> BuildOptions {
    BuildOptions {
        build_args: BTreeMap::new(),
        target: None,
        target_platform: platform("linux/arm64"),
        build_platform: platform("linux/amd64"),
        secrets: BTreeMap::new(),
        context: context(),
        dockerignore: Vec::new(),
    }
}

fn pinned(reference: &str) -> String {
    format!("{reference}@sha256:{}", "0".repeat(64))
}

/// Resolves every image to a pinned reference and a config (alpine-like unless given), and
/// records what was asked.
struct Images {
    configs: BTreeMap<String, Value>,
    asked: RefCell<Vec<ImageRequest>>,
}

impl Images {
    fn new() -> Self {
        Images {
            configs: BTreeMap::new(),
            asked: RefCell::new(Vec::new()),
        }
    }

    fn with(mut self, reference: &str, config: Value) -> Self {
        self.configs.insert(reference.to_owned(), config);
        self
    }

    fn resolve(&self, req: &ImageRequest) -> Option<BaseImage> {
        self.asked.borrow_mut().push(req.clone());
        let config = self
            .configs
            .get(&req.reference)
            .cloned()
            .unwrap_or_else(|| json!({"Env": [PATH_ENV], "Cmd": ["/bin/sh"]}));
        Some(BaseImage {
            pinned: pinned(&req.reference),
            config,
        })
    }
}

fn build_with(text: &str, opts: &BuildOptions, images: &Images) -> Result<Build, BuildError> {
    let df = parse(text).expect("parses");
    translate(&df, opts, &|req| images.resolve(req))
}

fn build(text: &str) -> Build {
    build_with(text, &opts(), &Images::new()).expect("translates")
}

fn build_err(text: &str, opts: &BuildOptions) -> (Option<usize>, String) {
    match build_with(text, opts, &Images::new()) {
        Ok(_) => panic!("{text:?} translated"),
        Err(e) => (e.line, e.kind.to_string()),
    }
}

/// The filesystem an input reference of `v` names.
fn input(v: &Arc<Vertex>, r: InputRef) -> Fs {
    (v.inputs()[r.input as usize].clone(), r.output)
}

fn exec(fs: &Fs) -> &ExecOp {
    match fs.0.op() {
        Op::Exec(e) => e,
        other => panic!("not an exec: {other:?}"),
    }
}

fn copy(fs: &Fs) -> &CopyOp {
    match fs.0.op() {
        Op::Copy(c) => c,
        other => panic!("not a copy: {other:?}"),
    }
}

/// The filesystem an op works on: an exec's root mount, a file op's base.
fn below(fs: &Fs) -> Option<Fs> {
    let v = &fs.0;
    let r = match v.op() {
        Op::Exec(e) => e
            .mounts
            .iter()
            .find(|m| m.dest == "/")
            .and_then(|m| match &m.source {
                MountSource::Input { input, .. } => Some(*input),
                _ => None,
            })?,
        Op::Copy(c) => c.base,
        Op::MkDir(m) => m.base,
        Op::MkFile(m) => m.base,
        _ => return None,
    };
    Some(input(v, r))
}

/// The ops from `fs` down to its base, described.
fn chain(fs: &Fs) -> Vec<String> {
    let mut out = vec![fs.0.op().describe()];
    let mut at = fs.clone();
    while let Some(next) = below(&at) {
        out.push(next.0.op().describe());
        at = next;
    }
    out
}

/// Every op description in the graph under `fs`.
fn all_ops(fs: &Fs) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![fs.0.clone()];
    while let Some(v) = stack.pop() {
        out.push(v.op().describe());
        stack.extend(v.inputs().iter().cloned());
    }
    out
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn env_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pull(reference: &str) -> String {
    format!("pull {}", pinned(reference))
}

#[test]
fn run_is_an_exec_over_the_image() {
    let b = build("FROM alpine\nENV A=1\nRUN echo $A\n");
    let e = exec(&b.rootfs);
    assert_eq!(e.args, strings(&["/bin/sh", "-c", "echo $A"]));
    assert_eq!(e.env, env_map(&[("PATH", &PATH_ENV[5..]), ("A", "1")]));
    assert_eq!(e.workdir, "/");
    assert_eq!(e.user, None);
    assert!(!e.network_disabled);
    assert_eq!(e.mounts.len(), 1);
    let root = below(&b.rootfs).expect("root");
    assert_eq!(
        root.0.op(),
        &Op::Image {
            reference: pinned("alpine"),
            platform: platform("linux/arm64")
        }
    );
    assert_eq!(b.base_image, Some(pinned("alpine")));
    assert_eq!(b.rootfs.1, 0);
}

#[test]
fn exec_form_runs_as_given_and_shell_changes_the_shell_form() {
    let b =
        build("FROM alpine\nRUN [\"echo\", \"a b\"]\nSHELL [\"/bin/bash\", \"-c\"]\nRUN echo x\n");
    assert_eq!(
        exec(&b.rootfs).args,
        strings(&["/bin/bash", "-c", "echo x"])
    );
    let first = below(&b.rootfs).expect("first");
    assert_eq!(exec(&first).args, strings(&["echo", "a b"]));
}

#[test]
fn scratch_stage_config_and_copy_from_context() {
    let b = build("FROM scratch\nCOPY a /a\n");
    let c = copy(&b.rootfs);
    assert_eq!((c.src.as_str(), c.dest.as_str()), ("/a", "/a"));
    assert!(c.copy_dir_contents && c.create_dest_path && c.allow_wildcard && c.follow_symlinks);
    assert!(!c.unpack_archive);
    assert_eq!(input(&b.rootfs.0, c.base).0.op(), &Op::Empty);
    assert_eq!(input(&b.rootfs.0, c.from).0.op(), context().0.op());
    assert_eq!(b.config, json!({"Env": [PATH_ENV], "WorkingDir": "/"}));
    assert_eq!(b.base_image, None);
}

#[test]
fn representative_config() {
    let text = r#"FROM alpine AS base
LABEL org.opencontainers.image.title="demo app"
ENV APP_HOME=/srv/app \
    MODE=prod
WORKDIR $APP_HOME
COPY --chown=1000:1000 . .
RUN --mount=type=cache,target=/root/.cache make
EXPOSE 8080 9000-9001/udp
VOLUME ["/data"]
USER 1000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD wget -q -O- http://localhost:8080/ || exit 1
STOPSIGNAL SIGINT
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
ENTRYPOINT ["/srv/app/run"]
CMD ["--serve"]
ONBUILD RUN echo child
MAINTAINER Jane Doe
"#;
    let b = build(text);
    let want = json!({
        "User": "1000",
        "ExposedPorts": {"8080/tcp": {}, "9000/udp": {}, "9001/udp": {}},
        "Env": [PATH_ENV, "APP_HOME=/srv/app", "MODE=prod"],
        "Entrypoint": ["/srv/app/run"],
        "Cmd": ["--serve"],
        "Volumes": {"/data": {}},
        "WorkingDir": "/srv/app",
        "Labels": {"org.opencontainers.image.title": "demo app"},
        "StopSignal": "SIGINT",
        "ArgsEscaped": true,
        "Healthcheck": {
            "Test": ["CMD-SHELL", "wget -q -O- http://localhost:8080/ || exit 1"],
            "Interval": 30_000_000_000_i64,
            "Timeout": 5_000_000_000_i64,
            "Retries": 3
        },
        "OnBuild": ["RUN echo child"],
        "Shell": ["/bin/ash", "-eo", "pipefail", "-c"]
    });
    assert_eq!(
        serde_json::to_string(&b.config).expect("json"),
        serde_json::to_string(&want).expect("json")
    );
    assert_eq!(b.author.as_deref(), Some("Jane Doe"));
    assert_eq!(
        chain(&b.rootfs),
        strings(&[
            "exec /bin/sh -c make",
            "copy / to /srv/app/",
            "mkdir /srv/app",
            &pull("alpine"),
        ])
    );
    let e = exec(&b.rootfs);
    assert_eq!(e.workdir, "/srv/app");
    let copied = below(&b.rootfs).expect("copy");
    assert_eq!(
        copy(&copied).owner,
        Some(Owner {
            uid: 1000,
            gid: 1000
        })
    );
}

#[test]
fn images_needed_lists_only_what_the_target_uses() {
    let text = "FROM golang:1.22 AS build\nRUN go build\nFROM node:20 AS unused\nRUN npm ci\nFROM alpine\nCOPY --from=build /out /app\nRUN --mount=type=bind,from=busybox,target=/bb true\n";
    let df = parse(text).expect("parses");
    let o = opts();
    let arm = platform("linux/arm64");
    let req = |r: &str| ImageRequest {
        reference: r.to_owned(),
        platform: arm.clone(),
    };
    assert_eq!(
        images_needed(&df, &o).expect("needed"),
        vec![req("golang:1.22"), req("alpine"), req("busybox")]
    );
    let images = Images::new();
    let b = translate(&df, &o, &|r| images.resolve(r)).expect("translates");
    assert!(!images.asked.borrow().contains(&req("node:20")));
    let ops = all_ops(&b.rootfs);
    assert!(ops.contains(&"exec /bin/sh -c go build".to_owned()));
    assert!(
        !ops.iter().any(|o| o.contains("npm") || o.contains("node")),
        "{ops:?}"
    );

    let unused = BuildOptions {
        target: Some("UNUSED".into()),
        ..opts()
    };
    assert_eq!(
        images_needed(&df, &unused).expect("needed"),
        vec![req("node:20")]
    );
}

#[test]
fn copy_from_stage_index_and_image() {
    let text = "FROM alpine AS one\nRUN touch /a\nFROM scratch\nCOPY --from=one /a /a\nCOPY --from=0 /b /b\nCOPY --from=nginx:1.25 /c /c\n";
    let b = build(text);
    let c3 = copy(&b.rootfs);
    assert_eq!(
        input(&b.rootfs.0, c3.from).0.op().describe(),
        pull("nginx:1.25")
    );
    let second = below(&b.rootfs).expect("second");
    let first = below(&second).expect("first");
    for fs in [&second, &first] {
        let from = input(&fs.0, copy(fs).from);
        assert_eq!(from.0.op().describe(), "exec /bin/sh -c touch /a");
    }
    assert_eq!(below(&first).expect("base").0.op(), &Op::Empty);
}

#[test]
fn stage_bases_continue_rootfs_config_and_state() {
    let text = "FROM alpine AS base\nARG V=1\nENV E=2\nWORKDIR /w\nUSER 7\nFROM base\nRUN true\n";
    let b = build(text);
    let e = exec(&b.rootfs);
    assert_eq!(e.env.get("V").map(String::as_str), Some("1"));
    assert_eq!(e.env.get("E").map(String::as_str), Some("2"));
    assert_eq!((e.workdir.as_str(), e.user.as_deref()), ("/w", Some("7")));
    assert_eq!(b.base_image, Some(pinned("alpine")));
    let mkdir = below(&b.rootfs).expect("mkdir");
    let Op::MkDir(m) = mkdir.0.op() else {
        panic!("mkdir")
    };
    assert_eq!(m.path, "/w");
    assert!(m.make_parents);
}

#[test]
fn arg_scoping_and_build_args() {
    let text = "ARG VERSION=3.19\nARG UNUSED\nFROM alpine:${VERSION}\nRUN echo \"[$VERSION]\"\nARG VERSION\nARG TARGETARCH\nARG BUILDPLATFORM\nARG LOCAL=x-$VERSION\nARG NOVALUE\nRUN true\n";
    let df = parse(text).expect("parses");
    let o = opts();
    assert_eq!(
        images_needed(&df, &o).expect("needed")[0].reference,
        "alpine:3.19"
    );
    let images = Images::new();
    let b = translate(&df, &o, &|r| images.resolve(r)).expect("translates");
    let last = exec(&b.rootfs);
    assert_eq!(last.env.get("VERSION").map(String::as_str), Some("3.19"));
    assert_eq!(
        last.env.get("TARGETARCH").map(String::as_str),
        Some("arm64")
    );
    assert_eq!(
        last.env.get("BUILDPLATFORM").map(String::as_str),
        Some("linux/amd64")
    );
    assert_eq!(last.env.get("LOCAL").map(String::as_str), Some("x-3.19"));
    assert!(!last.env.contains_key("NOVALUE"));
    assert!(!last.env.contains_key("UNUSED"));
    let first = exec(&below(&b.rootfs).expect("first")).clone();
    assert!(
        !first.env.contains_key("VERSION"),
        "global args need ARG in the stage"
    );
    assert_eq!(
        b.config["Env"],
        json!([PATH_ENV]),
        "ARGs stay out of the config"
    );

    let mut o = opts();
    o.build_args.insert("VERSION".into(), "3.20".into());
    o.build_args.insert("NOVALUE".into(), "given".into());
    assert_eq!(
        images_needed(&df, &o).expect("needed")[0].reference,
        "alpine:3.20"
    );
    let b = translate(&df, &o, &|r| images.resolve(r)).expect("translates");
    let last = exec(&b.rootfs);
    assert_eq!(last.env.get("LOCAL").map(String::as_str), Some("x-3.20"));
    assert_eq!(last.env.get("NOVALUE").map(String::as_str), Some("given"));
}

#[test]
fn predefined_platform_args_in_from() {
    let text = "FROM --platform=$BUILDPLATFORM golang AS build\nFROM alpine:$TARGETARCH\nCOPY --from=build /x /x\n";
    let df = parse(text).expect("parses");
    let needed = images_needed(&df, &opts()).expect("needed");
    assert_eq!(
        needed,
        vec![
            ImageRequest {
                reference: "golang".into(),
                platform: platform("linux/amd64")
            },
            ImageRequest {
                reference: "alpine:arm64".into(),
                platform: platform("linux/arm64")
            },
        ]
    );
    let mut o = opts();
    o.build_args.insert("TARGETARCH".into(), "riscv64".into());
    assert_eq!(
        images_needed(&df, &o).expect("needed")[1].reference,
        "alpine:riscv64"
    );
}

#[test]
fn env_and_arg_precedence_in_run() {
    let text = "FROM alpine\nARG X=arg\nENV X=env\nENV Y=env\nARG Y=arg\nARG Z\nENV A=1\nENV A=2 B=$A\nRUN true\n";
    let mut o = opts();
    o.build_args.insert("Z".into(), "zz".into());
    let b = build_with(text, &o, &Images::new()).expect("translates");
    let e = exec(&b.rootfs);
    // ENV after an ARG of the same name wins; an ARG declared later overrides the value for
    // the build (BuildKit's build state is last-set-wins), never the config.
    assert_eq!(e.env.get("X").map(String::as_str), Some("env"));
    assert_eq!(e.env.get("Y").map(String::as_str), Some("arg"));
    assert_eq!(e.env.get("Z").map(String::as_str), Some("zz"));
    assert_eq!(e.env.get("B").map(String::as_str), Some("1"));
    assert_eq!(
        b.config["Env"],
        json!([PATH_ENV, "X=env", "Y=env", "A=2", "B=1"])
    );
}

#[test]
fn variables_expand_in_the_instructions_buildkit_expands() {
    let text = "FROM scratch\nENV D=/data P=8080 U=app N=web S=SIGQUIT\nLABEL name=$N \"quoted key\"='$N'\nWORKDIR ${D:-/x}/w\nUSER $U\nEXPOSE $P ${Q:-9090}/udp\nVOLUME $D /v2\nSTOPSIGNAL $S\nCMD echo $N\n";
    let b = build(text);
    assert_eq!(
        b.config["Labels"],
        json!({"name": "web", "quoted key": "$N"})
    );
    assert_eq!(b.config["WorkingDir"], json!("/data/w"));
    assert_eq!(b.config["User"], json!("app"));
    assert_eq!(
        b.config["ExposedPorts"],
        json!({"8080/tcp": {}, "9090/udp": {}})
    );
    assert_eq!(b.config["Volumes"], json!({"/data": {}, "/v2": {}}));
    assert_eq!(b.config["StopSignal"], json!("SIGQUIT"));
    assert_eq!(b.config["Cmd"], json!(["/bin/sh", "-c", "echo $N"]));
}

#[test]
fn escape_directive_changes_expansion() {
    let b = build("# escape=`\nFROM scratch\nENV A=x\\y B=`$HOME C=\"q`\"\"\n");
    assert_eq!(
        b.config["Env"],
        json!([PATH_ENV, "A=x\\y", "B=$HOME", "C=q\""])
    );
}

#[test]
fn entrypoint_resets_an_inherited_cmd() {
    let b = build("FROM alpine\nENTRYPOINT [\"/e\"]\n");
    assert_eq!(b.config.get("Cmd"), None);
    assert_eq!(b.config["Entrypoint"], json!(["/e"]));
    let b = build("FROM alpine\nCMD [\"c\"]\nENTRYPOINT e\n");
    assert_eq!(b.config["Cmd"], json!(["c"]));
    assert_eq!(b.config["Entrypoint"], json!(["/bin/sh", "-c", "e"]));
    let b = build("FROM alpine AS a\nCMD [\"c\"]\nFROM a\nENTRYPOINT [\"e\"]\n");
    assert_eq!(b.config.get("Cmd"), None);
    let b = build("FROM alpine\nENTRYPOINT [\"e\"]\nENTRYPOINT []\nHEALTHCHECK NONE\n");
    assert_eq!(b.config.get("Entrypoint"), None);
    assert_eq!(b.config["Healthcheck"], json!({"Test": ["NONE"]}));
}

#[test]
fn run_mounts() {
    let text = "FROM alpine AS deps
FROM alpine
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache,sharing=locked \\
    --mount=type=cache,target=node_modules,id=nm,from=deps,source=/usr \\
    --mount=type=secret,id=token,env=TOKEN \\
    --mount=type=secret,id=npmrc,target=/root/.npmrc,mode=0440,uid=1 \\
    --mount=type=secret,id=missing \\
    --mount=type=bind,target=/ctx \\
    --mount=type=bind,from=deps,source=/etc,target=etc,rw \\
    --mount=type=tmpfs,target=/tmp,size=1m \\
    --network=none \\
    make
";
    let mut o = opts();
    o.secrets.insert("token".into(), "sha256:tok".into());
    o.secrets.insert("npmrc".into(), "sha256:npm".into());
    let b = build_with(text, &o, &Images::new()).expect("translates");
    let e = exec(&b.rootfs);
    assert!(e.network_disabled);
    assert_eq!(e.workdir, "/src");
    assert_eq!(e.secret_env, env_map(&[("TOKEN", "sha256:tok")]));
    let dests: Vec<&str> = e.mounts.iter().map(|m| m.dest.as_str()).collect();
    assert_eq!(
        dests,
        vec![
            "/",
            "/root/.cache",
            "/src/node_modules",
            "/root/.npmrc",
            "/ctx",
            "/src/etc",
            "/tmp"
        ]
    );
    let v = &b.rootfs.0;
    let m = &e.mounts;
    assert_eq!(
        m[1].source,
        MountSource::Cache {
            id: "/root/.cache".into(),
            sharing: CacheSharing::Locked,
            base: None
        }
    );
    let MountSource::Cache {
        id,
        sharing,
        base: Some(base),
    } = &m[2].source
    else {
        panic!("cache with base: {:?}", m[2].source)
    };
    assert_eq!((id.as_str(), *sharing), ("nm", CacheSharing::Shared));
    let seed = input(v, *base);
    assert_eq!(copy(&seed).src, "/usr");
    assert_eq!(
        input(&seed.0, copy(&seed).from).0.op().describe(),
        pull("alpine")
    );
    assert_eq!(
        m[3].source,
        MountSource::Secret {
            secret_id: "sha256:npm".into(),
            uid: 1,
            gid: 0,
            mode: 0o440
        }
    );
    assert!(m[3].readonly);
    let MountSource::Input { input: ctx, path } = &m[4].source else {
        panic!("bind")
    };
    assert_eq!(input(v, *ctx).0.op(), context().0.op());
    assert!(path.is_empty() && m[4].readonly);
    let MountSource::Input { input: etc, path } = &m[5].source else {
        panic!("bind from")
    };
    assert_eq!(input(v, *etc).0.op().describe(), pull("alpine"));
    assert_eq!(path, "/etc");
    assert!(!m[5].readonly);
    assert_eq!(
        m[6].source,
        MountSource::Tmpfs {
            size: Some(1 << 20)
        }
    );
    assert!(!m[6].readonly);
}

#[test]
fn secret_default_target_and_required() {
    let mut o = opts();
    o.secrets.insert("tok".into(), "sha256:t".into());
    let b = build_with(
        "FROM alpine\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n",
        &o,
        &Images::new(),
    )
    .expect("translates");
    let e = exec(&b.rootfs);
    assert_eq!(e.mounts[1].dest, "/run/secrets/tok");
    assert_eq!(
        e.mounts[1].source,
        MountSource::Secret {
            secret_id: "sha256:t".into(),
            uid: 0,
            gid: 0,
            mode: 0o400
        }
    );
    assert_eq!(
        build_err(
            "FROM alpine\n\nRUN --mount=type=secret,id=other,required true\n",
            &o
        ),
        (
            Some(3),
            "secret \"other\" is required but was not provided".into()
        )
    );
}

#[test]
fn run_errors_name_the_line() {
    let o = opts();
    assert_eq!(
        build_err("FROM alpine\nRUN --mount=type=bogus,target=/x true\n", &o),
        (Some(2), "unsupported mount type \"bogus\"".into())
    );
    assert_eq!(
        build_err("FROM alpine\nRUN --mount=type=ssh true\n", &o),
        (Some(2), "RUN --mount=type=ssh is not supported".into())
    );
    let (line, msg) = build_err("FROM alpine\nRUN --network=host true\n", &o);
    assert_eq!(line, Some(2));
    assert!(msg.starts_with("RUN --network=host"), "{msg}");
    let (line, msg) = build_err("FROM alpine\nRUN --security=insecure true\n", &o);
    assert_eq!(line, Some(2));
    assert!(msg.contains("entitlement"), "{msg}");
    assert_eq!(
        build_err("FROM alpine\nRUN --mount=type=bind,target=/ true\n", &o),
        (Some(2), "invalid mount: invalid mount target \"/\"".into())
    );
    assert_eq!(
        build_err(
            "FROM alpine AS first\nRUN --mount=type=cache,target=/x,from=later true\nFROM alpine AS later\n",
            &BuildOptions {
                target: Some("first".into()),
                ..opts()
            }
        ),
        (
            Some(2),
            "cannot use stage \"later\" here: it needs to be defined before the current stage"
                .into()
        )
    );
}

#[test]
fn run_heredocs() {
    let text = "FROM alpine\nRUN <<EOF\necho a\nEOF\nRUN <<-EOT\n\t#!/usr/bin/env python3\n\tprint(1)\n\tEOT\nRUN cat <<EOF > /x\nhello\nEOF\n";
    let b = build(text);
    let third = &b.rootfs;
    assert_eq!(
        exec(third).args,
        strings(&["/bin/sh", "-c", "cat <<EOF > /x\nhello\nEOF"])
    );
    let second = below(third).expect("second");
    let e = exec(&second);
    assert_eq!(e.args, strings(&["/bin/sh", "-c", "/dev/pipes/EOT"]));
    assert_eq!(e.mounts[1].dest, "/dev/pipes");
    assert!(e.mounts[1].readonly);
    let MountSource::Input { input: script, .. } = &e.mounts[1].source else {
        panic!("script mount")
    };
    let script = input(&second.0, *script);
    assert_eq!(
        script.0.op(),
        &Op::MkFile(MkFileOp {
            base: InputRef::main(0),
            path: "/EOT".into(),
            contents: b"#!/usr/bin/env python3\nprint(1)\n".to_vec(),
            mode: 0o755,
            owner: None
        })
    );
    let first = below(&second).expect("first");
    assert_eq!(exec(&first).args, strings(&["/bin/sh", "-c", "echo a\n"]));
}

#[test]
fn copy_heredocs_are_files_copied_into_the_stage() {
    let text = "FROM scratch\nENV NAME=world\nCOPY <<EOF /greeting\nhello $NAME \"q\"\nEOF\nCOPY --chmod=600 <<'EOF' <<B /dir/\nhello $NAME\nEOF\nb\nB\n";
    let b = build(text);
    let top = &b.rootfs;
    assert_eq!(copy(top).dest, "/dir/");
    assert_eq!(copy(top).mode, Some(0o600));
    let file = |fs: &Fs| -> (String, String) {
        let from = input(&fs.0, copy(fs).from);
        match from.0.op() {
            Op::MkFile(m) => (
                m.path.clone(),
                String::from_utf8_lossy(&m.contents).into_owned(),
            ),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(file(top), ("/B".to_owned(), "b\n".to_owned()));
    let raw = below(top).expect("raw");
    assert_eq!(file(&raw), ("/EOF".to_owned(), "hello $NAME\n".to_owned()));
    let expanded = below(&raw).expect("expanded");
    assert_eq!(copy(&expanded).dest, "/greeting");
    assert_eq!(
        file(&expanded),
        ("/EOF".to_owned(), "hello world \"q\"\n".to_owned())
    );
}

#[test]
fn add_urls_and_archives() {
    let text = "FROM scratch\nADD https://example.com/files/tool.tar.gz /opt/\nADD --chmod=755 --chown=1:2 https://example.com/x /bin/x\nADD app.tar.gz /app/\nADD --unpack=false b.tar /b\n";
    let b = build(text);
    let fourth = copy(&b.rootfs);
    assert!(!fourth.unpack_archive);
    let third_fs = below(&b.rootfs).expect("third");
    let third = copy(&third_fs);
    assert!(third.unpack_archive);
    assert_eq!(
        (third.src.as_str(), third.dest.as_str()),
        ("/app.tar.gz", "/app/")
    );
    let second_fs = below(&third_fs).expect("second");
    let second = copy(&second_fs);
    assert_eq!(second.mode, Some(0o755));
    assert_eq!(second.owner, Some(Owner { uid: 1, gid: 2 }));
    assert_eq!(
        input(&second_fs.0, second.from).0.op(),
        &Op::Http(HttpOp {
            url: "https://example.com/x".into(),
            filename: "x".into(),
            mode: 0o755,
            owner: Some(Owner { uid: 1, gid: 2 }),
            service_hostnames: Vec::new(),
        })
    );
    let first_fs = below(&second_fs).expect("first");
    let first = copy(&first_fs);
    assert_eq!(
        (first.src.as_str(), first.dest.as_str()),
        ("/tool.tar.gz", "/opt/")
    );
    assert!(!first.unpack_archive);
    let Op::Http(http) = input(&first_fs.0, first.from).0.op().clone() else {
        panic!("http")
    };
    assert_eq!((http.filename.as_str(), http.mode), ("tool.tar.gz", 0o600));
}

#[test]
fn copy_and_add_errors() {
    let o = opts();
    let cases = [
        (
            "FROM scratch AS first\nADD https://github.com/a/b.git /src\n",
            "ADD of the git repository \"https://github.com/a/b.git\" is not supported",
        ),
        (
            "FROM scratch AS first\nADD --checksum=sha256:0 https://e.com/f /f\n",
            "ADD --checksum=sha256:0 (download verification) is not supported",
        ),
        (
            "FROM scratch AS first\nADD --checksum=sha256:0 f /f\n",
            "checksum requires HTTP(S) or Git sources",
        ),
        (
            "FROM scratch AS first\nCOPY https://e.com/f /f\n",
            "source can't be a URL for COPY",
        ),
        (
            "FROM scratch AS first\nCOPY --chown=app a /a\n",
            "--chown=app: only numeric uid[:gid] (or root) is supported; names would need the image's /etc/passwd",
        ),
        (
            "FROM scratch AS first\nCOPY --chmod=999 a /a\n",
            "invalid chmod parameter: '999'. it should be octal string and between 0 and 07777",
        ),
        (
            "FROM scratch AS first\nCOPY --from=Bad! a /a\n",
            "\"Bad!\" is not a valid image reference",
        ),
        (
            "FROM scratch AS first\nCOPY --from=$X a /a\n",
            "variable expansion is not supported for --from (\"$X\"): define a stage with FROM instead",
        ),
        (
            "FROM scratch AS first\nCOPY --from=7 a /a\n",
            "invalid stage index 7",
        ),
        (
            "FROM scratch AS first\nCOPY --from=1 a /a\nFROM scratch\n",
            "cannot use stage \"1\" here: it needs to be defined before the current stage",
        ),
        (
            "FROM scratch AS first\nSTOPSIGNAL SIGNOPE\n",
            "invalid signal: SIGNOPE",
        ),
        (
            "FROM scratch AS first\nEXPOSE 80/icmp\n",
            "invalid port \"80/icmp\": invalid proto: icmp",
        ),
    ];
    let first = BuildOptions {
        target: Some("first".into()),
        ..o
    };
    for (text, want) in cases {
        let (line, msg) = build_err(text, &first);
        assert_eq!((line, msg.as_str()), (Some(2), want), "{text}");
    }
}

#[test]
fn workdir_and_destinations() {
    let text = "FROM scratch\nWORKDIR /app\nWORKDIR sub\nCOPY a b ./\nCOPY c d\nCOPY [\"e\", \"f\", \"/multi\"]\nUSER 1000:1000\nWORKDIR /owned\n";
    let b = build(text);
    assert_eq!(b.config["WorkingDir"], json!("/owned"));
    assert_eq!(
        chain(&b.rootfs),
        strings(&[
            "mkdir /owned",
            "copy /f to /multi",
            "copy /e to /multi",
            "copy /c to /app/sub/d",
            "copy /b to /app/sub/",
            "copy /a to /app/sub/",
            "mkdir /app/sub",
            "mkdir /app",
            "empty",
        ])
    );
    let Op::MkDir(MkDirOp { owner, mode, .. }) = b.rootfs.0.op() else {
        panic!("mkdir")
    };
    assert_eq!(
        (*owner, *mode),
        (
            Some(Owner {
                uid: 1000,
                gid: 1000
            }),
            0o755
        )
    );
}

#[test]
fn several_sources_do_not_make_the_destination_a_directory() {
    // BuildKit copies each source onto a destination without `/` in turn (the last one stays
    // when it is no directory); only a trailing `/` or an existing directory takes them in.
    let b = build(
        "FROM scratch\nCOPY a b /plain\nCOPY c d /dir/\nCOPY <<one <<two /inline\n1\none\n2\ntwo\n",
    );
    assert_eq!(
        chain(&b.rootfs),
        strings(&[
            "copy /two to /inline",
            "copy /one to /inline",
            "copy /d to /dir/",
            "copy /c to /dir/",
            "copy /b to /plain",
            "copy /a to /plain",
            "empty",
        ])
    );
}

#[test]
fn dockerignore_filters_the_context_only() {
    let mut o = opts();
    o.dockerignore = crate::parse_dockerignore("*.log\n/secret\n");
    let text = "FROM alpine AS other\nFROM scratch\nCOPY . /app\nCOPY --from=other /etc /etc\nRUN --mount=type=bind,target=/ctx true\n";
    let b = build_with(text, &o, &Images::new()).expect("translates");
    let e = exec(&b.rootfs);
    let MountSource::Input { input: ctx, .. } = &e.mounts[1].source else {
        panic!("bind")
    };
    let filtered = input(&b.rootfs.0, *ctx);
    let f = copy(&filtered);
    assert_eq!(f.exclude, strings(&["*.log", "secret"]));
    assert_eq!(input(&filtered.0, f.from).0.op(), context().0.op());
    let from_stage = below(&b.rootfs).expect("copy from stage");
    let c = copy(&from_stage);
    assert!(c.exclude.is_empty());
    assert_eq!(
        input(&from_stage.0, c.from).0.op().describe(),
        pull("alpine")
    );
    let from_context = below(&from_stage).expect("copy from context");
    let c = copy(&from_context);
    assert!(Arc::ptr_eq(&input(&from_context.0, c.from).0, &filtered.0));
}

#[test]
fn onbuild_triggers_of_images_and_stages_run() {
    let images = Images::new().with(
        "onbuilder",
        json!({"Env": [PATH_ENV], "OnBuild": ["RUN echo triggered", "ENV T=1"]}),
    );
    let b = build_with("FROM onbuilder\nRUN x\n", &opts(), &images).expect("translates");
    assert_eq!(
        chain(&b.rootfs),
        strings(&[
            "exec /bin/sh -c x",
            "exec /bin/sh -c echo triggered",
            &pull("onbuilder")
        ])
    );
    assert_eq!(b.config["Env"], json!([PATH_ENV, "T=1"]));
    assert_eq!(b.config.get("OnBuild"), None);

    let text = "FROM alpine AS base\nONBUILD RUN echo child\nFROM base\nRUN x\n";
    let b = build(text);
    assert_eq!(
        chain(&b.rootfs),
        strings(&[
            "exec /bin/sh -c x",
            "exec /bin/sh -c echo child",
            &pull("alpine")
        ])
    );
    assert_eq!(b.config.get("OnBuild"), None);
    let base = build_with(
        text,
        &BuildOptions {
            target: Some("base".into()),
            ..opts()
        },
        &Images::new(),
    )
    .expect("translates");
    assert_eq!(base.config["OnBuild"], json!(["RUN echo child"]));
    assert_eq!(base.rootfs.0.op().describe(), pull("alpine"));
}

#[test]
fn build_level_errors() {
    let o = opts();
    let target = BuildOptions {
        target: Some("nope".into()),
        ..opts()
    };
    assert_eq!(
        build_err("FROM alpine\n", &target),
        (None, "target stage \"nope\" could not be found".into())
    );
    assert_eq!(
        build_err("ARG X\nFROM $X\n", &o),
        (Some(2), "base name ($X) should not be blank".into())
    );
    assert_eq!(
        build_err("FROM Alpine\n", &o),
        (Some(1), "\"Alpine\" is not a valid image reference".into())
    );
    assert_eq!(
        build_err("FROM --platform=linux alpine\n", &o),
        (
            Some(1),
            "invalid platform \"linux\": want os/architecture[/variant]".into()
        )
    );
    assert_eq!(
        build_err("FROM alpine\nENV A=${B:?needed}\n", &o),
        (
            Some(2),
            "failed to process \"${B:?needed}\": B: needed".into()
        )
    );
    let df = parse("FROM alpine\n").expect("parses");
    let err = translate(&df, &o, &|_| None).expect_err("unresolved");
    assert_eq!(
        err.to_string(),
        "dockerfile line 1: image \"alpine\" was not resolved: pass every image images_needed lists"
    );
}

/// BuildKit's `testDefaultEnvWithArgs`: ENV (legacy form) after ARG, modifiers, FROM with a
/// pattern on a global ARG.
#[test]
fn default_env_with_args() {
    let text = "ARG image=idlebox\nFROM busy${image#idle} AS build\nARG my_arg\nENV my_arg \"my_arg=${my_arg:-def_val}\"\nENV my_trimmed_arg \"${my_arg%%e*}\"\nRUN ./myscript.sh $my_arg $my_trimmed_arg\n";
    let df = parse(text).expect("parses");
    assert_eq!(
        images_needed(&df, &opts()).expect("needed")[0].reference,
        "busybox"
    );
    for (arg, want, trimmed) in [
        (None, "my_arg=def_val", "my_arg=d"),
        (Some(""), "my_arg=def_val", "my_arg=d"),
        (Some("override"), "my_arg=override", "my_arg=ov"),
    ] {
        let mut o = opts();
        if let Some(a) = arg {
            o.build_args.insert("my_arg".into(), a.into());
        }
        let b = build_with(text, &o, &Images::new()).expect("translates");
        let e = exec(&b.rootfs);
        assert_eq!(
            e.env.get("my_arg").map(String::as_str),
            Some(want),
            "{arg:?}"
        );
        assert_eq!(
            e.env.get("my_trimmed_arg").map(String::as_str),
            Some(trimmed)
        );
    }
}

#[test]
fn copy_parents_keeps_the_paths_below_the_pivot() {
    let b = build("FROM scratch\nCOPY --parents ./src/./app/*.go a/b.txt /out/\n");
    let second = copy(&b.rootfs);
    assert_eq!(
        (
            second.src.as_str(),
            second.include.clone(),
            second.dest.as_str()
        ),
        ("/", strings(&["a/b.txt"]), "/out/")
    );
    let first_fs = below(&b.rootfs).expect("first");
    let first = copy(&first_fs);
    assert_eq!(
        (first.src.as_str(), first.include.clone()),
        ("/src", strings(&["app/*.go"]))
    );
}

#[test]
fn mount_from_with_a_variable_is_an_error() {
    let (line, msg) = build_err("FROM alpine\nRUN --mount=from=$X,target=/x true\n", &opts());
    assert_eq!(line, Some(2));
    assert_eq!(
        msg,
        "invalid mount: 'from' doesn't support variable expansion, define alias stage instead"
    );
}
