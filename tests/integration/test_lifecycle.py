#!/usr/bin/python3
"""Integration tests of the token lifecycle over real sockets (JSON forms):
Verify, Logout / LogoutAll, devices, push targets and push tokens, store
tokens, passwords, the admin RPCs, user deletion, impersonation with the
user_id / group_id headers, the audit log and concurrent CreateUser.

The contract: proto/tokend/v1/tokend.proto (paths, response_body) and the
vendor's API (../shared/seed/vendor-user-api.json). Replies are
{"code": <HTTP status>, "message": null|"...", "data": ...}.

One server for the module: --threads 4, cheap password hashing (these tests
are not about hashing cost). Each test makes its own users, so tests do not
depend on each other's order.

Expiry: an app's shortest TTL is 60 s, too long to wait for. The expiry
tests rewrite the stored session's expire_ms to the past with mdb_load
(lifecycle_support.set_session_expire) and then ask the server.

Needs mdb_dump / mdb_load (Debian package lmdb-utils).
"""
import concurrent.futures
import itertools
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from lifecycle_support import (Api, admin_token, audit_lines, dump_lmdb,  # noqa: E402
                               fresh_connection_request, pb_fields, pb_get,
                               set_session_expire, u64)

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
PWCOST = ("--pwhash-ops", 1, "--pwhash-mem", 8)
VERIFY_FIELDS = {"user_id", "app_id", "device_guid", "device_sn", "expire", "admin",
                 "encrypt_type", "public_key"}
USER_FIELDS = {"user_id", "app_id", "name", "phone", "email", "disabled", "created"}

MDB_STAT = shutil.which("mdb_stat") or "/usr/bin/mdb_stat"
SRV = None
API = None
APP = APP2 = OPEN_APP = None     # default app, another app, an open-registration app
ADMIN = ADMIN2 = None            # admin tokens of APP and APP2
_seq = itertools.count(1)
_seq_lock = threading.Lock()


def setUpModule():
    global SRV, API, APP, APP2, OPEN_APP, ADMIN, ADMIN2
    for tool in ("mdb_dump", "mdb_load"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in os.environ.get("PATH", "/usr/bin").split(os.pathsep) + ["/usr/bin"]):
            raise RuntimeError("%s is missing: apt-get install lmdb-utils" % tool)
    SRV = harness.Server()
    try:
        APP = SRV.create_app("lifecycle-app")
        APP2 = SRV.create_app("other-app")
        OPEN_APP = int(SRV.cli("app", "create", "--data", SRV.data, "--name", "open-app",
                               "--open-registration").stdout.strip())
        ADMIN = admin_token(SRV, app=APP, label="lifecycle")
        ADMIN2 = admin_token(SRV, app=APP2, label="other")
        SRV.start("--threads", 4, *PWCOST, *no_throttle())
        API = Api(SRV)
    except BaseException:
        SRV.close()
        raise


def no_throttle():
    """Failed-login throttling off where the binary has it: these tests fail
    logins on purpose, from one address, and are not about throttling."""
    usage = subprocess.run([harness.BIN, "help"], capture_output=True, text=True,
                           timeout=30).stdout
    return ("--throttle-account", 0, "--throttle-address", 0) \
        if "--throttle-address" in usage else ()


def tearDownModule():
    if SRV is not None:
        try:
            SRV.stop()
        finally:
            SRV.close()


def now_ms():
    return int(time.time() * 1000)


def unique(prefix):
    with _seq_lock:
        n = next(_seq)
    return "%s_%d_%s" % (prefix, n, secrets.token_hex(3))


class Base(unittest.TestCase):
    srv = property(lambda self: SRV)

    def setUp(self):
        if SRV.proc is None or SRV.proc.poll() is not None:
            self.fail("tokend is not running (exit status %r): %s" %
                      (SRV.proc and SRV.proc.returncode, SRV.logs()[-2000:]))

    # --- calls ---------------------------------------------------------------

    def call(self, method, path, body=None, **kw):
        return API.call(method, path, body, **kw)

    def ok(self, method, path, body=None, **kw):
        """A 200 reply's data."""
        st, env = self.call(method, path, body, **kw)
        self.assertEqual(st, 200, "%s %s -> %r" % (method, path, env))
        return env["data"]

    def fails(self, status, method, path, body=None, words=(), **kw):
        """An error reply: status, data null, a message holding each of `words`."""
        st, env = self.call(method, path, body, **kw)
        self.assertEqual(st, status, "%s %s -> %r" % (method, path, env))
        self.assertIsNone(env["data"], env)
        self.assertIsInstance(env["message"], str, env)
        self.assertTrue(env["message"], env)
        for w in words:
            self.assertIn(w, env["message"], env)
        return env["message"]

    # --- users and sessions ------------------------------------------------------

    def new_user(self, prefix="u", app=None, phone=None, email=None):
        name = unique(prefix)
        pw = "pw-%s-Secret" % name
        uid = SRV.add_user(name, pw, app=app, phone=phone, email=email, pwhash_ops=1,
                           pwhash_mem=8)
        return uid, name, pw

    def login(self, uid, pw, guid=None, app=None, headers=None, **extra):
        """POST /token/id; extra goes into the body (platform, user_agent)."""
        body = dict(user_id=uid, password=pw, **extra)
        if guid:
            body["device_guid"] = guid
        d = self.ok("POST", "/token/id", body, app=app, headers=headers)
        self.assertEqual(d["user_id"], uid, d)
        self.assertRegex(d["token"], TOKEN_RE)
        for k in ("token", "store_token", "push_token", "access_key_secret"):
            SRV.secret(d[k])
        if guid:
            self.assertRegex(d["push_token"], TOKEN_RE)
        return d

    def verify(self, token, admin=None):
        return self.call("POST", "/token/verify", {"token": token},
                         token=ADMIN if admin is None else admin)

    def assert_valid(self, token, uid=None):
        st, env = self.verify(token)
        self.assertEqual(st, 200, env)
        if uid is not None:
            self.assertEqual(env["data"]["user_id"], uid, env)
        return env["data"]

    def assert_invalid(self, token, msg="invalid token"):
        st, env = self.verify(token)
        self.assertEqual((st, env["message"]), (401, msg), env)

    def devices(self, token=None, **kw):
        return self.ok("GET", "/user/device/list", token=token or ADMIN, **kw)

    def push_targets(self, uid, admin=None):
        d = self.ok("POST", "/push/targets", {"user_id": uid}, token=admin or ADMIN)
        self.assertEqual(set(d), {"push_tokens", "device_tokens"}, d)
        return d

    def push_verify(self, push_token, admin=None):
        return self.call("POST", "/push/verify", {"push_token": push_token},
                         token=admin or ADMIN)

    def assert_login_fails(self, uid, pw, status=401):
        st, env = self.call("POST", "/token/id", {"user_id": uid, "password": pw})
        self.assertEqual(st, status, env)


# ===========================================================================
# Verify
# ===========================================================================

