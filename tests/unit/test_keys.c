/* test_keys.c - key rotation in the store (issue 11): the token-hash key
 * ring (newest first, persisted, seen by another handle, retired once no
 * session uses a key, bounded) and the apps' key pairs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include "fixture.h"

static void rotation_puts_a_new_key_first_and_keeps_the_old(void **state)
{
    fixture *f = *state;
    const store_keyring *r = store_keys(f->s);
    assert_int_equal(r->n, 1);
    assert_int_equal(r->keys[0].id, 0);
    uint8_t old[CRYPTO_KEY_BYTES];
    memcpy(old, store_token_key(f->s), sizeof old);
    uint32_t id = 99;
    assert_int_equal(store_rotate_token_key(f->s, &id), STORE_OK);
    assert_int_equal(id, 1);
    r = store_keys(f->s);
    assert_int_equal(r->n, 2);
    assert_int_equal(r->keys[0].id, 1);
    assert_int_equal(store_token_key_id(f->s), 1);
    assert_memory_not_equal(store_token_key(f->s), old, sizeof old);
    assert_memory_equal(store_token_key_of(f->s, 0), old, sizeof old);
    assert_null(store_token_key_of(f->s, 7));
    /* another handle (the server, while the CLI rotates) sees it on refresh */
    store *other = open_or_fail(f->dir, TEST_MAPSIZE);
    assert_int_equal(store_token_key_id(other), 1);
    assert_int_equal(store_rotate_token_key(f->s, &id), STORE_OK);
    assert_int_equal(store_token_key_id(other), 1);
    assert_int_equal(store_keys_refresh(other), 1);
    assert_int_equal(store_token_key_id(other), 2);
    assert_int_equal(store_keys_refresh(other), 0);
    store_close(other);
}

/* A server runs for years: every rotation it sees is published, however
 * many (a table of 64 kept rings once stopped taking new ones, and the
 * server kept hashing with a key the CLI had rotated away). */
static void every_rotation_is_seen_however_many(void **state)
{
    fixture *f = *state;
    store *other = open_or_fail(f->dir, TEST_MAPSIZE);
    uint32_t id = 0;
    for (int i = 1; i <= 150; i++) {
        assert_int_equal(store_rotate_token_key(f->s, &id), STORE_OK);
        assert_int_equal(id, (uint32_t)i);
        assert_int_equal(store_token_key_id(f->s), (uint32_t)i);
        assert_int_equal(store_keys_refresh(other), 1);
        assert_int_equal(store_token_key_id(other), (uint32_t)i);
    }
    store_close(other);
}

/* app rotate-key's two keys are one change: an unknown app rotates neither. */
static void both_keys_or_neither(void **state)
{
    fixture *f = *state;
    uint32_t token_id = 0, pair_id = 0;
    assert_int_equal(store_rotate_keys(f->s, f->app + 1000, &token_id, &pair_id), STORE_NOTFOUND);
    store_keys_refresh(f->s);
    assert_int_equal(store_token_key_id(f->s), 0);
    assert_int_equal(store_keys(f->s)->n, 1);
    assert_int_equal(store_rotate_keys(f->s, f->app, &token_id, &pair_id), STORE_OK);
    assert_int_equal(token_id, 1);
    assert_int_equal(store_token_key_id(f->s), 1);
    store_app *app = NULL;
    assert_int_equal(store_app_get(f->s, f->app, &app), STORE_OK);
    assert_int_equal(app->keys[app->n_keys - 1]->key_id, pair_id);
    /* the new pair is sealed with the new token key, not the one rotated away */
    assert_int_equal(app->keys[app->n_keys - 1]->sealed_with, token_id);
    protobuf_c_message_free_unpacked(&app->base, NULL);
}

static void a_key_retires_when_its_last_session_goes(void **state)
{
    fixture *f = *state;
    uint64_t uid = make_user(f->s, f->app, "alice", NULL, NULL);
    size_t purged;
    /* a session under key 0, expiring; then rotate */
    assert_int_equal(do_login_until(f->s, f->app, uid, NULL, 1, 1, "ua", NULL, 1000), STORE_OK);
    uint32_t id;
    assert_int_equal(store_rotate_token_key(f->s, &id), STORE_OK);
    /* a purge that removes nothing else keeps key 0: its session lives */
    assert_int_equal(store_purge_expired(f->s, 500, 100, &purged), STORE_OK);
    assert_int_equal(purged, 0);
    store_keys_refresh(f->s);
    assert_int_equal(store_keys(f->s)->n, 2);
    /* once it expires and is purged, key 0 leaves the ring */
    assert_int_equal(store_purge_expired(f->s, 2000, 100, &purged), STORE_OK);
    assert_int_equal(purged, 1);
    store_keys_refresh(f->s);
    assert_int_equal(store_keys(f->s)->n, 1);
    assert_int_equal(store_token_key_id(f->s), 1);
}

