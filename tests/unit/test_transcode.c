/* test_transcode.c - the JSON <-> protobuf-c transcoder against a test-only
 * schema (transcode_test.proto) that has every field type, so the mapping
 * is pinned down type by type, error message by error message. Every
 * message built is freed with protobuf_c_message_free_unpacked, so running
 * under ASan also checks that the transcoder allocates the way
 * protobuf-c expects. */

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "transcode.h"
#include "utf8.h"
#include "tokend/v1/tokend.pb-c.h"
#include "transcode_test.pb-c.h"

#define ALL (&tokend__test__all__descriptor)
#define PROFILE (&tokend__test__profile__descriptor)
#define NEST (&tokend__test__nest__descriptor)

typedef Tokend__Test__All All;

/* ---- helpers ------------------------------------------------------------ */

static ProtobufCMessage *parse(const ProtobufCMessageDescriptor *desc, const char *json)
{
    ProtobufCMessage *m = NULL;
    char err[TRANSCODE_ERRLEN] = "";

    if (transcode_from_json(desc, json, strlen(json), &m, err) != 0)
        fail_msg("unexpected error for %s: %s", json, err);
    assert_non_null(m);
    assert_ptr_equal(m->descriptor, desc);
    return m;
}

static void parse_fails_len(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                            const char *want)
{
    ProtobufCMessage *m = (ProtobufCMessage *)&m;
    char err[TRANSCODE_ERRLEN];

    memset(err, 'x', sizeof err);
    assert_int_equal(transcode_from_json(desc, json, len, &m, err), -1);
    assert_null(m);
    assert_string_equal(err, want);
}

#define parse_fails(json, want) parse_fails_len(ALL, json, strlen(json), want)

