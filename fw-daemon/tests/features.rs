//! The feature tour (rules/features) with real packets: zone lists, named services, a zone
//! of containers and networks (legacy hosts beside the API containers), and ICMP types,
//! enforced by each container's own table and, separately, by the host-side floor alone.
//! Every cell is also asked of `explain`, which must agree. Privileged: runs as root,
//! required under CI=true.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::icmp::{icmp_probe, IcmpKind};
use common::lab::{tcp_probe, udp_probe, Lab, Probe};
use fw_daemon::compile::{CompileOptions, Membership};
use fw_daemon::floor::{compile_floor, FloorOptions, Port};
use fw_daemon::inventory::Inventory;
use fw_daemon::rules::{IcmpType, Policy};
use fw_daemon::ruleset::eval::Proto;
use fw_daemon::tools::{apply::apply, explain::explain_icmp};
use fw_proto::Verdict;

const WAIT: Duration = Duration::from_millis(300);
const CONTAINERS: &[&str] = &["web-1", "api-1", "db-1", "batch-1", "dns-1"];
const LEGACY: &str = "legacy-1";
const PARTNER: &str = "partner-1";

#[derive(Debug, Clone, Copy)]
enum What {
    Tcp(u16),
    Udp(u16),
    Icmp(IcmpKind),
}

/// (from, to, over IPv6, what, allowed): what rules/features says, cell by cell.
const CELLS: &[(&str, &str, bool, What, bool)] = &[
    // `from`/`to` lists: front-to-api is from [web, batch], to-db from [api, batch].
    ("web-1", "api-1", false, What::Tcp(8080), true),
    ("batch-1", "api-1", false, What::Tcp(8080), true),
    ("db-1", "api-1", false, What::Tcp(8080), false),
    ("api-1", "db-1", false, What::Tcp(5432), true),
    ("batch-1", "db-1", true, What::Tcp(5432), true),
    ("web-1", "db-1", false, What::Tcp(5432), false),
    // Services: `api` and `https` together, `dns` (udp and tcp) in a failsafe.
    ("web-1", "api-1", false, What::Tcp(443), true),
    ("web-1", "api-1", true, What::Tcp(8443), true),
    ("web-1", "api-1", false, What::Tcp(9005), true),
    ("web-1", "api-1", false, What::Tcp(22), false),
    ("web-1", "dns-1", false, What::Udp(53), true),
    ("web-1", "dns-1", true, What::Tcp(53), true),
    ("web-1", "dns-1", false, What::Udp(5432), false),
    ("api-1", PARTNER, false, What::Tcp(443), true),
    ("api-1", PARTNER, false, What::Tcp(22), false),
    // The api zone's networks: its legacy host is a peer like its containers.
    ("web-1", LEGACY, false, What::Tcp(8080), true),
    ("web-1", LEGACY, true, What::Tcp(443), true),
    (LEGACY, "db-1", false, What::Tcp(5432), true),
    (LEGACY, "db-1", false, What::Tcp(22), false),
    ("db-1", LEGACY, false, What::Tcp(8080), false),
    // ICMP types: echo into the tiers, no timestamps anywhere, api may ping partners.
    ("db-1", "web-1", false, What::Icmp(IcmpKind::Echo), true),
    ("db-1", "web-1", true, What::Icmp(IcmpKind::Echo), true),
    (PARTNER, "api-1", false, What::Icmp(IcmpKind::Echo), true),
    ("web-1", "db-1", false, What::Icmp(IcmpKind::Timestamp), false),
    (PARTNER, "db-1", false, What::Icmp(IcmpKind::Timestamp), false),
    ("web-1", PARTNER, false, What::Icmp(IcmpKind::Echo), false),
    ("api-1", PARTNER, false, What::Icmp(IcmpKind::Echo), true),
    ("api-1", PARTNER, true, What::Icmp(IcmpKind::Echo), true),
    (LEGACY, "web-1", true, What::Icmp(IcmpKind::Echo), true),
];

fn privileged() -> bool {
    common::require(common::lab::available(), "root with iproute2 (network namespaces)")
}

/// The lab: the tour's containers, the api zone's legacy host and a partner (neither
/// managed), with servers on every probed port; the inventory of the managed ones.
fn tour_lab() -> (Lab, Policy, Inventory) {
    let policy = common::features_policy();
    let base = common::demo_inventory();
    let mut lab = Lab::new();
    for n in CONTAINERS {
        lab.add(n, &base.get(n).expect("a demo container").addresses);
    }
    lab.add(LEGACY, &["10.77.8.10".parse().unwrap(), "fd77:0:8::10".parse().unwrap()]);
    lab.add(PARTNER, &["10.77.9.10".parse().unwrap(), "fd77:0:9::10".parse().unwrap()]);
    let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &names {
        lab.serve_tcp(n, &[22, 53, 443, 5432, 8080, 8443, 9005]);
        lab.serve_udp(n, &[53, 5432]);
    }
    let inv = lab.inventory(&base);
    let inv = Inventory {
        containers: inv.containers.into_iter().filter(|c| c.netns.is_some()).collect(),
        ..Default::default()
    };
    (lab, policy, inv)
}

fn addr(lab: &Lab, node: &str, v6: bool) -> std::net::IpAddr {
    *lab.node(node).addrs.iter().find(|a| a.is_ipv6() == v6).expect("an address of that family")
}

