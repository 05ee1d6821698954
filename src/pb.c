/* pb.c - protobuf-c's pack and unpack, with a one-pass path for flat
 * messages (see pb.h for why). */
#include <stdint.h>
#include <string.h>
#include "pb.h"

#define FLAT_MAX_ID 63   /* fields seen are kept in a 64-bit set */

static int flat_type(const ProtobufCMessageDescriptor *desc)
{
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (f->label != PROTOBUF_C_LABEL_NONE || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
            f->id > FLAT_MAX_ID || (i > 0 && f->id <= desc->fields[i - 1].id))
            return 0;
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_BOOL: case PROTOBUF_C_TYPE_ENUM:
        case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_BYTES:
            break;
        default:
            return 0;
        }
    }
    return 1;
}

/* Descriptors are static: each thread remembers the few it has judged. */
int pb_is_flat(const ProtobufCMessageDescriptor *desc)
{
    static __thread struct { const ProtobufCMessageDescriptor *desc; int flat; } seen[8];
    static __thread unsigned next;
    for (unsigned i = 0; i < 8; i++)
        if (seen[i].desc == desc)
            return seen[i].flat;
    int flat = flat_type(desc);
    seen[next % 8].desc = desc;
    seen[next % 8].flat = flat;
    next++;
    return flat;
}

/* --- packing ------------------------------------------------------------------ */

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80)
        v >>= 7, n++;
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* A field's value as protobuf-c packs it: the varint (int32 and enums
 * sign-extended to 64 bits), or the bytes of a string or bytes field.
 * Returns 0 for a zero / empty value, which proto3 leaves out. */
static int field_value(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, uint64_t *v,
                       const uint8_t **bytes)
{
    const char *slot = (const char *)m + f->offset;
    *bytes = NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_ENUM: {
        int32_t x;
        memcpy(&x, slot, 4);
        *v = (uint64_t)(int64_t)x;
        break;
    }
    case PROTOBUF_C_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, slot, 4);
        *v = x;
        break;
    }
    case PROTOBUF_C_TYPE_BOOL:
        *v = *(const protobuf_c_boolean *)slot != 0;
        break;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)slot;
        if (!s || !*s)
            return 0;
        *bytes = (const uint8_t *)s;
        *v = strlen(s);
        return 1;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = (const ProtobufCBinaryData *)slot;
        *bytes = b->data;
        *v = b->len;
        return b->len != 0;
    }
    default: /* int64, uint64 */
        memcpy(v, slot, 8);
        break;
    }
    return *v != 0;
}

static int flat_message(const ProtobufCMessage *m)
{
    return m->n_unknown_fields == 0 && pb_is_flat(m->descriptor);
}

size_t pb_size(const ProtobufCMessage *m)
{
    if (!flat_message(m))
        return protobuf_c_message_get_packed_size(m);
    const ProtobufCMessageDescriptor *d = m->descriptor;
    size_t n = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        uint64_t v;
        const uint8_t *bytes;
        if (!field_value(m, &d->fields[i], &v, &bytes))
            continue;
        n += varint_size((uint64_t)d->fields[i].id << 3) + varint_size(v) + (bytes ? v : 0);
    }
    return n;
}

/* SIZE_MAX when the bytes would pass cap (what was written is then garbage). */
static size_t pack_flat(const ProtobufCMessage *m, uint8_t *out, size_t cap)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    uint8_t *p = out;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        uint64_t v;
        const uint8_t *bytes;
        if (!field_value(m, f, &v, &bytes))
            continue;
        /* a tag (ids < 64: 2 bytes at most), a varint (10), the bytes */
        if (cap - (size_t)(p - out) < 12 + (bytes ? v : 0))
            return SIZE_MAX;
        p = put_varint(p, (uint64_t)f->id << 3 | (bytes ? 2u : 0u));
        p = put_varint(p, v);
        if (bytes) {
            memcpy(p, bytes, (size_t)v);
            p += v;
        }
    }
    return (size_t)(p - out);
}

size_t pb_pack(const ProtobufCMessage *m, uint8_t *out)
{
    if (!flat_message(m))
        return protobuf_c_message_pack(m, out);
    return pack_flat(m, out, SIZE_MAX);
}

size_t pb_pack_into(const ProtobufCMessage *m, uint8_t *out, size_t cap)
{
    return flat_message(m) ? pack_flat(m, out, cap) : SIZE_MAX;
}

/* --- unpacking ------------------------------------------------------------------ */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    if (*p < end && **p < 0x80) {   /* most keys and many values: one byte */
        *v = *(*p)++;
        return 0;
    }
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* NULL: not decoded here (protobuf-c decides). */
static ProtobufCMessage *flat_unpack(const ProtobufCMessageDescriptor *desc,
                                     ProtobufCAllocator *a, size_t len, const uint8_t *data)
{
    const uint8_t *p = data, *end = data + len;
    uint64_t seen = 0;
    ProtobufCMessage *m = a->alloc(a->allocator_data, desc->sizeof_message);
    if (!m)
        return NULL;
    protobuf_c_message_init(desc, m);
    while (p < end) {
        uint64_t tag, v;
        const uint8_t *at = p;
        /* protobuf-c refuses a key longer than 5 bytes, even a padded small one */
        if (read_varint(&p, end, &tag) != 0 || p - at > 5 || (tag >> 3) > FLAT_MAX_ID)
            goto other;
        unsigned id = (unsigned)(tag >> 3);
        /* Fields are in number order: numbered 1.. without gaps, id is at id - 1. */
        const ProtobufCFieldDescriptor *f =
            id && id <= desc->n_fields && desc->fields[id - 1].id == id
                ? &desc->fields[id - 1] : protobuf_c_message_descriptor_get_field(desc, id);
        if (!f || (seen & (1ull << f->id)))
            goto other;
        seen |= 1ull << f->id;
        char *slot = (char *)m + f->offset;
        int text = f->type == PROTOBUF_C_TYPE_STRING, bytes = f->type == PROTOBUF_C_TYPE_BYTES;
        if ((tag & 7) != (text || bytes ? 2u : 0u) || read_varint(&p, end, &v) != 0)
            goto other;
        if (text || bytes) {
            if (v > (uint64_t)(end - p))
                goto other;
            uint8_t *c = NULL;
            if (text || v) {
                if (!(c = a->alloc(a->allocator_data, (size_t)v + text)))
                    goto other;
                memcpy(c, p, (size_t)v);
            }
            if (text) {
                c[v] = '\0';
                *(char **)slot = (char *)c;
            } else {
                ((ProtobufCBinaryData *)slot)->data = c;
                ((ProtobufCBinaryData *)slot)->len = (size_t)v;
            }
            p += v;
            continue;
        }
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_UINT64:
            memcpy(slot, &v, 8);
            break;
        case PROTOBUF_C_TYPE_BOOL:
            *(protobuf_c_boolean *)slot = v != 0;
            break;
        default: {  /* int32, uint32, enum: the low 32 bits */
            uint32_t w = (uint32_t)v;
            memcpy(slot, &w, 4);
        }
        }
    }
    return m;
other:
    protobuf_c_message_free_unpacked(m, a);
    return NULL;
}

ProtobufCMessage *pb_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                            size_t len, const uint8_t *data)
{
    ProtobufCMessage *m = NULL;
    if (alloc && pb_is_flat(desc))
        m = flat_unpack(desc, alloc, len, data);
    return m ? m : protobuf_c_message_unpack(desc, alloc, len, data);
}
