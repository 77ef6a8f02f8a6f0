//! DNS messages (RFC 1035): header, question names and A/AAAA answers, by a small
//! bounds-checked parser of our own (pnet's DNS parser panics on malformed input).
//! Compression pointers must point strictly backwards, which rules out loops; a name is at
//! most 255 bytes on the wire, and at most `MAX_JUMPS` pointers are followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Parse;

const MAX_JUMPS: usize = 32;
const MAX_NAME: usize = 255;
/// Addresses collected from one answer.
const MAX_ADDRS: usize = 64;

/// A parsed DNS message: its first question and the A/AAAA addresses in its answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    pub qdcount: u16,
    /// The first question's name, lowercase, without the trailing dot ("." for the root).
    /// Bytes other than letters, digits, `-` and `_` appear as `\DDD` (so `a.b` inside one
    /// label stays distinguishable from two labels).
    pub qname: String,
    pub qtype: u16,
    /// A and AAAA records of the answer section (responses only), in order.
    pub addrs: Vec<IpAddr>,
}

fn bad<T>(why: impl Into<String>) -> Parse<T> {
    Parse::Invalid(format!("not DNS: {}", why.into()))
}

fn u16_at(m: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]))
}

/// Reads the name at `pos` in message `m`; returns it and the position after it.
/// `Err(None)`: ran out of bytes; `Err(Some(reason))`: malformed.
fn read_name(m: &[u8], pos: usize) -> Result<(String, usize), Option<String>> {
    let mut out = String::new();
    let mut p = pos;
    let mut after: Option<usize> = None;
    let mut jumps = 0;
    let mut wire = 0usize;
    // Pointers must go strictly before the start of the label sequence they come from.
    let mut floor = pos;
    loop {
        let len = *m.get(p).ok_or(None)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    let next = after.unwrap_or(p + 1);
                    if out.is_empty() {
                        out.push('.');
                    }
                    return Ok((out, next));
                }
                wire += len + 1;
                if wire > MAX_NAME {
                    return Err(Some("name longer than 255 bytes".into()));
                }
                let label = m.get(p + 1..p + 1 + len).ok_or(None)?;
                if !out.is_empty() {
                    out.push('.');
                }
                for &c in label {
                    if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
                        out.push(c.to_ascii_lowercase() as char);
                    } else {
                        out.push_str(&format!("\\{c:03}"));
                    }
                }
                p += 1 + len;
            }
            0xc0 => {
                let b2 = *m.get(p + 1).ok_or(None)? as usize;
                let target = ((len & 0x3f) << 8) | b2;
                if after.is_none() {
                    after = Some(p + 2);
                }
                jumps += 1;
                if target >= floor || jumps > MAX_JUMPS {
                    return Err(Some("compression pointer loop".into()));
                }
                floor = target;
                p = target;
            }
            _ => return Err(Some(format!("label type {:#x}", len & 0xc0))),
        }
    }
}

/// Parses one DNS message (UDP payload, or a TCP message without its length prefix).
/// `NeedMore` when it ends early (a datagram cut at the snap length, a TCP message not all in).
pub fn parse_message(m: &[u8]) -> Parse<Message> {
    if m.len() < 12 {
        return Parse::NeedMore;
    }
    let id = u16::from_be_bytes([m[0], m[1]]);
    let flags = u16::from_be_bytes([m[2], m[3]]);
    let response = flags & 0x8000 != 0;
    let opcode = ((flags >> 11) & 0xf) as u8;
    let qdcount = u16::from_be_bytes([m[4], m[5]]);
    let ancount = u16::from_be_bytes([m[6], m[7]]);
    if qdcount == 0 {
        return bad("no question");
    }
    let mut p = 12;
    let mut qname = String::new();
    let mut qtype = 0;
    for i in 0..qdcount {
        let (name, next) = match read_name(m, p) {
            Ok(x) => x,
            Err(None) => return Parse::NeedMore,
            Err(Some(why)) => return bad(why),
        };
        let Some(t) = u16_at(m, next) else { return Parse::NeedMore };
        if next + 4 > m.len() {
            return Parse::NeedMore;
        }
        if i == 0 {
            qname = name;
            qtype = t;
        }
        p = next + 4;
    }
    let mut addrs = Vec::new();
    if response {
        for _ in 0..ancount {
            let next = match read_name(m, p) {
                Ok((_, next)) => next,
                Err(None) => return Parse::NeedMore,
                Err(Some(why)) => return bad(why),
            };
            let (Some(ty), Some(class), Some(rdlen)) =
                (u16_at(m, next), u16_at(m, next + 2), u16_at(m, next + 8))
            else {
                return Parse::NeedMore;
            };
            let start = next + 10;
            let Some(rdata) = m.get(start..start + rdlen as usize) else { return Parse::NeedMore };
            p = start + rdlen as usize;
            if class != 1 || addrs.len() >= MAX_ADDRS {
                continue;
            }
            match (ty, rdata.len()) {
                (1, 4) => addrs.push(IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))),
                (28, 16) => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(rdata);
                    addrs.push(IpAddr::V6(Ipv6Addr::from(a)));
                }
                (1 | 28, n) => return bad(format!("address record of {n} bytes")),
                _ => {}
            }
        }
    }
    Parse::Done(Message { id, response, opcode, qdcount, qname, qtype, addrs })
}

/// A DNS-over-TCP stream start: 2-byte length, then the message.
pub fn parse_tcp(stream: &[u8]) -> Parse<Message> {
    let Some(len) = u16_at(stream, 0) else { return Parse::NeedMore };
    if len < 12 {
        return bad(format!("TCP message of {len} bytes"));
    }
    match stream.get(2..2 + len as usize) {
        Some(msg) => match parse_message(msg) {
            // The whole message is there: ending early means it is malformed.
            Parse::NeedMore => bad("truncated message"),
            other => other,
        },
        None => match parse_message(&stream[2..]) {
            // Enough for the question already?  Only a query's question matters before the rest.
            Parse::Done(msg) if !msg.response => Parse::Done(msg),
            Parse::Invalid(r) => Parse::Invalid(r),
            _ => Parse::NeedMore,
        },
    }
}

/// Checks a message is a standard query with exactly one question (what resolvers send;
/// servers answer several questions in one query with FORMERR anyway).
pub fn check_query(msg: &Message) -> Result<(), String> {
    if msg.response {
        return Err("not DNS: a response where a query was expected".into());
    }
    if msg.opcode != 0 {
        return Err(format!("not DNS: opcode {} is not a standard query", msg.opcode));
    }
    if msg.qdcount != 1 {
        return Err(format!("not DNS: {} questions in one query", msg.qdcount));
    }
    Ok(())
}
