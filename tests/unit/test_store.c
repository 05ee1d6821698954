/* test_store.c - store.c against a real LMDB environment in a fresh
 * temporary directory per test: apps, users and their unique indexes,
 * login commits with devices and push tokens, durability across
 * reopen, and visibility of another process's writes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <lmdb.h>

#include "crypto.h"
#include "pb.h"
#include "store.h"
#include "store_internal.h"
#include "fixture.h"

static void assert_device(store *s, uint64_t app_id, const char *guid, uint64_t user_id,
                          uint32_t sn, uint8_t push_tag)
{
    store_device *d = NULL;
    uint8_t h[CRYPTO_HASH_BYTES];
    assert_int_equal(store_device_get(s, app_id, guid, &d), STORE_OK);
    assert_non_null(d);
    assert_int_equal(d->user_id, user_id);
    assert_int_equal(d->device_sn, sn);
    fill_hash(h, (uint8_t)(push_tag + 200));
    assert_int_equal(d->push_token_hash.len, CRYPTO_HASH_BYTES);
    assert_memory_equal(d->push_token_hash.data, h, CRYPTO_HASH_BYTES);
    protobuf_c_message_free_unpacked(&d->base, NULL);
}

static void assert_device_token(store *s, uint64_t app_id, const char *guid, const char *token,
                                const char *notifier)
{
    store_device *d = NULL;
    assert_int_equal(store_device_get(s, app_id, guid, &d), STORE_OK);
    assert_string_equal(d->device_token ? d->device_token : "", token);
    assert_string_equal(d->notifier_name ? d->notifier_name : "", notifier);
    protobuf_c_message_free_unpacked(&d->base, NULL);
}

/* --- apps ---------------------------------------------------------------- */

static void test_app_create_default_and_get(void **state)
{
    fixture *f = *state;
    uint64_t dflt = 0;
    store_app *a = NULL;

    assert_int_equal(store_default_app(f->s, &dflt), STORE_NOTFOUND);
    uint64_t one = make_app(f->s, "one");
    uint64_t two = make_app(f->s, "two");
    uint64_t three = make_app(f->s, "three");
    assert_true(two > one);
    assert_true(three > two);

    /* The first app stays the default. */
    assert_int_equal(store_default_app(f->s, &dflt), STORE_OK);
    assert_int_equal(dflt, one);

    assert_int_equal(store_app_get(f->s, two, &a), STORE_OK);
    assert_non_null(a);
    assert_int_equal(a->app_id, two);
    assert_string_equal(a->name, "two");
    assert_int_equal(a->token_ttl_ms, 3600000);
    assert_true(a->open_registration);
    assert_int_equal(a->created_ms, 1700000000000);
    protobuf_c_message_free_unpacked(&a->base, NULL);

    a = NULL;
    assert_int_equal(store_app_get(f->s, one, &a), STORE_OK);
    assert_string_equal(a->name, "one");
    protobuf_c_message_free_unpacked(&a->base, NULL);

    a = NULL;
    assert_int_equal(store_app_get(f->s, three + 1000, &a), STORE_NOTFOUND);
    assert_int_equal(store_app_get(f->s, 0, &a), STORE_NOTFOUND);
}

/* --- users --------------------------------------------------------------- */

static void test_user_create_get_lookup(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t id = 0;
    const char *conflict = NULL;
    store_user *u = NULL;

    assert_int_equal(try_user(f->s, app, "alice", "+15550100", "alice@example.com", "$h1", &id,
                              &conflict), STORE_OK);
    assert_true(id != 0);
    uint64_t id2 = make_user(f->s, app, "bob", "+15550101", "bob@example.com");
    assert_true(id2 > id);

    assert_int_equal(store_user_get(f->s, id, &u), STORE_OK);
    assert_non_null(u);
    assert_int_equal(u->user_id, id);
    assert_int_equal(u->app_id, app);
    assert_string_equal(u->name, "alice");
    assert_string_equal(u->phone, "+15550100");
    assert_string_equal(u->email, "alice@example.com");
    assert_string_equal(u->password_hash, "$h1");
    assert_int_equal(u->created_ms, 1700000000123);
    assert_false(u->disabled);
    protobuf_c_message_free_unpacked(&u->base, NULL);

    assert_lookup(f->s, app, LOGIN_NAME, "alice", STORE_OK, id);
    assert_lookup(f->s, app, LOGIN_PHONE, "+15550100", STORE_OK, id);
    assert_lookup(f->s, app, LOGIN_EMAIL, "alice@example.com", STORE_OK, id);
    assert_lookup(f->s, app, LOGIN_NAME, "bob", STORE_OK, id2);
    assert_lookup(f->s, app, LOGIN_PHONE, "+15550101", STORE_OK, id2);
    assert_lookup(f->s, app, LOGIN_EMAIL, "bob@example.com", STORE_OK, id2);

    /* The kind is part of the key, names compare exactly. */
    assert_lookup(f->s, app, LOGIN_PHONE, "alice", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_EMAIL, "alice", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_NAME, "+15550100", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_NAME, "Alice", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_NAME, "alic", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_NAME, "carol", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app + 1, LOGIN_NAME, "alice", STORE_NOTFOUND, 0);

    u = NULL;
    assert_int_equal(store_user_get(f->s, id2 + 1000, &u), STORE_NOTFOUND);
}

