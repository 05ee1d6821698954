/* h2_reply.c - the HTTP/2 replies tokend writes itself on libh2o 2.2.5:
 * gRPC's trailers, small replies in one socket write, and response header
 * blocks that are mostly one-byte references to the connection's HPACK
 * table.
 *
 * Why this exists: libh2o 2.2.5 (Debian 12) can only end an HTTP/2 response
 * with a DATA frame; it has no public API for trailers. Native gRPC needs
 * grpc-status / grpc-message in a trailing HEADERS frame with END_STREAM.
 * And h2o's HPACK encoder costs more than a small reply is worth (see
 * "Response headers" below). tokend uses the distribution's library, so this
 * file adds the minimum on top of it instead of replacing h2o.
 *
 * How (gRPC, a large body):
 *   1. h2o_start_response() with our generator, then the body goes to the
 *      stream's final ostream with H2O_SEND_STATE_IN_PROGRESS. h2o writes the
 *      response HEADERS and the DATA frames itself (frame size, stream and
 *      connection flow control, priorities), never setting END_STREAM.
 *   2. When every DATA frame has been written to the socket, h2o calls the
 *      generator's proceed(). There we append the trailing HEADERS frame
 *      (+ CONTINUATIONs if larger than the peer's max frame size) with
 *      END_STREAM to the connection's write buffer, move the stream to
 *      END_STREAM and queue it on the connection's streams-to-proceed list,
 *      exactly where h2o puts a stream whose final DATA frame was queued;
 *      after the next write completes h2o closes and frees it.
 * Whole (a small body: at most WHOLE_MAX bytes and no more than h2o's own
 * DATA path would put in one frame of the next write; every unary reply
 * tokend sends, gRPC or not): HEADERS, DATA and, for gRPC, the trailing
 * HEADERS are appended to the write buffer together and the windows
 * consumed as h2o's DATA path would, so the reply is one socket write. A
 * larger gRPC body takes the path above (a larger plain one is left to
 * h2o_send): written whole, a 3 MB body (gRPC core allows 4 MiB frames and
 * grows its windows) was one 3 MB write that held every other frame of the
 * connection behind it, and gRPC core, stalled reading it, reset calls whose
 * HEADERS it had not sent yet - an RST_STREAM on an idle stream, which h2o
 * answers with GOAWAY(PROTOCOL_ERROR): the channel broke.
 * Trailers-Only (body.len == 0): the trailers are appended to the response
 * headers, the HEADERS frame carrying them gets END_STREAM, and the stream
 * is finished as above. (h2o's own empty final send would add an empty DATA
 * frame with END_STREAM instead, which is not the gRPC Trailers-Only form.)
 *
 * Response headers (Whole and Trailers-Only): encoded here, h2o's encoder
 * only where a field is new to the connection. h2o 2.2 scans its HPACK
 * table (32 entries at most) for every header it encodes, and adds every
 * one it has not seen: a value used once (x-request-id) churns the table,
 * and each scan passes over it (~5k instructions a reply with the ids in
 * it, 550-650 without). Here the fields that repeat (server, content-type,
 * the CORS headers, the date of this second) are one-byte references to
 * the entries h2o made for them, found by one pass over the table, or where
 * they were on the connection's last reply while the table has not changed
 * (put_response_headers). A peer - the load generator too - decodes a
 * reference for nothing, where a literal costs it a copy, a check and an
 * allocation (~300-500 instructions each in nghttp2). content-length is a
 * literal without indexing, no Huffman. A field marked by
 * h2_reply_add_unindexed (x-request-id) is a literal without indexing that
 * names the table entry of its name; the connection's first such reply
 * makes that entry (h2_reply_table_add, as h2o's encoder would), the only
 * entry a value used once ever gets. A reply with a repeating field not in
 * the table yet (the connection's first, the first of a second, a new
 * content-type), or a block that might not fit BLOCK_MAX or one frame,
 * goes through h2o's encoder, the marked fields left out of it and
 * appended as literals. The fields are those h2o sends - :status, server,
 * date (h2o's cached string), the reply's headers, content-length - the
 * marked ones last. Header filters (none in tokend) get their turn
 * (start_response). A value's NUL, CR and LF go out as spaces (h2o sends
 * them as they are). Trailers are literals without indexing (new name, as
 * given), but for grpc-status: 0 alone, nearly every gRPC reply's: a
 * one-byte reference to the entry the connection's first one made.
 *
 * Internals relied on (all from <h2o/http2_internal.h> of 2.2.5; the
 * khash-based inline lookup needs src/compat/khash.h on the include path):
 *   - h2o_http2_stream_t embeds the h2o_req_t (member `req`), its `state`,
 *     `stream_id`, `_ostr_final`, `_refs.link`, `_refs.scheduler`,
 *     `send_state`, `_data`;
 *   - h2o_http2_conn_t's `state`, `sock`, `peer_settings.max_frame_size`,
 *     `_write.buf`, `_write.streams_to_proceed`, `_write.window`,
 *     `_output_header_table`; the stream's `output_window` and the inline
 *     h2o_http2_window_get_window() / h2o_http2_window_consume_window() /
 *     h2o_http2_conn_get_buffer_window();
 *   - the connection's frame reader `_read_expect`, `_headers_unparsed` and
 *     `pull_stream_ids.max_open` (to drop gRPC core's RST_STREAM on idle
 *     streams and hand h2o a known :path plain, see read_frame()), h2o's
 *     reader parsing a HEADERS frame with END_HEADERS before it returns
 *     (the frame given to it may be a copy on the stack);
 *   - h2o_http2_stream_set_state() (inline), h2o_http2_conn_get_stream()
 *     (inline, through the khash stand-in), h2o_http2_conn_request_write(),
 *     h2o_hpack_flatten_response(), and the scheduler ref's `_self_is_active`;
 *   - h2o__tokens (a name is a token iff it points into it, as
 *     h2o_iovec_is_token() tests) with each token's static-table index and
 *     dont_compress flag, and the context's `_timestamp_cache.value` (the
 *     date string h2o_get_timestamp() keeps fresh);
 *   - the connection's `_output_header_table` (h2o_hpack_header_table_t:
 *     entries ring, start index, count, size; an entry's name is the token's
 *     iovec for a token, else a shared buffer like its value; its err_desc
 *     unused), read, and added to as its encoder adds (h2_reply_table_add,
 *     tests/unit/test_h2_reply.c holds the two equal), and the encoder's
 *     rules (the 32-entry cap, "don't compress" values under 20 bytes never
 *     indexed); the
 *     connection's `super.id`; req's `prefilters`, `pathconf->filters`,
 *     `_next_filter_index` and `_generator` (start_response), and the
 *     chunked encoder h2o puts on every path acting on HTTP/1.1 only;
 *   - the library calling generator->proceed() only from its write-complete
 *     handler, after unlinking the stream, and never for a stream that was
 *     reset (a reset or a closing connection closes the stream instead; the
 *     generator's stop() is then called and nothing more is sent).
 * Each call checks the req really is a live HTTP/2 stream of its connection
 * (a hash lookup through the stand-in) and returns -1 otherwise.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>

#include "h2_path.h"
#include "h2_reply.h"

/* The internals above are those of 2.2.x; another version must be re-checked
 * against this file (and src/compat/khash.h) before it is allowed here. */
#if H2O_VERSION_MAJOR != 2 || H2O_VERSION_MINOR != 2
#error "h2_reply.c relies on libh2o 2.2.x internals"
#endif

#define MAX_TRAILER_FIELD_LEN (64 * 1024) /* per name or value; gRPC trailers are tiny */
#define WHOLE_MAX 16384                    /* largest body sent with its headers and trailers in one write */

