#!/usr/bin/env bash
# Benchmark (root): TCP throughput between two lab containers (iperf3, api-1 -> web-1:443,
# allowed by `public-web`) with no table, with a table holding only the conntrack shortcut
# (what any stateful table costs), with the demo policy, and with the demo policy plus 10,000
# extra allowed peers in the zone sets, and with the demo policy plus the host-side floor on
# the lab's bridge. Targets: >= 0.95x of no table for the policy rows, floor >= 0.95x of demo.
# Single runs spread by ~10% on a 2-core VM, so configurations are interleaved round by round
# and the median of ROUNDS (default 7) runs of SECS (default 5) seconds is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SECS:-5}"
ROUNDS="${ROUNDS:-7}"
# Client and server pinned to different CPUs when there are two: fewer scheduler-made outliers.
PIN=(); [ "$(nproc)" -ge 2 ] && PIN=(-A 0,1)
cargo build -q --release -p fw-daemon
FW=target/release/fw-daemon
tmp=$(mktemp -d)
export LAB_BRIDGE=fwtp-br LAB_PARTNER=fwtp-partner
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash tests/lab.sh down "$tmp/lab.toml" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# The demo inventory with web-1 and api-1 in their own lab namespaces.
sed -e 's#/run/netns/fwdemo-web-1#/run/netns/fwtp-web-1#' -e 's#/run/netns/fwdemo-api-1#/run/netns/fwtp-api-1#' \
  rules/demo-inventory.toml > "$tmp/inv.toml"
awk '/^\[\[container\]\]/{keep=0} /^name = "(web-1|api-1)"/{keep=1} {buf=buf $0 "\n"} /^addresses/{if (keep) printf "[[container]]\n%s", substr(buf, index(buf, "name = \"")); buf=""}' \
  "$tmp/inv.toml" > "$tmp/lab.toml"
bash tests/lab.sh up "$tmp/lab.toml" >/dev/null

# 10,000 extra members of zone web: web-1's peers in api-1's sets.
cp "$tmp/inv.toml" "$tmp/inv10k.toml"
for i in $(seq 0 9999); do
  printf '[[container]]\nname = "web-x%d"\naddresses = ["10.80.%d.%d"]\n' "$i" $((i / 250)) $((i % 250 + 1))
done >> "$tmp/inv10k.toml"

ip netns exec fwtp-web-1 iperf3 -s -p 443 -D --pidfile "$tmp/iperf.pid" >/dev/null
sleep 0.3
pids+=("$(cat "$tmp/iperf.pid")")

# One iperf3 run: received bits per second.
measure() {
  ip netns exec fwtp-api-1 iperf3 -c 10.77.0.11 -p 443 "${PIN[@]}" -t "$SECS" -O 1 -J |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
}
flush() {
  local c
  for c in web-1 api-1; do "$FW" flush --inventory "$tmp/inv.toml" --container "$c" >/dev/null; done
  "$FW" flush --inventory "$tmp/lab.toml" --floor >/dev/null
}
program() { local c; flush; for c in web-1 api-1; do "$FW" apply rules/demo --inventory "$1" --container "$c" >/dev/null; done; }
# Conntrack alone: what any stateful table costs (conntrack only runs in a netns once a rule
# there uses ct), to tell the policy's own cost from conntrack's.
ct_only() {
  flush
  local ns
  for ns in fwtp-web-1 fwtp-api-1; do
    ip netns exec "$ns" nft -f - <<'NFT'
table inet fw {
  chain egress { type filter hook output priority filter; policy accept; ct state established,related accept; }
  chain ingress { type filter hook input priority filter; policy accept; ct state established,related accept; }
}
NFT
  done
}

# Configurations interleaved round by round so drift in machine load hits them alike;
# the median of ROUNDS runs is reported.
declare -A runs
configs=(none ct demo big floor)
for r in $(seq 1 "$ROUNDS"); do
  for c in "${configs[@]}"; do
    case $c in
      none) flush ;;
      ct) ct_only ;;
      demo) program "$tmp/inv.toml" ;;
      big)
        program "$tmp/inv10k.toml"
        [ -n "${members:-}" ] || members=$(ip netns exec fwtp-api-1 nft list set inet fw z_web_4 | grep -o '10\.' | wc -l)
        ;;
      # The demo policy and the host-side floor on the lab's bridge (both containers' ports).
      floor) program "$tmp/inv.toml"; "$FW" apply rules/demo --inventory "$tmp/lab.toml" --floor >/dev/null ;;
    esac
    runs[$c]+="$(measure) "
  done
done
flush

median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
gbit() { echo "scale=2; $1 / 1000000000" | bc -l; }
base=$(median "${runs[none]}")
row() {
  local m
  m=$(median "${runs[$2]}")
  printf '%-36s %6s Gbit/s  %.3fx   runs: %s\n' "$1" "$(gbit "$m")" "$(echo "$m / $base" | bc -l)" \
    "$(for b in ${runs[$2]}; do printf '%s ' "$(gbit "$b")"; done)"
}
echo "iperf3 api-1 -> web-1:443, ${SECS}s per run, median of $ROUNDS interleaved rounds"
row "no table" none
row "conntrack only (ct established)" ct
row "demo policy" demo
row "demo + $members peers in z_web_4" big
row "demo + the host-side floor" floor
m_demo=$(median "${runs[demo]}"); m_floor=$(median "${runs[floor]}")
printf '%-36s %.3fx\n' "floor vs demo alone" "$(echo "$m_floor / $m_demo" | bc -l)"
