/* fuzz_messages.h - the message types the fuzzers pick from, in a fixed
 * order so a corpus file's first byte keeps naming the same type:
 * the request (input) type of every method of the services tokend serves
 * (tokend.v1.Tokend, then grpc.health.v1.Health, then the reflection
 * service), each once, in declaration order; with `with_store`, then the
 * records of proto/tokend/v1/store.proto. tests/fuzz/make_corpus.py
 * computes the same order from the .proto files. */
#ifndef TOKEND_FUZZ_MESSAGES_H
#define TOKEND_FUZZ_MESSAGES_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "tokend/v1/store.pb-c.h"
#include "tokend/v1/tokend.pb-c.h"

#define FUZZ_MESSAGES_MAX 64

static size_t fuzz_add(const ProtobufCMessageDescriptor **out, size_t n,
                       const ProtobufCMessageDescriptor *d)
{
    for (size_t i = 0; i < n; i++)
        if (out[i] == d)
            return n;
    if (n < FUZZ_MESSAGES_MAX)
        out[n++] = d;
    return n;
}

/* Fills out (FUZZ_MESSAGES_MAX entries); returns the count. */
static size_t fuzz_messages(const ProtobufCMessageDescriptor **out, int with_store)
{
    static const ProtobufCServiceDescriptor *const services[] = {
        &tokend__v1__tokend__descriptor,
        &grpc__health__v1__health__descriptor,
        &grpc__reflection__v1alpha__server_reflection__descriptor,
    };
    static const ProtobufCMessageDescriptor *const records[] = {
        &tokend__v1__store__app__descriptor,     &tokend__v1__store__user__descriptor,
        &tokend__v1__store__session__descriptor, &tokend__v1__store__device__descriptor,
        &tokend__v1__store__audit_entry__descriptor,
    };
    size_t n = 0;
    for (size_t s = 0; s < sizeof services / sizeof *services; s++)
        for (unsigned m = 0; m < services[s]->n_methods; m++)
            n = fuzz_add(out, n, services[s]->methods[m].input);
    if (with_store)
        for (size_t r = 0; r < sizeof records / sizeof *records; r++)
            n = fuzz_add(out, n, records[r]);
    return n;
}

#endif
