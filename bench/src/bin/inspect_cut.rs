//! Benchmark (root): how long a flow that breaks its inspection policy keeps flowing, end to
//! end: offending packet -> NFLOG copy (tap) -> daemon inspection thread -> Inspector ->
//! daemon event loop -> 5-tuple block element in the container's namespace (+ conntrack
//! delete). Nothing here waits on the daemon: the question is how many ms of traffic slip
//! through before the cut lands.
//!
//! Two namespaces joined by a veth pair: `client` (10.81.0.1, managed, zone app) and a server
//! (10.81.0.2, external zone svc, not managed). Policy: app -> svc tcp/8081 allowed with
//! `inspect = { http_host = ["good.example"], on_violation = "cut" }`. Each trial: a fresh
//! connection (TCP_NODELAY), the client writes `GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n`
//! at t0 and then 64 bytes every 100 µs; the server (same process, one monotonic clock)
//! stamps every byte it receives. Latency = last byte received - t0. Also reported: the
//! bytes that got through after the request. Reports p50 / p99 / max.
//!
//! Run: cargo build --release -p fw-daemon && cargo run --release -p fw-bench --bin inspect_cut [TRIALS]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fw_bench::daemon::Daemon;
use fw_bench::Netns;
use fw_bench::{ip, pct};
use fw_daemon::netns::run_in;

const RULES: &str = r#"
[defaults]
action = "deny"
mode = "enforce"

[zone.app]
match = { name = "client" }

[zone.svc]
cidrs = ["10.81.0.2/32"]

[[policy]]
id = "http-host"
from = "app"
to = "svc"
proto = "tcp"
ports = 8081
action = "allow"
inspect = { http_host = ["good.example"], on_violation = "cut" }
"#;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n";

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let tag = std::process::id();
    let (cn, sn) = (format!("fwic{tag}-c"), format!("fwic{tag}-s"));
    let (client, server) = (Netns::new(&cn), Netns::new(&sn));
    ip(&["-n", &cn, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &sn]);
    for (ns, a) in [(&cn, "10.81.0.1/24"), (&sn, "10.81.0.2/24")] {
        ip(&["-n", ns, "addr", "add", a, "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let dir = std::env::temp_dir().join(format!("fw-inspect-cut-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rules")).expect("tmp");
    std::fs::write(dir.join("rules/policy.toml"), RULES).expect("rules");
    let inv = format!(
        "[[container]]\nname = \"client\"\nnetns = \"{}\"\naddresses = [\"10.81.0.1\"]\n",
        client.path().display()
    );
    std::fs::write(dir.join("inventory.toml"), inv).expect("inventory");
    let rules: PathBuf = dir.join("rules");
    let daemon = Daemon::start(&dir, &rules, &[]);
    let mut c = daemon.client();
    c.wait_programmed();
    // The collectors (and the inspection listener) start right after programming.
    std::thread::sleep(Duration::from_millis(500));

    let base = Instant::now();
    let last_rx = Arc::new(AtomicU64::new(0));
    let got = Arc::new(AtomicU64::new(0));
    let listener =
        run_in(&server.path(), || TcpListener::bind("10.81.0.2:8081")).expect("netns").expect("bind");
    let (lr, g) = (last_rx.clone(), got.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let (lr, g) = (lr.clone(), g.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    g.fetch_add(n as u64, Ordering::SeqCst);
                    lr.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                }
            });
        }
    });

    let dst = SocketAddr::from(([10, 81, 0, 2], 8081));
    let (mut lat, mut leaked) = (Vec::new(), Vec::new());
    let mut uncut = 0;
    for t in 0..trials {
        let mut s = run_in(&client.path(), move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
            .expect("netns")
            .unwrap_or_else(|e| panic!("trial {t}: connect: {e}"));
        s.set_nodelay(true).expect("nodelay");
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        got.store(0, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let t0 = base.elapsed().as_nanos() as u64;
        s.write_all(REQUEST).expect("request");
        let writer = std::thread::spawn(move || {
            let chunk = [b'x'; 64];
            while !st.load(Ordering::SeqCst) {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let last = last_rx.load(Ordering::SeqCst);
        let bytes = got.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        let _ = writer.join();
        // Still flowing at the end of the window: not cut (an engine or daemon failure).
        if base.elapsed().as_nanos() as u64 - last < 50_000_000 {
            uncut += 1;
            continue;
        }
        lat.push(last.saturating_sub(t0) as f64 / 1e6);
        leaked.push(bytes.saturating_sub(REQUEST.len() as u64) as f64);
    }
    assert!(!lat.is_empty(), "no trial was cut; see {}/daemon.log", dir.display());
    lat.sort_by(f64::total_cmp);
    leaked.sort_by(f64::total_cmp);
    println!(
        "inspection cut latency over {} trials (offending HTTP request written -> last byte through to the server):",
        lat.len()
    );
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    println!(
        "  bytes through after the request (64 B every 100 us): p50 {:.0}, p99 {:.0}",
        pct(&leaked, 0.5),
        pct(&leaked, 0.99)
    );
    if uncut > 0 {
        println!("  NOT CUT within 300 ms: {uncut} trial(s)");
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
