//! The control socket end to end, against `fw-daemon run` on a namespace lab: live flows
//! with counters that agree with `conntrack -L` and the rule that decided them, a denied
//! attempt attributed to its deny rule, blocks that cut a running stream and an idle
//! established connection, a TTL that lapses, blocks that survive a restart, roles from
//! real group membership (a viewer cannot block, a non-member is refused), hostile input,
//! and the audit trail. Real packets and real credentials decide every check.

mod common;

use fw_proto::control::{AuditOp, AuditResult};
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::client::Client;
use common::daemon::{eventually, Daemon};
use common::lab::{tcp_probe, Lab, Probe};
use fw_proto::control::*;

const WAIT: Duration = Duration::from_millis(400);

/// The orig-direction byte count `conntrack -L` shows for a TCP flow to `dport` from `sport`.
fn conntrack_bytes(lab: &Lab, node: &str, sport: u16, dport: u16) -> Option<u64> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.node(node).ns,
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--sport",
            &sport.to_string(),
            "--dport",
            &dport.to_string(),
        ])
        .output()
        .expect("conntrack");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    // The first bytes= is the original direction.
    line.split_whitespace().find_map(|w| w.strip_prefix("bytes=")).and_then(|b| b.parse().ok())
}

#[test]
#[ignore = "needs root"]
fn flows_blocks_and_audit_end_to_end() {
    if !common::require(common::lab::available(), "root with iproute2 (network namespaces)") {
        return;
    }
    let (mut lab, d) = common::demo_lab("control", "e2e");
    let sink = lab.serve_sink("api-1", 8080);
    lab.serve_tcp_hold("api-1", 9000);
    lab.serve_tcp("api-1", &[9001, 9002]);
    lab.serve_tcp("db-1", &[5432]);
    let mut daemon = Daemon::run_in_dir(&d, "1", &[]);
    let mut c = Client::connect(&daemon.socket);
    eventually("containers programmed", &daemon, || match c.call(Op::Status) {
        Ok(Answer::Status(s)) if s.containers.iter().all(|c| c.programmed) && s.containers.len() == 3 => {
            Some(())
        }
        _ => None,
    });
    let api = lab.addr("api-1");
    let db = lab.addr("db-1");

    // An allowed flow with known bytes: counters agree with conntrack, attributed to web-to-api.
    let mut s = lab.connect("web-1", SocketAddr::new(api, 8080));
    let sport = s.local_addr().unwrap().port();
    s.write_all(&[7u8; 10_000]).unwrap();
    let row = eventually("the web-1 -> api-1 flow with its bytes", &daemon, || {
        c.flows(&format!("container=web-1 port={sport}")).into_iter().find(|r| r.bytes_out >= 10_000)
    });
    assert_eq!((row.direction, row.proto, row.dst, row.dport), (Direction::Egress, Proto::Tcp, api, 8080));
    assert_eq!((row.peer.as_deref(), row.peer_zone.as_deref()), (Some("api-1"), Some("api")));
    assert_eq!(row.verdict, FlowVerdict::Allowed);
    assert_eq!(row.rule.as_ref().map(|r| r.id.as_str()), Some("web-to-api"), "{row:?}");
    assert!(row
        .rule
        .as_ref()
        .and_then(|r| r.source.as_deref())
        .is_some_and(|s| s.contains("20-policies.toml:")));
    let ct = conntrack_bytes(&lab, "web-1", sport, 8080).expect("conntrack -L shows the flow");
    // Both read the same kernel counters; they can differ by packets in flight (ACKs).
    assert!(row.bytes_out.abs_diff(ct) <= 200, "flow table {} vs conntrack {ct}", row.bytes_out);

    // A denied attempt shows its deny rule, aggregated.
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(db, 5432), WAIT), Probe::TimedOut);
    let denied = eventually("the denied web-1 -> db-1 attempt", &daemon, || {
        c.flows("container=web-1 verdict=denied port=5432").into_iter().next()
    });
    assert_eq!(denied.rule.as_ref().map(|r| r.id.as_str()), Some("no-web-to-db"), "{denied:?}");
    assert!(denied.count >= 1);

    // A subscription: a full view first (filtered server-side), then deltas as rows change.
    let mut sub = Client::connect(&daemon.socket);
    let filter = FlowFilter::parse("container=web-1 verdict=denied").unwrap();
    let subscribed = sub.call(Op::Subscribe { filter, interval_ms: Some(200), alerts: false });
    assert!(matches!(subscribed, Ok(Answer::Subscribed { .. })), "{subscribed:?}");
    match sub.read_msg() {
        ServerMsg::Event { event: Event::Flows { changed, full: true, .. }, .. } => {
            assert!(
                !changed.is_empty()
                    && changed.iter().all(|r| r.container == "web-1" && r.verdict == FlowVerdict::Denied)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(db, 5432), WAIT), Probe::TimedOut);
    match sub.read_msg() {
        ServerMsg::Event { event: Event::Flows { changed, full: false, .. }, .. } => {
            assert!(changed.iter().any(|r| r.dport == 5432 && r.count >= 2), "{changed:?}");
        }
        other => panic!("{other:?}"),
    }
    drop(sub);

    // Blocking api-1 for web-1 cuts the running stream and the idle established connection.
    let writer = {
        let mut s = s.try_clone().unwrap();
        // Once blocked, the send buffer fills and a write would wait for TCP's give-up.
        s.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
        std::thread::spawn(move || {
            let chunk = [1u8; 4096];
            let until = Instant::now() + Duration::from_secs(6);
            while Instant::now() < until {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let idle = lab.connect("web-1", SocketAddr::new(api, 9000));
    std::thread::sleep(Duration::from_millis(300));
    let moving = sink.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    assert!(sink.load(Ordering::Relaxed) > moving, "the stream flows before the block");
    let b = c.block(
        BlockTarget::Destination {
            scope: Scope::Container("web-1".into()),
            net: api.into(),
            proto: None,
            port: None,
        },
        None,
    );
    assert_eq!(b.containers, vec!["web-1".to_string()]);
    assert!(b.flows_cut >= 2, "both established flows deleted from conntrack: {b:?}");
    std::thread::sleep(Duration::from_millis(200));
    let after = sink.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(sink.load(Ordering::Relaxed), after, "no byte of the stream gets through the block");
    // The idle connection: data sent after the block never arrives, so no reply either.
    let mut idle2 = idle.try_clone().unwrap();
    idle2.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let _ = idle2.write_all(b"ping");
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(api, 9001), WAIT), Probe::TimedOut);
    writer.join().unwrap();
    // Unblock: new connections work again.
    assert!(matches!(c.call(Op::Unblock { block: b.id }), Ok(Answer::Unblocked { .. })));
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(api, 9001), WAIT), Probe::Connected);

    // A TTL lapses on its own.
    c.block(
        BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Egress },
        Some(2),
    );
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(api, 9001), WAIT), Probe::TimedOut);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(api, 9001), WAIT), Probe::Connected);
    eventually("the expired block leaves the list", &daemon, || match c.call(Op::Blocks) {
        Ok(Answer::Blocks { blocks }) if blocks.is_empty() => Some(()),
        _ => None,
    });

    // Blocks survive a restart (kill -9: no chance to save anything at exit).
    let kept = c.block(
        BlockTarget::Destination {
            scope: Scope::All,
            net: api.into(),
            proto: Some(Proto::Tcp),
            port: Some(9001),
        },
        None,
    );
    daemon.kill9();
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(api, 9001), WAIT), Probe::TimedOut);
    let daemon = Daemon::run_in_dir(&d, "2", &[]);
    let mut c = Client::connect(&daemon.socket);
    match c.call(Op::Blocks) {
        Ok(Answer::Blocks { blocks }) => {
            assert_eq!(blocks.iter().map(|b| b.id).collect::<Vec<_>>(), vec![kept.id])
        }
        other => panic!("{other:?}"),
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(api, 9001), WAIT), Probe::TimedOut);
    assert_eq!(tcp_probe(&lab.node("web-1").path(), SocketAddr::new(api, 9002), WAIT), Probe::Connected);

    // The audit trail has every mutation, with who did it.
    let records = match c.call(Op::Audit { since: None, since_ms: None, limit: None }) {
        Ok(Answer::Audit { records }) => records,
        other => panic!("{other:?}"),
    };
    let ops: Vec<&str> = records.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "block").count(), 3, "{ops:?}");
    assert!(ops.contains(&"unblock") && ops.contains(&"expire"), "{ops:?}");
    let first = records.iter().find(|r| r.op == AuditOp::Block).unwrap();
    assert_eq!(first.peer.as_ref().map(|p| p.uid), Some(0));
    assert_eq!(first.role, Some(Role::Admin));
    assert_eq!(first.result, AuditResult::Ok);
    drop(s);
    drop(idle);
}

