#!/usr/bin/env bash
# Side-by-side load comparison on this machine, in one run:
#   1. Throughput and latency: chime-gateway (full pipeline: auth, ACL,
#      normalisation, rate limit, metrics, audit log to a file; coalescing and
#      the response cache off, so every request does the same work as in the
#      peers), nginx and HAProxy doing the equivalent gate (access logs on),
#      and the upstream directly, all in front of the same simulated Chime.
#      wrk runs against each in turn, interleaved, for several rounds, each
#      round starting with the next contender in the list. The
#      gateway runs twice: as `cargo build --release` builds it, and as
#      benches/pgo.sh builds it with profile-guided optimisation
#      ("gateway-pgo").
#   2. Added latency: one connection, gateway versus the upstream directly.
#   3. Dashboard polling: 50 dashboards polling one report through a Chime
#      that takes 100 ms per answer, with coalescing and the cache on and off;
#      counts the upstream calls each made.
#   4. Memory: resident memory with 10,000 idle keep-alive connections, and
#      while streaming a 1 GiB CSV report (with its throughput versus direct).
#
#   bash benches/compare.sh [seconds-per-run] [rounds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; rounds=${2:-3}; conns=${3:-32}
# shellcheck source=compare/tools.sh
. benches/compare/tools.sh   # install_missing()
install_missing nginx haproxy wrk curl
ulimit -n "$(ulimit -Hn)"   # 10,000 idle connections need more than the usual 1024
bash benches/pgo.sh
pgo_bin=$PWD/target/pgo/release/chime-gateway
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), cpu_ticks(), hz, keys.toml, key, target, gateway_config(), one_worker, fill(), stream_peers(), stream_rounds(), rss(), peak_from(), peak_since(), idle_rss(), median(), machine()
mkdir -p "$work/tmp"
up=$(port); slow=$(port); big=$(port); ngx=$(port); hap=$(port)

