//! Policy x inventory -> one `Ruleset` per container. Pure: no I/O, no clock (the caller
//! passes `now` for expiries), deterministic output (golden-tested through `plan`).
//!
//! Chain layout (egress; ingress mirrors it with source addresses):
//!   loopback accept
//!   quarantine, blocks          <- before the established shortcut, so they cut live flows
//!                                  (a quarantine by conntrack direction: who opened it)
//!   bandwidth cap (all packets)
//!   inspection: cut flows answered with resets; undecided flows' payload packets to NFQUEUE
//!   ct established,related accept; ct invalid drop; IPv6 neighbour discovery accept
//!   connection caps (new flows)
//!   failsafes, then policies in file order (first match decides), then the default
//! Peers are matched through per-zone sets, so the rule count follows the number of
//! policies, never the number of peers.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use fw_proto::{Mode, RuleKind, RuleRef};
use ipnet::IpNet;

use crate::inspect::mark;
use crate::inventory::{Container, Inventory, SvcProto};
use crate::rules::validate::set_stem;
use crate::rules::{Action, InspectFail, Policy, Rule as PolicyRule, Traffic, Zone, ZONE_ANY};
use crate::ruleset::ir::*;

#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// NFLOG group the daemon listens on in every namespace.
    pub log_group: u16,
    /// Log records per second per rule, and burst: a flood cannot flood the logs.
    pub log_rate: u32,
    pub log_burst: u32,
    /// NFQUEUE number the first payload packets of flagged flows wait on for the daemon's
    /// verdict (policies with `fail = "closed"`); fail-open policies use the next number.
    pub inspect_queue: u16,
    /// Unix seconds; rules that expired by then are left out.
    pub now: i64,
    /// Networks a quarantined container may still exchange packets with (`quarantine_responders`).
    pub responders: Vec<IpNet>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            log_group: 100,
            log_rate: 10,
            log_burst: 20,
            inspect_queue: 101,
            now: 0,
            responders: Vec::new(),
        }
    }
}

/// The policy bits of an inspected policy's conntrack mark (see `inspect::mark`): stable
/// across reloads (a hash of its id), so a flow marked before a reload still finds its policy
/// after it. Collisions within one table take the next free value.
fn inspect_mark(id: &str, taken: &[u32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let mut low = (h ^ (h >> 16)) & mark::POLICY_BITS;
    while taken.contains(&low) {
        low = (low + 1) & mark::POLICY_BITS;
    }
    low
}

/// One inspected policy as a container's table flags it.
#[derive(Debug, Clone)]
struct Tap {
    /// The undecided mark its accepted connections get.
    mark: u32,
    fail_open: bool,
    origin: RuleRef,
}

/// Chains of a table with inspected policies: payload packets of undecided flows to the
/// queue, the accept path of inspected policies, and what cut flows get.
pub const CHAIN_INSPECT_QUEUE: &str = "inspect_queue";
pub const CHAIN_INSPECT_ACCEPT: &str = "inspect_accept";
pub const CHAIN_INSPECT_CUT: &str = "inspect_cut";

pub const CHAIN_EGRESS: &str = "egress";
pub const CHAIN_INGRESS: &str = "ingress";
pub const CHAIN_FORWARD: &str = "forward";
/// The families whose connections the container opens are cut (egress quarantine).
pub const SET_QUARANTINE_OUT: &str = "quarantine_out";
/// The families whose connections opened to the container are cut (ingress quarantine).
pub const SET_QUARANTINE_IN: &str = "quarantine_in";
/// The rule id quarantine drops are logged with (`fw:block:quarantine`), and the one of
/// drops of packets going the reply way of their connection.
pub const QUARANTINE_RULE: &str = "quarantine";
pub const QUARANTINE_REPLY_RULE: &str = "quarantine-reply";

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    Container,
    Peer,
}
pub const SET_BLOCK_OUT4: &str = "block_out4";
pub const SET_BLOCK_OUT6: &str = "block_out6";
pub const SET_BLOCK_IN4: &str = "block_in4";
pub const SET_BLOCK_IN6: &str = "block_in6";
pub const SET_BLOCK_OUT4_ADDR: &str = "block_out4a";
pub const SET_BLOCK_OUT6_ADDR: &str = "block_out6a";
pub const SET_BLOCK_IN4_ADDR: &str = "block_in4a";
pub const SET_BLOCK_IN6_ADDR: &str = "block_in6a";

/// Which zone each container is in, and each zone's addresses.
#[derive(Debug, Clone)]
pub struct Membership<'p> {
    pub zone_of: HashMap<String, &'p Zone>,
    pub members: HashMap<String, BTreeSet<IpAddr>>,
    /// Each port of each virtual address (Kubernetes Service), with its backends' zones.
    pub vips: Vec<VipPort>,
    /// Where each zone's egress to the virtual addresses is decided, by zone and `now`:
    /// the same for every container of the zone, and costly with thousands of Services.
    picks: Arc<Mutex<PicksCache>>,
}

/// One port of a virtual address and what is behind it: per backend, the zones its address
/// is in (none: an address no source names, which only `any` covers) and its port there.
#[derive(Debug, Clone, PartialEq)]
pub struct VipPort {
    pub service: String,
    pub addresses: Vec<IpAddr>,
    pub proto: SvcProto,
    pub port: u16,
    pub backends: Vec<(Vec<String>, u16)>,
    /// The backends' addresses and ports (for operator blocks of an endpoint).
    pub endpoints: Vec<(IpAddr, u16)>,
}

impl<'p> Membership<'p> {
    pub fn new(policy: &'p Policy, inventory: &Inventory) -> Membership<'p> {
        let mut zone_of = HashMap::with_capacity(inventory.containers.len());
        let mut members: HashMap<String, BTreeSet<IpAddr>> = HashMap::new();
        let mut zone_at: HashMap<IpAddr, Vec<&str>> = HashMap::new();
        for c in &inventory.containers {
            let z = policy.zone_of(&c.identity());
            zone_of.insert(c.name.clone(), z);
            members.entry(z.name.clone()).or_default().extend(c.addresses.iter().copied());
            for a in &c.addresses {
                let zs = zone_at.entry(*a).or_default();
                if !zs.contains(&z.name.as_str()) {
                    zs.push(z.name.as_str());
                }
            }
        }
        // A backend is in the zone of each container with its address (a pod going away and
        // one reusing its address), and in every zone whose networks hold it: a packet to it
        // matches the rules of each.
        let zones_of = |a: &IpAddr| -> Vec<String> {
            let mut out: Vec<String> = zone_at.get(a).into_iter().flatten().map(|z| z.to_string()).collect();
            for z in policy.zones.iter() {
                if z.cidrs().iter().any(|n| n.contains(a)) && !out.contains(&z.name) {
                    out.push(z.name.clone());
                }
            }
            out
        };
        let mut vips = Vec::new();
        for s in &inventory.services {
            for p in &s.ports {
                vips.push(VipPort {
                    service: s.name.clone(),
                    addresses: s.addresses.clone(),
                    proto: p.proto,
                    port: p.port,
                    backends: p
                        .backends
                        .iter()
                        .map(|(a, port)| (zones_of(a), *port))
                        // Backends fw does not know: one in no zone, which only `any` covers.
                        .chain(p.incomplete.then(|| (Vec::new(), p.port)))
                        .collect(),
                    endpoints: p.backends.clone(),
                });
            }
        }
        Membership { zone_of, members, vips, picks: Arc::default() }
    }
}

/// Which rule decides a packet: a failsafe or a policy (by index in its list), or the
/// default. Ordered as the chains walk them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Decider {
    Failsafe(usize),
    Policy(usize),
    Default,
}

