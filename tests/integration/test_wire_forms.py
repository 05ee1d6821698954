#!/usr/bin/python3
"""Integration tests of tokend's wire forms other than plain JSON, checked
byte for byte against a real server, each over HTTP/1.1 (http.client) and
HTTP/2 (curl --http2-prior-knowledge):

  * gRPC-Web (application/grpc-web+proto): the request is one frame built
    here (0x00, 4-byte big-endian length, message); the reply body must be
    exactly the data frame then the 0x80 trailer frame "grpc-status:N\\r\\n"
    (+ "grpc-message:...\\r\\n" on errors, percent-encoded);
  * gRPC-Web text (application/grpc-web-text): the same, base64 both ways;
  * CORS preflight (OPTIONS -> 204 with the allow headers);
  * binary protobuf (application/x-protobuf) on the documented paths: the
    same answer as JSON and as gRPC for the same request; errors as a
    tokend.v1.Status body with a grpc-status header and the HTTP status;
  * compressed messages (grpc-encoding gzip, deflate) taken; one that does
    not decompress -> INTERNAL, an unread encoding -> UNIMPLEMENTED with
    grpc-accept-encoding, one past --max-body inflated -> RESOURCE_EXHAUSTED;
  * framing faults: truncated frames and
    undecodable messages -> INVALID_ARGUMENT; application/grpc over
    HTTP/1.1 -> 415;
  * GET /healthz and grpc.health.v1.Health/Check in every form;
  * query-string binding (GET /admin/user/get?user_id=N, POST with a query).
"""
import base64
import http.client
import json
import os
import re
import sys
import unittest
import urllib.parse
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import wire_support as ws  # noqa: E402

import grpc  # noqa: E402

PB = None
SRV = None
BIG = None  # LargeReply's server: 500 users with long names
IDS = {}
ADMIN = None
APP = None
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
PW_ALICE = "alice-Wire-4k9s"
PW_BOB = "bob-Wire-7m2p"
BAD_CREDENTIALS = "invalid credentials: unknown user or wrong password"
HEALTH_OK = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
OK_TRAILER = b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n"
GRPC_WEB = "application/grpc-web+proto"
GRPC_WEB_TEXT = "application/grpc-web-text+proto"
PROTO = "application/x-protobuf"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
LIST_SERVICES = b"\x3a\x00"  # ServerReflectionRequest{list_services: ""}


def setUpModule():
    global PB, SRV, ADMIN, APP
    PB = ws.protos()
    SRV = harness.Server()
    try:
        APP = SRV.create_app("wire-app")
        IDS["alice"] = SRV.add_user("alice", PW_ALICE, phone="+44 20 7946 0018",
                                    email="alice@example.net", **ws.CHEAP_USER)
        IDS["bob"] = SRV.add_user("bob_w", PW_BOB, **ws.CHEAP_USER)
        for u in ("utf_a", "utf_b"):  # Utf8's users: their devices may get poisoned
            IDS[u] = SRV.add_user(u, PW_BOB, **ws.CHEAP_USER)
        ADMIN = ws.admin_token(SRV)
        SRV.start(*ws.CHEAP)
        r = SRV.request("POST", "/token/id", {"user_id": IDS["alice"], "password": PW_ALICE,
                                              "device_guid": "wire-dev"})
        IDS["alice_token"] = SRV.secret(r.json()["data"]["token"])
        SRV.secret(r.json()["data"]["push_token"])
        SRV.secret(r.json()["data"]["store_token"])
    except BaseException:
        SRV.close()
        raise


def tearDownModule():
    errors = []
    for srv in (SRV, BIG):
        if srv is None:
            continue
        try:
            srv.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            srv.close()
    if errors:
        raise AssertionError("; ".join(errors))


def msg(type_name, /, **fields):
    return getattr(PB.tokend, type_name)(**fields)


class Base:
    H2 = False

    def req(self, method, path, body=None, headers=None, content_type="application/json"):
        r = SRV.request(method, path, body, headers, http2=self.H2, content_type=content_type)
        self.assertEqual(r.version, "HTTP/2" if self.H2 else "HTTP/1.1", r)
        return r

    def grpc_web(self, path, message=b"", headers=None, raw=None, ct=GRPC_WEB):
        """POSTs one gRPC-Web frame (or `raw` bytes as the body)."""
        if not isinstance(message, bytes):
            message = message.SerializeToString()
        r = self.req("POST", path, raw if raw is not None else ws.frame(message), headers, ct)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), GRPC_WEB, r.headers)
        self.assertEqual(r.header("access-control-allow-origin"), "*", r.headers)
        self.assertEqual(r.header("cache-control"), "no-store", r.headers)
        self.assertEqual(set(r.header("access-control-expose-headers", "").split(",")),
                         {"grpc-status", "grpc-message", "x-request-id"}, r.headers)
        return r

    def assert_grpc_web_error(self, r, code, message):
        self.assertEqual(r.body, ws.trailer_frame(code, message))

    def proto(self, method, path, message=b"", headers=None, ct=PROTO):
        if not isinstance(message, bytes):
            message = message.SerializeToString()
        r = self.req(method, path, message, headers, ct)
        self.assertEqual(r.header("content-type"), PROTO, r)
        self.assertEqual(r.header("cache-control"), "no-store", r.headers)
        return r

    def assert_proto_error(self, r, http_status, code, message):
        self.assertEqual(r.status, http_status, r)
        self.assertEqual(r.header("grpc-status"), str(code), r.headers)
        self.assertEqual(r.body, PB.tokend.Status(code=code, message=message).SerializeToString())
        st = PB.tokend.Status.FromString(r.body)
        self.assertEqual((st.code, st.message), (code, message))

    def json(self, method, path, body=None, headers=None):
        r = self.req(method, path, body, headers)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        self.assertEqual(r.header("cache-control"), "no-store", r.headers)  # tokens, keys, users
        env = r.json()
        self.assertEqual(env["code"], r.status, env)
        return r.status, env


def gzip_of(data):
    z = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip member
    return z.compress(data) + z.flush()


def both(cls):
    """Registers cls once per protocol: <Name>H1 and <Name>H2."""
    g = globals()
    for suffix, h2 in (("H1", False), ("H2", True)):
        g[cls.__name__ + suffix] = type(cls.__name__ + suffix, (cls, unittest.TestCase),
                                        {"H2": h2})
    return cls


