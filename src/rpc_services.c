/* rpc_services.c - what the chat, push and file services call, with an
 * admin token of the app: Verify (the hot path), ResolveStoreToken,
 * PushTargets and VerifyPushToken. All are reads, answered on the event
 * loop without a pool hop. Verify reads the caller's and the checked
 * token's sessions in one LMDB read transaction (the thread's kept one) and
 * decodes them into a stack arena, so it allocates nothing on the heap; a
 * caller's admin token checked before is not hashed or read again
 * (rpc_auth.c's cache). */
#include <stdlib.h>
#include <string.h>
#include "pb.h"
#include "rpc.h"
#include "rpc_handlers.h"

/* Hashes the caller's token; 0, or -1 with the call answered. */
static int caller_hash(rpc_call *call, uint8_t hash[CRYPTO_HASH_BYTES])
{
    if (!call->access_token[0]) {
        rpc_fail(call, ST_UNAUTHENTICATED, "access-token header (an admin token) is required");
        return -1;
    }
    if (rpc_token_hash(call, call->access_token, hash) != 0) {
        rpc_fail(call, ST_UNAUTHENTICATED, "invalid token");
        return -1;
    }
    return 0;
}

static int expired(const store_session *ss)
{
    return ss->expire_ms && ss->expire_ms <= rpc_now_ms();
}

/* A device is a push target while the session of its login lives: the
 * purge, which clears its push token, may come a while after the expiry. */
static int device_expired(const store_device *d)
{
    return d->session_expire_ms && d->session_expire_ms <= rpc_now_ms();
}

RPC_HANDLER(verify, VerifyRequest, VerifyReply)
{
    rpc_call *call = call_data;
    uint8_t mine[CRYPTO_HASH_BYTES], theirs[CRYPTO_HASH_BYTES];
    const uint8_t *hashes[2] = {NULL, theirs};
    store_session *ss[2];
    _Alignas(16) uint8_t space[4096];  /* not zeroed: 4 KiB of memset on every Verify */
    pb_arena a;
    ProtobufCAllocator alloc = pb_arena_init(&a, space, sizeof space);
    rpc_auth auth;
    uint64_t gen;

    if (!call->access_token[0]) {
        rpc_fail(call, ST_UNAUTHENTICATED, "access-token header (an admin token) is required");
        return;
    }
    /* The caller's admin token, checked before by this thread: reused if no
     * admin token has ended since (the generation, read with the session). */
    const rpc_admin_entry *cached = rpc_admin_cache_find(call);
    if (!cached && caller_hash(call, mine) != 0)
        return;
    if (!req->token[0]) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "token is required");
        return;
    }
    if (rpc_token_hash(call, req->token, theirs) != 0)
        hashes[1] = NULL;
    for (;;) {
        hashes[0] = cached ? NULL : mine;
        a.used = 0;
        int rc = store_sessions_get_gen(call->ctx->store, &gen, 2, hashes, ss, &alloc);
        /* Tokens of an older key (after a rotation) cost more; others nothing. */
        if (rc == STORE_OK && !cached && !ss[0])
            rc = rpc_session_older(call, call->access_token, mine, mine, &ss[0], &alloc);
        if (rc == STORE_OK && !ss[1] && hashes[1])
            rc = rpc_session_older(call, req->token, theirs, theirs, &ss[1], &alloc);
        if (rc != STORE_OK) {
            rpc_fail(call, ST_UNAVAILABLE, "%s", store_strerror(rc));
            return;
        }
        if (!cached)
            break;
        if ((rc = rpc_admin_cache_accept(call, cached, gen, &auth)) < 0)
            return;
        if (rc > 0)
            break;
        cached = NULL;  /* an admin token ended since: check this one afresh */
        if (caller_hash(call, mine) != 0)
            return;
    }
    /* Cluster mode: a token another node issued a moment ago. */
    if (((!cached && !ss[0]) || (hashes[1] && !ss[1])) && rpc_wait_fresh(call))
        return;
    if (!cached) {
        if (rpc_auth_admin_session(call, ss[0], mine, &auth) != 0)
            return;
        rpc_admin_cache_put(call, &auth, ss[0]->expire_ms, gen);
    }
    if (!ss[1] || ss[1]->app_id != auth.app_id) {
        rpc_fail(call, ST_UNAUTHENTICATED, "invalid token");
        return;
    }
    if (expired(ss[1])) {
        rpc_fail(call, ST_UNAUTHENTICATED, "token expired");
        return;
    }
    Tokend__V1__VerifyReply reply = TOKEND__V1__VERIFY_REPLY__INIT;
    reply.user_id = (int64_t)ss[1]->user_id;
    reply.app_id = (int64_t)ss[1]->app_id;
    reply.device_guid = ss[1]->device_guid;
    reply.device_sn = ss[1]->device_sn;
    reply.expire = ss[1]->expire_ms;
    reply.admin = ss[1]->admin;
    reply.encrypt_type = ss[1]->encrypt_type;
    reply.public_key = ss[1]->public_key;
    closure(&reply, call);
}

