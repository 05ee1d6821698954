/* test_store_users.c - store_users.c against a real LMDB environment:
 * updating a user's login names, password and disabled flag, deleting a
 * user with everything that hangs off it, paging the users of an app,
 * groups, and the audit log that admin changes write. A refused change
 * must leave nothing behind, its audit record included. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <lmdb.h>
#include <string.h>

#include "store.h"
#include "store_internal.h"
#include "fixture.h"

/* The user record, which the caller frees. */
static store_user *user(store *s, uint64_t user_id)
{
    store_user *u = NULL;
    assert_int_equal(store_user_get(s, user_id, &u), STORE_OK);
    return u;
}

static void test_user_update(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", "+15550100", "alice@example.com");
    uint64_t bob = make_user(f->s, f->app, "bob", "+15550101", "bob@example.com");
    const char *conflict = NULL;
    store_audit a = test_audit(f->app, "update");
    audit_log log;

    /* A new name, the phone left alone, the email cleared. */
    assert_int_equal(store_user_update(f->s, alice, "alicia", NULL, "", &conflict, &a), STORE_OK);
    store_user *u = user(f->s, alice);
    assert_string_equal(u->name, "alicia");
    assert_string_equal(u->phone, "+15550100");
    assert_string_equal(u->email, "");
    assert_string_equal(u->password_hash, "$argon2id$fake");
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_lookup(f->s, f->app, LOGIN_NAME, "alice", STORE_NOTFOUND, 0);
    assert_lookup(f->s, f->app, LOGIN_NAME, "alicia", STORE_OK, alice);
    assert_lookup(f->s, f->app, LOGIN_PHONE, "+15550100", STORE_OK, alice);
    assert_lookup(f->s, f->app, LOGIN_EMAIL, "alice@example.com", STORE_NOTFOUND, 0);
    /* The old name is free for someone else. */
    make_user(f->s, f->app, "alice", NULL, NULL);

    /* Setting what is already there is no conflict with oneself. */
    assert_int_equal(store_user_update(f->s, bob, "bob", "+15550101", NULL, &conflict, NULL),
                     STORE_OK);
    assert_lookup(f->s, f->app, LOGIN_NAME, "bob", STORE_OK, bob);

    /* A taken email refuses the whole change, the new name included. */
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
    assert_int_equal(store_user_update(f->s, alice, "al", NULL, "bob@example.com", &conflict, &a),
                     STORE_EXISTS);
    assert_string_equal(conflict, "email");
    assert_lookup(f->s, f->app, LOGIN_NAME, "al", STORE_NOTFOUND, 0);
    assert_lookup(f->s, f->app, LOGIN_NAME, "alicia", STORE_OK, alice);
    assert_lookup(f->s, f->app, LOGIN_EMAIL, "bob@example.com", STORE_OK, bob);
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);

    assert_int_equal(store_user_update(f->s, alice, NULL, "+15550101", NULL, &conflict, NULL),
                     STORE_EXISTS);
    assert_string_equal(conflict, "phone");
    assert_int_equal(store_user_update(f->s, bob + 100, "x", NULL, NULL, &conflict, NULL),
                     STORE_NOTFOUND);
}

static void test_user_set_password(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    uint8_t keep[CRYPTO_HASH_BYTES];
    store_audit a = test_audit(f->app, "change_password");
    audit_log log;

    login_ok(f->s, f->app, alice, "dev-1", 1);
    login_ok(f->s, f->app, alice, "dev-2", 2);
    login_ok(f->s, f->app, alice, NULL, 3);
    login_ok(f->s, f->app, bob, NULL, 4);

    /* The session that changed it stays; every other one ends. */
    fill_hash(keep, 2);
    assert_int_equal(store_user_set_password(f->s, alice, "$new", keep, NULL, &a), STORE_OK);
    store_user *u = user(f->s, alice);
    assert_string_equal(u->password_hash, "$new");
    assert_string_equal(u->name, "alice");
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_false(session_exists(f->s, 1));
    assert_false(session_exists(f->s, 3));
    assert_true(session_exists(f->s, 2));
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);
    assert_push(f->s, 2, STORE_OK, f->app, "dev-2");
    assert_true(session_exists(f->s, 4));
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.line[0], "change_password ");

    /* Without a session to keep (an admin's change), all end. */
    assert_int_equal(store_user_set_password(f->s, alice, "$newer", NULL, NULL, NULL), STORE_OK);
    assert_false(session_exists(f->s, 2));
    assert_int_equal(store_user_set_password(f->s, bob + 100, "$x", NULL, NULL, &a), STORE_NOTFOUND);
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
}

