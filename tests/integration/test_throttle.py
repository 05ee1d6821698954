#!/usr/bin/python3
"""Login throttling over real sockets: failed logins are counted per account
(and client address), per account and per address; a throttled login gets 429
with Retry-After (gRPC: RESOURCE_EXHAUSTED) before any hashing; an honest user
at another address is not locked out; and the bucket refills, so an account
is slowed, never locked for good. Behind --trusted-proxies, the address is
the client's that the proxy forwards in X-Forwarded-For, or (--proxy-protocol
on) names in the PROXY header, v1 or v2, an L4 balancer opens its connection
with, on plain and on TLS ports.

Loopback has many addresses (127.0.0.0/8): binding the client to 127.0.0.2
makes it another client as far as the server can tell."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server  # noqa: E402

PW = "right-password-1"
LOW = ("--pwhash-ops", "1", "--pwhash-mem", "8")


def login(srv, name, password, source=None, http2=False):
    return srv.request("POST", "/token/user", {"name": name, "password": password},
                       source=source, http2=http2)


class AccountThrottle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        cls.srv.create_app("a")
        for n in ("alice", "bob", "carol"):
            cls.srv.add_user(n, PW, pwhash_ops=1, pwhash_mem=8)
        # 10 failures per account per 15 minutes: the default, stated explicitly.
        cls.srv.start(*LOW, "--throttle-account", "10", "--throttle-address", "1000",
                      "--throttle-window", "900")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_eleventh_failure_is_throttled_before_hashing(self):
        for i in range(10):
            r = login(self.srv, "alice", "wrong-%d-guess" % i)
            self.assertEqual(r.status, 401, r.body)
        r = login(self.srv, "alice", "wrong-again-guess")
        self.assertEqual(r.status, 429, r.body)
        self.assertEqual(r.json()["code"], 429)
        self.assertIn("too many failed logins", r.json()["message"])
        retry = int(r.header("retry-after"))
        self.assertGreaterEqual(retry, 1)
        self.assertLessEqual(retry, 900)
        # Even the right password is refused now: the check comes first.
        r = login(self.srv, "alice", PW, http2=True)
        self.assertEqual(r.status, 429, r.body)

    def test_grpc_gets_resource_exhausted(self):
        import grpc

        def field(num, text):
            b = text.encode()
            return bytes([num << 3 | 2, len(b)]) + b

        for i in range(10):
            self.assertEqual(login(self.srv, "carol", "bad-guess-%d" % i, source="127.0.0.6").status, 401)
        # The gRPC client comes from 127.0.0.1 too: the account+address bucket of
        # carol from 127.0.0.1 is fresh, the account bucket (10x) is not empty
        # yet, so exhaust carol's bucket for 127.0.0.1 first.
        for i in range(10):
            self.assertEqual(login(self.srv, "carol", "bad-guess-%d" % i).status, 401)
        with grpc.insecure_channel("127.0.0.1:%d" % self.srv.port,
                                   options=[("grpc.enable_http_proxy", 0)]) as ch:
            call = ch.unary_unary("/tokend.v1.Tokend/TokenByName",
                                  request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with self.assertRaises(grpc.RpcError) as cm:
                call(field(1, "carol") + field(2, PW), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("too many failed logins", cm.exception.details())

    def test_other_address_is_not_locked_out(self):
        for i in range(10):
            self.assertEqual(login(self.srv, "bob", "bad-guess-%d" % i).status, 401)
        self.assertEqual(login(self.srv, "bob", PW).status, 429)
        r = login(self.srv, "bob", PW, source="127.0.0.2")
        self.assertEqual(r.status, 200, r.body)

    def test_success_does_not_use_up_the_bucket(self):
        for _ in range(15):
            self.assertEqual(login(self.srv, "carol", PW, source="127.0.0.3").status, 200)


class AddressThrottle(unittest.TestCase):
    def test_one_address_guessing_many_accounts(self):
        srv = Server()
        srv.create_app("a")
        srv.add_user("dave", PW, pwhash_ops=1, pwhash_mem=8)
        srv.start(*LOW, "--throttle-account", "10", "--throttle-address", "5")
        try:
            for i in range(5):
                r = login(srv, "nobody%d" % i, "bad-guess-pw", source="127.0.0.4")
                self.assertEqual(r.status, 401, r.body)
            r = login(srv, "someone_else", "bad-guess-pw", source="127.0.0.4")
            self.assertEqual(r.status, 429, r.body)
            self.assertIsNotNone(r.header("retry-after"))
            # Another address still logs in.
            self.assertEqual(login(srv, "dave", PW, source="127.0.0.5").status, 200)
        finally:
            srv.stop()


class BehindProxies(unittest.TestCase):
    """--trusted-proxies: behind a proxy every client comes from its address;
    the one it forwards (X-Forwarded-For, its right-most entry) is the
    client the address throttle and the log know. A peer not trusted is
    known by its own address, whatever header it sends."""
    PROXY, DIRECT = "127.0.0.2", "127.0.0.7"

    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        cls.srv.create_app("a")
        cls.srv.add_user("erin", PW, pwhash_ops=1, pwhash_mem=8)
        cls.srv.start(*LOW, "--throttle-account", "100", "--throttle-address", "3",
                      "--trusted-proxies", "10.0.0.0/8, %s" % cls.PROXY)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def via(self, source, xff, name="nobody", password="bad-guess-pw", http2=False):
        hdrs = {"x-forwarded-for": xff} if xff is not None else None
        return self.srv.request("POST", "/token/user", {"name": name, "password": password},
                                headers=hdrs, source=source, http2=http2)

    def logs_with(self, text):
        """The server's output once it holds text (its log thread writes
        the request lines a moment after the replies)."""
        deadline = time.monotonic() + 10
        while text not in self.srv.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn(text, self.srv.logs())
        return self.srv.logs()

    def test_each_forwarded_client_has_its_own_bucket(self):
        for i in range(3):
            self.assertEqual(self.via(self.PROXY, "203.0.113.5", http2=i == 1).status, 401)
        r = self.via(self.PROXY, "203.0.113.5")
        self.assertEqual(r.status, 429, r.body)
        # A client cannot step out of its bucket by writing its own header:
        # the proxy appends the address it saw, and that one is read.
        self.assertEqual(self.via(self.PROXY, "198.51.100.77, 203.0.113.5").status, 429)
        # Another client behind the same proxy is not throttled, and logs in;
        # so is the proxy's own address.
        self.assertEqual(self.via(self.PROXY, "203.0.113.6").status, 401)
        self.assertEqual(self.via(self.PROXY, "203.0.113.6", "erin", PW).status, 200)
        self.assertEqual(self.via(self.PROXY, None, "erin", PW).status, 200)
        log = self.logs_with('"client":"203.0.113.6"')
        self.assertIn('"client":"203.0.113.5"', log)

    def test_a_peer_not_trusted_is_known_by_its_own_address(self):
        for i in range(3):
            self.assertEqual(self.via(self.DIRECT, "192.0.2.%d" % i).status, 401)
        self.assertEqual(self.via(self.DIRECT, "192.0.2.200").status, 429)
        self.assertNotIn('"client":"192.0.2.', self.logs_with('"client":"%s"' % self.DIRECT))

    def test_a_bad_list_is_refused_at_start(self):
        import subprocess
        import tempfile
        import harness
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([harness.BIN, "serve", "--data", d, "--trusted-proxies",
                                "10.0.0.0/8,10.0.0.0/33"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(p.stderr.strip().splitlines(),
                         ['tokend: bad value for --trusted-proxies: "10.0.0.0/33": '
                          'the prefix length must be 0 to 32'])


class TrustedForwarded(unittest.TestCase):
    """--forwarded-header forwarded: the proxies write the client in
    RFC 7239's Forwarded (its for=), and only that header is read: an
    X-Forwarded-For passes through such proxies as the client wrote it."""
    PROXY = "127.0.0.2"

    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        cls.srv.create_app("a")
        cls.srv.start(*LOW, "--throttle-account", "100", "--throttle-address", "3",
                      "--trusted-proxies", cls.PROXY, "--forwarded-header", "forwarded")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def via(self, headers, http2=False):
        return self.srv.request("POST", "/token/user", {"name": "nobody", "password": "bad-guess-pw"},
                                headers=headers, source=self.PROXY, http2=http2)

    def test_the_for_of_forwarded_is_the_client(self):
        name = "forwarded"
        for i in range(3):
            # quoted with a port, or bare; the header name in either case (HTTP/1.1)
            value = 'for="203.0.113.9:4711";proto=https' if i else "for=203.0.113.9"
            self.assertEqual(self.via({"Forwarded" if i == 2 else name: value}, http2=i == 1).status, 401)
        r = self.via({name: "for=198.51.100.3, for=203.0.113.9;by=%s" % self.PROXY})
        self.assertEqual(r.status, 429, r.body)
        # another client behind the proxy has its own bucket, IPv6 too
        self.assertEqual(self.via({name: 'for="[2001:db8::9]:80"'}).status, 401)
        # X-Forwarded-For is not read: these all count against the proxy itself
        for i in range(3):
            self.assertEqual(self.via({"x-forwarded-for": "192.0.2.%d" % i}).status, 401)
        self.assertEqual(self.via({"x-forwarded-for": "192.0.2.99"}).status, 429)
        deadline = time.monotonic() + 10
        want = '"client":"%s"' % self.PROXY     # the X-Forwarded-For requests' lines
        while want not in self.srv.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = self.srv.logs()
        self.assertIn(want, log)
        self.assertIn('"client":"203.0.113.9"', log)
        self.assertIn('"client":"2001:db8::9"', log)
        self.assertNotIn('"client":"192.0.2.', log)

    def test_a_bad_value_is_refused_at_start(self):
        import subprocess
        import tempfile
        import harness
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([harness.BIN, "serve", "--data", d, "--trusted-proxies", "10.0.0.0/8",
                                "--forwarded-header", "x-real-ip"], capture_output=True, text=True,
                               timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(p.stderr.strip().splitlines(),
                         ['tokend: bad value "x-real-ip" for --forwarded-header: '
                          'give x-forwarded-for or forwarded'])


def proxy_v2(client, command=0x21, port=40000, dest_port=443):
    """A PROXY v2 header: TCP over IPv4 from client (command 0x21, PROXY),
    with a TLV after the addresses as AWS's balancers add; 0x20 is LOCAL."""
    import socket
    import struct
    body = (socket.inet_aton(client) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, dest_port)
            + b"\xea\x00\x05\x01vpce")
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([command, 0x11]) + struct.pack("!H", len(body)) + body


