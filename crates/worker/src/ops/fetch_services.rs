//! The services a source op fetches from (`experimentalServiceHost`): started through the
//! [`crate::ServiceStarter`] for the duration of the fetch, and reached by the engine at the
//! addresses their hostnames are published under in the session (the engine resolves them from
//! its DNS table; no DNS server is asked).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::{ServiceGuard, Worker, WorkerError, op_err};

/// Running services and how to reach them; dropping it lets them stop.
pub(crate) struct FetchServices {
    pub(crate) hosts: HashMap<String, IpAddr>,
    _guard: Option<ServiceGuard>,
}

impl Worker {
    /// Starts `hostnames` in `session_id` (nothing when empty) for an `op` (for errors).
    pub(crate) async fn fetch_services(
        &self,
        op: &'static str,
        session_id: &str,
        hostnames: &[String],
    ) -> Result<FetchServices, WorkerError> {
        if hostnames.is_empty() {
            return Ok(FetchServices {
                hosts: HashMap::new(),
                _guard: None,
            });
        }
        let starter = self
            .inner
            .services
            .get()
            .ok_or_else(|| op_err(op, "this engine cannot start services"))?;
        let dns = self.network().dns().cloned().ok_or_else(|| {
            op_err(
                op,
                "services need the engine's bridge network (it runs with --network=none)",
            )
        })?;
        let guard = starter
            .start(session_id, hostnames)
            .await
            .map_err(|e| op_err(op, format!("start services: {e}")))?;
        let mut hosts = HashMap::new();
        for hostname in hostnames {
            let address = dns
                .lookup(session_id, hostname)
                .ok_or_else(|| op_err(op, format!("service {hostname} runs but has no address")))?;
            let name = hostname.to_ascii_lowercase();
            hosts.insert(format!("{name}.{}", dagr_network::DOMAIN), address.into());
            hosts.insert(name, address.into());
        }
        Ok(FetchServices {
            hosts,
            _guard: Some(guard),
        })
    }
}
