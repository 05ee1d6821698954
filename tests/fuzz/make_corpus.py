#!/usr/bin/python3
"""make_corpus.py - writes the seed corpus of each fuzz target into
tests/fuzz/corpus/<target>/ (committed; run again after changing it).

The first byte of a fuzz_transcode / fuzz_protobuf input picks the message
type by its index in fuzz_messages.h's order: the input types of the
methods of tokend.v1.Tokend, grpc.health.v1.Health and the reflection
service, each once, in declaration order, then (fuzz_protobuf only) the
store records. The order is read from the .proto files here the same way.
"""
import base64
import os
import re
import shutil
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")
OUT = os.path.join(HERE, "corpus")


def request_types():
    order = []
    for path, pkg in (("tokend/v1/tokend.proto", "tokend.v1"),
                      ("grpc/health/v1/health.proto", "grpc.health.v1"),
                      ("grpc/reflection/v1alpha/reflection.proto", "grpc.reflection.v1alpha")):
        text = open(os.path.join(PROTO, path)).read()
        for m in re.finditer(r"\brpc\s+\w+\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)", text):
            name = pkg + "." + m.group(1)
            if name not in order:
                order.append(name)
    return order


TYPES = request_types()
STORE = ["tokend.v1.store." + n for n in ("App", "User", "Session", "Device", "AuditEntry")]


def idx(name, with_store=False):
    types = TYPES + (STORE if with_store else [])
    return types.index(name)


# --- a tiny protobuf encoder ------------------------------------------------

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def f_varint(num, v):
    return varint(num << 3) + varint(v)


def f_bytes(num, v):
    if isinstance(v, str):
        v = v.encode()
    return varint(num << 3 | 2) + varint(len(v)) + v


def f_fixed64(num, v):
    return varint(num << 3 | 1) + v.to_bytes(8, "little")


def frame(msg, flag=0):
    return bytes([flag]) + len(msg).to_bytes(4, "big") + msg


# --- seeds --------------------------------------------------------------------

def transcode_seeds():
    j = [
        ("tokend.v1.TokenByLoginRequest",
         '{"login_name":"alice","password":"alice-Pw-7f3k9q","device_guid":"g-1","platform":1}'),
        ("tokend.v1.TokenByLoginRequest", '{"login_name":"+1 555 0100","password":"x","user_agent":"curl/8"}'),
        ("tokend.v1.TokenByIdRequest", '{"user_id":"9007199254740993","password":"pw"}'),
        ("tokend.v1.TokenByIdRequest", '{"user_id":42,"password":"pw","platform":null}'),
        ("tokend.v1.TokenByNameRequest", '{"name":"\\u5f20\\u4f1f","mobile":"13800138000","password":"p"}'),
        ("tokend.v1.VerifyRequest", '{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}'),
        ("tokend.v1.RegisterBatchRequest",
         '{"list":[{"username":"bob","password":"12345678"},{"username":"\u5c71\u7530","password":"p"}]}'),
        ("tokend.v1.UserIdList", '{"list":[1,"2",18446744073709551615]}'),
        ("tokend.v1.UserIdList", '{"list":["9223372036854775807",-1]}'),
        ("tokend.v1.ListUsersRequest", '{"page_num":1,"page_size":1000}'),
        ("tokend.v1.CreateUserRequest",
         '{"name":"carol","phone":"+44 20 7946 0958","email":"Carol@Example.com","password":"pw-12345"}'),
        ("tokend.v1.UpdateUserRequest", '{"user_id":7,"clear_phone":true,"clear_email":false}'),
        ("tokend.v1.BindDeviceTokenRequest",
         '{"device_sn":3,"device_token":"apns-abc","notifier_name":"ios"}'),
        ("tokend.v1.UnbindDeviceTokenRequest", '{"deviceSn":4294967295}'),
        ("tokend.v1.SetGroupAdminRequest", '{"group_id":"1","user_id":2}'),
        ("tokend.v1.Empty", '{}'),
        ("tokend.v1.Empty", ''),
        ("tokend.v1.DeviceRef", '{"device_sn":0,"unknown":{"deep":[1,2,{"x":null}]}}'),
        ("grpc.health.v1.HealthCheckRequest", '{"service":""}'),
        ("grpc.reflection.v1alpha.ServerReflectionRequest", '{"host":"h","list_services":"*"}'),
        ("grpc.reflection.v1alpha.ServerReflectionRequest",
         '{"file_containing_extension":{"containing_type":"tokend.v1.X","extension_number":50000}}'),
        ("grpc.reflection.v1alpha.ServerReflectionRequest",
         '{"file_by_filename":"a","list_services":"b"}'),
        ("tokend.v1.TokenByLoginRequest", '{"login_name":"a","login_name":"b"}'),
        ("tokend.v1.TokenByLoginRequest", '[' * 40 + ']' * 40),
    ]
    out = {}
    for name, body in j:
        out["json-" + name.split(".")[-1]] = out.get("json-" + name.split(".")[-1], [])
        out["json-" + name.split(".")[-1]].append(bytes([idx(name)]) + body.encode())
    q = [
        ("tokend.v1.ListUsersRequest", "page_num=2&page_size=50"),
        ("tokend.v1.UnbindDeviceTokenRequest", "deviceSn=7"),
        ("tokend.v1.UserRef", "user_id=%31%32&user_id=3"),
        ("tokend.v1.UserIdList", "list=1&list=2&list=%2B3"),
        ("tokend.v1.TokenByLoginRequest", "login_name=caf%C3%A9&password=a+b&&=x&novalue"),
        ("tokend.v1.UpdateUserRequest", "clear_phone=true&clear_email=false&user_id=-1"),
        ("grpc.reflection.v1alpha.ServerReflectionRequest", "file_by_filename=x&list_services=y"),
    ]
    for name, qs in q:
        out.setdefault("query-" + name.split(".")[-1], []).append(bytes([0x80 | idx(name)]) + qs.encode())
    return out


