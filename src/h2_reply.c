/* h2_reply.c - the HTTP/2 replies tokend writes itself on libh2o 2.2.5:
 * gRPC's trailers, small replies in one socket write, and headers unique to
 * one reply kept out of the HPACK table.
 *
 * Why this exists: libh2o 2.2.5 (Debian 12) can only end an HTTP/2 response
 * with a DATA frame; it has no public API for trailers. Native gRPC needs
 * grpc-status / grpc-message in a trailing HEADERS frame with END_STREAM.
 * And h2o indexes every response header it encodes, which makes a unique
 * x-request-id cost more than a Verify (see append_response_headers).
 * tokend uses the distribution's library, so this file adds the minimum on
 * top of it instead of replacing h2o.
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
 * tokend sends, gRPC or not): HEADERS (h2o's encoder), DATA and, for gRPC,
 * the trailing HEADERS are appended to the write buffer together and the
 * windows consumed as h2o's DATA path would, so the reply is one socket
 * write. A larger gRPC body takes the path above (a larger plain one is left
 * to h2o_send): written whole, a 3 MB body (gRPC core allows 4 MiB frames
 * and grows its windows) was one 3 MB write that held every other frame of
 * the connection behind it, and gRPC core, stalled reading it, reset calls
 * whose HEADERS it had not sent yet - an RST_STREAM on an idle stream, which
 * h2o answers with GOAWAY(PROTOCOL_ERROR): the channel broke.
 * Trailers-Only (body.len == 0): the trailers are appended to the response
 * headers, the HEADERS frame is encoded with h2o's own HPACK encoder into the
 * write buffer, its END_STREAM flag is set, and the stream is finished as
 * above. (h2o's own empty final send would add an empty DATA frame with
 * END_STREAM instead, which is not the gRPC Trailers-Only form.)
 *
 * Trailers, and the headers added with h2_reply_add_unindexed, are encoded
 * as HPACK "literal header field without indexing - new name", so the
 * connection's HPACK dynamic table is neither used nor changed by them.
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
 *     streams, see tolerate_idle_rst());
 *   - h2o_http2_stream_set_state() (inline), h2o_http2_conn_get_stream()
 *     (inline, through the khash stand-in), h2o_http2_conn_request_write(),
 *     h2o_hpack_flatten_response(), and the scheduler ref's `_self_is_active`;
 *   - the library calling generator->proceed() only from its write-complete
 *     handler, after unlinking the stream, and never for a stream that was
 *     reset (a reset or a closing connection closes the stream instead; the
 *     generator's stop() is then called and nothing more is sent).
 * Each call checks the req really is a live HTTP/2 stream of its connection
 * (a hash lookup through the stand-in) and returns -1 otherwise.
 */
#include <stdint.h>
#include <string.h>

#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>

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

/* Literal header fields without indexing, new name (RFC 7541 6.2.2), no
 * Huffman coding: names lower-cased, each byte checked as it is copied.
 * Returns {NULL, 0} if a field is invalid (an empty or pseudo-header name,
 * a byte outside a token in a name, NUL, CR or LF in a value). */
static h2o_iovec_t encode_trailers(h2o_mem_pool_t *pool, const h2o_header_t *trailers, size_t n)
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
        const h2o_header_t *h = trailers + i;
        *p++ = 0x00;
        p = hpack_put_len7(p, h->name->len);
        for (size_t j = 0; j != h->name->len; ++j) {
            unsigned char c = (unsigned char)h->name->base[j];
            if (c <= 0x20 || c >= 0x7f || c == ':')
                return h2o_iovec_init(NULL, 0);
            *p++ = (uint8_t)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        }
        p = hpack_put_len7(p, h->value.len);
        for (size_t j = 0; j != h->value.len; ++j) {
            char c = h->value.base[j];
            if (c == '\0' || c == '\r' || c == '\n')
                return h2o_iovec_init(NULL, 0);
            *p++ = (uint8_t)c;
        }
    }
    return h2o_iovec_init(buf, (size_t)(p - buf));
}