# --- gRPC-Web -------------------------------------------------------------------

@both
class GrpcWeb(Base):
    def test_health_check_exact_bytes(self):
        r = self.grpc_web("/grpc.health.v1.Health/Check")
        self.assertEqual(r.body, b"\x00\x00\x00\x00\x02\x08\x01" + OK_TRAILER)
        r = self.grpc_web("/grpc.health.v1.Health/Check",
                          PB.health.HealthCheckRequest(service="tokend.v1.Tokend"))
        self.assertEqual(r.body, ws.frame(HEALTH_OK) + OK_TRAILER)

    def test_login_is_one_data_frame_and_the_trailer(self):
        r = self.grpc_web("/tokend.v1.Tokend/TokenById",
                          msg("TokenByIdRequest", user_id=IDS["alice"], password=PW_ALICE))
        fr = ws.frames(r.body)
        self.assertEqual([f for f, _ in fr], [0x00, 0x80], fr)
        self.assertEqual(fr[1][1], b"grpc-status:0\r\n")
        reply = PB.tokend.TokenReply.FromString(fr[0][1])
        SRV.secret(reply.token), SRV.secret(reply.store_token)
        # every byte is the message: protobuf-c and Python encode it identically
        self.assertEqual(fr[0][1], reply.SerializeToString())
        self.assertEqual(r.body, ws.frame(reply.SerializeToString()) + OK_TRAILER)
        self.assertEqual(reply.user_id, IDS["alice"])
        self.assertRegex(reply.token, TOKEN_RE)

    def test_error_is_the_trailer_frame_alone(self):
        r = self.grpc_web("/tokend.v1.Tokend/TokenById",
                          msg("TokenByIdRequest", user_id=IDS["alice"], password=PW_BOB))
        text = b"grpc-status:16\r\ngrpc-message:" + BAD_CREDENTIALS.encode() + b"\r\n"
        self.assertEqual(len(text), 82)
        self.assertEqual(r.body, b"\x80\x00\x00\x00\x52" + text)

    def test_error_statuses(self):
        tok = IDS["alice_token"]
        login = msg("TokenByIdRequest", user_id=IDS["alice"], password=PW_ALICE)
        cases = [
            ("missing password", "/tokend.v1.Tokend/TokenById",
             msg("TokenByIdRequest", user_id=IDS["alice"]), {}, 3, "password is required"),
            ("unknown app", "/tokend.v1.Tokend/TokenById", login, {"app_id": "9876"}, 5,
             "unknown app_id 9876"),
            ("malformed app_id", "/tokend.v1.Tokend/TokenById", login, {"app_id": "x1"}, 3,
             "app_id header must be a positive integer"),
            ("user token acting as another", "/tokend.v1.Tokend/Verify",
             msg("VerifyRequest", token=tok), {"access-token": tok, "user_id": str(IDS["bob"])},
             7, "this call needs an admin token of the app"),
            ("no access-token", "/tokend.v1.Tokend/Verify", msg("VerifyRequest", token=tok), {},
             16, "access-token header (an admin token) is required"),
            ("unknown method", "/tokend.v1.Tokend/Nope", b"", {}, 12,
             "unknown service or method"),
            ("unknown service", "/x.Y/Check", b"", {}, 12, "unknown service or method"),
            ("undecodable", "/tokend.v1.Tokend/TokenById", b"\x12\x05ab", {}, 3,
             "body is not a valid tokend.v1.TokenByIdRequest message"),
        ]
        for name, path, m, hdrs, code, message in cases:
            with self.subTest(name):
                self.assert_grpc_web_error(self.grpc_web(path, m, hdrs), code, message)

    def test_grpc_message_is_percent_encoded(self):
        r = self.grpc_web("/grpc.health.v1.Health/Check",
                          PB.health.HealthCheckRequest(service="caf\u00e9 100%\t"))
        self.assert_grpc_web_error(r, 5, 'unknown service "caf%C3%A9 100%25%09"')

    def test_metadata_as_http_headers(self):
        r = self.grpc_web("/tokend.v1.Tokend/ListDevices", b"",
                          {"access-token": ADMIN, "user_id": str(IDS["alice"])})
        fr = ws.frames(r.body)
        self.assertEqual(fr[1:], [(0x80, b"grpc-status:0\r\n")])
        devices = PB.tokend.DeviceList.FromString(fr[0][1]).devices
        self.assertTrue(devices and all(d.user_id == IDS["alice"] for d in devices), devices)

    def test_bare_grpc_web_content_type(self):
        r = self.grpc_web("/grpc.health.v1.Health/Check", ct="application/grpc-web")
        self.assertEqual(r.body, ws.frame(HEALTH_OK) + OK_TRAILER)

    def test_get_is_refused(self):
        r = self.req("GET", "/grpc.health.v1.Health/Check", b"", None, GRPC_WEB)
        self.assertEqual((r.status, r.header("content-type")), (200, GRPC_WEB), r)
        self.assertEqual(r.body, ws.trailer_frame(12, "gRPC calls use POST"))

    def test_server_streaming_watch(self):
        # not served: h2o cannot hold the stream open (gRFC A17's clients
        # then stop checking health and take the server as ready)
        r = self.grpc_web("/grpc.health.v1.Health/Watch")
        self.assertEqual(r.body, ws.trailer_frame(
            12, "Health/Watch is not served (tokend cannot hold a stream open): use Health/Check"))

    def test_streaming_reflection(self):
        r = self.grpc_web(REFLECTION, LIST_SERVICES)
        fr = ws.frames(r.body)
        self.assertEqual([f for f, _ in fr], [0, 0x80], r.body)
        self.assertIn(b"tokend.v1.Tokend", fr[0][1])
        self.assertEqual(fr[1][1], b"grpc-status:0\r\n")

    # --- framing faults ---

    def test_compressed_messages(self):
        m = msg("TokenByIdRequest", user_id=IDS["alice"], password=PW_ALICE).SerializeToString()
        path = "/tokend.v1.Tokend/TokenById"
        for enc, packed in (("gzip", gzip_of(m)), ("deflate", zlib.compress(m)),
                            ("GZip", gzip_of(m))):
            r = self.grpc_web(path, raw=ws.frame(packed, flag=1), headers={"grpc-encoding": enc})
            fr = ws.frames(r.body)
            self.assertEqual(fr[-1][1], b"grpc-status:0\r\n", (enc, r.body))
            self.assertEqual(PB.tokend.TokenReply.FromString(fr[0][1]).user_id, IDS["alice"])
        # an uncompressed message may name an encoding all the same
        r = self.grpc_web(path, m, headers={"grpc-encoding": "gzip"})
        self.assertEqual(ws.frames(r.body)[-1][1], b"grpc-status:0\r\n", r.body)
        # the frame says compressed, the body is not (or is cut, or has more after it)
        BAD = ("compressed gRPC message does not decompress (grpc-encoding gzip wants one gzip "
               "member, deflate one zlib stream)")
        for enc, body in (("gzip", m), ("deflate", gzip_of(m)), ("gzip", gzip_of(m)[:-4]),
                          ("gzip", gzip_of(m) + gzip_of(m)), ("deflate", zlib.compress(m) + b"x")):
            r = self.grpc_web(path, raw=ws.frame(body, flag=1), headers={"grpc-encoding": enc})
            self.assert_grpc_web_error(r, 13, BAD)
        r = self.grpc_web(path, raw=ws.frame(gzip_of(m), flag=1))
        self.assert_grpc_web_error(
            r, 13, "compressed gRPC message without a grpc-encoding header: name gzip or deflate")
        # an encoding tokend does not read: UNIMPLEMENTED, naming those it does
        r = self.grpc_web(path, raw=ws.frame(m, flag=1), headers={"grpc-encoding": "snappy"})
        self.assert_grpc_web_error(
            r, 12, "this grpc-encoding is not supported: compress with gzip or deflate, or not at all")
        self.assertEqual(r.header("grpc-accept-encoding"), "identity,deflate,gzip", r.headers)
        # 8 MiB of zeros in 8 KiB: refused once past --max-body, not inflated whole
        bomb = gzip_of(bytes(8 << 20))
        self.assertLess(len(bomb), 64 << 10)
        r = self.grpc_web(path, raw=ws.frame(bomb, flag=1), headers={"grpc-encoding": "gzip"})
        self.assert_grpc_web_error(
            r, 8, "gRPC messages are larger than --max-body once decompressed")
        # what inflates but does not decode is the caller's mistake, as it is plain
        check = "/grpc.health.v1.Health/Check"
        for body in (b"\x0a\x05ab", b"\x0a\x02\xff\xfe"):
            plain = self.grpc_web(check, raw=ws.frame(body))
            packed = self.grpc_web(check, raw=ws.frame(gzip_of(body), flag=1),
                                   headers={"grpc-encoding": "gzip"})
            self.assertEqual(packed.body, plain.body)
            self.assertTrue(plain.body.endswith(b"\r\n") and b"grpc-status:3\r\n" in plain.body,
                            plain.body)
        # a streaming call reads them too
        plain = self.grpc_web(REFLECTION, LIST_SERVICES).body
        r = self.grpc_web(REFLECTION, raw=ws.frame(gzip_of(LIST_SERVICES), flag=1),
                          headers={"grpc-encoding": "gzip"})
        self.assertEqual(r.body, plain)
        r = self.grpc_web(REFLECTION, raw=ws.frame(LIST_SERVICES, flag=1),
                          headers={"grpc-encoding": "gzip"})
        self.assert_grpc_web_error(r, 13, BAD)
        # --max-body (64 KiB here) bounds all of a stream's messages inflated,
        # not each: one of 40 KB is taken, two are refused
        padded = LIST_SERVICES + b"\xa2\x06" + bytes([0xc0, 0xb8, 0x02]) + bytes(40000)  # field 100
        one = ws.frame(gzip_of(padded), flag=1)
        r = self.grpc_web(REFLECTION, raw=one, headers={"grpc-encoding": "gzip"})
        self.assertEqual(ws.frames(r.body)[-1], (0x80, b"grpc-status:0\r\n"))
        r = self.grpc_web(REFLECTION, raw=one + one, headers={"grpc-encoding": "gzip"})
        self.assert_grpc_web_error(r, 8, "gRPC messages are larger than --max-body once decompressed")
        # and the server is fine
        self.assertEqual(self.grpc_web("/grpc.health.v1.Health/Check").body,
                         b"\x00\x00\x00\x00\x02\x08\x01" + OK_TRAILER)

    def test_truncated_and_malformed_frames(self):
        MALFORMED = "gRPC message frame is malformed or truncated"
        NOT_ONE = "a unary gRPC call carries exactly one message"
        m = msg("TokenByIdRequest", user_id=IDS["alice"], password=PW_ALICE).SerializeToString()
        cases = [
            ("empty body", b"", "gRPC message frame is missing or truncated"),
            ("short header", b"\x00\x00\x00", "gRPC message frame is missing or truncated"),
            ("length past the end", ws.frame(m)[:-3], MALFORMED),
            ("length 2^32-1", b"\x00\xff\xff\xff\xff" + m, MALFORMED),
            ("trailer flag", ws.frame(m, flag=0x80), MALFORMED),
            ("two messages", ws.frame(m) + ws.frame(m), NOT_ONE),
            ("trailing junk", ws.frame(m) + b"\x00", NOT_ONE),
        ]
        for name, body, message in cases:
            with self.subTest(name):
                r = self.grpc_web("/tokend.v1.Tokend/TokenById", raw=body)
                self.assert_grpc_web_error(r, 3, message)
        # after all that the server still answers
        self.assertEqual(self.grpc_web("/grpc.health.v1.Health/Check").body,
                         ws.frame(HEALTH_OK) + OK_TRAILER)


