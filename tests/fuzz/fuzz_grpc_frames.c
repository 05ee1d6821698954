/* fuzz_grpc_frames.c - libFuzzer target of the wire helpers http.c uses
 * (src/grpc_frame.c): every input goes through each of them.
 *
 *   frames      grpc_frame_next over the input as a request body, up to
 *               http.c's 100 messages: each message lies inside the body,
 *               the offset only grows, and grpc_frame_header rebuilds the
 *               5 bytes read; grpc_frame_unary agrees with one step of it.
 *   inflate     grpc_frame_inflate over the input as a compressed message
 *               (gzip and deflate, limits from 0 bytes up): measuring and
 *               inflating agree, nothing passes the limit, a refusal has
 *               a status; and the input compressed by zlib comes back as
 *               it was.
 *   proxies     proxies_parse of the input as a --trusted-proxies list (a
 *               refusal says why, an accepted one holds at most PROXIES_MAX
 *               networks); proxies_client of the input as X-Forwarded-For
 *               and as Forwarded values (split at newlines) from a trusted and an untrusted
 *               peer: the client is "" or an address printed canonically,
 *               and an untrusted peer's header is never read; and
 *               proxies_header of the input as a balancer's first bytes:
 *               a header taken lies within the input and its bounds, names
 *               an IPv4 or IPv6 client or none, and each shorter prefix of
 *               it asks for more bytes.
 *   web-text    grpc_web_text_decode (into exactly len + 1 bytes, as
 *               http.c allocates) against a plain reference (groups of 4,
 *               padded chunks one after the other), then the frames of what
 *               it decoded.
 *   timeout     grpc_parse_timeout / grpc_parse_u64 against a plain
 *               reference implementation.
 *   percent     grpc_percent_encode into buffers from 1 byte to the size
 *               http.c uses: output printable ASCII, NUL-terminated, within
 *               the buffer, and it decodes back to a prefix of the input.
 *   url/query   url_decode against a reference; query_foreach hands out
 *               pieces inside the buffer with non-empty names. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <zlib.h>
#include "grpc_frame.h"
#include "proxies.h"
#include "rpc.h"

#include "fuzz_check.h"

static void frames(const char *body, size_t len)
{
    size_t off = 0, count = 0;
    const char *msg = NULL, *why = NULL;
    size_t msg_len = 0;
    status_code st;
    while (off < len && count++ < 100) {
        size_t before = off;
        int compressed = -1;
        why = grpc_frame_next(body, len, &off, &msg, &msg_len, &compressed, &st);
        if (why) {
            CHECK(off == before);
            CHECK(st == ST_INVALID_ARGUMENT);
            CHECK(why[0]);
            break;
        }
        CHECK(off == before + 5 + msg_len && off <= len);
        CHECK(msg == body + before + 5);
        CHECK(compressed == 0 || compressed == 1);
        uint8_t hdr[GRPC_FRAME_HEADER];
        grpc_frame_header(hdr, (uint8_t)compressed, msg_len);
        CHECK(memcmp(hdr, body + before, GRPC_FRAME_HEADER) == 0);
        /* touch every byte the parser says is the message */
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < msg_len; i++)
            sum += (uint8_t)msg[i];
        (void)sum;
    }
    off = 0;
    const char *m1, *m2;
    size_t l1, l2;
    status_code s1, s2;
    int c1 = -1, c2 = -2;
    const char *w1 = grpc_frame_unary(body, len, &m1, &l1, &c1, &s1);
    const char *w2 = grpc_frame_next(body, len, &off, &m2, &l2, &c2, &s2);
    if (!w2 && off == len)
        CHECK(!w1 && m1 == m2 && l1 == l2 && c1 == c2);
    else
        CHECK(w1 && w1[0] && s1 == s2);
}