static void the_ring_is_bounded_by_keys_in_use(void **state)
{
    fixture *f = *state;
    uint64_t uid = make_user(f->s, f->app, "bob", NULL, NULL);
    uint32_t id;
    store_session sess = TOKEND__V1__STORE__SESSION__INIT;
    for (int i = 0; i < STORE_KEYS_MAX - 1; i++) {
        /* a live session under the newest key, then a new key */
        store_login login;
        memset(&login, 0, sizeof login);
        sess.user_id = uid, sess.app_id = f->app, sess.device_guid = "";
        sess.expire_ms = TEST_EXPIRE_MS, sess.key_id = store_token_key_id(f->s);
        login.session = &sess;
        fill_hash(login.session_hash, (uint8_t)(10 + i));
        fill_hash(login.store_token_hash, (uint8_t)(110 + i));
        assert_int_equal(store_login_commit(f->s, &login), STORE_OK);
        assert_int_equal(store_rotate_token_key(f->s, &id), STORE_OK);
    }
    assert_int_equal(store_keys(f->s)->n, STORE_KEYS_MAX);
    /* every key still used (the newest has no session, but it is the newest) */
    store_login login;
    memset(&login, 0, sizeof login);
    sess.key_id = store_token_key_id(f->s);
    login.session = &sess;
    fill_hash(login.session_hash, 50);
    fill_hash(login.store_token_hash, 150);
    assert_int_equal(store_login_commit(f->s, &login), STORE_OK);
    assert_int_equal(store_rotate_token_key(f->s, &id), STORE_FULL);
    /* a revoked session frees its key: the rotation retires it and goes on */
    uint8_t h[CRYPTO_HASH_BYTES];
    fill_hash(h, 10);  /* the session of key 0 */
    assert_int_equal(store_session_revoke(f->s, h, NULL), STORE_OK);
    assert_int_equal(store_rotate_token_key(f->s, &id), STORE_OK);
    assert_int_equal(store_keys(f->s)->n, STORE_KEYS_MAX);
    assert_null(store_token_key_of(f->s, 0));
}

static void apps_have_a_key_pair_and_rotation_adds_one(void **state)
{
    fixture *f = *state;
    store_app *app;
    assert_int_equal(store_app_get(f->s, f->app, &app), STORE_OK);
    assert_int_equal(app->n_keys, 1);
    assert_int_equal(app->keys[0]->key_id, 1);
    assert_int_equal(app->keys[0]->public_key.len, CRYPTO_KX_PUBLIC_BYTES);
    /* the private half is sealed under the data key, and opens with it */
    uint8_t secret[CRYPTO_KX_SECRET_BYTES];
    const uint8_t *key = store_token_key_of(f->s, app->keys[0]->sealed_with);
    assert_non_null(key);
    assert_int_equal(crypto_unseal(secret, app->keys[0]->private_sealed.data,
                                   app->keys[0]->private_sealed.len, key), 0);
    uint8_t first[CRYPTO_KX_PUBLIC_BYTES];
    memcpy(first, app->keys[0]->public_key.data, sizeof first);
    protobuf_c_message_free_unpacked(&app->base, NULL);
    uint32_t id = 0;
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_app_rotate_key(f->s, f->app, &id), STORE_OK);
    assert_int_equal(id, 6);
    assert_int_equal(store_app_get(f->s, f->app, &app), STORE_OK);
    assert_int_equal(app->n_keys, 4);           /* the newest four */
    assert_int_equal(app->keys[3]->key_id, 6);
    assert_int_equal(app->keys[0]->key_id, 3);
    assert_memory_not_equal(app->keys[3]->public_key.data, first, sizeof first);
    protobuf_c_message_free_unpacked(&app->base, NULL);
    assert_int_equal(store_app_rotate_key(f->s, 424242, &id), STORE_NOTFOUND);
}

int main(void)
{
    crypto_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(rotation_puts_a_new_key_first_and_keeps_the_old,
                                        fixture_setup_app, fixture_teardown),
        cmocka_unit_test_setup_teardown(every_rotation_is_seen_however_many, fixture_setup_app,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(both_keys_or_neither, fixture_setup_app, fixture_teardown),
        cmocka_unit_test_setup_teardown(a_key_retires_when_its_last_session_goes,
                                        fixture_setup_app, fixture_teardown),
        cmocka_unit_test_setup_teardown(the_ring_is_bounded_by_keys_in_use, fixture_setup_app,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(apps_have_a_key_pair_and_rotation_adds_one,
                                        fixture_setup_app, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
