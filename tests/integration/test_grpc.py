#!/usr/bin/python3
"""Integration tests of tokend's native gRPC (application/grpc over HTTP/2)
against two independent clients: grpcio (Python) and the gRPC C core through
build/tokend-call. Every suite runs on cleartext h2c and again on TLS.

The schema is proto/ compiled with protoc at test time (wire_support.py);
calls go through grpcio's generic unary_unary with the generated classes.

What is covered, per transport:
  * the three logins, with every reply field checked;
  * every error status a client can meet, with its exact message, and
    UNIMPLEMENTED for unknown methods; gzip and deflate requests;
  * metadata (access-token, app_id, user_id, group_id) giving exactly what
    the same HTTP headers give on the JSON paths;
  * deadlines: a 1 ms deadline on a slow login is DEADLINE_EXCEEDED and the
    server keeps serving; the server's own grpc-timeout check;
  * 1000 sequential calls on one channel; 8 threads at once;
  * tokend-call (C core): success, exit code = status, metadata, TLS,
    deadline, --repeat 1000.
"""
import base64
import concurrent.futures
import json
import os
import re
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import wire_support as ws  # noqa: E402

import grpc  # noqa: E402

PB = None
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
WEEK_MS = 7 * 24 * 3600 * 1000
BAD_CREDENTIALS = "invalid credentials: unknown user or wrong password"
WATCH_UNIMPLEMENTED = "Health/Watch is not served (tokend cannot hold a stream open): use Health/Check"
GROUP = 4242
THREADS = 8

PW = {"alice": "alice-Grpc-8d2k", "bob": "bob-Grpc-3n7q", "carol": "carol-Grpc-5v1x",
      "slow": "slow-Grpc-6t4w"}

ENVS = {}   # "plain", "tls", "slow_plain", "slow_tls" -> Env


class Env:
    """A started server, its population and how to reach it by gRPC."""

    def __init__(self, srv, tls):
        self.srv, self.tls = srv, tls
        self.ids, self.apps = {}, {}
        self.admin = self.admin_other = None

    def target(self, host="127.0.0.1"):
        return "%s:%d" % (host, self.srv.port)

    def channel(self, host="127.0.0.1", root=None):
        if self.tls:
            creds = grpc.ssl_channel_credentials(root_certificates=root or self.srv.cert_pem)
            return grpc.secure_channel(self.target(host), creds, options=ws.NO_PROXY)
        return grpc.insecure_channel(self.target(host), options=ws.NO_PROXY)


def populate(env, slow=False):
    srv = env.srv
    env.apps["main"] = srv.create_app("grpc-main")
    if slow:
        env.ids["slow"] = srv.add_user("slowpoke", PW["slow"], **ws.SLOW_USER)
        srv.start(*ws.SLOW)
        return env
    env.apps["other"] = srv.create_app("grpc-other", encrypt_type=0)
    env.ids["alice"] = srv.add_user("alice", PW["alice"], phone="+1 555 0142",
                                    email="Alice@Example.com", **ws.CHEAP_USER)
    env.ids["bob"] = srv.add_user("bob_g", PW["bob"], **ws.CHEAP_USER)
    env.ids["carol"] = srv.add_user("carol", PW["carol"], app=env.apps["other"], **ws.CHEAP_USER)
    for i in range(THREADS):
        env.ids["w%d" % i] = srv.add_user("worker%d" % i, "pw-worker-%d-x" % i, **ws.CHEAP_USER)
    env.admin = ws.admin_token(srv)
    env.admin_other = ws.admin_token(srv, env.apps["other"])
    srv.start(*ws.CHEAP)
    ch = env.channel()
    try:
        c = Client(ch)
        # devices, so ListDevices has something to compare
        for who, guid in (("alice", "it-alice-dev"), ("bob", "it-bob-dev")):
            r = c.call("TokenById", user_id=env.ids[who], password=PW[who], device_guid=guid,
                       platform=5, user_agent="it-%s-ua" % who)
            srv.secret(r.token), srv.secret(r.push_token), srv.secret(r.store_token)
            env.ids[who + "_token"] = r.token
        c.call("SetGroupAdmin", {"access-token": env.admin}, group_id=GROUP,
               user_id=env.ids["bob"])
    finally:
        ch.close()
    return env


def setUpModule():
    global PB
    PB = ws.protos()
    for name, cls, slow in (("plain", harness.Server, False), ("tls", ws.TlsServer, False),
                            ("slow_plain", harness.Server, True),
                            ("slow_tls", ws.TlsServer, True)):
        srv = cls()
        ENVS[name] = Env(srv, cls is ws.TlsServer)
        try:
            populate(ENVS[name], slow)
        except BaseException:
            tearDownModule()
            raise


def tearDownModule():
    errors = []
    for env in ENVS.values():
        try:
            env.srv.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            env.srv.close()
    ENVS.clear()
    if errors:
        raise AssertionError("; ".join(errors))


