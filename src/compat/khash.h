/* compat/khash.h - stand-in for klib's khash.h, for <h2o/http2_internal.h>.
 *
 * Debian's libh2o 2.2.5 packages install h2o/http2_internal.h, which does
 * `#include "khash.h"` (h2o's bundled klib), but the klib header itself is not
 * shipped. http2_internal.h only needs:
 *   - KHASH_MAP_INIT_INT64(name, value_type): the hash type holding the
 *     connection's streams (h2o_http2_conn_t::streams);
 *   - khash_t(name), khiter_t, kh_get(), kh_end(), kh_val(): used by the inline
 *     h2o_http2_conn_get_stream().
 *
 * This file declares exactly that and nothing else (no insert/delete/resize:
 * the table is only ever modified inside libh2o). It is written from the
 * klib *interface* and data layout, not from klib's source text.
 *
 * ABI: the struct must have the layout libh2o was compiled with, because the
 * library allocates and fills it and we only read it:
 *     uint32 n_buckets, size, n_occupied, upper_bound;
 *     uint32 *flags;     2 bits per bucket: bit1 = empty, bit0 = deleted
 *     key_t  *keys;      uint64 keys for the INT64 map
 *     val_t  *vals;
 * Lookup must use the same hash and probe sequence as the library's klib
 * (0.2.8: hash(k) = (uint32)(k>>33 ^ k ^ k<<11), probe i += ++step, masked by
 * n_buckets-1, a power of two). A mismatch could only make a lookup miss,
 * never read out of bounds; h2_reply.c checks a lookup at run time and
 * refuses to proceed (falls back) if it misses.
 *
 * Include <h2o.h> and <h2o/http2.h> before <h2o/http2_internal.h>, and put
 * src/compat on the include path so that "khash.h" resolves here.
 */
#ifndef TOKEND_COMPAT_KHASH_H
#define TOKEND_COMPAT_KHASH_H

#include <stdint.h>

typedef uint32_t khint32_t;
typedef uint64_t khint64_t;
typedef khint32_t khint_t;
typedef khint_t khiter_t;

#define khash_t(name) kh_##name##_t
#define kh_end(h) ((h)->n_buckets)
#define kh_key(h, x) ((h)->keys[x])
#define kh_val(h, x) ((h)->vals[x])
#define kh_get(name, h, k) kh_get_##name(h, k)

/* Returns the bucket holding `key`, or n_buckets when absent. */
static inline khint_t tokend_kh_find_u64(khint_t n_buckets, const khint32_t *flags, const khint64_t *keys, khint64_t key)
{
    if (n_buckets == 0)
        return 0;
    khint_t mask = n_buckets - 1;
    khint_t start = (khint32_t)((key >> 33) ^ key ^ (key << 11)) & mask;
    khint_t i = start, step = 0;
    for (;;) {
        unsigned bits = (flags[i >> 4] >> ((i & 15U) << 1)) & 3U;
        if (bits & 2U) /* empty: the key is not in the table */
            return n_buckets;
        if (bits == 0 && keys[i] == key) /* live and matching */
            return i;
        i = (i + ++step) & mask; /* deleted or another key: keep probing */
        if (i == start)
            return n_buckets;
    }
}

#define KHASH_MAP_INIT_INT64(name, khval_t)                                                                                       \
    typedef struct kh_##name##_s {                                                                                               \
        khint32_t n_buckets, size, n_occupied, upper_bound;                                                                      \
        khint32_t *flags;                                                                                                        \
        khint64_t *keys;                                                                                                         \
        khval_t *vals;                                                                                                           \
    } kh_##name##_t;                                                                                                             \
    static inline khint_t kh_get_##name(const kh_##name##_t *h, khint64_t key)                                                   \
    {                                                                                                                            \
        return tokend_kh_find_u64(h->n_buckets, h->flags, h->keys, key);                                                         \
    }

#endif
