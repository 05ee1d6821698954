/* store.c - the LMDB environment under every store_*.c file.
 *
 * This file holds what every topic needs and none owns: opening the
 * environment, growing the map, transactions, id counters, the audit log
 * and prefix scans. The topics live in store_users.c, store_sessions.c and
 * store_devices.c; store_internal.h is what they share, the databases and
 * their key layouts included.
 *
 * The environment is opened with MDB_NOTLS so read transactions are not
 * tied to threads (event loops and workers share one handle). */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "log.h"
#include "pb.h"
#include "store_internal.h"

static const char *const db_names[DB_COUNT] = {
    "meta", "apps", "users", "logins", "sessions", "user_sessions", "store_tokens",
    "devices", "user_devices", "push_tokens", "expiry", "app_users", "admin_tokens",
    "groups", "audit", "pwcosts", "counts"};

#define STORE_MAX_READERS 1024   /* a reader slot per thread that reads (read_slot) */

int map_rc(int rc)
{
    switch (rc) {
    case MDB_SUCCESS: return STORE_OK;
    case MDB_NOTFOUND: return STORE_NOTFOUND;
    case MDB_KEYEXIST: return STORE_EXISTS;
    case MDB_MAP_FULL: case ENOSPC: {
        /* At most one line a second: a full disk fails every write. */
        static _Atomic long long last;
        long long now = (long long)time(NULL);
        if (now != last) {
            last = now;
            log_event(LOG_ERROR, "disk_full", "store: %s: writes fail until there is room",
                      rc == ENOSPC ? "the disk is full" : "the LMDB map is full");
        }
        return STORE_FULL;
    }
    default:
        log_event(LOG_ERROR, "store", "store: %s", mdb_strerror(rc));
        return STORE_ERR;
    }
}

const char *store_strerror(int code)
{
    switch (code) {
    case STORE_OK: return "ok";
    case STORE_NOTFOUND: return "not found";
    case STORE_EXISTS: return "already exists";
    case STORE_FULL: return "the data store is full";
    case STORE_UNAVAILABLE: return "cluster database unavailable: writes are refused, reads go on";
    case STORE_REPLICA: return "the data directory is a replica of a cluster: give --cluster URL "
                               "(or `cluster` in the --config file) so that the change commits "
                               "in PostgreSQL";
    default: return "the data store failed";
    }
}

/* --- the resize gate -------------------------------------------------------------
 * LMDB changes the map size only while no transaction of the process is
 * active, so every transaction passes this gate and a resize closes it.
 * It was a pthread rwlock, whose read side cost ~80 instructions a
 * transaction (a Verify has one); entering is now an atomic add and a
 * load. The two sides meet as in Dekker's algorithm (sequentially
 * consistent atomics): a transaction counts itself in, then looks whether
 * the gate is closed; a resize closes it, then looks whether anyone is in.
 * One of the two always sees the other: either the resize waits for the
 * transaction to leave, or the transaction steps back out and waits for
 * the resize. A closed gate turns new transactions back, so a stream of
 * reads cannot starve a resize (the rwlock was writer-preferring too).
 * As with that lock, a thread must not begin a transaction while one of
 * its own is open and a resize may come. */
void gate_enter(store *s)
{
    for (;;) {
        atomic_fetch_add(&s->gate_inside, 1);
        if (!atomic_load(&s->gate_closed))
            return;
        atomic_fetch_sub(&s->gate_inside, 1);
        pthread_mutex_lock(&s->resizing);   /* held until the resize is done */
        pthread_mutex_unlock(&s->resizing);
    }
}

void gate_leave(store *s)
{
    atomic_fetch_sub(&s->gate_inside, 1);
}

/* Returns with no transaction of the process under way and none able to
 * begin until gate_open. A resize is rare and most transactions short (a
 * read takes microseconds): the wait polls, from 20 us up to 1 ms apart
 * (a backup's copy holds the gate for its whole length). */
static void gate_close(store *s)
{
    pthread_mutex_lock(&s->resizing);
    atomic_store(&s->gate_closed, 1);
    for (long ns = 20000; atomic_load(&s->gate_inside) != 0; ns = ns < 1000000 ? ns * 2 : ns) {
        struct timespec pause = {0, ns};
        nanosleep(&pause, NULL);
    }
}

static void gate_open(store *s)
{
    atomic_store(&s->gate_closed, 0);
    pthread_mutex_unlock(&s->resizing);
}

/* Sets the map size (0: adopt what another process set; SIZE_MAX: twice
 * what it is, read under the lock) with no transaction of this process
 * active. */
static void end_kept_reads(store *s);

static int resize(store *s, size_t size)
{
    MDB_envinfo info;
    gate_close(s);
    end_kept_reads(s);
    if (size == SIZE_MAX)
        size = mdb_env_info(s->env, &info) == 0 ? info.me_mapsize * 2 : s->mapsize * 2;
    int rc = mdb_env_set_mapsize(s->env, size);
    if (rc == 0 && mdb_env_info(s->env, &info) == 0)
        s->mapsize = info.me_mapsize;
    if (rc == 0)
        memory_map_moved(s);   /* the map is new: none of it faulted in yet */
    gate_open(s);
    return rc;
}

int store_grow(store *s)
{
    int rc = resize(s, SIZE_MAX);
    if (rc == 0)
        log_event(LOG_INFO, "map_growth", "store: map grown to %zu MiB", s->mapsize >> 20);
    return rc == 0 ? STORE_OK : STORE_ERR;
}

int store_map_usage(store *s, size_t *used, size_t *size)
{
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0)
        return -1;
    *used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
    *size = info.me_mapsize;
    return 0;
}

int store_make_room(store *s, size_t bytes)
{
    size_t used, size;
    for (int i = 0; i < 16; i++) {
        if (store_map_usage(s, &used, &size) != 0)
            return STORE_ERR;
        if (used + bytes <= size / 4 * 3)
            return STORE_OK;
        if (store_grow(s) != STORE_OK)
            return STORE_ERR;
    }
    return STORE_ERR;
}

/* Doubles the map before a write when it is 3/4 used, so writes find room
 * instead of failing with MDB_MAP_FULL. */
