//! Renders a `Ruleset` as an nft script: what `fw-daemon plan` prints and what `nft -f` (or
//! `nft -c -f`) accepts. The script replaces the table atomically: add, delete, add.

use std::fmt::Write;

use crate::rules::PortRange;

use super::ir::*;

pub fn render(rs: &Ruleset) -> String {
    let mut out = String::with_capacity(4096);
    let (family, table) = (rs.family.name(), rs.table.as_str());
    let _ = writeln!(out, "table {family} {table}");
    let _ = writeln!(out, "delete table {family} {table}");
    let _ = writeln!(out, "table {family} {table} {{");
    for set in &rs.sets {
        render_set(&mut out, set);
    }
    // Jump targets first: a chain must exist before a rule can jump to it.
    for chain in rs.chains.iter().filter(|c| c.base.is_none()) {
        render_chain(&mut out, chain);
    }
    for chain in rs.chains.iter().filter(|c| c.base.is_some()) {
        render_chain(&mut out, chain);
    }
    out.push_str("}\n");
    out
}

fn render_set(out: &mut String, set: &Set) {
    let kind = if set.map.is_some() { "map" } else { "set" };
    let _ = writeln!(out, "\t{kind} {} {{", set.name);
    let ty = match set.key {
        SetKey::Ipv4 => "ipv4_addr".to_string(),
        SetKey::Ipv6 => "ipv6_addr".to_string(),
        SetKey::NfProto => "nf_proto".to_string(),
        SetKey::Block(Family::V4) => {
            "ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service".into()
        }
        SetKey::Block(Family::V6) => {
            "ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service".into()
        }
        SetKey::BlockAddr(Family::V4) => "ipv4_addr . ipv4_addr . inet_proto".into(),
        SetKey::BlockAddr(Family::V6) => "ipv6_addr . ipv6_addr . inet_proto".into(),
        SetKey::Fields(kinds) => kinds.iter().map(|k| key_kind(*k)).collect::<Vec<_>>().join(" . "),
    };
    let data = if set.map.is_some() { " : verdict" } else { "" };
    match set.typeof_text {
        Some(t) => {
            let _ = writeln!(out, "\t\ttypeof {t}");
        }
        None => {
            let _ = writeln!(out, "\t\ttype {ty}{data}");
        }
    }
    if let Some(d) = set.dynamic {
        let _ = writeln!(out, "\t\tsize {}", d.size);
    }
    let ranges = set.interval || matches!(set.key, SetKey::Block(_) | SetKey::BlockAddr(_));
    let flags: Vec<&str> = [
        (set.dynamic.is_some(), "dynamic"),
        (ranges, "interval"),
        (set.timeout || set.dynamic.is_some(), "timeout"),
    ]
    .into_iter()
    .filter_map(|(on, f)| on.then_some(f))
    .collect();
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    let _ = writeln!(out, "\t\tcomment \"{}\"", escape(&set.comment));
    if !set.elements.is_empty() {
        let elems: Vec<String> = set
            .elements
            .iter()
            .map(|e| {
                let mut t = match (set.typeof_text, e) {
                    // A raw field's type is an integer: addresses are written as one.
                    (Some(_), SetElem::Tuple(values)) => values
                        .iter()
                        .map(|v| match v {
                            KeyValue::Addr(std::net::IpAddr::V6(a)) => format!("0x{:032x}", u128::from(*a)),
                            other => key_value(other),
                        })
                        .collect::<Vec<_>>()
                        .join(" . "),
                    _ => elem(e),
                };
                if let Some(chain) = set.map.as_ref().and_then(|m| m.get(e)) {
                    let _ = write!(t, " : jump {chain}");
                }
                if let Some(ms) = set.expires.get(e) {
                    let _ = write!(t, " expires at {ms} ms");
                }
                t
            })
            .collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
    }
    out.push_str("\t}\n");
}

