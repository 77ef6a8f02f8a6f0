//! HTTP/1.x request line and `Host`, by a small bounds-checked parser of our own that works on
//! a growing prefix of the client's stream: it answers as soon as the request line (for
//! absolute-form and CONNECT targets) or the first `Host` header line is complete, and says
//! `Invalid` as soon as the bytes so far cannot start an HTTP/1.x request.

use super::sniff::{is_method_char, MAX_METHOD};
use super::Parse;

/// Longest request line or header line we wait for.
const MAX_LINE: usize = 4096;

/// What the request says about its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The host the request is for, without port or IPv6 brackets: from the request target
    /// when it is absolute-form (`GET http://h/ HTTP/1.1`) or authority-form (`CONNECT h:443`),
    /// as RFC 9112 3.2.2 has servers do, else from the first `Host` header. None: no Host.
    pub host: Option<Vec<u8>>,
}

pub use super::sniff::looks_like_http_request as looks_like_request;

/// One line ending in LF (a CR before it is dropped), or None when the line is not complete.
fn line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = data.iter().take(MAX_LINE + 2).position(|&c| c == b'\n')?;
    let l = &data[..i];
    Some((l.strip_suffix(b"\r").unwrap_or(l), &data[i + 1..]))
}

fn bad(why: &str) -> Parse<Request> {
    Parse::Invalid(format!("not HTTP: {why}"))
}

/// Parses the start of a client's stream as an HTTP/1.x request.
pub fn parse_request(data: &[u8]) -> Parse<Request> {
    if data.first() == Some(&0x16) {
        return bad("TLS handshake");
    }
    if data.starts_with(b"SSH-") {
        return Parse::Invalid(format!("not HTTP: {}", super::sniff::describe(data)));
    }
    // Method: check the prefix as it grows, so garbage is refused on the first segment.
    let m = data.iter().take(MAX_METHOD + 1).take_while(|&&c| is_method_char(c)).count();
    if m > MAX_METHOD {
        return bad("no method");
    }
    match data.get(m) {
        None => return Parse::NeedMore,
        Some(b' ') if m > 0 => {}
        Some(_) => return bad("no request line"),
    }
    let method = &data[..m];
    let Some((req_line, mut rest)) = line(data) else {
        if data.len() > MAX_LINE {
            return bad("request line too long");
        }
        if data.iter().any(|&c| c < 0x20 && c != b'\r' && c != b'\t' || c == 0x7f) {
            return bad("control bytes in request line");
        }
        return Parse::NeedMore;
    };
    // METHOD SP target SP HTTP/1.x
    let after = &req_line[m + 1..];
    let Some(sp) = after.iter().position(|&c| c == b' ') else { return bad("malformed request line") };
    let (target, version) = (&after[..sp], &after[sp + 1..]);
    if target.is_empty() || target.iter().any(|&c| !c.is_ascii_graphic()) {
        return bad("malformed request target");
    }
    if version.len() != 8 || !version.starts_with(b"HTTP/1.") || !version[7].is_ascii_digit() {
        return bad("not an HTTP/1.x request line");
    }
    if method == b"CONNECT" {
        return Parse::Done(Request { host: Some(host_of(target).to_vec()) });
    }
    if let Some(auth) = absolute_authority(target) {
        return Parse::Done(Request { host: Some(host_of(auth).to_vec()) });
    }
    // Header lines up to the first Host, or the empty line that ends the header block.
    loop {
        let Some((l, r)) = line(rest) else {
            return if rest.len() > MAX_LINE { bad("header line too long") } else { Parse::NeedMore };
        };
        rest = r;
        if l.is_empty() {
            return Parse::Done(Request { host: None });
        }
        if l[0] == b' ' || l[0] == b'\t' {
            return bad("folded header line");
        }
        let Some(colon) = l.iter().position(|&c| c == b':') else { return bad("header line without `:`") };
        let name = &l[..colon];
        if name.is_empty()
            || !name.iter().all(|&c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
        {
            return bad("malformed header name");
        }
        if name.eq_ignore_ascii_case(b"host") {
            let v = l[colon + 1..].trim_ascii();
            return Parse::Done(Request { host: Some(host_of(v).to_vec()) });
        }
    }
}

/// The authority of an absolute-form target `scheme://[userinfo@]authority[/?#...]`.
fn absolute_authority(target: &[u8]) -> Option<&[u8]> {
    let i = target.windows(3).position(|w| w == b"://")?;
    if i == 0 || !target[..i].iter().all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c)) {
        return None;
    }
    let a = &target[i + 3..];
    let end = a.iter().position(|c| b"/?#".contains(c)).unwrap_or(a.len());
    let a = &a[..end];
    Some(match a.iter().rposition(|&c| c == b'@') {
        Some(at) => &a[at + 1..],
        None => a,
    })
}

/// `host[:port]` or `[v6]:port` → host (brackets of an IPv6 literal dropped).
pub fn host_of(v: &[u8]) -> &[u8] {
    if let Some(inner) = v.strip_prefix(b"[") {
        if let Some(close) = inner.iter().position(|&c| c == b']') {
            return &inner[..close];
        }
        return v;
    }
    match v.iter().rposition(|&c| c == b':') {
        // Only one colon: a port. Several: a bare IPv6 literal (invalid, but keep it whole).
        Some(i) if v[..i].iter().all(|&c| c != b':') => &v[..i],
        _ => v,
    }
}
