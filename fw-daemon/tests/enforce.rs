//! Enforcement with real packets between real namespaces: the demo policy programmed over
//! netlink into a lab, then every (source, destination, port) cell probed and compared with
//! `explain`. Privileged: runs as root, required under CI=true.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::{nft_in, tcp_probe, udp_probe, Lab, Probe};
use fw_daemon::compile::{compile_all, CompileOptions};
use fw_daemon::inventory::Inventory;
use fw_daemon::kernel::Tables;
use fw_daemon::nft::{Nft, SetChange};
use fw_daemon::rules::Policy;
use fw_daemon::ruleset::eval::Proto;
use fw_daemon::ruleset::ir::{SetElem, SetKey, Verdict as IrVerdict};
use fw_daemon::tools::{apply::apply, explain::explain, plan::plan};
use fw_proto::Verdict;

const PARTNER: &str = "partner-1";
const TCP_PORTS: &[u16] = &[22, 53, 80, 443, 5432, 8080, 8443, 9005];
const UDP_PORTS: &[u16] = &[53, 5432, 9005];
const WAIT: Duration = Duration::from_millis(250);

fn privileged() -> bool {
    common::require(common::lab::available(), "root with iproute2 (network namespaces)")
}

/// The demo inventory's containers plus an external partner host, programmed with the demo
/// rules, with listeners on every probed port.
fn demo_lab() -> (Lab, Policy, Inventory) {
    let policy = common::demo_policy();
    let base = common::demo_inventory();
    let mut lab = Lab::new();
    for c in &base.containers {
        lab.add(&c.name, &c.addresses);
    }
    lab.add(PARTNER, &["10.77.9.10".parse().unwrap(), "fd77:9::10".parse().unwrap()]);
    let inv = lab.inventory(&base);
    for o in apply(&policy, &inv, None, &CompileOptions::default()) {
        if let Err(e) = o.result {
            panic!("apply {}: {e}", o.container);
        }
    }
    let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &names {
        lab.serve_tcp(n, TCP_PORTS);
        lab.serve_udp(n, UDP_PORTS);
    }
    (lab, policy, inv)
}

