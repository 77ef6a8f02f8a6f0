#!/usr/bin/env bash
# Every fw benchmark, in order (what `make bench` runs):
#   1. compile (criterion, any user): load, inventory, compile_all, render and plan end to end on
#      the synthetic workload of fw_bench::synthetic (20 zones + 1 external, 50 policies;
#      100 and 1,000 containers), then a median / range summary of every benchmark;
#   2. inspect (criterion, any user): SNI / Host / DNS parser throughput per core, our SNI
#      extraction side by side with tls-parser's full parse of the same ClientHellos, one TLS
#      flow through the Inspector, and state bytes per inspected flow;
#   3. the real CLI: `fw-daemon plan` on the 1,000 x 50 workload written to disk, wall time of
#      RUNS runs (default 5), output to /dev/null;
#   4. the console (any user): frame render time and delta cost with 100,000 flows
#      (console_frame);
#   5. netlink (root only): bench/apply-200.sh, the nft_sets and daemon_churn binaries,
#      bench/docker-start.sh (when Docker is installed), bench/throughput.sh.
#      Skipped with a notice when not root, or when SKIP_NETLINK=1.
# Usage: bash bench/run.sh            (criterion arguments: CRITERION_ARGS="--save-baseline x")
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"

section() { printf '\n==== %s ====\n\n' "$*"; }

section "compile benchmarks (criterion): cargo bench -p fw-bench --bench compile"
# shellcheck disable=SC2086 # CRITERION_ARGS is a list of words
cargo bench -p fw-bench --bench compile -- ${CRITERION_ARGS:-}

# Median and range (fastest .. slowest sample, per iteration) from criterion's JSON output.
if command -v python3 >/dev/null; then
  section "compile benchmarks: summary (per iteration)"
  python3 - <<'EOF'
