#!/usr/bin/env bash
# End-to-end test of fw-tui's scripting commands against a real `fw-daemon run` on the
# demo lab (its own namespaces, removed on exit): exit codes, --json output a script can
# parse, --socket/--json before or after the subcommand, and a block that really cuts.
# Usage: tests/e2e-console.sh [BIN_DIR]   (root; skipped with a reason otherwise unless CI=true)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/debug}"
FW="$BIN/fw-daemon" TUI="$BIN/fw-tui"
if [ "$(id -u)" -ne 0 ]; then
  [ "${CI:-}" = true ] && { echo "FAIL e2e-console needs root under CI=true"; exit 1; }
  echo "skipping e2e-console: needs root (network namespaces)"; exit 0
fi
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' <<<"$2"; }
tmp=$(mktemp -d)
INV="$tmp/inventory.toml"
sed 's|/run/netns/fwdemo-|/run/netns/fwe2e-|' rules/demo-inventory.toml >"$INV"
export LAB_BRIDGE=fwe2e-br LAB_PARTNER=fwe2e-partner-1
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash tests/lab.sh down "$INV" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
bash tests/lab.sh up "$INV" >/dev/null
SOCK="$tmp/fw.sock"
"$FW" run --no-docker --rules rules/demo --inventory "$INV" --state-dir "$tmp/state" \
  --socket "$SOCK" --audit-log "$tmp/audit.jsonl" --resync 1 2>"$tmp/daemon.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
ip netns exec fwe2e-api-1 nc -lk 8080 >/dev/null 2>&1 &
pids+=($!)
tui() { "$TUI" --socket "$SOCK" "$@"; }

# status: every container programmed, as JSON a script can read
for _ in $(seq 50); do
  out=$(tui status --json 2>&1) && [ "$(python3 -c 'import json,sys; s=json.load(sys.stdin); print(all(c["programmed"] for c in s["containers"]))' <<<"$out")" = True ] && break
  sleep 0.2
done
if grep -q '"policy_hash"' <<<"$out"; then ok "status --json"; else bad "status --json" "$out"; fi
# global options after the subcommand work too
if out=$("$TUI" status --socket "$SOCK" --json 2>&1) && grep -q '"containers"' <<<"$out"; then
  ok "global options after the subcommand"
else
  bad "global options after the subcommand" "$out"
fi
# human status names the containers
if out=$(tui status 2>&1) && grep -q 'web-1' <<<"$out"; then ok "status (human)"; else bad "status (human)" "$out"; fi

# a denied attempt shows in flows with its rule
ip netns exec fwe2e-web-1 nc -z -w1 10.77.0.31 5432 >/dev/null 2>&1
for _ in $(seq 30); do
  out=$(tui flows --filter "container=web-1 verdict=denied" --json 2>&1)
  grep -q 'no-web-to-db' <<<"$out" && break
  sleep 0.2
done
if grep -q 'no-web-to-db' <<<"$out"; then ok "flows: the deny shows its rule"; else bad "flows --filter" "$out"; fi
# a bad filter is a usage error
tui flows --filter "colour=red" >/dev/null 2>"$tmp/err"; rc=$?
if [ "$rc" -eq 2 ]; then ok "bad filter: exit 2"; else bad "bad filter: exit $rc" "$(cat "$tmp/err")"; fi

# block: quarantine web-1's egress, the connection stops, unblock restores it
if ip netns exec fwe2e-web-1 nc -z -w1 10.77.0.21 8080; then ok "web-1 -> api-1:8080 before the block"; else bad "web-1 -> api-1:8080 before the block"; fi
out=$(tui --json block quarantine web-1 --ttl 10m --reason "e2e test" 2>&1); rc=$?
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["block"]["id"])' <<<"$out" 2>/dev/null)
if [ "$rc" -eq 0 ] && [ -n "$id" ]; then ok "block quarantine (id $id)"; else bad "block quarantine: exit $rc" "$out"; fi
if ! ip netns exec fwe2e-web-1 nc -z -w1 10.77.0.21 8080; then ok "quarantined: web-1 cannot connect"; else bad "quarantine did not cut"; fi
if out=$(tui blocks 2>&1) && grep -q 'e2e test' <<<"$out"; then ok "blocks lists it"; else bad "blocks" "$out"; fi
tui unblock 999 >/dev/null 2>"$tmp/err"; rc=$?
if [ "$rc" -eq 1 ] && grep -q 'not-found' "$tmp/err"; then ok "unblock of an unknown id: exit 1, not-found"; else bad "unblock 999: exit $rc" "$(cat "$tmp/err")"; fi
if tui unblock "$id" >/dev/null 2>&1 && ip netns exec fwe2e-web-1 nc -z -w1 10.77.0.21 8080; then
  ok "unblock restores traffic"
else
  bad "unblock"
fi
# audit: both mutations recorded
if out=$(tui audit --json 2>&1) && grep -q '"op":"block"' <<<"$out" && grep -q '"op":"unblock"' <<<"$out"; then
  ok "audit has the block and the unblock"
else
  bad "audit" "$out"
fi
# no daemon: exit 3
"$TUI" --socket "$tmp/nope.sock" status >/dev/null 2>&1; rc=$?
if [ "$rc" -eq 3 ]; then ok "no daemon: exit 3"; else bad "no daemon: exit $rc"; fi

echo "e2e-console: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
