//! A client's first bytes as the HTTP/1.x request parser sees them: a Host, "need more", or a
//! reason, never a panic.
#![no_main]
use fw_daemon::inspect::{http, names, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Parse::Done(r) = http::parse_request(data) {
        if let Some(h) = r.host {
            let _ = names::normalize(&h);
        }
    }
});
