"""lifecycle_support.py - what test_lifecycle.py needs beyond harness.py.

    api = Api(srv)                                   # srv: a started harness.Server
    st, env = api.call("POST", "/token/verify", {"token": t}, token=admin)
    admin = admin_token(srv)                         # `tokend admin-token create`
    db = dump_lmdb(srv.data)                         # {database: [(key, value), ...]}
    set_session_expire(srv.data, guid, ms)           # rewrites a stored session

The LMDB helpers shell out to mdb_dump and mdb_load (Debian package
lmdb-utils). LMDB is multi-process, so both work while the server runs:
mdb_dump reads a snapshot, mdb_load writes in its own transaction.

set_session_expire exists because the shortest app TTL is 60 s: instead of
waiting, a test rewrites the expire_ms of the session it logged in (found by
its unique device_guid) to a time in the past, exactly as an expired session
would be stored, and then checks what the server answers.

Only the standard library is used.
"""
import http.client
import json
import shutil
import subprocess

import harness

MDB_DUMP = shutil.which("mdb_dump") or "/usr/bin/mdb_dump"
MDB_LOAD = shutil.which("mdb_load") or "/usr/bin/mdb_load"

# Field numbers of tokend.v1.store.Session (proto/tokend/v1/store.proto).
SESSION_DEVICE_GUID = 3
SESSION_EXPIRE_MS = 4


class Api:
    """JSON calls with the vendor headers. Every reply must be the envelope
    {"code": <the HTTP status>, "message": null|str, "data": ...}."""

    def __init__(self, srv):
        self.srv = srv

    def call(self, method, path, body=None, token=None, app=None, user=None, group=None,
             headers=None, raw=False):
        hdrs = {}
        if token is not None:
            hdrs["access-token"] = token
        if app is not None:
            hdrs["app_id"] = str(app)
        if user is not None:
            hdrs["user_id"] = str(user)
        if group is not None:
            hdrs["group_id"] = str(group)
        hdrs.update(headers or {})
        r = self.srv.request(method, path, body, headers=hdrs)
        if raw:
            return r
        ctype = r.header("content-type", "")
        if not ctype.startswith("application/json"):
            raise AssertionError("%s %s: content-type %r, body %r" % (method, path, ctype,
                                                                      r.body[:200]))
        try:
            env = r.json()
        except ValueError:
            raise AssertionError("%s %s: not JSON: %r" % (method, path, r.body[:200]))
        if not isinstance(env, dict) or set(env) != {"code", "message", "data"}:
            raise AssertionError("%s %s: not the envelope: %r" % (method, path, env))
        if env["code"] != r.status:
            raise AssertionError("%s %s: code %r but HTTP %d" % (method, path, env["code"],
                                                                r.status))
        if (r.status == 200) != (env["message"] is None):
            raise AssertionError("%s %s: HTTP %d with message %r" % (method, path, r.status,
                                                                    env["message"]))
        return r.status, env


def admin_token(srv, app=None, label=None):
    """A new admin token of `app` (default app when None), from the CLI."""
    args = ["admin-token", "create", "--data", srv.data]
    if app is not None:
        args += ["--app", app]
    if label is not None:
        args += ["--label", label]
    tok = srv.cli(*args).stdout.strip()
    if not tok:
        raise harness.HarnessError("admin-token create printed nothing")
    return srv.secret(tok)


def audit_lines(srv):
    return srv.cli("audit", "--data", srv.data).stdout.splitlines()


# --- LMDB -------------------------------------------------------------------

def dump_lmdb(data_dir):
    """Every named database of the environment: {name: [(key, value), ...]}."""
    # The hex form, not -p: mdb_dump -p prints a backslash bare, so its
    # output cannot be told apart from an escape.
    p = subprocess.run([MDB_DUMP, "-a", data_dir], capture_output=True, timeout=60)
    if p.returncode != 0:
        raise harness.HarnessError("mdb_dump: exit %d: %s" % (p.returncode,
                                                              p.stderr.decode(errors="replace")))
    dbs = {}
    name, items, in_data = None, None, False
    for line in p.stdout.decode("latin-1").split("\n"):
        if not in_data:
            if line.startswith("database="):
                name = line[len("database="):]
            elif line == "HEADER=END":
                in_data, items = True, []
            continue
        if line == "DATA=END":
            if len(items) % 2:
                raise harness.HarnessError("mdb_dump: odd item count in %s" % name)
            dbs[name] = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
            name, in_data = None, False
            continue
        if not line.startswith(" "):
            raise harness.HarnessError("mdb_dump: unexpected line %r" % line[:80])
        items.append(bytes.fromhex(line[1:]))
    if in_data:
        raise harness.HarnessError("mdb_dump: output ends inside %s" % name)
    return dbs


def u64(n):
    return int(n).to_bytes(8, "big")


def load_lmdb(data_dir, database, pairs):
    """Writes (overwrites) key/value pairs into a named database via mdb_load -T."""
    text = "".join("".join("\\%02x" % b for b in k) + "\n" + "".join("\\%02x" % b for b in v) + "\n"
                   for k, v in pairs)
    p = subprocess.run([MDB_LOAD, "-T", "-s", database, data_dir], input=text.encode(),
                       capture_output=True, timeout=60)
    if p.returncode != 0:
        raise harness.HarnessError("mdb_load: exit %d: %s" % (p.returncode,
                                                              p.stderr.decode(errors="replace")))


# --- a minimal protobuf codec (varint and length-delimited fields) ---------------

def _varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _put_varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_fields(buf):
    """[(field number, wire type, value)]: int for varints, bytes otherwise."""
    out, i = [], 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 1:
            v, i = bytes(buf[i:i + 8]), i + 8
        elif wt == 5:
            v, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.append((num, wt, v))
    return out


def pb_encode(fields):
    out = bytearray()
    for num, wt, v in fields:
        out += _put_varint(num << 3 | wt)
        if wt == 0:
            out += _put_varint(v)
        elif wt == 2:
            out += _put_varint(len(v)) + v
        else:
            out += v
    return bytes(out)


def pb_get(fields, num, default=None):
    for n, _, v in fields:
        if n == num:
            return v
    return default


def set_session_expire(data_dir, device_guid, expire_ms):
    """Sets expire_ms of every stored session logged in with `device_guid`
    (a guid the test made unique); returns how many were changed."""
    guid = device_guid.encode()
    changed = []
    for key, val in dump_lmdb(data_dir).get("sessions", []):
        fields = pb_fields(val)
        if pb_get(fields, SESSION_DEVICE_GUID) != guid:
            continue
        fields = [f for f in fields if f[0] != SESSION_EXPIRE_MS]
        fields.append((SESSION_EXPIRE_MS, 0, expire_ms))
        fields.sort(key=lambda f: f[0])
        changed.append((key, pb_encode(fields)))
    if changed:
        load_lmdb(data_dir, "sessions", changed)
    return len(changed)


def fresh_connection_request(port, method, path, body, headers, timeout=30):
    """One request on a new TCP connection (so SO_REUSEPORT may pick any thread)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = dict(headers)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, json.loads(r.read().decode())
    finally:
        conn.close()