#[test]
#[ignore = "needs root"]
fn reachability_matches_explain_for_every_cell() {
    if !privileged() {
        return;
    }
    let (lab, policy, inv) = demo_lab();
    let opts = CompileOptions::default();
    // One thread per source; within a source, probes are paced so the web zone's
    // new_conns_per_sec cap (50/s) never decides a cell: explain describes caps at rest.
    let mut handles = Vec::new();
    for src in &lab.nodes {
        let mut cells = Vec::new();
        for dst in lab.nodes.iter().filter(|d| d.name != src.name) {
            for (v6, family_ok) in [(false, true), (true, dst.name.starts_with("api") || dst.name == "db-1")]
            {
                if !family_ok {
                    continue;
                }
                let (Some(s), Some(d)) = (
                    src.addrs.iter().find(|a| a.is_ipv6() == v6),
                    dst.addrs.iter().find(|a| a.is_ipv6() == v6),
                ) else {
                    continue;
                };
                let ports: Vec<(Proto, u16)> = if v6 {
                    vec![(Proto::Tcp, 8080), (Proto::Tcp, 5432), (Proto::Udp, 53)]
                } else {
                    TCP_PORTS
                        .iter()
                        .map(|p| (Proto::Tcp, *p))
                        .chain(UDP_PORTS.iter().map(|p| (Proto::Udp, *p)))
                        .collect()
                };
                for (proto, port) in ports {
                    let e = explain(&policy, &inv, &s.to_string(), &d.to_string(), proto, Some(port), &opts)
                        .map_err(|f| f.lines())
                        .unwrap();
                    let inspected = [&e.egress, &e.ingress].into_iter().flatten().any(|x| x.inspected);
                    cells.push((
                        src.name.clone(),
                        dst.name.clone(),
                        *d,
                        proto,
                        port,
                        e.verdict,
                        e.rule.map(|r| r.id),
                        inspected,
                    ));
                }
            }
        }
        let path = src.path();
        handles.push(std::thread::spawn(move || {
            let mut mismatches = Vec::new();
            for (from, to, d, proto, port, verdict, rule, inspected) in cells {
                let dst = SocketAddr::new(d, port);
                let expect_pass = verdict != Verdict::Deny;
                if inspected && proto == Proto::Tcp && expect_pass {
                    // Flagged for inline inspection and no daemon here: the handshake passes
                    // (no payload), the server's first bytes wait on a queue nobody binds and,
                    // failing closed, drop.
                    let (connected, greeted) = connect_and_read(&path, dst, WAIT);
                    if !connected || greeted {
                        mismatches.push(format!("{from} -> {to} ({d}) tcp/{port}: inspected by {rule:?}: connected {connected}, server bytes through {greeted}"));
                    }
                    continue;
                }
                let got = match proto {
                    Proto::Tcp => tcp_probe(&path, dst, WAIT),
                    _ => udp_probe(&path, dst, WAIT),
                };
                if (got == Probe::Connected) != expect_pass {
                    mismatches.push(format!("{from} -> {to} ({d}) {proto:?}/{port}: explain says {verdict} by {rule:?}, probe {got:?}"));
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            mismatches
        }));
    }
    let mut mismatches = Vec::new();
    let mut n = 0;
    for h in handles {
        let m = h.join().expect("probe thread");
        mismatches.extend(m);
        n += 1;
    }
    assert_eq!(n, lab.nodes.len());
    assert!(
        mismatches.is_empty(),
        "{} cells disagree with explain:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Connects over TCP from inside `from`; whether that worked and whether the server's
/// greeting then arrived.
fn connect_and_read(from: &std::path::Path, dst: SocketAddr, timeout: Duration) -> (bool, bool) {
    use std::io::Read;
    fw_daemon::netns::run_in(from, move || match std::net::TcpStream::connect_timeout(&dst, timeout) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(timeout));
            let mut b = [0u8; 2];
            (true, s.read_exact(&mut b).is_ok())
        }
        Err(_) => (false, false),
    })
    .expect("enter netns")
}

#[test]
fn the_truth_table_has_both_outcomes() {
    // Guards the test above against a lab where everything passes or nothing does.
    let policy = common::demo_policy();
    let inv = common::demo_inventory();
    let opts = CompileOptions::default();
    let v =
        |f: &str, t: &str, p: u16| explain(&policy, &inv, f, t, Proto::Tcp, Some(p), &opts).unwrap().verdict;
    assert_eq!(v("web-1", "api-1", 8080), Verdict::Allow);
    assert_eq!(v("web-1", "db-1", 5432), Verdict::Deny);
    assert_eq!(v("batch-1", "web-1", 22), Verdict::Deny);
    // ... and an inspected cell, which the truth table probes for failing closed.
    let e = explain(&policy, &inv, "api-1", "10.77.9.10", Proto::Tcp, Some(443), &opts).unwrap();
    assert!(e.egress.is_some_and(|x| x.inspected && x.verdict == Verdict::Allow));
}

/// `nft list table inet fw` with counters zeroed and nft's line wrapping undone.
fn normalized_listing(node: &common::lab::Node) -> String {
    let text = nft_in(node, &["list", "table", "inet", "fw"]);
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let line = regex_lite_counter(line);
        // nft wraps long element lists after a comma; plan keeps them on one line.
        if out.ends_with(",\n") {
            out.truncate(out.len() - 1);
            out.push(' ');
            out.push_str(line.trim_start());
        } else {
            out.push_str(&line);
        }
        out.push('\n');
    }
    out
}

/// Replaces `counter packets N bytes M` with `counter`.
fn regex_lite_counter(line: &str) -> String {
    match line.find("counter packets ") {
        Some(i) => {
            let rest = &line[i + "counter packets ".len()..];
            let after: Vec<&str> = rest.splitn(4, ' ').collect();
            // after = [N, "bytes", M, rest...]
            let tail = after.get(3).map(|t| format!(" {t}")).unwrap_or_default();
            format!("{}counter{}", &line[..i], tail)
        }
        None => line.to_string(),
    }
}

#[test]
#[ignore = "needs root"]
fn nft_lists_back_exactly_the_plan() {
    if !privileged() {
        return;
    }
    let (lab, policy, inv) = demo_lab();
    for cp in plan(&policy, &inv, None, &CompileOptions::default()).map_err(|f| f.lines()).unwrap() {
        let node = lab.node(&cp.container);
        // The plan without its replace preamble ("table inet fw", "delete table inet fw").
        let planned: String = cp.script.lines().skip(2).map(|l| format!("{l}\n")).collect();
        let listed = normalized_listing(node);
        assert_eq!(listed, planned, "nft list differs from plan for {}", cp.container);
    }
}

