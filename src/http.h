/* http.h - the one h2o handler behind every path: picks the wire form from
 * the Content-Type (JSON, binary protobuf, gRPC, gRPC-Web), the RPC from the
 * router, decodes the request, calls the handler and encodes its answer in
 * the caller's form. Knows nothing of tokens, users or passwords. */
#ifndef TOKEND_HTTP_H
#define TOKEND_HTTP_H

#include <h2o.h>
#include "metrics.h"
#include "router.h"
#include "tokend.h"

/* `metrics`: GET /metrics is answered on this port too (no --metrics-listen), or NULL. */
void http_register(h2o_pathconf_t *pathconf, tokend_ctx *ctx, const router *router,
                   const metrics_registry *metrics);
/* The --metrics-listen port's handler: GET /metrics only. */
void http_register_metrics(h2o_pathconf_t *pathconf, tokend_ctx *ctx, const router *router,
                           const metrics_registry *metrics);

#endif
