#!/usr/bin/python3
"""Crash safety and start-up faults of a real tokend.

KillNine: a write load from several threads (users created with POST
/admin/user/create and an admin token; logins with a device_guid, which
write a session and a device) runs against the server, which is killed
with SIGKILL in the middle of it, then restarted on the same data
directory. Everything the server acknowledged (HTTP 200) before the kill
must be there afterwards: every user logs in, every session token verifies
(POST /token/verify), every push token resolves to its device (POST
/push/verify), every device is listed (GET /user/device/list). The data
directory must open clean after each kill (mdb_dump reads every database,
the CLI opens it). ROUNDS kills (TOKEND_CRASH_ROUNDS, default 5); the totals
are printed: acknowledged writes, kills, lost (must be 0).

StartRefusals: --data naming a regular file, a path under /proc, a
directory stamped with a later data layout (the CLI refuses it too), a
read-only directory (a read-only tmpfs or bind mount when run as root,
which ignores permissions; chmod 0500 otherwise): the server must exit
non-zero at once with one clear line on stderr. FullDisk (root only, a
160 KiB tmpfs): writes fail cleanly (503 "the data store is full"), the
server keeps serving reads, recovers when space is freed, and a SIGKILL
afterwards loses nothing it acknowledged. Without mount(2) those skip.
(LMDB turns a short write into EIO: the 503 may say "the data store
failed" rather than "full"; both are accepted.)

Passwords are hashed at a low cost (--pwhash-ops 1 --pwhash-mem 8) so the
load is writes, not Argon2.
"""
import concurrent.futures
import http.client
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import lifecycle_support as ls  # noqa: E402

ROUNDS = int(os.environ.get("TOKEND_CRASH_ROUNDS", "5"))
THREADS = 4
LOAD_SECONDS = (1.5, 3.0)   # load before the kill, chosen at random per round
LOW = ("--pwhash-ops", "1", "--pwhash-mem", "8")
MDB_DUMP = shutil.which("mdb_dump") or "/usr/bin/mdb_dump"


def call(srv, method, path, body=None, token=None, timeout=15):
    """(HTTP status, envelope) or (None, None) when the connection failed."""
    hdrs = {"access-token": token} if token else {}
    try:
        r = srv.request(method, path, body, headers=hdrs, timeout=timeout)
    except (OSError, http.client.HTTPException):
        return None, None
    try:
        return r.status, r.json()
    except ValueError:
        return r.status, None


def admin_token(srv):
    tok = srv.cli("admin-token", "create", "--data", srv.data).stdout.strip()
    if not tok:
        raise harness.HarnessError("admin-token create printed nothing")
    return srv.secret(tok)


class Ledger:
    """What the server acknowledged, by round."""

    def __init__(self, srv):
        self.srv = srv
        self.lock = threading.Lock()
        self.users = {}      # user_id -> (name, password, round)
        self.sessions = []   # (token, push_token, user_id, device_guid, round)
        self.attempts = 0

    def user(self, uid, name, password, rnd):
        with self.lock:
            self.users[uid] = (name, password, rnd)

    def session(self, token, push, uid, guid, rnd):
        self.srv.secret(token)
        self.srv.secret(push)
        with self.lock:
            self.sessions.append((token, push, uid, guid, rnd))

    def sent(self):
        with self.lock:
            self.attempts += 1

    def any_user(self):
        with self.lock:
            if not self.users:
                return None
            uid = random.choice(list(self.users))
            return uid, self.users[uid][0], self.users[uid][1]


def load(srv, admin, ledger, rnd, tid, stop):
    """One client thread: create a user, log it in on a new device, and log
    in some earlier user on a new device, until stopped."""
    i = 0
    while not stop.is_set():
        i += 1
        name = "r%dt%dn%d" % (rnd, tid, i)
        password = srv.secret("pw-" + secrets.token_hex(8))
        ledger.sent()
        st, env = call(srv, "POST", "/admin/user/create", {"name": name, "password": password},
                       token=admin)
        if st != 200:
            if st is None:
                time.sleep(0.01)
            continue
        uid = int(env["data"]["user_id"])
        ledger.user(uid, name, password, rnd)
        for k, who in enumerate(((uid, name, password), ledger.any_user())):
            if stop.is_set():
                break
            guid = "dev-%d-%d-%d-%d" % (rnd, tid, i, k)
            ledger.sent()
            st, env = call(srv, "POST", "/token/login",
                           {"login_name": who[1], "password": who[2], "device_guid": guid,
                            "platform": 5})
            if st == 200:
                d = env["data"]
                if int(d["user_id"]) != who[0]:
                    raise AssertionError("login of %s answered user %s" % (who[1], d["user_id"]))
                ledger.session(d["token"], d["push_token"], who[0], guid, rnd)


