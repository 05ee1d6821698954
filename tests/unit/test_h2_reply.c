/* test_h2_reply.c - the trailing HEADERS blocks of src/h2_reply.c: the
 * precomputed grpc-status: 0 is byte for byte what the general encoder
 * writes, is used for exactly that field alone, and every other set of
 * trailers gets the general encoding (whose literal form is checked too).
 * And h2_reply_table_add keeps a connection's HPACK output table exactly as
 * h2o's own encoder does, evictions and all. And the room of a reply's
 * headers, taken with a caller's bytes, holds headers as h2o's would. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>

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
    /* h2_reply_grpc_ok is that trailer, and gets that block without a compare */
    assert_int_equal(h2_reply_grpc_ok->name->len, status_name.len);
    assert_memory_equal(h2_reply_grpc_ok->name->base, status_name.base, status_name.len);
    assert_null(h2_reply_grpc_ok->orig_name);
    assert_int_equal(h2_reply_grpc_ok->value.len, 1);
    assert_memory_equal(h2_reply_grpc_ok->value.base, "0", 1);
    same_block(&pool, h2_reply_grpc_ok, 1);
    assert_ptr_equal(h2_reply_trailer_block(&pool, h2_reply_grpc_ok, 1).base, b.base);
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

/* whether name: value is in t, found as h2o's encoder looks (a token's
 * name by identity, another's by its bytes) */
static int in_table(const h2o_hpack_header_table_t *t, const h2o_iovec_t *name, h2o_iovec_t value)
{
    for (size_t i = 0; i != t->num_entries; ++i) {
        const h2o_hpack_header_table_entry_t *e = t->entries + (t->entry_start_index + i) % t->entry_capacity;
        int same_name = h2o_iovec_is_token(name) ? e->name == name : h2o_memis(e->name->base, e->name->len, name->base, name->len);
        if (same_name && h2o_memis(e->value->base, e->value->len, value.base, value.len))
            return 1;
    }
    return 0;
}

static void same_tables(const h2o_hpack_header_table_t *a, const h2o_hpack_header_table_t *b, int step)
{
    if (a->num_entries != b->num_entries || a->hpack_size != b->hpack_size)
        fail_msg("step %d: %zu entries, %zu bytes; h2o's encoder: %zu, %zu", step, a->num_entries, a->hpack_size,
                 b->num_entries, b->hpack_size);
    for (size_t i = 0; i != a->num_entries; ++i) {
        const h2o_hpack_header_table_entry_t *x = a->entries + (a->entry_start_index + i) % a->entry_capacity,
                                             *y = b->entries + (b->entry_start_index + i) % b->entry_capacity;
        assert_int_equal(h2o_iovec_is_token(x->name), h2o_iovec_is_token(y->name));
        if (h2o_iovec_is_token(x->name))
            assert_ptr_equal(x->name, y->name);
        assert_true(h2o_memis(x->name->base, x->name->len, y->name->base, y->name->len));
        assert_true(h2o_memis(x->value->base, x->value->len, y->value->base, y->value->len));
        assert_int_equal(x->value->base[x->value->len], '\0');
    }
}

/* The same fields sent on two connections: on one through h2o's encoder
 * (h2o_hpack_flatten_response: date, then the field, each added when it is
 * not in the table), on the other added by h2_reply_table_add by the same
 * rule. Values are mostly short, some over a third of the table, some
 * larger than all of it (the table emptied, nothing added); there are far
 * more than 32 of them. The two tables must stay the same, entry by entry. */
static void test_table_add_as_h2o(void **state)
{
    static h2o_iovec_t request_id = {H2O_STRLIT("x-request-id")}, other = {H2O_STRLIT("x-other")};
    const h2o_iovec_t *names[] = {&H2O_TOKEN_CONTENT_TYPE->buf, &H2O_TOKEN_SERVER->buf, &request_id, &status_name,
                                  &other, &H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN->buf};
    h2o_hpack_header_table_t ours = {.hpack_capacity = 4096, .hpack_max_capacity = 4096}, h2os = ours;
    static h2o_iovec_t no_server = {NULL, 0};
    h2o_timestamp_string_t date_str;
    h2o_timestamp_t ts = {.str = &date_str};
    static char value[6000];
    uint32_t seed = 12345;
    size_t big = 0;
    for (int step = 0; step != 4000; ++step) {
        seed = seed * 1103515245 + 12345;
        if (step % 9 == 0) /* a new second */
            snprintf(date_str.rfc1123, sizeof date_str.rfc1123, "Tue, 01 Dec 2026 %02d:%02d:%02d GMT", step / 3600 % 24,
                     step / 60 % 60, step % 60);
        h2o_iovec_t date = {date_str.rfc1123, H2O_TIMESTR_RFC1123_LEN};
        size_t len = seed >> 28 == 0 ? 1500 + (seed >> 8) % 4500 : (seed >> 8) % 24; /* 1 in 16 large */
        big += len > 1500;
        for (size_t i = 0; i != len; ++i)
            value[i] = (char)('a' + (seed >> (i % 20)) % 3); /* few distinct short values: some repeat */
        const h2o_iovec_t *name = names[(seed >> 4) % (sizeof names / sizeof *names)];
        h2o_header_t h = {(h2o_iovec_t *)name, NULL, {value, len}};

        h2o_res_t res = {.status = 200, .headers = {&h, 1, 1}};
        h2o_buffer_t *buf;
        h2o_buffer_init(&buf, &h2o_socket_buffer_prototype);
        h2o_hpack_flatten_response(&buf, &h2os, 1, 16384, &res, &ts, &no_server, SIZE_MAX);
        h2o_buffer_dispose(&buf);

        if (!in_table(&ours, &H2O_TOKEN_DATE->buf, date))
            h2_reply_table_add(&ours, &H2O_TOKEN_DATE->buf, date.base, date.len);
        if (!in_table(&ours, name, h.value))
            h2_reply_table_add(&ours, name, value, len);
        same_tables(&ours, &h2os, step);
    }
    assert_true(big > 100);
    h2o_hpack_dispose_header_table(&ours);
    h2o_hpack_dispose_header_table(&h2os);
}

