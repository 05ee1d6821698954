/* transcode.c - JSON <-> protobuf-c messages, for the HTTP side of tokend.
 *
 * The JSON API and the gRPC API share one set of protobuf messages. Rather
 * than a JSON codec per message, this file walks the protobuf-c descriptors,
 * so a new RPC needs no JSON code and the two wire forms cannot drift apart.
 * On the way in, jansson parses the JSON text (and checks its UTF-8) and
 * this file maps its values onto fields, with the type and range checks the
 * schema implies. On the way out, this file writes the JSON text itself,
 * straight from the descriptors, and asks jansson only to format real
 * numbers.
 *
 * Everything built here is owned the way protobuf_c_message_unpack owns it
 * (malloc'd strings, arrays, bytes and submessages), and each allocation is
 * hooked into its parent as soon as it exists, so a half-built message is
 * always safe to hand to protobuf_c_message_free_unpacked. That is what
 * keeps the error paths short: on any error, free the root. */

#include "transcode.h"
#include "crypto.h"
#include "grpc_frame.h"
#include "utf8.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ---------------------------------------------------------------------------
 * Errors and field paths
 * ------------------------------------------------------------------------- */

/* One step of the path to the value being converted. Steps live on the C
 * stack of the walk and become text only when there is an error to report,
 * so successful conversions never pay for building paths. */
typedef struct pathstep {
    const struct pathstep *up;
    const char *name; /* field name, or NULL for an array element */
    size_t index;
} pathstep;

/* The path to `at`, written backwards from the end of buf, so that a path
 * too long to show whole loses its top rather than the field itself. */
static const char *format_path(char *buf, size_t cap, const pathstep *at)
{
    char *p = buf + cap - 1, index[24];

    *p = '\0';
    for (; at; at = at->up) {
        const char *seg = at->name;
        bool dot = seg && at->up;
        size_t n;

        if (!seg) {
            snprintf(index, sizeof index, "[%zu]", at->index);
            seg = index;
        }
        n = strlen(seg);
        if ((size_t)(p - buf) < n + dot + 3) {
            if (*p == '.') p++;
            p -= 3;
            memcpy(p, "...", 3);
            break;
        }
        p -= n;
        memcpy(p, seg, n);
        if (dot) *--p = '.';
    }
    return p;
}

/* Writes "<path>: <message>" to err and returns -1. A NULL path means the
 * request body as a whole. The path gets at most ~100 characters, so the
 * message always has room. */
static int fail(char *err, const pathstep *at, const char *fmt, ...)
{
    char buf[100];
    const char *path = at ? format_path(buf, sizeof buf, at) : "body";
    int n = snprintf(err, TRANSCODE_ERRLEN, "%s: ", path);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err + n, TRANSCODE_ERRLEN - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *type_name(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: return "int32";
    case PROTOBUF_C_TYPE_SINT32: return "sint32";
    case PROTOBUF_C_TYPE_SFIXED32: return "sfixed32";
    case PROTOBUF_C_TYPE_INT64: return "int64";
    case PROTOBUF_C_TYPE_SINT64: return "sint64";
    case PROTOBUF_C_TYPE_SFIXED64: return "sfixed64";
    case PROTOBUF_C_TYPE_UINT32: return "uint32";
    case PROTOBUF_C_TYPE_FIXED32: return "fixed32";
    case PROTOBUF_C_TYPE_UINT64: return "uint64";
    case PROTOBUF_C_TYPE_FIXED64: return "fixed64";
    case PROTOBUF_C_TYPE_FLOAT: return "float";
    case PROTOBUF_C_TYPE_DOUBLE: return "double";
    case PROTOBUF_C_TYPE_ENUM: return ((const ProtobufCEnumDescriptor *)f->descriptor)->short_name;
    default: return "this field";
    }
}

/* The one "wrong kind of value" message per field type, so JSON and query
 * strings report the same mistake the same way. */
static int type_error(const ProtobufCFieldDescriptor *f, const pathstep *at, char *err)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: return fail(err, at, "expected a number");
    case PROTOBUF_C_TYPE_BOOL: return fail(err, at, "expected true or false");
    case PROTOBUF_C_TYPE_ENUM: return fail(err, at, "expected a %s name or number", type_name(f));
    case PROTOBUF_C_TYPE_STRING: return fail(err, at, "expected a string");
    case PROTOBUF_C_TYPE_BYTES: return fail(err, at, "expected a base64 string");
    case PROTOBUF_C_TYPE_MESSAGE: return fail(err, at, "expected a JSON object");
    default: return fail(err, at, "expected an integer");
    }
}

static int range_error(const ProtobufCFieldDescriptor *f, const pathstep *at, char *err)
{
    return fail(err, at, "number out of range for %s", type_name(f));
}

/* ---------------------------------------------------------------------------
 * Field values
 *
 * A converted value is held in a union until it is stored, so a conversion
 * that fails leaves the message untouched. Every member starts at offset 0,
 * so copying value_size() bytes of the union stores it into a field or an
 * array element of any type.
 * ------------------------------------------------------------------------- */

typedef union {
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f;
    double d;
    protobuf_c_boolean b;
    char *s;
    ProtobufCBinaryData bin;
    ProtobufCMessage *m;
} fieldvalue;

static size_t value_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM: return 4; /* protobuf-c stores enums as 32 bits */
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* What a request held (a password) must not linger in freed memory: what
 * is built here is freed wiped, and jansson's own copies too
 * (transcode_init). */
static void wiped_free(void *data, void *p)
{
    (void)data;
    crypto_free_wiped(p);
}

static void *plain_alloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static ProtobufCAllocator wiping = {plain_alloc, wiped_free, NULL};

void transcode_init(void)
{
    json_set_alloc_funcs(malloc, crypto_free_wiped);
}

static void value_free(ProtobufCType type, fieldvalue *v)
{
    if (type == PROTOBUF_C_TYPE_STRING) crypto_free_wiped(v->s);
    else if (type == PROTOBUF_C_TYPE_BYTES) crypto_free_wiped(v->bin.data);
    else if (type == PROTOBUF_C_TYPE_MESSAGE) protobuf_c_message_free_unpacked(v->m, &wiping);
}

static ProtobufCMessage *new_message(const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = malloc(desc->sizeof_message);

    if (m) protobuf_c_message_init(desc, m);
    return m;
}

