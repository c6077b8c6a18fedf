//! Git sources: `Query.git`, `GitRepository` (`head`, `branch`, `tag`, `commit`, `ref`,
//! `withAuthToken`, `withAuthHeader`) and `GitRef` (`tree`, `commit`). A ref's tree is an
//! [`Op::Git`] vertex: the worker resolves the ref to a commit on every solve (one `ls-remote`)
//! and keys the result by that commit. Auth secrets enter ops and IDs only as secret IDs.
//! With `experimentalServiceHost`, the service runs while the engine talks to the remote, and
//! the URL may name it by its hostname.

use dagr_gql::{Arg, Args, Field, FieldError, Object, SchemaBuilder, Value};
use dagr_solver::{GitAuth, GitOp, HostSocket, Op, Vertex};
use serde::Deserialize;

use crate::args::{NameArgs, null_as_default};
use crate::state::{Directory, Fs, Secret, Socket};
use crate::{caller, graph_err, obj, services};

/// A repository and how to reach it.
#[derive(Clone, Debug)]
pub struct GitRepository {
    url: String,
    keep_git_dir: bool,
    auth: Option<(AuthKind, Secret)>,
    ssh_auth_socket: Option<Socket>,
    ssh_known_hosts: String,
    service_hostnames: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum AuthKind {
    Token,
    Header,
}

/// A ref of a repository (a branch, tag, commit, `HEAD` or any ref name).
#[derive(Clone, Debug)]
pub struct GitRef {
    repo: GitRepository,
    reference: String,
}

impl GitRef {
    fn op(&self) -> GitOp {
        let repo = &self.repo;
        GitOp {
            remote: repo.url.clone(),
            reference: self.reference.clone(),
            keep_git_dir: repo.keep_git_dir,
            auth: repo.auth.as_ref().map(|(kind, secret)| match kind {
                AuthKind::Token => GitAuth::Token {
                    secret_id: secret.digest.clone(),
                },
                AuthKind::Header => GitAuth::Header {
                    secret_id: secret.digest.clone(),
                },
            }),
            ssh_auth_socket: repo.ssh_auth_socket.as_ref().map(|s| HostSocket {
                session_id: s.client.session_id.clone(),
                client_id: s.client.client_id.clone(),
                path: s.path.clone(),
            }),
            ssh_known_hosts: repo.ssh_known_hosts.clone(),
            service_hostnames: repo.service_hostnames.clone(),
        }
    }
}

/// Adds `Query.git`, `GitRepository` and `GitRef`.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let repository = Object::new("GitRepository")
        .with_id()
        .field(git_ref("branch"))
        .field(commit())
        .field(head())
        .field(git_ref("ref"))
        .field(git_ref("tag"))
        .field(with_auth("withAuthHeader", "header", AuthKind::Header))
        .field(with_auth("withAuthToken", "token", AuthKind::Token));
    let reference = Object::new("GitRef")
        .with_id()
        .field(ref_commit())
        .field(tree());
    b.object(repository).object(reference)
}

#[derive(Deserialize)]
struct GitArgs {
    url: String,
    #[serde(default, deserialize_with = "null_as_default", rename = "keepGitDir")]
    keep_git_dir: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "sshKnownHosts"
    )]
    ssh_known_hosts: String,
}

impl Args for GitArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("experimentalServiceHost", "ServiceID"),
            Arg::new("keepGitDir", "Boolean").default(false),
            Arg::new("sshAuthSocket", "SocketID"),
            Arg::new("sshKnownHosts", "String").default(""),
            Arg::new("url", "String!"),
        ]
    }
}

/// `Query.git`: a repository by URL (`https://`, `http://`, `git://`, `ssh://`,
/// `user@host:path`, or `host/path` for https).
pub(crate) fn query_git() -> Field {
    Field::new("git", "GitRepository!")
        .args::<GitArgs>()
        .resolve_sync(|ctx| {
            let GitArgs {
                url,
                keep_git_dir,
                ssh_known_hosts,
            } = ctx.args_as()?;
            let remote =
                dagr_source::GitRemote::new(&url).map_err(|e| FieldError::new(e.to_string()))?;
            let ssh_auth_socket = ctx
                .loaded::<Socket>("sshAuthSocket")
                .ok()
                .map(|s| s.as_ref().clone());
            Ok(obj(
                "GitRepository",
                GitRepository {
                    url: remote.url().to_owned(),
                    keep_git_dir,
                    auth: None,
                    ssh_auth_socket,
                    ssh_known_hosts,
                    service_hostnames: crate::http::service_host(ctx)?,
                },
            ))
        })
}