#[test]
#[ignore = "needs root"]
fn a_rejected_batch_leaves_the_table_byte_identical() {
    if !privileged() {
        return;
    }
    let (lab, policy, inv) = demo_lab();
    let node = lab.node("web-1");
    // Handles (-a) show the very same objects survive; counters (left out by -s) may move
    // meanwhile, as the kernel's own IPv6 neighbour discovery passes the ruleset.
    let listing = ["-a", "-s", "list", "table", "inet", "fw"];
    let before = nft_in(node, &listing);
    let mut rs = compile_all(&policy, &inv, &CompileOptions::default())
        .into_iter()
        .find(|r| r.container == "web-1")
        .unwrap();
    // The kernel refuses a jump to a chain that does not exist: the whole batch must abort.
    let egress = rs.chains.iter_mut().find(|c| c.name == "egress").unwrap();
    egress.rules.insert(
        3,
        fw_daemon::ruleset::ir::Rule {
            verdict: Some(IrVerdict::Jump("nosuchchain".into())),
            ..Default::default()
        },
    );
    let mut nft = Nft::open(&node.path(), "web-1").unwrap();
    let err = nft.apply(&rs).unwrap_err().to_string();
    assert!(err.starts_with("web-1: the kernel rejected rule 4 of chain egress"), "{err}");
    assert!(err.contains("errno 2"), "{err}");
    let after = nft_in(node, &listing);
    assert!(before.contains("# handle"), "{before}");
    assert_eq!(before, after);
}

#[test]
#[ignore = "needs root"]
fn counters_are_read_back_per_rule_id() {
    if !privileged() {
        return;
    }
    let (lab, _policy, _inv) = demo_lab();
    let web = lab.node("web-1");
    let api = lab.node("api-1").addrs[0];
    let db = lab.node("db-1").addrs[0];
    for _ in 0..3 {
        assert_eq!(tcp_probe(&web.path(), SocketAddr::new(api, 8080), WAIT), Probe::Connected);
    }
    assert_eq!(tcp_probe(&web.path(), SocketAddr::new(db, 5432), WAIT), Probe::TimedOut);
    let rules = Nft::open(&web.path(), "web-1").unwrap().list_rules().unwrap();
    let count = |comment: &str| -> u64 {
        rules
            .iter()
            .filter(|r| r.chain == "egress" && r.comment.as_deref() == Some(comment))
            .filter_map(|r| r.packets)
            .sum()
    };
    assert_eq!(count("policy:web-to-api"), 3, "{rules:#?}");
    // A dropped SYN is retransmitted, so at least one.
    assert!(count("policy:no-web-to-db") >= 1, "{rules:#?}");
    assert_eq!(count("policy:api-to-db"), 0);
}

#[test]
#[ignore = "needs root"]
fn zone_membership_changes_are_set_updates() {
    if !privileged() {
        return;
    }
    let (lab, _policy, _inv) = demo_lab();
    let api = lab.node("api-1");
    let db = lab.node("db-1").addrs[0];
    let to_db = SocketAddr::new(db, 5432);
    assert_eq!(tcp_probe(&api.path(), to_db, WAIT), Probe::Connected);
    // db-1 leaves zone db as far as api-1 is concerned: one set element, no rule change.
    let mut nft = Nft::open(&api.path(), "api-1").unwrap();
    let handles_before: Vec<u64> = nft.list_rules().unwrap().iter().map(|r| r.handle).collect();
    let change = |add: bool| SetChange {
        set: "z_db_4".into(),
        key: SetKey::Ipv4,
        add: if add { vec![SetElem::Addr(db)] } else { vec![] },
        remove: if add { vec![] } else { vec![SetElem::Addr(db)] },
        expires: Default::default(),
        jumps: Default::default(),
        flush: false,
    };
    nft.update_sets(&[change(false)]).unwrap();
    assert_eq!(tcp_probe(&api.path(), to_db, WAIT), Probe::TimedOut);
    let handles_after: Vec<u64> = nft.list_rules().unwrap().iter().map(|r| r.handle).collect();
    assert_eq!(handles_before, handles_after, "rules were replaced, not updated");
    // And joins again.
    nft.update_sets(&[change(true)]).unwrap();
    assert_eq!(tcp_probe(&api.path(), to_db, WAIT), Probe::Connected);
    // Removing an element that is already gone (a block the kernel expired) is not an
    // error: removals are idempotent, and the rest of the batch still applies.
    nft.update_sets(&[SetChange {
        remove: vec![SetElem::Addr("10.77.0.99".parse().unwrap())],
        ..change(false)
    }])
    .unwrap();
    assert_eq!(tcp_probe(&api.path(), to_db, WAIT), Probe::Connected);
}