static int find_store_token(rpc_call *call, const uint8_t hash[CRYPTO_HASH_BYTES], void *arg)
{
    return store_store_token_get(call->ctx->store, hash, (store_session **)arg);
}

typedef struct {
    uint64_t *app_id;
    char *guid;
    size_t guid_len;
} push_find;

static int find_push(rpc_call *call, const uint8_t hash[CRYPTO_HASH_BYTES], void *arg)
{
    push_find *p = arg;
    return store_push_lookup(call->ctx->store, hash, p->app_id, p->guid, p->guid_len);
}

RPC_HANDLER(resolve_store_token, ResolveStoreTokenRequest, ResolveStoreTokenReply)
{
    rpc_call *call = call_data;
    uint8_t hash[CRYPTO_HASH_BYTES];
    store_session *ss = NULL;
    rpc_auth auth;
    if (rpc_auth_admin(call, &auth) != 0)
        return;
    if (!req->store_token[0]) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "store_token is required");
        return;
    }
    int parsed = rpc_token_hash(call, req->store_token, hash) == 0;
    int rc = parsed ? store_store_token_get(call->ctx->store, hash, &ss) : STORE_NOTFOUND;
    if (rc == STORE_NOTFOUND && parsed)  /* a token of an older key? */
        rc = rpc_token_find_older(call, req->store_token, hash, hash, find_store_token, &ss);
    if (rc == STORE_NOTFOUND && parsed && rpc_wait_fresh(call))
        return;
    if (rc != STORE_OK || ss->app_id != auth.app_id) {
        rpc_fail(call, rc == STORE_OK || rc == STORE_NOTFOUND ? ST_UNAUTHENTICATED : ST_UNAVAILABLE,
                 "%s", rc == STORE_OK || rc == STORE_NOTFOUND ? "invalid store_token" : store_strerror(rc));
    } else if (expired(ss)) {
        rpc_fail(call, ST_UNAUTHENTICATED, "store_token expired");
    } else {
        Tokend__V1__ResolveStoreTokenReply reply = TOKEND__V1__RESOLVE_STORE_TOKEN_REPLY__INIT;
        reply.user_id = (int64_t)ss->user_id;
        reply.app_id = (int64_t)ss->app_id;
        reply.access_key_secret = ss->access_key_secret;
        reply.expire = ss->expire_ms;
        closure(&reply, call);
    }
    if (ss)
        protobuf_c_message_free_unpacked(&ss->base, NULL);
}

