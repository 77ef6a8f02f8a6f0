#!/usr/bin/env bash
# Traffic for the demo lab (tests/lab.sh): listeners plus generators that run until this
# script gets SIGTERM/SIGINT (it then stops every child). Some flows are allowed, some denied,
# batch-1 is in an audit zone (its denied flows pass and are reported), and web-2 misbehaves:
# it scans db-1's ports and bursts new connections past its zone's new_conns_per_sec cap.
# api-2's link to the partner is not TLS (the listener speaks first, in plain bytes), so
# the api-to-partners inspection cuts each of those connections and raises an alert.
# All traffic stays between the lab's namespaces (10.77.0.0/16, no route out).
# Usage: tests/traffic.sh [NETNS_PREFIX]   (default fwdemo-)
set -uo pipefail
P="${1:-fwdemo-}"
kids=()
# Stops a process and everything below it (listeners fork, loops spawn clients).
killtree() {
  local c
  for c in $(pgrep -P "$1"); do killtree "$c"; done
  kill "$1" 2>/dev/null
}
stop() {
  trap - TERM INT EXIT
  for k in "${kids[@]}"; do killtree "$k"; done
  wait 2>/dev/null
  exit 0
}
trap stop TERM INT EXIT
# on NODE CMD...: run CMD in the lab namespace of NODE
on() { local ns="$P$1"; shift; ip netns exec "$ns" "$@"; }
bg() { "$@" & kids+=($!); }
# every SECONDS NODE CMD...: run CMD in NODE's namespace, then sleep, forever
every() {
  local s="$1" ns="$P$2"; shift 2
  bg bash -c 'while :; do ip netns exec "$@" >/dev/null 2>&1; sleep '"$s"'; done' _ "$ns" "$@"
}

# Listeners: each answers with a few KiB so flows carry bytes both ways.
for spec in api-1:8080 api-2:8080 api-2:9000 db-1:5432 web-1:443 web-2:443 partner-1:443; do
  bg on "${spec%%:*}" socat -T5 "TCP-LISTEN:${spec##*:},reuseaddr,fork" SYSTEM:'head -c 4096 /dev/zero; cat >/dev/null'
done
sleep 0.3

# Allowed: web -> api every second, api -> db a long-lived session, the public -> web.
every 1 web-1 socat -T2 - TCP:10.77.0.21:8080 </dev/null
every 2 web-2 socat -T2 - TCP:10.77.0.22:9000 </dev/null
bg on api-1 bash -c 'while :; do (while :; do head -c 2048 /dev/zero; sleep 0.5; done) | socat -T30 - TCP:10.77.0.31:5432 >/dev/null 2>&1; sleep 1; done'
every 3 misc-1 socat -T2 - TCP:10.77.0.11:443 </dev/null
every 5 api-2 socat -T2 - TCP:10.77.9.10:443 </dev/null
# Denied: web tries the database (no-web-to-db), misc tries it too (default deny).
every 3 web-1 nc -z -w1 10.77.0.31 5432
every 7 misc-1 nc -z -w1 10.77.0.31 5432
# Audit zone: batch-1's denied attempt passes and is reported.
every 4 batch-1 socat -T2 - TCP:10.77.0.31:5432 </dev/null
# Misbehaving: web-2 scans db-1 and bursts past new_conns_per_sec (50/s).
every 10 web-2 bash -c 'for p in $(seq 5400 5440); do nc -z -w1 10.77.0.31 $p & done; wait'
every 5 web-2 bash -c 'for _ in $(seq 80); do socat -T1 - TCP:10.77.0.21:8080 </dev/null & done; wait'
wait
