//! Where the last frame put things, kept for the mouse: clicks are resolved against what was
//! drawn, never against a second computation of the layout that could disagree.

use ratatui::layout::Rect;

use super::screen_id::ScreenId;
use super::screens::drops;
use super::widgets::Shown;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameLayout {
    /// The terminal size it was drawn at.
    pub size: (u16, u16),
    /// Each tab's cells on the tab bar.
    pub tabs: Vec<(Rect, ScreenId)>,
    /// The current list's rows (below its header): row `y` is list row `offset + y - list.y`.
    pub list: Option<Rect>,
    /// An overlay (help, details, dialog) covers the screen.
    pub overlay: Option<Rect>,
    /// How much of the help shows, for paging it.
    pub help: Shown,
}

impl FrameLayout {
    /// The screen whose tab is drawn at (`column`, `row`).
    pub fn tab_at(&self, column: u16, row: u16) -> Option<ScreenId> {
        self.tabs.iter().find(|(r, _)| r.contains((column, row).into())).map(|(_, s)| *s)
    }

    /// The list row drawn at terminal row `row`, counted from the first row shown.
    pub fn list_row(&self, column: u16, row: u16) -> Option<usize> {
        let l = self.list?;
        l.contains((column, row).into()).then(|| usize::from(row - l.y))
    }
}

/// The screen's area: below the tab bar, above the two bottom lines.
pub fn body(area: Rect) -> Rect {
    Rect { x: area.x, y: area.y + 1, width: area.width, height: area.height.saturating_sub(3) }
}

/// How many rows of `screen`'s list fit at `size`, as [`draw`](super::ui::draw) lays it out (before the first
/// frame; after it the frame's own layout says).
pub fn list_height(screen: ScreenId, size: (u16, u16)) -> usize {
    let b = body(Rect::new(0, 0, size.0, size.1));
    let h = match screen {
        ScreenId::Drops => drops::split(b).0.height.saturating_sub(1),
        // Policy, loaded, rules directory and reload lines stay above the list.
        ScreenId::Rules => b.height.saturating_sub(4),
        _ => b.height.saturating_sub(1),
    };
    usize::from(h)
}
