//! The console's state and how it changes: [`App::update`] takes a [`Msg`] (a key, a
//! message from the connection thread, a tick) and returns the [`Command`]s to send to the
//! daemon. Plain data, no I/O: tests drive it directly with a fixed clock.
//!
//! Sorting and filtering happen here, when data, filter or sort change, never while
//! rendering: [`App::view`] is the sorted, filtered list of flow ids, patched per delta.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use fw_proto::control::{
    Alert, Answer, AuditRecord, BlockDirection, BlockInfo, BlockTarget, FlowRow, FlowVerdict, Op, Proto,
    Role, Scope, StatusInfo,
};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};

use super::filter::{write_haystack, Filter};
use crate::client::Hello;

/// A row not updated for this long (or closed) is drawn dimmed.
pub const STALE_MS: i64 = 10_000;
/// Samples kept per container for the throughput sparkline.
pub const HISTORY: usize = 40;
/// Alerts kept (the daemon keeps 1000 too).
pub const ALERTS_KEPT: usize = 1000;
/// The TTL the block dialogs offer: the one default the CLI has too
/// ([`fw_proto::control::DEFAULT_BLOCK_TTL_SECS`]); empty is "until unblocked".
pub fn default_ttl() -> String {
    fw_proto::control::DEFAULT_BLOCK_TTL_SECS.map(crate::render::duration).unwrap_or_default()
}
/// From this many flow rows, typing a filter applies it once typing pauses for
/// [`FILTER_IDLE`] (or on Enter), not per key: a key costs nothing, however many rows.
pub const LIVE_FILTER_ROWS: usize = 20_000;
pub const FILTER_IDLE: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Screen {
    Flows,
    Drops,
    Containers,
    Rules,
    Audit,
}

impl Screen {
    pub const ALL: [Screen; 5] =
        [Screen::Flows, Screen::Drops, Screen::Containers, Screen::Rules, Screen::Audit];

    pub fn index(self) -> usize {
        match self {
            Screen::Flows => 0,
            Screen::Drops => 1,
            Screen::Containers => 2,
            Screen::Rules => 3,
            Screen::Audit => 4,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Screen::Flows => "Flows",
            Screen::Drops => "Drops & alerts",
            Screen::Containers => "Containers",
            Screen::Rules => "Rules",
            Screen::Audit => "Audit",
        }
    }
}

/// Flow table columns, in the order `s` cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Seen,
    Container,
    Zone,
    Dir,
    Proto,
    Src,
    Dst,
    Peer,
    State,
    Bytes,
    Rate,
    Verdict,
    Rule,
    Name,
}

impl Col {
    pub const ALL: [Col; 14] = [
        Col::Seen,
        Col::Container,
        Col::Zone,
        Col::Dir,
        Col::Proto,
        Col::Src,
        Col::Dst,
        Col::Peer,
        Col::State,
        Col::Bytes,
        Col::Rate,
        Col::Verdict,
        Col::Rule,
        Col::Name,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Col::Seen => "seen",
            Col::Container => "container",
            Col::Zone => "zone",
            Col::Dir => "direction",
            Col::Proto => "proto",
            Col::Src => "source",
            Col::Dst => "destination",
            Col::Peer => "peer",
            Col::State => "state",
            Col::Bytes => "bytes",
            Col::Rate => "rate",
            Col::Verdict => "verdict",
            Col::Rule => "rule",
            Col::Name => "name",
        }
    }

    fn next(self) -> Col {
        let i = Col::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Col::ALL[(i + 1) % Col::ALL.len()]
    }

    /// Numbers and times sort biggest / newest first unless reversed.
    fn descending(self) -> bool {
        matches!(self, Col::Seen | Col::Bytes | Col::Rate)
    }
}

/// Orders two rows by `col` (then by id, so the order is total and stable).
pub fn compare(a: &FlowRow, b: &FlowRow, col: Col, reverse: bool) -> Ordering {
    let o = match col {
        Col::Seen => a.last_seen_ms.cmp(&b.last_seen_ms),
        Col::Container => a.container.cmp(&b.container),
        Col::Zone => a.zone.cmp(&b.zone),
        Col::Dir => (a.direction as u8).cmp(&(b.direction as u8)),
        Col::Proto => a.proto.cmp(&b.proto),
        Col::Src => (a.src, a.sport).cmp(&(b.src, b.sport)),
        Col::Dst => (a.dst, a.dport).cmp(&(b.dst, b.dport)),
        Col::Peer => a.peer.cmp(&b.peer).then_with(|| a.peer_zone.cmp(&b.peer_zone)),
        Col::State => a.state.cmp(&b.state),
        Col::Bytes => a.bytes_in.wrapping_add(a.bytes_out).cmp(&b.bytes_in.wrapping_add(b.bytes_out)),
        Col::Rate => a.rate_in.wrapping_add(a.rate_out).cmp(&b.rate_in.wrapping_add(b.rate_out)),
        Col::Verdict => (a.verdict as u8).cmp(&(b.verdict as u8)),
        Col::Rule => a.rule.as_ref().map(|r| &r.id).cmp(&b.rule.as_ref().map(|r| &r.id)),
        Col::Name => {
            let n = |r: &FlowRow| r.inspection.as_ref().and_then(|i| i.name.clone());
            n(a).cmp(&n(b))
        }
    };
    let o = if col.descending() { o.reverse() } else { o };
    let o = o.then_with(|| b.id.cmp(&a.id));
    if reverse {
        o.reverse()
    } else {
        o
    }
}

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

