"""test_cluster_faults.py - cluster mode when PostgreSQL or a replica misbehaves.

Each class has its own throw-away PostgreSQL (pg_support.py).

  LongStatements  a snapshot's SELECT and init's COPY longer than the
                  10 s statement timeout of ordinary writes still finish
                  (a cluster of millions of records takes that long; here
                  one slow row, or a slow COPY trigger, stands in for them)
  ReplicaMapFull  a replica whose LMDB map fills while it applies the feed
                  (B with --map-size 1, 6000 users imported through A while
                  B is stopped) grows the map and catches up
  SharedThrottle  after `app rotate-key --cluster` and a restart of one node,
                  guesses spread over two nodes still get one limit
  FrozenDatabase  PostgreSQL stopped with SIGSTOP (it keeps its sockets, so
                  nothing fails on its own): a parked read ends at its 1 s,
                  a login under way gets its 503 in seconds, /healthz stops
                  calling the database up, a later login gets its 503 at
                  once, SIGTERM ends the node in seconds
  LostCommitAnswer  the connection breaks after PostgreSQL committed a write
                  but before tokend heard it (pg_support.CommitCutter): the
                  write is told as made (a login gets its token, which
                  verifies), not as a 503 whose retry finds the name taken
  IdleWriteEnds   a write's connection goes quiet after it took the write
                  lock, PostgreSQL never told: the transaction ends after
                  15 s idle, and the next write gets the lock
Exits 77 (ctest: skipped) when the PostgreSQL server binaries are missing.
"""
import base64
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_support  # noqa: E402
from harness import Server  # noqa: E402

PW = "correct horse battery"
CHEAP = ["--pwhash-ops", "1", "--pwhash-mem", "1"]
SLOW_S = 10.5   # past the 10 s statement timeout every connection gets


class PgCase(unittest.TestCase):
    """A throw-away PostgreSQL per test, and the nodes it made, closed after."""

    def setUp(self):
        self.pg = pg_support.PgServer()
        self.nodes = []

    def tearDown(self):
        pg_support.close_all(self.nodes, [self.pg])

    def node(self):
        n = Server()
        self.nodes.append(n)
        return n