static void test_user_without_phone_or_email(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    /* Empty phone and email are not indexed, so several users may lack them. */
    uint64_t a = make_user(f->s, app, "alice", "", "");
    uint64_t b = make_user(f->s, app, "bob", NULL, NULL);
    assert_true(a != b);
    assert_lookup(f->s, app, LOGIN_PHONE, "", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_EMAIL, "", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_NAME, "bob", STORE_OK, b);
}

static void test_user_duplicate_name(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t alice = make_user(f->s, app, "alice", "+15550100", "alice@example.com");
    uint64_t id = 0;
    const char *conflict = NULL;

    assert_int_equal(try_user(f->s, app, "alice", "+15550199", "other@example.com", NULL, &id,
                              &conflict), STORE_EXISTS);
    assert_non_null(conflict);
    assert_string_equal(conflict, "name");
    /* Nothing of the refused user was written. */
    assert_lookup(f->s, app, LOGIN_PHONE, "+15550199", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_EMAIL, "other@example.com", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_NAME, "alice", STORE_OK, alice);
    if (id != alice) {
        store_user *u = NULL;
        assert_int_equal(store_user_get(f->s, id, &u), STORE_NOTFOUND);
    }
}

static void test_user_duplicate_phone(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t alice = make_user(f->s, app, "alice", "+15550100", "alice@example.com");
    uint64_t id = 0;
    const char *conflict = NULL;
    store_user *u = NULL;

    assert_int_equal(try_user(f->s, app, "bob", "+15550100", "bob@example.com", NULL, &id,
                              &conflict), STORE_EXISTS);
    assert_non_null(conflict);
    assert_string_equal(conflict, "phone");
    /* The name key was put before the phone clashed: it must be gone. */
    assert_lookup(f->s, app, LOGIN_NAME, "bob", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_EMAIL, "bob@example.com", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_PHONE, "+15550100", STORE_OK, alice);
    assert_int_equal(store_user_get(f->s, id, &u), STORE_NOTFOUND);

    /* With another phone, bob can be created after all. */
    uint64_t bob = make_user(f->s, app, "bob", "+15550101", "bob@example.com");
    assert_lookup(f->s, app, LOGIN_NAME, "bob", STORE_OK, bob);
}

static void test_user_duplicate_email(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t alice = make_user(f->s, app, "alice", "+15550100", "alice@example.com");
    uint64_t id = 0;
    const char *conflict = NULL;
    store_user *u = NULL;

    assert_int_equal(try_user(f->s, app, "carol", "+15550177", "alice@example.com", NULL, &id,
                              &conflict), STORE_EXISTS);
    assert_non_null(conflict);
    assert_string_equal(conflict, "email");
    /* Name and phone keys were put before the email clashed: both gone. */
    assert_lookup(f->s, app, LOGIN_NAME, "carol", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_PHONE, "+15550177", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app, LOGIN_EMAIL, "alice@example.com", STORE_OK, alice);
    assert_int_equal(store_user_get(f->s, id, &u), STORE_NOTFOUND);

    /* Alice's own record is untouched. */
    assert_int_equal(store_user_get(f->s, alice, &u), STORE_OK);
    assert_string_equal(u->name, "alice");
    protobuf_c_message_free_unpacked(&u->base, NULL);
}

static void test_user_same_name_other_app(void **state)
{
    fixture *f = *state;
    uint64_t a1 = make_app(f->s, "one");
    uint64_t a2 = make_app(f->s, "two");
    uint64_t u1 = make_user(f->s, a1, "alice", "+15550100", "alice@example.com");
    uint64_t u2 = make_user(f->s, a2, "alice", "+15550100", "alice@example.com");
    assert_true(u1 != u2);
    assert_lookup(f->s, a1, LOGIN_NAME, "alice", STORE_OK, u1);
    assert_lookup(f->s, a2, LOGIN_NAME, "alice", STORE_OK, u2);
    assert_lookup(f->s, a1, LOGIN_PHONE, "+15550100", STORE_OK, u1);
    assert_lookup(f->s, a2, LOGIN_PHONE, "+15550100", STORE_OK, u2);
    assert_lookup(f->s, a1, LOGIN_EMAIL, "alice@example.com", STORE_OK, u1);
    assert_lookup(f->s, a2, LOGIN_EMAIL, "alice@example.com", STORE_OK, u2);

    store_user *u = NULL;
    assert_int_equal(store_user_get(f->s, u2, &u), STORE_OK);
    assert_int_equal(u->app_id, a2);
    protobuf_c_message_free_unpacked(&u->base, NULL);
}

static void test_user_unknown_app(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t id = 0;
    const char *conflict = NULL;
    assert_int_equal(try_user(f->s, app + 4242, "alice", "+15550100", "a@example.com", NULL, &id,
                              &conflict), STORE_NOTFOUND);
    assert_null(conflict);
    assert_lookup(f->s, app + 4242, LOGIN_NAME, "alice", STORE_NOTFOUND, 0);
    assert_lookup(f->s, app + 4242, LOGIN_PHONE, "+15550100", STORE_NOTFOUND, 0);
    /* And the name is still free in the real app. */
    make_user(f->s, app, "alice", "+15550100", "a@example.com");
}

/* --- logins, sessions, devices ------------------------------------------ */

