/* test_pb.c - pb.c's one-pass pack and unpack give exactly protobuf-c's bytes
 * and messages: random messages of every type of the schema (flat ones take
 * the fast way, the others must fall through unchanged), then random damage
 * to the packed bytes, which both decoders must refuse or read alike. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sodium.h>
#include "pb.h"
#include "tokend/v1/store.pb-c.h"
#include "tokend/v1/tokend.pb-c.h"

static const ProtobufCMessageDescriptor *const types[] = {
    &tokend__v1__store__app__descriptor, &tokend__v1__store__user__descriptor,
    &tokend__v1__store__session__descriptor, &tokend__v1__store__device__descriptor,
    &tokend__v1__store__imported_user__descriptor, &tokend__v1__token_by_id_request__descriptor,
    &tokend__v1__token_by_login_request__descriptor, &tokend__v1__token_reply__descriptor,
    &tokend__v1__status__descriptor, &tokend__v1__verify_request__descriptor,
    &tokend__v1__verify_reply__descriptor, &tokend__v1__push_targets_reply__descriptor,
    &tokend__v1__device_token__descriptor, &tokend__v1__user_list__descriptor,
    &tokend__v1__register_request__descriptor, &tokend__v1__user__descriptor,
};

typedef struct {
    size_t used;
    _Alignas(16) uint8_t buf[1 << 16];
} arena;

static void *arena_alloc(void *d, size_t n)
{
    arena *a = d;
    n = (n + 15) & ~(size_t)15;
    if (n > sizeof a->buf - a->used)
        return NULL;
    a->used += n;
    return a->buf + a->used - n;
}

static void arena_free(void *d, void *p)
{
}

static uint64_t rnd(uint64_t n)
{
    uint64_t v;
    randombytes_buf(&v, sizeof v);
    return n ? v % n : v;
}

/* Fills the flat part of m: scalars (zero, small, huge, negative), strings
 * and bytes (empty or not) from `pool`. Other fields stay at their defaults. */
static void fill(ProtobufCMessage *m, char *pool, size_t pool_len)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *slot = (char *)m + f->offset;
        if (f->label != PROTOBUF_C_LABEL_NONE || rnd(4) == 0)
            continue;
        uint64_t v = rnd(3) == 0 ? rnd(0) : rnd(3) == 0 ? (uint64_t)-(int64_t)rnd(1000) : rnd(300);
        size_t len = rnd(3) == 0 ? 0 : rnd(pool_len);
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_ENUM: {
            uint32_t w = (uint32_t)v;
            memcpy(slot, &w, 4);
            break;
        }
        case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_UINT64:
            memcpy(slot, &v, 8);
            break;
        case PROTOBUF_C_TYPE_BOOL:
            *(protobuf_c_boolean *)slot = (protobuf_c_boolean)(v & 1);
            break;
        case PROTOBUF_C_TYPE_STRING: {
            char *s = pool + rnd(pool_len - len);
            s[len] = '\0';  /* the pool is cut into strings; ends overlap */
            *(char **)slot = rnd(5) == 0 ? NULL : s;
            break;
        }
        case PROTOBUF_C_TYPE_BYTES:
            ((ProtobufCBinaryData *)slot)->data = (uint8_t *)pool;
            ((ProtobufCBinaryData *)slot)->len = len;
            break;
        default:
            break;
        }
    }
}

static uint8_t *packed_by_protobuf_c(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len + 1);
    assert_non_null(b);
    assert_int_equal(protobuf_c_message_pack(m, b), *len);
    return b;
}

/* Both decoders on the same bytes: both refuse, or both give messages that
 * pack to the same bytes. */
