#!/usr/bin/python3
"""h2raw.py - frame-level checks of the trailers shim with a hand-written
HTTP/2 client (stdlib, and python3-hpack to decode response headers): exact
frame sequences, CONTINUATION, tight flow control, the response header
blocks, and peer resets / connection drops at awkward moments.

    /usr/bin/python3 h2raw.py PORT
"""
import socket
import struct
import sys
import time

import hpack

PORT = int(sys.argv[1]) if __name__ == "__main__" else None  # importable: Conn(port=...)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 1, 4, 1
NAMES = {0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE",
         9: "CONTINUATION"}


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hpack_int7(v):
    if v < 127:
        return bytes([v])
    out, v = [127], v - 127
    while v >= 128:
        out.append(0x80 | (v & 0x7F))
        v >>= 7
    out.append(v)
    return bytes(out)


def hpack_literal(fields):
    """literal without indexing, new name, no Huffman"""
    out = b""
    for n, v in fields:
        out += b"\x00" + hpack_int7(len(n)) + n + hpack_int7(len(v)) + v
    return out


def representations(block):
    """the kind of each field representation of an HPACK block (RFC 7541 6):
    'indexed', 'incremental', 'size-update', 'never' or 'without', with the
    first byte; raises on a truncated block"""
    out, i = [], 0

    def skip_int(i, prefix):
        if block[i] & ((1 << prefix) - 1) != (1 << prefix) - 1:
            return i + 1
        i += 1
        while block[i] & 0x80:
            i += 1
        return i + 1

    def int_at(i, prefix):
        v = block[i] & ((1 << prefix) - 1)
        if v < (1 << prefix) - 1:
            return v, i + 1
        m, i = 0, i + 1
        while True:
            v += (block[i] & 0x7F) << m
            m += 7
            i += 1
            if not block[i - 1] & 0x80:
                return v, i

    def skip_string(i):
        n, i = int_at(i, 7)
        if i + n > len(block):
            raise AssertionError("truncated block %r" % block)
        return i + n

    while i < len(block):
        b = block[i]
        if b & 0x80:
            out.append(("indexed", b))
            i = skip_int(i, 7)
            continue
        if b & 0xE0 == 0x20:
            out.append(("size-update", b))
            i = skip_int(i, 5)
            continue
        kind, prefix = (("incremental", 6) if b & 0xC0 == 0x40 else
                        ("never", 4) if b & 0xF0 == 0x10 else ("without", 4))
        out.append((kind, b))
        new_name = b & ((1 << prefix) - 1) == 0
        i = skip_int(i, prefix)
        if new_name:
            i = skip_string(i)
        i = skip_string(i)
    return out


def response_headers(frame_, what, first=False):
    """the fields of a response HEADERS frame h2_reply.c encoded. Unless
    first (a field new to the connection goes through h2o's encoder, which
    adds it to the table): the indexed :status 200 (0x88), then references
    to the connection's table (index 62 on) and literals without indexing
    only - but for the date of a new second, which h2o's encoder adds (the
    only change to the table a reply's headers may make here)"""
    fields = frame_[4]
    if first:
        return fields
    kinds = representations(frame_[3])
    if kinds[0] != ("indexed", 0x88) or len(kinds) != len(fields):
        fail("%s: block %r" % (what, frame_[3][:40]))
    for (kind, first_byte), (name, _) in zip(kinds[1:], fields[1:]):
        if kind == "indexed" and first_byte & 0x7F < 62:
            fail("%s: %r is a static-table reference (%#04x)" % (what, name, first_byte))
        if kind not in ("indexed", "without") and not (kind == "incremental" and name == b"date"):
            fail("%s: %r is a %s literal (%#04x)" % (what, name, kind, first_byte))
    return fields


def grpc_msg(b):
    return b"\x00" + struct.pack(">I", len(b)) + b


