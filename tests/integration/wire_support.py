"""wire_support.py - what test_grpc.py and test_wire_forms.py share beyond
harness.py: the schema compiled for Python, gRPC framing, a TLS server and
the gRPC C core client.

    pb = protos()                     # pb.tokend.TokenByIdRequest, pb.health...
    frame(b"...")                     # 0x00 + 4-byte big-endian length + message
    trailer_frame(16, "bad")          # 0x80 frame: grpc-status / grpc-message
    frames(body)                      # [(flag, payload), ...], exact or AssertionError
    srv = TlsServer()                 # harness.Server with a fresh self-signed cert
    admin_token(srv)                  # `tokend admin-token create`
    curl_grpc(port, path, body)       # native gRPC by curl (h2c): status, headers, body
    run_call(args)                    # $TOKEND_CALL (build/tokend-call)

The schema is compiled from proto/ at test time with `protoc --python_out`,
so the tests read the same .proto files the server was built from, and
imported from the temporary directory. grpc/health/v1/health_pb2.py is
loaded by file name: a package called `grpc` would collide with grpcio.
"""
import atexit
import importlib
import importlib.util
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import types

import http.client

import harness

REPO = harness.REPO
PROTO_DIR = os.path.join(REPO, "proto")
PROTOS = ["google/api/http.proto", "google/api/annotations.proto", "tokend/v1/tokend.proto",
          "grpc/health/v1/health.proto"]
CALL_BIN = os.environ.get("TOKEND_CALL") or os.path.join(REPO, "build", "tokend-call")
CHEAP = ("--pwhash-ops", 1, "--pwhash-mem", 8)   # server cost for fast logins
CHEAP_USER = {"pwhash_ops": 1, "pwhash_mem": 8}  # the same for `user add`
SLOW = ("--pwhash-ops", 4, "--pwhash-mem", 64)   # a login takes far longer than 1 ms
SLOW_USER = {"pwhash_ops": 4, "pwhash_mem": 64}
NO_PROXY = [("grpc.enable_http_proxy", 0)]       # loopback never goes through a proxy

_pb = None


def protos():
    """The generated modules, compiled once per process."""
    global _pb
    if _pb is not None:
        return _pb
    out = tempfile.mkdtemp(prefix="tokend-pb-")
    atexit.register(shutil.rmtree, out, True)
    p = subprocess.run(["protoc", "-I" + PROTO_DIR, "-I/usr/include", "--python_out=" + out,
                        *PROTOS], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("protoc failed: %s" % p.stderr)
    sys.path.insert(0, out)
    tokend = importlib.import_module("tokend.v1.tokend_pb2")
    spec = importlib.util.spec_from_file_location(
        "tokend_it_health_pb2", os.path.join(out, "grpc", "health", "v1", "health_pb2.py"))
    health = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(health)
    _pb = types.SimpleNamespace(tokend=tokend, health=health)
    return _pb


# --- gRPC framing ---------------------------------------------------------------

def frame(message, flag=0):
    return bytes([flag]) + len(message).to_bytes(4, "big") + message


def trailer_frame(status, message=None):
    text = "grpc-status:%d\r\n" % status
    if message is not None:
        text += "grpc-message:%s\r\n" % message
    return frame(text.encode("ascii"), 0x80)


def frames(body):
    """Splits a gRPC-Web body into (flag, payload); a short or overlong
    frame is an AssertionError, so the caller's check is byte-exact."""
    out, off = [], 0
    while off < len(body):
        if len(body) - off < 5:
            raise AssertionError("truncated frame header at %d: %r" % (off, body[off:]))
        n = int.from_bytes(body[off + 1:off + 5], "big")
        if off + 5 + n > len(body):
            raise AssertionError("frame at %d claims %d bytes, %d left" %
                                 (off, n, len(body) - off - 5))
        out.append((body[off], body[off + 5:off + 5 + n]))
        off += 5 + n
    return out


def fields(msg):
    """A protobuf message as plain Python values by field name, defaults
    included, to compare with tokend's JSON (which emits every field)."""
    out = {}
    for f in msg.DESCRIPTOR.fields:
        v = getattr(msg, f.name)
        if f.label == f.LABEL_REPEATED:
            v = [fields(x) if f.message_type else x for x in v]
        elif f.message_type:
            v = fields(v) if msg.HasField(f.name) else None
        elif f.enum_type:
            v = f.enum_type.values_by_number[v].name
        out[f.name] = v
    return out


# --- servers --------------------------------------------------------------------

def admin_token(srv, app=None):
    args = ["admin-token", "create", "--data", srv.data]
    if app is not None:
        args += ["--app", app]
    return srv.secret(srv.cli(*args).stdout.strip())


class TlsServer(harness.Server):
    """A harness server on TLS (--tls-cert/--tls-key) with a fresh
    self-signed P-256 certificate for localhost and 127.0.0.1; its own
    HTTP requests (the readiness probe included) go over HTTPS."""

    def __init__(self, data_dir=None):
        super().__init__(data_dir)
        self.cert = os.path.join(self.tmp, "cert.pem")
        self.key = os.path.join(self.tmp, "key.pem")
        make_cert(self.cert, self.key)
        with open(self.cert, "rb") as f:
            self.cert_pem = f.read()

    def start(self, *serve_args):
        return super().start("--tls-cert", self.cert, "--tls-key", self.key, *serve_args)

    def request(self, method, path, body=None, headers=None, http2=False,
                content_type="application/json", timeout=harness.TIMEOUT):
        if http2:
            raise NotImplementedError("HTTP/2 over TLS: use a gRPC channel")
        hdrs = dict(headers or {})
        data = harness.encode_body(body)
        if content_type is not None and data is not None:
            hdrs.setdefault("Content-Type", content_type)
        ctx = ssl.create_default_context(cafile=self.cert)
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return harness.Response(r.status, [(k.lower(), v) for k, v in r.getheaders()],
                                    r.read(), "HTTP/1.1")
        finally:
            conn.close()


def make_cert(cert, key, cn="localhost"):
    p = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("openssl req failed: %s" % p.stderr)


def curl_grpc(port, path, body, headers=None, content_type="application/grpc"):
    """Native gRPC by curl over h2c, a client that enforces nothing itself.
    Returns (status line, {name: value} of headers and trailers, body)."""
    d = tempfile.mkdtemp(prefix="tokend-curl-")
    try:
        req, hfile, bfile = (os.path.join(d, n) for n in ("req", "headers", "body"))
        with open(req, "wb") as f:
            f.write(body)
        cmd = ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "30",
               "-H", "content-type: " + content_type, "-H", "te: trailers", "-H", "Expect:",
               "-H", "Accept:", "--data-binary", "@" + req, "-D", hfile, "-o", bfile]
        for k, v in (headers or {}).items():
            cmd += ["-H", "%s: %s" % (k, v)]
        cmd.append("http://127.0.0.1:%d%s" % (port, path))
        p = subprocess.run(cmd, capture_output=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError("curl: %s" % p.stderr.decode())
        with open(hfile, "rb") as f:
            lines = f.read().decode("latin-1").split("\r\n")
        out = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                out[k.strip().lower()] = v.strip()
        with open(bfile, "rb") as f:
            return lines[0].strip(), out, f.read()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- the C core client ------------------------------------------------------------

def have_call():
    return os.access(CALL_BIN, os.X_OK)


def run_call(args, stdin=None, timeout=120):
    """Runs tokend-call; returns the CompletedProcess (text)."""
    return subprocess.run([CALL_BIN, *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=timeout)
