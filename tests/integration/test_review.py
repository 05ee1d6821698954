#!/usr/bin/python3
"""Regression tests for the holes a review found in login, throttling and
revocation (issue 8), each driven over real sockets against the real server.

Where a race matters, the window is made wide with a slow password hash
(Argon2id at t=4, m=64 MiB: a few hundred ms per login), never with sleeps
inside the server: the test acts while the login's hash is being computed.

Loopback has many addresses (127.0.0.0/8): a client bound to 127.0.0.N is
another client as far as the server can tell."""
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server  # noqa: E402
from lifecycle_support import Api, admin_token, dump_lmdb, load_lmdb  # noqa: E402

PW = "right-password-1"
FAST = ("--pwhash-ops", "1", "--pwhash-mem", "8")
BAD = "invalid credentials: unknown user or wrong password"


def slow_login(srv, body, out):
    """Starts a login in a thread; its response lands in out[0]."""
    t = threading.Thread(target=lambda: out.append(srv.request("POST", "/token/id", body)))
    t.start()
    return t


class InFlightLogin(unittest.TestCase):
    """1. A login whose password is being hashed must not outlive a
    disable, delete or password change that commits meanwhile. (A user's
    own ChangePassword checks the same slow hash as the login, so it cannot
    be made to land inside the login's window here; it goes through the
    same re-check at commit as the admin's SetPassword, tested below and in
    test_login_guard.c.)"""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        cls.srv.create_app("a")
        # The server's own cost is low, so an admin's new password is
        # hashed at once, while each account's stored hash is slow to check.
        cls.srv.start(*FAST, "--workers", "4")
        cls.api = Api(cls.srv)
        cls.admin = admin_token(cls.srv)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.srv.close()

    def new_user(self, name):
        return self.srv.add_user(name, PW, pwhash_ops=4, pwhash_mem=64)

    def race(self, name, action):
        """Logs `name` in with a device, runs action(uid) while the hash
        runs; returns (uid, login response)."""
        uid = self.new_user(name)
        out = []
        t = slow_login(self.srv, {"user_id": uid, "password": PW, "device_guid": name + "-dev"}, out)
        time.sleep(0.05)
        action(uid)
        t.join()
        return uid, out[0]

    def assert_no_session(self, uid):
        st, env = self.api.call("POST", "/push/targets", {"user_id": uid}, token=self.admin)
        if st == 200:
            self.assertEqual(env["data"]["push_tokens"], [], "a push token outlived the change")
        st, env = self.api.call("GET", "/user/device/list", token=self.admin, user=uid)
        if st == 200:
            self.assertEqual(env["data"], [], "a device outlived the change")

    def test_disable_during_login(self):
        def disable(uid):
            st, env = self.api.call("PUT", "/user/disable", {"list": [uid]}, token=self.admin)
            self.assertEqual(st, 200, env)
        uid, r = self.race("inflight-disable", disable)
        self.assertEqual(r.status, 401, r.body)
        self.assertIn("account changed during the login", r.json()["message"])
        self.assert_no_session(uid)

    def test_delete_during_login(self):
        def delete(uid):
            st, env = self.api.call("DELETE", "/user/delete", {}, token=self.admin, user=uid)
            self.assertEqual(st, 200, env)
        uid, r = self.race("inflight-delete", delete)
        self.assertEqual(r.status, 401, r.body)
        st, env = self.api.call("POST", "/push/targets", {"user_id": uid}, token=self.admin)
        self.assertIn(st, (200, 404), env)
        if st == 200:
            self.assertEqual(env["data"]["push_tokens"], [])
        # An admin can always end every session of a user id, even a deleted one.
        st, env = self.api.call("POST", "/token/revoke_all", {}, token=self.admin, user=uid)
        self.assertEqual(st, 200, env)

    def test_admin_sets_password_during_login(self):
        def set_password(uid):
            st, env = self.api.call("POST", "/user/change_password_admin",
                                    {"password": "brand-new-password-2"}, token=self.admin,
                                    user=uid)
            self.assertEqual(st, 200, env)
        uid, r = self.race("inflight-setpw", set_password)
        self.assertEqual(r.status, 401, r.body)
        self.assert_no_session(uid)

    # The same class of mistake outside login: a user's own change decided
    # on a password check must not outlive a sign-out or a new password
    # that commits while that check runs.

    def own_change_race(self, name, path, body, action):
        uid = self.new_user(name)
        # The app's back end gets the user a token: no password, so the
        # stored (slow) hash is not upgraded to the server's cheap cost.
        r = self.srv.request("POST", "/token/id", {},
                             headers={"access-token": self.admin, "user_id": str(uid)})
        self.assertEqual(r.status, 200, r.body)
        tok = self.srv.secret(r.json()["data"]["token"])
        out = []
        t = threading.Thread(target=lambda: out.append(self.api.call("POST", path, body, token=tok)))
        t.start()
        time.sleep(0.05)
        action(uid)
        t.join()
        return uid, out[0]

    def test_change_password_after_sign_out_changes_nothing(self):
        def sign_out(uid):
            st, env = self.api.call("POST", "/token/revoke_all", {}, token=self.admin, user=uid)
            self.assertEqual(st, 200, env)
        uid, (st, env) = self.own_change_race(
            "race-chpw", "/user/change_password",
            {"old_password": PW, "new_password": "the-thiefs-password"}, sign_out)
        self.assertEqual(st, 401, env)
        self.assertIn("nothing was changed", env["message"])
        r = self.srv.request("POST", "/token/id", {"user_id": uid, "password": PW})
        self.assertEqual(r.status, 200, "the old password must still work: %r" % r.body)
        self.srv.secret(r.json()["data"]["token"])

    def test_delete_after_new_password_changes_nothing(self):
        def set_password(uid):
            st, env = self.api.call("POST", "/user/change_password_admin",
                                    {"password": "reset-by-admin-9"}, token=self.admin, user=uid)
            self.assertEqual(st, 200, env)
        self.srv.secret("reset-by-admin-9")
        uid, (st, env) = self.own_change_race("race-delete", "/user/delete", {"password": PW},
                                              set_password)
        self.assertEqual(st, 401, env)
        st, env = self.api.call("GET", "/admin/user/get?user_id=%d" % uid, token=self.admin)
        self.assertEqual(st, 200, "the account must still exist: %r" % env)

    def test_disabled_user_token_does_not_verify(self):
        uid = self.new_user("disabled-verify")
        r = self.srv.request("POST", "/token/id", {"user_id": uid, "password": PW})
        tok = self.srv.secret(r.json()["data"]["token"])
        self.assertEqual(self.api.call("PUT", "/user/disable", {"list": [uid]},
                                       token=self.admin)[0], 200)
        st, env = self.api.call("POST", "/token/verify", {"token": tok}, token=self.admin)
        self.assertEqual(st, 401, env)