/* Frees what one singular field owns. Defaults point at static storage in
 * the generated code and are left alone, as free_unpacked does. */
static void release(const ProtobufCFieldDescriptor *f, void *slot)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        char *s = *(char **)slot;
        if (s && s != f->default_value) crypto_free_wiped(s);
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
        const ProtobufCBinaryData *def = f->default_value;
        uint8_t *data = ((ProtobufCBinaryData *)slot)->data;
        if (data && (!def || data != def->data)) crypto_free_wiped(data);
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        ProtobufCMessage *m = *(ProtobufCMessage **)slot;
        if (m && m != f->default_value) protobuf_c_message_free_unpacked(m, &wiping);
    }
}

/* Stores v (taking ownership) into a singular field, freeing whatever the
 * field, or the oneof it belongs to, held before and marking it present. */
static void store(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, fieldvalue *v)
{
    char *base = (char *)msg;

    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
        const ProtobufCFieldDescriptor *cur =
            *which ? protobuf_c_message_descriptor_get_field(msg->descriptor, *which) : NULL;
        if (cur) release(cur, base + cur->offset);
        *which = f->id;
    } else {
        release(f, base + f->offset);
        /* Strings and messages show presence by their pointer; the rest
         * (proto2 and proto3 `optional`) by a has_ flag. */
        if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
            f->type != PROTOBUF_C_TYPE_MESSAGE)
            *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    }
    memcpy(base + f->offset, v, value_size(f->type));
}

/* Appends v (taking ownership on success) to a repeated field. */
static int append(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, fieldvalue *v)
{
    char *base = (char *)msg;
    size_t *n = (size_t *)(base + f->quantifier_offset);
    void **arr = (void **)(base + f->offset);
    size_t size = value_size(f->type);
    char *grown = realloc(*arr, (*n + 1) * size);

    if (!grown) return -1;
    *arr = grown;
    memcpy(grown + *n * size, v, size);
    (*n)++;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Scalars from text and from JSON
 *
 * Text is what query strings carry and what JSON strings carry for 64-bit
 * integers, enums, bytes and the non-finite floats, so both paths share it.
 * ------------------------------------------------------------------------- */

/* Range-checks an integer given as sign and magnitude, which holds both
 * INT64_MIN and UINT64_MAX, and converts it to the field's type. */
static int int_value(const ProtobufCFieldDescriptor *f, bool neg, uint64_t mag, fieldvalue *v,
                     const pathstep *at, char *err)
{
    if (mag == 0) neg = false;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        if (mag > (neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX)) return range_error(f, at, err);
        v->i32 = neg ? (int32_t)(-(int64_t)mag) : (int32_t)mag;
        if (f->type == PROTOBUF_C_TYPE_ENUM &&
            !protobuf_c_enum_descriptor_get_value(f->descriptor, v->i32))
            return fail(err, at, "%" PRId32 " is not a value of %s", v->i32, type_name(f));
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (neg || mag > UINT32_MAX) return range_error(f, at, err);
        v->u32 = (uint32_t)mag;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (neg) return range_error(f, at, err);
        v->u64 = mag;
        return 0;
    default: /* int64, sint64, sfixed64 */
        if (mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) return range_error(f, at, err);
        v->i64 = neg ? -(int64_t)(mag - 1) - 1 : (int64_t)mag;
        return 0;
    }
}

/* A decimal integer and nothing else: no sign but '-', no spaces, no
 * fraction or exponent, so "12abc", "" and "1.5" are all refused. */
static int int_from_text(const ProtobufCFieldDescriptor *f, const char *s, size_t n, fieldvalue *v,
                         const pathstep *at, char *err)
{
    bool neg = n > 0 && s[0] == '-';
    bool overflow = false;
    uint64_t mag = 0;
    size_t i = neg;

    if (i == n) return type_error(f, at, err);
    for (; i < n; i++) {
        unsigned digit = (unsigned char)s[i] - '0';
        if (digit > 9) return type_error(f, at, err);
        if (mag > (UINT64_MAX - digit) / 10) overflow = true;
        else mag = mag * 10 + digit;
    }
    if (overflow) return range_error(f, at, err);
    return int_value(f, neg, mag, v, at, err);
}

static int real_value(const ProtobufCFieldDescriptor *f, double d, fieldvalue *v, const pathstep *at,
                      char *err)
{
    if (f->type == PROTOBUF_C_TYPE_DOUBLE) {
        v->d = d;
        return 0;
    }
    if (isfinite(d) && fabs(d) > FLT_MAX) return range_error(f, at, err);
    v->f = (float)d;
    return 0;
}

/* JSON number syntax, checked before strtod so that strtod's extras
 * (spaces, hex, "inf") are not accepted by accident. */
static bool is_json_number(const char *s, size_t n)
{
    size_t i = 0, start;

    if (i < n && s[i] == '-') i++;
    for (start = i; i < n && s[i] >= '0' && s[i] <= '9'; i++) ;
    if (i == start) return false;
    if (i < n && s[i] == '.') {
        for (start = ++i; i < n && s[i] >= '0' && s[i] <= '9'; i++) ;
        if (i == start) return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        for (start = i; i < n && s[i] >= '0' && s[i] <= '9'; i++) ;
        if (i == start) return false;
    }
    return i == n;
}

static int real_from_text(const ProtobufCFieldDescriptor *f, const char *s, size_t n, fieldvalue *v,
                          const pathstep *at, char *err)
{
    char small[64], *buf = small;
    double d;

    /* The proto3 JSON spellings of the values JSON numbers cannot carry. */
    if (n == 3 && !memcmp(s, "NaN", 3)) return real_value(f, NAN, v, at, err);
    if (n == 8 && !memcmp(s, "Infinity", 8)) return real_value(f, INFINITY, v, at, err);
    if (n == 9 && !memcmp(s, "-Infinity", 9)) return real_value(f, -INFINITY, v, at, err);
    if (!is_json_number(s, n)) return type_error(f, at, err);
    if (n >= sizeof small && !(buf = malloc(n + 1))) return fail(err, at, "out of memory");
    memcpy(buf, s, n);
    buf[n] = '\0';
    d = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (isinf(d)) return range_error(f, at, err);
    return real_value(f, d, v, at, err);
}

