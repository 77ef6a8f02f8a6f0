//! Benchmark (any user): resident memory per flow row. Feeds a `FlowTable` of the default cap
//! (100,000 rows) a churn of conntrack events shaped like bench/flow_ingest's (10 containers,
//! UDP, one new destination port per flow; NEW events, every other flow later destroyed),
//! 1,000,000 flows in all, then measures the process's RSS growth over the empty table, per
//! row held. A subscriber's full view (`changes_since(None)`) is taken at the end, as a
//! console's first frame would, and the RSS after it is reported too.
//!
//! Run: cargo run --release -p fw-bench --bin flow_rows [FLOWS]

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use fw_daemon::flows::collector::FlowContext;
use fw_daemon::flows::conntrack::{CtEntry, CtEvent, CtKind, Tuple};
use fw_daemon::flows::table::{FlowTable, DEFAULT_CAP};
use fw_proto::control::FlowFilter;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn entry(orig: Tuple) -> CtEntry {
    CtEntry {
        id: Some(1),
        orig,
        reply: Tuple { src: orig.dst, dst: orig.src, sport: orig.dport, dport: orig.sport, ..orig },
        tcp_state: None,
        status: 8,
        packets_orig: 0,
        bytes_orig: 0,
        packets_reply: 0,
        bytes_reply: 0,
        mark: 0,
    }
}

fn main() {
    let flows: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let sink: IpAddr = "10.81.0.100".parse().expect("addr");
    let mut ctx = FlowContext::default();
    let names: Vec<String> = (0..10).map(|i| format!("gen-{i}")).collect();
    let addrs: Vec<IpAddr> = (0..10).map(|i| format!("10.81.0.{}", i + 1).parse().expect("addr")).collect();
    for (n, a) in names.iter().zip(&addrs) {
        ctx.zones.insert(n.clone(), "gen".into());
        ctx.addrs.insert(n.clone(), vec![*a]);
        ctx.owner.insert(*a, (n.clone(), "gen".into()));
    }
    ctx.owner.insert(sink, ("sink".into(), "sink".into()));
    let before = rss_kib();
    let mut t = FlowTable::new(DEFAULT_CAP);
    let start = Instant::now();
    let mut pending: HashMap<usize, Tuple> = HashMap::new();
    for i in 0..flows {
        let g = (i % 10) as usize;
        let port = (i / 10 % 65_535 + 1) as u16;
        let sport = 40_000 + (i / 10 / 65_535) as u16;
        let tuple = Tuple { src: addrs[g], dst: sink, proto: 17, sport, dport: port };
        let now = (i / 100) as i64;
        t.apply_ct(&names[g], &CtEvent { kind: CtKind::New, entry: entry(tuple) }, now, &ctx);
        // Every other flow ends a little later (its DESTROY carries counters).
        if i % 2 == 0 {
            pending.insert(g, tuple);
        } else if let Some(old) = pending.remove(&g) {
            let mut e = entry(old);
            (e.packets_orig, e.bytes_orig) = (1, 29);
            t.apply_ct(&names[g], &CtEvent { kind: CtKind::Destroy, entry: e }, now, &ctx);
        }
    }
    let took = start.elapsed();
    let after = rss_kib();
    let rows = t.len();
    let full = t.changes_since(None, &FlowFilter::default());
    let with_view = rss_kib();
    let per_row = (after.saturating_sub(before)) as f64 * 1024.0 / rows as f64;
    println!(
        "flow rows: {flows} flows through a table of cap {DEFAULT_CAP} in {:.2} s ({:.0} events/s)",
        took.as_secs_f64(),
        flows as f64 * 1.5 / took.as_secs_f64()
    );
    println!("  rows held: {rows}; RSS {before} KiB empty, {after} KiB full: **{per_row:.0} B per row**");
    println!(
        "  after a subscriber's full view ({} rows materialized, then dropped): RSS {with_view} KiB",
        full.changed.len()
    );
}
