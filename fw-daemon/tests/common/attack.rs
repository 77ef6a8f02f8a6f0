//! The attacker's side of the containment tests: fw-attack's library run inside a lab
//! namespace (raw frames past the `output` hook, counting readers before the `input` hook,
//! the table tamperer), and its static binary for Docker images built from busybox-static.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use fw_attack::frame::{self, Eth, MacAddr, L4};
use fw_attack::link::{send_frames, Filter, Iface, Link, Reader, Sent};
use fw_daemon::netns::run_in;

/// The lab's interface inside every node.
pub const IFACE: &str = "eth0";

/// `eth0` of the namespace at `ns`: its MAC and addresses.
pub fn iface(ns: &Path) -> Iface {
    run_in(ns, || Link::open(IFACE, false).map(|l| l.iface))
        .expect("enter the namespace")
        .expect("open eth0 with AF_PACKET")
}

pub fn mac(ns: &Path) -> MacAddr {
    iface(ns).mac
}

/// A reader counting frames that arrive on `eth0` in `ns` and match `filter`, from now on.
pub fn reader(ns: &Path, filter: Filter) -> Reader {
    run_in(ns, || Link::open(IFACE, true).map(|l| l.into_reader(filter)))
        .expect("enter the namespace")
        .expect("open eth0 with AF_PACKET")
}

/// Writes `count` frames `make(seq)` on `eth0` in `ns` (past its netfilter `output` hook).
pub fn send_raw(
    ns: &Path,
    count: u64,
    interval: Duration,
    make: impl FnMut(u64) -> Vec<u8> + Send + 'static,
) -> Sent {
    run_in(ns, move || Link::open(IFACE, false).map(|mut l| send_frames(&mut l, count, interval, make)))
        .expect("enter the namespace")
        .expect("open eth0 with AF_PACKET")
}

/// A frame maker for UDP (`syn` false) or TCP SYN frames carrying `token`.
pub fn token_frames(
    eth: Eth,
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    syn: bool,
    token: &str,
) -> impl FnMut(u64) -> Vec<u8> + Send + 'static {
    let token = token.to_string();
    move |seq| {
        let p = frame::token_payload(&token, seq);
        let sport = 40000 + (seq % 1000) as u16;
        let l4 = if syn {
            L4::TcpSyn { sport, dport, seq: seq as u32, payload: &p }
        } else {
            L4::Udp { sport, dport, payload: &p }
        };
        frame::ip_frame(&eth, src, dst, &l4, seq as u16).expect("a valid frame")
    }
}

/// What `rx` counted, once frames still in flight have landed (the reader was opened before
/// anything was sent, so nothing is missed).
pub fn arrived(rx: Reader) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    rx.finish().matched
}

/// The fw-attack binary linked statically (glibc's static libc: no loader or libc needed in
/// a busybox-static image), built once per test process into its own target dir so it never
/// waits on the lock of the build that runs the tests. `FW_ATTACK_BIN` overrides.
pub fn static_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FW_ATTACK_BIN") {
            return PathBuf::from(p);
        }
        let repo = super::repo();
        let target = repo.join("target/attack-static");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(&repo)
            .args([
                "rustc",
                "--offline",
                "-p",
                "fw-attack",
                "--release",
                "--bin",
                "fw-attack",
                "--target-dir",
            ])
            .arg(&target)
            .args(["--", "-C", "target-feature=+crt-static"])
            .output()
            .expect("run cargo");
        assert!(out.status.success(), "static fw-attack build: {}", String::from_utf8_lossy(&out.stderr));
        let bin = target.join("release/fw-attack");
        let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
        let what =
            format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
        assert!(what.contains("statically linked") || what.contains("not a dynamic"), "not static: {what}");
        bin
    })
    .clone()
}

/// Leak ratio text for assertion messages.
pub fn of(n: u64, total: u64) -> String {
    format!("{n}/{total} frames arrived")
}
