//! Ruleset IR -> one nftnl batch: add, delete, add `table inet fw`, then sets and their
//! elements, chains, and rules. No I/O: the batch is sent by `mod.rs`.

use std::collections::HashMap;
use std::ffi::CString;
use std::net::IpAddr;

use ipnet::IpNet;
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, Counter, Immediate, Ipv4HeaderField, Ipv6HeaderField, Meta,
    NetworkHeaderField, Payload, Register, RejectionType, TransportHeaderField, Verdict as NftVerdict,
};
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook as NftHook, MsgType, NlMsg, Policy, ProtoFamily, Rule,
    Table,
};

use super::sys::{self, Elem, KeyType, RawSet};
use crate::ruleset::ir::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot encode {what}: {why}")]
pub struct BuildError {
    pub what: String,
    pub why: String,
}

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const LOOPBACK_IFINDEX: u32 = 1; // `lo` is always ifindex 1 inside a network namespace

/// A batch and, per message in order, what it was (for error messages).
pub struct Built {
    pub batch: FinalizedBatch,
    pub what: Vec<String>,
}

pub(super) struct Emitter {
    /// The table sets belong to, and its NFPROTO_* family.
    table: CString,
    family: u16,
    batch: Batch,
    what: Vec<String>,
    next_set_id: u32,
    set_ids: HashMap<String, u32>,
}

pub(super) fn cstr(s: &str, what: &str) -> Result<CString, BuildError> {
    CString::new(s).map_err(|_| BuildError { what: what.into(), why: "contains a NUL byte".into() })
}

impl Emitter {
    pub(super) fn new() -> Emitter {
        Emitter::for_table(c"fw", libc::NFPROTO_INET as u16)
    }

    pub(super) fn for_table(table: &std::ffi::CStr, family: u16) -> Emitter {
        Emitter {
            table: table.to_owned(),
            family,
            batch: Batch::new(),
            what: Vec::new(),
            next_set_id: 1,
            set_ids: HashMap::new(),
        }
    }

    pub(super) fn add<T: NlMsg>(&mut self, msg: &T, ty: MsgType, what: impl Into<String>) {
        self.batch.add(msg, ty);
        self.what.push(what.into());
    }

    pub(super) fn finish(self) -> Built {
        Built { batch: self.batch.finalize(), what: self.what }
    }

    /// Emits a set with its elements; returns its transaction id.
    pub(super) fn set(
        &mut self,
        name: &str,
        key: KeyType,
        flags: u32,
        comment: Option<&str>,
        elems: &[Elem],
    ) -> Result<u32, BuildError> {
        let id = self.next_set_id;
        self.next_set_id += 1;
        let mut set =
            RawSet::new(self.family, &self.table, &cstr(name, "set name")?, id, key, flags, comment);
        let what =
            if name.starts_with("__set") { "anonymous set".to_string() } else { format!("set {name}") };
        self.add(&set, MsgType::Add, what.clone());
        for e in elems {
            set.add(e);
        }
        for msg in set.elem_msgs() {
            self.add(&msg, MsgType::Add, format!("elements of {what}"));
        }
        self.set_ids.insert(name.to_string(), id);
        Ok(id)
    }

    /// Element additions or removals on an existing named set (incremental updates).
    pub(super) fn elements(
        &mut self,
        name: &str,
        key: KeyType,
        elems: &[Elem],
        ty: MsgType,
    ) -> Result<(), BuildError> {
        let mut set = RawSet::new(self.family, &self.table, &cstr(name, "set name")?, 0, key, 0, None);
        for e in elems {
            set.add(e);
        }
        let verb = if ty == MsgType::Add { "add to" } else { "remove from" };
        for msg in set.elem_msgs() {
            self.add(&msg, ty, format!("{verb} set {name}"));
        }
        Ok(())
    }
}

pub fn key_type(k: SetKey) -> KeyType {
    match k {
        SetKey::Ipv4 => KeyType::Ipv4,
        SetKey::Ipv6 => KeyType::Ipv6,
        SetKey::NfProto => KeyType::NfProto,
        SetKey::Block(Family::V4) => KeyType::Block4,
        SetKey::Block(Family::V6) => KeyType::Block6,
    }
}

