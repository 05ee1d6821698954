#!/usr/bin/python3
"""`tokend user import`: JSON lines with each kind of password (a password,
an Argon2id hash, a bcrypt hash) and bad lines; every imported user logs in
over the real protocol (JSON over HTTP/1.1 and HTTP/2, and gRPC-style
protobuf is the same handler); a bcrypt user's hash is Argon2id after the
first login; the decoy count includes the imported costs; --on-error stop
writes nothing of the batch that holds the bad line, and running the file
again with skip resumes."""
import json
import os
import re
import subprocess
import sys
import unittest
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, Server  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # noqa: E402  (bcrypt hashes to import, from libxcrypt as tokend uses)

PW = {"plain": "plain password 1", "argon": "argon password 2", "bcrypt": "bcrypt password 3",
      "bcrypty": "bcrypt-y password 4"}


def bcrypt(pw, prefix="$2b$"):
    h = crypt.crypt(pw, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
    return prefix + h[4:]


class Import(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        cls.app = cls.srv.create_app("imp")
        # An Argon2id hash made by tokend itself (user add, cheap cost), read back
        # from a first data directory.
        donor = Server()
        donor.create_app("donor")
        uid = donor.add_user("donor", PW["argon"], pwhash_ops=1, pwhash_mem=8)
        p = subprocess.run(["mdb_dump", "-p", "-s", "users", donor.data], capture_output=True,
                           text=True, timeout=30)
        m = re.search(r"\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}",
                      p.stdout)
        assert m, p.stdout
        cls.argon_hash = m.group(0)
        for v in PW.values():
            cls.srv.secret(v)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def run_import(self, lines, *args):
        text = "".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines)
        return subprocess.run([BIN, "user", "import", "--data", self.srv.data, "--pwhash-ops", "1",
                               "--pwhash-mem", "8", *args], input=text, capture_output=True,
                              text=True, timeout=120)

    def login(self, name, pw, http2=False):
        return self.srv.request("POST", "/token/user", {"name": name, "password": pw}, http2=http2)

    def test_import_then_login(self):
        lines = [
            {"name": "plainuser", "phone": "+1 555 0100", "email": "Plain@Example.org",
             "password": PW["plain"]},
            {"name": "argonuser", "password_hash": self.argon_hash},
            "{not json",
            {"name": "bcryptuser", "email": "b@example.org", "password_hash": bcrypt(PW["bcrypt"])},
            {"name": "bcryptyuser", "password_hash": bcrypt(PW["bcrypty"], "$2y$")},
            {"name": "nopassword"},
            {"name": "both", "password": "a long password", "password_hash": self.argon_hash},
            {"name": "badhash", "password_hash": "$1$abc$def"},
            {"name": "plainuser", "password": "another password"},      # taken (same batch)
            {"name": "bad name with spaces", "password": "a long password"},
            "",
        ]
        p = self.run_import(lines, "--on-error", "skip")
        self.assertEqual(p.returncode, 1, p.stderr)   # some lines were left out
        self.assertIn("imported 4 users from 11 lines; 6 left out", p.stdout)
        for n in (3, 6, 7, 8, 9, 10):
            self.assertRegex(p.stderr, r"(?m)^line %d: " % n)
        self.assertRegex(p.stderr, r"(?m)^line 9: name is already taken")
        for secret in PW.values():
            self.assertNotIn(secret, p.stderr + p.stdout)

        self.srv.start()
        users = {}
        for name, key in (("plainuser", "plain"), ("argonuser", "argon"),
                          ("bcryptuser", "bcrypt"), ("bcryptyuser", "bcrypty")):
            for http2 in (False, True):
                r = self.login(name, PW[key], http2=http2)
                self.assertEqual(r.status, 200, (name, r))
                users[name] = r.json()["data"]["user_id"]
            r = self.login(name, "wrong password 0")
            self.assertEqual(r.status, 401, (name, r))
        # other login names of an imported user
        r = self.srv.request("POST", "/token/login", {"login_name": "plain@example.org",
                                                      "password": PW["plain"]})
        self.assertEqual(r.status, 200, r)
        self.srv.stop()
        # bcrypt hashes became Argon2id at the first login; Argon2id ones stay
        for name in ("bcryptuser", "bcryptyuser", "argonuser", "plainuser"):
            show = self.srv.show_user(users[name])
            self.assertTrue(show["password"].startswith("argon2id "), (name, show))

    def test_look_alike_names_are_bad_lines_unless_allowed(self):
        # "Frank" reads as "frank": a bad line; a migration keeps both with
        # --allow-lookalikes, and a later name like them is still refused.
        lines = [{"name": "frank", "password_hash": self.argon_hash},
                 {"name": "Frank", "password_hash": self.argon_hash}]
        p = self.run_import(lines, "--on-error", "skip")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("imported 1 users from 2 lines; 1 left out", p.stdout)
        self.assertRegex(p.stderr, r"(?m)^line 2: a name that looks the same is already taken")
        lines = [{"name": "gina", "password_hash": self.argon_hash},
                 {"name": "Gina", "password_hash": self.argon_hash}]
        p = self.run_import(lines, "--allow-lookalikes")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("imported 2 users from 2 lines; 0 left out", p.stdout)
        p = self.run_import([{"name": "GINA", "password_hash": self.argon_hash}])
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertRegex(p.stderr, r"(?m)^line 1: a name that looks the same is already taken")
        self.srv.start()
        try:
            for name in ("frank", "gina", "Gina"):
                r = self.login(name, PW["argon"])
                self.assertEqual(r.status, 200, (name, r))
            self.assertEqual(self.login("Frank", PW["argon"]).status, 401)
        finally:
            self.srv.stop()

    def test_hashes_that_never_verify_or_take_days_are_refused(self):
        good = bcrypt("never used 1")
        abc = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        odd_salt = good[:28] + abc[abc.index(good[28]) | 1] + good[29:]
        odd_tail = good[:59] + abc[abc.index(good[59]) | 1]
        slow = good[:4] + "31" + good[6:]
        huge = re.sub(r"t=\d+", "t=4294967295", self.argon_hash)
        lines = [{"name": "oddsalt", "password_hash": odd_salt},
                 {"name": "oddtail", "password_hash": odd_tail},
                 {"name": "slowbcrypt", "password_hash": slow},
                 {"name": "hugeargon", "password_hash": huge},
                 '{"name":"cut","password":"SECRETPW6',
                 '{"name":"bare","password":SECRETPW3}']
        p = self.run_import(lines, "--on-error", "skip")
        self.assertIn("imported 0 users from 6 lines; 6 left out", p.stdout)
        for n in range(1, 7):
            self.assertRegex(p.stderr, r"(?m)^line %d: " % n)
        self.assertNotIn("SECRETPW", p.stderr + p.stdout)

    def test_a_bcrypt_password_past_72_bytes_is_not_rehashed(self):
        # bcrypt reads 72 bytes: a longer password that shares them logs in (as
        # on the system the hash came from), and must not become the password.
        real = "a" * 80
        p = self.run_import([{"name": "longpw", "password_hash": bcrypt(real)}])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv.start()
        try:
            r = self.login("longpw", "a" * 72 + "WRONGWRONG")
            self.assertEqual(r.status, 200, r)
            self.srv.secret(r.json()["data"]["token"])
            r = self.login("longpw", real)
            self.assertEqual(r.status, 200, r)
            uid = r.json()["data"]["user_id"]
            self.srv.secret(r.json()["data"]["token"])
        finally:
            self.srv.stop()
        self.assertTrue(self.srv.show_user(uid)["password"].startswith("bcrypt "))

    def test_stop_writes_nothing_of_the_bad_batch_and_skip_resumes(self):
        lines = [{"name": "stop%d" % i, "password_hash": self.argon_hash} for i in range(1500)]
        lines[1200] = {"name": "stop1200"}   # no password: in the second batch
        p = self.run_import(lines)            # --on-error stop (default)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("line 1201: password or password_hash is required", p.stderr)
        self.assertIn("imported 1000 users", p.stdout)
        self.assertIn("resume from line 1001", p.stdout)
        lines[1200] = {"name": "stop1200", "password_hash": self.argon_hash}
        p = self.run_import(lines, "--on-error", "skip")   # the first 1000 are there
        self.assertIn("imported 500 users from 1500 lines; 1000 left out", p.stdout)
        p = self.run_import(lines[:10], "--on-error", "stop")   # taken names stop too
        self.assertEqual(p.returncode, 1)
        self.assertIn("imported 0 users", p.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
