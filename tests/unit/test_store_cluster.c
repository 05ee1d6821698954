/* test_store_cluster.c - the store's cluster mode without PostgreSQL: the
 * write set's encoding, and the recording and applying of every write.
 *
 * The real cluster.c (libpq) is replaced, at link time, by the fake below:
 * this file defines every function of cluster.h, so the linker takes these
 * and never pulls cluster.o out of the static library. The fake keeps the
 * change log in memory, as PostgreSQL's tokend.changes would, and can be
 * told to fail (the database away) or to answer a unique violation.
 *
 * The main test: node A makes a series of logical changes (apps, users, a
 * login with a device, a device moved to another user, revocations, a
 * password change, a deletion, the purge); node B, joined from the same
 * snapshot, applies A's change log; every replicated record of the two
 * must then be byte for byte the same. A write that missed the recorder
 * (an mdb_put or mdb_cursor_del of its own) would leave B different. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cluster.h"
#include "fixture.h"
#include "store_internal.h"
#include "wset.h"

/* --- the fake cluster -------------------------------------------------------------- */

#define MAX_CHANGES 256
static struct {
    uint8_t *ops[MAX_CHANGES];
    size_t lens[MAX_CHANGES];
    uint64_t last;
    int down;          /* the next write fails as if PostgreSQL were away: 1 at its
                        * start, 2 at its commit */
    int exists;        /* the next write fails with a unique violation */
    int filler;        /* rows of 2 KiB the snapshot holds besides the key */
    int empty;         /* kv holds nothing (a cluster before init's copy) */
    size_t pushed;     /* rows cluster_push took; pushes fail unless push_ok */
    int push_ok;
    uint8_t key[CRYPTO_KEY_BYTES];
} fake;
struct cluster { int unused; };
struct cluster_conn { int unused; };
static struct cluster the_cluster;
static struct cluster_conn the_conn;

static void fake_reset(void)
{
    for (uint64_t i = 0; i < fake.last; i++)
        free(fake.ops[i]);
    memset(&fake, 0, sizeof fake);
    for (int i = 0; i < CRYPTO_KEY_BYTES; i++)
        fake.key[i] = (uint8_t)(7 * i + 1);
}

