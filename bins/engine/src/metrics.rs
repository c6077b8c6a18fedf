//! Engine metrics in the Prometheus text format, served on `/metrics` without a metadata header.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use dagr_engine_state::SessionRegistry;
use parking_lot::Mutex;

use crate::routes::Route;

/// Counters the HTTP stack and the accept loops update.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    http_requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    gc_runs: AtomicU64,
    gc_freed_bytes: AtomicU64,
}

/// The route label of a path: a [`Route`] by its path, gRPC as `grpc`, everything else as `other`,
/// so a client cannot grow the label set.
pub fn route_label(path: &str, grpc: bool) -> &'static str {
    if grpc {
        return "grpc";
    }
    Route::from_path(path).map_or("other", Route::path)
}

impl EngineMetrics {
    pub fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A garbage collection pass ended, having freed `freed` bytes.
    pub fn gc_done(&self, freed: u64) {
        self.gc_runs.fetch_add(1, Ordering::Relaxed);
        self.gc_freed_bytes.fetch_add(freed, Ordering::Relaxed);
    }

    pub fn request_done(&self, route: &'static str, status: u16) {
        *self
            .http_requests
            .lock()
            .entry((route, status))
            .or_insert(0) += 1;
    }

    /// The text, with `gauges` and `counters` (name, help, value) of other parts of the engine.
    pub fn render(
        &self,
        registry: &SessionRegistry,
        gauges: &[(&str, &str, u64)],
        counters: &[(&str, &str, u64)],
    ) -> String {
        let m = registry.metrics();
        let mut out = String::with_capacity(1024);
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "dagr_sessions_active",
            "Sessions in the registry.",
            m.sessions_active() as u64,
        );
        gauge(
            &mut out,
            "dagr_clients_active",
            "Clients of live sessions.",
            m.clients_active() as u64,
        );
        counter(
            &mut out,
            "dagr_sessions_created_total",
            "Sessions created.",
            m.sessions_created(),
        );
        counter(
            &mut out,
            "dagr_sessions_removed_total",
            "Sessions torn down.",
            m.sessions_removed(),
        );
        counter(
            &mut out,
            "dagr_connections_accepted_total",
            "Connections accepted on all listeners.",
            self.connections_accepted.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "dagr_connections_open",
            "Connections being served.",
            self.connections_open.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "dagr_gc_runs_total",
            "Garbage collection passes (periodic and after session ends).",
            self.gc_runs.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "dagr_gc_freed_bytes_total",
            "Bytes garbage collection freed.",
            self.gc_freed_bytes.load(Ordering::Relaxed),
        );
        for (name, help, value) in gauges {
            gauge(&mut out, name, help, *value);
        }
        for (name, help, value) in counters {
            counter(&mut out, name, help, *value);
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            gauge(
                &mut out,
                "dagr_runtime_alive_tasks",
                "Tasks alive in the engine's runtime.",
                handle.metrics().num_alive_tasks() as u64,
            );
        }
        let _ = writeln!(
            out,
            "# HELP dagr_http_requests_total Requests answered, by route and status.\n\
             # TYPE dagr_http_requests_total counter"
        );
        for ((route, status), n) in self.http_requests.lock().iter() {
            let _ = writeln!(
                out,
                "dagr_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = EngineMetrics::default();
        m.connection_accepted();
        m.request_done("/query", 200);
        m.request_done("/query", 200);
        m.request_done("other", 404);
        let text = m.render(
            &SessionRegistry::new(),
            &[("dagr_x", "X.", 3)],
            &[("dagr_y_total", "Y.", 4)],
        );
        assert!(text.contains("dagr_sessions_active 0\n"));
        assert!(text.contains("# TYPE dagr_x gauge\ndagr_x 3\n"));
        assert!(text.contains("# TYPE dagr_y_total counter\ndagr_y_total 4\n"));
        assert!(text.contains("dagr_connections_accepted_total 1\n"));
        assert!(text.contains("dagr_http_requests_total{route=\"/query\",status=\"200\"} 2\n"));
        assert!(text.contains("dagr_http_requests_total{route=\"other\",status=\"404\"} 1\n"));
        assert_eq!(route_label("/x/../query", false), "other");
    }
}
