/* rpc_auth.c - who is calling: the access-token header resolved to a user
 * session or an app's admin token, and the impersonation an admin token
 * allows (user_id / group_id headers). Messages let a client tell "log in
 * again" (token expired) from "this is not a token" (invalid token). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "rpc.h"

int rpc_token_hash(rpc_call *call, const char *text, uint8_t hash[CRYPTO_HASH_BYTES])
{
    return crypto_token_text_hash(hash, text, strlen(text), store_token_key(call->ctx->store));
}

/* After a miss under the newest key: the ring as it is now (another
 * process may have rotated it), each key but the one tried. Only tokens
 * of an older key, or no token at all, come here. */
int rpc_token_find_older(rpc_call *call, const char *text, const uint8_t tried[CRYPTO_HASH_BYTES],
                         uint8_t hash[CRYPTO_HASH_BYTES], rpc_token_find_fn find, void *arg)
{
    uint8_t raw[CRYPTO_TOKEN_BYTES], h[CRYPTO_HASH_BYTES];
    store *st = call->ctx->store;
    int rc = STORE_NOTFOUND;
    if (crypto_token_parse(raw, text, strlen(text)) != 0)
        return STORE_NOTFOUND;
    store_keys_refresh(st);
    const store_keyring *r = store_keys(st);
    for (size_t i = 0; i < r->n && rc == STORE_NOTFOUND; i++) {
        crypto_token_hash(h, raw, r->keys[i].key);
        if (tried && memcmp(h, tried, CRYPTO_HASH_BYTES) == 0)
            continue;
        if ((rc = find(call, h, arg)) == STORE_OK)
            memcpy(hash, h, CRYPTO_HASH_BYTES);
    }
    crypto_wipe(raw, sizeof raw);
    return rc;
}

typedef struct {
    store_session **out;
    ProtobufCAllocator *alloc;
} session_find;

static int find_session(rpc_call *call, const uint8_t hash[CRYPTO_HASH_BYTES], void *arg)
{
    session_find *f = arg;
    const uint8_t *h = hash;
    int rc = store_sessions_get(call->ctx->store, 1, &h, f->out, f->alloc);
    return rc == STORE_OK && !*f->out ? STORE_NOTFOUND : rc;
}

int rpc_session_older(rpc_call *call, const char *text, const uint8_t tried[CRYPTO_HASH_BYTES],
                      uint8_t hash[CRYPTO_HASH_BYTES], store_session **out,
                      ProtobufCAllocator *alloc)
{
    session_find f = {out, alloc};
    *out = NULL;
    int rc = rpc_token_find_older(call, text, tried, hash, find_session, &f);
    return rc == STORE_NOTFOUND ? STORE_OK : rc;
}

/* --- checked admin tokens, kept per thread -----------------------------------
 * The services call Verify with one admin token, many times a second; its
 * check (decode, keyed hash, a read and a decode of its session) would be
 * most of a Verify. So each thread keeps the admin tokens it has checked,
 * by their text (constant-time compared), with what the check found, and
 * the store's admin generation read in the same transaction as the
 * session. A later call reuses the check only if the generation, read in
 * the call's own transaction, is the same: any admin token's revocation
 * or purge, by any thread or process, moves it, so a revoked token is
 * refused from its next call on. Expiry and the call's app_id are checked
 * at each use, as for an uncached token. Per thread: no lock. */
#define ADMIN_CACHE_SLOTS 16

struct rpc_admin_entry {
    uint64_t serial;                 /* the store's; 0: empty */
    uint64_t gen;
    char text[CRYPTO_TOKEN_TEXTLEN];
    rpc_auth auth;                   /* app_id, admin, hash, actor */
    int64_t expire_ms;
};

static __thread rpc_admin_entry admin_cache[ADMIN_CACHE_SLOTS];

static rpc_admin_entry *admin_slot(const char *text)
{
    /* Tokens are random: two characters spread them well enough. */
    return &admin_cache[((unsigned char)text[0] ^ (unsigned char)text[7] * 3u) %
                        ADMIN_CACHE_SLOTS];
}

const rpc_admin_entry *rpc_admin_cache_find(const rpc_call *call)
{
    /* No strnlen: an entry holds a token's 43 characters and its NUL, so
     * only a text of exactly that token compares equal (the call's array
     * is longer, its first CRYPTO_TOKEN_TEXTLEN bytes set: rpc_call_clear). */
    const char *text = call->access_token;
    rpc_admin_entry *e = admin_slot(text);
    if (e->serial != store_serial(call->ctx->store) ||
        crypto_equal(e->text, text, CRYPTO_TOKEN_TEXTLEN) != 0)
        return NULL;
    return e;
}

