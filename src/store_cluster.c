/* store_cluster.c - the store in cluster mode: the LMDB side of what
 * cluster.c does in PostgreSQL.
 *
 * A write transaction (txn_begin without MDB_RDONLY) first opens a
 * PostgreSQL transaction holding the cluster's write lock, then catches
 * the local replica up to the newest change under that lock, so the
 * read-modify-write of the topic files (store_users.c, store_sessions.c,
 * store_devices.c, unchanged) sees what every node wrote. Their puts and
 * deletes are recorded (store.c: put_raw, put_msg, del_raw) into a write
 * set; txn_end sends it to PostgreSQL as one change and commits there, and
 * only then commits LMDB, with the change's sequence number in the same
 * LMDB transaction. PostgreSQL failing aborts both: nothing is written
 * anywhere and the caller gets STORE_UNAVAILABLE. A crash between the two
 * commits is healed by the feed, which finds the change after this node's
 * stored sequence and applies it like any other.
 *
 * The node's own bookkeeping lives in meta and is never replicated:
 *   cluster_seq  the last change applied here (8 bytes, big-endian)
 *   cluster_id   the cluster this directory is a replica of
 * and so is the look-alike index of user names (store_internal.h): each
 * node makes it from the users it holds, as it applies their changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cluster.h"
#include "store_internal.h"

#define SEQ_KEY "cluster_seq"
#define ID_KEY "cluster_id"
#define ID_MAX 64
#define RC_BEHIND 100   /* txn_begin_once: the changes needed were pruned */
#define CATCH_UP_BATCH 500   /* changes per LMDB transaction of a write's catch-up */

uint64_t local_seq(store *s, MDB_txn *txn)
{
    uint64_t v = 0;
    get_u64_value(s, txn, DB_META, SEQ_KEY, strlen(SEQ_KEY), &v);
    return v;
}

static int set_seq(store *s, MDB_txn *txn, uint64_t seq)
{
    uint8_t v[8];
    put_u64(v, seq);
    return put_local(s, txn, SEQ_KEY, v, 8);
}

static void local_id(store *s, MDB_txn *txn, char id[ID_MAX])
{
    MDB_val k = {strlen(ID_KEY), ID_KEY}, v;
    id[0] = '\0';
    if (mdb_get(txn, s->db[DB_META], &k, &v) == MDB_SUCCESS && v.mv_size < ID_MAX) {
        memcpy(id, v.mv_data, v.mv_size);
        id[v.mv_size] = '\0';
    }
}

/* The node's own keys: not part of any write set or snapshot. */
static int is_local_key(int db, const uint8_t *key, size_t klen)
{
    if (store_look_key(db, key, klen))
        return 1;
    return db == DB_META && ((klen == strlen(SEQ_KEY) && memcmp(key, SEQ_KEY, klen) == 0) ||
                             (klen == strlen(ID_KEY) && memcmp(key, ID_KEY, klen) == 0) ||
                             (klen == strlen(STORE_LOOK_MARK) && memcmp(key, STORE_LOOK_MARK, klen) == 0));
}

/* --- applying changes ------------------------------------------------------------- */

typedef struct {
    store *s;
    MDB_txn *txn;
    int whole;   /* a snapshot's rows: indexed all at once at its end */
} apply_ctx;

static int apply_op(void *arg, int op, int db, const uint8_t *key, size_t klen,
                    const uint8_t *val, size_t vlen)
{
    apply_ctx *a = arg;
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    if (db >= DB_COUNT || is_local_key(db, key, klen) || !klen)
        return STORE_ERR;
    int rc = db == DB_USERS && !a->whole
                 ? lookalikes_applying(a->s, a->txn, key, klen, val, vlen, op == WSET_DEL)
                 : STORE_OK;
    if (rc != STORE_OK)
        return rc;
    rc = op == WSET_DEL ? mdb_del(a->txn, a->s->db[db], &k, NULL)
                            : mdb_put(a->txn, a->s->db[db], &k, &v, 0);
    return rc == MDB_NOTFOUND && op == WSET_DEL ? STORE_OK : map_rc(rc);
}

