#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers a client or Chime can feed
# (src/fuzz.rs has the checks), with libFuzzer through cargo-fuzz, on the
# stable toolchain (no sanitizer: the checks panic on a broken invariant,
# and the library has no unsafe code). Each target runs in turn, from its
# seeds in tests/fuzz/seeds and what earlier runs found (tests/fuzz/corpus).
# A failing input is kept in tests/fuzz/artifacts/TARGET/ and the script
# stops there; `bash tests/fuzz/run.sh 0 TARGET FILE` runs that one input.
#
#   bash tests/fuzz/run.sh [seconds per target] [target ...]   (default 60; all targets)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request upstream_answer)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# The gateway's own lock file, so the fuzzed build uses the versions it ships with.
cp Cargo.lock tests/fuzz/Cargo.lock
if [ "$secs" = 0 ]; then
  exec cargo fuzz run --fuzz-dir tests/fuzz --sanitizer none --debug-assertions "${targets[0]}" "${@:2}"
fi
for t in "${targets[@]}"; do
  mkdir -p "tests/fuzz/corpus/$t"
  echo "== $t: ${secs} s"
  log=tests/fuzz/target/$t.log
  mkdir -p tests/fuzz/target
  status=0
  cargo fuzz run --fuzz-dir tests/fuzz --sanitizer none --debug-assertions "$t" \
    "tests/fuzz/corpus/$t" "tests/fuzz/seeds/$t" -- -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
    > "$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done)|panicked|^thread|Failing input|^\s+tests/fuzz/artifacts' "$log" || true
  if [ "$status" != 0 ]; then
    echo "== $t failed (exit $status; whole output in $log)" >&2
    exit 1
  fi
done
