#!/usr/bin/env bash
# `make demo`: the engineer's loop on the built-in demo — check the rule files, see the
# nftables each container would get, and ask which rule decides a few flows. As root it then
# builds a namespace lab with live traffic (tests/traffic.sh), runs the daemon on it, shows the
# scripting commands and an incident block, and opens the console (in a terminal). Everything
# it started is stopped and removed on exit.
# Usage: tests/demo.sh [BIN_DIR] [--step]
#   --step (make demo STEP=1): wait for Enter before each step. Otherwise, in a terminal, each
#   step stays on screen for DEMO_PACE seconds (default 2) before the next one starts; piped
#   or in CI, no pause at all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/debug STEP=0
for a in "$@"; do
  case $a in
    --step) STEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) BIN=$a ;;
  esac
done
FW="$BIN/fw-daemon"
RULES=rules/demo
INV=rules/demo-inventory.toml
steps=0
# Before every step but the first: Enter (--step), or a pause to read the last one.
pace() {
  steps=$((steps + 1))
  [ "$steps" -gt 1 ] || return 0
  if [ "$STEP" = 1 ] && [ -t 0 ]; then
    read -rp "  [Enter: next step] " _
  elif [ -t 1 ]; then
    sleep "${DEMO_PACE:-2}"
  fi
}
bold() {
  pace
  if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi
}
run() { printf '$ %s\n' "$*"; "$@"; }

bold "1. Check the rule files (and where each container lands)"
run "$FW" check "$RULES" --inventory "$INV"

bold "2. A broken rule file is refused with every error at its position"
run "$FW" check tests/fixtures/broken || echo "(exit $? — the last good policy would stay enforced)"

bold "3. The nftables ruleset web-1 would get"
run "$FW" plan "$RULES" --inventory "$INV" --container web-1

if command -v nft >/dev/null; then
  bold "4. The real nft client accepts every container's plan"
  for c in $(sed -n 's/^name = "\(.*\)"/\1/p' "$INV"); do
    # (The inspection queue statement, the compat NFQUEUE target, has no native nft form on
    # this kernel: it is checked as `accept`.)
    "$FW" plan "$RULES" --inventory "$INV" --container "$c" |
      sed -E 's/ meta mark set ct mark queue num [0-9]+( bypass)? / accept /' | nft -c -f - && echo "  $c: accepted by nft -c"
  done
fi

bold "5. Which rule decides?"
while read -r from to proto port; do
  args=(--from "$from" --to "$to" --proto "$proto"); [ "$port" != - ] && args+=(--port "$port")
  run "$FW" explain "$RULES" --inventory "$INV" "${args[@]}"
  echo
done <<'CELLS'
web-1 api-1 tcp 8080
web-1 db-1 tcp 5432
api-2 db-1 tcp 5432
batch-1 db-1 tcp 5432
misc-1 dns-1 udp 53
10.77.9.10 api-1 tcp 8443
CELLS

if [ "$(id -u)" -ne 0 ]; then
  echo "(run as root to see the rules enforced in a namespace lab)"
  exit 0
fi

bold "6. Enforce it: a namespace lab, and the daemon programming every container over netlink"
pids=()
work=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  bash tests/lab.sh down >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
bash tests/lab.sh up "$INV"
# The daemon works on a copy of the rules, so the demo can edit them.
cp -r "$RULES" "$work/rules"
printf '$ %s\n' "$FW run --no-docker --rules $work/rules --inventory $INV --state-dir $work/state &"
"$FW" run --no-docker --rules "$work/rules" --inventory "$INV" --state-dir "$work/state" \
  --socket "$work/fw.sock" --audit-log "$work/audit.jsonl" 2>"$work/daemon.log" &
pids+=($!)
until ip netns exec fwdemo-misc-1 nft list table inet fw >/dev/null 2>&1; do sleep 0.1; done
sed 's/^/  /' "$work/daemon.log"

# Traffic: listeners, allowed and denied flows, an audit-zone container, and web-2
# misbehaving (a port scan and bursts past its new-connection cap). Own process group, so
# the cleanup stops every generator.
setsid bash tests/traffic.sh fwdemo- >"$work/traffic.log" 2>&1 &
pids+=($!)
sleep 1

bold "7. Real connections, next to what explain predicts"
printf '%-34s %-12s %-10s %s\n' "flow" "explain" "probe" "deciding rule"
while read -r from to ip port; do
  verdict=$("$FW" explain "$RULES" --inventory "$INV" --from "$from" --to "$to" --proto tcp --port "$port" | sed -n 's/^verdict: //p')
  rule=$("$FW" explain "$RULES" --inventory "$INV" --from "$from" --to "$to" --proto tcp --port "$port" | sed -n 's/^rule: //p')
  if ip netns exec "fwdemo-$from" nc -z -w1 "$ip" "$port" 2>/dev/null; then probe=connected; else probe=blocked; fi
  printf '%-34s %-12s %-10s %s\n' "$from -> $to tcp/$port" "$verdict" "$probe" "$rule"