fn probe(lab: &Lab, from: &str, to: &str, v6: bool, what: What) -> Probe {
    let path = lab.node(from).path();
    let dst = addr(lab, to, v6);
    match what {
        What::Tcp(p) => tcp_probe(&path, SocketAddr::new(dst, p), WAIT),
        What::Udp(p) => udp_probe(&path, SocketAddr::new(dst, p), WAIT),
        What::Icmp(k) => icmp_probe(&path, dst, k, WAIT),
    }
}

/// Probes every cell; each must match the table, and `explain` must say the same.
fn every_cell_as_written(lab: &Lab, policy: &Policy, inv: &Inventory) {
    let opts = CompileOptions::default();
    let mut wrong = Vec::new();
    for &(from, to, v6, what, allowed) in CELLS {
        let got = probe(lab, from, to, v6, what);
        if (got == Probe::Connected) != allowed {
            wrong.push(format!(
                "{from} -> {to} {what:?} (v6 {v6}): expected allowed={allowed}, probe {got:?}"
            ));
        }
        let (proto, port, icmp) = match what {
            What::Tcp(p) => (Proto::Tcp, Some(p), None),
            What::Udp(p) => (Proto::Udp, Some(p), None),
            What::Icmp(IcmpKind::Echo) => (Proto::Icmp, None, IcmpType::named("echo-request")),
            What::Icmp(IcmpKind::Timestamp) => (Proto::Icmp, None, IcmpType::named("timestamp-request")),
        };
        let (s, d) = (addr(lab, from, v6).to_string(), addr(lab, to, v6).to_string());
        let e = explain_icmp(policy, inv, &s, &d, proto, port, icmp, &opts).map_err(|f| f.lines()).unwrap();
        if (e.verdict != Verdict::Deny) != allowed {
            wrong.push(format!(
                "{from} -> {to} {what:?} (v6 {v6}): explain says {} by {:?}",
                e.verdict, e.rule
            ));
        }
    }
    assert!(wrong.is_empty(), "{} cells wrong:\n{}", wrong.len(), wrong.join("\n"));
}

/// The lab answers every kind of probe when nothing filters it: a denied cell is the
/// policy's doing, not a lab that never answers (Linux does reply to timestamp requests).
fn the_lab_answers_unfiltered(lab: &Lab) {
    assert_eq!(probe(lab, PARTNER, LEGACY, false, What::Icmp(IcmpKind::Timestamp)), Probe::Connected);
    assert_eq!(probe(lab, PARTNER, LEGACY, false, What::Icmp(IcmpKind::Echo)), Probe::Connected);
    assert_eq!(probe(lab, PARTNER, LEGACY, true, What::Icmp(IcmpKind::Echo)), Probe::Connected);
    assert_eq!(probe(lab, LEGACY, PARTNER, false, What::Tcp(22)), Probe::Connected);
    assert_eq!(probe(lab, LEGACY, PARTNER, false, What::Udp(5432)), Probe::Connected);
}

#[test]
#[ignore = "needs root"]
fn each_containers_table_enforces_lists_services_mixed_zones_and_icmp_types() {
    if !privileged() {
        return;
    }
    let (lab, policy, inv) = tour_lab();
    the_lab_answers_unfiltered(&lab);
    // Before any table, every denied cell passes: the probes can tell.
    assert_eq!(probe(&lab, "web-1", "db-1", false, What::Icmp(IcmpKind::Timestamp)), Probe::Connected);
    assert_eq!(probe(&lab, "web-1", "api-1", false, What::Tcp(22)), Probe::Connected);
    for o in apply(&policy, &inv, None, &CompileOptions::default()) {
        if let Err(e) = o.result {
            panic!("apply {}: {e}", o.container);
        }
    }
    every_cell_as_written(&lab, &policy, &inv);
}

fn link_info(ns: &str, dev: &str) -> (u32, [u8; 6]) {
    let out = Command::new("ip").args(["-n", ns, "-o", "link", "show", dev]).output().expect("ip");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let index: u32 = text.split(':').next().unwrap().trim().parse().expect("ifindex");
    let mac = text.split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap();
    let bytes: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    (index, bytes.try_into().unwrap())
}

#[test]
#[ignore = "needs root"]
fn the_floor_alone_enforces_the_same_cells() {
    if !privileged() {
        return;
    }
    let (lab, policy, inv) = tour_lab();
    the_lab_answers_unfiltered(&lab);
    let ports: Vec<Port> = CONTAINERS
        .iter()
        .map(|n| {
            let (ifindex, _) = link_info(lab.hub_ns(), &lab.port(n));
            let (_, mac) = link_info(&lab.node(n).ns, "eth0");
            Port {
                containers: vec![n.to_string()],
                ifindex,
                ifname: lab.port(n),
                mac,
                addrs: lab.node(n).addrs.clone(),
            }
        })
        .collect();
    let m = Membership::new(&policy, &inv);
    let rs = compile_floor(
        &policy,
        &m,
        &ports,
        &Default::default(),
        &CompileOptions::default(),
        &FloorOptions::default(),
    );
    assert_eq!(probe(&lab, "web-1", PARTNER, false, What::Icmp(IcmpKind::Echo)), Probe::Connected);
    let mut nft = fw_daemon::nft::Nft::open(&lab.hub_path(), "floor").expect("socket in the hub");
    nft.apply(&rs).expect("the kernel takes the floor");
    every_cell_as_written(&lab, &policy, &inv);
}
