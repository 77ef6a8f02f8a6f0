//! TLS ClientHello → server name (SNI), by a small bounds-checked parser of our own: record
//! header(s), handshake header, then skip version, random, session id, cipher suites and
//! compression methods, and walk the extensions to `server_name` (type 0), `host_name` (0).
//! No allocation unless the handshake message is spread over several TLS records.

use super::sniff::REC_HANDSHAKE;
use super::Parse;

/// What the first bytes of a client's stream say about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello; its SNI `host_name` as raw bytes if it has one.
    ClientHello { sni: Option<Vec<u8>> },
}

const HS_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
/// Largest handshake message we are willing to gather across records (a ClientHello with a
/// post-quantum key share is about 1.8 KB; the Inspector's reassembly bound is 4 KiB anyway).
const MAX_HANDSHAKE: usize = 16 * 1024;

/// A cursor over a byte slice whose reads fail (None) instead of panicking.
struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&x, rest) = self.b.split_first()?;
        self.b = rest;
        Some(x)
    }
    fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Some(a)
    }
    /// A vector with a 1- or 2-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

pub use super::sniff::describe as describe_non_tls;

/// Parses the start of a client's TCP stream as TLS records holding a ClientHello.
/// `NeedMore` while the bytes so far are a valid prefix of one; `Invalid(reason)` as soon as
/// they cannot be (reason completes "not TLS: ..." or "malformed ClientHello: ...").
pub fn parse_client_hello(data: &[u8]) -> Parse<Hello> {
    // Record header: type 22, legacy version 3.x, length (<= 2^14 + 2048).
    let Some(&ct) = data.first() else { return Parse::NeedMore };
    if ct != REC_HANDSHAKE {
        return Parse::Invalid(format!("not TLS: {}", describe_non_tls(data)));
    }
    if let Some(&major) = data.get(1) {
        if major != 3 {
            return Parse::Invalid(format!("not TLS: {}", describe_non_tls(data)));
        }
    }
    if data.len() < 5 {
        return Parse::NeedMore;
    }
    let rec_len = u16::from_be_bytes([data[3], data[4]]) as usize;
    if rec_len == 0 || rec_len > (1 << 14) + 2048 {
        return Parse::Invalid(format!("malformed ClientHello: record length {rec_len}"));
    }
    let body = &data[5..];
    // Handshake header: type 1, 24-bit length.
    if let Some(&ht) = body.first() {
        if ht != HS_CLIENT_HELLO {
            return Parse::Invalid(format!("not TLS: handshake message {ht} is not a ClientHello"));
        }
    }
    if body.len() >= rec_len && rec_len >= 4 {
        let hs_len = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
        if 4 + hs_len <= rec_len {
            // The common case: the whole ClientHello in the first record, parsed in place.
            return parse_hello_body(&body[4..4 + hs_len]);
        }
    }
    // The handshake message spans records (or the first record is incomplete): gather the
    // handshake bytes of every record so far, a partial last one included.
    let mut hs = Vec::new();
    let mut rest = data;
    loop {
        if hs.len() >= 4 {
            let hs_len = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
            if hs_len > MAX_HANDSHAKE {
                return Parse::Invalid(format!("malformed ClientHello: {hs_len} bytes long"));
            }
            if hs.len() >= 4 + hs_len {
                return parse_hello_body(&hs[4..4 + hs_len]);
            }
        }
        if rest.is_empty() {
            return judge_prefix(&hs);
        }
        if rest[0] != REC_HANDSHAKE {
            return Parse::Invalid(format!("malformed ClientHello: record type {} inside it", rest[0]));
        }
        if rest.len() < 5 {
            return judge_prefix(&hs);
        }
        let n = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if n == 0 || n > (1 << 14) + 2048 {
            return Parse::Invalid(format!("malformed ClientHello: record length {n}"));
        }
        let Some(frag) = rest.get(5..5 + n) else {
            hs.extend_from_slice(&rest[5..]);
            return judge_prefix(&hs);
        };
        hs.extend_from_slice(frag);
        rest = &rest[5 + n..];
    }
}

