//! The floor's table, compiled from the same policy as every container's own table. Pure.
//!
//! ```text
//! table bridge fw_floor {
//!   chain prerouting {            # frames a container's port emits
//!     tcp flags ! fin,syn,rst iif . ether saddr . ip saddr . ... @cache_out4 accept
//!     [iif != @ports iifname "veth*" drop]     # not programmed yet: nothing leaves
//!     iif != @ports accept                     # not a container's port
//!     iif . ether saddr != @port_mac drop      # anti-spoofing: its own MAC ...
//!     ether type arp jump arp_out              # ... ARP only for its own addresses ...
//!     ether type ip iif . ip saddr != @port_ip4 drop  # ... its own IPs
//!     ether type ip6 jump ip6_src
//!     ether type != { ip, ip6 } drop           # no other protocol (VLAN tags, LLC, ...)
//!     iif @quarantine_out jump quarantine_out  # responders only
//!     <operator blocks keyed by port>
//!     iif vmap @port_out                       # the port's zone chain
//!     drop
//!   }
//!   chain postrouting { ... }     # frames to a container: unprogrammed, quarantine, blocks,
//!                                 # then record what its ingress policy allows
//!   chain out_<zone> {            # egress: replies to what it was allowed to receive, ND,
//!     ... @flows4 accept          # then the zone's policy (jump pol_<zone>), else drop
//!     jump pol_<zone>
//!     add @cache_out4 { ... }     # what is accepted here is cached (mid-stream TCP)
//!     accept
//!   }
//! }
//! ```
//!
//! The verdict cache. Judging every packet through these chains costs about a sixth of
//! TCP throughput on this machine (`bench/throughput.sh`); the cache brings that to a few
//! per cent. A TCP segment without SYN, FIN or RST whose tuple (with the port, and on the
//! way out its MAC and source address) the chains accepted less than `CACHE_MS` ago passes
//! on one lookup, first in each base chain. It can only be an old verdict of the current
//! table: every write to the table (a block, a quarantine, a port, an address or zone
//! member, a policy) empties the caches in the same batch, and the enforcer empties them
//! once more after the commit (a packet the old rules were judging as it landed may have
//! cached after the flush). Entries are added (`add`), never refreshed, so each cached flow
//! meets the full chains every `CACHE_MS`, which also refreshes its reply tuple (whose
//! timeouts are all far longer than the cache's). SYN, FIN and RST always take the full
//! path: they open, record and shorten what the cache relies on. UDP, ICMP and the rest
//! are never cached.
//!
//! No conntrack: this kernel has none for bridge tables (`CONFIG_NF_CONNTRACK_BRIDGE` is off
//! and `ct` in a bridge table fails with EPROTO). The egress policy is therefore judged on
//! every packet, and what stands in for "established" is a dynamic set written from the
//! packet path: a frame *to* a container that its zone's ingress policy allows records the
//! reverse 5-tuple (`update @flows4`), and frames *from* the container on that tuple pass.
//! Both directions refresh it; FIN or RST shortens it. So the floor admits a packet only if
//! the namespace's chain would too: a new flow its egress policy allows, or a reply to one
//! its ingress policy allowed.
//!
//! Quarantine by direction, without conntrack. An egress quarantine cuts the connections a
//! container opens and keeps the ones peers open to it; the namespace's table tells them
//! apart by conntrack direction, the floor by who sent a connection's opening SYN (a SYN
//! without ACK, FIN or RST). `conns4/6` record every peer's opening SYN that the port's
//! ingress policy let through (keyed port . own . peer . proto . own port . peer port), and
//! `opened4/6` every opening SYN of the port's own that its egress policy let through.
//! Under an egress quarantine a port's frames pass only on a `conns` tuple (TCP), on a
//! `flows` tuple (UDP answering a datagram its ingress policy let in), as an ICMP error or
//! echo reply to a peer that reached it (`peers`), or as neighbour discovery; under an
//! ingress quarantine frames to it pass only on an `opened` tuple (its datagrams are
//! recorded there too while it is quarantined), or as ARP and neighbour discovery. Both
//! sets: nothing but responders.
//!
//! Why this holds against a container with raw sockets, which writes any frame it likes
//! past its own table: every tuple that lets its frames out under an egress quarantine was
//! written by a frame *to* it, which it cannot send (anti-spoofing keeps its frames to its
//! own MAC and addresses, and a frame from its port never enters `conns`). A TCP tuple
//! needs a peer's opening SYN, so a reply to a connection it opened (a SYN-ACK, an ACK)
//! never makes one, and neither does a mid-stream segment of a connection whose state was
//! lost: the stateful table's weak spot (conntrack picks such segments up as new
//! connections), which the floor does not share. What it cannot tell without state: a UDP
//! datagram (or ICMP error) answering one the container sent before the quarantine, when
//! its ingress policy also allows the answer's tuple, records a `flows` tuple the container
//! may keep using while the peer keeps sending. That needs the peer's cooperation on a tuple
//! its policy allows both ways, and `both` closes it. A TCP connection a peer opened more
//! than `tcp_idle_ms` before the quarantine lost its record and is cut (fail closed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use fw_proto::{Mode, RuleKind, RuleRef};

use super::{FloorOptions, Port};
use crate::blocks::BlockList;
use crate::compile::{zone_policy, CompileOptions, Membership, Side};
use crate::rules::validate::set_stem;
use crate::rules::{Policy, Zone};
use crate::ruleset::ir::*;

pub const FLOOR_TABLE: &str = "fw_floor";