/* The "data" part of the envelope of m (or of one field of it). */
static char *data_of(const ProtobufCMessage *m, const char *field)
{
    static const char head[] = "{\"code\":0,\"message\":null,\"data\":";
    char *out = NULL, *data;
    size_t len = 0, n;

    assert_int_equal(transcode_envelope(0, NULL, m, field, &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    assert_true(len > sizeof head);
    assert_memory_equal(out, head, sizeof head - 1);
    assert_int_equal(out[len - 1], '}');
    n = len - (sizeof head - 1) - 1;
    data = malloc(n + 1);
    memcpy(data, out + sizeof head - 1, n);
    data[n] = '\0';
    free(out);
    return data;
}

static void assert_data(const ProtobufCMessage *m, const char *field, const char *want)
{
    char *got = data_of(m, field);

    assert_string_equal(got, want);
    free(got);
}

/* Parses json, checks the JSON written back, then parses that and checks
 * it comes back the same: what we write, we read. */
static void roundtrip(const ProtobufCMessageDescriptor *desc, const char *json, const char *want)
{
    ProtobufCMessage *m = parse(desc, json), *again;
    char *first = data_of(m, NULL), *second;

    assert_string_equal(first, want);
    again = parse(desc, first);
    second = data_of(again, NULL);
    assert_string_equal(second, first);
    free(first);
    free(second);
    protobuf_c_message_free_unpacked(m, NULL);
    protobuf_c_message_free_unpacked(again, NULL);
}

/* The data of All with every field at its default but `name`, which is
 * `value` instead (name NULL: all defaults), then `tail` (a oneof member,
 * which comes after the regular fields, or ""). */
static const char *const all_defaults[] = {
    "\"i32\":0", "\"s32\":0", "\"sf32\":0", "\"i64\":0", "\"u64\":0", "\"s64\":0",
    "\"f64\":0", "\"sf64\":0", "\"u32\":0", "\"f32\":0", "\"fl\":0.0", "\"db\":0.0",
    "\"b\":false", "\"str\":\"\"", "\"by\":\"\"", "\"color\":\"COLOR_UNSPECIFIED\"",
    "\"profile\":null", "\"ri32\":[]", "\"rstr\":[]", "\"rprof\":[]", "\"ri64\":[]",
    "\"rby\":[]", "\"rcolor\":[]", "\"rdb\":[]", "\"rb\":[]",
};

static const char *all_json(const char *name, const char *value, const char *tail)
{
    static char buf[4096];
    size_t i, nlen = name ? strlen(name) : 0;

    strcpy(buf, "{");
    for (i = 0; i < sizeof all_defaults / sizeof *all_defaults; i++) {
        const char *d = all_defaults[i];
        if (i) strcat(buf, ",");
        if (name && !strncmp(d + 1, name, nlen) && d[nlen + 1] == '"') {
            strcat(buf, "\"");
            strcat(buf, name);
            strcat(buf, "\":");
            strcat(buf, value);
        } else {
            strcat(buf, d);
        }
    }
    strcat(buf, tail);
    strcat(buf, "}");
    assert_true(strlen(buf) < sizeof buf / 2);
    return buf;
}

#define all_with(name, value) all_json(name, value, "")
#define ALL_DEFAULTS all_json(NULL, NULL, "")

/* {"<name>":<in>} parses, and reads back as <out> in the full message. */
static void field_roundtrip(const char *name, const char *in, const char *out)
{
    char json[512];

    snprintf(json, sizeof json, "{\"%s\":%s}", name, in);
    roundtrip(ALL, json, all_with(name, out));
}

static void field_fails(const char *name, const char *in, const char *want)
{
    char json[512];

    snprintf(json, sizeof json, "{\"%s\":%s}", name, in);
    parse_fails(json, want);
}

/* ---- a proto3 `optional` message ----------------------------------------
 * protoc-c 1.4.1 refuses proto3 `optional`; later protoc-c versions emit
 * it exactly like proto2 `optional` (LABEL_OPTIONAL, a has_ flag for
 * scalars and bytes, pointer presence for strings and messages). This is
 * that output written by hand, so the transcoder is ready for it. */

typedef struct {
    ProtobufCMessage base;
    protobuf_c_boolean has_count;
    int32_t count;
    char *label;
    protobuf_c_boolean has_blob;
    ProtobufCBinaryData blob;
    Tokend__Test__Profile *sub;
} Opt;

static const ProtobufCMessageDescriptor opt_descriptor;

static const ProtobufCFieldDescriptor opt_fields[] = {
    {"count", 1, PROTOBUF_C_LABEL_OPTIONAL, PROTOBUF_C_TYPE_INT32, offsetof(Opt, has_count),
     offsetof(Opt, count), NULL, NULL, 0, 0, NULL, NULL},
    {"label", 2, PROTOBUF_C_LABEL_OPTIONAL, PROTOBUF_C_TYPE_STRING, 0, offsetof(Opt, label), NULL,
     NULL, 0, 0, NULL, NULL},
    {"blob", 3, PROTOBUF_C_LABEL_OPTIONAL, PROTOBUF_C_TYPE_BYTES, offsetof(Opt, has_blob),
     offsetof(Opt, blob), NULL, NULL, 0, 0, NULL, NULL},
    {"sub", 4, PROTOBUF_C_LABEL_OPTIONAL, PROTOBUF_C_TYPE_MESSAGE, 0, offsetof(Opt, sub),
     &tokend__test__profile__descriptor, NULL, 0, 0, NULL, NULL},
};
static const unsigned opt_by_name[] = {2, 0, 1, 3}; /* blob count label sub */
static const ProtobufCIntRange opt_ranges[] = {{1, 0}, {0, 4}};

static void opt_init(Opt *m)
{
    static const Opt init = {PROTOBUF_C_MESSAGE_INIT(&opt_descriptor), 0, 0, NULL, 0, {0, NULL}, NULL};
    *m = init;
}

static const ProtobufCMessageDescriptor opt_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "tokend.test.Opt", "Opt", "Tokend__Test__Opt", "tokend.test",
    sizeof(Opt), 4, opt_fields, opt_by_name, 1, opt_ranges, (ProtobufCMessageInit)opt_init,
    NULL, NULL, NULL};

/* ---- whole messages ----------------------------------------------------- */

static void test_empty_body_is_default(void **state)
{
    ProtobufCMessage *m = NULL;
    char err[TRANSCODE_ERRLEN];

    assert_int_equal(transcode_from_json(ALL, "", 0, &m, err), 0);
    assert_non_null(m);
    assert_data(m, NULL, ALL_DEFAULTS);
    protobuf_c_message_free_unpacked(m, NULL);

    /* {} is the same thing spelled out. */
    roundtrip(ALL, "{}", ALL_DEFAULTS);
    roundtrip(PROFILE, "{}", "{\"age\":0,\"nick\":\"\",\"child\":null}");
}

static void test_full_roundtrip(void **state)
{
    const char *in =
        "{\"i32\":-1,\"s32\":-2,\"sf32\":-3,\"i64\":\"-4\",\"u64\":5,\"s64\":-6,\"f64\":\"7\","
        "\"sf64\":-8,\"u32\":9,\"f32\":10,\"fl\":1.5,\"db\":-2.25,\"b\":true,\"str\":\"h\\u00e9\\\"\","
        "\"by\":\"AAEC\",\"color\":\"BLUE\",\"profile\":{\"age\":30,\"nick\":\"n\",\"child\":{\"age\":3}},"
        "\"ri32\":[1,2,3],\"rstr\":[\"a\",\"\"],\"rprof\":[{},{\"nick\":\"x\"}],\"ri64\":[\"-9\",9],"
        "\"rby\":[\"/w==\",\"\"],\"rcolor\":[\"RED\",2,\"INFRARED\"],\"rdb\":[0.5,2],\"rb\":[false,true],"
        "\"o_int\":\"42\",\"unknown\":{\"x\":[1,2,{\"y\":null}]}}";
    const char *out =
        "{\"i32\":-1,\"s32\":-2,\"sf32\":-3,\"i64\":-4,\"u64\":5,\"s64\":-6,\"f64\":7,\"sf64\":-8,"
        "\"u32\":9,\"f32\":10,\"fl\":1.5,\"db\":-2.25,\"b\":true,\"str\":\"h\xc3\xa9\\\"\",\"by\":\"AAEC\","
        "\"color\":\"BLUE\",\"profile\":{\"age\":30,\"nick\":\"n\",\"child\":{\"age\":3,\"nick\":\"\","
        "\"child\":null}},\"ri32\":[1,2,3],\"rstr\":[\"a\",\"\"],\"rprof\":[{\"age\":0,\"nick\":\"\","
        "\"child\":null},{\"age\":0,\"nick\":\"x\",\"child\":null}],\"ri64\":[-9,9],\"rby\":[\"/w==\",\"\"],"
        "\"rcolor\":[\"RED\",\"GREEN\",\"INFRARED\"],\"rdb\":[0.5,2.0],\"rb\":[false,true],\"o_int\":42}";
    ProtobufCMessage *m = parse(ALL, in);
    All *a = (All *)m;

    /* The C struct holds what the JSON said. */
    assert_int_equal(a->i64, -4);
    assert_int_equal(a->f64, 7);
    assert_string_equal(a->str, "h\xc3\xa9\"");
    assert_int_equal(a->by.len, 3);
    assert_int_equal(a->by.data[2], 2);
    assert_int_equal(a->color, TOKEND__TEST__COLOR__BLUE);
    assert_int_equal(a->profile->child->age, 3);
    assert_int_equal(a->n_rprof, 2);
    assert_string_equal(a->rprof[1]->nick, "x");
    assert_int_equal(a->n_rcolor, 3);
    assert_int_equal(a->rcolor[2], TOKEND__TEST__COLOR__INFRARED);
    assert_int_equal(a->choice_case, TOKEND__TEST__ALL__CHOICE_O_INT);
    assert_int_equal(a->o_int, 42);
    protobuf_c_message_free_unpacked(m, NULL);

    roundtrip(ALL, in, out);
}

/* Output follows field numbers, not declaration or input order. */
static void test_output_in_field_number_order(void **state)
{
    roundtrip(&tokend__test__ordered__descriptor, "{\"zulu\":\"z\",\"mike\":\"m\",\"alpha\":\"a\"}",
              "{\"alpha\":\"a\",\"mike\":\"m\",\"zulu\":\"z\"}");
}

static void test_null_and_unknown_keys(void **state)
{
    roundtrip(ALL,
              "{\"i32\":null,\"str\":null,\"profile\":null,\"ri32\":null,\"o_str\":null,"
              "\"I32\":5,\"nope\":[1,{\"a\":\"\\u00e9\"}],\"u64\":3}",
              all_with("u64", "3"));
}

/* ---- integers ------------------------------------------------------------ */

static void test_int32_types(void **state)
{
    static const char *const names[] = {"i32", "s32", "sf32"};
    char want[64];
    size_t i;

    for (i = 0; i < 3; i++) {
        const char *n = names[i];
        field_roundtrip(n, "2147483647", "2147483647");
        field_roundtrip(n, "-2147483648", "-2147483648");
        field_roundtrip(n, "\"-17\"", "-17");
        field_roundtrip(n, "2.0", "2");
        field_roundtrip(n, "-1e3", "-1000");
        field_roundtrip(n, "-0", "0");
        snprintf(want, sizeof want, "%s: number out of range for %s", n,
                 i == 0 ? "int32" : i == 1 ? "sint32" : "sfixed32");
        field_fails(n, "2147483648", want);
        field_fails(n, "-2147483649", want);
        field_fails(n, "\"9999999999\"", want);
        field_fails(n, "1e10", want);
        snprintf(want, sizeof want, "%s: expected an integer", n);
        field_fails(n, "1.5", want);
        field_fails(n, "true", want);
        field_fails(n, "[]", want);
        field_fails(n, "{}", want);
    }
}

static void test_uint32_types(void **state)
{
    field_roundtrip("u32", "4294967295", "4294967295");
    field_roundtrip("f32", "\"4294967295\"", "4294967295");
    field_roundtrip("u32", "0", "0");
    field_fails("u32", "4294967296", "u32: number out of range for uint32");
    field_fails("u32", "-1", "u32: number out of range for uint32");
    field_fails("f32", "\"-1\"", "f32: number out of range for fixed32");
    field_fails("f32", "\"1x\"", "f32: expected an integer");
}

static void test_int64_bounds(void **state)
{
    static const char *const names[] = {"i64", "s64", "sf64"};
    char want[64];
    size_t i;

    for (i = 0; i < 3; i++) {
        const char *n = names[i];
        field_roundtrip(n, "9223372036854775807", "9223372036854775807");
        field_roundtrip(n, "-9223372036854775808", "-9223372036854775808");
        field_roundtrip(n, "\"9223372036854775807\"", "9223372036854775807");
        field_roundtrip(n, "\"-9223372036854775808\"", "-9223372036854775808");
        field_roundtrip(n, "\"007\"", "7");
        snprintf(want, sizeof want, "%s: number out of range for %s", n,
                 i == 0 ? "int64" : i == 1 ? "sint64" : "sfixed64");
        field_fails(n, "\"9223372036854775808\"", want);
        field_fails(n, "\"-9223372036854775809\"", want);
        field_fails(n, "\"99999999999999999999999\"", want);
        field_fails(n, "1e19", want);
    }
    /* Past int64 as a JSON number, jansson refuses the whole body. */
    parse_fails("{\"i64\":9223372036854775808}", "body: number too large at line 1 column 26");
    parse_fails("{\"i64\":-9223372036854775809}", "body: number too large at line 1 column 27");

    {
        All *a = (All *)parse(ALL, "{\"i64\":-9223372036854775808,\"sf64\":\"9223372036854775807\"}");
        assert_true(a->i64 == INT64_MIN);
        assert_true(a->sf64 == INT64_MAX);
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
}

static void test_uint64_bounds(void **state)
{
    static const char *const names[] = {"u64", "f64"};
    char want[64];
    size_t i;

    for (i = 0; i < 2; i++) {
        const char *n = names[i];
        /* Above INT64_MAX a JSON number cannot go (jansson), so it is a
         * string both ways. */
        field_roundtrip(n, "\"18446744073709551615\"", "\"18446744073709551615\"");
        field_roundtrip(n, "\"9223372036854775808\"", "\"9223372036854775808\"");
        field_roundtrip(n, "9223372036854775807", "9223372036854775807");
        field_roundtrip(n, "\"-0\"", "0");
        snprintf(want, sizeof want, "%s: number out of range for %s", n, i == 0 ? "uint64" : "fixed64");
        field_fails(n, "\"18446744073709551616\"", want);
        field_fails(n, "-1", want);
        field_fails(n, "\"-1\"", want);
        field_fails(n, "1.8446744073709552e19", want);
    }
    {
        All *a = (All *)parse(ALL, "{\"u64\":\"18446744073709551615\"}");
        assert_true(a->u64 == UINT64_MAX);
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
}

/* Decimal strings only: no junk, no spaces, no fractions, no hex. */
static void test_integer_strings_are_strict(void **state)
{
    static const char *const bad[] = {"\"12abc\"", "\"\"", "\"-\"", "\" 12\"", "\"12 \"", "\"+12\"",
                                      "\"1.5\"", "\"1e3\"", "\"0x10\"", "\"--1\"", "1.5", "-0.5"};
    size_t i;

    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        field_fails("i64", bad[i], "i64: expected an integer");
        field_fails("u64", bad[i], "u64: expected an integer");
        field_fails("i32", bad[i], "i32: expected an integer");
    }
}

/* ---- floats, bools, strings, bytes, enums ---------------------------------- */

static void test_float_and_double(void **state)
{
    field_roundtrip("fl", "1.5", "1.5");
    field_roundtrip("fl", "-3", "-3.0");
    field_roundtrip("fl", "\"0.25\"", "0.25");
    field_roundtrip("fl", "3.4028234663852886e38", "3.4028234663852886e38");
    field_roundtrip("db", "-1.25e-1", "-0.125");
    /* jansson writes 17 significant digits: exact, if not the shortest. */
    field_roundtrip("db", "0.1", "0.10000000000000001");
    field_roundtrip("db", "12345678901234", "12345678901234.0");
    field_roundtrip("db", "1e308", "1e308");
    field_roundtrip("db", "\"NaN\"", "\"NaN\"");
    field_roundtrip("db", "\"Infinity\"", "\"Infinity\"");
    field_roundtrip("fl", "\"-Infinity\"", "\"-Infinity\"");
    field_fails("fl", "1e39", "fl: number out of range for float");
    field_fails("fl", "\"-1e39\"", "fl: number out of range for float");
    field_fails("db", "\"1e400\"", "db: number out of range for double");
    field_fails("db", "\"abc\"", "db: expected a number");
    field_fails("db", "\"1.\"", "db: expected a number");
    field_fails("db", "\" 1\"", "db: expected a number");
    field_fails("db", "\"inf\"", "db: expected a number");
    field_fails("db", "true", "db: expected a number");
    field_fails("fl", "[1]", "fl: expected a number");
    {
        All *a = (All *)parse(ALL, "{\"fl\":0.1,\"db\":0.1}");
        assert_true(a->fl == 0.1f);
        assert_true(a->db == 0.1);
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
}

static void test_bool(void **state)
{
    field_roundtrip("b", "true", "true");
    field_roundtrip("b", "false", "false");
    field_fails("b", "\"true\"", "b: expected true or false");
    field_fails("b", "1", "b: expected true or false");
    field_fails("b", "0", "b: expected true or false");
}

static void test_string(void **state)
{
    field_roundtrip("str", "\"\"", "\"\"");
    field_roundtrip("str", "\"caf\\u00e9 \\u2603 \\ud83d\\ude00\"", "\"caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80\"");
    field_roundtrip("str", "\"tab\\there\\nline \\\\ \\\" \\/\"", "\"tab\\there\\nline \\\\ \\\" /\"");
    field_fails("str", "5", "str: expected a string");
    field_fails("str", "true", "str: expected a string");
    field_fails("str", "{}", "str: expected a string");
    field_fails("str", "[\"a\"]", "str: expected a string");
}

static void test_invalid_utf8_and_nul(void **state)
{
    static const char bad_utf8[] = "{\"str\":\"ab\xff\"}";
    static const char overlong[] = "{\"str\":\"\xc0\xaf\"}";
    static const char surrogate[] = "{\"str\":\"\xed\xa0\x80\"}";
    static const char raw_nul[] = "{\"str\":\"a\0b\"}";

    parse_fails_len(ALL, bad_utf8, sizeof bad_utf8 - 1, "body: invalid UTF-8 at line 1 column 10");
    parse_fails_len(ALL, overlong, sizeof overlong - 1, "body: invalid UTF-8 at line 1 column 8");
    parse_fails_len(ALL, surrogate, sizeof surrogate - 1, "body: invalid UTF-8 at line 1 column 8");
    /* Even in a key the schema does not know. */
    parse_fails_len(ALL, "{\"x\xfe\":1}", 7, "body: invalid UTF-8 at line 1 column 3");
    parse_fails("{\"str\":\"a\\u0000b\"}", "body: NUL character in a string at line 1 column 17");
    parse_fails("{\"x\\u0000\":1}", "body: NUL character in a string at line 1 column 10");
    parse_fails_len(ALL, raw_nul, sizeof raw_nul - 1,
                    "body: invalid JSON at line 1 column 9: control character 0x0");
    parse_fails("{\"str\":\"\\ud800\"}",
                "body: invalid JSON at line 1 column 15: invalid Unicode '\\uD800'");
}

static void test_bytes(void **state)
{
    field_roundtrip("by", "\"aGVsbG8=\"", "\"aGVsbG8=\"");
    field_roundtrip("by", "\"aGVsbG8\"", "\"aGVsbG8=\"");
    field_roundtrip("by", "\"aGk=\"", "\"aGk=\"");
    field_roundtrip("by", "\"aA==\"", "\"aA==\"");
    field_roundtrip("by", "\"aA\"", "\"aA==\"");
    field_roundtrip("by", "\"+/8=\"", "\"+/8=\"");
    field_roundtrip("by", "\"-_8\"", "\"+/8=\"");
    field_roundtrip("by", "\"-_8=\"", "\"+/8=\"");
    field_roundtrip("by", "\"\"", "\"\"");
    static const char *const bad[] = {"\"a\"", "\"a===\"", "\"aGk==\"", "\"aA=\"", "\"!!!!\"",
                                      "\"aGVs bG8=\"", "\"+_8=\"", "\"aB==\"", "\"=\"", "5", "[]"};
    size_t i;

    for (i = 0; i < sizeof bad / sizeof *bad; i++)
        field_fails("by", bad[i], "by: expected a base64 string");
    {
        All *a = (All *)parse(ALL, "{\"by\":\"AP8A\"}");
        assert_int_equal(a->by.len, 3);
        assert_memory_equal(a->by.data, "\0\xff\0", 3);
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
}

static void test_enum(void **state)
{
    field_roundtrip("color", "\"RED\"", "\"RED\"");
    field_roundtrip("color", "5", "\"BLUE\"");
    field_roundtrip("color", "\"5\"", "\"BLUE\"");
    field_roundtrip("color", "-3", "\"INFRARED\"");
    field_roundtrip("color", "\"INFRARED\"", "\"INFRARED\"");
    field_roundtrip("color", "\"COLOR_UNSPECIFIED\"", "\"COLOR_UNSPECIFIED\"");
    field_fails("color", "\"PURPLE\"", "color: not a value of Color");
    field_fails("color", "\"red\"", "color: not a value of Color");
    field_fails("color", "\"\"", "color: not a value of Color");
    field_fails("color", "7", "color: 7 is not a value of Color");
    field_fails("color", "\"3\"", "color: 3 is not a value of Color");
    field_fails("color", "3000000000", "color: number out of range for Color");
    field_fails("color", "1.5", "color: expected a Color name or number");
    field_fails("color", "\"1x\"", "color: expected a Color name or number");
    field_fails("color", "true", "color: expected a Color name or number");
    field_fails("rcolor", "[\"RED\",\"BLACK\"]", "rcolor[1]: not a value of Color");
}

/* ---- nested, repeated, oneof, optional ---------------------------------- */

static void test_nested(void **state)
{
    field_roundtrip("profile", "{\"nick\":\"a\",\"child\":{\"child\":{}}}",
                    "{\"age\":0,\"nick\":\"a\",\"child\":{\"age\":0,\"nick\":\"\",\"child\":"
                    "{\"age\":0,\"nick\":\"\",\"child\":null}}}");
    field_fails("profile", "1", "profile: expected a JSON object");
    field_fails("profile", "[]", "profile: expected a JSON object");
    field_fails("profile", "\"{}\"", "profile: expected a JSON object");
    field_fails("profile", "{\"age\":3000000000}", "profile.age: number out of range for int32");
    field_fails("profile", "{\"child\":{\"child\":{\"nick\":7}}}", "profile.child.child.nick: expected a string");
    /* An error after allocations have been hooked in frees cleanly (ASan). */
    field_fails("profile", "{\"nick\":\"kept\",\"child\":{\"nick\":\"also\",\"age\":\"x\"}}",
                "profile.child.age: expected an integer");
}

static void test_repeated(void **state)
{
    field_roundtrip("ri32", "[1,-2,\"3\"]", "[1,-2,3]");
    field_roundtrip("rstr", "[\"a\",\"b\",\"\"]", "[\"a\",\"b\",\"\"]");
    field_roundtrip("rprof", "[{\"age\":1},{}]",
                    "[{\"age\":1,\"nick\":\"\",\"child\":null},{\"age\":0,\"nick\":\"\",\"child\":null}]");
    field_roundtrip("ri64", "[\"-9223372036854775808\",9223372036854775807]",
                    "[-9223372036854775808,9223372036854775807]");
    field_roundtrip("rby", "[\"aGk\",\"\",\"-_8\"]", "[\"aGk=\",\"\",\"+/8=\"]");
    field_roundtrip("rcolor", "[\"RED\",2,\"5\"]", "[\"RED\",\"GREEN\",\"BLUE\"]");
    field_roundtrip("rdb", "[1,0.5,\"NaN\"]", "[1.0,0.5,\"NaN\"]");
    field_roundtrip("rb", "[true,false,true]", "[true,false,true]");
    field_roundtrip("ri32", "[]", "[]");

    field_fails("ri32", "1", "ri32: expected an array");
    field_fails("ri32", "{}", "ri32: expected an array");
    field_fails("rstr", "\"a\"", "rstr: expected an array");
    field_fails("ri32", "[1,\"x\"]", "ri32[1]: expected an integer");
    field_fails("ri32", "[1,2147483648]", "ri32[1]: number out of range for int32");
    field_fails("ri32", "[[1]]", "ri32[0]: expected an integer");
    field_fails("rstr", "[\"a\",null]", "rstr[1]: expected a string");
    field_fails("rstr", "[\"a\",\"b\",3]", "rstr[2]: expected a string");
    field_fails("rby", "[\"aGk=\",\"*\"]", "rby[1]: expected a base64 string");
    field_fails("rb", "[true,null]", "rb[1]: expected true or false");
    field_fails("rprof", "[{\"age\":1},5]", "rprof[1]: expected a JSON object");
    field_fails("rprof", "[{\"age\":1},{\"nick\":\"n\",\"age\":\"old\"}]", "rprof[1].age: expected an integer");
    field_fails("rprof", "[{\"child\":{\"nick\":[]}}]", "rprof[0].child.nick: expected a string");
}

static void test_oneof(void **state)
{
    ProtobufCMessage *m;

    /* Only the member that is set appears, after the regular fields. */
    roundtrip(ALL, "{\"o_str\":\"s\"}", all_json(NULL, NULL, ",\"o_str\":\"s\""));
    roundtrip(ALL, "{\"o_prof\":{\"age\":2}}",
              all_json(NULL, NULL, ",\"o_prof\":{\"age\":2,\"nick\":\"\",\"child\":null}"));
    roundtrip(ALL, "{\"o_by\":\"aGk\",\"o_str\":null}", all_json(NULL, NULL, ",\"o_by\":\"aGk=\""));
    roundtrip(ALL, "{\"o_str\":\"\"}", all_json(NULL, NULL, ",\"o_str\":\"\""));
    roundtrip(ALL, "{\"o_int\":0,\"i32\":1}", all_json("i32", "1", ",\"o_int\":0"));

    m = parse(ALL, "{\"o_prof\":{\"nick\":\"p\"}}");
    assert_int_equal(((All *)m)->choice_case, TOKEND__TEST__ALL__CHOICE_O_PROF);
    assert_string_equal(((All *)m)->o_prof->nick, "p");
    assert_data(m, "o_prof", "{\"age\":0,\"nick\":\"p\",\"child\":null}");
    assert_data(m, "o_str", "null");
    protobuf_c_message_free_unpacked(m, NULL);

    parse_fails("{\"o_str\":\"s\",\"o_prof\":{}}",
                "o_prof: cannot be set together with o_str (only one of them may be set)");
    parse_fails("{\"o_by\":\"aGk=\",\"o_str\":\"s\"}",
                "o_by: cannot be set together with o_str (only one of them may be set)");
    parse_fails("{\"o_int\":1,\"o_prof\":{\"nick\":\"a\"}}",
                "o_int: cannot be set together with o_prof (only one of them may be set)");
    parse_fails("{\"o_prof\":{\"age\":\"x\"}}", "o_prof.age: expected an integer");
}

static void test_proto3_optional(void **state)
{
    ProtobufCMessage *m;
    Opt *o;
    uint8_t packed[64];
    size_t len;
    char err[TRANSCODE_ERRLEN];

    /* Unset fields with presence read as null, not as a default. */
    roundtrip(&opt_descriptor, "{}", "{\"count\":null,\"label\":null,\"blob\":null,\"sub\":null}");
    roundtrip(&opt_descriptor, "{\"count\":null,\"label\":null}",
              "{\"count\":null,\"label\":null,\"blob\":null,\"sub\":null}");
    /* Set to a zero value is still set. */
    roundtrip(&opt_descriptor, "{\"count\":0,\"label\":\"\",\"blob\":\"\",\"sub\":{}}",
              "{\"count\":0,\"label\":\"\",\"blob\":\"\",\"sub\":{\"age\":0,\"nick\":\"\",\"child\":null}}");

    m = parse(&opt_descriptor, "{\"count\":0,\"label\":\"l\",\"blob\":\"aGk=\"}");
    o = (Opt *)m;
    assert_true(o->has_count);
    assert_int_equal(o->count, 0);
    assert_string_equal(o->label, "l");
    assert_true(o->has_blob);
    assert_int_equal(o->blob.len, 2);
    assert_null(o->sub);
    /* protobuf-c itself agrees about presence: the zero count is packed. */
    len = protobuf_c_message_get_packed_size(m);
    assert_true(len <= sizeof packed);
    assert_int_equal(protobuf_c_message_pack(m, packed), len);
    protobuf_c_message_free_unpacked(m, NULL);
    m = protobuf_c_message_unpack(&opt_descriptor, NULL, len, packed);
    assert_non_null(m);
    assert_data(m, NULL, "{\"count\":0,\"label\":\"l\",\"blob\":\"aGk=\",\"sub\":null}");
    assert_int_equal(transcode_set_field(m, "count", 5, "7", 1, err), 0);
    assert_int_equal(transcode_set_field(m, "label", 5, "m", 1, err), 0);
    assert_data(m, NULL, "{\"count\":7,\"label\":\"m\",\"blob\":\"aGk=\",\"sub\":null}");
    protobuf_c_message_free_unpacked(m, NULL);

    m = parse(&opt_descriptor, "{\"blob\":\"\"}");
    assert_true(((Opt *)m)->has_blob);
    assert_false(((Opt *)m)->has_count);
    assert_int_equal(transcode_set_field(m, "blob", 4, "aGk", 3, err), 0);
    assert_int_equal(((Opt *)m)->blob.len, 2);
    protobuf_c_message_free_unpacked(m, NULL);

    parse_fails_len(&opt_descriptor, "{\"count\":\"x\"}", 13, "count: expected an integer");
}

/* ---- bodies jansson or the depth check refuse ----------------------------- */

static void test_body_not_an_object(void **state)
{
    parse_fails("[]", "body: expected a JSON object");
    parse_fails("[{\"i32\":1}]", "body: expected a JSON object");
    parse_fails("5", "body: expected a JSON object");
    parse_fails("\"{}\"", "body: expected a JSON object");
    parse_fails("null", "body: expected a JSON object");
    parse_fails("true", "body: expected a JSON object");
}

static void test_invalid_json(void **state)
{
    parse_fails("{\"i32\":}", "body: invalid JSON at line 1 column 8: unexpected token");
    parse_fails("{\"i32\":1", "body: invalid JSON at line 1 column 8: '}' expected near end of file");
    parse_fails("{} x", "body: invalid JSON at line 1 column 4: end of file expected");
    parse_fails("{\"i32\":01}", "body: invalid JSON at line 1 column 8: invalid token");
    parse_fails(" ", "body: invalid JSON at line 1 column 1: unexpected token near end of file");
    parse_fails("{\n\"i32\": NaN}", "body: invalid JSON at line 2 column 10: invalid token");
    parse_fails("{'i32':1}", "body: invalid JSON at line 1 column 2: string or '}' expected");
}

static void test_duplicate_keys(void **state)
{
    parse_fails("{\"i32\":1,\"i32\":2}", "body: invalid JSON at line 1 column 14: duplicate object key");
    parse_fails("{\"profile\":{\"age\":1,\"age\":1}}",
                "body: invalid JSON at line 1 column 25: duplicate object key");
    /* Unknown keys too: the body is ambiguous whatever the schema says. */
    parse_fails("{\"x\":1,\"x\":1}", "body: invalid JSON at line 1 column 10: duplicate object key");
}

static void test_huge_numbers(void **state)
{
    parse_fails("{\"db\":1e400}", "body: number too large at line 1 column 11");
    parse_fails("{\"db\":-1e400}", "body: number too large at line 1 column 12");
    parse_fails("{\"i64\":99999999999999999999}", "body: number too large at line 1 column 27");
    parse_fails("{\"u64\":18446744073709551615}", "body: number too large at line 1 column 27");
    parse_fails("{\"unknown\":[1,99999999999999999999]}", "body: number too large at line 1 column 34");
    /* As strings they reach the field, which names itself. */
    field_fails("i64", "\"99999999999999999999\"", "i64: number out of range for int64");
    /* Tiny numbers are not an error: they are 0. */
    field_roundtrip("db", "1e-400", "0.0");
}

static char *nested(const char *open, const char *middle, const char *close, int levels)
{
    size_t lo = strlen(open), lm = strlen(middle), lc = strlen(close);
    char *s = malloc(levels * (lo + lc) + lm + 1), *p = s;
    int i;

    for (i = 0; i < levels; i++, p += lo) memcpy(p, open, lo);
    memcpy(p, middle, lm);
    p += lm;
    for (i = 0; i < levels; i++, p += lc) memcpy(p, close, lc);
    *p = '\0';
    return s;
}

static void test_deep_nesting(void **state)
{
    char want[64], *s, *inner;
    ProtobufCMessage *m;
    int i;

    snprintf(want, sizeof want, "body: JSON nested deeper than %d levels", TRANSCODE_MAX_DEPTH);

    /* 10000 arrays: jansson's own limit stops it, cleanly. */
    inner = nested("[", "1", "]", 10000);
    s = nested("{\"ri32\":", inner, "}", 1);
    parse_fails(s, want);
    free(s);
    parse_fails(inner, want);
    free(inner);
    s = nested("{\"n\":", "{}", "}", 10000);
    parse_fails_len(NEST, s, strlen(s), want);
    free(s);
    /* Unterminated: never parsed far enough to matter. */
    s = nested("[", "", "", 100000);
    parse_fails(s, want);
    free(s);

    /* Our limit: 32 levels of objects parse, 33 do not, whether the
     * schema reads them or not. */
    s = nested("{\"n\":", "{\"v\":1}", "}", TRANSCODE_MAX_DEPTH - 1);
    m = parse(NEST, s);
    {
        Tokend__Test__Nest *n = (Tokend__Test__Nest *)m;
        for (i = 0; i < TRANSCODE_MAX_DEPTH - 1; i++) n = n->n;
        assert_int_equal(n->v, 1);
        assert_null(n->n);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    free(s);
    s = nested("{\"n\":", "{\"v\":1}", "}", TRANSCODE_MAX_DEPTH);
    parse_fails_len(NEST, s, strlen(s), want);
    free(s);
    inner = nested("[", "", "]", TRANSCODE_MAX_DEPTH);
    s = nested("{\"unknown\":", inner, "}", 1);
    parse_fails(s, want);
    free(s);
    free(inner);
    inner = nested("[", "", "]", TRANSCODE_MAX_DEPTH - 1);
    s = nested("{\"unknown\":", inner, "}", 1);
    protobuf_c_message_free_unpacked(parse(ALL, s), NULL);
    free(s);
    free(inner);
}

/* A path too long for the error buffer loses its top, not the field name
 * or the message. */
static void test_long_path(void **state)
{
    char *inner = nested("{\"child\":", "{\"nick\":1}", "}", 28);
    char *s = nested("{\"rprof\":[", inner, "]}", 1);

    parse_fails(s, "...child.child.child.child.child.child.child.child.child.child.child.child.child.child."
                   "child.nick: expected a string");
    free(s);
    free(inner);
    inner = nested("{\"child\":", "{\"nick\":1}", "}", 10);
    s = nested("{\"rprof\":[{},", inner, "]}", 1);
    parse_fails(s, "rprof[1].child.child.child.child.child.child.child.child.child.child.nick: "
                   "expected a string");
    free(s);
    free(inner);
}

/* The body is a length, not a C string: what follows it is not read. */
static void test_body_is_not_nul_terminated(void **state)
{
    static const char body[] = "{\"i32\":12}{\"i32\":";
    ProtobufCMessage *m = NULL;
    char err[TRANSCODE_ERRLEN];
    char *copy = malloc(10);

    memcpy(copy, body, 10); /* exactly the object, no NUL after it (ASan) */
    assert_int_equal(transcode_from_json(ALL, copy, 10, &m, err), 0);
    assert_int_equal(((All *)m)->i32, 12);
    protobuf_c_message_free_unpacked(m, NULL);
    free(copy);
    parse_fails_len(ALL, body, 9, "body: invalid JSON at line 1 column 9: '}' expected near end of file");
}

/* ---- envelope ------------------------------------------------------------ */

static void test_envelope(void **state)
{
    ProtobufCMessage *m = parse(ALL, "{\"i32\":1,\"rstr\":[\"a\",\"b\"],\"profile\":{\"age\":2}}");
    char *out;
    size_t len;

    assert_int_equal(transcode_envelope(5, "user not found", NULL, NULL, &out, &len), 0);
    assert_string_equal(out, "{\"code\":5,\"message\":\"user not found\",\"data\":null}");
    assert_int_equal(len, strlen(out));
    free(out);

    assert_int_equal(transcode_envelope(3, "a \"quoted\"\nline \xe2\x98\x83", NULL, "x", &out, &len), 0);
    assert_string_equal(out, "{\"code\":3,\"message\":\"a \\\"quoted\\\"\\nline \xe2\x98\x83\",\"data\":null}");
    free(out);

    /* A message that is not UTF-8 still gets out, mended. */
    assert_int_equal(transcode_envelope(2, "bad \xff\xc0 end", NULL, NULL, &out, &len), 0);
    assert_string_equal(out, "{\"code\":2,\"message\":\"bad \xef\xbf\xbd\xef\xbf\xbd end\",\"data\":null}");
    free(out);

    /* data_field picks one field: the response_body of an HttpRule. */
    assert_data(m, "rstr", "[\"a\",\"b\"]");
    assert_data(m, "ri32", "[]");
    assert_data(m, "profile", "{\"age\":2,\"nick\":\"\",\"child\":null}");
    assert_data(m, "i32", "1");
    assert_data(m, "color", "\"COLOR_UNSPECIFIED\"");
    assert_int_equal(transcode_envelope(0, NULL, m, "no_such_field", &out, &len), -1);
    assert_null(out);
    assert_int_equal(len, 0);

    assert_int_equal(transcode_envelope(0, "ok", m, NULL, &out, &len), 0);
    assert_memory_equal(out, "{\"code\":0,\"message\":\"ok\",\"data\":{\"i32\":1,", 41);
    free(out);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Values that only a binary protobuf (or code) can put in a message. */
static void test_envelope_from_struct(void **state)
{
    All a = TOKEND__TEST__ALL__INIT;
    char str[] = "ok\xff";
    uint8_t bin[] = {0xfb, 0xff};

    a.u64 = UINT64_MAX;
    a.f64 = (uint64_t)INT64_MAX + 1;
    a.i64 = INT64_MIN;
    a.fl = NAN;
    a.db = -INFINITY;
    a.color = 42; /* from a newer peer */
    a.str = str;
    a.by.data = bin;
    a.by.len = sizeof bin;
    assert_data(&a.base, "u64", "\"18446744073709551615\"");
    assert_data(&a.base, "f64", "\"9223372036854775808\"");
    assert_data(&a.base, "i64", "-9223372036854775808");
    assert_data(&a.base, "fl", "\"NaN\"");
    assert_data(&a.base, "db", "\"-Infinity\"");
    assert_data(&a.base, "color", "42");
    assert_data(&a.base, "str", "\"ok\xef\xbf\xbd\"");
    assert_data(&a.base, "by", "\"+/8=\"");
}

/* Past the first guess at the size, the envelope is still whole. */
static void test_envelope_large(void **state)
{
    All *a = (All *)parse(ALL, "{}");
    char err[TRANSCODE_ERRLEN], item[64], *out;
    size_t len, i;

    for (i = 0; i < 500; i++) {
        int n = snprintf(item, sizeof item, "string number %zu with some padding", i);
        assert_int_equal(transcode_set_field(&a->base, "rstr", 4, item, (size_t)n, err), 0);
    }
    assert_int_equal(a->n_rstr, 500);
    assert_int_equal(transcode_envelope(0, NULL, &a->base, NULL, &out, &len), 0);
    assert_true(len > 10000);
    assert_int_equal(strlen(out), len);
    assert_non_null(strstr(out, "\"string number 499 with some padding\"]"));
    assert_int_equal(out[len - 1], '}');
    free(out);
    protobuf_c_message_free_unpacked(&a->base, NULL);
}

/* ---- the writer, pinned to its output ----------------------------------- */

/* Messages with every kind of value the writer meets, built by hand (so
 * also values no JSON body can give: invalid UTF-8, unknown enum numbers,
 * NaN), each with the exact envelope the writer gave for it before its
 * fast paths: a change to the writer must not change a byte of these. */
typedef struct {
    int code;
    const char *message;
    const ProtobufCMessage *data;
    const char *field;
    const char *want;
} golden;

static char golden_str[] = "ctl\x01\x1f\x7f q\" bs\\ sl/ \b\f\n\r\t caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80"
                           " bad\xff\xc0\xaf\xed\xa0\x80 \xf4\x90\x80\x80 cut\xe2\x98";
static char golden_nick[] = "p\"q";
static char golden_s1[] = "", golden_s2[] = "x\ny\\", golden_s3[] = "\xe2\x98\x83 long enough to pass eight";
static char *golden_rstr[] = {golden_s1, golden_s2, golden_s3};
static int32_t golden_ri32[] = {0, -1, 9, 10, 99, 100, 101, 999, 1000, INT32_MAX, INT32_MIN};
static int64_t golden_ri64[] = {INT64_MIN, -1000000000000000000, -999999999999999999, 9999999999,
                                10000000000, 123456789012345678, 999999999999999999,
                                1000000000000000000, INT64_MAX};
static uint8_t golden_bin[] = {0, 1, 2, 0xfb, 0xff};
static ProtobufCBinaryData golden_rby[] = {{0, NULL}, {3, (uint8_t *)"abc"}};
static Tokend__Test__Color golden_rcolor[] = {TOKEND__TEST__COLOR__RED, 42, TOKEND__TEST__COLOR__INFRARED};
static double golden_rdb[] = {0.1, 1e300, 5e-324, -2.5};
static protobuf_c_boolean golden_rb[] = {1, 0};

static void golden_all(All *a, Tokend__Test__Profile *p, Tokend__Test__Profile *child,
                       Tokend__Test__Profile **rprof)
{
    tokend__test__all__init(a);
    tokend__test__profile__init(p);
    tokend__test__profile__init(child);
    p->age = -7;
    p->nick = golden_nick;
    p->child = child;
    rprof[0] = child;
    rprof[1] = p;
    a->i32 = INT32_MIN;
    a->s32 = INT32_MAX;
    a->sf32 = -1;
    a->i64 = INT64_MIN;
    a->u64 = UINT64_MAX;
    a->s64 = INT64_MAX;
    a->f64 = (uint64_t)INT64_MAX + 1;
    a->sf64 = -1234567890123;
    a->u32 = UINT32_MAX;
    a->f32 = 1000000000;
    a->fl = 1.5f;
    a->db = -0.1;
    a->b = 1;
    a->str = golden_str;
    a->by.data = golden_bin;
    a->by.len = sizeof golden_bin;
    a->color = TOKEND__TEST__COLOR__BLUE;
    a->profile = p;
    a->n_ri32 = sizeof golden_ri32 / sizeof *golden_ri32;
    a->ri32 = golden_ri32;
    a->n_rstr = 3;
    a->rstr = golden_rstr;
    a->n_rprof = 2;
    a->rprof = rprof;
    a->n_ri64 = sizeof golden_ri64 / sizeof *golden_ri64;
    a->ri64 = golden_ri64;
    a->n_rby = 2;
    a->rby = golden_rby;
    a->n_rcolor = 3;
    a->rcolor = golden_rcolor;
    a->n_rdb = sizeof golden_rdb / sizeof *golden_rdb;
    a->rdb = golden_rdb;
    a->n_rb = 2;
    a->rb = golden_rb;
    a->choice_case = TOKEND__TEST__ALL__CHOICE_O_PROF;
    a->o_prof = child;
}

static void golden_check(const golden *g, size_t n)
{
    size_t in_small = 0;

    for (size_t i = 0; i < n; i++) {
        char *out = NULL, small[64];
        size_t len = 0;
        /* transcode_envelope (the growing buffer), then transcode_envelope_buf
         * with a buffer some of them fit in. */
        assert_int_equal(transcode_envelope(g[i].code, g[i].message, g[i].data, g[i].field, &out, &len), 0);
        if (len != strlen(g[i].want) || memcmp(out, g[i].want, len) != 0)
            fail_msg("case %zu:\n got %s\nwant %s", i, out, g[i].want);
        free(out);
        assert_int_equal(transcode_envelope_buf(g[i].code, g[i].message, g[i].data, g[i].field,
                                                small, sizeof small, &out, &len), 0);
        assert_int_equal(len, strlen(g[i].want));
        assert_memory_equal(out, g[i].want, len);
        /* (the writer reserves ahead: a reply close to the size still moves out) */
        assert_true(out == small ? len < sizeof small : len > sizeof small / 2);
        if (out != small)
            free(out);
        else
            in_small++;
    }
    assert_true(in_small > 0);
}

static void test_writer_golden(void **state)
{
    All a, plain = TOKEND__TEST__ALL__INIT, ostr = TOKEND__TEST__ALL__INIT;
    Tokend__Test__Profile p, child, *rprof[2];
    Tokend__Test__Ordered ord = TOKEND__TEST__ORDERED__INIT;
    Tokend__V1__VerifyReply vr = TOKEND__V1__VERIFY_REPLY__INIT;
    Opt opt;
    static char quote[] = "\"", key[] = "alrFSbKHapgpKAlIjLrlji3g3nmW9rb5GybLkRAqnGo=";

    golden_all(&a, &p, &child, rprof);
    plain.choice_case = TOKEND__TEST__ALL__CHOICE_O_INT;
    plain.o_int = INT64_MIN;
    ostr.choice_case = TOKEND__TEST__ALL__CHOICE_O_STR;
    ostr.o_str = quote;
    ostr.color = 42;
    ord.alpha = NULL;
    ord.zulu = quote;
    opt_init(&opt);
    opt.has_count = 1;
    opt.count = -5;
    opt.sub = &child;
    vr.user_id = 10000;
    vr.app_id = 1000;
    vr.expire = 1796666292143;
    vr.encrypt_type = 4;
    vr.public_key = key;

    const golden g[] = {
        {200, NULL, &a.base, NULL,
         "{\"code\":200,\"message\":null,\"data\":{\"i32\":-2147483648,\"s32\":2147483647,\"sf"
         "32\":-1,\"i64\":-9223372036854775808,\"u64\":\"18446744073709551615\",\"s64\":922337"
         "2036854775807,\"f64\":\"9223372036854775808\",\"sf64\":-1234567890123,\"u32\":429496"
         "7295,\"f32\":1000000000,\"fl\":1.5,\"db\":-0.10000000000000001,\"b\":true,\"str\":\""
         "ctl\\u0001\\u001F\x7f q\\\" bs\\\\ sl/ \\b\\f\\n\\r\\t caf\xc3\xa9 \xe2\x98\x83 \xf0"
         "\x9f\x98\x80 bad\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf"
         "\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd cut\xef\xbf\xbd\xef\xbf\xbd\","
         "\"by\":\"AAEC+/8=\",\"color\":\"BLUE\",\"profile\":{\"age\":-7,\"nick\":\"p\\\"q\","
         "\"child\":{\"age\":0,\"nick\":\"\",\"child\":null}},\"ri32\":[0,-1,9,10,99,100,101,9"
         "99,1000,2147483647,-2147483648],\"rstr\":[\"\",\"x\\ny\\\\\",\"\xe2\x98\x83 long eno"
         "ugh to pass eight\"],\"rprof\":[{\"age\":0,\"nick\":\"\",\"child\":null},{\"age\":-7"
         ",\"nick\":\"p\\\"q\",\"child\":{\"age\":0,\"nick\":\"\",\"child\":null}}],\"ri64\":["
         "-9223372036854775808,-1000000000000000000,-999999999999999999,9999999999,10000000000"
         ",123456789012345678,999999999999999999,1000000000000000000,9223372036854775807],\"rb"
         "y\":[\"\",\"YWJj\"],\"rcolor\":[\"RED\",42,\"INFRARED\"],\"rdb\":[0.1000000000000000"
         "1,1.0000000000000001e300,4.9406564584124654e-324,-2.5],\"rb\":[true,false],\"o_prof"
         "\":{\"age\":0,\"nick\":\"\",\"child\":null}}}"},
        {200, NULL, &plain.base, NULL,
         "{\"code\":200,\"message\":null,\"data\":{\"i32\":0,\"s32\":0,\"sf32\":0,\"i64\":0,\""
         "u64\":0,\"s64\":0,\"f64\":0,\"sf64\":0,\"u32\":0,\"f32\":0,\"fl\":0.0,\"db\":0.0,\"b"
         "\":false,\"str\":\"\",\"by\":\"\",\"color\":\"COLOR_UNSPECIFIED\",\"profile\":null,"
         "\"ri32\":[],\"rstr\":[],\"rprof\":[],\"ri64\":[],\"rby\":[],\"rcolor\":[],\"rdb\":[]"
         ",\"rb\":[],\"o_int\":-9223372036854775808}}"},
        {0, NULL, &ostr.base, NULL,
         "{\"code\":0,\"message\":null,\"data\":{\"i32\":0,\"s32\":0,\"sf32\":0,\"i64\":0,\"u6"
         "4\":0,\"s64\":0,\"f64\":0,\"sf64\":0,\"u32\":0,\"f32\":0,\"fl\":0.0,\"db\":0.0,\"b\""
         ":false,\"str\":\"\",\"by\":\"\",\"color\":42,\"profile\":null,\"ri32\":[],\"rstr\":["
         "],\"rprof\":[],\"ri64\":[],\"rby\":[],\"rcolor\":[],\"rdb\":[],\"rb\":[],\"o_str\":"
         "\"\\\"\"}}"},
        {-2147483647 - 1, NULL, &ord.base, NULL,
         "{\"code\":-2147483648,\"message\":null,\"data\":{\"alpha\":null,\"mike\":\"\",\"zulu"
         "\":\"\\\"\"}}"},
        {2147483647, NULL, &opt.base, NULL,
         "{\"code\":2147483647,\"message\":null,\"data\":{\"count\":-5,\"label\":null,\"blob\""
         ":null,\"sub\":{\"age\":0,\"nick\":\"\",\"child\":null}}}"},
        {200, NULL, &vr.base, NULL,
         "{\"code\":200,\"message\":null,\"data\":{\"user_id\":10000,\"app_id\":1000,\"device_"
         "guid\":\"\",\"device_sn\":0,\"expire\":1796666292143,\"admin\":false,\"encrypt_type"
         "\":4,\"public_key\":\"alrFSbKHapgpKAlIjLrlji3g3nmW9rb5GybLkRAqnGo=\"}}"},
        {404, golden_str, NULL, NULL,
         "{\"code\":404,\"message\":\"ctl\\u0001\\u001F\x7f q\\\" bs\\\\ sl/ \\b\\f\\n\\r\\t c"
         "af\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80 bad\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef"
         "\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd cu"
         "t\xef\xbf\xbd\xef\xbf\xbd\",\"data\":null}"},
        {400, "plain words", NULL, "rstr", "{\"code\":400,\"message\":\"plain words\",\"data\":null}"},
        {200, NULL, &a.base, "rstr",
         "{\"code\":200,\"message\":null,\"data\":[\"\",\"x\\ny\\\\\",\"\xe2\x98\x83 long enou"
         "gh to pass eight\"]}"},
        {200, NULL, &a.base, "ri64",
         "{\"code\":200,\"message\":null,\"data\":[-9223372036854775808,-1000000000000000000,-"
         "999999999999999999,9999999999,10000000000,123456789012345678,999999999999999999,1000"
         "000000000000000,9223372036854775807]}"},
        {200, NULL, &a.base, "rprof",
         "{\"code\":200,\"message\":null,\"data\":[{\"age\":0,\"nick\":\"\",\"child\":null},{"
         "\"age\":-7,\"nick\":\"p\\\"q\",\"child\":{\"age\":0,\"nick\":\"\",\"child\":null}}]}"},
        {200, NULL, &a.base, "o_prof",
         "{\"code\":200,\"message\":null,\"data\":{\"age\":0,\"nick\":\"\",\"child\":null}}"},
        {200, NULL, &a.base, "o_str", "{\"code\":200,\"message\":null,\"data\":null}"},
        {200, NULL, &a.base, "rcolor",
         "{\"code\":200,\"message\":null,\"data\":[\"RED\",42,\"INFRARED\"]}"},
        {200, NULL, &a.base, "u64",
         "{\"code\":200,\"message\":null,\"data\":\"18446744073709551615\"}"},
        {200, NULL, &a.base, "str",
         "{\"code\":200,\"message\":null,\"data\":\"ctl\\u0001\\u001F\x7f q\\\" bs\\\\ sl/ \\b"
         "\\f\\n\\r\\t caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80 bad\xef\xbf\xbd\xef\xbf\xbd"
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf"
         "\xbd\xef\xbf\xbd cut\xef\xbf\xbd\xef\xbf\xbd\"}"},
        {200, NULL, &opt.base, "count", "{\"code\":200,\"message\":null,\"data\":-5}"},
        {200, NULL, &opt.base, "blob", "{\"code\":200,\"message\":null,\"data\":null}"},
        {200, NULL, &opt.base, "label", "{\"code\":200,\"message\":null,\"data\":null}"},
        {200, NULL, &ord.base, "alpha", "{\"code\":200,\"message\":null,\"data\":null}"},
        {200, NULL, &plain.base, "rprof", "{\"code\":200,\"message\":null,\"data\":[]}"},
    };
    golden_check(g, sizeof g / sizeof *g);
}

/* What jansson writes for the string s (n bytes), once bytes that are not
 * UTF-8 are mended to U+FFFD: what the writer gave before it escaped
 * strings itself, and must still give. */
static char *jansson_string(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    char *out;
    size_t len;

    if (!j) {
        char *fixed = malloc(3 * n + 1), *p = fixed;
        for (size_t i = 0, k; i < n; i += k) {
            if ((k = utf8_next((const unsigned char *)s + i, n - i, NULL))) {
                memcpy(p, s + i, k);
                p += k;
            } else {
                memcpy(p, "\xef\xbf\xbd", 3);
                p += 3;
                k = 1;
            }
        }
        j = json_stringn(fixed, (size_t)(p - fixed));
        free(fixed);
    }
    assert_non_null(j);
    len = json_dumpb(j, NULL, 0, JSON_ENCODE_ANY | JSON_COMPACT);
    out = malloc(len + 1);
    assert_int_equal(json_dumpb(j, out, len, JSON_ENCODE_ANY | JSON_COMPACT), len);
    out[len] = '\0';
    json_decref(j);
    return out;
}

static void assert_message_written(const char *s)
{
    char *want = jansson_string(s, strlen(s)), *out, *env = malloc(strlen(want) + 64);
    size_t len;

    assert_int_equal(transcode_envelope(1, s, NULL, NULL, &out, &len), 0);
    sprintf(env, "{\"code\":1,\"message\":%s,\"data\":null}", want);
    if (strcmp(out, env) != 0)
        fail_msg("got  %s\nwant %s", out, env);
    free(want);
    free(out);
    free(env);
}

/* The writer reserves room for a message's scalars ahead, once, and a
 * string reserves its own room and the rest's: with a caller's buffer of
 * every size (on the heap, exactly that large, for ASan), the bytes are
 * those of the growing buffer, wherever the growth falls. */
static void assert_any_buffer(const ProtobufCMessage *m)
{
    char *want, *out;
    size_t want_len, len;

    assert_int_equal(transcode_envelope(200, NULL, m, NULL, &want, &want_len), 0);
    for (size_t cap = 1; cap <= want_len + 64; cap++) {
        char *buf = malloc(cap);
        assert_non_null(buf);
        assert_int_equal(transcode_envelope_buf(200, NULL, m, NULL, buf, cap, &out, &len), 0);
        if (len != want_len || memcmp(out, want, len) != 0)
            fail_msg("cap %zu:\n got %.*s\nwant %s", cap, (int)len, out, want);
        if (out != buf)
            free(out);
        free(buf);
    }
    free(want);
}

static void test_writer_any_buffer(void **state)
{
    All a;
    Tokend__Test__Profile p, child, *rprof[2];
    Tokend__V1__VerifyReply vr = TOKEND__V1__VERIFY_REPLY__INIT;
    static char key[] = "alrFSbKHapgpKAlIjLrlji3g3nmW9rb5GybLkRAqnGo=";
    static char guid[] = "\x01\x02\x03\x04\x05\x06\x07\x08\x01\x02\x03\x04\x05\x06\x07\x08"
                         "\x01\x02\x03\x04\x05\x06\x07\x08 six bytes each";

    golden_all(&a, &p, &child, rprof);
    assert_any_buffer(&a.base);
    vr.user_id = INT64_MIN, vr.app_id = INT64_MAX, vr.expire = -1;
    vr.device_sn = UINT32_MAX, vr.admin = 1, vr.encrypt_type = INT32_MIN;
    vr.public_key = key;
    assert_any_buffer(&vr.base);
    vr.device_guid = guid; /* escaped to 6 bytes a byte, between scalars */
    assert_any_buffer(&vr.base);
    vr.device_guid = NULL, vr.public_key = NULL; /* null, in a scalar's room */
    assert_any_buffer(&vr.base);
}

/* Every byte value in every position of an 8-byte word (the writer looks
 * at strings a word at a time), then random strings of the bytes that
 * matter: quotes, backslashes, controls, DEL, and the pieces of good and
 * bad UTF-8 sequences. */
static void test_string_escaping(void **state)
{
    static const unsigned char alphabet[] = {'a', 'Z', ' ', '/', '"', '\\', 0x01, 0x08, 0x09, 0x0a,
                                             0x0c, 0x0d, 0x1f, 0x7f, 0x80, 0xbf, 0xc0, 0xc2, 0xdf,
                                             0xe0, 0xe2, 0x98, 0x83, 0xed, 0xa0, 0x9f, 0xf0, 0xf4,
                                             0x90, 0xf5, 0xff};
    char s[64];
    uint64_t x = 0x9e3779b97f4a7c15;

    for (unsigned c = 1; c < 256; c++) {
        for (size_t at = 0; at < 17; at++) {
            memset(s, 'x', at);
            s[at] = (char)c;
            strcpy(s + at + 1, "-tail-of-the-string");
            assert_message_written(s);
        }
    }
    for (int round = 0; round < 20000; round++) {
        size_t n;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        n = x % 40;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            s[i] = (char)alphabet[x % sizeof alphabet];
        }
        s[n] = '\0';
        assert_message_written(s);
    }
}

/* Integers as snprintf writes them, around every power of ten and at
 * random; a uint64 beyond INT64_MAX is a decimal string. */
static void test_integer_output(void **state)
{
    All a = TOKEND__TEST__ALL__INIT;
    char want[32];
    uint64_t x = 0x2545f4914f6cdd1d;

    for (int k = 0; k < 2000; k++) {
        uint64_t u;
        if (k < 20 * 3) {
            u = 1;
            for (int e = 0; e < k / 3; e++) u *= 10;
            u += (uint64_t)(k % 3) - 1;
        } else {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            u = x >> (x % 64);
        }
        a.u64 = u;
        snprintf(want, sizeof want, u > INT64_MAX ? "\"%" PRIu64 "\"" : "%" PRIu64, u);
        assert_data(&a.base, "u64", want);
        a.i64 = (int64_t)u;
        snprintf(want, sizeof want, "%" PRId64, (int64_t)u);
        assert_data(&a.base, "i64", want);
        a.i64 = -(int64_t)(u >> 1);
        snprintf(want, sizeof want, "%" PRId64, a.i64);
        assert_data(&a.base, "i64", want);
        a.i32 = (int32_t)u;
        snprintf(want, sizeof want, "%" PRId32, a.i32);
        assert_data(&a.base, "i32", want);
        a.u32 = (uint32_t)u;
        snprintf(want, sizeof want, "%" PRIu32, a.u32);
        assert_data(&a.base, "u32", want);
    }
    a.i64 = INT64_MIN;
    assert_data(&a.base, "i64", "-9223372036854775808");
    a.u64 = 0;
    assert_data(&a.base, "u64", "0");
}

/* ---- plans, made on first use, from many threads at once ------------------ */

#define PLAN_THREADS 8

typedef struct {
    char *out[64]; /* the envelope of each message type of the Tokend service */
    size_t n;
} plan_run;

static void *write_every_type(void *arg)
{
    plan_run *r = arg;
    const ProtobufCServiceDescriptor *s = &tokend__v1__tokend__descriptor;

    for (unsigned i = 0; i < s->n_methods && r->n + 2 <= 64; i++) {
        const ProtobufCMessageDescriptor *types[2] = {s->methods[i].input, s->methods[i].output};
        for (int k = 0; k < 2; k++) {
            ProtobufCMessage *m = malloc(types[k]->sizeof_message);
            size_t len;
            protobuf_c_message_init(types[k], m);
            if (transcode_envelope(0, NULL, m, NULL, &r->out[r->n++], &len) != 0) abort();
            free(m);
        }
    }
    return NULL;
}

/* The first of these tests to run: the service's types have no plans yet,
 * and eight threads race to make them. Every thread must write the same
 * text (and a -fsanitize=thread build of this test must stay quiet). */
static void test_plans_concurrent(void **state)
{
    pthread_t th[PLAN_THREADS];
    plan_run runs[PLAN_THREADS] = {{{0}}};

    for (int i = 0; i < PLAN_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, write_every_type, &runs[i]), 0);
    for (int i = 0; i < PLAN_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_true(runs[0].n > 20);
    for (int i = 0; i < PLAN_THREADS; i++) {
        assert_int_equal(runs[i].n, runs[0].n);
        for (size_t k = 0; k < runs[i].n; k++) {
            assert_string_equal(runs[i].out[k], runs[0].out[k]);
            assert_non_null(strstr(runs[0].out[k], "\"data\":{"));
        }
    }
    for (int i = 0; i < PLAN_THREADS; i++)
        for (size_t k = 0; k < runs[i].n; k++)
            free(runs[i].out[k]);
}

/* ---- query strings ------------------------------------------------------- */

static void set_ok(ProtobufCMessage *m, const char *name, const char *value)
{
    char err[TRANSCODE_ERRLEN] = "";

    if (transcode_set_field(m, name, strlen(name), value, strlen(value), err) != 0)
        fail_msg("set %s=%s: %s", name, value, err);
}

static void set_fails_len(ProtobufCMessage *m, const char *name, const char *value, size_t len,
                          const char *want)
{
    char err[TRANSCODE_ERRLEN] = "";

    assert_int_equal(transcode_set_field(m, name, strlen(name), value, len, err), -1);
    assert_string_equal(err, want);
}

#define set_fails(m, name, value, want) set_fails_len(m, name, value, strlen(value), want)

static void test_set_field_scalars(void **state)
{
    ProtobufCMessage *m = parse(ALL, "{\"str\":\"from body\",\"i32\":9}");
    All *a = (All *)m;
    char err[TRANSCODE_ERRLEN];

    set_ok(m, "i32", "-12");
    set_ok(m, "s32", "-2147483648");
    set_ok(m, "sf32", "7");
    set_ok(m, "i64", "-9223372036854775808");
    set_ok(m, "u64", "18446744073709551615");
    set_ok(m, "s64", "5");
    set_ok(m, "f64", "6");
    set_ok(m, "sf64", "-7");
    set_ok(m, "u32", "4294967295");
    set_ok(m, "f32", "8");
    set_ok(m, "fl", "1.5");
    set_ok(m, "db", "-Infinity");
    set_ok(m, "b", "true");
    set_ok(m, "str", "caf\xc3\xa9"); /* replaces the body's string */
    set_ok(m, "str", "twice");
    set_ok(m, "by", "aGk");
    set_ok(m, "by", "-_8=");
    set_ok(m, "color", "GREEN");
    set_ok(m, "color", "5");
    assert_int_equal(a->i32, -12);
    assert_true(a->i64 == INT64_MIN);
    assert_true(a->u64 == UINT64_MAX);
    assert_true(a->fl == 1.5f);
    assert_true(isinf(a->db) && a->db < 0);
    assert_true(a->b);
    assert_string_equal(a->str, "twice");
    assert_int_equal(a->by.len, 2);
    assert_int_equal(a->color, TOKEND__TEST__COLOR__BLUE);
    set_ok(m, "b", "false");
    assert_false(a->b);

    /* The name is a length, not a C string. */
    assert_int_equal(transcode_set_field(m, "u32garbage", 3, "1garbage", 1, err), 0);
    assert_int_equal(a->u32, 1);

    /* Unknown names are ignored, as are names only a prefix matches. */
    set_ok(m, "nope", "1");
    set_ok(m, "i3", "1");
    set_ok(m, "", "1");
    set_ok(m, "profile.age", "1");
    assert_int_equal(a->i32, -12);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_set_field_repeated_and_oneof(void **state)
{
    ProtobufCMessage *m = parse(ALL, "{\"ri32\":[1],\"rstr\":[\"body\"]}");
    All *a = (All *)m;

    set_ok(m, "ri32", "2");
    set_ok(m, "ri32", "-3");
    set_ok(m, "rstr", "q");
    set_ok(m, "rby", "aGk=");
    set_ok(m, "rcolor", "RED");
    set_ok(m, "rcolor", "2");
    set_ok(m, "rb", "true");
    set_ok(m, "rdb", "0.5");
    set_ok(m, "ri64", "-9223372036854775808");
    assert_int_equal(a->n_ri32, 3);
    assert_int_equal(a->ri32[2], -3);
    assert_int_equal(a->n_rstr, 2);
    assert_string_equal(a->rstr[1], "q");

    /* Switching oneof members frees the one before (ASan checks). */
    set_ok(m, "o_str", "first");
    set_ok(m, "o_str", "second");
    set_ok(m, "o_by", "aGk");
    set_ok(m, "o_int", "5");
    set_ok(m, "o_str", "last");
    assert_int_equal(a->choice_case, TOKEND__TEST__ALL__CHOICE_O_STR);
    assert_data(m, "o_str", "\"last\"");
    assert_data(m, "o_int", "null");
    assert_data(m, "ri32", "[1,2,-3]");
    assert_data(m, "rstr", "[\"body\",\"q\"]");
    assert_data(m, "rcolor", "[\"RED\",\"GREEN\"]");
    protobuf_c_message_free_unpacked(m, NULL);

    /* From a message whose oneof holds a submessage. */
    m = parse(ALL, "{\"o_prof\":{\"nick\":\"n\"}}");
    set_ok(m, "o_by", "aGk=");
    assert_int_equal(((All *)m)->choice_case, TOKEND__TEST__ALL__CHOICE_O_BY);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_set_field_errors(void **state)
{
    ProtobufCMessage *m = parse(ALL, "{\"i32\":4,\"str\":\"keep\"}");
    All *a = (All *)m;

    set_fails(m, "profile", "x", "profile: cannot be set from the query string");
    set_fails(m, "rprof", "{}", "rprof: cannot be set from the query string");
    set_fails(m, "o_prof", "", "o_prof: cannot be set from the query string");
    set_fails(m, "i32", "abc", "i32: expected an integer");
    set_fails(m, "i32", "", "i32: expected an integer");
    set_fails(m, "i32", "1.5", "i32: expected an integer");
    set_fails(m, "i32", "2147483648", "i32: number out of range for int32");
    set_fails(m, "u32", "-1", "u32: number out of range for uint32");
    set_fails(m, "i64", "9223372036854775808", "i64: number out of range for int64");
    set_fails(m, "u64", "18446744073709551616", "u64: number out of range for uint64");
    set_fails(m, "b", "yes", "b: expected true or false");
    set_fails(m, "b", "1", "b: expected true or false");
    set_fails(m, "fl", "1e39", "fl: number out of range for float");
    set_fails(m, "db", "one", "db: expected a number");
    set_fails(m, "by", "%%%", "by: expected a base64 string");
    set_fails(m, "color", "PURPLE", "color: not a value of Color");
    set_fails(m, "color", "4", "color: 4 is not a value of Color");
    set_fails(m, "str", "bad \xff", "str: invalid UTF-8");
    set_fails(m, "str", "\xed\xa0\x80", "str: invalid UTF-8");
    set_fails(m, "str", "\xe2\x98", "str: invalid UTF-8");
    set_fails_len(m, "str", "a\0b", 3, "str: NUL characters are not allowed");
    set_fails(m, "ri32", "x", "ri32: expected an integer");
    set_fails(m, "rstr", "\xc0\x80", "rstr: invalid UTF-8");

    /* Nothing changed. */
    assert_int_equal(a->i32, 4);
    assert_string_equal(a->str, "keep");
    assert_int_equal(a->n_ri32, 0);
    assert_int_equal(a->n_rstr, 0);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void *flat_alloc(void *d, size_t n) { (void)d; return malloc(n); }
static void flat_free(void *d, void *p) { (void)d; free(p); }
static ProtobufCAllocator protobuf_c__allocator_for_tests = {flat_alloc, flat_free, NULL};

/* The flat fast path takes only what it can decode exactly as the full
 * parser does (the same message, byte for byte), and hands back all else. */
static void test_from_json_flat(void **state)
{
    static const struct {
        const char *json;
        int flat;
    } cases[] = {
        {"{\"token\":\"abc\"}", 0},
        {" \t{ \"token\" :\n\"abc-_.~ x\" }\r\n", 0},
        {"{}", 0},
        {"{\"token\":\"\"}", 0},
        {"{\"token\":\"a\\u0062c\"}", 1},         /* an escape */
        {"{\"token\":\"abc\",\"token\":\"x\"}", 1}, /* twice: the full parser refuses */
        {"{\"other\":\"x\"}", 1},                  /* unknown: the full parser ignores it */
        {"{\"token\":1}", 1},
        {"{\"token\":null}", 1},
        {"{\"token\":\"abc\"} x", 1},
        {"{\"token\":\"abc\",}", 1},
        {"{\"token\":\"\xc3\xa9\"}", 1},            /* not ASCII */
        {"{\"token\":\"0123456789abcdef\x7f\"}", 0}, /* DEL needs no escape */
        /* past the first eight bytes: an escape, a control, not ASCII */
        {"{\"token\":\"0123456789abcde\\u0066\"}", 1},
        {"{\"token\":\"0123456789abcdef\x1f\"}", 1},
        {"{\"token\":\"0123456789\xc3\xa9\"}", 1},
        {"{\"tokenx\":\"a\",\"token\":\"b\"}", 1},
        {"{\"toke\":\"a\"}", 1},
        {"{\"token\":\"abc\"", 1},
        {"[\"token\"]", 1},
        {"", 1},
    };
    const ProtobufCMessageDescriptor *d = &tokend__v1__verify_request__descriptor;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ProtobufCMessage *fast = NULL, *full = NULL;
        char err[TRANSCODE_ERRLEN];
        size_t len = strlen(cases[i].json);
        int rc = transcode_from_json_flat(d, cases[i].json, len, &protobuf_c__allocator_for_tests,
                                          &fast);
        if (rc != cases[i].flat)
            fail_msg("%s: flat %d, want %d", cases[i].json, rc, cases[i].flat);
        if (rc != 0) {
            assert_null(fast);
            continue;
        }
        assert_int_equal(transcode_from_json(d, cases[i].json, len, &full, err), 0);
        size_t n = protobuf_c_message_get_packed_size(fast);
        assert_int_equal(n, protobuf_c_message_get_packed_size(full));
        uint8_t *a = malloc(n + 1), *b = malloc(n + 1);
        protobuf_c_message_pack(fast, a);
        protobuf_c_message_pack(full, b);
        assert_memory_equal(a, b, n);
        free(a);
        free(b);
        protobuf_c_message_free_unpacked(fast, &protobuf_c__allocator_for_tests);
        protobuf_c_message_free_unpacked(full, NULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plans_concurrent),
        cmocka_unit_test(test_empty_body_is_default),
        cmocka_unit_test(test_full_roundtrip),
        cmocka_unit_test(test_output_in_field_number_order),
        cmocka_unit_test(test_null_and_unknown_keys),
        cmocka_unit_test(test_int32_types),
        cmocka_unit_test(test_uint32_types),
        cmocka_unit_test(test_int64_bounds),
        cmocka_unit_test(test_uint64_bounds),
        cmocka_unit_test(test_integer_strings_are_strict),
        cmocka_unit_test(test_float_and_double),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_invalid_utf8_and_nul),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_enum),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_repeated),
        cmocka_unit_test(test_oneof),
        cmocka_unit_test(test_proto3_optional),
        cmocka_unit_test(test_body_not_an_object),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_huge_numbers),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_long_path),
        cmocka_unit_test(test_body_is_not_nul_terminated),
        cmocka_unit_test(test_envelope),
        cmocka_unit_test(test_envelope_from_struct),
        cmocka_unit_test(test_envelope_large),
        cmocka_unit_test(test_writer_golden),
        cmocka_unit_test(test_writer_any_buffer),
        cmocka_unit_test(test_string_escaping),
        cmocka_unit_test(test_integer_output),
        cmocka_unit_test(test_set_field_scalars),
        cmocka_unit_test(test_set_field_repeated_and_oneof),
        cmocka_unit_test(test_set_field_errors),
        cmocka_unit_test(test_from_json_flat),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
