//! The frame: the tab bar on row 0, the current screen, the status bar and the filter / message
//! line on the last two rows, and the overlay on top. Pure functions of [`App`]; [`draw`]
//! returns where it put things ([`FrameLayout`]), which the app keeps for the mouse. Screens
//! draw themselves (see [`super::screens`]); only the visible rows of a list are built.

use fw_proto::control::Role;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::{App, Overlay};
use super::columns::fit_line;
use super::help;
use super::keys;
use super::layout::{body, FrameLayout};
use super::model::Conn;
use super::screens::{DrawCx, ScreenId};
use super::theme::Theme;
use super::widgets::popup;

/// Width from which popups are not as wide as the screen.
pub const WIDE: u16 = 150;

/// `" 1 Flows "`: a tab's label.
fn tab_label(s: ScreenId) -> String {
    format!(" {} {} ", s.index() + 1, s.title())
}

/// Draws the whole console; returns where things are.
pub fn draw(f: &mut Frame, app: &App) -> FrameLayout {
    let area = f.area();
    let t = Theme { color: app.color };
    let mut layout = FrameLayout { size: (area.width, area.height), ..FrameLayout::default() };
    tabs(f, app, &t, Rect { height: 1.min(area.height), ..area }, &mut layout);
    let cx = DrawCx { m: &app.model, t: &t, filter_text: &app.filter.text, filter: &app.filter.filter };
    let b = body(area);
    if b.height > 0 {
        layout.list = app.current().draw(f, b, &cx);
    }
    if area.height >= 3 {
        status_bar(f, app, &t, Rect { y: area.bottom() - 2, height: 1, ..area });
        bottom_line(f, app, &t, Rect { y: area.bottom() - 1, height: 1, ..area });
    }
    match &app.overlay {
        Overlay::None => {}
        Overlay::Details => layout.overlay = details(f, app, &cx, area),
        Overlay::Dialog(d) => layout.overlay = Some(d.draw(f, &t, area, app.model.now_ms)),
        Overlay::Help(h) => {
            let disabled = app.model.blocking_disabled();
            let lines = help::lines(&t, app.screen.title(), app.current().bindings(), disabled.as_deref());
            let (r, shown) = popup(f, &t, area, 92, "Keys", lines, h.scroll);
            layout.overlay = Some(r);
            layout.help = shown;
        }
    }
    layout
}

fn tabs(f: &mut Frame, app: &App, t: &Theme, area: Rect, layout: &mut FrameLayout) {
    let mut spans = vec![Span::styled(" fw ", t.header())];
    let mut x = area.x + 4;
    for s in ScreenId::ALL {
        let label = tab_label(s);
        let w = label.chars().count() as u16;
        let style = if s == app.screen { t.selected().add_modifier(Modifier::BOLD) } else { Style::new() };
        if x < area.right() {
            layout.tabs.push((Rect { x, y: area.y, width: w.min(area.right() - x), height: 1 }, s));
        }
        x = x.saturating_add(w);
        spans.push(Span::styled(label, style));
    }
    f.render_widget(Paragraph::new(fit_line(Line::from(spans), usize::from(area.width))), area);
}

fn short(h: &str) -> &str {
    h.get(..8).unwrap_or(h)
}

