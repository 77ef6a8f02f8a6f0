//! DNS messages (UDP payloads, and the same bytes as a TCP stream with its 2-byte length):
//! names through compression pointers and A/AAAA answers, never a panic or a hang.
#![no_main]
use fw_daemon::inspect::{dns, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Parse::Done(m) = dns::parse_message(data) {
        let _ = dns::check_query(&m);
    }
    let _ = dns::parse_tcp(data);
});
