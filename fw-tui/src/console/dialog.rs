//! The block, quarantine and unblock dialogs: what they target (fixed when they open, so rows
//! moving underneath cannot change it), their fields, keys and rendering.

use fw_proto::control::{BlockDirection, BlockInfo, BlockTarget, Op};
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use super::keys::{dialog_hints, dialog_lookup, DialogAction};
use super::theme::Theme;
use super::widgets::popup;

/// The TTL the block dialogs offer: the one default the CLI has too
/// ([`fw_proto::control::DEFAULT_BLOCK_TTL_SECS`]); empty is "until unblocked".
pub fn default_ttl() -> String {
    fw_proto::control::DEFAULT_BLOCK_TTL_SECS.map(crate::render::duration).unwrap_or_default()
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

/// What a key did to a dialog.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Stay,
    Cancel,
    /// Enter: send this.
    Confirm(Op),
}

impl Dialog {
    fn new(kind: DialogKind, ttl: String, field: Field) -> Dialog {
        Dialog { kind, ttl, reason: String::new(), field, error: None }
    }

    pub fn block(target: BlockTarget) -> Dialog {
        Dialog::new(DialogKind::Block { target }, default_ttl(), Field::Ttl)
    }

    pub fn quarantine(container: String) -> Dialog {
        Dialog::new(
            DialogKind::Quarantine { container, direction: fw_proto::control::DEFAULT_QUARANTINE_DIRECTION },
            default_ttl(),
            Field::Ttl,
        )
    }

    pub fn unblock(candidates: Vec<BlockInfo>) -> Dialog {
        Dialog::new(DialogKind::Unblock { candidates, index: 0 }, String::new(), Field::Ttl)
    }

    fn fields(&self) -> &'static [Field] {
        match self.kind {
            DialogKind::Block { .. } => &[Field::Ttl, Field::Reason],
            DialogKind::Quarantine { .. } => &[Field::Direction, Field::Ttl, Field::Reason],
            DialogKind::Unblock { .. } => &[],
        }
    }

    /// The keys this dialog offers, for its hint line.
    fn offered(&self) -> Vec<DialogAction> {
        let mut v = Vec::new();
        if !self.fields().is_empty() {
            v.push(DialogAction::NextField);
        }
        if matches!(&self.kind, DialogKind::Unblock { candidates, .. } if candidates.len() > 1)
            || matches!(self.kind, DialogKind::Quarantine { .. })
        {
            v.extend([DialogAction::Choice(false), DialogAction::Choice(true)]);
        }
        v.extend([DialogAction::Confirm, DialogAction::Cancel]);
        v
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

    fn text_field(&mut self) -> Option<&mut String> {
        match self.field {
            Field::Ttl if !matches!(self.kind, DialogKind::Unblock { .. }) => Some(&mut self.ttl),
            Field::Reason => Some(&mut self.reason),
            _ => None,
        }
    }

    fn push_char(&mut self, c: char) {
        self.error = None;
        if let Some(s) = self.text_field() {
            if s.chars().count() < 200 {
                s.push(c);
            }
        }
    }

    /// Whether Left/Right (and Space) choose something now.
    fn choosing(&self) -> bool {
        match &self.kind {
            DialogKind::Unblock { candidates, .. } => !candidates.is_empty(),
            DialogKind::Quarantine { .. } => self.field == Field::Direction,
            DialogKind::Block { .. } => false,
        }
    }

    fn choose(&mut self, fwd: bool) {
        match &mut self.kind {
            DialogKind::Unblock { candidates, index } if !candidates.is_empty() => {
                let n = candidates.len();
                *index = if fwd { (*index + 1) % n } else { (*index + n - 1) % n };
            }
            DialogKind::Quarantine { direction, .. } if self.field == Field::Direction => {
                const ORDER: [BlockDirection; 3] =
                    [BlockDirection::Both, BlockDirection::Egress, BlockDirection::Ingress];
                let i = ORDER.iter().position(|x| x == direction).unwrap_or(0);
                *direction = ORDER[if fwd { (i + 1) % 3 } else { (i + 2) % 3 }];
            }
            _ => {}
        }
    }

    pub fn key(&mut self, k: &KeyEvent) -> Outcome {
        let fields = self.fields();
        let pos = fields.iter().position(|f| *f == self.field).unwrap_or(0);
        match dialog_lookup(k) {
            Some(DialogAction::Cancel) => return Outcome::Cancel,
            Some(DialogAction::Confirm) => match self.op() {
                Ok(op) => return Outcome::Confirm(op),
                Err(e) => self.error = Some(e),
            },
            Some(DialogAction::NextField) if !fields.is_empty() => {
                self.field = fields[(pos + 1) % fields.len()]
            }
            Some(DialogAction::PrevField) if !fields.is_empty() => {
                self.field = fields[(pos + fields.len() - 1) % fields.len()]
            }
            Some(DialogAction::Choice(fwd)) => self.choose(fwd),
            Some(DialogAction::ClearField) => {
                if let Some(s) = self.text_field() {
                    s.clear();
                }
            }
            _ => match k.code {
                KeyCode::Char(' ') if self.choosing() => self.choose(true),
                KeyCode::Backspace => {
                    if let Some(s) = self.text_field() {
                        s.pop();
                    }
                    self.error = None;
                }
                KeyCode::Char(c) => self.push_char(c),
                _ => {}
            },
        }
        Outcome::Stay
    }

    pub fn draw(&self, f: &mut Frame, t: &Theme, area: Rect, now_ms: i64) -> Rect {
        let field = |name: &str, value: &str, which: Field| -> Line<'static> {
            let focused = self.field == which;
            let text = if focused { format!("[{value}█]") } else { format!("[{value}]") };
            Line::from(vec![
                Span::styled(format!("{name:<10}"), t.header()),
                Span::styled(
                    text,
                    if focused { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() },
                ),
            ])
        };
        let mut lines = Vec::new();
        let title = match &self.kind {
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
                let focused = self.field == Field::Direction;
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
                    lines.push(Line::raw(block_line(b, now_ms / 1000)));
                    if candidates.len() > 1 {
                        lines.push(Line::styled(format!("{} of {}", index + 1, candidates.len()), t.dim()));
                    }
                }
                "Unblock"
            }
        };
        if !matches!(self.kind, DialogKind::Unblock { .. }) {
            lines.push(field("ttl", &self.ttl, Field::Ttl));
            lines.push(field("reason", &self.reason, Field::Reason));
            lines.push(Line::styled("ttl: 90s, 15m, 2h, 1d; empty = until unblocked", t.dim()));
        }
        if let Some(e) = &self.error {
            lines.push(Line::styled(e.clone(), t.error()));
        }
        lines.push(Line::styled(dialog_hints(&self.offered()), t.dim()));
        popup(f, t, area, 72, title, lines, 0).0
    }
}

/// One block in a line: target, expiry, reason, who.
pub fn block_line(b: &BlockInfo, now: i64) -> String {
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