class LongStatements(PgCase):
    def test_init_copy_longer_than_the_statement_timeout(self):
        # The schema first (an init of a throw-away directory), then an empty
        # cluster again, whose COPY takes SLOW_S (a statement trigger).
        self.node().cli("cluster", "init", "--data", self.node().data, "--cluster", self.pg.url)
        self.pg.psql("DELETE FROM tokend.kv; "
                     "CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$ "
                     "BEGIN PERFORM pg_sleep(%s); RETURN NULL; END $$; "
                     "CREATE TRIGGER slow BEFORE INSERT ON tokend.kv FOR EACH STATEMENT "
                     "EXECUTE FUNCTION public.slow()" % SLOW_S)
        a = self.node()
        a.create_app("demo")
        uid = a.add_user("alice", PW, pwhash_ops=1, pwhash_mem=1)
        t0 = time.monotonic()
        p = a.cli("cluster", "init", "--data", a.data, "--cluster", self.pg.url, check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("copied the data directory", p.stdout)
        self.assertGreater(time.monotonic() - t0, SLOW_S)
        self.pg.psql("DROP TRIGGER slow ON tokend.kv")
        a.start("--cluster", self.pg.url, "--workers", "2", "--threads", "1", *CHEAP)
        r = a.request("POST", "/token/id", {"user_id": uid, "password": PW})
        self.assertEqual(r.status, 200, r)   # and ordinary writes work as before

    def test_snapshot_longer_than_the_statement_timeout(self):
        a = self.node()
        a.create_app("demo")
        uid = a.add_user("alice", PW, pwhash_ops=1, pwhash_mem=1)
        a.cli("cluster", "init", "--data", a.data, "--cluster", self.pg.url)
        # A new node reads every row of kv in one statement; the token key's
        # row takes SLOW_S to read (a view over the table: the node only reads).
        self.pg.psql("ALTER TABLE tokend.kv RENAME TO kv_real; "
                     "CREATE FUNCTION public.slow(d smallint, k bytea, v bytea) RETURNS bytea "
                     "LANGUAGE plpgsql AS $$ BEGIN IF d = 0 AND k = 'key'::bytea THEN "
                     "PERFORM pg_sleep(%s); END IF; RETURN v; END $$; "
                     "CREATE VIEW tokend.kv AS SELECT db, key, public.slow(db, key, value) AS value "
                     "FROM tokend.kv_real" % SLOW_S)
        b = self.node()
        t0 = time.monotonic()
        try:
            b.start("--cluster", self.pg.url, "--workers", "2", "--threads", "1", *CHEAP)
        except AssertionError as e:
            self.fail("the node did not load the snapshot: %s" % str(e)[-600:])
        finally:
            self.pg.psql("DROP VIEW tokend.kv; ALTER TABLE tokend.kv_real RENAME TO kv")
        self.assertGreater(time.monotonic() - t0, SLOW_S)
        self.assertIn("loaded a snapshot", b.logs())
        a.start("--cluster", self.pg.url, "--workers", "2", "--threads", "1", *CHEAP)
        r = a.request("POST", "/token/id", {"user_id": uid, "password": PW})
        self.assertEqual(r.status, 200, r)
        tok = a.secret(r.json()["data"]["token"])
        admin = a.secret(a.cli("admin-token", "create", "--data", a.data, "--cluster",
                               self.pg.url).stdout.strip())
        r = b.request("POST", "/token/verify", {"token": tok}, headers={"access-token": admin})
        self.assertEqual((r.status, r.json()["data"]["user_id"]), (200, uid), r)


class ReplicaMapFull(PgCase):
    def test_replica_grows_its_map_while_following(self):
        a, b = self.node(), self.node()
        a.create_app("demo")
        uid = a.add_user("alice", PW, pwhash_ops=1, pwhash_mem=1)
        admin = a.secret(a.cli("admin-token", "create", "--data", a.data).stdout.strip())
        a.cli("cluster", "init", "--data", a.data, "--cluster", self.pg.url)
        a.start("--cluster", self.pg.url, "--workers", "2", "--threads", "1", *CHEAP)
        tiny = ["--cluster", self.pg.url, "--workers", "2", "--threads", "1", "--map-size", "1",
                *CHEAP]
        b.start(*tiny)
        r = b.request("POST", "/token/id", {"user_id": uid, "password": PW})
        self.assertEqual(r.status, 200, r)
        tok = b.secret(r.json()["data"]["token"])
        b.stop()
        # Far more than B's map has room for, in changes of 1000 users each.
        lines = "".join('{"name": "bulk%d", "email": "bulk%d.%s@example.com", "password": '
                        '"pw-%d-%s"}\n' % (i, i, "y" * 60, i, "x" * 40) for i in range(6000))
        a.cli("user", "import", "--data", a.data, "--cluster", self.pg.url, "--pwhash-ops", "1",
              "--pwhash-mem", "1", stdin=lines)
        r = a.request("POST", "/token/revoke", {}, headers={"access-token": tok})
        self.assertEqual(r.status, 200, r)
        last = int(self.pg.psql("SELECT last_seq FROM tokend.state"))
        b.start(*tiny)
        deadline = time.monotonic() + 20
        while True:   # (a replica 5 s behind answers 503, without the figures)
            h = b.request("GET", "/healthz").json().get("data") or {}
            if int(h.get("cluster", {}).get("applied_seq", 0)) >= last:
                break
            self.assertLess(time.monotonic(), deadline, "B stopped following: %s" % b.logs()[-600:])
            time.sleep(0.1)
        r = b.request("POST", "/token/verify", {"token": tok}, headers={"access-token": admin})
        self.assertEqual(r.status, 401, r)   # the revocation reached B
        r = b.request("POST", "/token/user", {"name": "bulk5999", "password": "pw-5999-" + "x" * 40})
        self.assertEqual(r.status, 200, r)
        b.secret(r.json()["data"]["token"])


class SharedThrottle(PgCase):
    def test_rotation_and_a_restart_keep_one_limit(self):
        a, b = Server(), Server()
        self.nodes += [a, b]
        a.create_app("demo")
        uid = a.add_user("alice", PW, pwhash_ops=1, pwhash_mem=1)
        a.cli("cluster", "init", "--data", a.data, "--cluster", self.pg.url)
        args = ["--cluster", self.pg.url, "--workers", "2", "--threads", "1", *CHEAP,
                "--throttle-account", "3", "--throttle-address", "1000"]
        a.start(*args)
        b.start(*args)
        p = a.cli("app", "rotate-key", "--data", a.data, "--cluster", self.pg.url)
        self.assertIn("token-hash key 1", p.stdout)
        b.stop()    # b starts again with the rotated ring; a still runs from before
        b.start(*args)
        got = [(a, b)[i % 2].request("POST", "/token/id", {"user_id": uid,
                                                          "password": "wrong guess %d" % i}).status
               for i in range(8)]
        self.assertEqual(got.count(401), 3, got)
        self.assertEqual(got.count(429), 5, got)


class FrozenDatabase(PgCase):
    def pg_pids(self):
        with open(os.path.join(self.pg.data, "postmaster.pid")) as f:
            top = int(f.readline())
        pids = [top]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == top:
                            pids.append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        return pids

    def test_a_frozen_database_does_not_hang_the_node(self):
        a = Server()
        self.nodes.append(a)
        a.create_app("demo")
        uid = a.add_user("alice", PW, pwhash_ops=1, pwhash_mem=1)
        admin = a.secret(a.cli("admin-token", "create", "--data", a.data).stdout.strip())
        a.cli("cluster", "init", "--data", a.data, "--cluster", self.pg.url)
        a.start("--cluster", self.pg.url, "--workers", "2", "--threads", "1", *CHEAP)
        r = a.request("POST", "/token/id", {"user_id": uid, "password": PW})
        self.assertEqual(r.status, 200, r)
        a.secret(r.json()["data"]["token"])
        unknown = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        pids = self.pg_pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.3)   # the feed is in a poll that gets no answer
            t0 = time.monotonic()
            r = a.request("POST", "/token/verify", {"token": unknown},
                          headers={"access-token": admin})
            self.assertEqual(r.status, 401, r)
            self.assertLess(time.monotonic() - t0, 2.0, "a parked read waited past its 1 s")
            # A login under way when the database went silent: its write's
            # connection is cut 3 s after the silence began, not after 15 s.
            t0 = time.monotonic()
            r = a.request("POST", "/token/id", {"user_id": uid, "password": PW})
            self.assertEqual(r.status, 503, r)
            self.assertIn("cluster database unavailable", r.json()["message"])
            self.assertLess(time.monotonic() - t0, 8.0, "a login waited out the 15 s hold")
            time.sleep(max(0.0, 3.5 - (time.monotonic() - t0)))
            r = a.request("GET", "/healthz")
            self.assertEqual(r.status, 200, r)   # reads go on: the balancer keeps the node
            self.assertFalse(r.json()["data"]["cluster"].get("database", False), r)
            # Once the database is known silent, a login is refused at once.
            t0 = time.monotonic()
            r = a.request("POST", "/token/id", {"user_id": uid, "password": PW})
            self.assertEqual(r.status, 503, r)
            self.assertIn("cluster database unavailable", r.json()["message"])
            self.assertLess(time.monotonic() - t0, 2.0, "a login waited on a silent database")
            t0 = time.monotonic()
            a.stop()
            self.assertLess(time.monotonic() - t0, 8.0, "SIGTERM waited on the frozen database")
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        a.start("--cluster", self.pg.url, "--workers", "2", "--threads", "1", *CHEAP)
        r = a.request("POST", "/token/id", {"user_id": uid, "password": PW})
        self.assertEqual(r.status, 200, r)
        a.secret(r.json()["data"]["token"])