int apply_wset(store *s, MDB_txn *txn, const uint8_t *ops, size_t len)
{
    apply_ctx a = {s, txn};
    if (wset_check(ops, len, DB_COUNT) != 0) {
        fprintf(stderr, "tokend: cluster: a malformed change in the log\n");
        return STORE_ERR;
    }
    return wset_each(ops, len, apply_op, &a);
}

typedef struct {
    store *s;
    MDB_txn *txn;
    uint64_t seq;
    int rc;
} catch_up;

static int catch_up_one(void *arg, uint64_t seq, const uint8_t *ops, size_t len)
{
    catch_up *c = arg;
    c->rc = apply_wset(c->s, c->txn, ops, len);
    if (c->rc != STORE_OK)
        return CLUSTER_STOP;
    c->seq = seq;
    return CLUSTER_OK;
}

/* Applies the changes up to `last` on c->txn, which is left open (the
 * write's own). Far behind, each CATCH_UP_BATCH is committed on its own
 * transaction, so the map's growth before each begin sees it coming; a
 * batch the map has no room for is applied again once it was grown. */
static int catch_up_to(catch_up *c, struct cluster_conn *cc, uint64_t last)
{
    int grown = 0;
    while (c->seq < last) {
        uint64_t upto = last - c->seq > CATCH_UP_BATCH ? c->seq + CATCH_UP_BATCH : last;
        c->rc = STORE_OK;
        int r = cluster_write_fetch(cc, c->seq, upto, catch_up_one, c);
        int rc = r == CLUSTER_OK ? STORE_OK : r == CLUSTER_STOP ? c->rc
               : r == CLUSTER_BEHIND ? RC_BEHIND : STORE_UNAVAILABLE;
        if (rc == STORE_OK && c->seq < last)
            rc = set_seq(c->s, c->txn, c->seq);
        if (rc == STORE_OK && c->seq == last)
            return STORE_OK;
        if (rc == STORE_OK)
            rc = local_txn_commit(c->s, c->txn);
        else
            txn_abort(c->s, c->txn);
        c->txn = NULL;
        if (rc == STORE_FULL && grown++ < 12 && store_grow(c->s) == STORE_OK)
            rc = STORE_OK;   /* that batch again, with room */
        if (rc != STORE_OK)
            return rc;
        if ((rc = local_txn_begin(c->s, 0, &c->txn)) != STORE_OK) {
            c->txn = NULL;
            return rc;
        }
        c->seq = local_seq(c->s, c->txn);
    }
    return STORE_OK;
}

/* --- the write transaction -------------------------------------------------------- */

static int resync(store *s);
static int txn_begin_once(store *s, MDB_txn **txn);

int cluster_txn_begin(store *s, MDB_txn **txn)
{
    for (int attempt = 0;; attempt++) {
        int rc = txn_begin_once(s, txn);
        /* The changes this replica needs were pruned from the log (a CLI on a
         * directory left alone for long, or a node whose feed is behind):
         * reload a snapshot, then try once more. */
        if (rc != RC_BEHIND || attempt > 0)
            return rc == RC_BEHIND ? STORE_UNAVAILABLE : rc;
        fprintf(stderr, "tokend: cluster: this replica is behind the change log's horizon: "
                        "loading a snapshot before the write\n");
        if (resync(s) != STORE_OK)
            return STORE_UNAVAILABLE;
    }
}

static int txn_begin_once(store *s, MDB_txn **txn)
{
    struct cluster_conn *cc;
    uint64_t last;
    pthread_mutex_lock(&s->writer);
    if (cluster_write_begin(s->cluster, &cc, &last) != CLUSTER_OK) {
        pthread_mutex_unlock(&s->writer);
        return STORE_UNAVAILABLE;
    }
    int rc = local_txn_begin(s, 0, txn);
    pthread_mutex_unlock(&s->writer);
    if (rc != STORE_OK) {
        cluster_write_abort(cc);
        return rc;
    }
    catch_up c = {s, *txn, local_seq(s, *txn), STORE_OK};
    if (last < c.seq) {
        fprintf(stderr, "tokend: cluster: this replica has applied change %llu but the cluster's "
                "newest is %llu: was the database restored? Writes are refused; restart this "
                "node: it then reloads the database's snapshot\n",
                (unsigned long long)c.seq, (unsigned long long)last);
        rc = STORE_ERR;
    } else if (last > c.seq) {
        rc = catch_up_to(&c, cc, last);
        *txn = c.txn;
    }
    if (rc != STORE_OK) {
        if (*txn)
            txn_abort(s, *txn);
        cluster_write_abort(cc);
        return rc;
    }
    s->wtxn = *txn;
    s->wconn = cc;
    s->wseq = last;
    wset_reset(&s->ws);
    return STORE_OK;
}