static void test_login_without_device(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t user = make_user(f->s, app, "alice", NULL, NULL);
    uint8_t h[CRYPTO_HASH_BYTES], sth[CRYPTO_HASH_BYTES];
    store_session *sess = NULL;
    store_device *d = NULL;

    assert_int_equal(do_login(f->s, app, user, NULL, 1, 0, NULL, NULL), STORE_OK);
    fill_hash(h, 1);
    fill_hash(sth, 101);
    assert_int_equal(store_session_get(f->s, h, &sess), STORE_OK);
    assert_non_null(sess);
    assert_int_equal(sess->user_id, user);
    assert_int_equal(sess->app_id, app);
    assert_string_equal(sess->device_guid, "");
    assert_int_equal(sess->expire_ms, 1700003600000);
    assert_string_equal(sess->access_key_secret, "secret");
    assert_int_equal(sess->created_ms, 1700000000001);
    assert_int_equal(sess->store_token_hash.len, CRYPTO_HASH_BYTES);
    assert_memory_equal(sess->store_token_hash.data, sth, CRYPTO_HASH_BYTES);
    protobuf_c_message_free_unpacked(&sess->base, NULL);

    /* No device record, no push token. */
    assert_int_equal(store_device_get(f->s, app, "", &d), STORE_NOTFOUND);
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);

    /* The hot path's read leaves out the secrets a check does not need. */
    _Alignas(16) uint8_t space[4096];
    pb_arena a;
    ProtobufCAllocator alloc = pb_arena_init(&a, space, sizeof space);
    const uint8_t *hp = h;
    assert_int_equal(store_sessions_get(f->s, 1, &hp, &sess, &alloc), STORE_OK);
    assert_non_null(sess);
    assert_true(sess->user_id == user && sess->app_id == app && sess->expire_ms == 1700003600000);
    assert_string_equal(sess->access_key_secret, "");
    assert_int_equal(sess->store_token_hash.len, 0);

    /* Another hash is not a session. */
    sess = NULL;
    fill_hash(h, 2);
    assert_int_equal(store_session_get(f->s, h, &sess), STORE_NOTFOUND);

    /* The same session hash cannot be committed twice. */
    assert_int_equal(do_login(f->s, app, user, NULL, 1, 0, NULL, NULL), STORE_EXISTS);
}

static void test_login_with_device(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t user = make_user(f->s, app, "alice", NULL, NULL);
    uint8_t h[CRYPTO_HASH_BYTES];
    store_session *sess = NULL;
    store_device *d = NULL;
    uint32_t sn = 0;

    assert_int_equal(do_login(f->s, app, user, "dev-1", 1, 2, "ua/1", &sn), STORE_OK);
    assert_int_equal(sn, 1);
    fill_hash(h, 1);
    assert_int_equal(store_session_get(f->s, h, &sess), STORE_OK);
    assert_string_equal(sess->device_guid, "dev-1");
    assert_int_equal(sess->user_id, user);
    assert_int_equal(sess->device_sn, 1);       /* the session knows its device */
    protobuf_c_message_free_unpacked(&sess->base, NULL);

    assert_device(f->s, app, "dev-1", user, 1, 1);
    assert_int_equal(store_device_get(f->s, app, "dev-1", &d), STORE_OK);
    assert_int_equal(d->platform, 2);
    assert_string_equal(d->user_agent, "ua/1");
    assert_int_equal(d->updated_ms, 1700000000001);
    protobuf_c_message_free_unpacked(&d->base, NULL);
    assert_push(f->s, 1, STORE_OK, app, "dev-1");

    /* The device belongs to the app. */
    d = NULL;
    assert_int_equal(store_device_get(f->s, app + 1, "dev-1", &d), STORE_NOTFOUND);

    /* A second device of the same user gets the next number. */
    assert_int_equal(do_login(f->s, app, user, "dev-2", 2, 1, "ua/2", &sn), STORE_OK);
    assert_int_equal(sn, 2);
    assert_device(f->s, app, "dev-2", user, 2, 2);
    assert_push(f->s, 2, STORE_OK, app, "dev-2");
    assert_push(f->s, 1, STORE_OK, app, "dev-1");

    /* The client binds an APNs token to dev-1. */
    assert_int_equal(store_device_bind(f->s, app, user, 1, "apns-1", "apns", NULL), STORE_OK);
    assert_device_token(f->s, app, "dev-1", "apns-1", "apns");
    assert_device_token(f->s, app, "dev-2", "", "");

    /* Logging in again on dev-1 keeps its number and replaces its push token;
     * platform and user agent left unset keep the old ones. */
    assert_int_equal(do_login(f->s, app, user, "dev-1", 3, 0, NULL, &sn), STORE_OK);
    assert_int_equal(sn, 1);
    assert_device(f->s, app, "dev-1", user, 1, 3);
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);
    assert_push(f->s, 3, STORE_OK, app, "dev-1");
    assert_device_token(f->s, app, "dev-1", "apns-1", "apns");   /* same user: kept */
    d = NULL;
    assert_int_equal(store_device_get(f->s, app, "dev-1", &d), STORE_OK);
    assert_int_equal(d->platform, 2);
    assert_string_equal(d->user_agent, "ua/1");
    protobuf_c_message_free_unpacked(&d->base, NULL);

    /* The first session is still there: a login does not end others. */
    sess = NULL;
    fill_hash(h, 1);
    assert_int_equal(store_session_get(f->s, h, &sess), STORE_OK);
    protobuf_c_message_free_unpacked(&sess->base, NULL);
}