# --- calling ------------------------------------------------------------------

def method_info(name):
    """'TokenById' or 'Health/Check' -> (path, request class, reply class)."""
    module, service = PB.tokend, "Tokend"
    if "/" in name:
        service, name = name.split("/")
        module = PB.health if service == "Health" else PB.tokend
    sd = module.DESCRIPTOR.services_by_name[service]
    md = sd.methods_by_name[name]
    return ("/%s/%s" % (sd.full_name, name), getattr(module, md.input_type.name),
            getattr(module, md.output_type.name))


class Client:
    def __init__(self, channel):
        self.ch = channel
        self._stubs = {}

    def stub(self, name):
        if name not in self._stubs:
            path, req, rep = method_info(name)
            self._stubs[name] = (self.ch.unary_unary(path, request_serializer=req.SerializeToString,
                                                     response_deserializer=rep.FromString), req)
        return self._stubs[name]

    def call(self, method, md=None, timeout=30, /, **fields):
        stub, req = self.stub(method)
        return stub(req(**fields), metadata=list((md or {}).items()), timeout=timeout)

    def fails(self, method, md=None, timeout=30, /, **fields):
        """The call's (StatusCode, details); a success is an AssertionError."""
        try:
            r = self.call(method, md, timeout, **fields)
        except grpc.RpcError as e:
            return e.code(), e.details()
        raise AssertionError("%s succeeded: %r" % (method, r))


def json_call(env, verb, path, body=None, headers=None):
    r = env.srv.request(verb, path, body if verb != "GET" else None, headers=headers)
    if not r.header("content-type", "").startswith("application/json"):
        raise AssertionError("%s %s: not JSON: %r" % (verb, path, r))
    env_ = r.json()
    if env_.get("code") != r.status:
        raise AssertionError("%s %s: envelope code %r vs HTTP %d" % (verb, path, env_, r.status))
    return r.status, env_


HTTP_OF = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
           grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
           grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.UNIMPLEMENTED: 501,
           grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.UNAVAILABLE: 503}


# --- the suites, once per transport ---------------------------------------------