@both
class GrpcWebText(Base):
    def text(self, path, body_b64, headers=None, ct="application/grpc-web-text"):
        r = self.req("POST", path, body_b64, headers, ct)
        self.assertEqual((r.status, r.header("content-type")), (200, GRPC_WEB_TEXT), r)
        self.assertEqual(r.header("access-control-allow-origin"), "*", r.headers)
        return r

    def test_health_check(self):
        r = self.text("/grpc.health.v1.Health/Check", base64.b64encode(ws.frame(b"")))
        want = ws.frame(HEALTH_OK) + OK_TRAILER
        self.assertEqual(r.body, base64.b64encode(want))

    def test_login(self):
        m = msg("TokenByIdRequest", user_id=IDS["bob"], password=PW_BOB).SerializeToString()
        r = self.text("/tokend.v1.Tokend/TokenById", base64.b64encode(ws.frame(m)),
                      ct=GRPC_WEB_TEXT)
        body = base64.b64decode(r.body, validate=True)
        self.assertEqual(r.body, base64.b64encode(body))  # standard alphabet, padded
        fr = ws.frames(body)
        self.assertEqual(fr[1:], [(0x80, b"grpc-status:0\r\n")])
        reply = PB.tokend.TokenReply.FromString(fr[0][1])
        SRV.secret(reply.token), SRV.secret(reply.store_token)
        self.assertEqual(reply.user_id, IDS["bob"])
        self.assertEqual(fr[0][1], reply.SerializeToString())

    def test_error(self):
        m = msg("TokenByIdRequest", user_id=IDS["bob"], password="wrong").SerializeToString()
        r = self.text("/tokend.v1.Tokend/TokenById", base64.b64encode(ws.frame(m)))
        self.assertEqual(r.body, base64.b64encode(ws.trailer_frame(16, BAD_CREDENTIALS)))

    def test_line_breaks_in_base64_are_ignored(self):
        b64 = base64.b64encode(ws.frame(PB.health.HealthCheckRequest(
            service="tokend.v1.Tokend").SerializeToString()))
        r = self.text("/grpc.health.v1.Health/Check", b64[:8] + b"\r\n" + b64[8:] + b"\r\n")
        self.assertEqual(base64.b64decode(r.body), ws.frame(HEALTH_OK) + OK_TRAILER)

    def test_invalid_base64(self):
        r = self.text("/grpc.health.v1.Health/Check", b"AAAA*AAA")
        self.assertEqual(base64.b64decode(r.body),
                         ws.trailer_frame(3, "grpc-web-text body is not valid base64"))

    def test_padded_chunks(self):
        # A sender may flush anywhere, each flush padded base64 of its own:
        # "AAAAAA==" (the frame's first 4 bytes) then the rest, and so on.
        f = ws.frame(PB.health.HealthCheckRequest(service="tokend.v1.Tokend").SerializeToString())
        b64 = base64.b64encode
        for cuts in ((4,), (1, 5, 9), (3, 6, 16)):
            parts = [f[a:b] for a, b in zip((0,) + cuts, cuts + (len(f),))]
            body = b"\r\n".join(b64(p) for p in parts) if cuts[0] == 1 else b"".join(map(b64, parts))
            self.assertIn(b"=", body[:-1], body)
            r = self.text("/grpc.health.v1.Health/Check", body)
            self.assertEqual(base64.b64decode(r.body), ws.frame(HEALTH_OK) + OK_TRAILER, body)
        m = msg("TokenByIdRequest", user_id=IDS["bob"], password=PW_BOB).SerializeToString()
        r = self.text("/tokend.v1.Tokend/TokenById", b64(ws.frame(m)[:4]) + b64(ws.frame(m)[4:]))
        fr = ws.frames(base64.b64decode(r.body))
        self.assertEqual(fr[1:], [(0x80, b"grpc-status:0\r\n")])
        reply = PB.tokend.TokenReply.FromString(fr[0][1])
        SRV.secret(reply.token), SRV.secret(reply.store_token)
        self.assertEqual(reply.user_id, IDS["bob"])
        # still refused: '=' inside a group, a group cut short, padding alone
        rest = b64(f[4:])
        for body in (b"AAAAA=AA" + rest, b"AAAA=AAA" + rest, b"AAAAAA=" + rest,
                     b"AAAAAA==" + rest.rstrip(b"="), b"AAAAAA==" + rest[:-1],
                     b"AAAAAA====" + rest, b"AAAAAA==" + rest + b"=", b"A===" + rest,
                     # libsodium alone took a NUL as a line break, 0xff as '/'
                     b"AAAAAA==" + rest + b"\xff\xff\xff\xff", b"AAAAAA==\x00" + rest,
                     b"AAAAAAA=\x00"):
            r = self.text("/grpc.health.v1.Health/Check", body)
            self.assertEqual(base64.b64decode(r.body),
                             ws.trailer_frame(3, "grpc-web-text body is not valid base64"), body)


