#!/usr/bin/env bash
# Benchmark (root, Docker): time from Docker's `start` event to the container's table being
# programmed by fw-daemon, over N (default 50) container starts; p50 / p99 / max.
# The event time is Docker's own (TimeNano); "programmed" is the daemon's JSON log line
# after the netlink batch was acknowledged. Containers run on an --internal network and are
# named web-bN (zone `web` of the demo rules); all are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50}"
IMAGE=fw-test-busybox:1
cargo build -q --release -p fw-daemon
FW=target/release/fw-daemon
tmp=$(mktemp -d)
net="fwbench-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  docker ps -aq --filter label=fw.bench=$$ | xargs -r docker rm -f >/dev/null
  docker network rm "$net" >/dev/null 2>&1 || true
  # The host guard outlives the daemon by design; the benchmark removes the one it made.
  nft delete table bridge fw_guard 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  (dockerd >/tmp/fw-bench-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  mkdir -p "$tmp/img/bin" && cp /bin/busybox "$tmp/img/bin/" && ln -s busybox "$tmp/img/bin/sleep"
  tar -C "$tmp/img" -c . | docker import - "$IMAGE" >/dev/null
fi
docker network create --internal "$net" >/dev/null

"$FW" run --docker --rules rules/demo --state-dir "$tmp/state" --socket "$tmp/fw.sock" --audit-log "$tmp/audit.jsonl" --log-format json 2>"$tmp/daemon.log" &
pids+=($!)
docker events --filter event=start --filter label=fw.bench=$$ --format '{{.Actor.Attributes.name}} {{.TimeNano}}' >"$tmp/events" &
pids+=($!)
sleep 1
for i in $(seq 1 "$N"); do
  docker run -d --name "web-b$i-$$" --label fw.bench=$$ --network "$net" "$IMAGE" sleep 600 >/dev/null
  sleep 0.2
done
sleep 2

python3 - "$tmp/events" "$tmp/daemon.log" "$N" <<'PY'
import json, sys, datetime
events = {}
for line in open(sys.argv[1]):
    name, ns = line.split()
    events[name] = int(ns)
programmed = {}
for line in open(sys.argv[2]):
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    if rec.get("fields", {}).get("message") != "table programmed":
        continue
    name = rec.get("span", {}).get("container")
    ts = rec["timestamp"].rstrip("Z")
    whole, frac = ts.split(".")
    t = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc).timestamp()
    ns = int(t) * 10**9 + int(frac.ljust(9, "0")[:9])
    programmed.setdefault(name, ns)
lat = sorted((programmed[n] - events[n]) / 1e6 for n in events if n in programmed)
missing = [n for n in events if n not in programmed]
if not lat:
    sys.exit("no container was programmed; see the daemon log")
pct = lambda p: lat[min(len(lat) - 1, round((len(lat) - 1) * p))]
print(f"docker start event -> table programmed, {len(lat)} of {sys.argv[3]} starts:")
print(f"  p50 {pct(0.5):.1f} ms   p99 {pct(0.99):.1f} ms   min {lat[0]:.1f} ms   max {lat[-1]:.1f} ms")
if missing:
    sys.exit(f"never programmed: {missing}")
PY
