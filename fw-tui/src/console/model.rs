//! What the console knows, shared by every screen: the daemon's status, blocks, alerts and
//! audit trail, and the flow table with the per-row data screens need (filter haystacks,
//! per-container usage, per-rule hits), kept up to date per delta, never per frame.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use fw_proto::control::{
    Alert, AuditRecord, BlockInfo, BlockTarget, FlowRow, FlowVerdict, Role, Scope, StatusInfo,
};
use fw_proto::filter::{write_haystack, Filter};

use crate::client::Hello;

/// Samples kept per container for the throughput sparkline.
pub const HISTORY: usize = 40;
/// Alerts kept (the daemon keeps 1000 too).
pub const ALERTS_KEPT: usize = 1000;

/// rustc's FxHash: a multiply and a rotate per word. Several times faster than the default
/// SipHash for flow ids and short names; keys come from our own daemon, so hash flooding is
/// not a concern.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// Per-container sums over its flow rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub flows: usize,
    pub open: usize,
    pub denied: u64,
    pub rate: u64,
}

/// Per-rule counts over the flow rows the rule decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hits {
    /// Allowed flow rows (open or recently closed).
    pub flows: u64,
    /// Denied, capped or blocked attempts (the rows' counts).
    pub attempts: u64,
}

/// What one delta changed, for the screens to patch their views.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    pub full: bool,
    /// Ids of rows added or changed (each once), then present in the table.
    pub changed: Vec<u64>,
    /// Ids changed or removed: every view position they held is stale.
    pub touched: FastSet<u64>,
    /// A row that is not `allowed` came, went or changed: the Drops screen regroups.
    pub denied: bool,
}

/// The flow table as the console keeps it.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    pub rows: FastMap<u64, FlowRow>,
    /// Each row's lower-case haystack for bare filter words, made when the row arrives or
    /// changes, never per keystroke.
    hay: FastMap<u64, Box<str>>,
    pub usage: FastMap<String, Usage>,
    pub hits: FastMap<String, Hits>,
    /// Ids of rows whose verdict is not `allowed`: what the Drops screen groups.
    pub denied: FastSet<u64>,
    /// Rows the daemon has (this console's view may lag).
    pub total: usize,
    pub lost_events: u64,
}

impl Flows {
    /// Applies a delta (or a full view, which replaces everything).
    pub fn apply(&mut self, changed: Vec<FlowRow>, removed: Vec<u64>, full: bool) -> Delta {
        let mut d = Delta { full, ..Delta::default() };
        let mut buf = String::with_capacity(128);
        if full {
            self.rows.clear();
            self.hay.clear();
            self.usage.clear();
            self.hits.clear();
            self.denied.clear();
            self.hay.reserve(changed.len());
            d.denied = true;
        }
        d.touched.reserve(changed.len() + removed.len());
        for id in removed {
            if let Some(old) = self.rows.remove(&id) {
                self.count(&old, -1);
            }
            self.hay.remove(&id);
            d.denied |= self.denied.remove(&id);
            d.touched.insert(id);
        }
        for r in changed {
            d.touched.insert(r.id);
            d.changed.push(r.id);
            self.count(&r, 1);
            self.hay.insert(r.id, hay_of(&r, &mut buf));
            let now_denied = r.verdict != FlowVerdict::Allowed;
            let id = r.id;
            if let Some(old) = self.rows.insert(id, r) {
                self.count(&old, -1);
            }
            // A denied row that came, changed or turned allowed regroups the Drops screen.
            let was_denied = if now_denied { !self.denied.insert(id) } else { self.denied.remove(&id) };
            d.denied |= now_denied || was_denied;
        }
        // A delta may name a row twice: each id once, in the table.
        d.changed.sort_unstable();
        d.changed.dedup();
        d
    }

    fn count(&mut self, r: &FlowRow, sign: i64) {
        let add = |x: &mut u64, n: u64| *x = if sign > 0 { x.saturating_add(n) } else { x.saturating_sub(n) };
        let addz =
            |x: &mut usize, n: usize| *x = if sign > 0 { x.saturating_add(n) } else { x.saturating_sub(n) };
        let u = match self.usage.get_mut(&r.container) {
            Some(u) => u,
            None => self.usage.entry(r.container.clone()).or_default(),
        };
        addz(&mut u.flows, 1);
        addz(&mut u.open, usize::from(r.open));
        let denied = r.verdict != FlowVerdict::Allowed;
        add(&mut u.denied, if denied { r.count } else { 0 });
        add(&mut u.rate, r.rate_in.saturating_add(r.rate_out));
        if let Some(rule) = &r.rule {
            let h = match self.hits.get_mut(&rule.id) {
                Some(h) => h,
                None => self.hits.entry(rule.id.clone()).or_default(),
            };
            if denied {
                add(&mut h.attempts, r.count.max(1));
            } else {
                add(&mut h.flows, 1);
            }
        }
    }

    /// Whether a row passes `filter`, its haystack taken from the cache.
    pub fn passes(&self, filter: &Filter, r: &FlowRow) -> bool {
        filter.matches_row(r, || self.hay.get(&r.id).map_or("", |h| h))
    }

