//! An audit trail as an attacker with write access to the log directory could leave it:
//! any bytes, split into files and lines, never panic the verifier, and a trail it accepts
//! is one whose every chained record links to the one before.
#![no_main]
use fw_proto::audit_chain::{link, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut vf = Verifier::default();
    let mut ok = true;
    // Files separated by \0, lines by \n, as `fw-tui audit verify` feeds them.
    'files: for (f, file) in text.split('\0').enumerate() {
        for (n, line) in file.split('\n').enumerate() {
            if vf.line(&format!("audit.jsonl.{f}"), n + 1, line).is_err() {
                ok = false;
                break 'files;
            }
        }
    }
    if ok {
        if let Ok(v) = vf.finish(None) {
            assert!(v.records == 0 || v.head.is_some());
            if let Some((_, h)) = &v.head {
                assert_eq!(h.len(), link("").len());
            }
        }
    }
});
