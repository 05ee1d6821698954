"""test_h2_replies.py - the HTTP/2 replies tokend writes itself (src/h2_reply.c),
read frame by frame with a hand-written client (tests/h2_trailers/h2raw.py).

A JSON reply is HEADERS then one DATA frame with END_STREAM; a gRPC reply is
HEADERS, DATA, trailers. Every reply carries its x-request-id (the client's,
or one made) as an HPACK literal *without indexing*: a value unique to one
reply must not go into the connection's header table, where h2o 2.2 would
keep it, scan it for every later header and evict it again (it cost more
than a Verify). The other headers are indexed as before, so from the second
reply on they shrink to one-byte references.
"""
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "h2_trailers"))
import h2raw  # noqa: E402
import harness  # noqa: E402
import wire_support as ws  # noqa: E402

LITERAL_ID = b"\x00\x0cx-request-id"   # literal without indexing, new name, no Huffman


def request_id(block):
    """the x-request-id of a header block, or None when not sent as the literal"""
    at = block.find(LITERAL_ID)
    if at < 0:
        return None
    n = block[at + len(LITERAL_ID)]
    assert n < 127, "id length %d" % n
    start = at + len(LITERAL_ID) + 1
    return block[start:start + n].decode()


class H2Replies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server()
        cls.srv.__enter__()
        cls.srv.create_app("demo")
        cls.srv.add_user("alice", "alice-password-1", **ws.CHEAP_USER)
        cls.admin = ws.admin_token(cls.srv)
        cls.srv.start(*ws.CHEAP)
        r = cls.srv.request("POST", "/token/user", {"name": "alice", "password": "alice-password-1"})
        cls.token = json.loads(r.body)["data"]["token"]

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)

    def send(self, conn, sid, path, ctype, body, extra=()):
        fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                  (b":authority", b"127.0.0.1"), (b"content-type", ctype),
                  (b"access-token", self.admin.encode()), (b"content-length", b"%d" % len(body))]
        fields += list(extra)
        conn.send(h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, sid, h2raw.hpack_literal(fields)) +
                  h2raw.frame(h2raw.DATA, h2raw.END_STREAM, sid, body))

    def test_json_replies_keep_the_request_id_out_of_the_table(self):
        conn = h2raw.Conn(port=self.srv.port)
        body = json.dumps({"token": self.token}).encode()
        ids, sizes = [], []
        try:
            for i in range(40):
                sid = 2 * i + 1
                extra = [(b"x-request-id", b"client-%d" % i)] if i % 4 == 3 else []
                self.send(conn, sid, b"/token/verify", b"application/json", body, extra)
                frames = conn.stream_frames(sid)
                kinds = [(f[0], f[1] & (h2raw.END_STREAM | h2raw.END_HEADERS)) for f in frames]
                self.assertEqual(kinds, [(h2raw.HEADERS, h2raw.END_HEADERS),
                                         (h2raw.DATA, h2raw.END_STREAM)], "reply %d" % i)
                block = frames[0][3]
                self.assertEqual(block[0], 0x88, "reply %d: :status 200 first" % i)
                reply = json.loads(frames[1][3])
                self.assertEqual(reply["code"], 200)
                self.assertEqual(reply["data"]["user_id"], 10000)
                rid = request_id(block)
                self.assertIsNotNone(rid, "reply %d: x-request-id not a literal without indexing: %r"
                                     % (i, block))
                if extra:
                    self.assertEqual(rid, "client-%d" % i)
                ids.append(rid)
                sizes.append(len(block) - len(rid))
        finally:
            conn.close()
        self.assertEqual(len(set(ids)), len(ids), "every reply has its own id")
        # The repeating headers are indexed: later blocks are the id plus a
        # few bytes of references (a new date costs ~30 bytes once a second).
        self.assertLess(max(sizes[1:]), sizes[0])
        self.assertLessEqual(sorted(sizes[1:])[len(sizes) // 2], 32, sizes)

    def test_grpc_replies_too(self):
        conn = h2raw.Conn(port=self.srv.port)
        msg = b"\x0a" + bytes([len(self.token)]) + self.token.encode()
        try:
            for i in range(5):
                sid = 2 * i + 1
                self.send(conn, sid, b"/tokend.v1.Tokend/Verify", b"application/grpc", h2raw.grpc_msg(msg),
                          [(b"te", b"trailers")])
                frames = conn.stream_frames(sid)
                self.assertEqual([f[0] for f in frames], [h2raw.HEADERS, h2raw.DATA, h2raw.HEADERS])
                self.assertIsNotNone(request_id(frames[0][3]), "reply %d" % i)
                self.assertEqual(h2raw.decode_literal_block(frames[2][3]), [(b"grpc-status", b"0")])
        finally:
            conn.close()

    def test_errors_and_empty_replies(self):
        """a 401 (JSON error body) and a 404 go the same way"""
        conn = h2raw.Conn(port=self.srv.port)
        try:
            self.send(conn, 1, b"/token/verify", b"application/json", b'{"token":"nope"}')
            frames = conn.stream_frames(1)
            self.assertEqual([f[0] for f in frames], [h2raw.HEADERS, h2raw.DATA])
            self.assertIsNotNone(request_id(frames[0][3]))
            self.assertEqual(json.loads(frames[1][3])["code"], 401)
            self.send(conn, 3, b"/no/such/path", b"application/json", b"{}")
            frames = conn.stream_frames(3)
            self.assertIsNotNone(request_id(frames[0][3]))
            self.assertEqual(json.loads(frames[-1][3])["code"], 404)
        finally:
            conn.close()


if __name__ == "__main__":
    unittest.main()
