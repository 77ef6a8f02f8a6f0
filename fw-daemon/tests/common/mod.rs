//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod daemon;
pub mod lab;

use std::path::{Path, PathBuf};

use fw_daemon::inventory::{parse_inventory, Inventory};
use fw_daemon::rules::{load_sources, LoadResult, Policy, SourceFile};

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