class AdminLoginOfADisabledUser(unittest.TestCase):
    """A second review (session ten): an admin's login for a disabled user
    said 401 "the account changed during the login", which tells its
    back end to retry or suspect its own token; the password login says
    403 "user is disabled"."""

    def test_403_as_for_the_password_login(self):
        with Server() as srv:
            srv.create_app("a")
            uid = srv.add_user("off-duty", PW, pwhash_ops=1, pwhash_mem=8)
            srv.start(*FAST)
            api, admin = Api(srv), admin_token(srv)
            st, env = api.call("POST", "/token/id", {}, token=admin, user=uid)
            self.assertEqual(st, 200, env)
            srv.cli("user", "disable", "--data", srv.data, "--user", str(uid))
            for body, kw in (({}, {"token": admin, "user": uid}),
                             ({"user_id": uid, "password": PW}, {})):
                st, env = api.call("POST", "/token/id", body, **kw)
                self.assertEqual(st, 403, env)
                self.assertIn("user is disabled", env["message"])


class PasswordsDoNotLinger(unittest.TestCase):
    """A request's password is wiped from every copy tokend makes of it
    (the body h2o handed over, jansson's and protobuf-c's copies) once the
    login is answered: nothing left in the server's memory to find for one
    who can read it (a core dump, a swap file, a later bug). Checked by
    reading the server's memory (/proc/PID/mem of the test's own child)."""

    @staticmethod
    def copies(pid, needle):
        import re
        n = 0
        with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
            for line in maps:
                m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
                if "r" not in m.group(3) or "[vvar]" in line or "[vsyscall]" in line:
                    continue
                a, b = int(m.group(1), 16), int(m.group(2), 16)
                if b - a > 1 << 30:   # ASan's shadow and the like: reserved, not the heap
                    continue
                step = 1 << 24
                for at in range(a, b, step):   # in pieces that overlap by the needle
                    try:
                        mem.seek(at)
                        n += mem.read(min(step + len(needle) - 1, b - at)).count(needle)
                    except (OSError, OverflowError, ValueError):
                        continue
        return n

    def test_no_copy_after_the_login(self):
        import secrets
        with Server() as srv:
            srv.create_app("a")
            pw = "pw-" + secrets.token_hex(24)
            srv.add_user("mem-user", pw, pwhash_ops=1, pwhash_mem=8)
            srv.start(*FAST)
            pid = srv.proc.pid
            wrong = "wr-" + secrets.token_hex(24)

            def proto_login(password):   # TokenByNameRequest: name = 1, password = 2
                fields = [(1, b"mem-user"), (2, password.encode())]
                return b"".join(bytes([n << 3 | 2, len(v)]) + v for n, v in fields)
            cases = [
                ("JSON, flat", {"name": "mem-user", "password": pw}, "application/json", 200),
                ("refused: wrong Content-Type", {"name": "mem-user", "password": pw}, "text/plain", 415),
                ("refused: no such path", {"name": "mem-user", "password": pw}, "application/json", 404),
                ("JSON, through jansson", {"name": "mem-user", "password": pw, "platform": 1},
                 "application/json", 200),
                ("JSON, wrong password", {"name": "mem-user", "password": wrong, "platform": 1},
                 "application/json", 401),
                ("binary protobuf", proto_login(pw), "application/x-protobuf", 200),
            ]
            for label, body, ctype, want in cases:
                r = srv.request("POST", "/token/usr" if want == 404 else "/token/user", body,
                                content_type=ctype)
                self.assertEqual(r.status, want, (label, r.body))
                deadline = time.monotonic() + 5   # the worker's cleanup runs a moment later
                while time.monotonic() < deadline:
                    found = self.copies(pid, pw.encode()) + self.copies(pid, wrong.encode())
                    if not found:
                        break
                    time.sleep(0.1)
                self.assertEqual(found, 0, "%s: the password is still in the server's memory" % label)


