//! What Kubernetes Services cost the compiler: `compile_all` on the synthetic workload of
//! 100 (a node's pods) and 1,000 containers x 50 policies, with 0, 1,000 and 5,000 Services
//! (two ports each, three endpoints drawn from the containers), as the node agent
//! recompiles on each change the API reports. Every table holds every VIP its zone may
//! decide (as zone sets hold every member), so the elements grow with pods x Services. Any user; no kernel. Prints the median and max of RUNS runs (default 9),
//! and the rules and VIP set elements of the result.
//! Run: cargo run --release -p fw-bench --bin service_vips

use std::time::Instant;

use fw_bench::{inventory, load, options, synthetic};
use fw_daemon::compile::compile_all;
use fw_daemon::inventory::{ServicePort, ServiceVip, SvcProto};

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(9);
    println!(
        "{:>10} {:>9} {:>12} {:>12} {:>10} {:>14}",
        "containers", "services", "median", "max", "rules", "vip elements"
    );
    for (containers, n) in [(100, 0), (100, 1000), (100, 5000), (1000, 0), (1000, 1000), (1000, 5000)] {
        let s = synthetic(containers, 50);
        let policy = load(&s.files);
        let base = inventory(&s.inventory);
        let mut inv = base.clone();
        let addrs: Vec<std::net::IpAddr> = inv.containers.iter().flat_map(|c| c.addresses.clone()).collect();
        for i in 0..n {
            let backends =
                |port: u16| (0..3).map(|k| (addrs[(i * 7 + k * 131) % addrs.len()], port)).collect();
            inv.services.push(ServiceVip {
                name: format!("ns{}/svc{i}", i % 40),
                addresses: vec![std::net::IpAddr::from([10, 96, (i >> 8) as u8, i as u8])],
                ports: vec![
                    ServicePort {
                        proto: SvcProto::Tcp,
                        port: 80,
                        backends: backends(8000 + (i % 10) as u16),
                        incomplete: false,
                    },
                    ServicePort {
                        proto: SvcProto::Tcp,
                        port: 443,
                        backends: backends(443),
                        incomplete: false,
                    },
                ],
            });
        }
        let mut times = Vec::with_capacity(runs);
        let mut shape = (0, 0);
        for _ in 0..runs {
            let t = Instant::now();
            let rs = compile_all(&policy, &inv, &options());
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let rules = rs.iter().flat_map(|r| &r.chains).map(|c| c.rules.len()).sum();
            let vips = rs
                .iter()
                .flat_map(|r| &r.sets)
                .filter(|s| s.name.starts_with("vip_"))
                .map(|s| s.elements.len())
                .sum();
            shape = (rules, vips);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{containers:>10} {n:>9} {:>9.1} ms {:>9.1} ms {:>10} {:>14}",
            times[times.len() / 2],
            times[times.len() - 1],
            shape.0,
            shape.1
        );
    }
}
