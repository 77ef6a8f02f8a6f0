//! `fw-daemon reach`: everything a container may reach (`--from`), or everyone who may reach
//! it (`--to`), per peer zone, protocol and port range. Answered by `explain`'s evaluator,
//! packet by packet, so it reports what the compiled rulesets do: the ports are split where
//! any compiled rule's port match changes, and one port of each piece is evaluated.

use std::collections::BTreeSet;
use std::net::IpAddr;

use fw_proto::{RuleRef, Verdict};
use ipnet::IpNet;
use serde::Serialize;

use crate::compile::{compile_all, CompileOptions};
use crate::inventory::Inventory;
use crate::rules::{Policy, ZoneKind};
use crate::ruleset::eval::Proto;
use crate::ruleset::ir::Match;
use crate::tools::explain::{explain, proto_name};
use crate::tools::Failed;

/// Which end the question fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What the container may reach.
    From,
    /// Who may reach the container.
    To,
}

/// The answer: every peer, protocol and port range that gets through (allowed, or only
/// reported by an audit-mode zone). What is not listed is denied.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename = "reach")]
pub struct Reach {
    /// The container asked about.
    pub container: String,
    pub zone: String,
    /// `from`: what it may reach; `to`: who may reach it.
    pub side: &'static str,
    pub entries: Vec<ReachEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReachEntry {
    /// The peer zone, or `outside` for an address in no zone.
    pub zone: String,
    /// The peer zone's containers (or networks, for an external zone).
    pub members: Vec<String>,
    /// The peer address the packets were evaluated with.
    pub address: IpAddr,
    /// `tcp`, `udp` or `icmp`.
    pub proto: &'static str,
    /// Destination port ranges, inclusive (none for icmp).
    pub ports: Vec<[u16; 2]>,
    /// `allow`, or `audit-deny` (an audit-mode zone would drop it: logged and allowed).
    pub verdict: Verdict,
    /// The deciding rule.
    pub rule: Option<RuleRef>,
    /// Flagged for inline inspection.
    pub inspected: bool,
}

/// A peer to evaluate: its zone, members, and the address `explain` is asked with (a
/// container's name, or an IP).
struct Peer {
    zone: String,
    members: Vec<String>,
    ask: String,
}

/// The networks of an external zone, or of a zone that holds networks beside containers.
fn external_nets(kind: &ZoneKind) -> Option<&[IpNet]> {
    match kind {
        ZoneKind::External(nets) | ZoneKind::Mixed(_, nets) => Some(nets),
        ZoneKind::Containers(_) => None,
    }
}

/// A host address inside `net` (its first, past the network address where there is one).
fn host_in(net: &IpNet) -> IpAddr {
    let first = net.network();
    let next = match first {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).saturating_add(1))),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).saturating_add(1))),
    };
    if net.contains(&next) {
        next
    } else {
        first
    }
}

fn peers(policy: &Policy, inv: &Inventory, me: &str, v4: bool) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    for c in inv.containers.iter().filter(|c| c.name != me) {
        let zone = policy.zone_of(&c.identity()).name.clone();
        match out.iter_mut().find(|p| p.zone == zone) {
            Some(p) => p.members.push(c.name.clone()),
            None => out.push(Peer { zone, members: vec![c.name.clone()], ask: c.name.clone() }),
        }
    }
    let mut taken: Vec<IpNet> = Vec::new();
    for z in &policy.zones {
        let Some(nets) = external_nets(&z.kind) else { continue };
        taken.extend(nets.iter().copied());
        let pick = nets.iter().find(|n| n.addr().is_ipv4() == v4).or(nets.first());
        if let Some(n) = pick {
            out.push(Peer {
                zone: z.name.clone(),
                members: nets.iter().map(|n| n.to_string()).collect(),
                ask: host_in(n).to_string(),
            });
        }
    }
    // Documentation addresses stand for "anywhere else", unless a zone holds them.
    let outside = ["192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1"]
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|a| a.is_ipv4() == v4)
        .find(|a| !taken.iter().any(|n| n.contains(a)) && inv.by_address(*a).is_none());
    if let Some(a) = outside {
        out.push(Peer {
            zone: "outside".into(),
            members: vec!["any address in no zone".into()],
            ask: a.to_string(),
        });
    }
    out
}

/// Where the verdict may change along the port axis: every start and end of a port match
/// in any compiled rule (1 always).
fn port_cuts(policy: &Policy, inv: &Inventory, opts: &CompileOptions) -> Vec<u16> {
    let mut cuts: BTreeSet<u32> = BTreeSet::from([1]);
    for rs in compile_all(policy, inv, opts) {
        for m in rs.chains.iter().flat_map(|c| c.rules.iter()).flat_map(|r| r.matches.iter()) {
            if let Match::Dport(ranges) = m {
                for r in ranges {
                    cuts.insert(u32::from(r.lo.max(1)));
                    cuts.insert(u32::from(r.hi) + 1);
                }
            }
        }
    }
    cuts.into_iter().filter_map(|c| u16::try_from(c).ok()).collect()
}