class OneAccountOneBucket(unittest.TestCase):
    """2. The id, username, phone and email of one account share the
    account bucket (many clients' failures); unknown names have buckets of
    their own. A client's own bucket is the name's as given (session ten's
    review): were it the account's, a client that emptied it through the
    username would get 429 for the account's phone and 401 for anyone
    else's, learning whose phone it is."""

    def setUp(self):
        self.srv = Server()
        self.srv.create_app("a")
        self.uid = self.srv.add_user("forms", PW, phone="+8613800000001", email="forms@example.com",
                                     pwhash_ops=1, pwhash_mem=8)
        self.tries = [("/token/id", {"user_id": self.uid}), ("/token/user", {"name": "forms"}),
                      ("/token/login", {"login_name": "+8613800000001"}),
                      ("/token/login", {"login_name": "forms@example.com"})]

    def tearDown(self):
        self.srv.stop()
        self.srv.close()

    def guess(self, path, body, source=None):
        return self.srv.request("POST", path, dict(body, password="wrong-guess"), source=source)

    def test_login_forms_share_the_account_bucket(self):
        # a client's bucket of 2 per name; the account's, 20
        self.srv.start(*FAST, "--throttle-account", "2", "--throttle-address", "1000")
        for n, source in enumerate(("127.0.0.1", "127.0.0.2")):
            for path, body in self.tries:
                for _ in range(2):
                    r = self.guess(path, body, source)
                    self.assertEqual(r.status, 401, (path, source, r.body))
                r = self.guess(path, body, source)
                self.assertEqual(r.status, 429, (path, source, r.body))
        for path, body in self.tries:                 # 16 + 4 = 20 failures
            self.assertEqual(self.guess(path, body, "127.0.0.3").status, 401, path)
        for path, body in self.tries:                 # every form, from anywhere new
            r = self.guess(path, body, "127.0.0.4")
            self.assertEqual(r.status, 429, (path, r.body))
        # the owner from a known place is not locked out (NoLockout): here,
        # from nowhere known, the right password waits too
        r = self.srv.request("POST", "/token/id", {"user_id": self.uid, "password": PW},
                             source="127.0.0.5")
        self.assertEqual(r.status, 429, r.body)

    def test_a_client_learns_no_other_names_of_the_account(self):
        self.srv.start(*FAST, "--throttle-account", "3", "--throttle-address", "1000")
        for _ in range(3):
            self.assertEqual(self.guess("/token/user", {"name": "forms"}).status, 401)
        self.assertEqual(self.guess("/token/user", {"name": "forms"}).status, 429)
        for login_name in ("+8613800000001", "+8613800000099", "forms@example.com",
                           "nobody@example.com"):
            r = self.guess("/token/login", {"login_name": login_name})
            self.assertEqual((r.status, r.json()["message"]), (401, BAD), login_name)
        for uid in (self.uid, self.uid + 1000):
            r = self.guess("/token/id", {"user_id": uid})
            self.assertEqual((r.status, r.json()["message"]), (401, BAD), uid)

    def test_unknown_names_are_limited_too(self):
        with Server() as srv:
            srv.create_app("a")
            srv.start(*FAST, "--throttle-account", "3", "--throttle-address", "1000")
            for _ in range(3):
                r = srv.request("POST", "/token/user", {"name": "nobody-here", "password": "x-guess"})
                self.assertEqual(r.status, 401, r.body)
            r = srv.request("POST", "/token/user", {"name": "nobody-here", "password": "x-guess"})
            self.assertEqual(r.status, 429, r.body)


