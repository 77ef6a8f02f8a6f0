//! A pod's downward-API labels file as `fw-daemon run --self` reads it: labels, or an error
//! naming the line, never a panic; and what it accepts survives the one-entry inventory it
//! writes (TOML quoting of any text), read back by the inventory parser.
#![no_main]
use fw_daemon::discovery::own;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(labels) = own::parse_labels(text) else { return };
    let id = own::OwnIdentity { name: "pod".into(), namespace: Some("ns".into()), labels: labels.clone() };
    let toml = own::inventory_toml(&id, &[]);
    let inv = fw_daemon::inventory::parse_inventory(std::path::Path::new("self.toml"), &toml)
        .unwrap_or_else(|e| panic!("the written inventory does not read back: {e:?}\n{toml}"));
    assert_eq!(inv.containers[0].labels, labels, "{toml}");
});
