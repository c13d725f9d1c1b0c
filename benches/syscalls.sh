#!/usr/bin/env bash
# System calls per proxied request, gateway (one worker) against nginx,
# counted by strace -c while wrk runs: the gateway's system time per request
# is decided by how many it makes.
#
#   bash benches/syscalls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=compare/tools.sh
. benches/compare/tools.sh   # install_missing()
install_missing nginx wrk strace
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), keys.toml, key, target, gateway_config(), one_worker, fill()
up=$(port); gw=$(port); admin=$(port); ngx=$(port)
mkdir -p "$work/tmp"
"$bin" simulate --listen "127.0.0.1:$up" >/dev/null &
gateway_config main "$up" "$gw" "$admin" off | one_worker > "$work/g.toml"
(cd "$work" && exec "$bin" serve --config g.toml 2>"$work/gateway.err") &
gateway=$!
fill nginx.conf "$ngx" "$up" > "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" &
sleep 2
# Every nginx worker is traced: wrk's connections may land on any of them.
ngx_workers=$(pgrep -P "$(cat "$work/nginx.pid")" | paste -sd,)
for who in "gateway $gateway $gw" "nginx $ngx_workers $ngx"; do
  read -r name pids p <<<"$who"
  wrk -t1 -c8 -d2s -H "$key" "http://127.0.0.1:$p$target" >/dev/null   # warm up
  timeout 6 strace -f -c -p "$pids" -o "$work/strace-$name.txt" 2>/dev/null &
  tracer=$!
  sleep 1
  n=$(wrk -t1 -c8 -d3s -H "$key" "http://127.0.0.1:$p$target" | awk '/requests in/ {print $1}')
  wait "$tracer" || true
  echo "== $name: $n requests; system calls per request:"
  awk -v n="$n" 'NR > 2 && $NF != "total" && $4 + 0 > 0 { c = $4 / n; if (c >= 0.01) printf "  %-14s %.2f\n", $NF, c }' "$work/strace-$name.txt" | sort -k2 -nr
done