/// Unix milliseconds now: element timeouts are relative, expiries absolute.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The kernel timeout for an element expiring at `expires` (unix ms); `Err` when it already
/// expired (the element is left out).
pub fn remaining(expires: Option<&i64>, now_ms: i64) -> Result<Option<u64>, ()> {
    match expires {
        None => Ok(None),
        Some(&at) if at > now_ms => Ok(Some((at - now_ms) as u64)),
        Some(_) => Err(()),
    }
}

/// A block element: the start and end keys, each field padded to whole registers.
fn block_keys(b: &BlockRange) -> (Vec<u8>, Vec<u8>) {
    fn pad(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(bytes);
        out.resize(out.len() + (4 - bytes.len() % 4) % 4, 0);
    }
    let mut lo = Vec::with_capacity(44);
    let mut hi = Vec::with_capacity(44);
    for (v, (a, z)) in [(&mut lo, (b.src.0, b.dst.0)), (&mut hi, (b.src.1, b.dst.1))] {
        pad(v, &addr_bytes(&a));
        pad(v, &addr_bytes(&z));
    }
    pad(&mut lo, &[b.proto.0]);
    pad(&mut hi, &[b.proto.1]);
    pad(&mut lo, &b.sport.0.to_be_bytes());
    pad(&mut hi, &b.sport.1.to_be_bytes());
    pad(&mut lo, &b.dport.0.to_be_bytes());
    pad(&mut hi, &b.dport.1.to_be_bytes());
    (lo, hi)
}

/// One element as the kernel takes it, with its remaining timeout (`None`: expired).
pub fn elem_with_timeout(e: &SetElem, expires: Option<&i64>, now_ms: i64) -> Option<Elem> {
    let timeout_ms = remaining(expires, now_ms).ok()?;
    Some(match e {
        SetElem::Block(b) => {
            let (lo, hi) = block_keys(b);
            Elem { key: lo, key_end: Some(hi), flags: 0, timeout_ms }
        }
        other => Elem { key: elem_key(other), key_end: None, flags: 0, timeout_ms },
    })
}

fn addr_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// Big-endian `n + 1` over `len` bytes, or None on overflow (the range ends at the maximum).
fn successor(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = bytes.to_vec();
    for b in out.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(out);
        }
    }
    None
}

/// Interval encoding as the kernel's rbtree sets expect: a start element per range and an
/// end element (flagged) one past its last key; a leading end element at zero, as nft does.
pub fn interval_elems(ranges: &[(Vec<u8>, Vec<u8>)], timeout_ms: Option<u64>) -> Vec<Elem> {
    let mut out = Vec::with_capacity(ranges.len() * 2 + 1);
    if let Some((first, _)) = ranges.first() {
        if first.iter().any(|b| *b != 0) {
            out.push(Elem {
                key: vec![0; first.len()],
                key_end: None,
                flags: sys::ELEM_INTERVAL_END,
                timeout_ms: None,
            });
        }
    }
    for (lo, hi) in ranges {
        out.push(Elem { key: lo.clone(), key_end: None, flags: 0, timeout_ms });
        if let Some(end) = successor(hi) {
            out.push(Elem { key: end, key_end: None, flags: sys::ELEM_INTERVAL_END, timeout_ms: None });
        }
    }
    out
}

pub fn set_elems(set: &Set) -> Vec<Elem> {
    if set.interval {
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = set
            .elements
            .iter()
            .filter_map(|e| match e {
                SetElem::Net(n) => Some(net_range(n)),
                SetElem::Addr(a) => Some((addr_bytes(a), addr_bytes(a))),
                SetElem::NfProto(_) | SetElem::Block(_) => None,
            })
            .collect();
        ranges.sort();
        return interval_elems(&ranges, None);
    }
    let now = now_ms();
    set.elements.iter().filter_map(|e| elem_with_timeout(e, set.expires.get(e), now)).collect()
}

