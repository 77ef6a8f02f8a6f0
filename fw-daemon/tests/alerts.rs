//! Alerts and the richer status, end to end against `fw-daemon run` on a namespace lab: a
//! refused reload (the good policy keeps enforcing), the fix, a quarantine and its lifting,
//! someone deleting `table inet fw` inside a container's namespace, and a real connection
//! flood over a zone's new-connection rate cap. Each is seen as it happens on a subscription
//! that asked for alerts (and never on one that did not), and afterwards through `alerts`
//! with `since_ms` and `limit`. Status shows the quarantined container's caps, usage, blocks.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::client::Client;
use common::daemon::{eventually, Daemon};
use common::lab::{nft_in, tcp_probe, Lab, Probe};
use fw_daemon::netns::run_in;
use fw_proto::control::*;

const WAIT: Duration = Duration::from_millis(400);

/// A subscription's alerts as they arrive; flow events are skipped.
struct Stream {
    c: Client,
    seen: Vec<Alert>,
}

impl Stream {
    fn open(socket: &Path, alerts: bool) -> Stream {
        let mut c = Client::connect(socket);
        // A filter no row matches: after the first (empty, full) view, only alerts come.
        let filter = FlowFilter::parse("container=nobody").unwrap();
        let r = c.call(Op::Subscribe { filter, interval_ms: Some(200), alerts });
        assert!(matches!(r, Ok(Answer::Subscribed { .. })), "{r:?}");
        Stream { c, seen: Vec::new() }
    }

    /// Waits for an alert `want` accepts; every alert read is kept in `seen`.
    fn wait(&mut self, what: &str, d: &Daemon, want: impl Fn(&Alert) -> bool) -> Alert {
        let until = Instant::now() + Duration::from_secs(20);
        if let Some(a) = self.seen.iter().find(|a| want(a)) {
            return a.clone();
        }
        loop {
            let left = until.checked_duration_since(Instant::now());
            let Some(left) = left else { panic!("no {what} alert; saw {:#?}\n{}", self.seen, d.log()) };
            match self.c.try_read(left.min(Duration::from_millis(500))) {
                Some(ServerMsg::Event { event: Event::Alert(a), .. }) => {
                    self.seen.push(a.clone());
                    if want(&a) {
                        return a;
                    }
                }
                Some(ServerMsg::Event { event: Event::Flows { .. }, .. }) | None => {}
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Everything that arrives within `d`.
    fn drain(&mut self, d: Duration) -> Vec<ServerMsg> {
        let until = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Some(m) = self.c.try_read(left) {
                if let ServerMsg::Event { event: Event::Alert(a), .. } = &m {
                    self.seen.push(a.clone());
                }
                out.push(m);
            }
        }
        out
    }
}

/// Entries `conntrack -L` lists in a node's namespace.
fn conntrack_count(lab: &Lab, node: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.node(node).ns, "conntrack", "-L"])
        .output()
        .expect("conntrack");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
}

/// Writes a rule file whole: prepared beside the directory, then renamed in, so the watcher
/// never reads half of it.
fn put_rule_file(d: &Path, name: &str, text: &str) {
    let tmp = d.join(format!("{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, d.join("rules").join(name)).unwrap();
}

fn container<'a>(s: &'a StatusInfo, name: &str) -> &'a ContainerInfo {
    s.containers.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} in {s:#?}"))
}

