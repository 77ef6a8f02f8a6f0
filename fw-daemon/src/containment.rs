//! What keeps a compromised container in, beyond its own table: the host-side floors
//! (`crate::floor`), the first instant of a namespace, revocation of established flows a
//! new policy denies, and escalation against a container that keeps tampering with its
//! table. Owned by the daemon, run on its loop; the kernel work is in `floor` and `flows`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::blocks::BlockList;
use crate::compile::Membership;
use crate::floor::enforcer::{FloorReport, Floors, Want};
use crate::floor::link::{Links, NsId};
use crate::floor::{FloorOptions, Port};
use crate::flows::conntrack::CtEntry;
use crate::kernel::Kernel;
use crate::reconcile::{Reconciler, Report};
use crate::ruleset::eval::{evaluate, Packet, Proto};
use crate::ruleset::ir::Hook;
use crate::ruleset::Ruleset;

/// When repairs of one namespace's table become an escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TamperPolicy {
    /// This many restores of one container's table ...
    pub repairs: u32,
    /// ... within this window quarantine it at the floor (0 repairs: never).
    pub window: Duration,
}

impl Default for TamperPolicy {
    fn default() -> Self {
        TamperPolicy { repairs: 3, window: Duration::from_secs(10) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainmentConfig {
    pub floor: FloorOptions,
    /// The namespace whose floor cuts unadmitted ports (Docker's bridges live in the host
    /// namespace), and the port-name prefixes it cuts.
    pub guard: Option<(PathBuf, Vec<String>)>,
    pub tamper: TamperPolicy,
    /// Delete established flows a new policy denies (`revoke_established`).
    pub revoke: bool,
    /// Extra namespaces a host side may be in (inventory hints).
    pub link_hints: Vec<PathBuf>,
    /// Host-side floors at all (`--self` has no host side it may touch).
    pub floors: bool,
}

impl Default for ContainmentConfig {
    fn default() -> Self {
        ContainmentConfig {
            floor: FloorOptions::default(),
            guard: None,
            tamper: TamperPolicy::default(),
            revoke: true,
            link_hints: Vec::new(),
            floors: true,
        }
    }
}

pub struct Containment {
    floors: Floors,
    /// Per container namespace: what discovery found (or why it failed).
    links: BTreeMap<NsId, Result<Links, String>>,
    /// The guard namespace's floor waits for the first complete picture of its ports (the
    /// first Docker snapshot): until then the floor a previous run left stays as it is.
    hold_guard: bool,
    guard_ns: Option<NsId>,
    cfg: ContainmentConfig,
    repairs: BTreeMap<String, VecDeque<Duration>>,
    kernel: std::sync::Arc<dyn Kernel>,
}

/// A floor port as status shows it: `veth12ab in net:[4026532...]`.
pub fn describe(ifname: &str, ns: &NsId) -> String {
    format!("{ifname} in {ns}")
}

impl Containment {
    /// Containment on this machine's kernel.
    pub fn new(cfg: ContainmentConfig) -> Containment {
        Containment::with_kernel(cfg, crate::kernel::real())
    }

    pub fn with_kernel(cfg: ContainmentConfig, kernel: std::sync::Arc<dyn Kernel>) -> Containment {
        let guard = cfg.guard.as_ref().and_then(|(p, _)| kernel.netns_id(p).ok().map(|id| (id, p.clone())));
        let mut floor_opts = cfg.floor.clone();
        if let Some((_, prefixes)) = &cfg.guard {
            floor_opts.guard_prefixes = prefixes.clone();
        }
        Containment {
            floors: Floors::new(floor_opts, guard.clone(), kernel.clone()),
            links: BTreeMap::new(),
            hold_guard: guard.is_some(),
            guard_ns: guard.map(|(id, _)| id),
            cfg,
            repairs: BTreeMap::new(),
            kernel,
        }
    }

    /// The guard namespace's floor may be written from now on (Docker's first snapshot is
    /// in). With no floor there yet (a first start), it is written at once, admitting
    /// nothing: fail closed until the containers are programmed.
    pub fn release_guard(&mut self) {
        self.hold_guard = false;
    }

    pub fn guard_exists(&self) -> bool {
        let Some((p, _)) = &self.cfg.guard else { return false };
        self.kernel
            .tables(p, "floor check")
            .and_then(|mut n| {
                n.list_rules_of(crate::ruleset::ir::TableFamily::Bridge, crate::floor::FLOOR_TABLE)
            })
            .is_ok_and(|r| !r.is_empty())
    }

    /// After a reconcile pass: namespaces programmed for the first time lose the conntrack
    /// entries born before their table (a SYN queued behind an unanswered ARP would
    /// otherwise come back later as an established flow), and only then do the floors admit
    /// their ports. Returns the floors' report.
    pub fn converge(&mut self, rec: &Reconciler, report: &Report) -> FloorReport {
        for name in &report.fresh {
            let Some((_, path, _)) = rec.namespaces().find(|(_, _, m)| m.first() == Some(name)) else {
                continue;
            };
            match self.kernel.conntrack(path).and_then(|mut ct| ct.delete_matching(&|_| true)) {
                Ok(0) => {}
                Ok(n) => {
                    info!(container = %name, entries = n, "conntrack entries older than the table removed")
                }
                Err(e) => warn!(container = %name, error = %e, "flushing conntrack failed"),
            }
        }
        self.sync(rec, None)
    }

    /// Forgets what discovery found for these namespaces (their links may have changed).
    pub fn forget_links(&mut self, ns: impl IntoIterator<Item = NsId>) {
        for id in ns {
            self.links.remove(&id);
        }
    }

    /// The floors' ports: every programmed namespace's host sides.
    fn want(&mut self, rec: &Reconciler) -> BTreeMap<NsId, Want> {
        let inv = rec.inventory();
        let mut want: BTreeMap<NsId, Want> = BTreeMap::new();
        if !self.cfg.floors {
            return want;
        }
        let live: BTreeSet<NsId> = rec.namespaces().map(|(id, _, _)| id).collect();
        self.links.retain(|id, _| live.contains(id));
        for (id, path, members) in rec.namespaces() {
            let hints: Vec<&crate::inventory::LinkHint> =
                members.iter().filter_map(|n| inv.get(n)).filter_map(|c| c.link.as_ref()).collect();
            let mut extra = self.cfg.link_hints.clone();
            extra.extend(hints.iter().map(|h| h.netns.clone()));
            let kernel = self.kernel.clone();
            let links = self.links.entry(id).or_insert_with(|| {
                kernel
                    .links(path, &extra)
                    .and_then(|mut l| {
                        // A hint naming the port keeps that one only, and insists on it.
                        let names: Vec<&String> = hints.iter().filter_map(|h| h.ifname.as_ref()).collect();
                        if !names.is_empty() {
                            l.host_sides.retain(|h| names.contains(&&h.ifname));
                            if l.host_sides.is_empty() {
                                return Err(format!("no host side named {names:?} (the inventory's link)"));
                            }
                        }
                        Ok(l)
                    })
                    .inspect_err(
                        |e| warn!(container = ?members, error = %e, "host side not found: no floor for it"),
                    )
            });
            let Ok(links) = links else { continue };
            let mut addrs: Vec<IpAddr> = members
                .iter()
                .filter_map(|n| inv.get(n))
                .flat_map(|c| c.addresses.iter().copied())
                .chain(links.link_local.iter().copied())
                .collect();
            addrs.sort();
            addrs.dedup();
            for h in links.host_sides.iter().filter(|h| !live.contains(&h.netns_id)) {
                want.entry(h.netns_id)
                    .or_insert_with(|| Want { path: h.netns.clone(), ports: Vec::new() })
                    .ports
                    .push(Port {
                        containers: members.to_vec(),
                        ifindex: h.ifindex,
                        ifname: h.ifname.clone(),
                        mac: h.mac,
                        addrs: addrs.clone(),
                    });
            }
        }
        want
    }

    /// Brings the floors to policy x ports x blocks (`only`: just the floors of these
    /// containers' ports, e.g. a block's).
    pub fn sync(&mut self, rec: &Reconciler, only: Option<&BTreeSet<String>>) -> FloorReport {
        self.sync_with(rec, rec.blocks(), only)
    }

    /// `sync` with blocks other than the reconciler's (a block is applied to the floors
    /// first, then inside the namespaces).
    pub fn sync_with(
        &mut self,
        rec: &Reconciler,
        blocks: &BlockList,
        only: Option<&BTreeSet<String>>,
    ) -> FloorReport {
        let mut want = self.want(rec);
        let scope: Option<Vec<NsId>> = only.map(|names| {
            want.iter()
                .filter(|(_, w)| w.ports.iter().any(|p| p.containers.iter().any(|c| names.contains(c))))
                .map(|(id, _)| *id)
                .collect()
        });
        if self.hold_guard {
            if let Some(g) = self.guard_ns {
                want.remove(&g);
            }
        }
        let policy = rec.policy().clone();
        let m = Membership::new(&policy, rec.inventory());
        let hold = if self.hold_guard { self.guard_ns } else { None };
        let inputs = crate::floor::enforcer::Inputs { policy: &policy, m: &m, blocks, copts: rec.opts() };
        self.floors.sync(want, &inputs, scope.as_deref(), hold)
    }

    /// `sync_with` for a change of `blocks` alone: only the block sets are written (see
    /// `Floors::sync_blocks`); a whole sync where that cannot be done.
    /// `zones`: every container's zone (`rec.zones()`, which the caller has at hand).
    pub fn sync_blocks_with(
        &mut self,
        rec: &Reconciler,
        zones: &[(String, String)],
        blocks: &BlockList,
        only: &BTreeSet<String>,
    ) -> FloorReport {
        if !self.hold_guard {
            let zones: std::collections::HashMap<&str, &str> =
                zones.iter().map(|(c, z)| (c.as_str(), z.as_str())).collect();
            let zone_of = |c: &str| zones.get(c).copied();
            if let Some(report) = self.floors.sync_blocks(&zone_of, blocks, only) {
                return report;
            }
        }
        self.sync_with(rec, blocks, Some(only))
    }

    /// Floors someone on the host changed: restored.
    pub fn verify(&mut self) -> Vec<PathBuf> {
        self.floors.verify()
    }

    /// The host-side ports of a container, as status shows them; `Err` says why it has none.
    pub fn floor_of(&self, rec: &Reconciler, container: &str) -> Result<Vec<String>, String> {
        if !self.cfg.floors {
            return Err("no host-side floor: --self programs only the pod's own namespace".into());
        }
        let Some((id, _, _)) = rec.namespaces().find(|(_, _, m)| m.iter().any(|c| c == container)) else {
            return Err("not programmed".into());
        };
        match self.links.get(&id) {
            None => Err("host side not looked up yet".into()),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(l)) if l.host_sides.is_empty() => Err(format!(
                "no host side found (interfaces without one: {})",
                if l.unresolved.is_empty() { "none".to_string() } else { l.unresolved.join(", ") }
            )),
            Some(Ok(l)) => {
                // The other end in a container's own namespace is no floor: that container
                // could undo it (and no bridge hook sees a bare veth pair anyway).
                let containers: BTreeSet<NsId> = rec.namespaces().map(|(id, _, _)| id).collect();
                let ports: Vec<String> = l
                    .host_sides
                    .iter()
                    .filter(|h| !containers.contains(&h.netns_id))
                    .map(|h| describe(&h.ifname, &h.netns_id))
                    .collect();
                if ports.is_empty() {
                    Err("its link's other end is in a container's namespace, not the host's".into())
                } else {
                    Ok(ports)
                }
            }
        }
    }

    /// A repair of `container`'s table was needed at `now` (a monotonic clock's reading):
    /// whether that makes it a tamperer (this many repairs within the window), which the
    /// caller quarantines.
    pub fn repaired(&mut self, container: &str, now: Duration) -> bool {
        let t = self.cfg.tamper;
        if t.repairs == 0 {
            return false;
        }
        let q = self.repairs.entry(container.to_string()).or_default();
        q.push_back(now);
        while q.front().is_some_and(|f| now.saturating_sub(*f) > t.window) {
            q.pop_front();
        }
        if q.len() as u32 >= t.repairs {
            q.clear();
            return true;
        }
        false
    }

    pub fn tamper_policy(&self) -> TamperPolicy {
        self.cfg.tamper
    }

    /// Deletes the conntrack entries of `namespaces` (owners) whose original direction the
    /// namespace's table would now drop, judged by the same evaluation as `explain`: a
    /// container's outbound flow by its egress chain, an inbound one by its ingress chain.
    /// Returns how many were deleted.
    pub fn revoke(&self, rec: &Reconciler, namespaces: &BTreeSet<String>) -> u64 {
        if !self.cfg.revoke {
            return 0;
        }
        let mut cut = 0;
        for (_, path, members) in rec.namespaces() {
            let Some(owner) = members.first().filter(|o| namespaces.contains(*o)) else { continue };
            let Some(rs) = rec.ruleset(owner) else { continue };
            let own: Vec<IpAddr> = members
                .iter()
                .filter_map(|n| rec.inventory().get(n))
                .flat_map(|c| c.addresses.iter().copied())
                .collect();
            match revoke_in(&*self.kernel, path, rs, &own) {
                Ok(0) => {}
                Ok(n) => {
                    info!(container = %owner, flows = n, "established flows the policy now denies: cut");
                    cut += n;
                }
                Err(e) => warn!(container = %owner, error = %e, "revocation: conntrack failed"),
            }
        }
        cut
    }
}

fn revoke_in(
    kernel: &dyn Kernel,
    path: &Path,
    rs: &Ruleset,
    own: &[IpAddr],
) -> Result<u64, crate::flows::conntrack::CtError> {
    kernel.conntrack(path)?.delete_matching(&|e| denied(rs, own, e))
}

/// Whether the table would now drop the first packet of this flow.
pub fn denied(rs: &Ruleset, own: &[IpAddr], e: &CtEntry) -> bool {
    let o = &e.orig;
    let proto = match o.proto {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        1 | 58 => Proto::Icmp,
        _ => return false,
    };
    let dport = matches!(proto, Proto::Tcp | Proto::Udp).then_some(o.dport);
    let pkt = Packet { src: o.src, dst: o.dst, proto, dport, icmp_type: None };
    let hook = if own.contains(&o.src) {
        Hook::Output
    } else if own.contains(&o.dst) {
        Hook::Input
    } else {
        return false; // loopback or someone else's: not ours to judge
    };
    if o.src.is_loopback() || o.dst.is_loopback() {
        return false;
    }
    evaluate(rs, hook, &pkt).verdict == fw_proto::Verdict::Deny
}
