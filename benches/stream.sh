#!/usr/bin/env bash
# Streaming a 1 GiB CSV report, for changes to the streaming path that
# compare.sh's one stream per run cannot tell apart: the simulated Chime
# directly, each given gateway build (cache and coalescing off), nginx and
# HAProxy configured as in compare.sh, and a zero-copy TCP relay (HAProxy
# splicing, compare/haproxy-relay.cfg: the ceiling for anything in between),
# each streamed in turn for several rounds. Prints each stream's MiB/s and
# the CPU (user, system) the proxy, or for direct the simulator, spent on it;
# then each one's medians and its share of direct.
#
#   bash benches/stream.sh [rounds] [GATEWAY-BINARY...]
#
# Without binaries it streams through `cargo build --release`'s build. To
# compare two builds, keep one before the change with
#   cp target/release/chime-gateway /tmp/before
# and run `bash benches/stream.sh 6 /tmp/before target/release/chime-gateway`.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
shift || true
for tool in nginx haproxy curl; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx haproxy curl >/dev/null; break; }
done
builds=("$@")
[ ${#builds[@]} -gt 0 ] && GATEWAY_BIN=${builds[0]}
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), wait_ready(), cpu_ticks(), hz, keys.toml, key, target, gateway_config(), fill(), stream_peers(), median()
[ ${#builds[@]} -gt 0 ] || builds=("$bin")
big=$(port)
"$bin" simulate --listen "127.0.0.1:$big" --report-bytes 1073741824 >/dev/null &
# name -> "PORT PID..." of what streams under that name
declare -A via=([direct]="$big $!")
names=(direct)
for i in "${!builds[@]}"; do
  p=$(port); a=$(port)
  gateway_config "gateway-$i" "$big" "$p" "$a" off > "$work/gateway-$i.toml"
  "$(realpath "${builds[$i]}")" serve --config "$work/gateway-$i.toml" 2>"$work/gateway-$i.err" &
  via[gateway-$i]="$p $!"; names+=("gateway-$i")
  wait_ready "$a"
done
stream_peers "$big"
sleep 1
via[nginx]="$ngx_big $ngx_big_pid $(pgrep -P "$ngx_big_pid" | tr '\n' ' ')"
via[haproxy]="$hap_big $hap_big_pid"
via[relay]="$relay $relay_pid"
names+=(nginx haproxy relay)
for i in "${!builds[@]}"; do echo "gateway-$i: ${builds[$i]}"; done
for r in $(seq "$rounds"); do
  for n in "${names[@]}"; do
    read -r p pids <<<"${via[$n]}"
    # shellcheck disable=SC2086 # the PIDs are separate words
    { u0=$(cpu_ticks 14 $pids); s0=$(cpu_ticks 15 $pids); }
    read -r speed size < <(curl -s -o /dev/null -w '%{speed_download} %{size_download}\n' -H "$key" "http://127.0.0.1:$p$target")
    # shellcheck disable=SC2086
    { u1=$(cpu_ticks 14 $pids); s1=$(cpu_ticks 15 $pids); }
    [ "$size" = 1073741824 ] || { echo "$n streamed $size bytes, not 1 GiB" >&2; exit 1; }
    awk -v n="$n" -v r="$r" -v b="$speed" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" \
      'BEGIN { printf "round %d %-10s %6.0f MiB/s, user %.2f s, system %.2f s\n", r, n, b/1048576, u/hz, s/hz }'
  done
done | tee "$work/rounds"
# of COLUMN NAME -> the median of that column over NAME's rounds
of() { awk -v n="$2" -v c="$1" '$3 == n {print $c}' "$work/rounds" | median; }
direct=$(of 4 direct)
for n in "${names[@]}"; do
  awk -v n="$n" -v m="$(of 4 "$n")" -v d="$direct" -v u="$(of 7 "$n")" -v s="$(of 10 "$n")" \
    'BEGIN { printf "median %-10s %6.0f MiB/s (%.2f of direct), user %.2f s, system %.2f s\n", n, m, m/d, u, s }'
done
