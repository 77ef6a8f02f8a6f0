//! Operator blocks: what responders asked to cut, and the set elements that cut it.
//!
//! Pure: the daemon keeps a `BlockList` (persisted in the state directory), and the compiler
//! turns it into per-container set elements (`for_container`) that sit before the
//! established-flow shortcut in every table, so a block stops live connections too. Blocks
//! with a TTL carry their expiry into the kernel as element timeouts: they lapse on time
//! even while the daemon is down.
//!
//! Quarantine cuts connections by who opened them, as conntrack records it: `egress` the
//! connections the container opens (`quarantine_out`: it cannot start anything, while it
//! still answers connections peers open to it), `ingress` the ones opened to it
//! (`quarantine_in`), `both` everything. Each cut connection is cut both ways, established
//! ones included (see `compile::Builder::quarantine_chain`, and `floor::compile` for the
//! host side). It keeps loopback (the rule before it), so processes inside keep working for
//! forensics.
//! The daemon itself needs nothing through the container's network: it reaches the
//! namespace over netlink from the host.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fw_proto::control::{BlockDirection, BlockInfo, BlockOrigin, BlockTarget, Proto, Scope};
use serde::{Deserialize, Serialize};

use crate::ruleset::ir::{BlockRange, Family};

/// Times are unix milliseconds: a TTL counts from the instant the block was placed, so a
/// block never lapses early (whole seconds cut up to one second off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredBlock")]
pub struct Block {
    pub id: u64,
    pub target: BlockTarget,
    pub reason: Option<String>,
    pub created_ms: i64,
    /// None: until unblocked.
    pub expires_ms: Option<i64>,
    pub created_by: String,
    pub flows_cut: u64,
    pub origin: BlockOrigin,
}

/// `blocks.json` as any version wrote it: before milliseconds, times were whole seconds
/// (`created_at`, `expires_at`).
#[derive(Deserialize)]
struct StoredBlock {
    id: u64,
    target: BlockTarget,
    reason: Option<String>,
    #[serde(default)]
    created_ms: Option<i64>,
    #[serde(default)]
    expires_ms: Option<i64>,
    #[serde(default)]
    created_at: Option<i64>,
    #[serde(default)]
    expires_at: Option<i64>,
    created_by: String,
    #[serde(default)]
    flows_cut: u64,
    /// Before origins were kept: an operator's.
    #[serde(default)]
    origin: BlockOrigin,
}

impl From<StoredBlock> for Block {
    fn from(s: StoredBlock) -> Block {
        let ms = |secs: Option<i64>| secs.map(|t| t.saturating_mul(1000));
        Block {
            id: s.id,
            target: s.target,
            reason: s.reason,
            created_ms: s.created_ms.or(ms(s.created_at)).unwrap_or(0),
            expires_ms: s.expires_ms.or(ms(s.expires_at)),
            created_by: s.created_by,
            flows_cut: s.flows_cut,
            origin: s.origin,
        }
    }
}

impl Block {
    pub fn info(&self, containers: Vec<String>) -> BlockInfo {
        BlockInfo {
            id: self.id,
            target: self.target.clone(),
            reason: self.reason.clone(),
            created_at_ms: self.created_ms,
            expires_at_ms: self.expires_ms,
            created_by: self.created_by.clone(),
            containers,
            flows_cut: self.flows_cut,
            origin: self.origin,
        }
    }

    fn expires_ms(&self) -> Option<i64> {
        self.expires_ms
    }

    /// Whether this block applies to `container` (in `zone`).
    pub fn applies_to(&self, container: &str, zone: &str) -> bool {
        match &self.target {
            BlockTarget::Quarantine { container: c, .. } | BlockTarget::Flow { container: c, .. } => {
                c == container
            }
            BlockTarget::Destination { scope: Scope::Container(c), .. } => c == container,
            BlockTarget::Destination { scope: Scope::Zone(z), .. } => z == zone,
            BlockTarget::Destination { scope: Scope::All, .. } => true,
        }
    }

