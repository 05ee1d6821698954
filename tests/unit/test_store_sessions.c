/* test_store_sessions.c - store_sessions.c against a real LMDB environment:
 * revoking one session or a user's, the hot-path reads (several sessions in
 * one transaction, store tokens, push tokens), admin tokens, and the purge
 * of expired sessions. What is checked is what a caller relies on: a
 * revoked token stops resolving by every way it could be found, and
 * nothing else does. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>

#include "store.h"
#include "fixture.h"

/* Whether the store token of login `tag` still leads to its session. */
static int store_token_live(store *s, uint8_t tag)
{
    uint8_t h[CRYPTO_HASH_BYTES];
    store_session *ss = NULL;
    fill_hash(h, (uint8_t)(tag + 100));
    int rc = store_store_token_get(s, h, &ss);
    assert_true(rc == STORE_OK || rc == STORE_NOTFOUND);
    if (ss)
        protobuf_c_message_free_unpacked(&ss->base, NULL);
    return rc == STORE_OK;
}

static void test_session_revoke(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    uint8_t h[CRYPTO_HASH_BYTES];
    store_audit a = test_audit(f->app, "revoke");
    audit_log log;

    login_ok(f->s, f->app, alice, "dev-1", 1);
    login_ok(f->s, f->app, alice, NULL, 2);
    login_ok(f->s, f->app, bob, NULL, 3);
    login_ok(f->s, f->app, alice, "dev-2", 4);
    login_ok(f->s, f->app, alice, "dev-2", 5);   /* two sessions on dev-2 */

    fill_hash(h, 1);
    assert_int_equal(store_session_revoke(f->s, h, &a), STORE_OK);
    assert_false(session_exists(f->s, 1));
    assert_false(store_token_live(f->s, 1));
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);   /* its device has no session left */
    assert_true(session_exists(f->s, 2));
    assert_true(session_exists(f->s, 3));
    assert_true(store_token_live(f->s, 2));
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.line[0], "revoke ");

    /* A device with another session keeps its push token. */
    fill_hash(h, 4);
    assert_int_equal(store_session_revoke(f->s, h, NULL), STORE_OK);
    assert_false(session_exists(f->s, 4));
    assert_true(session_exists(f->s, 5));
    assert_push(f->s, 5, STORE_OK, f->app, "dev-2");

    /* Gone or never there: not found, and no audit record of it. */
    fill_hash(h, 1);
    assert_int_equal(store_session_revoke(f->s, h, &a), STORE_NOTFOUND);
    fill_hash(h, 99);
    assert_int_equal(store_session_revoke(f->s, h, &a), STORE_NOTFOUND);
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
}

static void test_user_revoke(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    uint8_t keep[CRYPTO_HASH_BYTES];
    size_t n = 99;

    login_ok(f->s, f->app, alice, "dev-a", 1);
    login_ok(f->s, f->app, alice, "dev-b", 2);
    login_ok(f->s, f->app, alice, NULL, 3);
    login_ok(f->s, f->app, bob, "dev-c", 4);

    /* Another app's admin names alice: nothing of hers is touched. */
    assert_int_equal(store_user_revoke(f->s, f->app + 1, alice, NULL, &n, NULL), STORE_OK);
    assert_int_equal(n, 0);
    assert_true(session_exists(f->s, 1));
    assert_push(f->s, 1, STORE_OK, f->app, "dev-a");

    fill_hash(keep, 2);
    assert_int_equal(store_user_revoke(f->s, f->app, alice, keep, &n, NULL), STORE_OK);
    assert_int_equal(n, 2);
    assert_false(session_exists(f->s, 1));
    assert_false(session_exists(f->s, 3));
    assert_false(store_token_live(f->s, 3));
    assert_true(session_exists(f->s, 2));
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);
    assert_push(f->s, 2, STORE_OK, f->app, "dev-b");
    /* bob is not touched. */
    assert_true(session_exists(f->s, 4));
    assert_push(f->s, 4, STORE_OK, f->app, "dev-c");

    assert_int_equal(store_user_revoke(f->s, 0, alice, NULL, &n, NULL), STORE_OK);
    assert_int_equal(n, 1);
    assert_false(session_exists(f->s, 2));
    assert_push(f->s, 2, STORE_NOTFOUND, 0, NULL);

    assert_int_equal(store_user_revoke(f->s, 0, alice, NULL, &n, NULL), STORE_OK);
    assert_int_equal(n, 0);
    assert_true(session_exists(f->s, 4));
}

/* Counts what store_sessions_get allocates through the caller's allocator. */
static size_t allocs;

static void *count_alloc(void *data, size_t size)
{
    (void)data;
    allocs++;
    return malloc(size);
}

