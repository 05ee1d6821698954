/* http.c - the HTTP layer: one handler, four wire forms.
 *
 *   application/json            the documented paths, {code,message,data} envelope
 *   application/x-protobuf      the same paths, request/reply messages as bytes
 *   application/grpc[+proto]    /<package>.<Service>/<Method>, HTTP/2 only
 *   application/grpc-web[-text] the gRPC paths over HTTP/1.1 or HTTP/2
 *
 * A call outlives its request when the client goes away during slow work:
 * a guard in the request's memory pool tells the call, and the answer is
 * then dropped instead of written to freed memory. */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "config.h"
#include "crypto.h"
#include "grpc_frame.h"
#include "h2_reply.h"
#include "http.h"
#include "http_obs.h"
#include "pb.h"
#include "rpc.h"
#include "server.h"
#include "transcode.h"
#include "tokend/v1/tokend.pb-c.h"

enum { FORM_JSON, FORM_PROTO, FORM_GRPC, FORM_GRPC_WEB, FORM_GRPC_WEB_TEXT };

typedef struct {
    h2o_handler_t super;
    tokend_ctx *ctx;
    const router *router;
    const metrics_registry *metrics;   /* GET /metrics is served here, or NULL */
} http_handler;

typedef struct wire_call wire_call;
typedef struct {
    wire_call *call;
} guard;

/* The request message is decoded into the call's own arena (requests are
 * small); what does not fit goes to the heap, and the arena's free sends
 * only those pointers on to free(). */
#define CALL_ARENA 1024

struct wire_call {
    rpc_call call;                 /* first: handlers get &wc->call */
    /* Right after the call's token (its last field): free_call wipes the
     * token and what the request held in one go. */
    _Alignas(16) uint8_t arena[CALL_ARENA];
    h2o_req_t *req;                /* NULL once the client has gone */
    guard *guard;                  /* only for a call that outlives on_req */
    int *answered;                 /* on_req's flag while it runs invoke */
    int form;
    int heap;                      /* some of request is not in arena: free it */
    const router_rpc *rpc;
    const router_http *http;
    ProtobufCMessage *request;
    http_obs obs;                  /* metrics, request id, log line (http_obs.h) */
    ProtobufCAllocator alloc;      /* over arena, for request */
    wire_call *next_free;
    size_t arena_used;
};
_Static_assert(offsetof(wire_call, arena) - offsetof(wire_call, call.access_token) <
                   RPC_TOKEN_MAX + 16,
               "the arena follows the call's token (free_call wipes both at once)");

#define CORS_ALLOW_HEADERS                                                                  \
    "content-type,x-grpc-web,x-user-agent,grpc-timeout,grpc-encoding,grpc-accept-encoding,"     \
    "access-token,app_id,user_id,group_id,platform,x-request-id"

/* --- responses ------------------------------------------------------------ */

/* value: a literal or in req's pool */
static void add_header(h2o_req_t *req, const h2o_token_t *token, const char *value)
{
    h2_reply_add_token(req, token, value, strlen(value));
}

static void add_header_str(h2o_req_t *req, const char *name, const char *value, size_t len)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, value, len);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 499: return "Client Closed Request";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Internal Server Error";
    }
}

