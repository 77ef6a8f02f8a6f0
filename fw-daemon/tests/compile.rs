//! The compiler and the explain oracle, without privileges: selectors, ports, audit mode,
//! defaults, expiry, and the "rules follow policies, not peers" property.

mod common;
use common::{inventory, policy};

use fw_daemon::compile::{compile_all, CompileOptions};
use fw_daemon::inventory::Inventory;
use fw_daemon::rules::{Identity, Policy};
use fw_daemon::ruleset::eval::Proto;
use fw_daemon::tools::explain::explain;
use fw_proto::{RuleKind, Verdict};

const ZONES: &str = r#"
[zone.web]
match = { name = "web-*" }
[zone.api]
match = { labels = { tier = "api" }, image = "corp/api:*" }
[zone.db]
match = { image = "postgres:*" }
mode = "audit"
[zone.ext]
cidrs = ["192.0.2.0/24"]
"#;

const INV: &str = r#"
[[container]]
name = "web-1"
addresses = ["10.0.0.1", "fd00::1"]
[[container]]
name = "api-1"
image = "corp/api:1"
labels = { tier = "api" }
addresses = ["10.0.0.2"]
[[container]]
name = "api-fake"
image = "other/api:1"
labels = { tier = "api" }
addresses = ["10.0.0.3"]
[[container]]
name = "db-1"
image = "postgres:16"
addresses = ["10.0.0.4"]
"#;

fn verdict(
    p: &Policy,
    inv: &Inventory,
    from: &str,
    to: &str,
    proto: Proto,
    port: Option<u16>,
) -> (Verdict, String) {
    let opts = CompileOptions::default();
    let e = explain(p, inv, from, to, proto, port, &opts).map_err(|f| f.lines()).unwrap();
    (e.verdict, e.rule.map(|r| r.id).unwrap_or_else(|| "<chain policy>".into()))
}

#[test]
fn selectors_pick_the_first_matching_zone_else_default() {
    let p = policy(&[("z.toml", ZONES)]);
    let inv = inventory(INV);
    let zone = |name: &str| {
        let c = inv.get(name).unwrap();
        p.zone_of(&Identity { name: &c.name, image: &c.image, labels: &c.labels, kube: None }).name.clone()
    };
    assert_eq!(zone("web-1"), "web");
    assert_eq!(zone("api-1"), "api");
    // Every criterion must hold: the label matches but the image does not.
    assert_eq!(zone("api-fake"), "default");
    assert_eq!(zone("db-1"), "db");
}

#[test]
fn port_ranges_are_inclusive_and_merged() {
    let p = policy(&[
        ("z.toml", ZONES),
        (
            "p.toml",
            "[[policy]]\nfrom = \"web\"\nto = \"api\"\nproto = \"tcp\"\nports = [\"8000-8010\", 8011, 9000]\naction = \"allow\"\n",
        ),
    ]);
    assert_eq!(p.rules[0].traffic[0].ports.to_string(), "8000-8011,9000");
    let inv = inventory(INV);
    for (port, want) in [
        (7999, Verdict::Deny),
        (8000, Verdict::Allow),
        (8011, Verdict::Allow),
        (8012, Verdict::Deny),
        (9000, Verdict::Allow),
    ] {
        assert_eq!(verdict(&p, &inv, "web-1", "api-1", Proto::Tcp, Some(port)).0, want, "port {port}");
    }
    // Same port over UDP is not covered by a tcp policy.
    assert_eq!(verdict(&p, &inv, "web-1", "api-1", Proto::Udp, Some(8000)).0, Verdict::Deny);
}

#[test]
fn first_match_decides_in_file_order() {
    let p = policy(&[
        ("z.toml", ZONES),
        ("10-a.toml", "[[policy]]\nid = \"deny-8080\"\nfrom = \"web\"\nto = \"api\"\nproto = \"tcp\"\nports = 8080\naction = \"deny\"\n"),
        ("20-b.toml", "[[policy]]\nid = \"allow-tcp\"\nfrom = \"web\"\nto = \"api\"\nproto = \"tcp\"\naction = \"allow\"\n"),
    ]);
    let inv = inventory(INV);
    assert_eq!(
        verdict(&p, &inv, "web-1", "api-1", Proto::Tcp, Some(8080)),
        (Verdict::Deny, "deny-8080".into())
    );
    assert_eq!(
        verdict(&p, &inv, "web-1", "api-1", Proto::Tcp, Some(8081)),
        (Verdict::Allow, "allow-tcp".into())
    );
}

