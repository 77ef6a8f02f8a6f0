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
    let mut st = Walk { log: None, audit: false, ct_mark: None };
    match walk(rs, base, pkt, &mut st, 0) {
        Some((v, by, text)) => {
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
            Some(Verdict::Return) => return None,
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
    }
}

fn elem_contains(e: &SetElem, addr: IpAddr) -> bool {
    match e {
        SetElem::Addr(a) => *a == addr,
        SetElem::Net(n) => n.contains(&addr),
        SetElem::NfProto(_) | SetElem::Block(_) => false,
    }
}
