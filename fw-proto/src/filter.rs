//! The flow filter language, one for every reader of the flow table: the console's `/`,
//! `fw-tui flows --filter`, and the daemon's matching of snapshots and subscriptions.
//!
//! `zone:web verdict:deny port:443 !dns 10.1.`
//!
//! - Words are separated by spaces and must all match.
//! - `key:value` (or `key=value`, the form older scripts used) compares one field; the keys are
//!   [`KEYS`]. Values ignore case. An unknown key is an error, never a word that matches
//!   nothing.
//! - Any other word matches a substring of what a row shows: container, zone, peer, peer zone,
//!   state, rule id, inspected name (normalized and as sent), application protocol, the
//!   service name of the port (`dns`, `https`), and both endpoints as `addr:port`
//!   (`[v6]:port`), so `5432` finds flows on port 5432 and `fd00::1` an IPv6 address.
//! - A leading `!` negates a word.
//!
//! Parsing never panics (property-tested and fuzzed); an error names the word at fault.
//! Matching goes through [`FlowFields`], so it does not depend on how a row is stored: the
//! daemon implements it over its compact rows, the console and the CLI over [`FlowRow`].

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::flow::{Direction, FlowRow, FlowVerdict, Inspection, Proto};

/// What a `key:value` word may say: the key, its short forms, the value it takes and what it
/// compares. The parser, its errors and every help text read this one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub value: &'static str,
    pub help: &'static str,
}

/// Every key, in the order help texts list them.
pub const KEYS: &[KeySpec] = &[
    KeySpec { name: "container", aliases: &["c"], value: "TEXT", help: "the container's name contains TEXT" },
    KeySpec {
        name: "zone",
        aliases: &["z"],
        value: "NAME",
        help: "the container's zone or the peer's zone is NAME",
    },
    KeySpec { name: "peer", aliases: &[], value: "TEXT", help: "the other end's name contains TEXT" },
    KeySpec {
        name: "addr",
        aliases: &["ip"],
        value: "ADDR|CIDR",
        help: "either address is ADDR or lies in CIDR",
    },
    KeySpec { name: "port", aliases: &[], value: "N|LO-HI", help: "either port is N (or in LO-HI)" },
    KeySpec {
        name: "proto",
        aliases: &[],
        value: "tcp|udp|icmp|icmpv6|N",
        help: "the IP protocol (a prefix of its name, or its number)",
    },
    KeySpec {
        name: "dir",
        aliases: &["direction"],
        value: "in|out",
        help: "who opened it: out = the container, in = a peer",
    },
    KeySpec {
        name: "state",
        aliases: &[],
        value: "TEXT",
        help: "the state contains TEXT (established, time_wait, dropped, ...)",
    },
    KeySpec {
        name: "verdict",
        aliases: &["v"],
        value: "allowed|denied|audit-denied|cap-hit|blocked",
        help: "the verdict (also deny, allow, audit, cap, block, or a prefix)",
    },
    KeySpec { name: "rule", aliases: &[], value: "TEXT", help: "the deciding rule's id contains TEXT" },
    KeySpec {
        name: "name",
        aliases: &["sni", "host"],
        value: "TEXT",
        help: "the inspected name (TLS SNI, HTTP Host, DNS query) contains TEXT",
    },
];

/// `container, zone, peer, ...`: the key names, for messages.
pub fn key_names() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// The keys as help lines: `  container:TEXT  the container's name contains TEXT (also c:)`.
pub fn keys_help() -> String {
    let mut out = String::new();
    let width = KEYS.iter().map(|k| k.name.len() + 1 + k.value.len()).max().unwrap_or(0);
    for k in KEYS {
        let form = format!("{}:{}", k.name, k.value);
        let _ = write!(out, "  {form:<width$}  {}", k.help);
        if !k.aliases.is_empty() {
            let aliases: Vec<String> = k.aliases.iter().map(|a| format!("{a}:")).collect();
            let _ = write!(out, " (also {})", aliases.join(" "));
        }
        out.push('\n');
    }
    out
}