class VerifyTests(Base):
    def test_reply_matches_login(self):
        uid, _, pw = self.new_user("verify")
        guid = unique("guid-verify")
        login = self.login(uid, pw, guid=guid)
        d = self.assert_valid(login["token"], uid)
        self.assertEqual(set(d), VERIFY_FIELDS, d)
        sn = [x["device_sn"] for x in self.devices(login["token"])]
        self.assertEqual(sn, [1], "a new user's first device is sn 1")
        self.assertEqual(d, {"user_id": uid, "app_id": APP, "device_guid": guid,
                             "device_sn": 1, "expire": login["expire"], "admin": False,
                             "encrypt_type": login["encrypt_type"],
                             "public_key": login["public_key"]})
        for k in ("user_id", "app_id", "device_sn", "expire", "encrypt_type"):
            self.assertIs(type(d[k]), int, k)
        self.assertIs(d["admin"], False)

    def test_session_without_device(self):
        uid, _, pw = self.new_user("verify-nodev")
        login = self.login(uid, pw)
        d = self.assert_valid(login["token"], uid)
        self.assertEqual((d["device_guid"], d["device_sn"]), ("", 0), d)
        self.assertEqual(d["expire"], login["expire"])

    def test_admin_token_verifies_as_admin(self):
        d = self.assert_valid(ADMIN)
        self.assertEqual((d["admin"], d["user_id"], d["app_id"], d["expire"]),
                         (True, 0, APP, 0), d)

    def test_without_access_token_401(self):
        uid, _, pw = self.new_user("verify-anon")
        login = self.login(uid, pw)
        self.fails(401, "POST", "/token/verify", {"token": login["token"]},
                   words=["access-token"])

    def test_user_token_as_caller_403(self):
        uid, _, pw = self.new_user("verify-user")
        login = self.login(uid, pw)
        self.fails(403, "POST", "/token/verify", {"token": login["token"]},
                   token=login["token"], words=["admin"])

    def test_unknown_token_401_invalid(self):
        for bogus in (secrets.token_urlsafe(32)[:43], "not a token", "A" * 43):
            st, env = self.verify(bogus)
            self.assertEqual((st, env["message"]), (401, "invalid token"), (bogus, env))
        self.fails(400, "POST", "/token/verify", {"token": ""}, token=ADMIN)

    def test_unknown_caller_401(self):
        uid, _, pw = self.new_user("verify-badcaller")
        login = self.login(uid, pw)
        self.fails(401, "POST", "/token/verify", {"token": login["token"]},
                   token=secrets.token_urlsafe(32)[:43], words=["invalid token"])

    def test_expired_token(self):
        uid, _, pw = self.new_user("verify-exp")
        guid = unique("guid-exp")
        login = self.login(uid, pw, guid=guid)
        other = self.login(uid, pw)
        self.assert_valid(login["token"], uid)
        self.assertEqual(set_session_expire(SRV.data, guid, now_ms() - 1000), 1)
        self.assert_invalid(login["token"], "token expired")
        # As a caller, too: the user is told to log in again.
        self.fails(401, "GET", "/user/device/list", token=login["token"],
                   words=["token expired"])
        self.assert_valid(other["token"], uid)

    def test_admin_token_of_another_app_401(self):
        uid, _, pw = self.new_user("verify-xapp")
        login = self.login(uid, pw)
        st, env = self.verify(login["token"], admin=ADMIN2)
        self.assertEqual((st, env["message"]), (401, "invalid token"), env)
        # The app's own admin token named with another app's app_id header.
        self.fails(401, "POST", "/token/verify", {"token": login["token"]}, token=ADMIN,
                   app=APP2)
        self.assert_valid(login["token"], uid)

    def test_revoked_admin_token_401(self):
        label = unique("revoke-me")
        tok = admin_token(SRV, app=APP, label=label)
        uid, _, pw = self.new_user("verify-revadmin")
        login = self.login(uid, pw)
        self.assertEqual(self.verify(login["token"], admin=tok)[0], 200)
        listed = SRV.cli("admin-token", "list", "--data", SRV.data, "--app", APP).stdout
        ids = [line.split()[0] for line in listed.splitlines() if line.endswith(label)]
        self.assertEqual(len(ids), 1, listed)
        SRV.cli("admin-token", "revoke", "--data", SRV.data, "--app", APP, "--id", ids[0])
        st, env = self.verify(login["token"], admin=tok)
        self.assertEqual(st, 401, env)

    def test_idle_server_pins_no_old_snapshot(self):
        """Event loops keep their LMDB read transaction open between reads
        while nothing commits (src/store.c). After a write, and on an idle
        loop, it must end within a few ticks: a transaction left open pins
        its snapshot, and the file would grow with every later write."""
        uid, _, pw = self.new_user("verify-idle")
        login = self.login(uid, pw)
        for _ in range(3):
            self.assert_valid(login["token"], uid)
        self.login(uid, pw)  # a write commits after those reads
        pinned, out, deadline = None, "", time.time() + 3
        while pinned != [] and time.time() < deadline:
            time.sleep(0.1)
            # mdb_stat -r exits 1 after printing the table (lmdb-utils 0.9.24)
            out = subprocess.run([MDB_STAT, "-r", SRV.data], capture_output=True, text=True).stdout
            self.assertIn("Reader Table Status", out)
            # "pid thread txnid" per reader slot; a slot not in a transaction shows "-"
            pinned = [line for line in out.splitlines()
                      if re.fullmatch(r"\s*\d+\s+[0-9a-f]+\s+\d+\s*", line)]
        self.assertEqual(pinned, [], out)

    def test_admin_token_with_a_long_label_verifies(self):
        """The label is the operator's free text: whatever length the CLI
        accepts must not break the admin token."""
        p = SRV.cli("admin-token", "create", "--data", SRV.data, "--app", APP,
                    "--label", "L" * 5000, check=False)
        if p.returncode != 0:
            return  # refusing a label that long is fine too
        tok = SRV.secret(p.stdout.strip())
        uid, _, pw = self.new_user("verify-label")
        login = self.login(uid, pw)
        st, env = self.verify(login["token"], admin=tok)
        self.assertEqual(st, 200, env)
        self.assertEqual(env["data"]["user_id"], uid)


# ===========================================================================
# Logout and LogoutAll
# ===========================================================================

class RevokeTests(Base):
    def test_revoked_token_fails_on_every_thread(self):
        uid, _, pw = self.new_user("revoke")
        login = self.login(uid, pw, guid=unique("guid-rev"))
        keep = self.login(uid, pw)
        tok = login["token"]
        hdrs = {"access-token": ADMIN}

        def verify_fresh(_):
            return fresh_connection_request(SRV.port, "POST", "/token/verify", {"token": tok},
                                            hdrs)

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            before = list(ex.map(verify_fresh, range(8)))
        self.assertEqual([s for s, _ in before], [200] * 8, before)
        self.assertIs(self.ok("POST", "/token/revoke", {}, token=tok), True)
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            after = list(ex.map(verify_fresh, range(40)))
        bad = [(s, b) for s, b in after if (s, b.get("message")) != (401, "invalid token")]
        self.assertEqual(bad, [], "a revoked token still verifies on some connection")
        # The token is gone as a caller too, and the user's other session stays.
        self.fails(401, "POST", "/token/revoke", {}, token=tok)
        self.fails(401, "GET", "/user/device/list", token=tok)
        self.assert_valid(keep["token"], uid)

    def test_revoke_needs_a_token(self):
        self.fails(401, "POST", "/token/revoke", {})

    def test_admin_logout_for_a_user_keeps_the_admin_token(self):
        """Logout is one of the "for users" RPCs an admin may call with a
        user_id header: that must not end the admin token the IM services
        share (answering 400 or revoking the user's sessions are both fine)."""
        label = unique("logout-admin")
        adm = admin_token(SRV, app=APP, label=label)
        uid, _, pw = self.new_user("logout-admin")
        s = self.login(uid, pw)
        self.call("POST", "/token/revoke", {}, token=adm, user=uid)
        st, env = self.verify(s["token"], admin=adm)
        self.assertEqual(st, 200, "the admin token was revoked by Logout with a user_id "
                                  "header: %r" % env)

    def test_admin_revoking_its_own_token_is_audited(self):
        """An admin token ended over HTTP is an admin action like
        `tokend admin-token revoke`: refused, or in the audit log."""
        label = unique("self-revoke")
        adm = admin_token(SRV, app=APP, label=label)
        listed = SRV.cli("admin-token", "list", "--data", SRV.data, "--app", APP).stdout
        tid = [line.split()[0] for line in listed.splitlines() if line.endswith(label)][0]
        st, env = self.call("POST", "/token/revoke", {}, token=adm)
        if st != 200:
            self.assert_valid(adm)
            return
        self.assertEqual(self.verify(adm)[0], 401)
        self.assertTrue([l for l in audit_lines(SRV) if tid in l and "admin-token create" not in l],
                        "admin token %s was revoked over HTTP without an audit entry" % tid)

    def test_revoke_all_leaves_no_session(self):
        uid, _, pw = self.new_user("logoutall")
        other_uid, _, other_pw = self.new_user("logoutall-other")
        logins = [self.login(uid, pw, guid=unique("guid-la")) for _ in range(3)]
        logins.append(self.login(uid, pw))
        bystander = self.login(other_uid, other_pw)
        for lg in logins:
            self.assert_valid(lg["token"], uid)
        self.assertIs(self.ok("POST", "/token/revoke_all", {}, token=logins[1]["token"]), True)
        for lg in logins:
            self.assert_invalid(lg["token"])
            self.fails(401, "POST", "/store/resolve", {"store_token": lg["store_token"]},
                       token=ADMIN)
        self.assert_valid(bystander["token"], other_uid)
        db = dump_lmdb(SRV.data)
        left = [k.hex() for k, _ in db["user_sessions"] if k[:8] == u64(uid)]
        self.assertEqual(left, [], "user_sessions still holds sessions of the user")
        self.assertTrue(any(k[:8] == u64(other_uid) for k, _ in db["user_sessions"]),
                        "the other user's session index must stay")
        stored = [pb_get(pb_fields(v), 1) for _, v in db["sessions"]]
        self.assertNotIn(uid, stored, "a session of the user is still stored")
        self.assertIn(other_uid, stored)

    def test_revoke_all_by_admin_for_a_user(self):
        uid, _, pw = self.new_user("logoutall-admin")
        a, b = self.login(uid, pw), self.login(uid, pw, guid=unique("guid-laa"))
        self.assertIs(self.ok("POST", "/token/revoke_all", {}, token=ADMIN, user=uid), True)
        self.assert_invalid(a["token"])
        self.assert_invalid(b["token"])
        self.assert_valid(ADMIN)  # the admin's own token is not the user's session


