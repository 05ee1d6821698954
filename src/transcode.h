/* transcode.h - JSON <-> protobuf-c messages, driven only by the protobuf-c
 * descriptors, so every RPC gets the same JSON mapping with no per-message
 * code. jansson parses the JSON text; the writer is this file's own.
 *
 * Mapping: JSON keys are the schema's field names; int32/uint32/sint/fixed
 * as JSON numbers; 64-bit integers are numbers in output and number or
 * decimal string in input (a uint64 above INT64_MAX is a decimal string
 * both ways, as jansson's numbers stop at int64); bool true/false; enums by
 * name in input (number also accepted) and by name in output; float/double
 * as numbers, with "NaN", "Infinity" and "-Infinity" as strings; bytes as
 * standard base64 (url-safe and unpadded accepted on input); nested
 * messages as objects; repeated fields as arrays; of a oneof, only the
 * member that is set. Unknown keys are ignored; JSON null leaves the field
 * at its default. Duplicate keys, invalid UTF-8, NUL bytes, out-of-range
 * numbers, two members of one oneof and nesting deeper than
 * TRANSCODE_MAX_DEPTH are rejected.
 *
 * Every function returns 0 on success and -1 on error; on error `err`
 * (TRANSCODE_ERRLEN bytes) holds a sentence a person can act on, naming the
 * field, e.g. "user_id: expected an integer", "items[2].age: number out of
 * range for int32"; "body: ..." when the fault is the body as a whole. */
#ifndef TOKEND_TRANSCODE_H
#define TOKEND_TRANSCODE_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

#define TRANSCODE_ERRLEN 160
#define TRANSCODE_MAX_DEPTH 32

/* Once, before any thread uses jansson: its frees wipe what they free (a
 * JSON body's password). */
void transcode_init(void);

/* Parses `json` (len bytes, not NUL-terminated) into a new message of type
 * `desc`, allocated like protobuf_c_message_unpack does, so the caller frees
 * it with protobuf_c_message_free_unpacked(msg, NULL). An empty body (len 0)
 * gives an all-default message. The top level must be a JSON object. */
int transcode_from_json(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                        ProtobufCMessage **out, char *err);

/* The common case without jansson: a body that is one flat object whose
 * keys are all singular string fields of `desc`, each once, and whose
 * values are strings of ASCII without escapes or control characters
 * (Verify's {"token":"..."}). Gives the message transcode_from_json would, allocated
 * through `alloc` (free with protobuf_c_message_free_unpacked(msg, alloc)):
 * 0. Anything else, including every error, returns 1 without output: the
 * caller then uses transcode_from_json, which says what is wrong. */
int transcode_from_json_flat(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                             ProtobufCAllocator *alloc, ProtobufCMessage **out);

/* Sets one top-level field of `msg` (allocated as above) from a text value,
 * as an HTTP query parameter binds it: scalars parse from their text form
 * (the same rules as a JSON string value; bool is "true" or "false"); a
 * repeated field gets the value appended; a oneof member replaces the
 * member set before. Unknown names are ignored; message fields are an
 * error. */
int transcode_set_field(ProtobufCMessage *msg, const char *name, size_t name_len,
                        const char *value, size_t value_len, char *err);

/* Binds each name=value pair of a query string (query, len bytes, without
 * the '?'; url-decoded in place) with transcode_set_field. */
int transcode_set_query(ProtobufCMessage *msg, char *query, size_t len, char *err);

/* Writes the JSON envelope of the documented paths:
 * {"code":<code>,"message":<message or null>,"data":<data as JSON or null>}
 * Fields are all emitted in field-number order, defaults included, so
 * clients always see every documented name; a field with presence that is
 * unset (an absent submessage, a proto2/proto3 `optional` scalar) is null.
 * When `data_field` is non-NULL, "data" is that one field of `data` (an
 * array for a repeated field) instead of the whole message - the HttpRule's
 * response_body. Returns a malloc'd buffer (free()) and its length. */
int transcode_envelope(int code, const char *message, const ProtobufCMessage *data,
                       const char *data_field, char **out, size_t *out_len);
/* The same, written into buf (cap bytes) when it fits: *out is then buf,
 * else a malloc'd buffer the caller frees. */
int transcode_envelope_buf(int code, const char *message, const ProtobufCMessage *data,
                           const char *data_field, char *buf, size_t cap, char **out,
                           size_t *out_len);

#endif
