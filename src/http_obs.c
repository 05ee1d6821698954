/* http_obs.c - request ids, metrics and access log lines for http.c. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>
#include "h2_reply.h"
#include "http_obs.h"
#include "log.h"
#include "router.h"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A client's id is kept when it is 1 to 64 characters of [A-Za-z0-9._:+/=-]
 * (what UUIDs, trace ids and base64 use); anything else is replaced. */
static int valid_id(const char *s, size_t n)
{
    if (n == 0 || n > HTTP_REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '/' || c == '='))
            return 0;
    }
    return 1;
}

/* A connection's peer never changes, and making its text each request was
 * a tenth of the log line: each thread keeps the last few connections'
 * text, by h2o's connection id (unique in the process, from 1). */
#define PEER_SLOTS 64
static __thread struct {
    uint64_t id;
    char text[64];
    size_t len;
} peers[PEER_SLOTS];

/* IPv4 by hand (h2o's way is a sprintf), anything else through h2o.
 * Returns the text's length. */
static size_t peer_text(h2o_conn_t *conn, char out[64])
{
    struct sockaddr_storage sa;
    socklen_t salen = conn->callbacks->get_peername(conn, (struct sockaddr *)&sa);
    out[0] = '\0';
    if (!salen)
        return 0;
    if (sa.ss_family != AF_INET) {
        char host[NI_MAXHOST];
        if (h2o_socket_getnumerichost((struct sockaddr *)&sa, salen, host) != SIZE_MAX) {
            size_t n = strnlen(host, 63);
            memcpy(out, host, n);
            out[n] = '\0';
            return n;
        }
        return 0;
    }
    uint32_t a = ntohl(((struct sockaddr_in *)&sa)->sin_addr.s_addr);
    char *p = out;
    for (int shift = 24; shift >= 0; shift -= 8) {
        unsigned b = (a >> shift) & 255;
        if (b >= 100)
            *p++ = (char)('0' + b / 100);
        if (b >= 10)
            *p++ = (char)('0' + b / 10 % 10);
        *p++ = (char)('0' + b % 10);
        *p++ = shift ? '.' : '\0';
    }
    return (size_t)(p - out) - 1;
}

/* The connection's peer address as text ("" if unknown), its length in
 * *len; valid until the thread's next call. */
static const char *http_obs_peer(h2o_conn_t *conn, size_t *len)
{
    __typeof__(peers[0]) *slot = &peers[conn->id % PEER_SLOTS];
    if (slot->id != conn->id || !conn->id) {
        slot->len = peer_text(conn, slot->text);
        slot->id = conn->id;
    }
    *len = slot->len;
    return slot->text;
}

/* Made in the request's pool, where the reply's header and the log line
 * read it: the prefix copied whole (the digits go over its tail), then the
 * loop's count in hex. */
#define PREFIX_ROOM sizeof ((metrics_loop *)0)->request_id_prefix
#define MADE_ID_ROOM (PREFIX_ROOM + 17)
_Static_assert(MADE_ID_ROOM - 1 <= HTTP_REQUEST_ID_MAX, "a made id fits the log line's room");

/* Its length. */
static size_t make_id(char *out, metrics_loop *m)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = m->request_id_prefix_len;
    uint64_t v = ++m->next_request_id;  /* from 1 */
    size_t digits = (size_t)(67 - __builtin_clzll(v)) / 4;
    memcpy(out, m->request_id_prefix, PREFIX_ROOM);
    char *p = out + n + digits;
    *p = '\0';
    do
        *--p = hex[v & 15];
    while (v >>= 4);
    return n + digits;
}