static void count_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static void test_sessions_get(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    uint8_t h1[CRYPTO_HASH_BYTES], h2[CRYPTO_HASH_BYTES], unknown[CRYPTO_HASH_BYTES];
    const uint8_t *hashes[4] = {h1, NULL, unknown, h2};
    store_session *out[4];
    ProtobufCAllocator alloc = {count_alloc, count_free, NULL};

    login_ok(f->s, f->app, alice, "dev", 1);
    login_ok(f->s, f->app, bob, NULL, 2);
    fill_hash(h1, 1);
    fill_hash(h2, 2);
    fill_hash(unknown, 77);

    memset(out, 0xA5, sizeof out);
    allocs = 0;
    assert_int_equal(store_sessions_get(f->s, 4, hashes, out, &alloc), STORE_OK);
    assert_non_null(out[0]);
    assert_int_equal(out[0]->user_id, alice);
    assert_string_equal(out[0]->device_guid, "dev");
    assert_null(out[1]);
    assert_null(out[2]);
    assert_non_null(out[3]);
    assert_int_equal(out[3]->user_id, bob);
    assert_int_equal(out[3]->app_id, f->app);
    assert_true(allocs >= 2);   /* decoded through the caller's allocator */
    protobuf_c_message_free_unpacked(&out[0]->base, &alloc);
    protobuf_c_message_free_unpacked(&out[3]->base, &alloc);

    /* Without an allocator, and with nothing to find. */
    assert_int_equal(store_sessions_get(f->s, 1, &hashes[2], out, NULL), STORE_OK);
    assert_null(out[0]);
    assert_int_equal(store_sessions_get(f->s, 1, &hashes[3], out, NULL), STORE_OK);
    assert_int_equal(out[0]->user_id, bob);
    protobuf_c_message_free_unpacked(&out[0]->base, NULL);
}

/* The hot path's decoder (records read with an allocator) gives what
 * protobuf-c gives: the two decodings pack to the same bytes. */
static void test_sessions_get_fast_decode(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint8_t h[CRYPTO_HASH_BYTES], a[512], b[512];
    const uint8_t *hashes[1] = {h};
    store_session *fast = NULL, *slow = NULL;
    ProtobufCAllocator alloc = {count_alloc, count_free, NULL};

    login_ok(f->s, f->app, alice, "a-device-guid", 3);
    fill_hash(h, 3);
    assert_int_equal(store_sessions_get(f->s, 1, hashes, &fast, &alloc), STORE_OK);
    assert_int_equal(store_sessions_get(f->s, 1, hashes, &slow, NULL), STORE_OK);
    /* The arena's decode leaves out the secrets a check does not need;
     * with them put back, it is protobuf-c's. */
    assert_int_equal(fast->store_token_hash.len, 0);
    assert_string_equal(fast->access_key_secret, "");
    assert_int_equal(slow->store_token_hash.len, CRYPTO_HASH_BYTES);
    assert_string_equal(slow->access_key_secret, "secret");
    fast->store_token_hash = slow->store_token_hash;
    fast->access_key_secret = slow->access_key_secret;
    size_t na = protobuf_c_message_get_packed_size(&fast->base);
    size_t nb = protobuf_c_message_get_packed_size(&slow->base);
    assert_int_equal(na, nb);
    assert_true(na <= sizeof a);
    protobuf_c_message_pack(&fast->base, a);
    protobuf_c_message_pack(&slow->base, b);
    assert_memory_equal(a, b, na);
    fast->store_token_hash = (ProtobufCBinaryData){0, NULL};   /* slow's, freed with slow */
    fast->access_key_secret = (char *)protobuf_c_empty_string;
    protobuf_c_message_free_unpacked(&fast->base, &alloc);
    protobuf_c_message_free_unpacked(&slow->base, NULL);
}

/* Each thread's read transaction is kept and renewed: a read sees what
 * committed since the thread's last read; threads that come and go give
 * their reader slots back (more of them than LMDB has slots); a store
 * closed while another thread keeps a transaction of it frees that too. */
typedef struct {
    store *s;
    const uint8_t *hash;
    int found;
} reader_arg;

static void *read_once(void *p)
{
    reader_arg *r = p;
    store_session *ss = NULL;
    const uint8_t *hashes[1] = {r->hash};
    r->found = store_sessions_get(r->s, 1, hashes, &ss, NULL) == STORE_OK && ss;
    if (ss)
        protobuf_c_message_free_unpacked(&ss->base, NULL);
    return NULL;
}

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int step;
    reader_arg r;
} stepper;