static int bool_from_text(const ProtobufCFieldDescriptor *f, const char *s, size_t n, fieldvalue *v,
                          const pathstep *at, char *err)
{
    if (n == 4 && !memcmp(s, "true", 4)) v->b = 1;
    else if (n == 5 && !memcmp(s, "false", 5)) v->b = 0;
    else return type_error(f, at, err);
    return 0;
}

static char *copy_string(const char *s, size_t n)
{
    char *c = malloc(n + 1);

    if (c) {
        memcpy(c, s, n);
        c[n] = '\0';
    }
    return c;
}

/* Query values arrive percent-decoded, so unlike JSON strings nothing has
 * checked them yet; protobuf strings must be UTF-8 and, being C strings
 * here, cannot hold NUL. */
static int string_from_text(const pathstep *at, const char *s, size_t n, fieldvalue *v, char *err)
{
    size_t i, len;

    for (i = 0; i < n; i += len) {
        if (s[i] == '\0') return fail(err, at, "NUL characters are not allowed");
        if (!(len = utf8_next((const unsigned char *)s + i, n - i, NULL)))
            return fail(err, at, "invalid UTF-8");
    }
    if (!(v->s = copy_string(s, n))) return fail(err, at, "out of memory");
    return 0;
}

/* Standard or URL-safe base64, padded or not. crypto.h's decoder is
 * strict (bad characters, stray bits, wrong length all fail); it is given
 * the text without padding, once the padding has been checked here. */
static int bytes_from_text(const ProtobufCFieldDescriptor *f, const char *s, size_t n, fieldvalue *v,
                           const pathstep *at, char *err)
{
    crypto_base64_variant variant = CRYPTO_BASE64_NOPAD;
    size_t pad = 0, cap, len;
    unsigned char *data;

    while (n > 0 && s[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    if (pad && (n + pad) % 4 != 0) return type_error(f, at, err);
    v->bin.len = 0;
    v->bin.data = NULL;
    if (n == 0) return 0;
    if (memchr(s, '-', n) || memchr(s, '_', n)) variant = CRYPTO_BASE64URL_NOPAD;
    cap = n / 4 * 3 + 2;
    if (!(data = malloc(cap))) return fail(err, at, "out of memory");
    if (crypto_base64_decode(data, cap, s, n, NULL, &len, variant) != 0) {
        crypto_free_wiped(data);
        return type_error(f, at, err);
    }
    v->bin.data = data;
    v->bin.len = len;
    return 0;
}

static int enum_from_text(const ProtobufCFieldDescriptor *f, const char *s, size_t n, fieldvalue *v,
                          const pathstep *at, char *err)
{
    const ProtobufCEnumValue *ev = NULL;
    char name[128];

    if (n < sizeof name && !memchr(s, '\0', n)) {
        memcpy(name, s, n);
        name[n] = '\0';
        ev = protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, name);
    }
    if (ev) {
        v->i32 = ev->value;
        return 0;
    }
    if (n > 0 && (s[0] == '-' || (s[0] >= '0' && s[0] <= '9'))) return int_from_text(f, s, n, v, at, err);
    return fail(err, at, "not a value of %s", type_name(f));
}

/* A scalar from its text form; message fields have none. */
static int value_from_text(const ProtobufCFieldDescriptor *f, const char *s, size_t n, fieldvalue *v,
                           const pathstep *at, char *err)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL: return bool_from_text(f, s, n, v, at, err);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: return real_from_text(f, s, n, v, at, err);
    case PROTOBUF_C_TYPE_ENUM: return enum_from_text(f, s, n, v, at, err);
    case PROTOBUF_C_TYPE_STRING: return string_from_text(at, s, n, v, err);
    case PROTOBUF_C_TYPE_BYTES: return bytes_from_text(f, s, n, v, at, err);
    case PROTOBUF_C_TYPE_MESSAGE: return fail(err, at, "cannot be set from the query string");
    default: return int_from_text(f, s, n, v, at, err);
    }
}

static int int_from_json(const ProtobufCFieldDescriptor *f, const json_t *j, fieldvalue *v,
                         const pathstep *at, char *err)
{
    if (json_is_integer(j)) {
        json_int_t i = json_integer_value(j);
        return int_value(f, i < 0, i < 0 ? 0 - (uint64_t)i : (uint64_t)i, v, at, err);
    }
    if (json_is_real(j)) {
        /* 2.0 or 1e3 name integers; 1.5 does not. */
        double d = json_real_value(j);
        if (d != floor(d)) return type_error(f, at, err);
        if (fabs(d) >= 18446744073709551616.0) return range_error(f, at, err);
        return int_value(f, d < 0, (uint64_t)fabs(d), v, at, err);
    }
    if (json_is_string(j)) return int_from_text(f, json_string_value(j), json_string_length(j), v, at, err);
    return type_error(f, at, err);
}

/* A scalar from a JSON value. jansson has already refused invalid UTF-8
 * and NUL in strings. */
static int value_from_json(const ProtobufCFieldDescriptor *f, const json_t *j, fieldvalue *v,
                           const pathstep *at, char *err)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j)) return type_error(f, at, err);
        v->b = json_is_true(j);
        return 0;
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(j)) return type_error(f, at, err);
        if (!(v->s = copy_string(json_string_value(j), json_string_length(j))))
            return fail(err, at, "out of memory");
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (json_is_number(j)) return real_value(f, json_number_value(j), v, at, err);
        if (json_is_string(j)) return real_from_text(f, json_string_value(j), json_string_length(j), v, at, err);
        return type_error(f, at, err);
    case PROTOBUF_C_TYPE_ENUM:
        if (json_is_string(j)) return enum_from_text(f, json_string_value(j), json_string_length(j), v, at, err);
        if (json_is_number(j)) return int_from_json(f, j, v, at, err);
        return type_error(f, at, err);
    case PROTOBUF_C_TYPE_BYTES:
        if (!json_is_string(j)) return type_error(f, at, err);
        return bytes_from_text(f, json_string_value(j), json_string_length(j), v, at, err);
    case PROTOBUF_C_TYPE_MESSAGE:
        return type_error(f, at, err); /* objects are walked by the caller */
    default:
        return int_from_json(f, j, v, at, err);
    }
}

