//! Ruleset IR -> one nftnl batch: add, delete, add `table inet fw`, then sets and their
//! elements, chains, and rules. No I/O: the batch is sent by `mod.rs`.

use crate::clock::now_ms;
use std::collections::HashMap;
use std::ffi::CString;
use std::net::IpAddr;

use ipnet::IpNet;
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, Counter, Immediate, Ipv4HeaderField, Ipv6HeaderField, LLHeaderField,
    Meta, NetworkHeaderField, Payload, Register, RejectionType, TransportHeaderField, Verdict as NftVerdict,
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

pub(super) const NFPROTO_BRIDGE: u16 = 7;

/// The NFPROTO_* number and nftnl family of a table family.
pub(super) fn proto_family(f: TableFamily) -> (u16, ProtoFamily) {
    match f {
        TableFamily::Inet => (libc::NFPROTO_INET as u16, ProtoFamily::Inet),
        TableFamily::Bridge => (NFPROTO_BRIDGE, ProtoFamily::Bridge),
    }
}

impl Emitter {
    /// An emitter for `rs`'s table (its family and name).
    pub(super) fn for_ruleset(rs: &Ruleset) -> Result<Emitter, BuildError> {
        let name = cstr(&rs.table, "table name")?;
        Ok(Emitter::for_table(&name, proto_family(rs.family).0))
    }

    fn bridge(&self) -> bool {
        self.family == NFPROTO_BRIDGE
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
        self.sized_set(name, key, flags, None, comment, elems)
    }

    /// `set`, bounded to `size` elements when given (dynamic sets).
    pub(super) fn sized_set(
        &mut self,
        name: &str,
        key: KeyType,
        flags: u32,
        size: Option<u32>,
        comment: Option<&str>,
        elems: &[Elem],
    ) -> Result<u32, BuildError> {
        let id = self.next_set_id;
        self.next_set_id += 1;
        let mut set =
            RawSet::new(self.family, &self.table, &cstr(name, "set name")?, id, key, flags, comment);
        if let Some(n) = size {
            set.set_size(n);
        }
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

    /// A set already in the table: rules refer to it by name.
    pub(super) fn existing_set(&mut self, name: &str) {
        self.set_ids.insert(name.to_string(), 0);
    }

    /// Every element of an existing set out (`nft flush set`).
    pub(super) fn flush_set(&mut self, name: &str) -> Result<(), BuildError> {
        let msg = sys::FlushSet::new(self.family, &self.table, &cstr(name, "set name")?);
        self.add(&msg, MsgType::Del, format!("flush of set {name}"));
        Ok(())
    }

    pub(super) fn delete_set(&mut self, name: &str, key: KeyType) -> Result<(), BuildError> {
        let set = RawSet::new(self.family, &self.table, &cstr(name, "set name")?, 0, key, 0, None);
        self.add(&set, MsgType::Del, format!("delete of set {name}"));
        Ok(())
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
        SetKey::BlockAddr(Family::V4) => KeyType::BlockAddr4,
        SetKey::BlockAddr(Family::V6) => KeyType::BlockAddr6,
        SetKey::Fields(kinds) => KeyType::Fields(kinds),
    }
}

/// The set flags a set's shape needs.
pub fn set_flags(set: &Set) -> u32 {
    let mut flags = 0;
    if set.interval {
        flags |= sys::SET_INTERVAL;
    }
    if set.timeout || set.dynamic.is_some() {
        flags |= sys::SET_TIMEOUT;
    }
    match set.key {
        SetKey::Block(_) | SetKey::BlockAddr(_) => flags |= sys::SET_INTERVAL | sys::SET_CONCAT,
        // A concatenation of ranges is an interval set too (the kernel's pipapo backend).
        SetKey::Fields(k) if k.len() > 1 => flags |= sys::SET_CONCAT,
        _ => {}
    }
    if set.map.is_some() {
        flags |= sys::SET_MAP;
    }
    if set.dynamic.is_some() {
        flags |= sys::SET_EVAL;
    }
    flags
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
    if !b.has_ports() {
        return (lo, hi);
    }
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
            Elem { key: lo, key_end: Some(hi), timeout_ms, ..Elem::default() }
        }
        SetElem::TupleRange(parts) => {
            let lo: Vec<KeyValue> = parts.iter().map(|p| p.0).collect();
            let hi: Vec<KeyValue> = parts.iter().map(|p| p.1).collect();
            Elem { key: tuple_key(&lo), key_end: Some(tuple_key(&hi)), timeout_ms, ..Elem::default() }
        }
        other => Elem { key: elem_key(other), timeout_ms, ..Elem::default() },
    })
}