/* Reads, waits for step 2 (the main thread closes that store and opens
 * another), reads the other store, exits. */
static void *read_across_close(void *p)
{
    stepper *st = p;
    read_once(&st->r);
    pthread_mutex_lock(&st->lock);
    st->step = 1;
    pthread_cond_broadcast(&st->cond);
    while (st->step != 2)
        pthread_cond_wait(&st->cond, &st->lock);
    pthread_mutex_unlock(&st->lock);
    read_once(&st->r);
    return NULL;
}

static void test_read_txn_reuse(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint8_t h[CRYPTO_HASH_BYTES];
    reader_arg r = {f->s, h, 0};

    fill_hash(h, 5);
    read_once(&r);
    assert_false(r.found);
    login_ok(f->s, f->app, alice, NULL, 5);
    read_once(&r);                  /* the renewed transaction sees the login */
    assert_true(r.found);
    assert_int_equal(store_session_revoke(f->s, h, NULL), STORE_OK);
    read_once(&r);
    assert_false(r.found);

    login_ok(f->s, f->app, alice, NULL, 5);
    for (int i = 0; i < 1100; i++) {   /* maxreaders is 1024 */
        pthread_t t;
        r.found = 0;
        assert_int_equal(pthread_create(&t, NULL, read_once, &r), 0);
        pthread_join(t, NULL);
        assert_true(r.found);
    }

    stepper st = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {f->s, h, 0}};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_across_close, &st), 0);
    pthread_mutex_lock(&st.lock);
    while (st.step != 1)
        pthread_cond_wait(&st.cond, &st.lock);
    assert_true(st.r.found);
    store_close(f->s);              /* frees the reader's kept transaction */
    f->s = open_or_fail(f->dir, TEST_MAPSIZE);
    st.r.s = f->s;
    st.r.found = 0;
    st.step = 2;
    pthread_cond_broadcast(&st.cond);
    pthread_mutex_unlock(&st.lock);
    pthread_join(t, NULL);
    assert_true(st.r.found);        /* the same data, through the new handle */
}

static void test_store_token_get(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint8_t h[CRYPTO_HASH_BYTES], sth[CRYPTO_HASH_BYTES];
    store_session *ss = NULL;

    login_ok(f->s, f->app, alice, "dev", 1);
    fill_hash(sth, 101);
    assert_int_equal(store_store_token_get(f->s, sth, &ss), STORE_OK);
    assert_int_equal(ss->user_id, alice);
    assert_int_equal(ss->app_id, f->app);
    assert_string_equal(ss->access_key_secret, "secret");
    assert_memory_equal(ss->store_token_hash.data, sth, CRYPTO_HASH_BYTES);
    protobuf_c_message_free_unpacked(&ss->base, NULL);

    /* The access token's hash is not a store token. */
    fill_hash(h, 1);
    assert_int_equal(store_store_token_get(f->s, h, &ss), STORE_NOTFOUND);

    assert_int_equal(store_session_revoke(f->s, h, NULL), STORE_OK);
    assert_int_equal(store_store_token_get(f->s, sth, &ss), STORE_NOTFOUND);
}

static void test_push_lookup(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint8_t h[CRYPTO_HASH_BYTES];
    uint64_t app = 0;
    char guid[8];

    login_ok(f->s, f->app, alice, "dev-1", 1);
    fill_hash(h, 201);
    /* The guid and its NUL must fit. */
    assert_int_equal(store_push_lookup(f->s, h, &app, guid, 5), STORE_ERR);
    assert_int_equal(store_push_lookup(f->s, h, &app, guid, 6), STORE_OK);
    assert_int_equal(app, f->app);
    assert_string_equal(guid, "dev-1");
    /* The access token's hash is not a push token. */
    fill_hash(h, 1);
    assert_int_equal(store_push_lookup(f->s, h, &app, guid, sizeof guid), STORE_NOTFOUND);
}

typedef struct {
    size_t n;
    uint8_t hash[4][CRYPTO_HASH_BYTES];
    char label[4][16];
} admin_seen;

static void see_admin(const uint8_t hash[CRYPTO_HASH_BYTES], const store_session *ss, void *arg)
{
    admin_seen *seen = arg;
    assert_true(ss->admin);
    if (seen->n < 4) {
        memcpy(seen->hash[seen->n], hash, CRYPTO_HASH_BYTES);
        snprintf(seen->label[seen->n], sizeof seen->label[0], "%s", ss->label);
    }
    seen->n++;
}

