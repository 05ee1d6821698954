"""test_cluster_ops.py - operating a cluster: the write path's all-or-nothing,
key rotation, a node behind the change log's horizon, backups and restores.

Three nodes on one throw-away PostgreSQL (pg_support.py). The change log is
pruned hard for this test (the test-only environment variable
TOKEND_CLUSTER_KEEP="rows,seconds,every_ms": the newest 5 changes kept,
pruned every 200 ms), so a node away for a few changes falls behind it.

  01 a write whose COMMIT fails after tokend.write succeeded (a deferred
     trigger): 503, and nothing anywhere - not in kv, not in the log, not in
     any node's LMDB (the write and COMMIT are pipelined: one round trip)
  02 `app rotate-key --cluster` (refused without --cluster on a replica):
     new logins on every node get the new key pair and token-hash key, old
     tokens verify on every node; once no session uses the old key, the
     purge retires it on every node
  03 a stopped node, the log pruned past it: restarted, it loads a snapshot
     and serves every token (and not one revoked meanwhile)
  04 the same for a running node (SIGSTOP / SIGCONT): its feed reloads
  05 a CLI directory left behind the horizon: its next write reloads first
  06 a node's backup is a replica: `serve` and writes without --cluster are
     refused; restored and started with --cluster it catches up (a token
     revoked after the backup stays revoked, one made after it works)
  07 `restore --detach` + `cluster init` seed a new cluster (PostgreSQL lost)
  08 PostgreSQL restored from an older dump: a node ahead of it reloads it
Exits 77 (ctest: skipped) when the PostgreSQL server binaries are missing.
"""
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_support  # noqa: E402
from harness import Server  # noqa: E402
from test_metrics import scrape, value  # noqa: E402

PW = "correct horse battery"
CHEAP = ["--pwhash-ops", "1", "--pwhash-mem", "1"]
CHEAP_USER = ["--pwhash-ops", "1", "--pwhash-mem", "1"]
KEEP = "5,0,200"


