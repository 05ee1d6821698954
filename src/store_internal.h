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
#include "wset.h"

struct cluster;
struct cluster_conn;

/* Shared between the store's files, but not exported from the binary: a
 * shared library with a function of the same name keeps its own. */
#pragma GCC visibility push(hidden)

/* The named databases. Keys are big-endian so scans come out in order;
 * each index's key is made by its builder below and nowhere else.
 *   meta           "key" | "next_app" | "next_user" | "default_app" | "admin_gen" -> value
 *   apps           app_id(8)                        -> App
 *   users          user_id(8)                       -> User
 *   logins         app_id(8) kind(1) text           -> user_id(8)   unique index
 *   sessions       token hash(32)                   -> Session
 *   user_sessions  user_id(8) token hash(32)        -> ""           for logout-all
 *   store_tokens   store token hash(32)             -> token hash(32)
 *   devices        app_id(8) device_guid            -> Device
 *   user_devices   user_id(8) app_id(8) device_guid -> ""
 *   push_tokens    push token hash(32)              -> app_id(8) device_guid
 *   expiry         expire_ms(8) token hash(32)      -> ""           for the purge
 *   app_users      app_id(8) user_id(8)             -> ""           for listing
 *   admin_tokens   app_id(8) token hash(32)         -> ""           for listing
 *   groups         app_id(8) group_id(8)            -> admin user_id(8)
 *   audit          sequence(8)                      -> AuditEntry
 *   pwcosts        app(8) ops(8) mem(8)             -> accounts(8)  hash costs in use, per app
 *                  (16-byte keys: the whole directory's, of a build before; unread)
 *                  (bcrypt: ops the cost, mem 0)
 *   counts         app_id(8) kind(1)                -> count(8)     users 'u', sessions 's',
 *                                                                  admin tokens 'a' per app,
 *                                                                  kept by the writes (metrics)
 * sessions, store_tokens and push_tokens are keyed by the token hash itself. */
enum { DB_META, DB_APPS, DB_USERS, DB_LOGINS, DB_SESSIONS, DB_USER_SESSIONS, DB_STORE_TOKENS,
       DB_DEVICES, DB_USER_DEVICES, DB_PUSH_TOKENS, DB_EXPIRY, DB_APP_USERS, DB_ADMIN_TOKENS,
       DB_GROUPS, DB_AUDIT, DB_PWCOSTS, DB_COUNTS, DB_COUNT };

struct kept_ring {
    store_keyring ring;
    struct kept_ring *next;
};

struct store {
    MDB_env *env;
    /* The resize gate (store.c): every transaction passes it, and growing
     * the map closes it and waits for those inside, since LMDB resizes only
     * with no transaction active in the process. */
    _Atomic unsigned gate_inside;   /* transactions under way */
    _Atomic int gate_closed;        /* a resize waits or runs */
    pthread_mutex_t resizing;       /* held through a resize */
    size_t mapsize;
    MDB_dbi db[DB_COUNT];
    /* Cluster mode (store_cluster.c); NULL: one node. */
    struct cluster *cluster;
    /* The directory is a replica of a cluster (meta "cluster_id"): without
     * `cluster` (no --cluster), its writes are refused (STORE_REPLICA). */
    int replica;
    /* The write transaction in progress, while it records its writes for
     * the cluster. One at a time: LMDB has one writer per environment, and
     * only the thread holding it touches these. */
    MDB_txn *wtxn;
    struct cluster_conn *wconn;
    uint64_t wseq;             /* the cluster's newest change, read under its lock */
    wset ws;
    void *snap;                /* the feed's snapshot loader */
    /* Cluster mode: held by a write from before it takes the cluster's lock
     * until it has LMDB's, and by a snapshot load for the whole load. So a
     * write waits for a load here, not while holding the cluster's lock
     * (which would stop every node's writes for as long as the load). */
    pthread_mutex_t writer;
    /* The token-hash key ring: a snapshot replaced whole (under ring_lock)
     * when it changes; replaced ones are kept until store_close, as a
     * reader may still hold one (rotations are rare). */
    const store_keyring *_Atomic ring;
    pthread_mutex_t ring_lock;
    struct kept_ring *rings;   /* every one published, newest first */
    uint64_t serial;           /* unique among the stores this process opened */
    struct read_slot *readers; /* each thread's kept read transaction (store.c) */
    /* store_keep_resident's keeper (store_memory.c); NULL: not kept. */
    struct keeper *_Atomic keeper;
};

