#!/usr/bin/env bash
# Builds every fuzz target (fuzz/, cargo-fuzz on the nightly toolchain) and runs each for
# SECONDS (default 30) on its committed corpus, failing if any target finds a crash, a
# timeout or a memory blow-up. Built with debug assertions, so an integer overflow panics.
# New inputs go to a scratch directory, never into fuzz/corpus/; a crashing input is left in
# fuzz/artifacts/<target>/ and printed.
# Used by .ci/run; PERFORMANCE.md ("Fuzzing") has its cost and the longer runs.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_BUILD picks cargo-fuzz's build mode: --dev by default (4 min from an empty target dir
# on a 2-core machine instead of 9.5 for --release; the crates under test stay optimised,
# fuzz/Cargo.toml), which suits CI's short runs; FUZZ_BUILD=--release for long ones, where
# executions per second matter more than the build.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
cargo_fuzz_version=0.13.2
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is missing (cargo-fuzz needs it: cargo +nightly fuzz)" >&2
  exit 1
fi
if [ "$(cargo-fuzz --version 2>/dev/null | awk '{print $2}')" != "$cargo_fuzz_version" ]; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --force --quiet
fi
mode=${FUZZ_BUILD:---dev}
start=$(date +%s)
cargo +nightly fuzz build "$mode" --debug-assertions
echo "fuzz: built every target in $(( $(date +%s) - start ))s"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Each run is one single-threaded libFuzzer process: JOBS of them at once (default 2, the
# cores of this machine class) take the step's time down by as much.
jobs=${FUZZ_JOBS:-2}
run_one() {
  local t=$1 t0
  mkdir -p "$work/$t"
  t0=$(date +%s)
  if cargo +nightly fuzz run "$mode" --debug-assertions "$t" "$work/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$work/$t.log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)
    echo "fuzz: $t ok: ${execs:-?} runs in $(( $(date +%s) - t0 ))s" >"$work/$t.result"
  else
    echo "failed" >"$work/$t.result"
  fi
}
failed=()
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
  batch=("${targets[@]:i:jobs}")
  for t in "${batch[@]}"; do
    run_one "$t" &
  done
  wait
  for t in "${batch[@]}"; do
    if [ "$(cat "$work/$t.result" 2>/dev/null)" = failed ] || [ ! -s "$work/$t.result" ]; then
      failed+=("$t")
      echo "fuzz: $t FAILED; the end of its log:"
      tail -40 "$work/$t.log"
    else
      cat "$work/$t.result"
    fi
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each, $jobs at a time, no failure; $(( $(date +%s) - start ))s in all"
