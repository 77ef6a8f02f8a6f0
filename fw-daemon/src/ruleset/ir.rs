//! The per-container Ruleset IR: what `table inet fw` in one netns contains. Built by
//! `compile`, rendered to an nft script by `render`, evaluated by `eval` for `explain`, and
//! (later) turned into a netlink batch by the nft backend.

use std::net::IpAddr;

use fw_proto::{Mode, RuleRef};
use ipnet::IpNet;

use crate::rules::PortRange;

pub const TABLE: &str = "fw";

/// The nftables family of a table: `inet` inside a container's namespace, `bridge` for the
/// host-side floor (`crate::floor`), which sees every frame a container's port emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableFamily {
    #[default]
    Inet,
    Bridge,
}

impl TableFamily {
    pub fn name(self) -> &'static str {
        match self {
            TableFamily::Inet => "inet",
            TableFamily::Bridge => "bridge",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ruleset {
    /// Whose table this is: a container's name, or `floor:<netns>` for a host-side floor.
    pub container: String,
    pub zone: String,
    pub mode: Mode,
    pub family: TableFamily,
    /// The table's name (`fw` inside containers, `fw_floor` on the host side).
    pub table: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Ruleset {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKey {
    Ipv4,
    Ipv6,
    /// `meta nfproto`: the quarantine sets hold `ipv4`/`ipv6`, so a whole family can be cut
    /// with a kernel-side timeout.
    NfProto,
    /// Operator blocks: `saddr . daddr . l4proto . sport . dport`, each field a range.
    Block(Family),
    /// Operator blocks without ports: `saddr . daddr . l4proto`, each field a range. Kept
    /// apart from `Block` because loading ports fails on packets too short to carry them,
    /// and an all-protocol block must match every packet.
    BlockAddr(Family),
    /// A concatenation of typed fields (the floor's port-keyed sets and maps).
    Fields(&'static [KeyKind]),
}

/// One field of a concatenated set key, as nft types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    IfIndex,
    EtherAddr,
    Ipv4,
    Ipv6,
    InetProto,
    InetService,
}

/// Where a lookup's or a dynamic update's key field comes from in the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The port a frame came in on / goes out of (an ifindex).
    Iif,
    Oif,
    EtherSaddr,
    Saddr(Family),
    Daddr(Family),
    L4Proto,
    Sport,
    Dport,
    /// ARP sender hardware / protocol address (Ethernet, IPv4).
    ArpSha,
    ArpSpa,
    /// The target address of an IPv6 neighbour advertisement.
    NdTarget,
}

impl Field {
    pub fn kind(self) -> KeyKind {
        match self {
            Field::Iif | Field::Oif => KeyKind::IfIndex,
            Field::EtherSaddr | Field::ArpSha => KeyKind::EtherAddr,
            Field::Saddr(Family::V4) | Field::Daddr(Family::V4) | Field::ArpSpa => KeyKind::Ipv4,
            Field::Saddr(Family::V6) | Field::Daddr(Family::V6) | Field::NdTarget => KeyKind::Ipv6,
            Field::L4Proto => KeyKind::InetProto,
            Field::Sport | Field::Dport => KeyKind::InetService,
        }
    }
}

/// One value of a concatenated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    IfIndex(u32),
    Mac([u8; 6]),
    Addr(IpAddr),
    Proto(u8),
    Port(u16),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Set {
    pub name: String,
    pub key: SetKey,
    /// Holds networks (external zones); otherwise plain addresses in a hash set.
    pub interval: bool,
    /// Elements may carry a timeout (operator blocks).
    pub timeout: bool,
    pub elements: Vec<SetElem>,
    /// When elements expire (unix ms), for sets with `timeout`; an element without an entry
    /// stays until removed. The kernel enforces it, daemon running or not.
    pub expires: std::collections::BTreeMap<SetElem, i64>,
    pub comment: String,
    /// A verdict map: each element jumps to the chain named here (`iif vmap @ports`).
    pub map: Option<std::collections::BTreeMap<SetElem, String>>,
    /// Written from the packet path (`update @set { ... }`), so the daemon never replaces
    /// its elements: a table replacement carries them over.
    pub dynamic: Option<Dynamic>,
    /// How nft must be told the key's type when no named type fits (`typeof iif .
    /// @th,64,128`); the kernel only sees the key's length.
    pub typeof_text: Option<&'static str>,
}

/// A set the packet path fills: its bound and the default timeout of its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dynamic {
    pub size: u32,
    pub timeout_ms: u64,
    /// A verdict cache (what the slow path accepted a moment ago): every write to the table
    /// empties it in the same batch, so no cached verdict outlives the rules and elements it
    /// was judged by; a replacement does not carry it over.
    pub cache: bool,
}

impl Set {
    /// A plain named set with no elements.
    pub fn new(name: impl Into<String>, key: SetKey, comment: impl Into<String>) -> Set {
        Set {
            name: name.into(),
            key,
            interval: false,
            timeout: false,
            elements: Vec::new(),
            expires: Default::default(),
            comment: comment.into(),
            map: None,
            dynamic: None,
            typeof_text: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetElem {
    Addr(IpAddr),
    Net(IpNet),
    NfProto(Family),
    Block(BlockRange),
    /// A concatenated key (`Fields` sets).
    Tuple(Vec<KeyValue>),
    /// A concatenated key of ranges, start and end per field (interval `Fields` sets).
    TupleRange(Vec<(KeyValue, KeyValue)>),
}

/// One operator-block element: a packet matches when every field is within its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRange {
    pub src: (IpAddr, IpAddr),
    pub dst: (IpAddr, IpAddr),
    pub proto: (u8, u8),
    pub sport: (u16, u16),
    pub dport: (u16, u16),
}

impl BlockRange {
    pub fn family(&self) -> Family {
        Family::of(&self.src.0)
    }

    /// Whether the range constrains ports (else it belongs in the address-only set).
    pub fn has_ports(&self) -> bool {
        self.sport != (0, u16::MAX) || self.dport != (0, u16::MAX)
    }

    /// Whether some packet matches both (the kernel refuses some overlapping ranges).
    pub fn overlaps(&self, o: &BlockRange) -> bool {
        fn x<T: Ord>(a: &(T, T), b: &(T, T)) -> bool {
            a.0 <= b.1 && b.0 <= a.1
        }
        self.family() == o.family()
            && x(&self.src, &o.src)
            && x(&self.dst, &o.dst)
            && x(&self.proto, &o.proto)
            && x(&self.sport, &o.sport)
            && x(&self.dport, &o.dport)
    }

    pub fn contains(
        &self,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        sport: Option<u16>,
        dport: Option<u16>,
    ) -> bool {
        let inr = |v, r: (u16, u16)| match v {
            Some(p) => r.0 <= p && p <= r.1,
            None => r == (0, u16::MAX),
        };
        self.src.0 <= src
            && src <= self.src.1
            && self.dst.0 <= dst
            && dst <= self.dst.1
            && self.proto.0 <= proto
            && proto <= self.proto.1
            && inr(sport, self.sport)
            && inr(dport, self.dport)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Input,
    Output,
    /// Routed through the namespace (inet), or bridged between ports (bridge).
    Forward,
    Prerouting,
    Postrouting,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    /// Every base chain drops by default: fail closed.
    pub policy_drop: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub counter: bool,
    /// `ct mark set M`: flags the connection for inspection (see `crate::inspect::mark`).
    pub mark: Option<u32>,
    pub log: Option<Log>,
    pub verdict: Option<Verdict>,
    /// The rule this one speaks for; also rendered as the nft comment.
    pub origin: Option<RuleRef>,
    /// `update @set { key timeout T }`: records the packet's key from the packet path.
    pub dynset: Option<DynSet>,
}

/// Adds the key built from `fields` to `set`; `Update` also refreshes its timeout if
/// present, `Add` leaves a present element alone (it expires `timeout_ms` after it was
/// first added, however busy the flow: a cache entry is re-judged that often).
#[derive(Debug, Clone, PartialEq)]
pub struct DynSet {
    pub fields: Vec<Field>,
    pub set: String,
    pub timeout_ms: u64,
    pub op: DynOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynOp {
    Update,
    Add,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Packets,
    Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    /// `iif "lo"` (Src) / `oif "lo"` (Dst).
    Loopback(Dir),
    /// `meta nfproto @set`.
    NfProtoInSet(String),
    /// `ip daddr @set` / `ip6 saddr @set` ...
    AddrInSet {
        family: Family,
        dir: Dir,
        set: String,
    },
    /// `ip saddr . ip daddr . meta l4proto . th sport . th dport @set` (operator blocks).
    BlockLookup {
        family: Family,
        set: String,
    },
    /// `meta nfproto ipv4|ipv6`.
    NfProto(Family),
    /// `meta l4proto { tcp, udp }`.
    L4Proto(Vec<L4>),
    /// `th dport { 53, 8000-8100 }`; only after an L4Proto of tcp/udp.
    Dport(Vec<PortRange>),
    CtState(Vec<CtState>),
    /// ICMPv6 neighbour/router discovery types (133-136).
    Icmpv6Nd,
    /// `ct count over N`: more than N tracked connections went through this rule.
    CtCountOver(u32),
    /// `limit rate [over] N/second burst B`. `over: false` matches while under the rate.
    Limit {
        over: bool,
        rate: u64,
        unit: RateUnit,
        burst: u64,
    },
    /// `ct mark 0x6677xxxx`: the connection was accepted by an inspected policy, which set it.
    CtMark(u32),
    /// `ip saddr . ip daddr . meta l4proto @set` (operator blocks without ports).
    BlockAddrLookup {
        family: Family,
        set: String,
    },
    /// `f1 . f2 ... [!=] @set`: a concatenated key looked up in a named set.
    Lookup {
        fields: Vec<Field>,
        set: String,
        invert: bool,
    },
    /// `iifname "veth*"` / `oifname "veth*"`: the port's name starts with `prefix`.
    IfNamePrefix {
        dir: Dir,
        prefix: String,
    },
    /// `ether type { ip, ip6 }` (or `!=`): the frame's EtherType.
    EtherType {
        types: Vec<u16>,
        invert: bool,
    },
    /// `icmp type { ... }` / `icmpv6 type { ... }`.
    IcmpType {
        family: Family,
        types: Vec<u8>,
    },
    /// `ip6 saddr ::`: the unspecified source of duplicate address detection.
    Ip6SaddrUnspecified,
    /// `meta l4proto != { ... }` (protocol numbers).
    L4ProtoNot(Vec<u8>),
    /// `tcp flags & MASK != 0` (after a TCP check).
    TcpFlagsAny(u8),
    /// `ip frag-off & 0x1fff != 0`: a later fragment of an IPv4 datagram (no ports in it).
    FragNonFirst,
    /// `ct mark 0x66760000/15`: the first `bits` bits of the connection's mark are `mark`'s
    /// (an inspection state, whatever the policy; see `crate::inspect::mark`).
    CtMarkPrefix {
        mark: u32,
        bits: u8,
    },
    /// `tcp doff N`: the TCP header is N 32-bit words long (implies TCP).
    TcpDoff(u8),
    /// `ip length N` (IPv4 total length) / `ip6 length N` (IPv6 payload length).
    IpLength(Family, u16),
    /// `tcp flags rst`: the RST flag is set (implies TCP).
    TcpRst,
    /// `ct direction original|reply`: which way the packet goes along its connection (no
    /// match for a packet without one: untracked, invalid).
    CtDirection(CtDir),
    /// `tcp flags & MASK == VALUE` (or `!=` with `invert`); implies TCP.
    TcpFlags {
        mask: u8,
        value: u8,
        invert: bool,
    },
}

/// A packet's direction along its conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDir {
    /// The way the connection's first packet went.
    Original,
    Reply,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
/// The flags that tell a connection's opening SYN from every later segment.
pub const TCP_OPENING_MASK: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// An enforced drop (explicit deny, default deny, invalid).
    Deny,
    /// A would-be drop in an audit-mode zone: accepted.
    Audit,
    /// `action = "log"`: allowed and recorded.
    Allow,
    Cap,
    Block,
}

impl LogKind {
    /// The NFLOG prefix tag; the daemon parses `fw:<tag>:<rule id>` back.
    pub fn tag(self) -> &'static str {
        match self {
            LogKind::Deny => "deny",
            LogKind::Audit => "audit",
            LogKind::Allow => "log",
            LogKind::Cap => "cap",
            LogKind::Block => "block",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub kind: LogKind,
    pub prefix: String,
    pub group: u16,
    /// Bytes of the packet copied to the daemon (from the network header); `None` = nft's
    /// default (the whole packet).
    pub snaplen: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept,
    Drop,
    /// TCP reset for TCP; callers follow it with a `Drop` rule for everything else.
    RejectTcpReset,
    Jump(String),
    Return,
    /// `iif vmap @map`: jump to the chain the map names for the key; no element, no verdict.
    Vmap {
        field: Field,
        map: String,
    },
    /// `meta mark set ct mark queue num N [bypass]`: hand the packet to the daemon on
    /// NFQUEUE `num` and wait for its verdict; the packet mark carries the connection's mark
    /// (which policy flagged it). `bypass`: accept while no daemon listens (fail open).
    Queue {
        num: u16,
        bypass: bool,
    },
}