/// Why a filter was refused; `word` is the word at fault, as typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{word:?}: {problem}")]
pub struct FilterError {
    pub word: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("`!` needs a word after it")]
    EmptyNegation,
    #[error("`{0}:` needs a value")]
    MissingValue(String),
    #[error("unknown key {0:?} (keys: {keys})", keys = key_names())]
    UnknownKey(String),
    #[error("unknown verdict (allowed, denied, audit-denied, cap-hit, blocked)")]
    Verdict,
    #[error("a port is a number 0-65535, or a range LO-HI")]
    Port,
    #[error("unknown protocol (tcp, udp, icmp, icmpv6 or 0-255)")]
    Proto,
    #[error("a direction is in or out")]
    Direction,
    #[error("an address is an IP address or a network (10.1.0.0/16, fd00::/64)")]
    Addr,
}

/// The fields a filter reads from a flow row. Implemented by [`FlowRow`] and by the daemon
/// over its own storage, so the language does not depend on how rows are kept.
pub trait FlowFields {
    fn container(&self) -> &str;
    fn zone(&self) -> &str;
    fn peer(&self) -> Option<&str>;
    fn peer_zone(&self) -> Option<&str>;
    fn direction(&self) -> Direction;
    fn proto(&self) -> Proto;
    fn src(&self) -> IpAddr;
    fn sport(&self) -> u16;
    fn dst(&self) -> IpAddr;
    fn dport(&self) -> u16;
    fn state(&self) -> &str;
    fn verdict(&self) -> FlowVerdict;
    /// The id of the rule that decided it.
    fn rule_id(&self) -> Option<&str>;
    fn inspection(&self) -> Option<&Inspection>;
}

impl FlowFields for FlowRow {
    fn container(&self) -> &str {
        &self.container
    }
    fn zone(&self) -> &str {
        &self.zone
    }
    fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }
    fn peer_zone(&self) -> Option<&str> {
        self.peer_zone.as_deref()
    }
    fn direction(&self) -> Direction {
        self.direction
    }
    fn proto(&self) -> Proto {
        self.proto
    }
    fn src(&self) -> IpAddr {
        self.src
    }
    fn sport(&self) -> u16 {
        self.sport
    }
    fn dst(&self) -> IpAddr {
        self.dst
    }
    fn dport(&self) -> u16 {
        self.dport
    }
    fn state(&self) -> &str {
        &self.state
    }
    fn verdict(&self) -> FlowVerdict {
        self.verdict
    }
    fn rule_id(&self) -> Option<&str> {
        self.rule.as_ref().map(|r| r.id.as_str())
    }
    fn inspection(&self) -> Option<&Inspection> {
        self.inspection.as_ref()
    }
}

/// How a `proto:` value compares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProtoMatch {
    /// A number: exactly that protocol (`proto:6` is tcp).
    Is(Proto),
    /// A prefix of a protocol's name (`proto:tc`, lower case).
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    /// Lower-case substrings.
    Container(String),
    Peer(String),
    State(String),
    Rule(String),
    Name(String),
    Text(String),
    /// Lower case, compared whole.
    Zone(String),
    Addr(IpNet),
    Port(u16, u16),
    Proto(ProtoMatch),
    Dir(Direction),
    Verdict(FlowVerdict),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    negated: bool,
    term: Term,
}

/// A parsed filter; the empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    words: Vec<Word>,
}

const PROTO_NAMES: [(&str, Proto); 4] =
    [("tcp", Proto::Tcp), ("udp", Proto::Udp), ("icmp", Proto::Icmp), ("icmpv6", Proto::Icmpv6)];