#[test]
fn audit_mode_logs_and_allows_what_it_would_drop() {
    let p = policy(&[
        ("z.toml", ZONES),
        ("p.toml", "[[policy]]\nid = \"db-out\"\nfrom = \"db\"\nto = \"ext\"\nproto = \"tcp\"\nports = 25\naction = \"deny\"\n"),
    ]);
    let inv = inventory(INV);
    let opts = CompileOptions::default();
    let e = explain(&p, &inv, "db-1", "192.0.2.9", Proto::Tcp, Some(25), &opts).unwrap();
    assert_eq!(e.verdict, Verdict::AuditDeny);
    assert_eq!(e.rule.as_ref().unwrap().id, "db-out");
    assert_eq!(e.egress.as_ref().unwrap().logged.as_deref(), Some("fw:audit:db-out"));
    // The default deny is audited too, with its own prefix.
    let e = explain(&p, &inv, "db-1", "192.0.2.9", Proto::Tcp, Some(26), &opts).unwrap();
    assert_eq!((e.verdict, e.rule.as_ref().unwrap().kind), (Verdict::AuditDeny, RuleKind::Default));
    assert_eq!(e.egress.as_ref().unwrap().logged.as_deref(), Some("fw:audit:default"));
    // An enforcing receiver still drops what an auditing sender lets out.
    let e = explain(&p, &inv, "db-1", "web-1", Proto::Tcp, Some(80), &opts).unwrap();
    assert_eq!(e.verdict, Verdict::Deny);
    assert_eq!(e.ingress.as_ref().unwrap().container, "web-1");
}

#[test]
fn defaults_decide_when_nothing_matches() {
    let inv = inventory(INV);
    let p = policy(&[("z.toml", ZONES), ("d.toml", "[defaults]\naction = \"allow\"\n")]);
    let (v, id) = verdict(&p, &inv, "web-1", "api-1", Proto::Tcp, Some(1));
    assert_eq!((v, id.as_str()), (Verdict::Allow, "default"));
    let p = policy(&[("z.toml", ZONES), ("d.toml", "[defaults]\naction = \"log\"\n")]);
    let opts = CompileOptions::default();
    let e = explain(&p, &inv, "web-1", "api-1", Proto::Tcp, Some(1), &opts).unwrap();
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(e.egress.unwrap().logged.as_deref(), Some("fw:log:default"));
    // Without a [defaults] table: deny, attributed to the built-in default.
    let p = policy(&[("z.toml", ZONES)]);
    let e = explain(&p, &inv, "web-1", "api-1", Proto::Tcp, Some(1), &opts).unwrap();
    assert_eq!(e.verdict, Verdict::Deny);
    let r = e.rule.unwrap();
    assert_eq!((r.kind, r.source), (RuleKind::Default, None));
}

#[test]
fn expired_rules_are_not_compiled() {
    let p = policy(&[
        ("z.toml", ZONES),
        ("p.toml", "[[policy]]\nfrom = \"web\"\nto = \"api\"\naction = \"allow\"\nexpires = 2030-01-01\n"),
    ]);
    let inv = inventory(INV);
    let before = CompileOptions { now: 1_893_455_999, ..CompileOptions::default() };
    let after = CompileOptions { now: 1_893_456_000, ..CompileOptions::default() };
    let v = |o: &CompileOptions| explain(&p, &inv, "web-1", "api-1", Proto::Tcp, Some(1), o).unwrap().verdict;
    assert_eq!(v(&before), Verdict::Allow);
    assert_eq!(v(&after), Verdict::Deny);
}

#[test]
fn icmp_and_ipv6_are_covered() {
    let p = policy(&[
        ("z.toml", ZONES),
        ("p.toml", "[[policy]]\nfrom = \"web\"\nto = \"any\"\nproto = \"icmp\"\naction = \"allow\"\n"),
    ]);
    let mut inv = inventory(INV);
    inv.containers[1].addresses.push("fd00::2".parse().unwrap());
    let opts = CompileOptions::default();
    let e = explain(&p, &inv, "web-1", "fd00::2", Proto::Icmp, None, &opts).unwrap();
    // `to = "any"` covers api-1's ingress as well, over IPv6 (ICMPv6) too.
    assert_eq!((e.src.to_string(), e.verdict), ("fd00::1".to_string(), Verdict::Allow));
    assert_eq!(e.ingress.unwrap().rule.unwrap().id, "web->any:icmp");
    // Nothing lets api-1 ping web-1.
    let e = explain(&p, &inv, "api-1", "web-1", Proto::Icmp, None, &opts).unwrap();
    assert_eq!(e.verdict, Verdict::Deny);
}