int cluster_open(cluster **out, const char *url, char *err, size_t errlen)
{
    *out = &the_cluster;
    return CLUSTER_OK;
}
void cluster_close(cluster *c) {}
void cluster_stop(cluster *c) {}
void cluster_conninfo_masked(const char *conninfo, char *out, size_t outlen) { out[0] = '\0'; }
int cluster_migrate(cluster *c, int *from, int *to, char *err, size_t errlen)
{
    *from = *to = 2;
    return CLUSTER_OK;
}
int cluster_check(cluster *c, char *err, size_t errlen) { return CLUSTER_OK; }
int cluster_state(cluster *c, char *id, size_t idlen, uint64_t *last_seq, int *kv_empty)
{
    snprintf(id, idlen, "fake");
    *last_seq = 0;
    if (kv_empty)
        *kv_empty = fake.empty;
    return CLUSTER_OK;
}
/* The cluster as `cluster init` left it: only the token key (and no change). */
int cluster_snapshot(cluster *c, const cluster_snapshot_hooks *h)
{
    static uint8_t value[2048];
    if (h->begin(h->arg, "fake", 0) != 0)
        return CLUSTER_DOWN;
    int ok = h->row(h->arg, DB_META, (const uint8_t *)"key", 3, fake.key, sizeof fake.key) == 0;
    for (int i = 0; ok && i < fake.filler; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "fill%05d", i);
        memset(value, 'a' + i % 26, sizeof value);
        ok = h->row(h->arg, DB_META, (const uint8_t *)k, (size_t)n, value, sizeof value) == 0;
    }
    return h->end(h->arg, ok) == 0 && ok ? CLUSTER_OK : CLUSTER_DOWN;
}
int cluster_push(cluster *c, cluster_row_fn next, void *arg, char *err, size_t errlen)
{
    int db;
    const uint8_t *k, *v;
    size_t kl, vl;
    if (!fake.push_ok) {
        snprintf(err, errlen, "the fake database is away");
        return CLUSTER_DOWN;
    }
    while (next(arg, &db, &k, &kl, &v, &vl) == 1)
        fake.pushed++;
    fake.empty = 0;
    return CLUSTER_OK;
}
int cluster_write_begin(cluster *c, cluster_conn **conn, uint64_t *last_seq)
{
    if (fake.down == 1) {
        fake.down = 0;
        return CLUSTER_DOWN;
    }
    *conn = &the_conn;
    *last_seq = fake.last;
    return CLUSTER_OK;
}
int cluster_write_fetch(cluster_conn *conn, uint64_t after, uint64_t upto, cluster_change_fn fn,
                        void *arg)
{
    for (uint64_t s = after + 1; s <= upto; s++) {
        int rc = fn(arg, s, fake.ops[s - 1], fake.lens[s - 1]);
        if (rc != CLUSTER_OK)
            return rc;
    }
    return CLUSTER_OK;
}
/* In batches of two. */
int cluster_read_changes(cluster *c, uint64_t after, cluster_apply_fn apply, void *arg)
{
    if (fake.down) {
        fake.down = 0;
        return CLUSTER_DOWN;
    }
    for (uint64_t s = after + 1; s <= fake.last; s += 2) {
        size_t n = s < fake.last ? 2 : 1;
        uint64_t seqs[2] = {s, s + 1};
        const uint8_t *ops[2] = {fake.ops[s - 1], n == 2 ? fake.ops[s] : NULL};
        size_t lens[2] = {fake.lens[s - 1], n == 2 ? fake.lens[s] : 0};
        int rc = apply(arg, n, seqs, ops, lens);
        if (rc != CLUSTER_OK)
            return rc;
    }
    return CLUSTER_OK;
}
int cluster_write_commit(cluster_conn *conn, const uint8_t *ops, size_t len, uint64_t *seq)
{
    if (fake.exists) {
        fake.exists = 0;
        return CLUSTER_EXISTS;
    }
    if (fake.down == 2) {  /* away between begin and commit */
        fake.down = 0;
        return CLUSTER_DOWN;
    }
    assert_true(fake.last < MAX_CHANGES);
    fake.ops[fake.last] = malloc(len ? len : 1);
    memcpy(fake.ops[fake.last], ops, len);
    fake.lens[fake.last] = len;
    *seq = ++fake.last;
    return CLUSTER_OK;
}
void cluster_write_abort(cluster_conn *conn) {}
int cluster_feed_start(cluster *c, const cluster_feed_hooks *h, const cluster_snapshot_hooks *snap)
{
    return CLUSTER_DOWN;
}
int cluster_wait(cluster *c, pool_job *job) { return -1; }
uint64_t cluster_fresh_ticket(cluster *c) { return 0; }
void cluster_fresh_wait(cluster *c, uint64_t ticket, int timeout_ms) {}
void cluster_get_status(cluster *c, cluster_status *st) { memset(st, 0, sizeof *st); }
int cluster_buckets(cluster *c, size_t n, const uint8_t (*keys)[16], const unsigned *caps,
                    unsigned window_ms, int give, double *tokens)
{
    return CLUSTER_DOWN;
}
int cluster_place_known(cluster *c, const uint8_t key[16], int64_t max_age_ms, int *known)
{
    return CLUSTER_DOWN;
}
int cluster_place_seen(cluster *c, const uint8_t key[16]) { return CLUSTER_DOWN; }

/* --- helpers ------------------------------------------------------------------------ */

typedef struct {
    char dir[64];
    store *s;
} node;

static void node_open(node *n)
{
    char err[256];
    assert_non_null(make_tmp_dir(n->dir));
    n->s = open_or_fail(n->dir, TEST_MAPSIZE);
    int rc = store_cluster_join(n->s, "fake://", 0, err, sizeof err);
    if (rc != STORE_OK)
        print_error("join: %s\n", err);
    assert_int_equal(rc, STORE_OK);
    assert_memory_equal(store_token_key(n->s), fake.key, CRYPTO_KEY_BYTES);
}