# ===========================================================================
# Devices
# ===========================================================================

class DeviceTests(Base):
    def test_list_platform_and_user_agent_from_body_or_headers(self):
        uid, _, pw = self.new_user("devlist")
        body = self.login(uid, pw, guid=unique("g-body"), platform=1,
                          user_agent="BodyAgent/1.0")
        hdr = self.login(uid, pw, guid=unique("g-hdr"),
                         headers={"platform": "2", "User-Agent": "HeaderAgent/2.0"})
        both = self.login(uid, pw, guid=unique("g-both"), platform=5, user_agent="BodyWins/5",
                          headers={"platform": "3", "User-Agent": "HeaderLoses/3"})
        self.login(uid, pw)  # no device: not listed
        want = [{"device_sn": 1, "platform": 1, "user_agent": "BodyAgent/1.0", "user_id": uid},
                {"device_sn": 2, "platform": 2, "user_agent": "HeaderAgent/2.0", "user_id": uid},
                {"device_sn": 3, "platform": 5, "user_agent": "BodyWins/5", "user_id": uid}]
        self.assertEqual(self.devices(body["token"]), want)
        self.assertEqual(self.devices(hdr["token"]), want)
        self.assertEqual(self.devices(user=uid), want, "admin token + user_id header")
        self.assertEqual(self.assert_valid(both["token"])["device_sn"], 3)

    def test_header_user_agent_kept_printable(self):
        # Bytes that are not printable ASCII become '?', wherever they fall
        # (h2o itself refuses the other controls and DEL in a header).
        uid, _, pw = self.new_user("devua")
        ua = "Mozilla/5.0 (X11; Linux x86_64) \ttab caf\xe9 \xff\xfe and the rest~"
        d = self.login(uid, pw, guid=unique("g-ua"), headers={"User-Agent": ua})
        want = "Mozilla/5.0 (X11; Linux x86_64) ?tab caf? ?? and the rest~"
        self.assertEqual([x["user_agent"] for x in self.devices(d["token"])], [want])

    def test_list_needs_a_token(self):
        self.fails(401, "GET", "/user/device/list")

    def _remove(self, method):
        uid, _, pw = self.new_user("devremove")
        g1, g2 = unique("g-rm1"), unique("g-rm2")
        d1, d2 = self.login(uid, pw, guid=g1), self.login(uid, pw, guid=g2)
        self.assertIs(self.ok("POST", "/user/token/bind", {"device_sn": 1, "device_token":
                                                          "apns-rm-1", "notifier_name": "apns"},
                              token=d1["token"]), True)
        self.assertIs(self.ok(method, "/user/device/remove?device_sn=1", token=d2["token"]), True)
        self.assert_invalid(d1["token"])
        self.assertEqual(self.push_verify(d1["push_token"])[0], 401)
        self.assertEqual([x["device_sn"] for x in self.devices(d2["token"])], [2])
        pt = self.push_targets(uid)
        self.assertEqual(pt["push_tokens"], [d2["push_token"]])
        self.assertEqual(pt["device_tokens"], [], "the removed device's APNs token stays")
        self.assert_valid(d2["token"], uid)
        self.fails(404, method, "/user/device/remove?device_sn=1", token=d2["token"])
        self.fails(404, method, "/user/device/remove?device_sn=99", token=d2["token"])
        self.fails(400, method, "/user/device/remove", token=d2["token"], words=["device_sn"])

    def test_remove_device_post(self):
        self._remove("POST")

    def test_remove_device_delete(self):
        self._remove("DELETE")

    def test_remove_device_of_another_user_404(self):
        uid, _, pw = self.new_user("devremove-a")
        vid, _, vpw = self.new_user("devremove-v")
        victim = self.login(vid, vpw, guid=unique("g-victim"))
        mine = self.login(uid, pw)
        self.fails(404, "POST", "/user/device/remove?device_sn=1", token=mine["token"])
        self.assert_valid(victim["token"], vid)
        self.assertEqual(len(self.devices(victim["token"])), 1)

    def _kick_one(self, method):
        uid, _, pw = self.new_user("kick")
        g1 = unique("g-k1")
        d1 = self.login(uid, pw, guid=g1)
        d2 = self.login(uid, pw, guid=unique("g-k2"))
        self.assertIs(self.ok(method, "/user/kick?device_sn=1", token=d2["token"]), True)
        self.assert_invalid(d1["token"])
        self.assertEqual(self.push_verify(d1["push_token"])[0], 401)
        self.assert_valid(d2["token"], uid)
        self.assertEqual(self.push_verify(d2["push_token"])[0], 200)
        self.assertEqual([x["device_sn"] for x in self.devices(d2["token"])], [1, 2],
                         "a kicked device stays in the list")
        self.assertEqual(self.push_targets(uid)["push_tokens"], [d2["push_token"]])
        self.fails(404, method, "/user/kick?device_sn=42", token=d2["token"])
        # Logging in again on the kicked device keeps its serial number.
        again = self.login(uid, pw, guid=g1)
        self.assertEqual(self.assert_valid(again["token"])["device_sn"], 1)
        self.assertEqual(self.push_verify(again["push_token"])[0], 200)

    def test_kick_one_post(self):
        self._kick_one("POST")

    def test_kick_one_put(self):
        self._kick_one("PUT")

    def _kick_all(self, method):
        uid, _, pw = self.new_user("kickall")
        other_uid, _, other_pw = self.new_user("kickall-other")
        self.kicked_guid = unique("g-ka")
        ds = [self.login(uid, pw, guid=g) for g in (self.kicked_guid, unique("g-ka"))]
        bare = self.login(uid, pw)
        other = self.login(other_uid, other_pw, guid=unique("g-ka-o"))
        self.assertIs(self.ok(method, "/user/kick", token=ADMIN, user=uid), True)
        for d in ds + [bare]:
            self.assert_invalid(d["token"])
        for d in ds:
            self.assertEqual(self.push_verify(d["push_token"])[0], 401)
        self.assertEqual(self.push_targets(uid)["push_tokens"], [])
        self.assertEqual(len(self.devices(user=uid)), 2)
        self.assert_valid(other["token"], other_uid)
        self.assertEqual(self.push_verify(other["push_token"])[0], 200)
        # A kicked device is still usable: another user signs in on it.
        moved = self.login(other_uid, other_pw, guid=self.kicked_guid)
        self.assertEqual(self.push_verify(moved["push_token"])[1]["data"]["user_id"], other_uid)
        self.assertEqual(len(self.devices(user=uid)), 1)

    def test_fields_in_a_body_where_the_query_is_read_are_refused(self):
        # Kick reads device_sn from the query: a JSON body naming it used to
        # be ignored, and a kick without device_sn signs every device out.
        uid, _, pw = self.new_user("kick-body")
        d1 = self.login(uid, pw, guid=unique("g-kb1"))
        d2 = self.login(uid, pw, guid=unique("g-kb2"))
        for method, path in (("POST", "/user/kick"), ("PUT", "/user/kick"),
                             ("POST", "/user/device/remove"), ("POST", "/user/token/unbind")):
            st, env = self.call(method, path, {"device_sn": 2}, token=d1["token"])
            self.assertEqual(st, 400, (method, path, env))
            self.assertIn("query string", env["message"])
        self.assert_valid(d1["token"], uid)
        self.assert_valid(d2["token"], uid)
        # what clients send for "no fields" is still no fields
        st, env = self.call("GET", "/user/device/list", " { } ", token=d1["token"])
        self.assertEqual(st, 200, env)
        self.assertIs(self.ok("POST", "/user/kick?device_sn=2", "{}", token=d1["token"]), True)
        self.assert_invalid(d2["token"])
        self.assert_valid(d1["token"], uid)

    def test_kick_all_post(self):
        self._kick_all("POST")

    def test_kick_all_put(self):
        self._kick_all("PUT")


