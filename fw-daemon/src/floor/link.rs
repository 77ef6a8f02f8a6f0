//! Finding a container's host side: which namespace holds the peer of its veth, and which
//! port (ifindex, name) it is there.
//!
//! Inside the container's namespace, each veth reports its peer's ifindex (`IFLA_LINK`) and
//! the peer namespace's id *as seen from there* (`IFLA_LINK_NETNSID`). An id is only a
//! number local to that namespace, so it is resolved by asking, still inside, for the id of
//! each namespace the daemon can open (`RTM_GETNSID` with the namespace's fd): the host's,
//! the daemon's own, every bind mount under `/run/netns`, and whatever an inventory names.
//! Namespaces are compared by device and inode, never by path.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;

pub use crate::netns::NsId;

/// The host side of one of a container's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSide {
    /// A path the daemon can open for the namespace holding the peer.
    pub netns: PathBuf,
    pub netns_id: NsId,
    /// The peer's ifindex and name there.
    pub ifindex: u32,
    pub ifname: String,
    /// The container end's MAC.
    pub mac: [u8; 6],
}

/// What discovery found in a container's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    pub host_sides: Vec<HostSide>,
    /// The container's IPv6 link-local addresses (admitted as sources beside its own).
    pub link_local: Vec<IpAddr>,
    /// Interfaces with no host side fw could find (not a veth, or its peer's namespace is
    /// not one the daemon can open): the container's traffic through them has no floor.
    pub unresolved: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Netns(#[from] crate::netns::NetnsError),
    #[error("netns {path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: std::io::Error },
    #[error("netns {path}: rtnetlink: {what}")]
    Netlink { path: PathBuf, what: String },
}

/// Namespaces a peer may be in: the host's, the daemon's, every `/run/netns` mount, and
/// `extra` (an inventory's hint), deduplicated by identity.
pub fn candidates(extra: &[PathBuf]) -> Vec<(NsId, PathBuf)> {
    let mut paths: Vec<PathBuf> = extra.to_vec();
    paths.push(PathBuf::from("/proc/1/ns/net"));
    paths.push(PathBuf::from("/proc/self/ns/net"));
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut found: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            found.sort();
            paths.extend(found);
        }
    }
    let mut seen = BTreeMap::new();
    for p in paths {
        if let Ok(id) = NsId::of(&p) {
            seen.entry(id).or_insert(p);
        }
    }
    seen.into_iter().collect()
}

struct Raw {
    name: String,
    mac: Option<[u8; 6]>,
    veth: bool,
    peer_index: Option<u32>,
    peer_nsid: Option<i32>,
}

/// Finds the host side of every link of the container namespace at `netns`.
pub fn discover(netns: &Path, extra: &[PathBuf]) -> Result<Links, LinkError> {
    let cands = candidates(extra);
    let own = NsId::of(netns).map_err(|source| LinkError::Io {
        path: netns.to_path_buf(),
        what: "stat",
        source,
    })?;
    let mut files = Vec::new();
    for (id, p) in &cands {
        if *id == own {
            continue;
        }
        if let Ok(f) = File::open(p) {
            files.push((*id, p.clone(), f));
        }
    }
    let fds: Vec<(usize, i32)> = files.iter().enumerate().map(|(i, (_, _, f))| (i, f.as_raw_fd())).collect();
    let path = netns.to_path_buf();
    let (links, ll, nsids) = crate::netns::run_in(netns, move || inside(&path, &fds))??;
    let by_nsid: BTreeMap<i32, usize> =
        nsids.into_iter().filter(|(_, n)| *n >= 0).map(|(i, n)| (n, i)).collect();
    let mut out = Links { link_local: ll, ..Links::default() };
    for l in links {
        let (Some(mac), true) = (l.mac, l.veth) else {
            if l.name != "lo" {
                out.unresolved.push(l.name);
            }
            continue;
        };
        let (Some(peer), Some(nsid)) = (l.peer_index, l.peer_nsid) else {
            out.unresolved.push(l.name);
            continue;
        };
        let Some(&i) = by_nsid.get(&nsid) else {
            out.unresolved.push(l.name);
            continue;
        };
        let (id, p, _) = &files[i];
        // The floor is a bridge table: a peer on no bridge (a routed link) is never seen by
        // it, so it is no floor, and saying so beats pretending.
        match peer_port(p, peer) {
            Ok((ifname, true)) => {
                out.host_sides.push(HostSide { netns: p.clone(), netns_id: *id, ifindex: peer, ifname, mac })
            }
            Ok((ifname, false)) => {
                out.unresolved.push(format!("{} (its peer {ifname} is on no bridge)", l.name))
            }
            Err(_) => out.unresolved.push(l.name),
        }
    }
    drop(files);
    Ok(out)
}

