/* h2_path.c - a request's :path in plain form before h2o decodes it.
 *
 * Why: HTTP/2 clients built on nghttp2 (h2load, curl, Envoy) never put
 * :path in the connection's HPACK table, so every request carries it as a
 * literal, Huffman-coded. libh2o 2.2 decodes Huffman four bits at a time,
 * ~45 instructions a byte: 1.1k for "/tokend.v1.Tokend/Verify", a twelfth
 * of a whole gRPC Verify. The paths tokend serves are few and known at
 * start-up, so their Huffman forms are computed once, with h2o's own
 * encoder (the code is canonical and its padding fixed, so every encoder
 * makes the same bytes), and a HEADERS frame whose :path is one of them is
 * given to h2o with that literal's value rewritten in plain (h2_reply.c
 * wraps the connection's frame reader). It is the same field: the literal
 * keeps its kind, so the HPACK table changes as it would have (an entry's
 * size counts the decoded string), and h2o decodes everything else itself.
 * A frame this does not fully understand, a padded one, one split across
 * CONTINUATION frames or a path it does not know is left as it came.
 */
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>

#include "h2_path.h"

#define FRAME_HEADER 9
#define TYPE_HEADERS 0x1
#define FLAG_END_HEADERS 0x4
#define FLAG_PADDED 0x8
#define FLAG_PRIORITY 0x20
#define STATIC_PATH 4           /* ":path" "/" in HPACK's static table; 5 is ":path" "/index.html" */

typedef struct {
    uint8_t huff_len, plain_len;
    uint8_t huff[H2_PATH_LEN_MAX];
    uint8_t plain[H2_PATH_LEN_MAX + 2]; /* whole 16-byte blocks of it are copied */
} known_path;

/* Found by a hash of their Huffman bytes: one comparison a request (the
 * gRPC paths share their first 13 bytes, so comparing candidates of one
 * length cost more than h2o's decoding saved). */
struct h2_paths {
    size_t n, mask;
    known_path *paths;
    uint16_t *slots;                    /* 1 + index into paths, 0 empty; open addressing */
};

static size_t hash_of(const uint8_t *huff, size_t len, size_t mask)
{
    uint64_t head = 0, tail = 0;
    if (len >= 8) {
        memcpy(&head, huff, 8);
        memcpy(&tail, huff + len - 8, 8);
    } else {
        for (size_t i = 0; i != len; i++)
            head = head << 8 | huff[i];
    }
    uint64_t h = (head ^ (tail * 0x9e3779b97f4a7c15ull) ^ len) * 0xff51afd7ed558ccdull;
    return (size_t)(h >> 32) & mask;
}

h2_paths *h2_paths_create(const char *const *paths, size_t n)
{
    h2_paths *ps = calloc(1, sizeof *ps);
    if (ps == NULL)
        return NULL;
    n = n < UINT16_MAX / 4 ? n : UINT16_MAX / 4;
    for (ps->mask = 15; ps->mask + 1 < 4 * n; ps->mask = 2 * ps->mask + 1)
        ;
    if ((ps->paths = calloc(n ? n : 1, sizeof *ps->paths)) == NULL ||
        (ps->slots = calloc(ps->mask + 1, sizeof *ps->slots)) == NULL) {
        h2_paths_free(ps);
        return NULL;
    }
    for (size_t i = 0; i != n; i++) {
        size_t len = strlen(paths[i]);
        uint8_t code[1 + H2_PATH_LEN_MAX + 8];
        if (len == 0 || len > H2_PATH_LEN_MAX || strchr(paths[i], '{') != NULL)
            continue;
        code[0] = 0;
        size_t code_len = h2o_hpack_encode_string(code, paths[i], len);
        if (!(code[0] & 0x80) || code_len != 1u + (code[0] & 0x7f))
            continue;   /* Huffman would not shorten it: a client sends it plain */
        known_path *k = &ps->paths[ps->n];
        int dup = 0;
        for (size_t j = 0; j != ps->n && !dup; j++)
            dup = ps->paths[j].plain_len == len && memcmp(ps->paths[j].plain, paths[i], len) == 0;
        if (dup)
            continue;
        k->huff_len = (uint8_t)(code_len - 1);
        memcpy(k->huff, code + 1, code_len - 1);
        k->plain_len = (uint8_t)len;
        memcpy(k->plain, paths[i], len);
        size_t at = hash_of(k->huff, k->huff_len, ps->mask);
        while (ps->slots[at] != 0)
            at = (at + 1) & ps->mask;
        ps->slots[at] = (uint16_t)(++ps->n);
    }
    return ps;
}

