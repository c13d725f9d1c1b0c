#!/usr/bin/env bash
# Profile-guided release build of the gateway, the build compare.sh measures
# as "gateway-pgo" beside the plain `cargo build --release`:
#   1. builds an instrumented gateway (target/pgo-generate);
#   2. trains it: the built-in simulated Chime behind two gateways, one with
#      coalescing and the response cache off and one with them on, each sent
#      the mix in benches/compare/train.lua and then the report request the
#      load tests send;
#   3. merges the profile (llvm-profdata from rustup's llvm-tools) and builds
#      the gateway again with it: target/pgo/release/chime-gateway.
# `cargo build --release` and target/release are not touched. A build whose
# inputs (the sources, the lock file, the training scripts and configs, the
# compiler and the seconds per run) are unchanged since the last one is
# reused; PGO_REBUILD=1 makes a new one regardless.
#
#   bash benches/pgo.sh [seconds-per-run]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
built=target/pgo/release/chime-gateway
inputs=$( { rustc -vV; echo "secs $secs"
  find src benches/pgo.sh benches/compare/common.sh benches/compare/gateway.toml benches/compare/train.lua \
    Cargo.toml Cargo.lock config/demo-keys.toml -type f | LC_ALL=C sort | xargs sha256sum; } | sha256sum)
if [ -z "${PGO_REBUILD:-}" ] && [ -x "$built" ] && [ "$(cat target/pgo/inputs 2>/dev/null)" = "$inputs" ]; then
  echo "== pgo: reusing $built (its inputs are unchanged; PGO_REBUILD=1 builds a new one)"
  exit 0
fi
rm -f target/pgo/inputs
# shellcheck source=compare/tools.sh
. benches/compare/tools.sh   # install_missing()
install_missing wrk
profdata="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | awk '/^host:/ {print $2}')/bin/llvm-profdata"
[ -x "$profdata" ] || rustup component add llvm-tools
profiles=$PWD/target/pgo-generate/profiles
rm -rf "$profiles"
echo "== pgo: instrumented build"
RUSTFLAGS="-Cprofile-generate=$profiles" cargo build --release --locked -q --target-dir target/pgo-generate
GATEWAY_BIN=$PWD/target/pgo-generate/release/chime-gateway
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin (that one), work, port(), wait_ready(), keys.toml, key, target, gateway_config()
echo "== pgo: training, ${secs}s per run"
# train LABEL WRK-ARGS... -> one run of wrk, its rate printed under LABEL
train() { echo "$1: $(wrk -t2 -c16 -d"${secs}s" "${@:2}" | awk '/Requests\/sec/ {print $2}') req/s"; }
up=$(port)
"$bin" simulate --listen "127.0.0.1:$up" >/dev/null &
trained=($!)
for cache in off on; do
  gw=$(port); admin=$(port)
  # Unknown keys are part of the mix: the throttle on failed
  # authentications would otherwise refuse everything after a few.
  { gateway_config "train-$cache" "$up" "$gw" "$admin" "$cache"
    printf '[auth]\nmax_failures_per_minute = 1000000000\n'; } > "$work/train-$cache.toml"
  (cd "$work" && exec "$bin" serve --config "train-$cache.toml" 2>"$work/train-$cache.err") &
  trained+=($!)
  wait_ready "$admin"
  train "cache $cache, mix" -s benches/compare/train.lua "http://127.0.0.1:$gw"
  train "cache $cache, report" -H "$key" "http://127.0.0.1:$gw$target"
done
# The profile is written when each process exits.
kill -TERM "${trained[@]}"
wait "${trained[@]}" || true
mkdir -p target/pgo
"$profdata" merge -o target/pgo/chime-gateway.profdata "$profiles"
echo "== pgo: optimised build"
RUSTFLAGS="-Cprofile-use=$PWD/target/pgo/chime-gateway.profdata" cargo build --release --locked -q --target-dir target/pgo
echo "$inputs" > target/pgo/inputs
echo "profile-guided gateway: $built"
