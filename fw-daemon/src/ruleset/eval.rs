//! Evaluates a `Ruleset` for one packet, the way the kernel walks the chains. `explain`
//! answers from this, so it reports what the compiled ruleset does, not what we think the
//! policy means; the enforcement tests compare it with real packets.
//!
//! Stateful matches are taken at rest: caps are not exceeded, log limits not reached, no
//! blocks or quarantines unless their sets hold elements.

use std::net::IpAddr;

use fw_proto::RuleRef;

use super::ir::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// The first packet of a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub dport: Option<u16>,
    /// The ICMP (or ICMPv6, by the addresses' family) type of an ICMP packet; `None`: an
    /// echo request, what a new ICMP flow starts with.
    pub icmp_type: Option<u8>,
}

impl Packet {
    /// The ICMP type this packet has, by its family.
    fn icmp_type(&self, family: Family) -> u8 {
        self.icmp_type.unwrap_or(if family == Family::V4 { 8 } else { 128 })
    }
}

/// What one chain hook decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: fw_proto::Verdict,
    /// The rule that decided; `None` only if the chain's own drop policy did.
    pub by: Option<RuleRef>,
    /// The NFLOG prefix the packet would be logged with, if any.
    pub logged: Option<String>,
    /// The nft text of the deciding rule, for humans.
    pub rule_text: Option<String>,
    /// The flow is flagged for inline inspection: its payload packets wait for the daemon's
    /// verdict (and with no daemon follow the policy's fail mode).
    pub inspected: bool,
}

const MAX_DEPTH: usize = 16;

pub fn evaluate(rs: &Ruleset, hook: Hook, pkt: &Packet) -> Decision {
    let Some(base) = rs.chains.iter().find(|c| c.base.as_ref().is_some_and(|b| b.hook == hook)) else {
        return Decision {
            verdict: fw_proto::Verdict::Allow,
            by: None,
            logged: None,
            rule_text: None,
            inspected: false,
        };
    };
    evaluate_from(rs, base, pkt)
}

/// Evaluates from the chain named `chain` as if it were a base chain: the floor's
/// per-zone chains, which its base chains reach through a port's map entry.
pub fn evaluate_chain(rs: &Ruleset, chain: &str, pkt: &Packet) -> Option<Decision> {
    rs.chain(chain).map(|c| evaluate_from(rs, c, pkt))
}

fn evaluate_from(rs: &Ruleset, base: &Chain, pkt: &Packet) -> Decision {
    let mut st = Walk { log: None, audit: false, passed: None, ct_mark: None };
    match walk(rs, base, pkt, &mut st, 0) {
        Some((v, by, text)) => {
            // An accept that only closes a walk through chains that each returned on allow
            // (a shared namespace's zones, the floor's policy chain) speaks for the last
            // rule that allowed.
            let closing = by.as_ref().is_some_and(|o| {
                (o.kind == fw_proto::RuleKind::Floor && o.id == "allowed")
                    || (o.kind == fw_proto::RuleKind::Builtin && o.id == "shared")
            });
            let by = if closing { st.passed.clone().or(by) } else { by };
            let verdict = match v {
                Terminal::Accept if st.audit => fw_proto::Verdict::AuditDeny,
                Terminal::Accept => fw_proto::Verdict::Allow,
                Terminal::Drop => fw_proto::Verdict::Deny,
            };
            Decision { verdict, by, logged: st.log, rule_text: Some(text), inspected: st.ct_mark.is_some() }
        }
        None => Decision {
            verdict: if base.base.as_ref().is_some_and(|b| b.policy_drop) {
                fw_proto::Verdict::Deny
            } else {
                fw_proto::Verdict::Allow
            },
            by: None,
            logged: st.log,
            rule_text: None,
            inspected: false,
        },
    }
}

enum Terminal {
    Accept,
    Drop,
}

struct Walk {
    log: Option<String>,
    audit: bool,
    /// The last rule that allowed by returning to its caller.
    passed: Option<RuleRef>,
    /// The connection mark a rule on the way set (`ct mark set`): a new flow has none before.
    ct_mark: Option<u32>,
}

