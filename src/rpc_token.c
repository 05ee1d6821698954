/* rpc_token.c - the three documented login RPCs (/token/id, /token/login,
 * /token/user): check the password on the worker pool, then issue a
 * session (access token, file-storage credential, connection key) and, for
 * a named device, a push token bound to it.
 *
 * Unknown users are verified against a dummy hash and get the same answer
 * as a wrong password, so neither timing nor text tells them apart. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "names.h"
#include "rpc.h"
#include "rpc_handlers.h"

#define DEFAULT_TTL_MS (7LL * 24 * 3600 * 1000)
#define BAD_CREDENTIALS "invalid credentials: unknown user or wrong password"

typedef struct {
    rpc_job job;
    uint64_t app_id;
    int64_t ttl_ms;
    int32_t encrypt_type;
    int by_key;                      /* look the user up by login index */
    login_kind kind;
    uint64_t user_id;
    char key[NAMES_EMAIL_MAX + 2];
    char password[CRYPTO_PASSWORD_MAX + 1];
    size_t password_len;
    char device_guid[STORE_GUID_MAX + 1];
    int32_t platform;
    char user_agent[RPC_AGENT_MAX];
    int trusted;                     /* an admin token vouches: no password */
    rpc_auth auth;                   /* the admin, when trusted */
    store_audit audit;
    char audit_detail[48];
    throttle_ticket ticket;
    /* results */
    status_code status;
    const char *message;
    Tokend__V1__TokenReply reply;
    char token[CRYPTO_TOKEN_TEXTLEN], store_token[CRYPTO_TOKEN_TEXTLEN];
    char push_token[CRYPTO_TOKEN_TEXTLEN], secret[48], public_key[48];
} login_job;

/* Bytes of the per-session connection key for each encrypt_type. */
static size_t session_key_bytes(int32_t encrypt_type)
{
    switch (encrypt_type) {
    case TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_AES_CBC_128: return 16;
    case TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_AES_CBC_256:
    case TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_CUSTOM:
    case TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_XCHACHA20_POLY1305: return 32;
    default: return 0;
    }
}

static void fail(login_job *lj, status_code code, const char *message)
{
    lj->status = code;
    lj->message = message;
}

static int check_password(login_job *lj, tokend_ctx *ctx, store_user **user)
{
    uint64_t uid = lj->user_id;
    store_user *u = NULL;
    int rc = STORE_OK;

    if (lj->by_key)
        rc = store_user_lookup(ctx->store, lj->app_id, lj->kind, lj->key, &uid);
    if (rc == STORE_OK && (rc = store_user_get(ctx->store, uid, &u)) == STORE_OK &&
        u->app_id != lj->app_id) {
        protobuf_c_message_free_unpacked(&u->base, NULL);
        u = NULL;
        rc = STORE_NOTFOUND;
    }
    if (rc != STORE_OK && rc != STORE_NOTFOUND) {
        fail(lj, ST_UNAVAILABLE, store_strerror(rc));
        return -1;
    }
    if (lj->trusted && !u) {
        fail(lj, ST_NOT_FOUND, "unknown user_id");
        return -1;
    }
    if (!lj->trusted && (crypto_password_verify(u ? u->password_hash : ctx->dummy_hash,
                                                lj->password, lj->password_len) != 0 || !u)) {
        fail(lj, ST_UNAUTHENTICATED, BAD_CREDENTIALS);
        goto reject;
    }
    if (u->disabled) {
        fail(lj, ST_PERMISSION_DENIED, "user is disabled");
        goto reject;
    }
    /* Upgrade a hash made with an older cost while the password is at hand. */
    if (!lj->trusted && crypto_password_needs_rehash(u->password_hash, ctx->config->pwcost) == 1) {
        char fresh[CRYPTO_PWHASH_STRBYTES];
        if (crypto_password_hash(fresh, lj->password, lj->password_len, ctx->config->pwcost) == 0)
            store_user_rehash(ctx->store, u->user_id, u->password_hash, fresh);
    }
    *user = u;
    return 0;
reject:
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    return -1;
}

