#!/usr/bin/env python3
"""tools/benchmark/cluster_instr.py [N] - instructions per Verify, cluster node vs single node.

The CPU figures of tools/benchmark/cluster.py move with whatever else runs on
the machine; instruction counts do not. The method is tools/bench's callgrind
rows: a server under callgrind (1 loop thread, 1 worker) answers N/4 requests,
then, in a second run, N/4 + N (h2load, one connection, one stream); the
instructions per request are the difference over N. Done for Verify over JSON
(h2c) and native gRPC, against:
  - a single node (LMDB only);
  - node 1 of a cluster of 1 (throw-away PostgreSQL, tests/integration/pg_support.py);
  - node 1 of a cluster of 2 (node 2 running natively, not under callgrind).
Callgrind writes one file per thread (--separate-threads=yes). The feed thread
of a cluster node (feed_main: LISTEN plus a poll of PostgreSQL a second) works by
the clock, not by the request, and a node under callgrind runs ~50x slower, so
it is counted apart: the per-request figure is every other thread's, and the
feed thread's own share is printed too.

N defaults to 2000 (runs of 500 and 2500 calls); with a smaller N the run-to-run
noise of a few hundred thousand instructions per run shows (N = 200 read 0.92 to
1.07). Ports: the first free of 18700..18719 (env PORTS=BASE for BASE..BASE+19);
KEEP=1 keeps the temp dir (callgrind files, logs).

Prints `instr KEY VALUE` lines (instructions per request) and `ratio KEY VALUE`
lines (cluster / single). Exits 77 when PostgreSQL's server binaries, valgrind,
h2load or curl are missing. About 25 s at N = 2000 (callgrind counts instructions, so
the machine's load does not change the figures).
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import pg_support  # noqa: E402
from harness import BIN  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
N1, N2 = N // 4, N // 4 + N
PW = "bench-password-1"
SERVE = ["--threads", "1", "--workers", "1", "--pwhash-mem", "1", "--pwhash-ops", "1"]


def free_port():
    """A port of 127.0.0.1 in [PORTS, PORTS+20) (env PORTS, default 18700) nobody holds."""
    base = int(os.environ.get("PORTS", "18700"))
    for port in range(base, base + 20):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass
    raise RuntimeError("no free port in %d..%d" % (base, base + 19))


def run(*args, stdin=None):
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def wait_up(port, proc, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("tokend exited with %d" % proc.returncode)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5) as r:
                if r.status == 200 and json.load(r)["data"]["status"] == "SERVING":
                    return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise RuntimeError("tokend on port %d not up within %d s" % (port, secs))


def post(port, path, body, headers=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def grpc_body(token):
    t = token.encode()
    n, v = len(t), b""
    while True:
        b, n = n & 0x7F, n >> 7
        v += bytes([b | 0x80]) if n else bytes([b])
        if not n:
            break
    msg = b"\x0a" + v + t
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def serve(data, cluster, tmp, log, prefix=()):
    port = free_port()
    args = [*prefix, BIN, "serve", "--data", data, "--listen", "127.0.0.1:%d" % port, *SERVE]
    if cluster:
        args += ["--cluster", cluster]
    f = open(log, "ab")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=f, cwd=tmp)
    f.close()
    return p, port


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise RuntimeError("tokend did not exit within 120 s of SIGTERM")


def totals(path):
    with open(path, errors="replace") as f:
        text = f.read()
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    return (int(m.group(1)) if m else 0), "feed_main" in text


def cg_sample(n, data, cluster, tmp, path, body, headers):
    """Instructions (feed thread apart) of a server under callgrind that answered
    n requests on one connection and was stopped with SIGTERM."""
    out = os.path.join(tmp, "cg.%d.%d" % (n, time.monotonic_ns()))
    log = os.path.join(tmp, "node-cg.log")
    p, port = serve(data, cluster, tmp, log,
                    ("timeout", "600", "valgrind", "--tool=callgrind", "--separate-threads=yes",
                     "--callgrind-out-file=" + out))
    try:
        wait_up(port, p, 180)
        h = subprocess.run(["h2load", "-n", str(n), "-c", "1", "-m", "1", "-t", "1", "-d", body,
                            *sum((["-H", x] for x in headers), []),
                            "http://127.0.0.1:%d%s" % (port, path)],
                           capture_output=True, text=True, timeout=600)
        if "status codes: %d 2xx" % n not in h.stdout:
            raise RuntimeError("h2load: not every response 2xx:\n" + h.stdout[-800:])
    finally:
        stop(p)
    other = feed = 0
    for f in glob.glob(out + "*"):
        ir, is_feed = totals(f)
        if is_feed:
            feed += ir
        else:
            other += ir
    with open(log, errors="replace") as f:
        bad = [x for x in f if re.search(r"\b(error|fatal|lost|reconnect)", x, re.I)]
    if bad:
        raise RuntimeError("node log under callgrind:\n" + "".join(bad[-10:]))
    return other, feed


def measure(label, data, cluster, tmp, bodies):
    res = {}
    for kind, (path, body, headers) in bodies.items():
        a, fa = cg_sample(N1, data, cluster, tmp, path, body, headers)
        b, fb = cg_sample(N2, data, cluster, tmp, path, body, headers)
        res[kind] = (b - a) / (N2 - N1)
        print("instr %s_%s %.0f" % (label, kind, res[kind]), flush=True)
        if cluster:
            print("instr %s_%s_feed_thread %.0f  (Ir of the feed thread: %d and %d in the two runs)"
                  % (label, kind, (fb - fa) / (N2 - N1), fa, fb), flush=True)
    return res


def main():
    if not pg_support.bindir() or not shutil.which("h2load") or not shutil.which("valgrind") \
            or not shutil.which("curl"):
        print("cluster_instr: skipped: needs PostgreSQL's server binaries, valgrind, h2load, curl")
        return 77
    tmp = tempfile.mkdtemp(prefix="tokend-cli-")
    pg = pg_support.PgServer()
    procs = []
    try:
        data = os.path.join(tmp, "data")
        app = run("app", "create", "--data", data, "--name", "bench")
        run("user", "add", "--data", data, "--app", app, "--name", "benchuser",
            "--pwhash-ops", "1", "--pwhash-mem", "1", stdin=PW + "\n")
        admin = run("admin-token", "create", "--data", data, "--app", app, "--label", "bench")

        def bodies(port):
            tok = post(port, "/token/user", {"name": "benchuser", "password": PW})["data"]["token"]
            r = post(port, "/token/verify", {"token": tok}, {"access-token": admin})
            assert r["data"]["user_id"], r  # an unknown token is a 401
            vj, vg = os.path.join(tmp, "verify.json"), os.path.join(tmp, "verify.grpc")
            with open(vj, "w") as f:
                json.dump({"token": tok}, f, separators=(",", ":"))
            with open(vg, "wb") as f:
                f.write(grpc_body(tok))
            # an unknown token is HTTP 200 in gRPC: check grpc-status once
            g = subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-", "--http2-prior-knowledge",
                                "-H", "content-type: application/grpc", "-H", "te: trailers",
                                "-H", "access-token: " + admin, "--data-binary", "@" + vg,
                                "http://127.0.0.1:%d/tokend.v1.Tokend/Verify" % port],
                               capture_output=True, text=True, timeout=30)
            assert "grpc-status: 0" in g.stdout, g.stdout
            return {
                "json": ("/token/verify", vj, ["content-type: application/json",
                                               "access-token: " + admin]),
                "grpc": ("/tokend.v1.Tokend/Verify", vg, ["content-type: application/grpc",
                                                           "te: trailers",
                                                           "access-token: " + admin]),
            }

        def native_bodies(cluster):
            p, port = serve(data, cluster, tmp, os.path.join(tmp, "node1.log"))
            try:
                wait_up(port, p, 30)
                return bodies(port)
            finally:
                stop(p)

        single = measure("single", data, None, tmp, native_bodies(None))
        run("cluster", "init", "--data", data, "--cluster", pg.url)
        c1 = measure("cluster1", data, pg.url, tmp, native_bodies(pg.url))
        # node 2, natively, with a data directory of its own
        p2, port2 = serve(os.path.join(tmp, "data2"), pg.url, tmp, os.path.join(tmp, "node2.log"))
        procs.append(p2)
        wait_up(port2, p2, 30)
        c2 = measure("cluster2", data, pg.url, tmp, native_bodies(pg.url))
        if p2.poll() is not None:
            raise RuntimeError("node 2 exited")
        for kind in ("json", "grpc"):
            print("ratio cluster_verify_instr_vs_single_%s %.3f" % (kind, c1[kind] / single[kind]))
            print("ratio cluster2_verify_instr_vs_single_%s %.3f" % (kind, c2[kind] / single[kind]))
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
        pg.close()
        if os.environ.get("KEEP"):
            print("cluster_instr: kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