#define KEY_MAX 511
/* meta: the admin-token generation, moved by each admin token's end. */
#define ADMIN_GEN_KEY "admin_gen"
/* meta: the layout of the records (databases, key forms, message fields)
 * that wrote the directory. A build that changes the layout raises
 * STORE_LAYOUT and converts the older ones at open; a build refuses a
 * directory of a later layout rather than misread it. Directories from
 * before the stamp are layout 1. */
#define LAYOUT_KEY "layout"
#define STORE_LAYOUT 1

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

/* --- key layouts: one builder per index ------------------------------------ */

static inline size_t app_key(uint8_t key[8], uint64_t app_id)
{
    put_u64(key, app_id);
    return 8;
}

static inline size_t user_key(uint8_t key[8], uint64_t user_id)
{
    put_u64(key, user_id);
    return 8;
}

static inline size_t audit_key(uint8_t key[8], uint64_t seq)
{
    put_u64(key, seq);
    return 8;
}

/* A text longer than the key allows is cut: LMDB keys are at most 511 bytes. */
static inline size_t login_key(uint8_t key[KEY_MAX], uint64_t app_id, login_kind kind,
                               const char *text)
{
    size_t n = strlen(text);
    if (n > KEY_MAX - 9)
        n = KEY_MAX - 9;
    put_u64(key, app_id);
    key[8] = (uint8_t)kind;
    memcpy(key + 9, text, n);
    return 9 + n;
}

#define DEVICE_KEY_MAX (8 + STORE_GUID_MAX)

static inline size_t device_key(uint8_t key[DEVICE_KEY_MAX], uint64_t app_id, const char *guid)
{
    size_t n = strlen(guid);
    if (n > STORE_GUID_MAX)
        n = STORE_GUID_MAX;
    put_u64(key, app_id);
    memcpy(key + 8, guid, n);
    return 8 + n;
}

/* user_devices: the user, then the device's own key, so the user's devices
 * are one prefix scan and each entry leads to its device record. With
 * dlen 0 this is that prefix. */
#define USER_DEVICE_KEY_MAX (8 + DEVICE_KEY_MAX)
#define USER_DEVICE_DKEY 8     /* where the device key starts */

static inline size_t user_device_key(uint8_t *key, uint64_t user_id,
                                     const uint8_t *dkey, size_t dlen)
{
    put_u64(key, user_id);
    if (dlen)
        memcpy(key + USER_DEVICE_DKEY, dkey, dlen);
    return USER_DEVICE_DKEY + dlen;
}

/* A session is listed under its owner: a user's in user_sessions, an admin
 * token under its app in admin_tokens. Returns the index it belongs in. */
#define OWNER_KEY_LEN (8 + CRYPTO_HASH_BYTES)
#define OWNER_KEY_HASH 8       /* where the token hash starts */

static inline int owner_key(uint8_t key[OWNER_KEY_LEN], const store_session *ss,
                            const uint8_t hash[CRYPTO_HASH_BYTES])
{
    put_u64(key, ss->admin ? ss->app_id : ss->user_id);
    memcpy(key + OWNER_KEY_HASH, hash, CRYPTO_HASH_BYTES);
    return ss->admin ? DB_ADMIN_TOKENS : DB_USER_SESSIONS;
}

#define EXPIRY_KEY_LEN (8 + CRYPTO_HASH_BYTES)
#define EXPIRY_KEY_HASH 8      /* where the token hash starts */

static inline size_t expiry_key(uint8_t key[EXPIRY_KEY_LEN], int64_t expire_ms,
                                const uint8_t hash[CRYPTO_HASH_BYTES])
{
    put_u64(key, (uint64_t)expire_ms);
    memcpy(key + EXPIRY_KEY_HASH, hash, CRYPTO_HASH_BYTES);
    return EXPIRY_KEY_LEN;
}

#define APP_USER_UID 8         /* where the user key starts */

static inline size_t app_user_key(uint8_t key[16], uint64_t app_id, uint64_t user_id)
{
    put_u64(key, app_id);
    put_u64(key + APP_USER_UID, user_id);
    return 16;
}

#define PWCOST_KEY 24

static inline size_t pwcost_key(uint8_t key[PWCOST_KEY], uint64_t app_id, crypto_pwcost cost)
{
    put_u64(key, app_id);
    put_u64(key + 8, cost.ops);
    put_u64(key + 16, cost.mem);
    return PWCOST_KEY;
}