static void issue(login_job *lj, tokend_ctx *ctx, const store_user *u, const rpc_call *call)
{
    const uint8_t *key = store_token_key(ctx->store);
    uint8_t raw[CRYPTO_TOKEN_BYTES];
    store_session session = TOKEND__V1__STORE__SESSION__INIT;
    store_login login = {.session = &session, .platform = lj->platform,
                         .user_agent = lj->user_agent};
    /* A token an admin obtained for a user is an admin action. */
    if (lj->trusted)
        login.audit = rpc_audit_fill(&lj->audit, lj->audit_detail, sizeof lj->audit_detail,
                                     &lj->auth, "IssueToken", "user_id=%llu",
                                     (unsigned long long)u->user_id);
    uint8_t sealed[CRYPTO_TOKEN_TEXTLEN - 1 + CRYPTO_SEAL_OVERHEAD];
    size_t key_bytes = session_key_bytes(lj->encrypt_type);
    int rc;

    crypto_token_new(raw, lj->token);
    crypto_token_hash(login.session_hash, raw, key);
    crypto_token_new(raw, lj->store_token);
    crypto_token_hash(login.store_token_hash, raw, key);
    crypto_random_base64(lj->secret, sizeof lj->secret, 32);
    lj->public_key[0] = '\0';
    if (key_bytes)
        crypto_random_base64(lj->public_key, sizeof lj->public_key, key_bytes);
    lj->push_token[0] = '\0';
    if (lj->device_guid[0]) {
        login.with_device = 1;
        crypto_token_new(raw, lj->push_token);
        crypto_token_hash(login.push_token_hash, raw, key);
        crypto_seal(sealed, lj->push_token, CRYPTO_TOKEN_TEXTLEN - 1, key);
        login.push_token_sealed = sealed;
        login.push_token_sealed_len = sizeof sealed;
    }
    crypto_wipe(raw, sizeof raw);

    session.user_id = u->user_id;
    session.app_id = lj->app_id;
    session.device_guid = lj->device_guid;
    session.created_ms = rpc_now_ms();
    session.expire_ms = session.created_ms + lj->ttl_ms;
    session.access_key_secret = lj->secret;
    session.encrypt_type = lj->encrypt_type;
    session.public_key = lj->public_key;
    if (rpc_past_deadline(call)) {
        fail(lj, ST_DEADLINE_EXCEEDED, "deadline exceeded");
        return;
    }
    if ((rc = store_login_commit(ctx->store, &login)) != STORE_OK) {
        fail(lj, ST_UNAVAILABLE, store_strerror(rc));
        return;
    }
    tokend__v1__token_reply__init(&lj->reply);
    lj->reply.user_id = (int64_t)u->user_id;
    lj->reply.token = lj->token;
    lj->reply.expire = session.expire_ms;
    lj->reply.store_token = lj->store_token;
    lj->reply.access_key_secret = lj->secret;
    lj->reply.encrypt_type = lj->encrypt_type;
    lj->reply.public_key = lj->public_key;
    lj->reply.push_token = lj->push_token;
    lj->status = ST_OK;
}

static void login_work(pool_job *job)
{
    login_job *lj = (login_job *)job;
    rpc_call *call = lj->job.call;
    store_user *u = NULL;
    if (rpc_past_deadline(call)) {
        fail(lj, ST_DEADLINE_EXCEEDED, "deadline exceeded");
    } else if (check_password(lj, call->ctx, &u) == 0) {
        issue(lj, call->ctx, u, call);
        protobuf_c_message_free_unpacked(&u->base, NULL);
    }
    crypto_wipe(lj->password, sizeof lj->password);
}

static void login_finish(rpc_job *job)
{
    login_job *lj = (login_job *)job;
    rpc_call *call = job->call;
    /* Only a wrong password (or unknown user) keeps its throttle attempt. */
    if (!lj->trusted && lj->status != ST_UNAUTHENTICATED)
        throttle_refund(call->ctx->throttle, &lj->ticket);
    if (lj->status == ST_OK)
        call->closure(&lj->reply.base, call);
    else
        rpc_fail(call, lj->status, "%s", lj->message);
    crypto_wipe(lj, sizeof *lj);
    free(lj);
}

