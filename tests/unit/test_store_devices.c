/* test_store_devices.c - store_devices.c against a real LMDB environment:
 * listing a user's devices, kicking and forgetting one or all of them, and
 * binding an APNs/FCM token. A kicked device must stop getting pushes and
 * lose its sessions at once, and one user's device calls must never reach
 * another user's devices. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store.h"
#include "fixture.h"

/* The user's devices in the app, as "guid:sn" joined by spaces. */
static const char *devices(store *s, uint64_t app_id, uint64_t user_id)
{
    static char buf[256];
    store_device **list = NULL;
    size_t n = 99, len = 0;
    assert_int_equal(store_devices_list(s, app_id, user_id, &list, &n), STORE_OK);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(list[i]->user_id, user_id);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s:%u", i ? " " : "",
                                list[i]->device_guid, list[i]->device_sn);
    }
    store_devices_free(list, n);
    return buf;
}

/* The device's push token hash length: 0 once kicked. */
static size_t push_len(store *s, uint64_t app_id, const char *guid)
{
    store_device *d = NULL;
    assert_int_equal(store_device_get(s, app_id, guid, &d), STORE_OK);
    size_t len = d->push_token_hash.len;
    protobuf_c_message_free_unpacked(&d->base, NULL);
    return len;
}

static void test_devices_list(void **state)
{
    fixture *f = *state;
    uint64_t other = make_app(f->s, "other");
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    uint64_t carol = make_user(f->s, other, "carol", NULL, NULL);

    assert_string_equal(devices(f->s, f->app, alice), "");
    login_ok(f->s, f->app, alice, "b-phone", 1);
    login_ok(f->s, f->app, alice, "a-tablet", 2);
    login_ok(f->s, f->app, alice, NULL, 3);       /* no device: not listed */
    login_ok(f->s, f->app, bob, "c-laptop", 4);
    login_ok(f->s, other, carol, "b-phone", 5);   /* same guid, other app */

    /* In key order (by guid), each with its number within the user. */
    assert_string_equal(devices(f->s, f->app, alice), "a-tablet:2 b-phone:1");
    assert_string_equal(devices(f->s, f->app, bob), "c-laptop:1");
    assert_string_equal(devices(f->s, other, carol), "b-phone:1");
    assert_string_equal(devices(f->s, other, alice), "");

    /* A device bob logs in on is his, and no longer alice's. */
    login_ok(f->s, f->app, bob, "b-phone", 6);
    assert_string_equal(devices(f->s, f->app, alice), "a-tablet:2");
    assert_string_equal(devices(f->s, f->app, bob), "b-phone:2 c-laptop:1");
}

static void test_device_kick_one(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    store_audit a = test_audit(f->app, "kick");
    audit_log log;

    login_ok(f->s, f->app, alice, "dev-1", 1);
    login_ok(f->s, f->app, alice, "dev-2", 2);
    login_ok(f->s, f->app, alice, NULL, 3);

    assert_int_equal(store_device_forget(f->s, f->app, alice, 1, 0, &a), STORE_OK);
    assert_false(session_exists(f->s, 1));
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);
    assert_int_equal(push_len(f->s, f->app, "dev-1"), 0);
    /* Kicked, not forgotten: still listed, under its number. */
    assert_string_equal(devices(f->s, f->app, alice), "dev-1:1 dev-2:2");
    assert_true(session_exists(f->s, 2));
    assert_true(session_exists(f->s, 3));
    assert_push(f->s, 2, STORE_OK, f->app, "dev-2");
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.line[0], "kick ");

    /* Unknown numbers, and numbers of another user's devices, are not found. */
    assert_int_equal(store_device_forget(f->s, f->app, alice, 9, 0, &a), STORE_NOTFOUND);
    assert_int_equal(store_device_forget(f->s, f->app, bob, 2, 0, &a), STORE_NOTFOUND);
    assert_true(session_exists(f->s, 2));
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);

    /* Logging in again on a kicked device brings it back with its number. */
    uint32_t sn = 0;
    assert_int_equal(do_login(f->s, f->app, alice, "dev-1", 4, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 1);
    assert_push(f->s, 4, STORE_OK, f->app, "dev-1");
}

static void test_device_forget_one(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    store_device *d = NULL;
    uint32_t sn = 0;

    login_ok(f->s, f->app, alice, "dev-1", 1);
    login_ok(f->s, f->app, alice, "dev-2", 2);

    assert_int_equal(store_device_forget(f->s, f->app, alice, 2, 1, NULL), STORE_OK);
    assert_int_equal(store_device_get(f->s, f->app, "dev-2", &d), STORE_NOTFOUND);
    assert_string_equal(devices(f->s, f->app, alice), "dev-1:1");
    assert_false(session_exists(f->s, 2));
    assert_push(f->s, 2, STORE_NOTFOUND, 0, NULL);
    assert_true(session_exists(f->s, 1));
    assert_push(f->s, 1, STORE_OK, f->app, "dev-1");
    assert_int_equal(store_device_forget(f->s, f->app, alice, 2, 1, NULL), STORE_NOTFOUND);

    /* Forgotten, its number is free again. */
    assert_int_equal(do_login(f->s, f->app, alice, "dev-3", 3, 1, "ua", &sn), STORE_OK);
    assert_int_equal(sn, 2);
}