static void grow_if_needed(store *s)
{
    size_t used, size;
    if (store_map_usage(s, &used, &size) != 0)
        return;
    if (used > size / 4 * 3 && resize(s, size * 2) == 0)
        log_event(LOG_INFO, "map_growth", "store: map grown to %zu MiB", s->mapsize >> 20);
}

/* --- read transactions kept per thread ---------------------------------------
 * A read transaction costs an allocation and a search of the reader table
 * when created; renewing a reset one costs neither. So each thread keeps one
 * per store it reads (up to READ_SLOTS stores at once; more are served by
 * plain transactions): renewed by txn_begin, reset by txn_abort / txn_end.
 * A reset transaction pins no pages and is not inside the resize gate (it
 * passes the gate only while renewed), so it delays neither writers nor
 * a map resize; its reader slot stays taken (one per thread; maxreaders
 * is 1024). The environment is MDB_NOTLS, so the slot belongs to the
 * transaction, not the thread, and another thread may free it: store_close
 * frees the kept transactions of every thread, a thread's exit its own.
 *
 * An event loop's thread goes further (store_reads_keep): its transaction
 * is not reset after a read but parked, still open, and the next read
 * takes it as it is if no write has committed since (the snapshot is then
 * the newest; a renewal and a reset are ~500 instructions of a ~16k
 * Verify). A parked transaction pins the pages of its snapshot, so it must
 * not outlive the next commit by long: the loop calls store_read_tick at
 * least every STORE_READ_TICK_MS while one is parked, which ends it if it is
 * old or was not used since the last tick (an idle loop then sleeps holding
 * nothing), and a map resize ends every parked transaction first (with
 * the resize gate closed: a parked transaction is not inside it). */
struct read_slot {
    store *s;                  /* the owner of txn; NULL: free (under slots_lock) */
    uint64_t serial;           /* s->serial while registered; read by the owner thread */
    MDB_txn *txn;              /* reset, or renewed while busy or parked */
    int busy;
    int read_since_tick;       /* the owner's */
    _Atomic int parked;        /* open, not in use; changed inside the resize gate
                                  (by the owner) or with it closed (a resize),
                                  read anywhere */
    struct read_slot *next;    /* in s->readers (under slots_lock) */
};

