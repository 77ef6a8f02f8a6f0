//! The flow table: what the kernel reported about each container's traffic, as rows an
//! operator reads. Pure: no I/O and no clock (time comes in as unix milliseconds), so every
//! behaviour here is unit-tested with a fake [`Context`].
//!
//! Two kinds of rows:
//! - **flows**, keyed by (container, conntrack original tuple): one per conntrack entry, with
//!   counters oriented from the container's side, rates, TCP state, and the rule that allows
//!   it (asked of the [`Context`], which answers the way `explain` does);
//! - **attempts**, from NFLOG records tagged `fw:deny|audit|cap|block:<rule id>`, aggregated by
//!   (container, verdict, direction, proto, src, dst, dport, rule id): a count and the last
//!   time seen, never one row per packet. The source port changes with every retry, so it is
//!   not part of the key; the last one seen is kept for display. `fw:log:` records (allowed
//!   and logged) are skipped: their conntrack flow is already a row.
//!
//! Memory is bounded: at most `cap` rows. When full, a batch of `cap / 16` rows is evicted in
//! one O(n) selection (amortized O(16) per insert): closed flows first (oldest `last_seen`
//! first), then attempt rows, and open flows only as a last resort.
//!
//! Row size (x86_64, checked by `rows_are_compact`): the internal row is 184 bytes (one
//! [`Tuple`], strings interned as `u32`s: container, zone, peer, rule), and its index entry
//! is the row's slot alone (4 bytes; the key is rebuilt from the row to compare). The rows are
//! reserved at the cap up front (resident only as they fill) so the table never holds a
//! doubling's slack. Measured by bench/flow_rows: 100,000 rows after 1,000,000 flows of churn
//! cost 244 B each in RSS (the removal log adds 16 bytes a row). The interners are rebuilt
//! from the live rows when dead entries pile up.
//!
//! Inspection (see `flows::inspection`): what the engine found about a flow is kept beside
//! the rows, keyed by row id (rows stay compact; few flows are inspected), and shown as the
//! row's `inspection`. A finding that arrives before conntrack's NEW event waits in a small
//! bounded pending map. DNS answers seen on inspected flows feed a bounded per-container map
//! of address -> name; a row whose peer address no container owns shows that name as its
//! `peer` (a container's name always wins; `peer_zone` stays the zone fw knows, if any).
//!
//! Subscriptions: every change bumps a sequence number stored in the row (`changed_at`); a
//! row's id is the sequence number at its creation. [`FlowTable::changes_since`] returns the
//! rows changed after a position plus the ids removed since (from a bounded log); a reader too
//! far behind gets `full: true` and every matching row instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use fw_proto::control::{Direction, FlowFilter, FlowRow, FlowSnapshot, FlowVerdict, Inspection, Proto};
use fw_proto::filter::{Filter, FlowFields};
use fw_proto::{RuleKind, RuleRef};

use super::conntrack::{CtEntry, CtEvent, CtKind, Tuple};
use super::nflog::LogRecord;

/// Rows kept when the configuration says nothing.
pub const DEFAULT_CAP: usize = 100_000;
/// Findings waiting for their flow's row (conntrack NEW not read yet).
const PENDING_CAP: usize = 1024;
/// DNS-learned names kept, across containers; the oldest go first.
pub const DNS_NAMES_CAP: usize = 4096;

/// What the table asks the daemon about containers, addresses and rules. The daemon answers
/// from its inventory and compiled rulesets; tests use a fake.
pub trait Context {
    /// The zone `container` belongs to.
    fn zone_of(&self, container: &str) -> Option<String>;
    /// The container's own addresses: a flow whose original source is one of them is egress.
    fn local_addrs(&self, container: &str) -> &[IpAddr];
    /// The container and zone that own `addr`, when fw knows it.
    fn peer(&self, addr: IpAddr) -> Option<(String, String)>;
    /// Verdict and deciding rule for a flow of `container` with `peer` on `proto`/`port`
    /// (the service port: the destination port of the flow's first packet).
    fn attribute(
        &self,
        container: &str,
        direction: Direction,
        proto: Proto,
        peer: IpAddr,
        port: u16,
    ) -> (FlowVerdict, Option<RuleRef>);
    /// The reference (kind, id, `path:line`) of the rule an NFLOG tag names.
    fn rule_ref(&self, container: &str, rule_id: &str) -> Option<RuleRef>;
}

/// What changed since a position, for a subscription.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Rows matching the filter that changed (all of them when `full`), newest first.
    pub changed: Vec<FlowRow>,
    /// Ids of rows removed (evicted or forgotten) since then. Not filtered: the table no longer
    /// knows what they held; rows both created and removed in the interval are left out.
    pub removed: Vec<u64>,
    /// Rows in the table that match the filter.
    pub total: usize,
    /// Pass this as `since` next time.
    pub next: u64,
    /// `since` was `None` or too old for the removal log: `changed` is every matching row
    /// and `removed` is empty, so the reader should replace its view rather than patch it.
    pub full: bool,
}

/// Marks an absent optional symbol.
const NONE: u32 = u32::MAX;
/// `sample_ms` of a row that has not had counters yet.
const NO_SAMPLE: i64 = i64::MIN;

// Row states beyond the TCP ones (0..=9, TCP_CONNTRACK_*).
const ST_CLOSE: u8 = 8;
const ST_OPEN: u8 = 10;
const ST_CLOSED: u8 = 11;
const ST_DROPPED: u8 = 12;
const ST_LOGGED: u8 = 13;

const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

fn state_name(s: u8) -> &'static str {
    match s {
        ST_OPEN => "open",
        ST_CLOSED => "closed",
        ST_DROPPED => "dropped",
        ST_LOGGED => "logged",
        n => TCP_STATES.get(usize::from(n)).copied().unwrap_or("open"),
    }
}

/// One row, compact: strings are interned, optional ones use [`NONE`].
#[derive(Debug, Clone)]
struct Row {
    id: u64,
    changed_at: u64,
    first_seen_ms: i64,
    last_seen_ms: i64,
    bytes_out: u64,
    bytes_in: u64,
    packets_out: u64,
    packets_in: u64,
    rate_out: u64,
    rate_in: u64,
    /// Counters at the last rate sample, and when it was taken.
    sample_out: u64,
    sample_in: u64,
    sample_ms: i64,
    count: u64,
    /// Flows: the conntrack original tuple. Attempts: the packet's, the source port being
    /// the last one seen (not part of the key).
    tuple: Tuple,
    container: u32,
    zone: u32,
    peer: u32,
    peer_zone: u32,
    /// Index into the rule interner.
    rule: u32,
    /// Attempts: the tag's rule id (part of the key). Flows: [`NONE`].
    rule_key: u32,
    state: u8,
    direction: Direction,
    verdict: FlowVerdict,
    open: bool,
    attempt: bool,
}

impl Row {
    fn key(&self) -> Key {
        if self.attempt {
            Key::Attempt {
                container: self.container,
                verdict: self.verdict,
                direction: self.direction,
                proto: self.tuple.proto,
                src: self.tuple.src,
                dst: self.tuple.dst,
                dport: self.tuple.dport,
                rule: self.rule_key,
            }
        } else {
            Key::Flow { container: self.container, tuple: self.tuple }
        }
    }

    /// Eviction order: closed flows, then attempts, then open flows; oldest first in each.
    fn evict_rank(&self) -> (u8, i64) {
        let class = match (self.attempt, self.open) {
            (false, false) => 0,
            (true, _) => 1,
            (false, true) => 2,
        };
        (class, self.last_seen_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Flow {
        container: u32,
        tuple: Tuple,
    },
    Attempt {
        container: u32,
        verdict: FlowVerdict,
        direction: Direction,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        dport: u16,
        rule: u32,
    },
}

/// Row slots by key. An entry is the row's slot alone (4 bytes): the key lives in the row
/// and is rebuilt from it to compare and rehash, never stored twice.
#[derive(Debug, Default)]
struct Index {
    slots: hashbrown::HashTable<u32>,
    state: std::hash::RandomState,
}

impl Index {
    fn with_capacity(n: usize) -> Index {
        Index { slots: hashbrown::HashTable::with_capacity(n), state: std::hash::RandomState::new() }
    }

    fn hash(&self, k: &Key) -> u64 {
        std::hash::BuildHasher::hash_one(&self.state, k)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn get(&self, rows: &[Row], k: &Key) -> Option<u32> {
        let h = self.hash(k);
        self.slots.find(h, |&i| rows.get(i as usize).is_some_and(|r| r.key() == *k)).copied()
    }

    /// Indexes `rows[slot]`, which must be in place (growing rehashes every row).
    fn insert(&mut self, rows: &[Row], slot: u32) {
        let Some(r) = rows.get(slot as usize) else { return };
        let h = self.hash(&r.key());
        let state = &self.state;
        self.slots.insert_unique(h, slot, |&i| {
            rows.get(i as usize).map_or(0, |r| std::hash::BuildHasher::hash_one(state, r.key()))
        });
    }

    /// Drops the entry of the row with key `k` at `slot` (matched by slot: the row itself
    /// may already be gone).
    fn remove(&mut self, k: &Key, slot: u32) {
        if let Ok(e) = self.slots.find_entry(self.hash(k), |&i| i == slot) {
            e.remove();
        }
    }

    /// The row with key `k` moved from slot `from` to `to`.
    fn reslot(&mut self, k: &Key, from: u32, to: u32) {
        if let Some(v) = self.slots.find_mut(self.hash(k), |&i| i == from) {
            *v = to;
        }
    }

    fn rebuild(&mut self, rows: &[Row]) {
        self.slots.clear();
        for i in 0..rows.len() {
            self.insert(rows, i as u32);
        }
    }
}

/// Values interned as `u32`s; rebuilt from the live rows by [`FlowTable::compact`].
#[derive(Debug)]
struct Interner<T: Eq + std::hash::Hash + ?Sized> {
    values: Vec<Arc<T>>,
    index: HashMap<Arc<T>, u32>,
}

impl<T: Eq + std::hash::Hash + ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner { values: Vec::new(), index: HashMap::new() }
    }
}

impl<T: Eq + std::hash::Hash + ?Sized> Interner<T> {
    fn find(&self, v: &T) -> Option<u32> {
        self.index.get(v).copied()
    }