def verify(srv, admin, ledger, rounds):
    """Checks what was acknowledged in `rounds`; returns the list of losses."""
    users = [(uid, u) for uid, u in ledger.users.items() if u[2] in rounds]
    sessions = [s for s in ledger.sessions if s[4] in rounds]
    lost = []

    def check_user(item):
        uid, (name, password, _) = item
        st, env = call(srv, "POST", "/token/login", {"login_name": name, "password": password})
        if st != 200 or int(env["data"]["user_id"]) != uid:
            return "user %d (%s): login answered %s %r" % (uid, name, st, env)
        srv.secret(env["data"]["token"])
        return None

    def check_session(s):
        token, push, uid, guid, _ = s
        st, env = call(srv, "POST", "/token/verify", {"token": token}, token=admin)
        if st != 200:
            return "session of user %d (%s): verify answered %s %r" % (uid, guid, st, env), None
        d = env["data"]
        if int(d["user_id"]) != uid or d["device_guid"] != guid:
            return "session of user %d (%s): verify says %r" % (uid, guid, d), None
        st, env = call(srv, "POST", "/push/verify", {"push_token": push}, token=admin)
        if st != 200 or env["data"]["device_guid"] != guid or int(env["data"]["user_id"]) != uid:
            return "push token of user %d (%s): %s %r" % (uid, guid, st, env), None
        return None, (uid, d["device_sn"], token)

    def check_devices(item):
        uid, (sns, token) = item
        st, env = call(srv, "GET", "/user/device/list", token=token)
        if st != 200:
            return "devices of user %d: list answered %s %r" % (uid, st, env)
        listed = {d["device_sn"] for d in env["data"]}
        missing = sns - listed
        if missing:
            return "devices of user %d: %s not listed (listed %s)" % (uid, sorted(missing),
                                                                    sorted(listed))
        return None

    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        lost += [r for r in ex.map(check_user, users) if r]
        devices = {}
        for err, dev in ex.map(check_session, sessions):
            if err:
                lost.append(err)
            else:
                uid, sn, token = dev
                devices.setdefault(uid, (set(), token))[0].add(sn)
        lost += [r for r in ex.map(check_devices, devices.items()) if r]
    return lost, len(users), len(sessions)


