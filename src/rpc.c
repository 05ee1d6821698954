/* rpc.c - the services tokend exposes and the call plumbing every handler
 * shares: failing a call, sending slow work to the pool and back. */
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include "rpc.h"
#include "rpc_handlers.h"
#include "utf8.h"

static Tokend__V1__Tokend_Service tokend_service = TOKEND__V1__TOKEND__INIT(rpc_);

static Grpc__Health__V1__Health_Service health_service = GRPC__HEALTH__V1__HEALTH__INIT(rpc_health_);

static Grpc__Reflection__V1alpha__ServerReflection_Service reflection_service =
    GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION__INIT(rpc_reflection_);

static ProtobufCService *const services[] = {
    &tokend_service.base,
    &health_service.base,
    &reflection_service.base,
    NULL,
};

ProtobufCService *const *rpc_services(void)
{
    return services;
}

/* A message cut to fit must not end inside a UTF-8 character: proto3
 * strings must be valid UTF-8 in every wire form. */
static void format_message(char *out, size_t len, const char *fmt, va_list ap)
{
    int n = vsnprintf(out, len, fmt, ap);
    if (n >= 0 && (size_t)n >= len)
        out[utf8_prefix(out, strlen(out))] = '\0';
}

_Static_assert(offsetof(rpc_call, peer_text) == offsetof(rpc_call, user_agent_text) + RPC_AGENT_MAX &&
               offsetof(rpc_call, message) == offsetof(rpc_call, peer_text) + 64 &&
               offsetof(rpc_call, access_token) == offsetof(rpc_call, message) + RPC_MESSAGE_MAX &&
               sizeof(rpc_call) == offsetof(rpc_call, access_token) + RPC_TOKEN_MAX,
               "rpc_call's texts come last, one after the other, the token at the very end");

void rpc_call_clear(rpc_call *call)
{
    /* The fields in parts of at most 64 bytes, which GCC writes as vector
     * stores (a longer memset is rep stosq, a counted step per word). */
    _Static_assert(offsetof(rpc_call, user_agent_text) > 64 &&
                   offsetof(rpc_call, user_agent_text) <= 2 * 64, "rpc_call: two clears");
    memset(call, 0, 64);
    memset((char *)call + 64, 0, offsetof(rpc_call, user_agent_text) - 64);
    call->user_agent_text[0] = call->peer_text[0] = call->message[0] = '\0';
    /* as much of the token as rpc_admin_cache_find compares, so none of
     * the bytes it reads is unset */
    memset(call->access_token, 0, CRYPTO_TOKEN_TEXTLEN);
    call->peer = call->peer_text;
}

/* Printable ASCII, '?' for other bytes, cut to outlen - 1. */
static void copy_printable(const char *s, size_t len, char *out, size_t outlen)
{
    const uint64_t ones = 0x0101010101010101ull, highs = ones << 7;
    size_t n = len < outlen - 1 ? len : outlen - 1, i = 0;
    /* Eight at a time while all eight are printable, as user agents are: a
     * high bit in w - 0x20.. or in w is a byte below 0x20 or past 0x7F,
     * and a zero byte of w ^ 0x7F.. (borrowing to its high bit) is a DEL.
     * The last eight overlap the eight before. */
    while (n >= 8 && i < n) {
        uint64_t w, del;
        memcpy(&w, s + i, 8);
        del = w ^ (0x7F * ones);
        if (((w - 0x20 * ones) | w | ((del - ones) & ~del)) & highs)
            break;
        memcpy(out + i, &w, 8);
        i = i + 8 == n ? n : i + 16 <= n ? i + 8 : n - 8;
    }
    for (; i < n; i++)
        out[i] = s[i] >= 0x20 && s[i] <= 0x7E ? s[i] : '?';
    out[n] = '\0';
}

const char *rpc_user_agent(rpc_call *call)
{
    if (call->agent_src) {
        copy_printable(call->agent_src, call->agent_len, call->user_agent_text,
                       sizeof call->user_agent_text);
        call->agent_src = NULL;
    }
    return call->user_agent_text;
}

void rpc_call_keep(rpc_call *call)
{
    rpc_user_agent(call);
    if (call->peer != call->peer_text) {
        snprintf(call->peer_text, sizeof call->peer_text, "%s", call->peer);
        call->peer = call->peer_text;
    }
}

void rpc_fail(rpc_call *call, status_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    format_message(call->message, sizeof call->message, fmt, ap);
    va_end(ap);
    call->status = code;
    call->closure(NULL, call);
}

/* A login the pool refused at once, or shed when its turn came: the same
 * answer, as either way it can be tried again in a moment. */
static const char busy_message[] = "server busy: too many logins in progress, retry shortly";

/* On the worker, once the work is done: back to the call's event loop. */
static void post_to_loop(pool_job *job)
{
    rpc_call *call = ((rpc_job *)job)->call;
    call->loop->post(call->loop, job);
}

/* Retry-After for a password check the pool refused or shed: when a
 * worker's rest ends (it may last several seconds at a high hash cost),
 * else 1 s. */
static int busy_retry_after(const rpc_call *call, int slow)
{
    unsigned ms = slow ? pool_rest_left_ms(call->ctx->pool) : 0;
    return ms ? (int)((ms + 999) / 1000) : 1;
}

