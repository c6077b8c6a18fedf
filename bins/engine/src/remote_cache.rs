//! Remote caches of sessions: which caches a session reads (`--cache-from` and its main
//! client's `UpstreamCacheImportConfig`) and writes (`--cache-to` and
//! `UpstreamCacheExportConfig`), imports started as the session starts, and exports run in the
//! background after it ends (bounded by `--cache-export-timeout`; the results are held for GC
//! until the export ends; never delaying the client's close).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use dagr_metadata::{CacheOptionsEntry, ClientMetadata};
use dagr_remote_cache::{CacheSpec, ExportMode};
use tokio_util::task::TaskTracker;

use crate::config::RemoteCacheSettings;

/// The engine's remote caches. Cheap to clone.
#[derive(Clone)]
pub struct RemoteCaches {
    inner: Arc<Inner>,
}

struct Inner {
    api: dagr_api::CoreApi,
    from: Vec<CacheSpec>,
    to: Vec<CacheSpec>,
    export_timeout: Duration,
    /// Session id -> the caches its results go to.
    exports: parking_lot::Mutex<HashMap<String, Vec<CacheSpec>>>,
    running: TaskTracker,
    exports_done: AtomicU64,
    export_errors: AtomicU64,
}

/// Specs from a client's entries; an entry the engine cannot use is a warning.
fn client_specs(entries: &[CacheOptionsEntry], session: &str) -> Vec<CacheSpec> {
    entries
        .iter()
        .filter_map(|e| {
            let text = format!("type={},{:?}", e.kind, e.attrs);
            match CacheSpec::from_attrs(&text, &e.kind, &e.attrs) {
                Ok(spec) => Some(spec),
                Err(err) => {
                    tracing::warn!(%session, error = %err, "ignoring a client's remote cache");
                    None
                }
            }
        })
        .collect()
}

impl RemoteCaches {
    pub fn new(api: dagr_api::CoreApi, settings: &RemoteCacheSettings) -> RemoteCaches {
        RemoteCaches {
            inner: Arc::new(Inner {
                api,
                from: settings.from.clone(),
                to: settings.to.clone(),
                export_timeout: settings.export_timeout,
                exports: Default::default(),
                running: TaskTracker::new(),
                exports_done: AtomicU64::new(0),
                export_errors: AtomicU64::new(0),
            }),
        }
    }

    /// A session started: read its caches' indexes now, remember where it exports.
    pub fn session_started(&self, md: &ClientMetadata) {
        let inner = &self.inner;
        let mut from = inner.from.clone();
        from.extend(client_specs(&md.cache_imports, &md.session_id));
        let mut to = inner.to.clone();
        to.extend(client_specs(&md.cache_exports, &md.session_id));
        if !from.is_empty() {
            inner
                .api
                .services()
                .worker()
                .begin_cache_imports(&md.session_id, &from);
        }
        if !to.is_empty() {
            inner.exports.lock().insert(md.session_id.clone(), to);
        }
    }

