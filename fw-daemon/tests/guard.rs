//! The host-side guard (`table bridge fw_guard`) in a namespace standing in for the host:
//! frames from a veth port whose MAC is not admitted never cross the bridge, admitted ones
//! do, and the table reads back as the nft client understands it. Exercises the bridge
//! family sets, the ether_addr key and the inverted lookup written over nftnl-sys.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::lab::{tcp_probe, Probe};
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

fn mac(ns: &str) -> [u8; 6] {
    let out = Command::new("ip").args(["-n", ns, "link", "show", "eth0"]).output().expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).expect("mac");
    let mut m = [0u8; 6];
    for (i, b) in hex.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).expect("hex");
    }
    m
}

#[test]
fn guard_admits_only_listed_macs() {
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
    assert_eq!(tcp_probe(&path("c"), a, t), Probe::Connected, "no guard yet");

    let mut nft = Nft::open(&PathBuf::from(format!("/run/netns/{host}")), "host").expect("open");
    nft.apply_guard(&[mac(&format!("{p}-a")), mac(&format!("{p}-b"))]).expect("guard");
    assert_eq!(tcp_probe(&path("b"), a, t), Probe::Connected, "b is admitted");
    assert_ne!(tcp_probe(&path("c"), a, t), Probe::Connected, "c is not admitted");

    let out = Command::new("ip")
        .args(["netns", "exec", &host, "nft", "list", "table", "bridge", "fw_guard"])
        .output();
    let listing = String::from_utf8_lossy(&out.expect("nft").stdout).into_owned();
    assert!(listing.contains("iifname \"veth*\" ether saddr != @programmed counter"), "{listing}");
    assert!(listing.contains("type ether_addr"), "{listing}");

    // Replaced, not appended: admitting c alone cuts b.
    nft.apply_guard(&[mac(&format!("{p}-a")), mac(&format!("{p}-c"))]).expect("guard");
    assert_eq!(tcp_probe(&path("c"), a, t), Probe::Connected, "c admitted now");
    assert_ne!(tcp_probe(&path("b"), a, t), Probe::Connected, "b no longer admitted");
    // `fw-daemon flush --guard` run in that namespace lifts it.
    let out = Command::new("ip")
        .args(["netns", "exec", &host, env!("CARGO_BIN_EXE_fw-daemon"), "flush", "--guard"])
        .output()
        .expect("fw-daemon flush --guard");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tables = Command::new("ip").args(["netns", "exec", &host, "nft", "list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("fw_guard"));
    assert_eq!(tcp_probe(&path("b"), a, t), Probe::Connected, "guard lifted");
    drop(nft);
    drop(spaces);
}
