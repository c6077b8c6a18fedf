//! Services: `Container.asService`, `withExposedPort`, `withoutExposedPort`, `exposedPorts`,
//! `withServiceBinding`; the `Service` and `Port` objects and the `NetworkProtocol` enum. The
//! lifecycle (start, share, health, stop) is [`lifecycle::RunningServices`].
//!
//! A service's hostname is a digest of the call chain that made it, so it is stable for its ID
//! and the same in every session; a binding exec's cache key includes it.

pub mod lifecycle;

use std::sync::Arc;

use dagr_gql::{
    Arg, Args, Enum, Field, FieldError, InputObject, Object, Scalar, SchemaBuilder, Value,
};
use serde::Deserialize;

use crate::args::null_as_default;
use crate::container::default_exec;
use crate::state::{
    Container, NetworkProtocol, Port, PortForward, Service, ServiceBinding, ServiceKind,
};
use crate::{caller, obj, services};

/// The hostname of the service made by `chain`: 13 lowercase base32 characters of its digest
/// (a DNS label that never looks like a number).
fn hostname_of(chain: &dagr_gql::CallChain) -> String {
    hostname_of_text(&chain.canonical())
}

/// [`hostname_of`] for any text.
fn hostname_of_text(text: &str) -> String {
    use sha2::Digest as _;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut bits = u128::from_be_bytes(digest[..16].try_into().unwrap_or_default());
    let mut out = String::with_capacity(13);
    for _ in 0..13 {
        out.push(char::from(ALPHABET[(bits >> 123) as usize]));
        bits <<= 5;
    }
    out
}

/// Whether `alias` is a DNS label: 1 to 63 letters, digits and inner hyphens.
fn is_dns_label(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= 63
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !alias.starts_with('-')
        && !alias.ends_with('-')
}

/// Adds `Service`, `Port` and `NetworkProtocol`.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let service = Object::new("Service")
        .with_id()
        .field(endpoint())
        .field(hostname())
        .field(ports())
        .field(start())
        .field(stop())
        .field(up());
    let port = Object::new("Port")
        .with_id()
        .field(
            Field::new("description", "String")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Port>()?.description.clone()))),
        )
        .field(
            Field::new("experimentalSkipHealthcheck", "Boolean!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Port>()?.skip_healthcheck))),
        )
        .field(
            Field::new("port", "Int!")
                .resolve_sync(|ctx| Ok(Value::leaf(i64::from(ctx.parent::<Port>()?.port)))),
        )
        .field(
            Field::new("protocol", "NetworkProtocol!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Port>()?.protocol.name()))),
        );
    let port_forward = InputObject::new("PortForward")
        .field(Arg::new("backend", "Int!"))
        .field(Arg::new("frontend", "Int"))
        .field(Arg::new("protocol", "NetworkProtocol").default("TCP"));
    b.object(service)
        .object(port)
        .enumeration(Enum::new("NetworkProtocol").values(["TCP", "UDP"]))
        .input(port_forward)
        .scalar(Scalar::new("Void").description("The absence of a value."))
}

/// `Host`'s service fields.
pub(crate) fn host_fields() -> Vec<Field> {
    vec![host_service(), host_tunnel()]
}

/// Checks the ports of forwarding rules (TCP only; backends 1-65535).
fn check_forwards(forwards: &[PortForward]) -> Result<(), FieldError> {
    for f in forwards {
        if f.backend == 0 {
            return Err(FieldError::new(
                "port 0 is out of range: backend ports are 1 to 65535",
            ));
        }
        if f.protocol != NetworkProtocol::Tcp {
            return Err(FieldError::new(format!(
                "port {}/{}: only TCP ports can be forwarded",
                f.backend,
                f.protocol.name()
            )));
        }
    }
    Ok(())
}

/// The hostname of a service made by this call for this caller: another client's host (or
/// the tunnel to another client's host) is another service.
fn caller_hostname(ctx: &dagr_gql::ResolveCtx, client: &dagr_metadata::ClientRef) -> String {
    let chain = ctx.parent_chain().append(ctx.call().clone());
    let mut named = chain.canonical();
    named.push('\n');
    named.push_str(&client.session_id);
    named.push('\n');
    named.push_str(&client.client_id);
    hostname_of_text(&named)
}

#[derive(Deserialize)]
struct HostServiceArgs {
    #[serde(default = "localhost")]
    host: String,
    ports: Vec<PortForward>,
}

fn localhost() -> String {
    "localhost".into()
}

impl Args for HostServiceArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("host", "String").default("localhost"),
            Arg::new("ports", "[PortForward!]!"),
        ]
    }
}

