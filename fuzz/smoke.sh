#!/usr/bin/env bash
# Usage: fuzz/smoke.sh [SECONDS]
#
# Runs every fuzz target for SECONDS (default 60) each, starting from a scratch copy of its
# committed seeds (corpus/TARGET/seed-*) so the committed corpus stays small. Prints the
# executions per target and exits non-zero if any target crashed (the reproducer is left in
# fuzz/artifacts/TARGET/). Uses the nightly toolchain when rustup has one, else
# RUSTC_BOOTSTRAP=1 on the default toolchain. Needs cargo-fuzz (`cargo install cargo-fuzz`).
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
failed=()
summary=()
for target in $("${fuzz[@]}" list); do
  mkdir -p "$scratch/$target"
  cp corpus/"$target"/seed-* "$scratch/$target/" 2>/dev/null || true
  echo "== $target: ${seconds}s"
  log="$scratch/$target.log"
  if "${fuzz[@]}" run "$target" "$scratch/$target" -- \
      -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
    stats=$(awk '/^Done [0-9]+ runs in/ { printf "%12d execs in %4ds  %9d exec/s", $2, $5, ($5 ? $2 / $5 : $2) }
                 /^stat::peak_rss_mb/ { rss = $2 } END { printf "  peak RSS %s MB", rss }' "$log")
    summary+=("$(printf '%-20s ok    %s' "$target" "$stats")")
  else
    grep -E -A3 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" | cut -c1-400 || true
    sed -n '/^Failing input:/,/^Reproduce with:/p' "$log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    failed+=("$target")
    summary+=("$(printf '%-20s CRASH after %s execs, input in fuzz/artifacts/%s/' "$target" "${execs:-?}" "$target")")
  fi
done

echo
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz smoke: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz smoke: every target ran ${seconds}s without a crash"