void h2_paths_free(h2_paths *ps)
{
    if (ps != NULL) {
        free(ps->paths);
        free(ps->slots);
    }
    free(ps);
}

size_t h2_paths_count(const h2_paths *ps)
{
    return ps != NULL ? ps->n : 0;
}

/* An HPACK integer with a `prefix`-bit prefix (RFC 7541 5.1), at most 2^21:
 * the position after it, or NULL. */
static const uint8_t *get_int(const uint8_t *p, const uint8_t *end, unsigned prefix, uint32_t *v)
{
    uint32_t max = (1u << prefix) - 1;
    if (p == end)
        return NULL;
    if ((*v = *p++ & max) < max)
        return p;
    for (unsigned shift = 0; shift <= 14; shift += 7) {
        if (p == end)
            return NULL;
        uint8_t b = *p++;
        *v += (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return p;
    }
    return NULL;
}

static const known_path *find(const h2_paths *ps, const uint8_t *huff, size_t len)
{
    if (len == 0 || len > H2_PATH_LEN_MAX)
        return NULL;
    for (size_t at = hash_of(huff, len, ps->mask); ps->slots[at] != 0; at = (at + 1) & ps->mask) {
        const known_path *k = &ps->paths[ps->slots[at] - 1];
        if (k->huff_len == len && memcmp(k->huff, huff, len) == 0)
            return k;
    }
    return NULL;
}

size_t h2_path_plain(const h2_paths *ps, const uint8_t *frame, size_t len, uint8_t *out, size_t cap)
{
    if (ps == NULL || ps->n == 0 || len < FRAME_HEADER || cap < H2_PATH_OUT_BYTES)
        return 0;
    size_t payload = (size_t)frame[0] << 16 | (size_t)frame[1] << 8 | frame[2];
    uint8_t flags = frame[4];
    if (frame[3] != TYPE_HEADERS || (flags & (FLAG_END_HEADERS | FLAG_PADDED)) != FLAG_END_HEADERS ||
        payload > H2_PATH_FRAME_MAX || len - FRAME_HEADER < payload)
        return 0;
    const uint8_t *p = frame + FRAME_HEADER, *end = p + payload;
    if ((flags & FLAG_PRIORITY) && (p += 5) > end)
        return 0;
    while (p < end) {
        uint8_t first = *p;
        uint32_t name, n;
        if (first & 0x80) {                 /* indexed field */
            if (!(p = get_int(p, end, 7, &n)))
                return 0;
            continue;
        }
        if ((first & 0xe0) == 0x20) {       /* table size update */
            if (!(p = get_int(p, end, 5, &n)))
                return 0;
            continue;
        }
        /* a literal: with indexing (6-bit name index), without or never (4) */
        if (!(p = get_int(p, end, (first & 0x40) ? 6 : 4, &name)))
            return 0;
        if (name == 0) {                    /* a new name */
            if (!(p = get_int(p, end, 7, &n)) || n > (size_t)(end - p))
                return 0;
            p += n;
        }
        const uint8_t *value = p;
        if (!(p = get_int(p, end, 7, &n)) || n > (size_t)(end - p))
            return 0;
        if (name != STATIC_PATH && name != STATIC_PATH + 1) {
            p += n;
            continue;
        }
        /* the request's :path: swapped if it is a known one, else left */
        const known_path *k = (*value & 0x80) ? find(ps, p, n) : NULL;
        if (k == NULL)
            return 0;
        const uint8_t *rest = p + n;
        size_t head = (size_t)(value - frame), tail = (size_t)(end - rest);
        size_t out_payload = head - FRAME_HEADER + 1 + k->plain_len + tail;
        memcpy(out, frame, head);
        out[head] = k->plain_len;           /* H bit clear: plain */
        for (size_t i = 0; i < k->plain_len; i += 16) /* no call, no rep movsb; the tail goes over the rest */
            memcpy(out + head + 1 + i, k->plain + i, 16);
        memcpy(out + head + 1 + k->plain_len, rest, tail);
        out[0] = (uint8_t)(out_payload >> 16);
        out[1] = (uint8_t)(out_payload >> 8);
        out[2] = (uint8_t)out_payload;
        return FRAME_HEADER + out_payload;
    }
    return 0;
}
