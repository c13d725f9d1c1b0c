#!/usr/bin/env bash
# Two builds of the gateway side by side, for a change too small for
# compare.sh's noise: both in front of one simulated Chime, wrk against each
# in turn (A, B, then B, A, ...), as in compare.sh (full pipeline, audit log to a
# file, coalescing and the cache off, 32 connections). Prints each round's
# requests/s and CPU per request (user, system), then the medians and B/A.
#
#   bash benches/ab.sh OLD-BINARY NEW-BINARY [rounds] [seconds]
#
# e.g. keep a build before a change with
#   cp target/release/chime-gateway /tmp/before
# then rebuild and run `bash benches/ab.sh /tmp/before target/release/chime-gateway`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
declare -A build=([A]=$(realpath "$1") [B]=$(realpath "$2"))
rounds=${3:-8}; secs=${4:-5}
# shellcheck source=compare/tools.sh
. benches/compare/tools.sh   # install_missing()
install_missing wrk
GATEWAY_BIN=${build[A]}
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), wait_ready(), cpu_ticks(), hz, keys.toml, key, target, gateway_config(), column_median(), machine()
up=$(port)
"$bin" simulate --listen "127.0.0.1:$up" >/dev/null &
declare -A gport gpid
for n in A B; do
  p=$(port); a=$(port)
  gateway_config "$n" "$up" "$p" "$a" off > "$work/$n.toml"
  "${build[$n]}" serve --config "$work/$n.toml" 2>"$work/$n.err" &
  gpid[$n]=$!; gport[$n]=$p
  wait_ready "$a"
done
machine
for r in $(seq "$rounds"); do
  for n in $(rotated $((r - 1)) A B); do
    g=${gpid[$n]}
    u0=$(cpu_ticks 14 "$g"); s0=$(cpu_ticks 15 "$g")
    out=$(wrk -t2 -c32 -d"${secs}s" -H "$key" "http://127.0.0.1:${gport[$n]}$target")
    u1=$(cpu_ticks 14 "$g"); s1=$(cpu_ticks 15 "$g")
    awk -v n="$n" -v r="$r" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" \
      -v rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")" -v c="$(awk '/requests in/ {print $1}' <<<"$out")" \
      'BEGIN { printf "round %d %s: %8.0f req/s, user %.2f us, system %.2f us per request\n", r, n, rps, u/hz*1e6/c, s/hz*1e6/c }'
  done
done | tee "$work/rounds"
# of COLUMN BUILD -> the median of that column over BUILD's rounds
of() { column_median "$work/rounds" "$2:" "$1"; }
awk -v ra="$(of 4 A)" -v rb="$(of 4 B)" -v ua="$(of 7 A)" -v ub="$(of 7 B)" \
  -v sa="$(of 10 A)" -v sb="$(of 10 B)" 'BEGIN {
  printf "medians: A %.0f req/s, user %.2f, system %.2f us; B %.0f req/s, user %.2f, system %.2f us\n", ra, ua, sa, rb, ub, sb
  printf "B/A: throughput %.3f, user CPU per request %.3f, system %.3f\n", rb/ra, ub/ua, sb/sa }'