struct trailers_generator {
    h2o_generator_t super;
    h2o_iovec_t block; /* HPACK block of the trailers, in req->pool */
};

/* ---- HPACK / framing helpers ------------------------------------------- */

/* integer with a 7-bit prefix, Huffman bit clear (RFC 7541 5.1) */
static uint8_t *hpack_put_len7(uint8_t *p, size_t v)
{
    if (v < 127) {
        *p++ = (uint8_t)v;
        return p;
    }
    *p++ = 127;
    v -= 127;
    while (v >= 128) {
        *p++ = (uint8_t)(0x80 | (v & 0x7f));
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* 24-bit length, type, flags, 31-bit stream id, big-endian: written as
 * two words and a byte (a reply writes three of these). */
static uint8_t *put_frame_header(uint8_t *p, size_t len, uint8_t type, uint8_t flags, uint32_t stream_id)
{
    uint32_t len_type = htonl((uint32_t)len << 8 | type), id = htonl(stream_id & 0x7fffffff);
    memcpy(p, &len_type, 4);
    p[4] = flags;
    memcpy(p + 5, &id, 4);
    return p + 9;
}

/* The trailers as one HEADERS frame at p, END_STREAM and END_HEADERS:
 * block.len must not pass the peer's max frame size (16 KiB or more; gRPC
 * trailers take tens of bytes). Returns the end. */
static uint8_t *put_trailer_frame(uint8_t *p, uint32_t stream_id, h2o_iovec_t block)
{
    p = put_frame_header(p, block.len, H2O_HTTP2_FRAME_TYPE_HEADERS,
                         H2O_HTTP2_FRAME_FLAG_END_STREAM | H2O_HTTP2_FRAME_FLAG_END_HEADERS, stream_id);
    if (block.len == 1)   /* grpc-status: 0 as a reference to the table: no call */
        *p = (uint8_t)block.base[0];
    else
        memcpy(p, block.base, block.len);
    return p + block.len;
}

/* Appends HEADERS (+ CONTINUATION...) frames carrying `block` to the
 * connection's write buffer; END_STREAM goes on the HEADERS frame, END_HEADERS
 * on the last one. An empty block still yields one HEADERS frame. */
static void append_trailer_frames(h2o_http2_conn_t *conn, uint32_t stream_id, h2o_iovec_t block)
{
    size_t max = conn->peer_settings.max_frame_size;
    const uint8_t *src = (const uint8_t *)block.base;
    size_t left = block.len;
    uint8_t type = H2O_HTTP2_FRAME_TYPE_HEADERS, flags = H2O_HTTP2_FRAME_FLAG_END_STREAM;

    do {
        size_t chunk = left < max ? left : max;
        h2o_iovec_t dst = h2o_buffer_reserve(&conn->_write.buf, H2O_HTTP2_FRAME_HEADER_SIZE + chunk);
        if (dst.base == NULL)
            h2o_fatal("no memory");
        uint8_t *p = put_frame_header((uint8_t *)dst.base, chunk, type,
                                      (uint8_t)(flags | (chunk == left ? H2O_HTTP2_FRAME_FLAG_END_HEADERS : 0)), stream_id);
        if (chunk != 0)
            memcpy(p, src, chunk);
        conn->_write.buf->size += H2O_HTTP2_FRAME_HEADER_SIZE + chunk;
        src += chunk;
        left -= chunk;
        type = H2O_HTTP2_FRAME_TYPE_CONTINUATION;
        flags = 0;
    } while (left != 0);
}

/* ---- stream handling ------------------------------------------------------ */

/* The HTTP/2 stream owning req, or NULL if req is not a pulled stream that the
 * connection currently knows (also catches a header/library layout mismatch). */
static h2o_http2_stream_t *stream_of(h2o_req_t *req)
{
    if (req->version < 0x200 || req->conn == NULL)
        return NULL;
    h2o_http2_conn_t *conn = (h2o_http2_conn_t *)req->conn;
    h2o_http2_stream_t *stream = H2O_STRUCT_FROM_MEMBER(h2o_http2_stream_t, req, req);
    if (h2o_http2_stream_is_push(stream->stream_id) || h2o_http2_conn_get_stream(conn, stream->stream_id) != stream)
        return NULL;
    return stream;
}

/* The END_STREAM flag has just been queued: end the stream the way h2o ends one
 * whose final DATA frame was queued; it is closed (req disposed, stream freed)
 * once the write buffer holding the frame has been flushed. */
static void finish_stream(h2o_http2_conn_t *conn, h2o_http2_stream_t *stream)
{
    stream->req._generator = NULL;
    stream->send_state = H2O_SEND_STATE_FINAL;
    h2o_http2_stream_set_state(conn, stream, H2O_HTTP2_STREAM_STATE_END_STREAM);
    h2o_linklist_insert(&conn->_write.streams_to_proceed, &stream->_refs.link);
    h2o_http2_conn_request_write(conn);
}

/* ---- the connection's frame reader ---------------------------------------- */

/* h2o's reader of a connection's frames is wrapped, for two things:
 *
 * gRPC core's RST_STREAM on idle streams. gRPC core (seen with grpcio 1.51 /
 * core 29, Debian 12; grpc/grpc#19655, #38758) gives a call its stream id
 * before writing its HEADERS; when the call is cancelled (deadline) before
 * that write happened - the client was busy reading a large reply - it still
 * sends RST_STREAM for the id: a reset of an idle stream. h2o 2.2 answers
 * that with GOAWAY(PROTOCOL_ERROR) as RFC 7540 6.4 says, which fails every
 * call on the channel. We drop such a frame instead (the stream never
 * existed for us, so there is nothing to reset).
 *
 * A known :path in plain form (h2_path.c): a HEADERS frame whose :path is
 * the Huffman form of a path the server serves is handed to h2o with that
 * value plain, so h2o does not decode it (a twelfth of a gRPC Verify).
 *
 * h2o's reader is learnt from a connection known to be past its preface (a
 * reply on stream 3 or later) and not inside a header block (no
 * HEADERS/CONTINUATION pending, i.e. `_headers_unparsed` NULL: h2o sets its
 * CONTINUATION reader only together with that buffer). h2o puts its own
 * reader back directly after a CONTINUATION sequence; the next reply on that
 * connection wraps it again. The paths are the context's (h2_reply_serve). */
typedef ssize_t (*read_expect_cb)(h2o_http2_conn_t *conn, const uint8_t *src, size_t len, const char **err_desc);
static read_expect_cb h2o_expect_default; /* learnt once, the same in every thread (atomic access) */

static size_t paths_key = SIZE_MAX; /* the paths' slot in each context's storage, taken by the first */

void h2_reply_serve(h2o_context_t *ctx, const h2_paths *paths)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* contexts start on their own threads */
    pthread_mutex_lock(&lock);
    *h2o_context_get_storage(ctx, &paths_key, NULL) = (void *)paths;
    pthread_mutex_unlock(&lock);
}

static const h2_paths *paths_of(h2o_context_t *ctx)
{
    return paths_key < ctx->storage.size ? ctx->storage.entries[paths_key].data : NULL;
}

static ssize_t read_frame(h2o_http2_conn_t *conn, const uint8_t *src, size_t len, const char **err_desc)
{
    read_expect_cb h2o_read = __atomic_load_n(&h2o_expect_default, __ATOMIC_RELAXED);
    if (len < H2O_HTTP2_FRAME_HEADER_SIZE)
        return h2o_read(conn, src, len, err_desc);
    if (src[3] == H2O_HTTP2_FRAME_TYPE_HEADERS) {
        /* h2o 2.2.5's HPACK parser can read a byte past a block's end (a
         * fuzzer found it): its own blocks lie in the socket's buffer with
         * more after them; this copy gets zeroed bytes after it. */
        uint8_t plain[H2_PATH_OUT_BYTES + H2_PATH_SLACK];
        size_t n = h2_path_plain(paths_of(conn->super.ctx), src, len, plain, H2_PATH_OUT_BYTES);
        if (n != 0) {
            memset(plain + n, 0, H2_PATH_SLACK);
            ssize_t r = h2o_read(conn, plain, n, err_desc);
            return r < 0 ? r : (ssize_t)(H2O_HTTP2_FRAME_HEADER_SIZE + ((size_t)src[0] << 16 | src[1] << 8 | src[2]));
        }
    } else if (len >= H2O_HTTP2_FRAME_HEADER_SIZE + 4 && src[3] == H2O_HTTP2_FRAME_TYPE_RST_STREAM && src[0] == 0 &&
               src[1] == 0 && src[2] == 4) {
        uint32_t id = ((uint32_t)(src[5] & 0x7f) << 24) | (uint32_t)src[6] << 16 | (uint32_t)src[7] << 8 | src[8];
        if (id % 2 == 1 && id > conn->pull_stream_ids.max_open)
            return H2O_HTTP2_FRAME_HEADER_SIZE + 4; /* consumed, ignored */
    }
    return h2o_read(conn, src, len, err_desc);
}

static void wrap_reader(h2o_http2_conn_t *conn, h2o_http2_stream_t *stream)
{
    read_expect_cb cur = conn->_read_expect, def = __atomic_load_n(&h2o_expect_default, __ATOMIC_RELAXED);
    if (cur == read_frame || conn->_headers_unparsed != NULL)
        return;
    if (def == NULL) {
        if (stream->stream_id < 3)
            return; /* stream 1 may be an HTTP/1.1 upgrade answered before the preface was read */
        __atomic_store_n(&h2o_expect_default, cur, __ATOMIC_RELAXED);
        def = cur;
    }
    if (cur == def)
        conn->_read_expect = read_frame;
}

static void on_proceed(h2o_generator_t *_self, h2o_req_t *req)
{
    struct trailers_generator *self = (struct trailers_generator *)_self;
    h2o_http2_stream_t *stream = H2O_STRUCT_FROM_MEMBER(h2o_http2_stream_t, req, req);
    h2o_http2_conn_t *conn = (h2o_http2_conn_t *)req->conn;

    /* h2o 2.2.5 calls proceed only here: the body is flushed, the stream is
     * unlinked and inactive. Anything else (not reachable with 2.2.5) is left
     * to h2o, which closes the stream with the connection. */
    if (conn->state == H2O_HTTP2_CONN_STATE_IS_CLOSING || stream->state != H2O_HTTP2_STREAM_STATE_SEND_BODY ||
        h2o_http2_stream_has_pending_data(stream) || h2o_linklist_is_linked(&stream->_refs.link) ||
        stream->_refs.scheduler._self_is_active)
        return;

    append_trailer_frames(conn, stream->stream_id, self->block);
    finish_stream(conn, stream);
}

static void on_stop(h2o_generator_t *self, h2o_req_t *req)
{
    /* stream reset or connection closed before the trailers went out: all our
     * memory is in req->pool, nothing to do */
}

/* ---- the response header block ------------------------------------------- */

void h2_reply_add_unindexed(h2o_req_t *req, const h2o_iovec_t *name, h2o_iovec_t value)
{
    /* h2o_add_header_by_str would copy `name` into the pool; it is static.
     * It is a reply's first header (x-request-id, http_obs_begin): room for
     * the few that follow is taken at once, without h2o's general growth
     * (http_obs_begin has taken it with a made id). */
    if (req->res.headers.capacity == 0)
        h2_reply_headers_room(req, 0);
    else
        h2o_vector_reserve(&req->pool, &req->res.headers, req->res.headers.size + 1);
    h2o_header_t *slot = req->res.headers.entries + req->res.headers.size++;
    slot->name = (h2o_iovec_t *)name;
    slot->value = value;
    /* The mark: h2o's own headers never have orig_name == name->base (it
     * copies orig_name), and HTTP/1 writes orig_name, i.e. the same bytes. */
    slot->orig_name = name->base;
}

void *h2_reply_headers_room(h2o_req_t *req, size_t extra)
{
    size_t room = req->res.headers.capacity == 0 ? H2_REPLY_HEADERS_ROOM * sizeof(h2o_header_t) : 0;
    _Static_assert(H2_REPLY_HEADERS_ROOM * sizeof(h2o_header_t) % 16 == 0, "the extra bytes stay 16-aligned");
    char *p = h2o_mem_alloc_pool(&req->pool, room + extra);
    if (room != 0) {
        req->res.headers.entries = (h2o_header_t *)p;
        req->res.headers.capacity = H2_REPLY_HEADERS_ROOM;
    }
    return p + room;
}

static int is_unindexed(const h2o_header_t *h)
{
    return h->orig_name != NULL && h->orig_name == h->name->base;
}

#define BLOCK_MAX 4096           /* a larger response header block is left to h2o's encoder */
#define STATUS_DATE_MAX (5 + 32) /* bytes :status and date take at most */
#define CONTENT_LENGTH_MAX 23    /* and content-length */
#define TABLE_MIN 1024           /* a smaller HPACK table (the peer's setting) gets literals only */

/* literal without indexing (0x00) or never indexed (0x10), name from the
 * static table: index with a 4-bit prefix (RFC 7541 5.1, 6.2.2, 6.2.3) */
static uint8_t *put_name_index(uint8_t *p, uint8_t first, unsigned idx)
{
    if (idx < 15) {
        *p++ = (uint8_t)(first | idx);
    } else {
        *p++ = (uint8_t)(first | 15);
        *p++ = (uint8_t)(idx - 15); /* the static table has 61 entries */
    }
    return p;
}

/* Copies n bytes (a name or a value) and tells whether any of them is a
 * control character (below 0x20; HTAB, allowed in a value, is a rare false
 * alarm). Word at a time, overlapping at the ends instead of a byte loop or
 * a call to memcpy; the test per word is exact: ((w - 0x20..) & ~w) has a
 * high bit set iff some byte of w is below 0x20. */
static inline __attribute__((always_inline)) int copy_field(uint8_t *dst, const char *src, size_t n)
{
    if (n >= 8) {
        uint64_t ctl = 0, w;
        for (size_t i = 0;; i += 8) {
            if (i > n - 8)
                i = n - 8;
            memcpy(&w, src + i, 8);
            memcpy(dst + i, &w, 8);
            ctl |= (w - 0x2020202020202020ull) & ~w;
            if (i == n - 8)
                return (ctl & 0x8080808080808080ull) != 0;
        }
    }
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
        return ((((a - 0x20202020u) & ~a) | ((b - 0x20202020u) & ~b)) & 0x80808080u) != 0;
    }
    if (n == 0)
        return 0;
    uint8_t c0 = (uint8_t)src[0], c1 = (uint8_t)src[n / 2], c2 = (uint8_t)src[n - 1];
    dst[0] = c0, dst[n / 2] = c1, dst[n - 1] = c2;
    return c0 < 0x20 || c1 < 0x20 || c2 < 0x20;
}