    /// The elements this block puts in one container's sets.
    pub fn elements(&self) -> ContainerBlocks {
        let mut cb = ContainerBlocks::default();
        let exp = self.expires_ms();
        match &self.target {
            BlockTarget::Quarantine { direction, .. } => {
                for f in [Family::V4, Family::V6] {
                    if matches!(direction, BlockDirection::Egress | BlockDirection::Both) {
                        merge(&mut cb.quarantine_out, f, exp);
                    }
                    if matches!(direction, BlockDirection::Ingress | BlockDirection::Both) {
                        merge(&mut cb.quarantine_in, f, exp);
                    }
                }
            }
            BlockTarget::Destination { net, proto, port, .. } => {
                let dst = (net.network(), net.broadcast());
                let r = BlockRange {
                    src: any_addr(Family::of(&dst.0)),
                    dst,
                    proto: proto.map_or((0, u8::MAX), |p| (p.number(), p.number())),
                    sport: (0, u16::MAX),
                    dport: port.map_or((0, u16::MAX), |p| (p, p)),
                };
                merge(&mut cb.egress, r, exp);
            }
            BlockTarget::Flow { proto, src, sport, dst, dport, .. } => {
                let p = proto.number();
                // A protocol without ports (ICMP, say) has none to match: the range covers
                // every value, which puts the element in the address-only set.
                let (sp, dp) = if proto.has_ports() {
                    ((*sport, *sport), (*dport, *dport))
                } else {
                    ((0, u16::MAX), (0, u16::MAX))
                };
                let fwd =
                    BlockRange { src: (*src, *src), dst: (*dst, *dst), proto: (p, p), sport: sp, dport: dp };
                let rev = BlockRange {
                    src: fwd.dst,
                    dst: fwd.src,
                    proto: fwd.proto,
                    sport: fwd.dport,
                    dport: fwd.sport,
                };
                for r in [fwd, rev] {
                    merge(&mut cb.egress, r, exp);
                    merge(&mut cb.ingress, r, exp);
                }
            }
        }
        cb
    }
}

pub(crate) fn any_addr(f: Family) -> (IpAddr, IpAddr) {
    match f {
        Family::V4 => (Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::BROADCAST.into()),
        Family::V6 => (Ipv6Addr::UNSPECIFIED.into(), Ipv6Addr::from(u128::MAX).into()),
    }
}

/// An element wanted by several blocks lasts as long as the longest (none = forever).
fn merge<K: Ord>(map: &mut BTreeMap<K, Option<i64>>, k: K, exp: Option<i64>) {
    map.entry(k)
        .and_modify(|e| {
            *e = match (*e, exp) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            }
        })
        .or_insert(exp);
}

/// Set elements for one container, each with its expiry (unix ms; none = until unblocked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerBlocks {
    pub quarantine_out: BTreeMap<Family, Option<i64>>,
    pub quarantine_in: BTreeMap<Family, Option<i64>>,
    /// Checked in the egress chain, against packets the container sends.
    pub egress: BTreeMap<BlockRange, Option<i64>>,
    /// Checked in the ingress chain, against packets it receives.
    pub ingress: BTreeMap<BlockRange, Option<i64>>,
}

impl ContainerBlocks {
    fn absorb(&mut self, o: ContainerBlocks) {
        for (k, e) in o.quarantine_out {
            merge(&mut self.quarantine_out, k, e);
        }
        for (k, e) in o.quarantine_in {
            merge(&mut self.quarantine_in, k, e);
        }
        for (k, e) in o.egress {
            merge(&mut self.egress, k, e);
        }
        for (k, e) in o.ingress {
            merge(&mut self.ingress, k, e);
        }
    }

    /// Whether some packet one of these elements cuts, one of `o`'s cuts too: quarantines
    /// of the same kind and family, or overlapping ranges in the same chain (a quarantine
    /// meets every range of its family).
    fn meets(&self, o: &ContainerBlocks) -> bool {
        let quarantined = |q: &BTreeMap<Family, Option<i64>>, r: &BTreeMap<BlockRange, Option<i64>>| {
            r.keys().any(|b| q.contains_key(&b.family()))
        };
        self.quarantine_out.keys().any(|f| o.quarantine_out.contains_key(f))
            || self.quarantine_in.keys().any(|f| o.quarantine_in.contains_key(f))
            || quarantined(&self.quarantine_out, &o.egress)
            || quarantined(&self.quarantine_out, &o.ingress)
            || quarantined(&self.quarantine_in, &o.egress)
            || quarantined(&self.quarantine_in, &o.ingress)
            || quarantined(&o.quarantine_out, &self.egress)
            || quarantined(&o.quarantine_out, &self.ingress)
            || quarantined(&o.quarantine_in, &self.egress)
            || quarantined(&o.quarantine_in, &self.ingress)
            || [(&self.egress, &o.egress), (&self.ingress, &o.ingress)]
                .iter()
                .any(|(a, b)| a.keys().any(|x| b.keys().any(|y| x.overlaps(y))))
    }

