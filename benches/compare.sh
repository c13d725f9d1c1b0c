#!/usr/bin/env bash
# Side-by-side load comparison on this machine, in one run:
#   chime-gateway (full pipeline, audit log to a file), nginx and HAProxy doing
#   the equivalent gate (access logs on), and the upstream directly, all in
#   front of the same simulated Chime. wrk runs against each in turn,
#   interleaved, for several rounds.
#
#   bash benches/compare.sh [seconds-per-run] [rounds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; rounds=${2:-3}; conns=${3:-32}
for tool in nginx haproxy wrk; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx haproxy wrk >/dev/null; break; }
done
cargo build --release -q
bin=target/release/chime-gateway
work=$(mktemp -d); mkdir -p "$work/tmp"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); gw=$(port); adm=$(port); ngx=$(port); hap=$(port)
fill() { sed -e "s#__UPSTREAM__#127.0.0.1:$up#" -e "s#__PORT__#$2#" -e "s#__ADMIN__#$adm#" -e "s#__DIR__#$work#" "benches/compare/$1"; }

"$bin" simulate --listen "127.0.0.1:$up" >/dev/null &
fill gateway.toml "$gw" > "$work/gateway.toml"
sed -n '/^\[\[user\]\]/,$p' config/demo-keys.toml > "$work/keys.toml"; chmod 600 "$work/keys.toml"
"$bin" serve --config "$work/gateway.toml" 2>"$work/gateway.err" &
fill nginx.conf "$ngx" > "$work/nginx.conf"; nginx -c "$work/nginx.conf" -p "$work" &
fill haproxy.cfg "$hap" > "$work/haproxy.cfg"; haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
sleep 2

key='Authorization: Bearer b5c38d85-a042-4cef-8418-eb06752e346b'
target='/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-11-02T04:59:59.999Z&csv=true'
declare -A url=([direct]="http://127.0.0.1:$up$target" [gateway]="http://127.0.0.1:$gw$target" [nginx]="http://127.0.0.1:$ngx$target" [haproxy]="http://127.0.0.1:$hap$target")
for name in direct gateway nginx haproxy; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$key" "${url[$name]}")
  [ "$code" = 200 ] || { echo "$name answered $code, not 200" >&2; exit 1; }
done

declare -A rps p50 p99
for round in $(seq "$rounds"); do
  for name in direct gateway nginx haproxy; do
    out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -H "$key" "${url[$name]}")
    r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    l50=$(awk '$1=="50%" {print $2}' <<<"$out"); l99=$(awk '$1=="99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    [ -z "$non2xx" ] || { echo "$name: $non2xx non-2xx answers" >&2; exit 1; }
    rps[$name]+="$r "; p50[$name]+="$l50 "; p99[$name]+="$l99 "
    echo "round $round $name: $r req/s, p50 $l50, p99 $l99"
  done
done

ms() { awk '{ for (i=1;i<=NF;i++) { v=$i; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v } }' <<<"$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
med() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "median of $rounds rounds, ${secs}s each, $conns connections, 2 wrk threads:"
printf '%-8s %12s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
for name in direct gateway nginx haproxy; do
  printf '%-8s %12s %10s %10s\n' "$name" "$(med "${rps[$name]}")" "$(ms "${p50[$name]}")" "$(ms "${p99[$name]}")"
done
g=$(med "${rps[gateway]}"); n=$(med "${rps[nginx]}"); h=$(med "${rps[haproxy]}"); d=$(med "${rps[direct]}")
awk -v g="$g" -v n="$n" -v h="$h" -v d="$d" 'BEGIN { printf "throughput ratios: gateway/nginx %.2f, gateway/haproxy %.2f, gateway/direct %.2f\n", g/n, g/h, g/d }'
echo "audit lines written by the gateway: $(wc -l < "$work/audit.log")"
