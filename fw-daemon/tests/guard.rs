//! The floor's guard in a namespace standing in for the host (Docker's bridges live in the
//! host's): a `veth*` port fw has not programmed sends and receives nothing, an admitted
//! port's traffic follows the policy, admission is by port (a new port with an admitted
//! MAC and address is still cut), and `fw-daemon flush --guard` lifts it.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::lab::{tcp_probe, Probe};
use fw_daemon::compile::{CompileOptions, Membership};
use fw_daemon::floor::{compile_floor, FloorOptions, Port};
use fw_daemon::netns::run_in;
use fw_daemon::nft::Nft;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

struct Spaces(Vec<String>);

impl Drop for Spaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn link(ns: &str, dev: &str) -> (u32, [u8; 6]) {
    let out = Command::new("ip").args(["-n", ns, "-o", "link", "show", dev]).output().expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    let index = text.split(':').next().unwrap().trim().parse().expect("ifindex");
    let hex = text.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).expect("mac");
    let mut m = [0u8; 6];
    for (i, b) in hex.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).expect("hex");
    }
    (index, m)
}

#[test]
#[ignore = "needs root"]
fn the_guard_admits_programmed_ports_only() {
    if !common::require(common::lab::available(), "root with iproute2 (network namespaces)") {
        return;
    }
    let p = format!("fwg{}", std::process::id());
    let host = format!("{p}-host");
    let spaces = Spaces(vec![host.clone(), format!("{p}-a"), format!("{p}-b"), format!("{p}-c")]);
    ip(&["netns", "add", &host]);
    ip(&["-n", &host, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &host, "link", "set", "br0", "up"]);
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        let ns = format!("{p}-{n}");
        ip(&["netns", "add", &ns]);
        let port = format!("veth{n}");
        ip(&["-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &host]);
        ip(&["-n", &host, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("10.88.0.{}/24", i + 1), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
    }
    let path = |n: &str| PathBuf::from(format!("/run/netns/{p}-{n}"));
    let l = run_in(&path("a"), || TcpListener::bind("0.0.0.0:7000")).unwrap().expect("bind");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"ok");
        }
    });
    let a: SocketAddr = "10.88.0.1:7000".parse().unwrap();
    let t = Duration::from_millis(500);
    assert_eq!(tcp_probe(&path("c"), a, t), Probe::Connected, "no floor yet");

    // Everyone in one zone that may talk to itself.
    let policy = common::policy(&[(
        "p.toml",
        "[zone.app]\nmatch = { name = \"*\" }\n[[policy]]\nfrom = \"app\"\nto = \"app\"\naction = \"allow\"\n",
    )]);
    let inv = common::inventory(
        "[[container]]\nname = \"a\"\naddresses = [\"10.88.0.1\"]\n[[container]]\nname = \"b\"\naddresses = [\"10.88.0.2\"]\n[[container]]\nname = \"c\"\naddresses = [\"10.88.0.3\"]\n",
    );
    let m = Membership::new(&policy, &inv);
    let port = |n: &str, addr: &str| {
        let (ifindex, _) = link(&host, &format!("veth{n}"));
        let (_, mac) = link(&format!("{p}-{n}"), "eth0");
        Port {
            containers: vec![n.into()],
            ifindex,
            ifname: format!("veth{n}"),
            mac,
            addrs: vec![addr.parse().unwrap()],
        }
    };
    let opts = FloorOptions { guard_prefixes: vec!["veth".into()], ..FloorOptions::default() };
    let floor = |ports: &[Port]| {
        compile_floor(&policy, &m, ports, &Default::default(), &CompileOptions::default(), &opts)
    };
    let mut nft = Nft::open(&PathBuf::from(format!("/run/netns/{host}")), "host").expect("open");
    nft.apply(&floor(&[port("a", "10.88.0.1"), port("b", "10.88.0.2")])).expect("floor");
    assert_eq!(tcp_probe(&path("b"), a, t), Probe::Connected, "b is admitted");
    assert_ne!(tcp_probe(&path("c"), a, t), Probe::Connected, "c is not admitted");

    let out = Command::new("ip")
        .args(["netns", "exec", &host, "nft", "list", "table", "bridge", "fw_floor"])
        .output();
    let listing = String::from_utf8_lossy(&out.expect("nft").stdout).into_owned();
    assert!(listing.contains("iif != @ports iifname \"veth*\" counter"), "{listing}");
    assert!(listing.contains("type iface_index . ether_addr"), "{listing}");

    // Admission is by port: b recreated on a new port with its old address and MAC is cut,
    // its old admission does not carry over.
    let (_, old_mac) = link(&format!("{p}-b"), "eth0");
    let old_mac: Vec<String> = old_mac.iter().map(|b| format!("{b:02x}")).collect();
    ip(&["netns", "del", &format!("{p}-b")]);
    ip(&["netns", "add", &format!("{p}-b")]);
    ip(&[
        "-n",
        &format!("{p}-b"),
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "vethb2",
        "netns",
        &host,
    ]);
    ip(&["-n", &format!("{p}-b"), "link", "set", "eth0", "address", &old_mac.join(":")]);
    ip(&["-n", &host, "link", "set", "vethb2", "master", "br0", "up"]);
    ip(&["-n", &format!("{p}-b"), "addr", "add", "10.88.0.2/24", "dev", "eth0"]);
    ip(&["-n", &format!("{p}-b"), "link", "set", "eth0", "up"]);
    assert_ne!(tcp_probe(&path("b"), a, t), Probe::Connected, "a new port is cut until programmed");

    // `fw-daemon flush --guard` run in that namespace lifts it.
    let out = Command::new("ip")
        .args(["netns", "exec", &host, env!("CARGO_BIN_EXE_fw-daemon"), "flush", "--guard"])
        .output()
        .expect("fw-daemon flush --guard");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tables = Command::new("ip").args(["netns", "exec", &host, "nft", "list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("fw_floor"));
    assert_eq!(tcp_probe(&path("c"), a, t), Probe::Connected, "floor lifted");
    drop(nft);
    drop(spaces);
}
