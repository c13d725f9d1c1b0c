# Start-up shared by the scripts in benches/; sourced from the repository
# root. Builds the gateway (unless GATEWAY_BIN names a binary to use
# instead, such as benches/pgo.sh's), makes a work directory that is removed (and every
# background job stopped) on exit, copies the demo users' keys there, and
# names the request every load test sends.

if [ -n "${GATEWAY_BIN:-}" ]; then
  bin=$(realpath "$GATEWAY_BIN")
else
  cargo build --release -q
  bin=$PWD/target/release/chime-gateway
fi
work=$(mktemp -d)
# The jobs are waited for before the directory goes: nginx and HAProxy write
# their logs and temporary files into it until they have exited.
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
# port -> a free TCP port on 127.0.0.1 that no other call in this run has
# given. It is below the kernel's ephemeral range: a port from that range
# (what binding port 0 gives) could be taken by one of the run's outgoing
# connections before its listener binds it, and nginx once failed to start
# so (bind: Address already in use).
port() {
  python3 - "$work/ports" <<'PY'
import random, socket, sys
given = sys.argv[1]
try:
    taken = set(open(given).read().split())
except FileNotFoundError:
    taken = set()
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
top = low if low > 11000 else 65536
while True:
    p = random.randrange(10000, top)
    if str(p) in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    break
with open(given, "a") as f:
    f.write(f"{p}\n")
print(p)
PY
}
# wait_ready PORT [PATH] -> returns once http://127.0.0.1:PORT/PATH answers
# with any HTTP response; by default PATH is a gateway's admin listener's
# `metrics` (up to a minute: under valgrind or instrumented, start-up is slow)
wait_ready() { for _ in $(seq 120); do curl -s -o /dev/null "http://127.0.0.1:$1/${2-metrics}" && return; sleep 0.5; done; }
sed -n '/^\[\[user\]\]/,$p' config/demo-keys.toml > "$work/keys.toml"
chmod 600 "$work/keys.toml"
key='Authorization: Bearer b5c38d85-a042-4cef-8418-eb06752e346b'
target='/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-11-02T04:59:59.999Z&csv=true'

# gateway_config NAME UPSTREAM-PORT PORT ADMIN-PORT on|off -> the gateway's
# config (benches/compare/gateway.toml filled in; "off": coalescing and the
# cache off), to be written into $work next to keys.toml.
gateway_config() {
  sed -e "s#__UPSTREAM__#127.0.0.1:$2#" -e "s#__PORT__#$3#" -e "s#__ADMIN__#$4#" -e "s#__NAME__#$1#" \
    benches/compare/gateway.toml
  [ "$5" = on ] || printf '[cache]\nenabled = false\ncoalesce = false\n'
}