int cluster_txn_end(store *s, MDB_txn *txn, int rc)
{
    struct cluster_conn *cc = s->wconn;
    uint64_t seq = s->wseq;
    s->wtxn = NULL;
    s->wconn = NULL;
    if (rc != STORE_OK) {
        txn_abort(s, txn);
        cluster_write_abort(cc);
        return rc;
    }
    if (s->ws.n == 0) {
        cluster_write_abort(cc);  /* nothing to tell: keep only the catch-up */
    } else {
        int r = cluster_write_commit(cc, s->ws.buf, s->ws.len, &seq);
        if (r != CLUSTER_OK) {
            txn_abort(s, txn);
            return r == CLUSTER_EXISTS ? STORE_EXISTS : STORE_UNAVAILABLE;
        }
    }
    rc = set_seq(s, txn, seq);
    if (rc != STORE_OK) {
        txn_abort(s, txn);
        return s->ws.n ? STORE_OK : rc;  /* committed in the cluster: the feed applies it */
    }
    rc = local_txn_commit(s, txn);
    if (rc != STORE_OK && s->ws.n) {
        fprintf(stderr, "tokend: cluster: change %llu committed in the cluster but not locally "
                "(%s): the feed applies it\n", (unsigned long long)seq, store_strerror(rc));
        return STORE_OK;
    }
    return rc;
}

/* --- the feed's hooks --------------------------------------------------------------- */

static uint64_t hook_applied(void *arg)
{
    store *s = arg;
    MDB_txn *txn;
    uint64_t seq = 0;
    if (local_txn_begin(s, MDB_RDONLY, &txn) == STORE_OK) {
        seq = local_seq(s, txn);
        txn_abort(s, txn);
    }
    return seq;
}

static int hook_apply(void *arg, size_t n, const uint64_t *seqs, const uint8_t *const *ops,
                      const size_t *lens)
{
    store *s = arg;
    /* A batch may need more room than the map has (the growth before each
     * begin only looks at what is used): grown, then applied again. */
    for (int grown = 0;; grown++) {
        MDB_txn *txn;
        if (local_txn_begin(s, 0, &txn) != STORE_OK)
            return CLUSTER_DOWN;
        /* A local write may have applied some meanwhile: skip those. */
        uint64_t mine = local_seq(s, txn);
        int rc = STORE_OK;
        for (size_t i = 0; i < n && rc == STORE_OK; i++) {
            if (seqs[i] <= mine)
                continue;
            if (seqs[i] != mine + 1) {
                rc = STORE_ERR;
                break;
            }
            rc = apply_wset(s, txn, ops[i], lens[i]);
            mine = seqs[i];
        }
        if (rc == STORE_OK)
            rc = set_seq(s, txn, mine);
        if (rc == STORE_OK)
            rc = local_txn_commit(s, txn);
        else
            txn_abort(s, txn);
        if (rc != STORE_FULL || grown == 12 || store_grow(s) != STORE_OK)
            return rc == STORE_OK ? CLUSTER_OK : CLUSTER_DOWN;
    }
}

/* A snapshot replaces every replicated record in one LMDB transaction. */
typedef struct {
    store *s;
    MDB_txn *txn;
    char id[ID_MAX];
    uint64_t seq;
    size_t rows;
    int force;      /* replace even a replica that is ahead (the database was restored) */
    int skip;       /* the replica already has this snapshot's changes: keep it */
    int full;       /* the map filled up: it was grown, load it again */
} snap_ctx;

