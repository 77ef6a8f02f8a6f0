//! Drawing helpers shared by screens and overlays.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::theme::Theme;

/// A rectangle of at most `w` x `h` centred in `area`.
pub fn centred(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// What a drawn popup holds: where it is, how many of its text rows show, how many it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shown {
    pub rows: usize,
    pub total: usize,
}

/// Draws a bordered box of width `w` (at most the screen's) centred in `screen`, as tall as
/// its wrapped lines (at most the screen), its text scrolled by `scroll` rows. When it does not
/// all show, the title says which rows do.
pub fn popup(
    f: &mut Frame,
    t: &Theme,
    screen: Rect,
    w: u16,
    title: &str,
    lines: Vec<Line<'static>>,
    scroll: usize,
) -> (Rect, Shown) {
    let w = w.min(screen.width);
    let inner = usize::from(w.saturating_sub(2)).max(1);
    let total: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let area = centred(screen, w, (total + 2).min(usize::from(u16::MAX)) as u16);
    let rows = usize::from(area.height.saturating_sub(2));
    let scroll = scroll.min(total.saturating_sub(rows));
    let title = if rows < total {
        format!(" {title} {}-{} of {}, Up/Down scroll ", scroll + 1, (scroll + rows).min(total), total)
    } else {
        format!(" {title} ")
    };
    f.render_widget(Clear, area);
    let block = Block::new().borders(Borders::ALL).title(Span::styled(title, t.header()));
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((u16::try_from(scroll).unwrap_or(u16::MAX), 0)),
        area,
    );
    (area, Shown { rows, total })
}
