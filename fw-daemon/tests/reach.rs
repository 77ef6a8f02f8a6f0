//! `fw-daemon reach`: what a container may reach and who may reach it, answered by the same
//! evaluator as `explain`, on the demo rules. Unprivileged.

mod common;

use fw_daemon::compile::CompileOptions;
use fw_daemon::tools::reach::{reach, render_text, Side};
use fw_proto::Verdict;

fn entry<'a>(
    r: &'a fw_daemon::tools::reach::Reach,
    zone: &str,
    proto: &str,
) -> Vec<&'a fw_daemon::tools::reach::ReachEntry> {
    r.entries.iter().filter(|e| e.zone == zone && e.proto == proto).collect()
}

#[test]
fn from_web_lists_the_api_ports_and_never_the_database() {
    let (policy, inv) = (common::demo_policy(), common::demo_inventory());
    let r = reach(&policy, &inv, "web-1", Side::From, &CompileOptions::default()).unwrap();
    let api = entry(&r, "api", "tcp");
    assert_eq!(api.len(), 1, "{r:#?}");
    assert_eq!(api[0].ports, vec![[8080, 8080], [9000, 9010]], "{r:#?}");
    assert_eq!(api[0].rule.as_ref().map(|x| x.id.as_str()), Some("web-to-api"));
    assert_eq!(api[0].verdict, Verdict::Allow);
    // no-web-to-db denies every port and protocol: nothing towards db is listed.
    assert!(r.entries.iter().all(|e| e.zone != "db"), "{r:#?}");
    // ICMP echo is allowed everywhere internal (ping-internal), db included? No: the deny
    // comes first for web -> db.
    assert!(entry(&r, "api", "icmp")
        .iter()
        .any(|e| e.rule.as_ref().is_some_and(|x| x.id == "ping-internal")));
    let text = render_text(&r);
    assert!(text.contains("tcp 8080, 9000-9010"), "{text}");
    assert!(text.ends_with("everything else: denied\n"), "{text}");
}

#[test]
fn to_db_lists_the_api_tier_on_5432_only() {
    let (policy, inv) = (common::demo_policy(), common::demo_inventory());
    let r = reach(&policy, &inv, "db-1", Side::To, &CompileOptions::default()).unwrap();
    let api = entry(&r, "api", "tcp");
    assert_eq!(api.len(), 1, "{r:#?}");
    assert_eq!(api[0].ports, vec![[5432, 5432]]);
    assert_eq!(api[0].rule.as_ref().map(|x| x.id.as_str()), Some("api-to-db"));
    assert!(entry(&r, "web", "tcp").is_empty(), "{r:#?}");
}

#[test]
fn every_listed_piece_agrees_with_explain() {
    // Reach is explain over port pieces: each listed range's ends must get the same answer.
    let (policy, inv) = (common::demo_policy(), common::demo_inventory());
    let opts = CompileOptions::default();
    for c in &inv.containers {
        let r = reach(&policy, &inv, &c.name, Side::From, &opts).unwrap();
        for e in &r.entries {
            let proto = fw_daemon::tools::explain::parse_proto(e.proto).unwrap();
            let ports: Vec<Option<u16>> = if e.ports.is_empty() {
                vec![None]
            } else {
                e.ports.iter().flat_map(|[lo, hi]| [Some(*lo), Some(*hi)]).collect()
            };
            for port in ports {
                let x = fw_daemon::tools::explain::explain(
                    &policy,
                    &inv,
                    &c.name,
                    &e.address.to_string(),
                    proto,
                    port,
                    &opts,
                )
                .unwrap();
                assert_eq!(
                    (x.verdict, x.rule.clone()),
                    (e.verdict, e.rule.clone()),
                    "{} -> {} {port:?}: {e:?}",
                    c.name,
                    e.zone
                );
            }
        }
    }
}

#[test]
fn a_misspelt_container_gets_a_suggestion() {
    let (policy, inv) = (common::demo_policy(), common::demo_inventory());
    let e = reach(&policy, &inv, "web1", Side::From, &CompileOptions::default()).unwrap_err();
    assert!(e.lines().join("\n").contains("did you mean `web-1`?"), "{:?}", e.lines());
}