static uint8_t *put_frame_header(uint8_t *p, size_t len, uint8_t type, uint8_t flags, uint32_t stream_id)
{
    *p++ = (uint8_t)(len >> 16);
    *p++ = (uint8_t)(len >> 8);
    *p++ = (uint8_t)len;
    *p++ = type;
    *p++ = flags;
    *p++ = (uint8_t)((stream_id >> 24) & 0x7f);
    *p++ = (uint8_t)(stream_id >> 16);
    *p++ = (uint8_t)(stream_id >> 8);
    *p++ = (uint8_t)stream_id;
    return p;
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

/* ---- gRPC core's RST_STREAM on idle streams -------------------------------- */

/* gRPC core (seen with grpcio 1.51 / core 29, Debian 12; grpc/grpc#19655,
 * #38758) gives a call its stream id before writing its HEADERS; when the call
 * is cancelled (deadline) before that write happened - the client was busy
 * reading a large reply - it still sends RST_STREAM for the id: a reset of an
 * idle stream. h2o 2.2 answers that with GOAWAY(PROTOCOL_ERROR) as RFC 7540
 * 6.4 says, which fails every call on the channel. We drop such a frame
 * instead (the stream never existed for us, so there is nothing to reset):
 * the connection's frame reader is wrapped, and the wrapper passes every
 * other frame to h2o's. h2o's reader is learnt from a connection known to be
 * past its preface (a reply on stream 3 or later) and not inside a header
 * block (no HEADERS/CONTINUATION pending, i.e. `_headers_unparsed` NULL: h2o
 * sets its CONTINUATION reader only together with that buffer). h2o puts its
 * own reader back directly after a CONTINUATION sequence; the next reply on
 * that connection wraps it again. */
typedef ssize_t (*read_expect_cb)(h2o_http2_conn_t *conn, const uint8_t *src, size_t len, const char **err_desc);
static read_expect_cb h2o_expect_default; /* learnt once, the same in every thread (atomic access) */

static ssize_t expect_default_tolerating_idle_rst(h2o_http2_conn_t *conn, const uint8_t *src, size_t len,
                                                  const char **err_desc)
{
    if (len >= H2O_HTTP2_FRAME_HEADER_SIZE + 4 && src[3] == H2O_HTTP2_FRAME_TYPE_RST_STREAM && src[0] == 0 && src[1] == 0 &&
        src[2] == 4) {
        uint32_t id = ((uint32_t)(src[5] & 0x7f) << 24) | (uint32_t)src[6] << 16 | (uint32_t)src[7] << 8 | src[8];
        if (id % 2 == 1 && id > conn->pull_stream_ids.max_open)
            return H2O_HTTP2_FRAME_HEADER_SIZE + 4; /* consumed, ignored */
    }
    return __atomic_load_n(&h2o_expect_default, __ATOMIC_RELAXED)(conn, src, len, err_desc);
}

static void tolerate_idle_rst(h2o_http2_conn_t *conn, h2o_http2_stream_t *stream)
{
    read_expect_cb cur = conn->_read_expect, def = __atomic_load_n(&h2o_expect_default, __ATOMIC_RELAXED);
    if (cur == expect_default_tolerating_idle_rst || conn->_headers_unparsed != NULL)
        return;
    if (def == NULL) {
        if (stream->stream_id < 3)
            return; /* stream 1 may be an HTTP/1.1 upgrade answered before the preface was read */
        __atomic_store_n(&h2o_expect_default, cur, __ATOMIC_RELAXED);
        def = cur;
    }
    if (cur == def)
        conn->_read_expect = expect_default_tolerating_idle_rst;
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

/* ---- headers encoded without indexing -------------------------------------- */

void h2_reply_add_unindexed(h2o_req_t *req, const h2o_iovec_t *name, h2o_iovec_t value)
{
    h2o_vector_reserve(&req->pool, &req->res.headers, req->res.headers.size + 1);
    h2o_header_t *slot = req->res.headers.entries + req->res.headers.size++;
    slot->name = (h2o_iovec_t *)name;
    slot->value = value;
    /* The mark: h2o's own headers never have orig_name == name->base (it
     * copies orig_name), and HTTP/1 writes orig_name, i.e. the same bytes. */
    slot->orig_name = name->base;
}

static int is_unindexed(const h2o_header_t *h)
{
    return h->orig_name != NULL && h->orig_name == h->name->base;
}

#define UNINDEXED_MAX 4
#define HEADERS_MAX 32

/* Appends the response HEADERS frame(s) of req with h2o's own encoder, and
 * the headers marked by h2_reply_add_unindexed as literals without indexing
 * (RFC 7541 6.2.2) at the end of the block. Why: h2o 2.2 adds every header
 * it encodes to the connection's HPACK table (at most 32 entries), and looks
 * each header up in that table by a linear scan. A value unique to every
 * reply (x-request-id) filled the table with entries never used again, so
 * every header of every reply scanned 32 of them and each reply evicted and
 * freed one: ~5k instructions a reply, more than Verify's own work. The
 * literals leave the table to the headers that repeat. They are added only
 * when the block surely fits one frame; otherwise h2o encodes them too. */
static void append_response_headers(h2o_http2_conn_t *conn, h2o_http2_stream_t *stream, h2o_req_t *req,
                                    size_t content_length, int end_stream)
{
    h2o_timestamp_t ts;
    h2o_get_timestamp(conn->super.ctx, &req->pool, &ts);
    h2o_res_t res = req->res;
    h2o_header_t indexed[HEADERS_MAX];
    const h2o_header_t *unindexed[UNINDEXED_MAX];
    size_t nu = 0, literal_bytes = 0;
    const h2o_iovec_t *server = &conn->super.ctx->globalconf->server_name;
    if (res.headers.size <= HEADERS_MAX) {
        size_t ni = 0, block = 64 + server->len; /* status, date, content-length, server's name */
        for (size_t i = 0; i != res.headers.size; ++i) {
            const h2o_header_t *h = res.headers.entries + i;
            block += h->name->len + h->value.len + 12;
            if (is_unindexed(h) && nu != UNINDEXED_MAX && h->name->len < 127 && h->value.len < 127) {
                unindexed[nu++] = h;
                literal_bytes += 3 + h->name->len + h->value.len;
            } else {
                indexed[ni++] = *h;
            }
        }
        if (nu != 0 && block <= conn->peer_settings.max_frame_size) {
            res.headers.entries = indexed;
            res.headers.size = ni;
        } else {
            nu = 0;
        }
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
            const h2o_header_t *h = unindexed[i];
            *p++ = 0x00;
            *p++ = (uint8_t)h->name->len;
            memcpy(p, h->name->base, h->name->len);
            p += h->name->len;
            *p++ = (uint8_t)h->value.len;
            memcpy(p, h->value.base, h->value.len);
            p += h->value.len;
        }
        conn->_write.buf->size += literal_bytes;
        len += literal_bytes;
        frame[0] = (uint8_t)(len >> 16);
        frame[1] = (uint8_t)(len >> 8);
        frame[2] = (uint8_t)len;
    }
    if (end_stream)
        frame[4] |= H2O_HTTP2_FRAME_FLAG_END_STREAM;
}

/* A small body goes out with its headers (and trailers) in one write:
 * HEADERS, DATA, [HEADERS+END_STREAM], the windows consumed as h2o's DATA
 * path would. "Small": at most WHOLE_MAX, and no more than h2o itself would
 * send as one DATA frame of the next write (its calc_max_payload_size: the
 * peer's max frame size, the stream window, and the connection's buffer
 * window - room left in the write buffer, trimmed to the TCP congestion
 * window when latency optimisation is on, and the connection window). So the
 * write is never larger than one h2o makes, and frames of other streams,
 * PING and SETTINGS ACKs wait behind at most 16 KiB of it. gen == NULL: no
 * trailers, END_STREAM goes on the DATA frame. */
static int respond_whole(h2o_http2_conn_t *conn, h2o_http2_stream_t *stream, h2o_req_t *req,
                         struct trailers_generator *gen, h2o_iovec_t body, h2o_generator_t *plain)
{
    if (body.len > WHOLE_MAX || body.len > conn->peer_settings.max_frame_size || conn->sock == NULL ||
        h2o_http2_window_get_window(&stream->output_window) < (ssize_t)body.len ||
        h2o_http2_conn_get_buffer_window(conn) < (ssize_t)body.len)
        return -1;
    h2o_start_response(req, gen ? &gen->super : plain); /* lets header filters run */
    append_response_headers(conn, stream, req, gen ? SIZE_MAX : body.len, 0);
    h2o_iovec_t dst = h2o_buffer_reserve(&conn->_write.buf, H2O_HTTP2_FRAME_HEADER_SIZE + body.len);
    if (dst.base == NULL)
        h2o_fatal("no memory");
    uint8_t *p = put_frame_header((uint8_t *)dst.base, body.len, H2O_HTTP2_FRAME_TYPE_DATA,
                                  gen ? 0 : H2O_HTTP2_FRAME_FLAG_END_STREAM, stream->stream_id);
    memcpy(p, body.base, body.len);
    conn->_write.buf->size += H2O_HTTP2_FRAME_HEADER_SIZE + body.len;
    h2o_http2_window_consume_window(&stream->output_window, body.len);
    h2o_http2_window_consume_window(&conn->_write.window, body.len);
    stream->req.bytes_sent += body.len;
    if (gen)
        append_trailer_frames(conn, stream->stream_id, gen->block);
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
    h2o_start_response(req, gen); /* lets header filters run */
    append_response_headers(conn, stream, req, content_length, 1);

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

    if (trailers == NULL) {
        req->res.content_length = body.len;
        if (body.len == 0) {
            respond_headers_only(conn, stream, req, &plain, NULL, 0, 0);
            return 0;
        }
        return respond_whole(conn, stream, req, NULL, body, &plain);
    }

    tolerate_idle_rst(conn, stream);
    struct trailers_generator *gen = h2o_mem_alloc_pool(&req->pool, sizeof(*gen));
    gen->super.proceed = on_proceed;
    gen->super.stop = on_stop;
    gen->block = encode_trailers(&req->pool, trailers, num_trailers);
    if (gen->block.base == NULL)
        return -1;

    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = SIZE_MAX;

    if (body.len == 0) {
        respond_headers_only(conn, stream, req, &gen->super, trailers, num_trailers, SIZE_MAX);
        return 0;
    }

    if (respond_whole(conn, stream, req, gen, body, NULL) == 0)
        return 0;
    h2o_iovec_t buf = h2o_strdup(&req->pool, body.base, body.len);
    h2o_start_response(req, &gen->super);
    /* Straight to the stream's final ostream (what h2o_send does when no
     * filter is installed): a filter that transforms or holds back the body
     * (compress...) must not sit between a gRPC body and its trailers. Filter
     * ostreams, if any, stay in the chain and are closed by h2o as usual. */
    stream->_ostr_final.do_send(&stream->_ostr_final, req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
    return 0;
}