/// One field of a concatenated key, padded to whole 32-bit registers. An ifindex is in host
/// order (that is how `meta iif` loads it); everything else is in network order.
fn key_value(out: &mut Vec<u8>, v: &KeyValue) {
    let start = out.len();
    match v {
        KeyValue::IfIndex(i) => out.extend_from_slice(&i.to_ne_bytes()),
        KeyValue::Mac(m) => out.extend_from_slice(m),
        KeyValue::Addr(a) => out.extend_from_slice(&addr_bytes(a)),
        KeyValue::Proto(p) => out.push(*p),
        KeyValue::Port(p) => out.extend_from_slice(&p.to_be_bytes()),
    }
    let n = out.len() - start;
    out.resize(out.len() + (4 - n % 4) % 4, 0);
}

/// The inverse of the key encoding: a concatenated key read back from the kernel.
pub fn decode_tuple(kinds: &[KeyKind], bytes: &[u8]) -> Option<Vec<KeyValue>> {
    let mut out = Vec::with_capacity(kinds.len());
    let mut i = 0;
    for k in kinds {
        let (len, v) = match k {
            KeyKind::IfIndex => {
                (4, KeyValue::IfIndex(u32::from_ne_bytes(bytes.get(i..i + 4)?.try_into().ok()?)))
            }
            KeyKind::EtherAddr => (6, KeyValue::Mac(bytes.get(i..i + 6)?.try_into().ok()?)),
            KeyKind::Ipv4 => {
                let b: [u8; 4] = bytes.get(i..i + 4)?.try_into().ok()?;
                (4, KeyValue::Addr(IpAddr::from(b)))
            }
            KeyKind::Ipv6 => {
                let b: [u8; 16] = bytes.get(i..i + 16)?.try_into().ok()?;
                (16, KeyValue::Addr(IpAddr::from(b)))
            }
            KeyKind::InetProto => (1, KeyValue::Proto(*bytes.get(i)?)),
            KeyKind::InetService => {
                (2, KeyValue::Port(u16::from_be_bytes(bytes.get(i..i + 2)?.try_into().ok()?)))
            }
        };
        out.push(v);
        i += len + (4 - len % 4) % 4;
    }
    (i == bytes.len()).then_some(out)
}

fn tuple_key(values: &[KeyValue]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for v in values {
        key_value(&mut out, v);
    }
    out
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
                jump: None,
            });
        }
    }
    for (lo, hi) in ranges {
        out.push(Elem { key: lo.clone(), key_end: None, flags: 0, timeout_ms, jump: None });
        if let Some(end) = successor(hi) {
            out.push(Elem {
                key: end,
                key_end: None,
                flags: sys::ELEM_INTERVAL_END,
                timeout_ms: None,
                jump: None,
            });
        }
    }
    out
}

/// A set's elements as the kernel takes them, with timeouts as of `now` (unix ms).
pub fn set_elems_at(set: &Set, now: i64) -> Vec<Elem> {
    // Single-address interval sets (zone CIDRs) take nft's start/end encoding; concatenated
    // ranges carry both ends in one element.
    if set.interval && !matches!(set.key, SetKey::Fields(_)) {
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = set
            .elements
            .iter()
            .filter_map(|e| match e {
                SetElem::Net(n) => Some(net_range(n)),
                SetElem::Addr(a) => Some((addr_bytes(a), addr_bytes(a))),
                SetElem::NfProto(_) | SetElem::Block(_) | SetElem::Tuple(_) | SetElem::TupleRange(_) => None,
            })
            .collect();
        ranges.sort();
        return interval_elems(&ranges, None);
    }
    set.elements.iter().filter_map(|e| elem_with_timeout(e, set.expires.get(e), now)).collect()
}