/// A verdict from its name, a common short form (`deny`, `allow`, `cap`) or an unambiguous
/// prefix.
pub fn verdict_from(v: &str) -> Option<FlowVerdict> {
    let v = v.to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    if let Some(x) = FlowVerdict::ALL.into_iter().find(|x| x.to_string() == v) {
        return Some(x);
    }
    match v.as_str() {
        "allow" | "accept" | "ok" => return Some(FlowVerdict::Allowed),
        "deny" | "drop" | "dropped" => return Some(FlowVerdict::Denied),
        "audit" | "audit-deny" => return Some(FlowVerdict::AuditDenied),
        "cap" => return Some(FlowVerdict::CapHit),
        "block" => return Some(FlowVerdict::Blocked),
        _ => {}
    }
    let hits: Vec<FlowVerdict> =
        FlowVerdict::ALL.into_iter().filter(|x| x.to_string().starts_with(&v)).collect();
    match hits[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// The conventional service name of a port, for bare-word matching (`dns`, `https`).
pub fn service(port: u16) -> Option<&'static str> {
    Some(match port {
        22 => "ssh",
        25 => "smtp",
        53 => "dns",
        80 => "http",
        123 => "ntp",
        443 => "https",
        3306 => "mysql",
        5432 => "postgres",
        6379 => "redis",
        8080 => "http-alt",
        9092 => "kafka",
        27017 => "mongodb",
        _ => return None,
    })
}

fn find_key(k: &str) -> Option<&'static KeySpec> {
    KEYS.iter()
        .find(|s| s.name.eq_ignore_ascii_case(k) || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(k)))
}

/// Whether a word with an unknown `prefix:` is an address fragment being searched for
/// (`fd00::1`, `dead:beef`, `[fe80::1]:53`), not a misspelled key.
fn looks_like_address(w: &str) -> bool {
    w.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'[' | b']' | b'/' | b'%'))
}

fn port_range(v: &str) -> Option<(u16, u16)> {
    match v.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi): (u16, u16) = (lo.parse().ok()?, hi.parse().ok()?);
            (lo <= hi).then_some((lo, hi))
        }
        None => v.parse().ok().map(|p| (p, p)),
    }
}

fn parse_term(raw: &str, key: &KeySpec, v: &str) -> Result<Term, FilterError> {
    let bad = |problem| FilterError { word: raw.to_string(), problem };
    if v.is_empty() {
        return Err(bad(Problem::MissingValue(key.name.to_string())));
    }
    let lower = v.to_lowercase();
    Ok(match key.name {
        "container" => Term::Container(lower),
        "zone" => Term::Zone(lower),
        "peer" => Term::Peer(lower),
        "addr" => Term::Addr(match v.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => IpNet::from(
                v.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| bad(Problem::Addr))?,
            ),
        }),
        "port" => {
            let (lo, hi) = port_range(v).ok_or_else(|| bad(Problem::Port))?;
            Term::Port(lo, hi)
        }
        "proto" => Term::Proto(match lower.parse::<u8>() {
            Ok(n) => ProtoMatch::Is(Proto::from_number(n)),
            Err(_) if PROTO_NAMES.iter().any(|(name, _)| name.starts_with(lower.as_str())) => {
                ProtoMatch::Prefix(lower)
            }
            Err(_) => return Err(bad(Problem::Proto)),
        }),
        "dir" => Term::Dir(match lower.as_str() {
            "in" | "ingress" => Direction::Ingress,
            "out" | "egress" => Direction::Egress,
            _ => return Err(bad(Problem::Direction)),
        }),
        "state" => Term::State(lower),
        "verdict" => Term::Verdict(verdict_from(v).ok_or_else(|| bad(Problem::Verdict))?),
        "rule" => Term::Rule(lower),
        "name" => Term::Name(lower),
        // Every entry of KEYS is handled above; an entry added without a case is an unknown key.
        other => return Err(bad(Problem::UnknownKey(other.to_string()))),
    })
}

