//! Inspection end to end: `fw-daemon run` on a namespace lab, real clients (openssl s_client,
//! curl, nc, dig) in a managed container, real servers (openssl s_server, python3 http.server,
//! a python3 DNS stub) outside it, and tshark capturing the same traffic as a second opinion.
//!
//! - an allowed SNI passes and its flow row says `tls` / `ok.example`;
//! - a disallowed SNI is cut: the server never sees the application data the client sends
//!   after the handshake. NFLOG is asynchronous, so the ClientHello itself (and whatever the
//!   handshake sends before the block lands, a few ms) does reach the server;
//! - a disallowed HTTP Host is cut (curl, and a raw client whose later bytes must not arrive);
//! - an SSH banner on a `protocol = "tls"` port is cut (nc);
//! - DNS query names are recorded, a disallowed one is flagged (alert only), and a later flow
//!   to an address the answer named shows that name as its peer;
//! - tshark's dissectors report exactly the names the daemon reported.

mod common;

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
    eventually("the client's table", &daemon, || {
        sh_in(&ns("client"), "nft list chain inet fw egress").contains("fw:inspect:tls-sni").then_some(())
    });
    let mut c = Client::connect(&daemon.socket);
    // The listeners bind as the collectors start; give them a moment.
    std::thread::sleep(Duration::from_millis(500));

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
    std::thread::sleep(Duration::from_millis(500));
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
    std::thread::sleep(Duration::from_millis(500));
    let _ = s.write_all(b"MORE BYTES AFTER THE CUT");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(http_sink.load(Ordering::Relaxed), request.len() as u64, "bytes after the cut arrived");

    // Not TLS on a TLS-only port: an SSH banner from nc.
    let banner = "SSH-2.0-OpenSSH_9.2p1\r\n";
    sh_in(
        &ns("client"),
        &format!("(printf 'SSH-2.0-OpenSSH_9.2p1\\r\\n'; sleep 1; printf AFTER-THE-CUT; sleep 1) | timeout 4 nc {SERVER} 8443"),
    );
    assert_eq!(ssh_sink.load(Ordering::Relaxed), banner.len() as u64, "bytes after the banner arrived");

    // DNS: an allowed name (answered WEB), a disallowed one (alert only).
    let a = sh_in(&ns("client"), &format!("dig @{RESOLVER} www.good.example A +tries=1 +time=2 +short"));
    assert_eq!(a.trim(), WEB);
    sh_in(&ns("client"), &format!("dig @{RESOLVER} evil.test A +tries=1 +time=2 +short"));
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

    // Cuts are 5-tuple blocks; the DNS violation (alert only) placed none.
    let blocks = c.blocks();
    let cut_ports: BTreeSet<u16> = blocks
        .iter()
        .filter_map(|b| match &b.target {
            BlockTarget::Flow { dport, .. } => Some(*dport),
            _ => None,
        })
        .collect();
    assert_eq!(cut_ports, [443, 8080, 8081, 8443].into_iter().collect(), "{blocks:#?}");
    let alerts = c.alerts(None, None);
    let violations: Vec<&Alert> = alerts.iter().filter(|a| a.kind == AlertKind::Violation).collect();
    assert_eq!(violations.len(), 5, "{alerts:#?}");
    assert!(violations.iter().any(|a| a.message.contains("evil.test") && a.message.contains("alert only")));

    // tshark agrees on every name.
    let sni =
        tshark_fields(&pcap, "tls.handshake.extensions_server_name", "tls.handshake.extensions_server_name");
    assert_eq!(sni, names(&rows, &[443]), "SNI: tshark vs daemon");
    assert_eq!(sni, set(&["ok.example", "evil.example"]));
    let hosts = tshark_fields(&pcap, "http.host", "http.host");
    assert_eq!(hosts, names(&rows, &[8080, 8081]), "Host: tshark vs daemon");
    let qnames = tshark_fields(&pcap, "dns.flags.response == 0", "dns.qry.name");
    assert_eq!(qnames, names(&rows, &[53]), "DNS: tshark vs daemon");
    assert_eq!(qnames, set(&["www.good.example", "evil.test"]));
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
    eventually("the client's table", &daemon, || {
        sh_in(&client_ns, "nft list chain inet fw egress").contains("fw:inspect:tls-or-else").then_some(())
    });
    let mut c = Client::connect(&daemon.socket);
    std::thread::sleep(Duration::from_millis(500));
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
    drop(daemon);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn with_the_daemon_down_inspected_flows_follow_the_rules_as_written() {
    if !privileged() {
        return;
    }
    let rules = r#"
[zone.app]
match = { name = "client" }

[zone.svc]
cidrs = ["10.77.50.0/24"]

[[policy]]
id = "tls-only"
from = "app"
to = "svc"
proto = "tcp"
ports = 8443
action = "allow"
inspect = { protocol = "tls", on_violation = "cut" }
"#;
    let (mut lab, d) = client_and_server("down", rules);
    let sink = lab.serve_sink("server", 8443);
    let client = lab.node("client").path();
    let client_ns = lab.node("client").ns.clone();
    let mut daemon = Daemon::run_in_dir(&d, "1", &[]);
    eventually("the client's table", &daemon, || {
        sh_in(&client_ns, "nft list chain inet fw egress").contains("fw:inspect:tls-only").then_some(())
    });
    daemon.kill9();
    // The tap stays in the table and copies to a group nobody reads: the flow is allowed by
    // its policy, nothing stalls, nothing cuts it.
    let to: SocketAddr = format!("{SERVER}:8443").parse().unwrap();
    let mut s = run_in(&client, move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
        .unwrap()
        .expect("connect with the daemon down");
    let data = b"SSH-2.0-not-tls\r\n";
    let started = Instant::now();
    for _ in 0..20 {
        s.write_all(data).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let want = 20 * data.len() as u64;
    while sink.load(Ordering::Relaxed) < want {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "only {} of {want} bytes",
            sink.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_dir_all(&d);
}
