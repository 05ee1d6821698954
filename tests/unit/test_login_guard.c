/* test_login_guard.c - the pieces that keep a login honest, below the
 * wire: the commit's re-check of the account, the one-read lookup, the
 * count of hash costs and the decoy drawn from it, the sessions a moving
 * device takes with it, the purge's push tokens, the user-list cursor, and
 * the throttle's buckets, known places and IPv6 prefixes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <lmdb.h>
#include "decoy.h"
#include "fixture.h"
#include "throttle.h"

#define H(t, m) "$argon2id$v=19$m=" #m ",t=" #t ",p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

static uint64_t user_with_hash(store *s, uint64_t app, const char *name, const char *hash)
{
    uint64_t id = 0;
    const char *conflict;
    assert_int_equal(try_user(s, app, name, NULL, NULL, hash, &id, &conflict), STORE_OK);
    return id;
}

/* do_login with the commit's expectations. */
static int guarded_login(store *s, uint64_t app, uint64_t user, uint8_t tag, const char *guid,
                         const char *expect, const char *fresh)
{
    return do_login_checked(s, app, user, guid, tag, 0, NULL, NULL, TEST_EXPIRE_MS, expect,
                            fresh);
}

static void assert_hash(store *s, uint64_t user, const char *want)
{
    store_user *u = NULL;
    assert_int_equal(store_user_get(s, user, &u), STORE_OK);
    assert_string_equal(u->password_hash, want);
    protobuf_c_message_free_unpacked(&u->base, NULL);
}

static void assert_no_session(store *s, uint8_t tag)
{
    uint8_t h[CRYPTO_HASH_BYTES];
    store_session *ss = NULL;
    fill_hash(h, tag);
    assert_int_equal(store_session_get(s, h, &ss), STORE_NOTFOUND);
}

static void test_commit_rechecks_the_account(void **state)
{
    fixture *f = *state;
    uint64_t other = make_app(f->s, "other");
    uint64_t id = user_with_hash(f->s, f->app, "alice", H(2, 19456));

    /* The hash checked is still the stored one: the session and an
     * upgraded hash are written together. */
    assert_int_equal(guarded_login(f->s, f->app, id, 1, "dev", H(2, 19456), H(3, 19456)),
                     STORE_OK);
    assert_hash(f->s, id, H(3, 19456));
    /* The stored hash moved on (a new password): nothing is written. */
    assert_int_equal(guarded_login(f->s, f->app, id, 2, "dev", H(2, 19456), H(4, 19456)),
                     STORE_CHANGED);
    assert_no_session(f->s, 2);
    assert_hash(f->s, id, H(3, 19456));
    /* Disabled meanwhile: refused, even for an admin's login (no hash). */
    assert_int_equal(store_user_set_disabled(f->s, f->app, id, 1, NULL), STORE_OK);
    assert_int_equal(guarded_login(f->s, f->app, id, 3, NULL, H(3, 19456), NULL), STORE_CHANGED);
    assert_int_equal(guarded_login(f->s, f->app, id, 4, NULL, NULL, NULL), STORE_CHANGED);
    assert_no_session(f->s, 3);
    assert_no_session(f->s, 4);
    assert_int_equal(store_user_set_disabled(f->s, f->app, id, 0, NULL), STORE_OK);
    /* Another app's login of this id, and a deleted user: not found. */
    assert_int_equal(guarded_login(f->s, other, id, 5, NULL, NULL, NULL), STORE_NOTFOUND);
    assert_int_equal(store_user_delete(f->s, id, NULL, NULL), STORE_OK);
    assert_int_equal(guarded_login(f->s, f->app, id, 6, "dev", NULL, NULL), STORE_NOTFOUND);
    assert_no_session(f->s, 6);
}