/* ---------------------------------------------------------------------------
 * JSON -> message
 * ------------------------------------------------------------------------- */

static int message_from_json(ProtobufCMessage *msg, const json_t *obj, const pathstep *up, char *err);

static int singular_from_json(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                              const json_t *j, const pathstep *at, char *err)
{
    fieldvalue v;

    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t which = *(const uint32_t *)((const char *)msg + f->quantifier_offset);
        if (which && which != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(msg->descriptor, which);
            return fail(err, at, "cannot be set together with %s (only one of them may be set)",
                        other ? other->name : "another field");
        }
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        if (!json_is_object(j)) return type_error(f, at, err);
        if (!(v.m = new_message(f->descriptor))) return fail(err, at, "out of memory");
        store(msg, f, &v);
        return message_from_json(v.m, j, at, err);
    }
    if (value_from_json(f, j, &v, at, err)) return -1;
    store(msg, f, &v);
    return 0;
}

static int repeated_from_json(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                              const json_t *j, const pathstep *at, char *err)
{
    char *base = (char *)msg;
    size_t *n = (size_t *)(base + f->quantifier_offset);
    size_t size = value_size(f->type), count, i;
    char *arr;

    if (!json_is_array(j)) return fail(err, at, "expected an array");
    if ((count = json_array_size(j)) == 0) return 0;
    if (!(arr = calloc(count, size))) return fail(err, at, "out of memory");
    *(void **)(base + f->offset) = arr;

    /* The count only covers finished elements, so an error part way
     * through leaves an array free_unpacked can free. */
    for (i = 0; i < count; i++) {
        const json_t *e = json_array_get(j, i);
        pathstep el = {at, NULL, i};
        fieldvalue v;

        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            if (!json_is_object(e)) return type_error(f, &el, err);
            if (!(v.m = new_message(f->descriptor))) return fail(err, &el, "out of memory");
            memcpy(arr + i * size, &v, size);
            (*n)++;
            if (message_from_json(v.m, e, &el, err)) return -1;
        } else {
            if (value_from_json(f, e, &v, &el, err)) return -1;
            memcpy(arr + i * size, &v, size);
            (*n)++;
        }
    }
    return 0;
}

/* Fields are looked up in descriptor order rather than keys walked in
 * document order, so the first error reported does not depend on how the
 * client ordered its keys. Unknown keys are never looked at. */
static int message_from_json(ProtobufCMessage *msg, const json_t *obj, const pathstep *up, char *err)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    unsigned i;

    for (i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        const json_t *j = json_object_get(obj, f->name);
        pathstep at = {up, f->name, 0};
        int rc;

        if (!j || json_is_null(j)) continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) rc = repeated_from_json(msg, f, j, &at, err);
        else rc = singular_from_json(msg, f, j, &at, err);
        if (rc) return -1;
    }
    return 0;
}

/* jansson stops at depth 2048; requests get a much lower limit. Checked on
 * the whole tree, not only the parts the schema reads, and stops as soon
 * as the limit is passed, so it never recurses more than the limit. */
static bool too_deep(const json_t *j, int depth)
{
    const char *key;
    json_t *child;
    size_t i;

    if (!json_is_object(j) && !json_is_array(j)) return false;
    if (depth > TRANSCODE_MAX_DEPTH) return true;
    if (json_is_object(j)) {
        json_object_foreach((json_t *)j, key, child)
            if (too_deep(child, depth + 1)) return true;
    } else {
        json_array_foreach(j, i, child)
            if (too_deep(child, depth + 1)) return true;
    }
    return false;
}

/* jansson's own words, except where they name its API rather than the
 * client's mistake. */
static int parse_error(const json_error_t *je, char *err)
{
    switch (json_error_code(je)) {
    case json_error_stack_overflow:
        return fail(err, NULL, "JSON nested deeper than %d levels", TRANSCODE_MAX_DEPTH);
    case json_error_numeric_overflow:
        return fail(err, NULL, "number too large at line %d column %d", je->line, je->column);
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return fail(err, NULL, "NUL character in a string at line %d column %d", je->line, je->column);
    case json_error_invalid_utf8:
        return fail(err, NULL, "invalid UTF-8 at line %d column %d", je->line, je->column);
    default: {
        /* jansson quotes the text where it stopped ("near '...'"): that may
         * be a password, and an import prints this to its stderr. */
        char what[sizeof je->text];
        snprintf(what, sizeof what, "%s", je->text);
        char *near = strstr(what, " near '");
        if (near)
            *near = '\0';
        return fail(err, NULL, "invalid JSON at line %d column %d: %s", je->line, je->column, what);
    }
    }
}

int transcode_from_json(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                        ProtobufCMessage **out, char *err)
{
    ProtobufCMessage *msg;
    json_error_t je;
    json_t *root;
    int rc;

    *out = NULL;
    if (len == 0) {
        if (!(*out = new_message(desc))) return fail(err, NULL, "out of memory");
        return 0;
    }
    /* JSON_DECODE_ANY so that a scalar body gets the same message as an
     * array body rather than a parser complaint. */
    if (!(root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je)))
        return parse_error(&je, err);
    if (!json_is_object(root)) {
        rc = fail(err, NULL, "expected a JSON object");
    } else if (too_deep(root, 1)) {
        rc = fail(err, NULL, "JSON nested deeper than %d levels", TRANSCODE_MAX_DEPTH);
    } else if (!(msg = new_message(desc))) {
        rc = fail(err, NULL, "out of memory");
    } else if ((rc = message_from_json(msg, root, NULL, err)) != 0) {
        protobuf_c_message_free_unpacked(msg, &wiping);
    } else {
        *out = msg;
    }
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Plans: what the fast paths need of a message type
 *
 * The JSON key of each field (`,"name":`, ready to copy) and how the field
 * is written depend only on the descriptor, so they are worked out once per
 * message type, on first use, and kept for the life of the process
 * (descriptors are static). Plans hang off a small chained hash table:
 * readers walk it without a lock, as a plan is published whole (release
 * store, under the lock that serializes writers) and never changed after.
 * ------------------------------------------------------------------------- */

enum {
    FIELD_PLAIN,    /* always written */
    FIELD_NULLABLE, /* has_ flag: null when unset */
    FIELD_ONEOF,    /* written only when it is the member set */
    FIELD_REPEATED, /* an array */
};

