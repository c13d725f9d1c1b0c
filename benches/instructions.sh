#!/usr/bin/env bash
# Instructions the gateway executes per proxied request, counted by
# valgrind's callgrind: one worker, audit log to a file, coalescing and the
# cache off (as in compare.sh), one keep-alive client. Unlike timings the
# count does not depend on what else the machine is doing.
#
#   bash benches/instructions.sh [requests]   (default 3000)
#   CALLGRIND_OUT=cg.out bash benches/instructions.sh   keeps the profile,
#   for `callgrind_annotate --inclusive=yes cg.out`
#   GATEWAY_BIN=target/pgo/release/chime-gateway bash benches/instructions.sh
#   counts benches/pgo.sh's profile-guided build instead of `cargo build --release`'s
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
# shellcheck source=compare/common.sh
. benches/compare/common.sh   # bin, work, port(), wait_ready(), keys.toml, key, target, gateway_config(), one_worker, fill()
up=$(port); gw=$(port); admin=$(port)
"$bin" simulate --listen "127.0.0.1:$up" >/dev/null &
gateway_config main "$up" "$gw" "$admin" off | one_worker > "$work/g.toml"
(cd "$work" && exec valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$bin" serve --config g.toml 2>"$work/valgrind.log") &
wait_ready "$admin"
client() {
  python3 - "$gw" "$1" "$target" "$key" <<'PY'
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
client 300                       # warm up: connections, caches, the catalog
callgrind_control -z >/dev/null 2>&1  # count from here
client "$n"
callgrind_control -d >/dev/null 2>&1
[ -z "${CALLGRIND_OUT:-}" ] || cp "$work/cg.out.1" "$CALLGRIND_OUT"
total=$(awk '/^summary:/ {print $2}' "$work/cg.out.1")
echo "instructions per proxied request: $((total / n)) (callgrind, $n requests, 1 worker)"
