//! Benchmark (root): the Kubernetes node agent against a real containerd (issue 16). Pods
//! are created one after another with `RunPodSandbox`, as the kubelet does; for the first
//! `TRIALS` the time from the sandbox being READY (RunPodSandbox answered) to the daemon
//! reporting the pod programmed (its table committed, as `status` says), p50 / p99. Then
//! the node is filled to `PODS` pods and the daemon's idle CPU and RSS are measured with
//! nothing happening. The runtime is `fw-daemon/tests/common/cri.rs`: an own containerd in
//! a lab namespace standing for the node, CNI bridge, a local pause image.
//!
//! Run: cargo build --release -p fw-daemon -p fw-bench &&
//!      target/release/cri_pods [TRIALS [PODS]] (default 50 200; POLL=0.25 SETTLE=15 MEASURE=20)

#[path = "../../../fw-daemon/tests/common/cri.rs"]
#[allow(dead_code)] // the harness has more than this benchmark uses
mod cri;

use std::time::{Duration, Instant};

use fw_bench::daemon::{proc_usage, Daemon};
use fw_bench::pct;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let trials = args.first().copied().unwrap_or(50);
    let pods = args.get(1).copied().unwrap_or(200).max(trials);
    let poll = env("POLL", "0.25");
    let poll_ms = ((poll.parse::<f64>().unwrap_or(0.25) * 1000.0) as u64).max(1);
    let settle: u64 = env("SETTLE", "15").parse().unwrap_or(15);
    let measure: u64 = env("MEASURE", "20").parse().unwrap_or(20);
    assert!(cri::tools_present(), "needs {}", cri::NEEDS);
    let mut rt = cri::Runtime::start("bench", "10.90.0.0/22");
    let dir = std::env::temp_dir().join(format!("fw-cripods-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rules")).expect("tmp");
    std::fs::write(dir.join("inventory.toml"), "").expect("inventory");
    std::fs::write(
        dir.join("rules/pods.toml"),
        "[defaults]\naction = \"deny\"\n[zone.web]\nmatch = { namespace = \"shop\", labels = { app = \"web\" } }\n\
         [zone.api]\nmatch = { namespace = \"shop\", labels = { app = \"api\" } }\n\
         [[policy]]\nfrom = \"web\"\nto = \"api\"\nproto = \"tcp\"\nports = [8080]\naction = \"allow\"\n",
    )
    .expect("rules");
    let socket = rt.socket.display().to_string();
    let daemon = Daemon::start(&dir, &dir.join("rules"), &["--cri-socket", &socket, "--cri-poll", &poll]);
    let mut c = daemon.client();
    println!("node agent: pod sandbox READY -> programmed, {trials} pods (CRI poll {poll} s); then {pods} pods idle");
    let programmed = |c: &mut fw_bench::daemon::Client| -> usize {
        match c.call(fw_proto::control::Op::Status) {
            Ok(fw_proto::control::Answer::Status(s)) => s.containers.iter().filter(|x| x.programmed).count(),
            _ => 0,
        }
    };
    let mut lat = Vec::new();
    for i in 0..pods {
        let app = if i % 2 == 0 { "web" } else { "api" };
        if i < trials {
            // Pods created right after the previous one was seen would all land at the
            // same phase of the poll: spread them over it, as a kubelet's are.
            std::thread::sleep(Duration::from_millis((i as u64 * 7919) % poll_ms));
        }
        rt.run_pod("shop", &format!("{app}-{i}"), &[("app", app)], false);
        if i < trials {
            let ready = Instant::now();
            while programmed(&mut c) < i + 1 {
                assert!(ready.elapsed() < Duration::from_secs(30), "pod {i} never programmed");
                std::thread::sleep(Duration::from_millis(2));
            }
            lat.push(ready.elapsed().as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "READY -> programmed over {trials} pods: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    let until = Instant::now() + Duration::from_secs(120);
    while programmed(&mut c) < pods {
        assert!(Instant::now() < until, "not every pod programmed");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(settle));
    let (cpu0, _, _) = proc_usage(daemon.pid());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(measure));
    let (cpu1, rss, _) = proc_usage(daemon.pid());
    let share = (cpu1 - cpu0) as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "{pods} pods, idle over {measure} s: CPU {share:.2} % of one core, RSS {:.1} MB",
        rss as f64 / 1024.0
    );
    drop(c);
    drop(daemon);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}
