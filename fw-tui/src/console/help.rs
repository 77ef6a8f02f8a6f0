//! The `?` overlay: every key, read from the binding tables (the keys that work everywhere, then
//! the current screen's), the filter language from `fw_proto::filter`, and the mouse. It
//! scrolls, so it is whole on a small terminal.

use fw_proto::filter::KEYS as FILTER_KEYS;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::style::Style;
use ratatui::text::{Line, Span};

use super::keys::{keys_label, Binding, GLOBAL};
use super::theme::Theme;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Help {
    /// Rows scrolled past.
    pub scroll: usize,
}

/// What a key does to the help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelpKey {
    Stay,
    Close,
}

impl Help {
    /// Up/Down, PgUp/PgDn, Home/End scroll (`page` rows show of `total`); any other key closes.
    pub fn key(&mut self, k: &KeyEvent, page: usize, total: usize) -> HelpKey {
        let last = total.saturating_sub(page);
        self.scroll = match k.code {
            KeyCode::Up | KeyCode::Char('k') => self.scroll.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll + 1,
            KeyCode::PageUp => self.scroll.saturating_sub(page.max(1)),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll + page.max(1),
            KeyCode::Home | KeyCode::Char('g') => 0,
            KeyCode::End | KeyCode::Char('G') => last,
            _ => return HelpKey::Close,
        }
        .min(last);
        HelpKey::Stay
    }

    pub fn wheel(&mut self, down: bool, page: usize, total: usize) {
        let last = total.saturating_sub(page);
        self.scroll = if down { (self.scroll + 3).min(last) } else { self.scroll.saturating_sub(3) };
    }
}

fn section(t: &Theme, title: &str) -> Line<'static> {
    Line::styled(title.to_string(), t.header())
}

fn key_line(t: &Theme, keys: String, help: String, dim: bool) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("  {keys:<14} "), t.header()),
        Span::styled(help, if dim { t.dim() } else { Style::new() }),
    ])
}

/// The help's lines for a screen titled `screen` with `local` keys; `disabled` says why
/// blocking keys are off.
pub fn lines(t: &Theme, screen: &str, local: &[Binding], disabled: Option<&str>) -> Vec<Line<'static>> {
    let binding = |b: &Binding| {
        let off = b.operator && disabled.is_some();
        key_line(t, keys_label(b), format!("{}{}", b.help, if off { " (off)" } else { "" }), off)
    };
    let mut v = Vec::new();
    if let Some(why) = disabled {
        v.push(key_line(t, "b B u".into(), format!("disabled: {why}"), true));
    }
    v.push(section(t, "Everywhere"));
    v.extend(GLOBAL.iter().map(binding));
    if !local.is_empty() {
        v.push(section(t, screen));
        v.extend(local.iter().map(binding));
    }
    v.push(section(t, "Mouse"));
    v.push(key_line(t, "wheel".into(), "scroll the list".into(), false));
    v.push(key_line(t, "click".into(), "select a row, or a screen on the tab bar".into(), false));
    v.push(section(t, "Filter (/): words all match, ! negates, key:value or key=value"));
    v.push(key_line(t, "e.g.".into(), "zone:web verdict:deny port:443 !dns 10.1.".into(), false));
    v.push(key_line(t, "WORD".into(), "text in a name, zone, state, rule, address:port".into(), false));
    for k in FILTER_KEYS {
        let mut help = k.help.to_string();
        if !k.aliases.is_empty() {
            let a: Vec<String> = k.aliases.iter().map(|a| format!("{a}:")).collect();
            help.push_str(&format!(" (also {})", a.join(" ")));
        }
        v.push(key_line(t, format!("{}:", k.name), format!("{}  {help}", k.value), false));
    }
    v
}