fn elem(e: &SetElem) -> String {
    match e {
        SetElem::Addr(a) => a.to_string(),
        SetElem::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
        SetElem::Net(n) => n.to_string(),
        SetElem::NfProto(Family::V4) => "ipv4".into(),
        SetElem::NfProto(Family::V6) => "ipv6".into(),
        SetElem::Block(b) => {
            fn r<T: PartialEq + std::fmt::Display>(r: &(T, T)) -> String {
                if r.0 == r.1 {
                    r.0.to_string()
                } else {
                    format!("{}-{}", r.0, r.1)
                }
            }
            if b.has_ports() {
                format!("{} . {} . {} . {} . {}", r(&b.src), r(&b.dst), r(&b.proto), r(&b.sport), r(&b.dport))
            } else {
                format!("{} . {} . {}", r(&b.src), r(&b.dst), r(&b.proto))
            }
        }
        SetElem::Tuple(values) => values.iter().map(key_value).collect::<Vec<_>>().join(" . "),
        SetElem::TupleRange(parts) => parts
            .iter()
            .map(|(a, b)| if a == b { key_value(a) } else { format!("{}-{}", key_value(a), key_value(b)) })
            .collect::<Vec<_>>()
            .join(" . "),
    }
}

fn key_kind(k: KeyKind) -> &'static str {
    match k {
        KeyKind::IfIndex => "iface_index",
        KeyKind::EtherAddr => "ether_addr",
        KeyKind::Ipv4 => "ipv4_addr",
        KeyKind::Ipv6 => "ipv6_addr",
        KeyKind::InetProto => "inet_proto",
        KeyKind::InetService => "inet_service",
    }
}

fn key_value(v: &KeyValue) -> String {
    match v {
        KeyValue::IfIndex(i) => i.to_string(),
        KeyValue::Mac(m) => m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        KeyValue::Addr(a) => a.to_string(),
        KeyValue::Proto(p) => p.to_string(),
        KeyValue::Port(p) => p.to_string(),
    }
}

fn render_chain(out: &mut String, chain: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", chain.name);
    if let Some(base) = &chain.base {
        let hook = match base.hook {
            Hook::Input => "input",
            Hook::Output => "output",
            Hook::Forward => "forward",
            Hook::Prerouting => "prerouting",
            Hook::Postrouting => "postrouting",
        };
        let policy = if base.policy_drop { "drop" } else { "accept" };
        let prio = if base.priority == 0 { "filter".to_string() } else { base.priority.to_string() };
        let _ = writeln!(out, "\t\ttype filter hook {hook} priority {prio}; policy {policy};");
    }
    for r in &chain.rules {
        let _ = writeln!(out, "\t\t{}", rule_text(r));
    }
    out.push_str("\t}\n");
}

/// One rule as nft syntax (also used by `explain` to show the deciding line).
pub fn rule_text(r: &Rule) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(r.matches.len() + 4);
    let mut i = 0;
    // nft's canonical spellings, so `nft list` reads back exactly what plan printed:
    // `meta l4proto tcp th dport P` is `tcp dport P`; the IPv6 check before ND is implied.
    while i < r.matches.len() {
        match (&r.matches[i], r.matches.get(i + 1)) {
            (Match::L4Proto(l), Some(Match::Dport(ports)))
                if matches!(l.as_slice(), [L4::Tcp] | [L4::Udp]) =>
            {
                let p = if l[0] == L4::Tcp { "tcp" } else { "udp" };
                let items: Vec<String> = ports.iter().map(port).collect();
                parts.push(format!("{p} dport {}", braces(&items)));
                i += 2;
            }
            (Match::NfProto(Family::V6), Some(m @ Match::Icmpv6Nd)) => {
                parts.push(match_text(m));
                i += 2;
            }
            (m, _) => {
                parts.push(match_text(m));
                i += 1;
            }
        }
    }
    if r.counter {
        parts.push("counter".into());
    }
    if let Some(d) = &r.dynset {
        let op = match d.op {
            DynOp::Update => "update",
            DynOp::Add => "add",
        };
        parts.push(format!("{op} @{} {{ {} timeout {}s }}", d.set, fields(&d.fields), d.timeout_ms / 1000));
    }
    if let Some(m) = r.mark {
        parts.push(format!("ct mark set 0x{m:08x}"));
    }
    if let Some(log) = &r.log {
        let mut l = format!("log prefix \"{}\" group {}", escape(&log.prefix), log.group);
        if let Some(s) = log.snaplen {
            let _ = write!(l, " snaplen {s}");
        }
        parts.push(l);
    }
    if let Some(v) = &r.verdict {
        parts.push(match v {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::RejectTcpReset => "reject with tcp reset".into(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Return => "return".into(),
            Verdict::Vmap { field, map } => format!("{} vmap @{map}", field_text(*field)),
            // nft prints the compat NFQUEUE target in its native spelling.
            Verdict::Queue { num, bypass } => {
                format!("meta mark set ct mark queue num {num}{}", if *bypass { " bypass" } else { "" })
            }
        });
    }
    if let Some(o) = &r.origin {
        parts.push(format!("comment \"{}\"", escape(&comment(o))));
    }
    parts.join(" ")
}