#define READ_SLOTS 2
static __thread struct read_slot my_slots[READ_SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t slots_key;
static pthread_once_t slots_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t next_serial = 1;
static __thread int keep_reads;      /* this thread parks its transactions */

static void unlink_slot(struct read_slot *sl)
{
    for (struct read_slot **p = &sl->s->readers; *p; p = &(*p)->next)
        if (*p == sl) {
            *p = sl->next;
            break;
        }
    if (sl->txn)
        mdb_txn_abort(sl->txn);
    sl->s = NULL;
    sl->txn = NULL;
    sl->serial = 0;
    sl->parked = 0;
}

/* A thread ends: its kept transactions go (their stores are still open, or
 * store_close would have taken them). */
static void slots_exit(void *arg)
{
    struct read_slot *slots = arg;
    pthread_mutex_lock(&slots_lock);
    for (int i = 0; i < READ_SLOTS; i++)
        if (slots[i].s)
            unlink_slot(&slots[i]);
    pthread_mutex_unlock(&slots_lock);
}

static void slots_init(void)
{
    if (pthread_key_create(&slots_key, slots_exit) != 0)
        slots_key = (pthread_key_t)-1;
}

/* The calling thread's slot for s, if it has one. */
static struct read_slot *slot_of(store *s)
{
    for (int i = 0; i < READ_SLOTS; i++)
        if (my_slots[i].serial == s->serial)
            return &my_slots[i];
    return NULL;
}

/* The calling thread's slot for s, registering one if there is room; NULL
 * when all are taken by other open stores. */
static struct read_slot *my_slot(store *s)
{
    struct read_slot *sl = slot_of(s);
    if (sl)
        return sl;
    pthread_once(&slots_once, slots_init);
    if (slots_key == (pthread_key_t)-1)
        return NULL;
    pthread_mutex_lock(&slots_lock);
    for (int i = 0; i < READ_SLOTS && !sl; i++)
        if (!my_slots[i].s)
            sl = &my_slots[i];
    if (sl && pthread_setspecific(slots_key, my_slots) == 0) {
        sl->s = s;
        sl->serial = s->serial;
        sl->txn = NULL;
        sl->busy = 0;
        sl->parked = 0;
        sl->next = s->readers;
        s->readers = sl;
    } else {
        sl = NULL;
    }
    pthread_mutex_unlock(&slots_lock);
    return sl;
}

/* The calling thread's kept transaction if txn is it. */
static struct read_slot *kept(store *s, MDB_txn *txn)
{
    for (int i = 0; i < READ_SLOTS; i++)
        if (my_slots[i].txn == txn && my_slots[i].busy && my_slots[i].serial == s->serial)
            return &my_slots[i];
    return NULL;
}

/* Whether a write has committed since txn's snapshot (meta pages, no lock:
 * a commit seen early only costs a renewal). */
static int stale(store *s, MDB_txn *txn)
{
    MDB_envinfo info;
    return mdb_env_info(s->env, &info) != 0 || info.me_last_txnid != mdb_txn_id(txn);
}

/* Inside the resize gate, or with it closed. */
static void unpark(struct read_slot *sl)
{
    mdb_txn_reset(sl->txn);
    sl->parked = 0;
}

static int begin_or_renew(store *s, unsigned flags, MDB_txn **txn, struct read_slot *sl)
{
    if (!sl)
        return mdb_txn_begin(s->env, NULL, flags, txn);
    sl->read_since_tick = 1;
    if (sl->parked) {
        if (!stale(s, sl->txn)) {
            sl->parked = 0;
            sl->busy = 1;
            *txn = sl->txn;
            return MDB_SUCCESS;
        }
        unpark(sl);
    }
    int rc = sl->txn ? mdb_txn_renew(sl->txn) : mdb_txn_begin(s->env, NULL, flags, &sl->txn);
    if (rc == MDB_SUCCESS) {
        sl->busy = 1;
        *txn = sl->txn;
    }
    return rc;
}

/* Begins a transaction, following a map another process has grown. */
int local_txn_begin(store *s, unsigned flags, MDB_txn **txn)
{
    struct read_slot *sl = NULL;
    if (!(flags & MDB_RDONLY))
        grow_if_needed(s);
    else if ((sl = my_slot(s)) != NULL && sl->busy)
        sl = NULL;  /* the kept one is open: a second read gets its own */
    gate_enter(s);
    int rc = begin_or_renew(s, flags, txn, sl);
    if (rc == MDB_MAP_RESIZED) {
        gate_leave(s);
        resize(s, 0);
        gate_enter(s);
        rc = begin_or_renew(s, flags, txn, sl);
    }
    if (rc != MDB_SUCCESS) {
        gate_leave(s);
        return map_rc(rc);
    }
    return STORE_OK;
}

/* With the resize gate closed: no transaction of this process is under way. */
static void end_kept_reads(store *s)
{
    pthread_mutex_lock(&slots_lock);
    for (struct read_slot *sl = s->readers; sl; sl = sl->next)
        if (sl->parked)
            unpark(sl);
    pthread_mutex_unlock(&slots_lock);
}

/* Ends the calling thread's parked transaction in sl: any (all), or one
 * older than the newest commit or unused since the last tick. */
static void end_parked(struct read_slot *sl, int all)
{
    if (!sl || !sl->s || !sl->parked)
        return;
    gate_enter(sl->s);
    if (sl->parked && (all || !sl->read_since_tick || stale(sl->s, sl->txn)))
        unpark(sl);
    sl->read_since_tick = 0;
    gate_leave(sl->s);
}

void store_reads_keep(int on)
{
    keep_reads = on;
    for (int i = 0; !on && i < READ_SLOTS; i++)
        end_parked(&my_slots[i], 1);
}

int store_reads_parked(store *s)
{
    struct read_slot *sl = slot_of(s);
    return sl && sl->parked;
}

void store_read_tick(store *s)
{
    end_parked(slot_of(s), 0);
}

int txn_begin(store *s, unsigned flags, MDB_txn **txn)
{
    if (!(flags & MDB_RDONLY)) {
        if (s->cluster)
            return cluster_txn_begin(s, txn);
        if (s->replica)
            return STORE_REPLICA;
        /* `tokend cluster init` may have made the directory a replica
         * since this process opened it (it marks it first, then copies
         * it): from then on its writes are the cluster's to make (and if
         * the copy fails, init takes the mark back). */
        MDB_val k = {10, "cluster_id"}, v;
        int rc = local_txn_begin(s, flags, txn);
        if (rc == STORE_OK && mdb_get(*txn, s->db[DB_META], &k, &v) == MDB_SUCCESS) {
            txn_abort(s, *txn);
            return STORE_REPLICA;
        }
        return rc;
    }
    return local_txn_begin(s, flags, txn);
}

void txn_abort(store *s, MDB_txn *txn)
{
    struct read_slot *sl = kept(s, txn);
    if (sl) {
        if (keep_reads)
            sl->parked = 1;
        else
            mdb_txn_reset(txn);
        sl->busy = 0;
    } else {

        mdb_txn_abort(txn);
    }
    gate_leave(s);
}

int local_txn_commit(store *s, MDB_txn *txn)
{
    int rc = map_rc(mdb_txn_commit(txn));
    gate_leave(s);
    return rc;
}

int txn_end_s(store *s, MDB_txn *txn, int rc)
{
    if (s->wtxn && s->wtxn == txn)
        return cluster_txn_end(s, txn, rc);
    if (rc != STORE_OK || kept(s, txn)) {   /* a read has nothing to commit */
        txn_abort(s, txn);
        return rc;
    }
    return local_txn_commit(s, txn);
}

/* Records a write of the transaction the cluster is told about. */
static int record(store *s, MDB_txn *txn, int op, int db, const void *k, size_t klen,
                  const void *v, size_t vlen)
{
    if (s->wtxn != txn || store_look_key(db, k, klen))
        return STORE_OK;
    return wset_add(&s->ws, op, db, k, klen, v, vlen) == 0 ? STORE_OK : STORE_ERR;
}

int get_msg_with(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                 const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc, uint64_t skip,
                 void **out)
{
    MDB_val key = {klen, (void *)k}, val;
    int rc = mdb_get(txn, s->db[db], &key, &val);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    *out = pb_unpack_skip(desc, alloc, val.mv_size, val.mv_data, skip);
    if (!*out) {
        log_event(LOG_ERROR, "store", "store: undecodable record in %s", db_names[db]);
        return STORE_ERR;
    }
    return STORE_OK;
}

int get_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
            const ProtobufCMessageDescriptor *desc, void **out)
{
    return get_msg_with(s, txn, db, k, klen, desc, NULL, 0, out);
}

/* Packs the record straight into the page LMDB reserves for it. */
int put_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
            const ProtobufCMessage *msg, unsigned flags)
{
    MDB_val key = {klen, (void *)k}, val = {pb_size(msg), NULL};
    int rc = mdb_put(txn, s->db[db], &key, &val, flags | MDB_RESERVE);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    pb_pack(msg, val.mv_data);
    return record(s, txn, flags & MDB_NOOVERWRITE ? WSET_INSERT : WSET_PUT, db, k, klen,
                  val.mv_data, val.mv_size);
}

int put_raw(store *s, MDB_txn *txn, int db, const void *k, size_t klen, const void *v,
            size_t vlen, unsigned flags)
{
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
    int rc = map_rc(mdb_put(txn, s->db[db], &key, &val, flags));
    if (rc != STORE_OK)
        return rc;
    return record(s, txn, flags & MDB_NOOVERWRITE ? WSET_INSERT : WSET_PUT, db, k, klen, v, vlen);
}

int del_raw(store *s, MDB_txn *txn, int db, const void *k, size_t klen)
{
    MDB_val key = {klen, (void *)k};
    int rc = map_rc(mdb_del(txn, s->db[db], &key, NULL));
    if (rc == STORE_NOTFOUND)
        return STORE_OK;  /* nothing to tell the cluster either */
    return rc == STORE_OK ? record(s, txn, WSET_DEL, db, k, klen, NULL, 0) : rc;
}

int put_local(store *s, MDB_txn *txn, const char *name, const void *v, size_t vlen)
{
    MDB_val key = {strlen(name), (void *)name}, val = {vlen, (void *)v};
    return map_rc(mdb_put(txn, s->db[DB_META], &key, &val, 0));
}