    /// A range here that overlaps a different range in `o` (same chain).
    fn overlap_with(&self, o: &ContainerBlocks) -> Option<(BlockRange, BlockRange)> {
        for (mine, theirs) in [(&self.egress, &o.egress), (&self.ingress, &o.ingress)] {
            for a in mine.keys() {
                if let Some(b) = theirs.keys().find(|b| *b != a && a.overlaps(b)) {
                    return Some((*a, *b));
                }
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlockError {
    #[error("{0}")]
    Invalid(String),
    #[error("overlaps block {id} ({target}) in container {container}: unblock it first, or block a range that does not overlap")]
    Overlap { id: u64, target: String, container: String },
    #[error("no block with id {0}")]
    NotFound(u64),
    #[error("already blocked by block {id} ({target}): unblock it first to change its TTL or reason")]
    Duplicate { id: u64, target: String },
}

/// Who places a block: the name shown (`root (uid 0)`, the daemon's part) and the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct By {
    pub name: String,
    pub origin: BlockOrigin,
}

impl By {
    pub fn operator(name: String) -> By {
        By { name, origin: BlockOrigin::Operator }
    }
}

/// A block's time to live as the request gave it: whole seconds (`ttl_secs`, what every
/// console sends) or milliseconds (`ttl_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Secs(u64),
    Ms(u64),
}

impl Ttl {
    /// From a request's two optional fields; both at once is a mistake, not a choice.
    pub fn from_request(secs: Option<u64>, ms: Option<u64>) -> Result<Option<Ttl>, BlockError> {
        match (secs, ms) {
            (Some(_), Some(_)) => Err(BlockError::Invalid("give ttl_secs or ttl_ms, not both".into())),
            (Some(s), None) => Ok(Some(Ttl::Secs(s))),
            (None, Some(m)) => Ok(Some(Ttl::Ms(m))),
            (None, None) => Ok(None),
        }
    }

    pub fn ms(self) -> u64 {
        match self {
            Ttl::Secs(s) => s.saturating_mul(1000),
            Ttl::Ms(m) => m,
        }
    }
}

/// Shorter TTLs would lapse before the answer reaches the operator.
pub const MIN_TTL_MS: u64 = 100;
/// Ten years: beyond that, "until unblocked" is what was meant.
pub const MAX_TTL_MS: u64 = 10 * 365 * 86_400_000;

/// Every active block; persisted as JSON in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockList {
    next_id: u64,
    active: Vec<Block>,
}

impl BlockList {
    pub fn active(&self) -> &[Block] {
        &self.active
    }