int rpc_offload(rpc_call *call, rpc_job *job, void (*work)(pool_job *),
                void (*finish)(rpc_job *))
{
    job->call = call;
    job->finish = finish;
    job->base.work = work;
    job->base.post = post_to_loop;
    if ((job->slow ? pool_submit_slow : pool_submit)(call->ctx->pool, &job->base) != 0) {
        call->retry_after = busy_retry_after(call, job->slow);
        rpc_fail(call, ST_UNAVAILABLE, "%s", busy_message);
        return -1;
    }
    return 0;
}

void rpc_job_returned(pool_job *job)
{
    rpc_job *j = (rpc_job *)job;
    j->finish(j);
}

void *rpc_task_new(rpc_call *call, size_t size)
{
    rpc_task *t = calloc(1, size);
    if (!t) {
        rpc_fail(call, ST_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    t->call = call;
    return t;
}

void rpc_task_fail(rpc_task *task, status_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    format_message(task->message, sizeof task->message, fmt, ap);
    va_end(ap);
    task->status = code;
}

int rpc_task_store(rpc_task *task, int rc, const char *what)
{
    switch (rc) {
    case STORE_OK: return 0;
    case STORE_NOTFOUND: rpc_task_fail(task, ST_NOT_FOUND, "%s not found", what); break;
    case STORE_EXISTS: rpc_task_fail(task, ST_ALREADY_EXISTS, "%s already exists", what); break;
    default: rpc_task_fail(task, ST_UNAVAILABLE, "%s", store_strerror(rc)); break;
    }
    return -1;
}

static void task_work(pool_job *job)
{
    rpc_task *t = (rpc_task *)job;
    /* Work that waited in the queue past its deadline is not done at all. */
    int wait = 0;
    if (job->shed) {
        t->call->retry_after = busy_retry_after(t->call, 1);
        rpc_task_fail(t, ST_UNAVAILABLE, "%s", busy_message);
    } else if (rpc_past_deadline(t->call))
        rpc_task_fail(t, ST_DEADLINE_EXCEEDED, "deadline exceeded");
    else if (t->ticket && (wait = throttle_settle(t->call->ctx->throttle, t->ticket)) < 0)
        rpc_task_fail(t, ST_UNAVAILABLE, "%s", store_strerror(STORE_UNAVAILABLE));
    else if (wait > 0) {
        t->call->retry_after = wait;  /* the call is the task's until it goes back */
        rpc_task_fail(t, ST_RESOURCE_EXHAUSTED,
                      "too many failed attempts for this account or address: retry in %d s", wait);
    } else
        t->run(t);
}

static void task_finish(rpc_job *job)
{
    static const Tokend__V1__BoolReply yes = {PROTOBUF_C_MESSAGE_INIT(&tokend__v1__bool_reply__descriptor), 1};
    rpc_task *t = (rpc_task *)job;
    if (t->status == ST_OK)
        t->call->closure(t->reply ? t->reply : &yes.base, t->call);
    else
        rpc_fail(t->call, t->status, "%s", t->message);
    if (t->cleanup)
        t->cleanup(t);
    free(t);
}

void rpc_task_start(rpc_task *task, void (*run)(rpc_task *))
{
    task->run = run;
    if (rpc_offload(task->call, &task->job, task_work, task_finish) != 0) {
        task->status = ST_UNAVAILABLE;
        if (task->cleanup)
            task->cleanup(task);
        free(task);
    }
}

int rpc_copy_field(rpc_call *call, char *out, size_t outlen, const char *in, const char *field)
{
    size_t n = strlen(in);
    if (n >= outlen) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s must be at most %zu bytes", field, outlen - 1);
        return -1;
    }
    memcpy(out, in, n + 1);
    return 0;
}

int rpc_app(rpc_call *call, store_app **app)
{
    uint64_t id = call->app_id;
    int rc = STORE_OK;
    if (!id && (rc = store_default_app(call->ctx->store, &id)) == STORE_NOTFOUND) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "app_id header is required (no default app)");
        return -1;
    }
    if (rc == STORE_OK)
        rc = store_app_get(call->ctx->store, id, app);
    if (rc == STORE_NOTFOUND) {
        rpc_fail(call, ST_NOT_FOUND, "unknown app_id %llu", (unsigned long long)id);
        return -1;
    }
    if (rc != STORE_OK) {
        rpc_fail(call, ST_UNAVAILABLE, "%s", store_strerror(rc));
        return -1;
    }
    return 0;
}

static void fresh_finish(rpc_job *job)
{
    rpc_call *call = job->call;
    free(job);
    call->again(call);
}

int rpc_wait_fresh(rpc_call *call)
{
    if (!call->again || call->waited_fresh || !store_clustered(call->ctx->store))
        return 0;
    rpc_job *j = calloc(1, sizeof *j);
    if (!j)
        return 0;
    j->call = call;
    j->finish = fresh_finish;
    j->base.post = post_to_loop;  /* run by the feed's thread: back to the loop */
    call->waited_fresh = 1;
    if (store_wait_fresh(call->ctx->store, &j->base) != 0) {
        free(j);
        return 0;
    }
    return 1;
}

int rpc_past_deadline(const rpc_call *call)
{
    return call->deadline_ms && rpc_clock_ms() >= call->deadline_ms;
}

static int64_t clock_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t rpc_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t rpc_clock_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}