"$bin" simulate --listen "127.0.0.1:$up" >/dev/null &
declare -A pids=([direct]=$!)
"$bin" simulate --listen "127.0.0.1:$slow" --latency 100ms >/dev/null &
"$bin" simulate --listen "127.0.0.1:$big" --report-bytes 1073741824 >/dev/null &
bigsim=$!
declare -A gwport gwadmin gwpid
# start_gateway NAME UPSTREAM-PORT on|off (coalescing and the cache) [BINARY]
start_gateway() {
  local name=$1 p a
  p=$(port); a=$(port)
  gateway_config "$name" "$2" "$p" "$a" "$3" > "$work/gateway-$name.toml"
  "${4:-$bin}" serve --config "$work/gateway-$name.toml" 2>"$work/gateway-$name.err" &
  gwpid[$name]=$!; gwport[$name]=$p; gwadmin[$name]=$a
}
start_gateway main "$up" off
start_gateway pgo "$up" off "$pgo_bin"
start_gateway poll_on "$slow" on
start_gateway poll_off "$slow" off
start_gateway mem "$big" on
start_gateway stream "$big" on
fill nginx.conf "$ngx" "$up" > "$work/nginx.conf"; nginx -c "$work/nginx.conf" -p "$work" &
pids[nginx]=$!
fill haproxy.cfg "$hap" "$up" > "$work/haproxy.cfg"; haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids[haproxy]=$!
# The same peers in front of the 1 GiB upstream, for the streaming
# comparison: name -> "PORT PID..." of what streams under that name.
declare -A via=([direct]="$big $bigsim")
stream_peers "$big"
sleep 2
pids[gateway]=${gwpid[main]}
pids[gateway-pgo]=${gwpid[pgo]}
pids[nginx]="${pids[nginx]} $(pgrep -P "${pids[nginx]}" | tr '\n' ' ')"   # master and worker
# worker_ns PID -> "THREAD-NAME NANOSECONDS" for each of the gateway's worker
# threads (chime-gw-N): the CPU each has run for
worker_ns() {
  local t
  for t in /proc/"$1"/task/*; do
    [[ $(cat "$t/comm") == chime-gw-[0-9]* ]] && echo "$(cat "$t/comm") $(awk '{print $1}' "$t/schedstat")"
  done
  return 0
}
declare -A wns

declare -A url=([direct]="http://127.0.0.1:$up$target" [gateway]="http://127.0.0.1:${gwport[main]}$target" [gateway-pgo]="http://127.0.0.1:${gwport[pgo]}$target" [nginx]="http://127.0.0.1:$ngx$target" [haproxy]="http://127.0.0.1:$hap$target")
for name in direct gateway gateway-pgo nginx haproxy; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$key" "${url[$name]}")
  [ "$code" = 200 ] || { echo "$name answered $code, not 200" >&2; exit 1; }
done

ms() { awk '{ for (i=1;i<=NF;i++) { v=$i; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v } }' <<<"$1" | median; }
# words LIST -> its space-separated values, one a line
words() { tr ' ' '\n' <<<"$1" | grep -v '^$'; }
med() { words "$1" | median; }
# run_wrk THREADS CONNECTIONS URL [LUA-SCRIPT] -> sets r l50 l99
run_wrk() {
  local out non2xx script=()
  [ -z "${4:-}" ] || script=(-s "$4")
  out=$(wrk -t"$1" -c"$2" -d"${secs}s" --latency "${script[@]}" -H "$key" "$3")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  l50=$(awk '$1=="50%" {print $2}' <<<"$out"); l99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  [ -z "$non2xx" ] || { echo "$3: $non2xx non-2xx answers" >&2; exit 1; }
}

machine
echo "== 1. throughput: $rounds rounds of ${secs}s, $conns connections, 2 wrk threads"
declare -A rps p50 p99 utick stick ctick served
for round in $(seq "$rounds"); do
  for name in $(rotated $((round - 1)) direct gateway gateway-pgo nginx haproxy); do
    # shellcheck disable=SC2086 # pids holds several for nginx
    user0=$(cpu_ticks 14 ${pids[$name]}); sys0=$(cpu_ticks 15 ${pids[$name]})
    chime0=$(( $(cpu_ticks 14 "${pids[direct]}") + $(cpu_ticks 15 "${pids[direct]}") ))
    [[ $name != gateway* ]] || while read -r w ns; do wns[$name:$w]=$(( ${wns[$name:$w]:-0} - ns )); done < <(worker_ns "${pids[$name]}")
    run_wrk 2 "$conns" "${url[$name]}"
    [[ $name != gateway* ]] || while read -r w ns; do wns[$name:$w]=$(( ${wns[$name:$w]:-0} + ns )); done < <(worker_ns "${pids[$name]}")
    # shellcheck disable=SC2086
    utick[$name]=$(( ${utick[$name]:-0} + $(cpu_ticks 14 ${pids[$name]}) - user0 ))
    # shellcheck disable=SC2086
    stick[$name]=$(( ${stick[$name]:-0} + $(cpu_ticks 15 ${pids[$name]}) - sys0 ))
    ctick[$name]=$(( ${ctick[$name]:-0} + $(cpu_ticks 14 "${pids[direct]}") + $(cpu_ticks 15 "${pids[direct]}") - chime0 ))
    served[$name]=$(( ${served[$name]:-0} + n ))
    rps[$name]+="$r "; p50[$name]+="$l50 "; p99[$name]+="$l99 "
    echo "round $round $name: $r req/s, p50 $l50, p99 $l99"
  done
done
echo
printf '%-12s %12s %10s %10s %16s %12s %16s\n' "" "req/s" "p50 ms" "p99 ms" "CPU us/request" "(user+sys)" "Chime us/request"
for name in direct gateway gateway-pgo nginx haproxy; do
  cpu=$(awk -v u="${utick[$name]}" -v s="${stick[$name]}" -v c="${ctick[$name]}" -v n="${served[$name]}" -v hz="$hz" \
    'BEGIN { f = 1e6 / hz / n; printf "%.1f %5.1f+%.1f %.1f", (u + s) * f, u * f, s * f, c * f }')
  printf '%-12s %12s %10s %10s %16s %12s %16s\n' "$name" "$(med "${rps[$name]}")" "$(ms "${p50[$name]}")" "$(ms "${p99[$name]}")" $cpu
done
echo "(CPU us/request: user and system time of that process alone, for 'direct' the simulated Chime's;"
echo " Chime us/request: the simulated Chime's behind each, for the same requests)"
n=$(med "${rps[nginx]}"); h=$(med "${rps[haproxy]}"); d=$(med "${rps[direct]}")
# by_round A B -> A's req/s over B's in the same round (each round runs
# every contender back to back): the lowest, the highest, their median, and
# in how many rounds A was at least level
by_round() {
  local r
  r=$(paste -d ' ' <(words "${rps[$1]}") <(words "${rps[$2]}") | awk '{ printf "%.6f\n", $1 / $2 }' | sort -g)
  awk -v m="$(median <<<"$r")" '{ v[NR] = $1; ahead += ($1 >= 1) }
    END { printf "%.2f to %.2f (median %.2f), at least 1.0 in %d of %d", v[1], v[NR], m, ahead, NR }' <<<"$r"
}
for name in gateway gateway-pgo; do
  awk -v name="$name" -v g="$(med "${rps[$name]}")" -v n="$n" -v h="$h" -v d="$d" \
    'BEGIN { printf "throughput ratios: %s/nginx %.2f, %s/haproxy %.2f, %s/direct %.2f\n", name, g/n, name, g/h, name, g/d }'
  echo "  round by round: $name/nginx $(by_round "$name" nginx); $name/haproxy $(by_round "$name" haproxy)"
  awk -v name="$name" -v g="$(ms "${p99[$name]}")" -v n="$(ms "${p99[nginx]}")" -v h="$(ms "${p99[haproxy]}")" \
    'BEGIN { printf "p99 ratios: %s/nginx %.2f, %s/haproxy %.2f\n", name, g/n, name, g/h }'
done
echo "audit lines written by the gateway: $(wc -l < "$work/audit-main.log")"
for name in gateway gateway-pgo; do
  echo "CPU of $name's workers over its rounds (an even split means its connections were spread evenly):$(
    for w in $(printf '%s\n' "${!wns[@]}" | grep "^$name:" | sort); do
      awk -v w="${w#"$name":}" -v ns="${wns[$w]}" 'BEGIN { printf " %s %.1f s", w, ns / 1e9 }'
    done)"
done

echo
echo "== 1b. latency at the same load: $rounds rounds of ${secs}s, $conns connections, each waiting 1 ms between answer and next request"
declare -A prps pp50 pp99
for round in $(seq "$rounds"); do
  for name in $(rotated $((round - 1)) gateway gateway-pgo nginx haproxy); do
    run_wrk 2 "$conns" "${url[$name]}" benches/compare/paced.lua
    prps[$name]+="$r "; pp50[$name]+="$l50 "; pp99[$name]+="$l99 "
    echo "round $round $name: $r req/s, p50 $l50, p99 $l99"
  done
done
printf '%-12s %12s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
for name in gateway gateway-pgo nginx haproxy; do
  printf '%-12s %12s %10s %10s\n' "$name" "$(med "${prps[$name]}")" "$(ms "${pp50[$name]}")" "$(ms "${pp99[$name]}")"
done
for name in gateway gateway-pgo; do
  awk -v name="$name" -v g="$(ms "${pp99[$name]}")" -v n="$(ms "${pp99[nginx]}")" -v h="$(ms "${pp99[haproxy]}")" \
    'BEGIN { printf "same-load p99 ratios: %s/nginx %.2f, %s/haproxy %.2f\n", name, g/n, name, g/h }'
done

echo
echo "== 2. added latency: 1 connection, ${secs}s each"
run_wrk 1 1 "${url[direct]}"; d50=$(ms "$l50"); d99=$(ms "$l99")
run_wrk 1 1 "${url[gateway]}"; g50=$(ms "$l50"); g99=$(ms "$l99")
awk -v a="$d50" -v b="$d99" -v c="$g50" -v e="$g99" 'BEGIN { printf "direct p50 %.3f ms p99 %.3f ms; gateway p50 %.3f ms p99 %.3f ms; added p50 %.3f ms, p99 %.3f ms\n", a, b, c, e, c-a, e-b }'

echo
echo "== 3. dashboard polling: 50 connections for ${secs}s, Chime answering in 100 ms"
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {print s+0}'; }
live='/Chime/Report/InboundVsAnsweredChats?queueId=1&start=today&csv=true'
printf '%-22s %10s %10s %10s %14s %8s\n' "" "req/s" "p99 ms" "answered" "upstream calls" "saved"
for window in live history; do
  if [ "$window" = live ]; then t=$live; else t=$target; fi
  for name in poll_off poll_on; do
    a=${gwadmin[$name]}
    before_req=$(metric "$a" 'chime_gateway_requests_total{outcome="ok"')
    before_up=$(metric "$a" 'chime_gateway_upstream_duration_seconds_count{route="report"}')
    run_wrk 2 50 "http://127.0.0.1:${gwport[$name]}$t"
    answered=$(( $(metric "$a" 'chime_gateway_requests_total{outcome="ok"') - before_req ))
    calls=$(( $(metric "$a" 'chime_gateway_upstream_duration_seconds_count{route="report"}') - before_up ))
    label="$window, $( [ "$name" = poll_on ] && echo "on" || echo "off")"
    awk -v l="$label" -v r="$r" -v p="$(ms "$l99")" -v n="$answered" -v c="$calls" \
      'BEGIN { printf "%-22s %10s %10.1f %10d %14d %7.1f%%\n", l, r, p, n, c, (n>0 ? 100*(n-c)/n : 0) }'
  done
done

echo
echo "== 4. memory"
read -r base busy held open parked < <(idle_rss "${gwpid[mem]}" "${gwport[mem]}" "${gwadmin[mem]}")
echo "idle: RSS $((base / 1024)) MiB before, $((busy / 1024)) MiB right after the last answer, $((held / 1024)) MiB 3 s later with $open open connections ($parked parked)"
# Streaming on a gateway of its own, so its RSS is not the idle test's:
# three interleaved rounds through it, the peers and the zero-copy relay,
# since one stream varies by about 15% from the next. "system" is the
# kernel's socket reads, writes and copies.
m=${gwpid[stream]}
via[gateway]="${gwport[stream]} $m"
before=$(peak_from "$m")
stream_rounds 3 direct gateway nginx haproxy relay
peak_since gateway "$m" "$before"
