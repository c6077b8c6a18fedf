//! dagr-api: the Dagger core API (names and argument types of `core-api-v0.11.8.graphqls`) as
//! `dagr-gql` resolvers that build solver graphs and solve them with the worker.
//!
//! - [`CoreApi`] owns the [`Services`] (solver, worker, [`SecretStore`], the callers' hosts through
//!   the worker's [`HostAccess`] seam); [`schema`] builds the [`dagr_gql::Schema`], whose resolvers find the
//!   services in the request data ([`CoreApi::request_data`]).
//! - Object values are lazy (see [`state`]): `withExec`, `withNewFile`, ... only add vertices;
//!   leaf fields (`stdout`, `contents`, `entries`, `sync`, `export`) solve them. Identical chains
//!   give identical vertices, so the solver's cache serves SDKs that re-send whole chains.
//! - Every request carries its caller, a [`ClientRef`], in its request data: the session and client it comes from
//!   (host reads, exports and secrets are per caller/session).
//! - `Container.terminal` gives a `Terminal` whose `sync` runs the command interactively on the
//!   caller's [`dagr_worker::UserTerminal`] (opened through [`HostAccess::open_terminal`]).
//! - Services (`service/`): containers run as services, host services and tunnels, with their
//!   lifecycle in [`RunningServices`] (one instance per session and hostname, started by the
//!   execs that bind it or `Service.start`, stopped when nothing holds it); the worker starts an
//!   exec's bindings through it ([`dagr_worker::ServiceStarter`]).
//! - Sources (`git`, `http`): `Query.git` gives `GitRepository` / `GitRef` whose trees are
//!   [`dagr_solver::Op::Git`] vertices keyed by the commit a ref resolves to; `Query.http` gives a
//!   file of an [`dagr_solver::Op::Http`] vertex keyed by the downloaded content.
//! - A failed exec answers the `EXEC_ERROR` extension; secret plaintexts are scrubbed from
//!   outputs and errors and never appear in IDs.
//! - Each field is one function that declares it, its arguments (a [`dagr_gql::Args`] struct
//!   the resolver reads with `args_as`) and its resolver: `Container`'s by family under
//!   `container/`, the others in `directory`, `file` and `query`. `owner`, `permissions` and
//!   `mode` arguments are parsed and checked in one place (`ownership`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod args;
mod container;
mod directory;
mod file;
mod git;
mod http;
pub mod module;
mod ownership;
mod query;
mod service;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use dagr_gql::{FieldError, Schema, SchemaError, Value};
use dagr_metadata::ClientRef;
use dagr_solver::{Platform, ResultRef, SolveError, Solver, Vertex};
use dagr_telemetry::SpanCx;
use dagr_worker::{HostAccess, SecretSource, Worker, WorkerError};
use parking_lot::Mutex;

pub use query::ScopedCalls;
pub use service::lifecycle::{RunningServices, ServiceError, ServiceHold};
pub use state::{Container, Directory, File, Fs};

/// Secret plaintexts by session and digest. Plaintexts live only here, in memory, and go away
/// with their session.
#[derive(Default)]
pub struct SecretStore {
    /// Session id -> digest -> plaintext.
    secrets: Mutex<HashMap<String, HashMap<String, Bytes>>>,
}

impl SecretStore {
    /// Stores `plaintext` for a session; returns its digest.
    pub fn put(&self, session_id: &str, plaintext: Bytes) -> String {
        let digest = digest_of(&plaintext);
        self.secrets
            .lock()
            .entry(session_id.to_owned())
            .or_default()
            .insert(digest.clone(), plaintext);
        digest
    }

    pub fn get(&self, session_id: &str, digest: &str) -> Option<Bytes> {
        self.secrets.lock().get(session_id)?.get(digest).cloned()
    }

