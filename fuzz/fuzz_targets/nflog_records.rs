//! NFLOG receive buffers are hostile input: parsing must skip anything malformed, never panic.
#![no_main]

use fw_daemon::flows::nflog::{parse_records, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for r in parse_records(data) {
        assert_eq!(r.tag, Tag::parse(&r.prefix), "record tag disagrees with its prefix");
        let _ = format!("{r:?}");
    }
    if let Some(t) = Tag::parse(&String::from_utf8_lossy(data)) {
        assert!(!t.kind.contains(':'), "tag kind contains the separator: {t:?}");
    }
});
