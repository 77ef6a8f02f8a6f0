//! Inventory parsing: arbitrary text must give an inventory or diagnostics, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match fw_daemon::inventory::parse_inventory(Path::new("inventory.toml"), &text) {
        Ok(inv) => {
            for c in &inv.containers {
                assert!(!c.name.is_empty(), "accepted a container with an empty name");
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "Err with no diagnostics");
            let lines = text.matches('\n').count() as u32 + 1;
            for d in &diags {
                let _ = format!("{d}");
                assert!(d.line >= 1 && d.col >= 1, "diagnostic without a position: {d}");
                assert!(d.line <= lines, "line {} past the end ({lines} lines): {d}", d.line);
            }
        }
    }
});
