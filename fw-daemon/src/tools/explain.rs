//! `fw-daemon explain`: would A reach B on proto/port, and which rule decides? Answered by
//! evaluating the compiled rulesets of both ends (egress at the sender, ingress at the
//! receiver), so it reports what the kernel will do with the plan.

use std::net::IpAddr;

use fw_proto::{RuleRef, Verdict};
use serde::Serialize;

use crate::compile::{compile_container, CompileOptions, Membership};
use crate::inventory::{Container, Inventory};
use crate::rules::{IcmpType, Policy};
use crate::ruleset::eval::{evaluate, Decision, Packet, Proto};
use crate::ruleset::ir::{Family, Hook};
use crate::tools::Failed;

#[derive(Debug, Clone, Serialize)]
pub struct EndResult {
    pub container: String,
    pub zone: String,
    pub mode: fw_proto::Mode,
    pub verdict: Verdict,
    pub rule: Option<RuleRef>,
    pub logged: Option<String>,
    pub nft: Option<String>,
    /// Flagged for inline inspection: the first payload packets wait for the daemon's verdict.
    pub inspected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub from: String,
    pub to: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: &'static str,
    pub port: Option<u16>,
    /// The ICMP type asked about (ICMP only; absent: an echo request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<&'static str>,
    pub verdict: Verdict,
    /// The deciding rule; `None` only if a chain's own drop policy decided.
    pub rule: Option<RuleRef>,
    /// Sender's egress chain (absent when the sender is not a container).
    pub egress: Option<EndResult>,
    /// The host-side floor on the sender's port: the same policy, judged where the sender
    /// cannot reach (absent when the sender is not a container).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<EndResult>,
    /// Receiver's ingress chain (absent when the receiver is not a container, or egress
    /// already dropped the packet).
    pub ingress: Option<EndResult>,
    /// What the deciding policy inspects inline (`tls sni a,b; on violation cut`), when the
    /// flow is inspected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inspect: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Endpoint<'a> {
    Container(&'a Container),
    External(IpAddr),
}

fn resolve<'a>(inv: &'a Inventory, s: &str) -> Result<Endpoint<'a>, Failed> {
    if let Some(c) = inv.get(s) {
        return Ok(Endpoint::Container(c));
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(inv.by_address(ip).map_or(Endpoint::External(ip), Endpoint::Container)),
        Err(_) => {
            let known: Vec<&str> = inv.containers.iter().map(|c| c.name.as_str()).collect();
            Err(Failed::message(format!(
                "`{s}` is neither a container in the inventory nor an IP address (containers: {})",
                known.join(", ")
            )))
        }
    }
}

pub fn parse_proto(s: &str) -> Result<Proto, Failed> {
    match s {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "icmp" => Ok(Proto::Icmp),
        _ => Err(Failed::message(format!("--proto must be tcp, udp or icmp, not `{s}`"))),
    }
}

pub fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
    }
}

/// Picks the addresses the two ends would use: the given IPs, else the first family both have.
fn addresses(
    from: &Endpoint<'_>,
    to: &Endpoint<'_>,
    from_s: &str,
    to_s: &str,
) -> Result<(IpAddr, IpAddr), Failed> {
    let fixed = |e: &Endpoint<'_>, s: &str| {
        s.parse::<IpAddr>().ok().or(match e {
            Endpoint::External(ip) => Some(*ip),
            Endpoint::Container(_) => None,
        })
    };
    let pick = |e: &Endpoint<'_>, fam: Family| match e {
        Endpoint::External(ip) => (Family::of(ip) == fam).then_some(*ip),
        Endpoint::Container(c) => c.addresses.iter().copied().find(|a| Family::of(a) == fam),
    };
    let families: Vec<Family> = match (fixed(from, from_s), fixed(to, to_s)) {
        (Some(a), _) => vec![Family::of(&a)],
        (None, Some(b)) => vec![Family::of(&b)],
        (None, None) => vec![Family::V4, Family::V6],
    };
    for fam in families {
        let a = fixed(from, from_s).filter(|a| Family::of(a) == fam).or_else(|| pick(from, fam));
        let b = fixed(to, to_s).filter(|b| Family::of(b) == fam).or_else(|| pick(to, fam));
        if let (Some(a), Some(b)) = (a, b) {
            return Ok((a, b));
        }
    }
    Err(Failed::message(format!("`{from_s}` and `{to_s}` have no address family in common")))
}