def protobuf_seeds():
    s = {}

    def add(name, data, store=False):
        s.setdefault(name.split(".")[-1], []).append(bytes([idx(name, store)]) + data)

    add("tokend.v1.TokenByLoginRequest",
        f_bytes(1, "alice") + f_bytes(2, "pw") + f_bytes(3, "g-1") + f_varint(10, 2) + f_bytes(11, "ua"))
    add("tokend.v1.TokenByIdRequest", f_varint(1, 42) + f_bytes(2, "pw") + f_varint(10, (1 << 64) - 1))
    add("tokend.v1.RegisterBatchRequest",
        f_bytes(1, f_bytes(1, "bob") + f_bytes(2, "pw")) + f_bytes(1, f_bytes(1, "eve")))
    add("tokend.v1.UserIdList", f_bytes(1, varint(1) + varint(2) + varint(300)))      # packed
    add("tokend.v1.UserIdList", f_varint(1, 5) + f_varint(1, (1 << 63)))                # unpacked
    add("tokend.v1.UpdateUserRequest", f_varint(1, 9) + f_bytes(2, "n") + f_varint(5, 1))
    add("tokend.v1.BindDeviceTokenRequest", f_varint(1, 1) + f_bytes(2, "tok") + f_bytes(3, "fcm"))
    add("tokend.v1.Empty", b"")
    add("tokend.v1.Empty", f_fixed64(99, 1) + f_bytes(100, "unknown"))
    add("grpc.reflection.v1alpha.ServerReflectionRequest", f_bytes(1, "h") + f_bytes(7, ""))
    add("grpc.reflection.v1alpha.ServerReflectionRequest",
        f_bytes(5, f_bytes(1, "tokend.v1.X") + f_varint(2, 50000)))
    add("grpc.health.v1.HealthCheckRequest", f_bytes(1, "tokend.v1.Tokend"))
    add("tokend.v1.store.App", f_varint(1, 1) + f_bytes(2, "demo") + f_varint(3, 604800000)
        + f_varint(4, 4) + f_varint(5, 1) + f_varint(6, 1700000000000), True)
    add("tokend.v1.store.User", f_varint(1, 7) + f_varint(2, 1) + f_bytes(3, "alice")
        + f_bytes(4, "+15550100") + f_bytes(5, "alice@example.com")
        + f_bytes(6, "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaA") + f_varint(8, 1), True)
    add("tokend.v1.store.Session", f_varint(1, 7) + f_varint(2, 1) + f_bytes(3, "g-1")
        + f_varint(4, 1700000000000) + f_bytes(5, bytes(32)) + f_bytes(6, "secret")
        + f_varint(7, 4) + f_bytes(8, "key") + f_varint(9, 0) + f_varint(11, 1), True)
    add("tokend.v1.store.Device", f_varint(1, 7) + f_bytes(2, bytes(32)) + f_varint(3, 1)
        + f_varint(4, 1) + f_bytes(5, "ua") + f_bytes(7, bytes(72)) + f_bytes(10, "g-1"), True)
    add("tokend.v1.store.AuditEntry", f_varint(1, 1) + f_varint(2, 1) + f_bytes(3, "cli")
        + f_bytes(4, "CreateUser") + f_bytes(5, "user_id=7"), True)
    return s


