//! Screen 1, Flows: every flow row, filtered and sorted. The order and the filter are computed
//! when data, filter or sort change, never while drawing: [`FlowsScreen::view`] is the sorted,
//! filtered list of flow ids, patched per delta. The selection stays on its flow (by id) as
//! rows move; `f` (follow) keeps the first row selected instead.

use std::cmp::Ordering;

use fw_proto::control::{Direction, FlowRow, FlowVerdict, Proto};
use fw_proto::filter::Filter;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::Table;
use ratatui::Frame;

use super::{body_rows, empty, labelled, port_tail, rate, seen_ago, Details, DrawCx, Screen, ScreenId};
use crate::console::columns::{lay_out, Col, Text};
use crate::console::keys::{self, Binding};
use crate::console::list::ListState;
use crate::console::model::{Delta, Flows, Model};
use crate::render::{bytes, endpoint};

/// A row not updated for this long (or closed) is drawn dimmed.
pub const STALE_MS: i64 = 10_000;

/// What the table is sorted by, in the order `s` cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
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

impl Sort {
    pub const ALL: [Sort; 14] = [
        Sort::Seen,
        Sort::Container,
        Sort::Zone,
        Sort::Dir,
        Sort::Proto,
        Sort::Src,
        Sort::Dst,
        Sort::Peer,
        Sort::State,
        Sort::Bytes,
        Sort::Rate,
        Sort::Verdict,
        Sort::Rule,
        Sort::Name,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sort::Seen => "seen",
            Sort::Container => "container",
            Sort::Zone => "zone",
            Sort::Dir => "direction",
            Sort::Proto => "proto",
            Sort::Src => "source",
            Sort::Dst => "destination",
            Sort::Peer => "peer",
            Sort::State => "state",
            Sort::Bytes => "bytes",
            Sort::Rate => "rate",
            Sort::Verdict => "verdict",
            Sort::Rule => "rule",
            Sort::Name => "name",
        }
    }

    fn next(self) -> Sort {
        let i = Sort::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Sort::ALL[(i + 1) % Sort::ALL.len()]
    }

    /// Numbers and times sort biggest / newest first unless reversed.
    fn descending(self) -> bool {
        matches!(self, Sort::Seen | Sort::Bytes | Sort::Rate)
    }
}

