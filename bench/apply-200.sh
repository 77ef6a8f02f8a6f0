#!/usr/bin/env bash
# Benchmark (root): program N namespaces (default 200) with the demo policy, fw-daemon apply
# (one netlink batch per namespace, release build) side by side with
# `ip netns exec NS nft -f plan.nft` over the same namespaces and the same scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
cargo build -q --release -p fw-daemon
FW=target/release/fw-daemon
tmp=$(mktemp -d)
cleanup() { for i in $(seq 1 "$N"); do ip netns del "fwb-$i" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

# N containers cycling through the demo zones, each with its own (empty) namespace.
kinds=(web api db dns batch misc)
{
  for i in $(seq 1 "$N"); do
    k=${kinds[$((i % 6))]}
    echo "[[container]]"
    echo "name = \"$k-b$i\""
    echo "netns = \"/run/netns/fwb-$i\""
    case $k in api) echo 'labels = { tier = "api" }';; db) echo 'image = "postgres:16"';; esac
    echo "addresses = [\"10.78.$((i / 250)).$((i % 250 + 1))\", \"fd78::$(printf %x "$i")\"]"
  done
} > "$tmp/inv.toml"
for i in $(seq 1 "$N"); do ip netns add "fwb-$i"; done

# Plans for the nft CLI, written before timing anything.
names=$(sed -n 's/^name = "\(.*\)"/\1/p' "$tmp/inv.toml")
i=0
for c in $names; do
  i=$((i + 1))
  "$FW" plan rules/demo --inventory "$tmp/inv.toml" --container "$c" > "$tmp/$i.nft"
done

now() { date +%s.%N; }
t0=$(now)
"$FW" apply rules/demo --inventory "$tmp/inv.toml" > "$tmp/apply.out"
t1=$(now)
for i in $(seq 1 "$N"); do ip netns exec "fwb-$i" nft -f "$tmp/$i.nft"; done
t2=$(now)
fw=$(echo "$t1 - $t0" | bc -l); cli=$(echo "$t2 - $t1" | bc -l)
printf 'namespaces: %d (demo policy, %d rules per table on average)\n' "$N" \
  "$(( $(ip netns exec fwb-1 nft -a list table inet fw | grep -c 'handle') ))"
printf 'fw-daemon apply        total %7.3f s   per namespace %6.2f ms\n' "$fw" "$(echo "$fw * 1000 / $N" | bc -l)"
printf 'ip netns exec nft -f   total %7.3f s   per namespace %6.2f ms\n' "$cli" "$(echo "$cli * 1000 / $N" | bc -l)"
printf 'ratio fw / nft CLI: %.3f (target <= 0.3)\n' "$(echo "$fw / $cli" | bc -l)"