def gzip_of(data):
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(data) + z.flush()


def grpc_seeds():
    login = f_bytes(1, "alice") + f_bytes(2, "pw")
    one = frame(login)
    return {
        "unary": [one, frame(b""), one + frame(b"x")],
        "stream": [frame(f_bytes(7, "")) * 3],
        "compressed": [frame(login, flag=1)],
        # the inflate section: gzip (its magic byte picks gzip), deflate (zlib)
        "forwarded": [b"203.0.113.5", b"6.6.6.6, 203.0.113.5, 10.0.0.9\n10.1.1.1", b"[2001:db8::1]\nfd00::2",
                      b"10.0.0.0/8, fd00::/8 ,192.0.2.7",
                      # RFC 7239 Forwarded (the same section reads the input both ways)
                      b'for=6.6.6.6;proto=http, For="[2001:db8::1]:80";by=10.0.0.9\nfor="203.0.113.5:1",for=_x;a="b,c"'],
        # proxies_header: PROXY v1 lines and v2 headers (IPv4 with a TLV, IPv6, LOCAL)
        "proxy": [b"PROXY TCP4 198.51.100.7 10.0.0.1 40001 443\r\nGET / HTTP/1.1\r\n",
                  b"PROXY TCP6 2001:db8::5 2001:db8::1 1 443\r\n", b"PROXY UNKNOWN\r\n",
                  b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x14" + bytes([198, 51, 100, 7, 10, 0, 0, 1])
                  + b"\x9c\x41\x01\xbb\xea\x00\x05\x01vpce",
                  b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24" + bytes(range(36)),
                  b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00GET"],
        "inflate": [gzip_of(login * 20), zlib.compress(login * 20), gzip_of(b"")[:-3]],
        "trailer": [frame(b"grpc-status:0\r\ngrpc-message:ok%20\r\n", flag=0x80)],
        "truncated": [one[:-2], b"\x00\x00\x00"],
        # whole, with a line break, and in padded chunks as a sender that flushes writes it
        "web-text": [base64.b64encode(one), base64.b64encode(one)[:20] + b"\r\n" + base64.b64encode(one)[20:],
                     base64.b64encode(one[:4]) + base64.b64encode(one[4:]),
                     b"".join(base64.b64encode(one[i:i + 5]) for i in range(0, len(one), 5))],
        "timeout": [b"100m", b"5S", b"99999999H", b"1n", b"30u", b"2M", b"123456789m"],
        "percent": ["caf\u00e9 100% \u5b8c\u4e86\n".encode()],
        "query": [b"a=1&b=%41%zz&&c&d=%2", b"user_id=%31%32+x&=&x=y=z"],
    }


def login_seeds():
    names = ["alice", "Bob_2", "_", "+1 555 0100", "(555) 123-4567", "+86 138 0013 8000",
             "13800138000", "Alice@Example.COM", "user.name+tag@sub.example.co.uk",
             "\u5f20\u4f1f", "\u5c71\u7530\u592a\u90ce", "\uae40\ubbfc\uc900", "\u3072\u3089\u304c\u306a",
             "user@\u4f8b\u3048.jp", "\u0418\u0432\u0430\u043d", "Jos\u00e9", "12", "@", "a@b",
             "a b", "alice\u00a0smith", "x" * 129, "+", "--()", "pass word\x00x", "correct horse battery",
             # canonical forms: NFD, fullwidth (an email's width shrinks), jamo, mixed scripts
             "Jose\u0301", "\uff4a\uff4f\uff53\u00e9\uff20example.com", "a!\uff01@b.co\uff01",
             "\u1100\u1161", "\u0430lice", "\uff0b\uff11 555 0100"]
    return {"names": [n.encode() for n in names] + [b"\xff\xfe", b"al\xc3ce", b"\xed\xa0\x80x"]}


def write(target, groups):
    d = os.path.join(OUT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for group, items in groups.items():
        for i, data in enumerate(items):
            with open(os.path.join(d, "%s-%d" % (group, i)), "wb") as f:
                f.write(data)


def main():
    write("fuzz_transcode", transcode_seeds())
    write("fuzz_protobuf", protobuf_seeds())
    write("fuzz_grpc_frames", grpc_seeds())
    write("fuzz_login_name", login_seeds())
    for t in sorted(os.listdir(OUT)):
        print("%s: %d files" % (t, len(os.listdir(os.path.join(OUT, t)))))


if __name__ == "__main__":
    main()