class ProxyRelay:
    """An L4 balancer on loopback: accepts on 127.0.0.1, connects to the
    server from `source`, opens with a PROXY header naming `client` (v1 or
    v2), then relays bytes both ways."""
    def __init__(self, port, source, client, version=1):
        import socket
        import threading
        self.port, self.source, self.client, self.version = port, source, client, version
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def header(self):
        if self.version == 2:
            return proxy_v2(self.client, dest_port=self.port)
        return b"PROXY TCP4 %s 127.0.0.1 40000 %d\r\n" % (self.client.encode(), self.port)

    def serve(self):
        import socket
        import threading
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.socket()
            u.bind((self.source, 0))
            u.connect(("127.0.0.1", self.port))
            u.sendall(self.header())
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(2)
            except OSError:
                pass

    def close(self):
        self.sock.close()


class ProxyProtocol(unittest.TestCase):
    """--proxy-protocol on: an L4 balancer among --trusted-proxies opens each
    connection with a PROXY header, v1 or v2; the client it names is the
    connection's peer for the throttle and the log, over HTTP/1.1, h2c and
    native gRPC."""
    BALANCER = "127.0.0.2"

    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        cls.srv.create_app("a")
        cls.uid = cls.srv.add_user("finn", PW, pwhash_ops=1, pwhash_mem=8)
        cls.srv.start(*LOW, "--throttle-account", "100", "--throttle-address", "3",
                      "--trusted-proxies", cls.BALANCER, "--proxy-protocol", "on")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_each_client_behind_the_balancer(self):
        import grpc
        import http.client
        a = ProxyRelay(self.srv.port, self.BALANCER, "198.51.100.20")
        b = ProxyRelay(self.srv.port, self.BALANCER, "198.51.100.21", version=2)
        try:
            def login(relay, name="nobody", password="bad-guess-pw"):
                host, port = relay.addr.split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("POST", "/token/user", body=('{"name":"%s","password":"%s"}' % (name, password)),
                             headers={"content-type": "application/json"})
                status = conn.getresponse().status
                conn.close()
                return status
            self.assertEqual([login(a) for _ in range(3)], [401] * 3)
            self.assertEqual(login(a), 429)
            self.assertEqual(login(b), 401)          # its own bucket
            self.assertEqual(login(b, "finn", PW), 200)
            # native gRPC through the balancer: the same client, throttled too
            with grpc.insecure_channel(b.addr, options=[("grpc.enable_http_proxy", 0)]) as ch:
                call = ch.unary_unary("/grpc.health.v1.Health/Check",
                                      request_serializer=lambda x: x, response_deserializer=lambda x: x)
                self.assertEqual(call(b"", timeout=10), b"\x08\x01")
            import re
            grpc_line = re.compile(r'"rpc":"grpc.health.v1.Health/Check","protocol":"grpc".*'
                                   r'"client":"198.51.100.21"')
            deadline = time.monotonic() + 10   # the log thread writes a moment later
            while not grpc_line.search(self.srv.logs()) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertRegex(self.srv.logs(), grpc_line)
            self.assertIn('"client":"198.51.100.20"', self.srv.logs())
        finally:
            a.close()
            b.close()

    def test_a_peer_not_trusted_cannot_send_one(self):
        import socket
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10)
        s.sendall(b"PROXY TCP4 203.0.113.1 127.0.0.1 1 2\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 400 "))
        s.close()
        # and the balancer without a line is itself the client (its health checks)
        r = self.srv.request("GET", "/healthz", source=self.BALANCER)
        self.assertEqual(r.status, 200)

    def test_behind_l4_balancers_x_forwarded_for_is_not_read(self):
        # After PROXY UNKNOWN, or without a line, the bytes are the client's:
        # its X-Forwarded-For would be its own word.
        import socket
        for i, line in enumerate((b"PROXY UNKNOWN\r\n", b"")):
            s = socket.socket()
            s.bind((self.BALANCER, 0))
            s.connect(("127.0.0.1", self.srv.port))
            s.sendall(line + b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.66\r\n"
                      b"x-request-id: l4-%d\r\nConnection: close\r\n\r\n" % i)
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200 "))
            s.close()
        deadline = time.monotonic() + 10
        while '"request_id":"l4-1"' not in self.srv.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [x for x in self.srv.logs().splitlines() if '"request_id":"l4-' in x]
        self.assertEqual(len(lines), 2, lines)
        for x in lines:
            self.assertIn('"client":"%s"' % self.BALANCER, x)

    def raw(self, *chunks):
        """Sends chunks from the balancer's address, a moment apart; the
        reply's first bytes, b"" when the server closed without one."""
        import socket
        s = socket.socket()
        s.settimeout(10)
        s.bind((self.BALANCER, 0))
        s.connect(("127.0.0.1", self.srv.port))
        try:
            for c in chunks:
                s.sendall(c)
                time.sleep(0.05)
            return s.recv(4096)
        except ConnectionResetError:
            return b""
        finally:
            s.close()

    def logged_client(self, request_id):
        deadline = time.monotonic() + 10
        while '"request_id":"%s"' % request_id not in self.srv.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = [x for x in self.srv.logs().splitlines() if '"request_id":"%s"' % request_id in x]
        self.assertEqual(len(line), 1, line)
        import re
        return re.search(r'"client":"([^"]*)"', line[0]).group(1)

    def test_v2_header_in_pieces_local_and_malformed(self):
        def get(rid):
            return b"GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: %s\r\nConnection: close\r\n\r\n" % rid
        # a header that arrives a few bytes at a time is waited for
        h = proxy_v2("198.51.100.30")
        self.assertTrue(self.raw(h[:5], h[5:14], h[14:20], h[20:] + get(b"v2-pieces")).startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.logged_client("v2-pieces"), "198.51.100.30")
        # LOCAL: the balancer's own health check; it is the client
        self.assertTrue(self.raw(proxy_v2("198.51.100.31", command=0x20) + get(b"v2-local"))
                        .startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.logged_client("v2-local"), self.BALANCER)
        # v1 in pieces too
        self.assertTrue(self.raw(b"PROXY TCP4 198.51", b".100.32 127.0.0.1 5 6\r", b"\n" + get(b"v1-pieces"))
                        .startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.logged_client("v1-pieces"), "198.51.100.32")
        # malformed headers name nobody: their bytes go to HTTP, which refuses them
        for bad in (proxy_v2("198.51.100.33")[:12] + b"\x31\x11\x00\x0c" + b"\x00" * 12,   # version 3
                    b"PROXY TCP4 198.51.100.34 127.0.0.1 5\r\n"):
            reply = self.raw(bad + get(b"bad"))
            self.assertTrue(reply == b"" or reply.startswith(b"HTTP/1.1 400 "), reply)
        self.assertNotIn("198.51.100.33", self.srv.logs())
        self.assertNotIn("198.51.100.34", self.srv.logs())
        self.assertEqual(self.srv.request("GET", "/healthz", source=self.BALANCER).status, 200)

    def test_a_header_that_never_ends_is_cut_off(self):
        # A trusted peer that stalls mid-header holds no connection past the
        # handshake timeout, and one that sends a v1 line past the 107 bytes
        # the protocol allows gets no further either.
        import socket
        s = socket.socket()
        s.settimeout(30)
        s.bind((self.BALANCER, 0))
        s.connect(("127.0.0.1", self.srv.port))
        s.sendall(proxy_v2("198.51.100.35")[:20])
        t0 = time.monotonic()
        try:
            self.assertEqual(s.recv(4096), b"")
        except ConnectionResetError:
            pass
        self.assertLess(time.monotonic() - t0, 25)
        s.close()
        reply = self.raw(b"PROXY UNKNOWN " + b"x" * 200 + b"\r\nGET /healthz HTTP/1.1\r\n\r\n")
        self.assertTrue(reply == b"" or reply.startswith(b"HTTP/1.1 400 "), reply)


