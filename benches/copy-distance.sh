#!/usr/bin/env bash
# What the kernel's copy into a socket costs depending on where the data
# sits against where the kernel puts it: a C program writes 1 GiB over a
# loopback connection in writes of exactly 64 KiB, each a 6-byte header
# (as `fff8\r\n`), 65,528 bytes of data and a 2-byte trailer (the chunk
# framing the gateway's server adds to a full frame), with the data at a
# chosen offset in its page, and prints the writer's system time per GiB
# and the rate. Each write is 64 KiB, so the kernel's socket pages are
# filled from their start and the data lands 6 bytes into a page: the
# distance printed is how far the destination is past the source, modulo
# 4 KiB. Medians of three runs per distance.
#
#   bash benches/copy-distance.sh [DISTANCE...]
#   WRITE=65483 bash benches/copy-distance.sh 4094   writes of that many
#     bytes instead (header, data, trailer), e.g. one loopback segment;
#     writes of another size than 64 KiB move the kernel's place in its
#     pages from one write to the next, so the distance then holds only
#     where a page is filled again from its start
#   CC=cubic bash benches/copy-distance.sh 4094   the writer's socket with
#     that congestion control instead of the system's (benches/RESULTS.md, "Streaming":
#     with BBR, a write of more than one segment costs several times more)
#
# The gateway places a full frame's data 8 bytes into its block (a
# distance of 4,094: src/proxy/h1.rs, `Frames`); frames cut back to back,
# as before e4a3906, kept it at a few bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=compare/machine.sh
. benches/compare/machine.sh   # machine()
# shellcheck source=compare/tools.sh
. benches/compare/tools.sh   # install_missing()
install_missing gcc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/copy.c" <<'EOF'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int reader_fd;

static void *drain(void *unused) {
  static char sink[65536];
  (void)unused;
  while (read(reader_fd, sink, sizeof sink) > 0) {}
  return NULL;
}

int main(int argc, char **argv) {
  enum { HEAD = 6, TAIL = 2 };
  long size = atol(argv[2]), data = size - HEAD - TAIL;
  if (data <= 0 || size > (1 << 19)) { fprintf(stderr, "WRITE must be 9 to 524288\n"); return 1; }
  const char *cc = argc > 3 ? argv[3] : NULL;
  long distance = atol(argv[1]) % 4096;
  long offset = ((HEAD - distance) % 4096 + 4096) % 4096; /* source offset in its page */
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  if (bind(listener, (void *)&addr, len) || listen(listener, 1) ||
      getsockname(listener, (void *)&addr, &len)) { perror("listen"); return 1; }
  int writer = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(writer, (void *)&addr, len)) { perror("connect"); return 1; }
  reader_fd = accept(listener, NULL, NULL);
  setsockopt(writer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (cc && setsockopt(writer, IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc))) { perror(cc); return 1; }
  pthread_t reader;
  pthread_create(&reader, NULL, drain, NULL);
  char *page = aligned_alloc(4096, 1 << 20);
  memset(page, 'x', 1 << 20);
  char head[HEAD] = {'f', 'f', 'f', '8', '\r', '\n'}, tail[TAIL] = {'\r', '\n'};
  struct iovec parts[3] = {{head, HEAD}, {page + offset, data}, {tail, TAIL}};
  struct rusage before, after;
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  getrusage(RUSAGE_THREAD, &before);
  for (long sent = 0; sent < (1L << 30);) {
    ssize_t n = writev(writer, parts, 3);
    if (n != size) { fprintf(stderr, "short write: %zd\n", n); return 1; }
    sent += n;
  }
  getrusage(RUSAGE_THREAD, &after);
  clock_gettime(CLOCK_MONOTONIC, &end);
  double secs = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
  /* A GiB or a little more: whole writes. */
  printf("%.3f %.0f\n", (after.ru_stime.tv_sec - before.ru_stime.tv_sec) +
                       (after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1e6, 1024.0 / secs);
  return 0;
}
EOF
gcc -O2 -pthread -o "$work/copy" "$work/copy.c"
distances=("$@")
[ ${#distances[@]} -gt 0 ] || distances=(0 1 2 4 6 8 16 32 64 65 128 1024 2048 4088 4094)
write=${WRITE:-65536}
machine
cc=${CC:-"$(cat /proc/sys/net/ipv4/tcp_congestion_control), the system's"}
echo "writes of $write bytes; congestion control $cc"
echo "destination past source (mod 4 KiB)   writer's system time per GiB, MiB/s (medians of 3)"
for d in "${distances[@]}"; do
  runs=$(for _ in 1 2 3; do "$work/copy" "$d" "$write" ${CC:+"$CC"}; done)
  t=$(awk '{print $1}' <<<"$runs" | sort -n | sed -n 2p)
  r=$(awk '{print $2}' <<<"$runs" | sort -n | sed -n 2p)
  printf '%6d bytes %34s s %8s MiB/s\n' "$d" "$t" "$r"
done