    /// A session ended (before its leases are released): its results are held and exported in
    /// the background.
    pub fn session_ended(&self, session: &str) {
        let inner = &self.inner;
        let Some(specs) = inner.exports.lock().remove(session) else {
            return;
        };
        let solver = &inner.api.services().solver;
        let results = solver.session_results(session);
        if results.all.is_empty() {
            return;
        }
        let holder = format!("remote-cache-export:{session}");
        solver.hold(&holder, results.all.iter().map(|(k, _)| *k));
        let this = self.clone();
        let session = session.to_owned();
        inner.running.spawn(async move {
            let inner = &this.inner;
            let worker = inner.api.services().worker();
            for spec in &specs {
                let chosen = match spec.mode {
                    ExportMode::Min => &results.roots,
                    ExportMode::Max => &results.all,
                };
                if chosen.is_empty() {
                    continue;
                }
                let started = std::time::Instant::now();
                match tokio::time::timeout(inner.export_timeout, worker.export_results(spec, chosen))
                    .await
                {
                    Ok(Ok(report)) => {
                        inner.exports_done.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%session, cache = %spec.reference, entries = chosen.len(), added = report.entries_added, layers_uploaded = report.layers_uploaded, bytes_uploaded = report.bytes_uploaded, elapsed_ms = started.elapsed().as_millis() as u64, "remote cache export done");
                    }
                    Ok(Err(e)) => {
                        inner.export_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%session, cache = %spec.reference, error = %e, "remote cache export failed");
                    }
                    Err(_) => {
                        inner.export_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%session, cache = %spec.reference, timeout_s = inner.export_timeout.as_secs(), "remote cache export abandoned: it took too long");
                    }
                }
            }
            inner.api.services().solver.release_session(&holder);
        });
    }

    /// Waits for the exports still running, at most `grace`.
    pub async fn finish(&self, grace: Duration) {
        let running = &self.inner.running;
        running.close();
        if !running.is_empty() {
            tracing::info!(exports = running.len(), "waiting for remote cache exports");
        }
        if tokio::time::timeout(grace, running.wait()).await.is_err() {
            tracing::warn!("remote cache exports still running at shutdown were abandoned");
        }
    }

    /// `/metrics` counters: (name, help, value).
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let stats = self.inner.api.services().worker().remote_cache_stats();
        vec![
            (
                "dagr_remote_cache_hits_total",
                "Results imported from a remote cache instead of run.",
                stats.hits.load(Ordering::Relaxed),
            ),
            (
                "dagr_remote_cache_import_errors_total",
                "Remote cache reads or imports that failed (the ops ran here).",
                stats.import_errors.load(Ordering::Relaxed),
            ),
            (
                "dagr_remote_cache_layers_fetched_total",
                "Layer blobs fetched from remote caches.",
                stats.layers_fetched.load(Ordering::Relaxed),
            ),
            (
                "dagr_remote_cache_exports_total",
                "Session exports to a remote cache that completed.",
                self.inner.exports_done.load(Ordering::Relaxed),
            ),
            (
                "dagr_remote_cache_export_errors_total",
                "Session exports to a remote cache that failed or timed out.",
                self.inner.export_errors.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// The `auths` of a Docker config.json: host -> credentials (`auth` as base64 `user:password`,
/// or `username` and `password`).
pub fn read_auth_file(path: &std::path::Path) -> anyhow::Result<dagr_registry::StaticCredentials> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading registry credentials {}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("registry credentials {} are not JSON", path.display()))?;
    let mut creds = dagr_registry::StaticCredentials::new();
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
        anyhow::bail!(
            "registry credentials {} have no \"auths\" object",
            path.display()
        );
    };
    for (host, entry) in auths {
        // Docker writes hosts as URLs sometimes (`https://index.docker.io/v1/`).
        let host = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let host = if host == "index.docker.io" {
            "docker.io"
        } else {
            host
        };
        let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or_default();
        let (user, password) = if !field("auth").is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(field("auth"))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .with_context(|| {
                    format!("{}: the auth of {host} is not base64 text", path.display())
                })?;
            let (u, p) = decoded.split_once(':').with_context(|| {
                format!(
                    "{}: the auth of {host} is not user:password",
                    path.display()
                )
            })?;
            (u.to_owned(), p.to_owned())
        } else {
            (field("username").to_owned(), field("password").to_owned())
        };
        if user.is_empty() {
            anyhow::bail!("{}: no credentials for {host}", path.display());
        }
        creds.insert(host, &user, &password);
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_auths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#,
        )
        .expect("write");
        read_auth_file(&path).expect("read");
        std::fs::write(&path, r#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#).expect("write");
        let err = read_auth_file(&path).expect_err("no colon").to_string();
        assert!(err.contains("not user:password"), "{err}");
        std::fs::write(&path, r#"{}"#).expect("write");
        assert!(read_auth_file(&path).is_err());
    }
}