int get_u64_value(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                  uint64_t *v)
{
    MDB_val key = {klen, (void *)k}, val;
    int rc = mdb_get(txn, s->db[db], &key, &val);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    if (val.mv_size != 8)
        return STORE_ERR;
    *v = get_u64(val.mv_data);
    return STORE_OK;
}

/* Hands out the next id of a counter in meta; ids start at `first`. */
int next_id(store *s, MDB_txn *txn, const char *name, uint64_t first, uint64_t *id)
{
    uint8_t buf[8];
    int rc = get_u64_value(s, txn, DB_META, name, strlen(name), id);
    if (rc == STORE_NOTFOUND)
        *id = first, rc = STORE_OK;
    if (rc != STORE_OK)
        return rc;
    put_u64(buf, *id + 1);
    return put_raw(s, txn, DB_META, name, strlen(name), buf, 8, 0);
}

/* Appends `audit` (may be NULL) in the change's own transaction, so an
 * admin action and its record land together or not at all. */
int with_audit(store *s, MDB_txn *txn, int rc, const store_audit *audit)
{
    uint64_t seq = 0;   /* set by next_id; GCC cannot tell */
    uint8_t key[8];
    if (rc != STORE_OK || !audit)
        return rc;
    rc = next_id(s, txn, "next_audit", 1, &seq);
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_AUDIT, key, audit_key(key, seq), &audit->base, MDB_NOOVERWRITE);
    return rc;
}

/* --- the token-hash key ring -------------------------------------------------------
 * meta "key" is the first key (id 0), as data directories always had it;
 * meta "keyring" is the ring once rotated: n x (id(4) key(32)), newest first. */

#define RING_ENTRY (4 + CRYPTO_KEY_BYTES)

static int read_ring(store *s, MDB_txn *txn, store_keyring *r)
{
    MDB_val k = {7, "keyring"}, v;
    memset(r, 0, sizeof *r);
    int rc = mdb_get(txn, s->db[DB_META], &k, &v);
    if (rc == MDB_SUCCESS) {
        if (v.mv_size == 0 || v.mv_size % RING_ENTRY || v.mv_size / RING_ENTRY > STORE_KEYS_MAX)
            return map_rc(MDB_CORRUPTED);
        r->n = v.mv_size / RING_ENTRY;
        for (size_t i = 0; i < r->n; i++) {
            const uint8_t *e = (const uint8_t *)v.mv_data + i * RING_ENTRY;
            r->keys[i].id = (uint32_t)e[0] << 24 | (uint32_t)e[1] << 16 | (uint32_t)e[2] << 8 | e[3];
            memcpy(r->keys[i].key, e + 4, CRYPTO_KEY_BYTES);
        }
        return STORE_OK;
    }
    if (rc != MDB_NOTFOUND)
        return map_rc(rc);
    k.mv_size = 3, k.mv_data = "key";
    rc = mdb_get(txn, s->db[DB_META], &k, &v);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    if (v.mv_size != CRYPTO_KEY_BYTES)
        return map_rc(MDB_CORRUPTED);
    r->n = 1;
    memcpy(r->keys[0].key, v.mv_data, CRYPTO_KEY_BYTES);
    return STORE_OK;
}

static int write_ring(store *s, MDB_txn *txn, const store_keyring *r)
{
    uint8_t buf[STORE_KEYS_MAX * RING_ENTRY];
    size_t n = r->n < STORE_KEYS_MAX ? r->n : STORE_KEYS_MAX;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = buf + i * RING_ENTRY;
        e[0] = (uint8_t)(r->keys[i].id >> 24), e[1] = (uint8_t)(r->keys[i].id >> 16);
        e[2] = (uint8_t)(r->keys[i].id >> 8), e[3] = (uint8_t)r->keys[i].id;
        memcpy(e + 4, r->keys[i].key, CRYPTO_KEY_BYTES);
    }
    int rc = put_raw(s, txn, DB_META, "keyring", 7, buf, n * RING_ENTRY, 0);
    crypto_wipe(buf, sizeof buf);
    return rc;
}

static void free_rings(store *s)
{
    for (struct kept_ring *k = s->rings, *next; k; k = next) {
        next = k->next;
        crypto_wipe(k, sizeof *k);
        free(k);
    }
    s->rings = NULL;
}

/* Makes r the ring readers see, unless it is the same. 1 if it changed
 * (0 also when out of memory: the ring before stays). */
static int publish_ring(store *s, const store_keyring *r)
{
    const store_keyring *cur = atomic_load(&s->ring);
    if (cur && cur->n == r->n && memcmp(cur->keys, r->keys, r->n * sizeof r->keys[0]) == 0)
        return 0;
    pthread_mutex_lock(&s->ring_lock);
    struct kept_ring *copy = malloc(sizeof *copy);
    if (copy) {
        copy->ring = *r;
        copy->next = s->rings;
        s->rings = copy;
        atomic_store(&s->ring, &copy->ring);
    }
    pthread_mutex_unlock(&s->ring_lock);
    return copy ? 1 : 0;
}

/* The ring as the environment holds it now, published (the cluster's
 * snapshot loader calls it after replacing meta). */
int read_token_key(store *s, MDB_txn *txn)
{
    store_keyring r;
    int rc = read_ring(s, txn, &r);
    if (rc == STORE_OK && !atomic_load(&s->ring) && !publish_ring(s, &r))
        rc = STORE_ERR;
    else if (rc == STORE_OK)
        publish_ring(s, &r);
    crypto_wipe(&r, sizeof r);
    return rc;
}

static int open_key(store *s, MDB_txn *txn)
{
    store_keyring r;
    int rc = read_ring(s, txn, &r);
    if (rc == STORE_NOTFOUND) {
        r.n = 1;
        r.keys[0].id = 0;
        crypto_random(r.keys[0].key, CRYPTO_KEY_BYTES);
        rc = put_raw(s, txn, DB_META, "key", 3, r.keys[0].key, CRYPTO_KEY_BYTES, 0);
    }
    if (rc == STORE_OK && !publish_ring(s, &r))
        rc = STORE_ERR;
    crypto_wipe(&r, sizeof r);
    return rc;
}

