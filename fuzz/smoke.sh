#!/usr/bin/env bash
# Runs every cargo-fuzz target in this directory for SECONDS seconds each (default 15) and
# prints one line per target: runs executed, and ok or CRASH. Exits nonzero if any crashed.
#   bash fuzz/smoke.sh [SECONDS]
# Each target starts from its seeds (corpus/T/seed-*) in a scratch corpus, so the inputs the
# fuzzer generates do not end up in the repository. Crash inputs go to fuzz/artifacts/T/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-15}"   # not $SECONDS: bash reserves that name

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "smoke.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz needs nightly flags: use a nightly toolchain if there is one.
if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi

"${fuzz[@]}" build

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in $("${fuzz[@]}" list); do
  mkdir -p "$scratch/$t" "corpus/$t"
  cp corpus/"$t"/seed-* "$scratch/$t"/ 2>/dev/null || true
  log="$scratch/$t.log"
  if "${fuzz[@]}" run "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
    runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -1)"
    printf '%-16s ok     %s\n' "$t" "${runs:-? runs}"
  else
    printf '%-16s CRASH  (log below; input in fuzz/artifacts/%s/)\n' "$t" "$t"
    tail -n 60 "$log"
    failed=1
  fi
done
exit "$failed"
