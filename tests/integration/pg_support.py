"""pg_support.py - a throw-away PostgreSQL server for the cluster tests.

    with PgServer() as pg:          # initdb + pg_ctl start on a temp dir
        url = pg.url                # postgresql:///tokend?host=SOCKETDIR&port=N&user=U
        pg.stop(); pg.start()       # the database going away and coming back
    with CommitCutter(pg) as cut:   # a proxy on a socket of its own: cut.url
        cut.arm()                   # the next COMMIT's answer is lost, the link cut

Debian's server binaries (package postgresql, /usr/lib/postgresql/*/bin) are
used directly: no cluster of the system's is touched. It listens on a Unix
socket in its own directory only (no TCP). Run as root (as CI does), initdb
and the server run as the `postgres` user via runuser, in a directory that
user owns; as a normal user, they run as that user.

bindir() returns None when the server binaries are missing: callers skip.
"""
import glob
import os
import pwd
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time


def bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    return None


class PgServer:
    def __init__(self, fsync=False):
        self.bin = bindir()
        if not self.bin:
            raise RuntimeError("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
        self.root = os.geteuid() == 0
        self.user = "postgres" if self.root else pwd.getpwuid(os.geteuid()).pw_name
        self.tmp = tempfile.mkdtemp(prefix="tokend-pg-")
        os.chmod(self.tmp, 0o755)
        self.data = os.path.join(self.tmp, "data")
        self.sock = os.path.join(self.tmp, "sock")
        os.mkdir(self.sock)
        self.log = os.path.join(self.tmp, "pg.log")
        if self.root:
            pw = pwd.getpwnam(self.user)
            for p in (self.tmp, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.port = 5432  # on a socket of our own directory: no clash with another server
        self.fsync = fsync
        self._run(["initdb", "-D", self.data, "-U", self.user, "-A", "trust", "-E", "UTF8",
                   "--no-instructions"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = ''\nunix_socket_directories = '%s'\nport = %d\n"
                    "max_connections = 200\nshared_buffers = 32MB\n" % (self.sock, self.port))
            if not fsync:
                f.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        self.url = "postgresql:///postgres?host=%s&port=%d&user=%s" % (self.sock, self.port,
                                                                      self.user)
        self.start()

    def _run(self, args, check=True):
        cmd = [os.path.join(self.bin, args[0])] + args[1:]
        if self.root:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=self.tmp)
        if check and p.returncode != 0:
            raise RuntimeError("%s: exit %d: %s %s" % (args[0], p.returncode, p.stdout, p.stderr))
        return p

    def start(self):
        self._run(["pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "30", "start"])

    def stop(self, mode="fast"):
        self._run(["pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop"], check=False)

    def psql(self, sql):
        cmd = [os.path.join(self.bin, "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
               "-d", self.url, "-c", sql]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("psql: %s" % p.stderr)
        return p.stdout.strip()

    def close(self):
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def close_all(nodes, pgs):
    """Stops every tokend node, then every PostgreSQL: all of them, whatever
    fails on the way; then raises the first failure (a sanitizer report or a
    leak of tokend's, found when a node stops)."""
    failed = []
    for n in nodes:
        try:
            n.stop()
        except Exception as e:  # noqa: BLE001 - go on closing, then fail
            failed.append(e)
        n.close()
    for pg in pgs:
        pg.close()
    if failed:
        raise failed[0]


class CommitCutter:
    """A proxy between tokend and PostgreSQL, on a Unix socket of its own,
    that reads the server's messages (type byte, 4-byte length) and, once
    armed, drops the first CommandComplete "COMMIT" and cuts that
    connection: the commit happened, its client never hears of it. Or,
    armed with freeze(), it stops forwarding at the first CommandComplete
    "BEGIN" and keeps that connection's server side open, whatever the
    client does: a client gone without its server noticing, its
    transaction left idle. The connections are Unix sockets, so libpq asks
    for no TLS: every message the server sends is a typed one."""

    def __init__(self, pg):
        self.pg = pg
        self.dir = tempfile.mkdtemp(prefix="tokend-cut-")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, ".s.PGSQL.%d" % pg.port)
        self.url = "postgresql:///postgres?host=%s&port=%d&user=%s" % (self.dir, pg.port, pg.user)
        self.armed = threading.Event()
        self.fired = threading.Event()
        self.lock = threading.Lock()
        self.freezing = False
        self.frozen = []   # server sockets kept open (closed with the proxy)
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        os.chmod(self.path, 0o777)
        self.lsock.listen(64)
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self):
        self.freezing = False
        self.fired.clear()
        self.armed.set()

    def freeze(self):
        self.freezing = True
        self.fired.clear()
        self.armed.set()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                server.connect(os.path.join(self.pg.sock, ".s.PGSQL.%d" % self.pg.port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    @staticmethod
    def _cut(a, b):
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _up(self, client, server):
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                with self.lock:
                    if server in self.frozen:
                        continue   # the server hears nothing more
                server.sendall(data)
        except OSError:
            pass
        with self.lock:
            if server in self.frozen:
                client.close()
                return
        self._cut(client, server)

    def _down(self, server, client):
        buf = b""
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                buf += data
                out = b""
                while len(buf) >= 5:
                    n = struct.unpack(">I", buf[1:5])[0]
                    if len(buf) < 1 + n:
                        break
                    msg, buf = buf[:1 + n], buf[1 + n:]
                    fire = False
                    tag = b"BEGIN\0" if self.freezing else b"COMMIT\0"
                    if msg[:1] == b"C" and msg[5:].startswith(tag):
                        with self.lock:   # one connection fires
                            fire = self.armed.is_set()
                            self.armed.clear()
                            if fire and self.freezing:
                                self.frozen.append(server)
                    if fire and self.freezing:
                        self.fired.set()
                        return   # nothing more either way; the server side stays open
                    if fire:
                        client.sendall(out)
                        self.fired.set()
                        self._cut(client, server)
                        return
                    out += msg
                if out:
                    client.sendall(out)
        except OSError:
            pass
        self._cut(server, client)

    def close(self):
        self.closing = True
        for s in self.frozen:
            s.close()
        try:
            self.lsock.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
