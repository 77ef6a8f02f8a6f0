//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod accounts;
pub mod attack;
pub mod client;
pub mod cri;
pub mod daemon;
pub mod helper;
pub mod icmp;
pub mod kube_api;
pub mod lab;
pub mod tls_attack;

use std::path::{Path, PathBuf};

use fw_daemon::inventory::{parse_inventory, Inventory};
use fw_daemon::rules::{load_sources, LoadResult, Policy, SourceFile};

/// A fresh work directory for one test (`$TMP/fw-KIND-TAG-PID`).
pub fn work_dir(kind: &str, tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fw-{kind}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("work dir");
    d
}

/// A lab of web-1, api-1 and db-1 from the demo inventory, and a work dir holding their
/// inventory and a copy of the demo rules (for `Daemon::run_in_dir`).
pub fn demo_lab(kind: &str, tag: &str) -> (lab::Lab, PathBuf) {
    let mut lab = lab::Lab::new();
    let base = demo_inventory();
    for n in ["web-1", "api-1", "db-1"] {
        let c = base.get(n).expect("in the demo inventory");
        lab.add(n, &c.addresses);
    }
    let d = work_dir(kind, tag);
    std::fs::write(d.join("inventory.toml"), lab.inventory_toml(&base)).expect("inventory");
    std::fs::create_dir_all(d.join("rules")).expect("rules dir");
    for f in std::fs::read_dir(repo().join("rules/demo")).expect("rules/demo").flatten() {
        std::fs::copy(f.path(), d.join("rules").join(f.file_name())).expect("copy a rule file");
    }
    (lab, d)
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Loads in-memory rule files named `name.toml` at time `now`.
pub fn load(files: &[(&str, &str)]) -> LoadResult {
    let files: Vec<SourceFile> =
        files.iter().map(|(n, t)| SourceFile { path: PathBuf::from(n), text: t.to_string() }).collect();
    load_sources(&files, 0)
}

/// The diagnostics as printed by `check`.
pub fn diags(files: &[(&str, &str)]) -> Vec<String> {
    load(files).diagnostics.iter().map(|d| d.to_string()).collect()
}

pub fn policy(files: &[(&str, &str)]) -> Policy {
    let r = load(files);
    match r.policy {
        Some(p) => p,
        None => panic!(
            "policy did not load: {:#?}",
            r.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>()
        ),
    }
}

pub fn inventory(text: &str) -> Inventory {
    parse_inventory(Path::new("inv.toml"), text).expect("inventory parses")
}

pub fn demo_policy() -> Policy {
    let r = fw_daemon::rules::load_dir(&repo().join("rules/demo"), 0);
    r.policy.expect("demo rules load")
}

/// The feature tour: zone lists, services, a mixed zone, ICMP types (rules/features).
pub fn features_policy() -> Policy {
    let r = fw_daemon::rules::load_dir(&repo().join("rules/features"), 0);
    match r.policy {
        Some(p) => p,
        None => panic!(
            "rules/features does not load: {:#?}",
            r.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>()
        ),
    }
}

pub fn demo_inventory() -> Inventory {
    fw_daemon::inventory::load_inventory(&repo().join("rules/demo-inventory.toml")).expect("demo inventory")
}

/// Privileged or tool-dependent tests run when possible, must run under CI=true, and
/// otherwise skip with a printed reason.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is required under CI=true");
    }
    eprintln!("skipping: {what} is not available");
    false
}
