//! Key bindings as data: what each key does, where, and how `?` describes it. Dispatch
//! ([`lookup`]) and the help screen read the same tables, so they cannot disagree.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::screen_id::ScreenId;

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    NextScreen,
    PrevScreen,
    /// `1`-`5`: the screen of that number.
    Goto(ScreenId),
    /// A digit key bound to [`Action::Goto`] of its screen (one binding for all five).
    GotoNumber,
    EditFilter,
    ClearFilter,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Details,
    Pause,
    Follow,
    Refresh,
    SortNext,
    SortReverse,
    Block,
    Quarantine,
    Unblock,
}

/// One key: a code and whether Ctrl is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

const fn k(c: char) -> Key {
    Key { code: KeyCode::Char(c), ctrl: false }
}

const fn code(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

const fn ctrl(c: char) -> Key {
    Key { code: KeyCode::Char(c), ctrl: true }
}

impl Key {
    fn matches(&self, e: &KeyEvent) -> bool {
        let ctrl = e.modifiers.contains(KeyModifiers::CONTROL);
        // Shifted letters arrive as upper-case chars, sometimes with SHIFT set: the char decides.
        self.code == e.code && self.ctrl == ctrl
    }

    /// How help texts write the key: `q`, `Ctrl-C`, `S-Tab`, `PgDn`, `Space`.
    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) if self.ctrl => c.to_ascii_uppercase().to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Tab => "Tab".into(),
            KeyCode::BackTab => "S-Tab".into(),
            KeyCode::Enter => "Enter".into(),
            KeyCode::Esc => "Esc".into(),
            KeyCode::Up => "Up".into(),
            KeyCode::Down => "Down".into(),
            KeyCode::Left => "Left".into(),
            KeyCode::Right => "Right".into(),
            KeyCode::PageUp => "PgUp".into(),
            KeyCode::PageDown => "PgDn".into(),
            KeyCode::Home => "Home".into(),
            KeyCode::End => "End".into(),
            KeyCode::Backspace => "Backspace".into(),
            KeyCode::F(n) => format!("F{n}"),
            other => format!("{other:?}"),
        };
        if self.ctrl {
            format!("Ctrl-{base}")
        } else {
            base
        }
    }
}

/// Keys, the action they ask for, and what `?` says about them.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub keys: &'static [Key],
    pub action: Action,
    pub help: &'static str,
    /// Changes state in the daemon: needs the operator role.
    pub operator: bool,
    /// The short word the bottom line shows for it, if it is one of the few shown there.
    pub hint: Option<&'static str>,
}

const fn bind(keys: &'static [Key], action: Action, help: &'static str) -> Binding {
    Binding { keys, action, help, operator: false, hint: None }
}

const fn hinted(keys: &'static [Key], action: Action, help: &'static str, hint: &'static str) -> Binding {
    Binding { keys, action, help, operator: false, hint: Some(hint) }
}

const fn operator(keys: &'static [Key], action: Action, help: &'static str, hint: &'static str) -> Binding {
    Binding { keys, action, help, operator: true, hint: Some(hint) }
}

