//! Honest columns: widths follow what the visible rows hold, columns give way by priority,
//! and a value is never cut without an ellipsis. Numbers are never cut; a value's protected
//! end (an endpoint's `:port`, a source's `:line)`) survives when the rest is cut.

use ratatui::layout::Constraint;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

pub const ELLIPSIS: char = '…';

/// How a column's values may be shortened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Cut at the end with an ellipsis, down to the column's `min`.
    Text,
    /// Never cut (counts, rates, ports, times).
    Num,
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub title: &'static str,
    pub fit: Fit,
    /// Which columns give way first when the terminal is narrow: higher goes first; 0 never.
    pub drop: u8,
    /// The narrowest a [`Fit::Text`] value is cut to.
    pub min: u16,
    /// The widest the column grows, however long its values (0: no limit).
    pub max: u16,
}

impl Col {
    pub const fn text(title: &'static str, drop: u8, min: u16) -> Col {
        Col { title, fit: Fit::Text, drop, min, max: 0 }
    }
    pub const fn num(title: &'static str, drop: u8) -> Col {
        Col { title, fit: Fit::Num, drop, min: 0, max: 0 }
    }
    pub const fn max(mut self, max: u16) -> Col {
        self.max = max;
        self
    }
}

/// A cell's text: what is shown, and how many bytes at its end are never cut (`:8080`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text {
    pub s: String,
    pub keep: usize,
    pub style: Style,
}

impl Text {
    pub fn new(s: impl Into<String>) -> Text {
        Text { s: s.into(), keep: 0, style: Style::new() }
    }

    /// `s`, whose last `tail` (a suffix of it) survives any cut.
    pub fn keeping(s: impl Into<String>, tail: &str) -> Text {
        let s = s.into();
        let keep = if s.ends_with(tail) { tail.len() } else { 0 };
        Text { s, keep, style: Style::new() }
    }

    pub fn styled(mut self, style: Style) -> Text {
        self.style = style;
        self
    }

    pub fn width(&self) -> usize {
        self.s.width()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::new(s)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::new(s)
    }
}

/// The longest prefix of `s` at most `w` columns wide.
fn prefix(s: &str, w: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let cw = c.width().unwrap_or(0);
        if used + cw > w {
            return &s[..i];
        }
        used += cw;
    }
    s
}

/// The longest suffix of `s` at most `w` columns wide.
fn suffix(s: &str, w: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices().rev() {
        let cw = c.width().unwrap_or(0);
        if used + cw > w {
            return &s[i + c.len_utf8()..];
        }
        used += cw;
    }
    s
}

/// `s` in at most `w` columns: whole if it fits, else cut with an ellipsis where the cut is,
/// the last `keep` bytes kept (`api-to-partn…`, `10.77.0.…:8080`). A keep wider than `w`
/// keeps its end: `…:8080`.
pub fn fit(s: &str, keep: usize, w: usize) -> String {
    if s.width() <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let keep = keep.min(s.len());
    let (head, tail) = if s.is_char_boundary(s.len() - keep) { s.split_at(s.len() - keep) } else { (s, "") };
    let tw = tail.width();
    if tw + 1 >= w {
        let mut out = String::from(ELLIPSIS);
        out.push_str(suffix(tail, w - 1));
        return out;
    }
    let mut out = prefix(head, w - 1 - tw).to_string();
    out.push(ELLIPSIS);
    out.push_str(tail);
    out
}

