#!/usr/bin/python3
"""Generic tools can list and call tokend's services: the descriptor set that
`tokend protoset` writes, and server reflection (grpc.reflection.v1alpha) as
grpcurl uses it, driven here by grpcio from a schema nobody compiled locally
for the tokend service itself: the messages come from the reflected files."""
import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, Server  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def reflection_module():
    out = tempfile.mkdtemp(prefix="tokend-refl-")
    subprocess.run(["protoc", "-I" + os.path.join(REPO, "proto"), "--python_out=" + out,
                    "grpc/reflection/v1alpha/reflection.proto"], check=True, timeout=60)
    path = os.path.join(out, "grpc", "reflection", "v1alpha", "reflection_pb2.py")
    spec = importlib.util.spec_from_file_location("tokend_it_reflection_pb2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Protoset(unittest.TestCase):
    def test_protoset_describes_every_rpc_and_its_http_path(self):
        out = subprocess.run([BIN, "protoset"], capture_output=True, check=True).stdout
        fds = descriptor_pb2.FileDescriptorSet.FromString(out)
        files = {f.name: f for f in fds.file}
        self.assertIn("tokend/v1/tokend.proto", files)
        self.assertIn("google/protobuf/descriptor.proto", files)  # imports included
        svc = [s for s in files["tokend/v1/tokend.proto"].service if s.name == "Tokend"][0]
        names = {m.name for m in svc.method}
        self.assertTrue({"TokenById", "TokenByLogin", "TokenByName", "Verify"} <= names)
        # The (google.api.http) option travels with the method (extension 72295728).
        by_id = [m for m in svc.method if m.name == "TokenById"][0]
        self.assertIn(b"/token/id", by_id.options.SerializeToString())

    def test_protoset_to_a_file(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.protoset")
            subprocess.run([BIN, "protoset", path], check=True)
            with open(path, "rb") as f:
                self.assertGreater(len(descriptor_pb2.FileDescriptorSet.FromString(f.read()).file), 3)


class Reflection(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.r = reflection_module()
        cls.srv = Server()
        cls.srv.create_app("a")
        cls.srv.add_user("rita", "rita-password", pwhash_ops=1, pwhash_mem=8)
        cls.srv.start("--pwhash-ops", "1", "--pwhash-mem", "8")
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.srv.port,
                                            options=[("grpc.enable_http_proxy", 0)])

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.srv.stop()

    def ask(self, *requests):
        call = self.channel.stream_stream(METHOD,
                                          request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=self.r.ServerReflectionResponse.FromString)
        return list(call(iter(requests), timeout=10))

    def test_list_services(self):
        (res,) = self.ask(self.r.ServerReflectionRequest(list_services=""))
        names = {s.name for s in res.list_services_response.service}
        self.assertEqual(names, {"tokend.v1.Tokend", "grpc.health.v1.Health",
                                 "grpc.reflection.v1alpha.ServerReflection"})

    def test_several_requests_on_one_stream_are_answered_in_order(self):
        res = self.ask(self.r.ServerReflectionRequest(list_services=""),
                       self.r.ServerReflectionRequest(file_by_filename="google/api/http.proto"),
                       self.r.ServerReflectionRequest(file_containing_symbol="no.such.Thing"))
        self.assertEqual([x.WhichOneof("message_response") for x in res],
                         ["list_services_response", "file_descriptor_response", "error_response"])
        self.assertEqual(res[2].error_response.error_code, 5)  # NOT_FOUND
        self.assertEqual(res[1].original_request.file_by_filename, "google/api/http.proto")

    def test_a_stream_gets_each_file_once(self):
        # Anyone may send 100 requests a stream: the answer grows with what
        # was asked, not with how often (before: 1.5 MB, each file 100 times).
        sym = self.r.ServerReflectionRequest(file_containing_symbol="tokend.v1.Tokend")
        res = self.ask(*[sym] * 100)
        self.assertEqual(len(res), 100)
        files = [[descriptor_pb2.FileDescriptorProto.FromString(b).name
                  for b in x.file_descriptor_response.file_descriptor_proto] for x in res]
        self.assertEqual(files[0], ["google/api/http.proto", "google/protobuf/descriptor.proto",
                                    "google/api/annotations.proto", "tokend/v1/tokend.proto"])
        self.assertEqual(files[1:], [[]] * 99)
        self.assertTrue(all(x.WhichOneof("message_response") == "file_descriptor_response"
                            for x in res))
        self.assertLess(sum(x.ByteSize() for x in res), 20000)
        # what another file imports and the stream already has is left out
        (res,) = self.ask(self.r.ServerReflectionRequest(file_by_filename="google/api/http.proto"))
        self.assertEqual(len(res.file_descriptor_response.file_descriptor_proto), 1)
        a, b = self.ask(self.r.ServerReflectionRequest(file_by_filename="google/api/http.proto"),
                        self.r.ServerReflectionRequest(
                            file_containing_symbol="grpc.health.v1.Health.Check"))
        self.assertEqual([descriptor_pb2.FileDescriptorProto.FromString(x).name
                          for x in b.file_descriptor_response.file_descriptor_proto],
                         ["google/protobuf/descriptor.proto", "google/api/annotations.proto",
                          "grpc/health/v1/health.proto"])

    def test_a_stream_is_refused_past_its_cap(self):
        # Each answer echoes its request (host and all): a stream's answers
        # stop at --max-body (64 KiB) beyond the schema's files.
        big = self.r.ServerReflectionRequest(host="h" * 600, file_by_filename="no/such.proto")
        with self.assertRaises(grpc.RpcError) as e:
            self.ask(*[big] * 100)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("this reflection stream's answers would pass", e.exception.details())
        # fewer of them are answered
        self.assertEqual(len(self.ask(*[big] * 40)), 40)

    def test_the_store_schema_is_not_served(self):
        for req in (self.r.ServerReflectionRequest(file_by_filename="tokend/v1/store.proto"),
                    self.r.ServerReflectionRequest(file_containing_symbol="tokend.v1.store.Session"),
                    self.r.ServerReflectionRequest(file_containing_symbol="tokend.v1.store.User.name")):
            (res,) = self.ask(req)
            self.assertEqual(res.WhichOneof("message_response"), "error_response", req)
            self.assertEqual(res.error_response.error_code, 5)  # NOT_FOUND

    def test_a_symbol_must_name_something(self):
        for sym in ("tokend.v1.Tokend.NoSuchMethod", "tokend.v1.VerifyRequest.no_such_field",
                    "tokend.v1", "tokend.v1.TokendX", "tokend.v1.Tokend.Verify.x",
                    "grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING", ""):
            (res,) = self.ask(self.r.ServerReflectionRequest(file_containing_symbol=sym))
            self.assertEqual(res.WhichOneof("message_response"), "error_response", sym)
            self.assertEqual(res.error_response.error_code, 5, sym)
        for sym, name in (("tokend.v1.Tokend", "tokend/v1/tokend.proto"),
                          ("tokend.v1.Tokend.Verify", "tokend/v1/tokend.proto"),
                          ("tokend.v1.VerifyRequest", "tokend/v1/tokend.proto"),
                          ("tokend.v1.VerifyRequest.token", "tokend/v1/tokend.proto"),
                          ("tokend.v1.EncryptType", "tokend/v1/tokend.proto"),
                          ("grpc.health.v1.HealthCheckResponse.ServingStatus",
                           "grpc/health/v1/health.proto"),
                          ("grpc.health.v1.HealthCheckResponse.SERVING",  # values are the enum's siblings
                           "grpc/health/v1/health.proto"),
                          ("google.api.http", "google/api/annotations.proto"),  # an extension
                          ("google.protobuf.FieldDescriptorProto.TYPE_STRING",
                           "google/protobuf/descriptor.proto")):
            (res,) = self.ask(self.r.ServerReflectionRequest(file_containing_symbol=sym))
            blobs = res.file_descriptor_response.file_descriptor_proto
            self.assertTrue(blobs, sym)
            self.assertEqual(descriptor_pb2.FileDescriptorProto.FromString(blobs[-1]).name, name, sym)

    def test_a_client_can_call_tokend_from_reflected_descriptors_alone(self):
        (res,) = self.ask(self.r.ServerReflectionRequest(
            file_containing_symbol="tokend.v1.Tokend.TokenByName"))
        pool = descriptor_pool.DescriptorPool()
        for blob in res.file_descriptor_response.file_descriptor_proto:
            pool.Add(descriptor_pb2.FileDescriptorProto.FromString(blob))  # deps come first
        method = pool.FindServiceByName("tokend.v1.Tokend").FindMethodByName("TokenByName")
        factory = message_factory.MessageFactory(pool)  # python3-protobuf 3.21's API
        Req = factory.GetPrototype(method.input_type)
        Rep = factory.GetPrototype(method.output_type)
        call = self.channel.unary_unary("/tokend.v1.Tokend/TokenByName",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=Rep.FromString)
        rep = call(Req(name="rita", password="rita-password"), timeout=10)
        self.assertEqual(rep.user_id, 10000)
        self.srv.secret(rep.token)
        self.assertEqual(len(rep.token), 43)


HTTP_OF = {0: 200, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 12: 501,
           14: 503, 16: 401}


def http_rules(method_proto):
    """(verb, path) pairs of a method's (google.api.http) option, read from the
    option's bytes: field 72295728 holds a google.api.HttpRule."""
    def varint(b, i):
        n = shift = 0
        while True:
            n |= (b[i] & 0x7F) << shift
            i += 1
            if b[i - 1] < 0x80:
                return n, i
            shift += 7

    def rule(b):
        out, extra, i = [], [], 0
        while i < len(b):
            key, i = varint(b, i)
            ln, i = varint(b, i)
            val, i = b[i:i + ln], i + ln
            field = key >> 3
            if field in (2, 3, 4, 5, 6):
                out.append((["GET", "PUT", "POST", "DELETE", "PATCH"][field - 2], val.decode()))
            elif field == 11:
                extra += rule(val)
        return out + extra

    b, i, rules = method_proto.options.SerializeToString(), 0, []
    while i < len(b):
        key, i = varint(b, i)
        ln, i = varint(b, i)
        if key >> 3 == 72295728:
            rules += rule(b[i:i + ln])
        i += ln
    return rules


class EveryRpc(unittest.TestCase):
    """Every RPC of tokend.v1.Tokend answers over gRPC with a real status (not
    UNIMPLEMENTED, UNKNOWN or INTERNAL), and its JSON binding answers the same
    request with the HTTP status that status maps to."""

    def test_every_rpc_in_both_forms(self):
        srv = Server()
        srv.create_app("a")
        uid = srv.add_user("every", "every-password", pwhash_ops=1, pwhash_mem=8)
        # DeleteUser succeeds once: its JSON twin acts on another user.
        other = srv.add_user("every2", "every-password", pwhash_ops=1, pwhash_mem=8)
        admin = srv.secret(srv.cli("admin-token", "create", "--data", srv.data).stdout.strip())
        srv.start("--pwhash-ops", "1", "--pwhash-mem", "8")
        channel = grpc.insecure_channel("127.0.0.1:%d" % srv.port,
                                        options=[("grpc.enable_http_proxy", 0)])
        try:
            out = subprocess.run([BIN, "protoset"], capture_output=True, check=True).stdout
            fds = descriptor_pb2.FileDescriptorSet.FromString(out)
            svc = [x for f in fds.file if f.name == "tokend/v1/tokend.proto"
                   for x in f.service if x.name == "Tokend"][0]
            seen = 0
            for m in svc.method:
                # An empty request with an admin token acting as the user: every
                # RPC either works or says which field it wants.
                md = (("access-token", admin), ("user_id", str(uid)))
                call = channel.unary_unary("/tokend.v1.Tokend/" + m.name,
                                           request_serializer=lambda b: b,
                                           response_deserializer=lambda b: b)
                try:
                    call(b"", metadata=md, timeout=10)
                    code = 0
                except grpc.RpcError as e:
                    code = e.code().value[0]
                    self.assertNotIn(e.code(), (grpc.StatusCode.UNIMPLEMENTED,
                                                grpc.StatusCode.UNKNOWN,
                                                grpc.StatusCode.INTERNAL),
                                     "%s: %s" % (m.name, e.details()))
                rules = http_rules(m)
                self.assertTrue(rules, "%s has no HTTP binding" % m.name)
                verb, path = rules[0]
                target = other if m.name == "DeleteUser" else uid
                r = srv.request(verb, path, {} if verb != "GET" else None,
                                headers={"access-token": admin, "user_id": str(target)})
                self.assertEqual(r.status, HTTP_OF[code],
                                 "%s: gRPC status %d but %s %s gave %d %r" %
                                 (m.name, code, verb, path, r.status, r.body))
                data = r.json().get("data")
                if isinstance(data, dict) and data.get("token"):
                    srv.secret(data["token"])
                seen += 1
            self.assertGreaterEqual(seen, 25)
        finally:
            channel.close()
            srv.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
