#!/usr/bin/python3
"""The command line: --help of every subcommand (both spellings), errors that
name the option and the fix, `tokend config check FILE`, and a config file
that `tokend serve` refuses or applies (the command line wins, at start and
at a SIGHUP reload)."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, Server  # noqa: E402
from wire_support import make_cert  # noqa: E402

COMMANDS = ["serve", "app create", "app list", "app rotate-key", "user add", "user import", "user show",
            "user disable", "user enable", "user logout", "user set-password", "admin-token create", "admin-token list", "admin-token revoke", "audit",
            "cluster init", "backup", "restore", "config check", "protoset",
            "version"]


def tokend(*args, stdin=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30,
                          input=stdin)


def write(dir_, text):
    path = os.path.join(dir_, "tokend.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


class Help(unittest.TestCase):
    def test_top_level_help_lists_every_command(self):
        for args in (["help"], ["--help"], ["-h"]):
            p = tokend(*args)
            self.assertEqual(p.returncode, 0, p.stderr)
            listed = [line[2:23].strip() for line in p.stdout.splitlines()
                      if line.startswith("  ") and not line.startswith("  tokend")]
            self.assertEqual(listed, COMMANDS, p.stdout)

    def test_every_subcommand_has_help_with_an_example(self):
        for cmd in COMMANDS:
            words = cmd.split()
            a, b = tokend(*words, "--help"), tokend("help", *words)
            for p in (a, b):
                self.assertEqual(p.returncode, 0, "%s: %s" % (cmd, p.stderr))
                self.assertEqual(p.stderr, "")
                self.assertTrue(p.stdout.startswith("usage: tokend %s" % cmd), p.stdout)
                self.assertIn("\nexample:\n  ", p.stdout)
                self.assertIn("  --help", p.stdout)
                example = p.stdout.split("\nexample:\n  ", 1)[1]
                self.assertIn("tokend " + cmd, example)
            self.assertEqual(a.stdout, b.stdout)
            self.assertEqual(tokend(*words, "-h").stdout, a.stdout)

    def test_serve_help_describes_every_option_with_its_limits(self):
        out = tokend("serve", "--help").stdout
        for opt, limits in (("--max-body BYTES", "64 to 16777216; default 65536; SIGHUP applies it"),
                            ("--threads N", "1 to 256; default: the online cores"),
                            ("--listen HOST:PORT", "default 127.0.0.1:8080"),
                            ("--throttle-account N", "0 to 1000000; default 10"),
                            ("--data DIR", "required")):
            line = [x for x in out.splitlines() if x.startswith("  " + opt)]
            self.assertEqual(len(line), 1, out)
            self.assertIn(limits, line[0])

    def test_a_group_lists_its_subcommands(self):
        p = tokend("admin-token", "--help")
        self.assertEqual(p.returncode, 0)
        for sub in ("create", "list", "revoke"):
            self.assertIn("admin-token " + sub, p.stdout)
        self.assertEqual(tokend("help", "user").returncode, 0)
        p = tokend("user")  # no subcommand: the list, as an error
        self.assertEqual(p.returncode, 2)
        self.assertIn("user add", p.stderr)

    def test_unknown_commands(self):
        for args in (["frob"], ["user", "frob"], ["help", "frob"]):
            p = tokend(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("`tokend help` lists them", p.stderr)
        p = tokend()
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage: tokend COMMAND", p.stderr)


class Errors(unittest.TestCase):
    """A wrong command line exits 2 with one message naming the option and a fix."""

    def check(self, args, *expected):
        p = tokend(*args)
        self.assertEqual(p.returncode, 2, "%s: %s" % (args, p.stderr))
        self.assertEqual(p.stdout, "")
        for e in expected:
            self.assertIn(e, p.stderr)
        return p.stderr

    def test_messages(self):
        with tempfile.TemporaryDirectory() as d:
            data = os.path.join(d, "data")
            self.check(["serve", "--data", data, "--max-body", "12"],
                       'bad value "12" for --max-body', "from 64 to 16777216",
                       "e.g. --max-body 65536", "`tokend serve --help`")
            self.check(["serve", "--data", data, "--threads", "-1"], "--threads", "from 1 to 256")
            self.check(["serve", "--data"], "--data needs a value", "--data DIR")
            self.check(["serve", "--data", "--listen", "127.0.0.1:1"], "--data needs a value")
            self.check(["serve", "--data", data, "--frob"], "unknown option --frob")
            self.check(["serve"], "--data is required", "add --data DIR")
            self.check(["app", "create", "--data", data], "--name is required", "--name NAME")
            self.check(["app", "create", "--data", data, "--name", "a", "--label", "x"],
                       "--label is not an option of this command", "`tokend app create --help`")
            self.check(["app", "create", "--data", data, "--name", "a", "--open-registration=1"],
                       "--open-registration takes no value")
            self.check(["app", "create", "--data", data, "--name", "a", "--encrypt-type", "5"],
                       "--encrypt-type", "from 0 to 4")
            self.check(["user", "show", "--data", data, "--user", "abc"],
                       'bad value "abc" for --user')
            self.check(["admin-token", "create", "--data", data, "--label", "x" * 129],
                       "--label", "at most 128 bytes")
            self.check(["admin-token", "revoke", "--data", data], "--id is required")
            self.check(["protoset", "a", "b"], "too many arguments", "usage: tokend protoset [FILE]")
            self.check(["config", "check"], "missing argument", "usage: tokend config check FILE")
            self.assertFalse(os.path.exists(data), "a refused command made the data directory")

    def test_name_equals_value_form(self):
        with tempfile.TemporaryDirectory() as d:
            p = tokend("app", "create", "--data=" + os.path.join(d, "data"), "--name=chat")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout.strip().isdigit(), p.stdout)


class ConfigCheck(unittest.TestCase):
    def test_a_password_in_the_cluster_url_is_not_printed(self):
        with tempfile.TemporaryDirectory() as d:
            path = write(d, "data /var/lib/tokend\ncluster postgresql://tok:s3cret-pw@db/t?"
                            "sslmode=require&password=0ther-pw\n")
            p = tokend("config", "check", path)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertNotIn("s3cret-pw", p.stdout)
            self.assertNotIn("0ther-pw", p.stdout)
            self.assertIn("cluster user=tok password=**** dbname=t host=db sslmode=require ",
                          p.stdout)

    def test_a_password_in_key_value_form_is_not_printed(self):
        with tempfile.TemporaryDirectory() as d:
            for conninfo in ("password=s3cret-pw", "postgresql:///t?password=s3cret%20pw",
                             "postgresql://tok:s3cret%40pw@db/t"):
                path = write(d, "data /var/lib/tokend\ncluster %s\n" % conninfo)
                p = tokend("config", "check", path)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertNotIn("s3cret", p.stdout)
                self.assertIn("password=**** ", p.stdout)

    def test_good_file_prints_the_effective_configuration(self):
        with tempfile.TemporaryDirectory() as d:
            cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
            make_cert(cert, key)   # config check loads the pair, as serve does
            path = write(d, "# tokend\n\ndata /var/lib/tokend\nlisten 0.0.0.0:8443   # all\n"
                            "max-body 1024\n  throttle-account 0\ntls-cert %s\ntls-key %s\n" % (cert, key))
            p = tokend("config", "check", path)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, "")
            lines = {x.split()[0]: x for x in p.stdout.splitlines() if not x.startswith("#")}
            self.assertRegex(lines["data"], r"^data /var/lib/tokend +# line 3$")
            self.assertRegex(lines["listen"], r"^listen 0.0.0.0:8443 +# line 4$")
            self.assertRegex(lines["max-body"], r"^max-body 1024 +# line 5, SIGHUP applies it$")
            self.assertRegex(lines["throttle-account"], r"^throttle-account 0 +# line 6")
            self.assertRegex(lines["deadline"], r"^deadline 30 +# default, SIGHUP applies it$")
            self.assertRegex(lines["queue"], r"^queue 256 +# default$")
            self.assertIn("threads", lines)
            self.assertIn("tls-key", lines)
            self.assertNotIn("config", lines)  # not an option of the file
            # What it prints is itself a good config file, with the same values.
            again = tokend("config", "check", write(d, p.stdout))
            self.assertEqual(again.returncode, 0, again.stderr)
            strip = lambda out: [x.split("#")[0].strip() for x in out.splitlines()
                                 if not x.startswith("#")]
            self.assertEqual(strip(again.stdout), strip(p.stdout))

    def test_empty_file_gives_the_defaults(self):
        with tempfile.TemporaryDirectory() as d:
            p = tokend("config", "check", write(d, ""))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("# data DIR  (not set: required, here or as --data)", p.stdout)
            self.assertRegex(p.stdout, r"\nlisten 127.0.0.1:8080 +# default\n")

    def test_every_bad_line_is_reported_with_its_number(self):
        with tempfile.TemporaryDirectory() as d:
            path = write(d, "\n".join([
                "# comment",                        # 1
                "listen 127.0.0.1:9000",            # 2
                "max-body lots",                    # 3
                "throttle-window 0   # too small",  # 4
                "frob 1",                           # 5
                "--data /x",                        # 6
                "deadline",                         # 7
                "config /x",                        # 8
                "listen 127.0.0.1:9001",            # 9
                "deadline 5 6",                     # 10
                "tls-cert /c.pem",                  # 11
                "max-streams 100",                  # 12: good
                "x" * 1100,                         # 13
            ]) + "\n")
            p = tokend("config", "check", path)
            self.assertEqual(p.returncode, 1)
            self.assertEqual(p.stdout, "")
            errs = p.stderr.splitlines()
            want = [
                (3, 'bad value "lots" for max-body: give a whole number from 64 to 16777216'),
                (4, 'bad value "0" for throttle-window: give a whole number from 1 to 86400'),
                (5, 'unknown option "frob"'),
                (6, 'write "data" without its dashes'),
                (7, 'deadline takes one value: "deadline SECONDS"'),
                (8, '"config" cannot be set in the config file'),
                (9, "listen is set again (first at line 2)"),
                (10, "deadline takes one value"),
                (13, "line longer than 1024 bytes"),
                (11, 'tls-cert and tls-key go together: add "tls-key FILE"'),
            ]
            self.assertEqual(len(errs), len(want) + 1, p.stderr)
            for line, (n, text) in zip(errs, want):
                self.assertTrue(line.startswith("tokend: %s:%d: " % (path, n)), line)
                self.assertIn(text, line)
            self.assertEqual(errs[-1], "tokend: %s: %d errors" % (path, len(want)))

    def test_a_long_path_is_cut_not_overrun(self):
        # The message's room is 512 bytes: a longer path is cut, not written past it.
        with tempfile.TemporaryDirectory() as d:
            deep = os.path.join(d, *["x" * 200] * 4)
            os.makedirs(deep)
            path = write(deep, "max-body 1\n")
            p = tokend("config", "check", path)
            self.assertEqual(p.returncode, 1, p.stderr)
            first = p.stderr.splitlines()[0]
            # what went wrong stays whole; the path loses its start, not its file name
            self.assertTrue(first.startswith("tokend: ..."), first)
            self.assertIn("x/tokend.conf:1: bad value \"1\" for max-body", first)
            self.assertLessEqual(len(first), len("tokend: ") + 511)

    def test_missing_file(self):
        p = tokend("config", "check", "/nonexistent/tokend.conf")
        self.assertEqual(p.returncode, 1)
        self.assertIn("/nonexistent/tokend.conf: cannot read the config file", p.stderr)


class Packaging(unittest.TestCase):
    """packaging/: the man page and the example configuration say what the
    option table (src/options.c) says."""
    REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def serve_options(self):
        out = tokend("serve", "--help").stdout
        return [x.split()[0] for x in out.splitlines()
                if x.startswith("  --") and x.split()[0] != "--help"]

    def test_the_man_page_names_every_command_and_option(self):
        with open(os.path.join(self.REPO, "packaging", "tokend.8")) as f:
            page = f.read().replace("\\-", "-")
        for cmd in COMMANDS:
            self.assertIn(".B tokend " + cmd.split()[0], page)
        names = set(self.serve_options())
        for cmd in COMMANDS:
            out = tokend(*cmd.split(), "--help").stdout
            names |= {x.split()[0] for x in out.splitlines() if x.startswith("  --")}
        names.discard("--help")
        for opt in sorted(names):
            self.assertTrue(opt in page, "%s is not in packaging/tokend.8" % opt)

    def test_the_example_configuration_is_good_and_names_every_option(self):
        path = os.path.join(self.REPO, "packaging", "tokend.conf")
        p = tokend("config", "check", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(path) as f:
            text = f.read()
        for opt in self.serve_options():
            if opt not in ("--data", "--config"):  # the unit gives --data
                self.assertRegex(text, r"\n#?%s " % opt[2:], opt)
        # Its commented values are the defaults: uncommented, they check the same.
        with tempfile.TemporaryDirectory() as d:
            uncommented = "".join(x[1:] if x.startswith("#") and not x.startswith("# ") and
                                  x.strip() != "#" else x for x in text.splitlines(True))
            # config check loads the certificate pair: a real one where the example names its files
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            make_cert(cert, key)
            uncommented = re.sub(r"(?m)^tls-cert \S+", "tls-cert " + cert, uncommented)
            uncommented = re.sub(r"(?m)^tls-key \S+", "tls-key " + key, uncommented)
            q = tokend("config", "check", write(d, uncommented))
            self.assertEqual(q.returncode, 0, q.stderr)
            for line in q.stdout.splitlines():
                name = line.split()[0]
                if name in ("threads", "workers", "tls-cert", "tls-key", "cluster", "metrics-listen",
                            "trusted-proxies", "#"):  # unset by default: examples
                    continue
                dflt = [x for x in p.stdout.splitlines() if x.startswith(name + " ")][0]
                self.assertEqual(line.split("#")[0].split(), dflt.split("#")[0].split(), name)


class AppList(unittest.TestCase):
    def test_each_app_with_its_counts(self):
        srv = Server()
        try:
            chat = srv.create_app("chat", ttl=3600)
            push = srv.create_app("push svc")
            for name in ("ann", "ben"):
                srv.add_user(name, "a-Long-password-1", app=chat, pwhash_ops=1, pwhash_mem=8)
            srv.cli("admin-token", "create", "--data", srv.data, "--app", push)
            srv.start("--pwhash-ops", "1", "--pwhash-mem", "8")
            r = srv.request("POST", "/token/user", {"name": "ann", "password": "a-Long-password-1"},
                            headers={"app_id": str(chat)})
            self.assertEqual(r.status, 200, r.body)
            srv.secret(r.json()["data"]["token"])
            p = srv.cli("app", "list", "--data", srv.data)
            lines = p.stdout.splitlines()
            self.assertEqual(lines[0].split(), ["app_id", "default", "ttl_s", "encrypt", "open",
                                                "users", "sessions", "admins", "name"])
            rows = [line.split(None, 8) for line in lines[1:]]
            self.assertEqual([r[0] for r in rows], [str(chat), str(push)])
            self.assertEqual(rows[0][1:3] + rows[0][5:], ["yes", "3600", "2", "1", "0", "chat"])
            self.assertEqual(rows[1][1:2] + rows[1][5:], ["no", "0", "0", "1", "push svc"])
        finally:
            srv.stop()
        empty = tempfile.mkdtemp()
        try:
            p = tokend("app", "list", "--data", empty)
            self.assertEqual((p.returncode, len(p.stdout.splitlines())), (0, 1), p.stderr)
        finally:
            import shutil
            shutil.rmtree(empty, ignore_errors=True)


class UserIncident(unittest.TestCase):
    """user disable / enable / logout / set-password: what an operator does
    for a compromised or departing account, against a running server, which
    sees each change on its next request; each is in the audit log."""
    PW, NEW = "first-Pass-7319", "second-Pass-2286"

    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        cls.srv.create_app("incident")
        cls.srv.start("--pwhash-ops", "1", "--pwhash-mem", "8")
        cls.admin = cls.srv.cli("admin-token", "create", "--data", cls.srv.data).stdout.strip()
        cls.srv.secret(cls.admin)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def user(self, name):
        return self.srv.add_user(name, self.PW, pwhash_ops=1, pwhash_mem=8)

    def login(self, uid, password):
        r = self.srv.request("POST", "/token/id", {"user_id": uid, "password": password})
        token = r.json()["data"]["token"] if r.status == 200 else None
        return r.status, self.srv.secret(token)

    def verify(self, token):
        return self.srv.request("POST", "/token/verify", {"token": token},
                                headers={"access-token": self.admin}).status

    def run_cli(self, *args, stdin=None):
        return self.srv.cli(*args, "--data", self.srv.data, stdin=stdin, check=False)

    def test_logout_revokes_every_session_at_once(self):
        uid = self.user("lou")
        tokens = [self.login(uid, self.PW)[1] for _ in range(3)]
        self.assertEqual([self.verify(t) for t in tokens], [200] * 3)
        p = self.run_cli("user", "logout", "--user", uid)
        self.assertEqual((p.returncode, p.stdout),
                         (0, "user %d: 3 sessions revoked (every device logs in again)\n" % uid), p.stderr)
        self.assertEqual([self.verify(t) for t in tokens], [401] * 3)
        self.assertEqual(self.login(uid, self.PW)[0], 200)   # may log in again

    def test_disable_then_enable(self):
        uid = self.user("dana")
        token = self.login(uid, self.PW)[1]
        p = self.run_cli("user", "disable", "--user", uid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("disabled", p.stdout)
        self.assertEqual(self.verify(token), 401)
        self.assertEqual(self.login(uid, self.PW)[0], 403)
        self.assertEqual(self.srv.show_user(uid)["disabled"], "yes")
        p = self.run_cli("user", "enable", "--user", uid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.login(uid, self.PW)[0], 200)
        audit = self.run_cli("audit").stdout
        self.assertRegex(audit, r"cli\s+user disable\s+user_id=%d" % uid)
        self.assertRegex(audit, r"cli\s+user enable\s+user_id=%d" % uid)

    def test_set_password(self):
        uid = self.user("sam")
        token = self.login(uid, self.PW)[1]
        self.srv.secret(self.NEW)
        p = self.run_cli("user", "set-password", "--user", uid, "--pwhash-ops", "1",
                         "--pwhash-mem", "8", stdin=self.NEW + "\n")
        self.assertEqual((p.returncode, p.stdout),
                         (0, "user %d: password set; its sessions are revoked\n" % uid), p.stderr)
        self.assertEqual(self.verify(token), 401)
        self.assertEqual(self.login(uid, self.PW)[0], 401)
        self.assertEqual(self.login(uid, self.NEW)[0], 200)
        self.assertEqual(self.srv.show_user(uid)["password"].split()[0], "argon2id")
        # a password the rules refuse, and none at all: exit 2, nothing changed
        p = self.run_cli("user", "set-password", "--user", uid, stdin="\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        p = self.run_cli("user", "set-password", "--user", uid, stdin="")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(self.login(uid, self.NEW)[0], 200)
        self.assertNotIn(self.NEW, self.run_cli("audit").stdout)

    def test_an_unknown_user(self):
        for cmd in (["disable"], ["enable"], ["logout"]):
            p = self.run_cli("user", *cmd, "--user", 987654)
            self.assertEqual((p.returncode, p.stdout), (1, ""), p.stderr)
            self.assertEqual(p.stderr, "tokend: user 987654: not found\n")


class ServeWithConfig(unittest.TestCase):
    def test_serve_refuses_a_bad_file_naming_the_line(self):
        srv = Server()
        try:
            path = write(srv.tmp, "listen 127.0.0.1:1\nmax-body 1\n")
            p = subprocess.run([BIN, "serve", "--data", srv.data, "--config", path],
                               capture_output=True, text=True, timeout=15)
            self.assertEqual(p.returncode, 2)
            self.assertIn("%s:2: bad value \"1\" for max-body" % path, p.stderr)
        finally:
            srv.close()

    def test_the_command_line_wins_at_start_and_at_reload(self):
        srv = Server()
        srv.create_app("a")
        conf = write(srv.tmp, "data /nonexistent\nmax-body 8192\ndeadline 20\n")
        body = {"user_id": 1, "password": "not-the-password", "pad": "x" * 2000}
        srv.start("--max-body", "1024", "--config", conf)  # --data from the harness wins too
        try:
            self.assertEqual(srv.request("POST", "/token/id", body).status, 413)
            write(srv.tmp, "max-body 8192\nmax-connections 5\n")
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "reloaded" not in srv.logs() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIn("max-body 1024", srv.logs())  # the command line's value stays
            self.assertIn("max-connections changed in %s: needs a restart" % conf, srv.logs())
            self.assertEqual(srv.request("POST", "/token/id", body).status, 413)
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