/* meta "key": the first token key. Rotation leaves it where it is (the
 * ring is "keyring"), and it is replicated: the same on every node of a
 * cluster for as long as the cluster lives. */
int store_first_key(store *s, uint8_t key[CRYPTO_KEY_BYTES])
{
    MDB_txn *txn;
    MDB_val k = {3, "key"}, v;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = map_rc(mdb_get(txn, s->db[DB_META], &k, &v));
    if (rc == STORE_OK && v.mv_size != CRYPTO_KEY_BYTES)
        rc = STORE_ERR;
    if (rc == STORE_OK)
        memcpy(key, v.mv_data, CRYPTO_KEY_BYTES);
    txn_abort(s, txn);
    return rc;
}

const store_keyring *store_keys(store *s)
{
    return atomic_load_explicit(&s->ring, memory_order_acquire);
}

const uint8_t *store_token_key(const store *s)
{
    return atomic_load_explicit(&((store *)s)->ring, memory_order_acquire)->keys[0].key;
}

uint32_t store_token_key_id(const store *s)
{
    return atomic_load_explicit(&((store *)s)->ring, memory_order_acquire)->keys[0].id;
}

const uint8_t *store_token_key_of(const store *s, uint32_t id)
{
    const store_keyring *r = atomic_load_explicit(&((store *)s)->ring, memory_order_acquire);
    for (size_t i = 0; i < r->n; i++)
        if (r->keys[i].id == id)
            return r->keys[i].key;
    return NULL;
}

int store_keys_refresh(store *s)
{
    MDB_txn *txn;
    store_keyring r;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = read_ring(s, txn, &r);
    txn_abort(s, txn);
    if (rc == STORE_OK)
        rc = publish_ring(s, &r);
    crypto_wipe(&r, sizeof r);
    return rc;
}

static uint64_t key_sessions(store *s, MDB_txn *txn, uint32_t id)
{
    uint8_t key[9];
    uint64_t n = 0;
    put_u64(key, id);
    key[8] = 'k';
    return get_u64_value(s, txn, DB_COUNTS, key, 9, &n) == STORE_OK ? n : 0;
}

/* Drops from r the keys but the newest that no session uses. */
static int retire_in(store *s, MDB_txn *txn, store_keyring *r)
{
    size_t kept = 1;
    for (size_t i = 1; i < r->n; i++)
        if (key_sessions(s, txn, r->keys[i].id) > 0)
            r->keys[kept++] = r->keys[i];
    int changed = kept != r->n;
    r->n = kept;
    return changed;
}

int keys_retire(store *s, MDB_txn *txn)
{
    store_keyring r;
    int rc = read_ring(s, txn, &r);
    if (rc == STORE_OK && r.n > 1 && retire_in(s, txn, &r)) {
        rc = write_ring(s, txn, &r);
        if (rc == STORE_OK)
            log_event(LOG_INFO, "key_retired", "store: token-hash keys in use: %zu (newest id %u)",
                      r.n, r.keys[0].id);
    }
    crypto_wipe(&r, sizeof r);
    return rc;
}

int token_key_rotate_txn(store *s, MDB_txn *txn, store_keyring *r, uint32_t *new_id)
{
    int rc = read_ring(s, txn, r);
    if (rc == STORE_OK && r->n == STORE_KEYS_MAX)
        retire_in(s, txn, r);
    if (rc == STORE_OK && r->n == STORE_KEYS_MAX)
        rc = STORE_FULL;
    if (rc == STORE_OK) {
        uint32_t id = 0;
        for (size_t i = 0; i < r->n; i++)
            id = r->keys[i].id > id ? r->keys[i].id : id;
        memmove(&r->keys[1], &r->keys[0], r->n * sizeof r->keys[0]);
        r->n++;
        r->keys[0].id = *new_id = id + 1;
        crypto_random(r->keys[0].key, CRYPTO_KEY_BYTES);
        rc = write_ring(s, txn, r);
    }
    return rc;
}

int store_rotate_token_key(store *s, uint32_t *new_id)
{
    MDB_txn *txn;
    store_keyring r;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = txn_end(txn, token_key_rotate_txn(s, txn, &r, new_id));
    if (rc == STORE_OK)
        publish_ring(s, &r);
    crypto_wipe(&r, sizeof r);
    return rc;
}

/* The tables keyed by a token's hash (sessions, store tokens, push tokens)
 * are compared a word first: the same order as LMDB's default (memcmp,
 * then the shorter key first), so mdb_dump and any other reader agree,
 * at a third of the default's cost per compare. A lookup makes a dozen
 * compares at a few hundred sessions, more as they grow (4 or 5 levels at
 * 10M): on every Verify. */
static __attribute__((noinline)) int compare_keys_rest(const MDB_val *a, const MDB_val *b)
{
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    int d = memcmp(a->mv_data, b->mv_data, n);
    return d ? d : a->mv_size < b->mv_size ? -1 : a->mv_size > b->mv_size;
}

/* The first words differ in all but the one compare that finds the key:
 * that way needs no stack frame, so the rest (a call) is out of line. */