import json, pathlib
root = pathlib.Path("target/criterion")
def fmt(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"
print(f"{'benchmark':<24} {'median':>10} {'range (min .. max)':>26}")
for group in ("load", "inventory", "compile_all", "render", "plan"):
    for bench in sorted((root / group).glob("*/new"), key=lambda p: int(p.parent.name.split("x")[0].split("_")[0])):
        est = json.loads((bench / "estimates.json").read_text())
        sample = json.loads((bench / "sample.json").read_text())
        per_iter = [t / n for t, n in zip(sample["times"], sample["iters"])]
        name = f"{group}/{bench.parent.name}"
        rng = f"{fmt(min(per_iter))} .. {fmt(max(per_iter))}"
        print(f"{name:<24} {fmt(est['median']['point_estimate']):>10} {rng:>26}")
EOF
fi

section "inspection benchmarks (criterion): cargo bench -p fw-bench --bench inspect"
# Parser throughput per core (SNI ours vs tls-parser on the same real ClientHellos, HTTP Host,
# DNS query + answer), one whole TLS flow through the Inspector, and state bytes per flow.
# shellcheck disable=SC2086 # CRITERION_ARGS is a list of words
cargo bench -p fw-bench --bench inspect -- ${CRITERION_ARGS:-}
if command -v python3 >/dev/null; then
  section "inspection benchmarks: summary (median per iteration, throughput per core)"
  python3 - <<'EOF2'
import json, pathlib
root = pathlib.Path("target/criterion")
rows = {}
for name in ("inspect_sni/ours", "inspect_sni/tls-parser", "inspect_host/ours", "inspect_dns/ours", "inspect_flow/tls"):
    d = root / name / "new"
    if not (d / "estimates.json").exists():
        continue
    med = json.loads((d / "estimates.json").read_text())["median"]["point_estimate"]
    tp = json.loads((d / "benchmark.json").read_text()).get("throughput") or {}
    rows[name] = med
    if "Bytes" in tp:
        rate = f"{tp['Bytes'] / med * 1e9 / 1e6:,.0f} MB/s"
    elif "Elements" in tp:
        rate = f"{tp['Elements'] / med * 1e9:,.0f} /s"
    else:
        rate = ""
    print(f"{name:<24} {med:>10.0f} ns {rate:>14}")
if "inspect_sni/ours" in rows and "inspect_sni/tls-parser" in rows:
    print(f"SNI extraction: ours is {rows['inspect_sni/tls-parser'] / rows['inspect_sni/ours']:.1f}x faster than tls-parser (target >= 2x)")
EOF2
fi

section "CLI: fw-daemon plan, 1,000 containers x 50 policies, $RUNS runs"
cargo build -q --release -p fw-daemon -p fw-bench --bin fw-daemon --bin gen_synthetic
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
target/release/gen_synthetic "$tmp" 1000 50
plan=(target/release/fw-daemon plan "$tmp/rules" --inventory "$tmp/inventory.toml")
"${plan[@]}" >"$tmp/plan.out"
# Rules are the chain lines with a comment (every compiled rule carries its origin).
echo "output: $(wc -c <"$tmp/plan.out") bytes, $(wc -l <"$tmp/plan.out") lines," \
  "$(grep -cP '^\t\t(?!comment ).* comment "' "$tmp/plan.out") nft rules," \
  "$(grep -c '^table inet fw {' "$tmp/plan.out") tables"
times=()
for i in $(seq 1 "$RUNS"); do
  start=$(date +%s%N)
  "${plan[@]}" >/dev/null
  end=$(date +%s%N)
  ms=$(((end - start) / 1000000))
  times+=("$ms")
  echo "run $i: ${ms} ms"
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "median $(echo "$sorted" | sed -n "$(((RUNS + 1) / 2))p") ms," \
  "range $(echo "$sorted" | head -1) .. $(echo "$sorted" | tail -1) ms"
if [[ -x /usr/bin/time ]]; then
  /usr/bin/time -f "one more run: %e s wall, %U s user, %S s sys, peak RSS %M KiB" "${plan[@]}" >/dev/null
fi

section "kubernetes: compile_all with 0 / 1,000 / 5,000 Services, 100 and 1,000 containers (service_vips)"
cargo run -q --release -p fw-bench --bin service_vips

section "console: frame render, delta and re-sort with 100,000 flows (console_frame)"
cargo run -q --release -p fw-bench --bin console_frame 300

if [[ "${SKIP_NETLINK:-0}" == 1 ]]; then
  section "netlink benchmarks: skipped (SKIP_NETLINK=1)"
elif [[ $(id -u) -ne 0 ]]; then
  section "netlink benchmarks: skipped (they need root: sudo bash bench/run.sh)"
else
  section "netlink: fw-daemon apply vs nft -f, 200 namespaces (bench/apply-200.sh)"
  bash bench/apply-200.sh
  section "netlink: zone set load and updates (cargo run --release -p fw-bench --bin nft_sets)"
  cargo run -q --release -p fw-bench --bin nft_sets
  section "netlink: daemon reconcile, 200-namespace reload and 500-namespace churn (daemon_churn)"
  cargo run -q --release -p fw-bench --bin daemon_churn
  section "idle: daemon CPU, threads and RSS with 50, 250 and 1,000 namespaces and no traffic (idle_cost)"
  cargo run -q --release -p fw-bench --bin idle_cost 50 250 1000
  section "kubernetes: pod sandbox READY -> programmed (50 pods), then 200 pods idle, real containerd (cri_pods)"
  cargo run -q --release -p fw-bench --bin cri_pods 50 200
  if command -v docker >/dev/null; then
    section "docker: start event -> table programmed, 50 starts (bench/docker-start.sh)"
    bash bench/docker-start.sh 50
  fi
  section "control socket: block latency under a live stream, 100 trials (block_latency)"
  cargo run -q --release -p fw-bench --bin block_latency 100
  section "revocation: rule file renamed in -> last byte of a now-denied stream, 30 trials (revoke_latency)"
  cargo run -q --release -p fw-bench --bin revoke_latency 30
  section "inline inspection: added latency, judged connections/s, throughput after the verdict, a cut (inspect_inline)"
  cargo run -q --release -p fw-bench --bin inspect_inline 200
  section "flows: ingestion of 50,000 new flows/s for 10 s across 10 namespaces (flow_ingest)"
  cargo run -q --release -p fw-bench --bin flow_ingest 50000 10
  section "netlink: TCP throughput with and without the policy and the floor (bench/throughput.sh)"
  bash bench/throughput.sh
fi
section "done"