static void send_body(h2o_req_t *req, int status, const char *content_type, const void *body,
                      size_t len)
{
    req->res.status = status;
    req->res.reason = reason(status);
    /* Without a length h2o 2.2 chunks the body and drops HTTP/1.1 keep-alive
     * on any status but 200: every 401 would cost a new connection. */
    req->res.content_length = len;
    add_header(req, H2O_TOKEN_CONTENT_TYPE, content_type);
    /* Credentials travel in headers, never cookies: any origin may call. */
    add_header(req, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    /* Replies carry tokens, keys and users' details: no cache, shared or
     * the browser's, may keep one (RFC 9111 5.2.2.5; RFC 6749 5.1 asks it
     * of token replies). Native gRPC is never cached; its replies go
     * without. */
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-store");
    if (h2_reply_send(req, h2o_iovec_init(body, len), NULL, 0) != 0)
        h2o_send_inline(req, body, len);
}

static int is_grpc_web(int form)
{
    return form == FORM_GRPC_WEB || form == FORM_GRPC_WEB_TEXT;
}

/* The gRPC frame of a reply: in buf (GRPC_FRAME_SIZE(FRAME_GUESS) bytes,
 * the caller's stack: send_grpc copies what it sends) when it fits, packed
 * in one pass (pb_pack_into), else in the request's pool. */
#define FRAME_GUESS 512

static uint8_t *frame_reply(h2o_mem_pool_t *pool, const ProtobufCMessage *reply, uint8_t *buf,
                            size_t *out_len)
{
    size_t n = pb_pack_into(reply, buf + GRPC_FRAME_HEADER, FRAME_GUESS);
    if (n != SIZE_MAX) {
        grpc_frame_header(buf, 0, n);
        *out_len = GRPC_FRAME_SIZE(n);
        return buf;
    }
    n = pb_size(reply);
    buf = h2o_mem_alloc_pool(pool, GRPC_FRAME_SIZE(n));
    *out_len = grpc_frame_write(buf, 0, reply, NULL, n);
    return buf;
}

/* Native gRPC: the frames, then the trailers (h2_reply_send copies both). */
static void send_native(h2o_req_t *req, h2o_iovec_t frames, const h2o_header_t *trailers, size_t n)
{
    h2_reply_add_token(req, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("application/grpc"));
    if (h2_reply_send(req, frames, trailers, n) != 0)
        h2o_send_error_503(req, "Service Unavailable", "the HTTP/2 stream is closing", 0);
}

/* Sends `frames` (length-prefixed messages, maybe none; copied, so they may
 * be on the caller's stack) and the status. */
static void send_grpc(h2o_req_t *req, int form, status_code st, const char *message,
                      h2o_iovec_t frames)
{
    req->res.status = 200;
    req->res.reason = "OK";
    if (form == FORM_GRPC && st == ST_OK) {
        /* Nearly every reply: grpc-status 0 alone, the trailer whose block
         * h2_reply_send has made once. */
        send_native(req, frames, h2_reply_grpc_ok, 1);
        return;
    }
    char code[12], msg[RPC_MESSAGE_MAX * 3 + 1];
    /* statuses are 0..16: two digits at most, no snprintf */
    unsigned sc = (unsigned)st < 100 ? (unsigned)st : 2;
    size_t code_len = sc >= 10 ? 2 : 1;
    code[0] = (char)(sc >= 10 ? '0' + sc / 10 : '0' + sc);
    code[1] = (char)('0' + sc % 10);
    code[code_len] = '\0';
    size_t msg_len = st == ST_OK || !message ? 0 : grpc_percent_encode(msg, message, sizeof msg);
    size_t data_len = frames.len;
    uint8_t *data = (uint8_t *)frames.base;

    if (form == FORM_GRPC) {
        static h2o_iovec_t status_name = {H2O_STRLIT("grpc-status")};
        static h2o_iovec_t message_name = {H2O_STRLIT("grpc-message")};
        h2o_header_t trailers[2] = {  /* h2_reply_send copies them */
            {&status_name, NULL, h2o_iovec_init(code, code_len)},
            {&message_name, NULL, h2o_iovec_init(msg, msg_len)},
        };
        send_native(req, frames, trailers, msg_len ? 2 : 1);
        return;
    }
    /* gRPC-Web: the trailers travel as a last frame flagged GRPC_FRAME_TRAILERS. */
    char tbuf[sizeof msg + 64];
    size_t tlen = (size_t)snprintf(tbuf, sizeof tbuf, "grpc-status:%s\r\n", code);
    if (msg_len)
        tlen += (size_t)snprintf(tbuf + tlen, sizeof tbuf - tlen, "grpc-message:%s\r\n", msg);
    size_t body_len = data_len + GRPC_FRAME_SIZE(tlen);
    uint8_t *body = h2o_mem_alloc_pool(&req->pool, body_len);
    if (data)
        memcpy(body, data, data_len);
    grpc_frame_write(body + data_len, GRPC_FRAME_TRAILERS, NULL, tbuf, tlen);
    add_header_str(req, "access-control-expose-headers",
                   H2O_STRLIT("grpc-status,grpc-message,x-request-id"));
    if (form == FORM_GRPC_WEB) {
        send_body(req, 200, "application/grpc-web+proto", body, body_len);
        return;
    }
    size_t b64_len = crypto_base64_size(body_len, CRYPTO_BASE64);
    char *b64 = h2o_mem_alloc_pool(&req->pool, b64_len);
    crypto_base64_encode(b64, b64_len, body, body_len, CRYPTO_BASE64);
    send_body(req, 200, "application/grpc-web-text+proto", b64, strlen(b64));
}

/* A JSON reply whose body is one field (response_body) sends the reply's
 * other non-empty string fields as headers, named after them
 * (next_page_token: next-page-token), so the body stays the documented
 * list and nothing of the reply is lost. */
static void add_leftover_headers(h2o_req_t *req, const ProtobufCMessage *reply,
                                 const char *data_field)
{
    const ProtobufCMessageDescriptor *d = reply->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED ||
            strcmp(f->name, data_field) == 0)
            continue;
        const char *v = *(char *const *)((const char *)reply + f->offset);
        if (!v || !*v)
            continue;
        size_t n = strlen(f->name);
        char *name = h2o_mem_alloc_pool(&req->pool, n + 1);
        for (size_t j = 0; j <= n; j++)
            name[j] = f->name[j] == '_' ? '-' : f->name[j];
        h2o_add_header_by_str(&req->pool, &req->res.headers, name, n, 1, NULL,
                              h2o_strdup(&req->pool, v, SIZE_MAX).base, strlen(v));
    }
}

/* Answers in the caller's form. `http` overrides the status for failures
 * that only exist in HTTP (404 path, 405, 413, 415); 0 derives it. */
static const int metric_form[] = {METRIC_JSON, METRIC_PROTOBUF, METRIC_GRPC, METRIC_GRPC_WEB,
                                  METRIC_GRPC_WEB};

