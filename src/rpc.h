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
#define RPC_PLATFORM_MAX 6               /* 1 ios .. 6 web; 0: not said */

/* The event loop a call belongs to, as the rpc layer sees it: where the
 * call's pool jobs come back to, and a count of the calls in flight (a
 * stopping loop waits for them). Each loop of the server is one
 * (server.c); a unit test brings its own. */
typedef struct rpc_loop rpc_loop;
struct rpc_loop {
    /* From a worker thread: runs rpc_job_returned(job) on the loop's thread. */
    void (*post)(rpc_loop *loop, pool_job *job);
    /* On the loop's thread: a call starts / a call has been answered. */
    void (*enter)(rpc_loop *loop);
    void (*leave)(rpc_loop *loop);
    /* The loop's counters and access log (metrics.h), written only on the
     * loop's thread; NULL counts nothing. */
    struct metrics_loop *metrics;
};

typedef struct rpc_call rpc_call;
struct rpc_call {
    tokend_ctx *ctx;
    /* metadata, copied out of the request so slow work may outlive it */
    uint64_t app_id;                     /* 0: not given */
    uint64_t as_user_id, as_group_id;    /* user_id / group_id headers */
    int32_t platform;
    int waited_fresh;                    /* rpc_wait_fresh ran the handler again */
    int64_t deadline_ms;                 /* on rpc_clock_ms's clock; 0: none */
    /* who the call turned out to be about, for the access log: set by
     * rpc_auth.c (the caller) and the logins (the user logged in) */
    uint64_t log_app_id, log_user_id;
    /* the answer */
    status_code status;
    int retry_after;                     /* seconds, for UNAVAILABLE / RESOURCE_EXHAUSTED */
    ProtobufCClosure closure;
    rpc_loop *loop;                      /* the call's event loop (set by the wire layer) */
    /* runs the call's handler again, on the loop (set by the wire layer, or
     * NULL); for rpc_wait_fresh */
    void (*again)(rpc_call *call);
    /* A streaming handler's own state across the messages of one stream
     * (zero at its start): there is no other per-stream place to keep it. */
    uint32_t stream[2];
    /* The caller's address ("" when not known), for the throttles. It may
     * point at the wire layer's text of it while the request is handled;
     * rpc_call_keep copies it into peer_text. */
    const char *peer;
    /* The user agent header's bytes in the request (not NUL-terminated),
     * until rpc_user_agent copies them into user_agent_text. */
    const char *agent_src;
    size_t agent_len;
    /* The texts last, one after the other (rpc_call_clear); the token
     * last of all, so that a wire layer can keep what else must be wiped
     * right after it, and wipe both at once */
    char user_agent_text[RPC_AGENT_MAX]; /* read through rpc_user_agent */
    char peer_text[64];
    char message[RPC_MESSAGE_MAX];       /* the answer's, with status */
    char access_token[RPC_TOKEN_MAX];
};

/* Clears a call for reuse: every field, and the texts to "". The texts are
 * most of the call's 800 bytes, so only their first bytes are written. */
void rpc_call_clear(rpc_call *call);

/* The caller's user agent as printable ASCII ('?' for any other byte: it
 * is stored and sent back in proto3 strings, which must be UTF-8), cut to
 * RPC_AGENT_MAX - 1; "" when none. Copied from the request on first use:
 * most calls never read it. */
const char *rpc_user_agent(rpc_call *call);
/* For the wire layer, when a call is to outlive its request: copies what
 * the call still reads from the request (user agent, peer) into the call. */
void rpc_call_keep(rpc_call *call);

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
    int slow;                      /* a password hash: pool_submit_slow's bound */
};
int rpc_offload(rpc_call *call, rpc_job *job, void (*work)(pool_job *),
                void (*finish)(rpc_job *));
/* Called by the call's rpc_loop on its thread when a job comes back. */
void rpc_job_returned(pool_job *job);

/* Slow or writing work as one function on the pool: `run` fills the task's
 * status (ST_OK by default) and, optionally, reply; the call is answered
 * with reply, or BoolReply{true} when there is none. `cleanup` (optional)
 * frees what run allocated. Handlers allocate a larger struct that starts
 * with rpc_task, via rpc_task_new. */
