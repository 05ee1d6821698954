"""test_h2_replies.py - the HTTP/2 replies tokend writes itself (src/h2_reply.c),
read frame by frame with a hand-written client (tests/h2_trailers/h2raw.py)
and their header blocks decoded with a real HPACK decoder (python3-hpack).

A JSON reply is HEADERS then one DATA frame with END_STREAM; a gRPC reply is
HEADERS, DATA, trailers; a gRPC error is one HEADERS (Trailers-Only). The
header block is tokend's: fields that repeat from reply to reply (server,
content-type, the date of this second...) are one-byte references to the
connection's HPACK table, where h2o's encoder put them on the first reply
(of the second); content-length is a literal without indexing, and
x-request-id a literal that names the table's one x-request-id entry, so
the table never fills with values used once (h2o 2.2 put every header
there, x-request-id included, and scanned it for each header: more work per
reply than a Verify). grpc-status: 0 ends a gRPC reply as a one-byte
reference to the entry the connection's first one made. The fields are
those h2o sent: :status, server, date, the reply's headers, content-length.
"""
import email.utils
import json
import os
import sys
import time
import unittest

import hpack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "h2_trailers"))
import h2raw  # noqa: E402
import harness  # noqa: E402
import wire_support as ws  # noqa: E402

JSON = "application/json; charset=utf-8"


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
        cls.pb = ws.protos()

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__(None, None, None)

    def setUp(self):
        self.conn = h2raw.Conn(port=self.srv.port)
        self.sid = -1

    def tearDown(self):
        self.conn.close()

    def call(self, path, ctype, body, extra=(), method=b"POST", encoder=None, index_path=False):
        """one request on the connection; the reply's frames. With an
        encoder (hpack's, this connection's): Huffman-coded fields, put in
        the table, but :path never indexed unless index_path (nghttp2's way)."""
        self.sid += 2
        fields = [(b":method", method), (b":scheme", b"http"), (b":path", path),
                  (b":authority", b"127.0.0.1"), (b"content-type", ctype),
                  (b"access-token", self.admin.encode()), (b"content-length", b"%d" % len(body))]
        fields += list(extra)
        if encoder is None:
            block = h2raw.hpack_literal(fields)
        else:
            if not index_path:
                fields[2] = hpack.NeverIndexedHeaderTuple(b":path", path)
            block = encoder.encode(fields, huffman=True)
        self.conn.send(h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, self.sid, block) +
                       h2raw.frame(h2raw.DATA, h2raw.END_STREAM, self.sid, body))
        return self.conn.stream_frames(self.sid)

    def headers(self, frame, what, repeat=False):
        """the fields of a HEADERS frame tokend encoded, as the connection
        decoded them (a wrong table reference decodes to a wrong value,
        which the callers' checks see); a dict (no name twice). Values used
        once never enter the table: content-length is a literal without
        indexing, and an x-request-id is a literal that names the table's one
        x-request-id entry (made by the connection's first reply with an id
        after the first), so the table stays small however many replies go
        by. repeat: the block must be the short form - every field a
        one-byte reference but content-length and x-request-id, and the date
        of a new second (which h2o's encoder adds)."""
        self.assertEqual(frame[0], h2raw.HEADERS, what)
        self.assertTrue(frame[1] & h2raw.END_HEADERS, "%s: one frame, no CONTINUATION" % what)
        block = frame[3]
        kinds = h2raw.representations(block)
        fields = frame[4]
        table = [n for n, _ in self.conn.decoder.header_table.dynamic_entries]
        self.assertNotIn(b"content-length", table, what)
        self.assertLessEqual(table.count(b"x-request-id"), 1, "%s: one x-request-id entry: %r" % (what, table))
        self.assertLessEqual(len(table), 16, "%s: the table grows: %r" % (what, table))
        for (kind, first), (name, _) in zip(kinds, fields):
            if name == b"content-length":
                self.assertEqual(kind, "without", "%s: %s: %r" % (what, name, block))
            elif name == b"x-request-id":
                self.assertIn(kind, ("without", "incremental"), "%s: %s: %r" % (what, name, block))
                if kind == "incremental":
                    self.assertEqual(first, 0x40, "%s: a new entry, new name" % what)
            elif repeat and name != b":status":
                self.assertIn(kind, ("indexed", "incremental") if name == b"date" else ("indexed",),
                              "%s: %s: %r" % (what, name, block))
                if kind == "indexed":
                    self.assertGreaterEqual(first & 0x7F, 62, "%s: %s from the dynamic table" % (what, name))
        names = [n for n, _ in fields]
        self.assertEqual(len(set(names)), len(names), "%s: %r" % (what, fields))
        self.forms = self.forms_of(frame)  # each field's representation
        return {n.decode(): v.decode() for n, v in fields}, kinds

    @staticmethod
    def forms_of(frame):
        """each field's representation in a header block, by name"""
        return {n.decode(): k for (n, _), k in zip(frame[4], h2raw.representations(frame[3]))}

    def check_common(self, h, kinds, status, what):
        """:status first (indexed when the static table has it, else the
        literal with the name :status, index 8), then server and date as h2o
        sends them, and the reply's x-request-id"""
        self.assertEqual(h[":status"], str(status), what)
        if status in (200, 204, 206, 304, 400, 404, 500):
            self.assertEqual(kinds[0], ("indexed", 0x80 | {200: 8, 204: 9, 206: 10, 304: 11, 400: 12,
                                                           404: 13, 500: 14}[status]), what)
        else:
            self.assertEqual(kinds[0], ("without", 0x08), "%s: %d as a literal, name :status" % (what, status))
        self.assertEqual(h["server"], "tokend", what)
        date = email.utils.parsedate_to_datetime(h["date"])
        self.assertRegex(h["date"], r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$", what)
        self.assertLess(abs(date.timestamp() - time.time()), 5, what)
        self.assertRegex(h.get("x-request-id", ""), r"^[\w.-]+$", what)

    def check_plain(self, frames, status, ctype, what, repeat=False):
        """HEADERS, DATA(END_STREAM): the headers of a reply with a body"""
        kinds = [(f[0], f[1] & (h2raw.END_STREAM | h2raw.END_HEADERS)) for f in frames]
        self.assertEqual(kinds, [(h2raw.HEADERS, h2raw.END_HEADERS), (h2raw.DATA, h2raw.END_STREAM)], what)
        h, reps = self.headers(frames[0], what, repeat)
        self.check_common(h, reps, status, what)
        self.assertEqual(h["content-type"], ctype, what)
        self.assertEqual(h["content-length"], str(len(frames[1][3])), what)
        self.assertEqual(h["access-control-allow-origin"], "*", what)
        self.assertEqual(h["cache-control"], "no-store", what)   # tokens, keys, users' details
        return h, frames[1][3]

    def test_json_replies(self):
        body = json.dumps({"token": self.token}).encode()
        ids, forms = [], []
        for i in range(40):
            extra = [(b"x-request-id", b"client-%d" % i)] if i % 4 == 3 else []
            what = "json reply %d" % i
            h, data = self.check_plain(self.call(b"/token/verify", b"application/json", body, extra),
                                       200, JSON, what, repeat=i > 0)
            reply = json.loads(data)
            self.assertEqual(reply["code"], 200, what)
            self.assertEqual(reply["data"]["user_id"], 10000, what)
            self.assertEqual(sorted(h), sorted([":status", "server", "date", "content-type",
                                                "access-control-allow-origin", "cache-control",
                                                "x-request-id", "content-length"]), what)
            if extra:
                self.assertEqual(h["x-request-id"], "client-%d" % i, what)
            ids.append(h["x-request-id"])
            forms.append(self.forms["x-request-id"])
        self.assertEqual(len(set(ids)), len(ids), "every reply has its own id")
        # The first reply is h2o's encoder's (a literal, new name); the second
        # makes the table's x-request-id entry; the others name it (0x0f: a
        # literal without indexing, the name's index from 15 on). A reply
        # that starts a second goes through h2o's encoder again, so the
        # second reply may be one more of h2o's (the clock turned between).
        self.assertEqual(forms[0], ("without", 0x00), forms)
        made = [f for f in forms if f != ("without", 0x00)]
        self.assertEqual(made[0], ("incremental", 0x40), forms)
        self.assertEqual(forms.count(("incremental", 0x40)), 1, forms)
        self.assertGreaterEqual(forms.count(("without", 0x0F)), 30, forms)

    def test_forms_mixed_on_one_connection(self):
        """Replies of other forms and statuses in turn on one connection: each
        new content-type goes through h2o's encoder into the table (moving
        the entries), and every reference must still name the right field."""
        body = json.dumps({"token": self.token}).encode()
        pb = self.pb.tokend.VerifyRequest(token=self.token).SerializeToString()
        web = ws.frame(pb)
        for i in range(4):
            self.check_plain(self.call(b"/token/verify", b"application/json", body), 200, JSON, "json %d" % i,
                             repeat=i > 0)
            self.check_plain(self.call(b"/token/verify", b"application/x-protobuf", pb), 200,
                             "application/x-protobuf", "protobuf %d" % i, repeat=i > 0)
            self.check_plain(self.call(b"/token/verify", b"application/json", b'{"token":"nope"}'), 401, JSON,
                             "json 401 %d" % i, repeat=True)
            h, _ = self.check_plain(self.call(b"/tokend.v1.Tokend/Verify", b"application/grpc-web+proto", web,
                                              [(b"x-grpc-web", b"1")]),
                                    200, "application/grpc-web+proto", "grpc-web %d" % i, repeat=i > 0)
            self.assertEqual(h["access-control-expose-headers"], "grpc-status,grpc-message,x-request-id")

    def test_peer_without_a_table(self):
        """A client that allows no HPACK table (SETTINGS_HEADER_TABLE_SIZE 0)
        gets literals only: h2o 2.2's own encoder ignores that setting and
        would refer to entries the client never kept."""
        self.conn.close()
        self.conn = h2raw.Conn(settings={1: 0}, port=self.srv.port)
        body = json.dumps({"token": self.token}).encode()
        for i in range(3):
            frames = self.call(b"/token/verify", b"application/json", body)
            h, data = self.check_plain(frames, 200, JSON, "no table %d" % i)
            kinds = h2raw.representations(frames[0][3])
            self.assertEqual([k for k, _ in kinds if k not in ("without",)], ["indexed"],
                             "only the static :status is a reference: %r" % kinds)
            self.assertEqual(json.loads(data)["data"]["user_id"], 10000)
        # nor does tokend add to a table the client does not keep: the
        # trailers stay a literal without indexing
        msg = ws.frame(self.pb.tokend.VerifyRequest(token=self.token).SerializeToString())
        for i in range(3):
            frames = self.call(b"/tokend.v1.Tokend/Verify", b"application/grpc", msg, [(b"te", b"trailers")])
            self.assertEqual(frames[2][4], [(b"grpc-status", b"0")], "no table, grpc %d" % i)
            self.assertEqual(h2raw.representations(frames[2][3]), [("without", 0x00)], "no table, grpc %d" % i)
            self.assertEqual(self.forms_of(frames[0])["x-request-id"], ("without", 0x00), "no table, grpc %d" % i)

    def test_json_errors(self):
        """401 has no indexed form in the static table: the literal :status"""
        h, data = self.check_plain(self.call(b"/token/verify", b"application/json", b'{"token":"nope"}'),
                                   401, JSON, "json 401")
        self.assertEqual(json.loads(data)["code"], 401)
        h, data = self.check_plain(self.call(b"/no/such/path", b"application/json", b"{}"),
                                   404, JSON, "json 404")
        self.assertEqual(json.loads(data)["code"], 404)
        h, data = self.check_plain(self.call(b"/token/verify", b"application/json", b"{not json"),
                                   400, JSON, "json 400")
        self.assertEqual(json.loads(data)["code"], 400)

    def test_head_has_no_content(self):
        """A reply to HEAD is one HEADERS frame with END_STREAM and the
        length GET would have (a DATA frame would make the client reset the
        stream); the connection goes on."""
        for path in (b"/healthz", b"/token/verify", b"/no/such/path"):
            frames = self.call(path, b"application/json", b"", method=b"HEAD")
            self.assertEqual(len(frames), 1, (path, frames))
            self.assertEqual(frames[0][0], h2raw.HEADERS, path)
            self.assertTrue(frames[0][1] & h2raw.END_STREAM, path)
            fields = dict(frames[0][4])
            self.assertGreater(int(fields[b"content-length"]), 0, (path, fields))
        h, data = self.check_plain(self.call(b"/token/verify", b"application/json", b'{"token":"nope"}'),
                                   401, JSON, "json 401 after HEAD")
        self.assertEqual(json.loads(data)["code"], 401)
        # HEAD is GET without the content: /healthz answers it, over HTTP/1.1 too
        get = self.srv.request("GET", "/healthz")
        frames = self.call(b"/healthz", b"application/json", b"", method=b"HEAD")
        fields = dict(frames[0][4])
        self.assertEqual(fields[b":status"], b"200", fields)
        self.assertEqual(int(fields[b"content-length"]), len(get.body))
        head = self.srv.request("HEAD", "/healthz")
        self.assertEqual((head.status, head.body, head.header("content-length")),
                         (200, b"", str(len(get.body))))
        self.assertEqual(self.srv.request("HEAD", "/token/verify").header("allow"), "POST")
        self.assertEqual(self.srv.request("POST", "/healthz").header("allow"), "GET, HEAD")

    def test_protobuf(self):
        req = self.pb.tokend.VerifyRequest(token=self.token).SerializeToString()
        for i in range(3):
            h, data = self.check_plain(self.call(b"/token/verify", b"application/x-protobuf", req),
                                       200, "application/x-protobuf", "protobuf %d" % i)
            self.assertEqual(self.pb.tokend.VerifyReply.FromString(data).user_id, 10000)
        bad = self.pb.tokend.VerifyRequest(token="nope").SerializeToString()
        h, data = self.check_plain(self.call(b"/token/verify", b"application/x-protobuf", bad),
                                   401, "application/x-protobuf", "protobuf 401")
        self.assertEqual(h["grpc-status"], "16")

    def test_grpc_web(self):
        req = ws.frame(self.pb.tokend.VerifyRequest(token=self.token).SerializeToString())
        for i, (token, status) in enumerate([(self.token, 0), ("nope", 16), (self.token, 0)]):
            req = ws.frame(self.pb.tokend.VerifyRequest(token=token).SerializeToString())
            what = "grpc-web %d" % i
            h, data = self.check_plain(self.call(b"/tokend.v1.Tokend/Verify", b"application/grpc-web+proto", req,
                                                 [(b"x-grpc-web", b"1")]),
                                       200, "application/grpc-web+proto", what)
            self.assertEqual(h["access-control-expose-headers"], "grpc-status,grpc-message,x-request-id", what)
            self.assertEqual(ws.frames(data)[-1][1].split(b"\r\n")[0], b"grpc-status:%d" % status, what)

    def test_grpc(self):
        msg = ws.frame(self.pb.tokend.VerifyRequest(token=self.token).SerializeToString())
        for i in range(5):
            what = "grpc reply %d" % i
            frames = self.call(b"/tokend.v1.Tokend/Verify", b"application/grpc", msg, [(b"te", b"trailers")])
            self.assertEqual([(f[0], f[1] & (h2raw.END_STREAM | h2raw.END_HEADERS)) for f in frames],
                             [(h2raw.HEADERS, h2raw.END_HEADERS), (h2raw.DATA, 0),
                              (h2raw.HEADERS, h2raw.END_STREAM | h2raw.END_HEADERS)], what)
            h, reps = self.headers(frames[0], what, repeat=i > 0)
            self.check_common(h, reps, 200, what)
            self.assertEqual(sorted(h), sorted([":status", "server", "date", "content-type", "x-request-id"]),
                             "%s: no content-length before a body and trailers" % what)
            self.assertEqual(h["content-type"], "application/grpc", what)
            self.assertEqual(self.pb.tokend.VerifyReply.FromString(ws.frames(frames[1][3])[0][1]).user_id, 10000)
            trailers, kinds = self.headers(frames[2], what + " trailers")
            self.assertEqual(trailers, {"grpc-status": "0"}, what)
            # the connection's first grpc-status 0 makes the table entry
            # (new name, incremental indexing), the next ones are one byte
            if i == 0:
                self.assertEqual(kinds, [("incremental", 0x40)], what)
            else:
                self.assertEqual(len(frames[2][3]), 1, what)
                self.assertEqual(kinds[0][0], "indexed", what)
                self.assertGreaterEqual(kinds[0][1] & 0x7F, 62, what)
        table = self.conn.decoder.header_table.dynamic_entries
        self.assertEqual([e for e in table if e[0] == b"grpc-status"].count((b"grpc-status", b"0")), 1, table)

    def test_dates_across_seconds(self):
        """Replies on one connection for over two seconds: the date of each
        new second goes through h2o's encoder into the table (incremental
        indexing, once), the replies in that second refer to it; every
        reply's date, id and trailers decode right across the changes."""
        body = json.dumps({"token": self.token}).encode()
        msg = ws.frame(self.pb.tokend.VerifyRequest(token=self.token).SerializeToString())
        dates, added, i = [], [], 0
        end = time.time() + 2.3
        while time.time() < end or i < 6:
            what = "reply %d" % i
            if i % 2:
                frames = self.call(b"/tokend.v1.Tokend/Verify", b"application/grpc", msg, [(b"te", b"trailers")])
                h, reps = self.headers(frames[0], what, repeat=i > 1)
                self.check_common(h, reps, 200, what)
                date_form = self.forms["date"]
                self.assertEqual(self.headers(frames[2], what + " trailers")[0], {"grpc-status": "0"}, what)
            else:
                h, _ = self.check_plain(self.call(b"/token/verify", b"application/json", body), 200, JSON, what,
                                        repeat=i > 1)
                date_form = self.forms["date"]
            if date_form[0] == "incremental":
                added.append(h["date"])
            dates.append(h["date"])
            i += 1
            time.sleep(0.04)
        seconds = sorted(set(dates), key=dates.index)
        self.assertGreaterEqual(len(seconds), 3, dates)
        self.assertEqual(added, seconds, "each second's date is added once, by its first reply")

    def grpc_reply(self, frames, what):
        """the message of a gRPC reply with grpc-status 0"""
        self.assertEqual([(f[0], f[1] & (h2raw.END_STREAM | h2raw.END_HEADERS)) for f in frames],
                         [(h2raw.HEADERS, h2raw.END_HEADERS), (h2raw.DATA, 0),
                          (h2raw.HEADERS, h2raw.END_STREAM | h2raw.END_HEADERS)], what)
        self.headers(frames[0], what)
        trailers, _ = self.headers(frames[2], what + " trailers")
        self.assertEqual(trailers, {"grpc-status": "0"}, what)
        return ws.frames(frames[1][3])[0][1]

    def test_huffman_paths(self):
        """Paths Huffman-coded, as clients on nghttp2 (h2load, curl, Envoy)
        send them: those tokend serves reach h2o in plain (src/h2_path.c),
        the others as they came. Known and unknown paths, never indexed or
        indexed (the next requests then name the table entry), in turn on
        one connection: each must reach its own handler, and two gRPC
        methods must not be mistaken for each other."""
        enc = hpack.Encoder()
        body = json.dumps({"token": self.token}).encode()
        verify = ws.frame(self.pb.tokend.VerifyRequest(token=self.token).SerializeToString())
        check = ws.frame(self.pb.health.HealthCheckRequest().SerializeToString())
        for i in range(6):
            what = "huffman %d" % i
            h, data = self.check_plain(self.call(b"/token/verify", b"application/json", body, encoder=enc),
                                       200, JSON, what)
            self.assertEqual(json.loads(data)["data"]["user_id"], 10000, what)
            for index_path in (False, True):
                reply = self.grpc_reply(self.call(b"/tokend.v1.Tokend/Verify", b"application/grpc", verify,
                                                  [(b"te", b"trailers")], encoder=enc, index_path=index_path),
                                        "%s Verify%s" % (what, " indexed" if index_path else ""))
                self.assertEqual(self.pb.tokend.VerifyReply.FromString(reply).user_id, 10000, what)
                reply = self.grpc_reply(self.call(b"/grpc.health.v1.Health/Check", b"application/grpc", check,
                                                  [(b"te", b"trailers")], encoder=enc, index_path=index_path),
                                        "%s Check" % what)
                self.assertEqual(self.pb.health.HealthCheckResponse.FromString(reply).status,
                                 self.pb.health.HealthCheckResponse.SERVING, what)
            for path in (b"/token/verifz", b"/token/verify/%d" % i, b"/tokend.v1.Tokend/Verif"):
                h, data = self.check_plain(self.call(path, b"application/json", b"{}", encoder=enc), 404, JSON,
                                           "%s %s" % (what, path))
                self.assertEqual(json.loads(data)["code"], 404, what)

    def test_grpc_trailers_only(self):
        """a gRPC error without a message: the headers and the trailers in
        one HEADERS frame with END_STREAM"""
        cases = [(b"/tokend.v1.Tokend/Verify", ws.frame(self.pb.tokend.VerifyRequest(token="nope")
                                                        .SerializeToString()), "16"),
                 (b"/tokend.v1.Tokend/NoSuchMethod", ws.frame(b""), "12")]
        for path, msg, code in cases:
            what = "trailers-only %s" % path.decode()
            frames = self.call(path, b"application/grpc", msg, [(b"te", b"trailers")])
            self.assertEqual([(f[0], f[1] & (h2raw.END_STREAM | h2raw.END_HEADERS)) for f in frames],
                             [(h2raw.HEADERS, h2raw.END_STREAM | h2raw.END_HEADERS)], what)
            h, reps = self.headers(frames[0], what)
            self.check_common(h, reps, 200, what)
            self.assertEqual(h["content-type"], "application/grpc", what)
            self.assertEqual(h["grpc-status"], code, what)
            self.assertTrue(h["grpc-message"], what)
            self.assertNotIn("content-length", h, what)
        # the connection and its table are fine for the next reply
        self.test_grpc()


if __name__ == "__main__":
    unittest.main()
