//! The `/` filter line: the text being typed, the filter in force (one language with the CLI
//! and the daemon: `fw_proto::filter`), its error, and when a typed filter applies. Every
//! screen uses the one filter.

use std::time::{Duration, Instant};

use fw_proto::filter::Filter;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// From this many flow rows, typing a filter applies it once typing pauses for
/// [`FILTER_IDLE`] (or on Enter), not per key: a key costs nothing, however many rows.
pub const LIVE_FILTER_ROWS: usize = 20_000;
pub const FILTER_IDLE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Default)]
pub struct FilterBar {
    /// The filter in force.
    pub filter: Filter,
    /// What was typed.
    pub text: String,
    /// Why `text` does not parse (the filter in force stays the last good one).
    pub error: Option<String>,
    /// `Some` while the filter is being typed: the text before `/`, restored by Esc.
    pub editing: Option<String>,
    /// When the typed `text` (parsed, differing from `filter`) is due to apply.
    pub due: Option<Instant>,
}

/// Whether the filter in force changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// It changed; `narrower`: every row passing it passed the old one.
    Applied {
        narrower: bool,
    },
}

impl FilterBar {
    pub fn start(&mut self) {
        self.editing = Some(self.text.clone());
    }

    /// A key while editing; `rows` is the flow table's size (big tables wait for a pause).
    pub fn key(&mut self, k: &KeyEvent, rows: usize) -> Change {
        let mut text = self.text.clone();
        match k.code {
            KeyCode::Enter => {
                self.editing = None;
                return if self.due.is_some() { self.set(&text) } else { Change::None };
            }
            KeyCode::Esc => {
                let before = self.editing.take().unwrap_or_default();
                return self.set(&before);
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
            KeyCode::Char(c) => text.push(c),
            _ => return Change::None,
        }
        if rows < LIVE_FILTER_ROWS {
            return self.set(&text);
        }
        self.due = None;
        match Filter::parse(&text) {
            Ok(f) => {
                self.error = None;
                if f != self.filter {
                    self.due = Some(Instant::now() + FILTER_IDLE);
                }
            }
            Err(e) => self.error = Some(e.to_string()),
        }
        self.text = text;
        Change::None
    }

    /// Esc outside editing.
    pub fn clear(&mut self) -> Change {
        self.set("")
    }

    /// Applies the typed filter if it is due at `now`.
    pub fn apply_due(&mut self, now: Instant) -> Change {
        match self.due {
            Some(due) if now >= due => self.set(&self.text.clone()),
            _ => Change::None,
        }
    }

    /// Sets the text and, if it parses, the filter.
    pub fn set(&mut self, text: &str) -> Change {
        self.due = None;
        self.text = text.to_string();
        match Filter::parse(text) {
            Ok(f) => {
                self.error = None;
                if f == self.filter {
                    return Change::None;
                }
                let narrower = f.refines(&self.filter);
                self.filter = f;
                Change::Applied { narrower }
            }
            Err(e) => {
                self.error = Some(e.to_string());
                Change::None
            }
        }
    }
}