class GrpcSuite:
    ENV = None  # "plain" or "tls"

    @classmethod
    def setUpClass(cls):
        cls.env = ENVS[cls.ENV]
        cls.ch = cls.env.channel()
        cls.c = Client(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()

    def login(self, method, md=None, /, **fields):
        r = self.c.call(method, md, **fields)
        self.env.srv.secret(r.token), self.env.srv.secret(r.store_token)
        self.env.srv.secret(r.push_token)
        return r

    def assert_token_reply(self, r, user, encrypt_type=4, key_bytes=32, device=False):
        now = int(time.time() * 1000)
        self.assertEqual(r.user_id, self.env.ids[user])
        self.assertRegex(r.token, TOKEN_RE)
        self.assertRegex(r.store_token, TOKEN_RE)
        self.assertNotEqual(r.token, r.store_token)
        self.assertEqual(r.encrypt_type, encrypt_type)
        self.assertTrue(now + WEEK_MS - 60000 <= r.expire <= now + WEEK_MS + 60000, r.expire)
        self.assertEqual(len(base64.b64decode(r.access_key_secret, validate=True)), 32)
        if key_bytes:
            self.assertEqual(len(base64.b64decode(r.public_key, validate=True)), key_bytes)
        else:
            self.assertEqual(r.public_key, "")
        if device:
            self.assertRegex(r.push_token, TOKEN_RE)
        else:
            self.assertEqual(r.push_token, "")
        # the token really is a session of that user, in the main app
        v = self.c.call("Verify", {"access-token": self.env.admin}, token=r.token)
        self.assertEqual((v.user_id, v.app_id, v.admin, v.expire),
                         (r.user_id, self.env.apps["main"], False, r.expire))
        return r

    # --- logins ---

    def test_token_by_id(self):
        r = self.login("TokenById", user_id=self.env.ids["alice"], password=PW["alice"])
        self.assert_token_reply(r, "alice")

    def test_token_by_id_with_device_gives_push_token(self):
        r = self.login("TokenById", user_id=self.env.ids["bob"], password=PW["bob"],
                       device_guid="grpc-dev-%s" % self.ENV, platform=2)
        self.assert_token_reply(r, "bob", device=True)
        p = self.c.call("VerifyPushToken", {"access-token": self.env.admin},
                        push_token=r.push_token)
        self.assertEqual((p.user_id, p.device_guid), (self.env.ids["bob"], "grpc-dev-%s" % self.ENV))

    def test_token_by_login(self):
        for name in ("+1 555 0142", "+15550142", "alice@example.com", "ALICE@example.COM", "alice"):
            with self.subTest(login_name=name):
                r = self.login("TokenByLogin", login_name=name, password=PW["alice"])
                self.assert_token_reply(r, "alice")

    def test_token_by_name(self):
        r = self.login("TokenByName", name="bob_g", password=PW["bob"])
        self.assert_token_reply(r, "bob")
        r = self.login("TokenByName", mobile="+15550142", password=PW["alice"])
        self.assert_token_reply(r, "alice")

    def test_app_id_metadata_selects_the_app(self):
        code, msg = self.c.fails("TokenByName", name="carol", password=PW["carol"])
        self.assertEqual((code, msg), (grpc.StatusCode.UNAUTHENTICATED, BAD_CREDENTIALS))
        r = self.login("TokenByName", {"app_id": str(self.env.apps["other"])}, name="carol",
                       password=PW["carol"])
        self.assertEqual(r.user_id, self.env.ids["carol"])
        self.assertEqual((r.encrypt_type, r.public_key), (0, ""))
        v = self.c.call("Verify", {"access-token": self.env.admin_other}, token=r.token)
        self.assertEqual((v.user_id, v.app_id), (self.env.ids["carol"], self.env.apps["other"]))

    # --- errors ---

    def test_error_statuses(self):
        S = grpc.StatusCode
        e = self.env
        alice_tok = e.ids["alice_token"]
        cases = [
            ("missing password", "TokenById", {}, {"user_id": e.ids["alice"]},
             S.INVALID_ARGUMENT, "password is required"),
            ("missing user_id", "TokenById", {}, {"password": "x"},
             S.INVALID_ARGUMENT, "user_id is required (a positive integer)"),
            ("missing login_name", "TokenByLogin", {}, {"password": "x"},
             S.INVALID_ARGUMENT, "login_name is required"),
            ("missing name", "TokenByName", {}, {"password": "x"},
             S.INVALID_ARGUMENT, "name is required"),
            ("long password", "TokenById", {}, {"user_id": 1, "password": "p" * 1025},
             S.INVALID_ARGUMENT, "password must be at most 1024 bytes"),
            ("malformed app_id", "TokenById", {"app_id": "abc"},
             {"user_id": e.ids["alice"], "password": PW["alice"]},
             S.INVALID_ARGUMENT, "app_id header must be a positive integer"),
            ("malformed user_id", "Verify", {"access-token": e.admin, "user_id": "-1"},
             {"token": alice_tok}, S.INVALID_ARGUMENT, "user_id header must be a positive integer"),
            ("malformed group_id", "ListDevices", {"access-token": e.admin, "group_id": "x"}, {},
             S.INVALID_ARGUMENT, "group_id header must be a positive integer"),
            ("wrong password", "TokenById", {},
             {"user_id": e.ids["alice"], "password": PW["bob"]},
             S.UNAUTHENTICATED, BAD_CREDENTIALS),
            ("unknown user", "TokenByLogin", {}, {"login_name": "nobody", "password": "x"},
             S.UNAUTHENTICATED, BAD_CREDENTIALS),
            ("unknown app", "TokenById", {"app_id": "987654"},
             {"user_id": e.ids["alice"], "password": PW["alice"]},
             S.NOT_FOUND, "unknown app_id 987654"),
            ("verify without access-token", "Verify", {}, {"token": alice_tok},
             S.UNAUTHENTICATED, "access-token header (an admin token) is required"),
            ("verify with a non-token", "Verify", {"access-token": "not-a-token"},
             {"token": alice_tok}, S.UNAUTHENTICATED, "invalid token"),
            ("verify of a non-token", "Verify", {"access-token": e.admin}, {"token": "nope"},
             S.UNAUTHENTICATED, "invalid token"),
            ("verify without token", "Verify", {"access-token": e.admin}, {},
             S.INVALID_ARGUMENT, "token is required"),
            ("verify with admin of another app", "Verify", {"access-token": e.admin_other},
             {"token": alice_tok}, S.UNAUTHENTICATED, "invalid token"),
            ("admin token for another app_id", "Verify",
             {"access-token": e.admin, "app_id": str(e.apps["other"])}, {"token": alice_tok},
             S.UNAUTHENTICATED, "invalid token for app_id %d" % e.apps["other"]),
            ("user token with user_id on Verify", "Verify",
             {"access-token": alice_tok, "user_id": str(e.ids["bob"])}, {"token": alice_tok},
             S.PERMISSION_DENIED, "this call needs an admin token of the app"),
            ("user token with user_id on a login", "TokenById",
             {"access-token": alice_tok, "user_id": str(e.ids["bob"])},
             {"user_id": e.ids["bob"], "password": PW["bob"]},
             S.PERMISSION_DENIED,
             "user_id and group_id headers need an admin token, not a user token"),
            ("user token on an admin RPC", "GetUser", {"access-token": alice_tok},
             {"user_id": e.ids["alice"]},
             S.PERMISSION_DENIED, "this call needs an admin token of the app"),
            ("admin token without user_id", "ListDevices", {"access-token": e.admin}, {},
             S.INVALID_ARGUMENT, "an admin token needs a user_id or group_id header for this call"),
            ("unknown group_id", "ListDevices", {"access-token": e.admin, "group_id": "999"}, {},
             S.NOT_FOUND, "unknown group_id 999"),
            ("user of another app", "ListDevices",
             {"access-token": e.admin, "user_id": str(e.ids["carol"])}, {},
             S.NOT_FOUND, "unknown user_id %d" % e.ids["carol"]),
            ("unknown user by admin", "GetUser", {"access-token": e.admin}, {"user_id": 99999999},
             S.NOT_FOUND, "user_id 99999999 not found"),
            ("duplicate name", "CreateUser", {"access-token": e.admin},
             {"name": "alice", "password": "whatever-123"},
             S.ALREADY_EXISTS, "name is already taken in this app"),
            ("look-alike name", "CreateUser", {"access-token": e.admin},
             {"name": "ALICE", "password": "whatever-123"},
             S.ALREADY_EXISTS, "a name that looks the same is already taken in this app"),
            ("page too large", "ListUsers", {"access-token": e.admin}, {"page_size": 1001},
             S.INVALID_ARGUMENT, "page_size must be at most 1000"),
            ("unknown health service", "Health/Check", {}, {"service": "nope.Svc"},
             S.NOT_FOUND, 'unknown service "nope.Svc"'),
        ]
        for name, method, md, fields, code, message in cases:
            with self.subTest(name):
                self.assertEqual(self.c.fails(method, md, **fields), (code, message))

    def test_unknown_methods_are_unimplemented(self):
        for path in ("/tokend.v1.Tokend/NoSuchMethod", "/tokend.v1.Nope/TokenById",
                     "/tokend.v1.tokend/TokenById", "/TokenById", "/token/id"):
            with self.subTest(path=path):
                stub = self.ch.unary_unary(path, request_serializer=lambda b: b,
                                           response_deserializer=lambda b: b)
                with self.assertRaises(grpc.RpcError) as cm:
                    stub(b"", timeout=30)
                self.assertEqual((cm.exception.code(), cm.exception.details()),
                                 (grpc.StatusCode.UNIMPLEMENTED, "unknown service or method"))
        # and the channel is still good
        self.assertEqual(self.c.call("Health/Check").status, 1)

    def test_undecodable_message_is_invalid_argument(self):
        stub = self.ch.unary_unary("/tokend.v1.Tokend/TokenById",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        with self.assertRaises(grpc.RpcError) as cm:
            stub(b"\x0a\xff\xff", timeout=30)
        self.assertEqual((cm.exception.code(), cm.exception.details()),
                         (grpc.StatusCode.INVALID_ARGUMENT,
                          "body is not a valid tokend.v1.TokenByIdRequest message"))

    def test_compressed_messages_are_read(self):
        # grpc compresses a message only when that pays off: a login padded
        # with an unknown field of 4000 bytes (protobuf skips it)
        path, req, rep = method_info("TokenById")
        stub = self.ch.unary_unary(path, request_serializer=lambda b: b,
                                   response_deserializer=rep.FromString)
        m = req(user_id=self.env.ids["alice"], password=PW["alice"]).SerializeToString()
        padded = m + b"\xa2\x06\xa0\x1f" + b"x" * 4000  # field 100, 4000 bytes
        for how in (grpc.Compression.Gzip, grpc.Compression.Deflate):
            r = stub(padded, timeout=30, compression=how)
            self.assertEqual(r.user_id, self.env.ids["alice"], how)
            self.assertRegex(self.env.srv.secret(r.token), TOKEN_RE)
            self.assertEqual(self.c.call("Verify", {"access-token": self.env.admin},
                                         token=r.token).user_id, self.env.ids["alice"])
        # it did come compressed: the access log's bytes_in of those logins
        sizes = [json.loads(line)["bytes_in"] for line in self.env.srv.logs().splitlines()
                 if '"rpc":"tokend.v1.Tokend/TokenById"' in line and '"type":"request"' in line]
        self.assertTrue(sizes and min(sizes[-2:]) < 500, sizes[-4:])
        self.assertEqual(self.c.call("Health/Check").status, 1)

    # --- metadata = HTTP headers ---

    def test_metadata_acts_like_http_headers(self):
        e = self.env
        A, U, B = e.admin, str(e.ids["alice"]), str(e.ids["bob"])
        cases = [
            # method, md, fields, verb, path, response_body
            ("ListDevices", {"access-token": A, "user_id": U}, {}, "GET", "/user/device/list",
             "devices"),
            ("ListDevices", {"access-token": A, "group_id": str(GROUP)}, {}, "GET",
             "/user/device/list", "devices"),
            ("ListDevices", {"access-token": e.ids["alice_token"]}, {}, "GET",
             "/user/device/list", "devices"),
            ("ListDevices", {"access-token": e.ids["alice_token"], "user_id": B}, {}, "GET",
             "/user/device/list", "devices"),
            ("ListDevices", {"access-token": A, "group_id": "31337"}, {}, "GET",
             "/user/device/list", "devices"),
            ("ListDevices", {"access-token": A, "user_id": "abc"}, {}, "GET",
             "/user/device/list", "devices"),
            ("Verify", {"access-token": A}, {"token": e.ids["bob_token"]}, "POST",
             "/token/verify", None),
            ("Verify", {"access-token": A, "app_id": str(e.apps["main"])},
             {"token": e.ids["alice_token"]}, "POST", "/token/verify", None),
            ("Verify", {"access-token": A, "app_id": str(e.apps["other"])},
             {"token": e.ids["alice_token"]}, "POST", "/token/verify", None),
            ("Verify", {}, {"token": e.ids["alice_token"]}, "POST", "/token/verify", None),
            ("PushTargets", {"access-token": A}, {"user_id": e.ids["bob"]}, "POST",
             "/push/targets", None),
            ("GetUser", {"access-token": A}, {"user_id": e.ids["alice"]}, "GET",
             "/admin/user/get?user_id=%s" % U, None),
            ("TokenById", {"app_id": "987654"}, {"user_id": e.ids["alice"], "password": "x"},
             "POST", "/token/id", None),
            ("TokenByName", {"app_id": str(e.apps["main"])}, {"name": "carol",
                                                              "password": PW["carol"]},
             "POST", "/token/user", None),
        ]
        for method, md, fields, verb, path, rbody in cases:
            with self.subTest(method=method, md=sorted(md)):
                try:
                    reply, err = self.c.call(method, md, **fields), None
                except grpc.RpcError as x:
                    reply, err = None, (x.code(), x.details())
                # a GET route's fields are in its query: a body there is refused
                status, env = json_call(e, verb, path, {} if verb == "GET" else fields, headers=md)
                if err:
                    self.assertEqual((status, env["message"]), (HTTP_OF[err[0]], err[1]))
                else:
                    self.assertEqual(status, 200, env)
                    want = ws.fields(reply)
                    self.assertEqual(env["data"], want[rbody] if rbody else want)

    def test_admin_token_logs_in_as_user_id_or_group_id(self):
        e = self.env
        r = self.login("TokenById", {"access-token": e.admin, "user_id": str(e.ids["alice"])})
        self.assert_token_reply(r, "alice")
        r = self.login("TokenByLogin", {"access-token": e.admin, "group_id": str(GROUP)})
        self.assert_token_reply(r, "bob")
        # a body naming another user than the header's is a client's bug: refused
        code, details = self.c.fails("TokenById", {"access-token": e.admin, "group_id": str(GROUP)},
                                     user_id=e.ids["alice"])
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("user_id in the body names another user than the user_id or group_id "
                      "header (%d)" % e.ids["bob"], details)
        # the same by JSON, for the same user
        status, env = json_call(e, "POST", "/token/id", {},
                                {"access-token": e.admin, "user_id": str(e.ids["alice"])})
        self.assertEqual((status, env["data"]["user_id"]), (200, e.ids["alice"]))
        e.srv.secret(env["data"]["token"])

    def test_devices_by_user_and_group(self):
        e = self.env
        d = self.c.call("ListDevices", {"access-token": e.admin, "user_id": str(e.ids["alice"])})
        self.assertIn(("it-alice-ua", 5), [(x.user_agent, x.platform) for x in d.devices])
        self.assertTrue(all(x.user_id == e.ids["alice"] for x in d.devices), d)
        d = self.c.call("ListDevices", {"access-token": e.admin, "group_id": str(GROUP)})
        self.assertIn("it-bob-ua", [x.user_agent for x in d.devices])
        self.assertTrue(all(x.user_id == e.ids["bob"] for x in d.devices), d)

    # --- health ---

    def test_health(self):
        H = PB.health.HealthCheckResponse
        self.assertEqual(self.c.call("Health/Check").status, H.SERVING)
        self.assertEqual(self.c.call("Health/Check", service="tokend.v1.Tokend").status,
                         H.SERVING)
        path, req, rep = method_info("Health/Watch")
        watch = self.ch.unary_stream(path, request_serializer=req.SerializeToString,
                                     response_deserializer=rep.FromString)
        with self.assertRaises(grpc.RpcError) as e:
            list(watch(req(), timeout=30))
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertEqual(e.exception.details(), WATCH_UNIMPLEMENTED)

    def test_client_side_health_checking(self):
        # A channel checking health itself (gRFC A17) opens Watch and expects
        # it to stay open; one that ended after its first answer was opened
        # again at once, hundreds of times a second. UNIMPLEMENTED makes the
        # client stop checking and take the server as ready.
        srv = self.env.srv
        watches = lambda: srv.logs().count('"rpc":"grpc.health.v1.Health/Watch"')
        before = watches()
        config = {"loadBalancingConfig": [{"round_robin": {}}],
                  "healthCheckConfig": {"serviceName": ""}}
        opts = ws.NO_PROXY + [("grpc.service_config", json.dumps(config))]
        if self.env.tls:
            ch = grpc.secure_channel(self.env.target(), grpc.ssl_channel_credentials(
                root_certificates=self.env.srv.cert_pem), options=opts)
        else:
            ch = grpc.insecure_channel(self.env.target(), options=opts)
        try:
            c = Client(ch)
            H = PB.health.HealthCheckResponse
            self.assertEqual(c.call("Health/Check", None, 10).status, H.SERVING)
            time.sleep(2)
            self.assertEqual(c.call("Health/Check", None, 10).status, H.SERVING)
        finally:
            ch.close()
        time.sleep(0.5)  # the access log's writer
        self.assertIn(watches() - before, (1, 2))

    # --- deadlines ---

    def test_deadline_on_a_slow_login(self):
        slow = ENVS["slow_" + self.ENV]
        ch = slow.channel()
        try:
            c = Client(ch)
            uid = slow.ids["slow"]
            t = time.monotonic()
            for _ in range(3):
                code, _ = c.fails("TokenById", None, 0.001, user_id=uid, password=PW["slow"])
                self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED)
            self.assertLess(time.monotonic() - t, 5)
            # the server keeps working, on the same channel
            self.assertEqual(c.call("Health/Check").status, 1)
            t = time.monotonic()
            r = c.call("TokenById", None, 30, user_id=uid, password=PW["slow"])
            took = time.monotonic() - t
            slow.srv.secret(r.token), slow.srv.secret(r.store_token)
            self.assertEqual(r.user_id, uid)
            # the deadline above surely expired: a login costs far more than 1 ms
            self.assertGreater(took, 0.02)
            self.assertEqual(c.fails("TokenById", None, 30, user_id=uid, password="wrong"),
                             (grpc.StatusCode.UNAUTHENTICATED, BAD_CREDENTIALS))
        finally:
            ch.close()

    # --- volume ---

    def test_1000_sequential_calls_on_one_channel(self):
        e = self.env
        stub, req = self.c.stub("Verify")
        msg, md = req(token=e.ids["bob_token"]), [("access-token", e.admin)]
        t = time.monotonic()
        for i in range(1000):
            r = stub(msg, metadata=md, timeout=30)
            if r.user_id != e.ids["bob"]:
                self.fail("call %d: %r" % (i, r))
        health = self.c.stub("Health/Check")[0]
        for i in range(200):
            self.assertEqual(health(PB.health.HealthCheckRequest(), timeout=30).status, 1)
        self.assertLess(time.monotonic() - t, 60)

    def test_8_threads_at_once(self):
        e = self.env
        barrier = threading.Barrier(THREADS)

        def worker(i):
            name = "w%d" % i
            own = e.channel()
            try:
                barrier.wait(30)
                for n in range(5):
                    c = self.c if n % 2 else Client(own)
                    r = c.call("TokenById", user_id=e.ids[name], password="pw-worker-%d-x" % i,
                               device_guid="thread-%d-%d" % (i, n))
                    e.srv.secret(r.token), e.srv.secret(r.store_token)
                    e.srv.secret(r.push_token)
                    if r.user_id != e.ids[name]:
                        return "thread %d: login gave %d" % (i, r.user_id)
                    for _ in range(40):
                        v = self.c.call("Verify", {"access-token": e.admin}, token=r.token)
                        if v.user_id != e.ids[name] or v.device_guid != "thread-%d-%d" % (i, n):
                            return "thread %d: verify gave %r" % (i, v)
                    code, msg = self.c.fails("TokenById", user_id=e.ids[name], password="no")
                    if code != grpc.StatusCode.UNAUTHENTICATED:
                        return "thread %d: wrong password gave %s %s" % (i, code, msg)
                return None
            finally:
                own.close()

        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(worker, range(THREADS)))
        self.assertEqual([r for r in results if r], [])
        d = self.c.call("ListDevices", {"access-token": e.admin, "user_id": str(e.ids["w3"])})
        self.assertEqual(len(d.devices), 5, d)