static void inflate_one(grpc_encoding enc, const char *in, size_t len, size_t cap)
{
    size_t n = 12345, m = 54321;
    status_code st = ST_OK;   /* left as it is unless it fails */
    const char *why = grpc_frame_inflate(enc, in, len, NULL, cap, &n, &st);
    if (why) {
        CHECK(why[0] && (st == ST_INTERNAL || st == ST_RESOURCE_EXHAUSTED));
        CHECK(st != ST_RESOURCE_EXHAUSTED || n > cap);
        return;
    }
    CHECK(n <= cap && st == ST_OK);
    uint8_t *out = malloc(n + 1);
    if (!out)
        return;
    CHECK(grpc_frame_inflate(enc, in, len, out, n + 1, &m, &st) == NULL && m == n && st == ST_OK);
    free(out);
}

/* The input compressed as a client would (gzip: windowBits 31). */
static void round_trip(grpc_encoding enc, const char *in, size_t len)
{
    z_stream z = {0};
    uLong cap = compressBound(len) + 32;
    uint8_t *packed = malloc(cap), *out = malloc(len + 1);
    size_t n = 0;
    status_code st;
    if (packed && out && deflateInit2(&z, 6, Z_DEFLATED, enc == GRPC_ENCODING_GZIP ? 31 : 15, 8,
                                      Z_DEFAULT_STRATEGY) == Z_OK) {
        z.next_in = (Bytef *)(uintptr_t)in, z.avail_in = (uInt)len;
        z.next_out = packed, z.avail_out = (uInt)cap;
        CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
        CHECK(grpc_frame_inflate(enc, (const char *)packed, z.total_out, NULL, len, &n, &st) == NULL && n == len);
        CHECK(grpc_frame_inflate(enc, (const char *)packed, z.total_out, out, len + 1, &n, &st) == NULL);
        CHECK(n == len && memcmp(out, in, len) == 0);
        if (len)   /* one byte short of its size: refused */
            CHECK(grpc_frame_inflate(enc, (const char *)packed, z.total_out, NULL, len - 1, &n, &st) &&
                  st == ST_RESOURCE_EXHAUSTED);
        deflateEnd(&z);
    }
    free(packed);
    free(out);
}

static void inflating(const char *in, size_t len)
{
    static const size_t caps[] = {0, 1, 100, 4096, 65536, 1 << 20};
    /* gzip's magic first byte picks gzip, anything else deflate (zlib's 0x78) */
    grpc_encoding enc = len && (uint8_t)in[0] == 0x1f ? GRPC_ENCODING_GZIP : GRPC_ENCODING_DEFLATE;
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
        inflate_one(enc, in, len, caps[i]);
    round_trip(enc, in, len);
}

static void forwarding(const char *in, size_t len)
{
    static proxies trusted;
    static int ready;
    char why[160], text[PROXIES_TEXT_MAX + 1], out[PROXIES_TEXT_MAX];
    if (!ready)
        ready = proxies_parse(&trusted, "10.0.0.0/8,fd00::/8,192.0.2.1", why, sizeof why) == 0;
    CHECK(ready);
    char *list = malloc(len + 1);
    if (!list)
        return;
    memcpy(list, in, len);
    list[len] = '\0';
    proxies parsed;
    why[0] = '\0';
    if (proxies_parse(&parsed, list, why, sizeof why) == 0)
        CHECK(parsed.n >= 1 && parsed.n <= PROXIES_MAX);
    else
        CHECK(why[0]);
    free(list);

    const char *values[8];
    size_t lens[8], n = 0, start = 0;
    for (size_t i = 0; i <= len && n < 8; i++)
        if (i == len || in[i] == '\n')
            values[n] = in + start, lens[n++] = i - start, start = i + 1;
    for (int form = 0; form < 2; form++) {    /* X-Forwarded-For, then Forwarded */
        trusted.rfc7239 = form;
        struct sockaddr_in from = {.sin_family = AF_INET};
        from.sin_addr.s_addr = htonl(0x0a000001);   /* 10.0.0.1: trusted */
        size_t got = proxies_client(&trusted, (struct sockaddr *)&from, values, lens, n, out);
        CHECK(got == strlen(out) && got < PROXIES_TEXT_MAX);
        if (got) {
            uint8_t a[16];
            int family = inet_pton(AF_INET, out, a) == 1 ? AF_INET : AF_INET6;
            CHECK(family == AF_INET || inet_pton(AF_INET6, out, a) == 1);
            CHECK(inet_ntop(family, a, text, sizeof text) && strcmp(text, out) == 0);
        }
        from.sin_addr.s_addr = htonl(0xc6336401);   /* 198.51.100.1: not trusted */
        CHECK(proxies_client(&trusted, (struct sockaddr *)&from, values, lens, n, out) == 0 && !out[0]);
    }
}