impl Filter {
    /// Parses a filter expression. Never panics; an error names the word at fault.
    pub fn parse(expr: &str) -> Result<Filter, FilterError> {
        let mut words = Vec::new();
        for raw in expr.split_whitespace() {
            let (negated, w) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            if w.is_empty() {
                return Err(FilterError { word: raw.to_string(), problem: Problem::EmptyNegation });
            }
            let split = w.find([':', '=']).map(|i| (&w[..i], &w[i + 1..], w.as_bytes()[i]));
            let term = match split {
                Some((k, v, _)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    match find_key(k) {
                        Some(spec) => parse_term(raw, spec, v)?,
                        None if looks_like_address(w) => Term::Text(w.to_lowercase()),
                        None => {
                            return Err(FilterError {
                                word: raw.to_string(),
                                problem: Problem::UnknownKey(k.to_string()),
                            })
                        }
                    }
                }
                _ => Term::Text(w.to_lowercase()),
            };
            words.push(Word { negated, term });
        }
        Ok(Filter { words })
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether a row passes every word. Bare words search the row's [`write_haystack`],
    /// built in `scratch` at most once and only when a bare word is reached.
    pub fn matches_with<R: FlowFields + ?Sized>(&self, r: &R, scratch: &mut String) -> bool {
        let mut built = false;
        for w in &self.words {
            let hit = match &w.term {
                Term::Text(t) => {
                    if !built {
                        scratch.clear();
                        write_haystack(r, scratch);
                        built = true;
                    }
                    scratch.contains(t.as_str())
                }
                t => term_matches(t, r),
            };
            if hit == w.negated {
                return false;
            }
        }
        true
    }

    /// [`Filter::matches_with`] with its own buffer (allocated only for bare words).
    pub fn matches<R: FlowFields + ?Sized>(&self, r: &R) -> bool {
        self.matches_with(r, &mut String::new())
    }

    /// Whether a row passes every word; `hay` gives the row's [`haystack`] (the console keeps
    /// one per row), asked for at most once and only when a bare word needs it. Keyed words
    /// allocate nothing.
    pub fn matches_row<'a, R: FlowFields + ?Sized>(&self, r: &R, hay: impl FnOnce() -> &'a str) -> bool {
        let mut hay = Some(hay);
        let mut text: &str = "";
        self.words.iter().all(|w| {
            let hit = match &w.term {
                Term::Text(t) => {
                    if let Some(h) = hay.take() {
                        text = h();
                    }
                    text.contains(t.as_str())
                }
                t => term_matches(t, r),
            };
            hit != w.negated
        })
    }

    /// Whether only bare words (no keys) are used: then a row's haystack alone decides.
    pub fn text_only(&self) -> bool {
        self.words.iter().all(|w| matches!(w.term, Term::Text(_)))
    }

    /// [`Filter::matches_row`] for a [`Filter::text_only`] filter: the haystack alone.
    pub fn matches_text(&self, hay: &str) -> bool {
        self.words.iter().all(|w| match &w.term {
            Term::Text(t) => hay.contains(t.as_str()) != w.negated,
            _ => true,
        })
    }

    /// Whether every row passing `self` passes `old` too (`self` narrows `old`): then the
    /// rows passing `self` can be found among those passing `old` alone, in the same order.
    /// True when each of `old`'s words reappears at the same place in `self`, either
    /// unchanged or, not negated, with a value that implies it (a longer substring or
    /// prefix); `self` may add words after them. Deleting a character is never a refinement.
    pub fn refines(&self, old: &Filter) -> bool {
        self.words.len() >= old.words.len()
            && old.words.iter().zip(&self.words).all(|(o, n)| {
                o == n
                    || (!o.negated
                        && !n.negated
                        && match (&o.term, &n.term) {
                            (Term::Container(a), Term::Container(b))
                            | (Term::Peer(a), Term::Peer(b))
                            | (Term::State(a), Term::State(b))
                            | (Term::Rule(a), Term::Rule(b))
                            | (Term::Name(a), Term::Name(b))
                            | (Term::Text(a), Term::Text(b)) => b.contains(a.as_str()),
                            (Term::Proto(ProtoMatch::Prefix(a)), Term::Proto(ProtoMatch::Prefix(b))) => {
                                b.starts_with(a.as_str())
                            }
                            _ => false,
                        })
            })
    }