pub fn elem_key(e: &SetElem) -> Vec<u8> {
    match e {
        SetElem::Addr(a) => addr_bytes(a),
        SetElem::Net(n) => addr_bytes(&n.network()),
        SetElem::NfProto(Family::V4) => vec![NFPROTO_IPV4],
        SetElem::NfProto(Family::V6) => vec![NFPROTO_IPV6],
        SetElem::Block(b) => block_keys(b).0,
    }
}

fn net_range(n: &IpNet) -> (Vec<u8>, Vec<u8>) {
    (addr_bytes(&n.network()), addr_bytes(&n.broadcast()))
}

/// The batch that replaces `table inet fw` with `rs`, atomically.
pub fn ruleset_batch(rs: &Ruleset) -> Result<Built, BuildError> {
    let mut em = Emitter::new();
    let table = Table::new(c"fw", ProtoFamily::Inet);
    em.add(&table, MsgType::Add, "table inet fw");
    em.add(&table, MsgType::Del, "delete of the previous table inet fw");
    em.add(&table, MsgType::Add, "table inet fw");

    for set in &rs.sets {
        let mut flags = 0;
        if set.interval {
            flags |= sys::SET_INTERVAL;
        }
        if set.timeout {
            flags |= sys::SET_TIMEOUT;
        }
        if matches!(set.key, SetKey::Block(_)) {
            flags |= sys::SET_INTERVAL | sys::SET_CONCAT;
        }
        em.set(&set.name, key_type(set.key), flags, Some(&set.comment), &set_elems(set))?;
    }

    // Every chain first, so rules can jump to chains declared later; jump targets before
    // base chains, the order `plan` prints and `nft list` reads back.
    let ordered: Vec<&crate::ruleset::ir::Chain> = rs
        .chains
        .iter()
        .filter(|c| c.base.is_none())
        .chain(rs.chains.iter().filter(|c| c.base.is_some()))
        .collect();
    let mut chains = Vec::with_capacity(ordered.len());
    for c in ordered.iter().copied() {
        let mut chain = Chain::new(cstr(&c.name, "chain name")?, &table);
        if let Some(base) = &c.base {
            let hook = match base.hook {
                Hook::Input => NftHook::In,
                Hook::Output => NftHook::Out,
            };
            chain.set_hook(hook, base.priority);
            chain.set_type(ChainType::Filter);
            chain.set_policy(if base.policy_drop { Policy::Drop } else { Policy::Accept });
        }
        em.add(&chain, MsgType::Add, format!("chain {}", c.name));
        chains.push(chain);
    }
    for (c, chain) in ordered.iter().zip(&chains) {
        for (i, r) in c.rules.iter().enumerate() {
            let what = format!(
                "rule {} of chain {}{}",
                i + 1,
                c.name,
                r.origin
                    .as_ref()
                    .map(|o| format!(" ({})", crate::ruleset::render::comment(o)))
                    .unwrap_or_default()
            );
            let rule = build_rule(&mut em, chain, r, &what)?;
            em.add(&rule, MsgType::Add, what);
        }
    }
    Ok(em.finish())
}

/// The batch that removes `table inet fw` if it exists (add-then-delete never fails on
/// "no such table").
pub fn flush_batch() -> Built {
    let mut em = Emitter::new();
    let table = Table::new(c"fw", ProtoFamily::Inet);
    em.add(&table, MsgType::Add, "table inet fw");
    em.add(&table, MsgType::Del, "delete of table inet fw");
    em.finish()
}

