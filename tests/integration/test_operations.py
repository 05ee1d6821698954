#!/usr/bin/python3
"""Running tokend: limits that protect it (connections, header count, slow
clients), a configuration reload on SIGHUP, the LMDB map growing under
load, clear refusals at start-up, and the TLS certificate pair."""
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, Server, free_port  # noqa: E402
import wire_support as ws  # noqa: E402

LOW = ("--pwhash-ops", "1", "--pwhash-mem", "8")


def raw_request(port, data, timeout=5, source=None):
    """Sends bytes, returns what comes back before close or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


class ThreadNames(unittest.TestCase):
    def test_each_thread_says_what_it_is(self):
        # top -H, ps -L and gdb show which thread burns the CPU: a loop, a
        # worker hashing, the log writer or the purger.
        with Server() as srv:
            srv.create_app("a")
            srv.start(*LOW, "--threads", "2", "--workers", "3")
            task = "/proc/%d/task" % srv.proc.pid
            names = []
            for tid in os.listdir(task):
                with open(os.path.join(task, tid, "comm")) as f:
                    names.append(f.read().strip())
            self.assertEqual(sorted(n for n in names if n.startswith("tokend-")),
                             ["tokend-log", "tokend-loop0", "tokend-loop1", "tokend-purge",
                              "tokend-work0", "tokend-work1", "tokend-work2"], names)


class Limits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        cls.srv.create_app("a")
        cls.srv.start(*LOW, "--threads", "2", "--max-connections", "8",
                      "--request-timeout", "2")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def wait_for_no_other_connection(self):
        """Until the server holds only the scrape's own connection: one an
        earlier test closed still counts against the limit until a loop has
        read its end (seen under a loaded full run)."""
        deadline = time.monotonic() + 10
        while True:
            text = self.srv.request("GET", "/metrics").body.decode()
            n = int(float(text.split("\ntokend_connections_open ")[1].split()[0]))
            if n <= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertLessEqual(n, 1)
        time.sleep(0.3)   # and the scrape's own is read closed

    def test_connections_beyond_the_limit_are_closed(self):
        # The limit is the server's, whichever of its 2 loops the kernel
        # hands a connection to: all 8 are served, the 9th is not.
        self.wait_for_no_other_connection()
        held = [socket.create_connection(("127.0.0.1", self.srv.port), timeout=3) for _ in range(8)]
        try:
            for s in held:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in held:
                self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200"), "one of 8 was not served")
            time.sleep(0.2)
            extra = socket.create_connection(("127.0.0.1", self.srv.port), timeout=3)
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                got = extra.recv(100)
            except (ConnectionResetError, socket.timeout):
                got = b""
            extra.close()
            self.assertEqual(got, b"", "a 9th connection was served")
        finally:
            for s in held:
                s.close()
        time.sleep(0.3)
        # The slots come back when connections close.
        self.assertEqual(self.srv.request("GET", "/healthz").status, 200)

    def test_error_replies_keep_the_connection_alive(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=5)
        try:
            conn.request("POST", "/nosuch", body=b"{}", headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 404)
            self.assertNotEqual((r.getheader("connection") or "").lower(), "close")
            sock = conn.sock
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            self.assertIs(conn.sock, sock, "the 404 closed the connection")
        finally:
            conn.close()

    def test_too_many_headers_is_a_clean_error(self):
        hdrs = "".join("x-h%d: v\r\n" % i for i in range(300))
        out = raw_request(self.srv.port, ("GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n"
                                          % hdrs).encode())
        self.assertTrue(out == b"" or out.startswith(b"HTTP/1.1 4"), out[:80])
        self.assertEqual(self.srv.request("GET", "/healthz").status, 200)

    def test_huge_header_is_a_clean_error(self):
        out = raw_request(self.srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: " +
                          b"a" * 600000 + b"\r\n\r\n")
        self.assertTrue(out == b"" or out.startswith(b"HTTP/1.1 4"), out[:80])
        self.assertEqual(self.srv.request("GET", "/healthz").status, 200)

    def test_slow_client_is_closed_within_the_request_timeout(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        s.sendall(b"POST /token/id HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n")
        start = time.monotonic()
        closed = False
        s.settimeout(1)
        while time.monotonic() - start < 10:
            try:
                s.sendall(b" ")
                if s.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        s.close()
        self.assertTrue(closed, "a dripping request was not closed")
        self.assertLess(time.monotonic() - start, 6)


class Reload(unittest.TestCase):
    def test_sighup_applies_new_limits_and_keeps_bad_ones_out(self):
        srv = Server()
        srv.create_app("a")
        conf = os.path.join(srv.tmp, "tokend.conf")
        with open(conf, "w") as f:
            f.write("# limits\nmax-body 1024\n")
        srv.start(*LOW, "--config", conf)
        try:
            body = {"user_id": 1, "password": "not-the-password", "pad": "x" * 2000}
            self.assertEqual(srv.request("POST", "/token/id", body).status, 413)
            with open(conf, "w") as f:
                f.write("max-body 8192\n")
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "reloaded" not in srv.logs() and time.monotonic() < deadline:
                time.sleep(0.05)
            r = srv.request("POST", "/token/id", body)
            self.assertEqual(r.status, 401, r.body)  # no such user: but read, not refused
            with open(conf, "w") as f:
                f.write("max-body lots\n")
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "running configuration stays" not in srv.logs() and time.monotonic() < deadline:
                time.sleep(0.05)
            # the event is a JSON line by default: its quotes are escaped
            self.assertRegex(srv.logs(), r'bad value \\?"lots\\?" for max-body')
            self.assertEqual(srv.request("POST", "/token/id", body).status, 401)
        finally:
            srv.stop()

    def test_a_burst_of_sighups_right_after_start(self):
        # A SIGHUP the kernel handed to a thread made before the signals were
        # blocked (the log writer, the workers) killed the process: systemd's
        # reload right after a start, or two reloads in a row.
        srv = Server()
        srv.create_app("a")
        conf = os.path.join(srv.tmp, "tokend.conf")
        with open(conf, "w") as f:
            f.write("max-body 4096\n")
        srv.start(*LOW, "--config", conf, "--workers", "4")
        try:
            for _ in range(40):
                srv.proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            self.assertIsNone(srv.proc.poll(), srv.logs()[-2000:])
            self.assertEqual(srv.request("GET", "/healthz").status, 200)
        finally:
            srv.stop()

    def test_sighup_raises_the_cap_h2o_applies_too(self):
        # h2o refuses bodies past 16 x max-body (at least 1 MiB) itself, before
        # tokend sees them: a larger max-body by SIGHUP must move that cap
        # too, as a restart would.
        srv = Server()
        srv.create_app("a")
        conf = os.path.join(srv.tmp, "tokend.conf")
        with open(conf, "w") as f:
            f.write("max-body 65536\n")
        srv.start(*LOW, "--config", conf)
        try:
            small = {"user_id": 1, "password": "not-the-password", "pad": "x" * 100000}
            self.assertEqual(srv.request("POST", "/token/id", small).status, 413)   # tokend's
            body = dict(small, pad="x" * (2 << 20))   # past h2o's cap of 1 MiB until the reload
            with open(conf, "w") as f:
                f.write("max-body 4194304\n")
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "reloaded" not in srv.logs() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.1)   # the cap is set right after the reload's line
            for http2 in (False, True):
                r = srv.request("POST", "/token/id", body, http2=http2)
                self.assertEqual(r.status, 401, (http2, r.body[:200]))  # read, not refused
        finally:
            srv.stop()


class Store(unittest.TestCase):
    def test_map_grows_under_writes(self):
        srv = Server()
        srv.create_app("a")
        admin = srv.secret(srv.cli("admin-token", "create", "--data", srv.data).stdout.strip())
        srv.start(*LOW, "--map-size", "1")
        try:
            created = 0
            for batch in range(25):
                users = [{"username": "grow_%d_%d" % (batch, i), "password": "password-%d" % i}
                         for i in range(100)]
                r = srv.request("POST", "/user/register/batch", {"list": users},
                                headers={"access-token": admin}, timeout=60)
                self.assertEqual(r.status, 200, r.body)
                created += sum(1 for u in r.json()["data"] if u["success"])
            self.assertEqual(created, 2500)
            self.assertIn("map grown", srv.logs())
            # More was written than the first map could hold.
            self.assertGreater(os.path.getsize(os.path.join(srv.data, "data.mdb")), 3 << 18)
        finally:
            srv.stop()


def data_mapping(pid):
    """The data file's mapping in the process: (Size, Rss, Locked) in bytes."""
    found, cur = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = {} if line.rstrip().endswith("/data.mdb") else None
                if cur is not None:
                    found.append(cur)
            elif cur is not None and line.split(":")[0] in ("Size", "Rss", "Locked"):
                cur[line.split(":")[0]] = int(line.split()[1]) * 1024
    assert len(found) <= 1, found
    if not found:   # between a resize's unmap and map
        return 0, 0, 0
    return found[0]["Size"], found[0]["Rss"], found[0]["Locked"]