/// Operator blocks are range elements in `block_out*` / `block_in*`, checked before the
/// established shortcut: a destination block with a port cuts only that port, a flow block
/// only that flow, a TTL lapses in the kernel with nobody acting, and blocks survive a
/// whole-table replacement (they are part of the compiled table).
#[test]
#[ignore = "needs root"]
fn blocks_are_kernel_range_elements_with_timeouts() {
    use fw_daemon::blocks::BlockList;
    use fw_daemon::compile::{compile_with_blocks, Membership};
    use fw_proto::control::{BlockTarget, Proto as P, Scope};
    if !privileged() {
        return;
    }
    let (lab, policy, inv) = demo_lab();
    let api = inv.get("api-1").unwrap().clone();
    let db = lab.node("db-1").addrs[0];
    let api_ns = lab.node("api-1").path();
    let who: Vec<(String, String)> = vec![("api-1".into(), "api".into())];
    let m = Membership::new(&policy, &inv);
    let opts = CompileOptions::default();
    let mut nft = Nft::open(&api_ns, "api-1").unwrap();
    let mut last = compile_with_blocks(&policy, &m, &api, &opts, &BlockList::default());
    let program = |nft: &mut Nft, last: &mut fw_daemon::ruleset::Ruleset, blocks: &BlockList| {
        let next = compile_with_blocks(&policy, &m, &api, &opts, blocks);
        let replaced = nft.converge(Some(last), &next).unwrap();
        assert!(!replaced, "a block change must be a set-element update");
        *last = next;
    };
    let to_db = SocketAddr::new(db, 5432);
    assert_eq!(tcp_probe(&api_ns, to_db, WAIT), Probe::Connected);

    // db-1:5432 over TCP only, for api-1.
    let mut blocks = BlockList::default();
    let target = BlockTarget::Destination {
        scope: Scope::Container("api-1".into()),
        net: ipnet::IpNet::from(db),
        proto: Some(P::Tcp),
        port: Some(5432),
    };
    let id = blocks.add(target, None, None, "test".into(), Default::default(), 0, &who).unwrap().id;
    program(&mut nft, &mut last, &blocks);
    assert_eq!(tcp_probe(&api_ns, to_db, WAIT), Probe::TimedOut);
    let listed = nft_in(lab.node("api-1"), &["list", "set", "inet", "fw", "block_out4"]);
    assert!(listed.contains(&format!("0.0.0.0/0 . {db} . tcp . 0-65535 . 5432")), "{listed}");
    blocks.remove(id).unwrap();
    program(&mut nft, &mut last, &blocks);
    assert_eq!(tcp_probe(&api_ns, to_db, WAIT), Probe::Connected);

    // A TTL: the kernel drops the element on time without anyone removing it.
    let target =
        BlockTarget::Destination { scope: Scope::All, net: ipnet::IpNet::from(db), proto: None, port: None };
    let now = fw_daemon::clock::now_ms();
    blocks
        .add(
            target,
            Some(fw_daemon::blocks::Ttl::Secs(2)),
            None,
            "test".into(),
            Default::default(),
            now,
            &who,
        )
        .unwrap();
    program(&mut nft, &mut last, &blocks);
    assert_eq!(tcp_probe(&api_ns, to_db, WAIT), Probe::TimedOut);
    // It survives a whole-table replacement, with its remaining time.
    nft.apply(&last).unwrap();
    assert_eq!(tcp_probe(&api_ns, to_db, WAIT), Probe::TimedOut);
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(tcp_probe(&api_ns, to_db, WAIT), Probe::Connected, "the kernel expired the block");
    // The daemon later drops it from its list: removing the expired element is no error.
    assert_eq!(blocks.expire(now + 3000).len(), 1);
    program(&mut nft, &mut last, &blocks);
    assert_eq!(tcp_probe(&api_ns, to_db, WAIT), Probe::Connected);
}