static int snap_begin(void *arg, const char *id, uint64_t seq)
{
    snap_ctx *c = arg;
    c->skip = 0;
    c->full = 0;
    pthread_mutex_lock(&c->s->writer);   /* until snap_end: see store.writer */
    if (local_txn_begin(c->s, 0, &c->txn) != STORE_OK) {
        pthread_mutex_unlock(&c->s->writer);
        return -1;
    }
    /* Two loaders may race (the feed and a write of this node, or a command
     * on the same directory): LMDB serialises them, and the later one must
     * not take the replica back to an older change. */
    char mine[ID_MAX];
    local_id(c->s, c->txn, mine);
    if (!c->force && strcmp(mine, id) == 0 && local_seq(c->s, c->txn) >= seq) {
        txn_abort(c->s, c->txn);
        pthread_mutex_unlock(&c->s->writer);
        c->txn = NULL;
        c->skip = 1;
        return 0;
    }
    for (int i = 0; i < DB_COUNT; i++)
        if (mdb_drop(c->txn, c->s->db[i], 0) != MDB_SUCCESS) {
            txn_abort(c->s, c->txn);
            pthread_mutex_unlock(&c->s->writer);
            c->txn = NULL;
            return -1;
        }
    snprintf(c->id, sizeof c->id, "%s", id);
    c->seq = seq;
    c->rows = 0;
    return 0;
}

static int snap_row(void *arg, int db, const uint8_t *key, size_t klen, const uint8_t *val,
                    size_t vlen)
{
    snap_ctx *c = arg;
    apply_ctx a = {c->s, c->txn, 1};
    if (c->skip)
        return 0;
    c->rows++;
    int rc = apply_op(&a, WSET_PUT, db, key, klen, val, vlen);
    c->full |= rc == STORE_FULL;
    return rc == STORE_OK ? 0 : -1;
}

static int snap_end(void *arg, int ok)
{
    snap_ctx *c = arg;
    if (c->skip)
        return ok ? 0 : -1;
    if (!c->txn)
        return -1;
    int rc = ok ? set_seq(c->s, c->txn, c->seq) : STORE_ERR;
    if (rc == STORE_OK)
        rc = put_local(c->s, c->txn, ID_KEY, c->id, strlen(c->id));
    /* The cluster's token key came with the snapshot. */
    if (rc == STORE_OK)
        rc = read_token_key(c->s, c->txn);
    /* Its counts of hash costs per app may be of some apps only (those
     * written since a build before them): counted here, as at open. Its
     * look-alike index holds only the entries written through the cluster
     * (nodes index older accounts on their own): made again. */
    if (rc == STORE_OK)
        rc = pwcosts_count_all(c->s, c->txn);
    if (rc == STORE_OK)
        rc = lookalikes_index_txn(c->s, c->txn);
    c->full |= rc == STORE_FULL;
    if (rc != STORE_OK) {
        txn_abort(c->s, c->txn);
        pthread_mutex_unlock(&c->s->writer);
        c->txn = NULL;
        /* A snapshot is one transaction, which the map's growth before
         * each write cannot foresee (a reload holds the old pages and the
         * new): grown now, the next load (the caller's, or the feed's
         * retry) finds room. */
        if (c->full)
            store_grow(c->s);
        return -1;
    }
    MDB_txn *txn = c->txn;
    c->txn = NULL;
    rc = local_txn_commit(c->s, txn);
    pthread_mutex_unlock(&c->s->writer);
    if (rc == STORE_FULL) {
        c->full = 1;
        store_grow(c->s);
    }
    if (rc != STORE_OK)
        return -1;
    fprintf(stderr, "tokend: cluster: loaded a snapshot of %zu records at change %llu\n", c->rows,
            (unsigned long long)c->seq);
    return 0;
}

/* --- joining, init ---------------------------------------------------------------- */

static int holds_data(store *s, MDB_txn *txn)
{
    MDB_stat a, u;
    return mdb_stat(txn, s->db[DB_APPS], &a) != MDB_SUCCESS ||
           mdb_stat(txn, s->db[DB_USERS], &u) != MDB_SUCCESS || a.ms_entries || u.ms_entries;
}

