//! Diagnostics as a compiler prints them: the `path:line:col: error: message` line that
//! editors, CI and the daemon log parse, then the source line with the problem underlined,
//! a label, and notes, rendered by `annotate-snippets` (rustc's renderer). Pure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use super::diag::{Diagnostic, Severity};

/// Whether the output goes to a terminal that takes colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Color,
}

/// The text of the files diagnostics point into, by path.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    texts: HashMap<PathBuf, String>,
}

impl Sources {
    pub fn new() -> Sources {
        Sources::default()
    }

    pub fn add(&mut self, path: impl Into<PathBuf>, text: impl Into<String>) {
        self.texts.insert(path.into(), text.into());
    }

    pub fn get(&self, path: &Path) -> Option<&str> {
        self.texts.get(path).map(String::as_str)
    }
}

/// One diagnostic: its first line exactly as `Display` prints it, then, when its file is
/// known and it has a position, the source line with a caret, and its notes.
pub fn render(d: &Diagnostic, sources: &Sources, style: Style) -> String {
    let mut out = first_line(d, style);
    out.push('\n');
    let line = (d.line > 0).then(|| sources.get(&d.path)).flatten().and_then(|t| source_line(t, d.line));
    let level = match d.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let renderer = match style {
        Style::Plain => Renderer::plain(),
        Style::Color => Renderer::styled(),
    };
    let mut group = Group::with_level(level.clone());
    let mut any = false;
    if let Some(text) = line {
        let span = char_span(text, d.col, d.len);
        let mut a = AnnotationKind::Primary.span(span);
        if let Some(l) = &d.label {
            a = a.label(l.as_str());
        }
        group = group.element(Snippet::source(text).line_start(d.line as usize).fold(false).annotation(a));
        any = true;
    }
    for n in &d.notes {
        group = group.element(Level::NOTE.message(n.as_str()));
        any = true;
    }
    if any {
        let body = renderer.render(&[group]);
        for l in body.lines() {
            out.push_str(l.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Every diagnostic, each followed by a blank line when it has a snippet, the way rustc
/// separates them.
pub fn render_all(diags: &[Diagnostic], sources: &Sources, style: Style) -> String {
    let mut out = String::new();
    for d in diags {
        let r = render(d, sources, style);
        let multi = r.lines().count() > 1;
        out.push_str(&r);
        if multi {
            out.push('\n');
        }
    }
    out
}

fn first_line(d: &Diagnostic, style: Style) -> String {
    if style == Style::Plain {
        return d.to_string();
    }
    let bold = anstyle::Style::new().bold();
    let (word, color) = match d.severity {
        Severity::Error => ("error", anstyle::AnsiColor::BrightRed),
        Severity::Warning => ("warning", anstyle::AnsiColor::BrightYellow),
    };
    let sev = bold.fg_color(Some(color.into()));
    let at = if d.line == 0 {
        format!("{}", d.path.display())
    } else {
        format!("{}:{}:{}", d.path.display(), d.line, d.col)
    };
    format!(
        "{}{at}:{} {}{word}{}{}: {}{}",
        bold.render(),
        bold.render_reset(),
        sev.render(),
        sev.render_reset(),
        bold.render(),
        d.message,
        bold.render_reset()
    )
}

/// The text of 1-based line `n`, without its line break.
fn source_line(text: &str, n: u32) -> Option<&str> {
    let l = text.split('\n').nth(n as usize - 1)?;
    Some(l.strip_suffix('\r').unwrap_or(l))
}

/// Byte range of `len` characters from 1-based character column `col` (at least one
/// character when the line has one there; an empty range at the end of the line).
fn char_span(line: &str, col: u32, len: u32) -> std::ops::Range<usize> {
    let mut idx = line.char_indices().map(|(i, _)| i).chain([line.len()]);
    let start = idx.nth(col.saturating_sub(1) as usize).unwrap_or(line.len());
    let rest = &line[start..];
    let n = (len.max(1)) as usize;
    let end = rest.char_indices().nth(n).map_or(line.len(), |(i, _)| start + i);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn d(line: u32, col: u32, len: u32) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            path: Arc::new("rules/a.toml".into()),
            line,
            col,
            len,
            message: "unknown zone `dbx`; did you mean `db`?".into(),
            label: Some("no such zone".into()),
            notes: vec!["zones: web, db, any".into()],
        }
    }

    fn sources() -> Sources {
        let mut s = Sources::new();
        s.add("rules/a.toml", "[[policy]]\nfrom = \"web\"\nto = \"dbx\"\naction = \"allow\"\n");
        s
    }

    #[test]
    fn first_line_stays_the_classic_one_then_the_source_and_a_caret() {
        let text = render(&d(3, 6, 5), &sources(), Style::Plain);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "rules/a.toml:3:6: error: unknown zone `dbx`; did you mean `db`?");
        assert!(text.contains("3 | to = \"dbx\""), "{text}");
        assert!(text.contains("|      ^^^^^ no such zone"), "{text}");
        assert!(text.contains("= note: zones: web, db, any"), "{text}");
        assert!(!text.contains('\u{1b}'), "plain output has no escapes: {text:?}");
    }

    #[test]
    fn colours_only_when_asked() {
        let text = render(&d(3, 6, 5), &sources(), Style::Color);
        assert!(text.contains('\u{1b}'), "{text:?}");
        let stripped: String = strip_ansi(&text);
        assert_eq!(
            stripped.lines().next(),
            Some("rules/a.toml:3:6: error: unknown zone `dbx`; did you mean `db`?")
        );
    }

    fn strip_ansi(s: &str) -> String {
        let mut out = String::new();
        let mut esc = false;
        for c in s.chars() {
            match (esc, c) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    }

    #[test]
    fn positions_off_the_text_never_panic() {
        for (line, col, len) in [(1, 1, 0), (3, 40, 9), (99, 1, 1), (4, 1, 1000), (5, 1, 1)] {
            let text = render(&d(line, col, len), &sources(), Style::Plain);
            assert!(text.starts_with("rules/a.toml:"), "{text}");
        }
        let whole = Diagnostic { line: 0, col: 0, ..d(0, 0, 0) };
        assert!(render(&whole, &sources(), Style::Plain).starts_with("rules/a.toml: error: "));
        // Multi-byte characters: columns count characters.
        let mut s = Sources::new();
        s.add("rules/a.toml", "é = \"ü\"\n");
        let text = render(&d(1, 5, 3), &s, Style::Plain);
        assert!(text.contains("^^^"), "{text}");
    }
}