/* A value goes out with NUL, CR and LF replaced by SP, as RFC 9110 5.5
 * allows a recipient to: none may reach the peer (RFC 9113 8.2.1), nor an
 * HTTP/1.1 hop behind it. h2o does not check. */
static void blank_nul_cr_lf(uint8_t *p, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
            p[i] = ' ';
}

static uint8_t *put_value(uint8_t *p, const char *v, size_t n)
{
    p = hpack_put_len7(p, n);
    if (copy_field(p, v, n))
        blank_nul_cr_lf(p, n);
    return p + n;
}

/* A string copied as it is: a header name (from tokend's code) or the
 * configured server name, trusted as h2o trusts them. */
static uint8_t *put_trusted(uint8_t *p, const h2o_iovec_t *s)
{
    p = hpack_put_len7(p, s->len);
    copy_field(p, s->base, s->len);
    return p + s->len;
}

/* Literal header fields without indexing, new name (RFC 7541 6.2.2), no
 * Huffman coding, names as they are (tokend's own, lower case), values as
 * put_value sends them. {NULL, 0} for an empty name or a field too long. */
h2o_iovec_t h2_reply_encode_trailers(h2o_mem_pool_t *pool, const h2o_header_t *trailers, size_t n)
{
    size_t cap = 0;
    for (size_t i = 0; i != n; ++i) {
        const h2o_header_t *h = trailers + i;
        if (h->name == NULL || h->name->len == 0 || h->name->len > MAX_TRAILER_FIELD_LEN ||
            h->value.len > MAX_TRAILER_FIELD_LEN)
            return h2o_iovec_init(NULL, 0);
        cap += 1 + 4 + h->name->len + 4 + h->value.len; /* lengths < 64K need at most 4 bytes */
    }
    uint8_t *buf = h2o_mem_alloc_pool(pool, cap + 1), *p = buf;
    for (size_t i = 0; i != n; ++i) {
        *p++ = 0x00;
        p = put_trusted(p, trailers[i].name);
        p = put_value(p, trailers[i].value.base, trailers[i].value.len);
    }
    return h2o_iovec_init(buf, (size_t)(p - buf));
}