/// Hostile input: a line too long, garbage, unknown ops, a request before hello.
#[test]
#[ignore = "needs root"]
fn hostile_input_gets_errors_not_crashes() {
    if !common::require(common::lab::available(), "root with iproute2 (network namespaces)") {
        return;
    }
    let (_lab, d) = common::demo_lab("control", "hostile");
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    // No hello first: refused and closed.
    let mut raw = Client::raw(&daemon.socket);
    assert!(matches!(raw.call(Op::Status), Err((ErrorCode::VersionMismatch, _))));
    // An old console: a clear version error.
    let mut old = Client::raw(&daemon.socket);
    let e = old.call(Op::Hello { version: 0, client: "fw-tui 0.0.1".into() }).unwrap_err();
    assert!(e.0 == ErrorCode::VersionMismatch && e.1.contains("protocol 0"), "{e:?}");

    let mut c = Client::connect(&daemon.socket);
    c.send_raw("this is not json\n");
    assert!(matches!(c.read_msg(), ServerMsg::Error { code: ErrorCode::BadRequest, .. }));
    c.send_raw("{\"id\":9,\"op\":\"format-disk\"}\n");
    assert!(matches!(c.read_msg(), ServerMsg::Error { id: Some(9), code: ErrorCode::BadRequest, .. }));
    assert!(matches!(c.call(Op::Unblock { block: 999 }), Err((ErrorCode::NotFound, _))));
    // A filter the language refuses is an error naming the word, never an empty answer.
    let bad = FlowFilter { expr: Some("zone:web colour:red".into()), ..FlowFilter::default() };
    let e = c.call(Op::Flows { filter: bad.clone(), limit: None }).unwrap_err();
    assert!(e.0 == ErrorCode::BadRequest && e.1.contains("unknown key \"colour\""), "{e:?}");
    let e = c.call(Op::Subscribe { filter: bad, interval_ms: None, alerts: false }).unwrap_err();
    assert_eq!(e.0, ErrorCode::BadRequest, "{e:?}");
    // Still serving after all that.
    assert!(matches!(c.call(Op::Status), Ok(Answer::Status(_))));
    // A line over the limit closes that connection only.
    let mut big = Client::connect(&daemon.socket);
    big.send_raw(&"x".repeat(MAX_REQUEST_BYTES + 10));
    // The daemon may have answered and closed already: this write can meet a closed pipe.
    let _ = big.w.write_all(b"\n");
    assert!(matches!(big.read_msg(), ServerMsg::Error { code: ErrorCode::BadRequest, .. }));
    assert!(matches!(c.call(Op::Status), Ok(Answer::Status(_))));
    assert!(daemon.log().lines().all(|l| !l.contains("panicked")), "{}", daemon.log());
}