static int compare_hash_keys(const MDB_val *a, const MDB_val *b)
{
    if (a->mv_size >= 8 && b->mv_size >= 8) {
        uint64_t x, y;
        memcpy(&x, a->mv_data, 8);
        memcpy(&y, b->mv_data, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        x = __builtin_bswap64(x);
        y = __builtin_bswap64(y);
#endif
        if (x != y)
            return x < y ? -1 : 1;
    }
    return compare_keys_rest(a, b);
}

/* Stamps a directory with this build's layout (LAYOUT_KEY), or finds it
 * was written by a later one: STORE_EXISTS, *found set. */
static int check_layout(store *s, MDB_txn *txn, uint64_t *found)
{
    uint8_t v[8];
    int rc = get_u64_value(s, txn, DB_META, LAYOUT_KEY, strlen(LAYOUT_KEY), found);
    if (rc == STORE_OK)
        return *found > STORE_LAYOUT ? STORE_EXISTS : STORE_OK;
    if (rc != STORE_NOTFOUND)
        return rc;
    *found = STORE_LAYOUT;
    put_u64(v, STORE_LAYOUT);
    return put_raw(s, txn, DB_META, LAYOUT_KEY, strlen(LAYOUT_KEY), v, 8, 0);
}

static int is_hash_keyed(int db)
{
    return db == DB_SESSIONS || db == DB_STORE_TOKENS || db == DB_PUSH_TOKENS;
}

int store_open(store **out, const char *dir, size_t mapsize, char *err, size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    MDB_envinfo info;
    MDB_txn *txn = NULL;
    int rc, dead = 0;

    if (!s || !dir) {
        snprintf(err, errlen, !s ? "out of memory" : "no data directory given");
        free(s);
        return STORE_ERR;
    }
    if (pthread_mutex_init(&s->ring_lock, NULL) != 0) {
        snprintf(err, errlen, "cannot create the store's lock");
        free(s);
        return STORE_ERR;
    }
    if (pthread_mutex_init(&s->writer, NULL) != 0) {
        snprintf(err, errlen, "cannot create the store's lock");
        pthread_mutex_destroy(&s->ring_lock);
        free(s);
        return STORE_ERR;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if ((rc = mdb_env_create(&s->env)) != 0 ||
        (rc = mdb_env_set_maxdbs(s->env, DB_COUNT)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, STORE_MAX_READERS)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, mapsize ? mapsize : STORE_MAPSIZE_DEFAULT)) != 0 ||
        (rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600)) != 0) {
        snprintf(err, errlen, "cannot open data directory %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    /* A reader slot left by a killed process would pin old pages forever. */
    mdb_reader_check(s->env, &dead);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
        snprintf(err, errlen, "cannot write to data directory %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    for (int i = 0; i < DB_COUNT; i++) {
        if ((rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->db[i])) != 0 ||
            (is_hash_keyed(i) && (rc = mdb_set_compare(txn, s->db[i], compare_hash_keys)) != 0)) {
            snprintf(err, errlen, "cannot open database %s: %s", db_names[i], mdb_strerror(rc));
            goto fail;
        }
    }
    /* On failure `fail` aborts the transaction: left open, it would hold
     * the environment's writer lock. A commit ends it either way. */
    uint64_t layout = 0;
    if ((rc = check_layout(s, txn, &layout)) != STORE_OK) {
        if (rc == STORE_EXISTS)
            snprintf(err, errlen, "data directory %s was written by a later tokend (data layout %llu; "
                     "this one reads layout %d): run that version, or restore a backup this one made",
                     dir, (unsigned long long)layout, STORE_LAYOUT);
        else
            snprintf(err, errlen, "cannot initialise data directory %s: cannot read its layout", dir);
        goto fail;
    }
    if (open_key(s, txn) != STORE_OK) {
        snprintf(err, errlen, "cannot initialise data directory %s: its token key is unreadable",
                 dir);
        goto fail;
    }
    if (counts_count_all(s, txn) != STORE_OK) {
        snprintf(err, errlen, "cannot initialise data directory %s: cannot count users", dir);
        goto fail;
    }
    if (apps_ensure_keys(s, txn) != STORE_OK) {
        snprintf(err, errlen, "cannot initialise data directory %s: cannot make the apps' keys",
                 dir);
        goto fail;
    }
    MDB_val idk = {10, "cluster_id"}, idv;
    s->replica = mdb_get(txn, s->db[DB_META], &idk, &idv) == MDB_SUCCESS;
    if (pwcosts_count_all(s, txn) != STORE_OK) {
        snprintf(err, errlen, "cannot initialise data directory %s: cannot count hash costs", dir);
        goto fail;
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0) {
        snprintf(err, errlen, "cannot initialise data directory %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    if ((rc = pthread_mutex_init(&s->resizing, NULL)) != 0) {
        snprintf(err, errlen, "cannot create the store's lock: %s", strerror(rc));
        goto fail;
    }
    mdb_env_info(s->env, &info);
    s->mapsize = info.me_mapsize;
    s->serial = next_serial++;
    if ((rc = lookalikes_index(s)) != STORE_OK) {
        snprintf(err, errlen, "cannot initialise data directory %s: cannot index look-alike "
                 "names: %s", dir, store_strerror(rc));
        store_close(s);
        return STORE_ERR;
    }
    *out = s;
    return STORE_OK;
fail:
    if (txn)
        mdb_txn_abort(txn);
    if (s->env)
        mdb_env_close(s->env);
    free_rings(s);
    pthread_mutex_destroy(&s->ring_lock);
    pthread_mutex_destroy(&s->writer);
    free(s);
    return STORE_ERR;
}

void store_close(store *s)
{
    if (!s)
        return;
    store_cluster_leave(s);
    memory_stop(s);
    wset_free(&s->ws);
    /* Every thread's kept transaction of this store (none is in use: a
     * store is closed once nothing uses it). */
    pthread_mutex_lock(&slots_lock);
    while (s->readers)
        unlink_slot(s->readers);
    pthread_mutex_unlock(&slots_lock);
    mdb_env_close(s->env);
    pthread_mutex_destroy(&s->resizing);
    free_rings(s);
    pthread_mutex_destroy(&s->ring_lock);
    pthread_mutex_destroy(&s->writer);
    free(s);
}

uint64_t store_serial(const store *s)
{
    return s->serial;
}

int get_one(store *s, int db, const void *k, size_t klen, const ProtobufCMessageDescriptor *desc,
            void **out)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_msg(s, txn, db, k, klen, desc, out);
    txn_abort(s, txn);
    return rc;
}

int scan_prefix(store *s, MDB_txn *txn, int db, uint64_t id, scan_fn fn, void *arg)
{
    uint8_t prefix[8];
    put_u64(prefix, id);
    return scan_from(s, txn, db, prefix, 8, fn, arg);
}

int scan_from(store *s, MDB_txn *txn, int db, const uint8_t *from, size_t from_len, scan_fn fn,
              void *arg)
{
    MDB_cursor *cur;
    uint8_t prefix[8], key[KEY_MAX];
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->db[db], &cur);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    memcpy(prefix, from, 8);
    memcpy(key, from, from_len);
    k.mv_size = from_len, k.mv_data = key;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && k.mv_size >= 8 && memcmp(k.mv_data, prefix, 8) == 0) {
        size_t len = k.mv_size;
        memcpy(key, k.mv_data, len);
        int r = fn(s, txn, key, len, arg);
        if (r != 0) {
            mdb_cursor_close(cur);
            return r > 0 ? STORE_OK : r;  /* > 0: fn is done */
        }
        /* fn may have deleted: find the key after this one afresh. */
        k.mv_size = len, k.mv_data = key;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_SUCCESS && k.mv_size == len && memcmp(k.mv_data, key, len) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND || rc == MDB_SUCCESS ? STORE_OK : map_rc(rc);
}