# rotated K WORD... -> the words one a line, starting from the K-th (from 0,
# wrapping round): round K of an interleaved comparison runs its contenders
# in this order, so that none always runs first, last or right after the
# same other one while the machine's speed drifts
rotated() { local k=$1 i; shift; for ((i = 0; i < $#; i++)); do echo "${@:$(( (k + i) % $# + 1 )):1}"; done; }

# cpu_ticks FIELD PID... -> user (14) or system (15) CPU time, in clock ticks
# (hz per second), of those processes
cpu_ticks() { local f=$1 t=0 p; shift; for p in "$@"; do t=$((t + $(awk -v f="$f" '{print $f}' "/proc/$p/stat"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

# one_worker -> filters a gateway config to run one worker ([listen] workers = 1,
# right after that table's header).
one_worker() { awk '{ print } /^\[listen\]/ { print "workers = 1" }'; }

# fill FILE PORT UPSTREAM-PORT [DIR] -> benches/compare/FILE (a peer's config)
# filled in
fill() { sed -e "s#__UPSTREAM__#127.0.0.1:$3#" -e "s#__PORT__#$2#" -e "s#__DIR__#${4:-$work}#" "benches/compare/$1"; }

# stream_peers UPSTREAM-PORT -> starts nginx and HAProxy in front of that
# (1 GiB) upstream, configured to stream as the gateway does, and HAProxy as
# a zero-copy TCP relay (compare/haproxy-relay.cfg: the extra hop without
# user-space copies), and enters them in the caller's `via` (an associative
# array, declared first) as nginx, haproxy and relay. nginx passes what
# it reads on instead of spooling to a temporary file, and both read and write
# in 64 KiB pieces, as the gateway's upstream client reads (nginx's default of
# one 4 KiB page streamed at about a fifth of its speed with 64 KiB, HAProxy's
# 16 KiB at about 85%).
stream_peers() {
  local p
  mkdir -p "$work/big/tmp"
  p=$(port)
  fill nginx.conf "$p" "$1" "$work/big" \
    | sed 's#proxy_http_version 1.1;#proxy_http_version 1.1; proxy_buffering off; proxy_buffer_size 64k; proxy_buffers 4 64k; proxy_busy_buffers_size 128k;#' \
    > "$work/big/nginx.conf"
  nginx -c "$work/big/nginx.conf" -p "$work/big" &
  via[nginx]="$p $!"
  p=$(port)
  fill haproxy.cfg "$p" "$1" | sed 's#^global#global\n    tune.bufsize 65536#' > "$work/big/haproxy.cfg"
  haproxy -f "$work/big/haproxy.cfg" >/dev/null 2>&1 &
  via[haproxy]="$p $!"
  p=$(port)
  fill haproxy-relay.cfg "$p" "$1" > "$work/big/relay.cfg"
  haproxy -f "$work/big/relay.cfg" >/dev/null 2>&1 &
  via[relay]="$p $!"
}

# stream_rounds ROUNDS NAME... -> streams the 1 GiB report through each
# NAME in turn, ROUNDS times, each round in the order `rotated` gives it
# (via[NAME]: "PORT PID...", the PIDs whose CPU,
# with their children's, is counted: nginx's workers), printing each
# stream's MiB/s and those processes' user and system seconds; then each
# NAME's medians and its share of the first NAME's (direct). One stream
# varies by about 15% from the next.
stream_rounds() {
  local rounds=$1 r n p pids u0 s0 u1 s1 speed size first=$2 order
  shift
  for r in $(seq "$rounds"); do
    mapfile -t order < <(rotated $((r - 1)) "$@")
    for n in "${order[@]}"; do
      read -r p pids <<<"${via[$n]}"
      pids="$pids $({ pgrep -P "${pids// /,}" || true; } | tr '\n' ' ')"
      # shellcheck disable=SC2086 # the PIDs are separate words
      { u0=$(cpu_ticks 14 $pids); s0=$(cpu_ticks 15 $pids); }
      read -r speed size < <(curl -s -o /dev/null -w '%{speed_download} %{size_download}\n' -H "$key" "http://127.0.0.1:$p$target")
      # shellcheck disable=SC2086
      { u1=$(cpu_ticks 14 $pids); s1=$(cpu_ticks 15 $pids); }
      [ "$size" = 1073741824 ] || { echo "$n streamed $size bytes, not 1 GiB" >&2; exit 1; }
      awk -v n="$n" -v r="$r" -v b="$speed" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" \
        'BEGIN { printf "round %d %-10s %6.0f MiB/s, user %.2f s, system %.2f s\n", r, n, b/1048576, u/hz, s/hz }'
    done
  done | tee "$work/stream-rounds"
  for n in "$@"; do
    awk -v n="$n" -v m="$(column_median "$work/stream-rounds" "$n" 4)" \
      -v d="$(column_median "$work/stream-rounds" "$first" 4)" \
      -v u="$(column_median "$work/stream-rounds" "$n" 7)" -v s="$(column_median "$work/stream-rounds" "$n" 10)" \
      'BEGIN { printf "median %-10s %6.0f MiB/s (%.2f of direct), user %.2f s, system %.2f s\n", n, m, m/d, u, s }'
  done
}

# shellcheck source=machine.sh
. benches/compare/machine.sh   # machine()

# median -> the median of the numbers on stdin, one per line (for an even
# count, the mean of the middle two)
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# column_median FILE KEY COLUMN -> the median of that (whitespace-separated)
# column over FILE's lines whose third field is KEY: the rounds a script
# printed for one contender
column_median() { awk -v k="$2" -v c="$3" '$3 == k {print $c}' "$1" | median; }

# rss PID -> that process's resident memory, in KiB
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# peak_from PID -> resets that process's peak resident memory (VmHWM, the
# kernel's) to what it holds now, and prints that (KiB)
peak_from() { echo 5 > "/proc/$1/clear_refs"; rss "$1"; }

# peak_since NAME PID BEFORE -> one line: PID's peak resident memory since
# peak_from printed BEFORE, and how much above BEFORE it went
peak_since() {
  awk -v n="$1" -v b="$3" -v p="$(awk '/VmHWM/ {print $2}' "/proc/$2/status")" \
    'BEGIN { printf "%s RSS while streaming 1 GiB: %.1f MiB before, peak %.1f MiB (+%.1f MiB)\n", n, b/1024, p/1024, (p-b)/1024 }'
}

# idle_rss PID PORT ADMIN-PORT -> "BASE BUSY HELD OPEN PARKED": the gateway
# PID's resident memory (KiB) before, right after 10,000 keep-alive
# connections to PORT have had one answer each, and 3 s later (longer than
# listen.park_after, 1 s) with all of them still open; then its open and
# parked connections by its metrics at ADMIN-PORT. The connections are
# closed before it returns. Needs `ulimit -n` above 10,000.
idle_rss() {
  local base busy held idle gauges
  base=$(rss "$1")
  rm -f "$work/idle.in" "$work/idle.out"
  mkfifo "$work/idle.in"
  python3 benches/compare/idle.py "$2" 10000 "$key" '/Chime/Report/GetQueueBasicReports?queueId=1' \
    < "$work/idle.in" > "$work/idle.out" &
  idle=$!
  exec 9>"$work/idle.in"
  until grep -q ready "$work/idle.out" 2>/dev/null; do kill -0 "$idle" || { echo "idle client failed" >&2; exit 1; }; sleep 0.2; done
  busy=$(rss "$1")
  sleep 3
  held=$(rss "$1")
  gauges=$(curl -s "http://127.0.0.1:$3/metrics")
  exec 9>&-
  wait "$idle" || true
  echo "$base $busy $held $(awk '/^chime_gateway_open_connections / {print $2}' <<<"$gauges")" \
    "$(awk '/^chime_gateway_parked_connections / {print $2}' <<<"$gauges")"
}