# ===========================================================================
# Push
# ===========================================================================

class PushTests(Base):
    def test_targets_bind_unbind_and_verify(self):
        uid, _, pw = self.new_user("push")
        gx, gy = unique("g-px"), unique("g-py")
        x, y = self.login(uid, pw, guid=gx), self.login(uid, pw, guid=gy)
        pt = self.push_targets(uid)
        self.assertEqual(sorted(pt["push_tokens"]), sorted([x["push_token"], y["push_token"]]))
        self.assertEqual(pt["device_tokens"], [])
        self.assertIs(self.ok("POST", "/user/token/bind", {"device_sn": 1, "device_token":
                                                          "apns-tok-1", "notifier_name": "apns"},
                              token=x["token"]), True)
        self.assertIs(self.ok("PUT", "/user/token/bind", {"device_sn": 2, "device_token":
                                                         "fcm-tok-2", "notifier_name": "fcm"},
                              token=x["token"]), True)
        dts = sorted(self.push_targets(uid)["device_tokens"], key=lambda t: t["device_sn"])
        self.assertEqual(dts, [
            {"device_sn": 1, "device_token": "apns-tok-1", "notifier_name": "apns"},
            {"device_sn": 2, "device_token": "fcm-tok-2", "notifier_name": "fcm"}])
        # Binding again replaces.
        self.ok("PUT", "/user/token/bind", {"device_sn": 2, "device_token": "fcm-tok-2b",
                                            "notifier_name": "fcm"}, token=y["token"])
        st, env = self.push_verify(x["push_token"])
        self.assertEqual(st, 200, env)
        self.assertEqual(env["data"], {"device_guid": gx, "user_id": uid, "app_id": APP,
                                       "device_sn": 1})
        self.assertIs(self.ok("POST", "/user/token/unbind?deviceSn=1", token=x["token"]), True)
        dts = self.push_targets(uid)["device_tokens"]
        self.assertEqual(dts, [{"device_sn": 2, "device_token": "fcm-tok-2b",
                                "notifier_name": "fcm"}])
        self.assertIs(self.ok("DELETE", "/user/token/unbind?deviceSn=2", token=x["token"]), True)
        self.assertEqual(self.push_targets(uid)["device_tokens"], [])
        # The push tokens are untouched by (un)binding device tokens.
        self.assertEqual(len(self.push_targets(uid)["push_tokens"]), 2)

    def test_device_token_is_a_target_only_while_signed_in_there(self):
        # An APNs/FCM token must not get pushes for a device its user has
        # signed out of (logout, kick, disable); a new login there brings it
        # back, the binding kept.
        uid, _, pw = self.new_user("push-out")
        gx, gy = unique("g-ox"), unique("g-oy")
        x, y = self.login(uid, pw, guid=gx), self.login(uid, pw, guid=gy)
        self.ok("POST", "/user/token/bind", {"device_sn": 1, "device_token": "apns-out-1",
                                             "notifier_name": "apns"}, token=x["token"])
        self.ok("POST", "/user/token/bind", {"device_sn": 2, "device_token": "fcm-out-2",
                                             "notifier_name": "fcm"}, token=y["token"])
        self.assertEqual(len(self.push_targets(uid)["device_tokens"]), 2)
        self.assertIs(self.ok("POST", "/token/revoke", {}, token=x["token"]), True)
        self.assertEqual([t["device_token"] for t in self.push_targets(uid)["device_tokens"]],
                         ["fcm-out-2"])
        x = self.login(uid, pw, guid=gx)
        self.assertEqual(sorted(t["device_token"] for t in self.push_targets(uid)["device_tokens"]),
                         ["apns-out-1", "fcm-out-2"])
        self.assertIs(self.ok("PUT", "/user/kick?device_sn=2", token=x["token"]), True)
        self.assertEqual([t["device_token"] for t in self.push_targets(uid)["device_tokens"]],
                         ["apns-out-1"])
        self.ok("PUT", "/user/disable", {"list": [uid]}, token=ADMIN)
        self.assertEqual(self.push_targets(uid), {"push_tokens": [], "device_tokens": []})

    def test_same_user_same_device_rotates_push_token(self):
        uid, _, pw = self.new_user("push-rotate")
        guid = unique("g-rot")
        first = self.login(uid, pw, guid=guid)
        self.ok("POST", "/user/token/bind", {"device_sn": 1, "device_token": "apns-rot",
                                             "notifier_name": "apns"}, token=first["token"])
        second = self.login(uid, pw, guid=guid)
        self.assertNotEqual(first["push_token"], second["push_token"])
        self.assertEqual(self.push_verify(first["push_token"])[0], 401)
        self.assertEqual(self.push_verify(second["push_token"])[1]["data"]["device_sn"], 1)
        self.assertEqual(self.push_targets(uid), {
            "push_tokens": [second["push_token"]],
            "device_tokens": [{"device_sn": 1, "device_token": "apns-rot",
                               "notifier_name": "apns"}]})
        self.assertEqual(len(self.devices(second["token"])), 1)
        # Both sessions stay valid: a new login is not a logout.
        self.assert_valid(first["token"], uid)

    def test_bind_errors(self):
        uid, _, pw = self.new_user("push-err")
        x = self.login(uid, pw, guid=unique("g-pe"))
        self.fails(404, "POST", "/user/token/bind", {"device_sn": 9, "device_token": "t",
                                                     "notifier_name": "apns"}, token=x["token"])
        self.fails(400, "POST", "/user/token/bind", {"device_sn": 1}, token=x["token"])
        self.fails(404, "POST", "/user/token/unbind?deviceSn=9", token=x["token"])
        self.fails(400, "DELETE", "/user/token/unbind", token=x["token"], words=["deviceSn"])
        self.fails(401, "POST", "/user/token/bind", {"device_sn": 1, "device_token": "t"})

    def test_push_calls_need_an_admin_token(self):
        uid, _, pw = self.new_user("push-auth")
        x = self.login(uid, pw, guid=unique("g-pa"))
        self.fails(401, "POST", "/push/targets", {"user_id": uid})
        self.fails(403, "POST", "/push/targets", {"user_id": uid}, token=x["token"])
        self.fails(401, "POST", "/push/verify", {"push_token": x["push_token"]})
        self.fails(403, "POST", "/push/verify", {"push_token": x["push_token"]}, token=x["token"])
        self.assertEqual(self.push_verify(x["push_token"], admin=ADMIN2)[0], 401,
                         "another app's admin must not resolve this app's push token")
        self.assertEqual(self.push_targets(uid, admin=ADMIN2)["push_tokens"], [],
                         "another app's admin must not see this app's push tokens")
        st, env = self.push_verify(secrets.token_urlsafe(32)[:43])
        self.assertEqual((st, env["message"]), (401, "invalid push_token"), env)

    def test_device_moving_to_another_user(self):
        a_uid, _, a_pw = self.new_user("push-a")
        b_uid, _, b_pw = self.new_user("push-b")
        guid = unique("g-shared")
        a = self.login(a_uid, a_pw, guid=guid)
        self.ok("POST", "/user/token/bind", {"device_sn": 1, "device_token": "apns-of-a",
                                             "notifier_name": "apns"}, token=a["token"])
        self.assertEqual(self.push_targets(a_uid)["push_tokens"], [a["push_token"]])
        b = self.login(b_uid, b_pw, guid=guid)
        pa = self.push_targets(a_uid)
        self.assertNotIn(a["push_token"], pa["push_tokens"])
        self.assertEqual(pa, {"push_tokens": [], "device_tokens": []})
        st, env = self.push_verify(a["push_token"])
        self.assertEqual((st, env["message"]), (401, "invalid push_token"), env)
        st, env = self.push_verify(b["push_token"])
        self.assertEqual(st, 200, env)
        self.assertEqual((env["data"]["user_id"], env["data"]["device_guid"]), (b_uid, guid))
        pb = self.push_targets(b_uid)
        self.assertEqual(pb["push_tokens"], [b["push_token"]])
        self.assertEqual(pb["device_tokens"], [], "A's APNs token must not follow the device")
        self.assertEqual(self.devices(user=a_uid), [], "the device left A's list")
        # A's session on the device ended with the move (a shared device
        # keeps no live token of the user before).
        self.fails(401, "POST", "/token/verify", {"token": a["token"]}, token=ADMIN)
        self.assertEqual([d["user_id"] for d in self.devices(b["token"])], [b_uid])