static void test_user_set_disabled(void **state)
{
    fixture *f = *state;
    uint64_t other = make_app(f->s, "other");
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);

    login_ok(f->s, f->app, alice, "dev-1", 1);
    login_ok(f->s, f->app, alice, NULL, 2);

    /* Only through the user's own app. */
    assert_int_equal(store_user_set_disabled(f->s, other, alice, 1, NULL), STORE_NOTFOUND);
    store_user *u = user(f->s, alice);
    assert_false(u->disabled);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_true(session_exists(f->s, 1));

    assert_int_equal(store_user_set_disabled(f->s, f->app, alice, 1, NULL), STORE_OK);
    u = user(f->s, alice);
    assert_true(u->disabled);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_false(session_exists(f->s, 1));
    assert_false(session_exists(f->s, 2));
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);

    /* Enabling brings back the flag, not the sessions. */
    assert_int_equal(store_user_set_disabled(f->s, f->app, alice, 0, NULL), STORE_OK);
    u = user(f->s, alice);
    assert_false(u->disabled);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_false(session_exists(f->s, 1));
}

/* A list is one transaction: a user of another app in it (or one deleted
 * meanwhile) leaves every user of the list as it was, sessions included. */
static void test_users_set_disabled_all_or_none(void **state)
{
    fixture *f = *state;
    uint64_t other = make_app(f->s, "other");
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    uint64_t cy = make_user(f->s, f->app, "cy", NULL, NULL);
    uint64_t stranger = make_user(f->s, other, "stranger", NULL, NULL);
    login_ok(f->s, f->app, bob, NULL, 3);
    uint64_t bad[] = {bob, stranger, cy}, good[] = {bob, cy};
    assert_int_equal(store_users_set_disabled(f->s, f->app, bad, 3, 1, NULL), STORE_NOTFOUND);
    for (int i = 0; i < 2; i++) {
        store_user *u = user(f->s, good[i]);
        assert_false(u->disabled);
        protobuf_c_message_free_unpacked(&u->base, NULL);
    }
    assert_true(session_exists(f->s, 3));
    assert_int_equal(store_users_set_disabled(f->s, f->app, good, 2, 1, NULL), STORE_OK);
    for (int i = 0; i < 2; i++) {
        store_user *u = user(f->s, good[i]);
        assert_true(u->disabled);
        protobuf_c_message_free_unpacked(&u->base, NULL);
    }
    assert_false(session_exists(f->s, 3));
}

static void test_user_delete(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", "+15550100", "alice@example.com");
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    uint64_t admin = 0;
    store_device *d = NULL;
    store_user **list = NULL;
    size_t n = 0;
    store_audit a = test_audit(f->app, "delete");
    audit_log log;

    login_ok(f->s, f->app, alice, "dev-1", 1);
    login_ok(f->s, f->app, alice, NULL, 2);
    login_ok(f->s, f->app, bob, "dev-2", 3);
    assert_int_equal(store_group_set(f->s, f->app, 7, alice, NULL), STORE_OK);
    assert_int_equal(store_group_set(f->s, f->app, 8, bob, NULL), STORE_OK);

    assert_int_equal(store_user_delete(f->s, alice, NULL, &a), STORE_OK);
    assert_int_equal(store_user_get(f->s, alice, &(store_user *){NULL}), STORE_NOTFOUND);
    assert_lookup(f->s, f->app, LOGIN_NAME, "alice", STORE_NOTFOUND, 0);
    assert_lookup(f->s, f->app, LOGIN_PHONE, "+15550100", STORE_NOTFOUND, 0);
    assert_lookup(f->s, f->app, LOGIN_EMAIL, "alice@example.com", STORE_NOTFOUND, 0);
    assert_false(session_exists(f->s, 1));
    assert_false(session_exists(f->s, 2));
    assert_int_equal(store_device_get(f->s, f->app, "dev-1", &d), STORE_NOTFOUND);
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);
    assert_int_equal(store_group_admin(f->s, f->app, 7, &admin), STORE_NOTFOUND);
    assert_int_equal(store_users_list(f->s, f->app, 0, 0, 10, &list, &n, NULL), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(list[0]->user_id, bob);
    store_users_free(list, n);
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.line[0], "delete ");

    /* bob keeps everything; alice's name, phone and email are free. */
    assert_true(session_exists(f->s, 3));
    assert_push(f->s, 3, STORE_OK, f->app, "dev-2");
    assert_int_equal(store_group_admin(f->s, f->app, 8, &admin), STORE_OK);
    assert_int_equal(admin, bob);
    uint64_t again = make_user(f->s, f->app, "alice", "+15550100", "alice@example.com");
    assert_true(again != alice);

    assert_int_equal(store_user_delete(f->s, alice, NULL, &a), STORE_NOTFOUND);
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
}