/// The handshake bytes so far of an incomplete ClientHello: decided when the SNI is already
/// in them (records cut small, a long first record), however much of the message is missing.
/// One walk per call, so the work per packet stays linear in the bytes held.
fn judge_prefix(hs: &[u8]) -> Parse<Hello> {
    if hs.len() < 4 {
        return Parse::NeedMore;
    }
    let hs_len = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
    if hs_len > MAX_HANDSHAKE {
        return Parse::Invalid(format!("malformed ClientHello: {hs_len} bytes long"));
    }
    parse_hello_prefix(&hs[4..], hs_len).unwrap_or(Parse::NeedMore)
}

/// A prefix of a ClientHello body that is `full_len` long: if the SNI extension is complete in
/// the prefix, the answer does not depend on the rest.
fn parse_hello_prefix(prefix: &[u8], full_len: usize) -> Option<Parse<Hello>> {
    if prefix.len() >= full_len {
        return Some(parse_hello_body(&prefix[..full_len]));
    }
    match walk_hello(prefix) {
        Walk::Sni(s) => Some(Parse::Done(Hello::ClientHello { sni: Some(s.to_vec()) })),
        Walk::Bad(r) => Some(Parse::Invalid(r)),
        Walk::NoSni | Walk::Short => None,
    }
}

enum Walk<'a> {
    Sni(&'a [u8]),
    NoSni,
    /// Ran out of bytes.
    Short,
    Bad(String),
}

fn parse_hello_body(b: &[u8]) -> Parse<Hello> {
    match walk_hello(b) {
        Walk::Sni(s) => Parse::Done(Hello::ClientHello { sni: Some(s.to_vec()) }),
        Walk::NoSni => Parse::Done(Hello::ClientHello { sni: None }),
        Walk::Short => Parse::Invalid("malformed ClientHello: truncated".into()),
        Walk::Bad(r) => Parse::Invalid(r),
    }
}

/// Walks a ClientHello body (after the 4-byte handshake header).
fn walk_hello(b: &[u8]) -> Walk<'_> {
    let mut r = Rd { b };
    let Some(major) = r.u8() else { return Walk::Short };
    if major != 3 {
        return Walk::Bad(format!("malformed ClientHello: version {major}.x"));
    }
    // minor version, random (32), session id, cipher suites, compression methods.
    if r.take(1 + 32).is_none() {
        return Walk::Short;
    }
    let Some(_sid) = r.vec8() else { return Walk::Short };
    let Some(_suites) = r.vec16() else { return Walk::Short };
    let Some(_comp) = r.vec8() else { return Walk::Short };
    if r.b.is_empty() {
        return Walk::NoSni; // SSL 3.0-style hello without extensions
    }
    let Some(ext_len) = r.u16() else { return Walk::Short };
    let mut exts = Rd { b: &r.b[..r.b.len().min(ext_len as usize)] };
    let complete = r.b.len() >= ext_len as usize;
    loop {
        if exts.b.is_empty() {
            return if complete { Walk::NoSni } else { Walk::Short };
        }
        let Some(ty) = exts.u16() else { return Walk::Short };
        let Some(data) = exts.vec16() else { return Walk::Short };
        if ty != EXT_SERVER_NAME {
            continue;
        }
        // ServerNameList: u16 length, then entries of (type u8, u16-prefixed name).
        let mut sl = Rd { b: data };
        let Some(list) = sl.vec16() else { return Walk::Bad("malformed ClientHello: server_name".into()) };
        let mut list = Rd { b: list };
        while !list.b.is_empty() {
            let (Some(nt), Some(name)) = (list.u8(), list.vec16()) else {
                return Walk::Bad("malformed ClientHello: server_name entry".into());
            };
            if nt == 0 {
                if name.is_empty() {
                    return Walk::Bad("malformed ClientHello: empty server name".into());
                }
                return Walk::Sni(name);
            }
        }
        return Walk::NoSni;
    }
}

/// The SNI of a complete ClientHello record stream, or None (fuzz / bench entry point).
pub fn sni(data: &[u8]) -> Option<Vec<u8>> {
    match parse_client_hello(data) {
        Parse::Done(Hello::ClientHello { sni }) => sni,
        _ => None,
    }
}
