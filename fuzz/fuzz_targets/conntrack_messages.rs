//! ctnetlink messages (events and dump replies) as the kernel sends them: parsed or
//! skipped, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fw_daemon::flows::conntrack::parse_messages(data);
});