    pub fn get(&self, id: u64) -> Option<&Block> {
        self.active.iter().find(|b| b.id == id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Block> {
        self.active.iter_mut().find(|b| b.id == id)
    }

    /// Removes and returns the blocks that expired by `now_ms` (unix milliseconds).
    pub fn expire(&mut self, now_ms: i64) -> Vec<Block> {
        let (gone, keep) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|b| b.expires_ms.is_some_and(|e| e <= now_ms));
        self.active = keep;
        gone
    }

    /// Checks and adds a block. `containers` are (name, zone) of every known container: the
    /// block must apply to at least one target that exists, and must not overlap another
    /// block's different range in any of them (the kernel's range sets refuse that, and a
    /// table that cannot be rebuilt would be worse than a refused block).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        target: BlockTarget,
        ttl: Option<Ttl>,
        reason: Option<String>,
        created_by: String,
        origin: BlockOrigin,
        now_ms: i64,
        containers: &[(String, String)],
    ) -> Result<&Block, BlockError> {
        validate(&target)?;
        // One that lapsed already (the kernel let its elements go; the daemon's next tick
        // drops it) is no duplicate.
        let live = |b: &&Block| b.expires_ms.is_none_or(|e| e > now_ms);
        if let Some(same) = self.active.iter().filter(live).find(|b| b.target == target) {
            return Err(BlockError::Duplicate { id: same.id, target: same.target.to_string() });
        }
        let ttl_ms = match ttl {
            Some(t) if t.ms() < MIN_TTL_MS => {
                return Err(BlockError::Invalid(format!("ttl must be at least {MIN_TTL_MS} ms")))
            }
            Some(t) => Some(t.ms().min(MAX_TTL_MS) as i64),
            None => None,
        };
        let block = Block {
            id: self.next_id.max(1),
            target,
            reason: reason.map(|r| r.chars().take(500).collect()),
            created_ms: now_ms,
            expires_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
            created_by,
            flows_cut: 0,
            origin,
        };
        let hits: Vec<&(String, String)> =
            containers.iter().filter(|(c, z)| block.applies_to(c, z)).collect();
        match &block.target {
            BlockTarget::Quarantine { container, .. }
            | BlockTarget::Flow { container, .. }
            | BlockTarget::Destination { scope: Scope::Container(container), .. }
                if hits.is_empty() =>
            {
                let names: Vec<&str> = containers.iter().map(|(c, _)| c.as_str()).collect();
                return Err(BlockError::Invalid(format!(
                    "no container named {container:?}{}",
                    did_you_mean(container, &names)
                )));
            }
            BlockTarget::Destination { scope: Scope::Zone(z), .. } if hits.is_empty() => {
                let mut zones: Vec<&str> = containers.iter().map(|(_, z)| z.as_str()).collect();
                zones.sort_unstable();
                zones.dedup();
                return Err(BlockError::Invalid(format!(
                    "no container is in zone {z:?}{}",
                    did_you_mean(z, &zones)
                )));
            }
            _ => {}
        }
        let mine = block.elements();
        for (c, z) in &hits {
            for other in self.active.iter().filter(|b| b.applies_to(c, z)) {
                if mine.overlap_with(&other.elements()).is_some() {
                    return Err(BlockError::Overlap {
                        id: other.id,
                        target: other.target.to_string(),
                        container: c.clone(),
                    });
                }
            }
        }
        self.next_id = block.id + 1;
        self.active.push(block);
        Ok(self.active.last().expect("just pushed"))
    }

    /// The active blocks that still cut some of what `lifted` cut: they apply to a
    /// container it applied to, and their elements meet its elements there.
    pub fn still_applying(&self, lifted: &Block, containers: &[(String, String)]) -> Vec<&Block> {
        let gone = lifted.elements();
        self.active
            .iter()
            .filter(|b| b.id != lifted.id)
            .filter(|b| {
                containers.iter().any(|(c, z)| lifted.applies_to(c, z) && b.applies_to(c, z))
                    && b.elements().meets(&gone)
            })
            .collect()
    }

    pub fn remove(&mut self, id: u64) -> Result<Block, BlockError> {
        let i = self.active.iter().position(|b| b.id == id).ok_or(BlockError::NotFound(id))?;
        Ok(self.active.remove(i))
    }

    /// The merged elements of every block that applies to `container` in `zone`.
    /// The elements for containers sharing one namespace: every block of any of them.
    pub fn for_containers(&self, members: &[(String, String)]) -> ContainerBlocks {
        let mut cb = ContainerBlocks::default();
        for b in self.active.iter().filter(|b| members.iter().any(|(c, z)| b.applies_to(c, z))) {
            cb.absorb(b.elements());
        }
        cb
    }