    /// For rows that are not flows (containers, alerts, audit records): `container`, `zone`
    /// and bare words apply to the given fields; other keys don't constrain them.
    pub fn matches_fields(&self, container: Option<&str>, zone: Option<&str>, text: &[&str]) -> bool {
        self.words.iter().all(|w| {
            let hit = match &w.term {
                Term::Container(c) => match container {
                    Some(x) => contains_ci(x, c),
                    None => return true,
                },
                Term::Zone(z) => match zone {
                    Some(x) => eq_ci(x, z),
                    None => return true,
                },
                Term::Text(t) => {
                    container.is_some_and(|x| contains_ci(x, t))
                        || zone.is_some_and(|x| contains_ci(x, t))
                        || text.iter().any(|x| contains_ci(x, t))
                }
                _ => return true,
            };
            hit != w.negated
        })
    }

    /// Adds a word (for filters built from fields rather than text).
    fn push(&mut self, term: Term) {
        self.words.push(Word { negated: false, term });
    }

    /// `container` as a keyed word (legacy structured filters).
    pub(crate) fn push_container(&mut self, c: &str) {
        self.push(Term::Container(c.to_lowercase()));
    }
    pub(crate) fn push_zone(&mut self, z: &str) {
        self.push(Term::Zone(z.to_lowercase()));
    }
    pub(crate) fn push_verdict(&mut self, v: FlowVerdict) {
        self.push(Term::Verdict(v));
    }
    pub(crate) fn push_port(&mut self, p: u16) {
        self.push(Term::Port(p, p));
    }
    pub(crate) fn push_proto(&mut self, p: Proto) {
        self.push(Term::Proto(ProtoMatch::Is(p)));
    }
    /// A filter of one bare word, taken literally (legacy free text).
    pub(crate) fn parse_text_word(w: &str) -> Filter {
        Filter { words: vec![Word { negated: false, term: Term::Text(w.to_lowercase()) }] }
    }

    /// Appends the words of `other`.
    pub(crate) fn extend(&mut self, other: Filter) {
        self.words.extend(other.words);
    }
}

/// Whether `a` equals `lower` (already lower case), ignoring case.
fn eq_ci(a: &str, lower: &str) -> bool {
    if a.is_ascii() {
        a.eq_ignore_ascii_case(lower)
    } else {
        a.to_lowercase() == lower
    }
}

/// `needle` is already lower case.
fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(needle)
}

fn proto_name(p: Proto) -> Option<&'static str> {
    PROTO_NAMES.iter().find(|(_, x)| *x == p).map(|(n, _)| *n)
}

fn term_matches<R: FlowFields + ?Sized>(t: &Term, r: &R) -> bool {
    match t {
        Term::Container(c) => contains_ci(r.container(), c),
        Term::Zone(z) => eq_ci(r.zone(), z) || r.peer_zone().is_some_and(|p| eq_ci(p, z)),
        Term::Peer(p) => r.peer().is_some_and(|x| contains_ci(x, p)),
        Term::Addr(net) => net.contains(&r.src()) || net.contains(&r.dst()),
        Term::Port(lo, hi) => (*lo..=*hi).contains(&r.dport()) || (*lo..=*hi).contains(&r.sport()),
        Term::Proto(ProtoMatch::Is(p)) => r.proto() == *p,
        Term::Proto(ProtoMatch::Prefix(p)) => {
            proto_name(r.proto()).is_some_and(|n| n.starts_with(p.as_str()))
        }
        Term::Dir(d) => r.direction() == *d,
        Term::State(s) => contains_ci(r.state(), s),
        Term::Verdict(v) => r.verdict() == *v,
        Term::Rule(x) => r.rule_id().is_some_and(|id| contains_ci(id, x)),
        Term::Name(n) => r
            .inspection()
            .is_some_and(|i| [&i.name, &i.raw_name].into_iter().flatten().any(|x| contains_ci(x, n))),
        Term::Text(t) => haystack(r).contains(t.as_str()),
    }
}

