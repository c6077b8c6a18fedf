//! `Git` ops: a repository's tree at a commit, through [`dagr_source::Git`]. Resolving asks
//! the remote which commit the ref names (one `ls-remote`), and the cache key follows that
//! commit, so an unchanged ref costs one round trip and no fetch; running fetches exactly that
//! commit into a new snapshot.

use dagr_solver::{GitAuth, GitOp, RunCtx, RunOutput};
use dagr_source::{GitCredentials, GitRemote};

use crate::mounts::Cleanup;
use crate::ops::exec::SocketForward;
use crate::{Worker, WorkerError};

impl Worker {
    /// The remote of `op` with the session's credentials, and the forward of the client's SSH
    /// agent socket (kept while git runs).
    fn git_remote(
        &self,
        op: &GitOp,
        session_id: &str,
    ) -> Result<(GitRemote, Option<SocketForward>), WorkerError> {
        let mut remote = GitRemote::new(&op.remote).map_err(WorkerError::git)?;
        remote.credentials = match &op.auth {
            None => None,
            Some(GitAuth::Token { secret_id }) => Some(GitCredentials::Token(
                String::from_utf8_lossy(&self.secret(session_id, secret_id)?).into_owned(),
            )),
            Some(GitAuth::Header { secret_id }) => Some(GitCredentials::Header(
                String::from_utf8_lossy(&self.secret(session_id, secret_id)?).into_owned(),
            )),
        };
        remote.ssh.known_hosts = op.ssh_known_hosts.clone();
        let forward = match &op.ssh_auth_socket {
            Some(socket) => {
                let client = dagr_metadata::ClientRef {
                    session_id: socket.session_id.clone(),
                    client_id: socket.client_id.clone(),
                };
                let forward = self.forward_socket(client, socket.path.clone(), 0, 0)?;
                remote.ssh.auth_socket = Some(forward.path.clone());
                Some(forward)
            }
            None => None,
        };
        Ok((remote, forward))
    }

    /// The commit `op.reference` names now (one `ls-remote`), with `session_id`'s credentials.
    pub async fn git_commit(&self, op: &GitOp, session_id: &str) -> Result<String, WorkerError> {
        let (mut remote, _forward) = self.git_remote(op, session_id)?;
        let services = self
            .fetch_services("git", session_id, &op.service_hostnames)
            .await?;
        remote.hosts = services.hosts.clone();
        self.inner
            .git
            .resolve(&remote, &op.reference)
            .await
            .map_err(WorkerError::git)
    }

    pub(crate) async fn run_git(&self, op: &GitOp, ctx: &RunCtx) -> Result<RunOutput, WorkerError> {
        let commit = match ctx.resolved_digest() {
            Some(commit) => commit.to_owned(),
            None => self.git_commit(op, ctx.session_id()).await?,
        };
        let (mut remote, _forward) = self.git_remote(op, ctx.session_id())?;
        let services = self
            .fetch_services("git", ctx.session_id(), &op.service_hostnames)
            .await?;
        remote.hosts = services.hosts.clone();
        let mut cleanup = Cleanup::new(self.clone());
        let empty = self.empty_snapshot().await?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&empty), "git")
            .await?;
        self.inner
            .git
            .checkout(&remote, &op.reference, &commit, &dir, op.keep_git_dir)
            .await
            .map_err(WorkerError::git)?;
        ctx.annotate("git.commit", commit);
        self.commit_output(cleanup, key).await
    }
}
