#!/usr/bin/env bash
# The offline image (deploy/image.sh, `make image`): built from the given binaries with no
# registry, it runs fw-daemon and fw-tui in Docker (no network). Needs root and Docker; outside
# CI a missing Docker is reported as skipped, under CI=true it fails.
# Usage: tests/image.sh [BIN_DIR]   (default target/debug)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/debug}"
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' <<<"$2"; }

if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null && [ "$(id -u)" -eq 0 ]; then
  # As the Rust Docker tests do: a service that outlives this script, holding none of its fds.
  bash -c 'for f in /proc/self/fd/*; do n=${f##*/}; case $n in 0|1|2) ;; *) eval "exec $n>&-" 2>/dev/null ;; esac; done; dockerd >/tmp/fw-test-dockerd.log 2>&1 </dev/null &'
  for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.3; done
fi
if ! docker info >/dev/null 2>&1; then
  if [ "${CI:-}" = true ]; then echo "FAIL image: Docker is not available (CI=true)"; exit 1; fi
  echo "skipped image: needs root and Docker"; exit 0
fi

tag="fw-image-test:$$"
trap 'docker rmi -f "$tag" >/dev/null 2>&1' EXIT
if out=$(bash deploy/image.sh "$BIN" "$tag" 2>&1) && [ "$out" = "$tag" ]; then
  ok "deploy/image.sh builds $tag offline"
else
  bad "deploy/image.sh" "$out"
fi
want=$("$BIN/fw-daemon" --version)
got=$(docker run --rm --network none "$tag" --version 2>&1)
[ "$got" = "$want" ] && ok "fw-daemon --version in the image: $got" || bad "fw-daemon --version in the image" "$got"
want=$("$BIN/fw-tui" --version)
got=$(docker run --rm --network none --entrypoint /usr/local/bin/fw-tui "$tag" --version 2>&1)
[ "$got" = "$want" ] && ok "fw-tui --version in the image: $got" || bad "fw-tui --version in the image" "$got"
# The daemon's own checks work in it: the demo rules, mounted as a ConfigMap would be.
got=$(docker run --rm --network none -v "$PWD/rules/demo:/etc/fw/rules:ro" "$tag" check /etc/fw/rules 2>&1)
[ $? -eq 0 ] && ok "fw-daemon check on mounted rules in the image" || bad "fw-daemon check in the image" "$got"
layers=$(docker history --format '{{.CreatedBy}}' "$tag" | wc -l)
[ "$layers" -eq 1 ] && ok "one imported layer, no base image" || bad "image history" "$(docker history "$tag")"

echo "image: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
