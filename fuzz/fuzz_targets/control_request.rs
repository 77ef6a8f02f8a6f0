//! The control socket's request decoder over arbitrary bytes: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fw_daemon::control::server::decode(data);
});
