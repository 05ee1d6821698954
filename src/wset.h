/* wset.h - a write set: the puts and deletes one logical change made to
 * the store, in order, as one byte string. In cluster mode the store
 * records every write of a write transaction here (store.c: put_raw,
 * put_msg, del_raw), PostgreSQL keeps it as the change's row in the
 * change log and applies it to its kv table, and every other node applies
 * it to its own LMDB. Pure data: no LMDB, no libpq, so unit tests need
 * neither.
 *
 * Encoding, per operation (big-endian):
 *   op(1) db(1) key_len(2) key [value_len(4) value]     (value for puts only)
 * op: WSET_DEL, WSET_PUT (overwrite), WSET_INSERT (the key must not exist:
 * LMDB's MDB_NOOVERWRITE, PostgreSQL's plain INSERT). */
#ifndef TOKEND_WSET_H
#define TOKEND_WSET_H

#include <stddef.h>
#include <stdint.h>

enum { WSET_DEL = 0, WSET_PUT = 1, WSET_INSERT = 2 };
#define WSET_KEY_MAX 65535u

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    unsigned n;            /* operations */
} wset;

/* Empties the set, keeping its buffer. */
void wset_reset(wset *w);
void wset_free(wset *w);
/* 0, or -1 when out of memory or the key is too long (the set is unchanged). */
int wset_add(wset *w, int op, int db, const void *key, size_t klen, const void *val, size_t vlen);

/* Calls fn for each operation of an encoded set, in order; stops at the
 * first non-zero return and returns it. A malformed set returns -1 before
 * calling fn at all, so a half-applied bad change cannot happen. */
typedef int (*wset_fn)(void *arg, int op, int db, const uint8_t *key, size_t klen,
                       const uint8_t *val, size_t vlen);
int wset_each(const uint8_t *buf, size_t len, wset_fn fn, void *arg);
/* 0 when buf is a well-formed set of ops on dbs below `ndb`, else -1. */
int wset_check(const uint8_t *buf, size_t len, int ndb);

#endif
