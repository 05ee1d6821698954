"""test_metrics.py - GET /metrics (issue 11) and request ids, over real sockets.

The exposition is parsed with prometheus_client's own text parser
(Debian's python3-prometheus-client), not with a regular expression: a
malformed line, a family split in two or a bad histogram fails here.

Also closes issue 8's last item by counting hash work: unknown names and
wrong passwords of real accounts whose hashes have another cost than the
server's must do the same Argon2id work per attempt
(tokend_password_hash_work_total), whatever the wall time says.
"""
import os
import sys
import unittest
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import wire_support as ws  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

# The server hashes new passwords cheaply; the accounts were made at another
# (higher) cost, as after `user add --pwhash-*` or before a cost change.
SERVER_COST = ("--pwhash-ops", 1, "--pwhash-mem", 8)
ACCOUNT_COST = {"pwhash_ops": 2, "pwhash_mem": 12}
ACCOUNT_WORK = 2 * 12 * 1024      # KiB-passes of one check of such a hash
SERVER_WORK = 1 * 8 * 1024


def scrape(srv, port=None):
    """{(name, frozenset(labels)): value} of one scrape, and the families."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port or srv.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode("utf-8")
        assert r.status == 200, (r.status, body[:300])
        assert r.getheader("content-type").startswith("text/plain; version=0.0.4"), \
            r.getheader("content-type")
    finally:
        conn.close()
    families = list(text_string_to_metric_families(body))
    samples = {}
    for fam in families:
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, {f.name: f for f in families}


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class Metrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server()
        cls.app = cls.srv.create_app("demo")
        cls.alice = cls.srv.add_user("alice", "alice-password-1", **ACCOUNT_COST)
        cls.bob = cls.srv.add_user("bob", "bob-password-1", **ACCOUNT_COST)
        cls.admin = ws.admin_token(cls.srv)
        # 3 failed logins per account and address; then 429 (a throttled attempt).
        cls.srv.start("--workers", "1", "--throttle-account", "3", "--throttle-address", "1000",
                      *SERVER_COST)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.srv.close()

    def login(self, name, password, **headers):
        return self.srv.request("POST", "/token/login", {"login_name": name, "password": password},
                                headers=headers)

    def test_hash_work_is_the_same_for_unknown_names_and_wrong_passwords(self):
        before, _ = scrape(self.srv)
        work = value(before, "tokend_password_hash_work_total")
        per_attempt = {"unknown": [], "wrong": []}
        for i, (kind, name) in enumerate([("unknown", "nobody-%d" % i) for i in range(3)] +
                                         [("wrong", "bob")] * 2):
            r = self.login(name, "not-the-password-%d" % i)
            self.assertEqual(r.status, 401, r)
            after, _ = scrape(self.srv)
            now = value(after, "tokend_password_hash_work_total")
            per_attempt[kind].append(now - work)
            work = now
        # Every attempt, either path: the accounts' cost, not the server's.
        self.assertEqual(set(per_attempt["unknown"]), {ACCOUNT_WORK}, per_attempt)
        self.assertEqual(set(per_attempt["wrong"]), {ACCOUNT_WORK}, per_attempt)
        self.assertNotEqual(ACCOUNT_WORK, SERVER_WORK)

    def test_logins_hash_in_a_kept_area(self):
        # libsodium maps an Argon2id hash's memory afresh for every call;
        # tokend's worker serves that map from one area it keeps (src/crypto.c),
        # so the server does not fault in a hash's pages at every login.
        def minor_faults():
            with open("/proc/%d/stat" % self.srv.proc.pid) as f:
                return int(f.read().rsplit(")", 1)[1].split()[7])

        r = self.login("alice", "alice-password-1")   # rehashed at the server's cost
        self.assertEqual(r.status, 200, r)
        before = minor_faults()
        for _ in range(4):
            r = self.login("alice", "alice-password-1")
            self.assertEqual(r.status, 200, r)
        faults = minor_faults() - before
        # one check of an 8 MiB hash alone would fault 2048 pages afresh
        self.assertLess(faults, 1024, "%d page faults for 4 logins" % faults)
        kept = value(scrape(self.srv)[0], "tokend_password_memory_bytes")
        self.assertGreaterEqual(kept, 8 << 20)   # at least the area of one 8 MiB hash

    def test_idle_hash_memory_is_given_back(self):
        with harness.Server() as srv:
            srv.create_app("demo")
            srv.add_user("carol", "carol-password-1")
            srv.start("--workers", "1", "--purge-interval", "1", *SERVER_COST)
            # the start-up decoy hashes keep none: an idle server holds no hash memory
            self.assertEqual(value(scrape(srv)[0], "tokend_password_memory_bytes"), 0)
            r = srv.request("POST", "/token/login",
                            {"login_name": "carol", "password": "carol-password-1"})
            self.assertEqual(r.status, 200, r)
            deadline = time.monotonic() + 10
            seen = []
            while time.monotonic() < deadline:
                seen.append(value(scrape(srv)[0], "tokend_password_memory_bytes"))
                if seen[-1] == 0:
                    break
                time.sleep(0.2)
            # the login's area was kept, then unmapped after a purge interval unused
            self.assertGreaterEqual(seen[0], 8 << 20, seen)
            self.assertEqual(seen[-1], 0, seen)

    def test_password_checks_are_counted_with_their_time(self):
        before, fams = scrape(self.srv)
        self.assertEqual(fams["tokend_password_checks"].type, "counter")
        for name, password, status in [("alice", "alice-password-1", 200),
                                       ("nobody-else", "any-password-1", 401)]:
            r = self.login(name, password)
            self.assertEqual(r.status, status, r)
        after, _ = scrape(self.srv)

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        # a known name and an unknown one: a check each, at the accounts' cost
        self.assertEqual(delta("tokend_password_checks_total"), 2)
        wall = delta("tokend_password_check_seconds_total", clock="wall")
        cpu = delta("tokend_password_check_seconds_total", clock="cpu")
        self.assertGreater(cpu, 0)
        self.assertGreaterEqual(wall + 1e-3, cpu)  # one thread's CPU time is within its wall time
        self.assertLess(wall, 30)
        self.assertIn(("tokend_pool_rests_total", frozenset()), after)

    def test_requests_logins_and_the_rest(self):
        pb = ws.protos()
        before, _ = scrape(self.srv)
        # a success, then failures until the account's bucket is empty: a 429
        r = self.login("alice", "alice-password-1")
        self.assertEqual(r.status, 200, r)
        token = self.srv.secret(r.json()["data"]["token"])
        statuses = [self.login("alice", "wrong-%d" % i, **{"x-forwarded-for": "x"}).status
                    for i in range(4)]
        self.assertEqual(statuses, [401, 401, 401, 429])
        # Verify in every form: JSON, binary protobuf, gRPC-Web, native gRPC
        A = {"access-token": self.admin}
        self.assertEqual(self.srv.request("POST", "/token/verify", {"token": token},
                                          headers=A).status, 200)
        body = pb.tokend.VerifyRequest(token=token).SerializeToString()
        r = self.srv.request("POST", "/token/verify", body, headers=A,
                             content_type="application/x-protobuf")
        self.assertEqual(r.status, 200, r)
        r = self.srv.request("POST", "/tokend.v1.Tokend/Verify", ws.frame(body), headers=A,
                             content_type="application/grpc-web+proto")
        self.assertEqual(r.status, 200, r)
        status, hdrs, _ = ws.curl_grpc(self.srv.port, "/tokend.v1.Tokend/Verify", ws.frame(body),
                                       headers=A)
        self.assertEqual(hdrs.get("grpc-status"), "0", hdrs)
        status, hdrs, _ = ws.curl_grpc(self.srv.port, "/tokend.v1.Tokend/Verify",
                                       ws.frame(pb.tokend.VerifyRequest(token="x" * 43)
                                                .SerializeToString()), headers=A)
        self.assertEqual(hdrs.get("grpc-status"), "16", hdrs)
        self.assertEqual(self.srv.request("GET", "/no/such/path").status, 404)

        after, fams = scrape(self.srv)

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        verify = "tokend.v1.Tokend/Verify"
        for proto in ("json", "protobuf", "grpc-web"):
            self.assertEqual(delta("tokend_requests_total", rpc=verify, protocol=proto, code="OK"),
                             1, proto)
        self.assertEqual(delta("tokend_requests_total", rpc=verify, protocol="grpc", code="OK"), 1)
        self.assertEqual(delta("tokend_requests_total", rpc=verify, protocol="grpc",
                               code="UNAUTHENTICATED"), 1)
        self.assertEqual(delta("tokend_requests_total", rpc="none", protocol="json",
                               code="NOT_FOUND"), 1)
        login = "tokend.v1.Tokend/TokenByLogin"
        self.assertEqual(delta("tokend_requests_total", rpc=login, protocol="json", code="OK"), 1)
        self.assertEqual(delta("tokend_requests_total", rpc=login, protocol="json",
                               code="UNAUTHENTICATED"), 3)
        self.assertEqual(delta("tokend_requests_total", rpc=login, protocol="json",
                               code="RESOURCE_EXHAUSTED"), 1)
        self.assertEqual(delta("tokend_logins_total", result="success"), 1)
        self.assertEqual(delta("tokend_logins_total", result="failure"), 3)
        self.assertEqual(delta("tokend_logins_total", result="throttled"), 1)

        # the latency histogram of Verify: 5 more observations, buckets cumulative
        self.assertEqual(fams["tokend_request_duration_seconds"].type, "histogram")
        self.assertEqual(delta("tokend_request_duration_seconds_count", rpc=verify), 5)
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                         if k[0] == "tokend_request_duration_seconds_bucket" and
                         dict(k[1])["rpc"] == verify)
        self.assertEqual(buckets[-1], (float("inf"), value(
            after, "tokend_request_duration_seconds_count", rpc=verify)))
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        self.assertGreater(value(after, "tokend_request_duration_seconds_sum", rpc=verify), 0)

        # the rest is there, with sane values; not the per-app counts, which
        # the client port shows nobody (MetricsListen has them)
        for name in ("tokend_app_users", "tokend_app_sessions", "tokend_app_admin_tokens"):
            self.assertNotIn(name, fams)
        self.assertEqual(value(after, "tokend_pool_workers"), 1)
        self.assertEqual(value(after, "tokend_pool_queue_depth"), 0)
        self.assertIn(("tokend_pool_rejected_total", frozenset()), after)
        self.assertGreaterEqual(value(after, "tokend_connections_open"), 1)  # the scrape's
        self.assertIn(("tokend_streams_open", frozenset()), after)
        self.assertGreater(value(after, "tokend_lmdb_map_size_bytes"), 0)
        self.assertGreater(value(after, "tokend_lmdb_map_used_bytes"), 0)
        self.assertLessEqual(value(after, "tokend_lmdb_map_used_bytes"),
                             value(after, "tokend_lmdb_map_size_bytes"))
        self.assertEqual(value(after, "tokend_lmdb_readers_max"), 1024)
        self.assertIn(("tokend_lmdb_readers_used", frozenset()), after)
        self.assertGreater(value(after, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(value(after, "process_cpu_seconds_total"), 0)
        self.assertGreater(value(after, "process_start_time_seconds"), 1.7e9)
        self.assertEqual(fams["tokend_requests"].type, "counter")  # the parser drops _total

    def test_request_id(self):
        r = self.srv.request("GET", "/healthz", headers={"x-request-id": "trace-0123:abc"})
        self.assertEqual(r.header("x-request-id"), "trace-0123:abc")
        made = self.srv.request("GET", "/healthz").header("x-request-id")
        self.assertTrue(made and len(made) <= 64, made)
        self.assertNotEqual(made, self.srv.request("GET", "/healthz").header("x-request-id"))
        # too long, or with characters a log line should not carry: replaced
        for bad in ("x" * 65, "a b", 'a"b'):
            got = self.srv.request("GET", "/healthz", headers={"x-request-id": bad}).header(
                "x-request-id")
            self.assertTrue(got and got != bad, (bad, got))
        # HTTP/2 and native gRPC: a response header, i.e. gRPC initial metadata
        r = self.srv.request("GET", "/healthz", http2=True, headers={"x-request-id": "h2-id"})
        self.assertEqual(r.header("x-request-id"), "h2-id")
        pb = ws.protos()
        _, hdrs, _ = ws.curl_grpc(self.srv.port, "/grpc.health.v1.Health/Check",
                                  ws.frame(pb.health.HealthCheckRequest().SerializeToString()),
                                  headers={"x-request-id": "grpc-id"})
        self.assertEqual(hdrs.get("x-request-id"), "grpc-id")
        self.assertEqual(hdrs.get("grpc-status"), "0")


class DecoyOfTheApp(unittest.TestCase):
    def test_unknown_names_cost_what_the_apps_accounts_cost(self):
        # App a's accounts were made at one cost, app b's at another: an
        # unknown name in b is checked at b's cost, never at a cost only a's
        # accounts have (which would tell it is none of b's accounts).
        other_work = 1 * 16 * 1024
        with harness.Server() as srv:
            a = srv.create_app("a")
            b = srv.create_app("b")
            for i in range(4):
                srv.add_user("a%d" % i, "a-password-%d" % i, app=a, **ACCOUNT_COST)
            srv.add_user("b0", "b-password-0", app=b, pwhash_ops=1, pwhash_mem=16)
            srv.start("--workers", "1", *SERVER_COST)
            work = value(scrape(srv)[0], "tokend_password_hash_work_total")
            for app, per in ((b, other_work), (a, ACCOUNT_WORK)):
                for i in range(6):
                    r = srv.request("POST", "/token/login",
                                    {"login_name": "ghost-%d" % i, "password": "not-the-password"},
                                    headers={"app_id": str(app)})
                    self.assertEqual(r.status, 401, r)
                    now = value(scrape(srv)[0], "tokend_password_hash_work_total")
                    self.assertEqual(now - work, per, (app, i))
                    work = now


class MetricsListen(unittest.TestCase):
    def test_metrics_only_on_the_metrics_port(self):
        with harness.Server() as srv:
            srv.create_app("demo")
            mport = harness.free_port()
            srv.start("--metrics-listen", "127.0.0.1:%d" % mport)
            self.assertEqual(srv.request("GET", "/metrics").status, 404)
            # the 404 above was counted, and the scrape port serves nothing else.
            # The loop that answered counts right after writing the answer, and
            # another loop may serve the scrape: give it a moment (slow builds).
            deadline = time.monotonic() + 5
            while True:
                samples, _ = scrape(srv, mport)
                n = value(samples, "tokend_requests_total", rpc="none", protocol="json",
                          code="NOT_FOUND")
                if n == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(n, 1)
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=30)
            conn.request("GET", "/healthz")
            self.assertEqual(conn.getresponse().status, 404)
            conn.close()

    def test_users_and_sessions_follow_writes(self):
        with harness.Server() as srv:
            app = str(srv.create_app("demo"))
            admin = ws.admin_token(srv)
            mport = harness.free_port()
            srv.start("--metrics-listen", "127.0.0.1:%d" % mport, *SERVER_COST)
            before, fams = scrape(srv, mport)
            self.assertEqual(fams["tokend_app_users"].type, "gauge")
            self.assertEqual(value(before, "tokend_app_admin_tokens", app_id=app), 1)
            uid = srv.add_user("carol", "carol-password-1", **ACCOUNT_COST)
            r = srv.request("POST", "/token/login",
                            {"login_name": "carol", "password": "carol-password-1"})
            self.assertEqual(r.status, 200, r)
            token = srv.secret(r.json()["data"]["token"])
            mid, _ = scrape(srv, mport)
            self.assertEqual(value(mid, "tokend_app_users", app_id=app) -
                             value(before, "tokend_app_users", app_id=app), 1)
            self.assertEqual(value(mid, "tokend_app_sessions", app_id=app) -
                             value(before, "tokend_app_sessions", app_id=app), 1)
            r = srv.request("POST", "/user/delete", {}, headers={"access-token": admin,
                                                                 "user_id": str(uid)})
            self.assertEqual(r.status, 200, r)
            after, _ = scrape(srv, mport)
            self.assertEqual(value(after, "tokend_app_users", app_id=app),
                             value(before, "tokend_app_users", app_id=app))
            self.assertEqual(value(after, "tokend_app_sessions", app_id=app),
                             value(before, "tokend_app_sessions", app_id=app))
            self.assertEqual(srv.request("POST", "/token/verify", {"token": token},
                                         headers={"access-token": admin}).status, 401)

    def test_bad_metrics_listen_is_refused(self):
        with harness.Server() as srv:
            srv.create_app("demo")
            p = srv.cli("serve", "--data", srv.data, "--listen", "127.0.0.1:%d" % harness.free_port(),
                        "--metrics-listen", "nowhere", check=False)
            self.assertEqual(p.returncode, 2, p.stderr)   # a configuration error, as --listen's
            self.assertIn('bad value "nowhere" for --metrics-listen: give HOST:PORT', p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
