/* rpc_health.c - grpc.health.v1.Health: SERVING while the store answers
 * a read, for load balancers, grpc_health_probe and GET /healthz. */
#include <string.h>
#include "rpc.h"
#include "rpc_handlers.h"

void rpc_health_check(Grpc__Health__V1__Health_Service *service,
                      const Grpc__Health__V1__HealthCheckRequest *req,
                      Grpc__Health__V1__HealthCheckResponse_Closure closure, void *data)
{
    rpc_call *call = data;
    Grpc__Health__V1__HealthCheckResponse reply = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    uint64_t app;
    int rc = store_default_app(call->ctx->store, &app);

    if (req->service[0] && strcmp(req->service, "tokend.v1.Tokend") != 0) {
        rpc_fail(call, ST_NOT_FOUND, "unknown service \"%s\"", req->service);
        return;
    }
    reply.status = rc == STORE_OK || rc == STORE_NOTFOUND
                       ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    if (reply.status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
        rpc_fail(call, ST_UNAVAILABLE, "the data store does not answer");
        return;
    }
    closure(&reply, call);
}

/* Sends the current status, then ends the stream: tokend serves a stream
 * as one batch (see http.c), so a watcher re-opens Watch to hear again. */
void rpc_health_watch(Grpc__Health__V1__Health_Service *service,
                      const Grpc__Health__V1__HealthCheckRequest *req,
                      Grpc__Health__V1__HealthCheckResponse_Closure closure, void *data)
{
    rpc_health_check(service, req, closure, data);
}