static inline size_t group_key(uint8_t key[16], uint64_t app_id, uint64_t group_id)
{
    put_u64(key, app_id);
    put_u64(key + 8, group_id);
    return 16;
}

/* --- transactions (store.c) ------------------------------------------------- */

int map_rc(int rc);
/* In cluster mode a write transaction is also a transaction in PostgreSQL
 * holding the cluster's write lock: the local replica is caught up first,
 * every put and delete is recorded (put_raw, put_msg, del_raw: the only
 * writers), and txn_end commits the record in PostgreSQL before LMDB. */
/* A read transaction (MDB_RDONLY) is the calling thread's kept one, renewed
 * (mdb_txn_renew) rather than created, and reset rather than freed by
 * txn_abort / txn_end: no allocation and no reader-table search per read
 * (parked instead, still open, on a thread that called store_reads_keep).
 * A thread that already has its kept one open gets a fresh one. */
int txn_begin(store *s, unsigned flags, MDB_txn **txn);
/* A transaction on the local LMDB alone (the feed, snapshots, the
 * node's own bookkeeping). */
int local_txn_begin(store *s, unsigned flags, MDB_txn **txn);
int local_txn_commit(store *s, MDB_txn *txn);
void txn_abort(store *s, MDB_txn *txn);
/* The resize gate (store.c): every transaction passes it; a resize closes
 * it and waits for those inside, so the map stays put while inside. */
void gate_enter(store *s);
void gate_leave(store *s);
/* store_memory.c: with the gate closed, a resize has mapped the file anew;
 * memory_stop ends the keeper (store_close); memory_resident: bytes kept. */
void memory_map_moved(store *s);
void memory_stop(store *s);
size_t memory_resident(store *s);
/* Doubles the map; no transaction of this process may be open. A write
 * that found the map full (one that replaces the replica whole: a
 * snapshot) grows it so, then tries again. */
int store_grow(store *s);
/* A new token-hash key first in the ring (retiring unused ones when it is
 * full: STORE_FULL if none can go), inside the caller's write; r is the
 * ring written, for the caller to publish after the commit. */
int token_key_rotate_txn(store *s, MDB_txn *txn, store_keyring *r, uint32_t *new_id);
/* Commits when rc is STORE_OK, else aborts; returns the outcome. */
int txn_end_s(store *s, MDB_txn *txn, int rc);
#define txn_end(txn, rc) txn_end_s(s, (txn), (rc))

/* Decoded into alloc's arena (NULL: the heap), the string and bytes fields
 * numbered in skip possibly left empty (pb_unpack_skip). */
int get_msg_with(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                 const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc, uint64_t skip,
                 void **out);
int get_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
            const ProtobufCMessageDescriptor *desc, void **out);
int put_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
            const ProtobufCMessage *msg, unsigned flags);
int put_raw(store *s, MDB_txn *txn, int db, const void *k, size_t klen, const void *v,
            size_t vlen, unsigned flags);
/* Deleting what is not there is not an error. */
int del_raw(store *s, MDB_txn *txn, int db, const void *k, size_t klen);
int get_u64_value(store *s, MDB_txn *txn, int db, const void *k, size_t klen, uint64_t *v);
/* A write of this node's own bookkeeping (meta "cluster_seq", "cluster_id"):
 * never recorded, never replicated. */
int put_local(store *s, MDB_txn *txn, const char *name, const void *v, size_t vlen);

/* --- cluster mode (store_cluster.c) -------------------------------------------- */

int cluster_txn_begin(store *s, MDB_txn **txn);
int cluster_txn_end(store *s, MDB_txn *txn, int rc);
/* Applies one encoded write set to txn, unrecorded (a change of the feed). */
int apply_wset(store *s, MDB_txn *txn, const uint8_t *ops, size_t len);
uint64_t local_seq(store *s, MDB_txn *txn);
int read_token_key(store *s, MDB_txn *txn);
/* One record, in a read transaction of its own. */
int get_one(store *s, int db, const void *k, size_t klen, const ProtobufCMessageDescriptor *desc,
            void **out);
int next_id(store *s, MDB_txn *txn, const char *name, uint64_t first, uint64_t *id);
int with_audit(store *s, MDB_txn *txn, int rc, const store_audit *audit);