pub fn explain(
    policy: &Policy,
    inv: &Inventory,
    from_s: &str,
    to_s: &str,
    proto: Proto,
    port: Option<u16>,
    opts: &CompileOptions,
) -> Result<Explanation, Failed> {
    explain_icmp(policy, inv, from_s, to_s, proto, port, None, opts)
}

/// An ICMP type by name (`echo-request`, any case), as `explain --icmp-type` takes it.
pub fn parse_icmp_type(s: &str) -> Result<IcmpType, Failed> {
    IcmpType::named(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = crate::rules::ICMP_TYPES.iter().map(|t| t.name).collect();
        let hint = crate::rules::diag::suggest(&s.to_ascii_lowercase(), &names)
            .map(|h| format!("; did you mean `{h}`?"))
            .unwrap_or_default();
        Failed::message(format!("--icmp-type: unknown ICMP type `{s}`{hint} (types: {})", names.join(", ")))
    })
}

/// [`explain`] for an ICMP packet of the given type (`None`: an echo request).
#[allow(clippy::too_many_arguments)]
pub fn explain_icmp(
    policy: &Policy,
    inv: &Inventory,
    from_s: &str,
    to_s: &str,
    proto: Proto,
    port: Option<u16>,
    icmp_type: Option<IcmpType>,
    opts: &CompileOptions,
) -> Result<Explanation, Failed> {
    if icmp_type.is_some() && proto != Proto::Icmp {
        return Err(Failed::message("--icmp-type needs --proto icmp"));
    }
    let from = resolve(inv, from_s)?;
    let to = resolve(inv, to_s)?;
    if let (Endpoint::External(_), Endpoint::External(_)) = (from, to) {
        return Err(Failed::message("neither end is a container: fw enforces inside containers only"));
    }
    if matches!(proto, Proto::Tcp | Proto::Udp) && port.is_none() {
        return Err(Failed::message("--port is needed for tcp and udp"));
    }
    let port = if proto == Proto::Icmp { None } else { port };
    let (src, dst) = addresses(&from, &to, from_s, to_s)?;
    let icmp_number = match icmp_type {
        Some(t) => Some(t.number(dst.is_ipv6()).ok_or_else(|| {
            Failed::message(format!(
                "ICMP type `{}` exists only in {}, and {src} -> {dst} is IPv{}",
                t.name,
                if t.v4.is_some() { "ICMP (IPv4)" } else { "ICMPv6" },
                if dst.is_ipv6() { 6 } else { 4 }
            ))
        })?),
        None => None,
    };
    let pkt = Packet { src, dst, proto, dport: port, icmp_type: icmp_number };
    let m = Membership::new(policy, inv);
    let end = |c: &Container, hook: Hook| -> EndResult {
        let rs = compile_container(policy, &m, c, opts);
        let Decision { verdict, by, logged, rule_text, inspected } = evaluate(&rs, hook, &pkt);
        EndResult {
            container: c.name.clone(),
            zone: rs.zone.clone(),
            mode: rs.mode,
            verdict,
            rule: by,
            logged,
            nft: rule_text,
            inspected,
        }
    };
    let egress = match from {
        Endpoint::Container(c) => Some(end(c, Hook::Output)),
        Endpoint::External(_) => None,
    };
    let floor = match from {
        Endpoint::Container(c) => floor_end(policy, &m, c, &pkt, opts),
        Endpoint::External(_) => None,
    };
    let reaches = egress.as_ref().is_none_or(|e| e.verdict != Verdict::Deny);
    let ingress = match to {
        Endpoint::Container(c) if reaches => Some(end(c, Hook::Input)),
        _ => None,
    };
    // The worst end decides (deny > audit-deny > allow); on a tie, the sender's end.
    let rank = |v: Verdict| match v {
        Verdict::Allow => 0,
        Verdict::AuditDeny => 1,
        Verdict::Deny => 2,
    };
    let decider = [egress.as_ref(), ingress.as_ref()]
        .into_iter()
        .flatten()
        .fold(None::<&EndResult>, |best, e| match best {
            Some(b) if rank(b.verdict) >= rank(e.verdict) => Some(b),
            _ => Some(e),
        })
        .expect("at least one end is a container");
    let inspected = [egress.as_ref(), ingress.as_ref()].into_iter().flatten().any(|e| e.inspected);
    let inspect = inspected
        .then_some(decider.rule.as_ref())
        .flatten()
        .and_then(|by| policy.rules.iter().find(|r| r.id == by.id))
        .and_then(crate::control::view::inspect);
    Ok(Explanation {
        inspect,
        from: from_s.to_string(),
        to: to_s.to_string(),
        src,
        dst,
        proto: proto_name(proto),
        port,
        icmp_type: icmp_type.map(|t| t.name),
        verdict: decider.verdict,
        rule: decider.rule.clone(),
        egress: egress.clone(),
        floor,
        ingress: ingress.clone(),
    })
}