/* How write_message writes a field's value. */
enum {
    WRITE_SCALAR, /* FIELD_PLAIN integer or bool: into room reserved ahead */
    WRITE_STRING, /* FIELD_PLAIN string: reserves its own room and what follows */
    WRITE_OTHER,  /* the rest: reserves its own room only */
};

/* The longest text write_value writes without a check: an int64
 * ("-9223372036854775808") or a uint64 in quotes. Its callers reserve it. */
#define SCALAR_MAX 22

typedef struct {
    const ProtobufCFieldDescriptor *f;
    unsigned how;     /* FIELD_... */
    unsigned write;   /* WRITE_... */
    unsigned key_len; /* ,"name": (the name is key_len - 4 bytes at key + 2) */
    const char *key;  /* readable up to key_room(key_len): copied 16 bytes at a time */
    size_t rest;      /* key_room + SCALAR_MAX of this field and every one after */
} field_plan;

typedef struct message_plan {
    const ProtobufCMessageDescriptor *desc;
    const struct message_plan *next; /* in its bucket */
    field_plan fields[];             /* desc->n_fields of them; then the keys */
} message_plan;

#define PLAN_BUCKETS 256

static _Atomic(const message_plan *) plan_buckets[PLAN_BUCKETS];
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t key_room(size_t key_len)
{
    return (key_len + 15) & ~(size_t)15;
}

static const message_plan *plan_new(const ProtobufCMessageDescriptor *d, const message_plan *next)
{
    size_t keys = 0, i;
    message_plan *m;
    char *k;

    for (i = 0; i < d->n_fields; i++) keys += key_room(strlen(d->fields[i].name) + 4);
    if (!(m = calloc(1, sizeof *m + d->n_fields * sizeof m->fields[0] + keys))) return NULL;
    m->desc = d;
    m->next = next;
    k = (char *)&m->fields[d->n_fields];
    for (i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        field_plan *fp = &m->fields[i];
        size_t n = strlen(f->name);

        fp->f = f;
        /* Strings and messages show presence by their pointer; the other
         * optional fields (proto2 and proto3 `optional`) by a has_ flag. */
        if (f->label == PROTOBUF_C_LABEL_REPEATED) fp->how = FIELD_REPEATED;
        else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) fp->how = FIELD_ONEOF;
        else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
                 f->type != PROTOBUF_C_TYPE_MESSAGE)
            fp->how = FIELD_NULLABLE;
        else fp->how = FIELD_PLAIN;
        fp->write = WRITE_OTHER;
        if (fp->how == FIELD_PLAIN) {
            switch (f->type) {
            case PROTOBUF_C_TYPE_STRING: fp->write = WRITE_STRING; break;
            case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
            case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_INT64:
            case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_UINT64:
            case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_BOOL: fp->write = WRITE_SCALAR; break;
            default: break;
            }
        }
        /* Field names are identifiers (protoc checks): nothing to escape. */
        fp->key = k;
        fp->key_len = (unsigned)n + 4;
        k[0] = ',';
        k[1] = '"';
        memcpy(k + 2, f->name, n);
        k[n + 2] = '"';
        k[n + 3] = ':';
        k += key_room(n + 4);
    }
    for (i = d->n_fields; i-- > 0;)
        m->fields[i].rest = key_room(m->fields[i].key_len) + SCALAR_MAX +
                            (i + 1 < d->n_fields ? m->fields[i + 1].rest : 0);
    return m;
}

/* The plan of d, made on first use; NULL only when out of memory. */
static const message_plan *plan_of(const ProtobufCMessageDescriptor *d)
{
    _Atomic(const message_plan *) *bucket =
        &plan_buckets[(uint64_t)(uintptr_t)d * UINT64_C(0x9e3779b97f4a7c15) >> 56];
    const message_plan *m;

    for (m = atomic_load_explicit(bucket, memory_order_acquire); m; m = m->next)
        if (m->desc == d) return m;
    pthread_mutex_lock(&plan_lock);
    for (m = atomic_load_explicit(bucket, memory_order_relaxed); m; m = m->next)
        if (m->desc == d) break;
    if (!m && (m = plan_new(d, atomic_load_explicit(bucket, memory_order_relaxed))))
        atomic_store_explicit(bucket, m, memory_order_release);
    pthread_mutex_unlock(&plan_lock);
    return m;
}