# ===========================================================================
# Store tokens
# ===========================================================================

class StoreTokenTests(Base):
    def test_resolve(self):
        uid, _, pw = self.new_user("store")
        login = self.login(uid, pw)
        d = self.ok("POST", "/store/resolve", {"store_token": login["store_token"]}, token=ADMIN)
        self.assertEqual(d, {"user_id": uid, "app_id": APP,
                             "access_key_secret": login["access_key_secret"],
                             "expire": login["expire"]})

    def test_unknown_and_revoked_401(self):
        uid, _, pw = self.new_user("store-bad")
        login = self.login(uid, pw)
        self.fails(401, "POST", "/store/resolve", {"store_token": secrets.token_urlsafe(32)[:43]},
                   token=ADMIN, words=["invalid store_token"])
        self.fails(401, "POST", "/store/resolve", {"store_token": "garbage"}, token=ADMIN)
        self.fails(401, "POST", "/store/resolve", {"store_token": login["store_token"]},
                   token=ADMIN2)
        self.fails(403, "POST", "/store/resolve", {"store_token": login["store_token"]},
                   token=login["token"])
        self.fails(401, "POST", "/store/resolve", {"store_token": login["store_token"]})
        # The access token is not a store token.
        self.fails(401, "POST", "/store/resolve", {"store_token": login["token"]}, token=ADMIN)
        self.ok("POST", "/token/revoke", {}, token=login["token"])
        self.fails(401, "POST", "/store/resolve", {"store_token": login["store_token"]},
                   token=ADMIN)

    def test_expired(self):
        uid, _, pw = self.new_user("store-exp")
        guid = unique("g-sexp")
        login = self.login(uid, pw, guid=guid)
        set_session_expire(SRV.data, guid, now_ms() - 1000)
        self.fails(401, "POST", "/store/resolve", {"store_token": login["store_token"]},
                   token=ADMIN, words=["expired"])


# ===========================================================================
# ChangePassword
# ===========================================================================

class ChangePasswordTests(Base):
    def test_wrong_old_password_401(self):
        uid, _, pw = self.new_user("chpw-wrong")
        s = self.login(uid, pw)
        self.fails(401, "POST", "/user/change_password",
                   {"old_password": "not-the-password", "new_password": "brand-new-pw-1"},
                   token=s["token"])
        self.login(uid, pw)
        self.assert_login_fails(uid, "brand-new-pw-1")
        self.assert_valid(s["token"], uid)

    def test_success_keeps_caller_revokes_others(self):
        uid, _, pw = self.new_user("chpw")
        caller = self.login(uid, pw, guid=unique("g-chpw"))
        others = [self.login(uid, pw), self.login(uid, pw, guid=unique("g-chpw2"))]
        new = "changed-Secret-" + secrets.token_hex(4)
        SRV.secret(new)
        self.assertIs(self.ok("POST", "/user/change_password",
                              {"old_password": pw, "new_password": new}, token=caller["token"]),
                      True)
        self.assert_valid(caller["token"], uid)
        for o in others:
            self.assert_invalid(o["token"])
        self.login(uid, new)
        self.assert_login_fails(uid, pw)

    def test_admin_token_403(self):
        uid, _, pw = self.new_user("chpw-admin")
        self.fails(403, "POST", "/user/change_password",
                   {"old_password": pw, "new_password": "admin-chosen-pw"}, token=ADMIN, user=uid)
        self.login(uid, pw)

    def test_new_password_too_short_400(self):
        uid, _, pw = self.new_user("chpw-short")
        s = self.login(uid, pw)
        self.fails(400, "POST", "/user/change_password",
                   {"old_password": pw, "new_password": "short"}, token=s["token"])
        self.login(uid, pw)


# ===========================================================================
# Admin RPCs
# ===========================================================================

