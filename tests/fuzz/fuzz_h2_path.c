/* fuzz_h2_path.c - libFuzzer target of src/h2_path.c: the input's first
 * byte is a HEADERS frame's flags, the rest its header block. Whenever
 * h2_path_plain rewrites the frame, h2o must read the two blocks alike: the
 * same result, and on success the same :path, :method, :authority, the same
 * fields and the same HPACK table. The output stays within its buffer
 * (ASan) and names a known path. Both blocks are followed by zeroed bytes,
 * as in the server: h2o 2.2.5's HPACK parser can read one byte past a
 * block's end (corpus: h2o-hpack-overread), which on an exact-size buffer
 * faulted at random. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>

#include "h2_path.h"

#include "fuzz_check.h"

static const char *const known[] = {"/tokend.v1.Tokend/Verify", "/token/verify", "/token/user",
                                    "/grpc.health.v1.Health/Check", "www.example.com", "custom-value"};

typedef struct {
    h2o_req_t req;
    h2o_hpack_header_table_t table;
    int rc;
} reading;

static void read_block(reading *r, const uint8_t *block, size_t len)
{
    int pseudo = 0;
    size_t content_length = SIZE_MAX;
    const char *err = NULL;
    h2o_cache_digests_t *digests = NULL;
    memset(r, 0, sizeof *r);
    h2o_mem_init_pool(&r->req.pool);
    r->table.hpack_capacity = r->table.hpack_max_capacity = 4096;
    r->rc = h2o_hpack_parse_headers(&r->req, &r->table, block, len, &pseudo, &content_length, &digests, &err);
    if (digests != NULL)
        h2o_cache_digests_destroy(digests);
}

static int same_iovec(h2o_iovec_t a, h2o_iovec_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

static void done(reading *r)
{
    h2o_hpack_dispose_header_table(&r->table);
    h2o_mem_clear_pool(&r->req.pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static h2_paths *ps;
    if (ps == NULL)
        CHECK((ps = h2_paths_create(known, sizeof known / sizeof known[0])) != NULL);
    if (size == 0 || size - 1 > H2_PATH_FRAME_MAX + 16)
        return 0;
    size_t payload = size - 1;
    uint8_t *frame = calloc(1, 9 + payload + H2_PATH_SLACK), out[H2_PATH_OUT_BYTES + H2_PATH_SLACK];
    CHECK(frame != NULL);
    frame[0] = (uint8_t)(payload >> 16), frame[1] = (uint8_t)(payload >> 8), frame[2] = (uint8_t)payload;
    frame[3] = 0x1, frame[4] = data[0];
    memcpy(frame + 5, "\x00\x00\x00\x01", 4);
    memcpy(frame + 9, data + 1, payload);
    size_t n = h2_path_plain(ps, frame, 9 + payload, out, H2_PATH_OUT_BYTES);
    if (n != 0) {
        CHECK(n > 9 && n <= H2_PATH_OUT_BYTES);
        memset(out + n, 0, H2_PATH_SLACK);
        CHECK(((size_t)out[0] << 16 | (size_t)out[1] << 8 | out[2]) == n - 9);
        CHECK(memcmp(out + 3, frame + 3, 6) == 0);
        CHECK((data[0] & 0x4) && !(data[0] & 0x8) && payload <= H2_PATH_FRAME_MAX);
        size_t skip = (data[0] & 0x20) ? 5 : 0;
        reading a, b;
        read_block(&a, frame + 9 + skip, payload - skip);
        read_block(&b, out + 9 + skip, n - 9 - skip);
        CHECK(a.rc == b.rc);
        if (a.rc == 0) {
            CHECK(same_iovec(a.req.input.path, b.req.input.path));
            CHECK(same_iovec(a.req.input.method, b.req.input.method));
            CHECK(same_iovec(a.req.input.authority, b.req.input.authority));
            CHECK(a.req.headers.size == b.req.headers.size);
            for (size_t i = 0; i != a.req.headers.size; i++) {
                CHECK(same_iovec(*a.req.headers.entries[i].name, *b.req.headers.entries[i].name));
                CHECK(same_iovec(a.req.headers.entries[i].value, b.req.headers.entries[i].value));
            }
        }
        CHECK(a.table.num_entries == b.table.num_entries && a.table.hpack_size == b.table.hpack_size);
        done(&a);
        done(&b);
    }
    free(frame);
    return 0;
}
