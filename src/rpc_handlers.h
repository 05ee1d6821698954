/* rpc_handlers.h - one prototype per RPC of proto/, named rpc_<method> as
 * protoc-c's service INIT macro expects. */
#ifndef TOKEND_RPC_HANDLERS_H
#define TOKEND_RPC_HANDLERS_H

#include <string.h>
#include "grpc/health/v1/health.pb-c.h"
#include "tokend/v1/tokend.pb-c.h"

#define RPC_HANDLER(name, Req, Reply)                                                      \
    void rpc_##name(Tokend__V1__Tokend_Service *service, const Tokend__V1__##Req *req,     \
                    Tokend__V1__##Reply##_Closure closure, void *call)

RPC_HANDLER(token_by_id, TokenByIdRequest, TokenReply);
RPC_HANDLER(token_by_login, TokenByLoginRequest, TokenReply);
RPC_HANDLER(token_by_name, TokenByNameRequest, TokenReply);

void rpc_health_check(Grpc__Health__V1__Health_Service *service,
                      const Grpc__Health__V1__HealthCheckRequest *req,
                      Grpc__Health__V1__HealthCheckResponse_Closure closure, void *call);
void rpc_health_watch(Grpc__Health__V1__Health_Service *service,
                      const Grpc__Health__V1__HealthCheckRequest *req,
                      Grpc__Health__V1__HealthCheckResponse_Closure closure, void *call);

#endif