static void node_close(node *n)
{
    store_close(n->s);
    rm_dir(n->dir);
}

static uint64_t applied(store *s)
{
    MDB_txn *txn;
    assert_int_equal(local_txn_begin(s, MDB_RDONLY, &txn), STORE_OK);
    uint64_t seq = local_seq(s, txn);
    txn_abort(s, txn);
    return seq;
}

/* Every record of every database but the node's own meta keys, in order. */
static void dump(store *s, wset *out)
{
    MDB_txn *txn;
    assert_int_equal(local_txn_begin(s, MDB_RDONLY, &txn), STORE_OK);
    for (int db = 0; db < DB_COUNT; db++) {
        MDB_cursor *cur;
        MDB_val k, v;
        assert_int_equal(mdb_cursor_open(txn, s->db[db], &cur), MDB_SUCCESS);
        for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (db == DB_META && k.mv_size >= 8 && memcmp(k.mv_data, "cluster_", 8) == 0)
                continue;
            assert_int_equal(wset_add(out, WSET_PUT, db, k.mv_data, k.mv_size, v.mv_data,
                                      v.mv_size), 0);
        }
        mdb_cursor_close(cur);
    }
    txn_abort(s, txn);
}

static void assert_same(store *a, store *b)
{
    wset da = {0}, db = {0};
    dump(a, &da);
    dump(b, &db);
    assert_true(da.n > 0);
    assert_int_equal(da.n, db.n);
    assert_int_equal(da.len, db.len);
    assert_memory_equal(da.buf, db.buf, da.len);
    wset_free(&da);
    wset_free(&db);
}

/* A write with nothing to tell the cluster: catches the node up (the purge
 * of nothing expired). */
static void catch_up(store *s)
{
    size_t purged = 1;
    assert_int_equal(store_purge_expired(s, 0, 10, &purged), STORE_OK);
    assert_int_equal(purged, 0);
}

/* --- the tests ---------------------------------------------------------------------- */

static int count_op(void *arg, int op, int db, const uint8_t *key, size_t klen,
                    const uint8_t *val, size_t vlen)
{
    int *counts = arg;
    counts[op]++;
    return 0;
}

static void test_wset_encoding(void **state)
{
    wset w = {0};
    int counts[3] = {0};
    assert_int_equal(wset_add(&w, WSET_INSERT, 3, "k1", 2, "v", 1), 0);
    assert_int_equal(wset_add(&w, WSET_PUT, 4, "key2", 4, "", 0), 0);
    assert_int_equal(wset_add(&w, WSET_DEL, 5, "k3", 2, NULL, 0), 0);
    assert_int_equal(w.n, 3);
    assert_int_equal(w.len, (4 + 2 + 4 + 1) + (4 + 4 + 4) + (4 + 2));
    assert_int_equal(wset_check(w.buf, w.len, DB_COUNT), 0);
    assert_int_equal(wset_each(w.buf, w.len, count_op, counts), 0);
    assert_int_equal(counts[WSET_INSERT], 1);
    assert_int_equal(counts[WSET_PUT], 1);
    assert_int_equal(counts[WSET_DEL], 1);
    /* Cut anywhere, or naming a database that does not exist: refused whole. */
    for (size_t cut = 1; cut < w.len; cut++)
        if (cut != 11 && cut != 23)  /* the ends of whole operations */
            assert_int_equal(wset_check(w.buf, cut, DB_COUNT), -1);
    assert_int_equal(wset_check(w.buf, w.len, 3), -1);
    memset(counts, 0, sizeof counts);
    w.buf[0] = 9;
    assert_int_equal(wset_each(w.buf, w.len, count_op, counts), -1);
    assert_int_equal(counts[0] + counts[1] + counts[2], 0);  /* nothing applied */
    assert_int_equal(wset_add(&w, WSET_PUT, 1, "k", WSET_KEY_MAX + 1, "v", 1), -1);
    wset_reset(&w);
    assert_int_equal(w.len, 0);
    wset_free(&w);
}