/* grpc-status: 0 alone ends nearly every gRPC reply: its block, as
 * h2_reply_encode_trailers writes it, is made once here rather than for
 * each reply (tests/unit/test_h2_reply.c compares the two). */
static const char grpc_ok_name[] = "grpc-status";
static const char grpc_ok_block[] = "\x00\x0b" "grpc-status" "\x01" "0";
static const h2o_iovec_t grpc_ok_name_iov = {(char *)grpc_ok_name, sizeof grpc_ok_name - 1};
const h2o_header_t h2_reply_grpc_ok[1] = {{(h2o_iovec_t *)&grpc_ok_name_iov, NULL, {(char *)"0", 1}}};

h2o_iovec_t h2_reply_trailer_block(h2o_mem_pool_t *pool, const h2o_header_t *trailers, size_t n)
{
    if (trailers == h2_reply_grpc_ok && n == 1)
        return h2o_iovec_init(grpc_ok_block, sizeof grpc_ok_block - 1);
    if (n == 1 && trailers->name != NULL &&
        h2o_memis(trailers->name->base, trailers->name->len, grpc_ok_name, sizeof grpc_ok_name - 1) &&
        h2o_memis(trailers->value.base, trailers->value.len, "0", 1))
        return h2o_iovec_init(grpc_ok_block, sizeof grpc_ok_block - 1); /* only ever read */
    return h2_reply_encode_trailers(pool, trailers, n);
}

/* the token h2o interned `name` as, or NULL (h2o_iovec_is_token, inlined) */
static const h2o_token_t *token_of(const h2o_iovec_t *name)
{
    uintptr_t at = (uintptr_t)name - (uintptr_t)h2o__tokens;
    return at < sizeof(h2o__tokens) ? (const h2o_token_t *)name : NULL;
}

/* A field sent as a reference to the connection's HPACK table: the whole
 * field, or (name_only) its name, for a literal whose value is new. idx is
 * its index once found (62 on, newest first), 0 while not. */
typedef struct {
    const h2o_iovec_t *name;
    h2o_iovec_t value;
    uint8_t name_is_token, name_only, optional; /* optional: may be absent */
    uint8_t idx;
} table_ref;
#define REFS_MAX 16