static void respond(http_obs *o, h2o_req_t *req, int form, status_code st, int http,
                    const char *message, const ProtobufCMessage *reply, const char *data_field,
                    int retry_after)
{
    if (!http)
        http = status_http(st);
    o->form = metric_form[form];
    o->code = st;
    o->http_status = form == FORM_GRPC || is_grpc_web(form) ? 200 : http;
    if (retry_after > 0) {
        char ra[12];
        snprintf(ra, sizeof ra, "%d", retry_after);
        add_header(req, H2O_TOKEN_RETRY_AFTER, h2o_strdup(&req->pool, ra, strlen(ra)).base);
    }
    if (form == FORM_GRPC || is_grpc_web(form)) {
        h2o_iovec_t frames = {NULL, 0};
        uint8_t buf[GRPC_FRAME_SIZE(FRAME_GUESS)];
        if (st == ST_OK && reply)
            frames.base = (char *)frame_reply(&req->pool, reply, buf, &frames.len);
        o->bytes_out = frames.len;
        send_grpc(req, form, st, message, frames);
        return;
    }
    if (form == FORM_PROTO) {
        Tokend__V1__Status status = TOKEND__V1__STATUS__INIT;
        const ProtobufCMessage *out = reply;
        if (st != ST_OK) {
            char code[12];
            status.code = (int32_t)st;
            status.message = (char *)message;
            out = &status.base;
            snprintf(code, sizeof code, "%d", (int)st);
            add_header_str(req, "grpc-status", h2o_strdup(&req->pool, code, strlen(code)).base,
                           strlen(code));
        }
        size_t len = pb_size(out);
        uint8_t *buf = h2o_mem_alloc_pool(&req->pool, len + 1);
        pb_pack(out, buf);
        o->bytes_out = len;
        send_body(req, http, "application/x-protobuf", buf, len);
        return;
    }
    char *json = NULL, small[1024];
    size_t len = 0;
    if (st == ST_OK && reply && data_field)
        add_leftover_headers(req, reply, data_field);
    /* Most replies fit the stack buffer; h2o_send_inline copies it out. */
    if (transcode_envelope_buf(http, st == ST_OK ? NULL : message, st == ST_OK ? reply : NULL,
                               data_field, small, sizeof small, &json, &len) != 0) {
        static const char fallback[] = "{\"code\":500,\"message\":\"cannot encode the reply\",\"data\":null}";
        o->http_status = 500;
        o->bytes_out = sizeof fallback - 1;
        send_body(req, 500, "application/json; charset=utf-8", fallback, sizeof fallback - 1);
        return;
    }
    o->bytes_out = len;
    send_body(req, http, "application/json; charset=utf-8", json, len);
    if (json != small)
        free(json);
}

/* --- the call's life ------------------------------------------------------- */

static void *arena_alloc(void *data, size_t size)
{
    wire_call *wc = data;
    size_t n = (size + 15) & ~(size_t)15;
    if (n > CALL_ARENA - wc->arena_used) {
        wc->heap = 1;
        return malloc(size);
    }
    void *p = wc->arena + wc->arena_used;
    wc->arena_used += n;
    return p;
}

static void arena_free(void *data, void *p)
{
    wire_call *wc = data;
    if ((uint8_t *)p < wc->arena || (uint8_t *)p >= wc->arena + CALL_ARENA)
        crypto_free_wiped(p);   /* the arena is wiped whole by free_call */
}

/* Calls are made and ended on their loop's thread: each thread keeps the
 * ones it ended for the next requests, so a call costs no malloc. */
#define SPARE_CALLS_MAX 256
static __thread wire_call *spare_calls;
static __thread unsigned spare_count;
static __thread int spares_freed_at_exit;   /* spare_key is set for this thread */
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

/* A loop's thread ends: its spare calls go with it. */
static void free_spares(void *unused)
{
    while (spare_calls) {
        wire_call *wc = spare_calls;
        spare_calls = wc->next_free;
        free(wc);
    }
    spare_count = 0;
}

static void spare_init(void)
{
    pthread_key_create(&spare_key, free_spares);
}

static wire_call *new_call(void)
{
    wire_call *wc = spare_calls;
    if (wc) {
        spare_calls = wc->next_free;
        spare_count--;
    } else if (!(wc = malloc(sizeof *wc))) {
        return NULL;
    }
    /* All up to obs, which http_obs_begin sets; the arena is handed out
     * from its start. */
    rpc_call_clear(&wc->call);
    memset(&wc->req, 0, offsetof(wire_call, obs) - offsetof(wire_call, req));
    wc->alloc = (ProtobufCAllocator){arena_alloc, arena_free, wc};
    wc->arena_used = 0;
    return wc;
}

static void on_guard_dispose(void *p)
{
    guard *g = p;
    if (g->call) {
        g->call->req = NULL;
        g->call->guard = NULL;
    }
}

static void free_call(wire_call *wc)
{
    if (wc->guard)
        wc->guard->call = NULL;
    /* A request all in the arena needs no free: the wipe below ends it. */
    if (wc->request && wc->heap)
        protobuf_c_message_free_unpacked(wc->request, &wc->alloc);
    /* The caller's token and what the request held must not linger: one
     * wipe from the token to the end of the arena's used bytes. */
    crypto_wipe(wc->call.access_token,
                (size_t)(wc->arena + wc->arena_used - (uint8_t *)wc->call.access_token));
    if (spare_count >= SPARE_CALLS_MAX) {
        free(wc);
        return;
    }
    if (!spares_freed_at_exit) {   /* the thread's first spare: free them when it ends */
        pthread_once(&spare_once, spare_init);
        pthread_setspecific(spare_key, &spare_calls);
        spares_freed_at_exit = 1;
    }
    wc->next_free = spare_calls;
    spare_calls = wc;
    spare_count++;
}

/* The closure every handler answers through, exactly once. */
static void on_reply(const ProtobufCMessage *reply, void *data)
{
    wire_call *wc = data;
    rpc_call *c = &wc->call;
    if (wc->answered)
        *wc->answered = 1;
    status_code st = reply ? ST_OK : c->status;
    if (st == ST_OK && !reply)
        st = ST_INTERNAL;
    /* No deadline check here: the handler checked it before its slow work
     * and before committing; an answer that comes back late still says
     * what was done (a login that committed must hand out its token). */
    c->loop->leave(c->loop);
    if (wc->req)
        respond(&wc->obs, wc->req, wc->form, st, 0, c->message, reply,
                wc->http ? wc->http->response_body : NULL, c->retry_after);
    else
        wc->obs.code = ST_CANCELLED;  /* the client went away */
    http_obs_end(&wc->obs, wc->req, c, c->loop->metrics);
    free_call(wc);
}

