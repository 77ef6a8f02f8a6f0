//! Keeps each host-side namespace's `table bridge fw_floor` equal to policy x ports x blocks.
//!
//! One open socket per floor namespace. A change of ports, addresses, zone members or blocks
//! is a set-element update (a container joining is an element in `ports`, `port_out`, ...);
//! a policy change replaces the table atomically, carrying over the reply tuples the packet
//! path recorded (dumped just before, re-added with the time they had left), so established
//! inbound connections keep flowing. A tuple a new policy no longer allows is not carried
//! over: revocation reaches the floor too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tracing::{info, info_span, warn};

use super::compile::{compile_block_sets, compile_floor, DYNAMIC_OUT_SETS, DYNAMIC_SETS, FLOOR_TABLE};
use super::link::NsId;
use super::{FloorOptions, Port};
use crate::blocks::BlockList;
use crate::compile::{CompileOptions, Membership};
use crate::kernel::{Kernel, Tables};
use crate::nft::NftError;
use crate::reconcile::rules_match;
use crate::rules::Policy;
use crate::ruleset::ir::{KeyValue, SetElem, SetKey, TableFamily};
use crate::ruleset::Ruleset;

struct FloorNs {
    nft: Box<dyn Tables>,
    path: PathBuf,
    /// What fw last programmed here, without the dynamic sets' elements.
    last: Option<Ruleset>,
    /// The ports `last` was compiled for.
    ports: Vec<Port>,
}

/// The ports of one floor namespace, as the daemon found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub path: PathBuf,
    pub ports: Vec<Port>,
}

/// What one pass did, per floor namespace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FloorReport {
    pub replaced: Vec<NsId>,
    pub updated: Vec<NsId>,
    pub unchanged: usize,
    pub failed: Vec<(NsId, String)>,
}

/// What every floor is compiled from.
#[derive(Clone, Copy)]
pub struct Inputs<'a, 'p> {
    pub policy: &'p Policy,
    pub m: &'a Membership<'p>,
    pub blocks: &'a BlockList,
    pub copts: &'a CompileOptions,
}

pub struct Floors {
    by_ns: BTreeMap<NsId, FloorNs>,
    opts: FloorOptions,
    /// The namespace whose floor must exist even with no port (the guard's, for Docker:
    /// an unadmitted port there is cut).
    keep: Option<(NsId, PathBuf)>,
    kernel: std::sync::Arc<dyn Kernel>,
}

impl Floors {
    pub fn new(
        opts: FloorOptions,
        keep: Option<(NsId, PathBuf)>,
        kernel: std::sync::Arc<dyn Kernel>,
    ) -> Floors {
        Floors { by_ns: BTreeMap::new(), opts, keep, kernel }
    }

    pub fn opts(&self) -> &FloorOptions {
        &self.opts
    }

    /// The table last programmed in `ns`.
    pub fn ruleset(&self, ns: &NsId) -> Option<&Ruleset> {
        self.by_ns.get(ns).and_then(|f| f.last.as_ref())
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&NsId, &PathBuf)> {
        self.by_ns.iter().map(|(id, f)| (id, &f.path))
    }

