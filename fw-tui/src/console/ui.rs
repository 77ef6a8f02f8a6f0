//! Rendering: pure functions of [`App`]. Only the visible rows of a list are built per frame;
//! the order and the filter were computed in [`App::update`].
//!
//! Layout: row 0 is the tab bar, the last two rows are the status bar and the filter /
//! message line, the rest is the screen. Tables have a header row and no borders, so 80x24
//! shows 19 rows.

use std::net::IpAddr;

use fw_proto::control::{AlertKind, BlockTarget, Direction, FlowRow, FlowVerdict, Proto, Role};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::app::{App, Col, Conn, DialogKind, Field, Screen, STALE_MS};
use crate::render::{bytes, duration, endpoint, rule as rule_text, utc};

/// Width from which tables show every column (below it, the Flows table shows the remote
/// end only, without zone, state and bytes).
pub const WIDE: u16 = 150;

/// The tab labels, in order, as drawn on row 0 (mouse clicks map back through [`tab_at`]).
fn tab_labels() -> [String; 5] {
    Screen::ALL.map(|s| format!(" {} {} ", s.index() + 1, s.title()))
}

/// The screen whose tab is drawn at `column` of row 0.
pub fn tab_at(column: u16) -> Option<Screen> {
    let mut x = 4u16; // after " fw "
    for (s, label) in Screen::ALL.iter().zip(tab_labels()) {
        let w = label.chars().count() as u16;
        if column >= x && column < x + w {
            return Some(*s);
        }
        x += w;
    }
    None
}

fn body(area: Rect) -> Rect {
    Rect { x: area.x, y: area.y + 1, width: area.width, height: area.height.saturating_sub(3) }
}

/// Rows of the Drops screen given to the grouped drops (the rest shows alerts).
fn drops_split(body: Rect) -> (Rect, Rect) {
    let top = ((u32::from(body.height) * 3 / 5) as u16).max(3).min(body.height);
    (Rect { height: top, ..body }, Rect { y: body.y + top, height: body.height - top, ..body })
}

/// The first terminal row of the current list's data (below its header), if it has one.
pub fn list_top(app: &App) -> Option<u16> {
    match app.screen {
        Screen::Rules => None,
        _ => Some(2),
    }
}

/// How many rows of the current list fit.
pub fn list_height(app: &App) -> u16 {
    let area = Rect::new(0, 0, app.size.0, app.size.1);
    let b = body(area);
    match app.screen {
        Screen::Drops => drops_split(b).0.height.saturating_sub(1),
        Screen::Rules => b.height,
        _ => b.height.saturating_sub(1),
    }
}

/// Style helpers that honour `NO_COLOR`: colours only when `app.color`.
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn verdict(&self, v: FlowVerdict) -> Style {
        match v {
            FlowVerdict::Allowed => self.fg(Color::Green),
            FlowVerdict::Denied => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            FlowVerdict::AuditDenied => self.fg(Color::Yellow),
            FlowVerdict::CapHit => self.fg(Color::Magenta).add_modifier(Modifier::BOLD),
            FlowVerdict::Blocked => self.fg(Color::LightRed).add_modifier(Modifier::BOLD | Modifier::ITALIC),
        }
    }

    fn header(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    fn dim(&self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }
}

/// Draws the whole console.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let t = Theme { color: app.color };
    tabs(f, app, &t, Rect { height: 1.min(area.height), ..area });
    let b = body(area);
    if b.height > 0 {
        match app.screen {
            Screen::Flows => flows(f, app, &t, b),
            Screen::Drops => drops(f, app, &t, b),
            Screen::Containers => containers(f, app, &t, b),
            Screen::Rules => rules(f, app, &t, b),
            Screen::Audit => audit(f, app, &t, b),
        }
    }
    if area.height >= 3 {
        status_bar(f, app, &t, Rect { y: area.bottom() - 2, height: 1, ..area });
        bottom_line(f, app, &t, Rect { y: area.bottom() - 1, height: 1, ..area });
    }
    if app.details {
        details(f, app, &t, area);
    }
    if app.dialog.is_some() {
        dialog(f, app, &t, area);
    }
    if app.help {
        help(f, app, &t, area);
    }
}

