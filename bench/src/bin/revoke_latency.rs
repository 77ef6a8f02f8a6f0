//! Benchmark (root): how fast a reload that starts denying a port stops a live TCP stream on
//! it: the rule file is replaced by atomic rename, the daemon notices (inotify), validates,
//! reprograms both tables and the floor, and deletes the established flows the new policy
//! denies (revocation). Measured from just before the rename to the arrival of the stream's
//! last byte at the server, both in this process on one monotonic clock.
//!
//! Two namespaces on a bridge in a third (web-1 10.80.0.1, api-1 10.80.0.2), the demo policy
//! (web-to-api allows web -> api:8080). Each trial: a fresh stream web-1 -> api-1:8080 (512-byte
//! writes, 50 us apart), then the policy file without `web-to-api` renamed in; wait 1 s;
//! the original renamed back; wait until a new connection is allowed again.
//!
//! Run: cargo build --release -p fw-daemon && cargo run --release -p fw-bench --bin revoke_latency [TRIALS]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fw_bench::daemon::Daemon;
use fw_bench::pct;
use fw_daemon::netns::run_in;

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tag = std::process::id();
    let (web, api, _hub) = fw_bench::bridged_pair(&format!("fwrv{tag}"));
    let dir = std::env::temp_dir().join(format!("fw-revoke-latency-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("tmp");
    for f in std::fs::read_dir(root.join("rules/demo")).expect("rules/demo").flatten() {
        std::fs::copy(f.path(), rules.join(f.file_name())).expect("copy");
    }
    let policies = std::fs::read_to_string(rules.join("20-policies.toml")).expect("policies");
    let denied = without_policy(&policies, "web-to-api");
    let inv = format!(
        "[[container]]\nname = \"web-1\"\nnetns = \"{}\"\nlabels = {{ tier = \"web\" }}\naddresses = [\"10.80.0.1\"]\n\n[[container]]\nname = \"api-1\"\nnetns = \"{}\"\nlabels = {{ tier = \"api\" }}\naddresses = [\"10.80.0.2\"]\n",
        web.path().display(),
        api.path().display()
    );
    std::fs::write(dir.join("inventory.toml"), inv).expect("inventory");
    let daemon = Daemon::start(&dir, &rules, &[]);
    let mut c = daemon.client();
    c.wait_programmed();

    let base = Instant::now();
    let last_rx =
        fw_bench::last_byte_server(&api.path(), SocketAddr::from(([10, 80, 0, 2], 8080)), base).arrived;
    let dst = SocketAddr::from(([10, 80, 0, 2], 8080));
    let put = |text: &str| {
        let tmp = rules.join(".20-policies.toml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, rules.join("20-policies.toml")).expect("rename");
    };
    let connect = || {
        run_in(&web.path(), move || TcpStream::connect_timeout(&dst, Duration::from_millis(300)))
            .expect("netns")
    };
    let mut lat = Vec::new();
    for t in 0..trials {
        // Allowed again (the previous trial's restore reloaded): a fresh stream.
        let until = Instant::now() + Duration::from_secs(10);
        let s = loop {
            if let Ok(s) = connect() {
                break s;
            }
            assert!(Instant::now() < until, "trial {t}: web -> api:8080 never allowed again");
            std::thread::sleep(Duration::from_millis(50));
        };
        let stop = Arc::new(AtomicBool::new(false));
        let writer = fw_bench::trickle(s, stop.clone());
        std::thread::sleep(Duration::from_millis(50));
        let t0 = base.elapsed().as_nanos() as u64;
        assert!(last_rx.load(Ordering::SeqCst) > t0 - 20_000_000, "trial {t}: the stream is not flowing");
        put(&denied);
        std::thread::sleep(Duration::from_millis(1000));
        let last = last_rx.load(Ordering::SeqCst);
        lat.push(last.saturating_sub(t0) as f64 / 1e6);
        stop.store(true, Ordering::SeqCst);
        let _ = writer.join();
        put(&policies);
    }
    lat.sort_by(f64::total_cmp);
    println!("revocation over {trials} trials (rename of the rule file -> last byte of the revoked stream through):");
    println!(
        "  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// The policy file without the `[[policy]]` block whose id is `id`.
fn without_policy(text: &str, id: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n[[policy]]") {
        if block.contains(&format!("id = \"{id}\"")) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n[[policy]]");
        }
        out.push_str(block);
    }
    out
}
