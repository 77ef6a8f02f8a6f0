//! Golden test of `plan` for the demo: any change to what the demo containers would be
//! programmed with shows up as a reviewed snapshot diff (`cargo insta review`).

mod common;

use fw_daemon::compile::CompileOptions;
use fw_daemon::tools::plan::plan;

#[test]
fn demo_plan_is_stable() {
    let p = common::demo_policy();
    let inv = common::demo_inventory();
    let plans = plan(&p, &inv, None, &CompileOptions::default()).map_err(|f| f.lines()).unwrap();
    assert_eq!(plans.len(), inv.containers.len());
    for cp in plans {
        insta::assert_snapshot!(format!("plan-{}", cp.container), cp.text);
    }
    let floor = fw_daemon::tools::plan::plan_floor(&p, &inv, None, &CompileOptions::default());
    insta::assert_snapshot!("plan-floor", floor.text);
}

/// The feature tour (rules/features): zone lists, named services, a zone of containers and
/// networks, ICMP types, in each container's table and in the floor.
#[test]
fn features_plan_is_stable() {
    let p = common::features_policy();
    let inv = common::demo_inventory();
    let plans = plan(&p, &inv, None, &CompileOptions::default()).map_err(|f| f.lines()).unwrap();
    for cp in plans {
        insta::assert_snapshot!(format!("features-{}", cp.container), cp.text);
    }
    let floor = fw_daemon::tools::plan::plan_floor(&p, &inv, None, &CompileOptions::default());
    insta::assert_snapshot!("features-floor", floor.text);
}

#[test]
fn plan_for_one_container_and_unknown_names() {
    let p = common::demo_policy();
    let inv = common::demo_inventory();
    let one = plan(&p, &inv, Some("db-1"), &CompileOptions::default()).map_err(|f| f.lines()).unwrap();
    assert_eq!(one.len(), 1);
    assert!(one[0].text.starts_with("# container db-1: zone db (enforce)\n"));
    let err = plan(&p, &inv, Some("db-9"), &CompileOptions::default()).err().unwrap();
    assert!(
        err.lines()[0].starts_with("no container `db-9` in the inventory (known: web-1, web-2"),
        "{:?}",
        err.lines()
    );
}