static void test_replica_matches(void **state)
{
    node a, b;
    const char *conflict;
    fake_reset();
    node_open(&a);
    node_open(&b);
    uint64_t app = make_app(a.s, "app");
    uint64_t u1 = make_user(a.s, app, "ann", "+15550100", "ann@example.com");
    uint64_t u2 = make_user(a.s, app, "bob", NULL, NULL);
    login_ok(a.s, app, u1, "phone", 1);
    login_ok(a.s, app, u1, NULL, 2);
    login_ok(a.s, app, u2, "phone", 3);           /* the device moves to bob: ann's session ends */
    store_audit au = test_audit(app, "test");
    uint8_t h[CRYPTO_HASH_BYTES];
    fill_hash(h, 2);
    assert_int_equal(store_session_revoke(a.s, h, &au), STORE_OK);
    assert_int_equal(store_user_set_password(a.s, u2, "$argon2id$other", NULL, NULL, NULL),
                     STORE_OK);
    assert_int_equal(store_user_update(a.s, u1, "anna", "", NULL, &conflict, NULL), STORE_OK);
    assert_int_equal(do_login_until(a.s, app, u2, NULL, 4, 1, "ua", NULL, 1000), STORE_OK);
    size_t purged;
    assert_int_equal(store_purge_expired(a.s, 2000, 10, &purged), STORE_OK);  /* session 4 */
    assert_int_equal(purged, 1);
    uint64_t u3 = make_user(a.s, app, "cat", NULL, NULL);
    assert_int_equal(store_user_delete(a.s, u3, NULL, NULL), STORE_OK);
    assert_int_equal(applied(a.s), fake.last);
    assert_true(fake.last >= 12);

    /* The first user's change: its unique index is an INSERT. */
    int counts[3] = {0};
    assert_int_equal(wset_each(fake.ops[1], fake.lens[1], count_op, counts), 0);
    assert_true(counts[WSET_INSERT] >= 2);         /* the name index and the record */

    assert_int_equal(applied(b.s), 0);
    catch_up(b.s);
    assert_int_equal(applied(b.s), fake.last);
    assert_same(a.s, b.s);

    /* B writes next: A catches up before its own next write. */
    login_ok(b.s, app, u1, "tablet", 5);
    uint64_t before = fake.last;
    login_ok(a.s, app, u1, NULL, 6);
    assert_int_equal(fake.last, before + 1);
    catch_up(b.s);
    assert_same(a.s, b.s);
    assert_true(session_exists(a.s, 5));
    node_close(&a);
    node_close(&b);
    fake_reset();
}

static int no_look_key(void *arg, int op, int db, const uint8_t *key, size_t klen,
                       const uint8_t *val, size_t vlen)
{
    return store_look_key(db, key, klen) || (db == DB_META && klen == strlen(STORE_LOOK_MARK) &&
                                             memcmp(key, STORE_LOOK_MARK, klen) == 0);
}

/* The look-alike index is each node's own: no change carries it, and a
 * node indexes what it applies, also a change of a build without the
 * index (a user record and its name, nothing more). */