class ClusterOps(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.environ["TOKEND_CLUSTER_KEEP"] = KEEP
        cls.pg = pg_support.PgServer()
        cls.extra = []           # more PostgreSQL servers, closed at the end
        cls.nodes = []
        one = Server()
        cls.nodes.append(one)
        one.create_app("demo")
        cls.uid = one.add_user("alice", PW, pwhash_ops=1, pwhash_mem=1)
        cls.admin = one.secret(one.cli("admin-token", "create", "--data", one.data).stdout.strip())
        one.cli("cluster", "init", "--data", one.data, "--cluster", cls.pg.url)
        for i in range(3):
            if i:
                cls.nodes.append(Server())
            # Node 2 is frozen with SIGSTOP in step 04: it must not be caught
            # holding the cluster's write lock in a purge then.
            cls.start(cls.nodes[i], purge=3600 if i == 1 else 1)

    @classmethod
    def tearDownClass(cls):
        pg_support.close_all(cls.nodes, [cls.pg] + cls.extra)

    # --- helpers ----------------------------------------------------------------

    @classmethod
    def start(cls, node, url=None, purge=1):
        node.start("--cluster", url or cls.pg.url, "--workers", "2", "--threads", "1",
                   "--purge-interval", str(purge), *CHEAP)

    def login(self, node, user_id=None, **extra):
        r = node.request("POST", "/token/id", {"user_id": user_id or self.uid, "password": PW,
                                               **extra})
        self.assertEqual(r.status, 200, r)
        d = r.json()["data"]
        node.secret(d["token"])
        return d

    def verify(self, node, token, admin=None):
        return node.request("POST", "/token/verify", {"token": token},
                            headers={"access-token": admin or self.admin})

    def revoke(self, node, token):
        r = node.request("POST", "/token/revoke", {}, headers={"access-token": token})
        self.assertEqual(r.status, 200, r)

    def cluster(self, node):
        return node.request("GET", "/healthz").json()["data"]["cluster"]

    def sql(self, q, pg=None):
        return (pg or self.pg).psql(q)

    def settle(self, nodes=None, pg=None):
        """Every node has applied the newest change."""
        last = int(self.sql("SELECT last_seq FROM tokend.state", pg))
        deadline = time.monotonic() + 10
        for n in nodes or self.nodes[:3]:
            while int(self.cluster(n).get("applied_seq", 0)) < last:
                self.assertLess(time.monotonic(), deadline, "node %d did not catch up" % n.port)
                time.sleep(0.05)
        return last

    def prune_past(self, seq):
        """Changes on node 1 until the log no longer holds change seq + 1."""
        deadline = time.monotonic() + 20
        while True:
            first = self.sql("SELECT coalesce(min(seq), 0) FROM tokend.changes")
            if int(first) > seq + 1:
                return
            self.assertLess(time.monotonic(), deadline, "the log was not pruned")
            self.login(self.nodes[0])
            time.sleep(0.05)

    # --- the steps ------------------------------------------------------------------

    def test_01_failed_commit_leaves_nothing(self):
        one, two = self.nodes[0], self.nodes[1]
        self.settle()
        before = self.sql("SELECT (SELECT last_seq FROM tokend.state), (SELECT count(*) FROM "
                          "tokend.kv), (SELECT coalesce(max(seq), 0) FROM tokend.changes)")
        applied = [self.cluster(n)["applied_seq"] for n in self.nodes[:3]]
        # The COMMIT fails after tokend.write has run and answered: a deferred
        # constraint trigger on the log raises at commit time.
        self.sql("CREATE FUNCTION public.fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                 "BEGIN RAISE EXCEPTION 'injected commit failure'; END $$; "
                 "CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON tokend.changes "
                 "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.fail_commit()")
        try:
            r = one.request("POST", "/user/register/v2", {"username": "ghost", "password": PW},
                            headers={"access-token": self.admin})
            self.assertEqual(r.status, 503, r)
            self.assertIn("cluster database unavailable", r.json()["message"])
            r = two.request("POST", "/token/id", {"user_id": self.uid, "password": PW})
            self.assertEqual(r.status, 503, r)
            p = one.cli("user", "add", "--data", one.data, "--cluster", self.pg.url, "--name",
                        "ghost2", *CHEAP_USER, stdin=PW + "\n", check=False)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("injected commit failure", one.logs() + p.stderr)
        finally:
            self.sql("DROP TRIGGER fail_commit ON tokend.changes; "
                     "DROP FUNCTION public.fail_commit()")
        after = self.sql("SELECT (SELECT last_seq FROM tokend.state), (SELECT count(*) FROM "
                         "tokend.kv), (SELECT coalesce(max(seq), 0) FROM tokend.changes)")
        self.assertEqual(after, before)
        self.assertEqual([self.cluster(n)["applied_seq"] for n in self.nodes[:3]], applied)
        for n in self.nodes[:3]:   # in no replica either: the names are free
            r = n.request("POST", "/token/user", {"name": "ghost", "password": PW})
            self.assertEqual(r.status, 401, r)
        r = one.request("POST", "/user/register/v2", {"username": "ghost", "password": PW},
                        headers={"access-token": self.admin})
        self.assertEqual(r.status, 200, r)
        one.cli("user", "add", "--data", one.data, "--cluster", self.pg.url, "--name", "ghost2",
                *CHEAP_USER, stdin=PW + "\n")
        for n in self.nodes[:3]:
            r = n.request("POST", "/token/user", {"name": "ghost2", "password": PW})
            self.assertEqual(r.status, 200, r)
            self.revoke(n, n.secret(r.json()["data"]["token"]))

    def test_02_key_rotation_on_every_node(self):
        nodes = self.nodes[:3]
        old = [self.login(n, device_guid="old-%d" % i) for i, n in enumerate(nodes)]
        self.assertEqual(len({d["public_key"] for d in old}), 1)
        for n in nodes:
            self.assertEqual(value(scrape(n)[0], "tokend_token_hash_keys"), 1)
        # A node's directory is a replica: without --cluster the CLI may not write it.
        one = nodes[0]
        p = one.cli("app", "rotate-key", "--data", one.data, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("replica of a cluster", p.stderr)
        cli = Server()   # any directory: the CLI bootstraps it, then writes through
        self.nodes.append(cli)
        self.cli_dir = cli
        type(self).cli_node = cli
        p = cli.cli("app", "rotate-key", "--data", cli.data, "--cluster", self.pg.url)
        self.assertIn("token-hash key 1", p.stdout)
        # Once a node's feed has applied the change (a NOTIFY away: a few ms),
        # a login there gets the new pair and key.
        self.settle()
        new = [self.login(n, device_guid="new-%d" % i) for i, n in enumerate(nodes)]
        self.assertEqual(len({d["public_key"] for d in new}), 1)
        self.assertNotEqual(new[0]["public_key"], old[0]["public_key"])
        for n in nodes:
            self.assertEqual(value(scrape(n)[0], "tokend_token_hash_keys"), 2)
        admin1 = cli.secret(cli.cli("admin-token", "create", "--data", cli.data, "--cluster",
                                    self.pg.url).stdout.strip())
        for n in nodes:   # every token on every node, with the admin tokens of both keys
            for d in old + new:
                for admin in (self.admin, admin1):
                    r = self.verify(n, d["token"], admin)
                    self.assertEqual(r.status, 200, (n.port, r))
                    self.assertEqual(r.json()["data"]["public_key"], d["public_key"])
            for d in old + new:
                r = n.request("POST", "/push/verify", {"push_token": d["push_token"]},
                              headers={"access-token": admin1})
                self.assertEqual(r.status, 200, r)
        # Retire key 0: end every session it hashed (the logins before, the
        # admin token of before); the purge of some node drops it from the
        # ring, and every node stops trying it.
        for i, d in enumerate(old):
            self.revoke(nodes[(i + 1) % 3], d["token"])
        out = cli.cli("admin-token", "list", "--data", cli.data, "--cluster", self.pg.url).stdout
        ids = [w for w in out.split() if len(w) == 16]
        for i in ids:
            cli.cli("admin-token", "revoke", "--data", cli.data, "--cluster", self.pg.url,
                    "--id", i)
        admin2 = cli.secret(cli.cli("admin-token", "create", "--data", cli.data, "--cluster",
                                    self.pg.url).stdout.strip())
        type(self).admin = admin2
        # Sessions from before the cluster (alice's of `cluster init`) hold key 0
        # too: none here but the admin token, revoked above.
        deadline = time.monotonic() + 15
        for n in nodes:
            while value(scrape(n)[0], "tokend_token_hash_keys") != 1:
                self.assertLess(time.monotonic(), deadline, "key 0 not retired on %d" % n.port)
                time.sleep(0.2)
        for n in nodes:
            for d in new:
                r = self.verify(n, d["token"], admin2)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["data"]["public_key"], d["public_key"])
            for d in old:
                self.assertEqual(self.verify(n, d["token"], admin2).status, 401)
        type(self).live = new

    def test_03_stopped_node_behind_the_horizon(self):
        three = self.nodes[2]
        seen = self.login(self.nodes[0])
        self.settle()
        three.stop()
        stopped_at = int(self.sql("SELECT last_seq FROM tokend.state"))
        self.revoke(self.nodes[1], seen["token"])   # revoked while it is away
        made = [self.login(self.nodes[i % 2]) for i in range(8)]
        self.prune_past(stopped_at)
        self.start(three)
        # The first read that misses waits for the feed's poll, which reloads.
        for d in made:
            r = self.verify(three, d["token"])
            self.assertEqual(r.status, 200, r)
        self.assertEqual(self.verify(three, seen["token"]).status, 401)
        self.assertIn("behind the change log's horizon", three.logs())
        self.assertGreaterEqual(int(self.cluster(three)["bootstraps"]), 1)
        self.settle()
        for d in self.live:
            self.assertEqual(self.verify(three, d["token"]).status, 200)

    def test_04_running_node_behind_the_horizon(self):
        two = self.nodes[1]
        seen = self.login(two)
        self.settle()
        boots = int(self.cluster(two)["bootstraps"])
        two.proc.send_signal(signal.SIGSTOP)
        try:
            at = int(self.sql("SELECT last_seq FROM tokend.state"))
            self.revoke(self.nodes[0], seen["token"])
            made = [self.login(self.nodes[0]) for _ in range(8)]
            self.prune_past(at)
        finally:
            two.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while int(self.cluster(two)["bootstraps"]) == boots:
            self.assertLess(time.monotonic(), deadline, "the running node did not reload")
            time.sleep(0.05)
        for d in made:
            self.assertEqual(self.verify(two, d["token"]).status, 200)
        self.assertEqual(self.verify(two, seen["token"]).status, 401)
        self.login(two)   # and it writes
        self.settle()

    def test_05_cli_directory_behind_the_horizon(self):
        cli = self.cli_node
        p = cli.cli("user", "show", "--data", cli.data, "--user", self.uid)
        at = int(self.sql("SELECT last_seq FROM tokend.state"))
        self.prune_past(at + 2)
        # a command that only reads cannot catch up past the horizon: it says so
        p = cli.cli("user", "show", "--data", cli.data, "--cluster", self.pg.url, "--user", self.uid)
        self.assertIn("no longer holds this directory's next change", p.stderr)
        self.assertIn("read as it stands", p.stderr)
        p = cli.cli("user", "add", "--data", cli.data, "--cluster", self.pg.url, "--name", "late",
                    *CHEAP_USER, stdin=PW + "\n")
        uid = int(p.stdout)
        self.assertIn("loading a snapshot before the write", p.stderr)
        for n in self.nodes[:3]:
            self.login(n, user_id=uid)

    def test_06_backup_of_a_node_is_a_replica(self):
        one = self.nodes[0]
        kept = self.login(one)
        dropped = self.login(one)
        out = os.path.join(one.tmp, "node1.mdb")
        p = one.cli("backup", "--data", one.data, "--out", out)
        self.assertIn("replica of cluster", p.stderr)
        self.assertIn("pg_dump", p.stderr)
        self.revoke(self.nodes[1], dropped["token"])   # after the backup
        later = self.login(self.nodes[1])
        r = Server(data_dir=None)
        self.nodes.append(r)
        p = r.cli("restore", "--from", out, "--data", r.data)
        self.assertIn("a replica of cluster", p.stderr)
        # Alone it would take writes no other node sees: refused.
        p = r.cli("serve", "--data", r.data, "--listen", "127.0.0.1:1", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is a replica of cluster", p.stderr)
        p = r.cli("user", "add", "--data", r.data, "--name", "split", *CHEAP_USER,
                  stdin=PW + "\n", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("replica of a cluster", p.stderr)
        # With --cluster it catches up: what was revoked since stays revoked.
        self.start(r, purge=3600)
        self.assertEqual(self.verify(r, kept["token"]).status, 200)
        self.assertEqual(self.verify(r, later["token"]).status, 200)
        self.assertEqual(self.verify(r, dropped["token"]).status, 401)
        self.settle(self.nodes[:3] + [r])
        r.stop()
        type(self).backup = out
        type(self).backed = kept

    def test_07_detach_seeds_a_new_cluster(self):
        pg2 = pg_support.PgServer()
        self.extra.append(pg2)
        d = Server(data_dir=None)
        self.nodes.append(d)
        p = d.cli("restore", "--from", self.backup, "--data", d.data, "--detach")
        self.assertIn("detached from cluster", p.stderr)
        # the old database refuses it now: single-node data, not its replica
        p = d.cli("user", "show", "--data", d.data, "--cluster", self.pg.url, "--user", self.uid,
                  check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("single-node data", p.stderr)
        out = d.cli("cluster", "init", "--data", d.data, "--cluster", pg2.url).stdout
        self.assertIn("copied the data directory", out)
        self.start(d, pg2.url)
        self.assertEqual(self.verify(d, self.backed["token"]).status, 200)
        self.login(d)
        d.stop()

    def test_08_database_restored_from_an_older_dump(self):
        one = self.nodes[0]
        dump = os.path.join(one.tmp, "tokend.sql")
        subprocess.run([os.path.join(self.pg.bin, "pg_dump"), "-d", self.pg.url, "-n", "tokend",
                        "-f", dump], check=True, capture_output=True, timeout=60)
        since = [self.login(one) for _ in range(2)]   # after the dump
        self.settle()
        for n in self.nodes[:3]:
            n.stop()
        self.sql("DROP SCHEMA tokend CASCADE")
        subprocess.run([os.path.join(self.pg.bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                        "-d", self.pg.url, "-f", dump], check=True, capture_output=True,
                       timeout=60)
        self.start(one)
        self.assertIn("was the database restored?", one.logs())
        # the database is the system of record: what it does not hold is gone
        for d in since:
            self.assertEqual(self.verify(one, d["token"]).status, 401)
        for d in self.live:
            self.assertEqual(self.verify(one, d["token"]).status, 200)
        self.login(one)
        self.settle([one])


if __name__ == "__main__":
    if not pg_support.bindir():
        print("test_cluster_ops: SKIPPED: the PostgreSQL server binaries (Debian package "
              "postgresql, /usr/lib/postgresql/*/bin) are not installed; tools/deps installs them")
        sys.exit(77)
    unittest.main(verbosity=2)