/// `Host.service`: a service in the engine's network whose ports (frontends) lead to `host`'s
/// ports (backends) as the calling client reaches them.
fn host_service() -> Field {
    Field::new("service", "Service!")
        .args::<HostServiceArgs>()
        .scoped(crate::query::host_scope)
        .resolve_sync(|ctx| {
            let HostServiceArgs { host, ports } = ctx.args_as()?;
            if ports.is_empty() {
                return Err(FieldError::new("Host.service needs at least one port"));
            }
            check_forwards(&ports)?;
            // The client whose host it reaches: the one that made it, also when its ID is
            // used by another client of the session (a module function).
            let owner = crate::query::host_owner(ctx)?;
            Ok(obj(
                "Service",
                Service {
                    hostname: caller_hostname(ctx, &owner),
                    ports: ports
                        .iter()
                        .map(|f| Port {
                            port: f.frontend.filter(|&p| p != 0).unwrap_or(f.backend),
                            protocol: NetworkProtocol::Tcp,
                            description: None,
                            skip_healthcheck: false,
                        })
                        .collect(),
                    kind: ServiceKind::Host {
                        client: owner,
                        host,
                        forwards: ports,
                    },
                },
            ))
        })
}

#[derive(Deserialize)]
struct HostTunnelArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    native: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    ports: Vec<PortForward>,
}

impl Args for HostTunnelArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("native", "Boolean").default(false),
            Arg::new("ports", "[PortForward!]").default(serde_json::json!([])),
            Arg::new("service", "ServiceID!"),
        ]
    }
}

/// `Host.tunnel`: `service`'s ports on the calling client's host (127.0.0.1), once started.
fn host_tunnel() -> Field {
    Field::new("tunnel", "Service!")
        .args::<HostTunnelArgs>()
        .scoped(crate::query::host_scope)
        .resolve_sync(|ctx| {
            let HostTunnelArgs { native, ports } = ctx.args_as()?;
            check_forwards(&ports)?;
            let upstream = ctx.loaded::<Service>("service")?;
            let owner = crate::query::host_owner(ctx)?;
            services(ctx)?.running.define(&owner.session_id, &upstream);
            Ok(obj(
                "Service",
                Service {
                    hostname: caller_hostname(ctx, &owner),
                    ports: Vec::new(),
                    kind: ServiceKind::Tunnel {
                        upstream: Arc::new(upstream.as_ref().clone()),
                        client: owner,
                        forwards: ports,
                        native,
                    },
                },
            ))
        })
}

#[derive(Deserialize)]
struct UpArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    ports: Vec<PortForward>,
    #[serde(default, deserialize_with = "null_as_default")]
    random: bool,
}

impl Args for UpArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("ports", "[PortForward!]").default(serde_json::json!([])),
            Arg::new("random", "Boolean").default(false),
        ]
    }
}