pub const SET_PORTS: &str = "ports";
pub const MAP_PORT_OUT: &str = "port_out";
pub const MAP_PORT_IN: &str = "port_in";
pub const SET_PORT_MAC: &str = "port_mac";
pub const SET_PORT_IP4: &str = "port_ip4";
pub const SET_PORT_IP6: &str = "port_ip6";
/// `port_ip6` again, typed for nft as the raw target field of a neighbour advertisement.
pub const SET_PORT_ND6: &str = "port_nd6";
pub const SET_QUARANTINE_OUT: &str = "quarantine_out";
pub const SET_QUARANTINE_IN: &str = "quarantine_in";
pub const SET_FLOWS4: &str = "flows4";
pub const SET_FLOWS6: &str = "flows6";
pub const SET_PEERS4: &str = "peers4";
pub const SET_PEERS6: &str = "peers6";
/// TCP connections peers opened to a port (their SYN passed its ingress policy), and the
/// ones the port opened (its SYN passed its egress policy; under an ingress quarantine its
/// UDP exchanges too): what tells a quarantine's cut connections from the ones it keeps.
pub const SET_CONNS4: &str = "conns4";
pub const SET_CONNS6: &str = "conns6";
pub const SET_OPENED4: &str = "opened4";
pub const SET_OPENED6: &str = "opened6";
/// The verdict caches: TCP segments (no SYN, FIN or RST) of a tuple the full chains
/// accepted less than `CACHE_MS` ago, keyed as they were judged (the port, its MAC and
/// address on the way out): what keeps the floor's cost per packet to one lookup.
pub const SET_CACHE_OUT4: &str = "cache_out4";
pub const SET_CACHE_OUT6: &str = "cache_out6";
pub const SET_CACHE_IN4: &str = "cache_in4";
pub const SET_CACHE_IN6: &str = "cache_in6";
/// How long a cached verdict lives, however busy its flow: the full chains judge each
/// cached flow again this often (and refresh its reply tuple, whose timeouts are all far
/// longer, so a cached verdict never outlives the record it was judged by).
pub const CACHE_MS: u64 = 10_000;
/// Where a frame to a port goes when its zone's ingress policy does not allow it: passed
/// on (the namespace's chain drops it, and says why), and cached like any other pass.
const IN_PASS: &str = "in_pass";
pub const SET_RESPONDERS4: &str = "responders4";
pub const SET_RESPONDERS6: &str = "responders6";

/// The dynamic sets: filled from the packet path, carried over when the table is replaced.
pub const DYNAMIC_SETS: [&str; 6] = [SET_FLOWS4, SET_FLOWS6, SET_PEERS4, SET_PEERS6, SET_CONNS4, SET_CONNS6];
/// Dynamic sets of connections the ports opened: carried over while the egress policy
/// still allows them.
pub const DYNAMIC_OUT_SETS: [&str; 2] = [SET_OPENED4, SET_OPENED6];

const K_PORT: &[KeyKind] = &[KeyKind::IfIndex];
const K_PORT_MAC: &[KeyKind] = &[KeyKind::IfIndex, KeyKind::EtherAddr];
const K_PORT_IP4: &[KeyKind] = &[KeyKind::IfIndex, KeyKind::Ipv4];
const K_PORT_IP6: &[KeyKind] = &[KeyKind::IfIndex, KeyKind::Ipv6];
const K_FLOW4: &[KeyKind] = &[
    KeyKind::IfIndex,
    KeyKind::Ipv4,
    KeyKind::Ipv4,
    KeyKind::InetProto,
    KeyKind::InetService,
    KeyKind::InetService,
];
const K_FLOW6: &[KeyKind] = &[
    KeyKind::IfIndex,
    KeyKind::Ipv6,
    KeyKind::Ipv6,
    KeyKind::InetProto,
    KeyKind::InetService,
    KeyKind::InetService,
];
const K_CACHE_OUT4: &[KeyKind] = &[
    KeyKind::IfIndex,
    KeyKind::EtherAddr,
    KeyKind::Ipv4,
    KeyKind::Ipv4,
    KeyKind::InetService,
    KeyKind::InetService,
];
const K_CACHE_OUT6: &[KeyKind] = &[
    KeyKind::IfIndex,
    KeyKind::EtherAddr,
    KeyKind::Ipv6,
    KeyKind::Ipv6,
    KeyKind::InetService,
    KeyKind::InetService,
];
const K_CACHE_IN4: &[KeyKind] =
    &[KeyKind::IfIndex, KeyKind::Ipv4, KeyKind::Ipv4, KeyKind::InetService, KeyKind::InetService];
const K_CACHE_IN6: &[KeyKind] =
    &[KeyKind::IfIndex, KeyKind::Ipv6, KeyKind::Ipv6, KeyKind::InetService, KeyKind::InetService];
const K_PEER4: &[KeyKind] = &[KeyKind::IfIndex, KeyKind::Ipv4, KeyKind::Ipv4, KeyKind::InetProto];
const K_PEER6: &[KeyKind] = &[KeyKind::IfIndex, KeyKind::Ipv6, KeyKind::Ipv6, KeyKind::InetProto];

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

fn floor_ref(id: &str) -> Option<RuleRef> {
    Some(RuleRef { kind: RuleKind::Floor, id: id.into(), source: None })
}

fn builtin(id: &str) -> Option<RuleRef> {
    Some(RuleRef { kind: RuleKind::Builtin, id: id.into(), source: None })
}

fn r(matches: Vec<Match>, verdict: Verdict, origin: Option<RuleRef>) -> Rule {
    Rule { matches, counter: false, verdict: Some(verdict), origin, ..Rule::default() }
}

/// A counted drop: what the floor stops is worth counting (attacks show up here).
fn drop(matches: Vec<Match>, origin: Option<RuleRef>) -> Rule {
    Rule { counter: true, ..r(matches, Verdict::Drop, origin) }
}

fn ether(types: &[u16]) -> Match {
    Match::EtherType { types: types.to_vec(), invert: false }
}

fn ip(f: Family) -> Match {
    ether(&[if f == Family::V4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 }])
}

fn lookup(fields: &[Field], set: &str, invert: bool) -> Match {
    Match::Lookup { fields: fields.to_vec(), set: set.into(), invert }
}

/// The zones whose policies a port's traffic must satisfy: one per container behind it
/// (containers sharing a namespace share the port), deduplicated, in the policy's order.
fn port_zones<'p>(policy: &'p Policy, m: &Membership<'p>, port: &Port) -> Vec<&'p Zone> {
    let names: BTreeSet<&str> =
        port.containers.iter().filter_map(|c| m.zone_of.get(c)).map(|z| z.name.as_str()).collect();
    policy.zones.iter().filter(|z| names.contains(z.name.as_str())).collect()
}

/// The chain-name stem of a combination of zones.
fn combo_stem(zones: &[&Zone]) -> String {
    zones.iter().map(|z| set_stem(&z.name)).collect::<Vec<_>>().join("__")
}