fn status_bar(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let m = &app.model;
    let mut spans = Vec::new();
    match &m.conn {
        Conn::Connected => spans.push(Span::styled("● connected", t.ok())),
        Conn::Connecting { attempt, .. } if !m.was_connected && *attempt <= 1 => {
            spans.push(Span::styled("○ connecting", t.warn()))
        }
        Conn::Connecting { attempt, .. } => {
            spans.push(Span::styled(format!("✕ disconnected, retry {attempt}"), t.error()))
        }
    }
    if let Some(h) = &m.hello {
        let role = match h.role {
            Role::Viewer => "viewer (read-only)".to_string(),
            r => r.to_string(),
        };
        spans.push(Span::raw(format!(" │ {} {role}", h.user)));
    }
    if let Some(s) = &m.status {
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
    spans.push(Span::raw(format!(" │ flows {}/{}", app.flows.view.len(), m.flows.total)));
    if let Some(n) = m.status.as_ref().map(|s| s.flows_dropped_open).filter(|n| *n > 0) {
        spans.push(Span::styled(format!(" │ {n} open dropped (table full)"), t.warn()));
    }
    if m.flows.lost_events > 0 {
        spans.push(Span::styled(format!(" │ lost {}", m.flows.lost_events), t.warn()));
    }
    if app.paused {
        spans.push(Span::styled(
            format!(" │ PAUSED ({} held)", app.held.len()),
            t.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    if app.screen == ScreenId::Flows {
        let arrow = if app.flows.reverse { "↑" } else { "↓" };
        spans.push(Span::raw(format!(" │ sort {}{arrow}", app.flows.sort.name())));
        if app.flows.follow {
            spans.push(Span::styled(" FOLLOW", t.warn()));
        }
    }
    f.render_widget(Paragraph::new(fit_line(Line::from(spans), usize::from(area.width))), area);
}

fn bottom_line(f: &mut Frame, app: &App, t: &Theme, area: Rect) {
    let bar = &app.filter;
    let mut spans = Vec::new();
    if bar.editing.is_some() {
        spans.push(Span::styled("/", t.header()));
        spans.push(Span::raw(bar.text.clone()));
        spans.push(Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)));
        match &bar.error {
            Some(e) => spans.push(Span::styled(format!("  {e}"), t.error())),
            None => spans.push(Span::styled("  Enter keep, Esc undo", t.dim())),
        }
    } else {
        if !bar.text.is_empty() {
            spans.push(Span::styled("filter: ", t.header()));
            spans.push(Span::raw(bar.text.clone()));
            if let Some(e) = &bar.error {
                spans.push(Span::styled(format!(" ({e})"), t.error()));
            }
            spans.push(Span::raw("  "));
        }
        match (&app.note, &app.pending) {
            (Some(n), _) => {
                spans.push(Span::styled(n.text.clone(), if n.error { t.error() } else { t.ok() }))
            }
            (None, Some(p)) => spans.push(Span::raw(format!("{p}..."))),
            (None, None) if bar.text.is_empty() => spans.push(Span::styled(
                keys::hints(app.current().bindings(), app.model.blocking_disabled().is_none()),
                t.dim(),
            )),
            _ => {}
        }
    }
    f.render_widget(Paragraph::new(fit_line(Line::from(spans), usize::from(area.width))), area);
}

/// What `b` / `B` / `u` would do for the selection, for the details pane.
fn block_effects(app: &App) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(why) = app.model.blocking_disabled() {
        v.push(format!("blocking disabled: {why}"));
        return v;
    }
    if let Some(target) = app.block_target() {
        v.push(format!("b: block {target}"));
    }
    if let Some(c) = app.selected_container() {
        v.push(format!("B: quarantine {c} (default: {})", fw_proto::control::DEFAULT_QUARANTINE_DIRECTION));
        let bs = app.model.blocks_of(&c);
        if !bs.is_empty() {
            let ids: Vec<String> = bs.iter().map(|b| format!("#{}", b.id)).collect();
            v.push(format!("u: lift a block of {c} ({})", ids.join(", ")));
        }
    }
    v
}

fn details(f: &mut Frame, app: &App, cx: &DrawCx, area: Rect) -> Option<Rect> {
    let d = app.current().details(cx)?;
    let mut lines = d.lines;
    if matches!(app.screen, ScreenId::Flows | ScreenId::Drops | ScreenId::Containers) {
        let effects = block_effects(app);
        if !effects.is_empty() {
            lines.push(Line::raw(""));
            lines.extend(effects.into_iter().map(|e| Line::styled(e, cx.t.warn())));
        }
    }
    lines.push(Line::styled("Esc or Enter closes", cx.t.dim()));
    let w = if area.width >= WIDE { 100 } else { area.width };
    Some(popup(f, cx.t, area, w, d.title, lines, 0).0)
}
