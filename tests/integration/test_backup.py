"""test_backup.py - `tokend backup` while the server writes, `tokend restore` (issue 11).

A backup taken under a write load (registrations and logins over HTTP),
restored into a new directory and served: every account acknowledged
before the backup began logs in. Restore refuses a directory in use (the
server has it open: LMDB's lock on lock.mdb), even with --force, and a
non-empty one without --force; it refuses what is not a backup.
"""
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import wire_support as ws  # noqa: E402


class Backup(unittest.TestCase):
    def test_backup_under_load_restores_every_acknowledged_account(self):
        src = harness.Server()
        dst = None
        try:
            src.create_app("demo")
            admin = ws.admin_token(src)
            src.start("--workers", "2", *ws.CHEAP)
            acked = []          # (monotonic time of the answer, name)
            stop = threading.Event()
            errors = []

            def writer(prefix):
                i = 0
                while not stop.is_set():
                    name = "%s%05d" % (prefix, i)
                    pw = "pw-" + name
                    try:
                        r = src.request("POST", "/user/register/v2",
                                        {"username": name, "password": pw},
                                        headers={"access-token": admin})
                        if r.status != 200:
                            errors.append(r)
                            return
                        acked.append((time.monotonic(), name))
                        # a session write too: a login with a device
                        r = src.request("POST", "/token/login",
                                        {"login_name": name, "password": pw, "device_guid": name})
                        if r.status != 200:
                            errors.append(r)
                            return
                        src.secret(r.json()["data"]["token"])
                    except OSError as e:
                        errors.append(e)
                        return
                    i += 1

            threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b")]
            for t in threads:
                t.start()
            time.sleep(1.0)
            began = time.monotonic()
            out = os.path.join(src.tmp, "backup.mdb")
            p = src.cli("backup", "--data", src.data, "--out", out)
            self.assertIn("backup of", p.stderr)
            time.sleep(0.5)        # writes go on after the backup too
            stop.set()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            before = [n for t, n in acked if t < began]
            self.assertGreater(len(before), 20, "too little load before the backup")
            self.assertGreater(len(acked), len(before), "no write during or after the backup")
            # a second backup to the same file is refused, the first stays
            p = src.cli("backup", "--data", src.data, "--out", out, check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("exists", p.stderr)

            # Restore into the live directory: refused, --force or not.
            for extra in ([], ["--force"]):
                p = src.cli("restore", "--from", out, "--data", src.data, *extra, check=False)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("is in use", p.stderr)
            # Not a backup:
            junk = os.path.join(src.tmp, "junk")
            with open(junk, "wb") as f:
                f.write(b"not lmdb" * 1000)
            p = src.cli("restore", "--from", junk, "--data", os.path.join(src.tmp, "x"),
                        check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("not a tokend backup", p.stderr)

            dst = harness.Server(data_dir=None)
            p = dst.cli("restore", "--from", out, "--data", dst.data)
            self.assertIn("restored", p.stderr)
            dst.start("--workers", "2", *ws.CHEAP)
            for name in before:
                r = dst.request("POST", "/token/login",
                                {"login_name": name, "password": "pw-" + name})
                self.assertEqual(r.status, 200, (name, r))
                dst.secret(r.json()["data"]["token"])
            # the admin token came along: it is the same data directory's key
            r = dst.request("GET", "/user/list?page_num=1&page_size=1",
                            headers={"access-token": admin})
            self.assertEqual(r.status, 200, r)
            # a restore over the restored directory while it is served: refused
            p = dst.cli("restore", "--from", out, "--data", dst.data, "--force", check=False)
            self.assertIn("is in use", p.stderr)
            dst.stop()
            # stopped: non-empty needs --force, which then works
            p = dst.cli("restore", "--from", out, "--data", dst.data, check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("not empty", p.stderr)
            dst.cli("restore", "--from", out, "--data", dst.data, "--force")
            src.stop()
        finally:
            src.close()
            if dst:
                dst.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
