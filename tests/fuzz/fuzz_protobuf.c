/* fuzz_protobuf.c - libFuzzer target of protobuf-c decoding of what tokend
 * reads from outside: every request message of its services (the binary
 * and gRPC wire forms) and the records of proto/tokend/v1/store.proto (what
 * LMDB hands back; a damaged database must not crash the server).
 *
 * Input: byte 0 picks the type (modulo the count, fuzz_messages.h order,
 * store records last); the rest is the message. When it unpacks: the
 * message passes protobuf_c_message_check, packs into exactly
 * get_packed_size bytes (an exact-size heap buffer, so ASan sees any
 * overrun), the packed bytes unpack again and pack to the same bytes, and
 * the JSON envelope (transcode_envelope, as http.c answers) is written.
 * pb.c, what tokend really decodes and packs with, must agree: pb_unpack
 * (into an arena, its fast way for flat types) refuses what protobuf-c
 * refuses and otherwise gives a message that packs to the same bytes, and
 * pb_size / pb_pack give protobuf-c's bytes exactly; pb_unpack_text too,
 * and its word that every string is UTF-8 without a NUL is pb_check_strings's.
 *
 * One exception, a protobuf-c 1.4.1 leniency: a tag whose field number is
 * 0 written as an over-long varint (0x81 0x00 ...) unpacks as an unknown
 * field, which then packs as 0x01 and is refused on the way back in.
 * tokend never re-packs a message it decoded from outside (it ignores
 * unknown fields), so such messages skip the second unpack. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_messages.h"
#include "pb.h"
#include "transcode.h"

static const ProtobufCMessageDescriptor *types[FUZZ_MESSAGES_MAX];
static size_t n_types;

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        abort();
    size_t w = protobuf_c_message_pack(m, buf);
    if (w != n) {
        fprintf(stderr, "%s: packed %zu bytes, get_packed_size said %zu\n", m->descriptor->name,
                w, n);
        abort();
    }
    *len = n;
    return buf;
}

/* Whether m or a message inside it holds an unknown field numbered 0. */
static int has_field_zero(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return 1;
    for (unsigned f = 0; f < d->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[f];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *at = (const char *)m + fd->offset;
        const char *q = (const char *)m + fd->quantifier_offset;
        if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(const uint32_t *)q != fd->id)
            continue;  /* another member of the oneof is set */
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)q;
            ProtobufCMessage **v = *(ProtobufCMessage **const *)at;
            for (size_t k = 0; k < n; k++)
                if (v[k] && has_field_zero(v[k]))
                    return 1;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)at;
            if (sub && has_field_zero(sub))
                return 1;
        }
    }
    return 0;
}

static _Alignas(16) uint8_t arena_buf[1 << 20];

/* pb.c against protobuf-c on the same input (m: protobuf-c's result). */
static void check_pb(const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m,
                     const uint8_t *in, size_t n)
{
    pb_arena arena;
    ProtobufCAllocator alloc = pb_arena_init(&arena, arena_buf, sizeof arena_buf);
    ProtobufCMessage *fast = pb_unpack(d, &alloc, n, in);
    if ((fast == NULL) != (m == NULL)) {
        fprintf(stderr, "%s: pb_unpack %s what protobuf-c %s\n", d->name,
                fast ? "accepts" : "refuses", m ? "accepts" : "refuses");
        abort();
    }
    /* pb_unpack_text (the binary and gRPC forms' decoder) reads the same
     * message, and when it says its strings were found UTF-8 on the way,
     * the check it spares (pb_check_strings) agrees. */
    int checked = 0;
    char err[TRANSCODE_ERRLEN];
    ProtobufCMessage *text = pb_unpack_text(d, &alloc, n, in, &checked);
    if ((text == NULL) != (m == NULL)) {
        fprintf(stderr, "%s: pb_unpack_text %s what protobuf-c %s\n", d->name,
                text ? "accepts" : "refuses", m ? "accepts" : "refuses");
        abort();
    }
    if (!m)
        return;
    size_t la, lb;
    uint8_t *a = pack(fast, &la), *b = pack(m, &lb);
    if (la != lb || memcmp(a, b, la) != 0) {
        fprintf(stderr, "%s: pb_unpack decoded another message\n", d->name);
        abort();
    }
    uint8_t *c = malloc(lb ? lb : 1);
    if (!c)
        abort();
    if (pb_size(m) != lb || pb_pack(m, c) != lb || memcmp(c, b, lb) != 0) {
        fprintf(stderr, "%s: pb_pack differs from protobuf_c_message_pack\n", d->name);
        abort();
    }
    free(a);
    free(c);
    a = pack(text, &la);
    if (la != lb || memcmp(a, b, la) != 0) {
        fprintf(stderr, "%s: pb_unpack_text decoded another message\n", d->name);
        abort();
    }
    if (checked && pb_check_strings(d, n, in, err, sizeof err) != 0) {
        fprintf(stderr, "%s: pb_unpack_text passed a string that is not UTF-8 (%s)\n", d->name, err);
        abort();
    }
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!n_types)
        n_types = fuzz_messages(types, 1);
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = types[data[0] % n_types];
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
    check_pb(d, m, data + 1, size - 1);
    if (!m)
        return 0;
    if (m->descriptor != d || !protobuf_c_message_check(m)) {
        fprintf(stderr, "%s: unpacked message fails protobuf_c_message_check\n", d->name);
        abort();
    }
    size_t len1, len2;
    uint8_t *p1 = pack(m, &len1);
    ProtobufCMessage *m2 = NULL;
    if (has_field_zero(m))
        goto json;
    m2 = protobuf_c_message_unpack(d, NULL, len1, p1);
    if (!m2) {
        fprintf(stderr, "%s: its own packing does not unpack\n", d->name);
        abort();
    }
    uint8_t *p2 = pack(m2, &len2);
    if (len1 != len2 || memcmp(p1, p2, len1) != 0) {
        fprintf(stderr, "%s: packing is not stable (%zu then %zu bytes)\n", d->name, len1, len2);
        abort();
    }
    free(p2);
    protobuf_c_message_free_unpacked(m2, NULL);
json:;
    char *json = NULL;
    size_t jlen = 0;
    if (transcode_envelope(200, NULL, m, NULL, &json, &jlen) != 0) {
        fprintf(stderr, "%s: a decoded message cannot be written as JSON\n", d->name);
        abort();
    }
    free(json);
    free(p1);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