static void test_lookalike_index_is_made_where_applied(void **state)
{
    node a, b;
    const char *conflict;
    fake_reset();
    node_open(&a);
    node_open(&b);
    uint64_t app = make_app(a.s, "app");
    uint64_t ann = make_user(a.s, app, "ann", NULL, NULL);
    make_user(a.s, app, "bob", NULL, NULL);
    assert_int_equal(store_user_update(a.s, ann, "anna", NULL, NULL, &conflict, NULL), STORE_OK);
    for (uint64_t i = 0; i < fake.last; i++)
        assert_int_equal(wset_each(fake.ops[i], fake.lens[i], no_look_key, NULL), 0);

    /* an older build's new user, "Carol" */
    store_user u = TOKEND__V1__STORE__USER__INIT;
    u.user_id = 99999, u.app_id = app, u.name = "Carol", u.password_hash = "$argon2id$fake";
    uint8_t uid[8], rec[256], key[KEY_MAX];
    size_t n = tokend__v1__store__user__pack(&u, rec);
    wset w = {0};
    assert_int_equal(wset_add(&w, WSET_INSERT, DB_LOGINS, key, login_key(key, app, LOGIN_NAME, "Carol"),
                              uid, user_key(uid, u.user_id)), 0);
    assert_int_equal(wset_add(&w, WSET_INSERT, DB_USERS, uid, 8, rec, n), 0);
    assert_true(fake.last < MAX_CHANGES);
    fake.ops[fake.last] = malloc(w.len);
    memcpy(fake.ops[fake.last], w.buf, w.len);
    fake.lens[fake.last++] = w.len;
    wset_free(&w);

    catch_up(b.s);
    uint64_t id = 0;
    const char *names[] = {"ANNA", "Bob", "carol", "CAROL"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        conflict = NULL;
        if (try_user(b.s, app, names[i], NULL, NULL, NULL, &id, &conflict) != STORE_EXISTS ||
            !conflict || strcmp(conflict, STORE_CONFLICT_LOOKALIKE) != 0)
            fail_msg("%s: taken on the node that applied it? conflict %s", names[i],
                     conflict ? conflict : "none");
    }
    /* the name ann left is free there; an older build's deletion frees Carol's */
    make_user(b.s, app, "Ann", NULL, NULL);
    assert_int_equal(wset_add(&w, WSET_DEL, DB_USERS, uid, 8, NULL, 0), 0);
    fake.ops[fake.last] = malloc(w.len);
    memcpy(fake.ops[fake.last], w.buf, w.len);
    fake.lens[fake.last++] = w.len;
    wset_free(&w);
    catch_up(a.s);
    make_user(a.s, app, "carol", NULL, NULL);
    catch_up(b.s);
    assert_same(a.s, b.s);   /* the same index, each made on its own */
    node_close(&a);
    node_close(&b);
    fake_reset();
}

/* A command that only reads catches up without the write lock; with the
 * database away, the directory stays as it was and the error says so. */
static void test_refresh_reads_the_changes(void **state)
{
    node a, b;
    char err[256] = "";
    fake_reset();
    node_open(&a);
    node_open(&b);
    uint64_t app = make_app(a.s, "app");
    uint64_t ann = make_user(a.s, app, "ann", NULL, NULL);
    assert_int_equal(applied(b.s), 0);
    fake.down = 1;
    assert_int_equal(store_cluster_refresh(b.s, err, sizeof err), STORE_UNAVAILABLE);
    assert_non_null(strstr(err, "cannot catch up with the cluster"));
    assert_int_equal(applied(b.s), 0);
    uint64_t before = fake.last;
    assert_int_equal(store_cluster_refresh(b.s, err, sizeof err), STORE_OK);
    assert_int_equal(fake.last, before);   /* no change of its own */
    assert_int_equal(applied(b.s), fake.last);
    store_user *u = NULL;
    assert_int_equal(store_user_get(b.s, ann, &u), STORE_OK);
    assert_string_equal(u->name, "ann");
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_same(a.s, b.s);
    node_close(&a);
    node_close(&b);
    fake_reset();
}

static void test_database_away_writes_nothing(void **state)
{
    node a;
    const char *conflict;
    fake_reset();
    node_open(&a);
    uint64_t app = make_app(a.s, "app");
    uint64_t seq = fake.last;
    fake.down = 1;                                  /* away before the write */
    assert_int_equal(try_user(a.s, app, "ann", NULL, NULL, NULL, NULL, &conflict),
                     STORE_UNAVAILABLE);
    fake.down = 2;                                  /* away at the commit */
    assert_int_equal(try_user(a.s, app, "ann", NULL, NULL, NULL, NULL, &conflict),
                     STORE_UNAVAILABLE);
    uint64_t id;
    assert_int_equal(store_user_lookup(a.s, app, LOGIN_NAME, "ann", &id), STORE_NOTFOUND);
    assert_int_equal(fake.last, seq);
    /* A unique violation in the database is STORE_EXISTS, and nothing local. */
    fake.exists = 1;
    assert_int_equal(try_user(a.s, app, "ann", NULL, NULL, NULL, NULL, &conflict), STORE_EXISTS);
    assert_int_equal(store_user_lookup(a.s, app, LOGIN_NAME, "ann", &id), STORE_NOTFOUND);
    /* Back: the write goes through, reads went on all along. */
    make_user(a.s, app, "ann", NULL, NULL);
    assert_lookup(a.s, app, LOGIN_NAME, "ann", STORE_OK, 10000);
    assert_int_equal(applied(a.s), fake.last);
    node_close(&a);
    fake_reset();
}