    fn add(&mut self, v: Arc<T>) -> u32 {
        if let Some(i) = self.index.get(&*v) {
            return *i;
        }
        let i = u32::try_from(self.values.len()).unwrap_or(NONE - 1);
        self.values.push(v.clone());
        self.index.insert(v, i);
        i
    }

    fn get(&self, i: u32) -> Option<&T> {
        self.values.get(i as usize).map(|v| &**v)
    }

    fn len(&self) -> usize {
        self.values.len()
    }
}

impl Interner<str> {
    fn intern(&mut self, s: &str) -> u32 {
        match self.find(s) {
            Some(i) => i,
            None => self.add(Arc::from(s)),
        }
    }

    fn intern_opt(&mut self, s: Option<&str>) -> u32 {
        s.map_or(NONE, |s| self.intern(s))
    }
}

/// What the daemon knows about one container and a peer, resolved once per new row.
struct Who {
    zone: u32,
    peer: u32,
    peer_zone: u32,
}

/// The bounded flow table. See the module documentation.
#[derive(Debug)]
pub struct FlowTable {
    cap: usize,
    rows: Vec<Row>,
    index: Index,
    strs: Interner<str>,
    rules: Interner<RuleRef>,
    /// Interner sizes after the last compaction.
    strs_live: usize,
    rules_live: usize,
    seq: u64,
    /// (seq of the removal, row id), oldest first.
    removals: VecDeque<(u64, u64)>,
    /// Removals at or before this seq were dropped from the log.
    removals_floor: u64,
    evicted: u64,
    /// Of those, rows of flows still open: they go on, unseen (the cap was too small).
    evicted_open: u64,
    lost: u64,
    /// Row id -> what inspection found.
    inspections: HashMap<u64, Inspection>,
    pending: HashMap<(Arc<str>, Tuple), Inspection>,
    pending_order: VecDeque<(Arc<str>, Tuple)>,
    /// (container, address) -> the name it resolved to, and insertion order for eviction.
    dns: HashMap<(Arc<str>, IpAddr), Arc<str>>,
    dns_order: VecDeque<(Arc<str>, IpAddr)>,
}

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable::new(DEFAULT_CAP)
    }
}

