/* test_throttle.c - login throttling through its public API only (the
 * table behind it may change): N failures are allowed, the next waits; a
 * refund gives an attempt back; buckets refill with time; accounts and
 * addresses are counted apart; a client's bucket is the login name's, the
 * many clients' the account's; a flood of other keys does not free a
 * throttled account. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <unistd.h>

#include "crypto.h"
#include "throttle.h"

static int take(throttle *t, const char *account, const char *address)
{
    throttle_ticket ticket;
    return throttle_take(t, 1, account, account, address, 0, &ticket);
}

static void test_n_allowed_then_wait(void **state)
{
    throttle *t = throttle_create((throttle_config){3, 100, 60});
    assert_non_null(t);
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(t, "alice", "10.0.0.1"), 0);
    int wait = take(t, "alice", "10.0.0.1");
    assert_true(wait >= 1);
    assert_true(wait <= 60);
    assert_true(take(t, "alice", "10.0.0.1") >= 1);   /* a refused take takes nothing... */
    /* ...and other accounts and addresses have their own buckets */
    assert_int_equal(take(t, "bob", "10.0.0.1"), 0);
    assert_int_equal(take(t, "alice", "10.0.0.2"), 0);
    assert_true(take(t, "alice", "10.0.0.1") >= 1);
    throttle_free(t);
}

static void test_apps_apart(void **state)
{
    throttle *t = throttle_create((throttle_config){1, 100, 60});
    throttle_ticket ticket;
    assert_int_equal(throttle_take(t, 1, "alice", "alice", "10.0.0.1", 0, &ticket), 0);
    assert_true(throttle_take(t, 1, "alice", "alice", "10.0.0.1", 0, &ticket) >= 1);
    assert_int_equal(throttle_take(t, 2, "alice", "alice", "10.0.0.1", 0, &ticket), 0);
    throttle_free(t);
}

static void test_refund_restores(void **state)
{
    throttle *t = throttle_create((throttle_config){2, 100, 60});
    throttle_ticket ticket;
    for (int i = 0; i < 10; i++) {   /* successes cost nothing, however many */
        assert_int_equal(throttle_take(t, 1, "alice", "alice", "10.0.0.1", 0, &ticket), 0);
        throttle_refund(t, &ticket);
    }
    assert_int_equal(take(t, "alice", "10.0.0.1"), 0);
    assert_int_equal(throttle_take(t, 1, "alice", "alice", "10.0.0.1", 0, &ticket), 0);
    assert_true(take(t, "alice", "10.0.0.1") >= 1);
    throttle_refund(t, &ticket);
    assert_int_equal(take(t, "alice", "10.0.0.1"), 0);
    assert_true(take(t, "alice", "10.0.0.1") >= 1);
    throttle_free(t);
}

/* 2 failures per second: an empty bucket has an attempt again within the
 * wait it announced. */
static void test_refill(void **state)
{
    throttle *t = throttle_create((throttle_config){2, 100, 1});
    assert_int_equal(take(t, "alice", "10.0.0.1"), 0);
    assert_int_equal(take(t, "alice", "10.0.0.1"), 0);
    int wait = take(t, "alice", "10.0.0.1");
    assert_int_equal(wait, 1);
    usleep(1100 * 1000);
    assert_int_equal(take(t, "alice", "10.0.0.1"), 0);
    throttle_free(t);
}

static void test_limits_off_and_reconfigured(void **state)
{
    throttle *t = throttle_create((throttle_config){0, 0, 60});
    for (int i = 0; i < 100; i++)
        assert_int_equal(take(t, "alice", "10.0.0.1"), 0);
    throttle_configure(t, (throttle_config){1, 0, 60});
    assert_int_equal(take(t, "bob", "10.0.0.1"), 0);
    assert_true(take(t, "bob", "10.0.0.1") >= 1);
    throttle_free(t);
}

/* Per address: one client guessing many accounts. */
static void test_address_limit(void **state)
{
    throttle *t = throttle_create((throttle_config){100, 5, 60});
    char name[32];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "user%d", i);
        assert_int_equal(take(t, name, "10.0.0.9"), 0);
    }
    assert_true(take(t, "someone-else", "10.0.0.9") >= 1);
    assert_int_equal(take(t, "someone-else", "10.0.0.8"), 0);
    throttle_free(t);
}

/* An attacker cannot free a throttled account by filling the table with
 * other keys: the buckets that remember failures are the last to go. */
static void test_flood_keeps_throttled_account(void **state)
{
    throttle *t = throttle_create((throttle_config){3, 0, 900});
    char name[32];
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(t, "victim", "10.0.0.1"), 0);
    assert_true(take(t, "victim", "10.0.0.1") >= 1);
    for (int i = 0; i < 200000; i++) {
        snprintf(name, sizeof name, "flood%d", i);
        assert_int_equal(take(t, name, "10.0.0.2"), 0);
    }
    assert_true(take(t, "victim", "10.0.0.1") >= 1);
    throttle_free(t);
}

/* One client that emptied its bucket for one of an account's names still
 * gets its attempts at the account's other names (and a 429 there would say
 * whose names they are); the account bucket counts them all. */
static void test_names_apart_account_shared(void **state)
{
    (void)state;
    throttle *t = throttle_create((throttle_config){2, 1000, 60});   /* account bucket: 20 */
    throttle_ticket tk;
    assert_non_null(t);
    for (int i = 0; i < 2; i++)
        assert_int_equal(throttle_take(t, 1, "n:alice", "u:7", "10.0.0.1", 0, &tk), 0);
    assert_true(throttle_take(t, 1, "n:alice", "u:7", "10.0.0.1", 0, &tk) >= 1);
    assert_int_equal(throttle_take(t, 1, "p:+15550100", "u:7", "10.0.0.1", 0, &tk), 0);
    assert_int_equal(throttle_take(t, 1, "p:+15550199", "p:+15550199", "10.0.0.1", 0, &tk), 0);
    /* 3 taken from u:7; 17 more from other clients empty it for everyone */
    char addr[32];
    for (int i = 0; i < 17; i++) {
        snprintf(addr, sizeof addr, "10.0.%d.1", i + 1);
        assert_int_equal(throttle_take(t, 1, i % 2 ? "n:alice" : "e:a@x.example", "u:7", addr, 0, &tk), 0);
    }
    assert_true(throttle_take(t, 1, "id:7", "u:7", "10.9.9.9", 0, &tk) >= 1);
    assert_int_equal(throttle_take(t, 1, "id:8", "u:8", "10.9.9.9", 0, &tk), 0);
    throttle_free(t);
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_n_allowed_then_wait),
        cmocka_unit_test(test_apps_apart),
        cmocka_unit_test(test_refund_restores),
        cmocka_unit_test(test_refill),
        cmocka_unit_test(test_limits_off_and_reconfigured),
        cmocka_unit_test(test_address_limit),
        cmocka_unit_test(test_flood_keeps_throttled_account),
        cmocka_unit_test(test_names_apart_account_shared),
    };
    return cmocka_run_group_tests_name("throttle", tests, NULL, NULL);
}