#[test]
fn rule_count_follows_policies_not_peers() {
    let p = policy(&[
        ("z.toml", ZONES),
        (
            "p.toml",
            "[[policy]]\nfrom = \"web\"\nto = \"api\"\nproto = \"tcp\"\nports = 443\naction = \"allow\"\n",
        ),
    ]);
    let small = inventory(INV);
    let mut big = small.clone();
    for i in 0..500u32 {
        big.containers.push(fw_daemon::inventory::Container {
            name: format!("api-x{i}"),
            netns: None,
            image: "corp/api:2".into(),
            labels: vec![("tier".into(), "api".into())],
            addresses: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 + i))],
            link: None,
            kube: None,
        });
    }
    let opts = CompileOptions::default();
    let rules = |inv: &Inventory| -> (usize, usize) {
        let rs = compile_all(&p, inv, &opts).into_iter().find(|r| r.container == "web-1").unwrap();
        let n_rules = rs.chains.iter().map(|c| c.rules.len()).sum();
        let n_elems = rs.set("z_api_4").unwrap().elements.len();
        (n_rules, n_elems)
    };
    let (r_small, e_small) = rules(&small);
    let (r_big, e_big) = rules(&big);
    assert_eq!(r_small, r_big, "rule count must not depend on peers");
    assert_eq!((e_small, e_big), (1, 501));
}

#[test]
fn external_zones_only_get_the_families_they_have() {
    let p = policy(&[
        ("z.toml", ZONES),
        ("p.toml", "[[policy]]\nfrom = \"web\"\nto = \"ext\"\naction = \"allow\"\n"),
    ]);
    let inv = inventory(INV);
    let rs = compile_all(&p, &inv, &CompileOptions::default())
        .into_iter()
        .find(|r| r.container == "web-1")
        .unwrap();
    assert!(rs.set("z_ext_4").is_some_and(|s| s.interval));
    assert!(rs.set("z_ext_6").is_none());
    // Container zones keep both families so members can join without a rule change.
    let p = policy(&[
        ("z.toml", ZONES),
        ("p.toml", "[[policy]]\nfrom = \"web\"\nto = \"db\"\naction = \"allow\"\n"),
    ]);
    let rs = compile_all(&p, &inv, &CompileOptions::default())
        .into_iter()
        .find(|r| r.container == "web-1")
        .unwrap();
    assert!(rs.set("z_db_6").is_some_and(|s| s.elements.is_empty() && !s.interval));
}

#[test]
fn blocks_sit_before_the_established_shortcut() {
    let p = policy(&[("z.toml", ZONES)]);
    let inv = inventory(INV);
    for rs in compile_all(&p, &inv, &CompileOptions::default()) {
        for chain in ["egress", "ingress"] {
            let c = rs.chain(chain).unwrap();
            let pos = |kind: RuleKind, id: &str| {
                c.rules
                    .iter()
                    .position(|r| r.origin.as_ref().is_some_and(|o| o.kind == kind && o.id == id))
                    .unwrap()
            };
            let est = pos(RuleKind::Builtin, "established");
            assert!(pos(RuleKind::Block, "quarantine") < est, "{} {chain}", rs.container);
            let block = if chain == "egress" { "block-out" } else { "block-in" };
            assert!(pos(RuleKind::Block, block) < est);
            assert!(c.base.as_ref().unwrap().policy_drop, "base chains fail closed");
        }
    }
}

