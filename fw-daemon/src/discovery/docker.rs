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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use tracing::{debug, info};

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

type Described = (Container, Vec<[u8; 6]>);

/// Lists and inspects every running container, by id.
async fn snapshot(docker: &Docker, socket: &str) -> Result<BTreeMap<String, Described>, DockerError> {
    let list = docker.list_containers(Some(ListContainersOptions::default())).await.map_err(api(socket))?;
    let mut out = BTreeMap::new();
    for id in list.into_iter().filter_map(|summary| summary.id) {
        if let Some(d) = describe(docker, &id).await {
            out.insert(id, d);
        }
    }
    Ok(out)
}

/// One container as the inventory needs it; `None` when it is gone or not running (a
/// container can vanish between an event and its inspection: the next event fixes up).
async fn describe(docker: &Docker, id: &str) -> Option<Described> {
    let c = docker.inspect_container(id, None).await.ok()?;
    let pid = c.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0)?;
    let name = c.name.unwrap_or_else(|| id.to_string()).trim_start_matches('/').to_string();
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
            return None;
        }
        Err(_) => return None,
    };
    let image = config.image.unwrap_or_default();
    Some((
        Container {
            name,
            netns: Some(netns),
            image,
            labels,
            addresses: wire.addresses,
            link: None,
            kube: None,
        },
        wire.macs,
    ))
}

/// The container an event is about: the actor of a container event, the `container`
/// attribute of a network one. `None`: not known (the caller takes a whole snapshot).
fn event_container(ev: &bollard::models::EventMessage) -> Option<String> {
    use bollard::models::EventMessageTypeEnum as T;
    let actor = ev.actor.as_ref()?;
    match ev.typ {
        Some(T::CONTAINER) => actor.id.clone(),
        Some(T::NETWORK) => actor.attributes.as_ref()?.get("container").cloned(),
        _ => None,
    }
}

/// What the inventory is told: every described container, by name.
fn inventory_of(known: &BTreeMap<String, Described>) -> Vec<Described> {
    let mut out: Vec<Described> = known.values().cloned().collect();
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    out
}

/// Follows Docker until the receiver goes away: one snapshot now, then after each event
/// only the container it names is inspected again (a start costs one inspection, not one
/// per running container); an event that names none brings a whole snapshot. Returns the
/// error that ended the stream.
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
    let mut known = snapshot(&docker, socket).await?;
    info!(containers = known.len(), "docker: connected");
    if !tx(Update::Snapshot(inventory_of(&known))) {
        return Ok(());
    }
    while let Some(ev) = events.next().await {
        let mut batch = vec![ev.map_err(api(socket))?];
        // One update answers every event already queued (a burst of starts).
        while let Some(Some(more)) = events.next().now_or_never() {
            batch.push(more.map_err(api(socket))?);
        }
        let ids: Option<BTreeSet<String>> = batch.iter().map(event_container).collect();
        match ids {
            Some(ids) => {
                for id in ids {
                    debug!(container = %id, "docker event");
                    match describe(&docker, &id).await {
                        Some(d) => known.insert(id, d),
                        None => known.remove(&id),
                    };
                }
            }
            None => known = snapshot(&docker, socket).await?,
        }
        if !tx(Update::Snapshot(inventory_of(&known))) {
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
        let (socket, tx) = (&socket, &tx);
        super::follow_with_backoff("docker source", || follow(socket, tx), |why| tx(Update::Unavailable(why)))
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{EventActor, EventMessage, EventMessageTypeEnum as T};

    fn event(typ: Option<T>, id: Option<&str>, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ,
            actor: Some(EventActor {
                id: id.map(str::to_string),
                attributes: Some(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            }),
            ..Default::default()
        }
    }

    /// An event names the one container to inspect again; one that names none (another
    /// type, no actor) makes the follower take a whole snapshot.
    #[test]
    fn an_event_names_its_container_or_none() {
        assert_eq!(event_container(&event(Some(T::CONTAINER), Some("c1"), &[])).as_deref(), Some("c1"));
        let net = event(Some(T::NETWORK), Some("n1"), &[("container", "c2"), ("name", "fw")]);
        assert_eq!(event_container(&net).as_deref(), Some("c2"), "a network event is about its container");
        assert_eq!(event_container(&event(Some(T::NETWORK), Some("n1"), &[])), None);
        assert_eq!(event_container(&event(Some(T::IMAGE), Some("i1"), &[])), None);
        assert_eq!(event_container(&event(None, Some("c1"), &[])), None);
        assert_eq!(event_container(&EventMessage { typ: Some(T::CONTAINER), ..Default::default() }), None);
    }
}