class Conn:
    def __init__(self, settings=None, rcvbuf=None, port=None):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(5)
        self.s.connect(("127.0.0.1", port or PORT))
        self.buf = b""
        # The connection's HPACK state, client side: every header block is
        # decoded as it arrives, in order (a block may add to the table, so
        # one left out would misread the next); its fields ride on the frame
        # that ends it, as f[4].
        self.decoder = hpack.Decoder()
        if settings and 1 in settings:
            self.decoder.header_table_size = settings[1]
        self.block = b""
        payload = b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items())
        self.s.sendall(PREFACE + frame(SETTINGS, 0, 0, payload))

    def send(self, data):
        self.s.sendall(data)

    def request(self, sid, path, body, end_stream=True):
        block = hpack_literal([(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                               (b":authority", b"127.0.0.1"), (b"content-type", b"application/grpc"),
                               (b"te", b"trailers")])
        self.send(frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM if end_stream else 0, sid, body))

    def read_frame(self, timeout=5):
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 9:
                n = struct.unpack(">I", b"\0" + self.buf[:3])[0]
                if len(self.buf) >= 9 + n:
                    f = (self.buf[3], self.buf[4], struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF, self.buf[9:9 + n],
                         None)
                    self.buf = self.buf[9 + n:]
                    if f[0] in (HEADERS, CONTINUATION):
                        if f[0] == HEADERS and f[1] & 0x28:
                            fail("HEADERS with padding or priority: %#x" % f[1])
                        self.block = f[3] if f[0] == HEADERS else self.block + f[3]
                        if f[1] & END_HEADERS:
                            f = f[:4] + (self.decoder.decode(self.block, raw=True),)
                    if f[0] == SETTINGS and not f[1] & ACK:
                        self.send(frame(SETTINGS, ACK, 0))
                    if f[0] == PING and not f[1] & ACK:
                        self.send(frame(PING, ACK, 0, f[3]))
                    return f
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                return None
            if not d:
                return None
            self.buf += d

    def stream_frames(self, sid, window_update=False, timeout=5):
        """frames of stream `sid` until its END_STREAM (other streams' frames dropped)"""
        out = []
        while True:
            f = self.read_frame(timeout)
            if f is None:
                fail("stream %d: connection ended/timed out after %s" % (sid, [(NAMES[x[0]], x[1], len(x[3])) for x in out]))
            if f[0] == GOAWAY:
                fail("GOAWAY %r" % (f[3],))
            if f[2] != sid:
                continue
            out.append(f)
            if f[0] == DATA and window_update and len(f[3]):
                self.send(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", len(f[3]))) +
                          frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(f[3]))))
            if f[0] == RST_STREAM:
                fail("stream %d reset by server" % sid)
            if f[0] in (DATA, HEADERS) and f[1] & END_STREAM:
                # a trailer block may continue in CONTINUATION frames
                while f[0] == HEADERS and not f[1] & END_HEADERS or f[0] == CONTINUATION and not f[1] & END_HEADERS:
                    f = self.read_frame(timeout)
                    if f is None or f[0] != CONTINUATION or f[2] != sid:
                        fail("expected CONTINUATION, got %r" % (f and (NAMES[f[0]], f[2]),))
                    out.append(f)
                return out

    def close(self):
        self.s.close()


def check_response(frames, want_body, want_trailers, what):
    """HEADERS (no END_STREAM), DATA... (no END_STREAM), HEADERS(+CONTINUATION) ending the stream"""
    kinds = [f[0] for f in frames]
    if kinds[0] != HEADERS or frames[0][1] & END_STREAM or not frames[0][1] & END_HEADERS:
        fail("%s: first frame %s flags %#x" % (what, NAMES[kinds[0]], frames[0][1]))
    i = 1
    body = b""
    while i < len(frames) and kinds[i] == DATA:
        if frames[i][1] & END_STREAM:
            fail("%s: DATA with END_STREAM" % what)
        if len(frames[i][3]) == 0:
            fail("%s: empty DATA frame" % what)
        body += frames[i][3]
        i += 1
    if body != want_body:
        fail("%s: body %d bytes, want %d" % (what, len(body), len(want_body)))
    if i >= len(frames) or kinds[i] != HEADERS or not frames[i][1] & END_STREAM:
        fail("%s: no trailing HEADERS with END_STREAM: %s" % (what, [NAMES[k] for k in kinds]))
    if not frames[-1][1] & END_HEADERS or any(k != CONTINUATION for k in kinds[i + 1:]):
        fail("%s: bad trailer framing %s" % (what, [(NAMES[k], f[1]) for k, f in zip(kinds[i:], frames[i:])]))
    fields = frames[-1][4]
    if fields != want_trailers:
        fail("%s: trailers %r, want %r" % (what, fields and [(n, v[:40]) for n, v in fields], want_trailers))
    return len(frames) - i