static snap_ctx *snap_hooks(store *s, cluster_snapshot_hooks *h)
{
    snap_ctx *c = calloc(1, sizeof *c);
    if (c)
        c->s = s;
    h->arg = c;
    h->begin = snap_begin;
    h->row = snap_row;
    h->end = snap_end;
    return c;
}

/* Replaces the replica with a snapshot now, on a connection of the pool
 * (the write path's; the feed uses its own). force: even if it is ahead. */
/* A snapshot, loaded again after each growth of the map it filled (up to
 * 2^12 times its size). */
static int snapshot_growing(cluster *cl, const cluster_snapshot_hooks *h, snap_ctx *sc)
{
    for (int grown = 0;; grown++) {
        sc->full = 0;   /* a load that fails before it begins leaves it as it was */
        if (cluster_snapshot(cl, h) == CLUSTER_OK)
            return STORE_OK;
        if (!sc->full || grown == 12)
            return sc->full ? STORE_FULL : STORE_UNAVAILABLE;
    }
}

static int load_snapshot(store *s, cluster *cl, int force)
{
    cluster_snapshot_hooks h;
    snap_ctx *sc = snap_hooks(s, &h);
    if (!sc)
        return STORE_ERR;
    sc->force = force;
    int rc = snapshot_growing(cl, &h, sc);
    free(sc);
    return rc;
}

static int resync(store *s)
{
    return load_snapshot(s, s->cluster, 0);
}

static int join(store *s, cluster *cl, int feed, char *err, size_t errlen)
{
    char id[ID_MAX], mine[ID_MAX];
    uint64_t last;
    int kv_empty, data;
    MDB_txn *txn;
    if (cluster_check(cl, err, errlen) != CLUSTER_OK)
        return STORE_UNAVAILABLE;
    if (cluster_state(cl, id, sizeof id, &last, &kv_empty) != CLUSTER_OK) {
        snprintf(err, errlen, "cannot read the cluster's state");
        return STORE_UNAVAILABLE;
    }
    if (local_txn_begin(s, MDB_RDONLY, &txn) != STORE_OK) {
        snprintf(err, errlen, "cannot read the data directory");
        return STORE_ERR;
    }
    local_id(s, txn, mine);
    data = holds_data(s, txn);
    uint64_t seq = local_seq(s, txn);
    txn_abort(s, txn);
    if (mine[0] && strcmp(mine, id) != 0) {
        snprintf(err, errlen, "the data directory is a replica of another cluster (%s, this "
                 "database is %s): give this node an empty directory", mine, id);
        return STORE_ERR;
    }
    if (!mine[0] && data) {
        snprintf(err, errlen, "the data directory holds single-node data: `tokend cluster init` "
                 "copies it into an empty cluster; a node joining a cluster starts from an "
                 "empty directory");
        return STORE_ERR;
    }
    if (!mine[0] && kv_empty) {
        snprintf(err, errlen, "the cluster holds no data yet: run `tokend cluster init` first");
        return STORE_ERR;
    }
    cluster_snapshot_hooks h;
    snap_ctx *sc = snap_hooks(s, &h);
    if (!sc) {
        snprintf(err, errlen, "out of memory");
        return STORE_ERR;
    }
    int loaded = !mine[0] ? snapshot_growing(cl, &h, sc) : STORE_OK;
    if (loaded != STORE_OK) {
        free(sc);
        snprintf(err, errlen, "cannot load the cluster's snapshot%s",
                 loaded == STORE_FULL ? ": the disk or the data directory's map is full" : "");
        return loaded;
    }
    /* A replica ahead of its database: the database was restored from a
     * dump (or failed over and lost commits). PostgreSQL is the system of
     * record: the replica is replaced by what it holds. */
    if (mine[0] && seq > last) {
        fprintf(stderr, "tokend: cluster: this replica has applied change %llu but the cluster's "
                "newest is %llu (was the database restored?): the database is the system of "
                "record, loading its snapshot\n", (unsigned long long)seq,
                (unsigned long long)last);
        if (load_snapshot(s, cl, 1) != STORE_OK) {
            free(sc);
            snprintf(err, errlen, "cannot load the cluster's snapshot");
            return STORE_UNAVAILABLE;
        }
    }
    s->cluster = cl;
    if (feed) {
        cluster_feed_hooks fh = {s, hook_applied, hook_apply};
        /* The snapshot context lives as long as the feed (a far-behind
         * node loads a snapshot again). */
        if (cluster_feed_start(cl, &fh, &h) != CLUSTER_OK) {
            s->cluster = NULL;
            free(sc);
            snprintf(err, errlen, "cannot start the feed thread");
            return STORE_ERR;
        }
        s->snap = sc;
    } else {
        free(sc);
    }
    return STORE_OK;
}

