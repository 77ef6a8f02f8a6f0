//! The rules loader over up to three files (split on `\n#--file--\n`): it must not panic, must
//! produce a policy exactly when there is no error, must place every diagnostic inside its file,
//! and every policy it accepts must compile and render for a small fixed inventory.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fw_daemon::compile::{compile_all, CompileOptions};
use fw_daemon::inventory::{parse_inventory, Inventory};
use fw_daemon::rules::load::SourceFile;
use fw_daemon::rules::validate::load_sources;
use fw_daemon::ruleset::render::render;
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"\n#--file--\n";
const MAX_FILES: usize = 3;
const NOW: i64 = 1_700_000_000;

const INVENTORY: &str = r#"
[[container]]
name = "web-1"
image = "nginx:1.25"
labels = { tier = "web" }
addresses = ["10.77.0.11", "fd77::11"]

[[container]]
name = "db-1"
image = "postgres:16"
labels = { tier = "data" }
addresses = ["10.77.0.31", "fd77::31"]

[[container]]
name = "misc-1"
image = "busybox:1.36"
addresses = ["10.77.0.61"]
"#;

fn inventory() -> &'static Inventory {
    static INV: OnceLock<Inventory> = OnceLock::new();
    INV.get_or_init(|| parse_inventory(Path::new("inventory.toml"), INVENTORY).expect("fixed inventory parses"))
}

/// Splits on SEPARATOR into at most MAX_FILES pieces; the last piece keeps any further separators.
fn split_files(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while parts.len() + 1 < MAX_FILES {
        match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                parts.push(&data[..i]);
                data = &data[i + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(data);
    parts
}

fuzz_target!(|data: &[u8]| {
    let files: Vec<SourceFile> = split_files(data)
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| SourceFile {
            path: PathBuf::from(format!("rules/{i:02}.toml")),
            text: String::from_utf8_lossy(bytes).into_owned(),
        })
        .collect();

    let result = load_sources(&files, NOW);

    let has_error = result.errors().next().is_some();
    assert_eq!(
        result.policy.is_some(),
        !has_error,
        "policy present = {} but errors present = {has_error}: {:#?}",
        result.policy.is_some(),
        result.diagnostics
    );

    for d in &result.diagnostics {
        let shown = format!("{d}");
        let file = files
            .iter()
            .find(|f| f.path.as_path() == d.path.as_path())
            .unwrap_or_else(|| panic!("diagnostic names a file that was not loaded: {shown}"));
        assert!(d.line >= 1 && d.col >= 1, "diagnostic without a position: {shown}");
        let line_text = file.text.split('\n').nth(d.line as usize - 1);
        let line_text = line_text.unwrap_or_else(|| panic!("line {} is past the end of the file: {shown}", d.line));
        let cols = line_text.chars().count() as u32 + 1;
        assert!(d.col <= cols, "column {} is past the end of line {} ({cols} cols): {shown}", d.col, d.line);
    }

    if let Some(policy) = &result.policy {
        let opts = CompileOptions { now: NOW, ..CompileOptions::default() };
        let rulesets = compile_all(policy, inventory(), &opts);
        assert_eq!(rulesets.len(), inventory().containers.len());
        for rs in &rulesets {
            let text = render(rs);
            assert!(!text.is_empty(), "empty ruleset rendered for {}", rs.container);
        }
    }
});
