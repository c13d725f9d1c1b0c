#!/usr/bin/env bash
# Streaming a 1 GiB CSV report, for changes to the streaming path that
# compare.sh's three rounds cannot tell apart: the simulated Chime
# directly, each given gateway build (cache and coalescing off), nginx and
# HAProxy configured as in compare.sh, and a zero-copy TCP relay (HAProxy
# splicing, compare/haproxy-relay.cfg: the extra hop without user-space copies),
# each streamed in turn for several rounds. Prints each stream's MiB/s and
# the CPU (user, system) the proxy, or for direct the simulator, spent on it;
# then each one's medians and its share of direct.
#
#   bash benches/stream.sh [rounds] [GATEWAY-BINARY...]
#
# The simulated Chime writes the report in 64 KiB chunks; CHUNK=N in the
# environment makes them N bytes (a Chime that flushes more often), e.g.
# `CHUNK=1024 bash benches/stream.sh 3`, and LENGTH=1 sends it with a
# Content-Length instead of chunked. The gateways run with coalescing and
# the cache off, as in compare.sh's throughput runs; CACHE=on turns them on
# (their default, and compare.sh's streaming gateway). After the rounds,
# each gateway's peak RSS over its streams.
#
# Without binaries it streams through `cargo build --release`'s build. To
# compare two builds, keep one before the change with
#   cp target/release/chime-gateway /tmp/before
# and run `bash benches/stream.sh 6 /tmp/before target/release/chime-gateway`.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
shift || true
# shellcheck source=compare/tools.sh
. benches/compare/tools.sh   # install_missing()
install_missing nginx haproxy curl
builds=("$@")
[ ${#builds[@]} -gt 0 ] && GATEWAY_BIN=${builds[0]}
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), wait_ready(), cpu_ticks(), hz, keys.toml, key, target, gateway_config(), fill(), stream_peers(), stream_rounds(), peak_from(), peak_since(), machine()
[ ${#builds[@]} -gt 0 ] || builds=("$bin")
big=$(port)
"$bin" simulate --listen "127.0.0.1:$big" --report-bytes 1073741824 --report-chunk-bytes "${CHUNK:-65536}" \
  ${LENGTH:+--report-content-length} >/dev/null &
# name -> "PORT PID..." of what streams under that name
declare -A via=([direct]="$big $!")
gwpid=(); before=()   # build index -> its gateway's PID; its RSS when the streams began
names=(direct)
for i in "${!builds[@]}"; do
  p=$(port); a=$(port)
  gateway_config "gateway-$i" "$big" "$p" "$a" "${CACHE:-off}" > "$work/gateway-$i.toml"
  "$(realpath "${builds[$i]}")" serve --config "$work/gateway-$i.toml" 2>"$work/gateway-$i.err" &
  gwpid[$i]=$!; via[gateway-$i]="$p $!"; names+=("gateway-$i")
  wait_ready "$a"
done
stream_peers "$big"
sleep 1
names+=(nginx haproxy relay)
machine
echo "chunks of ${CHUNK:-65536} bytes${LENGTH:+, with a Content-Length}"
echo "cache and coalescing ${CACHE:-off}"
for i in "${!builds[@]}"; do
  echo "gateway-$i: ${builds[$i]}"
  before[$i]=$(peak_from "${gwpid[$i]}")
done
stream_rounds "$rounds" "${names[@]}"
for i in "${!builds[@]}"; do peak_since "gateway-$i" "${gwpid[$i]}" "${before[$i]}"; done