class LostCommitAnswer(PgCase):
    def test_a_write_whose_commit_answer_is_lost_is_told_as_made(self):
        a = self.node()
        a.create_app("demo")
        uid = a.add_user("alice", PW, pwhash_ops=1, pwhash_mem=1)
        admin = a.secret(a.cli("admin-token", "create", "--data", a.data).stdout.strip())
        a.cli("cluster", "init", "--data", a.data, "--cluster", self.pg.url)
        with pg_support.CommitCutter(self.pg) as cut:
            a.start("--cluster", cut.url, "--workers", "2", "--threads", "1", *CHEAP)
            r = a.request("POST", "/token/id", {"user_id": uid, "password": PW})
            self.assertEqual(r.status, 200, r)
            a.secret(r.json()["data"]["token"])
            # a login: its session is committed, the answer lost
            cut.arm()
            r = a.request("POST", "/token/id", {"user_id": uid, "password": PW,
                                                "device_guid": "cut-1"})
            self.assertTrue(cut.fired.is_set(), "no COMMIT went through the proxy")
            self.assertEqual(r.status, 200, r)
            tok = a.secret(r.json()["data"]["token"])
            r = a.request("POST", "/token/verify", {"token": tok}, headers={"access-token": admin})
            self.assertEqual(r.status, 200, r)
            self.assertIn("change", a.logs())
            self.assertIn("was committed", a.logs())
            # a new account: made once, told as made, the name then taken
            cut.arm()
            r = a.request("POST", "/admin/user/create", {"name": "bob", "password": PW},
                          headers={"access-token": admin})
            self.assertTrue(cut.fired.is_set())
            self.assertEqual(r.status, 200, r)
            bob = r.json()["data"]["user_id"]
            r = a.request("POST", "/token/user", {"name": "bob", "password": PW})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["data"]["user_id"], bob)
            a.secret(r.json()["data"]["token"])
            # two logins at once, the first one's COMMIT answer lost while the
            # other waits for the cluster's write lock: both answered, soon
            # (the lookup must not wait for that lock: the other write, which
            # gets it first, then waits for this node's LMDB writer)
            import threading
            cut.arm()
            out = []
            threads = [threading.Thread(target=lambda g=g: out.append(a.request(
                "POST", "/token/id", {"user_id": uid, "password": PW, "device_guid": g},
                timeout=30))) for g in ("pair-1", "pair-2")]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            self.assertTrue(cut.fired.is_set())
            self.assertEqual([r.status for r in out], [200, 200], out)
            self.assertLess(time.monotonic() - t0, 5.0, "a write waited out a lock")
            for r in out:
                a.secret(r.json()["data"]["token"])
            # on the database: the records of both, once each
            self.assertEqual(self.pg.psql("SELECT count(*) FROM tokend.kv WHERE db IS NOT NULL "
                                          "AND position('bob'::bytea IN key) > 0"), "1")