/// The floor chain that judges what a port of these containers emits (`explain` starts
/// there).
pub fn egress_chain(policy: &Policy, m: &Membership<'_>, containers: &[String]) -> String {
    let port = Port {
        containers: containers.to_vec(),
        ifindex: 0,
        ifname: String::new(),
        mac: [0; 6],
        addrs: vec![],
    };
    format!("out_{}", combo_stem(&port_zones(policy, m, &port)))
}

/// The floor for the ports in one namespace (the host's, or a hub's holding the bridge).
pub fn compile_floor(
    policy: &Policy,
    m: &Membership<'_>,
    ports: &[Port],
    blocks: &BlockList,
    copts: &CompileOptions,
    opts: &FloorOptions,
) -> Ruleset {
    let mut b = FloorBuilder { sets: BTreeMap::new(), chains: Vec::new(), done: BTreeSet::new() };
    b.static_sets(ports, opts);
    b.block_sets(&|c| m.zone_of.get(c).map(|z| z.name.as_str()), ports, blocks);

    let mut port_out = BTreeMap::new();
    let mut port_in = BTreeMap::new();
    for port in ports {
        let zones = port_zones(policy, m, port);
        if zones.is_empty() {
            continue; // no zone: the base chain's final drop applies
        }
        let stem = combo_stem(&zones);
        let key = SetElem::Tuple(vec![KeyValue::IfIndex(port.ifindex)]);
        port_out.insert(key.clone(), format!("out_{stem}"));
        port_in.insert(key, format!("in_{stem}"));
        b.zone_chains(policy, m, &zones, &stem, copts, opts);
    }
    for (name, map, comment) in [
        (MAP_PORT_OUT, port_out, "port -> its zone's egress"),
        (MAP_PORT_IN, port_in, "port -> its zone's ingress"),
    ] {
        // A map's keys are its elements (diffed like any set's); the targets ride along.
        let elements = map.keys().cloned().collect();
        b.set(Set { elements, map: Some(map), ..Set::new(name, SetKey::Fields(K_PORT), comment) });
    }
    b.helper_chains(opts);
    let pre = b.prerouting(opts);
    let post = b.postrouting(opts);
    b.chains.push(pre);
    b.chains.push(post);
    Ruleset {
        container: "floor".into(),
        zone: String::new(),
        mode: Mode::Enforce,
        family: TableFamily::Bridge,
        table: FLOOR_TABLE.into(),
        sets: b.sets.into_values().collect(),
        chains: b.chains,
    }
}

/// The sets operator blocks fill (quarantines and block ranges), exactly as
/// `compile_floor` makes them, without compiling anything else: what placing a block
/// changes, written before the rest is compiled (a cut must not wait for that).
pub fn compile_block_sets<'z>(
    zone_of: &dyn Fn(&str) -> Option<&'z str>,
    ports: &[Port],
    blocks: &BlockList,
) -> Vec<Set> {
    let mut b = FloorBuilder { sets: BTreeMap::new(), chains: Vec::new(), done: BTreeSet::new() };
    b.block_sets(zone_of, ports, blocks);
    b.sets.into_values().collect()
}

struct FloorBuilder {
    /// By name: sets are emitted in name order, so the table is deterministic.
    sets: BTreeMap<String, Set>,
    chains: Vec<Chain>,
    /// Zone and combination chains already built.
    done: BTreeSet<String>,
}

impl FloorBuilder {
    fn set(&mut self, s: Set) {
        self.sets.entry(s.name.clone()).or_insert(s);
    }