RPC_HANDLER(push_targets, PushTargetsRequest, PushTargetsReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    store_device **devs = NULL;
    size_t n = 0;
    if (rpc_auth_admin(call, &auth) != 0)
        return;
    if (req->user_id <= 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "user_id is required");
        return;
    }
    int rc = store_devices_list(call->ctx->store, auth.app_id, (uint64_t)req->user_id, &devs, &n);
    if (rc != STORE_OK) {
        rpc_fail(call, ST_UNAVAILABLE, "%s", store_strerror(rc));
        return;
    }
    if (n == 0 && rpc_wait_fresh(call)) {
        store_devices_free(devs, n);
        return;
    }
    Tokend__V1__PushTargetsReply reply = TOKEND__V1__PUSH_TARGETS_REPLY__INIT;
    char **push = calloc(n + 1, sizeof *push);
    Tokend__V1__DeviceToken *dt = calloc(n + 1, sizeof *dt);
    Tokend__V1__DeviceToken **dtp = calloc(n + 1, sizeof *dtp);
    char (*text)[CRYPTO_TOKEN_TEXTLEN] = calloc(n + 1, sizeof *text);
    if (!push || !dt || !dtp || !text) {
        rpc_fail(call, ST_RESOURCE_EXHAUSTED, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const store_device *d = devs[i];
        if (device_expired(d))
            continue;
        /* sealed with the key of its login (retired keys: no longer readable) */
        const uint8_t *key = store_token_key_of(call->ctx->store, d->push_key_id);
        if (key && d->push_token_sealed.len == CRYPTO_TOKEN_TEXTLEN - 1 + CRYPTO_SEAL_OVERHEAD &&
            crypto_unseal(text[i], d->push_token_sealed.data, d->push_token_sealed.len, key) == 0) {
            text[i][CRYPTO_TOKEN_TEXTLEN - 1] = '\0';
            push[reply.n_push_tokens++] = text[i];
        }
        /* A device's APNs/FCM token is a target while the user is signed
         * in there: its push token (cleared when its last session is
         * revoked) says so; a new login there brings it back. */
        if (d->device_token[0] && d->push_token_hash.len) {
            Tokend__V1__DeviceToken *t = &dt[reply.n_device_tokens];
            tokend__v1__device_token__init(t);
            t->device_sn = d->device_sn;
            t->device_token = d->device_token;
            t->notifier_name = d->notifier_name;
            dtp[reply.n_device_tokens++] = t;
        }
    }
    reply.push_tokens = push;
    reply.device_tokens = dtp;
    closure(&reply, call);
done:
    if (text)
        crypto_wipe(text, (n + 1) * sizeof *text);
    free(text);
    free(push);
    free(dt);
    free(dtp);
    store_devices_free(devs, n);
}

RPC_HANDLER(verify_push_token, VerifyPushTokenRequest, VerifyPushTokenReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    uint8_t hash[CRYPTO_HASH_BYTES];
    char guid[STORE_GUID_MAX + 1];
    uint64_t app_id = 0;
    store_device *d = NULL;
    if (rpc_auth_admin(call, &auth) != 0)
        return;
    if (!req->push_token[0]) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "push_token is required");
        return;
    }
    int parsed = rpc_token_hash(call, req->push_token, hash) == 0;
    int rc = parsed ? store_push_lookup(call->ctx->store, hash, &app_id, guid, sizeof guid)
                    : STORE_NOTFOUND;
    push_find pf = {&app_id, guid, sizeof guid};
    if (rc == STORE_NOTFOUND && parsed)  /* a token of an older key? */
        rc = rpc_token_find_older(call, req->push_token, hash, hash, find_push, &pf);
    if (rc == STORE_NOTFOUND && parsed && rpc_wait_fresh(call))
        return;
    if (rc == STORE_OK && app_id == auth.app_id)
        rc = store_device_get(call->ctx->store, app_id, guid, &d);
    else if (rc == STORE_OK)
        rc = STORE_NOTFOUND;
    if (rc != STORE_OK) {
        rpc_fail(call, rc == STORE_NOTFOUND ? ST_UNAUTHENTICATED : ST_UNAVAILABLE, "%s",
                 rc == STORE_NOTFOUND ? "invalid push_token" : store_strerror(rc));
        return;
    }
    if (device_expired(d)) {
        rpc_fail(call, ST_UNAUTHENTICATED, "push_token expired");
        protobuf_c_message_free_unpacked(&d->base, NULL);
        return;
    }
    Tokend__V1__VerifyPushTokenReply reply = TOKEND__V1__VERIFY_PUSH_TOKEN_REPLY__INIT;
    reply.device_guid = guid;
    reply.user_id = (int64_t)d->user_id;
    reply.app_id = (int64_t)app_id;
    reply.device_sn = d->device_sn;
    closure(&reply, call);
    protobuf_c_message_free_unpacked(&d->base, NULL);
}