/* --- reading the request ----------------------------------------------------- */

/* The request headers tokend reads, found in one pass over the list. */
enum { H_APP_ID, H_USER_ID, H_GROUP_ID, H_ACCESS_TOKEN, H_CONTENT_TYPE, H_GRPC_TIMEOUT,
       H_USER_AGENT, H_PLATFORM, H_REQUEST_ID, H_COUNT };

typedef struct {
    h2o_iovec_t v[H_COUNT];      /* the first of each; len 0 when absent */
    unsigned twice;              /* bit per header that came more than once */
} req_headers;

static int header_of(const h2o_iovec_t *n)
{
#define IS(lit) (n->len == sizeof lit - 1 && memcmp(n->base, lit, sizeof lit - 1) == 0)
    switch (n->len) {
    case 6: return IS("app_id") ? H_APP_ID : -1;
    case 7: return IS("user_id") ? H_USER_ID : -1;
    case 8: return IS("group_id") ? H_GROUP_ID : IS("platform") ? H_PLATFORM : -1;
    case 10: return IS("user-agent") ? H_USER_AGENT : -1;
    case 12:
        return IS("access-token") ? H_ACCESS_TOKEN
             : IS("content-type") ? H_CONTENT_TYPE
             : IS("grpc-timeout") ? H_GRPC_TIMEOUT
             : IS("x-request-id") ? H_REQUEST_ID : -1;
    default: return -1;
    }
#undef IS
}

/* h2o hands over header names in lower case (HTTP/1.1's too). */
static void read_headers(h2o_req_t *req, req_headers *h)
{
    unsigned seen = 0;
    /* In parts of at most 64 bytes, which GCC writes as vector stores (a
     * longer memset is rep stosq, a counted step per word). */
    _Static_assert(sizeof *h <= 3 * 64, "req_headers: three clears");
    memset(h, 0, 64);
    memset((char *)h + 64, 0, 64);
    memset((char *)h + 128, 0, sizeof *h - 128);
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *e = &req->headers.entries[i];
        int k = header_of(e->name);
        if (k < 0)
            continue;
        if (seen & (1u << k)) {
            h->twice |= 1u << k;
            continue;
        }
        seen |= 1u << k;
        h->v[k] = e->value;
    }
}

/* The metadata every form carries the same way: headers or gRPC metadata.
 * A header that says who is calling must come once: two app_ids or two
 * tokens would let a proxy and the server each read a different one. */
static const char *read_metadata(const tokend_config *cfg, const req_headers *h,
                                 const http_obs *o, rpc_call *c)
{
    static const char *const twice[] = {
        "more than one app_id header: send it once", "more than one user_id header: send it once",
        "more than one group_id header: send it once",
        "more than one access-token header: send it once"};
    static const char *const malformed[] = {"app_id header must be a positive integer",
                                            "user_id header must be a positive integer",
                                            "group_id header must be a positive integer"};
    uint64_t *const outs[] = {&c->app_id, &c->as_user_id, &c->as_group_id};
    h2o_iovec_t tok = h->v[H_ACCESS_TOKEN], to = h->v[H_GRPC_TIMEOUT];
    int64_t ms;

    for (int i = H_APP_ID; i <= H_ACCESS_TOKEN; i++)
        if (h->twice & (1u << i))
            return twice[i];
    for (int i = H_APP_ID; i <= H_GROUP_ID; i++) {
        h2o_iovec_t v = h->v[i];
        if (v.len && (grpc_parse_u64(v.base, v.len, outs[i]) != 0 || *outs[i] == 0))
            return malformed[i];
    }
    if (tok.len >= sizeof c->access_token)
        tok.len = sizeof c->access_token - 1;  /* too long to be a token: fails verify */
    if (tok.len)
        memcpy(c->access_token, tok.base, tok.len);
    c->access_token[tok.len] = '\0';
    /* Not copied unless read (rpc_user_agent) or the call outlives on_req
     * (rpc_call_keep): Verify reads neither. */
    c->agent_src = h->v[H_USER_AGENT].base;
    c->agent_len = h->v[H_USER_AGENT].len;
    h2o_iovec_t platform = h->v[H_PLATFORM];
    uint64_t p;
    if (platform.len && grpc_parse_u64(platform.base, platform.len, &p) == 0 && p <= 6)
        c->platform = (int32_t)p;
    ms = (int64_t)config_deadline(cfg) * 1000;
    if (to.len && grpc_parse_timeout(to.base, to.len, &ms) != 0)
        return "grpc-timeout header is malformed";
    c->deadline_ms = o->start_ns / 1000000 + ms;  /* rpc_clock_ms's clock, read at the start */
    c->peer = o->peer;  /* the thread's text: good while on_req runs */
    return NULL;
}

/* Binds each name=value of the query string to the request's fields. */
static int bind_query(h2o_req_t *req, ProtobufCMessage *msg, char *err)
{
    if (req->query_at == SIZE_MAX)
        return 0;
    size_t len = req->path.len - req->query_at - 1;
    char *q = h2o_mem_alloc_pool(&req->pool, len + 1);
    memcpy(q, req->path.base + req->query_at + 1, len);
    return transcode_set_query(msg, q, len, err);
}