int store_cluster_join(store *s, const char *url, int flags, char *err, size_t errlen)
{
    cluster *cl;
    if (cluster_open(&cl, url, err, errlen) != CLUSTER_OK)
        return STORE_UNAVAILABLE;
    int rc = join(s, cl, flags & STORE_CLUSTER_FEED, err, errlen);
    if (rc != STORE_OK)
        cluster_close(cl);
    return rc;
}

/* Every replicated record of the directory, one at a time, for the push. */
typedef struct {
    store *s;
    MDB_txn *txn;
    MDB_cursor *cur;
    int db;
} walk_ctx;

static int next_row(void *arg, int *db, const uint8_t **key, size_t *klen, const uint8_t **val,
                    size_t *vlen)
{
    walk_ctx *w = arg;
    MDB_val k, v;
    for (;;) {
        int rc;
        if (!w->cur) {
            if (w->db >= DB_COUNT)
                return 0;
            if (mdb_cursor_open(w->txn, w->s->db[w->db], &w->cur) != MDB_SUCCESS)
                return -1;
            rc = mdb_cursor_get(w->cur, &k, &v, MDB_FIRST);
        } else {
            rc = mdb_cursor_get(w->cur, &k, &v, MDB_NEXT);
        }
        if (rc == MDB_NOTFOUND) {
            mdb_cursor_close(w->cur);
            w->cur = NULL;
            w->db++;
            continue;
        }
        if (rc != MDB_SUCCESS)
            return -1;
        if (is_local_key(w->db, k.mv_data, k.mv_size))
            continue;
        *db = w->db;
        *key = k.mv_data, *klen = k.mv_size;
        *val = v.mv_data, *vlen = v.mv_size;
        return 1;
    }
}

/* Takes back init's mark after a failed copy, so that a server still
 * serving the directory writes again; if even that fails, says so (init
 * run again finishes the copy). */
static void unmark(store *s, char *msg, size_t msglen)
{
    size_t n = strlen(msg);
    if (store_replica_detach(s) != STORE_OK && n < msglen)
        snprintf(msg + n, msglen - n, "; the data directory stays marked as the cluster's replica "
                 "(writes refused): run `tokend cluster init` again to finish the copy");
}