class AdminTests(Base):
    def test_register_v2_with_admin_token(self):
        name = unique("reg")
        pw = "reg-Secret-pw-1"
        SRV.secret(pw)
        d = self.ok("POST", "/user/register/v2", {"username": name, "password": pw}, token=ADMIN)
        self.assertEqual(set(d), {"user_id", "username"}, d)
        self.assertEqual(d["username"], name)
        self.login(d["user_id"], pw)
        self.fails(409, "POST", "/user/register/v2", {"username": name, "password": pw},
                   token=ADMIN)
        self.fails(400, "POST", "/user/register/v2", {"username": name}, token=ADMIN)

    def test_register_v2_without_token(self):
        name, pw = unique("reg-anon"), "reg-anon-Secret-1"
        SRV.secret(pw)
        self.fails(401, "POST", "/user/register/v2", {"username": name, "password": pw})
        self.fails(401, "POST", "/user/register/v2", {"username": name, "password": pw}, app=APP)
        d = self.ok("POST", "/user/register/v2", {"username": name, "password": pw}, app=OPEN_APP)
        self.assertEqual(d["username"], name)
        self.login(d["user_id"], pw, app=OPEN_APP)
        # The user is in the open app, not the default one.
        self.assert_login_fails(d["user_id"], pw)

    def test_register_v2_with_user_token_403(self):
        uid, _, pw = self.new_user("reg-user")
        s = self.login(uid, pw)
        self.fails(403, "POST", "/user/register/v2",
                   {"username": unique("reg-by-user"), "password": "whatever-pw-1"},
                   token=s["token"])

    def test_register_batch(self):
        _, taken, _ = self.new_user("batch-taken")
        ok1, ok2 = unique("batch-ok"), unique("batch-ok")
        pw = "batch-Secret-pw"
        SRV.secret(pw)
        d = self.ok("POST", "/user/register/batch", {"list": [
            {"username": ok1, "password": pw},
            {"username": taken, "password": pw},
            {"username": ok2, "password": pw},
            {"username": unique("batch-short"), "password": "short"},
        ]}, token=ADMIN)
        self.assertIsInstance(d, list, d)
        self.assertEqual(len(d), 4, d)
        for r in d:
            self.assertEqual(set(r), {"user_id", "username", "success", "reason"}, r)
        self.assertEqual([r["success"] for r in d], [True, False, True, False], d)
        self.assertEqual([r["username"] for r in d[:3]], [ok1, taken, ok2])
        self.assertIn("already taken", d[1]["reason"])
        self.assertIn("password", d[3]["reason"])
        self.assertEqual((d[0]["reason"], d[2]["reason"]), ("", ""))
        self.assertEqual((d[1]["user_id"], d[3]["user_id"]), (0, 0))
        self.assertNotEqual(d[0]["user_id"], d[2]["user_id"])
        self.login(d[0]["user_id"], pw)
        self.login(d[2]["user_id"], pw)
        self.fails(401, "POST", "/user/register/batch", {"list": [{"username": unique("b"),
                                                                    "password": pw}]})
        self.fails(400, "POST", "/user/register/batch", {"list": []}, token=ADMIN)

    def test_set_password_admin(self):
        uid, _, pw = self.new_user("setpw")
        sessions = [self.login(uid, pw), self.login(uid, pw, guid=unique("g-setpw"))]
        new = "admin-Set-pw-" + secrets.token_hex(4)
        SRV.secret(new)
        self.assertIs(self.ok("POST", "/user/change_password_admin", {"password": new},
                              token=ADMIN, user=uid), True)
        for s in sessions:
            self.assert_invalid(s["token"])
        self.login(uid, new)
        self.assert_login_fails(uid, pw)
        self.fails(400, "POST", "/user/change_password_admin", {"password": new}, token=ADMIN)
        s = self.login(uid, new)
        self.fails(403, "POST", "/user/change_password_admin", {"password": "user-set-pw-1"},
                   token=s["token"])
        self.fails(404, "POST", "/user/change_password_admin", {"password": new}, token=ADMIN2,
                   user=uid)

    def test_disable_and_enable(self):
        uid, _, pw = self.new_user("disable")
        bystander, _, bpw = self.new_user("disable-by")
        s = self.login(uid, pw, guid=unique("g-dis"))
        b = self.login(bystander, bpw)
        self.assertIs(self.ok("PUT", "/user/disable", {"list": [uid]}, token=ADMIN), True)
        self.assert_invalid(s["token"])
        self.assert_login_fails(uid, pw, status=403)
        self.assert_login_fails(uid, "wrong-password-1", status=401)
        self.assertIs(self.ok("GET", "/admin/user/get?user_id=%d" % uid, token=ADMIN)["disabled"],
                      True)
        self.assertEqual(self._status_in_list(uid), 1)
        self.assert_valid(b["token"], bystander)
        self.assertIs(self.ok("PUT", "/user/enable", {"list": [uid]}, token=ADMIN), True)
        s2 = self.login(uid, pw)
        self.assert_valid(s2["token"], uid)
        self.assertEqual(self._status_in_list(uid), 0)

    def test_disable_is_all_or_nothing(self):
        uid, _, pw = self.new_user("disable-aon")
        self.fails(404, "PUT", "/user/disable", {"list": [uid, 987654321]}, token=ADMIN)
        self.login(uid, pw)
        self.fails(404, "PUT", "/user/disable", {"list": [uid]}, token=ADMIN2)
        self.login(uid, pw)
        s = self.login(uid, pw)
        self.fails(403, "PUT", "/user/disable", {"list": [uid]}, token=s["token"])
        self.fails(400, "PUT", "/user/disable", {"list": []}, token=ADMIN)

    def _status_in_list(self, uid):
        for page in range(1, 1000):
            rows = self.ok("GET", "/user/list?page_num=%d&page_size=100" % page, token=ADMIN)
            for r in rows:
                if r["user_id"] == uid:
                    return r["status"]
            if len(rows) < 100:
                break
        self.fail("user %d is not in /user/list" % uid)

    def test_list_users_paging(self):
        app = SRV.create_app(unique("list-app"))
        adm = admin_token(SRV, app=app)
        made = {}
        for _ in range(5):
            uid, name, _ = self.new_user("list", app=app)
            made[uid] = name
        pages = [self.ok("GET", "/user/list?page_num=%d&page_size=2" % p, token=adm)
                 for p in (1, 2, 3, 4)]
        self.assertEqual([len(p) for p in pages], [2, 2, 1, 0], pages)
        rows = [r for p in pages for r in p]
        for r in rows:
            self.assertEqual(set(r), {"user_id", "username", "status"}, r)
        self.assertEqual({r["user_id"]: r["username"] for r in rows}, made)
        self.assertEqual(len(rows), 5, "a user listed twice")
        self.assertEqual({r["status"] for r in rows}, {0})
        # Defaults: page 1, 20 per page.
        self.assertEqual(len(self.ok("GET", "/user/list", token=adm)), 5)
        self.fails(400, "GET", "/user/list?page_size=1001", token=adm)
        self.fails(401, "GET", "/user/list")
        # Another app's admin sees none of them.
        other = self.ok("GET", "/user/list?page_size=1000", token=ADMIN2)
        self.assertFalse(set(made) & {r["user_id"] for r in other})

    def test_create_get_update(self):
        name = unique("created")
        phone = "+1 (555) %04d-%03d" % (secrets.randbelow(10000), secrets.randbelow(1000))
        email = "%s@Example.COM" % name.replace("_", "")
        pw = "created-Secret-pw"
        SRV.secret(pw)
        t0 = now_ms()
        u = self.ok("POST", "/admin/user/create", {"name": name, "phone": phone, "email": email,
                                                    "password": pw}, token=ADMIN)
        self.assertEqual(set(u), USER_FIELDS, u)
        norm_phone = "+" + "".join(c for c in phone if c.isdigit())
        self.assertEqual((u["app_id"], u["name"], u["phone"], u["email"], u["disabled"]),
                         (APP, name, norm_phone, email.lower(), False))
        self.assertLess(abs(u["created"] - t0), 60_000)
        uid = u["user_id"]
        self.assertEqual(self.ok("GET", "/admin/user/get?user_id=%d" % uid, token=ADMIN), u)
        self.fails(404, "GET", "/admin/user/get?user_id=%d" % uid, token=ADMIN2)
        self.fails(404, "GET", "/admin/user/get?user_id=987654321", token=ADMIN)
        # Update all three; the new name logs in, the old one does not.
        new_name = unique("renamed")
        new_email = "%s@example.net" % new_name.replace("_", "")
        new_phone = "+44 20 7946 %04d" % secrets.randbelow(10000)
        v = self.ok("POST", "/admin/user/update", {"user_id": uid, "name": new_name,
                                                   "phone": new_phone, "email": new_email},
                    token=ADMIN)
        self.assertEqual((v["user_id"], v["name"], v["email"]), (uid, new_name, new_email))
        self.assertTrue(v["phone"].startswith("+44207946"), v)
        self.assertEqual(self.ok("GET", "/admin/user/get?user_id=%d" % uid, token=ADMIN), v)
        self.ok("POST", "/token/login", {"login_name": new_name, "password": pw})
        self.ok("POST", "/token/login", {"login_name": new_email, "password": pw})
        self.ok("POST", "/token/login", {"login_name": v["phone"], "password": pw})
        for old in (name, email, norm_phone):
            st, env = self.call("POST", "/token/login", {"login_name": old, "password": pw})
            self.assertEqual(st, 401, (old, env))
        # Clearing the phone.
        w = self.ok("POST", "/admin/user/update", {"user_id": uid, "clear_phone": True},
                    token=ADMIN)
        self.assertEqual((w["phone"], w["name"], w["email"]), ("", new_name, new_email))
        st, _ = self.call("POST", "/token/login", {"login_name": v["phone"], "password": pw})
        self.assertEqual(st, 401)
        w = self.ok("POST", "/admin/user/update", {"user_id": uid, "clear_email": True},
                    token=ADMIN)
        self.assertEqual((w["phone"], w["email"]), ("", ""))
        st, _ = self.call("POST", "/token/login", {"login_name": new_email, "password": pw})
        self.assertEqual(st, 401)
        # The cleared phone and email are free for another user.
        self.ok("POST", "/admin/user/create", {"name": unique("reuse"), "phone": v["phone"],
                                               "email": new_email, "password": pw}, token=ADMIN)

    def test_update_conflicts_409(self):
        a = self.ok("POST", "/admin/user/create", {
            "name": unique("ua"), "phone": "+86 138 %08d" % secrets.randbelow(10 ** 8),
            "email": "%s@a.example" % secrets.token_hex(5), "password": "ua-Secret-pw"},
            token=ADMIN)
        b = self.ok("POST", "/admin/user/create", {
            "name": unique("ub"), "phone": "+86 139 %08d" % secrets.randbelow(10 ** 8),
            "email": "%s@b.example" % secrets.token_hex(5), "password": "ub-Secret-pw"},
            token=ADMIN)
        for field in ("name", "phone", "email"):
            msg = self.fails(409, "POST", "/admin/user/update",
                             {"user_id": b["user_id"], field: a[field]}, token=ADMIN)
            self.assertIn(field, msg)
        # Nothing of b changed, and a keeps its names.
        self.assertEqual(
            self.ok("GET", "/admin/user/get?user_id=%d" % b["user_id"], token=ADMIN), b)
        self.ok("POST", "/token/login", {"login_name": a["phone"], "password": "ua-Secret-pw"})
        self.ok("POST", "/token/login", {"login_name": b["name"], "password": "ub-Secret-pw"})
        # Creating with a taken field is a conflict too.
        self.fails(409, "POST", "/admin/user/create", {"name": unique("uc"), "email": a["email"],
                                                       "password": "uc-Secret-pw"}, token=ADMIN)
        self.fails(404, "POST", "/admin/user/update", {"user_id": a["user_id"],
                                                       "name": unique("x")}, token=ADMIN2)

    def test_set_group_admin(self):
        uid, _, _ = self.new_user("gadmin")
        gid = 7_000_000 + secrets.randbelow(1_000_000)
        self.assertIs(self.ok("POST", "/admin/group/admin", {"group_id": gid, "user_id": uid},
                              token=ADMIN), True)
        self.assertEqual(self.devices(group=gid), [])
        self.fails(404, "POST", "/admin/group/admin", {"group_id": gid, "user_id": 987654321},
                   token=ADMIN)
        self.fails(404, "POST", "/admin/group/admin", {"group_id": gid, "user_id": uid},
                   token=ADMIN2)
        self.fails(400, "POST", "/admin/group/admin", {"group_id": gid}, token=ADMIN)

    def test_admin_calls_refuse_user_tokens(self):
        uid, _, pw = self.new_user("notadmin")
        s = self.login(uid, pw)
        for method, path, body in (
                ("GET", "/user/list", None),
                ("POST", "/admin/user/create", {"name": unique("x"), "password": "xx-Secret-pw"}),
                ("GET", "/admin/user/get?user_id=%d" % uid, None),
                ("POST", "/admin/user/update", {"user_id": uid, "name": unique("y")}),
                ("POST", "/admin/group/admin", {"group_id": 5, "user_id": uid}),
                ("PUT", "/user/enable", {"list": [uid]})):
            self.fails(403, method, path, body, token=s["token"])
            self.fails(401, method, path, body)


