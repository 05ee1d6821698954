/* pb.c - protobuf-c's pack and unpack, with a one-pass path for flat
 * messages (see pb.h for why). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "pb.h"
#include "utf8.h"

#define FLAT_MAX_ID 63   /* fields to skip are a 64-bit set (pb_unpack_skip) */
#define NO_TAG 0xffff    /* a key no input reaches (its number is over FLAT_MAX_ID) */

/* A flat type's fields by number, judged once per thread: the fast way then
 * loads one slot a field instead of the descriptor's number, type and label. */
enum { NONE, U64, I32, U32, BOOL, STRING, BYTES };   /* I32: int32 and enums */
struct slot {
    uint32_t offset;
    uint16_t tag;    /* its key: number << 3 | wire type */
    uint8_t kind;
};
struct plan {
    const ProtobufCMessageDescriptor *desc;
    int flat;
    unsigned top;    /* the highest field number */
    size_t reserve;  /* what keys and varints may take: 12 bytes a field */
    struct slot by_id[FLAT_MAX_ID + 1];
};

static int make_plan(const ProtobufCMessageDescriptor *desc, struct plan *pl)
{
    static const uint8_t kinds[PROTOBUF_C_TYPE_MESSAGE] = {
        [PROTOBUF_C_TYPE_INT32] = I32, [PROTOBUF_C_TYPE_ENUM] = I32,
        [PROTOBUF_C_TYPE_UINT32] = U32, [PROTOBUF_C_TYPE_INT64] = U64,
        [PROTOBUF_C_TYPE_UINT64] = U64, [PROTOBUF_C_TYPE_BOOL] = BOOL,
        [PROTOBUF_C_TYPE_STRING] = STRING, [PROTOBUF_C_TYPE_BYTES] = BYTES,
    };
    for (unsigned i = 0; i <= FLAT_MAX_ID; i++)
        pl->by_id[i] = (struct slot){.tag = NO_TAG, .kind = NONE};
    pl->top = 0;
    pl->reserve = 12 * (size_t)desc->n_fields;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        unsigned kind = (unsigned)f->type < sizeof kinds ? kinds[f->type] : NONE;
        /* in number order, as protobuf-c packs them */
        if (f->label != PROTOBUF_C_LABEL_NONE || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
            f->id > FLAT_MAX_ID || f->id <= pl->top || kind == NONE)
            return 0;
        pl->by_id[f->id] = (struct slot){f->offset, f->id << 3 | (kind >= STRING ? 2 : 0), kind};
        pl->top = f->id;
    }
    return 1;
}

/* Descriptors are static: each thread keeps the plans of the few it has met. */
static const struct plan *plan_of(const ProtobufCMessageDescriptor *desc)
{
    static __thread struct plan plans[8];
    static __thread unsigned next;
    for (unsigned i = 0; i < 8; i++)
        if (plans[i].desc == desc)
            return &plans[i];
    struct plan *pl = &plans[next++ % 8];
    pl->desc = desc;
    pl->flat = make_plan(desc, pl);
    return pl;
}