/// Keys that work on every screen.
pub const GLOBAL: &[Binding] = &[
    hinted(&[k('?'), code(KeyCode::F(1))], Action::Help, "this help (Up/Down scroll, Esc closes)", "help"),
    bind(&[code(KeyCode::Tab)], Action::NextScreen, "next screen"),
    bind(&[code(KeyCode::BackTab)], Action::PrevScreen, "previous screen"),
    bind(
        &[k('1'), k('2'), k('3'), k('4'), k('5')],
        Action::GotoNumber,
        "Flows, Drops & alerts, Containers, Rules (zones, policies, hits), Audit",
    ),
    bind(&[code(KeyCode::Up), k('k')], Action::Up, "select the row above (the selection stays on its row)"),
    bind(&[code(KeyCode::Down), k('j')], Action::Down, "select the row below"),
    bind(&[code(KeyCode::PageUp)], Action::PageUp, "a page up"),
    bind(&[code(KeyCode::PageDown)], Action::PageDown, "a page down"),
    bind(&[code(KeyCode::Home), k('g')], Action::Top, "the first row"),
    bind(&[code(KeyCode::End), k('G')], Action::Bottom, "the last row"),
    hinted(&[code(KeyCode::Enter)], Action::Details, "details of the selected row (Esc closes)", "details"),
    hinted(&[k('/')], Action::EditFilter, "filter every screen (the language is below)", "filter"),
    bind(&[code(KeyCode::Esc)], Action::ClearFilter, "clear the filter"),
    bind(&[k('p'), k(' ')], Action::Pause, "pause / resume live updates (stops following)"),
    bind(&[k('r')], Action::Refresh, "refresh status, blocks and audit now"),
    operator(&[k('b')], Action::Block, "block the selected flow's destination for its container", "block"),
    operator(&[k('B')], Action::Quarantine, "quarantine the selected container", "quarantine"),
    operator(&[k('u')], Action::Unblock, "lift a block of the selected container", "unblock"),
    hinted(&[k('q'), ctrl('c')], Action::Quit, "quit", "quit"),
];

/// Keys of the Flows screen.
pub const FLOWS: &[Binding] = &[
    bind(&[k('s')], Action::SortNext, "sort by the next column"),
    bind(&[k('S')], Action::SortReverse, "reverse the sort"),
    bind(
        &[k('f')],
        Action::Follow,
        "follow: keep the first row selected as rows move (off: the selection stays on its flow)",
    ),
];

/// The action `e` asks for on a screen with `local` bindings (they win over global ones).
pub fn lookup(local: &[Binding], e: &KeyEvent) -> Option<Action> {
    let a = local.iter().chain(GLOBAL).find(|b| b.keys.iter().any(|k| k.matches(e))).map(|b| b.action)?;
    Some(match (a, e.code) {
        (Action::GotoNumber, KeyCode::Char(c @ '1'..='5')) => {
            Action::Goto(ScreenId::ALL[usize::from(c as u8 - b'1')])
        }
        (a, _) => a,
    })
}

/// `Up / k`: a binding's keys as help shows them.
pub fn keys_label(b: &Binding) -> String {
    // A run of digits reads `1-5`.
    let digits: Option<Vec<u32>> = b
        .keys
        .iter()
        .map(|k| match k.code {
            KeyCode::Char(c) if !k.ctrl => c.to_digit(10),
            _ => None,
        })
        .collect();
    if let Some(d) = digits.filter(|d| d.len() > 2 && d.windows(2).all(|w| w[1] == w[0] + 1)) {
        return format!("{}-{}", d[0], d[d.len() - 1]);
    }
    b.keys.iter().map(Key::label).collect::<Vec<_>>().join(" / ")
}

/// `? help  / filter  Enter details ...`: the bottom line's reminder, from the bindings.
pub fn hints(local: &[Binding], can_block: bool) -> String {
    local
        .iter()
        .chain(GLOBAL)
        .filter(|b| can_block || !b.operator)
        .filter_map(|b| Some(format!("{} {}", b.keys.first()?.label(), b.hint?)))
        .collect::<Vec<_>>()
        .join("  ")
}

/// A key a dialog understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogAction {
    Confirm,
    Cancel,
    NextField,
    PrevField,
    /// Left / Right (Space on a choice): the next or previous choice.
    Choice(bool),
    ClearField,
}

/// A dialog's keys, as data: dispatch and the dialog's own hint line read it.
#[derive(Debug, Clone, Copy)]
pub struct DialogBinding {
    pub keys: &'static [Key],
    pub action: DialogAction,
    pub hint: &'static str,
}

