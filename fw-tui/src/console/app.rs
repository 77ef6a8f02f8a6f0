//! The router: [`App::update`] takes a [`Msg`] (a key, a message from the connection thread, a
//! tick), hands it to the model, the filter line, the overlay or the current screen, and
//! returns the [`Command`]s to send to the daemon. Plain data, no I/O: tests drive it
//! directly with a fixed clock. Each screen owns its state (see [`super::screens`]).

use fw_proto::control::{
    Alert, Answer, AuditRecord, BlockInfo, BlockTarget, Direction, FlowRow, Op, Scope, StatusInfo,
};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};

use super::dialog::{Dialog, Outcome};
use super::filterbar::{Change, FilterBar};
use super::help::{Help, HelpKey};
use super::keys::{self, Action};
use super::layout::FrameLayout;
use super::model::{Conn, FastMap, FastSet, Model};
use super::screens::audit::AuditScreen;
use super::screens::containers::ContainersScreen;
use super::screens::drops::{remote_of, DropsScreen};
use super::screens::flows::FlowsScreen;
use super::screens::rules::RulesScreen;
use super::screens::{Screen, ScreenId};
use crate::client::Hello;

pub use super::filterbar::{FILTER_IDLE, LIVE_FILTER_ROWS};

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

/// A one-line message in the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub error: bool,
    pub at_ms: i64,
}

/// What covers the screen, if anything; keys go to it first.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help(Help),
    Details,
    Dialog(Dialog),
}

/// The console: the model, the five screens, and what is on top of them.
#[derive(Debug, Clone)]
pub struct App {
    pub model: Model,
    pub flows: FlowsScreen,
    pub drops: DropsScreen,
    pub containers: ContainersScreen,
    pub rules: RulesScreen,
    pub audit: AuditScreen,
    pub screen: ScreenId,
    pub filter: FilterBar,
    pub overlay: Overlay,
    pub note: Option<Note>,
    /// A block / unblock sent and not answered yet.
    pub pending: Option<String>,
    pub paused: bool,
    /// Deltas received while paused, applied on resume.
    pub held: Held,
    /// Colours on (off with `NO_COLOR`).
    pub color: bool,
    /// Terminal size.
    pub size: (u16, u16),
    /// Where the last frame put things (for the mouse and page sizes).
    pub layout: FrameLayout,
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

impl App {
    pub fn new(socket: &str, now_ms: i64, color: bool) -> App {
        App {
            model: Model::new(socket, now_ms),
            flows: FlowsScreen::default(),
            drops: DropsScreen::default(),
            containers: ContainersScreen::default(),
            rules: RulesScreen::default(),
            audit: AuditScreen::default(),
            screen: ScreenId::Flows,
            filter: FilterBar::default(),
            overlay: Overlay::None,
            note: None,
            pending: None,
            paused: false,
            held: Held::default(),
            color,
            size: (80, 24),
            layout: FrameLayout::default(),
        }
    }

    /// The current screen.
    pub fn current(&self) -> &dyn Screen {
        self.screen_ref(self.screen)
    }

    fn screen_ref(&self, s: ScreenId) -> &dyn Screen {
        match s {
            ScreenId::Flows => &self.flows,
            ScreenId::Drops => &self.drops,
            ScreenId::Containers => &self.containers,
            ScreenId::Rules => &self.rules,
            ScreenId::Audit => &self.audit,
        }
    }

    /// The selected row's position on the current screen.
    pub fn selected(&self) -> usize {
        self.current().selected()
    }

    /// Rows of the current list that fit: from the last frame when it was drawn at this
    /// size, else as the frame will lay it out.
    pub fn page(&self) -> usize {
        match self.layout.list {
            Some(l) if self.layout.size == self.size => usize::from(l.height).max(1),
            _ => super::layout::list_height(self.screen, self.size).max(1),
        }
    }

    pub fn set_layout(&mut self, layout: FrameLayout) {
        self.layout = layout;
    }

    /// The flow row under the cursor (Flows: the selected row; Drops: the group's newest).
    pub fn selected_flow(&self) -> Option<&FlowRow> {
        self.current().selected_flow(&self.model)
    }

    pub fn selected_container(&self) -> Option<String> {
        self.current().selected_container(&self.model)
    }