int store_audit_list(store *s, store_audit_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    if ((rc = map_rc(mdb_cursor_open(txn, s->db[DB_AUDIT], &cur))) == STORE_OK) {
        int r;
        for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == MDB_SUCCESS;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            store_audit *e = tokend__v1__store__audit_entry__unpack(NULL, v.mv_size, v.mv_data);
            if (e) {
                fn(e, arg);
                protobuf_c_message_free_unpacked(&e->base, NULL);
            }
        }
        mdb_cursor_close(cur);
        rc = r == MDB_NOTFOUND ? STORE_OK : map_rc(r);
    }
    txn_abort(s, txn);
    return rc;
}

/* --- counts for metrics ------------------------------------------------------ */

static size_t count_key(uint8_t key[9], uint64_t app_id, char kind)
{
    put_u64(key, app_id);
    key[8] = (uint8_t)kind;
    return 9;
}

int count_add(store *s, MDB_txn *txn, uint64_t app_id, char kind, int delta)
{
    uint8_t key[9], buf[8];
    uint64_t n = 0;
    size_t klen = count_key(key, app_id, kind);
    int rc = get_u64_value(s, txn, DB_COUNTS, key, klen, &n);
    if (rc != STORE_OK && rc != STORE_NOTFOUND)
        return rc;
    n = delta < 0 && n < (uint64_t)-delta ? 0 : n + (uint64_t)(int64_t)delta;
    put_u64(buf, n);
    return put_raw(s, txn, DB_COUNTS, key, klen, buf, 8, 0);
}

int counts_count_all(store *s, MDB_txn *txn)
{
    MDB_val mk = {13, "counts_filled"}, mv, k, v;
    MDB_cursor *cur;
    int rc = mdb_get(txn, s->db[DB_META], &mk, &mv);
    if (rc != MDB_NOTFOUND)
        return map_rc(rc);
    int r = STORE_OK;
    if ((rc = mdb_cursor_open(txn, s->db[DB_USERS], &cur)) != MDB_SUCCESS)
        return map_rc(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS && r == STORE_OK;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        store_user *u = tokend__v1__store__user__unpack(NULL, v.mv_size, v.mv_data);
        if (u) {
            r = count_add(s, txn, u->app_id, 'u', +1);
            protobuf_c_message_free_unpacked(&u->base, NULL);
        }
    }
    mdb_cursor_close(cur);
    if (r != STORE_OK || (rc != MDB_NOTFOUND && rc != MDB_SUCCESS))
        return r != STORE_OK ? r : map_rc(rc);
    if ((rc = mdb_cursor_open(txn, s->db[DB_SESSIONS], &cur)) != MDB_SUCCESS)
        return map_rc(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS && r == STORE_OK;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        store_session *ss = tokend__v1__store__session__unpack(NULL, v.mv_size, v.mv_data);
        if (ss) {
            r = count_add(s, txn, ss->app_id, ss->admin ? 'a' : 's', +1);
            if (r == STORE_OK)
                r = count_add(s, txn, ss->key_id, 'k', +1);
            protobuf_c_message_free_unpacked(&ss->base, NULL);
        }
    }
    mdb_cursor_close(cur);
    if (r != STORE_OK || (rc != MDB_NOTFOUND && rc != MDB_SUCCESS))
        return r != STORE_OK ? r : map_rc(rc);
    return put_raw(s, txn, DB_META, "counts_filled", 13, "1", 1, 0);
}

int store_app_counts(store *s, store_count_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t app = 0, c[3] = {0};
    int have = 0, r;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    if ((rc = map_rc(mdb_cursor_open(txn, s->db[DB_COUNTS], &cur))) == STORE_OK) {
        for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == MDB_SUCCESS;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != 9 || v.mv_size != 8 || ((char *)k.mv_data)[8] == 'k')
                continue;
            uint64_t id = get_u64(k.mv_data);
            if (have && id != app) {
                fn(app, c[0], c[1], c[2], arg);
                memset(c, 0, sizeof c);
            }
            app = id, have = 1;
            char kind = ((char *)k.mv_data)[8];
            c[kind == 'u' ? 0 : kind == 's' ? 1 : 2] = get_u64(v.mv_data);
        }
        if (have)
            fn(app, c[0], c[1], c[2], arg);
        mdb_cursor_close(cur);
    }
    txn_abort(s, txn);
    return rc;
}

typedef struct {
    unsigned n;
} reader_count;

static int count_reader(const char *msg, void *ctx)
{
    reader_count *rc = ctx;
    /* One line per slot in use after a header line; "(no active readers)" alone. */
    if (strstr(msg, "pid") == NULL && strstr(msg, "no active") == NULL)
        rc->n++;
    return 0;
}

int store_stats_get(store *s, store_stats *out)
{
    MDB_envinfo info;
    reader_count readers = {0};
    memset(out, 0, sizeof *out);
    if (store_map_usage(s, &out->map_used, &out->map_size) != 0 || mdb_env_info(s->env, &info) != 0)
        return STORE_ERR;
    out->map_resident = memory_resident(s);
    out->readers_max = info.me_maxreaders;
    mdb_reader_list(s->env, count_reader, &readers);
    out->readers_used = readers.n;
    return STORE_OK;
}

/* --- backups ---------------------------------------------------------------------- */

static int sync_dir_of(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int store_backup(store *s, const char *out, char *err, size_t errlen)
{
    char tmp[4096];
    struct stat st;
    if (stat(out, &st) == 0) {
        snprintf(err, errlen, "%s exists: remove it or give another --out", out);
        return STORE_EXISTS;
    }
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.partial", out) >= sizeof tmp) {
        snprintf(err, errlen, "the path %s is too long", out);
        return STORE_ERR;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return STORE_ERR;
    }
    /* The copy runs in one read transaction of its own: a snapshot of the
     * last commit, while the server's writers go on. */
    gate_enter(s);
    int rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    gate_leave(s);
    if (rc == 0 && fsync(fd) != 0)
        rc = errno;
    if (close(fd) != 0 && rc == 0)
        rc = errno;
    if (rc == 0 && rename(tmp, out) != 0)
        rc = errno;
    if (rc != 0) {
        snprintf(err, errlen, "cannot write the backup %s: %s", out, mdb_strerror(rc));
        unlink(tmp);
        return rc == ENOSPC ? STORE_FULL : STORE_ERR;
    }
    sync_dir_of(out);
    return STORE_OK;
}