class ProxyProtocolTls(unittest.TestCase):
    """On a TLS port the PROXY header comes first, then the handshake:
    HTTP/1.1 and gRPC (h2 by ALPN) through balancers sending v1 and v2."""
    BALANCER = "127.0.0.2"

    def test_clients_behind_the_balancer_over_tls(self):
        import grpc
        import http.client
        import ssl
        from wire_support import TlsServer
        srv = TlsServer()
        srv.create_app("a")
        srv.add_user("gwen", PW, pwhash_ops=1, pwhash_mem=8)
        # the old spelling, v1, still turns it on
        srv.start(*LOW, "--trusted-proxies", self.BALANCER, "--proxy-protocol", "v1")
        a = ProxyRelay(srv.port, self.BALANCER, "198.51.100.40")
        b = ProxyRelay(srv.port, self.BALANCER, "198.51.100.41", version=2)
        try:
            host, port = a.addr.split(":")
            ctx = ssl.create_default_context(cafile=srv.cert)
            conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=ctx)
            conn.request("POST", "/token/user", body='{"name":"gwen","password":"%s"}' % PW,
                         headers={"content-type": "application/json", "x-request-id": "tls-v1"})
            self.assertEqual(conn.getresponse().status, 200)
            conn.close()
            creds = grpc.ssl_channel_credentials(root_certificates=srv.cert_pem)
            with grpc.secure_channel(b.addr, creds, options=[("grpc.enable_http_proxy", 0),
                                                             ("grpc.ssl_target_name_override", "localhost")]) as ch:
                call = ch.unary_unary("/grpc.health.v1.Health/Check",
                                      request_serializer=lambda x: x, response_deserializer=lambda x: x)
                self.assertEqual(call(b"", timeout=10), b"\x08\x01")
            deadline = time.monotonic() + 10
            import re
            grpc_line = re.compile(r'"protocol":"grpc".*"client":"198.51.100.41"')
            while not grpc_line.search(srv.logs()) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertRegex(srv.logs(), grpc_line)
            self.assertRegex(srv.logs(), r'"request_id":"tls-v1".*"client":"198.51.100.40"')
        finally:
            a.close()
            b.close()
            srv.stop()


class Refill(unittest.TestCase):
    def test_bucket_refills_so_the_account_is_only_slowed(self):
        srv = Server()
        srv.create_app("a")
        srv.add_user("erin", PW, pwhash_ops=1, pwhash_mem=8)
        # 3 failures per 3 s: one attempt comes back every second.
        srv.start(*LOW, "--throttle-account", "3", "--throttle-window", "3")
        try:
            for i in range(3):
                self.assertEqual(login(srv, "erin", "bad-guess-%d" % i).status, 401)
            r = login(srv, "erin", PW)
            self.assertEqual(r.status, 429, r.body)
            time.sleep(int(r.header("retry-after")) + 0.2)
            r = login(srv, "erin", PW)
            self.assertEqual(r.status, 200, r.body)
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
