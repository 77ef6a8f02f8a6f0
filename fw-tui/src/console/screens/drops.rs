//! Screen 2, Drops & alerts: denied attempts, cap hits and blocked flows grouped by container,
//! remote address, direction, rule and verdict, so a port scan is one row with its port count
//! and range; and the alerts below, newest first.
//!
//! Each row names the remote end: the destination of what the container sent, or the source
//! of what reached it, with the name fw knows for *that* address. A dropped reply (a packet
//! from a service port to an ephemeral one) is shown by its service port, never by the
//! ephemeral port as if it were a destination.

use std::collections::BTreeSet;
use std::net::IpAddr;

use fw_proto::control::{AlertKind, Direction, FlowRow, FlowVerdict, Proto};
use fw_proto::filter::Filter;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Table};
use ratatui::Frame;

use super::flows::{flow_details, STALE_MS};
use super::{body_rows, clock, empty, kv, seen_ago, Details, DrawCx, Screen, ScreenId};
use crate::console::columns::{fit_line, lay_out, Col, Text};
use crate::console::list::ListState;
use crate::console::model::{FastMap, Model};

/// Ports from here up are the kernel's ephemeral range (Linux: 32768-60999 by default): the
/// client side of a connection.
pub const EPHEMERAL: u16 = 32_768;

/// The remote end of a denied row, and the port that names the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub addr: IpAddr,
    /// The service port (`None` for protocols without ports).
    pub port: Option<u16>,
    /// The packet was a reply (service port to ephemeral port), not a new attempt.
    pub reply: bool,
}

/// Where a denied row's packet went or came from, as an operator reads it.
pub fn remote_of(r: &FlowRow) -> Remote {
    let (addr, remote_port, local_port) = match r.direction {
        Direction::Egress => (r.dst, r.dport, r.sport),
        Direction::Ingress => (r.src, r.sport, r.dport),
    };
    if !r.proto.has_ports() {
        return Remote { addr, port: None, reply: false };
    }
    // What the container sent from a service port to an ephemeral one answers a connection
    // the peer made (and the other way round): the service port names it.
    let (from, to) = (r.sport, r.dport);
    let reply = from < EPHEMERAL && to >= EPHEMERAL;
    let port = match (r.direction, reply) {
        // An attempt out: the remote's service. In: the container's own service.
        (Direction::Egress, false) => remote_port,
        (Direction::Ingress, false) => local_port,
        // A reply keeps the port it came from: the container's service (out) or the peer's (in).
        (_, true) => from,
    };
    Remote { addr, port: Some(port), reply }
}

/// What rows of one group share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub container: String,
    pub verdict: FlowVerdict,
    pub direction: Direction,
    pub proto: Proto,
    pub remote: IpAddr,
    pub reply: bool,
    pub rule: Option<String>,
}

/// Denied attempts (and cap hits, blocked flows) grouped by [`DropKey`].
#[derive(Debug, Clone, PartialEq)]
pub struct DropGroup {
    pub key: DropKey,
    /// Attempts in the group (the rows' counts summed).
    pub count: u64,
    pub last_seen_ms: i64,
    /// The newest row of the group: details and blocking use it.
    pub flow: u64,
    /// The service ports seen, in order.
    pub ports: BTreeSet<u16>,
}

