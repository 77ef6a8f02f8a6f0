//! The merged, validated policy: what the rule files mean, with every source position kept.

use super::glob::Glob;
use fw_proto::Mode;
use ipnet::IpNet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where something was written: file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePos {
    pub path: Arc<PathBuf>,
    pub line: u32,
    pub col: u32,
    /// Characters of what was written there, on that line (what a diagnostic underlines).
    pub len: u32,
}

impl SourcePos {
    /// `path:line`, the form shown next to verdicts.
    pub fn short(&self) -> String {
        format!("{}:{}", self.path.display(), self.line)
    }
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.col)
    }
}

/// Names that rules may use as a zone but that no file may declare as a container zone.
pub const ZONE_ANY: &str = "any";
pub const ZONE_DEFAULT: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    /// Allow, and record every new connection to NFLOG with the rule id.
    Log,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Log => "log",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub defaults: Defaults,
    /// Container zones in precedence order (declaration order), then external zones; the
    /// implicit `default` zone is always present, last among container zones.
    pub zones: Vec<Zone>,
    pub failsafes: Vec<Rule>,
    /// Policies in evaluation order: files by name, then position in the file.
    pub rules: Vec<Rule>,
    /// Named services (`[service.https]`), in declaration order; rules hold their traffic.
    pub services: Vec<Service>,
    /// sha256 over the rule files' names and bytes, first 16 hex digits.
    pub hash: String,
    pub files: Vec<PathBuf>,
}

impl Policy {
    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    /// The zone a container with this identity belongs to: the first container zone whose
    /// selector matches it, else `default`.
    pub fn zone_of(&self, id: &Identity<'_>) -> &Zone {
        self.zones
            .iter()
            .find(|z| z.selector().is_some_and(|sel| sel.matches(id)))
            .or_else(|| self.zone(ZONE_DEFAULT))
            .expect("the loader always adds the default zone")
    }
}

#[derive(Debug, Clone)]
pub struct Defaults {
    pub action: Action,
    pub mode: Mode,
    /// What flagged flows do while no daemon answers their inspection (`inspect_fail`).
    pub inspect_fail: InspectFail,
    /// Where the defaults were set, if a file set them.
    pub pos: Option<SourcePos>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { action: Action::Deny, mode: Mode::Enforce, inspect_fail: InspectFail::Closed, pos: None }
    }
}

#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    /// `None` for the implicit default zone.
    pub pos: Option<SourcePos>,
    pub kind: ZoneKind,
    pub mode: Mode,
    pub caps: Caps,
    pub description: Option<String>,
    /// `forward = true`: members may route packets through their namespace (a nested
    /// namespace, a VPN); routed packets then meet the zone's egress policy. Off by
    /// default: a container is an endpoint, and its forward hook drops.
    pub forward: bool,
}

impl Zone {
    /// Only external networks: no container can be in it.
    pub fn is_external(&self) -> bool {
        matches!(self.kind, ZoneKind::External(_))
    }

    /// The selector of its containers; `None` for a zone of external networks only.
    pub fn selector(&self) -> Option<&Selector> {
        match &self.kind {
            ZoneKind::Containers(s) | ZoneKind::Mixed(s, _) => Some(s),
            ZoneKind::External(_) => None,
        }
    }

    /// Its external networks, aggregated; empty for a zone of containers only.
    pub fn cidrs(&self) -> &[IpNet] {
        match &self.kind {
            ZoneKind::External(n) | ZoneKind::Mixed(_, n) => n,
            ZoneKind::Containers(_) => &[],
        }
    }
}

#[derive(Debug, Clone)]
pub enum ZoneKind {
    /// Containers picked by a selector. The default zone has `Selector::default()` and is only
    /// used for containers no other zone picks.
    Containers(Selector),
    /// Addresses outside fw's control (partners, the internet, a resolver): aggregated CIDRs.
    External(Vec<IpNet>),
    /// Both: the containers a selector picks and networks outside fw's control (a tier
    /// with legacy hosts beside its containers). Its peers are matched on either.
    Mixed(Selector, Vec<IpNet>),
}

/// Picks containers. Every present criterion must hold; a list holds when any entry matches.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub names: Vec<Glob>,
    pub images: Vec<Glob>,
    pub labels: Vec<(String, Glob)>,
    /// Kubernetes namespaces (`match.namespace`): only pods have one.
    pub namespaces: Vec<Glob>,
    /// Labels of the pod's Kubernetes namespace (`match.namespace_labels`).
    pub namespace_labels: Vec<(String, Glob)>,
}

