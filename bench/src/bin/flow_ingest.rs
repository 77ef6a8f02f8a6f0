//! Benchmark (root): flow ingestion by `fw-daemon run`.
//!
//! Ten generator namespaces and one sink on a bridge (10.81.0.0/24, no route out). Each
//! generator sends one UDP datagram per new destination port to the sink, paced to RATE/10
//! new flows per second, for SECONDS: every datagram is a new conntrack entry, hence one NEW
//! event in that namespace for the daemon to read. Reports the events the daemon lost (its
//! `lost_events`), its CPU time and RSS, and the rows it holds (the table is capped at
//! 100,000 rows by default, so the end of the run also measures RSS with the table full).
//!
//! The global conntrack limit is raised for the run (500k entries live at once) and
//! restored afterwards.
//!
//! Run: cargo build --release -p fw-daemon && cargo run --release -p fw-bench --bin flow_ingest [RATE] [SECONDS]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fw_bench::daemon::{proc_usage, Daemon};
use fw_bench::ip;
use fw_bench::Netns;
use fw_daemon::netns::run_in;
use fw_proto::control::{Answer, Op};

const GENERATORS: usize = 10;

const RULES: &str = r#"
[defaults]
action = "deny"

[zone.gen]
match = { name = "gen-*" }

[zone.sink]
match = { name = "sink" }

[[policy]]
id = "gen-to-sink"
from = "gen"
to = "sink"
proto = "udp"
ports = ["1-65535"]
action = "allow"
"#;

/// Restores a sysctl on drop.
struct Sysctl(&'static str, String);

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap_or_default().trim().to_string();
        std::fs::write(path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
        Sysctl(path, old)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, &self.1);
    }
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rate = args.first().copied().unwrap_or(50_000);
    let secs = args.get(1).copied().unwrap_or(10);
    let tag = std::process::id();
    let _max = Sysctl::set("/proc/sys/net/netfilter/nf_conntrack_max", "1048576");

    let bridge = Netns::new(&format!("fwfi{tag}-br"));
    let bn = format!("fwfi{tag}-br");
    ip(&["-n", &bn, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &bn, "link", "set", "br0", "up"]);
    let mut nodes = Vec::new();
    for i in 0..=GENERATORS {
        let (name, addr) = if i == GENERATORS {
            ("sink".to_string(), "10.81.0.100".to_string())
        } else {
            (format!("gen-{i}"), format!("10.81.0.{}", i + 1))
        };
        let ns_name = format!("fwfi{tag}-{name}");
        let ns = Netns::new(&ns_name);
        let port = format!("p{i}");
        ip(&["-n", &ns_name, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &bn]);
        ip(&["-n", &bn, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns_name, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", &ns_name, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns_name, "link", "set", "lo", "up"]);
        nodes.push((name, addr, ns));
    }
    let dir = std::env::temp_dir().join(format!("fw-flow-ingest-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rules")).expect("tmp");
    std::fs::write(dir.join("rules/rules.toml"), RULES).expect("rules");
    let inv: String = nodes
        .iter()
        .map(|(n, a, ns)| {
            format!(
                "[[container]]\nname = \"{n}\"\nnetns = \"{}\"\naddresses = [\"{a}\"]\n\n",
                ns.path().display()
            )
        })
        .collect();
    std::fs::write(dir.join("inventory.toml"), inv).expect("inventory");
    let daemon = Daemon::start(&dir, &dir.join("rules"), &[]);
    let mut c = daemon.client();
    c.wait_programmed();
    // Let the collectors attach (they start right after programming).
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, rss0, _) = proc_usage(daemon.pid());

    let sink: SocketAddr = "10.81.0.100:9".parse().expect("addr");
    let per_gen = rate / GENERATORS as u64;
    let start = Instant::now();
    let started = Arc::new(start);
    let handles: Vec<_> = nodes[..GENERATORS]
        .iter()
        .map(|(_, _, ns)| {
            let sock = run_in(&ns.path(), || UdpSocket::bind("0.0.0.0:0")).expect("netns").expect("udp");
            let t0 = started.clone();
            std::thread::spawn(move || {
                let total = per_gen * secs;
                let mut sent = 0u64;
                let mut port = 1u16;
                while sent < total {
                    // Pace to the schedule in 1 ms slices.
                    let due = (t0.elapsed().as_secs_f64() * per_gen as f64) as u64;
                    while sent < due.min(total) {
                        let _ = sock.send_to(b"x", SocketAddr::new(sink.ip(), port));
                        port = if port == u16::MAX { 1 } else { port + 1 };
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                sent
            })
        })
        .collect();
    let sent: u64 = handles.into_iter().map(|h| h.join().expect("generator")).sum();
    let gen_secs = start.elapsed().as_secs_f64();
    // Give the daemon a moment to drain its sockets.
    std::thread::sleep(Duration::from_secs(2));
    let (cpu1, rss1, hwm) = proc_usage(daemon.pid());
    let status = match c.call(Op::Status) {
        Ok(Answer::Status(s)) => s,
        other => panic!("status: {other:?}"),
    };
    let tick = 100.0; // USER_HZ
    println!(
        "flow ingestion: {sent} new flows in {gen_secs:.1} s ({:.0}/s) across {GENERATORS} namespaces",
        sent as f64 / gen_secs
    );
    println!("  events lost (daemon lost_events): {}", status.lost_events);
    println!(
        "  daemon CPU: {:.2} s over the run ({:.0}% of one core)",
        (cpu1 - cpu0) as f64 / tick,
        (cpu1 - cpu0) as f64 / tick / (gen_secs + 2.0) * 100.0
    );
    println!(
        "  daemon RSS: {} KiB before, {} KiB after, peak {} KiB; flow rows held: {}",
        rss0, rss1, hwm, status.flows
    );
    drop(daemon);
    drop(nodes);
    drop(bridge);
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
}