int pb_is_flat(const ProtobufCMessageDescriptor *desc)
{
    return plan_of(desc)->flat;
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
static int field_value(const ProtobufCMessage *m, const struct slot *s, uint64_t *v,
                       const uint8_t **bytes)
{
    const char *at = (const char *)m + s->offset;
    *bytes = NULL;
    switch (s->kind) {
    case NONE:
        return 0;
    case I32: {
        int32_t x;
        memcpy(&x, at, 4);
        *v = (uint64_t)(int64_t)x;
        break;
    }
    case U32: {
        uint32_t x;
        memcpy(&x, at, 4);
        *v = x;
        break;
    }
    case BOOL:
        *v = *(const protobuf_c_boolean *)at != 0;
        break;
    case STRING: {
        const char *t = *(const char *const *)at;
        if (!t || !*t)
            return 0;
        *bytes = (const uint8_t *)t;
        *v = strlen(t);
        return 1;
    }
    case BYTES: {
        const ProtobufCBinaryData *b = (const ProtobufCBinaryData *)at;
        *bytes = b->data;
        *v = b->len;
        return b->len != 0;
    }
    default: /* U64 */
        memcpy(v, at, 8);
        break;
    }
    return *v != 0;
}

/* m's plan, or NULL when protobuf-c packs it. */
static const struct plan *flat_plan(const ProtobufCMessage *m)
{
    const struct plan *pl;
    return m->n_unknown_fields == 0 && (pl = plan_of(m->descriptor))->flat ? pl : NULL;
}

size_t pb_size(const ProtobufCMessage *m)
{
    const struct plan *pl = flat_plan(m);
    if (!pl)
        return protobuf_c_message_get_packed_size(m);
    size_t n = 0;
    for (const struct slot *s = pl->by_id + 1, *last = pl->by_id + pl->top; s <= last; s++) {
        uint64_t v;
        const uint8_t *bytes;
        if (field_value(m, s, &v, &bytes))
            n += varint_size(s->tag) + varint_size(v) + (bytes ? v : 0);
    }
    return n;
}

/* SIZE_MAX when the bytes may pass cap (what was written is then garbage).
 * Keys and varints fit in the reserve, so only strings and bytes are
 * measured against the room left. */
static size_t pack_flat(const ProtobufCMessage *m, const struct plan *pl, uint8_t *out, size_t cap)
{
    if (cap < pl->reserve)
        return SIZE_MAX;
    size_t room = cap - pl->reserve;
    uint8_t *p = out;
    for (const struct slot *s = pl->by_id + 1, *last = pl->by_id + pl->top; s <= last; s++) {
        uint64_t v;
        const uint8_t *bytes;
        if (!field_value(m, s, &v, &bytes))
            continue;
        p = put_varint(p, s->tag);
        p = put_varint(p, v);
        if (bytes) {
            if (v > room)
                return SIZE_MAX;
            room -= v;
            memcpy(p, bytes, (size_t)v);
            p += v;
        }
    }
    return (size_t)(p - out);
}

size_t pb_pack(const ProtobufCMessage *m, uint8_t *out)
{
    const struct plan *pl = flat_plan(m);
    return pl ? pack_flat(m, pl, out, SIZE_MAX) : protobuf_c_message_pack(m, out);
}

size_t pb_pack_into(const ProtobufCMessage *m, uint8_t *out, size_t cap)
{
    const struct plan *pl = flat_plan(m);
    return pl ? pack_flat(m, pl, out, cap) : SIZE_MAX;
}

/* --- unpacking ------------------------------------------------------------------ */

/* A varint of at most 10 bytes, as protobuf-c reads it (end NULL: refused).
 * A struct of two words comes back in registers; flat_unpack reads one- and
 * two-byte varints itself. */
struct varint {
    const uint8_t *end;
    uint64_t v;
};

static struct varint get_varint(const uint8_t *p, const uint8_t *end)
{
    uint64_t x = 0;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t last;
    /* Timestamps in ms take 6 bytes: up to 8 are read at once and their
     * 7-bit groups closed up, pairs of groups at a time. */
    if (end - p >= 8 && (memcpy(&x, p, 8), last = ~x & 0x8080808080808080ull) != 0) {
        x &= (last ^ (last - 1)) & 0x7f7f7f7f7f7f7f7full;
        x = (x & 0x007f007f007f007full) | (x & 0x7f007f007f007f00ull) >> 1;
        x = (x & 0x00003fff00003fffull) | (x & 0x3fff00003fff0000ull) >> 2;
        x = (x & 0x000000000fffffffull) | (x & 0x0fffffff00000000ull) >> 4;
        return (struct varint){p + ((__builtin_ctzll(last) + 1) >> 3), x};
    }
    x = 0;
#endif
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
        uint8_t b = *p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return (struct varint){p, x};
    }
    return (struct varint){NULL, 0};
}

/* NULL: not decoded here (protobuf-c decides). With `text_only`, a string
 * field that is not UTF-8 is not decoded here either (pb_unpack_text).
 * Inlined where it is called: the sessions' decoder (pb_unpack_skip) is
 * then built without the text check, as it was before there was one. */
