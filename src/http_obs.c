/* http_obs.c - request ids, metrics and access log lines for http.c. */
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

static void make_id(char *out, metrics_loop *m)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(m->request_id_prefix);
    uint64_t v = ++m->next_request_id;
    char b[17];
    int i = 16;
    b[16] = '\0';
    do
        b[--i] = hex[v & 15];
    while (v >>= 4);
    memcpy(out, m->request_id_prefix, n);
    memcpy(out + n, b + i, (size_t)(17 - i));
}

void http_obs_begin(http_obs *o, h2o_req_t *req, h2o_iovec_t client_id, metrics_loop *m,
                    const struct router *router)
{
    o->start_ns = now_ns();
    o->router = router;
    o->rpc = SIZE_MAX;
    o->form = METRIC_JSON;
    o->code = ST_OK;
    o->http_status = 0;
    o->bytes_out = 0;
    o->path_len = 0;
    o->bytes_in = req->entity.len;
    if (valid_id(client_id.base, client_id.len)) {
        memcpy(o->request_id, client_id.base, client_id.len);
        o->request_id[client_id.len] = '\0';
    } else if (m) {
        make_id(o->request_id, m);
    } else {
        o->request_id[0] = '\0';
    }
    size_t idlen = strlen(o->request_id);
    static const h2o_iovec_t request_id_name = {H2O_STRLIT("x-request-id")};
    if (idlen)
        h2_reply_add_unindexed(req, &request_id_name, h2o_strdup(&req->pool, o->request_id, idlen));
    if (log_access_enabled()) {
        size_t n = req->method.len < sizeof o->method - 1 ? req->method.len : sizeof o->method - 1;
        memcpy(o->method, req->method.base, n);
        o->method[n] = '\0';
        /* the path without its query string: a query may carry what is not ours to log */
        size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
        o->path_len = plen < sizeof o->path ? plen : sizeof o->path;
        memcpy(o->path, req->path.base, o->path_len);
    }
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
    char peer[64] = "";
    if (call && call->peer[0]) {
        memcpy(peer, call->peer, sizeof peer);
    } else if (req) {
        struct sockaddr_storage sa;
        socklen_t salen = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&sa);
        if (salen)
            h2o_socket_getnumerichost((struct sockaddr *)&sa, salen, peer);
    }
    log_request line = {
        .request_id = o->request_id[0] ? o->request_id : NULL,
        .method = o->method,
        .path = o->path,
        .path_len = o->path_len,
        .rpc = rpc ? rpc->grpc_path + 1 : NULL,
        .protocol = metric_form_names[o->form],
        .status = o->http_status ? o->http_status : status_http(o->code),
        .code = metric_code_names[code],
        .duration_ns = ns,
        .bytes_in = o->bytes_in,
        .bytes_out = o->bytes_out,
        .client = peer,
        .app_id = call ? (call->log_app_id ? call->log_app_id : call->app_id) : 0,
        .user_id = call ? call->log_user_id : 0,
    };
    if (log_access(m->log, &line) != 0)
        METRIC_ADD(m->log_dropped, 1);
}
