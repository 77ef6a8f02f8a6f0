//! Diagnostics in the `path:line:col: error: message` form that editors and CI understand.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::model::SourcePos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: Arc<PathBuf>,
    /// 1-based; 0 when the problem is about the file or directory as a whole.
    pub line: u32,
    pub col: u32,
    /// Characters underlined from `col` on that line (0: a caret alone).
    pub len: u32,
    pub message: String,
    /// A word under the caret, saying what it points at.
    pub label: Option<String>,
    /// More to say below the source line (`= note: ...`): the known names, the fix.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn at(severity: Severity, pos: &SourcePos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            path: pos.path.clone(),
            line: pos.line,
            col: pos.col,
            len: pos.len,
            message: message.into(),
            label: None,
            notes: Vec::new(),
        }
    }

    pub fn whole_file(severity: Severity, path: Arc<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            path,
            line: 0,
            col: 0,
            len: 0,
            message: message.into(),
            label: None,
            notes: Vec::new(),
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.path.display(), sev, self.message)
        } else {
            write!(f, "{}:{}:{}: {}: {}", self.path.display(), self.line, self.col, sev, self.message)
        }
    }
}

/// Maps byte offsets to 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.char_indices().filter(|(_, c)| *c == '\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// 1-based line and column of a byte offset, and the characters of `span` on that line.
    pub fn locate_span(&self, text: &str, span: &std::ops::Range<usize>) -> (u32, u32, u32) {
        let (line, col) = self.locate(text, span.start);
        let start = span.start.min(text.len());
        let mut end = span.end.clamp(start, text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut start = start;
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let on_line = text.get(start..end.max(start)).unwrap_or("").split('\n').next().unwrap_or("");
        (line, col, on_line.chars().count() as u32)
    }

    pub fn locate(&self, text: &str, offset: usize) -> (u32, u32) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let start = self.starts[line];
        // Clamp to a char boundary so a span pointing inside a multi-byte char cannot panic.
        let mut end = offset;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let col = text.get(start..end).map_or(0, |s| s.chars().count());
        (line as u32 + 1, col as u32 + 1)
    }
}

/// "did you mean" for a misspelt key or name: the closest candidate within edit distance 2.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.min(c.len().saturating_sub(1)).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_lines_and_char_columns() {
        let text = "a = 1\nbé = 2\n\nc";
        let idx = LineIndex::new(text);
        assert_eq!(idx.locate(text, 0), (1, 1));
        assert_eq!(idx.locate(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(idx.locate(text, 9), (2, 3));
        assert_eq!(idx.locate(text, 8), (2, 2)); // inside 'é': clamped, no panic
        assert_eq!(idx.locate(text, text.len()), (4, 2));
        assert_eq!(idx.locate(text, 10_000), (4, 2));
    }

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["proto", "ports", "from", "to", "action"];
        assert_eq!(suggest("prot", &keys), Some("proto"));
        assert_eq!(suggest("acton", &keys), Some("action"));
        assert_eq!(suggest("zzzzzz", &keys), None);
    }

    #[test]
    fn formats_like_a_compiler() {
        let d = Diagnostic {
            severity: Severity::Error,
            path: Arc::new("rules/a.toml".into()),
            line: 3,
            col: 7,
            len: 5,
            message: "unknown zone `dbx`".into(),
            label: Some("not a zone".into()),
            notes: vec!["zones: web, db".into()],
        };
        assert_eq!(d.to_string(), "rules/a.toml:3:7: error: unknown zone `dbx`");
    }
}