    fn static_sets(&mut self, ports: &[Port], opts: &FloorOptions) {
        let mut admitted = Vec::new();
        let mut macs = Vec::new();
        let mut ip4 = Vec::new();
        let mut ip6 = Vec::new();
        for p in ports {
            let port = KeyValue::IfIndex(p.ifindex);
            admitted.push(SetElem::Tuple(vec![port]));
            macs.push(SetElem::Tuple(vec![port, KeyValue::Mac(p.mac)]));
            for a in &p.addrs {
                let e = SetElem::Tuple(vec![port, KeyValue::Addr(*a)]);
                if a.is_ipv4() {
                    ip4.push(e);
                } else {
                    ip6.push(e);
                }
            }
        }
        let with = |name: &str, key: &'static [KeyKind], comment: &str, mut elements: Vec<SetElem>| {
            elements.sort();
            elements.dedup();
            Set { elements, ..Set::new(name, SetKey::Fields(key), comment) }
        };
        self.set(with(SET_PORTS, K_PORT, "container ports fw programmed", admitted));
        self.set(with(SET_PORT_MAC, K_PORT_MAC, "port . the only source MAC it may send", macs));
        self.set(with(SET_PORT_IP4, K_PORT_IP4, "port . its own IPv4 addresses", ip4));
        self.set(with(
            SET_PORT_IP6,
            K_PORT_IP6,
            "port . its own IPv6 addresses (link-local too)",
            ip6.clone(),
        ));
        self.set(Set {
            typeof_text: Some("iif . @th,64,128"),
            ..with(SET_PORT_ND6, K_PORT_IP6, "port . the addresses it may advertise", ip6)
        });
        let dynamic =
            Some(Dynamic { size: opts.flow_table_size, timeout_ms: opts.tcp_idle_ms, cache: false });
        for (name, key, comment) in [
            (SET_FLOWS4, K_FLOW4, "replies: port . own . peer . proto . own port . peer port"),
            (SET_FLOWS6, K_FLOW6, "replies: port . own . peer . proto . own port . peer port"),
            (SET_PEERS4, K_PEER4, "replies without ports: port . own . peer . proto"),
            (SET_PEERS6, K_PEER6, "replies without ports: port . own . peer . proto"),
            (SET_CONNS4, K_FLOW4, "tcp opened to it: port . own . peer . proto . own port . peer port"),
            (SET_CONNS6, K_FLOW6, "tcp opened to it: port . own . peer . proto . own port . peer port"),
            (SET_OPENED4, K_FLOW4, "opened by it: port . own . peer . proto . own port . peer port"),
            (SET_OPENED6, K_FLOW6, "opened by it: port . own . peer . proto . own port . peer port"),
        ] {
            self.set(Set { dynamic, ..Set::new(name, SetKey::Fields(key), comment) });
        }
        let cache = Some(Dynamic { size: opts.flow_table_size, timeout_ms: CACHE_MS, cache: true });
        for (name, key, comment) in [
            (
                SET_CACHE_OUT4,
                K_CACHE_OUT4,
                "accepted a moment ago: port . mac . own . peer . own port . peer port",
            ),
            (
                SET_CACHE_OUT6,
                K_CACHE_OUT6,
                "accepted a moment ago: port . mac . own . peer . own port . peer port",
            ),
            (SET_CACHE_IN4, K_CACHE_IN4, "accepted a moment ago: port . peer . own . peer port . own port"),
            (SET_CACHE_IN6, K_CACHE_IN6, "accepted a moment ago: port . peer . own . peer port . own port"),
        ] {
            self.set(Set { dynamic: cache, ..Set::new(name, SetKey::Fields(key), comment) });
        }
        let (r4, r6): (Vec<&ipnet::IpNet>, Vec<&ipnet::IpNet>) =
            opts.responders.iter().partition(|n| n.addr().is_ipv4());
        for (name, key, nets) in [(SET_RESPONDERS4, SetKey::Ipv4, r4), (SET_RESPONDERS6, SetKey::Ipv6, r6)] {
            self.set(Set {
                interval: true,
                elements: nets.into_iter().map(|n| SetElem::Net(*n)).collect(),
                ..Set::new(name, key, "responders a quarantined container may still reach")
            });
        }
    }

    /// Operator blocks, keyed by port: the same ranges the namespace's own sets hold.
    fn block_sets<'z>(
        &mut self,
        zone_of: &dyn Fn(&str) -> Option<&'z str>,
        ports: &[Port],
        blocks: &BlockList,
    ) {
        let mut q_out = Vec::new();
        let mut q_in = Vec::new();
        let mut q_exp: BTreeMap<SetElem, i64> = BTreeMap::new();
        let mut forever: BTreeSet<SetElem> = BTreeSet::new();
        let mut ranges: BTreeMap<&'static str, (Vec<SetElem>, BTreeMap<SetElem, i64>)> = BTreeMap::new();
        for p in ports {
            let port = KeyValue::IfIndex(p.ifindex);
            for c in &p.containers {
                let zone = zone_of(c).unwrap_or("");
                let cb = blocks.for_container(c, zone);
                let qelem = SetElem::Tuple(vec![port]);
                for (list, q) in [(&mut q_out, &cb.quarantine_out), (&mut q_in, &cb.quarantine_in)] {
                    if q.is_empty() {
                        continue;
                    }
                    list.push(qelem.clone());
                    // A port is cut as long as the longest-lasting quarantine of its
                    // containers (none = until lifted).
                    let until: Option<i64> = q.values().try_fold(i64::MIN, |acc, e| e.map(|ms| acc.max(ms)));
                    match (until, q_exp.get(&qelem)) {
                        (Some(ms), Some(&prev)) if prev >= ms => {}
                        (Some(ms), _) if !forever.contains(&qelem) => {
                            q_exp.insert(qelem.clone(), ms);
                        }
                        _ => {
                            forever.insert(qelem.clone());
                            q_exp.remove(&qelem);
                        }
                    }
                }
                for (dir, map) in [("out", &cb.egress), ("in", &cb.ingress)] {
                    for (range, exp) in map {
                        // One destination host, whatever the protocol: a hash element,
                        // which the kernel commits in a fraction of a range element's time
                        // (the common incident cut, so it lands sooner).
                        if let Some(host) = host_destination(range) {
                            let name = block_host_set(dir, range.family());
                            let e = SetElem::Tuple(vec![port, KeyValue::Addr(host)]);
                            let entry = ranges.entry(name).or_default();
                            if let Some(ms) = exp {
                                entry.1.insert(e.clone(), *ms);
                            }
                            entry.0.push(e);
                            continue;
                        }
                        let name = block_set(dir, range.family(), range.has_ports());
                        let mut parts = vec![
                            (port, port),
                            (KeyValue::Addr(range.src.0), KeyValue::Addr(range.src.1)),
                            (KeyValue::Addr(range.dst.0), KeyValue::Addr(range.dst.1)),
                            (KeyValue::Proto(range.proto.0), KeyValue::Proto(range.proto.1)),
                        ];
                        if range.has_ports() {
                            parts.push((KeyValue::Port(range.sport.0), KeyValue::Port(range.sport.1)));
                            parts.push((KeyValue::Port(range.dport.0), KeyValue::Port(range.dport.1)));
                        }
                        let e = SetElem::TupleRange(parts);
                        let entry = ranges.entry(name).or_default();
                        if let Some(ms) = exp {
                            entry.1.insert(e.clone(), *ms);
                        }
                        entry.0.push(e);
                    }
                }
            }
        }
        for (name, mut elements, comment) in [
            (SET_QUARANTINE_OUT, q_out, "quarantined ports: connections they open are cut"),
            (SET_QUARANTINE_IN, q_in, "quarantined ports: connections opened to them are cut"),
        ] {
            elements.sort();
            elements.dedup();
            self.set(Set {
                timeout: true,
                expires: elements.iter().filter_map(|e| Some((e.clone(), *q_exp.get(e)?))).collect(),
                elements,
                ..Set::new(name, SetKey::Fields(K_PORT), comment)
            });
        }
        for dir in ["out", "in"] {
            for family in [Family::V4, Family::V6] {
                let v4 = family == Family::V4;
                // (set, key, ranges?, what it holds)
                let sets: [(&'static str, &'static [KeyKind], bool, &str); 3] = [
                    (block_set(dir, family, false), if v4 { K_PEER4 } else { K_PEER6 }, true, ""),
                    (block_set(dir, family, true), if v4 { K_FLOW4 } else { K_FLOW6 }, true, ""),
                    (
                        block_host_set(dir, family),
                        if v4 { K_PORT_IP4 } else { K_PORT_IP6 },
                        false,
                        " of one destination host",
                    ),
                ];
                for (name, key, interval, what) in sets {
                    let (mut elements, expires) = ranges.remove(name).unwrap_or_default();
                    elements.sort();
                    elements.dedup();
                    self.set(Set {
                        interval,
                        timeout: true,
                        elements,
                        expires,
                        ..Set::new(
                            name,
                            SetKey::Fields(key),
                            format!("operator blocks ({dir}){what}, keyed by port"),
                        )
                    });
                }
            }
        }
    }

    /// `out_<combo>` / `in_<combo>` for the zones behind one port, and each zone's policy
    /// chains (`pol_<zone>`, `polin_<zone>`) they jump through.
    fn zone_chains(
        &mut self,
        policy: &Policy,
        m: &Membership<'_>,
        zones: &[&Zone],
        stem: &str,
        copts: &CompileOptions,
        opts: &FloorOptions,
    ) {
        for z in zones {
            let zs = set_stem(&z.name);
            for (side, name, pass, stop) in [
                // Egress: an allow returns to the next zone's check; a deny drops.
                (Side::Egress, format!("pol_{zs}"), Verdict::Return, Verdict::Drop),
                // Ingress: an allow returns (and gets recorded); a deny passes unrecorded:
                // the namespace's own chain drops it and says which rule did (`in_pass`
                // caches that pass: the replies to a container's own connections come
                // this way, one per segment it receives).
                (Side::Ingress, format!("polin_{zs}"), Verdict::Return, Verdict::Jump(IN_PASS.into())),
            ] {
                if !self.done.insert(name.clone()) {
                    continue;
                }
                let zp = zone_policy(policy, m, z, side, copts, pass, stop);
                for s in zp.sets {
                    self.set(s);
                }
                let rules = zp
                    .rules
                    .into_iter()
                    .map(|mut rule| {
                        rule.counter = rule.verdict == Some(Verdict::Drop);
                        rule
                    })
                    .collect();
                self.chains.push(Chain { name, base: None, rules });
            }
        }
        let out = format!("out_{stem}");
        if self.done.insert(out.clone()) {
            let mut rules = reply_rules(opts);
            rules.extend(
                zones.iter().map(|z| r(vec![], Verdict::Jump(format!("pol_{}", set_stem(&z.name))), None)),
            );
            rules.extend(cache_fill(Side::Egress));
            rules.extend(opening_rules(opts, Side::Egress));
            rules.push(r(vec![], Verdict::Accept, floor_ref("allowed")));
            self.chains.push(Chain { name: out, base: None, rules });
        }
        let inn = format!("in_{stem}");
        if self.done.insert(inn.clone()) {
            let mut rules: Vec<Rule> = zones
                .iter()
                .map(|z| r(vec![], Verdict::Jump(format!("polin_{}", set_stem(&z.name))), None))
                .collect();
            rules.extend(record_rules(opts));
            self.chains.push(Chain { name: inn, base: None, rules });
        }
    }

    fn helper_chains(&mut self, opts: &FloorOptions) {
        let mut pass = cache_fill(Side::Ingress);
        pass.push(r(vec![], Verdict::Accept, None));
        self.chains.push(Chain { name: IN_PASS.into(), base: None, rules: pass });
        let spoof = floor_ref("spoof");
        let responders = !opts.responders.is_empty();
        // ARP only for its own addresses, from its own MAC; none while quarantined (unless
        // responders must stay reachable).
        let mut arp = vec![
            drop(vec![lookup(&[Field::Iif, Field::ArpSha], SET_PORT_MAC, true)], spoof.clone()),
            drop(vec![lookup(&[Field::Iif, Field::ArpSpa], SET_PORT_IP4, true)], spoof.clone()),
        ];
        if !responders {
            arp.push(drop(both_ways(Field::Iif), block_ref()));
        }
        arp.push(r(vec![], Verdict::Accept, floor_ref("arp")));
        self.chains.push(Chain { name: "arp_out".into(), base: None, rules: arp });
        // IPv6: its own addresses and link-local ones; `::` only for ICMPv6 (DAD, MLD);
        // a neighbour advertisement only for its own addresses.
        let v6 = vec![
            drop(
                vec![
                    Match::IcmpType { family: Family::V6, types: vec![136] },
                    lookup(&[Field::Iif, Field::NdTarget], SET_PORT_ND6, true),
                ],
                spoof.clone(),
            ),
            r(
                vec![lookup(&[Field::Iif, Field::Saddr(Family::V6)], SET_PORT_IP6, false)],
                Verdict::Return,
                None,
            ),
            r(vec![Match::Ip6SaddrUnspecified, Match::L4Proto(vec![L4::Icmpv6])], Verdict::Return, None),
            drop(vec![], spoof.clone()),
        ];
        self.chains.push(Chain { name: "ip6_src".into(), base: None, rules: v6 });
        for (name, dir) in [("quarantined_out", Dir::Dst), ("quarantined_in", Dir::Src)] {
            let mut rules = Vec::new();
            if responders {
                if dir == Dir::Src {
                    rules.push(r(vec![ether(&[ETHERTYPE_ARP])], Verdict::Accept, floor_ref("responders")));
                }
                for (f, set) in [(Family::V4, SET_RESPONDERS4), (Family::V6, SET_RESPONDERS6)] {
                    rules.push(r(
                        vec![Match::AddrInSet { family: f, dir, set: set.into() }],
                        Verdict::Accept,
                        floor_ref("responders"),
                    ));
                }
            }
            rules.extend(if dir == Dir::Dst {
                quarantined_out_rules(opts)
            } else {
                quarantined_in_rules(opts)
            });
            self.chains.push(Chain { name: name.into(), base: None, rules });
        }
    }

    /// Frames a container emits.
    fn prerouting(&mut self, opts: &FloorOptions) -> Chain {
        let mut rules = cache_hits(Side::Egress);
        for prefix in &opts.guard_prefixes {
            rules.push(drop(
                vec![
                    lookup(&[Field::Iif], SET_PORTS, true),
                    Match::IfNamePrefix { dir: Dir::Src, prefix: prefix.clone() },
                ],
                floor_ref("unadmitted"),
            ));
        }
        let spoof = floor_ref("spoof");
        rules.push(r(vec![lookup(&[Field::Iif], SET_PORTS, true)], Verdict::Accept, floor_ref("other-port")));
        rules.push(drop(vec![lookup(&[Field::Iif, Field::EtherSaddr], SET_PORT_MAC, true)], spoof.clone()));
        rules.push(r(vec![ether(&[ETHERTYPE_ARP])], Verdict::Jump("arp_out".into()), None));
        rules.push(drop(
            vec![ip(Family::V4), lookup(&[Field::Iif, Field::Saddr(Family::V4)], SET_PORT_IP4, true)],
            spoof.clone(),
        ));
        rules.push(r(vec![ip(Family::V6)], Verdict::Jump("ip6_src".into()), None));
        rules.push(drop(
            vec![Match::EtherType { types: vec![ETHERTYPE_IPV4, ETHERTYPE_IPV6], invert: true }],
            floor_ref("ethertype"),
        ));
        rules.push(r(
            vec![lookup(&[Field::Iif], SET_QUARANTINE_OUT, false)],
            Verdict::Jump("quarantined_out".into()),
            block_ref(),
        ));
        rules.extend(record_quarantined_udp(opts));
        rules.extend(block_rules("out", Field::Iif));
        rules.push(r(vec![], Verdict::Vmap { field: Field::Iif, map: MAP_PORT_OUT.into() }, None));
        rules.push(drop(vec![], floor_ref("no-zone")));
        Chain {
            name: "prerouting".into(),
            base: Some(BaseChain { hook: Hook::Prerouting, priority: -200, policy_drop: false }),
            rules,
        }
    }

    /// Frames to a container.
    fn postrouting(&mut self, opts: &FloorOptions) -> Chain {
        let mut rules = cache_hits(Side::Ingress);
        for prefix in &opts.guard_prefixes {
            rules.push(drop(
                vec![
                    lookup(&[Field::Oif], SET_PORTS, true),
                    Match::IfNamePrefix { dir: Dir::Dst, prefix: prefix.clone() },
                ],
                floor_ref("unadmitted"),
            ));
        }
        rules.push(r(vec![lookup(&[Field::Oif], SET_PORTS, true)], Verdict::Accept, floor_ref("other-port")));
        rules.push(r(
            vec![lookup(&[Field::Oif], SET_QUARANTINE_IN, false)],
            Verdict::Jump("quarantined_in".into()),
            block_ref(),
        ));
        rules.extend(block_rules("in", Field::Oif));
        rules.push(r(vec![], Verdict::Vmap { field: Field::Oif, map: MAP_PORT_IN.into() }, None));
        rules.push(r(vec![], Verdict::Accept, None));
        Chain {
            name: "postrouting".into(),
            base: Some(BaseChain { hook: Hook::Postrouting, priority: -200, policy_drop: false }),
            rules,
        }
    }
}