class IdleWriteEnds(PgCase):
    def test_a_write_cut_off_silently_does_not_keep_the_write_lock(self):
        # The node's connection goes quiet right after its write took the
        # cluster's write lock, and PostgreSQL never hears that it went:
        # PostgreSQL ends that transaction after 15 s idle, so the lock is
        # free again (else every write would wait for it until the server's
        # keepalive, hours).
        a = self.node()
        a.create_app("demo")
        uid = a.add_user("alice", PW, pwhash_ops=1, pwhash_mem=1)
        a.cli("cluster", "init", "--data", a.data, "--cluster", self.pg.url)
        with pg_support.CommitCutter(self.pg) as cut:
            a.start("--cluster", cut.url, "--workers", "2", "--threads", "1", *CHEAP)
            cut.freeze()
            t0 = time.monotonic()
            # The node's watch cuts its side after 15 s, and its write tries
            # once more on a new connection: it gets the lock once
            # PostgreSQL has ended the idle transaction (else it would wait
            # out the 10 s lock timeout: 503).
            r = a.request("POST", "/token/id", {"user_id": uid, "password": PW}, timeout=60)
            took = time.monotonic() - t0
            self.assertTrue(cut.fired.is_set(), "no BEGIN went through the proxy")
            self.assertEqual(r.status, 200, (r, took))
            a.secret(r.json()["data"]["token"])
            self.assertEqual(self.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                          "state = 'idle in transaction'"), "0")
            r = a.request("POST", "/token/id", {"user_id": uid, "password": PW})
            self.assertEqual(r.status, 200, r)
            a.secret(r.json()["data"]["token"])


if __name__ == "__main__":
    if not pg_support.bindir():
        print("test_cluster_faults: SKIPPED: the PostgreSQL server binaries are not installed")
        sys.exit(77)
    unittest.main(verbosity=2)
