#!/usr/bin/env python3
"""tools/benchmark/cluster.py [SECONDS] - the cluster row of tokend's benchmark.

Starts a throw-away PostgreSQL (tests/integration/pg_support.py, fsync ON as
in production) and measures, against the same binary run single-node:
  - server CPU per Verify (h2load, 8 conns x 8 streams, one server thread):
    single-node, and one node of a cluster of 1, 2 and 3 (reads never touch
    PostgreSQL, so this should not move);
  - login latency (Argon2id at t=1, m=1 MiB so the database's share shows):
    p50/p99, single-node vs cluster;
  - feed lag under a login load on node 1 (4 clients): a logout on node 1,
    then how long until node 2 refuses the token (revocations are not waited
    for, so this is the feed's own delay), p50/p99;
  - logins/s for the whole cluster with 1, 2 and 3 nodes (1 client each).
On a 2-core machine the load generator and the servers share the cores:
the CPU per request is the figure to compare, not requests/s.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import pg_support  # noqa: E402
from harness import Server  # noqa: E402

SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
PW = "bench password"
CHEAP = ["--pwhash-ops", "1", "--pwhash-mem", "1"]


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def verify_cpu(node, token, admin):
    body = os.path.join(node.tmp, "verify.json")
    with open(body, "w") as f:
        json.dump({"token": token}, f)
    c0 = cpu_s(node.proc.pid)
    p = subprocess.run(["h2load", "-D", str(SECS), "-c", "8", "-m", "8", "-d", body,
                        "-H", "content-type: application/json", "-H", "access-token: " + admin,
                        "http://127.0.0.1:%d/token/verify" % node.port],
                       capture_output=True, text=True, timeout=SECS + 60)
    c1 = cpu_s(node.proc.pid)
    out = p.stdout.replace(",", "")
    done = int(re.search(r"(\d+) succeeded", out).group(1))
    assert re.search(r"0 failed", out), out[-500:]
    return (c1 - c0) / done * 1e6, done / SECS


def login_latencies(node, uid, n=60):
    lat = []
    for _ in range(n):
        t0 = time.monotonic()
        r = node.request("POST", "/token/id", {"user_id": uid, "password": PW})
        lat.append((time.monotonic() - t0) * 1000)
        assert r.status == 200, r
    return lat


def main():
    if not pg_support.bindir() or not shutil.which("h2load"):
        print("cluster bench: needs PostgreSQL's server binaries and h2load (tools/deps)")
        return 2
    pg = pg_support.PgServer(fsync=True)
    nodes = []
    try:
        one = Server()
        nodes.append(one)
        one.create_app("bench")
        uid = one.add_user("bench", PW, pwhash_ops=1, pwhash_mem=1)
        admin = one.cli("admin-token", "create", "--data", one.data).stdout.strip()
        one.start("--threads", "1", "--workers", "1", *CHEAP)
        token = one.request("POST", "/token/id", {"user_id": uid, "password": PW}).json()["data"]["token"]
        single_cpu, single_rps = verify_cpu(one, token, admin)
        single_login = login_latencies(one, uid)
        one.stop()
        one.cli("cluster", "init", "--data", one.data, "--cluster", pg.url)
        rows = []

        def start(n):
            n.start("--cluster", pg.url, "--threads", "1", "--workers", "1", *CHEAP)
        start(one)
        for count in (1, 2, 3):
            while len([n for n in nodes if n.proc]) < count:
                n = Server()
                nodes.append(n)
                start(n)
            live = [n for n in nodes if n.proc]
            cpu, rps = verify_cpu(live[-1], token, admin)
            # logins/s of the whole cluster: one client per node for SECS
            counts = [0] * count
            stop = time.monotonic() + SECS

            def load(i):
                while time.monotonic() < stop:
                    r = live[i].request("POST", "/token/id", {"user_id": uid, "password": PW})
                    counts[i] += r.status == 200
            ts = [threading.Thread(target=load, args=(i,)) for i in range(count)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            rows.append((count, cpu, rps, sum(counts) / SECS))
        cluster_login = login_latencies(one, uid)
        # feed lag under a login load on node 1
        n1, n2 = nodes[0], nodes[1]
        stop_load = threading.Event()

        def bg():
            while not stop_load.is_set():
                n1.request("POST", "/token/id", {"user_id": uid, "password": PW})
        loaders = [threading.Thread(target=bg) for _ in range(4)]
        for t in loaders:
            t.start()
        lags = []
        end = time.monotonic() + SECS * 2
        while time.monotonic() < end:
            tok = n1.request("POST", "/token/id", {"user_id": uid, "password": PW}).json()["data"]["token"]
            n2.request("POST", "/token/verify", {"token": tok}, headers={"access-token": admin})
            r = n1.request("POST", "/token/revoke", {}, headers={"access-token": tok})
            t0 = time.monotonic()
            assert r.status == 200
            while n2.request("POST", "/token/verify", {"token": tok},
                             headers={"access-token": admin}).status == 200:
                pass
            lags.append((time.monotonic() - t0) * 1000)
        stop_load.set()
        for t in loaders:
            t.join()
        print("## Cluster mode (tools/benchmark/cluster.py %d; PostgreSQL %s on a Unix socket, fsync on)"
              % (SECS, os.path.basename(os.path.dirname(pg.bin))))
        print()
        print("| case | server CPU per Verify | Verify/s (shared cores) | logins/s, whole cluster |")
        print("|---|---:|---:|---:|")
        print("| single node | %.1f µs | %.0f | - |" % (single_cpu, single_rps))
        for count, cpu, rps, lps in rows:
            print("| cluster, %d node%s (measured on one) | %.1f µs | %.0f | %.0f |"
                  % (count, "s" if count > 1 else "", cpu, rps, lps))
        print()
        print("login latency (t=1, m=1 MiB), p50 / p99: single node %.2f / %.2f ms, cluster %.2f / "
              "%.2f ms: PostgreSQL adds %.2f ms at p50" %
              (pct(single_login, 50), pct(single_login, 99), pct(cluster_login, 50),
               pct(cluster_login, 99), pct(cluster_login, 50) - pct(single_login, 50)))
        print("feed lag under a login load (4 clients on node 1), logout on node 1 -> refused on "
              "node 2: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d samples)" %
              (pct(lags, 50), pct(lags, 99), max(lags), len(lags)))
    finally:
        for n in nodes:
            n.kill()
            n.close()
        pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