static void admin_cache_drop(rpc_admin_entry *e)
{
    crypto_wipe(e, sizeof *e);
}

int rpc_admin_cache_accept(rpc_call *call, const rpc_admin_entry *entry, uint64_t gen,
                           rpc_auth *auth)
{
    rpc_admin_entry *e = (rpc_admin_entry *)entry;
    if (e->gen != gen) {
        admin_cache_drop(e);
        return 0;
    }
    if (e->expire_ms && e->expire_ms <= rpc_now_ms()) {
        admin_cache_drop(e);
        rpc_fail(call, ST_UNAUTHENTICATED, "token expired");
        return -1;
    }
    if (call->app_id && call->app_id != e->auth.app_id) {
        rpc_fail(call, ST_UNAUTHENTICATED, "invalid token for app_id %llu",
                 (unsigned long long)call->app_id);
        return -1;
    }
    *auth = e->auth;
    /* as accept_session records it for the log (log_user_id stays 0: an
     * admin is no user) */
    call->log_app_id = e->auth.app_id;
    return 1;
}

void rpc_admin_cache_put(const rpc_call *call, const rpc_auth *auth, int64_t expire_ms,
                         uint64_t gen)
{
    const char *text = call->access_token;
    if (!auth->admin || strnlen(text, CRYPTO_TOKEN_TEXTLEN) != CRYPTO_TOKEN_TEXTLEN - 1)
        return;
    rpc_admin_entry *e = admin_slot(text);
    memcpy(e->text, text, CRYPTO_TOKEN_TEXTLEN);
    e->serial = store_serial(call->ctx->store);
    e->gen = gen;
    e->auth = *auth;
    e->auth.user_id = 0;
    e->expire_ms = expire_ms;
}

void rpc_admin_cache_clear(void)
{
    crypto_wipe(admin_cache, sizeof admin_cache);
}

static void describe(rpc_auth *auth, const store_session *ss)
{
    static const char hex[] = "0123456789abcdef";
    if (ss->admin) {
        char id[17];
        for (int i = 0; i < 8; i++)
            id[2 * i] = hex[auth->hash[i] >> 4], id[2 * i + 1] = hex[auth->hash[i] & 15];
        id[16] = '\0';
        snprintf(auth->actor, sizeof auth->actor, "admin:%s", id);
    } else {
        snprintf(auth->actor, sizeof auth->actor, "user:%llu", (unsigned long long)ss->user_id);
    }
}

/* Checks a session read for the caller's token: present, unexpired, of
 * the call's app. Fills auth. */
static int accept_session(rpc_call *call, const store_session *ss, rpc_auth *auth)
{
    if (!ss) {
        rpc_fail(call, ST_UNAUTHENTICATED, "invalid token");
        return -1;
    }
    if (ss->expire_ms && ss->expire_ms <= rpc_now_ms()) {
        rpc_fail(call, ST_UNAUTHENTICATED, "token expired");
        return -1;
    }
    if (call->app_id && call->app_id != ss->app_id) {
        rpc_fail(call, ST_UNAUTHENTICATED, "invalid token for app_id %llu",
                 (unsigned long long)call->app_id);
        return -1;
    }
    auth->app_id = ss->app_id;
    auth->admin = ss->admin;
    call->log_app_id = ss->app_id;
    call->log_user_id = ss->admin ? 0 : ss->user_id;
    auth->user_id = ss->admin ? 0 : ss->user_id;
    describe(auth, ss);
    return 0;
}

