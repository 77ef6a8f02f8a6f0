//! Tests that need a process of another user, or in another pid namespace, run this same
//! test binary again as that process: `command(test, mode)` re-executes exactly `test` with
//! `FW_TEST_HELPER=mode`, and the test function starts with `if let Some(m) = mode()` to
//! play its part. Helpers report with `report(...)` lines the caller picks out of stdout.

use std::ffi::OsString;

pub const MODE: &str = "FW_TEST_HELPER";
const MARK: &str = "HELPER-REPORT ";

/// The helper mode this process was started in, if any.
pub fn mode() -> Option<String> {
    std::env::var(MODE).ok()
}

/// The arguments that run only `test` of this binary, its output not captured.
pub fn self_args(test: &str) -> Vec<OsString> {
    let exe = std::env::current_exe().expect("the test binary");
    vec![
        exe.into(),
        test.into(),
        "--exact".into(),
        "--include-ignored".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

pub fn report(line: &str) {
    println!("{MARK}{line}");
}

/// The reported lines in a helper's output.
pub fn reports(out: &str) -> Vec<String> {
    out.lines().filter_map(|l| l.find(MARK).map(|i| l[i + MARK.len()..].to_string())).collect()
}
