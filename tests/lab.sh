#!/usr/bin/env bash
# The demo's namespace lab, from an inventory file: one netns per [[container]] (named after
# its `netns` path), all joined by veth pairs to a bridge in its own namespace, addresses only
# in 10.77.0.0/16 and fd77::/32, no default route. Plus partner-1 (10.77.9.10), a host of the
# external `partners` zone that fw does not manage.
#   tests/lab.sh up [INVENTORY]     create (idempotent: an existing lab is removed first)
#   tests/lab.sh down [INVENTORY]   remove everything the lab created
#   tests/lab.sh status [INVENTORY]
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-status}"
INV="${2:-rules/demo-inventory.toml}"
BR="${LAB_BRIDGE:-fwdemo-br}"
PARTNER="${LAB_PARTNER:-fwdemo-partner-1}"

# "netns-name addr addr ..." per container, read from the inventory.
nodes() {
  awk '
    /^\[\[container\]\]/ { if (ns != "") print ns, addrs; ns = ""; addrs = "" }
    /^netns *=/ { gsub(/.*\/|"/, ""); ns = $0 }
    /^addresses *=/ { s = $0; sub(/^[^[]*\[/, "", s); sub(/\].*/, "", s); gsub(/[",]/, " ", s); addrs = s }
    END { if (ns != "") print ns, addrs }
  ' "$INV"
  echo "$PARTNER 10.77.9.10 fd77:9::10"
}

down() {
  nodes | while read -r ns _; do ip netns del "$ns" 2>/dev/null || true; done
  ip netns del "$BR" 2>/dev/null || true
}

up() {
  down
  ip netns add "$BR"
  ip -n "$BR" link add br0 type bridge
  ip -n "$BR" link set br0 up
  i=0
  nodes | while read -r ns addrs; do
    ip netns add "$ns"
    ip -n "$ns" link add eth0 type veth peer name "p$i" netns "$BR"
    ip -n "$BR" link set "p$i" master br0 up
    ip -n "$ns" link set lo up
    for a in $addrs; do
      case "$a" in
        *:*) ip -n "$ns" addr add "$a/32" dev eth0 nodad ;;
        *)   ip -n "$ns" addr add "$a/16" dev eth0 ;;
      esac
    done
    ip -n "$ns" link set eth0 up
    i=$((i + 1))
  done
  echo "lab up: $(nodes | wc -l) namespaces on bridge $BR (no route out)"
}

status() {
  nodes | while read -r ns addrs; do
    if ip netns list | grep -qw "$ns"; then state=up; else state=absent; fi
    printf '%-24s %-7s %s\n' "$ns" "$state" "$addrs"
  done
}

case "$cmd" in
  up) up ;;
  down) down; echo "lab down" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status [INVENTORY]" >&2; exit 2 ;;
esac
