"""harness.py - run a real tokend on a loopback port for integration tests.

    with Server() as srv:                       # fresh temp data dir
        app = srv.create_app("demo")            # first app = default app
        uid = srv.add_user("alice", "pw123456", phone="+1 555 0100")
        srv.start("--workers", "2")             # waits for GET /healthz
        r = srv.request("POST", "/token/id", {"user_id": uid, "password": "pw123456"})
        r = srv.request(..., http2=True)        # HTTP/2 (h2c) through curl
        srv.stop()                              # SIGTERM; exit 0 within 15 s

Every password the harness is given is remembered as a secret; tests add
tokens with srv.secret(t). stop() (and check_logs()) fail when one of them
appears in the server's stdout or stderr.

The binary is $TOKEND_BIN, else build/tokend under the repository root.
Only the standard library and the curl program are used.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("TOKEND_BIN") or os.path.join(REPO, "build", "tokend")
TIMEOUT = 30  # seconds for one request: a hang is a failure, not a wait
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
# LeakSanitizer at exit (build-asan/): h2o 2.2 cannot tear down its event
# loops, contexts and buffer pools, so every server exit "leaks" what h2o
# allocated. A leak fails the test only when tokend's own code allocated it:
# a direct leak whose first frame past the allocator is under src/ or gen/.
_LEAK_BLOCK = re.compile(r"^(Direct|Indirect) leak of .*?(?=^\S|\Z)", re.M | re.S)
_FRAME = re.compile(r"#\d+ 0x[0-9a-f]+ in (\S+) (\S+)")


def own_leaks(logs):
    """The LeakSanitizer reports in logs that are tokend's own (see above)."""
    own = []
    for m in _LEAK_BLOCK.finditer(logs):
        if m.group(1) != "Direct":
            continue
        frames = [f for f in _FRAME.findall(m.group(0))
                  if not f[0].startswith(("__interceptor_", "__asan", "__lsan", "malloc", "calloc",
                                          "realloc"))]
        if frames and any(d in frames[0][1] for d in (REPO + "/src/", REPO + "/gen/")):
            own.append(m.group(0).strip())
    return own


class HarnessError(AssertionError):
    pass


class Response:
    def __init__(self, status, headers, body, version):
        self.status = status
        self.headers = headers  # list of (lower-case name, value)
        self.body = body        # bytes
        self.version = version  # "HTTP/1.1" or "HTTP/2"

    def header(self, name, default=None):
        """The last value of header `name` (any case), or default."""
        vals = [v for k, v in self.headers if k == name.lower()]
        return vals[-1] if vals else default

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%s %d %r>" % (self.version, self.status, self.body[:300])


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def encode_body(body):
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


