/* h2_reply.h - HTTP/2 replies written by tokend on libh2o 2.2.5: gRPC
 * trailers, small replies in one socket write, response headers as
 * references to the connection's HPACK table.
 *
 * libh2o 2.2.5 (the version Debian 12 ships) has no public API for sending
 * trailers, yet a gRPC response must end with grpc-status / grpc-message in a
 * trailing HEADERS frame. h2_reply.c adds exactly that, using the library's
 * own HTTP/2 stream machinery for the response headers and body; see there
 * for the internals it relies on.
 */
#ifndef TOKEND_H2_REPLY_H
#define TOKEND_H2_REPLY_H

#include <h2o.h>

#include "h2_path.h"

/* With trailers (gRPC): responds to an HTTP/2 request with status 200, the
 * headers already in req->res.headers (the caller adds content-type:
 * application/grpc etc.; req->res.status and content_length are
 * overwritten), then `body`, then a trailing HEADERS frame carrying
 * `trailers` and END_STREAM. body.len == 0 sends a gRPC "Trailers-Only"
 * response instead: one HEADERS frame with END_STREAM holding the response
 * headers followed by `trailers`.
 *
 * Without (trailers == NULL): a plain reply, req->res.status and the headers
 * in req->res.headers, content-length body.len, body, END_STREAM; sent in one
 * write when small, else -1 (the caller uses h2o_send).
 *
 * Trailer names are tokend's own, lower case, and sent as given; a value's
 * NUL, CR and LF are sent as spaces (grpc-message must already be
 * percent-encoded). `body` and `trailers` are
 * copied, so they may live on the caller's stack. The response headers of a
 * reply sent in one write or as Trailers-Only repeat from reply to reply as
 * references to the connection's HPACK table (h2_reply.c says how), a
 * value's NUL, CR and LF sent as spaces.
 *
 * Call it on the loop thread, once, before any other response was started:
 * from the handler or later (e.g. when a worker's result comes back), as long
 * as req is still alive - a peer reset disposes of a not-yet-answered req, so
 * deferred callers must watch req->pool (h2o_mem_alloc_shared + dispose).
 * Returns 0 when the response has been handed to h2o (from then on the
 * request is h2o's, as with h2o_send), or -1 with nothing sent when it is not
 * possible: not HTTP/2, response already started, connection closing, or
 * a trailer with an empty name or over 64 KiB. The caller then falls back (e.g. h2o_send_error_*). */
int h2_reply_send(h2o_req_t *req, h2o_iovec_t body, const h2o_header_t *trailers, size_t num_trailers);

/* The HPACK block h2_reply_send sends as the trailing HEADERS of
 * `trailers` (n of them), in pool: {NULL, 0} when it refuses them (an empty
 * name, a field over 64 KiB). grpc-status: 0 alone is a static block
 * (read only), everything else h2_reply_encode_trailers's. */
h2o_iovec_t h2_reply_trailer_block(h2o_mem_pool_t *pool, const h2o_header_t *trailers, size_t n);

/* grpc-status: 0, the one trailer of nearly every gRPC reply: given to
 * h2_reply_send as its trailers (n = 1), its block is found without
 * comparing them. */
extern const h2o_header_t h2_reply_grpc_ok[1];
/* The block field by field, whatever the trailers: literals without
 * indexing, new names as given, no Huffman, values' NUL, CR, LF as spaces. */
h2o_iovec_t h2_reply_encode_trailers(h2o_mem_pool_t *pool, const h2o_header_t *trailers, size_t n);

/* Adds a response header whose value is unique to this reply (a request id),
 * i.e. one whose values must not fill the connection's HPACK table.
 * h2_reply_send sends it last, as a literal without indexing that names the
 * one table entry of its name (made once per connection); h2o's own paths
 * (HTTP/1.1, a large body or header block) send it like any other header. `name` must be lower-case and outlive the request (a
 * static): it is not copied. */
void h2_reply_add_unindexed(h2o_req_t *req, const h2o_iovec_t *name, h2o_iovec_t value);

/* The room a reply's response headers take (x-request-id, content-type,
 * and the HTTP API's two more), allocated with `extra` bytes for the caller
 * (returned, 16-aligned: a made request id) in one allocation of req's
 * pool, where the two would be two. Call it before any response header is
 * added; when one has been, only the extra bytes are allocated. */
#define H2_REPLY_HEADERS_ROOM 4
void *h2_reply_headers_room(h2o_req_t *req, size_t extra);

/* h2o_add_header for a name that is one of h2o's tokens, the value not
 * copied (it must outlive the request, as with h2o_add_header): written
 * here when there is room (h2_reply_headers_room), which saves the call,
 * else h2o_add_header's. */
static inline void h2_reply_add_token(h2o_req_t *req, const h2o_token_t *token, const char *value, size_t len)
{
    h2o_headers_t *headers = &req->res.headers;
    if (headers->size == headers->capacity) {
        h2o_add_header(&req->pool, headers, token, NULL, value, len);
        return;
    }
    h2o_header_t *slot = headers->entries + headers->size++;
    slot->name = (h2o_iovec_t *)&token->buf;
    slot->orig_name = NULL;   /* as h2o_add_header leaves it for a token */
    slot->value = h2o_iovec_init(value, len);
}

/* Adds name: value to an HTTP/2 connection's HPACK output table as h2o
 * 2.2's encoder adds a field it sends with incremental indexing (the oldest
 * evicted to make room, at most 32 entries, none when the field alone is
 * larger than the table), so that the fields h2_reply_send indexes and
 * those h2o's encoder does keep one table, the peer's. value is copied;
 * name too unless it is one of h2o's tokens. */
struct st_h2o_hpack_header_table_t;
void h2_reply_table_add(struct st_h2o_hpack_header_table_t *t, const h2o_iovec_t *name, const char *value,
                        size_t value_len);

/* Serves ctx's HTTP/2 connections the paths a request may name (h2_path.h;
 * NULL: none): a HEADERS frame naming one Huffman-coded reaches h2o with it
 * plain. paths must outlive ctx. Call it on ctx's thread, before its loop
 * runs. */
void h2_reply_serve(h2o_context_t *ctx, const h2_paths *paths);

#endif
