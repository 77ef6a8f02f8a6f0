//! Containers from Docker, through its API on the Unix socket (bollard).
//!
//! At start, and after every container event that can change the answer (start, die,
//! destroy, network connect / disconnect), the running containers are listed and inspected
//! and the whole set is sent on: a full snapshot is idempotent, so a missed or reordered
//! event cannot leave stale state behind. Identity is name, labels and image; the netns is
//! the init process's (`/proc/PID/ns/net`); addresses are read from inside that namespace
//! over rtnetlink, which is what packets will carry whatever Docker's metadata says.
//! When Docker is unreachable the source reports it and retries with backoff; the rest of
//! the daemon keeps enforcing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use tracing::{debug, info, warn};

use crate::inventory::Container;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// What the source reports to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Every running container Docker knows, as of now, with its MACs.
    Snapshot(Vec<(Container, Vec<[u8; 6]>)>),
    /// Docker is unreachable; the last snapshot stays in force.
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker API on {socket}: {source}")]
    Api {
        socket: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("docker event stream ended")]
    StreamEnded,
}

/// What identifies a container on the wire, read from inside its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireIdentity {
    /// Addresses with global scope (loopback and link-local never identify a container).
    pub addresses: Vec<IpAddr>,
    /// Ethernet addresses of its interfaces (what the host guard admits).
    pub macs: Vec<[u8; 6]>,
}

pub fn wire_identity(netns: &Path) -> std::io::Result<WireIdentity> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
    use rtnetlink::packet_route::link::LinkAttribute;
    crate::netns::run_in(netns, || -> std::io::Result<WireIdentity> {
        // The route socket is created on this thread, inside the namespace.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            let task = tokio::spawn(conn);
            let err = |e: rtnetlink::Error| std::io::Error::other(e.to_string());
            let addrs: Vec<_> = handle.address().get().execute().try_collect().await.map_err(err)?;
            let links: Vec<_> = handle.link().get().execute().try_collect().await.map_err(err)?;
            task.abort();
            let mut addresses: Vec<IpAddr> = addrs
                .into_iter()
                .filter(|m| m.header.scope == AddressScope::Universe)
                .filter_map(|m| {
                    m.attributes.into_iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(ip),
                        _ => None,
                    })
                })
                .collect();
            addresses.sort();
            addresses.dedup();
            let mut macs: Vec<[u8; 6]> = links
                .into_iter()
                .flat_map(|l| l.attributes)
                .filter_map(|a| match a {
                    LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
                    _ => None,
                })
                .filter(|m| *m != [0; 6])
                .collect();
            macs.sort();
            macs.dedup();
            Ok(WireIdentity { addresses, macs })
        })
    })
    .map_err(|e| std::io::Error::other(e.to_string()))?
}

fn api(socket: &str) -> impl Fn(bollard::errors::Error) -> DockerError + '_ {
    move |source| DockerError::Api { socket: socket.to_string(), source }
}

/// Lists and inspects every running container.
async fn snapshot(docker: &Docker, socket: &str) -> Result<Vec<(Container, Vec<[u8; 6]>)>, DockerError> {
    let list = docker.list_containers(Some(ListContainersOptions::default())).await.map_err(api(socket))?;
    let mut out = Vec::with_capacity(list.len());
    for summary in list {
        let Some(id) = summary.id else { continue };
        // A container can vanish between list and inspect: skip it, the next event fixes up.
        let Ok(c) = docker.inspect_container(&id, None).await else { continue };
        let pid = c.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0);
        let Some(pid) = pid else { continue };
        let name = c.name.unwrap_or(id).trim_start_matches('/').to_string();
        let config = c.config.unwrap_or_default();
        let mut labels: Vec<(String, String)> = config.labels.unwrap_or_default().into_iter().collect();
        labels.sort();
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let wire = match tokio::task::spawn_blocking({
            let netns = netns.clone();
            move || wire_identity(&netns)
        })
        .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                debug!(container = %name, error = %e, "addresses unreadable (container exiting?)");
                continue;
            }
            Err(_) => continue,
        };
        let image = config.image.unwrap_or_default();
        let c = Container { name, netns: Some(netns), image, labels, addresses: wire.addresses, link: None };
        out.push((c, wire.macs));
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(out)
}

/// Follows Docker until the receiver goes away: one snapshot now, one after each relevant
/// event. Returns the error that ended the stream.
async fn follow(socket: &str, tx: &Sink) -> Result<(), DockerError> {
    let docker = Docker::connect_with_unix(socket, 30, bollard::API_DEFAULT_VERSION).map_err(api(socket))?;
    let docker = docker.negotiate_version().await.map_err(api(socket))?;
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string(), "network".to_string()]),
        (
            "event".to_string(),
            ["start", "die", "destroy", "connect", "disconnect", "rename"].map(String::from).to_vec(),
        ),
    ]);
    // Subscribe before the first snapshot so nothing between the two is missed.
    let mut events = docker.events(Some(EventsOptions { filters: Some(filters), ..Default::default() }));
    let first = snapshot(&docker, socket).await?;
    info!(containers = first.len(), "docker: connected");
    if !tx(Update::Snapshot(first)) {
        return Ok(());
    }
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(api(socket))?;
        debug!(action = ?ev.action, "docker event");
        // One snapshot answers every event already queued (a burst of starts).
        while let Some(Some(more)) = events.next().now_or_never() {
            more.map_err(api(socket))?;
        }
        let snap = snapshot(&docker, socket).await?;
        if !tx(Update::Snapshot(snap)) {
            return Ok(());
        }
    }
    Err(DockerError::StreamEnded)
}

/// Where updates go; `false` once nobody listens (the daemon is stopping).
pub type Sink = Box<dyn Fn(Update) -> bool + Send + Sync>;

/// Runs the Docker source as a task on the daemon's runtime, until the sink closes.
pub fn spawn(rt: &tokio::runtime::Handle, socket: String, tx: Sink) -> tokio::task::JoinHandle<()> {
    rt.spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            let started = tokio::time::Instant::now();
            match follow(&socket, &tx).await {
                Ok(()) => return, // the daemon is gone
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "docker source unavailable");
                    if !tx(Update::Unavailable(e.to_string())) {
                        return;
                    }
                }
            }
            // A connection that lasted a while was healthy: start the backoff over.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(500);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    })
}
