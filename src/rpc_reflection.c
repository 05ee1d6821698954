/* rpc_reflection.c - grpc.reflection.v1alpha: lists the services and hands
 * out the file descriptors of their schema (with their dependencies) from
 * the descriptor set compiled into the binary, so grpcurl and friends need
 * no local copy of proto/. Only the files the public services are defined
 * in, and what those import, are served: store.proto describes the records
 * in LMDB, which are nobody else's business.
 *
 * Anyone may call it, 100 requests a stream, on the event loop: an answer
 * must cost little and grow only with what was asked. So the set is decoded
 * and each served file packed once, at first use; a stream gets each file at
 * most once (as grpc's C++ server does: a later answer leaves out what the
 * stream already has); and a stream's answers stop at --max-body bytes
 * beyond the files (RESOURCE_EXHAUSTED), which only echoes of huge requests
 * reach. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "router.h"
#include "rpc.h"
#include "rpc_handlers.h"

typedef Google__Protobuf__FileDescriptorSet fdset;
typedef Google__Protobuf__FileDescriptorProto fdproto;
typedef Google__Protobuf__DescriptorProto msgproto;
typedef Google__Protobuf__EnumDescriptorProto enumproto;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse refl_response;

#define SERVED_MAX 32   /* one bit each in rpc_call.stream[0] */
#define SERVICES_MAX 16

typedef struct {
    const fdproto *proto;
    ProtobufCBinaryData packed;
    uint32_t with_deps;   /* its bit and those of all it imports, transitively */
} served_file;

static struct {
    fdset *set;
    served_file file[SERVED_MAX];   /* each after the files it imports */
    size_t n, bytes;                /* n 0: the set did not load */
} refl;
static pthread_once_t refl_once = PTHREAD_ONCE_INIT;

static const fdproto *in_set(const char *name)
{
    for (size_t i = 0; i < refl.set->n_file; i++)
        if (strcmp(refl.set->file[i]->name, name) == 0)
            return refl.set->file[i];
    return NULL;
}

/* Serves f after what it imports; its index, or -1. */
static int serve_file(const fdproto *f)
{
    uint32_t bits = 0;
    for (size_t i = 0; i < refl.n; i++)
        if (refl.file[i].proto == f)
            return (int)i;
    for (size_t i = 0; i < f->n_dependency; i++) {
        const fdproto *d = in_set(f->dependency[i]);
        int j = d ? serve_file(d) : -1;
        if (j < 0)
            return -1;
        bits |= refl.file[j].with_deps;
    }
    if (refl.n == SERVED_MAX)
        return -1;
    served_file *s = &refl.file[refl.n];
    s->packed.len = protobuf_c_message_get_packed_size(&f->base);
    if (!(s->packed.data = malloc(s->packed.len + 1)))
        return -1;
    protobuf_c_message_pack(&f->base, s->packed.data);
    s->proto = f;
    s->with_deps = bits | 1u << refl.n;
    refl.bytes += s->packed.len;
    return (int)refl.n++;
}

static void load(void)
{
    refl.set = google__protobuf__file_descriptor_set__unpack(NULL, tokend_protoset_len,
                                                             tokend_protoset);
    for (ProtobufCService *const *s = rpc_services(); refl.set && *s; s++) {
        const ProtobufCServiceDescriptor *sd = (*s)->descriptor;
        int found = -1;
        for (size_t i = 0; i < refl.set->n_file && found < 0; i++) {
            const fdproto *f = refl.set->file[i];
            for (size_t j = 0; j < f->n_service && found < 0; j++)
                if (strcmp(f->package ? f->package : "", sd->package) == 0 &&
                    strcmp(f->service[j]->name, sd->short_name) == 0)
                    found = serve_file(f);
        }
        if (found < 0) {
            refl.n = 0;
            return;
        }
    }
}

/* What follows "prefix." in name, "" for name itself, NULL otherwise. */
static const char *member(const char *name, const char *prefix)
{
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n) != 0 || (name[n] && name[n] != '.'))
        return NULL;
    return name[n] ? name + n + 1 : name + n;
}

/* Whether name, relative to a scope, is one of its messages or enums, an
 * enum's value (a sibling of its enum, as protobuf scopes them), or a
 * field, extension or nested type of one of its messages. */
