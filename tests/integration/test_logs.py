"""test_logs.py - the access log and server events (issue 11), over real sockets.

One JSON line per request (or text with --log-format text) with its request
id, RPC, protocol, status, duration, sizes, client, app and user; events at
levels; --access-log FILE (reopened on SIGHUP) and off; no password, token
or push token in any line (the harness checks every secret it was given);
and a log nobody reads does not stall the server: lines are dropped and
counted instead.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "h2_trailers"))
import h2raw  # noqa: E402
import harness  # noqa: E402
import wire_support as ws  # noqa: E402

CHEAP = ws.CHEAP


def wait_for(pred, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def read(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def json_lines(text):
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))  # every JSON line parses
    return out


class JsonLog(unittest.TestCase):
    def test_request_lines_and_events(self):
        with harness.Server() as srv:
            app = srv.create_app("demo")
            uid = srv.add_user("alice", "alice-password-1", **ws.CHEAP_USER)
            admin = ws.admin_token(srv)
            srv.start(*CHEAP)
            r = srv.request("POST", "/token/login", {"login_name": "alice",
                                                     "password": "alice-password-1",
                                                     "device_guid": "phone-1"},
                            headers={"x-request-id": "login-1"})
            self.assertEqual(r.status, 200, r)
            d = r.json()["data"]
            for k in ("token", "push_token", "store_token", "access_key_secret"):
                srv.secret(d[k])
            r = srv.request("POST", "/token/verify", {"token": d["token"]},
                            headers={"access-token": admin, "x-request-id": "verify-1"})
            self.assertEqual(r.status, 200, r)
            r = srv.request("POST", "/push/verify", {"push_token": d["push_token"]},
                            headers={"access-token": admin})
            self.assertEqual(r.status, 200, r)
            r = srv.request("POST", "/token/login", {"login_name": "alice", "password": "wrong-pw"},
                            headers={"x-request-id": "login-2"})
            srv.secret("wrong-pw")
            self.assertEqual(r.status, 401)
            r = srv.request("GET", "/user/list?page_num=1&secret=hunter2", headers={
                "access-token": admin, "x-request-id": "list-1"})
            self.assertEqual(r.status, 200, r)
            srv.secret("hunter2")  # a query string is never logged
            self.assertEqual(srv.request("GET", "/nope", http2=True,
                                         headers={"x-request-id": "h2-404"}).status, 404)
            pb = ws.protos()
            ws.curl_grpc(srv.port, "/tokend.v1.Tokend/Verify",
                         ws.frame(pb.tokend.VerifyRequest(token=d["token"]).SerializeToString()),
                         headers={"access-token": admin, "x-request-id": "grpc-1"})
            # a streaming call: ServerReflectionRequest{list_services: "*"}
            ws.curl_grpc(srv.port, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                         ws.frame(b"\x3a\x01*"), headers={"x-request-id": "grpc-stream-1"})
            os.kill(srv.proc.pid, signal.SIGHUP)  # no --config: an error event, the server stays
            self.assertTrue(wait_for(lambda: sum(1 for l in json_lines(srv.logs())
                                                 if l.get("type") == "request") >= 8 and
                                     "reload" in srv.logs()))
            srv.stop()   # checks that no secret reached the logs
            lines = json_lines(srv.logs())
            req = {l["request_id"]: l for l in lines if l.get("type") == "request"}
            login = req["login-1"]
            self.assertEqual(login["rpc"], "tokend.v1.Tokend/TokenByLogin")
            self.assertEqual(login["path"], "/token/login")
            self.assertEqual(login["method"], "POST")
            self.assertEqual(login["protocol"], "json")
            self.assertEqual(login["status"], 200)
            self.assertEqual(login["code"], "OK")
            self.assertEqual(login["client"], "127.0.0.1")
            self.assertEqual(login["app_id"], app)
            self.assertEqual(login["user_id"], uid)
            self.assertGreater(login["bytes_in"], 0)
            self.assertGreater(login["bytes_out"], 0)
            self.assertGreater(login["duration_ms"], 0)
            self.assertRegex(login["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertEqual(req["login-2"]["status"], 401)
            self.assertEqual(req["login-2"]["code"], "UNAUTHENTICATED")
            self.assertNotIn("user_id", req["login-2"])   # not known: the guess is not told
            self.assertEqual(req["verify-1"]["rpc"], "tokend.v1.Tokend/Verify")
            self.assertEqual(req["verify-1"]["app_id"], app)
            self.assertEqual(req["list-1"]["path"], "/user/list")
            self.assertEqual(req["h2-404"]["status"], 404)
            self.assertNotIn("rpc", req["h2-404"])
            self.assertEqual(req["grpc-1"]["protocol"], "grpc")
            self.assertEqual(req["grpc-1"]["code"], "OK")
            self.assertEqual(req["grpc-stream-1"]["protocol"], "grpc")
            self.assertEqual(req["grpc-stream-1"]["code"], "OK")
            events = [l for l in lines if l.get("type") == "event"]
            kinds = [(e["level"], e["event"]) for e in events]
            self.assertIn(("info", "start"), kinds)
            self.assertIn(("error", "reload"), kinds)
            self.assertIn(("info", "drain"), kinds)
            made = [l["request_id"] for l in lines if l.get("type") == "request" and
                    l.get("path") == "/push/verify"]
            self.assertEqual(len(made), 1)
            self.assertTrue(made[0])   # an id was made for it

    def test_every_verify_of_a_checked_admin_token_has_its_app(self):
        """An admin token is checked in full once per thread, later calls
        reuse the check (rpc_auth.c's cache): their lines name the app as
        the first one's does, and no user. Several calls on one connection
        (so on one thread), gRPC and JSON."""
        with harness.Server() as srv:
            app = srv.create_app("demo")
            srv.add_user("alice", "alice-password-1", **ws.CHEAP_USER)
            admin = ws.admin_token(srv)
            srv.start("--threads", "1", *CHEAP)
            r = srv.request("POST", "/token/user", {"name": "alice", "password": "alice-password-1"})
            self.assertEqual(r.status, 200, r)
            token = srv.secret(r.json()["data"]["token"])
            body = h2raw.grpc_msg(ws.protos().tokend.VerifyRequest(token=token).SerializeToString())
            conn = h2raw.Conn(port=srv.port)
            try:
                for i in range(4):
                    sid = 2 * i + 1
                    block = h2raw.hpack_literal([
                        (b":method", b"POST"), (b":scheme", b"http"),
                        (b":path", b"/tokend.v1.Tokend/Verify"), (b":authority", b"127.0.0.1"),
                        (b"content-type", b"application/grpc"), (b"te", b"trailers"),
                        (b"access-token", admin.encode()), (b"x-request-id", b"cached-grpc-%d" % i)])
                    conn.send(h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, sid, block) +
                              h2raw.frame(h2raw.DATA, h2raw.END_STREAM, sid, body))
                    trailers = dict(conn.stream_frames(sid)[-1][4])
                    self.assertEqual(trailers.get(b"grpc-status"), b"0", trailers)
            finally:
                conn.close()
            h1 = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            try:
                for i in range(4):
                    h1.request("POST", "/token/verify", body=json.dumps({"token": token}),
                               headers={"content-type": "application/json", "access-token": admin,
                                        "x-request-id": "cached-json-%d" % i})
                    r = h1.getresponse()
                    self.assertEqual(r.status, 200, r.read())
                    r.read()
            finally:
                h1.close()
            ids = ["cached-%s-%d" % (k, i) for k in ("grpc", "json") for i in range(4)]
            self.assertTrue(wait_for(lambda: all(i in srv.logs() for i in ids)))
            srv.stop()
            req = {l["request_id"]: l for l in json_lines(srv.logs()) if l.get("type") == "request"}
            for i in ids:
                self.assertEqual(req[i]["rpc"], "tokend.v1.Tokend/Verify", req[i])
                self.assertEqual(req[i].get("app_id"), app, req[i])
                self.assertNotIn("user_id", req[i])

    def test_a_client_gone_before_the_answer_is_logged_whole(self):
        """The call outlives its request: the line still has the method and
        the path (kept when the call was deferred), and says CANCELLED."""
        with harness.Server() as srv:
            srv.create_app("demo")
            # a costly hash: the login is still on the pool when curl gives up
            srv.add_user("slow", "slow-password-1", pwhash_ops=4, pwhash_mem=128)
            srv.start("--threads", "1", *CHEAP)
            p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "0.1",
                                "-H", "content-type: application/json",
                                "-H", "x-request-id: gone-1", "--data",
                                json.dumps({"login_name": "slow", "password": "slow-password-1"}),
                                "http://127.0.0.1:%d/token/login?x=1" % srv.port],
                               capture_output=True)
            self.assertEqual(p.returncode, 28, p.stderr)   # timed out, connection closed
            # while the login hashes, new connections from another address
            # take every slot of the loop's peer texts
            for _ in range(70):
                srv.request("GET", "/healthz", source="127.0.0.2")
            self.assertTrue(wait_for(lambda: "gone-1" in srv.logs(), timeout=15))
            srv.stop()
            line = [l for l in json_lines(srv.logs()) if l.get("request_id") == "gone-1"][0]
            self.assertEqual(line["method"], "POST")
            self.assertEqual(line["path"], "/token/login")
            self.assertEqual(line["rpc"], "tokend.v1.Tokend/TokenByLogin")
            self.assertEqual(line["code"], "CANCELLED")
            self.assertEqual(line["client"], "127.0.0.1")   # kept, not the slot's text now

    def test_made_ids_count_in_hex(self):
        """A loop's made ids are its prefix and its count in lower-case hex,
        no leading zeros (past 0xf and 0xff here), the same in the reply's
        header and in the log line."""
        with harness.Server() as srv:
            srv.create_app("demo")
            srv.start("--threads", "1")
            ids = [srv.request("GET", "/healthz").header("x-request-id") for _ in range(280)]
            srv.stop()
            prefix = ids[0].rsplit("-", 1)[0] + "-"
            self.assertRegex(prefix, r"^[0-9a-f]{8}-0-$")
            counts = []
            for i in ids:
                self.assertTrue(i.startswith(prefix), i)
                self.assertRegex(i[len(prefix):], r"^[1-9a-f][0-9a-f]*$")
                counts.append(int(i[len(prefix):], 16))
            self.assertEqual(counts, list(range(counts[0], counts[0] + len(ids))))
            self.assertLess(counts[0], 0xf)
            logged = [l["request_id"] for l in json_lines(srv.logs())
                      if l.get("type") == "request" and l.get("request_id", "").startswith(prefix)]
            self.assertEqual(logged[-len(ids):], ids)

    def test_text_format_and_a_file(self):
        with harness.Server() as srv:
            srv.create_app("demo")
            path = os.path.join(srv.tmp, "access.log")
            srv.start("--log-format", "text", "--access-log", path)
            srv.request("GET", "/healthz", headers={"x-request-id": "first"})
            self.assertTrue(wait_for(lambda: "first" in read(path)))
            line = [l for l in read(path).splitlines() if " first " in l][0]
            self.assertRegex(line, r'^\S+Z request first 127\.0\.0\.1 "GET /healthz" '
                                   r'grpc\.health\.v1\.Health/Check json 200 OK [\d.]+ms in=0 '
                                   r'out=\d+ app=0 user=0$')
            self.assertNotIn("first", srv.logs())   # request lines go to the file only
            self.assertRegex(srv.logs(), r"\S+Z info start: tokend: tokend ")
            # logrotate: move the file, SIGHUP, new lines in a new file
            os.rename(path, path + ".1")
            os.kill(srv.proc.pid, signal.SIGHUP)
            time.sleep(0.2)
            srv.request("GET", "/healthz", headers={"x-request-id": "second"})
            self.assertTrue(wait_for(lambda: "second" in read(path)))
            self.assertNotIn("second", read(path + ".1"))

    def test_off(self):
        with harness.Server() as srv:
            srv.create_app("demo")
            srv.start("--access-log", "off")
            srv.request("GET", "/healthz", headers={"x-request-id": "quiet"})
            srv.stop()
            self.assertNotIn("quiet", srv.logs())
            self.assertIn('"event":"drain"', srv.logs())

    def test_bad_options(self):
        with harness.Server() as srv:
            srv.create_app("demo")
            p = srv.cli("serve", "--data", srv.data, "--log-format", "xml", check=False)
            self.assertEqual(p.returncode, 2)
            self.assertIn("give json or text", p.stderr)
            p = srv.cli("serve", "--data", srv.data, "--listen", "127.0.0.1:%d" % harness.free_port(),
                        "--access-log", "/proc/no/such/dir/log", check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("cannot open the access log", p.stderr)


class StalledLog(unittest.TestCase):
    def test_a_log_nobody_reads_drops_lines_not_requests(self):
        """stderr is a pipe nobody reads: once it and the ring are full, the
        writer thread is stuck in write(2), and the loops must go on."""
        srv = harness.Server()
        try:
            srv.create_app("demo")
            port = harness.free_port()
            proc = subprocess.Popen([harness.BIN, "serve", "--data", srv.data, "--listen",
                                     "127.0.0.1:%d" % port, "--threads", "1"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            try:
                conn = None
                deadline = time.monotonic() + 15
                while conn is None:
                    try:
                        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                        c.request("GET", "/healthz")
                        c.getresponse().read()
                        conn = c
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                t0 = time.monotonic()
                for i in range(4000):
                    conn.request("GET", "/healthz", headers={"x-request-id": "r%05d-" % i + "p" * 50})
                    r = conn.getresponse()
                    r.read()
                    self.assertEqual(r.status, 200)
                elapsed = time.monotonic() - t0
                conn.request("GET", "/metrics")
                body = conn.getresponse().read().decode()
                dropped = [float(l.split()[1]) for l in body.splitlines()
                           if l.startswith("tokend_log_lines_dropped_total ")]
                self.assertTrue(dropped and dropped[0] > 0, body[-2000:])
                self.assertLess(elapsed, 30)
                conn.close()
            finally:
                proc.kill()
                proc.wait()
                proc.stderr.close()
        finally:
            srv.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
