/* rpc_health.c - grpc.health.v1.Health, for load balancers,
 * grpc_health_probe and GET /healthz.
 *
 * SERVING while the store answers a read: verify, store and push look-ups
 * are all reads, so a node serves them even when PostgreSQL is down (cluster
 * mode). A load balancer should keep such a node: taking every node out
 * because the database is away would turn a write outage into a full one.
 * The service name "tokend.v1.Tokend.Writes" answers for writes: SERVING
 * when they can commit (always on one node; in cluster mode while the
 * database is reachable), for balancers that route writes apart.
 * NOT_SERVING: the store does not answer, or (cluster mode, database up)
 * this node's replica has lagged more than 5 s behind the change log, so
 * its reads are stale: the balancer should send reads to the others. */
#include <string.h>
#include "rpc.h"
#include "rpc_handlers.h"

#define STALE_MS 5000

void rpc_health_check(Grpc__Health__V1__Health_Service *service,
                      const Grpc__Health__V1__HealthCheckRequest *req,
                      Grpc__Health__V1__HealthCheckResponse_Closure closure, void *data)
{
    rpc_call *call = data;
    Grpc__Health__V1__HealthCheckResponse reply = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    Grpc__Health__V1__ClusterHealth ch = GRPC__HEALTH__V1__CLUSTER_HEALTH__INIT;
    store_cluster_info ci;
    uint64_t app;
    int writes = strcmp(req->service, "tokend.v1.Tokend.Writes") == 0;

    if (req->service[0] && strcmp(req->service, "tokend.v1.Tokend") != 0 && !writes) {
        rpc_fail(call, ST_NOT_FOUND, "unknown service \"%s\"", req->service);
        return;
    }
    int rc = store_default_app(call->ctx->store, &app);
    int up = rc == STORE_OK || rc == STORE_NOTFOUND;
    store_cluster_status(call->ctx->store, &ci);
    if (ci.clustered) {
        ch.database = ci.database_up;
        ch.applied_seq = ci.applied_seq;
        ch.latest_seq = ci.latest_seq;
        ch.lag_ms = ci.lag_ms;
        ch.polls = ci.polls;
        ch.miss_polls = ci.wait_polls;
        ch.misses = ci.waits;
        ch.bootstraps = ci.bootstraps;
        reply.replica_case = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__REPLICA_CLUSTER;
        reply.cluster = &ch;
        if (writes)
            up = up && ci.database_up;
        else if (ci.database_up && ci.lag_ms > STALE_MS)
            up = 0;
    }
    if (!up) {
        rpc_fail(call, ST_UNAVAILABLE, "%s",
                 rc != STORE_OK && rc != STORE_NOTFOUND ? "the data store does not answer"
                 : writes ? "cluster database unavailable: writes are refused, reads go on"
                          : "this node's replica is more than 5 s behind the cluster");
        return;
    }
    reply.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    closure(&reply, call);
}

/* Not served. h2o 2.2 cannot hold a stream open (see http.c), and a Watch
 * that ends after its first answer is re-opened at once, in a loop, by every
 * client doing client-side health checking. UNIMPLEMENTED tells such a
 * client (gRFC A17) to stop checking and take the server as ready. */
void rpc_health_watch(Grpc__Health__V1__Health_Service *service,
                      const Grpc__Health__V1__HealthCheckRequest *req,
                      Grpc__Health__V1__HealthCheckResponse_Closure closure, void *data)
{
    rpc_fail(data, ST_UNIMPLEMENTED,
             "Health/Watch is not served (tokend cannot hold a stream open): use Health/Check");
}