impl FlowTable {
    /// A table holding at most `cap` rows (at least 1).
    pub fn new(cap: usize) -> FlowTable {
        FlowTable {
            cap: cap.max(1),
            // Reserved whole: pages are resident only once rows fill them, and a table that
            // never doubles never holds a half-empty copy (a doubling Vec at 100k rows is
            // 131,072 slots).
            rows: Vec::with_capacity(cap.max(1)),
            index: Index::with_capacity(cap.max(1)),
            strs: Interner::default(),
            rules: Interner::default(),
            strs_live: 0,
            rules_live: 0,
            seq: 0,
            removals: VecDeque::new(),
            removals_floor: 0,
            evicted: 0,
            evicted_open: 0,
            lost: 0,
            inspections: HashMap::new(),
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            dns: HashMap::new(),
            dns_order: VecDeque::new(),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows evicted to stay under the cap, since the table was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Rows of still-open flows evicted to stay under the cap: the table was full of them.
    pub fn evicted_open(&self) -> u64 {
        self.evicted_open
    }

    /// Kernel events lost before they were read, as reported with [`FlowTable::add_lost`].
    pub fn lost_events(&self) -> u64 {
        self.lost
    }

    pub fn add_lost(&mut self, n: u64) {
        self.lost = self.lost.saturating_add(n);
    }

    /// The current change position (what `changes_since` would return as `next`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Applies one conntrack event from `container`'s namespace.
    pub fn apply_ct(&mut self, container: &str, ev: &CtEvent, now_ms: i64, ctx: &dyn Context) {
        self.upsert_flow(container, &ev.entry, ev.kind, false, now_ms, ctx);
        self.maybe_compact();
    }

    /// Replaces what the table knows of `container`'s conntrack table with a fresh dump (after
    /// an event overrun, or periodically to refresh counters and rates): entries are added or
    /// updated (keeping their `first_seen`), and open flows of the container missing from the
    /// dump are closed.
    ///
    /// `taken_at` is the table's [`seq`](FlowTable::seq) when the dump was asked for: a row an
    /// event changed after that is newer than the dump, and stays as it is (events are read on
    /// their own task while a dump runs).
    pub fn replace_dump(
        &mut self,
        container: &str,
        entries: &[CtEntry],
        taken_at: u64,
        now_ms: i64,
        ctx: &dyn Context,
    ) {
        let mut seen = HashSet::with_capacity(entries.len());
        for e in entries {
            if let Some(id) = self.upsert_flow(container, e, CtKind::New, true, now_ms, ctx) {
                seen.insert(id);
            }
        }
        if let Some(c) = self.strs.find(container) {
            for i in 0..self.rows.len() {
                let r = &self.rows[i];
                if r.container == c
                    && !r.attempt
                    && r.open
                    && r.changed_at <= taken_at
                    && !seen.contains(&r.id)
                {
                    self.seq += 1;
                    let r = &mut self.rows[i];
                    close(r);
                    r.changed_at = self.seq;
                }
            }
        }
        self.maybe_compact();
    }

    /// The original tuples of every open flow, per container: what a counter refresh asks
    /// the kernel about. One pass over the rows.
    pub fn open_tuples(&self) -> HashMap<String, Vec<Tuple>> {
        let mut by: HashMap<u32, Vec<Tuple>> = HashMap::new();
        for r in self.rows.iter().filter(|r| r.open && !r.attempt) {
            by.entry(r.container).or_default().push(r.tuple);
        }
        by.into_iter().filter_map(|(c, t)| Some((self.strs.get(c)?.to_string(), t))).collect()
    }

    /// Counters of known flows looked up one by one (see `CtControl::get_many`): each found
    /// entry updates its row as a dump would; a flow the kernel no longer has is closed (its
    /// DESTROY event was lost, or is still on its way and will find the row closed).
    pub fn refresh(
        &mut self,
        container: &str,
        looked_up: &[(Tuple, Option<CtEntry>)],
        now_ms: i64,
        ctx: &dyn Context,
    ) {
        let Some(c) = self.strs.find(container) else { return };
        for (t, found) in looked_up {
            match found {
                Some(e) => {
                    self.upsert_flow(container, e, CtKind::New, true, now_ms, ctx);
                }
                None => {
                    if let Some(i) = self.index.get(&self.rows, &Key::Flow { container: c, tuple: *t }) {
                        if self.rows[i as usize].open {
                            self.seq += 1;
                            let r = &mut self.rows[i as usize];
                            close(r);
                            r.changed_at = self.seq;
                        }
                    }
                }
            }
        }
        self.maybe_compact();
    }

    /// Applies one NFLOG record from `container`'s namespace. Records without an `fw:` tag or
    /// addresses, and `fw:log:` records, are ignored.
    /// Returns the id of the attempt row it counted in (none for records it skips).
    pub fn apply_log(
        &mut self,
        container: &str,
        rec: &LogRecord,
        now_ms: i64,
        ctx: &dyn Context,
    ) -> Option<u64> {
        let tag = rec.tag.as_ref()?;
        let (verdict, state) = match tag.kind.as_str() {
            "deny" => (FlowVerdict::Denied, ST_DROPPED),
            "audit" => (FlowVerdict::AuditDenied, ST_LOGGED),
            "cap" => (FlowVerdict::CapHit, ST_DROPPED),
            "block" => (FlowVerdict::Blocked, ST_DROPPED),
            _ => return None,
        };
        let (Some(src), Some(dst)) = (rec.src, rec.dst) else { return None };
        let proto = rec.proto.unwrap_or(0);
        let (sport, dport) = (rec.sport.unwrap_or(0), rec.dport.unwrap_or(0));
        // A packet going the reply way of its connection is shown as that connection, from
        // the end that opened it: never as a new flow from the end that answers.
        let (src, dst, sport, dport) = if self.is_reply(container, &tag.rule, proto, src, sport, dst, dport) {
            (dst, src, dport, sport)
        } else {
            (src, dst, sport, dport)
        };
        let local = ctx.local_addrs(container);
        let direction = if local.contains(&src) {
            Direction::Egress
        } else if local.contains(&dst) {
            Direction::Ingress
        } else if rec.outdev.is_some() && rec.indev.is_none() {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let c = self.strs.intern(container);
        let rule_key = self.strs.intern(&tag.rule);
        let key = Key::Attempt { container: c, verdict, direction, proto, src, dst, dport, rule: rule_key };
        self.seq += 1;
        let seq = self.seq;
        let id = if let Some(i) = self.index.get(&self.rows, &key) {
            let r = &mut self.rows[i as usize];
            r.count = r.count.saturating_add(1);
            r.tuple.sport = sport;
            r.last_seen_ms = r.last_seen_ms.max(now_ms);
            r.changed_at = seq;
            r.id
        } else {
            let peer_addr = if direction == Direction::Egress { dst } else { src };
            let who = self.who(container, peer_addr, ctx);
            let rule =
                ctx.rule_ref(container, &tag.rule).unwrap_or_else(|| fallback_rule(&tag.kind, &tag.rule));
            let rule = self.rules.add(Arc::new(rule));
            self.insert(Row {
                id: seq,
                changed_at: seq,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                bytes_out: 0,
                bytes_in: 0,
                packets_out: 0,
                packets_in: 0,
                rate_out: 0,
                rate_in: 0,
                sample_out: 0,
                sample_in: 0,
                sample_ms: NO_SAMPLE,
                count: 1,
                tuple: Tuple { src, dst, proto, sport, dport },
                container: c,
                zone: who.zone,
                peer: who.peer,
                peer_zone: who.peer_zone,
                rule,
                rule_key,
                state,
                direction,
                verdict,
                open: false,
                attempt: true,
            });
            seq
        };
        self.maybe_compact();
        Some(id)
    }

    /// Whether a logged packet goes the reply way of its connection: its rule says so (a
    /// quarantine drop of a reply), or `container` has a flow whose original tuple is the
    /// packet's reversed (its conntrack entry may be gone: a block deleted it).
    #[allow(clippy::too_many_arguments)]
    fn is_reply(
        &self,
        container: &str,
        rule: &str,
        proto: u8,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
    ) -> bool {
        if rule == crate::compile::QUARANTINE_REPLY_RULE {
            return true;
        }
        let Some(c) = self.strs.find(container) else { return false };
        let tuple = Tuple { src: dst, dst: src, proto, sport: dport, dport: sport };
        self.index
            .get(&self.rows, &Key::Flow { container: c, tuple })
            .is_some_and(|i| !self.rows[i as usize].attempt)
    }

    /// Open (kernel-tracked) flows per container: the usage `max_conns` caps.
    pub fn open_flows(&self) -> HashMap<String, usize> {
        let mut by: HashMap<u32, usize> = HashMap::new();
        for r in self.rows.iter().filter(|r| r.open && !r.attempt) {
            *by.entry(r.container).or_default() += 1;
        }
        by.into_iter().filter_map(|(c, n)| Some((self.strs.get(c)?.to_string(), n))).collect()
    }

    /// Connections each container opened that are still live: egress flows the kernel tracks,
    /// not closing (TIME_WAIT, CLOSE). What `max_conns` caps: the kernel's connection count
    /// skips closed TCP connections too, and inbound ones are not the container's to count.
    pub fn originated_conns(&self) -> HashMap<String, usize> {
        const TIME_WAIT: u8 = 7;
        let mut by: HashMap<u32, usize> = HashMap::new();
        for r in self.rows.iter().filter(|r| {
            r.open
                && !r.attempt
                && r.direction == Direction::Egress
                && !matches!(r.state, TIME_WAIT | ST_CLOSE)
        }) {
            *by.entry(r.container).or_default() += 1;
        }
        by.into_iter().filter_map(|(c, n)| Some((self.strs.get(c)?.to_string(), n))).collect()
    }

    /// Records what inspection found about the flow whose conntrack original tuple is
    /// `tuple` in `container`; returns the row id, or `None` when the row does not exist yet
    /// (the finding then waits, bounded, for conntrack's NEW event).
    pub fn annotate(&mut self, container: &str, tuple: Tuple, found: Inspection) -> Option<u64> {
        let key = self.strs.find(container).map(|c| Key::Flow { container: c, tuple });
        if let Some(i) = key.as_ref().and_then(|k| self.index.get(&self.rows, k)) {
            self.seq += 1;
            let r = &mut self.rows[i as usize];
            r.changed_at = self.seq;
            let id = r.id;
            self.inspections.insert(id, found);
            return Some(id);
        }
        let k: (Arc<str>, Tuple) = (Arc::from(container), tuple);
        if self.pending.insert(k.clone(), found).is_none() {
            self.pending_order.push_back(k);
            while self.pending_order.len() > PENDING_CAP {
                if let Some(old) = self.pending_order.pop_front() {
                    self.pending.remove(&old);
                }
            }
        }
        None
    }

    /// The row id of a flow, if it has a row.
    pub fn flow_id(&self, container: &str, tuple: Tuple) -> Option<u64> {
        let c = self.strs.find(container)?;
        self.index.get(&self.rows, &Key::Flow { container: c, tuple }).map(|i| self.rows[i as usize].id)
    }

    /// A DNS answer seen by `container`: `name` resolved to `addrs`. Rows of the container
    /// whose peer is one of them and unknown to fw show the name as their peer.
    pub fn learn_name(&mut self, container: &str, name: &str, addrs: &[IpAddr]) {
        let c: Arc<str> = Arc::from(container);
        let n: Arc<str> = Arc::from(name);
        for a in addrs {
            let k = (c.clone(), *a);
            if self.dns.insert(k.clone(), n.clone()).is_none() {
                self.dns_order.push_back(k);
            }
        }
        while self.dns_order.len() > DNS_NAMES_CAP {
            if let Some(old) = self.dns_order.pop_front() {
                self.dns.remove(&old);
            }
        }
        let Some(ci) = self.strs.find(container) else { return };
        let sym = self.strs.intern(name);
        for i in 0..self.rows.len() {
            let r = &self.rows[i];
            let peer_addr = if r.direction == Direction::Egress { r.tuple.dst } else { r.tuple.src };
            if r.container == ci && r.peer == NONE && addrs.contains(&peer_addr) {
                self.seq += 1;
                let r = &mut self.rows[i];
                r.peer = sym;
                r.changed_at = self.seq;
            }
        }
    }

    /// The name `container` resolved for `addr`, from inspected DNS answers.
    pub fn dns_name(&self, container: &str, addr: IpAddr) -> Option<&str> {
        self.dns.get(&(Arc::from(container), addr)).map(|n| &**n)
    }

    /// Drops every row of a container that is gone.
    pub fn forget_container(&mut self, container: &str) {
        let Some(c) = self.strs.find(container) else { return };
        let mut i = self.rows.len();
        while i > 0 {
            i -= 1;
            if self.rows[i].container == c {
                self.remove_at(i);
            }
        }
        self.maybe_compact();
    }

    /// Asks the context again for every row's zone, peer and (for flows) verdict and rule:
    /// after a reload, so rows show what the policy now says.
    pub fn reattribute(&mut self, ctx: &dyn Context) {
        for i in 0..self.rows.len() {
            let r = self.rows[i].clone();
            let Some(container) = self.strs.get(r.container).map(str::to_owned) else { continue };
            let peer_addr = if r.direction == Direction::Egress { r.tuple.dst } else { r.tuple.src };
            let who = self.who(&container, peer_addr, ctx);
            let (verdict, rule) = if r.attempt {
                (r.verdict, r.rule)
            } else {
                let (v, rule) = ctx.attribute(
                    &container,
                    r.direction,
                    Proto::from_number(r.tuple.proto),
                    peer_addr,
                    r.tuple.dport,
                );
                (v, rule.map_or(NONE, |x| self.rules.add(Arc::new(x))))
            };
            if (who.zone, who.peer, who.peer_zone, verdict, rule)
                != (r.zone, r.peer, r.peer_zone, r.verdict, r.rule)
            {
                self.seq += 1;
                let r = &mut self.rows[i];
                (r.zone, r.peer, r.peer_zone, r.verdict, r.rule) =
                    (who.zone, who.peer, who.peer_zone, verdict, rule);
                r.changed_at = self.seq;
            }
        }
        self.maybe_compact();
    }

    /// Rows matching `filter`, newest `last_seen` first, at most `limit` of them.
    pub fn snapshot(&self, filter: &FlowFilter, limit: Option<usize>) -> FlowSnapshot {
        let m = Matcher::new(self, filter);
        let mut hits: Vec<&Row> = self.rows.iter().filter(|r| m.matches(r)).collect();
        let total = hits.len();
        newest_first(&mut hits, limit);
        FlowSnapshot { flows: hits.iter().map(|r| self.to_row(r)).collect(), total, lost_events: self.lost }
    }

    /// Rows matching `filter` changed after position `since`, and ids removed since then;
    /// `None` (a new subscriber) or a position older than the removal log gives every
    /// matching row with `full: true`. O(rows) per call.
    pub fn changes_since(&self, since: Option<u64>, filter: &FlowFilter) -> Changes {
        let full = match since {
            None => true,
            Some(s) => s < self.removals_floor || s > self.seq,
        };
        let since = if full { 0 } else { since.unwrap_or(0) };
        let m = Matcher::new(self, filter);
        let mut total = 0;
        let mut hits: Vec<&Row> = Vec::new();
        for r in &self.rows {
            if m.matches(r) {
                total += 1;
                if full || r.changed_at > since {
                    hits.push(r);
                }
            }
        }
        newest_first(&mut hits, None);
        let removed = if full {
            Vec::new()
        } else {
            // Ids are creation positions: a row born after `since` was never sent.
            let start = self.removals.partition_point(|&(s, _)| s <= since);
            self.removals.range(start..).filter(|&&(_, id)| id <= since).map(|&(_, id)| id).collect()
        };
        Changes {
            changed: hits.iter().map(|r| self.to_row(r)).collect(),
            removed,
            total,
            next: self.seq,
            full,
        }
    }

    // ---- internals ----

    /// Adds or updates the flow row of one conntrack entry; returns its id (None if the
    /// entry could not be kept). `dump`: the entry comes from a dump, so an existing row keeps
    /// its `first_seen` even if it was closed.
    fn upsert_flow(
        &mut self,
        container: &str,
        e: &CtEntry,
        kind: CtKind,
        dump: bool,
        now_ms: i64,
        ctx: &dyn Context,
    ) -> Option<u64> {
        let c = self.strs.intern(container);
        let key = Key::Flow { container: c, tuple: e.orig };
        self.seq += 1;
        let seq = self.seq;
        if let Some(i) = self.index.get(&self.rows, &key) {
            let r = &mut self.rows[i as usize];
            if kind == CtKind::New && !r.open && !dump {
                // The tuple was reused by a new connection: start over.
                r.first_seen_ms = now_ms;
                (r.bytes_out, r.bytes_in, r.packets_out, r.packets_in) = (0, 0, 0, 0);
                (r.sample_out, r.sample_in, r.sample_ms) = (0, 0, NO_SAMPLE);
                (r.rate_out, r.rate_in) = (0, 0);
                let id = r.id;
                self.inspections.remove(&id);
            }
            let r = &mut self.rows[i as usize];
            r.last_seen_ms = r.last_seen_ms.max(now_ms);
            r.changed_at = seq;
            update_counters(r, e, now_ms);
            if kind == CtKind::Destroy {
                close(r);
            } else {
                r.open = true;
                r.state = flow_state(e, true);
            }
            return Some(r.id);
        }
        let local = ctx.local_addrs(container);
        let direction = if local.contains(&e.orig.src) || e.orig.src.is_loopback() {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let peer_addr = if direction == Direction::Egress { e.orig.dst } else { e.orig.src };
        let proto = Proto::from_number(e.orig.proto);
        let (verdict, rule) = ctx.attribute(container, direction, proto, peer_addr, e.orig.dport);
        let rule = rule.map_or(NONE, |r| self.rules.add(Arc::new(r)));
        let who = self.who(container, peer_addr, ctx);
        let open = kind != CtKind::Destroy;
        let mut r = Row {
            id: seq,
            changed_at: seq,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            bytes_out: 0,
            bytes_in: 0,
            packets_out: 0,
            packets_in: 0,
            rate_out: 0,
            rate_in: 0,
            sample_out: 0,
            sample_in: 0,
            sample_ms: NO_SAMPLE,
            count: 1,
            tuple: e.orig,
            container: c,
            zone: who.zone,
            peer: who.peer,
            peer_zone: who.peer_zone,
            rule,
            rule_key: NONE,
            state: 0,
            direction,
            verdict,
            open,
            attempt: false,
        };
        update_counters(&mut r, e, now_ms);
        if open {
            r.state = flow_state(e, true);
        } else {
            close(&mut r);
        }
        if !self.pending.is_empty() {
            if let Some(found) = self.pending.remove(&(Arc::from(container), e.orig)) {
                self.inspections.insert(seq, found);
            }
        }
        self.insert(r);
        Some(seq)
    }

    fn who(&mut self, container: &str, peer_addr: IpAddr, ctx: &dyn Context) -> Who {
        let zone = ctx.zone_of(container);
        let peer = ctx.peer(peer_addr);
        let learned = match &peer {
            None if !self.dns.is_empty() => self.dns.get(&(Arc::from(container), peer_addr)).cloned(),
            _ => None,
        };
        Who {
            zone: self.strs.intern(zone.as_deref().unwrap_or("")),
            peer: match (&peer, learned) {
                (None, Some(name)) => self.strs.intern(&name),
                _ => self.strs.intern_opt(peer.as_ref().map(|p| p.0.as_str())),
            },
            peer_zone: self.strs.intern_opt(peer.as_ref().map(|p| p.1.as_str())),
        }
    }

    fn insert(&mut self, row: Row) {
        if self.rows.len() >= self.cap {
            self.evict_batch();
        }
        let i = self.rows.len() as u32;
        self.rows.push(row);
        self.index.insert(&self.rows, i);
    }

    /// Evicts `cap / 16` rows (at least one), lowest [`Row::evict_rank`] first.
    fn evict_batch(&mut self) {
        let k = (self.cap / 16).max(1).min(self.rows.len());
        if k == 0 {
            return;
        }
        let mut ranks: Vec<((u8, i64), u32)> =
            self.rows.iter().enumerate().map(|(i, r)| (r.evict_rank(), i as u32)).collect();
        ranks.select_nth_unstable(k - 1);
        let mut victims: Vec<u32> = ranks[..k].iter().map(|x| x.1).collect();
        // Highest slot first: what swap_remove moves down is never a pending victim.
        victims.sort_unstable_by(|a, b| b.cmp(a));
        let open = victims.iter().filter(|&&v| self.rows[v as usize].evict_rank().0 == 2).count();
        for v in victims {
            self.remove_at(v as usize);
        }
        self.evicted += k as u64;
        self.evicted_open += open as u64;
    }

    fn remove_at(&mut self, i: usize) {
        let last = self.rows.len().saturating_sub(1);
        let Some(gone) = self.rows.get(i).map(Row::key) else { return };
        self.index.remove(&gone, i as u32);
        if i != last {
            let moved = self.rows[last].key();
            self.index.reslot(&moved, last as u32, i as u32);
        }
        let row = self.rows.swap_remove(i);
        if !self.inspections.is_empty() {
            self.inspections.remove(&row.id);
        }
        self.seq += 1;
        self.removals.push_back((self.seq, row.id));
        let keep = self.cap.max(1024);
        while self.removals.len() > keep {
            if let Some((s, _)) = self.removals.pop_front() {
                self.removals_floor = s;
            }
        }
    }

    /// Rebuilds the interners from the live rows once dead entries outnumber live ones.
    /// Only called between operations: symbols held in locals would go stale.
    fn maybe_compact(&mut self) {
        if self.strs.len() <= 2 * self.strs_live + 1024 && self.rules.len() <= 2 * self.rules_live + 1024 {
            return;
        }
        self.compact();
    }

    fn compact(&mut self) {
        let (old_strs, old_rules) = (std::mem::take(&mut self.strs), std::mem::take(&mut self.rules));
        let remap_s = |new: &mut Interner<str>, s: u32| -> u32 {
            match old_strs.values.get(s as usize) {
                Some(v) => new.add(v.clone()),
                None => NONE,
            }
        };
        for r in &mut self.rows {
            r.container = remap_s(&mut self.strs, r.container);
            r.zone = remap_s(&mut self.strs, r.zone);
            r.peer = remap_s(&mut self.strs, r.peer);
            r.peer_zone = remap_s(&mut self.strs, r.peer_zone);
            r.rule_key = remap_s(&mut self.strs, r.rule_key);
            r.rule = match old_rules.values.get(r.rule as usize) {
                Some(v) => self.rules.add(v.clone()),
                None => NONE,
            };
        }
        self.index.rebuild(&self.rows);
        self.strs_live = self.strs.len();
        self.rules_live = self.rules.len();
    }

    fn to_row(&self, r: &Row) -> FlowRow {
        let s = |i: u32| self.strs.get(i).map(str::to_owned);
        FlowRow {
            id: r.id,
            container: s(r.container).unwrap_or_default(),
            zone: s(r.zone).unwrap_or_default(),
            direction: r.direction,
            proto: Proto::from_number(r.tuple.proto),
            src: r.tuple.src,
            sport: r.tuple.sport,
            dst: r.tuple.dst,
            dport: r.tuple.dport,
            peer: s(r.peer),
            peer_zone: s(r.peer_zone),
            state: state_name(r.state).to_string(),
            bytes_out: r.bytes_out,
            bytes_in: r.bytes_in,
            packets_out: r.packets_out,
            packets_in: r.packets_in,
            rate_out: r.rate_out,
            rate_in: r.rate_in,
            first_seen_ms: r.first_seen_ms,
            last_seen_ms: r.last_seen_ms,
            verdict: r.verdict,
            rule: self.rules.get(r.rule).cloned(),
            count: r.count,
            inspection: self.inspections.get(&r.id).cloned(),
            open: r.open,
        }
    }
}

fn newest_first(rows: &mut Vec<&Row>, limit: Option<usize>) {
    let order = |a: &&Row, b: &&Row| (b.last_seen_ms, b.id).cmp(&(a.last_seen_ms, a.id));
    if let Some(n) = limit {
        if n == 0 {
            rows.clear();
            return;
        }
        if n < rows.len() {
            rows.select_nth_unstable_by(n - 1, order);
            rows.truncate(n);
        }
    }
    rows.sort_unstable_by(order);
}

fn flow_state(e: &CtEntry, open: bool) -> u8 {
    match e.tcp_state {
        Some(s) if e.orig.proto == 6 && usize::from(s) < TCP_STATES.len() => s,
        _ if open => ST_OPEN,
        _ => ST_CLOSED,
    }
}

fn close(r: &mut Row) {
    r.open = false;
    r.state = if r.tuple.proto == 6 { ST_CLOSE } else { ST_CLOSED };
    (r.rate_out, r.rate_in) = (0, 0);
}

/// Takes the entry's counters, oriented from the container's side, and updates the rates.
/// Conntrack only sends counters in dumps and DESTROY events: an entry with all counters zero
/// carries none, and leaves the row's alone.
fn update_counters(r: &mut Row, e: &CtEntry, now_ms: i64) {
    if (e.packets_orig, e.bytes_orig, e.packets_reply, e.bytes_reply) == (0, 0, 0, 0) {
        return;
    }
    let (bo, po, bi, pi) = match r.direction {
        Direction::Egress => (e.bytes_orig, e.packets_orig, e.bytes_reply, e.packets_reply),
        Direction::Ingress => (e.bytes_reply, e.packets_reply, e.bytes_orig, e.packets_orig),
    };
    // Counters of one entry only grow; a smaller value is a stale message.
    r.bytes_out = r.bytes_out.max(bo);
    r.bytes_in = r.bytes_in.max(bi);
    r.packets_out = r.packets_out.max(po);
    r.packets_in = r.packets_in.max(pi);
    if r.sample_ms == NO_SAMPLE {
        // The first sample: a baseline, no rate yet.
        (r.sample_out, r.sample_in, r.sample_ms) = (r.bytes_out, r.bytes_in, now_ms);
        return;
    }
    let elapsed = now_ms.saturating_sub(r.sample_ms);
    if elapsed > 0 {
        let rate = |now: u64, then: u64| {
            let per_s = u128::from(now.saturating_sub(then)) * 1000 / elapsed as u128;
            u64::try_from(per_s).unwrap_or(u64::MAX)
        };
        r.rate_out = rate(r.bytes_out, r.sample_out);
        r.rate_in = rate(r.bytes_in, r.sample_in);
        (r.sample_out, r.sample_in, r.sample_ms) = (r.bytes_out, r.bytes_in, now_ms);
    }
}

/// A reference for a tag whose rule the context does not know (e.g. a rule since removed).
fn fallback_rule(kind: &str, id: &str) -> RuleRef {
    let kind = match kind {
        "cap" => RuleKind::Cap,
        "block" => RuleKind::Block,
        _ if id == "default" => RuleKind::Default,
        _ => RuleKind::Policy,
    };
    RuleRef { kind, id: id.to_string(), source: None }
}

/// [`FlowFilter::matches`] over internal rows, without building a [`FlowRow`] per row: the
/// one filter language (`fw_proto::filter`) reads a row through [`Fields`]. A filter that does
/// not compile matches nothing (the control server refuses it before it gets here).
struct Matcher<'f> {
    table: &'f FlowTable,
    filter: Option<Filter>,
    /// The haystack of the row being matched, for bare words.
    scratch: std::cell::RefCell<String>,
}

impl<'f> Matcher<'f> {
    fn new(t: &'f FlowTable, filter: &'f FlowFilter) -> Matcher<'f> {
        Matcher { table: t, filter: filter.compile().ok(), scratch: Default::default() }
    }

    fn matches(&self, r: &Row) -> bool {
        match &self.filter {
            None => false,
            Some(f) if f.is_empty() => true,
            Some(f) => f.matches_with(&Fields { t: self.table, r }, &mut self.scratch.borrow_mut()),
        }
    }
}

/// A row as the filter language sees it.
struct Fields<'a> {
    t: &'a FlowTable,
    r: &'a Row,
}

impl FlowFields for Fields<'_> {
    fn container(&self) -> &str {
        self.t.strs.get(self.r.container).unwrap_or("")
    }
    fn zone(&self) -> &str {
        self.t.strs.get(self.r.zone).unwrap_or("")
    }
    fn peer(&self) -> Option<&str> {
        self.t.strs.get(self.r.peer)
    }
    fn peer_zone(&self) -> Option<&str> {
        self.t.strs.get(self.r.peer_zone)
    }
    fn direction(&self) -> Direction {
        self.r.direction
    }
    fn proto(&self) -> Proto {
        Proto::from_number(self.r.tuple.proto)
    }
    fn src(&self) -> IpAddr {
        self.r.tuple.src
    }
    fn sport(&self) -> u16 {
        self.r.tuple.sport
    }
    fn dst(&self) -> IpAddr {
        self.r.tuple.dst
    }
    fn dport(&self) -> u16 {
        self.r.tuple.dport
    }
    fn state(&self) -> &str {
        state_name(self.r.state)
    }
    fn verdict(&self) -> FlowVerdict {
        self.r.verdict
    }
    fn rule_id(&self) -> Option<&str> {
        self.t.rules.get(self.r.rule).map(|x| x.id.as_str())
    }
    fn inspection(&self) -> Option<&Inspection> {
        self.t.inspections.get(&self.r.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::nflog::Tag;
    use proptest::prelude::*;

    const WEB: &str = "10.0.0.2";
    const DB: &str = "10.0.0.3";
    const OUTSIDE: &str = "192.0.2.9";

    struct Fake {
        addrs: HashMap<String, Vec<IpAddr>>,
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fake() -> Fake {
        let mut addrs = HashMap::new();
        addrs.insert("web-1".to_string(), vec![ip(WEB)]);
        addrs.insert("db-1".to_string(), vec![ip(DB)]);
        Fake { addrs }
    }

    impl Context for Fake {
        fn zone_of(&self, container: &str) -> Option<String> {
            Some(container.split('-').next()?.to_string())
        }
        fn local_addrs(&self, container: &str) -> &[IpAddr] {
            self.addrs.get(container).map_or(&[], Vec::as_slice)
        }
        fn peer(&self, addr: IpAddr) -> Option<(String, String)> {
            self.addrs
                .iter()
                .find(|(_, a)| a.contains(&addr))
                .map(|(c, _)| (c.clone(), c.split('-').next().unwrap_or("").to_string()))
        }
        fn attribute(
            &self,
            _container: &str,
            _direction: Direction,
            _proto: Proto,
            _peer: IpAddr,
            port: u16,
        ) -> (FlowVerdict, Option<RuleRef>) {
            if port == 5432 {
                let r = RuleRef {
                    kind: RuleKind::Policy,
                    id: "web-to-db".into(),
                    source: Some("p.toml:3".into()),
                };
                (FlowVerdict::Allowed, Some(r))
            } else {
                (FlowVerdict::Allowed, None)
            }
        }
        fn rule_ref(&self, _container: &str, rule_id: &str) -> Option<RuleRef> {
            (rule_id == "default").then(|| RuleRef {
                kind: RuleKind::Default,
                id: "default".into(),
                source: None,
            })
        }
    }

    fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple { src: ip(src), dst: ip(dst), proto: 6, sport, dport }
    }

    fn entry(orig: Tuple) -> CtEntry {
        CtEntry {
            id: None,
            orig,
            reply: Tuple {
                src: orig.dst,
                dst: orig.src,
                proto: orig.proto,
                sport: orig.dport,
                dport: orig.sport,
            },
            tcp_state: Some(3),
            status: 0,
            packets_orig: 0,
            bytes_orig: 0,
            packets_reply: 0,
            bytes_reply: 0,
            mark: 0,
        }
    }

    fn ev(kind: CtKind, entry: CtEntry) -> CtEvent {
        CtEvent { kind, entry }
    }

    fn counted(mut e: CtEntry, orig: (u64, u64), reply: (u64, u64)) -> CtEntry {
        (e.packets_orig, e.bytes_orig, e.packets_reply, e.bytes_reply) = (orig.0, orig.1, reply.0, reply.1);
        e
    }

    fn denied(src: &str, sport: u16, dst: &str, dport: u16, kind: &str, rule: &str) -> LogRecord {
        LogRecord {
            prefix: format!("fw:{kind}:{rule}"),
            tag: Some(Tag { kind: kind.into(), rule: rule.into() }),
            indev: None,
            outdev: Some(2),
            src: Some(ip(src)),
            dst: Some(ip(dst)),
            proto: Some(6),
            sport: Some(sport),
            dport: Some(dport),
            payload: Vec::new(),
        }
    }

    fn all(t: &FlowTable) -> Vec<FlowRow> {
        t.snapshot(&FlowFilter::default(), None).flows
    }

    fn check_invariants(t: &FlowTable) {
        assert!(t.len() <= t.cap());
        assert_eq!(t.index.len(), t.rows.len());
        for (i, r) in t.rows.iter().enumerate() {
            assert_eq!(t.index.get(&t.rows, &r.key()), Some(i as u32));
            assert!(t.strs.get(r.container).is_some());
        }
    }

    #[test]
    fn rows_are_compact() {
        let row = std::mem::size_of::<Row>();
        let entry = std::mem::size_of::<u32>();
        eprintln!("row {row} bytes, index entry {entry} bytes");
        assert!(row <= 184, "row grew to {row} bytes");
        // Row + index entry (+ ~1/7 load-factor slack and a control byte) + removal log slot.
        let per_row = row + entry * 8 / 7 + 1 + 16;
        assert!(per_row * DEFAULT_CAP < 40 << 20, "{per_row} bytes per row");
    }

    #[test]
    fn egress_and_ingress_orient_counters_from_the_containers_side() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        // web-1 connects out to db-1:5432: orig = web -> db.
        let out = counted(entry(tuple(WEB, 40000, DB, 5432)), (10, 1000), (8, 5000));
        t.apply_ct("web-1", &ev(CtKind::New, out), 1000, &ctx);
        // Someone connects in to web-1:80: orig = outside -> web.
        let inn = counted(entry(tuple(OUTSIDE, 50000, WEB, 80)), (4, 300), (6, 9000));
        t.apply_ct("web-1", &ev(CtKind::New, inn), 1000, &ctx);
        let rows = all(&t);
        let e = rows.iter().find(|r| r.dport == 5432).unwrap();
        assert_eq!(e.direction, Direction::Egress);
        assert_eq!((e.bytes_out, e.bytes_in, e.packets_out, e.packets_in), (1000, 5000, 10, 8));
        assert_eq!(
            (e.peer.as_deref(), e.peer_zone.as_deref(), e.zone.as_str()),
            (Some("db-1"), Some("db"), "web")
        );
        assert_eq!(e.rule.as_ref().map(|r| r.id.as_str()), Some("web-to-db"));
        assert_eq!((e.src, e.sport, e.dst), (ip(WEB), 40000, ip(DB)));
        let i = rows.iter().find(|r| r.dport == 80).unwrap();
        assert_eq!(i.direction, Direction::Ingress);
        assert_eq!((i.bytes_out, i.bytes_in, i.packets_out, i.packets_in), (9000, 300, 6, 4));
        assert_eq!(i.peer, None);
    }

    #[test]
    fn new_update_destroy_lifecycle() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        let tu = tuple(WEB, 40000, DB, 5432);
        let mut e = entry(tu);
        e.tcp_state = Some(1);
        t.apply_ct("web-1", &ev(CtKind::New, e.clone()), 1000, &ctx);
        let r = &all(&t)[0];
        assert_eq!((r.state.as_str(), r.open, r.count, r.first_seen_ms), ("SYN_SENT", true, 1, 1000));
        let id = r.id;
        e.tcp_state = Some(3);
        t.apply_ct("web-1", &ev(CtKind::Update, e.clone()), 1500, &ctx);
        let r = &all(&t)[0];
        assert_eq!((r.id, r.state.as_str(), r.open, r.last_seen_ms), (id, "ESTABLISHED", true, 1500));
        e.tcp_state = Some(7);
        let fin = counted(e.clone(), (20, 2000), (20, 4000));
        t.apply_ct("web-1", &ev(CtKind::Destroy, fin), 3000, &ctx);
        let r = &all(&t)[0];
        assert_eq!((r.id, r.state.as_str(), r.open), (id, "CLOSE", false));
        assert_eq!((r.first_seen_ms, r.last_seen_ms, r.bytes_out, r.bytes_in), (1000, 3000, 2000, 4000));
        assert_eq!((r.rate_out, r.rate_in), (0, 0), "a closed flow moves nothing");
        assert_eq!(t.len(), 1, "closed rows stay until evicted");

        // UDP rows say open/closed; a DESTROY for an unknown flow still makes a (closed) row.
        let mut u = entry(Tuple { proto: 17, ..tuple(WEB, 5353, OUTSIDE, 53) });
        u.tcp_state = None;
        t.apply_ct("web-1", &ev(CtKind::New, u.clone()), 1000, &ctx);
        assert_eq!(all(&t).iter().find(|r| r.dport == 53).unwrap().state, "open");
        let mut v = entry(Tuple { proto: 17, ..tuple(WEB, 5354, OUTSIDE, 53) });
        v.tcp_state = None;
        t.apply_ct("web-1", &ev(CtKind::Destroy, v), 1000, &ctx);
        let r = all(&t).into_iter().find(|r| r.sport == 5354).unwrap();
        assert_eq!((r.state.as_str(), r.open), ("closed", false));

        // The tuple reused by a new connection starts a fresh life on the same row.
        e.tcp_state = Some(1);
        t.apply_ct("web-1", &ev(CtKind::New, e), 9000, &ctx);
        let r = all(&t).into_iter().find(|r| r.id == id).unwrap();
        assert_eq!((r.open, r.first_seen_ms, r.bytes_out, r.state.as_str()), (true, 9000, 0, "SYN_SENT"));
    }

