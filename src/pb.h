/* pb.h - protobuf wire encoding and decoding, with a one-pass path for flat
 * messages.
 *
 * protobuf-c walks a message's descriptor twice to pack it (size, then
 * bytes) and scans the input twice to unpack it; on Verify that was a tenth
 * of the call. Most of tokend's messages are flat: proto3 scalars, strings
 * and bytes, field numbers below 64, nothing repeated, nested or in a
 * oneof (a session record, Verify's request and reply). Those are packed
 * and unpacked here in one pass, to exactly the bytes and the message
 * protobuf-c gives (tests/unit/test_pb.c and fuzz_protobuf compare them);
 * everything else goes to protobuf-c. */
#ifndef TOKEND_PB_H
#define TOKEND_PB_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

/* Whether pb_* take desc's messages the fast way. */
int pb_is_flat(const ProtobufCMessageDescriptor *desc);

/* protobuf_c_message_get_packed_size and protobuf_c_message_pack. */
size_t pb_size(const ProtobufCMessage *m);
size_t pb_pack(const ProtobufCMessage *m, uint8_t *out);
/* One pass for a flat message into cap bytes: its size, or SIZE_MAX when it
 * does not fit or is not flat (then use pb_size and pb_pack). */
size_t pb_pack_into(const ProtobufCMessage *m, uint8_t *out, size_t cap);

/* protobuf_c_message_unpack. The fast way needs an allocator (the callers'
 * arenas); with alloc NULL it is protobuf-c's. Anything the fast way does
 * not expect (an unknown field number, another wire type, a truncated
 * value) is left to protobuf-c, which knows every case. Free the
 * message with protobuf_c_message_free_unpacked, as always. */
ProtobufCMessage *pb_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                            size_t len, const uint8_t *data);
/* The same, but the fast way leaves the string and bytes fields whose
 * numbers are set in `skip` (bit n: field n) empty instead of copying them:
 * for a reader that needs neither their bytes nor a copy of a secret. */
ProtobufCMessage *pb_unpack_skip(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                                 size_t len, const uint8_t *data, uint64_t skip);

/* pb_unpack for a request from outside, whose strings must be UTF-8 (the
 * binary and gRPC forms). The fast way checks each string field as it
 * copies it, while the bytes are in cache, and sets *checked: then every
 * string of the message is known to be UTF-8 without a NUL
 * (utf8_copy_valid; a flat message has no strings elsewhere). A string
 * that is not, like anything else the fast way does not expect, leaves the
 * message to protobuf-c, and *checked is 0: the caller checks it
 * (pb_check_strings, which names the field), as it checks any message not
 * decoded the fast way. */
ProtobufCMessage *pb_unpack_text(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                                 size_t len, const uint8_t *data, int *checked);

/* Whether every string field of the message in data (submessages' too) is
 * well-formed UTF-8 without a NUL, as the wire has it: a C string would be
 * cut at the NUL, so what a filter saw would not be what tokend uses. 0, or
 * -1 with a sentence naming the field in err. Bytes that do not parse are
 * protobuf-c's to refuse: 0. */
#define PB_DEPTH_MAX 32
int pb_check_strings(const ProtobufCMessageDescriptor *desc, size_t len, const uint8_t *data, char *err,
                     size_t errlen);

/* A bump allocator over the caller's buffer (16-byte aligned), for
 * messages decoded for one call: nothing is freed one by one, the buffer
 * goes whole. An allocation that does not fit gets NULL (the decode fails).
 * Returns the allocator over a; a->used = 0 empties it again. */
typedef struct {
    uint8_t *buf;
    size_t cap, used;
} pb_arena;
ProtobufCAllocator pb_arena_init(pb_arena *a, void *buf, size_t cap);

#endif