static void test_own_changes_expect_what_they_checked(void **state)
{
    fixture *f = *state;
    uint64_t id = user_with_hash(f->s, f->app, "alice", H(2, 19456));
    uint8_t asked[CRYPTO_HASH_BYTES];
    store_expect stale = {H(1, 8), NULL}, gone, ok = {H(2, 19456), NULL};

    assert_int_equal(guarded_login(f->s, f->app, id, 1, NULL, NULL, NULL), STORE_OK);
    fill_hash(asked, 1);
    gone = (store_expect){H(2, 19456), asked};
    /* The hash checked is not the stored one: nothing changes. */
    assert_int_equal(store_user_set_password(f->s, id, H(3, 8), NULL, &stale, NULL), STORE_CHANGED);
    assert_int_equal(store_user_delete(f->s, id, &stale, NULL), STORE_CHANGED);
    assert_hash(f->s, id, H(2, 19456));
    /* The asking session was signed out meanwhile: nothing changes. */
    assert_int_equal(store_user_revoke(f->s, 0, id, NULL, NULL, NULL), STORE_OK);
    assert_int_equal(store_user_set_password(f->s, id, H(3, 8), NULL, &gone, NULL), STORE_CHANGED);
    assert_int_equal(store_user_delete(f->s, id, &gone, NULL), STORE_CHANGED);
    assert_hash(f->s, id, H(2, 19456));
    /* Both as checked: done. */
    assert_int_equal(store_user_set_password(f->s, id, H(3, 8), NULL, &ok, NULL), STORE_OK);
    assert_hash(f->s, id, H(3, 8));
}

static void test_login_find(void **state)
{
    fixture *f = *state;
    uint64_t other = make_app(f->s, "other");
    uint64_t alice = make_user(f->s, f->app, "alice", "+15550100", NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    store_user *u = NULL;
    int known = -1;

    assert_int_equal(guarded_login(f->s, f->app, alice, 1, "alice-phone", NULL, NULL), STORE_OK);
    assert_int_equal(store_login_find(f->s, f->app, LOGIN_PHONE, "+15550100", 0, "alice-phone",
                                      &u, &known), STORE_OK);
    assert_int_equal(u->user_id, alice);
    assert_int_equal(known, 1);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    /* By id; a device of another user is not known for this one. */
    assert_int_equal(store_login_find(f->s, f->app, 0, "", bob, "alice-phone", &u, &known),
                     STORE_OK);
    assert_int_equal(known, 0);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_int_equal(store_login_find(f->s, f->app, 0, "", alice, NULL, &u, &known), STORE_OK);
    assert_int_equal(known, 0);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    /* Unknown names, and an id of another app, are not found. */
    assert_int_equal(store_login_find(f->s, f->app, LOGIN_NAME, "carol", 0, NULL, &u, &known),
                     STORE_NOTFOUND);
    assert_null(u);
    assert_int_equal(store_login_find(f->s, other, 0, "", alice, NULL, &u, &known),
                     STORE_NOTFOUND);
    assert_null(u);
}

/* Accounts of `app` (0: of every app) at cost `want`. */
static uint64_t mix_count_of(store *s, uint64_t app, crypto_pwcost want)
{
    crypto_pwcost costs[DECOY_COSTS_MAX];
    uint64_t counts[DECOY_COSTS_MAX], sum = 0;
    size_t n = 0;
    assert_int_equal(store_pwcost_mix(s, app, costs, counts, DECOY_COSTS_MAX, &n), STORE_OK);
    for (size_t i = 0; i < n; i++)
        if (costs[i].ops == want.ops && costs[i].mem == want.mem)
            sum += counts[i];
    return sum;
}

static uint64_t mix_count(store *s, crypto_pwcost want)
{
    return mix_count_of(s, 0, want);
}

/* Leaves pwcosts as a build before the count per app left it: one count
 * of the whole directory's (a 16-byte key), none per app. */
static void make_pwcosts_old(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi db;
    uint8_t k16[16] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x80, 0, 0}, v[8] = {0, 0, 0, 0, 0, 0, 0, 9};
    MDB_val k = {16, k16}, val = {8, v};
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "pwcosts", 0, &db), 0);
    assert_int_equal(mdb_drop(txn, db, 0), 0);
    assert_int_equal(mdb_put(txn, db, &k, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* An unknown name costs what its app's accounts cost: never a cost only
 * another app's accounts have, which would tell that it is none of this
 * app's (bcrypt accounts imported into one app, say). */
static void test_decoy_cost_is_the_apps(void **state)
{
    fixture *f = *state;
    crypto_pwcost server = {1, 8 * 1024}, bc = {5, 0};
    char h[CRYPTO_PWHASH_STRBYTES], name[32];
    crypto_pwcost c;
    uint64_t other = make_app(f->s, "other");
    assert_int_equal(crypto_password_hash(h, "pw-pw-pw-pw", 11, bc), 0);
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "imported%d", i);
        user_with_hash(f->s, f->app, name, h);
    }
    user_with_hash(f->s, other, "native", H(1, 8));
    assert_int_equal(mix_count_of(f->s, f->app, bc), 6);
    assert_int_equal(mix_count_of(f->s, other, bc), 0);
    assert_int_equal(mix_count_of(f->s, other, server), 1);
    decoy *d = decoy_create(f->s, server);
    assert_non_null(d);
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "n:ghost%d", i);
        assert_int_equal(decoy_cost(d, other, name, &c), 0);
        assert_true(c.ops == server.ops && c.mem == server.mem);
        assert_int_equal(decoy_cost(d, f->app, name, &c), 0);
        assert_true(c.ops == bc.ops && c.mem == bc.mem);
    }
    decoy_free(d);
    /* A directory counted before the count was per app is counted again
     * when opened: the whole directory's count is left, unread. */
    char dir[64];
    strcpy(dir, f->dir);
    store_close(f->s);
    f->s = NULL;
    make_pwcosts_old(dir);
    f->s = open_or_fail(dir, TEST_MAPSIZE);
    assert_int_equal(mix_count_of(f->s, f->app, bc), 6);
    assert_int_equal(mix_count_of(f->s, other, server), 1);
    assert_int_equal(mix_count(f->s, bc), 6);
    /* Of every app: one entry per cost, the apps' counts added. */
    user_with_hash(f->s, f->app, "native-too", H(1, 8));
    crypto_pwcost costs[DECOY_COSTS_MAX];
    uint64_t counts[DECOY_COSTS_MAX];
    size_t n = 0;
    assert_int_equal(store_pwcost_mix(f->s, 0, costs, counts, DECOY_COSTS_MAX, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(mix_count(f->s, server), 2);
    /* A hash this build cannot verify counts at cost 0, which no decoy
     * copies; the counts still add up to the users (no recount at open). */
    user_with_hash(f->s, other, "foreign", "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaA");
    assert_int_equal(mix_count_of(f->s, other, ((crypto_pwcost){0, 0})), 1);
    d = decoy_create(f->s, server);
    assert_non_null(d);
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "n:ghost%d", i);
        assert_int_equal(decoy_cost(d, other, name, &c), 0);
        assert_true(c.ops == server.ops && c.mem == server.mem);
    }
    decoy_free(d);
}