/* Calls fn for each key of `db` that starts with the 8-byte `prefix`;
 * fn returns non-zero to stop. Keys are copied first, so fn may delete. */
typedef int (*scan_fn)(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg);
int scan_prefix(store *s, MDB_txn *txn, int db, uint64_t id, scan_fn fn, void *arg);
/* The same over the keys with the 8-byte prefix of `from`, from `from` on. */
int scan_from(store *s, MDB_txn *txn, int db, const uint8_t *from, size_t from_len, scan_fn fn,
              void *arg);

/* Counts the accounts of each password-hash cost of each app (pwcosts),
 * for the decoy of unknown names: `delta` (+1, -1) for the cost of `hash`
 * in `app_id`. */
int pwcost_count(store *s, MDB_txn *txn, uint64_t app_id, const char *hash, int delta);
/* Counts every account's cost again when the counts per app do not add
 * up to the users (a data directory from before the count, or before it
 * was per app; a replica's snapshot with only some apps' counts). */
int pwcosts_count_all(store *s, MDB_txn *txn);
/* The look-alike index of user names (store_users.c): entries in logins
 * of kind case, alike or both, and meta's mark. They are the node's own:
 * never recorded in a change, copied into a snapshot or applied from one. */
#define STORE_LOOK_CASE 'c'
#define STORE_LOOK_ALIKE 'l'
#define STORE_LOOK_BOTH 'b'
#define STORE_LOOK_MARK "lookalike_index"

/* app(8) kind(1) key NUL user_id(8) in logins (a login key's kind is n, p or e). */
static inline int store_look_key(int db, const void *k, size_t klen)
{
    const uint8_t *key = k;
    return db == DB_LOGINS && klen >= 18 && key[klen - 9] == 0 &&
           (key[8] == STORE_LOOK_CASE || key[8] == STORE_LOOK_ALIKE || key[8] == STORE_LOOK_BOTH);
}

/* Indexes every user's name under its look-alike keys again unless the
 * mark says all users are, with this build's keys (a directory from
 * before the index, written by an older build, or with another ICU): in
 * one transaction, the map grown for it first. Called once the store is
 * open, before its own writers. */
int lookalikes_index(store *s);
/* The same, always, in txn: after a snapshot, which has no index. */
int lookalikes_index_txn(store *s, MDB_txn *txn);
/* The map's size and the bytes of it in use: the pages up to the last one
 * a commit wrote, which may pass this process's map (another process grew
 * it) or the file. 0 / -1. */
int store_map_usage(store *s, size_t *used, size_t *size);
/* Grows the map until `bytes` more fit in it. */
int store_make_room(store *s, size_t bytes);
/* Keeps the index for a change to the users record key (8 bytes) that
 * another node made, applied next in txn: val (vlen bytes) put, or the
 * record deleted (del). Whatever build made the change. */
int lookalikes_applying(store *s, MDB_txn *txn, const uint8_t *key, size_t klen, const uint8_t *val,
                        size_t vlen, int del);

/* Keeps the per-app count of users ('u'), sessions ('s') and admin tokens
 * ('a') that metrics read without scanning: `delta` +1 or -1. */
int count_add(store *s, MDB_txn *txn, uint64_t app_id, char kind, int delta);
/* Sessions per token-hash key: count_add(s, txn, key_id, 'k', ...). Retires
 * the keys (but the newest) no session uses any more. */
int keys_retire(store *s, MDB_txn *txn);
/* Gives every app without a key pair its first. */
int apps_ensure_keys(store *s, MDB_txn *txn);
/* A new key pair for the app, its private half sealed with seal_key (id
 * seal_id), or with the published token key when seal_key is NULL. */
int app_key_add(store *s, store_app *app, uint32_t *new_id, const uint8_t *seal_key, uint32_t seal_id);
/* Counts everything once for a data directory from before the counts. */
int counts_count_all(store *s, MDB_txn *txn);

/* --- users (store_users.c) ---------------------------------------------------- */

/* Writes u with a new password hash, keeping the count of costs. */
int set_hash_txn(store *s, MDB_txn *txn, store_user *u, const char *hash);

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
} device_scan;

int move_device(store *s, MDB_txn *txn, store_login *login);
int devices_txn(store *s, MDB_txn *txn, device_scan *d);
int forget_device_txn(store *s, MDB_txn *txn, uint64_t app_id, store_device *dev, int forget);

#pragma GCC visibility pop

#endif
