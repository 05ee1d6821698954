/* grpc_frame.c - the pure parts of the wire (see grpc_frame.h). Moved out
 * of http.c unchanged in behaviour so tests/fuzz can reach them. */
#include <limits.h>
#include <strings.h>
#include <string.h>
#include <zlib.h>
#include "crypto.h"
#include "grpc_frame.h"
#include "pb.h"

size_t grpc_frame_write(uint8_t *out, uint8_t flag, const ProtobufCMessage *msg, const void *raw,
                        size_t len)
{
    grpc_frame_header(out, flag, len);
    if (msg)
        pb_pack(msg, out + GRPC_FRAME_HEADER);
    else if (raw && len)
        memcpy(out + GRPC_FRAME_HEADER, raw, len);
    return GRPC_FRAME_SIZE(len);
}

const char *grpc_frame_next(const char *body, size_t len, size_t *off, const char **msg,
                            size_t *msg_len, int *compressed, status_code *st)
{
    const uint8_t *p = (const uint8_t *)body + *off;
    size_t left = len - *off;
    *st = ST_INVALID_ARGUMENT;
    if (left < GRPC_FRAME_HEADER)
        return "gRPC message frame is missing or truncated";
    size_t n = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    if (p[0] > 1 || n > left - GRPC_FRAME_HEADER)
        return "gRPC message frame is malformed or truncated";
    *msg = (const char *)p + GRPC_FRAME_HEADER;
    *msg_len = n;
    *compressed = p[0];
    *off += GRPC_FRAME_SIZE(n);
    return NULL;
}

const char *grpc_frame_unary(const char *body, size_t len, const char **msg, size_t *msg_len,
                             int *compressed, status_code *st)
{
    size_t off = 0;
    const char *why = grpc_frame_next(body, len, &off, msg, msg_len, compressed, st);
    if (!why && off != len)
        why = "a unary gRPC call carries exactly one message";
    return why;
}

grpc_encoding grpc_encoding_of(const char *s, size_t len)
{
    if (len == 0 || (len == 8 && strncasecmp(s, "identity", 8) == 0))
        return GRPC_ENCODING_IDENTITY;
    if (len == 4 && strncasecmp(s, "gzip", 4) == 0)
        return GRPC_ENCODING_GZIP;
    if (len == 7 && strncasecmp(s, "deflate", 7) == 0)
        return GRPC_ENCODING_DEFLATE;
    return GRPC_ENCODING_OTHER;
}

const char *grpc_frame_inflate(grpc_encoding enc, const char *in, size_t len, uint8_t *out,
                               size_t cap, size_t *out_len, status_code *st)
{
    static const char bad[] = "compressed gRPC message does not decompress (grpc-encoding gzip "
                              "wants one gzip member, deflate one zlib stream)";
    uint8_t scratch[4096];
    z_stream z = {0};
    const char *why = NULL;
    *out_len = 0;
    if (enc == GRPC_ENCODING_IDENTITY) {
        *st = ST_INTERNAL;
        return "compressed gRPC message without a grpc-encoding header: name gzip or deflate";
    }
    if (enc != GRPC_ENCODING_GZIP && enc != GRPC_ENCODING_DEFLATE) {
        *st = ST_UNIMPLEMENTED;
        return "this grpc-encoding is not supported: compress with gzip or deflate, or not at all";
    }
    if (len > UINT_MAX) {
        *st = ST_INTERNAL;
        return bad;
    }
    /* windowBits: 15, the largest window, with 16 added for a gzip header */
    if (inflateInit2(&z, enc == GRPC_ENCODING_GZIP ? 16 + MAX_WBITS : MAX_WBITS) != Z_OK) {
        *st = ST_RESOURCE_EXHAUSTED;
        return "out of memory";
    }
    status_code code = ST_INTERNAL;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    for (;;) {
        size_t done = z.total_out, room = out ? cap - done : sizeof scratch;
        z.next_out = out ? out + done : scratch;
        z.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
        int rc = inflate(&z, Z_NO_FLUSH);
        if (z.total_out > cap || (rc == Z_BUF_ERROR && out && done == cap && z.avail_in)) {
            code = ST_RESOURCE_EXHAUSTED;
            why = "gRPC messages are larger than --max-body once decompressed";
            break;
        }
        if (rc == Z_STREAM_END) {
            why = z.avail_in ? bad : NULL;   /* a second member, or bytes after the end */
            break;
        }
        if (rc != Z_OK) {   /* Z_BUF_ERROR: truncated; Z_DATA_ERROR, Z_NEED_DICT */
            if (rc == Z_MEM_ERROR)
                code = ST_RESOURCE_EXHAUSTED;
            why = rc == Z_MEM_ERROR ? "out of memory" : bad;
            break;
        }
    }
    *out_len = z.total_out;
    inflateEnd(&z);
    if (why)
        *st = code;
    return why;
}

/* A sender may flush a grpc-web-text body at any message, each flush
 * padded base64 of its own, so the body is padded chunks one after the
 * other. A chunk ends with the 4-character group that ends in '='; libsodium
 * decodes each (still refusing a '=' elsewhere, or a group cut short), as
 * it decodes passwords and tokens without a table look-up by their bytes. */
const char *grpc_web_text_decode(const char *in, size_t len, uint8_t *out, size_t *out_len)
{
    size_t start = 0, chars = 0, n;
    *out_len = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && (in[i] == '\r' || in[i] == '\n' || ++chars % 4 || in[i] != '='))
            continue;
        size_t stop = i < len ? i + 1 : len;
        if (crypto_base64_decode(out + *out_len, len + 1 - *out_len, in + start, stop - start,
                                 "\r\n", &n, CRYPTO_BASE64) != 0)
            return "grpc-web-text body is not valid base64";
        *out_len += n;
        start = stop;
    }
    return NULL;
}

size_t grpc_percent_encode(char *out, const char *in, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < outlen; p++) {
        if (*p < 0x20 || *p > 0x7E || *p == '%') {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
    return o;
}

int grpc_parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t n = 0;
    if (len == 0 || len > 19)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        n = n * 10 + (uint64_t)(s[i] - '0');
    }
    *out = n;
    return 0;
}

int grpc_parse_timeout(const char *s, size_t len, int64_t *ms)
{
    uint64_t n;
    if (len < 2 || len > 9 || grpc_parse_u64(s, len - 1, &n) != 0)
        return -1;
    switch (s[len - 1]) {
    case 'H': *ms = (int64_t)n * 3600000; return 0;
    case 'M': *ms = (int64_t)n * 60000; return 0;
    case 'S': *ms = (int64_t)n * 1000; return 0;
    case 'm': *ms = (int64_t)n; return 0;
    case 'u': *ms = (int64_t)(n / 1000); return 0;
    case 'n': *ms = (int64_t)(n / 1000000); return 0;
    default: return -1;
    }
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
}

size_t url_decode(char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            s[o++] = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        } else {
            s[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    return o;
}

int query_foreach(char *q, size_t len, query_fn fn, void *arg)
{
    for (size_t i = 0; i < len;) {
        size_t end = i, eq;
        while (end < len && q[end] != '&')
            end++;
        for (eq = i; eq < end && q[eq] != '='; eq++)
            ;
        size_t nlen = url_decode(q + i, eq - i);
        size_t vlen = eq < end ? url_decode(q + eq + 1, end - eq - 1) : 0;
        int rc;
        if (nlen && (rc = fn(arg, q + i, nlen, q + eq + 1, vlen)) != 0)
            return rc;
        i = end + 1;
    }
    return 0;
}
