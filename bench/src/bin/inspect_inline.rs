//! Benchmark (root): what inline inspection costs a flagged flow, end to end, against the
//! same flow unflagged. Two namespaces joined by a veth pair: `client` (10.81.0.1, managed,
//! zone app) and a server (10.81.0.2, external zone svc). Port 443 is allowed with
//! `inspect = { tls_sni = ["ok.example"], on_violation = "cut" }`, port 444 plainly.
//!
//! 1. First-payload latency: a fresh connection (TCP_NODELAY), its ClientHello (allowed SNI)
//!    written at t0; latency = the server has every byte of it - t0 (one process, one
//!    monotonic clock). The flagged hello waits for the daemon's verdict; the plain one does
//!    not. Also the connect time (the handshake is never queued). p50 / p99, interleaved.
//! 2. Flagged connections judged per second: 4 clients in parallel, each connecting, writing
//!    the hello and waiting for it at the server, for a few seconds; the daemon's CPU time
//!    over the run gives connections per core-second.
//! 3. Throughput of an established flow after its verdict vs an unflagged one: one stream
//!    per port, 64 KiB writes for `SECS` seconds, rounds interleaved, median reported.
//! 4. A cut: the disallowed hello in 3 segments; bytes reaching the server (must be 0) and
//!    the time from the last write until the client sees its reset.
//!
//! Run: cargo build --release -p fw-daemon && cargo run --release -p fw-bench --bin inspect_inline [TRIALS]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fw_bench::daemon::{proc_usage, Daemon};
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
id = "tls-sni"
from = "app"
to = "svc"
proto = "tcp"
ports = 443
action = "allow"
inspect = { tls_sni = ["ok.example"], on_violation = "cut" }

[[policy]]
id = "plain"
from = "app"
to = "svc"
proto = "tcp"
ports = 444
action = "allow"
"#;

