/* rpc.h - what an RPC handler sees: its request message and a call
 * context (app, caller's token, impersonation headers, peer), and how it
 * answers: the generated closure with a reply, or rpc_fail() with a status.
 * Handlers know nothing of HTTP, JSON or gRPC framing; the wire layer fills
 * the context and turns the answer into whatever form the caller used.
 *
 * Handlers are bound by protoc-c's generated service INIT macros, so the
 * compiler insists on one handler per RPC in the schema. */
#ifndef TOKEND_RPC_H
#define TOKEND_RPC_H

#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include "pool.h"
#include "status.h"
#include "tokend.h"

#define RPC_MESSAGE_MAX 256
#define RPC_TOKEN_MAX 128
#define RPC_AGENT_MAX 256

typedef struct rpc_call rpc_call;
struct rpc_call {
    tokend_ctx *ctx;
    /* metadata, copied out of the request so slow work may outlive it */
    uint64_t app_id;                     /* 0: not given */
    char access_token[RPC_TOKEN_MAX];
    uint64_t as_user_id, as_group_id;    /* user_id / group_id headers */
    int32_t platform;
    char user_agent[RPC_AGENT_MAX];
    char peer[64];
    int64_t deadline_ms;                 /* 0: none */
    /* the answer */
    status_code status;
    char message[RPC_MESSAGE_MAX];
    int retry_after;                     /* seconds, for UNAVAILABLE / RESOURCE_EXHAUSTED */
    ProtobufCClosure closure;
    /* how a job comes back to this call's event loop (set by the wire layer) */
    void (*post)(pool_job *job);
    void *loop;                          /* the wire layer's event loop, for post */
};

/* Every service the server exposes, NULL-terminated. */
ProtobufCService *const *rpc_services(void);

/* Answers the call with an error; the handler must not touch it after. */
void rpc_fail(rpc_call *call, status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs job->work on the worker pool and `finish` back on the call's event
 * loop. On a full pool the call is answered UNAVAILABLE and -1 returned:
 * the handler must then free its job and return. */
typedef struct rpc_job rpc_job;
struct rpc_job {
    pool_job base;
    rpc_call *call;
    void (*finish)(rpc_job *job);
};
int rpc_offload(rpc_call *call, rpc_job *job, void (*work)(pool_job *),
                void (*finish)(rpc_job *));
/* Called by the wire layer on the loop thread when a job comes back. */
void rpc_job_returned(pool_job *job);

/* The app a call acts in: the app_id header, else the data directory's
 * default app. On failure the call has been answered. */
int rpc_app(rpc_call *call, store_app **app);

int64_t rpc_now_ms(void);

#endif