#[test]
#[ignore = "needs root"]
fn alerts_are_raised_streamed_and_kept() {
    if !common::require(common::lab::available(), "root with iproute2 (network namespaces)") {
        return;
    }
    let (mut lab, d) = common::demo_lab("alerts", "e2e");
    lab.serve_tcp("api-1", &[8080, 9001]);
    lab.serve_tcp_hold("api-1", 9000);
    lab.serve_tcp_hold("db-1", 5432);
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    let mut c = Client::connect(&daemon.socket);
    eventually("containers programmed", &daemon, || {
        let s = c.status();
        (s.containers.len() == 3 && s.containers.iter().all(|c| c.programmed)).then_some(())
    });
    let mut sub = Stream::open(&daemon.socket, true);
    let mut plain = Stream::open(&daemon.socket, false);
    let api = lab.addr("api-1");
    let db = lab.addr("db-1");
    let web_ns = lab.node("web-1").path();

    // Status: where the policy came from, and each container's caps.
    let s = c.status();
    let good_hash = s.policy_hash.clone();
    assert_eq!(s.rules_dir.as_deref(), Some(d.join("rules").display().to_string().as_str()));
    assert_eq!(s.rule_files, ["00-defaults.toml", "10-zones.toml", "20-policies.toml"]);
    let first_reload_at = s.last_reload_at_ms.expect("the start-up load is a reload attempt");
    // The policy in force, for the console's Rules screen: policies with their sources, the
    // default last.
    let web_to_api = s.policies.iter().find(|p| p.id == "web-to-api").expect("web-to-api listed");
    assert!(web_to_api.source.as_deref().is_some_and(|x| x.contains("20-policies.toml:")), "{web_to_api:?}");
    assert_eq!(s.policies.last().map(|p| p.id.as_str()), Some("default"));
    assert!(s.zones.iter().any(|z| z.name == "web" && z.caps.egress_written.as_deref() == Some("80mbit")));
    let web = container(&s, "web-1");
    assert_eq!(
        web.caps,
        CapsInfo {
            max_conns: Some(200),
            new_conns_per_sec: Some(50),
            egress_bytes_per_sec: Some(10_000_000),
            egress_written: Some("80mbit".into()),
        }
    );
    assert_eq!(container(&s, "api-1").caps, CapsInfo { max_conns: Some(500), ..Default::default() });
    assert_eq!(container(&s, "db-1").caps, CapsInfo::default());
    assert!(!web.quarantined && web.blocks.is_empty());

    // 1. A bad rule file: refused with its position, the good policy keeps enforcing.
    std::thread::sleep(Duration::from_millis(1100)); // last_reload_at has second resolution
    put_rule_file(
        &d,
        "30-extra.toml",
        "[[policy]]\nid = \"extra\"\nfrom = \"web\"\nto = \"nowhere\"\naction = \"allow\"\n",
    );
    let r = c.call(Op::Reload);
    let Ok(Answer::Reloaded { policy_hash, rejected }) = r else { panic!("{r:?}") };
    assert_eq!(policy_hash, good_hash);
    assert!(!rejected.is_empty());
    let failed = sub.wait("reload-failed", &daemon, |a| a.kind == AlertKind::ReloadFailed);
    assert!(failed.message.contains("30-extra.toml:4:"), "the first error's path:line:col: {failed:?}");
    assert!(failed.message.contains(&good_hash) && failed.message.contains("error(s)"), "{failed:?}");
    assert_eq!(tcp_probe(&web_ns, SocketAddr::new(api, 8080), WAIT), Probe::Connected);
    let s = c.status();
    assert_eq!((s.policy_hash.as_str(), s.rule_files.len()), (good_hash.as_str(), 3));
    assert!(s.last_reload_at_ms.unwrap() > first_reload_at, "{s:?}");

    // 2. Fixed (and SIGHUP): a reload alert naming the new policy, which status then shows.
    put_rule_file(
        &d,
        "30-extra.toml",
        "[[policy]]\nid = \"extra\"\nfrom = \"web\"\nto = \"api\"\nproto = \"udp\"\nports = 5000\naction = \"allow\"\n",
    );
    // SIGHUP this time (the watcher may be first: one alert either way).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid() as i32), nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    let reloaded = sub.wait("reload", &daemon, |a| a.kind == AlertKind::Reload);
    let s = c.status();
    assert_ne!(s.policy_hash, good_hash);
    assert!(reloaded.message.contains(&s.policy_hash), "{reloaded:?} vs {}", s.policy_hash);
    assert_eq!(s.rule_files.last().map(String::as_str), Some("30-extra.toml"));
    assert!(s.last_reload_errors.is_empty());

    // 3. Usage, then a quarantine: blocked alert, status says so, its flows are gone.
    let _api_db = lab.connect("api-1", SocketAddr::new(db, 5432));
    let held: Vec<TcpStream> = (0..2).map(|_| lab.connect("web-1", SocketAddr::new(api, 9000))).collect();
    eventually("web-1's and api-1's open flows counted", &daemon, || {
        let s = c.status();
        let (w, a) = (container(&s, "web-1").open_flows, container(&s, "api-1").open_flows);
        // What each opened, the usage max_conns caps: web-1 its two, api-1 not the two it
        // accepted from web-1.
        let (wo, ao) = (container(&s, "web-1").originated_conns, container(&s, "api-1").originated_conns);
        let counted = wo.is_some_and(|n| n >= 2) && ao.is_some_and(|n| n >= 1 && n + 2 <= a);
        // api-1 has its own flow to db-1 and the two from web-1; the kernel agrees.
        (w >= 2 && a >= 3 && a == conntrack_count(&lab, "api-1") && counted).then_some(())
    });
    let q = BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Egress };
    let r =
        c.call(Op::Block { target: q, ttl_secs: Some(600), ttl_ms: None, reason: Some("alert test".into()) });
    let Ok(Answer::Blocked { block }) = r else { panic!("{r:?}") };
    let blocked = sub.wait("blocked", &daemon, |a| a.kind == AlertKind::Blocked);
    assert_eq!(blocked.container.as_deref(), Some("web-1"));
    for part in ["quarantine web-1", "for 600 s", "alert test", &format!("block {}", block.id)] {
        assert!(blocked.message.contains(part), "{part:?} in {blocked:?}");
    }
    let s = eventually("web-1's flows cut", &daemon, || {
        let s = c.status();
        (container(&s, "web-1").open_flows == 0).then_some(s)
    });
    let web = container(&s, "web-1");
    assert!(web.quarantined && web.programmed, "{web:?}");
    assert_eq!(web.blocks, vec![block.id]);
    assert_eq!(web.caps.max_conns, Some(200));
    let api_info = container(&s, "api-1");
    assert!(!api_info.quarantined && api_info.blocks.is_empty() && api_info.open_flows >= 1, "{api_info:?}");
    assert_eq!(s.rule_files.len(), 4);
    assert_eq!(tcp_probe(&web_ns, SocketAddr::new(api, 8080), WAIT), Probe::TimedOut);
    drop(held);
    assert!(matches!(c.call(Op::Unblock { block: block.id }), Ok(Answer::Unblocked { .. })));
    let unblocked = sub.wait("unblocked", &daemon, |a| a.kind == AlertKind::Unblocked);
    assert_eq!(unblocked.container.as_deref(), Some("web-1"));
    assert!(unblocked.message.contains(&format!("block {}", block.id)), "{unblocked:?}");
    let s = c.status();
    assert!(!container(&s, "web-1").quarantined && container(&s, "web-1").blocks.is_empty());

    // 4. Someone deletes fw's table inside web-1's namespace: put back, and said so.
    nft_in(lab.node("web-1"), &["delete", "table", "inet", "fw"]);
    let tamper = sub.wait("tamper", &daemon, |a| a.kind == AlertKind::Tamper);
    assert_eq!(tamper.container.as_deref(), Some("web-1"));
    eventually("the table restored", &daemon, || {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.node("web-1").ns, "nft", "list", "table", "inet", "fw"])
            .output()
            .unwrap();
        out.status.success().then_some(())
    });
    assert_eq!(tcp_probe(&web_ns, SocketAddr::new(db, 5432), WAIT), Probe::TimedOut, "enforcing again");
    // Changed rather than deleted: an accept-all slipped in front of the egress chain.
    nft_in(lab.node("web-1"), &["insert", "rule", "inet", "fw", "egress", "accept"]);
    let changed = sub.wait("a second tamper", &daemon, |a| a.kind == AlertKind::Tamper && a.id != tamper.id);
    assert_eq!(changed.container.as_deref(), Some("web-1"));
    eventually("the accept-all gone", &daemon, || {
        (tcp_probe(&web_ns, SocketAddr::new(db, 5432), WAIT) == Probe::TimedOut).then_some(())
    });

    // 5. A connection flood over web's new_conns_per_sec cap (50/s): one alert, not hundreds.
    let dst = SocketAddr::new(api, 9001);
    let refused = run_in(&web_ns, move || {
        (0..300)
            .filter(|_| {
                TcpStream::connect_timeout(&dst, Duration::from_millis(300))
                    .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
            })
            .count()
    })
    .unwrap();
    assert!(refused > 0, "the cap refused some of 300 rapid connections");
    let cap = sub.wait("cap-hit", &daemon, |a| a.kind == AlertKind::CapHit);
    assert_eq!(cap.container.as_deref(), Some("web-1"));
    let rule = cap.rule.as_ref().expect("the cap rule");
    assert_eq!((rule.kind, rule.id.as_str()), (fw_proto::RuleKind::Cap, "web:new_conns_per_sec"));
    assert!(cap.message.contains("new_conns_per_sec"), "{cap:?}");
    // A second flood inside the window: counted, not alerted; the count comes after it.
    run_in(&web_ns, move || {
        for _ in 0..200 {
            let _ = TcpStream::connect_timeout(&dst, Duration::from_millis(300));
        }
    })
    .unwrap();
    sub.drain(Duration::from_secs(2));
    let same_cap = |a: &Alert| a.kind == AlertKind::CapHit && a.rule.as_ref() == cap.rule.as_ref();
    let caps_now = sub.seen.iter().filter(|a| same_cap(a)).count();
    assert_eq!(caps_now, 1, "one cap-hit alert per window: {:#?}", sub.seen);
    let more = sub.wait("the window's count", &daemon, |a| {
        a.kind == AlertKind::CapHit && a.id != cap.id && a.rule.as_ref().map(|r| &r.id) == Some(&rule.id)
    });
    assert!(more.message.contains("more logged hit"), "{more:?}");
    assert!(more.time_ms - cap.time_ms >= 9_000, "{cap:?} then {more:?}");

    // The kept list: everything above, in order; since_ms and limit select from it.
    let all = c.alerts(None, None);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id && w[0].time_ms <= w[1].time_ms), "{all:#?}");
    let kinds: Vec<AlertKind> = all.iter().map(|a| a.kind).collect();
    let order = [
        AlertKind::ReloadFailed,
        AlertKind::Reload,
        AlertKind::Blocked,
        AlertKind::Unblocked,
        AlertKind::Tamper,
        AlertKind::CapHit,
    ];
    let mut pos = kinds.iter();
    for k in order {
        assert!(pos.any(|x| *x == k), "{k} in order in {kinds:?}");
    }
    // The stream saw exactly what was kept.
    let streamed: Vec<u64> = sub.seen.iter().map(|a| a.id).collect();
    assert_eq!(streamed, all.iter().map(|a| a.id).collect::<Vec<_>>());
    let since = c.alerts(Some(blocked.time_ms), None);
    assert!(since.iter().all(|a| a.time_ms >= blocked.time_ms) && since.iter().any(|a| a.id == blocked.id));
    assert!(!since.iter().any(|a| a.id == failed.id), "{since:#?}");
    let last2 = c.alerts(None, Some(2));
    assert_eq!(last2, all[all.len() - 2..].to_vec());
    assert!(c.alerts(Some(i64::MAX), None).is_empty());

    // A subscription that did not ask for alerts never got one.
    plain.drain(Duration::from_millis(300));
    assert!(plain.seen.is_empty(), "{:#?}", plain.seen);
    assert!(daemon.log().lines().all(|l| !l.contains("panicked")), "{}", daemon.log());
}

