//! Benchmark (root): a zone set of N addresses programmed over netlink into a fresh netns,
//! then one member added and removed through the already-open socket, many times.
//! Prints initial load time and per-update median / p99 for N = 100, 1,000, 10,000.
//!
//! Run: cargo run --release -p fw-bench --bin nft_sets

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fw_bench::Netns;
use fw_daemon::compile::{compile_all, CompileOptions};
use fw_daemon::inventory::{Container, Inventory};
use fw_daemon::nft::{Nft, SetChange};
use fw_daemon::ruleset::ir::{SetElem, SetKey};

const UPDATES: usize = 500;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = fw_daemon::rules::load_dir(&root.join("rules/demo"), 0).policy.expect("demo rules");
    let demo = fw_daemon::inventory::load_inventory(&root.join("rules/demo-inventory.toml"))
        .expect("demo inventory");
    println!(
        "{:>8} {:>14} {:>16} {:>14} {:>16} {:>14}",
        "members", "initial load", "add median", "add p99", "remove median", "remove p99"
    );
    for n in [100usize, 1_000, 10_000] {
        let mut inv = Inventory { containers: demo.containers.clone(), ..Default::default() };
        for i in 0..n as u32 {
            inv.containers.push(Container {
                name: format!("api-x{i}"),
                netns: None,
                image: "fw/api:2.3".into(),
                labels: vec![("tier".into(), "api".into())],
                addresses: vec![IpAddr::V4(Ipv4Addr::from(0x0a50_0000 + i))],
                link: None,
                kube: None,
            });
        }
        let rs = compile_all(&policy, &inv, &CompileOptions::default())
            .into_iter()
            .find(|r| r.container == "web-1")
            .unwrap();
        let members = rs.set("z_api_4").map_or(0, |s| s.elements.len());
        let ns = Netns::new("fwbench-sets");
        let mut nft = Nft::open(&ns.path(), "web-1").expect("open");
        let t = Instant::now();
        nft.apply(&rs).expect("initial apply");
        let load = t.elapsed();
        let probe = SetElem::Addr("10.99.0.1".parse().unwrap());
        let change = |add: bool| SetChange {
            set: "z_api_4".into(),
            key: SetKey::Ipv4,
            add: if add { vec![probe.clone()] } else { vec![] },
            remove: if add { vec![] } else { vec![probe.clone()] },
            expires: Default::default(),
            jumps: Default::default(),
            flush: false,
        };
        let (mut adds, mut removes) = (Vec::with_capacity(UPDATES), Vec::with_capacity(UPDATES));
        for _ in 0..UPDATES {
            let t = Instant::now();
            nft.update_sets(&[change(true)]).expect("add");
            adds.push(t.elapsed());
            let t = Instant::now();
            nft.update_sets(&[change(false)]).expect("remove");
            removes.push(t.elapsed());
        }
        adds.sort();
        removes.sort();
        let us = |d: Duration| format!("{:.1} us", d.as_secs_f64() * 1e6);
        println!(
            "{:>8} {:>14} {:>16} {:>14} {:>16} {:>14}",
            members,
            format!("{:.2} ms", load.as_secs_f64() * 1e3),
            us(percentile(&adds, 0.5)),
            us(percentile(&adds, 0.99)),
            us(percentile(&removes, 0.5)),
            us(percentile(&removes, 0.99)),
        );
    }
}