done <<'CELLS'
web-1 api-1 10.77.0.21 8080
web-1 db-1 10.77.0.31 5432
api-2 db-1 10.77.0.31 5432
batch-1 10.77.9.10 10.77.9.10 443
misc-1 web-2 10.77.0.12 443
misc-1 db-1 10.77.0.31 5432
CELLS

bold "8. The kernel's counters, per rule id (web-1 egress)"
ip netns exec fwdemo-web-1 nft list chain inet fw egress | grep -E 'counter packets [1-9]' | sed 's/^\s*/  /'

bold "9. Tampering: flush the ruleset from inside web-1; the daemon restores it"
run ip netns exec fwdemo-web-1 nft flush ruleset
sleep 1.5
grep 'outside fw' "$work/daemon.log" | sed 's/^/  /'
ip netns exec fwdemo-web-1 nft list tables | sed 's/^/  table present: /'

bold "10. A broken edit is refused; the last good policy stays enforced"
printf '[[policy]]\nid = "oops"\nfrom = "web"\nto = "db"\nproto = "tcp"\nports = 70000\naction = "allow"\n' | tee "$work/rules/30-oops.toml" | sed 's/^/  30-oops.toml: /' 
sleep 1.5
grep -E 'error|rejected' "$work/daemon.log" | sed 's/^/  /'
verdict=$(ip netns exec fwdemo-web-1 nc -z -w1 10.77.0.31 5432 2>/dev/null && echo connected || echo blocked)
echo "  web-1 -> db-1 tcp/5432 still: $verdict"

TUI="$(dirname "$FW")/fw-tui"
if [ -x "$TUI" ]; then
  bold "11. The console's scripting commands, on the daemon's control socket"
  run "$TUI" --socket "$work/fw.sock" status
  echo
  run "$TUI" --socket "$work/fw.sock" flows --filter "verdict=denied" --limit 10

  bold "12. An incident: quarantine web-1's egress for 15 minutes, established flows included"
  printf '$ %s\n' "$TUI --socket $work/fw.sock block quarantine web-1 --direction egress --ttl 15m --reason \"demo: suspected exfil\""
  placed=$("$TUI" --socket "$work/fw.sock" block quarantine web-1 --direction egress --ttl 15m --reason "demo: suspected exfil")
  echo "$placed"
  id=$(sed -n 's/^block \([0-9][0-9]*\):.*/\1/p' <<<"$placed")
  verdict=$(ip netns exec fwdemo-web-1 nc -z -w1 10.77.0.21 8080 2>/dev/null && echo connected || echo blocked)
  echo "  web-1 -> api-1 tcp/8080 now: $verdict"
  run "$TUI" --socket "$work/fw.sock" blocks
  run "$TUI" --socket "$work/fw.sock" unblock "$id"
  verdict=$(ip netns exec fwdemo-web-1 nc -z -w1 10.77.0.21 8080 2>/dev/null && echo connected || echo blocked)
  echo "  web-1 -> api-1 tcp/8080 after the unblock: $verdict"
  run "$TUI" --socket "$work/fw.sock" audit --limit 5

  bold "13. Inspection: api-to-partners must speak TLS with an allowed SNI; api-2's plain bytes are cut"
  printf '$ %s\n' "$TUI --socket $work/fw.sock alerts | grep violation | tail -3"
  "$TUI" --socket "$work/fw.sock" alerts | grep violation | tail -3 || echo "  (no violation yet)"

  bold "14. The console: live flows, drops and alerts, one-key blocking"
  if [ -t 0 ] && [ -t 1 ]; then
    echo "  It opens on the incident: Drops & alerts, filtered to web-2 (the misbehaving one: a port"
    echo "  scan, connections past its cap). Tab / 1-5 switch screens, / changes the filter, Enter shows"
    echo "  details, B quarantines the selected row's container, ? lists every key, q quits."
    printf '$ %s\n' "$TUI --socket $work/fw.sock --screen drops --filter web-2"
    pace
    "$TUI" --socket "$work/fw.sock" --screen drops --filter web-2 || true
  else
    echo "  (no terminal here: five seconds of the live flow stream instead; run 'make demo' in a terminal for the console)"
    timeout 5 "$TUI" --socket "$work/fw.sock" flows --follow --filter "container=web-2" --limit 8 || true
  fi
fi
echo
echo "(the traffic and the daemon are stopped and the lab removed on exit)"
