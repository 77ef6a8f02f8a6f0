//! Inspection of the first packets of flows a policy flags (`inspect` on a policy): which
//! application protocol they speak and which name they ask for (TLS SNI, HTTP Host, DNS query
//! names), judged against the policy's allow-lists. Pure: packets in, a verdict per packet
//! and findings out; the daemon (`flows/inline.rs`) feeds it the packets NFQUEUE holds for
//! flagged flows, answers the kernel with the verdicts and acts on the findings.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;

use crate::rules::model::{AppProto, Inspect};

pub mod dns;
pub mod http;
pub mod mark;
pub mod names;
pub mod packet;
pub mod reasm;
pub mod sniff;
pub mod tls;

#[cfg(test)]
mod tests;

/// A flow's identity, oriented as the flow's first packet went (initiator -> responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// What inspection concluded. `name` is normalized (ASCII, lower case, no trailing dot);
/// `raw` is the name as the flow sent it, when that differs (`API.Partner.Example.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The flow speaks `protocol` and asked for `name` (SNI, Host, DNS query), within policy.
    Identified { flow: FlowKey, protocol: AppProto, name: Option<String>, raw: Option<String> },
    /// The flow breaks its policy: wrong protocol, a name not on the allow-list, or undecided.
    Violation {
        flow: FlowKey,
        protocol: Option<AppProto>,
        name: Option<String>,
        raw: Option<String>,
        reason: String,
    },
    /// A DNS answer seen on an inspected flow: `name` resolved to `addrs`.
    DnsAnswer { flow: FlowKey, name: String, addrs: Vec<IpAddr> },
}

impl FlowKey {
    /// The same flow seen from the other end.
    pub fn reversed(&self) -> FlowKey {
        FlowKey { proto: self.proto, src: self.dst, sport: self.dport, dst: self.src, dport: self.sport }
    }
}

/// Result of parsing a growing prefix of a stream (or one datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// Decided.
    Done(T),
    /// A valid prefix so far: more bytes are needed.
    NeedMore,
    /// Cannot be this protocol (or is malformed); the reason reads "not TLS: ...", etc.
    Invalid(String),
}

/// What classifying the client's bytes gave.
enum Outcome {
    NeedMore,
    /// The protocol, and the raw name it carries (SNI, Host, DNS query name).
    Seen {
        proto: AppProto,
        name: Option<Vec<u8>>,
    },
    /// Not the required protocol: what it looks like instead, and why.
    Not {
        detected: Option<AppProto>,
        reason: String,
    },
    /// No protocol required and none recognised.
    Unknown,
}

enum Phase {
    /// No verdict yet.
    Judging,
    /// A DNS-over-UDP flow: every query is judged on its own and every answer reported, for
    /// as long as the flow lives (`forget`); it is never decided as a whole.
    Datagrams,
}

struct Flow {
    /// Creation order, for evicting the oldest flow first.
    id: u64,
    /// Payload-carrying packets seen (both directions).
    packets: u8,
    /// The initiator's SYN was seen (so the stream start is exact).
    syn_seen: bool,
    /// Who initiated is known for sure (the SYN, or the caller said).
    oriented: bool,
    /// The initiator has sent payload.
    client_spoke: bool,
    phase: Phase,
    /// Since when packets are held for a verdict (unix ms), and what protocol they must be.
    held_since: Option<i64>,
    required: Option<AppProto>,
    /// The initiator's byte stream (TCP only; stays empty while one segment suffices).
    client: reasm::Stream,
}

/// What to do with one packet of a flagged flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it: it carries part of what decides the flow, which is still undecided.
    Hold,
    /// Let this packet through; it decides nothing (no payload, a DNS answer).
    Pass,
    /// Let it through with every packet held for the flow: within policy.
    Accept,
    /// It, or the flow it belongs to, breaks the policy (the findings say how); every packet
    /// held for the flow goes with it.
    Violation,
}

/// The engine's answer for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The flow, oriented initiator -> responder; `None` when the packet is not TCP or UDP
    /// over IP (nothing to judge: let it through).
    pub flow: Option<FlowKey>,
    pub verdict: Verdict,
    /// The flow is decided: none of its later packets need to come here again.
    pub done: bool,
    pub findings: Vec<Finding>,
}