static void test_device_kick_and_forget_all(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);

    login_ok(f->s, f->app, alice, "dev-1", 1);
    login_ok(f->s, f->app, alice, "dev-2", 2);
    login_ok(f->s, f->app, alice, NULL, 3);
    login_ok(f->s, f->app, bob, "dev-3", 4);

    /* sn 0 kicks every device, and also ends the sessions that named none. */
    assert_int_equal(store_device_forget(f->s, f->app, alice, 0, 0, NULL), STORE_OK);
    for (uint8_t tag = 1; tag <= 3; tag++)
        assert_false(session_exists(f->s, tag));
    assert_push(f->s, 1, STORE_NOTFOUND, 0, NULL);
    assert_push(f->s, 2, STORE_NOTFOUND, 0, NULL);
    assert_string_equal(devices(f->s, f->app, alice), "dev-1:1 dev-2:2");
    assert_true(session_exists(f->s, 4));
    assert_push(f->s, 4, STORE_OK, f->app, "dev-3");

    /* Forgetting every device removes them; a session on no device stays. */
    login_ok(f->s, f->app, alice, "dev-1", 5);
    login_ok(f->s, f->app, alice, NULL, 6);
    assert_int_equal(store_device_forget(f->s, f->app, alice, 0, 1, NULL), STORE_OK);
    assert_string_equal(devices(f->s, f->app, alice), "");
    assert_false(session_exists(f->s, 5));
    assert_push(f->s, 5, STORE_NOTFOUND, 0, NULL);
    assert_true(session_exists(f->s, 6));
    assert_string_equal(devices(f->s, f->app, bob), "dev-3:1");

    /* With no device, kicking all is no error. */
    assert_int_equal(store_device_forget(f->s, f->app, alice, 0, 0, NULL), STORE_OK);
    assert_false(session_exists(f->s, 6));
}

static void test_device_bind(void **state)
{
    fixture *f = *state;
    uint64_t alice = make_user(f->s, f->app, "alice", NULL, NULL);
    uint64_t bob = make_user(f->s, f->app, "bob", NULL, NULL);
    store_audit a = test_audit(f->app, "bind");
    store_device *d = NULL;
    audit_log log;

    login_ok(f->s, f->app, alice, "dev-1", 1);
    login_ok(f->s, f->app, alice, "dev-2", 2);

    assert_int_equal(store_device_bind(f->s, f->app, alice, 2, "fcm-token", "fcm", &a), STORE_OK);
    assert_int_equal(store_device_get(f->s, f->app, "dev-2", &d), STORE_OK);
    assert_string_equal(d->device_token, "fcm-token");
    assert_string_equal(d->notifier_name, "fcm");
    assert_int_equal(d->user_id, alice);
    assert_int_equal(d->device_sn, 2);
    assert_int_equal(d->push_token_hash.len, CRYPTO_HASH_BYTES);   /* untouched */
    protobuf_c_message_free_unpacked(&d->base, NULL);
    assert_push(f->s, 2, STORE_OK, f->app, "dev-2");
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.line[0], "bind ");

    /* Binding again replaces; dev-1 never had one. */
    assert_int_equal(store_device_bind(f->s, f->app, alice, 2, "apns-token", "apns", NULL),
                     STORE_OK);
    d = NULL;
    assert_int_equal(store_device_get(f->s, f->app, "dev-2", &d), STORE_OK);
    assert_string_equal(d->device_token, "apns-token");
    assert_string_equal(d->notifier_name, "apns");
    protobuf_c_message_free_unpacked(&d->base, NULL);
    d = NULL;
    assert_int_equal(store_device_get(f->s, f->app, "dev-1", &d), STORE_OK);
    assert_string_equal(d->device_token, "");
    protobuf_c_message_free_unpacked(&d->base, NULL);

    /* No such number for this user: nothing bound, nothing recorded. */
    assert_int_equal(store_device_bind(f->s, f->app, alice, 7, "x", "fcm", &a), STORE_NOTFOUND);
    assert_int_equal(store_device_bind(f->s, f->app, bob, 1, "x", "fcm", &a), STORE_NOTFOUND);
    d = NULL;
    assert_int_equal(store_device_get(f->s, f->app, "dev-1", &d), STORE_OK);
    assert_string_equal(d->device_token, "");
    protobuf_c_message_free_unpacked(&d->base, NULL);
    read_audit(f->s, &log);
    assert_int_equal(log.n, 1);
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup_app, fixture_teardown)
        T(test_devices_list),
        T(test_device_kick_one),
        T(test_device_forget_one),
        T(test_device_kick_and_forget_all),
        T(test_device_bind),
#undef T
    };
    return cmocka_run_group_tests_name("store_devices", tests, NULL, NULL);
}