def opens_clean(srv, some_user):
    """The data directory after a kill: LMDB reads every database, and the
    CLI opens it (a write transaction) and reads a user."""
    p = subprocess.run([MDB_DUMP, "-a", srv.data], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise AssertionError("mdb_dump -a after the kill: exit %d: %s" % (p.returncode,
                                                                       p.stderr.decode()))
    if some_user is not None:
        srv.show_user(some_user)


class KillNine(unittest.TestCase):
    def test_acknowledged_writes_survive_sigkill(self):
        srv = harness.Server()
        try:
            srv.create_app("crash-app")
            admin = admin_token(srv)
            ledger = Ledger(srv)
            srv.start(*LOW)
            kills = 0
            for rnd in range(ROUNDS):
                stop = threading.Event()
                # daemon: a failure below must not leave the process waiting on them
                threads = [threading.Thread(target=load, args=(srv, admin, ledger, rnd, t, stop),
                                            daemon=True)
                           for t in range(THREADS)]
                for t in threads:
                    t.start()
                time.sleep(random.uniform(*LOAD_SECONDS))
                if srv.proc.poll() is not None:
                    stop.set()
                    self.fail("tokend died on its own under load (exit %s): %s" %
                              (srv.proc.returncode, srv.logs()[-3000:]))
                os.kill(srv.proc.pid, signal.SIGKILL)
                kills += 1
                stop.set()
                for t in threads:
                    t.join(60)
                    self.assertFalse(t.is_alive(), "a load thread hangs after the kill")
                srv.kill()  # reaps it
                opens_clean(srv, next(iter(ledger.users), None))
                srv.start(*LOW)
                lost, nu, ns = verify(srv, admin, ledger, {rnd})
                self.assertEqual(lost, [], "round %d: acknowledged, then lost:\n%s" %
                                 (rnd + 1, "\n".join(lost[:20])))
                print("crash round %d: %d users and %d logins acknowledged, kill -9, all there"
                      % (rnd + 1, nu, ns), file=sys.stderr)
            lost, nu, ns = verify(srv, admin, ledger, set(range(ROUNDS)))
            self.assertEqual(lost, [], "acknowledged, then lost:\n%s" % "\n".join(lost[:20]))
            self.assertGreater(nu, 0, "no write was acknowledged: the load did not run")
            print("crash: %d kills, %d acknowledged writes (%d users created, %d logins with a "
                  "device), %d requests sent, lost 0" % (kills, nu + ns, nu, ns, ledger.attempts),
                  file=sys.stderr)
            srv.stop()
        finally:
            srv.close()


def serve_refused(testcase, data, why):
    """tokend serve --data data must exit non-zero within 20 s with one line."""
    cmd = [harness.BIN, "serve", "--data", data, "--listen", "127.0.0.1:%d" % harness.free_port()]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        testcase.fail("tokend serve --data %s (%s) still runs after 20 s" % (data, why))
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    testcase.assertNotEqual(p.returncode, 0, "%s: tokend serve exited 0" % why)
    testcase.assertEqual(len(lines), 1, "%s: want one line on stderr, got %r" % (why, p.stderr))
    testcase.assertIn(data, lines[0], "%s: the message does not name the path" % why)
    testcase.assertTrue(lines[0].startswith("tokend: "), lines[0])
    print("refused (%s): %s" % (why, lines[0]), file=sys.stderr)
    return lines[0]


def mount(*args):
    """mount(8); False when this environment does not allow it."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", *args], capture_output=True, timeout=30).returncode == 0


def umount(path):
    subprocess.run(["umount", path], capture_output=True, timeout=30)


class StartRefusals(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tokend-crash-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_data_is_a_regular_file(self):
        path = os.path.join(self.tmp, "not-a-dir")
        with open(path, "w") as f:
            f.write("keep me\n")
        serve_refused(self, path, "a regular file")
        with open(path) as f:
            self.assertEqual(f.read(), "keep me\n", "the file was changed")

    def test_data_of_a_later_layout(self):
        # A directory stamped by a later build: refused, by the server and
        # the CLI alike, and left as it was; it opens again once its stamp
        # is one this build reads.
        data = os.path.join(self.tmp, "data")
        srv = harness.Server(data_dir=data)
        try:
            app = srv.create_app("layout-app")
        finally:
            shutil.rmtree(srv.tmp, ignore_errors=True)
        meta = dict(ls.dump_lmdb(data)["meta"])
        self.assertEqual(meta[b"layout"], ls.u64(1))
        ls.load_lmdb(data, "meta", [(b"layout", ls.u64(7))])
        before = ls.dump_lmdb(data)
        line = serve_refused(self, data, "a directory of a later layout")
        self.assertIn("written by a later tokend (data layout 7; this one reads layout 1)", line)
        p = subprocess.run([harness.BIN, "app", "create", "--data", data, "--name", "x"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual((p.returncode, p.stdout), (1, ""), p.stderr)
        self.assertIn("data layout 7", p.stderr)
        self.assertEqual(ls.dump_lmdb(data), before, "the refused directory was changed")
        ls.load_lmdb(data, "meta", [(b"layout", ls.u64(1))])
        p = subprocess.run([harness.BIN, "app", "create", "--data", data, "--name", "y"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotEqual(p.stdout.strip(), str(app))
        # A backup of a later layout: restore refuses it before replacing anything.
        later = os.path.join(self.tmp, "later")
        shutil.copytree(data, later)
        ls.load_lmdb(later, "meta", [(b"layout", ls.u64(7))])
        backup = os.path.join(self.tmp, "later.mdb")
        shutil.copyfile(os.path.join(later, "data.mdb"), backup)
        before = ls.dump_lmdb(data)
        p = subprocess.run([harness.BIN, "restore", "--from", backup, "--data", data, "--force"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("was made by a later tokend (data layout 7", p.stderr)
        self.assertEqual(ls.dump_lmdb(data), before, "the refused restore changed the directory")

    def test_data_under_proc(self):
        serve_refused(self, "/proc/tokend-crash-test/data", "a path under /proc")
        serve_refused(self, "/proc/self", "/proc/self")

    def test_read_only_data_directory(self):
        # An existing data directory, then the same read-only.
        srv = harness.Server(data_dir=os.path.join(self.tmp, "data"))
        try:
            srv.create_app("ro-app")
        finally:
            shutil.rmtree(srv.tmp, ignore_errors=True)
        ro_empty = os.path.join(self.tmp, "ro-empty")
        ro_data = os.path.join(self.tmp, "ro-data")
        os.mkdir(ro_empty)
        os.mkdir(ro_data)
        if os.geteuid() != 0:
            os.chmod(ro_empty, 0o500)
            shutil.rmtree(ro_data)
            shutil.copytree(os.path.join(self.tmp, "data"), ro_data)
            os.chmod(ro_data, 0o500)
            try:
                serve_refused(self, ro_empty, "an empty read-only directory")
                serve_refused(self, ro_data, "a read-only data directory")
            finally:
                os.chmod(ro_empty, 0o700)
                os.chmod(ro_data, 0o700)
            return
        # root ignores permissions: a read-only tmpfs and a read-only bind mount
        if not mount("-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", ro_empty):
            self.skipTest("root without mount(2) here: cannot make a read-only directory")
        try:
            serve_refused(self, ro_empty, "an empty read-only file system")
            serve_refused(self, os.path.join(ro_empty, "sub"), "a new directory on it")
        finally:
            umount(ro_empty)
        if not mount("--bind", os.path.join(self.tmp, "data"), ro_data):
            self.skipTest("no bind mounts here")
        try:
            if not mount("-o", "remount,ro,bind", ro_data):
                self.skipTest("cannot remount a bind mount read-only here")
            serve_refused(self, ro_data, "a read-only data directory")
        finally:
            umount(ro_data)


class FullDisk(unittest.TestCase):
    def test_full_disk_fails_cleanly_and_loses_nothing(self):
        tmp = tempfile.mkdtemp(prefix="tokend-full-")
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        if not mount("-t", "tmpfs", "-o", "size=160k", "tmpfs", mnt):
            shutil.rmtree(tmp, ignore_errors=True)
            self.skipTest("needs root and mount(2) for a small tmpfs")
        srv = harness.Server(data_dir=os.path.join(mnt, "data"))
        try:
            srv.create_app("full-app")
            admin = admin_token(srv)
            ledger = Ledger(srv)
            srv.start(*LOW, "--map-size", "1")
            full = None
            token = None
            for i in range(5000):
                name, password = "f%d" % i, srv.secret("pw-" + secrets.token_hex(8))
                st, env = call(srv, "POST", "/admin/user/create",
                               {"name": name, "password": password}, token=admin)
                if st == 200:
                    ledger.user(int(env["data"]["user_id"]), name, password, 0)
                    if token is None:
                        st, env = call(srv, "POST", "/token/login",
                                       {"login_name": name, "password": password,
                                        "device_guid": "full-dev"})
                        self.assertEqual(st, 200, env)
                        token = srv.secret(env["data"]["token"])
                        ledger.session(token, env["data"]["push_token"],
                                       int(env["data"]["user_id"]), "full-dev", 0)
                    continue
                full = (st, env)
                break
            self.assertIsNotNone(full, "5000 users fit in 160 KiB?")
            self.assertEqual(full[0], 503, full)
            # LMDB reports ENOSPC as such ("full"), but a short write (some
            # room, not enough) as EIO: tokend then says "failed" and logs
            # "tokend: store: Input/output error". Either way a clean 503.
            self.assertIn(full[1]["message"], ("the data store is full", "the data store failed"),
                          full)
            print("full disk after %d users: %d %s" % (len(ledger.users), full[0],
                                                       full[1]["message"]), file=sys.stderr)
            # still serving: health, reads; a login (a write) is refused the same way
            self.assertIsNone(srv.proc.poll(), "tokend exited on a full disk")
            self.assertEqual(call(srv, "GET", "/healthz")[0], 200)
            self.assertEqual(call(srv, "POST", "/token/verify", {"token": token}, token=admin)[0],
                             200)
            uid, name, password = ledger.any_user()
            st, env = call(srv, "POST", "/token/login", {"login_name": name, "password": password})
            self.assertIn(st, (200, 503), env)
            # space again: writes work without a restart
            self.assertTrue(mount("-o", "remount,size=4m", mnt), "cannot grow the tmpfs")
            name, password = "after-full", srv.secret("pw-" + secrets.token_hex(8))
            st, env = call(srv, "POST", "/admin/user/create", {"name": name, "password": password},
                           token=admin)
            self.assertEqual(st, 200, env)
            ledger.user(int(env["data"]["user_id"]), name, password, 0)
            # and a kill loses nothing acknowledged
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.kill()
            opens_clean(srv, next(iter(ledger.users)))
            srv.start(*LOW)
            lost, nu, ns = verify(srv, admin, ledger, {0})
            self.assertEqual(lost, [], "\n".join(lost[:20]))
            srv.stop()
        finally:
            srv.kill()
            umount(mnt)
            srv.close()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