    pub fn dialog(&self) -> Option<&Dialog> {
        match &self.overlay {
            Overlay::Dialog(d) => Some(d),
            _ => None,
        }
    }

    /// What `b` would block for the selection: its remote end, for its container; the service
    /// port when there is one (a scan's group blocks the whole address).
    pub fn block_target(&self) -> Option<BlockTarget> {
        let r = self.selected_flow()?;
        let rem = remote_of(r);
        let port = match self.screen {
            ScreenId::Drops => {
                let g = self.drops.selected_group()?;
                match (g.ports.len(), g.key.direction, rem.reply) {
                    (1, Direction::Egress, false) => g.ports.first().copied(),
                    _ => None,
                }
            }
            _ => match r.direction {
                Direction::Egress if r.proto.has_ports() && !rem.reply => Some(r.dport),
                _ => None,
            },
        };
        Some(BlockTarget::Destination {
            scope: Scope::Container(r.container.clone()),
            net: ipnet::IpNet::from(rem.addr),
            proto: Some(r.proto),
            port,
        })
    }

    fn note(&mut self, text: impl Into<String>, error: bool) {
        self.note = Some(Note { text: text.into(), error, at_ms: self.model.now_ms });
    }

    /// Handles one message; returns what to send to the daemon.
    pub fn update(&mut self, msg: Msg) -> Vec<Command> {
        let mut out = Vec::new();
        match msg {
            Msg::Key(k) => self.key(k, &mut out),
            Msg::Mouse(m) => self.mouse(m),
            Msg::Resize(w, h) => self.size = (w, h),
            Msg::Tick(now) => {
                self.model.now_ms = now;
                if self.note.as_ref().is_some_and(|n| !n.error && now - n.at_ms > 8000) {
                    self.note = None;
                }
            }
            Msg::Connecting { attempt, error } => {
                if self.model.connected() {
                    self.note(format!("lost fw-daemon: {error}; reconnecting"), true);
                }
                self.model.conn = Conn::Connecting { attempt, error: Some(error) };
                self.pending = None;
            }
            Msg::Connected(h) => {
                if self.model.was_connected {
                    self.note(
                        format!("reconnected to fw-daemon {} as {} ({})", h.daemon, h.user, h.role),
                        false,
                    );
                }
                self.model.conn = Conn::Connected;
                self.model.was_connected = true;
                self.model.hello = Some(h);
                out.push(Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) }));
            }
            Msg::Status(s) => {
                self.model.status = Some(s);
                let (page, filter) = (self.page(), &self.filter.filter);
                self.containers.refresh(&self.model, filter, false, page);
                self.rules.refresh(&self.model, filter, false, page);
            }
            Msg::Flows { changed, removed, total, lost_events, full } => {
                self.model.flows.total = total;
                self.model.flows.lost_events = lost_events;
                if self.paused {
                    self.held.add(changed, removed, full);
                } else {
                    self.apply_flows(changed, removed, full);
                    self.model.sample_history();
                }
            }
            Msg::Alert(a) => {
                use fw_proto::control::AlertKind;
                let audit_worthy = matches!(
                    a.kind,
                    AlertKind::Blocked | AlertKind::Unblocked | AlertKind::Reload | AlertKind::ReloadFailed
                );
                self.model.add_alerts(vec![a]);
                if audit_worthy {
                    out.push(Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) }));
                }
            }
            Msg::Alerts(list) => self.model.add_alerts(list),
            Msg::Audit(mut records) => {
                records.reverse();
                self.model.audit = records;
                let page = self.page();
                self.audit.refresh(&self.model, &self.filter.filter, false, page);
            }
            Msg::Blocks(b) => self.model.blocks = b,
            Msg::Done { op, result } => self.done(op, result),
        }
        self.refresh();
        out
    }

    fn done(&mut self, op: &str, result: Result<Answer, String>) {
        self.pending = None;
        match result {
            Ok(Answer::Blocked { block }) => self.note(
                format!("block {} placed: {} (cut {} flows)", block.id, block.target, block.flows_cut),
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

    /// Applies a delta (or a full view) to the flow table and the screens that show flows.
    pub fn apply_flows(&mut self, changed: Vec<FlowRow>, removed: Vec<u64>, full: bool) {
        let d = self.model.flows.apply(changed, removed, full);
        let page = self.page();
        self.flows.on_delta(&self.model.flows, &self.filter.filter, &d, page);
        self.drops.dirty |= d.denied;
    }

    /// Regroups the Drops screen from scratch (tests and the benchmark).
    pub fn rebuild_drops(&mut self) {
        let page = self.page();
        self.drops.rebuild(&self.model, &self.filter.filter, page);
    }

    /// Recomputes what the current screen shows when its inputs changed.
    fn refresh(&mut self) {
        if self.drops.dirty && self.screen == ScreenId::Drops {
            let page = self.page();
            self.drops.rebuild(&self.model, &self.filter.filter, page);
        }
    }

    /// Where the console opens (`--screen`, `--filter`).
    pub fn open_on(&mut self, screen: ScreenId, filter: Option<&str>) {
        self.screen = screen;
        if let Some(f) = filter {
            let c = self.filter.set(f);
            self.filter_changed(c);
        }
    }

    /// The filter in force changed: every screen re-lists.
    fn filter_changed(&mut self, c: Change) {
        let Change::Applied { narrower } = c else { return };
        let page = self.page();
        let f = &self.filter.filter;
        self.flows.refresh(&self.model, f, narrower, page);
        self.containers.refresh(&self.model, f, narrower, page);
        self.audit.refresh(&self.model, f, narrower, page);
        self.drops.dirty = true;
        self.refresh();
    }

    /// Applies the typed filter if it is due at `now` (the event loop calls this when no
    /// input is pending); whether it did.
    pub fn apply_due_filter(&mut self, now: std::time::Instant) -> bool {
        let c = self.filter.apply_due(now);
        self.filter_changed(c);
        c != Change::None
    }

    fn switch(&mut self, s: ScreenId, out: &mut Vec<Command>) {
        self.screen = s;
        if self.overlay == Overlay::Details {
            self.overlay = Overlay::None;
        }
        if s == ScreenId::Audit && self.model.connected() {
            out.push(Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) }));
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
        if self.filter.editing.is_some() {
            let c = self.filter.key(&k, self.model.flows.len());
            self.filter_changed(c);
            return;
        }
        match &mut self.overlay {
            Overlay::Dialog(d) => {
                match d.key(&k) {
                    Outcome::Stay => {}
                    Outcome::Cancel => {
                        self.overlay = Overlay::None;
                        self.note("cancelled", false);
                    }
                    Outcome::Confirm(op) => {
                        let what = match &op {
                            Op::Unblock { block } => format!("lifting block {block}"),
                            Op::Block { target, .. } => format!("blocking {target}"),
                            _ => String::new(),
                        };
                        self.overlay = Overlay::None;
                        self.pending = Some(what.clone());
                        self.note(format!("{what}..."), false);
                        out.push(Command::Request(op));
                    }
                }
                return;
            }
            Overlay::Help(h) => {
                let (page, total) = (self.layout.help.rows, self.layout.help.total);
                if h.key(&k, page, total) == HelpKey::Close {
                    self.overlay = Overlay::None;
                }
                return;
            }
            Overlay::Details if matches!(k.code, KeyCode::Esc | KeyCode::Enter) => {
                self.overlay = Overlay::None;
                return;
            }
            _ => {}
        }
        let Some(action) = keys::lookup(self.current().bindings(), &k) else { return };
        self.act(action, out);
    }

    fn act(&mut self, action: Action, out: &mut Vec<Command>) {
        let page = self.page();
        match action {
            Action::Quit => out.push(Command::Quit),
            Action::Help => self.overlay = Overlay::Help(Help::default()),
            Action::NextScreen => self.switch(self.screen.next(), out),
            Action::PrevScreen => self.switch(self.screen.prev(), out),
            Action::Goto(s) => self.switch(s, out),
            Action::GotoNumber => {}
            Action::EditFilter => {
                // Filtering is choosing what to look at: stop following.
                self.flows.follow = false;
                self.filter.start();
            }
            Action::ClearFilter => {
                if !self.filter.text.is_empty() {
                    let c = self.filter.clear();
                    self.filter_changed(c);
                    self.note("filter cleared", false);
                }
            }
            Action::Up => self.move_sel(-1),
            Action::Down => self.move_sel(1),
            Action::PageUp => self.move_sel(-(page as isize)),
            Action::PageDown => self.move_sel(page as isize),
            Action::Top => self.move_sel(isize::MIN / 2),
            Action::Bottom => self.move_sel(isize::MAX / 2),
            Action::Details => {
                if self.has_details() {
                    self.overlay = Overlay::Details;
                }
            }
            Action::Pause => self.toggle_pause(),
            Action::Refresh => {
                out.push(Command::Request(Op::Status));
                out.push(Command::Request(Op::Blocks));
                out.push(Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) }));
                self.note("refreshing", false);
            }
            Action::Follow | Action::SortNext | Action::SortReverse => {
                self.flows.act(action, &self.model.flows, &self.filter.filter, page);
            }
            Action::Block => self.open_block(),
            Action::Quarantine => self.open_quarantine(),
            Action::Unblock => self.open_unblock(),
        }
    }

    /// Whether the current screen has details for its selection.
    fn has_details(&self) -> bool {
        let t = super::theme::Theme { color: self.color };
        let cx = super::screens::DrawCx {
            m: &self.model,
            t: &t,
            filter_text: &self.filter.text,
            filter: &self.filter.filter,
        };
        self.current().len(&self.model) > 0 && self.current().details(&cx).is_some()
    }

    fn move_sel(&mut self, delta: isize) {
        let page = self.page();
        let m = &self.model;
        match self.screen {
            ScreenId::Flows => self.flows.move_by(delta, m, page),
            ScreenId::Drops => self.drops.move_by(delta, m, page),
            ScreenId::Containers => self.containers.move_by(delta, m, page),
            ScreenId::Rules => self.rules.move_by(delta, m, page),
            ScreenId::Audit => self.audit.move_by(delta, m, page),
        }
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if self.paused {
            // A frozen view is one to look at: the selection must not jump on resume.
            self.flows.follow = false;
        } else {
            let h = std::mem::take(&mut self.held);
            if !h.is_empty() {
                self.apply_flows(h.changed.into_values().collect(), h.removed.into_iter().collect(), h.full);
            }
            self.model.sample_history();
        }
    }

    fn can_block(&mut self) -> bool {
        match self.model.blocking_disabled() {
            Some(why) => {
                self.note(format!("blocking is disabled: {why}"), true);
                false
            }
            None => true,
        }
    }

    fn open(&mut self, d: Dialog) {
        // What the dialog targets is fixed now; rows moving under it must not change it.
        self.flows.follow = false;
        self.overlay = Overlay::Dialog(d);
    }

    fn open_block(&mut self) {
        if !self.can_block() {
            return;
        }
        match self.block_target() {
            Some(target) => self.open(Dialog::block(target)),
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
            Some(container) => self.open(Dialog::quarantine(container)),
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
        let candidates = self.model.blocks_of(&c);
        if candidates.is_empty() {
            self.note(format!("no active block applies to {c}"), true);
            return;
        }
        self.open(Dialog::unblock(candidates));
    }

    fn mouse(&mut self, m: MouseEvent) {
        let down = match m.kind {
            MouseEventKind::ScrollDown => Some(true),
            MouseEventKind::ScrollUp => Some(false),
            _ => None,
        };
        match (&mut self.overlay, down) {
            (Overlay::Help(h), Some(down)) => {
                return h.wheel(down, self.layout.help.rows, self.layout.help.total)
            }
            (Overlay::None | Overlay::Details, Some(down)) => {
                return self.move_sel(if down { 3 } else { -3 })
            }
            (Overlay::None, None) => {}
            _ => return,
        }
        if m.kind != MouseEventKind::Down(MouseButton::Left) {
            return;
        }
        if let Some(s) = self.layout.tab_at(m.column, m.row) {
            let mut ignored = Vec::new();
            return self.switch(s, &mut ignored);
        }
        if let Some(row) = self.layout.list_row(m.column, m.row) {
            let cur = self.current();
            let target = cur.offset() + row;
            if target < cur.len(&self.model) {
                let delta = target as isize - cur.selected() as isize;
                self.move_sel(delta);
            }
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