/* type is lower case, as clients nearly always send it: compared as it is
 * first (inlined, type's length being known), only then case-blind. */
static inline __attribute__((always_inline)) int media_is(h2o_iovec_t ct, const char *type)
{
    size_t n = strlen(type);
    return ct.len >= n && (memcmp(ct.base, type, n) == 0 || strncasecmp(ct.base, type, n) == 0) &&
           (ct.len == n || ct.base[n] == ';' || ct.base[n] == ' ');
}

/* -1: not a type tokend speaks. All are application/<subtype>: the
 * subtype's first letter (case-insensitive) picks the names to compare, so
 * a gRPC call is not compared with the four other types first. */
static int form_of(h2o_iovec_t ct, size_t body_len)
{
    static const size_t app = sizeof "application/" - 1;
    if (ct.len == 0)
        return body_len ? -1 : FORM_JSON;
    switch (ct.len > app ? ct.base[app] | 0x20 : 0) {
    case 'j':
        return media_is(ct, "application/json") ? FORM_JSON : -1;
    case 'x': case 'p': case 'o':
        return media_is(ct, "application/x-protobuf") || media_is(ct, "application/protobuf") ||
               media_is(ct, "application/octet-stream") ? FORM_PROTO : -1;
    case 'g':
        if (media_is(ct, "application/grpc") || media_is(ct, "application/grpc+proto"))
            return FORM_GRPC;
        if (media_is(ct, "application/grpc-web") || media_is(ct, "application/grpc-web+proto"))
            return FORM_GRPC_WEB;
        if (media_is(ct, "application/grpc-web-text") || media_is(ct, "application/grpc-web-text+proto"))
            return FORM_GRPC_WEB_TEXT;
    }
    return -1;
}

/* The gRPC request body as bytes (grpc-web-text is base64). */
static const char *grpc_body(h2o_req_t *req, int form, h2o_iovec_t *body)
{
    *body = req->entity;
    if (form == FORM_GRPC_WEB_TEXT) {
        size_t n = 0;
        uint8_t *bin = h2o_mem_alloc_pool(&req->pool, body->len + 1);
        const char *why = grpc_web_text_decode(body->base, body->len, bin, &n);
        if (why)
            return why;
        *body = h2o_iovec_init((char *)bin, n);
    }
    return NULL;
}

/* The message a frame carries: a compressed one inflated into the
 * request's pool, measured first against *budget, the bytes the request's
 * messages may still take once inflated (--max-body for them all, as for a
 * body: a stream of 100 messages cannot hold 100 of them). An encoding
 * tokend does not read is refused naming those it does
 * (grpc-accept-encoding), as gRPC has it. grpc-encoding is looked up only
 * here, for a compressed message, not by read_headers for every request. */
static const char *grpc_plain(h2o_req_t *req, size_t *budget, int compressed, h2o_iovec_t *msg,
                              status_code *st)
{
    if (!compressed)
        return NULL;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("grpc-encoding"), -1);
    grpc_encoding enc = i < 0 ? GRPC_ENCODING_IDENTITY
                              : grpc_encoding_of(req->headers.entries[i].value.base,
                                                 req->headers.entries[i].value.len);
    size_t n;
    const char *why = grpc_frame_inflate(enc, msg->base, msg->len, NULL, *budget, &n, st);
    if (!why) {
        uint8_t *out = h2o_mem_alloc_pool(&req->pool, n + 1);
        if (!(why = grpc_frame_inflate(enc, msg->base, msg->len, out, n + 1, &n, st))) {
            *msg = h2o_iovec_init(out, n);
            *budget -= n;
        }
    }
    if (why && *st == ST_UNIMPLEMENTED)
        add_header_str(req, "grpc-accept-encoding", H2O_STRLIT(GRPC_ACCEPT_ENCODING));
    return why;
}

/* Unwraps the one length-prefixed message of a unary gRPC request body. */
static const char *grpc_unframe(h2o_req_t *req, const tokend_config *cfg, int form,
                                h2o_iovec_t *msg, status_code *st)
{
    h2o_iovec_t body;
    const char *why = grpc_body(req, form, &body), *p;
    int compressed = 0;
    size_t budget = config_max_body(cfg);
    *st = ST_INVALID_ARGUMENT;
    if (!why && !(why = grpc_frame_unary(body.base, body.len, &p, &msg->len, &compressed, st))) {
        msg->base = (char *)p;
        why = grpc_plain(req, &budget, compressed, msg, st);
    }
    return why;
}

/* Nothing, or {} (what clients send for "no fields"), blanks around. */
static int empty_json(h2o_iovec_t b)
{
    size_t i = 0, n = 0;
    char c[2];
    for (; i < b.len && n < sizeof c + 1; i++)
        if (!memchr(" \t\r\n", b.base[i], 4) && n++ < sizeof c)
            c[n - 1] = b.base[i];
    return n == 0 || (n == 2 && c[0] == '{' && c[1] == '}');
}