    pub fn for_container(&self, container: &str, zone: &str) -> ContainerBlocks {
        let mut cb = ContainerBlocks::default();
        for b in self.active.iter().filter(|b| b.applies_to(container, zone)) {
            cb.absorb(b.elements());
        }
        cb
    }
}

/// `; did you mean "web-1"?` when a known name is close to `name`.
fn did_you_mean(name: &str, known: &[&str]) -> String {
    crate::rules::diag::suggest(name, known).map(|s| format!("; did you mean {s:?}?")).unwrap_or_default()
}

fn validate(t: &BlockTarget) -> Result<(), BlockError> {
    match t {
        BlockTarget::Destination { net, .. } if net.trunc() != *net => Err(BlockError::Invalid(format!(
            "{net} has host bits set: did you mean {} (the network) or {}/{} (the host)?",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ))),
        BlockTarget::Destination { port: Some(_), proto: Some(p), .. } if !p.has_ports() => {
            Err(BlockError::Invalid(format!("protocol {p} has no ports")))
        }
        BlockTarget::Flow { src, dst, .. } if Family::of(src) != Family::of(dst) => {
            Err(BlockError::Invalid("a flow's addresses must both be IPv4 or both IPv6".into()))
        }
        BlockTarget::Quarantine { container, .. } | BlockTarget::Flow { container, .. }
            if container.is_empty() =>
        {
            Err(BlockError::Invalid("container name is empty".into()))
        }
        _ => Ok(()),
    }
}

/// Whether a conntrack entry (original direction `src -> dst`) belongs to what `b` cuts in
/// `container` whose addresses are `own`: the entries a new block deletes.
pub fn cuts_flow(
    b: &Block,
    own: &[IpAddr],
    proto: u8,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> bool {
    match &b.target {
        BlockTarget::Quarantine { direction, .. } => {
            // The original direction says who opened it; its own loopback traffic stays.
            let (opened, accepted) = (own.contains(&src), own.contains(&dst));
            if opened && accepted {
                return false;
            }
            match direction {
                BlockDirection::Egress => opened,
                BlockDirection::Ingress => accepted,
                BlockDirection::Both => opened || accepted,
            }
        }
        BlockTarget::Destination { net, proto: p, port, .. } => {
            let peer_hit = |peer: IpAddr, peer_port: u16| {
                net.contains(&peer)
                    && p.is_none_or(|p| p.number() == proto)
                    && port.is_none_or(|x| x == peer_port)
            };
            (own.contains(&src) && peer_hit(dst, dport))
                || (own.contains(&dst) && peer_hit(src, sport) && port.is_none())
        }
        BlockTarget::Flow { proto: p, src: s, sport: sp, dst: d, dport: dp, .. } => {
            p.number() == proto
                && ((src == *s && dst == *d && (!p.has_ports() || (sport == *sp && dport == *dp)))
                    || (src == *d && dst == *s && (!p.has_ports() || (sport == *dp && dport == *sp))))
        }
    }
}

/// Parses a protocol for messages ("tcp"...); re-exported for callers building targets.
pub fn proto(n: u8) -> Proto {
    Proto::from_number(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctrs() -> Vec<(String, String)> {
        vec![("web-1".into(), "web".into()), ("web-2".into(), "web".into()), ("db-1".into(), "db".into())]
    }

    fn dst(scope: Scope, net: &str, port: Option<u16>) -> BlockTarget {
        BlockTarget::Destination { scope, net: net.parse().unwrap(), proto: port.map(|_| Proto::Tcp), port }
    }

    #[test]
    fn scopes_pick_their_containers() {
        let mut l = BlockList::default();
        l.add(
            dst(Scope::Zone("web".into()), "10.9.0.0/16", None),
            None,
            None,
            "t".into(),
            BlockOrigin::Operator,
            0,
            &ctrs(),
        )
        .unwrap();
        assert_eq!(l.for_container("web-1", "web").egress.len(), 1);
        assert!(l.for_container("db-1", "db").egress.is_empty());
        let e = l.add(
            dst(Scope::Zone("nope".into()), "10.9.0.1/32", None),
            None,
            None,
            "t".into(),
            BlockOrigin::Operator,
            0,
            &ctrs(),
        );
        assert!(matches!(e, Err(BlockError::Invalid(_))), "{e:?}");
    }

    #[test]
    fn overlapping_ranges_are_refused_identical_ones_merge() {
        let mut l = BlockList::default();
        let a = l
            .add(
                dst(Scope::All, "10.9.0.0/16", None),
                Some(Ttl::Secs(60)),
                None,
                "t".into(),
                BlockOrigin::Operator,
                100_000,
                &ctrs(),
            )
            .unwrap()
            .id;
        let e = l.add(
            dst(Scope::Container("web-1".into()), "10.9.1.1/32", Some(443)),
            None,
            None,
            "t".into(),
            BlockOrigin::Operator,
            100_000,
            &ctrs(),
        );
        assert!(matches!(e, Err(BlockError::Overlap { id, .. }) if id == a), "{e:?}");
        // The same range again (say with a longer TTL) is one element with the later expiry.
        l.add(
            dst(Scope::Container("web-1".into()), "10.9.0.0/16", None),
            Some(Ttl::Secs(600)),
            None,
            "t".into(),
            BlockOrigin::Operator,
            100_000,
            &ctrs(),
        )
        .unwrap();
        let cb = l.for_container("web-1", "web");
        assert_eq!(cb.egress.values().collect::<Vec<_>>(), vec![&Some(700_000)]);
        // Disjoint ranges coexist.
        l.add(
            dst(Scope::All, "10.10.0.1/32", Some(22)),
            None,
            None,
            "t".into(),
            BlockOrigin::Operator,
            100_000,
            &ctrs(),
        )
        .unwrap();
    }

    #[test]
    fn expiry_and_removal() {
        let mut l = BlockList::default();
        let q = BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Both };
        // Placed 900 ms into a second: a 10 s TTL still lasts 10 s, not 9.1.
        let id = l
            .add(
                q,
                Some(Ttl::Secs(10)),
                Some("exfil".into()),
                "root".into(),
                BlockOrigin::Operator,
                1_000_900,
                &ctrs(),
            )
            .unwrap()
            .id;
        let cb = l.for_container("web-1", "web");
        assert_eq!(cb.quarantine_out.len(), 2);
        assert_eq!(cb.quarantine_in.get(&Family::V4), Some(&Some(1_010_900)));
        assert!(l.expire(1_010_899).is_empty());
        assert_eq!(l.expire(1_010_900).len(), 1);
        assert!(l.remove(id).is_err());
        let e = l.add(
            BlockTarget::Quarantine { container: "ghost".into(), direction: BlockDirection::Egress },
            None,
            None,
            "t".into(),
            BlockOrigin::Operator,
            0,
            &ctrs(),
        );
        assert!(e.is_err());
    }

    #[test]
    fn flows_block_both_orientations_and_match_conntrack() {
        let mut l = BlockList::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let t = BlockTarget::Flow {
            container: "web-1".into(),
            proto: Proto::Tcp,
            src: a,
            sport: 40000,
            dst: b,
            dport: 5432,
        };
        let blk = l.add(t, None, None, "t".into(), BlockOrigin::Operator, 0, &ctrs()).unwrap().clone();
        let cb = l.for_container("web-1", "web");
        assert_eq!((cb.egress.len(), cb.ingress.len()), (2, 2));
        assert!(cuts_flow(&blk, &[a], 6, a, 40000, b, 5432));
        assert!(cuts_flow(&blk, &[a], 6, b, 5432, a, 40000));
        assert!(!cuts_flow(&blk, &[a], 6, a, 40001, b, 5432));
        assert!(!cuts_flow(&blk, &[a], 17, a, 40000, b, 5432));
    }

    #[test]
    fn quarantines_cut_the_connections_of_their_direction_only() {
        let me: IpAddr = "10.0.0.2".parse().unwrap();
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let q = |direction| Block {
            id: 1,
            target: BlockTarget::Quarantine { container: "web-1".into(), direction },
            reason: None,
            created_ms: 0,
            expires_ms: None,
            created_by: String::new(),
            flows_cut: 0,
            origin: BlockOrigin::Operator,
        };
        let own = [me];
        // (it opened one to the peer, the peer opened one to it, its own loopback)
        let cut = |b: &Block| {
            (
                cuts_flow(b, &own, 6, me, 40000, peer, 443),
                cuts_flow(b, &own, 6, peer, 50000, me, 80),
                cuts_flow(b, &own, 6, me, 1, me, 2)
                    || cuts_flow(
                        b,
                        &own,
                        6,
                        "127.0.0.1".parse().unwrap(),
                        1,
                        "127.0.0.1".parse().unwrap(),
                        2,
                    ),
            )
        };
        assert_eq!(cut(&q(BlockDirection::Egress)), (true, false, false));
        assert_eq!(cut(&q(BlockDirection::Ingress)), (false, true, false));
        assert_eq!(cut(&q(BlockDirection::Both)), (true, true, false));
    }

    #[test]
    fn destination_blocks_cut_matching_conntrack_entries() {
        let own: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap()];
        let b = Block {
            id: 1,
            target: dst(Scope::All, "10.0.0.0/24", Some(443)),
            reason: None,
            created_ms: 0,
            expires_ms: None,
            created_by: String::new(),
            flows_cut: 0,
            origin: BlockOrigin::Operator,
        };
        let me = own[0];
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(cuts_flow(&b, &own, 6, me, 1234, peer, 443));
        assert!(!cuts_flow(&b, &own, 6, me, 1234, peer, 80));
        assert!(!cuts_flow(&b, &own, 6, me, 1234, "10.0.1.9".parse().unwrap(), 443));
    }

    #[test]
    fn a_second_identical_block_is_refused_and_lifting_says_what_still_applies() {
        let mut l = BlockList::default();
        let q = |direction| BlockTarget::Quarantine { container: "web-1".into(), direction };
        let add = |l: &mut BlockList, t: BlockTarget| {
            l.add(t, None, None, "t".into(), BlockOrigin::Operator, 0, &ctrs()).map(|b| b.id)
        };
        let egress = add(&mut l, q(BlockDirection::Egress)).unwrap();
        let e = add(&mut l, q(BlockDirection::Egress)).unwrap_err();
        assert_eq!(e, BlockError::Duplicate { id: egress, target: "quarantine web-1 (egress)".into() });
        assert!(e.to_string().starts_with("already blocked by block 1 (quarantine web-1 (egress))"), "{e}");
        let both = add(&mut l, q(BlockDirection::Both)).unwrap();
        let ingress_db = add(
            &mut l,
            BlockTarget::Quarantine { container: "db-1".into(), direction: BlockDirection::Ingress },
        )
        .unwrap();
        let lifted = l.remove(egress).unwrap();
        let still: Vec<u64> = l.still_applying(&lifted, &ctrs()).iter().map(|b| b.id).collect();
        assert_eq!(
            still,
            vec![both],
            "db-1's block is another container's; the both-ways one still cuts web-1's"
        );
        let lifted = l.remove(both).unwrap();
        assert!(l.still_applying(&lifted, &ctrs()).is_empty());
        assert!(l.get(ingress_db).is_some());
    }

    #[test]
    fn misspelt_containers_and_zones_get_a_suggestion() {
        let mut l = BlockList::default();
        let e = l
            .add(
                BlockTarget::Quarantine { container: "web1".into(), direction: BlockDirection::Both },
                None,
                None,
                "t".into(),
                BlockOrigin::Operator,
                0,
                &ctrs(),
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "no container named \"web1\"; did you mean \"web-1\"?");
        let e = l
            .add(
                dst(Scope::Zone("wbe".into()), "10.0.0.0/8", None),
                None,
                None,
                "t".into(),
                BlockOrigin::Operator,
                0,
                &ctrs(),
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "no container is in zone \"wbe\"; did you mean \"web\"?");
    }

    #[test]
    fn survives_a_json_round_trip() {
        let mut l = BlockList::default();
        l.add(
            dst(Scope::All, "fd00::/64", Some(53)),
            Some(Ttl::Ms(5500)),
            None,
            "t".into(),
            BlockOrigin::Operator,
            7,
            &ctrs(),
        )
        .unwrap();
        let back: BlockList = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.active()[0].expires_ms, Some(5507));
    }

