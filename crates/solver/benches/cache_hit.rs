//! A fully cached solve of a 5-vertex graph (image -> mkfile -> exec -> mkdir -> exec, keyed
//! structurally), and of the same graph over a host read (runtime-keyed: the host op runs every
//! time, everything above it is a hit).
#![allow(clippy::unwrap_used)] // benches may unwrap

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use dagr_solver::{
    ClientRef, ExecOp, InputRef, MkDirOp, MkFileOp, Mount, MountSource, Op, OpRunner, ResultRef,
    RunCtx, RunError, RunOutput, Solver, SolverOptions, Vertex,
};

struct NoopRunner;

impl OpRunner for NoopRunner {
    async fn run(
        &self,
        vertex: &Vertex,
        _inputs: Vec<ResultRef>,
        ctx: &RunCtx,
    ) -> Result<RunOutput, RunError> {
        let mut out = RunOutput::new(ResultRef::new(
            ctx.key().to_string(),
            serde_json::json!({ "kind": vertex.op().kind() }),
        ));
        out.content_digest = Some("sha256:fixed".into());
        Ok(out)
    }
}

fn exec(root: Arc<Vertex>, arg: &str) -> Arc<Vertex> {
    Vertex::new(
        Op::Exec(ExecOp {
            args: vec!["sh".into(), "-c".into(), arg.into()],
            mounts: vec![Mount {
                dest: "/".into(),
                source: MountSource::Input {
                    input: InputRef::main(0),
                    path: "/".into(),
                },
                readonly: false,
            }],
            ..ExecOp::default()
        }),
        vec![root],
    )
    .unwrap()
}

fn graph(source: Arc<Vertex>) -> Arc<Vertex> {
    let file = Vertex::new(
        Op::MkFile(MkFileOp {
            base: InputRef::main(0),
            path: "/etc/app.conf".into(),
            contents: b"x=1".to_vec(),
            mode: 0o644,
            owner: None,
        }),
        vec![source],
    )
    .unwrap();
    let built = exec(file, "make");
    let dir = Vertex::new(
        Op::MkDir(MkDirOp {
            base: InputRef::main(0),
            path: "/out".into(),
            mode: 0o755,
            make_parents: true,
            owner: None,
        }),
        vec![built],
    )
    .unwrap();
    exec(dir, "make install")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let solver = Solver::open(
        &dir.path().join("index.redb"),
        NoopRunner,
        SolverOptions::default(),
    )
    .unwrap();

    let structural = graph(Vertex::new(Op::Empty, vec![]).unwrap());
    let host = graph(
        Vertex::new(
            Op::HostDir {
                client: ClientRef {
                    session_id: "s".into(),
                    client_id: "c".into(),
                },
                path: "/src".into(),
                include: vec![],
                exclude: vec![],
            },
            vec![],
        )
        .unwrap(),
    );
    rt.block_on(async {
        solver
            .solve(&structural, "bench", &dagr_telemetry::SpanCx::off())
            .await
            .unwrap();
        solver
            .solve(&host, "bench", &dagr_telemetry::SpanCx::off())
            .await
            .unwrap();
    });

    c.bench_function("cached solve, 5 vertices", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                solver
                    .solve(&structural, "bench", &dagr_telemetry::SpanCx::off())
                    .await
                    .unwrap(),
            )
        })
    });
    c.bench_function("cached solve, 5 vertices over a host read", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                solver
                    .solve(&host, "bench", &dagr_telemetry::SpanCx::off())
                    .await
                    .unwrap(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
