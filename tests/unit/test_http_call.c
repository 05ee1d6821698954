/* test_http_call.c - the wire layer's calls (src/http.c, included here for
 * its static new_call and free_call): a call given back leaves neither the
 * caller's token nor what its request held (the Verify request's token,
 * decoded into the call's arena) in its memory, and the wipe stops at the
 * arena's used bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../../src/http.c"

static int all_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i])
            return 0;
    return 1;
}

static void check_wiped(const char *secret, size_t token_len)
{
    wire_call *wc = new_call();
    assert_non_null(wc);
    if (!wc)
        return;   /* (cmocka's fail is not noreturn) */
    /* what earlier calls left (not zero, to see every byte wiped) */
    memset(wc->arena, 0x5A, CALL_ARENA);
    /* the caller's token, as read_metadata copies it */
    memcpy(wc->call.access_token, secret, token_len);
    wc->call.access_token[token_len] = '\0';
    /* a Verify request decoded into the arena, as decode() does */
    uint8_t body[2 + 43];
    body[0] = 0x0a, body[1] = 43;
    memcpy(body + 2, secret + 7, 43);
    int checked = 0;
    wc->request = pb_unpack_text(&tokend__v1__verify_request__descriptor, &wc->alloc, sizeof body,
                                 body, &checked);
    assert_non_null(wc->request);
    assert_true(checked);
    assert_memory_equal(((Tokend__V1__VerifyRequest *)wc->request)->token, secret + 7, 43);
    size_t used = wc->arena_used;
    assert_true(used > 0 && used < CALL_ARENA);
    memset(wc->arena + used, 0xA5, CALL_ARENA - used);
    free_call(wc);
    /* kept as a spare (not freed): its memory may still be read */
    assert_ptr_equal(spare_calls, wc);
    assert_true(all_zero(wc->call.access_token, sizeof wc->call.access_token));
    assert_true(all_zero(wc->arena, used));
    for (size_t i = used; i < CALL_ARENA; i++)
        assert_int_equal(wc->arena[i], 0xA5);
    /* the next call reuses it, cleared */
    assert_ptr_equal(new_call(), wc);
    assert_int_equal(wc->arena_used, 0);
    assert_string_equal(wc->call.access_token, "");
    free_call(wc);
}

static void test_free_call_wipes(void **state)
{
    static const char secret[RPC_TOKEN_MAX] =
        "s3cr3t-t0ken-s3cr3t-t0ken-s3cr3t-t0ken-s3cr3t-t0ken-s3cr3t-t0ken"
        "-s3cr3t-t0ken-s3cr3t-t0ken-s3cr3t-t0ken-s3cr3t-t0ken-s3cr3t-t0k";
    (void)state;
    check_wiped(secret, 43);
    check_wiped(secret, 1);
    check_wiped(secret, RPC_TOKEN_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_call_wipes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