    /// The session's plaintexts (none: no lock held afterwards, nothing copied).
    fn plaintexts(&self, session_id: &str) -> Vec<Bytes> {
        self.secrets
            .lock()
            .get(session_id)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn release_session(&self, session_id: &str) {
        self.secrets.lock().remove(session_id);
    }
}

impl SecretSource for SecretStore {
    fn secret(&self, session_id: &str, secret_id: &str) -> Option<Bytes> {
        self.get(session_id, secret_id)
    }
}

/// Registry credentials of each session (`withRegistryAuth`): host -> username and the digest of
/// the secret holding the password, resolved through the [`SecretStore`] when asked.
pub struct RegistryAuthStore {
    secrets: Arc<SecretStore>,
    creds: Mutex<HashMap<(String, String), (String, String)>>,
}

impl RegistryAuthStore {
    pub fn new(secrets: Arc<SecretStore>) -> Self {
        RegistryAuthStore {
            secrets,
            creds: Mutex::new(HashMap::new()),
        }
    }

    pub fn set(&self, session_id: &str, host: &str, username: &str, secret_digest: &str) {
        self.creds.lock().insert(
            (session_id.to_owned(), host.to_owned()),
            (username.to_owned(), secret_digest.to_owned()),
        );
    }

    pub fn remove(&self, session_id: &str, host: &str) {
        self.creds
            .lock()
            .remove(&(session_id.to_owned(), host.to_owned()));
    }

    pub fn release_session(&self, session_id: &str) {
        self.creds.lock().retain(|(s, _), _| s != session_id);
    }
}

impl dagr_worker::SessionRegistryAuth for RegistryAuthStore {
    fn credentials(&self, session_id: &str, host: &str) -> Option<(String, String)> {
        let (user, digest) = self
            .creds
            .lock()
            .get(&(session_id.to_owned(), host.to_owned()))
            .cloned()?;
        let secret = self.secrets.get(session_id, &digest)?;
        Some((user, String::from_utf8_lossy(&secret).into_owned()))
    }
}

/// `sha256:<hex>`, the same digest dagr-gql records for sensitive arguments.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Version facts the API answers.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub engine_version: String,
    pub min_client_version: semver::Version,
    pub platform: Platform,
}

/// What resolvers use.
pub struct Services {
    pub solver: Solver<Worker>,
    pub secrets: Arc<SecretStore>,
    pub registry_auth: Arc<RegistryAuthStore>,
    pub host: Arc<dyn HostAccess>,
    pub config: ApiConfig,
    /// The services of every session (see [`RunningServices`]).
    pub running: RunningServices,
    /// Modules served by clients and the calls of nested clients (see [`module::Modules`]).
    pub modules: module::Modules,
    /// The host-scoped calls each client made (see [`ScopedCalls`]).
    pub scoped_calls: ScopedCalls,
}

impl Services {
    pub fn worker(&self) -> &Worker {
        self.solver.runner()
    }

    /// Solves `vertex` for the caller's session, mapping failures to GraphQL errors.
    pub(crate) async fn solve(
        &self,
        caller: &Caller,
        vertex: &Arc<Vertex>,
    ) -> Result<ResultRef, FieldError> {
        self.solver
            .solve(vertex, &caller.session_id, &caller.span)
            .await
            .map(|s| s.result)
            .map_err(|e| self.solve_error(caller, &e))
    }

    /// Solves a filesystem and returns its snapshot key.
    pub(crate) async fn snapshot_of(&self, caller: &Caller, fs: &Fs) -> Result<String, FieldError> {
        let result = self.solve(caller, &fs.vertex).await?;
        dagr_worker::output_snapshot(&result, fs.output).map_err(|e| FieldError::new(e.to_string()))
    }

    /// Replaces every secret plaintext of the session by `***`.
    pub fn scrub(&self, session_id: &str, text: &str) -> String {
        self.scrub_cow(session_id, text).into_owned()
    }

