//! The real `nft` client accepts every script `plan` prints (`nft -c -f -`: parsed and checked
//! by the kernel, nothing applied). Runs whenever nft is installed; required under CI=true.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use fw_daemon::compile::CompileOptions;
use fw_daemon::tools::plan::plan;

fn nft_available() -> bool {
    Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn nft_check(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child.stdin.take().expect("piped").write_all(script.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn nft_accepts_every_demo_plan() {
    if !common::require(nft_available(), "the nft client (vagrant/provision.sh installs it)") {
        return;
    }
    let p = common::demo_policy();
    let inv = common::demo_inventory();
    for cp in plan(&p, &inv, None, &CompileOptions::default()).map_err(|f| f.lines()).unwrap() {
        // With its comment header too: that is what `plan | nft -c -f -` sends.
        if let Err(e) = nft_check(&cp.text) {
            panic!("nft rejected the plan for {}:\n{e}\n{}", cp.container, cp.script);
        }
    }
    let floor = fw_daemon::tools::plan::plan_floor(&p, &inv, None, &CompileOptions::default());
    if let Err(e) = nft_check(&floor.text) {
        panic!("nft rejected the floor:\n{e}\n{}", floor.script);
    }
}

#[test]
fn nft_rejects_a_broken_script() {
    // Guards the test above: a check that cannot fail proves nothing.
    if !common::require(nft_available(), "the nft client") {
        return;
    }
    let err =
        nft_check("table inet fw {\n\tchain c {\n\t\tip daddr @nosuchset accept\n\t}\n}\n").unwrap_err();
    assert!(err.contains("nosuchset") || err.contains("Error"), "{err}");
}