static void test_cost_mix_follows_every_write(void **state)
{
    fixture *f = *state;
    crypto_pwcost low = {1, 8 * 1024}, mid = {2, 19456 * 1024};
    uint64_t a = user_with_hash(f->s, f->app, "a", H(1, 8));
    user_with_hash(f->s, f->app, "b", H(1, 8));
    uint64_t c = user_with_hash(f->s, f->app, "c", H(2, 19456));
    assert_int_equal(mix_count(f->s, low), 2);
    assert_int_equal(mix_count(f->s, mid), 1);
    /* A new password, an upgrade at login and a deletion move the counts. */
    assert_int_equal(store_user_set_password(f->s, a, H(2, 19456), NULL, NULL, NULL), STORE_OK);
    assert_int_equal(mix_count(f->s, low), 1);
    assert_int_equal(mix_count(f->s, mid), 2);
    uint64_t b = 0;
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "b", &b), STORE_OK);
    assert_int_equal(guarded_login(f->s, f->app, b, 1, NULL, H(1, 8), H(2, 19456)), STORE_OK);
    assert_int_equal(mix_count(f->s, low), 0);
    assert_int_equal(mix_count(f->s, mid), 3);
    assert_int_equal(store_user_delete(f->s, c, NULL, NULL), STORE_OK);
    assert_int_equal(mix_count(f->s, mid), 2);
    /* The counts are kept: a reopened directory has them. */
    char dir[64];
    strcpy(dir, f->dir);
    store_close(f->s);
    f->s = NULL;
    f->s = open_or_fail(dir, TEST_MAPSIZE);
    assert_int_equal(mix_count(f->s, mid), 2);
}