/* Decodes the request message; on failure answers and returns -1. */
static int decode(http_handler *h, h2o_req_t *req, wire_call *wc, http_obs *o)
{
    const ProtobufCMessageDescriptor *in = wc->rpc->method->input;
    char err[TRANSCODE_ERRLEN];
    status_code st = ST_INVALID_ARGUMENT;
    const char *why = NULL;

    if (wc->form == FORM_JSON && !wc->http->body && !empty_json(req->entity)) {
        /* Ignored, a field sent there would read as unset: Kick without a
         * device_sn signs every device out. */
        why = "this path takes its fields in the query string (?name=value), not in a JSON body";
    } else if (wc->form == FORM_JSON) {
        h2o_iovec_t body = wc->http->body ? req->entity : h2o_iovec_init(NULL, 0);
        /* A flat object of plain strings (Verify's body) without jansson. */
        int rc = req->query_at != SIZE_MAX ? 1  /* the query binding frees with free() */
                 : transcode_from_json_flat(in, body.base, body.len, &wc->alloc, &wc->request);
        if (rc > 0) {
            wc->heap = 1;
            rc = transcode_from_json(in, body.base, body.len, &wc->request, err);
        }
        if (rc != 0 || bind_query(req, wc->request, err) != 0)
            why = err;
    } else {
        h2o_iovec_t msg = req->entity;
        if (wc->form != FORM_PROTO)
            why = grpc_unframe(req, h->ctx->config, wc->form, &msg, &st);
        /* The query binding frees what it replaces with free(): no arena then. */
        ProtobufCAllocator *al = req->query_at == SIZE_MAX ? &wc->alloc : NULL;
        wc->heap |= al == NULL;
        int checked = 0;   /* the strings were found UTF-8 while decoded */
        if (!why && !(wc->request = pb_unpack_text(in, al, msg.len, (const uint8_t *)msg.base,
                                                   &checked))) {
            snprintf(err, sizeof err, "body is not a valid %s message", in->name);
            why = err;
        }
        if (!why && !checked && pb_check_strings(in, msg.len, (const uint8_t *)msg.base, err, sizeof err) != 0)
            why = err;
        if (!why && wc->form == FORM_PROTO && bind_query(req, wc->request, err) != 0)
            why = err;
        /* inflated or decoded from text (a plain frame's message is in
         * the body, wiped below) */
        if (msg.len && (uintptr_t)msg.base - (uintptr_t)req->entity.base >= req->entity.len)
            crypto_wipe(msg.base, msg.len);
    }
    /* The message holds its own copies: the body's (a password, a token)
     * is wiped where h2o keeps it. */
    crypto_wipe(req->entity.base, req->entity.len);
    if (!why)
        return 0;
    respond(o, req, wc->form, st, 0, why, NULL, NULL, 0);
    return -1;
}

/* --- streaming RPCs ----------------------------------------------------------- */

/* h2o 2.2 hands over a request only once the client has half-closed, so a
 * stream is served as a batch: each request message gets its answer from
 * the handler (which must answer at once), all are sent, then the status. */
typedef struct {
    rpc_call call;
    uint8_t *out;
    size_t len, cap;
    int answered, failed;
} stream_call;

#define STREAM_MESSAGES_MAX 100

static void on_stream_reply(const ProtobufCMessage *reply, void *data)
{
    stream_call *sc = data;
    sc->answered = 1;
    if (!reply) {
        sc->failed = 1;
        return;
    }
    size_t n = GRPC_FRAME_SIZE(pb_size(reply));
    if (sc->len + n > sc->cap) {
        size_t cap = (sc->len + n) * 2;
        uint8_t *p = realloc(sc->out, cap);
        if (!p) {
            sc->failed = 1;
            sc->call.status = ST_RESOURCE_EXHAUSTED;
            snprintf(sc->call.message, sizeof sc->call.message, "out of memory");
            return;
        }
        sc->out = p, sc->cap = cap;
    }
    sc->len += grpc_frame_write(sc->out + sc->len, 0, reply, NULL, n - GRPC_FRAME_HEADER);
}

static void serve_stream(http_handler *h, h2o_req_t *req, const req_headers *hdrs, int form,
                         const router_rpc *rpc, http_obs *o)
{
    stream_call sc = {{0}};
    h2o_iovec_t body;
    const char *msg;
    size_t off = 0, msg_len;
    status_code st = ST_OK;
    const char *why = read_metadata(h->ctx->config, hdrs, o, &sc.call);
    int count = 0;
    size_t budget = config_max_body(h->ctx->config);   /* inflated, for all its messages */

    if (!why)
        why = grpc_body(req, form, &body);
    sc.call.ctx = h->ctx;
    sc.call.closure = on_stream_reply;
    sc.call.loop = server_loop_of(req);
    while (!why && off < body.len && !sc.failed) {
        if (++count > STREAM_MESSAGES_MAX) {
            why = "too many messages in one stream (at most 100)";
            break;
        }
        int compressed = 0;
        if ((why = grpc_frame_next(body.base, body.len, &off, &msg, &msg_len, &compressed, &st)) != NULL)
            break;
        h2o_iovec_t m = h2o_iovec_init(msg, msg_len);
        if ((why = grpc_plain(req, &budget, compressed, &m, &st)) != NULL)
            break;
        msg = m.base, msg_len = m.len;
        ProtobufCMessage *in = protobuf_c_message_unpack(rpc->method->input, NULL, msg_len,
                                                         (const uint8_t *)msg);
        char err[TRANSCODE_ERRLEN];
        if (!in || pb_check_strings(rpc->method->input, msg_len, (const uint8_t *)msg, err, sizeof err) != 0) {
            if (in)
                protobuf_c_message_free_unpacked(in, NULL);
            why = "a request message does not decode (or holds invalid UTF-8 or a NUL)";
            break;
        }
        sc.answered = 0;
        rpc->service->invoke(rpc->service, rpc->method_index, in, on_stream_reply, &sc);
        protobuf_c_message_free_unpacked(in, NULL);
        if (!sc.answered) {
            /* a streaming handler that defers would answer into freed memory */
            fprintf(stderr, "tokend: streaming handler %s did not answer at once\n", rpc->grpc_path);
            abort();
        }
    }
    if (why) {
        respond(o, req, form, st == ST_OK ? ST_INVALID_ARGUMENT : st, 0, why, NULL, NULL, 0);
    } else {
        char *copy = h2o_mem_alloc_pool(&req->pool, sc.len + 1);
        if (sc.len)
            memcpy(copy, sc.out, sc.len);
        o->form = metric_form[form];
        o->code = sc.failed ? sc.call.status : ST_OK;
        o->http_status = 200;
        o->bytes_out = sc.len;
        send_grpc(req, form, sc.failed ? sc.call.status : ST_OK, sc.call.message,
                  h2o_iovec_init(copy, sc.len));
    }
    free(sc.out);
}

