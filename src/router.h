/* router.h - which RPC a request names. Built once at start-up from the
 * descriptor set compiled from proto/ (embedded in the binary): every
 * method is reachable by its gRPC path, and by the HTTP verb and path its
 * (google.api.http) option declares. No path is written in C. */
#ifndef TOKEND_ROUTER_H
#define TOKEND_ROUTER_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

typedef struct {
    ProtobufCService *service;
    unsigned method_index;
    const ProtobufCMethodDescriptor *method;
    char grpc_path[128];          /* "/tokend.v1.Tokend/TokenById" */
    size_t grpc_path_len;
    int streaming;                /* client or server streaming */
    size_t index;                 /* 0 .. router_count() - 1: metrics are kept per RPC */
} router_rpc;

typedef struct {
    const router_rpc *rpc;
    size_t rpc_index;
    char verb[8];                 /* "GET", "POST", "PUT", "DELETE", "PATCH" */
    size_t verb_len;
    char *path;
    size_t path_len;
    int body;                     /* the JSON body binds to the request ("*") */
    char *response_body;          /* NULL, or the reply field that is "data" */
} router_http;

typedef struct router router;

enum { ROUTER_FOUND = 0, ROUTER_NO_PATH = -1, ROUTER_NO_VERB = -2 };

/* Builds the routes for `services` (NULL-terminated) from the serialized
 * FileDescriptorSet. Returns 0, or -1 with err set. */
int router_create(router **out, ProtobufCService *const *services, const uint8_t *protoset,
                  size_t len, char *err, size_t errlen);
void router_free(router *r);

const router_rpc *router_grpc(const router *r, const char *path, size_t len);
/* ROUTER_FOUND, ROUTER_NO_PATH or ROUTER_NO_VERB (path known, verb not).
 * HEAD finds a GET route. */
int router_http_find(const router *r, const char *verb, size_t verb_len, const char *path,
                     size_t path_len, const router_http **out);
/* How many RPCs, and the i-th (metrics name them: router_rpc.index). */
size_t router_count(const router *r);
const router_rpc *router_at(const router *r, size_t i);
/* Every path a request may name (each RPC's gRPC path, then the HTTP
 * paths, all literal), up to max of them into out:
 * how many there are. */
size_t router_paths(const router *r, const char **out, size_t max);
/* The verbs a path accepts, for an Allow header ("GET, HEAD, POST"). */
void router_allowed(const router *r, const char *path, size_t path_len, char *out, size_t len);

/* The embedded descriptor set (gen/tokend.protoset). */
extern const unsigned char tokend_protoset[];
extern const size_t tokend_protoset_len;

#endif
