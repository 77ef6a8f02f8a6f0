//! Inspection of the first packets of flows a policy flags (`inspect` on a policy): which
//! application protocol they speak and which name they ask for (TLS SNI, HTTP Host, DNS query
//! names), judged against the policy's allow-lists. Pure: packets in, findings out; the daemon
//! (flows/collector, daemon.rs) feeds it NFLOG copies and acts on what it finds.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::rules::model::{AppProto, Inspect};

pub mod dns;
pub mod http;
pub mod names;
pub mod packet;
pub mod reasm;
pub mod tls;

#[cfg(test)]
mod tests;

/// A flow's identity, oriented as the flow's first packet went (initiator -> responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// What inspection concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The flow speaks `protocol` and asked for `name` (SNI, Host, DNS query), within policy.
    Identified { flow: FlowKey, protocol: AppProto, name: Option<String> },
    /// The flow breaks its policy: wrong protocol, or a name not on the allow-list.
    Violation { flow: FlowKey, protocol: Option<AppProto>, name: Option<String>, reason: String },
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
    /// A DNS flow that was identified: its responses become `DnsAnswer`s until every query
    /// seen on it has had one (or `max_packets` payload packets went by).
    Answers { outstanding: u8 },
}

struct Flow {
    /// Creation order, for evicting the oldest flow first.
    id: u64,
    /// Payload-carrying packets seen (both directions).
    packets: u8,
    /// The initiator's SYN was seen (so the stream start is exact).
    syn_seen: bool,
    /// The initiator has sent payload.
    client_spoke: bool,
    phase: Phase,
    /// The initiator's byte stream (TCP only; stays empty while one segment suffices).
    client: reasm::Stream,
}

