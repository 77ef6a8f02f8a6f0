//! Inspection of the first packets of flows a policy flags (`inspect` on a policy): which
//! application protocol they speak and which name they ask for (TLS SNI, HTTP Host, DNS query
//! names), judged against the policy's allow-lists. Pure: packets in, findings out; the daemon
//! (flows/collector, daemon.rs) feeds it NFLOG copies and acts on what it finds.

use std::net::IpAddr;

use crate::rules::model::{AppProto, Inspect};

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

/// Per-flow inspection state for every flagged flow in flight, bounded in flows and bytes.
pub struct Inspector {
    max_flows: usize,
}

impl Inspector {
    /// Keeps state for at most `max_flows` flows at once (the oldest is dropped first).
    pub fn new(max_flows: usize) -> Inspector {
        Inspector { max_flows }
    }

    /// One packet of a flagged flow as NFLOG hands it over: from the IP header (v4 or v6),
    /// possibly cut at the snap length; either direction of the flow. `policy` is the flagging
    /// policy's `inspect` table; `now_ms` is unix milliseconds. A flow gets at most one
    /// `Identified` or `Violation`, after which its packets are ignored and its state freed.
    pub fn packet(&mut self, pkt: &[u8], policy: &Inspect, now_ms: i64) -> Vec<Finding> {
        let _ = (pkt, policy, now_ms, self.max_flows);
        Vec::new()
    }

    /// The flow ended (conntrack DESTROY): free its state.
    pub fn forget(&mut self, flow: &FlowKey) {
        let _ = flow;
    }

    /// Flows with state now.
    pub fn flows(&self) -> usize {
        0
    }
}
