/* http_obs.h - what the HTTP layer observes of each request, kept apart
 * from http.c's request handling: its start, its request id (taken from
 * x-request-id, or made, and sent back), and at its end the loop's
 * counters (metrics.h) and its access log line (log.h). */
#ifndef TOKEND_HTTP_OBS_H
#define TOKEND_HTTP_OBS_H

#include <stdint.h>
#include <h2o.h>
#include "metrics.h"
#include "rpc.h"

#define HTTP_REQUEST_ID_MAX 64

typedef struct {
    int64_t start_ns;          /* CLOCK_MONOTONIC */
    h2o_loop_t *loop;          /* its wall clock, read once an iteration, times the log line */
    const struct router *router;
    size_t rpc;                /* router index; SIZE_MAX: no RPC */
    int form;                  /* METRIC_JSON ... */
    status_code code;
    int http_status;
    size_t bytes_out;
    /* The request id (request_id_len bytes; NULL: none) is in the request,
     * its header or made in its pool, as the reply's header sends it. */
    const char *request_id;
    /* The client's address as text (peer_len bytes, then a NUL; "" when
     * not known): the thread's (http_obs_peer), good while on_req runs. */
    const char *peer;
    size_t peer_len;
    /* for the log line of a call that outlives its request (http_obs_keep) */
    char peer_text[64];
    char request_id_text[HTTP_REQUEST_ID_MAX];
    char method[8];
    char path[160];
    size_t request_id_len, method_len, path_len, bytes_in;
} http_obs;

/* At the start of on_req: the time, the peer, the request id (also added to the
 * reply's headers: x-request-id, which gRPC clients see as initial metadata).
 * client_id is the request's first x-request-id header (len 0: none),
 * found by http.c's one pass over the headers. */
void http_obs_begin(http_obs *o, h2o_req_t *req, h2o_iovec_t client_id, metrics_loop *m,
                    const struct router *router);
/* When a call is to answer after on_req has returned: keeps what the log
 * line shows of the request, which may be gone by then. */
void http_obs_keep(http_obs *o, h2o_req_t *req);
/* Once answered: counts it in m and writes its log line. req is NULL when
 * the client has gone; call (may be NULL) says whom it was about. */
void http_obs_end(http_obs *o, h2o_req_t *req, const rpc_call *call, metrics_loop *m);

#endif