/// Per-flow inspection state for every flagged flow in flight, bounded in flows and bytes.
///
/// Orientation: a packet belongs to a flow known in either direction. A packet of an unknown
/// flow starts one, oriented (initiator -> responder) by the caller's word when it has one
/// (`judge`'s `from_initiator`), else as follows: a TCP SYN without ACK comes from the
/// initiator, a SYN+ACK goes to it; otherwise the side using a port below 1024 while the
/// other uses one at or above 1024 is the responder (so a DNS answer from port 53 or a
/// segment from port 443 is oriented towards the client); otherwise the packet's sender is the
/// initiator.
///
/// Verdicts: a flow is undecided until its client's first bytes say what it is; meanwhile its
/// payload packets are `Hold`. Undecided after `max_packets` payload packets (both
/// directions, as seen here), after 4 KiB of client stream, or `timeout_ms` after its first
/// held packet (`expire`), whichever first, is a violation.
///
/// After a flow's verdict its buffers are freed and only its key and verdict are kept (in a
/// second set, bounded by 4 x `max_flows`, oldest dropped first), so a packet that was on its
/// way meanwhile gets the same verdict; `forget` drops both.
pub struct Inspector {
    max_flows: usize,
    next_id: u64,
    flows: HashMap<FlowKey, Flow>,
    order: VecDeque<(u64, FlowKey)>,
    /// Decided flows: id, and whether it was a violation.
    done: HashMap<FlowKey, (u64, bool)>,
    done_order: VecDeque<(u64, FlowKey)>,
    /// When flows with held packets time out: (deadline ms, flow id, key), soonest first.
    deadlines: BinaryHeap<Reverse<(i64, u64, FlowKey)>>,
    /// Undecided flows with held packets dropped to stay within `max_flows`.
    dropped: Vec<(FlowKey, Finding)>,
    evicted: u64,
}

/// Decided flows remembered per `max_flows` (a key is ~50 bytes): a decided flow whose key was
/// dropped starts afresh on its next packet, and mid-stream bytes are "not TLS" then, so keep
/// more of them than flows under inspection.
const DONE_PER_FLOW: usize = 4;

/// The protocol a policy requires: `protocol`, or the one its name list implies.
pub fn required_protocol(policy: &Inspect) -> Option<AppProto> {
    policy.protocol.or(if !policy.tls_sni.is_empty() {
        Some(AppProto::Tls)
    } else if !policy.http_host.is_empty() {
        Some(AppProto::Http)
    } else if !policy.dns_names.is_empty() {
        Some(AppProto::Dns)
    } else {
        None
    })
}

fn proto_label(p: AppProto) -> &'static str {
    match p {
        AppProto::Tls => "TLS",
        AppProto::Http => "HTTP",
        AppProto::Dns => "DNS",
    }
}

/// What the first bytes of a stream look like, for a violation's `protocol`.
fn detect(data: &[u8]) -> Option<AppProto> {
    if data.first() == Some(&0x16) && data.get(1).is_none_or(|&v| v == 3) {
        Some(AppProto::Tls)
    } else if sniff::looks_like_http_request(data) {
        Some(AppProto::Http)
    } else {
        None
    }
}

/// Classifies the initiator's bytes so far (`tcp`: a stream prefix; else one datagram).
fn classify(required: Option<AppProto>, tcp: bool, data: &[u8]) -> Outcome {
    let not = |reason: String| Outcome::Not { detected: if tcp { detect(data) } else { None }, reason };
    let proto = match required {
        Some(p) => p,
        None if tcp => match detect(data) {
            Some(p) => p,
            // Could still become a method token.
            None if !data.is_empty()
                && data.len() <= 20
                && data.iter().all(|&c| c.is_ascii_uppercase() || c == b'-' || c == b'_') =>
            {
                return Outcome::NeedMore
            }
            None if data.is_empty() => return Outcome::NeedMore,
            None => return Outcome::Unknown,
        },
        None => AppProto::Dns,
    };
    let r = match (proto, tcp) {
        (AppProto::Tls, true) => tls::parse_client_hello(data).map(|h| match h {
            tls::Hello::ClientHello { sni } => sni,
        }),
        (AppProto::Http, true) => http::parse_request(data).map(|r| r.host),
        (AppProto::Dns, _) => {
            let m = if tcp { dns::parse_tcp(data) } else { dns::parse_message(data) };
            match m {
                Parse::Done(msg) => match dns::check_query(&msg) {
                    Ok(()) => Parse::Done(Some(msg.qname.into_bytes())),
                    Err(r) => Parse::Invalid(r),
                },
                Parse::NeedMore => Parse::NeedMore,
                Parse::Invalid(r) => Parse::Invalid(r),
            }
        }
        (p, false) => {
            let l = proto_label(p);
            Parse::Invalid(format!("not {l}: a UDP datagram ({l} over UDP, e.g. QUIC, is not inspected)"))
        }
    };
    match r {
        Parse::Done(name) => Outcome::Seen { proto, name },
        Parse::NeedMore => Outcome::NeedMore,
        Parse::Invalid(_) if required.is_none() => Outcome::Unknown,
        Parse::Invalid(reason) => not(reason),
    }
}

