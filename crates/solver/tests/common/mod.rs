//! A recording [`OpRunner`] for tests: it models a filesystem as a JSON map path -> contents in
//! the result metadata, reads host directories from disk, and lets tests block, fail or panic
//! execs and observe concurrency and cancellation.
#![allow(clippy::unwrap_used, dead_code)] // tests may unwrap; not every test uses every helper

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dagr_solver::{
    ClientRef, ExecOp, InputRef, MkFileOp, Mount, MountSource, Op, OpRunner, Platform, ResultRef,
    RunCtx, RunError, RunOutput, Solver, SolverOptions, Vertex,
};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

#[derive(Default)]
pub struct TestRunner {
    /// One line per run: "<kind> <label>".
    pub calls: Mutex<Vec<String>>,
    pub resolves: AtomicUsize,
    /// Image reference -> digest the resolver returns.
    pub image_digests: Mutex<HashMap<String, String>>,
    /// Execs running `block` wait until this is true.
    pub gate: Gate,
    pub execs_running: AtomicUsize,
    pub execs_max: AtomicUsize,
    /// Execs started and not finished whose future was dropped.
    pub dropped: AtomicUsize,
    /// Execs running `fail` fail while this is true.
    pub failing: AtomicBool,
    /// Results a remote cache has, by key: imported instead of run.
    pub remote: Mutex<HashMap<dagr_solver::CacheKey, Files>>,
    /// (dropped, kept) result ids of every discard.
    pub discarded: Mutex<Vec<(String, String)>>,
    next_id: AtomicU64,
}

pub struct Gate(tokio::sync::watch::Sender<bool>);

impl Default for Gate {
    fn default() -> Self {
        Gate(tokio::sync::watch::channel(false).0)
    }
}

impl Gate {
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub fn close(&self) {
        self.0.send_replace(false);
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

struct ExecGuard<'a> {
    runner: &'a TestRunner,
    finished: bool,
}

impl Drop for ExecGuard<'_> {
    fn drop(&mut self) {
        self.runner.execs_running.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.runner.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Files = BTreeMap<String, String>;

fn files_of(r: &ResultRef) -> Files {
    serde_json::from_value(r.metadata()["files"].clone()).unwrap_or_default()
}

pub fn files(r: &ResultRef) -> Files {
    files_of(r)
}

impl TestRunner {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    fn output(&self, files: Files) -> RunOutput {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        RunOutput::new(ResultRef::new(
            format!("r{id}"),
            serde_json::json!({ "files": files }),
        ))
    }

    async fn exec(&self, exec: &ExecOp, inputs: &[ResultRef]) -> Result<RunOutput, RunError> {
        let now = self.execs_running.fetch_add(1, Ordering::SeqCst) + 1;
        self.execs_max.fetch_max(now, Ordering::SeqCst);
        let mut guard = ExecGuard {
            runner: self,
            finished: false,
        };
        let root = exec
            .mounts
            .iter()
            .find_map(|m| match &m.source {
                MountSource::Input { input, .. } if m.dest == "/" => Some(input.input as usize),
                _ => None,
            })
            .ok_or_else(|| RunError::msg("exec has no root mount"))?;
        let mut fs = files_of(&inputs[root]);
        let result = match exec.args.first().map(String::as_str) {
            Some("write") => {
                fs.insert(exec.args[1].clone(), exec.args[2].clone());
                Ok(self.output(fs))
            }
            Some("block") => {
                self.gate.wait().await;
                fs.insert(
                    "/blocked".into(),
                    exec.args.get(1).cloned().unwrap_or_default(),
                );
                Ok(self.output(fs))
            }
            Some("fail") => {
                self.gate.wait().await;
                if self.failing.load(Ordering::SeqCst) {
                    Err(RunError::msg("exit code 1"))
                } else {
                    Ok(self.output(fs))
                }
            }
            Some("panic") => panic!("test runner asked to panic"),
            other => Err(RunError::msg(format!("unknown command {other:?}"))),
        };
        guard.finished = true;
        result
    }
}

impl OpRunner for TestRunner {
    async fn run(
        &self,
        vertex: &Vertex,
        inputs: Vec<ResultRef>,
        ctx: &RunCtx,
    ) -> Result<RunOutput, RunError> {
        let op = vertex.op();
        let label = match op {
            Op::Exec(e) => e.args.join(" "),
            Op::MkFile(m) => m.path.clone(),
            Op::Image { reference, .. } => reference.clone(),
            Op::HostDir { path, .. } => path.clone(),
            _ => String::new(),
        };
        self.calls.lock().push(format!("{} {label}", op.kind()));
        match op {
            Op::Empty => Ok(self.output(Files::new())),
            Op::Image { reference, .. } => {
                let mut fs = Files::new();
                fs.insert(
                    "/etc/image".into(),
                    format!("{reference} {}", ctx.resolved_digest().unwrap_or("-")),
                );
                Ok(self.output(fs))
            }
            Op::HostDir { path, .. } => {
                let mut fs = Files::new();
                let mut h = Sha256::new();
                let mut entries: Vec<_> = std::fs::read_dir(path)
                    .map_err(RunError::new)?
                    .map(|e| e.map(|e| e.path()))
                    .collect::<Result<_, _>>()
                    .map_err(RunError::new)?;
                entries.sort();
                for p in entries {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    let contents = std::fs::read_to_string(&p).map_err(RunError::new)?;
                    h.update(format!("{}:{}\n{}\n", name.len(), name, contents.len()));
                    h.update(&contents);
                    fs.insert(format!("/{name}"), contents);
                }
                let mut out = self.output(fs);
                out.content_digest = Some(format!("sha256:{}", hex::encode(h.finalize())));
                Ok(out)
            }
            Op::MkFile(m) => {
                let mut fs = files_of(&inputs[m.base.input as usize]);
                fs.insert(m.path.clone(), String::from_utf8_lossy(&m.contents).into());
                Ok(self.output(fs))
            }
            Op::Merge { inputs: refs } => {
                let mut fs = Files::new();
                for r in refs {
                    fs.extend(files_of(&inputs[r.input as usize]));
                }
                Ok(self.output(fs))
            }
            Op::Exec(exec) => self.exec(exec, &inputs).await,
            other => Err(RunError::msg(format!("{} not supported", other.kind()))),
        }
    }

    async fn discard(&self, dropped: ResultRef, kept: &ResultRef) {
        self.discarded
            .lock()
            .push((dropped.id().to_owned(), kept.id().to_owned()));
    }

    async fn import(&self, vertex: &Vertex, ctx: &RunCtx) -> Option<RunOutput> {
        let files = self.remote.lock().get(&ctx.key()).cloned()?;
        self.calls
            .lock()
            .push(format!("import {}", vertex.op().kind()));
        Some(self.output(files))
    }

    async fn resolve(&self, vertex: &Vertex, _ctx: &RunCtx) -> Result<Option<String>, RunError> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        match vertex.op() {
            Op::Image { reference, .. } if reference == "panic" => {
                panic!("test runner asked to panic while resolving")
            }
            Op::Image { reference, .. } => Ok(self.image_digests.lock().get(reference).cloned()),
            _ => Ok(None),
        }
    }
}

pub fn open(dir: &Path, runner: TestRunner) -> Solver<TestRunner> {
    Solver::open(&dir.join("index.redb"), runner, SolverOptions::default()).unwrap()
}

pub fn open_with(dir: &Path, runner: TestRunner, exec_concurrency: usize) -> Solver<TestRunner> {
    Solver::open(
        &dir.join("index.redb"),
        runner,
        SolverOptions { exec_concurrency },
    )
    .unwrap()
}

pub fn platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    }
}