/* The names of a page of the app's users, joined by spaces. */
static const char *page(store *s, uint64_t app_id, size_t offset, size_t limit)
{
    static char buf[128];
    store_user **list = NULL;
    size_t n = 99, len = 0;
    assert_int_equal(store_users_list(s, app_id, 0, offset, limit, &list, &n, NULL), STORE_OK);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(list[i]->app_id, app_id);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? " " : "", list[i]->name);
    }
    store_users_free(list, n);
    return buf;
}

static void test_users_list(void **state)
{
    fixture *f = *state;
    uint64_t other = make_app(f->s, "other");
    const char *names[] = {"u1", "u2", "u3", "u4", "u5"};
    for (int i = 0; i < 5; i++) {
        make_user(f->s, f->app, names[i], NULL, NULL);
        if (i == 2)
            make_user(f->s, other, "elsewhere", NULL, NULL);
    }

    /* In the order they were made, paged. */
    assert_string_equal(page(f->s, f->app, 0, 10), "u1 u2 u3 u4 u5");
    assert_string_equal(page(f->s, f->app, 0, 2), "u1 u2");
    assert_string_equal(page(f->s, f->app, 2, 2), "u3 u4");
    assert_string_equal(page(f->s, f->app, 4, 2), "u5");
    assert_string_equal(page(f->s, f->app, 5, 2), "");
    assert_string_equal(page(f->s, f->app, 0, 0), "");
    assert_string_equal(page(f->s, other, 0, 10), "elsewhere");
    assert_string_equal(page(f->s, other + 100, 0, 10), "");
}

static void test_groups(void **state)
{
    fixture *f = *state;
    uint64_t other = make_app(f->s, "other");
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    uint64_t admin = 0;
    store_audit a = test_audit(f->app, "group admin");
    audit_log log;

    assert_int_equal(store_group_admin(f->s, f->app, 7, &admin), STORE_NOTFOUND);
    assert_int_equal(store_group_set(f->s, f->app, 7, alice, &a), STORE_OK);
    assert_int_equal(store_group_admin(f->s, f->app, 7, &admin), STORE_OK);
    assert_int_equal(admin, alice);

    /* A new admin replaces the old one. */
    assert_int_equal(store_group_set(f->s, f->app, 7, bob, NULL), STORE_OK);
    assert_int_equal(store_group_admin(f->s, f->app, 7, &admin), STORE_OK);
    assert_int_equal(admin, bob);

    /* A group is the app's: the same id elsewhere, or another id, is not it. */
    assert_int_equal(store_group_admin(f->s, other, 7, &admin), STORE_NOTFOUND);
    assert_int_equal(store_group_admin(f->s, f->app, 8, &admin), STORE_NOTFOUND);
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.line[0], "group admin ");
}

typedef struct {
    size_t n;
    int64_t time_ms[4];
    uint64_t app_id[4];
    char actor[4][16];
} audit_fields;

static void see_fields(const store_audit *e, void *arg)
{
    audit_fields *seen = arg;
    if (seen->n < 4) {
        seen->time_ms[seen->n] = e->time_ms;
        seen->app_id[seen->n] = e->app_id;
        snprintf(seen->actor[seen->n], sizeof seen->actor[0], "%s", e->actor);
    }
    seen->n++;
}

