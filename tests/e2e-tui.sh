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

# Each in its own process group, so the cleanup stops the pipelines and forks too.
# sink NODE PORT FILE: NODE appends what it receives on PORT to FILE.
sink() { : >"$3"; setsid ip netns exec "fwtui-$1" socat -u "TCP-LISTEN:$2,reuseaddr,fork" "OPEN:$3,append" 2>/dev/null & groups+=($!); sleep 0.3; }
# stream NODE ADDR:PORT: NODE writes a line every 50 ms on one connection.
stream() { setsid ip netns exec "fwtui-$1" bash -c "while :; do echo tick; sleep 0.05; done | socat -u - TCP:$2" 2>/dev/null & groups+=($!); }
RX="$tmp/rx"
sink api-1 8080 "$RX"
stream web-1 10.77.0.21:8080
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

# Selection and direction. Two live streams of web-1's: the one it opens (to api-1:8080,
# restarted: the block cut the first) and one it serves (api-1 -> web-1:443, public-web).
# Both rows update all the time, so their order keeps changing; the selection must stay on
# the row it was put on (by flow, not by screen position). An egress quarantine then cuts
# only what web-1 opened: the stream it serves keeps flowing, and its row stays inbound.
RX2="$tmp/rx2"
sink web-1 443 "$RX2"
stream api-1 10.77.0.11:443
stream web-1 10.77.0.21:8080
flowing_in() { local a b; a=$(stat -c %s "$RX2"); sleep 0.5; b=$(stat -c %s "$RX2"); [ "$b" -gt "$a" ]; }
if flowing && flowing_in; then ok "both streams flow (web-1 -> api-1:8080, api-1 -> web-1:443)"; else bad "the two streams do not both flow"; fi
# The selected row: the one drawn in reverse video (SGR 7) among the flow rows.
selected_row() { tmux capture-pane -p -e -t "$S" | grep $'\e\[[0-9;]*7m' | grep -E '10\.77\.0\.' | sed 's/\x1b\[[0-9;]*m//g'; }
keys 1; keys / ; keys C-u; keys -l "container:web-1 state:established"; keys Enter
wait_for '10\.77\.0\.11:443' 10 && wait_for '10\.77\.0\.21:8080' 10
for _ in 1 2 3; do selected_row | grep -q '10\.77\.0\.11:443' && break; keys Down; sleep 0.4; done
if selected_row | grep -q '10\.77\.0\.11:443'; then ok "the inbound row is selected"; else bad "could not select the inbound row" "$(screen)"; fi
sticks=1
for _ in $(seq 8); do
  sleep 0.4
  selected_row | grep -q '10\.77\.0\.11:443' || { sticks=0; break; }
done
if [ $sticks = 1 ]; then ok "the selection stays on its flow while rows update"; else bad "the selection moved off its flow" "$(screen)"; fi
keys B
if wait_for 'Quarantine web-1\?' 5; then ok "B opens the quarantine dialog for the selected row's container"; else bad "no quarantine dialog for web-1" "$(screen)"; fi
# The dialog opens on the ttl; Shift-Tab goes up to the direction, Right picks egress.
keys BTab; keys Right
if wait_for '< egress >' 3 && wait_for 'Cuts connections it opens' 3; then ok "the dialog says what an egress quarantine cuts"; else bad "no egress choice in the dialog" "$(screen)"; fi
keys Enter
if wait_for 'block [0-9]+ placed: quarantine' 5; then ok "the console reports the quarantine"; else bad "no quarantine result" "$(screen)"; fi
sleep 0.5
if ! flowing; then ok "egress quarantine: the stream web-1 opened stopped"; else bad "the stream web-1 opened still flows under an egress quarantine"; fi
if flowing_in; then ok "egress quarantine: the stream web-1 serves keeps flowing"; else bad "the stream web-1 serves was cut by an egress quarantine"; fi
sleep 1
rows=$(screen | grep -E '^ *web-1 ')
if grep -Eq ' in +tcp .*10\.77\.0\.11:443' <<<"$rows" && ! grep -Eq ' out +tcp .*10\.77\.0\.21:[0-9]+' <<<"$(grep -v ':8080' <<<"$rows")"; then
  ok "the served stream's row stays inbound (no reply shown as a new outbound flow)"
else
  bad "the served stream's direction" "$(screen)"
fi
qid=$(screen | grep -Eo 'block [0-9]+ placed' | tail -1 | awk '{print $2}')
if [ -n "$qid" ] && "$TUI" --socket "$SOCK" unblock "$qid" >/dev/null; then ok "the quarantine is lifted"; else bad "could not lift the quarantine" "$("$TUI" --socket "$SOCK" blocks 2>&1)"; fi

# The daemon restarts: the console says it lost it, then reconnects by itself.
kill "$dpid"; wait "$dpid" 2>/dev/null
if wait_for 'disconnected' 10; then ok "the console notices the daemon is gone"; else bad "no disconnected state" "$(screen)"; fi
daemon
if wait_for 'reconnected' 15 && wait_for '● connected' 5; then ok "the console reconnects by itself and says so"; else bad "no reconnect" "$(screen)"; fi

# q: the console exits cleanly (the shell after it prints its exit code).
keys q
if wait_for 'CONSOLE-EXITED rc=0' 5; then ok "q quits with exit 0"; else bad "q did not quit cleanly" "$(screen)"; fi

# --screen and --filter: the console opens where the incident is (what `make demo` does).
S2="$S-open"
tmux new-session -d -s "$S2" -x 160 -y 40 "NO_COLOR=1 $TUI --socket $SOCK --screen containers --filter container:web-1; sleep 30"

# (The filter shows at once; the rows once it is connected.)
for _ in $(seq 75); do tmux capture-pane -p -t "$S2" | grep -Eq '^ *web-1 ' && break; sleep 0.2; done
pane=$(tmux capture-pane -p -t "$S2")
tmux kill-session -t "$S2" 2>/dev/null
if grep -q 'filter: container:web-1' <<<"$pane" && grep -Eq '^ *web-1 ' <<<"$pane" && ! grep -Eq '^ *api-1 ' <<<"$pane" && grep -q 'BLOCKS' <<<"$pane"; then
  ok "--screen containers --filter container:web-1 opens there"
else
  bad "--screen / --filter" "$pane"
fi

echo "e2e-tui: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