fn walk(
    rs: &Ruleset,
    chain: &Chain,
    pkt: &Packet,
    st: &mut Walk,
    depth: usize,
) -> Option<(Terminal, Option<RuleRef>, String)> {
    if depth > MAX_DEPTH {
        return None;
    }
    for r in &chain.rules {
        if !r.matches.iter().all(|m| matches(rs, m, pkt, st.ct_mark)) {
            continue;
        }
        if let Some(m) = r.mark {
            st.ct_mark = Some(m);
        }
        if let Some(log) = &r.log {
            st.log = Some(log.prefix.clone());
            st.audit |= log.kind == LogKind::Audit;
        }
        let text = super::render::rule_text(r);
        match &r.verdict {
            None => {}
            // Queued for inspection: the first packet of a new flow goes on (a SYN carries no
            // payload; a datagram is judged by its content, which `explain` does not have).
            Some(Verdict::Accept) | Some(Verdict::Queue { .. }) => {
                return Some((Terminal::Accept, r.origin.clone(), text))
            }
            Some(Verdict::Drop) | Some(Verdict::RejectTcpReset) => {
                return Some((Terminal::Drop, r.origin.clone(), text))
            }
            Some(Verdict::Return) => {
                if r.origin.is_some() {
                    st.passed = r.origin.clone();
                }
                return None;
            }
            Some(Verdict::Vmap { .. }) => {
                // Port maps need a port; `explain` starts at the zone chain instead.
            }
            Some(Verdict::Jump(target)) => {
                if let Some(c) = rs.chain(target) {
                    if let Some((t, by, _)) = walk(rs, c, pkt, st, depth + 1) {
                        // Attribute to the rule that jumped: it is the one in the files.
                        return Some((t, r.origin.clone().or(by), text));
                    }
                }
            }
        }
    }
    None
}