static void test_device_moves_to_another_user(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t alice = make_user(f->s, app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, app, "bob", NULL, NULL);
    uint32_t sn = 0;

    /* alice: "shared" is her device 1. bob: "bob-phone" is his device 1. */
    assert_int_equal(do_login(f->s, app, alice, "shared", 1, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 1);
    assert_int_equal(do_login(f->s, app, bob, "bob-phone", 2, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 1);

    assert_int_equal(store_device_bind(f->s, app, alice, 1, "alice-fcm", "fcm", NULL), STORE_OK);
    assert_device_token(f->s, app, "shared", "alice-fcm", "fcm");

    /* bob logs in on "shared": it becomes his device 2 (not alice's 1). */
    assert_int_equal(do_login(f->s, app, bob, "shared", 3, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 2);
    assert_device(f->s, app, "shared", bob, 2, 3);
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);   /* alice's push token is dead */
    assert_push(f->s, 3, STORE_OK, app, "shared");
    assert_push(f->s, 2, STORE_OK, app, "bob-phone");
    /* alice's device token must not reach bob. */
    assert_device_token(f->s, app, "shared", "", "");

    /* alice has no device left: her next one is number 1 again. */
    assert_int_equal(do_login(f->s, app, alice, "alice-tab", 4, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 1);
    assert_device(f->s, app, "alice-tab", alice, 1, 4);

    /* Back to alice: numbered after alice-tab; bob's push token dies. */
    assert_int_equal(do_login(f->s, app, alice, "shared", 5, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 2);
    assert_device(f->s, app, "shared", alice, 2, 5);
    assert_push(f->s, 3, STORE_NOTFOUND, 0, NULL);
    assert_push(f->s, 5, STORE_OK, app, "shared");

    /* bob now has only "bob-phone" (1): his next device is 2. */
    assert_int_equal(do_login(f->s, app, bob, "bob-tab", 6, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 2);
}

static void test_device_same_guid_other_app(void **state)
{
    fixture *f = *state;
    uint64_t a1 = make_app(f->s, "one");
    uint64_t a2 = make_app(f->s, "two");
    uint64_t u1 = make_user(f->s, a1, "alice", NULL, NULL);
    uint64_t u2 = make_user(f->s, a2, "alice", NULL, NULL);
    uint32_t sn = 0;

    assert_int_equal(do_login(f->s, a1, u1, "dev", 1, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 1);
    assert_int_equal(do_login(f->s, a2, u2, "dev", 2, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 1);
    /* Separate devices: app 1's is untouched by app 2's login. */
    assert_device(f->s, a1, "dev", u1, 1, 1);
    assert_device(f->s, a2, "dev", u2, 1, 2);
    assert_push(f->s, 1, STORE_OK, a1, "dev");
    assert_push(f->s, 2, STORE_OK, a2, "dev");
}

/* --- durability ---------------------------------------------------------- */

static void test_reopen_durability(void **state)
{
    fixture *f = *state;
    uint8_t key[CRYPTO_KEY_BYTES], zero[CRYPTO_KEY_BYTES] = {0}, h[CRYPTO_HASH_BYTES];
    uint64_t dflt = 0, id = 0;
    uint32_t sn = 0;
    store_app *a = NULL;
    store_user *u = NULL;
    store_session *sess = NULL;

    memcpy(key, store_token_key(f->s), CRYPTO_KEY_BYTES);
    assert_memory_not_equal(key, zero, CRYPTO_KEY_BYTES);

    uint64_t app1 = make_app(f->s, "first");
    uint64_t app2 = make_app(f->s, "second");
    uint64_t alice = make_user(f->s, app1, "alice", "+15550100", "alice@example.com");
    uint64_t bob = make_user(f->s, app2, "bob", NULL, "bob@example.com");
    assert_int_equal(store_user_set_password(f->s, alice, "$rehashed", NULL, NULL, NULL), STORE_OK);
    assert_int_equal(do_login(f->s, app1, alice, NULL, 1, 0, NULL, NULL), STORE_OK);
    assert_int_equal(do_login(f->s, app1, alice, "dev", 2, 3, "ua/x", &sn), STORE_OK);

    store_close(f->s);
    f->s = NULL;   /* teardown must not close it twice if reopening fails */
    f->s = open_or_fail(f->dir, TEST_MAPSIZE);

    assert_memory_equal(store_token_key(f->s), key, CRYPTO_KEY_BYTES);
    assert_int_equal(store_default_app(f->s, &dflt), STORE_OK);
    assert_int_equal(dflt, app1);
    assert_int_equal(store_app_get(f->s, app2, &a), STORE_OK);
    assert_string_equal(a->name, "second");
    protobuf_c_message_free_unpacked(&a->base, NULL);

    assert_int_equal(store_user_get(f->s, alice, &u), STORE_OK);
    assert_string_equal(u->name, "alice");
    assert_string_equal(u->password_hash, "$rehashed");
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_lookup(f->s, app1, LOGIN_NAME, "alice", STORE_OK, alice);
    assert_lookup(f->s, app1, LOGIN_PHONE, "+15550100", STORE_OK, alice);
    assert_lookup(f->s, app1, LOGIN_EMAIL, "alice@example.com", STORE_OK, alice);
    assert_lookup(f->s, app2, LOGIN_NAME, "bob", STORE_OK, bob);
    assert_lookup(f->s, app2, LOGIN_EMAIL, "bob@example.com", STORE_OK, bob);

    fill_hash(h, 1);
    assert_int_equal(store_session_get(f->s, h, &sess), STORE_OK);
    assert_int_equal(sess->user_id, alice);
    protobuf_c_message_free_unpacked(&sess->base, NULL);
    sess = NULL;
    fill_hash(h, 2);
    assert_int_equal(store_session_get(f->s, h, &sess), STORE_OK);
    assert_string_equal(sess->device_guid, "dev");
    protobuf_c_message_free_unpacked(&sess->base, NULL);
    assert_device(f->s, app1, "dev", alice, 1, 2);
    assert_push(f->s, 2, STORE_OK, app1, "dev");

    /* Uniqueness survives the reopen, and ids keep counting up. */
    const char *conflict = NULL;
    assert_int_equal(try_user(f->s, app1, "alice", NULL, NULL, NULL, &id, &conflict),
                     STORE_EXISTS);
    assert_string_equal(conflict, "name");
    uint64_t app3 = make_app(f->s, "third");
    assert_true(app3 > app2);
    uint64_t carol = make_user(f->s, app1, "carol", NULL, NULL);
    assert_true(carol > bob);
    /* The device numbering continues from what was stored. */
    assert_int_equal(do_login(f->s, app1, alice, "dev-2", 3, 3, "ua/x", &sn), STORE_OK);
    assert_int_equal(sn, 2);

    /* A second reopen still has the same key. */
    store_close(f->s);
    f->s = NULL;   /* teardown must not close it twice if reopening fails */
    f->s = open_or_fail(f->dir, TEST_MAPSIZE);
    assert_memory_equal(store_token_key(f->s), key, CRYPTO_KEY_BYTES);
}

static void test_token_key_differs_per_directory(void **state)
{
    fixture *f = *state;
    char dir[64];
    assert_non_null(make_tmp_dir(dir));
    store *other = open_or_fail(dir, TEST_MAPSIZE);
    assert_memory_not_equal(store_token_key(f->s), store_token_key(other), CRYPTO_KEY_BYTES);
    store_close(other);
    rm_dir(dir);
}

/* The hash-keyed tables compare keys with a function of the store's own
 * (a big-endian word first): it must order every pair of keys as LMDB's
 * default does (the other tables use it), or a directory written by
 * another version or tool would not be found. Random keys, with shared
 * prefixes and every length around the word. */
static int sign(int x)
{
    return (x > 0) - (x < 0);
}

static void test_hash_keys_keep_lmdb_order(void **state)
{
    fixture *f = *state;
    MDB_txn *txn;
    uint8_t a[40], b[40];
    assert_int_equal(txn_begin(f->s, MDB_RDONLY, &txn), STORE_OK);
    srand(7);
    for (int i = 0; i < 100000; i++) {
        size_t la = (size_t)rand() % 41, lb = rand() % 4 ? la : (size_t)rand() % 41;
        for (size_t j = 0; j < sizeof a; j++)
            a[j] = (uint8_t)rand(), b[j] = rand() % 8 ? a[j] : (uint8_t)rand();
        size_t same = (size_t)rand() % 41;   /* a shared prefix, then one byte apart */
        memcpy(b, a, same);
        if (same < sizeof b && rand() % 2)
            b[same] = (uint8_t)(a[same] + (rand() % 2 ? 1 : 255));
        MDB_val x = {la, a}, y = {lb, b};
        int want = sign(mdb_cmp(txn, f->s->db[DB_LOGINS], &x, &y));
        assert_int_equal(sign(mdb_cmp(txn, f->s->db[DB_SESSIONS], &x, &y)), want);
        assert_int_equal(sign(mdb_cmp(txn, f->s->db[DB_PUSH_TOKENS], &x, &y)), want);
        assert_int_equal(sign(mdb_cmp(txn, f->s->db[DB_SESSIONS], &y, &x)), -want);
        assert_int_equal(mdb_cmp(txn, f->s->db[DB_SESSIONS], &x, &x), 0);
    }
    txn_abort(f->s, txn);
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[256] = "";
    store *s = NULL;
    assert_int_equal(store_open(&s, "/nonexistent-tokend/a/b", TEST_MAPSIZE, err, sizeof err),
                     STORE_ERR);
    assert_true(strlen(err) > 0);
    assert_non_null(strstr(err, "/nonexistent-tokend/a/b"));
}

/* Overwrites the data directory's token key with a value of the wrong size,
 * straight through LMDB, as a damaged or foreign directory would have it. */
static void spoil_token_key(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    MDB_val k = {3, "key"}, v = {5, "short"};
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* A refused open fails with a sentence naming dir and `why`, and leaves no
 * write transaction behind: one left open would hold the writer lock, and
 * the next writer of the directory would wait forever. The child finds out
 * under an alarm, so a regression fails instead of hanging. */
static void assert_open_refused(const char *dir, const char *why)
{
    int status = 0;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[256] = "";
        store *s = NULL;
        alarm(10);
        if (store_open(&s, dir, TEST_MAPSIZE, err, sizeof err) != STORE_ERR || s)
            _exit(10);
        if (!strstr(err, dir) || !strstr(err, why))
            _exit(11);
        /* The writer lock is free: a second open gets as far again. */
        if (store_open(&s, dir, TEST_MAPSIZE, err, sizeof err) != STORE_ERR || !strstr(err, why))
            _exit(12);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status))
        fail_msg("store_open of %s hung or crashed (signal %d)", dir, WTERMSIG(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_open_unreadable_key(void **state)
{
    (void)state;
    char dir[64];
    assert_non_null(make_tmp_dir(dir));
    store_close(open_or_fail(dir, TEST_MAPSIZE));
    spoil_token_key(dir);
    assert_open_refused(dir, "key");
    rm_dir(dir);
}

/* meta's "layout", read (layout NULL: deleted; 0: absent) or written
 * straight through LMDB, as another build would leave it. */
static uint64_t raw_layout(const char *dir, const uint64_t *layout, int del)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    MDB_val k = {6, "layout"}, v;
    uint8_t be[8];
    uint64_t found = 0;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    if (layout) {
        for (int i = 0; i < 8; i++)
            be[i] = (uint8_t)(*layout >> (56 - 8 * i));
        v = (MDB_val){8, be};
        assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    } else if (del) {
        assert_int_equal(mdb_del(txn, meta, &k, NULL), 0);
    } else if (mdb_get(txn, meta, &k, &v) == 0) {
        assert_int_equal(v.mv_size, 8);
        for (int i = 0; i < 8; i++)
            found = found << 8 | ((uint8_t *)v.mv_data)[i];
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    return found;
}

/* A directory is stamped with the layout of the build that made it; one
 * from before the stamp is stamped at open; one of a later layout is
 * refused, untouched, and opens again once its layout is one this build
 * reads. */
static void test_layout_stamp(void **state)
{
    (void)state;
    char dir[64];
    const uint64_t later = 2, first = 1;
    assert_non_null(make_tmp_dir(dir));
    store_close(open_or_fail(dir, TEST_MAPSIZE));
    assert_int_equal(raw_layout(dir, NULL, 0), 1);
    raw_layout(dir, NULL, 1);
    assert_int_equal(raw_layout(dir, NULL, 0), 0);
    store_close(open_or_fail(dir, TEST_MAPSIZE));
    assert_int_equal(raw_layout(dir, NULL, 0), 1);
    raw_layout(dir, &later, 0);
    assert_open_refused(dir, "written by a later tokend (data layout 2; this one reads layout 1)");
    assert_int_equal(raw_layout(dir, NULL, 0), 2);
    raw_layout(dir, &first, 0);
    store_close(open_or_fail(dir, TEST_MAPSIZE));
    rm_dir(dir);
}

/* --- several processes --------------------------------------------------- */

static void test_other_process_writes_are_visible(void **state)
{
    fixture *f = *state;
    uint64_t app = make_app(f->s, "app");
    uint64_t before = make_user(f->s, app, "parent-1", NULL, NULL);
    int status = 0;

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child must not touch the parent's handle: it opens its own. */
        char err[256];
        store *s = NULL;
        store_user u = TOKEND__V1__STORE__USER__INIT;
        const char *conflict = NULL;
        int code = 0;
        if (store_open(&s, f->dir, TEST_MAPSIZE, err, sizeof err) != STORE_OK)
            _exit(10);
        u.app_id = app;
        u.name = "child";
        u.phone = "+15550123";
        u.email = "";
        u.password_hash = "$child";
        if (store_user_create(s, &u, &conflict, NULL) != STORE_OK)
            code = 11;
        /* And the child sees what the parent wrote before the fork. */
        else if (store_user_lookup(s, app, LOGIN_NAME, "parent-1", &(uint64_t){0}) != STORE_OK)
            code = 12;
        store_close(s);
        _exit(code);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* The parent's open handle sees the child's commit. */
    uint64_t child = 0;
    store_user *u = NULL;
    assert_int_equal(store_user_lookup(f->s, app, LOGIN_NAME, "child", &child), STORE_OK);
    assert_true(child != before);
    assert_lookup(f->s, app, LOGIN_PHONE, "+15550123", STORE_OK, child);
    assert_int_equal(store_user_get(f->s, child, &u), STORE_OK);
    assert_string_equal(u->password_hash, "$child");
    protobuf_c_message_free_unpacked(&u->base, NULL);

    /* The id counter is shared too: the parent's next user gets a new id. */
    uint64_t after = make_user(f->s, app, "parent-2", NULL, NULL);
    assert_true(after != child && after != before);
    const char *conflict = NULL;
    assert_int_equal(try_user(f->s, app, "child", NULL, NULL, NULL, NULL, &conflict),
                     STORE_EXISTS);
}

/* A server that starts while a restore runs waits for it, then reads the
 * restored data: not the old data's lock file (its transaction number,
 * taken against the backup's meta pages, would pick the empty one). The
 * backup is big enough that its copy gives the waiter time to start. */
static void test_restore_while_a_server_waits(void **state)
{
    (void)state;
    char dir[64], backup[96], marker[96];
    char err[256];
    assert_non_null(make_tmp_dir(dir));
    snprintf(backup, sizeof backup, "%s.backup", dir);
    snprintf(marker, sizeof marker, "%s/data.mdb.restoring", dir);
    store *s = open_or_fail(dir, TEST_MAPSIZE);
    MDB_txn *txn;
    size_t big = (size_t)24 << 20;
    char *filler = calloc(1, big);
    assert_non_null(filler);
    assert_int_equal(mdb_txn_begin(s->env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_put(txn, s->db[DB_META], &(MDB_val){6, "filler"}, &(MDB_val){big, filler}, 0), 0);
    assert_int_equal(mdb_put(txn, s->db[DB_META], &(MDB_val){4, "when"}, &(MDB_val){6, "backup"}, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    free(filler);
    assert_int_equal(store_backup(s, backup, err, sizeof err), STORE_OK);
    /* later writes, up to an even transaction number (the compact copy's
     * empty meta page is the even one) */
    MDB_envinfo info;
    do {
        assert_int_equal(mdb_txn_begin(s->env, NULL, 0, &txn), 0);
        assert_int_equal(mdb_put(txn, s->db[DB_META], &(MDB_val){4, "when"}, &(MDB_val){5, "after"}, 0), 0);
        assert_int_equal(mdb_txn_commit(txn), 0);
        assert_int_equal(mdb_env_info(s->env, &info), 0);
    } while (info.me_last_txnid % 2 != 0);
    store_close(s);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(store_restore(backup, dir, 1, err, sizeof err) == STORE_OK ? 0 : 1);
    for (int i = 0; i < 50000 && access(marker, F_OK) != 0; i++)
        usleep(100);
    /* the "server": LMDB's own open, which waits on the restore's lock */
    MDB_env *env;
    MDB_dbi meta;
    MDB_val v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, DB_COUNT), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_get(txn, meta, &(MDB_val){4, "when"}, &v), 0);
    assert_int_equal(v.mv_size, 6);
    assert_memory_equal(v.mv_data, "backup", 6);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    unlink(backup);
}

/* Another process opens the directory with a bigger map and grows the data
 * past this handle's map: this handle must follow (MDB_MAP_RESIZED). */
static void test_other_process_grows_map(void **state)
{
    (void)state;
    char dir[64];
    int status = 0;
    assert_non_null(make_tmp_dir(dir));
    store *s = open_or_fail(dir, (size_t)1 << 20);
    uint64_t app = make_app(s, "app");

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static char big[3000];
        char err[256], name[32];
        store *c = NULL;
        int code = 0;
        memset(big, 'h', sizeof big - 1);
        if (store_open(&c, dir, (size_t)16 << 20, err, sizeof err) != STORE_OK)
            _exit(10);
        for (int i = 0; i < 1000 && !code; i++) {
            store_user u = TOKEND__V1__STORE__USER__INIT;
            const char *conflict = NULL;
            snprintf(name, sizeof name, "grown%d", i);
            u.app_id = app;
            u.name = name;
            u.phone = u.email = "";
            u.password_hash = big;
            if (store_user_create(c, &u, &conflict, NULL) != STORE_OK)
                code = 11;
        }
        store_close(c);
        _exit(code);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* About 4 MB of users now: far beyond this handle's 1 MiB map. */
    uint64_t id = 0;
    store_user *u = NULL;
    assert_int_equal(store_user_lookup(s, app, LOGIN_NAME, "grown999", &id), STORE_OK);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_int_equal(strlen(u->password_hash), 2999);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    /* And it can still write. */
    make_user(s, app, "after-growth", NULL, NULL);
    store_close(s);
    rm_dir(dir);
}

/* --- read transactions kept open (event loops) ---------------------------- */

/* mdb_reader_list prints a header, then "pid thread txnid" a slot; a reset
 * transaction's txnid is "-". Counts the slots that pin a snapshot. */
static int count_pinning(const char *msg, void *ctx)
{
    char txnid[32];
    if (strstr(msg, "pid") == NULL && sscanf(msg, "%*d %*x %31s", txnid) == 1 && strcmp(txnid, "-") != 0)
        ++*(int *)ctx;
    return 0;
}

static int pinning_readers(store *s)
{
    int n = 0;
    mdb_reader_list(s->env, count_pinning, &n);
    return n;
}

/* A parked read transaction is taken again only while no write has
 * committed: every read still sees every commit. A tick ends it once a
 * commit has made it old, or when it went unused a whole tick, so it pins
 * old pages no longer than that and an idle loop holds none. */
static void test_kept_reads_see_every_commit(void **state)
{
    (void)state;
    char dir[64];
    assert_non_null(make_tmp_dir(dir));
    store *s = open_or_fail(dir, (size_t)1 << 20);
    uint64_t app = make_app(s, "app");
    uint64_t first = make_user(s, app, "first", NULL, NULL);
    store_reads_keep(1);
    assert_lookup(s, app, LOGIN_NAME, "first", STORE_OK, first);
    assert_true(store_reads_parked(s));
    assert_int_equal(pinning_readers(s), 1);
    store_read_tick(s);                       /* the newest snapshot, used: kept */
    assert_true(store_reads_parked(s));
    assert_lookup(s, app, LOGIN_NAME, "second", STORE_NOTFOUND, 0);
    store_read_tick(s);
    assert_true(store_reads_parked(s));
    store_read_tick(s);                       /* not used since the last tick: ended */
    assert_false(store_reads_parked(s));
    assert_int_equal(pinning_readers(s), 0);

    uint64_t second = make_user(s, app, "second", NULL, NULL);
    assert_lookup(s, app, LOGIN_NAME, "second", STORE_OK, second);
    assert_lookup(s, app, LOGIN_NAME, "first", STORE_OK, first);

    make_user(s, app, "third", NULL, NULL);   /* the parked one is now old */
    assert_true(store_reads_parked(s));
    store_read_tick(s);
    assert_false(store_reads_parked(s));
    assert_int_equal(pinning_readers(s), 0);

    /* Turning it off ends a parked one at once. */
    assert_lookup(s, app, LOGIN_NAME, "third", STORE_OK, second + 1);
    assert_true(store_reads_parked(s));
    store_reads_keep(0);
    assert_false(store_reads_parked(s));
    assert_int_equal(pinning_readers(s), 0);
    assert_lookup(s, app, LOGIN_NAME, "first", STORE_OK, first);
    assert_false(store_reads_parked(s));
    store_close(s);
    rm_dir(dir);
}

/* --- map growth ------------------------------------------------------------ */

/* A store opened with a small map grows it before it fills: writes far
 * beyond the initial size succeed instead of failing with STORE_FULL. */
static void test_small_map_grows(void **state)
{
    (void)state;
    char dir[64];
    static char big[3000];
    char name[32];
    uint64_t first = 0, id = 0;
    assert_non_null(make_tmp_dir(dir));
    store *s = open_or_fail(dir, (size_t)1 << 20);
    uint64_t app = make_app(s, "app");
    memset(big, 'h', sizeof big - 1);
    for (int n = 0; n < 1000; n++) {
        const char *conflict;
        snprintf(name, sizeof name, "user%d", n);
        int rc = try_user(s, app, name, NULL, NULL, big, &id, &conflict);
        if (rc != STORE_OK)
            fail_msg("user %d of 1000 (about %d KiB written into a 1 MiB map): %s", n, n * 3,
                     store_strerror(rc));
        if (n == 0)
            first = id;
    }
    assert_lookup(s, app, LOGIN_NAME, "user0", STORE_OK, first);
    assert_lookup(s, app, LOGIN_NAME, "user999", STORE_OK, id);
    store_close(s);
    /* And it reopens with the data, whatever map size is asked for. */
    s = open_or_fail(dir, (size_t)1 << 20);
    assert_lookup(s, app, LOGIN_NAME, "user999", STORE_OK, id);
    make_user(s, app, "after-reopen", NULL, NULL);
    store_close(s);
    rm_dir(dir);
}

/* Growing the map while other threads read: LMDB may only resize with no
 * transaction of the process active, so readers must neither fail nor
 * crash while writers grow the map under them. */
typedef struct {
    store *s;
    uint64_t app, user_id;
    int stop;                     /* atomic */
    int keep;                     /* park read transactions, as event loops do */
    long reads, errors;
} reader_arg;

static void *read_loop(void *p)
{
    reader_arg *a = p;
    uint8_t h[CRYPTO_HASH_BYTES];
    fill_hash(h, 1);
    store_reads_keep(a->keep);
    for (long n = 0; !__atomic_load_n(&a->stop, __ATOMIC_RELAXED); n++) {
        if (a->keep && n % 8 == 0)
            store_read_tick(a->s);
        store_session *ss = NULL;
        uint64_t id = 0;
        int rc = store_session_get(a->s, h, &ss);
        if (rc == STORE_OK)
            protobuf_c_message_free_unpacked(&ss->base, NULL);
        else
            __atomic_add_fetch(&a->errors, 1, __ATOMIC_RELAXED);
        if (store_user_lookup(a->s, a->app, LOGIN_NAME, "reader-target", &id) != STORE_OK ||
            id != a->user_id)
            __atomic_add_fetch(&a->errors, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&a->reads, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void map_grows_under_reads(int keep)
{
    char dir[64];
    static char big[3000];
    char name[32];
    pthread_t readers[2];
    reader_arg a = {0};
    assert_non_null(make_tmp_dir(dir));
    a.s = open_or_fail(dir, (size_t)1 << 20);
    a.keep = keep;
    a.app = make_app(a.s, "app");
    a.user_id = make_user(a.s, a.app, "reader-target", NULL, NULL);
    assert_int_equal(do_login(a.s, a.app, a.user_id, NULL, 1, 0, NULL, NULL), STORE_OK);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, read_loop, &a), 0);

    memset(big, 'h', sizeof big - 1);
    int failed_at = -1, rc = STORE_OK;
    uint64_t last = 0;
    for (int n = 0; n < 600 && failed_at < 0; n++) {
        const char *conflict;
        snprintf(name, sizeof name, "user%d", n);
        if ((rc = try_user(a.s, a.app, name, NULL, NULL, big, &last, &conflict)) != STORE_OK)
            failed_at = n;
    }
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 2; i++)
        pthread_join(readers[i], NULL);
    if (failed_at >= 0)
        fail_msg("write %d failed: %s", failed_at, store_strerror(rc));
    assert_int_equal(__atomic_load_n(&a.errors, __ATOMIC_RELAXED), 0);
    assert_true(__atomic_load_n(&a.reads, __ATOMIC_RELAXED) > 0);
    assert_lookup(a.s, a.app, LOGIN_NAME, "user599", STORE_OK, last);
    store_close(a.s);
    rm_dir(dir);
}

static void test_map_grows_under_concurrent_reads(void **state)
{
    (void)state;
    map_grows_under_reads(0);
}

/* The same with the readers' transactions parked between reads: a resize
 * ends them first (LMDB resizes only with no transaction of the process
 * open), and the readers go on. */
static void test_map_grows_under_kept_reads(void **state)
{
    (void)state;
    map_grows_under_reads(1);
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
        T(test_app_create_default_and_get),
        T(test_user_create_get_lookup),
        T(test_user_without_phone_or_email),
        T(test_user_duplicate_name),
        T(test_user_duplicate_phone),
        T(test_user_duplicate_email),
        T(test_user_same_name_other_app),
        T(test_user_unknown_app),
        T(test_login_without_device),
        T(test_login_with_device),
        T(test_device_moves_to_another_user),
        T(test_device_same_guid_other_app),
        T(test_reopen_durability),
        T(test_token_key_differs_per_directory),
        T(test_hash_keys_keep_lmdb_order),
        T(test_other_process_writes_are_visible),
        cmocka_unit_test(test_other_process_grows_map),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_open_unreadable_key),
        cmocka_unit_test(test_layout_stamp),
        cmocka_unit_test(test_restore_while_a_server_waits),
        cmocka_unit_test(test_small_map_grows),
        cmocka_unit_test(test_map_grows_under_concurrent_reads),
        cmocka_unit_test(test_map_grows_under_kept_reads),
        cmocka_unit_test(test_kept_reads_see_every_commit),
#undef T
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