typedef struct rpc_task rpc_task;
struct rpc_task {
    rpc_job job;
    status_code status;
    char message[RPC_MESSAGE_MAX];
    const ProtobufCMessage *reply;
    void (*run)(rpc_task *task);
    void (*cleanup)(rpc_task *task);     /* on the loop, after the answer */
    rpc_call *call;
    /* A throttle ticket whose take waits for the worker (cluster mode):
     * settled before run; a wait answers RESOURCE_EXHAUSTED. */
    throttle_ticket *ticket;
    store_audit audit;             /* filled by rpc_task_audit */
    char audit_detail[160];
};
void *rpc_task_new(rpc_call *call, size_t size);
/* Sends the task to the pool (answering UNAVAILABLE and freeing it when full). */
void rpc_task_start(rpc_task *task, void (*run)(rpc_task *));
void rpc_task_fail(rpc_task *task, status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Maps a store error to a status with a message; returns -1 unless STORE_OK. */
int rpc_task_store(rpc_task *task, int rc, const char *what);

/* Who is calling, from the access-token header (rpc_auth.c). */
typedef struct {
    uint64_t app_id;
    uint64_t user_id;            /* the user acted as; 0 for a bare admin token */
    int admin;                   /* the caller holds an admin token */
    uint8_t hash[CRYPTO_HASH_BYTES];
    char actor[40];              /* for the audit log: "admin:<id>" or "user:<id>" */
} rpc_auth;

/* Any valid token (user or admin). On failure the call has been answered. */
int rpc_auth_any(rpc_call *call, rpc_auth *auth);
/* An admin token of the app. */
int rpc_auth_admin(rpc_call *call, rpc_auth *auth);
/* A user: their own token, or an admin token with a user_id or group_id header. */
int rpc_auth_user(rpc_call *call, rpc_auth *auth);
/* The same, but an admin's user_id may name a deleted user, or another
 * app's (answered alike, so that it tells nothing): an admin can always end
 * every session of a user id of its app. The caller's write must check the
 * app (store_user_revoke does). */
int rpc_auth_user_or_gone(rpc_call *call, rpc_auth *auth);
/* Checks a session already read as an admin session of the call's app. */
int rpc_auth_admin_session(rpc_call *call, const store_session *ss,
                           const uint8_t hash[CRYPTO_HASH_BYTES], rpc_auth *auth);
/* This thread's cache of checked admin tokens (rpc_auth.c). find: the
 * entry of the call's access-token, or NULL. accept: with the admin
 * generation read in the call's transaction, 1 (auth filled), 0 (stale:
 * dropped; check the token afresh) or -1 (expired, or not of the call's
 * app_id: the call has been answered). put: after a full check that found
 * an admin session, with the generation read in the same transaction. */
typedef struct rpc_admin_entry rpc_admin_entry;
const rpc_admin_entry *rpc_admin_cache_find(const rpc_call *call);
int rpc_admin_cache_accept(rpc_call *call, const rpc_admin_entry *e, uint64_t gen,
                           rpc_auth *auth);
void rpc_admin_cache_put(const rpc_call *call, const rpc_auth *auth, int64_t expire_ms,
                         uint64_t gen);
/* Empties this thread's cache (tests). */
void rpc_admin_cache_clear(void);
/* Hashes a token's text with the store's newest key; -1 if it cannot be a token. */
int rpc_token_hash(rpc_call *call, const char *text, uint8_t hash[CRYPTO_HASH_BYTES]);
/* A token not found under the newest key (its hash `tried`, may be NULL):
 * tries the older keys of the ring, newest first, re-read in case another
 * process rotated. `find` returns a STORE_* code; on STORE_OK `hash` is
 * the hash that found it. So a token of the current key costs one hash,
 * as before any rotation. */
typedef int (*rpc_token_find_fn)(rpc_call *call, const uint8_t hash[CRYPTO_HASH_BYTES], void *arg);
int rpc_token_find_older(rpc_call *call, const char *text, const uint8_t tried[CRYPTO_HASH_BYTES],
                         uint8_t hash[CRYPTO_HASH_BYTES], rpc_token_find_fn find, void *arg);
/* The same for a session: STORE_OK with *out NULL when none has the token. */
int rpc_session_older(rpc_call *call, const char *text, const uint8_t tried[CRYPTO_HASH_BYTES],
                      uint8_t hash[CRYPTO_HASH_BYTES], store_session **out,
                      ProtobufCAllocator *alloc);
/* Fills an audit record of an admin's action (who, what, when), for the
 * store call that makes the change to append in the same transaction. */
const store_audit *rpc_audit_fill(store_audit *e, char *detail, size_t detail_len,
                                  const rpc_auth *auth, const char *action, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
#define rpc_task_audit(task, auth, action, ...)                                              \
    rpc_audit_fill(&(task)->audit, (task)->audit_detail, sizeof (task)->audit_detail, (auth),  \
                   (action), __VA_ARGS__)

/* Copies a request's text field into a fixed buffer; a too long one fails
 * the call with INVALID_ARGUMENT naming the field. 0 or -1. */
int rpc_copy_field(rpc_call *call, char *out, size_t outlen, const char *in, const char *field);

/* The app a call acts in: the app_id header, else the data directory's
 * default app. On failure the call has been answered. */
int rpc_app(rpc_call *call, store_app **app);

/* Cluster mode: a read found nothing (a token, a session, a device), but
 * another node may have written it a moment ago (a login answered there,
 * its token verified here at once). Parks the call until this node's feed
 * has applied every change committed before now, at most 1 s, then runs
 * the handler again from the start. Returns 1 when parked: the handler
 * returns at once without answering. 0 (answer from what is local): one
 * node, the second time for this call, or the cluster database unreachable.
 * The wait costs PostgreSQL nothing per call: the feed's one poll at a time
 * serves every parked call (cluster.h). */
int rpc_wait_fresh(rpc_call *call);

/* Wall-clock time, ms since the Unix epoch: for what is stored and shown
 * (creation times, token expiry), which must mean the same after a restart. */
int64_t rpc_now_ms(void);
/* Monotonic time in ms, for deadlines: a clock step cannot cut a call short
 * or stretch it. Only differences between two readings mean anything. */
int64_t rpc_clock_ms(void);
/* 1 once the call's deadline has passed: slow work checks it before
 * starting and before committing, so a call answered DEADLINE_EXCEEDED
 * has changed nothing. */
int rpc_past_deadline(const rpc_call *call);

#endif