/// Orders two rows by `col` (then by id, so the order is total and stable).
pub fn compare(a: &FlowRow, b: &FlowRow, col: Sort, reverse: bool) -> Ordering {
    let o = match col {
        Sort::Seen => a.last_seen_ms.cmp(&b.last_seen_ms),
        Sort::Container => a.container.cmp(&b.container),
        Sort::Zone => a.zone.cmp(&b.zone),
        Sort::Dir => (a.direction as u8).cmp(&(b.direction as u8)),
        Sort::Proto => a.proto.cmp(&b.proto),
        Sort::Src => (a.src, a.sport).cmp(&(b.src, b.sport)),
        Sort::Dst => (a.dst, a.dport).cmp(&(b.dst, b.dport)),
        Sort::Peer => a.peer.cmp(&b.peer).then_with(|| a.peer_zone.cmp(&b.peer_zone)),
        Sort::State => a.state.cmp(&b.state),
        Sort::Bytes => a.bytes_in.wrapping_add(a.bytes_out).cmp(&b.bytes_in.wrapping_add(b.bytes_out)),
        Sort::Rate => a.rate_in.wrapping_add(a.rate_out).cmp(&b.rate_in.wrapping_add(b.rate_out)),
        Sort::Verdict => (a.verdict as u8).cmp(&(b.verdict as u8)),
        Sort::Rule => a.rule.as_ref().map(|r| &r.id).cmp(&b.rule.as_ref().map(|r| &r.id)),
        Sort::Name => {
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

/// For columns with a numeric order: the row's key, ordered like [`compare`] orders them.
fn num_key(col: Sort) -> Option<fn(&FlowRow) -> u64> {
    Some(match col {
        Sort::Seen => |r| (r.last_seen_ms as u64) ^ (1 << 63),
        Sort::Bytes => |r| r.bytes_in.wrapping_add(r.bytes_out),
        Sort::Rate => |r| r.rate_in.wrapping_add(r.rate_out),
        Sort::Dir => |r| r.direction as u64,
        Sort::Verdict => |r| r.verdict as u64,
        Sort::Proto => |r| match r.proto {
            Proto::Tcp => 0,
            Proto::Udp => 1,
            Proto::Icmp => 2,
            Proto::Icmpv6 => 3,
            Proto::Other(n) => 4 + u64::from(n),
        },
        _ => return None,
    })
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

#[derive(Debug, Clone)]
pub struct FlowsScreen {
    /// Flow ids passing the filter, in sort order.
    pub view: Vec<u64>,
    pub sort: Sort,
    pub reverse: bool,
    /// Keep the first row selected as rows move (opt-in: `f`).
    pub follow: bool,
    pub list: ListState<u64>,
}

impl Default for FlowsScreen {
    fn default() -> Self {
        FlowsScreen {
            view: Vec::new(),
            sort: Sort::Seen,
            reverse: false,
            follow: false,
            list: ListState::default(),
        }
    }
}

impl FlowsScreen {
    /// After the view changed: the selection goes where its flow went (or to the first row
    /// when following).
    fn resync(&mut self, page: usize) {
        let view = &self.view;
        if self.follow {
            self.list.select(0, view.len(), page, |i| view.get(i).copied());
            return;
        }
        self.list.sync(view.len(), page, |id| view.iter().position(|x| x == id), |i| view.get(i).copied());
    }

    /// Patches the sorted view with a delta.
    pub fn on_delta(&mut self, flows: &Flows, filter: &Filter, d: &Delta, page: usize) {
        if d.full {
            return self.rebuild(flows, filter, page);
        }
        let add: Vec<u64> = d
            .changed
            .iter()
            .copied()
            .filter(|id| flows.rows.get(id).is_some_and(|r| flows.passes(filter, r)))
            .collect();
        if !d.touched.is_empty() {
            self.view.retain(|id| !d.touched.contains(id));
            let (rows, col, rev) = (&flows.rows, self.sort, self.reverse);
            let cmp = |a: &u64, b: &u64| match (rows.get(a), rows.get(b)) {
                (Some(x), Some(y)) => compare(x, y, col, rev),
                _ => a.cmp(b),
            };
            let mut add = add;
            add.sort_unstable_by(cmp);
            self.view = merge(std::mem::take(&mut self.view), add, cmp);
        }
        self.resync(page);
    }

    /// Re-filters and re-sorts every row (filter or sort changed, or a full view arrived).
    pub fn rebuild(&mut self, flows: &Flows, filter: &Filter, page: usize) {
        let (col, rev) = (self.sort, self.reverse);
        let matching = flows.rows.values().filter(|r| flows.passes(filter, r));
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
        self.resync(page);
    }

    /// The filter narrowed: drops the rows of the view that no longer pass, keeping the
    /// order, instead of re-filtering and re-sorting every row.
    fn narrow(&mut self, flows: &Flows, filter: &Filter, page: usize) {
        let mut view = std::mem::take(&mut self.view);
        if filter.text_only() {
            // One lookup per row, not two: the row itself is not needed.
            view.retain(|id| flows.passes_text(filter, *id));
        } else {
            view.retain(|id| flows.rows.get(id).is_some_and(|r| flows.passes(filter, r)));
        }
        self.view = view;
        self.resync(page);
    }

    /// A screen key: sort, reverse, follow. Whether it was one.
    pub fn act(&mut self, a: keys::Action, flows: &Flows, filter: &Filter, page: usize) -> bool {
        match a {
            keys::Action::SortNext => {
                self.sort = self.sort.next();
                self.rebuild(flows, filter, page);
            }
            keys::Action::SortReverse => {
                self.reverse = !self.reverse;
                self.rebuild(flows, filter, page);
            }
            keys::Action::Follow => {
                self.follow = !self.follow;
                self.resync(page);
            }
            _ => return false,
        }
        true
    }
}

fn dir_word(d: Direction) -> &'static str {
    match d {
        Direction::Egress => "out",
        Direction::Ingress => "in",
    }
}

/// The flow's two ends as the table shows them, with names when known, each with the part a
/// cut keeps (its port).
fn ends(r: &FlowRow) -> (Text, Text) {
    let src_tail = port_tail(r.proto, r.sport);
    let dst_tail = port_tail(r.proto, r.dport);
    match r.direction {
        // The container's own end is named by the CONTAINER column already.
        Direction::Egress => (
            Text::keeping(endpoint(r.proto, r.src, r.sport), &src_tail),
            Text::keeping(labelled(r.peer.as_deref(), r.proto, r.dst, r.dport), &dst_tail),
        ),
        Direction::Ingress => (
            Text::keeping(labelled(r.peer.as_deref(), r.proto, r.src, r.sport), &src_tail),
            Text::keeping(endpoint(r.proto, r.dst, r.dport), &dst_tail),
        ),
    }
}

fn remote(r: &FlowRow) -> Text {
    match r.direction {
        Direction::Egress => Text::keeping(
            format!("→ {}", labelled(r.peer.as_deref(), r.proto, r.dst, r.dport)),
            &port_tail(r.proto, r.dport),
        ),
        Direction::Ingress => Text::keeping(
            format!("← {}", labelled(r.peer.as_deref(), r.proto, r.src, r.sport)),
            &port_tail(r.proto, r.sport),
        ),
    }
}

fn name(r: &FlowRow) -> String {
    match &r.inspection {
        Some(i) => {
            let mut s = i.name.clone().unwrap_or_default();
            if i.violation.is_some() {
                s.push_str(" !");
            }
            s
        }
        None => String::new(),
    }
}

/// Which table the Flows screen draws: both ends when they fit, else the remote end only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Ends,
    Remote,
}

const ENDS: [Col; 12] = [
    Col::text("CONTAINER", 0, 8),
    Col::text("ZONE", 6, 4),
    Col::text("DIR", 3, 3),
    Col::text("PROTO", 5, 5),
    Col::text("SOURCE", 1, 12),
    Col::text("DESTINATION", 0, 14),
    Col::text("STATE", 7, 5),
    Col::num("BYTES", 8),
    Col::num("RATE", 4),
    Col::text("VERDICT", 1, 7),
    Col::text("RULE", 2, 8),
    Col::text("SNI/HOST", 6, 8).max(40),
];

const REMOTE: [Col; 11] = [
    Col::text("CONTAINER", 0, 8),
    Col::text("ZONE", 6, 4),
    Col::text("DIR", 3, 3),
    Col::text("PROTO", 5, 5),
    Col::text("REMOTE", 0, 16),
    Col::text("STATE", 7, 5),
    Col::num("BYTES", 8),
    Col::num("RATE", 4),
    Col::text("VERDICT", 1, 7),
    Col::text("RULE", 2, 8),
    Col::text("SNI/HOST", 6, 8).max(40),
];

impl FlowsScreen {
    fn sorted_col(&self, shape: Shape) -> Option<usize> {
        let ends = shape == Shape::Ends;
        Some(match self.sort {
            Sort::Container => 0,
            Sort::Zone => 1,
            Sort::Dir => 2,
            Sort::Proto => 3,
            Sort::Src if ends => 4,
            Sort::Dst | Sort::Peer if ends => 5,
            Sort::Src | Sort::Dst | Sort::Peer => 4,
            Sort::State => 4 + usize::from(ends) + 1,
            Sort::Bytes => 6 + usize::from(ends),
            Sort::Rate => 7 + usize::from(ends),
            Sort::Verdict => 8 + usize::from(ends),
            Sort::Rule => 9 + usize::from(ends),
            Sort::Name => 10 + usize::from(ends),
            Sort::Seen => return None,
        })
    }

    fn cells(r: &FlowRow, shape: Shape, cx: &DrawCx) -> Vec<Text> {
        let mut v =
            vec![Text::new(r.container.clone()), Text::new(r.zone.clone()), dir_word(r.direction).into()];
        v.push(Text::new(r.proto.to_string()));
        match shape {
            Shape::Ends => {
                let (s, d) = ends(r);
                v.push(s);
                v.push(d);
            }
            Shape::Remote => v.push(remote(r)),
        }
        v.push(Text::new(r.state.clone()));
        v.push(Text::new(bytes(r.bytes_in.saturating_add(r.bytes_out))));
        v.push(Text::new(rate(r.rate_in.saturating_add(r.rate_out))));
        v.push(Text::new(r.verdict.to_string()).styled(cx.t.verdict(r.verdict)));
        v.push(Text::new(r.rule.as_ref().map_or_else(|| "-".into(), |x| x.id.clone())));
        v.push(Text::new(name(r)));
        v
    }
}

impl Screen for FlowsScreen {
    fn id(&self) -> ScreenId {
        ScreenId::Flows
    }

    fn bindings(&self) -> &'static [Binding] {
        keys::FLOWS
    }

    fn len(&self, _m: &Model) -> usize {
        self.view.len()
    }

    fn selected(&self) -> usize {
        self.list.index
    }

    fn offset(&self) -> usize {
        self.list.offset
    }

    fn move_by(&mut self, delta: isize, _m: &Model, page: usize) {
        let view = &self.view;
        self.list.move_by(delta, view.len(), page, |i| view.get(i).copied());
        // Moving by hand is choosing a row: stop following.
        self.follow = false;
    }

    fn refresh(&mut self, m: &Model, filter: &Filter, narrower: bool, page: usize) {
        if narrower {
            self.narrow(&m.flows, filter, page)
        } else {
            self.rebuild(&m.flows, filter, page)
        }
    }

    fn draw(&self, f: &mut Frame, area: Rect, cx: &DrawCx) -> Option<Rect> {
        if self.view.is_empty() {
            empty(f, cx, body_rows(area), "flows");
            return None;
        }
        let body = body_rows(area);
        let win = self.list.window(self.view.len(), usize::from(body.height));
        let rows: Vec<&FlowRow> =
            win.clone().filter_map(|i| self.view.get(i).and_then(|id| cx.m.flows.rows.get(id))).collect();
        let style_of = |i: usize, r: &FlowRow| {
            let mut style =
                if r.verdict == FlowVerdict::Allowed { Style::new() } else { cx.t.verdict(r.verdict) };
            if !r.open || cx.m.now_ms - r.last_seen_ms > STALE_MS {
                style = style.add_modifier(Modifier::DIM);
            }
            if i == self.list.index {
                style = style.add_modifier(Modifier::REVERSED);
            }
            style
        };
        let build = |shape: Shape| {
            let cols: &[Col] = if shape == Shape::Ends { &ENDS } else { &REMOTE };
            let cells = win
                .clone()
                .zip(&rows)
                .map(|(i, r)| (FlowsScreen::cells(r, shape, cx), style_of(i, r)))
                .collect();
            lay_out(
                cols,
                cells,
                area.width,
                1,
                cx.t.header(),
                self.sorted_col(shape).map(|c| (c, self.reverse)),
            )
        };
        // Both ends when every column fits whole; the remote end alone otherwise.
        let ends = build(Shape::Ends);
        let laid = if ends.shown.len() == ENDS.len() && fits_whole(&ends, &rows, cx) {
            ends
        } else {
            build(Shape::Remote)
        };
        f.render_widget(Table::new(laid.rows, laid.widths).header(laid.header).column_spacing(1), area);
        Some(body)
    }

    fn details(&self, cx: &DrawCx) -> Option<Details> {
        let r = self.selected_flow(cx.m)?;
        Some(Details { title: "Flow details", lines: flow_details(r, cx) })
    }

    fn selected_flow<'m>(&self, m: &'m Model) -> Option<&'m FlowRow> {
        m.flows.rows.get(self.list.key.as_ref()?)
    }
}

