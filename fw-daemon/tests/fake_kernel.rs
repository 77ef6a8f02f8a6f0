//! The enforcement logic on the in-memory kernel (`fw_daemon::kernel::fake`): the
//! reconciler, drift repair, blocks, the floors and revocation, without root. The same
//! scenarios run against the real kernel in enforce.rs, floor.rs, containment.rs and
//! control.rs; these pin down the decisions (what is committed, how, and what is reported).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fw_daemon::blocks::BlockList;
use fw_daemon::containment::{Containment, ContainmentConfig};
use fw_daemon::floor::link::{HostSide, Links};
use fw_daemon::flows::conntrack::{CtEntry, Tuple};
use fw_daemon::inventory::{load_inventory, Inventory};
use fw_daemon::kernel::fake::{Commit, FakeKernel};
use fw_daemon::reconcile::Reconciler;
use fw_daemon::rules::Policy;
use fw_daemon::ruleset::ir::{KeyValue, SetElem, TableFamily, TABLE};
use fw_proto::control::{BlockDirection, BlockTarget};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demo_policy() -> Arc<Policy> {
    Arc::new(fw_daemon::rules::load_dir(&root().join("rules/demo"), 0).policy.expect("demo rules load"))
}

fn demo_inventory() -> Inventory {
    load_inventory(&root().join("rules/demo-inventory.toml")).expect("demo inventory loads")
}

/// A fake kernel holding every demo container's namespace.
fn lab(inv: &Inventory) -> FakeKernel {
    let k = FakeKernel::new();
    for c in &inv.containers {
        k.add_netns(c.netns.clone().expect("demo containers have a netns"));
    }
    k
}

fn ns(inv: &Inventory, name: &str) -> PathBuf {
    inv.get(name).and_then(|c| c.netns.clone()).expect("known container")
}

fn reconciler(k: &FakeKernel, inv: Inventory) -> Reconciler {
    Reconciler::with_kernel(demo_policy(), inv, Default::default(), Arc::new(k.clone()))
}

fn zone_set<'a>(rs: &'a fw_daemon::ruleset::Ruleset, name: &str) -> Vec<&'a SetElem> {
    rs.set(name).map(|s| s.elements.iter().collect()).unwrap_or_default()
}

#[test]
fn every_namespace_gets_its_table_and_a_failure_stays_local() {
    let inv = demo_inventory();
    let k = lab(&inv);
    // db-1's namespace cannot be opened; the host's holds misc-1.
    k.make_unopenable(&ns(&inv, "db-1"));
    k.forbid(&ns(&inv, "misc-1"));
    let mut rec = reconciler(&k, inv.clone());
    let report = rec.reconcile();
    assert_eq!(report.failed.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["db-1"]);
    assert!(rec.skipped().contains_key("misc-1"), "{:?}", rec.skipped());
    for c in ["web-1", "web-2", "api-1", "api-2", "dns-1", "batch-1"] {
        let t = k.table(&ns(&inv, c), TableFamily::Inet, TABLE).unwrap_or_else(|| panic!("{c} programmed"));
        assert_eq!(Some(&t), rec.ruleset(c), "{c}: the kernel holds what was compiled");
        assert!(report.fresh.contains(&c.to_string()), "{c} had no table before");
    }
    assert!(k.table(&ns(&inv, "misc-1"), TableFamily::Inet, TABLE).is_none(), "the host is never programmed");
    // Healed: the next pass programs db-1 and touches nobody else.
    k.heal(&ns(&inv, "db-1"));
    let before = k.commits(&ns(&inv, "web-1")).len();
    let again = rec.reconcile();
    assert_eq!(again.replaced, ["db-1"]);
    assert_eq!(k.commits(&ns(&inv, "web-1")).len(), before, "unchanged tables are not rewritten");
}

#[test]
fn a_shared_namespace_gets_one_table_for_all_its_containers() {
    let mut inv = demo_inventory();
    let k = lab(&inv);
    // api-2 joins api-1's namespace (`--network container:api-1`) under another path.
    let shared = PathBuf::from("/proc/4242/ns/net");
    k.alias(&shared, &ns(&inv, "api-1"));
    inv.containers.iter_mut().find(|c| c.name == "api-2").unwrap().netns = Some(shared);
    let mut rec = reconciler(&k, inv.clone());
    let report = rec.reconcile();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(rec.sharers("api-1"), Some(&["api-1".to_string(), "api-2".to_string()][..]));
    let commits = k.commits(&ns(&inv, "api-1"));
    assert_eq!(commits, [Commit::Replace { table: TABLE.into() }], "one table, written once");
}