/// Roles from group membership, checked with real processes of other users (`setpriv`).
#[test]
#[ignore = "needs root"]
fn viewers_cannot_block_and_strangers_are_refused() {
    if !common::require(common::lab::available(), "root with iproute2 (network namespaces)") {
        return;
    }
    let tag = std::process::id() % 100_000;
    let groups = Groups::new(&[format!("fwt{tag}sock"), format!("fwt{tag}view"), format!("fwt{tag}op")]);
    let (_lab, d) = common::demo_lab("control", "roles");
    // The test directory must be reachable by the unprivileged peers.
    Command::new("chmod").args(["755", d.to_str().unwrap()]).status().unwrap();
    let daemon = Daemon::run_in_dir(
        &d,
        "1",
        &[
            "--socket-group",
            &groups.names[0],
            "--viewer-group",
            &groups.names[1],
            "--operator-group",
            &groups.names[2],
        ],
    );
    let gid = |i: usize| groups.gids[i].to_string();
    let hello = r#"{"id":1,"op":"hello","version":2,"client":"t"}"#;
    let block =
        r#"{"id":2,"op":"block","target":{"kind":"quarantine","container":"web-1","direction":"egress"}}"#;
    let status = r#"{"id":3,"op":"status"}"#;
    let as_peer = |groups: &str, lines: &[&str]| -> String {
        let input = lines.join("\n") + "\n";
        let mut child = Command::new("setpriv")
            .args([
                "--reuid",
                "4242",
                "--regid",
                "4242",
                &format!("--groups={groups}"),
                "socat",
                "-t",
                "2",
                "-",
                &format!("UNIX-CONNECT:{}", daemon.socket.display()),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("setpriv + socat");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    // A viewer reads but cannot block.
    let out = as_peer(&format!("{},{}", gid(0), gid(1)), &[hello, status, block]);
    assert!(out.contains(r#""role":"viewer""#), "{out}");
    assert!(out.contains(r#""kind":"status""#), "{out}");
    assert!(out.contains(r#""id":2,"code":"forbidden""#), "{out}");
    // An operator can.
    let out = as_peer(&format!("{},{}", gid(0), gid(2)), &[hello, block]);
    assert!(out.contains(r#""kind":"blocked""#), "{out}");
    // In the socket group but no role: refused by the daemon.
    let out = as_peer(&gid(0), &[hello, status]);
    assert!(out.contains(r#""code":"forbidden""#) && !out.contains(r#""kind":"status""#), "{out}");
    // In no group at all: the socket itself is closed to them.
    let out = as_peer("4242", &[hello]);
    assert!(out.contains("Permission denied"), "{out}");
    // The refusal and the operator's block are both in the audit trail.
    let audit = fs::read_to_string(d.join("audit.jsonl")).unwrap();
    assert!(audit.lines().any(|l| l.contains(r#""uid":4242"#) && l.contains("forbidden")), "{audit}");
    assert!(
        audit.lines().any(|l| l.contains(r#""role":"operator""#) && l.contains(r#""result":"ok""#)),
        "{audit}"
    );
}

/// System groups created for one test and deleted after, even on failure.
struct Groups {
    names: Vec<String>,
    gids: Vec<u32>,
}

impl Groups {
    fn new(names: &[String]) -> Groups {
        let mut g = Groups { names: Vec::new(), gids: Vec::new() };
        for n in names {
            let st = Command::new("groupadd").arg(n).status().expect("groupadd");
            assert!(st.success(), "groupadd {n}");
            g.names.push(n.clone());
            let gid = nix::unistd::Group::from_name(n).unwrap().unwrap().gid.as_raw();
            g.gids.push(gid);
        }
        g
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("groupdel").arg(n).status();
        }
    }
}

/// A TTL counts from the moment the block is placed: a 1 s block placed late in a wall-clock
/// second still holds for a whole second (counted in whole seconds it lapsed at the next
/// second boundary, up to 1 s early).
#[test]
#[ignore = "needs root"]
fn a_block_never_lapses_early() {
    if !common::require(common::lab::available(), "root with iproute2 (network namespaces)") {
        return;
    }
    let (mut lab, d) = common::demo_lab("control", "ttl");
    lab.serve_tcp("api-1", &[9001]);
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    let mut c = Client::connect(&daemon.socket);
    eventually("containers programmed", &daemon, || {
        let s = c.status();
        (s.containers.len() == 3 && s.containers.iter().all(|c| c.programmed)).then_some(())
    });
    let web = lab.node("web-1").path();
    let api = SocketAddr::new(lab.addr("api-1"), 9001);
    assert_eq!(tcp_probe(&web, api, WAIT), Probe::Connected);
    for round in 0..3 {
        // 850-950 ms into a second of the wall clock.
        while !(850..950).contains(
            &(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 1000),
        ) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t0 = Instant::now();
        let b = c.block(
            BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Egress },
            Some(1),
        );
        let passed_at = loop {
            let at = t0.elapsed();
            if tcp_probe(&web, api, Duration::from_millis(50)) == Probe::Connected {
                break at;
            }
            assert!(at < Duration::from_secs(4), "round {round}: the block never lapsed");
        };
        // The element's timeout is in jiffies: allow their rounding, not a lost second.
        assert!(
            passed_at >= Duration::from_millis(990),
            "round {round}: block {} lapsed after {passed_at:?}",
            b.id
        );
        assert!(b.expires_at_ms.zip(Some(b.created_at_ms)).is_some_and(|(e, c)| e - c == 1000), "{b:?}");
    }
}