def big_payload(n):
    return bytes((i * 7) % 251 for i in range(n))


def data_segs_in(sock):
    """data-carrying TCP segments received on sock (Linux tcp_info
    tcpi_data_segs_in, offset 152), or None if the kernel does not say"""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return struct.unpack_from("=I", info, 152)[0] if len(info) >= 156 else None


def drain(c, quiet=0.05):
    """reads and drops whatever the server still sends"""
    while c.read_frame(timeout=quiet) is not None:
        pass


def one_write_replies(n):
    """each small reply (HEADERS, DATA, HEADERS+END_STREAM) must reach the
    client in one data segment: the server wrote it in one go. Loopback's MTU
    is 64 KiB, so the segment count is the write count."""
    c = Conn()
    c.request(1, b"/echo.Echo/Echo", grpc_msg(b"warm-up"))
    c.stream_frames(1)
    drain(c)
    seg_counts = []
    for i in range(n):
        sid = 3 + 2 * i
        before = data_segs_in(c.s)
        if before is None:
            print("skip one-write check: no tcpi_data_segs_in")
            return
        c.request(sid, b"/echo.Echo/Echo" if i % 2 == 0 else b"/echo.Echo/FailAfterMsg", grpc_msg(b"m%d" % i))
        fr = c.stream_frames(sid)
        want = [(b"grpc-status", b"0")] if i % 2 == 0 else \
            [(b"grpc-status", b"9"), (b"grpc-message", b"failed after a message")]
        check_response(fr, grpc_msg(b"m%d" % i), want, "one-write %d" % i)
        if [f[0] for f in fr] != [HEADERS, DATA, HEADERS]:
            fail("one-write %d: frames %s" % (i, [NAMES[f[0]] for f in fr]))
        drain(c)
        seg_counts.append(data_segs_in(c.s) - before)
    c.close()
    if any(k != 1 for k in seg_counts):
        fail("small replies should arrive in one data segment each (one write), got %s" % seg_counts)


def large_reply_keeps_connection_responsive():
    """A client that allows 16 MiB frames and a 2 GiB window asks for 8 MB,
    pings mid-body, then resets the stream: the body must come in h2o-sized
    DATA frames (not one 8 MB frame written in one go, which holds every other
    frame - PING ACK, SETTINGS ACK, other replies - behind it), the PING must
    be answered before the body ends, and the connection goes on after the
    reset. 8 MB is more than the kernel can buffer (tcp_wmem max 4 MiB), so
    the body cannot be all written before the server reads the PING."""
    c = Conn({4: 0x7FFFFFFF, 5: 0xFFFFFF}, rcvbuf=16384)
    c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)))
    c.request(1, b"/echo.Echo/Big", grpc_msg(b"8000000"))
    got, biggest, pinged, ping_acked = 0, 0, False, False
    deadline = time.time() + 20
    while time.time() < deadline:
        f = c.read_frame(timeout=2)
        if f is None:
            break
        if f[0] == GOAWAY:
            fail("large reply: GOAWAY %r" % (f[3],))
        if f[0] == PING and f[1] & ACK and f[3] == b"midbody!":
            ping_acked = True
            if got >= 8000005:
                fail("large reply: PING answered only after the whole 8 MB body")
            c.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
            c.request(3, b"/echo.Echo/Echo", grpc_msg(b"after reset"))
            check_response(c.stream_frames(3), grpc_msg(b"after reset"), [(b"grpc-status", b"0")],
                           "echo after a reset large reply")
            break
        if f[2] == 1 and f[0] == DATA:
            got += len(f[3])
            biggest = max(biggest, len(f[3]))
            if not pinged:
                c.send(frame(PING, 0, 0, b"midbody!"))
                pinged = True
        if f[2] == 1 and f[1] & END_STREAM:
            fail("large reply: body ended (%d bytes, biggest DATA frame %d) before the PING was answered"
                 % (got, biggest))
    if not ping_acked:
        fail("large reply: no PING ACK (%d bytes read)" % got)
    if biggest > 81920:
        fail("large reply: a %d-byte DATA frame; h2o writes at most 80 KiB at a time" % biggest)
    # what was written before the reset still arrives (up to the kernel's
    # buffers), then the connection is idle and fine
    for f in iter(lambda: c.read_frame(timeout=0.5), None):
        if f[0] == GOAWAY:
            fail("large reply: GOAWAY after reset %r" % (f[3],))
    c.request(5, b"/echo.Echo/Echo", grpc_msg(b"later"))
    check_response(c.stream_frames(5), grpc_msg(b"later"), [(b"grpc-status", b"0")], "echo after the drain")
    c.close()
    return got, biggest