static void test_join_refuses_single_node_data(void **state)
{
    char dir[64], err[256];
    fake_reset();
    assert_non_null(make_tmp_dir(dir));
    store *s = open_or_fail(dir, TEST_MAPSIZE);
    make_app(s, "app");
    assert_int_equal(store_cluster_join(s, "fake://", 0, err, sizeof err), STORE_ERR);
    assert_non_null(strstr(err, "cluster init"));
    store_close(s);
    rm_dir(dir);
}

/* init marks the directory, then copies it: a copy that fails takes the mark
 * back (the single node writes again); a directory left marked by an init
 * that was stopped before its copy is copied by the next init, not called
 * "already its replica". */
static void test_init_marks_then_copies(void **state)
{
    char dir[64], msg[512];
    (void)state;
    fake_reset();
    fake.empty = 1;
    assert_non_null(make_tmp_dir(dir));
    store *s = open_or_fail(dir, TEST_MAPSIZE);
    uint64_t app = make_app(s, "app");
    make_user(s, app, "ann", NULL, NULL);
    assert_int_equal(store_cluster_init(s, "fake://", msg, sizeof msg), STORE_UNAVAILABLE);
    char id[64];
    uint64_t seq;
    assert_false(store_replica_of(s, id, sizeof id, &seq));
    make_user(s, app, "bob", NULL, NULL);                /* it writes again */
    /* the state an init stopped between its mark and its copy leaves */
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(s->env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_put(txn, s->db[DB_META], &(MDB_val){10, "cluster_id"}, &(MDB_val){4, "fake"}, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    const char *conflict;
    assert_int_equal(try_user(s, app, "cy", NULL, NULL, NULL, NULL, &conflict), STORE_REPLICA);
    fake.push_ok = 1;
    assert_int_equal(store_cluster_init(s, "fake://", msg, sizeof msg), STORE_OK);
    assert_non_null(strstr(msg, "copied the data directory"));
    assert_true(fake.pushed > 0);
    assert_true(store_replica_of(s, id, sizeof id, &seq));
    store_close(s);
    rm_dir(dir);
    fake_reset();
}

/* A snapshot is one transaction: one bigger than the new node's map (4 MiB
 * into 1 MiB) grows the map and loads again, instead of failing the start. */
static void test_snapshot_bigger_than_the_map(void **state)
{
    char dir[64], err[256];
    (void)state;
    fake_reset();
    fake.filler = 2000;
    assert_non_null(make_tmp_dir(dir));
    store *s = open_or_fail(dir, (size_t)1 << 20);
    assert_int_equal(store_cluster_join(s, "fake://", 0, err, sizeof err), STORE_OK);
    MDB_txn *txn;
    MDB_val v;
    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_get(txn, s->db[DB_META], &(MDB_val){9, "fill01999"}, &v), 0);
    assert_int_equal(v.mv_size, 2048);
    mdb_txn_abort(txn);
    assert_true(s->mapsize >= (size_t)4 << 20);
    store_close(s);
    rm_dir(dir);
    fake_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wset_encoding),
        cmocka_unit_test(test_replica_matches),
        cmocka_unit_test(test_lookalike_index_is_made_where_applied),
        cmocka_unit_test(test_refresh_reads_the_changes),
        cmocka_unit_test(test_database_away_writes_nothing),
        cmocka_unit_test(test_join_refuses_single_node_data),
        cmocka_unit_test(test_snapshot_bigger_than_the_map),
        cmocka_unit_test(test_init_marks_then_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
