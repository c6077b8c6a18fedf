//! File ops (`MkFile`, `MkDir`, `Rm`, `Copy`, `Diff`, `SetTimestamps`): [`crate::fsops`] run on
//! a blocking thread on a writable snapshot of the base input, paths resolved inside it; the
//! snapshot is committed as the result.

use std::path::Path;

use dagr_solver::{InputRef, ResultRef, RunOutput};

use crate::mounts::Cleanup;
use crate::{Worker, WorkerError, blocking, fsops, op_err, output_snapshot};

impl Worker {
    /// Runs a file op on a writable snapshot of `base`, with `from` mounted read-only when given.
    async fn run_file_op<F>(
        &self,
        base: &ResultRef,
        base_ref: &InputRef,
        from: Option<(&ResultRef, &InputRef)>,
        label: &'static str,
        f: F,
    ) -> Result<RunOutput, WorkerError>
    where
        F: FnOnce(&Path, Option<&Path>) -> Result<(), WorkerError> + Send + 'static,
    {
        let mut cleanup = Cleanup::new(self.clone());
        let base_snapshot = output_snapshot(base, base_ref.output)?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&base_snapshot), label)
            .await?;
        let from_view = match from {
            Some((r, input)) => Some(self.mount_view(&output_snapshot(r, input.output)?).await?),
            None => None,
        };
        let from_path = from_view.as_ref().map(|v| v.path().to_path_buf());
        let ran = blocking(move || f(&dir, from_path.as_deref())).await;
        if let Some(v) = from_view {
            v.release().await;
        }
        ran?;
        self.commit_output(cleanup, key).await
    }

    pub(crate) async fn run_mkfile(
        &self,
        op: &dagr_solver::MkFileOp,
        base: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let (path, contents, mode) = (op.path.clone(), op.contents.clone(), op.mode);
        let owner = op.owner;
        self.run_file_op(base, &op.base, None, "mkfile", move |root, _| {
            Ok(fsops::mkfile(root, &path, &contents, mode, owner)?)
        })
        .await
    }

    pub(crate) async fn run_mkdir(
        &self,
        op: &dagr_solver::MkDirOp,
        base: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let (path, mode, parents) = (op.path.clone(), op.mode, op.make_parents);
        let owner = op.owner;
        self.run_file_op(base, &op.base, None, "mkdir", move |root, _| {
            Ok(fsops::mkdir(root, &path, mode, parents, owner)?)
        })
        .await
    }

    pub(crate) async fn run_rm(
        &self,
        op: &dagr_solver::RmOp,
        base: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let (path, allow) = (op.path.clone(), op.allow_not_found);
        self.run_file_op(base, &op.base, None, "rm", move |root, _| {
            Ok(fsops::rm(root, &path, allow)?)
        })
        .await
    }

    pub(crate) async fn run_copy(
        &self,
        op: &dagr_solver::CopyOp,
        base: &ResultRef,
        from: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let (src, dest) = (op.src.clone(), op.dest.clone());
        let opts = fsops::CopyOptions {
            include: op.include.clone(),
            exclude: op.exclude.clone(),
            mode: op.mode,
            owner: op.owner,
            allow_wildcard: op.allow_wildcard,
            unpack_archive: op.unpack_archive,
        };
        self.run_file_op(
            base,
            &op.base,
            Some((from, &op.from)),
            "copy",
            move |root, from| {
                let from = from.ok_or_else(|| op_err("copy", "source not mounted"))?;
                fsops::copy(from, &src, root, &dest, &opts)?;
                Ok(())
            },
        )
        .await
    }

    /// What changed from `lower` to `upper`, on an empty snapshot.
    pub(crate) async fn run_diff(
        &self,
        lower: (&ResultRef, &InputRef),
        upper: (&ResultRef, &InputRef),
    ) -> Result<RunOutput, WorkerError> {
        let empty = ResultRef::new(self.empty_snapshot().await?, serde_json::Value::Null);
        let lower_view = self
            .mount_view(&output_snapshot(lower.0, lower.1.output)?)
            .await?;
        let lower_path = lower_view.path().to_path_buf();
        let out = self
            .run_file_op(
                &empty,
                &InputRef::main(0),
                Some(upper),
                "diff",
                move |root, upper| {
                    let upper = upper.ok_or_else(|| op_err("diff", "upper not mounted"))?;
                    fsops::diff_into(&lower_path, upper, root)?;
                    Ok(())
                },
            )
            .await;
        lower_view.release().await;
        out
    }

    pub(crate) async fn run_set_timestamps(
        &self,
        op: &dagr_solver::SetTimestampsOp,
        base: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let (path, timestamp) = (op.path.clone(), op.timestamp);
        self.run_file_op(base, &op.base, None, "timestamps", move |root, _| {
            Ok(fsops::set_timestamps(root, &path, timestamp)?)
        })
        .await
    }
}
