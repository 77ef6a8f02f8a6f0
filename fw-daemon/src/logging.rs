//! Human log lines that say only what happened: every field and message is written with
//! control characters escaped, so a container name or label carrying a newline (Docker
//! labels and static inventories accept any string) cannot end a log line and forge the
//! next one, and terminal escapes cannot repaint the operator's screen. JSON output
//! escapes by itself.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::FormatFields;

/// Whether `c` must not reach a log line as it is: control characters (C0, DEL, C1),
/// Unicode line and paragraph separators, and bidirectional overrides (which make a line
/// read differently than it is).
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with those characters written as `\n`, `\r`, `\t` or `\u{..}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The field formatter of human logs: the message bare, other fields `name=value`, all
/// escaped.
pub fn human_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(|w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            w.write_str(&escape(&text))
        } else {
            write!(w, "{}={}", field.name(), escape(&text))
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_break_a_line() {
        assert_eq!(escape("web-1"), "web-1");
        assert_eq!(
            escape("web-1\n2026-01-01T00:00:00Z ERROR forged"),
            "web-1\\n2026-01-01T00:00:00Z ERROR forged"
        );
        assert_eq!(escape("a\r\tb\u{1b}[2Jc\u{7f}"), "a\\r\\tb\\u{1b}[2Jc\\u{7f}");
        assert_eq!(escape("x\u{2028}y\u{202e}z"), "x\\u{2028}y\\u{202e}z");
        assert_eq!(escape("bücher ✓"), "bücher ✓", "printable text stays as it is");
    }
}