/// Starting on bad files falls back to the last good copy: that is an alert too (kept for
/// whoever connects later), and status says which files are enforced.
#[test]
#[ignore = "needs root"]
fn a_start_on_refused_files_is_kept_as_an_alert() {
    if !common::require(common::lab::available(), "root with iproute2 (network namespaces)") {
        return;
    }
    let (mut lab, d) = common::demo_lab("alerts", "fallback");
    lab.serve_tcp("api-1", &[8080]);
    let mut daemon = Daemon::run_in_dir(&d, "1", &[]);
    let mut c = Client::connect(&daemon.socket);
    let good = eventually("containers programmed", &daemon, || {
        let s = c.status();
        (s.containers.len() == 3 && s.containers.iter().all(|c| c.programmed)).then_some(s.policy_hash)
    });
    assert!(c.alerts(None, None).is_empty(), "a good start raises nothing");
    drop(c);
    assert!(daemon.terminate().success());
    put_rule_file(
        &d,
        "30-extra.toml",
        "[[policy]]\nid = \"extra\"\nfrom = \"web\"\nto = \"nowhere\"\naction = \"allow\"\n",
    );
    let daemon = Daemon::run_in_dir(&d, "2", &[]);
    let mut c = Client::connect(&daemon.socket);
    let alerts = c.alerts(None, None);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].kind, AlertKind::ReloadFailed);
    assert!(
        alerts[0].message.contains("30-extra.toml:4:") && alerts[0].message.contains(&good),
        "{alerts:?}"
    );
    let s = c.status();
    assert_eq!(s.policy_hash, good);
    assert!(s.last_reload_errors.iter().any(|e| e.contains("unknown zone")), "{s:?}");
    assert!(s.last_reload_at_ms.is_some());
    // The enforced files are the last good copies, named where they are.
    assert_eq!(s.rule_files.len(), 3, "{:?}", s.rule_files);
    assert!(
        s.rule_files.iter().all(|f| f.starts_with(&d.join("state").display().to_string())),
        "{:?}",
        s.rule_files
    );
    assert!(s.rule_files[0].ends_with("00-defaults.toml"));
    eventually("enforcing the last good policy", &daemon, || {
        (tcp_probe(&lab.node("web-1").path(), SocketAddr::new(lab.addr("api-1"), 8080), WAIT)
            == Probe::Connected)
            .then_some(())
    });
}