    /// [`Services::scrub`], borrowing `text` when it holds no secret.
    fn scrub_cow<'a>(&self, session_id: &str, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for s in self.secrets.plaintexts(session_id) {
            if let Ok(plain) = std::str::from_utf8(&s)
                && !plain.is_empty()
                && out.contains(plain)
            {
                out = std::borrow::Cow::Owned(out.replace(plain, "***"));
            }
        }
        out
    }

    fn solve_error(&self, caller: &ClientRef, e: &SolveError) -> FieldError {
        if let Some(WorkerError::ExecFailed(dagr_worker::ExecFailed {
            args,
            exit_code,
            limit,
            stdout,
            stderr,
        })) = find_worker_error(e)
        {
            // Scrubbed before the cut, so no part of a secret survives at the boundary.
            let cap = |s: &[u8]| {
                let text = String::from_utf8_lossy(s);
                tail_capped(&self.scrub(&caller.session_id, text.trim()))
            };
            let cmd: Vec<String> = args
                .iter()
                .map(|a| self.scrub(&caller.session_id, a))
                .collect();
            return FieldError::new(format!(
                "process \"{}\" did not complete successfully: exit code: {exit_code}{}",
                cmd.join(" "),
                limit.map(|l| format!(": {l}")).unwrap_or_default()
            ))
            .with_extension("_type", "EXEC_ERROR")
            .with_extension("cmd", serde_json::json!(cmd))
            .with_extension("exitCode", *exit_code)
            .with_extension("stdout", cap(stdout.as_ref()))
            .with_extension("stderr", cap(stderr.as_ref()));
        }
        FieldError::new(self.scrub(&caller.session_id, &e.to_string()))
    }
}

/// Bytes of stdout/stderr kept in an `EXEC_ERROR` (Dagger's `MaxExecErrorOutputBytes`).
const EXEC_OUTPUT_CAP: usize = 100 * 1024;

/// The end of `text`: its last [`EXEC_OUTPUT_CAP`] bytes (from a char boundary) after Dagger's
/// `[omitting N bytes]...` when something was cut, since the end is where a failure shows.
fn tail_capped(text: &str) -> String {
    if text.len() <= EXEC_OUTPUT_CAP {
        return text.to_owned();
    }
    let mut start = text.len() - EXEC_OUTPUT_CAP;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[omitting {start} bytes]...{}", &text[start..])
}

fn find_worker_error(e: &SolveError) -> Option<&WorkerError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(run) = err.downcast_ref::<dagr_solver::RunError>()
            && let Some(w) = run.downcast_ref::<WorkerError>()
        {
            return Some(w);
        }
        cur = err.source();
    }
    None
}

/// The core API: services plus the schema built on them.
#[derive(Clone)]
pub struct CoreApi {
    services: Arc<Services>,
}