fn build_rule<'a>(
    em: &mut Emitter,
    chain: &'a Chain<'a>,
    r: &crate::ruleset::ir::Rule,
    what: &str,
) -> Result<Rule<'a>, BuildError> {
    let mut rule = Rule::new(chain);
    for m in &r.matches {
        push_match(em, &mut rule, m, what)?;
    }
    if r.counter {
        rule.add_expr(&Counter);
    }
    if let Some(m) = r.mark {
        rule.add_expr(&Immediate::new(m, Register::Reg1));
        rule.add_expr(&Conntrack::Mark { set: true });
    }
    if let Some(log) = &r.log {
        rule.add_expr(&sys::Log {
            group: log.group,
            prefix: cstr(&log.prefix, "log prefix")?,
            snaplen: log.snaplen,
        });
    }
    if let Some(v) = &r.verdict {
        let v = match v {
            Verdict::Accept => NftVerdict::Accept,
            Verdict::Drop => NftVerdict::Drop,
            Verdict::Return => NftVerdict::Return,
            Verdict::RejectTcpReset => NftVerdict::Reject(RejectionType::TcpRst),
            Verdict::Jump(c) => NftVerdict::Jump { chain: cstr(c, "jump target")? },
            Verdict::Queue { num, bypass } => {
                // The packet mark carries the connection's: which policy flagged the flow.
                rule.add_expr(&Conntrack::Mark { set: false });
                rule.add_expr(&Meta::Mark { set: true });
                rule.add_expr(&sys::NfQueue { num: *num, bypass: *bypass });
                return finish_rule(rule, r, what);
            }
        };
        rule.add_expr(&v);
    }
    finish_rule(rule, r, what)
}

fn finish_rule<'a>(
    mut rule: Rule<'a>,
    r: &crate::ruleset::ir::Rule,
    what: &str,
) -> Result<Rule<'a>, BuildError> {
    if let Some(o) = &r.origin {
        let c = cstr(&crate::ruleset::render::comment(o), "rule comment")?;
        rule.set_comment(c).map_err(|e| BuildError { what: what.into(), why: e.into() })?;
    }
    Ok(rule)
}

fn lookup(em: &Emitter, set: &str, what: &str) -> Result<sys::Lookup, BuildError> {
    let id = *em
        .set_ids
        .get(set)
        .ok_or_else(|| BuildError { what: what.into(), why: format!("unknown set {set}") })?;
    Ok(sys::Lookup { set: cstr(set, "set name")?, set_id: id, invert: false, sreg: libc::NFT_REG_1 as u32 })
}

/// A lookup in a new anonymous set holding `elems`.
fn anon_lookup(
    em: &mut Emitter,
    key: KeyType,
    interval: bool,
    elems: &[Elem],
) -> Result<sys::Lookup, BuildError> {
    let mut flags = sys::SET_ANONYMOUS | sys::SET_CONSTANT;
    if interval {
        flags |= sys::SET_INTERVAL;
    }
    let id = em.set("__set%d", key, flags, None, elems)?;
    Ok(sys::Lookup { set: c"__set%d".to_owned(), set_id: id, invert: false, sreg: libc::NFT_REG_1 as u32 })
}

fn nfproto(rule: &mut Rule<'_>, f: Family) {
    rule.add_expr(&Meta::NfProto);
    rule.add_expr(&Cmp::new(CmpOp::Eq, if f == Family::V4 { NFPROTO_IPV4 } else { NFPROTO_IPV6 }));
}