void http_obs_begin(http_obs *o, h2o_req_t *req, h2o_iovec_t client_id, metrics_loop *m,
                    const struct router *router)
{
    o->start_ns = now_ns();
    o->loop = req->conn->ctx->loop;
    o->router = router;
    o->rpc = SIZE_MAX;
    o->form = METRIC_JSON;
    o->code = ST_OK;
    o->http_status = 0;
    o->bytes_out = 0;
    o->method_len = o->path_len = 0;
    o->bytes_in = req->entity.len;
    o->peer = http_obs_peer(req->conn, &o->peer_len);
    o->request_id = NULL;
    o->request_id_len = 0;
    if (valid_id(client_id.base, client_id.len)) {
        o->request_id = client_id.base;  /* the header's value lives as long as the request */
        o->request_id_len = client_id.len;
    } else if (m) {
        /* with the room of the reply's headers, which x-request-id starts */
        char *id = h2_reply_headers_room(req, MADE_ID_ROOM);
        o->request_id_len = make_id(id, m);
        o->request_id = id;
    }
    static const h2o_iovec_t request_id_name = {H2O_STRLIT("x-request-id")};
    if (o->request_id)
        h2_reply_add_unindexed(req, &request_id_name,
                               h2o_iovec_init(o->request_id, o->request_id_len));
}

/* What the log line shows of the request: its method and its path without
 * the query string (a query may carry what is not ours to log), cut to the
 * room http_obs_keep has for them. */
static void request_line(const http_obs *o, h2o_req_t *req, h2o_iovec_t *method, h2o_iovec_t *path)
{
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    *method = h2o_iovec_init(req->method.base, req->method.len < sizeof o->method - 1
                                                   ? req->method.len : sizeof o->method - 1);
    *path = h2o_iovec_init(req->path.base, plen < sizeof o->path ? plen : sizeof o->path);
}

void http_obs_keep(http_obs *o, h2o_req_t *req)
{
    h2o_iovec_t method, path;
    request_line(o, req, &method, &path);
    if (o->request_id) {
        memcpy(o->request_id_text, o->request_id, o->request_id_len);
        o->request_id = o->request_id_text;
    }
    memcpy(o->peer_text, o->peer, o->peer_len + 1);
    o->peer = o->peer_text;
    memcpy(o->method, method.base, o->method_len = method.len);
    memcpy(o->path, path.base, o->path_len = path.len);
}

void http_obs_end(http_obs *o, h2o_req_t *req, const rpc_call *call, metrics_loop *m)
{
    uint64_t ns = (uint64_t)(now_ns() - o->start_ns);
    unsigned code = (unsigned)o->code < METRIC_CODES ? (unsigned)o->code : 2;
    if (!m)
        return;
    metrics_request(m, o->rpc == SIZE_MAX ? m->nrpcs : o->rpc, o->form, code, ns);
    if (!m->log || !log_access_enabled())
        return;
    const router_rpc *rpc = o->rpc == SIZE_MAX ? NULL : router_at(o->router, o->rpc);
    /* the request's own while it is there, else what http_obs_keep kept */
    h2o_iovec_t method = h2o_iovec_init(o->method, o->method_len);
    h2o_iovec_t path = h2o_iovec_init(o->path, o->path_len);
    if (req)
        request_line(o, req, &method, &path);
    log_request line = {
        .time_ms = h2o_now(o->loop),
        .request_id = o->request_id,
        .method = method.len ? method.base : "",   /* present in the line, even if empty */
        .path = path.len ? path.base : "",
        .request_id_len = o->request_id_len,
        .method_len = method.len,
        .path_len = path.len,
        .rpc = rpc ? rpc->grpc_path + 1 : NULL,
        .protocol = metric_form_names[o->form],
        .status = o->http_status ? o->http_status : status_http(o->code),
        .code = metric_code_names[code],
        .duration_ns = ns,
        .bytes_in = o->bytes_in,
        .bytes_out = o->bytes_out,
        .client = o->peer,
        .app_id = call ? (call->log_app_id ? call->log_app_id : call->app_id) : 0,
        .user_id = call ? call->log_user_id : 0,
        .rpc_len = rpc ? rpc->grpc_path_len - 1 : 0,
        .protocol_len = metric_form_name_lens[o->form],
        .code_len = metric_code_name_lens[code],
        .client_len = o->peer_len,
    };
    if (log_access(m->log, &line) != 0)
        METRIC_ADD(m->log_dropped, 1);
}