    #[test]
    fn blocks_saved_in_seconds_read_back_in_milliseconds() {
        let old = r#"{"next_id":4,"active":[{"id":3,"target":{"kind":"quarantine","container":"web-1","direction":"both"},
            "reason":"x","created_at":1700000000,"expires_at":1700000600,"created_by":"root (uid 0)","flows_cut":2}]}"#;
        let l: BlockList = serde_json::from_str(old).unwrap();
        let b = &l.active()[0];
        assert_eq!(
            (b.created_ms, b.expires_ms, b.flows_cut),
            (1_700_000_000_000, Some(1_700_000_600_000), 2)
        );
        let info = b.info(vec![]);
        assert_eq!((info.created_at_ms, info.expires_at_ms), (1_700_000_000_000, Some(1_700_000_600_000)));
    }

    #[test]
    fn ttls_in_either_unit_and_never_below_the_minimum() {
        assert_eq!(Ttl::from_request(Some(2), None).unwrap().map(Ttl::ms), Some(2000));
        assert_eq!(Ttl::from_request(None, Some(1500)).unwrap().map(Ttl::ms), Some(1500));
        assert!(Ttl::from_request(Some(2), Some(2000)).is_err());
        let mut l = BlockList::default();
        let q = BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Both };
        for bad in [Ttl::Secs(0), Ttl::Ms(0), Ttl::Ms(99)] {
            assert!(
                l.add(q.clone(), Some(bad), None, "t".into(), BlockOrigin::Operator, 0, &ctrs()).is_err(),
                "{bad:?}"
            );
        }
        let b =
            l.add(q, Some(Ttl::Ms(1500)), None, "t".into(), BlockOrigin::Operator, 10_999, &ctrs()).unwrap();
        assert_eq!(b.info(vec![]).expires_at_ms, Some(12_499));
    }
}