@both
class Cors(Base):
    WANT_HEADERS = {"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "access-token",
                    "app_id", "user_id", "group_id"}

    def test_preflight(self):
        for path in ("/tokend.v1.Tokend/TokenById", "/grpc.health.v1.Health/Check",
                     "/token/id", "/admin/user/get"):
            with self.subTest(path=path):
                r = self.req("OPTIONS", path, None, {
                    "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-grpc-web,access-token"})
                self.assertEqual((r.status, r.body), (204, b""), r)
                self.assertEqual(r.header("access-control-allow-origin"), "*", r.headers)
                allowed = {h.strip().lower() for h in
                           r.header("access-control-allow-headers", "").split(",")}
                self.assertLessEqual(self.WANT_HEADERS, allowed, allowed)
                methods = {m.strip() for m in
                           r.header("access-control-allow-methods", "").split(",")}
                self.assertIn("POST", methods)
                self.assertGreater(int(r.header("access-control-max-age", "0")), 0)


# --- binary protobuf ------------------------------------------------------------

LOGINS = [
    ("/token/id", "TokenById", "TokenByIdRequest", lambda: {"user_id": IDS["alice"],
                                                           "password": PW_ALICE}),
    ("/token/login", "TokenByLogin", "TokenByLoginRequest",
     lambda: {"login_name": "alice@example.net", "password": PW_ALICE}),
    ("/token/user", "TokenByName", "TokenByNameRequest",
     lambda: {"name": "alice", "password": PW_ALICE}),
]