/// Per-flow inspection state for every flagged flow in flight, bounded in flows and bytes.
///
/// Orientation: a packet belongs to a flow known in either direction. A packet of an unknown
/// flow starts one, oriented (initiator -> responder) as follows: a TCP SYN without ACK comes
/// from the initiator, a SYN+ACK goes to it; otherwise the side using a port below 1024 while
/// the other uses one at or above 1024 is the responder (so a DNS answer from port 53 or a
/// segment from port 443 is oriented towards the client); otherwise the packet's sender is the
/// initiator. Callers get exact results by passing packets from the SYN on.
///
/// After a flow's `Identified` / `Violation` its buffers are freed and only its key is kept
/// (in a second set, bounded by 4 x `max_flows`, oldest dropped first) so its later packets
/// are ignored cheaply; `forget` drops both. The kernel side should tap only a flow's first
/// packets anyway: a decided flow forgotten that way would start afresh mid-stream.
pub struct Inspector {
    max_flows: usize,
    next_id: u64,
    flows: HashMap<FlowKey, Flow>,
    order: VecDeque<(u64, FlowKey)>,
    done: HashMap<FlowKey, u64>,
    done_order: VecDeque<(u64, FlowKey)>,
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
    } else if http::looks_like_request(data) {
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

/// The verdict on a recognised protocol and name.
fn judge(flow: FlowKey, proto: AppProto, raw: Option<&[u8]>, policy: &Inspect) -> Finding {
    let (list, what, key) = match proto {
        AppProto::Tls => (&policy.tls_sni, "SNI", "tls_sni"),
        AppProto::Http => (&policy.http_host, "Host", "http_host"),
        AppProto::Dns => (&policy.dns_names, "DNS name", "dns_names"),
    };
    let protocol = Some(proto);
    let Some(raw) = raw else {
        return if list.is_empty() {
            Finding::Identified { flow, protocol: proto, name: None }
        } else {
            let reason = if proto == AppProto::Http { "no Host header".into() } else { format!("no {what}") };
            Finding::Violation { flow, protocol, name: None, reason }
        };
    };
    match names::normalize(raw) {
        Ok(n) if list.is_empty() || names::allowed(list, &n) => {
            Finding::Identified { flow, protocol: proto, name: Some(n) }
        }
        Ok(n) => {
            Finding::Violation { flow, protocol, reason: format!("{what} {n} not in {key}"), name: Some(n) }
        }
        Err(lossy) => {
            // DNS names come escaped already (`\DDD`): show them as they are.
            let shown =
                if proto == AppProto::Dns { String::from_utf8_lossy(raw).into_owned() } else { lossy };
            if list.is_empty() {
                Finding::Identified { flow, protocol: proto, name: Some(shown) }
            } else {
                Finding::Violation {
                    flow,
                    protocol,
                    reason: format!("{what} {shown} is not a host name (not in {key})"),
                    name: Some(shown),
                }
            }
        }
    }
}

/// Whether `p` comes from the initiator of a flow seen for the first time (see `Inspector`).
fn from_initiator(p: &packet::Pkt<'_>) -> bool {
    if p.proto == packet::TCP && p.flags & packet::SYN != 0 {
        return p.flags & packet::ACK == 0;
    }
    !(p.sport < 1024 && p.dport >= 1024)
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
            evicted: 0,
        }
    }

    /// One packet of a flagged flow as NFLOG hands it over: from the IP header (v4 or v6),
    /// possibly cut at the snap length; either direction of the flow. `policy` is the flagging
    /// policy's `inspect` table; `now_ms` is unix milliseconds. A flow gets at most one
    /// `Identified` or `Violation`, after which its packets are ignored and its state freed.
    /// (An identified DNS flow keeps a few bytes of state until its answers are in, to report
    /// them as `DnsAnswer`.)
    pub fn packet(&mut self, pkt: &[u8], policy: &Inspect, now_ms: i64) -> Vec<Finding> {
        let _ = now_ms; // flows end by `forget` (conntrack) or eviction, not by time
        let Some(p) = packet::parse(pkt) else { return Vec::new() };
        let fwd = FlowKey { proto: p.proto, src: p.src, sport: p.sport, dst: p.dst, dport: p.dport };
        let rev = fwd.reversed();
        if self.done.contains_key(&fwd) || self.done.contains_key(&rev) {
            return Vec::new();
        }
        let (key, from_client) = if self.flows.contains_key(&fwd) {
            (fwd, true)
        } else if self.flows.contains_key(&rev) {
            (rev, false)
        } else {
            let c = from_initiator(&p);
            let key = if c { fwd } else { rev };
            self.insert(key);
            (key, c)
        };
        let mut out = Vec::new();
        let finished = {
            let Some(flow) = self.flows.get_mut(&key) else { return out };
            step(flow, key, &p, from_client, policy, &mut out)
        };
        if finished {
            self.finish(key);
        }
        out
    }

    fn insert(&mut self, key: FlowKey) {
        while self.flows.len() >= self.max_flows {
            let Some((id, k)) = self.order.pop_front() else { break };
            if self.flows.get(&k).is_some_and(|f| f.id == id) {
                self.flows.remove(&k);
                self.evicted += 1;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.flows.insert(
            key,
            Flow {
                id,
                packets: 0,
                syn_seen: false,
                client_spoke: false,
                phase: Phase::Judging,
                client: reasm::Stream::default(),
            },
        );
        self.order.push_back((id, key));
        compact(&mut self.order, |id, k| self.flows.get(k).is_some_and(|f| f.id == id), self.flows.len());
    }

    /// Frees a flow's state and remembers that it is decided.
    fn finish(&mut self, key: FlowKey) {
        self.flows.remove(&key);
        while self.done.len() >= self.max_flows.saturating_mul(DONE_PER_FLOW) {
            let Some((id, k)) = self.done_order.pop_front() else { break };
            if self.done.get(&k) == Some(&id) {
                self.done.remove(&k);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.done.insert(key, id);
        self.done_order.push_back((id, key));
        let done = &self.done;
        compact(&mut self.done_order, |id, k| done.get(k) == Some(&id), done.len());
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
        let done_slot = std::mem::size_of::<(FlowKey, u64)>() + 1;
        let ord = std::mem::size_of::<(u64, FlowKey)>();
        self.flows.capacity() * slot
            + self.done.capacity() * done_slot
            + (self.order.capacity() + self.done_order.capacity()) * ord
            + self.flows.values().map(|f| f.client.heap_bytes()).sum::<usize>()
    }

    /// Fixed bytes per flow under inspection: its table slot and order entry (heap buffers,
    /// only there while a message spans segments, come on top).
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

/// Feeds one packet to its flow; pushes findings; returns whether the flow is finished.
fn step(
    flow: &mut Flow,
    key: FlowKey,
    p: &packet::Pkt<'_>,
    from_client: bool,
    policy: &Inspect,
    out: &mut Vec<Finding>,
) -> bool {
    let tcp = key.proto == packet::TCP;
    let syn = tcp && p.flags & packet::SYN != 0;
    if syn && from_client {
        flow.syn_seen = true;
        flow.client.syn(p.seq);
    }
    if p.payload.is_empty() {
        return false;
    }
    flow.packets = flow.packets.saturating_add(1);
    let max = policy.max_packets.max(1);
    let required = required_protocol(policy);
    if let Phase::Answers { outstanding } = &mut flow.phase {
        if from_client {
            *outstanding = outstanding.saturating_add(1).min(16);
        } else {
            let msg = if tcp { dns::parse_tcp(p.payload) } else { dns::parse_message(p.payload) };
            if let Parse::Done(m) = msg {
                if m.response {
                    *outstanding = outstanding.saturating_sub(1);
                    if !m.addrs.is_empty() {
                        let name = names::normalize(m.qname.as_bytes()).unwrap_or(m.qname);
                        out.push(Finding::DnsAnswer { flow: key, name, addrs: m.addrs });
                    }
                }
            }
        }
        return *outstanding == 0 || flow.packets >= max;
    }
    let outcome = if !from_client {
        // A server talking before its client, in a client-first protocol: not that protocol.
        match required {
            Some(pr @ (AppProto::Tls | AppProto::Http)) if tcp && flow.syn_seen && !flow.client_spoke => {
                Outcome::Not {
                    detected: None,
                    reason: format!(
                        "not {}: server spoke first ({})",
                        proto_label(pr),
                        tls::describe_non_tls(p.payload)
                    ),
                }
            }
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
            match classify(required, false, p.payload) {
                // A whole datagram that ends early is malformed; one cut by the snap length
                // may still be judged on a later datagram.
                Outcome::NeedMore if !p.truncated => match required {
                    Some(_) => Outcome::Not { detected: None, reason: "not DNS: truncated message".into() },
                    None => Outcome::Unknown,
                },
                o => o,
            }
        }
    };
    match outcome {
        Outcome::Seen { proto, name } => {
            let f = judge(key, proto, name.as_deref(), policy);
            let identified_dns = proto == AppProto::Dns && matches!(f, Finding::Identified { .. });
            out.push(f);
            if identified_dns && flow.packets < max {
                flow.client = reasm::Stream::default();
                flow.phase = Phase::Answers { outstanding: 1 };
                return false;
            }
            true
        }
        Outcome::Not { detected, reason } => {
            out.push(Finding::Violation { flow: key, protocol: detected, name: None, reason });
            true
        }
        Outcome::Unknown => true,
        Outcome::NeedMore => {
            let over = flow.client.overflow;
            if !over && flow.packets < max {
                return false;
            }
            if let Some(pr) = required {
                let reason = if over {
                    format!(
                        "undecided: the {} start is larger than the {}-byte inspection bound",
                        proto_label(pr),
                        reasm::MAX_BYTES
                    )
                } else {
                    format!("undecided after {} packets", flow.packets)
                };
                out.push(Finding::Violation { flow: key, protocol: Some(pr), name: None, reason });
            }
            true
        }
    }
}