fn reference(repo: &GitRepository, name: String) -> Value {
    obj(
        "GitRef",
        GitRef {
            repo: repo.clone(),
            reference: name,
        },
    )
}

/// `branch`, `ref` and `tag`: a ref by name (a branch wins over a tag of the same name, as in
/// `git`; a full `refs/...` name is exact).
fn git_ref(name: &'static str) -> Field {
    Field::new(name, "GitRef!")
        .args::<NameArgs>()
        .resolve_sync(move |ctx| {
            let repo = ctx.parent::<GitRepository>()?;
            let NameArgs { name: n } = ctx.args_as()?;
            if n.is_empty() {
                return Err(FieldError::new(format!("{name} needs a name")));
            }
            Ok(reference(repo, n))
        })
}

#[derive(Deserialize)]
struct CommitArgs {
    id: String,
}

impl Args for CommitArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("id", "String!")]
    }
}

/// `commit(id)`: a commit by its full hash.
fn commit() -> Field {
    Field::new("commit", "GitRef!")
        .args::<CommitArgs>()
        .resolve_sync(|ctx| {
            let repo = ctx.parent::<GitRepository>()?;
            let CommitArgs { id } = ctx.args_as()?;
            if !dagr_source::git::is_commit_hash(&id) {
                return Err(FieldError::new(format!(
                    "commit {id:?} is not a full commit hash (40 or 64 hex digits)"
                )));
            }
            Ok(reference(repo, id.to_ascii_lowercase()))
        })
}

/// `head`: the remote's `HEAD`.
fn head() -> Field {
    Field::new("head", "GitRef!").resolve_sync(|ctx| {
        let repo = ctx.parent::<GitRepository>()?;
        Ok(reference(repo, "HEAD".to_owned()))
    })
}

/// `withAuthToken(token)` / `withAuthHeader(header)`: HTTP credentials from a secret.
fn with_auth(name: &'static str, arg: &'static str, kind: AuthKind) -> Field {
    Field::new(name, "GitRepository!")
        .arg(Arg::new(arg, "SecretID!"))
        .resolve_sync(move |ctx| {
            let mut repo = ctx.parent::<GitRepository>()?.clone();
            let secret = ctx.loaded::<Secret>(arg)?;
            repo.auth = Some((kind, secret.as_ref().clone()));
            Ok(obj("GitRepository", repo))
        })
}

/// `GitRef.commit`: the commit the ref names now.
fn ref_commit() -> Field {
    Field::new("commit", "String!").resolve(|ctx| async move {
        let s = services(&ctx)?;
        let caller = caller(&ctx)?;
        let r = ctx.parent_arc::<GitRef>()?;
        let commit = s
            .worker()
            .git_commit(&r.op(), &caller.session_id)
            .await
            .map_err(|e| FieldError::new(s.scrub(&caller.session_id, &e.to_string())))?;
        Ok(Value::leaf(commit))
    })
}

#[derive(Deserialize)]
struct TreeArgs {
    #[serde(default, rename = "sshKnownHosts")]
    ssh_known_hosts: Option<String>,
}

impl Args for TreeArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("sshAuthSocket", "SocketID"),
            Arg::new("sshKnownHosts", "String"),
        ]
    }
}

/// `GitRef.tree`: the files at the ref (with `.git` only if the repository keeps it). The SSH
/// arguments, deprecated in Dagger, replace the repository's.
fn tree() -> Field {
    Field::new("tree", "Directory!")
        .args::<TreeArgs>()
        .resolve_sync(|ctx| {
            let mut r = ctx.parent::<GitRef>()?.clone();
            let TreeArgs { ssh_known_hosts } = ctx.args_as()?;
            let socket = ctx.loaded::<Socket>("sshAuthSocket").ok();
            if ssh_known_hosts.is_some() || socket.is_some() {
                r.repo.ssh_known_hosts = ssh_known_hosts.unwrap_or_default();
                r.repo.ssh_auth_socket = socket.map(|s| s.as_ref().clone());
            }
            let v = Vertex::new(Op::Git(r.op()), vec![]).map_err(graph_err)?;
            Ok(obj(
                "Directory",
                Directory {
                    fs: Fs::main(v),
                    path: "/".into(),
                },
            ))
        })
}