/// What a selector sees of a container.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub labels: &'a [(String, String)],
    /// A pod's Kubernetes namespace and that namespace's labels; `None` for Docker and
    /// inventory containers, which no namespace selector matches.
    pub kube: Option<(&'a str, &'a [(String, String)])>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.images.is_empty()
            && self.labels.is_empty()
            && self.namespaces.is_empty()
            && self.namespace_labels.is_empty()
    }

    /// Whether it selects by Kubernetes namespace (so only pods can match it).
    pub fn by_namespace(&self) -> bool {
        !self.namespaces.is_empty() || !self.namespace_labels.is_empty()
    }

    pub fn matches(&self, id: &Identity<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        let any = |globs: &[Glob], s: &str| globs.is_empty() || globs.iter().any(|g| g.matches(s));
        let all = |want: &[(String, Glob)], have: &[(String, String)]| {
            want.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && v.matches(hv)))
        };
        let kube = match id.kube {
            Some((ns, ns_labels)) => any(&self.namespaces, ns) && all(&self.namespace_labels, ns_labels),
            None => !self.by_namespace(),
        };
        any(&self.names, id.name) && any(&self.images, id.image) && all(&self.labels, id.labels) && kube
    }

    /// Whether the two selectors constrain a common criterion (name, image or a label key)
    /// and every such common criterion can match the same container. Selectors on disjoint
    /// criteria (one by name, one by label) are left to the inventory check, which can name
    /// the container that really matches both; warning on them statically would fire on
    /// almost every real rule set.
    pub fn may_overlap(&self, other: &Selector) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        let mut shared = 0;
        let mut lists = |a: &[Glob], b: &[Glob]| {
            if a.is_empty() || b.is_empty() {
                return true;
            }
            shared += 1;
            a.iter().any(|x| b.iter().any(|y| x.intersects(y)))
        };
        let names = lists(&self.names, &other.names);
        let images = lists(&self.images, &other.images);
        let namespaces = lists(&self.namespaces, &other.namespaces);
        let mut labels = true;
        for (mine, theirs) in
            [(&self.labels, &other.labels), (&self.namespace_labels, &other.namespace_labels)]
        {
            for (k, v) in mine {
                for (_, ov) in theirs.iter().filter(|(ok, _)| ok == k) {
                    shared += 1;
                    labels &= v.intersects(ov);
                }
            }
        }
        shared > 0 && names && images && namespaces && labels
    }
}

/// Per-zone caps, enforced in each member container's namespace on what it originates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub max_conns: Option<u32>,
    pub new_conns_per_sec: Option<u32>,
    pub egress_bytes_per_sec: Option<u64>,
    /// `egress_bytes_per_sec` as written (`"80mbit"`) when it was a string: what operators
    /// see, rather than a byte count converted back.
    pub egress_written: Option<String>,
}

impl Caps {
    pub fn is_empty(&self) -> bool {
        *self == Caps::default()
    }
}

/// Which transport protocols a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Protos {
    pub tcp: bool,
    pub udp: bool,
    pub icmp: bool,
}

impl Protos {
    pub const ANY: Protos = Protos { tcp: true, udp: true, icmp: true };

    /// Whether it covers a protocol with ports (tcp or udp).
    pub fn has_ports(&self) -> bool {
        self.tcp || self.udp
    }

    pub fn is_empty(&self) -> bool {
        !self.tcp && !self.udp && !self.icmp
    }

    pub fn is_any(&self) -> bool {
        *self == Protos::ANY
    }

    pub fn contains(&self, other: &Protos) -> bool {
        (self.tcp || !other.tcp) && (self.udp || !other.udp) && (self.icmp || !other.icmp)
    }

    /// The protocols both cover.
    pub fn and(&self, other: &Protos) -> Protos {
        Protos { tcp: self.tcp && other.tcp, udp: self.udp && other.udp, icmp: self.icmp && other.icmp }
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.tcp {
            v.push("tcp");
        }
        if self.udp {
            v.push("udp");
        }
        if self.icmp {
            v.push("icmp");
        }
        v
    }
}

impl fmt::Display for Protos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("any")
        } else {
            f.write_str(&self.names().join("+"))
        }
    }
}

/// An inclusive port range; a single port has `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Sorted, merged port ranges; empty means "any port".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Ports(pub Vec<PortRange>);

