//! The host-side floor (`table bridge fw_floor`) on its own: compiled from the demo policy,
//! programmed into a lab's hub namespace (the bridge's, the host side of every link) with no
//! table inside the containers at all, and checked with real connections: what the floor
//! alone lets through is what the policy allows.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::lab::{tcp_probe, Lab, Probe};
use fw_daemon::compile::{CompileOptions, Membership};
use fw_daemon::floor::{compile_floor, FloorOptions, Port};

fn link_info(ns: &str, dev: &str) -> (u32, [u8; 6]) {
    let out = Command::new("ip").args(["-n", ns, "-o", "link", "show", dev]).output().expect("ip");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let index: u32 = text.split(':').next().unwrap().trim().parse().expect("ifindex");
    let mac = text.split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap();
    let bytes: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    (index, bytes.try_into().unwrap())
}

fn demo_ports(lab: &Lab) -> Vec<Port> {
    lab.nodes
        .iter()
        .filter(|n| n.name != "partner-1")
        .map(|n| {
            let (ifindex, _) = link_info(lab.hub_ns(), &lab.port(&n.name));
            let (_, mac) = link_info(&n.ns, "eth0");
            Port {
                containers: vec![n.name.clone()],
                ifindex,
                ifname: lab.port(&n.name),
                mac,
                addrs: n.addrs.clone(),
            }
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn the_floor_alone_enforces_the_egress_policy() {
    if !common::require(common::lab::available(), "root and iproute2") {
        return;
    }
    let base = common::demo_inventory();
    let mut lab = Lab::new();
    for n in ["web-1", "api-1", "db-1"] {
        lab.add(n, &base.get(n).unwrap().addresses);
    }
    lab.add("partner-1", &["10.77.9.10".parse().unwrap()]);
    lab.serve_tcp("api-1", &[8080, 9999]);
    lab.serve_tcp("db-1", &[5432]);
    lab.serve_tcp("partner-1", &[443, 22]);
    lab.serve_tcp("api-1", &[8443]);
    let policy = common::demo_policy();
    let inv = lab.inventory(&base);
    let inv = fw_daemon::inventory::Inventory {
        containers: inv.containers.into_iter().filter(|c| c.netns.is_some()).collect(),
        ..Default::default()
    };
    let m = Membership::new(&policy, &inv);
    let ports = demo_ports(&lab);
    let rs = compile_floor(
        &policy,
        &m,
        &ports,
        &Default::default(),
        &CompileOptions::default(),
        &FloorOptions::default(),
    );
    let mut nft = fw_daemon::nft::Nft::open(&lab.hub_path(), "floor").expect("socket in the hub");
    nft.apply(&rs).expect("the kernel takes the floor");
    let at = |node: &str, port: u16| SocketAddr::new(lab.addr(node), port);
    let probe =
        |from: &str, to: SocketAddr| tcp_probe(&lab.node(from).path(), to, Duration::from_millis(700));
    // web -> api 8080 allowed; web -> db denied; api -> db 5432 allowed; api -> partners 443.
    assert_eq!(probe("web-1", at("api-1", 8080)), Probe::Connected);
    assert_eq!(probe("web-1", at("api-1", 9999)), Probe::TimedOut);
    assert_eq!(probe("web-1", at("db-1", 5432)), Probe::TimedOut);
    assert_eq!(probe("api-1", at("db-1", 5432)), Probe::Connected);
    assert_eq!(probe("api-1", at("partner-1", 443)), Probe::Connected);
    assert_eq!(probe("api-1", at("partner-1", 22)), Probe::TimedOut);
    // The unmanaged partner is not a container port: the floor leaves it alone, and its
    // connection to the api tier's 8443 (policy partner-callbacks) gets its replies back
    // through the recorded reply tuple; 8080 from partners is not allowed.
    assert_eq!(probe("partner-1", at("api-1", 8443)), Probe::Connected);
    assert_eq!(probe("partner-1", at("api-1", 8080)), Probe::TimedOut);
}

#[test]
#[ignore]
fn print_floor() {
    let base = common::demo_inventory();
    let policy = common::demo_policy();
    let m = Membership::new(&policy, &base);
    let ports: Vec<Port> = base
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| Port {
            containers: vec![c.name.clone()],
            ifindex: 10 + i as u32,
            ifname: format!("p{i}"),
            mac: [2, 0, 0, 0, 0, i as u8],
            addrs: c.addresses.clone(),
        })
        .collect();
    let rs = compile_floor(
        &policy,
        &m,
        &ports,
        &Default::default(),
        &CompileOptions::default(),
        &FloorOptions::default(),
    );
    println!("{}", fw_daemon::ruleset::render::render(&rs));
}

#[test]
#[ignore = "needs root"]
fn discovery_finds_each_nodes_port_in_the_hub() {
    if !common::require(common::lab::available(), "root and iproute2") {
        return;
    }
    use fw_daemon::floor::link::{discover, NsId};
    let mut lab = Lab::new();
    lab.add("web-1", &["10.77.0.11".parse().unwrap(), "fd77::11".parse().unwrap()]);
    lab.add("db-1", &["10.77.0.31".parse().unwrap()]);
    let hub = NsId::of(&lab.hub_path()).unwrap();
    for n in ["web-1", "db-1"] {
        let links = discover(&lab.node(n).path(), &[]).expect("discovery");
        assert_eq!(links.host_sides.len(), 1, "{n}: {links:?}");
        let h = &links.host_sides[0];
        assert_eq!(h.netns_id, hub, "{n}: the peer is in the hub");
        assert_eq!(h.ifname, lab.port(n));
        let (index, _) = link_info(lab.hub_ns(), &lab.port(n));
        let (_, mac) = link_info(&lab.node(n).ns, "eth0");
        assert_eq!((h.ifindex, h.mac), (index, mac));
        assert!(links.unresolved.is_empty(), "{links:?}");
    }
    // web-1 has an IPv6 address, so a link-local one too (admitted as a source).
    let links = discover(&lab.node("web-1").path(), &[]).unwrap();
    assert!(links.link_local.iter().all(|a| a.to_string().starts_with("fe80")), "{links:?}");
    // A routed link (its peer on no bridge) is no floor: reported, not pretended.
    let routed = format!("{}-routed", lab.hub_ns());
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _gone = Gone(routed.clone());
    let ip =
        |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    ip(&["netns", "add", &routed]);
    ip(&["-n", &routed, "link", "add", "eth0", "type", "veth", "peer", "name", "r0", "netns", lab.hub_ns()]);
    let links = discover(&std::path::PathBuf::from(format!("/run/netns/{routed}")), &[]).unwrap();
    assert!(links.host_sides.is_empty(), "{links:?}");
    assert!(links.unresolved.iter().any(|u| u.contains("r0 is on no bridge")), "{links:?}");
}

#[test]
#[ignore = "needs root"]
fn a_port_joining_is_an_element_update_of_every_set_and_map() {
    if !common::require(common::lab::available(), "root and iproute2") {
        return;
    }
    use fw_daemon::floor::compile::{MAP_PORT_OUT, SET_PORTS};
    let base = common::demo_inventory();
    let mut lab = Lab::new();
    for n in ["web-1", "api-1", "db-1", "api-2"] {
        lab.add(n, &base.get(n).unwrap().addresses);
    }
    lab.serve_tcp("db-1", &[5432]);
    let policy = common::demo_policy();
    let inv = lab.inventory(&base);
    let inv = fw_daemon::inventory::Inventory {
        containers: inv.containers.into_iter().filter(|c| c.netns.is_some()).collect(),
        ..Default::default()
    };
    let m = Membership::new(&policy, &inv);
    let all = demo_ports(&lab);
    let floor = |ports: &[Port]| {
        compile_floor(
            &policy,
            &m,
            ports,
            &Default::default(),
            &CompileOptions::default(),
            &FloorOptions::default(),
        )
    };
    let without_api: Vec<Port> = all.iter().filter(|p| p.containers[0] != "api-2").cloned().collect();
    let before = floor(&without_api);
    let after = floor(&all);
    let changes =
        fw_daemon::ruleset::diff::set_changes(&before, &after).expect("a port is an element update");
    let names: Vec<&str> = changes.iter().map(|c| c.set.as_str()).collect();
    assert!(names.contains(&SET_PORTS) && names.contains(&MAP_PORT_OUT), "{names:?}");
    let mut nft = fw_daemon::nft::Nft::open(&lab.hub_path(), "floor").expect("socket in the hub");
    nft.apply(&before).expect("floor");
    let to_db = SocketAddr::new(lab.addr("db-1"), 5432);
    let probe = |from: &str| tcp_probe(&lab.node(from).path(), to_db, Duration::from_millis(700));
    assert_eq!(probe("api-1"), Probe::Connected);
    // api-2 is in no set yet: its port is not the floor's business, but db-1's ingress
    // records nothing for it and api-2 is no member of the api zone's set either.
    nft.update_sets_in(after.family, &after.table, &changes).expect("element update");
    assert_eq!(probe("api-2"), Probe::Connected, "api-2 admitted, and its zone may reach db");
    assert_eq!(probe("api-1"), Probe::Connected, "api-1 unaffected");
    let listing = Command::new("ip")
        .args(["netns", "exec", lab.hub_ns(), "nft", "list", "map", "bridge", "fw_floor", MAP_PORT_OUT])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout).to_string();
    assert_eq!(text.matches("jump out_").count(), 4, "{text}");
    assert_eq!(probe("web-1"), Probe::TimedOut, "web -> db stays denied");
}

/// web-1, api-1 and db-1 of the demo in a lab, db-1 counting what reaches its port 5432, and
/// the inventory of the three.
fn db_sink_lab() -> (Lab, std::sync::Arc<std::sync::atomic::AtomicU64>, fw_daemon::inventory::Inventory) {
    let base = common::demo_inventory();
    let mut lab = Lab::new();
    for n in ["web-1", "api-1", "db-1"] {
        lab.add(n, &base.get(n).unwrap().addresses);
    }
    let received = lab.serve_sink("db-1", 5432);
    let inv = lab.inventory(&base);
    let inv = fw_daemon::inventory::Inventory {
        containers: inv.containers.into_iter().filter(|c| c.netns.is_some()).collect(),
        ..Default::default()
    };
    (lab, received, inv)
}

/// A policy change rewrites the floor in place: the reply tuples of live inbound flows
/// survive it (a replacement would lose those recorded a moment before the commit), and
/// those the new policy denies are deleted, so that flow stops at the floor too.
#[test]
#[ignore = "needs root"]
fn a_policy_change_keeps_live_reply_tuples_and_revokes_denied_ones() {
    if !common::require(common::lab::available(), "root and iproute2") {
        return;
    }
    use fw_daemon::floor::enforcer::{Floors, Inputs, Want};
    use fw_daemon::floor::link::NsId;
    let (lab, received, inv) = db_sink_lab();
    let ports = demo_ports(&lab);
    let hub = NsId::of(&lab.hub_path()).unwrap();
    let want =
        || std::collections::BTreeMap::from([(hub, Want { path: lab.hub_path(), ports: ports.clone() })]);
    let mut floors = Floors::new(FloorOptions::default(), None, fw_daemon::kernel::real());
    let sync = |floors: &mut Floors, policy: &fw_daemon::rules::Policy| {
        let m = Membership::new(policy, &inv);
        let copts = CompileOptions::default();
        let inputs = Inputs { policy, m: &m, blocks: &Default::default(), copts: &copts };
        let r = floors.sync(want(), &inputs, None, None);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        r
    };
    let demo = common::demo_policy();
    sync(&mut floors, &demo);
    // A live stream api-1 -> db-1:5432: db-1's replies pass on the tuple its ingress recorded.
    let mut stream = lab.connect("api-1", SocketAddr::new(lab.addr("db-1"), 5432));
    use std::io::Write;
    let flows4 = || {
        let out = Command::new("ip")
            .args(["netns", "exec", lab.hub_ns(), "nft", "list", "set", "bridge", "fw_floor", "flows4"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let flowing = |stream: &mut std::net::TcpStream| {
        let before = received.load(std::sync::atomic::Ordering::SeqCst);
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        for _ in 0..20 {
            if stream.write_all(&[7u8; 4096]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        received.load(std::sync::atomic::Ordering::SeqCst) > before
    };
    assert!(flowing(&mut stream), "the stream flows through the floor");
    assert!(flows4().contains("5432"), "db-1's reply tuple is recorded:\n{}", flows4());
    // A new policy (public-web gone: the zone chains change, so not an element update) that
    // still allows api -> db: rewritten in place, the tuple and the stream stay.
    let mut changed = demo.clone();
    changed.rules.retain(|r| r.id != "public-web");
    let r = sync(&mut floors, &changed);
    assert_eq!(r.replaced.len(), 1, "a policy change rewrites the floor");
    assert!(flows4().contains("5432"), "the reply tuple survived the rewrite:\n{}", flows4());
    assert!(flowing(&mut stream), "the stream still flows");
    // A policy that denies api -> db: its tuple goes and the stream stops at the floor.
    let mut denied = changed.clone();
    denied.rules.retain(|r| r.id != "api-to-db");
    sync(&mut floors, &denied);
    assert!(!flows4().contains("5432"), "the revoked tuple is gone:\n{}", flows4());
    assert!(!flowing(&mut stream), "the revoked stream stopped");
}

/// A stream's mid-connection segments pass the floor on its verdict cache (one lookup, not
/// the chains), and every write to the floor empties that cache: a block on the stream's
/// destination, then an egress quarantine of its sender, each cut the cached stream at once;
/// lifting them lets it flow (and be cached) again. No table inside the containers.
#[test]
#[ignore = "needs root"]
fn a_cached_stream_is_cut_by_each_block_and_quarantine() {
    if !common::require(common::lab::available(), "root and iproute2") {
        return;
    }
    use fw_daemon::blocks::BlockList;
    use fw_daemon::floor::enforcer::{Floors, Inputs, Want};
    use fw_daemon::floor::link::NsId;
    use fw_proto::control::{BlockDirection, BlockTarget, Proto as P, Scope};
    use std::io::Write;
    let (lab, received, inv) = db_sink_lab();
    let policy = common::demo_policy();
    let zones: Vec<(String, String)> =
        inv.containers.iter().map(|c| (c.name.clone(), policy.zone_of(&c.identity()).name.clone())).collect();
    let ports = demo_ports(&lab);
    let hub = NsId::of(&lab.hub_path()).unwrap();
    let mut floors = Floors::new(FloorOptions::default(), None, fw_daemon::kernel::real());
    let m = Membership::new(&policy, &inv);
    let copts = CompileOptions::default();
    let zone_of = |c: &str| zones.iter().find(|(n, _)| n == c).map(|(_, z)| z.as_str());
    let everyone: std::collections::BTreeSet<String> = zones.iter().map(|(c, _)| c.clone()).collect();
    // As a block does: its sets first (nothing else compiled), then a whole sync, which
    // must find the floor already as `compile_floor` would make it.
    let mut sync = |blocks: &BlockList| {
        let r = floors.sync_blocks(&zone_of, blocks, &everyone);
        if let Some(r) = &r {
            assert!(r.failed.is_empty(), "{:?}", r.failed);
        }
        let want =
            std::collections::BTreeMap::from([(hub, Want { path: lab.hub_path(), ports: ports.clone() })]);
        let full = floors.sync(want, &Inputs { policy: &policy, m: &m, blocks, copts: &copts }, None, None);
        assert!(full.failed.is_empty(), "{:?}", full.failed);
        let fast = r.is_some_and(|r| !r.updated.is_empty());
        if fast {
            assert_eq!(full.unchanged, 1, "the block sets alone left the floor as compiled: {full:?}");
        }
        fast
    };
    let mut blocks = BlockList::default();
    sync(&blocks);
    let cached = |set: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", lab.hub_ns(), "nft", "list", "set", "bridge", "fw_floor", set])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("5432")
    };
    let mut stream = lab.connect("api-1", SocketAddr::new(lab.addr("db-1"), 5432));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(300)));
    let mut flowing = || {
        let before = received.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..20 {
            if stream.write_all(&[7u8; 4096]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        received.load(std::sync::atomic::Ordering::SeqCst) > before
    };
    assert!(flowing(), "the stream flows through the floor");
    assert!(cached("cache_out4") && cached("cache_in4"), "the stream's verdicts are cached both ways");

    let dst = BlockTarget::Destination {
        scope: Scope::Container("api-1".into()),
        net: format!("{}/32", lab.addr("db-1")).parse().unwrap(),
        proto: Some(P::Tcp),
        port: Some(5432),
    };
    let now = fw_daemon::clock::now_ms();
    let id = blocks.add(dst, None, None, "t".into(), Default::default(), now, &zones).unwrap().id;
    assert!(sync(&blocks), "the block was written as block sets alone");
    assert!(!cached("cache_out4") && !cached("cache_in4"), "the block emptied the caches");
    assert!(!flowing(), "the block cut the cached stream");
    blocks.remove(id).unwrap();
    sync(&blocks);
    assert!(flowing(), "the stream flows again once the block is lifted");
    assert!(cached("cache_out4"), "and is cached again");

    let q = BlockTarget::Quarantine { container: "api-1".into(), direction: BlockDirection::Egress };
    blocks.add(q, None, None, "t".into(), Default::default(), fw_daemon::clock::now_ms(), &zones).unwrap();
    assert!(sync(&blocks), "the quarantine was written as block sets alone");
    assert!(!flowing(), "the egress quarantine cut the cached stream api-1 opened");
}
