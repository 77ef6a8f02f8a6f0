//! `explain` on the demo: the cells an engineer would ask about, and the CLI output.

mod common;

use fw_daemon::compile::CompileOptions;
use fw_daemon::ruleset::eval::Proto;
use fw_daemon::tools::explain::{explain, render_text};
use fw_proto::Verdict;

/// (from, to, proto, port, expected verdict, deciding rule id)
type Cell = (&'static str, &'static str, Proto, Option<u16>, Verdict, &'static str);

#[test]
fn demo_cells() {
    let p = common::demo_policy();
    let inv = common::demo_inventory();
    let opts = CompileOptions::default();
    let cases: &[Cell] = &[
        ("web-1", "api-2", Proto::Tcp, Some(8080), Verdict::Allow, "web-to-api"),
        ("web-1", "api-2", Proto::Tcp, Some(9005), Verdict::Allow, "web-to-api"),
        ("web-1", "api-2", Proto::Tcp, Some(22), Verdict::Deny, "default"),
        ("web-1", "db-1", Proto::Tcp, Some(5432), Verdict::Deny, "no-web-to-db"),
        ("api-1", "db-1", Proto::Tcp, Some(5432), Verdict::Allow, "api-to-db"),
        ("api-1", "db-1", Proto::Udp, Some(5432), Verdict::Deny, "default"),
        ("batch-1", "db-1", Proto::Tcp, Some(5432), Verdict::Deny, "batch-to-db"),
        ("batch-1", "misc-1", Proto::Tcp, Some(80), Verdict::Deny, "default"),
        ("batch-1", "web-2", Proto::Tcp, Some(443), Verdict::Allow, "public-web"),
        ("misc-1", "dns-1", Proto::Udp, Some(53), Verdict::Allow, "dns"),
        ("db-1", "dns-1", Proto::Tcp, Some(53), Verdict::Allow, "dns"),
        ("api-2", "10.77.9.10", Proto::Tcp, Some(443), Verdict::Allow, "api-to-partners"),
        ("web-1", "10.77.9.10", Proto::Tcp, Some(443), Verdict::Deny, "default"),
        ("10.77.9.10", "api-1", Proto::Tcp, Some(8443), Verdict::Allow, "partner-callbacks"),
        ("10.77.9.10", "db-1", Proto::Tcp, Some(5432), Verdict::Deny, "default"),
        ("web-2", "db-1", Proto::Icmp, None, Verdict::Deny, "no-web-to-db"),
        ("api-1", "db-1", Proto::Icmp, None, Verdict::Allow, "ping-internal"),
    ];
    for (from, to, proto, port, want, rule) in cases {
        let e = explain(&p, &inv, from, to, *proto, *port, &opts).map_err(|f| f.lines()).unwrap();
        let got = e.rule.as_ref().map(|r| r.id.as_str()).unwrap_or("");
        assert_eq!(
            (e.verdict, got),
            (*want, *rule),
            "{from} -> {to} {proto:?}/{port:?}\n{}",
            render_text(&e)
        );
    }
    // batch is in audit mode: its egress only reports, db-1's ingress enforces.
    let e = explain(&p, &inv, "batch-1", "db-1", Proto::Tcp, Some(5432), &opts).unwrap();
    assert_eq!(e.egress.unwrap().verdict, Verdict::AuditDeny);
    assert_eq!(e.ingress.unwrap().verdict, Verdict::Deny);
}

#[test]
fn cli_prints_verdict_and_rule_source() {
    let root = common::repo();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fw-daemon"))
        .current_dir(&root)
        .args(["explain", "rules/demo", "--inventory", "rules/demo-inventory.toml"])
        .args(["--from", "web-1", "--to", "db-1", "--proto", "tcp", "--port", "5432"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict: deny\n"), "{text}");
    assert!(text.contains("rule: policy no-web-to-db (rules/demo/20-policies.toml:21)\n"), "{text}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fw-daemon"))
        .current_dir(&root)
        .args(["explain", "rules/demo", "--inventory", "rules/demo-inventory.toml"])
        .args(["--from", "web-1", "--to", "api-1", "--proto", "tcp", "--port", "7", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["rule"]["kind"], "default");
    assert_eq!(v["rule"]["source"], "rules/demo/00-defaults.toml:2");
}

#[test]
fn cli_errors_are_clear() {
    let root = common::repo();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fw-daemon"))
            .current_dir(&root)
            .args(["explain", "rules/demo", "--inventory", "rules/demo-inventory.toml"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--from", "web-1", "--to", "db-1", "--proto", "tcp"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "--port is needed for tcp and udp\n");
    let out = run(&["--from", "192.0.2.1", "--to", "192.0.2.2", "--proto", "icmp"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "neither end is a container: fw enforces inside containers only\n"
    );
}
