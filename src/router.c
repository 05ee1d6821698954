/* router.c - routes from the schema.
 *
 * protobuf-c's descriptors carry no options, so the HTTP rules are read
 * from the FileDescriptorSet protoc writes: each MethodOptions keeps the
 * standard (google.api.http) extension among its unknown fields, which
 * unpack as a google.api.HttpRule (proto/google/api/http.proto). Paths are
 * literal: a {field} template is refused at start-up rather than served
 * wrong. Lookups are linear over a few dozen routes, comparing lengths
 * first: cheaper than hashing at this size, and done once per request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "google/protobuf/descriptor.pb-c.h"
#include "google/api/http.pb-c.h"
#include "router.h"

/* extend google.protobuf.MethodOptions { HttpRule http = 72295728; } */
#define HTTP_RULE_FIELD 72295728

struct router {
    router_rpc *rpcs;
    size_t nrpcs;
    router_http *https;
    size_t nhttps, cap_https;
};

static int add_http(router *r, size_t rpc, const Google__Api__HttpRule *rule)
{
    const char *verb = NULL, *path = NULL;
    switch (rule->pattern_case) {
    case GOOGLE__API__HTTP_RULE__PATTERN_GET: verb = "GET", path = rule->get; break;
    case GOOGLE__API__HTTP_RULE__PATTERN_PUT: verb = "PUT", path = rule->put; break;
    case GOOGLE__API__HTTP_RULE__PATTERN_POST: verb = "POST", path = rule->post; break;
    case GOOGLE__API__HTTP_RULE__PATTERN_DELETE: verb = "DELETE", path = rule->delete_; break;
    case GOOGLE__API__HTTP_RULE__PATTERN_PATCH: verb = "PATCH", path = rule->patch; break;
    case GOOGLE__API__HTTP_RULE__PATTERN_CUSTOM:
        /* A custom verb ("HEAD", ...); "*" (any verb) is not served. */
        if (rule->custom && rule->custom->kind &&
            strlen(rule->custom->kind) < sizeof r->https[0].verb &&
            strcmp(rule->custom->kind, "*") != 0)
            verb = rule->custom->kind, path = rule->custom->path;
        else
            return -1;
        break;
    default: break;
    }
    if (verb && path && *path) {
        /* Not implemented: path templates, a body bound to one field. */
        if (strchr(path, '{') || (*rule->body && strcmp(rule->body, "*") != 0))
            return -1;
        if (r->nhttps == r->cap_https) {
            size_t cap = r->cap_https ? r->cap_https * 2 : 32;
            router_http *n = realloc(r->https, cap * sizeof *n);
            if (!n)
                return -1;
            r->https = n, r->cap_https = cap;
        }
        router_http *h = &r->https[r->nhttps++];
        memset(h, 0, sizeof *h);
        h->rpc_index = rpc;
        strcpy(h->verb, verb);
        h->verb_len = strlen(verb);
        h->path = strdup(path);
        h->path_len = strlen(path);
        h->body = strcmp(rule->body, "*") == 0;
        h->response_body = *rule->response_body ? strdup(rule->response_body) : NULL;
    }
    for (size_t i = 0; i < rule->n_additional_bindings; i++)
        if (add_http(r, rpc, rule->additional_bindings[i]) != 0)
            return -1;
    return 0;
}