    /// Brings every floor to the desired state; namespaces no longer wanted are forgotten
    /// (socket closed, table left: it admits no port that is still there).
    pub fn sync(
        &mut self,
        mut want: BTreeMap<NsId, Want>,
        inputs: &Inputs<'_, '_>,
        only: Option<&[NsId]>,
        hold: Option<NsId>,
    ) -> FloorReport {
        let Inputs { policy, m, blocks, copts } = *inputs;
        if let Some((id, path)) = &self.keep {
            want.entry(*id).or_insert_with(|| Want { path: path.clone(), ports: Vec::new() });
        }
        if let Some(h) = hold {
            want.remove(&h);
        }
        let mut report = FloorReport::default();
        if only.is_none() {
            let gone: Vec<NsId> = self
                .by_ns
                .keys()
                .filter(|id| !want.contains_key(id) && Some(**id) != hold)
                .copied()
                .collect();
            for id in gone {
                info!(netns = %id, "floor forgotten: no container port there any more");
                self.by_ns.remove(&id);
            }
        }
        for (id, w) in want {
            if only.is_some_and(|o| !o.contains(&id)) {
                continue;
            }
            let _span = info_span!("floor", netns = %w.path.display()).entered();
            // Only the guard's namespace cuts unadmitted ports: elsewhere (a lab's hub) other
            // bridge ports are not fw's business.
            let mut opts = self.opts.clone();
            if self.keep.as_ref().map(|(k, _)| k) != Some(&id) {
                opts.guard_prefixes.clear();
            }
            let rs = compile_floor(policy, m, &w.ports, blocks, copts, &opts);
            let f = match self.by_ns.get_mut(&id) {
                Some(f) => f,
                None => match self.kernel.tables(&w.path, &format!("floor {}", w.path.display())) {
                    Ok(nft) => self.by_ns.entry(id).or_insert(FloorNs {
                        nft,
                        path: w.path.clone(),
                        last: None,
                        ports: Vec::new(),
                    }),
                    Err(e) => {
                        warn!(error = %e, "floor: cannot open the namespace");
                        report.failed.push((id, e.to_string()));
                        continue;
                    }
                },
            };
            if f.last.as_ref() == Some(&rs) {
                report.unchanged += 1;
                continue;
            }
            let step =
                match (&f.last, f.last.as_ref().and_then(|l| crate::ruleset::diff::set_changes(l, &rs))) {
                    (_, Some(changes)) => {
                        f.nft.update_sets_in(rs.family, &rs.table, &changes).map(|()| false)
                    }
                    // A policy change: rewritten in place, so that no reply tuple recorded a
                    // moment before the commit is lost; then the tuples the new policy no
                    // longer allows go (recorded under it from the commit on, so none escapes).
                    (Some(last), None) => f.nft.update_in_place(last, &rs).and_then(|done| {
                        if done {
                            revoke_tuples(&mut *f.nft, &rs)?;
                            Ok(true)
                        } else {
                            replace(&mut *f.nft, &rs).map(|()| true)
                        }
                    }),
                    (None, None) => replace(&mut *f.nft, &rs).map(|()| true),
                };
            match step {
                Ok(replaced) => {
                    flush_caches_again(&mut *f.nft, &rs);
                    f.ports = w.ports.clone();
                    f.last = Some(rs);
                    if replaced {
                        info!(ports = w.ports.len(), "floor programmed");
                        report.replaced.push(id);
                    } else {
                        report.updated.push(id);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "floor programming failed; the previous floor stays");
                    report.failed.push((id, e.to_string()));
                }
            }
        }
        report
    }

    /// Writes only what a change of operator blocks changes (the quarantine and block
    /// sets) into the floors holding the ports of `containers`, without compiling the rest
    /// of any floor: the first thing a block does, so the cut waits for one batch only.
    /// `None` when a floor there was never programmed (or its sets are not in the shape
    /// the blocks need): the caller does a whole `sync` instead.
    pub fn sync_blocks<'z>(
        &mut self,
        zone_of: &dyn Fn(&str) -> Option<&'z str>,
        blocks: &BlockList,
        containers: &std::collections::BTreeSet<String>,
    ) -> Option<FloorReport> {
        let mut report = FloorReport::default();
        for (id, f) in &mut self.by_ns {
            if !f.ports.iter().any(|p| p.containers.iter().any(|c| containers.contains(c))) {
                continue;
            }
            let last = f.last.as_ref()?;
            let next_sets = compile_block_sets(zone_of, &f.ports, blocks);
            let old_sets =
                next_sets.iter().map(|n| last.set(&n.name).cloned()).collect::<Option<Vec<_>>>()?;
            let mini = |sets: Vec<crate::ruleset::ir::Set>| Ruleset {
                container: String::new(),
                zone: String::new(),
                mode: last.mode,
                family: last.family,
                table: last.table.clone(),
                sets,
                chains: Vec::new(),
            };
            let mut changes = crate::ruleset::diff::set_changes(&mini(old_sets), &mini(next_sets.clone()))?;
            if changes.is_empty() {
                report.unchanged += 1;
                continue;
            }
            changes.extend(crate::ruleset::diff::cache_flushes(last));
            let _span = info_span!("floor", netns = %f.path.display()).entered();
            match f.nft.update_sets_in(last.family, &last.table, &changes) {
                Ok(()) => {
                    // What fw programmed is now `last` with these sets: patched in place.
                    let last = f.last.as_mut()?;
                    for s in next_sets {
                        if let Some(slot) = last.sets.iter_mut().find(|o| o.name == s.name) {
                            *slot = s;
                        }
                    }
                    flush_caches_again(&mut *f.nft, last);
                    report.updated.push(*id);
                }
                Err(e) => {
                    warn!(error = %e, "floor: writing the blocks failed; the previous floor stays");
                    report.failed.push((*id, e.to_string()));
                }
            }
        }
        Some(report)
    }

    /// Re-applies every floor whose rules differ from what fw programmed (someone on the
    /// host edited it); returns the namespaces restored.
    pub fn verify(&mut self) -> Vec<PathBuf> {
        let mut restored = Vec::new();
        for f in self.by_ns.values_mut() {
            let Some(last) = f.last.clone() else { continue };
            let step = f.nft.list_rules_of(TableFamily::Bridge, FLOOR_TABLE).and_then(|listed| {
                if rules_match(&last, &listed) {
                    return Ok(false);
                }
                replace(&mut *f.nft, &last).map(|()| true)
            });
            match step {
                Ok(false) => {}
                Ok(true) => {
                    warn!(netns = %f.path.display(), "floor changed outside fw: restored");
                    restored.push(f.path.clone());
                }
                Err(e) => warn!(netns = %f.path.display(), error = %e, "floor check failed"),
            }
        }
        restored
    }
}