/// `Service.up`: the service's ports on the calling client's host (127.0.0.1; each on the same
/// number unless `random` or a frontend says otherwise) until the request is cancelled.
fn up() -> Field {
    Field::new("up", "Void")
        .args::<UpArgs>()
        .resolve(|ctx| async move {
            let UpArgs { ports, random } = ctx.args_as()?;
            check_forwards(&ports)?;
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let service = ctx.parent_arc::<Service>()?;
            if matches!(service.kind, ServiceKind::Tunnel { .. }) {
                return Err(FieldError::new(format!(
                    "service {} is a tunnel, already on the client's host: start it instead",
                    service.hostname
                )));
            }
            let pairs: Vec<(u16, u16)> = if ports.is_empty() {
                service
                    .ports
                    .iter()
                    .filter(|p| p.protocol == NetworkProtocol::Tcp)
                    .map(|p| (if random { 0 } else { p.port }, p.port))
                    .collect()
            } else {
                ports
                    .iter()
                    .map(|f| {
                        let frontend = if random {
                            0
                        } else {
                            f.frontend.unwrap_or(f.backend)
                        };
                        (frontend, f.backend)
                    })
                    .collect()
            };
            if pairs.is_empty() {
                return Err(FieldError::new(format!(
                    "service {} exposes no TCP ports: pass ports to forward",
                    service.hostname
                )));
            }
            s.running.define(&caller.session_id, &service);
            let hold = s
                .running
                .hold(&caller.session_id, &service.hostname, &caller.span)
                .await
                .map_err(|e| FieldError::new(s.scrub(&caller.session_id, &e.to_string())))?;
            let (mut forwarding, _) =
                lifecycle::forward_from_client(s.worker(), &caller.client, hold.address(), &pairs)
                    .await
                    .map_err(FieldError::new)?;
            // Until the client cancels the request, or goes away (its listeners end).
            while forwarding.join_next().await.is_some() {}
            drop(hold);
            Ok(Value::Null)
        })
}

/// `Container`'s service fields, in the order they are served.
pub(crate) fn container_fields() -> Vec<Field> {
    vec![
        as_service(),
        with_exposed_port(),
        without_exposed_port(),
        exposed_ports(),
        with_service_binding(),
    ]
}

fn ports_value(ports: &[Port]) -> Value {
    Value::List(ports.iter().map(|p| obj("Port", p.clone())).collect())
}

/// `asService`: the container's last exec, run as a service (its default command when it has
/// none, as in Dagger).
fn as_service() -> Field {
    Field::new("asService", "Service!").resolve_sync(|ctx| {
        let c = ctx.parent::<Container>()?;
        let exec = match &c.last_exec {
            Some(exec) => exec.clone(),
            None => default_exec(c.clone())?,
        };
        let chain = ctx.parent_chain().append(ctx.call().clone());
        let service = Service {
            hostname: hostname_of(&chain),
            kind: ServiceKind::Container { exec },
            ports: c.ports.clone(),
        };
        Ok(obj("Service", service))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithExposedPortArgs {
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    experimental_skip_healthcheck: bool,
    port: i64,
    #[serde(default = "tcp", deserialize_with = "protocol_or_tcp")]
    protocol: NetworkProtocol,
}

fn tcp() -> NetworkProtocol {
    NetworkProtocol::Tcp
}

fn protocol_or_tcp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NetworkProtocol, D::Error> {
    Ok(Option::<NetworkProtocol>::deserialize(d)?.unwrap_or(NetworkProtocol::Tcp))
}

impl Args for WithExposedPortArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("description", "String"),
            Arg::new("experimentalSkipHealthcheck", "Boolean").default(false),
            Arg::new("port", "Int!"),
            Arg::new("protocol", "NetworkProtocol").default("TCP"),
        ]
    }
}

fn port_number(port: i64) -> Result<u16, FieldError> {
    u16::try_from(port).ok().filter(|&p| p > 0).ok_or_else(|| {
        FieldError::new(format!("port {port} is out of range: ports are 1 to 65535"))
    })
}

