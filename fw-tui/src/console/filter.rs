//! The console's filter language: `zone:web verdict:deny port:443 !dns 10.1.`
//!
//! Words are separated by spaces and must all match. `key:value` compares one field (keys
//! below, values are case-insensitive; `verdict` and `proto` accept a prefix such as `deny`);
//! a bare word matches a substring of the container, zone, peer, addresses, state, rule id,
//! inspected name or protocol, or the service name of the port (`dns`, `https`). A leading
//! `!` negates a word. Parsing never panics; an error names the word at fault.

use std::fmt::Write as _;

use fw_proto::control::{Direction, FlowRow, FlowVerdict, Proto};

/// Keys a `key:value` word may use.
pub const KEYS: &str = "container, zone, peer, verdict, proto, port, dir, state, rule, name";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Container(String),
    Zone(String),
    Peer(String),
    Verdict(FlowVerdict),
    Proto(String),
    Port(u16),
    Dir(Direction),
    State(String),
    Rule(String),
    Name(String),
    Text(String),
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

fn verdict_from(v: &str) -> Option<FlowVerdict> {
    let v = v.to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    // Exact names first, then unambiguous prefixes and common short forms.
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

impl Filter {
    pub fn parse(expr: &str) -> Result<Filter, String> {
        let mut words = Vec::new();
        for raw in expr.split_whitespace() {
            let (negated, w) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            if w.is_empty() {
                return Err(format!("{raw:?}: `!` needs a word after it"));
            }
            let term = match w.split_once(':') {
                // `fd00::1` and `[::1]` are addresses, not keys.
                Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    let lower = v.to_lowercase();
                    if v.is_empty() {
                        return Err(format!("{raw:?}: `{k}:` needs a value"));
                    }
                    match k.to_ascii_lowercase().as_str() {
                        "container" | "c" => Term::Container(lower),
                        "zone" | "z" => Term::Zone(lower),
                        "peer" => Term::Peer(lower),
                        "verdict" | "v" => Term::Verdict(verdict_from(v).ok_or_else(|| {
                            format!(
                                "{raw:?}: unknown verdict (allowed, denied, audit-denied, cap-hit, blocked)"
                            )
                        })?),
                        "proto" => Term::Proto(lower),
                        "port" => {
                            Term::Port(v.parse().map_err(|_| format!("{raw:?}: a port is a number 0-65535"))?)
                        }
                        "dir" | "direction" => Term::Dir(match lower.as_str() {
                            "in" | "ingress" => Direction::Ingress,
                            "out" | "egress" => Direction::Egress,
                            _ => return Err(format!("{raw:?}: a direction is in or out")),
                        }),
                        "state" => Term::State(lower),
                        "rule" => Term::Rule(lower),
                        "name" | "sni" | "host" => Term::Name(lower),
                        other => return Err(format!("{raw:?}: unknown key {other:?} ({KEYS})")),
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

    /// Whether a flow row passes every word. `scratch` receives the row's haystack when a
    /// bare word needs it (the console keeps haystacks per row instead: [`Filter::matches_row`]).
    pub fn matches_flow(&self, r: &FlowRow, scratch: &mut String) -> bool {
        self.matches_row(r, || {
            scratch.clear();
            write_haystack(r, scratch);
            scratch.as_str()
        })
    }

    /// Whether a flow row passes every word; `hay` gives the row's [`haystack`], asked for
    /// at most once and only when a bare word needs it. Keyed words allocate nothing.
    pub fn matches_row<'a>(&self, r: &FlowRow, hay: impl FnOnce() -> &'a str) -> bool {
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
                t => word_matches_flow(t, r),
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
                            (Term::Proto(a), Term::Proto(b)) => b.starts_with(a.as_str()),
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
                    Some(x) => x.eq_ignore_ascii_case(z),
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
}

/// `needle` is already lower case.
fn contains_ci(hay: &str, needle: &str) -> bool {
    if hay.is_ascii() && needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        if n.is_empty() {
            return true;
        }
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(needle)
}

/// The text bare words search, lower case: container, zone, peer, peer zone, state, rule
/// id, inspected name (normalized and as sent) and protocol, the port's service name, one field a line, then both
/// addresses (`src dst`). A word never holds a line break or a space, so a word found here
/// lies within one field (or the address pair), as if each field were searched alone.
pub fn haystack(r: &FlowRow) -> String {
    let mut s = String::with_capacity(96);
    write_haystack(r, &mut s);
    s
}

/// Appends the [`haystack`] of `r` to `s` (reuse one buffer for many rows).
pub fn write_haystack(r: &FlowRow, s: &mut String) {
    let fields = [
        Some(r.container.as_str()),
        Some(r.zone.as_str()),
        r.peer.as_deref(),
        r.peer_zone.as_deref(),
        Some(r.state.as_str()),
        r.rule.as_ref().map(|x| x.id.as_str()),
        r.inspection.as_ref().and_then(|i| i.name.as_deref()),
        r.inspection.as_ref().and_then(|i| i.raw_name.as_deref()),
        r.inspection.as_ref().and_then(|i| i.protocol.as_deref()),
        service(r.dport),
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
    let _ = write!(s, "{} {}", r.src, r.dst);
}

fn proto_name(p: Proto, buf: &mut [u8; 8]) -> &str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
        Proto::Icmpv6 => "icmpv6",
        Proto::Other(n) => {
            let mut w = &mut buf[..];
            let _ = std::io::Write::write_fmt(&mut w, format_args!("{n}"));
            let len = 8 - w.len();
            std::str::from_utf8(&buf[..len]).unwrap_or("")
        }
    }
}

fn word_matches_flow(t: &Term, r: &FlowRow) -> bool {
    match t {
        Term::Container(c) => contains_ci(&r.container, c),
        Term::Zone(z) => {
            r.zone.eq_ignore_ascii_case(z)
                || r.peer_zone.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(z))
        }
        Term::Peer(p) => r.peer.as_deref().is_some_and(|x| contains_ci(x, p)),
        Term::Verdict(v) => r.verdict == *v,
        Term::Proto(p) => proto_name(r.proto, &mut [0; 8]).starts_with(p.as_str()),
        Term::Port(p) => r.dport == *p || r.sport == *p,
        Term::Dir(d) => r.direction == *d,
        Term::State(s) => contains_ci(&r.state, s),
        Term::Rule(x) => r.rule.as_ref().is_some_and(|rr| contains_ci(&rr.id, x)),
        Term::Name(n) => r
            .inspection
            .as_ref()
            .is_some_and(|i| [&i.name, &i.raw_name].into_iter().flatten().any(|x| contains_ci(x, n))),
        Term::Text(t) => haystack(r).contains(t.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testdata::flow;
    use proptest::prelude::*;

    fn m(expr: &str, r: &FlowRow) -> bool {
        Filter::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}")).matches_flow(r, &mut String::new())
    }

    #[test]
    fn keys_negation_and_bare_words() {
        let mut r = flow(1, "web-1", "10.1.0.5", 443, FlowVerdict::Denied);
        assert!(m("", &r));
        assert!(m("zone:web verdict:deny port:443 !dns 10.1.", &r));
        assert!(m("v:denied c:WEB", &r));
        assert!(!m("verdict:allow", &r));
        assert!(m("!verdict:allow", &r));
        assert!(m("https", &r), "service name of the port");
        assert!(!m("dns", &r));
        r.dport = 53;
        assert!(m("dns", &r) && !m("!dns", &r));
        assert!(m("proto:tc dir:out", &r));
        assert!(!m("dir:in", &r));
        assert!(m("rule:default", &r));
        r.inspection = Some(fw_proto::control::Inspection {
            protocol: Some("tls".into()),
            name: Some("API.example.com".into()),
            raw_name: None,
            violation: None,
        });
        assert!(m("name:api.example tls", &r));
        // The name as the flow sent it is searched too.
        r.inspection = Some(fw_proto::control::Inspection {
            protocol: Some("tls".into()),
            name: Some("api.partner.example".into()),
            raw_name: Some("API.Partner.Example.".into()),
            violation: None,
        });
        assert!(m("name:partner.example.", &r) && m("API.PARTNER.EXAMPLE.", &r));
        assert!(!m("name:other", &r));
        assert!(m("fd00::1", &flow(2, "db-1", "fd00::1", 5432, FlowVerdict::Allowed)), "v6 is a word");
    }

    #[test]
    fn errors_name_the_word() {
        for (expr, needle) in [
            ("colour:red", "unknown key"),
            ("port:http", "a port is a number"),
            ("verdict:maybe", "unknown verdict"),
            ("!", "needs a word"),
            ("zone:", "needs a value"),
            ("dir:up", "in or out"),
        ] {
            let e = Filter::parse(expr).unwrap_err();
            assert!(e.contains(needle), "{expr}: {e}");
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

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            if let Ok(f) = Filter::parse(&s) {
                let r = flow(1, "web-1", "10.1.0.5", 443, FlowVerdict::Denied);
                let _ = f.matches_flow(&r, &mut String::new());
                let _ = f.matches_fields(Some("a"), None, &["b"]);
            }
        }

        #[test]
        fn parse_never_panics_on_filter_like_input(
            s in "(!?(zone|verdict|port|proto|dir|x|)(:)?[a-z0-9.:!-]{0,8} ?){0,6}"
        ) {
            let _ = Filter::parse(&s);
        }
    }
}