static inline __attribute__((always_inline)) ProtobufCMessage *
flat_unpack(const struct plan *pl, ProtobufCAllocator *a, size_t len, const uint8_t *data,
            uint64_t skip, int text_only)
{
    const uint8_t *p = data, *end = data + len;
    ProtobufCMessage *m = a->alloc(a->allocator_data, pl->desc->sizeof_message);
    if (!m)
        return NULL;
    protobuf_c_message_init(pl->desc, m);
    while (p < end) {
        struct varint r;
        uint64_t tag = *p++, v;
        if (tag >= 0x80) {
            /* protobuf-c refuses a key longer than 5 bytes, even a padded small one */
            if (!(r = get_varint(p - 1, end)).end || r.end - (p - 1) > 5 || r.v >> 3 > FLAT_MAX_ID)
                goto other;
            p = r.end, tag = r.v;
        }
        /* an unknown number or another wire type has another key; a field
         * that comes again overwrites what it set, as in protobuf-c (the
         * last one wins: scalars, strings and bytes alike) */
        const struct slot *s = &pl->by_id[tag >> 3];
        if (s->tag != tag || p == end)
            goto other;
        if ((v = *p++) >= 0x80) {   /* ids and lengths often take two bytes */
            if (p < end && *p < 0x80)
                v = (v & 0x7f) | (uint64_t)*p++ << 7;
            else if (!(r = get_varint(p - 1, end)).end ||
                     (s->kind >= STRING && r.end - (p - 1) > 5))   /* protobuf-c's limit */
                goto other;
            else {
                /* a bool is true if any of its bits is, those past the
                 * 64th too (as protobuf-c reads it) */
                if (s->kind == BOOL && r.end - (p - 1) == 10 && (r.end[-1] & 0x7e))
                    r.v = 1;
                p = r.end, v = r.v;
            }
        }
        char *slot = (char *)m + s->offset;
        switch (s->kind) {
        case STRING: case BYTES: {
            int text = s->kind == STRING;
            if (v > (uint64_t)(end - p))
                goto other;
            uint8_t *c = NULL;
            if (skip & (1ull << (tag >> 3))) {   /* left as protobuf_c_message_init made it */
                p += v;
                break;
            }
            if (text || v) {
                if (!(c = a->alloc(a->allocator_data, (size_t)v + text)))
                    goto other;
                if (!(text && text_only))
                    memcpy(c, p, (size_t)v);
                else if (!utf8_copy_valid((char *)c, (const char *)p, (size_t)v)) {
                    a->free(a->allocator_data, c);   /* in no field yet */
                    goto other;
                }
            }
            /* a field that came before: its copy goes, as protobuf-c frees it */
            if (text) {
                c[v] = '\0';
                if (*(char **)slot != protobuf_c_empty_string)
                    a->free(a->allocator_data, *(char **)slot);
                *(char **)slot = (char *)c;
            } else {
                if (((ProtobufCBinaryData *)slot)->data)
                    a->free(a->allocator_data, ((ProtobufCBinaryData *)slot)->data);
                ((ProtobufCBinaryData *)slot)->data = c;
                ((ProtobufCBinaryData *)slot)->len = (size_t)v;
            }
            p += v;
            break;
        }
        case U64:
            memcpy(slot, &v, 8);
            break;
        case BOOL:
            *(protobuf_c_boolean *)slot = v != 0;
            break;
        default: {  /* I32, U32: the low 32 bits */
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

ProtobufCMessage *pb_unpack_skip(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                                 size_t len, const uint8_t *data, uint64_t skip)
{
    ProtobufCMessage *m = NULL;
    const struct plan *pl;
    if (alloc && (pl = plan_of(desc))->flat)
        m = flat_unpack(pl, alloc, len, data, skip, 0);
    return m ? m : protobuf_c_message_unpack(desc, alloc, len, data);
}

ProtobufCMessage *pb_unpack_text(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                                 size_t len, const uint8_t *data, int *checked)
{
    ProtobufCMessage *m = NULL;
    const struct plan *pl;
    if (alloc && (pl = plan_of(desc))->flat)
        m = flat_unpack(pl, alloc, len, data, 0, 1);
    *checked = m != NULL;   /* the fast way decoded it, and checked every string */
    return m ? m : protobuf_c_message_unpack(desc, alloc, len, data);
}

ProtobufCMessage *pb_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                            size_t len, const uint8_t *data)
{
    return pb_unpack_skip(desc, alloc, len, data, 0);
}

static void *arena_alloc(void *data, size_t size)
{
    pb_arena *a = data;
    size = (size + 15) & ~(size_t)15;
    if (size > a->cap - a->used)
        return NULL;
    void *p = a->buf + a->used;
    a->used += size;
    return p;
}

static void arena_free(void *data, void *p)
{
    (void)data, (void)p;
}

ProtobufCAllocator pb_arena_init(pb_arena *a, void *buf, size_t cap)
{
    *a = (pb_arena){buf, cap, 0};
    return (ProtobufCAllocator){arena_alloc, arena_free, a};
}

/* The string fields of a message on the wire, its submessages' too; what
 * does not parse is left to protobuf-c, which refuses it. */
static int check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end,
                         int depth, char *err, size_t errlen)
{
    if (depth > PB_DEPTH_MAX) {
        snprintf(err, errlen, "%s: messages nested deeper than %d levels", desc->name, PB_DEPTH_MAX);
        return -1;
    }
    while (p < end) {
        struct varint key = get_varint(p, end), n;
        if (!key.end)
            return 0;
        p = key.end;
        switch (key.v & 7) {
        case 0:
            if (!(n = get_varint(p, end)).end)
                return 0;
            p = n.end;
            break;
        case 1:
        case 5: {
            size_t w = (key.v & 7) == 1 ? 8 : 4;
            if ((size_t)(end - p) < w)
                return 0;
            p += w;
            break;
        }
        case 2: {
            if (!(n = get_varint(p, end)).end || n.v > (uint64_t)(end - n.end))
                return 0;
            const uint8_t *s = n.end;
            p = s + n.v;
            const ProtobufCFieldDescriptor *f =
                key.v >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key.v >> 3))
                                         : NULL;
            if (!f)
                break;
            if (f->type == PROTOBUF_C_TYPE_STRING && memchr(s, '\0', (size_t)n.v)) {
                snprintf(err, errlen, "%s: NUL characters are not allowed", f->name);
                return -1;
            }
            if (f->type == PROTOBUF_C_TYPE_STRING && !utf8_valid_n((const char *)s, (size_t)n.v)) {
                snprintf(err, errlen, "%s: invalid UTF-8", f->name);
                return -1;
            }
            if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
                check_strings(f->descriptor, s, p, depth + 1, err, errlen) != 0)
                return -1;
            break;
        }
        default:
            return 0;
        }
    }
    return 0;
}

int pb_check_strings(const ProtobufCMessageDescriptor *desc, size_t len, const uint8_t *data, char *err,
                     size_t errlen)
{
    return check_strings(desc, data, data + len, 0, err, errlen);
}