/// The text bare words search, lower case, one field a line: container, zone, peer, peer zone,
/// state, rule id, inspected name (normalized and as sent), application protocol, the port's
/// service name; then both endpoints as shown (`src:sport dst:dport`, `[v6]:port`, bare
/// addresses for protocols without ports). A word holds no line break or space, so a word
/// found here lies within one field, as if each field were searched alone.
pub fn haystack<R: FlowFields + ?Sized>(r: &R) -> String {
    let mut s = String::with_capacity(112);
    write_haystack(r, &mut s);
    s
}

/// Appends the [`haystack`] of `r` to `s` (reuse one buffer for many rows).
pub fn write_haystack<R: FlowFields + ?Sized>(r: &R, s: &mut String) {
    let i = r.inspection();
    let fields = [
        Some(r.container()),
        Some(r.zone()),
        r.peer(),
        r.peer_zone(),
        Some(r.state()),
        r.rule_id(),
        i.and_then(|i| i.name.as_deref()),
        i.and_then(|i| i.raw_name.as_deref()),
        i.and_then(|i| i.protocol.as_deref()),
        service(r.dport()),
    ];
    for f in fields.into_iter().flatten() {
        if f.is_ascii() {
            let start = s.len();
            s.push_str(f);
            s[start..].make_ascii_lowercase();
        } else {
            s.push_str(&f.to_lowercase());
        }
        s.push('\n');
    }
    write_endpoint(s, r.proto(), r.src(), r.sport());
    s.push(' ');
    write_endpoint(s, r.proto(), r.dst(), r.dport());
}

/// `addr:port`, `[v6]:port`, or the bare address for protocols without ports: the form the
/// console and the CLI show.
pub fn write_endpoint(s: &mut String, proto: Proto, ip: IpAddr, port: u16) {
    let _ = match (proto.has_ports(), ip) {
        (false, ip) => write!(s, "{ip}"),
        (true, IpAddr::V4(a)) => write!(s, "{a}:{port}"),
        (true, IpAddr::V6(a)) => write!(s, "[{a}]:{port}"),
    };
}