/* The handler once more, with the same request (rpc_wait_fresh). */
static void invoke_again(rpc_call *c)
{
    wire_call *wc = (wire_call *)c;
    wc->rpc->service->invoke(wc->rpc->service, wc->rpc->method_index, wc->request, on_reply, wc);
}

/* Answers the request, or starts its call wc (NULL: none could be had):
 * 1 when the call answers (on_reply then ends the observation and frees
 * wc), 0 when answered here (wc is the caller's to free). */
static int serve(http_handler *h, h2o_req_t *req, const req_headers *hdrs, http_obs *obs,
                 wire_call *wc)
{
    int form = form_of(hdrs->v[H_CONTENT_TYPE], req->entity.len);
    const char *why;

    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS"))) {
        req->res.status = 204;
        req->res.reason = "No Content";
        add_header(req, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
        add_header_str(req, "access-control-allow-methods", H2O_STRLIT("GET, POST, PUT, DELETE"));
        add_header_str(req, "access-control-allow-headers", H2O_STRLIT(CORS_ALLOW_HEADERS));
        add_header_str(req, "access-control-max-age", H2O_STRLIT("86400"));
        obs->http_status = 204;
        h2o_send_inline(req, "", 0);
        return 0;
    }
    if (form < 0) {
        respond(obs, req, FORM_JSON, ST_INVALID_ARGUMENT, 415,
                "Content-Type must be application/json, application/x-protobuf, "
                "application/grpc or application/grpc-web",
                NULL, NULL, 0);
        return 0;
    }
    size_t max_body = config_max_body(h->ctx->config);
    if (req->entity.len > max_body) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body is larger than %zu bytes", max_body);
        respond(obs, req, form, ST_RESOURCE_EXHAUSTED, 413, msg, NULL, NULL, 0);
        return 0;
    }

    if (!wc) {
        respond(obs, req, form, ST_RESOURCE_EXHAUSTED, 503, "out of memory", NULL, NULL, 1);
        return 0;
    }
    wc->form = form;
    if (form == FORM_JSON || form == FORM_PROTO) {
        const router_http *route = NULL;
        int rc = router_http_find(h->router, req->method.base, req->method.len,
                                  req->path_normalized.base, req->path_normalized.len, &route);
        if (rc == ROUTER_NO_VERB) {
            char allow[64];
            router_allowed(h->router, req->path_normalized.base, req->path_normalized.len,
                           allow, sizeof allow);
            add_header(req, H2O_TOKEN_ALLOW, h2o_strdup(&req->pool, allow, strlen(allow)).base);
            respond(obs, req, form, ST_UNIMPLEMENTED, 405, "method not allowed on this path", NULL, NULL, 0);
            return 0;
        }
        if (rc == ROUTER_NO_PATH) {
            respond(obs, req, form, ST_NOT_FOUND, 404, "no such path", NULL, NULL, 0);
            return 0;
        }
        wc->http = route;
        wc->rpc = route->rpc;
        obs->rpc = wc->rpc->index;
    } else {
        wc->rpc = router_grpc(h->router, req->path_normalized.base, req->path_normalized.len);
        if (wc->rpc)
            obs->rpc = wc->rpc->index;
        if (form == FORM_GRPC && req->version < 0x200) {
            respond(obs, req, FORM_JSON, ST_INVALID_ARGUMENT, 415,
                    "application/grpc needs HTTP/2: use gRPC-Web over HTTP/1.1", NULL, NULL, 0);
            return 0;
        }
        if (!wc->rpc) {
            respond(obs, req, form, ST_UNIMPLEMENTED, 0, "unknown service or method", NULL, NULL, 0);
            return 0;
        }
        if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
            respond(obs, req, form, ST_UNIMPLEMENTED, 405, "gRPC calls use POST", NULL, NULL, 0);
            return 0;
        }
        if (wc->rpc->streaming) {
            serve_stream(h, req, hdrs, form, wc->rpc, obs);
            return 0;
        }
    }
    if ((why = read_metadata(h->ctx->config, hdrs, obs, &wc->call)) != NULL) {
        respond(obs, req, form, ST_INVALID_ARGUMENT, 0, why, NULL, NULL, 0);
        return 0;
    }
    if (decode(h, req, wc, obs) != 0)
        return 0;

    wc->req = req;
    wc->call.ctx = h->ctx;
    wc->call.closure = on_reply;
    wc->call.again = invoke_again;
    wc->call.loop = server_loop_of(req);
    wc->call.loop->enter(wc->call.loop);
    /* Most calls (Verify) answer before invoke returns, and the request
     * cannot go away while this handler runs: only a call still open
     * afterwards, which must learn if the client leaves, gets a guard (an
     * allocation and a free a request). wc is not touched after on_reply,
     * so it is tracked by a flag in the loop's own memory. */
    int answered = 0;
    wc->answered = &answered;
    wc->rpc->service->invoke(wc->rpc->service, wc->rpc->method_index, wc->request, on_reply, wc);
    if (!answered) {
        wc->answered = NULL;
        http_obs_keep(&wc->obs, req);
        rpc_call_keep(&wc->call);
        wc->guard = h2o_mem_alloc_shared(&req->pool, sizeof *wc->guard, on_guard_dispose);
        wc->guard->call = wc;
    }
    return 1;
}