static void test_decoy_cost_comes_from_the_mix(void **state)
{
    fixture *f = *state;
    crypto_pwcost server = {1, 8 * 1024}, old = {2, 16 * 1024};
    char name[32], hash[CRYPTO_PWHASH_STRBYTES];
    crypto_pwcost c;

    /* No account yet: the server's own cost. */
    decoy *d = decoy_create(f->s, server);
    assert_non_null(d);
    assert_int_equal(decoy_cost(d, f->app, "nobody", &c), 0);
    assert_true(c.ops == server.ops && c.mem == server.mem);
    /* Every account at an old cost: every unknown name costs that. */
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "old%d", i);
        char h[CRYPTO_PWHASH_STRBYTES];
        assert_int_equal(crypto_password_hash(h, "pw-pw-pw-pw", 11, old), 0);
        user_with_hash(f->s, f->app, name, h);
    }
    unsigned long long before = crypto_password_work();
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "n:ghost%d", i);
        assert_int_equal(decoy_cost(d, f->app, name, &c), 0);
        assert_true(c.ops == old.ops && c.mem == old.mem);
        assert_int_equal(decoy_hash(d, f->app, name, hash), 0);
        assert_int_equal(crypto_password_cost(hash, &c), 0);
        assert_true(c.ops == old.ops && c.mem == old.mem);
        assert_int_equal(crypto_password_verify(hash, "guess", 5), -1);
    }
    /* The hash work of 20 unknown names is that of 20 accounts at the old
     * cost: counted, not timed. */
    assert_int_equal(crypto_password_work() - before, 20ull * old.ops * (old.mem / 1024));
    /* Half the accounts at each cost: names split between them, each
     * name always the same way. */
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "new%d", i);
        user_with_hash(f->s, f->app, name, H(1, 8));
    }
    int at_old = 0;
    for (int i = 0; i < 200; i++) {
        crypto_pwcost again;
        snprintf(name, sizeof name, "n:ghost%d", i);
        assert_int_equal(decoy_cost(d, f->app, name, &c), 0);
        assert_int_equal(decoy_cost(d, f->app, name, &again), 0);
        assert_true(c.ops == again.ops && c.mem == again.mem);
        at_old += c.ops == old.ops;
    }
    assert_in_range(at_old, 60, 140);
    decoy_free(d);
}

/* Imported bcrypt accounts count in the mix at their bcrypt cost (mem 0),
 * so an unknown name is checked against a bcrypt decoy as often as a real
 * name is a bcrypt account: neither time nor answer tells them apart. */
static void test_bcrypt_accounts_get_bcrypt_decoys(void **state)
{
    fixture *f = *state;
    crypto_pwcost bc = {5, 0};
    char h[CRYPTO_PWHASH_STRBYTES], name[32], hash[CRYPTO_PWHASH_STRBYTES];
    crypto_pwcost c;
    assert_int_equal(crypto_password_hash(h, "pw-pw-pw-pw", 11, bc), 0);
    store_user *u = NULL;
    store_user *users[2];
    store_user a = TOKEND__V1__STORE__USER__INIT, b = TOKEND__V1__STORE__USER__INIT;
    int rcs[2];
    const char *conflict[2];
    a.name = "imported-a", a.phone = "", a.email = "", a.password_hash = h;
    b.name = "imported-b", b.phone = "", b.email = "", b.password_hash = h;
    users[0] = &a, users[1] = &b;
    assert_int_equal(store_users_import(f->s, f->app, users, 2, 1, 0, rcs, conflict), STORE_OK);
    assert_int_equal(rcs[0], STORE_OK);
    assert_int_equal(mix_count(f->s, bc), 2);
    /* all or nothing: a taken name writes none of the batch */
    store_user c2 = a;
    c2.name = "imported-c";
    users[0] = &c2, users[1] = &a;
    assert_int_equal(store_users_import(f->s, f->app, users, 2, 1, 0, rcs, conflict), STORE_EXISTS);
    assert_int_equal(rcs[1], STORE_EXISTS);
    assert_string_equal(conflict[1], "name");
    uint64_t id;
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "imported-c", &id), STORE_NOTFOUND);
    /* skip: the others are written */
    assert_int_equal(store_users_import(f->s, f->app, users, 2, 0, 0, rcs, conflict), STORE_OK);
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "imported-c", &id), STORE_OK);
    assert_int_equal(store_user_get(f->s, id, &u), STORE_OK);
    assert_string_equal(u->password_hash, h);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_int_equal(mix_count(f->s, bc), 3);

    decoy *d = decoy_create(f->s, (crypto_pwcost){1, 8 * 1024});
    assert_non_null(d);
    snprintf(name, sizeof name, "n:ghost");
    assert_int_equal(decoy_cost(d, f->app, name, &c), 0);
    assert_true(c.ops == 5 && c.mem == 0);
    assert_int_equal(decoy_hash(d, f->app, name, hash), 0);
    assert_memory_equal(hash, "$2b$05$", 7);
    assert_int_equal(crypto_password_verify(hash, "guess", 5), -1);
    decoy_free(d);
}