#[test]
fn membership_changes_are_element_updates_and_policy_changes_replace() {
    let inv = demo_inventory();
    let k = lab(&inv);
    let mut rec = reconciler(&k, inv.clone());
    rec.reconcile();
    // A new web container: the peers' zone sets gain its address, no table is replaced.
    let mut bigger = inv.clone();
    let mut web3 = bigger.get("web-2").unwrap().clone();
    web3.name = "web-3".into();
    web3.addresses = vec!["10.77.0.13".parse().unwrap()];
    web3.netns = Some(PathBuf::from("/run/netns/fwdemo-web-3"));
    k.add_netns("/run/netns/fwdemo-web-3");
    bigger.containers.push(web3);
    rec.set_inventory(bigger);
    let report = rec.reconcile();
    assert_eq!(report.replaced, ["web-3"]);
    assert!(report.updated.contains(&"api-1".to_string()), "{report:?}");
    let api1 = ns(&inv, "api-1");
    assert!(matches!(k.commits(&api1).last(), Some(Commit::Elements { added: 1, removed: 0, .. })));
    let t = k.table(&api1, TableFamily::Inet, TABLE).unwrap();
    assert!(zone_set(&t, "z_web_4").contains(&&SetElem::Addr("10.77.0.13".parse().unwrap())));
    // A policy change (a rule removed) replaces the tables it changes.
    let mut p = (*demo_policy()).clone();
    p.rules.retain(|r| r.id != "web-to-api");
    rec.set_policy(Arc::new(p));
    let report = rec.reconcile();
    assert!(report.replaced.contains(&"web-1".to_string()), "{report:?}");
    assert_eq!(k.commits(&ns(&inv, "web-1")).last(), Some(&Commit::Replace { table: TABLE.into() }));
}

#[test]
fn tampering_is_repaired_and_an_untouched_table_costs_no_commit() {
    let inv = demo_inventory();
    let k = lab(&inv);
    let mut rec = reconciler(&k, inv.clone());
    rec.reconcile();
    let web1 = ns(&inv, "web-1");
    let n = k.commits(&web1).len();
    assert!(rec.restore_drift().is_empty(), "nobody touched anything");
    assert_eq!(k.commits(&web1).len(), n);
    // A container with NET_ADMIN flushes its egress chain.
    k.tamper(&web1, TableFamily::Inet, TABLE, |rs| {
        if let Some(c) = rs.chains.iter_mut().find(|c| c.name == "egress") {
            c.rules.clear();
        }
    });
    assert_eq!(rec.restore_drift(), ["web-1"]);
    assert_eq!(k.table(&web1, TableFamily::Inet, TABLE).as_ref(), rec.ruleset("web-1"));
    // It deletes the whole table: restored too.
    k.tamper(&web1, TableFamily::Inet, TABLE, |rs| rs.chains.clear());
    assert_eq!(rec.restore_drift(), ["web-1"]);
    assert!(k.table(&web1, TableFamily::Inet, TABLE).is_some());
    // A repair that the kernel refuses is reported, not retried in a loop, and the next
    // check (healed) repairs it.
    k.tamper(&web1, TableFamily::Inet, TABLE, |rs| rs.chains.clear());
    k.refuse_commits(&web1, libc::ENOMEM);
    assert!(rec.restore_drift().is_empty());
    k.heal(&web1);
    assert_eq!(rec.restore_drift(), ["web-1"]);
}

