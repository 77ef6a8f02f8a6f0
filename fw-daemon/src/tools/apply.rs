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
