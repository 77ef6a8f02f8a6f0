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
pub fn apply(policy: &Policy, inv: &Inventory, only: Option<&str>, opts: &CompileOptions) -> Vec<Outcome> {
    let m = Membership::new(policy, inv);
    inv.containers
        .iter()
        .filter(|c| only.is_none_or(|n| n == c.name))
        .map(|c| {
            let result = match &c.netns {
                None => Err(format!("{}: no netns in the inventory", c.name)),
                Some(ns) => {
                    let started = Instant::now();
                    let rs = compile_container(policy, &m, c, opts);
                    Nft::open(ns, &c.name)
                        .and_then(|mut nft| nft.apply(&rs))
                        .map(|_| started.elapsed())
                        .map_err(|e| e.to_string())
                }
            };
            Outcome { container: c.name.clone(), result }
        })
        .collect()
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