# ===========================================================================
# DeleteUser
# ===========================================================================

class DeleteUserTests(Base):
    def _traces(self, uid, texts):
        """Where the user still is: any key of any database holding the
        8-byte big-endian user id; any key or value of any database but the
        audit log holding that id or one of `texts`."""
        db = dump_lmdb(SRV.data)
        self.assertIn("users", db)
        needle = u64(uid)
        hits = []
        for name, items in db.items():
            for k, v in items:
                if needle in k:
                    hits.append("%s key %s" % (name, k.hex()))
                if name == "audit":
                    continue  # the log of who did what keeps the ids (see report)
                if needle in v:
                    hits.append("%s value of key %s holds the user id" % (name, k.hex()))
                for t in texts:
                    if t.encode() in k or t.encode() in v:
                        hits.append("%s holds %r" % (name, t))
        return hits

    def _assert_traced(self, uid, texts):
        """Before the delete: the scan does find the user (so that finding
        nothing afterwards means something)."""
        hits = self._traces(uid, texts)
        for t in texts:
            self.assertTrue([h for h in hits if repr(t) in h], "scan does not see %r" % t)
        for db in ("users", "user_sessions", "app_users"):
            self.assertTrue([h for h in hits if h.startswith(db + " key")], (db, hits))

    def _assert_no_trace(self, uid, texts):
        self.assertEqual(self._traces(uid, texts), [], "the deleted user left traces")

    def test_user_token_needs_the_password(self):
        uid, name, pw = self.new_user("del-self", phone="+49 30 %07d" % secrets.randbelow(10 ** 7),
                                      email="%s@del.example" % secrets.token_hex(5))
        guid = unique("g-del-self")
        s = self.login(uid, pw, guid=guid)
        self._assert_traced(uid, [name, guid])
        self.fails(401, "DELETE", "/user/delete", {"password": "wrong-password-1"},
                   token=s["token"])
        self.fails(400, "POST", "/user/delete", {}, token=s["token"])
        self.assert_valid(s["token"], uid)
        self.login(uid, pw)
        self.assertIs(self.ok("POST", "/user/delete", {"password": pw}, token=s["token"]), True)
        self.assert_invalid(s["token"])
        self.assert_login_fails(uid, pw)
        st, _ = self.call("POST", "/token/login", {"login_name": name, "password": pw})
        self.assertEqual(st, 401)
        self.fails(404, "GET", "/admin/user/get?user_id=%d" % uid, token=ADMIN)
        self._assert_no_trace(uid, [name, guid])

    def test_admin_delete_leaves_no_key(self):
        phone_in = "+33 1 %08d" % secrets.randbelow(10 ** 8)
        phone = "+" + "".join(c for c in phone_in if c.isdigit())
        email = "%s@gone.example" % secrets.token_hex(6)
        uid, name, pw = self.new_user("del-admin", phone=phone_in, email=email)
        other, _, opw = self.new_user("del-other")
        g1, g2 = unique("g-del-1"), unique("g-del-2")
        s1 = self.login(uid, pw, guid=g1, user_agent="DeleteMe/1")
        s2 = self.login(uid, pw, guid=g2, platform=2)
        s3 = self.login(uid, pw)
        self.ok("POST", "/user/token/bind", {"device_sn": 1, "device_token": "apns-del-" + name,
                                             "notifier_name": "apns"}, token=s1["token"])
        gid = 8_000_000 + secrets.randbelow(1_000_000)
        self.ok("POST", "/admin/group/admin", {"group_id": gid, "user_id": uid}, token=ADMIN)
        self.ok("POST", "/user/change_password", {"old_password": pw,
                                                  "new_password": pw + "-2"}, token=s1["token"])
        kept = self.login(other, opw, guid=unique("g-del-keep"))
        texts = [name, phone, email, g1, g2, "DeleteMe/1", "apns-del-" + name]
        self._assert_traced(uid, texts)
        self.assertIs(self.ok("DELETE", "/user/delete", {}, token=ADMIN, user=uid), True)
        for s in (s1, s2, s3):
            self.assert_invalid(s["token"])
            self.fails(401, "POST", "/store/resolve", {"store_token": s["store_token"]},
                       token=ADMIN)
        for s in (s1, s2):
            self.assertEqual(self.push_verify(s["push_token"])[0], 401)
        self.assert_login_fails(uid, pw + "-2")
        for login_name in (name, phone, email):
            st, _ = self.call("POST", "/token/login", {"login_name": login_name,
                                                      "password": pw + "-2"})
            self.assertEqual(st, 401, login_name)
        self.fails(404, "GET", "/user/device/list", token=ADMIN, group=gid)
        self.fails(404, "GET", "/user/device/list", token=ADMIN, user=uid)
        self.assertEqual(self.push_targets(uid), {"push_tokens": [], "device_tokens": []})
        self.assert_valid(kept["token"], other)
        self._assert_no_trace(uid, texts)
        # The name is free again.
        self.ok("POST", "/admin/user/create", {"name": name, "phone": phone, "email": email,
                                               "password": "reborn-Secret-pw"}, token=ADMIN)

    def test_admin_needs_a_user(self):
        self.fails(400, "POST", "/user/delete", {}, token=ADMIN)
        self.fails(404, "POST", "/user/delete", {}, token=ADMIN, user=987654321)
        uid, _, pw = self.new_user("del-xapp")
        self.fails(404, "DELETE", "/user/delete", {}, token=ADMIN2, user=uid)
        self.login(uid, pw)


# ===========================================================================
# Impersonation: admin token + user_id / group_id headers
# ===========================================================================

class ImpersonationTests(Base):
    def test_admin_issues_tokens_without_password(self):
        uid, _, pw = self.new_user("imp")
        for path in ("/token/id", "/token/login", "/token/user"):
            d = self.ok("POST", path, {}, token=ADMIN, user=uid)
            SRV.secret(d["token"])
            self.assertEqual(d["user_id"], uid, path)
            v = self.assert_valid(d["token"], uid)
            self.assertIs(v["admin"], False)
        # With a device: a push token, and the device is the user's.
        guid = unique("g-imp")
        d = self.ok("POST", "/token/id", {"device_guid": guid}, token=ADMIN, user=uid)
        self.assertRegex(d["push_token"], TOKEN_RE)
        self.assertEqual(self.push_verify(d["push_token"])[1]["data"]["user_id"], uid)

    def test_admin_of_another_app_cannot_issue(self):
        uid, _, _ = self.new_user("imp-xapp")
        self.fails(404, "POST", "/token/id", {}, token=ADMIN2, user=uid)
        self.fails(404, "POST", "/token/id", {}, token=ADMIN, user=987654321)

    def test_group_admin(self):
        uid, _, pw = self.new_user("imp-group")
        guid = unique("g-imp-group")
        self.login(uid, pw, guid=guid, platform=6, user_agent="GroupAdmin/1")
        gid = 9_000_000 + secrets.randbelow(1_000_000)
        self.ok("POST", "/admin/group/admin", {"group_id": gid, "user_id": uid}, token=ADMIN)
        self.assertEqual(self.devices(group=gid), [{"device_sn": 1, "platform": 6,
                                                    "user_agent": "GroupAdmin/1",
                                                    "user_id": uid}])
        d = self.ok("POST", "/token/id", {}, token=ADMIN, group=gid)
        SRV.secret(d["token"])
        self.assertEqual(d["user_id"], uid)
        # A new group admin takes over.
        uid2, _, _ = self.new_user("imp-group2")
        self.ok("POST", "/admin/group/admin", {"group_id": gid, "user_id": uid2}, token=ADMIN)
        self.assertEqual(self.ok("POST", "/token/user", {}, token=ADMIN, group=gid)["user_id"],
                         uid2)

    def test_unknown_group_404(self):
        self.fails(404, "GET", "/user/device/list", token=ADMIN, group=987654321,
                   words=["group_id"])
        self.fails(404, "POST", "/token/id", {}, token=ADMIN, group=987654321)
        gid = 6_000_000 + secrets.randbelow(1_000_000)
        uid, _, _ = self.new_user("imp-group-xapp")
        self.ok("POST", "/admin/group/admin", {"group_id": gid, "user_id": uid}, token=ADMIN)
        self.fails(404, "GET", "/user/device/list", token=ADMIN2, group=gid)

    def test_user_token_with_headers_403(self):
        uid, _, pw = self.new_user("imp-user")
        victim, _, _ = self.new_user("imp-victim")
        gid = 5_000_000 + secrets.randbelow(1_000_000)
        self.ok("POST", "/admin/group/admin", {"group_id": gid, "user_id": victim}, token=ADMIN)
        s = self.login(uid, pw)
        for hdr in ({"user": victim}, {"group": gid}):
            for method, path, body in (("GET", "/user/device/list", None),
                                       ("POST", "/user/kick", None),
                                       ("POST", "/token/revoke_all", {}),
                                       ("POST", "/token/id", {}),
                                       ("POST", "/token/login", {}),
                                       ("POST", "/token/user", {})):
                msg = self.fails(403, method, path, body, token=s["token"], **hdr)
                self.assertIn("admin token", msg, (path, hdr))
                self.assertIn("user_id" if "user" in hdr else "group_id", msg)
        self.assert_valid(s["token"], uid)

    def test_admin_token_needs_a_user(self):
        self.fails(400, "GET", "/user/device/list", token=ADMIN, words=["user_id"])
        self.fails(400, "POST", "/token/revoke_all", {}, token=ADMIN)