def alive():
    c = Conn()
    c.request(1, b"/echo.Echo/Echo", grpc_msg(b"alive?"))
    check_response(c.stream_frames(1), grpc_msg(b"alive?"), [(b"grpc-status", b"0")], "alive")
    c.close()


def main():
    # a. exact frame sequence of a normal response
    c = Conn()
    c.request(1, b"/echo.Echo/Echo", grpc_msg(b"abc"))
    check_response(c.stream_frames(1), grpc_msg(b"abc"), [(b"grpc-status", b"0")], "echo")
    # an error after a message: same shape, with grpc-message
    c.request(3, b"/echo.Echo/FailAfterMsg", grpc_msg(b"abc"))
    fr = c.stream_frames(3)
    check_response(fr, grpc_msg(b"abc"),
                   [(b"grpc-status", b"9"), (b"grpc-message", b"failed after a message")], "fail-after-msg")
    print("ok  HEADERS, DATA, HEADERS(END_STREAM|END_HEADERS, literal fields) - no empty DATA")
    c.close()

    # a2. the response headers: h2o's encoder puts the repeating fields in
    #     the table on the first reply, the next ones refer to them and leave
    #     the table as it is; a value's CR, LF and NUL go out as spaces on
    #     either path (h2o would send them)
    c = Conn()
    for sid in (1, 3):
        c.request(sid, b"/echo.Echo/Echo", grpc_msg(b"abc"))
        fields = response_headers(c.stream_frames(sid)[0], "echo headers %d" % sid, first=sid == 1)
        names = [n for n, _ in fields]
        if names != [b":status", b"server", b"date", b"content-type"] or fields[3][1] != b"application/grpc":
            fail("echo headers: %r" % fields)
    for sid in (5, 7):
        c.request(sid, b"/echo.Echo/BadValue", grpc_msg(b"abc"))
        fr = c.stream_frames(sid)
        check_response(fr, grpc_msg(b"abc"), [(b"grpc-status", b"0")], "bad value")
        if (b"x-bad", b"a  b c\td") not in response_headers(fr[0], "bad value %d" % sid, first=sid == 5):
            fail("bad value: %r" % fr[0][4])
    print("ok  response headers: table references and literals, CR/LF/NUL sent as SP")

    # a3. a header block over 4 KiB is h2o's encoder's (indexed, Huffman):
    #     with a body, and Trailers-Only (END_STREAM on h2o's HEADERS frame)
    c.request(9, b"/echo.Echo/BigHeaders", grpc_msg(b"big"))
    fr = c.stream_frames(9)
    check_response(fr, grpc_msg(b"big"), [(b"grpc-status", b"0")], "big headers")
    if (b"x-big", b"b" * 5000) not in fr[0][4]:
        fail("big headers: no x-big")
    c.request(11, b"/echo.Echo/BigHeaders", grpc_msg(b""))
    fr = c.stream_frames(11)
    if len(fr) != 1 or fr[0][1] & (END_STREAM | END_HEADERS) != END_STREAM | END_HEADERS:
        fail("big headers, trailers-only: %r" % [(NAMES[f[0]], f[1]) for f in fr])
    fields = fr[0][4]
    if (b"x-big", b"b" * 5000) not in fields or (b"grpc-status", b"5") not in fields:
        fail("big headers, trailers-only: %r" % [(n, v[:20]) for n, v in fields])
    # then ours again: the 5000-byte entry emptied the table, so the next
    # reply puts the repeating fields back through h2o's encoder, and the
    # one after refers to them
    for sid in (13, 15):
        c.request(sid, b"/echo.Echo/Echo", grpc_msg(b"after"))
        fr = c.stream_frames(sid)
        check_response(fr, grpc_msg(b"after"), [(b"grpc-status", b"0")], "echo after big headers")
        if [n for n, _ in response_headers(fr[0], "echo after big headers %d" % sid, first=sid == 13)] != \
                [b":status", b"server", b"date", b"content-type"]:
            fail("echo after big headers")
    c.close()
    print("ok  a 5000-byte header: h2o's encoder, with a body and Trailers-Only; the next reply ours")

    c = Conn()

    # b. Trailers-Only: exactly one HEADERS frame with END_STREAM|END_HEADERS
    c.request(5, b"/echo.Echo/Unauth", grpc_msg(b""))
    fr = c.stream_frames(5)
    if len(fr) != 1 or fr[0][0] != HEADERS or fr[0][1] & (END_STREAM | END_HEADERS) != END_STREAM | END_HEADERS:
        fail("trailers-only: %r" % [(NAMES[f[0]], f[1]) for f in fr])
    print("ok  Trailers-Only is a single HEADERS(END_STREAM|END_HEADERS)")

    # c. trailers bigger than a frame -> HEADERS + CONTINUATION, names lower-cased
    c.request(7, b"/echo.Echo/LongTrailer", grpc_msg(b"x"))
    nframes = check_response(c.stream_frames(7), grpc_msg(b"x"), [(b"x-pad", b"p" * 40000), (b"grpc-status", b"0")],
                             "long trailer")
    if nframes != 3:
        fail("long trailer: %d frames for 40 KB with 16 KB max frame size" % nframes)
    # the connection (and its HPACK state) is still fine afterwards
    c.request(9, b"/echo.Echo/Echo", grpc_msg(b"after"))
    check_response(c.stream_frames(9), grpc_msg(b"after"), [(b"grpc-status", b"0")], "echo after long trailer")
    c.close()
    print("ok  40 KB trailer block split into HEADERS + 2 CONTINUATION")

    # d. tight flow control: 1000-byte stream window, client drip-feeds WINDOW_UPDATEs
    c = Conn({4: 1000})
    c.request(1, b"/echo.Echo/Big", grpc_msg(b"50000"))
    fr = c.stream_frames(1, window_update=True)
    if max(len(f[3]) for f in fr if f[0] == DATA) > 1000:
        fail("flow control: DATA frame larger than the window")
    check_response(fr, grpc_msg(big_payload(50000)), [(b"grpc-status", b"0")], "flow control")
    print("ok  50 KB through a 1000-byte window (%d DATA frames), trailers after the last one"
          % sum(1 for f in fr if f[0] == DATA))

    # e. peer resets a flow-control-blocked stream mid-body; the connection goes on
    c.request(3, b"/echo.Echo/Big", grpc_msg(b"50000"))
    f = c.read_frame()
    while f and not (f[0] == DATA and f[2] == 3):
        f = c.read_frame()
    c.send(frame(RST_STREAM, 0, 3, struct.pack(">I", 8)))
    c.send(frame(WINDOW_UPDATE, 0, 3, struct.pack(">I", 100000)))  # for a closed stream: ignored
    c.request(5, b"/echo.Echo/Echo", grpc_msg(b"next"))
    fr = c.stream_frames(5)
    check_response(fr, grpc_msg(b"next"), [(b"grpc-status", b"0")], "after reset")
    c.close()
    print("ok  RST_STREAM mid-body, next stream on the same connection fine")

    # e2. peer resets a stream whose handler has not answered yet (answer
    #     deferred 20 ms, the guard cancels it), and one just as it answers
    c = Conn()
    for sid in range(1, 80, 2):
        c.request(sid, b"/echo.Echo/Deferred", grpc_msg(b"d"))
    c.send(b"".join(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)) for sid in range(1, 40, 2)))
    time.sleep(0.019)
    c.send(b"".join(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)) for sid in range(41, 60, 2)))
    c.request(81, b"/echo.Echo/Deferred", grpc_msg(b"after"))
    check_response(c.stream_frames(81), grpc_msg(b"after"), [(b"grpc-status", b"0")], "deferred after resets")
    c.close()
    print("ok  RST_STREAM before/while a deferred handler answers")

    # f. resets while the body is queued behind an unread socket, i.e. between
    #    body and trailers: the client stops reading, the server's writes stall
    for rst_first in (False, True):
        c = Conn({4: 0x7FFFFFFF}, rcvbuf=4096)
        c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)))
        c.request(1, b"/echo.Echo/Big", grpc_msg(b"3000000"))
        for sid in range(3, 41, 2):
            c.request(sid, b"/echo.Echo/Echo", grpc_msg(b"queued %d" % sid))
        time.sleep(0.3)
        for sid in (range(1, 41, 2) if rst_first else range(3, 41, 4)):
            c.send(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
        # drain everything, then use the connection again
        deadline = time.time() + 10
        while time.time() < deadline:
            f = c.read_frame(timeout=0.5)
            if f is None:
                break
            if f[0] == GOAWAY:
                fail("GOAWAY after resets")
        c.request(101, b"/echo.Echo/Echo", grpc_msg(b"still"))
        check_response(c.stream_frames(101), grpc_msg(b"still"), [(b"grpc-status", b"0")], "after queued resets")
        c.close()
    print("ok  RST_STREAM while body/trailers queued behind a stalled socket")

    # g. connection dropped mid-body and between body and trailers, 200 times
    for i in range(200):
        c = Conn({4: 0x7FFFFFFF}, rcvbuf=4096)
        c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)))
        c.request(1, b"/echo.Echo/Big", grpc_msg(b"1000000"))
        c.request(3, b"/echo.Echo/Echo", grpc_msg(b"x"))
        c.request(5, b"/echo.Echo/Unauth", grpc_msg(b""))
        if i % 2:
            c.read_frame()
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        c.close()
    time.sleep(0.2)
    alive()
    print("ok  200 connections dropped with responses in flight, server alive")

    # h. a small reply is one write: HEADERS, DATA, HEADERS(END_STREAM) in one segment
    one_write_replies(20)
    print("ok  20 small replies, each HEADERS+DATA+HEADERS(END_STREAM) in one TCP segment (one write)")

    # i. a large reply to a client with 16 MiB frames and huge windows, PING and reset mid-body
    got, biggest = large_reply_keeps_connection_responsive()
    print("ok  8 MB reply, 16 MiB frames allowed: DATA frames <= %d bytes, PING answered after %d bytes, "
          "reset mid-body, connection fine" % (biggest, got))

    # j. gRPC core resets calls it cancelled before their HEADERS went out:
    #    RST_STREAM on idle streams. Once a reply went out on stream 3 or later
    #    the shim drops those frames instead of h2o's GOAWAY(PROTOCOL_ERROR)
    c = Conn()
    for sid in (1, 3):
        c.request(sid, b"/echo.Echo/Echo", grpc_msg(b"before"))
        check_response(c.stream_frames(sid), grpc_msg(b"before"), [(b"grpc-status", b"0")], "before idle resets")
    c.send(frame(RST_STREAM, 0, 7, struct.pack(">I", 8)) + frame(RST_STREAM, 0, 9, struct.pack(">I", 8)))
    c.request(5, b"/echo.Echo/Echo", grpc_msg(b"after idle resets"))
    check_response(c.stream_frames(5), grpc_msg(b"after idle resets"), [(b"grpc-status", b"0")], "after idle resets")
    c.request(11, b"/echo.Echo/Deferred", grpc_msg(b"later"))
    c.send(frame(RST_STREAM, 0, 13, struct.pack(">I", 8)))  # while stream 11 waits for its timer
    check_response(c.stream_frames(11), grpc_msg(b"later"), [(b"grpc-status", b"0")], "deferred after idle reset")
    c.close()
    print("ok  RST_STREAM on idle streams (gRPC core, cancelled before HEADERS) ignored, connection fine")
    alive()
    print("PASS h2raw.py")


if __name__ == "__main__":
    main()