static int add_rules(router *r, size_t rpc, const Google__Protobuf__MethodOptions *opt)
{
    if (!opt)
        return 0;
    for (unsigned i = 0; i < opt->base.n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *f = &opt->base.unknown_fields[i];
        if (f->tag != HTTP_RULE_FIELD)
            continue;
        /* protobuf-c keeps an unknown length-delimited field with its
         * varint length prefix: step over it. */
        size_t skip = 0;
        while (skip < f->len && (f->data[skip] & 0x80))
            skip++;
        if (f->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED || ++skip > f->len)
            return -1;
        Google__Api__HttpRule *rule =
            google__api__http_rule__unpack(NULL, f->len - skip, f->data + skip);
        if (!rule)
            return -1;
        int rc = add_http(r, rpc, rule);
        google__api__http_rule__free_unpacked(rule, NULL);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static ProtobufCService *find_service(ProtobufCService *const *services, const char *name)
{
    for (; *services; services++)
        if (strcmp((*services)->descriptor->name, name) == 0)
            return *services;
    return NULL;
}

static int add_service(router *r, ProtobufCService *svc,
                       const Google__Protobuf__ServiceDescriptorProto *sp, char *err, size_t errlen)
{
    const ProtobufCServiceDescriptor *sd = svc->descriptor;
    router_rpc *rpcs = realloc(r->rpcs, (r->nrpcs + sp->n_method) * sizeof *rpcs);
    if (!rpcs)
        return -1;
    r->rpcs = rpcs;
    for (size_t i = 0; i < sp->n_method; i++) {
        const ProtobufCMethodDescriptor *m =
            protobuf_c_service_descriptor_get_method_by_name(sd, sp->method[i]->name);
        if (!m) {
            snprintf(err, errlen, "method %s.%s is in the schema but not in gen/", sd->name,
                     sp->method[i]->name);
            return -1;
        }
        router_rpc *rpc = &r->rpcs[r->nrpcs];
        rpc->index = r->nrpcs++;
        rpc->service = svc;
        rpc->method = m;
        rpc->method_index = (unsigned)(m - sd->methods);
        rpc->streaming = sp->method[i]->server_streaming || sp->method[i]->client_streaming;
        snprintf(rpc->grpc_path, sizeof rpc->grpc_path, "/%s/%s", sd->name, m->name);
        rpc->grpc_path_len = strlen(rpc->grpc_path);
    }
    return 0;
}

int router_create(router **out, ProtobufCService *const *services, const uint8_t *protoset,
                  size_t len, char *err, size_t errlen)
{
    Google__Protobuf__FileDescriptorSet *set =
        google__protobuf__file_descriptor_set__unpack(NULL, len, protoset);
    router *r = calloc(1, sizeof *r);
    size_t first_rpc;
    int rc = -1;

    if (!set || !r) {
        snprintf(err, errlen, "the embedded descriptor set does not decode");
        goto done;
    }
    for (size_t f = 0; f < set->n_file; f++) {
        const Google__Protobuf__FileDescriptorProto *fp = set->file[f];
        for (size_t s = 0; s < fp->n_service; s++) {
            char name[256];
            snprintf(name, sizeof name, "%s%s%s", fp->package ? fp->package : "",
                     fp->package ? "." : "", fp->service[s]->name);
            ProtobufCService *svc = find_service(services, name);
            if (!svc)
                continue;  /* declared, not served by this binary */
            first_rpc = r->nrpcs;
            if (add_service(r, svc, fp->service[s], err, errlen) != 0)
                goto done;
            for (size_t m = 0; m < fp->service[s]->n_method; m++)
                if (add_rules(r, first_rpc + m, fp->service[s]->method[m]->options) != 0) {
                    snprintf(err, errlen, "bad (google.api.http) option on %s", name);
                    goto done;
                }
        }
    }
    /* rpcs moved while growing: point the HTTP routes at them only now. */
    for (size_t i = 0; i < r->nhttps; i++)
        r->https[i].rpc = &r->rpcs[r->https[i].rpc_index];
    rc = 0;
done:
    if (set)
        google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    if (rc != 0) {
        router_free(r);
        return -1;
    }
    *out = r;
    return 0;
}

void router_free(router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nhttps; i++) {
        free(r->https[i].path);
        free(r->https[i].response_body);
    }
    free(r->https);
    free(r->rpcs);
    free(r);
}

size_t router_count(const router *r)
{
    return r->nrpcs;
}

const router_rpc *router_at(const router *r, size_t i)
{
    return i < r->nrpcs ? &r->rpcs[i] : NULL;
}

size_t router_paths(const router *r, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i != r->nrpcs; i++, n++)
        if (n < max)
            out[n] = r->rpcs[i].grpc_path;
    for (size_t i = 0; i != r->nhttps; i++, n++)
        if (n < max)
            out[n] = r->https[i].path;
    return n;
}

const router_rpc *router_grpc(const router *r, const char *path, size_t len)
{
    for (size_t i = 0; i < r->nrpcs; i++)
        if (r->rpcs[i].grpc_path_len == len && memcmp(r->rpcs[i].grpc_path, path, len) == 0)
            return &r->rpcs[i];
    return NULL;
}

static int path_is(const router_http *h, const char *path, size_t len)
{
    return h->path_len == len && memcmp(h->path, path, len) == 0;
}

int router_http_find(const router *r, const char *verb, size_t verb_len, const char *path,
                     size_t path_len, const router_http **out)
{
    int rc = ROUTER_NO_PATH;
    for (size_t i = 0; i < r->nhttps; i++) {
        const router_http *h = &r->https[i];
        if (!path_is(h, path, path_len))
            continue;
        rc = ROUTER_NO_VERB;
        /* HEAD is GET without the content (RFC 9110 9.3.2): GET routes only read */
        if ((h->verb_len == verb_len && memcmp(h->verb, verb, verb_len) == 0) ||
            (verb_len == 4 && memcmp(verb, "HEAD", 4) == 0 && strcmp(h->verb, "GET") == 0)) {
            *out = h;
            return ROUTER_FOUND;
        }
    }
    return rc;
}

void router_allowed(const router *r, const char *path, size_t path_len, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->nhttps && o < len; i++)
        if (path_is(&r->https[i], path, path_len))
            o += snprintf(out + o, len - o, "%s%s%s", o ? ", " : "", r->https[i].verb,
                          strcmp(r->https[i].verb, "GET") == 0 ? ", HEAD" : "");
}