impl fmt::Display for Filter {
    /// The filter in canonical form (`key:value` words), which parses back to itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.words.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if w.negated {
                f.write_str("!")?;
            }
            match &w.term {
                Term::Container(x) => write!(f, "container:{x}")?,
                Term::Zone(x) => write!(f, "zone:{x}")?,
                Term::Peer(x) => write!(f, "peer:{x}")?,
                Term::Addr(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "addr:{}", n.addr())?,
                Term::Addr(n) => write!(f, "addr:{n}")?,
                Term::Port(lo, hi) if lo == hi => write!(f, "port:{lo}")?,
                Term::Port(lo, hi) => write!(f, "port:{lo}-{hi}")?,
                Term::Proto(ProtoMatch::Is(p)) => write!(f, "proto:{}", p.number())?,
                Term::Proto(ProtoMatch::Prefix(p)) => write!(f, "proto:{p}")?,
                Term::Dir(Direction::Egress) => f.write_str("dir:out")?,
                Term::Dir(Direction::Ingress) => f.write_str("dir:in")?,
                Term::State(x) => write!(f, "state:{x}")?,
                Term::Verdict(v) => write!(f, "verdict:{v}")?,
                Term::Rule(x) => write!(f, "rule:{x}")?,
                Term::Name(x) => write!(f, "name:{x}")?,
                Term::Text(x) => f.write_str(x)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RuleKind, RuleRef};
    use proptest::prelude::*;

    fn flow(id: u64, container: &str, dst: &str, dport: u16, verdict: FlowVerdict) -> FlowRow {
        let denied = verdict != FlowVerdict::Allowed;
        FlowRow {
            id,
            container: container.into(),
            zone: container.split('-').next().unwrap_or(container).to_string(),
            direction: Direction::Egress,
            proto: Proto::Tcp,
            src: "10.1.0.2".parse().unwrap(),
            sport: 40_000,
            dst: dst.parse().unwrap(),
            dport,
            peer: None,
            peer_zone: None,
            state: if denied { "dropped".into() } else { "ESTABLISHED".into() },
            bytes_out: 0,
            bytes_in: 0,
            packets_out: 0,
            packets_in: 0,
            rate_out: 0,
            rate_in: 0,
            first_seen_ms: 0,
            last_seen_ms: 0,
            verdict,
            rule: Some(RuleRef { kind: RuleKind::Default, id: "default".into(), source: None }),
            count: 1,
            open: !denied,
            inspection: None,
        }
    }

    fn m(expr: &str, r: &FlowRow) -> bool {
        Filter::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}")).matches(r)
    }

    #[test]
    fn keys_negation_and_bare_words() {
        let mut r = flow(1, "web-1", "10.1.0.5", 443, FlowVerdict::Denied);
        assert!(m("", &r));
        assert!(m("zone:web verdict:deny port:443 !dns 10.1.", &r));
        assert!(m("v:denied c:WEB", &r));
        assert!(m("zone=web verdict=denied", &r), "key=value is an alias");
        assert!(!m("verdict:allow", &r));
        assert!(m("!verdict:allow", &r));
        assert!(m("https", &r), "service name of the port");
        assert!(!m("dns", &r));
        r.dport = 53;
        assert!(m("dns", &r) && !m("!dns", &r));
        assert!(m("proto:tc dir:out proto:6", &r));
        assert!(!m("dir:in", &r) && !m("proto:17", &r));
        assert!(m("rule:default", &r));
        r.inspection = Some(Inspection {
            protocol: Some("tls".into()),
            name: Some("API.example.com".into()),
            raw_name: None,
            violation: None,
        });
        assert!(m("name:api.example tls", &r));
        r.inspection = Some(Inspection {
            protocol: Some("tls".into()),
            name: Some("api.partner.example".into()),
            raw_name: Some("API.Partner.Example.".into()),
            violation: None,
        });
        assert!(m("name:partner.example.", &r) && m("API.PARTNER.EXAMPLE.", &r));
        assert!(!m("name:other", &r));
        let v6 = flow(2, "db-1", "fd00::1", 5432, FlowVerdict::Allowed);
        assert!(m("fd00::1", &v6) && m("[fd00::1]:5432", &v6), "v6 is a word");
        assert!(m("addr:fd00::/64 addr:10.1.0.2", &v6) && !m("addr:10.2.0.0/16", &v6));
    }

    /// `fw-tui flows --help` says `--filter 5432` finds flows on that port.
    #[test]
    fn a_bare_port_number_matches_its_flows() {
        let r = flow(1, "web-1", "10.1.0.3", 5432, FlowVerdict::Allowed);
        assert!(m("5432", &r) && m("10.1.0.3:5432", &r) && m("port:5432", &r) && m("port:5000-6000", &r));
        assert!(!m("5433", &r) && !m("port:5433", &r));
        // A cut port is no match: `:808` is not `:8080`'s end.
        let r = flow(2, "web-1", "10.77.0.21", 8080, FlowVerdict::Allowed);
        assert!(m(":8080", &r) && !m("8081", &r));
    }

    #[test]
    fn errors_name_the_word_and_the_keys() {
        for (expr, needle) in [
            ("colour:red", "unknown key \"colour\""),
            ("colour=red", "unknown key \"colour\""),
            ("port:http", "a port is a number"),
            ("port:9-1", "a port is a number"),
            ("port:70000", "a port is a number"),
            ("verdict:maybe", "unknown verdict"),
            ("!", "needs a word"),
            ("zone:", "needs a value"),
            ("dir:up", "in or out"),
            ("proto:xyz", "unknown protocol"),
            ("addr:10.1", "an address is"),
        ] {
            let e = Filter::parse(expr).unwrap_err();
            assert!(e.to_string().contains(needle), "{expr}: {e}");
            assert_eq!(e.word, expr);
        }
        let e = Filter::parse("web colour:red").unwrap_err().to_string();
        assert!(e.contains("container, zone, peer"), "the keys are listed: {e}");
        // Address fragments with colons are words, not keys.
        for w in ["dead:beef", "fd00::1", "[fe80::1]:53", "cafe:1"] {
            assert!(Filter::parse(w).is_ok(), "{w}");
        }
    }

    #[test]
    fn non_flow_rows_use_container_zone_and_text() {
        let f = Filter::parse("zone:web !quarantined").unwrap();
        assert!(f.matches_fields(Some("web-1"), Some("web"), &["10.0.0.2"]));
        assert!(!f.matches_fields(Some("db-1"), Some("db"), &[]));
        assert!(!f.matches_fields(Some("web-1"), Some("web"), &["quarantined"]));
        assert!(Filter::parse("port:443").unwrap().matches_fields(Some("x"), None, &[]));
    }

    #[test]
    fn the_canonical_form_parses_back() {
        for expr in ["c:Web-1 z:db !v:deny port:1-9 proto:6 proto:ud dir:in addr:10.0.0.0/8 name:x 443", ""] {
            let f = Filter::parse(expr).unwrap();
            assert_eq!(Filter::parse(&f.to_string()).unwrap(), f, "{f}");
        }
    }

    #[test]
    fn help_lists_every_key() {
        let h = keys_help();
        for k in KEYS {
            assert!(h.contains(&format!("{}:{}", k.name, k.value)), "{h}");
        }
        assert!(h.contains("(also sni: host:)"), "{h}");
    }

    fn arb_row() -> impl Strategy<Value = FlowRow> {
        (0u8..5, 0u8..16, 0u8..5, any::<bool>(), any::<bool>()).prop_map(|(c, p, v, ing, inspected)| {
            let container = ["web-1", "web-2", "db-1", "Cache-10", "äpi"][c as usize];
            let dst = ["10.1.0.9", "10.2.3.4", "fd00::1", "192.168.1.10"][p as usize % 4];
            let port = [443, 53, 5432, 8080, 22][p as usize % 5];
            let mut r = flow(u64::from(p), container, dst, port, FlowVerdict::ALL[v as usize]);
            if ing {
                r.direction = Direction::Ingress;
            }
            r.proto = [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Other(132)][(p / 4) as usize % 4];
            r.peer = (p % 3 == 0).then(|| format!("db-{}", p % 4));
            r.peer_zone = r.peer.as_ref().map(|_| "db".to_string());
            if inspected {
                r.inspection = Some(Inspection {
                    protocol: Some("tls".into()),
                    name: Some("API.example.com".into()),
                    raw_name: Some("Api.Example.Com.".into()),
                    violation: None,
                });
            }
            r
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            if let Ok(f) = Filter::parse(&s) {
                let r = flow(1, "web-1", "10.1.0.5", 443, FlowVerdict::Denied);
                let _ = f.matches(&r);
                let _ = f.matches_fields(Some("a"), None, &["b"]);
                // The canonical form means the same.
                prop_assert_eq!(Filter::parse(&f.to_string()).ok(), Some(f));
            }
        }

        #[test]
        fn parse_never_panics_on_filter_like_input(
            s in "(!?(zone|verdict|port|proto|dir|addr|c|x|)([:=])?[a-z0-9.:!/\\[\\]-]{0,8} ?){0,6}"
        ) {
            if let Ok(f) = Filter::parse(&s) {
                prop_assert_eq!(Filter::parse(&f.to_string()).ok(), Some(f));
            }
        }

        /// The per-row haystack (the console's cache) and field-by-field matching agree.
        #[test]
        fn haystack_and_fields_agree(
            r in arb_row(),
            expr in "(!?(c:|zone:|peer:|state:|rule:|name:|)[a-z0-9.:-]{1,6} ?){1,3}",
        ) {
            if let Ok(f) = Filter::parse(&expr) {
                let hay = haystack(&r);
                prop_assert_eq!(f.matches(&r), f.matches_row(&r, || hay.as_str()));
                if f.text_only() {
                    prop_assert_eq!(f.matches(&r), f.matches_text(&hay));
                }
            }
        }
    }
}
