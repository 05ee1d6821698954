/* test_account.c - account_create: every field validated with a message for
 * a person, uniqueness reported by field, and a stored user whose password
 * hash verifies. Uses a real store in a temporary directory and a low
 * Argon2id cost. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "account.h"
#include "crypto.h"
#include "store.h"
#include "fixture.h"

static const crypto_pwcost LOW = {1, 8u * 1024 * 1024};

static account_new mk(uint64_t app, const char *name, const char *phone, const char *email,
                        const char *password)
{
    account_new a = {.app_id = app, .name = name, .phone = phone, .email = email,
                     .password = password, .password_len = password ? strlen(password) : 0};
    return a;
}

/* Runs account_create; returns its status and leaves the message in msg. */
static status_code create(fixture *f, account_new a, uint64_t *id, char *msg, size_t msglen)
{
    uint64_t dummy = 0;
    msg[0] = '\0';
    return account_create(f->s, &a, LOW, id ? id : &dummy, msg, msglen);
}

static void expect_invalid(fixture *f, account_new a, const char *want_msg)
{
    char msg[256];
    status_code st = create(f, a, NULL, msg, sizeof msg);
    if (st != ST_INVALID_ARGUMENT)
        fail_msg("status %d, want INVALID_ARGUMENT (msg \"%s\")", st, msg);
    assert_string_equal(msg, want_msg);
    /* Nothing was stored under the name. */
    uint64_t id;
    if (a.name && *a.name)
        assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, a.name, &id),
                         STORE_NOTFOUND);
}

static void test_invalid_name(void **state)
{
    fixture *f = *state;
    expect_invalid(f, mk(f->app, "12345", NULL, NULL, "password1"),
                   "name needs at least one letter, '_' or CJK character");
    expect_invalid(f, mk(f->app, "alice smith", NULL, NULL, "password1"),
                   "name contains a space, a control or an invisible character");
    expect_invalid(f, mk(f->app, "alice@example.com", NULL, NULL, "password1"),
                   "name must not contain '@' (that makes it an email)");
    expect_invalid(f, mk(f->app, "ab\xff", NULL, NULL, "password1"),
                   "name is not valid UTF-8");
    expect_invalid(f, mk(f->app, "", NULL, NULL, "password1"), "name is empty");
    expect_invalid(f, mk(f->app, NULL, NULL, NULL, "password1"), "name is empty");
    char longname[200];
    memset(longname, 'a', sizeof longname);
    longname[129] = '\0';
    expect_invalid(f, mk(f->app, longname, NULL, NULL, "password1"),
                   "name is longer than 128 bytes");
}

static void test_invalid_phone(void **state)
{
    fixture *f = *state;
    expect_invalid(f, mk(f->app, "alice", "555-CALL-NOW", NULL, "password1"),
                   "phone may hold only digits, a leading '+', spaces, '-' and brackets");
    expect_invalid(f, mk(f->app, "alice", "12", NULL, "password1"),
                   "phone needs at least 3 digits");
    expect_invalid(f, mk(f->app, "alice", "123456789012345678901", NULL, "password1"),
                   "phone has more than 20 digits");
}

static void test_invalid_email(void **state)
{
    fixture *f = *state;
    expect_invalid(f, mk(f->app, "alice", NULL, "alice", "password1"),
                   "email must look like name@example.com");
    expect_invalid(f, mk(f->app, "alice", NULL, "alice@example", "password1"),
                   "email must look like name@example.com");
    expect_invalid(f, mk(f->app, "alice", NULL, "al ice@example.com", "password1"),
                   "email contains a space, a control or an invisible character");
}

static void test_invalid_password(void **state)
{
    fixture *f = *state;
    expect_invalid(f, mk(f->app, "alice", NULL, NULL, "short"),
                   "password must be at least 8 characters");
    expect_invalid(f, mk(f->app, "alice", NULL, NULL, ""),
                   "password must be at least 8 characters");
    account_new a = mk(f->app, "alice", NULL, NULL, "abcd\0efgh");
    a.password_len = 9;
    expect_invalid(f, a, "password must not contain a NUL byte");
    static char big[CRYPTO_PASSWORD_MAX + 1];
    memset(big, 'p', sizeof big);
    a = mk(f->app, "alice", NULL, NULL, big);
    a.password_len = sizeof big;
    expect_invalid(f, a, "password must be at most 1024 bytes");
}

static void test_create_success(void **state)
{
    fixture *f = *state;
    char msg[256], desc[64];
    uint64_t id = 0, found = 0;
    store_user *u = NULL;

    assert_int_equal(create(f, mk(f->app, "Alice", "+1 (555) 010-0100", "Alice@Example.COM",
                                    "s3cret-password"), &id, msg, sizeof msg), ST_OK);
    assert_true(id != 0);

    assert_int_equal(store_user_get(f->s, id, &u), STORE_OK);
    assert_int_equal(u->user_id, id);
    assert_int_equal(u->app_id, f->app);
    assert_string_equal(u->name, "Alice");
    assert_string_equal(u->phone, "+15550100100");          /* normalized */
    assert_string_equal(u->email, "alice@example.com");     /* lower-cased */
    assert_false(u->disabled);
    assert_true(u->created_ms > 1600000000000);
    assert_int_equal(crypto_password_verify(u->password_hash, "s3cret-password", 15), 0);
    assert_int_equal(crypto_password_verify(u->password_hash, "s3cret-passwore", 15), -1);
    /* Hashed at the cost asked for. */
    assert_int_equal(crypto_password_describe(u->password_hash, desc, sizeof desc), 0);
    assert_string_equal(desc, "argon2id m=8192 t=1 p=1");
    assert_int_equal(crypto_password_needs_rehash(u->password_hash, LOW, 9), 0);
    protobuf_c_message_free_unpacked(&u->base, NULL);

    /* Indexed under the normalized forms. */
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "Alice", &found), STORE_OK);
    assert_int_equal(found, id);
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_PHONE, "+15550100100", &found),
                     STORE_OK);
    assert_int_equal(found, id);
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_EMAIL, "alice@example.com", &found),
                     STORE_OK);
    assert_int_equal(found, id);
}

