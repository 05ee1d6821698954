/* rpc_reflection.c - grpc.reflection.v1alpha: lists the services and hands
 * out the schema's file descriptors (with their dependencies) from the
 * descriptor set compiled into the binary, so grpcurl and friends need no
 * local copy of proto/. Reflection is rare: the set is decoded per call
 * rather than kept in a global. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "google/protobuf/descriptor.pb-c.h"
#include "router.h"
#include "rpc.h"
#include "rpc_handlers.h"

typedef Google__Protobuf__FileDescriptorSet fdset;
typedef Google__Protobuf__FileDescriptorProto fdproto;

static int has_prefix_name(const char *symbol, const char *pkg, const char *name)
{
    size_t pl = strlen(pkg), nl = strlen(name);
    if (pl) {
        if (strncmp(symbol, pkg, pl) != 0 || symbol[pl] != '.')
            return 0;
        symbol += pl + 1;
    }
    /* the name itself, or a member of it (Service.Method, Message.field) */
    return strncmp(symbol, name, nl) == 0 && (symbol[nl] == '\0' || symbol[nl] == '.');
}

static int defines(const fdproto *f, const char *symbol)
{
    const char *pkg = f->package ? f->package : "";
    for (size_t i = 0; i < f->n_service; i++)
        if (has_prefix_name(symbol, pkg, f->service[i]->name))
            return 1;
    for (size_t i = 0; i < f->n_message_type; i++)
        if (has_prefix_name(symbol, pkg, f->message_type[i]->name))
            return 1;
    for (size_t i = 0; i < f->n_enum_type; i++)
        if (has_prefix_name(symbol, pkg, f->enum_type[i]->name))
            return 1;
    return 0;
}

static const fdproto *by_name(const fdset *set, const char *name)
{
    for (size_t i = 0; i < set->n_file; i++)
        if (strcmp(set->file[i]->name, name) == 0)
            return set->file[i];
    return NULL;
}

/* Adds f and, first, everything it imports (each file once). */
static void add_with_deps(const fdset *set, const fdproto *f, const fdproto **out, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        if (out[i] == f)
            return;
    for (size_t i = 0; i < f->n_dependency; i++) {
        const fdproto *d = by_name(set, f->dependency[i]);
        if (d)
            add_with_deps(set, d, out, n);
    }
    out[(*n)++] = f;
}

static void answer_files(const fdset *set, const fdproto *f,
                         Grpc__Reflection__V1alpha__ServerReflectionResponse *res,
                         Grpc__Reflection__V1alpha__FileDescriptorResponse *fdr,
                         ProtobufCBinaryData *blobs, const fdproto **files)
{
    size_t n = 0;
    add_with_deps(set, f, files, &n);
    for (size_t i = 0; i < n; i++) {
        blobs[i].len = protobuf_c_message_get_packed_size(&files[i]->base);
        blobs[i].data = malloc(blobs[i].len ? blobs[i].len : 1);
        if (blobs[i].data)
            protobuf_c_message_pack(&files[i]->base, blobs[i].data);
        else
            blobs[i].len = 0;
    }
    fdr->n_file_descriptor_proto = n;
    fdr->file_descriptor_proto = blobs;
    res->message_response_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    res->file_descriptor_response = fdr;
}

void rpc_reflection_server_reflection_info(
    Grpc__Reflection__V1alpha__ServerReflection_Service *service,
    const Grpc__Reflection__V1alpha__ServerReflectionRequest *req,
    Grpc__Reflection__V1alpha__ServerReflectionResponse_Closure closure, void *call)
{
    fdset *set = google__protobuf__file_descriptor_set__unpack(NULL, tokend_protoset_len,
                                                               tokend_protoset);
    if (!set) {
        rpc_fail(call, ST_INTERNAL, "the embedded schema does not decode");
        return;
    }
    Grpc__Reflection__V1alpha__ServerReflectionResponse res =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__FileDescriptorResponse fdr =
        GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ListServiceResponse list =
        GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ErrorResponse err = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    ProtobufCBinaryData *blobs = calloc(set->n_file + 1, sizeof *blobs);
    const fdproto **files = calloc(set->n_file + 1, sizeof *files);
    Grpc__Reflection__V1alpha__ServiceResponse *svcs = calloc(set->n_file * 4 + 1, sizeof *svcs);
    Grpc__Reflection__V1alpha__ServiceResponse **svcp = calloc(set->n_file * 4 + 1, sizeof *svcp);
    char names[16][128];
    const fdproto *f = NULL;

    if (!blobs || !files || !svcs || !svcp) {
        rpc_fail(call, ST_RESOURCE_EXHAUSTED, "out of memory");
        goto done;
    }
    res.valid_host = req->host;
    res.original_request = (Grpc__Reflection__V1alpha__ServerReflectionRequest *)req;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        for (ProtobufCService *const *s = rpc_services(); *s && list.n_service < 16; s++) {
            Grpc__Reflection__V1alpha__ServiceResponse *r = &svcs[list.n_service];
            grpc__reflection__v1alpha__service_response__init(r);
            snprintf(names[list.n_service], sizeof names[0], "%s", (*s)->descriptor->name);
            r->name = names[list.n_service];
            svcp[list.n_service++] = r;
        }
        list.service = svcp;
        res.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        res.list_services_response = &list;
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        f = by_name(set, req->file_by_filename);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        for (size_t i = 0; i < set->n_file && !f; i++)
            if (defines(set->file[i], req->file_containing_symbol))
                f = set->file[i];
        break;
    default:
        break;
    }
    if (f && blobs && files) {
        answer_files(set, f, &res, &fdr, blobs, files);
    } else if (!res.message_response_case) {
        err.error_code = ST_NOT_FOUND;
        err.error_message = "not found (tokend answers list_services, file_by_filename and "
                            "file_containing_symbol)";
        res.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        res.error_response = &err;
    }
    closure(&res, call);
done:
    for (size_t i = 0; blobs && i < fdr.n_file_descriptor_proto; i++)
        free(blobs[i].data);
    free(blobs);
    free(files);
    free(svcs);
    free(svcp);
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
}