/* A tokend backup: an LMDB file whose meta database holds the token key. */
static int check_backup(const char *from, char *err, size_t errlen)
{
    MDB_env *env;
    MDB_txn *txn = NULL;
    MDB_dbi meta;
    MDB_val k = {3, "key"}, v;
    int rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, DB_COUNT);
    if (rc == 0)
        rc = mdb_env_open(env, from, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", 0, &meta);
    if (rc == 0)
        rc = mdb_get(txn, meta, &k, &v);
    if (rc == 0 && v.mv_size != CRYPTO_KEY_BYTES)
        rc = MDB_CORRUPTED;
    /* A backup a later build made: refused before anything is replaced. */
    uint64_t layout = 0;
    MDB_val lk = {strlen(LAYOUT_KEY), LAYOUT_KEY}, lv;
    if (rc == 0 && mdb_get(txn, meta, &lk, &lv) == 0)
        layout = lv.mv_size == 8 ? get_u64(lv.mv_data) : UINT64_MAX;
    if (txn)
        mdb_txn_abort(txn);
    mdb_env_close(env);
    if (rc != 0)
        snprintf(err, errlen, "%s is not a tokend backup (%s)", from, mdb_strerror(rc));
    else if (layout > STORE_LAYOUT)
        snprintf(err, errlen, "%s was made by a later tokend (data layout %llu; this one reads "
                 "layout %d): restore it with that version", from, (unsigned long long)layout,
                 STORE_LAYOUT);
    return rc == 0 && layout <= STORE_LAYOUT ? 0 : -1;
}

static int copy_file(const char *from, const char *to, char *err, size_t errlen)
{
    char buf[1 << 16];
    int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, rc = -1;
    if (in < 0 || (out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        snprintf(err, errlen, "cannot copy %s to %s: %s", from, to, strerror(errno));
        goto done;
    }
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto io;
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                goto io;
            off += w;
        }
    }
    if (fsync(out) != 0)
        goto io;
    rc = 0;
    goto done;
io:
    snprintf(err, errlen, "cannot copy %s to %s: %s", from, to, strerror(errno));
done:
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) != 0 && rc == 0) {
        snprintf(err, errlen, "cannot copy %s to %s: %s", from, to, strerror(errno));
        rc = -1;
    }
    return rc;
}

/* The lock file's reader table and transaction number are the old data's,
 * and a server that began to start meanwhile waits on this very file (a
 * new one would leave it holding the old: it would read the new data by
 * the old transaction number, maybe as the empty tree, and write over it).
 * So it is set up afresh in place: opened here, where the lock is already
 * this process's own, LMDB takes it as the first opener and rebuilds it
 * from the new data. Closing the environment releases the lock. */
static int reset_lock_file(const char *dir, char *err, size_t errlen)
{
    MDB_env *env = NULL;
    int rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, DB_COUNT);
    if (rc == 0)   /* the lock file's size is the first opener's: the server's own */
        rc = mdb_env_set_maxreaders(env, STORE_MAX_READERS);
    if (rc == 0)
        rc = mdb_env_open(env, dir, MDB_NOTLS, 0600);
    if (env)
        mdb_env_close(env);
    /* A failed open may have dropped the lock already (closing its lock
     * file's descriptor): the file is not removed from under whoever took
     * it then. */
    if (rc != 0)
        snprintf(err, errlen, "the backup is in place, but its lock file could not be set up (%s): "
                 "stop any server started meanwhile, remove %s/lock.mdb, then start it",
                 mdb_strerror(rc), dir);
    return rc == 0 ? 0 : -1;
}

int store_restore(const char *from, const char *dir, int force, char *err, size_t errlen)
{
    char lock[4096], data[4096], tmp[4096];
    if ((size_t)snprintf(lock, sizeof lock, "%s/lock.mdb", dir) >= sizeof lock ||
        (size_t)snprintf(data, sizeof data, "%s/data.mdb", dir) >= sizeof data ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/data.mdb.restoring", dir) >= sizeof tmp) {
        snprintf(err, errlen, "the path %s is too long", dir);
        return STORE_ERR;
    }
    if (check_backup(from, err, errlen) != 0)
        return STORE_ERR;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
        return STORE_ERR;
    }
    /* Every process with the environment open holds a shared lock on byte 0
     * of lock.mdb (LMDB's own); an exclusive one is ours only if none does,
     * and keeps a starting server waiting until the restore is done. */
    int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", lock, strerror(errno));
        return STORE_ERR;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    if (fcntl(lfd, F_SETLK, &fl) != 0) {
        struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        long pid = fcntl(lfd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK ? (long)who.l_pid : 0;
        snprintf(err, errlen,
                 "%s is in use (process %ld has it open: a server or a command): stop it first; "
                 "--force does not override this", dir, pid);
        close(lfd);
        return STORE_EXISTS;
    }
    int rc = STORE_OK;
    DIR *d = opendir(dir);
    int others = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "lock.mdb"))
            others++;
    if (d)
        closedir(d);
    if (others && !force) {
        snprintf(err, errlen, "%s is not empty: restore into a new directory, or give --force "
                 "to replace its data", dir);
        rc = STORE_EXISTS;
    } else if (copy_file(from, tmp, err, errlen) != 0) {
        unlink(tmp);
        rc = STORE_ERR;
    } else if (rename(tmp, data) != 0) {
        snprintf(err, errlen, "cannot put %s in place: %s", data, strerror(errno));
        unlink(tmp);
        rc = STORE_ERR;
    } else {
        sync_dir_of(data);
        if (reset_lock_file(dir, err, errlen) != 0)
            rc = STORE_ERR;
    }
    close(lfd);  /* releases the lock (if reset_lock_file has not) */
    return rc;
}