static void test_audit_list(void **state)
{
    fixture *f = *state;
    store_audit a = test_audit(f->app, "user create");
    store_user u = TOKEND__V1__STORE__USER__INIT;
    const char *conflict = NULL;
    audit_fields seen = {0};
    audit_log log;
    char want[64];

    read_audit(f->s, &log);
    assert_int_equal(log.n, 0);

    /* A created user's record names the id it got. */
    u.app_id = f->app;
    u.name = "alice";
    u.phone = u.email = "";
    u.password_hash = "$h";
    assert_int_equal(store_user_create(f->s, &u, &conflict, &a), STORE_OK);
    uint64_t alice = u.user_id;
    a.action = "group admin";
    a.actor = "admin:42";
    assert_int_equal(store_group_set(f->s, f->app, 7, alice, &a), STORE_OK);
    /* Refused: no record. */
    assert_int_equal(store_user_create(f->s, &u, &conflict, &a), STORE_EXISTS);

    read_audit(f->s, &log);
    assert_int_equal(log.n, 2);
    snprintf(want, sizeof want, "user create user_id=%llu", (unsigned long long)alice);
    assert_string_equal(log.line[0], want);
    assert_string_equal(log.line[1], "group admin ");

    assert_int_equal(store_audit_list(f->s, see_fields, &seen), STORE_OK);
    assert_int_equal(seen.n, 2);
    assert_int_equal(seen.time_ms[0], 1700000000999);
    assert_int_equal(seen.app_id[1], f->app);
    assert_string_equal(seen.actor[0], "cli");
    assert_string_equal(seen.actor[1], "admin:42");
}

/* The look-alike index (lookalike.h) against create, rename, delete. */
static void expect_lookalike(fixture *f, uint64_t app, const char *name)
{
    const char *conflict = NULL;
    uint64_t id = 0;
    int rc = try_user(f->s, app, name, NULL, NULL, NULL, &id, &conflict);
    if (rc != STORE_EXISTS || !conflict || strcmp(conflict, STORE_CONFLICT_LOOKALIKE) != 0)
        fail_msg("%s: rc %d, conflict %s", name, rc, conflict ? conflict : "none");
    assert_lookup(f->s, app, LOGIN_NAME, name, STORE_NOTFOUND, 0);
}

static void test_lookalike_names(void **state)
{
    fixture *f = *state;
    const char *conflict = NULL;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    make_user(f->s, f->app, "ape", NULL, NULL);
    make_user(f->s, f->app, "admin", NULL, NULL);
    expect_lookalike(f, f->app, "Alice");                      /* case */
    expect_lookalike(f, f->app, "AIice");                      /* capital I for l */
    expect_lookalike(f, f->app, "\xd0\xb0\xd1\x80\xd0\xb5");   /* аре: all Cyrillic */
    expect_lookalike(f, f->app, "adrnin");                     /* rn for m */
    /* the other way round: a name with a capital I there first */
    make_user(f->s, f->app, "Ivan", NULL, NULL);
    expect_lookalike(f, f->app, "lvan");
    expect_lookalike(f, f->app, "1van");
    expect_lookalike(f, f->app, "ivan");
    make_user(f->s, f->app, "bob", NULL, NULL);
    make_user(f->s, make_app(f->s, "other"), "Alice", NULL, NULL);

    /* A rename to another case of one's own name is no conflict; the
     * name it leaves is free, the one it takes is guarded. */
    assert_int_equal(store_user_update(f->s, alice, "ALICE", NULL, NULL, &conflict, NULL), STORE_OK);
    expect_lookalike(f, f->app, "alice");
    uint64_t bob = 0;
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "bob", &bob), STORE_OK);
    conflict = NULL;
    assert_int_equal(store_user_update(f->s, bob, "Alice", NULL, NULL, &conflict, NULL), STORE_EXISTS);
    assert_string_equal(conflict, STORE_CONFLICT_LOOKALIKE);
    assert_lookup(f->s, f->app, LOGIN_NAME, "bob", STORE_OK, bob);
    assert_int_equal(store_user_update(f->s, bob, "robert", NULL, NULL, &conflict, NULL), STORE_OK);
    make_user(f->s, f->app, "Bob", NULL, NULL);   /* bob's old name is free */

    /* Deleted, a name frees its look-alikes. */
    assert_int_equal(store_user_delete(f->s, alice, NULL, NULL), STORE_OK);
    make_user(f->s, f->app, "Alice", NULL, NULL);
}