/* What JSON strings carry as it is: 0x20 to 0x7F but '"' and '\\'. */
static const unsigned char plain_byte[256] = {[0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1,
                                              [0x5d ... 0x7f] = 1};

/* The bytes of the eight at s that are not plain, as their high bits: a
 * byte's comes up in one of the terms below exactly when it is below 0x20,
 * a quote, a backslash or above 0x7F (a subtraction can borrow from a byte
 * only past a lower byte that came up itself, so the first is exact). */
static inline uint64_t not_plain(const char *s)
{
    const uint64_t ones = UINT64_C(0x0101010101010101), highs = ones << 7;
    uint64_t w;

    memcpy(&w, s, 8);
    return ((w - ones * 0x20) | ((w ^ ones * '"') - ones) | ((w ^ ones * '\\') - ones) | w) & highs;
}

/* The length of the run of plain bytes at s (n bytes): a word at a time,
 * the last few bytes as the last word (which overlaps the one before); in
 * a word that is not all plain, its first such byte ends the run. */
static size_t plain_prefix(const char *s, size_t n)
{
    size_t i = 0;
    uint64_t bad = 0;

    while (i + 8 <= n && !(bad = not_plain(s + i))) i += 8;
    if (i + 8 > n && n >= 8) {
        if (!(bad = not_plain(s + n - 8))) return n;
        i = n - 8;   /* its bytes before the old i are plain: the first bad one is past it */
    }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (bad) return i + (size_t)(__builtin_ctzll(bad) >> 3);
#endif
    while (i < n && plain_byte[(unsigned char)s[i]]) i++;
    return i;
}

/* The flat fast path: see transcode.h. Whatever it does not take whole
 * goes to the full parser, so it needs no error messages of its own. */
static size_t skip_ws(const char *s, size_t i, size_t len)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

/* A plain string at s[i] (after its opening quote): the index of its
 * closing quote, or 0 for anything else (escapes, controls, non-ASCII). */
static size_t plain_string_end(const char *s, size_t i, size_t len)
{
    i += plain_prefix(s + i, len - i);
    return i < len && s[i] == '"' ? i : 0;
}

int transcode_from_json_flat(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                             ProtobufCAllocator *alloc, ProtobufCMessage **out)
{
    const ProtobufCFieldDescriptor *fs[8];
    size_t vs[8], vl[8], n = 0, i;
    uint64_t seen = 0;
    const message_plan *plan;

    *out = NULL;
    if (len == 0 || desc->n_fields > 64 || !(plan = plan_of(desc))) return 1;
    i = skip_ws(json, 0, len);
    if (i >= len || json[i++] != '{') return 1;
    i = skip_ws(json, i, len);
    if (i < len && json[i] == '}') {
        i++;
    } else {
        for (;;) {
            size_t k, ke, ve;
            const field_plan *fp = NULL;
            unsigned j;
            if (n == 8 || i >= len || json[i] != '"') return 1;
            k = i + 1;
            if (!(ke = plain_string_end(json, k, len))) return 1;
            for (j = 0; j < desc->n_fields; j++) {
                const field_plan *p = &plan->fields[j];
                if (p->key_len - 4 == ke - k && memcmp(p->key + 2, json + k, ke - k) == 0) {
                    fp = p;
                    break;
                }
            }
            if (!fp || fp->how != FIELD_PLAIN || fp->f->type != PROTOBUF_C_TYPE_STRING ||
                (seen & (1ull << j)))
                return 1;
            seen |= 1ull << j;
            i = skip_ws(json, ke + 1, len);
            if (i >= len || json[i++] != ':') return 1;
            i = skip_ws(json, i, len);
            if (i >= len || json[i] != '"') return 1;
            if (!(ve = plain_string_end(json, i + 1, len))) return 1;
            fs[n] = fp->f, vs[n] = i + 1, vl[n] = ve - i - 1, n++;
            i = skip_ws(json, ve + 1, len);
            if (i >= len) return 1;
            if (json[i] == '}') {
                i++;
                break;
            }
            if (json[i++] != ',') return 1;
            i = skip_ws(json, i, len);
        }
    }
    if (skip_ws(json, i, len) != len) return 1;

    ProtobufCMessage *msg = alloc->alloc(alloc->allocator_data, desc->sizeof_message);
    if (!msg) return 1;
    protobuf_c_message_init(desc, msg);
    for (i = 0; i < n; i++) {
        char *v = alloc->alloc(alloc->allocator_data, vl[i] + 1);
        if (!v) {
            protobuf_c_message_free_unpacked(msg, alloc);
            return 1;
        }
        memcpy(v, json + vs[i], vl[i]);
        v[vl[i]] = '\0';
        *(char **)((char *)msg + fs[i]->offset) = v;
    }
    *out = msg;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Query string -> field
 * ------------------------------------------------------------------------- */

static const ProtobufCFieldDescriptor *field_by_name(const ProtobufCMessageDescriptor *desc,
                                                     const char *name, size_t len)
{
    char buf[128];

    if (len >= sizeof buf || memchr(name, '\0', len)) return NULL;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return protobuf_c_message_descriptor_get_field_by_name(desc, buf);
}

int transcode_set_field(ProtobufCMessage *msg, const char *name, size_t name_len,
                        const char *value, size_t value_len, char *err)
{
    const ProtobufCFieldDescriptor *f = field_by_name(msg->descriptor, name, name_len);
    pathstep at;
    fieldvalue v;

    if (!f) return 0;
    at = (pathstep){NULL, f->name, 0};
    if (value_from_text(f, value, value_len, &v, &at, err)) return -1;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        store(msg, f, &v);
    } else if (append(msg, f, &v)) {
        value_free(f->type, &v);
        return fail(err, &at, "out of memory");
    }
    return 0;
}

typedef struct {
    ProtobufCMessage *msg;
    char *err;
} query_binding;

static int bind_one(void *arg, const char *name, size_t name_len, const char *value,
                    size_t value_len)
{
    query_binding *b = arg;
    return transcode_set_field(b->msg, name, name_len, value, value_len, b->err) != 0 ? -1 : 0;
}

int transcode_set_query(ProtobufCMessage *msg, char *query, size_t len, char *err)
{
    query_binding b = {msg, err};
    return query_foreach(query, len, bind_one, &b);
}

/* ---------------------------------------------------------------------------
 * Message -> JSON
 *
 * Written straight into one growing buffer, walking the plans: a tree of
 * json_t values (a malloc and a hash insert per field) cost more than the
 * rest of a Verify call. Keys are copied from the plan, integers and
 * strings written here; jansson only formats real numbers. The output is
 * byte for byte what jansson's json_dumpb gave for the same values (see
 * test_transcode's golden envelopes).
 * ------------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool bad; /* out of memory, or a value that cannot be written */
    char *fixed; /* the caller's buffer p starts in (not to be freed), or NULL */
} textbuf;

static bool tb_grow(textbuf *b, size_t n);

/* Inline: the writer reserves a few bytes per token, nearly always there. */
static inline bool tb_reserve(textbuf *b, size_t n)
{
    if (b->len + n <= b->cap && !b->bad) return true;
    return tb_grow(b, n);
}

static bool tb_grow(textbuf *b, size_t n)
{
    size_t cap;
    char *p;

    if (b->bad) return false;
    if (b->len + n <= b->cap) return true;
    for (cap = b->cap ? b->cap : 512; cap < b->len + n; cap *= 2)
        ;
    if (!(p = realloc(b->p == b->fixed ? NULL : b->p, cap))) {
        b->bad = true;
        return false;
    }
    if (b->p && b->p == b->fixed) memcpy(p, b->p, b->len);
    b->p = p;
    b->cap = cap;
    return true;
}