/// For columns with a numeric order: the row's key, ordered like [`compare`] orders them.
fn num_key(col: Col) -> Option<fn(&FlowRow) -> u64> {
    Some(match col {
        Col::Seen => |r| (r.last_seen_ms as u64) ^ (1 << 63),
        Col::Bytes => |r| r.bytes_in.wrapping_add(r.bytes_out),
        Col::Rate => |r| r.rate_in.wrapping_add(r.rate_out),
        Col::Dir => |r| r.direction as u64,
        Col::Verdict => |r| r.verdict as u64,
        Col::Proto => |r| match r.proto {
            Proto::Tcp => 0,
            Proto::Udp => 1,
            Proto::Icmp => 2,
            Proto::Icmpv6 => 3,
            Proto::Other(n) => 4 + u64::from(n),
        },
        _ => return None,
    })
}

/// Denied attempts (and cap hits, blocked flows) grouped by container, destination, port
/// and rule.
#[derive(Debug, Clone, PartialEq)]
pub struct DropGroup {
    pub verdict: FlowVerdict,
    /// Attempts in the group (the rows' counts summed).
    pub count: u64,
    pub last_seen_ms: i64,
    /// The newest row of the group: its container, destination, port and rule are the
    /// group's; details and blocking use it.
    pub flow: u64,
}

/// Per-container sums over its flow rows, kept up to date per delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub flows: usize,
    pub open: usize,
    pub denied: u64,
    pub rate: u64,
}

/// Deltas received while paused, folded into one: bounded by the table's size however long
/// the pause.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub changed: FastMap<u64, FlowRow>,
    pub removed: FastSet<u64>,
    /// A full view arrived: on resume it replaces the table.
    pub full: bool,
}

impl Held {
    pub fn add(&mut self, changed: Vec<FlowRow>, removed: Vec<u64>, full: bool) {
        if full {
            self.changed.clear();
            self.removed.clear();
            self.full = true;
        }
        for id in removed {
            self.changed.remove(&id);
            if !self.full {
                self.removed.insert(id);
            }
        }
        for r in changed {
            self.removed.remove(&r.id);
            self.changed.insert(r.id, r);
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.full && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Rows changed or removed since the pause.
    pub fn len(&self) -> usize {
        self.changed.len() + self.removed.len()
    }
}

/// The connection to the daemon, as the connection thread reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connecting { attempt: u32, error: Option<String> },
    Connected,
}

/// What the UI receives: input, clock ticks, and news from the connection thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// The wall clock, unix milliseconds.
    Tick(i64),
    /// Connecting failed or the connection was lost; retrying.
    Connecting {
        attempt: u32,
        error: String,
    },
    Connected(Hello),
    Status(StatusInfo),
    Flows {
        changed: Vec<FlowRow>,
        removed: Vec<u64>,
        total: usize,
        lost_events: u64,
        full: bool,
    },
    Alert(Alert),
    Alerts(Vec<Alert>),
    Audit(Vec<AuditRecord>),
    Blocks(Vec<BlockInfo>),
    /// The outcome of a request the user asked for (block, unblock, reload).
    Done {
        op: &'static str,
        result: Result<Answer, String>,
    },
}

/// What the UI asks of the connection thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Request(Op),
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Ttl,
    Reason,
    Direction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DialogKind {
    /// `b`: a destination (or, for a flow without ports, an address) for one container.
    Block { target: BlockTarget },
    /// `B`: quarantine a container.
    Quarantine { container: String, direction: BlockDirection },
    /// `u`: lift one of the blocks that apply (Left/Right choose).
    Unblock { candidates: Vec<BlockInfo>, index: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    pub kind: DialogKind,
    pub ttl: String,
    pub reason: String,
    pub field: Field,
    /// Why Enter was refused (a bad TTL).
    pub error: Option<String>,
}

impl Dialog {
    fn fields(&self) -> &'static [Field] {
        match self.kind {
            DialogKind::Block { .. } => &[Field::Ttl, Field::Reason],
            DialogKind::Quarantine { .. } => &[Field::Direction, Field::Ttl, Field::Reason],
            DialogKind::Unblock { .. } => &[],
        }
    }

    /// The request Enter sends, or why not.
    pub fn op(&self) -> Result<Op, String> {
        let ttl_secs = match self.ttl.trim() {
            "" | "0" | "never" | "none" => None,
            t => Some(crate::cli::parse_ttl(t)?),
        };
        let reason = Some(self.reason.trim().to_string()).filter(|r| !r.is_empty());
        Ok(match &self.kind {
            DialogKind::Block { target } => {
                Op::Block { target: target.clone(), ttl_secs, ttl_ms: None, reason }
            }
            DialogKind::Quarantine { container, direction } => Op::Block {
                target: BlockTarget::Quarantine { container: container.clone(), direction: *direction },
                ttl_secs,
                ttl_ms: None,
                reason,
            },
            DialogKind::Unblock { candidates, index } => {
                let b = candidates.get(*index).ok_or("no block to lift")?;
                Op::Unblock { block: b.id }
            }
        })
    }
}

/// A one-line message in the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub error: bool,
    pub at_ms: i64,
}