/// The rule comment: `<kind>:<id>`, how readers of `nft list` find the rule in the files.
pub fn comment(o: &fw_proto::RuleRef) -> String {
    let mut c = match o.kind {
        fw_proto::RuleKind::Default => "default".to_string(),
        _ => format!("{}:{}", o.kind, o.id),
    };
    // Kernel limit on rule userdata comments is 128 bytes including the NUL.
    while c.len() > 127 {
        c.pop();
    }
    c
}

fn match_text(m: &Match) -> String {
    match m {
        Match::Loopback(Dir::Src) => "iif \"lo\"".into(),
        Match::Loopback(Dir::Dst) => "oif \"lo\"".into(),
        Match::NfProtoInSet(s) => format!("meta nfproto @{s}"),
        Match::AddrInSet { family, dir, set } => {
            let f = if *family == Family::V4 { "ip" } else { "ip6" };
            let d = if *dir == Dir::Src { "saddr" } else { "daddr" };
            format!("{f} {d} @{set}")
        }
        // The family check is implied by `ip`/`ip6` (nft prints it that way too).
        Match::BlockLookup { family, set } => {
            let f = if *family == Family::V4 { "ip" } else { "ip6" };
            format!("{f} saddr . {f} daddr . meta l4proto . th sport . th dport @{set}")
        }
        Match::NfProto(f) => format!("meta nfproto {}", if *f == Family::V4 { "ipv4" } else { "ipv6" }),
        Match::L4Proto(list) => {
            let names: Vec<&str> = list
                .iter()
                .map(|p| match p {
                    L4::Tcp => "tcp",
                    L4::Udp => "udp",
                    L4::Icmp => "icmp",
                    L4::Icmpv6 => "ipv6-icmp",
                })
                .collect();
            format!("meta l4proto {}", braces(&names))
        }
        Match::Dport(ranges) => {
            let items: Vec<String> = ranges.iter().map(port).collect();
            format!("th dport {}", braces(&items))
        }
        Match::CtState(states) => {
            let names: Vec<&str> = states
                .iter()
                .map(|s| match s {
                    CtState::New => "new",
                    CtState::Established => "established",
                    CtState::Related => "related",
                    CtState::Invalid => "invalid",
                })
                .collect();
            format!("ct state {}", names.join(","))
        }
        Match::Icmpv6Nd => {
            "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }"
                .into()
        }
        Match::CtCountOver(n) => format!("ct count over {n}"),
        Match::Limit { over, rate, unit, burst } => {
            let over = if *over { "over " } else { "" };
            match unit {
                RateUnit::Packets => format!("limit rate {over}{rate}/second burst {burst} packets"),
                RateUnit::Bytes => format!("limit rate {over}{rate} bytes/second burst {burst} bytes"),
            }
        }
        Match::CtMark(m) => format!("ct mark 0x{m:08x}"),
        Match::BlockAddrLookup { family, set } => {
            let f = if *family == Family::V4 { "ip" } else { "ip6" };
            format!("{f} saddr . {f} daddr . meta l4proto @{set}")
        }
        Match::Lookup { fields: f, set, invert } => {
            format!("{} {}@{set}", fields(f), if *invert { "!= " } else { "" })
        }
        Match::IfNamePrefix { dir, prefix } => {
            format!("{} \"{}*\"", if *dir == Dir::Src { "iifname" } else { "oifname" }, escape(prefix))
        }
        Match::EtherType { types, invert } => {
            let names: Vec<String> = types
                .iter()
                .map(|t| match *t {
                    ETHERTYPE_IPV4 => "ip".to_string(),
                    ETHERTYPE_IPV6 => "ip6".to_string(),
                    ETHERTYPE_ARP => "arp".to_string(),
                    other => format!("0x{other:04x}"),
                })
                .collect();
            format!("ether type {}{}", if *invert { "!= " } else { "" }, braces(&names))
        }
        Match::IcmpType { family, types } => {
            let names: Vec<String> = types.iter().map(|t| icmp_type_name(*family, *t)).collect();
            let p = if *family == Family::V4 { "icmp" } else { "icmpv6" };
            format!("{p} type {}", braces(&names))
        }
        Match::Ip6SaddrUnspecified => "ip6 saddr ::".into(),
        Match::L4ProtoNot(protos) => {
            let names: Vec<String> = protos
                .iter()
                .map(|p| match p {
                    6 => "tcp".to_string(),
                    17 => "udp".to_string(),
                    1 => "icmp".to_string(),
                    58 => "ipv6-icmp".to_string(),
                    n => n.to_string(),
                })
                .collect();
            format!("meta l4proto != {}", braces(&names))
        }
        Match::TcpFlagsAny(mask) => format!("tcp flags & ({}) != 0", flag_names(*mask)),
        Match::FragNonFirst => "ip frag-off & 0x1fff != 0".into(),
        Match::CtMarkPrefix { mark, bits } => format!("ct mark 0x{mark:08x}/{bits}"),
        Match::TcpDoff(n) => format!("tcp doff {n}"),
        Match::IpLength(Family::V4, n) => format!("ip length {n}"),
        Match::IpLength(Family::V6, n) => format!("ip6 length {n}"),
        Match::TcpRst => "tcp flags rst".into(),
        Match::CtDirection(CtDir::Original) => "ct direction original".into(),
        Match::CtDirection(CtDir::Reply) => "ct direction reply".into(),
        // As nft lists it back: `tcp flags ! fin,syn,rst` (none of them), `tcp flags != syn /
        // fin,syn,rst,ack`.
        Match::TcpFlags { mask, value: 0, invert: false } => {
            format!("tcp flags ! {}", flag_names(*mask).replace(" | ", ","))
        }
        Match::TcpFlags { mask, value, invert } => {
            let v = flag_names(*value).replace(" | ", ",");
            let v = if v.is_empty() { "0x0".to_string() } else { v };
            let m = flag_names(*mask).replace(" | ", ",");
            format!("tcp flags {}{v} / {m}", if *invert { "!= " } else { "" })
        }
    }
}