static void proxy_header(const char *in, size_t len)
{
    struct sockaddr_storage peer;
    socklen_t peerlen = 1;
    int n = proxies_header((const uint8_t *)in, len, &peer, &peerlen);
    CHECK(n >= -1 && n <= (int)len);
    CHECK(n > 0 || peerlen == 0);
    if (n <= 0)
        return;
    CHECK(n <= (in[0] == 'P' ? PROXIES_V1_MAX : PROXIES_V2_MAX));
    CHECK(peerlen == 0 || (peer.ss_family == AF_INET && peerlen == sizeof(struct sockaddr_in)) ||
          (peer.ss_family == AF_INET6 && peerlen == sizeof(struct sockaddr_in6)));
    for (int cut = 0; cut < n; cut++)
        CHECK(proxies_header((const uint8_t *)in, (size_t)cut, &peer, &peerlen) == 0);
}

static int b64_value(char c)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(a, c) : NULL;
    return p ? (int)(p - a) : -1;
}

/* grpc-web-text as PROTOCOL-WEB has it, plainly: CR/LF dropped, then groups
 * of 4, where "xx==" or "xxx=" (a padded chunk's end) may come anywhere if
 * the bits it drops are zero. The decoded length, or -1. */
static long ref_web_text(const char *in, size_t len, uint8_t *out)
{
    char g[4];
    size_t k = 0, o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\r' || in[i] == '\n')
            continue;
        g[k++] = in[i];
        if (k < 4)
            continue;
        k = 0;
        int v[4] = {0}, pad = g[3] != '=' ? 0 : g[2] == '=' ? 2 : 1;
        for (int j = 0; j < 4 - pad; j++)
            if ((v[j] = b64_value(g[j])) < 0)
                return -1;
        uint32_t bits = (uint32_t)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
        if (bits & (pad == 2 ? 0xffff : pad == 1 ? 0xff : 0))
            return -1;
        out[o++] = (uint8_t)(bits >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(bits >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)bits;
    }
    return k ? -1 : (long)o;
}

static void web_text(const char *in, size_t len)
{
    uint8_t *out = malloc(len + 1), *ref = malloc(len + 1);
    size_t n = 12345;
    if (!out || !ref)
        goto out;
    long rn = ref_web_text(in, len, ref);
    const char *why = grpc_web_text_decode(in, len, out, &n);
    CHECK(!why == (rn >= 0));
    if (!why) {
        CHECK(n <= len && (size_t)rn == n && memcmp(out, ref, n) == 0);
        frames((const char *)out, n);
    }
out:
    free(out);
    free(ref);
}

static int ref_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 19)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (!memchr("0123456789", s[i], 10) || s[i] == '\0')
            return -1;
        n = n * 10 + (uint64_t)(s[i] - '0');
    }
    *out = n;
    return 0;
}