/// A line fitted to `w` columns: spans kept whole while they fit, the first that does not is
/// cut with an ellipsis, the rest left out.
pub fn fit_line(line: Line<'static>, w: usize) -> Line<'static> {
    if line.width() <= w {
        return line;
    }
    let mut out: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for span in line.spans {
        let sw = span.content.width();
        if used + sw <= w.saturating_sub(1) {
            used += sw;
            out.push(span);
            continue;
        }
        let room = w.saturating_sub(used);
        out.push(Span::styled(fit(&span.content, 0, room.max(1)), span.style));
        break;
    }
    Line::from(out).style(line.style)
}

/// Column widths for `avail` columns: `None` for a column that gave way. `want` is the widest
/// value each column holds (headers included by the caller or here).
pub fn solve(cols: &[Col], want: &[usize], avail: u16, spacing: u16) -> Vec<Option<u16>> {
    let n = cols.len();
    let want: Vec<u16> = (0..n)
        .map(|i| {
            let w = want.get(i).copied().unwrap_or(0).max(cols[i].title.width());
            let w = u16::try_from(w).unwrap_or(u16::MAX);
            if cols[i].max > 0 && cols[i].fit == Fit::Text {
                w.min(cols[i].max.max(cols[i].title.width() as u16))
            } else {
                w
            }
        })
        .collect();
    let need: Vec<u16> = (0..n)
        .map(|i| match cols[i].fit {
            Fit::Num => want[i],
            Fit::Text => want[i].min(cols[i].min.max(cols[i].title.width() as u16)),
        })
        .collect();
    // Most important first: columns that never go, then by `drop`, then left to right.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (cols[i].drop, i));
    let mut width: Vec<Option<u16>> = vec![None; n];
    let used = |width: &[Option<u16>]| -> u32 {
        let cols: Vec<u16> = width.iter().flatten().copied().collect();
        cols.iter().map(|&w| u32::from(w)).sum::<u32>()
            + u32::from(spacing) * (cols.len().saturating_sub(1) as u32)
    };
    let fits = |width: &[Option<u16>], w: u16| -> bool {
        let extra = u32::from(w) + if width.iter().any(Option::is_some) { u32::from(spacing) } else { 0 };
        used(width) + extra <= u32::from(avail)
    };
    // 1. Whole values, most important column first; a column that does not fit whole waits.
    for &i in &order {
        if fits(&width, want[i]) {
            width[i] = Some(want[i]);
        }
    }
    // 2. Those that waited, cut to their minimum if that fits.
    for &i in &order {
        if width[i].is_none() && fits(&width, need[i]) {
            width[i] = Some(need[i]);
        }
    }
    // 3. A column that never goes pushes out the least important others.
    for &i in &order {
        if width[i].is_some() || cols[i].drop != 0 {
            continue;
        }
        for &j in order.iter().rev() {
            if fits(&width, need[i]) {
                break;
            }
            if cols[j].drop != 0 && width[j].is_some() {
                width[j] = None;
            }
        }
        width[i] = Some(need[i]);
    }
    // 4. Space left grows the cut columns back toward their values, most important first.
    for &i in &order {
        let Some(w) = width[i] else { continue };
        let room = u32::from(avail).saturating_sub(used(&width));
        if room == 0 {
            break;
        }
        let grow = u32::from(want[i].saturating_sub(w)).min(room);
        width[i] = Some(w + grow as u16);
    }
    width
}

/// A table laid out from its cells: the columns shown, their widths, the header and rows, with
/// every value fitted to its column.
pub struct Laid {
    pub widths: Vec<Constraint>,
    pub header: Row<'static>,
    pub rows: Vec<Row<'static>>,
    /// For each shown column, its index in the caller's columns.
    pub shown: Vec<usize>,
}

/// Lays out `rows` (each a cell per column, and the row's style) in `avail` columns.
/// `sorted` marks the sorted column's title with an arrow.
pub fn lay_out(
    cols: &[Col],
    rows: Vec<(Vec<Text>, Style)>,
    avail: u16,
    spacing: u16,
    header_style: Style,
    sorted: Option<(usize, bool)>,
) -> Laid {
    let titles: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| match sorted {
            Some((s, rev)) if s == i => format!("{}{}", c.title, if rev { '↑' } else { '↓' }),
            _ => c.title.to_string(),
        })
        .collect();
    let mut want: Vec<usize> = titles.iter().map(|t| t.width()).collect();
    for (cells, _) in &rows {
        for (i, c) in cells.iter().enumerate() {
            if let Some(w) = want.get_mut(i) {
                *w = (*w).max(c.width());
            }
        }
    }
    let widths = solve(cols, &want, avail, spacing);
    let shown: Vec<usize> = (0..cols.len()).filter(|&i| widths[i].is_some()).collect();
    let header = Row::new(shown.iter().map(|&i| {
        let w = usize::from(widths[i].unwrap_or(0));
        Cell::from(fit(&titles[i], 0, w))
    }))
    .style(header_style);
    let rows = rows
        .into_iter()
        .map(|(cells, style)| {
            let mut cells: Vec<Option<Text>> = cells.into_iter().map(Some).collect();
            Row::new(shown.iter().map(|&i| {
                let w = usize::from(widths[i].unwrap_or(0));
                match cells.get_mut(i).and_then(Option::take) {
                    Some(t) => {
                        let s = match cols[i].fit {
                            Fit::Num => t.s,
                            Fit::Text => fit(&t.s, t.keep, w),
                        };
                        Cell::from(s).style(t.style)
                    }
                    None => Cell::from(""),
                }
            }))
            .style(style)
        })
        .collect();
    Laid {
        widths: shown.iter().map(|&i| Constraint::Length(widths[i].unwrap_or(0))).collect(),
        header,
        rows,
        shown,
    }
}