@both
class BinaryProtobuf(Base):
    @classmethod
    def setUpClass(cls):
        cls.ch = grpc.insecure_channel("127.0.0.1:%d" % SRV.port, options=ws.NO_PROXY)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()

    def native(self, method, req, reply_cls, headers=None):
        stub = self.ch.unary_unary("/tokend.v1.Tokend/" + method,
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=reply_cls.FromString)
        return stub(req, metadata=list((headers or {}).items()), timeout=30)

    def verify(self, token):
        r = self.proto("POST", "/token/verify", msg("VerifyRequest", token=token),
                       {"access-token": ADMIN})
        self.assertEqual(r.status, 200, r)
        return PB.tokend.VerifyReply.FromString(r.body)

    def test_login_same_answer_as_json_and_grpc(self):
        for path, method, req_name, body in LOGINS:
            with self.subTest(path=path):
                req = msg(req_name, **body())
                r = self.proto("POST", path, req)
                self.assertEqual(r.status, 200, r)
                self.assertIsNone(r.header("grpc-status"), r.headers)
                as_proto = PB.tokend.TokenReply.FromString(r.body)
                self.assertEqual(r.body, as_proto.SerializeToString())
                status, env = self.json("POST", path, body())
                self.assertEqual((status, env["message"]), (200, None), env)
                as_json = env["data"]
                as_grpc = self.native(method, req, PB.tokend.TokenReply)
                fr = ws.frames(self.grpc_web("/tokend.v1.Tokend/" + method, req).body)
                as_web = PB.tokend.TokenReply.FromString(fr[0][1])
                replies = [ws.fields(as_proto), as_json, ws.fields(as_grpc), ws.fields(as_web)]
                for x in replies:
                    SRV.secret(x["token"]), SRV.secret(x["store_token"])
                # the same names, the same user and settings; fresh tokens each time
                self.assertTrue(all(set(x) == set(replies[0]) for x in replies), replies)
                for key in ("user_id", "encrypt_type", "push_token"):
                    self.assertEqual({x[key] for x in replies}, {replies[0][key]}, key)
                self.assertEqual(replies[0]["user_id"], IDS["alice"])
                self.assertEqual(len({x["token"] for x in replies}), 4)
                expires = [x["expire"] for x in replies]
                self.assertLess(max(expires) - min(expires), 30000, expires)
                for x in replies:
                    self.assertRegex(x["token"], TOKEN_RE)
                    self.assertEqual(len(base64.b64decode(x["public_key"])), 32)
                    v = self.verify(x["token"])
                    self.assertEqual((v.user_id, v.app_id, v.expire),
                                     (IDS["alice"], APP, x["expire"]))

    def test_reads_identical_in_every_form(self):
        hdr = {"access-token": ADMIN}
        uid = IDS["alice"]
        cases = [
            ("GetUser", msg("UserRef", user_id=uid), PB.tokend.User, "GET",
             "/admin/user/get?user_id=%d" % uid, None),
            ("ListUsers", msg("ListUsersRequest", page_size=10), PB.tokend.UserList, "GET",
             "/user/list?page_size=10", "users"),
            ("Verify", msg("VerifyRequest", token=IDS["alice_token"]), PB.tokend.VerifyReply,
             "POST", "/token/verify", None),
            ("PushTargets", msg("PushTargetsRequest", user_id=uid), PB.tokend.PushTargetsReply,
             "POST", "/push/targets", None),
        ]
        for method, req, reply_cls, verb, path, rbody in cases:
            with self.subTest(method):
                as_grpc = self.native(method, req, reply_cls, hdr)
                r = self.proto(verb, path, b"" if verb == "GET" else req, hdr)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, as_grpc.SerializeToString())
                web = ws.frames(self.grpc_web("/tokend.v1.Tokend/" + method, req, hdr).body)
                self.assertEqual(web, [(0, as_grpc.SerializeToString()),
                                       (0x80, b"grpc-status:0\r\n")])
                json_body = None if verb == "GET" else json.loads(
                    json.dumps(ws.fields(req)))
                status, env = self.json(verb, path, json_body, hdr)
                want = ws.fields(as_grpc)
                self.assertEqual((status, env["data"]), (200, want[rbody] if rbody else want))
        # the user read really is alice
        u = PB.tokend.User.FromString(self.proto("GET", "/admin/user/get?user_id=%d" % uid,
                                                 b"", hdr).body)
        self.assertEqual((u.user_id, u.name, u.email, u.app_id),
                         (uid, "alice", "alice@example.net", APP))

    def test_errors(self):
        tok = IDS["alice_token"]
        login = msg("TokenByIdRequest", user_id=IDS["alice"], password=PW_ALICE)
        cases = [
            ("wrong password", "POST", "/token/id",
             msg("TokenByIdRequest", user_id=IDS["alice"], password="nope"), {}, 401, 16,
             BAD_CREDENTIALS),
            ("missing password", "POST", "/token/user", msg("TokenByNameRequest", name="alice"),
             {}, 400, 3, "password is required"),
            ("unknown app", "POST", "/token/id", login, {"app_id": "9876"}, 404, 5,
             "unknown app_id 9876"),
            ("user token acting", "POST", "/token/verify", msg("VerifyRequest", token=tok),
             {"access-token": tok, "user_id": str(IDS["bob"])}, 403, 7,
             "this call needs an admin token of the app"),
            ("duplicate", "POST", "/admin/user/create",
             msg("CreateUserRequest", name="bob_w", password="pw-abcdefg"),
             {"access-token": ADMIN}, 409, 6, "name is already taken in this app"),
            ("no such path", "POST", "/token/nope", login, {}, 404, 5, "no such path"),
            ("wrong verb", "GET", "/token/id", b"", {}, 405, 12, "method not allowed on this path"),
            ("undecodable", "POST", "/token/id", b"\x08", {}, 400, 3,
             "body is not a valid tokend.v1.TokenByIdRequest message"),
            ("too large", "POST", "/token/id", b"\x12" + b"\xff" * 70000, {}, 413, 8,
             "request body is larger than 65536 bytes"),
            ("unknown user", "GET", "/admin/user/get?user_id=99999999", b"",
             {"access-token": ADMIN}, 404, 5, "user_id 99999999 not found"),
        ]
        for name, verb, path, body, hdrs, http_status, code, message in cases:
            with self.subTest(name):
                r = self.proto(verb, path, body, hdrs)
                self.assert_proto_error(r, http_status, code, message)
                if name == "wrong verb":
                    self.assertEqual(r.header("allow"), "POST", r.headers)
                status, env = (self.json(verb, path, ws.fields(body) if body and name not in
                                         ("undecodable", "too large") else None, hdrs)
                               if name not in ("undecodable", "too large") else (None, None))
                if env is not None:
                    self.assertEqual((status, env["message"]), (http_status, message))

    def test_bad_query_value(self):
        r = self.proto("GET", "/admin/user/get?user_id=abc", b"", {"access-token": ADMIN})
        self.assertEqual((r.status, r.header("grpc-status")), (400, "3"), r)
        st = PB.tokend.Status.FromString(r.body)
        self.assertEqual(st.code, 3)
        self.assertTrue(st.message.startswith("user_id"), st.message)

    def test_content_type_aliases(self):
        req = msg("TokenByIdRequest", user_id=IDS["bob"], password=PW_BOB)
        for ct in ("application/protobuf", "application/octet-stream",
                   "application/x-protobuf; proto=tokend.v1.TokenByIdRequest"):
            with self.subTest(ct=ct):
                r = self.proto("POST", "/token/id", req, ct=ct)
                self.assertEqual(r.status, 200, r)
                reply = PB.tokend.TokenReply.FromString(r.body)
                SRV.secret(reply.token), SRV.secret(reply.store_token)
                self.assertEqual(reply.user_id, IDS["bob"])

    def test_query_binding(self):
        # GET: every field from the query string
        r = self.proto("GET", "/admin/user/get?user_id=%d" % IDS["bob"], b"",
                       {"access-token": ADMIN})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(PB.tokend.User.FromString(r.body).name, "bob_w")
        # POST: the query is bound over the body's fields
        r = self.proto("POST", "/token/id?user_id=%d" % IDS["bob"],
                       msg("TokenByIdRequest", user_id=IDS["alice"], password=PW_BOB))
        self.assertEqual(r.status, 200, r)
        reply = PB.tokend.TokenReply.FromString(r.body)
        SRV.secret(reply.token), SRV.secret(reply.store_token)
        self.assertEqual(reply.user_id, IDS["bob"])


