//! Writes a synthetic workload for the command-line tools: `DIR/rules/*.toml` and
//! `DIR/inventory.toml` (see the `fw_bench` crate documentation for its shape).
//!
//! Run: cargo run --release -p fw-bench --bin gen_synthetic -- DIR [CONTAINERS [POLICIES]]
//! (defaults: 1000 containers, 50 policies), then e.g.
//! `fw-daemon plan DIR/rules --inventory DIR/inventory.toml`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gen_synthetic DIR [CONTAINERS [POLICIES]]";
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let num =
        |i: usize, default: usize| -> Option<usize> { args.get(i).map_or(Some(default), |s| s.parse().ok()) };
    let (Some(containers), Some(policies)) = (num(1, 1000), num(2, 50)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    if args.len() > 3 {
        eprintln!("{usage}");
        return ExitCode::from(2);
    }
    let s = fw_bench::synthetic(containers, policies);
    if let Err(e) = s.write_to(&dir) {
        eprintln!("gen_synthetic: cannot write {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    println!(
        "{}: {} rule files ({} bytes), {containers} containers, {policies} policies",
        dir.display(),
        s.files.len(),
        s.rule_bytes()
    );
    ExitCode::SUCCESS
}
