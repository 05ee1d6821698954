/* test_h2_path.c - src/h2_path.c: the Huffman forms of known paths are the
 * bytes RFC 7541's own examples give, a HEADERS frame naming one comes out
 * with the value plain (every literal kind, around other fields, with a
 * priority), h2o decodes both frames to the same request and the same
 * table, and every frame it must not touch is left alone. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>

#include "h2_path.h"

/* RFC 7541 C.4.1 and C.4.3: the Huffman codes of two strings */
#define WWW "\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff" /* www.example.com */
#define CUSTOM "\x25\xa8\x49\xe9\x5b\xb8\xe8\xb4\xbf"          /* custom-value */

static const char *const known[] = {"www.example.com", "custom-value", "/tokend.v1.Tokend/Verify",
                                    "/v1/users/{id}", "custom-value", "/a"};

static h2_paths *paths(void)
{
    h2_paths *ps = h2_paths_create(known, sizeof known / sizeof known[0]);
    assert_non_null(ps);
    return ps;
}

/* A HEADERS frame on stream 3 around block[0..len). */
static size_t frame_of(uint8_t *out, uint8_t flags, const void *block, size_t len)
{
    out[0] = (uint8_t)(len >> 16), out[1] = (uint8_t)(len >> 8), out[2] = (uint8_t)len;
    out[3] = 0x1, out[4] = flags;
    out[5] = 0, out[6] = 0, out[7] = 0, out[8] = 3;
    memcpy(out + 9, block, len);
    return 9 + len;
}

static void expect_plain_(const h2_paths *ps, uint8_t flags, const void *in, size_t in_len, const void *want,
                          size_t want_len)
{
    uint8_t frame[256], out[H2_PATH_OUT_BYTES];
    size_t n = frame_of(frame, flags, in, in_len);
    size_t got = h2_path_plain(ps, frame, n, out, sizeof out);
    assert_int_equal(got, 9 + want_len);
    assert_int_equal((size_t)out[0] << 16 | (size_t)out[1] << 8 | out[2], want_len);
    assert_memory_equal(out + 3, frame + 3, 6); /* type, flags, stream */
    assert_memory_equal(out + 9, want, want_len);
}

static void expect_left_(const h2_paths *ps, uint8_t flags, const void *in, size_t in_len)
{
    uint8_t frame[256], out[H2_PATH_OUT_BYTES];
    size_t n = frame_of(frame, flags, in, in_len);
    assert_int_equal(h2_path_plain(ps, frame, n, out, sizeof out), 0);
}

/* IN and WANT are string literals */
#define expect_plain(ps, flags, IN, WANT) expect_plain_(ps, flags, IN, sizeof(IN) - 1, WANT, sizeof(WANT) - 1)
#define expect_left(ps, flags, IN) expect_left_(ps, flags, IN, sizeof(IN) - 1)

static void test_known_forms(void **state)
{
    h2_paths *ps = paths();
    /* the template, the duplicate and "/a" (Huffman does not shorten it) are left out */
    assert_int_equal(h2_paths_count(ps), 3);
    /* :method GET, :scheme http, :path literal without indexing (name 4), value Huffman */
    expect_plain(ps, 0x4, "\x82\x86\x04\x8c" WWW "\x41\x8c" WWW,
                 "\x82\x86\x04\x0fwww.example.com\x41\x8c" WWW);
    h2_paths_free(ps);
}

static void test_every_literal_kind(void **state)
{
    h2_paths *ps = paths();
    /* with incremental indexing (0x40 | 4), never indexed (0x10 | 4), name 5 */
    expect_plain(ps, 0x4, "\x44\x89" CUSTOM "\x82", "\x44\x0c" "custom-value\x82");
    expect_plain(ps, 0x4, "\x14\x89" CUSTOM, "\x14\x0c" "custom-value");
    expect_plain(ps, 0x4, "\x05\x89" CUSTOM, "\x05\x0c" "custom-value");
    expect_plain(ps, 0x4 | 0x1, "\x05\x89" CUSTOM, "\x05\x0c" "custom-value"); /* END_STREAM kept */
    /* after a table size update (4096), an indexed field with a long index,
     * and a literal with a new name */
    expect_plain(ps, 0x4, "\x3f\xe1\x1f\xff\x05\x40\x01x\x01y\x04\x89" CUSTOM,
                 "\x3f\xe1\x1f\xff\x05\x40\x01x\x01y\x04\x0c" "custom-value");
    /* PRIORITY: its five bytes stay in front */
    expect_plain(ps, 0x4 | 0x20, "\x00\x00\x00\x01\x0f\x04\x89" CUSTOM,
                 "\x00\x00\x00\x01\x0f\x04\x0c" "custom-value");
    h2_paths_free(ps);
}