/// A TCP segment in the middle of a connection: no SYN, FIN or RST. Only these are cached;
/// the rest always meets the full chains (what records and shortens reply tuples).
fn mid_stream() -> Match {
    Match::TcpFlags { mask: TCP_FIN | TCP_SYN | TCP_RST, value: 0, invert: false }
}

/// The cache key of a frame from a port (`Egress`, with the source MAC: a frame another MAC
/// sends never hits a verdict judged for the port's own) or to it (`Ingress`).
fn cache_key(f: Family, side: Side) -> (Vec<Field>, &'static str) {
    match (side, f) {
        (Side::Egress, _) => (
            vec![Field::Iif, Field::EtherSaddr, Field::Saddr(f), Field::Daddr(f), Field::Sport, Field::Dport],
            if f == Family::V4 { SET_CACHE_OUT4 } else { SET_CACHE_OUT6 },
        ),
        (Side::Ingress, _) => (
            vec![Field::Oif, Field::Saddr(f), Field::Daddr(f), Field::Sport, Field::Dport],
            if f == Family::V4 { SET_CACHE_IN4 } else { SET_CACHE_IN6 },
        ),
    }
}

/// First in each base chain: a segment whose tuple the full chains accepted a moment ago
/// passes at once. Sound because every write to the table empties the caches in its own
/// batch (and once more right after, see `enforcer`): a block, a quarantine, a policy or
/// membership change, a port leaving, all reach the packet before any cached verdict.
fn cache_hits(side: Side) -> Vec<Rule> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|f| {
            let (key, set) = cache_key(f, side);
            r(vec![ip(f), mid_stream(), lookup(&key, set, false)], Verdict::Accept, floor_ref("cache"))
        })
        .collect()
}

