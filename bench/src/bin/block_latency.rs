//! Benchmark (root): how fast a block stops a live TCP stream, through the whole path an
//! incident responder uses: control socket request -> daemon -> set element in the
//! container's namespace (+ conntrack deletion).
//!
//! Two namespaces on a bridge in a third (10.80.0.1 web-1, 10.80.0.2 api-1, no route out), so
//! the daemon programs both their tables and the floor on the bridge; the demo policy,
//! `fw-daemon run` with a static inventory. Each trial: a fresh TCP stream from
//! web-1 to api-1:8080 (512-byte writes, 50 µs sleep between), then `block destination api-1 for
//! web-1`; the latency is from just before the request is sent to the arrival of the last
//! byte of the stream at api-1 (both ends in this process, one monotonic clock; the kernel's
//! receive timestamp of the last segment, SO_TIMESTAMPNS, so the receiver's own wake-up on a
//! busy machine is not counted: the time it read the byte is reported beside it). Then
//! unblock, next trial. Reports p50 / p99 / max, and the request round trip alone.
//!
//! Run: cargo build --release -p fw-daemon && cargo run --release -p fw-bench --bin block_latency [TRIALS]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fw_bench::daemon::Daemon;
use fw_bench::pct;
use fw_daemon::netns::run_in;
use fw_proto::control::*;

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");

    let tag = std::process::id();
    let (web, api, _hub) = fw_bench::bridged_pair(&format!("fwbl{tag}"));
    let dir = std::env::temp_dir().join(format!("fw-block-latency-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp");
    let inv = format!(
        "[[container]]\nname = \"web-1\"\nnetns = \"{}\"\naddresses = [\"10.80.0.1\"]\n\n[[container]]\nname = \"api-1\"\nnetns = \"{}\"\nlabels = {{ tier = \"api\" }}\naddresses = [\"10.80.0.2\"]\n",
        web.path().display(),
        api.path().display()
    );
    std::fs::write(dir.join("inventory.toml"), inv).expect("inventory");
    let daemon = Daemon::start(&dir, &root.join("rules/demo"), &[]);
    let mut c = daemon.client();
    c.wait_programmed();

    let base = Instant::now();
    let last = fw_bench::last_byte_server(&api.path(), SocketAddr::from(([10, 80, 0, 2], 8080)), base);

    let dst = SocketAddr::from(([10, 80, 0, 2], 8080));
    let target = BlockTarget::Destination {
        scope: Scope::Container("web-1".into()),
        net: "10.80.0.2/32".parse().expect("net"),
        proto: None,
        port: None,
    };
    let (mut lat, mut read, mut rtt) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..trials {
        let s = run_in(&web.path(), move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
            .expect("netns")
            .expect("connect (previous unblock not effective?)");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = fw_bench::trickle(s, stop.clone());
        std::thread::sleep(Duration::from_millis(30));
        let t0 = base.elapsed().as_nanos() as u64;
        assert!(
            last.arrived.load(Ordering::SeqCst) > t0 - 20_000_000,
            "trial {t}: the stream is not flowing"
        );
        let sent = Instant::now();
        let b = match c.call(Op::Block {
            target: target.clone(),
            ttl_secs: None,
            ttl_ms: None,
            reason: Some("bench".into()),
        }) {
            Ok(Answer::Blocked { block }) => block,
            other => panic!("block: {other:?}"),
        };
        rtt.push(sent.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(100));
        let arrived = last.arrived.load(Ordering::SeqCst);
        lat.push(arrived.saturating_sub(t0) as f64 / 1e6);
        read.push(last.read.load(Ordering::SeqCst).saturating_sub(t0) as f64 / 1e6);
        stop.store(true, Ordering::SeqCst);
        c.call(Op::Unblock { block: b.id }).expect("unblock");
        let _ = writer.join();
    }
    lat.sort_by(f64::total_cmp);
    rtt.sort_by(f64::total_cmp);
    read.sort_by(f64::total_cmp);
    println!("block latency over {trials} trials (request start -> last byte of the stream through):");
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    let tail: Vec<String> = lat.iter().rev().take(5).map(|v| format!("{v:.2}")).collect();
    println!("  slowest five: {} ms", tail.join(", "));
    println!(
        "  read by the receiver (arrival + its wake-up): p50 {:.2} ms, p99 {:.2} ms",
        pct(&read, 0.5),
        pct(&read, 0.99)
    );
    println!(
        "  block request round trip (answer received): p50 {:.2} ms, p99 {:.2} ms",
        pct(&rtt, 0.5),
        pct(&rtt, 0.99)
    );
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
