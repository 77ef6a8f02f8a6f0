//! A client's first bytes as the TLS ClientHello parser sees them (whole or a prefix): an SNI,
//! "need more", or a reason, never a panic; a prefix and the whole never name different servers.
#![no_main]
use fw_daemon::inspect::{tls, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = tls::parse_client_hello(data);
    if let Parse::Done(tls::Hello::ClientHello { sni: Some(s) }) = &whole {
        let _ = fw_daemon::inspect::names::normalize(s);
    }
    let _ = tls::describe_non_tls(data);
    // A prefix that already names a server names the same one as the whole.
    let cut = usize::from(data.first().copied().unwrap_or(0)) * data.len() / 256;
    if let (Parse::Done(p), Parse::Done(w)) = (tls::parse_client_hello(&data[..cut]), &whole) {
        let (tls::Hello::ClientHello { sni: ps }, tls::Hello::ClientHello { sni: ws }) = (p, w);
        if ps.is_some() && ws.is_some() {
            assert_eq!(&ps, ws, "prefix and whole disagree");
        }
    }
});