static void test_left_alone(void **state)
{
    h2_paths *ps = paths();
    /* an unknown path (one bit off); a known one already plain; no literal :path */
    expect_left(ps, 0x4, "\x04\x89\x25\xa8\x49\xe9\x5b\xb8\xe8\xb4\xbe");
    expect_left(ps, 0x4, "\x04\x0c" "custom-value");
    expect_left(ps, 0x4, "\x82\x84\x86");
    /* the first literal :path decides */
    expect_left(ps, 0x4, "\x04\x81\x63\x04\x89" CUSTOM);
    /* no END_HEADERS (CONTINUATION follows); PADDED */
    expect_left(ps, 0x0, "\x04\x89" CUSTOM);
    expect_left(ps, 0x4 | 0x8, "\x00\x04\x89" CUSTOM);
    /* malformed before or at :path: an integer that never ends, one of more
     * than 2^21, a name longer than the block, a value longer than it */
    expect_left(ps, 0x4, "\xff\xff\xff");
    expect_left(ps, 0x4, "\xff\xff\xff\xff\x7f\x04\x89" CUSTOM);
    expect_left(ps, 0x4, "\x40\x7e" "ab");
    expect_left(ps, 0x4, "\x04\x8a" CUSTOM);
    expect_left(ps, 0x4, "\x04");
    /* PRIORITY without its five bytes */
    expect_left(ps, 0x4 | 0x20, "\x00\x00");

    uint8_t frame[2048], out[H2_PATH_OUT_BYTES], big[H2_PATH_FRAME_MAX + 1];
    size_t n = frame_of(frame, 0x4, "\x04\x89" CUSTOM, 11);
    /* not whole, not HEADERS, no room, no paths */
    assert_int_equal(h2_path_plain(ps, frame, n - 1, out, sizeof out), 0);
    assert_int_equal(h2_path_plain(ps, frame, 8, out, sizeof out), 0);
    frame[3] = 0x9;
    assert_int_equal(h2_path_plain(ps, frame, n, out, sizeof out), 0);
    frame[3] = 0x1;
    assert_int_equal(h2_path_plain(ps, frame, n, out, sizeof out - 1), 0);
    assert_int_equal(h2_path_plain(NULL, frame, n, out, sizeof out), 0);
    assert_int_equal(h2_path_plain(ps, frame, n, out, sizeof out), 9 + 14);
    /* the largest payload taken, and one byte more */
    memset(big, 0x82, sizeof big);
    memcpy(big + H2_PATH_FRAME_MAX - 11, "\x04\x89" CUSTOM, 11);
    n = frame_of(frame, 0x4, big, H2_PATH_FRAME_MAX);
    assert_int_equal(h2_path_plain(ps, frame, n, out, sizeof out), 9 + H2_PATH_FRAME_MAX + 3);
    memcpy(big + H2_PATH_FRAME_MAX + 1 - 11, "\x04\x89" CUSTOM, 11);
    n = frame_of(frame, 0x4, big, H2_PATH_FRAME_MAX + 1);
    assert_int_equal(h2_path_plain(ps, frame, n, out, sizeof out), 0);
    h2_paths_free(ps);
}

/* h2o's reading of a block into a fresh request, on a connection's table */
static void decode(h2o_req_t *req, h2o_hpack_header_table_t *table, const uint8_t *block, size_t len)
{
    int pseudo = 0;
    size_t content_length = SIZE_MAX;
    const char *err = NULL;
    memset(req, 0, sizeof *req);
    h2o_mem_init_pool(&req->pool);
    assert_int_equal(h2o_hpack_parse_headers(req, table, block, len, &pseudo, &content_length, NULL, &err), 0);
}

static void same_request(h2o_req_t *a, h2o_req_t *b)
{
    assert_true(h2o_memis(a->input.path.base, a->input.path.len, H2O_STRLIT("/tokend.v1.Tokend/Verify")));
    assert_true(h2o_memis(b->input.path.base, b->input.path.len, H2O_STRLIT("/tokend.v1.Tokend/Verify")));
    assert_true(h2o_memis(a->input.authority.base, a->input.authority.len, H2O_STRLIT("www.example.com")));
    assert_true(h2o_memis(b->input.authority.base, b->input.authority.len, H2O_STRLIT("www.example.com")));
    assert_true(h2o_memis(a->input.method.base, a->input.method.len, H2O_STRLIT("POST")));
    assert_int_equal(a->headers.size, 1);
    assert_int_equal(b->headers.size, 1);
    assert_true(h2o_memis(b->headers.entries[0].value.base, b->headers.entries[0].value.len,
                          H2O_STRLIT("application/grpc")));
    h2o_mem_clear_pool(&a->pool);
    h2o_mem_clear_pool(&b->pool);
}

static void test_h2o_reads_the_same(void **state)
{
    h2_paths *ps = paths();
    h2o_hpack_header_table_t ta = {0}, tb = {0};
    h2o_req_t a, b;
    ta.hpack_capacity = ta.hpack_max_capacity = 4096;
    tb = ta;
    /* :method POST, :scheme http, :path (Huffman, indexed), :authority and
     * content-type (indexed, plain) */
    uint8_t block[128] = "\x83\x86\x44";
    size_t len = 3 + h2o_hpack_encode_string(block + 3, "/tokend.v1.Tokend/Verify", 24);
    assert_true(block[3] & 0x80);
    memcpy(block + len, "\x41\x8c" WWW "\x5f\x10" "application/grpc", 32);
    len += 32;
    uint8_t frame[256], out[H2_PATH_OUT_BYTES];
    size_t n = frame_of(frame, 0x4, block, len);
    size_t m = h2_path_plain(ps, frame, n, out, sizeof out);
    assert_int_equal(m, n + 24 - (block[3] & 0x7f));
    decode(&a, &ta, frame + 9, n - 9);
    decode(&b, &tb, out + 9, m - 9);
    same_request(&a, &b);
    assert_int_equal(ta.num_entries, 3);
    assert_int_equal(tb.num_entries, 3);
    assert_int_equal(ta.hpack_size, tb.hpack_size);
    /* the next request names the three entries (newest first: 62 is
     * content-type, 64 the path): the same on both tables */
    static const uint8_t again[] = "\x83\x86\xc0\xbf\xbe";
    decode(&a, &ta, again, 5);
    decode(&b, &tb, again, 5);
    same_request(&a, &b);
    h2o_hpack_dispose_header_table(&ta);
    h2o_hpack_dispose_header_table(&tb);
    h2_paths_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_forms),
        cmocka_unit_test(test_every_literal_kind),
        cmocka_unit_test(test_left_alone),
        cmocka_unit_test(test_h2o_reads_the_same),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