/// A ~512-byte ClientHello asking for `sni` (as tests/common/attack.rs builds it).
fn hello(sni: &str) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend((0..32u8).map(|i| i.wrapping_mul(7)));
    body.push(32);
    body.extend((0..32u8).map(|i| i.wrapping_mul(13)));
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
    let mut ext = vec![0, 43, 0, 3, 2, 3, 4];
    let n = sni.as_bytes();
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
    ext.extend_from_slice(n);
    let pad = 512usize.saturating_sub(4 + body.len() + 2 + ext.len() + 4);
    ext.extend_from_slice(&[0, 21]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.resize(ext.len() + pad, 0);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A server on `port` that stamps, per client port, when it had received `want` bytes, and
/// counts every byte (for throughput and leaks).
struct Server {
    done: Arc<Mutex<std::collections::HashMap<u16, u64>>>,
    bytes: Arc<AtomicU64>,
}

fn serve(ns: &Netns, port: u16, want: usize, base: Instant) -> Server {
    let l = run_in(&ns.path(), move || TcpListener::bind(("10.81.0.2", port))).expect("netns").expect("bind");
    let done = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let bytes = Arc::new(AtomicU64::new(0));
    let (d, b) = (done.clone(), bytes.clone());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let (d, b) = (d.clone(), b.clone());
            std::thread::spawn(move || {
                let sport = s.peer_addr().map_or(0, |a| a.port());
                let mut buf = vec![0u8; 1 << 16];
                let mut got = 0usize;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if got < want && got + n >= want {
                        d.lock().unwrap().insert(sport, base.elapsed().as_nanos() as u64);
                    }
                    got += n;
                    b.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Server { done, bytes }
}

/// One connection: (connect ms, first payload at the server ms).
fn one(client: &std::path::Path, srv: &Server, port: u16, data: &[u8], base: Instant) -> Option<(f64, f64)> {
    let dst = SocketAddr::from(([10, 81, 0, 2], port));
    let t0 = Instant::now();
    let mut s = run_in(client, move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
        .expect("netns")
        .ok()?;
    let connect = t0.elapsed().as_secs_f64() * 1e3;
    s.set_nodelay(true).ok()?;
    let sport = s.local_addr().ok()?.port();
    let w = base.elapsed().as_nanos() as u64;
    s.write_all(data).ok()?;
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(&at) = srv.done.lock().unwrap().get(&sport) {
            return Some((connect, at.saturating_sub(w) as f64 / 1e6));
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::yield_now();
    }
}

fn summary(label: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return println!("  {label}: no samples");
    }
    println!("  {label}: p50 {:.3} ms, p99 {:.3} ms ({} samples)", pct(&v, 0.5), pct(&v, 0.99), v.len());
}

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let secs: u64 = std::env::var("SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let tag = std::process::id();
    let (cn, sn) = (format!("fwii{tag}-c"), format!("fwii{tag}-s"));
    let (client, server) = (Netns::new(&cn), Netns::new(&sn));
    ip(&["-n", &cn, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &sn]);
    for (ns, a) in [(&cn, "10.81.0.1/24"), (&sn, "10.81.0.2/24")] {
        ip(&["-n", ns, "addr", "add", a, "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let dir = std::env::temp_dir().join(format!("fw-inspect-inline-{tag}"));
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
    std::thread::sleep(Duration::from_millis(500));

    let base = Instant::now();
    let ok = hello("ok.example");
    let (flagged, plain) = (serve(&server, 443, ok.len(), base), serve(&server, 444, ok.len(), base));

    // 1. Latency of the first payload, interleaved.
    let (mut fc, mut ff, mut pc, mut pf) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0;
    for _ in 0..trials {
        match one(&client.path(), &flagged, 443, &ok, base) {
            Some((c, f)) => {
                fc.push(c);
                ff.push(f);
            }
            None => lost += 1,
        }
        if let Some((c, f)) = one(&client.path(), &plain, 444, &ok, base) {
            pc.push(c);
            pf.push(f);
        }
    }
    println!("inline inspection, {trials} connections per port (ClientHello with an allowed SNI):");
    summary("connect, flagged", fc);
    summary("connect, plain  ", pc);
    summary("hello written -> all at the server, flagged", ff.clone());
    summary("hello written -> all at the server, plain  ", pf.clone());
    let (mut a, mut b) = (ff, pf);
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    if !a.is_empty() && !b.is_empty() {
        println!(
            "  added by inspection: p50 {:.3} ms, p99 {:.3} ms",
            pct(&a, 0.5) - pct(&b, 0.5),
            pct(&a, 0.99) - pct(&b, 0.99)
        );
    }
    if lost > 0 {
        println!("  NOT DELIVERED within 2 s: {lost} flagged hello(s)");
    }

    // 2. Flagged connections judged per second, per core of the daemon.
    let (t0, _, _) = proc_usage(daemon.pid());
    let start = Instant::now();
    let n = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (n, ok) = (n.clone(), ok.clone());
            let (cp, done) = (client.path(), flagged.done.clone());
            let srv = Server { done, bytes: Arc::new(AtomicU64::new(0)) };
            std::thread::spawn(move || {
                while start.elapsed() < Duration::from_secs(secs) {
                    if one(&cp, &srv, 443, &ok, base).is_some() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let wall = start.elapsed().as_secs_f64();
    let (t1, _, _) = proc_usage(daemon.pid());
    let tick = 100.0; // USER_HZ
    let cpu = (t1 - t0) as f64 / tick;
    let conns = n.load(Ordering::Relaxed) as f64;
    println!(
        "flagged connections judged: {:.0}/s over {wall:.1} s (4 clients), daemon CPU {cpu:.2} s: {:.0} per core-second",
        conns / wall,
        if cpu > 0.0 { conns / cpu } else { f64::NAN }
    );

    // 3. Throughput after the verdict, flagged vs plain, interleaved rounds.
    let stream = |port: u16, srv: &Server| -> f64 {
        let dst = SocketAddr::from(([10, 81, 0, 2], port));
        let mut s = run_in(&client.path(), move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
            .expect("netns")
            .expect("connect");
        s.write_all(&ok).expect("hello");
        std::thread::sleep(Duration::from_millis(20));
        let buf = vec![b'x'; 1 << 16];
        let before = srv.bytes.load(Ordering::Relaxed);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(100));
        (srv.bytes.load(Ordering::Relaxed) - before) as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9
    };
    let (mut tf, mut tp) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        tf.push(stream(443, &flagged));
        tp.push(stream(444, &plain));
    }
    tf.sort_by(f64::total_cmp);
    tp.sort_by(f64::total_cmp);
    println!(
        "throughput after the verdict ({secs} s x 5 rounds, median): flagged {:.2} Gbit/s, plain {:.2} Gbit/s ({:.3}x)",
        pct(&tf, 0.5),
        pct(&tp, 0.5),
        pct(&tf, 0.5) / pct(&tp, 0.5)
    );

    // 4. A cut.
    let evil = hello("evil.example");
    let (mut leaked, mut reset) = (0u64, Vec::new());
    for _ in 0..20 {
        let before = flagged.bytes.load(Ordering::Relaxed);
        let dst = SocketAddr::from(([10, 81, 0, 2], 443));
        let mut s = run_in(&client.path(), move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
            .expect("netns")
            .expect("connect");
        s.set_nodelay(true).expect("nodelay");
        for part in [&evil[..1], &evil[1..2], &evil[2..]] {
            let _ = s.write_all(part);
        }
        let t = Instant::now();
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                reset.push(t.elapsed().as_secs_f64() * 1e3)
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
        leaked += flagged.bytes.load(Ordering::Relaxed) - before;
    }
    println!(
        "cut (disallowed SNI in 3 segments), 20 trials: {leaked} bytes reached the server, {} resets",
        reset.len()
    );
    summary("last write -> the client's reset", reset);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
