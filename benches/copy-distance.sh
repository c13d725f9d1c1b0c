#!/usr/bin/env bash
# What the kernel's copy into a socket costs depending on where the data
# sits against where the kernel puts it: a C program writes 1 GiB over a
# loopback connection in writes of exactly 64 KiB, each a 6-byte header
# (as `fff8\r\n`), 65,528 bytes of data and a 2-byte trailer (the chunk
# framing the gateway's server adds to a full frame), with the data at a
# chosen offset in its page, and prints the writer's system time per GiB.
# Each write is 64 KiB, so the kernel's socket pages are filled from their
# start and the data lands 6 bytes into a page: the distance printed is
# how far the destination is past the source, modulo 4 KiB. Medians of
# three runs per distance.
#
#   bash benches/copy-distance.sh [DISTANCE...]
#
# The gateway places a full frame's data 8 bytes into its block (a
# distance of 4,094: src/proxy/h1.rs, `Frames`); frames cut back to back,
# as before e4a3906, kept it at a few bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=compare/machine.sh
. benches/compare/machine.sh   # machine()
command -v gcc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc >/dev/null; }
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
#include <unistd.h>

static int reader_fd;

static void *drain(void *unused) {
  static char sink[65536];
  (void)unused;
  while (read(reader_fd, sink, sizeof sink) > 0) {}
  return NULL;
}

int main(int argc, char **argv) {
  enum { HEAD = 6, TAIL = 2, WRITE = 65536, DATA = WRITE - HEAD - TAIL };
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
  pthread_t reader;
  pthread_create(&reader, NULL, drain, NULL);
  char *page = aligned_alloc(4096, 2 * WRITE);
  memset(page, 'x', 2 * WRITE);
  char head[HEAD] = {'f', 'f', 'f', '8', '\r', '\n'}, tail[TAIL] = {'\r', '\n'};
  struct iovec parts[3] = {{head, HEAD}, {page + offset, DATA}, {tail, TAIL}};
  struct rusage before, after;
  getrusage(RUSAGE_THREAD, &before);
  for (long sent = 0; sent < (1L << 30);) {
    ssize_t n = writev(writer, parts, 3);
    if (n != WRITE) { fprintf(stderr, "short write: %zd\n", n); return 1; }
    sent += n;
  }
  getrusage(RUSAGE_THREAD, &after);
  printf("%.3f\n", (after.ru_stime.tv_sec - before.ru_stime.tv_sec) +
                       (after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1e6);
  return 0;
}
EOF
gcc -O2 -pthread -o "$work/copy" "$work/copy.c"
distances=("$@")
[ ${#distances[@]} -gt 0 ] || distances=(0 1 2 4 6 8 16 32 64 65 128 1024 2048 4088 4094)
machine
echo "destination past source (mod 4 KiB)   writer's system time per GiB (median of 3)"
for d in "${distances[@]}"; do
  t=$(for _ in 1 2 3; do "$work/copy" "$d"; done | sort -n | sed -n 2p)
  printf '%6d bytes %34s s\n' "$d" "$t"
done
