#!/usr/bin/env bash
# `make demo`: the engineer's loop on the built-in demo — check the rule files, see the
# nftables each container would get, and ask which rule decides a few flows.
# Usage: tests/demo.sh [BIN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
FW="${1:-target/debug}/fw-daemon"
RULES=rules/demo
INV=rules/demo-inventory.toml
bold() { if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }
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
    "$FW" plan "$RULES" --inventory "$INV" --container "$c" | nft -c -f - && echo "  $c: accepted by nft -c"
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