/// `fin | syn`: nft's names of the TCP flags in `mask`.
fn flag_names(mask: u8) -> String {
    let mut names = Vec::new();
    for (bit, name) in [(TCP_FIN, "fin"), (TCP_SYN, "syn"), (TCP_RST, "rst"), (0x08, "psh"), (TCP_ACK, "ack")]
    {
        if mask & bit != 0 {
            names.push(name);
        }
    }
    names.join(" | ")
}

fn field_text(f: Field) -> &'static str {
    match f {
        Field::Iif => "iif",
        Field::Oif => "oif",
        Field::EtherSaddr => "ether saddr",
        Field::Saddr(Family::V4) => "ip saddr",
        Field::Daddr(Family::V4) => "ip daddr",
        Field::Saddr(Family::V6) => "ip6 saddr",
        Field::Daddr(Family::V6) => "ip6 daddr",
        Field::L4Proto => "meta l4proto",
        Field::Sport => "th sport",
        Field::Dport => "th dport",
        Field::ArpSha => "arp saddr ether",
        Field::ArpSpa => "arp saddr ip",
        Field::NdTarget => "@th,64,128",
    }
}

fn fields(f: &[Field]) -> String {
    f.iter().map(|x| field_text(*x)).collect::<Vec<_>>().join(" . ")
}

/// nft's name of an ICMP or ICMPv6 type (what `nft list` prints), else the number.
fn icmp_type_name(f: Family, t: u8) -> String {
    crate::rules::ICMP_TYPES
        .iter()
        .find(|x| x.number(f == Family::V6) == Some(t))
        .map_or_else(|| t.to_string(), |x| x.name.to_string())
}

fn port(r: &PortRange) -> String {
    r.to_string()
}

fn braces<S: AsRef<str>>(items: &[S]) -> String {
    if items.len() == 1 {
        items[0].as_ref().to_string()
    } else {
        let v: Vec<&str> = items.iter().map(|s| s.as_ref()).collect();
        format!("{{ {} }}", v.join(", "))
    }
}

fn escape(s: &str) -> String {
    s.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect()
}
