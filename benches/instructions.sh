#!/usr/bin/env bash
# Instructions executed per proxied request, counted by valgrind's
# callgrind: the gateway (one worker, audit log to a file, coalescing and
# the cache off, as in compare.sh), then nginx and HAProxy with compare.sh's
# configs (one worker or thread each, access log on), each behind the same
# simulated Chime and sent the same requests by one keep-alive client.
# Unlike timings the counts do not depend on what else the machine is doing.
# Each also gets its clock reads per request, which callgrind's count leaves
# out (see clock_reads below).
#
#   bash benches/instructions.sh [requests]   (default 3000)
#   PEERS=off bash benches/instructions.sh   the gateway only
#   CALLGRIND_OUT=cg.out bash benches/instructions.sh   keeps the gateway's
#   profile, for `callgrind_annotate --inclusive=yes cg.out`
#   GATEWAY_BIN=target/pgo/release/chime-gateway bash benches/instructions.sh
#   counts benches/pgo.sh's profile-guided build instead of `cargo build --release`'s
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}
peers=${PEERS:-on}
# shellcheck source=compare/tools.sh
. benches/compare/tools.sh   # install_missing()
tools=(valgrind)
[ "$peers" = off ] || tools+=(nginx haproxy)
install_missing "${tools[@]}"   # in one apt-get run
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), wait_ready(), keys.toml, key, target, gateway_config(), one_worker, fill(), machine()
machine
up=$(port)
"$bin" simulate --listen "127.0.0.1:$up" >/dev/null &

client() {
  python3 - "$1" "$2" "$target" "$key" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
target, key = sys.argv[3], sys.argv[4]
req = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{key}\r\n\r\n".encode()
s = socket.create_connection(("127.0.0.1", port))
buf = b""
for _ in range(n):
    s.sendall(req)
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(buf) < length:
        buf += s.recv(65536)
    buf = buf[length:]
PY
}

# count NAME PORT COMMAND... -> runs COMMAND (in $work) under callgrind,
# waits until PORT answers HTTP, warms it up, then counts the instructions
# of $n requests (every thread of the process) and prints them per request;
# stops the process and leaves its profile in $work/NAME.out.1
count() {
  local name=$1 p=$2 pid per
  shift 2
  (cd "$work" && exec valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" "$@" >/dev/null 2>"$work/$name.valgrind") &
  pid=$!
  wait_ready "$p" ""
  client "$p" 300                           # warm up: connections, caches, the catalog
  callgrind_control -z "$pid" >/dev/null 2>&1  # count from here
  client "$p" "$n"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  per=$(awk -v n="$n" '/^summary:/ {print int($2 / n)}' "$work/$name.out.1")
  echo "$name $per" >> "$work/counts"
  printf '%-8s instructions per proxied request: %s (callgrind, %s requests, 1 worker)\n' "$name" "$per" "$n"
  printf '%-8s clock reads per proxied request: %s\n' "$name" "$(clock_reads "$work/$name.out.1" "$n")"
}

# clock_reads PROFILE N -> calls to clock_gettime, gettimeofday and time per
# request, and how many of them came through Rust's std (Instant::now and
# SystemTime::now: precise readings, each a read of the time-stamp counter
# through the vDSO, some 24 ns); the gateway's other calls are its coarse
# clock's (src/clock/coarse.rs, about 5 ns). callgrind counts each as a few
# instructions: under valgrind they are system calls, which it does not see.
clock_reads() {
  callgrind_annotate --tree=caller --threshold=100 "$1" 2>/dev/null | awk -v n="$2" '
    / < .*\(([0-9,]+)x\)/ {
      c = $0; sub(/.*\(/, "", c); sub(/x\).*/, "", c); gsub(",", "", c)
      calls += c
      if ($0 ~ /Timespec>::now/) std += c
      next
    }
    / \* / { if ($0 ~ /:_*(clock_gettime|gettimeofday|time)[@ ]/) { total += calls; precise += std }; calls = 0; std = 0; next }
    { calls = 0; std = 0 }
    END { printf "%.1f (%.1f of them precise readings through std)\n", total / n, precise / n }'
}

gw=$(port); admin=$(port)
gateway_config main "$up" "$gw" "$admin" off | one_worker > "$work/g.toml"
count gateway "$gw" "$bin" serve --config g.toml
[ -z "${CALLGRIND_OUT:-}" ] || cp "$work/gateway.out.1" "$CALLGRIND_OUT"
[ "$peers" = off ] && exit 0

# One worker, no master process, and no limit on a connection's requests
# (nginx closes a keep-alive connection after 1,000 by default), so that the
# one client's connection lasts the count.
ngx=$(port)
mkdir -p "$work/tmp"
fill nginx.conf "$ngx" "$up" \
  | sed -e 's/^worker_processes auto;/worker_processes 1;\nmaster_process off;/' \
        -e 's/^http {/http {\n    keepalive_requests 1000000;/' > "$work/nginx.conf"
count nginx "$ngx" nginx -c "$work/nginx.conf" -p "$work"

hap=$(port)
fill haproxy.cfg "$hap" "$up" | sed 's/^global/global\n    nbthread 1/' > "$work/haproxy.cfg"
count haproxy "$hap" haproxy -f "$work/haproxy.cfg"

awk '{c[$1] = $2} END {printf "gateway/nginx %.2f, gateway/HAProxy %.2f\n", c["gateway"] / c["nginx"], c["gateway"] / c["haproxy"]}' "$work/counts"
