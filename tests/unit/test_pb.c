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
#include "transcode.h"
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
    pb_arena a;
    _Alignas(16) uint8_t buf[1 << 16];
} arena;

static ProtobufCAllocator arena_over(arena *x)
{
    return pb_arena_init(&x->a, x->buf, sizeof x->buf);
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

static void same_bytes(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t la, lb;
    uint8_t *x = packed_by_protobuf_c(a, &la), *y = packed_by_protobuf_c(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(x, y, la);
    free(x);
    free(y);
}

/* Both decoders on the same bytes: both refuse, or both give messages that
 * pack to the same bytes. pb_unpack_text too, and when it says the strings
 * were checked, pb_check_strings (what it spares http.c) finds them UTF-8
 * without a NUL. Returns that flag (0 when refused). */
static int same_decoding(const ProtobufCMessageDescriptor *d, const uint8_t *in, size_t n)
{
    arena *a = malloc(sizeof *a);
    assert_non_null(a);
    ProtobufCAllocator alloc = arena_over(a);
    ProtobufCMessage *fast = pb_unpack(d, &alloc, n, in);
    int checked = 0;
    ProtobufCMessage *text = pb_unpack_text(d, &alloc, n, in, &checked);
    ProtobufCMessage *ref = protobuf_c_message_unpack(d, NULL, n, in);
    assert_int_equal(fast == NULL, ref == NULL);
    assert_int_equal(text == NULL, ref == NULL);
    if (ref) {
        char err[TRANSCODE_ERRLEN];
        same_bytes(fast, ref);
        same_bytes(text, ref);
        if (checked)
            assert_int_equal(pb_check_strings(d, n, in, err, sizeof err), 0);
        protobuf_c_message_free_unpacked(ref, NULL);
    }
    free(a);
    return ref && checked;
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
    /* and a length longer than 5 bytes (found by fuzz_protobuf: an empty
     * Device.push_token_sealed); an empty string's padded to 5 is taken */
    static const uint8_t length7[] = {0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    static const uint8_t length6[] = {0x1a, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 'x'};
    static const uint8_t length5[] = {0x1a, 0x81, 0x80, 0x80, 0x80, 0x00, 'x'};
    same_decoding(&tokend__v1__store__device__descriptor, length7, sizeof length7);
    same_decoding(&tokend__v1__store__session__descriptor, length6, sizeof length6);
    same_decoding(&tokend__v1__store__session__descriptor, length5, sizeof length5);
    assert_null(protobuf_c_message_unpack(&tokend__v1__store__device__descriptor, NULL, sizeof length7, length7));
    ProtobufCMessage *m = protobuf_c_message_unpack(&tokend__v1__store__session__descriptor, NULL,
                                                    sizeof length5, length5);
    assert_non_null(m);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* pb_size, pb_pack, pb_pack_into (flat types) and pb_unpack agree with
 * protobuf-c on m. */
static void same_packing(const ProtobufCMessage *m)
{
    size_t n;
    uint8_t *want = packed_by_protobuf_c(m, &n), got[512];
    assert_true(n <= sizeof got);
    assert_int_equal(pb_size(m), n);
    assert_int_equal(pb_pack(m, got), n);
    assert_memory_equal(got, want, n);
    if (pb_is_flat(m->descriptor)) {
        assert_int_equal(pb_pack_into(m, got, sizeof got), n);
        assert_memory_equal(got, want, n);
    }
    same_decoding(m->descriptor, want, n);
    /* cut short by one byte: both refuse (or both read the shorter message) */
    same_decoding(m->descriptor, want, n - 1);
    free(want);
}

/* Varints of every length, 1 to 10 bytes, in the middle of a message (8
 * bytes or more follow: read 8 at a time) and at its end (read by bytes). */
static void test_varint_lengths(void **state)
{
    char label[] = "a label long enough to follow";
    (void)state;
    for (int len = 1; len <= 10; len++) {
        uint64_t least = 1ull << (7 * (len - 1)), most = len == 10 ? UINT64_MAX : (least << 7) - 1;
        for (int k = 0; k < 2; k++) {
            Tokend__V1__Store__Session s = TOKEND__V1__STORE__SESSION__INIT;
            s.user_id = k ? most : least;
            s.expire_ms = (int64_t)s.user_id;
            s.label = label;
            same_packing(&s.base);
            s.label = "";  /* expire_ms last */
            same_packing(&s.base);
            arena a;
            ProtobufCAllocator alloc = arena_over(&a);
            uint8_t buf[64];
            size_t n = pb_pack(&s.base, buf);
            Tokend__V1__Store__Session *u = (Tokend__V1__Store__Session *)pb_unpack(
                &tokend__v1__store__session__descriptor, &alloc, n, buf);
            assert_non_null(u);
            assert_true(u->user_id == s.user_id && u->expire_ms == s.expire_ms);
        }
    }
}

/* A bool whose ten-byte varint has bits only past the 64th is true, as
 * protobuf-c reads it (the fuzzer's find: Session.admin came out false). */
static void test_bool_bits_past_64(void **state)
{
    static const uint8_t in[] = {0x48, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x24};
    (void)state;
    arena a;
    ProtobufCAllocator alloc = arena_over(&a);
    Tokend__V1__Store__Session *ref = tokend__v1__store__session__unpack(NULL, sizeof in, in);
    assert_non_null(ref);
    assert_true(ref->admin);
    Tokend__V1__Store__Session *u = (Tokend__V1__Store__Session *)pb_unpack(
        &tokend__v1__store__session__descriptor, &alloc, sizeof in, in);
    assert_non_null(u);
    assert_true(u->admin);
    int checked = 0;
    u = (Tokend__V1__Store__Session *)pb_unpack_text(&tokend__v1__store__session__descriptor,
                                                     &alloc, sizeof in, in, &checked);
    assert_non_null(u);
    assert_true(u->admin);
    tokend__v1__store__session__free_unpacked(ref, NULL);
}

/* Skipped strings and bytes come back empty, skipped scalars as they are,
 * and everything else as without the skip. */
static void test_unpack_skip(void **state)
{
    (void)state;
    uint8_t hash[32];
    memset(hash, 0xab, sizeof hash);
    Tokend__V1__Store__Session s = TOKEND__V1__STORE__SESSION__INIT;
    s.user_id = 7, s.app_id = 1000, s.device_guid = "dev", s.expire_ms = 1700000000000;
    s.store_token_hash = (ProtobufCBinaryData){sizeof hash, hash};
    s.access_key_secret = "the secret", s.public_key = "pk", s.admin = 1, s.label = "l";
    uint8_t buf[256];
    size_t n = pb_pack(&s.base, buf);
    arena a;
    ProtobufCAllocator alloc = arena_over(&a);
    Tokend__V1__Store__Session *u = (Tokend__V1__Store__Session *)pb_unpack_skip(
        &tokend__v1__store__session__descriptor, &alloc, n, buf, 1ull << 5 | 1ull << 6 | 1ull << 1);
    assert_non_null(u);
    assert_int_equal(u->store_token_hash.len, 0);
    assert_string_equal(u->access_key_secret, "");
    assert_true(u->user_id == 7);   /* a scalar is not skipped */
    assert_true(u->app_id == 1000 && u->expire_ms == 1700000000000 && u->admin);
    assert_string_equal(u->device_guid, "dev");
    assert_string_equal(u->public_key, "pk");
    assert_string_equal(u->label, "l");
    /* none of the secret's bytes was copied into the arena */
    for (size_t i = 0; i + 10 <= a.a.used; i++)
        assert_false(memcmp(a.buf + i, "the secret", 10) == 0);
    u = (Tokend__V1__Store__Session *)pb_unpack_skip(&tokend__v1__store__session__descriptor,
                                                    &alloc, n, buf, 0);
    assert_string_equal(u->access_key_secret, "the secret");
    assert_memory_equal(u->store_token_hash.data, hash, sizeof hash);
}

/* int32 and enums are sign-extended: a negative one packs as 10 bytes;
 * uint32 is not. */
static void test_negative_int32(void **state)
{
    static const int32_t values[] = {-1, INT32_MIN, INT32_MAX, -128};
    (void)state;
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        Tokend__V1__Store__Session s = TOKEND__V1__STORE__SESSION__INIT;
        s.encrypt_type = values[i];
        s.device_sn = (uint32_t)values[i];
        same_packing(&s.base);
        uint8_t buf[64];
        size_t n = pb_pack(&s.base, buf);
        if (values[i] < 0)
            assert_int_equal(n, 1 + 10 + 1 + 5);
    }
}

/* Field numbers at the plan's edge: 63 is flat (a two-byte key), 64 is not. */
typedef struct {
    ProtobufCMessage base;
    uint64_t a, b;
} Edge;

#define EDGE_FIELD(name, id, member) \
    {name, id, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_UINT64, 0, offsetof(Edge, member), \
     NULL, NULL, 0, 0, NULL, NULL}
#define EDGE_DESC(fields, ranges, init) \
    {PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "t.Edge", "Edge", "T__Edge", "t", sizeof(Edge), 2, \
     fields, edge_by_name, 2, ranges, (ProtobufCMessageInit)init, NULL, NULL, NULL}
static const ProtobufCFieldDescriptor edge63_fields[] = {EDGE_FIELD("a", 1, a), EDGE_FIELD("b", 63, b)};
static const ProtobufCFieldDescriptor edge64_fields[] = {EDGE_FIELD("a", 1, a), EDGE_FIELD("b", 64, b)};
static const unsigned edge_by_name[] = {0, 1};
static const ProtobufCIntRange edge63_ranges[] = {{1, 0}, {63, 1}, {0, 2}};
static const ProtobufCIntRange edge64_ranges[] = {{1, 0}, {64, 1}, {0, 2}};
static void edge63_init(Edge *m);
static void edge64_init(Edge *m);
static const ProtobufCMessageDescriptor edge63 = EDGE_DESC(edge63_fields, edge63_ranges, edge63_init);
static const ProtobufCMessageDescriptor edge64 = EDGE_DESC(edge64_fields, edge64_ranges, edge64_init);

static void edge63_init(Edge *m)
{
    *m = (Edge){PROTOBUF_C_MESSAGE_INIT(&edge63), 0, 0};
}

static void edge64_init(Edge *m)
{
    *m = (Edge){PROTOBUF_C_MESSAGE_INIT(&edge64), 0, 0};
}

static void test_field_at_edge(void **state)
{
    (void)state;
    assert_true(pb_is_flat(&edge63));
    assert_false(pb_is_flat(&edge64));
    for (int i = 0; i < 2; i++) {
        Edge e = {PROTOBUF_C_MESSAGE_INIT(i ? &edge64 : &edge63), 5, 1ull << 40};
        same_packing(&e.base);
    }
    /* field 63 twice; field 64 (unknown) and 0 in a flat type */
    static const uint8_t twice[] = {0xf8, 0x03, 0x01, 0xf8, 0x03, 0x02};
    static const uint8_t past[] = {0x08, 0x01, 0x80, 0x04, 0x07};
    static const uint8_t zero[] = {0x00, 0x01, 0x08, 0x01};
    same_decoding(&edge63, twice, sizeof twice);
    same_decoding(&edge63, past, sizeof past);
    same_decoding(&edge63, zero, sizeof zero);
}

/* An allocator on the heap that counts what is live. */
static void *count_alloc(void *data, size_t n)
{
    ++*(int *)data;
    return malloc(n);
}

static void count_free(void *data, void *p)
{
    --*(int *)data;
    free(p);
}

/* A field that comes again: the fast way takes it (no detour through
 * protobuf-c), the last one wins as in protobuf-c (scalars, strings, bytes,
 * an empty one last), and the copies it replaced are freed: nothing is
 * live once the message is freed. */
static void test_fields_again(void **state)
{
    (void)state;
    Tokend__V1__Store__Session first = TOKEND__V1__STORE__SESSION__INIT;
    first.user_id = 1, first.device_guid = "first", first.expire_ms = 5, first.public_key = "pk1";
    first.store_token_hash = (ProtobufCBinaryData){3, (uint8_t *)"abc"};
    first.admin = 1;
    uint8_t buf[256];
    size_t n = pb_pack(&first.base, buf);
    static const uint8_t again[] = {
        0x08, 0x07,                                       /* user_id 7 */
        0x1a, 6, 's', 'e', 'c', 'o', 'n', 'd',            /* device_guid "second" */
        0x2a, 0,                                          /* store_token_hash empty */
        0x42, 3, 'p', 'k', '2',                           /* public_key "pk2" */
        0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, /* expire_ms -1 */
        0x48, 0x00,                                       /* admin false */
        0x1a, 5, 't', 'h', 'i', 'r', 'd',                 /* device_guid "third" */
    };
    memcpy(buf + n, again, sizeof again);
    n += sizeof again;
    assert_int_equal(same_decoding(&tokend__v1__store__session__descriptor, buf, n), 1);
    for (int skip = 0; skip < 2; skip++) {
        int live = 0, checked = 0;
        ProtobufCAllocator heap = {count_alloc, count_free, &live};
        Tokend__V1__Store__Session *m =
            skip ? (Tokend__V1__Store__Session *)pb_unpack_skip(
                       &tokend__v1__store__session__descriptor, &heap, n, buf, 1u << 5)
                 : (Tokend__V1__Store__Session *)pb_unpack_text(
                       &tokend__v1__store__session__descriptor, &heap, n, buf, &checked);
        assert_non_null(m);
        assert_int_equal(checked, !skip);   /* decoded the fast way */
        assert_int_equal(m->user_id, 7);
        assert_string_equal(m->device_guid, "third");
        assert_string_equal(m->public_key, "pk2");
        assert_int_equal(m->expire_ms, -1);
        assert_int_equal(m->admin, 0);
        assert_int_equal(m->store_token_hash.len, 0);
        assert_null(m->store_token_hash.data);
        assert_int_equal(live, 3);   /* the message and its two strings */
        protobuf_c_message_free_unpacked(&m->base, &heap);
        assert_int_equal(live, 0);
    }
    /* a string that is not UTF-8 leaves the message to protobuf-c: the
     * fast way's copies, that one's too, are given back */
    buf[n++] = 0x42, buf[n++] = 2, buf[n++] = 0xc3, buf[n++] = 0x28;
    int live = 0, checked = 1;
    ProtobufCAllocator heap = {count_alloc, count_free, &live};
    ProtobufCMessage *m = pb_unpack_text(&tokend__v1__store__session__descriptor, &heap, n, buf,
                                         &checked);
    assert_non_null(m);   /* protobuf-c's, which does not judge text */
    assert_int_equal(checked, 0);
    protobuf_c_message_free_unpacked(m, &heap);
    assert_int_equal(live, 0);
}

/* pb_unpack_text's check against pb_check_strings's: a bad byte, a cut or
 * overlong sequence, a surrogate, a NUL at every position of every string
 * field of a flat message is found (and the message left to protobuf-c,
 * whose result http.c then checks); good text is passed, a character
 * anywhere. */
static void test_unpack_text(void **state)
{
    static const char *const bad[] = {"\xff", "\x80", "\xc3", "\xe4\xb8", "\xed\xa0\x80",
                                      "\xc0\x80", "\xf4\x90\x80\x80", "\xc3\x41"};
    static const char *const good[] = {"\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\x7f"};
    (void)state;
    for (size_t n = 1; n < 40; n++) {
        for (size_t at = 0; at < n; at++) {
            for (int field = 0; field < 4; field++) {
                for (size_t k = 0; k < sizeof bad / sizeof *bad + sizeof good / sizeof *good + 1; k++) {
                    char s[64];
                    memset(s, 'a', n);
                    s[n] = '\0';
                    int want = 1;
                    if (k < sizeof bad / sizeof *bad) {
                        size_t len = strlen(bad[k]);
                        memcpy(s + at, bad[k], len < n - at ? len : n - at);
                        want = 0;
                    } else if (k < sizeof bad / sizeof *bad + sizeof good / sizeof *good) {
                        const char *g = good[k - sizeof bad / sizeof *bad];
                        if (strlen(g) > n - at)
                            continue;
                        memcpy(s + at, g, strlen(g));
                    } else {   /* a NUL inside: a C string would end there */
                        s[at] = '\0';
                        want = 0;
                    }
                    /* the string goes into the wire form with its n bytes */
                    uint8_t buf[256];
                    size_t len;
                    if (field == 0) {   /* Verify's request: one field */
                        uint8_t *p = buf;
                        *p++ = 0x0a, *p++ = (uint8_t)n;
                        memcpy(p, s, n);
                        len = 2 + n;
                    } else {   /* one of a session's strings, appended to the others */
                        static const char *const names[] = {"device_guid", "public_key", "label"};
                        Tokend__V1__Store__Session m = TOKEND__V1__STORE__SESSION__INIT;
                        m.user_id = 9, m.device_guid = "dev", m.public_key = "pk", m.label = "l";
                        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(
                            &tokend__v1__store__session__descriptor, names[field - 1]);
                        *(char **)((char *)&m + f->offset) = "";
                        len = pb_pack(&m.base, buf);
                        buf[len++] = (uint8_t)(f->id << 3 | 2);
                        buf[len++] = (uint8_t)n;
                        memcpy(buf + len, s, n);   /* a NUL in s goes in too */
                        len += n;
                    }
                    const ProtobufCMessageDescriptor *d = field == 0
                        ? &tokend__v1__verify_request__descriptor
                        : &tokend__v1__store__session__descriptor;
                    ProtobufCMessage *ref = protobuf_c_message_unpack(d, NULL, len, buf);
                    char err[TRANSCODE_ERRLEN];
                    assert_non_null(ref);
                    assert_int_equal(pb_check_strings(d, len, buf, err, sizeof err) == 0, want);
                    protobuf_c_message_free_unpacked(ref, NULL);
                    assert_int_equal(same_decoding(d, buf, len), want);
                }
            }
        }
    }
    /* A type that is not flat is never checked on the way in. */
    Tokend__V1__UserSummary u = TOKEND__V1__USER_SUMMARY__INIT;
    Tokend__V1__UserSummary *list[] = {&u};
    Tokend__V1__UserList l = TOKEND__V1__USER_LIST__INIT;
    u.username = "ok";
    l.n_users = 1, l.users = list;
    uint8_t buf[64];
    size_t n = pb_pack(&l.base, buf);
    assert_int_equal(same_decoding(&tokend__v1__user_list__descriptor, buf, n), 0);
}

/* The wire walk names the field at fault, in a submessage too, and passes
 * what only protobuf-c can judge. */
static void test_check_strings_nested(void **state)
{
    (void)state;
    Tokend__V1__UserSummary u = TOKEND__V1__USER_SUMMARY__INIT, v = TOKEND__V1__USER_SUMMARY__INIT;
    Tokend__V1__UserSummary *list[] = {&u, &v};
    Tokend__V1__UserList l = TOKEND__V1__USER_LIST__INIT;
    char err[TRANSCODE_ERRLEN];
    u.username = "ok", v.username = "al\xc3\xa9";
    l.n_users = 2, l.users = list;
    uint8_t buf[128];
    size_t n = pb_pack(&l.base, buf);
    assert_int_equal(pb_check_strings(&tokend__v1__user_list__descriptor, n, buf, err, sizeof err), 0);
    /* the last username's bytes end the buffer: "al\0\xa9" */
    buf[n - 2] = '\0';
    assert_int_equal(pb_check_strings(&tokend__v1__user_list__descriptor, n, buf, err, sizeof err), -1);
    assert_string_equal(err, "username: NUL characters are not allowed");
    buf[n - 2] = 0xc3, buf[n - 1] = 0x41;
    assert_int_equal(pb_check_strings(&tokend__v1__user_list__descriptor, n, buf, err, sizeof err), -1);
    assert_string_equal(err, "username: invalid UTF-8");
    /* cut short: protobuf-c's to refuse, not this walk's */
    assert_int_equal(pb_check_strings(&tokend__v1__user_list__descriptor, n - 1, buf, err, sizeof err), 0);
    assert_null(protobuf_c_message_unpack(&tokend__v1__user_list__descriptor, NULL, n - 1, buf));
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_and_unpack_like_protobuf_c),
        cmocka_unit_test(test_overlong_key),
        cmocka_unit_test(test_varint_lengths),
        cmocka_unit_test(test_bool_bits_past_64),
        cmocka_unit_test(test_negative_int32),
        cmocka_unit_test(test_field_at_edge),
        cmocka_unit_test(test_unpack_skip),
        cmocka_unit_test(test_fields_again),
        cmocka_unit_test(test_unpack_text),
        cmocka_unit_test(test_check_strings_nested),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