static int in_scope(const char *name, size_t n_msg, msgproto *const *msg, size_t n_enum,
                    enumproto *const *en)
{
    for (size_t i = 0; i < n_enum; i++) {
        if (strcmp(name, en[i]->name) == 0)
            return 1;
        for (size_t j = 0; j < en[i]->n_value; j++)
            if (strcmp(name, en[i]->value[j]->name) == 0)
                return 1;
    }
    for (size_t i = 0; i < n_msg; i++) {
        const msgproto *m = msg[i];
        const char *rest = member(name, m->name);
        if (!rest)
            continue;
        if (!*rest)
            return 1;
        for (size_t j = 0; j < m->n_field; j++)
            if (strcmp(rest, m->field[j]->name) == 0)
                return 1;
        for (size_t j = 0; j < m->n_extension; j++)
            if (strcmp(rest, m->extension[j]->name) == 0)
                return 1;
        if (in_scope(rest, m->n_nested_type, m->nested_type, m->n_enum_type, m->enum_type))
            return 1;
    }
    return 0;
}

static int defines(const fdproto *f, const char *symbol)
{
    const char *name = f->package && f->package[0] ? member(symbol, f->package) : symbol;
    if (!name || !*name)
        return 0;
    for (size_t i = 0; i < f->n_service; i++) {
        const char *rest = member(name, f->service[i]->name);
        if (rest && !*rest)
            return 1;
        for (size_t j = 0; rest && j < f->service[i]->n_method; j++)
            if (strcmp(rest, f->service[i]->method[j]->name) == 0)
                return 1;
    }
    for (size_t i = 0; i < f->n_extension; i++)
        if (strcmp(name, f->extension[i]->name) == 0)
            return 1;
    return in_scope(name, f->n_message_type, f->message_type, f->n_enum_type, f->enum_type);
}

void rpc_reflection_server_reflection_info(
    Grpc__Reflection__V1alpha__ServerReflection_Service *service,
    const Grpc__Reflection__V1alpha__ServerReflectionRequest *req,
    Grpc__Reflection__V1alpha__ServerReflectionResponse_Closure closure, void *data)
{
    rpc_call *call = data;
    uint32_t *sent = &call->stream[0], *answered = &call->stream[1];
    refl_response res = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__FileDescriptorResponse fdr =
        GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ListServiceResponse list =
        GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ErrorResponse err = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ServiceResponse svcs[SERVICES_MAX], *svcp[SERVICES_MAX];
    ProtobufCBinaryData blobs[SERVED_MAX];
    uint32_t want = 0;
    size_t f = SIZE_MAX;

    pthread_once(&refl_once, load);
    if (!refl.n) {
        rpc_fail(call, ST_INTERNAL, "the embedded schema does not decode");
        return;
    }
    res.valid_host = req->host;
    res.original_request = (Grpc__Reflection__V1alpha__ServerReflectionRequest *)req;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        for (ProtobufCService *const *s = rpc_services(); *s && list.n_service < SERVICES_MAX; s++) {
            Grpc__Reflection__V1alpha__ServiceResponse *r = &svcs[list.n_service];
            grpc__reflection__v1alpha__service_response__init(r);
            r->name = (char *)(*s)->descriptor->name;
            svcp[list.n_service++] = r;
        }
        list.service = svcp;
        res.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        res.list_services_response = &list;
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        for (size_t i = 0; i < refl.n && f == SIZE_MAX; i++)
            if (strcmp(refl.file[i].proto->name, req->file_by_filename) == 0)
                f = i;
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        for (size_t i = 0; i < refl.n && f == SIZE_MAX; i++)
            if (defines(refl.file[i].proto, req->file_containing_symbol))
                f = i;
        break;
    default:
        break;
    }
    if (f != SIZE_MAX) {
        want = refl.file[f].with_deps & ~*sent;
        for (size_t i = 0; i < refl.n; i++)
            if (want & 1u << i)
                blobs[fdr.n_file_descriptor_proto++] = refl.file[i].packed;
        fdr.file_descriptor_proto = blobs;
        res.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        res.file_descriptor_response = &fdr;
    } else if (!res.message_response_case) {
        err.error_code = ST_NOT_FOUND;
        err.error_message = "not found (tokend answers list_services, file_by_filename and "
                            "file_containing_symbol)";
        res.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        res.error_response = &err;
    }
    size_t size = protobuf_c_message_get_packed_size(&res.base);
    size_t cap = config_max_body(call->ctx->config) + refl.bytes;
    if (*answered + size > cap) {
        rpc_fail(call, ST_RESOURCE_EXHAUSTED,
                 "this reflection stream's answers would pass %zu bytes (--max-body beyond the "
                 "schema's files): send fewer or smaller requests per stream", cap);
        return;
    }
    *answered += (uint32_t)size;
    *sent |= want;
    closure(&res, call);
}
