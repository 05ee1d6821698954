/* test_h2_reply.c - the trailing HEADERS blocks of src/h2_reply.c: the
 * precomputed grpc-status: 0 is byte for byte what the general encoder
 * writes, is used for exactly that field alone, and every other set of
 * trailers gets the general encoding (whose literal form is checked too). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "h2_reply.h"

static h2o_iovec_t status_name = {H2O_STRLIT("grpc-status")};
static h2o_iovec_t message_name = {H2O_STRLIT("grpc-message")};

static void same_block(h2o_mem_pool_t *pool, const h2o_header_t *t, size_t n)
{
    h2o_iovec_t sent = h2_reply_trailer_block(pool, t, n), general = h2_reply_encode_trailers(pool, t, n);
    assert_non_null(sent.base);
    assert_int_equal(sent.len, general.len);
    assert_memory_equal(sent.base, general.base, general.len);
}

static void test_grpc_ok_block(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_header_t ok = {&status_name, NULL, {H2O_STRLIT("0")}};
    same_block(&pool, &ok, 1);
    /* RFC 7541 6.2.2: literal without indexing, new name, no Huffman */
    static const char want[] = "\x00\x0bgrpc-status\x01" "0";
    h2o_iovec_t b = h2_reply_trailer_block(&pool, &ok, 1);
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.base, want, sizeof want - 1);
    /* the precomputed block is not the pool's copy: it is the same each time */
    assert_ptr_equal(h2_reply_trailer_block(&pool, &ok, 1).base, b.base);
    h2o_mem_clear_pool(&pool);
}

static void test_other_trailers(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    static h2o_iovec_t other_name = {H2O_STRLIT("grpc-statut")}, short_name = {H2O_STRLIT("grpc-statu")};
    h2o_header_t sets[][2] = {
        {{&status_name, NULL, {H2O_STRLIT("5")}}},
        {{&status_name, NULL, {H2O_STRLIT("00")}}},
        {{&status_name, NULL, {H2O_STRLIT("")}}},
        {{&status_name, NULL, {H2O_STRLIT("16")}}},
        {{&other_name, NULL, {H2O_STRLIT("0")}}},
        {{&short_name, NULL, {H2O_STRLIT("0")}}},
        {{&message_name, NULL, {H2O_STRLIT("0")}}},
        {{&status_name, NULL, {H2O_STRLIT("0")}}, {&message_name, NULL, {H2O_STRLIT("why%20not")}}},
        {{&status_name, NULL, {H2O_STRLIT("3")}}, {&message_name, NULL, {H2O_STRLIT("a\r\nb\0c")}}},
    };
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
        size_t n = sets[i][1].name ? 2 : 1;
        same_block(&pool, sets[i], n);
        /* not the precomputed block */
        assert_ptr_not_equal(h2_reply_trailer_block(&pool, sets[i], n).base,
                             h2_reply_trailer_block(&pool, sets[i], n).base);
    }
    /* the general form: 0x00, name length, name, value length, value; a
     * value's CR, LF and NUL go out as spaces */
    h2o_iovec_t b = h2_reply_trailer_block(&pool, sets[8], 2);
    static const char want[] = "\x00\x0bgrpc-status\x01" "3" "\x00\x0cgrpc-message\x06" "a  b c";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.base, want, sizeof want - 1);
    /* refused: no name, an empty one */
    static h2o_iovec_t empty = {H2O_STRLIT("")};
    h2o_header_t bad[] = {{NULL, NULL, {H2O_STRLIT("0")}}, {&empty, NULL, {H2O_STRLIT("0")}}};
    for (size_t i = 0; i < 2; i++)
        assert_null(h2_reply_trailer_block(&pool, bad + i, 1).base);
    h2o_mem_clear_pool(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_ok_block),
        cmocka_unit_test(test_other_trailers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
