#!/usr/bin/env bash
# Where the gateway's time goes on the CPU itself, which callgrind's
# instruction counts (instructions.sh) cannot show for what runs in the
# kernel or the vDSO (clock reads): perf samples the plain build (one
# worker, compare.sh's configuration) for 5 s under wrk's load (32
# connections), then prints the share of the samples in each object (the
# kernel, the gateway, libc, the vDSO) and the top user-space symbols.
#
#   bash benches/profile.sh
#   GATEWAY_BIN=/tmp/before bash benches/profile.sh   another build
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=compare/tools.sh
. benches/compare/tools.sh   # install_missing()
install_missing wrk
# perf's package is not named like its command.
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), wait_ready(), keys.toml, key, target, gateway_config(), one_worker, machine()
machine
up=$(port); gw=$(port); admin=$(port)
"$bin" simulate --listen "127.0.0.1:$up" >/dev/null &
gateway_config main "$up" "$gw" "$admin" off | one_worker > "$work/g.toml"
(cd "$work" && exec "$bin" serve --config g.toml 2>"$work/gateway.err") &
gateway=$!
wait_ready "$admin"
wrk -t1 -c32 -d3s -H "$key" "http://127.0.0.1:$gw$target" >/dev/null   # warm up
wrk -t1 -c32 -d8s -H "$key" "http://127.0.0.1:$gw$target" > "$work/wrk.txt" &
load=$!
sleep 1
perf record -F 4999 -p "$gateway" -o "$work/perf.data" -- sleep 5 >/dev/null 2>&1
wait "$load"
grep "Requests/sec" "$work/wrk.txt"
echo "== share of the gateway's samples, by object"
perf report -i "$work/perf.data" --sort dso --stdio 2>/dev/null | grep '%' | head -6
echo "== top user-space symbols (share of all its samples)"
perf report -i "$work/perf.data" --dsos "$(basename "$bin"),libc.so.6,[vdso]" \
  --sort symbol --stdio 2>/dev/null | grep '%' | sed -e 's/  */ /g' -e 's/ - - *$//' | head -15