static inline void tb_put(textbuf *b, const char *s, size_t n)
{
    if (tb_reserve(b, n)) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

#define tb_lit(b, s) tb_put((b), (s), sizeof(s) - 1)

/* A field's key, in room the caller reserved (key_room). */
static inline void put_key(textbuf *b, const field_plan *fp)
{
    char *p = b->p + b->len;

    memcpy(p, fp->key, 16);
    for (size_t k = 16; k < fp->key_len; k += 16) memcpy(p + k, fp->key + k, 16);
    b->len += fp->key_len;
}

/* The number of decimal digits of v: log10 from the bit length (1233/4096
 * is just over log10 2), then one comparison to round it. */
static inline unsigned decimal_len(uint64_t v)
{
    static const uint64_t pow10[20] = {0, /* so that 0 has one digit */
        UINT64_C(10), UINT64_C(100), UINT64_C(1000), UINT64_C(10000), UINT64_C(100000),
        UINT64_C(1000000), UINT64_C(10000000), UINT64_C(100000000), UINT64_C(1000000000),
        UINT64_C(10000000000), UINT64_C(100000000000), UINT64_C(1000000000000),
        UINT64_C(10000000000000), UINT64_C(100000000000000), UINT64_C(1000000000000000),
        UINT64_C(10000000000000000), UINT64_C(100000000000000000),
        UINT64_C(1000000000000000000), UINT64_C(10000000000000000000)};
    unsigned t = (unsigned)(64 - __builtin_clzll(v | 1)) * 1233 >> 12;

    return t + (v >= pow10[t]);
}

/* v in decimal at p (room for 20), two digits per division; its length. */
static inline size_t put_uint(char *p, uint64_t v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                                "34353637383940414243444546474849505152535455565758596061626364656667"
                                "6869707172737475767778798081828384858687888990919293949596979899";
    size_t n = decimal_len(v), i = n;

    for (; v >= 100; v /= 100) {
        i -= 2;
        memcpy(p + i, pairs + v % 100 * 2, 2);
    }
    if (v >= 10) memcpy(p, pairs + v * 2, 2);
    else p[0] = (char)('0' + v);
    return n;
}

/* Integers, in room the caller reserved (SCALAR_MAX). */
static inline void tb_uint(textbuf *b, uint64_t v)
{
    b->len += put_uint(b->p + b->len, v);
}

static inline void tb_int(textbuf *b, int64_t v)
{
    if (v < 0) b->p[b->len++] = '-';
    b->len += put_uint(b->p + b->len, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
}

/* The text of a jansson value (which it takes), as json_dumpb writes it. */
static void tb_json(textbuf *b, json_t *j)
{
    const size_t flags = JSON_ENCODE_ANY | JSON_COMPACT;
    size_t n;

    if (!j) {
        b->bad = true;
        return;
    }
    n = json_dumpb(j, NULL, 0, flags);
    if (n && tb_reserve(b, n) && json_dumpb(j, b->p + b->len, n, flags) == n)
        b->len += n;
    else
        b->bad = true;
    json_decref(j);
}

/* JSON numbers cannot carry NaN or the infinities; proto3 JSON spells them
 * as strings. */
static void tb_real(textbuf *b, double d)
{
    if (isnan(d)) tb_lit(b, "\"NaN\"");
    else if (isinf(d)) tb_put(b, d > 0 ? "\"Infinity\"" : "\"-Infinity\"", d > 0 ? 10 : 11);
    else tb_json(b, json_real(d));
}

/* The rest of a string that is not all plain, from s[i]: escapes as
 * jansson writes them, and U+FFFD for each byte that does not begin a
 * well-formed UTF-8 sequence. The text may come from a binary protobuf or
 * from code echoing client input, and one bad byte must not cost the
 * client the whole reply. */
static char *put_escaped(char *p, const char *s, size_t i, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = 1, run;

        if (c >= 0x80) {
            if ((len = utf8_next((const unsigned char *)s + i, n - i, NULL))) {
                memcpy(p, s + i, len);
                p += len;
            } else {
                memcpy(p, "\xef\xbf\xbd", 3);
                p += 3;
                len = 1;
            }
        } else {
            *p++ = '\\';
            switch (c) {
            case '"': *p++ = '"'; break;
            case '\\': *p++ = '\\'; break;
            case '\b': *p++ = 'b'; break;
            case '\f': *p++ = 'f'; break;
            case '\n': *p++ = 'n'; break;
            case '\r': *p++ = 'r'; break;
            case '\t': *p++ = 't'; break;
            default:
                memcpy(p, "u00", 3);
                p[3] = hex[c >> 4];
                p[4] = hex[c & 15];
                p += 5;
            }
        }
        i += len;
        run = plain_prefix(s + i, n - i);
        memcpy(p, s + i, run);
        p += run;
        i += run;
    }
    return p;
}

/* A string, reserving its room and `after` bytes more. */
static void tb_string_then(textbuf *b, const char *s, size_t n, size_t after)
{
    size_t plain = plain_prefix(s, n);
    char *p;

    /* Nothing to escape (nearly every string), or at most 6 bytes each. */
    if (!tb_reserve(b, (plain == n ? n : plain + 6 * (n - plain)) + 2 + after)) return;
    p = b->p + b->len;
    *p++ = '"';
    memcpy(p, s, plain);
    p = put_escaped(p + plain, s, plain, n);
    *p++ = '"';
    b->len = (size_t)(p - b->p);
}

static void tb_string(textbuf *b, const char *s, size_t n)
{
    tb_string_then(b, s, n, 0);
}

static void tb_bytes(textbuf *b, const ProtobufCBinaryData *bin)
{
    size_t cap = crypto_base64_size(bin->len, CRYPTO_BASE64);

    if (!tb_reserve(b, cap + 2)) return;
    b->p[b->len++] = '"';
    crypto_base64_encode(b->p + b->len, cap, bin->data, bin->len, CRYPTO_BASE64);
    b->len += cap - 1;
    b->p[b->len++] = '"';
}

static void write_message(textbuf *b, const ProtobufCMessage *msg);

/* An integer or a bool, straight into the SCALAR_MAX bytes the caller
 * reserved; false for the other types. Inlined into write_message's loop
 * (most reply fields are these: a call apiece was ~15 instructions). */
static inline __attribute__((always_inline)) bool write_scalar(textbuf *b, ProtobufCType type,
                                                               const void *slot)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: tb_int(b, *(const int32_t *)slot); return true;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: tb_uint(b, *(const uint32_t *)slot); return true;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: tb_int(b, *(const int64_t *)slot); return true;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t u = *(const uint64_t *)slot;
        if (u <= INT64_MAX) {
            tb_uint(b, u);
        } else { /* beyond json_int_t: a decimal string */
            b->p[b->len++] = '"';
            tb_uint(b, u);
            b->p[b->len++] = '"';
        }
        return true;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (*(const protobuf_c_boolean *)slot) {
            memcpy(b->p + b->len, "true", 4);
            b->len += 4;
        } else {
            memcpy(b->p + b->len, "false", 5);
            b->len += 5;
        }
        return true;
    default: return false;
    }
}