pub fn image(reference: &str) -> Arc<Vertex> {
    Vertex::new(
        Op::Image {
            reference: reference.into(),
            platform: platform(),
        },
        vec![],
    )
    .unwrap()
}

pub fn empty() -> Arc<Vertex> {
    Vertex::new(Op::Empty, vec![]).unwrap()
}

pub fn host_dir(path: &Path) -> Arc<Vertex> {
    Vertex::new(
        Op::HostDir {
            client: ClientRef {
                session_id: "s1".into(),
                client_id: "c1".into(),
            },
            path: path.to_string_lossy().into_owned(),
            include: vec![],
            exclude: vec![],
        },
        vec![],
    )
    .unwrap()
}

pub fn mkfile(base: &Arc<Vertex>, path: &str, contents: &str) -> Arc<Vertex> {
    Vertex::new(
        Op::MkFile(MkFileOp {
            base: InputRef::main(0),
            path: path.into(),
            contents: contents.as_bytes().to_vec(),
            mode: 0o644,
            owner: None,
        }),
        vec![Arc::clone(base)],
    )
    .unwrap()
}

pub fn exec_op(args: &[&str]) -> ExecOp {
    ExecOp {
        args: args.iter().map(|a| a.to_string()).collect(),
        workdir: "/".into(),
        mounts: vec![Mount {
            dest: "/".into(),
            source: MountSource::Input {
                input: InputRef::main(0),
                path: "/".into(),
            },
            readonly: false,
        }],
        ..ExecOp::default()
    }
}

pub fn exec(root: &Arc<Vertex>, args: &[&str]) -> Arc<Vertex> {
    Vertex::new(Op::Exec(exec_op(args)), vec![Arc::clone(root)]).unwrap()
}

pub fn merge(a: &Arc<Vertex>, b: &Arc<Vertex>) -> Arc<Vertex> {
    Vertex::new(
        Op::Merge {
            inputs: vec![InputRef::main(0), InputRef::main(1)],
        },
        vec![Arc::clone(a), Arc::clone(b)],
    )
    .unwrap()
}

/// Waits (with a generous hang-protection timeout) until `cond` holds.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}