pub fn elem_key(e: &SetElem) -> Vec<u8> {
    match e {
        SetElem::Addr(a) => addr_bytes(a),
        SetElem::Net(n) => addr_bytes(&n.network()),
        SetElem::NfProto(Family::V4) => vec![NFPROTO_IPV4],
        SetElem::NfProto(Family::V6) => vec![NFPROTO_IPV6],
        SetElem::Block(b) => block_keys(b).0,
        SetElem::Tuple(values) => tuple_key(values),
        SetElem::TupleRange(parts) => tuple_key(&parts.iter().map(|p| p.0).collect::<Vec<_>>()),
    }
}

fn net_range(n: &IpNet) -> (Vec<u8>, Vec<u8>) {
    (addr_bytes(&n.network()), addr_bytes(&n.broadcast()))
}

/// The batch that replaces `rs`'s table (`table inet fw`, or the floor's `table bridge
/// fw_floor`) with `rs`, atomically.
pub fn ruleset_batch(rs: &Ruleset) -> Result<Built, BuildError> {
    let mut em = Emitter::for_ruleset(rs)?;
    let tname = cstr(&rs.table, "table name")?;
    let table = Table::new(&tname, proto_family(rs.family).1);
    let label = format!("table {} {}", rs.family.name(), rs.table);
    em.add(&table, MsgType::Add, label.clone());
    em.add(&table, MsgType::Del, format!("delete of the previous {label}"));
    em.add(&table, MsgType::Add, label);

    let now = now_ms();
    for set in &rs.sets {
        add_set(&mut em, set, now)?;
    }
    let ordered = ordered_chains(rs);
    let chains = chain_objects(&ordered, &table)?;
    for chain in &chains {
        em.add(chain, MsgType::Add, format!("chain {}", chain_name(chain)));
    }
    for set in rs.sets.iter().filter(|s| s.map.is_some()) {
        add_map_elems(&mut em, set)?;
    }
    emit_rules(&mut em, &ordered, &chains)?;
    Ok(em.finish())
}

/// A set with its elements (a map's come after the chains they name, see `add_map_elems`).
fn add_set(em: &mut Emitter, set: &Set, now: i64) -> Result<(), BuildError> {
    let elems = if set.map.is_some() { Vec::new() } else { set_elems_at(set, now) };
    em.sized_set(
        &set.name,
        key_type(set.key),
        set_flags(set),
        set.dynamic.map(|d| d.size),
        Some(&set.comment),
        &elems,
    )?;
    Ok(())
}

fn add_map_elems(em: &mut Emitter, set: &Set) -> Result<(), BuildError> {
    let elems = map_elems(set)?;
    if !elems.is_empty() {
        em.elements(&set.name, key_type(set.key), &elems, MsgType::Add)?;
    }
    Ok(())
}

/// Jump targets before base chains: the order `plan` prints and `nft list` reads back.
fn ordered_chains(rs: &Ruleset) -> Vec<&crate::ruleset::ir::Chain> {
    rs.chains
        .iter()
        .filter(|c| c.base.is_none())
        .chain(rs.chains.iter().filter(|c| c.base.is_some()))
        .collect()
}

fn chain_name(c: &Chain<'_>) -> String {
    c.get_name().to_string_lossy().into_owned()
}

fn chain_objects<'t>(
    ordered: &[&crate::ruleset::ir::Chain],
    table: &'t Table,
) -> Result<Vec<Chain<'t>>, BuildError> {
    let mut chains = Vec::with_capacity(ordered.len());
    for c in ordered.iter().copied() {
        let mut chain = Chain::new(cstr(&c.name, "chain name")?, table);
        if let Some(base) = &c.base {
            let hook = match base.hook {
                Hook::Input => NftHook::In,
                Hook::Output => NftHook::Out,
                Hook::Forward => NftHook::Forward,
                Hook::Prerouting => NftHook::PreRouting,
                Hook::Postrouting => NftHook::PostRouting,
            };
            chain.set_hook(hook, base.priority);
            chain.set_type(ChainType::Filter);
            chain.set_policy(if base.policy_drop { Policy::Drop } else { Policy::Accept });
        }
        chains.push(chain);
    }
    Ok(chains)
}