static void test_lookalike_import(void **state)
{
    fixture *f = *state;
    store_user a = TOKEND__V1__STORE__USER__INIT, b = TOKEND__V1__STORE__USER__INIT;
    store_user *users[2] = {&a, &b};
    int rcs[2];
    const char *conflict[2];
    a.name = "carol", b.name = "Carol";
    a.password_hash = b.password_hash = "$argon2id$fake";
    /* One line of a batch looks like another of the same batch. */
    assert_int_equal(store_users_import(f->s, f->app, users, 2, 0, 0, rcs, conflict), STORE_OK);
    assert_int_equal(rcs[0], STORE_OK);
    assert_int_equal(rcs[1], STORE_EXISTS);
    assert_string_equal(conflict[1], STORE_CONFLICT_LOOKALIKE);
    assert_lookup(f->s, f->app, LOGIN_NAME, "Carol", STORE_NOTFOUND, 0);
    /* Allowed: a migration's accounts as they were, each indexed. */
    a.name = "dave", b.name = "Dave";
    assert_int_equal(store_users_import(f->s, f->app, users, 2, 1, 1, rcs, conflict), STORE_OK);
    assert_int_equal(rcs[0], STORE_OK);
    assert_int_equal(rcs[1], STORE_OK);
    uint64_t dave = 0;
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "dave", &dave), STORE_OK);
    assert_int_equal(store_user_delete(f->s, dave, NULL, NULL), STORE_OK);
    expect_lookalike(f, f->app, "DAVE");   /* Dave is still there */
}

/* What an older tokend, or this one with another ICU, left: the index is
 * made again when the directory is opened. */
typedef enum { NO_MARK, OTHER_VERSION, OTHER_COUNT } stale;

static void open_stale(fixture *f, stale how)
{
    store_close(f->s);
    f->s = NULL;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi logins, meta;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t dropped = 0;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "logins", 0, &logins), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_cursor_open(txn, logins, &cur), 0);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        if (k.mv_size > 18 && ((char *)k.mv_data)[k.mv_size - 9] == 0 &&
            strchr("bcl", ((char *)k.mv_data)[8])) {
            assert_int_equal(mdb_cursor_del(cur, 0), 0);
            dropped++;
        }
    mdb_cursor_close(cur);
    assert_int_equal(dropped, 1);   /* "erin": one key for both */
    k.mv_data = STORE_LOOK_MARK, k.mv_size = strlen(STORE_LOOK_MARK);
    if (how == NO_MARK) {
        assert_int_equal(mdb_del(txn, meta, &k, NULL), 0);
    } else {
        char mark[256];
        assert_int_equal(mdb_get(txn, meta, &k, &v), 0);
        assert_true(v.mv_size > 8 && v.mv_size < sizeof mark);
        memcpy(mark, v.mv_data, v.mv_size);
        assert_int_equal(mark[7], 1);               /* one user, big-endian */
        assert_memory_equal(mark + 8, "keys 1; ICU ", 12);
        if (how == OTHER_VERSION)
            mark[v.mv_size - 1] ^= 1;
        else
            mark[7] = 2;   /* an older build deleted one user: the count is more */
        v.mv_data = mark;
        assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    f->s = open_or_fail(f->dir, TEST_MAPSIZE);
}

static void test_lookalike_index_at_open(void **state)
{
    fixture *f = *state;
    make_user(f->s, f->app, "erin", NULL, NULL);
    for (stale how = NO_MARK; how <= OTHER_COUNT; how++) {
        open_stale(f, how);
        expect_lookalike(f, f->app, "Erin");
    }
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup_app, fixture_teardown)
        T(test_user_update),
        T(test_user_set_password),
        T(test_user_set_disabled),
        T(test_users_set_disabled_all_or_none),
        T(test_user_delete),
        T(test_users_list),
        T(test_groups),
        T(test_audit_list),
        T(test_lookalike_names),
        T(test_lookalike_import),
        T(test_lookalike_index_at_open),
#undef T
    };
    return cmocka_run_group_tests_name("store_users", tests, NULL, NULL);
}