static inline uint64_t load64(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* a == b, for the short strings of header fields: words compared, the
 * last one overlapping, straight through up to 32 bytes, no call */
static inline __attribute__((always_inline)) int same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return 0;
    size_t n = alen;
    if (n >= 8) {
        uint64_t d = (load64(a) ^ load64(b)) | (load64(a + n - 8) ^ load64(b + n - 8));
        if (n > 16) {
            d |= (load64(a + 8) ^ load64(b + 8)) | (load64(a + n - 16) ^ load64(b + n - 16));
            for (size_t i = 16; i + 16 < n; i += 8)
                d |= load64(a + i) ^ load64(b + i);
        }
        return d == 0;
    }
    if (n >= 4) {
        uint32_t x0, y0, x1, y1;
        memcpy(&x0, a, 4), memcpy(&y0, b, 4), memcpy(&x1, a + n - 4, 4), memcpy(&y1, b + n - 4, 4);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    for (size_t i = 0; i != n; ++i)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static inline __attribute__((always_inline)) int entry_is(const h2o_hpack_header_table_entry_t *e, const table_ref *r)
{
    if (r->name_is_token ? e->name != r->name : !same_bytes(e->name->base, e->name->len, r->name->base, r->name->len))
        return 0;
    return r->name_only || same_bytes(e->value->base, e->value->len, r->value.base, r->value.len);
}

/* Finds each reference in the table, in one pass. h2o keeps at most 32
 * entries in it, so an index takes one byte. Returns -1 if one is absent. */
static int resolve_refs(const h2o_hpack_header_table_t *t, table_ref *refs, size_t n)
{
    size_t left = n, at = t->entry_start_index;
    for (size_t i = 0; i != t->num_entries && i < 64 && left != 0; ++i) {
        const h2o_hpack_header_table_entry_t *e = t->entries + at;
        for (table_ref *r = refs; r != refs + n; ++r) {
            if (r->idx == 0 && entry_is(e, r)) {
                r->idx = (uint8_t)(62 + i);
                --left;
            }
        }
        if (++at == t->entry_capacity)
            at = 0;
    }
    return left == 0 ? 0 : -1;
}

/* Where a connection's references were found last, kept per thread by
 * h2o's connection id (as http_obs_peer keeps the peer's text): while the
 * table is as it was then (an entry added or evicted moves its start, count
 * or size) and the same fields come in the same order, each is checked in
 * the slot it was found in, which saves the scan. The check is of the
 * entry's name and value, not of its address: a slot h2o evicted and filled
 * again may hold a new entry at the same address, and 32 additions can
 * bring start, count and size back where they were. */
#define MEMO_SLOTS 64
#define MEMO_REFS 6
static __thread struct {
    uint64_t conn_id;
    const void *entries;
    size_t start, num, size, n;
    const h2o_hpack_header_table_entry_t *slot[MEMO_REFS];
    uint8_t idx[MEMO_REFS];
} memo[MEMO_SLOTS];

/* Finds every reference (-1 if one is absent: the others found are set). */
static int resolve_refs_memo(h2o_http2_conn_t *conn, table_ref *refs, size_t n)
{
    const h2o_hpack_header_table_t *t = &conn->_output_header_table;
    __typeof__(memo[0]) *m = &memo[conn->super.id % MEMO_SLOTS];
    if (m->conn_id == conn->super.id && m->n == n && m->entries == t->entries && m->start == t->entry_start_index &&
        m->num == t->num_entries && m->size == t->hpack_size) {
        size_t i = 0;
        for (; i != n && entry_is(m->slot[i], refs + i); ++i)
            refs[i].idx = m->idx[i];
        if (i == n)
            return 0;
        for (size_t j = 0; j != i; ++j)
            refs[j].idx = 0;
    }
    if (resolve_refs(t, refs, n) != 0)
        return -1;
    if (n <= MEMO_REFS && conn->super.id != 0) {
        m->conn_id = conn->super.id;
        m->entries = t->entries;
        m->start = t->entry_start_index;
        m->num = t->num_entries;
        m->size = t->hpack_size;
        m->n = n;
        for (size_t i = 0; i != n; ++i) {
            m->slot[i] = t->entries + (t->entry_start_index + refs[i].idx - 62) % t->entry_capacity;
            m->idx[i] = refs[i].idx;
        }
    }
    return 0;
}

/* ---- adding to the table -------------------------------------------------- */

/* Entries are added here as h2o's encoder adds them (its header_table_add
 * and alloc_buf, lib/http2/hpack.c of 2.2.5), so that its encoder, ours and
 * the peer's decoder keep seeing one table: the oldest evicted while the
 * entry would pass the table's size or h2o's 32 entries; the ring doubled
 * (16 at least) when full; a name that is not a token, and every value,
 * a shared buffer ({iovec, bytes, NUL}) that eviction releases. */
#define ENTRY_OVERHEAD 32   /* RFC 7541 4.1 */
#define ENCODER_ENTRIES 32  /* h2o's encoder keeps no more */

static h2o_iovec_t *shared_copy(const char *s, size_t len)
{
    h2o_iovec_t *b = h2o_mem_alloc_shared(NULL, sizeof(*b) + len + 1, NULL);
    b->base = (char *)(b + 1);
    b->len = len;
    memcpy(b->base, s, len);
    b->base[len] = '\0';
    return b;
}

static void evict_oldest(h2o_hpack_header_table_t *t)
{
    h2o_hpack_header_table_entry_t *e = t->entries + (t->entry_start_index + --t->num_entries) % t->entry_capacity;
    t->hpack_size -= e->name->len + e->value->len + ENTRY_OVERHEAD;
    if (token_of(e->name) == NULL)
        h2o_mem_release_shared(e->name);
    h2o_mem_release_shared(e->value); /* an output entry's value is always a copy */
    memset(e, 0, sizeof(*e));
}

/* Whether the peer's table surely evicts as ours: it is at least as large
 * (h2o 2.2 keeps its own 4 KiB whatever the peer said). */
static int can_add(h2o_http2_conn_t *conn)
{
    const h2o_hpack_header_table_t *t = &conn->_output_header_table;
    return t->hpack_capacity >= TABLE_MIN && conn->peer_settings.header_table_size >= t->hpack_capacity;
}

void h2_reply_table_add(struct st_h2o_hpack_header_table_t *t, const h2o_iovec_t *name, const char *value,
                        size_t value_len)
{
    size_t size = name->len + value_len + ENTRY_OVERHEAD;
    while (t->num_entries != 0 && (t->hpack_size + size > t->hpack_capacity || t->num_entries >= ENCODER_ENTRIES))
        evict_oldest(t);
    if (size > t->hpack_capacity)
        return; /* RFC 7541 4.4: the table emptied, nothing added */
    if (t->num_entries == t->entry_capacity) {
        size_t cap = t->num_entries * 2 < 16 ? 16 : t->num_entries * 2;
        h2o_hpack_header_table_entry_t *grown = h2o_mem_alloc(cap * sizeof(*grown));
        for (size_t i = 0; i != t->num_entries; ++i)
            grown[i] = t->entries[(t->entry_start_index + i) % t->entry_capacity];
        memset(grown + t->num_entries, 0, (cap - t->num_entries) * sizeof(*grown));
        free(t->entries);
        t->entries = grown;
        t->entry_capacity = cap;
        t->entry_start_index = 0;
    }
    t->entry_start_index = (t->entry_start_index + t->entry_capacity - 1) % t->entry_capacity;
    ++t->num_entries;
    t->hpack_size += size;
    h2o_hpack_header_table_entry_t *e = t->entries + t->entry_start_index;
    e->name = token_of(name) != NULL ? (h2o_iovec_t *)name : shared_copy(name->base, name->len);
    e->value = shared_copy(value, value_len);
    e->err_desc = NULL;
}

static uint8_t *put_status(uint8_t *p, int status)
{
    switch (status) {
    case 200: *p++ = 0x80 | 8; break; /* indexed, static table */
    case 204: *p++ = 0x80 | 9; break;
    case 206: *p++ = 0x80 | 10; break;
    case 304: *p++ = 0x80 | 11; break;
    case 400: *p++ = 0x80 | 12; break;
    case 404: *p++ = 0x80 | 13; break;
    case 500: *p++ = 0x80 | 14; break;
    default: /* literal without indexing, name :status (8) */
        *p++ = 8;
        *p++ = 3;
        *p++ = (uint8_t)('0' + status / 100);
        *p++ = (uint8_t)('0' + status / 10 % 10);
        *p++ = (uint8_t)('0' + status % 10);
    }
    return p;
}

/* literal without indexing whose name is the table entry idx (62 on; a
 * 4-bit prefix, RFC 7541 6.2.2) */
static uint8_t *put_name_ref(uint8_t *p, uint8_t idx)
{
    *p++ = 0x0f;
    *p++ = (uint8_t)(idx - 15); /* idx < 126: one byte */
    return p;
}

#define LATE_MAX 4

/* Appends one HEADERS frame (END_HEADERS, and END_STREAM if asked) with the
 * response header block of req: the fields h2o_hpack_flatten_response sends,
 * in its order (:status, server, date, req->res.headers, content-length),
 * but those marked by h2_reply_add_unindexed last; no Huffman. A field that
 * repeats from reply to reply (server, content-type, the date of this
 * second...) is a one-byte reference to the entry h2o's encoder made for
 * it in the connection's HPACK table: a peer decodes a reference for
 * nothing, a literal costs it a copy and a check (~300 instructions each in
 * nghttp2, which the load generators of tools/bench are). content-length is
 * a literal without indexing. A marked field (a value used once:
 * x-request-id) is a literal without indexing that names the table entry
 * of its name; where there is none yet (the connection's first reply, or
 * it was evicted), the literal is indexed and h2_reply_table_add makes the
 * entry, so the next replies have one. Returns -1, with nothing written, when a
 * repeating field is not in the table (the first reply, the first of a
 * second: h2o's encoder adds it) or the block might not fit BLOCK_MAX or
 * the peer's frame size. A peer whose table is too small to hold them gets
 * literals only. On success `after` more bytes are free past the frame (the
 * DATA and trailing frames a whole reply appends: one reserve for all). */
static int put_response_headers(h2o_http2_conn_t *conn, uint32_t stream_id, const h2o_res_t *res,
                                size_t content_length, int end_stream, table_ref *extra, size_t after)
{
    const h2o_iovec_t *server = &conn->super.ctx->globalconf->server_name;
    size_t budget = conn->peer_settings.max_frame_size < BLOCK_MAX ? conn->peer_settings.max_frame_size : BLOCK_MAX;
    if (res->status < 100 || res->status > 999 || server->len + 5 + STATUS_DATE_MAX + CONTENT_LENGTH_MAX > budget)
        return -1;
    h2o_iovec_t dst = h2o_buffer_reserve(&conn->_write.buf, H2O_HTTP2_FRAME_HEADER_SIZE + budget + after);
    if (dst.base == NULL)
        h2o_fatal("no memory");
    uint8_t *frame = (uint8_t *)dst.base, *p = frame + H2O_HTTP2_FRAME_HEADER_SIZE;
    const uint8_t *end = p + budget - CONTENT_LENGTH_MAX; /* up to where res.headers and the marked may go */
    /* h2o 2.2 ignores the peer's SETTINGS_HEADER_TABLE_SIZE (its encoder
     * indexes into 4 KiB whatever the peer said); here a small one means
     * literals only, so the peer's table is never assumed. */
    int indexed = conn->_output_header_table.hpack_capacity >= TABLE_MIN &&
                  conn->peer_settings.header_table_size >= TABLE_MIN;
    table_ref refs[REFS_MAX];
    uint8_t *at[REFS_MAX];
    size_t nrefs = 0, nlate = 0;
    const h2o_header_t *late[LATE_MAX];
    table_ref *late_ref[LATE_MAX];

    p = put_status(p, res->status);
    if (server->len != 0) {
        if (indexed) {
            at[nrefs] = p++;
            refs[nrefs++] = (table_ref){.name = &H2O_TOKEN_SERVER->buf, .value = *server, .name_is_token = 1};
        } else {
            p = put_name_index(p, 0x00, 54); /* server */
            p = put_trusted(p, server);
        }
    }
    h2o_get_timestamp(conn->super.ctx, NULL, NULL); /* refreshes the cached date; no reference taken */
    h2o_iovec_t date = h2o_iovec_init(conn->super.ctx->_timestamp_cache.value->rfc1123, H2O_TIMESTR_RFC1123_LEN);
    if (indexed) {
        at[nrefs] = p++;
        refs[nrefs++] = (table_ref){.name = &H2O_TOKEN_DATE->buf, .value = date, .name_is_token = 1};
    } else {
        p = put_name_index(p, 0x00, 33); /* date */
        *p++ = H2O_TIMESTR_RFC1123_LEN;
        memcpy(p, date.base, H2O_TIMESTR_RFC1123_LEN);
        p += H2O_TIMESTR_RFC1123_LEN;
    }
    for (size_t i = 0; i != res->headers.size; ++i) {
        const h2o_header_t *h = res->headers.entries + i;
        /* 1 + 3 + name + 3 + value at most: lengths <= BLOCK_MAX take <= 3 bytes */
        if (h->name->len + h->value.len + 7 > (size_t)(end - p))
            return -1;
        const h2o_token_t *token = token_of(h->name);
        if (is_unindexed(h)) { /* sent last, room kept for it */
            if (nlate == LATE_MAX || nrefs >= REFS_MAX - 1)
                return -1;
            late[nlate] = h;
            late_ref[nlate++] = indexed ? refs + nrefs : NULL;
            end -= h->name->len + h->value.len + 7;
            if (indexed) {
                at[nrefs] = NULL;
                refs[nrefs++] = (table_ref){.name = h->name, .name_is_token = token != NULL, .name_only = 1};
            }
            continue;
        }
        /* what h2o's encoder leaves out of the table: "don't compress" (cookies) */
        int never = token != NULL && token->dont_compress && h->value.len < 20;
        if (indexed && !never) {
            if (nrefs >= REFS_MAX - 1)
                return -1;
            at[nrefs] = p++;
            refs[nrefs++] = (table_ref){.name = h->name, .value = h->value, .name_is_token = token != NULL};
            continue;
        }
        uint8_t first = never ? 0x10 : 0x00;
        if (token != NULL && token->http2_static_table_name_index != 0) {
            p = put_name_index(p, first, (unsigned)token->http2_static_table_name_index);
        } else {
            *p++ = first;
            p = put_trusted(p, h->name);
        }
        p = put_value(p, h->value.base, h->value.len);
    }
    if (content_length != SIZE_MAX) {
        static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                    "8081828384858687888990919293949596979899";
        char digits[40], *d = digits + 20; /* 20 readable bytes after any d */
        for (; content_length >= 100; content_length /= 100)
            memcpy(d -= 2, pairs + content_length % 100 * 2, 2);
        if (content_length >= 10)
            memcpy(d -= 2, pairs + content_length * 2, 2);
        else
            *--d = (char)('0' + content_length);
        p = put_name_index(p, 0x00, 28); /* content-length */
        *p++ = (uint8_t)(digits + 20 - d);
        memcpy(p, d, 20); /* a fixed size: no call; the bytes past the digits are left unused */
        p += digits + 20 - d;
    }
    if (extra != NULL && indexed) {
        at[nrefs] = NULL;
        refs[nrefs++] = *extra; /* REFS_MAX keeps room for it */
    }
    if (nrefs != 0 && resolve_refs_memo(conn, refs, nrefs) != 0) {
        for (size_t i = 0; i != nrefs; ++i)
            if (refs[i].idx == 0 && !refs[i].name_only && !refs[i].optional)
                return -1;
    }
    for (size_t i = 0; i != nrefs; ++i)
        if (at[i] != NULL)
            *at[i] = (uint8_t)(0x80 | refs[i].idx);
    /* the marked fields; an entry added for one moves the indices after it,
     * so the ones after an addition are plain literals */
    const h2o_iovec_t *add_name = NULL;
    uint8_t *add_value = NULL;
    size_t add_len = 0;
    for (size_t i = 0; i != nlate; ++i) {
        const h2o_header_t *h = late[i];
        uint8_t idx = late_ref[i] != NULL ? late_ref[i]->idx : 0;
        if (add_name == NULL && idx != 0) {
            p = put_name_ref(p, idx);
        } else if (add_name == NULL && indexed && can_add(conn)) {
            *p++ = 0x40; /* literal with incremental indexing, new name */
            p = put_trusted(p, h->name);
            add_name = h->name;
            add_len = h->value.len;
            add_value = p + (add_len < 127 ? 1 : add_len < 127 + 128 ? 2 : 3);
        } else {
            *p++ = 0x00;
            p = put_trusted(p, h->name);
        }
        p = put_value(p, h->value.base, h->value.len);
    }
    size_t len = (size_t)(p - frame) - H2O_HTTP2_FRAME_HEADER_SIZE;
    put_frame_header(frame, len, H2O_HTTP2_FRAME_TYPE_HEADERS,
                     H2O_HTTP2_FRAME_FLAG_END_HEADERS | (end_stream ? H2O_HTTP2_FRAME_FLAG_END_STREAM : 0), stream_id);
    conn->_write.buf->size += H2O_HTTP2_FRAME_HEADER_SIZE + len;
    if (add_name != NULL) /* the value as sent (NUL, CR, LF blanked) */
        h2_reply_table_add(&conn->_output_header_table, add_name, (const char *)add_value, add_len);
    if (extra != NULL) {
        extra->idx = indexed ? refs[nrefs - 1].idx : 0;
        if (add_name != NULL) { /* the addition moved it, or evicted it */
            extra->idx = 0;
            resolve_refs(&conn->_output_header_table, extra, 1);
        }
    }
    return 0;
}

#define UNINDEXED_MAX 4
#define HEADERS_MAX 32

/* v, or a copy with NUL, CR and LF as spaces, as put_value sends them:
 * h2o's encoder sends values as they are. */
static h2o_iovec_t sanitized(h2o_mem_pool_t *pool, h2o_iovec_t v)
{
    uint8_t *c = h2o_mem_alloc_pool(pool, v.len + 1);
    if (!copy_field(c, v.base, v.len))
        return v;
    blank_nul_cr_lf(c, v.len);
    return h2o_iovec_init(c, v.len);
}

/* h2o puts its chunked encoder on every path (h2o_config_init_pathconf);
 * it acts on HTTP/1.1 replies only. Its callback is found once, from a
 * filter h2o_chunked_register makes on a scratch path. */
static void (*chunked_setup)(h2o_filter_t *, h2o_req_t *, h2o_ostream_t **);

static void find_chunked_setup(void)
{
    static h2o_globalconf_t global;   /* h2o_create_filter counts its slots */
    h2o_pathconf_t scratch = {.global = &global};
    h2o_chunked_register(&scratch);
    if (scratch.filters.size == 1)
        chunked_setup = scratch.filters.entries[0]->on_setup_ostream;
    for (size_t i = 0; i != scratch.filters.size; ++i)
        free(scratch.filters.entries[i]);
    free(scratch.filters.entries);
}

/* Whether the path's filters would do nothing to an HTTP/2 reply: none,
 * or only h2o's chunked encoder (tokend registers none of its own). */
static int filters_idle(h2o_req_t *req)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const h2o_pathconf_t *pc = req->pathconf;
    if (req->prefilters != NULL)
        return 0;
    if (req->_next_filter_index >= pc->filters.size)
        return 1;
    pthread_once(&once, find_chunked_setup);
    return pc->filters.size == 1 && req->_next_filter_index == 0 && chunked_setup != NULL &&
           pc->filters.entries[0]->on_setup_ostream == chunked_setup;
}

/* h2o_start_response, which sets up the response filters, and first copies
 * the response into req->res.original for them and h2o's access log (the
 * only readers in 2.2.5, lib/core/logconf.c). When the filters would do
 * nothing, only the generator is left to set (a sixth of a small reply's
 * header work). */
static void start_response(h2o_req_t *req, h2o_generator_t *generator)
{
    if (!filters_idle(req)) {
        h2o_start_response(req, generator);
        return;
    }
    req->_generator = generator;
}

/* The response HEADERS of req: put_response_headers's when it can, else
 * h2o's encoder's, which adds the repeating fields to the table (and splits
 * a large block into CONTINUATION frames), with the fields marked by
 * h2_reply_add_unindexed left out of it and appended as literals when the
 * block surely fits one frame. Why: a value unique to every reply
 * (x-request-id) would fill h2o's table (32 entries at most) with entries
 * never used again, and every header of every reply would scan them and
 * each reply evict and free one: ~5k instructions a reply. Returns 1 when
 * `after` bytes are free past the frame (put_response_headers made it),
 * else 0. */
static int append_response_headers(h2o_http2_conn_t *conn, h2o_http2_stream_t *stream, h2o_req_t *req,
                                   size_t content_length, int end_stream, table_ref *extra, size_t after)
{
    if (put_response_headers(conn, stream->stream_id, &req->res, content_length, end_stream, extra, after) == 0)
        return 1;
    h2o_timestamp_t ts;
    h2o_get_timestamp(conn->super.ctx, &req->pool, &ts);
    h2o_res_t res = req->res;
    h2o_header_t repeating[HEADERS_MAX];
    const h2o_header_t *unique[UNINDEXED_MAX];
    size_t nu = 0, literal_bytes = 0;
    const h2o_iovec_t *server = &conn->super.ctx->globalconf->server_name;
    if (res.headers.size <= HEADERS_MAX) {
        size_t nr = 0, block = 64 + server->len; /* status, date, content-length, server's name */
        for (size_t i = 0; i != res.headers.size; ++i) {
            const h2o_header_t *h = res.headers.entries + i;
            block += h->name->len + h->value.len + 12;
            if (is_unindexed(h) && nu != UNINDEXED_MAX && h->name->len < 127 && h->value.len < 127) {
                unique[nu++] = h;
                literal_bytes += 3 + h->name->len + h->value.len;
            } else {
                repeating[nr] = *h;
                repeating[nr++].value = sanitized(&req->pool, h->value);
            }
        }
        if (block > conn->peer_settings.max_frame_size) { /* h2o's encoder takes them all */
            for (size_t i = 0; i != nu; ++i) {
                repeating[nr] = *unique[i];
                repeating[nr++].value = sanitized(&req->pool, unique[i]->value);
            }
            nu = 0;
        }
        res.headers.entries = repeating;
        res.headers.size = nr;
    }
    size_t at = conn->_write.buf->size;
    h2o_hpack_flatten_response(&conn->_write.buf, &conn->_output_header_table, stream->stream_id,
                               conn->peer_settings.max_frame_size, &res, &ts, server, content_length);
    uint8_t *frame = (uint8_t *)conn->_write.buf->bytes + at;
    if (conn->_write.buf->size < at + H2O_HTTP2_FRAME_HEADER_SIZE || frame[3] != H2O_HTTP2_FRAME_TYPE_HEADERS)
        h2o_fatal("h2_reply: unexpected output of h2o_hpack_flatten_response");
    if (nu != 0) {
        size_t len = conn->_write.buf->size - at - H2O_HTTP2_FRAME_HEADER_SIZE;
        if (!(frame[4] & H2O_HTTP2_FRAME_FLAG_END_HEADERS) || len + literal_bytes > conn->peer_settings.max_frame_size)
            h2o_fatal("h2_reply: the header block outgrew its estimate");
        uint8_t *p = (uint8_t *)h2o_buffer_reserve(&conn->_write.buf, literal_bytes).base;
        if (p == NULL)
            h2o_fatal("no memory");
        frame = (uint8_t *)conn->_write.buf->bytes + at; /* the reserve may have moved the buffer */
        for (size_t i = 0; i != nu; ++i) {
            *p++ = 0x00;
            p = put_trusted(p, unique[i]->name);
            p = put_value(p, unique[i]->value.base, unique[i]->value.len);
        }
        conn->_write.buf->size += literal_bytes;
        len += literal_bytes;
        frame[0] = (uint8_t)(len >> 16);
        frame[1] = (uint8_t)(len >> 8);
        frame[2] = (uint8_t)len;
    }
    if (end_stream)
        frame[4] |= H2O_HTTP2_FRAME_FLAG_END_STREAM;
    if (extra != NULL) { /* h2o's encoder changed the table: a scan, once a second or so */
        extra->idx = 0;
        resolve_refs(&conn->_output_header_table, extra, 1);
    }
    return 0;
}

/* grpc-status: 0, the trailer of nearly every gRPC reply, goes out as a
 * reference to the connection's table (one byte), or as the literal that
 * makes the entry when there is none (the connection's first reply, or it
 * was evicted). It is looked for with the response headers' references
 * (put_response_headers), and added when its frame is written: the
 * table's next change. A peer whose table is small gets the literal
 * without indexing (grpc_ok_block). */
static const char grpc_ok_indexing[] = "\x40\x0b" "grpc-status" "\x01" "0";

/* A small body goes out with its headers (and trailers) in one write:
 * HEADERS, DATA, [HEADERS+END_STREAM], the windows consumed as h2o's DATA
 * path would. "Small": at most WHOLE_MAX, and no more than h2o itself would
 * send as one DATA frame of the next write (its calc_max_payload_size: the
 * peer's max frame size, the stream window, and the connection's buffer
 * window - room left in the write buffer, trimmed to the TCP congestion
 * window when latency optimisation is on, and the connection window). So the
 * write is never larger than one h2o makes, and frames of other streams,
 * PING and SETTINGS ACKs wait behind at most 16 KiB of it. trailers ==
 * NULL: none, END_STREAM goes on the DATA frame. The stream is finished
 * here, so `gen` is never called (a static one does). */
static int respond_whole(h2o_http2_conn_t *conn, h2o_http2_stream_t *stream, h2o_req_t *req,
                         const h2o_iovec_t *trailers, h2o_iovec_t body, h2o_generator_t *gen)
{
    if (body.len > WHOLE_MAX || body.len > conn->peer_settings.max_frame_size || conn->sock == NULL ||
        h2o_http2_window_get_window(&stream->output_window) < (ssize_t)body.len ||
        h2o_http2_conn_get_buffer_window(conn) < (ssize_t)body.len)
        return -1;
    start_response(req, gen); /* lets header filters run */
    table_ref ok = {.name = &grpc_ok_name_iov, .value = {(char *)"0", 1}, .optional = 1};
    int ok_indexed = trailers != NULL && trailers->base == grpc_ok_block && can_add(conn);
    /* room for the DATA frame and a trailing frame (grpc-status: 0 takes at
     * most its indexing literal), reserved with the headers' */
    size_t most = H2O_HTTP2_FRAME_HEADER_SIZE + body.len;
    if (trailers && trailers->len <= conn->peer_settings.max_frame_size)
        most += H2O_HTTP2_FRAME_HEADER_SIZE +
                (trailers->len > sizeof grpc_ok_indexing - 1 ? trailers->len : sizeof grpc_ok_indexing - 1);
    int reserved = append_response_headers(conn, stream, req, trailers ? SIZE_MAX : body.len, 0,
                                           ok_indexed ? &ok : NULL, most);
    uint8_t ok_ref = (uint8_t)(0x80 | ok.idx);
    h2o_iovec_t ok_block = h2o_iovec_init(&ok_ref, 1);
    if (ok_indexed && ok.idx == 0) {
        h2_reply_table_add(&conn->_output_header_table, &grpc_ok_name_iov, "0", 1);
        ok_block = h2o_iovec_init(grpc_ok_indexing, sizeof grpc_ok_indexing - 1);
    }
    if (ok_indexed)
        trailers = &ok_block;
    /* trailers that fit one frame (all of gRPC's) go with the DATA frame */
    int one_frame = trailers && trailers->len <= conn->peer_settings.max_frame_size;
    size_t tail = one_frame ? H2O_HTTP2_FRAME_HEADER_SIZE + trailers->len : 0;
    uint8_t *dst;
    if (reserved)
        dst = (uint8_t *)conn->_write.buf->bytes + conn->_write.buf->size;
    else if ((dst = (uint8_t *)h2o_buffer_reserve(&conn->_write.buf, H2O_HTTP2_FRAME_HEADER_SIZE + body.len + tail).base) ==
             NULL)
        h2o_fatal("no memory");
    uint8_t *p = put_frame_header(dst, body.len, H2O_HTTP2_FRAME_TYPE_DATA,
                                  trailers ? 0 : H2O_HTTP2_FRAME_FLAG_END_STREAM, stream->stream_id);
    memcpy(p, body.base, body.len);
    if (one_frame)
        put_trailer_frame(p + body.len, stream->stream_id, *trailers);
    conn->_write.buf->size += H2O_HTTP2_FRAME_HEADER_SIZE + body.len + tail;
    h2o_http2_window_consume_window(&stream->output_window, body.len);
    h2o_http2_window_consume_window(&conn->_write.window, body.len);
    stream->req.bytes_sent += body.len;
    if (trailers && !one_frame)
        append_trailer_frames(conn, stream->stream_id, *trailers);
    h2o_http2_stream_set_state(conn, stream, H2O_HTTP2_STREAM_STATE_SEND_BODY);
    finish_stream(conn, stream);
    return 0;
}

/* One HEADERS frame with END_STREAM: gRPC's Trailers-Only (the trailers
 * appended to the response headers), or a reply without a body. */
static void respond_headers_only(h2o_http2_conn_t *conn, h2o_http2_stream_t *stream, h2o_req_t *req,
                                 h2o_generator_t *gen, const h2o_header_t *trailers, size_t num_trailers,
                                 size_t content_length)
{
    for (size_t i = 0; i != num_trailers; ++i) {
        h2o_iovec_t name = h2o_strdup(&req->pool, trailers[i].name->base, trailers[i].name->len);
        h2o_strtolower(name.base, name.len);
        h2o_iovec_t value = h2o_strdup(&req->pool, trailers[i].value.base, trailers[i].value.len);
        h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 1, NULL, value.base, value.len);
    }
    start_response(req, gen); /* lets header filters run */
    append_response_headers(conn, stream, req, content_length, 1, NULL, 0);

    /* SEND_HEADERS -> SEND_BODY -> END_STREAM, as h2o's own send path does */
    h2o_http2_stream_set_state(conn, stream, H2O_HTTP2_STREAM_STATE_SEND_BODY);
    finish_stream(conn, stream);
}