class PlainGrpc(GrpcSuite, unittest.TestCase):
    ENV = "plain"

    def test_server_checks_grpc_timeout_itself(self):
        """A client that does not enforce its own deadline (gRPC-Web over
        HTTP/1.1 here) still hears DEADLINE_EXCEEDED from the server."""
        slow = ENVS["slow_plain"]
        msg = PB.tokend.TokenByIdRequest(user_id=slow.ids["slow"], password=PW["slow"])
        r = slow.srv.request("POST", "/tokend.v1.Tokend/TokenById",
                             ws.frame(msg.SerializeToString()), headers={"grpc-timeout": "1m"},
                             content_type="application/grpc-web+proto")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, ws.trailer_frame(4, "deadline exceeded"))
        self.assertEqual(Client(self.ch).call("Health/Check").status, 1)

    def test_native_grpc_timeout_by_curl(self):
        """Native gRPC from a client that ignores grpc-timeout (curl): the
        trailers carry DEADLINE_EXCEEDED; a malformed header is refused."""
        slow = ENVS["slow_plain"]
        msg = PB.tokend.TokenByIdRequest(user_id=slow.ids["slow"], password=PW["slow"])
        line, hdrs, body = ws.curl_grpc(slow.srv.port, "/tokend.v1.Tokend/TokenById",
                                        ws.frame(msg.SerializeToString()),
                                        {"grpc-timeout": "1m"})
        self.assertEqual((line, body), ("HTTP/2 200", b""))
        self.assertEqual(hdrs.get("grpc-status"), "4", hdrs)
        self.assertEqual(hdrs.get("grpc-message"), "deadline exceeded", hdrs)
        line, hdrs, body = ws.curl_grpc(self.env.srv.port, "/grpc.health.v1.Health/Check",
                                        ws.frame(b""), {"grpc-timeout": "5x"})
        self.assertEqual((hdrs.get("grpc-status"), hdrs.get("grpc-message")),
                         ("3", "grpc-timeout header is malformed"), hdrs)
        line, hdrs, body = ws.curl_grpc(self.env.srv.port, "/grpc.health.v1.Health/Check",
                                        ws.frame(b""), {"grpc-timeout": "10S"})
        self.assertEqual((hdrs.get("grpc-status"), body), ("0", ws.frame(b"\x08\x01")), hdrs)