/* One value: a scalar as write_scalar writes it; the rest reserve their
 * own room. */
static void write_value(textbuf *b, const ProtobufCFieldDescriptor *f, const void *slot)
{
    if (write_scalar(b, f->type, slot)) return;
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT: tb_real(b, *(const float *)slot); return;
    case PROTOBUF_C_TYPE_DOUBLE: tb_real(b, *(const double *)slot); return;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t e = *(const int32_t *)slot;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, e);
        /* A number the schema does not know (from a newer peer) stays a number. */
        if (ev) tb_string(b, ev->name, strlen(ev->name));
        else tb_int(b, e);
        return;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)slot;
        if (s) tb_string(b, s, strlen(s));
        else tb_lit(b, "null");
        return;
    }
    case PROTOBUF_C_TYPE_BYTES: tb_bytes(b, slot); return;
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)slot;
        if (m) write_message(b, m);
        else tb_lit(b, "null");
        return;
    }
    default: break;
    }
    b->bad = true;
}

static bool oneof_unset(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    return *(const uint32_t *)((const char *)msg + f->quantifier_offset) != f->id;
}

/* One field's JSON value. Unset fields with presence (a proto2 or proto3
 * `optional` scalar, an absent submessage) are null: the name is still
 * there, and null reads back as "leave at default". */
static void write_field(textbuf *b, const ProtobufCMessage *msg, const field_plan *fp)
{
    const ProtobufCFieldDescriptor *f = fp->f;
    const char *base = (const char *)msg;

    if (fp->how == FIELD_REPEATED) {
        size_t n = *(const size_t *)(base + f->quantifier_offset), i;
        const char *arr = *(char *const *)(base + f->offset);
        size_t size = value_size(f->type);

        tb_lit(b, "[");
        for (i = 0; i < n && tb_reserve(b, 1 + SCALAR_MAX); i++) {
            if (i) b->p[b->len++] = ',';
            write_value(b, f, arr + i * size);
        }
        tb_lit(b, "]");
        return;
    }
    if (fp->how == FIELD_NULLABLE && !*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
        tb_lit(b, "null");
        return;
    }
    if (tb_reserve(b, SCALAR_MAX)) write_value(b, f, base + f->offset);
}

/* Every field in descriptor (field number) order, except the oneof members
 * that are not the one set.
 *
 * Room is reserved for the key and a scalar of every field left at once
 * (fp->rest), not per field: a string reserves its own room and the rest
 * too; after any other value (which reserves only its own), the rest is
 * reserved again. A reply of integers and strings so takes one check per
 * string, plus one. */
static void write_message(textbuf *b, const ProtobufCMessage *msg)
{
    const message_plan *plan = plan_of(msg->descriptor);
    size_t start = b->len, n = msg->descriptor->n_fields;
    bool reserved = false;
    unsigned i;

    if (!plan) {
        b->bad = true;
        return;
    }
    /* Each key comes with its comma; the first comma becomes the '{'. */
    for (i = 0; i < n; i++) {
        const field_plan *fp = &plan->fields[i];
        const char *slot = (const char *)msg + fp->f->offset;

        if (fp->how == FIELD_ONEOF && oneof_unset(msg, fp->f)) continue;
        if (!reserved && !tb_reserve(b, fp->rest)) break;
        put_key(b, fp);
        reserved = true;
        if (fp->write == WRITE_SCALAR) {
            write_scalar(b, fp->f->type, slot);
        } else if (fp->write == WRITE_STRING) {
            const char *s = *(char *const *)slot;
            size_t after = i + 1 < n ? fp[1].rest : 0;
            if (s) tb_string_then(b, s, strlen(s), after);
            else memcpy(b->p + b->len, "null", 4), b->len += 4; /* in the SCALAR_MAX */
            if (b->bad) break;
        } else {
            if (fp->how == FIELD_PLAIN) write_value(b, fp->f, slot);
            else write_field(b, msg, fp);
            reserved = false;
        }
    }
    if (b->len == start) {
        tb_lit(b, "{}");
    } else if (!b->bad) {
        b->p[start] = '{';
        tb_lit(b, "}");
    }
}

int transcode_envelope(int code, const char *message, const ProtobufCMessage *data,
                       const char *data_field, char **out, size_t *out_len)
{
    return transcode_envelope_buf(code, message, data, data_field, NULL, 0, out, out_len);
}

int transcode_envelope_buf(int code, const char *message, const ProtobufCMessage *data,
                           const char *data_field, char *buf, size_t cap, char **out,
                           size_t *out_len)
{
    textbuf b = {buf, 0, buf ? cap : 0, false, buf};
    const field_plan *fp = NULL;

    *out = NULL;
    *out_len = 0;
    if (data && data_field) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(data->descriptor, data_field);
        const message_plan *plan = f ? plan_of(data->descriptor) : NULL;
        if (!plan) return -1;
        fp = &plan->fields[f - data->descriptor->fields];
    }
    tb_lit(&b, "{\"code\":");
    if (tb_reserve(&b, SCALAR_MAX)) tb_int(&b, code);
    if (message) {
        tb_lit(&b, ",\"message\":");
        tb_string(&b, message, strlen(message));
        tb_lit(&b, ",\"data\":");
    } else {
        tb_lit(&b, ",\"message\":null,\"data\":");
    }
    if (!data || (fp && fp->how == FIELD_ONEOF && oneof_unset(data, fp->f))) tb_lit(&b, "null");
    else if (fp) write_field(&b, data, fp);
    else write_message(&b, data);
    tb_lit(&b, "}");
    if (!tb_reserve(&b, 1)) {
        if (b.p != b.fixed) free(b.p);
        return -1;
    }
    b.p[b.len] = '\0'; /* not counted in out_len, but handy for logging */
    *out = b.p;
    *out_len = b.len;
    return 0;
}
