#!/usr/bin/python3
"""idle_conns.py HOST PORT N HOLD_SECONDS - opens N HTTP/2 (h2c, prior
knowledge) connections, each sending the preface and an empty SETTINGS
frame, and holds them idle; prints "open N" once all are open (or "open K"
for as many as the server took), then holds them HOLD_SECONDS and exits.
tools/bench reads the server's RSS while they are held."""
import selectors
import socket
import sys
import time

host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
socks = []
for i in range(n):
    s = socket.socket()
    s.setblocking(True)
    try:
        s.connect((host, port))
        s.sendall(PREFACE)
    except OSError as e:
        print("open %d (stopped: %s)" % (len(socks), e), flush=True)
        break
    socks.append(s)
# Read the server's SETTINGS so none of them sits unread in a buffer.
sel = selectors.DefaultSelector()
for s in socks:
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
deadline = time.time() + 5
pending = len(socks)
while pending and time.time() < deadline:
    for key, _ in sel.select(0.2):
        try:
            if key.fileobj.recv(65536):
                sel.unregister(key.fileobj)
                pending -= 1
        except OSError:
            sel.unregister(key.fileobj)
            pending -= 1
alive = len(socks)
print("open %d" % alive, flush=True)
time.sleep(hold)