class TlsGrpc(GrpcSuite, unittest.TestCase):
    ENV = "tls"

    def test_localhost_name_verifies(self):
        ch = self.env.channel(host="localhost")
        try:
            self.assertEqual(Client(ch).call("Health/Check").status, 1)
        finally:
            ch.close()

    def test_grpc_web_over_https(self):
        r = self.env.srv.request("POST", "/grpc.health.v1.Health/Check", ws.frame(b""),
                                 content_type="application/grpc-web+proto")
        self.assertEqual((r.status, r.header("content-type")), (200, "application/grpc-web+proto"))
        self.assertEqual(r.body, ws.frame(b"\x08\x01") + ws.trailer_frame(0))

    def test_wrong_root_certificate_fails(self):
        d = tempfile.mkdtemp(dir=self.env.srv.tmp)
        ws.make_cert(os.path.join(d, "c.pem"), os.path.join(d, "k.pem"))
        with open(os.path.join(d, "c.pem"), "rb") as f:
            other = f.read()
        ch = self.env.channel(root=other)
        try:
            code, _ = Client(ch).fails("Health/Check", None, 10)
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        finally:
            ch.close()

    def test_cleartext_client_on_tls_port_fails(self):
        ch = grpc.insecure_channel(self.env.target(), options=ws.NO_PROXY)
        try:
            code, _ = Client(ch).fails("Health/Check", None, 10)
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        finally:
            ch.close()