#[test]
fn inspected_policies_queue_undecided_flows_before_the_established_shortcut() {
    let rules = r#"
[[policy]]
id = "web-tls"
from = "web"
to = "ext"
proto = "tcp"
ports = 443
action = "allow"
inspect = { tls_sni = ["ok.example"], max_packets = 8 }
[[policy]]
id = "ext-in"
from = "ext"
to = "web"
proto = "tcp"
ports = 8443
action = "log"
inspect = { protocol = "tls", fail = "open", timeout = "500ms" }
[[policy]]
id = "plain"
from = "web"
to = "api"
proto = "tcp"
ports = 80
action = "allow"
"#;
    let p = policy(&[("z.toml", ZONES), ("p.toml", rules)]);
    let inv = inventory(INV);
    let opts = CompileOptions { inspect_queue: 7, ..CompileOptions::default() };
    let all = compile_all(&p, &inv, &opts);
    let web = all.iter().find(|r| r.container == "web-1").unwrap();
    let text = fw_daemon::ruleset::render::render(web);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let pos = |needle: &str, from: usize| {
        lines
            .iter()
            .skip(from)
            .position(|l| l.contains(needle))
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("{needle}\n{text}"))
    };
    // In both base chains, cut flows and undecided flows are caught before the shortcut.
    for chain in ["chain egress {", "chain ingress {"] {
        let c = pos(chain, 0);
        let cut = pos("ct mark 0x66790000/16 jump inspect_cut", c);
        let queue = pos("ct mark 0x66760000/15 jump inspect_queue", c);
        assert!(cut < queue && queue < pos("ct state established,related accept", c), "{chain}\n{text}");
    }
    // Payload packets go to the queue, the fail-open policy's with bypass on the next number;
    // the payload-less shapes return first.
    let q = pos("chain inspect_queue {", 0);
    assert_eq!(lines[q + 1], "tcp doff 5 ip length 40 return comment \"builtin:inspect-no-payload\"");
    assert!(lines[pos("ct mark 0x66760000/16", q)]
        .ends_with("meta mark set ct mark queue num 8 bypass comment \"builtin:inspect-fail-open\""));
    assert!(lines[pos("queue num 7", q)]
        .starts_with("meta l4proto { tcp, udp } meta mark set ct mark queue num 7 comment"));
    // The accept rules mark the connection undecided (closed / open), and say which side.
    let out = lines[pos("tcp dport 443", 0)];
    assert!(
        out.contains("ct mark set 0x6677") && out.ends_with("jump inspect_accept comment \"policy:web-tls\""),
        "{out}"
    );
    let mark =
        u32::from_str_radix(out.split("ct mark set 0x").nth(1).unwrap().split(' ').next().unwrap(), 16)
            .unwrap();
    assert_eq!(mark & 0x8000, 0, "accepted on egress: the local end initiated");
    let inb = lines[pos("tcp dport 8443", pos("chain ingress {", 0))];
    let mark =
        u32::from_str_radix(inb.split("ct mark set 0x").nth(1).unwrap().split(' ').next().unwrap(), 16)
            .unwrap();
    assert_eq!((mark >> 16, mark & 0x8000), (0x6676, 0x8000), "{inb}");
    assert!(inb.contains("jump log_"), "a log policy logs, then queues: {inb}");
    // Policies without inspect, and containers it does not apply to, are untouched.
    assert!(!lines[pos("tcp dport 80 ", 0)].contains("ct mark"));
    let db = all.iter().find(|r| r.container == "db-1").unwrap();
    let db = fw_daemon::ruleset::render::render(db);
    assert!(!db.contains("inspect") && !db.contains("ct mark"), "{db}");
    // explain: the policy decides, and says the flow is inspected inline.
    let (v, by) = verdict(&p, &inv, "web-1", "192.0.2.7", Proto::Tcp, Some(443));
    assert_eq!((v, by.as_str()), (Verdict::Allow, "web-tls"));
    let e = explain(&p, &inv, "web-1", "192.0.2.7", Proto::Tcp, Some(443), &opts).unwrap();
    assert!(e.egress.unwrap().inspected);
    let e = explain(&p, &inv, "web-1", "api-1", Proto::Tcp, Some(80), &opts).unwrap();
    assert!(!e.egress.unwrap().inspected);
}

#[test]
fn forwarding_is_dropped_and_attributed_unless_the_zone_routes() {
    use fw_daemon::ruleset::ir::{Hook, Verdict as V};
    let p = policy(&[("z.toml", ZONES)]);
    let inv = inventory(INV);
    let opts = CompileOptions::default();
    for rs in compile_all(&p, &inv, &opts) {
        let fwd = rs.chain("forward").expect("every table has a forward hook");
        let base = fwd.base.as_ref().unwrap();
        assert_eq!(base.hook, Hook::Forward);
        assert!(base.policy_drop, "{}: the forward hook fails closed", rs.container);
        assert_eq!(fwd.rules.len(), 1);
        let r = &fwd.rules[0];
        assert_eq!(r.origin.as_ref().map(|o| (o.kind, o.id.as_str())), Some((RuleKind::Builtin, "forward")));
        // It logs (attributed) and drops.
        let Some(V::Jump(target)) = &r.verdict else { panic!("{r:?}") };
        let action = rs.chain(target).unwrap();
        assert!(action.rules[0].log.as_ref().is_some_and(|l| l.prefix == "fw:deny:forward"));
        assert_eq!(action.rules.last().unwrap().verdict, Some(V::Drop));
    }
    // `forward = true`: routed packets meet the zone's egress policy, rule for rule.
    let routed = ZONES.replace(
        "[zone.web]\nmatch = { name = \"web-*\" }",
        "[zone.web]\nmatch = { name = \"web-*\" }\nforward = true",
    );
    let p = policy(&[("z.toml", &routed)]);
    let rs = compile_all(&p, &inv, &opts).into_iter().find(|r| r.container == "web-1").unwrap();
    assert_eq!(rs.chain("forward").unwrap().rules, rs.chain("egress").unwrap().rules);
    let other = compile_all(&p, &inv, &opts).into_iter().find(|r| r.container == "api-1").unwrap();
    assert_eq!(other.chain("forward").unwrap().rules.len(), 1, "only the web zone routes");
}

#[test]
fn forward_must_be_a_boolean() {
    let d = common::diags(&[("z.toml", "[zone.web]\nmatch = { name = \"w*\" }\nforward = \"yes\"\n")]);
    assert!(d.iter().any(|l| l.starts_with("z.toml:3:11: error:") && l.contains("boolean")), "{d:?}");
}