# --- everything else ------------------------------------------------------------------

@both
class Health(Base):
    def test_healthz_json(self):
        r = self.req("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"code": 200, "message": None, "data": {"status": "SERVING"}})

    def test_healthz_protobuf(self):
        r = self.proto("GET", "/healthz", b"")
        self.assertEqual((r.status, r.body), (200, HEALTH_OK), r)
        r = self.proto("GET", "/healthz?service=nope", b"")
        self.assert_proto_error(r, 404, 5, 'unknown service "nope"')

    def test_truncated_error_message_stays_utf8(self):
        """Error messages are cut to fit (255 bytes); the cut must not split
        a UTF-8 character, or the binary Status - a proto3 string - stops
        parsing in strict clients, and grpc-message decodes to garbage."""
        svc = "a" * 237 + "\u00e9" * 10  # the 255th byte falls inside an e-acute
        q = "/healthz?service=" + urllib.parse.quote(svc)
        r = self.proto("GET", q, b"")
        self.assertEqual((r.status, r.header("grpc-status")), (404, "5"), r)
        try:
            st = PB.tokend.Status.FromString(r.body)
        except Exception as e:  # protobuf's DecodeError
            self.fail("tokend.v1.Status does not parse (%s): %r" % (e, r.body[-12:]))
        self.assertTrue(st.message.startswith('unknown service "' + "a" * 237), st.message)
        status, env = self.json("GET", q)
        self.assertEqual(status, 404, env)
        self.assertNotIn("\ufffd", env["message"])
        r = self.grpc_web("/grpc.health.v1.Health/Check", PB.health.HealthCheckRequest(service=svc))
        (flag, trailer), = ws.frames(r.body)
        fields = dict(line.split(":", 1) for line in trailer.decode("ascii").split("\r\n") if line)
        self.assertEqual(fields["grpc-status"], "5")
        urllib.parse.unquote_to_bytes(fields["grpc-message"]).decode("utf-8")  # strict

    def test_healthz_query(self):
        status, env = self.json("GET", "/healthz?service=tokend.v1.Tokend")
        self.assertEqual((status, env["data"]), (200, {"status": "SERVING"}))
        status, env = self.json("GET", "/healthz?service=nope")
        self.assertEqual((status, env["message"]), (404, 'unknown service "nope"'))


class GrpcWebHttp1(unittest.TestCase):
    """What only HTTP/1.1 has: keep-alive between calls, chunked bodies."""

    def test_100_calls_on_one_keep_alive_connection(self):
        c = http.client.HTTPConnection("127.0.0.1", SRV.port, timeout=30)
        try:
            for i in range(100):
                body = ws.frame(b"") if i % 10 else b"\x00\x00"  # every 10th is truncated
                c.request("POST", "/grpc.health.v1.Health/Check", body,
                          {"content-type": GRPC_WEB})
                r = c.getresponse()
                got = r.read()
                want = (ws.frame(HEALTH_OK) + OK_TRAILER if i % 10 else
                        ws.trailer_frame(3, "gRPC message frame is missing or truncated"))
                self.assertEqual((r.status, got), (200, want), "call %d" % i)
                self.assertNotEqual(r.getheader("connection", "").lower(), "close", i)
        finally:
            c.close()

    def test_chunked_request_body(self):
        c = http.client.HTTPConnection("127.0.0.1", SRV.port, timeout=30)
        try:
            f = ws.frame(PB.health.HealthCheckRequest(service="tokend.v1.Tokend")
                         .SerializeToString())
            c.request("POST", "/grpc.health.v1.Health/Check", iter([f[:3], f[3:9], f[9:]]),
                      {"content-type": GRPC_WEB}, encode_chunked=True)
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (200, ws.frame(HEALTH_OK) + OK_TRAILER))
        finally:
            c.close()