def may_lock_all():
    """What tokend asks of --lock-memory: CAP_IPC_LOCK or no memlock limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if hard == resource.RLIM_INFINITY:
        return True
    with open("/proc/self/status") as f:
        caps = [int(l.split()[1], 16) for l in f if l.startswith("CapEff:")]
    return bool(caps and caps[0] >> 14 & 1)


class LockMemory(unittest.TestCase):
    """--lock-memory on: the data file in memory (read in at start, locked)
    and kept so as it grows, is remapped by a growth of the map, and grows
    by another process's writes."""

    def metrics(self, srv):
        body = srv.request("GET", "/metrics").body.decode()
        return {k: int(v) for k, v in
                re.findall(r"^(tokend_lmdb_map_\w+_bytes) (\d+)$", body, re.M)}

    def assert_resident(self, srv):
        """Within a few seconds (the keeper looks every second), every used
        page of the map is in memory, and locked there."""
        deadline = time.monotonic() + 10
        while True:
            m = self.metrics(srv)
            if (m["tokend_lmdb_map_resident_bytes"] == m["tokend_lmdb_map_used_bytes"] or
                    time.monotonic() > deadline):
                break
            time.sleep(0.1)
        self.assertEqual(m["tokend_lmdb_map_resident_bytes"], m["tokend_lmdb_map_used_bytes"])
        size, rss, locked = data_mapping(srv.proc.pid)
        self.assertEqual(size, m["tokend_lmdb_map_size_bytes"])
        self.assertGreaterEqual(rss, m["tokend_lmdb_map_used_bytes"])
        if not os.environ.get("ASAN_OPTIONS"):   # ASan makes mlockall a no-op
            self.assertEqual(locked, rss)
        return m

    def test_data_kept_in_memory(self):
        if not may_lock_all():
            self.skipTest("needs CAP_IPC_LOCK or an unlimited memlock limit")
        srv = Server()
        srv.create_app("a")
        admin = srv.secret(srv.cli("admin-token", "create", "--data", srv.data).stdout.strip())
        srv.start(*LOW, "--map-size", "1", "--lock-memory", "on")
        try:
            self.assertRegex(srv.logs(), r"MiB of data in memory and locked")
            task = "/proc/%d/task" % srv.proc.pid
            names = []
            for tid in os.listdir(task):
                with open(os.path.join(task, tid, "comm")) as f:
                    names.append(f.read().strip())
            self.assertIn("tokend-memory", names)   # the keeper
            first = self.assert_resident(srv)
            for batch in range(12):   # past the first map: a new mapping
                users = [{"username": "lock_%d_%d" % (batch, i), "password": "password-%d" % i}
                         for i in range(100)]
                r = srv.request("POST", "/user/register/batch", {"list": users},
                                headers={"access-token": admin}, timeout=60)
                self.assertEqual(r.status, 200, r.body)
            self.assertIn("map grown", srv.logs())
            grown = self.assert_resident(srv)
            self.assertGreater(grown["tokend_lmdb_map_size_bytes"],
                               first["tokend_lmdb_map_size_bytes"])
            self.assertGreater(grown["tokend_lmdb_map_used_bytes"], 1 << 20)
            # The file grows in the same map: no resize wakes the keeper. (A
            # batch may fit in pages LMDB has free, or grow the map too:
            # then the next one.)
            for batch in range(40):
                before = self.assert_resident(srv)
                users = [{"username": "lock_more_%d_%d" % (batch, i),
                          "password": "password-%d" % i} for i in range(100)]
                r = srv.request("POST", "/user/register/batch", {"list": users},
                                headers={"access-token": admin}, timeout=60)
                self.assertEqual(r.status, 200, r.body)
                self.assertTrue(all(u["success"] for u in r.json()["data"]), r.body)
                after = self.metrics(srv)
                if (after["tokend_lmdb_map_size_bytes"] == before["tokend_lmdb_map_size_bytes"] and
                        after["tokend_lmdb_map_used_bytes"] > before["tokend_lmdb_map_used_bytes"]):
                    break
            else:
                self.fail("no batch grew the file within one map")
            grown = self.assert_resident(srv)
            self.assertEqual(grown["tokend_lmdb_map_size_bytes"], after["tokend_lmdb_map_size_bytes"])
            # Another process's writes (more than the pages LMDB has free,
            # and a larger map), with no write of the server's after them.
            lines = "".join('{"name": "imported_%d", "password_hash": "$argon2id$v=19$m=8192,'
                            't=1,p=1$c2FsdHNhbHRzYWx0$bSt8m4WKrD4nFT3d2xv7gMLprXydpgJYEm1wRjoe6bY"}\n'
                            % i for i in range(80000))
            srv.cli("user", "import", "--data", srv.data, stdin=lines)
            # It wrote past the server's map. With no request to the server,
            # the keeper follows the map and reads the new pages in.
            path = os.path.join(srv.data, "data.mdb")
            self.assertGreater(os.path.getsize(path), grown["tokend_lmdb_map_size_bytes"])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                size, rss, _ = data_mapping(srv.proc.pid)
                if rss >= os.path.getsize(path):
                    break
                time.sleep(0.1)
            self.assertGreaterEqual(rss, os.path.getsize(path))
            self.assertGreater(size, grown["tokend_lmdb_map_size_bytes"])
            self.assertGreater(self.assert_resident(srv)["tokend_lmdb_map_used_bytes"],
                               grown["tokend_lmdb_map_used_bytes"])
            r = srv.request("POST", "/token/user", {"name": "lock_0_1",
                                                "password": "password-1"})
            self.assertEqual(r.status, 200, r.body)
            token = r.json()["data"]["token"]
            r = srv.request("POST", "/token/verify", {"token": token},
                            headers={"access-token": admin})
            self.assertEqual(r.status, 200, r.body)
        finally:
            srv.stop()

    def test_refused_without_the_right_to_lock(self):
        """A finite memlock limit and no CAP_IPC_LOCK: refused at start (exit
        2, a configuration error), saying what to change."""
        import shutil
        if not shutil.which("prlimit") or (os.geteuid() == 0 and not shutil.which("setpriv")):
            self.skipTest("needs prlimit and setpriv (util-linux)")
        srv = Server()
        srv.create_app("a")
        # root drops CAP_IPC_LOCK (setpriv needs CAP_SETPCAP); anyone else
        # has not got it
        drop = (["setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock"]
                if os.geteuid() == 0 else [])
        p = subprocess.run(["prlimit", "--memlock=65536:65536", *drop,
                            BIN, "serve", "--data", srv.data, "--listen",
                            "127.0.0.1:%d" % free_port(), "--lock-memory", "on"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("LimitMEMLOCK=infinity", p.stderr)
        self.assertNotIn("listening", p.stdout + p.stderr)
        srv.close()


class Deadline(unittest.TestCase):
    def test_a_login_past_its_deadline_changes_nothing(self):
        srv = Server()
        srv.create_app("a")
        uid = srv.add_user("slowpoke", "slow-password", pwhash_ops=4, pwhash_mem=64)
        admin = srv.secret(srv.cli("admin-token", "create", "--data", srv.data).stdout.strip())
        srv.start("--pwhash-ops", "4", "--pwhash-mem", "64", "--workers", "1")
        try:
            body = {"user_id": uid, "password": "slow-password", "device_guid": "phone-1"}
            r = srv.request("POST", "/token/id", body)
            self.assertEqual(r.status, 200, r.body)
            push = srv.secret(r.json()["data"]["push_token"])
            # Keep the only worker busy, so the next login waits past its deadline.
            import threading
            done = []
            busy = threading.Thread(target=lambda: done.append(srv.request("POST", "/token/id", body)))
            busy.start()
            time.sleep(0.01)
            r = srv.request("POST", "/token/id", dict(body, device_guid="phone-1"),
                            headers={"grpc-timeout": "1m"})
            busy.join()
            self.assertEqual(r.status, 504, r.body)
            self.assertEqual(r.json()["message"], "deadline exceeded")
            # The busy login rotated the push token; the late one must not have.
            r = srv.request("GET", "/user/device/list",
                            headers={"access-token": admin, "user_id": str(uid)})
            self.assertEqual(len(r.json()["data"]), 1)
            r = srv.request("POST", "/push/targets", {"user_id": uid},
                            headers={"access-token": admin})
            self.assertEqual(done[0].status, 200, done[0].body)
            busy_push = srv.secret(done[0].json()["data"]["push_token"])
            self.assertNotEqual(busy_push, push)
            self.assertEqual(r.json()["data"]["push_tokens"], [busy_push])
        finally:
            srv.stop()


class Purge(unittest.TestCase):
    def test_expired_sessions_are_purged_in_the_background(self):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from lifecycle_support import dump_lmdb
        srv = Server()
        app = srv.create_app("a", ttl=1)
        uid = srv.add_user("brief", "brief-password", pwhash_ops=1, pwhash_mem=8)
        admin = srv.secret(srv.cli("admin-token", "create", "--data", srv.data, "--app",
                                   app).stdout.strip())
        srv.start(*LOW, "--purge-interval", "1")
        try:
            r = srv.request("POST", "/token/id", {"user_id": uid, "password": "brief-password"})
            token = srv.secret(r.json()["data"]["token"])
            self.assertEqual(len(dump_lmdb(srv.data).get("expiry", [])), 1)
            time.sleep(1.1)
            r = srv.request("POST", "/token/verify", {"token": token},
                            headers={"access-token": admin})
            self.assertIn(r.json()["message"], ("token expired", "invalid token"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                db = dump_lmdb(srv.data)
                # the admin token never expires and stays
                if len(db.get("sessions", [])) == 1 and not db.get("expiry") and \
                        not db.get("user_sessions") and not db.get("store_tokens"):
                    break
                time.sleep(0.2)
            else:
                self.fail("expired session still stored: %r" % {k: len(v) for k, v in db.items()})
            self.assertIn("purged 1 expired sessions", srv.logs())
            r = srv.request("POST", "/token/verify", {"token": token},
                            headers={"access-token": admin})
            self.assertEqual(r.json()["message"], "invalid token")
        finally:
            srv.stop()


class AuditAtomicity(unittest.TestCase):
    def test_a_refused_change_leaves_no_audit_record(self):
        srv = Server()
        srv.create_app("a")
        srv.add_user("first", "first-password", pwhash_ops=1, pwhash_mem=8)
        second = srv.add_user("second", "second-password", pwhash_ops=1, pwhash_mem=8)
        admin = srv.secret(srv.cli("admin-token", "create", "--data", srv.data).stdout.strip())
        srv.start(*LOW)
        try:
            hdr = {"access-token": admin}
            r = srv.request("POST", "/admin/user/update", {"user_id": second, "name": "first"},
                            headers=hdr)
            self.assertEqual(r.status, 409, r.body)
            r = srv.request("POST", "/admin/user/update", {"user_id": second, "name": "renamed"},
                            headers=hdr)
            self.assertEqual(r.status, 200, r.body)
            audit = srv.cli("audit", "--data", srv.data).stdout.splitlines()
            updates = [line for line in audit if " UpdateUser " in line]
            self.assertEqual(len(updates), 1, audit)  # the refused rename left nothing
            self.assertIn("user_id=%d" % second, updates[0])
        finally:
            srv.stop()


class PeerThatNeverReads(unittest.TestCase):
    def test_streams_are_bounded_while_replies_wait(self):
        # One-write replies end their stream as soon as it is queued: against
        # a peer that never reads, streams (each with its request's memory)
        # piled up without h2o's limit of open streams. 40 000 gRPC calls of
        # ~15 bytes each on one connection took ~170 MB before.
        import hpack
        if os.environ.get("ASAN_OPTIONS"):
            # ASan's quarantine keeps freed memory (up to 256 MB): RSS measures
            # nothing of tokend's there. tools/test's Release stage runs it.
            self.skipTest("RSS under AddressSanitizer")
        srv = Server()
        srv.create_app("a")
        srv.start(*LOW, "--threads", "1")
        try:
            def rss_kb():
                with open("/proc/%d/status" % srv.proc.pid) as f:
                    return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", srv.port))
            s.settimeout(2)

            def frame(ftype, flags, sid, payload=b""):
                return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
                        sid.to_bytes(4, "big") + payload)
            enc = hpack.Encoder()
            out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", frame(4, 0, 0)]
            for i in range(40000):
                block = enc.encode([(":method", "POST"), (":scheme", "http"),
                                    (":path", "/tokend.v1.Tokend/NoSuchMethod"), (":authority", "x"),
                                    ("content-type", "application/grpc"), ("te", "trailers")])
                out.append(frame(1, 5, 2 * i + 1, block))    # END_STREAM | END_HEADERS
            before = rss_kb()
            data = b"".join(out)
            try:
                s.sendall(data)
            except (socket.timeout, OSError):
                pass            # the server stopped reading: it has enough queued
            time.sleep(1.5)
            grown = rss_kb() - before
            print("test_operations: %d KiB more RSS after %d bytes of calls from a peer that "
                  "never reads" % (grown, len(data)), file=sys.stderr)
            self.assertLess(grown, 48 * 1024)
            s.close()
            self.assertEqual(srv.request("GET", "/healthz").status, 200)
        finally:
            srv.stop()


class Stop(unittest.TestCase):
    def test_a_call_in_flight_is_answered_whatever_else_is_served(self):
        # The grace time was counted in turns of the loop, not in time: a
        # client polling on a kept-alive connection during the stop ended it
        # early, and the login in flight got no answer.
        import http.client
        import threading
        srv = Server()
        srv.create_app("a")
        uid = srv.add_user("slow", "a-Slow-password-1", pwhash_ops=6, pwhash_mem=128)
        srv.start(*LOW, "--threads", "1")   # the login and the polls on one loop
        out = []
        t = threading.Thread(target=lambda: out.append(srv.request(
            "POST", "/token/id", {"user_id": uid, "password": "a-Slow-password-1"}, timeout=30)))
        t0 = time.monotonic()
        t.start()
        time.sleep(0.1)
        poll = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        poll.request("GET", "/healthz")
        poll.getresponse().read()
        proc, srv.proc = srv.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            for _ in range(2000):   # as fast as it answers, on the one connection
                poll.request("GET", "/healthz")
                poll.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass
        t.join(30)
        self.assertEqual(proc.wait(30), 0)
        self.assertTrue(out and out[0].status == 200, out)
        srv.secret(out[0].json()["data"]["token"])
        print("test_operations: a login of %.2f s answered through the stop" % (time.monotonic() - t0),
              file=sys.stderr)
        srv._out.close()
        srv._err.close()
        srv.close()


class StopWhileStarting(unittest.TestCase):
    def test_a_stop_before_it_serves_ends_it_at_once(self):
        # Start-up can take long (a snapshot load; here the decoy hash of a
        # costly --pwhash-*, seconds of Argon2id): SIGTERM then ends it at
        # once, not once it has started serving.
        from harness import free_port
        srv = Server()
        try:
            srv.create_app("a")
            proc = subprocess.Popen(
                [BIN, "serve", "--data", srv.data, "--listen", "127.0.0.1:%d" % free_port(),
                 "--pwhash-ops", "40", "--pwhash-mem", "256"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.5)   # in the decoy's hash by now
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            took = time.monotonic() - t0
            self.assertEqual(proc.returncode, 0, err)
            self.assertNotIn(b"listening", out)   # it never served
            self.assertIn(b"stopped while starting", err)
            self.assertLess(took, 2.0, "the stop waited for the start-up")
            # the directory is whole: it serves afterwards
            srv.start(*LOW)
            self.assertEqual(srv.request("GET", "/healthz").status, 200)
            srv.stop()
        finally:
            srv.close()


class StartUp(unittest.TestCase):
    def test_data_path_that_is_a_file(self):
        srv = Server()
        try:
            path = os.path.join(srv.tmp, "not-a-dir")
            open(path, "w").close()
            p = subprocess.run([BIN, "serve", "--data", path, "--listen", "127.0.0.1:1"],
                               capture_output=True, timeout=15)
            self.assertNotEqual(p.returncode, 0)
            err = p.stderr.decode().strip().splitlines()
            self.assertEqual(len(err), 1, err)
            self.assertIn(path, err[0])
        finally:
            srv.close()

    def test_a_second_server_on_the_same_port_is_refused(self):
        # The loops' listeners share their port (SO_REUSEPORT); a second
        # tokend of the same user must not join them and split the clients.
        first, second = Server(), Server()
        first.create_app("a")
        second.create_app("b")
        first.start(*LOW)
        try:
            p = subprocess.run([BIN, "serve", "--data", second.data, "--listen",
                                "127.0.0.1:%d" % first.port], capture_output=True, timeout=15)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use" % first.port,
                          p.stderr.decode())
            self.assertEqual(first.request("GET", "/healthz").status, 200)
        finally:
            first.stop()
            second.close()

    def test_servers_starting_on_one_port_take_turns(self):
        # Two tokends started at one moment (on one address, or a wildcard
        # and a specific one) could both find the port free before either's
        # loops listen, and share it (SO_REUSEPORT). Each claims the port
        # while it checks and binds (an abstract Unix socket named after the
        # port); another waits for the claim, then finds the port taken. Here
        # the test holds the claim, as a server between its check and its
        # binds would: while it does, a server waits, and gives up after 3 s.
        import socket
        import urllib.request
        srv = Server()
        srv.create_app("a")
        port, mport = free_port(), free_port()

        def claim(p):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.bind("\0tokend-listen %d" % p)
            return c

        def serve(*extra):
            return [BIN, "serve", "--data", srv.data, "--listen", "0.0.0.0:%d" % port,
                    "--pwhash-ops", "1", "--pwhash-mem", "8", *extra]

        held = claim(port)
        try:
            t0 = time.monotonic()
            p = subprocess.run(serve(), capture_output=True, timeout=15)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertGreater(time.monotonic() - t0, 2.9)
            self.assertIn("cannot listen on 0.0.0.0:%d: another process held the port's claim "
                          "for 3 s" % port, p.stderr.decode())
            held.close()
            held = claim(mport)
            p = subprocess.run(serve("--metrics-listen", "127.0.0.1:%d" % mport),
                               capture_output=True, timeout=15)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("cannot listen on 127.0.0.1:%d (--metrics-listen): another process"
                          % mport, p.stderr.decode())
            held.close()
            # a claim let go within the wait: the server goes on and serves
            held = claim(port)
            proc = subprocess.Popen(serve(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                time.sleep(0.5)
                self.assertIsNone(proc.poll(), "gave up while the claim was held")
                held.close()
                for _ in range(100):
                    try:
                        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port,
                                                    timeout=2) as r:
                            self.assertEqual(r.status, 200)
                            break
                    except OSError:
                        time.sleep(0.05)
                else:
                    self.fail("not serving after the claim was let go")
                # serving, it holds no claim: the port itself refuses the next
                # server, on its specific address too, at once
                t0 = time.monotonic()
                p = subprocess.run([BIN, "serve", "--data", srv.data, "--listen",
                                    "127.0.0.1:%d" % port], capture_output=True, timeout=15)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("Address already in use", p.stderr.decode())
                self.assertLess(time.monotonic() - t0, 2.5)
            finally:
                proc.terminate()
                proc.wait(timeout=15)
        finally:
            held.close()
            srv.close()

    def test_a_port_out_of_range_is_refused(self):
        srv = Server()
        try:
            for listen in ("127.0.0.1:65616", "127.0.0.1:0", "127.0.0.1:", "127.0.0.1:80x"):
                p = subprocess.run([BIN, "serve", "--data", srv.data, "--listen", listen],
                                   capture_output=True, timeout=15)
                self.assertEqual(p.returncode, 2, (listen, p.stderr))
                self.assertIn('bad value "%s" for --listen: give HOST:PORT with a port from 1 to 65535'
                              % listen, p.stderr.decode())
        finally:
            srv.close()

    def test_port_in_use(self):
        srv = Server()
        srv.create_app("a")
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        try:
            p = subprocess.run([BIN, "serve", "--data", srv.data, "--listen",
                                "127.0.0.1:%d" % port], capture_output=True, timeout=15)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("cannot listen", p.stderr.decode())
        finally:
            blocker.close()
            srv.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)


def make_rsa_cert(cert, key):
    p = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("openssl req failed: %s" % p.stderr)


def handshake(port, cipher=None):
    """The server's certificate (DER) over TLS, or None if the handshake fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cipher:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.getpeercert(binary_form=True)
        except (ssl.SSLError, ConnectionResetError):
            return None


class Tls(unittest.TestCase):
    def test_tls12_only_forward_secret_aead_suites(self):
        # Static RSA key exchange (no forward secrecy) and CBC suites (on
        # HTTP/2's banned list) are not offered; ECDHE with AEAD is.
        srv = ws.TlsServer()
        srv.create_app("a")
        make_rsa_cert(srv.cert, srv.key)
        srv.start(*LOW)
        try:
            self.assertIsNotNone(handshake(srv.port, "ECDHE-RSA-AES128-GCM-SHA256"))
            self.assertIsNotNone(handshake(srv.port, "ECDHE-RSA-CHACHA20-POLY1305"))
            for weak in ("AES128-GCM-SHA256", "AES256-SHA256", "ECDHE-RSA-AES128-SHA"):
                self.assertIsNone(handshake(srv.port, weak), weak)
            self.assertIsNotNone(handshake(srv.port))   # TLS 1.3
        finally:
            srv.stop()

    def test_a_bad_pair_is_refused_with_its_reason(self):
        srv = ws.TlsServer()
        srv.create_app("a")
        other_cert, other_key = os.path.join(srv.tmp, "o.pem"), os.path.join(srv.tmp, "ok.pem")
        ws.make_cert(other_cert, other_key)
        enc = os.path.join(srv.tmp, "enc.pem")
        subprocess.run(["openssl", "pkey", "-in", srv.key, "-aes256", "-passout", "pass:abcd", "-out", enc],
                       check=True, capture_output=True, timeout=60)
        cases = (
            (srv.cert, other_key, "key values mismatch"),
            (srv.cert, enc, "it is encrypted"),   # and no prompt on the terminal
            (os.path.join(srv.tmp, "none.pem"), srv.key, "none.pem: No such file or directory"),
            (srv.key, srv.key, "cannot load the TLS certificate"),
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            for cert, key, why in cases:
                p = subprocess.run([BIN, "serve", "--data", srv.data, "--listen", "127.0.0.1:%d" % port,
                                    "--tls-cert", cert, "--tls-key", key], capture_output=True,
                                   text=True, timeout=15, stdin=subprocess.DEVNULL)
                # exit 2: a configuration error, which systemd does not restart in a loop
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(why, p.stderr)
                conf = os.path.join(srv.tmp, "bad.conf")
                with open(conf, "w") as f:
                    f.write("tls-cert %s\ntls-key %s\n" % (cert, key))
                c = subprocess.run([BIN, "config", "check", conf], capture_output=True, text=True,
                                   timeout=15)
                self.assertEqual(c.returncode, 1, c.stdout)
                self.assertIn(why, c.stderr)
        finally:
            srv.close()

    def test_sighup_takes_a_renewed_certificate(self):
        srv = ws.TlsServer()
        srv.create_app("a")
        srv.start(*LOW)
        try:
            first = handshake(srv.port)
            self.assertIsNotNone(first)
            self.assertIn("valid until", srv.logs())
            # renewed in place, as certbot or cert-manager do
            cert, key = os.path.join(srv.tmp, "new.pem"), os.path.join(srv.tmp, "newkey.pem")
            ws.make_cert(cert, key)
            os.replace(key, srv.key)
            os.replace(cert, srv.cert)
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "TLS certificate" not in srv.logs().split("reloaded")[-1] and \
                    "certificate %s reloaded" % srv.cert not in srv.logs() and time.monotonic() < deadline:
                time.sleep(0.05)
            second = handshake(srv.port)
            self.assertIsNotNone(second)
            self.assertNotEqual(second, first)
            # a broken file is not taken: the running certificate stays
            with open(srv.cert, "w") as f:
                f.write("not a certificate\n")
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "running certificate stays" not in srv.logs() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIn("running certificate stays", srv.logs())
            self.assertEqual(handshake(srv.port), second)
        finally:
            srv.stop()
