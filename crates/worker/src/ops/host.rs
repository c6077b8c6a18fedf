//! `HostDir` ops: a client's host directory pulled through [`crate::HostAccess`] into a new
//! snapshot, keyed by the digest of its content.

use dagr_metadata::ClientRef;
use dagr_solver::RunOutput;

use crate::mounts::Cleanup;
use crate::{Worker, WorkerError, blocking, fsops};

impl Worker {
    pub(crate) async fn run_host_dir(
        &self,
        client: &ClientRef,
        path: &str,
        include: &[String],
        exclude: &[String],
    ) -> Result<RunOutput, WorkerError> {
        let mut cleanup = Cleanup::new(self.clone());
        let empty = self.empty_snapshot().await?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&empty), "host")
            .await?;
        self.inner
            .host
            .pull_dir(client, path, include, exclude, &dir)
            .await
            .map_err(|source| WorkerError::Host {
                path: path.to_owned(),
                client: client.clone(),
                source: Box::new(source),
            })?;
        let digest_dir = dir.clone();
        let digest = blocking(move || Ok(fsops::tree_digest(&digest_dir)?)).await?;
        let mut out = self.commit_output(cleanup, key).await?;
        out.content_digest = Some(digest);
        Ok(out)
    }
}