class Utf8(unittest.TestCase):
    """proto3 strings are UTF-8: JSON input is checked for it, and the
    binary forms must be too, or a string that is not UTF-8 gets stored and
    comes back in replies that strict protobuf clients (Python, Go, Java)
    cannot parse at all."""

    def devices(self, user):
        """ListDevices of `user` by gRPC-Web, parsed strictly."""
        r = SRV.request("POST", "/tokend.v1.Tokend/ListDevices", ws.frame(b""),
                        {"access-token": ADMIN, "user_id": str(IDS[user])},
                        content_type=GRPC_WEB)
        fr = ws.frames(r.body)
        self.assertEqual(fr[-1], (0x80, b"grpc-status:0\r\n"), r)
        try:
            return PB.tokend.DeviceList.FromString(fr[0][1]).devices
        except Exception as e:  # protobuf's DecodeError
            self.fail("ListDevices of %s does not parse (%s): %r" % (user, e, fr[0][1]))

    def test_binary_string_field_must_be_utf8(self):
        m = msg("TokenByIdRequest", user_id=IDS["utf_a"], password=PW_BOB,
                device_guid="utf-a-dev").SerializeToString() + b"\x5a\x03\xff\xfeA"
        r = SRV.request("POST", "/token/id", m, content_type=PROTO)  # user_agent = ff fe 41
        if r.status == 200:
            reply = PB.tokend.TokenReply.FromString(r.body)
            SRV.secret(reply.token), SRV.secret(reply.store_token)
            SRV.secret(reply.push_token)
        self.assertEqual((r.status, r.header("grpc-status")), (400, "3"), r)
        r = SRV.request("POST", "/tokend.v1.Tokend/TokenById", ws.frame(m), content_type=GRPC_WEB)
        self.assertTrue(r.body.startswith(b"\x80") and b"grpc-status:3\r\n" in r.body, r)
        self.devices("utf_a")

    def test_binary_string_field_with_a_nul_is_refused(self):
        # A C string would end at the NUL: "bob_w\0xx" would log in as bob_w,
        # and a password with a NUL would be checked cut short. JSON and the
        # query refuse the NUL already; the binary forms must too.
        for fields, name in (({"name": "bob_w\0xx", "password": PW_BOB}, "name"),
                             ({"name": "bob_w", "password": PW_BOB + "\0zzz"}, "password"),
                             ({"name": "bob_w", "password": PW_BOB, "user_agent": "a\0b" * 40},
                              "user_agent")):
            m = msg("TokenByNameRequest", **fields).SerializeToString()
            r = SRV.request("POST", "/token/user", m, content_type=PROTO)
            self.assertEqual((r.status, r.header("grpc-status")), (400, "3"), (name, r))
            self.assertEqual(PB.tokend.Status.FromString(r.body).message,
                             "%s: NUL characters are not allowed" % name)
            line, hdrs, body = ws.curl_grpc(SRV.port, "/tokend.v1.Tokend/TokenByName", ws.frame(m))
            self.assertEqual((hdrs.get("grpc-status"), hdrs.get("grpc-message")),
                             ("3", "%s: NUL characters are not allowed" % name), (name, hdrs))

    def test_non_utf8_user_agent_header(self):
        c = http.client.HTTPConnection("127.0.0.1", SRV.port, timeout=30)
        try:
            body = json.dumps({"user_id": IDS["utf_b"], "password": PW_BOB,
                               "device_guid": "utf-b-dev"}).encode()
            c.putrequest("POST", "/token/id")
            c.putheader("Content-Type", "application/json")
            # ISO-8859-1 and a tab: legal obs-text and whitespace, each kept as '?';
            # long enough for the eight-bytes-a-step copy and its tail
            c.putheader("User-Agent", b"Mozilla/5.0 (X11;\tLinux) \xe9t\xe9 abcdefgh\xff")
            c.putheader("Content-Length", str(len(body)))
            c.endheaders(body)
            r = c.getresponse()
            data = json.loads(r.read())["data"]
        finally:
            c.close()
        if data:
            SRV.secret(data["token"]), SRV.secret(data["store_token"])
            SRV.secret(data["push_token"])
        self.assertTrue(data, "the login with a Latin-1 user agent failed")
        self.assertEqual([d.user_agent for d in self.devices("utf_b")],
                         ["Mozilla/5.0 (X11;?Linux) ?t? abcdefgh?"])


class NativeGrpc(unittest.TestCase):
    """application/grpc: HTTP/2 only; byte-level checks through curl."""

    def test_over_http1_is_415(self):
        for ct in ("application/grpc", "application/grpc+proto"):
            with self.subTest(ct=ct):
                r = SRV.request("POST", "/grpc.health.v1.Health/Check", ws.frame(b""),
                                content_type=ct)
                self.assertEqual(r.status, 415, r)
                self.assertTrue(r.header("content-type").startswith("application/json"), r)
                self.assertEqual(r.json(), {
                    "code": 415, "data": None,
                    "message": "application/grpc needs HTTP/2: use gRPC-Web over HTTP/1.1"})

    def test_unknown_content_type_is_415(self):
        r = SRV.request("POST", "/token/id", b"user_id=1", content_type="text/plain")
        self.assertEqual(r.status, 415, r)
        self.assertEqual(r.json()["code"], 415)
        self.assertIn("Content-Type must be", r.json()["message"])

    def test_health_check_bytes(self):
        line, hdrs, body = ws.curl_grpc(SRV.port, "/grpc.health.v1.Health/Check", ws.frame(b""))
        self.assertEqual(line, "HTTP/2 200")
        self.assertEqual(hdrs.get("content-type"), "application/grpc", hdrs)
        self.assertEqual(body, ws.frame(HEALTH_OK))
        self.assertEqual(hdrs.get("grpc-status"), "0", hdrs)
        self.assertNotIn("grpc-message", hdrs)

    def test_error_is_trailers_only(self):
        m = msg("TokenByIdRequest", user_id=IDS["alice"], password="wrong").SerializeToString()
        line, hdrs, body = ws.curl_grpc(SRV.port, "/tokend.v1.Tokend/TokenById", ws.frame(m))
        self.assertEqual((line, body), ("HTTP/2 200", b""))
        self.assertEqual((hdrs.get("content-type"), hdrs.get("grpc-status"),
                          hdrs.get("grpc-message")),
                         ("application/grpc", "16", BAD_CREDENTIALS), hdrs)

    def test_grpcio_health(self):
        ch = grpc.insecure_channel("127.0.0.1:%d" % SRV.port, options=ws.NO_PROXY)
        try:
            stub = ch.unary_unary("/grpc.health.v1.Health/Check",
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=PB.health.HealthCheckResponse.FromString)
            self.assertEqual(stub(PB.health.HealthCheckRequest(), timeout=30).status,
                             PB.health.HealthCheckResponse.SERVING)
        finally:
            ch.close()