/// `withExposedPort`: a port the container serves as a service; it is up once every exposed TCP
/// port accepts connections (unless `experimentalSkipHealthcheck`).
fn with_exposed_port() -> Field {
    Field::new("withExposedPort", "Container!")
        .args::<WithExposedPortArgs>()
        .resolve_sync(|ctx| {
            let args: WithExposedPortArgs = ctx.args_as()?;
            let port = port_number(args.port)?;
            let mut c = ctx.parent::<Container>()?.clone();
            if c.ports
                .iter()
                .any(|p| p.port == port && p.protocol == args.protocol)
            {
                return Err(FieldError::new(format!(
                    "port {port}/{} is already exposed",
                    args.protocol.name()
                )));
            }
            c.config
                .exposed_ports
                .insert(format!("{port}/{}", args.protocol.oci_name()));
            c.ports.push(Port {
                port,
                protocol: args.protocol,
                description: args.description,
                skip_healthcheck: args.experimental_skip_healthcheck,
            });
            Ok(obj("Container", c))
        })
}

#[derive(Deserialize)]
struct WithoutExposedPortArgs {
    port: i64,
    #[serde(default = "tcp", deserialize_with = "protocol_or_tcp")]
    protocol: NetworkProtocol,
}

impl Args for WithoutExposedPortArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("port", "Int!"),
            Arg::new("protocol", "NetworkProtocol").default("TCP"),
        ]
    }
}

/// `withoutExposedPort`: no longer exposes `port`/`protocol`.
fn without_exposed_port() -> Field {
    Field::new("withoutExposedPort", "Container!")
        .args::<WithoutExposedPortArgs>()
        .resolve_sync(|ctx| {
            let args: WithoutExposedPortArgs = ctx.args_as()?;
            let port = port_number(args.port)?;
            let mut c = ctx.parent::<Container>()?.clone();
            c.ports
                .retain(|p| !(p.port == port && p.protocol == args.protocol));
            c.config
                .exposed_ports
                .remove(&format!("{port}/{}", args.protocol.oci_name()));
            Ok(obj("Container", c))
        })
}

/// `exposedPorts`: the ports, in the order they were exposed.
fn exposed_ports() -> Field {
    Field::new("exposedPorts", "[Port!]!")
        .resolve_sync(|ctx| Ok(ports_value(&ctx.parent::<Container>()?.ports)))
}

#[derive(Deserialize)]
struct WithServiceBindingArgs {
    alias: String,
}

impl Args for WithServiceBindingArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("alias", "String!"),
            Arg::new("service", "ServiceID!"),
        ]
    }
}

/// `withServiceBinding`: the container's execs run with `service` up and reach it as `alias`
/// (which resolves in those execs alone).
fn with_service_binding() -> Field {
    Field::new("withServiceBinding", "Container!")
        .args::<WithServiceBindingArgs>()
        .resolve_sync(|ctx| {
            let WithServiceBindingArgs { alias } = ctx.args_as()?;
            if !is_dns_label(&alias) {
                return Err(FieldError::new(format!(
                    "alias {alias:?} is not a DNS label (1 to 63 letters, digits and inner hyphens)"
                )));
            }
            let service = ctx.loaded::<Service>("service")?;
            services(ctx)?
                .running
                .define(&caller(ctx)?.session_id, &service);
            let mut c = ctx.parent::<Container>()?.clone();
            c.services.retain(|b| b.alias != alias);
            c.services.push(ServiceBinding {
                alias,
                service: Arc::new(service.as_ref().clone()),
            });
            Ok(obj("Container", c))
        })
}

#[derive(Deserialize)]
struct EndpointArgs {
    #[serde(default)]
    port: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    scheme: String,
}

impl Args for EndpointArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("port", "Int"),
            Arg::new("scheme", "String").default(""),
        ]
    }
}