fn matches(rs: &Ruleset, m: &Match, pkt: &Packet, ct_mark: Option<u32>) -> bool {
    let family = Family::of(&pkt.dst);
    match m {
        Match::Loopback(_) => false,
        Match::NfProtoInSet(set) => {
            rs.set(set).is_some_and(|s| s.elements.contains(&SetElem::NfProto(family)))
        }
        Match::AddrInSet { family: f, dir, set } => {
            let addr = if *dir == Dir::Src { pkt.src } else { pkt.dst };
            *f == family && rs.set(set).is_some_and(|s| s.elements.iter().any(|e| elem_contains(e, addr)))
        }
        Match::BlockLookup { family: f, set } => {
            let proto = match (pkt.proto, family) {
                (Proto::Tcp, _) => 6,
                (Proto::Udp, _) => 17,
                (Proto::Icmp, Family::V4) => 1,
                (Proto::Icmp, Family::V6) => 58,
            };
            *f == family
                && rs.set(set).is_some_and(|s| {
                    s.elements.iter().any(|e| match e {
                        // The source port of a new flow is unknown here: only port-less
                        // source ranges match.
                        SetElem::Block(b) => b.contains(pkt.src, pkt.dst, proto, None, pkt.dport),
                        _ => false,
                    })
                })
        }
        Match::NfProto(f) => *f == family,
        Match::L4Proto(list) => list.iter().any(|p| match (p, pkt.proto) {
            (L4::Tcp, Proto::Tcp) | (L4::Udp, Proto::Udp) => true,
            (L4::Icmp, Proto::Icmp) => family == Family::V4,
            (L4::Icmpv6, Proto::Icmp) => family == Family::V6,
            _ => false,
        }),
        Match::Dport(ranges) => {
            matches!(pkt.proto, Proto::Tcp | Proto::Udp)
                && pkt.dport.is_some_and(|p| ranges.iter().any(|r| r.contains(p)))
        }
        Match::CtState(states) => states.contains(&CtState::New),
        Match::Icmpv6Nd => false,
        Match::CtCountOver(_) => false,
        Match::Limit { over, .. } => !over,
        Match::BlockAddrLookup { family: f, set } => {
            let proto = proto_number(pkt.proto, family);
            *f == family
                && rs.set(set).is_some_and(|s| {
                    s.elements.iter().any(|e| match e {
                        SetElem::Block(b) => b.contains(pkt.src, pkt.dst, proto, None, None),
                        _ => false,
                    })
                })
        }
        // Keys this packet cannot supply (the port, a MAC, a source port) mean the lookup
        // does not fire either way: anti-spoofing passes a container's own packets, and the
        // dynamic reply sets are empty at rest.
        Match::Lookup { fields, set, invert } => {
            let Some(key) = fields.iter().map(|f| field_value(*f, pkt, family)).collect::<Option<Vec<_>>>()
            else {
                return false;
            };
            let found = rs.set(set).is_some_and(|s| s.elements.iter().any(|e| tuple_contains(e, &key)));
            found != *invert
        }
        Match::IfNamePrefix { .. } => false,
        Match::EtherType { types, invert } => {
            let ty = if family == Family::V4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
            types.contains(&ty) != *invert
        }
        Match::IcmpType { family: f, types } => {
            *f == family && pkt.proto == Proto::Icmp && types.contains(&pkt.icmp_type(family))
        }
        Match::Ip6SaddrUnspecified => false,
        Match::L4ProtoNot(protos) => !protos.contains(&proto_number(pkt.proto, family)),
        // The first packet of a new flow: a SYN (no FIN/RST), a whole datagram.
        Match::TcpFlagsAny(_) => false,
        Match::FragNonFirst => false,
        // A new connection carries no mark until a rule sets one.
        Match::CtMark(m) => ct_mark == Some(*m),
        Match::CtMarkPrefix { mark, bits } => {
            let mask = u32::MAX.checked_shl(32 - u32::from(*bits).min(32)).unwrap_or(0);
            ct_mark.is_some_and(|c| c & mask == mark & mask)
        }
        // The first packet of a new TCP flow is a SYN without payload: the "no payload"
        // shapes match it (see `compile`'s inspect_queue chain).
        Match::TcpDoff(_) => pkt.proto == Proto::Tcp,
        Match::TcpRst => false,
        Match::IpLength(f, _) => *f == family,
        // A new flow's first packet opens its connection.
        Match::CtDirection(d) => *d == CtDir::Original,
        Match::TcpFlags { mask, value, invert } => {
            pkt.proto == Proto::Tcp && ((TCP_SYN & mask == *value) != *invert)
        }
    }
}

fn proto_number(p: Proto, family: Family) -> u8 {
    match (p, family) {
        (Proto::Tcp, _) => 6,
        (Proto::Udp, _) => 17,
        (Proto::Icmp, Family::V4) => 1,
        (Proto::Icmp, Family::V6) => 58,
    }
}

fn field_value(f: Field, pkt: &Packet, family: Family) -> Option<KeyValue> {
    match f {
        Field::Saddr(x) if x == family => Some(KeyValue::Addr(pkt.src)),
        Field::Daddr(x) if x == family => Some(KeyValue::Addr(pkt.dst)),
        Field::L4Proto => Some(KeyValue::Proto(proto_number(pkt.proto, family))),
        Field::Dport => pkt.dport.map(KeyValue::Port),
        _ => None,
    }
}

fn tuple_contains(e: &SetElem, key: &[KeyValue]) -> bool {
    match e {
        SetElem::Tuple(v) => v.as_slice() == key,
        SetElem::TupleRange(parts) => {
            parts.len() == key.len() && parts.iter().zip(key).all(|((lo, hi), k)| lo <= k && k <= hi)
        }
        _ => false,
    }
}

fn elem_contains(e: &SetElem, addr: IpAddr) -> bool {
    match e {
        SetElem::Addr(a) => *a == addr,
        SetElem::Net(n) => n.contains(&addr),
        SetElem::NfProto(_) | SetElem::Block(_) | SetElem::Tuple(_) | SetElem::TupleRange(_) => false,
    }
}