#[test]
fn blocks_without_ports_go_in_the_address_sets() {
    use fw_daemon::blocks::BlockList;
    use fw_daemon::compile::{compile_with_blocks, Membership};
    use fw_daemon::ruleset::ir::SetElem;
    use fw_proto::control::{BlockTarget, Proto as P, Scope};
    let p = policy(&[("z.toml", ZONES)]);
    let inv = inventory(INV);
    let zones: Vec<(String, String)> =
        inv.containers.iter().map(|c| (c.name.clone(), p.zone_of(&c.identity()).name.clone())).collect();
    let mut blocks = BlockList::default();
    let dst = |net: &str, proto: Option<P>, port: Option<u16>| BlockTarget::Destination {
        scope: Scope::Container("web-1".into()),
        net: net.parse().unwrap(),
        proto,
        port,
    };
    blocks
        .add(dst("192.0.2.7/32", None, None), None, None, "t".into(), Default::default(), 0, &zones)
        .unwrap();
    blocks
        .add(
            dst("192.0.2.8/32", Some(P::Tcp), Some(443)),
            None,
            None,
            "t".into(),
            Default::default(),
            0,
            &zones,
        )
        .unwrap();
    let flow = BlockTarget::Flow {
        container: "web-1".into(),
        proto: P::Icmp,
        src: "10.0.0.1".parse().unwrap(),
        sport: 0,
        dst: "192.0.2.9".parse().unwrap(),
        dport: 0,
    };
    blocks.add(flow, None, None, "t".into(), Default::default(), 0, &zones).unwrap();
    let m = Membership::new(&p, &inv);
    let web = inv.get("web-1").unwrap();
    let rs = compile_with_blocks(&p, &m, web, &CompileOptions::default(), &blocks);
    let dsts = |set: &str| -> Vec<String> {
        rs.set(set)
            .unwrap()
            .elements
            .iter()
            .map(|e| match e {
                SetElem::Block(b) => b.dst.0.to_string(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    // The all-protocol block and the ICMP flow (no ports to match, both directions) are
    // address-only; the port block keeps its ports.
    assert_eq!(dsts("block_out4a"), vec!["192.0.2.7", "192.0.2.9", "10.0.0.1"]);
    assert_eq!(dsts("block_out4"), vec!["192.0.2.8"]);
    let egress = rs.chain("egress").unwrap();
    let established =
        egress.rules.iter().position(|r| r.origin.as_ref().is_some_and(|o| o.id == "established")).unwrap();
    let addr_rule = egress
        .rules
        .iter()
        .position(|r| {
            r.matches.iter().any(|m| matches!(m, fw_daemon::ruleset::ir::Match::BlockAddrLookup { .. }))
        })
        .unwrap();
    assert!(addr_rule < established);
    // explain sees the address-only block for any protocol and port.
    for (proto, port) in [(Proto::Udp, Some(9)), (Proto::Tcp, Some(80)), (Proto::Icmp, None)] {
        let d = fw_daemon::ruleset::eval::evaluate(
            &rs,
            fw_daemon::ruleset::ir::Hook::Output,
            &fw_daemon::ruleset::eval::Packet {
                src: "10.0.0.1".parse().unwrap(),
                dst: "192.0.2.7".parse().unwrap(),
                proto,
                dport: port,
                icmp_type: None,
            },
        );
        assert_eq!(d.verdict, Verdict::Deny, "{proto:?}");
    }
}

#[test]
fn responders_stay_reachable_from_a_quarantine() {
    let p = policy(&[("z.toml", ZONES)]);
    let inv = inventory(INV);
    let opts =
        CompileOptions { responders: vec!["10.9.0.5/32".parse().unwrap()], ..CompileOptions::default() };
    let rs = compile_all(&p, &inv, &opts).into_iter().find(|r| r.container == "web-1").unwrap();
    assert!(rs.set("responders4").is_some_and(|s| s.interval && s.elements.len() == 1));
    assert!(rs.set("responders6").is_none(), "no IPv6 responders, no set");
    // Every quarantine chain (by who opened the connection, on either side) lets responders
    // through before it drops anything.
    for chain in
        ["quarantine_opened_out", "quarantine_accepted_out", "quarantine_opened_in", "quarantine_accepted_in"]
    {
        let c = rs.chain(chain).unwrap_or_else(|| panic!("{chain} missing"));
        let at =
            |id: &str| c.rules.iter().position(|r| r.origin.as_ref().is_some_and(|o| o.id.starts_with(id)));
        assert!(
            at("responders").unwrap() < at("quarantine").unwrap(),
            "{chain}: responders before the quarantine drop"
        );
    }
    // Without responders nothing changes.
    let plain = compile_all(&p, &inv, &CompileOptions::default())
        .into_iter()
        .find(|r| r.container == "web-1")
        .unwrap();
    assert!(plain.set("responders4").is_none());
}

/// A Service's virtual address counts as the zone(s) of its endpoints, on the port each
/// forwards to: inside the client's namespace egress sees the VIP and the Service port,
/// before the node's proxy rewrites them (finding of the Kubernetes issue: every policy to
/// a Service failed, the VIP being in no zone).
#[test]
fn a_service_address_is_judged_as_the_endpoints_behind_it() {
    let rules = r#"
[defaults]
action = "deny"
[zone.web]
match = { name = "web-*" }
[zone.api]
match = { name = "api-*" }
[zone.db]
match = { name = "db-*" }
[zone.lab]
cidrs = ["192.0.2.0/24"]
[[policy]]
id = "web-to-api"
from = "web"
to = "api"
proto = "tcp"
ports = [8080]
action = "allow"
[[policy]]
id = "web-to-lab"
from = "web"
to = "lab"
proto = "udp"
ports = [53]
action = "allow"
[[policy]]
id = "no-db"
from = "web"
to = "db"
action = "deny"
[[policy]]
id = "anyone-5000"
from = "web"
to = "any"
proto = "tcp"
ports = [5000]
action = "allow"
"#;
    let inv = r#"
[[container]]
name = "web-1"
addresses = ["10.0.0.1", "fd00::1"]
[[container]]
name = "api-1"
addresses = ["10.0.0.2"]
[[container]]
name = "api-2"
addresses = ["10.0.0.3"]
[[container]]
name = "db-1"
addresses = ["10.0.0.4"]

[[service]]
name = "shop/api"
addresses = ["10.96.0.10", "fd96::10"]
ports = [{ port = 80, target = 8080 }, { port = 81, target = 9090 }, { proto = "udp", port = 80, target = 8080 }]
endpoints = ["10.0.0.2", "10.0.0.3"]

[[service]]
name = "shop/mixed"
addresses = ["10.96.0.11"]
ports = [{ port = 80, target = 8080 }]
endpoints = ["10.0.0.2", "10.0.0.4"]

[[service]]
name = "shop/dns"
addresses = ["10.96.0.12"]
ports = [{ proto = "udp", port = 53 }]
endpoints = ["192.0.2.53"]

[[service]]
name = "shop/elsewhere"
addresses = ["10.96.0.13"]
ports = [{ port = 80, target = 5000 }, { port = 81, target = 8080 }]
endpoints = ["198.51.100.7"]

[[service]]
name = "shop/empty"
addresses = ["10.96.0.14"]
ports = [{ port = 80, target = 8080 }]
endpoints = []
"#;
    let p = policy(&[("z.toml", rules)]);
    let inv = inventory(inv);
    let v = |to: &str, proto: Proto, port: u16| verdict(&p, &inv, "web-1", to, proto, Some(port));
    let allowed = |id: &str| (Verdict::Allow, id.to_string());
    // The endpoints are api's, and web may reach api:8080: the VIP's port 80, both families.
    assert_eq!(v("10.96.0.10", Proto::Tcp, 80), allowed("web-to-api"));
    assert_eq!(v("fd96::10", Proto::Tcp, 80), allowed("web-to-api"));
    // Port 81 goes to 9090, which no policy allows; udp 80 is not tcp 8080.
    assert_eq!(v("10.96.0.10", Proto::Tcp, 81), (Verdict::Deny, "default".into()));
    assert_eq!(v("10.96.0.10", Proto::Udp, 80), (Verdict::Deny, "default".into()));
    // A port the Service does not have is an address in no zone.
    assert_eq!(v("10.96.0.10", Proto::Tcp, 8080), (Verdict::Deny, "default".into()));
    // The proxy picks a backend per connection: one backend in a denied zone denies the
    // port, by the rule that denies it.
    assert_eq!(v("10.96.0.11", Proto::Tcp, 80), (Verdict::Deny, "no-db".into()));
    // Backends in a zone of networks, and ones in no zone at all (only `any` covers them).
    assert_eq!(v("10.96.0.12", Proto::Udp, 53), allowed("web-to-lab"));
    assert_eq!(v("10.96.0.13", Proto::Tcp, 80), allowed("anyone-5000"));
    assert_eq!(v("10.96.0.13", Proto::Tcp, 81), (Verdict::Deny, "default".into()));
    // No endpoints: nothing to judge it by, so the rules judge the address itself.
    assert_eq!(v("10.96.0.14", Proto::Tcp, 80), (Verdict::Deny, "default".into()));
    // The endpoints themselves are judged as ever.
    assert_eq!(v("10.0.0.2", Proto::Tcp, 8080), allowed("web-to-api"));
    assert_eq!(v("10.0.0.4", Proto::Tcp, 8080), (Verdict::Deny, "no-db".into()));

    // The rule count follows the policies, not the Services: each decider gets one lookup
    // per family, whatever the number of VIPs behind it.
    let mut more = inv.clone();
    for i in 0..50u16 {
        let mut s = more.services[0].clone();
        s.name = format!("shop/api-{i}");
        s.addresses = vec![format!("10.96.1.{i}").parse().unwrap()];
        more.services.push(s);
    }
    let count = |inv: &Inventory| {
        let rs = compile_all(&p, inv, &CompileOptions::default());
        let web = rs.iter().find(|r| r.container == "web-1").unwrap();
        web.chains.iter().map(|c| c.rules.len()).sum::<usize>()
    };
    assert_eq!(count(&inv), count(&more));
}

#[test]
fn services_in_the_inventory_are_checked_with_positions() {
    let parse = |t: &str| {
        fw_daemon::inventory::parse_inventory(std::path::Path::new("i.toml"), t)
            .unwrap_err()
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        parse(
            "[[service]]\nname = \"\"\naddresses = [\"10.96.0.1\"]\nports = [{ port = 1 }]\nendpoints = []\n"
        ),
        ["i.toml:2:8: error: service `name` is empty"]
    );
    assert_eq!(
        parse("[[service]]\nname = \"s\"\naddresses = []\nports = [{ port = 1 }]\nendpoints = []\n"),
        ["i.toml:3:13: error: service `s` has no addresses"]
    );
    assert_eq!(
        parse("[[container]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[[service]]\nname = \"s\"\naddresses = [\"10.0.0.1\"]\nports = [{ port = 1 }]\nendpoints = []\n"),
        ["i.toml:6:13: error: address 10.0.0.1 of service `s` is container `a`'s"]
    );
    let bad = "[[service]]\nname = \"s\"\naddresses = [\"10.96.0.300\"]\nports = [{ proto = \"sctp\", port = 80 }, { port = 0 }, { prot = \"tcp\", port = 1 }]\nendpoints = [\"10.0.0.1\"]\n";
    let errs = fw_daemon::inventory::parse_inventory(std::path::Path::new("i.toml"), bad).unwrap_err();
    let text: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        text,
        [
            "i.toml:3:14: error: `10.96.0.300` is not an IPv4 or IPv6 address",
            "i.toml:4:20: error: service port proto `sctp`: expected \"tcp\" or \"udp\"",
            "i.toml:4:50: error: `port` must be a port, 1 to 65535",
            "i.toml:4:57: error: unknown key `prot` in a service port; did you mean `proto`?",
        ],
        "{text:#?}"
    );
}

/// A rule that matches the VIP packet itself (`any` on the Service port, a network holding
/// the ClusterIP) does not pre-empt what the endpoints' rules decide; and when every
/// endpoint is allowed but by different rules, the one that inspects judges the VIP.
#[test]
fn a_service_port_is_decided_by_its_endpoints_rules_alone_and_the_strictest_allow() {
    let rules = r#"
[defaults]
action = "deny"
[zone.web]
match = { name = "web-*" }
[zone.db]
match = { name = "db-*" }
[zone.api]
match = { name = "api-*" }
[zone.tls]
match = { name = "tls-*" }
[zone.services]
cidrs = ["10.96.0.0/16"]
[[policy]]
id = "anyone-5000"
from = "web"
to = "any"
proto = "tcp"
ports = [5000]
action = "allow"
[[policy]]
id = "service-range"
from = "web"
to = "services"
action = "allow"
[[policy]]
id = "no-db"
from = "web"
to = "db"
action = "deny"
[[policy]]
id = "to-api"
from = "web"
to = "api"
proto = "tcp"
ports = [443]
action = "allow"
[[policy]]
id = "to-tls"
from = "web"
to = "tls"
proto = "tcp"
ports = [443]
action = "allow"
inspect = { protocol = "tls", tls_sni = ["api.example.com"], on_violation = "cut" }
"#;
    let inv = r#"
[[container]]
name = "web-1"
addresses = ["10.0.0.1"]
[[container]]
name = "db-1"
addresses = ["10.0.0.4"]
[[container]]
name = "api-1"
addresses = ["10.0.0.5"]
[[container]]
name = "tls-1"
addresses = ["10.0.0.6"]
[[service]]
name = "shop/db"
addresses = ["10.96.0.20"]
ports = [{ port = 5000, target = 5432 }]
endpoints = ["10.0.0.4"]
[[service]]
name = "shop/mixed"
addresses = ["10.96.0.21"]
ports = [{ port = 443 }]
endpoints = ["10.0.0.5", "10.0.0.6"]
"#;
    let p = policy(&[("z.toml", rules)]);
    let inv = inventory(inv);
    let opts = CompileOptions::default();
    let e = |to: &str, port: u16| explain(&p, &inv, "web-1", to, Proto::Tcp, Some(port), &opts).unwrap();
    let db = e("10.96.0.20", 5000);
    assert_eq!(
        (db.verdict, db.rule.map(|r| r.id)),
        (Verdict::Deny, Some("no-db".into())),
        "neither `any` on 5000 nor the Service range's allow pre-empts db's deny"
    );
    let mixed = e("10.96.0.21", 443);
    assert_eq!(mixed.verdict, Verdict::Allow);
    assert_eq!(mixed.rule.map(|r| r.id).as_deref(), Some("to-tls"), "the inspected allow judges the VIP");
    assert!(mixed.egress.is_some_and(|x| x.inspected), "and its flows are inspected");
    // An address of the range that is no Service is judged by the range's rule as ever.
    assert_eq!(e("10.96.0.99", 80).rule.map(|r| r.id).as_deref(), Some("service-range"));
}

/// An operator's block of an endpoint also blocks the Service addresses in front of it:
/// the egress table sees the VIP, not the endpoint the node rewrites it to.
#[test]
fn a_block_of_an_endpoint_blocks_the_service_ports_that_lead_to_it() {
    use fw_daemon::blocks::BlockList;
    use fw_daemon::compile::{compile_with_blocks, Membership};
    use fw_daemon::ruleset::eval::{evaluate, Packet};
    use fw_daemon::ruleset::ir::Hook;
    use fw_proto::control::{BlockTarget, Proto as P, Scope};
    let rules = "[defaults]\naction = \"allow\"\n[zone.web]\nmatch = { name = \"web-*\" }\n";
    let inv = "[[container]]\nname = \"web-1\"\naddresses = [\"10.0.0.1\"]\n\
               [[service]]\nname = \"shop/db\"\naddresses = [\"10.96.0.20\"]\n\
               ports = [{ port = 5000, target = 5432 }, { port = 80, target = 8080 }]\nendpoints = [\"10.0.0.4\"]\n";
    let p = policy(&[("z.toml", rules)]);
    let inv = inventory(inv);
    let zones = vec![("web-1".to_string(), "web".to_string())];
    let mut blocks = BlockList::default();
    let target = BlockTarget::Destination {
        scope: Scope::Container("web-1".into()),
        net: "10.0.0.4/32".parse().unwrap(),
        proto: Some(P::Tcp),
        port: Some(5432),
    };
    blocks.add(target, None, None, "t".into(), Default::default(), 0, &zones).unwrap();
    let m = Membership::new(&p, &inv);
    let rs = compile_with_blocks(&p, &m, inv.get("web-1").unwrap(), &CompileOptions::default(), &blocks);
    let to = |dst: &str, port: u16| {
        let pkt = Packet {
            src: "10.0.0.1".parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: Proto::Tcp,
            dport: Some(port),
            icmp_type: None,
        };
        evaluate(&rs, Hook::Output, &pkt).verdict
    };
    assert_eq!(to("10.0.0.4", 5432), Verdict::Deny, "the endpoint itself");
    assert_eq!(to("10.96.0.20", 5000), Verdict::Deny, "the Service port that leads to it");
    assert_eq!(to("10.96.0.20", 80), Verdict::Allow, "a port that leads elsewhere on it");
}

/// On the floor (which sees IPv4 datagrams unreassembled) an allowed Service port's later
/// fragments, which carry no ports, pass by the VIP's address, as other allows' do.
#[test]
fn the_floor_passes_later_fragments_to_an_allowed_service_address() {
    use fw_daemon::compile::{zone_policy, Membership, Side};
    use fw_daemon::ruleset::ir::{Match, SetElem, Verdict as V};
    let rules = "[defaults]\naction = \"deny\"\n[zone.web]\nmatch = { name = \"web-*\" }\n\
                 [zone.api]\nmatch = { name = \"api-*\" }\n\
                 [[policy]]\nfrom = \"web\"\nto = \"api\"\nproto = \"udp\"\nports = [8053]\naction = \"allow\"\n";
    let inv = "[[container]]\nname = \"web-1\"\naddresses = [\"10.0.0.1\"]\n\
               [[container]]\nname = \"api-1\"\naddresses = [\"10.0.0.2\"]\n\
               [[service]]\nname = \"s/api\"\naddresses = [\"10.96.0.10\"]\n\
               ports = [{ proto = \"udp\", port = 53, target = 8053 }]\nendpoints = [\"10.0.0.2\"]\n";
    let p = policy(&[("z.toml", rules)]);
    let inv = inventory(inv);
    let m = Membership::new(&p, &inv);
    let web = p.zone("web").unwrap();
    let zp = zone_policy(&p, &m, web, Side::Egress, &CompileOptions::default(), V::Return, V::Drop);
    let frag = zp
        .rules
        .iter()
        .find(|r| {
            r.matches.contains(&Match::FragNonFirst)
                && r.matches
                    .iter()
                    .any(|m| matches!(m, Match::AddrInSet { set, .. } if set.starts_with("vip_")))
        })
        .expect("a later-fragment rule for the VIP");
    assert_eq!(frag.verdict, Some(V::Return));
    let set = zp.sets.iter().find(|s| s.name.starts_with("vip_") && s.name.ends_with("_a4")).unwrap();
    assert_eq!(set.elements, [SetElem::Addr("10.96.0.10".parse().unwrap())]);
}
