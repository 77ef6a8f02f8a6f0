//! The console's screens, one module each, each owning its state (what it lists, in what
//! order, and its selection), its keys and its rendering. [`Screen`] is what the
//! [`App`](super::app::App) router needs of all of them.

pub mod audit;
pub mod containers;
pub mod drops;
pub mod flows;
pub mod rules;

use fw_proto::control::FlowRow;
use fw_proto::filter::Filter;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::Frame;

use super::keys::Binding;
use super::model::Model;
use super::theme::Theme;

pub use super::screen_id::ScreenId;

/// What a screen reads while it draws.
pub struct DrawCx<'a> {
    pub m: &'a Model,
    pub t: &'a Theme,
    /// The filter as typed (for messages) and in force.
    pub filter_text: &'a str,
    pub filter: &'a Filter,
}

/// A details pane: a title and its lines.
pub struct Details {
    pub title: &'static str,
    pub lines: Vec<Line<'static>>,
}

/// What every screen offers the router.
pub trait Screen {
    fn id(&self) -> ScreenId;
    /// Keys this screen adds to the global ones (`?` lists them under its name).
    fn bindings(&self) -> &'static [Binding] {
        &[]
    }
    /// Rows in its list.
    fn len(&self, m: &Model) -> usize;
    /// The selected row's position.
    fn selected(&self) -> usize;
    /// The first row shown.
    fn offset(&self) -> usize;
    /// Moves the selection by `delta` rows; `page` rows are visible.
    fn move_by(&mut self, delta: isize, m: &Model, page: usize);
    /// Recomputes what it lists after the filter or the daemon's data changed. `narrower`:
    /// the filter only narrowed (see [`Filter::refines`]).
    fn refresh(&mut self, m: &Model, filter: &Filter, narrower: bool, page: usize);
    /// Draws into `area`; returns the rectangle of its list's rows (below the header), which
    /// the frame keeps for mouse clicks.
    fn draw(&self, f: &mut Frame, area: Rect, cx: &DrawCx) -> Option<Rect>;
    /// The selected row's details, if it has any.
    fn details(&self, _cx: &DrawCx) -> Option<Details> {
        None
    }
    /// The flow row under the cursor (Flows: the row; Drops: the group's newest row).
    fn selected_flow<'m>(&self, _m: &'m Model) -> Option<&'m FlowRow> {
        None
    }
    /// The container the selection is about.
    fn selected_container(&self, m: &Model) -> Option<String> {
        self.selected_flow(m).map(|r| r.container.clone())
    }
}

/// The empty state of a list: not connected, nothing matches the filter, or nothing yet.
pub fn empty(f: &mut Frame, cx: &DrawCx, area: Rect, what: &str) {
    use super::model::Conn;
    use ratatui::widgets::{Paragraph, Wrap};
    let mut lines = vec![Line::raw("")];
    match &cx.m.conn {
        Conn::Connecting { attempt, error } if !cx.m.connected() => {
            lines.push(Line::styled(format!("Not connected to fw-daemon at {}", cx.m.socket), cx.t.error()));
            if let Some(e) = error {
                lines.push(Line::raw(e.clone()));
            }
            lines.push(Line::raw(format!("Retrying by itself (attempt {attempt}). q quits.")));
        }
        _ if !cx.filter_text.is_empty() => {
            lines.push(Line::raw(format!("No {what} match the filter `{}`.", cx.filter_text)));
            lines.push(Line::styled("Esc clears the filter; / edits it.", cx.t.dim()));
        }
        _ => lines.push(Line::raw(format!("No {what} yet."))),
    }
    f.render_widget(Paragraph::new(lines).centered().wrap(Wrap { trim: true }), area);
}

/// The rows of a table's body below its header row.
pub fn body_rows(area: Rect) -> Rect {
    Rect { y: area.y.saturating_add(1), height: area.height.saturating_sub(1), ..area }
}

/// `name addr:port` when the name is known, else `addr:port` (`addr` alone without ports).
pub fn labelled(
    name: Option<&str>,
    proto: fw_proto::control::Proto,
    ip: std::net::IpAddr,
    port: u16,
) -> String {
    let e = crate::render::endpoint(proto, ip, port);
    match name {
        Some(n) => format!("{n} {e}"),
        None => e,
    }
}

/// The `:port` end of an endpoint as [`labelled`] writes it (empty without ports): what a cut
/// must keep.
pub fn port_tail(proto: fw_proto::control::Proto, port: u16) -> String {
    if proto.has_ports() {
        format!(":{port}")
    } else {
        String::new()
    }
}

/// Relative time that is never in the future: a row stamped by the daemon a moment after the
/// console's clock last ticked was seen `now`.
pub fn seen_ago(t_ms: i64, now_ms: i64) -> String {
    crate::render::ago(t_ms.min(now_ms) / 1000, now_ms / 1000)
}

/// `HH:MM:SS` of unix milliseconds (UTC).
pub fn clock(ms: i64) -> String {
    let u = crate::render::utc(ms.div_euclid(1000));
    u.get(11..19).unwrap_or(&u).to_string()
}

/// A rate as the tables show it: `-` for none.
pub fn rate(n: u64) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{}/s", crate::render::bytes(n))
    }
}

pub fn kv(t: &Theme, k: &str, v: String) -> Line<'static> {
    use ratatui::text::Span;
    Line::from(vec![Span::styled(format!("{k:<12}"), t.header()), Span::raw(v)])
}
