//! Inspection end to end: `fw-daemon run` on a namespace lab, real clients (openssl s_client,
//! curl, nc, dig, and `common::tls_attack`, a client that writes a ClientHello exactly as told) in
//! a managed container, real servers outside it, and tshark capturing the client's wire as a
//! second opinion. Inspection is inline: a flagged flow's payload waits in the kernel until
//! the daemon's verdict, so a disallowed ClientHello or request never leaves the client.
//!
//! - allowed names pass, however the hello is split, with their SNI on the row;
//! - every evasion the issue lists (a hello in 3, 4, 9, 41 segments, in 1-byte records in one
//!   write, with segmentation offload off, in two parts 50 ms apart) is a violation, the
//!   server receives none of it, and both ends see a reset at once;
//! - `Host: bad.example` against a server that answers at once: 0 body bytes, 20 times;
//! - an SSH banner on a TLS port, a server speaking first, a hello that never completes
//!   (the timer fires with no packet arriving);
//! - the daemon killed mid-handshake: fail closed drops the flow, fail open lets it through;
//! - DNS names are judged per query; answers name later flows' peers;
//! - tshark sees on the wire exactly the names of the rows that passed, none of the others.

mod common;

use fw_proto::control::{AuditOp, AuditResult};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::client::Client;
use common::daemon::{eventually, Daemon};
use common::lab::Lab;
use common::tls_attack::{self as attack, Attack, End, Observer, Plan};
use fw_daemon::netns::run_in;
use fw_proto::control::*;

const CLIENT: &str = "10.77.1.10";
const SERVER: &str = "10.77.50.10";
const RESOLVER: &str = "10.77.53.53";
const WEB: &str = "10.77.60.1";

const RULES: &str = r#"
[defaults]
action = "deny"
mode = "enforce"

[zone.app]
match = { name = "client" }

[zone.svc]
cidrs = ["10.77.50.0/24"]

[zone.resolver]
cidrs = ["10.77.53.0/24"]

[zone.internet]
cidrs = ["10.77.60.0/24"]

[[policy]]
id = "tls-sni"
from = "app"
to = "svc"
proto = "tcp"
ports = 443
action = "allow"
inspect = { tls_sni = ["ok.example"], on_violation = "cut" }

[[policy]]
id = "http-host"
from = "app"
to = "svc"
proto = "tcp"
ports = [8080, 8081]
action = "allow"
inspect = { http_host = ["good.example"], on_violation = "cut" }

[[policy]]
id = "tls-only"
from = "app"
to = "svc"
proto = "tcp"
ports = 8443
action = "allow"
inspect = { protocol = "tls", on_violation = "cut" }

[[policy]]
id = "dns"
from = "app"
to = "resolver"
proto = "udp"
ports = 53
action = "allow"
inspect = { dns_names = ["*.good.example"], on_violation = "alert" }

[[policy]]
id = "web"
from = "app"
to = "internet"
proto = "tcp"
ports = 80
action = "allow"
"#;

/// Answers every A query with WEB, everything else with an empty answer.
const DNS_STUB: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
ip = socket.inet_aton(sys.argv[2])
while True:
    q, peer = s.recvfrom(1500)
    if len(q) < 12:
        continue
    i = 12
    while i < len(q) and q[i] != 0:
        i += q[i] + 1
    qend = i + 5
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    hdr = q[:2] + b"\x81\x80" + q[4:6] + struct.pack("!HHH", 1 if qtype == 1 else 0, 0, 0)
    ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + ip if qtype == 1 else b""
    s.sendto(hdr + q[12:qend] + ans, peer)
"#;

fn privileged() -> bool {
    common::require(common::lab::available(), "root with iproute2 (network namespaces)")
}

fn tool(name: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success())
}

/// A background process, killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &str, cmd: &str, out: &Path) -> Bg {
    Bg(Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .stdin(Stdio::null())
        .stdout(fs::File::create(out).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn"))
}

fn sh_in(ns: &str, cmd: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "sh", "-c", cmd]).output().expect("run");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for the container's table to hold `rule` and for the daemon to have bound its
/// inspection queue inside the namespace (`ns`).
fn ready(daemon: &Daemon, ns: &str, rule: &str) {
    eventually("the client's table", daemon, || {
        sh_in(ns, "nft list chain inet fw egress").contains(&format!("policy:{rule}")).then_some(())
    });
    // The queue is bound right after programming; give it up to 15 s, then let the test's
    // own assertions speak (a daemon that never binds fails them: run against the NFLOG-tap
    // build with FW_DAEMON_BIN, that is what shows each finding reproduced).
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        let q = sh_in(ns, "cat /proc/net/netfilter/nfnetlink_queue");
        if q.lines().any(|l| l.split_whitespace().next() == Some("101")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Names of rows that were let through: no violation, or (`alerts`) any.
fn passed(rows: &[FlowRow], dport: &[u16], alerts: bool) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| dport.contains(&r.dport))
        .filter(|r| alerts || r.inspection.as_ref().is_some_and(|i| i.violation.is_none()))
        .filter_map(|r| r.inspection.as_ref()?.name.clone())
        .collect()
}