int store_cluster_init(store *s, const char *url, char *msg, size_t msglen)
{
    cluster *cl;
    char id[ID_MAX], mine[ID_MAX], err[256] = "";
    int from = 0, to = 0, kv_empty = 0, data;
    uint64_t last;
    MDB_txn *txn;
    if (cluster_open(&cl, url, msg, msglen) != CLUSTER_OK)
        return STORE_UNAVAILABLE;
    int rc = STORE_UNAVAILABLE;
    if (cluster_migrate(cl, &from, &to, err, sizeof err) != CLUSTER_OK ||
        cluster_state(cl, id, sizeof id, &last, &kv_empty) != CLUSTER_OK) {
        snprintf(msg, msglen, "%s", err[0] ? err : "cannot read the cluster's state");
        goto out;
    }
    rc = local_txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK) {
        snprintf(msg, msglen, "cannot read the data directory");
        goto out;
    }
    local_id(s, txn, mine);
    data = holds_data(s, txn);
    txn_abort(s, txn);
    char schema[96];
    if (from == to)
        snprintf(schema, sizeof schema, "schema version %d (current)", to);
    else
        snprintf(schema, sizeof schema, "schema version %d -> %d", from, to);
    /* Marked as this cluster's replica while the cluster holds nothing: an
     * init that was stopped between its mark and its copy. It copies now. */
    int unfinished = strcmp(mine, id) == 0 && kv_empty && data;
    if (strcmp(mine, id) == 0 && !unfinished) {
        snprintf(msg, msglen, "cluster %s: %s; the data directory is already its replica "
                 "(change %llu)", id, schema, (unsigned long long)last);
        rc = STORE_OK;
        goto out;
    }
    if (mine[0] && !unfinished) {
        snprintf(msg, msglen, "the data directory is a replica of another cluster (%s)", mine);
        rc = STORE_ERR;
        goto out;
    }
    if (!kv_empty) {
        if (data) {
            snprintf(msg, msglen, "cluster %s already holds data, and so does the data directory: "
                     "a directory is copied only into an empty cluster", id);
            rc = STORE_EXISTS;
            goto out;
        }
        /* An empty directory: it simply joins. */
        rc = join(s, cl, 0, msg, msglen);
        if (rc == STORE_OK) {
            snprintf(msg, msglen, "cluster %s: %s; it holds data already: the data directory "
                     "joined it", id, schema);
            cl = NULL;
        }
        goto out;
    }
    /* Mark the directory as the cluster's replica at its newest change,
     * then copy it (token key included) into the empty cluster. Marked
     * first, so that a server still serving it stops writing (txn_begin
     * sees the mark) before the copy's snapshot is taken: nothing it
     * writes is left out of the cluster. A copy that fails detaches it. */
    if (!unfinished && (rc = local_txn_begin(s, 0, &txn)) == STORE_OK) {
        rc = set_seq(s, txn, last);
        if (rc == STORE_OK)
            rc = put_local(s, txn, ID_KEY, id, strlen(id));
        rc = txn_end_s(s, txn, rc);
    }
    if (rc != STORE_OK && !unfinished) {
        snprintf(msg, msglen, "cannot mark the data directory as the cluster's replica: %s",
                 store_strerror(rc));
        goto out;
    }
    if ((rc = local_txn_begin(s, MDB_RDONLY, &txn)) != STORE_OK) {
        snprintf(msg, msglen, "cannot read the data directory");
        unmark(s, msg, msglen);
        goto out;
    }
    walk_ctx w = {s, txn, NULL, 0};
    int pushed = cluster_push(cl, next_row, &w, err, sizeof err);
    if (w.cur)
        mdb_cursor_close(w.cur);
    MDB_stat st;
    size_t users = mdb_stat(txn, s->db[DB_USERS], &st) == MDB_SUCCESS ? st.ms_entries : 0;
    size_t sessions = mdb_stat(txn, s->db[DB_SESSIONS], &st) == MDB_SUCCESS ? st.ms_entries : 0;
    txn_abort(s, txn);
    if (pushed != CLUSTER_OK) {
        snprintf(msg, msglen, "%s", pushed == CLUSTER_EXISTS
                                        ? "another init filled the cluster meanwhile: run it again"
                                        : err);
        rc = pushed == CLUSTER_EXISTS ? STORE_EXISTS : STORE_UNAVAILABLE;
        unmark(s, msg, msglen);
        goto out;
    }
    snprintf(msg, msglen, "cluster %s: %s; copied the data directory into it (%zu users, %zu "
             "sessions and admin tokens): every token it issued verifies on every node",
             id, schema, users, sessions);
out:
    cluster_close(cl);
    return rc;
}

void store_cluster_leave(store *s)
{
    if (s->cluster) {
        cluster_close(s->cluster);
        s->cluster = NULL;
    }
    free(s->snap);
    s->snap = NULL;
}

void store_cluster_stop(store *s)
{
    cluster_stop(s->cluster);
}

int store_clustered(const store *s)
{
    return s->cluster != NULL;
}

int store_replica_of(store *s, char *id, size_t idlen, uint64_t *seq)
{
    MDB_txn *txn;
    char mine[ID_MAX];
    if (local_txn_begin(s, MDB_RDONLY, &txn) != STORE_OK)
        return 0;
    local_id(s, txn, mine);
    *seq = local_seq(s, txn);
    txn_abort(s, txn);
    snprintf(id, idlen, "%s", mine);
    return mine[0] != '\0';
}