/* The room of a reply's headers and the caller's bytes come in one
 * allocation: the bytes past the headers' room, which h2_reply_add_unindexed
 * and h2_reply_add_token fill; past the room, h2o's own growth takes over.
 * Every header is as h2o_add_header would have made it. */
static void test_headers_room(void **state)
{
    static h2o_iovec_t request_id = {H2O_STRLIT("x-request-id")};
    h2o_req_t req;
    memset(&req, 0, sizeof req);
    h2o_mem_init_pool(&req.pool);
    char *id = h2_reply_headers_room(&req, 40);
    assert_int_equal(req.res.headers.capacity, H2_REPLY_HEADERS_ROOM);
    assert_int_equal(req.res.headers.size, 0);
    assert_ptr_equal(id, (char *)(req.res.headers.entries + H2_REPLY_HEADERS_ROOM));
    assert_int_equal((uintptr_t)id % 16, 0);
    memcpy(id, "abc-1", 6);
    h2_reply_add_unindexed(&req, &request_id, h2o_iovec_init(id, 5));
    const h2o_header_t *room = req.res.headers.entries;
    h2_reply_add_token(&req, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("application/grpc"));
    h2_reply_add_token(&req, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, H2O_STRLIT("*"));
    h2_reply_add_token(&req, H2O_TOKEN_CACHE_CONTROL, H2O_STRLIT("no-store"));
    assert_ptr_equal(req.res.headers.entries, room);   /* four: no growth */
    h2_reply_add_token(&req, H2O_TOKEN_RETRY_AFTER, H2O_STRLIT("1"));   /* the fifth: h2o's */
    assert_int_equal(req.res.headers.size, 5);
    assert_true(req.res.headers.capacity >= 5);
    h2o_headers_t want = {NULL};
    h2o_add_header(&req.pool, &want, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/grpc"));
    h2o_add_header(&req.pool, &want, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, H2O_STRLIT("*"));
    h2o_add_header(&req.pool, &want, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header(&req.pool, &want, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    const h2o_header_t *h = req.res.headers.entries;
    assert_ptr_equal(h[0].name, &request_id);
    assert_ptr_equal(h[0].orig_name, request_id.base);
    assert_memory_equal(h[0].value.base, "abc-1", 5);
    for (size_t i = 0; i != want.size; ++i) {
        assert_ptr_equal(h[i + 1].name, want.entries[i].name);
        assert_ptr_equal(h[i + 1].orig_name, want.entries[i].orig_name);
        assert_ptr_equal(h[i + 1].value.base, want.entries[i].value.base);
        assert_int_equal(h[i + 1].value.len, want.entries[i].value.len);
    }
    /* with headers already there, only the caller's bytes */
    const h2o_header_t *entries = req.res.headers.entries;
    size_t cap = req.res.headers.capacity;
    char *more = h2_reply_headers_room(&req, 8);
    assert_non_null(more);
    assert_ptr_equal(req.res.headers.entries, entries);
    assert_int_equal(req.res.headers.capacity, cap);
    h2o_mem_clear_pool(&req.pool);
}

/* A first header without a room taken first: h2_reply_add_unindexed takes it. */
static void test_headers_room_by_first(void **state)
{
    static h2o_iovec_t request_id = {H2O_STRLIT("x-request-id")};
    h2o_req_t req;
    memset(&req, 0, sizeof req);
    h2o_mem_init_pool(&req.pool);
    h2_reply_add_unindexed(&req, &request_id, h2o_iovec_init(H2O_STRLIT("client-id")));
    assert_int_equal(req.res.headers.capacity, H2_REPLY_HEADERS_ROOM);
    assert_int_equal(req.res.headers.size, 1);
    h2_reply_add_token(&req, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("application/grpc"));
    assert_int_equal(req.res.headers.size, 2);
    assert_ptr_equal(req.res.headers.entries[1].name, &H2O_TOKEN_CONTENT_TYPE->buf);
    assert_null(req.res.headers.entries[1].orig_name);
    h2o_mem_clear_pool(&req.pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_room),
        cmocka_unit_test(test_headers_room_by_first),
        cmocka_unit_test(test_grpc_ok_block),
        cmocka_unit_test(test_other_trailers),
        cmocka_unit_test(test_table_add_as_h2o),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