/// What the floor on `c`'s port decides for its new flow.
fn floor_end(
    policy: &Policy,
    m: &Membership<'_>,
    c: &Container,
    pkt: &Packet,
    opts: &CompileOptions,
) -> Option<EndResult> {
    use crate::floor::{compile::egress_chain, compile_floor, FloorOptions, Port};
    let port = Port {
        containers: vec![c.name.clone()],
        ifindex: 1,
        ifname: String::new(),
        mac: [0; 6],
        addrs: c.addresses.clone(),
    };
    let rs = compile_floor(policy, m, &[port], &Default::default(), opts, &FloorOptions::default());
    let d = crate::ruleset::eval::evaluate_chain(
        &rs,
        &egress_chain(policy, m, std::slice::from_ref(&c.name)),
        pkt,
    )?;
    let zone = policy.zone_of(&c.identity());
    Some(EndResult {
        container: c.name.clone(),
        zone: zone.name.clone(),
        mode: zone.mode,
        verdict: d.verdict,
        rule: d.by,
        logged: None,
        nft: d.rule_text,
        // The floor has no inspection: that is the namespace's.
        inspected: false,
    })
}

/// The human form of an explanation.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let what = match (e.port, e.icmp_type) {
        (Some(p), _) => format!("{}/{p}", e.proto),
        (None, Some(t)) => format!("{}/{t}", e.proto),
        (None, None) => e.proto.to_string(),
    };
    out.push_str(&format!("{} -> {}  {what}  ({} -> {})\n", e.from, e.to, e.src, e.dst));
    let line = |label: &str, r: &Option<EndResult>, why_absent: &str, out: &mut String| match r {
        Some(r) => {
            let by = r.rule.as_ref().map_or("chain policy (drop)".to_string(), |x| x.to_string());
            out.push_str(&format!(
                "  {label:<7} {} (zone {}, {}): {} by {by}\n",
                r.container, r.zone, r.mode, r.verdict
            ));
            if let Some(l) = &r.logged {
                out.push_str(&format!("          logged to NFLOG as \"{l}\"\n"));
            }
            if r.inspected {
                out.push_str(
                    "          inspected inline: its first payload packets wait for the daemon's verdict\n",
                );
                if let Some(i) = &e.inspect {
                    out.push_str(&format!("          inspection: {i}\n"));
                }
            }
        }
        None => out.push_str(&format!("  {label:<7} ({why_absent})\n")),
    };
    line("egress", &e.egress, "the sender is not a container: nothing to enforce there", &mut out);
    if let Some(f) = &e.floor {
        let by = f.rule.as_ref().map_or("chain policy (drop)".to_string(), |x| x.to_string());
        out.push_str(&format!("  floor   host side of {}: {} by {by}\n", f.container, f.verdict));
    }
    let why = if e.egress.as_ref().is_some_and(|x| x.verdict == Verdict::Deny) {
        "not reached: dropped at egress"
    } else {
        "the receiver is not a container: nothing to enforce there"
    };
    line("ingress", &e.ingress, why, &mut out);
    out.push_str(&format!("verdict: {}\n", e.verdict));
    match &e.rule {
        Some(r) if r.source.is_some() => out.push_str(&format!("rule: {r}\n")),
        Some(r) => out.push_str(&format!("rule: {r} (built in)\n")),
        None => out.push_str("rule: chain policy (drop)\n"),
    }
    out
}