static int admin_create(store *s, uint64_t app_id, uint8_t tag, const char *label,
                        const store_audit *audit)
{
    store_session ss = TOKEND__V1__STORE__SESSION__INIT;
    uint8_t h[CRYPTO_HASH_BYTES];
    fill_hash(h, tag);
    ss.app_id = app_id;
    ss.label = (char *)label;
    ss.created_ms = 1700000000000;
    return store_admin_token_create(s, h, &ss, audit);
}

static void test_admin_tokens(void **state)
{
    fixture *f = *state;
    uint64_t other = make_app(f->s, "other");
    uint8_t h[CRYPTO_HASH_BYTES];
    store_session *ss = NULL;
    store_audit a = test_audit(f->app, "admin-token create");
    admin_seen seen = {0};
    audit_log log;

    assert_int_equal(admin_create(f->s, f->app, 50, "ops", &a), STORE_OK);
    assert_int_equal(admin_create(f->s, f->app, 51, "push", NULL), STORE_OK);
    assert_int_equal(admin_create(f->s, other, 52, "elsewhere", NULL), STORE_OK);
    /* An unknown app gets none, and nothing is stored or recorded. */
    assert_int_equal(admin_create(f->s, other + 100, 53, "nowhere", &a), STORE_NOTFOUND);
    assert_false(session_exists(f->s, 53));
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.line[0], "admin-token create ");

    fill_hash(h, 50);
    assert_int_equal(store_session_get(f->s, h, &ss), STORE_OK);
    assert_true(ss->admin);               /* set by the store, not the caller */
    assert_int_equal(ss->app_id, f->app);
    assert_string_equal(ss->label, "ops");
    protobuf_c_message_free_unpacked(&ss->base, NULL);

    assert_int_equal(store_admin_tokens_list(f->s, f->app, see_admin, &seen), STORE_OK);
    assert_int_equal(seen.n, 2);
    int ops = memcmp(seen.hash[0], h, CRYPTO_HASH_BYTES) == 0 ? 0 : 1;
    assert_memory_equal(seen.hash[ops], h, CRYPTO_HASH_BYTES);
    assert_string_equal(seen.label[ops], "ops");
    assert_string_equal(seen.label[1 - ops], "push");

    /* Revoked, it leaves the list; the other app's list is its own. */
    assert_int_equal(store_session_revoke(f->s, h, NULL), STORE_OK);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_admin_tokens_list(f->s, f->app, see_admin, &seen), STORE_OK);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.label[0], "push");
    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_admin_tokens_list(f->s, other, see_admin, &seen), STORE_OK);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.label[0], "elsewhere");
}

static void test_purge_expired(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    size_t purged = 99;

    assert_int_equal(do_login_until(f->s, f->app, alice, NULL, 1, 0, NULL, NULL, 1000), STORE_OK);
    assert_int_equal(do_login_until(f->s, f->app, alice, NULL, 2, 0, NULL, NULL, 2000), STORE_OK);
    assert_int_equal(do_login_until(f->s, f->app, alice, NULL, 3, 0, NULL, NULL, 2100), STORE_OK);
    assert_int_equal(do_login_until(f->s, f->app, alice, NULL, 4, 0, NULL, NULL, 9000), STORE_OK);
    assert_int_equal(admin_create(f->s, f->app, 5, "never expires", NULL), STORE_OK);

    /* At most `max` at a time, oldest first. */
    assert_int_equal(store_purge_expired(f->s, 2500, 2, &purged), STORE_OK);
    assert_int_equal(purged, 2);
    assert_false(session_exists(f->s, 1));
    assert_false(session_exists(f->s, 2));
    assert_false(store_token_live(f->s, 1));
    assert_true(session_exists(f->s, 3));

    assert_int_equal(store_purge_expired(f->s, 2500, 10, &purged), STORE_OK);
    assert_int_equal(purged, 1);
    assert_false(session_exists(f->s, 3));
    assert_true(session_exists(f->s, 4));   /* not expired yet */

    assert_int_equal(store_purge_expired(f->s, 2500, 10, &purged), STORE_OK);
    assert_int_equal(purged, 0);

    /* Long after: the last user session goes, the admin token stays. */
    assert_int_equal(store_purge_expired(f->s, 1000000, 10, &purged), STORE_OK);
    assert_int_equal(purged, 1);
    assert_false(session_exists(f->s, 4));
    assert_true(session_exists(f->s, 5));
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup_app, fixture_teardown)
        T(test_session_revoke),
        T(test_user_revoke),
        T(test_sessions_get),
        T(test_sessions_get_fast_decode),
        T(test_read_txn_reuse),
        T(test_store_token_get),
        T(test_push_lookup),
        T(test_admin_tokens),
        T(test_purge_expired),
#undef T
    };
    return cmocka_run_group_tests_name("store_sessions", tests, NULL, NULL);
}