impl DropGroup {
    /// `443`, `80,443,8080`, or `1000 ports 1-1000` for a scan.
    pub fn ports_text(&self) -> String {
        let n = self.ports.len();
        match (n, self.ports.first(), self.ports.last()) {
            (0, _, _) => "-".into(),
            (1..=3, _, _) => self.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
            (_, Some(lo), Some(hi)) => format!("{n} ports {lo}-{hi}"),
            _ => "-".into(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DropsScreen {
    pub groups: Vec<DropGroup>,
    /// A denied row changed since the last grouping.
    pub dirty: bool,
    pub list: ListState<DropKey>,
}

impl DropsScreen {
    /// Regroups every denied row passing the filter.
    pub fn rebuild(&mut self, m: &Model, filter: &Filter, page: usize) {
        self.dirty = false;
        let flows = &m.flows;
        let mut groups: FastMap<DropKey, DropGroup> = FastMap::default();
        for r in flows.denied.iter().filter_map(|id| flows.rows.get(id)) {
            if r.verdict == FlowVerdict::Allowed || !flows.passes(filter, r) {
                continue;
            }
            let rem = remote_of(r);
            let key = DropKey {
                container: r.container.clone(),
                verdict: r.verdict,
                direction: r.direction,
                proto: r.proto,
                remote: rem.addr,
                reply: rem.reply,
                rule: r.rule.as_ref().map(|x| x.id.clone()),
            };
            let g = groups.entry(key.clone()).or_insert_with(|| DropGroup {
                key,
                count: 0,
                last_seen_ms: i64::MIN,
                flow: r.id,
                ports: BTreeSet::new(),
            });
            g.count = g.count.saturating_add(r.count.max(1));
            if let Some(p) = rem.port {
                g.ports.insert(p);
            }
            if (r.last_seen_ms, r.id) > (g.last_seen_ms, g.flow) {
                g.last_seen_ms = r.last_seen_ms;
                g.flow = r.id;
            }
        }
        let mut v: Vec<DropGroup> = groups.into_values().collect();
        v.sort_unstable_by_key(|g| std::cmp::Reverse((g.last_seen_ms, g.flow)));
        self.groups = v;
        let groups = &self.groups;
        self.list.sync(
            groups.len(),
            page,
            |k| groups.iter().position(|g| g.key == *k),
            |i| groups.get(i).map(|g| g.key.clone()),
        );
    }

    pub fn selected_group(&self) -> Option<&DropGroup> {
        self.groups.get(self.list.index)
    }
}

/// Rows of the screen given to the grouped drops (the rest shows alerts).
pub fn split(body: Rect) -> (Rect, Rect) {
    let top = ((u32::from(body.height) * 3 / 5) as u16).max(3).min(body.height);
    (Rect { height: top, ..body }, Rect { y: body.y + top, height: body.height - top, ..body })
}

const COLS: [Col; 8] = [
    Col::text("CONTAINER", 0, 8),
    // Before RULE: "reply" says the port is the service's, not a destination.
    Col::text("DIR", 1, 3),
    Col::text("REMOTE", 0, 12),
    Col::num("PORTS", 1),
    Col::text("VERDICT", 3, 7),
    Col::text("RULE", 2, 10),
    Col::num("COUNT", 1),
    Col::num("LAST SEEN", 1),
];

impl Screen for DropsScreen {
    fn id(&self) -> ScreenId {
        ScreenId::Drops
    }

    fn len(&self, _m: &Model) -> usize {
        self.groups.len()
    }

    fn selected(&self) -> usize {
        self.list.index
    }

    fn offset(&self) -> usize {
        self.list.offset
    }

    fn move_by(&mut self, delta: isize, _m: &Model, page: usize) {
        let groups = &self.groups;
        self.list.move_by(delta, groups.len(), page, |i| groups.get(i).map(|g| g.key.clone()));
    }

    fn refresh(&mut self, m: &Model, filter: &Filter, _narrower: bool, page: usize) {
        self.rebuild(m, filter, page);
    }

    fn draw(&self, f: &mut Frame, area: Rect, cx: &DrawCx) -> Option<Rect> {
        let (top, bottom) = split(area);
        let t = cx.t;
        let mut list = None;
        if self.groups.is_empty() {
            f.render_widget(
                Paragraph::new(Line::styled(" DENIED ATTEMPTS, CAP HITS AND BLOCKED FLOWS", t.header())),
                Rect { height: 1, ..top },
            );
            empty(f, cx, body_rows(top), "denied attempts");
        } else {
            let body = body_rows(top);
            let win = self.list.window(self.groups.len(), usize::from(body.height));
            let rows = win
                .filter_map(|i| {
                    let g = self.groups.get(i)?;
                    let r = cx.m.flows.rows.get(&g.flow)?;
                    let mut style = t.verdict(g.key.verdict);
                    if cx.m.now_ms - g.last_seen_ms > STALE_MS {
                        style = style.add_modifier(Modifier::DIM);
                    }
                    if i == self.list.index {
                        style = style.add_modifier(Modifier::REVERSED);
                    }
                    let dir = match (g.key.direction, g.key.reply) {
                        (_, true) => "reply",
                        (Direction::Egress, false) => "out",
                        (Direction::Ingress, false) => "in",
                    };
                    // The name fw knows for the remote address: the row's peer is the other
                    // end's owner, whichever direction.
                    let remote = match &r.peer {
                        Some(p) => format!("{p} {}", g.key.remote),
                        None => g.key.remote.to_string(),
                    };
                    let rule = r.rule.as_ref().map_or_else(
                        || Text::new("-"),
                        |x| match &x.source {
                            Some(s) => {
                                let s = cx.m.source(s);
                                // The line number survives a cut: `id (file.toml:12)`.
                                let tail = s.rfind(':').map_or(")".to_string(), |i| format!("{})", &s[i..]));
                                Text::keeping(format!("{} ({s})", rule_name(x)), &tail)
                            }
                            None => Text::new(rule_name(x)),
                        },
                    );
                    Some((
                        vec![
                            Text::new(r.container.clone()),
                            Text::new(dir),
                            Text::new(remote),
                            Text::new(g.ports_text()),
                            Text::new(g.key.verdict.to_string()),
                            rule,
                            Text::new(g.count.to_string()),
                            Text::new(seen_ago(g.last_seen_ms, cx.m.now_ms)),
                        ],
                        style,
                    ))
                })
                .collect();
            let laid = lay_out(&COLS, rows, top.width, 1, t.header(), None);
            f.render_widget(Table::new(laid.rows, laid.widths).header(laid.header).column_spacing(1), top);
            list = Some(body);
        }
        if bottom.height > 0 {
            alerts(f, bottom, cx);
        }
        list
    }

    fn details(&self, cx: &DrawCx) -> Option<Details> {
        let g = self.selected_group()?;
        let r = cx.m.flows.rows.get(&g.flow)?;
        let mut lines = vec![kv(
            cx.t,
            "attempts",
            format!("{} (grouped by container, remote, direction, rule, verdict)", g.count),
        )];
        let rem = remote_of(r);
        lines.push(kv(
            cx.t,
            "ports",
            format!("{}{}", g.ports_text(), if rem.reply { " (replies)" } else { "" }),
        ));
        lines.extend(flow_details(r, cx));
        Some(Details { title: "Flow details", lines })
    }

    fn selected_flow<'m>(&self, m: &'m Model) -> Option<&'m FlowRow> {
        m.flows.rows.get(&self.selected_group()?.flow)
    }
}

/// `default`, `cap api-conns`, `web-to-db`: the rule as the RULE column names it.
fn rule_name(r: &fw_proto::RuleRef) -> String {
    match r.kind {
        fw_proto::RuleKind::Default => "default".into(),
        fw_proto::RuleKind::Policy => r.id.clone(),
        k => format!("{k} {}", r.id),
    }
}

/// The alerts that pass the filter, newest first, one line each, fitted to the width.
fn alerts(f: &mut Frame, area: Rect, cx: &DrawCx) {
    let t = cx.t;
    let shown: Vec<_> = cx.m.alerts.iter().filter(|a| passes_alert(cx, a)).collect();
    let w = usize::from(area.width);
    let mut lines = vec![Line::styled(format!(" ALERTS ({}) newest first", shown.len()), t.header())];
    for a in shown.iter().take(usize::from(area.height.saturating_sub(1))) {
        let style = match a.kind {
            AlertKind::Tamper
            | AlertKind::ReloadFailed
            | AlertKind::Violation
            | AlertKind::Unenforced
            | AlertKind::Escalated
            | AlertKind::InspectionOverflow => t.error(),
            AlertKind::CapHit => t.verdict(FlowVerdict::CapHit),
            AlertKind::Blocked | AlertKind::Unblocked => t.warn(),
            _ => Style::new(),
        };
        let mut text = format!("{} {:<13}", clock(a.time_ms), a.kind.to_string());
        if let Some(c) = &a.container {
            text.push_str(&format!(" {c}:"));
        }
        text.push(' ');
        text.push_str(&a.message);
        if let Some(r) = &a.rule {
            text.push_str(&format!(" ({}", rule_name(r)));
            if let Some(s) = &r.source {
                text.push_str(&format!(", {}", cx.m.source(s)));
            }
            text.push(')');
        }
        lines.push(fit_line(Line::styled(text, style), w));
    }
    if shown.is_empty() {
        lines.push(Line::styled("  no alerts", t.dim()));
    }
    f.render_widget(Paragraph::new(lines), area);
}

/// Whether an alert passes the console's filter (its container, kind and message).
fn passes_alert(cx: &DrawCx, a: &fw_proto::control::Alert) -> bool {
    cx.filter.is_empty() || {
        let kind = a.kind.to_string();
        cx.filter.matches_fields(a.container.as_deref(), None, &[&kind, &a.message])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testdata::flow;

    #[test]
    fn replies_are_named_by_their_service_port() {
        // web-1 -> 198.51.100.9:443: an attempt out, named by the remote's port.
        let r = flow(1, "web-1", "198.51.100.9", 443, FlowVerdict::Denied);
        assert_eq!(remote_of(&r), Remote { addr: r.dst, port: Some(443), reply: false });
        // The reply 198.51.100.9:443 -> web-1:40001 dropped on the way in: port 443, a reply.
        let mut back = r.clone();
        back.direction = Direction::Ingress;
        (back.src, back.sport, back.dst, back.dport) = (r.dst, 443, r.src, 40_001);
        assert_eq!(remote_of(&back), Remote { addr: r.dst, port: Some(443), reply: true });
        // A peer knocking on web-1:22 from its ephemeral port: the container's port 22.
        let mut knock = back.clone();
        (knock.sport, knock.dport) = (51_000, 22);
        assert_eq!(remote_of(&knock), Remote { addr: r.dst, port: Some(22), reply: false });
    }
}