/// Where each virtual address's ports are decided, for one zone's egress: the elements
/// (`daddr . l4proto . dport`) each decider's rule gets, per family.
type VipPicks = std::collections::BTreeMap<(Decider, Family), BTreeSet<SetElem>>;

/// Each zone's picks, by (zone, `now`).
type PicksCache = HashMap<(String, i64), Arc<VipPicks>>;

const VIP_KEY4: &[KeyKind] = &[KeyKind::Ipv4, KeyKind::InetProto, KeyKind::InetService];
const VIP_KEY6: &[KeyKind] = &[KeyKind::Ipv6, KeyKind::InetProto, KeyKind::InetService];

/// Compiles every container in the inventory.
pub fn compile_all(policy: &Policy, inventory: &Inventory, opts: &CompileOptions) -> Vec<Ruleset> {
    let m = Membership::new(policy, inventory);
    inventory.containers.iter().map(|c| compile_container(policy, &m, c, opts)).collect()
}

pub fn compile_container(
    policy: &Policy,
    m: &Membership<'_>,
    c: &Container,
    opts: &CompileOptions,
) -> Ruleset {
    compile_with_blocks(policy, m, c, opts, &crate::blocks::BlockList::default())
}

/// `compile_container` with the operator blocks that apply to the container in its sets.
pub fn compile_with_blocks(
    policy: &Policy,
    m: &Membership<'_>,
    c: &Container,
    opts: &CompileOptions,
    blocks: &crate::blocks::BlockList,
) -> Ruleset {
    compile_group(policy, m, &[c], opts, blocks)
}