static void test_device_move_ends_the_previous_users_sessions(void **state)
{
    fixture *f = *state;
    uint64_t a = make_user(f->s, f->app, "a", NULL, NULL);
    uint64_t b = make_user(f->s, f->app, "b", NULL, NULL);
    store_session *ss = NULL;
    uint8_t h[CRYPTO_HASH_BYTES];
    assert_int_equal(guarded_login(f->s, f->app, a, 1, "tablet", NULL, NULL), STORE_OK);
    assert_int_equal(guarded_login(f->s, f->app, a, 2, "phone", NULL, NULL), STORE_OK);
    assert_int_equal(guarded_login(f->s, f->app, b, 3, "tablet", NULL, NULL), STORE_OK);
    assert_no_session(f->s, 1);
    fill_hash(h, 2);
    assert_int_equal(store_session_get(f->s, h, &ss), STORE_OK);
    protobuf_c_message_free_unpacked(&ss->base, NULL);
    assert_push(f->s, 2, STORE_OK, f->app, "phone");
    assert_push(f->s, 3, STORE_OK, f->app, "tablet");
}

static void test_purge_ends_the_push_token(void **state)
{
    fixture *f = *state;
    uint64_t a = make_user(f->s, f->app, "a", NULL, NULL);
    size_t purged = 0;
    assert_int_equal(guarded_login(f->s, f->app, a, 1, "phone", NULL, NULL), STORE_OK);
    assert_push(f->s, 1, STORE_OK, f->app, "phone");
    assert_int_equal(store_purge_expired(f->s, TEST_EXPIRE_MS + 1, 100, &purged), STORE_OK);
    assert_int_equal(purged, 1);
    assert_no_session(f->s, 1);
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);
}

