/* server.h - listeners and event-loop threads. One h2o loop per thread,
 * each with its own SO_REUSEPORT listener on the same address, so the
 * kernel spreads connections and no lock sits on the request path. */
#ifndef TOKEND_SERVER_H
#define TOKEND_SERVER_H

#include <h2o.h>
#include "router.h"
#include "tokend.h"

typedef struct server_thread {
    h2o_context_t h2o;                  /* first: req->conn->ctx points here */
    h2o_multithread_receiver_t jobs;    /* pool jobs coming back to this loop */
    h2o_multithread_receiver_t wakeup;  /* shutdown */
    h2o_accept_ctx_t accept;
    h2o_socket_t *listener;
    int fd;                             /* the listener, opened before the thread */
    unsigned inflight;                  /* calls answered not yet: shutdown waits */
    unsigned conns, max_conns;          /* open connections on this loop */
    pthread_t tid;
    struct server *server;
} server_thread;

/* Serves until SIGTERM or SIGINT. Returns the process exit status. */
int server_run(tokend_ctx *ctx, const router *router);
/* Hands a finished pool job back to the event loop of its call. */
void server_post_job(pool_job *job);

#endif