# ===========================================================================
# Audit
# ===========================================================================

class AuditTests(Base):
    def _actor(self, label):
        listed = SRV.cli("admin-token", "list", "--data", SRV.data, "--app", APP).stdout
        ids = [line.split()[0] for line in listed.splitlines() if line.endswith(label)]
        self.assertEqual(len(ids), 1, listed)
        return "admin:" + ids[0]

    def _entries(self, actor):
        """(action, detail) of each audit line by `actor`."""
        out = []
        for line in audit_lines(SRV):
            parts = line.split(" ", 4)
            if len(parts) >= 4 and parts[2] == actor:
                out.append((parts[3], parts[4] if len(parts) > 4 else ""))
        return out

    def assert_audited(self, entries, action, *words):
        found = [d for a, d in entries if a == action and all(w in d.split() for w in words)]
        self.assertTrue(found, "no audit entry %s %s in %r" % (action, " ".join(words), entries))

    def test_every_admin_action_is_audited(self):
        label = unique("audit")
        adm = admin_token(SRV, app=APP, label=label)
        actor = self._actor(label)
        uid, _, pw = self.new_user("audited")
        self.login(uid, pw, guid=unique("g-aud"))
        self.login(uid, pw, guid=unique("g-aud"))
        reg = self.ok("POST", "/user/register/v2", {"username": unique("aud-reg"),
                                                    "password": "aud-Secret-pw"}, token=adm)
        batch = self.ok("POST", "/user/register/batch",
                        {"list": [{"username": unique("aud-b"), "password": "aud-Secret-pw"}]},
                        token=adm)
        created = self.ok("POST", "/admin/user/create", {"name": unique("aud-c"),
                                                         "password": "aud-Secret-pw"}, token=adm)
        cid = created["user_id"]
        self.ok("POST", "/admin/user/update", {"user_id": cid, "name": unique("aud-u")}, token=adm)
        self.ok("POST", "/user/change_password_admin", {"password": "aud-New-pw-1"}, token=adm,
                user=uid)
        self.ok("PUT", "/user/disable", {"list": [cid]}, token=adm)
        self.ok("PUT", "/user/enable", {"list": [cid]}, token=adm)
        gid = 4_000_000 + secrets.randbelow(1_000_000)
        self.ok("POST", "/admin/group/admin", {"group_id": gid, "user_id": uid}, token=adm)
        self.ok("POST", "/token/id", {"device_guid": unique("g-aud-imp")}, token=adm, user=uid)
        self.ok("POST", "/user/kick?device_sn=1", token=adm, user=uid)
        self.ok("POST", "/user/device/remove?device_sn=2", token=adm, user=uid)
        self.ok("POST", "/token/revoke_all", {}, token=adm, group=gid)
        self.ok("DELETE", "/user/delete", {}, token=adm, user=reg["user_id"])
        e = self._entries(actor)
        u, c = "user_id=%d" % uid, "user_id=%d" % cid
        self.assert_audited(e, "RegisterUser", "user_id=%d" % reg["user_id"])
        self.assert_audited(e, "RegisterUsers", "user_id=%d" % batch[0]["user_id"])
        self.assert_audited(e, "CreateUser", c)
        self.assert_audited(e, "UpdateUser", c)
        self.assert_audited(e, "SetPassword", u)
        self.assert_audited(e, "DisableUsers", c)
        self.assert_audited(e, "EnableUsers", c)
        self.assert_audited(e, "SetGroupAdmin", "group_id=%d" % gid, u)
        self.assert_audited(e, "IssueToken", u)
        self.assert_audited(e, "Kick", u, "device_sn=1")
        self.assert_audited(e, "RemoveDevice", u, "device_sn=2")
        self.assert_audited(e, "LogoutAll", u)
        self.assert_audited(e, "DeleteUser", "user_id=%d" % reg["user_id"])

    def test_admin_device_token_changes_are_audited(self):
        label = unique("audit-bind")
        adm = admin_token(SRV, app=APP, label=label)
        actor = self._actor(label)
        uid, _, pw = self.new_user("audited-bind")
        self.login(uid, pw, guid=unique("g-aud-bind"))
        self.ok("POST", "/user/token/bind", {"device_sn": 1, "device_token": "apns-aud",
                                             "notifier_name": "apns"}, token=adm, user=uid)
        self.ok("POST", "/user/token/unbind?deviceSn=1", token=adm, user=uid)
        actions = [a for a, _ in self._entries(actor)]
        self.assertIn("BindDeviceToken", actions,
                      "an admin binding a device token for a user is not in the audit log")
        self.assertIn("UnbindDeviceToken", actions)

    def test_open_registration_and_cli_are_audited(self):
        name = unique("aud-open")
        d = self.ok("POST", "/user/register/v2", {"username": name, "password": "open-Secret-pw"},
                    app=OPEN_APP)
        lines = audit_lines(SRV)
        want = "user_id=%d" % d["user_id"]
        self.assertTrue(any("open-registration RegisterUser" in l and want in l.split()
                            for l in lines), lines[-5:])
        self.assertTrue(any(" cli admin-token create " in l for l in lines))

    def test_audit_holds_no_secret(self):
        text = "\n".join(audit_lines(SRV))
        leaked = sorted(s for s in SRV.secrets if s in text)
        self.assertEqual(leaked, [])


# ===========================================================================
# Concurrent CreateUser
# ===========================================================================

class ConcurrencyTests(Base):
    def test_concurrent_create_same_name(self):
        name = unique("race")
        barrier = threading.Barrier(8)

        def create(i):
            barrier.wait(10)
            return fresh_connection_request(
                SRV.port, "POST", "/admin/user/create",
                {"name": name, "password": "race-Secret-%d" % i}, {"access-token": ADMIN})

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            results = list(ex.map(create, range(8)))
        codes = sorted(s for s, _ in results)
        self.assertEqual(codes, [200] + [409] * 7, results)
        for s, b in results:
            self.assertEqual(b["code"], s)
            if s == 409:
                self.assertIn("name is already taken", b["message"])
        winner = [b["data"] for s, b in results if s == 200][0]
        self.assertEqual(winner["name"], name)
        i = [n for n, (s, _) in enumerate(results) if s == 200][0]
        self.ok("POST", "/token/login", {"login_name": name, "password": "race-Secret-%d" % i})
        # Exactly one user of that name is stored.
        names, page = [], 1
        while True:
            rows = self.ok("GET", "/user/list?page_num=%d&page_size=1000" % page, token=ADMIN)
            names += [r["username"] for r in rows if r["username"] == name]
            if len(rows) < 1000:
                break
            page += 1
        self.assertEqual(names, [name])

    def test_concurrent_create_different_names(self):
        """Different names at once all succeed, with distinct ids."""
        names = [unique("par") for _ in range(8)]
        barrier = threading.Barrier(8)

        def create(n):
            barrier.wait(10)
            return fresh_connection_request(SRV.port, "POST", "/admin/user/create",
                                            {"name": n, "password": "par-Secret-pw"},
                                            {"access-token": ADMIN})

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            results = list(ex.map(create, names))
        self.assertEqual([s for s, _ in results], [200] * 8, results)
        ids = {b["data"]["user_id"] for _, b in results}
        self.assertEqual(len(ids), 8)


if __name__ == "__main__":
    unittest.main(verbosity=2)