/// Empties the verdict caches once more, after the write that emptied them committed: a
/// packet that was already being judged by the old rules when that commit landed may have
/// cached its (old) verdict just after the flush; none can now. A failure leaves at most
/// one such verdict for `CACHE_MS`, and is logged.
fn flush_caches_again(nft: &mut dyn Tables, rs: &Ruleset) {
    let flushes = crate::ruleset::diff::cache_flushes(rs);
    if flushes.is_empty() {
        return;
    }
    if let Err(e) = nft.update_sets_in(rs.family, &rs.table, &flushes) {
        warn!(error = %e, "floor: emptying the verdict caches after a change failed");
    }
}

/// Replaces the floor with `rs`, carrying over the reply tuples the packet path recorded
/// that the new policy still allows (a revoked inbound flow's tuple is left behind, so its
/// replies stop at the floor too).
fn replace(nft: &mut dyn Tables, rs: &Ruleset) -> Result<(), NftError> {
    let mut next = rs.clone();
    let now = crate::clock::now_ms();
    for (name, outbound) in dynamic_sets() {
        let Some(set) = rs.set(name) else { continue };
        let SetKey::Fields(kinds) = set.key else { continue };
        let mut carried = Vec::new();
        for e in nft.dump_set(TableFamily::Bridge, FLOOR_TABLE, name)? {
            let Some(values) = crate::nft::decode_tuple(kinds, &e.key) else { continue };
            if still_allowed(rs, &values, outbound) {
                carried.push((SetElem::Tuple(values), e.expires_in_ms));
            }
        }
        if let Some(set) = next.sets.iter_mut().find(|s| s.name == name) {
            for (elem, left) in carried {
                if let Some(left) = left {
                    set.expires.insert(elem.clone(), now + left as i64);
                }
                set.elements.push(elem);
            }
        }
    }
    nft.apply(&next)
}

