//! `fw-daemon apply` and `flush`: program (or clear) every listed container once and exit.
//! Useful in scripts, in tests, and to repair a host by hand.

use std::time::Instant;

use crate::compile::{compile_container, CompileOptions, Membership};
use crate::inventory::Inventory;
use crate::nft::Nft;
use crate::rules::Policy;

/// What happened to one container.
pub struct Outcome {
    pub container: String,
    pub result: Result<std::time::Duration, String>,
}

/// Programs every container that has a netns; containers are independent, so one failure
/// does not stop the others (every error is reported).
///
/// Sockets stay open until every namespace is programmed: closing an nftables socket waits
/// for the kernel to finish destroying the replaced table (an RCU grace period, ~10 ms), and
/// holding them lets those waits overlap instead of adding up. The daemon keeps its sockets
/// for a container's lifetime, so it never pays this on the programming path.
pub fn apply(policy: &Policy, inv: &Inventory, only: Option<&str>, opts: &CompileOptions) -> Vec<Outcome> {
    let m = Membership::new(policy, inv);
    let mut open = Vec::new();
    let outcomes = inv
        .containers
        .iter()
        .filter(|c| only.is_none_or(|n| n == c.name))
        .map(|c| {
            let result = match &c.netns {
                None => Err(format!("{}: no netns in the inventory", c.name)),
                Some(ns) => {
                    let started = Instant::now();
                    let rs = compile_container(policy, &m, c, opts);
                    Nft::open(ns, &c.name)
                        .and_then(|mut nft| {
                            nft.apply(&rs)?;
                            open.push(nft);
                            Ok(started.elapsed())
                        })
                        .map_err(|e| e.to_string())
                }
            };
            Outcome { container: c.name.clone(), result }
        })
        .collect();
    drop(open);
    outcomes
}

pub fn flush(inv: &Inventory, only: Option<&str>) -> Vec<Outcome> {
    inv.containers
        .iter()
        .filter(|c| only.is_none_or(|n| n == c.name))
        .map(|c| {
            let result = match &c.netns {
                None => Err(format!("{}: no netns in the inventory", c.name)),
                Some(ns) => {
                    let started = Instant::now();
                    Nft::open(ns, &c.name)
                        .and_then(|mut nft| nft.flush())
                        .map(|_| started.elapsed())
                        .map_err(|e| e.to_string())
                }
            };
            Outcome { container: c.name.clone(), result }
        })
        .collect()
}

/// Programs the host-side floors of every container in the inventory that has a netns:
/// each container's host side is discovered, and each namespace holding some gets its
/// `table bridge fw_floor` (one outcome per floor namespace, named by its path).
pub fn apply_floors(policy: &Policy, inv: &Inventory, opts: &CompileOptions) -> Vec<Outcome> {
    let (ports, mut outcomes) = floor_ports(inv);
    let m = Membership::new(policy, inv);
    for (path, ports) in ports {
        let started = Instant::now();
        let rs = crate::floor::compile_floor(
            policy,
            &m,
            &ports,
            &Default::default(),
            opts,
            &crate::floor::FloorOptions::default(),
        );
        let result = Nft::open(&path, "floor")
            .and_then(|mut nft| nft.apply(&rs))
            .map(|()| started.elapsed())
            .map_err(|e| e.to_string());
        outcomes.push(Outcome { container: format!("floor {}", path.display()), result });
    }
    outcomes
}

/// Removes the floors in every namespace holding a host side of the inventory's containers.
pub fn flush_floors(inv: &Inventory) -> Vec<Outcome> {
    let (ports, mut outcomes) = floor_ports(inv);
    for path in ports.keys() {
        let started = Instant::now();
        let result = Nft::open(path, "floor")
            .and_then(|mut nft| nft.flush_floor())
            .map(|()| started.elapsed())
            .map_err(|e| e.to_string());
        outcomes.push(Outcome { container: format!("floor {}", path.display()), result });
    }
    outcomes
}

/// The inventory's host sides, by floor namespace; containers whose host side cannot be
/// found are reported.
fn floor_ports(
    inv: &Inventory,
) -> (std::collections::BTreeMap<std::path::PathBuf, Vec<crate::floor::Port>>, Vec<Outcome>) {
    let mut by_ns: std::collections::BTreeMap<std::path::PathBuf, Vec<crate::floor::Port>> =
        Default::default();
    let mut failed = Vec::new();
    for c in &inv.containers {
        let Some(ns) = &c.netns else { continue };
        let hints: Vec<std::path::PathBuf> = c.link.iter().map(|l| l.netns.clone()).collect();
        match crate::floor::link::discover(ns, &hints) {
            Ok(links) => {
                let mut addrs = c.addresses.clone();
                addrs.extend(links.link_local.iter().copied());
                for h in links.host_sides {
                    by_ns.entry(h.netns.clone()).or_default().push(crate::floor::Port {
                        containers: vec![c.name.clone()],
                        ifindex: h.ifindex,
                        ifname: h.ifname,
                        mac: h.mac,
                        addrs: addrs.clone(),
                    });
                }
            }
            Err(e) => {
                failed.push(Outcome { container: c.name.clone(), result: Err(format!("host side: {e}")) })
            }
        }
    }
    (by_ns, failed)
}