/// `Service.endpoint`: `hostname:port` (the first exposed port unless given), with
/// `scheme://` when given.
fn endpoint() -> Field {
    Field::new("endpoint", "String!")
        .args::<EndpointArgs>()
        .resolve(|ctx| async move {
            let EndpointArgs { port, scheme } = ctx.args_as()?;
            let service = ctx.parent_arc::<Service>()?;
            let (host, ports) = reachable_at(&ctx, &service).await?;
            let port = match port {
                Some(port) if port != 0 => port_number(port)?,
                _ => {
                    ports
                        .first()
                        .ok_or_else(|| {
                            FieldError::new(format!(
                                "service {} exposes no ports: pass a port",
                                service.hostname
                            ))
                        })?
                        .port
                }
            };
            let endpoint = format!("{host}:{port}");
            Ok(Value::leaf(if scheme.is_empty() {
                endpoint
            } else {
                format!("{scheme}://{endpoint}")
            }))
        })
}

/// Where `service` is reached: its hostname and ports, or for a tunnel the client's address
/// and the ports it listens on (starting it, as `start` does, when it is not running).
async fn reachable_at(
    ctx: &dagr_gql::ResolveCtx,
    service: &Arc<Service>,
) -> Result<(String, Vec<Port>), FieldError> {
    if !matches!(service.kind, ServiceKind::Tunnel { .. }) {
        return Ok((service.hostname.clone(), service.ports.clone()));
    }
    let s = services(ctx)?;
    let caller = caller(ctx)?;
    if let Some(endpoint) = s.running.endpoint(&caller.session_id, &service.hostname) {
        return Ok((endpoint.host, endpoint.ports));
    }
    s.running.define(&caller.session_id, service);
    s.running
        .start(&caller.session_id, &service.hostname, &caller.span)
        .await
        .map_err(|e| FieldError::new(s.scrub(&caller.session_id, &e.to_string())))?;
    let endpoint = s
        .running
        .endpoint(&caller.session_id, &service.hostname)
        .ok_or_else(|| {
            FieldError::new(format!("tunnel {} stopped as it started", service.hostname))
        })?;
    Ok((endpoint.host, endpoint.ports))
}

/// `Service.hostname`: the name execs that bind it reach it by (besides their alias); for a
/// tunnel, the client's address it listens on.
fn hostname() -> Field {
    Field::new("hostname", "String!").resolve(|ctx| async move {
        let service = ctx.parent_arc::<Service>()?;
        Ok(Value::leaf(reachable_at(&ctx, &service).await?.0))
    })
}

/// `Service.ports`: its exposed ports (a tunnel's: the ports it listens on).
fn ports() -> Field {
    Field::new("ports", "[Port!]!").resolve(|ctx| async move {
        let service = ctx.parent_arc::<Service>()?;
        Ok(ports_value(&reachable_at(&ctx, &service).await?.1))
    })
}

/// `Service.start`: starts it (waiting until it is up); it runs until `stop` or the session's
/// end.
fn start() -> Field {
    Field::new("start", "ServiceID!").resolve(|ctx| async move {
        let s = services(&ctx)?;
        let caller = caller(&ctx)?;
        let service = ctx.parent_arc::<Service>()?;
        s.running.define(&caller.session_id, &service);
        s.running
            .start(&caller.session_id, &service.hostname, &caller.span)
            .await
            .map_err(|e| FieldError::new(s.scrub(&caller.session_id, &e.to_string())))?;
        Ok(Value::leaf(ctx.parent_chain().id()))
    })
}

#[derive(Deserialize)]
struct StopArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    kill: bool,
}

impl Args for StopArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("kill", "Boolean").default(false)]
    }
}

/// `Service.stop`: lets go of what `start` held and waits for it to stop (an exec binding it
/// keeps it up until it ends). A container service's process gets SIGTERM and
/// `lifecycle::STOP_GRACE` to exit, or is killed at once with `kill`.
fn stop() -> Field {
    Field::new("stop", "ServiceID!")
        .args::<StopArgs>()
        .resolve(|ctx| async move {
            let StopArgs { kill } = ctx.args_as()?;
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let service = ctx.parent_arc::<Service>()?;
            tracing::debug!(hostname = %service.hostname, kill, "stopping service");
            s.running
                .stop(&caller.session_id, &service.hostname, kill)
                .await;
            Ok(Value::leaf(ctx.parent_chain().id()))
        })
}