class PasswordChecksOutsideLogin(unittest.TestCase):
    """3. ChangePassword and DeleteUser check the password under the login
    limits: a stolen token does not give unlimited guesses."""

    def setUp(self):
        self.srv = Server()
        self.srv.create_app("a")
        self.uid = self.srv.add_user("victim", PW, pwhash_ops=1, pwhash_mem=8)
        self.srv.start(*FAST, "--throttle-account", "3", "--throttle-address", "1000")
        self.api = Api(self.srv)
        r = self.srv.request("POST", "/token/id", {"user_id": self.uid, "password": PW})
        self.tok = self.srv.secret(r.json()["data"]["token"])

    def tearDown(self):
        self.srv.stop()
        self.srv.close()

    def test_change_password_guesses_are_throttled(self):
        for i in range(3):
            st, env = self.api.call("POST", "/user/change_password",
                                    {"old_password": "guess-%d" % i, "new_password": "taken-over-1"},
                                    token=self.tok)
            self.assertEqual(st, 401, env)
        st, env = self.api.call("POST", "/user/change_password",
                                {"old_password": PW, "new_password": "taken-over-1"}, token=self.tok)
        self.assertEqual(st, 429, env)
        self.assertIn("too many wrong passwords", env["message"])
        # The same buckets as login: the guesses count there too.
        r = self.srv.request("POST", "/token/id", {"user_id": self.uid, "password": PW})
        self.assertEqual(r.status, 429, r.body)

    def test_delete_guesses_are_throttled(self):
        for i in range(3):
            st, env = self.api.call("POST", "/user/delete", {"password": "guess-%d" % i},
                                    token=self.tok)
            self.assertEqual(st, 401, env)
        st, env = self.api.call("POST", "/user/delete", {"password": PW}, token=self.tok)
        self.assertEqual(st, 429, env)
        st, env = self.api.call("GET", "/user/device/list", token=self.tok)
        self.assertEqual(st, 200, "the account must still exist")

    def test_right_password_gives_the_attempt_back(self):
        for i in range(5):
            st, env = self.api.call("POST", "/user/change_password",
                                    {"old_password": PW, "new_password": PW}, token=self.tok)
            self.assertEqual(st, 200, env)


class SharedDevice(unittest.TestCase):
    """4. When another user logs in on a device, the previous user's sessions
    on it end: a shared tablet keeps no live token of the user before."""

    def test_previous_users_session_ends_when_the_device_moves(self):
        with Server() as srv:
            srv.create_app("a")
            a = srv.add_user("tablet-a", PW, pwhash_ops=1, pwhash_mem=8)
            b = srv.add_user("tablet-b", PW, pwhash_ops=1, pwhash_mem=8)
            srv.start(*FAST)
            api = Api(srv)
            admin = admin_token(srv)
            ra = srv.request("POST", "/token/id", {"user_id": a, "password": PW,
                                                    "device_guid": "shared-tablet"})
            ta = srv.secret(ra.json()["data"]["token"])
            other = srv.request("POST", "/token/id", {"user_id": a, "password": PW,
                                                       "device_guid": "a-phone"})
            tphone = srv.secret(other.json()["data"]["token"])
            rb = srv.request("POST", "/token/id", {"user_id": b, "password": PW,
                                                    "device_guid": "shared-tablet"})
            self.assertEqual(rb.status, 200, rb.body)
            st, env = api.call("POST", "/token/verify", {"token": ta}, token=admin)
            self.assertEqual((st, env["message"]), (401, "invalid token"), env)
            # A's other device is untouched, and kick-all reaches everything A has.
            st, env = api.call("POST", "/token/verify", {"token": tphone}, token=admin)
            self.assertEqual(st, 200, env)
            self.assertEqual(api.call("POST", "/user/kick", {}, token=admin, user=a)[0], 200)
            self.assertEqual(api.call("POST", "/token/verify", {"token": tphone},
                                      token=admin)[0], 401)
            tb = srv.secret(rb.json()["data"]["token"])
            self.assertEqual(api.call("POST", "/token/verify", {"token": tb}, token=admin)[0], 200)