@both
class QueryBinding(Base):
    def test_admin_user_get(self):
        hdr = {"access-token": ADMIN}
        uid = IDS["alice"]
        status, env = self.json("GET", "/admin/user/get?user_id=%d" % uid, None, hdr)
        self.assertEqual(status, 200, env)
        d = env["data"]
        self.assertEqual((d["user_id"], d["name"], d["email"], d["app_id"], d["disabled"]),
                         (uid, "alice", "alice@example.net", APP, False))
        # percent-encoded, and with an unknown parameter beside it
        status, env2 = self.json("GET", "/admin/user/get?x=1&user_id=%s&y" %
                                 "".join("%%%02X" % ord(c) for c in str(uid)), None, hdr)
        self.assertEqual((status, env2["data"]), (200, d))

    def test_bad_and_missing_values(self):
        hdr = {"access-token": ADMIN}
        status, env = self.json("GET", "/admin/user/get?user_id=abc", None, hdr)
        self.assertEqual(status, 400, env)
        self.assertTrue(env["message"].startswith("user_id"), env)
        status, env = self.json("GET", "/admin/user/get", None, hdr)
        self.assertEqual((status, env["message"]), (400, "user_id is required"))

    def test_list_pages(self):
        hdr = {"access-token": ADMIN}
        status, env = self.json("GET", "/user/list?page_num=1&page_size=1", None, hdr)
        self.assertEqual((status, len(env["data"])), (200, 1), env)
        status, env2 = self.json("GET", "/user/list?page_num=2&page_size=1", None, hdr)
        self.assertEqual((status, len(env2["data"])), (200, 1), env2)
        self.assertNotEqual(env["data"][0]["user_id"], env2["data"][0]["user_id"])
        self.assertEqual({env["data"][0]["user_id"], env2["data"][0]["user_id"]},
                         {IDS["alice"], IDS["bob"]})
        status, env = self.json("GET", "/user/list?page_size=1001", None, hdr)
        self.assertEqual((status, env["message"]), (400, "page_size must be at most 1000"))

    def test_post_with_query(self):
        status, env = self.json("POST", "/token/id?user_id=%d" % IDS["bob"],
                                {"password": PW_BOB})
        self.assertEqual(status, 200, env)
        SRV.secret(env["data"]["token"]), SRV.secret(env["data"]["store_token"])
        self.assertEqual(env["data"]["user_id"], IDS["bob"])


class LargeReply(unittest.TestCase):
    """A reply of many HTTP/2 DATA frames (ListUsers of 300 users with long
    names, ~66 KB) is the same bytes in every form, and native gRPC gets all
    of it before the trailers even when the client's window is tiny."""
    USERS = 500

    @classmethod
    def setUpClass(cls):
        global BIG
        BIG = harness.Server()
        BIG.create_app("big")
        cls.admin = ws.admin_token(BIG)
        # hashing is not under test here: the cheapest cost the CLI allows
        BIG.start("--pwhash-ops", 1, "--pwhash-mem", 1)
        hdr = {"access-token": cls.admin}
        for b in range(cls.USERS // 100):
            batch = PB.tokend.RegisterBatchRequest(list=[
                PB.tokend.RegisterRequest(username="u%03d_" % (b * 100 + i) + "x" * 120,
                                          password="pw-%d-abcdef" % i) for i in range(100)])
            r = BIG.request("POST", "/user/register/batch", batch.SerializeToString(), hdr,
                            content_type=PROTO)
            reply = PB.tokend.RegisterBatchReply.FromString(r.body)
            if r.status != 200 or not all(x.success for x in reply.list):
                raise AssertionError("RegisterUsers: %r %r" % (r, reply))
        r = BIG.request("GET", "/user/list?page_size=1000", b"", hdr, content_type=PROTO)
        if r.status != 200:
            raise AssertionError("ListUsers: %r" % r)
        cls.reply = r.body
        cls.path, cls.hdr = "/tokend.v1.Tokend/ListUsers", hdr
        cls.req = PB.tokend.ListUsersRequest(page_size=1000).SerializeToString()

    def test_the_reply_is_large(self):
        users = PB.tokend.UserList.FromString(self.reply).users
        self.assertEqual(len(users), self.USERS)
        self.assertEqual(len({u.user_id for u in users}), self.USERS)
        self.assertGreater(len(self.reply), 65535)  # past the default HTTP/2 window

    def test_grpc_web_h1_and_h2(self):
        for h2 in (False, True):
            with self.subTest(h2=h2):
                r = BIG.request("POST", self.path, ws.frame(self.req), self.hdr, http2=h2,
                                content_type=GRPC_WEB)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, ws.frame(self.reply) + OK_TRAILER)
                r = BIG.request("POST", self.path, base64.b64encode(ws.frame(self.req)),
                                self.hdr, http2=h2, content_type=GRPC_WEB_TEXT)
                self.assertEqual(r.body, base64.b64encode(ws.frame(self.reply) + OK_TRAILER))

    def test_native_curl(self):
        line, hdrs, body = ws.curl_grpc(BIG.port, self.path, ws.frame(self.req), self.hdr)
        self.assertEqual((line, hdrs.get("grpc-status")), ("HTTP/2 200", "0"), hdrs)
        self.assertEqual(body, ws.frame(self.reply))

    def test_json_agrees(self):
        r = BIG.request("GET", "/user/list?page_size=1000", headers=self.hdr)
        self.assertEqual(r.status, 200, r)
        want = ws.fields(PB.tokend.UserList.FromString(self.reply))["users"]
        self.assertEqual(r.json()["data"], want)

    def test_grpcio_with_a_tiny_window(self):
        opts = ws.NO_PROXY + [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0),
                              ("grpc.max_receive_message_length", 1 << 20)]
        ch = grpc.insecure_channel("127.0.0.1:%d" % BIG.port, options=opts)
        try:
            stub = ch.unary_unary(self.path, request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
            md = list(self.hdr.items())
            for _ in range(20):
                self.assertEqual(stub(self.req, metadata=md, timeout=30), self.reply)
        finally:
            ch.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
