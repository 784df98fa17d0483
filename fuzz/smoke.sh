#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each from a scratch copy of its seed corpus,
# so the committed corpus stays small. Exits non-zero on the first crash.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"${fuzz[@]}" build
for target in $("${fuzz[@]}" list); do
  mkdir -p "$scratch/$target"
  if [ -d "corpus/$target" ]; then
    cp corpus/"$target"/seed-* "$scratch/$target/" 2>/dev/null || true
  fi
  echo "== fuzz $target for ${seconds}s"
  log="$scratch/$target.log"
  if ! "${fuzz[@]}" run "$target" "$scratch/$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target failed"; exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' "$log" || tail -n 5 "$log"
done
echo "fuzz smoke: every target ran ${seconds}s without a crash"
