/* server.h - listeners and event-loop threads. One h2o loop per thread,
 * each with its own SO_REUSEPORT listener on the same address, so the
 * kernel spreads connections and no lock sits on the request path. */
#ifndef TOKEND_SERVER_H
#define TOKEND_SERVER_H

#include <h2o.h>
#include "router.h"
#include "rpc.h"
#include "tokend.h"

/* Serves until SIGTERM or SIGINT. Returns the process exit status. */
int server_run(tokend_ctx *ctx, const router *router);
/* Blocks SIGTERM, SIGINT and SIGHUP (server_run takes them with sigwait)
 * and ignores SIGPIPE: called before the process makes any thread. Until
 * server_run serves, a thread of its own takes SIGTERM and SIGINT and ends
 * the process at once (start-up has nothing to undo). */
void server_block_signals(void);

/* The event loop a request arrived on (its connection's thread), as the
 * rpc layer's loop: a call's pool jobs come back to it, and it counts the
 * calls in flight so a stop can wait for them. */
rpc_loop *server_loop_of(h2o_req_t *req);

#endif