pub const DIALOG: &[DialogBinding] = &[
    DialogBinding {
        keys: &[code(KeyCode::Tab), code(KeyCode::Down)],
        action: DialogAction::NextField,
        hint: "next field",
    },
    DialogBinding {
        keys: &[code(KeyCode::BackTab), code(KeyCode::Up)],
        action: DialogAction::PrevField,
        hint: "previous",
    },
    DialogBinding { keys: &[code(KeyCode::Left)], action: DialogAction::Choice(false), hint: "choose" },
    DialogBinding { keys: &[code(KeyCode::Right)], action: DialogAction::Choice(true), hint: "choose" },
    DialogBinding { keys: &[ctrl('u')], action: DialogAction::ClearField, hint: "clear" },
    DialogBinding { keys: &[code(KeyCode::Enter)], action: DialogAction::Confirm, hint: "confirm" },
    DialogBinding { keys: &[code(KeyCode::Esc)], action: DialogAction::Cancel, hint: "cancel" },
];

pub fn dialog_lookup(e: &KeyEvent) -> Option<DialogAction> {
    DIALOG.iter().find(|b| b.keys.iter().any(|k| k.matches(e))).map(|b| b.action)
}

/// The dialog's hint line for the actions it offers: `Tab next field  Enter confirm  Esc cancel`.
pub fn dialog_hints(offered: &[DialogAction]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    for b in DIALOG.iter().filter(|b| offered.contains(&b.action)) {
        if seen.contains(&b.hint) {
            // Left and Right share one hint: `Left/Right choose`.
            if let (Some(last), Some(k)) = (out.last_mut(), b.keys.first()) {
                if last.ends_with(b.hint) {
                    let at = last.len() - b.hint.len() - 1;
                    last.insert_str(at, &format!("/{}", k.label()));
                }
            }
            continue;
        }
        seen.push(b.hint);
        if let Some(k) = b.keys.first() {
            out.push(format!("{} {}", k.label(), b.hint));
        }
    }
    out.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn lookup_prefers_screen_keys_and_reads_ctrl() {
        assert_eq!(lookup(&[], &ev(KeyCode::Char('q'), KeyModifiers::NONE)), Some(Action::Quit));
        assert_eq!(lookup(&[], &ev(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(lookup(&[], &ev(KeyCode::Char('c'), KeyModifiers::NONE)), None);
        assert_eq!(lookup(FLOWS, &ev(KeyCode::Char('s'), KeyModifiers::NONE)), Some(Action::SortNext));
        assert_eq!(lookup(&[], &ev(KeyCode::Char('s'), KeyModifiers::NONE)), None, "s sorts flows only");
        assert_eq!(lookup(&[], &ev(KeyCode::Char('B'), KeyModifiers::SHIFT)), Some(Action::Quarantine));
        assert_eq!(
            lookup(&[], &ev(KeyCode::Char('3'), KeyModifiers::NONE)),
            Some(Action::Goto(ScreenId::Containers))
        );
    }

    #[test]
    fn every_key_is_bound_once() {
        let all: Vec<Key> = GLOBAL.iter().chain(FLOWS).flat_map(|b| b.keys.iter().copied()).collect();
        for (i, a) in all.iter().enumerate() {
            assert!(!all[i + 1..].contains(a), "{} bound twice", a.label());
        }
    }

    #[test]
    fn hints_and_labels_come_from_the_tables() {
        assert_eq!(keys_label(&GLOBAL[0]), "? / F1");
        assert_eq!(keys_label(&GLOBAL[3]), "1-5");
        assert_eq!(
            hints(&[], true),
            "? help  Enter details  / filter  b block  B quarantine  u unblock  q quit"
        );
        assert!(!hints(&[], false).contains("block"));
        assert_eq!(Key { code: KeyCode::Char('c'), ctrl: true }.label(), "Ctrl-C");
        assert_eq!(
            dialog_hints(&[
                DialogAction::NextField,
                DialogAction::Choice(true),
                DialogAction::Choice(false),
                DialogAction::Confirm,
                DialogAction::Cancel
            ]),
            "Tab next field  Left/Right choose  Enter confirm  Esc cancel"
        );
    }
}