    /// Whether the row `id` passes a [`Filter::text_only`] filter: its haystack alone.
    pub fn passes_text(&self, filter: &Filter, id: u64) -> bool {
        self.hay.get(&id).is_some_and(|h| filter.matches_text(h))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A row's haystack in one exact allocation, built in the reused `buf`.
fn hay_of(r: &FlowRow, buf: &mut String) -> Box<str> {
    buf.clear();
    write_haystack(r, buf);
    Box::from(buf.as_str())
}

/// The connection to the daemon, as the connection thread reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connecting { attempt: u32, error: Option<String> },
    Connected,
}

/// Everything the console knows from the daemon.
#[derive(Debug, Clone)]
pub struct Model {
    /// The wall clock, unix milliseconds.
    pub now_ms: i64,
    pub socket: String,
    pub conn: Conn,
    /// Whether a connection was ever made (to say "reconnected").
    pub was_connected: bool,
    pub hello: Option<Hello>,
    pub status: Option<StatusInfo>,
    pub flows: Flows,
    /// Newest first.
    pub alerts: VecDeque<Alert>,
    /// Newest first.
    pub audit: Vec<AuditRecord>,
    pub blocks: Vec<BlockInfo>,
    /// Per container, its recent rates (the newest last).
    pub history: FastMap<String, VecDeque<u64>>,
}

impl Model {
    pub fn new(socket: &str, now_ms: i64) -> Model {
        Model {
            now_ms,
            socket: socket.to_string(),
            conn: Conn::Connecting { attempt: 0, error: None },
            was_connected: false,
            hello: None,
            status: None,
            flows: Flows::default(),
            alerts: VecDeque::new(),
            audit: Vec::new(),
            blocks: Vec::new(),
            history: FastMap::default(),
        }
    }

    pub fn connected(&self) -> bool {
        self.conn == Conn::Connected
    }

    pub fn role(&self) -> Option<Role> {
        self.hello.as_ref().map(|h| h.role)
    }

    /// Why blocking keys do nothing, or `None` when they work.
    pub fn blocking_disabled(&self) -> Option<String> {
        match self.role() {
            None => Some("not connected".into()),
            Some(Role::Viewer) => Some("needs the operator role (you are a viewer)".into()),
            Some(_) => None,
        }
    }

    /// Blocks that apply to `container`, newest first.
    pub fn blocks_of(&self, container: &str) -> Vec<BlockInfo> {
        let mut v: Vec<BlockInfo> = self
            .blocks
            .iter()
            .filter(|b| {
                b.containers.iter().any(|c| c == container)
                    || match &b.target {
                        BlockTarget::Quarantine { container: c, .. }
                        | BlockTarget::Flow { container: c, .. } => c == container,
                        BlockTarget::Destination { scope: Scope::Container(c), .. } => c == container,
                        _ => false,
                    }
            })
            .cloned()
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.id));
        v
    }

    /// Merges alerts in, newest first, each once.
    pub fn add_alerts(&mut self, list: Vec<Alert>) {
        for a in list {
            if self.alerts.iter().any(|x| x.id == a.id) {
                continue;
            }
            let at = self.alerts.iter().position(|x| x.id < a.id).unwrap_or(self.alerts.len());
            self.alerts.insert(at, a);
        }
        self.alerts.truncate(ALERTS_KEPT);
    }

    /// One throughput sample per container.
    pub fn sample_history(&mut self) {
        let names: Vec<String> = match &self.status {
            Some(s) => s.containers.iter().map(|c| c.name.clone()).collect(),
            None => self.flows.usage.keys().cloned().collect(),
        };
        for n in names {
            let rate = self.flows.usage.get(&n).map_or(0, |u| u.rate);
            let h = self.history.entry(n).or_default();
            if h.len() >= HISTORY {
                h.pop_front();
            }
            h.push_back(rate);
        }
    }

    /// A rule source (`/etc/fw/rules/20-policies.toml:12`) relative to the rules directory
    /// (`20-policies.toml:12`): shorter, and its line number survives narrow columns.
    pub fn source<'a>(&self, src: &'a str) -> &'a str {
        let Some(dir) = self.status.as_ref().and_then(|s| s.rules_dir.as_deref()) else { return src };
        let dir = dir.trim_end_matches('/');
        match src.strip_prefix(dir) {
            Some(rest) if rest.starts_with('/') && !dir.is_empty() => &rest[1..],
            _ => src,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testdata;

    #[test]
    fn usage_and_hits_follow_deltas() {
        let mut f = Flows::default();
        f.apply(testdata::flows(), vec![], true);
        assert_eq!(f.usage["web-1"].flows, 3);
        assert_eq!(f.hits["default"].attempts, 17 + 3 + 3, "rows 3, 4 and 9");
        assert_eq!(f.hits["web-egress"].flows, 2);
        let d = f.apply(vec![], vec![3], false);
        assert!(d.denied && d.touched.contains(&3));
        assert_eq!(f.hits["default"].attempts, 6);
        let mut r = testdata::flow(1, "web-1", "10.1.0.3", 5432, FlowVerdict::Allowed);
        r.rule = None;
        let d = f.apply(vec![r], vec![], false);
        assert!(!d.denied, "an allowed row changed");
        assert_eq!(f.hits["web-egress"].flows, 1);
    }

    #[test]
    fn sources_are_shown_relative_to_the_rules_directory() {
        let mut m = Model::new("s", 0);
        m.status = Some(testdata::status());
        assert_eq!(m.source("/etc/fw/rules/20-policies.toml:14"), "20-policies.toml:14");
        assert_eq!(m.source("/etc/fw/rulesx/a.toml:1"), "/etc/fw/rulesx/a.toml:1");
        assert_eq!(m.source("rules/10-zones.toml:8:1"), "rules/10-zones.toml:8:1");
    }
}