/// Caches what the full chains are about to accept (no verdict: the chain goes on to its own).
fn cache_fill_rule(f: Family, side: Side) -> Rule {
    let (fields, set) = cache_key(f, side);
    Rule {
        matches: vec![ip(f), mid_stream()],
        dynset: Some(DynSet { fields, set: set.into(), timeout_ms: CACHE_MS, op: DynOp::Add }),
        origin: floor_ref("cache"),
        ..Rule::default()
    }
}

fn cache_fill(side: Side) -> Vec<Rule> {
    [Family::V4, Family::V6].into_iter().map(|f| cache_fill_rule(f, side)).collect()
}

fn block_ref() -> Option<RuleRef> {
    Some(RuleRef { kind: RuleKind::Block, id: "floor".into(), source: None })
}

pub fn block_set(dir: &str, f: Family, ports: bool) -> &'static str {
    match (dir, f, ports) {
        ("out", Family::V4, false) => "block_out4a",
        ("out", Family::V6, false) => "block_out6a",
        ("out", Family::V4, true) => "block_out4",
        ("out", Family::V6, true) => "block_out6",
        (_, Family::V4, false) => "block_in4a",
        (_, Family::V6, false) => "block_in6a",
        (_, Family::V4, true) => "block_in4",
        (_, Family::V6, true) => "block_in6",
    }
}

/// The hash set of blocks that name one destination host, any protocol and port.
pub fn block_host_set(dir: &str, f: Family) -> &'static str {
    match (dir, f) {
        ("out", Family::V4) => "block_out4h",
        ("out", Family::V6) => "block_out6h",
        (_, Family::V4) => "block_in4h",
        (_, Family::V6) => "block_in6h",
    }
}

/// The host a block range stands for when it is "anything to that one address".
fn host_destination(r: &BlockRange) -> Option<IpAddr> {
    let any_src = r.src == crate::blocks::any_addr(r.family());
    (any_src && r.dst.0 == r.dst.1 && r.proto == (0, u8::MAX) && !r.has_ports()).then_some(r.dst.0)
}

/// The operator-block checks, port first: address-only ranges match every packet.
fn block_rules(dir: &str, port: Field) -> Vec<Rule> {
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        out.push(drop(
            vec![ip(f), lookup(&[port, Field::Daddr(f)], block_host_set(dir, f), false)],
            block_ref(),
        ));
        let base = vec![port, Field::Saddr(f), Field::Daddr(f), Field::L4Proto];
        let mut five = base.clone();
        five.extend([Field::Sport, Field::Dport]);
        for (fields, ports) in [(base, false), (five, true)] {
            out.push(drop(vec![ip(f), lookup(&fields, block_set(dir, f, ports), false)], block_ref()));
        }
    }
    out
}

