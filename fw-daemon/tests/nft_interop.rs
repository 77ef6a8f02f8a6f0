//! The real `nft` client accepts every script `plan` prints (`nft -c -f -`: parsed and checked
//! by the kernel, nothing applied). Runs whenever nft is installed; required under CI=true.
//!
//! One exception: the inspection queue. The daemon programs it as the xtables NFQUEUE target
//! (nft's compat layer), which `nft list` prints natively as `queue num N [bypass]`, and
//! `plan` prints what `nft list` reads back (tests/enforce.rs). This kernel has no native
//! `queue` expression, so nft refuses exactly those rules: the check requires that every
//! error points at a `queue` statement, and that the script passes with them as `accept`.

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
#[ignore = "needs root"]
fn nft_accepts_every_demo_plan() {
    if !common::require(nft_available(), "the nft client (vagrant/provision.sh installs it)") {
        return;
    }
    nft_accepts_every_plan(&common::demo_policy(), &common::demo_inventory());
}

/// The feature tour: zone lists, services, a zone of containers and networks, ICMP types.
#[test]
#[ignore = "needs root"]
fn nft_accepts_every_features_plan() {
    if !common::require(nft_available(), "the nft client (vagrant/provision.sh installs it)") {
        return;
    }
    nft_accepts_every_plan(&common::features_policy(), &common::demo_inventory());
}

fn nft_accepts_every_plan(p: &fw_daemon::rules::Policy, inv: &fw_daemon::inventory::Inventory) {
    for cp in plan(p, inv, None, &CompileOptions::default()).map_err(|f| f.lines()).unwrap() {
        // With its comment header too: that is what `plan | nft -c -f -` sends.
        if let Err(e) = nft_check(&cp.text) {
            let lines: Vec<&str> = cp.text.lines().collect();
            for err in e.lines().filter(|l| l.contains("Error:")) {
                let line: usize = err.split(':').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                let at = lines.get(line.wrapping_sub(1)).copied().unwrap_or("");
                assert!(
                    at.contains(" queue num ") && err.contains("No such file or directory"),
                    "nft rejected the plan for {} at line {line} ({at}):\n{e}",
                    cp.container
                );
            }
            let native: String = lines.iter().map(|l| format!("{}\n", without_queue(l))).collect();
            if let Err(e) = nft_check(&native) {
                panic!("nft rejected the plan for {}:\n{e}\n{}", cp.container, cp.script);
            }
        }
    }
    let floor = fw_daemon::tools::plan::plan_floor(p, inv, None, &CompileOptions::default());
    if let Err(e) = nft_check(&floor.text) {
        panic!("nft rejected the floor:\n{e}\n{}", floor.script);
    }
}

/// `... meta mark set ct mark queue num N [bypass] comment ...` with the queue as `accept`.
fn without_queue(line: &str) -> String {
    let Some(i) = line.find(" meta mark set ct mark queue num ") else { return line.to_string() };
    let rest = &line[i + " meta mark set ct mark queue num ".len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix(" bypass").unwrap_or(rest);
    format!("{} accept{rest}", &line[..i])
}

#[test]
fn the_queue_exception_is_exactly_the_queue() {
    assert_eq!(
        without_queue("meta l4proto { tcp, udp } meta mark set ct mark queue num 102 bypass comment \"x\""),
        "meta l4proto { tcp, udp } accept comment \"x\""
    );
    assert_eq!(without_queue("tcp dport 443 accept"), "tcp dport 443 accept");
}

#[test]
#[ignore = "needs root"]
fn nft_rejects_a_broken_script() {
    // Guards the test above: a check that cannot fail proves nothing.
    if !common::require(nft_available(), "the nft client") {
        return;
    }
    let err =
        nft_check("table inet fw {\n\tchain c {\n\t\tip daddr @nosuchset accept\n\t}\n}\n").unwrap_err();
    assert!(err.contains("nosuchset") || err.contains("Error"), "{err}");
}
