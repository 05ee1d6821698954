/* wset.c - the write set's encoding (see wset.h). */
#include <stdlib.h>
#include <string.h>
#include "wset.h"

void wset_reset(wset *w)
{
    w->len = 0;
    w->n = 0;
}

void wset_free(wset *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

static int reserve(wset *w, size_t more)
{
    if (w->cap - w->len >= more)
        return 0;
    size_t cap = w->cap ? w->cap : 256;
    while (cap - w->len < more)
        cap *= 2;
    uint8_t *b = realloc(w->buf, cap);
    if (!b)
        return -1;
    w->buf = b;
    w->cap = cap;
    return 0;
}

int wset_add(wset *w, int op, int db, const void *key, size_t klen, const void *val, size_t vlen)
{
    int put = op != WSET_DEL;
    if (klen > WSET_KEY_MAX || db < 0 || db > 255 || (put && vlen > UINT32_MAX) ||
        reserve(w, 4 + klen + (put ? 4 + vlen : 0)) != 0)
        return -1;
    uint8_t *p = w->buf + w->len;
    *p++ = (uint8_t)op;
    *p++ = (uint8_t)db;
    *p++ = (uint8_t)(klen >> 8);
    *p++ = (uint8_t)klen;
    memcpy(p, key, klen);
    p += klen;
    if (put) {
        for (int i = 3; i >= 0; i--)
            *p++ = (uint8_t)(vlen >> (8 * i));
        if (vlen)
            memcpy(p, val, vlen);
        p += vlen;
    }
    w->len = (size_t)(p - w->buf);
    w->n++;
    return 0;
}

/* Walks the set; with fn NULL only checks it. */
static int walk(const uint8_t *buf, size_t len, int ndb, wset_fn fn, void *arg)
{
    size_t at = 0;
    while (at < len) {
        if (len - at < 4)
            return -1;
        int op = buf[at], db = buf[at + 1];
        size_t klen = (size_t)buf[at + 2] << 8 | buf[at + 3], vlen = 0;
        const uint8_t *key = buf + at + 4, *val = NULL;
        if (op > WSET_INSERT || db >= ndb || len - at - 4 < klen)
            return -1;
        at += 4 + klen;
        if (op != WSET_DEL) {
            if (len - at < 4)
                return -1;
            vlen = (size_t)buf[at] << 24 | (size_t)buf[at + 1] << 16 | (size_t)buf[at + 2] << 8 |
                   buf[at + 3];
            at += 4;
            if (len - at < vlen)
                return -1;
            val = buf + at;
            at += vlen;
        }
        if (fn) {
            int rc = fn(arg, op, db, key, klen, val, vlen);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int wset_check(const uint8_t *buf, size_t len, int ndb)
{
    return walk(buf, len, ndb, NULL, NULL);
}

int wset_each(const uint8_t *buf, size_t len, wset_fn fn, void *arg)
{
    if (walk(buf, len, 256, NULL, NULL) != 0)
        return -1;
    return walk(buf, len, 256, fn, arg);
}