    #[test]
    fn rates_come_from_counter_deltas() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        let e = entry(tuple(WEB, 40000, DB, 5432));
        t.apply_ct("web-1", &ev(CtKind::New, counted(e.clone(), (1, 100), (1, 50))), 1000, &ctx);
        assert_eq!((all(&t)[0].rate_out, all(&t)[0].rate_in), (0, 0), "no rate from one sample");
        t.replace_dump("web-1", &[counted(e.clone(), (5, 2100), (5, 1050))], t.seq(), 3000, &ctx);
        let r = &all(&t)[0];
        assert_eq!((r.rate_out, r.rate_in), (1000, 500));
        // An update without counters (conntrack sends them only in dumps and DESTROY) keeps
        // counters and rates.
        t.apply_ct("web-1", &ev(CtKind::Update, e.clone()), 3500, &ctx);
        let r = &all(&t)[0];
        assert_eq!((r.bytes_out, r.rate_out), (2100, 1000));
        // Two samples in the same millisecond: the rate waits for time to pass, losing nothing.
        t.replace_dump("web-1", &[counted(e.clone(), (6, 2600), (5, 1050))], t.seq(), 3000, &ctx);
        t.replace_dump("web-1", &[counted(e.clone(), (7, 4100), (5, 1050))], t.seq(), 4000, &ctx);
        let r = &all(&t)[0];
        assert_eq!((r.bytes_out, r.rate_out, r.rate_in), (4100, 2000, 0));
    }

    #[test]
    fn open_flows_count_tracked_flows_per_container_and_log_records_name_their_row() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        for sport in [40000, 40001, 40002] {
            t.apply_ct("web-1", &ev(CtKind::New, entry(tuple(WEB, sport, DB, 5432))), 1000, &ctx);
        }
        t.apply_ct("db-1", &ev(CtKind::New, entry(tuple(WEB, 40000, DB, 5432))), 1000, &ctx);
        t.apply_ct("web-1", &ev(CtKind::Destroy, entry(tuple(WEB, 40002, DB, 5432))), 2000, &ctx);
        // Attempts are not flows the kernel tracks.
        let a = t.apply_log("web-1", &denied(WEB, 1, OUTSIDE, 443, "cap", "web:max_conns"), 2000, &ctx);
        let b = t.apply_log("web-1", &denied(WEB, 2, OUTSIDE, 443, "cap", "web:max_conns"), 2100, &ctx);
        assert!(a.is_some() && a == b, "one aggregated row: {a:?} {b:?}");
        assert_eq!(all(&t).iter().find(|r| r.dport == 443).map(|r| r.id), a);
        assert_eq!(t.apply_log("web-1", &denied(WEB, 1, OUTSIDE, 443, "log", "x"), 2000, &ctx), None);
        let open = t.open_flows();
        assert_eq!((open.get("web-1"), open.get("db-1"), open.len()), (Some(&2), Some(&1), 2));
    }

    /// `max_conns` counts what a container opened and is still open: not inbound connections,
    /// not TIME_WAIT (the console compared every tracked entry: `438/200` in alert colour).
    #[test]
    fn originated_conns_count_live_egress_only() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        for sport in [40000, 40001, 40002] {
            t.apply_ct("web-1", &ev(CtKind::New, entry(tuple(WEB, sport, DB, 5432))), 1000, &ctx);
        }
        let mut closing = entry(tuple(WEB, 40001, DB, 5432));
        closing.tcp_state = Some(7);
        t.apply_ct("web-1", &ev(CtKind::Update, closing), 1100, &ctx);
        // db-1 sees the same connections inbound: tracked, not opened by it.
        t.apply_ct("db-1", &ev(CtKind::New, entry(tuple(WEB, 40000, DB, 5432))), 1000, &ctx);
        let opened = t.originated_conns();
        assert_eq!((opened.get("web-1"), opened.get("db-1")), (Some(&2), None));
        let open = t.open_flows();
        assert_eq!((open.get("web-1"), open.get("db-1")), (Some(&3), Some(&1)));
    }

    #[test]
    fn dropped_replies_are_shown_on_their_connections_side() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        // Someone opened web-1:80; a block deleted the entry; web-1's answer is dropped.
        let inn = tuple(OUTSIDE, 50000, WEB, 80);
        t.apply_ct("web-1", &ev(CtKind::New, entry(inn)), 1000, &ctx);
        t.apply_ct("web-1", &ev(CtKind::Destroy, entry(inn)), 1100, &ctx);
        t.apply_log("web-1", &denied(WEB, 80, OUTSIDE, 50000, "block", "quarantine"), 1200, &ctx);
        // A reply a quarantine logs as one, on a connection this table never saw.
        t.apply_log("web-1", &denied(WEB, 8080, OUTSIDE, 50001, "block", "quarantine-reply"), 1200, &ctx);
        let attempts: Vec<FlowRow> = all(&t).into_iter().filter(|r| r.state == "dropped").collect();
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        for r in &attempts {
            assert_eq!(
                (r.direction, r.src, r.dst),
                (Direction::Ingress, ip(OUTSIDE), ip(WEB)),
                "a reply from web-1 is its ingress connection, never a new egress flow: {r:?}"
            );
            assert!(r.dport == 80 || r.dport == 8080, "{r:?}");
        }
        // web-1 opening something itself is still egress.
        t.apply_log("web-1", &denied(WEB, 40000, OUTSIDE, 443, "block", "quarantine"), 1300, &ctx);
        let r = all(&t).into_iter().find(|r| r.dport == 443).unwrap();
        assert_eq!((r.direction, r.src), (Direction::Egress, ip(WEB)));
    }

    #[test]
    fn denied_attempts_aggregate_across_source_ports() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        for i in 0..10u16 {
            t.apply_log(
                "web-1",
                &denied(WEB, 40000 + i, OUTSIDE, 443, "deny", "default"),
                1000 + i64::from(i),
                &ctx,
            );
        }
        assert_eq!(t.len(), 1);
        let r = &all(&t)[0];
        assert_eq!((r.count, r.sport, r.dport, r.verdict), (10, 40009, 443, FlowVerdict::Denied));
        assert_eq!((r.state.as_str(), r.open, r.direction), ("dropped", false, Direction::Egress));
        assert_eq!((r.first_seen_ms, r.last_seen_ms), (1000, 1009));
        assert_eq!(r.rule.as_ref().map(|x| x.kind), Some(RuleKind::Default));
        // Another port, rule or kind is another row; log records and untagged ones are not rows.
        t.apply_log("web-1", &denied(WEB, 1, OUTSIDE, 80, "deny", "default"), 2000, &ctx);
        t.apply_log("web-1", &denied(WEB, 1, OUTSIDE, 443, "audit", "no-web"), 2000, &ctx);
        t.apply_log("web-1", &denied(WEB, 1, OUTSIDE, 443, "cap", "web:max_conns"), 2000, &ctx);
        t.apply_log("web-1", &denied(WEB, 1, OUTSIDE, 443, "log", "x"), 2000, &ctx);
        t.apply_log(
            "web-1",
            &LogRecord { tag: None, ..denied(WEB, 1, OUTSIDE, 443, "deny", "x") },
            2000,
            &ctx,
        );
        assert_eq!(t.len(), 4);
        let rows = all(&t);
        let audit = rows.iter().find(|r| r.verdict == FlowVerdict::AuditDenied).unwrap();
        assert_eq!((audit.state.as_str(), audit.rule.as_ref().unwrap().kind), ("logged", RuleKind::Policy));
        let cap = rows.iter().find(|r| r.verdict == FlowVerdict::CapHit).unwrap();
        assert_eq!(cap.rule.as_ref().unwrap().kind, RuleKind::Cap);
        // Inbound attempts are ingress, with the peer resolved from the source.
        let mut r = denied(DB, 999, WEB, 22, "deny", "default");
        (r.indev, r.outdev) = (Some(2), None);
        t.apply_log("web-1", &r, 2000, &ctx);
        let r = all(&t).into_iter().find(|r| r.dport == 22).unwrap();
        assert_eq!((r.direction, r.peer.as_deref()), (Direction::Ingress, Some("db-1")));
    }

    #[test]
    fn replace_dump_closes_vanished_rows_and_keeps_first_seen() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        let a = entry(tuple(WEB, 1, DB, 5432));
        let b = entry(tuple(WEB, 2, DB, 5432));
        let c = entry(tuple(WEB, 3, DB, 5432));
        for e in [&a, &b] {
            t.apply_ct("web-1", &ev(CtKind::New, e.clone()), 1000, &ctx);
        }
        t.apply_ct("db-1", &ev(CtKind::New, entry(tuple(WEB, 1, DB, 5432))), 1000, &ctx);
        t.apply_log("web-1", &denied(WEB, 1, OUTSIDE, 443, "deny", "default"), 1000, &ctx);
        t.replace_dump("web-1", &[a.clone(), c.clone()], t.seq(), 5000, &ctx);
        let rows = all(&t);
        let get = |c: &str, sport: u16| rows.iter().find(|r| r.container == c && r.sport == sport).unwrap();
        assert_eq!(
            (get("web-1", 1).open, get("web-1", 1).first_seen_ms, get("web-1", 1).last_seen_ms),
            (true, 1000, 5000)
        );
        assert_eq!((get("web-1", 2).open, get("web-1", 2).state.as_str()), (false, "CLOSE"));
        assert_eq!((get("web-1", 3).open, get("web-1", 3).first_seen_ms), (true, 5000));
        assert!(get("db-1", 1).open, "other containers' rows are untouched");
        // A dump asked for before an event arrived does not close what the event opened.
        let taken = t.seq();
        let d = entry(tuple(WEB, 4, DB, 5432));
        t.apply_ct("web-1", &ev(CtKind::New, d.clone()), 5500, &ctx);
        t.replace_dump("web-1", &[a.clone(), c.clone()], taken, 6000, &ctx);
        assert!(
            all(&t).iter().any(|r| r.container == "web-1" && r.sport == 4 && r.open),
            "newer than the dump"
        );
        t.replace_dump("web-1", &[a.clone(), c.clone()], t.seq(), 6000, &ctx);
        assert!(
            all(&t).iter().any(|r| r.container == "web-1" && r.sport == 4 && !r.open),
            "gone by the next one"
        );
        assert_eq!(rows.iter().filter(|r| r.count == 1 && r.verdict == FlowVerdict::Denied).count(), 1);
        assert_eq!(t.len(), 6);
    }

    /// A refresh by lookups updates the counters of the flows found, closes those the kernel
    /// no longer has, and lists open flows per container for the next one.
    #[test]
    fn refresh_by_lookup_updates_found_flows_and_closes_gone_ones() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        let a = entry(tuple(WEB, 1, DB, 5432));
        let b = entry(tuple(WEB, 2, DB, 5432));
        for e in [&a, &b] {
            t.apply_ct("web-1", &ev(CtKind::New, e.clone()), 1000, &ctx);
        }
        t.apply_ct("db-1", &ev(CtKind::New, entry(tuple(WEB, 1, DB, 5432))), 1000, &ctx);
        let open = t.open_tuples();
        assert_eq!(open.get("web-1").map(Vec::len), Some(2));
        assert_eq!(open.get("db-1").map(Vec::len), Some(1));
        let seq = t.seq();
        let counted = counted(a.clone(), (10, 4000), (12, 8000));
        t.refresh("web-1", &[(a.orig, Some(counted)), (b.orig, None)], 3000, &ctx);
        let rows = all(&t);
        let get = |c: &str, sport: u16| rows.iter().find(|r| r.container == c && r.sport == sport).unwrap();
        assert_eq!(
            (get("web-1", 1).open, get("web-1", 1).bytes_out, get("web-1", 1).first_seen_ms),
            (true, 4000, 1000)
        );
        assert_eq!((get("web-1", 2).open, get("web-1", 2).state.as_str()), (false, "CLOSE"));
        assert!(get("db-1", 1).open, "other containers' rows are untouched");
        assert_eq!(t.changes_since(Some(seq), &FlowFilter::default()).changed.len(), 2);
        assert_eq!(t.open_tuples().get("web-1").map(Vec::len), Some(1));
        // Unknown containers and tuples are ignored.
        t.refresh("gone", &[(a.orig, None)], 4000, &ctx);
        t.refresh("web-1", &[(tuple(WEB, 9, DB, 1), None)], 4000, &ctx);
        check_invariants(&t);
    }

    #[test]
    fn eviction_prefers_closed_then_attempts_then_oldest_open() {
        let ctx = fake();
        let cap = 64;
        let mut t = FlowTable::new(cap);
        // 16 closed flows (recent), 16 attempt rows (older), 32 open flows (oldest).
        for i in 0..32u16 {
            t.apply_ct("web-1", &ev(CtKind::New, entry(tuple(WEB, i, DB, 5432))), i64::from(i), &ctx);
        }
        for i in 0..16u16 {
            t.apply_log("web-1", &denied(WEB, 1, OUTSIDE, i, "deny", "default"), 100 + i64::from(i), &ctx);
        }
        for i in 0..16u16 {
            let e = entry(tuple(WEB, 1000 + i, DB, 5432));
            t.apply_ct("web-1", &ev(CtKind::Destroy, e), 200 + i64::from(i), &ctx);
        }
        assert_eq!((t.len(), t.evicted(), t.evicted_open()), (64, 0, 0));
        let batch = cap / 16;
        let mut now = 1000;
        let mut next_port = 2000u16;
        let mut add_open = |t: &mut FlowTable, now: i64| {
            t.apply_ct("web-1", &ev(CtKind::New, entry(tuple(WEB, next_port, DB, 5432))), now, &ctx);
            next_port += 1;
        };
        // Four batches take the 16 closed rows, oldest first.
        add_open(&mut t, now);
        let closed = |t: &FlowTable| {
            all(t).into_iter().filter(|r| !r.open && r.verdict == FlowVerdict::Allowed).count()
        };
        assert_eq!((closed(&t), t.evicted()), (16 - batch, batch as u64));
        assert!(
            all(&t).iter().all(|r| !(1000..1000 + batch as u16).contains(&r.sport)),
            "oldest closed went first"
        );
        while closed(&t) > 0 {
            now += 1;
            add_open(&mut t, now);
        }
        assert_eq!(all(&t).iter().filter(|r| r.count == 1 && r.verdict == FlowVerdict::Denied).count(), 16);
        assert_eq!(t.evicted_open(), 0, "closed rows went, no open flow yet");
        // Then the attempts, then the oldest open flows.
        for _ in 0..(3 * cap) {
            now += 1;
            add_open(&mut t, now);
            assert!(t.len() <= cap);
        }
        let rows = all(&t);
        assert!(rows.iter().all(|r| r.open && r.sport >= 2000), "only the newest open flows remain");
        assert!(t.evicted() >= 2 * cap as u64);
        // Every open flow added beyond the room closed rows and attempts made was one dropped.
        let opened = u64::from(next_port - 2000) + 32;
        assert_eq!(t.evicted_open(), opened - t.len() as u64, "open rows dropped are counted");
        check_invariants(&t);
    }

    #[test]
    fn changes_since_reports_deltas_and_removals() {
        let ctx = fake();
        let mut t = FlowTable::new(1000);
        let f = FlowFilter::default();
        let a = entry(tuple(WEB, 1, DB, 5432));
        let b = entry(tuple(WEB, 2, DB, 5432));
        t.apply_ct("web-1", &ev(CtKind::New, a.clone()), 1000, &ctx);
        t.apply_ct("db-1", &ev(CtKind::New, b.clone()), 1000, &ctx);
        let first = t.changes_since(None, &f);
        assert!(first.full);
        assert_eq!((first.changed.len(), first.total, first.removed.len()), (2, 2, 0));
        let idle = t.changes_since(Some(first.next), &f);
        assert!(!idle.full && idle.changed.is_empty() && idle.removed.is_empty());
        assert_eq!(idle.next, first.next);

        t.apply_ct("web-1", &ev(CtKind::Update, a.clone()), 2000, &ctx);
        let c = entry(tuple(WEB, 3, DB, 5432));
        t.apply_ct("web-1", &ev(CtKind::New, c.clone()), 2000, &ctx);
        t.forget_container("db-1");
        let d = t.changes_since(Some(first.next), &f);
        assert!(!d.full);
        let mut sports: Vec<u16> = d.changed.iter().map(|r| r.sport).collect();
        sports.sort();
        assert_eq!(sports, vec![1, 3]);
        let db_id = first.changed.iter().find(|r| r.container == "db-1").unwrap().id;
        assert_eq!(d.removed, vec![db_id]);
        assert_eq!(d.total, 2);

        // A row born and removed between two polls was never sent: not reported as removed.
        t.apply_ct("db-1", &ev(CtKind::New, b), 3000, &ctx);
        t.forget_container("db-1");
        let e = t.changes_since(Some(d.next), &f);
        assert!(e.changed.is_empty() && e.removed.is_empty());

        // Filtered deltas.
        t.apply_ct("web-1", &ev(CtKind::Update, c), 4000, &ctx);
        let g = t.changes_since(Some(e.next), &FlowFilter { port: Some(1), ..Default::default() });
        assert!(g.changed.is_empty());
        assert_eq!(g.total, 1);

        // A reader behind the removal log gets everything again.
        let mut small = FlowTable::new(4);
        let s0 = small.changes_since(None, &f).next;
        for i in 0..3000u16 {
            small.apply_ct("web-1", &ev(CtKind::New, entry(tuple(WEB, i, DB, 1))), 1, &ctx);
        }
        let late = small.changes_since(Some(s0), &f);
        assert!(late.full);
        assert_eq!(late.changed.len(), small.len());
        assert!(late.removed.is_empty());
    }

    #[test]
    fn snapshot_filters_limits_and_orders_newest_first() {
        let ctx = fake();
        let mut t = FlowTable::new(100);
        for i in 0..10u16 {
            t.apply_ct("web-1", &ev(CtKind::New, entry(tuple(WEB, i, DB, 5432))), i64::from(i), &ctx);
            t.apply_ct(
                "web-1",
                &ev(CtKind::New, entry(tuple(WEB, 100 + i, OUTSIDE, 443))),
                i64::from(i),
                &ctx,
            );
        }
        t.apply_log("db-1", &denied(DB, 1, OUTSIDE, 443, "deny", "default"), 50, &ctx);
        t.add_lost(3);
        let s = t.snapshot(&FlowFilter::parse("container=web-1 port=5432").unwrap(), Some(3));
        assert_eq!((s.total, s.flows.len(), s.lost_events), (10, 3, 3));
        assert_eq!(s.flows.iter().map(|r| r.sport).collect::<Vec<_>>(), vec![9, 8, 7]);
        let s = t.snapshot(&FlowFilter::parse("zone=db").unwrap(), None);
        assert_eq!(s.total, 11, "peer zone matches too");
        let s = t.snapshot(&FlowFilter::parse("verdict=denied").unwrap(), None);
        assert_eq!((s.total, s.flows[0].container.as_str()), (1, "db-1"));
        let s = t.snapshot(&FlowFilter::parse("WEB-TO").unwrap(), Some(0));
        assert_eq!((s.total, s.flows.len()), (10, 0));
        assert_eq!(t.snapshot(&FlowFilter::parse("container=nope").unwrap(), None).total, 0);
        assert_eq!(t.snapshot(&FlowFilter::parse("192.0.2").unwrap(), None).total, 11);
        assert_eq!(t.snapshot(&FlowFilter::default(), None).flows[0].last_seen_ms, 50);
    }

    #[test]
    fn interners_are_compacted_when_containers_churn() {
        let ctx = fake();
        let mut t = FlowTable::new(10);
        for i in 0..5000u16 {
            let name = format!("job-{i}");
            t.apply_ct(&name, &ev(CtKind::New, entry(tuple(WEB, i, DB, 5432))), 1, &ctx);
            t.forget_container(&name);
        }
        assert!(t.strs.len() < 3000, "{} interned strings", t.strs.len());
        check_invariants(&t);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Ct(u8, u8, u8, u16, u16, u64),
        Log(u8, u8, u8, u16, u16, u8),
        Dump(u8, Vec<(u8, u16)>),
        Forget(u8),
        Lost(u8),
        Reattribute,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3u8, 0..3u8, 0..4u8, 0..6u16, 0..4u16, 0..1000u64).prop_map(|(c, k, a, s, d, b)| Op::Ct(c, k, a, s, d, b)),
            3 => (0..3u8, 0..5u8, 0..4u8, 0..6u16, 0..4u16, 0..3u8).prop_map(|(c, k, a, s, d, p)| Op::Log(c, k, a, s, d, p)),
            1 => (0..3u8, proptest::collection::vec((0..4u8, 0..6u16), 0..8)).prop_map(|(c, v)| Op::Dump(c, v)),
            1 => (0..3u8).prop_map(Op::Forget),
            1 => any::<u8>().prop_map(Op::Lost),
            1 => Just(Op::Reattribute),
        ]
    }

    fn addr(a: u8) -> &'static str {
        [WEB, DB, OUTSIDE, "2001:db8::1"][usize::from(a) % 4]
    }

    const NAMES: [&str; 3] = ["web-1", "db-1", "ghost"];

    fn filter() -> impl Strategy<Value = FlowFilter> {
        (
            proptest::option::of(proptest::sample::select(vec!["web-1", "db-1", "nope"])),
            proptest::option::of(proptest::sample::select(vec!["web", "db", ""])),
            proptest::option::of(proptest::sample::select(FlowVerdict::ALL.to_vec())),
            proptest::option::of(0..4u16),
            proptest::option::of(proptest::sample::select(vec![Proto::Tcp, Proto::Udp])),
            proptest::option::of(proptest::sample::select(vec![
                "WEB", "10.0", "db8", "default", "to-db", "zz",
            ])),
            proptest::option::of(proptest::sample::select(vec![
                "!verdict:deny",
                "port:1-2 dir:out",
                "dir:in 10.",
                ":1",
                "state:est !web",
                "rule:db peer:db",
            ])),
        )
            .prop_map(|(c, z, v, p, pr, t, e)| FlowFilter {
                container: c.map(String::from),
                zone: z.map(String::from),
                verdict: v,
                port: p,
                proto: pr,
                text: t.map(String::from),
                expr: e.map(String::from),
            })
    }

    proptest! {
        #[test]
        fn arbitrary_events_never_panic_or_exceed_the_cap(
            cap in 1..24usize,
            ops in proptest::collection::vec(op(), 0..200),
            f in filter(),
        ) {
            let ctx = fake();
            let mut t = FlowTable::new(cap);
            let mut now = 0i64;
            let mut since = None;
            for o in ops {
                now += 7;
                match o {
                    Op::Ct(c, k, a, s, d, b) => {
                        let mut e = entry(Tuple { proto: if d == 3 { 17 } else { 6 }, ..tuple(addr(a), s, addr(a + 1), d) });
                        e = counted(e, (b / 10, b), (b / 20, b / 2));
                        e.tcp_state = Some((b % 14) as u8);
                        let kind = [CtKind::New, CtKind::Update, CtKind::Destroy][usize::from(k)];
                        t.apply_ct(NAMES[usize::from(c)], &ev(kind, e), now, &ctx);
                    }
                    Op::Log(c, k, a, s, d, p) => {
                        let kind = ["deny", "audit", "cap", "block", "log"][usize::from(k)];
                        let rule = ["default", "r1", "r2"][usize::from(p)];
                        t.apply_log(NAMES[usize::from(c)], &denied(addr(a), s, addr(a + 2), d, kind, rule), now, &ctx);
                    }
                    Op::Dump(c, v) => {
                        let es: Vec<CtEntry> = v.iter().map(|&(a, s)| entry(tuple(addr(a), s, addr(a + 1), 1))).collect();
                        t.replace_dump(NAMES[usize::from(c)], &es, t.seq(), now, &ctx);
                    }
                    Op::Forget(c) => t.forget_container(NAMES[usize::from(c)]),
                    Op::Lost(n) => t.add_lost(u64::from(n)),
                    Op::Reattribute => t.reattribute(&ctx),
                }
                check_invariants(&t);
                let ch = t.changes_since(since, &f);
                prop_assert!(ch.next >= since.unwrap_or(0));
                since = Some(ch.next);
            }
            // The internal matcher agrees with FlowFilter::matches.
            let rows = all(&t);
            let want = rows.iter().filter(|r| f.matches(r)).count();
            let got = t.snapshot(&f, None);
            prop_assert_eq!(got.total, want);
            prop_assert!(got.flows.iter().all(|r| f.matches(r)));
            prop_assert!(got.flows.windows(2).all(|w| w[0].last_seen_ms >= w[1].last_seen_ms));
        }
    }
}