pub fn reach(
    policy: &Policy,
    inv: &Inventory,
    container: &str,
    side: Side,
    opts: &CompileOptions,
) -> Result<Reach, Failed> {
    let Some(me) = inv.get(container) else {
        let names: Vec<&str> = inv.containers.iter().map(|c| c.name.as_str()).collect();
        let hint = crate::rules::diag::suggest(container, &names)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(Failed::message(format!("`{container}` is not a container in the inventory{hint}")));
    };
    let v4 = me.addresses.iter().any(|a| a.is_ipv4()) || me.addresses.is_empty();
    let cuts = port_cuts(policy, inv, opts);
    let mut entries = Vec::new();
    for peer in peers(policy, inv, container, v4) {
        for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
            let ask = |port: Option<u16>| {
                let (from, to) = match side {
                    Side::From => (container, peer.ask.as_str()),
                    Side::To => (peer.ask.as_str(), container),
                };
                explain(policy, inv, from, to, proto, port, opts)
            };
            // (first port, last port, verdict, rule, inspected) of each piece that passes.
            let mut pieces: Vec<(u16, u16, Verdict, Option<RuleRef>, bool)> = Vec::new();
            if proto == Proto::Icmp {
                let e = ask(None)?;
                let inspected = e.egress.iter().chain(e.ingress.iter()).any(|x| x.inspected);
                pieces.push((0, 0, e.verdict, e.rule, inspected));
            } else {
                for (i, &lo) in cuts.iter().enumerate() {
                    let hi = cuts.get(i + 1).map_or(u16::MAX, |n| n - 1);
                    let e = ask(Some(lo))?;
                    let inspected = e.egress.iter().chain(e.ingress.iter()).any(|x| x.inspected);
                    match pieces.last_mut() {
                        Some(last)
                            if last.1.checked_add(1) == Some(lo)
                                && (last.2, &last.3, last.4) == (e.verdict, &e.rule, inspected) =>
                        {
                            last.1 = hi;
                        }
                        _ => pieces.push((lo, hi, e.verdict, e.rule, inspected)),
                    }
                }
            }
            // One entry per deciding rule, with its port ranges.
            for (lo, hi, verdict, rule, inspected) in pieces.into_iter().filter(|p| p.2 != Verdict::Deny) {
                let ports = if proto == Proto::Icmp { vec![] } else { vec![[lo, hi]] };
                match entries.iter_mut().find(|x: &&mut ReachEntry| {
                    x.zone == peer.zone
                        && x.proto == proto_name(proto)
                        && x.verdict == verdict
                        && x.rule == rule
                        && x.inspected == inspected
                }) {
                    Some(x) => x.ports.extend(ports),
                    None => entries.push(ReachEntry {
                        zone: peer.zone.clone(),
                        members: peer.members.clone(),
                        address: peer.ask.parse().unwrap_or_else(|_| {
                            inv.get(&peer.ask)
                                .and_then(|c| c.addresses.iter().copied().find(|a| a.is_ipv4() == v4))
                                .unwrap_or(IpAddr::from([0, 0, 0, 0]))
                        }),
                        proto: proto_name(proto),
                        ports,
                        verdict,
                        rule,
                        inspected,
                    }),
                }
            }
        }
    }
    Ok(Reach {
        container: container.to_string(),
        zone: policy.zone_of(&me.identity()).name.clone(),
        side: if side == Side::From { "from" } else { "to" },
        entries,
    })
}

fn ports_text(ports: &[[u16; 2]]) -> String {
    let parts: Vec<String> = ports
        .iter()
        .map(|[lo, hi]| {
            if lo == hi {
                lo.to_string()
            } else if (*lo, *hi) == (1, u16::MAX) {
                "any port".into()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    parts.join(", ")
}

/// The human form: one line per peer zone, protocol and deciding rule.
pub fn render_text(r: &Reach) -> String {
    let mut out = match r.side {
        "from" => format!("{} (zone {}) may reach:\n", r.container, r.zone),
        _ => format!("{} (zone {}) may be reached by:\n", r.container, r.zone),
    };
    if r.entries.is_empty() {
        out.push_str("  nothing\n");
    }
    for e in &r.entries {
        let what = if e.ports.is_empty() {
            e.proto.to_string()
        } else {
            format!("{} {}", e.proto, ports_text(&e.ports))
        };
        let by = e.rule.as_ref().map_or("chain policy".to_string(), |x| x.to_string());
        let verdict =
            if e.verdict == Verdict::AuditDeny { " [audit-deny: reported, not enforced]" } else { "" };
        let insp = if e.inspected { " [inspected]" } else { "" };
        out.push_str(&format!("  {:<10} {:<28} by {by}{verdict}{insp}\n", e.zone, what));
        out.push_str(&format!("  {:<10}   ({})\n", "", e.members.join(", ")));
    }
    out.push_str("everything else: denied\n");
    out
}