/// The console's whole state.
#[derive(Debug, Clone)]
pub struct App {
    pub now_ms: i64,
    /// Terminal size, for mouse hit-testing and page sizes.
    pub size: (u16, u16),
    /// Colours on (off with `NO_COLOR`).
    pub color: bool,
    pub socket: String,
    pub screen: Screen,
    pub conn: Conn,
    /// Whether a connection was ever made (to say "reconnected").
    pub was_connected: bool,
    pub hello: Option<Hello>,
    pub status: Option<StatusInfo>,
    pub flows: FastMap<u64, FlowRow>,
    /// Each flow row's lower-case [`haystack`] for bare filter words, made when the row
    /// arrives or changes, never per keystroke.
    hay: FastMap<u64, Box<str>>,
    pub total: usize,
    pub lost_events: u64,
    /// Flow ids passing the filter, in sort order.
    pub view: Vec<u64>,
    pub sort: Col,
    pub reverse: bool,
    pub filter: Filter,
    pub filter_text: String,
    pub filter_error: Option<String>,
    /// `Some` while the filter is being typed (the text before `/` to restore on Esc).
    pub editing: Option<String>,
    /// When the typed `filter_text` (parsed, differing from `filter`) is due to apply.
    pub filter_due: Option<std::time::Instant>,
    pub paused: bool,
    /// Deltas received while paused, applied on resume.
    pub held: Held,
    /// Keep the selection on the first row as rows change.
    pub follow: bool,
    /// Selected row and first visible row, per screen.
    pub sel: [usize; 5],
    pub offset: [usize; 5],
    pub details: bool,
    pub help: bool,
    pub dialog: Option<Dialog>,
    pub note: Option<Note>,
    /// A block / unblock sent and not answered yet.
    pub pending: Option<String>,
    pub alerts: VecDeque<Alert>,
    pub audit: Vec<AuditRecord>,
    pub blocks: Vec<BlockInfo>,
    pub usage: FastMap<String, Usage>,
    pub history: FastMap<String, VecDeque<u64>>,
    pub drops: Vec<DropGroup>,
    /// Indexes into `status.containers`, `alerts` and `audit` that pass the filter.
    pub containers_view: Vec<usize>,
    pub alerts_view: Vec<usize>,
    pub audit_view: Vec<usize>,
    drops_dirty: bool,
    /// Ids of rows whose verdict is not `allowed`: what the Drops screen groups.
    denied: FastSet<u64>,
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

impl App {
    pub fn new(socket: &str, now_ms: i64, color: bool) -> App {
        App {
            now_ms,
            size: (80, 24),
            color,
            socket: socket.to_string(),
            screen: Screen::Flows,
            conn: Conn::Connecting { attempt: 0, error: None },
            was_connected: false,
            hello: None,
            status: None,
            flows: FastMap::default(),
            total: 0,
            lost_events: 0,
            view: Vec::new(),
            sort: Col::Seen,
            reverse: false,
            filter: Filter::default(),
            filter_text: String::new(),
            filter_error: None,
            editing: None,
            paused: false,
            held: Held::default(),
            follow: true,
            sel: [0; 5],
            offset: [0; 5],
            details: false,
            help: false,
            dialog: None,
            note: None,
            pending: None,
            alerts: VecDeque::new(),
            audit: Vec::new(),
            blocks: Vec::new(),
            usage: FastMap::default(),
            history: FastMap::default(),
            drops: Vec::new(),
            containers_view: Vec::new(),
            alerts_view: Vec::new(),
            audit_view: Vec::new(),
            drops_dirty: false,
            hay: FastMap::default(),
            filter_due: None,
            denied: FastSet::default(),
        }
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

    pub fn connected(&self) -> bool {
        self.conn == Conn::Connected
    }

    /// Rows in the current screen's list.
    pub fn rows(&self) -> usize {
        match self.screen {
            Screen::Flows => self.view.len(),
            Screen::Drops => self.drops.len(),
            Screen::Containers => self.containers_view.len(),
            Screen::Rules => {
                self.status.as_ref().map_or(0, |s| s.last_reload_errors.len() + s.rule_files.len())
            }
            Screen::Audit => self.audit_view.len(),
        }
    }

    pub fn selected(&self) -> usize {
        self.sel[self.screen.index()]
    }

    /// The flow row under the cursor (Flows: the selected row; Drops: the group's newest row).
    pub fn selected_flow(&self) -> Option<&FlowRow> {
        let id = match self.screen {
            Screen::Flows => *self.view.get(self.selected())?,
            Screen::Drops => self.drops.get(self.selected())?.flow,
            _ => return None,
        };
        self.flows.get(&id)
    }

    pub fn selected_container(&self) -> Option<String> {
        match self.screen {
            Screen::Containers => {
                let s = self.status.as_ref()?;
                let i = *self.containers_view.get(self.selected())?;
                s.containers.get(i).map(|c| c.name.clone())
            }
            Screen::Audit | Screen::Rules => None,
            _ => self.selected_flow().map(|r| r.container.clone()),
        }
    }

    pub fn selected_audit(&self) -> Option<&AuditRecord> {
        self.audit.get(*self.audit_view.get(self.sel[Screen::Audit.index()])?)
    }

    /// What `b` would block for the selected flow: its remote end, for its container.
    pub fn block_target(&self) -> Option<BlockTarget> {
        let r = self.selected_flow()?;
        let remote = match r.direction {
            fw_proto::control::Direction::Egress => r.dst,
            fw_proto::control::Direction::Ingress => r.src,
        };
        let port = match r.direction {
            fw_proto::control::Direction::Egress if r.proto.has_ports() => Some(r.dport),
            _ => None,
        };
        Some(BlockTarget::Destination {
            scope: Scope::Container(r.container.clone()),
            net: ipnet::IpNet::from(remote),
            proto: Some(r.proto),
            port,
        })
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

    fn note(&mut self, text: impl Into<String>, error: bool) {
        self.note = Some(Note { text: text.into(), error, at_ms: self.now_ms });
    }

    /// Handles one message; returns what to send to the daemon.
    pub fn update(&mut self, msg: Msg) -> Vec<Command> {
        let mut out = Vec::new();
        match msg {
            Msg::Key(k) => self.key(k, &mut out),
            Msg::Mouse(m) => self.mouse(m),
            Msg::Resize(w, h) => self.size = (w, h),
            Msg::Tick(now) => {
                self.now_ms = now;
                if self.note.as_ref().is_some_and(|n| !n.error && now - n.at_ms > 8000) {
                    self.note = None;
                }
            }
            Msg::Connecting { attempt, error } => {
                if self.connected() {
                    self.note(format!("lost fw-daemon: {error}; reconnecting"), true);
                }
                self.conn = Conn::Connecting { attempt, error: Some(error) };
                self.pending = None;
            }
            Msg::Connected(h) => {
                if self.was_connected {
                    self.note(
                        format!("reconnected to fw-daemon {} as {} ({})", h.daemon, h.user, h.role),
                        false,
                    );
                }
                self.conn = Conn::Connected;
                self.was_connected = true;
                self.hello = Some(h);
                out.push(Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) }));
            }
            Msg::Status(s) => {
                self.status = Some(s);
                self.refresh_containers();
            }
            Msg::Flows { changed, removed, total, lost_events, full } if self.paused => {
                self.total = total;
                self.lost_events = lost_events;
                self.held.add(changed, removed, full);
            }
            Msg::Flows { changed, removed, total, lost_events, full } => {
                self.apply_flows(changed, removed, full);
                self.total = total;
                self.lost_events = lost_events;
                self.sample_history();
            }
            Msg::Alert(a) => {
                let audit_worthy = matches!(
                    a.kind,
                    fw_proto::control::AlertKind::Blocked
                        | fw_proto::control::AlertKind::Unblocked
                        | fw_proto::control::AlertKind::Reload
                        | fw_proto::control::AlertKind::ReloadFailed
                );
                self.add_alerts(vec![a]);
                if audit_worthy {
                    out.push(Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) }));
                }
            }
            Msg::Alerts(list) => self.add_alerts(list),
            Msg::Audit(mut records) => {
                records.reverse();
                self.audit = records;
                self.refresh_audit();
            }
            Msg::Blocks(b) => self.blocks = b,
            Msg::Done { op, result } => {
                self.pending = None;
                match result {
                    Ok(Answer::Blocked { block }) => self.note(
                        format!(
                            "block {} placed: {} (cut {} flows)",
                            block.id, block.target, block.flows_cut
                        ),
                        false,
                    ),
                    Ok(Answer::Unblocked { block, remaining }) => {
                        self.note(crate::render::unblocked_line(&block, &remaining), false)
                    }
                    Ok(Answer::Reloaded { policy_hash, rejected }) if rejected.is_empty() => {
                        self.note(format!("reloaded: policy {policy_hash}"), false)
                    }
                    Ok(Answer::Reloaded { rejected, .. }) => {
                        self.note(format!("reload rejected ({} errors): see Rules (4)", rejected.len()), true)
                    }
                    Ok(other) => self.note(format!("{op}: {}", crate::client::answer_kind(&other)), false),
                    Err(e) => self.note(format!("{op} failed: {e}"), true),
                }
            }
        }
        self.refresh();
        out
    }

    fn add_alerts(&mut self, list: Vec<Alert>) {
        for a in list {
            if self.alerts.iter().any(|x| x.id == a.id) {
                continue;
            }
            let at = self.alerts.iter().position(|x| x.id < a.id).unwrap_or(self.alerts.len());
            self.alerts.insert(at, a);
        }
        self.alerts.truncate(ALERTS_KEPT);
        self.refresh_alerts();
    }

    /// Applies a delta (or a full view) to the flow table and patches the sorted view.
    pub fn apply_flows(&mut self, changed: Vec<FlowRow>, removed: Vec<u64>, full: bool) {
        let keep = self.keep_selection();
        if full {
            self.flows.clear();
            self.hay.clear();
            self.usage.clear();
            self.denied.clear();
            self.hay.reserve(changed.len());
            let mut buf = String::with_capacity(128);
            for r in changed {
                self.hay.insert(r.id, hay_of(&r, &mut buf));
                add_usage(&mut self.usage, &r, 1);
                if r.verdict != FlowVerdict::Allowed {
                    self.denied.insert(r.id);
                }
                self.flows.insert(r.id, r);
            }
            self.rebuild_view();
        } else {
            let mut touched: FastSet<u64> = FastSet::default();
            touched.reserve(changed.len() + removed.len());
            for id in removed {
                if let Some(old) = self.flows.remove(&id) {
                    add_usage(&mut self.usage, &old, -1);
                }
                self.hay.remove(&id);
                // The Drops screen regroups only when a denied row came, went or changed.
                self.drops_dirty |= self.denied.remove(&id);
                touched.insert(id);
            }
            let mut ids: Vec<u64> = Vec::with_capacity(changed.len());
            let mut buf = String::with_capacity(128);
            for r in changed {
                touched.insert(r.id);
                ids.push(r.id);
                add_usage(&mut self.usage, &r, 1);
                self.hay.insert(r.id, hay_of(&r, &mut buf));
                if let Some(old) = self.flows.insert(r.id, r) {
                    add_usage(&mut self.usage, &old, -1);
                }
            }
            for id in &ids {
                self.drops_dirty |= self.denied.contains(id);
            }
            // Filtered on the final version of each row (a delta may name a row twice).
            ids.sort_unstable();
            ids.dedup();
            for id in &ids {
                match self.flows.get(id) {
                    Some(r) if r.verdict != FlowVerdict::Allowed => {
                        self.denied.insert(*id);
                        self.drops_dirty = true;
                    }
                    _ => {
                        self.denied.remove(id);
                    }
                }
            }
            let mut add: Vec<u64> =
                ids.into_iter().filter(|id| self.flows.get(id).is_some_and(|r| self.passes(r))).collect();
            if !touched.is_empty() {
                self.view.retain(|id| !touched.contains(id));
                let (flows, col, rev) = (&self.flows, self.sort, self.reverse);
                let cmp = |a: &u64, b: &u64| match (flows.get(a), flows.get(b)) {
                    (Some(x), Some(y)) => compare(x, y, col, rev),
                    _ => a.cmp(b),
                };

                add.sort_unstable_by(cmp);
                self.view = merge(std::mem::take(&mut self.view), add, cmp);
            }
        }
        self.restore_selection(keep);
    }

    /// Re-filters and re-sorts every row (filter or sort changed, or a full view arrived).
    pub fn rebuild_view(&mut self) {
        let keep = self.keep_selection();
        let (col, rev) = (self.sort, self.reverse);
        let matching = self.flows.values().filter(|r| self.passes(r));
        if let Some(key) = num_key(col) {
            // Sort (key, id) pairs: no pointer chasing into rows per comparison. The order is
            // exactly `compare`'s: the key (flipped for descending columns), then the id
            // descending, everything reversed for `S`.
            let flip = if col.descending() { u64::MAX } else { 0 };
            let mut v: Vec<(u64, u64)> = matching.map(|r| (key(r) ^ flip, !r.id)).collect();
            v.sort_unstable();
            if rev {
                v.reverse();
            }
            self.view = v.into_iter().map(|(_, id)| !id).collect();
        } else {
            let mut v: Vec<&FlowRow> = matching.collect();
            v.sort_unstable_by(|a, b| compare(a, b, col, rev));
            self.view = v.into_iter().map(|r| r.id).collect();
        }
        self.drops_dirty = true;
        self.restore_selection(keep);
    }

    /// Whether a flow row passes the filter, its haystack taken from [`App::hay`].
    fn passes(&self, r: &FlowRow) -> bool {
        self.filter.matches_row(r, || self.hay.get(&r.id).map_or("", |h| h))
    }

    /// The filter narrowed (see [`Filter::refines`]): drops the rows of the view that no
    /// longer pass, keeping the order, instead of re-filtering and re-sorting every row.
    fn narrow_view(&mut self) {
        let keep = self.keep_selection();
        let mut view = std::mem::take(&mut self.view);
        if self.filter.text_only() {
            // One lookup per row, not two: the row itself is not needed.
            view.retain(|id| self.hay.get(id).is_some_and(|h| self.filter.matches_text(h)));
        } else {
            view.retain(|id| self.flows.get(id).is_some_and(|r| self.passes(r)));
        }
        self.view = view;
        self.drops_dirty = true;
        self.restore_selection(keep);
    }

    fn keep_selection(&self) -> Option<u64> {
        if self.follow {
            None
        } else {
            self.view.get(self.sel[0]).copied()
        }
    }

    fn restore_selection(&mut self, keep: Option<u64>) {
        let i = Screen::Flows.index();
        match keep {
            None if self.follow => {
                self.sel[i] = 0;
                self.offset[i] = 0;
            }
            Some(id) => {
                if let Some(p) = self.view.iter().position(|x| *x == id) {
                    let delta = p as isize - self.sel[i] as isize;
                    self.sel[i] = p;
                    self.offset[i] = (self.offset[i] as isize + delta).max(0) as usize;
                }
            }
            None => {}
        }
        self.clamp();
    }

    fn sample_history(&mut self) {
        let names: Vec<&String> = match &self.status {
            Some(s) => s.containers.iter().map(|c| &c.name).collect(),
            None => self.usage.keys().collect(),
        };
        for n in names {
            let rate = self.usage.get(n).map_or(0, |u| u.rate);
            let h = match self.history.get_mut(n) {
                Some(h) => h,
                None => self.history.entry(n.clone()).or_default(),
            };
            if h.len() >= HISTORY {
                h.pop_front();
            }
            h.push_back(rate);
        }
    }

    /// Recomputes what the current screen shows when its inputs changed.
    fn refresh(&mut self) {
        if self.drops_dirty && self.screen == Screen::Drops {
            self.rebuild_drops();
        }
        self.clamp();
    }

    pub fn rebuild_drops(&mut self) {
        self.drops_dirty = false;
        let mut groups: FastMap<(&str, IpAddr, u16, Option<&str>, FlowVerdict), DropGroup> =
            FastMap::with_capacity_and_hasher(self.denied.len(), Default::default());
        for r in self.denied.iter().filter_map(|id| self.flows.get(id)) {
            if r.verdict == FlowVerdict::Allowed || !self.passes(r) {
                continue;
            }
            let k = (r.container.as_str(), r.dst, r.dport, r.rule.as_ref().map(|x| x.id.as_str()), r.verdict);
            let g = groups.entry(k).or_insert_with(|| DropGroup {
                verdict: r.verdict,
                count: 0,
                last_seen_ms: i64::MIN,
                flow: r.id,
            });
            g.count = g.count.saturating_add(r.count.max(1));
            if (r.last_seen_ms, r.id) > (g.last_seen_ms, g.flow) {
                g.last_seen_ms = r.last_seen_ms;
                g.flow = r.id;
            }
        }
        let mut v: Vec<DropGroup> = groups.into_values().collect();
        v.sort_unstable_by_key(|g| std::cmp::Reverse((g.last_seen_ms, g.flow)));
        self.drops = v;
    }

    fn refresh_containers(&mut self) {
        self.containers_view = match &self.status {
            Some(s) => {
                let mut v: Vec<usize> = (0..s.containers.len())
                    .filter(|&i| {
                        let c = &s.containers[i];
                        let addrs: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
                        let mut text: Vec<&str> = addrs.iter().map(String::as_str).collect();
                        text.push(if c.quarantined { "quarantined" } else { "" });
                        self.filter.matches_fields(Some(&c.name), Some(&c.zone), &text)
                    })
                    .collect();
                v.sort_by(|&a, &b| s.containers[a].name.cmp(&s.containers[b].name));
                v
            }
            None => Vec::new(),
        };
    }

    fn refresh_alerts(&mut self) {
        self.alerts_view = (0..self.alerts.len())
            .filter(|&i| {
                let a = &self.alerts[i];
                let kind = a.kind.to_string();
                self.filter.matches_fields(a.container.as_deref(), None, &[&kind, &a.message])
            })
            .collect();
    }

    fn refresh_audit(&mut self) {
        self.audit_view = (0..self.audit.len())
            .filter(|&i| {
                let r = &self.audit[i];
                let user = r.peer.as_ref().map_or("fw-daemon", |p| p.user.as_str());
                let subject = r.subject().unwrap_or_default();
                let fields = [user, &r.op, subject.as_str(), &r.result, r.reason.as_deref().unwrap_or("")];
                self.filter.matches_fields(None, None, &fields)
            })
            .collect();
    }

    /// A key edited the filter being typed: applied now with few rows, else when typing
    /// pauses ([`App::apply_due_filter`]). Errors show at once either way.
    fn edit_filter(&mut self, text: &str) {
        if self.flows.len() < LIVE_FILTER_ROWS {
            return self.set_filter(text);
        }
        self.filter_due = None;
        match Filter::parse(text) {
            Ok(f) => {
                self.filter_error = None;
                if f != self.filter {
                    self.filter_due = Some(std::time::Instant::now() + FILTER_IDLE);
                }
            }
            Err(e) => self.filter_error = Some(e),
        }
        self.filter_text = text.to_string();
    }

    /// Applies the typed filter if it is due at `now` (the event loop calls this when no
    /// input is pending); whether it did.
    pub fn apply_due_filter(&mut self, now: std::time::Instant) -> bool {
        match self.filter_due {
            Some(due) if now >= due => {
                self.set_filter(&self.filter_text.clone());
                self.refresh();
                true
            }
            _ => false,
        }
    }

    fn set_filter(&mut self, text: &str) {
        self.filter_due = None;
        match Filter::parse(text) {
            Ok(f) => {
                self.filter_error = None;
                if f != self.filter {
                    let narrower = f.refines(&self.filter);
                    self.filter = f;
                    if narrower {
                        self.narrow_view();
                    } else {
                        self.rebuild_view();
                    }
                    self.refresh_containers();
                    self.refresh_alerts();
                    self.refresh_audit();
                }
            }
            Err(e) => self.filter_error = Some(e),
        }
        self.filter_text = text.to_string();
    }

    /// Rows visible in the current screen's list at the current size.
    pub fn page(&self) -> usize {
        super::ui::list_height(self) as usize
    }

    fn clamp(&mut self) {
        let i = self.screen.index();
        let n = self.rows();
        if n == 0 {
            self.sel[i] = 0;
            self.offset[i] = 0;
            return;
        }
        self.sel[i] = self.sel[i].min(n - 1);
        let page = self.page().max(1);
        if self.sel[i] < self.offset[i] {
            self.offset[i] = self.sel[i];
        } else if self.sel[i] >= self.offset[i] + page {
            self.offset[i] = self.sel[i] + 1 - page;
        }
        self.offset[i] = self.offset[i].min(n.saturating_sub(page));
    }

    fn move_sel(&mut self, delta: isize) {
        let i = self.screen.index();
        let n = self.rows();
        let s = (self.sel[i] as isize + delta).clamp(0, n.saturating_sub(1) as isize) as usize;
        self.sel[i] = s;
        if self.screen == Screen::Flows {
            // Moving off the top row stops following; back on top resumes.
            self.follow = s == 0;
        }
        self.clamp();
    }

    fn switch(&mut self, s: Screen, out: &mut Vec<Command>) {
        self.screen = s;
        self.details = false;
        if s == Screen::Audit && self.connected() {
            out.push(Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) }));
        }
        if s == Screen::Drops {
            self.drops_dirty = true;
        }
    }

    fn key(&mut self, k: KeyEvent, out: &mut Vec<Command>) {
        if k.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('q')) {
            out.push(Command::Quit);
            return;
        }
        if self.editing.is_some() {
            self.filter_key(k);
            return;
        }
        if self.dialog.is_some() {
            self.dialog_key(k, out);
            return;
        }
        if self.help {
            self.help = false;
            return;
        }
        if self.details && matches!(k.code, KeyCode::Esc | KeyCode::Enter) {
            self.details = false;
            return;
        }
        match k.code {
            KeyCode::Char('q') => out.push(Command::Quit),
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Tab => {
                let i = (self.screen.index() + 1) % Screen::ALL.len();
                self.switch(Screen::ALL[i], out);
            }
            KeyCode::BackTab => {
                let i = (self.screen.index() + Screen::ALL.len() - 1) % Screen::ALL.len();
                self.switch(Screen::ALL[i], out);
            }
            KeyCode::Char(c @ '1'..='5') => self.switch(Screen::ALL[(c as u8 - b'1') as usize], out),
            KeyCode::Char('/') => {
                self.editing = Some(self.filter_text.clone());
            }
            KeyCode::Esc if !self.filter_text.is_empty() => {
                self.set_filter("");
                self.note("filter cleared", false);
            }
            KeyCode::Char('s') if self.screen == Screen::Flows => {
                self.sort = self.sort.next();
                self.rebuild_view();
            }
            KeyCode::Char('S') if self.screen == Screen::Flows => {
                self.reverse = !self.reverse;
                self.rebuild_view();
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('f') => {
                self.follow = !self.follow;
                if self.follow {
                    self.sel[0] = 0;
                    self.offset[0] = 0;
                }
            }
            KeyCode::Enter => self.details = self.rows() > 0 && self.screen != Screen::Rules,
            KeyCode::Up | KeyCode::Char('k') => self.move_sel(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_sel(1),
            KeyCode::PageUp => self.move_sel(-(self.page() as isize)),
            KeyCode::PageDown => self.move_sel(self.page() as isize),
            KeyCode::Home | KeyCode::Char('g') => self.move_sel(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_sel(isize::MAX / 2),
            KeyCode::Char('r') => {
                out.push(Command::Request(Op::Status));
                out.push(Command::Request(Op::Blocks));
                out.push(Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) }));
                self.note("refreshing", false);
            }
            KeyCode::Char('b') => self.open_block(),
            KeyCode::Char('B') => self.open_quarantine(),
            KeyCode::Char('u') => self.open_unblock(),
            _ => {}
        }
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            let h = std::mem::take(&mut self.held);
            if !h.is_empty() {
                self.apply_flows(h.changed.into_values().collect(), h.removed.into_iter().collect(), h.full);
            }
            self.sample_history();
        }
    }

    fn can_block(&mut self) -> bool {
        match self.blocking_disabled() {
            Some(why) => {
                self.note(format!("blocking is disabled: {why}"), true);
                false
            }
            None => true,
        }
    }

    fn open_block(&mut self) {
        if !self.can_block() {
            return;
        }
        match self.block_target() {
            Some(target) => {
                self.dialog = Some(Dialog {
                    kind: DialogKind::Block { target },
                    ttl: default_ttl(),
                    reason: String::new(),
                    field: Field::Ttl,
                    error: None,
                })
            }
            None => {
                self.note("b blocks the selected flow's destination: select a flow (1 Flows, 2 Drops)", true)
            }
        }
    }

    fn open_quarantine(&mut self) {
        if !self.can_block() {
            return;
        }
        match self.selected_container() {
            Some(container) => {
                self.dialog = Some(Dialog {
                    kind: DialogKind::Quarantine {
                        container,
                        direction: fw_proto::control::DEFAULT_QUARANTINE_DIRECTION,
                    },
                    ttl: default_ttl(),
                    reason: String::new(),
                    field: Field::Ttl,
                    error: None,
                })
            }
            None => self.note("B quarantines the selected container: select a flow or a container", true),
        }
    }

    fn open_unblock(&mut self) {
        if !self.can_block() {
            return;
        }
        let Some(c) = self.selected_container() else {
            self.note("u lifts a block of the selected container: select a flow or a container", true);
            return;
        };
        let candidates = self.blocks_of(&c);
        if candidates.is_empty() {
            self.note(format!("no active block applies to {c}"), true);
            return;
        }
        self.dialog = Some(Dialog {
            kind: DialogKind::Unblock { candidates, index: 0 },
            ttl: String::new(),
            reason: String::new(),
            field: Field::Ttl,
            error: None,
        });
    }

    fn dialog_key(&mut self, k: KeyEvent, out: &mut Vec<Command>) {
        let Some(d) = self.dialog.as_mut() else { return };
        let fields = d.fields();
        let pos = fields.iter().position(|f| *f == d.field).unwrap_or(0);
        match k.code {
            KeyCode::Esc => {
                self.dialog = None;
                self.note("cancelled", false);
            }
            KeyCode::Enter => match d.op() {
                Ok(op) => {
                    let what = match &op {
                        Op::Unblock { block } => format!("lifting block {block}"),
                        Op::Block { target, .. } => format!("blocking {target}"),
                        _ => String::new(),
                    };
                    self.dialog = None;
                    self.pending = Some(what.clone());
                    self.note(format!("{what}..."), false);
                    out.push(Command::Request(op));
                }
                Err(e) => d.error = Some(e),
            },
            KeyCode::Tab | KeyCode::Down if !fields.is_empty() => d.field = fields[(pos + 1) % fields.len()],
            KeyCode::BackTab | KeyCode::Up if !fields.is_empty() => {
                d.field = fields[(pos + fields.len() - 1) % fields.len()]
            }
            KeyCode::Left | KeyCode::Right | KeyCode::Char(' ') => {
                let fwd = k.code != KeyCode::Left;
                match &mut d.kind {
                    DialogKind::Unblock { candidates, index } if !candidates.is_empty() => {
                        let n = candidates.len();
                        *index = if fwd { (*index + 1) % n } else { (*index + n - 1) % n };
                    }
                    DialogKind::Quarantine { direction, .. } if d.field == Field::Direction => {
                        const ORDER: [BlockDirection; 3] =
                            [BlockDirection::Both, BlockDirection::Egress, BlockDirection::Ingress];
                        let i = ORDER.iter().position(|x| x == direction).unwrap_or(0);
                        *direction = ORDER[if fwd { (i + 1) % 3 } else { (i + 2) % 3 }];
                    }
                    _ if k.code == KeyCode::Char(' ') => push_char(d, ' '),
                    _ => {}
                }
            }
            KeyCode::Backspace => {
                if let Some(s) = text_field(d) {
                    s.pop();
                }
                d.error = None;
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                if let Some(s) = text_field(d) {
                    s.clear();
                }
            }
            KeyCode::Char(c) => push_char(d, c),
            _ => {}
        }
    }

    fn filter_key(&mut self, k: KeyEvent) {
        let mut text = self.filter_text.clone();
        match k.code {
            KeyCode::Enter => {
                self.editing = None;
                if self.filter_due.is_some() {
                    self.set_filter(&text);
                }
                return;
            }
            KeyCode::Esc => {
                let before = self.editing.take().unwrap_or_default();
                self.set_filter(&before);
                return;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
            KeyCode::Char(c) => text.push(c),
            _ => return,
        }
        self.edit_filter(&text);
    }

    fn mouse(&mut self, m: MouseEvent) {
        if self.dialog.is_some() || self.help {
            return;
        }
        match m.kind {
            MouseEventKind::ScrollDown => self.move_sel(3),
            MouseEventKind::ScrollUp => self.move_sel(-3),
            MouseEventKind::Down(MouseButton::Left) => {
                if m.row == 0 {
                    if let Some(s) = super::ui::tab_at(m.column) {
                        let mut ignored = Vec::new();
                        self.switch(s, &mut ignored);
                    }
                    return;
                }
                if let Some(first) = super::ui::list_top(self) {
                    if m.row >= first && m.row < first + super::ui::list_height(self) {
                        let i = self.screen.index();
                        let row = self.offset[i] + usize::from(m.row - first);
                        if row < self.rows() {
                            let delta = row as isize - self.sel[i] as isize;
                            self.move_sel(delta);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Convenience for tests and scripts: a plain key press.
    pub fn press(&mut self, code: KeyCode) -> Vec<Command> {
        self.update(Msg::Key(key(code)))
    }

    /// Types each character of `s` as a key press.
    pub fn type_str(&mut self, s: &str) -> Vec<Command> {
        s.chars().flat_map(|c| self.press(KeyCode::Char(c))).collect()
    }
}

/// A row's haystack in one exact allocation, built in the reused `buf`.
fn hay_of(r: &FlowRow, buf: &mut String) -> Box<str> {
    buf.clear();
    write_haystack(r, buf);
    Box::from(buf.as_str())
}

fn text_field(d: &mut Dialog) -> Option<&mut String> {
    match d.field {
        Field::Ttl if !matches!(d.kind, DialogKind::Unblock { .. }) => Some(&mut d.ttl),
        Field::Reason => Some(&mut d.reason),
        _ => None,
    }
}

fn push_char(d: &mut Dialog, c: char) {
    d.error = None;
    if let Some(s) = text_field(d) {
        if s.chars().count() < 200 {
            s.push(c);
        }
    }
}

fn add_usage(u: &mut FastMap<String, Usage>, r: &FlowRow, sign: i64) {
    let e = match u.get_mut(&r.container) {
        Some(e) => e,
        None => u.entry(r.container.clone()).or_default(),
    };
    let apply = |x: &mut usize, d: bool| {
        if d {
            *x = if sign > 0 { *x + 1 } else { x.saturating_sub(1) };
        }
    };
    apply(&mut e.flows, true);
    apply(&mut e.open, r.open);
    let denied = if r.verdict == FlowVerdict::Allowed { 0 } else { r.count };
    let rate = r.rate_in.saturating_add(r.rate_out);
    if sign > 0 {
        e.denied = e.denied.saturating_add(denied);
        e.rate = e.rate.saturating_add(rate);
    } else {
        e.denied = e.denied.saturating_sub(denied);
        e.rate = e.rate.saturating_sub(rate);
    }
}

/// Merges `b` into `a`, both sorted by `cmp`: a binary search per element of `b` (the few
/// rows of a delta) and block copies of `a` (the whole view), so O(n + k log n) with only
/// k log n comparisons.
fn merge<F: Fn(&u64, &u64) -> Ordering>(a: Vec<u64>, b: Vec<u64>, cmp: F) -> Vec<u64> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut start = 0;
    for id in b {
        let p = start + a[start..].partition_point(|x| cmp(x, &id) != Ordering::Greater);
        out.extend_from_slice(&a[start..p]);
        out.push(id);
        start = p;
    }
    out.extend_from_slice(&a[start..]);
    out
}