int store_replica_detach(store *s)
{
    MDB_txn *txn;
    MDB_val k1 = {strlen(SEQ_KEY), SEQ_KEY}, k2 = {strlen(ID_KEY), ID_KEY};
    int rc = local_txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    int a = mdb_del(txn, s->db[DB_META], &k1, NULL), b = mdb_del(txn, s->db[DB_META], &k2, NULL);
    if ((a != MDB_SUCCESS && a != MDB_NOTFOUND) || (b != MDB_SUCCESS && b != MDB_NOTFOUND)) {
        txn_abort(s, txn);
        return STORE_ERR;
    }
    rc = local_txn_commit(s, txn);
    if (rc == STORE_OK)
        s->replica = 0;
    return rc;
}

int store_cluster_refresh(store *s, char *err, size_t errlen)
{
    MDB_txn *txn;
    if (!s->cluster)
        return STORE_OK;
    if (local_txn_begin(s, MDB_RDONLY, &txn) != STORE_OK) {
        snprintf(err, errlen, "cannot read the data directory");
        return STORE_ERR;
    }
    uint64_t seq = local_seq(s, txn);
    txn_abort(s, txn);
    /* each batch applied and committed as the feed's are: the LMDB writer
     * held for that only, never while PostgreSQL is asked */
    int rc = cluster_read_changes(s->cluster, seq, hook_apply, s);
    if (rc == CLUSTER_OK)
        return STORE_OK;
    if (rc == CLUSTER_BEHIND)
        snprintf(err, errlen, "the cluster's change log no longer holds this directory's next "
                 "change: a server started on it loads a snapshot");
    else
        snprintf(err, errlen, "cannot catch up with the cluster (the database unavailable, or "
                 "the data directory cannot be written)");
    return STORE_UNAVAILABLE;
}

int store_catch_up(store *s)
{
    MDB_txn *txn;
    if (!s->cluster)
        return STORE_OK;
    int rc = txn_begin(s, 0, &txn);   /* a write's start: the catch-up, under the cluster's lock */
    return rc == STORE_OK ? txn_end(txn, STORE_OK) : rc;
}

int store_wait_fresh(store *s, pool_job *job)
{
    return s->cluster ? cluster_wait(s->cluster, job) : -1;
}

uint64_t store_fresh_ticket(store *s)
{
    return s->cluster ? cluster_fresh_ticket(s->cluster) : 0;
}

void store_fresh_wait(store *s, uint64_t ticket)
{
    if (s->cluster)
        cluster_fresh_wait(s->cluster, ticket, 1000);
}

void store_cluster_status(store *s, store_cluster_info *out)
{
    cluster_status st;
    memset(out, 0, sizeof *out);
    if (!s->cluster)
        return;
    cluster_get_status(s->cluster, &st);
    out->clustered = 1;
    out->database_up = st.database_up;
    out->applied_seq = st.applied_seq;
    out->latest_seq = st.latest_seq;
    out->lag_ms = st.lag_ms;
    out->polls = st.polls;
    out->wait_polls = st.wait_polls;
    out->waits = st.waits;
    out->bootstraps = st.bootstraps;
}

int store_throttle_buckets(store *s, size_t n, const uint8_t (*keys)[16], const unsigned *caps,
                           unsigned window_ms, int give, double *tokens)
{
    if (!s->cluster || cluster_buckets(s->cluster, n, keys, caps, window_ms, give, tokens) !=
                           CLUSTER_OK)
        return STORE_UNAVAILABLE;
    return STORE_OK;
}

int store_place_known(store *s, const uint8_t key[16], int64_t max_age_ms, int *known)
{
    if (!s->cluster || cluster_place_known(s->cluster, key, max_age_ms, known) != CLUSTER_OK)
        return STORE_UNAVAILABLE;
    return STORE_OK;
}

int store_place_seen(store *s, const uint8_t key[16])
{
    if (!s->cluster || cluster_place_seen(s->cluster, key) != CLUSTER_OK)
        return STORE_UNAVAILABLE;
    return STORE_OK;
}
