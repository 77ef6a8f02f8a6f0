//! What the first bytes of a stream are, in words: shared by the TLS and HTTP parsers (to
//! say why a stream is not theirs) and by the inspector's protocol autodetection, so
//! neither parser needs the other.

/// The TLS record type of a handshake.
pub const REC_HANDSHAKE: u8 = 22;
/// Longest method token we accept (standard methods are at most 7 letters; WebDAV's longest is
/// 16).
pub const MAX_METHOD: usize = 20;

pub fn is_method_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c == b'-' || c == b'_'
}

/// Whether `data` could be the start of an HTTP request (a method token then a space), for
/// reasons and for protocol autodetection.
pub fn looks_like_http_request(data: &[u8]) -> bool {
    let n = data.iter().take(MAX_METHOD + 1).take_while(|&&c| is_method_char(c)).count();
    n > 0 && n <= MAX_METHOD && data.get(n) == Some(&b' ')
}

/// Says what a stream that should start with a ClientHello starts with instead, for reasons
/// like "not TLS: SSH-2.0 banner". Also used on a server's first bytes.
pub fn describe(data: &[u8]) -> String {
    if data.starts_with(b"SSH-") {
        // "SSH-2.0-OpenSSH_9.2": report the protocol version part.
        let rest = &data[4..data.len().min(12)];
        let ver = rest.split(|&c| c == b'-' || c == b'\r' || c == b'\n').next().unwrap_or(b"");
        let ver: String = ver.iter().map(|&c| if c.is_ascii_graphic() { c as char } else { '?' }).collect();
        return format!("SSH-{ver} banner");
    }
    if looks_like_http_request(data) {
        return "HTTP request".into();
    }
    match data.first() {
        Some(&REC_HANDSHAKE) => "TLS handshake that is not a ClientHello".into(),
        Some(20..=24) => format!("TLS record of type {}", data[0]),
        Some(_) => {
            let n = data.len().min(4);
            let hex: Vec<String> = data[..n].iter().map(|b| format!("{b:02x}")).collect();
            format!("first bytes {}", hex.join(" "))
        }
        None => "no data".into(),
    }
}
