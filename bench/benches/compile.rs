//! Compile-time benchmarks on the synthetic workload of `fw_bench::synthetic` (20 container
//! zones, 1 external zone, 50 policies; 100 and 1,000 containers):
//!
//! - `load`: parse and validate the rule files (what `fw-daemon check` does without inventory);
//! - `inventory`: parse the inventory file;
//! - `compile_all`: policy x inventory -> one ruleset per container (freeing them not counted);
//! - `render`: every ruleset to its nft script;
//! - `plan`: all of the above end to end, the way `fw-daemon plan` does it (minus file reads
//!   and printing).
//!
//! Run: cargo bench -p fw-bench --bench compile [-- FILTER]

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use fw_bench::{inventory, load, options, plan_end_to_end, synthetic, Synthetic, NOW};
use fw_daemon::compile::compile_all;
use fw_daemon::rules::load_sources;
use fw_daemon::ruleset::render::render;

const POLICIES: usize = 50;
const SIZES: [usize; 2] = [100, 1000];

fn tuned<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    g
}

/// Sets the group's throughput and sampling for a run of `containers`, and names the run. The
/// 1,000-container runs take tens of milliseconds: flat sampling (the same iteration count in
/// every sample) keeps them within the measurement time.
fn sized(g: &mut BenchmarkGroup<'_, WallTime>, containers: usize) -> BenchmarkId {
    g.throughput(Throughput::Elements(containers as u64));
    g.sampling_mode(if containers >= 1000 { SamplingMode::Flat } else { SamplingMode::Auto });
    BenchmarkId::from_parameter(format!("{containers}x{POLICIES}"))
}

/// The size of what is being measured, printed once before the numbers.
fn describe(containers: usize, s: &Synthetic) {
    let policy = load(&s.files);
    let rulesets = compile_all(&policy, &inventory(&s.inventory), &options());
    let rules: usize = rulesets.iter().flat_map(|r| &r.chains).map(|c| c.rules.len()).sum();
    let elems: usize = rulesets.iter().flat_map(|r| &r.sets).map(|s| s.elements.len()).sum();
    let scripts: usize = rulesets.iter().map(|r| render(r).len()).sum();
    let plans = plan_end_to_end(&s.files, &s.inventory);
    let out: usize = plans.iter().map(|p| p.text.len()).sum::<usize>() + plans.len().saturating_sub(1);
    println!(
        "workload {containers}x{POLICIES}: rules {} files / {} B, inventory {} B; \
         compiled: {rules} nft rules, {elems} set elements, scripts {scripts} B; plan output {out} B",
        s.files.len(),
        s.rule_bytes(),
        s.inventory.len(),
    );
}

fn benches(c: &mut Criterion) {
    let workloads: Vec<(usize, Synthetic)> = SIZES.iter().map(|&n| (n, synthetic(n, POLICIES))).collect();
    for (n, s) in &workloads {
        describe(*n, s);
    }

    // Loading does not depend on the inventory: one workload is enough.
    let files = &workloads[0].1.files;
    let mut g = tuned(c, "load");
    g.bench_function(format!("{POLICIES}_policies"), |b| b.iter(|| load_sources(black_box(files), NOW)));
    g.finish();

    let mut g = tuned(c, "inventory");
    for (n, s) in &workloads {
        let id = sized(&mut g, *n);
        g.bench_with_input(id, &s.inventory, |b, text| b.iter(|| inventory(black_box(text))));
    }
    g.finish();

    let mut g = tuned(c, "compile_all");
    for (n, s) in &workloads {
        let (policy, inv, opts) = (load(&s.files), inventory(&s.inventory), options());
        let id = sized(&mut g, *n);
        // Freeing the rulesets (tens of thousands of small allocations) costs almost as much as
        // building them: it is left out here, and counted in `plan`.
        g.bench_function(id, |b| {
            b.iter_with_large_drop(|| compile_all(black_box(&policy), black_box(&inv), &opts))
        });
    }
    g.finish();

    let mut g = tuned(c, "render");
    for (n, s) in &workloads {
        let rulesets = compile_all(&load(&s.files), &inventory(&s.inventory), &options());
        let id = sized(&mut g, *n);
        g.bench_function(id, |b| {
            b.iter(|| black_box(&rulesets).iter().map(|r| render(r).len()).sum::<usize>())
        });
    }
    g.finish();

    let mut g = tuned(c, "plan");
    for (n, s) in &workloads {
        let id = sized(&mut g, *n);
        g.bench_function(id, |b| b.iter(|| plan_end_to_end(black_box(&s.files), black_box(&s.inventory))));
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
