//! Names seen on the wire against a policy's allow-list (`tls_sni`, `http_host`, `dns_names`).
//!
//! Semantics (also in README.md, "Inspection"):
//! - comparison is on the ASCII (punycode, "A-label") form, case-insensitive, with one trailing
//!   dot ignored: `bücher.example` in a rule matches SNI `xn--bcher-kva.example`;
//! - `*.example.org` matches any name one or more labels below `example.org`
//!   (`a.example.org`, `a.b.example.org`) but not `example.org` itself;
//! - any other entry matches that exact name only; an empty list restricts nothing.

use std::borrow::Cow;

/// The comparable form of a name from the wire: ASCII lowercase, no trailing dot, non-ASCII
/// (UTF-8) names converted to punycode. Err(lossy text) when it is not a host name at all.
pub fn normalize(raw: &[u8]) -> Result<String, String> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_ascii() {
        let ok = !raw.is_empty()
            && raw.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
            && raw.split(|&c| c == b'.').all(|l| !l.is_empty() && l.len() <= 63);
        let s: String = raw.iter().map(|&c| c.to_ascii_lowercase() as char).collect();
        return if ok { Ok(s) } else { Err(escape(raw)) };
    }
    match std::str::from_utf8(raw) {
        Ok(s) => idna::domain_to_ascii(s).map_err(|_| s.to_string()),
        Err(_) => Err(escape(raw)),
    }
}

/// Printable form of arbitrary bytes for a reason or finding (`\xNN` for the rest).
pub fn escape(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len());
    for &c in raw.iter().take(300) {
        if c.is_ascii_graphic() && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

/// A rule entry (already lowercased by the loader) in ASCII form; None if it cannot be one.
fn pattern_ascii(p: &str) -> Option<Cow<'_, str>> {
    let p = p.strip_suffix('.').unwrap_or(p);
    if p.is_ascii() {
        return Some(if p.bytes().any(|c| c.is_ascii_uppercase()) {
            Cow::Owned(p.to_ascii_lowercase())
        } else {
            Cow::Borrowed(p)
        });
    }
    let (wild, rest) = match p.strip_prefix("*.") {
        Some(r) => ("*.", r),
        None => ("", p),
    };
    idna::domain_to_ascii(rest).ok().map(|a| Cow::Owned(format!("{wild}{a}")))
}

/// Whether `name` (from `normalize`) matches `pattern` (a rule entry).
pub fn matches(pattern: &str, name: &str) -> bool {
    let Some(p) = pattern_ascii(pattern) else { return false };
    match p.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name.ends_with(suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        }
        None => *p == *name,
    }
}

/// Whether `name` is on `list`.
pub fn allowed(list: &[String], name: &str) -> bool {
    list.iter().any(|p| matches(p, name))
}