/// A table as lines of text, for tables that scroll with other lines: its header line and one
/// line per row, each value fitted and padded to its column.
pub fn lines(
    cols: &[Col],
    rows: Vec<(Vec<Text>, Style)>,
    avail: u16,
    spacing: u16,
    header_style: Style,
) -> (Line<'static>, Vec<Line<'static>>) {
    let mut want: Vec<usize> = cols.iter().map(|c| c.title.width()).collect();
    for (cells, _) in &rows {
        for (i, c) in cells.iter().enumerate() {
            if let Some(w) = want.get_mut(i) {
                *w = (*w).max(c.width());
            }
        }
    }
    let widths = solve(cols, &want, avail, spacing);
    let gap = " ".repeat(usize::from(spacing));
    let line = |cells: Vec<(String, Style)>, style: Style| -> Line<'static> {
        let mut spans = Vec::new();
        let shown: Vec<(usize, u16)> =
            widths.iter().enumerate().filter_map(|(i, w)| Some((i, (*w)?))).collect();
        let mut cells: Vec<Option<(String, Style)>> = cells.into_iter().map(Some).collect();
        for (n, (i, w)) in shown.iter().enumerate() {
            let (s, st) = cells.get_mut(*i).and_then(Option::take).unwrap_or_default();
            let pad = usize::from(*w).saturating_sub(s.width());
            let last = n + 1 == shown.len();
            spans.push(Span::styled(s, st));
            if !last {
                spans.push(Span::raw(format!("{}{gap}", " ".repeat(pad))));
            }
        }
        Line::from(spans).style(style)
    };
    let header = line(cols.iter().map(|c| (c.title.to_string(), Style::new())).collect(), header_style);
    let body = rows
        .into_iter()
        .map(|(cells, style)| {
            let fitted = cells
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    let w = widths.get(i).copied().flatten().map_or(0, usize::from);
                    let s = match cols.get(i).map(|c| c.fit) {
                        Some(Fit::Text) => fit(&t.s, t.keep, w),
                        _ => t.s,
                    };
                    (s, t.style)
                })
                .collect();
            line(fitted, style)
        })
        .collect();
    (header, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cuts_say_so_and_keep_what_must_survive() {
        assert_eq!(fit("api-to-partners", 0, 15), "api-to-partners");
        assert_eq!(fit("api-to-partners", 0, 14), "api-to-partne…");
        assert_eq!(fit("10.77.0.21:8080", ":8080".len(), 14), "10.77.0.…:8080");
        assert_eq!(fit("10.77.0.21:8080", ":8080".len(), 6), "…:8080");
        assert_eq!(fit("10.77.0.21:8080", ":8080".len(), 3), "…80");
        assert_eq!(fit("x", 0, 0), "");
        assert_eq!(fit("日本語テキスト", 0, 5), "日本…");
        let l = fit_line(Line::from(vec![Span::raw("● connected"), Span::raw(" │ policy 9f2c")]), 15);
        assert_eq!(l.to_string(), "● connected │ …");
        assert_eq!(l.width(), 15);
    }

    #[test]
    fn columns_give_way_by_priority_and_numbers_stay_whole() {
        let cols =
            [Col::text("NAME", 0, 4), Col::text("ZONE", 3, 4), Col::num("BYTES", 1), Col::text("NOTE", 2, 4)];
        // Everything fits whole.
        assert_eq!(solve(&cols, &[10, 4, 8, 6], 40, 1), [Some(10), Some(4), Some(8), Some(6)]);
        // 30 columns: ZONE (the first to go) gives way, the rest stay whole: 10+8+6+2 = 26.
        assert_eq!(solve(&cols, &[10, 4, 8, 6], 30, 1), [Some(10), None, Some(8), Some(6)]);
        // 20: NAME and BYTES whole (19), nothing else fits.
        assert_eq!(solve(&cols, &[10, 4, 8, 6], 20, 1), [Some(10), None, Some(8), None]);
        // A long NAME is cut before a number is, and a cut column grows back into free space.
        let w = solve(&cols, &[60, 4, 8, 6], 40, 1);
        assert_eq!(w[2], Some(8));
        assert!(w[0].is_some_and(|n| n >= 4));
        let used: u16 = w.iter().flatten().sum::<u16>() + (w.iter().flatten().count() as u16 - 1);
        assert_eq!(used, 40, "{w:?}");
    }

    proptest! {
        #[test]
        fn fitted_text_fits_and_marks_its_cut(s in "\\PC{0,30}", keep in 0usize..8, w in 0usize..40) {
            let keep = keep.min(s.len());
            let out = fit(&s, keep, w);
            prop_assert!(out.width() <= w);
            if s.width() <= w {
                prop_assert_eq!(&out, &s);
            } else if w > 0 {
                prop_assert!(out.contains(ELLIPSIS));
            }
        }

        #[test]
        fn solved_widths_fit(want in proptest::collection::vec(0usize..50, 1..8), avail in 0u16..200) {
            let cols: Vec<Col> = (0..want.len())
                .map(|i| if i % 3 == 0 { Col::num("N", (i % 4) as u8 + 1) } else { Col::text("T", (i % 4) as u8, 4) })
                .collect();
            let w = solve(&cols, &want, avail, 1);
            let shown: Vec<u16> = w.iter().flatten().copied().collect();
            let used: u32 = shown.iter().map(|&x| u32::from(x)).sum::<u32>() + shown.len().saturating_sub(1) as u32;
            prop_assert!(used <= u32::from(avail) || shown.is_empty() || cols.iter().any(|c| c.drop == 0));
            for (i, c) in cols.iter().enumerate() {
                if let (Some(x), Fit::Num) = (w[i], c.fit) {
                    prop_assert!(usize::from(x) >= want[i].max(1), "a number column is never narrower than its values");
                }
            }
        }
    }
}
