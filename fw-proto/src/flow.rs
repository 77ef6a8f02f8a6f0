//! One row of the flow table and the values it is made of: what the daemon sends, the
//! console lists and the filter language matches (a leaf: `control` and `filter` both use it).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::RuleRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// The container opened it.
    Egress,
    /// A peer opened it to the container.
    Ingress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FlowVerdict {
    Allowed,
    Denied,
    AuditDenied,
    CapHit,
    Blocked,
}

impl FlowVerdict {
    pub const ALL: [FlowVerdict; 5] = [
        FlowVerdict::Allowed,
        FlowVerdict::Denied,
        FlowVerdict::AuditDenied,
        FlowVerdict::CapHit,
        FlowVerdict::Blocked,
    ];
}

impl fmt::Display for FlowVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlowVerdict::Allowed => "allowed",
            FlowVerdict::Denied => "denied",
            FlowVerdict::AuditDenied => "audit-denied",
            FlowVerdict::CapHit => "cap-hit",
            FlowVerdict::Blocked => "blocked",
        })
    }
}

/// IP protocol: `tcp`, `udp`, `icmp`, `icmpv6`, or a number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    #[serde(untagged)]
    Other(u8),
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
            Proto::Other(n) => n,
        }
    }

    pub fn from_number(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 => Proto::Icmp,
            58 => Proto::Icmpv6,
            n => Proto::Other(n),
        }
    }

    /// Whether the protocol has ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp | Proto::Other(132) | Proto::Other(136))
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Tcp => f.write_str("tcp"),
            Proto::Udp => f.write_str("udp"),
            Proto::Icmp => f.write_str("icmp"),
            Proto::Icmpv6 => f.write_str("icmpv6"),
            Proto::Other(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "icmp" => Ok(Proto::Icmp),
            "icmpv6" => Ok(Proto::Icmpv6),
            n => n
                .parse::<u8>()
                .map(Proto::from_number)
                .map_err(|_| format!("unknown protocol {s:?} (tcp, udp, icmp, icmpv6 or 0-255)")),
        }
    }
}

/// One row of the flow table, as seen from `container`'s side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowRow {
    /// Stable for the row's life; `removed` in events names it.
    pub id: u64,
    pub container: String,
    pub zone: String,
    pub direction: Direction,
    pub proto: Proto,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// The other end's container and zone, when fw knows the address.
    pub peer: Option<String>,
    pub peer_zone: Option<String>,
    /// Conntrack state (`ESTABLISHED`, `TIME_WAIT`, ... for TCP; `open`/`closed` otherwise);
    /// `dropped` for denied attempts that never became a flow.
    pub state: String,
    /// Counted from `container`'s side: out = sent by it, in = received.
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    /// Bytes per second over the last update interval.
    pub rate_out: u64,
    pub rate_in: u64,
    /// Unix milliseconds.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub verdict: FlowVerdict,
    /// The rule that decided it (allowed flows: the policy that matches them, per `explain`).
    pub rule: Option<RuleRef>,
    /// Attempts aggregated into this row (denied / cap-hit rows), 1 for a flow.
    pub count: u64,
    /// Still tracked by the kernel.
    pub open: bool,
    /// What inspection of its first packets found, for flows a policy flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<Inspection>,
}

/// What inspection of a flow's first packets found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Inspection {
    /// The application protocol seen (`tls`, `http`, `dns`, or `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// TLS SNI, HTTP Host, or the DNS query name, normalized: ASCII (punycode), lower case,
    /// no trailing dot; what the allow-lists are compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The name exactly as the flow sent it (bytes outside printable ASCII as `\xHH`), when it
    /// differs from `name` (`API.Partner.Example.`): operators search for either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_name: Option<String>,
    /// Why the flow broke its policy, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
}