fn tabs(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let mut spans = vec![Span::styled(" fw ", t.header())];
    for (s, label) in Screen::ALL.iter().zip(tab_labels()) {
        let style = if *s == app.screen { t.selected().add_modifier(Modifier::BOLD) } else { Style::new() };
        spans.push(Span::styled(label, style));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn status_bar(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let mut spans = Vec::new();
    match &app.conn {
        Conn::Connected => spans.push(Span::styled("● connected", t.ok())),
        Conn::Connecting { attempt, .. } if !app.was_connected && *attempt <= 1 => {
            spans.push(Span::styled("○ connecting", t.fg(Color::Yellow)))
        }
        Conn::Connecting { attempt, .. } => {
            spans.push(Span::styled(format!("✕ disconnected, retry {attempt}"), t.error()))
        }
    }
    if let Some(h) = &app.hello {
        let role = match h.role {
            Role::Viewer => "viewer (read-only)".to_string(),
            r => r.to_string(),
        };
        spans.push(Span::raw(format!(" │ {} {role}", h.user)));
    }
    if let Some(s) = &app.status {
        spans.push(Span::raw(format!(" │ policy {}", short(&s.policy_hash))));
        if !s.last_reload_errors.is_empty() {
            spans.push(Span::styled(" RELOAD REJECTED", t.error()));
        }
        if s.audit.as_ref().is_some_and(|a| a.broken_since_ms.is_some()) {
            spans.push(Span::styled(" AUDIT BROKEN", t.error()));
        }
        if !s.inventory_errors.is_empty() {
            spans.push(Span::styled(" INVENTORY REJECTED", t.error()));
        }
    }
    spans.push(Span::raw(format!(" │ flows {}/{}", app.view.len(), app.total)));
    if let Some(n) = app.status.as_ref().map(|s| s.flows_dropped_open).filter(|n| *n > 0) {
        spans.push(Span::styled(format!(" │ {n} open dropped (table full)"), t.fg(Color::Yellow)));
    }
    if app.lost_events > 0 {
        spans.push(Span::styled(format!(" │ lost {}", app.lost_events), t.fg(Color::Yellow)));
    }
    if app.paused {
        spans.push(Span::styled(
            format!(" │ PAUSED ({} held)", app.held.len()),
            t.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    if app.screen == Screen::Flows {
        let arrow = if app.reverse { "↑" } else { "↓" };
        spans.push(Span::raw(format!(" │ sort {}{arrow}", app.sort.name())));
        if app.follow {
            spans.push(Span::raw(" follow"));
        }
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn bottom_line(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let mut spans = Vec::new();
    if let Some(_before) = &app.editing {
        spans.push(Span::styled("/", t.header()));
        spans.push(Span::raw(app.filter_text.clone()));
        spans.push(Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)));
        if let Some(e) = &app.filter_error {
            spans.push(Span::styled(format!("  {e}"), t.error()));
        } else {
            spans.push(Span::styled("  Enter keep, Esc undo", t.dim()));
        }
    } else {
        if !app.filter_text.is_empty() {
            spans.push(Span::styled("filter: ", t.header()));
            spans.push(Span::raw(app.filter_text.clone()));
            if let Some(e) = &app.filter_error {
                spans.push(Span::styled(format!(" ({e})"), t.error()));
            }
            spans.push(Span::raw("  "));
        }
        match (&app.note, &app.pending) {
            (Some(n), _) => {
                spans.push(Span::styled(n.text.clone(), if n.error { t.error() } else { t.ok() }))
            }
            (None, Some(p)) => spans.push(Span::raw(format!("{p}..."))),
            (None, None) if app.filter_text.is_empty() => spans.push(Span::styled(
                "? help  / filter  Enter details  b block  B quarantine  u unblock  q quit",
                t.dim(),
            )),
            _ => {}
        }
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn short(h: &str) -> &str {
    h.get(..8).unwrap_or(h)
}

/// `name ip:port` when the name is known, else `ip:port`.
fn labelled(name: Option<&str>, proto: Proto, ip: IpAddr, port: u16) -> String {
    match name {
        Some(n) => format!("{n} {}", endpoint(proto, ip, port)),
        None => endpoint(proto, ip, port),
    }
}

/// The flow's two ends as the table shows them, with names when known.
fn ends(r: &FlowRow) -> (String, String) {
    match r.direction {
        // The container's own end is named by the CONTAINER column already.
        Direction::Egress => {
            (endpoint(r.proto, r.src, r.sport), labelled(r.peer.as_deref(), r.proto, r.dst, r.dport))
        }
        Direction::Ingress => {
            (labelled(r.peer.as_deref(), r.proto, r.src, r.sport), endpoint(r.proto, r.dst, r.dport))
        }
    }
}

fn remote(r: &FlowRow) -> String {
    let (s, d) = ends(r);
    match r.direction {
        Direction::Egress => format!("→ {d}"),
        Direction::Ingress => format!("← {s}"),
    }
}

fn rate(n: u64) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{}/s", bytes(n))
    }
}

fn rule_id(r: &FlowRow) -> String {
    r.rule.as_ref().map_or_else(|| "-".into(), |x| x.id.clone())
}

fn sni(r: &FlowRow) -> String {
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

fn stale(app: &App, r: &FlowRow) -> bool {
    !r.open || app.now_ms - r.last_seen_ms > STALE_MS
}

fn empty(f: &mut Frame, app: &App, t: &Theme, area: Rect, what: &str) {
    let mut lines = vec![Line::raw("")];
    match &app.conn {
        Conn::Connecting { attempt, error } if !app.connected() => {
            lines.push(Line::styled(format!("Not connected to fw-daemon at {}", app.socket), t.error()));
            if let Some(e) = error {
                lines.push(Line::raw(e.clone()));
            }
            lines.push(Line::raw(format!("Retrying by itself (attempt {attempt}). q quits.")));
        }
        _ if !app.filter_text.is_empty() => {
            lines.push(Line::raw(format!("No {what} match the filter `{}`.", app.filter_text)));
            lines.push(Line::styled("Esc clears the filter; / edits it.", t.dim()));
        }
        _ => lines.push(Line::raw(format!("No {what} yet."))),
    }
    f.render_widget(Paragraph::new(lines).centered().wrap(Wrap { trim: true }), area);
}

fn header_row(t: &Theme, cells: &[&str], sorted: Option<(usize, bool)>) -> Row<'static> {
    Row::new(cells.iter().enumerate().map(|(i, c)| {
        let mut s = c.to_string();
        if let Some((col, rev)) = sorted {
            if col == i {
                s.push(if rev { '↑' } else { '↓' });
            }
        }
        Cell::from(s)
    }))
    .style(t.header())
}

/// The visible window of a list: `(first, last)` indexes.
fn window(app: &App, n: usize, height: u16) -> std::ops::Range<usize> {
    let off = app.offset[app.screen.index()].min(n);
    off..(off + height as usize).min(n)
}

fn flows(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    if app.view.is_empty() {
        let mut a = area;
        a.y += 1;
        a.height = a.height.saturating_sub(1);
        return empty(f, app, t, a, "flows");
    }
    let wide = area.width >= WIDE;
    let h = area.height.saturating_sub(1);
    let sel = app.selected();
    let win = window(app, app.view.len(), h);
    let mut rows = Vec::with_capacity(win.len());
    for i in win {
        let Some(r) = app.view.get(i).and_then(|id| app.flows.get(id)) else { continue };
        let mut style = if r.verdict == FlowVerdict::Allowed { Style::new() } else { t.verdict(r.verdict) };
        if stale(app, r) {
            style = style.add_modifier(Modifier::DIM);
        }
        if i == sel {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let verdict = Cell::from(r.verdict.to_string()).style(t.verdict(r.verdict));
        let dir = match r.direction {
            Direction::Egress => "out",
            Direction::Ingress => "in",
        };
        let cells: Vec<Cell> = if wide {
            let (s, d) = ends(r);
            vec![
                Cell::from(r.container.clone()),
                Cell::from(r.zone.clone()),
                Cell::from(dir),
                Cell::from(r.proto.to_string()),
                Cell::from(s),
                Cell::from(d),
                Cell::from(r.state.clone()),
                Cell::from(bytes(r.bytes_in.saturating_add(r.bytes_out))),
                Cell::from(rate(r.rate_in.saturating_add(r.rate_out))),
                verdict,
                Cell::from(rule_id(r)),
                Cell::from(sni(r)),
            ]
        } else {
            vec![
                Cell::from(r.container.clone()),
                Cell::from(dir),
                Cell::from(r.proto.to_string()),
                Cell::from(remote(r)),
                verdict,
                Cell::from(rule_id(r)),
                Cell::from(rate(r.rate_in.saturating_add(r.rate_out))),
            ]
        };
        rows.push(Row::new(cells).style(style));
    }
    let (header, widths, sorted): (&[&str], Vec<Constraint>, Option<usize>) = if wide {
        let idx = match app.sort {
            Col::Container => Some(0),
            Col::Zone => Some(1),
            Col::Dir => Some(2),
            Col::Proto => Some(3),
            Col::Src => Some(4),
            Col::Dst | Col::Peer => Some(5),
            Col::State => Some(6),
            Col::Bytes => Some(7),
            Col::Rate => Some(8),
            Col::Verdict => Some(9),
            Col::Rule => Some(10),
            Col::Name => Some(11),
            Col::Seen => None,
        };
        (
            &[
                "CONTAINER",
                "ZONE",
                "DIR",
                "PROTO",
                "SOURCE",
                "DESTINATION",
                "STATE",
                "BYTES",
                "RATE",
                "VERDICT",
                "RULE",
                "SNI/HOST",
            ],
            vec![
                Constraint::Length(12),
                Constraint::Length(8),
                Constraint::Length(3),
                Constraint::Length(5),
                Constraint::Fill(3),
                Constraint::Fill(3),
                Constraint::Length(11),
                Constraint::Length(9),
                Constraint::Length(11),
                Constraint::Length(12),
                Constraint::Length(14),
                Constraint::Fill(2),
            ],
            idx,
        )
    } else {
        let idx = match app.sort {
            Col::Container => Some(0),
            Col::Dir => Some(1),
            Col::Proto => Some(2),
            Col::Dst | Col::Peer => Some(3),
            Col::Verdict => Some(4),
            Col::Rule => Some(5),
            Col::Rate => Some(6),
            _ => None,
        };
        (
            &["CONTAINER", "DIR", "PROTO", "REMOTE", "VERDICT", "RULE", "RATE"],
            vec![
                Constraint::Length(10),
                Constraint::Length(3),
                Constraint::Length(5),
                Constraint::Fill(1),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(10),
            ],
            idx,
        )
    };
    let table = Table::new(rows, widths)
        .header(header_row(t, header, sorted.map(|i| (i, app.reverse))))
        .column_spacing(1);
    f.render_widget(table, area);
}

fn drops(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let (top, bottom) = drops_split(area);
    let wide = area.width >= WIDE;
    if app.drops.is_empty() {
        let mut a = top;
        a.y += 1;
        a.height = a.height.saturating_sub(1);
        f.render_widget(
            Paragraph::new(Line::styled(" DENIED ATTEMPTS, CAP HITS AND BLOCKED FLOWS", t.header())),
            Rect { height: 1, ..top },
        );
        empty(f, app, t, a, "denied attempts");
    } else {
        let sel = app.selected();
        let win = window(app, app.drops.len(), top.height.saturating_sub(1));
        let rows: Vec<Row> = win
            .filter_map(|i| {
                let g = app.drops.get(i)?;
                // The group's newest row carries the fields the group is keyed on.
                let r = app.flows.get(&g.flow)?;
                let mut style = t.verdict(g.verdict);
                if app.now_ms - g.last_seen_ms > STALE_MS {
                    style = style.add_modifier(Modifier::DIM);
                }
                if i == sel {
                    style = style.add_modifier(Modifier::REVERSED);
                }
                let dst = labelled(r.peer.as_deref(), r.proto, r.dst, r.dport);
                let mut cells = vec![
                    Cell::from(r.container.clone()),
                    Cell::from(g.verdict.to_string()),
                    Cell::from(dst),
                    Cell::from(
                        r.rule
                            .as_ref()
                            .map_or_else(|| "-".into(), |r| if wide { rule_text(r) } else { r.id.clone() }),
                    ),
                    Cell::from(g.count.to_string()),
                    Cell::from(crate::render::ago(g.last_seen_ms / 1000, app.now_ms / 1000)),
                ];
                if !wide {
                    cells.remove(1);
                }
                Some(Row::new(cells).style(style))
            })
            .collect();
        let (header, widths): (&[&str], Vec<Constraint>) = if wide {
            (
                &["CONTAINER", "VERDICT", "DESTINATION", "RULE", "COUNT", "LAST SEEN"],
                vec![
                    Constraint::Length(14),
                    Constraint::Length(12),
                    Constraint::Fill(2),
                    Constraint::Fill(2),
                    Constraint::Length(7),
                    Constraint::Length(10),
                ],
            )
        } else {
            (
                &["CONTAINER", "DESTINATION", "RULE", "COUNT", "LAST"],
                vec![
                    Constraint::Length(10),
                    Constraint::Fill(1),
                    Constraint::Length(14),
                    Constraint::Length(6),
                    Constraint::Length(8),
                ],
            )
        };
        f.render_widget(Table::new(rows, widths).header(header_row(t, header, None)).column_spacing(1), top);
    }
    if bottom.height == 0 {
        return;
    }
    let mut lines =
        vec![Line::styled(format!(" ALERTS ({}) newest first", app.alerts_view.len()), t.header())];
    for &i in app.alerts_view.iter().take(bottom.height.saturating_sub(1) as usize) {
        let Some(a) = app.alerts.get(i) else { continue };
        let style = match a.kind {
            AlertKind::Tamper
            | AlertKind::ReloadFailed
            | AlertKind::Violation
            | AlertKind::Unenforced
            | AlertKind::Escalated
            | AlertKind::InspectionOverflow => t.error(),
            AlertKind::CapHit => t.verdict(FlowVerdict::CapHit),
            AlertKind::Blocked | AlertKind::Unblocked => t.fg(Color::Yellow),
            _ => Style::new(),
        };
        let mut text = format!("{} {:<13}", clock(a.time_ms), a.kind.to_string());
        if let Some(c) = &a.container {
            text.push_str(&format!(" {c}:"));
        }
        text.push(' ');
        text.push_str(&a.message);
        if let Some(r) = &a.rule {
            text.push_str(&format!(" ({})", rule_text(r)));
        }
        lines.push(Line::styled(text, style));
    }
    if app.alerts_view.is_empty() {
        lines.push(Line::styled("  no alerts", t.dim()));
    }
    f.render_widget(Paragraph::new(lines), bottom);
}

/// `HH:MM:SS` of unix milliseconds (UTC).
fn clock(ms: i64) -> String {
    let u = utc(ms.div_euclid(1000));
    u.get(11..19).unwrap_or(&u).to_string()
}

/// A sparkline of `values` in `width` characters (the newest on the right).
pub fn spark(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let vals = &values[values.len().saturating_sub(width)..];
    let max = vals.iter().copied().max().unwrap_or(0);
    vals.iter()
        .map(|&v| if max == 0 { BARS[0] } else { BARS[((v as u128 * 7) / max as u128) as usize] })
        .collect()
}

fn containers(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let Some(s) = &app.status else {
        let mut a = area;
        a.y += 1;
        a.height = a.height.saturating_sub(1);
        return empty(f, app, t, a, "containers");
    };
    if app.containers_view.is_empty() {
        return empty(f, app, t, area, "containers");
    }
    let wide = area.width >= WIDE;
    let sel = app.selected();
    let win = window(app, app.containers_view.len(), area.height.saturating_sub(1));
    let spark_w = if wide { 24 } else { 10 };
    let rows: Vec<Row> = win
        .filter_map(|i| {
            let c = s.containers.get(*app.containers_view.get(i)?)?;
            let u = app.usage.get(&c.name).copied().unwrap_or_default();
            let conns = match c.caps.max_conns {
                Some(m) => format!("{}/{m}", c.open_flows),
                None => c.open_flows.to_string(),
            };
            let over = c.caps.max_conns.is_some_and(|m| c.open_flows as u64 >= u64::from(m));
            let blocks = if c.quarantined {
                format!("QUAR {}", c.blocks.len())
            } else if c.blocks.is_empty() {
                "-".into()
            } else {
                c.blocks.len().to_string()
            };
            let hist: Vec<u64> =
                app.history.get(&c.name).map(|h| h.iter().copied().collect()).unwrap_or_default();
            let mut style = if c.quarantined { t.verdict(FlowVerdict::Blocked) } else { Style::new() };
            if !c.programmed {
                style = style.add_modifier(Modifier::DIM);
            }
            if i == sel {
                style = style.add_modifier(Modifier::REVERSED);
            }
            let addrs: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
            let conns_cell =
                Cell::from(conns).style(if over { t.verdict(FlowVerdict::CapHit) } else { Style::new() });
            let mut cells =
                vec![Cell::from(c.name.clone()), Cell::from(c.zone.clone()), Cell::from(c.mode.to_string())];
            if wide {
                cells.push(Cell::from(addrs.join(",")));
            }
            cells.push(conns_cell);
            cells.push(Cell::from(rate(u.rate)));
            if wide {
                let caps = [
                    c.caps.new_conns_per_sec.map(|n| format!("{n} new/s")),
                    c.caps.egress_bytes_per_sec.map(|n| format!("{}/s out", bytes(n))),
                ];
                let caps: Vec<String> = caps.into_iter().flatten().collect();
                cells.push(Cell::from(if caps.is_empty() { "-".into() } else { caps.join(" ") }));
            }
            cells.push(Cell::from(format!("{}", u.flows)));
            cells.push(Cell::from(if u.denied == 0 { "-".into() } else { u.denied.to_string() }));
            cells.push(Cell::from(blocks));
            cells.push(Cell::from(spark(&hist, spark_w)).style(t.fg(Color::Cyan)));
            Some(Row::new(cells).style(style))
        })
        .collect();
    let (header, widths): (&[&str], Vec<Constraint>) = if wide {
        (
            &[
                "NAME",
                "ZONE",
                "MODE",
                "ADDRESSES",
                "CONNS",
                "RATE",
                "CAPS",
                "FLOWS",
                "DENIED",
                "BLOCKS",
                "THROUGHPUT",
            ],
            vec![
                Constraint::Length(14),
                Constraint::Length(10),
                Constraint::Length(7),
                Constraint::Fill(2),
                Constraint::Length(8),
                Constraint::Length(11),
                Constraint::Fill(2),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(24),
            ],
        )
    } else {
        (
            &["NAME", "ZONE", "MODE", "CONNS", "RATE", "FLOWS", "DENY", "BLOCK", "THROUGHPUT"],
            vec![
                Constraint::Fill(1),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(10),
                Constraint::Length(5),
                Constraint::Length(4),
                Constraint::Length(6),
                Constraint::Length(10),
            ],
        )
    };
    f.render_widget(Table::new(rows, widths).header(header_row(t, header, None)).column_spacing(1), area);
}

fn rules(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let Some(s) = &app.status else {
        return empty(f, app, t, area, "status");
    };
    let now = app.now_ms / 1000;
    let mut lines = vec![
        Line::from(vec![Span::styled("Policy   ", t.header()), Span::raw(s.policy_hash.clone())]),
        Line::from(vec![
            Span::styled("Loaded   ", t.header()),
            Span::raw(crate::render::when(s.loaded_at_ms / 1000, now)),
        ]),
        Line::from(vec![
            Span::styled("Rules    ", t.header()),
            Span::raw(s.rules_dir.clone().unwrap_or_else(|| "-".into())),
        ]),
    ];
    match (s.last_reload_at_ms.map(|t| t / 1000), s.last_reload_errors.is_empty()) {
        (_, false) => {
            lines.push(Line::from(vec![
                Span::styled("Reload   ", t.header()),
                Span::styled(
                    format!(
                        "REJECTED {} ({} error{}): the policy above stays in force",
                        s.last_reload_at_ms.map_or_else(String::new, |x| crate::render::ago(x / 1000, now)),
                        s.last_reload_errors.len(),
                        if s.last_reload_errors.len() == 1 { "" } else { "s" }
                    ),
                    t.error(),
                ),
            ]));
        }
        (Some(at), true) => lines.push(Line::from(vec![
            Span::styled("Reload   ", t.header()),
            Span::styled(format!("ok {}", crate::render::when(at, now)), t.ok()),
        ])),
        (None, true) => {}
    }
    let mut list: Vec<Line> = Vec::new();
    for e in &s.last_reload_errors {
        list.push(Line::styled(format!("  {e}"), t.error()));
    }
    list.push(Line::styled(format!("Files ({})", s.rule_files.len()), t.header()));
    for file in &s.rule_files {
        list.push(Line::raw(format!("  {file}")));
    }
    if !s.last_reload_errors.is_empty() {
        lines.push(Line::styled("Errors (path:line:col)", t.header()));
    }
    let skip = app.offset[Screen::Rules.index()].min(list.len());
    lines.extend(list.into_iter().skip(skip));
    f.render_widget(Paragraph::new(lines), area);
}

fn audit(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    if app.audit_view.is_empty() {
        let mut a = area;
        a.y += 1;
        a.height = a.height.saturating_sub(1);
        return empty(f, app, t, a, "audit records");
    }
    let wide = area.width >= WIDE;
    let sel = app.selected();
    let win = window(app, app.audit_view.len(), area.height.saturating_sub(1));
    let rows: Vec<Row> = win
        .filter_map(|i| {
            let r = app.audit.get(*app.audit_view.get(i)?)?;
            let who = match &r.peer {
                Some(p) => match r.role {
                    Some(role) if wide => format!("{} ({role})", p.user),
                    _ => p.user.clone(),
                },
                None => "fw-daemon".into(),
            };
            let mut what = r.subject().unwrap_or_default();
            if let Some(b) = r.block {
                what = format!("#{b} {what}");
            }
            if let Some(reason) = &r.reason {
                what.push_str(&format!(" \"{reason}\""));
            }
            if let Some(s) = &r.summary {
                what.push_str(&format!(" {s}"));
            }
            let ok = r.result == "ok";
            let mut style = Style::new();
            if i == sel {
                style = style.add_modifier(Modifier::REVERSED);
            }
            let time = if wide { utc(r.time_ms / 1000) } else { clock(r.time_ms) };
            Some(
                Row::new(vec![
                    Cell::from(time),
                    Cell::from(who),
                    Cell::from(r.op.clone()),
                    Cell::from(what.trim().to_string()),
                    Cell::from(r.result.clone()).style(if ok { t.ok() } else { t.error() }),
                ])
                .style(style),
            )
        })
        .collect();
    let widths = [
        Constraint::Length(if wide { 20 } else { 8 }),
        Constraint::Length(if wide { 18 } else { 9 }),
        Constraint::Length(8),
        Constraint::Fill(3),
        Constraint::Fill(1),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(header_row(t, &["TIME", "WHO", "OP", "TARGET", "RESULT"], None))
            .column_spacing(1),
        area,
    );
}

/// A rectangle of at most `w` x `h` centred in `area`.
fn centred(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// Draws a bordered box of width `w` (at most the screen's) centred in `screen`, as tall as
/// its wrapped lines.
fn popup(f: &mut Frame, t: &Theme, screen: Rect, w: u16, title: &str, lines: Vec<Line>) {
    let w = w.min(screen.width);
    let inner = usize::from(w.saturating_sub(2)).max(1);
    let h: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let area = centred(screen, w, (h + 2).min(usize::from(u16::MAX)) as u16);
    f.render_widget(Clear, area);
    let block = Block::new().borders(Borders::ALL).title(Span::styled(format!(" {title} "), t.header()));
    f.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}

fn kv(t: &Theme, k: &str, v: String) -> Line<'static> {
    Line::from(vec![Span::styled(format!("{k:<12}"), t.header()), Span::raw(v)])
}

/// What `b` / `B` / `u` would do for the selection, for the details pane.
fn block_effects(app: &App) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(why) = app.blocking_disabled() {
        v.push(format!("blocking disabled: {why}"));
        return v;
    }
    if let Some(target) = app.block_target() {
        v.push(format!("b: block {target}"));
    }
    if let Some(c) = app.selected_container() {
        v.push(format!("B: quarantine {c} (default: {})", fw_proto::control::DEFAULT_QUARANTINE_DIRECTION));
        let bs = app.blocks_of(&c);
        if !bs.is_empty() {
            let ids: Vec<String> = bs.iter().map(|b| format!("#{}", b.id)).collect();
            v.push(format!("u: lift a block of {c} ({})", ids.join(", ")));
        }
    }
    v
}

fn details(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let now = app.now_ms;
    let mut lines: Vec<Line> = Vec::new();
    let title;
    match app.screen {
        Screen::Flows | Screen::Drops => {
            title = "Flow details";
            let Some(r) = app.selected_flow() else { return };
            if app.screen == Screen::Drops {
                if let Some(g) = app.drops.get(app.selected()) {
                    lines.push(kv(
                        t,
                        "attempts",
                        format!("{} (grouped by container, destination, port, rule)", g.count),
                    ));
                }
            }
            lines.push(kv(t, "flow", format!("#{} {} {}", r.id, r.proto, r.direction)));
            lines.push(kv(t, "container", format!("{} (zone {})", r.container, r.zone)));
            lines.push(kv(t, "source", endpoint(r.proto, r.src, r.sport)));
            lines.push(kv(t, "destination", endpoint(r.proto, r.dst, r.dport)));
            lines.push(kv(t, "peer", crate::render::peer(r.peer.as_deref(), r.peer_zone.as_deref())));
            lines.push(kv(t, "state", format!("{}{}", r.state, if r.open { "" } else { " (not tracked)" })));
            lines.push(Line::from(vec![
                Span::styled(format!("{:<12}", "verdict"), t.header()),
                Span::styled(r.verdict.to_string(), t.verdict(r.verdict)),
                Span::raw(format!("  count {}", r.count)),
            ]));
            lines.push(kv(
                t,
                "rule",
                r.rule.as_ref().map_or_else(
                    || "-".into(),
                    |x| {
                        format!(
                            "{} {}{}",
                            x.kind,
                            x.id,
                            x.source.as_ref().map_or_else(String::new, |s| format!(" at {s}"))
                        )
                    },
                ),
            ));
            lines.push(kv(
                t,
                "bytes",
                format!(
                    "out {} ({} pkts), in {} ({} pkts)",
                    bytes(r.bytes_out),
                    r.packets_out,
                    bytes(r.bytes_in),
                    r.packets_in
                ),
            ));
            lines.push(kv(t, "rate", format!("out {}, in {}", rate(r.rate_out), rate(r.rate_in))));
            lines.push(kv(
                t,
                "seen",
                format!(
                    "first {}, last {}",
                    crate::render::ago(r.first_seen_ms / 1000, now / 1000),
                    crate::render::ago(r.last_seen_ms / 1000, now / 1000)
                ),
            ));
            if let Some(i) = &r.inspection {
                let mut s = format!(
                    "{} {}",
                    i.protocol.as_deref().unwrap_or("?"),
                    i.name.as_deref().unwrap_or("(no name)")
                );
                if let Some(v) = &i.violation {
                    s.push_str(&format!(" VIOLATION: {v}"));
                }
                lines.push(kv(t, "inspection", s));
            }
        }
        Screen::Containers => {
            title = "Container details";
            let Some(c) =
                app.status.as_ref().and_then(|s| s.containers.get(*app.containers_view.get(app.selected())?))
            else {
                return;
            };
            let u = app.usage.get(&c.name).copied().unwrap_or_default();
            let addrs: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
            lines.push(kv(t, "name", c.name.clone()));
            lines.push(kv(t, "zone", format!("{} ({})", c.zone, c.mode)));
            lines.push(kv(t, "addresses", addrs.join(", ")));
            lines.push(kv(
                t,
                "programmed",
                if c.programmed { "yes".into() } else { "NO: its table is not in place".into() },
            ));
            let cap = |x: Option<String>| x.unwrap_or_else(|| "no cap".into());
            lines.push(kv(
                t,
                "conns",
                format!("{} open, max {}", c.open_flows, cap(c.caps.max_conns.map(|m| m.to_string()))),
            ));
            lines.push(kv(t, "new conns", cap(c.caps.new_conns_per_sec.map(|m| format!("max {m}/s")))));
            lines.push(kv(
                t,
                "egress",
                format!(
                    "{} now, {}",
                    rate(u.rate),
                    cap(c.caps.egress_bytes_per_sec.map(|m| format!("max {}/s", bytes(m))))
                ),
            ));
            lines.push(kv(
                t,
                "flows",
                format!("{} rows, {} open, {} denied attempts", u.flows, u.open, u.denied),
            ));
            lines.push(kv(t, "quarantined", if c.quarantined { "YES".into() } else { "no".into() }));
            for b in app.blocks_of(&c.name) {
                lines.push(kv(t, &format!("block #{}", b.id), block_line(&b, now / 1000)));
            }
        }
        Screen::Audit => {
            title = "Audit record";
            let Some(r) = app.selected_audit() else { return };
            lines.push(kv(t, "time", utc(r.time_ms / 1000)));
            lines.push(kv(
                t,
                "who",
                match &r.peer {
                    Some(p) => format!(
                        "{} (uid {}, pid {}{}){}",
                        p.user,
                        p.uid,
                        p.pid,
                        p.process.as_ref().map_or_else(String::new, |x| format!(", {x}")),
                        r.role.map_or_else(String::new, |x| format!(" as {x}"))
                    ),
                    None => "fw-daemon".into(),
                },
            ));
            lines.push(kv(t, "op", r.op.clone()));
            for (k, v) in [
                ("target", r.subject()),
                ("block", r.block.map(|b| format!("#{b}"))),
                ("reason", r.reason.clone()),
                ("ttl", r.ttl_ms.map(|m| duration(m.div_ceil(1000)))),
                ("policy", r.policy_hash.clone()),
                ("summary", r.summary.clone()),
            ] {
                if let Some(v) = v {
                    lines.push(kv(t, k, v));
                }
            }
            lines.push(kv(t, "result", r.result.clone()));
        }
        Screen::Rules => return,
    }
    let effects = block_effects(app);
    if !effects.is_empty() && matches!(app.screen, Screen::Flows | Screen::Drops | Screen::Containers) {
        lines.push(Line::raw(""));
        for e in effects {
            lines.push(Line::styled(e, t.fg(Color::Yellow)));
        }
    }
    lines.push(Line::styled("Esc or Enter closes", t.dim()));
    let w = if area.width >= WIDE { 100 } else { area.width };
    popup(f, t, area, w, title, lines);
}

fn block_line(b: &fw_proto::control::BlockInfo, now: i64) -> String {
    let mut s = b.target.to_string();
    match b.expires_at_ms {
        Some(e) => s.push_str(&format!(", expires {}", crate::render::ago(crate::render::secs_up(e), now))),
        None => s.push_str(", until lifted"),
    }
    if let Some(r) = &b.reason {
        s.push_str(&format!(", \"{r}\""));
    }
    s.push_str(&format!(", by {}", b.created_by));
    s
}

fn dialog(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let Some(d) = &app.dialog else { return };
    let field = |name: &str, value: &str, which: Field| -> Line<'static> {
        let focused = d.field == which;
        let mut spans = vec![Span::styled(format!("{name:<10}"), t.header())];
        let text = if focused { format!("[{value}█]") } else { format!("[{value}]") };
        spans.push(Span::styled(
            text,
            if focused { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() },
        ));
        Line::from(spans)
    };
    let mut lines = Vec::new();
    let title = match &d.kind {
        DialogKind::Block { target } => {
            lines.push(Line::raw(format!("Block {target}?")));
            if let BlockTarget::Destination { .. } = target {
                lines.push(Line::styled("New and established flows to it are cut.", t.dim()));
            }
            "Block destination"
        }
        DialogKind::Quarantine { container, direction } => {
            lines.push(Line::raw(format!("Quarantine {container}?")));
            lines.push(Line::styled(format!("Cuts {}.", direction.describe()), t.dim()));
            let focused = d.field == Field::Direction;
            lines.push(Line::from(vec![
                Span::styled(format!("{:<10}", "direction"), t.header()),
                Span::styled(
                    format!("< {direction} >"),
                    if focused {
                        Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
                    } else {
                        Style::new()
                    },
                ),
            ]));
            "Quarantine container"
        }
        DialogKind::Unblock { candidates, index } => {
            if let Some(b) = candidates.get(*index) {
                lines.push(Line::raw(format!("Lift block #{}?", b.id)));
                lines.push(Line::raw(block_line(b, app.now_ms / 1000)));
                if candidates.len() > 1 {
                    lines.push(Line::styled(
                        format!("{} of {}: Left/Right for another", index + 1, candidates.len()),
                        t.dim(),
                    ));
                }
            }
            "Unblock"
        }
    };
    if !matches!(d.kind, DialogKind::Unblock { .. }) {
        lines.push(field("ttl", &d.ttl, Field::Ttl));
        lines.push(field("reason", &d.reason, Field::Reason));
        lines.push(Line::styled("ttl: 90s, 15m, 2h, 1d; empty = until unblocked", t.dim()));
    }
    if let Some(e) = &d.error {
        lines.push(Line::styled(e.clone(), t.error()));
    }
    lines.push(Line::styled(
        if matches!(d.kind, DialogKind::Unblock { .. }) {
            "Enter confirm  Esc cancel"
        } else {
            "Tab next field  Enter confirm  Esc cancel"
        },
        t.dim(),
    ));
    popup(f, t, area, 72, title, lines);
}

/// Every key, for `?`.
pub fn help_lines(app: &App) -> Vec<(String, String)> {
    let disabled = if app.blocking_disabled().is_some() { " (off)" } else { "" };
    let mut v: Vec<(String, String)> = [
        ("Tab / S-Tab", "next / previous screen"),
        ("1-5", "Flows, Drops & alerts, Containers, Rules, Audit"),
        ("Up/Down j/k", "select; PgUp/PgDn Home/End g/G; mouse wheel, click"),
        ("Enter", "details of the selected row (Esc closes)"),
        ("/", "filter, e.g. zone:web verdict:deny port:443 !dns 10.1."),
        ("Esc", "clear the filter"),
        ("s / S", "sort flows by the next column / reverse"),
        ("p / Space", "pause / resume live updates"),
        ("f", "follow: keep the newest row selected"),
        ("r", "refresh status, blocks and audit now"),
    ]
    .iter()
    .map(|(k, d)| (k.to_string(), d.to_string()))
    .collect();
    for (k, d) in [
        ("b", "block the selected flow's destination for its container"),
        ("B", "quarantine the selected container"),
        ("u", "lift a block of the selected container"),
    ] {
        v.push((k.to_string(), format!("{d}{disabled}")));
    }
    v.push(("?".into(), "this help (any key closes)".into()));
    v.push(("q / Ctrl-C".into(), "quit".into()));
    if let Some(why) = app.blocking_disabled() {
        v.push(("b B u".into(), format!("disabled: {why}")));
    }
    v
}

fn help(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let disabled = app.blocking_disabled().is_some();
    let lines: Vec<Line> = help_lines(app)
        .into_iter()
        .map(|(k, d)| {
            let style = if disabled && (d.ends_with("(off)") || d.starts_with("disabled")) {
                t.dim()
            } else {
                Style::new()
            };
            Line::from(vec![Span::styled(format!("{k:<12} "), t.header()), Span::styled(d, style)])
        })
        .collect();
    popup(f, t, area, 80, "Keys", lines);
}