/// Links, link-local addresses and the nsid of each candidate fd, read inside the namespace.
#[allow(clippy::type_complexity)]
fn inside(
    path: &Path,
    fds: &[(usize, i32)],
) -> Result<(Vec<Raw>, Vec<IpAddr>, Vec<(usize, i32)>), LinkError> {
    let err = |what: &str| LinkError::Netlink { path: path.to_path_buf(), what: what.to_string() };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| LinkError::Io { path: path.to_path_buf(), what: "runtime", source })?;
    rt.block_on(async {
        let (conn, mut handle, _) = rtnetlink::new_connection().map_err(|source| LinkError::Io {
            path: path.to_path_buf(),
            what: "route socket",
            source,
        })?;
        let task = tokio::spawn(conn);
        let links: Vec<_> =
            handle.link().get().execute().try_collect().await.map_err(|e| err(&format!("links: {e}")))?;
        let addrs: Vec<_> = handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| err(&format!("addresses: {e}")))?;
        let mut nsids = Vec::new();
        for (i, fd) in fds {
            let mut msg = NsidMessage::default();
            msg.attributes.push(NsidAttribute::Fd(*fd as u32));
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
            req.header.flags = NLM_F_REQUEST;
            let mut answers = handle.request(req).map_err(|e| err(&format!("getnsid: {e}")))?;
            while let Some(m) = answers.next().await {
                if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(n)) = m.payload {
                    for a in n.attributes {
                        if let NsidAttribute::Id(id) = a {
                            nsids.push((*i, id));
                        }
                    }
                }
            }
        }
        task.abort();
        let raw = links
            .into_iter()
            .map(|l| {
                let mut r =
                    Raw { name: String::new(), mac: None, veth: false, peer_index: None, peer_nsid: None };
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => r.name = n,
                        LinkAttribute::Address(b) => r.mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
                        LinkAttribute::Link(i) => r.peer_index = Some(i),
                        LinkAttribute::LinkNetNsId(n) => r.peer_nsid = Some(n),
                        LinkAttribute::LinkInfo(infos) => {
                            r.veth |= infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                        }
                        _ => {}
                    }
                }
                r
            })
            .collect();
        let ll = addrs
            .into_iter()
            .filter(|m| m.header.scope == AddressScope::Link)
            .filter_map(|m| {
                m.attributes.into_iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) if ip.is_ipv6() => Some(ip),
                    _ => None,
                })
            })
            .collect();
        Ok((raw, ll, nsids))
    })
}

/// The name of interface `index` in the namespace at `netns`, and whether it is a bridge's
/// port (has a controller).
fn peer_port(netns: &Path, index: u32) -> Result<(String, bool), LinkError> {
    let p = netns.to_path_buf();
    crate::netns::run_in(netns, move || -> Result<(String, bool), LinkError> {
        let err = |what: String| LinkError::Netlink { path: p.clone(), what };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| LinkError::Io { path: p.clone(), what: "runtime", source })?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| LinkError::Io {
                path: p.clone(),
                what: "route socket",
                source,
            })?;
            let task = tokio::spawn(conn);
            let mut links = handle.link().get().match_index(index).execute();
            let mut found = None;
            while let Some(l) = links.try_next().await.map_err(|e| err(format!("link {index}: {e}")))? {
                let mut name = None;
                let mut bridged = false;
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = Some(n),
                        LinkAttribute::Controller(_) => bridged = true,
                        _ => {}
                    }
                }
                found = name.map(|n| (n, bridged));
            }
            task.abort();
            found.ok_or_else(|| err(format!("no interface {index}")))
        })
    })?
}