static void test_user_list_cursor(void **state)
{
    fixture *f = *state;
    uint64_t ids[7];
    store_user **page;
    size_t n;
    int more;
    for (int i = 0; i < 7; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%d", i);
        ids[i] = make_user(f->s, f->app, name, NULL, NULL);
    }
    assert_int_equal(store_users_list(f->s, f->app, 0, 0, 3, &page, &n, &more), STORE_OK);
    assert_int_equal(n, 3);
    assert_true(more);
    uint64_t last = page[2]->user_id;
    assert_int_equal(last, ids[2]);
    store_users_free(page, n);
    assert_int_equal(store_users_list(f->s, f->app, last, 0, 3, &page, &n, &more), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(page[0]->user_id, ids[3]);
    assert_true(more);
    last = page[2]->user_id;
    store_users_free(page, n);
    assert_int_equal(store_users_list(f->s, f->app, last, 0, 3, &page, &n, &more), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(page[0]->user_id, ids[6]);
    assert_false(more);
    store_users_free(page, n);
    /* An offset walks: the page_num form. */
    assert_int_equal(store_users_list(f->s, f->app, 0, 6, 3, &page, &n, &more), STORE_OK);
    assert_int_equal(n, 1);
    store_users_free(page, n);
}

/* --- the throttle --------------------------------------------------------- */

static void test_throttle_account_buckets(void **state)
{
    throttle *t = throttle_create((throttle_config){2, 1000, 900});
    throttle_ticket tk;
    assert_non_null(t);
    /* account+address holds 2 */
    assert_int_equal(throttle_take(t, 1, "u:1", "u:1", "10.0.0.1", 0, &tk), 0);
    assert_int_equal(throttle_take(t, 1, "u:1", "u:1", "10.0.0.1", 0, &tk), 0);
    assert_true(throttle_take(t, 1, "u:1", "u:1", "10.0.0.1", 0, &tk) >= 1);
    /* a refund gives one back */
    throttle_refund(t, &tk);  /* the refused take took nothing: no-op */
    assert_true(throttle_take(t, 1, "u:1", "u:1", "10.0.0.1", 0, &tk) >= 1);
    /* the account bucket holds 20: ten more addresses empty it */
    for (int i = 2; i <= 10; i++) {
        char addr[16];
        snprintf(addr, sizeof addr, "10.0.0.%d", i);
        assert_int_equal(throttle_take(t, 1, "u:1", "u:1", addr, 0, &tk), 0);
        assert_int_equal(throttle_take(t, 1, "u:1", "u:1", addr, 0, &tk), 0);
    }
    assert_true(throttle_take(t, 1, "u:1", "u:1", "10.0.1.1", 0, &tk) >= 1);
    /* a known device still gets in, another app or account is untouched */
    assert_int_equal(throttle_take(t, 1, "u:1", "u:1", "10.0.1.1", 1, &tk), 0);
    assert_int_equal(throttle_take(t, 2, "u:1", "u:1", "10.0.1.2", 0, &tk), 0);
    assert_int_equal(throttle_take(t, 1, "u:2", "u:2", "10.0.1.3", 0, &tk), 0);
    throttle_free(t);
}

static void test_throttle_known_place(void **state)
{
    throttle *t = throttle_create((throttle_config){1, 1000, 900});
    throttle_ticket tk, home;
    assert_int_equal(throttle_take(t, 1, "u:7", "u:7", "192.0.2.1", 0, &home), 0);
    throttle_succeeded(t, &home);   /* the owner logged in from home */
    for (int i = 0; i < 10; i++) {
        char addr[16];
        snprintf(addr, sizeof addr, "198.51.100.%d", i);
        assert_int_equal(throttle_take(t, 1, "u:7", "u:7", addr, 0, &tk), 0);
    }
    assert_true(throttle_take(t, 1, "u:7", "u:7", "203.0.113.1", 0, &tk) >= 1);
    assert_int_equal(throttle_take(t, 1, "u:7", "u:7", "192.0.2.1", 0, &tk), 0);
    throttle_free(t);
}

static void test_throttle_ipv6_by_prefix(void **state)
{
    char out[64];
    throttle_address_prefix(out, sizeof out, "2001:db8:1:2:aaaa::1");
    assert_string_equal(out, "2001:db8:1:2::/64");
    throttle_address_prefix(out, sizeof out, "::ffff:192.0.2.7");
    assert_string_equal(out, "192.0.2.7");
    throttle_address_prefix(out, sizeof out, "192.0.2.7");
    assert_string_equal(out, "192.0.2.7");
    throttle_address_prefix(out, sizeof out, "not-an-address");
    assert_string_equal(out, "not-an-address");

    /* One /64 is one address to the address bucket; the next /64 is not. */
    throttle *t = throttle_create((throttle_config){0, 2, 900});
    throttle_ticket tk;
    assert_int_equal(throttle_take(t, 1, "n:a", "n:a", "2001:db8::1", 0, &tk), 0);
    assert_int_equal(throttle_take(t, 1, "n:b", "n:b", "2001:db8::ffff:2", 0, &tk), 0);
    assert_true(throttle_take(t, 1, "n:c", "n:c", "2001:db8::3", 0, &tk) >= 1);
    assert_int_equal(throttle_take(t, 1, "n:c", "n:c", "2001:db8:0:1::3", 0, &tk), 0);
    assert_int_equal(throttle_take_address(t, 1, "2001:db8:0:2::9", &tk), 0);
    assert_int_equal(throttle_take_address(t, 1, "2001:db8:0:2::8", &tk), 0);
    assert_true(throttle_take_address(t, 1, "2001:db8:0:2::7", &tk) >= 1);
    throttle_free(t);
}

static void test_digest_is_keyed(void **state)
{
    uint8_t k1[CRYPTO_KEY_BYTES] = {1}, k2[CRYPTO_KEY_BYTES] = {2}, a[16], b[16], c[16];
    crypto_digest(a, "same text", 9, k1);
    crypto_digest(b, "same text", 9, k2);
    crypto_digest(c, "same text", 9, k1);
    assert_memory_not_equal(a, b, 16);
    assert_memory_equal(a, c, 16);
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup_app, fixture_teardown)
    const struct CMUnitTest tests[] = {
        T(test_commit_rechecks_the_account),
        T(test_own_changes_expect_what_they_checked),
        T(test_login_find),
        T(test_cost_mix_follows_every_write),
        T(test_decoy_cost_is_the_apps),
        T(test_decoy_cost_comes_from_the_mix),
        T(test_bcrypt_accounts_get_bcrypt_decoys),
        T(test_device_move_ends_the_previous_users_sessions),
        T(test_purge_ends_the_push_token),
        T(test_user_list_cursor),
        cmocka_unit_test(test_throttle_account_buckets),
        cmocka_unit_test(test_throttle_known_place),
        cmocka_unit_test(test_throttle_ipv6_by_prefix),
        cmocka_unit_test(test_digest_is_keyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
