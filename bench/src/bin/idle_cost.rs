//! Benchmark (root): what `fw-daemon run` costs when nothing happens, by number of
//! namespaces (issue 15's table). For each N: N plain namespaces (loopback only, no links,
//! no traffic) in an inventory cycling through the demo zones, the demo rules, the release
//! daemon; after every container is programmed and a settle, the daemon's CPU share of one
//! core over the measuring window, its thread count and RSS. Two consoles stay subscribed
//! (flows and alerts) during the window: subscriptions must cost no thread either.
//!
//! Run: cargo build --release -p fw-daemon -p fw-bench &&
//!      target/release/idle_cost [N ...] (default 50 100 250 1000; SETTLE=25 MEASURE=20 seconds)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fw_bench::daemon::{proc_usage, Daemon};
use fw_bench::Netns;
use fw_proto::control::{FlowFilter, Op, Request, PROTOCOL_VERSION};

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A demo-zone container for namespace `i` (the scheme of bench/apply-200.sh).
fn container(i: usize, ns: &Netns) -> String {
    let kinds = ["web", "api", "db", "dns", "batch", "misc"];
    let k = kinds[i % kinds.len()];
    let image = if k == "db" { "postgres:16".to_string() } else { format!("fw/{k}:1") };
    let labels = if k == "api" { "labels = { tier = \"api\" }\n" } else { "" };
    format!(
        "[[container]]\nname = \"{k}-c{i}\"\nnetns = \"{}\"\nimage = \"{image}\"\n{labels}addresses = [\"10.79.{}.{}\", \"fd79::{i:x}\"]\n\n",
        ns.path().display(),
        i / 250,
        i % 250 + 1
    )
}

/// A console's subscription, held open (its events are read and dropped on a thread).
fn subscribe(socket: &std::path::Path, alerts: bool) -> UnixStream {
    let s = UnixStream::connect(socket).expect("connect");
    let mut w = s.try_clone().expect("clone");
    for (id, op) in [
        (1, Op::Hello { version: PROTOCOL_VERSION, client: "idle-bench".into() }),
        (2, Op::Subscribe { filter: FlowFilter::default(), interval_ms: Some(500), alerts }),
    ] {
        let mut line = serde_json::to_string(&Request { id, op }).expect("request");
        line.push('\n');
        w.write_all(line.as_bytes()).expect("send");
    }
    let r = s.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut l = String::new();
        while r.read_line(&mut l).is_ok_and(|n| n > 0) {
            l.clear();
        }
    });
    s
}

fn main() {
    let ns: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let ns = if ns.is_empty() { vec![50, 100, 250, 1000] } else { ns };
    let (settle, measure) = (env_secs("SETTLE", 25), env_secs("MEASURE", 20));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tag = std::process::id();
    println!("idle cost of `fw-daemon run`: demo rules, plain namespaces, no traffic, 2 consoles subscribed");
    println!("settle {settle} s, CPU measured over {measure} s (share of one core)");
    println!("| namespaces | daemon threads | idle CPU (share of one core) | RSS | programmed in |");
    println!("|---|---|---|---|---|");
    for n in ns {
        let nodes: Vec<Netns> = (0..n).map(|i| Netns::new(&format!("fwidle{tag}-{i}"))).collect();
        let dir = std::env::temp_dir().join(format!("fw-idle-{tag}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("tmp");
        let inv: String = nodes.iter().enumerate().map(|(i, ns)| container(i, ns)).collect();
        std::fs::write(dir.join("inventory.toml"), inv).expect("inventory");
        let t = Instant::now();
        let daemon = Daemon::start(&dir, &root.join("rules/demo"), &[]);
        let mut c = daemon.client();
        c.wait_programmed();
        let programmed = t.elapsed();
        let _consoles = [subscribe(&daemon.socket, true), subscribe(&daemon.socket, false)];
        std::thread::sleep(Duration::from_secs(settle));
        let (cpu0, _, _) = proc_usage(daemon.pid());
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(measure));
        let (cpu1, rss, _) = proc_usage(daemon.pid());
        let secs = t0.elapsed().as_secs_f64();
        let share = (cpu1 - cpu0) as f64 / 100.0 / secs * 100.0; // USER_HZ ticks
        println!(
            "| {n} | {} | {share:.2} % | {:.1} MB | {:.1} s |",
            threads(daemon.pid()),
            rss as f64 / 1024.0,
            programmed.as_secs_f64()
        );
        drop(daemon);
        drop(nodes);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