static void test_create_without_phone_and_email(void **state)
{
    fixture *f = *state;
    char msg[256];
    uint64_t a = 0, b = 0;
    store_user *u = NULL;
    assert_int_equal(create(f, mk(f->app, "alice", NULL, NULL, "password1"), &a, msg,
                            sizeof msg), ST_OK);
    /* A second user without them is no clash. */
    assert_int_equal(create(f, mk(f->app, "bob", "", "", "password2"), &b, msg, sizeof msg),
                     ST_OK);
    assert_true(a != b);
    assert_int_equal(store_user_get(f->s, b, &u), STORE_OK);
    assert_string_equal(u->phone, "");
    assert_string_equal(u->email, "");
    assert_int_equal(crypto_password_verify(u->password_hash, "password2", 9), 0);
    protobuf_c_message_free_unpacked(&u->base, NULL);
}

static void test_create_duplicates(void **state)
{
    fixture *f = *state;
    char msg[256];
    uint64_t id = 0;
    assert_int_equal(create(f, mk(f->app, "alice", "+15550100", "alice@example.com",
                                    "password1"), &id, msg, sizeof msg), ST_OK);

    assert_int_equal(create(f, mk(f->app, "alice", NULL, NULL, "password2"), NULL, msg,
                            sizeof msg), ST_ALREADY_EXISTS);
    assert_string_equal(msg, "name is already taken in this app");

    /* The same phone written another way is the same phone. */
    assert_int_equal(create(f, mk(f->app, "bob", "+1 555-0100", NULL, "password2"), NULL, msg,
                            sizeof msg), ST_ALREADY_EXISTS);
    assert_string_equal(msg, "phone is already taken in this app");

    /* Emails compare without case. */
    assert_int_equal(create(f, mk(f->app, "carol", NULL, "ALICE@example.com", "password2"),
                            NULL, msg, sizeof msg), ST_ALREADY_EXISTS);
    assert_string_equal(msg, "email is already taken in this app");

    /* None of the refused users got in. */
    uint64_t found;
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "bob", &found), STORE_NOTFOUND);
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "carol", &found),
                     STORE_NOTFOUND);

    /* A name that reads as a taken one is taken: another case, look-alike
     * letters of another script, digits like letters. */
    const char *alike[] = {"Alice", "ALICE", "AIice", "a1ice",
                           "\xef\xbd\x81LICE" /* fullwidth a: aLICE */};
    for (size_t i = 0; i < sizeof alike / sizeof alike[0]; i++) {
        status_code st = create(f, mk(f->app, alike[i], NULL, NULL, "password3"), NULL, msg, sizeof msg);
        if (st != ST_ALREADY_EXISTS)
            fail_msg("%s: status %d (%s)", alike[i], st, msg);
        assert_string_equal(msg, "a name that looks the same is already taken in this app");
    }
    /* Names keep their case: the account is found by the name it was made with. */
    assert_int_equal(create(f, mk(f->app, "Bob", NULL, NULL, "password3"), NULL, msg, sizeof msg), ST_OK);
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "Bob", &found), STORE_OK);
    assert_int_equal(store_user_lookup(f->s, f->app, LOGIN_NAME, "bob", &found), STORE_NOTFOUND);
    assert_int_equal(create(f, mk(f->app, "alison", NULL, NULL, "password3"), NULL, msg, sizeof msg), ST_OK);
    /* In another app the name is free. */
    uint64_t other = make_app(f->s, "other");
    assert_int_equal(create(f, mk(other, "Alice", NULL, NULL, "password3"), NULL, msg, sizeof msg), ST_OK);
}

static void test_create_unknown_app(void **state)
{
    fixture *f = *state;
    char msg[256], want[64];
    assert_int_equal(create(f, mk(f->app + 77, "alice", NULL, NULL, "password1"), NULL, msg,
                            sizeof msg), ST_NOT_FOUND);
    snprintf(want, sizeof want, "unknown app_id %llu", (unsigned long long)(f->app + 77));
    assert_string_equal(msg, want);
}

static void test_short_message_buffer(void **state)
{
    fixture *f = *state;
    char msg[8];
    memset(msg, 'Z', sizeof msg);
    account_new a = mk(f->app, "alice", NULL, NULL, "short");
    uint64_t id;
    assert_int_equal(account_create(f->s, &a, LOW, &id, msg, sizeof msg), ST_INVALID_ARGUMENT);
    assert_non_null(memchr(msg, '\0', sizeof msg));
    assert_string_equal(msg, "passwor");
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup_app, fixture_teardown)
    const struct CMUnitTest tests[] = {
        T(test_invalid_name),
        T(test_invalid_phone),
        T(test_invalid_email),
        T(test_invalid_password),
        T(test_create_success),
        T(test_create_without_phone_and_email),
        T(test_create_duplicates),
        T(test_create_unknown_app),
        T(test_short_message_buffer),
    };
#undef T
    return cmocka_run_group_tests_name("account", tests, NULL, NULL);
}
