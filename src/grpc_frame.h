/* grpc_frame.h - the pure parts of the wire: gRPC length-prefixed framing,
 * compressed messages (grpc-encoding gzip and deflate), grpc-web-text base64, grpc-timeout and decimal header values, the
 * percent-encoding of grpc-message, and query strings. Plain pointers and
 * lengths, no h2o, so http.c and the fuzzers (tests/fuzz) share them; the
 * only file that knows the frame's layout.
 *
 * The functions that can fail return NULL on success, else a sentence for
 * the client (and set *st to the status to answer with). */
#ifndef TOKEND_GRPC_FRAME_H
#define TOKEND_GRPC_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include "status.h"

#define GRPC_FRAME_HEADER 5
#define GRPC_FRAME_TRAILERS 0x80   /* gRPC-Web: the frame holds the trailers */
/* Bytes one frame of a len-byte message takes. */
#define GRPC_FRAME_SIZE(len) ((size_t)(len) + GRPC_FRAME_HEADER)

/* Writes the 5-byte frame header: flag byte, 32-bit big-endian length.
 * Inline: every gRPC reply writes one. */
static inline void grpc_frame_header(uint8_t out[GRPC_FRAME_HEADER], uint8_t flag, size_t len)
{
    out[0] = flag;
    out[1] = (uint8_t)(len >> 24), out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8), out[4] = (uint8_t)len;
}
/* Writes one whole frame into out (GRPC_FRAME_SIZE(len) bytes): the header,
 * then msg packed (len is then its packed size) or, when msg is NULL, the
 * len bytes at raw. Returns the frame's length. */
size_t grpc_frame_write(uint8_t *out, uint8_t flag, const ProtobufCMessage *msg, const void *raw,
                        size_t len);

/* Takes the next length-prefixed message of body (len bytes) at *off:
 * *msg points into body, *off moves past it; *compressed is its flag (then
 * grpc_frame_inflate gives the message itself). */
const char *grpc_frame_next(const char *body, size_t len, size_t *off, const char **msg,
                            size_t *msg_len, int *compressed, status_code *st);

/* The one message of a unary call's body (exactly one frame, nothing after). */
const char *grpc_frame_unary(const char *body, size_t len, const char **msg, size_t *msg_len,
                             int *compressed, status_code *st);

/* A request's grpc-encoding. gzip and deflate are read; replies go out
 * uncompressed, which every client takes (the encodings a reply may use are
 * the client's grpc-accept-encoding, and identity is always among them). */
typedef enum {
    GRPC_ENCODING_IDENTITY,   /* also: no grpc-encoding header */
    GRPC_ENCODING_GZIP,
    GRPC_ENCODING_DEFLATE,
    GRPC_ENCODING_OTHER       /* snappy, br, zstd...: UNIMPLEMENTED if used */
} grpc_encoding;
/* grpc-accept-encoding of a reply that refuses an encoding. */
#define GRPC_ACCEPT_ENCODING "identity,deflate,gzip"

/* grpc-encoding's value (len 0: the header is absent). */
grpc_encoding grpc_encoding_of(const char *s, size_t len);

/* Inflates a compressed message (in, len bytes) sent with encoding enc into
 * out, which holds cap bytes; with out NULL it only measures, refusing a
 * message over cap bytes (RESOURCE_EXHAUSTED): a small body cannot become a
 * large allocation. *out_len: the inflated size. A message that is not
 * exactly one whole gzip member (or zlib stream) is INTERNAL, as gRPC has
 * it for a message that does not decompress; an encoding tokend does not
 * read is UNIMPLEMENTED, and a compressed message without one INTERNAL.
 * *st is set only when it fails. */
const char *grpc_frame_inflate(grpc_encoding enc, const char *in, size_t len, uint8_t *out,
                               size_t cap, size_t *out_len, status_code *st);

/* Decodes a grpc-web-text body (standard base64, CR/LF ignored, padded
 * chunks one after the other) into out, which holds at least len + 1
 * bytes. */
const char *grpc_web_text_decode(const char *in, size_t len, uint8_t *out, size_t *out_len);

/* grpc-message: copies `in` (NUL-terminated) into out (outlen bytes, at
 * least 1) with bytes outside printable ASCII and '%' as %XX, stopping once
 * fewer than 5 bytes are left; out is NUL-terminated. Returns its length. */
size_t grpc_percent_encode(char *out, const char *in, size_t outlen);

/* A decimal header value: 1 to 19 digits, nothing else. 0 or -1. */
int grpc_parse_u64(const char *s, size_t len, uint64_t *out);

/* grpc-timeout: up to 8 digits and a unit (H M S m u n), in ms. 0 or -1. */
int grpc_parse_timeout(const char *s, size_t len, int64_t *ms);

/* Decodes %XX and '+' in place; returns the new length. */
size_t url_decode(char *s, size_t len);

/* Splits a query string (q, len bytes, modified in place: the names and
 * values are url-decoded) at '&' and '=' and calls fn for each pair with a
 * non-empty name; a pair without '=' has an empty value. Stops at the first
 * non-zero fn result and returns it; 0 when all were taken. */
typedef int (*query_fn)(void *arg, const char *name, size_t name_len, const char *value,
                        size_t value_len);
int query_foreach(char *q, size_t len, query_fn fn, void *arg);

#endif
