"""Opens N keep-alive connections to a listener, makes one request on each,
then keeps them all open and idle until stdin closes.

    python3 idle.py PORT N 'HEADER: value' TARGET
Prints "ready N" once every connection has had its answer."""
import socket
import sys

port, n, header, target = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\n\r\n".encode()
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed before an answer")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit("answer was not 200: " + head.split(b"\r\n")[0].decode())
    conns.append(s)
print("ready", len(conns), flush=True)
sys.stdin.read()