/// Deletes the recorded reply tuples `rs` would not record now.
fn revoke_tuples(nft: &mut dyn Tables, rs: &Ruleset) -> Result<(), NftError> {
    let mut changes = Vec::new();
    for (name, outbound) in dynamic_sets() {
        let Some(set) = rs.set(name) else { continue };
        let SetKey::Fields(kinds) = set.key else { continue };
        let gone: Vec<SetElem> = nft
            .dump_set(TableFamily::Bridge, FLOOR_TABLE, name)?
            .into_iter()
            .filter_map(|e| crate::nft::decode_tuple(kinds, &e.key))
            .filter(|v| !still_allowed(rs, v, outbound))
            .map(SetElem::Tuple)
            .collect();
        if !gone.is_empty() {
            changes.push(crate::ruleset::diff::SetChange {
                set: name.to_string(),
                key: set.key,
                add: Vec::new(),
                remove: gone,
                expires: Default::default(),
                jumps: Default::default(),
                flush: false,
            });
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    changes.extend(crate::ruleset::diff::cache_flushes(rs));
    nft.update_sets_in(TableFamily::Bridge, FLOOR_TABLE, &changes)
}

/// The dynamic sets, each with whether it records what the port opened (judged by its
/// egress policy) rather than what was let in (its ingress policy).
fn dynamic_sets() -> impl Iterator<Item = (&'static str, bool)> {
    DYNAMIC_SETS.into_iter().map(|s| (s, false)).chain(DYNAMIC_OUT_SETS.into_iter().map(|s| (s, true)))
}

/// Whether a recorded tuple (port . own . peer . proto [. own port . peer port]) is one the
/// floor `rs` would record now: for a reply tuple, its port's ingress chain, walked for the
/// inbound packet it stands for, ends in the recording rule; for one the port opened
/// (`outbound`), its egress chain allows the packet. What cannot be judged is not kept
/// (the next packet records it again if it is allowed).
fn still_allowed(rs: &Ruleset, key: &[KeyValue], outbound: bool) -> bool {
    use crate::ruleset::eval::{evaluate_chain, Packet, Proto};
    let (port, own, peer, proto) = match key {
        [p @ KeyValue::IfIndex(_), KeyValue::Addr(own), KeyValue::Addr(peer), KeyValue::Proto(proto), ..] => {
            (*p, *own, *peer, *proto)
        }
        _ => return false,
    };
    let port_at = |i: usize| match key.get(i) {
        Some(KeyValue::Port(p)) => Some(*p),
        _ => None,
    };
    let own_port = port_at(4);
    let map = if outbound { super::compile::MAP_PORT_OUT } else { super::compile::MAP_PORT_IN };
    let Some(chain) =
        rs.set(map).and_then(|m| m.map.as_ref()).and_then(|m| m.get(&SetElem::Tuple(vec![port])))
    else {
        return false; // the port is gone
    };
    let proto = match proto {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        1 | 58 => Proto::Icmp,
        _ => return false,
    };
    if outbound {
        let pkt = Packet { src: own, dst: peer, proto, dport: port_at(5), icmp_type: None };
        return evaluate_chain(rs, chain, &pkt).is_some_and(|d| d.verdict == fw_proto::Verdict::Allow);
    }
    let pkt = Packet { src: peer, dst: own, proto, dport: own_port, icmp_type: None };
    evaluate_chain(rs, chain, &pkt)
        .and_then(|d| d.by)
        .is_some_and(|by| by.kind == fw_proto::RuleKind::Floor && by.id == "record")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tuples_the_policy_still_allows_are_carried_over() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let policy = crate::rules::load_dir(&root.join("rules/demo"), 0).policy.unwrap();
        let inv = crate::inventory::load_inventory(&root.join("rules/demo-inventory.toml")).unwrap();
        let m = Membership::new(&policy, &inv);
        let ports: Vec<Port> = inv
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| Port {
                containers: vec![c.name.clone()],
                ifindex: 10 + i as u32,
                ifname: format!("p{i}"),
                mac: [2, 0, 0, 0, 0, i as u8],
                addrs: c.addresses.clone(),
            })
            .collect();
        let rs = compile_floor(
            &policy,
            &m,
            &ports,
            &BlockList::default(),
            &Default::default(),
            &Default::default(),
        );
        let port = |name: &str| {
            KeyValue::IfIndex(10 + inv.containers.iter().position(|c| c.name == name).unwrap() as u32)
        };
        let addr = |s: &str| KeyValue::Addr(s.parse().unwrap());
        let flow = |p: &str, own: &str, peer: &str, own_port: u16| {
            vec![
                port(p),
                addr(own),
                addr(peer),
                KeyValue::Proto(6),
                KeyValue::Port(own_port),
                KeyValue::Port(40000),
            ]
        };
        // api-1 reached web-1:80 (public-web): its replies may keep flowing.
        assert!(still_allowed(&rs, &flow("web-1", "10.77.0.11", "10.77.0.21", 80), false));
        // web-1 -> db-1:5432 is denied (no-web-to-db): db-1's replies stop.
        assert!(!still_allowed(&rs, &flow("db-1", "10.77.0.31", "10.77.0.11", 5432), false));
        // A port that is gone, a key that is not a tuple: dropped.
        let mut gone = flow("web-1", "10.77.0.11", "10.77.0.21", 80);
        gone[0] = KeyValue::IfIndex(999);
        assert!(!still_allowed(&rs, &gone, false));
        assert!(!still_allowed(&rs, &[KeyValue::Proto(6)], false));
        // web-1 opened a connection to api-1:8080 (web-to-api): kept; to db-1:5432: not.
        let opened = |p: &str, own: &str, peer: &str, peer_port: u16| {
            let mut k = flow(p, own, peer, 40000);
            k[5] = KeyValue::Port(peer_port);
            k
        };
        assert!(still_allowed(&rs, &opened("web-1", "10.77.0.11", "10.77.0.21", 8080), true));
        assert!(!still_allowed(&rs, &opened("web-1", "10.77.0.11", "10.77.0.31", 5432), true));
    }
}
