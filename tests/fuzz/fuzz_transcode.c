/* fuzz_transcode.c - libFuzzer target of the JSON <-> protobuf-c mapping.
 *
 * Input: byte 0 picks the message type (low 7 bits, modulo the count of
 * fuzz_messages.h's request types) and the mode (bit 7):
 *   0  the rest is a JSON body: transcode_from_json, then
 *      transcode_envelope of the result (whole, and with one field as
 *      "data"); the envelope's "data" must parse back into the same type
 *      and give the same envelope again (the mapping is a fixed point).
 *      The fast path for flat bodies (transcode_from_json_flat, Verify's)
 *      must agree: whatever it takes, the full parser takes too and gives
 *      the same message (the same bytes packed).
 *   1  the rest is a query string: split and url-decoded as http.c's
 *      bind_query does (query_foreach), each pair bound with
 *      transcode_set_field onto an empty message, then the envelope.
 * Every failure must leave a NUL-terminated, non-empty sentence in err. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "fuzz_messages.h"
#include "grpc_frame.h"
#include "transcode.h"

static const ProtobufCMessageDescriptor *types[FUZZ_MESSAGES_MAX];
static size_t n_types;

static void check_err(const char *err, const char *what)
{
    if (!memchr(err, '\0', TRANSCODE_ERRLEN) || !err[0]) {
        fprintf(stderr, "%s failed without a message\n", what);
        abort();
    }
}

static char *envelope(const ProtobufCMessage *msg, const char *field, size_t *len)
{
    char *out = NULL;
    if (transcode_envelope(200, NULL, msg, field, &out, len) != 0) {
        /* every message the mapping reads in, it must be able to write out */
        fprintf(stderr, "transcode_envelope failed for %s (field %s)\n",
                msg->descriptor->name, field ? field : "-");
        abort();
    }
    if (!out || *len == 0 || memchr(out, '\0', *len)) {
        fprintf(stderr, "transcode_envelope gave an empty or NUL-holding body\n");
        abort();
    }
    return out;
}

/* The "data" member of an envelope, as JSON text (malloc'd). */
static char *data_of(const char *env, size_t len, size_t *out_len)
{
    json_error_t je;
    json_t *root = json_loadb(env, len, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root) || json_object_size(root) != 3 ||
        !json_is_integer(json_object_get(root, "code")) ||
        !json_is_null(json_object_get(root, "message")) || !json_object_get(root, "data")) {
        fprintf(stderr, "not an envelope: %.*s\n", (int)(len > 400 ? 400 : len), env);
        abort();
    }
    char *text = json_dumps(json_object_get(root, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(root);
    if (!text)
        abort();
    *out_len = strlen(text);
    return text;
}

static void round_trip(const ProtobufCMessageDescriptor *d, const ProtobufCMessage *msg)
{
    size_t len1, len2, dlen;
    char err[TRANSCODE_ERRLEN];
    ProtobufCMessage *again = NULL;
    char *env1 = envelope(msg, NULL, &len1);
    char *data = data_of(env1, len1, &dlen);
    if (transcode_from_json(d, data, dlen, &again, err) != 0) {
        fprintf(stderr, "%s: its own envelope does not parse back: %s\n  data: %s\n", d->name,
                err, data);
        abort();
    }
    char *env2 = envelope(again, NULL, &len2);
    if (len1 != len2 || memcmp(env1, env2, len1) != 0) {
        fprintf(stderr, "%s: envelope changed on the round trip:\n  %.*s\n  %.*s\n", d->name,
                (int)len1, env1, (int)len2, env2);
        abort();
    }
    protobuf_c_message_free_unpacked(again, NULL);
    free(data);
    free(env1);
    free(env2);
}

static void *heap_alloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static void heap_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static ProtobufCAllocator heap = {heap_alloc, heap_free, NULL};

typedef struct {
    ProtobufCMessage *msg;
    char err[TRANSCODE_ERRLEN];
    size_t pairs;
} binding;

static int bind_one(void *arg, const char *name, size_t name_len, const char *value,
                    size_t value_len)
{
    binding *b = arg;
    if (name_len == 0)
        abort();  /* query_foreach skips empty names */
    b->pairs++;
    if (transcode_set_field(b->msg, name, name_len, value, value_len, b->err) != 0) {
        check_err(b->err, "transcode_set_field");
        return -1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!n_types)
        n_types = fuzz_messages(types, 0);
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = types[(data[0] & 0x7F) % n_types];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    char err[TRANSCODE_ERRLEN];
    ProtobufCMessage *msg = NULL;

    if (!(data[0] & 0x80)) {
        ProtobufCMessage *flat = NULL;
        int flat_rc = transcode_from_json_flat(d, body, len, &heap, &flat);
        if (transcode_from_json(d, body, len, &msg, err) != 0) {
            check_err(err, "transcode_from_json");
            if (msg)
                abort();  /* no message on failure */
            if (flat_rc == 0) {
                fprintf(stderr, "the flat fast path took a body the full parser refuses: %s\n", err);
                abort();
            }
            return 0;
        }
        if (flat_rc == 0) {
            size_t n1 = protobuf_c_message_get_packed_size(msg);
            size_t n2 = protobuf_c_message_get_packed_size(flat);
            uint8_t *b1 = malloc(n1 + 1), *b2 = malloc(n2 + 1);
            if (!b1 || !b2)
                abort();
            protobuf_c_message_pack(msg, b1);
            protobuf_c_message_pack(flat, b2);
            if (n1 != n2 || memcmp(b1, b2, n1) != 0) {
                fprintf(stderr, "the flat fast path and the full parser disagree on %s\n", d->name);
                abort();
            }
            free(b1);
            free(b2);
            protobuf_c_message_free_unpacked(flat, &heap);
        }
        if (!msg || msg->descriptor != d || !protobuf_c_message_check(msg))
            abort();
        round_trip(d, msg);
        if (d->n_fields) {
            size_t elen;
            char *e = envelope(msg, d->fields[len % d->n_fields].name, &elen);
            free(e);
        }
        protobuf_c_message_free_unpacked(msg, NULL);
        return 0;
    }

    binding b = {0};
    if (transcode_from_json(d, NULL, 0, &b.msg, err) != 0 || !b.msg)
        abort();  /* an empty body is an all-default message */
    char *q = malloc(len + 1);  /* as bind_query: len + 1 bytes, the last unset */
    if (!q)
        return 0;
    memcpy(q, body, len);
    if (query_foreach(q, len, bind_one, &b) == 0) {
        if (!protobuf_c_message_check(b.msg))
            abort();
        round_trip(d, b.msg);
    }
    free(q);
    protobuf_c_message_free_unpacked(b.msg, NULL);
    return 0;
}