fn names(rows: &[FlowRow], dport: &[u16]) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| dport.contains(&r.dport))
        .filter_map(|r| r.inspection.as_ref()?.name.clone())
        .collect()
}

/// Field values tshark's dissectors find in the capture.
fn tshark_fields(pcap: &Path, filter: &str, field: &str) -> BTreeSet<String> {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(pcap)
        .args(["-d", "tcp.port==8081,http", "-Y", filter, "-T", "fields", "-e", field])
        .output()
        .expect("tshark");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
#[ignore = "needs root"]
fn inspection_cuts_violations_and_agrees_with_tshark() {
    if !privileged() {
        return;
    }
    for t in ["openssl", "curl", "nc", "dig", "python3", "tshark"] {
        if !common::require(tool(t), &format!("{t} (vagrant/provision.sh installs it)")) {
            return;
        }
    }
    let d = std::env::temp_dir().join(format!("fw-inspect-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("rules")).unwrap();
    fs::write(d.join("rules/policy.toml"), RULES).unwrap();

    let mut lab = Lab::new();
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    lab.add("client", &[ip(CLIENT)]);
    lab.add("server", &[ip(SERVER)]);
    lab.add("resolver", &[ip(RESOLVER)]);
    lab.add("web", &[ip(WEB)]);
    let names_of: std::collections::HashMap<String, String> =
        lab.nodes.iter().map(|n| (n.name.clone(), n.ns.clone())).collect();
    let ns = |n: &str| names_of[n].clone();
    fs::write(
        d.join("inventory.toml"),
        format!(
            "[[container]]\nname = \"client\"\nnetns = \"{}\"\nimage = \"test\"\naddresses = [\"{CLIENT}\"]\n",
            lab.node("client").path().display()
        ),
    )
    .unwrap();

    // Servers, outside fw's control.
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=ok.example", "-days", "1", "-keyout"])
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tls_out = d.join("s_server.out");
    let _tls = spawn_in(
        &ns("server"),
        &format!(
            "sleep 600 | exec openssl s_server -accept 443 -cert {0}/cert.pem -key {0}/key.pem",
            d.display()
        ),
        &tls_out,
    );
    let _http = spawn_in(
        &ns("server"),
        &format!("cd {} && exec python3 -m http.server 8080 --bind {SERVER}", d.display()),
        &d.join("http.out"),
    );
    fs::write(d.join("dns_stub.py"), DNS_STUB).unwrap();
    let _dns = spawn_in(
        &ns("resolver"),
        &format!("exec python3 {} {RESOLVER} {WEB}", d.join("dns_stub.py").display()),
        &d.join("dns.out"),
    );
    let http_sink = lab.serve_sink("server", 8081);
    let ssh_sink = lab.serve_sink("server", 8443);
    lab.serve_tcp("web", &[80]);

    // The daemon.
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    ready(&daemon, &ns("client"), "tls-sni");
    let mut c = Client::connect(&daemon.socket);

    // A second opinion: everything the client's eth0 sees, dissected afterwards.
    let pcap = d.join("client.pcap");
    let mut capture = Bg(Command::new("ip")
        .args(["netns", "exec", &ns("client"), "tshark", "-q", "-i", "eth0", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark"));
    eventually("the capture to start", &daemon, || {
        fs::metadata(&pcap).ok().filter(|m| m.len() > 0).map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(500));

    // TLS: allowed SNI, then a disallowed one. Each client sends a marker line after the
    // handshake; s_server prints what it receives.
    let s_client = |sni: &str, marker: &str| {
        sh_in(
            &ns("client"),
            &format!(
                "(sleep 1; echo {marker}; sleep 1) | timeout 6 openssl s_client -connect {SERVER}:443 \
                 -servername {sni} -quiet 2>&1"
            ),
        )
    };
    s_client("ok.example", "MARKER-OK");
    let seen = eventually("the allowed TLS data at the server", &daemon, || {
        let t = fs::read_to_string(&tls_out).unwrap_or_default();
        t.contains("MARKER-OK").then_some(t)
    });
    assert!(seen.contains("MARKER-OK"));
    s_client("evil.example", "MARKER-EVIL");
    std::thread::sleep(Duration::from_millis(300));
    let t = fs::read_to_string(&tls_out).unwrap_or_default();
    assert!(!t.contains("MARKER-EVIL"), "data after a disallowed SNI reached the server:\n{t}");

    // HTTP: curl with an allowed and a disallowed Host.
    let curl = |host: &str| {
        sh_in(
            &ns("client"),
            &format!("curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 -H 'Host: {host}' http://{SERVER}:8080/"),
        )
    };
    assert_eq!(curl("good.example"), "200");
    curl("evil.example");
    // A raw client: the request goes out, later bytes on the same connection must not arrive.
    let request = b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    let to: SocketAddr = format!("{SERVER}:8081").parse().unwrap();
    let mut s =
        run_in(&lab.node("client").path(), move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
            .unwrap()
            .expect("connect to the HTTP sink");
    s.write_all(request).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = s.write_all(b"MORE BYTES AFTER THE CUT");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http_sink.load(Ordering::Relaxed), 0, "bytes of a disallowed request reached the server");

    // Not TLS on a TLS-only port: an SSH banner from nc.
    let banner = "SSH-2.0-OpenSSH_9.2p1\r\n";
    sh_in(
        &ns("client"),
        &format!("(printf 'SSH-2.0-OpenSSH_9.2p1\\r\\n'; sleep 1; printf AFTER-THE-CUT; sleep 1) | timeout 4 nc {SERVER} 8443"),
    );
    assert_eq!(
        ssh_sink.load(Ordering::Relaxed),
        0,
        "the banner reached a TLS-only port ({} bytes)",
        banner.len()
    );

    // DNS: an allowed name (answered WEB), a disallowed one (alert only).
    // (The disallowed one first: under "alert" it is answered too, and the name map keeps the
    // latest answer for an address.)
    sh_in(&ns("client"), &format!("dig @{RESOLVER} evil.test A +tries=1 +time=2 +short"));
    let a = sh_in(&ns("client"), &format!("dig @{RESOLVER} www.good.example A +tries=1 +time=2 +short"));
    assert_eq!(a.trim(), WEB);

    std::thread::sleep(Duration::from_millis(300));
    // A later flow to the answered address carries the name as its peer.
    let to: SocketAddr = format!("{WEB}:80").parse().unwrap();
    let _web =
        run_in(&lab.node("client").path(), move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
            .unwrap()
            .expect("connect to web");

    std::thread::sleep(Duration::from_millis(1000));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(capture.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = capture.0.wait();

    // What the daemon says.
    let rows = eventually("inspected rows", &daemon, || {
        let rows = c.flows("");
        let n = rows.iter().filter(|r| r.inspection.is_some()).count();
        (n >= 8).then_some(rows)
    });
    let row = |dport: u16, name: &str| -> &FlowRow {
        rows.iter()
            .find(|r| r.dport == dport && r.inspection.as_ref().and_then(|i| i.name.as_deref()) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} on port {dport}: {rows:#?}"))
    };
    let ok = row(443, "ok.example").inspection.clone().unwrap();
    assert_eq!((ok.protocol.as_deref(), ok.violation.as_deref()), (Some("tls"), None));
    assert!(row(443, "evil.example").inspection.as_ref().unwrap().violation.is_some());
    assert!(row(8080, "good.example").inspection.as_ref().unwrap().violation.is_none());
    assert!(row(8080, "evil.example").inspection.as_ref().unwrap().violation.is_some());
    assert!(row(8081, "evil.example").inspection.as_ref().unwrap().violation.is_some());
    let ssh = rows
        .iter()
        .find(|r| r.dport == 8443 && r.inspection.is_some())
        .and_then(|r| r.inspection.clone())
        .unwrap_or_else(|| panic!("no inspected row on 8443: {rows:#?}"));
    assert!(ssh.violation.is_some(), "{ssh:?}");
    assert!(row(53, "www.good.example").inspection.as_ref().unwrap().violation.is_none());
    assert!(row(53, "evil.test").inspection.as_ref().unwrap().violation.is_some());
    let web = rows.iter().find(|r| r.dport == 80 && r.dst == ip(WEB)).expect("the web flow");
    assert_eq!(web.peer.as_deref(), Some("www.good.example"), "{web:?}");

    // Cuts happen in the kernel (no block needed) and are audited with their actor; the DNS
    // violation (alert only) cut nothing.
    assert!(c.blocks().is_empty());
    let audit = fs::read_to_string(d.join("audit.jsonl")).unwrap_or_default();
    let cut_ports: BTreeSet<u16> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
        .filter(|r| r.op == AuditOp::Cut)
        .inspect(|r| {
            assert!(
                r.actor.as_deref().is_some_and(|a| a.starts_with("fw-daemon inspection (policy ")),
                "{r:?}"
            )
        })
        .filter_map(|r| match r.target? {
            fw_proto::control::BlockTarget::Flow { dport, .. } => Some(dport),
            _ => None,
        })
        .collect();
    assert_eq!(cut_ports, [443, 8080, 8081, 8443].into_iter().collect(), "{audit}");
    let alerts = c.alerts(None, None);
    let violations: Vec<&Alert> = alerts.iter().filter(|a| a.kind == AlertKind::Violation).collect();
    assert_eq!(violations.len(), 5, "{alerts:#?}");
    assert!(violations.iter().any(|a| a.message.contains("evil.test") && a.message.contains("alert only")));

    // tshark agrees on every flow: the wire carries exactly the names of the rows that were let
    // through (allowed, or a violation under "alert"), none of those cut before they left.
    let sni =
        tshark_fields(&pcap, "tls.handshake.extensions_server_name", "tls.handshake.extensions_server_name");
    assert_eq!(sni, passed(&rows, &[443], false), "SNI: tshark vs daemon");
    assert_eq!(sni, set(&["ok.example"]));
    assert_eq!(names(&rows, &[443]), set(&["ok.example", "evil.example"]));
    let hosts = tshark_fields(&pcap, "http.host", "http.host");
    assert_eq!(hosts, passed(&rows, &[8080, 8081], false), "Host: tshark vs daemon");
    assert_eq!(hosts, set(&["good.example"]));
    let qnames = tshark_fields(&pcap, "dns.flags.response == 0", "dns.qry.name");
    assert_eq!(qnames, passed(&rows, &[53], true), "DNS: tshark vs daemon");
    assert_eq!(qnames, set(&["www.good.example", "evil.test"]));
    // The cut flows left only resets on the wire: each cut connection's client port shows one.
    let resets = tshark_fields(&pcap, "tcp.flags.reset == 1 && ip.src == 10.77.1.10", "tcp.srcport");
    for r in
        rows.iter().filter(|r| r.inspection.as_ref().is_some_and(|i| i.violation.is_some()) && r.dport != 53)
    {
        assert!(resets.contains(&r.sport.to_string()), "no reset on the wire for {r:?}: {resets:?}");
    }
    drop(daemon);
    let _ = fs::remove_dir_all(&d);
}

/// A managed `client` (inventory) and an unmanaged `server` in a lab, and a work dir with
/// `rules` as its one rule file, for `Daemon::run_in_dir`.
fn client_and_server(tag: &str, rules: &str) -> (Lab, std::path::PathBuf) {
    let d = common::work_dir("inspect", tag);
    fs::create_dir_all(d.join("rules")).unwrap();
    fs::write(d.join("rules/policy.toml"), rules).unwrap();
    let mut lab = Lab::new();
    lab.add("client", &[CLIENT.parse().unwrap()]);
    lab.add("server", &[SERVER.parse().unwrap()]);
    fs::write(
        d.join("inventory.toml"),
        format!(
            "[[container]]\nname = \"client\"\nnetns = \"{}\"\nimage = \"test\"\naddresses = [\"{CLIENT}\"]\n",
            lab.node("client").path().display()
        ),
    )
    .unwrap();
    (lab, d)
}

#[test]
#[ignore = "needs root"]
fn a_quarantine_policy_quarantines_the_container() {
    if !privileged() || !common::require(tool("nc"), "nc (vagrant/provision.sh installs it)") {
        return;
    }
    let rules = r#"
[zone.app]
match = { name = "client" }

[zone.svc]
cidrs = ["10.77.50.0/24"]

[[policy]]
id = "tls-or-else"
from = "app"
to = "svc"
proto = "tcp"
ports = 9443
action = "allow"
inspect = { protocol = "tls", on_violation = "quarantine" }

[[policy]]
id = "plain"
from = "app"
to = "svc"
proto = "tcp"
ports = 80
action = "allow"
"#;
    let (mut lab, d) = client_and_server("q", rules);
    lab.serve_sink("server", 9443);
    lab.serve_tcp("server", &[80]);
    let client = lab.node("client").path();
    let client_ns = lab.node("client").ns.clone();
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    ready(&daemon, &client_ns, "tls-or-else");
    let mut c = Client::connect(&daemon.socket);
    let web: SocketAddr = format!("{SERVER}:80").parse().unwrap();
    let probe = || common::lab::tcp_probe(&client, web, Duration::from_millis(400));
    assert_eq!(probe(), common::lab::Probe::Connected);

    sh_in(&client_ns, &format!("printf 'SSH-2.0-x\\r\\n' | timeout 2 nc {SERVER} 9443"));
    let q = eventually("the quarantine", &daemon, || {
        c.blocks()
            .into_iter()
            .find(|b| matches!(&b.target, BlockTarget::Quarantine { container, .. } if container == "client"))
    });
    assert!(q.created_by.contains("inspection (policy tls-or-else)"), "{q:?}");
    assert_eq!(probe(), common::lab::Probe::TimedOut, "the quarantined client still reaches the server");
    let alerts = c.alerts(None, None);
    assert!(
        alerts.iter().any(|a| a.kind == AlertKind::Violation && a.message.contains("container quarantined")),
        "{alerts:#?}"
    );
    // The automatic block is audited with its actor.
    let audit = fs::read_to_string(d.join("audit.jsonl")).unwrap_or_default();
    let rec = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
        .find(|r| r.op == AuditOp::Block)
        .unwrap_or_else(|| panic!("no block audited:\n{audit}"));
    assert_eq!(rec.actor.as_deref(), Some("fw-daemon inspection (policy tls-or-else)"), "{rec:?}");
    assert_eq!((rec.peer.is_none(), rec.block, &rec.result), (true, Some(q.id), &AuditResult::Ok));
    drop(daemon);
    let _ = fs::remove_dir_all(&d);
}

const TLS_RULES: &str = r#"
[zone.app]
match = { name = "client" }

[zone.svc]
cidrs = ["10.77.50.0/24"]

[[policy]]
id = "tls-sni"
from = "app"
to = "svc"
proto = "tcp"
ports = 443
action = "allow"
inspect = { tls_sni = ["ok.example", "api.partner.example"], on_violation = "cut" }

[[policy]]
id = "tls-sni-32"
from = "app"
to = "svc"
proto = "tcp"
ports = 9443
action = "allow"
inspect = { tls_sni = ["ok.example"], on_violation = "cut", max_packets = 32 }
"#;

/// The row of the client's connection from port `sport`, once it has an inspection.
fn row_of(c: &mut Client, daemon: &Daemon, sport: u16) -> FlowRow {
    eventually("the flow's inspected row", daemon, || {
        c.flows("").into_iter().find(|r| r.sport == sport && r.inspection.is_some())
    })
}

/// Asserts that an attack was cut inline: nothing of it reached the server, both ends were
/// reset within `fast`, and the row says why.
fn assert_cut(what: &str, a: &Attack, srv: &Observer, c: &mut Client, daemon: &Daemon, fast: Duration) {
    assert_eq!(a.end, End::Reset, "{what}: the client was not reset: {a:?}");
    assert!(a.after < fast, "{what}: the client's reset took {:?}", a.after);
    let seen = srv.conn(a.sport, Duration::from_secs(6)).unwrap_or_else(|| panic!("{what}: no server side"));
    assert!(
        seen.bytes.is_empty(),
        "{what}: {} bytes reached the server: {:?}",
        seen.bytes.len(),
        String::from_utf8_lossy(&seen.bytes)
    );
    assert_eq!(seen.end, End::Reset, "{what}: the server was not reset: {seen:?}");
    let row = row_of(c, daemon, a.sport);
    let i = row.inspection.unwrap();
    assert!(i.violation.is_some(), "{what}: {i:?}");
}

#[test]
#[ignore = "needs root"]
fn every_evasion_of_the_hello_is_a_violation_and_reaches_nothing() {
    if !privileged() || !common::require(tool("ethtool"), "ethtool (vagrant/provision.sh installs it)") {
        return;
    }
    let (lab, d) = client_and_server("evade", TLS_RULES);
    let client = lab.node("client").path();
    let cns = lab.node("client").ns.clone();
    // Each write its own segment: no Nagle (the client), no autocorking (its namespace).
    sh_in(&cns, "sysctl -qw net.ipv4.tcp_autocorking=0");
    let srv = lab.node("server").path();
    let o443 = Observer::start(srv.clone(), 443, None, Duration::from_secs(5));
    let o9443 = Observer::start(srv, 9443, None, Duration::from_secs(5));
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    ready(&daemon, &cns, "tls-sni");
    let mut c = Client::connect(&daemon.socket);
    let to = |p: u16| -> SocketAddr { format!("{SERVER}:{p}").parse().unwrap() };
    let hello = attack::client_hello("evil.example");
    let late = attack::client_hello_sni_last("evil.example");
    let ms = Duration::from_millis;
    let cases: Vec<(&str, u16, Vec<u8>, Plan, Duration)> = vec![
        ("3 segments (1, 1, rest)", 443, hello.clone(), Plan::segments(hello.len(), 3, 2, ms(2)), ms(1000)),
        (
            "4 segments back to back",
            443,
            hello.clone(),
            Plan::segments(hello.len(), 4, 0, Duration::ZERO),
            ms(1000),
        ),
        (
            "9 segments, SNI last (max_packets 6)",
            443,
            late.clone(),
            Plan::segments(late.len(), 9, 0, ms(2)),
            ms(1000),
        ),
        // Past the initial congestion window nothing more leaves until the flow times out.
        (
            "41 segments, SNI last (max_packets 32)",
            9443,
            late.clone(),
            Plan::segments(late.len(), 41, 0, ms(1)),
            ms(3000),
        ),
        ("1-byte TLS records in one write", 443, attack::one_byte_records(&hello), Plan::whole(), ms(1000)),
    ];
    for (what, port, data, plan, fast) in cases {
        let a = attack::attack(&client, to(port), data, plan, Duration::from_secs(4));
        let o = if port == 443 { &o443 } else { &o9443 };
        assert_cut(what, &a, o, &mut c, &daemon, fast);
    }
    // Two parts 50 ms apart, 20 times: not one first line gets through.
    for i in 0..20 {
        let plan = Plan::Parts { cuts: vec![hello.len() / 2], gap: ms(50), line: true };
        let a = attack::attack(&client, to(443), hello.clone(), plan, Duration::from_secs(3));
        assert_cut(&format!("two parts 50 ms apart, trial {i}"), &a, &o443, &mut c, &daemon, ms(1000));
    }
    // With segmentation offload off the 1-byte records go out as MTU-sized segments.
    sh_in(&cns, "ethtool -K eth0 tso off gso off");
    assert!(sh_in(&cns, "ethtool -k eth0").contains("generic-segmentation-offload: off"));
    let a = attack::attack(
        &client,
        to(443),
        attack::one_byte_records(&hello),
        Plan::whole(),
        Duration::from_secs(4),
    );
    assert_cut("1-byte TLS records, GSO off", &a, &o443, &mut c, &daemon, ms(1000));
    // The last cut is in the kernel before its alert is raised by the daemon's loop: wait for
    // it, then there must be exactly one per attack.
    let stats = eventually("a violation alert per attack", &daemon, || {
        let n = c.alerts(None, None).iter().filter(|a| a.kind == AlertKind::Violation).count();
        (n >= 26).then_some(n)
    });
    assert_eq!(stats, 26, "one violation alert per attack");
    drop(daemon);
    let _ = fs::remove_dir_all(&d);
}

#[test]
#[ignore = "needs root"]
fn allowed_names_pass_however_the_hello_is_split_and_keep_their_raw_name() {
    if !privileged() {
        return;
    }
    let (lab, d) = client_and_server("allow", TLS_RULES);
    let client = lab.node("client").path();
    let cns = lab.node("client").ns.clone();
    sh_in(&cns, "sysctl -qw net.ipv4.tcp_autocorking=0");
    let o443 = Observer::start(lab.node("server").path(), 443, None, Duration::from_millis(1500));
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    ready(&daemon, &cns, "tls-sni");
    let mut c = Client::connect(&daemon.socket);
    let to: SocketAddr = format!("{SERVER}:443").parse().unwrap();
    let hello = attack::client_hello_sni_last("ok.example");
    let ms = Duration::from_millis;
    let cases: Vec<(&str, Vec<u8>, Plan)> = vec![
        ("one segment", hello.clone(), Plan::whole()),
        ("3 segments (1, 1, rest)", hello.clone(), Plan::segments(hello.len(), 3, 2, ms(2))),
        ("6 segments", hello.clone(), Plan::segments(hello.len(), 6, 0, ms(2))),
        ("two parts 50 ms apart", hello.clone(), Plan::Parts { cuts: vec![100], gap: ms(50), line: true }),
        ("1-byte TLS records in one write", attack::one_byte_records(&hello), Plan::whole()),
    ];
    for (what, data, plan) in cases {
        let a = attack::attack(&client, to, data.clone(), plan, ms(800));
        assert_eq!(a.end, End::Open, "{what}: {a:?}");
        let seen =
            o443.conn(a.sport, Duration::from_secs(4)).unwrap_or_else(|| panic!("{what}: no server side"));
        let mut want = data;
        want.extend_from_slice(attack::LINE);
        assert_eq!(seen.bytes, want, "{what}: the server got something else");
        let i = row_of(&mut c, &daemon, a.sport).inspection.unwrap();
        assert_eq!(
            (i.protocol.as_deref(), i.name.as_deref(), i.violation.as_deref()),
            (Some("tls"), Some("ok.example"), None),
            "{what}"
        );
    }
    // A name sent in another spelling passes as its normal form; the row keeps both, and the
    // operator finds it by either.
    let a = attack::attack(&client, to, attack::client_hello("API.Partner.Example."), Plan::whole(), ms(500));
    assert_eq!(a.end, End::Open, "{a:?}");
    let i = row_of(&mut c, &daemon, a.sport).inspection.unwrap();
    assert_eq!(
        (i.name.as_deref(), i.raw_name.as_deref()),
        (Some("api.partner.example"), Some("API.Partner.Example."))
    );
    for filter in ["API.PARTNER.EXAMPLE.", "api.partner.example", "Partner"] {
        let rows = c.flows(filter);
        assert!(rows.iter().any(|r| r.sport == a.sport), "filter {filter:?} finds nothing: {rows:#?}");
    }
    assert!(c.flows("evil.example").is_empty());
    drop(daemon);
    let _ = fs::remove_dir_all(&d);
}

#[test]
#[ignore = "needs root"]
fn a_disallowed_host_gets_no_body_bytes_from_a_server_that_answers_at_once() {
    if !privileged() {
        return;
    }
    let rules = r#"
[zone.app]
match = { name = "client" }

[zone.svc]
cidrs = ["10.77.50.0/24"]

[[policy]]
id = "http-host"
from = "app"
to = "svc"
proto = "tcp"
ports = 8080
action = "allow"
inspect = { http_host = ["good.example"], on_violation = "cut" }
"#;
    let (lab, d) = client_and_server("http", rules);
    let client = lab.node("client").path();
    let cns = lab.node("client").ns.clone();
    // An 8 MiB answer, written the moment a request head is in.
    let srv = Observer::start(lab.node("server").path(), 8080, Some(8 << 20), Duration::from_secs(3));
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    ready(&daemon, &cns, "http-host");
    let mut c = Client::connect(&daemon.socket);
    let to: SocketAddr = format!("{SERVER}:8080").parse().unwrap();
    let req = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n").into_bytes();
    let mut body_bytes = Vec::new();
    for i in 0..20 {
        let a = attack::attack(&client, to, req("bad.example"), Plan::only(), Duration::from_secs(2));
        body_bytes.push(a.received);
        assert_cut(
            &format!("Host: bad.example, trial {i}"),
            &a,
            &srv,
            &mut c,
            &daemon,
            Duration::from_secs(1),
        );
    }
    assert!(body_bytes.iter().all(|&n| n == 0), "body bytes at the client: {body_bytes:?}");
    // The allowed Host gets its whole answer.
    let a = attack::attack(&client, to, req("good.example"), Plan::only(), Duration::from_secs(2));
    assert!(a.received > 8 << 20, "{a:?}");
    let i = row_of(&mut c, &daemon, a.sport).inspection.unwrap();
    assert_eq!((i.name.as_deref(), i.violation.as_deref()), (Some("good.example"), None));
    drop(daemon);
    let _ = fs::remove_dir_all(&d);
}

#[test]
#[ignore = "needs root"]
fn a_hello_that_never_completes_is_cut_when_its_timeout_fires() {
    if !privileged() {
        return;
    }
    let rules = TLS_RULES.replace(
        "inspect = { tls_sni = [\"ok.example\", \"api.partner.example\"], on_violation = \"cut\" }",
        "inspect = { tls_sni = [\"ok.example\"], on_violation = \"cut\", timeout = \"500ms\" }",
    );
    let (lab, d) = client_and_server("timeout", &rules);
    let client = lab.node("client").path();
    let cns = lab.node("client").ns.clone();
    let o443 = Observer::start(lab.node("server").path(), 443, None, Duration::from_secs(4));
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    ready(&daemon, &cns, "tls-sni");
    let mut c = Client::connect(&daemon.socket);
    let to: SocketAddr = format!("{SERVER}:443").parse().unwrap();
    // The first 10 bytes of a hello and then nothing: no packet arrives to decide it.
    let hello = attack::client_hello("ok.example");
    let a = attack::attack(&client, to, hello[..10].to_vec(), Plan::only(), Duration::from_secs(3));
    assert!(a.after >= Duration::from_millis(450), "cut before its timeout: {a:?}");
    assert_cut("a hello that never completes", &a, &o443, &mut c, &daemon, Duration::from_millis(1500));
    let i = row_of(&mut c, &daemon, a.sport).inspection.unwrap();
    assert_eq!(i.violation.as_deref(), Some("undecided after 500 ms"), "{i:?}");
    drop(daemon);
    let _ = fs::remove_dir_all(&d);
}

#[test]
#[ignore = "needs root"]
fn the_daemon_killed_mid_handshake_follows_the_fail_mode() {
    if !privileged() {
        return;
    }
    let rules = r#"
[zone.app]
match = { name = "client" }

[zone.svc]
cidrs = ["10.77.50.0/24"]

[[policy]]
id = "closed"
from = "app"
to = "svc"
proto = "tcp"
ports = 443
action = "allow"
inspect = { tls_sni = ["ok.example"], on_violation = "cut" }

[[policy]]
id = "open"
from = "app"
to = "svc"
proto = "tcp"
ports = 8443
action = "allow"
inspect = { tls_sni = ["ok.example"], on_violation = "cut", fail = "open" }
"#;
    let (lab, d) = client_and_server("down", rules);
    let client = lab.node("client").path();
    let cns = lab.node("client").ns.clone();
    let srv = lab.node("server").path();
    let closed = Observer::start(srv.clone(), 443, None, Duration::from_secs(6));
    let open = Observer::start(srv, 8443, None, Duration::from_secs(6));
    let mut daemon = Daemon::run_in_dir(&d, "1", &[]);
    ready(&daemon, &cns, "closed");
    let hello = attack::client_hello("evil.example");
    // A flagged flow on each port, mid-handshake: its first byte held, undecided.
    let start = |port: u16| {
        let to: SocketAddr = format!("{SERVER}:{port}").parse().unwrap();
        let mut s = run_in(&client, move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
            .unwrap()
            .expect("connect");
        s.set_nodelay(true).unwrap();
        s.write_all(&hello[..1]).unwrap();
        s
    };
    let (mut sc, mut so) = (start(443), start(8443));
    std::thread::sleep(Duration::from_millis(200));
    daemon.kill9();
    for s in [&mut sc, &mut so] {
        let _ = s.write_all(&hello[1..]);
        let _ = s.write_all(attack::LINE);
    }
    let (pc, po) = (sc.local_addr().unwrap().port(), so.local_addr().unwrap().port());
    // Fail open: the kernel lets the flow through uninspected; the byte dropped with the
    // daemon's queue comes again as a retransmission (within a second or two).
    let mut want = hello.clone();
    want.extend_from_slice(attack::LINE);
    std::thread::sleep(Duration::from_millis(2500));
    drop((sc, so));
    let seen = open.conn(po, Duration::from_secs(6)).expect("the fail-open flow's server side");
    assert_eq!(seen.bytes, want, "fail open: the flow did not get through");
    // Fail closed: the byte held when the daemon died was dropped, and nothing after it passes.
    let seen = closed.conn(pc, Duration::from_secs(6)).expect("the fail-closed flow's server side");
    assert!(seen.bytes.is_empty(), "fail closed: {} bytes got through", seen.bytes.len());
    // New flagged flows, with no daemon at all, do the same.
    let to = |p: u16| -> SocketAddr { format!("{SERVER}:{p}").parse().unwrap() };
    let a = attack::attack(&client, to(443), hello.clone(), Plan::whole(), Duration::from_millis(800));
    assert_ne!(a.end, End::NoConnect, "the handshake itself passes (no payload)");
    // (Its FIN rides on the held data, so the server's side stays open until it gives up.)
    assert!(closed.conn(a.sport, Duration::from_secs(8)).unwrap().bytes.is_empty());
    let a = attack::attack(&client, to(8443), hello.clone(), Plan::whole(), Duration::from_millis(800));
    assert!(!open.conn(a.sport, Duration::from_secs(8)).unwrap().bytes.is_empty());
    let _ = fs::remove_dir_all(&d);
}

#[test]
#[ignore = "needs root"]
fn queue_overflow_is_counted_and_alerted() {
    if !privileged() {
        return;
    }
    let rules = r#"
[zone.app]
match = { name = "client" }

[zone.svc]
cidrs = ["10.77.50.0/24"]

[[policy]]
id = "dns"
from = "app"
to = "svc"
proto = "udp"
ports = 53
action = "allow"
inspect = { dns_names = ["*.example.com"], on_violation = "alert" }
"#;
    let (lab, d) = client_and_server("overflow", rules);
    let client = lab.node("client").path();
    let cns = lab.node("client").ns.clone();
    let daemon = Daemon::run_in_dir(&d, "1", &[]);
    ready(&daemon, &cns, "dns");
    let mut c = Client::connect(&daemon.socket);
    // Stop the daemon: every query waits on the queue, and past its length the kernel drops.
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    daemon.freeze();
    let to: SocketAddr = format!("{SERVER}:53").parse().unwrap();
    let sent = run_in(&client, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        // A held datagram counts against its socket's send buffer until its verdict.
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBufForce, &(64 << 20)).unwrap();
        s.set_nonblocking(true).unwrap();
        (0..6000).filter(|_| s.send_to(DNS_QUERY, to).is_ok()).count()
    })
    .unwrap();
    assert_eq!(sent, 6000);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let alert = eventually("the overflow alert", &daemon, || {
        c.alerts(None, None).into_iter().find(|a| a.kind == AlertKind::InspectionOverflow)
    });
    let n: u64 =
        alert.message.split("overflow: ").nth(1).and_then(|m| m.split(' ').next()?.parse().ok()).unwrap_or(0);
    // 6000 - 4096: every thread was stopped before the first query, so none was answered.
    let past = 6000 - u64::from(fw_daemon::flows::inline::QUEUE_MAXLEN);
    assert!(n >= past - 100 && n <= 6000, "{alert:?}");
    // The stop and continue interrupted every collector's wait: none of them gave up.
    assert!(!daemon.log().contains("stopped error="), "{}", daemon.log());
    assert_eq!(alert.container.as_deref(), Some("client"));
    drop(daemon);
    let _ = fs::remove_dir_all(&d);
}

const DNS_QUERY: &[u8] = include_bytes!("../src/inspect/testdata/dns-query-api.example.com.bin");