int rpc_auth_any(rpc_call *call, rpc_auth *auth)
{
    store_session *ss = NULL;
    const uint8_t *h = auth->hash;
    uint64_t gen;
    memset(auth, 0, sizeof *auth);
    if (!call->access_token[0]) {
        rpc_fail(call, ST_UNAUTHENTICATED, "access-token header is required");
        return -1;
    }
    const rpc_admin_entry *e = rpc_admin_cache_find(call);
    if (e) {  /* a checked admin token: only the generation is read */
        int rc = store_sessions_get_gen(call->ctx->store, &gen, 0, NULL, NULL, NULL);
        if (rc != STORE_OK) {
            rpc_fail(call, ST_UNAVAILABLE, "%s", store_strerror(rc));
            return -1;
        }
        if ((rc = rpc_admin_cache_accept(call, e, gen, auth)) != 0)
            return rc > 0 ? 0 : -1;
    }
    if (rpc_token_hash(call, call->access_token, auth->hash) != 0) {
        rpc_fail(call, ST_UNAUTHENTICATED, "invalid token");
        return -1;
    }
    int rc = store_sessions_get_gen(call->ctx->store, &gen, 1, &h, &ss, NULL);
    if (rc == STORE_OK && !ss)  /* a token of an older key? */
        rc = rpc_session_older(call, call->access_token, auth->hash, auth->hash, &ss, NULL);
    if (rc != STORE_OK) {
        rpc_fail(call, ST_UNAVAILABLE, "%s", store_strerror(rc));
        return -1;
    }
    if (!ss && rpc_wait_fresh(call))
        return -1;  /* parked: the handler runs again once the replica caught up */
    rc = accept_session(call, ss, auth);
    if (rc == 0)
        rpc_admin_cache_put(call, auth, ss->expire_ms, gen);
    if (ss)
        protobuf_c_message_free_unpacked(&ss->base, NULL);
    return rc;
}

int rpc_auth_admin_session(rpc_call *call, const store_session *ss,
                           const uint8_t hash[CRYPTO_HASH_BYTES], rpc_auth *auth)
{
    memcpy(auth->hash, hash, CRYPTO_HASH_BYTES);
    if (accept_session(call, ss, auth) != 0)
        return -1;
    if (!auth->admin) {
        rpc_fail(call, ST_PERMISSION_DENIED, "this call needs an admin token of the app");
        return -1;
    }
    return 0;
}

int rpc_auth_admin(rpc_call *call, rpc_auth *auth)
{
    if (rpc_auth_any(call, auth) != 0)
        return -1;
    if (!auth->admin) {
        rpc_fail(call, ST_PERMISSION_DENIED, "this call needs an admin token of the app");
        return -1;
    }
    return 0;
}

/* `gone_ok`: a user_id that names no user at all (deleted) passes, and so
 * does another app's, which must look the same (the caller's write checks
 * the app again and leaves such a user alone). */
static int auth_user(rpc_call *call, rpc_auth *auth, int gone_ok)
{
    if (rpc_auth_any(call, auth) != 0)
        return -1;
    if (!auth->admin) {
        if (call->as_user_id || call->as_group_id) {
            rpc_fail(call, ST_PERMISSION_DENIED,
                     "user_id and group_id headers need an admin token, not a user token");
            return -1;
        }
        return 0;
    }
    if (call->as_group_id) {
        int rc = store_group_admin(call->ctx->store, auth->app_id, call->as_group_id, &auth->user_id);
        if (rc != STORE_OK) {
            rpc_fail(call, rc == STORE_NOTFOUND ? ST_NOT_FOUND : ST_UNAVAILABLE,
                     "unknown group_id %llu", (unsigned long long)call->as_group_id);
            return -1;
        }
    } else if (call->as_user_id) {
        auth->user_id = call->as_user_id;
    } else {
        rpc_fail(call, ST_INVALID_ARGUMENT,
                 "an admin token needs a user_id or group_id header for this call");
        return -1;
    }
    store_user *u = NULL;
    int rc = store_user_get(call->ctx->store, auth->user_id, &u);
    int ok = (rc == STORE_OK && u->app_id == auth->app_id) ||
             ((rc == STORE_NOTFOUND || rc == STORE_OK) && gone_ok && !call->as_group_id);
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    if (!ok) {
        rpc_fail(call, ST_NOT_FOUND, "unknown user_id %llu", (unsigned long long)auth->user_id);
        return -1;
    }
    return 0;
}

int rpc_auth_user(rpc_call *call, rpc_auth *auth)
{
    return auth_user(call, auth, 0);
}

int rpc_auth_user_or_gone(rpc_call *call, rpc_auth *auth)
{
    return auth_user(call, auth, 1);
}

const store_audit *rpc_audit_fill(store_audit *e, char *detail, size_t detail_len,
                                  const rpc_auth *auth, const char *action, const char *fmt, ...)
{
    va_list ap;
    tokend__v1__store__audit_entry__init(e);
    va_start(ap, fmt);
    vsnprintf(detail, detail_len, fmt, ap);
    va_end(ap);
    e->time_ms = rpc_now_ms();
    e->app_id = auth->app_id;
    e->actor = (char *)auth->actor;
    e->action = (char *)action;
    e->detail = detail;
    return e;
}