/// The one table of a namespace that several containers share (`--network container:X`, two
/// inventory entries naming one namespace). The kernel cannot tell which of them sent a
/// packet, so a flow passes only if every sharer's zone allows it: each zone's failsafes,
/// policies and default sit in a chain of their own that returns on allow and drops on deny
/// (attributed to the denying rule), and the base chain walks them in turn. Caps and
/// inspection are the first zone's (in policy order); blocks of every sharer apply.
pub fn compile_group(
    policy: &Policy,
    m: &Membership<'_>,
    members: &[&Container],
    opts: &CompileOptions,
    blocks: &crate::blocks::BlockList,
) -> Ruleset {
    let zone_of =
        |c: &Container| m.zone_of.get(&c.name).copied().unwrap_or_else(|| policy.zone_of(&c.identity()));
    let mut zones: Vec<&Zone> = Vec::new();
    for z in policy.zones.iter() {
        if members.iter().any(|c| zone_of(c).name == z.name) {
            zones.push(z);
        }
    }
    let Some(first) = members.first() else {
        return Ruleset {
            container: String::new(),
            zone: String::new(),
            mode: Mode::Enforce,
            family: TableFamily::Inet,
            table: TABLE.into(),
            sets: Vec::new(),
            chains: Vec::new(),
        };
    };
    let zone = zones.first().copied().unwrap_or_else(|| zone_of(first));
    let mut b = Builder {
        policy,
        m,
        opts,
        zone,
        sets: Vec::new(),
        chains: Vec::new(),
        taps: Vec::new(),
        floor: None,
        shared: false,
        all_zones: if zones.len() > 1 { zones.clone() } else { Vec::new() },
    };
    b.taps = b.inspected();
    let named: Vec<(String, String)> =
        members.iter().map(|c| (c.name.clone(), zone_of(c).name.clone())).collect();
    b.block_sets(&blocks.for_containers(&named));
    let egress = b.base_chain(Side::Egress);
    let ingress = b.base_chain(Side::Ingress);
    let forward = b.forward_chain();
    // Last, so the names of the other chains do not depend on whether a table inspects.
    b.inspect_chains();
    let mut chains = vec![egress, ingress, forward];
    chains.append(&mut b.chains);
    Ruleset {
        container: first.name.clone(),
        zone: zone.name.clone(),
        mode: zone.mode,
        family: TableFamily::Inet,
        table: TABLE.into(),
        sets: b.sets,
        chains,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Egress,
    Ingress,
}

/// What a zone's policy decides, as plain verdicts: the floor's zone chains (see
/// `crate::floor`) are built from these. Each failsafe, policy and the default becomes rules
/// (one per address family of the peer) ending in `pass` where the policy allows and `stop`
/// where it denies; an audit-mode zone passes everything. Same walk, same order, same
/// matches as the namespace's chains, so both points decide alike.
#[derive(Debug, Clone, PartialEq)]
pub struct ZonePolicy {
    pub rules: Vec<Rule>,
    /// The zone sets the rules look up (`z_<zone>_4` ...), with their members.
    pub sets: Vec<Set>,
}

pub fn zone_policy(
    policy: &Policy,
    m: &Membership<'_>,
    zone: &Zone,
    side: Side,
    opts: &CompileOptions,
    pass: Verdict,
    stop: Verdict,
) -> ZonePolicy {
    let mut b = Builder {
        policy,
        m,
        opts,
        zone,
        sets: Vec::new(),
        chains: Vec::new(),
        taps: Vec::new(),
        floor: Some((pass.clone(), stop)),
        shared: false,
        all_zones: Vec::new(),
    };
    let mut rules = Vec::new();
    if zone.mode == Mode::Audit {
        rules.push(rule(
            vec![],
            pass,
            Some(RuleRef {
                kind: RuleKind::Builtin,
                id: "audit".into(),
                source: zone.pos.as_ref().map(|p| p.short()),
            }),
        ));
        return ZonePolicy { rules, sets: b.sets };
    }
    b.decisions(side, &mut rules);
    ZonePolicy { rules, sets: b.sets }
}

struct Builder<'a, 'p> {
    policy: &'p Policy,
    m: &'a Membership<'p>,
    opts: &'a CompileOptions,
    zone: &'p Zone,
    sets: Vec<Set>,
    /// Action chains (log + verdict), appended after the base chains.
    chains: Vec<Chain>,
    /// Inspected policies that apply to this container (either side), in file order.
    taps: Vec<Tap>,
    /// Building the floor's verdict-only rules: the verdicts for allow and deny (no log
    /// chains, no taps).
    floor: Option<(Verdict, Verdict)>,
    /// Building one sharer's policy chain of a shared namespace: an allow returns (the next
    /// sharer's zone decides too) instead of accepting.
    shared: bool,
    /// The zones of a shared namespace's containers, when there are several.
    all_zones: Vec<&'p Zone>,
}

fn builtin(id: &str) -> Option<RuleRef> {
    Some(RuleRef { kind: RuleKind::Builtin, id: id.into(), source: None })
}

fn rule(matches: Vec<Match>, verdict: Verdict, origin: Option<RuleRef>) -> Rule {
    Rule { matches, counter: true, verdict: Some(verdict), origin, ..Rule::default() }
}

impl<'a, 'p> Builder<'a, 'p> {
    /// Operator blocks of an endpoint, carried to the virtual addresses in front of it: the
    /// egress table sees a Service's ClusterIP, not the endpoint the node rewrites it to,
    /// so a block of the endpoint also blocks each VIP port that may lead there (a range
    /// that would overlap one already in the set is left out: the kernel refuses those).
    fn vip_blocks<'c>(
        &self,
        cb: &'c crate::blocks::ContainerBlocks,
    ) -> std::borrow::Cow<'c, crate::blocks::ContainerBlocks> {
        if self.m.vips.is_empty() || cb.egress.is_empty() {
            return std::borrow::Cow::Borrowed(cb);
        }
        let mut out = cb.clone();
        for (b, exp) in &cb.egress {
            for v in &self.m.vips {
                let proto = v.proto.number();
                let leads_there = v.endpoints.iter().any(|(a, target)| {
                    Family::of(a) == b.family()
                        && (b.dst.0..=b.dst.1).contains(a)
                        && (b.proto.0..=b.proto.1).contains(&proto)
                        && (b.dport.0..=b.dport.1).contains(target)
                });
                if !leads_there {
                    continue;
                }
                for vip in v.addresses.iter().filter(|a| Family::of(a) == b.family()) {
                    let derived = BlockRange {
                        src: b.src,
                        dst: (*vip, *vip),
                        proto: (proto, proto),
                        sport: b.sport,
                        dport: (v.port, v.port),
                    };
                    if out.egress.keys().any(|x| x.overlaps(&derived)) {
                        continue;
                    }
                    out.egress.insert(derived, *exp);
                }
            }
        }
        std::borrow::Cow::Owned(out)
    }

    fn block_sets(&mut self, cb: &crate::blocks::ContainerBlocks) {
        let derived = self.vip_blocks(cb);
        let cb = derived.as_ref();
        fn mk(name: &str, key: SetKey, comment: &str, elems: Vec<(SetElem, Option<i64>)>) -> Set {
            let mut set = Set { timeout: true, ..Set::new(name, key, comment) };
            for (e, exp) in elems {
                if let Some(ms) = exp {
                    set.expires.insert(e.clone(), ms);
                }
                set.elements.push(e);
            }
            set
        }
        let q = |m: &std::collections::BTreeMap<Family, Option<i64>>| -> Vec<(SetElem, Option<i64>)> {
            m.iter().map(|(f, e)| (SetElem::NfProto(*f), *e)).collect()
        };
        // Ranges without ports go in the address sets, which match every packet (a port
        // lookup fails on a packet too short to carry ports, and must not let it pass).
        let r = |m: &std::collections::BTreeMap<BlockRange, Option<i64>>,
                 f: Family,
                 ports: bool|
         -> Vec<(SetElem, Option<i64>)> {
            m.iter()
                .filter(|(b, _)| b.family() == f && b.has_ports() == ports)
                .map(|(b, e)| (SetElem::Block(*b), *e))
                .collect()
        };
        self.sets.push(mk(
            SET_QUARANTINE_OUT,
            SetKey::NfProto,
            "operator quarantine: connections it opens",
            q(&cb.quarantine_out),
        ));
        self.sets.push(mk(
            SET_QUARANTINE_IN,
            SetKey::NfProto,
            "operator quarantine: connections opened to it",
            q(&cb.quarantine_in),
        ));
        for (name, f, m, c) in [
            (SET_BLOCK_OUT4, Family::V4, &cb.egress, "operator blocks: egress"),
            (SET_BLOCK_OUT6, Family::V6, &cb.egress, "operator blocks: egress"),
            (SET_BLOCK_IN4, Family::V4, &cb.ingress, "operator blocks: ingress"),
            (SET_BLOCK_IN6, Family::V6, &cb.ingress, "operator blocks: ingress"),
        ] {
            self.sets.push(mk(name, SetKey::Block(f), c, r(m, f, true)));
        }
        for (name, f, m, c) in [
            (SET_BLOCK_OUT4_ADDR, Family::V4, &cb.egress, "operator blocks: egress, every port"),
            (SET_BLOCK_OUT6_ADDR, Family::V6, &cb.egress, "operator blocks: egress, every port"),
            (SET_BLOCK_IN4_ADDR, Family::V4, &cb.ingress, "operator blocks: ingress, every port"),
            (SET_BLOCK_IN6_ADDR, Family::V6, &cb.ingress, "operator blocks: ingress, every port"),
        ] {
            self.sets.push(mk(name, SetKey::BlockAddr(f), c, r(m, f, false)));
        }
    }

    fn log_prefix(kind: LogKind, id: &str) -> String {
        let mut p = format!("fw:{}:{}", kind.tag(), id);
        // NFLOG prefixes are at most 127 bytes.
        while p.len() > 127 {
            p.pop();
        }
        p
    }

    /// A chain that logs (rate-limited) and then applies `verdict`; `None` returns to the caller.
    fn action_chain(&mut self, kind: LogKind, origin: &RuleRef, tail: Vec<Rule>) -> String {
        let name = format!("{}_{}", kind.tag(), self.chains.len());
        let log_rule = Rule {
            matches: vec![Match::Limit {
                over: false,
                rate: self.opts.log_rate.into(),
                unit: RateUnit::Packets,
                burst: self.opts.log_burst.into(),
            }],
            counter: false,
            mark: None,
            dynset: None,
            log: Some(Log {
                kind,
                prefix: Self::log_prefix(kind, &origin.id),
                group: self.opts.log_group,
                snaplen: None,
            }),
            verdict: None,
            origin: Some(origin.clone()),
        };
        let mut rules = vec![log_rule];
        rules.extend(tail);
        // Both base chains end in the same default; one chain per distinct action is enough.
        if let Some(same) = self.chains.iter().find(|c| c.rules == rules) {
            return same.name.clone();
        }
        self.chains.push(Chain { name: name.clone(), base: None, rules });
        name
    }

    /// The verdict for a decision taken in this container's zone, honouring audit mode.
    fn decide(&mut self, action: Action, origin: &RuleRef) -> Verdict {
        if let Some((pass, stop)) = &self.floor {
            return match (action, self.zone.mode) {
                (Action::Deny, Mode::Enforce) => stop.clone(),
                _ => pass.clone(),
            };
        }
        let shared = self.shared;
        let terminal = |v: Verdict| Rule {
            matches: vec![],
            counter: false,
            mark: None,
            dynset: None,
            log: None,
            verdict: Some(v),
            origin: Some(origin.clone()),
        };
        let pass = if shared { Verdict::Return } else { Verdict::Accept };
        match (action, self.zone.mode) {
            (Action::Allow, _) => pass,
            (Action::Log, _) => {
                Verdict::Jump(self.action_chain(LogKind::Allow, origin, vec![terminal(pass)]))
            }
            (Action::Deny, Mode::Enforce) => {
                Verdict::Jump(self.action_chain(LogKind::Deny, origin, vec![terminal(Verdict::Drop)]))
            }
            (Action::Deny, Mode::Audit) => {
                Verdict::Jump(self.action_chain(LogKind::Audit, origin, vec![terminal(pass)]))
            }
        }
    }

    /// Matches for "the peer is in zone `name`": none for `any`, else one alternative per
    /// family and kind of member (its containers' addresses, its networks), each with the
    /// family it is about (`None`: either).
    fn peer(&mut self, name: &str, dir: Dir) -> Vec<(Option<Family>, Vec<Match>)> {
        if name == ZONE_ANY {
            return vec![(None, vec![])];
        }
        let Some(zone) = self.policy.zone(name) else {
            return vec![];
        };
        let stem = set_stem(name);
        let mut alts = Vec::new();
        for family in [Family::V4, Family::V6] {
            let key = if family == Family::V4 { SetKey::Ipv4 } else { SetKey::Ipv6 };
            // Container zones keep both families even when empty, so a member joining later
            // is a set-element update, not a rule change.
            if zone.selector().is_some() {
                let set_name = format!("z_{stem}_{}", fam_digit(family));
                let elems: Vec<SetElem> = self
                    .m
                    .members
                    .get(name)
                    .map(|s| {
                        s.iter().filter(|a| Family::of(a) == family).map(|a| SetElem::Addr(*a)).collect()
                    })
                    .unwrap_or_default();
                self.declare_set(Set {
                    elements: elems,
                    ..Set::new(set_name.clone(), key, format!("zone {name}"))
                });
                alts.push((Some(family), vec![Match::AddrInSet { family, dir, set: set_name }]));
            }
            // Networks are static: skip a family the zone has none in. A zone of both
            // containers and networks keeps them in a set of their own (an interval set).
            let nets: Vec<SetElem> = zone
                .cidrs()
                .iter()
                .filter(|n| matches!((n, family), (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)))
                .map(|n| SetElem::Net(*n))
                .collect();
            if !nets.is_empty() {
                let (set_name, comment) = if zone.selector().is_some() {
                    (format!("z_{stem}_net{}", fam_digit(family)), format!("zone {name}: networks"))
                } else {
                    (format!("z_{stem}_{}", fam_digit(family)), format!("zone {name}"))
                };
                self.declare_set(Set {
                    interval: true,
                    elements: nets,
                    ..Set::new(set_name.clone(), key, comment)
                });
                alts.push((Some(family), vec![Match::AddrInSet { family, dir, set: set_name }]));
            }
        }
        alts
    }

    fn declare_set(&mut self, set: Set) {
        if self.sets.iter().all(|s| s.name != set.name) {
            self.sets.push(set);
        }
    }

    /// The matches of a rule's traffic for peers of `family` (`None`: either), one
    /// alternative per nft rule: services of the same protocols share one rule (their
    /// ports in one set); ICMP types are per family, so a rule with them gets one per family.
    fn traffic_matches(traffic: &[Traffic], family: Option<Family>) -> Vec<Vec<Match>> {
        let mut out: Vec<Vec<Match>> = Vec::new();
        for t in merged(traffic) {
            let typed = t.protos.icmp && !t.icmp.is_any();
            let mut l4 = Vec::new();
            if t.protos.tcp {
                l4.push(L4::Tcp);
            }
            if t.protos.udp {
                l4.push(L4::Udp);
            }
            if t.protos.icmp && !typed {
                l4.push(L4::Icmp);
                l4.push(L4::Icmpv6);
            }
            if t.protos.is_any() && t.ports.is_any() {
                out.push(vec![]);
            } else if !l4.is_empty() {
                let mut m = vec![Match::L4Proto(l4)];
                if !t.ports.is_any() {
                    m.push(Match::Dport(t.ports.0.clone()));
                }
                out.push(m);
            }
            if typed {
                let families = family.map_or(vec![Family::V4, Family::V6], |f| vec![f]);
                for f in families {
                    let types = t.icmp.numbers(f == Family::V6);
                    // A type only one version has: the other family matches none of it.
                    if !types.is_empty() {
                        out.push(vec![Match::IcmpType { family: f, types }]);
                    }
                }
            }
        }
        let mut seen = Vec::new();
        out.retain(|m| {
            let new = !seen.contains(m);
            seen.push(m.clone());
            new
        });
        out
    }

    /// Rules for policies that apply on this side of this container, in order.
    fn policy_rules(&mut self, side: Side, list: &'p [PolicyRule], kind: RuleKind, out: &mut Vec<Rule>) {
        let zone = self.zone.name.as_str();
        for r in list.iter().filter(|r| !r.is_expired(self.opts.now)) {
            let (own, peers, dir) = match side {
                Side::Egress => (&r.from, &r.to, Dir::Dst),
                Side::Ingress => (&r.to, &r.from, Dir::Src),
            };
            if !own.includes(zone) {
                continue;
            }
            let (verdict, origin, tap) = self.rule_verdict(r, kind);
            let mut alts = Vec::new();
            for p in peers.iter() {
                alts.extend(self.peer(p, dir));
            }
            for (family, alt) in alts {
                let traffic = Self::traffic_matches(&r.traffic, family);
                // The floor sees IPv4 datagrams unreassembled: a later fragment carries no
                // ports, so an allow with ports also passes later fragments to the same
                // peers (the first fragment, which has them, is judged like any packet).
                let v6_only =
                    |m: &Vec<Match>| matches!(m.as_slice(), [Match::IcmpType { family: Family::V6, .. }]);
                let restricted = !traffic.iter().any(|t| t.is_empty()) && traffic.iter().any(|t| !v6_only(t));
                let allows = self.floor.as_ref().is_some_and(|(pass, _)| verdict == *pass);
                if allows && side == Side::Egress && restricted && family != Some(Family::V6) {
                    let mut frag = alt.clone();
                    if frag.is_empty() {
                        frag.push(Match::EtherType { types: vec![ETHERTYPE_IPV4], invert: false });
                    }
                    frag.push(Match::FragNonFirst);
                    out.push(rule(frag, verdict.clone(), Some(origin.clone())));
                }
                for t in traffic {
                    let mut m = alt.clone();
                    m.extend(t);
                    let mut x = rule(m, verdict.clone(), Some(origin.clone()));
                    // Which side accepted it tells the daemon who initiated the connection.
                    let remote = if side == Side::Ingress { mark::REMOTE_INITIATOR } else { 0 };
                    x.mark = tap.as_ref().map(|t| t.mark | remote);
                    out.push(x);
                }
            }
        }
    }

    /// The responders' sets (declared once), one per family that has some.
    /// The chain a packet of a quarantined family goes through on `side`: it drops the
    /// packets of connections `cut` opened (both ways along them) and returns the rest.
    /// Conntrack's direction says who opened a connection: on the egress side the packets
    /// of connections the container opened go `original`, on the ingress side `reply`.
    /// A packet without a conntrack entry (invalid, untracked) is dropped, and so is a TCP
    /// segment that creates an entry without being a connection's opening SYN (conntrack
    /// picks such segments up mid-stream, in whichever direction they go): after the block
    /// deleted a cut connection's entry, its next segment must not pass as one the other
    /// side opened. Responders stay reachable either way.
    fn quarantine_chain(&mut self, side: Side, cut: Opener) -> String {
        let (side_tag, peer_dir) = match side {
            Side::Egress => ("out", Dir::Dst),
            Side::Ingress => ("in", Dir::Src),
        };
        let name =
            format!("quarantine_{}_{side_tag}", if cut == Opener::Container { "opened" } else { "accepted" });
        if self.chains.iter().any(|c| c.name == name) {
            return name;
        }
        let cut_dir = match (side, cut) {
            (Side::Egress, Opener::Container) | (Side::Ingress, Opener::Peer) => CtDir::Original,
            (Side::Egress, Opener::Peer) | (Side::Ingress, Opener::Container) => CtDir::Reply,
        };
        let keep_dir = if cut_dir == CtDir::Original { CtDir::Reply } else { CtDir::Original };
        let drop_as = |b: &mut Self, id: &str| {
            let origin = RuleRef { kind: RuleKind::Block, id: id.into(), source: None };
            let chain = b.action_chain(
                LogKind::Block,
                &origin,
                vec![Rule { verdict: Some(Verdict::Drop), origin: Some(origin.clone()), ..Rule::default() }],
            );
            (origin, chain)
        };
        let mut rules = Vec::new();
        for (family, set) in self.responder_sets() {
            let responders = RuleRef { kind: RuleKind::Block, id: "responders".into(), source: None };
            rules.push(rule(
                vec![Match::AddrInSet { family, dir: peer_dir, set }],
                Verdict::Accept,
                Some(responders),
            ));
        }
        // Replies are logged as such: the flow table shows them on their connection's side.
        let cut_id = if cut_dir == CtDir::Reply { QUARANTINE_REPLY_RULE } else { QUARANTINE_RULE };
        let (origin, chain) = drop_as(self, cut_id);
        rules.push(rule(vec![Match::CtDirection(cut_dir)], Verdict::Jump(chain), Some(origin)));
        let (origin, chain) = drop_as(self, QUARANTINE_RULE);
        if keep_dir == CtDir::Original {
            rules.push(rule(
                vec![
                    Match::CtState(vec![CtState::New]),
                    Match::TcpFlags { mask: TCP_OPENING_MASK, value: TCP_SYN, invert: true },
                ],
                Verdict::Jump(chain.clone()),
                Some(origin.clone()),
            ));
        }
        rules
            .push(Rule { counter: false, ..rule(vec![Match::CtDirection(keep_dir)], Verdict::Return, None) });
        rules.push(rule(vec![], Verdict::Jump(chain), Some(origin)));
        self.chains.push(Chain { name: name.clone(), base: None, rules });
        name
    }

    fn responder_sets(&mut self) -> Vec<(Family, String)> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            let nets: Vec<SetElem> = self
                .opts
                .responders
                .iter()
                .filter(|n| Family::of(&n.addr()) == family)
                .map(|n| SetElem::Net(*n))
                .collect();
            if nets.is_empty() {
                continue;
            }
            let name = format!("responders{}", fam_digit(family));
            if self.sets.iter().all(|s| s.name != name) {
                let key = if family == Family::V4 { SetKey::Ipv4 } else { SetKey::Ipv6 };
                self.sets.push(Set {
                    interval: true,
                    elements: nets,
                    ..Set::new(name.clone(), key, "responders a quarantined container may still reach")
                });
            }
            out.push((family, name));
        }
        out
    }

    /// Failsafes, then policies, then the default: the decisions of this zone's traffic.
    fn decisions(&mut self, side: Side, rules: &mut Vec<Rule>) {
        // Failsafes are allows that no policy can remove: evaluated before every policy and
        // never subject to audit mode.
        let policy = self.policy;
        // Virtual addresses first: their packets are decided by the rules that decide the
        // endpoints behind them (failsafes included), never by a rule that happens to
        // match the VIP itself (`any`, a network holding the ClusterIP) earlier on.
        if side == Side::Egress {
            let picks = self.vip_picks();
            let deciders: BTreeSet<Decider> = picks.keys().map(|(d, _)| *d).collect();
            for d in deciders {
                let (verdict, origin, mark) = self.decider_verdict(d);
                self.vip_rules(&picks, d, &verdict, &origin, mark, rules);
            }
        }
        self.policy_rules(side, &policy.failsafes, RuleKind::Failsafe, rules);
        self.policy_rules(side, &policy.rules, RuleKind::Policy, rules);
        let origin = self.default_origin();
        let verdict = self.decide(policy.defaults.action, &origin);
        rules.push(rule(vec![], verdict, Some(origin)));
    }

    fn default_origin(&self) -> RuleRef {
        let d = &self.policy.defaults;
        RuleRef { kind: RuleKind::Default, id: "default".into(), source: d.pos.as_ref().map(|p| p.short()) }
    }

    /// A failsafe's or policy's verdict, origin and inspection tap. An inspected policy
    /// marks the connections it accepts as undecided (so their payload packets, both
    /// directions, wait for the daemon's verdict) and sends a first packet that already
    /// carries payload (a UDP query) to the queue itself.
    fn rule_verdict(&mut self, r: &PolicyRule, kind: RuleKind) -> (Verdict, RuleRef, Option<Tap>) {
        let origin = RuleRef { kind, id: r.id.clone(), source: Some(r.pos.short()) };
        let tap = self.taps.iter().find(|t| t.origin.id == r.id && t.origin.kind == kind).cloned();
        let verdict = match &tap {
            Some(_) => self.inspected_accept(r.action, &origin),
            None => self.decide(r.action, &origin),
        };
        (verdict, origin, tap)
    }

    /// The verdict, origin and inspection mark a decider's rule gives on egress.
    fn decider_verdict(&mut self, d: Decider) -> (Verdict, RuleRef, Option<u32>) {
        let policy = self.policy;
        let (r, kind) = match d {
            Decider::Failsafe(i) => (&policy.failsafes[i], RuleKind::Failsafe),
            Decider::Policy(i) => (&policy.rules[i], RuleKind::Policy),
            Decider::Default => {
                let origin = self.default_origin();
                return (self.decide(policy.defaults.action, &origin), origin, None);
            }
        };
        let (verdict, origin, tap) = self.rule_verdict(r, kind);
        (verdict, origin, tap.map(|t| t.mark))
    }

    /// How much a decider's allow does beyond passing: an inspected policy (its flows are
    /// judged by content), one that logs, or a plain allow.
    fn strictness(&self, d: Decider) -> u8 {
        let r = match d {
            Decider::Failsafe(i) => &self.policy.failsafes[i],
            Decider::Policy(i) => &self.policy.rules[i],
            Decider::Default => return u8::from(self.policy.defaults.action == Action::Log),
        };
        if r.inspect.is_some() {
            2
        } else {
            u8::from(r.action == Action::Log)
        }
    }

    /// The rule that decides this zone's packets to a backend in `zones` on `proto`/`port`,
    /// and whether it allows: the first failsafe or policy whose peers and traffic cover
    /// it, else the default.
    fn first_match(&self, zones: &[String], proto: SvcProto, port: u16) -> (Decider, bool) {
        let own = self.zone.name.as_str();
        let probe = Traffic {
            protos: crate::rules::Protos {
                tcp: proto == SvcProto::Tcp,
                udp: proto == SvcProto::Udp,
                icmp: false,
            },
            ports: crate::rules::Ports(vec![crate::rules::PortRange { lo: port, hi: port }]),
            icmp: crate::rules::IcmpTypes(Vec::new()),
        };
        let covers = |r: &PolicyRule| {
            !r.is_expired(self.opts.now)
                && r.from.includes(own)
                && (r.to.iter().any(|z| z == ZONE_ANY) || zones.iter().any(|z| r.to.includes(z)))
                && r.traffic.iter().any(|t| t.covers(&probe))
        };
        if let Some(i) = self.policy.failsafes.iter().position(covers) {
            return (Decider::Failsafe(i), self.policy.failsafes[i].action != Action::Deny);
        }
        if let Some(i) = self.policy.rules.iter().position(covers) {
            return (Decider::Policy(i), self.policy.rules[i].action != Action::Deny);
        }
        (Decider::Default, self.policy.defaults.action != Action::Deny)
    }

    /// Where each virtual address port is decided for this zone's egress. The node's proxy
    /// picks a backend per connection, which nothing here can see: a port passes only if
    /// every backend's decider allows it (then the strictest of those deciders judges it,
    /// with its log and inspection), and is denied by the first denying decider otherwise.
    /// A port without backends is left to the rules as any address is.
    fn vip_picks(&self) -> Arc<VipPicks> {
        if self.m.vips.is_empty() {
            return Arc::default();
        }
        let key = (self.zone.name.clone(), self.opts.now);
        if let Some(p) = self.m.picks.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return p;
        }
        let mut picks = VipPicks::new();
        // Backends share zones and ports: each combination is walked once.
        let mut memo: HashMap<(&[String], SvcProto, u16), (Decider, bool)> = HashMap::new();
        for v in &self.m.vips {
            let decided: Vec<(Decider, bool)> = v
                .backends
                .iter()
                .map(|(zones, port)| {
                    *memo
                        .entry((zones.as_slice(), v.proto, *port))
                        .or_insert_with(|| self.first_match(zones, v.proto, *port))
                })
                .collect();
            let denying = decided.iter().filter(|d| !d.1).map(|d| d.0).min();
            // All allow: the one that does most (inspection, then logging) judges, so a
            // connection the proxy sends to an inspected backend is inspected.
            let allowing =
                || decided.iter().map(|d| d.0).min_by_key(|d| (std::cmp::Reverse(self.strictness(*d)), *d));
            let Some(decider) = denying.or_else(allowing) else { continue };
            for a in &v.addresses {
                let elem = SetElem::Tuple(vec![
                    KeyValue::Addr(*a),
                    KeyValue::Proto(v.proto.number()),
                    KeyValue::Port(v.port),
                ]);
                picks.entry((decider, Family::of(a))).or_default().insert(elem);
            }
        }
        let picks = Arc::new(picks);
        if let Ok(mut c) = self.m.picks.lock() {
            c.insert(key, picks.clone());
        }
        picks
    }

    /// The rules sending the virtual address ports `decider` decides to its verdict.
    fn vip_rules(
        &mut self,
        picks: &VipPicks,
        decider: Decider,
        verdict: &Verdict,
        origin: &RuleRef,
        mark: Option<u32>,
        out: &mut Vec<Rule>,
    ) {
        let (tag, what) = match decider {
            Decider::Failsafe(i) => (format!("f{i}"), format!("failsafe {}", self.policy.failsafes[i].id)),
            Decider::Policy(i) => (format!("p{i}"), format!("policy {}", self.policy.rules[i].id)),
            Decider::Default => ("d".to_string(), "the default".to_string()),
        };
        for family in [Family::V4, Family::V6] {
            let Some(elems) = picks.get(&(decider, family)) else { continue };
            // Named by the deciding zone too: a floor's table holds several zones' chains.
            let name = format!("vip_{}_{tag}_{}", set_stem(&self.zone.name), fam_digit(family));
            let key = if family == Family::V4 { VIP_KEY4 } else { VIP_KEY6 };
            self.declare_set(Set {
                elements: elems.iter().cloned().collect(),
                ..Set::new(
                    name.clone(),
                    SetKey::Fields(key),
                    format!("service addresses and ports {what} decides"),
                )
            });
            let mut x = rule(
                vec![
                    Match::NfProto(family),
                    Match::Lookup {
                        fields: vec![Field::Daddr(family), Field::L4Proto, Field::Dport],
                        set: name,
                        invert: false,
                    },
                ],
                verdict.clone(),
                Some(origin.clone()),
            );
            x.mark = mark;
            out.push(x);
            // The floor sees IPv4 datagrams unreassembled: later fragments carry no ports,
            // so an allowed VIP's later fragments pass by address (as for other allows).
            let allows = self.floor.as_ref().is_some_and(|(pass, _)| verdict == pass);
            if allows && family == Family::V4 {
                let addrs: BTreeSet<SetElem> = elems
                    .iter()
                    .filter_map(|e| match e {
                        SetElem::Tuple(v) => match v.first() {
                            Some(KeyValue::Addr(a)) => Some(SetElem::Addr(*a)),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
                let frag_set = format!("vip_{}_{tag}_a4", set_stem(&self.zone.name));
                self.declare_set(Set {
                    elements: addrs.into_iter().collect(),
                    ..Set::new(frag_set.clone(), SetKey::Ipv4, format!("service addresses {what} allows"))
                });
                out.push(rule(
                    vec![Match::AddrInSet { family, dir: Dir::Dst, set: frag_set }, Match::FragNonFirst],
                    verdict.clone(),
                    Some(origin.clone()),
                ));
            }
        }
    }

    /// Allow and log policies with `inspect` that apply to this container on either side.
    fn inspected(&self) -> Vec<Tap> {
        let zone = self.zone.name.as_str();
        let mut taps: Vec<Tap> = Vec::new();
        for (list, kind) in
            [(&self.policy.failsafes, RuleKind::Failsafe), (&self.policy.rules, RuleKind::Policy)]
        {
            for r in list.iter().filter(|r| !r.is_expired(self.opts.now)) {
                let Some(insp) = &r.inspect else { continue };
                let here = r.from.includes(zone) || r.to.includes(zone);
                if !here || r.action == Action::Deny {
                    continue;
                }
                let taken: Vec<u32> = taps.iter().map(|t| t.mark & mark::POLICY_BITS).collect();
                let fail_open = insp.fail_mode(&self.policy.defaults) == InspectFail::Open;
                let state = mark::State::Undecided { fail_open };
                taps.push(Tap {
                    mark: mark::with_state(inspect_mark(&r.id, &taken), state),
                    fail_open,
                    origin: RuleRef { kind, id: r.id.clone(), source: Some(r.pos.short()) },
                });
            }
        }
        taps
    }

    /// The verdict of an inspected policy: its packets go through `inspect_accept`, which
    /// queues one that carries payload and accepts the rest (logged first for `log`).
    fn inspected_accept(&mut self, action: Action, origin: &RuleRef) -> Verdict {
        let tail = |origin: &RuleRef| {
            vec![
                Rule {
                    verdict: Some(Verdict::Jump(CHAIN_INSPECT_QUEUE.into())),
                    origin: Some(origin.clone()),
                    ..Rule::default()
                },
                Rule { verdict: Some(Verdict::Accept), origin: Some(origin.clone()), ..Rule::default() },
            ]
        };
        match action {
            Action::Log => Verdict::Jump(self.action_chain(LogKind::Allow, origin, tail(origin))),
            Action::Allow | Action::Deny => Verdict::Jump(CHAIN_INSPECT_ACCEPT.into()),
        }
    }

    /// The inspection chains of a table with inspected policies (see `CHAIN_INSPECT_*`).
    fn inspect_chains(&mut self) {
        if self.taps.is_empty() {
            return;
        }
        // A packet goes to userspace only if it carries payload. nft cannot subtract header
        // lengths, so the common payload-less shapes (no options, timestamps, a SYN-ACK's
        // options) return here exactly: `ip length` equal to both headers means no payload
        // whatever the IP options. Rarer shapes are queued and passed by the daemon at once.
        let no_payload = builtin("inspect-no-payload");
        let mut q = Vec::new();
        for (family, ip_header) in [(Family::V4, 20u16), (Family::V6, 0)] {
            for doff in [5u8, 8, 10] {
                q.push(Rule {
                    matches: vec![
                        Match::TcpDoff(doff),
                        Match::IpLength(family, ip_header + 4 * u16::from(doff)),
                    ],
                    verdict: Some(Verdict::Return),
                    origin: no_payload.clone(),
                    ..Rule::default()
                });
            }
        }
        let tcp_udp = Match::L4Proto(vec![L4::Tcp, L4::Udp]);
        if self.taps.iter().any(|t| t.fail_open) {
            q.push(Rule {
                matches: vec![tcp_udp.clone(), Match::CtMarkPrefix { mark: mark::UNDECIDED_OPEN, bits: 16 }],
                verdict: Some(Verdict::Queue { num: self.opts.inspect_queue.wrapping_add(1), bypass: true }),
                origin: builtin("inspect-fail-open"),
                ..Rule::default()
            });
        }
        q.push(Rule {
            matches: vec![tcp_udp],
            verdict: Some(Verdict::Queue { num: self.opts.inspect_queue, bypass: false }),
            origin: builtin("inspect"),
            ..Rule::default()
        });
        self.chains.push(Chain { name: CHAIN_INSPECT_QUEUE.into(), base: None, rules: q });
        // A cut flow: resets pass (they only end it), anything else of it is answered with a
        // reset to its sender (TCP) or dropped.
        let cut = builtin("inspect-cut");
        let r = |matches: Vec<Match>, v: Verdict| Rule {
            matches,
            verdict: Some(v),
            origin: cut.clone(),
            ..Rule::default()
        };
        self.chains.push(Chain {
            name: CHAIN_INSPECT_CUT.into(),
            base: None,
            rules: vec![
                r(vec![Match::TcpRst], Verdict::Accept),
                r(vec![Match::L4Proto(vec![L4::Tcp])], Verdict::RejectTcpReset),
                r(vec![], Verdict::Drop),
            ],
        });
        let accept = builtin("inspect");
        self.chains.push(Chain {
            name: CHAIN_INSPECT_ACCEPT.into(),
            base: None,
            rules: vec![
                Rule {
                    verdict: Some(Verdict::Jump(CHAIN_INSPECT_QUEUE.into())),
                    origin: accept.clone(),
                    ..Rule::default()
                },
                Rule { verdict: Some(Verdict::Accept), origin: accept, ..Rule::default() },
            ],
        });
    }

    fn cap_origin(&self, what: &str) -> RuleRef {
        RuleRef {
            kind: RuleKind::Cap,
            id: format!("{}:{what}", self.zone.name),
            source: self.zone.pos.as_ref().map(|p| p.short()),
        }
    }

    /// Jump target for a cap hit: enforce rejects (TCP reset, else drop); audit logs and
    /// returns so the policies still decide.
    fn cap_chain(&mut self, what: &str, reject: bool) -> String {
        let origin = self.cap_origin(what);
        let t = |v: Verdict, m: Vec<Match>| Rule {
            matches: m,
            counter: false,
            mark: None,
            dynset: None,
            log: None,
            verdict: Some(v),
            origin: Some(origin.clone()),
        };
        match self.zone.mode {
            Mode::Audit => self.action_chain(LogKind::Audit, &origin, vec![t(Verdict::Return, vec![])]),
            Mode::Enforce if reject => self.action_chain(
                LogKind::Cap,
                &origin,
                vec![
                    t(Verdict::RejectTcpReset, vec![Match::L4Proto(vec![L4::Tcp])]),
                    t(Verdict::Drop, vec![]),
                ],
            ),
            Mode::Enforce => self.action_chain(LogKind::Cap, &origin, vec![t(Verdict::Drop, vec![])]),
        }
    }

    /// The forward hook: a container is an endpoint, so what is routed through its
    /// namespace (a nested namespace behind it, say) is dropped and logged, unless its zone
    /// says `forward = true`, in which case routed packets meet the zone's egress policy.
    fn forward_chain(&mut self) -> Chain {
        let base = BaseChain { hook: Hook::Forward, priority: 0, policy_drop: true };
        if self.zone.forward {
            let egress = self.base_chain(Side::Egress);
            return Chain { name: CHAIN_FORWARD.into(), base: Some(base), rules: egress.rules };
        }
        let origin = builtin("forward").expect("a builtin reference");
        let drop_chain = self.action_chain(
            LogKind::Deny,
            &origin,
            vec![Rule { verdict: Some(Verdict::Drop), origin: Some(origin.clone()), ..Rule::default() }],
        );
        Chain {
            name: CHAIN_FORWARD.into(),
            base: Some(base),
            rules: vec![rule(vec![], Verdict::Jump(drop_chain), Some(origin))],
        }
    }

    fn base_chain(&mut self, side: Side) -> Chain {
        let (_dir, name, hook) = match side {
            Side::Egress => (Dir::Dst, CHAIN_EGRESS, Hook::Output),
            Side::Ingress => (Dir::Src, CHAIN_INGRESS, Hook::Input),
        };
        let mut rules = Vec::new();
        let lo_dir = if side == Side::Egress { Dir::Dst } else { Dir::Src };
        rules.push(Rule {
            counter: false,
            ..rule(vec![Match::Loopback(lo_dir)], Verdict::Accept, builtin("loopback"))
        });

        // Operator blocks first: they must cut established flows too. A quarantine cuts
        // connections by who opened them (`quarantine_chain`): `quarantine_out` those the
        // container opens, `quarantine_in` those opened to it; both sets: everything.
        let block = RuleRef { kind: RuleKind::Block, id: QUARANTINE_RULE.into(), source: None };
        for (set, cut) in [(SET_QUARANTINE_OUT, Opener::Container), (SET_QUARANTINE_IN, Opener::Peer)] {
            let chain = self.quarantine_chain(side, cut);
            rules.push(rule(
                vec![Match::NfProtoInSet(set.into())],
                Verdict::Jump(chain),
                Some(block.clone()),
            ));
        }
        let blocked = RuleRef {
            kind: RuleKind::Block,
            id: if side == Side::Egress { "block-out" } else { "block-in" }.into(),
            source: None,
        };
        let drop_chain = self.action_chain(
            LogKind::Block,
            &blocked,
            vec![Rule { verdict: Some(Verdict::Drop), origin: Some(blocked.clone()), ..Rule::default() }],
        );
        let (a4, a6, s4, s6) = if side == Side::Egress {
            (SET_BLOCK_OUT4_ADDR, SET_BLOCK_OUT6_ADDR, SET_BLOCK_OUT4, SET_BLOCK_OUT6)
        } else {
            (SET_BLOCK_IN4_ADDR, SET_BLOCK_IN6_ADDR, SET_BLOCK_IN4, SET_BLOCK_IN6)
        };
        for (family, set) in [(Family::V4, a4), (Family::V6, a6)] {
            rules.push(rule(
                vec![Match::BlockAddrLookup { family, set: set.into() }],
                Verdict::Jump(drop_chain.clone()),
                Some(blocked.clone()),
            ));
        }
        for (family, set) in [(Family::V4, s4), (Family::V6, s6)] {
            rules.push(rule(
                vec![Match::BlockLookup { family, set: set.into() }],
                Verdict::Jump(drop_chain.clone()),
                Some(blocked.clone()),
            ));
        }

        let caps = &self.zone.caps;
        if side == Side::Egress {
            if let Some(bps) = caps.egress_bytes_per_sec {
                let target = self.cap_chain("egress_bytes_per_sec", false);
                let origin = self.cap_origin("egress_bytes_per_sec");
                rules.push(rule(
                    vec![Match::Limit { over: true, rate: bps, unit: RateUnit::Bytes, burst: bps }],
                    Verdict::Jump(target),
                    Some(origin),
                ));
            }
        }

        // Inspection, before the established shortcut that every later packet of a flow
        // takes: a cut flow's packets get resets; an undecided flow's payload packets wait on
        // the queue for the daemon's verdict. A decided flow (its mark PASSED) matches neither
        // and never leaves the kernel again.
        if !self.taps.is_empty() {
            rules.push(Rule {
                counter: false,
                ..rule(
                    vec![Match::CtMarkPrefix { mark: mark::CUT, bits: 16 }],
                    Verdict::Jump(CHAIN_INSPECT_CUT.into()),
                    builtin("inspect-cut"),
                )
            });
            rules.push(Rule {
                counter: false,
                ..rule(
                    vec![Match::CtMarkPrefix { mark: mark::UNDECIDED_OPEN, bits: 15 }],
                    Verdict::Jump(CHAIN_INSPECT_QUEUE.into()),
                    builtin("inspect"),
                )
            });
        }

        rules.push(Rule {
            counter: false,
            ..rule(
                vec![Match::CtState(vec![CtState::Established, CtState::Related])],
                Verdict::Accept,
                builtin("established"),
            )
        });
        rules.push(rule(vec![Match::CtState(vec![CtState::Invalid])], Verdict::Drop, builtin("invalid")));
        rules.push(rule(
            vec![Match::NfProto(Family::V6), Match::Icmpv6Nd],
            Verdict::Accept,
            builtin("ipv6-nd"),
        ));

        if side == Side::Egress {
            if let Some(n) = caps.max_conns {
                let target = self.cap_chain("max_conns", true);
                let origin = self.cap_origin("max_conns");
                rules.push(rule(
                    vec![Match::CtState(vec![CtState::New]), Match::CtCountOver(n)],
                    Verdict::Jump(target),
                    Some(origin),
                ));
            }
            if let Some(n) = caps.new_conns_per_sec {
                let target = self.cap_chain("new_conns_per_sec", true);
                let origin = self.cap_origin("new_conns_per_sec");
                rules.push(rule(
                    vec![
                        Match::CtState(vec![CtState::New]),
                        Match::Limit { over: true, rate: n.into(), unit: RateUnit::Packets, burst: n.into() },
                    ],
                    Verdict::Jump(target),
                    Some(origin),
                ));
            }
        }

        if self.all_zones.is_empty() {
            self.decisions(side, &mut rules);
        } else {
            // A shared namespace: every sharer's zone must allow.
            let own = self.zone;
            for z in self.all_zones.clone() {
                let name = format!(
                    "{}_{}",
                    if side == Side::Egress { "polout" } else { "polin" },
                    set_stem(&z.name)
                );
                self.zone = z;
                self.shared = true;
                let mut zr = Vec::new();
                self.decisions(side, &mut zr);
                self.shared = false;
                self.chains.push(Chain { name: name.clone(), base: None, rules: zr });
                rules.push(Rule { counter: false, ..rule(vec![], Verdict::Jump(name), None) });
            }
            self.zone = own;
            rules.push(Rule { counter: false, ..rule(vec![], Verdict::Accept, builtin("shared")) });
        }

        Chain { name: name.into(), base: Some(BaseChain { hook, priority: 0, policy_drop: true }), rules }
    }
}

/// Traffic entries of the same protocols without ICMP types merged into one (their ports
/// united), in the order they first appear: one nft rule for `https` and `http`.
fn merged(traffic: &[Traffic]) -> Vec<Traffic> {
    let mut out: Vec<Traffic> = Vec::new();
    for t in traffic {
        let typed = t.protos.icmp && !t.icmp.is_any();
        match out.iter_mut().find(|o| !typed && o.protos == t.protos && o.icmp.is_any()) {
            Some(o) if o.ports.is_any() || t.ports.is_any() => o.ports = crate::rules::Ports::default(),
            Some(o) => {
                let mut all = o.ports.0.clone();
                all.extend(t.ports.0.iter().copied());
                o.ports = crate::rules::Ports::new(all);
            }
            None => out.push(t.clone()),
        }
    }
    out
}

fn fam_digit(f: Family) -> char {
    match f {
        Family::V4 => '4',
        Family::V6 => '6',
    }
}