fn push_match(em: &mut Emitter, rule: &mut Rule<'_>, m: &Match, what: &str) -> Result<(), BuildError> {
    match m {
        Match::Loopback(dir) => {
            rule.add_expr(if *dir == Dir::Src { &Meta::Iif } else { &Meta::Oif });
            rule.add_expr(&Cmp::new(CmpOp::Eq, LOOPBACK_IFINDEX));
        }
        Match::NfProtoInSet(set) => {
            rule.add_expr(&Meta::NfProto);
            rule.add_expr(&lookup(em, set, what)?);
        }
        Match::AddrInSet { family, dir, set } => {
            // The family check is what keeps an IPv6 packet from being read as IPv4.
            nfproto(rule, *family);
            let field = match (family, dir) {
                (Family::V4, Dir::Src) => NetworkHeaderField::Ipv4(Ipv4HeaderField::Saddr),
                (Family::V4, Dir::Dst) => NetworkHeaderField::Ipv4(Ipv4HeaderField::Daddr),
                (Family::V6, Dir::Src) => NetworkHeaderField::Ipv6(Ipv6HeaderField::Saddr),
                (Family::V6, Dir::Dst) => NetworkHeaderField::Ipv6(Ipv6HeaderField::Daddr),
            };
            rule.add_expr(&Payload::Network(field));
            rule.add_expr(&lookup(em, set, what)?);
        }
        Match::BlockLookup { family, set } => {
            nfproto(rule, *family);
            // saddr . daddr . l4proto . sport . dport into consecutive 32-bit registers.
            let (alen, soff, doff) = if *family == Family::V4 { (4, 12, 16) } else { (16, 8, 24) };
            let mut reg = libc::NFT_REG32_00 as u32;
            let net = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
            let th = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;
            for (offset, base) in [(soff, net), (doff, net)] {
                rule.add_expr(&sys::RawPayload { base, offset, len: alen, dreg: reg });
                reg += alen / 4;
            }
            rule.add_expr(&sys::RawMeta { key: libc::NFT_META_L4PROTO as u32, dreg: reg });
            reg += 1;
            for offset in [0, 2] {
                rule.add_expr(&sys::RawPayload { base: th, offset, len: 2, dreg: reg });
                reg += 1;
            }
            let mut l = lookup(em, set, what)?;
            l.sreg = libc::NFT_REG32_00 as u32;
            rule.add_expr(&l);
        }
        Match::NfProto(f) => nfproto(rule, *f),
        Match::L4Proto(list) => {
            let nums: Vec<u8> = list
                .iter()
                .map(|p| match p {
                    L4::Tcp => IPPROTO_TCP,
                    L4::Udp => IPPROTO_UDP,
                    L4::Icmp => IPPROTO_ICMP,
                    L4::Icmpv6 => IPPROTO_ICMPV6,
                })
                .collect();
            rule.add_expr(&Meta::L4Proto);
            if let [one] = nums.as_slice() {
                rule.add_expr(&Cmp::new(CmpOp::Eq, *one));
            } else {
                let elems: Vec<Elem> = nums
                    .iter()
                    .map(|n| Elem { key: vec![*n], key_end: None, flags: 0, timeout_ms: None })
                    .collect();
                let l = anon_lookup(em, KeyType::InetProto, false, &elems)?;
                rule.add_expr(&l);
            }
        }
        Match::Dport(ranges) => {
            rule.add_expr(&Payload::Transport(TransportHeaderField::Raw { offset_bits: 2, length_bits: 2 }));
            match ranges.as_slice() {
                [r] if r.lo == r.hi => rule.add_expr(&Cmp::new(CmpOp::Eq, &r.lo.to_be_bytes()[..])),
                [r] => rule.add_expr(&sys::Range {
                    from: r.lo.to_be_bytes().to_vec(),
                    to: r.hi.to_be_bytes().to_vec(),
                }),
                _ if ranges.iter().all(|r| r.lo == r.hi) => {
                    let elems: Vec<Elem> = ranges
                        .iter()
                        .map(|r| Elem {
                            key: r.lo.to_be_bytes().to_vec(),
                            key_end: None,
                            flags: 0,
                            timeout_ms: None,
                        })
                        .collect();
                    let l = anon_lookup(em, KeyType::InetService, false, &elems)?;
                    rule.add_expr(&l);
                }
                _ => {
                    let spans: Vec<(Vec<u8>, Vec<u8>)> = ranges
                        .iter()
                        .map(|r| (r.lo.to_be_bytes().to_vec(), r.hi.to_be_bytes().to_vec()))
                        .collect();
                    let l = anon_lookup(em, KeyType::InetService, true, &interval_elems(&spans, None))?;
                    rule.add_expr(&l);
                }
            }
        }
        Match::CtState(states) => {
            let mask = states.iter().fold(0u32, |m, s| {
                m | match s {
                    CtState::Invalid => 1,
                    CtState::Established => 2,
                    CtState::Related => 4,
                    CtState::New => 8,
                }
            });
            rule.add_expr(&Conntrack::State);
            rule.add_expr(&Bitwise::new(mask, 0u32));
            rule.add_expr(&Cmp::new(CmpOp::Neq, 0u32));
        }
        Match::Icmpv6Nd => {
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, IPPROTO_ICMPV6));
            rule.add_expr(&Payload::Transport(TransportHeaderField::Raw { offset_bits: 0, length_bits: 1 }));
            let elems: Vec<Elem> = [133u8, 134, 135, 136]
                .iter()
                .map(|t| Elem { key: vec![*t], key_end: None, flags: 0, timeout_ms: None })
                .collect();
            let l = anon_lookup(em, KeyType::Icmpv6Type, false, &elems)?;
            rule.add_expr(&l);
        }
        Match::CtCountOver(n) => rule.add_expr(&sys::Connlimit { count: *n, over: true }),
        Match::Limit { over, rate, unit, burst } => {
            let burst = u32::try_from(*burst).unwrap_or(u32::MAX);
            rule.add_expr(&sys::Limit { rate: *rate, burst, bytes: *unit == RateUnit::Bytes, over: *over });
        }
        Match::CtMark(m) => {
            rule.add_expr(&Conntrack::Mark { set: false });
            rule.add_expr(&Cmp::new(CmpOp::Eq, *m));
        }
        Match::CtMarkPrefix { mark, bits } => {
            let mask = u32::MAX.checked_shl(32 - u32::from(*bits).min(32)).unwrap_or(0);
            rule.add_expr(&Conntrack::Mark { set: false });
            rule.add_expr(&Bitwise::new(mask, 0u32));
            rule.add_expr(&Cmp::new(CmpOp::Eq, mark & mask));
        }
        Match::TcpDoff(n) => {
            // nft's spelling: the TCP check, the high nibble of byte 12 masked, compared in place.
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, IPPROTO_TCP));
            let th = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;
            rule.add_expr(&sys::RawPayload { base: th, offset: 12, len: 1, dreg: libc::NFT_REG_1 as u32 });
            rule.add_expr(&Bitwise::new(0xf0u8, 0u8));
            rule.add_expr(&Cmp::new(CmpOp::Eq, (*n & 0x0f) << 4));
        }
        Match::IpLength(family, n) => {
            nfproto(rule, *family);
            let nh = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
            let offset = if *family == Family::V4 { 2 } else { 4 };
            rule.add_expr(&sys::RawPayload { base: nh, offset, len: 2, dreg: libc::NFT_REG_1 as u32 });
            rule.add_expr(&Cmp::new(CmpOp::Eq, &n.to_be_bytes()[..]));
        }
        Match::TcpRst => {
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, IPPROTO_TCP));
            let th = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;
            rule.add_expr(&sys::RawPayload { base: th, offset: 13, len: 1, dreg: libc::NFT_REG_1 as u32 });
            rule.add_expr(&Bitwise::new(0x04u8, 0u8));
            rule.add_expr(&Cmp::new(CmpOp::Neq, 0u8));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_encoding() {
        let e = interval_elems(&[(vec![10, 0, 0, 0], vec![10, 255, 255, 255])], None);
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].key.clone(), e[0].flags), (vec![0, 0, 0, 0], sys::ELEM_INTERVAL_END));
        assert_eq!((e[1].key.clone(), e[1].flags), (vec![10, 0, 0, 0], 0));
        assert_eq!((e[2].key.clone(), e[2].flags), (vec![11, 0, 0, 0], sys::ELEM_INTERVAL_END));
        // A range to the very top has no end element.
        let e = interval_elems(&[(vec![0xff, 0], vec![0xff, 0xff])], None);
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn the_demo_builds_into_a_batch() {
        let p = crate::rules::load_dir(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/demo")),
            0,
        )
        .policy
        .unwrap();
        let inv = crate::inventory::load_inventory(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../rules/demo-inventory.toml"
        )))
        .unwrap();
        for rs in crate::compile::compile_all(&p, &inv, &Default::default()) {
            let b = ruleset_batch(&rs).unwrap();
            assert!(b.what.len() > 20);
            assert!(b.batch.iter().map(|s| s.len()).sum::<usize>() > 1000);
        }
    }
}