impl Ports {
    pub fn new(mut ranges: Vec<PortRange>) -> Ports {
        ranges.sort();
        let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match out.last_mut() {
                Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
                _ => out.push(r),
            }
        }
        Ports(out)
    }

    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.is_any() || self.0.iter().any(|r| r.contains(port))
    }

    /// Whether some port is in both.
    pub fn intersects(&self, other: &Ports) -> bool {
        self.is_any()
            || other.is_any()
            || self.0.iter().any(|a| other.0.iter().any(|b| a.lo <= b.hi && b.lo <= a.hi))
    }

    /// Whether every port in `other` is also in `self`.
    pub fn covers(&self, other: &Ports) -> bool {
        if self.is_any() {
            return true;
        }
        if other.is_any() {
            return false;
        }
        other.0.iter().all(|o| self.0.iter().any(|s| s.lo <= o.lo && o.hi <= s.hi))
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            return f.write_str("any");
        }
        let parts: Vec<String> = self.0.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// One ICMP message type by name, with its number in ICMP (IPv4) and ICMPv6, where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpType {
    /// nft's name for it (`echo-request`).
    pub name: &'static str,
    pub v4: Option<u8>,
    pub v6: Option<u8>,
}

/// The ICMP types a rule may name: nft's names, one entry for a type both versions have.
pub const ICMP_TYPES: &[IcmpType] = &[
    IcmpType { name: "echo-request", v4: Some(8), v6: Some(128) },
    IcmpType { name: "echo-reply", v4: Some(0), v6: Some(129) },
    IcmpType { name: "destination-unreachable", v4: Some(3), v6: Some(1) },
    IcmpType { name: "time-exceeded", v4: Some(11), v6: Some(3) },
    IcmpType { name: "parameter-problem", v4: Some(12), v6: Some(4) },
    IcmpType { name: "packet-too-big", v4: None, v6: Some(2) },
    IcmpType { name: "source-quench", v4: Some(4), v6: None },
    IcmpType { name: "redirect", v4: Some(5), v6: None },
    IcmpType { name: "router-advertisement", v4: Some(9), v6: None },
    IcmpType { name: "router-solicitation", v4: Some(10), v6: None },
    IcmpType { name: "timestamp-request", v4: Some(13), v6: None },
    IcmpType { name: "timestamp-reply", v4: Some(14), v6: None },
    IcmpType { name: "info-request", v4: Some(15), v6: None },
    IcmpType { name: "info-reply", v4: Some(16), v6: None },
    IcmpType { name: "address-mask-request", v4: Some(17), v6: None },
    IcmpType { name: "address-mask-reply", v4: Some(18), v6: None },
    IcmpType { name: "mld-listener-query", v4: None, v6: Some(130) },
    IcmpType { name: "mld-listener-report", v4: None, v6: Some(131) },
    IcmpType { name: "mld-listener-done", v4: None, v6: Some(132) },
    IcmpType { name: "nd-router-solicit", v4: None, v6: Some(133) },
    IcmpType { name: "nd-router-advert", v4: None, v6: Some(134) },
    IcmpType { name: "nd-neighbor-solicit", v4: None, v6: Some(135) },
    IcmpType { name: "nd-neighbor-advert", v4: None, v6: Some(136) },
    IcmpType { name: "nd-redirect", v4: None, v6: Some(137) },
    IcmpType { name: "mld2-listener-report", v4: None, v6: Some(143) },
];

impl IcmpType {
    /// By name, ignoring case.
    pub fn named(name: &str) -> Option<IcmpType> {
        ICMP_TYPES.iter().find(|t| t.name.eq_ignore_ascii_case(name)).copied()
    }

    /// Its number in ICMP (`v6: false`) or ICMPv6.
    pub fn number(&self, v6: bool) -> Option<u8> {
        if v6 {
            self.v6
        } else {
            self.v4
        }
    }
}

/// ICMP types a rule covers, sorted and without duplicates; empty means every type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct IcmpTypes(pub Vec<&'static str>);

impl IcmpTypes {
    pub fn new(mut types: Vec<IcmpType>) -> IcmpTypes {
        // In the table's order (echo first), so ids and plans read naturally.
        types.sort_by_key(|t| ICMP_TYPES.iter().position(|x| x.name == t.name));
        types.dedup();
        IcmpTypes(types.into_iter().map(|t| t.name).collect())
    }

    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// The type numbers in ICMP (`v6: false`) or ICMPv6; empty when none of them exists there.
    pub fn numbers(&self, v6: bool) -> Vec<u8> {
        self.0.iter().filter_map(|n| IcmpType::named(n)?.number(v6)).collect()
    }

    pub fn covers(&self, other: &IcmpTypes) -> bool {
        self.is_any() || (!other.is_any() && other.0.iter().all(|t| self.0.contains(t)))
    }