static void serve_metrics(http_handler *h, h2o_req_t *req, http_obs *obs, int port)
{
    char *text = NULL;
    size_t len = metrics_render(h->metrics, port, &text);
    obs->http_status = text ? 200 : 503;
    obs->bytes_out = len;
    if (!text) {
        send_body(req, 503, "text/plain", "out of memory\n", 14);
        return;
    }
    char *copy = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(copy, text, len);
    free(text);
    send_body(req, 200, "text/plain; version=0.0.4; charset=utf-8", copy, len);
}

/* --- the handlers h2o calls ---------------------------------------------------- */

static int is_metrics_path(h2o_req_t *req)
{
    return h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/metrics"));
}

/* Behind a trusted proxy, the request's client is the one it forwards
 * (proxies.h): its text, in the request's pool, becomes the peer that the
 * throttle, the audit and the log read. */
static void forwarded_client(h2o_req_t *req, const proxies *trusted, http_obs *obs)
{
    const char *values[8];
    size_t lens[8], n = 0;
    struct sockaddr_storage sa;
    if (!req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&sa))
        return;
    /* the last 8 headers: the right-most entries are the trusted ones */
    for (ssize_t i = -1; (i = trusted->rfc7239
                                  ? h2o_find_header_by_str(&req->headers, H2O_STRLIT("forwarded"), i)
                                  : h2o_find_header(&req->headers, H2O_TOKEN_X_FORWARDED_FOR, i)) >= 0;) {
        if (n == 8) {
            memmove(values, values + 1, 7 * sizeof values[0]);
            memmove(lens, lens + 1, 7 * sizeof lens[0]);
            n = 7;
        }
        values[n] = req->headers.entries[i].value.base, lens[n++] = req->headers.entries[i].value.len;
    }
    char *text = h2o_mem_alloc_pool(&req->pool, PROXIES_TEXT_MAX);
    size_t len = proxies_client(trusted, (struct sockaddr *)&sa, values, lens, n, text);
    if (len)
        obs->peer = text, obs->peer_len = len;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    http_handler *h = (http_handler *)self;
    metrics_loop *m = server_loop_of(req)->metrics;
    /* Observed in the call's own obs from the start: a call reads it there,
     * uncopied. Without a call (out of memory), on the stack. */
    wire_call *wc = new_call();
    http_obs stack_obs, *obs = wc ? &wc->obs : &stack_obs;
    req_headers hdrs;
    read_headers(req, &hdrs);
    http_obs_begin(obs, req, hdrs.v[H_REQUEST_ID], m, h->router);
    /* Behind L4 balancers (--proxy-protocol) the bytes after a PROXY header,
     * or on a connection without one, are the client's own: its
     * X-Forwarded-For names nothing. */
    if (h->ctx->config->trusted_proxies.n && !h->ctx->config->proxy_protocol)
        forwarded_client(req, &h->ctx->config->trusted_proxies, obs);
    if (h->metrics && is_metrics_path(req) &&
        h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        serve_metrics(h, req, obs, METRICS_CLIENT_PORT);
    } else if (serve(h, req, &hdrs, obs, wc)) {
        return 0;  /* on_reply ends it */
    }
    /* A body refused before decode() wiped it (a wrong Content-Type, path
     * or verb) may hold a password as well. */
    crypto_wipe(req->entity.base, req->entity.len);
    http_obs_end(obs, req, NULL, m);
    if (wc)
        free_call(wc);
    return 0;
}

/* The --metrics-listen port: /metrics, and 404 for anything else. */
static int on_metrics_req(h2o_handler_t *self, h2o_req_t *req)
{
    http_handler *h = (http_handler *)self;
    http_obs obs;
    metrics_loop *m = server_loop_of(req)->metrics;
    req_headers hdrs;
    read_headers(req, &hdrs);
    http_obs_begin(&obs, req, hdrs.v[H_REQUEST_ID], m, h->router);
    if (is_metrics_path(req) && h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
        serve_metrics(h, req, &obs, METRICS_OPERATOR_PORT);
    else
        respond(&obs, req, FORM_JSON, ST_NOT_FOUND, 404, "this port serves only GET /metrics", NULL,
                NULL, 0);
    http_obs_end(&obs, req, NULL, m);
    return 0;
}

void http_register(h2o_pathconf_t *pathconf, tokend_ctx *ctx, const router *router,
                   const metrics_registry *metrics)
{
    http_handler *h = (http_handler *)h2o_create_handler(pathconf, sizeof *h);
    h->super.on_req = on_req;
    h->ctx = ctx;
    h->router = router;
    h->metrics = metrics;
}

void http_register_metrics(h2o_pathconf_t *pathconf, tokend_ctx *ctx, const router *router,
                           const metrics_registry *metrics)
{
    http_handler *h = (http_handler *)h2o_create_handler(pathconf, sizeof *h);
    h->super.on_req = on_metrics_req;
    h->ctx = ctx;
    h->router = router;
    h->metrics = metrics;
}
