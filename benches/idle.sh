#!/usr/bin/env bash
# Resident memory with 10,000 idle keep-alive connections, for two builds of
# the gateway in turn (A, B, A, B, ...): compare.sh's idle measurement
# (section 4: one answer on each connection, then 3 s for every connection
# to park), repeated, since one run of it moves by a few MiB. Each round
# starts each build afresh behind one simulated Chime. Prints each round's
# RSS 3 s after the last answer, then the medians.
#
#   bash benches/idle.sh OLD-BINARY NEW-BINARY [rounds]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
declare -A build=([A]=$(realpath "$1") [B]=$(realpath "$2"))
rounds=${3:-5}
ulimit -n "$(ulimit -Hn)"   # 10,000 idle connections need more than the usual 1024
GATEWAY_BIN=${build[A]}
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), wait_ready(), keys.toml, key, gateway_config(), idle_rss(), median(), machine()
big=$(port)
"$bin" simulate --listen "127.0.0.1:$big" --report-bytes 1073741824 >/dev/null &
declare -A held
machine
for round in $(seq "$rounds"); do
  for n in A B; do
    p=$(port); a=$(port)
    gateway_config "mem-$n" "$big" "$p" "$a" on > "$work/$n.toml"
    (cd "$work" && exec "${build[$n]}" serve --config "$n.toml" 2>"$work/$n.err") &
    pid=$!
    wait_ready "$a"
    read -r _ _ kib open parked < <(idle_rss "$pid" "$p" "$a")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "round $round $n: $((kib / 1024)) MiB with $open open connections ($parked parked)"
    held[$n]+="$kib "
  done
done
# mib BUILD -> the median of BUILD's rounds, in MiB
mib() { tr ' ' '\n' <<<"${held[$1]}" | grep . | median | awk '{printf "%d", $1 / 1024}'; }
echo "medians: A $(mib A) MiB, B $(mib B) MiB"