static void same_decoding(const ProtobufCMessageDescriptor *d, const uint8_t *in, size_t n)
{
    arena *a = malloc(sizeof *a);
    assert_non_null(a);
    a->used = 0;
    ProtobufCAllocator alloc = {arena_alloc, arena_free, a};
    ProtobufCMessage *fast = pb_unpack(d, &alloc, n, in);
    ProtobufCMessage *ref = protobuf_c_message_unpack(d, NULL, n, in);
    assert_int_equal(fast == NULL, ref == NULL);
    if (ref) {
        size_t la, lb;
        uint8_t *x = packed_by_protobuf_c(fast, &la), *y = packed_by_protobuf_c(ref, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(x, y, la);
        free(x);
        free(y);
        protobuf_c_message_free_unpacked(ref, NULL);
    }
    free(a);
}

static void test_pack_and_unpack_like_protobuf_c(void **state)
{
    char pool[96];
    int flat = 0;
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        const ProtobufCMessageDescriptor *d = types[t];
        flat += pb_is_flat(d);
        for (int round = 0; round < 300; round++) {
            for (size_t i = 0; i < sizeof pool; i++)
                pool[i] = (char)(' ' + rnd(95));
            ProtobufCMessage *m = calloc(1, d->sizeof_message);
            assert_non_null(m);
            protobuf_c_message_init(d, m);
            fill(m, pool, sizeof pool - 1);
            size_t n;
            uint8_t *want = packed_by_protobuf_c(m, &n);
            uint8_t *got = malloc(n + 16);
            assert_non_null(got);
            assert_int_equal(pb_size(m), n);
            assert_int_equal(pb_pack(m, got), n);
            assert_memory_equal(got, want, n);
            /* one pass into a bounded buffer: the same bytes when they fit */
            size_t cap = rnd(n + 16), w = pb_pack_into(m, got, cap);
            if (!pb_is_flat(d))
                assert_int_equal(w, SIZE_MAX);
            else if (n > cap)
                assert_int_equal(w, SIZE_MAX);
            else if (w != SIZE_MAX) /* it may refuse a near fit (it reserves 12 bytes a field) */
                assert_memory_equal(got, want, w), assert_int_equal(w, n);
            if (pb_is_flat(d))
                assert_int_equal(pb_pack_into(m, got, n + 12 * d->n_fields), n);
            same_decoding(d, want, n);
            /* damage: a byte changed, cut short, or a byte added */
            for (int k = 0; k < 4 && n; k++) {
                memcpy(got, want, n);
                size_t at = rnd(n), len = n;
                if (k == 0)
                    got[at] = (uint8_t)rnd(256);
                else if (k == 1)
                    len = at;
                else
                    got[len++] = (uint8_t)rnd(256);
                same_decoding(d, got, len);
            }
            free(want);
            free(got);
            free(m);
        }
    }
    /* Session, Verify's request and reply, and others are flat; User is not. */
    assert_true(pb_is_flat(&tokend__v1__store__session__descriptor));
    assert_true(pb_is_flat(&tokend__v1__verify_reply__descriptor));
    assert_true(pb_is_flat(&tokend__v1__verify_request__descriptor));
    assert_false(pb_is_flat(&tokend__v1__user_list__descriptor));
    assert_true(flat > 3 && flat < (int)(sizeof types / sizeof *types));
}

/* Keys protobuf-c refuses although their value is fine: longer than 5 bytes
 * (a small field number padded with 0x80 bytes, found by fuzz_protobuf). */
static void test_overlong_key(void **state)
{
    static const uint8_t found[] = {0x50, 0xef, 0xfd, 0xff, 0xff, 0x3a, 0x88, 0x80, 0x80, 0x80,
                                    0x80, 0x00, 0x80, 0x80, 0x80, 0x80, 0x01};
    static const uint8_t padded5[] = {0x88, 0x80, 0x80, 0x80, 0x00, 0x01};   /* 5 bytes: taken */
    static const uint8_t padded6[] = {0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01};
    (void)state;
    same_decoding(&tokend__v1__token_by_id_request__descriptor, found, sizeof found);
    same_decoding(&tokend__v1__verify_reply__descriptor, padded5, sizeof padded5);
    same_decoding(&tokend__v1__verify_reply__descriptor, padded6, sizeof padded6);
    assert_null(protobuf_c_message_unpack(&tokend__v1__verify_reply__descriptor, NULL, sizeof padded6, padded6));
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_and_unpack_like_protobuf_c),
        cmocka_unit_test(test_overlong_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
