"""test_rotation.py - `tokend app rotate-key` across a running server (issue 11).

Over the real protocol (JSON and native gRPC): after a rotation made by the
CLI while the server runs, new logins get the app's new public key and
tokens hashed with the new key at once; tokens, store tokens, push tokens
and admin tokens of before keep working, and Verify returns each session
its own public key; after a restart too. Once no session uses the old
token-hash key, the purge retires it.
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import wire_support as ws  # noqa: E402
from test_metrics import scrape, value  # noqa: E402


class Rotation(unittest.TestCase):
    def test_rotation_keeps_old_sessions_and_switches_new_ones(self):
        pb = ws.protos()
        with harness.Server() as srv:
            srv.create_app("demo")
            srv.add_user("alice", "alice-password-1", **ws.CHEAP_USER)
            admin0 = ws.admin_token(srv)
            srv.start("--purge-interval", "1", *ws.CHEAP)

            def login(guid):
                r = srv.request("POST", "/token/login", {"login_name": "alice",
                                                         "password": "alice-password-1",
                                                         "device_guid": guid})
                self.assertEqual(r.status, 200, r)
                d = r.json()["data"]
                for k in ("token", "push_token", "store_token", "access_key_secret"):
                    srv.secret(d[k])
                return d

            def verify(token, admin, grpc=False):
                if grpc:
                    _, hdrs, body = ws.curl_grpc(
                        srv.port, "/tokend.v1.Tokend/Verify",
                        ws.frame(pb.tokend.VerifyRequest(token=token).SerializeToString()),
                        headers={"access-token": admin})
                    self.assertEqual(hdrs.get("grpc-status"), "0", hdrs)
                    reply = pb.tokend.VerifyReply()
                    reply.ParseFromString(ws.frames(body)[0][1])
                    return reply.public_key
                r = srv.request("POST", "/token/verify", {"token": token},
                                headers={"access-token": admin})
                self.assertEqual(r.status, 200, r)
                return r.json()["data"]["public_key"]

            before = login("phone-1")
            self.assertEqual(before["encrypt_type"], 4)
            again = login("phone-2")
            # one app key pair: every session gets its public half (32 bytes)
            self.assertEqual(before["public_key"], again["public_key"])
            self.assertEqual(len(__import__("base64").b64decode(before["public_key"])), 32)
            self.assertEqual(value(scrape(srv)[0], "tokend_token_hash_keys"), 1)

            p = srv.cli("app", "rotate-key", "--data", srv.data)
            self.assertIn("token-hash key 1", p.stdout)
            admin1 = ws.admin_token(srv)
            after = login("phone-3")
            self.assertNotEqual(after["public_key"], before["public_key"])
            self.assertEqual(value(scrape(srv)[0], "tokend_token_hash_keys"), 2)

            for admin in (admin0, admin1):      # admin tokens of both keys work
                for grpc in (False, True):
                    self.assertEqual(verify(before["token"], admin, grpc), before["public_key"])
                    self.assertEqual(verify(after["token"], admin, grpc), after["public_key"])
            A = {"access-token": admin1}
            for d in (before, after):
                r = srv.request("POST", "/store/resolve", {"store_token": d["store_token"]},
                                headers=A)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["data"]["access_key_secret"], d["access_key_secret"])
                r = srv.request("POST", "/push/verify", {"push_token": d["push_token"]}, headers=A)
                self.assertEqual(r.status, 200, r)
            r = srv.request("POST", "/push/targets", {"user_id": before["user_id"]}, headers=A)
            self.assertEqual(sorted(r.json()["data"]["push_tokens"]),
                             sorted([before["push_token"], again["push_token"],
                                     after["push_token"]]))
            # the user's own old token still acts
            r = srv.request("GET", "/user/device/list", headers={"access-token": before["token"]})
            self.assertEqual(r.status, 200, r)

            # a restart: the ring is in the data directory
            srv.stop()
            srv.start("--purge-interval", "1", *ws.CHEAP)
            self.assertEqual(verify(before["token"], admin0), before["public_key"])
            self.assertEqual(verify(after["token"], admin1), after["public_key"])

            # no session of key 0 left (sign-outs, the old admin token revoked):
            # the purge retires it, and tokens of the new key go on
            for d in (before, again):
                r = srv.request("POST", "/token/revoke", {}, headers={"access-token": d["token"]})
                self.assertEqual(r.status, 200, r)
            lst = srv.cli("admin-token", "list", "--data", srv.data).stdout.split()
            ids = [w for w in lst if len(w) == 16]
            for i in ids:
                srv.cli("admin-token", "revoke", "--data", srv.data, "--id", i)
            admin2 = ws.admin_token(srv)
            deadline = time.monotonic() + 10
            while value(scrape(srv)[0], "tokend_token_hash_keys") != 1:
                self.assertLess(time.monotonic(), deadline, "key 0 was not retired")
                time.sleep(0.2)
            self.assertEqual(verify(after["token"], admin2), after["public_key"])
            r = srv.request("POST", "/token/verify", {"token": before["token"]},
                            headers={"access-token": admin2})
            self.assertEqual(r.status, 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