static void timeout(const char *s, size_t len)
{
    uint64_t a = 7, b = 7;
    int ra = grpc_parse_u64(s, len, &a), rb = ref_u64(s, len, &b);
    CHECK(ra == rb && a == b);
    int64_t ms = -1;
    int rt = grpc_parse_timeout(s, len, &ms);
    if (len < 2 || len > 9 || ref_u64(s, len - 1, &b) != 0 || !memchr("HMSmun", s[len - 1], 6) ||
        s[len - 1] == '\0') {
        CHECK(rt == -1);
        return;
    }
    CHECK(rt == 0 && ms >= 0);
    /* at most 8 digits: 99999999 H is 3.6e14 ms, far from overflow */
    CHECK(ms <= (int64_t)99999999 * 3600000);
}

static int hexv(char c)
{
    const char *h = "0123456789ABCDEF", *p = c ? strchr(h, c) : NULL;
    return p ? (int)(p - h) : -1;
}

static void percent(const char *in, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        return;
    memcpy(s, in, len);
    s[len] = '\0';
    size_t inlen = strlen(s);
    static const size_t sizes[] = {1, 2, 4, 5, 6, 9, 64, RPC_MESSAGE_MAX * 3 + 1};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t cap = sizes[k];
        char *out = malloc(cap);
        if (!out)
            break;
        size_t n = grpc_percent_encode(out, s, cap);
        CHECK(n < cap && out[n] == '\0' && strlen(out) == n);
        size_t o = 0;  /* decode back: a prefix of the input */
        for (size_t i = 0; i < n; i++, o++) {
            unsigned char c = (unsigned char)out[i];
            CHECK(c >= 0x20 && c <= 0x7E);
            if (c == '%') {
                CHECK(i + 2 < n + 1 && hexv(out[i + 1]) >= 0 && hexv(out[i + 2]) >= 0);
                c = (unsigned char)(hexv(out[i + 1]) << 4 | hexv(out[i + 2]));
                i += 2;
            }
            CHECK(o < inlen && (unsigned char)s[o] == c);
        }
        /* it stops only for want of room */
        CHECK(o == inlen || n + 5 > cap);
        free(out);
    }
    free(s);
}

static int hexany(char c)
{
    c = (char)(c | 0x20);
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

typedef struct {
    const char *base;
    size_t len;
    size_t pairs;
} qstate;

static int on_pair(void *arg, const char *name, size_t nlen, const char *value, size_t vlen)
{
    qstate *q = arg;
    CHECK(nlen > 0);
    CHECK(name >= q->base && name + nlen <= q->base + q->len);
    if (vlen)
        CHECK(value > name && value + vlen <= q->base + q->len);
    q->pairs++;
    return q->pairs >= 1000;  /* a non-zero result stops the walk */
}

static void url(const char *in, size_t len)
{
    char *a = malloc(len + 1), *b = malloc(len + 1);
    if (!a || !b)
        goto out;
    memcpy(a, in, len);
    size_t n = url_decode(a, len), o = 0;
    for (size_t i = 0; i < len; i++) {  /* reference */
        if (in[i] == '%' && i + 2 < len && hexany(in[i + 1]) >= 0 && in[i + 1] != '\0' &&
            hexany(in[i + 2]) >= 0 && in[i + 2] != '\0' &&
            strchr("0123456789abcdefABCDEF", in[i + 1]) && strchr("0123456789abcdefABCDEF", in[i + 2])) {
            b[o++] = (char)(hexany(in[i + 1]) << 4 | hexany(in[i + 2]));
            i += 2;
        } else {
            b[o++] = in[i] == '+' ? ' ' : in[i];
        }
    }
    CHECK(n == o && memcmp(a, b, n) == 0);
    memcpy(a, in, len);
    qstate q = {a, len, 0};
    int rc = query_foreach(a, len, on_pair, &q);
    CHECK(rc == 0 || rc == 1);
out:
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    frames(s, size);
    inflating(s, size);
    forwarding(s, size);
    proxy_header(s, size);
    web_text(s, size);
    timeout(s, size);
    percent(s, size);
    url(s, size);
    return 0;
}