class NoLockout(unittest.TestCase):
    """5. Guesses spread over many addresses cannot lock the owner out: the
    account bucket does not count attempts from a known device or a known
    address (one that logged in to the account before)."""

    def test_distributed_guessing_does_not_lock_the_owner_out(self):
        with Server() as srv:
            srv.create_app("a")
            uid = srv.add_user("owner", PW, pwhash_ops=1, pwhash_mem=8)
            # 2 per account+address, so the account bucket holds 20.
            srv.start(*FAST, "--throttle-account", "2", "--throttle-address", "1000")
            body = {"user_id": uid, "password": PW}
            # Before the attack the owner logged in from home and on a phone.
            self.assertEqual(srv.request("POST", "/token/id", body, source="127.0.1.1").status, 200)
            r = srv.request("POST", "/token/id", dict(body, device_guid="owners-phone"),
                            source="127.0.1.2")
            self.assertEqual(r.status, 200, r.body)
            # Ten addresses, two wrong guesses each: the account bucket is empty.
            for i in range(10):
                for _ in range(2):
                    r = srv.request("POST", "/token/id", {"user_id": uid, "password": "guess"},
                                    source="127.0.2.%d" % (i + 1))
                    self.assertEqual(r.status, 401, r.body)
            r = srv.request("POST", "/token/id", {"user_id": uid, "password": "guess"},
                            source="127.0.2.99")
            self.assertEqual(r.status, 429, "the account bucket should be empty now")
            # A new address without a known device waits (the policy in the README) ...
            r = srv.request("POST", "/token/id", body, source="127.0.3.1")
            self.assertEqual(r.status, 429, r.body)
            # ... but the owner gets in from a known address, and on a known
            # device from an address never seen before.
            r = srv.request("POST", "/token/id", body, source="127.0.1.1")
            self.assertEqual(r.status, 200, r.body)
            r = srv.request("POST", "/token/id", dict(body, device_guid="owners-phone"),
                            source="127.0.3.2")
            self.assertEqual(r.status, 200, r.body)


class CommittedLoginIsNotADeadlineError(unittest.TestCase):
    """7. A login that committed is answered with its token, whatever the
    clock says by the time the answer is written; an answer of
    DEADLINE_EXCEEDED always means nothing was written."""

    def test_no_deadline_error_after_a_commit(self):
        with Server() as srv:
            srv.create_app("a")
            uid = srv.add_user("hurry", PW, pwhash_ops=1, pwhash_mem=8)
            srv.start(*FAST)
            api = Api(srv)
            admin = admin_token(srv)
            ok = 0
            for i in range(240):
                # A cheap hash: the login's time is mostly its durable commit
                # (a few ms here), so deadlines of 2 to 7 ms end around it.
                r = srv.request("POST", "/token/id", {"user_id": uid, "password": PW,
                                                      "device_guid": "hurry-%d" % i},
                                headers={"grpc-timeout": "%dm" % (2 + i % 6)})
                if r.status == 200:
                    srv.secret(r.json()["data"]["token"])
                    srv.secret(r.json()["data"]["push_token"])
                    ok += 1
                    continue
                self.assertEqual(r.status, 504, r.body)
                # Every login answered 200 left a device; one answered 504 did not.
                devices = api.call("GET", "/user/device/list", token=admin, user=uid)[1]["data"]
                self.assertEqual(len(devices), ok, "a login answered 504 left a session")
            devices = api.call("GET", "/user/device/list", token=admin, user=uid)[1]["data"]
            self.assertEqual(len(devices), ok)