fn emit_rules(
    em: &mut Emitter,
    ordered: &[&crate::ruleset::ir::Chain],
    chains: &[Chain<'_>],
) -> Result<(), BuildError> {
    for (c, chain) in ordered.iter().zip(chains) {
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
            let rule = build_rule(em, chain, r, &what)?;
            em.add(&rule, MsgType::Add, what);
        }
    }
    Ok(())
}

/// Brings the table from `last` (what fw programmed there) to `next` in one atomic batch
/// without replacing it, so the dynamic sets the packet path writes (the floor's reply
/// tuples) keep every element, even one recorded a moment before the commit: every rule is
/// flushed and written again, chains and sets come and go as needed, the daemon's own sets
/// get their elements rewritten. `None` when a base chain changed (replace the table).
pub fn update_in_place_batch(last: &Ruleset, next: &Ruleset) -> Result<Option<Built>, BuildError> {
    let bases = |rs: &Ruleset| -> Vec<(String, Option<BaseChain>)> {
        let mut v: Vec<_> =
            rs.chains.iter().filter(|c| c.base.is_some()).map(|c| (c.name.clone(), c.base.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if bases(last) != bases(next) || last.family != next.family || last.table != next.table {
        return Ok(None);
    }
    let mut em = Emitter::for_ruleset(next)?;
    let tname = cstr(&next.table, "table name")?;
    let table = Table::new(&tname, proto_family(next.family).1);
    em.add(&table, MsgType::Add, format!("table {} {}", next.family.name(), next.table));
    // 1. Every rule out, and every map emptied: nothing refers to a chain or set any more.
    let old_ordered = ordered_chains(last);
    let old_chains = chain_objects(&old_ordered, &table)?;
    for chain in &old_chains {
        em.add(&Rule::new(chain), MsgType::Del, format!("flush of chain {}", chain_name(chain)));
    }
    let same_shape = |a: &Set, b: &Set| {
        a.key == b.key
            && set_flags(a) == set_flags(b)
            && a.dynamic == b.dynamic
            && a.comment == b.comment
            && a.typeof_text == b.typeof_text
    };
    let kept: Vec<&Set> =
        next.sets.iter().filter(|n| last.set(&n.name).is_some_and(|o| same_shape(o, n))).collect();
    // (A verdict cache is emptied too: its verdicts were judged by the rules going.)
    for set in &kept {
        if set.dynamic.is_none_or(|d| d.cache) {
            em.flush_set(&set.name)?;
        }
    }
    // 2. Chains and sets that go (or change shape).
    let new_names: std::collections::BTreeSet<&str> = next.chains.iter().map(|c| c.name.as_str()).collect();
    for chain in old_chains.iter().filter(|c| !new_names.contains(chain_name(c).as_str())) {
        em.add(chain, MsgType::Del, format!("delete of chain {}", chain_name(chain)));
    }
    for set in last.sets.iter().filter(|o| !kept.iter().any(|k| k.name == o.name)) {
        em.delete_set(&set.name, key_type(set.key))?;
    }
    // 3. Sets that come, elements of the kept ones, chains that come, maps, every rule.
    let now = now_ms();
    for set in &next.sets {
        if kept.iter().any(|k| k.name == set.name) {
            em.existing_set(&set.name);
            if set.dynamic.is_none() && set.map.is_none() {
                let elems = set_elems_at(set, now);
                if !elems.is_empty() {
                    em.elements(&set.name, key_type(set.key), &elems, MsgType::Add)?;
                }
            }
        } else {
            add_set(&mut em, set, now)?;
        }
    }
    let ordered = ordered_chains(next);
    let chains = chain_objects(&ordered, &table)?;
    let old_names: std::collections::BTreeSet<&str> = last.chains.iter().map(|c| c.name.as_str()).collect();
    for chain in chains.iter().filter(|c| !old_names.contains(chain_name(c).as_str())) {
        em.add(chain, MsgType::Add, format!("chain {}", chain_name(chain)));
    }
    for set in next.sets.iter().filter(|s| s.map.is_some()) {
        add_map_elems(&mut em, set)?;
    }
    emit_rules(&mut em, &ordered, &chains)?;
    Ok(Some(em.finish()))
}

/// A verdict map's elements: each key jumps to its chain.
pub fn map_elems(set: &Set) -> Result<Vec<Elem>, BuildError> {
    let Some(map) = &set.map else { return Ok(Vec::new()) };
    map.iter()
        .map(|(e, chain)| {
            Ok(Elem { key: elem_key(e), jump: Some(cstr(chain, "map target")?), ..Elem::default() })
        })
        .collect()
}

/// The batch that removes `table inet fw` if it exists (add-then-delete never fails on
/// "no such table").
pub fn flush_batch() -> Built {
    flush_table_batch(TableFamily::Inet, TABLE).expect("a constant table name")
}

/// The batch that removes `table FAMILY NAME` if it exists.
pub fn flush_table_batch(family: TableFamily, name: &str) -> Result<Built, BuildError> {
    let tname = cstr(name, "table name")?;
    let mut em = Emitter::for_table(&tname, proto_family(family).0);
    let table = Table::new(&tname, proto_family(family).1);
    let label = format!("table {} {name}", family.name());
    em.add(&table, MsgType::Add, label.clone());
    em.add(&table, MsgType::Del, format!("delete of {label}"));
    Ok(em.finish())
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
    if let Some(d) = &r.dynset {
        let sreg = load_fields(&mut rule, &d.fields);
        let l = lookup(em, &d.set, what)?;
        rule.add_expr(&sys::Dynset {
            set: l.set,
            set_id: l.set_id,
            sreg,
            timeout_ms: d.timeout_ms,
            add_only: d.op == crate::ruleset::ir::DynOp::Add,
        });
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
            Verdict::Vmap { field, map } => {
                let sreg = load_fields(&mut rule, std::slice::from_ref(field));
                let mut l = lookup(em, map, what)?;
                l.sreg = sreg;
                l.verdict_map = true;
                rule.add_expr(&l);
                return finish_rule(rule, r, what);
            }
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
    Ok(sys::Lookup {
        set: cstr(set, "set name")?,
        set_id: id,
        invert: false,
        sreg: libc::NFT_REG_1 as u32,
        verdict_map: false,
    })
}

/// Loads `fields` into consecutive 32-bit registers from `NFT_REG32_00`, each taking whole
/// registers; returns the first. The caller has checked the protocol the fields need.
fn load_fields(rule: &mut Rule<'_>, fields: &[Field]) -> u32 {
    enum Src {
        Meta(u32),
        Payload(u32, u32, u32),
    }
    let first = libc::NFT_REG32_00 as u32;
    let mut reg = first;
    let ll = libc::NFT_PAYLOAD_LL_HEADER as u32;
    let net = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
    let th = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;
    for f in fields {
        let (src, len) = match *f {
            Field::Iif => (Src::Meta(libc::NFT_META_IIF as u32), 4),
            Field::Oif => (Src::Meta(libc::NFT_META_OIF as u32), 4),
            Field::L4Proto => (Src::Meta(libc::NFT_META_L4PROTO as u32), 1),
            Field::EtherSaddr => (Src::Payload(ll, 6, 6), 6),
            Field::Saddr(Family::V4) => (Src::Payload(net, 12, 4), 4),
            Field::Daddr(Family::V4) => (Src::Payload(net, 16, 4), 4),
            Field::Saddr(Family::V6) => (Src::Payload(net, 8, 16), 16),
            Field::Daddr(Family::V6) => (Src::Payload(net, 24, 16), 16),
            Field::Sport => (Src::Payload(th, 0, 2), 2),
            Field::Dport => (Src::Payload(th, 2, 2), 2),
            Field::ArpSha => (Src::Payload(net, 8, 6), 6),
            Field::ArpSpa => (Src::Payload(net, 14, 4), 4),
            Field::NdTarget => (Src::Payload(th, 8, 16), 16),
        };
        match src {
            Src::Meta(key) => rule.add_expr(&sys::RawMeta { key, dreg: reg }),
            Src::Payload(base, offset, len) => {
                rule.add_expr(&sys::RawPayload { base, offset, len, dreg: reg })
            }
        }
        reg += u32::div_ceil(len, 4);
    }
    first
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
    Ok(sys::Lookup {
        set: c"__set%d".to_owned(),
        set_id: id,
        invert: false,
        sreg: libc::NFT_REG_1 as u32,
        verdict_map: false,
    })
}

/// "The packet is IPv4 / IPv6": `meta nfproto` in an inet table; in a bridge table every
/// frame's nfproto is bridge, so it is the EtherType (`ether type ip`, as nft encodes it).
fn family_check(em: &Emitter, rule: &mut Rule<'_>, f: Family) {
    if em.bridge() {
        let ty = if f == Family::V4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
        rule.add_expr(&Payload::LinkLayer(LLHeaderField::EtherType));
        rule.add_expr(&Cmp::new(CmpOp::Eq, &ty.to_be_bytes()[..]));
    } else {
        rule.add_expr(&Meta::NfProto);
        rule.add_expr(&Cmp::new(CmpOp::Eq, if f == Family::V4 { NFPROTO_IPV4 } else { NFPROTO_IPV6 }));
    }
}

/// Register 1 compared with one value, or looked up in an anonymous set of several.
fn one_or_set(
    em: &mut Emitter,
    rule: &mut Rule<'_>,
    key: KeyType,
    values: &[Vec<u8>],
    invert: bool,
) -> Result<(), BuildError> {
    if let [one] = values {
        rule.add_expr(&Cmp::new(if invert { CmpOp::Neq } else { CmpOp::Eq }, &one[..]));
        return Ok(());
    }
    let elems: Vec<Elem> = values.iter().map(|v| Elem { key: v.clone(), ..Elem::default() }).collect();
    let mut l = anon_lookup(em, key, false, &elems)?;
    l.invert = invert;
    rule.add_expr(&l);
    Ok(())
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
            family_check(em, rule, *family);
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
            family_check(em, rule, *family);
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
        Match::NfProto(f) => family_check(em, rule, *f),
        Match::BlockAddrLookup { family, set } => {
            family_check(em, rule, *family);
            let sreg = load_fields(rule, &[Field::Saddr(*family), Field::Daddr(*family), Field::L4Proto]);
            let mut l = lookup(em, set, what)?;
            l.sreg = sreg;
            rule.add_expr(&l);
        }
        Match::Lookup { fields, set, invert } => {
            let sreg = load_fields(rule, fields);
            let mut l = lookup(em, set, what)?;
            l.sreg = sreg;
            l.invert = *invert;
            rule.add_expr(&l);
        }
        Match::IfNamePrefix { dir, prefix } => {
            rule.add_expr(if *dir == Dir::Src { &Meta::IifName } else { &Meta::OifName });
            // Only the prefix's bytes are compared: nft's `iifname "veth*"`.
            rule.add_expr(&Cmp::new(CmpOp::Eq, prefix.as_bytes()));
        }
        Match::EtherType { types, invert } => {
            rule.add_expr(&Payload::LinkLayer(LLHeaderField::EtherType));
            let values: Vec<Vec<u8>> = types.iter().map(|t| t.to_be_bytes().to_vec()).collect();
            one_or_set(em, rule, KeyType::EtherType, &values, *invert)?;
        }
        Match::IcmpType { family, types } => {
            rule.add_expr(&Meta::L4Proto);
            let (proto, key) = match family {
                Family::V4 => (IPPROTO_ICMP, KeyType::IcmpType),
                Family::V6 => (IPPROTO_ICMPV6, KeyType::Icmpv6Type),
            };
            rule.add_expr(&Cmp::new(CmpOp::Eq, proto));
            rule.add_expr(&Payload::Transport(TransportHeaderField::Raw { offset_bits: 0, length_bits: 1 }));
            let values: Vec<Vec<u8>> = types.iter().map(|t| vec![*t]).collect();
            one_or_set(em, rule, key, &values, false)?;
        }
        Match::L4ProtoNot(protos) => {
            rule.add_expr(&Meta::L4Proto);
            let values: Vec<Vec<u8>> = protos.iter().map(|p| vec![*p]).collect();
            one_or_set(em, rule, KeyType::InetProto, &values, true)?;
        }
        Match::TcpFlagsAny(mask) => {
            rule.add_expr(&Payload::Transport(TransportHeaderField::Raw { offset_bits: 13, length_bits: 1 }));
            rule.add_expr(&Bitwise::new(*mask, 0u8));
            rule.add_expr(&Cmp::new(CmpOp::Neq, 0u8));
        }
        Match::FragNonFirst => {
            rule.add_expr(&Payload::Network(NetworkHeaderField::Raw { offset_bits: 6, length_bits: 2 }));
            rule.add_expr(&Bitwise::new(&[0x1fu8, 0xff][..], &[0u8, 0][..]));
            rule.add_expr(&Cmp::new(CmpOp::Neq, &[0u8, 0][..]));
        }
        Match::Ip6SaddrUnspecified => {
            rule.add_expr(&Payload::Network(NetworkHeaderField::Ipv6(Ipv6HeaderField::Saddr)));
            rule.add_expr(&Cmp::new(CmpOp::Eq, &[0u8; 16][..]));
        }
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
                    .map(|n| Elem { key: vec![*n], key_end: None, flags: 0, timeout_ms: None, jump: None })
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
                            jump: None,
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
                .map(|t| Elem { key: vec![*t], key_end: None, flags: 0, timeout_ms: None, jump: None })
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
            family_check(em, rule, *family);
            let nh = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
            let offset = if *family == Family::V4 { 2 } else { 4 };
            rule.add_expr(&sys::RawPayload { base: nh, offset, len: 2, dreg: libc::NFT_REG_1 as u32 });
            rule.add_expr(&Cmp::new(CmpOp::Eq, &n.to_be_bytes()[..]));
        }
        Match::CtDirection(d) => {
            rule.add_expr(&sys::RawCt { key: libc::NFT_CT_DIRECTION as u32, dreg: libc::NFT_REG_1 as u32 });
            rule.add_expr(&Cmp::new(CmpOp::Eq, if *d == CtDir::Original { 0u8 } else { 1u8 }));
        }
        Match::TcpFlags { mask, value, invert } => {
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, IPPROTO_TCP));
            let th = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;
            rule.add_expr(&sys::RawPayload { base: th, offset: 13, len: 1, dreg: libc::NFT_REG_1 as u32 });
            rule.add_expr(&Bitwise::new(*mask, 0u8));
            rule.add_expr(&Cmp::new(if *invert { CmpOp::Neq } else { CmpOp::Eq }, value & mask));
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
    fn tuples_decode_what_they_encode() {
        let v = vec![
            KeyValue::IfIndex(77),
            KeyValue::Addr("10.1.2.3".parse().unwrap()),
            KeyValue::Addr("fd00::9".parse().unwrap()),
            KeyValue::Proto(6),
            KeyValue::Port(443),
            KeyValue::Port(50000),
        ];
        let kinds = [
            KeyKind::IfIndex,
            KeyKind::Ipv4,
            KeyKind::Ipv6,
            KeyKind::InetProto,
            KeyKind::InetService,
            KeyKind::InetService,
        ];
        let bytes = tuple_key(&v);
        assert_eq!(bytes.len(), 4 + 4 + 16 + 4 + 4 + 4);
        assert_eq!(decode_tuple(&kinds, &bytes), Some(v));
        assert_eq!(decode_tuple(&kinds, &bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_tuple(&kinds[..2], &bytes), None, "trailing bytes are not a key");
    }

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
