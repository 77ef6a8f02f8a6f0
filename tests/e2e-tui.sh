#!/usr/bin/env bash
# End-to-end test of the live console: a real `fw-daemon run` on its own namespace lab, a live
# TCP stream web-1 -> api-1:8080, and `fw-tui` driven in a tmux pane the way an operator would:
# filter to the flow, press b, confirm, and check both the screen (capture-pane) and that the
# stream really stopped and new connections fail; then u, confirm, and traffic flows again;
# then q restores the terminal. Everything it creates is removed on exit.
# Usage: tests/e2e-tui.sh [BIN_DIR]   (root and tmux; skipped with a reason unless CI=true)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/debug}"
FW="$BIN/fw-daemon" TUI="$BIN/fw-tui"
need() {
  [ "${CI:-}" = true ] && { echo "FAIL e2e-tui: $1 (required under CI=true)"; exit 1; }
  echo "skipping e2e-tui: $1"; exit 0
}
[ "$(id -u)" -eq 0 ] || need "needs root (network namespaces)"
command -v tmux >/dev/null || need "needs tmux (vagrant/provision.sh installs it)"
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' <<<"$2"; }
tmp=$(mktemp -d)
INV="$tmp/inventory.toml"
sed 's|/run/netns/fwdemo-|/run/netns/fwtui-|' rules/demo-inventory.toml >"$INV"
export LAB_BRIDGE=fwtui-br LAB_PARTNER=fwtui-partner-1
S="fwtui-$$"
pids=() groups=()
cleanup() {
  tmux kill-session -t "$S" 2>/dev/null
  for g in "${groups[@]}"; do kill -- "-$g" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  bash tests/lab.sh down "$INV" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
bash tests/lab.sh up "$INV" >/dev/null
SOCK="$tmp/fw.sock"
daemon() {
  "$FW" run --no-docker --rules rules/demo --inventory "$INV" --state-dir "$tmp/state" \
    --socket "$SOCK" --audit-log "$tmp/audit.jsonl" 2>>"$tmp/daemon.log" &
  dpid=$!
  pids+=($dpid)
}
daemon
for _ in $(seq 100); do "$TUI" --socket "$SOCK" status >/dev/null 2>&1 && break; sleep 0.1; done
until ip netns exec fwtui-web-1 nft list table inet fw >/dev/null 2>&1; do sleep 0.1; done

# api-1 appends what it receives to a file; web-1 writes a line every 50 ms on one connection.
RX="$tmp/rx"
: >"$RX"
# Each in its own process group, so the cleanup stops the pipelines and forks too.
setsid ip netns exec fwtui-api-1 socat -u TCP-LISTEN:8080,reuseaddr,fork "OPEN:$RX,append" 2>/dev/null &
groups+=($!)
sleep 0.3
setsid ip netns exec fwtui-web-1 bash -c 'while :; do echo tick; sleep 0.05; done | socat -u - TCP:10.77.0.21:8080' 2>/dev/null &
groups+=($!)
# Is the stream moving? (bytes received grow over half a second)
flowing() { local a b; a=$(stat -c %s "$RX"); sleep 0.5; b=$(stat -c %s "$RX"); [ "$b" -gt "$a" ]; }
connects() { ip netns exec fwtui-web-1 nc -z -w1 10.77.0.21 8080 2>/dev/null; }
if flowing; then ok "the stream web-1 -> api-1:8080 flows"; else bad "no stream before the console"; fi

screen() { tmux capture-pane -p -t "$S"; }
# wait_for PATTERN [SECONDS]: until the pane shows PATTERN (extended regex)
wait_for() {
  local end=$((SECONDS + ${2:-10}))
  while [ $SECONDS -lt $end ]; do screen | grep -Eq -- "$1" && return 0; sleep 0.2; done
  return 1
}
keys() { tmux send-keys -t "$S" "$@"; }
tmux new-session -d -s "$S" -x 160 -y 40 "NO_COLOR=1 $TUI --socket $SOCK --refresh 300; echo CONSOLE-EXITED rc=\$?; sleep 30"

if wait_for '10\.77\.0\.21:8080' 15; then ok "console shows the live flow"; else bad "console never showed the flow" "$(screen)"; fi
if screen | grep -q 'operator\|admin'; then ok "status bar shows the role"; else bad "no role in the status bar" "$(screen)"; fi

# Filter to the flow: every row left is web-1's, and the filter shows in the status bar.
keys / ; keys -l "container:web-1 port:8080 state:established"; keys Enter
sleep 1
rows=$(screen | grep -E '10\.77\.0\.21:8080')
if screen | grep -q 'container:web-1 port:8080' && [ -n "$rows" ] && ! grep -Evq '^ *web-1 ' <<<"$rows"; then
  ok "filtered to web-1's stream"
else
  bad "filter" "$(screen; "$TUI" --socket "$SOCK" flows --filter container=web-1)"
fi

# b: the dialog names the destination; Tab to the reason, type it, Enter confirms.
keys b
if wait_for 'Block destination' 5; then ok "b opens the block dialog"; else bad "no block dialog" "$(screen)"; fi
keys Tab; keys -l "e2e tmux"; keys Enter
if wait_for 'block [0-9]+ placed' 5; then ok "the console reports the block"; else bad "no block result" "$(screen)"; fi
sleep 0.3
if ! flowing; then ok "the established stream stopped"; else bad "the stream still flows after the block"; fi
if ! connects; then ok "new connections are refused"; else bad "a new connection got through the block"; fi
blocks=$("$TUI" --socket "$SOCK" blocks 2>&1)
if grep -q 'e2e tmux' <<<"$blocks" && grep -q '10.77.0.21' <<<"$blocks"; then ok "the daemon lists the block with its reason"; else bad "blocks" "$blocks"; fi

# u: lift it from the Containers screen (the filter still holds: web-1 is the only row);
# the cut stream left the flows view, as it should.
keys 3
# The row shows the block (BLOCKS column) and the zone's caps with their usage.
if wait_for '^ *web-1 .* [0-9]+/200 .* 1 +[^ ]*$' 5; then ok "Containers: web-1 shows 1 block and its usage of max_conns"; else bad "Containers screen" "$(screen)"; fi
keys u
if wait_for 'Lift block' 5; then ok "u opens the unblock dialog"; else bad "no unblock dialog" "$(screen)"; fi
keys Enter
if wait_for 'block [0-9]+ lifted' 5; then ok "the console reports the unblock"; else bad "no unblock result" "$(screen)"; fi
if connects; then ok "traffic resumes after the unblock"; else bad "still blocked after the unblock"; fi

# The daemon restarts: the console says it lost it, then reconnects by itself.
kill "$dpid"; wait "$dpid" 2>/dev/null
if wait_for 'disconnected' 10; then ok "the console notices the daemon is gone"; else bad "no disconnected state" "$(screen)"; fi
daemon
if wait_for 'reconnected' 15 && wait_for '● connected' 5; then ok "the console reconnects by itself and says so"; else bad "no reconnect" "$(screen)"; fi

# q: the console exits cleanly (the shell after it prints its exit code).
keys q
if wait_for 'CONSOLE-EXITED rc=0' 5; then ok "q quits with exit 0"; else bad "q did not quit cleanly" "$(screen)"; fi

echo "e2e-tui: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