#[test]
#[ignore = "needs root"]
fn flush_removes_the_table() {
    if !privileged() {
        return;
    }
    let (lab, _policy, inv) = demo_lab();
    let out = fw_daemon::tools::apply::flush(&inv, Some("db-1"));
    assert!(out[0].result.is_ok());
    let listed = nft_in(lab.node("db-1"), &["list", "tables"]);
    assert!(!listed.contains("inet fw"), "{listed}");
    // Flushing again is not an error.
    assert!(fw_daemon::tools::apply::flush(&inv, Some("db-1"))[0].result.is_ok());
}

/// Not a test on its own: `rules_survive_kill_9` runs this in a child process that programs
/// a namespace, says so, and waits to be killed.
#[test]
#[ignore]
fn hold_helper() {
    let Ok(ns) = std::env::var("FW_HOLD_NETNS") else { return };
    let policy = common::demo_policy();
    let mut inv = common::demo_inventory();
    for c in &mut inv.containers {
        c.netns = (c.name == "web-1").then(|| ns.clone().into());
    }
    let rs = compile_all(&policy, &inv, &CompileOptions::default())
        .into_iter()
        .find(|r| r.container == "web-1")
        .unwrap();
    let mut nft = Nft::open(std::path::Path::new(&ns), "web-1").unwrap();
    nft.apply(&rs).unwrap();
    println!("APPLIED");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
#[ignore = "needs root"]
fn rules_survive_kill_9_of_the_process_that_applied_them() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let base = common::demo_inventory();
    for name in ["web-1", "db-1", "api-1"] {
        lab.add(name, &base.get(name).unwrap().addresses);
    }
    lab.serve_tcp("db-1", &[5432]);
    lab.serve_tcp("api-1", &[8080]);
    let web = lab.node("web-1");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hold_helper", "--ignored", "--nocapture", "--test-threads=1"])
        .env("FW_HOLD_NETNS", web.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("APPLIED") {
        use std::io::Read;
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "helper exited early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the helper was killed");
    // Still enforced: denied stays denied, allowed stays allowed.
    let db: IpAddr = lab.node("db-1").addrs[0];
    let api: IpAddr = lab.node("api-1").addrs[0];
    let web = lab.node("web-1");
    assert_eq!(tcp_probe(&web.path(), SocketAddr::new(db, 5432), WAIT), Probe::TimedOut);
    assert_eq!(tcp_probe(&web.path(), SocketAddr::new(api, 8080), WAIT), Probe::Connected);
    assert!(nft_in(web, &["list", "table", "inet", "fw"]).contains("policy:no-web-to-db"));
}

#[test]
#[ignore = "needs root"]
fn a_container_joining_updates_peers_without_replacing_their_tables() {
    if !privileged() {
        return;
    }
    let (mut lab, policy, mut inv) = demo_lab();
    let opts = CompileOptions::default();
    let web1 = |inv: &Inventory| {
        compile_all(&policy, inv, &opts).into_iter().find(|r| r.container == "web-1").unwrap()
    };
    let before = web1(&inv);
    // api-3 starts and is programmed; web-1 does not know it yet.
    let addr: IpAddr = "10.77.0.23".parse().unwrap();
    lab.add("api-3", &[addr]);
    inv.containers.push(fw_daemon::inventory::Container {
        name: "api-3".into(),
        netns: Some(lab.node("api-3").path()),
        image: "fw/api:2.3".into(),
        labels: vec![("tier".into(), "api".into())],
        addresses: vec![addr],
        link: None,
        kube: None,
    });
    let out = apply(&policy, &inv, Some("api-3"), &opts);
    assert!(out[0].result.is_ok());
    lab.serve_tcp("api-3", &[8080]);
    let web = lab.node("web-1").path();
    assert_eq!(tcp_probe(&web, SocketAddr::new(addr, 8080), WAIT), Probe::TimedOut);
    let mut nft = Nft::open(&web, "web-1").unwrap();
    let handles: Vec<u64> = nft.list_rules().unwrap().iter().map(|r| r.handle).collect();
    let replaced = nft.converge(Some(&before), &web1(&inv)).unwrap();
    assert!(!replaced, "a membership change must be a set update");
    assert_eq!(handles, nft.list_rules().unwrap().iter().map(|r| r.handle).collect::<Vec<_>>());
    assert_eq!(tcp_probe(&web, SocketAddr::new(addr, 8080), WAIT), Probe::Connected);
}