/* Checks what all three logins share and sends the job to the pool. */
static void login_start(rpc_call *call, login_job *lj, const char *password,
                        const char *device_guid, int32_t platform, const char *user_agent)
{
    store_app *app = NULL;
    size_t pwlen = strlen(password), guidlen = strlen(device_guid);

    if (pwlen == 0 && !lj->trusted) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "password is required");
        goto done;
    }
    if (pwlen > CRYPTO_PASSWORD_MAX) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "password must be at most 1024 bytes");
        goto done;
    }
    if (platform < 0 || platform > 6) {
        rpc_fail(call, ST_INVALID_ARGUMENT,
                 "platform must be 1 ios, 2 android, 3 windows, 4 mac, 5 linux or 6 web");
        goto done;
    }
    if (guidlen > STORE_GUID_MAX) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "device_guid must be at most 256 bytes");
        goto done;
    }
    if (rpc_app(call, &app) != 0)
        goto done;
    lj->app_id = app->app_id;
    lj->ttl_ms = app->token_ttl_ms > 0 ? app->token_ttl_ms : DEFAULT_TTL_MS;
    lj->encrypt_type = app->encrypt_type;
    protobuf_c_message_free_unpacked(&app->base, NULL);
    if (!lj->trusted) {
        char account[sizeof lj->key + 24];
        if (lj->by_key)
            snprintf(account, sizeof account, "%c:%s", (char)lj->kind, lj->key);
        else
            snprintf(account, sizeof account, "id:%llu", (unsigned long long)lj->user_id);
        int wait = throttle_take(call->ctx->throttle, lj->app_id, account, call->peer, &lj->ticket);
        if (wait) {
            call->retry_after = wait;
            rpc_fail(call, ST_RESOURCE_EXHAUSTED,
                     "too many failed logins for this account or address: retry in %d s", wait);
            goto done;
        }
    }
    memcpy(lj->password, password, pwlen + 1);
    lj->password_len = pwlen;
    memcpy(lj->device_guid, device_guid, guidlen + 1);
    lj->platform = platform ? platform : call->platform;
    snprintf(lj->user_agent, sizeof lj->user_agent, "%s", *user_agent ? user_agent : call->user_agent);
    throttle *th = call->ctx->throttle;  /* a refused offload answers (frees) the call */
    if (rpc_offload(call, &lj->job, login_work, login_finish) == 0)
        return;
    if (!lj->trusted)
        throttle_refund(th, &lj->ticket);
done:
    crypto_wipe(lj, sizeof *lj);
    free(lj);
}

/* A login may carry an admin token with a user_id or group_id header: the
 * app's server getting a token for its user, without the password. A user
 * token with those headers is refused; one without them is ignored. */
static login_job *login_new(rpc_call *call)
{
    rpc_auth auth;
    login_job *lj;
    if (call->access_token[0] && (call->as_user_id || call->as_group_id)) {
        if (rpc_auth_user(call, &auth) != 0)
            return NULL;
        if (!auth.admin) {
            rpc_fail(call, ST_PERMISSION_DENIED, "user_id and group_id headers need an admin token");
            return NULL;
        }
    }
    if (!(lj = calloc(1, sizeof *lj))) {
        rpc_fail(call, ST_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if (call->access_token[0] && (call->as_user_id || call->as_group_id)) {
        lj->trusted = 1;
        lj->auth = auth;
        lj->user_id = auth.user_id;
        call->app_id = auth.app_id;
    }
    return lj;
}

/* Classifies `name` into the job's lookup key; 0, or -1 with the call failed. */
static int set_login_key(rpc_call *call, login_job *lj, const char *field, const char *name,
                         int username_only)
{
    const char *why = NULL;
    size_t len = strlen(name);
    if (len == 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s is required", field);
        return -1;
    }
    if (names_classify(name, len, &lj->kind, lj->key, sizeof lj->key, &why) != 0 ||
        (username_only && lj->kind != LOGIN_NAME)) {
        /* A name no user can have is still just a failed login. */
        lj->kind = LOGIN_NAME;
        lj->key[0] = '\0';
    }
    lj->by_key = 1;
    return 0;
}

RPC_HANDLER(token_by_id, TokenByIdRequest, TokenReply)
{
    rpc_call *call = call_data;
    login_job *lj = login_new(call);
    if (!lj)
        return;
    if (!lj->trusted) {
        if (req->user_id <= 0) {
            free(lj);
            rpc_fail(call, ST_INVALID_ARGUMENT, "user_id is required (a positive integer)");
            return;
        }
        lj->user_id = (uint64_t)req->user_id;
    }
    login_start(call, lj, req->password, req->device_guid, req->platform, req->user_agent);
}

RPC_HANDLER(token_by_login, TokenByLoginRequest, TokenReply)
{
    rpc_call *call = call_data;
    login_job *lj = login_new(call);
    if (!lj)
        return;
    if (!lj->trusted && set_login_key(call, lj, "login_name", req->login_name, 0) != 0) {
        free(lj);
        return;
    }
    login_start(call, lj, req->password, req->device_guid, req->platform, req->user_agent);
}

RPC_HANDLER(token_by_name, TokenByNameRequest, TokenReply)
{
    rpc_call *call = call_data;
    login_job *lj = login_new(call);
    if (!lj)
        return;  /* answered: req may be gone */
    int by_name = req->name[0] != '\0';
    /* The vendor SDK sends "mobile" in place of "name": it may hold a phone. */
    if (!lj->trusted &&
        set_login_key(call, lj, "name", by_name ? req->name : req->mobile, by_name) != 0) {
        free(lj);
        return;
    }
    login_start(call, lj, req->password, req->device_guid, req->platform, req->user_agent);
}
