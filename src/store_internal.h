/* store_internal.h - what the store_*.c files share and nothing else may see.
 *
 * store.h is the store's contract with the handlers; this header is the
 * store's contract with itself: the handle, the named databases, and the
 * transaction helpers every topic file (users, sessions, devices) writes
 * through. Only src/store*.c include it, so LMDB stays behind one wall. */
#ifndef TOKEND_STORE_INTERNAL_H
#define TOKEND_STORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <lmdb.h>
#include <pthread.h>
#include "store.h"

/* Shared between the store's files, but not exported from the binary: a
 * shared library with a function of the same name keeps its own. */
#pragma GCC visibility push(hidden)

enum { DB_META, DB_APPS, DB_USERS, DB_LOGINS, DB_SESSIONS, DB_USER_SESSIONS, DB_STORE_TOKENS,
       DB_DEVICES, DB_USER_DEVICES, DB_PUSH_TOKENS, DB_EXPIRY, DB_APP_USERS, DB_ADMIN_TOKENS,
       DB_GROUPS, DB_AUDIT, DB_COUNT };

struct store {
    MDB_env *env;
    /* Every transaction holds this shared; growing the map takes it
     * exclusively, since LMDB resizes only with no transaction active in
     * the process. Uncontended, a read lock costs a few nanoseconds. */
    pthread_rwlock_t resize;
    size_t mapsize;
    MDB_dbi db[DB_COUNT];
    uint8_t token_key[CRYPTO_KEY_BYTES];
};

#define KEY_MAX 511

static inline void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static inline uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* --- transactions (store.c) ------------------------------------------------- */

int map_rc(int rc);
int txn_begin(store *s, unsigned flags, MDB_txn **txn);
void txn_abort(store *s, MDB_txn *txn);
/* Commits when rc is STORE_OK, else aborts; returns the outcome. */
int txn_end_s(store *s, MDB_txn *txn, int rc);
#define txn_end(txn, rc) txn_end_s(s, (txn), (rc))

int get_msg_with(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                 const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc, void **out);
int get_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
            const ProtobufCMessageDescriptor *desc, void **out);
int put_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
            const ProtobufCMessage *msg, unsigned flags);
int put_raw(store *s, MDB_txn *txn, int db, const void *k, size_t klen, const void *v,
            size_t vlen, unsigned flags);
/* Deleting what is not there is not an error. */
int del_raw(store *s, MDB_txn *txn, int db, const void *k, size_t klen);
int get_u64_value(store *s, MDB_txn *txn, int db, const void *k, size_t klen, uint64_t *v);
int get_by_id(store *s, int db, uint64_t id, const ProtobufCMessageDescriptor *desc,
              void **out);
int next_id(store *s, MDB_txn *txn, const char *name, uint64_t first, uint64_t *id);
int with_audit(store *s, MDB_txn *txn, int rc, const store_audit *audit);

/* Calls fn for each key of `db` that starts with the 8-byte `prefix`;
 * fn returns non-zero to stop. Keys are copied first, so fn may delete. */
typedef int (*scan_fn)(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg);
int scan_prefix(store *s, MDB_txn *txn, int db, uint64_t id, scan_fn fn, void *arg);

/* --- sessions (store_sessions.c) -------------------------------------------- */

typedef struct {
    const uint8_t *keep;       /* a session to spare, or NULL */
    const char *device_guid;   /* only this device's sessions, or NULL */
    size_t revoked;
    const uint8_t *only;       /* only this session, or NULL */
} revoke_filter;

int revoke_user_txn(store *s, MDB_txn *txn, uint64_t user_id, revoke_filter *f);

/* --- devices (store_devices.c) ---------------------------------------------- */

typedef struct {
    uint64_t app_id, user_id;
    uint32_t sn;               /* 0: every device */
    store_device **list;
    size_t n, cap;
    const uint8_t *found_key;  /* for find_device */
    size_t found_len;
    uint8_t key_copy[8 + STORE_GUID_MAX];
} device_scan;

int move_device(store *s, MDB_txn *txn, store_login *login);
int devices_txn(store *s, MDB_txn *txn, device_scan *d);
int forget_device_txn(store *s, MDB_txn *txn, uint64_t app_id, store_device *dev, int forget);

#pragma GCC visibility pop

#endif