impl CoreApi {
    /// The API over `services`; execs that bind services start them through
    /// `services.running`.
    pub fn new(services: Services) -> CoreApi {
        services
            .worker()
            .set_service_starter(Arc::new(services.running.clone()));
        CoreApi {
            services: Arc::new(services),
        }
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The request data a request to [`schema`] needs: the services, the caller and where its
    /// spans go (see [`CoreApi::scrubber`]).
    pub fn request_data(&self, caller: ClientRef, span: SpanCx) -> dagr_gql::RequestData {
        dagr_gql::RequestData::new()
            .with(self.services.clone())
            .with(caller)
            .with(span)
    }

    /// Replaces a session's secret plaintexts in telemetry (span texts and logs), as they are
    /// replaced in outputs and errors.
    pub fn scrubber(&self, session_id: &str) -> dagr_telemetry::Scrubber {
        let services = self.services.clone();
        let session_id = session_id.to_owned();
        Arc::new(move |text: &str| services.scrub_cow(&session_id, text))
    }

    /// Releases what a session held: cache leases, resolved tags, secrets.
    pub fn release_session(&self, session_id: &str) {
        self.services.solver.release_session(session_id);
        self.services.worker().release_session(session_id);
        self.services.secrets.release_session(session_id);
        self.services.registry_auth.release_session(session_id);
        self.services.running.release_session(session_id);
        self.services.modules.release_session(session_id);
        self.services.scoped_calls.release_session(session_id);
    }

    /// The schema `client` sees: [`schema`] (`core`), extended with the modules it serves.
    pub fn schema_for(&self, client: &ClientRef, core: &Schema) -> Result<Schema, FieldError> {
        self.services.modules.schema_for(client, core)
    }
}

/// The GraphQL schema of the core API. Resolvers find the [`Services`] and the caller ([`ClientRef`]) in the
/// request data ([`CoreApi::request_data`]), so the schema itself needs no running engine (it can
/// be printed with `dagr-engine schema`).
pub fn schema() -> Result<Schema, SchemaError> {
    core_builder().finish()
}

/// The builder of [`schema`], for schemas that extend it (served modules).
pub(crate) fn core_builder() -> dagr_gql::SchemaBuilder {
    let builder = Schema::build().limits(dagr_gql::Limits {
        // As large as the engine accepts (files written with withNewFile travel in queries).
        max_document_bytes: MAX_QUERY_BYTES,
        // SDK pipelines nest one level per chained call; the engine runs on threads with
        // ENGINE_THREAD_STACK bytes of stack, room for this depth even in debug builds.
        max_depth: 1000,
        ..Default::default()
    });
    // Objects in this order: it is the order of their `load<Type>FromID` fields on `Query`.
    let builder = query::register(builder);
    let builder = container::register(builder);
    let builder = directory::register(builder);
    let builder = container::register_terminal(builder);
    let builder = service::register(builder);
    let builder = git::register(builder);
    module::register(builder)
}

pub(crate) fn services(ctx: &dagr_gql::ResolveCtx) -> Result<Arc<Services>, FieldError> {
    ctx.data::<Arc<Services>>().cloned()
}

/// Largest GraphQL request body the engine takes.
pub const MAX_QUERY_BYTES: usize = 32 << 20;

/// Stack size of the engine's runtime threads, for [`schema`]'s depth limit.
pub const ENGINE_THREAD_STACK: usize = 16 << 20;

/// The caller of the request a resolver serves.
pub(crate) fn caller(ctx: &dagr_gql::ResolveCtx) -> Result<Caller, FieldError> {
    Ok(Caller {
        client: ctx.data::<ClientRef>()?.clone(),
        span: ctx.span_cx().clone(),
    })
}

/// Who a resolver works for (the client, which it derefs to) and where the work it starts
/// reports (the call's span context, see [`dagr_gql::ResolveCtx::span_cx`]).
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) client: ClientRef,
    pub(crate) span: dagr_telemetry::SpanCx,
}

impl std::ops::Deref for Caller {
    type Target = ClientRef;
    fn deref(&self) -> &ClientRef {
        &self.client
    }
}

pub(crate) fn obj<T: Send + Sync + 'static>(type_name: &str, v: T) -> Value {
    Value::object(type_name, Arc::new(v))
}

pub(crate) fn graph_err(e: dagr_solver::GraphError) -> FieldError {
    FieldError::new(format!("building the operation graph failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_error_output_keeps_its_end() {
        assert_eq!(tail_capped("short"), "short");
        let long = format!("{}END", "a".repeat(EXEC_OUTPUT_CAP));
        let capped = tail_capped(&long);
        assert_eq!(
            capped,
            format!(
                "[omitting 3 bytes]...{}END",
                "a".repeat(EXEC_OUTPUT_CAP - 3)
            )
        );
        // A cut inside a multi-byte character moves to the next boundary.
        let wide = format!("é{}", "b".repeat(EXEC_OUTPUT_CAP - 1));
        assert_eq!(wide.len(), EXEC_OUTPUT_CAP + 1);
        assert_eq!(
            tail_capped(&wide),
            format!("[omitting 2 bytes]...{}", "b".repeat(EXEC_OUTPUT_CAP - 1))
        );
    }
}