/// The reverse key of a frame to a container: port . own . peer . proto [. own port . peer port].
fn inbound_key(f: Family, ports: bool) -> Vec<Field> {
    let mut k = vec![Field::Oif, Field::Daddr(f), Field::Saddr(f), Field::L4Proto];
    if ports {
        k.extend([Field::Dport, Field::Sport]);
    }
    k
}

/// The key of a frame from a container, in the same order.
fn outbound_key(f: Family, ports: bool) -> Vec<Field> {
    let mut k = vec![Field::Iif, Field::Saddr(f), Field::Daddr(f), Field::L4Proto];
    if ports {
        k.extend([Field::Sport, Field::Dport]);
    }
    k
}

fn flows_set(f: Family) -> &'static str {
    if f == Family::V4 {
        SET_FLOWS4
    } else {
        SET_FLOWS6
    }
}

fn peers_set(f: Family) -> &'static str {
    if f == Family::V4 {
        SET_PEERS4
    } else {
        SET_PEERS6
    }
}

/// Frames from a container that answer what it was allowed to receive: the recorded
/// tuple, refreshed (shorter once the connection closes); replies without ports (ICMP
/// errors and echo replies, other protocols); IPv6 neighbour discovery and MLD.
fn reply_rules(opts: &FloorOptions) -> Vec<Rule> {
    let reply = floor_ref("reply");
    let mut rules = Vec::new();
    for f in [Family::V4, Family::V6] {
        let key = outbound_key(f, true);
        let hit = |extra: Vec<Match>, timeout_ms: u64| {
            let mut matches = vec![ip(f)];
            matches.extend(extra);
            matches.push(lookup(&key, flows_set(f), false));
            Rule {
                dynset: Some(DynSet {
                    fields: key.clone(),
                    set: flows_set(f).into(),
                    timeout_ms,
                    op: DynOp::Update,
                }),
                ..r(matches, Verdict::Accept, reply.clone())
            }
        };
        rules.push(hit(
            vec![Match::L4Proto(vec![L4::Tcp]), Match::TcpFlagsAny(TCP_FIN | TCP_RST)],
            opts.closing_ms,
        ));
        // A reply on a recorded tuple is cached as it passes (the record refreshed below).
        let mut fill = cache_fill_rule(f, Side::Egress);
        fill.matches.push(lookup(&key, flows_set(f), false));
        rules.push(fill);
        rules.push(hit(vec![Match::L4Proto(vec![L4::Tcp])], opts.tcp_idle_ms));
        rules.push(hit(vec![Match::L4Proto(vec![L4::Udp])], opts.udp_idle_ms));
        let (icmp, errors): (u8, Vec<u8>) = if f == Family::V4 {
            (IPPROTO_ICMP, vec![0, 3, 11, 12])
        } else {
            (IPPROTO_ICMPV6, vec![1, 2, 3, 4, 129])
        };
        rules.push(r(
            vec![
                ip(f),
                Match::IcmpType { family: f, types: errors },
                lookup(&outbound_key(f, false), peers_set(f), false),
            ],
            Verdict::Accept,
            reply.clone(),
        ));
        rules.push(r(
            vec![
                ip(f),
                Match::L4ProtoNot(vec![IPPROTO_TCP, IPPROTO_UDP, icmp]),
                lookup(&outbound_key(f, false), peers_set(f), false),
            ],
            Verdict::Accept,
            reply.clone(),
        ));
    }
    rules.push(r(
        vec![
            ip(Family::V6),
            Match::IcmpType { family: Family::V6, types: vec![130, 131, 132, 133, 134, 135, 136, 143] },
        ],
        Verdict::Accept,
        builtin("ipv6-nd"),
    ));
    rules
}

/// After every zone's ingress policy allowed a frame to a container: record its reverse
/// tuple so the replies pass, then let it through.
fn record_rules(opts: &FloorOptions) -> Vec<Rule> {
    let rec = floor_ref("record");
    let mut rules = opening_rules(opts, Side::Ingress);
    rules.extend(cache_fill(Side::Ingress));
    for f in [Family::V4, Family::V6] {
        let with_ports = |extra: Vec<Match>, timeout_ms: u64| {
            let mut matches = vec![ip(f)];
            matches.extend(extra);
            Rule {
                dynset: Some(DynSet {
                    fields: inbound_key(f, true),
                    set: flows_set(f).into(),
                    timeout_ms,
                    op: DynOp::Update,
                }),
                ..r(matches, Verdict::Accept, rec.clone())
            }
        };
        rules.push(with_ports(
            vec![Match::L4Proto(vec![L4::Tcp]), Match::TcpFlagsAny(TCP_FIN | TCP_RST)],
            opts.closing_ms,
        ));
        rules.push(with_ports(vec![Match::L4Proto(vec![L4::Tcp])], opts.tcp_idle_ms));
        rules.push(with_ports(vec![Match::L4Proto(vec![L4::Udp])], opts.udp_idle_ms));
        rules.push(Rule {
            dynset: Some(DynSet {
                fields: inbound_key(f, false),
                set: peers_set(f).into(),
                timeout_ms: opts.udp_idle_ms,
                op: DynOp::Update,
            }),
            ..r(vec![ip(f), Match::L4ProtoNot(vec![IPPROTO_TCP, IPPROTO_UDP])], Verdict::Accept, rec.clone())
        });
    }
    rules.push(r(vec![], Verdict::Accept, None));
    rules
}

fn conns_set(f: Family) -> &'static str {
    if f == Family::V4 {
        SET_CONNS4
    } else {
        SET_CONNS6
    }
}

fn opened_set(f: Family) -> &'static str {
    if f == Family::V4 {
        SET_OPENED4
    } else {
        SET_OPENED6
    }
}

/// A TCP segment that opens a connection: SYN alone (not a SYN-ACK, never with FIN/RST).
fn opening_syn() -> Match {
    Match::TcpFlags { mask: TCP_OPENING_MASK, value: TCP_SYN, invert: false }
}