/// Whether the two-ended table shows its endpoints uncut.
fn fits_whole(laid: &crate::console::columns::Laid, rows: &[&FlowRow], _cx: &DrawCx) -> bool {
    use ratatui::layout::Constraint;
    let width = |i: usize| match laid.widths.get(i) {
        Some(Constraint::Length(w)) => usize::from(*w),
        _ => 0,
    };
    rows.iter().all(|r| {
        let (s, d) = ends(r);
        s.width() <= width(4) && d.width() <= width(5)
    })
}

/// The lines of a flow's details pane.
pub fn flow_details(r: &FlowRow, cx: &DrawCx) -> Vec<ratatui::text::Line<'static>> {
    use super::kv;
    use ratatui::text::{Line, Span};
    let t = cx.t;
    let now = cx.m.now_ms;
    let mut lines = vec![
        kv(t, "flow", format!("#{} {} {}", r.id, r.proto, r.direction)),
        kv(t, "container", format!("{} (zone {})", r.container, r.zone)),
        kv(t, "source", endpoint(r.proto, r.src, r.sport)),
        kv(t, "destination", endpoint(r.proto, r.dst, r.dport)),
        kv(t, "peer", crate::render::peer(r.peer.as_deref(), r.peer_zone.as_deref())),
        kv(t, "state", format!("{}{}", r.state, if r.open { "" } else { " (not tracked)" })),
        Line::from(vec![
            Span::styled(format!("{:<12}", "verdict"), t.header()),
            Span::styled(r.verdict.to_string(), t.verdict(r.verdict)),
            Span::raw(format!("  count {}", r.count)),
        ]),
        kv(
            t,
            "rule",
            r.rule.as_ref().map_or_else(
                || "-".into(),
                |x| {
                    let at =
                        x.source.as_deref().map_or_else(String::new, |s| format!(" at {}", cx.m.source(s)));
                    format!("{} {}{at}", x.kind, x.id)
                },
            ),
        ),
        kv(
            t,
            "bytes",
            format!(
                "out {} ({} pkts), in {} ({} pkts)",
                bytes(r.bytes_out),
                r.packets_out,
                bytes(r.bytes_in),
                r.packets_in
            ),
        ),
        kv(t, "rate", format!("out {}, in {}", rate(r.rate_out), rate(r.rate_in))),
        kv(
            t,
            "seen",
            format!("first {}, last {}", seen_ago(r.first_seen_ms, now), seen_ago(r.last_seen_ms, now)),
        ),
    ];
    if let Some(i) = &r.inspection {
        let mut s =
            format!("{} {}", i.protocol.as_deref().unwrap_or("?"), i.name.as_deref().unwrap_or("(no name)"));
        if let Some(v) = &i.violation {
            s.push_str(&format!(" VIOLATION: {v}"));
        }
        lines.push(kv(t, "inspection", s));
    }
    lines
}
