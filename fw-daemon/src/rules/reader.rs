//! Typed reading of a parsed TOML document that records a diagnostic for every problem instead
//! of stopping at the first, so `fw-daemon check` can list them all in one run.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::{suggest, Diagnostic, LineIndex, Severity};
use super::model::SourcePos;

pub type Value<'i> = Spanned<DeValue<'i>>;

/// Diagnostics kept per file: beyond this a file is garbage, and listing it all would cost
/// memory in proportion to its size. The rest are counted ([`FileCtx::finish`]).
pub const MAX_FILE_DIAGNOSTICS: usize = 1000;

/// One rule file being read: its text, positions, and the diagnostics found so far.
pub struct FileCtx<'s> {
    pub path: Arc<PathBuf>,
    text: &'s str,
    lines: LineIndex,
    pub diags: Vec<Diagnostic>,
    dropped: usize,
}

impl<'s> FileCtx<'s> {
    pub fn new(path: Arc<PathBuf>, text: &'s str) -> Self {
        FileCtx { path, text, lines: LineIndex::new(text), diags: Vec::new(), dropped: 0 }
    }

    /// Errors found so far (kept or not).
    pub fn errors(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count() + self.dropped
    }

    fn push(&mut self, d: Diagnostic) {
        if self.diags.len() < MAX_FILE_DIAGNOSTICS {
            self.diags.push(d);
        } else {
            self.dropped += 1;
        }
    }

    /// The diagnostics, and one more for those not kept.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        if self.dropped > 0 {
            // At the end of the file, so it sorts after what it continues.
            let end = self.pos(&(self.text.len()..self.text.len()));
            let n = self.dropped;
            self.diags.push(Diagnostic::at(
                Severity::Error,
                &end,
                format!("... and {n} more problems in this file"),
            ));
        }
        self.diags
    }

    pub fn pos(&self, span: &Range<usize>) -> SourcePos {
        let (line, col, len) = self.lines.locate_span(self.text, span);
        SourcePos { path: self.path.clone(), line, col, len }
    }

    /// The span from the start of `a` to the end of `b` (a key and its value).
    pub fn join(a: &Range<usize>, b: &Range<usize>) -> Range<usize> {
        a.start.min(b.start)..a.end.max(b.end)
    }

    pub fn error(&mut self, span: &Range<usize>, msg: impl Into<String>) {
        let d = Diagnostic::at(Severity::Error, &self.pos(span), msg);
        self.push(d);
    }

    pub fn warning(&mut self, span: &Range<usize>, msg: impl Into<String>) {
        let d = Diagnostic::at(Severity::Warning, &self.pos(span), msg);
        self.push(d);
    }

    /// A diagnostic at `span`, to be given a label or notes and then [`report`](Self::report)ed.
    pub fn diag(&self, severity: Severity, span: &Range<usize>, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::at(severity, &self.pos(span), msg)
    }

    pub fn report(&mut self, d: Diagnostic) {
        self.push(d);
    }

    fn type_error(&mut self, v: &Value<'_>, what: &str, expected: &str) {
        let found = v.get_ref().type_str();
        self.error(&v.span(), format!("`{what}` must be {expected}, found {}", article(found)));
    }

    /// Reports every key of `table` not in `allowed`, with a suggestion when one is close.
    /// Returns the keys suggested: a missing key that a misspelt one stands for is not
    /// reported again as missing (that would be a follow-on error listed before its cause).
    pub fn check_keys<'a>(
        &mut self,
        table: &DeTable<'_>,
        allowed: &[&'a str],
        context: &str,
    ) -> Vec<&'a str> {
        let mut meant = Vec::new();
        for (k, _) in table.iter() {
            if allowed.contains(&k.get_ref().as_ref()) {
                continue;
            }
            let msg = match suggest(k.get_ref(), allowed) {
                Some(s) => {
                    meant.push(s);
                    format!("unknown key `{}` in {context}; did you mean `{s}`?", k.get_ref())
                }
                None => format!(
                    "unknown key `{}` in {context}; expected one of: {}",
                    k.get_ref(),
                    allowed.join(", ")
                ),
            };
            self.error(&k.span(), msg);
        }
        meant
    }

    pub fn str<'v>(&mut self, v: &'v Value<'_>, what: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.type_error(v, what, "a string");
                None
            }
        }
    }

    pub fn table<'v, 'i>(&mut self, v: &'v Value<'i>, what: &str) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.type_error(v, what, "a table");
                None
            }
        }
    }

    pub fn bool(&mut self, v: &Value<'_>, what: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(v, what, "a boolean (true or false)");
                None
            }
        }
    }

    /// A non-negative integer no larger than `max`.
    pub fn uint(&mut self, v: &Value<'_>, what: &str, max: u64) -> Option<u64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.type_error(v, what, "an integer");
            return None;
        };
        match u64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if n <= max => Some(n),
            _ => {
                self.error(&v.span(), format!("`{what}` must be between 0 and {max}"));
                None
            }
        }
    }

    /// A string or an array of strings, each with its span.
    pub fn str_list(&mut self, v: &Value<'_>, what: &str) -> Vec<(String, Range<usize>)> {
        match v.get_ref() {
            DeValue::String(s) => vec![(s.to_string(), v.span())],
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items.iter() {
                    if let Some(s) = self.str(item, what) {
                        out.push((s.to_string(), item.span()));
                    }
                }
                out
            }
            _ => {
                self.type_error(v, what, "a string or an array of strings");
                Vec::new()
            }
        }
    }

    /// Parses a `one of` string choice.
    pub fn choice<T: Copy>(&mut self, v: &Value<'_>, what: &str, options: &[(&str, T)]) -> Option<T> {
        let s = self.str(v, what)?;
        if let Some((_, t)) = options.iter().find(|(name, _)| *name == s) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let hint = match suggest(s, &names) {
            Some(h) => format!("; did you mean `{h}`?"),
            None => String::new(),
        };
        self.error(&v.span(), format!("`{what}` must be one of {}, found `{s}`{hint}", quoted(&names)));
        None
    }
}

pub fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t Value<'i>> {
    table.get(key)
}

/// A key's own span with its value, for diagnostics that point at the key.
pub fn get_key<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<(Range<usize>, &'t Value<'i>)> {
    table.iter().find(|(k, _)| k.get_ref() == key).map(|(k, v)| (k.span(), v))
}

pub fn article(type_name: &str) -> String {
    let first = type_name.chars().next().unwrap_or('x');
    let a = if "aeiou".contains(first) { "an" } else { "a" };
    format!("{a} {type_name}")
}

fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    q.join(", ")
}
