#!/usr/bin/env bash
# Benchmark (root): TCP throughput between two lab containers (iperf3, api-1 -> web-1:443,
# allowed by `public-web`) with no table, with the demo policy, and with the demo policy plus
# 10,000 extra allowed peers in the zone sets. Established flows take the early shortcut, so
# the policy should cost next to nothing; target >= 0.95x of no table in both cases.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SECS:-5}"
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
awk '/^\[\[container\]\]/{keep=0} /^name = "(web-1|api-1)"/{keep=1} {buf=buf $0 "\n"} /^addresses/{if (keep) printf "[[container]]\n%s", substr(buf, index(buf, "name")); buf=""}' \
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

measure() {
  local best=0
  for _ in 1 2; do
    bps=$(ip netns exec fwtp-api-1 iperf3 -c 10.77.0.11 -p 443 -t "$SECS" -O 1 -J | \
      python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))')
    [ "$bps" -gt "$best" ] && best=$bps
  done
  echo "$best"
}
program() { for c in web-1 api-1; do "$FW" apply rules/demo --inventory "$1" --container "$c" >/dev/null; done; }

"$FW" flush --inventory "$tmp/inv.toml" --container web-1 >/dev/null
"$FW" flush --inventory "$tmp/inv.toml" --container api-1 >/dev/null
none=$(measure)
program "$tmp/inv.toml"
demo=$(measure)
program "$tmp/inv10k.toml"
members=$(ip netns exec fwtp-api-1 nft list set inet fw z_web_4 | grep -o '10\.' | wc -l)
big=$(measure)

gbit() { echo "scale=2; $1 / 1000000000" | bc -l; }
printf 'no table                          %6s Gbit/s\n' "$(gbit "$none")"
printf 'demo policy                       %6s Gbit/s  %.3fx\n' "$(gbit "$demo")" "$(echo "$demo / $none" | bc -l)"
printf 'demo + %5d peers in z_web_4    %6s Gbit/s  %.3fx\n' "$members" "$(gbit "$big")" "$(echo "$big / $none" | bc -l)"