    pub fn intersects(&self, other: &IcmpTypes) -> bool {
        self.is_any() || other.is_any() || self.0.iter().any(|t| other.0.contains(t))
    }
}

impl fmt::Display for IcmpTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("any")
        } else {
            f.write_str(&self.0.join(","))
        }
    }
}

/// What traffic a rule or a service covers: protocols, destination ports (tcp and udp)
/// and ICMP types (icmp).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Traffic {
    pub protos: Protos,
    /// Empty: every port. Only with tcp or udp, never with icmp.
    pub ports: Ports,
    /// Empty: every type. Only with icmp.
    pub icmp: IcmpTypes,
}

impl Traffic {
    pub const ANY: Traffic =
        Traffic { protos: Protos::ANY, ports: Ports(Vec::new()), icmp: IcmpTypes(Vec::new()) };

    pub fn is_any(&self) -> bool {
        self.protos.is_any() && self.ports.is_any() && self.icmp.is_any()
    }

    /// Whether every packet `other` matches, this matches too.
    pub fn covers(&self, other: &Traffic) -> bool {
        self.protos.contains(&other.protos)
            && (!other.protos.has_ports() || self.ports.covers(&other.ports))
            && (!other.protos.icmp || self.icmp.covers(&other.icmp))
    }

    /// The protocols through which some packet matches both (empty: none).
    pub fn shared(&self, other: &Traffic) -> Protos {
        let s = self.protos.and(&other.protos);
        let ports = self.ports.intersects(&other.ports);
        Protos { tcp: s.tcp && ports, udp: s.udp && ports, icmp: s.icmp && self.icmp.intersects(&other.icmp) }
    }
}

impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.protos)?;
        if !self.ports.is_any() {
            write!(f, "/{}", self.ports)?;
        }
        if !self.icmp.is_any() {
            write!(f, "/{}", self.icmp)?;
        }
        Ok(())
    }
}

/// `[service.NAME]`: a named protocol and ports that policies refer to.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub pos: SourcePos,
    pub traffic: Traffic,
    pub description: Option<String>,
}

/// The zones a rule's `from` or `to` names: one or more, or `any` alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneRefs(pub Vec<String>);

impl ZoneRefs {
    pub fn one(name: impl Into<String>) -> ZoneRefs {
        ZoneRefs(vec![name.into()])
    }

    pub fn is_any(&self) -> bool {
        self.0.iter().any(|z| z == ZONE_ANY)
    }

    /// Whether traffic of `zone` is covered: it is listed, or `any` is.
    pub fn includes(&self, zone: &str) -> bool {
        self.0.iter().any(|z| z == zone || z == ZONE_ANY)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for ZoneRefs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// One policy or failsafe.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub pos: SourcePos,
    pub from: ZoneRefs,
    pub to: ZoneRefs,
    /// What it matches: one entry per service it names, or the one written inline
    /// (`proto`, `ports`, `icmp_types`). Never empty.
    pub traffic: Vec<Traffic>,
    /// The services it names, in order (empty when the traffic is written inline).
    pub services: Vec<String>,
    pub action: Action,
    pub inspect: Option<Inspect>,
    /// Unix seconds after which the rule no longer applies.
    pub expires: Option<i64>,
    pub description: Option<String>,
}

impl Rule {
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProto {
    Tls,
    Http,
    Dns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnViolation {
    Alert,
    Cut,
    Quarantine,
}

/// What a flagged flow's first packets do while no daemon can judge them (daemon stopped,
/// or its queue full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InspectFail {
    /// Dropped: nothing of the flow passes unjudged.
    #[default]
    Closed,
    /// Let through uninspected.
    Open,
}

/// Inspection of a flow's first packets: held in the kernel until the engine decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspect {
    pub protocol: Option<AppProto>,
    pub tls_sni: Vec<String>,
    pub http_host: Vec<String>,
    pub dns_names: Vec<String>,
    pub on_violation: OnViolation,
    /// Payload packets judged at most: a flow still undecided after them is a violation.
    pub max_packets: u8,
    /// How long the first payload may wait for a verdict: undecided by then is a violation.
    pub timeout_ms: u32,
    /// `fail` in the policy; `None`: the `[defaults]` `inspect_fail`.
    pub fail: Option<InspectFail>,
}

impl Inspect {
    /// The policy's fail mode, given the defaults.
    pub fn fail_mode(&self, defaults: &Defaults) -> InspectFail {
        self.fail.unwrap_or(defaults.inspect_fail)
    }
}