# --- the gRPC C core, through tokend-call ------------------------------------------

class CoreSuite:
    ENV = None

    @classmethod
    def setUpClass(cls):
        if not ws.have_call():
            if os.environ.get("TOKEND_CALL"):
                raise AssertionError("TOKEND_CALL=%s is not an executable" % ws.CALL_BIN)
            raise unittest.SkipTest("%s is not built (libgrpc-dev missing?)" % ws.CALL_BIN)
        cls.env = ENVS[cls.ENV]

    def call(self, method, body=None, md=None, env=None, extra=()):
        env = env or self.env
        args = list(extra)
        if env.tls:
            args += ["--tls", env.srv.cert]
        for k, v in (md or {}).items():
            args += ["-H", "%s:%s" % (k, v)]
        args += [env.target(), method]
        if body is not None:
            args.append(json.dumps(body))
        return ws.run_call(args)

    def ok(self, *a, **kw):
        p = self.call(*a, **kw)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return json.loads(p.stdout)

    def test_login_and_verify(self):
        e = self.env
        r = self.ok("tokend.v1.Tokend/TokenById", {"user_id": e.ids["alice"],
                                                   "password": PW["alice"]})
        e.srv.secret(r["token"]), e.srv.secret(r["store_token"])
        self.assertEqual(set(r), {"access_key_secret", "encrypt_type", "expire", "public_key",
                                  "push_token", "store_token", "token", "user_id"})
        self.assertEqual((r["user_id"], r["encrypt_type"]), (e.ids["alice"], 4))
        self.assertRegex(r["token"], TOKEN_RE)
        v = self.ok("/tokend.v1.Tokend/Verify", {"token": r["token"]},
                    md={"access-token": e.admin})
        self.assertEqual((v["user_id"], v["app_id"], v["expire"]),
                         (e.ids["alice"], e.apps["main"], r["expire"]))

    def test_status_is_the_exit_code(self):
        e = self.env
        cases = [
            ("tokend.v1.Tokend/TokenById", {"user_id": e.ids["alice"]}, {}, 3,
             "password is required"),
            ("tokend.v1.Tokend/TokenById", {"user_id": e.ids["alice"], "password": "no"}, {}, 16,
             BAD_CREDENTIALS),
            ("tokend.v1.Tokend/TokenById", {"user_id": e.ids["alice"], "password": "x"},
             {"app_id": "987654"}, 5, "unknown app_id 987654"),
            ("tokend.v1.Tokend/Verify", {"token": e.ids["alice_token"]},
             {"access-token": e.ids["alice_token"], "user_id": str(e.ids["bob"])}, 7,
             "this call needs an admin token of the app"),
            ("tokend.v1.Tokend/CreateUser", {"name": "alice", "password": "pw-123456"},
             {"access-token": e.admin}, 6, "name is already taken in this app"),
        ]
        for method, body, md, code, msg in cases:
            with self.subTest(code=code):
                p = self.call(method, body, md)
                self.assertEqual((p.returncode, p.stdout, p.stderr),
                                 (code, "", "grpc-status %d: %s\n" % (code, msg)))

    def test_metadata(self):
        e = self.env
        d = self.ok("tokend.v1.Tokend/ListDevices",
                    md={"access-token": e.admin, "group_id": str(GROUP)})
        ch = e.channel()
        try:
            want = ws.fields(Client(ch).call("ListDevices", {"access-token": e.admin,
                                                             "group_id": str(GROUP)}))
        finally:
            ch.close()
        self.assertEqual(d, want)
        self.assertTrue(d["devices"] and all(x["user_id"] == e.ids["bob"] for x in d["devices"]))
        u = self.ok("tokend.v1.Tokend/GetUser", {"user_id": e.ids["alice"]},
                    md={"Access-Token": e.admin})
        self.assertEqual((u["name"], u["phone"], u["email"]),
                         ("alice", "+15550142", "alice@example.com"))

    def test_health(self):
        self.assertEqual(self.ok("grpc.health.v1.Health/Check"), {"status": "SERVING"})

    def test_json_from_stdin(self):
        args = ["--tls", self.env.srv.cert] if self.env.tls else []
        p = ws.run_call(args + ["-H", "access-token:" + self.env.admin, self.env.target(),
                                "tokend.v1.Tokend/GetUser", "-"],
                        stdin=json.dumps({"user_id": self.env.ids["bob"]}))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["name"], "bob_g")

    def test_repeat_1000(self):
        e = self.env
        t = time.monotonic()
        v = self.ok("tokend.v1.Tokend/Verify", {"token": e.ids["bob_token"]},
                    md={"access-token": e.admin}, extra=("--repeat", 1000))
        self.assertEqual(v["user_id"], e.ids["bob"])
        self.assertLess(time.monotonic() - t, 60)
        # a failing call stops the run at once, with its status
        p = self.call("tokend.v1.Tokend/Verify", {"token": "x"}, md={"access-token": e.admin},
                      extra=("--repeat", 1000))
        self.assertEqual((p.returncode, p.stderr),
                         (16, "call 1 of 1000: grpc-status 16: invalid token\n"))

    def test_deadline(self):
        slow = ENVS["slow_" + self.ENV]
        body = {"user_id": slow.ids["slow"], "password": PW["slow"]}
        p = self.call("tokend.v1.Tokend/TokenById", body, env=slow, extra=("--timeout", 1))
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertTrue(p.stderr.startswith("grpc-status 4: "), p.stderr)
        r = self.ok("tokend.v1.Tokend/TokenById", body, env=slow, extra=("--timeout", 30000))
        slow.srv.secret(r["token"]), slow.srv.secret(r["store_token"])
        self.assertEqual(r["user_id"], slow.ids["slow"])

    def test_bad_input_is_a_usage_error(self):
        for args in (["tokend.v1.Tokend/TokenById", '{"user_id": "abc"}'],
                     ["tokend.v1.Tokend/NoSuch"], ["tokend.v1.Tokend/TokenById", "[1]"]):
            with self.subTest(args=args):
                p = ws.run_call([self.env.target(), *args])
                self.assertEqual(p.returncode, 64, p.stderr)


class PlainCore(CoreSuite, unittest.TestCase):
    ENV = "plain"


class TlsCore(CoreSuite, unittest.TestCase):
    ENV = "tls"

    def test_wrong_ca_is_unavailable(self):
        d = tempfile.mkdtemp(dir=self.env.srv.tmp)
        ws.make_cert(os.path.join(d, "c.pem"), os.path.join(d, "k.pem"))
        p = ws.run_call(["--tls", os.path.join(d, "c.pem"), "--timeout", 10000,
                         self.env.target(), "grpc.health.v1.Health/Check"])
        self.assertEqual(p.returncode, 14, p.stderr)

    def test_localhost(self):
        p = ws.run_call(["--tls", self.env.srv.cert, self.env.target("localhost"),
                         "grpc.health.v1.Health/Check"])
        self.assertEqual((p.returncode, p.stdout), (0, '{"status":"SERVING"}\n'), p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
