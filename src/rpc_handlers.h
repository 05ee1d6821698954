/* rpc_handlers.h - one prototype per RPC of proto/, named rpc_<method> as
 * protoc-c's service INIT macro expects. */
#ifndef TOKEND_RPC_HANDLERS_H
#define TOKEND_RPC_HANDLERS_H

#include <string.h>
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "tokend/v1/tokend.pb-c.h"

/* A handler's body starts with `rpc_call *call = call_data;`: protoc-c
 * passes the call context as the closure's opaque data. */
#define RPC_HANDLER(name, Req, Reply)                                                      \
    void rpc_##name(Tokend__V1__Tokend_Service *service, const Tokend__V1__##Req *req,     \
                    Tokend__V1__##Reply##_Closure closure, void *call_data)

RPC_HANDLER(token_by_id, TokenByIdRequest, TokenReply);
RPC_HANDLER(token_by_login, TokenByLoginRequest, TokenReply);
RPC_HANDLER(token_by_name, TokenByNameRequest, TokenReply);
RPC_HANDLER(verify, VerifyRequest, VerifyReply);
RPC_HANDLER(resolve_store_token, ResolveStoreTokenRequest, ResolveStoreTokenReply);
RPC_HANDLER(push_targets, PushTargetsRequest, PushTargetsReply);
RPC_HANDLER(verify_push_token, VerifyPushTokenRequest, VerifyPushTokenReply);
RPC_HANDLER(logout, Empty, BoolReply);
RPC_HANDLER(logout_all, Empty, BoolReply);
RPC_HANDLER(list_devices, Empty, DeviceList);
RPC_HANDLER(remove_device, DeviceRef, BoolReply);
RPC_HANDLER(kick, DeviceRef, BoolReply);
RPC_HANDLER(change_password, ChangePasswordRequest, BoolReply);
RPC_HANDLER(bind_device_token, BindDeviceTokenRequest, BoolReply);
RPC_HANDLER(unbind_device_token, UnbindDeviceTokenRequest, BoolReply);
RPC_HANDLER(delete_user, DeleteUserRequest, BoolReply);
RPC_HANDLER(register_user, RegisterRequest, RegisterReply);
RPC_HANDLER(register_users, RegisterBatchRequest, RegisterBatchReply);
RPC_HANDLER(set_password, SetPasswordRequest, BoolReply);
RPC_HANDLER(disable_users, UserIdList, BoolReply);
RPC_HANDLER(enable_users, UserIdList, BoolReply);
RPC_HANDLER(list_users, ListUsersRequest, UserList);
RPC_HANDLER(create_user, CreateUserRequest, User);
RPC_HANDLER(get_user, UserRef, User);
RPC_HANDLER(update_user, UpdateUserRequest, User);
RPC_HANDLER(set_group_admin, SetGroupAdminRequest, BoolReply);

void rpc_health_check(Grpc__Health__V1__Health_Service *service,
                      const Grpc__Health__V1__HealthCheckRequest *req,
                      Grpc__Health__V1__HealthCheckResponse_Closure closure, void *call);
void rpc_health_watch(Grpc__Health__V1__Health_Service *service,
                      const Grpc__Health__V1__HealthCheckRequest *req,
                      Grpc__Health__V1__HealthCheckResponse_Closure closure, void *call);
void rpc_reflection_server_reflection_info(
    Grpc__Reflection__V1alpha__ServerReflection_Service *service,
    const Grpc__Reflection__V1alpha__ServerReflectionRequest *req,
    Grpc__Reflection__V1alpha__ServerReflectionResponse_Closure closure, void *call);

#endif