#[test]
fn a_block_touches_only_the_tables_it_applies_to() {
    let inv = demo_inventory();
    let k = lab(&inv);
    let mut rec = reconciler(&k, inv.clone());
    rec.reconcile();
    let counts = |k: &FakeKernel| -> Vec<usize> {
        inv.containers.iter().map(|c| k.commits(&ns(&inv, &c.name)).len()).collect()
    };
    let before = counts(&k);
    let mut blocks = BlockList::default();
    let target = BlockTarget::Quarantine { container: "api-1".into(), direction: BlockDirection::Both };
    blocks.add(target, None, None, "test".into(), Default::default(), 0, &rec.zones()).unwrap();
    rec.set_blocks(blocks);
    let affected = ["api-1".to_string()].into_iter().collect();
    let report = rec.reconcile_some(Some(&affected));
    assert!(report.failed.is_empty() && report.replaced.is_empty(), "an element update: {report:?}");
    let after = counts(&k);
    for (i, c) in inv.containers.iter().enumerate() {
        let grew = after[i] - before[i];
        assert_eq!(grew, usize::from(c.name == "api-1"), "{}: {grew} commit(s)", c.name);
    }
    // A namespace that refuses the block's commit reports it; its table stays as it was.
    let api1 = ns(&inv, "api-1");
    let table = k.table(&api1, TableFamily::Inet, TABLE);
    k.refuse_commits(&api1, libc::EPERM);
    rec.set_blocks(BlockList::default());
    let report = rec.reconcile_some(Some(&affected));
    assert_eq!(report.failed.len(), 1);
    assert_eq!(k.table(&api1, TableFamily::Inet, TABLE), table);
}

fn entry(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> CtEntry {
    let t = |s: &str, sp, d: &str, dp| Tuple {
        proto,
        src: s.parse::<IpAddr>().unwrap(),
        dst: d.parse::<IpAddr>().unwrap(),
        sport: sp,
        dport: dp,
    };
    CtEntry {
        id: None,
        orig: t(src, sport, dst, dport),
        reply: t(dst, dport, src, sport),
        tcp_state: Some(3),
        status: 0,
        packets_orig: 0,
        bytes_orig: 0,
        packets_reply: 0,
        bytes_reply: 0,
        mark: 0,
    }
}

#[test]
fn floors_follow_ports_and_blocks_and_revocation_cuts_only_denied_flows() {
    let inv = demo_inventory();
    let k = lab(&inv);
    let hub = PathBuf::from("/run/netns/fwdemo-br");
    let hub_id = k.add_netns(&hub);
    for (i, c) in inv.containers.iter().enumerate() {
        let host = HostSide {
            netns: hub.clone(),
            netns_id: hub_id,
            ifindex: 10 + i as u32,
            ifname: format!("p{i}"),
            mac: [2, 0, 0, 0, 0, i as u8 + 1],
        };
        k.set_links(&ns(&inv, &c.name), Ok(Links { host_sides: vec![host], ..Links::default() }));
    }
    let mut rec = reconciler(&k, inv.clone());
    let report = rec.reconcile();
    let kernel: Arc<dyn fw_daemon::kernel::Kernel> = Arc::new(k.clone());
    let mut contain = Containment::with_kernel(ContainmentConfig::default(), kernel);
    let floors = contain.converge(&rec, &report);
    assert!(floors.failed.is_empty(), "{floors:?}");
    let floor = k.table(&hub, TableFamily::Bridge, "fw_floor").expect("floor programmed in the hub");
    let ports = floor.set("ports").unwrap();
    assert_eq!(ports.elements.len(), inv.containers.len());
    assert_eq!(
        contain.floor_of(&rec, "web-1"),
        Ok(vec!["p0 in net:[".to_string() + &hub_id.ino.to_string() + "]"])
    );

    // A quarantine reaches the floor as elements.
    let mut blocks = BlockList::default();
    let target = BlockTarget::Quarantine { container: "api-1".into(), direction: BlockDirection::Both };
    blocks.add(target, None, None, "test".into(), Default::default(), 0, &rec.zones()).unwrap();
    let only = ["api-1".to_string()].into_iter().collect();
    let r = contain.sync_with(&rec, &blocks, Some(&only));
    assert_eq!(r.updated.len(), 1, "{r:?}");
    assert!(matches!(k.commits(&hub).last(), Some(Commit::Elements { .. })));
    let q = k.table(&hub, TableFamily::Bridge, "fw_floor").unwrap();
    assert_eq!(q.set("quarantine_out").unwrap().elements, [SetElem::Tuple(vec![KeyValue::IfIndex(12)])]);

    // Revocation: web-1 -> db-1:5432 is denied (no-web-to-db), web-1 -> api-1:8080 allowed.
    let web1 = ns(&inv, "web-1");
    k.set_conntrack(
        &web1,
        vec![
            entry(6, "10.77.0.11", 40000, "10.77.0.31", 5432),
            entry(6, "10.77.0.11", 40001, "10.77.0.21", 8080),
        ],
    );
    let cut = contain.revoke(&rec, &["web-1".to_string()].into_iter().collect());
    assert_eq!(cut, 1);
    let left = k.conntrack_entries(&web1);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].orig.dport, 8080);
}