class Smaller(unittest.TestCase):
    """8. Purge ends push tokens; open registration is limited per address;
    user listing has a cursor; duplicate identity headers are refused."""

    def test_purged_session_ends_the_push_token(self):
        with Server() as srv:
            srv.create_app("a", ttl=1)
            uid = srv.add_user("short", PW, pwhash_ops=1, pwhash_mem=8)
            srv.start(*FAST, "--purge-interval", "1")
            api = Api(srv)
            admin = admin_token(srv)
            r = srv.request("POST", "/token/id", {"user_id": uid, "password": PW,
                                                  "device_guid": "short-phone"})
            push = srv.secret(r.json()["data"]["push_token"])
            srv.secret(r.json()["data"]["token"])
            st, env = api.call("POST", "/push/targets", {"user_id": uid}, token=admin)
            self.assertEqual(env["data"]["push_tokens"], [push])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                st, env = api.call("POST", "/push/targets", {"user_id": uid}, token=admin)
                if not env["data"]["push_tokens"]:
                    break
                time.sleep(0.2)
            self.assertEqual(env["data"]["push_tokens"], [], "the purge left the push token")
            st, env = api.call("POST", "/push/verify", {"push_token": push}, token=admin)
            self.assertEqual(st, 401, env)

    def test_an_expired_session_ends_its_push_targets_before_the_purge(self):
        # A device is a push target while its user is signed in there: an
        # expired session is not, though the purge (60 s here) has not come.
        with Server() as srv:
            srv.create_app("a", ttl=2)
            uid = srv.add_user("brief", PW, pwhash_ops=1, pwhash_mem=8)
            srv.start(*FAST, "--purge-interval", "60")
            api = Api(srv)
            admin = admin_token(srv)
            r = srv.request("POST", "/token/id", {"user_id": uid, "password": PW,
                                                  "device_guid": "brief-phone"})
            self.assertEqual(r.status, 200, r.body)
            push = srv.secret(r.json()["data"]["push_token"])
            token = srv.secret(r.json()["data"]["token"])
            st, env = api.call("POST", "/user/token/bind", {"device_sn": 1, "device_token": "apns-brief",
                                                           "notifier_name": "apns"}, token=token)
            self.assertEqual(st, 200, env)
            st, env = api.call("POST", "/push/targets", {"user_id": uid}, token=admin)
            self.assertEqual(env["data"]["push_tokens"], [push])
            self.assertEqual(len(env["data"]["device_tokens"]), 1)
            self.assertEqual(api.call("POST", "/push/verify", {"push_token": push}, token=admin)[0], 200)
            time.sleep(2.5)
            st, env = api.call("POST", "/push/verify", {"push_token": push}, token=admin)
            self.assertEqual((st, env["message"]), (401, "push_token expired"))
            st, env = api.call("POST", "/push/targets", {"user_id": uid}, token=admin)
            self.assertEqual(st, 200, env)
            self.assertEqual(env["data"]["push_tokens"], [])
            self.assertEqual(env["data"]["device_tokens"], [])

    def test_logout_all_tells_nothing_of_another_apps_user(self):
        # An admin may end the sessions of any user id of its app, deleted
        # ones too; another app's user must answer as a missing one does,
        # and keep their sessions.
        with Server() as srv:
            a = srv.create_app("a")
            b = srv.create_app("b")
            theirs = srv.add_user("theirs", PW, app=b, pwhash_ops=1, pwhash_mem=8)
            admin_a, admin_b = admin_token(srv, str(a)), admin_token(srv, str(b))
            srv.start(*FAST)
            api = Api(srv)
            r = srv.request("POST", "/token/id", {"user_id": theirs, "password": PW}, headers={"app_id": str(b)})
            self.assertEqual(r.status, 200, r.body)
            token = srv.secret(r.json()["data"]["token"])
            missing = api.call("POST", "/token/revoke_all", {}, token=admin_a, user=99999)
            other = api.call("POST", "/token/revoke_all", {}, token=admin_a, user=theirs)
            self.assertEqual(other, missing)
            self.assertEqual(other[0], 200)
            st, env = api.call("POST", "/token/verify", {"token": token}, token=admin_b)
            self.assertEqual(st, 200, env)

    def test_open_registration_is_limited_per_address(self):
        with Server() as srv:
            srv.cli("app", "create", "--data", srv.data, "--name", "open", "--open-registration")
            srv.start(*FAST, "--throttle-account", "10", "--throttle-address", "3")
            for i in range(3):
                r = srv.request("POST", "/user/register/v2",
                                {"username": "signup%d" % i, "password": PW}, source="127.0.4.1")
                self.assertEqual(r.status, 200, r.body)
            r = srv.request("POST", "/user/register/v2", {"username": "signup9", "password": PW},
                            source="127.0.4.1")
            self.assertEqual(r.status, 429, r.body)
            self.assertIsNotNone(r.header("retry-after"))
            r = srv.request("POST", "/user/register/v2", {"username": "signup9", "password": PW},
                            source="127.0.4.2")
            self.assertEqual(r.status, 200, r.body)

    def test_names_that_hide_characters_are_refused(self):
        # Two accounts must not read the same: a zero-width space, a soft
        # hyphen or a direction mark inside a name or an email is refused
        # when the account is made, over the wire; an emoji's variation
        # selector is not.
        with Server() as srv:
            srv.create_app("a")
            admin = admin_token(srv)
            srv.start(*FAST)
            h = {"access-token": admin}
            r = srv.request("POST", "/admin/user/create",
                            {"name": "bob", "email": "bob@example.com", "password": PW}, headers=h)
            self.assertEqual(r.status, 200, r.body)
            for fields in ({"name": "bob2", "email": "bob\u200b@example.com"},
                           {"name": "b\u00adob"},
                           {"name": "bob\u200f"},
                           {"name": "bob3", "email": "bob@exa\u202emple.com"}):
                r = srv.request("POST", "/admin/user/create", dict(fields, password=PW), headers=h)
                self.assertEqual(r.status, 400, (fields, r.body))
                self.assertIn("invisible", r.json()["message"], fields)
            r = srv.request("POST", "/user/register/v2", {"username": "b\u00adob", "password": PW},
                            headers=h)
            self.assertEqual(r.status, 400, r.body)
            r = srv.request("POST", "/admin/user/create", {"name": "bob\u2764\ufe0f", "password": PW},
                            headers=h)
            self.assertEqual(r.status, 200, r.body)

    def test_one_name_in_every_unicode_form(self):
        # A name is kept in one canonical form (fullwidth letters at their
        # usual width, then NFC; emails lower-cased in every script), so
        # the forms a keyboard or a system sends of it find one account.
        with Server() as srv:
            srv.create_app("a")
            admin = admin_token(srv)
            srv.start(*FAST)
            h = {"access-token": admin}
            # made with a decomposed é (e + U+0301) and an upper-case É
            r = srv.request("POST", "/admin/user/create",
                            {"name": "Jose\u0301", "email": "JOS\u00c9@Example.com",
                             "password": PW}, headers=h)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["data"]["name"], "Jos\u00e9")
            self.assertEqual(r.json()["data"]["email"], "jos\u00e9@example.com")
            uid = r.json()["data"]["user_id"]
            for name in ("Jos\u00e9", "Jose\u0301", "\uff2a\uff4f\uff53\u00e9"):
                r = srv.request("POST", "/token/user", {"name": name, "password": PW})
                self.assertEqual(r.status, 200, (name, r.body))
                self.assertEqual(r.json()["data"]["user_id"], uid, name)
            for login in ("jos\u00e9@example.com", "JOSE\u0301@EXAMPLE.COM",
                          "\uff4a\uff4f\uff53\u00e9\uff20example.com"):
                r = srv.request("POST", "/token/login", {"login_name": login, "password": PW})
                self.assertEqual(r.status, 200, (login, r.body))
                self.assertEqual(r.json()["data"]["user_id"], uid, login)
            # another form of the name is the same name: taken
            r = srv.request("POST", "/admin/user/create", {"name": "Jos\u00e9", "password": PW},
                            headers=h)
            self.assertEqual(r.status, 409, r.body)
            r = srv.request("POST", "/user/register/v2",
                            {"username": "\uff2a\uff4f\uff53\uff45\u0301", "password": PW},
                            headers=h)
            self.assertEqual(r.status, 409, r.body)
            # a sign-up is answered with the name as stored
            r = srv.request("POST", "/user/register/v2",
                            {"username": "\uff2d\uff41\uff52\uff49\uff41", "password": PW},
                            headers=h)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["data"]["username"], "Maria")
            # letters of scripts that look alike are not mixed in a new name
            for name, scripts in (("\u0430lice", "Latin and Cyrillic"),
                                  ("p\u03b1ypal", "Latin and Greek")):
                r = srv.request("POST", "/admin/user/create", {"name": name, "password": PW},
                                headers=h)
                self.assertEqual(r.status, 400, (name, r.body))
                self.assertIn(scripts, r.json()["message"])
                r = srv.request("POST", "/user/register/v2", {"username": name, "password": PW},
                                headers=h)
                self.assertEqual(r.status, 400, (name, r.body))
            r = srv.request("POST", "/admin/user/create",
                            {"name": "\u0418\u0432\u0430\u043d_2", "password": PW}, headers=h)
            self.assertEqual(r.status, 200, r.body)

    def test_a_name_that_looks_like_a_taken_one_is_taken(self):
        # Another case, a capital I for an l, a digit for a letter, a whole
        # name in look-alike letters of another script: each reads as the
        # account there, so none is a new account's name (UTS #39 skeletons).
        taken = "a name that looks the same is already taken in this app"
        with Server() as srv:
            srv.create_app("a")
            srv.start(*FAST)
            admin = admin_token(srv)
            h = {"access-token": admin}
            ids = {}
            for name in ("alice", "ape", "bob", "Ivan"):
                r = srv.request("POST", "/admin/user/create", {"name": name, "password": PW},
                                headers=h)
                self.assertEqual(r.status, 200, r.body)
                ids[name] = r.json()["data"]["user_id"]
            for name in ("Alice", "ALICE", "AIice", "a1ice", "\u0430\u0440\u0435", "lvan", "1van"):
                r = srv.request("POST", "/admin/user/create", {"name": name, "password": PW},
                                headers=h)
                self.assertEqual(r.status, 409, (name, r.body))
                self.assertEqual(r.json()["message"], taken)
                r = srv.request("POST", "/user/register/v2", {"username": name, "password": PW},
                                headers=h)
                self.assertEqual(r.status, 409, (name, r.body))
            # a rename to another's look-alike is refused, to one's own is not
            r = srv.request("POST", "/admin/user/update", {"user_id": ids["bob"], "name": "Alice"},
                            headers=h)
            self.assertEqual(r.status, 409, r.body)
            self.assertIn("looks the same", r.json()["message"])
            r = srv.request("POST", "/admin/user/update", {"user_id": ids["alice"], "name": "Alice"},
                            headers=h)
            self.assertEqual(r.status, 200, r.body)
            # names keep their case: the account logs in by the name it has
            r = srv.request("POST", "/token/user", {"name": "Alice", "password": PW})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["data"]["user_id"], ids["alice"])
            r = srv.request("POST", "/token/user", {"name": "alice", "password": PW})
            self.assertEqual(r.status, 401, r.body)
            # a deleted account's look-alikes are free again
            r = srv.request("POST", "/user/delete", {}, headers=dict(h, user_id=str(ids["ape"])))
            self.assertEqual(r.status, 200, r.body)
            r = srv.request("POST", "/admin/user/create", {"name": "\u0430\u0440\u0435",
                                                           "password": PW}, headers=h)
            self.assertEqual(r.status, 200, r.body)
            # names unlike any are made as before
            r = srv.request("POST", "/admin/user/create", {"name": "alicia", "password": PW},
                            headers=h)
            self.assertEqual(r.status, 200, r.body)

    def test_accounts_named_before_names_were_canonical(self):
        # An older tokend kept a name's bytes as given (an email's ASCII
        # lower-cased): its index entries for "Jose" + U+0301 and for
        # "josÉ@example.com" still find their account, by those bytes, also
        # once another account has the canonical form of the name.
        with Server() as srv:
            srv.create_app("a")
            uid = srv.add_user("Old", PW, pwhash_ops=1, pwhash_mem=8)
            key, value = next((k, v) for k, v in dump_lmdb(srv.data)["logins"]
                              if k.endswith(b"nOld"))
            app = key[:8]
            load_lmdb(srv.data, "logins",
                      [(app + b"n" + "Jose\u0301".encode(), value),
                       (app + b"e" + "jos\u00c9@example.com".encode(), value)])
            srv.start(*FAST)
            r = srv.request("POST", "/token/user", {"name": "Jose\u0301", "password": PW})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["data"]["user_id"], uid)
            r = srv.request("POST", "/token/login",
                            {"login_name": "JOS\u00c9@EXAMPLE.COM", "password": PW})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["data"]["user_id"], uid)
            # the canonical form is another key, which no account has
            r = srv.request("POST", "/token/user", {"name": "Jos\u00e9", "password": PW})
            self.assertEqual(r.status, 401, r.body)
            # a new account may take it; each login still finds its own account
            admin = admin_token(srv)
            r = srv.request("POST", "/admin/user/create", {"name": "Jos\u00e9", "password": PW + "2"},
                            headers={"access-token": admin})
            self.assertEqual(r.status, 200, r.body)
            new = r.json()["data"]["user_id"]
            r = srv.request("POST", "/token/user", {"name": "Jose\u0301", "password": PW})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["data"]["user_id"], uid)
            r = srv.request("POST", "/token/user", {"name": "Jos\u00e9", "password": PW + "2"})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["data"]["user_id"], new)

    def test_user_list_cursor(self):
        with Server() as srv:
            srv.create_app("a")
            made = {srv.add_user("cursor%d" % i, PW, pwhash_ops=1, pwhash_mem=8)
                    for i in range(7)}
            srv.start(*FAST)
            admin = admin_token(srv)
            seen, token, pages = [], None, 0
            while True:
                path = "/user/list?page_size=3" + ("&page_token=" + token if token else "")
                r = srv.request("GET", path, headers={"access-token": admin})
                self.assertEqual(r.status, 200, r.body)
                seen += [u["user_id"] for u in r.json()["data"]]
                pages += 1
                token = r.header("next-page-token")
                if not token:
                    break
            self.assertEqual(pages, 3)
            self.assertEqual(sorted(seen), sorted(made), "each user exactly once")
            # page_num still works, and a bad cursor is a clear 400.
            r = srv.request("GET", "/user/list?page_num=3&page_size=3",
                            headers={"access-token": admin})
            self.assertEqual(len(r.json()["data"]), 1)
            r = srv.request("GET", "/user/list?page_token=zz!", headers={"access-token": admin})
            self.assertEqual(r.status, 400, r.body)
            self.assertIn("page_token", r.json()["message"])

    def test_duplicate_identity_headers_are_refused(self):
        import http.client
        with Server() as srv:
            srv.create_app("a")
            srv.start(*FAST)
            admin = admin_token(srv)
            for name, values in (("app_id", ("1", "2")), ("user_id", ("10000", "10001")),
                                 ("access-token", (admin, admin))):
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
                conn.putrequest("POST", "/token/verify")
                conn.putheader("Content-Type", "application/json")
                for v in values:
                    conn.putheader(name, v)
                body = b'{"token":"x"}'
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                self.assertEqual(r.status, 400, (name, data))
                self.assertIn(b"more than one " + name.encode(), data)


if __name__ == "__main__":
    unittest.main(verbosity=2)