static void on_plain_stop(h2o_generator_t *self, h2o_req_t *req)
{
}

int h2_reply_send(h2o_req_t *req, h2o_iovec_t body, const h2o_header_t *trailers, size_t num_trailers)
{
    static h2o_generator_t plain = {NULL, on_plain_stop};
    h2o_http2_stream_t *stream = stream_of(req);
    if (stream == NULL)
        return -1;
    h2o_http2_conn_t *conn = (h2o_http2_conn_t *)req->conn;
    if (conn->state == H2O_HTTP2_CONN_STATE_IS_CLOSING || stream->state != H2O_HTTP2_STREAM_STATE_SEND_HEADERS ||
        req->_generator != NULL || h2o_linklist_is_linked(&stream->_refs.link))
        return -1;
    wrap_reader(conn, stream);
    /* The one-write replies end their stream as soon as its frames are
     * queued, which takes it out of h2o's count of open streams: against a
     * peer that does not read, nothing would bound the streams kept (each
     * with its request's memory) until their bytes go out, nor the streams
     * one read of many requests opens before anything is written. While a
     * backlog waits to be written, replies take h2o's own way, which counts
     * a stream until its last frame is sent (and refuses streams past the
     * limit). */
    size_t unsent = conn->_write.buf->size + (conn->_write.buf_in_flight ? conn->_write.buf_in_flight->size : 0);
    int backlog = unsent >= H2O_HTTP2_DEFAULT_OUTBUF_SIZE;

    if (trailers == NULL) {
        if (backlog)
            return -1;   /* the caller's h2o_send_inline */
        req->res.content_length = body.len;
        /* A reply to HEAD says its length and carries no content (RFC 9113
         * 8.1.1: a client resets a stream that does). */
        if (body.len == 0 || h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
            respond_headers_only(conn, stream, req, &plain, NULL, 0, body.len);
            return 0;
        }
        return respond_whole(conn, stream, req, NULL, body, &plain);
    }

    h2o_iovec_t block = h2_reply_trailer_block(&req->pool, trailers, num_trailers);
    if (block.base == NULL)
        return -1;

    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = SIZE_MAX;

    /* Both finish the stream before they return: no generator of ours is
     * ever called, and `plain` serves. */
    if (body.len == 0 && !backlog) {
        respond_headers_only(conn, stream, req, &plain, trailers, num_trailers, SIZE_MAX);
        return 0;
    }
    if (!backlog && respond_whole(conn, stream, req, &block, body, &plain) == 0)
        return 0;

    /* The body goes out as h2o's DATA frames, the trailers after it (on_proceed). */
    struct trailers_generator *gen = h2o_mem_alloc_pool(&req->pool, sizeof(*gen));
    gen->super.proceed = on_proceed;
    gen->super.stop = on_stop;
    gen->block = block;
    h2o_iovec_t buf = h2o_strdup(&req->pool, body.base, body.len);
    h2o_start_response(req, &gen->super);
    /* Straight to the stream's final ostream (what h2o_send does when no
     * filter is installed): a filter that transforms or holds back the body
     * (compress...) must not sit between a gRPC body and its trailers. Filter
     * ostreams, if any, stay in the chain and are closed by h2o as usual. */
    stream->_ostr_final.do_send(&stream->_ostr_final, req, &buf, buf.len ? 1 : 0, H2O_SEND_STATE_IN_PROGRESS);
    return 0;
}