impl<T> Parse<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parse<U> {
        match self {
            Parse::Done(t) => Parse::Done(f(t)),
            Parse::NeedMore => Parse::NeedMore,
            Parse::Invalid(r) => Parse::Invalid(r),
        }
    }
}

/// The name as the flow sent it, for display beside the normalized one when they differ:
/// bytes outside printable ASCII escaped (`\xHH`), at most 255 of them.
fn raw_name(raw: &[u8], normalized: &str) -> Option<String> {
    let mut s = String::with_capacity(raw.len().min(255));
    for &b in raw.iter().take(255) {
        if b.is_ascii_graphic() {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    (s != normalized).then_some(s)
}

/// The verdict on a recognised protocol and name.
fn judge_name(flow: FlowKey, proto: AppProto, raw: Option<&[u8]>, policy: &Inspect) -> Finding {
    let (list, what, key) = match proto {
        AppProto::Tls => (&policy.tls_sni, "SNI", "tls_sni"),
        AppProto::Http => (&policy.http_host, "Host", "http_host"),
        AppProto::Dns => (&policy.dns_names, "DNS name", "dns_names"),
    };
    let protocol = Some(proto);
    let Some(raw) = raw else {
        return if list.is_empty() {
            Finding::Identified { flow, protocol: proto, name: None, raw: None }
        } else {
            let reason = if proto == AppProto::Http { "no Host header".into() } else { format!("no {what}") };
            Finding::Violation { flow, protocol, name: None, raw: None, reason }
        };
    };
    match names::normalize(raw) {
        Ok(n) if list.is_empty() || names::allowed(list, &n) => {
            Finding::Identified { flow, protocol: proto, raw: raw_name(raw, &n), name: Some(n) }
        }
        Ok(n) => Finding::Violation {
            flow,
            protocol,
            reason: format!("{what} {n} not in {key}"),
            raw: raw_name(raw, &n),
            name: Some(n),
        },
        Err(lossy) => {
            // DNS names come escaped already (`\DDD`): show them as they are.
            let shown =
                if proto == AppProto::Dns { String::from_utf8_lossy(raw).into_owned() } else { lossy };
            if list.is_empty() {
                Finding::Identified { flow, protocol: proto, name: Some(shown), raw: None }
            } else {
                Finding::Violation {
                    flow,
                    protocol,
                    reason: format!("{what} {shown} is not a host name (not in {key})"),
                    name: Some(shown),
                    raw: None,
                }
            }
        }
    }
}

/// Whether `p` comes from the initiator of a flow seen for the first time (see `Inspector`).
fn from_initiator_of(p: &packet::Pkt<'_>) -> bool {
    if p.proto == packet::TCP && p.flags & packet::SYN != 0 {
        return p.flags & packet::ACK == 0;
    }
    !(p.sport < 1024 && p.dport >= 1024)
}

fn undecided(key: FlowKey, protocol: Option<AppProto>, reason: String) -> Finding {
    Finding::Violation { flow: key, protocol, name: None, raw: None, reason }
}

impl Inspector {
    /// Keeps state for at most `max_flows` flows at once (the oldest is dropped first).
    pub fn new(max_flows: usize) -> Inspector {
        Inspector {
            max_flows: max_flows.max(1),
            next_id: 0,
            flows: HashMap::new(),
            order: VecDeque::new(),
            done: HashMap::new(),
            done_order: VecDeque::new(),
            deadlines: BinaryHeap::new(),
            dropped: Vec::new(),
            evicted: 0,
        }
    }

    /// [`Inspector::judge`]'s findings alone, orienting new flows by the packet itself.
    pub fn packet(&mut self, pkt: &[u8], policy: &Inspect, now_ms: i64) -> Vec<Finding> {
        self.judge(pkt, None, policy, now_ms).findings
    }

    /// One packet of a flagged flow, from its IP header (v4 or v6), possibly cut short;
    /// either direction of the flow. `from_initiator`: whether its sender started the
    /// connection, when the caller knows (it orients a flow seen for the first time).
    /// `policy` is the flagging policy's `inspect` table; `now_ms` is unix milliseconds.
    /// A flow gets one `Identified` or `Violation` (a DNS-over-UDP flow one per query).
    pub fn judge(
        &mut self,
        pkt: &[u8],
        from_initiator: Option<bool>,
        policy: &Inspect,
        now_ms: i64,
    ) -> Judged {
        let Some(p) = packet::parse(pkt) else {
            return Judged { flow: None, verdict: Verdict::Pass, done: false, findings: Vec::new() };
        };
        let fwd = FlowKey { proto: p.proto, src: p.src, sport: p.sport, dst: p.dst, dport: p.dport };
        let rev = fwd.reversed();
        for k in [fwd, rev] {
            if let Some(&(_, violation)) = self.done.get(&k) {
                let verdict = if violation { Verdict::Violation } else { Verdict::Accept };
                return Judged { flow: Some(k), verdict, done: true, findings: Vec::new() };
            }
        }
        let (key, from_client) = if self.flows.contains_key(&fwd) {
            (fwd, true)
        } else if self.flows.contains_key(&rev) {
            (rev, false)
        } else {
            let c = from_initiator.unwrap_or_else(|| from_initiator_of(&p));
            let key = if c { fwd } else { rev };
            self.insert(key, from_initiator.is_some());
            (key, c)
        };
        let mut findings = Vec::new();
        let Some(flow) = self.flows.get_mut(&key) else {
            return Judged { flow: Some(key), verdict: Verdict::Pass, done: false, findings };
        };
        let (verdict, done) = step(flow, key, &p, from_client, policy, &mut findings);
        if verdict == Verdict::Hold && flow.held_since.is_none() {
            flow.held_since = Some(now_ms);
            flow.required = required_protocol(policy);
            let at = now_ms.saturating_add(i64::from(policy.timeout_ms));
            self.deadlines.push(Reverse((at, flow.id, key)));
        }
        if done {
            self.finish(key, verdict == Verdict::Violation);
        }
        Judged { flow: Some(key), verdict, done, findings }
    }

    /// Flows whose held packets waited past their policy's `timeout_ms`: each is decided as
    /// a violation now (`undecided after N ms`), and returned once.
    pub fn expire(&mut self, now_ms: i64) -> Vec<(FlowKey, Finding)> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, id, key))) = self.deadlines.peek() {
            if at > now_ms {
                break;
            }
            self.deadlines.pop();
            let Some(flow) = self.flows.get(&key).filter(|f| f.id == id) else { continue };
            let waited = at - flow.held_since.unwrap_or(at);
            let reason = format!("undecided after {waited} ms");
            out.push((key, undecided(key, flow.required, reason)));
            self.finish(key, true);
        }
        out
    }

    /// When the next flow with held packets times out (unix ms).
    pub fn next_deadline(&mut self) -> Option<i64> {
        // Entries of flows decided meanwhile are stale: drop them here, lazily.
        while let Some(&Reverse((at, id, key))) = self.deadlines.peek() {
            if self.flows.get(&key).is_some_and(|f| f.id == id) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Undecided flows with held packets that were dropped to stay within `max_flows`, each
    /// decided as a violation (their packets must not wait for a verdict that never comes).
    /// Returned once.
    pub fn take_dropped(&mut self) -> Vec<(FlowKey, Finding)> {
        std::mem::take(&mut self.dropped)
    }

    fn insert(&mut self, key: FlowKey, oriented: bool) {
        while self.flows.len() >= self.max_flows {
            let Some((id, k)) = self.order.pop_front() else { break };
            let Some(f) = self.flows.get(&k).filter(|f| f.id == id) else { continue };
            if f.held_since.is_some() {
                let reason = format!("undecided: more than {} flows under inspection", self.max_flows);
                self.dropped.push((k, undecided(k, f.required, reason)));
                self.finish(k, true);
            } else {
                self.flows.remove(&k);
            }
            self.evicted += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.flows.insert(
            key,
            Flow {
                id,
                packets: 0,
                syn_seen: false,
                oriented,
                client_spoke: false,
                phase: Phase::Judging,
                held_since: None,
                required: None,
                client: reasm::Stream::default(),
            },
        );
        self.order.push_back((id, key));
        compact(&mut self.order, |id, k| self.flows.get(k).is_some_and(|f| f.id == id), self.flows.len());
    }

    /// Frees a flow's state and remembers its verdict.
    fn finish(&mut self, key: FlowKey, violation: bool) {
        self.flows.remove(&key);
        while self.done.len() >= self.max_flows.saturating_mul(DONE_PER_FLOW) {
            let Some((id, k)) = self.done_order.pop_front() else { break };
            if self.done.get(&k).is_some_and(|d| d.0 == id) {
                self.done.remove(&k);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.done.insert(key, (id, violation));
        self.done_order.push_back((id, key));
        let done = &self.done;
        compact(&mut self.done_order, |id, k| done.get(k).is_some_and(|d| d.0 == id), done.len());
    }

    /// The flow ended (conntrack DESTROY): free its state.
    pub fn forget(&mut self, flow: &FlowKey) {
        for k in [*flow, flow.reversed()] {
            self.flows.remove(&k);
            self.done.remove(&k);
        }
    }

    /// Flows with state now.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Flows dropped undecided because more than `max_flows` were in flight.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bytes this inspector holds now: table slots (key, state, order entry) plus heap buffers,
    /// both for flows under inspection and for the keys of decided ones.
    pub fn memory_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(FlowKey, Flow)>() + 1; // + hashbrown control byte
        let done_slot = std::mem::size_of::<(FlowKey, (u64, bool))>() + 1;
        let ord = std::mem::size_of::<(u64, FlowKey)>();
        let deadline = std::mem::size_of::<Reverse<(i64, u64, FlowKey)>>();
        self.flows.capacity() * slot
            + self.done.capacity() * done_slot
            + (self.order.capacity() + self.done_order.capacity()) * ord
            + self.deadlines.capacity() * deadline
            + self.flows.values().map(|f| f.client.heap_bytes()).sum::<usize>()
    }

    /// Fixed bytes per flow under inspection: its table slot and order entry (heap buffers,
    /// only there while a message spans segments, and a deadline entry while packets are
    /// held, come on top).
    pub fn flow_slot_bytes() -> usize {
        std::mem::size_of::<(FlowKey, Flow)>() + 1 + std::mem::size_of::<(u64, FlowKey)>()
    }
}

/// Drops stale entries of an eviction queue once it is twice as long as the live set.
fn compact(q: &mut VecDeque<(u64, FlowKey)>, live: impl Fn(u64, &FlowKey) -> bool, n: usize) {
    if q.len() > 2 * n + 16 {
        q.retain(|(id, k)| live(*id, k));
    }
}

/// Feeds one packet to its flow and pushes findings; returns the packet's verdict and
/// whether the flow is decided by it.
fn step(
    flow: &mut Flow,
    key: FlowKey,
    p: &packet::Pkt<'_>,
    from_client: bool,
    policy: &Inspect,
    out: &mut Vec<Finding>,
) -> (Verdict, bool) {
    let tcp = key.proto == packet::TCP;
    let syn = tcp && p.flags & packet::SYN != 0;
    if syn && from_client {
        flow.syn_seen = true;
        flow.oriented = true;
        flow.client.syn(p.seq);
    }
    if p.payload.is_empty() {
        return (Verdict::Pass, false);
    }
    flow.packets = flow.packets.saturating_add(1);
    let max = policy.max_packets.max(1);
    let required = required_protocol(policy);
    if !tcp && matches!(required, None | Some(AppProto::Dns)) {
        flow.phase = Phase::Datagrams;
    }
    if let Phase::Datagrams = flow.phase {
        return datagram(key, p, from_client, required, policy, out);
    }
    let outcome = if !from_client {
        // A server talking before its client, in a client-first protocol: not that protocol.
        match required {
            Some(pr @ (AppProto::Tls | AppProto::Http)) if flow.oriented && !flow.client_spoke => {
                Outcome::Not {
                    detected: None,
                    reason: format!(
                        "not {}: server spoke first ({})",
                        proto_label(pr),
                        sniff::describe(p.payload)
                    ),
                }
            }
            // Anything else from the server before the verdict waits with the client's bytes.
            _ => Outcome::NeedMore,
        }
    } else {
        flow.client_spoke = true;
        if tcp {
            let seq = if syn { p.seq.wrapping_add(1) } else { p.seq };
            if flow.client.at_start(seq) {
                // The usual case: the first segment holds it all, parsed in place, no copy.
                let o = classify(required, true, p.payload);
                if matches!(o, Outcome::NeedMore) {
                    flow.client.add(seq, p.payload);
                }
                o
            } else if flow.client.add(seq, p.payload) == reasm::Added::Grew {
                classify(required, true, &flow.client.buf)
            } else {
                Outcome::NeedMore
            }
        } else {
            // TLS or HTTP over UDP: `classify` says it is not.
            classify(required, false, p.payload)
        }
    };
    match outcome {
        Outcome::Seen { proto, name } => {
            let f = judge_name(key, proto, name.as_deref(), policy);
            let v = if matches!(f, Finding::Violation { .. }) { Verdict::Violation } else { Verdict::Accept };
            out.push(f);
            (v, true)
        }
        Outcome::Not { detected, reason } => {
            out.push(Finding::Violation { flow: key, protocol: detected, name: None, raw: None, reason });
            (Verdict::Violation, true)
        }
        Outcome::Unknown => (Verdict::Accept, true),
        Outcome::NeedMore => {
            let over = flow.client.overflow;
            if !over && flow.packets < max {
                return (Verdict::Hold, false);
            }
            let Some(pr) = required else { return (Verdict::Accept, true) };
            let reason = if over {
                format!(
                    "undecided: the {} start is larger than the {}-byte inspection bound",
                    proto_label(pr),
                    reasm::MAX_BYTES
                )
            } else {
                format!("undecided after {} packets", flow.packets)
            };
            out.push(undecided(key, Some(pr), reason));
            (Verdict::Violation, true)
        }
    }
}

/// One datagram of a DNS-over-UDP flow: a query is judged, an answer reported.
fn datagram(
    key: FlowKey,
    p: &packet::Pkt<'_>,
    from_client: bool,
    required: Option<AppProto>,
    policy: &Inspect,
    out: &mut Vec<Finding>,
) -> (Verdict, bool) {
    if !from_client {
        if let Parse::Done(m) = dns::parse_message(p.payload) {
            if m.response && !m.addrs.is_empty() {
                let name = names::normalize(m.qname.as_bytes()).unwrap_or(m.qname);
                out.push(Finding::DnsAnswer { flow: key, name, addrs: m.addrs });
            }
        }
        return (Verdict::Pass, false);
    }
    let outcome = match classify(required, false, p.payload) {
        // A datagram is whole unless the copy was cut short; either way it cannot grow.
        Outcome::NeedMore => match required {
            Some(_) if p.truncated => Outcome::Not {
                detected: None,
                reason: "undecided: the datagram is larger than what the kernel copied".into(),
            },
            Some(_) => Outcome::Not { detected: None, reason: "not DNS: truncated message".into() },
            None => Outcome::Unknown,
        },
        o => o,
    };
    let v = match outcome {
        Outcome::Seen { proto, name } => {
            let f = judge_name(key, proto, name.as_deref(), policy);
            let v = if matches!(f, Finding::Violation { .. }) { Verdict::Violation } else { Verdict::Accept };
            out.push(f);
            v
        }
        Outcome::Not { detected, reason } => {
            out.push(Finding::Violation { flow: key, protocol: detected, name: None, raw: None, reason });
            Verdict::Violation
        }
        Outcome::Unknown | Outcome::NeedMore => Verdict::Accept,
    };
    (v, false)
}
