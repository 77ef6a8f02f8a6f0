//! Benchmark (root): the daemon's reconcile paths over real namespaces.
//!
//! 1. Reload of the demo policy across 200 namespaces: initial programming, a policy change
//!    (every table replaced), and a membership change (set elements only), wall time each.
//! 2. 500 namespaces created, programmed, forgotten and destroyed one after another: RSS and
//!    open file descriptors before and after (sockets must close when containers go).
//!
//! Run: cargo run --release -p fw-bench --bin daemon_churn [NAMESPACES] [CYCLES]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use fw_bench::Netns;
use fw_daemon::compile::CompileOptions;
use fw_daemon::inventory::{Container, Inventory};
use fw_daemon::reconcile::Reconciler;
use fw_daemon::rules::{load_sources, read_dir};

/// Containers cycling through the demo zones (as bench/apply-200.sh does).
fn container(i: usize, netns: Option<PathBuf>) -> Container {
    let kinds = ["web", "api", "db", "dns", "batch", "misc"];
    let k = kinds[i % kinds.len()];
    Container {
        name: format!("{k}-c{i}"),
        netns,
        image: if k == "db" { "postgres:16".into() } else { format!("fw/{k}:1") },
        labels: if k == "api" { vec![("tier".into(), "api".into())] } else { Vec::new() },
        addresses: vec![
            format!("10.79.{}.{}", i / 250, i % 250 + 1).parse().expect("v4"),
            format!("fd79::{i:x}").parse().expect("v6"),
        ],
        link: None,
        kube: None,
    }
}

fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(200);
    let cycles = args.get(1).copied().unwrap_or(500);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = read_dir(&root.join("rules/demo")).expect("demo rules");
    let policy = Arc::new(load_sources(&files, 0).policy.expect("demo policy"));
    let mut changed = files.clone();
    let last = changed.last_mut().expect("demo has files");
    last.text.push_str(
        "\n[[policy]]\nid = \"bench-extra\"\nfrom = \"batch\"\nto = \"web\"\nproto = \"tcp\"\nports = 8081\naction = \"allow\"\n",
    );
    let policy_b = Arc::new(load_sources(&changed, 0).policy.expect("changed policy"));

    // 1. Reload across N namespaces.
    let spaces: Vec<Netns> = (0..n).map(|i| Netns::new(&format!("fwr-{i}"))).collect();
    let mut inv = Inventory {
        containers: spaces.iter().enumerate().map(|(i, ns)| container(i, Some(ns.path()))).collect(),
        ..Default::default()
    };
    let mut rec = Reconciler::new(policy, inv.clone(), CompileOptions::default());
    let t = Instant::now();
    let r = rec.reconcile();
    println!("{n} namespaces, demo policy");
    println!("  initial programming   {:8.1} ms  ({} tables)", ms(t), r.replaced.len());
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let t = Instant::now();
    rec.set_policy(policy_b);
    let r = rec.reconcile();
    println!("  policy reload         {:8.1} ms  ({} tables replaced)", ms(t), r.replaced.len());
    inv.containers.push(container(n + 1, None)); // a new web peer, no namespace of its own
    rec.set_inventory(inv);
    let t = Instant::now();
    let r = rec.reconcile();
    println!(
        "  membership change     {:8.1} ms  ({} set updates, {} replaced, {} unchanged)",
        ms(t),
        r.updated.len(),
        r.replaced.len(),
        r.unchanged
    );
    drop(rec);
    drop(spaces);

    // 2. Churn: one namespace at a time, programmed then forgotten.
    let policy = Arc::new(load_sources(&files, 0).policy.expect("demo policy"));
    let mut rec = Reconciler::new(policy, Inventory::default(), CompileOptions::default());
    let mut cycle = |i: usize| {
        let ns = Netns::new(&format!("fwc-{}", i % 4));
        rec.set_inventory(Inventory {
            containers: vec![container(i, Some(ns.path()))],
            ..Default::default()
        });
        let r = rec.reconcile();
        assert_eq!(r.replaced.len(), 1, "cycle {i}: {:?}", r.failed);
        rec.set_inventory(Inventory::default());
        assert_eq!(rec.reconcile().forgotten.len(), 1);
    };
    for i in 0..20 {
        cycle(i); // warm-up: allocator pools, thread stacks
    }
    let (rss0, fds0) = (proc_status("VmRSS:"), open_fds());
    let t = Instant::now();
    for i in 0..cycles {
        cycle(i);
    }
    let per = ms(t) / cycles as f64;
    let (rss1, fds1) = (proc_status("VmRSS:"), open_fds());
    println!("{cycles} namespaces created, programmed, forgotten, destroyed ({per:.2} ms per cycle, incl. `ip netns`)");
    println!("  RSS   {rss0} KiB -> {rss1} KiB ({:+} KiB)", rss1 as i64 - rss0 as i64);
    println!("  fds   {fds0} -> {fds1}");
    assert_eq!(fds0, fds1, "file descriptors leaked");
}