/// Records a connection's opening SYN that the policy just allowed: a peer's (`Ingress`,
/// in `conns`, keyed from the frame to the port) or the port's own (`Egress`, in
/// `opened`). No verdict: the chain goes on to its own.
fn opening_rules(opts: &FloorOptions, side: Side) -> Vec<Rule> {
    let rec = floor_ref(if side == Side::Ingress { "record" } else { "allowed" });
    [Family::V4, Family::V6]
        .into_iter()
        .map(|f| {
            let (fields, set) = match side {
                Side::Ingress => (inbound_key(f, true), conns_set(f)),
                Side::Egress => (outbound_key(f, true), opened_set(f)),
            };
            Rule {
                matches: vec![ip(f), opening_syn()],
                counter: false,
                dynset: Some(DynSet {
                    fields,
                    set: set.into(),
                    timeout_ms: opts.tcp_idle_ms,
                    op: DynOp::Update,
                }),
                origin: rec.clone(),
                ..Rule::default()
            }
        })
        .collect()
}

/// `iif` (frames from a port) or `oif` (frames to it) is in both quarantine sets.
fn both_ways(port: Field) -> Vec<Match> {
    vec![lookup(&[port], SET_QUARANTINE_OUT, false), lookup(&[port], SET_QUARANTINE_IN, false)]
}

/// Frames a port under an egress quarantine emits: nothing but answers on connections
/// peers opened to it (TCP, from the opening SYN the floor saw pass the ingress policy),
/// answers to datagrams its ingress policy let in, ICMP errors and echo replies to peers
/// that reached it, and neighbour discovery. Under both quarantines: nothing.
fn quarantined_out_rules(opts: &FloorOptions) -> Vec<Rule> {
    let keep = floor_ref("quarantine-reply");
    let mut rules = vec![drop(both_ways(Field::Iif), block_ref())];
    for f in [Family::V4, Family::V6] {
        let key = outbound_key(f, true);
        let tcp = |extra: Vec<Match>, timeout_ms: u64| {
            let mut matches = vec![ip(f), Match::L4Proto(vec![L4::Tcp])];
            matches.extend(extra);
            matches.push(lookup(&key, conns_set(f), false));
            Rule {
                dynset: Some(DynSet {
                    fields: key.clone(),
                    set: conns_set(f).into(),
                    timeout_ms,
                    op: DynOp::Update,
                }),
                ..r(matches, Verdict::Accept, keep.clone())
            }
        };
        rules.push(tcp(vec![Match::TcpFlagsAny(TCP_FIN | TCP_RST)], opts.closing_ms));
        rules.push(tcp(vec![], opts.tcp_idle_ms));
        rules.push(Rule {
            dynset: Some(DynSet {
                fields: key.clone(),
                set: flows_set(f).into(),
                timeout_ms: opts.udp_idle_ms,
                op: DynOp::Update,
            }),
            ..r(
                vec![ip(f), Match::L4Proto(vec![L4::Udp]), lookup(&key, flows_set(f), false)],
                Verdict::Accept,
                keep.clone(),
            )
        });
        let errors: Vec<u8> = if f == Family::V4 { vec![0, 3, 11, 12] } else { vec![1, 2, 3, 4, 129] };
        rules.push(r(
            vec![
                ip(f),
                Match::IcmpType { family: f, types: errors },
                lookup(&outbound_key(f, false), peers_set(f), false),
            ],
            Verdict::Accept,
            keep.clone(),
        ));
    }
    rules.push(r(
        vec![ip(Family::V6), Match::IcmpType { family: Family::V6, types: vec![133, 134, 135, 136, 143] }],
        Verdict::Accept,
        builtin("ipv6-nd"),
    ));
    rules.push(drop(vec![], block_ref()));
    rules
}

/// Frames to a port under an ingress quarantine: nothing but replies on connections it
/// opened (TCP from its opening SYN; UDP from the datagrams it sent while quarantined),
/// and ARP and neighbour discovery. Under both quarantines: nothing.
fn quarantined_in_rules(opts: &FloorOptions) -> Vec<Rule> {
    let keep = floor_ref("quarantine-reply");
    let mut rules = vec![drop(both_ways(Field::Oif), block_ref())];
    rules.push(r(vec![ether(&[ETHERTYPE_ARP])], Verdict::Accept, floor_ref("arp")));
    for f in [Family::V4, Family::V6] {
        let key = inbound_key(f, true);
        let hit = |extra: Vec<Match>, timeout_ms: u64| {
            let mut matches = vec![ip(f)];
            matches.extend(extra);
            matches.push(lookup(&key, opened_set(f), false));
            Rule {
                dynset: Some(DynSet {
                    fields: key.clone(),
                    set: opened_set(f).into(),
                    timeout_ms,
                    op: DynOp::Update,
                }),
                ..r(matches, Verdict::Accept, keep.clone())
            }
        };
        rules.push(hit(
            vec![Match::L4Proto(vec![L4::Tcp]), Match::TcpFlagsAny(TCP_FIN | TCP_RST)],
            opts.closing_ms,
        ));
        rules.push(hit(vec![Match::L4Proto(vec![L4::Tcp])], opts.tcp_idle_ms));
        rules.push(hit(vec![Match::L4Proto(vec![L4::Udp])], opts.udp_idle_ms));
    }
    rules.push(r(
        vec![
            ip(Family::V6),
            Match::IcmpType { family: Family::V6, types: vec![130, 131, 132, 133, 134, 135, 136, 137, 143] },
        ],
        Verdict::Accept,
        builtin("ipv6-nd"),
    ));
    rules.push(drop(vec![], block_ref()));
    rules
}

/// Datagrams a port under an ingress quarantine sends: recorded before its egress policy
/// judges them, so their replies pass `quarantined_in` (what it sends is still judged).
fn record_quarantined_udp(opts: &FloorOptions) -> Vec<Rule> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|f| Rule {
            matches: vec![
                ip(f),
                lookup(&[Field::Iif], SET_QUARANTINE_IN, false),
                Match::L4Proto(vec![L4::Udp]),
            ],
            dynset: Some(DynSet {
                fields: outbound_key(f, true),
                set: opened_set(f).into(),
                timeout_ms: opts.udp_idle_ms,
                op: DynOp::Update,
            }),
            origin: block_ref(),
            ..Rule::default()
        })
        .collect()
}

/// Addresses a port may use: the container's own, in both families.
pub fn own(addrs: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    addrs.iter().partition(|a| a.is_ipv4())
}