class Server:
    def __init__(self, data_dir=None):
        self.tmp = tempfile.mkdtemp(prefix="tokend-it-")
        self.data = data_dir or os.path.join(self.tmp, "data")
        self.port = None
        self.proc = None
        self.secrets = set()
        self.log_out = os.path.join(self.tmp, "stdout.log")
        self.log_err = os.path.join(self.tmp, "stderr.log")

    # --- the admin CLI ------------------------------------------------------

    def cli(self, *args, stdin=None, check=True):
        p = subprocess.run([BIN, *map(str, args)], input=stdin, capture_output=True,
                           text=True, timeout=60)
        if any(mark in p.stderr for mark in SANITIZER_MARKS):
            raise HarnessError("sanitizer report from tokend %s:\n%s" % (args[0], p.stderr[-3000:]))
        if check and p.returncode != 0:
            raise HarnessError("tokend %s: exit %d: %s" % (" ".join(map(str, args[:2])),
                                                           p.returncode, p.stderr.strip()))
        return p

    def create_app(self, name, ttl=None, encrypt_type=None):
        args = ["app", "create", "--data", self.data, "--name", name]
        if ttl is not None:
            args += ["--ttl", ttl]
        if encrypt_type is not None:
            args += ["--encrypt-type", encrypt_type]
        return int(self.cli(*args).stdout.strip())

    def add_user(self, name, password, app=None, phone=None, email=None, pwhash_ops=None,
                 pwhash_mem=None):
        self.secret(password)
        args = ["user", "add", "--data", self.data, "--name", name]
        for opt, val in (("--app", app), ("--phone", phone), ("--email", email),
                         ("--pwhash-ops", pwhash_ops), ("--pwhash-mem", pwhash_mem)):
            if val is not None:
                args += [opt, val]
        return int(self.cli(*args, stdin=password + "\n").stdout.strip())

    def show_user(self, user_id):
        out = self.cli("user", "show", "--data", self.data, "--user", user_id).stdout
        return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)

    # --- the server -------------------------------------------------------

    def start(self, *serve_args):
        if self.proc:
            raise HarnessError("server already running")
        serve_args = [str(a) for a in serve_args]
        # tokend throttles failed logins by default; tests not about that turn
        # it off, so repeated bad logins from 127.0.0.1 test what they mean to.
        if not any(a.startswith("--throttle") for a in serve_args):
            serve_args = ["--throttle-account", "0", "--throttle-address", "0"] + serve_args
        # Password checks beyond one waiting per worker are refused by default
        # (503 at once); tests not about that let bursts of logins wait.
        if "--login-queue" not in serve_args:
            serve_args = ["--login-queue", "64"] + serve_args
        self.port = free_port()
        self._out = open(self.log_out, "ab")
        self._err = open(self.log_err, "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data", self.data, "--listen", "127.0.0.1:%d" % self.port,
             *serve_args],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise HarnessError("tokend serve exited with %d: %s" %
                                   (self.proc.returncode, self.logs()))
            try:
                r = self.request("GET", "/healthz", timeout=2)
                if r.status == 200 and r.json()["data"]["status"] == "SERVING":
                    return self
            except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError("tokend did not answer /healthz within 15 s")
            time.sleep(0.05)

    def stop(self):
        """SIGTERM; asserts exit status 0 within 15 s and clean logs."""
        if not self.proc:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise HarnessError("tokend did not exit within 15 s of SIGTERM")
        finally:
            self._out.close()
            self._err.close()
        logs = self.logs()
        # LeakSanitizer ends the process with an abort (abort_on_error=1) or
        # exit code 23; check_logs() decides whether the leaks are tokend's.
        lsan_only = ("ERROR: LeakSanitizer" in logs and "ERROR: AddressSanitizer" not in logs
                     and "runtime error:" not in logs and rc in (-signal.SIGABRT, 23))
        if rc != 0 and not lsan_only:
            raise HarnessError("tokend exited with %d after SIGTERM: %s" % (rc, logs))
        self.check_logs()

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self._out.close()
            self._err.close()

    def close(self):
        try:
            self.kill()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                self.stop()
        finally:
            self.close()

    # --- logs -------------------------------------------------------------

    def secret(self, value):
        """Remember a password or token that must never reach the logs."""
        if value:
            self.secrets.add(value)
        return value

    def logs(self):
        text = b""
        for path in (self.log_out, self.log_err):
            if os.path.exists(path):
                with open(path, "rb") as f:
                    text += f.read()
        return text.decode("utf-8", "replace")

    def check_logs(self):
        logs = self.logs()
        leaked = sorted(s for s in self.secrets if s in logs)
        if leaked:
            raise HarnessError("secrets in the server's output: %r" % leaked)
        # A sanitized build (build-asan/, tools/test) reports here; UBSan may
        # be set to carry on, so the report itself fails the test.
        own = own_leaks(logs)
        if own:
            raise HarnessError("tokend leaks memory (LeakSanitizer):\n%s" % "\n\n".join(own)[:4000])
        for mark in SANITIZER_MARKS:
            at = logs.find(mark)
            if at >= 0 and mark != "ERROR: LeakSanitizer":
                raise HarnessError("sanitizer report in the server's output:\n%s" %
                                   logs[max(0, at - 200):at + 3000])

    # --- requests ------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, http2=False,
                content_type="application/json", timeout=TIMEOUT, source=None):
        """One request. body: dict/list (sent as JSON), str or bytes (as is).
        content_type None sends no Content-Type header. source: the client's
        loopback address (e.g. "127.0.0.2"), to act as another client."""
        hdrs = dict(headers or {})
        data = encode_body(body)
        if content_type is not None and data is not None:
            hdrs.setdefault("Content-Type", content_type)
        if http2:
            return self._curl_h2(method, path, data, hdrs, timeout, source)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                          source_address=(source, 0) if source else None)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return Response(r.status, [(k.lower(), v) for k, v in r.getheaders()], r.read(),
                            "HTTP/1.1")
        finally:
            conn.close()

    def _curl_h2(self, method, path, data, hdrs, timeout, source=None):
        cmd = ["curl", "-sS", "-i", "--http2-prior-knowledge", "--max-time", str(timeout),
               "-X", method, "-H", "Expect:", "-H", "Accept:"]
        if source:
            cmd += ["--interface", source]
        if not any(k.lower() == "content-type" for k in hdrs):
            cmd += ["-H", "Content-Type:"]  # not curl's form-urlencoded default
        for k, v in hdrs.items():
            cmd += ["-H", "%s: %s" % (k, v)]
        if data is not None:
            cmd += ["--data-binary", "@-"]
        cmd.append("http://127.0.0.1:%d%s" % (self.port, path))
        p = subprocess.run(cmd, input=data or b"", capture_output=True, timeout=timeout + 10)
        if p.returncode != 0:
            raise ConnectionError("curl exit %d: %s" % (p.returncode, p.stderr.decode().strip()))
        return parse_curl_output(p.stdout)


def parse_curl_output(out):
    """Splits `curl -i` output into a Response (skipping 1xx header blocks)."""
    while True:
        head, sep, rest = out.partition(b"\r\n\r\n")
        if not sep:
            raise HarnessError("no header block in curl output: %r" % out[:200])
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split()[:2]
        if not status.startswith("1"):
            break
        out = rest
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip().lower(), v.strip()))
    return Response(int(status), headers, rest, version)
